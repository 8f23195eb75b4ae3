/* cmd_query.c: `taca query --db DIR info|keys|lookup|export|search ...`: offline questions to a store
 * (no server needed): a summary, the key listing, sample lookups by key (caption, metadata, vectors),
 * .npy export of embeddings (with a .tsv/.jsonl of keys and metadata in the same row order), exact
 * top-k by vectors or by captions encoded here with the store model's own text tower.
 * With --server among the arguments it hands over to cmd_query_server (cmd_query_server.c). */
#include <errno.h>
#include <getopt.h>
#include <sys/stat.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/npy.h"
#include "nn/clip.h"
#include "services/cli/cli_util.h"
#include "services/cli/commands.h"
#include "search/ann.h"
#include "search/search.h"
#include "storage/store.h"
#include "text/tokenizer.h"

static const char *USAGE =
    "usage: taca query --db DIR [--json] COMMAND [options]\n"
    "       taca query --server ADDR[,ADDR...] ... (see taca query --server ADDR --help)\n"
    "  Answers from a store directory offline (read-only; safe while precompute writes it).\n"
    "commands:\n"
    "  info [--hash]             counts, index range, pixel format, dataset, models and their\n"
    "                            embeddings, progress records; --hash adds the content hash\n"
    "                            (reads the whole store)\n"
    "  keys [--from I] [--limit N]  the stored samples' keys with their indices, in index order,\n"
    "                            from index I (default 0), N per page (default 100; 0 = all)\n"
    "  lookup [--values] KEY...  index, label, caption, metadata, tokens, pixels and embeddings of\n"
    "                            each sample key; --values (and --json) print the vectors' values\n"
    "  export --model NAME --modality image|text --out X.npy [--range A:B] [--dtype f32|stored]\n"
    "         [--rows ROWS.tsv|ROWS.jsonl]\n"
    "                            embeddings of indices A..B-1 (default: every stored sample, or\n"
    "                            every stored embedding in a store without samples) as\n"
    "                            [N, dim] .npy, F32 or the stored dtype; fails naming a missing index;\n"
    "                            --rows also writes index, key, caption and metadata per row, in the\n"
    "                            .npy's row order (tab-separated, or JSON lines)\n"
    "  search --model NAME --modality image|text (--vectors Q.npy | --caption TEXT... |\n"
    "         --captions FILE) [--text-model PATH[:ARCH]] [-k K] [--metric ip|cosine]\n"
    "                            exact top-K (default 10) for each row of Q ([nq, dim] or [dim]) or\n"
    "                            each caption (--caption repeats, then one per line of FILE), encoded\n"
    "                            with the text tower at PATH, which must be the checkpoint the store\n"
    "                            model was made with (its weights hash is checked), in the\n"
    "                            precision the store records for it (f32; bf16 after precompute\n"
    "                            --precision bf16)\n"
    "         [--ann [--nprobe N] [--refine R]]  through the model's ANN index (taca index): k x R\n"
    "                            candidates (default: the index's, 100 for ivfpq) rescored exactly\n"
    "  --json prints JSON (one object for info, one line per key or query otherwise).\n";

#define CMD "query"

static int open_view(const char *db, taca_store **s, store_view **v) {
  taca_error err = {{0}};
  store_options opt = {.readonly = 1};
  if (store_open(s, db, &opt, &err)) return cli_fail(CMD, 1, "%s", err.msg);
  if (store_view_begin(*s, v, &err)) {
    store_close(*s);
    return cli_fail(CMD, 1, "%s", err.msg);
  }
  return 0;
}

static void print_json(json_t *j) {
  char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
  if (s) puts(s);
  free(s);
  json_decref(j);
}

static json_t *json_meta_value(const void *val, size_t len) {
  json_t *j = json_loadb(val, len, JSON_DECODE_ANY, NULL);
  return j ? j : json_stringn_nocheck(val, len);
}

static int parse_modality(const char *s, store_modality *m) {
  if (!strcmp(s, "image")) *m = STORE_IMAGE;
  else if (!strcmp(s, "text")) *m = STORE_TEXT;
  else return cli_fail(CMD, 2, "--modality must be image or text, got '%s'", s);
  return 0;
}

/* ---------- info ---------- */

/* Progress records ("progress/NAME") that the precompute keeps for resuming. */
typedef struct progress_ctx {
  int json;
  json_t *obj;
} progress_ctx;

static int progress_one(const char *key, size_t key_len, const void *val, size_t len, void *vctx) {
  progress_ctx *c = vctx;
  const char *name = key + 9;  /* after "progress/" */
  size_t nl = key_len - 9;
  if (c->json) {
    char buf[STORE_MAX_KEY + 1];
    memcpy(buf, name, nl);
    buf[nl] = '\0';
    json_object_set_new(c->obj, buf, json_meta_value(val, len));
  } else {
    printf("progress     %.*s: %.*s\n", (int)nl, name, (int)(len > 200 ? 200 : len), (const char *)val);
  }
  return 0;
}

static int print_progress(store_view *v, int json, json_t *obj) {
  taca_error err = {{0}};
  progress_ctx c = {json, json ? json_object() : NULL};
  if (store_scan_meta(v, "progress/", progress_one, &c, &err)) {
    json_decref(c.obj);
    return cli_fail(CMD, 1, "%s", err.msg);
  }
  if (json) json_object_set_new(obj, "progress", c.obj);
  return 0;
}

