/* precompute.c: the precompute job: a reader thread reads and decodes batches of samples ahead
 * while the main thread runs the model and commits each batch (samples, embeddings and progress in
 * one transaction). See precompute.h for the crash-safety contract. */
#include "base/clock.h"
#include "services/precompute/precompute.h"

#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/prefetch.h"
#include "image/pixel_codec.h"
#include "methods/encoder.h"
#include "image/image.h"
#include "text/tokenizer.h"
#include "services/precompute/append.h"
#include "services/precompute/data_source.h"
#include "services/precompute/inputs.h"
#include "services/precompute/progress.h"
#include "storage/store.h"

#define PROGRESS_INGEST "progress/ingest"
#define MAX_LOGGED_REJECTS 20
/* What the stored crops are (meta "dataset".preprocessing; image/image.h has the steps; the order of
 * the mode handling is PRECOMPUTE_PREPROCESSING_ORDER). */
#define PREPROCESSING "clip: decode in the source's PIL mode, resize shorter side bicubic as PIL does for " \
                      "that mode, center crop, convert to RGB"

typedef struct prepared {
  char *key;
  int32_t label;
  int32_t tokens[CLIP_CONTEXT_LEN];
  uint8_t *pix;   /* 3 * S * S, CHW, at the model's size S */
  uint8_t *store; /* the crop stored in the store (at the store's pixel size), or NULL: = pix */
  uint8_t *jpeg;  /* the stored crop encoded (JPEG codec), or NULL */
  size_t jpeg_len;
  char *caption;  /* the caption text as read (stored in `captions`) */
  char *metadata; /* KEY.json as compact JSON with sorted keys, or NULL */
  const char *metadata_problem; /* why a KEY.json was not kept (counted, never fatal), or NULL */
} prepared;

typedef struct reject {
  char *key;
  char reason[256];
  const char *category;
} reject;

typedef struct batch {
  prepared *items;
  int n;
  reject *rejects;
  int n_rej;
  int end_input;       /* position after the last entry of this batch */
  uint64_t end_entry;
  uint64_t entries;    /* entries consumed by this batch */
  int last;            /* no more data after this batch */
  int failed;          /* the reader hit an I/O error: err holds it */
  taca_error err;
} batch;

static void batch_free(batch *b) {
  if (!b) return;
  for (int i = 0; i < b->n; i++)
    free(b->items[i].key), free(b->items[i].pix), free(b->items[i].store), free(b->items[i].jpeg),
        free(b->items[i].caption), free(b->items[i].metadata);
  for (int i = 0; i < b->n_rej; i++) free(b->rejects[i].key);
  free(b->items);
  free(b->rejects);
  free(b);
}

/* ---------- reader thread: read, decode, preprocess, tokenize ---------- */

typedef struct reader {
  data_source *ds;
  const clip_tokenizer *tok;
  int batch, size, workers;
  int store_size;  /* pixel size kept in the store; 0 or size: the model's crop itself */
  int jpeg_quality; /* > 0: encode the stored crop as JPEG */
  batch *cell[2];   /* the prefetch queue's items: a cell holds the batch read into it */
  int ended;        /* the last (or a failed) batch has been read */
  taca_prefetch *q;
} reader;

/* The sample's KEY.json as canonical JSON (compact, sorted keys: equal content, equal bytes), or the
 * reason it is not kept. */
static void keep_metadata(const ds_sample *s, prepared *p) {
  if (s->metadata_oversize) {
    p->metadata_problem = "metadata (.json) too large";
    return;
  }
  if (!s->metadata) return;
  json_t *j = json_loadb(s->metadata, s->metadata_len, 0, NULL);
  if (!json_is_object(j)) {
    p->metadata_problem = "metadata (.json) not a valid JSON object";
  } else {
    p->metadata = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    if (p->metadata && strlen(p->metadata) > STORE_MAX_METADATA) {
      free(p->metadata);
      p->metadata = NULL;
      p->metadata_problem = "metadata (.json) too large";
    }
  }
  json_decref(j);
}

