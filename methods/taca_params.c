/* taca_params.c: TaCA's trainable tensors in one allocation, their initialisation and AdamW update
 * (see taca_params.h; their files are methods/taca_checkpoint.c). */
#include "methods/taca_params.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"

void taca_param_config_default(taca_param_config *c, const clip_config *new_cfg, int e_old) {
  memset(c, 0, sizeof *c);
  c->layers = new_cfg->vision.layers;
  c->width = new_cfg->vision.width;
  c->e_new = new_cfg->embed_dim;
  c->proj_hidden = 4096;
  c->e_old = e_old;
  c->peft.kind = VIT_PEFT_ADAPTER;
  c->peft.first = 0;
  c->peft.last = c->layers - 1;
  c->peft.bottleneck = c->width > 1024 ? 256 : 128;
  c->peft.lora_rank = 8;
  c->peft.lora_alpha = 8.0f;
}

static int parse_block(const char *s, const char *spec, char **end, int *out, taca_error *err) {
  errno = 0;
  long v = strtol(s, end, 10);
  if (*end == s || errno || v < -1000000 || v > 1000000)
    return taca_fail(err, "layer range '%s': expected 'all', 'A-B' or 'A' with block numbers", spec);
  *out = (int)v;
  return 0;
}

int taca_parse_layer_range(const char *spec, int layers, int *first, int *last, taca_error *err) {
  if (!spec || !strcmp(spec, "all")) {
    *first = 0, *last = layers - 1;
    return 0;
  }
  int a = 0, b = 0;
  char *end;
  if (parse_block(spec, spec, &end, &a, err)) return -1;
  if (*end == '-') {
    if (parse_block(end + 1, spec, &end, &b, err)) return -1;
  } else {
    b = a;
  }
  if (*end)
    return taca_fail(err, "layer range '%s': expected 'all', 'A-B' or 'A' with block numbers", spec);
  if (a < 1 || b < a || b > layers)
    return taca_fail(err, "layer range '%s': need 1 <= A <= B <= %d (blocks of the new tower, "
                          "counted from 1)", spec, layers);
  *first = a - 1, *last = b - 1;
  return 0;
}

/* ---- The tensor table: one walk over the configuration, used to count, to describe and to point
 * the four views into their flat buffers. */

#define PROJ (-1) /* block index meaning "field of projector_weights" */

typedef struct walker {
  taca_params *P; /* NULL: count only */
  int n;
  size_t off, numel;
} walker;

static void put(walker *w, int block, size_t field, int ndim, int64_t d0, int64_t d1, int fan_in,
                const char *fmt, ...) __attribute__((format(printf, 8, 9)));

static void put(walker *w, int block, size_t field, int ndim, int64_t d0, int64_t d1, int fan_in,
                const char *fmt, ...) {
  const size_t numel = (size_t)d0 * (ndim == 2 ? (size_t)d1 : 1);
  taca_params *P = w->P;
  if (P && P->info) {
    taca_tensor_info *t = &P->info[w->n];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->ndim = ndim;
    t->shape[0] = d0, t->shape[1] = ndim == 2 ? d1 : 0;
    t->offset = w->off;
    t->numel = numel;
    t->fan_in = fan_in;
    if (P->mem) {
      taca_tensors *views[4] = {&P->p, &P->g, &P->m, &P->v};
      float *bases[4] = {P->flat_p, P->flat_g, P->flat_m, P->flat_v};
      for (int i = 0; i < 4; i++) {
        char *s = block == PROJ ? (char *)&views[i]->proj : (char *)&views[i]->blocks[block];
        *(float **)(s + field) = bases[i] + w->off;
      }
    }
  }
  w->n++;
  w->numel += numel;
  w->off += (numel + 15) & ~(size_t)15;
}

static void walk(const taca_param_config *c, walker *w) {
  const int W = c->width, k = c->peft.bottleneck, r = c->peft.lora_rank;
  for (int l = c->peft.first; l <= c->peft.last; l++) {
    if (c->peft.kind == VIT_PEFT_ADAPTER) {
      put(w, l, offsetof(vit_block_peft, down_w), 2, k, W, W, "adapter.%d.down.weight", l);
      put(w, l, offsetof(vit_block_peft, down_b), 1, k, 0, W, "adapter.%d.down.bias", l);
      put(w, l, offsetof(vit_block_peft, up_w), 2, W, k, 0, "adapter.%d.up.weight", l);
      put(w, l, offsetof(vit_block_peft, up_b), 1, W, 0, 0, "adapter.%d.up.bias", l);
    } else {
      put(w, l, offsetof(vit_block_peft, q_A), 2, r, W, W, "lora.%d.q.A", l);
      put(w, l, offsetof(vit_block_peft, q_B), 2, W, r, 0, "lora.%d.q.B", l);
      put(w, l, offsetof(vit_block_peft, v_A), 2, r, W, W, "lora.%d.v.A", l);
      put(w, l, offsetof(vit_block_peft, v_B), 2, W, r, 0, "lora.%d.v.B", l);
    }
  }
  const int En = c->e_new, H = c->proj_hidden, Eo = c->e_old;
  put(w, PROJ, offsetof(projector_weights, fc1_w), 2, H, En, En, "projector.fc1.weight");
  put(w, PROJ, offsetof(projector_weights, fc1_b), 1, H, 0, En, "projector.fc1.bias");
  put(w, PROJ, offsetof(projector_weights, fc2_w), 2, Eo, H, H, "projector.fc2.weight");
  put(w, PROJ, offsetof(projector_weights, fc2_b), 1, Eo, 0, H, "projector.fc2.bias");
}

