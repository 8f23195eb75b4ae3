/* cmd_embed.c: `taca embed`: image or text features of a model (methods/encoder.h: a CLIP model, as
 * HF get_image_features / get_text_features, or an exported adapted one), from .npy pixels or
 * tokens, image files, or a captions file. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fastmath.h"
#include "methods/encoder.h"
#include "image/image.h"
#include "base/npy.h"
#include "text/tokenizer.h"
#include "services/cli/cli_util.h"

static const char *USAGE =
    "usage: taca embed --model M [--arch NAME|CONFIG.json] INPUT --out Y.npy [--normalize]\n"
    "                  [--batch-size B] [--threads N] [--precision f32|bf16]\n"
    "  M is a HuggingFace CLIP directory (config.json + model.safetensors), an open_clip\n"
    "  .safetensors state dict (then --arch is required: ViT-B-16, ViT-B-32, ViT-L-14, ViT-H-14,\n"
    "  ViT-g-14, ViT-bigG-14, optionally with -quickgelu, or an open_clip model-config JSON), or a\n"
    "  directory written by `taca export` (an adapted model: image features in the old model's\n"
    "  space, text features from the old text tower).\n"
    "  INPUT is one of:\n"
    "    --pixels X.npy     normalised pixels, float [N, 3, S, S]\n"
    "    --images FILE...   JPEG/PNG/WebP files, preprocessed as CLIP does\n"
    "    --tokens T.npy     token ids, int32 or int64 [N, 77]\n"
    "    --text FILE        captions, one per line\n"
    "  Writes float32 [N, embed_dim] features, L2-normalised with --normalize. Features depend on\n"
    "  nothing but the model and the rows of each --batch-size chunk.\n"
    "  --precision bf16 multiplies the towers' matrices in BF16 with F32 accumulation (weights\n"
    "  converted once at load, everything else F32, as torch.autocast; oneDNN where the CPU has BF16\n"
    "  units); f32 (default) is exact F32.\n";

typedef enum { IN_NONE, IN_PIXELS, IN_IMAGES, IN_TOKENS, IN_TEXT } input_kind;

/* Embeds N images given as files, batch by batch; decoding of a batch runs on OpenMP threads. */
static int embed_image_files(taca_encoder *m, char **files, int n, int batch, float *out,
                             taca_error *err) {
  encoder_preprocess pp;
  encoder_get_preprocess(m, &pp);
  const int S = pp.image_size, E = encoder_image_dim(m);
  const size_t per = (size_t)3 * S * S;
  float *pix = malloc(sizeof(float) * per * batch);
  uint8_t *u8 = malloc(per * batch);
  if (!pix || !u8) {
    free(pix);
    free(u8);
    return taca_fail(err, "out of memory");
  }
  int rc = 0;
  for (int start = 0; rc == 0 && start < n; start += batch) {
    int b = n - start < batch ? n - start : batch;
    int failed = -1;
    taca_error ferr = {{0}};
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < b; i++) {
      rgb_image img = {0};
      taca_error e = {{0}};
      int bad = image_load_file(files[start + i], &img, &e) ||
                clip_resize_crop_u8(&img, S, u8 + per * i, &e);
      rgb_image_free(&img);
      if (bad) {
#pragma omp critical
        if (failed < 0 || start + i < failed) {
          failed = start + i;
          ferr = e;
        }
      } else {
        clip_normalize_u8(u8 + per * i, S, pp.mean, pp.std, pix + per * i);
      }
    }
    if (failed >= 0) {
      *err = ferr;
      rc = -1;
      break;
    }
    rc = encoder_embed_images(m, pix, b, out + (size_t)start * E, err);
  }
  free(pix);
  free(u8);
  return rc;
}

