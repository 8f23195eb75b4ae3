/* aft_model.c: AFT's downstream model, a feature extractor (linear or a ViT tower) and a linear
 * classifier, with forward, backward and AdamW (see aft_model.h). */
#include "methods/aft_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend_cuda.h"
#include "nn/clip_config.h"
#include "base/rng.h"
#include "base/safetensors.h"

/* PyTorch nn.Linear's default initialisation: weight and bias ~ U(+-1/sqrt(fan_in)). */
static void linear_init(float *w, float *b, int out, int in, uint64_t *s) {
  const double bound = 1.0 / sqrt((double)in);
  for (size_t i = 0; i < (size_t)out * in; i++) w[i] = (float)(bound * (2.0 * rng_uniform01(s) - 1.0));
  for (int i = 0; i < out; i++) b[i] = (float)(bound * (2.0 * rng_uniform01(s) - 1.0));
}

static int parse_linear(const char *arch, int *D, taca_error *err) {
  if (strncmp(arch, "linear", 6)) return 0;
  if (arch[6] == 0) {
    *D = 64;
    return 1;
  }
  char *end;
  long d = arch[6] == ':' ? strtol(arch + 7, &end, 10) : -1;
  if (arch[6] != ':' || end == arch + 7 || *end || d < 1 || d > 65536) {
    taca_fail(err, "--downstream '%s': expected linear or linear:D with D features in 1..65536", arch);
    return -1;
  }
  *D = (int)d;
  return 1;
}

aft_model *aft_model_create(const char *arch, int S, int classes, nn_backend *be, int max_batch,
                            uint64_t seed, taca_error *err) {
  if (S <= 0 || classes < 2 || max_batch <= 0) {
    taca_fail(err, "aft_model: bad sizes (image %d, classes %d, batch %d)", S, classes, max_batch);
    return NULL;
  }
  aft_model *am = calloc(1, sizeof *am);
  if (!am) {
    taca_fail(err, "out of memory");
    return NULL;
  }
  am->be = be;
  am->S = S;
  am->classes = classes;
  am->max_batch = max_batch;
  snprintf(am->arch, sizeof am->arch, "%s", arch);
  int D = 0, lin = parse_linear(arch, &D, err);
  if (lin < 0) goto fail;
  uint64_t rs = seed ^ 0xA5F7000000000000ull;
  if (lin) {
    am->in_dim = 3 * S * S;
    am->feat_dim = D;
  } else {
    clip_config cfg;
    if (clip_config_from_arg(&cfg, arch, err)) goto fail;
    cfg.has_text = 0; /* the vision tower only */
    if (cfg.image_size != S) {
      taca_fail(err, "--downstream %s takes %d px images, the store holds %d px crops", arch, cfg.image_size, S);
      goto fail;
    }
    if (!(am->tower = clip_train_create(&cfg, be, max_batch, seed, err))) goto fail;
    am->is_vit = 1;
    am->feat_dim = cfg.embed_dim;
  }
  const size_t dF = am->feat_dim, C = classes;
  size_t off = 0;
  if (!am->is_vit) am->off_fw = off, off += dF * am->in_dim;
  am->off_cw = off, off += C * dF;
  am->n_decay = off;
  if (!am->is_vit) am->off_fb = off, off += dF;
  am->off_cb = off, off += C;
  am->n = off;
  const size_t B = max_batch;
  size_t acts = B * C * 2 + B * dF + (am->is_vit ? 0 : B * dF + 2 * B * am->in_dim);
  if (!(am->mem = be->alloc(be, sizeof(float) * (4 * am->n + acts)))) {
    taca_fail(err, "out of memory for the downstream model (%zu parameters)", am->n);
    goto fail;
  }
  am->p = am->mem, am->g = am->p + am->n, am->m = am->g + am->n, am->v = am->m + am->n;
  float *a = am->v + am->n;
  am->logits = a, a += B * C;
  am->dlogits = a, a += B * C;
  am->dfeat = a, a += B * dF;
  if (!am->is_vit) {
    am->feat = a, a += B * dF;
    am->pix[0] = a, a += B * am->in_dim;
    am->pix[1] = a;
  }
  float *host = malloc(sizeof(float) * am->n);
  if (!host) {
    taca_fail(err, "out of memory");
    goto fail;
  }
  if (!am->is_vit) linear_init(host + am->off_fw, host + am->off_fb, (int)dF, am->in_dim, &rs);
  linear_init(host + am->off_cw, host + am->off_cb, (int)C, (int)dF, &rs);
  be->upload(be, am->p, host, sizeof(float) * am->n);
  free(host);
  be->zero(be, am->g, sizeof(float) * 3 * am->n);
  return am;
fail:
  aft_model_free(am);
  return NULL;
}