static batch *read_batch(reader *r) {
  batch *b = calloc(1, sizeof *b);
  ds_sample *raw = calloc(r->batch, sizeof *raw);
  if (!b || !raw) {
    free(raw);
    if (b) b->failed = 1, taca_fail(&b->err, "out of memory");
    return b;
  }
  int n = 0;
  for (; n < r->batch; n++) {
    int rc = ds_next(r->ds, &raw[n], &b->err);
    if (rc < 0) {
      b->failed = 1;
      break;
    }
    if (rc == 0) {
      b->last = 1;
      break;
    }
    b->end_input = raw[n].input;
    b->end_entry = raw[n].entry + 1;
  }
  b->entries = (uint64_t)n;
  b->items = calloc(n ? n : 1, sizeof *b->items);
  b->rejects = calloc(n ? n : 1, sizeof *b->rejects);
  char (*why)[256] = calloc(n ? n : 1, sizeof *why);
  const char **cat = calloc(n ? n : 1, sizeof *cat);
  uint8_t **pix = calloc(n ? n : 1, sizeof *pix);
  uint8_t **spix = calloc(n ? n : 1, sizeof *spix);
  uint8_t **jpg = calloc(n ? n : 1, sizeof *jpg);
  size_t *jlen = calloc(n ? n : 1, sizeof *jlen);
  const int other = r->store_size > 0 && r->store_size != r->size;
  int32_t (*tok)[CLIP_CONTEXT_LEN] = calloc(n ? n : 1, sizeof *tok);
  if (!b->items || !b->rejects || !why || !cat || !pix || !spix || !jpg || !jlen || !tok) {
    b->failed = 1;
    taca_fail(&b->err, "out of memory");
    n = 0;
  }
  const size_t per = (size_t)3 * r->size * r->size;
#pragma omp parallel for schedule(dynamic, 1) num_threads(r->workers)
  for (int i = 0; i < n; i++) {
    ds_sample *s = &raw[i];
    if (s->problem) {
      snprintf(why[i], sizeof why[i], "%s", s->problem);
      cat[i] = s->problem;
      continue;
    }
    taca_error e = {{0}};
    if (store_check_key(s->key, strlen(s->key), &e)) { /* keys travel as proto3 strings: UTF-8, <= 511 B */
      snprintf(why[i], sizeof why[i], "%.240s", e.msg);
      cat[i] = strstr(e.msg, "UTF-8") || strstr(e.msg, "NUL") ? "key not UTF-8" : "key too long";
      continue;
    }
    if (clip_tokenize(r->tok, s->caption, tok[i], CLIP_CONTEXT_LEN, &e)) {
      snprintf(why[i], sizeof why[i], "caption: %.240s", e.msg);
      cat[i] = "caption not valid text";
      continue;
    }
    rgb_image img = {0};
    pix[i] = malloc(per);
    if (other) spix[i] = malloc((size_t)3 * r->store_size * r->store_size);
    if (!pix[i] || (other && !spix[i]) || image_decode(s->image, s->image_len, &img, &e) ||
        clip_resize_crop_u8(&img, r->size, pix[i], &e) ||
        (other && clip_resize_crop_u8(&img, r->store_size, spix[i], &e))) {
      snprintf(why[i], sizeof why[i], "image: %.240s", pix[i] ? e.msg : "out of memory");
      cat[i] = "corrupt or unreadable image";
      free(pix[i]);
      free(spix[i]);
      pix[i] = spix[i] = NULL;
    } else if (r->jpeg_quality > 0 &&
               pixel_encode_jpeg(other ? spix[i] : pix[i], other ? r->store_size : r->size, r->jpeg_quality, &jpg[i],
                                 &jlen[i], &e)) {
      /* an encoder failure is not the sample's fault: the run fails (below) */
      snprintf(why[i], sizeof why[i], "JPEG encoding of the stored crop: %.200s", e.msg);
      jlen[i] = (size_t)-1;
    }
    rgb_image_free(&img);
  }
  for (int i = 0; i < n; i++)
    if (jlen[i] == (size_t)-1 && !b->failed) {
      b->failed = 1;
      taca_fail(&b->err, "sample '%s': %s", raw[i].key, why[i]);
    }
  for (int i = 0; i < n && !b->failed; i++) {
    if (cat[i]) {
      b->rejects[b->n_rej++] = (reject){raw[i].key, {0}, cat[i]};
      snprintf(b->rejects[b->n_rej - 1].reason, sizeof why[i], "%s", why[i]);
      raw[i].key = NULL;
      continue;
    }
    prepared *p = &b->items[b->n++];
    p->key = raw[i].key;
    raw[i].key = NULL;
    p->label = raw[i].has_label ? raw[i].label : -1;
    memcpy(p->tokens, tok[i], sizeof p->tokens);
    p->pix = pix[i];
    p->store = spix[i];
    p->jpeg = jpg[i];
    p->jpeg_len = jlen[i];
    jpg[i] = NULL;
    p->caption = raw[i].caption;
    raw[i].caption = NULL;
    keep_metadata(&raw[i], p);
  }
  for (int i = 0; i < n; i++) free(jpg[i]);
  for (int i = 0; i < r->batch; i++) ds_sample_free(&raw[i]);
  free(raw), free(why), free(cat), free(pix), free(spix), free(jpg), free(jlen), free(tok);
  return b;
}

/* The prefetch producer (base/prefetch.h): the next batch into a cell; after the last (or a failed
 * or unallocatable one) the stream ends. */
static int reader_fill(void *ctx, long k, void *item, taca_error *err) {
  (void)k, (void)err;
  reader *r = ctx;
  if (r->ended) return 0;
  batch *b = read_batch(r);
  *(batch **)item = b;
  if (!b || b->last || b->failed) r->ended = 1; /* read now: once queued, b is the consumer's to free */
  return 1;
}

/* The next batch (NULL: out of memory); the cell goes straight back: the batch is the caller's. */
static batch *reader_pop(reader *r) {
  void *cell = NULL;
  if (taca_prefetch_next(r->q, &cell, NULL) <= 0) return NULL;
  batch *b = *(batch **)cell;
  taca_prefetch_release(r->q, cell);
  return b;
}

static void drop_cell(void *ctx, void *cell) {
  (void)ctx;
  batch_free(*(batch **)cell);
}

static void reader_stop(reader *r) {
  taca_prefetch_stop(r->q, drop_cell);
  r->q = NULL;
}

/* ---------- helpers ---------- */

static void default_name(const char *path, char *out, size_t n) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s", path);
  size_t len = strlen(tmp);
  while (len > 1 && tmp[len - 1] == '/') tmp[--len] = 0;
  char *base = basename(tmp);
  char *dot = strstr(base, ".safetensors");
  if (dot) *dot = 0;
  snprintf(out, n, "%s", base);
  for (char *p = out; *p; p++)
    if (*p == ' ' || *p == '/' || (unsigned char)*p < 33 || (unsigned char)*p > 126) *p = '_';
}

