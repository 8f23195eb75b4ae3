/* taca_params.c: TaCA's trainable tensors in one allocation, their initialisation, AdamW update and
 * safetensors checkpoints (see taca_params.h). */
#include "methods/taca_params.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/safetensors.h"

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

/* Host copy of a region of backend memory (the region itself on host backends). */
static const float *host_view(const taca_params *P, const float *dev, size_t n, float **owned) {
  *owned = NULL;
  if (P->be->host_memory) return dev;
  if (!(*owned = malloc(sizeof(float) * (n ? n : 1)))) return NULL;
  P->be->download(P->be, *owned, dev, sizeof(float) * n);
  return *owned;
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

/* ---- Checkpoints. */

static int add_meta(st_writer *w, const taca_params *P, const char *const *meta, taca_error *err) {
  char step[32], blocks[32];
  snprintf(step, sizeof step, "%ld", P->step);
  snprintf(blocks, sizeof blocks, "%d-%d", P->cfg.peft.first + 1, P->cfg.peft.last + 1);
  if (st_writer_meta(w, "format", "pt", err) || st_writer_meta(w, "step", step, err) ||
      st_writer_meta(w, "peft", P->cfg.peft.kind == VIT_PEFT_LORA ? "lora" : "adapter", err) ||
      st_writer_meta(w, "blocks", blocks, err))
    return -1;
  for (int i = 0; meta && meta[i]; i += 2) {
    if (!meta[i + 1]) return taca_fail(err, "metadata key '%s' has no value", meta[i]);
    if (st_writer_meta(w, meta[i], meta[i + 1], err)) return -1;
  }
  return 0;
}

/* Writes the tensors of the flat buffers bufs[0..nb) with name suffixes sfx[0..nb). */
static int save_flat(const taca_params *P, const char *path, const float *const *bufs,
                     const char *const *sfx, int nb, const char *const *meta, taca_error *err) {
  float *owned[2] = {NULL, NULL};
  const float *host[2];
  int rc = -1;
  st_writer *w = st_writer_new();
  if (!w) return taca_fail(err, "%s: out of memory", path);
  for (int b = 0; b < nb; b++)
    if (!(host[b] = host_view(P, bufs[b], P->n, &owned[b]))) {
      taca_fail(err, "%s: out of memory", path);
      goto done;
    }
  if (add_meta(w, P, meta, err)) goto done;
  for (int i = 0; i < P->n_tensors; i++) {
    const taca_tensor_info *t = &P->info[i];
    for (int b = 0; b < nb; b++) {
      char name[64];
      snprintf(name, sizeof name, "%s%s", t->name, sfx[b]);
      if (st_writer_add(w, name, TACA_DT_F32, t->ndim, t->shape, host[b] + t->offset, err))
        goto done;
    }
  }
  rc = st_writer_save(w, path, err);
done:
  st_writer_free(w);
  free(owned[0]), free(owned[1]);
  return rc;
}

/* Reads every tensor of the table (with suffixes sfx) from path into host staging (nb * n floats);
 * strict about missing, mis-shaped and unexpected tensors. */
static int load_flat(const taca_params *P, const char *path, float *stage, const char *const *sfx,
                     int nb, st_file *f, taca_error *err) {
  if (st_open(f, path, err)) return -1;
  int matched = 0;
  for (int i = 0; i < P->n_tensors; i++) {
    const taca_tensor_info *t = &P->info[i];
    for (int b = 0; b < nb; b++) {
      char name[64];
      snprintf(name, sizeof name, "%s%s", t->name, sfx[b]);
      const st_tensor *s = st_find(f, name);
      if (!s)
        return taca_fail(err, "%s: missing tensor '%s' (the checkpoint does not match this "
                              "configuration: %s in blocks %d-%d)",
                         path, name, P->cfg.peft.kind == VIT_PEFT_LORA ? "LoRA" : "adapters",
                         P->cfg.peft.first + 1, P->cfg.peft.last + 1);
      int ok = s->ndim == t->ndim && s->shape[0] == t->shape[0] &&
               (t->ndim == 1 || s->shape[1] == t->shape[1]);
      if (!ok) {
        char got[96] = "[", want[48];
        for (int d = 0; d < s->ndim && d < 4; d++)
          snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "",
                   (long long)s->shape[d]);
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s]", s->ndim > 4 ? ", ..." : "");
        if (t->ndim == 2)
          snprintf(want, sizeof want, "[%lld, %lld]", (long long)t->shape[0], (long long)t->shape[1]);
        else
          snprintf(want, sizeof want, "[%lld]", (long long)t->shape[0]);
        return taca_fail(err, "%s: tensor '%s' has shape %s, expected %s", path, name, got, want);
      }
      if (!taca_dtype_is_float(s->dtype))
        return taca_fail(err, "%s: tensor '%s' has dtype %s, expected F32, F16 or BF16", path, name,
                         taca_dtype_name(s->dtype));
      if (st_to_f32(s, stage + (size_t)b * P->n + t->offset, err))
        return taca_error_prefix(err, "%s: tensor '%s'", path, name);
      matched++;
    }
  }
  if (matched != f->n) {
    for (int j = 0; j < f->n; j++) {
      int known = 0;
      for (int i = 0; i < P->n_tensors && !known; i++)
        for (int b = 0; b < nb && !known; b++) {
          size_t k = strlen(P->info[i].name);
          known = !strncmp(f->tensors[j].name, P->info[i].name, k) &&
                  !strcmp(f->tensors[j].name + k, sfx[b]);
        }
      if (!known)
        return taca_fail(err, "%s: unexpected tensor '%s' (not part of this configuration: %s in "
                              "blocks %d-%d)",
                         path, f->tensors[j].name,
                         P->cfg.peft.kind == VIT_PEFT_LORA ? "LoRA" : "adapters",
                         P->cfg.peft.first + 1, P->cfg.peft.last + 1);
    }
  }
  return 0;
}

