/* data_source.c: enumerating and reading precompute inputs (WebDataset tars via libarchive, folders
 * with captions.tsv), with shard assignment, entry counting and seeking for resume. */
#include "base/file.h"
#include "services/precompute/data_source.h"

#include <archive.h>
#include <archive_entry.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#define DS_MAX_MEMBER (64u << 20) /* larger members are rejected, not read */

struct data_source {
  ds_input *all;
  int n_all;
  int *mine;   /* indices into all[] of this shard's inputs */
  int n_mine;
  uint64_t before, total;
  /* reader state */
  int cur;             /* position in mine[], or n_mine when exhausted */
  uint64_t cur_entry;  /* next entry number within the current input */
  struct archive *ar;
  int pending;         /* a tar header has been read whose member is not consumed yet */
  int eof;             /* the tar's end has been reached */
  uint64_t tar_size;   /* the open tar's length, when it is not compressed (else 0) */
  char *pending_path;
  FILE *tsv;
  char *line;
  size_t line_cap;
};

/* ---------- brace expansion ---------- */

static int push(char ***v, int *n, int *cap, char *s) {
  if (!s) return -1;
  if (*n == *cap) {
    int nc = *cap ? *cap * 2 : 8;
    char **nv = realloc(*v, sizeof *nv * nc);
    if (!nv) {
      free(s);
      return -1;
    }
    *v = nv, *cap = nc;
  }
  (*v)[(*n)++] = s;
  return 0;
}

static char *concat3(const char *a, size_t la, const char *b, size_t lb, const char *c) {
  size_t lc = strlen(c);
  char *s = malloc(la + lb + lc + 1);
  if (!s) return NULL;
  memcpy(s, a, la);
  memcpy(s + la, b, lb);
  memcpy(s + la + lb, c, lc + 1);
  return s;
}

static int parse_range(const char *s, size_t len, long *lo, long *hi, int *width) {
  char buf[64];
  if (len >= sizeof buf) return 0;
  memcpy(buf, s, len);
  buf[len] = 0;
  char *dots = strstr(buf, "..");
  if (!dots) return 0;
  *dots = 0;
  char *a = buf, *b = dots + 2, *end;
  if (!*a || !*b) return 0;
  for (char *p = a; *p; p++)
    if (!isdigit((unsigned char)*p)) return 0;
  for (char *p = b; *p; p++)
    if (!isdigit((unsigned char)*p)) return 0;
  errno = 0;
  *lo = strtol(a, &end, 10);
  *hi = strtol(b, &end, 10);
  if (errno) return 0;
  *width = (a[0] == '0' && strlen(a) > 1) ? (int)strlen(a) : 0;
  return 1;
}

static int expand_into(const char *spec, char ***v, int *n, int *cap, taca_error *err) {
  const char *open = strchr(spec, '{');
  if (!open) return push(v, n, cap, strdup(spec)) ? taca_fail(err, "out of memory") : 0;
  int depth = 0;
  const char *close = NULL;
  for (const char *p = open; *p; p++) {
    if (*p == '{') depth++;
    else if (*p == '}' && --depth == 0) {
      close = p;
      break;
    }
  }
  if (!close) return taca_fail(err, "data spec '%s': unbalanced '{'", spec);
  const char *body = open + 1, *rest = close + 1;
  size_t blen = (size_t)(close - body), plen = (size_t)(open - spec);
  long lo, hi;
  int width;
  if (parse_range(body, blen, &lo, &hi, &width)) {
    if (hi < lo) return taca_fail(err, "data spec '%s': range end below its start", spec);
    if (hi - lo > 10000000) return taca_fail(err, "data spec '%s': range too large", spec);
    for (long i = lo; i <= hi; i++) {
      char num[32];
      int k = snprintf(num, sizeof num, "%0*ld", width, i);
      char *s = concat3(spec, plen, num, (size_t)k, rest);
      if (!s) return taca_fail(err, "out of memory");
      int rc = expand_into(s, v, n, cap, err);
      free(s);
      if (rc) return -1;
    }
    return 0;
  }
  /* Comma list at depth 0 inside the braces. */
  const char *start = body;
  int d = 0, any_comma = 0;
  for (const char *p = body; p <= close; p++) {
    if (p < close && *p == '{') d++;
    else if (p < close && *p == '}') d--;
    if (p == close || (*p == ',' && d == 0)) {
      if (p != close) any_comma = 1;
      if (p == close && !any_comma) break;
      char *s = concat3(spec, plen, start, (size_t)(p - start), rest);
      if (!s) return taca_fail(err, "out of memory");
      int rc = expand_into(s, v, n, cap, err);
      free(s);
      if (rc) return -1;
      start = p + 1;
    }
  }
  if (!any_comma) return taca_fail(err, "data spec '%s': braces need a range {A..B} or a list {a,b}", spec);
  return 0;
}

