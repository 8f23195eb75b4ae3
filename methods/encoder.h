/* encoder.h: THE image/text encoder behind every `--model PATH [--arch A]` (taca embed, precompute,
 * eval, taca-featured). One handle, two kinds:
 *
 *   "clip"     a plain CLIP model: a HuggingFace directory (config.json + model.safetensors), or an
 *              open_clip .safetensors state dict with --arch (built-in name or model-config JSON).
 *              Image and text features are its own (HF get_image_features / get_text_features).
 *   "adapted"  a TaCA-adapted encoder: the NEW vision tower + adapters/LoRA + projector, and the OLD
 *              text tower. Loaded from an exported directory (`taca export`, format in
 *              docs/export.md; recognised by the "taca" object of its config.json), or from NEW +
 *              a TaCA checkpoint (+ OLD for text) with encoder_open_adapted. Image features are the
 *              projector output (the OLD embedding space, width E_old); text features are the OLD
 *              text tower's. The forward is methods/taca_step.h's taca_model_forward, the very code
 *              `taca eval` scores, so exported, embedded and evaluated features are bit-identical
 *              for the same batch split.
 *
 * Contract (every field below is stable; callers rely on it):
 *   - encoder_open(path, arch, be, max_batch, err): be is the caller's backend (not owned; it
 *     must outlive the encoder). max_batch bounds the rows of one forward (adapted models allocate
 *     activations for it: the inputs of the blocks from the first adapted one up, (L + 1) x B x T x W
 *     floats at most, plus one block's activations); larger embed calls are split into chunks of
 *     max_batch rows, in order. <= 0 means 32. Features are bit-identical for the same chunks;
 *     another batch split may change the last bits (GEMM blocking depends on the row count).
 *   - Pixels: embed_images takes normalised pixels, F32 [n, 3, S, S] host memory, S = preprocess
 *     .image_size, made as encoder_preprocess says: resize the shortest side to S (bicubic,
 *     antialiased, image/image.h clip_resize_crop_u8), centre crop S x S, CHW, x / 255, then
 *     (x - mean[c]) / std[c] (clip_normalize_u8). Output F32 [n, image_dim], unnormalised.
 *   - Tokens: embed_texts takes int32 ids [n, context_len] (text/tokenizer.h clip_tokenize with
 *     context_len), pooled at the first 49407. Output F32 [n, text_dim], unnormalised. text_dim is 0
 *     for models without a text tower (embed_texts then fails naming the model).
 *   - Both refuse non-finite outputs with an error naming the model and the row.
 *   - Not thread-safe: one call at a time per encoder (and per backend).
 *   - Provenance: kind, arch, the content hashes (base/file_hash.h XXH3-128, 32 hex digits, "" when
 *     unknown) of the weights the features come from and of the sources, and the SPACE the features
 *     live in: for "clip" its own weights hash (= weights_xxh); for "adapted" the OLD model's weights
 *     hash (old_xxh, "" when the export had no --text-model). weights_xxh of an
 *     encoder_open_adapted one is "" (its features come from two files: see new_xxh, ckpt_xxh).
 *     Two encoders' features are comparable iff their spaces are equal and non-empty. Hashes are
 *     computed on the first encoder_provenance_get call (reading the files once), not at open. */
#ifndef TACA_METHODS_ENCODER_H
#define TACA_METHODS_ENCODER_H

#include <stdint.h>

#include "base/error.h"
#include "nn/backend.h"
#include "methods/taca_checkpoint.h"
#include "nn/clip.h"

typedef struct taca_encoder taca_encoder;

typedef enum encoder_kind { ENCODER_CLIP = 1, ENCODER_ADAPTED = 2 } encoder_kind;

/* The resize mode every model here uses (the only one image/ implements). */
#define ENCODER_RESIZE_CLIP "shortest-side-bicubic-center-crop"

