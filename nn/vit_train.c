/* vit_train.c: training forward (saving activations) and backward of a frozen CLIP vision tower
 * with adapters or LoRA (see vit_train.h).
 *
 * Buffers: one backend allocation, carved into
 *   xs[l]       [N, W]  input of block l, for first <= l <= layers (xs[layers] = final tokens)
 *   acts[l]             what block l's backward needs (shared by all blocks when recomputing)
 *   head                pooled class tokens, ln_post statistics
 *   scratch             h, y [N, W]; m [N, M]; qkv [N, 3W]; att [B, H, T, T]; k [N, max(k, r)];
 *                       dres [N, W] (gradient of the residual stream); io (im2col, pixel upload)
 * N = B T tokens. Scratch is shared by the forward and the backward: nothing in it outlives a
 * block, except dres, which only the backward uses. */
#include "nn/vit_train.h"

#include <stdlib.h>
#include <string.h>

typedef struct block_acts {
  float *x_in;            /* [N, W] block input (one of xs) */
  float *mean1, *rstd1;   /* [N] ln_1 statistics */
  float *h1;              /* [N, W] ln_1 output, kept for LoRA's dA (NULL otherwise) */
  float *qkv;             /* [N, 3W] */
  float *la_q, *la_v;     /* [N, r] (alpha / r) h1 A^T (LoRA) */
  float *att;             /* [B, H, T, T] softmax probabilities */
  float *x_mid;           /* [N, W] x_in + attention */
  float *mean2, *rstd2;   /* [N] ln_2 statistics */
  float *pre;             /* [N, M] fc1 output incl. bias, before the activation */
  float *x_out;           /* [N, W] block output before the adapter */
  float *ad_pre, *ad_hid; /* [N, k] adapter pre-activation and GELU output */
} block_acts;

struct vit_train {
  const clip_model *m;
  nn_backend *be;
  vit_peft_config peft;
  int max_batch, recompute;
  int L, W, M, H, T, S, P, G2, E, K; /* K = adapter bottleneck or LoRA rank */
  int B;                             /* batch of the last forward; 0 before the first */
  float *mem;
  size_t mem_floats;
  float **xs;       /* [L + 1] */
  block_acts *acts; /* [L] (entries below peft.first unused) */
  float *pooled, *post_mean, *post_rstd, *post_h;
  float *s_h, *s_y, *s_m, *s_qkv, *s_att, *s_k, *dres, *io, *pix;
  int64_t *rows; /* [max_batch] host: row of each image's class token */
};

typedef struct carver {
  float *base;
  size_t off;
} carver;

/* Next n floats (64-byte aligned); NULL while only counting. */
static float *take(carver *c, size_t n) {
  float *p = c->base ? c->base + c->off : NULL;
  c->off += (n + 15) & ~(size_t)15;
  return p;
}

static int has_adapter(const vit_train *vt, int l) {
  return vt->peft.kind == VIT_PEFT_ADAPTER && l >= vt->peft.first && l <= vt->peft.last;
}

static int has_lora(const vit_train *vt, int l) {
  return vt->peft.kind == VIT_PEFT_LORA && l >= vt->peft.first && l <= vt->peft.last;
}

static void layout(vit_train *vt, carver *c) {
  const size_t B = vt->max_batch, N = B * vt->T, W = vt->W, K = vt->K;
  const int first = vt->peft.first, lora = vt->peft.kind == VIT_PEFT_LORA;
  for (int l = first; l <= vt->L; l++) vt->xs[l] = take(c, N * W);
  for (int l = first; l < vt->L; l++) {
    block_acts *a = &vt->acts[l];
    if (vt->recompute && l > first) {
      *a = vt->acts[first];
    } else {
      a->mean1 = take(c, N), a->rstd1 = take(c, N);
      a->h1 = lora ? take(c, N * W) : NULL;
      a->qkv = take(c, N * 3 * W);
      a->la_q = lora ? take(c, N * K) : NULL;
      a->la_v = lora ? take(c, N * K) : NULL;
      a->att = take(c, B * vt->H * vt->T * vt->T);
      a->x_mid = take(c, N * W);
      a->mean2 = take(c, N), a->rstd2 = take(c, N);
      a->pre = take(c, N * vt->M);
      int adapter = vt->recompute ? !lora : has_adapter(vt, l);
      a->x_out = adapter || vt->recompute ? take(c, N * W) : vt->xs[l + 1];
      a->ad_pre = adapter ? take(c, N * K) : NULL;
      a->ad_hid = adapter ? take(c, N * K) : NULL;
    }
    a->x_in = vt->xs[l];
  }
  vt->pooled = take(c, B * W);
  vt->post_h = take(c, B * W);
  vt->post_mean = take(c, B), vt->post_rstd = take(c, B);
  vt->s_h = take(c, N * W), vt->s_y = take(c, N * W), vt->dres = take(c, N * W);
  vt->s_m = take(c, N * vt->M);
  vt->s_qkv = take(c, N * 3 * W);
  vt->s_att = take(c, B * vt->H * vt->T * vt->T);
  vt->s_k = take(c, N * K);
  vt->io = take(c, B * 3 * vt->S * vt->S);
  vt->pix = vt->be->host_memory ? NULL : take(c, B * 3 * vt->S * vt->S);
}