static int cmd_info(store_view *v, const char *db, int json, int argc, char **argv) {
  int hash = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--hash")) hash = 1;
    else if (!strcmp(argv[i], "--help")) return fputs(USAGE, stdout), 0;
    else return cli_fail(CMD, 2, "info: unexpected argument '%s'", argv[i]);
  }
  taca_error err = {{0}};
  store_info *in = malloc(sizeof *in);
  if (!in) return cli_fail(CMD, 1, "out of memory");
  if (store_get_info(v, in, &err)) {
    free(in);
    return cli_fail(CMD, 1, "%s", err.msg);
  }
  char hex[33] = "";
  if (hash && store_content_hash(v, hex, &err)) {
    free(in);
    return cli_fail(CMD, 1, "%s", err.msg);
  }
  const void *ds;
  size_t dslen;
  if (store_get_meta(v, "dataset", &ds, &dslen, &err)) {
    free(in);
    return cli_fail(CMD, 1, "%s", err.msg);
  }
  if (json) {
    json_t *o = json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:I}", "dir", db, "schema_version", in->schema_version,
                          "samples", (json_int_t)in->n_samples, "pixels", (json_int_t)in->n_pixels, "keys",
                          (json_int_t)in->n_keys, "map_size", (json_int_t)in->map_size, "used_bytes",
                          (json_int_t)in->used_bytes);
    json_object_set_new(o, "captions", json_integer((json_int_t)in->n_captions));
    json_object_set_new(o, "metadata", json_integer((json_int_t)in->n_metadata));
    if (in->n_samples) {
      json_object_set_new(o, "first_index", json_integer((json_int_t)in->first_index));
      json_object_set_new(o, "last_index", json_integer((json_int_t)in->last_index));
    }
    json_object_set_new(o, "range", in->has_range ? json_pack("{s:I, s:I, s:i, s:i}", "begin", (json_int_t)in->range.begin,
                                                              "end", (json_int_t)in->range.end, "shard", in->range.shard,
                                                              "nshards", in->range.nshards)
                                                  : json_null());
    json_object_set_new(o, "pixel", in->has_pixel_format ? json_pack("{s:i, s:i, s:s, s:i}", "size", in->pixel.size,
                                                                     "channels", in->pixel.channels, "codec",
                                                                     in->pixel.codec, "quality", in->pixel.quality)
                                                         : json_null());
    json_object_set_new(o, "dataset", ds ? json_meta_value(ds, dslen) : json_null());
    json_t *ms = json_array();
    for (int i = 0; i < in->n_models; i++) {
      const store_model *m = &in->models[i];
      json_array_append_new(
          ms, json_pack("{s:i, s:s, s:s, s:s, s:i, s:i, s:f, s:s, s:i, s:i, s:I, s:I}", "id", m->id, "name", m->name,
                        "arch", m->arch, "dtype", m->dtype == TACA_DT_F16 ? "f16" : "f32", "image_dim", m->image_dim,
                        "text_dim", m->text_dim, "logit_scale", (double)m->logit_scale, "weights_xxh", m->weights_xxh,
                        "image_size", m->image_size, "block_size", m->block_size, "image_count",
                        (json_int_t)in->n_embeddings[i][0], "text_count", (json_int_t)in->n_embeddings[i][1]));
      json_object_set_new(json_array_get(ms, json_array_size(ms) - 1), "precision",
                          json_string(m->precision[0] ? m->precision : "f32"));
    }
    json_object_set_new(o, "models", ms);
    if (hash) json_object_set_new(o, "content_hash", json_string(hex));
    int rc = print_progress(v, 1, o);
    print_json(o);
    free(in);
    return rc;
  }
  printf("store        %s (schema %d; %.1f MiB used of a %.1f GiB map)\n", db, in->schema_version,
         (double)in->used_bytes / (1 << 20), (double)in->map_size / (1u << 30));
  printf("samples      %" PRIu64 " (pixels %" PRIu64 ", keys %" PRIu64 ")", in->n_samples, in->n_pixels, in->n_keys);
  if (in->n_samples) printf(", indices %" PRIu64 "..%" PRIu64, in->first_index, in->last_index);
  printf("\n");
  printf("annotations  %" PRIu64 " captions, %" PRIu64 " metadata records\n", in->n_captions, in->n_metadata);
  if (in->has_range)
    printf("range        [%" PRIu64 ", %" PRIu64 ") shard %d/%d\n", in->range.begin, in->range.end, in->range.shard,
           in->range.nshards);
  else printf("range        not declared\n");
  if (in->has_pixel_format) {
    printf("pixels       %dx%dx%d %s", in->pixel.channels, in->pixel.size, in->pixel.size, in->pixel.codec);
    if (in->pixel.quality) printf(" quality %d", in->pixel.quality);
    printf("\n");
  } else printf("pixels       format not set\n");
  if (ds)
    printf("dataset      %.*s%s\n", (int)(dslen > 300 ? 300 : dslen), (const char *)ds,
           dslen > 300 ? " ... (cut; --json prints all of it)" : "");
  printf("models       %d\n", in->n_models);
  for (int i = 0; i < in->n_models; i++) {
    const store_model *m = &in->models[i];
    printf("  [%d] %s  arch %s  %s  block %d  logit_scale %g  image_size %d\n", m->id, m->name, m->arch[0] ? m->arch : "-",
           m->dtype == TACA_DT_F16 ? "f16" : "f32", m->block_size, (double)m->logit_scale, m->image_size);
    if (!strcmp(m->precision, "bf16")) printf("      computed with --precision bf16\n");
    printf("      image dim %d: %" PRIu64 " stored; text dim %d: %" PRIu64 " stored; weights xxh3 %s\n", m->image_dim,
           in->n_embeddings[i][0], m->text_dim, in->n_embeddings[i][1], m->weights_xxh[0] ? m->weights_xxh : "-");
  }
  if (hash) printf("content      xxh3-128 %s\n", hex);
  int rc = print_progress(v, 0, NULL);
  free(in);
  return rc;
}

