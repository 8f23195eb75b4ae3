/* clip_forward.c: inference forward passes of CLIP's vision and text towers on an nn_backend. */
#include <stdlib.h>
#include <string.h>

#include "nn/clip.h"

/* Activation buffers on the backend, grown to the largest (tokens, width, mlp) requested. */
typedef struct clip_workspace {
  size_t cap_x, cap_qkv, cap_mlp, cap_io;
  float *x, *h, *qkv, *y, *mlp; /* [N, W], [N, W], [N, 3W], [N, W], [N, M] */
  float *io;                    /* pixels / patches / pooled rows / outputs */
  float *io2;
} clip_workspace;

void clip_model_workspace_free(clip_model *m) {
  clip_workspace *ws = m->ws;
  if (!ws) return;
  nn_backend *be = m->be;
  float *bufs[] = {ws->x, ws->h, ws->qkv, ws->y, ws->mlp, ws->io, ws->io2};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
    if (bufs[i]) be->free(be, bufs[i]);
  free(ws);
  m->ws = NULL;
}

static int grow(nn_backend *be, float **p, size_t *cap, size_t need) {
  if (need <= *cap) return 0;
  if (*p) be->free(be, *p);
  *p = be->alloc(be, need * sizeof(float));
  *cap = *p ? need : 0;
  return *p ? 0 : -1;
}

/* Ensures buffers for N tokens of width W, MLP width M, and io floats. */
static int workspace_reserve(clip_model *m, size_t N, int W, int M, size_t io, taca_error *err) {
  if (!m->ws && !(m->ws = calloc(1, sizeof *m->ws))) return taca_fail(err, "out of memory");
  clip_workspace *ws = m->ws;
  nn_backend *be = m->be;
  size_t cap_x = ws->cap_x, cap_io = ws->cap_io;
  if (N * W > cap_x) {
    size_t c1 = cap_x, c2 = cap_x, c3 = cap_x;
    if (grow(be, &ws->x, &c1, N * W) || grow(be, &ws->h, &c2, N * W) ||
        grow(be, &ws->y, &c3, N * W))
      goto oom;
    ws->cap_x = N * W;
  }
  if (grow(be, &ws->qkv, &ws->cap_qkv, N * 3 * W) || grow(be, &ws->mlp, &ws->cap_mlp, N * M))
    goto oom;
  if (io > cap_io) {
    size_t c1 = cap_io, c2 = cap_io;
    if (grow(be, &ws->io, &c1, io) || grow(be, &ws->io2, &c2, io)) goto oom;
    ws->cap_io = io;
  }
  return 0;
oom:
  clip_model_workspace_free(m);
  return taca_fail(err, "out of memory for activations (%zu tokens of width %d)", N, W);
}

void clip_block_forward(nn_backend *be, const clip_block *blk, const clip_tower_config *tc, float *x,
                        float *h, float *qkv, float *y, float *mlp, int B, int T, int causal) {
  const int W = tc->width, M = tc->mlp, N = B * T;
  be->layernorm_forward(be, h, NULL, NULL, x, blk->ln1_w, blk->ln1_b, N, W);
  if (blk->qkv_fused) { /* BF16 only: F32 keeps its three GEMMs, bit for bit */
    be->linear_forward(be, qkv, 3 * W, h, W, blk->q_w, blk->q_b, N, W, 3 * W, 0);
  } else {
    be->linear_forward(be, qkv, 3 * W, h, W, blk->q_w, blk->q_b, N, W, W, 0);
    be->linear_forward(be, qkv + W, 3 * W, h, W, blk->k_w, blk->k_b, N, W, W, 0);
    be->linear_forward(be, qkv + 2 * W, 3 * W, h, W, blk->v_w, blk->v_b, N, W, W, 0);
  }
  be->attention_forward(be, y, NULL, qkv, B, T, W, tc->heads, causal);
  be->linear_forward(be, x, W, y, W, blk->out_w, blk->out_b, N, W, W, 1);
  be->layernorm_forward(be, h, NULL, NULL, x, blk->ln2_w, blk->ln2_b, N, W);
  be->linear_forward(be, mlp, M, h, W, blk->fc1_w, NULL, N, W, M, 0);
  be->bias_act_forward(be, mlp, blk->fc1_b, (size_t)N, M, tc->act);
  be->linear_forward(be, x, W, mlp, M, blk->fc2_w, blk->fc2_b, N, M, W, 1);
}

