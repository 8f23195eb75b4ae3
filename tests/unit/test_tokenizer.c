/* test_tokenizer.c: CLIP BPE token ids against openai/CLIP's simple_tokenizer with open_clip's
 * truncation (tests/fixtures/gen_tokenizer.py -> tests/fixtures/tokenizer/cases.json), exact
 * equality for every caption; captions with curly quotes, ligatures, full-width forms or mojibake
 * give the ids of their plain equivalents (ftfy.fix_text, text/text_fix.c); the merges file loaded
 * from the embedded copy, from an explicit .gz and from a plain-text path; invalid UTF-8, bad
 * arguments and bad merges files give errors; concurrent calls on one tokenizer agree. */
#include <check.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "text/tokenizer.h"
#include "base/clock.h"

#define VOCAB_GZ TACA_FIXTURES_DIR "/../../data/bpe_simple_vocab_16e6.txt.gz"

typedef struct {
  const char *text;
  int context_len;
  int32_t *expect; /* context_len ids, zero-padded */
} tcase;

static json_t *root;
static tcase *cases;
static size_t ncases;

static void load_cases(void) {
  json_error_t jerr;
  root = json_load_file(TACA_FIXTURES_DIR "/tokenizer/cases.json", 0, &jerr);
  ck_assert_msg(root, "cases.json: %s (line %d)", jerr.text, jerr.line);
  json_t *arr = json_object_get(root, "cases");
  ck_assert(json_is_array(arr));
  ncases = json_array_size(arr);
  ck_assert_uint_gt(ncases, 300);
  cases = calloc(ncases, sizeof *cases);
  for (size_t i = 0; i < ncases; i++) {
    json_t *c = json_array_get(arr, i), *ids = json_object_get(c, "ids");
    cases[i].text = json_string_value(json_object_get(c, "text"));
    cases[i].context_len = (int)json_integer_value(json_object_get(c, "context_length"));
    ck_assert(cases[i].text && cases[i].context_len > 0 && json_is_array(ids));
    ck_assert_uint_le(json_array_size(ids), (size_t)cases[i].context_len);
    cases[i].expect = calloc((size_t)cases[i].context_len, sizeof(int32_t));
    for (size_t k = 0; k < json_array_size(ids); k++)
      cases[i].expect[k] = (int32_t)json_integer_value(json_array_get(ids, k));
  }
}

static void free_cases(void) {
  for (size_t i = 0; i < ncases; i++) free(cases[i].expect);
  free(cases);
  json_decref(root);
}

/* Tokenizes every fixture caption; returns the number of mismatches (and reports the first few). */
static int check_all(const clip_tokenizer *tok, int report) {
  int bad = 0;
  int32_t out[256];
  for (size_t i = 0; i < ncases; i++) {
    taca_error err = {{0}};
    const tcase *c = &cases[i];
    if (clip_tokenize(tok, c->text, out, c->context_len, &err) != 0) {
      if (report && bad < 5) fprintf(stderr, "case %zu: error %s\n", i, err.msg);
      bad++;
      continue;
    }
    for (int k = 0; k < c->context_len; k++)
      if (out[k] != c->expect[k]) {
        if (report && bad < 5)
          fprintf(stderr, "case %zu (\"%.60s\"): id %d is %d, expected %d\n", i, c->text, k, out[k],
                  c->expect[k]);
        bad++;
        break;
      }
  }
  return bad;
}