static json_t *get_json_meta(store_view *v, const char *key, taca_error *err, int *failed) {
  const void *val;
  size_t len;
  *failed = 0;
  if (store_get_meta(v, key, &val, &len, err)) {
    *failed = 1;
    return NULL;
  }
  if (!val) return NULL;
  json_error_t je;
  json_t *j = json_loadb(val, len, 0, &je);
  if (!j) {
    *failed = 1;
    taca_fail(err, "store meta '%s' is not valid JSON: %s", key, je.text);
  }
  return j;
}

static int put_json_meta(store_txn *t, const char *key, json_t *j, taca_error *err) {
  char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
  if (!s) return taca_fail(err, "out of memory");
  int rc = store_put_meta(t, key, s, strlen(s), err);
  free(s);
  return rc;
}

static uint64_t jget_u64(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_integer(v) ? (uint64_t)json_integer_value(v) : 0;
}

static void normalize_batch(const prepared *items, int n, const encoder_preprocess *pp, float *pix) {
  const int S = pp->image_size;
  const size_t per = (size_t)3 * S * S;
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; i++) clip_normalize_u8(items[i].pix, S, pp->mean, pp->std, pix + per * i);
}

typedef struct job {
  const precompute_opts *o;
  taca_encoder *m;         /* methods/encoder.h: a CLIP model or an exported adapted one */
  encoder_preprocess pp;
  int image_dim, text_dim; /* text_dim 0: no text tower */
  taca_store *store;
  int model_id;
  char name[STORE_NAME_MAX];
  float *pix, *img, *txt;
  int32_t *tokens;
} job;

/* Runs the model on a batch of prepared samples: img/txt [n, E]. */
static int embed_batch(job *J, const prepared *items, int n, taca_error *err) {
  normalize_batch(items, n, &J->pp, J->pix);
  for (int i = 0; i < n; i++) memcpy(J->tokens + (size_t)i * CLIP_CONTEXT_LEN, items[i].tokens, sizeof items[i].tokens);
  if (encoder_embed_images(J->m, J->pix, n, J->img, err)) return -1;
  if (J->text_dim && encoder_embed_texts(J->m, J->tokens, n, J->txt, err)) return -1;
  return 0;
}

/* ---------- ingest ---------- */

/* The ingest's resume record: a new one, or the stored one checked against this run's inputs. */
static json_t *ingest_progress(job *J, json_t *prog, json_t *inputs, uint64_t base, taca_error *err) {
  const precompute_opts *o = J->o;
  if (!prog) {
    json_t *p = json_pack("{s:s,s:O,s:i,s:i,s:I,s:i,s:I,s:I,s:I,s:I,s:{},s:b}", "model", J->name, "inputs", inputs,
                          "shard", o->shard, "nshards", o->nshards, "base", (json_int_t)base, "input", 0, "entry",
                          (json_int_t)0, "next_index", (json_int_t)base, "accepted", (json_int_t)0, "rejected",
                          (json_int_t)0, "reasons", "done", 0);
    if (!p) taca_fail(err, "out of memory");
    else json_object_set_new(p, "preprocessing_order", json_string(PRECOMPUTE_PREPROCESSING_ORDER));
    return p;
  }
  if (precompute_check_order(prog, o->db, err)) return NULL; /* no store of crops made two ways */
  const char *pm = json_string_value(json_object_get(prog, "model"));
  if (!pm || strcmp(pm, J->name) != 0) {
    taca_fail(err, "%s: an unfinished ingest with model '%s' is in this store; resume it with that model", o->db,
              pm ? pm : "?");
    return NULL;
  }
  char why[768];
  if (jget_u64(prog, "shard") != (uint64_t)o->shard || jget_u64(prog, "nshards") != (uint64_t)o->nshards) {
    taca_fail(err, "%s: the unfinished ingest in this store read shard %llu/%llu; resume with the same --shard",
              o->db, (unsigned long long)jget_u64(prog, "shard"), (unsigned long long)jget_u64(prog, "nshards"));
    return NULL;
  }
  if (inputs_differ(json_object_get(prog, "inputs"), inputs, why, sizeof why)) {
    taca_fail(err, "%s: the unfinished ingest in this store read other data: %s; resume with the same --data (new "
              "inputs: add them with --append)", o->db, why);
    return NULL;
  }
  json_incref(prog);
  return prog;
}

/* Drops samples whose key is already stored (another shard's data, or repeated keys) or repeated
 * inside the batch: rejected, like any other bad sample. */
static int drop_stored_keys(store_view *view, batch *b, taca_error *err) {
  int keep = 0;
  for (int i = 0; i < b->n; i++) {
    uint64_t idx;
    taca_error e;
    int rc = store_lookup_key(view, b->items[i].key, strlen(b->items[i].key), &idx, &e);
    if (rc < 0) {
      *err = e;
      return -1;
    }
    int dup = rc == 0;
    for (int j = 0; !dup && j < keep; j++) dup = strcmp(b->items[j].key, b->items[i].key) == 0;
    if (dup) {
      b->rejects[b->n_rej++] = (reject){b->items[i].key, "duplicate key (already stored)", "duplicate key"};
      free(b->items[i].pix);
      free(b->items[i].store);
      free(b->items[i].jpeg);
      free(b->items[i].caption);
      free(b->items[i].metadata);
    } else {
      b->items[keep++] = b->items[i];
    }
  }
  b->n = keep;
  return 0;
}

