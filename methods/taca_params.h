/* taca_params.h: TaCA's trainable tensors (adapters or LoRA in the new vision tower, and the
 * projector) with their gradients and AdamW moments, in the llm.c manner: ONE backend allocation
 * holding four flat buffers of identical layout (parameters | gradients | m | v), and a struct of
 * pointers into each. The gradient buffer is contiguous, so data-parallel ranks all-reduce it in one
 * call (SUM; see methods/taca_loss.h for why SUM is exact).
 *
 * Their files (names, layouts, metadata) are methods/taca_checkpoint.h.
 *
 * Initialisation (seeded, deterministic): like nn.Linear's default, weight and bias ~ U(-1/sqrt(in),
 * 1/sqrt(in)) (kaiming-uniform with a = sqrt 5), for adapter down and both projector layers; adapter
 * up weight and bias = 0, so training starts exactly at the frozen new model. LoRA: A like
 * nn.Linear's weight, B = 0 (as HF peft). Random numbers: splitmix64(seed), one 24-bit uniform per
 * element, tensor by tensor in the order of the flat buffer. */
#ifndef TACA_METHODS_TACA_PARAMS_H
#define TACA_METHODS_TACA_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "nn/clip_config.h"
#include "methods/projector.h"
#include "nn/vit_train.h"

typedef struct taca_param_config {
  int layers, width;    /* the new vision tower */
  int e_new;            /* its embedding size: projector input */
  int proj_hidden;      /* projector hidden width (4096) */
  int e_old;            /* the old model's embedding size: projector output */
  vit_peft_config peft; /* adapters (default) or LoRA, and in which blocks */
} taca_param_config;

/* DESIGN.md defaults for a new tower: adapters in every block, bottleneck 128 (256 for widths
 * above 1024), projector hidden 4096; LoRA fields set to rank 8, alpha 8 for --peft lora. */
void taca_param_config_default(taca_param_config *c, const clip_config *new_cfg, int e_old);

/* Parses --adapter-layers: "all", "A-B" or "A" (1-based, inclusive, 1 <= A <= B <= layers) into the
 * 0-based inclusive range [*first, *last]. */
int taca_parse_layer_range(const char *spec, int layers, int *first, int *last, taca_error *err);

/* Number of trainable scalars (the paper's Table 1 count; no allocation). */
size_t taca_param_count(const taca_param_config *c);

typedef struct taca_tensors {
  vit_block_peft *blocks; /* [layers]; all NULL outside the PEFT range */
  projector_weights proj;
} taca_tensors;

typedef struct taca_tensor_info {
  char name[48];   /* checkpoint name */
  int ndim;
  int64_t shape[2];
  size_t offset;   /* in floats, the same in each of the four flat buffers */
  size_t numel;
  int fan_in;      /* > 0: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) init; 0: zero init */
} taca_tensor_info;

typedef struct taca_params {
  taca_param_config cfg;
  nn_backend *be;
  int n_tensors;
  taca_tensor_info *info; /* in flat-buffer order */
  size_t n;               /* floats per flat buffer (tensors start 64-byte aligned; padding is 0) */
  float *mem;             /* the one backend allocation: 4 n floats */
  float *flat_p, *flat_g, *flat_m, *flat_v; /* mem + 0, n, 2n, 3n */
  taca_tensors p, g, m, v;                  /* views of the four buffers */
  long step;              /* AdamW updates applied so far */
} taca_params;

typedef struct taca_adamw_config {
  double lr;           /* 2e-4 */
  double beta1, beta2; /* 0.9, 0.999 */
  double eps;          /* 1e-8 */
  double weight_decay; /* decoupled, on every trainable tensor; torch's AdamW default 0.01 */
} taca_adamw_config;

/* Allocates and initialises from seed (gradients and moments zero, step 0). On error *P is left
 * freed-safe (taca_params_free may be called). */
int taca_params_create(taca_params *P, const taca_param_config *cfg, nn_backend *be, uint64_t seed,
                       taca_error *err);
void taca_params_free(taca_params *P);

void taca_params_zero_grad(taca_params *P);
/* One AdamW update of every parameter from the gradient buffer; increments P->step first. */
void taca_params_adamw(taca_params *P, const taca_adamw_config *c);

#endif
