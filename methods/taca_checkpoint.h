/* taca_checkpoint.h: THE TaCA checkpoint format, written and read only here (the trainer, eval and
 * the adapted encoder all go through it).
 *
 * A checkpoint is a safetensors file of F32 tensors with DESIGN.md's names and nn.Linear layouts
 * ([out, in]); L is the 0-based block index of the new tower:
 *   adapter.L.down.weight [k, W]   adapter.L.down.bias [k]   adapter.L.up.weight [W, k]   adapter.L.up.bias [W]
 *   lora.L.q.A [r, W]   lora.L.q.B [W, r]   lora.L.v.A [r, W]   lora.L.v.B [W, r]      (--peft lora)
 *   projector.fc1.weight [H, E_new]   projector.fc1.bias [H]   projector.fc2.weight [E_old, H]   projector.fc2.bias [E_old]
 * Its __metadata__: "format": "pt", "step" (updates applied), "peft" ("adapter" | "lora"),
 * "blocks" ("A-B", 1-based), and from the trainer (taca_checkpoint_train_meta): taca.lora_alpha,
 * taca.batch_size, taca.seed, taca.layers ("A-B"), taca.peft ("adapter/k" | "lora/r"), taca.targets
 * (the store model trained against), taca.new_model (its path), taca.world_size.
 * The optimizer state is a separate safetensors file with "NAME.m" and "NAME.v" for every tensor and
 * the step count in its metadata ("step").
 *
 * The tensors are the source of truth for the layout (taca_checkpoint_inspect); the metadata, when
 * present, must agree with them. A PyTorch-written file without metadata loads too. */
#ifndef TACA_METHODS_TACA_CHECKPOINT_H
#define TACA_METHODS_TACA_CHECKPOINT_H

#include <stdint.h>

#include "base/error.h"
#include "base/safetensors.h"
#include "methods/taca_params.h"
#include "nn/clip_config.h"

/* Parameters as safetensors (F32), atomically. meta: NULL, or NULL-terminated key, value pairs
 * added to __metadata__ (besides "format", "step", "peft" and "blocks"). */
int taca_params_save(const taca_params *P, const char *path, const char *const *meta,
                     taca_error *err);
/* Loads parameters (F32, F16 or BF16) saved by taca_params_save or written by PyTorch. Strict:
 * every tensor of this configuration must be present with its shape, and no other tensor. Does not
 * touch gradients, moments or step. */
int taca_params_load(taca_params *P, const char *path, taca_error *err);
/* The same from an open file that holds other tensors too (an exported model directory's
 * model.safetensors): only this configuration's names are read; others are ignored. */
int taca_params_load_from(taca_params *P, const st_file *f, const char *path, taca_error *err);

/* AdamW state (NAME.m, NAME.v, metadata "step"), atomically; and its strict loader for --resume. */
int taca_optim_save(const taca_params *P, const char *path, const char *const *meta,
                    taca_error *err);
int taca_optim_load(taca_params *P, const char *path, taca_error *err);

/* What a checkpoint says about itself. */
typedef struct taca_checkpoint_info {
  long step;           /* "step" metadata; -1 when absent */
  char peft[32];       /* "adapter/128" or "lora/8" (from the tensors) */
  char layers[32];     /* "A-B", 1-based (from the tensors) */
  char targets[64];    /* taca.targets, "" when absent */
  int proj_hidden;
  long trainable;      /* parameter count */
} taca_checkpoint_info;

/* The configuration of the checkpoint at path for a new tower of new_cfg: PEFT kind, block range,
 * bottleneck or rank, projector sizes, read from the tensors and checked against the metadata.
 * e_old > 0: the projector must output e_old dims; <= 0: e_old is read from the file. lora_alpha is
 * used when the file does not record taca.lora_alpha. Errors name the file and the mismatch. */
int taca_checkpoint_inspect(const char *path, const clip_config *new_cfg, int e_old, float lora_alpha,
                            taca_param_config *pc, taca_checkpoint_info *info, taca_error *err);

/* The trainer's metadata for a run: kv is the NULL-terminated key, value list to save, must the
 * subset a resumed run must match (taca.batch_size, seed, layers, peft, targets). Strings live in m. */
typedef struct taca_checkpoint_meta {
  char lora_alpha[32], batch_size[32], seed[32], layers[64], peft[64], world_size[32];
  char targets[128], new_model[4096];
  const char *kv[17];
  const char *must[11];
} taca_checkpoint_meta;
/* 0 when the metadata of the checkpoint at path holds every key, value pair of must (NULL-terminated);
 * else an error naming the first key that differs ("resume with the same settings"). */
int taca_checkpoint_match_meta(const char *path, const char *const *must, taca_error *err);
void taca_checkpoint_train_meta(taca_checkpoint_meta *m, const taca_param_config *pc, int batch_size, int world,
                                uint64_t seed, const char *targets, const char *new_model);

#endif