/* The batch's samples and embeddings into t at indices next.. */
static int write_batch(job *J, store_txn *t, const batch *b, uint64_t next, int SP, json_t *meta_problems,
                       taca_error *err) {
  const precompute_opts *o = J->o;
  for (int i = 0; i < b->n; i++) {
    const prepared *p = &b->items[i];
    const void *px = !o->store_pixels ? NULL : p->jpeg ? (const void *)p->jpeg : p->store ? p->store : p->pix;
    const size_t plen = !o->store_pixels ? 0 : p->jpeg ? p->jpeg_len : (size_t)3 * SP * SP;
    if (store_put_sample(t, next + i, p->key, strlen(p->key), p->label, p->tokens, px, plen, err) ||
        store_put_annotations(t, next + i, p->caption, p->caption ? strlen(p->caption) : 0, p->metadata,
                              p->metadata ? strlen(p->metadata) : 0, err))
      return -1;
    if (p->metadata_problem) {
      json_t *c = json_object_get(meta_problems, p->metadata_problem);
      json_object_set_new(meta_problems, p->metadata_problem, json_integer((c ? json_integer_value(c) : 0) + 1));
    }
  }
  if (b->n && store_put_embeddings(t, J->model_id, STORE_IMAGE, next, b->n, J->img, err)) return -1;
  if (b->n && J->text_dim && store_put_embeddings(t, J->model_id, STORE_TEXT, next, b->n, J->txt, err))
    return -1;
  return 0;
}

/* Advances the resume record past the batch. */
static void advance_progress(json_t *prog, const data_source *ds, const batch *b, uint64_t next, uint64_t accepted,
                             uint64_t rejected) {
  json_t *reasons = json_object_get(prog, "reasons");
  for (int i = 0; i < b->n_rej; i++) {
    json_t *c = json_object_get(reasons, b->rejects[i].category);
    json_object_set_new(reasons, b->rejects[i].category, json_integer((c ? json_integer_value(c) : 0) + 1));
  }
  if (b->entries) {
    json_object_set_new(prog, "input", json_integer(b->end_input));
    json_object_set_new(prog, "entry", json_integer((json_int_t)b->end_entry));
    /* An input that ends exactly here: continue at the start of the next one. */
    if (b->end_entry == ds_get_input(ds, b->end_input)->entries) {
      json_object_set_new(prog, "input", json_integer(b->end_input + 1));
      json_object_set_new(prog, "entry", json_integer(0));
    }
  }
  json_object_set_new(prog, "next_index", json_integer((json_int_t)(next + b->n)));
  json_object_set_new(prog, "accepted", json_integer((json_int_t)(accepted + b->n)));
  json_object_set_new(prog, "rejected", json_integer((json_int_t)(rejected + b->n_rej)));
}

static void print_reasons(json_t *reasons) {
  const char *k;
  json_t *v;
  int first = 1;
  json_object_foreach(reasons, k, v) {
    fprintf(stderr, "%s%s: %lld", first ? " (" : ", ", k, (long long)json_integer_value(v));
    first = 0;
  }
  fprintf(stderr, "%s", first ? "" : ")");
}

/* Inputs that end early are ingested up to the damage and named. */
static json_t *report_damaged(const data_source *ds) {
  json_t *a = json_array();
  for (int i = 0; i < ds_num_inputs(ds); i++) {
    const ds_input *in = ds_get_input(ds, i);
    if (!in->problem) continue;
    fprintf(stderr, "precompute: input '%s' is damaged after %llu entries (%s): those are ingested, the rest is "
            "skipped\n", in->path, (unsigned long long)in->entries, in->problem);
    json_array_append_new(a, json_pack("{s:s,s:I,s:s}", "path", in->path, "entries", (json_int_t)in->entries,
                                       "problem", in->problem));
  }
  return a;
}

/* Where an ingest stands: its progress record (with the counts by reason), what it has stored. */
typedef struct ingest_state {
  json_t *inputs, *prog, *damaged; /* owned */
  json_t *reasons, *meta_problems; /* inside prog */
  uint64_t base, next, accepted, rejected, consumed;
  int logged;                       /* rejects printed so far */
  int SP;                           /* stored crop size */
} ingest_state;

/* One batch in one transaction: its samples, embeddings and the progress record; with the last batch
 * also the store's range and its "dataset" record. 0, or -1 (nothing of the batch is committed). */
static int commit_batch(job *J, ingest_state *I, data_source *ds, const batch *b, taca_error *err) {
  const precompute_opts *o = J->o;
  store_txn *t = NULL;
  int ok = store_txn_begin(J->store, &t, err) == 0 && write_batch(J, t, b, I->next, I->SP, I->meta_problems, err) == 0;
  advance_progress(I->prog, ds, b, I->next, I->accepted, I->rejected);
  if (b->last) {
    json_object_set_new(I->prog, "done", json_true());
    store_range range = {I->base, I->next + b->n, o->shard, o->nshards};
    json_t *dsj = json_pack("{s:O,s:I,s:I,s:I,s:O,s:O,s:s}", "inputs", I->inputs, "entries",
                            (json_int_t)ds_total_entries(ds), "stored", (json_int_t)(I->accepted + b->n),
                            "rejected", (json_int_t)(I->rejected + b->n_rej), "rejected_by_reason", I->reasons,
                            "damaged_inputs", I->damaged, "preprocessing", PREPROCESSING);
    json_object_set_new(dsj, "preprocessing_order", json_string(PRECOMPUTE_PREPROCESSING_ORDER));
    if (json_object_size(I->meta_problems)) json_object_set(dsj, "metadata_problems", I->meta_problems);
    ok = ok && store_set_range(t, &range, err) == 0 && put_json_meta(t, "dataset", dsj, err) == 0;
    json_decref(dsj);
  }
  ok = ok && put_json_meta(t, PROGRESS_INGEST, I->prog, err) == 0;
  if (!ok) {
    if (t) store_txn_abort(t);
    return -1;
  }
  return store_txn_commit(t, err);
}

