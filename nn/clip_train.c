/* clip_train.c: training forward (saving activations) and backward of both CLIP towers with
 * gradients for every tensor, and the CLIP training step (see clip_train.h).
 *
 * Each tower owns one backend allocation carved into
 *   x[l]        [N, W]  input of block l (x[L] = the last block's output)
 *   blocks[l]           what block l's backward needs (block_acts below)
 *   front               vision: im2col patches, the embedded tokens before ln_pre and its stats;
 *                       text: token ids (device copy for non-host backends)
 *   head                pooled rows, their LayerNorm stats and output, the features
 *   scratch             dres, dh, dy [N, W]; dqkv [N, 3W]; datt [B, H, T, T]; dm [N, M];
 *                       dpooled, dpost [B, W]; dfeats [B, E]
 * with N = max_batch * T_max. The backward walks the blocks from the top carrying dres, the
 * gradient of the residual stream. */
#include "nn/clip_train.h"

#include <stdlib.h>
#include <string.h>

#include "nn/clip_train_impl.h"

typedef struct block_acts {
  float *mean1, *rstd1; /* [N] ln_1 statistics */
  float *h1;            /* [N, W] ln_1 output */
  float *qkv;           /* [N, 3W] */
  float *att;           /* [B, H, T, T] softmax probabilities */
  float *y;             /* [N, W] attention output (input of out_proj) */
  float *x_mid;         /* [N, W] x + attention */
  float *mean2, *rstd2; /* [N] ln_2 statistics */
  float *h2;            /* [N, W] ln_2 output */
  float *pre;           /* [N, M] fc1 output incl. bias, before the activation */
  float *act;           /* [N, M] activation (input of fc2) */
} block_acts;

typedef struct clip_train_tower {
  int text;
  const clip_tower_config *tc;
  int L, W, M, H, E, Tmax, max_batch;
  int B, T; /* batch and tokens of the last forward; B = 0 before the first */
  float *mem;
  size_t mem_floats;
  float **x;          /* [L + 1] */
  block_acts *blocks; /* [L] */
  float *dres, *dh, *dy, *dqkv, *datt, *dm;
  float *pooled, *post_mean, *post_rstd, *post_h, *feats, *dpooled, *dpost;
  int64_t *pool_rows; /* host [max_batch]: row of each sample's pooled token */
  /* vision */
  int S, P, G2;
  float *patches, *x_emb, *pre_mean, *pre_rstd, *pix;
  int64_t *patch_rows; /* host [max_batch * G2]: rows of the patch tokens (without class tokens) */
  /* text */
  int ctx, vocab;
  int32_t *tokens;     /* host [max_batch * ctx]: the last forward's ids */
  int32_t *dev_tokens; /* backend copy (non-host backends), else NULL */
  int64_t *order;      /* host [max_batch * ctx]: token positions sorted by id (backward) */
  int64_t *keys;       /* host [max_batch * ctx]: sort keys */
} clip_train_tower;

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

static void tower_layout(clip_train_tower *t, int host_memory, carver *c) {
  const size_t B = t->max_batch, T = t->Tmax, N = B * T, W = t->W, M = t->M, H = t->H;
  for (int l = 0; l <= t->L; l++) t->x[l] = take(c, N * W);
  for (int l = 0; l < t->L; l++) {
    block_acts *a = &t->blocks[l];
    a->mean1 = take(c, N), a->rstd1 = take(c, N);
    a->h1 = take(c, N * W);
    a->qkv = take(c, N * 3 * W);
    a->att = take(c, B * H * T * T);
    a->y = take(c, N * W);
    a->x_mid = take(c, N * W);
    a->mean2 = take(c, N), a->rstd2 = take(c, N);
    a->h2 = take(c, N * W);
    a->pre = take(c, N * M);
    a->act = take(c, N * M);
  }
  t->dres = take(c, N * W), t->dh = take(c, N * W), t->dy = take(c, N * W);
  t->dqkv = take(c, N * 3 * W);
  t->datt = take(c, B * H * T * T);
  t->dm = take(c, N * M);
  t->pooled = take(c, B * W), t->post_h = take(c, B * W);
  t->post_mean = take(c, B), t->post_rstd = take(c, B);
  t->dpooled = take(c, B * W), t->dpost = take(c, B * W);
  t->feats = take(c, B * t->E);
  if (!t->text) {
    const size_t K = 3 * (size_t)t->P * t->P;
    t->patches = take(c, B * t->G2 * K);
    t->x_emb = take(c, N * W);
    t->pre_mean = take(c, N), t->pre_rstd = take(c, N);
    t->pix = host_memory ? NULL : take(c, B * 3 * (size_t)t->S * t->S);
  } else {
    float *p = host_memory ? NULL : take(c, B * t->ctx); /* int32 ids, same size as floats */
    t->dev_tokens = (int32_t *)p;
  }
}

