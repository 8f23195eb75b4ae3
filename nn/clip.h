/* clip.h: CLIP models (vision and text towers) loaded from HuggingFace directories or open_clip
 * state dicts, and their forward passes on an nn_backend.
 *
 * Weights are held as a struct of pointers in one canonical layout whatever the file's layout:
 * linear weights [out, in] (nn.Linear), q/k/v as three [W, W] matrices (views into open_clip's packed
 * in_proj_weight, or HF's separate q/k/v_proj), patch embedding as [W, 3*P*P], projections as
 * [embed, W]. On the CPU backend, F32 tensors are used in place from the safetensors mapping;
 * F16/BF16 ones (and transposed projections) are converted once into owned buffers. */
#ifndef TACA_NN_CLIP_H
#define TACA_NN_CLIP_H

#include <stdint.h>

#include "nn/backend.h"
#include "nn/clip_config.h"
#include "base/error.h"
#include "base/safetensors.h"

typedef struct clip_block {
  const float *ln1_w, *ln1_b;
  const float *q_w, *k_w, *v_w; /* [W, W] each */
  const float *q_b, *k_b, *v_b; /* [W] each */
  const float *out_w, *out_b;   /* [W, W], [W] */
  const float *ln2_w, *ln2_b;
  const float *fc1_w, *fc1_b;   /* [M, W], [M] */
  const float *fc2_w, *fc2_b;   /* [W, M], [W] */
  int qkv_fused;                /* set by clip_model_set_precision(BF16) where q|k|v weights and
                                 * biases lie back to back: one [3W, W] GEMM instead of three */
} clip_block;

typedef struct clip_vision_weights {
  const float *patch_w;         /* [W, 3*P*P] (conv weight [W, 3, P, P] viewed flat; no bias) */
  const float *cls;             /* [W] */
  const float *pos;             /* [G*G + 1, W] */
  const float *ln_pre_w, *ln_pre_b;
  clip_block *blocks;           /* [layers] */
  const float *ln_post_w, *ln_post_b;
  const float *proj;            /* [E, W] */
} clip_vision_weights;

typedef struct clip_text_weights {
  const float *tok_emb;         /* [vocab, W] */
  const float *pos;             /* [context, W] */
  clip_block *blocks;
  const float *ln_final_w, *ln_final_b;
  const float *proj;            /* [E, W] */
} clip_text_weights;

typedef enum clip_layout { CLIP_LAYOUT_HF = 1, CLIP_LAYOUT_OPEN_CLIP = 2 } clip_layout;

typedef struct clip_model {
  clip_config cfg;
  clip_layout layout;
  clip_vision_weights vision;
  clip_text_weights text;   /* valid when cfg.has_text */
  float logit_scale;        /* as stored (log of the scale); 0 when absent */
  int has_vision;           /* 0 only for text-only models from clip_model_load_towers */
  nn_backend *be;
  st_file st;
  void **owned;             /* backend buffers this model allocated */
  int n_owned, cap_owned;
  struct clip_workspace *ws;
  nn_precision precision;   /* of its GEMMs: clip_model_set_precision (F32 after loading) */
  const float **bf16_regions; /* weight regions registered with the backend for BF16 */
  int n_bf16;
} clip_model;

/* Loads a model. path is a HF directory (config.json + model.safetensors) or an open_clip
 * .safetensors file, in which case arch (a built-in name or an open_clip config JSON path) is
 * required. Every tensor is checked against the architecture; missing, unexpected (other than
 * *.position_ids) or mis-shaped tensors are errors naming the tensor. */
clip_model *clip_model_load(const char *path, const char *arch, nn_backend *be, taca_error *err);
void clip_model_free(clip_model *m);

/* Sets the arithmetic of the model's GEMMs. BF16: every weight that multiplies activations (patch
 * embedding, q/k/v, attention output, MLP, projections; not the token embedding, LayerNorms, biases)
 * is registered with the backend (backend.h, bf16_register), so converted once to BF16, and those
 * GEMMs run in BF16 with F32 accumulation; everything else stays F32 (torch.autocast on the CPU, but
 * with F32 GEMM outputs). F32 unregisters them: the model computes exactly what it did after
 * loading. Fails when the backend has no BF16 GEMMs or memory runs out (the model stays F32). */
int clip_model_set_precision(clip_model *m, nn_precision p, taca_error *err);

/* Which towers clip_model_load_towers loads. */
#define CLIP_TOWER_VISION 1u
#define CLIP_TOWER_TEXT 2u
/* Loads some towers of a HF-layout safetensors file holding other tensors too (an exported adapted
 * model: methods/encoder.h) with the given architecture (cfg->embed_dim is the width of the loaded
 * towers' projections). Tensors under a loaded tower's prefixes (vision_model., visual_projection.;
 * text_model., text_projection.) must all belong to it; others are left to the caller. A model
 * without the vision tower fails clip_encode_image. */
clip_model *clip_model_load_towers(const char *file, const clip_config *cfg, unsigned towers, nn_backend *be,
                                   taca_error *err);

/* Image features [B, E] (unnormalised, as HF get_image_features) from normalised pixels
 * [B, 3, S, S] (host memory). Workspace grows to the largest B seen. */
int clip_encode_image(clip_model *m, const float *pixels, int B, float *out, taca_error *err);
/* Text features [B, E] from token ids [B, context] (host memory), pooled at the first 49407
 * (or the largest id when absent, as OpenAI's argmax). */
int clip_encode_text(clip_model *m, const int32_t *tokens, int B, float *out, taca_error *err);

/* One residual block forward on [B, T, W] x in place (inference). Scratch buffers: h [B*T*W],
 * qkv [B*T*3W], y [B*T*W], mlp [B*T*M]. Shared by the towers and the trainer. */
void clip_block_forward(nn_backend *be, const clip_block *blk, const clip_tower_config *tc, float *x,
                        float *h, float *qkv, float *y, float *mlp, int B, int T, int causal);

#endif
