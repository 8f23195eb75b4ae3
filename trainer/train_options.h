/* train_options.h: the command line of taca-train (DESIGN.md "Command line"), parsed into one struct.
 * Every option can also come from the environment as TACA_<NAME> (--batch-size -> TACA_BATCH_SIZE);
 * the command line wins. */
#ifndef TACA_TRAINER_TRAIN_OPTIONS_H
#define TACA_TRAINER_TRAIN_OPTIONS_H

#include <stdint.h>

#include "nn/backend.h"

typedef enum train_loss_kind { LOSS_TACA = 0, LOSS_CONTRASTIVE = 1, LOSS_DISTILL = 2 } train_loss_kind;

typedef enum train_objective { OBJECTIVE_TACA = 0, OBJECTIVE_AFT = 1 } train_objective;

typedef struct train_options {
  train_objective objective;
  const char *device;          /* "cpu", "cuda", "cuda:N" */
  /* AFT (DESIGN.md "AFT, precisely"): stored models whose image embeddings are concatenated as the
   * pre-trained features, the downstream architecture, and the methods to train and compare. */
  const char *features, *downstream, *downstream_init, *methods, *test_server, *report;
  double beta, prior_lr;
  int num_classes;             /* 0 = from the test set's labels */
  int lr_given, wd_given;      /* --lr / --weight-decay were set (AFT has its own defaults) */
  int cosine;                  /* -1 = the objective's default (AFT: cosine, TaCA: constant) */
  const char *servers, *new_model, *arch, *out, *targets, *log_json, *init, *resume;
  const char *adapter_layers;  /* "all" or "A-B" (1-based) */
  const char *peft;            /* "adapter" or "lora" */
  int batch_size;              /* global: split evenly over the ranks */
  long steps;
  double lr, weight_decay, lambda;
  int bottleneck;              /* 0 = default for the width */
  int lora_rank;
  double lora_alpha;
  int projector_hidden;
  uint64_t seed;
  long save_every;             /* 0 = only the last step */
  train_loss_kind loss;
  int recompute, threads, dry_run, quiet;
  nn_precision precision;      /* the frozen tower's GEMMs (--precision; TaCA only) */
  int timeout_ms, retry_budget_ms;
  const char *token;
} train_options;

/* The learning rate of the update made at `step` (0-based) of o->steps: o->lr, or with the cosine
 * schedule torch's CosineAnnealingLR(T_max = steps, eta_min = 0): lr (1 + cos(pi step / steps)) / 2. */
double train_lr_at(const train_options *o, double base_lr, long step);

/* The client's on_retry hook (client/taca_client.h): one stderr line per backoff step with the rank
 * (arg: (void *)(intptr_t)rank), the server and the error, so that a missing server is not silent. */
void train_log_retry(void *arg, const char *server, const char *error, int wait_ms, int attempt);

/* Returns 0 to go on, 1 after printing --help, or 2 after printing a usage error. */
int train_options_parse(train_options *o, int argc, char **argv);

#endif