int cmd_embed(int argc, char **argv) {
  const char *model = NULL, *arch = NULL, *out = NULL, *in = NULL;
  input_kind kind = IN_NONE;
  int normalize = 0, batch = 8, threads = 0, kinds = 0;
  nn_precision precision = NN_PRECISION_F32;
  static const struct option opts[] = {
      {"model", required_argument, 0, 'm'}, {"arch", required_argument, 0, 'a'},
      {"pixels", required_argument, 0, 'p'}, {"images", no_argument, 0, 'i'},
      {"tokens", required_argument, 0, 'k'}, {"text", required_argument, 0, 't'},
      {"out", required_argument, 0, 'o'},   {"normalize", no_argument, 0, 'n'},
      {"batch-size", required_argument, 0, 'b'}, {"threads", required_argument, 0, 'j'},
      {"precision", required_argument, 0, 'r'},
      {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
  int c;
  cli_env_options(&argc, &argv, "", opts); /* TACA_<OPTION> for options not given */
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'm': model = optarg; break;
      case 'a': if (cli_check_arch("embed", optarg)) return 2; arch = optarg; break;
      case 'p': kind = IN_PIXELS, in = optarg, kinds++; break;
      case 'i': kind = IN_IMAGES, kinds++; break;
      case 'k': kind = IN_TOKENS, in = optarg, kinds++; break;
      case 't': kind = IN_TEXT, in = optarg, kinds++; break;
      case 'o': out = optarg; break;
      case 'n': normalize = 1; break;
      case 'b': if (cli_parse_positive("embed", "--batch-size", optarg, &batch)) return 2; break;
      case 'j': if (cli_parse_positive("embed", "--threads", optarg, &threads)) return 2; break;
      case 'r': if (cli_parse_precision("embed", optarg, &precision)) return 2; break;
      case 'h': fputs(USAGE, stdout); return 0;
      default: return cli_fail("embed", 2, "unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
    }
  }
  if (!model || !out) return cli_fail("embed", 2, "--model and --out are required (see --help)");
  if (kinds != 1)
    return cli_fail("embed", 2, "give exactly one of --pixels, --images, --tokens, --text");
  int n_files = argc - optind;
  if (kind == IN_IMAGES && n_files == 0) return cli_fail("embed", 2, "--images needs at least one file");
  if (kind != IN_IMAGES && n_files > 0) return cli_fail("embed", 2, "unexpected argument '%s'", argv[optind]);

  taca_error err = {{0}};
  nn_backend *be = nn_backend_cpu_create(threads);
  taca_encoder *m = be ? encoder_open(model, arch, be, batch, &err) : NULL;
  if (m && encoder_set_precision(m, precision, &err)) {
    encoder_close(m);
    m = NULL;
  }
  if (!m) {
    nn_backend_destroy(be);
    return cli_fail("embed", 1, "%s", be ? err.msg : "out of memory");
  }
  encoder_preprocess pp;
  encoder_get_preprocess(m, &pp);
  const int text_input = kind == IN_TOKENS || kind == IN_TEXT;
  const int E = text_input ? encoder_text_dim(m) : encoder_image_dim(m);
  int rc = 0, n = 0;
  float *feat = NULL;
  npy_array arr = {0};
  char **lines = NULL;
  int32_t *ids = NULL;
  clip_tokenizer *tok = NULL;

  if (kind == IN_PIXELS || kind == IN_TOKENS) {
    if (npy_load(in, &arr, &err)) {
      rc = cli_fail("embed", 1, "%s", err.msg);
      goto done;
    }
  }
  if (kind == IN_PIXELS) {
    const int S = pp.image_size;
    if (arr.ndim != 4 || arr.shape[1] != 3 || arr.shape[2] != S || arr.shape[3] != S) {
      rc = cli_fail("embed", 1, "%s: pixels must have shape [N, 3, %d, %d] for this model", in, S, S);
      goto done;
    }
    if (arr.dtype != TACA_DT_F32) {
      float *f = malloc(sizeof(float) * (arr.numel ? arr.numel : 1));
      if (!f || taca_convert_to_f32(f, arr.data, arr.dtype, arr.numel)) {
        free(f);
        rc = cli_fail("embed", 1, "%s: pixels must be a float array, got %s", in,
                      taca_dtype_name(arr.dtype));
        goto done;
      }
      free(arr.data);
      arr.data = f;
      arr.dtype = TACA_DT_F32;
    }
    n = (int)arr.shape[0];
  } else if (kind == IN_TOKENS || kind == IN_TEXT) {
    if (!encoder_text_dim(m)) {
      rc = cli_fail("embed", 1, "%s: this model has no text tower", model);
      goto done;
    }
    const int ctx = encoder_context_len(m), vocab = encoder_vocab_size(m);
    if (kind == IN_TOKENS) {
      if (arr.ndim != 2 || arr.shape[1] != ctx ||
          (arr.dtype != TACA_DT_I32 && arr.dtype != TACA_DT_I64)) {
        rc = cli_fail("embed", 1, "%s: tokens must be int32 or int64 with shape [N, %d]", in, ctx);
        goto done;
      }
      n = (int)arr.shape[0];
      ids = malloc(sizeof *ids * (arr.numel ? arr.numel : 1));
      for (size_t i = 0; ids && i < arr.numel; i++) {
        int64_t v = arr.dtype == TACA_DT_I32 ? ((int32_t *)arr.data)[i] : ((int64_t *)arr.data)[i];
        if (v < 0 || v >= vocab) {
          rc = cli_fail("embed", 1, "%s: token id %lld at row %zu is outside [0, %d)", in,
                        (long long)v, i / ctx, vocab);
          goto done;
        }
        ids[i] = (int32_t)v;
      }
    } else {
      if (ctx != CLIP_CONTEXT_LEN) {
        rc = cli_fail("embed", 1, "--text needs a model with context length 77 (this one has %d)", ctx);
        goto done;
      }
      n = cli_read_lines(in, &lines, &err);
      tok = n >= 0 ? clip_tokenizer_load(NULL, &err) : NULL;
      if (!tok) {
        rc = cli_fail("embed", 1, "%s", err.msg);
        goto done;
      }
      ids = malloc(sizeof *ids * ((size_t)n * ctx + 1));
      for (int i = 0; ids && i < n; i++) {
        if (clip_tokenize(tok, lines[i], ids + (size_t)i * ctx, ctx, &err)) {
          rc = cli_fail("embed", 1, "%s line %d: %s", in, i + 1, err.msg);
          goto done;
        }
      }
    }
    if (!ids) {
      rc = cli_fail("embed", 1, "out of memory");
      goto done;
    }
  } else {
    n = n_files;
  }

  feat = malloc(sizeof(float) * ((size_t)n * E + 1));
  if (!feat) {
    rc = cli_fail("embed", 1, "out of memory");
    goto done;
  }
  if (kind != IN_IMAGES && (kind == IN_PIXELS ? encoder_embed_images(m, arr.data, n, feat, &err)
                                               : encoder_embed_texts(m, ids, n, feat, &err))) {
    rc = cli_fail("embed", 1, "%s", err.msg);
    goto done;
  }
  if (kind == IN_IMAGES && embed_image_files(m, argv + optind, n, batch, feat, &err)) {
    rc = cli_fail("embed", 1, "%s", err.msg);
    goto done;
  }
  for (size_t i = 0; i < (size_t)n * E; i++)
    if (!isfinite(feat[i])) { /* NaN features are no result: the weights or inputs are broken */
      rc = cli_fail("embed", 1, "model '%s': %s feature %zu of row %zu is not finite (check the weights)", model,
                    kind == IN_TEXT || kind == IN_TOKENS ? "text" : "image", i % (size_t)E, i / (size_t)E);
      goto done;
    }
  if (normalize) taca_l2_normalize_rows(feat, (size_t)n, E);
  int64_t shape[2] = {n, E};
  if (npy_save(out, TACA_DT_F32, 2, shape, feat, &err)) rc = cli_fail("embed", 1, "%s", err.msg);

done:
  free(feat);
  free(ids);
  npy_free(&arr);
  if (lines) cli_free_lines(lines, n);
  clip_tokenizer_free(tok);
  encoder_close(m);
  nn_backend_destroy(be);
  return rc;
}
