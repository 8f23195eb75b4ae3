/* train_options.h: the command line of taca-train (DESIGN.md "Command line"), parsed into one struct.
 * Every option can also come from the environment as TACA_<NAME> (--batch-size -> TACA_BATCH_SIZE);
 * the command line wins. */
#ifndef TACA_TRAINER_TRAIN_OPTIONS_H
#define TACA_TRAINER_TRAIN_OPTIONS_H

#include <stdint.h>

typedef enum train_loss_kind { LOSS_TACA = 0, LOSS_CONTRASTIVE = 1, LOSS_DISTILL = 2 } train_loss_kind;

typedef struct train_options {
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
  int timeout_ms, retry_budget_ms;
  const char *token;
} train_options;

/* Returns 0 to go on, 1 after printing --help, or 2 after printing a usage error. */
int train_options_parse(train_options *o, int argc, char **argv);

#endif
