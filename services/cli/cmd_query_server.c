/* cmd_query_server.c: `taca query --server ADDR[,ADDR...] info|lookup|search|export`: the same questions
 * as the offline `taca query --db`, asked of running taca-featured servers through taca_client
 * (shards are routed, replicas tried in turn). cmd_query dispatches here when --server is given. */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/npy.h"
#include "base/hostport.h"
#include "services/cli/cli_util.h"
#include "services/cli/commands.h"
#include "client/taca_client.h"

#define CMD "query"

static const char *USAGE_SERVER =
    "usage: taca query --server ADDR[,ADDR...] [--json] [--token TOKEN] [--tls-ca PEM]\n"
    "                  [--tls-name NAME] [--timeout MS] COMMAND [options]\n"
    "  Asks running taca-featured servers (shards and replicas, comma-separated).\n"
    "  The token may also come from TACA_TOKEN.\n"
    "commands:\n"
    "  info                      servers, index ranges, models and their embeddings, pixel format\n"
    "  keys [--from I] [--limit N]  keys with their indices, from index I, N per page (default 100)\n"
    "  lookup KEY...             index, label, caption, metadata, tokens, pixels and embeddings of\n"
    "                            each sample key\n"
    "  export --model NAME --modality image|text --out X.npy [--range A:B] [--dtype f32|stored]\n"
    "                            embeddings of indices A..B-1 (default: the whole data set) as\n"
    "                            [N, dim] .npy; fails naming a missing index\n"
    "  search --model NAME [--modality image|text] (--vectors Q.npy | --caption TEXT... |\n"
    "         --captions FILE | --image FILE...)\n"
    "         [-k K] [--metric ip|cosine] [--ann [--nprobe N] [--refine R]] [--query-model M] [--fallback M]...\n"
    "                            exact top-K (default 10) for each row of Q, each caption or each\n"
    "                            image (the servers encode captions and images with the query\n"
    "                            model's encoder, --query-model, default NAME: it must live in\n"
    "                            NAME's embedding space); --ann through every shard's ANN index\n"
    "                            (taca index), rescored exactly; --fallback: a mixed gallery, each\n"
    "                            sample scored by NAME's vector, else the first fallback's, ...\n"
    "  embed --model NAME (--images FILE... | --text FILE) --out Y.npy [--normalize]\n"
    "                            features of new images (JPEG/PNG/WebP) or captions (one per line)\n"
    "                            through the server's encoder of NAME (an alias resolves there), in\n"
    "                            the space of NAME's stored vectors, as F32 [N, dim]; fails naming\n"
    "                            any item the server could not embed\n"
    "  --json prints JSON (one object for info, one line per key or query otherwise).\n";

static void print_json(json_t *j) {
  char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
  if (s) puts(s);
  free(s);
  json_decref(j);
}

static const char *dtype_str(taca_dtype d) { return d == TACA_DT_F16 ? "f16" : "f32"; }

/* ---------- info ---------- */

