/* import.c: embeddings-only stores from .npy files computed elsewhere (see import.h). */
#include "services/precompute/import.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "base/clock.h"
#include "base/mapfile.h"
#include "base/npy.h"

#define FP_SPAN ((size_t)1 << 20) /* the fingerprint hashes this much of each end of a file */

/* One input file, mapped. */
typedef struct input {
  const char *path;
  npy_view v;
  uint64_t rows, first_row; /* first_row: of all inputs of its modality together */
  uint64_t size;
  char fp[17];
} input;

/* Size and an XXH3-64 of the file's first and last MiB: cheap, and catches a file replaced by
 * another of the same length. */
static void fingerprint_bytes(const uint8_t *b, size_t n, char fp[17]) {
  XXH3_state_t *st = XXH3_createState();
  XXH3_64bits_reset(st);
  XXH3_64bits_update(st, b, n < FP_SPAN ? n : FP_SPAN);
  if (n > FP_SPAN) {
    size_t tail = n >= 2 * FP_SPAN ? n - FP_SPAN : FP_SPAN; /* the last MiB, not hashing bytes twice */
    XXH3_64bits_update(st, b + tail, n - tail);
  }
  snprintf(fp, 17, "%016" PRIx64, (uint64_t)XXH3_64bits_digest(st));
  XXH3_freeState(st);
}

static void fingerprint(input *in) {
  fingerprint_bytes(in->v.map_, in->v.map_size_, in->fp);
  in->size = in->v.map_size_;
}

static int open_inputs(const char *const *paths, int n, const char *flag, input *in, int *dim, uint64_t *rows,
                       taca_error *err) {
  *dim = 0;
  *rows = 0;
  for (int i = 0; i < n; i++) {
    in[i].path = paths[i];
    if (npy_map(paths[i], &in[i].v, err)) return taca_error_prefix(err, "%s", flag);
    const npy_view *v = &in[i].v;
    if (v->ndim != 2 || !(v->dtype == TACA_DT_F32 || v->dtype == TACA_DT_F16 || v->dtype == TACA_DT_BF16))
      return taca_fail(err, "%s %s: need a [rows, dim] array of float32, float16 or bfloat16, got %d-D %s", flag,
                       paths[i], v->ndim, taca_dtype_name(v->dtype));
    int d = (int)v->shape[1];
    if (d < 1 || d > 65536) return taca_fail(err, "%s %s: %d columns; an embedding has 1..65536", flag, paths[i], d);
    if (*dim && d != *dim)
      return taca_fail(err, "%s %s: %d columns, but %s has %d", flag, paths[i], d, paths[0], *dim);
    *dim = d;
    in[i].rows = (uint64_t)v->shape[0];
    in[i].first_row = *rows;
    *rows += in[i].rows;
    fingerprint(&in[i]);
  }
  return 0;
}

/* Row r (over all inputs) as F32 into out. */
static void row_f32(const input *in, int n, int dim, uint64_t r, float *out) {
  int f = 0;
  while (f + 1 < n && in[f + 1].first_row <= r) f++;
  const input *x = &in[f];
  size_t es = taca_dtype_size(x->v.dtype);
  taca_convert_to_f32(out, (const uint8_t *)x->v.data + (size_t)(r - x->first_row) * dim * es, x->v.dtype, dim);
}

static json_t *inputs_json(const input *in, int n) {
  json_t *a = json_array();
  for (int i = 0; i < n; i++)
    json_array_append_new(a, json_pack("{s:s, s:I, s:s, s:I}", "path", in[i].path, "size", (json_int_t)in[i].size,
                                       "fingerprint", in[i].fp, "rows", (json_int_t)in[i].rows));
  return a;
}