static void print_ingest_summary(const ingest_state *I, const progress *P) {
  if (P->tty) fputc('\n', stderr);
  fprintf(stderr, "precompute: %llu samples stored, %llu rejected", (unsigned long long)I->accepted,
          (unsigned long long)I->rejected);
  print_reasons(I->reasons);
  if (json_array_size(I->damaged)) fprintf(stderr, "; %zu damaged inputs read in part", json_array_size(I->damaged));
  fputc('\n', stderr);
  const char *k;
  json_t *v;
  json_object_foreach(I->meta_problems, k, v)
    fprintf(stderr, "precompute: %lld samples stored without metadata: %s\n", (long long)json_integer_value(v), k);
}

static int ingest(job *J, json_t *stored_prog, precompute_stats *st, taca_error *err) {
  const precompute_opts *o = J->o;
  data_source *ds = NULL;
  clip_tokenizer *tok = NULL;
  ingest_state I = {0};
  int rc = -1;
  if (ds_open(&ds, o->data, o->ndata, o->shard, o->nshards, err)) return -1;
  /* The inputs of this run, to check that a resumed run reads the same data. */
  I.inputs = inputs_record(ds);
  I.base = o->index_base >= 0 ? (uint64_t)o->index_base : ds_entries_before_shard(ds);
  if (!I.inputs || !(I.prog = ingest_progress(J, stored_prog, I.inputs, I.base, err))) goto done;
  for (int i = 0; ds_total_entries(ds) == 0 && i < ds_num_inputs(ds); i++)
    if (ds_get_input(ds, i)->problem) { /* nothing readable at all: an error, not a warning */
      taca_fail(err, "no input has a readable entry: %s", ds_get_input(ds, i)->problem);
      goto done;
    }
  I.damaged = report_damaged(ds);
  int in0 = (int)jget_u64(I.prog, "input");
  uint64_t e0 = jget_u64(I.prog, "entry");
  I.next = jget_u64(I.prog, "next_index");
  I.accepted = jget_u64(I.prog, "accepted"), I.rejected = jget_u64(I.prog, "rejected");
  I.reasons = json_object_get(I.prog, "reasons");
  /* KEY.json files not kept, by reason (the samples themselves are stored without metadata) */
  I.meta_problems = json_object_get(I.prog, "metadata_problems");
  if (!json_is_object(I.meta_problems)) {
    json_object_set_new(I.prog, "metadata_problems", json_object());
    I.meta_problems = json_object_get(I.prog, "metadata_problems");
  }
  for (int i = 0; i < in0 && i < ds_num_inputs(ds); i++) I.consumed += ds_get_input(ds, i)->entries;
  I.consumed += e0;
  if (ds_seek(ds, in0, e0, err)) goto done;
  if (!(tok = clip_tokenizer_load(NULL, err))) goto done;

  /* ---- the reader thread reads and preprocesses ahead ---- */
  reader R = {.ds = ds, .tok = tok, .batch = o->batch, .size = J->pp.image_size,
              .store_size = o->pixel_size, .jpeg_quality = o->jpeg_quality,
              .workers = o->workers > 0 ? o->workers : 2};
  void *const cells[2] = {&R.cell[0], &R.cell[1]};
  if (taca_prefetch_start(&R.q, cells, 2, reader_fill, &R, err)) goto done;
  progress P;
  progress_init(&P, stderr, "precompute", ds_total_entries(ds), I.consumed);
  I.SP = o->pixel_size > 0 ? o->pixel_size : J->pp.image_size;
  store_view *view = NULL;

  /* ---- one transaction per batch: samples, embeddings, progress ---- */
  for (;;) {
    batch *b = reader_pop(&R);
    if (!b || b->failed) {
      if (b) *err = b->err;
      else taca_fail(err, "out of memory");
      batch_free(b);
      break;
    }
    if ((!view && store_view_begin(J->store, &view, err)) || store_view_refresh(view, err) ||
        drop_stored_keys(view, b, err) || (b->n && embed_batch(J, b->items, b->n, err))) {
      batch_free(b);
      break;
    }
    if (b->last && I.accepted + b->n == 0) {
      /* not recorded as done: a store without samples is no result */
      advance_progress(I.prog, ds, b, I.next, I.accepted, I.rejected);
      char *rs = json_dumps(I.reasons, JSON_COMPACT | JSON_SORT_KEYS);
      taca_fail(err, "no sample was stored: all %llu entries were rejected (by reason: %.300s)",
                (unsigned long long)(I.rejected + b->n_rej), rs ? rs : "?");
      free(rs);
      batch_free(b);
      break;
    }
    store_view_end(view); /* no snapshot may be pinned while committing a large batch */
    view = NULL;
    if (commit_batch(J, &I, ds, b, err)) {
      batch_free(b);
      break;
    }
    for (int i = 0; i < b->n_rej && I.logged < MAX_LOGGED_REJECTS; i++, I.logged++)
      fprintf(stderr, "%sprecompute: rejected '%s': %s\n", P.tty ? "\r\033[K" : "",
              b->rejects[i].key ? b->rejects[i].key : "?", b->rejects[i].reason);
    I.next += b->n;
    I.accepted += b->n;
    I.rejected += b->n_rej;
    I.consumed += b->entries;
    st->embedded += b->n;
    if (!o->quiet) progress_update(&P, I.consumed, I.rejected, b->last);
    int last = b->last;
    batch_free(b);
    if (last) {
      rc = 0;
      break;
    }
  }
  if (view) store_view_end(view);
  reader_stop(&R);

  /* ---- the summary ---- */
  if (rc == 0) {
    char by[128];
    snprintf(by, sizeof by, "precompute ingest %s", J->name);
    rc = store_record_content_hash(J->store, by, err);
  }
  if (!o->quiet && rc == 0) print_ingest_summary(&I, &P);
  st->stored = I.accepted;
  st->rejected = I.rejected;
done:
  json_decref(I.inputs);
  json_decref(I.prog);
  json_decref(I.damaged);
  clip_tokenizer_free(tok);
  ds_close(ds);
  return rc;
}