START_TEST(fixture_ids_embedded) {
  taca_error err = {{0}};
  double t0 = taca_now_s();
  clip_tokenizer *tok = clip_tokenizer_load(NULL, &err);
  double dt = taca_now_s() - t0;
  ck_assert_msg(tok, "load: %s", err.msg);
  fprintf(stderr, "tokenizer: embedded vocabulary loaded in %.1f ms\n", dt * 1e3);
  load_cases();
  int bad = check_all(tok, 1);
  ck_assert_msg(bad == 0, "%d of %zu captions differ from the reference", bad, ncases);
  /* The known CLIP ids of a common prompt, independent of the fixture file. */
  int32_t out[CLIP_CONTEXT_LEN];
  ck_assert_int_eq(clip_tokenize(tok, "a photo of a cat", out, CLIP_CONTEXT_LEN, &err), 0);
  const int32_t want[] = {49406, 320, 1125, 539, 320, 2368, 49407, 0};
  for (int k = 0; k < 8; k++) ck_assert_int_eq(out[k], want[k]);
  free_cases();
  clip_tokenizer_free(tok);
}
END_TEST

START_TEST(fixture_ids_from_paths) {
  taca_error err = {{0}};
  clip_tokenizer *tok = clip_tokenizer_load(VOCAB_GZ, &err);
  ck_assert_msg(tok, "load %s: %s", VOCAB_GZ, err.msg);
  load_cases();
  ck_assert_int_eq(check_all(tok, 1), 0);
  clip_tokenizer_free(tok);

  /* The same merges as plain text (like a Hugging Face merges.txt). */
  char path[] = "/tmp/taca_merges_XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  FILE *fp = fdopen(fd, "wb");
  gzFile gz = gzopen(VOCAB_GZ, "rb");
  ck_assert(fp && gz);
  char buf[1 << 16];
  int n;
  while ((n = gzread(gz, buf, sizeof buf)) > 0) ck_assert_int_eq(fwrite(buf, 1, (size_t)n, fp), n);
  gzclose(gz);
  fclose(fp);
  tok = clip_tokenizer_load(path, &err);
  ck_assert_msg(tok, "load %s: %s", path, err.msg);
  ck_assert_int_eq(check_all(tok, 1), 0);
  clip_tokenizer_free(tok);
  unlink(path);
  free_cases();
}
END_TEST

/* basic_clean runs ftfy.fix_text first: these captions tokenize as their plain forms do. */
START_TEST(ftfy_forms_match_plain_text) {
  taca_error err = {{0}};
  clip_tokenizer *tok = clip_tokenizer_load(NULL, &err);
  ck_assert_msg(tok, "load: %s", err.msg);
  static const char *const pairs[][2] = {
      {"\u201cA photo of my cat\u2019s toy\u201d", "\"A photo of my cat's toy\""},
      {"\ufb01sh and \ufb02owers in the o\ufb03ce", "fish and flowers in the office"},
      {"\uff21 \uff50\uff48\uff4f\uff54\uff4f \uff4f\uff46 \uff41 "
       "\uff43\uff41\uff54\uff01\u3000\uff11\uff12",
       "A photo of a cat! 12"},
      {"sch\u00c3\u00b6n caf\u00c3\u00a9", "sch\u00f6n caf\u00e9"},
      {"I\u2019m \u00e2\u20ac\u201d here", "I'm \u2014 here"},
      {"\ufeffa photo\r\nof a \x1b[1mcat\x1b[0m", "a photo of a cat"},
      {"P&EACUTE;REZ &amp;amp; it&rsquo;s", "P\u00c9REZ & it's"},
  };
  for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
    int32_t a[CLIP_CONTEXT_LEN], b[CLIP_CONTEXT_LEN];
    ck_assert_int_eq(clip_tokenize(tok, pairs[i][0], a, CLIP_CONTEXT_LEN, &err), 0);
    ck_assert_int_eq(clip_tokenize(tok, pairs[i][1], b, CLIP_CONTEXT_LEN, &err), 0);
    ck_assert_msg(memcmp(a, b, sizeof a) == 0, "pair %zu: '%s' and '%s' tokenize differently", i,
                  pairs[i][0], pairs[i][1]);
  }
  clip_tokenizer_free(tok);
}
END_TEST