vit_train *vit_train_create(const clip_model *m, const vit_peft_config *peft, int max_batch,
                            int recompute, taca_error *err) {
  const clip_config *c = &m->cfg;
  const int L = c->vision.layers;
  if (max_batch <= 0) {
    taca_fail(err, "vit_train: max_batch must be positive (got %d)", max_batch);
    return NULL;
  }
  if (peft->first < 0 || peft->last < peft->first || peft->last >= L) {
    taca_fail(err, "vit_train: block range %d-%d (1-based) is outside the tower's 1-%d",
              peft->first + 1, peft->last + 1, L);
    return NULL;
  }
  if (peft->kind == VIT_PEFT_ADAPTER && peft->bottleneck <= 0) {
    taca_fail(err, "vit_train: adapter bottleneck must be positive (got %d)", peft->bottleneck);
    return NULL;
  }
  if (peft->kind == VIT_PEFT_LORA && peft->lora_rank <= 0) {
    taca_fail(err, "vit_train: LoRA rank must be positive (got %d)", peft->lora_rank);
    return NULL;
  }
  if (peft->kind != VIT_PEFT_ADAPTER && peft->kind != VIT_PEFT_LORA) {
    taca_fail(err, "vit_train: unknown PEFT kind %d", (int)peft->kind);
    return NULL;
  }
  vit_train *vt = calloc(1, sizeof *vt);
  if (!vt) goto oom;
  vt->m = m;
  vt->be = m->be;
  vt->peft = *peft;
  vt->max_batch = max_batch;
  vt->recompute = recompute != 0;
  vt->L = L, vt->W = c->vision.width, vt->M = c->vision.mlp, vt->H = c->vision.heads;
  vt->S = c->image_size, vt->P = c->patch_size;
  vt->G2 = (vt->S / vt->P) * (vt->S / vt->P);
  vt->T = vt->G2 + 1, vt->E = c->embed_dim;
  vt->K = peft->kind == VIT_PEFT_ADAPTER ? peft->bottleneck : peft->lora_rank;
  vt->xs = calloc(L + 1, sizeof *vt->xs);
  vt->acts = calloc(L, sizeof *vt->acts);
  vt->rows = malloc(sizeof *vt->rows * max_batch);
  if (!vt->xs || !vt->acts || !vt->rows) goto oom;
  for (int b = 0; b < max_batch; b++) vt->rows[b] = (int64_t)b * vt->T;
  carver count = {NULL, 0};
  layout(vt, &count);
  vt->mem_floats = count.off;
  vt->mem = vt->be->alloc(vt->be, vt->mem_floats * sizeof(float));
  if (!vt->mem) {
    taca_fail(err, "vit_train: out of memory for activations (%.1f MiB for %d images%s)",
              vt->mem_floats * 4.0 / (1 << 20), max_batch,
              recompute ? "" : "; activation recomputation would need less");
    vit_train_free(vt);
    return NULL;
  }
  carver carve = {vt->mem, 0};
  layout(vt, &carve);
  return vt;
oom:
  vit_train_free(vt);
  taca_fail(err, "vit_train: out of memory");
  return NULL;
}

void vit_train_free(vit_train *vt) {
  if (!vt) return;
  if (vt->mem) vt->be->free(vt->be, vt->mem);
  free(vt->xs);
  free(vt->acts);
  free(vt->rows);
  free(vt);
}