static void tower_free(nn_backend *be, clip_train_tower *t) {
  if (!t) return;
  if (t->mem) be->free(be, t->mem);
  free(t->x);
  free(t->blocks);
  free(t->pool_rows);
  free(t->patch_rows);
  free(t->tokens);
  free(t->order);
  free(t->keys);
  free(t);
}

static clip_train_tower *tower_create(const clip_config *c, int text, nn_backend *be, int max_batch,
                                      taca_error *err) {
  clip_train_tower *t = calloc(1, sizeof *t);
  if (!t) goto oom;
  t->text = text;
  t->tc = text ? &c->text : &c->vision;
  t->L = t->tc->layers, t->W = t->tc->width, t->M = t->tc->mlp, t->H = t->tc->heads;
  t->E = c->embed_dim;
  t->max_batch = max_batch;
  if (text) {
    t->ctx = c->context_len, t->vocab = c->vocab_size;
    t->Tmax = c->context_len;
  } else {
    t->S = c->image_size, t->P = c->patch_size;
    t->G2 = (t->S / t->P) * (t->S / t->P);
    t->Tmax = t->G2 + 1;
  }
  t->x = calloc(t->L + 1, sizeof *t->x);
  t->blocks = calloc(t->L, sizeof *t->blocks);
  t->pool_rows = malloc(sizeof *t->pool_rows * max_batch);
  if (!t->x || !t->blocks || !t->pool_rows) goto oom;
  if (text) {
    const size_t n = (size_t)max_batch * t->ctx;
    t->tokens = malloc(sizeof *t->tokens * n);
    t->order = malloc(sizeof *t->order * n);
    t->keys = malloc(sizeof *t->keys * n);
    if (!t->tokens || !t->order || !t->keys) goto oom;
  } else {
    t->patch_rows = malloc(sizeof *t->patch_rows * max_batch * t->G2);
    if (!t->patch_rows) goto oom;
    for (int b = 0; b < max_batch; b++) {
      t->pool_rows[b] = (int64_t)b * t->Tmax;
      for (int p = 0; p < t->G2; p++)
        t->patch_rows[(size_t)b * t->G2 + p] = (int64_t)b * t->Tmax + 1 + p;
    }
  }
  carver count = {NULL, 0};
  tower_layout(t, be->host_memory, &count);
  t->mem_floats = count.off;
  if (!(t->mem = be->alloc(be, t->mem_floats * sizeof(float)))) {
    taca_fail(err, "clip_train: out of memory for the %s tower's activations (%.1f MiB for %d "
                   "samples)",
              text ? "text" : "vision", t->mem_floats * 4.0 / (1 << 20), max_batch);
    tower_free(be, t);
    return NULL;
  }
  carver carve = {t->mem, 0};
  tower_layout(t, be->host_memory, &carve);
  return t;
oom:
  tower_free(be, t);
  taca_fail(err, "clip_train: out of memory");
  return NULL;
}