/* ---------- lookup ---------- */

/* A stored row as a JSON array of floats. */
static json_t *vector_json(store_view *v, int model, store_modality m, int dim, uint64_t index) {
  float *row = malloc((size_t)dim * sizeof *row);
  json_t *a = json_array();
  if (row && store_get_embedding(v, model, m, index, row, NULL) == 0)
    for (int i = 0; i < dim; i++) json_array_append_new(a, json_real((double)row[i]));
  free(row);
  return a;
}

/* The sample's caption (json string or NULL) and metadata (parsed object or NULL); -1 on a damaged
 * record (err says which). */
static int annotations_json(store_view *v, uint64_t index, json_t **caption, json_t **meta, taca_error *err) {
  const char *t;
  size_t len;
  int found;
  *caption = *meta = NULL;
  if (store_get_caption(v, index, &t, &len, &found, err)) return -1;
  if (found) *caption = json_stringn_nocheck(t, len);
  if (store_get_metadata(v, index, &t, &len, &found, err)) {
    json_decref(*caption);
    *caption = NULL;
    return -1;
  }
  if (found) *meta = json_meta_value(t, len);
  return 0;
}

static int cmd_lookup(store_view *v, int json, int argc, char **argv) {
  int values = json;
  if (argc > 1 && !strcmp(argv[1], "--values")) {
    values = 1;
    argc--, argv++;
  }
  if (argc < 2) return cli_fail(CMD, 2, "lookup needs at least one KEY");
  taca_error err = {{0}};
  store_info *in = malloc(sizeof *in);
  if (!in) return cli_fail(CMD, 1, "out of memory");
  if (store_get_info(v, in, &err)) {
    free(in);
    return cli_fail(CMD, 1, "%s", err.msg);
  }
  int status = 0;
  for (int a = 1; a < argc; a++) {
    const char *key = argv[a];
    uint64_t index;
    store_sample smp;
    const uint8_t *px;
    size_t pxlen = 0;
    int rc = store_lookup_key(v, key, strlen(key), &index, &err);
    if (rc == 0) rc = store_get_sample(v, index, &smp, &err);
    if (rc == STORE_NOT_STORED) {
      status = cli_fail(CMD, 1, "%s", err.msg);
      continue;
    }
    if (rc == 0) rc = store_get_pixels(v, index, &px, &pxlen, &err);
    if (rc == STORE_NOT_STORED) pxlen = 0, rc = 0;
    if (rc) { /* a damaged store: one line, no half answers */
      status = cli_fail(CMD, 1, "%s", err.msg);
      break;
    }
    int ntok = 0;
    while (smp.has_tokens && ntok < STORE_CONTEXT_LEN && smp.tokens[ntok]) ntok++;
    json_t *embs = json ? json_object() : NULL, *vecs = json ? json_object() : NULL;
    char line[1024] = "";
    for (int i = 0; i < in->n_models; i++)
      for (int m = 0; m < 2; m++) {
        const void *p;
        int dim = m ? in->models[i].text_dim : in->models[i].image_dim;
        if (dim <= 0) continue;
        rc = store_get_embedding_raw(v, i, (store_modality)m, index, &p, &err);
        if (rc == STORE_NOT_STORED) continue;
        if (rc) {
          json_decref(embs);
          json_decref(vecs);
          free(in);
          return cli_fail(CMD, 1, "%s", err.msg);
        }
        if (json) {
          json_t *mv = json_object_get(vecs, in->models[i].name);
          if (!mv) json_object_set_new(vecs, in->models[i].name, mv = json_object());
          json_object_set_new(mv, store_modality_name((store_modality)m), vector_json(v, i, (store_modality)m, dim, index));
        }
        if (json) {
          json_t *arr = json_object_get(embs, in->models[i].name);
          if (!arr) json_object_set_new(embs, in->models[i].name, arr = json_array());
          json_array_append_new(arr, json_string(store_modality_name((store_modality)m)));
        } else {
          size_t l = strlen(line);
          snprintf(line + l, sizeof line - l, " %s:%s", in->models[i].name, store_modality_name((store_modality)m));
        }
      }
    json_t *cap, *meta;
    if (annotations_json(v, index, &cap, &meta, &err)) {
      json_decref(embs);
      json_decref(vecs);
      status = cli_fail(CMD, 1, "%s", err.msg);
      break;
    }
    if (json) {
      json_t *o = json_pack("{s:s, s:I, s:i, s:i, s:I, s:o, s:o}", "key", key, "index", (json_int_t)index, "label",
                            smp.label, "n_tokens", ntok, "pixel_bytes", (json_int_t)pxlen, "embeddings", embs,
                            "vectors", vecs);
      json_object_set_new(o, "caption", cap ? cap : json_null());
      json_object_set_new(o, "metadata", meta ? meta : json_null());
      if (smp.has_tokens) {
        json_t *t = json_array();
        for (int i = 0; i < STORE_CONTEXT_LEN; i++) json_array_append_new(t, json_integer(smp.tokens[i]));
        json_object_set_new(o, "tokens", t);
      }
      print_json(o);
    } else {
      printf("%s\tindex %" PRIu64 "\tlabel %d\ttokens %d\tpixels %zu B\tembeddings%s\n", key, index, smp.label, ntok, pxlen,
             line[0] ? line : " none");
      char *cs = cap ? json_dumps(cap, JSON_ENCODE_ANY | JSON_ENSURE_ASCII) : NULL;
      char *ms = meta ? json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII) : NULL;
      printf("  caption   %s\n  metadata  %s\n", cs ? cs : "-", ms ? ms : "-");
      free(cs);
      free(ms);
      json_decref(cap);
      json_decref(meta);
      for (int i = 0; values && i < in->n_models; i++)
        for (int m = 0; m < 2; m++) {
          int dim = m ? in->models[i].text_dim : in->models[i].image_dim;
          if (dim <= 0 || store_get_embedding_raw(v, i, (store_modality)m, index, &(const void *){0}, NULL)) continue;
          json_t *a = vector_json(v, i, (store_modality)m, dim, index);
          char *as = json_dumps(a, JSON_COMPACT | JSON_REAL_PRECISION(7));
          printf("  %s:%s  %s\n", in->models[i].name, store_modality_name((store_modality)m), as ? as : "?");
          free(as);
          json_decref(a);
        }
    }
  }
  free(in);
  return status;
}