size_t vit_train_memory_bytes(const vit_train *vt) { return vt->mem_floats * sizeof(float); }

static int packed_qkv(const clip_block *blk, int W) {
  const size_t WW = (size_t)W * W;
  return blk->k_w == blk->q_w + WW && blk->v_w == blk->k_w + WW && blk->k_b == blk->q_b + W &&
         blk->v_b == blk->k_b + W;
}

/* Block l's forward from x_in, saving into a; the block's final output (adapter applied) goes to
 * x_next unless it is NULL (re-running the block during the backward). */
static void block_forward(vit_train *vt, int l, const vit_block_peft *pp, block_acts *a,
                          const float *x_in, float *x_next, int B) {
  nn_backend *be = vt->be;
  const clip_block *blk = &vt->m->vision.blocks[l];
  const int W = vt->W, M = vt->M, N = B * vt->T, K = vt->K;
  float *h1 = a->h1 ? a->h1 : vt->s_h;
  be->layernorm_forward(be, h1, a->mean1, a->rstd1, x_in, blk->ln1_w, blk->ln1_b, N, W);
  if (packed_qkv(blk, W)) {
    be->linear_forward(be, a->qkv, 3 * W, h1, W, blk->q_w, blk->q_b, N, W, 3 * W, 0);
  } else {
    be->linear_forward(be, a->qkv, 3 * W, h1, W, blk->q_w, blk->q_b, N, W, W, 0);
    be->linear_forward(be, a->qkv + W, 3 * W, h1, W, blk->k_w, blk->k_b, N, W, W, 0);
    be->linear_forward(be, a->qkv + 2 * W, 3 * W, h1, W, blk->v_w, blk->v_b, N, W, W, 0);
  }
  if (has_lora(vt, l)) {
    const float s = vt->peft.lora_alpha / vt->peft.lora_rank;
    be->linear_forward(be, a->la_q, K, h1, W, pp->q_A, NULL, N, W, K, 0);
    be->scale(be, a->la_q, (size_t)N * K, s);
    be->linear_forward(be, a->qkv, 3 * W, a->la_q, K, pp->q_B, NULL, N, K, W, 1);
    be->linear_forward(be, a->la_v, K, h1, W, pp->v_A, NULL, N, W, K, 0);
    be->scale(be, a->la_v, (size_t)N * K, s);
    be->linear_forward(be, a->qkv + 2 * W, 3 * W, a->la_v, K, pp->v_B, NULL, N, K, W, 1);
  }
  be->attention_forward(be, vt->s_y, a->att, a->qkv, B, vt->T, W, vt->H, 0);
  be->copy(be, a->x_mid, x_in, sizeof(float) * N * W);
  be->linear_forward(be, a->x_mid, W, vt->s_y, W, blk->out_w, blk->out_b, N, W, W, 1);
  be->layernorm_forward(be, vt->s_h, a->mean2, a->rstd2, a->x_mid, blk->ln2_w, blk->ln2_b, N, W);
  be->linear_forward(be, a->pre, M, vt->s_h, W, blk->fc1_w, NULL, N, W, M, 0);
  be->bias_act_forward_pre(be, vt->s_m, a->pre, blk->fc1_b, (size_t)N, M, vt->m->cfg.vision.act);
  be->copy(be, a->x_out, a->x_mid, sizeof(float) * N * W);
  be->linear_forward(be, a->x_out, W, vt->s_m, M, blk->fc2_w, blk->fc2_b, N, M, W, 1);
  if (has_adapter(vt, l)) {
    be->linear_forward(be, a->ad_pre, K, a->x_out, W, pp->down_w, NULL, N, W, K, 0);
    be->bias_act_forward_pre(be, a->ad_hid, a->ad_pre, pp->down_b, (size_t)N, K, NN_ACT_GELU);
    if (x_next) {
      be->copy(be, x_next, a->x_out, sizeof(float) * N * W);
      be->linear_forward(be, x_next, W, a->ad_hid, K, pp->up_w, pp->up_b, N, K, W, 1);
    }
  } else if (x_next && x_next != a->x_out) {
    be->copy(be, x_next, a->x_out, sizeof(float) * N * W);
  }
}

/* Block l's backward: vt->dres holds dL/d(block output, adapter applied) and becomes dL/d(x_in)
 * unless l is the lowest trainable block (nothing below needs it). */
