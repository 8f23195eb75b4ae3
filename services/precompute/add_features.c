/* add_features.c: stores externally computed or random embeddings as a model of a finished store
 * (see add_features.h). */
#include "services/precompute/add_features.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/npy.h"
#include "base/rng.h"
#include "storage/store.h"

#define CHUNK 4096

/* Reads the keys file: one key per line (no trailing newline kept); *n lines. */
static char **read_keys(const char *path, size_t *n, taca_error *err) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    taca_fail(err, "--keys %s: cannot open", path);
    return NULL;
  }
  char **keys = malloc(sizeof *keys), *line = NULL; /* non-NULL even for an empty file */
  size_t cap = keys ? 1 : 0, lcap = 0;
  ssize_t len;
  *n = 0;
  while ((len = getline(&line, &lcap, f)) >= 0) {
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
    if (*n == cap) {
      cap = cap ? 2 * cap : 1024;
      char **k2 = realloc(keys, sizeof *keys * cap);
      if (!k2) break;
      keys = k2;
    }
    if (!(keys[*n] = strdup(line))) break;
    (*n)++;
  }
  int bad = !feof(f);
  free(line);
  fclose(f);
  if (bad) {
    for (size_t i = 0; i < *n; i++) free(keys[i]);
    free(keys);
    taca_fail(err, "--keys %s: out of memory", path);
    return NULL;
  }
  return keys;
}

typedef struct keyed_row {
  uint64_t index;
  size_t line;
} keyed_row;

static int by_index(const void *a, const void *b) {
  const keyed_row *x = a, *y = b;
  return x->index < y->index ? -1 : x->index > y->index ? 1 : x->line < y->line ? -1 : x->line > y->line;
}

/* Two lines naming one sample would store one row over the other and leave a sample without its
 * embedding: refused, naming both lines. */
static int check_unique(char **keys, const uint64_t *idx, size_t n, const char *path, taca_error *err) {
  keyed_row *r = malloc(sizeof *r * (n ? n : 1));
  if (!r) return taca_fail(err, "out of memory");
  for (size_t i = 0; i < n; i++) r[i] = (keyed_row){idx[i], i};
  qsort(r, n, sizeof *r, by_index);
  int rc = 0;
  for (size_t i = 1; i < n && !rc; i++)
    if (r[i].index == r[i - 1].index)
      rc = taca_fail(err, "--keys %s: lines %zu and %zu both name sample '%.200s' (index %llu): keys must be unique",
                     path, r[i - 1].line + 1, r[i].line + 1, keys[r[i].line], (unsigned long long)r[i].index);
  free(r);
  return rc;
}

static void random_row(float *out, int dim, uint64_t seed, uint64_t index) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + index;
  for (int k = 0; k < dim; k++) out[k] = (float)rng_normal01(&s);
}

