/* test_store.c: the LMDB feature store: every field round-trips through separate transactions and a
 * read-only reopen, lookups and their errors, the content hash (equal across transaction boundaries
 * and write orders, different when one value differs), exact search against a brute-force reference,
 * error reasons, the offline `taca query` command (compiled in from services/cli), and the integrity API
 * (key rules, the corrupt kind, a version 1 store, a truncated file, a flipped record). */
#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <lmdb.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/npy.h"
#include "search/search.h"
#include "storage/store.h"

/* The query command has no library of its own (it is a file of the `taca` tool): compile it in. Its
 * --server half lives in cmd_query_server.c with the gRPC client; here a recorder stands in for it so
 * that the hand-over can be checked. */
#include "services/cli/cli_util.c"
#include "services/cli/cmd_query.c"

static int server_calls, server_argc;
int cmd_query_server(int argc, char **argv) {
  (void)argv;
  server_calls++;
  server_argc = argc;
  return 0;
}

/* ---------- helpers ---------- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

static char *make_dir(void) {
  char *d = strdup("/tmp/taca-test-store-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(d));
  return d;
}

static void remove_dir(char *d) {
  nftw(d, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(d);
}

static uint32_t mix(uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  uint32_t h = 2166136261u;
  uint32_t v[4] = {a, b, c, d};
  for (int i = 0; i < 4; i++) {
    h ^= v[i];
    h *= 16777619u;
    h ^= h >> 15;
  }
  return h;
}

#define N_SAMPLES 40
#define PX 4   /* pixel side */

/* The content every writer variant ends with. */
static int has_pixels(uint64_t i) { return i % 6 != 2; }
static int has_tokens(uint64_t i) { return i % 4 != 1; }
static int32_t label_of(uint64_t i) { return i % 5 == 3 ? -1 : (int32_t)(i % 7); }
static void key_of(uint64_t i, char *buf) { sprintf(buf, "sample-%03llu", (unsigned long long)i); }
static void tokens_of(uint64_t i, int32_t *t) {
  memset(t, 0, STORE_CONTEXT_LEN * sizeof *t);
  t[0] = 49406;
  for (int j = 1; j < 4; j++) t[j] = (int32_t)(i * 10 + (uint64_t)j);
  t[4] = 49407;
}
static void pixels_of(uint64_t i, uint8_t *p) {
  for (int j = 0; j < 3 * PX * PX; j++) p[j] = (uint8_t)(i * 31 + (uint64_t)j * 7);
}
/* model a: F16, image 8 (indices 0..36), text 6 (even indices); model b: F32, image 5 (all). */
static int has_emb(int model, int mod, uint64_t i) {
  if (model == 1) return mod == 0;
  return mod == 0 ? i <= 36 : i % 2 == 0;
}
static float emb_val(int model, int mod, uint64_t i, int j) {
  uint32_t h = mix((uint32_t)model, (uint32_t)mod, (uint32_t)i, (uint32_t)j);
  return ((float)(int)(h % 40001) - 20000.0f) / 7919.0f;  /* fractional: F16 must round */
}
static void emb_of(int model, int mod, uint64_t i, int dim, float *out) {
  for (int j = 0; j < dim; j++) out[j] = emb_val(model, mod, i, j);
}
static const int DIMS[2][2] = {{8, 6}, {5, 0}};

static store_model model_a(void) {
  store_model m = {0};
  strcpy(m.name, "clip-a");
  strcpy(m.arch, "ViT-B-16");
  m.image_dim = 8;
  m.text_dim = 6;
  m.dtype = TACA_DT_F16;
  m.logit_scale = 4.6052f;
  strcpy(m.weights_xxh, "0123456789abcdef0123456789abcdef");
  m.image_size = 224;
  m.block_size = 4;
  return m;
}

static store_model model_b(void) {
  store_model m = {0};
  strcpy(m.name, "clip-b");
  strcpy(m.arch, "hf:clip-vit-base-patch32");
  m.image_dim = 5;
  m.dtype = TACA_DT_F32;
  m.logit_scale = 2.5f;
  m.image_size = 32;
  m.block_size = 3;
  return m;
}