clip_train *clip_train_create(const clip_config *cfg, nn_backend *be, int max_batch, uint64_t seed,
                              taca_error *err) {
  if (clip_config_validate(cfg, err)) return NULL;
  if (max_batch <= 0) {
    taca_fail(err, "clip_train: max_batch must be positive (got %d)", max_batch);
    return NULL;
  }
  clip_train *ct = calloc(1, sizeof *ct);
  if (!ct) {
    taca_fail(err, "clip_train: out of memory");
    return NULL;
  }
  ct->cfg = *cfg;
  ct->be = be;
  ct->max_batch = max_batch;
  if (clip_train_params_create(ct, seed, err)) goto fail;
  if (!(ct->vis = tower_create(&ct->cfg, 0, be, max_batch, err))) goto fail;
  if (cfg->has_text && !(ct->txt = tower_create(&ct->cfg, 1, be, max_batch, err))) goto fail;
  const size_t BE = (size_t)max_batch * cfg->embed_dim;
  ct->host_img = malloc(sizeof(float) * BE);
  ct->host_txt = malloc(sizeof(float) * BE);
  ct->host_dimg = malloc(sizeof(float) * BE);
  ct->host_dtxt = malloc(sizeof(float) * BE);
  ct->loss_work = malloc(sizeof(double) * clip_loss_work_size(max_batch, cfg->embed_dim));
  if (!ct->host_img || !ct->host_txt || !ct->host_dimg || !ct->host_dtxt || !ct->loss_work) {
    taca_fail(err, "clip_train: out of memory");
    goto fail;
  }
  return ct;
fail:
  clip_train_free(ct);
  return NULL;
}

void clip_train_free(clip_train *ct) {
  if (!ct) return;
  tower_free(ct->be, ct->vis);
  tower_free(ct->be, ct->txt);
  clip_train_params_free(ct);
  free(ct->host_img), free(ct->host_txt), free(ct->host_dimg), free(ct->host_dtxt);
  free(ct->loss_work);
  free(ct);
}

size_t clip_train_memory_bytes(const clip_train *ct) {
  size_t f = 4 * ct->n + ct->vis->mem_floats + (ct->txt ? ct->txt->mem_floats : 0);
  return f * sizeof(float);
}

/* ---- One residual block: x_out = x_mid + fc2(act(fc1(ln_2(x_mid)))), x_mid = x_in +
 * out_proj(attention(qkv(ln_1(x_in)))). */

static void block_forward(nn_backend *be, const clip_train_tower *t, const clip_train_block *w,
                          block_acts *a, const float *x_in, float *x_out, int B, int T, int causal) {
  const int W = t->W, M = t->M, N = B * T;
  be->layernorm_forward(be, a->h1, a->mean1, a->rstd1, x_in, w->ln1_w, w->ln1_b, N, W);
  be->linear_forward(be, a->qkv, 3 * W, a->h1, W, w->qkv_w, w->qkv_b, N, W, 3 * W, 0);
  be->attention_forward(be, a->y, a->att, a->qkv, B, T, W, t->H, causal);
  be->copy(be, a->x_mid, x_in, sizeof(float) * N * W);
  be->linear_forward(be, a->x_mid, W, a->y, W, w->out_w, w->out_b, N, W, W, 1);
  be->layernorm_forward(be, a->h2, a->mean2, a->rstd2, a->x_mid, w->ln2_w, w->ln2_b, N, W);
  be->linear_forward(be, a->pre, M, a->h2, W, w->fc1_w, NULL, N, W, M, 0);
  be->bias_act_forward_pre(be, a->act, a->pre, w->fc1_b, (size_t)N, M, t->tc->act);
  be->copy(be, x_out, a->x_mid, sizeof(float) * N * W);
  be->linear_forward(be, x_out, W, a->act, M, w->fc2_w, w->fc2_b, N, M, W, 1);
}