/* ---------- embed: a new model over the stored samples ---------- */

static uint64_t jget_u64_at(json_t *a, size_t i) {
  json_t *v = json_array_get(a, i);
  return json_is_integer(v) && json_integer_value(v) >= 0 ? (uint64_t)json_integer_value(v) : UINT64_MAX;
}

static int embed_existing(job *J, precompute_stats *st, taca_error *err) {
  const precompute_opts *o = J->o;
  const int S = J->pp.image_size, B = o->batch;
  char key[128];
  snprintf(key, sizeof key, "progress/embed/%s", J->name);
  store_view *v;
  if (store_view_begin(J->store, &v, err)) return -1;
  store_info info;
  int failed;
  json_t *prog = NULL;
  if (store_get_info(v, &info, err) || (prog = get_json_meta(v, key, err, &failed), failed)) {
    store_view_end(v);
    return -1;
  }
  if (!info.has_pixel_format || info.pixel.size != S) {
    store_view_end(v);
    json_decref(prog);
    return taca_fail(err, "%s: embedding stored samples needs pixels of %dx%d in the store "
                     "(it has %s); this model's image size differs or pixels were not stored",
                     o->db, S, S, info.has_pixel_format ? info.pixel.codec : "none");
  }
  if (prog && o->has_range) { /* progress belongs to the range it was made for */
    json_t *pr = json_object_get(prog, "range");
    if (!json_is_array(pr) || jget_u64_at(pr, 0) != o->range_begin || jget_u64_at(pr, 1) != o->range_end) {
      json_decref(prog);
      prog = NULL;
    }
  } else if (prog && json_object_get(prog, "range")) {
    json_decref(prog); /* a range run before: the whole store is not done */
    prog = NULL;
  }
  uint64_t begin = info.has_range ? info.range.begin : info.first_index;
  uint64_t end = info.has_range ? info.range.end : info.last_index + 1;
  if (o->has_range) {
    if (o->range_begin > begin) begin = o->range_begin;
    if (o->range_end < end) end = o->range_end;
    if (begin >= end) {
      store_view_end(v);
      json_decref(prog);
      return taca_fail(err, "--range %llu:%llu holds none of the store's samples", (unsigned long long)o->range_begin,
                       (unsigned long long)o->range_end);
    }
  }
  /* done, unless samples were appended after it (--append): then it goes on from where it stopped */
  if (prog && json_is_true(json_object_get(prog, "done")) && jget_u64(prog, "next_index") >= end) {
    store_view_end(v);
    json_decref(prog);
    fprintf(stderr, "precompute: model '%s' is already complete in %s\n", J->name, o->db);
    st->stored = info.n_samples;
    return 0;
  }
  uint64_t next = prog ? jget_u64(prog, "next_index") : begin;
  json_decref(prog);
  store_view_end(v);
  progress P;
  progress_init(&P, stderr, "embed", end - begin, next - begin);
  prepared *items = calloc(B, sizeof *items);
  uint64_t *idx = calloc(B, sizeof *idx);
  for (int i = 0; items && i < B; i++) items[i].pix = malloc((size_t)3 * S * S);
  if (!items || !idx) return taca_fail(err, "out of memory");
  int rc = 0;
  while (rc == 0 && next < end) {
    int n = 0;
    uint64_t i = next;
    if ((rc = store_view_begin(J->store, &v, err))) break;
    for (; i < end && n < B; i++) {
      store_sample s;
      const uint8_t *px;
      size_t len;
      int got = store_get_sample(v, i, &s, err);
      if (got == STORE_NOT_STORED) continue; /* a hole (rejected entry) */
      if (got) {
        rc = -1;
        break;
      }
      if (store_get_pixels(v, i, &px, &len, err) || pixel_decode(info.pixel.codec, px, len, S, items[n].pix, err)) {
        taca_error_prefix(err, "sample %llu", (unsigned long long)i);
        rc = -1;
        break;
      }
      memcpy(items[n].tokens, s.tokens, sizeof s.tokens);
      idx[n++] = i;
    }
    store_view_end(v);
    if (rc || (n && embed_batch(J, items, n, err))) {
      rc = -1;
      break;
    }
    store_txn *t;
    if ((rc = store_txn_begin(J->store, &t, err))) break;
    int ok = 1;
    for (int k = 0; ok && k < n; k++) {
      ok = store_put_embedding(t, J->model_id, STORE_IMAGE, idx[k], J->img + (size_t)k * J->image_dim, err) == 0;
      if (ok && J->text_dim)
        ok = store_put_embedding(t, J->model_id, STORE_TEXT, idx[k], J->txt + (size_t)k * J->text_dim, err) == 0;
    }
    json_t *pj = json_pack("{s:I,s:b}", "next_index", (json_int_t)i, "done", i >= end);
    if (o->has_range)
      json_object_set_new(pj, "range", json_pack("[I,I]", (json_int_t)o->range_begin, (json_int_t)o->range_end));
    ok = ok && put_json_meta(t, key, pj, err) == 0;
    json_decref(pj);
    if (!ok || store_txn_commit(t, err)) {
      if (!ok) store_txn_abort(t);
      rc = -1;
      break;
    }
    st->embedded += n;
    if (!o->quiet) progress_update(&P, i - begin, 0, i >= end);
    next = i;
  }
  if (rc == 0) {
    char by[128];
    snprintf(by, sizeof by, "precompute embed %s", J->name);
    rc = store_record_content_hash(J->store, by, err);
  }
  if (rc == 0 && !o->quiet) {
    if (P.tty) fputc('\n', stderr);
    fprintf(stderr, "precompute: model '%s' embedded %llu stored samples\n", J->name,
            (unsigned long long)st->embedded);
  }
  for (int i = 0; i < B; i++) free(items[i].pix);
  free(items);
  free(idx);
  st->stored = info.n_samples;
  return rc;
}

