/* cmd_synth.c: `taca synth`: writes the synthetic captioned-shapes data set (services/synth) as
 * WebDataset tar shards or a folder with captions.tsv, optionally with deliberately broken entries
 * (for tests of precompute's rejection path), or its motion variant (frame sequences labelled by
 * direction: the ablations' temporal downstream model). */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "image/image_encode.h"
#include "services/cli/cli_util.h"
#include "services/synth/synth.h"

static const char *USAGE =
    "usage: taca synth --out DIR [--n N] [--start I] [--size S] [--seed SEED] [--format tar|folder]\n"
    "                  [--shards K] [--image png|jpg] [--corrupt C] [--motion F]\n"
    "  Writes N samples (indices I..I+N-1) of the synthetic shapes data set: tar shards\n"
    "  DIR/00000.tar ... (KEY.png|jpg + KEY.txt + KEY.cls) or DIR/images/ + DIR/captions.tsv.\n"
    "  --corrupt C breaks C evenly spaced samples (truncated image, empty caption, bad label,\n"
    "  missing caption, in turn). Defaults: N 1000, I 0, S 64, seed 1, tar, 1 shard, png.\n"
    "  --motion F writes the motion set instead: sequences of F frames of one shape moving in a\n"
    "  straight line, sample I+j being frame (I+j) mod F of sequence (I+j) / F, labelled by direction\n"
    "  (0 left to right, 1 right to left, 2 top to bottom, 3 bottom to top); I and N must be\n"
    "  multiples of F, so that each sequence is whole (`taca eval --split-group F` keeps it in one split).\n";

typedef struct member {
  char name[64];
  uint8_t *data;
  size_t len;
} member;

static int tar_add(struct archive *a, const char *name, const void *data, size_t len) {
  struct archive_entry *e = archive_entry_new();
  archive_entry_set_pathname(e, name);
  archive_entry_set_size(e, (la_int64_t)len);
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_perm(e, 0644);
  archive_entry_set_mtime(e, 0, 0);
  int ok = archive_write_header(a, e) == ARCHIVE_OK &&
           (len == 0 || archive_write_data(a, data, len) == (la_ssize_t)len);
  archive_entry_free(e);
  return ok ? 0 : -1;
}

static int write_file(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  int ok = fwrite(data, 1, len, f) == len;
  return (fclose(f) == 0 && ok) ? 0 : -1;
}