/* t->dres holds dL/dx_out on entry and dL/dx_in on return; weight gradients accumulate into g. */
static void block_backward(nn_backend *be, clip_train_tower *t, const clip_train_block *w,
                           const clip_train_block *g, const block_acts *a, const float *x_in, int B,
                           int T, int causal) {
  const int W = t->W, M = t->M, N = B * T;
  float *dres = t->dres;
  be->linear_backward(be, t->dm, M, g->fc2_w, g->fc2_b, dres, W, a->act, M, w->fc2_w, N, M, W, 0);
  be->act_backward(be, t->dm, t->dm, a->pre, (size_t)N * M, t->tc->act);
  be->linear_backward(be, t->dh, W, g->fc1_w, g->fc1_b, t->dm, M, a->h2, W, w->fc1_w, N, W, M, 0);
  be->layernorm_backward(be, dres, g->ln2_w, g->ln2_b, t->dh, a->x_mid, a->mean2, a->rstd2,
                         w->ln2_w, N, W);
  be->linear_backward(be, t->dy, W, g->out_w, g->out_b, dres, W, a->y, W, w->out_w, N, W, W, 0);
  be->attention_backward(be, t->dqkv, t->datt, t->dy, a->qkv, a->att, B, T, W, t->H, causal);
  be->linear_backward(be, t->dh, W, g->qkv_w, g->qkv_b, t->dqkv, 3 * W, a->h1, W, w->qkv_w, N, W,
                      3 * W, 0);
  be->layernorm_backward(be, dres, g->ln1_w, g->ln1_b, t->dh, x_in, a->mean1, a->rstd1, w->ln1_w,
                         N, W);
}

static void blocks_forward(nn_backend *be, clip_train_tower *t, const clip_train_block *w, int B,
                           int T) {
  for (int l = 0; l < t->L; l++)
    block_forward(be, t, &w[l], &t->blocks[l], t->x[l], t->x[l + 1], B, T, t->text);
}

static void blocks_backward(nn_backend *be, clip_train_tower *t, const clip_train_block *w,
                            const clip_train_block *g, int B, int T) {
  for (int l = t->L - 1; l >= 0; l--)
    block_backward(be, t, &w[l], &g[l], &t->blocks[l], t->x[l], B, T, t->text);
}

/* Head: pooled rows -> LayerNorm -> projection [E, W] (no bias). */
static void head_forward(nn_backend *be, clip_train_tower *t, const float *ln_w, const float *ln_b,
                         const float *proj, int B) {
  const int W = t->W;
  be->gather_rows(be, t->pooled, t->x[t->L], t->pool_rows, B, W);
  be->layernorm_forward(be, t->post_h, t->post_mean, t->post_rstd, t->pooled, ln_w, ln_b, B, W);
  be->linear_forward(be, t->feats, t->E, t->post_h, W, proj, NULL, B, W, t->E, 0);
}

/* From dfeats: dres = dL/d(last block output), zero except at the pooled rows. */
static void head_backward(nn_backend *be, clip_train_tower *t, const float *dfeats,
                          const float *ln_w, const float *proj, float *g_ln_w, float *g_ln_b,
                          float *g_proj, int B, int T) {
  const int W = t->W;
  be->linear_backward(be, t->dpost, W, g_proj, NULL, dfeats, t->E, t->post_h, W, proj, B, W, t->E,
                      0);
  be->zero(be, t->dpooled, sizeof(float) * B * W);
  be->layernorm_backward(be, t->dpooled, g_ln_w, g_ln_b, t->dpost, t->pooled, t->post_mean,
                         t->post_rstd, ln_w, B, W);
  be->zero(be, t->dres, sizeof(float) * B * T * W);
  be->scatter_rows_add(be, t->dres, t->dpooled, t->pool_rows, B, W);
}

/* db[0:OC] += sum over the n rows (stride ld) of x: the bias-gradient reduction of
 * linear_backward, used for the positional and class embeddings and the token embedding. */
static void column_sums(nn_backend *be, float *db, const float *x, int ld, int n, int OC) {
  be->linear_backward(be, NULL, 0, NULL, db, x, ld, NULL, 0, NULL, n, 1, OC, 0);
}

/* ---- Vision tower. */

