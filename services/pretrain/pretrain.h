/* pretrain.h: the pretraining job behind `taca pretrain`: trains a small CLIP model from scratch,
 * CLIP-style (both towers and the logit scale, open_clip's recipe: symmetric contrastive loss, AdamW
 * with weight decay on matrices only, cosine learning rate with linear warmup, logit scale clamped
 * to ln 100), on the synthetic captioned-shapes data set rendered on the fly (pretrain_feed.h);
 * evaluates it on held-out samples and saves it as a HuggingFace CLIP directory that the rest of the
 * pipeline loads. This is how the demo makes its "old" and "new" models (deploy/demo/). The
 * command line (services/cli/cmd_pretrain.c) only parses and checks the options. */
#ifndef TACA_PRETRAIN_H
#define TACA_PRETRAIN_H

#include "base/error.h"
#include "nn/clip.h"

typedef struct pretrain_options {
  const char *arch, *out, *init, *log_json;
  long long synth_n, synth_start, synth_seed, eval_n, eval_start;
  int size, steps, batch, warmup, threads, log_every;
  double lr, wd, beta1, beta2, eps;
  long long seed;
} pretrain_options;

/* Trains the architecture cfg (checked by the caller: a text tower with CLIP's vocabulary) as o says,
 * logs progress on stderr (and o->log_json), evaluates, saves o->out. *summary_out receives the
 * one-line JSON summary (malloc'd; also stored in model.safetensors' metadata "taca.pretrain").
 * -1 with a reason in err on failure. */
int pretrain_run(const pretrain_options *o, const clip_config *cfg, char **summary_out, taca_error *err);

#endif