void aft_model_free(aft_model *am) {
  if (!am) return;
  clip_train_free(am->tower);
  if (am->mem) am->be->free(am->be, am->mem);
  free(am);
}

size_t aft_model_param_count(const aft_model *am) { return am->n + (am->tower ? am->tower->n : 0); }

int aft_model_load_tower(aft_model *am, const char *path, const char *arch, taca_error *err) {
  if (!am->is_vit) return taca_fail(err, "--downstream-init needs a ViT downstream model, not '%s'", am->arch);
  return clip_train_load(am->tower, path, arch, err);
}

int aft_model_forward(aft_model *am, const float *pixels, int B, float *feat, float *logits,
                      taca_error *err) {
  if (B <= 0 || B > am->max_batch)
    return taca_fail(err, "aft_model: batch %d is outside 1..%d", B, am->max_batch);
  nn_backend *be = am->be;
  const int dF = am->feat_dim, C = am->classes;
  const float *F;
  if (am->is_vit) {
    if (!(F = clip_train_image_forward(am->tower, pixels, B, err))) return -1;
  } else {
    /* a copy: the backward needs the input after the caller has reused its buffer; into the buffer
     * the previous step's backward did not read (see aft_model.h) */
    float *x = am->pix[am->pix_next];
    am->pix_next ^= 1;
    be->upload(be, x, pixels, sizeof(float) * B * am->in_dim);
    be->linear_forward(be, am->feat, dF, x, am->in_dim, am->p + am->off_fw, am->p + am->off_fb, B,
                       am->in_dim, dF, 0);
    am->last_input = x;
    F = am->feat;
  }
  be->linear_forward(be, am->logits, C, F, dF, am->p + am->off_cw, am->p + am->off_cb, B, dF, C, 0);
  am->last_feat = F;
  am->last_B = B;
  if (feat) be->download(be, feat, F, sizeof(float) * B * dF);
  if (logits) be->download(be, logits, am->logits, sizeof(float) * B * C);
  return 0;
}

int aft_model_backward(aft_model *am, const float *dfeat, const float *dlogits, taca_error *err) {
  nn_backend *be = am->be;
  const int B = am->last_B, dF = am->feat_dim, C = am->classes;
  if (B <= 0) return taca_fail(err, "aft_model: backward without a forward");
  be->upload(be, am->dlogits, dlogits, sizeof(float) * B * C);
  if (dfeat) be->upload(be, am->dfeat, dfeat, sizeof(float) * B * dF);
  else be->zero(be, am->dfeat, sizeof(float) * B * dF);
  /* classifier: dF += dlogits Wc; dWc += dlogits^T F; dbc += colsum(dlogits) */
  be->linear_backward(be, am->dfeat, dF, am->g + am->off_cw, am->g + am->off_cb, am->dlogits, C,
                      am->last_feat, dF, am->p + am->off_cw, B, dF, C, 1);
  if (am->is_vit) return clip_train_image_backward(am->tower, am->dfeat, err);
  be->linear_backward(be, NULL, 0, am->g + am->off_fw, am->g + am->off_fb, am->dfeat, dF,
                      am->last_input, am->in_dim, am->p + am->off_fw, B, am->in_dim, dF, 0);
  return nn_backend_cuda_check(be, err); /* a device failure before the ranks agree on the step */
}

void aft_model_zero_grad(aft_model *am) {
  am->be->zero(am->be, am->g, sizeof(float) * am->n);
  if (am->tower) clip_train_zero_grad(am->tower);
}

int aft_model_grad_buffers(aft_model *am, float **bufs, size_t *lens) {
  int k = 0;
  if (am->tower) bufs[k] = am->tower->flat_g, lens[k++] = am->tower->n;
  bufs[k] = am->g, lens[k++] = am->n;
  return k;
}

void aft_model_update(aft_model *am, double lr, double weight_decay) {
  nn_backend *be = am->be;
  if (am->tower) {
    clip_train_optim o = {.lr = lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = weight_decay};
    clip_train_update(am->tower, &o);
  }
  am->step++;
  const size_t d = am->n_decay;
  be->adamw_update(be, am->p, am->g, am->m, am->v, d, lr, 0.9, 0.999, 1e-8, weight_decay, am->step);
  be->adamw_update(be, am->p + d, am->g + d, am->m + d, am->v + d, am->n - d, lr, 0.9, 0.999, 1e-8, 0.0,
                   am->step);
}