int ds_expand_braces(const char *spec, char ***out, taca_error *err) {
  char **v = NULL;
  int n = 0, cap = 0;
  if (expand_into(spec, &v, &n, &cap, err)) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
    return -1;
  }
  *out = v;
  return n;
}

/* ---------- tar members ---------- */

/* Splits a member path into key (dirname + basename up to its first '.') and final extension. */
static void split_member(const char *path, char *key, size_t keycap, const char **ext) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  const char *dot = strchr(base, '.');
  size_t klen = dot ? (size_t)(dot - path) : strlen(path);
  if (klen >= keycap) klen = keycap - 1;
  memcpy(key, path, klen);
  key[klen] = 0;
  const char *last = strrchr(base, '.');
  *ext = last ? last + 1 : "";
}

static int open_tar(data_source *ds, const char *path, taca_error *err) {
  ds->ar = archive_read_new();
  if (!ds->ar) return taca_fail(err, "out of memory");
  archive_read_support_format_tar(ds->ar);
  /* Compressed shards through libarchive's built-in decoders only: filter_all would also enable
   * filters that libarchive runs as external programs (lrzip, lzop, grzip, ...) when it lacks the
   * library, which a data file should never be able to start. */
  archive_read_support_filter_gzip(ds->ar);
  archive_read_support_filter_bzip2(ds->ar);
  archive_read_support_filter_xz(ds->ar);
  archive_read_support_filter_zstd(ds->ar);
  if (archive_read_open_filename(ds->ar, path, 1 << 16) != ARCHIVE_OK) {
    taca_fail(err, "%s: %s", path, archive_error_string(ds->ar));
    archive_read_free(ds->ar);
    ds->ar = NULL;
    return -1;
  }
  ds->pending = 0;
  ds->eof = 0;
  ds->tar_size = 0;
  struct stat sb;
  /* skipping a member seeks, so a member cut off by the end of an uncompressed file goes unnoticed:
   * its header is checked against the file length instead */
  if (archive_filter_count(ds->ar) == 1 && archive_filter_code(ds->ar, 0) == ARCHIVE_FILTER_NONE &&
      stat(path, &sb) == 0)
    ds->tar_size = (uint64_t)sb.st_size;
  return 0;
}

/* Reads the next regular-file header into pending_path. 1 = got one, 0 = end, -1 = error. */
static int tar_next_header(data_source *ds, const char *path, taca_error *err) {
  struct archive_entry *e;
  if (ds->eof) return 0;
  for (;;) {
    int r = archive_read_next_header(ds->ar, &e);
    if (r == ARCHIVE_EOF) {
      ds->eof = 1;
      return 0;
    }
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
      return taca_fail(err, "%s: %s", path, archive_error_string(ds->ar));
    if (archive_entry_filetype(e) != AE_IFREG) continue;
    int64_t at = archive_read_header_position(ds->ar), size = archive_entry_size(e);
    if (ds->tar_size && at >= 0 && size >= 0 && (uint64_t)at + 512 + (uint64_t)size > ds->tar_size)
      return taca_fail(err, "%s: truncated: member '%.200s' of %lld bytes runs past the end of the file", path,
                       archive_entry_pathname(e) ? archive_entry_pathname(e) : "?", (long long)size);
    free(ds->pending_path);
    ds->pending_path = strdup(archive_entry_pathname(e) ? archive_entry_pathname(e) : "");
    ds->pending = 1;
    return ds->pending_path ? 1 : taca_fail(err, "out of memory");
  }
}

