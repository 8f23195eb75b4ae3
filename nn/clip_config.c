/* clip_config.c: CLIP architecture descriptions from built-in names, open_clip JSON and HF JSON. */
#include "nn/clip_config.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Upper bounds far above every published CLIP (ViT-bigG-14: width 1664, 48 layers, MLP 8192), so that
 * sizes, token counts and parameter counts computed from a config cannot overflow. */
#define CLIP_MAX_WIDTH 16384
#define CLIP_MAX_MLP 131072
#define CLIP_MAX_LAYERS 1024
#define CLIP_MAX_TOKENS 65536 /* image patches + 1, and the text context */
#define CLIP_MAX_PATCH 1024

typedef struct builtin_arch {
  const char *name;
  int embed, image, patch, vw, vlayers, vhead_width;
  double vmlp_ratio;
  int tw, theads, tlayers;
} builtin_arch;

/* From open_clip's model_configs (one JSON file per architecture). */
static const builtin_arch BUILTINS[] = {
    {"ViT-B-32", 512, 224, 32, 768, 12, 64, 4.0, 512, 8, 12},
    {"ViT-B-16", 512, 224, 16, 768, 12, 64, 4.0, 512, 8, 12},
    {"ViT-L-14", 768, 224, 14, 1024, 24, 64, 4.0, 768, 12, 12},
    {"ViT-H-14", 1024, 224, 14, 1280, 32, 80, 4.0, 1024, 16, 24},
    {"ViT-g-14", 1024, 224, 14, 1408, 40, 88, 4.3637, 1024, 16, 24},
    {"ViT-bigG-14", 1280, 224, 14, 1664, 48, 104, 4.9231, 1280, 20, 32},
};

static void set_text_defaults(clip_config *cfg) {
  cfg->context_len = 77;
  cfg->vocab_size = 49408;
  cfg->has_text = 1;
}

int clip_config_builtin(clip_config *cfg, const char *name, taca_error *err) {
  memset(cfg, 0, sizeof *cfg);
  size_t n = strlen(name);
  const char *suffix = "-quickgelu";
  size_t sl = strlen(suffix);
  int quick = n > sl && strcmp(name + n - sl, suffix) == 0;
  size_t base = quick ? n - sl : n;
  for (size_t i = 0; i < sizeof BUILTINS / sizeof BUILTINS[0]; i++) {
    const builtin_arch *a = &BUILTINS[i];
    if (strlen(a->name) != base || strncmp(a->name, name, base) != 0) continue;
    snprintf(cfg->name, sizeof cfg->name, "%s", name);
    nn_act act = quick ? NN_ACT_QUICK_GELU : NN_ACT_GELU;
    cfg->embed_dim = a->embed;
    cfg->image_size = a->image;
    cfg->patch_size = a->patch;
    cfg->vision = (clip_tower_config){a->vw, a->vlayers, a->vw / a->vhead_width,
                                      (int)(a->vw * a->vmlp_ratio), act};
    cfg->text = (clip_tower_config){a->tw, a->tlayers, a->theads, a->tw * 4, act};
    set_text_defaults(cfg);
    return 0;
  }
  return taca_fail(err,
                   "unknown architecture '%s' (built-in: ViT-B-16, ViT-B-32, ViT-L-14, ViT-H-14, "
                   "ViT-g-14, ViT-bigG-14, each also with -quickgelu; or an open_clip config JSON)",
                   name);
}

/* Reads an integer field with a default; -1 with a reason if present but not a positive integer. */
static int json_int(json_t *obj, const char *key, int dflt, int *out, const char *where,
                    taca_error *err) {
  json_t *v = obj ? json_object_get(obj, key) : NULL;
  if (!v || json_is_null(v)) {
    *out = dflt;
    return 0;
  }
  if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > 1 << 24)
    return taca_fail(err, "%s.%s must be a positive integer", where, key);
  *out = (int)json_integer_value(v);
  return 0;
}

