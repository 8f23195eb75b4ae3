/* taca_step.c: TaCA's forward to the projected features and backward to the trainable tensors
 * (see taca_step.h). */
#include "methods/taca_step.h"

#include <stdlib.h>

#include "methods/projector.h"
#include "nn/backend_cuda.h"
#include "nn/vit_train.h"

struct taca_model {
  const clip_model *m;
  nn_backend *be;
  vit_train *vt;
  int max_batch, e_new, hidden, e_old;
  float *mem;                            /* one backend allocation for the buffers below */
  float *feat, *dfeat;                   /* [B, E_new] tower output and its gradient */
  float *pre, *hid, *dhid;               /* [B, H] projector activations, scratch */
  float *f, *df;                         /* [B, E_old] projector output and its gradient */
  float *f_host, *df_host;               /* [B, E_old] host staging for the single-process step */
  double *loss_work;
  int B;                                 /* batch of the last forward */
};

taca_model *taca_model_create(const clip_model *new_model, const taca_params *P, int max_batch,
                              int recompute, taca_error *err) {
  const clip_config *c = &new_model->cfg;
  const taca_param_config *pc = &P->cfg;
  if (pc->width != c->vision.width || pc->layers != c->vision.layers || pc->e_new != c->embed_dim) {
    taca_fail(err, "TaCA parameters are for a tower of width %d, %d blocks, embedding %d; the new "
                   "model has %d, %d, %d",
              pc->width, pc->layers, pc->e_new, c->vision.width, c->vision.layers, c->embed_dim);
    return NULL;
  }
  taca_model *tm = calloc(1, sizeof *tm);
  if (!tm) {
    taca_fail(err, "out of memory");
    return NULL;
  }
  tm->m = new_model;
  tm->be = new_model->be;
  tm->max_batch = max_batch;
  tm->e_new = pc->e_new, tm->hidden = pc->proj_hidden, tm->e_old = pc->e_old;
  if (!(tm->vt = vit_train_create(new_model, &pc->peft, max_batch, recompute, err))) goto fail;
  const size_t B = max_batch, En = tm->e_new, H = tm->hidden, Eo = tm->e_old;
  const size_t total = 2 * B * En + 3 * B * H + 2 * B * Eo;
  if (!(tm->mem = tm->be->alloc(tm->be, sizeof(float) * total))) {
    taca_fail(err, "out of memory for projector activations");
    goto fail;
  }
  float *p = tm->mem;
  tm->feat = p, p += B * En;
  tm->dfeat = p, p += B * En;
  tm->pre = p, p += B * H;
  tm->hid = p, p += B * H;
  tm->dhid = p, p += B * H;
  tm->f = p, p += B * Eo;
  tm->df = p;
  tm->f_host = malloc(sizeof(float) * B * Eo);
  tm->df_host = malloc(sizeof(float) * B * Eo);
  tm->loss_work = malloc(sizeof(double) * taca_loss_work_size(max_batch, tm->e_old));
  if (!tm->f_host || !tm->df_host || !tm->loss_work) {
    taca_fail(err, "out of memory");
    goto fail;
  }
  return tm;
fail:
  taca_model_free(tm);
  return NULL;
}

void taca_model_free(taca_model *tm) {
  if (!tm) return;
  vit_train_free(tm->vt);
  if (tm->mem) tm->be->free(tm->be, tm->mem);
  free(tm->f_host), free(tm->df_host), free(tm->loss_work);
  free(tm);
}

size_t taca_model_memory_bytes(const taca_model *tm) {
  const size_t B = tm->max_batch;
  return vit_train_memory_bytes(tm->vt) +
         sizeof(float) * (2 * B * tm->e_new + 3 * B * tm->hidden + 2 * B * tm->e_old);
}

int taca_model_forward(taca_model *tm, const taca_params *P, const float *pixels, int B, float *f,
                       taca_error *err) {
  if (vit_train_forward(tm->vt, P->p.blocks, pixels, B, tm->feat, err)) return -1;
  projector_forward(tm->be, &P->p.proj, tm->f, tm->pre, tm->hid, tm->feat, B, tm->e_new, tm->hidden,
                    tm->e_old);
  tm->be->download(tm->be, f, tm->f, sizeof(float) * B * tm->e_old);
  tm->be->synchronize(tm->be);
  tm->B = B;
  return 0;
}

int taca_model_backward(taca_model *tm, taca_params *P, const float *df, taca_error *err) {
  if (tm->B <= 0) return taca_fail(err, "taca_model_backward without a forward");
  const int B = tm->B;
  tm->be->upload(tm->be, tm->df, df, sizeof(float) * B * tm->e_old);
  projector_backward(tm->be, &P->p.proj, &P->g.proj, tm->dfeat, tm->dhid, tm->df, tm->feat, tm->pre,
                     tm->hid, B, tm->e_new, tm->hidden, tm->e_old);
  if (vit_train_backward(tm->vt, P->p.blocks, P->g.blocks, tm->dfeat, err)) return -1;
  tm->be->synchronize(tm->be);
  /* A device backend's failure is sticky and silent (NaN results): report it before the ranks
   * agree on this step, not after the all-reduce. */
  return nn_backend_cuda_check(tm->be, err);
}

int taca_step_forward_backward(taca_model *tm, taca_params *P, const float *pixels,
                               const float *old_img, const float *old_txt, int B,
                               const taca_loss_config *lc, taca_loss_terms *terms, taca_error *err) {
  taca_params_zero_grad(P);
  if (taca_model_forward(tm, P, pixels, B, tm->f_host, err) ||
      taca_loss(lc, tm->f_host, old_txt, old_img, B, tm->e_old, 0, B, terms, tm->df_host,
                tm->loss_work, err) ||
      taca_model_backward(tm, P, tm->df_host, err))
    return -1;
  return 0;
}