static int q_info(taca_client *c, int json, int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help")) return fputs(USAGE_SERVER, stdout), 0;
    return cli_fail(CMD, 2, "info: unexpected argument '%s'", argv[i]);
  }
  const taca_dataset_info *in = taca_client_info(c);
  if (json) {
    json_t *o = json_pack("{s:I, s:I, s:I, s:i, s:i, s:i, s:i}", "samples", (json_int_t)in->samples, "begin",
                          (json_int_t)in->begin, "end", (json_int_t)in->end, "shards", in->n_shards, "context_length",
                          in->context_length, "max_batch", in->max_batch, "max_k", in->max_k);
    json_t *sv = json_array();
    for (int i = 0; i < in->n_servers; i++) {
      const taca_server_desc *s = &in->servers[i];
      json_array_append_new(sv, json_pack("{s:s, s:I, s:I, s:I, s:i, s:i, s:s}", "address", s->address, "begin",
                                          (json_int_t)s->begin, "end", (json_int_t)s->end, "samples",
                                          (json_int_t)s->samples, "shard", s->shard, "shard_count", s->shard_count,
                                          "version", s->version));
    }
    json_object_set_new(o, "servers", sv);
    json_object_set_new(o, "pixel", in->has_pixels ? json_pack("{s:i, s:i, s:s, s:i}", "size", in->pixel_size,
                                                               "channels", in->pixel_channels, "codec",
                                                               in->pixel_codec, "quality", in->pixel_quality)
                                                   : json_null());
    json_t *ms = json_array();
    for (int i = 0; i < in->n_models; i++) {
      const taca_model_desc *m = &in->models[i];
      json_array_append_new(ms, json_pack("{s:s, s:s, s:s, s:i, s:i, s:f, s:i, s:I, s:I, s:b}", "name", m->name, "arch",
                                          m->arch, "dtype", dtype_str(m->dtype), "image_dim", m->image_dim, "text_dim",
                                          m->text_dim, "logit_scale", (double)m->logit_scale, "image_size",
                                          m->image_size, "image_count", (json_int_t)m->image_count, "text_count",
                                          (json_int_t)m->text_count, "caption_search", m->caption_search));
      json_t *last = json_array_get(ms, json_array_size(ms) - 1);
      json_object_set_new(last, "kind", json_string(m->kind));
      json_object_set_new(last, "space", json_string(m->space));
      json_object_set_new(last, "embed_images", json_boolean(m->embed_images));
    }
    json_object_set_new(o, "models", ms);
    json_t *as = json_object();
    for (int i = 0; i < in->n_aliases; i++)
      json_object_set_new(as, in->aliases[i].name, json_pack("{s:s, s:I}", "target", in->aliases[i].target, "version",
                                                            (json_int_t)in->aliases[i].version));
    json_object_set_new(o, "aliases", as);
    print_json(o);
    return 0;
  }
  printf("data set     %" PRIu64 " samples in [%" PRIu64 ", %" PRIu64 "), %d shard(s), %d server(s)\n", in->samples,
         in->begin, in->end, in->n_shards, in->n_servers);
  for (int i = 0; i < in->n_servers; i++) {
    const taca_server_desc *s = &in->servers[i];
    printf("  %s  [%" PRIu64 ", %" PRIu64 ") shard %d/%d  %" PRIu64 " samples  %s\n", s->address, s->begin, s->end,
           s->shard, s->shard_count, s->samples, s->version);
  }
  if (in->has_pixels) {
    printf("pixels       %dx%dx%d %s", in->pixel_channels, in->pixel_size, in->pixel_size, in->pixel_codec);
    if (in->pixel_quality) printf(" quality %d", in->pixel_quality);
    printf("\n");
  } else {
    printf("pixels       none\n");
  }
  printf("limits       max batch %d, max k %d, context %d\n", in->max_batch, in->max_k, in->context_length);
  printf("models       %d\n", in->n_models);
  for (int i = 0; i < in->n_models; i++) {
    const taca_model_desc *m = &in->models[i];
    printf("  %s  arch %s  %s  logit_scale %g  image_size %d%s\n", m->name, m->arch[0] ? m->arch : "-",
           dtype_str(m->dtype), (double)m->logit_scale, m->image_size, m->caption_search ? "  caption search" : "");
    printf("      image dim %d: %" PRIu64 " stored; text dim %d: %" PRIu64 " stored\n", m->image_dim, m->image_count,
           m->text_dim, m->text_count);
    printf("      kind %s  space %s%s\n", m->kind[0] ? m->kind : "-", m->space[0] ? m->space : "-",
           m->embed_images ? "  embeds images" : "");
  }
  printf("aliases      %d\n", in->n_aliases);
  for (int i = 0; i < in->n_aliases; i++)
    printf("  %s -> %s  (version %" PRIu64 ")\n", in->aliases[i].name, in->aliases[i].target, in->aliases[i].version);
  return 0;
}

/* ---------- lookup ---------- */

