/* clip_export.h: writing a loaded CLIP model's towers in the HuggingFace layout (tensor names and
 * shapes of transformers' CLIPModel, config.json tower objects), whatever layout it was loaded from.
 * Used by `taca export` (methods/taca_export.h). The model must be on a host-memory backend. */
#ifndef TACA_NN_CLIP_EXPORT_H
#define TACA_NN_CLIP_EXPORT_H

#include <jansson.h>

#include "base/error.h"
#include "base/safetensors.h"
#include "nn/clip.h"

/* Adds the tensors of the towers (CLIP_TOWER_VISION: vision_model.*, visual_projection.weight;
 * CLIP_TOWER_TEXT: text_model.*, text_projection.weight) to w, F32, referencing m's memory (m must
 * outlive st_writer_save). q/k/v are written as separate q_proj/k_proj/v_proj. */
int clip_model_add_hf_tensors(const clip_model *m, unsigned towers, st_writer *w, taca_error *err);

/* The HF config.json object of one tower ("vision_config" or "text_config"), with
 * "projection_dim" = m's embed_dim. New reference; NULL when out of memory. */
json_t *clip_config_hf_tower_json(const clip_config *cfg, unsigned tower);

#endif