/* Reads the pending member's data (up to DS_MAX_MEMBER). *buf NULL with rc 0: oversize (skipped). */
static int tar_read_member(data_source *ds, const char *path, uint8_t **buf, size_t *len,
                           taca_error *err) {
  *buf = NULL, *len = 0;
  size_t cap = 0;
  for (;;) {
    uint8_t chunk[1 << 16];
    la_ssize_t got = archive_read_data(ds->ar, chunk, sizeof chunk);
    if (got < 0) {
      free(*buf);
      *buf = NULL;
      return taca_fail(err, "%s: %s", path, archive_error_string(ds->ar));
    }
    if (got == 0) break;
    if (*len + (size_t)got > DS_MAX_MEMBER) {
      free(*buf);
      *buf = NULL;
      *len = 0;
      archive_read_data_skip(ds->ar);
      return 0;
    }
    if (*len + (size_t)got > cap) {
      cap = (*len + (size_t)got) * 2;
      uint8_t *nb = realloc(*buf, cap + 1);
      if (!nb) {
        free(*buf);
        *buf = NULL;
        return taca_fail(err, "out of memory");
      }
      *buf = nb;
    }
    memcpy(*buf + *len, chunk, (size_t)got);
    *len += (size_t)got;
  }
  if (!*buf) *buf = calloc(1, 1);
  else (*buf)[*len] = 0;
  return *buf ? 0 : taca_fail(err, "out of memory");
}

static int is_image_ext(const char *ext) {
  return !strcasecmp(ext, "jpg") || !strcasecmp(ext, "jpeg") || !strcasecmp(ext, "png") ||
         !strcasecmp(ext, "webp");
}

static int parse_label(const char *s, int32_t *out) {
  while (isspace((unsigned char)*s)) s++;
  if (!*s) return -1;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  while (isspace((unsigned char)*end)) end++;
  if (errno || *end || v < 0 || v > INT32_MAX) return -1;
  *out = (int32_t)v;
  return 0;
}

static void rstrip(char *s) {
  size_t n = strlen(s);
  while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
}

/* Reads one key group from the tar. 1 = sample, 0 = end, -1 = error. with_data 0: skip data. */
static int tar_next_sample(data_source *ds, const char *path, ds_sample *out, int with_data,
                           taca_error *err) {
  if (!ds->pending) {
    int r = tar_next_header(ds, path, err);
    if (r <= 0) return r;
  }
  char key[1024], k2[1024];
  const char *ext;
  split_member(ds->pending_path, key, sizeof key, &ext);
  if (with_data && !(out->key = strdup(key))) return taca_fail(err, "out of memory");
  int oversize = 0, bad_label = 0, bad_caption = 0;
  for (;;) {
    split_member(ds->pending_path, k2, sizeof k2, &ext);
    if (strcmp(k2, key) != 0) break; /* next sample begins: stays pending */
    ds->pending = 0;
    int want = with_data && (is_image_ext(ext) || !strcasecmp(ext, "txt") || !strcasecmp(ext, "cls") ||
                             !strcasecmp(ext, "json"));
    if (want) {
      uint8_t *buf;
      size_t len;
      if (tar_read_member(ds, path, &buf, &len, err)) return -1;
      if (!buf && !strcasecmp(ext, "json")) out->metadata_oversize = 1; /* metadata is never fatal */
      else if (!buf) oversize = 1;
      else if (!strcasecmp(ext, "json") && !out->metadata) out->metadata = (char *)buf, out->metadata_len = len;
      else if (is_image_ext(ext) && !out->image) out->image = buf, out->image_len = len;
      else if (!strcasecmp(ext, "txt") && !out->caption) {
        if (memchr(buf, 0, len)) bad_caption = 1;
        out->caption = (char *)buf;
        rstrip(out->caption);
      } else if (!strcasecmp(ext, "cls")) {
        if (parse_label((char *)buf, &out->label)) bad_label = 1;
        else out->has_label = 1;
        free(buf);
      } else {
        free(buf);
      }
    } else {
      archive_read_data_skip(ds->ar);
    }
    int r = tar_next_header(ds, path, err);
    if (r < 0) return -1;
    if (r == 0) break;
  }
  if (with_data) {
    if (oversize) out->problem = "member larger than 64 MiB";
    else if (!out->image) out->problem = "no image (jpg, jpeg, png or webp) for this key";
    else if (!out->caption || bad_caption) out->problem = bad_caption ? "caption contains a NUL byte" : "no caption (.txt) for this key";
    else if (!out->caption[0]) out->problem = "empty caption";
    else if (bad_label) out->problem = "label (.cls) is not a non-negative integer";
  }
  return 1;
}