/* ---------- keys ---------- */

typedef struct keys_ctx {
  int json;
  uint64_t n, first, last;
} keys_ctx;

static int key_one(const store_sample *smp, void *vctx) {
  keys_ctx *c = vctx;
  if (c->json) print_json(json_pack("{s:I, s:s#}", "index", (json_int_t)smp->index, "key", smp->key, (int)smp->key_len));
  else printf("%" PRIu64 "\t%.*s\n", smp->index, (int)smp->key_len, smp->key);
  if (!c->n++) c->first = smp->index;
  c->last = smp->index;
  return 0;
}

static int cmd_keys(store_view *v, int json, int argc, char **argv) {
  uint64_t from = 0;
  long long limit = 100;
  for (int i = 1; i < argc; i++) {
    char *end;
    if (!strcmp(argv[i], "--from") && i + 1 < argc) {
      from = strtoull(argv[++i], &end, 10);
      if (*end || argv[i][0] == '-' || !argv[i][0]) return cli_fail(CMD, 2, "keys: --from needs an index, got '%s'", argv[i]);
    } else if (!strcmp(argv[i], "--limit") && i + 1 < argc) {
      limit = strtoll(argv[++i], &end, 10);
      if (*end || limit < 0 || !argv[i][0]) return cli_fail(CMD, 2, "keys: --limit needs a count >= 0, got '%s'", argv[i]);
    } else {
      return cli_fail(CMD, 2, "keys: unexpected or incomplete argument '%s' (--from I, --limit N)", argv[i]);
    }
  }
  taca_error err = {{0}};
  keys_ctx c = {json, 0, 0, 0};
  if (store_scan_samples(v, from, (uint64_t)limit, key_one, &c, &err)) return cli_fail(CMD, 1, "%s", err.msg);
  /* the summary goes to stderr, so that stdout stays one key per line */
  if (c.n)
    fprintf(stderr, "taca query: %" PRIu64 " keys, indices %" PRIu64 "..%" PRIu64 "%s%" PRIu64 "\n", c.n, c.first,
            c.last, limit && c.n == (uint64_t)limit ? "; next page: --from " : "", c.last + 1);
  else fprintf(stderr, "taca query: no keys at index %" PRIu64 " or later\n", from);
  return 0;
}

/* ---------- export ---------- */

/* Writes one text field of a .tsv row: tab, newline, CR and backslash escaped as \t \n \r \\. */
static void tsv_field(FILE *f, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (ch == '\t') fputs("\\t", f);
    else if (ch == '\n') fputs("\\n", f);
    else if (ch == '\r') fputs("\\r", f);
    else if (ch == '\\') fputs("\\\\", f);
    else fputc(ch, f);
  }
}

/* ROWS (.tsv: index, key, caption, metadata with a header line; .jsonl: one object per row) for the
 * indices a..b-1, the row order of the exported .npy. */
static int export_rows(store_view *v, const char *path, uint64_t a, uint64_t b) {
  size_t pl = strlen(path);
  int jsonl = pl > 6 && !strcmp(path + pl - 6, ".jsonl");
  FILE *f = fopen(path, "wb");
  if (!f) return cli_fail(CMD, 1, "%s: cannot create: %s", path, strerror(errno));
  if (!jsonl) fputs("index\tkey\tcaption\tmetadata\n", f);
  for (uint64_t i = a; i < b; i++) {
    store_sample smp;
    int have = store_get_sample(v, i, &smp, NULL) == 0, fc = 0, fm = 0;
    const char *cap = NULL, *meta = NULL;
    size_t cl = 0, ml = 0;
    taca_error aerr;
    if (store_get_caption(v, i, &cap, &cl, &fc, &aerr) || store_get_metadata(v, i, &meta, &ml, &fm, &aerr)) {
      fclose(f);
      return cli_fail(CMD, 1, "%s", aerr.msg);
    }
    if (jsonl) {
      json_t *o = json_pack("{s:I, s:s#}", "index", (json_int_t)i, "key", have ? smp.key : "", have ? (int)smp.key_len : 0);
      json_object_set_new(o, "caption", fc ? json_stringn_nocheck(cap, cl) : json_null());
      json_object_set_new(o, "metadata", fm ? json_meta_value(meta, ml) : json_null());
      char *line = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
      if (line) fprintf(f, "%s\n", line);
      free(line);
      json_decref(o);
    } else {
      fprintf(f, "%" PRIu64 "\t", i);
      if (have) tsv_field(f, smp.key, smp.key_len);
      fputc('\t', f);
      if (fc) tsv_field(f, cap, cl);
      fputc('\t', f);
      if (fm) tsv_field(f, meta, ml);
      fputc('\n', f);
    }
  }
  int bad = ferror(f);
  if (fclose(f) || bad) return cli_fail(CMD, 1, "%s: write error", path);
  return 0;
}