/* Asserts that a 0/-1 call succeeded, showing the reason from the taca_error *err in scope. */
#define OK(call)                                                             \
  do {                                                                       \
    int rc_ = (call);                                                        \
    ck_assert_msg(rc_ == 0, "%s failed: %s", #call, err->msg);               \
  } while (0)

static taca_store *open_rw(const char *dir, taca_error *err) {
  taca_store *s = NULL;
  store_options o = {.create = 1, .map_size = 64u << 20};
  ck_assert_msg(store_open(&s, dir, &o, err) == 0, "open %s: %s", dir, err->msg);
  return s;
}

static taca_store *open_ro(const char *dir, taca_error *err) {
  taca_store *s = NULL;
  store_options o = {.readonly = 1};
  ck_assert_msg(store_open(&s, dir, &o, err) == 0, "open ro %s: %s", dir, err->msg);
  return s;
}

static void put_sample_i(store_txn *t, uint64_t i, taca_error *err) {
  char key[32];
  int32_t tok[STORE_CONTEXT_LEN];
  uint8_t px[3 * PX * PX];
  key_of(i, key);
  tokens_of(i, tok);
  pixels_of(i, px);
  ck_assert_msg(store_put_sample(t, i, key, strlen(key), label_of(i), has_tokens(i) ? tok : NULL,
                                 has_pixels(i) ? px : NULL, sizeof px, err) == 0,
                "put_sample %llu: %s", (unsigned long long)i, err->msg);
}

static void put_header(store_txn *t, int *ida, int *idb, taca_error *err) {
  store_pixel_format pf = {.size = PX, .channels = 3, .codec = "raw"};
  store_range r = {.begin = 0, .end = 50, .shard = 0, .nshards = 1};
  OK(store_set_pixel_format(t, &pf, err));
  OK(store_set_range(t, &r, err));
  const char *ds = "{\"name\":\"unit\",\"source\":\"synthetic\"}";
  OK(store_put_meta(t, "dataset", ds, strlen(ds), err));
  store_model a = model_a(), b = model_b();
  OK(store_register_model(t, &a, ida, err));
  OK(store_register_model(t, &b, idb, err));
}

/* variant 0: everything in one transaction, in index order, embeddings in bulk.
 * variant 1: many small transactions in reverse order, single-vector puts, overwrites of wrong
 *            values, a renamed key and removed pixels along the way, progress records.
 * tweak 1: one F16 element differs; tweak 2: one label differs. */
static void write_store(const char *dir, int variant, int tweak) {
  taca_error e = {{0}}, *err = &e;
  taca_store *s = open_rw(dir, err);
  store_txn *t;
  int ida, idb;
  float v[8];
  if (variant == 0) {
    OK(store_txn_begin(s, &t, err));
    put_header(t, &ida, &idb, err);
    for (uint64_t i = 0; i < N_SAMPLES; i++) put_sample_i(t, i, err);
    if (tweak == 2) {
      char key[32];
      key_of(5, key);
      OK(store_put_sample(t, 5, key, strlen(key), 6, NULL, NULL, 0, err));
      int32_t tok[STORE_CONTEXT_LEN];
      uint8_t px[3 * PX * PX];
      tokens_of(5, tok);
      pixels_of(5, px);
      OK(store_put_sample(t, 5, key, strlen(key), label_of(5) + 1, tok, px, sizeof px, err));
    }
    for (int model = 0; model < 2; model++)
      for (int mod = 0; mod < 2; mod++) {
        int dim = DIMS[model][mod];
        if (!dim) continue;
        float *buf = malloc(sizeof(float) * N_SAMPLES * dim);
        uint64_t run = 0, first = 0;
        for (uint64_t i = 0; i <= N_SAMPLES; i++) {
          if (i < N_SAMPLES && has_emb(model, mod, i)) {
            if (!run) first = i;
            emb_of(model, mod, i, dim, buf + run * dim);
            if (tweak == 1 && model == 0 && mod == 0 && i == 17) buf[run * dim + 2] += 0.25f;
            run++;
          } else if (run) {
            OK(store_put_embeddings(t, model == 0 ? ida : idb, (store_modality)mod, first, run, buf, err));
            run = 0;
          }
        }
        free(buf);
      }
    OK(store_txn_commit(t, err));
  } else {
    OK(store_txn_begin(s, &t, err));
    put_header(t, &ida, &idb, err);
    /* a wrong key for sample 7 and pixels for sample 2 (which has none) that later writes undo */
    OK(store_put_sample(t, 7, "tmp-key", 7, 1, NULL, NULL, 0, err));
    uint8_t px[3 * PX * PX];
    pixels_of(2, px);
    OK(store_put_sample(t, 2, "sample-002", 10, 3, NULL, px, sizeof px, err));
    for (int j = 0; j < 8; j++) v[j] = 100.0f + (float)j;
    OK(store_put_embedding(t, ida, STORE_IMAGE, 3, v, err));
    OK(store_txn_commit(t, err));
    for (int chunk = 0; chunk * 3 < N_SAMPLES; chunk++) {
      OK(store_txn_begin(s, &t, err));
      store_model a = model_a(), b = model_b();
      int ia, ib;
      OK(store_register_model(t, &b, &ib, err));  /* resumed: same ids whatever the order */
      OK(store_register_model(t, &a, &ia, err));
      ck_assert_int_eq(ia, ida);
      ck_assert_int_eq(ib, idb);
      for (int r = 0; r < 3; r++) {
        int64_t i = N_SAMPLES - 1 - (chunk * 3 + r);
        if (i < 0) break;
        put_sample_i(t, (uint64_t)i, err);
        for (int mod = 1; mod >= 0; mod--)
          for (int model = 1; model >= 0; model--) {
            int dim = DIMS[model][mod];
            if (!dim || !has_emb(model, mod, (uint64_t)i)) continue;
            emb_of(model, mod, (uint64_t)i, dim, v);
            OK(store_put_embedding(t, model == 0 ? ida : idb, (store_modality)mod, (uint64_t)i, v, err));
          }
      }
      char prog[64];
      int n = snprintf(prog, sizeof prog, "{\"chunk\":%d}", chunk);
      OK(store_put_meta(t, "progress/writer", prog, (size_t)n, err));
      OK(store_txn_commit(t, err));
    }
  }
  store_close(s);
}

/* ---------- round trip ---------- */

static void check_content(const char *dir) {
  taca_error e = {{0}}, *err = &e;
  taca_store *s = open_ro(dir, err);
  store_view *v;
  OK(store_view_begin(s, &v, err));
  store_info *in = malloc(sizeof *in);
  OK(store_get_info(v, in, err));
  ck_assert_int_eq(in->schema_version, STORE_SCHEMA_VERSION);
  ck_assert_uint_eq(in->n_samples, N_SAMPLES);
  ck_assert_uint_eq(in->n_keys, N_SAMPLES);
  uint64_t npx = 0;
  for (uint64_t i = 0; i < N_SAMPLES; i++) npx += has_pixels(i);
  ck_assert_uint_eq(in->n_pixels, npx);
  ck_assert_uint_eq(in->first_index, 0);
  ck_assert_uint_eq(in->last_index, N_SAMPLES - 1);
  ck_assert(in->has_range && in->range.begin == 0 && in->range.end == 50 && in->range.nshards == 1);
  ck_assert(in->has_pixel_format && in->pixel.size == PX && in->pixel.channels == 3);
  ck_assert_str_eq(in->pixel.codec, "raw");
  ck_assert_int_eq(in->n_models, 2);
  store_model a = model_a(), b = model_b();
  const store_model *ma = &in->models[0], *mb = &in->models[1];
  ck_assert_str_eq(ma->name, a.name);
  ck_assert_str_eq(ma->arch, a.arch);
  ck_assert_str_eq(ma->weights_xxh, a.weights_xxh);
  ck_assert(ma->dtype == TACA_DT_F16 && mb->dtype == TACA_DT_F32);
  ck_assert(ma->logit_scale == a.logit_scale && mb->logit_scale == b.logit_scale);
  ck_assert(ma->image_dim == 8 && ma->text_dim == 6 && mb->image_dim == 5 && mb->text_dim == 0);
  ck_assert(ma->block_size == 4 && mb->block_size == 3 && ma->image_size == 224);
  for (int model = 0; model < 2; model++)
    for (int mod = 0; mod < 2; mod++) {
      uint64_t n = 0;
      for (uint64_t i = 0; i < N_SAMPLES; i++) n += DIMS[model][mod] && has_emb(model, mod, i);
      ck_assert_uint_eq(in->n_embeddings[model][mod], n);
    }
  free(in);

  const void *val;
  size_t len;
  OK(store_get_meta(v, "dataset", &val, &len, err));
  ck_assert(val && len == strlen("{\"name\":\"unit\",\"source\":\"synthetic\"}"));
  OK(store_get_meta(v, "no-such-key", &val, &len, err));
  ck_assert_ptr_null(val);

  for (uint64_t i = 0; i < N_SAMPLES; i++) {
    char key[32];
    key_of(i, key);
    uint64_t ix;
    OK(store_lookup_key(v, key, strlen(key), &ix, err));
    ck_assert_uint_eq(ix, i);
    store_sample smp;
    OK(store_get_sample(v, i, &smp, err));
    ck_assert_uint_eq(smp.index, i);
    ck_assert_int_eq(smp.label, label_of(i));
    ck_assert_int_eq(smp.key_len, strlen(key));
    ck_assert(!memcmp(smp.key, key, smp.key_len));
    ck_assert_int_eq(smp.has_tokens, has_tokens(i));
    int32_t tok[STORE_CONTEXT_LEN];
    tokens_of(i, tok);
    for (int j = 0; j < STORE_CONTEXT_LEN; j++) ck_assert_int_eq(smp.tokens[j], has_tokens(i) ? tok[j] : 0);
    const uint8_t *p;
    size_t pl;
    if (has_pixels(i)) {
      uint8_t want[3 * PX * PX];
      pixels_of(i, want);
      OK(store_get_pixels(v, i, &p, &pl, err));
      ck_assert_uint_eq(pl, sizeof want);
      ck_assert(!memcmp(p, want, pl));
    } else {
      ck_assert_int_eq(store_get_pixels(v, i, &p, &pl, err), STORE_NOT_STORED);
      ck_assert_msg(strstr(err->msg, "pixels") && strstr(err->msg, "not stored"), "%s", err->msg);
    }
    for (int model = 0; model < 2; model++)
      for (int mod = 0; mod < 2; mod++) {
        int dim = DIMS[model][mod];
        float got[8], want[8];
        if (!dim) {
          ck_assert_int_eq(store_get_embedding(v, model, (store_modality)mod, i, got, err), -1);
          ck_assert_msg(strstr(err->msg, "stores no text"), "%s", err->msg);
          continue;
        }
        if (!has_emb(model, mod, i)) {
          ck_assert_int_eq(store_get_embedding(v, model, (store_modality)mod, i, got, err), STORE_NOT_STORED);
          ck_assert_msg(strstr(err->msg, "not stored") && strstr(err->msg, "clip-a"), "%s", err->msg);
          continue;
        }
        OK(store_get_embedding(v, model, (store_modality)mod, i, got, err));
        emb_of(model, mod, i, dim, want);
        for (int j = 0; j < dim; j++) {
          if (model == 1) {
            ck_assert(got[j] == want[j]);  /* F32: exact */
          } else {
            /* F16: round to nearest even, relative error <= 2^-11 for these normal magnitudes */
            ck_assert(got[j] == taca_f16_to_f32(taca_f32_to_f16(want[j])));
            ck_assert_msg(fabsf(got[j] - want[j]) <= fabsf(want[j]) * 0x1p-11f + 0x1p-24f, "%g vs %g", got[j], want[j]);
          }
        }
      }
  }
  /* errors name what is missing */
  uint64_t ix;
  ck_assert_int_eq(store_lookup_key(v, "no/such/key", 11, &ix, err), STORE_NOT_STORED);
  ck_assert_msg(strstr(err->msg, "'no/such/key'") && strstr(err->msg, "not found"), "%s", err->msg);
  store_sample smp;
  ck_assert_int_eq(store_get_sample(v, 60, &smp, err), STORE_NOT_STORED);
  ck_assert_msg(strstr(err->msg, "60") && strstr(err->msg, "[0, 50)") && strstr(err->msg, "outside"), "%s", err->msg);
  ck_assert_int_eq(store_get_sample(v, 45, &smp, err), STORE_NOT_STORED);
  ck_assert_msg(strstr(err->msg, "45") && strstr(err->msg, "not stored"), "%s", err->msg);
  float tmp[8];
  ck_assert_int_eq(store_get_embedding(v, 5, STORE_IMAGE, 0, tmp, err), -1);
  ck_assert_msg(strstr(err->msg, "model id 5"), "%s", err->msg);
  store_model fm;
  ck_assert_int_eq(store_find_model(v, "nope", &fm, err), -1);
  ck_assert_msg(strstr(err->msg, "'nope'") && strstr(err->msg, "clip-a, clip-b"), "%s", err->msg);
  OK(store_find_model(v, "clip-b", &fm, err));
  ck_assert_int_eq(fm.id, 1);

  /* zero-copy blocks agree with single reads */
  store_view_end(v);
  store_close(s);
}

typedef struct blk_check {
  store_view *v;
  int model, mod;
  uint64_t rows;
  int blocks;
} blk_check;

static int check_block(const store_block *b, void *ctx) {
  blk_check *c = ctx;
  taca_error e = {{0}};
  uint32_t cnt = 0;
  c->blocks++;
  ck_assert_uint_eq(b->first_index, (uint64_t)b->number * (uint64_t)b->size);
  for (int r = 0; r < b->size; r++) {
    uint64_t i = b->first_index + (uint64_t)r;
    int valid = (b->bitmap[r / 8] >> (r % 8)) & 1;
    ck_assert_int_eq(valid, i < N_SAMPLES && has_emb(c->model, c->mod, i));
    if (!valid) continue;
    cnt++;
    float got[8], want[8];
    ck_assert_int_eq(taca_convert_to_f32(got, (const uint8_t *)b->data + (size_t)r * b->dim * taca_dtype_size(b->dtype),
                                         b->dtype, (size_t)b->dim), 0);
    ck_assert_int_eq(store_get_embedding(c->v, c->model, (store_modality)c->mod, i, want, &e), 0);
    ck_assert(!memcmp(got, want, sizeof(float) * (size_t)b->dim));
  }
  ck_assert_uint_eq(cnt, b->count);
  c->rows += cnt;
  return 0;
}

START_TEST(test_roundtrip) {
  char *dir = make_dir();
  write_store(dir, 1, 0);
  check_content(dir);
  taca_error e = {{0}}, *err = &e;
  taca_store *s = open_ro(dir, err);
  store_view *v;
  OK(store_view_begin(s, &v, err));
  for (int model = 0; model < 2; model++)
    for (int mod = 0; mod < 2; mod++) {
      if (!DIMS[model][mod]) continue;
      blk_check c = {v, model, mod, 0, 0};
      OK(store_scan_blocks(v, model, (store_modality)mod, check_block, &c, err));
      uint64_t n = 0;
      for (uint64_t i = 0; i < N_SAMPLES; i++) n += has_emb(model, mod, i);
      ck_assert_uint_eq(c.rows, n);
    }
  /* a read-only store refuses writes */
  store_txn *t;
  ck_assert_int_eq(store_txn_begin(s, &t, err), -1);
  ck_assert_msg(strstr(err->msg, "read-only"), "%s", err->msg);
  const void *val;
  size_t len;
  OK(store_get_meta(v, "progress/writer", &val, &len, err));
  ck_assert(val && len == strlen("{\"chunk\":13}") && !memcmp(val, "{\"chunk\":13}", len));
  store_view_end(v);
  store_close(s);
  remove_dir(dir);
}
END_TEST

START_TEST(test_roundtrip_single_txn) {
  char *dir = make_dir();
  write_store(dir, 0, 0);
  check_content(dir);
  remove_dir(dir);
}
END_TEST

/* ---------- content hash ---------- */

static void hash_of(const char *dir, char hex[33]) {
  taca_error e = {{0}}, *err = &e;
  taca_store *s = open_ro(dir, err);
  store_view *v;
  OK(store_view_begin(s, &v, err));
  OK(store_content_hash(v, hex, err));
  store_view_end(v);
  store_close(s);
}

START_TEST(test_content_hash) {
  char *d0 = make_dir(), *d1 = make_dir(), *d2 = make_dir(), *d3 = make_dir();
  write_store(d0, 0, 0);
  write_store(d1, 1, 0);
  write_store(d2, 0, 1);
  write_store(d3, 0, 2);
  char h0[33], h1[33], h2[33], h3[33], h0b[33];
  hash_of(d0, h0);
  hash_of(d1, h1);
  hash_of(d2, h2);
  hash_of(d3, h3);
  hash_of(d0, h0b);
  ck_assert_int_eq(strlen(h0), 32);
  ck_assert_str_eq(h0, h0b);
  ck_assert_str_eq(h0, h1);  /* different transactions, order, overwrites and progress records */
  ck_assert_str_ne(h0, h2);  /* one embedding element */
  ck_assert_str_ne(h0, h3);  /* one label */
  /* adding a progress record leaves the hash alone; any other meta key changes it */
  taca_error e = {{0}}, *err = &e;
  taca_store *s = open_rw(d0, err);
  store_txn *t;
  OK(store_txn_begin(s, &t, err));
  OK(store_put_meta(t, "progress/other", "x", 1, err));
  OK(store_txn_commit(t, err));
  store_close(s);
  hash_of(d0, h0b);
  ck_assert_str_eq(h0, h0b);
  s = open_rw(d0, err);
  OK(store_txn_begin(s, &t, err));
  OK(store_put_meta(t, "note", "x", 1, err));
  OK(store_txn_commit(t, err));
  store_close(s);
  hash_of(d0, h0b);
  ck_assert_str_ne(h0, h0b);
  remove_dir(d0);
  remove_dir(d1);
  remove_dir(d2);
  remove_dir(d3);
}
END_TEST

/* A writer killed with SIGKILL at any moment (inside a transaction or between two) leaves a store
 * that a rerun completes to exactly the content of an uninterrupted run. */
START_TEST(test_kill9_resume) {
  char *ref = make_dir();
  write_store(ref, 0, 0);
  char want[33], got[33];
  hash_of(ref, want);
  remove_dir(ref);
  /* kill at fractions of the time one full writer pass takes here */
  struct timespec t0, t1;
  char *probe = make_dir();
  clock_gettime(CLOCK_MONOTONIC, &t0);
  write_store(probe, 1, 0);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  remove_dir(probe);
  long pass_us = (t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000;
  long delays_us[5];
  for (int d = 0; d < 5; d++) delays_us[d] = pass_us * (2 * d + 1) / 10 + 1;
  int partial = 0;
  for (int d = 0; d < 5; d++) {
    char *dir = make_dir();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
      for (;;) write_store(dir, 1, 0);  /* keeps writing until killed */
    }
    struct timespec ts = {delays_us[d] / 1000000L, delays_us[d] % 1000000L * 1000L};
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    struct stat st;
    char path[256];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    if (stat(path, &st) == 0) {  /* was the first pass still under way? (the kill is not wasted on a done store) */
      taca_error e = {{0}}, *err = &e;
      taca_store *s;
      store_options ro = {.readonly = 1};
      if (store_open(&s, dir, &ro, err) == 0) {
        store_view *v;
        OK(store_view_begin(s, &v, err));
        const void *val;
        size_t len;
        OK(store_get_meta(v, "progress/writer", &val, &len, err));
        if (!(val && len == 12 && !memcmp(val, "{\"chunk\":13}", 12))) partial++;
        store_view_end(v);
        store_close(s);
      } else {
        ck_assert_msg(strstr(err->msg, "interrupted"), "%s", err->msg);  /* killed while creating it */
        partial++;
      }
    } else {
      partial++;
    }
    write_store(dir, 1, 0);  /* the rerun */
    hash_of(dir, got);
    ck_assert_msg(!strcmp(got, want), "killed after %ld us: hash %s, uninterrupted %s", delays_us[d], got, want);
    check_content(dir);
    remove_dir(dir);
  }
  ck_assert_msg(partial >= 2, "only %d of 5 kills landed before the first pass finished (a pass takes %ld us)", partial,
                pass_us);
}
END_TEST

/* ---------- search ---------- */

#define S_N 100
#define S_DIM 43  /* 32 + 8 + 3: every loop of the fused F16 kernel runs */
static int s_has(int i) { return i % 9 != 4; }
static void s_vec(int i, float *out) {
  int src = (i == 50 || i == 77) ? 10 : i;  /* exact duplicates of sample 10 */
  for (int j = 0; j < S_DIM; j++) out[j] = (float)((int)(mix(7, (uint32_t)src, (uint32_t)j, 0) % 7) - 3);
  if (i == 23)  /* same direction as sample 10, twice as long */
    for (int j = 0; j < S_DIM; j++) out[j] = 2.0f * (float)((int)(mix(7, 10, (uint32_t)j, 0) % 7) - 3);
}

static char *make_search_store(void) {
  char *dir = make_dir();
  taca_error e = {{0}}, *err = &e;
  taca_store *s = open_rw(dir, err);
  store_txn *t;
  OK(store_txn_begin(s, &t, err));
  store_model m = {0};
  int id;
  strcpy(m.name, "s16");
  m.image_dim = S_DIM;
  m.dtype = TACA_DT_F16;
  m.block_size = 8;
  OK(store_register_model(t, &m, &id, err));
  strcpy(m.name, "s32");
  m.dtype = TACA_DT_F32;
  m.block_size = 7;
  OK(store_register_model(t, &m, &id, err));
  for (int i = 0; i < S_N; i++) {
    if (!s_has(i)) continue;
    float v[S_DIM];
    s_vec(i, v);
    OK(store_put_embedding(t, 0, STORE_IMAGE, (uint64_t)i, v, err));
    OK(store_put_embedding(t, 1, STORE_IMAGE, (uint64_t)i, v, err));
  }
  OK(store_txn_commit(t, err));
  store_close(s);
  return dir;
}

typedef struct ref_hit {
  double s;
  int i;
} ref_hit;

static int ref_cmp(const void *a, const void *b) {
  const ref_hit *x = a, *y = b;
  if (x->s != y->s) return x->s > y->s ? -1 : 1;
  return x->i - y->i;
}

/* Brute force in double: IP is exact here (small integers), cosine to double precision. */
static int reference(const float *q, int cosine, ref_hit *out) {
  int n = 0;
  double qn = 0;
  for (int j = 0; j < S_DIM; j++) qn += (double)q[j] * q[j];
  for (int i = 0; i < S_N; i++) {
    if (!s_has(i)) continue;
    float v[S_DIM];
    s_vec(i, v);
    double dot = 0, vn = 0;
    for (int j = 0; j < S_DIM; j++) {
      dot += (double)q[j] * v[j];
      vn += (double)v[j] * v[j];
    }
    out[n++] = (ref_hit){cosine ? (qn > 0 && vn > 0 ? dot / sqrt(qn * vn) : 0) : dot, i};
  }
  qsort(out, (size_t)n, sizeof *out, ref_cmp);
  return n;
}

static void s_query(int qi, float *q) {
  if (qi == 0) s_vec(10, q);  /* ties: 10, 50, 77 (IP and cosine) and 23 (cosine) */
  else if (qi == 4) memset(q, 0, sizeof(float) * S_DIM);  /* all scores 0: index order */
  else
    for (int j = 0; j < S_DIM; j++) q[j] = (float)((int)(mix(99, (uint32_t)qi, (uint32_t)j, 1) % 9) - 4);
}

static void check_search(store_view *v, int model, int nq, int k, int cosine) {
  taca_error e = {{0}}, *err = &e;
  float *q = calloc((size_t)nq * S_DIM, sizeof(float));
  for (int i = 0; i < nq; i++) s_query(i, q + (size_t)i * S_DIM);
  int64_t *idx = malloc(sizeof(int64_t) * (size_t)nq * k);
  float *sc = malloc(sizeof(float) * (size_t)nq * k);
  OK(store_search(v, model, STORE_IMAGE, q, nq, k, cosine ? STORE_METRIC_COSINE : STORE_METRIC_IP, idx, sc, err));
  ref_hit ref[S_N];
  for (int qi = 0; qi < nq; qi++) {
    int n = reference(q + (size_t)qi * S_DIM, cosine, ref);
    int64_t *gi = idx + (size_t)qi * k;
    float *gs = sc + (size_t)qi * k;
    for (int r = 0; r < k; r++) {
      if (r >= n) {
        ck_assert_int_eq(gi[r], -1);
        ck_assert(gs[r] == -INFINITY);
        continue;
      }
      if (!cosine || qi == 4) {
        /* exact: integer dot products, ties broken by lower index */
        ck_assert_msg(gi[r] == ref[r].i && (double)gs[r] == ref[r].s, "model %d nq %d k %d q%d rank %d: got %lld %g want %d %g",
                      model, nq, k, qi, r, (long long)gi[r], gs[r], ref[r].i, ref[r].s);
      } else {
        /* cosine rounds (F32 sgemm vs double): the score at each rank matches to 1e-5, each
         * returned index really has that score, and equal returned scores come in index order */
        ck_assert_msg(fabs(gs[r] - ref[r].s) < 1e-5, "q%d rank %d: %g vs %g", qi, r, gs[r], ref[r].s);
        double own = 0;
        for (int j = 0; j < n; j++)
          if (ref[j].i == gi[r]) own = ref[j].s;
        ck_assert_msg(fabs(own - gs[r]) < 1e-5, "q%d rank %d: index %lld", qi, r, (long long)gi[r]);
        if (r > 0) {
          ck_assert(gs[r] <= gs[r - 1]);
          if (gs[r] == gs[r - 1]) ck_assert(gi[r] > gi[r - 1]);
        }
      }
    }
  }
  if (cosine && k >= 4) {
    /* query 0 is sample 10 itself: 10, 23, 50, 77 all score 1 (within rounding), listed first */
    int64_t top[4] = {idx[0], idx[1], idx[2], idx[3]};
    int seen = 0;
    for (int r = 0; r < 4; r++) seen |= (top[r] == 10) | (top[r] == 23) << 1 | (top[r] == 50) << 2 | (top[r] == 77) << 3;
    ck_assert_int_eq(seen, 15);
  }
  free(q);
  free(idx);
  free(sc);
}

START_TEST(test_search) {
  char *dir = make_search_store();
  taca_error e = {{0}}, *err = &e;
  taca_store *s = open_ro(dir, err);
  store_view *v;
  OK(store_view_begin(s, &v, err));
  int ks[] = {1, 7, 200};
  for (int model = 0; model < 2; model++)
    for (int cosine = 0; cosine < 2; cosine++)
      for (int ki = 0; ki < 3; ki++) {
        check_search(v, model, 1, ks[ki], cosine);  /* fused F16 kernel (x86 with F16C) or sgemv */
        check_search(v, model, 3, ks[ki], cosine);  /* fused F16 kernel for several queries, or sgemm */
        check_search(v, model, 5, ks[ki], cosine);  /* sgemm */
      }
  /* the thread count does not change results */
  float q[3 * S_DIM];
  for (int i = 0; i < 3; i++) s_query(i + 1, q + i * S_DIM);
  int64_t i1[3 * 20], i2[3 * 20];
  float s1[3 * 20], s2[3 * 20];
  omp_set_num_threads(1);
  OK(store_search(v, 0, STORE_IMAGE, q, 3, 20, STORE_METRIC_COSINE, i1, s1, err));
  omp_set_num_threads(3);
  OK(store_search(v, 0, STORE_IMAGE, q, 3, 20, STORE_METRIC_COSINE, i2, s2, err));
  ck_assert(!memcmp(i1, i2, sizeof i1) && !memcmp(s1, s2, sizeof s1));
  /* bad arguments */
  ck_assert_int_eq(store_search(v, 0, STORE_TEXT, q, 1, 5, STORE_METRIC_IP, i1, s1, err), -1);
  ck_assert_msg(strstr(err->msg, "stores no text"), "%s", err->msg);
  ck_assert_int_eq(store_search(v, 0, STORE_IMAGE, q, 1, 0, STORE_METRIC_IP, i1, s1, err), -1);
  q[3] = NAN;
  ck_assert_int_eq(store_search(v, 0, STORE_IMAGE, q, 1, 5, STORE_METRIC_IP, i1, s1, err), -1);
  ck_assert_msg(strstr(err->msg, "non-finite"), "%s", err->msg);
  store_view_end(v);
  store_close(s);
  remove_dir(dir);
}
END_TEST

/* ---------- errors ---------- */

START_TEST(test_errors) {
  taca_error e = {{0}}, *err = &e;
  taca_store *s;
  store_options ro = {.readonly = 1};
  ck_assert_int_eq(store_open(&s, "/tmp/taca-no-such-store-dir", &ro, err), -1);
  ck_assert_msg(strstr(err->msg, "/tmp/taca-no-such-store-dir"), "%s", err->msg);
  char *dir = make_dir();
  ck_assert_int_eq(store_open(&s, dir, &ro, err), -1);
  ck_assert_msg(strstr(err->msg, "data.mdb missing"), "%s", err->msg);

  s = open_rw(dir, err);
  store_txn *t;
  int ida, idb;
  OK(store_txn_begin(s, &t, err));
  put_header(t, &ida, &idb, err);
  put_sample_i(t, 1, err);
  /* validation failures leave the transaction usable */
  ck_assert_int_eq(store_put_sample(t, 2, "sample-001", 10, 0, NULL, NULL, 0, err), -1);
  ck_assert_msg(strstr(err->msg, "'sample-001'") && strstr(err->msg, "sample 1"), "%s", err->msg);
  int32_t tok[STORE_CONTEXT_LEN] = {49406, 70000};
  ck_assert_int_eq(store_put_sample(t, 2, "k2", 2, 0, tok, NULL, 0, err), -1);
  ck_assert_msg(strstr(err->msg, "70000") && strstr(err->msg, "position 1"), "%s", err->msg);
  uint8_t px[10] = {0};
  ck_assert_int_eq(store_put_sample(t, 2, "k2", 2, 0, NULL, px, sizeof px, err), -1);
  ck_assert_msg(strstr(err->msg, "expected 48"), "%s", err->msg);
  ck_assert_int_eq(store_put_sample(t, 50, "k50", 3, 0, NULL, NULL, 0, err), -1);
  ck_assert_msg(strstr(err->msg, "[0, 50)"), "%s", err->msg);
  store_model a = model_a();
  a.image_dim = 9;
  int id;
  ck_assert_int_eq(store_register_model(t, &a, &id, err), -1);
  ck_assert_msg(strstr(err->msg, "clip-a") && strstr(err->msg, "image_dim"), "%s", err->msg);
  strcpy(a.name, "bad name");
  ck_assert_int_eq(store_register_model(t, &a, &id, err), -1);
  ck_assert_int_eq(store_put_meta(t, "model/x", "1", 1, err), -1);
  ck_assert_msg(strstr(err->msg, "reserved"), "%s", err->msg);
  float v[8] = {1, 2, 3, INFINITY, 5, 6, 7, 8};
  ck_assert_int_eq(store_put_embedding(t, ida, STORE_IMAGE, 1, v, err), -1);
  ck_assert_msg(strstr(err->msg, "non-finite") && strstr(err->msg, "element 3"), "%s", err->msg);
  ck_assert_int_eq(store_put_embedding(t, idb, STORE_TEXT, 1, v, err), -1);
  ck_assert_msg(strstr(err->msg, "clip-b") && strstr(err->msg, "no text"), "%s", err->msg);
  store_pixel_format pf = {.size = 8, .channels = 3, .codec = "raw"};
  ck_assert_int_eq(store_set_pixel_format(t, &pf, err), -1);  /* pixels already stored */
  ck_assert_msg(strstr(err->msg, "already stored"), "%s", err->msg);
  store_range r = {.begin = 2, .end = 10, .nshards = 1};
  ck_assert_int_eq(store_set_range(t, &r, err), -1);
  ck_assert_msg(strstr(err->msg, "excludes"), "%s", err->msg);
  OK(store_txn_commit(t, err));
  store_close(s);
  remove_dir(dir);

  /* a full map names the fix */
  dir = make_dir();
  store_options small = {.create = 1, .map_size = 1u << 20};
  ck_assert_int_eq(store_open(&s, dir, &small, err), 0);
  OK(store_txn_begin(s, &t, err));
  store_pixel_format big = {.size = 64, .channels = 3, .codec = "raw"};
  OK(store_set_pixel_format(t, &big, err));
  uint8_t *img = calloc(3 * 64 * 64, 1);
  int rc = 0;
  for (int i = 0; i < 200 && rc == 0; i++) {
    char key[16];
    snprintf(key, sizeof key, "k%d", i);
    rc = store_put_sample(t, (uint64_t)i, key, strlen(key), 0, NULL, img, 3 * 64 * 64, err);
  }
  free(img);
  ck_assert_int_eq(rc, -1);
  ck_assert_msg(strstr(err->msg, "raise --map-size"), "%s", err->msg);
  ck_assert_int_eq(store_txn_commit(t, err), -1);
  ck_assert_msg(strstr(err->msg, "abort"), "%s", err->msg);
  store_close(s);
  remove_dir(dir);
}
END_TEST

/* ---------- offline query command ---------- */

/* Runs cmd_query on the NULL-terminated arguments with stdout captured into *out (malloc'd). */
static int run_query(char **out, ...) {
  char *argv[32];
  int argc = 1;
  va_list ap;
  va_start(ap, out);
  argv[0] = "query";
  for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;) argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  char path[] = "/tmp/taca-test-query-XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  fflush(stdout);
  int saved = dup(1);
  dup2(fd, 1);
  int rc = cmd_query(argc, argv);
  fflush(stdout);
  dup2(saved, 1);
  close(saved);
  off_t n = lseek(fd, 0, SEEK_END);
  *out = calloc((size_t)n + 1, 1);
  ck_assert_int_eq(pread(fd, *out, (size_t)n, 0), n);
  close(fd);
  unlink(path);
  return rc;
}

