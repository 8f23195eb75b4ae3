/* taca_adapted.h: the TaCA-adapted encoder as one model: the NEW vision tower with adapters/LoRA and
 * the projector (methods/taca_step.h taca_model_forward: the features `taca eval` scores), and
 * optionally the OLD text tower. Loaded from its sources (NEW + a TaCA checkpoint + OLD) or from a
 * directory `taca export` wrote (methods/taca_export.h; format in docs/export.md). Callers use it
 * through methods/encoder.h. */
#ifndef TACA_METHODS_TACA_ADAPTED_H
#define TACA_METHODS_TACA_ADAPTED_H

#include "base/error.h"
#include "methods/encoder.h"
#include "methods/taca_checkpoint.h"
#include "methods/taca_params.h"
#include "nn/clip.h"

typedef struct taca_adapted taca_adapted;

/* 1 when dir is a directory whose config.json has a "taca" object (an export), 0 when not (or not
 * a directory), -1 when its config.json is not JSON. */
int taca_adapted_is_export(const char *path);

taca_adapted *taca_adapted_open_sources(const char *new_path, const char *arch, const char *checkpoint,
                                        const char *old_path, const char *old_arch, int e_old, float lora_alpha,
                                        nn_backend *be, int max_batch, taca_error *err);
taca_adapted *taca_adapted_open_export(const char *dir, nn_backend *be, int max_batch, taca_error *err);
void taca_adapted_free(taca_adapted *a);

/* Projected features [n, E_old] of n <= max_batch images (pixels as encoder.h). */
int taca_adapted_forward(taca_adapted *a, const float *pixels, int n, float *out, taca_error *err);

int taca_adapted_image_dim(const taca_adapted *a);          /* E_old */
clip_model *taca_adapted_new_model(const taca_adapted *a);  /* the vision tower (NEW) */
clip_model *taca_adapted_text_model(const taca_adapted *a); /* OLD text tower, NULL when absent */
float taca_adapted_logit_scale(const taca_adapted *a);      /* OLD's (0 when absent) */
const taca_params *taca_adapted_params(const taca_adapted *a);
const taca_checkpoint_info *taca_adapted_checkpoint_info(const taca_adapted *a);
/* Source paths as given (open_sources) or as recorded (export); "" when absent. */
const char *taca_adapted_source_path(const taca_adapted *a, const char *which /* "new", "old", "checkpoint" */);
const char *taca_adapted_new_arch(const taca_adapted *a);
/* Fills the adapted fields of p (hashes: computed for sources, recorded for exports). */
int taca_adapted_provenance(taca_adapted *a, encoder_provenance *p, taca_error *err);

#endif