/* ---------- the job ---------- */

/* meta "provenance/NAME": what made the model's vectors and the space they live in (featured's Info
 * returns it; Search compares spaces). The record is as deterministic as the store's content. */
static int put_provenance(store_txn *t, const job *J, const encoder_provenance *p, const store_model *sm,
                          taca_error *err) {
  json_t *pp = json_pack("{s:i, s:s, s:[f,f,f], s:[f,f,f]}", "image_size", J->pp.image_size, "resize", J->pp.resize,
                         "mean", (double)J->pp.mean[0], (double)J->pp.mean[1], (double)J->pp.mean[2], "std",
                         (double)J->pp.std[0], (double)J->pp.std[1], (double)J->pp.std[2]);
  json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:b, s:i, s:i}", "kind", p->kind_name, "arch", p->arch,
                        "weights_xxh", p->weights_xxh, "space", p->space[0] ? p->space : p->weights_xxh,
                        "preprocess", pp, "dtype", sm->dtype == TACA_DT_F16 ? "f16" : "f32", "normalized", 0,
                        "image_dim", sm->image_dim, "text_dim", sm->text_dim);
  if (!j) return taca_fail(err, "out of memory");
  if (p->kind == ENCODER_ADAPTED) {
    json_object_set_new(j, "new_xxh", json_string(p->new_xxh));
    json_object_set_new(j, "old_xxh", json_string(p->old_xxh));
    json_object_set_new(j, "checkpoint_xxh", json_string(p->ckpt_xxh));
    json_object_set_new(j, "peft", json_string(p->peft));
    json_object_set_new(j, "layers", json_string(p->layers));
  }
  char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(j);
  if (!text) return taca_fail(err, "out of memory");
  char key[96];
  snprintf(key, sizeof key, "provenance/%s", J->name);
  int rc = store_put_meta(t, key, text, strlen(text), err);
  free(text);
  return rc;
}

static int register_model(job *J, taca_error *err) {
  const precompute_opts *o = J->o;
  store_model sm = {0};
  const encoder_provenance *prov = encoder_provenance_get(J->m, err);
  if (!prov) return -1;
  snprintf(sm.name, sizeof sm.name, "%s", J->name);
  snprintf(sm.arch, sizeof sm.arch, "%s", prov->arch);
  sm.image_dim = J->image_dim;
  sm.text_dim = J->text_dim;
  sm.dtype = o->dtype;
  sm.logit_scale = encoder_logit_scale(J->m);
  sm.image_size = J->pp.image_size;
  snprintf(sm.weights_xxh, sizeof sm.weights_xxh, "%s", prov->weights_xxh); /* = store_file_checksum */
  snprintf(sm.precision, sizeof sm.precision, "%s", nn_precision_name(encoder_precision(J->m)));
  store_txn *t;
  if (store_txn_begin(J->store, &t, err)) return -1;
  store_pixel_format pf = {o->pixel_size > 0 ? o->pixel_size : J->pp.image_size, 3, "raw", o->jpeg_quality};
  if (o->jpeg_quality > 0) snprintf(pf.codec, sizeof pf.codec, "jpeg");
  int ok = store_register_model(t, &sm, &J->model_id, err) == 0;
  if (ok) ok = put_provenance(t, J, prov, &sm, err) == 0;
  if (ok && o->store_pixels && o->ndata > 0) {
    /* Ingest runs fix the pixel format; a store that already has one keeps it (checked). */
    const void *val;
    size_t len;
    ok = store_txn_get_meta(t, "pixel", &val, &len, err) == 0;
    if (ok && !val) ok = store_set_pixel_format(t, &pf, err) == 0;
  }
  if (!ok) {
    store_txn_abort(t);
    return -1;
  }
  return store_txn_commit(t, err);
}

/* A finished ingest given --data again: the same inputs are fine (nothing to ingest); others are
 * refused naming the difference, rather than reported complete with the new shards never read. */
