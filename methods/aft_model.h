/* aft_model.h: the downstream model AFT trains (DESIGN.md "AFT, precisely"): a feature extractor
 * whose output F [B, dF] is the "penultimate features" the regulariser sees, and a linear classifier
 * logits = F Wc^T + bc on top. Every tensor is trained. Two extractors:
 *   linear[:D]   F = x Wf^T + bf on the flattened normalised pixels x [B, 3 S S] (D = 64 by default):
 *                the simplest model, a linear map of the image
 *   a ViT        any CLIP vision tower config (built-in name or JSON; nn/clip_train, vision-only,
 *                trained in full), F = its projected image embedding (embed_dim wide)
 * Initialisation as PyTorch's nn.Linear (U(+-1/sqrt(fan_in)) for weights and biases) from the seed;
 * the tower as nn/clip_train initialises a new CLIP vision tower, or from --downstream-init weights.
 *
 * Parameters of the linear parts live in one backend allocation of four flat buffers
 * (params | grads | Adam m | Adam v), weights first (weight decay) then biases, as clip_train does.
 * Forward results and the gradients the caller passes in are host arrays; all else stays in backend
 * memory. */
#ifndef TACA_METHODS_AFT_MODEL_H
#define TACA_METHODS_AFT_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "nn/backend.h"
#include "nn/clip_train.h"
#include "base/error.h"

typedef struct aft_model {
  nn_backend *be;
  int is_vit;            /* 0: linear extractor */
  int S;                 /* input image side */
  int in_dim;            /* linear: 3 S S */
  int feat_dim;          /* dF */
  int classes;
  int max_batch;
  char arch[160];        /* as given */
  clip_train *tower;     /* ViT only */
  size_t n, n_decay;     /* floats per flat buffer; weights are [0, n_decay) */
  float *mem;            /* 4 n floats */
  float *p, *g, *m, *v;
  size_t off_fw, off_fb, off_cw, off_cb; /* tensor offsets within a flat buffer (fw/fb: linear only) */
  long step;
  /* backend activations */
  /* linear: two [max_batch, in_dim] buffers, the forward's input kept for the backward, used in
   * turn: an upload from pinned memory (copy stream) may overlap the previous step's backward and
   * all-reduce, whose weight-gradient GEMM still reads the other buffer (nn/backend_cuda.h). */
  float *pix[2];
  int pix_next;           /* the buffer the next forward uploads into */
  float *feat;           /* linear: [max_batch, dF] (the ViT's are the tower's own) */
  float *logits, *dlogits, *dfeat;
  const float *last_input, *last_feat; /* the forward's input and F (backend memory) */
  int last_B;
} aft_model;

/* arch: "linear", "linear:D", a built-in CLIP name or a JSON config (vision tower used; its image
 * size must equal S, the stored crops' side). */
aft_model *aft_model_create(const char *arch, int S, int classes, nn_backend *be, int max_batch,
                            uint64_t seed, taca_error *err);
void aft_model_free(aft_model *am);
size_t aft_model_param_count(const aft_model *am);

/* Replaces the tower's parameters with a model's weights (ViT only; clip_train_load rules). */
int aft_model_load_tower(aft_model *am, const char *path, const char *arch, taca_error *err);

/* Forward of B <= max_batch normalised images [B, 3, S, S] (host): F [B, dF] and logits [B, C]
 * to host arrays (either may be NULL); keeps what the backward needs. */
int aft_model_forward(aft_model *am, const float *pixels, int B, float *feat, float *logits,
                      taca_error *err);
/* Backward of the last forward: dfeat [B, dF] (the regulariser's gradient, may be NULL) and
 * dlogits [B, C] (host). ACCUMULATES into every parameter's gradient. */
int aft_model_backward(aft_model *am, const float *dfeat, const float *dlogits, taca_error *err);

void aft_model_zero_grad(aft_model *am);
/* The gradient buffers (backend memory) for an all-reduce: up to 2 (tower, then the linear parts). */
int aft_model_grad_buffers(aft_model *am, float **bufs, size_t *lens);
/* One AdamW step (betas 0.9/0.999, eps 1e-8, torch.optim.AdamW) with weight decay on weight
 * matrices only. */
void aft_model_update(aft_model *am, double lr, double weight_decay);

/* Adds every parameter as F32 to a safetensors writer (host copies kept in *owned until the save;
 * owned: an array of 2 pointers, free them after st_writer_save): the tower's HF names, "features.weight|bias" (linear) and
 * "classifier.weight|bias". */
struct st_writer;
int aft_model_add_tensors(const aft_model *am, struct st_writer *w, float **owned, taca_error *err);

/* The whole training state for --resume, as flat F32 arrays: "tower.p|m|v" (ViT) and "model.p|m|v"
 * (parameters and AdamW moments, in buffer order); owned: an array of 6 pointers to free after the
 * save. The update counts go in metadata (aft_model_state_meta: "taca.model_step" and
 * "taca.tower_step", strings in buf). */
int aft_model_add_state(const aft_model *am, struct st_writer *w, float **owned, taca_error *err);
/* Restores what aft_model_add_state wrote (sizes checked) and the update counts from meta. */
struct st_file;
int aft_model_load_state(aft_model *am, const struct st_file *f, taca_error *err);

#endif
