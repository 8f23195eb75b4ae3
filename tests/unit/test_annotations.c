/* test_annotations.c: the store's captions and metadata (storage/annotations.c): round trip through a
 * read-only reopen, replacement and removal, UTF-8-safe cutting of long captions, refusal of metadata
 * that is not one JSON object, the content hash (unchanged by empty annotation databases, changed by
 * any caption byte, equal whatever the write order), and the in-order, paged sample walk. */
#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage/store.h"

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

static char *make_dir(void) {
  char *d = strdup("/tmp/taca-test-annot-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(d));
  return d;
}

static void remove_dir(char *d) {
  nftw(d, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(d);
}

#define OK(call) ck_assert_msg((call) == 0, "%s failed: %s", #call, err.msg)
#define N 10

/* Writes N samples; captions/metadata per `variant`: 0 none, 1 all, 2 all but written in reverse order,
 * 3 like 1 with one caption byte changed. */
static void write_store(const char *dir, int variant, char hex[33]) {
  taca_error err = {{0}};
  taca_store *s;
  store_options o = {.create = 1, .map_size = 64u << 20};
  OK(store_open(&s, dir, &o, &err));
  store_txn *t;
  OK(store_txn_begin(s, &t, &err));
  for (int i = 0; i < N; i++) {
    char key[32];
    snprintf(key, sizeof key, "k%02d", i);
    OK(store_put_sample(t, (uint64_t)i, key, strlen(key), i % 3, NULL, NULL, 0, &err));
  }
  for (int j = 0; variant && j < N; j++) {
    int i = variant == 2 ? N - 1 - j : j;
    char cap[64], meta[64];
    snprintf(cap, sizeof cap, "caption %d%s", i, variant == 3 && i == 4 ? "!" : "");
    snprintf(meta, sizeof meta, "{\"n\":%d,\"url\":\"u%d\"}", i, i);
    OK(store_put_annotations(t, (uint64_t)i, cap, strlen(cap), i == 7 ? NULL : meta, i == 7 ? 0 : strlen(meta), &err));
  }
  OK(store_txn_commit(t, &err));
  store_view *v;
  OK(store_view_begin(s, &v, &err));
  OK(store_content_hash(v, hex, &err));
  store_view_end(v);
  store_close(s);
}

START_TEST(test_roundtrip) {
  char *d = make_dir(), hex[33];
  write_store(d, 1, hex);
  taca_error err = {{0}};
  taca_store *s;
  store_options ro = {.readonly = 1};
  OK(store_open(&s, d, &ro, &err));
  store_view *v;
  OK(store_view_begin(s, &v, &err));
  for (int i = 0; i < N; i++) {
    const char *t;
    size_t len;
    int found;
    char want[64];
    OK(store_get_caption(v, (uint64_t)i, &t, &len, &found, &err));
    snprintf(want, sizeof want, "caption %d", i);
    ck_assert_int_eq(found, 1);
    ck_assert_int_eq((int)len, (int)strlen(want));
    ck_assert(!memcmp(t, want, len));
    OK(store_get_metadata(v, (uint64_t)i, &t, &len, &found, &err));
    ck_assert_int_eq(found, i != 7);
  }
  int found = 1;
  const char *t;
  size_t len;
  OK(store_get_caption(v, 99, &t, &len, &found, &err));  /* nothing stored there: absent, no error */
  ck_assert_int_eq(found, 0);
  store_info in;
  OK(store_get_info(v, &in, &err));
  ck_assert_int_eq((int)in.n_captions, N);
  ck_assert_int_eq((int)in.n_metadata, N - 1);
  store_view_end(v);
  store_close(s);
  remove_dir(d);
}
END_TEST

START_TEST(test_replace_cut_refuse) {
  char *d = make_dir(), hex[33];
  write_store(d, 1, hex);
  taca_error err = {{0}};
  taca_store *s;
  store_options o = {0};
  OK(store_open(&s, d, &o, &err));
  store_txn *t;
  OK(store_txn_begin(s, &t, &err));
  /* a caption over the limit, its last character a 3-byte one straddling the limit */
  size_t n = STORE_MAX_CAPTION + 10;
  char *big = malloc(n);
  memset(big, 'a', n);
  memcpy(big + STORE_MAX_CAPTION - 1, "\xe2\x82\xac", 3); /* U+20AC across byte 4096 */
  OK(store_put_annotations(t, 2, big, n, NULL, 0, &err));
  OK(store_put_annotations(t, 3, NULL, 0, NULL, 0, &err));  /* removes both */
  ck_assert_int_eq(store_put_annotations(t, 4, "x", 1, "[1, 2]", 6, &err), -1);
  ck_assert_msg(strstr(err.msg, "not one JSON object"), "%s", err.msg);
  store_txn_abort(t);
  OK(store_txn_begin(s, &t, &err));
  OK(store_put_annotations(t, 2, big, n, NULL, 0, &err));
  OK(store_put_annotations(t, 3, NULL, 0, NULL, 0, &err));
  ck_assert_int_eq(store_put_annotations(t, 4, "x", 1, "{\"a\":", 5, &err), -1);
  store_txn_abort(t);
  OK(store_txn_begin(s, &t, &err));
  OK(store_put_annotations(t, 2, big, n, NULL, 0, &err));
  OK(store_put_annotations(t, 3, NULL, 0, NULL, 0, &err));
  OK(store_txn_commit(t, &err));
  store_view *v;
  OK(store_view_begin(s, &v, &err));
  const char *c;
  size_t len;
  int found;
  OK(store_get_caption(v, 2, &c, &len, &found, &err));
  ck_assert_int_eq((int)len, STORE_MAX_CAPTION - 1);  /* cut before the character, not inside it */
  OK(store_get_metadata(v, 2, &c, &len, &found, &err));
  ck_assert_int_eq(found, 0);
  OK(store_get_caption(v, 3, &c, &len, &found, &err));
  ck_assert_int_eq(found, 0);
  store_view_end(v);
  store_close(s);
  free(big);
  remove_dir(d);
}
END_TEST

START_TEST(test_hash) {
  char *d[4], hex[4][33];
  for (int i = 0; i < 4; i++) {
    d[i] = make_dir();
    write_store(d[i], i, hex[i]);
  }
  ck_assert_str_ne(hex[0], hex[1]);  /* the captions are content */
  ck_assert_str_eq(hex[1], hex[2]);  /* write order does not matter */
  ck_assert_str_ne(hex[1], hex[3]);  /* one caption byte does */
  /* removing every annotation gives back the hash of the store that never had any */
  taca_error err = {{0}};
  taca_store *s;
  store_options o = {0};
  OK(store_open(&s, d[1], &o, &err));
  store_txn *t;
  OK(store_txn_begin(s, &t, &err));
  for (int i = 0; i < N; i++) OK(store_put_annotations(t, (uint64_t)i, NULL, 0, NULL, 0, &err));
  OK(store_txn_commit(t, &err));
  store_view *v;
  OK(store_view_begin(s, &v, &err));
  char h[33];
  OK(store_content_hash(v, h, &err));
  ck_assert_str_eq(h, hex[0]);
  store_view_end(v);
  store_close(s);
  for (int i = 0; i < 4; i++) remove_dir(d[i]);
}
END_TEST

typedef struct walk {
  int n;
  uint64_t idx[N];
} walk;

static int visit(const store_sample *s, void *ctx) {
  walk *w = ctx;
  w->idx[w->n++] = s->index;
  return 0;
}

START_TEST(test_scan_samples) {
  char *d = make_dir(), hex[33];
  write_store(d, 0, hex);
  taca_error err = {{0}};
  taca_store *s;
  store_options ro = {.readonly = 1};
  OK(store_open(&s, d, &ro, &err));
  store_view *v;
  OK(store_view_begin(s, &v, &err));
  walk w = {0};
  OK(store_scan_samples(v, 3, 4, visit, &w, &err));
  ck_assert_int_eq(w.n, 4);
  for (int i = 0; i < 4; i++) ck_assert_int_eq((int)w.idx[i], 3 + i);
  w.n = 0;
  OK(store_scan_samples(v, 8, 0, visit, &w, &err));
  ck_assert_int_eq(w.n, 2);
  w.n = 0;
  OK(store_scan_samples(v, 50, 0, visit, &w, &err));
  ck_assert_int_eq(w.n, 0);
  store_view_end(v);
  store_close(s);
  remove_dir(d);
}
END_TEST

int main(void) {
  Suite *su = suite_create("annotations");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_roundtrip);
  tcase_add_test(tc, test_replace_cut_refuse);
  tcase_add_test(tc, test_hash);
  tcase_add_test(tc, test_scan_samples);
  suite_add_tcase(su, tc);
  SRunner *sr = srunner_create(su);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