typedef struct encoder_preprocess {
  int image_size;   /* S */
  char resize[40];  /* ENCODER_RESIZE_CLIP */
  float mean[3];    /* per channel, of x / 255 (OpenAI's CLIP constants) */
  float std[3];
} encoder_preprocess;

typedef struct encoder_provenance {
  encoder_kind kind;
  char kind_name[16];    /* "clip" or "adapted" */
  char arch[64];         /* --arch given, else the config's name ("hf") */
  char weights_xxh[33];  /* the weights file of PATH (PATH/model.safetensors or PATH) */
  char space[33];        /* see above */
  char new_xxh[33];      /* adapted: NEW's weights; "clip": "" */
  char old_xxh[33];      /* adapted: OLD's weights ("" unknown); "clip": "" */
  char ckpt_xxh[33];     /* adapted: the TaCA checkpoint; "clip": "" */
  char peft[32];         /* adapted: "adapter/128" or "lora/8"; "clip": "" */
  char layers[32];       /* adapted: blocks "A-B", 1-based; "clip": "" */
} encoder_provenance;

/* Opens PATH: a plain CLIP model or an exported adapted directory (see above). */
taca_encoder *encoder_open(const char *path, const char *arch, nn_backend *be, int max_batch,
                           taca_error *err);
/* An adapted encoder from its sources: the NEW model (+ arch), a TaCA checkpoint (any file
 * taca_params_save wrote; layout read from its tensors, methods/taca_checkpoint.h), and optionally
 * the OLD model for the text tower (NULL: no text tower). e_old > 0 checks the projector's output
 * width against it. lora_alpha: used when the checkpoint does not record taca.lora_alpha. */
taca_encoder *encoder_open_adapted(const char *new_path, const char *arch, const char *checkpoint,
                                   const char *old_path, const char *old_arch, int e_old,
                                   float lora_alpha, nn_backend *be, int max_batch, taca_error *err);
void encoder_close(taca_encoder *e);

encoder_kind encoder_get_kind(const taca_encoder *e);
const char *encoder_path(const taca_encoder *e);    /* PATH as opened (NEW for open_adapted) */
int encoder_image_dim(const taca_encoder *e);
int encoder_text_dim(const taca_encoder *e);        /* 0: no text tower */
int encoder_context_len(const taca_encoder *e);     /* token ids per text row (77) */
int encoder_vocab_size(const taca_encoder *e);
float encoder_logit_scale(const taca_encoder *e);   /* as stored (log); the OLD one when adapted */
void encoder_get_preprocess(const taca_encoder *e, encoder_preprocess *p);
/* Sets resize, mean and std of p to the one preprocessing every model here uses (image_size kept). */
void encoder_default_preprocess(encoder_preprocess *p);
/* Computes the hashes on first use; NULL with err on a read failure. */
const encoder_provenance *encoder_provenance_get(taca_encoder *e, taca_error *err);

/* --precision: the arithmetic of the frozen towers' GEMMs (nn/clip.h clip_model_set_precision on
 * the CLIP model, or on an adapted encoder's NEW and OLD towers; adapters, LoRA and the projector
 * stay F32). F32 after opening. Fails naming the reason (a backend without BF16 GEMMs). */
int encoder_set_precision(taca_encoder *e, nn_precision p, taca_error *err);
nn_precision encoder_precision(const taca_encoder *e);

int encoder_embed_images(taca_encoder *e, const float *pixels, int n, float *out, taca_error *err);
int encoder_embed_texts(taca_encoder *e, const int32_t *tokens, int n, float *out, taca_error *err);

/* The checkpoint an adapted encoder was built from (layout, step, targets); NULL for "clip". */
const taca_checkpoint_info *encoder_checkpoint_info(const taca_encoder *e);

/* The vision tower's own model (NEW for adapted encoders): `taca eval` scores its unadapted
 * features beside the adapted ones. Owned by the encoder. */
clip_model *encoder_vision_model(taca_encoder *e);

#endif