static int json_num(json_t *obj, const char *key, double dflt, double *out, const char *where,
                    taca_error *err) {
  json_t *v = obj ? json_object_get(obj, key) : NULL;
  if (!v || json_is_null(v)) {
    *out = dflt;
    return 0;
  }
  if (!json_is_number(v) || json_number_value(v) <= 0)
    return taca_fail(err, "%s.%s must be a positive number", where, key);
  *out = json_number_value(v);
  return 0;
}

/* width * mlp_ratio as open_clip computes it, or one over the limit (clip_config_validate refuses it)
 * where the product would not fit an int. */
static int mlp_width(int width, double ratio) {
  double m = width * ratio;
  return m < CLIP_MAX_MLP + 1.0 ? (int)m : CLIP_MAX_MLP + 1;
}

/* Values a HF config may set that change what the network computes and this build does not
 * implement: refused rather than ignored (num_channels other than 3; layer_norm_eps other than the
 * 1e-5 every LayerNorm here uses). */
static int hf_unsupported(json_t *obj, const char *where, taca_error *err) {
  double eps = 1e-5;
  int channels = 3;
  if (json_num(obj, "layer_norm_eps", 1e-5, &eps, where, err)) return -1;
  if (fabs(eps - 1e-5) > 1e-12)
    return taca_fail(err, "%s.layer_norm_eps %g is not supported (LayerNorm here uses eps 1e-5)", where, eps);
  if (strcmp(where, "vision_config")) return 0;
  if (json_int(obj, "num_channels", 3, &channels, where, err)) return -1;
  if (channels != 3) return taca_fail(err, "%s.num_channels %d is not supported (RGB images: 3)", where, channels);
  return 0;
}

static json_t *load_json_object(const char *path, taca_error *err) {
  json_error_t je;
  json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
  if (!root) {
    if (je.line < 0) taca_fail(err, "%s: %s", path, je.text); /* not read at all: "unable to open ...: No such file" */
    else taca_fail(err, "%s: invalid JSON at line %d: %s", path, je.line, je.text);
    return NULL;
  }
  if (!json_is_object(root)) {
    json_decref(root);
    taca_fail(err, "%s: expected a JSON object", path);
    return NULL;
  }
  return root;
}

int clip_config_open_clip_json(clip_config *cfg, const char *path, taca_error *err) {
  memset(cfg, 0, sizeof *cfg);
  json_t *root = load_json_object(path, err);
  if (!root) return -1;
  int rc = -1;
  json_t *vc = json_object_get(root, "vision_cfg"), *tc = json_object_get(root, "text_cfg");
  json_t *q = json_object_get(root, "quick_gelu");
  if (!json_is_object(vc)) {
    taca_fail(err, "%s: missing object 'vision_cfg'", path);
    goto done;
  }
  if (q && !json_is_boolean(q)) {
    taca_fail(err, "%s: 'quick_gelu' must be true or false", path);
    goto done;
  }
  nn_act act = q && json_is_true(q) ? NN_ACT_QUICK_GELU : NN_ACT_GELU;
  int head_width = 64, vw = 768;
  double ratio = 4.0;
  if (json_int(root, "embed_dim", 512, &cfg->embed_dim, "config", err) ||
      json_int(vc, "image_size", 224, &cfg->image_size, "vision_cfg", err) ||
      json_int(vc, "patch_size", 16, &cfg->patch_size, "vision_cfg", err) ||
      json_int(vc, "width", 768, &vw, "vision_cfg", err) ||
      json_int(vc, "layers", 12, &cfg->vision.layers, "vision_cfg", err) ||
      json_int(vc, "head_width", 64, &head_width, "vision_cfg", err) ||
      json_num(vc, "mlp_ratio", 4.0, &ratio, "vision_cfg", err))
    goto done;
  cfg->vision.width = vw;
  cfg->vision.heads = vw / head_width;
  cfg->vision.mlp = mlp_width(vw, ratio);
  cfg->vision.act = act;
  if (vw % head_width != 0) {
    taca_fail(err, "%s: vision_cfg.width %d is not a multiple of head_width %d", path, vw,
              head_width);
    goto done;
  }
  if (tc) {
    if (!json_is_object(tc)) {
      taca_fail(err, "%s: 'text_cfg' must be an object", path);
      goto done;
    }
    double tratio = 4.0;
    if (json_int(tc, "context_length", 77, &cfg->context_len, "text_cfg", err) ||
        json_int(tc, "vocab_size", 49408, &cfg->vocab_size, "text_cfg", err) ||
        json_int(tc, "width", 512, &cfg->text.width, "text_cfg", err) ||
        json_int(tc, "heads", 8, &cfg->text.heads, "text_cfg", err) ||
        json_int(tc, "layers", 12, &cfg->text.layers, "text_cfg", err) ||
        json_num(tc, "mlp_ratio", 4.0, &tratio, "text_cfg", err))
      goto done;
    cfg->text.mlp = mlp_width(cfg->text.width, tratio);
    cfg->text.act = act;
    cfg->has_text = 1;
  }
  snprintf(cfg->name, sizeof cfg->name, "open_clip-json");
  rc = clip_config_validate(cfg, err);
done:
  if (rc) taca_error_prefix(err, "%s", path);
  json_decref(root);
  return rc;
}