/* ---------- folders with captions.tsv ---------- */

static int open_tsv(data_source *ds, const char *dir, taca_error *err) {
  char p[4096];
  snprintf(p, sizeof p, "%s/captions.tsv", dir);
  ds->tsv = fopen(p, "rb");
  return ds->tsv ? 0 : taca_fail(err, "%s: %s", p, strerror(errno));
}

/* Next non-empty line (without the newline) or NULL at the end. */
static char *tsv_line(data_source *ds) {
  ssize_t n;
  while ((n = getline(&ds->line, &ds->line_cap, ds->tsv)) >= 0) {
    while (n > 0 && (ds->line[n - 1] == '\n' || ds->line[n - 1] == '\r')) ds->line[--n] = 0;
    if (n > 0) return ds->line;
  }
  return NULL;
}

static int tsv_next_sample(data_source *ds, const char *dir, ds_sample *out, int with_data,
                           taca_error *err) {
  char *line = tsv_line(ds);
  if (!line) return ferror(ds->tsv) ? taca_fail(err, "%s/captions.tsv: read error", dir) : 0;
  if (!with_data) return 1;
  char *tab1 = strchr(line, '\t');
  char *tab2 = tab1 ? strchr(tab1 + 1, '\t') : NULL;
  if (tab1) *tab1 = 0;
  if (tab2) *tab2 = 0;
  out->key = strdup(line);
  if (!out->key) return taca_fail(err, "out of memory");
  if (!tab1) {
    out->problem = "captions.tsv line has no caption (path<TAB>caption[<TAB>label])";
    return 1;
  }
  out->caption = strdup(tab1 + 1);
  if (!out->caption) return taca_fail(err, "out of memory");
  rstrip(out->caption);
  if (tab2 && parse_label(tab2 + 1, &out->label) == 0) out->has_label = 1;
  else if (tab2) out->problem = "label is not a non-negative integer";
  if (!out->caption[0] && !out->problem) out->problem = "empty caption";
  char p[4096];
  snprintf(p, sizeof p, "%s/%s", dir, out->key);
  if (strstr(out->key, "..") || out->key[0] == '/') {
    if (!out->problem) out->problem = "image path must be relative and inside the folder";
  } else if (taca_read_file(p, DS_MAX_MEMBER, &out->image, &out->image_len, &(taca_error){{0}})) {
    if (!out->problem) out->problem = "image file missing, unreadable or larger than 64 MiB";
  }
  return 1;
}

/* ---------- the source ---------- */

static void close_current(data_source *ds) {
  if (ds->ar) archive_read_free(ds->ar);
  ds->ar = NULL;
  if (ds->tsv) fclose(ds->tsv);
  ds->tsv = NULL;
  ds->pending = 0;
}

static int open_input(data_source *ds, const ds_input *in, taca_error *err) {
  close_current(ds);
  return in->kind == DS_TAR ? open_tar(ds, in->path, err) : open_tsv(ds, in->path, err);
}

static int next_raw(data_source *ds, const ds_input *in, ds_sample *s, int with_data,
                    taca_error *err) {
  return in->kind == DS_TAR ? tar_next_sample(ds, in->path, s, with_data, err)
                            : tsv_next_sample(ds, in->path, s, with_data, err);
}