static int check_config(const taca_param_config *c, taca_error *err) {
  if (c->layers <= 0 || c->width <= 0 || c->e_new <= 0 || c->e_old <= 0 || c->proj_hidden <= 0)
    return taca_fail(err, "TaCA parameters: layers %d, width %d, embeddings %d -> %d and projector "
                          "hidden %d must all be positive",
                     c->layers, c->width, c->e_new, c->e_old, c->proj_hidden);
  const vit_peft_config *p = &c->peft;
  if (p->first < 0 || p->last < p->first || p->last >= c->layers)
    return taca_fail(err, "TaCA parameters: block range %d-%d is outside the tower's 1-%d",
                     p->first + 1, p->last + 1, c->layers);
  if (p->kind == VIT_PEFT_ADAPTER && p->bottleneck <= 0)
    return taca_fail(err, "TaCA parameters: adapter bottleneck must be positive (got %d)",
                     p->bottleneck);
  if (p->kind == VIT_PEFT_LORA && p->lora_rank <= 0)
    return taca_fail(err, "TaCA parameters: LoRA rank must be positive (got %d)", p->lora_rank);
  if (p->kind != VIT_PEFT_ADAPTER && p->kind != VIT_PEFT_LORA)
    return taca_fail(err, "TaCA parameters: unknown PEFT kind %d", (int)p->kind);
  return 0;
}

size_t taca_param_count(const taca_param_config *c) {
  if (check_config(c, NULL)) return 0;
  walker w = {0};
  walk(c, &w);
  return w.numel;
}

int taca_params_create(taca_params *P, const taca_param_config *cfg, nn_backend *be, uint64_t seed,
                       taca_error *err) {
  memset(P, 0, sizeof *P);
  if (check_config(cfg, err)) return -1;
  P->cfg = *cfg;
  P->be = be;
  walker w = {0};
  walk(cfg, &w);
  P->n_tensors = w.n;
  P->n = w.off;
  taca_tensors *views[4] = {&P->p, &P->g, &P->m, &P->v};
  P->info = calloc(P->n_tensors, sizeof *P->info);
  for (int i = 0; i < 4; i++) views[i]->blocks = calloc(cfg->layers, sizeof(vit_block_peft));
  P->mem = be->alloc(be, 4 * P->n * sizeof(float));
  if (!P->info || !P->mem || !P->p.blocks || !P->g.blocks || !P->m.blocks || !P->v.blocks) {
    taca_params_free(P);
    return taca_fail(err, "out of memory for %zu trainable parameters", w.numel);
  }
  P->flat_p = P->mem, P->flat_g = P->mem + P->n, P->flat_m = P->mem + 2 * P->n;
  P->flat_v = P->mem + 3 * P->n;
  walker fill = {P, 0, 0, 0};
  walk(cfg, &fill);
  /* Initial values on the host, uploaded once; gradients and moments zero. */
  float *host = calloc(P->n ? P->n : 1, sizeof(float));
  if (!host) {
    taca_params_free(P);
    return taca_fail(err, "out of memory for %zu trainable parameters", w.numel);
  }
  uint64_t s = seed;
  for (int i = 0; i < P->n_tensors; i++) {
    const taca_tensor_info *t = &P->info[i];
    if (t->fan_in <= 0) continue;
    const float bound = 1.0f / sqrtf((float)t->fan_in);
    for (size_t j = 0; j < t->numel; j++) {
      float u = (float)(splitmix64(&s) >> 40) * (1.0f / 16777216.0f); /* [0, 1) */
      host[t->offset + j] = (2.0f * u - 1.0f) * bound;
    }
  }
  be->upload(be, P->flat_p, host, sizeof(float) * P->n);
  free(host);
  be->zero(be, P->flat_g, sizeof(float) * 3 * P->n);
  return 0;
}

void taca_params_free(taca_params *P) {
  if (!P) return;
  if (P->mem) P->be->free(P->be, P->mem);
  free(P->info);
  free(P->p.blocks), free(P->g.blocks), free(P->m.blocks), free(P->v.blocks);
  memset(P, 0, sizeof *P);
}

void taca_params_zero_grad(taca_params *P) {
  P->be->zero(P->be, P->flat_g, sizeof(float) * P->n);
}

void taca_params_adamw(taca_params *P, const taca_adamw_config *c) {
  P->step++;
  P->be->adamw_update(P->be, P->flat_p, P->flat_g, P->flat_m, P->flat_v, P->n, c->lr, c->beta1,
                      c->beta2, c->eps, c->weight_decay, P->step);
}