static void block_backward(vit_train *vt, int l, const vit_block_peft *pp, const vit_block_peft *gp,
                           const block_acts *a, int B) {
  nn_backend *be = vt->be;
  const clip_block *blk = &vt->m->vision.blocks[l];
  const int W = vt->W, M = vt->M, N = B * vt->T, K = vt->K, first = vt->peft.first;
  float *dres = vt->dres;
  if (has_adapter(vt, l)) {
    be->linear_backward(be, vt->s_k, K, gp->up_w, gp->up_b, dres, W, a->ad_hid, K, pp->up_w, N, K,
                        W, 0);
    be->act_backward(be, vt->s_k, vt->s_k, a->ad_pre, (size_t)N * K, NN_ACT_GELU);
    be->linear_backward(be, dres, W, gp->down_w, gp->down_b, vt->s_k, K, a->x_out, W, pp->down_w,
                        N, W, K, 1);
    if (l == first) return; /* the adapter sits after the block: nothing below is trainable */
  }
  /* MLP: x_out = x_mid + fc2(act(fc1(ln_2(x_mid)))). */
  be->linear_backward(be, vt->s_m, M, NULL, NULL, dres, W, NULL, 0, blk->fc2_w, N, M, W, 0);
  be->act_backward(be, vt->s_m, vt->s_m, a->pre, (size_t)N * M, vt->m->cfg.vision.act);
  be->linear_backward(be, vt->s_h, W, NULL, NULL, vt->s_m, M, NULL, 0, blk->fc1_w, N, W, M, 0);
  be->layernorm_backward(be, dres, NULL, NULL, vt->s_h, a->x_mid, a->mean2, a->rstd2, blk->ln2_w,
                         N, W);
  /* Attention: x_mid = x_in + out_proj(attention(qkv(ln_1(x_in)))). */
  be->linear_backward(be, vt->s_y, W, NULL, NULL, dres, W, NULL, 0, blk->out_w, N, W, W, 0);
  be->attention_backward(be, vt->s_qkv, vt->s_att, vt->s_y, a->qkv, a->att, B, vt->T, W, vt->H, 0);
  const int need_dx = l > first;
  float *dh = vt->s_h;
  if (need_dx) {
    if (packed_qkv(blk, W)) {
      be->linear_backward(be, dh, W, NULL, NULL, vt->s_qkv, 3 * W, NULL, 0, blk->q_w, N, W, 3 * W,
                          0);
    } else {
      be->linear_backward(be, dh, W, NULL, NULL, vt->s_qkv, 3 * W, NULL, 0, blk->q_w, N, W, W, 0);
      be->linear_backward(be, dh, W, NULL, NULL, vt->s_qkv + W, 3 * W, NULL, 0, blk->k_w, N, W, W,
                          1);
      be->linear_backward(be, dh, W, NULL, NULL, vt->s_qkv + 2 * W, 3 * W, NULL, 0, blk->v_w, N, W,
                          W, 1);
    }
  }
  if (has_lora(vt, l)) {
    const float s = vt->peft.lora_alpha / vt->peft.lora_rank;
    for (int which = 0; which < 2; which++) {
      const float *dproj = vt->s_qkv + (which ? 2 * W : 0);
      const float *la = which ? a->la_v : a->la_q;
      const float *A = which ? pp->v_A : pp->q_A, *Bw = which ? pp->v_B : pp->q_B;
      float *gA = which ? gp->v_A : gp->q_A, *gB = which ? gp->v_B : gp->q_B;
      /* proj += la . B^T with la = s h1 A^T. */
      be->linear_backward(be, vt->s_k, K, gB, NULL, dproj, 3 * W, la, K, Bw, N, K, W, 0);
      be->scale(be, vt->s_k, (size_t)N * K, s);
      be->linear_backward(be, need_dx ? dh : NULL, W, gA, NULL, vt->s_k, K, a->h1, W, A, N, W, K,
                          1);
    }
  }
  if (need_dx)
    be->layernorm_backward(be, dres, NULL, NULL, dh, a->x_in, a->mean1, a->rstd1, blk->ln1_w, N,
                           W);
}