int cmd_synth(int argc, char **argv) {
  const char *out = NULL, *format = "tar", *imgfmt = "png";
  int n = 1000, size = 64, shards = 1, corrupt = 0, motion = 0;
  long long start = 0, seed = 1;
  static const struct option opts[] = {
      {"out", required_argument, 0, 'o'},   {"n", required_argument, 0, 'n'},
      {"start", required_argument, 0, 'S'}, {"size", required_argument, 0, 'z'},
      {"seed", required_argument, 0, 'r'},  {"format", required_argument, 0, 'f'},
      {"shards", required_argument, 0, 'k'}, {"image", required_argument, 0, 'i'},
      {"corrupt", required_argument, 0, 'c'}, {"motion", required_argument, 0, 'm'},
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  int c;
  cli_env_options(&argc, &argv, "", opts); /* TACA_<OPTION> for options not given */
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'o': out = optarg; break;
      case 'n': if (cli_parse_positive("synth", "--n", optarg, &n)) return 2; break;
      case 'S': start = atoll(optarg); break;
      case 'z': if (cli_parse_positive("synth", "--size", optarg, &size)) return 2; break;
      case 'r': seed = atoll(optarg); break;
      case 'f': format = optarg; break;
      case 'k': if (cli_parse_positive("synth", "--shards", optarg, &shards)) return 2; break;
      case 'i': imgfmt = optarg; break;
      case 'c': corrupt = atoi(optarg); break;
      case 'm': if (cli_parse_positive("synth", "--motion", optarg, &motion)) return 2; break;
      case 'h': fputs(USAGE, stdout); return 0;
      default: return cli_fail("synth", 2, "unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
    }
  }
  if (!out) return cli_fail("synth", 2, "--out is required (see --help)");
  int tar = !strcmp(format, "tar");
  if (!tar && strcmp(format, "folder")) return cli_fail("synth", 2, "--format must be tar or folder");
  int jpg = !strcmp(imgfmt, "jpg");
  if (!jpg && strcmp(imgfmt, "png")) return cli_fail("synth", 2, "--image must be png or jpg");
  if (size < 8 || size > 1024) return cli_fail("synth", 2, "--size must be in 8..1024");
  if (start < 0 || corrupt < 0 || corrupt > n || shards > n)
    return cli_fail("synth", 2, "need --start >= 0, 0 <= --corrupt <= N and --shards <= N");
  if (motion && (motion < 2 || motion > 64))
    return cli_fail("synth", 2, "--motion must be in 2..64 frames, got %d", motion);
  if (motion && (start % motion || n % motion))
    return cli_fail("synth", 2, "--motion %d needs --start and --n multiples of %d (whole sequences), got %lld and %d",
                    motion, motion, start, n);
  if (mkdir(out, 0755) && errno != EEXIST) return cli_fail("synth", 1, "%s: %s", out, strerror(errno));
  char path[4096];
  FILE *tsv = NULL;
  if (!tar) {
    snprintf(path, sizeof path, "%s/images", out);
    if (mkdir(path, 0755) && errno != EEXIST) return cli_fail("synth", 1, "%s: %s", path, strerror(errno));
    snprintf(path, sizeof path, "%s/captions.tsv", out);
    if (!(tsv = fopen(path, "wb"))) return cli_fail("synth", 1, "%s: %s", path, strerror(errno));
  }
  struct archive *a = NULL;
  int shard = -1, rc = 0, broken = 0;
  char tmp[4200];
  for (int i = 0; rc == 0 && i < n; i++) {
    int want_shard = (int)((long long)i * shards / n);
    if (tar && want_shard != shard) {
      if (a && (archive_write_close(a) != ARCHIVE_OK || rename(tmp, path))) rc = cli_fail("synth", 1, "%s: write failed", path);
      if (a) archive_write_free(a);
      shard = want_shard;
      snprintf(path, sizeof path, "%s/%05d.tar", out, shard);
      snprintf(tmp, sizeof tmp, "%s.tmp", path);
      a = archive_write_new();
      archive_write_set_format_pax_restricted(a);
      if (archive_write_open_filename(a, tmp) != ARCHIVE_OK) {
        rc = cli_fail("synth", 1, "%s: %s", tmp, archive_error_string(a));
        break;
      }
    }
    synth_sample s;
    uint64_t index = (uint64_t)start + i;
    if (motion ? synth_render_motion((uint64_t)seed, index, motion, size, &s)
               : synth_render((uint64_t)seed, index, size, &s)) {
      rc = cli_fail("synth", 1, "out of memory");
      break;
    }
    uint8_t *img;
    size_t len;
    taca_error err;
    if ((jpg ? image_encode_jpeg(&s.img, 92, &img, &len, &err) : image_encode_png(&s.img, &img, &len, &err))) {
      synth_sample_free(&s);
      rc = cli_fail("synth", 1, "%s", err.msg);
      break;
    }
    /* Deliberately broken samples, evenly spaced. */
    int kind = -1;
    if (corrupt && (long long)i * corrupt / n != (long long)(i + 1) * corrupt / n) kind = broken++ % 4;
    char caption[200], label[32];
    snprintf(caption, sizeof caption, "%s", kind == 1 ? "" : s.caption);
    snprintf(label, sizeof label, "%s", kind == 2 ? "not-a-number" : "");
    if (!label[0]) snprintf(label, sizeof label, "%d", s.label);
    if (kind == 0) len = len / 3; /* truncated image */
    char key[32];
    snprintf(key, sizeof key, "%09llu", (unsigned long long)index);
    if (tar) {
      char name[64];
      snprintf(name, sizeof name, "%s.%s", key, jpg ? "jpg" : "png");
      int bad = tar_add(a, name, img, len);
      snprintf(name, sizeof name, "%s.txt", key);
      if (kind != 3) bad |= tar_add(a, name, caption, strlen(caption));
      snprintf(name, sizeof name, "%s.cls", key);
      bad |= tar_add(a, name, label, strlen(label));
      if (bad) rc = cli_fail("synth", 1, "%s: %s", tmp, archive_error_string(a));
    } else {
      char rel[64];
      snprintf(rel, sizeof rel, "images/%s.%s", key, jpg ? "jpg" : "png");
      snprintf(path, sizeof path, "%s/%s", out, rel);
      if (write_file(path, img, len)) rc = cli_fail("synth", 1, "%s: %s", path, strerror(errno));
      if (kind == 3) fprintf(tsv, "%s\n", rel);
      else fprintf(tsv, "%s\t%s\t%s\n", rel, caption, label);
    }
    free(img);
    synth_sample_free(&s);
  }
  if (a) {
    if (rc == 0 && (archive_write_close(a) != ARCHIVE_OK || rename(tmp, path))) rc = cli_fail("synth", 1, "%s: write failed", path);
    archive_write_free(a);
  }
  if (tsv && fclose(tsv) && rc == 0) rc = cli_fail("synth", 1, "captions.tsv: write failed");
  return rc;
}