START_TEST(invalid_input_is_an_error) {
  taca_error err = {{0}};
  clip_tokenizer *tok = clip_tokenizer_load(NULL, &err);
  ck_assert_msg(tok, "load: %s", err.msg);
  int32_t out[CLIP_CONTEXT_LEN];
  static const char *const bad[] = {
      "\xff",             /* never valid */
      "caf\xc3",          /* truncated sequence */
      "\xc0\xaf",         /* overlong '/' */
      "a\xed\xa0\x80 b",  /* UTF-16 surrogate */
      "\xf4\x90\x80\x80", /* above U+10FFFF */
      "ok\x80",           /* stray continuation byte */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err.msg[0] = 0;
    ck_assert_int_eq(clip_tokenize(tok, bad[i], out, CLIP_CONTEXT_LEN, &err), -1);
    ck_assert_msg(strstr(err.msg, "invalid UTF-8"), "case %zu: reason '%s'", i, err.msg);
  }
  ck_assert_int_eq(clip_tokenize(tok, "x", out, 0, &err), -1);
  ck_assert_msg(strstr(err.msg, "context length"), "%s", err.msg);
  ck_assert_int_eq(clip_tokenize(tok, NULL, out, CLIP_CONTEXT_LEN, &err), -1);
  ck_assert_int_eq(clip_tokenize(NULL, "x", out, CLIP_CONTEXT_LEN, &err), -1);
  clip_tokenizer_free(tok);
}
END_TEST

static void write_file(const char *path, const void *data, size_t n, int gzip) {
  if (gzip) {
    gzFile gz = gzopen(path, "wb");
    ck_assert(gz);
    ck_assert_int_eq(gzwrite(gz, data, (unsigned)n), (int)n);
    gzclose(gz);
  } else {
    FILE *fp = fopen(path, "wb");
    ck_assert(fp);
    ck_assert_uint_eq(fwrite(data, 1, n, fp), n);
    fclose(fp);
  }
}

START_TEST(bad_merges_files_are_errors) {
  taca_error err = {{0}};
  ck_assert_ptr_null(clip_tokenizer_load("/nonexistent/merges.txt.gz", &err));
  ck_assert_msg(strstr(err.msg, "/nonexistent/merges.txt.gz"), "%s", err.msg);

  char path[] = "/tmp/taca_badmerges_XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  close(fd);
  /* Too few merges. */
  const char *few = "#version: 0.2\ni n\nt h\na n\n";
  write_file(path, few, strlen(few), 1);
  ck_assert_ptr_null(clip_tokenizer_load(path, &err));
  ck_assert_msg(strstr(err.msg, "expected at least 48894 merge lines"), "%s", err.msg);
  /* A line that is not two symbols. */
  const char *three = "#version: 0.2\ni n\nt h e\n";
  write_file(path, three, strlen(three), 0);
  ck_assert_ptr_null(clip_tokenizer_load(path, &err));
  ck_assert_msg(strstr(err.msg, "line 3"), "%s", err.msg);
  /* Invalid UTF-8 in a merge. */
  const char *bin = "#version: 0.2\ni n\n\xff \xfe\n";
  write_file(path, bin, strlen(bin), 0);
  ck_assert_ptr_null(clip_tokenizer_load(path, &err));
  ck_assert_msg(strstr(err.msg, "UTF-8"), "%s", err.msg);
  /* A truncated and a corrupt gzip stream. */
  gzFile gz = gzopen(VOCAB_GZ, "rb");
  ck_assert(gz);
  char *buf = malloc(1 << 20);
  int n = gzread(gz, buf, 1 << 20);
  gzclose(gz);
  ck_assert_int_eq(n, 1 << 20);
  write_file(path, buf, (size_t)n, 1);
  FILE *fp = fopen(path, "rb");
  ck_assert(fp);
  size_t clen = fread(buf, 1, 1 << 20, fp);
  fclose(fp);
  write_file(path, buf, clen / 4, 0); /* a quarter of the compressed bytes */
  ck_assert_ptr_null(clip_tokenizer_load(path, &err));
  ck_assert_msg(strstr(err.msg, "gzip"), "%s", err.msg);
  for (size_t i = 20; i < clen; i += 7) buf[i] ^= 0x5a;
  write_file(path, buf, clen, 0);
  ck_assert_ptr_null(clip_tokenizer_load(path, &err));
  ck_assert_msg(strstr(err.msg, "gzip"), "%s", err.msg);
  free(buf);
  unlink(path);
}
END_TEST