static int q_lookup(taca_client *c, int json, int argc, char **argv) {
  if (argc < 2) return cli_fail(CMD, 2, "lookup needs at least one KEY");
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--help")) return fputs(USAGE_SERVER, stdout), 0;
  const taca_dataset_info *in = taca_client_info(c);
  taca_fields f = {.tokens = 1, .labels = 1, .pixels = in->has_pixels, .captions = 1, .metadata = 1};
  for (int i = 0; i < in->n_models; i++)
    for (int m = 0; m < 2; m++) {
      int dim = m ? in->models[i].text_dim : in->models[i].image_dim;
      if (dim <= 0 || f.n_embeddings == TACA_CLIENT_MAX_EMB) continue;
      f.embeddings[f.n_embeddings].model = in->models[i].name;
      f.embeddings[f.n_embeddings++].modality = m ? TACA_TEXT : TACA_IMAGE;
    }
  int nk = argc - 1, status = 0;
  taca_error err = {{0}};
  taca_batch b;
  if (taca_client_lookup(c, (const char *const *)(argv + 1), (size_t)nk, &f, 1, &b, &err))
    return cli_fail(CMD, 1, "%s", err.msg);
  size_t row = 0;
  for (int a = 0; a < nk; a++) {
    const char *key = argv[1 + a];
    if (row >= b.n || strcmp(b.keys[row], key)) {
      status = cli_fail(CMD, 1, "key '%s' not found", key);
      continue;
    }
    int ntok = 0;
    while (ntok < TACA_CLIENT_CONTEXT_LEN && b.tokens[row * TACA_CLIENT_CONTEXT_LEN + ntok]) ntok++;
    size_t px = b.pixel_sizes ? b.pixel_sizes[row] : 0;
    json_t *embs = json ? json_object() : NULL;
    char line[1024] = "";
    for (int e = 0; e < b.n_embeddings; e++) {
      if (!b.embeddings[e].present[row]) continue;
      const char *mod = b.embeddings[e].modality == TACA_TEXT ? "text" : "image";
      if (json) {
        json_t *arr = json_object_get(embs, b.embeddings[e].model);
        if (!arr) json_object_set_new(embs, b.embeddings[e].model, arr = json_array());
        json_array_append_new(arr, json_string(mod));
      } else {
        size_t l = strlen(line);
        snprintf(line + l, sizeof line - l, " %s:%s", b.embeddings[e].model, mod);
      }
    }
    if (json) {
      json_t *o = json_pack("{s:s, s:I, s:i, s:i, s:I, s:o}", "key", key, "index", (json_int_t)b.indices[row], "label",
                            b.labels[row], "n_tokens", ntok, "pixel_bytes", (json_int_t)px, "embeddings", embs);
      json_t *t = json_array();
      for (int i = 0; i < TACA_CLIENT_CONTEXT_LEN; i++)
        json_array_append_new(t, json_integer(b.tokens[row * TACA_CLIENT_CONTEXT_LEN + i]));
      json_object_set_new(o, "tokens", t);
      const char *cap = b.captions[row], *meta = b.metadata[row];
      json_object_set_new(o, "caption", cap[0] ? json_string(cap) : json_null());
      json_t *mj = meta[0] ? json_loads(meta, 0, NULL) : NULL;
      json_object_set_new(o, "metadata", mj ? mj : json_null());
      print_json(o);
    } else {
      printf("%s\tindex %" PRIu64 "\tlabel %d\ttokens %d\tpixels %zu B\tembeddings%s\n", key, b.indices[row],
             b.labels[row], ntok, px, line[0] ? line : " none");
      printf("  caption   %s%s%s\n  metadata  %s\n", b.captions[row][0] ? "\"" : "-", b.captions[row],
             b.captions[row][0] ? "\"" : "", b.metadata[row][0] ? b.metadata[row] : "-");
    }
    row++;
  }
  taca_batch_free(&b);
  return status;
}

/* ---------- keys ---------- */

static int q_keys(taca_client *c, int json, int argc, char **argv) {
  uint64_t from = 0, limit = 100;
  for (int i = 1; i < argc; i++) {
    char *end;
    uint64_t *dst = !strcmp(argv[i], "--from") ? &from : !strcmp(argv[i], "--limit") ? &limit : NULL;
    if (!dst || i + 1 >= argc) return cli_fail(CMD, 2, "keys: unexpected or incomplete argument '%s' (--from I, --limit N)", argv[i]);
    *dst = strtoull(argv[++i], &end, 10);
    if (*end || !argv[i][0] || argv[i][0] == '-') return cli_fail(CMD, 2, "keys: '%s' is not a count", argv[i]);
  }
  const taca_dataset_info *in = taca_client_info(c);
  if (from < in->begin) from = in->begin;
  uint64_t to = limit && in->end - from > limit ? from + limit : in->end;
  if (from >= in->end) {
    fprintf(stderr, "taca query: no keys at index %" PRIu64 " or later\n", from);
    return 0;
  }
  size_t n = (size_t)(to - from);
  uint64_t *idx = malloc(n * sizeof *idx);
  if (!idx) return cli_fail(CMD, 1, "out of memory");
  for (size_t i = 0; i < n; i++) idx[i] = from + i;
  taca_fields f = {.keys = 1};
  taca_batch b;
  taca_error err = {{0}};
  int rc = taca_client_get_batch(c, idx, n, &f, &b, &err);
  free(idx);
  if (rc) return cli_fail(CMD, 1, "%s", err.msg);
  for (size_t i = 0; i < b.n; i++) {
    if (json) print_json(json_pack("{s:I, s:s}", "index", (json_int_t)b.indices[i], "key", b.keys[i]));
    else printf("%" PRIu64 "\t%s\n", b.indices[i], b.keys[i]);
  }
  fprintf(stderr, "taca query: %zu keys, indices %" PRIu64 "..%" PRIu64 "%s%" PRIu64 "\n", b.n, from, to - 1,
          to < in->end ? "; next page: --from " : "", to);
  taca_batch_free(&b);
  return 0;
}