int taca_params_save(const taca_params *P, const char *path, const char *const *meta,
                     taca_error *err) {
  const float *bufs[1] = {P->flat_p};
  const char *sfx[1] = {""};
  return save_flat(P, path, bufs, sfx, 1, meta, err);
}

int taca_params_load(taca_params *P, const char *path, taca_error *err) {
  float *stage = calloc(P->n ? P->n : 1, sizeof(float));
  if (!stage) return taca_fail(err, "%s: out of memory", path);
  st_file f = {0};
  const char *sfx[1] = {""};
  int rc = load_flat(P, path, stage, sfx, 1, &f, err);
  if (rc == 0) P->be->upload(P->be, P->flat_p, stage, sizeof(float) * P->n);
  st_close(&f);
  free(stage);
  return rc;
}

int taca_optim_save(const taca_params *P, const char *path, const char *const *meta,
                    taca_error *err) {
  const float *bufs[2] = {P->flat_m, P->flat_v};
  const char *sfx[2] = {".m", ".v"};
  return save_flat(P, path, bufs, sfx, 2, meta, err);
}

int taca_optim_load(taca_params *P, const char *path, taca_error *err) {
  float *stage = calloc(2 * P->n + 1, sizeof(float));
  if (!stage) return taca_fail(err, "%s: out of memory", path);
  st_file f = {0};
  const char *sfx[2] = {".m", ".v"};
  int rc = load_flat(P, path, stage, sfx, 2, &f, err);
  long step = 0;
  if (rc == 0 && st_meta_count(&f, "step", &step, err)) rc = taca_error_prefix(err, "%s", path);
  if (rc == 0) {
    P->be->upload(P->be, P->flat_m, stage, sizeof(float) * P->n);
    P->be->upload(P->be, P->flat_v, stage + P->n, sizeof(float) * P->n);
    P->step = step;
  }
  st_close(&f);
  free(stage);
  return rc;
}