const float *clip_train_image_forward(clip_train *ct, const float *pixels, int B, taca_error *err) {
  clip_train_tower *t = ct->vis;
  if (B <= 0 || B > ct->max_batch) {
    taca_fail(err, "clip_train: batch %d is outside 1..%d (the size it was created for)", B,
              ct->max_batch);
    return NULL;
  }
  nn_backend *be = ct->be;
  const clip_train_tensors *p = &ct->p;
  const int W = t->W, P = t->P, T = t->Tmax, K = 3 * P * P;
  const float *pix = pixels;
  if (!be->host_memory) {
    be->upload(be, t->pix, pixels, sizeof(float) * B * 3 * t->S * t->S);
    pix = t->pix;
  }
  be->im2col_patches(be, t->patches, pix, B, t->S, P);
  be->linear_forward(be, t->dy, W, t->patches, K, p->patch_w, NULL, B * t->G2, K, W, 0);
  be->vit_embed(be, t->x_emb, t->dy, p->cls, p->vpos, B, t->G2, W);
  be->layernorm_forward(be, t->x[0], t->pre_mean, t->pre_rstd, t->x_emb, p->ln_pre_w, p->ln_pre_b,
                        B * T, W);
  blocks_forward(be, t, p->vblocks, B, T);
  head_forward(be, t, p->ln_post_w, p->ln_post_b, p->vproj, B);
  t->B = B, t->T = T;
  return t->feats;
}

int clip_train_image_backward(clip_train *ct, const float *dfeats, taca_error *err) {
  clip_train_tower *t = ct->vis;
  if (t->B <= 0) return taca_fail(err, "clip_train: image backward without a forward");
  nn_backend *be = ct->be;
  const clip_train_tensors *p = &ct->p, *g = &ct->g;
  const int B = t->B, T = t->T, W = t->W, N = B * T, K = 3 * t->P * t->P;
  head_backward(be, t, dfeats, p->ln_post_w, p->vproj, g->ln_post_w, g->ln_post_b, g->vproj, B, T);
  blocks_backward(be, t, p->vblocks, g->vblocks, B, T);
  /* ln_pre, then x_emb[b, t] = (t ? patch_emb[b, t - 1] : cls) + pos[t]. */
  float *dx = t->dh;
  be->zero(be, dx, sizeof(float) * N * W);
  be->layernorm_backward(be, dx, g->ln_pre_w, g->ln_pre_b, t->dres, t->x_emb, t->pre_mean,
                         t->pre_rstd, p->ln_pre_w, N, W);
  column_sums(be, g->vpos, dx, T * W, B, T * W);
  column_sums(be, g->cls, dx, T * W, B, W);
  be->gather_rows(be, t->dy, dx, t->patch_rows, B * t->G2, W);
  be->linear_backward(be, NULL, 0, g->patch_w, NULL, t->dy, W, t->patches, K, p->patch_w,
                      B * t->G2, K, W, 0);
  return 0;
}

/* ---- Text tower. */

