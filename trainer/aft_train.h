/* aft_train.h: `taca-train --objective aft`: Adaptive Feature Transfer from the cached features of
 * several pre-trained models into a small downstream model (DESIGN.md "AFT, precisely"), and the
 * comparison with standard training and knowledge distillation in the same command.
 *
 * For each method of --methods, in order, from the same initialisation and over the same batches
 * (same seed): --steps updates of the downstream model on CE(task) + beta * term (aft_prior.h), the
 * model group with AdamW at --lr (--weight-decay), the prior group with Adam at --prior-lr, both
 * with the cosine schedule by default. Ranks split each global batch; the term is computed on the
 * all-gathered global batch; model gradients are SUM all-reduced (CE is a mean over the global batch).
 *
 * Outputs in --out DIR: METHOD/step-NNNNNN.safetensors (PyTorch-loadable: the downstream model's
 * tensors, classifier.*, and aft.s or kd.proj.*), --log-json lines with a "method" field, and the
 * report (--report, default DIR/report.json; a table on stdout): test accuracy per method, and for
 * aft the learned rho = sigmoid(s) per source model (mean, min, max over its columns). */
#ifndef TACA_TRAINER_AFT_TRAIN_H
#define TACA_TRAINER_AFT_TRAIN_H

#include "base/error.h"
#include "trainer/collectives.h"
#include "trainer/train_options.h"

int aft_run(const train_options *o, const taca_comm *comm, taca_error *err);

#endif
