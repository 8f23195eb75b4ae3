/* clip_train.h: full-parameter training of a CLIP model (vision tower, and the text tower with the
 * logit scale when the config has one) on an nn_backend: every tensor of both towers gets a weight
 * gradient. Used by `taca pretrain` (CLIP-style training of the demo's old and new models) and,
 * vision-only (cfg->has_text = 0), as the downstream ViT of AFT.
 *
 * Parameters, in the llm.c manner: ONE backend allocation holding four flat buffers of identical
 * layout (parameters | gradients | AdamW m | AdamW v) and a struct of pointers (clip_train_tensors)
 * into each. Tensors start 64-byte aligned, except that q, k and v of a block are adjacent so that
 * they form open_clip's packed in_proj ([3W, W] weight, [3W] bias) and one GEMM computes all three.
 * The tensors that take weight decay (every tensor with 2 or more dimensions, open_clip's rule:
 * no decay for gains, biases, the class embedding and the logit scale) come first, so the two
 * optimizer groups are the ranges [0, n_decay) and [n_decay, n) of each buffer.
 *
 * Initialisation (deterministic in the seed; normals by Box-Muller from splitmix64), as OpenAI
 * CLIP / open_clip initialise a new model (W = tower width, L = its layers, M = MLP width):
 *   vision (VisionTransformer.__init__; its blocks keep PyTorch's module defaults):
 *     class_embedding, positional_embedding, proj ~ N(0, W^-1/2); conv1 ~ U(+-1/sqrt(3 P^2));
 *     in_proj (q, k, v) ~ xavier U(+-sqrt(6 / 4W)), in_proj/out_proj biases 0;
 *     out_proj.weight, c_fc, c_proj weight and bias ~ U(+-1/sqrt(fan_in)) (nn.Linear default)
 *   text (CLIP.initialize_parameters): token_embedding ~ N(0, 0.02), positional ~ N(0, 0.01),
 *     in_proj ~ N(0, W^-1/2), out_proj.weight and c_proj.weight ~ N(0, W^-1/2 (2L)^-1/2),
 *     c_fc.weight ~ N(0, (2W)^-1/2), text_projection ~ N(0, W^-1/2); biases as in vision
 *   LayerNorm gains 1, biases 0; logit_scale = ln(1 / 0.07).
 *
 * Forward passes save what the backward needs (per block: the block input, both LayerNorms'
 * outputs and statistics, q|k|v, the attention probabilities and output, the MLP pre-activation and
 * activation: 7 N W + 2 N M + B H T^2 floats, N = B T). The text tower runs over the first
 * max(pool) + 1 positions only (pool = the first end-of-text id 49407, else the position of the
 * largest id, as clip_forward.c): with the causal mask nothing after it reaches the pooled token.
 * Every buffer is allocated once by clip_train_create for max_batch samples: forward, backward and
 * update never allocate (except the text forward's sort of token ids, done in place).
 *
 * The backward of the token embedding (repeated ids) sorts the batch's positions by token id and
 * sums each id's rows with column sums: everything goes through nn_backend ops. */
#ifndef TACA_NN_CLIP_TRAIN_H
#define TACA_NN_CLIP_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "nn/backend.h"
#include "nn/clip_config.h"
#include "nn/clip_loss.h"
#include "base/error.h"

typedef struct clip_train_block {
  float *ln1_w, *ln1_b;
  float *qkv_w, *qkv_b; /* [3W, W], [3W]: q | k | v rows (HF q_proj, k_proj, v_proj) */
  float *out_w, *out_b; /* [W, W], [W] */
  float *ln2_w, *ln2_b;
  float *fc1_w, *fc1_b; /* [M, W], [M] */
  float *fc2_w, *fc2_b; /* [W, M], [W] */
} clip_train_block;

/* One view (parameters, gradients or a moment) of every tensor. Text fields are NULL for
 * vision-only models. */
typedef struct clip_train_tensors {
  float *patch_w;               /* [W, 3, P, P] */
  float *cls;                   /* [W] */
  float *vpos;                  /* [G*G + 1, W] */
  float *ln_pre_w, *ln_pre_b;
  clip_train_block *vblocks;    /* [vision layers] */
  float *ln_post_w, *ln_post_b;
  float *vproj;                 /* [E, W] (HF visual_projection.weight) */
  float *tok_emb;               /* [vocab, W] */
  float *tpos;                  /* [context, W] */
  clip_train_block *tblocks;    /* [text layers] */
  float *ln_final_w, *ln_final_b;
  float *tproj;                 /* [E, W] (HF text_projection.weight) */
  float *logit_scale;           /* [1] */
} clip_train_tensors;