/* The inputs recorded by an earlier run must be the first inputs of this one, unchanged. */
static int check_prefix(json_t *rec, const char *field, const input *in, int n, const char *flag, taca_error *err) {
  json_t *a = json_object_get(rec, field);
  size_t m = json_is_array(a) ? json_array_size(a) : 0;
  if (m > (size_t)n)
    return taca_fail(err, "this store was imported from %zu %s files before, now %d are given: give all of them, "
                     "in the same order (more may follow)", m, flag, n);
  for (size_t i = 0; i < m; i++) {
    json_t *e = json_array_get(a, i);
    const char *path = json_string_value(json_object_get(e, "path"));
    const char *fp = json_string_value(json_object_get(e, "fingerprint"));
    json_int_t size = json_integer_value(json_object_get(e, "size"));
    if (!fp || strcmp(fp, in[i].fp) || (uint64_t)size != in[i].size)
      return taca_fail(err, "%s %s (input %zu) differs from the file imported there before (%s, %lld bytes, "
                       "fingerprint %s; now %" PRIu64 " bytes, %s)", flag, in[i].path, i + 1, path ? path : "?",
                       (long long)size, fp ? fp : "?", in[i].size, in[i].fp);
  }
  return 0;
}

static char **read_keys(const char *path, uint64_t *n, taca_error *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return taca_fail(err, "--keys %s: cannot open: %s", path, strerror(errno)), NULL;
  size_t cap = 1024;
  char **keys = malloc(sizeof *keys * cap), *line = NULL;
  size_t lcap = 0;
  ssize_t len;
  *n = 0;
  int oom = !keys;
  while (!oom && (len = getline(&line, &lcap, f)) >= 0) {
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
    if (*n == cap) {
      char **k2 = realloc(keys, sizeof *keys * (cap *= 2));
      if (!k2) {
        oom = 1;
        break;
      }
      keys = k2;
    }
    if (!(keys[*n] = strdup(line))) oom = 1;
    else (*n)++;
  }
  free(line);
  int bad = oom || ferror(f);
  fclose(f);
  if (bad) {
    for (uint64_t i = 0; i < *n; i++) free(keys[i]);
    free(keys);
    return taca_fail(err, "--keys %s: %s", path, oom ? "out of memory" : "read error"), NULL;
  }
  return keys;
}