START_TEST(test_query_cli) {
  char *dir = make_dir();
  write_store(dir, 0, 0);
  char *out;
  char hex[33];
  hash_of(dir, hex);

  ck_assert_int_eq(run_query(&out, "--db", dir, "--json", "info", "--hash", NULL), 0);
  json_t *j = json_loads(out, 0, NULL);
  ck_assert_msg(j != NULL, "info --json output is not JSON: %s", out);
  ck_assert_int_eq(json_integer_value(json_object_get(j, "samples")), N_SAMPLES);
  ck_assert_str_eq(json_string_value(json_object_get(j, "content_hash")), hex);
  json_t *models = json_object_get(j, "models");
  ck_assert_int_eq(json_array_size(models), 2);
  ck_assert_str_eq(json_string_value(json_object_get(json_array_get(models, 0), "dtype")), "f16");
  ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(models, 0), "image_count")), 37);
  ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "dataset"), "source")), "synthetic");
  json_decref(j);
  free(out);

  ck_assert_int_eq(run_query(&out, "--db", dir, "info", NULL), 0);
  ck_assert_msg(strstr(out, "samples      40") && strstr(out, "clip-a") && strstr(out, "[0, 50)"), "%s", out);
  free(out);

  ck_assert_int_eq(run_query(&out, "--db", dir, "--json", "lookup", "sample-012", "sample-013", NULL), 0);
  char *nl = strchr(out, '\n');
  ck_assert_ptr_nonnull(nl);
  *nl = '\0';
  j = json_loads(out, 0, NULL);
  ck_assert_int_eq(json_integer_value(json_object_get(j, "index")), 12);
  ck_assert_int_eq(json_integer_value(json_object_get(j, "label")), label_of(12));
  ck_assert_int_eq(json_array_size(json_object_get(json_object_get(j, "embeddings"), "clip-a")), 2);
  json_decref(j);
  j = json_loads(nl + 1, 0, NULL);
  ck_assert_int_eq(json_integer_value(json_object_get(j, "index")), 13);
  ck_assert_int_eq(json_array_size(json_object_get(json_object_get(j, "embeddings"), "clip-a")), 1);
  json_decref(j);
  free(out);
  ck_assert_int_eq(run_query(&out, "--db", dir, "lookup", "sample-001", "missing-key", NULL), 1);
  ck_assert_msg(strstr(out, "sample-001\tindex 1"), "%s", out);
  free(out);

  char npy[] = "/tmp/taca-test-export-XXXXXX.npy";
  int fd = mkstemps(npy, 4);
  close(fd);
  ck_assert_int_eq(run_query(&out, "--db", dir, "export", "--model", "clip-a", "--modality", "image", "--out", npy,
                             "--range", "3:30", NULL),
                   0);
  free(out);
  npy_array arr;
  taca_error e = {{0}}, *err = &e;
  OK(npy_load(npy, &arr, err));
  ck_assert(arr.dtype == TACA_DT_F32 && arr.ndim == 2 && arr.shape[0] == 27 && arr.shape[1] == 8);
  for (int i = 0; i < 27; i++)
    for (int jj = 0; jj < 8; jj++)
      ck_assert(((float *)arr.data)[i * 8 + jj] == taca_f16_to_f32(taca_f32_to_f16(emb_val(0, 0, (uint64_t)i + 3, jj))));
  npy_free(&arr);
  ck_assert_int_eq(run_query(&out, "--db", dir, "export", "--model", "clip-a", "--modality", "text", "--out", npy,
                             "--dtype", "stored", NULL),
                   1);  /* odd indices have no text embedding */
  free(out);
  ck_assert_int_eq(run_query(&out, "--db", dir, "export", "--model", "clip-a", "--modality", "image", "--out", npy,
                             "--dtype", "stored", "--range", "0:37", NULL),
                   0);
  free(out);
  OK(npy_load(npy, &arr, err));
  ck_assert(arr.dtype == TACA_DT_F16 && arr.shape[0] == 37);
  ck_assert_uint_eq(((uint16_t *)arr.data)[5 * 8 + 1], taca_f32_to_f16(emb_val(0, 0, 5, 1)));
  npy_free(&arr);

  /* search: the query is sample 12's own image embedding, so it ranks first by cosine */
  float qv[8];
  emb_of(0, 0, 12, 8, qv);
  int64_t qshape[2] = {1, 8};
  OK(npy_save(npy, TACA_DT_F32, 2, qshape, qv, err));
  ck_assert_int_eq(run_query(&out, "--db", dir, "--json", "search", "--model", "clip-a", "--modality", "image",
                             "--vectors", npy, "-k", "3", "--metric", "cosine", NULL),
                   0);
  j = json_loads(out, 0, NULL);
  ck_assert_msg(j != NULL, "%s", out);
  json_t *res = json_object_get(j, "results");
  ck_assert_int_eq(json_array_size(res), 3);
  ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(res, 0), "index")), 12);
  ck_assert_str_eq(json_string_value(json_object_get(json_array_get(res, 0), "key")), "sample-012");
  ck_assert(fabs(json_number_value(json_object_get(json_array_get(res, 0), "score")) - 1.0) < 1e-3);
  json_decref(j);
  free(out);
  ck_assert_int_eq(run_query(&out, "--db", dir, "search", "--model", "clip-b", "--modality", "image", "--vectors", npy,
                             NULL),
                   1);  /* 8 columns, clip-b has 5 */
  free(out);
  unlink(npy);

  /* bad usage: exit 2; run-time failures: exit 1 */
  ck_assert_int_eq(run_query(&out, "--db", dir, "frobnicate", NULL), 2);
  free(out);
  ck_assert_int_eq(run_query(&out, "info", "--nope", NULL), 2);
  free(out);
  ck_assert_int_eq(run_query(&out, "--db", "/tmp/taca-no-such-store-dir", "info", NULL), 1);
  free(out);
  ck_assert_int_eq(run_query(&out, "--help", NULL), 0);
  ck_assert_msg(strstr(out, "usage: taca query"), "%s", out);
  free(out);
  ck_assert_int_eq(server_calls, 0);
  ck_assert_int_eq(run_query(&out, "--token", "t", "--server", "127.0.0.1:1", "info", NULL), 0);
  free(out);
  ck_assert_int_eq(server_calls, 1);  /* --server anywhere hands the whole command line over */
  ck_assert_int_eq(server_argc, 6);
  remove_dir(dir);
}
END_TEST