static int hf_act(json_t *obj, nn_act *act, const char *where, taca_error *err) {
  json_t *v = obj ? json_object_get(obj, "hidden_act") : NULL;
  const char *s = v ? json_string_value(v) : "quick_gelu";
  if (!s) return taca_fail(err, "%s.hidden_act must be a string", where);
  if (strcmp(s, "quick_gelu") == 0) *act = NN_ACT_QUICK_GELU;
  else if (strcmp(s, "gelu") == 0) *act = NN_ACT_GELU;
  else return taca_fail(err, "%s.hidden_act '%s' is not supported (quick_gelu or gelu)", where, s);
  return 0;
}

int clip_config_hf_json(clip_config *cfg, const char *path, taca_error *err) {
  memset(cfg, 0, sizeof *cfg);
  json_t *root = load_json_object(path, err);
  if (!root) return -1;
  int rc = -1;
  json_t *vc = json_object_get(root, "vision_config"), *tc = json_object_get(root, "text_config");
  if (!json_is_object(vc)) {
    taca_fail(err, "missing object 'vision_config'");
    goto done;
  }
  if (json_int(root, "projection_dim", 512, &cfg->embed_dim, "config", err) ||
      json_int(vc, "hidden_size", 768, &cfg->vision.width, "vision_config", err) ||
      json_int(vc, "intermediate_size", 3072, &cfg->vision.mlp, "vision_config", err) ||
      json_int(vc, "num_hidden_layers", 12, &cfg->vision.layers, "vision_config", err) ||
      json_int(vc, "num_attention_heads", 12, &cfg->vision.heads, "vision_config", err) ||
      json_int(vc, "image_size", 224, &cfg->image_size, "vision_config", err) ||
      json_int(vc, "patch_size", 32, &cfg->patch_size, "vision_config", err) ||
      hf_act(vc, &cfg->vision.act, "vision_config", err) || hf_unsupported(vc, "vision_config", err))
    goto done;
  if (tc) {
    if (!json_is_object(tc)) {
      taca_fail(err, "'text_config' must be an object");
      goto done;
    }
    if (json_int(tc, "hidden_size", 512, &cfg->text.width, "text_config", err) ||
        json_int(tc, "intermediate_size", 2048, &cfg->text.mlp, "text_config", err) ||
        json_int(tc, "num_hidden_layers", 12, &cfg->text.layers, "text_config", err) ||
        json_int(tc, "num_attention_heads", 8, &cfg->text.heads, "text_config", err) ||
        json_int(tc, "max_position_embeddings", 77, &cfg->context_len, "text_config", err) ||
        json_int(tc, "vocab_size", 49408, &cfg->vocab_size, "text_config", err) ||
        hf_act(tc, &cfg->text.act, "text_config", err) || hf_unsupported(tc, "text_config", err))
      goto done;
    cfg->has_text = 1;
  }
  snprintf(cfg->name, sizeof cfg->name, "hf");
  rc = clip_config_validate(cfg, err);
done:
  if (rc) taca_error_prefix(err, "%s", path);
  json_decref(root);
  return rc;
}