typedef struct {
  const clip_tokenizer *tok;
  int bad;
} thread_arg;

static void *worker(void *p) {
  thread_arg *a = p;
  for (int rep = 0; rep < 3; rep++) a->bad += check_all(a->tok, 0);
  return NULL;
}

START_TEST(concurrent_calls_agree) {
  taca_error err = {{0}};
  clip_tokenizer *tok = clip_tokenizer_load(NULL, &err);
  ck_assert_msg(tok, "load: %s", err.msg);
  load_cases();
  pthread_t th[4];
  thread_arg args[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (thread_arg){.tok = tok, .bad = 0};
    ck_assert_int_eq(pthread_create(&th[i], NULL, worker, &args[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    ck_assert_int_eq(args[i].bad, 0);
  }
  free_cases();
  clip_tokenizer_free(tok);
}
END_TEST

/* Hostile sizes: one 1 MB word and 1 MB of mixed text finish quickly and give a well-formed row;
 * captions over 64 MiB are refused. */
START_TEST(huge_input_is_bounded) {
  taca_error err = {{0}};
  clip_tokenizer *tok = clip_tokenizer_load(NULL, &err);
  ck_assert_msg(tok, "load: %s", err.msg);
  size_t n = 1 << 20;
  char *s = malloc(n + 1);
  unsigned r = 12345;
  for (size_t i = 0; i < n; i++) {
    r = r * 1103515245u + 12345u;
    s[i] = (char)('a' + (r >> 16) % 26);
  }
  s[n] = 0;
  int32_t out[CLIP_CONTEXT_LEN];
  double t0 = taca_now_s();
  ck_assert_int_eq(clip_tokenize(tok, s, out, CLIP_CONTEXT_LEN, &err), 0);
  for (size_t i = 0; i < n; i++) s[i] = " a&;#1<|'\t"[(i * 7919) % 10];
  ck_assert_int_eq(clip_tokenize(tok, s, out, CLIP_CONTEXT_LEN, &err), 0);
  double dt = taca_now_s() - t0;
  fprintf(stderr, "tokenizer: two 1 MB captions in %.0f ms\n", dt * 1e3);
  ck_assert_int_eq(out[0], CLIP_SOT_ID);
  ck_assert_int_eq(out[CLIP_CONTEXT_LEN - 1], CLIP_EOT_ID);
  for (int k = 1; k < CLIP_CONTEXT_LEN - 1; k++) ck_assert(out[k] > 0 && out[k] < CLIP_VOCAB_SIZE);
  free(s);
  /* Past the documented 64 MiB limit: refused, not processed. */
  n = ((size_t)64 << 20) + 1;
  s = malloc(n + 1);
  memset(s, 'a', n);
  s[n] = 0;
  ck_assert_int_eq(clip_tokenize(tok, s, out, CLIP_CONTEXT_LEN, &err), -1);
  ck_assert_msg(strstr(err.msg, "longer than"), "%s", err.msg);
  free(s);
  clip_tokenizer_free(tok);
}
END_TEST

int main(void) {
  Suite *s = suite_create("tokenizer");
  TCase *tc = tcase_create("tokenizer");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, fixture_ids_embedded);
  tcase_add_test(tc, fixture_ids_from_paths);
  tcase_add_test(tc, ftfy_forms_match_plain_text);
  tcase_add_test(tc, invalid_input_is_an_error);
  tcase_add_test(tc, bad_merges_files_are_errors);
  tcase_add_test(tc, concurrent_calls_agree);
  tcase_add_test(tc, huge_input_is_bounded);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