typedef struct clip_train_tensor_info {
  char name[128];   /* HuggingFace key (q, k, v are separate entries, adjacent in the buffers) */
  int ndim;         /* 0 for logit_scale */
  int64_t shape[4];
  size_t offset;    /* in floats, the same in each of the four flat buffers */
  size_t numel;
  int decay;        /* weight decay applies (ndim >= 2) */
  int init;         /* how it is initialised: see clip_train.c */
  float init_a;     /* std, bound or constant */
} clip_train_tensor_info;

typedef struct clip_train_optim {
  double lr;           /* this step's learning rate */
  double beta1, beta2; /* open_clip: 0.9, 0.98 */
  double eps;          /* open_clip: 1e-6 */
  double weight_decay; /* on the decay group only; open_clip: 0.2 */
} clip_train_optim;

struct clip_train_tower;

typedef struct clip_train {
  clip_config cfg;
  nn_backend *be;
  int max_batch;
  int n_tensors;
  clip_train_tensor_info *info; /* in flat-buffer order */
  size_t n;                     /* floats per flat buffer */
  size_t n_decay;               /* [0, n_decay): the weight-decay group */
  float *mem;                   /* the one parameter allocation: 4 n floats */
  float *flat_p, *flat_g, *flat_m, *flat_v;
  clip_train_tensors p, g, m, v;
  long step;                    /* optimizer updates applied */
  struct clip_train_tower *vis, *txt; /* activations (txt NULL when vision-only) */
  float *host_img, *host_txt, *host_dimg, *host_dtxt; /* [max_batch, E] host, for the loss */
  double *loss_work;
} clip_train;

/* Number of trainable scalars of an architecture (no allocation). */
size_t clip_train_param_count(const clip_config *cfg);

/* Allocates the parameters (initialised from seed as described above; gradients and moments zero,
 * step 0) and the activations for up to max_batch samples per tower. Checks the config. */
clip_train *clip_train_create(const clip_config *cfg, nn_backend *be, int max_batch, uint64_t seed,
                              taca_error *err);
void clip_train_free(clip_train *ct);

/* Bytes of backend memory the parameters (4 buffers) and the activations take. */
size_t clip_train_memory_bytes(const clip_train *ct);

/* Replaces the parameters with a model's weights (any file clip_model_load reads: HF directory, or
 * open_clip state dict with arch). Its architecture must equal ct's (same sizes and activation);
 * a vision-only ct may load the vision tower of a full model. Moments and step are not touched. */
int clip_train_load(clip_train *ct, const char *path, const char *arch, taca_error *err);

/* Writes the model as a HuggingFace CLIP directory (config.json + model.safetensors, F32, the key
 * names nn/clip_load.c reads), atomically: everything goes into DIR.tmp, which then replaces DIR
 * (rename, or an atomic exchange with an existing DIR whose old files are then removed). meta:
 * NULL or NULL-terminated key, value pairs for the safetensors __metadata__. */
int clip_train_save_hf(const clip_train *ct, const char *dir, const char *const *meta,
                       taca_error *err);

/* The HF config.json of cfg (newly allocated string, free()). */
char *clip_train_hf_config_json(const clip_config *cfg);

void clip_train_zero_grad(clip_train *ct);

/* Training forward of B <= max_batch images [B, 3, S, S] (host, normalised): returns the image
 * features [B, E] in backend memory owned by ct (valid until the next image forward), saving the
 * activations for clip_train_image_backward. */
const float *clip_train_image_forward(clip_train *ct, const float *pixels, int B, taca_error *err);
/* Backward of the last image forward from dfeats [B, E] (backend memory): ACCUMULATES the gradient
 * of every vision tensor. */
int clip_train_image_backward(clip_train *ct, const float *dfeats, taca_error *err);

/* Training forward of token ids [B, context] (host; every id in [0, vocab)): text features [B, E]
 * in backend memory owned by ct. */
const float *clip_train_text_forward(clip_train *ct, const int32_t *tokens, int B, taca_error *err);
int clip_train_text_backward(clip_train *ct, const float *dfeats, taca_error *err);

/* One CLIP training step's forward and backward on a batch of B pairs: both towers, the
 * contrastive loss with the current logit scale (clip_loss.h), and the gradients of every tensor
 * (accumulated: zero them first). */
int clip_train_step(clip_train *ct, const float *pixels, const int32_t *tokens, int B,
                    clip_loss_result *r, taca_error *err);

/* One AdamW update (torch.optim.AdamW; the decay group with o->weight_decay, the rest with 0),
 * then clamps logit_scale to [0, ln 100] as open_clip does after each step. Increments step. */
void clip_train_update(clip_train *ct, const clip_train_optim *o);

/* Current logit scale (log of the multiplier), read from the backend. */
float clip_train_logit_scale(const clip_train *ct);

#endif