/* ---------- export ---------- */

static int parse_modality(const char *s, taca_modality *m) {
  if (!strcmp(s, "image")) *m = TACA_IMAGE;
  else if (!strcmp(s, "text")) *m = TACA_TEXT;
  else return cli_fail(CMD, 2, "--modality must be image or text, got '%s'", s);
  return 0;
}

static int parse_range(const char *s, uint64_t *a, uint64_t *b) {
  const char *colon = strchr(s, ':');
  if (!colon) return cli_fail(CMD, 2, "--range expects A:B (indices A..B-1), got '%s'", s);
  char *end;
  if (colon != s) {
    *a = strtoull(s, &end, 10);
    if (end != colon || *s == '-') return cli_fail(CMD, 2, "--range: bad start in '%s'", s);
  }
  if (colon[1]) {
    *b = strtoull(colon + 1, &end, 10);
    if (*end || colon[1] == '-') return cli_fail(CMD, 2, "--range: bad end in '%s'", s);
  }
  return 0;
}

static int q_export(taca_client *c, int argc, char **argv) {
  const char *model = NULL, *mod = NULL, *out = NULL, *range = NULL, *dtype = "f32";
  static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"modality", required_argument, 0, 'M'},
                                       {"out", required_argument, 0, 'o'},   {"range", required_argument, 0, 'r'},
                                       {"dtype", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int ch;
  optind = 1;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
      case 'm': model = optarg; break;
      case 'M': mod = optarg; break;
      case 'o': out = optarg; break;
      case 'r': range = optarg; break;
      case 'd': dtype = optarg; break;
      case 'h': fputs(USAGE_SERVER, stdout); return 0;
      default: return cli_fail(CMD, 2, "export: unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
    }
  }
  if (optind < argc) return cli_fail(CMD, 2, "export: unexpected argument '%s'", argv[optind]);
  if (!model || !mod || !out) return cli_fail(CMD, 2, "export: --model, --modality and --out are required");
  int stored = !strcmp(dtype, "stored");
  if (!stored && strcmp(dtype, "f32")) return cli_fail(CMD, 2, "--dtype must be f32 or stored, got '%s'", dtype);
  taca_modality m = TACA_IMAGE;
  if (parse_modality(mod, &m)) return 2;
  const taca_dataset_info *in = taca_client_info(c);
  uint64_t a = in->begin, b = in->end;
  if (range && parse_range(range, &a, &b)) return 2;
  if (b <= a) return cli_fail(CMD, 1, "export: range %" PRIu64 ":%" PRIu64 " is empty", a, b);
  taca_fields f = {.n_embeddings = 1, .embeddings_as_f32 = !stored};
  f.embeddings[0].model = model;
  f.embeddings[0].modality = m;
  int mi = taca_client_find_model(c, model);
  taca_error err = {{0}};
  if (mi < 0) {
    taca_batch probe;
    taca_client_get_batch(c, NULL, 0, &f, &probe, &err); /* for the error naming the known models */
    return cli_fail(CMD, 1, "%s", err.msg);
  }
  const taca_model_desc *md = &in->models[mi];
  int dim = m == TACA_TEXT ? md->text_dim : md->image_dim;
  if (dim <= 0) return cli_fail(CMD, 1, "model '%s' stores no %s embeddings", model, mod);
  if (b - a > ((uint64_t)1 << 40) / (uint64_t)dim)
    return cli_fail(CMD, 1, "export: range %" PRIu64 ":%" PRIu64 " is too large for one array", a, b);
  taca_dtype dt = stored ? md->dtype : TACA_DT_F32;
  size_t row = (size_t)dim * taca_dtype_size(dt), n = (size_t)(b - a);
  uint8_t *data = malloc(n * row);
  size_t step = (size_t)in->max_batch;
  uint64_t *idx = malloc(step * sizeof *idx);
  int rc = 0;
  if (!data || !idx) rc = cli_fail(CMD, 1, "export: out of memory for %zu x %d", n, dim);
  for (size_t s = 0; !rc && s < n; s += step) {
    size_t cnt = n - s < step ? n - s : step;
    for (size_t i = 0; i < cnt; i++) idx[i] = a + s + i;
    taca_batch bt;
    if (taca_client_get_batch(c, idx, cnt, &f, &bt, &err)) {
      rc = cli_fail(CMD, 1, "%s", err.msg);
      break;
    }
    for (size_t i = 0; i < cnt && !rc; i++)
      if (!bt.embeddings[0].present[i])
        rc = cli_fail(CMD, 1, "export %" PRIu64 ":%" PRIu64 ": model '%s' %s embedding for sample %" PRIu64
                      " not stored (choose --range)", a, b, model, mod, idx[i]);
    if (!rc) memcpy(data + s * row, bt.embeddings[0].data, cnt * row);
    taca_batch_free(&bt);
  }
  if (!rc) {
    int64_t shape[2] = {(int64_t)n, dim};
    if (npy_save(out, dt, 2, shape, data, &err)) rc = cli_fail(CMD, 1, "%s", err.msg);
  }
  free(data);
  free(idx);
  return rc;
}

