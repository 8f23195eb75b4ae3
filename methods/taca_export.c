/* taca_export.c: writing an adapted encoder as an exported directory (see taca_export.h). */
#include "methods/taca_export.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/atomicfile.h"
#include "base/safetensors.h"
#include "nn/clip_export.h"

static int write_json(const char *dir, const char *name, json_t *j, taca_error *err) {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)) : NULL;
  if (!s) return taca_fail(err, "%s: out of memory", path);
  taca_chunk c[2] = {{s, strlen(s)}, {"\n", 1}};
  int rc = taca_write_file_atomic(path, c, 2, err);
  free(s);
  return rc;
}

static json_t *source(const char *path, const char *xxh) {
  return json_pack("{s:s,s:s}", "path", path, "xxh", xxh);
}

static json_t *float3(const float *v) { return json_pack("[f,f,f]", (double)v[0], (double)v[1], (double)v[2]); }

static json_t *build_config(taca_adapted *a, const encoder_provenance *pv, const encoder_preprocess *pp) {
  const clip_model *nm = taca_adapted_new_model(a), *om = taca_adapted_text_model(a);
  const taca_param_config *pc = &taca_adapted_params(a)->cfg;
  const taca_checkpoint_info *ci = taca_adapted_checkpoint_info(a);
  const int lora = pc->peft.kind == VIT_PEFT_LORA;
  json_t *peft = json_pack("{s:s,s:s,s:i,s:i}", "kind", lora ? "lora" : "adapter", "blocks", ci->layers, "first",
                           pc->peft.first, "last", pc->peft.last);
  if (peft && lora)
    json_object_set_new(peft, "lora_rank", json_integer(pc->peft.lora_rank)),
        json_object_set_new(peft, "lora_alpha", json_real(pc->peft.lora_alpha));
  else if (peft)
    json_object_set_new(peft, "bottleneck", json_integer(pc->peft.bottleneck));
  json_t *src_new = source(taca_adapted_source_path(a, "new"), pv->new_xxh);
  if (src_new) json_object_set_new(src_new, "arch", json_string(taca_adapted_new_arch(a)));
  json_t *src_ckpt = source(taca_adapted_source_path(a, "checkpoint"), pv->ckpt_xxh);
  if (src_ckpt)
    json_object_set_new(src_ckpt, "step", json_integer(ci->step)),
        json_object_set_new(src_ckpt, "targets", json_string(ci->targets));
  json_t *src_old = om ? source(taca_adapted_source_path(a, "old"), pv->old_xxh) : json_null();
  json_t *taca = json_pack(
      "{s:i,s:i,s:o,s:{s:i,s:i,s:i,s:s},s:{s:i,s:s,s:o,s:o},s:s,s:{s:o,s:o,s:o}}", "format", 1,
      "vision_projection_dim", nm->cfg.embed_dim, "peft", peft, "projector", "input", pc->e_new, "hidden",
      pc->proj_hidden, "output", pc->e_old, "activation", "gelu", "preprocess", "image_size", pp->image_size,
      "resize", pp->resize, "mean", float3(pp->mean), "std", float3(pp->std), "space", pv->space, "sources", "new",
      src_new, "old", src_old, "checkpoint", src_ckpt);
  json_t *root = json_pack("{s:[s],s:s,s:i,s:o}", "architectures", "TacaAdaptedCLIP", "model_type",
                           "taca-adapted-clip", "projection_dim", pc->e_old, "vision_config",
                           clip_config_hf_tower_json(&nm->cfg, CLIP_TOWER_VISION));
  if (!root || !taca) {
    json_decref(root);
    json_decref(taca);
    return NULL;
  }
  if (om) json_object_set_new(root, "text_config", clip_config_hf_tower_json(&om->cfg, CLIP_TOWER_TEXT));
  json_object_set_new(root, "taca", taca);
  return root;
}

static json_t *build_preprocessor(const encoder_preprocess *pp) {
  return json_pack("{s:{s:i,s:i},s:b,s:b,s:b,s:b,s:o,s:o,s:i,s:f,s:{s:i},s:s}", "crop_size", "height",
                   pp->image_size, "width", pp->image_size, "do_center_crop", 1, "do_normalize", 1, "do_resize", 1,
                   "do_rescale", 1, "image_mean", float3(pp->mean), "image_std", float3(pp->std), "resample", 3,
                   "rescale_factor", 1.0 / 255, "size", "shortest_edge", pp->image_size, "image_processor_type",
                   "CLIPImageProcessor");
}

static int write_weights(taca_adapted *a, const char *dir, taca_error *err) {
  char path[4200];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  const clip_model *nm = taca_adapted_new_model(a), *om = taca_adapted_text_model(a);
  const taca_params *P = taca_adapted_params(a);
  const taca_checkpoint_info *ci = taca_adapted_checkpoint_info(a);
  if (!P->be->host_memory) return taca_fail(err, "export needs the model on the CPU backend");
  st_writer *w = st_writer_new();
  if (!w) return taca_fail(err, "out of memory");
  char step[32], alpha[32];
  snprintf(step, sizeof step, "%ld", ci->step < 0 ? 0 : ci->step);
  snprintf(alpha, sizeof alpha, "%.9g", P->cfg.peft.lora_alpha);
  int rc = -1;
  float ls = om ? om->logit_scale : 0.f;
  if (st_writer_meta(w, "format", "pt", err) || st_writer_meta(w, "taca.export", "1", err) ||
      st_writer_meta(w, "step", step, err) || st_writer_meta(w, "taca.peft", ci->peft, err) ||
      st_writer_meta(w, "taca.layers", ci->layers, err) || st_writer_meta(w, "taca.lora_alpha", alpha, err) ||
      (ci->targets[0] && st_writer_meta(w, "taca.targets", ci->targets, err)))
    goto done;
  if (clip_model_add_hf_tensors(nm, CLIP_TOWER_VISION, w, err)) goto done;
  for (int i = 0; i < P->n_tensors; i++) {
    const taca_tensor_info *t = &P->info[i];
    if (st_writer_add(w, t->name, TACA_DT_F32, t->ndim, t->shape, P->flat_p + t->offset, err)) goto done;
  }
  if (om && (clip_model_add_hf_tensors(om, CLIP_TOWER_TEXT, w, err) ||
             st_writer_add(w, "logit_scale", TACA_DT_F32, 0, NULL, &ls, err)))
    goto done;
  rc = st_writer_save(w, path, err);
done:
  st_writer_free(w);
  return rc;
}

int taca_export_write(taca_adapted *a, const char *dir, taca_error *err) {
  if (mkdir(dir, 0755) && errno != EEXIST) return taca_fail(err, "--out %s: %s", dir, strerror(errno));
  encoder_provenance pv;
  memset(&pv, 0, sizeof pv);
  if (taca_adapted_provenance(a, &pv, err)) return -1;
  encoder_preprocess pp = {0};
  pp.image_size = taca_adapted_new_model(a)->cfg.image_size;
  encoder_default_preprocess(&pp);
  json_t *cfg = build_config(a, &pv, &pp), *pre = build_preprocessor(&pp);
  int rc = write_weights(a, dir, err) || write_json(dir, "config.json", cfg, err) ||
           write_json(dir, "preprocessor_config.json", pre, err);
  json_decref(cfg);
  json_decref(pre);
  return rc ? -1 : 0;
}
