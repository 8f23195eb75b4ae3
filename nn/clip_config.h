/* clip_config.h: the architecture of a CLIP model (vision tower, text tower, embedding size),
 * from a HuggingFace config.json, an open_clip model-config JSON, or a built-in open_clip name. */
#ifndef TACA_NN_CLIP_CONFIG_H
#define TACA_NN_CLIP_CONFIG_H

#include "nn/backend.h"
#include "base/error.h"

typedef struct clip_tower_config {
  int width;   /* model width W */
  int layers;  /* residual blocks */
  int heads;   /* attention heads (W / head_width) */
  int mlp;     /* MLP hidden width */
  nn_act act;
} clip_tower_config;

typedef struct clip_config {
  char name[64];          /* arch name or "hf" / "json" */
  clip_tower_config vision;
  int image_size, patch_size;
  clip_tower_config text;
  int context_len, vocab_size;
  int embed_dim;
  int has_text;           /* 0 for vision-only models */
} clip_config;

/* Built-in open_clip architectures: ViT-B-16, ViT-B-32, ViT-L-14, ViT-H-14, ViT-g-14, ViT-bigG-14
 * (exact GELU as in open_clip's configs) and "-quickgelu" variants (OpenAI weights). */
int clip_config_builtin(clip_config *cfg, const char *name, taca_error *err);
/* open_clip model-config JSON file: embed_dim, vision_cfg, text_cfg, quick_gelu. */
int clip_config_open_clip_json(clip_config *cfg, const char *path, taca_error *err);
/* HuggingFace CLIPConfig config.json (missing fields take HF's defaults). */
int clip_config_hf_json(clip_config *cfg, const char *path, taca_error *err);
/* An --arch argument: a built-in name, or a path ending in .json holding an open_clip model config
 * or a HuggingFace config.json. */
int clip_config_from_arg(clip_config *cfg, const char *arch, taca_error *err);
/* Checks internal consistency (positive sizes, heads divide width, patch divides image). */
int clip_config_validate(const clip_config *cfg, taca_error *err);

/* Parameter counts (frozen tower sizes, for reports). */
long long clip_config_vision_params(const clip_config *cfg);
long long clip_config_text_params(const clip_config *cfg);

#endif
