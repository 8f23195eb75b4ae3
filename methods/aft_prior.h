/* aft_prior.h: the transfer term of each method AFT compares, on the host, over one (global)
 * minibatch of downstream features F [n, dF] and pre-trained features P [n, dP], with its own
 * parameters and their Adam optimizer (amazon-science/adaptive-feature-transfer: prior.py and the
 * prior parameter group of train.py):
 *   aft  beta R(F, P; s), methods/aft_loss.h, s [dP] init 0 (rho = 0.5)                     KernelPrior
 *   kd   beta mean((F Wk^T + bk - P)^2) over all n dP entries, Wk [dP, dF], bk [dP]
 *        initialised as nn.Linear (U(+-1/sqrt(dF)))                                    KDPrior
 *   stl  0: standard training (no parameters)
 * The prior parameters are their own group: Adam (torch.optim.AdamW with weight decay 0: betas
 * 0.9/0.999, eps 1e-8) at the prior learning rate (1e-2 by default).
 * Every rank computes the term on the all-gathered global batch and gets identical prior gradients,
 * so the prior parameters stay identical without an all-reduce. */
#ifndef TACA_METHODS_AFT_PRIOR_H
#define TACA_METHODS_AFT_PRIOR_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef enum aft_method { AFT_METHOD_AFT = 0, AFT_METHOD_STL = 1, AFT_METHOD_KD = 2 } aft_method;

const char *aft_method_name(aft_method m);   /* "aft", "stl", "kd" */
int aft_method_parse(const char *name, size_t len, aft_method *m); /* 0, or -1 when unknown */

typedef struct aft_prior {
  aft_method method;
  int dF, dP, max_n;
  size_t n;                  /* parameters */
  float *p, *g, *m, *v;      /* one allocation: params | grads | Adam m | Adam v */
  long step;
  double *work;              /* aft_loss scratch */
  float *pred;               /* kd: [max_n, dP] */
  float *ds;                 /* aft: dR/ds [dP] */
} aft_prior;

int aft_prior_init(aft_prior *pr, aft_method method, int dF, int dP, int max_n, uint64_t seed,
                   taca_error *err);
void aft_prior_free(aft_prior *pr);

/* The term on a batch of n <= max_n rows: *value = R (aft), the MSE (kd) or 0 (stl), unscaled;
 * dF_out [n, dF] = d(beta * value)/dF (overwritten; zeros for stl); the prior parameters' gradient
 * of beta * value is ACCUMULATED into pr->g. */
int aft_prior_loss(aft_prior *pr, const float *F, const float *P, int n, double beta, double *value,
                   float *dF_out, taca_error *err);

void aft_prior_zero_grad(aft_prior *pr);
void aft_prior_update(aft_prior *pr, double lr);

/* For --resume: "prior.p|m|v" (when the method has parameters) and metadata "taca.prior_step". */
struct st_writer;
struct st_file;
int aft_prior_add_state(const aft_prior *pr, struct st_writer *w, char *step_buf, size_t n, taca_error *err);
int aft_prior_load_state(aft_prior *pr, const struct st_file *f, taca_error *err);

/* aft: s [dP] (NULL otherwise). */
const float *aft_prior_s(const aft_prior *pr);

#endif
