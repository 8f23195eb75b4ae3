/* taca_export.h: `taca export`: an adapted encoder (taca_adapted_open_sources: NEW + a TaCA
 * checkpoint + optionally OLD for the text tower) written as one self-contained HuggingFace-layout
 * directory that every --model accepts (methods/encoder.h). Format (docs/export.md):
 *   DIR/config.json            HF CLIPConfig fields: vision_config (NEW's tower, with its own
 *                              projection_dim = E_new), text_config (OLD's, when given),
 *                              projection_dim = E_old, model_type "taca-adapted-clip", and "taca":
 *                              {format: 1, vision_projection_dim: E_new, peft: {kind, blocks "A-B"
 *                              1-based, first/last 0-based, bottleneck | lora_rank + lora_alpha},
 *                              projector: {input E_new, hidden H, output E_old, activation "gelu"},
 *                              preprocess: {image_size, resize, mean, std}, space (= OLD's weights
 *                              xxh3, "" without OLD), sources: {new, old (null without OLD),
 *                              checkpoint}: {path, xxh[, arch, step, targets]}}
 *   DIR/model.safetensors      F32: vision_model.* + visual_projection.weight [E_new, W] (NEW, HF
 *                              names), adapter.L.* or lora.L.* and projector.* (checkpoint names,
 *                              methods/taca_checkpoint.h), text_model.* + text_projection.weight
 *                              [E_old, W_text] and logit_scale (OLD). __metadata__ carries the
 *                              checkpoint's keys (step, taca.peft, taca.layers, taca.lora_alpha,
 *                              taca.targets) so the TaCA tensors read back as a checkpoint would.
 *   DIR/preprocessor_config.json  HF CLIPImageProcessor settings for the same preprocessing.
 * Files are written atomically; DIR is created when missing. */
#ifndef TACA_METHODS_TACA_EXPORT_H
#define TACA_METHODS_TACA_EXPORT_H

#include "base/error.h"
#include "methods/taca_adapted.h"

int taca_export_write(taca_adapted *a, const char *dir, taca_error *err);

#endif