typedef struct export_ctx {
  uint64_t a, b;
  int dim, stored;
  size_t esz;
  uint8_t *out;
  uint64_t filled;
} export_ctx;

static int export_block(const store_block *blk, void *vctx) {
  export_ctx *c = vctx;
  uint64_t lo = blk->first_index, hi = lo + (uint64_t)blk->size;
  if (hi <= c->a) return 0;
  if (lo >= c->b) return 1;
  size_t in_row = (size_t)blk->dim * taca_dtype_size(blk->dtype);
  for (int r = 0; r < blk->size; r++) {
    uint64_t idx = lo + (uint64_t)r;
    if (idx < c->a || idx >= c->b || !((blk->bitmap[r >> 3] >> (r & 7)) & 1)) continue;
    const uint8_t *src = (const uint8_t *)blk->data + (size_t)r * in_row;
    uint8_t *dst = c->out + (size_t)(idx - c->a) * c->dim * c->esz;
    if (c->stored) memcpy(dst, src, in_row);
    else taca_convert_to_f32((float *)dst, src, blk->dtype, (size_t)blk->dim);
    c->filled++;
  }
  return 0;
}

/* First and last index with an embedding (for stores that hold embeddings but no samples). */
typedef struct span_ctx {
  int any;
  uint64_t first, last;
} span_ctx;

static int span_block(const store_block *blk, void *vctx) {
  span_ctx *c = vctx;
  for (int r = 0; r < blk->size; r++) {
    if (!((blk->bitmap[r >> 3] >> (r & 7)) & 1)) continue;
    uint64_t idx = blk->first_index + (uint64_t)r;
    if (!c->any) c->first = idx;
    c->last = idx;
    c->any = 1;
  }
  return 0;
}

static int parse_range(const char *s, uint64_t *a, uint64_t *b, int *has_a, int *has_b) {
  const char *colon = strchr(s, ':');
  if (!colon) return cli_fail(CMD, 2, "--range expects A:B (indices A..B-1), got '%s'", s);
  char *end;
  *has_a = colon != s;
  *has_b = colon[1] != '\0';
  if (*has_a) {
    *a = strtoull(s, &end, 10);
    if (end != colon || *s == '-') return cli_fail(CMD, 2, "--range: bad start in '%s'", s);
  }
  if (*has_b) {
    *b = strtoull(colon + 1, &end, 10);
    if (*end || colon[1] == '-') return cli_fail(CMD, 2, "--range: bad end in '%s'", s);
  }
  return 0;
}

static int cmd_export(store_view *v, int argc, char **argv) {
  const char *model = NULL, *mod = NULL, *out = NULL, *range = NULL, *dtype = "f32", *rows = NULL;
  static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"modality", required_argument, 0, 'M'},
                                       {"out", required_argument, 0, 'o'},   {"range", required_argument, 0, 'r'},
                                       {"dtype", required_argument, 0, 'd'}, {"rows", required_argument, 0, 'R'},
                                       {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
  int c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'm': model = optarg; break;
      case 'M': mod = optarg; break;
      case 'o': out = optarg; break;
      case 'r': range = optarg; break;
      case 'd': dtype = optarg; break;
      case 'R': rows = optarg; break;
      case 'h': fputs(USAGE, stdout); return 0;
      default: return cli_fail(CMD, 2, "export: unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
    }
  }
  if (optind < argc) return cli_fail(CMD, 2, "export: unexpected argument '%s'", argv[optind]);
  if (!model || !mod || !out) return cli_fail(CMD, 2, "export: --model, --modality and --out are required");
  int stored = !strcmp(dtype, "stored");
  if (!stored && strcmp(dtype, "f32")) return cli_fail(CMD, 2, "--dtype must be f32 or stored, got '%s'", dtype);
  store_modality m = STORE_IMAGE;
  if (parse_modality(mod, &m)) return 2;
  taca_error err = {{0}};
  store_model sm;
  if (store_find_model(v, model, &sm, &err)) return cli_fail(CMD, 1, "%s", err.msg);
  int dim = m == STORE_IMAGE ? sm.image_dim : sm.text_dim;
  if (dim <= 0) return cli_fail(CMD, 1, "model '%s' stores no %s embeddings", model, mod);

  store_info *in = malloc(sizeof *in);
  if (!in) return cli_fail(CMD, 1, "out of memory");
  if (store_get_info(v, in, &err)) {
    free(in);
    return cli_fail(CMD, 1, "%s", err.msg);
  }
  uint64_t a = in->n_samples ? in->first_index : 0, b = in->n_samples ? in->last_index + 1 : 0;
  if (!in->n_samples) {
    span_ctx sp = {0};
    if (store_scan_blocks(v, sm.id, m, span_block, &sp, &err)) {
      free(in);
      return cli_fail(CMD, 1, "%s", err.msg);
    }
    if (sp.any) {
      a = sp.first;
      b = sp.last + 1;
    }
  }
  free(in);
  if (range) {
    int ha, hb;
    if (parse_range(range, &a, &b, &ha, &hb)) return 2;
  }
  if (b <= a) return cli_fail(CMD, 1, "export: range %" PRIu64 ":%" PRIu64 " is empty", a, b);
  if (b - a > ((uint64_t)1 << 40) / (uint64_t)dim)
    return cli_fail(CMD, 1, "export: range %" PRIu64 ":%" PRIu64 " is too large for one array", a, b);
  export_ctx ctx = {a, b, dim, stored, stored ? taca_dtype_size(sm.dtype) : sizeof(float), NULL, 0};
  ctx.out = malloc((size_t)(b - a) * dim * ctx.esz);
  if (!ctx.out) return cli_fail(CMD, 1, "export: out of memory for %" PRIu64 " x %d", b - a, dim);
  int rc = 0;
  if (store_scan_blocks(v, sm.id, m, export_block, &ctx, &err)) rc = cli_fail(CMD, 1, "%s", err.msg);
  if (!rc && ctx.filled != b - a) {
    for (uint64_t i = a; i < b; i++) {
      const void *p;
      if (store_get_embedding_raw(v, sm.id, m, i, &p, &err)) {
        rc = cli_fail(CMD, 1, "export %" PRIu64 ":%" PRIu64 ": %s (choose --range)", a, b, err.msg);
        break;
      }
    }
    if (!rc) rc = cli_fail(CMD, 1, "export: internal error: %" PRIu64 " rows filled of %" PRIu64, ctx.filled, b - a);
  }
  if (!rc) {
    int64_t shape[2] = {(int64_t)(b - a), dim};
    if (npy_save(out, stored ? sm.dtype : TACA_DT_F32, 2, shape, ctx.out, &err)) rc = cli_fail(CMD, 1, "%s", err.msg);
  }
  if (!rc && rows) rc = export_rows(v, rows, a, b);
  if (!rc)
    printf("exported %" PRIu64 " x %d %s %s embeddings of model '%s' (indices %" PRIu64 "..%" PRIu64 ") to %s%s%s\n",
           b - a, dim, stored ? (sm.dtype == TACA_DT_F16 ? "f16" : "f32") : "f32", mod, model, a, b - 1, out,
           rows ? ", rows to " : "", rows ? rows : "");
  free(ctx.out);
  return rc;
}