/* Size and content fingerprint of an input (see ds_input). */
static int fingerprint_input(ds_input *in, taca_error *err) {
  char p[4200];
  if (in->kind == DS_TAR) snprintf(p, sizeof p, "%s", in->path);
  else snprintf(p, sizeof p, "%s/captions.tsv", in->path);
  FILE *f = fopen(p, "rb");
  if (!f) return taca_fail(err, "%s: %s", p, strerror(errno));
  struct stat sb;
  if (fstat(fileno(f), &sb)) {
    fclose(f);
    return taca_fail(err, "%s: %s", p, strerror(errno));
  }
  in->size = (uint64_t)sb.st_size;
  XXH3_state_t *st = XXH3_createState();
  enum { EDGE = 64 << 10 };
  uint8_t *buf = malloc(EDGE);
  if (!st || !buf) {
    fclose(f);
    free(buf);
    XXH3_freeState(st);
    return taca_fail(err, "out of memory");
  }
  XXH3_64bits_reset(st);
  XXH3_64bits_update(st, &in->size, sizeof in->size);
  size_t got;
  int bad = 0;
  if (in->kind == DS_TAR) {
    got = fread(buf, 1, EDGE, f);
    XXH3_64bits_update(st, buf, got);
    if (in->size > EDGE && fseeko(f, (off_t)(in->size - EDGE), SEEK_SET) == 0) {
      got = fread(buf, 1, EDGE, f);
      XXH3_64bits_update(st, buf, got);
    }
  } else {
    while ((got = fread(buf, 1, EDGE, f)) > 0) XXH3_64bits_update(st, buf, got);
  }
  bad = ferror(f);
  fclose(f);
  snprintf(in->fingerprint, sizeof in->fingerprint, "%016llx", (unsigned long long)XXH3_64bits_digest(st));
  XXH3_freeState(st);
  free(buf);
  return bad ? taca_fail(err, "%s: read error", p) : 0;
}

/* Counts an input's entries. A tar that cannot be read to its end keeps the entries before the
 * damage and says why in in->problem (the run goes on without the rest). */
static int count_input(data_source *ds, ds_input *in, taca_error *err) {
  if (fingerprint_input(in, err)) return -1;
  taca_error why = {{0}};
  uint64_t n = 0;
  int r = open_input(ds, in, &why);
  if (r == 0)
    while ((r = next_raw(ds, in, NULL, 0, &why)) == 1) n++;
  close_current(ds);
  in->entries = n;
  if (r < 0 && in->kind == DS_TAR) {
    if (!(in->problem = strdup(why.msg))) return taca_fail(err, "out of memory");
    return 0;
  }
  if (r < 0) *err = why;
  return r;
}

int ds_open(data_source **out, char *const *specs, int nspecs, int shard, int nshards,
            taca_error *err) {
  if (nshards < 1 || shard < 0 || shard >= nshards)
    return taca_fail(err, "shard %d/%d: need 0 <= i < n", shard, nshards);
  data_source *ds = calloc(1, sizeof *ds);
  if (!ds) return taca_fail(err, "out of memory");
  int cap = 0;
  for (int s = 0; s < nspecs; s++) {
    char **paths;
    int n = ds_expand_braces(specs[s], &paths, err);
    if (n < 0) goto fail;
    for (int i = 0; i < n; i++) {
      struct stat sb;
      int bad = stat(paths[i], &sb) != 0;
      if (bad) taca_fail(err, "data '%s': %s", paths[i], strerror(errno));
      if (ds->n_all == cap) {
        cap = cap ? cap * 2 : 16;
        ds_input *na = realloc(ds->all, sizeof *na * cap);
        if (!na) bad = 1, taca_fail(err, "out of memory");
        else ds->all = na;
      }
      if (bad) {
        for (int j = i; j < n; j++) free(paths[j]);
        free(paths);
        goto fail;
      }
      ds_input *in = &ds->all[ds->n_all++];
      memset(in, 0, sizeof *in);
      in->path = paths[i];
      in->kind = S_ISDIR(sb.st_mode) ? DS_FOLDER : DS_TAR;
      in->shard = (ds->n_all - 1) % nshards;
    }
    free(paths);
  }
  if (ds->n_all == 0) {
    taca_fail(err, "no data given (--data SPEC)");
    goto fail;
  }
  ds->mine = malloc(sizeof *ds->mine * ds->n_all);
  if (!ds->mine) {
    taca_fail(err, "out of memory");
    goto fail;
  }
  for (int i = 0; i < ds->n_all; i++) {
    ds_input *in = &ds->all[i];
    if (in->shard > shard) continue; /* not needed for this shard's first index or its content */
    if (count_input(ds, in, err)) goto fail;
    if (in->shard < shard) ds->before += in->entries;
    else ds->mine[ds->n_mine++] = i, ds->total += in->entries;
  }
  if (ds->n_mine == 0) {
    taca_fail(err, "shard %d/%d has no inputs (only %d input files)", shard, nshards, ds->n_all);
    goto fail;
  }
  ds->cur = ds->n_mine; /* not positioned until ds_seek */
  *out = ds;
  return 0;
fail:
  ds_close(ds);
  return -1;
}