static int cmp_i64(const void *a, const void *b) {
  const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

const float *clip_train_text_forward(clip_train *ct, const int32_t *tokens, int B,
                                     taca_error *err) {
  clip_train_tower *t = ct->txt;
  if (!t) {
    taca_fail(err, "clip_train: this model has no text tower");
    return NULL;
  }
  if (B <= 0 || B > ct->max_batch) {
    taca_fail(err, "clip_train: batch %d is outside 1..%d (the size it was created for)", B,
              ct->max_batch);
    return NULL;
  }
  const int ctx = t->ctx;
  t->B = 0; /* no backward of a failed forward */
  /* Pool position per row: the first end-of-text id, else the first largest id. */
  int T = 1;
  for (int b = 0; b < B; b++) {
    const int32_t *tk = tokens + (size_t)b * ctx;
    int pos = -1, best = 0;
    for (int i = 0; i < ctx; i++) {
      if (tk[i] < 0 || tk[i] >= t->vocab) {
        taca_fail(err, "token id %d at row %d position %d is outside the vocabulary [0, %d)", tk[i],
                  b, i, t->vocab);
        return NULL;
      }
      if (pos < 0 && tk[i] == 49407) pos = i;
      if (tk[i] > tk[best]) best = i;
    }
    if (pos < 0) pos = best;
    t->pool_rows[b] = pos;
    if (pos + 1 > T) T = pos + 1;
  }
  for (int b = 0; b < B; b++) t->pool_rows[b] += (int64_t)b * T;
  memcpy(t->tokens, tokens, sizeof(int32_t) * B * ctx);
  nn_backend *be = ct->be;
  const clip_train_tensors *p = &ct->p;
  const int32_t *tk = tokens;
  if (!be->host_memory) {
    be->upload(be, t->dev_tokens, tokens, sizeof(int32_t) * B * ctx);
    tk = t->dev_tokens;
  }
  be->text_embed(be, t->x[0], tk, ctx, p->tok_emb, p->tpos, B, T, t->W);
  blocks_forward(be, t, p->tblocks, B, T);
  head_forward(be, t, p->ln_final_w, p->ln_final_b, p->tproj, B);
  t->B = B, t->T = T;
  return t->feats;
}

int clip_train_text_backward(clip_train *ct, const float *dfeats, taca_error *err) {
  clip_train_tower *t = ct->txt;
  if (!t) return taca_fail(err, "clip_train: this model has no text tower");
  if (t->B <= 0) return taca_fail(err, "clip_train: text backward without a forward");
  nn_backend *be = ct->be;
  const clip_train_tensors *p = &ct->p, *g = &ct->g;
  const int B = t->B, T = t->T, W = t->W, N = B * T;
  head_backward(be, t, dfeats, p->ln_final_w, p->tproj, g->ln_final_w, g->ln_final_b, g->tproj, B,
                T);
  blocks_backward(be, t, p->tblocks, g->tblocks, B, T);
  /* x[b, i] = tok_emb[id[b, i]] + pos[i]: the positional gradient sums over the batch; the token
   * embedding's over every position holding the id (ids repeat: sorted, then summed per id). */
  column_sums(be, g->tpos, t->dres, T * W, B, T * W);
  for (int b = 0; b < B; b++)
    for (int i = 0; i < T; i++) {
      const int64_t r = (int64_t)b * T + i;
      t->keys[r] = (int64_t)t->tokens[(size_t)b * t->ctx + i] << 32 | r;
    }
  qsort(t->keys, (size_t)N, sizeof *t->keys, cmp_i64);
  for (int r = 0; r < N; r++) t->order[r] = t->keys[r] & 0xffffffff;
  be->gather_rows(be, t->dy, t->dres, t->order, N, W);
  for (int r0 = 0; r0 < N;) {
    const int64_t id = t->keys[r0] >> 32;
    int r1 = r0 + 1;
    while (r1 < N && t->keys[r1] >> 32 == id) r1++;
    column_sums(be, g->tok_emb + id * W, t->dy + (size_t)r0 * W, W, r1 - r0, W);
    r0 = r1;
  }
  return 0;
}

/* ---- The CLIP step. */

int clip_train_step(clip_train *ct, const float *pixels, const int32_t *tokens, int B,
                    clip_loss_result *r, taca_error *err) {
  if (!ct->txt) return taca_fail(err, "clip_train: a CLIP step needs the text tower");
  nn_backend *be = ct->be;
  const int E = ct->cfg.embed_dim;
  const float *fi = clip_train_image_forward(ct, pixels, B, err);
  if (!fi) return -1;
  const float *ft = clip_train_text_forward(ct, tokens, B, err);
  if (!ft) return -1;
  const size_t bytes = sizeof(float) * B * E;
  be->download(be, ct->host_img, fi, bytes);
  be->download(be, ct->host_txt, ft, bytes);
  be->synchronize(be);
  if (clip_loss(ct->host_img, ct->host_txt, B, E, clip_train_logit_scale(ct), r, ct->host_dimg,
                ct->host_dtxt, ct->loss_work, err))
    return -1;
  /* The features' buffers are free once downloaded: they take the gradients. */
  float *di = ct->vis->feats, *dt = ct->txt->feats;
  be->upload(be, di, ct->host_dimg, bytes);
  be->upload(be, dt, ct->host_dtxt, bytes);
  if (clip_train_image_backward(ct, di, err) || clip_train_text_backward(ct, dt, err)) return -1;
  float gls;
  be->download(be, &gls, ct->g.logit_scale, sizeof gls);
  gls += (float)r->dlogit_scale;
  be->upload(be, ct->g.logit_scale, &gls, sizeof gls);
  be->synchronize(be);
  return 0;
}