int import_run(const import_opts *o, import_result *r, taca_error *err) {
  memset(r, 0, sizeof *r);
  if (o->n_npy < 1) return taca_fail(err, "give at least one --npy file");
  if (o->n_text_npy && o->modality != STORE_IMAGE)
    return taca_fail(err, "--text-npy gives the text embeddings: --npy files are then images (drop --modality text)");
  input *img = calloc((size_t)o->n_npy, sizeof *img);
  input *txt = calloc((size_t)(o->n_text_npy ? o->n_text_npy : 1), sizeof *txt);
  char **keys = NULL;
  uint64_t n_keys = 0;
  taca_store *st = NULL;
  float *buf = NULL;
  json_t *prev = NULL;
  int rc = -1;
  uint64_t rows = 0, trows = 0;
  int dim = 0, tdim = 0;
  if (!img || !txt) {
    taca_fail(err, "out of memory");
    goto done;
  }
  if (open_inputs(o->npy, o->n_npy, "--npy", img, &dim, &rows, err)) goto done;
  if (o->n_text_npy && open_inputs(o->text_npy, o->n_text_npy, "--text-npy", txt, &tdim, &trows, err)) goto done;
  if (o->n_text_npy && trows != rows) {
    taca_fail(err, "--text-npy files hold %" PRIu64 " rows but --npy files %" PRIu64 ": they must embed the same "
              "samples", trows, rows);
    goto done;
  }
  if (rows == 0) {
    taca_fail(err, "--npy files hold no rows: nothing to import");
    goto done;
  }
  if (o->first_index > ((uint64_t)1 << 62) || rows > ((uint64_t)1 << 62) - o->first_index) {
    taca_fail(err, "--first-index %" PRIu64 " + %" PRIu64 " rows passes the index limit 2^62", o->first_index, rows);
    goto done;
  }
  if (o->keys) {
    if (!(keys = read_keys(o->keys, &n_keys, err))) goto done;
    if (n_keys != rows) {
      taca_fail(err, "--keys %s has %" PRIu64 " lines but the --npy files hold %" PRIu64 " rows", o->keys, n_keys,
                rows);
      goto done;
    }
  }
  /* the keys file is an input like the others: its fingerprint is recorded and compared */
  char keys_fp[17] = "";
  size_t keys_size = 0;
  if (o->keys) {
    void *km;
    if (taca_map_file(o->keys, 0, "a keys file", &km, &keys_size, err)) goto done;
    fingerprint_bytes(km, keys_size, keys_fp);
    taca_unmap_file(km, keys_size);
  }
  r->rows_total = rows;
  r->dim = o->modality == STORE_IMAGE ? dim : 0;
  r->text_dim = o->n_text_npy ? tdim : o->modality == STORE_TEXT ? dim : 0;

  store_options so = {.create = 1};
  if (store_open(&st, o->db, &so, err)) goto done;

  char pkey[STORE_NAME_MAX + 32];
  snprintf(pkey, sizeof pkey, "progress/import/%s", o->name);
  store_model sm = {0};
  snprintf(sm.name, sizeof sm.name, "%s", o->name);
  snprintf(sm.arch, sizeof sm.arch, "%s", o->arch ? o->arch : "import");
  sm.image_dim = r->dim;
  sm.text_dim = r->text_dim;
  sm.dtype = o->dtype;
  int model_id;

  /* What an earlier run did: the model, the inputs, the rows done. */
  store_txn *t;
  if (store_txn_begin(st, &t, err)) goto done;
  const void *val;
  size_t vlen;
  if (store_txn_get_meta(t, pkey, &val, &vlen, err)) {
    store_txn_abort(t);
    goto done;
  }
  uint64_t done_rows = 0;
  if (val) {
    json_error_t je;
    prev = json_loadb(val, vlen, 0, &je);
    json_int_t fi = json_integer_value(json_object_get(prev, "first_index"));
    done_rows = (uint64_t)json_integer_value(json_object_get(prev, "rows_done"));
    if (!prev || (uint64_t)fi != o->first_index) {
      store_txn_abort(t);
      taca_fail(err, "%s: model '%s' was imported with --first-index %lld before, not %" PRIu64, o->db, o->name,
                (long long)fi, o->first_index);
      goto done;
    }
    if (check_prefix(prev, "npy", img, o->n_npy, "--npy", err) ||
        check_prefix(prev, "text_npy", txt, o->n_text_npy, "--text-npy", err)) {
      store_txn_abort(t);
      goto done;
    }
    const char *pk = json_string_value(json_object_get(prev, "keys_fingerprint"));
    if (strcmp(pk ? pk : "", keys_fp)) {
      store_txn_abort(t);
      taca_fail(err, "model '%s' was imported %s before: %s", o->name,
                pk && *pk ? "with another --keys file" : "without --keys",
                pk && *pk ? "give the same keys file" : "keys cannot be added later (drop --keys)");
      goto done;
    }
    if (done_rows > rows) done_rows = rows;
  }
  /* The store's range grows to cover the rows (another model's import may hold other rows). */
  uint64_t range_begin = o->first_index, range_end = o->first_index;
  {
    store_info info;
    store_view *v;
    int busy = 0;
    if (store_view_begin(st, &v, err) == 0) {
      if (store_get_info(v, &info, err) == 0) {
        busy = !val && info.has_pixel_format;
        if (info.has_range && info.range.end > info.range.begin) {
          if (info.range.begin < range_begin) range_begin = info.range.begin;
          range_end = info.range.end;
        }
      }
      store_view_end(v);
    }
    if (busy) {
      store_txn_abort(t);
      taca_fail(err, "%s is a precomputed store (it holds pixels): use taca add-features to add a model to it",
                o->db);
      goto done;
    }
  }
  if (store_register_model(t, &sm, &model_id, err) || store_txn_commit(t, err)) {
    store_txn_abort(t);
    goto done;
  }
  r->rows_before = done_rows;

  uint64_t chunk = o->chunk_rows ? o->chunk_rows : 65536;
  int wide = dim > tdim ? dim : tdim;
  if (!(buf = malloc(sizeof(float) * (size_t)chunk * wide))) {
    taca_fail(err, "out of memory for a chunk of %" PRIu64 " rows", chunk);
    goto done;
  }
  double t0 = taca_now_s(), last = t0;
  for (uint64_t r0 = done_rows; r0 < rows; r0 += chunk) {
    uint64_t m = rows - r0 < chunk ? rows - r0 : chunk, first = o->first_index + r0;
    if (store_txn_begin(st, &t, err)) goto done;
    store_range range = {range_begin, first + m > range_end ? first + m : range_end, o->shard,
                         o->nshards > 0 ? o->nshards : 1};
    int ok = store_set_range(t, &range, err) == 0; /* first: samples must fall inside it */
    char kb[32];
    for (uint64_t i = 0; ok && i < m; i++) {
      const char *k = keys ? keys[r0 + i] : kb;
      if (!keys) snprintf(kb, sizeof kb, "%012" PRIu64, first + i);
      ok = store_put_sample(t, first + i, k, strlen(k), -1, NULL, NULL, 0, err) == 0;
      if (!ok && keys) taca_error_prefix(err, "--keys line %" PRIu64, r0 + i + 1);
    }
    store_modality mods[2] = {o->modality, STORE_TEXT};
    input *ins[2] = {img, txt};
    int nins[2] = {o->n_npy, o->n_text_npy}, dims[2] = {dim, tdim};
    for (int s = 0; ok && s < (o->n_text_npy ? 2 : 1); s++) {
      for (uint64_t i = 0; i < m; i++) row_f32(ins[s], nins[s], dims[s], r0 + i, buf + (size_t)i * dims[s]);
      ok = store_put_embeddings(t, model_id, mods[s], first, (size_t)m, buf, err) == 0;
    }
    if (ok) {
      json_t *p = json_pack("{s:I, s:I, s:o, s:o, s:s}", "first_index", (json_int_t)o->first_index, "rows_done",
                            (json_int_t)(r0 + m), "npy", inputs_json(img, o->n_npy), "text_npy",
                            inputs_json(txt, o->n_text_npy), "keys_fingerprint", keys_fp);
      char *js = p ? json_dumps(p, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
      json_decref(p);
      ok = js && store_put_meta(t, pkey, js, strlen(js), err) == 0;
      if (!js) taca_fail(err, "out of memory");
      free(js);
    }
    if (!ok) {
      store_txn_abort(t);
      goto done;
    }
    if (store_txn_commit(t, err)) goto done;
    r->rows_written += m;
    double now = taca_now_s();
    if (!o->quiet && (now - last > 5 || r0 + m == rows)) {
      fprintf(stderr, "import: %s: %" PRIu64 "/%" PRIu64 " rows (%.0f rows/s)\n", o->name, r0 + m, rows,
              (double)(r0 + m - done_rows) / (now - t0 > 1e-9 ? now - t0 : 1e-9));
      last = now;
    }
  }
  rc = 0;
done:
  free(buf);
  json_decref(prev);
  for (uint64_t i = 0; i < n_keys; i++) free(keys[i]);
  free(keys);
  for (int i = 0; img && i < o->n_npy; i++) npy_unmap(&img[i].v);
  for (int i = 0; txt && i < o->n_text_npy; i++) npy_unmap(&txt[i].v);
  free(img);
  free(txt);
  store_close(st);
  return rc;
}