void ds_close(data_source *ds) {
  if (!ds) return;
  close_current(ds);
  for (int i = 0; i < ds->n_all; i++) free(ds->all[i].path), free(ds->all[i].problem);
  free(ds->all);
  free(ds->mine);
  free(ds->pending_path);
  free(ds->line);
  free(ds);
}

int ds_num_inputs(const data_source *ds) { return ds->n_mine; }
const ds_input *ds_get_input(const data_source *ds, int i) { return &ds->all[ds->mine[i]]; }
uint64_t ds_total_entries(const data_source *ds) { return ds->total; }
uint64_t ds_entries_before_shard(const data_source *ds) { return ds->before; }

int ds_seek(data_source *ds, int input, uint64_t entry, taca_error *err) {
  close_current(ds);
  ds->cur = input;
  ds->cur_entry = 0;
  if (input >= ds->n_mine) return 0;
  const ds_input *in = ds_get_input(ds, input);
  if (entry > in->entries)
    return taca_fail(err, "%s: cannot resume at entry %llu, it has %llu", in->path,
                     (unsigned long long)entry, (unsigned long long)in->entries);
  if (open_input(ds, in, err)) return -1;
  for (; ds->cur_entry < entry; ds->cur_entry++)
    if (next_raw(ds, in, NULL, 0, err) != 1)
      return taca_fail(err, "%s: changed since it was counted (ends before entry %llu)", in->path,
                       (unsigned long long)entry);
  return 0;
}

int ds_next(data_source *ds, ds_sample *out, taca_error *err) {
  memset(out, 0, sizeof *out);
  while (ds->cur < ds->n_mine) {
    const ds_input *in = ds_get_input(ds, ds->cur);
    if (in->problem && ds->cur_entry == in->entries) { /* the damaged rest of a tar is not read */
      close_current(ds);
      ds->cur++;
      ds->cur_entry = 0;
      continue;
    }
    if (!ds->ar && !ds->tsv && open_input(ds, in, err)) return -1;
    out->input = ds->cur;
    out->entry = ds->cur_entry;
    int r = next_raw(ds, in, out, 1, err);
    if (r < 0) {
      ds_sample_free(out);
      return -1;
    }
    if (r == 1) {
      ds->cur_entry++;
      return 1;
    }
    ds_sample_free(out);
    if (ds->cur_entry != in->entries)
      return taca_fail(err, "%s: changed since it was counted (%llu entries, now %llu)", in->path,
                       (unsigned long long)in->entries, (unsigned long long)ds->cur_entry);
    close_current(ds);
    ds->cur++;
    ds->cur_entry = 0;
  }
  return 0;
}

void ds_sample_free(ds_sample *s) {
  free(s->key);
  free(s->image);
  free(s->caption);
  free(s->metadata);
  memset(s, 0, sizeof *s);
}