static int validate_tower(const clip_tower_config *t, const char *which, taca_error *err) {
  if (t->width <= 0 || t->layers <= 0 || t->heads <= 0 || t->mlp <= 0)
    return taca_fail(err, "%s tower: width, layers, heads and mlp must be positive", which);
  if (t->width > CLIP_MAX_WIDTH || t->mlp > CLIP_MAX_MLP || t->layers > CLIP_MAX_LAYERS)
    return taca_fail(err, "%s tower: width %d, mlp %d, layers %d exceed the limits (%d, %d, %d)", which, t->width,
                     t->mlp, t->layers, CLIP_MAX_WIDTH, CLIP_MAX_MLP, CLIP_MAX_LAYERS);
  if (t->width % t->heads != 0)
    return taca_fail(err, "%s tower: width %d is not divisible by %d heads", which, t->width,
                     t->heads);
  return 0;
}

int clip_config_validate(const clip_config *cfg, taca_error *err) {
  if (validate_tower(&cfg->vision, "vision", err)) return -1;
  if (cfg->patch_size <= 0 || cfg->image_size <= 0 || cfg->image_size % cfg->patch_size != 0)
    return taca_fail(err, "image_size %d is not a multiple of patch_size %d", cfg->image_size,
                     cfg->patch_size);
  if (cfg->patch_size > CLIP_MAX_PATCH)
    return taca_fail(err, "patch_size %d exceeds %d", cfg->patch_size, CLIP_MAX_PATCH);
  long long grid = cfg->image_size / cfg->patch_size;
  if (grid * grid + 1 > CLIP_MAX_TOKENS)
    return taca_fail(err, "image_size %d / patch_size %d gives %lld patches, more than %d", cfg->image_size,
                     cfg->patch_size, grid * grid, CLIP_MAX_TOKENS - 1);
  if (cfg->embed_dim <= 0 || cfg->embed_dim > CLIP_MAX_MLP)
    return taca_fail(err, "embed_dim %d must be in [1, %d]", cfg->embed_dim, CLIP_MAX_MLP);
  if (cfg->has_text) {
    if (validate_tower(&cfg->text, "text", err)) return -1;
    if (cfg->context_len <= 0 || cfg->vocab_size <= 0)
      return taca_fail(err, "text: context_length and vocab_size must be positive");
    if (cfg->context_len > CLIP_MAX_TOKENS)
      return taca_fail(err, "text: context_length %d exceeds %d", cfg->context_len, CLIP_MAX_TOKENS);
  }
  return 0;
}

static long long tower_params(const clip_tower_config *t) {
  long long W = t->width, M = t->mlp;
  long long per_block = 4 * W + 4 * W * W + 4 * W + 2 * W * M + M + W;
  return per_block * t->layers;
}

long long clip_config_vision_params(const clip_config *cfg) {
  long long W = cfg->vision.width, G = cfg->image_size / cfg->patch_size;
  long long P = cfg->patch_size;
  return tower_params(&cfg->vision) + 3 * P * P * W + W + (G * G + 1) * W + 4 * W +
         W * cfg->embed_dim;
}

long long clip_config_text_params(const clip_config *cfg) {
  if (!cfg->has_text) return 0;
  long long W = cfg->text.width;
  return tower_params(&cfg->text) + (long long)cfg->vocab_size * W + (long long)cfg->context_len * W +
         2 * W + W * cfg->embed_dim;
}

int clip_config_from_arg(clip_config *cfg, const char *arch, taca_error *err) {
  size_t n = strlen(arch);
  if (n > 5 && !strcmp(arch + n - 5, ".json")) {
    if (clip_config_open_clip_json(cfg, arch, err) == 0) return 0;
    taca_error e2;
    if (clip_config_hf_json(cfg, arch, &e2) == 0) return 0; /* a HF config.json */
    return -1;
  }
  return clip_config_builtin(cfg, arch, err);
}