int clip_encode_image(clip_model *m, const float *pixels, int B, float *out, taca_error *err) {
  if (B <= 0) return 0;
  if (!m->has_vision) return taca_fail(err, "this model has no vision tower");
  const clip_config *c = &m->cfg;
  const int W = c->vision.width, S = c->image_size, P = c->patch_size, G = S / P, T = G * G + 1;
  const int E = c->embed_dim;
  const size_t n_pix = (size_t)B * 3 * S * S, n_patch = (size_t)B * G * G * 3 * P * P;
  size_t io = n_pix > n_patch ? n_pix : n_patch;
  if (workspace_reserve(m, (size_t)B * T, W, c->vision.mlp, io, err)) return -1;
  clip_workspace *ws = m->ws;
  nn_backend *be = m->be;
  const clip_vision_weights *v = &m->vision;
  /* Patch embedding as a GEMM: [B*G*G, 3PP] x [W, 3PP]^T. */
  const float *pix = pixels;
  if (!be->host_memory) {
    be->upload(be, ws->io2, pixels, n_pix * sizeof(float));
    pix = ws->io2;
  }
  be->im2col_patches(be, ws->io, pix, B, S, P);
  be->linear_forward(be, ws->y, W, ws->io, 3 * P * P, v->patch_w, NULL, B * G * G, 3 * P * P, W, 0);
  be->vit_embed(be, ws->h, ws->y, v->cls, v->pos, B, G * G, W);
  be->layernorm_forward(be, ws->x, NULL, NULL, ws->h, v->ln_pre_w, v->ln_pre_b, B * T, W);
  for (int l = 0; l < c->vision.layers; l++)
    clip_block_forward(be, &v->blocks[l], &c->vision, ws->x, ws->h, ws->qkv, ws->y, ws->mlp, B, T,
                       0);
  /* Pool the class token, post-LN, project. */
  int64_t *rows = malloc(sizeof *rows * B);
  if (!rows) return taca_fail(err, "out of memory");
  for (int b = 0; b < B; b++) rows[b] = (int64_t)b * T;
  be->gather_rows(be, ws->h, ws->x, rows, B, W);
  free(rows);
  be->layernorm_forward(be, ws->y, NULL, NULL, ws->h, v->ln_post_w, v->ln_post_b, B, W);
  float *dst = be->host_memory ? out : ws->io;
  be->linear_forward(be, dst, E, ws->y, W, v->proj, NULL, B, W, E, 0);
  if (!be->host_memory) be->download(be, out, ws->io, (size_t)B * E * sizeof(float));
  be->synchronize(be);
  return 0;
}

int clip_encode_text(clip_model *m, const int32_t *tokens, int B, float *out, taca_error *err) {
  if (B <= 0) return 0;
  const clip_config *c = &m->cfg;
  if (!c->has_text) return taca_fail(err, "this model has no text tower");
  const int W = c->text.width, ctx = c->context_len, E = c->embed_dim;
  /* Pool position per row: the first end-of-text id, else the largest id (OpenAI's argmax).
   * With the causal mask, tokens after the pooled one never influence it, so the towers run only
   * over the first max(pool) + 1 positions. */
  int64_t *rows = malloc(sizeof *rows * B);
  if (!rows) return taca_fail(err, "out of memory");
  int T = 1;
  for (int b = 0; b < B; b++) {
    const int32_t *tk = tokens + (size_t)b * ctx;
    int pos = -1, best = 0;
    for (int t = 0; t < ctx; t++) {
      if (tk[t] < 0 || tk[t] >= c->vocab_size) {
        free(rows);
        return taca_fail(err, "token id %d at row %d position %d is outside the vocabulary [0, %d)",
                         tk[t], b, t, c->vocab_size);
      }
      if (pos < 0 && tk[t] == 49407) pos = t;
      if (tk[t] > tk[best]) best = t;
    }
    if (pos < 0) pos = best;
    rows[b] = pos;
    if (pos + 1 > T) T = pos + 1;
  }
  if (workspace_reserve(m, (size_t)B * T, W, c->text.mlp, (size_t)B * (ctx > E ? ctx : E), err)) {
    free(rows);
    return -1;
  }
  for (int b = 0; b < B; b++) rows[b] += (int64_t)b * T;
  clip_workspace *ws = m->ws;
  nn_backend *be = m->be;
  const clip_text_weights *tw = &m->text;
  const int32_t *tk = tokens;
  if (!be->host_memory) {
    be->upload(be, ws->io, tokens, (size_t)B * ctx * sizeof(int32_t));
    tk = (const int32_t *)ws->io;
  }
  be->text_embed(be, ws->x, tk, ctx, tw->tok_emb, tw->pos, B, T, W);
  for (int l = 0; l < c->text.layers; l++)
    clip_block_forward(be, &tw->blocks[l], &c->text, ws->x, ws->h, ws->qkv, ws->y, ws->mlp, B, T, 1);
  be->gather_rows(be, ws->h, ws->x, rows, B, W);
  free(rows);
  be->layernorm_forward(be, ws->y, NULL, NULL, ws->h, tw->ln_final_w, tw->ln_final_b, B, W);
  float *dst = be->host_memory ? out : ws->io2;
  be->linear_forward(be, dst, E, ws->y, W, tw->proj, NULL, B, W, E, 0);
  if (!be->host_memory) be->download(be, out, ws->io2, (size_t)B * E * sizeof(float));
  be->synchronize(be);
  return 0;
}