static float *host_copy(nn_backend *be, const float *dev, size_t n, float **owned, int *k) {
  float *h = malloc(sizeof(float) * (n ? n : 1));
  if (!h) return NULL;
  be->download(be, h, dev, sizeof(float) * n);
  owned[(*k)++] = h;
  return h;
}

int aft_model_add_tensors(const aft_model *am, st_writer *w, float **owned, taca_error *err) {
  nn_backend *be = am->be;
  int k = 0;
  const float *own = host_copy(be, am->p, am->n, owned, &k);
  if (!own) return taca_fail(err, "out of memory");
  if (am->tower) {
    const clip_train *ct = am->tower;
    const float *tw = host_copy(be, ct->flat_p, ct->n, owned, &k);
    if (!tw) return taca_fail(err, "out of memory");
    for (int i = 0; i < ct->n_tensors; i++) {
      const clip_train_tensor_info *t = &ct->info[i];
      if (st_writer_add(w, t->name, TACA_DT_F32, t->ndim, t->shape, tw + t->offset, err)) return -1;
    }
  } else {
    const int64_t sw[2] = {am->feat_dim, am->in_dim}, sb[1] = {am->feat_dim};
    if (st_writer_add(w, "features.weight", TACA_DT_F32, 2, sw, own + am->off_fw, err) ||
        st_writer_add(w, "features.bias", TACA_DT_F32, 1, sb, own + am->off_fb, err))
      return -1;
  }
  const int64_t cw[2] = {am->classes, am->feat_dim}, cb[1] = {am->classes};
  if (st_writer_add(w, "classifier.weight", TACA_DT_F32, 2, cw, own + am->off_cw, err) ||
      st_writer_add(w, "classifier.bias", TACA_DT_F32, 1, cb, own + am->off_cb, err))
    return -1;
  return 0;
}

static int add_flat(nn_backend *be, st_writer *w, const char *name, const float *dev, size_t n, float **owned,
                    int *k, taca_error *err) {
  const float *h = host_copy(be, dev, n, owned, k);
  if (!h) return taca_fail(err, "out of memory");
  const int64_t shape[1] = {(int64_t)n};
  return st_writer_add(w, name, TACA_DT_F32, 1, shape, h, err);
}

int aft_model_add_state(const aft_model *am, st_writer *w, float **owned, taca_error *err) {
  nn_backend *be = am->be;
  int k = 0;
  char steps[2][32];
  snprintf(steps[0], sizeof steps[0], "%ld", am->step);
  snprintf(steps[1], sizeof steps[1], "%ld", am->tower ? am->tower->step : 0L);
  if (st_writer_meta(w, "taca.model_step", steps[0], err) || st_writer_meta(w, "taca.tower_step", steps[1], err))
    return -1;
  if (am->tower) {
    const clip_train *ct = am->tower;
    if (add_flat(be, w, "tower.p", ct->flat_p, ct->n, owned, &k, err) ||
        add_flat(be, w, "tower.m", ct->flat_m, ct->n, owned, &k, err) ||
        add_flat(be, w, "tower.v", ct->flat_v, ct->n, owned, &k, err))
      return -1;
  }
  if (add_flat(be, w, "model.p", am->p, am->n, owned, &k, err) || add_flat(be, w, "model.m", am->m, am->n, owned, &k, err) ||
      add_flat(be, w, "model.v", am->v, am->n, owned, &k, err))
    return -1;
  return 0;
}

static int load_flat(nn_backend *be, const st_file *f, const char *name, float *dev, size_t n, taca_error *err) {
  float *h = malloc(sizeof(float) * (n ? n : 1));
  if (!h) return taca_fail(err, "out of memory");
  int rc = st_read_f32_exact(f, name, n, h, err);
  if (!rc) be->upload(be, dev, h, sizeof(float) * n);
  free(h);
  return rc;
}

int aft_model_load_state(aft_model *am, const st_file *f, taca_error *err) {
  nn_backend *be = am->be;
  long ms = 0, ts = 0;
  if (st_meta_count(f, "taca.model_step", &ms, err) || st_meta_count(f, "taca.tower_step", &ts, err)) return -1;
  if (am->tower) {
    clip_train *ct = am->tower;
    if (load_flat(be, f, "tower.p", ct->flat_p, ct->n, err) || load_flat(be, f, "tower.m", ct->flat_m, ct->n, err) ||
        load_flat(be, f, "tower.v", ct->flat_v, ct->n, err))
      return -1;
    ct->step = ts;
  }
  if (load_flat(be, f, "model.p", am->p, am->n, err) || load_flat(be, f, "model.m", am->m, am->n, err) ||
      load_flat(be, f, "model.v", am->v, am->n, err))
    return -1;
  am->step = ms;
  return 0;
}