int add_features_run(const add_features_opts *o, uint64_t *written, taca_error *err) {
  *written = 0;
  if ((o->npy != NULL) == (o->random_dim > 0))
    return taca_fail(err, "give exactly one of --npy FILE and --random DIM");
  if (o->keys && !o->npy) return taca_fail(err, "--keys goes with --npy");
  npy_array a = {0};
  char **keys = NULL;
  size_t n_keys = 0;
  taca_store *st = NULL;
  uint64_t *idx = NULL;
  float *rows = NULL;
  int rc = -1, dim = o->random_dim;
  if (o->npy) {
    if (npy_load_f32_matrix(o->npy, &a, err)) return taca_error_prefix(err, "--npy %s", o->npy), -1;
    dim = (int)a.shape[1];
    if (dim < 1 || dim > 65536) {
      taca_fail(err, "--npy %s: %d columns; an embedding has 1..65536", o->npy, dim);
      goto done;
    }
    if (o->keys) {
      if (!(keys = read_keys(o->keys, &n_keys, err))) goto done;
      if (n_keys != (size_t)a.shape[0]) {
        taca_fail(err, "--keys %s has %zu lines but --npy %s has %lld rows", o->keys, n_keys, o->npy,
                  (long long)a.shape[0]);
        goto done;
      }
    }
  }
  store_options so = {0};
  if (store_open(&st, o->db, &so, err)) goto done;
  /* Which samples: the rows in order, by key, or every stored sample. */
  store_view *v;
  store_info info;
  if (store_view_begin(st, &v, err)) goto done;
  if (store_get_info(v, &info, err)) {
    store_view_end(v);
    goto done;
  }
  size_t n = keys ? n_keys : info.n_samples;
  if (!(idx = malloc(sizeof(uint64_t) * (n ? n : 1)))) {
    store_view_end(v);
    taca_fail(err, "out of memory");
    goto done;
  }
  if (keys) {
    for (size_t i = 0; i < n; i++)
      if (store_lookup_key(v, keys[i], strlen(keys[i]), &idx[i], err)) {
        store_view_end(v);
        taca_error_prefix(err, "--keys line %zu ('%s')", i + 1, keys[i]);
        goto done;
      }
    if (check_unique(keys, idx, n, o->keys, err)) {
      store_view_end(v);
      goto done;
    }
  } else {
    size_t k = 0;
    for (uint64_t i = info.first_index; info.n_samples && i <= info.last_index && k < n; i++) {
      store_sample s;
      int got = store_get_sample(v, i, &s, err);
      if (got < 0) {
        store_view_end(v);
        goto done;
      }
      if (got == 0) idx[k++] = i; /* holes are rejected entries */
    }
    if (o->npy && (size_t)a.shape[0] != n) {
      store_view_end(v);
      taca_fail(err, "--npy %s has %lld rows but %s holds %zu samples (give --keys to match rows by key)",
                o->npy, (long long)a.shape[0], o->db, n);
      goto done;
    }
  }
  store_view_end(v);
  if (!n) {
    taca_fail(err, "%s holds no samples: run taca precompute first", o->db);
    goto done;
  }
  store_model sm = {0};
  snprintf(sm.name, sizeof sm.name, "%s", o->name);
  if (o->arch) snprintf(sm.arch, sizeof sm.arch, "%s", o->arch);
  else snprintf(sm.arch, sizeof sm.arch, "%s", o->npy ? "external" : "random");
  sm.image_dim = dim;
  sm.dtype = o->dtype;
  sm.image_size = info.has_pixel_format ? info.pixel.size : 0;
  /* What the vectors come from, so that a rerun under this name with other input is refused. */
  if (o->npy && store_file_checksum(o->npy, sm.weights_xxh, err)) goto done;
  if (!o->npy) snprintf(sm.weights_xxh, sizeof sm.weights_xxh, "seed:%llu", (unsigned long long)o->seed);
  int model_id = -1;
  store_txn *t;
  if (!(rows = malloc(sizeof(float) * dim))) {
    taca_fail(err, "out of memory");
    goto done;
  }
  for (size_t i0 = 0; i0 < n; i0 += CHUNK) {
    const size_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
    if (store_txn_begin(st, &t, err)) goto done;
    /* registered with the first rows: a run that stores nothing leaves no empty model behind */
    int ok = i0 > 0 || store_register_model(t, &sm, &model_id, err) == 0;
    for (size_t k = 0; ok && k < m; k++) {
      const float *row = (const float *)a.data + (i0 + k) * (size_t)dim;
      if (!o->npy) random_row(rows, dim, o->seed, idx[i0 + k]), row = rows;
      ok = store_put_embedding(t, model_id, STORE_IMAGE, idx[i0 + k], row, err) == 0;
    }
    if (!ok || store_txn_commit(t, err)) {
      if (!ok) store_txn_abort(t);
      goto done;
    }
    *written += m;
    if (!o->quiet) fprintf(stderr, "add-features: %s: %zu/%zu samples\n", o->name, i0 + m, n);
  }
  char by[128];
  snprintf(by, sizeof by, "add-features %s", o->name);
  if (store_record_content_hash(st, by, err)) goto done;
  rc = 0;
done:
  free(rows);
  free(idx);
  for (size_t i = 0; i < n_keys; i++) free(keys[i]);
  free(keys);
  npy_free(&a);
  store_close(st);
  return rc;
}