/* ---------- search ---------- */

/* Encodes n captions with the text tower at spec (PATH[:ARCH]) into q [n, dim], after checking that
 * PATH holds the checkpoint the store model's embeddings came from (its weights_xxh). */
static int encode_captions(const store_model *sm, const char *spec, char **caps, int n, float *q, int dim) {
  char path[4096], weights[4200], hex[33];
  snprintf(path, sizeof path, "%s", spec);
  const char *arch = NULL;
  struct stat sb;
  char *colon = strrchr(path, ':');
  if (colon && stat(path, &sb) != 0) {  /* PATH:ARCH (a path that exists as written has no ARCH) */
    *colon = '\0';
    arch = colon + 1;
  }
  if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) snprintf(weights, sizeof weights, "%s/model.safetensors", path);
  else snprintf(weights, sizeof weights, "%s", path);
  taca_error err = {{0}};
  if (store_file_checksum(weights, hex, &err)) return cli_fail(CMD, 1, "--text-model: %s", err.msg);
  if (!sm->weights_xxh[0])
    return cli_fail(CMD, 1, "--text-model: model '%s' records no weights hash, so %s cannot be checked against it",
                    sm->name, weights);
  if (strcmp(hex, sm->weights_xxh))
    return cli_fail(CMD, 1, "--text-model: %s is not the checkpoint model '%s' was made with (xxh3 %s, the store "
                    "records %s)", weights, sm->name, hex, sm->weights_xxh);
  nn_backend *be = nn_backend_cpu_create(0);
  clip_tokenizer *tok = be ? clip_tokenizer_load(NULL, &err) : NULL;
  clip_model *m = tok ? clip_model_load(path, arch, be, &err) : NULL;
  /* The captions are encoded in the arithmetic the store's embeddings were computed in. */
  if (m && !strcmp(sm->precision, "bf16") && clip_model_set_precision(m, NN_PRECISION_BF16, &err)) {
    clip_model_free(m);
    m = NULL;
  }
  int rc = 0;
  if (!be) rc = cli_fail(CMD, 1, "out of memory");
  else if (!m) rc = cli_fail(CMD, 1, "--text-model: %s", err.msg);
  else if (!m->cfg.has_text || m->cfg.embed_dim != dim)
    rc = cli_fail(CMD, 1, "--text-model: %s has %s (embed dim %d; the searched set has %d)", path,
                  m->cfg.has_text ? "another embedding width" : "no text tower", m->cfg.embed_dim, dim);
  int ctx = m ? m->cfg.context_len : 0;
  int32_t *tokens = rc ? NULL : malloc((size_t)n * (size_t)ctx * sizeof *tokens);
  if (!rc && !tokens) rc = cli_fail(CMD, 1, "out of memory");
  for (int i = 0; !rc && i < n; i++)
    if (clip_tokenize(tok, caps[i], tokens + (size_t)i * ctx, ctx, &err)) rc = cli_fail(CMD, 1, "caption %d: %s", i, err.msg);
  if (!rc && clip_encode_text(m, tokens, n, q, &err)) rc = cli_fail(CMD, 1, "%s", err.msg);
  free(tokens);
  clip_model_free(m);
  clip_tokenizer_free(tok);
  if (be) nn_backend_destroy(be);
  return rc;
}

typedef struct ann_opts {
  taca_store *st;
  int ann, nprobe, refine;
} ann_opts;

static int search_run(store_view *v, int json, const char *model, const char *mod, const char *vectors,
                      const char *metric, const char *text_model, char **caps, int ncap, int k, const ann_opts *ao);

