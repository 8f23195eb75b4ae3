/* vit_train.h: a frozen CLIP vision tower with trainable parameter-efficient modules (bottleneck
 * adapters or LoRA on q/v) in a range of blocks: forward that saves what the backward needs, and the
 * backward from the image embedding to the gradients of those modules only.
 *
 * The tower's own weights get no gradients (none is computed: frozen linears cost only their
 * input-gradient GEMM); backpropagation stops at the lowest block that carries a trainable module.
 *
 * Modules (PyTorch nn.Linear layouts, W = tower width):
 *   adapter on the output x of block l:  x <- x + up_w . GELU(down_w . x + down_b) + up_b
 *       down_w [k, W], down_b [k], up_w [W, k], up_b [W]; GELU exact (erf).
 *   LoRA on the q and v projections of block l (Table 5's alternative):
 *       q <- q + (alpha / r) . B . A . h,  v likewise;  A [r, W], B [W, r]  (h = ln_1 output).
 *
 * Memory: activations of every block from the first trainable one up are kept for the backward
 * (per block 6 N W + N M + B H T^2 floats, + 2 N k with an adapter, + N W + 2 N r with LoRA;
 * N = B T tokens; ViT-B/16 at batch 8: ~64 MiB per block). With recompute set, only each
 * block's input is kept and the block's forward is re-run during the backward (one extra forward
 * pass, for towers/batches whose activations do not fit). All buffers are allocated once by
 * vit_train_create for max_batch images: forward/backward never allocate. */
#ifndef TACA_NN_VIT_TRAIN_H
#define TACA_NN_VIT_TRAIN_H

#include <stddef.h>

#include "nn/clip.h"

typedef enum vit_peft_kind { VIT_PEFT_ADAPTER = 0, VIT_PEFT_LORA = 1 } vit_peft_kind;

typedef struct vit_peft_config {
  vit_peft_kind kind;
  int first, last;  /* 0-based, inclusive range of blocks that carry a module */
  int bottleneck;   /* adapter width k */
  int lora_rank;    /* r */
  float lora_alpha; /* LoRA scale is lora_alpha / lora_rank */
} vit_peft_config;

/* The trainable tensors of one block: pointers into the caller's flat buffer. The same struct
 * points at parameters, gradients or optimizer moments. Blocks outside the range have all NULL;
 * inside it, the adapter fields (kind ADAPTER) or the LoRA fields (kind LORA) are set. */
typedef struct vit_block_peft {
  float *down_w, *down_b, *up_w, *up_b; /* adapter */
  float *q_A, *q_B, *v_A, *v_B;         /* LoRA */
} vit_block_peft;

typedef struct vit_train vit_train;

/* Builds the training state for the vision tower of m (which must outlive it) and allocates every
 * activation buffer for up to max_batch images. Checks the PEFT range against the tower. */
vit_train *vit_train_create(const clip_model *m, const vit_peft_config *peft, int max_batch,
                            int recompute, taca_error *err);
void vit_train_free(vit_train *vt);

/* Bytes of backend memory the activations and workspaces take. */
size_t vit_train_memory_bytes(const vit_train *vt);

/* Forward of B <= max_batch images: pixels [B, 3, S, S] (host, normalised) -> feats [B, E] (backend
 * memory): the projected image embeddings, as clip_encode_image with the modules applied. peft has
 * one entry per block of the tower. Saves the activations for vit_train_backward. */
int vit_train_forward(vit_train *vt, const vit_block_peft *peft, const float *pixels, int B,
                      float *feats, taca_error *err);

/* Backward of the last forward (same peft, same batch): from dfeats [B, E] (backend memory),
 * ACCUMULATES the gradients of the modules into grads (one entry per block; zero them per step). */
int vit_train_backward(vit_train *vt, const vit_block_peft *peft, const vit_block_peft *grads,
                       const float *dfeats, taca_error *err);

#endif