/* ---------- search ---------- */

/* The n image files as bytes (search --image, embed --images): 0, or the exit status after a
 * one-line error naming the flag and file. Free with free_images. */
static int read_images(const char *flag, const char *const *files, int n, unsigned char ***img, size_t **len) {
  *img = calloc((size_t)n, sizeof **img);
  *len = calloc((size_t)n, sizeof **len);
  if (!*img || !*len) return cli_fail(CMD, 1, "out of memory");
  for (int j = 0; j < n; j++) {
    taca_error err = {{0}};
    if (taca_read_file(files[j], 64u << 20, &(*img)[j], &(*len)[j], &err)) return cli_fail(CMD, 1, "%s: %s", flag, err.msg);
  }
  return 0;
}

static void free_images(unsigned char **img, size_t *len, int n) {
  for (int j = 0; img && j < n; j++) free(img[j]);
  free(img);
  free(len);
}

static int q_search(taca_client *c, int json, int argc, char **argv) {
  const char *model = NULL, *mod = "image", *vectors = NULL, *metric = "ip", *cap_file = NULL;
  const char **captions = calloc((size_t)argc + 1, sizeof *captions);
  char **file_lines = NULL;
  int ncap = 0, k = 10, nfile = 0;
  taca_search_opts so = {0};
  const char **img_files = calloc((size_t)argc + 1, sizeof *img_files), **fallback = calloc((size_t)argc + 1, sizeof *fallback);
  int nimg = 0;
  if (!captions || !img_files || !fallback) return cli_fail(CMD, 1, "out of memory");
  static const struct option opts[] = {{"model", required_argument, 0, 'm'},   {"modality", required_argument, 0, 'M'},
                                       {"vectors", required_argument, 0, 'q'}, {"caption", required_argument, 0, 'c'},
                                       {"captions", required_argument, 0, 'C'},
                                       {"metric", required_argument, 0, 'x'},  {"k", required_argument, 0, 'k'},
                                       {"ann", no_argument, 0, 'a'},           {"nprobe", required_argument, 0, 'P'},
                                       {"image", required_argument, 0, 'I'},   {"query-model", required_argument, 0, 'Q'},
                                       {"fallback", required_argument, 0, 'F'}, {"refine", required_argument, 0, 'R'},
                                       {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
  int ch, rc = 0;
  optind = 1;
  opterr = 0;
  while (!rc && (ch = getopt_long(argc, argv, "k:", opts, NULL)) != -1) {
    switch (ch) {
      case 'm': model = optarg; break;
      case 'M': mod = optarg; break;
      case 'q': vectors = optarg; break;
      case 'c': captions[ncap++] = optarg; break;
      case 'C': cap_file = optarg; break;
      case 'x': metric = optarg; break;
      case 'k':
        if (cli_parse_positive(CMD, "-k", optarg, &k)) rc = 2;
        break;
      case 'a': so.ann = 1; break;
      case 'I': img_files[nimg++] = optarg; break;
      case 'Q': so.query_model = optarg; break;
      case 'F': fallback[so.n_fallback++] = optarg; break;
      case 'P':
        if (cli_parse_positive(CMD, "--nprobe", optarg, &so.nprobe)) rc = 2;
        break;
      case 'R':
        if (cli_parse_positive(CMD, "--refine", optarg, &so.refine)) rc = 2;
        break;
      case 'h': fputs(USAGE_SERVER, stdout); free(captions); return 0;
      default: rc = cli_fail(CMD, 2, "search: unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
    }
  }
  if (!rc && optind < argc) rc = cli_fail(CMD, 2, "search: unexpected argument '%s'", argv[optind]);
  if (!rc && (so.nprobe || so.refine) && !so.ann) rc = cli_fail(CMD, 2, "search: --nprobe and --refine go with --ann");
  if (!rc && cap_file) { /* --caption texts first, then the file's lines */
    taca_error ferr = {{0}};
    nfile = cli_read_lines(cap_file, &file_lines, &ferr);
    const char **more = nfile < 0 ? NULL : realloc(captions, ((size_t)argc + (size_t)nfile + 1) * sizeof *captions);
    if (nfile < 0) rc = cli_fail(CMD, 1, "--captions: %s", ferr.msg);
    else if (!more) rc = cli_fail(CMD, 1, "out of memory");
    else captions = more;
    for (int i = 0; !rc && i < nfile; i++)
      if (file_lines[i][0]) captions[ncap++] = file_lines[i];
    if (!rc && !ncap) rc = cli_fail(CMD, 1, "--captions %s: no captions in it", cap_file);
  }
  if (!rc && (!model || (vectors != NULL) + (ncap > 0) + (nimg > 0) != 1))
    rc = cli_fail(CMD, 2, "search: --model and one of --vectors, --caption(s) or --image are required");
  so.fallback = fallback;
  unsigned char **img = NULL;
  size_t *img_len = NULL;
  if (!rc && nimg) {
    rc = read_images("--image", img_files, nimg, &img, &img_len);
    so.images = (const uint8_t *const *)img;
    so.image_sizes = img_len;
  }
  taca_metric me = TACA_METRIC_IP;
  if (!rc && !strcmp(metric, "cosine")) me = TACA_METRIC_COSINE;
  else if (!rc && strcmp(metric, "ip")) rc = cli_fail(CMD, 2, "--metric must be ip or cosine, got '%s'", metric);
  taca_modality m = TACA_IMAGE;
  if (!rc && parse_modality(mod, &m)) rc = 2;
  if (rc) {
    if (file_lines) cli_free_lines(file_lines, nfile);
    free(captions);
    free_images(img, img_len, nimg);
    free(img_files);
    free(fallback);
    return rc;
  }
  taca_error err = {{0}};
  npy_array q = {0};
  int nq = nimg ? nimg : ncap;
  if (vectors) {
    if (npy_load_f32_matrix(vectors, &q, &err)) {
      free(captions);
      return cli_fail(CMD, 1, "%s", err.msg);
    }
    nq = (int)q.shape[0];
  }
  taca_search_result r;
  taca_batch hitb = {0};
  if (taca_client_search_opts(c, model, m, vectors ? q.data : NULL, vectors || nimg ? NULL : captions, nq, k, me, 1,
                              &so, &r, &err))
    rc = cli_fail(CMD, 1, "%s", err.msg);
  /* the hits' captions: one GetBatch over every hit, rows in hit order */
  size_t nhit = 0;
  uint64_t *hidx = rc ? NULL : malloc(((size_t)nq * (size_t)k + 1) * sizeof *hidx);
  for (int i = 0; !rc && hidx && i < nq; i++)
    for (int j = 0; j < r.count[i]; j++) hidx[nhit++] = r.indices[(size_t)i * (size_t)k + (size_t)j];
  taca_fields capf = {.captions = 1};
  int have_caps = hidx && nhit <= (size_t)taca_client_info(c)->max_batch * 64 &&
                  taca_client_get_batch(c, hidx, nhit, &capf, &hitb, &err) == 0;
  free(hidx);
  size_t hit = 0;
  for (int i = 0; !rc && i < nq; i++) {
    json_t *res = json ? json_array() : NULL;
    if (!json) printf("query %d%s%s%s\n", i, ncap ? " \"" : "", ncap ? captions[i] : "", ncap ? "\"" : "");
    for (int j = 0; j < r.count[i]; j++, hit++) {
      size_t at = (size_t)i * (size_t)k + (size_t)j;
      const char *cap = have_caps ? hitb.captions[hit] : "";
      if (json) {
        json_t *o = json_pack("{s:I, s:f, s:s}", "index", (json_int_t)r.indices[at], "score", (double)r.scores[at],
                              "key", r.keys[at]);
        json_object_set_new(o, "caption", cap[0] ? json_string(cap) : json_null());
        json_array_append_new(res, o);
      } else {
        printf("  %2d  index %" PRIu64 "  score %.6g  key %s%s%s%s\n", j + 1, r.indices[at], (double)r.scores[at],
               r.keys[at][0] ? r.keys[at] : "-", cap[0] ? "  caption \"" : "", cap, cap[0] ? "\"" : "");
      }
    }
    if (json) {
      json_t *o = json_pack("{s:i, s:o}", "query", i, "results", res);
      if (ncap) json_object_set_new(o, "caption", json_string(captions[i]));
      print_json(o);
    }
  }
  if (!rc) taca_search_result_free(&r);
  if (have_caps) taca_batch_free(&hitb);
  npy_free(&q);
  if (file_lines) cli_free_lines(file_lines, nfile);
  free(captions);
  free_images(img, img_len, nimg);
  free(img_files);
  free(fallback);
  return rc;
}

/* ---------- embed ---------- */

static int q_embed(taca_client *c, int argc, char **argv) {
  const char *model = NULL, *text = NULL, *out = NULL;
  int normalize = 0, rc = 0;
  const char **files = calloc((size_t)argc + 1, sizeof *files);
  int nfiles = 0;
  if (!files) return cli_fail(CMD, 1, "out of memory");
  for (int i = 1; !rc && i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--normalize")) normalize = 1;
    else if (!strcmp(a, "--images")) {
      while (i + 1 < argc && argv[i + 1][0] != '-') files[nfiles++] = argv[++i];
      if (!nfiles) rc = cli_fail(CMD, 2, "embed: --images needs one or more files");
    } else if (!v) rc = cli_fail(CMD, 2, "embed: option '%s' needs a value (see --help)", a);
    else if (!strcmp(a, "--model")) model = v, i++;
    else if (!strcmp(a, "--text")) text = v, i++;
    else if (!strcmp(a, "--out")) out = v, i++;
    else rc = cli_fail(CMD, 2, "embed: unknown option or argument '%s' (see --help)", a);
  }
  if (!rc && (!model || !out || (nfiles > 0) == (text != NULL)))
    rc = cli_fail(CMD, 2, "embed: --model, --out and one of --images or --text are required");
  char **lines = NULL;
  int n = nfiles;
  unsigned char **img = NULL;
  size_t *len = NULL;
  taca_error err = {{0}};
  if (!rc && text) {
    n = cli_read_lines(text, &lines, &err);
    if (n < 0) rc = cli_fail(CMD, 1, "--text: %s", err.msg);
    else if (n == 0) rc = cli_fail(CMD, 1, "--text %s: no captions in it", text);
  }
  if (!rc && nfiles) rc = read_images("--images", files, n, &img, &len);
  float *all = NULL;
  int dim = 0;
  int chunk = taca_client_info(c)->max_batch > 0 ? taca_client_info(c)->max_batch : 1;
  if (chunk > 256) chunk = 256;
  char used[TACA_CLIENT_NAME_MAX] = "";
  for (int start = 0; !rc && start < n; start += chunk) {
    int b = n - start < chunk ? n - start : chunk;
    taca_embed_result r;
    if (taca_client_embed(c, model, img ? (const uint8_t *const *)img + start : NULL, len ? len + start : NULL,
                          lines ? (const char *const *)lines + start : NULL, b, normalize, &r, &err)) {
      rc = cli_fail(CMD, 1, "%s", err.msg);
      break;
    }
    if (!all) {
      dim = r.dim;
      all = malloc((size_t)n * (size_t)dim * sizeof *all);
      if (!all) rc = cli_fail(CMD, 1, "out of memory");
    } else if (r.dim != dim) {
      rc = cli_fail(CMD, 1, "embed: the server changed width mid-way (%d, then %d)", dim, r.dim);
    }
    for (int j = 0; !rc && j < b; j++)
      if (!r.ok[j])
        rc = cli_fail(CMD, 1, "embed: %s: %s", nfiles ? files[start + j] : "caption", r.errors[j]);
    if (!rc) memcpy(all + (size_t)start * dim, r.data, (size_t)b * (size_t)dim * sizeof *all);
    snprintf(used, sizeof used, "%s", r.model);
    taca_embed_result_free(&r);
  }
  if (!rc) {
    int64_t shape[2] = {n, dim};
    if (npy_save(out, TACA_DT_F32, 2, shape, all, &err)) rc = cli_fail(CMD, 1, "%s", err.msg);
    else fprintf(stderr, "embed: %d %s through '%s'%s%s%s -> %s [%d, %d]\n", n, nfiles ? "images" : "captions", model,
                 strcmp(used, model) ? " (alias of '" : "", strcmp(used, model) ? used : "",
                 strcmp(used, model) ? "')" : "", out, n, dim);
  }
  free(all);
  free_images(img, len, n);
  if (lines) cli_free_lines(lines, n);
  free(files);
  return rc;
}

int cmd_query_server(int argc, char **argv) {
  const char *server = NULL;
  int json = 0;
  taca_client_options o = {0};
  o.token = getenv("TACA_TOKEN");
  int i = 1;
  for (; i < argc && argv[i][0] == '-'; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) return fputs(USAGE_SERVER, stdout), 0;
    if (!strcmp(a, "--json")) json = 1;
    else if (!strncmp(a, "--server=", 9)) server = a + 9;
    else if (!v) return cli_fail(CMD, 2, "option '%s' needs a value (see --help)", a);
    else if (!strcmp(a, "--server")) server = v, i++;
    else if (!strcmp(a, "--token")) o.token = v, i++;
    else if (!strcmp(a, "--tls-ca")) o.tls_ca = v, i++;
    else if (!strcmp(a, "--tls-name")) o.tls_server_name = v, i++;
    else if (!strcmp(a, "--timeout")) {
      if (cli_parse_positive(CMD, "--timeout", v, &o.timeout_ms)) return 2;
      i++;
    } else return cli_fail(CMD, 2, "unknown option '%s' (see --help)", a);
  }
  if (!server) return cli_fail(CMD, 2, "--server ADDR is required (see --help)");
  {
    taca_error aerr;
    if (taca_hostport_check_list("--server", server, &aerr)) return cli_fail(CMD, 2, "%s", aerr.msg);
  }
  if (i >= argc) return cli_fail(CMD, 2, "missing COMMAND: info, keys, lookup, export, search or embed (see --help)");
  const char *sub = argv[i];
  int sargc = argc - i;
  char **sargv = argv + i;
  for (int j = 1; j < sargc; j++)
    if (!strcmp(sargv[j], "--help") || !strcmp(sargv[j], "-h")) return fputs(USAGE_SERVER, stdout), 0;
  if (strcmp(sub, "info") && strcmp(sub, "keys") && strcmp(sub, "lookup") && strcmp(sub, "export") &&
      strcmp(sub, "search") && strcmp(sub, "embed"))
    return cli_fail(CMD, 2, "unknown command '%s' (info, keys, lookup, export, search, embed)", sub);
  o.retry_budget_ms = 5000;
  taca_client *c;
  taca_error err = {{0}};
  if (taca_client_connect(&c, server, &o, &err)) return cli_fail(CMD, 1, "%s", err.msg);
  int rc;
  if (!strcmp(sub, "info")) rc = q_info(c, json, sargc, sargv);
  else if (!strcmp(sub, "lookup")) rc = q_lookup(c, json, sargc, sargv);
  else if (!strcmp(sub, "keys")) rc = q_keys(c, json, sargc, sargv);
  else if (!strcmp(sub, "export")) rc = q_export(c, sargc, sargv);
  else if (!strcmp(sub, "embed")) rc = q_embed(c, sargc, sargv);
  else rc = q_search(c, json, sargc, sargv);
  taca_client_close(c);
  return rc;
}