static int cmd_search(taca_store *st, store_view *v, int json, int argc, char **argv) {
  const char *model = NULL, *mod = NULL, *vectors = NULL, *metric = "ip", *text_model = NULL, *cap_file = NULL;
  int k = 10, ncap = 0, nfile = 0;
  ann_opts ao = {.st = st};
  char **caps = calloc((size_t)argc + 1, sizeof *caps), **file_lines = NULL;
  if (!caps) return cli_fail(CMD, 1, "out of memory");
  static const struct option opts[] = {{"model", required_argument, 0, 'm'},   {"modality", required_argument, 0, 'M'},
                                       {"vectors", required_argument, 0, 'q'}, {"metric", required_argument, 0, 'x'},
                                       {"caption", required_argument, 0, 'c'}, {"captions", required_argument, 0, 'C'},
                                       {"text-model", required_argument, 0, 't'},
                                       {"ann", no_argument, 0, 'a'},           {"nprobe", required_argument, 0, 'P'},
                                       {"k", required_argument, 0, 'k'},       {"help", no_argument, 0, 'h'},
                                       {"refine", required_argument, 0, 'R'},  {0, 0, 0, 0}};
  int c, urc = 0;
  optind = 1;
  opterr = 0;
  while (!urc && (c = getopt_long(argc, argv, "k:", opts, NULL)) != -1) {
    switch (c) {
      case 'm': model = optarg; break;
      case 'M': mod = optarg; break;
      case 'q': vectors = optarg; break;
      case 'x': metric = optarg; break;
      case 'c': caps[ncap++] = optarg; break;
      case 'C': cap_file = optarg; break;
      case 't': text_model = optarg; break;
      case 'a': ao.ann = 1; break;
      case 'P':
        if (cli_parse_positive(CMD, "--nprobe", optarg, &ao.nprobe)) urc = 2;
        break;
      case 'R':
        if (cli_parse_positive(CMD, "--refine", optarg, &ao.refine)) urc = 2;
        break;
      case 'k':
        if (cli_parse_positive(CMD, "-k", optarg, &k)) urc = 2;
        break;
      case 'h': fputs(USAGE, stdout); free(caps); return 0;
      default: urc = cli_fail(CMD, 2, "search: unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
    }
  }
  if (!urc && optind < argc) urc = cli_fail(CMD, 2, "search: unexpected argument '%s'", argv[optind]);
  if (!urc && (ao.nprobe || ao.refine) && !ao.ann) urc = cli_fail(CMD, 2, "search: --nprobe and --refine go with --ann");
  if (!urc && (!model || !mod || (!vectors == !(ncap || cap_file))))
    urc = cli_fail(CMD, 2, "search: --model, --modality and one of --vectors or --caption/--captions are required");
  if (!urc && (ncap || cap_file) && !text_model)
    urc = cli_fail(CMD, 2, "search: captions need --text-model PATH[:ARCH] (the store model's checkpoint), or ask a "
                   "server that has it loaded (taca query --server ADDR search --caption ...)");
  if (!urc && cap_file) {
    taca_error ferr = {{0}};
    nfile = cli_read_lines(cap_file, &file_lines, &ferr);
    if (nfile < 0) urc = cli_fail(CMD, 1, "--captions: %s", ferr.msg);
    for (int i = 0; !urc && i < nfile; i++)
      if (file_lines[i][0]) caps[ncap++] = file_lines[i];
    if (!urc && !ncap) urc = cli_fail(CMD, 1, "--captions %s: no captions in it", cap_file);
    if (!urc) {  /* room for every line */
      char **more = realloc(caps, ((size_t)argc + (size_t)nfile + 1) * sizeof *caps);
      if (!more) urc = cli_fail(CMD, 1, "out of memory");
      else caps = more;
    }
  }
  if (urc) {
    if (file_lines) cli_free_lines(file_lines, nfile);
    free(caps);
    return urc;
  }
  int rc = search_run(v, json, model, mod, vectors, metric, text_model, caps, ncap, k, &ao);
  if (file_lines) cli_free_lines(file_lines, nfile);
  free(caps);
  return rc;
}

static int search_run(store_view *v, int json, const char *model, const char *mod, const char *vectors,
                      const char *metric, const char *text_model, char **caps, int ncap, int k, const ann_opts *ao) {
  store_metric me;
  if (!strcmp(metric, "ip")) me = STORE_METRIC_IP;
  else if (!strcmp(metric, "cosine")) me = STORE_METRIC_COSINE;
  else return cli_fail(CMD, 2, "--metric must be ip or cosine, got '%s'", metric);
  store_modality m = STORE_IMAGE;
  if (parse_modality(mod, &m)) return 2;
  taca_error err = {{0}};
  store_model sm;
  if (store_find_model(v, model, &sm, &err)) return cli_fail(CMD, 1, "%s", err.msg);
  int dim = m == STORE_IMAGE ? sm.image_dim : sm.text_dim;
  if (dim <= 0) return cli_fail(CMD, 1, "model '%s' stores no %s embeddings", model, mod);
  npy_array q = {0};
  if (!vectors) {
    q.data = malloc((size_t)ncap * (size_t)dim * sizeof(float));
    if (!q.data) return cli_fail(CMD, 1, "out of memory");
    q.shape[0] = ncap;
    q.shape[1] = dim;
    if (encode_captions(&sm, text_model, caps, ncap, q.data, dim)) {
      free(q.data);
      return 1;
    }
  } else if (npy_load_f32_matrix(vectors, &q, &err)) {
    return cli_fail(CMD, 1, "%s", err.msg);
  }
  if (q.shape[1] != dim) {
    long long cols = (long long)q.shape[1];
    npy_free(&q);
    return cli_fail(CMD, 1, "%s: vectors have %lld columns, model '%s' %s embeddings have %d", vectors, cols, model,
                    mod, dim);
  }
  int nq = (int)q.shape[0];
  int64_t *idx = malloc((size_t)nq * k * sizeof *idx);
  float *sc = malloc((size_t)nq * k * sizeof *sc);
  int rc = 0;
  if (!idx || !sc) rc = cli_fail(CMD, 1, "out of memory");
  else if (ao->ann) {
    ann_index *ix;
    if (ann_open(ao->st, model, m, &ix, &err)) rc = cli_fail(CMD, 1, "%s", err.msg);
    else if (!ix) rc = cli_fail(CMD, 1, "model '%s' has no %s index: build one with taca index --db %s --model %s", model,
                                mod, store_dir(ao->st), model);
    else if (ann_search(ix, v, q.data, nq, k, me, ao->nprobe, ao->refine, idx, sc, &err)) rc = cli_fail(CMD, 1, "%s", err.msg);
    ann_close(ix);
  } else if (store_search(v, sm.id, m, q.data, nq, k, me, idx, sc, &err)) rc = cli_fail(CMD, 1, "%s", err.msg);
  for (int i = 0; !rc && i < nq; i++) {
    json_t *res = json ? json_array() : NULL;
    if (!json) printf("query %d%s%s%s\n", i, vectors ? "" : " \"", vectors ? "" : caps[i], vectors ? "" : "\"");
    for (int r = 0; r < k && idx[(size_t)i * k + r] >= 0; r++) {
      int64_t ix = idx[(size_t)i * k + r];
      float s = sc[(size_t)i * k + r];
      store_sample smp;
      int got = store_get_sample(v, (uint64_t)ix, &smp, &err), have = got == 0, fc = 0;
      if (got < 0) {
        rc = cli_fail(CMD, 1, "%s", err.msg);
        break;
      }
      const char *cap = NULL;
      size_t cl = 0;
      if (store_get_caption(v, (uint64_t)ix, &cap, &cl, &fc, &err)) {
        rc = cli_fail(CMD, 1, "%s", err.msg);
        break;
      }
      if (json) {
        json_t *o = json_pack("{s:I, s:f, s:s#}", "index", (json_int_t)ix, "score", (double)s, "key",
                              have ? smp.key : "", have ? (int)smp.key_len : 0);
        json_object_set_new(o, "caption", fc ? json_stringn_nocheck(cap, cl) : json_null());
        json_array_append_new(res, o);
      } else {
        printf("  %2d  index %" PRId64 "  score %.6g  key %.*s%s%.*s%s\n", r + 1, ix, (double)s,
               have ? (int)smp.key_len : 1, have ? smp.key : "-", fc ? "  caption \"" : "", fc ? (int)cl : 0,
               fc ? cap : "", fc ? "\"" : "");
      }
    }
    if (rc) {
      json_decref(res);
    } else if (json) {
      json_t *o = json_pack("{s:i, s:o}", "query", i, "results", res);
      if (!vectors) json_object_set_new(o, "caption", json_string(caps[i]));
      print_json(o);
    }
  }
  free(idx);
  free(sc);
  npy_free(&q);
  return rc;
}

int cmd_query(int argc, char **argv) {
  for (int j = 1; j < argc; j++)
    if (!strcmp(argv[j], "--server") || !strncmp(argv[j], "--server=", 9)) return cmd_query_server(argc, argv);
  const char *db = NULL;
  int json = 0, i = 1;
  for (; i < argc && argv[i][0] == '-'; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return fputs(USAGE, stdout), 0;
    if (!strcmp(argv[i], "--json")) json = 1;
    else if (!strcmp(argv[i], "--db") && i + 1 < argc) db = argv[++i];
    else if (!strncmp(argv[i], "--db=", 5)) db = argv[i] + 5;
    else return cli_fail(CMD, 2, "unknown or incomplete option '%s' (see --help)", argv[i]);
  }
  if (i >= argc) return cli_fail(CMD, 2, "missing COMMAND: info, keys, lookup, export or search (see --help)");
  const char *sub = argv[i];
  int sargc = argc - i;
  char **sargv = argv + i;
  for (int j = 1; j < sargc; j++)
    if (!strcmp(sargv[j], "--help") || !strcmp(sargv[j], "-h")) return fputs(USAGE, stdout), 0;
  if (strcmp(sub, "info") && strcmp(sub, "keys") && strcmp(sub, "lookup") && strcmp(sub, "export") &&
      strcmp(sub, "search"))
    return cli_fail(CMD, 2, "unknown command '%s' (info, keys, lookup, export or search)", sub);
  if (!db) return cli_fail(CMD, 2, "--db DIR is required");
  taca_store *s;
  store_view *v;
  int rc = open_view(db, &s, &v);
  if (rc) return rc;
  if (!strcmp(sub, "info")) rc = cmd_info(v, db, json, sargc, sargv);
  else if (!strcmp(sub, "lookup")) rc = cmd_lookup(v, json, sargc, sargv);
  else if (!strcmp(sub, "keys")) rc = cmd_keys(v, json, sargc, sargv);
  else if (!strcmp(sub, "export")) rc = cmd_export(v, sargc, sargv);
  else rc = cmd_search(s, v, json, sargc, sargv);
  store_view_end(v);
  store_close(s);
  fflush(stdout);
  return rc;
}