static int finished_inputs_differ(job *J, json_t *prog, taca_error *err) {
  const precompute_opts *o = J->o;
  if (o->ndata == 0) return 0;
  data_source *ds;
  if (ds_open(&ds, o->data, o->ndata, o->shard, o->nshards, err)) return -1;
  json_t *now = inputs_record(ds);
  ds_close(ds);
  char why[768];
  int differ = inputs_differ(json_object_get(prog, "inputs"), now, why, sizeof why);
  json_decref(now);
  if (differ)
    return taca_fail(err, "%s: the finished ingest in this store read other data: %s (new inputs are added with "
                     "--append; changed ones need a new store)", o->db, why);
  return 0;
}

int precompute_run(const precompute_opts *o, precompute_stats *st, taca_error *err) {
  memset(st, 0, sizeof *st);
  double t0 = taca_now_s();
  if (o->batch <= 0 || o->batch > 4096) return taca_fail(err, "--batch-size must be in 1..4096");
  if (o->dtype != TACA_DT_F16 && o->dtype != TACA_DT_F32) return taca_fail(err, "--dtype must be f16 or f32");
  job J = {.o = o};
  if (o->name) snprintf(J.name, sizeof J.name, "%s", o->name);
  else default_name(o->model_path, J.name, sizeof J.name);
  nn_backend *be = nn_backend_cpu_create(o->threads);
  if (!be) return taca_fail(err, "out of memory");
  int rc = -1;
  J.m = encoder_open(o->model_path, o->arch, be, o->batch, err);
  if (!J.m || encoder_set_precision(J.m, o->precision, err)) goto out;
  encoder_get_preprocess(J.m, &J.pp);
  J.image_dim = encoder_image_dim(J.m);
  J.text_dim = encoder_text_dim(J.m);
  const int S = J.pp.image_size, E = J.image_dim > J.text_dim ? J.image_dim : J.text_dim, B = o->batch;
  J.pix = malloc(sizeof(float) * 3 * S * S * B);
  J.img = malloc(sizeof(float) * E * B);
  J.txt = malloc(sizeof(float) * E * B);
  J.tokens = malloc(sizeof(int32_t) * CLIP_CONTEXT_LEN * B);
  if (!J.pix || !J.img || !J.txt || !J.tokens) {
    taca_fail(err, "out of memory");
    goto out;
  }
  store_options so = {.readonly = 0, .create = 1, .map_size = o->map_size};
  if (store_open(&J.store, o->db, &so, err)) goto out;
  /* Which mode: an ingest in progress or not started → ingest; finished → embed. */
  store_view *v;
  if (store_view_begin(J.store, &v, err)) goto out;
  int failed;
  json_t *prog = get_json_meta(v, PROGRESS_INGEST, err, &failed);
  store_info info;
  int info_failed = store_get_info(v, &info, err);
  store_view_end(v);
  if (failed || info_failed) goto out;
  int finished = prog && json_is_true(json_object_get(prog, "done"));
  if (!prog && info.n_samples > 0) {
    taca_fail(err, "%s: the store has samples but no ingest record; it was not written by precompute", o->db);
    json_decref(prog);
    goto out;
  }
  if (o->append && prog) { /* --append onto a store with an ingest (an empty store: a plain ingest) */
    append_plan ap;
    st->mode = "ingest";
    if (append_prepare(J.store, o, J.name, J.pp.image_size, prog, &ap, err)) {
      json_decref(prog);
      goto out;
    }
    json_decref(prog);
    if (register_model(&J, err) == 0 && append_commit(J.store, &ap, err) == 0) {
      if (!o->quiet)
        fprintf(stderr, "precompute: appending %d inputs (%llu entries) after sample %llu\n", ap.n_new,
                (unsigned long long)ap.new_entries, (unsigned long long)jget_u64(ap.prog, "next_index"));
      J.o = &ap.run;
      rc = ingest(&J, ap.prog, st, err);
      J.o = o;
      if (rc == 0) append_report_models(J.store, J.name, o->db);
    }
    append_plan_free(&ap);
    goto out;
  }
  if (finished && finished_inputs_differ(&J, prog, err)) {
    json_decref(prog);
    goto out;
  }
  if (finished) {
    const char *pm = json_string_value(json_object_get(prog, "model"));
    if (pm && strcmp(pm, J.name) == 0) {
      if (register_model(&J, err)) { /* the record compares arch, dims and the weights' checksum */
        json_decref(prog);
        goto out;
      }
      fprintf(stderr, "precompute: %s is complete for model '%s' (%llu samples); nothing to do\n", o->db,
              J.name, (unsigned long long)info.n_samples);
      st->stored = info.n_samples;
      st->mode = "ingest";
      json_decref(prog);
      rc = 0;
      goto out;
    }
    json_decref(prog);
    st->mode = "embed";
    if (register_model(&J, err)) goto out;
    rc = embed_existing(&J, st, err);
  } else {
    st->mode = "ingest";
    if (o->ndata == 0) {
      json_decref(prog);
      taca_fail(err, "--data is required to fill a new store");
      goto out;
    }
    if (register_model(&J, err)) {
      json_decref(prog);
      goto out;
    }
    rc = ingest(&J, prog, st, err);
    json_decref(prog);
  }
out:
  st->seconds = taca_now_s() - t0;
  store_close(J.store);
  free(J.pix), free(J.img), free(J.txt), free(J.tokens);
  encoder_close(J.m);
  nn_backend_destroy(be);
  return rc;
}