static int check_peft(const vit_train *vt, const vit_block_peft *peft, const char *what,
                      taca_error *err) {
  for (int l = vt->peft.first; l <= vt->peft.last; l++) {
    const vit_block_peft *p = &peft[l];
    int ok = vt->peft.kind == VIT_PEFT_ADAPTER ? p->down_w && p->down_b && p->up_w && p->up_b
                                               : p->q_A && p->q_B && p->v_A && p->v_B;
    if (!ok) return taca_fail(err, "vit_train: block %d has no %s %s", l, what,
                              vt->peft.kind == VIT_PEFT_ADAPTER ? "adapter" : "LoRA");
  }
  return 0;
}

int vit_train_forward(vit_train *vt, const vit_block_peft *peft, const float *pixels, int B,
                      float *feats, taca_error *err) {
  if (B <= 0 || B > vt->max_batch)
    return taca_fail(err, "vit_train: batch %d is outside 1..%d (the size it was created for)", B,
                     vt->max_batch);
  if (check_peft(vt, peft, "parameters for its", err)) return -1;
  nn_backend *be = vt->be;
  const clip_vision_weights *v = &vt->m->vision;
  const int W = vt->W, P = vt->P, first = vt->peft.first;
  const float *pix = pixels;
  if (!be->host_memory) {
    be->upload(be, vt->pix, pixels, sizeof(float) * B * 3 * vt->S * vt->S);
    pix = vt->pix;
  }
  /* Embedding and the frozen blocks below the first trainable one, in place (inference). */
  be->im2col_patches(be, vt->io, pix, B, vt->S, P);
  be->linear_forward(be, vt->s_y, W, vt->io, 3 * P * P, v->patch_w, NULL, B * vt->G2, 3 * P * P, W,
                     0);
  be->vit_embed(be, vt->s_h, vt->s_y, v->cls, v->pos, B, vt->G2, W);
  float *x = vt->xs[first];
  be->layernorm_forward(be, x, NULL, NULL, vt->s_h, v->ln_pre_w, v->ln_pre_b, B * vt->T, W);
  for (int l = 0; l < first; l++)
    clip_block_forward(be, &v->blocks[l], &vt->m->cfg.vision, x, vt->s_h, vt->s_qkv, vt->s_y,
                       vt->s_m, B, vt->T, 0);
  for (int l = first; l < vt->L; l++)
    block_forward(vt, l, &peft[l], &vt->acts[l], vt->xs[l], vt->xs[l + 1], B);
  /* Head: class token -> ln_post -> projection. */
  be->gather_rows(be, vt->pooled, vt->xs[vt->L], vt->rows, B, W);
  be->layernorm_forward(be, vt->post_h, vt->post_mean, vt->post_rstd, vt->pooled, v->ln_post_w,
                        v->ln_post_b, B, W);
  be->linear_forward(be, feats, vt->E, vt->post_h, W, v->proj, NULL, B, W, vt->E, 0);
  vt->B = B;
  return 0;
}

int vit_train_backward(vit_train *vt, const vit_block_peft *peft, const vit_block_peft *grads,
                       const float *dfeats, taca_error *err) {
  if (vt->B <= 0) return taca_fail(err, "vit_train: backward without a forward");
  if (check_peft(vt, peft, "parameters for its", err) ||
      check_peft(vt, grads, "gradient buffers for its", err))
    return -1;
  nn_backend *be = vt->be;
  const clip_vision_weights *v = &vt->m->vision;
  const int B = vt->B, W = vt->W, N = B * vt->T;
  /* Head: dL/dpooled, scattered into the class-token rows of dres. */
  be->linear_backward(be, vt->s_h, W, NULL, NULL, dfeats, vt->E, NULL, 0, v->proj, B, W, vt->E, 0);
  be->zero(be, vt->s_y, sizeof(float) * B * W);
  be->layernorm_backward(be, vt->s_y, NULL, NULL, vt->s_h, vt->pooled, vt->post_mean, vt->post_rstd,
                         v->ln_post_w, B, W);
  be->zero(be, vt->dres, sizeof(float) * N * W);
  be->scatter_rows_add(be, vt->dres, vt->s_y, vt->rows, B, W);
  for (int l = vt->L - 1; l >= vt->peft.first; l--) {
    if (vt->recompute) block_forward(vt, l, &peft[l], &vt->acts[l], vt->xs[l], NULL, B);
    block_backward(vt, l, &peft[l], &grads[l], &vt->acts[l], B);
  }
  return 0;
}