/* ---------- integrity API ---------- */

START_TEST(test_integrity_api) {
  taca_error e = {{0}}, *err = &e;
  /* keys: UTF-8, no NUL, 1..511 bytes */
  OK(store_check_key("caf\xc3\xa9", 5, err));
  ck_assert_int_eq(store_check_key("caf\xe9", 4, err), -1);
  ck_assert_msg(strstr(err->msg, "not UTF-8"), "%s", err->msg);
  ck_assert_int_eq(store_check_key("\xed\xa0\x80", 3, err), -1); /* a surrogate */
  ck_assert_int_eq(store_check_key("a\0b", 3, err), -1);
  char longkey[600];
  memset(longkey, 'k', sizeof longkey);
  ck_assert_int_eq(store_check_key(longkey, sizeof longkey, err), -1);
  ck_assert_msg(strstr(err->msg, "longer than 511"), "%s", err->msg);
  /* the corrupt kind survives a prefix; other failures and key text do not count */
  taca_fail(err, "store corrupt at samples[3]: checksum mismatch");
  taca_error_prefix(err, "--db x");
  ck_assert(store_error_is_corrupt(err));
  taca_fail(err, "key 'store corrupt at x' not found");
  ck_assert(!store_error_is_corrupt(err));

  /* a version 1 store is refused with the way out */
  char *dir = make_dir();
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  ck_assert_int_eq(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 16);
  ck_assert_int_eq(mdb_env_open(env, dir, 0, 0664), 0);
  ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
  static const char *names[] = {"meta", "samples", "pixels", "keys", "emb"};
  for (int i = 0; i < 5; i++) {
    ck_assert_int_eq(mdb_dbi_open(txn, names[i], MDB_CREATE, &dbi), 0);
    if (i == 0) {
      MDB_val k = {14, "schema_version"}, v = {1, "1"};
      ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
    }
  }
  ck_assert_int_eq(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
  taca_store *st;
  store_options ro = {.readonly = 1};
  ck_assert_int_eq(store_open(&st, dir, &ro, err), -1);
  ck_assert_msg(strstr(err->msg, "version 1 predates per-record checksums") && strstr(err->msg, "rebuild"), "%s",
                err->msg);
  remove_dir(dir);

  /* a truncated file is refused at open, as damage */
  dir = make_dir();
  write_store(dir, 0, 0);
  char path[4200];
  snprintf(path, sizeof path, "%s/data.mdb", dir);
  FILE *f = fopen(path, "r+b");
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fclose(f);
  ck_assert_int_eq(truncate(path, size / 2), 0);
  ck_assert_int_eq(store_open(&st, dir, &ro, err), -1);
  ck_assert_msg(store_error_is_corrupt(err) && strstr(err->msg, "truncated"), "%s", err->msg);
  remove_dir(dir);

  /* a flipped byte inside a sample record: corrupt, not "not stored", not other bytes */
  dir = make_dir();
  write_store(dir, 0, 0);
  snprintf(path, sizeof path, "%s/data.mdb", dir);
  f = fopen(path, "r+b");
  fseek(f, 0, SEEK_END);
  size = ftell(f);
  char *buf = malloc((size_t)size);
  fseek(f, 0, SEEK_SET);
  ck_assert_int_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
  char *hit = NULL; /* the key inside sample 7's record (not the key table's copy): layout 2, length 10 */
  for (char *p = buf; (p = memmem(p, (size_t)(buf + size - p), "sample-007", 10)); p++)
    if (p - buf >= 162 && p[-162] == 2 && p[-160] == 10 && p[-159] == 0) hit = p;
  ck_assert_ptr_nonnull(hit);
  fseek(f, (long)(hit - buf) + 9, SEEK_SET);
  fputc('8' ^ 0x20, f); /* within the record's key bytes: the index still finds it */
  fclose(f);
  free(buf);
  st = open_ro(dir, err);
  store_view *v;
  OK(store_view_begin(st, &v, err));
  int got = 0;
  for (uint64_t i = 0; i < N_SAMPLES; i++) {
    store_sample smp;
    int rc = store_get_sample(v, i, &smp, err);
    ck_assert_int_ne(rc, STORE_NOT_STORED);
    if (rc) {
      ck_assert_msg(store_error_is_corrupt(err) && strstr(err->msg, "samples["), "%s", err->msg);
      got++;
    }
  }
  ck_assert_int_eq(got, 1);
  store_verify_report r;
  OK(store_verify(v, &r, err));
  ck_assert_uint_gt(r.problems, 0);
  ck_assert_uint_eq(r.db[1].bad, 1);
  store_view_end(v);
  store_close(st);
  remove_dir(dir);
}
END_TEST

static Suite *store_suite(void) {
  Suite *s = suite_create("store");
  TCase *tc = tcase_create("store");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_roundtrip);
  tcase_add_test(tc, test_roundtrip_single_txn);
  tcase_add_test(tc, test_content_hash);
  tcase_add_test(tc, test_kill9_resume);
  tcase_add_test(tc, test_search);
  tcase_add_test(tc, test_errors);
  tcase_add_test(tc, test_query_cli);
  tcase_add_test(tc, test_integrity_api);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(store_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
