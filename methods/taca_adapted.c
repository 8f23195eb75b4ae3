/* taca_adapted.c: the adapted encoder loaded from its sources or from an export (see
 * taca_adapted.h), and its forward. */
#include "methods/taca_adapted.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/file_hash.h"
#include "methods/taca_step.h"

struct taca_adapted {
  clip_model *vision;  /* NEW tower: projections to E_new */
  clip_model *text;    /* OLD text tower (E_old) or NULL */
  taca_params P;
  taca_model *tm;
  taca_checkpoint_info info;
  int from_export;
  char dir[4096];      /* the export directory ("" for sources) */
  char new_path[4096], old_path[4096], ckpt_path[4096], new_arch[64];
  char new_xxh[33], old_xxh[33], ckpt_xxh[33]; /* recorded by an export */
};

static int file_is_dir(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static json_t *read_config(const char *dir, taca_error *err) {
  char p[4200];
  snprintf(p, sizeof p, "%s/config.json", dir);
  json_error_t je;
  json_t *j = json_load_file(p, 0, &je);
  if (!j) taca_fail(err, "%s: %s (line %d)", p, je.text, je.line);
  else if (!json_is_object(j)) {
    json_decref(j);
    j = NULL;
    taca_fail(err, "%s: not a JSON object", p);
  }
  return j;
}

int taca_adapted_is_export(const char *path) {
  if (!file_is_dir(path)) return 0;
  char p[4200];
  snprintf(p, sizeof p, "%s/config.json", path);
  struct stat sb;
  if (stat(p, &sb) != 0) return 0;
  json_t *j = read_config(path, NULL);
  if (!j) return -1;
  int yes = json_is_object(json_object_get(j, "taca"));
  json_decref(j);
  return yes;
}

void taca_adapted_free(taca_adapted *a) {
  if (!a) return;
  taca_model_free(a->tm);
  taca_params_free(&a->P);
  clip_model_free(a->vision);
  clip_model_free(a->text);
  free(a);
}

/* Parameters of configuration pc from f (an open checkpoint or export file), and the forward. */
static int make_params(taca_adapted *a, const taca_param_config *pc, const char *path, int max_batch,
                       taca_error *err) {
  if (taca_params_create(&a->P, pc, a->vision->be, 0, err)) return -1;
  /* an export's file holds the towers too: read only the TaCA tensors (the names are checked after) */
  int rc = a->from_export ? taca_params_load_from(&a->P, &a->vision->st, path, err)
                          : taca_params_load(&a->P, path, err);
  if (rc) return -1;
  /* recompute = 1: eval's setting (the two give the same features; this keeps only block inputs) */
  if (!(a->tm = taca_model_create(a->vision, &a->P, max_batch, 1, err))) return -1;
  return 0;
}

taca_adapted *taca_adapted_open_sources(const char *new_path, const char *arch, const char *checkpoint,
                                        const char *old_path, const char *old_arch, int e_old, float lora_alpha,
                                        nn_backend *be, int max_batch, taca_error *err) {
  taca_adapted *a = calloc(1, sizeof *a);
  if (!a) {
    taca_fail(err, "out of memory");
    return NULL;
  }
  snprintf(a->new_path, sizeof a->new_path, "%s", new_path);
  snprintf(a->ckpt_path, sizeof a->ckpt_path, "%s", checkpoint);
  snprintf(a->old_path, sizeof a->old_path, "%s", old_path ? old_path : "");
  if (!(a->vision = clip_model_load(new_path, arch, be, err))) goto fail;
  snprintf(a->new_arch, sizeof a->new_arch, "%s", arch ? arch : a->vision->cfg.name);
  taca_param_config pc;
  if (taca_checkpoint_inspect(checkpoint, &a->vision->cfg, e_old, lora_alpha, &pc, &a->info, err)) goto fail;
  if (old_path) {
    if (!(a->text = clip_model_load(old_path, old_arch, be, err))) goto fail;
    if (!a->text->cfg.has_text) {
      taca_fail(err, "%s: the old model has no text tower", old_path);
      goto fail;
    }
    if (a->text->cfg.embed_dim != pc.e_old) {
      taca_fail(err, "%s: the old model embeds to %d dims but %s projects to %d (another old model?)", old_path,
                a->text->cfg.embed_dim, checkpoint, pc.e_old);
      goto fail;
    }
  }
  if (make_params(a, &pc, checkpoint, max_batch, err)) goto fail;
  return a;
fail:
  taca_adapted_free(a);
  return NULL;
}

static void copy_str(json_t *obj, const char *key, char *dst, size_t cap) {
  const char *s = json_string_value(json_object_get(obj, key));
  snprintf(dst, cap, "%s", s ? s : "");
}

/* Every tensor of the export belongs to a tower, the TaCA parameters, or is logit_scale. */
static int check_tensor_names(const taca_adapted *a, const char *file, taca_error *err) {
  const st_file *f = &a->vision->st;
  static const char *const TOWERS[] = {"vision_model.", "visual_projection.", "text_model.", "text_projection.",
                                       NULL};
  for (int i = 0; i < f->n; i++) {
    const char *name = f->tensors[i].name;
    int ok = !strcmp(name, "logit_scale");
    for (int k = 0; !ok && TOWERS[k]; k++) ok = !strncmp(name, TOWERS[k], strlen(TOWERS[k]));
    if (ok && !a->text && (!strncmp(name, "text_", 5)))
      return taca_fail(err, "%s: tensor '%s' but config.json has no text_config", file, name);
    for (int k = 0; !ok && k < a->P.n_tensors; k++) ok = !strcmp(name, a->P.info[k].name);
    if (!ok) return taca_fail(err, "%s: unexpected tensor '%s' (not a tower, adapter/LoRA or projector tensor of this "
                                   "configuration)", file, name);
  }
  return 0;
}

taca_adapted *taca_adapted_open_export(const char *dir, nn_backend *be, int max_batch, taca_error *err) {
  taca_adapted *a = calloc(1, sizeof *a);
  if (!a) {
    taca_fail(err, "out of memory");
    return NULL;
  }
  a->from_export = 1;
  snprintf(a->dir, sizeof a->dir, "%s", dir);
  char cfgpath[4200], file[4200];
  snprintf(cfgpath, sizeof cfgpath, "%s/config.json", dir);
  snprintf(file, sizeof file, "%s/model.safetensors", dir);
  json_t *root = read_config(dir, err);
  clip_config cfg;
  if (!root || clip_config_hf_json(&cfg, cfgpath, err)) goto fail;
  json_t *tj = json_object_get(root, "taca");
  json_t *fmt = json_object_get(tj, "format"), *vp = json_object_get(tj, "vision_projection_dim");
  if (!json_is_integer(fmt) || json_integer_value(fmt) != 1) {
    taca_fail(err, "%s: taca.format must be 1 (an export of this version)", cfgpath);
    goto fail;
  }
  if (!json_is_integer(vp) || json_integer_value(vp) <= 0 || json_integer_value(vp) > 65536) {
    taca_fail(err, "%s: taca.vision_projection_dim must be a positive integer", cfgpath);
    goto fail;
  }
  json_t *src = json_object_get(tj, "sources");
  json_t *sn = json_object_get(src, "new"), *so = json_object_get(src, "old"), *sc = json_object_get(src, "checkpoint");
  copy_str(sn, "path", a->new_path, sizeof a->new_path);
  copy_str(sn, "arch", a->new_arch, sizeof a->new_arch);
  copy_str(sn, "xxh", a->new_xxh, sizeof a->new_xxh);
  copy_str(so, "path", a->old_path, sizeof a->old_path);
  copy_str(so, "xxh", a->old_xxh, sizeof a->old_xxh);
  copy_str(sc, "path", a->ckpt_path, sizeof a->ckpt_path);
  copy_str(sc, "xxh", a->ckpt_xxh, sizeof a->ckpt_xxh);
  clip_config vcfg = cfg;
  vcfg.embed_dim = (int)json_integer_value(vp);
  vcfg.has_text = 0;
  if (!(a->vision = clip_model_load_towers(file, &vcfg, CLIP_TOWER_VISION, be, err))) goto fail;
  if (cfg.has_text && !(a->text = clip_model_load_towers(file, &cfg, CLIP_TOWER_TEXT, be, err))) goto fail;
  taca_param_config pc;
  if (taca_checkpoint_inspect(file, &a->vision->cfg, cfg.embed_dim, 8.0f, &pc, &a->info, err)) goto fail;
  if (make_params(a, &pc, file, max_batch, err) || check_tensor_names(a, file, err)) goto fail;
  json_decref(root);
  return a;
fail:
  json_decref(root);
  taca_error_prefix(err, "exported model %s", dir);
  taca_adapted_free(a);
  return NULL;
}

int taca_adapted_forward(taca_adapted *a, const float *pixels, int n, float *out, taca_error *err) {
  return taca_model_forward(a->tm, &a->P, pixels, n, out, err);
}

int taca_adapted_image_dim(const taca_adapted *a) { return a->P.cfg.e_old; }
clip_model *taca_adapted_new_model(const taca_adapted *a) { return a->vision; }
clip_model *taca_adapted_text_model(const taca_adapted *a) { return a->text; }
float taca_adapted_logit_scale(const taca_adapted *a) { return a->text ? a->text->logit_scale : 0.f; }
const taca_params *taca_adapted_params(const taca_adapted *a) { return &a->P; }
const taca_checkpoint_info *taca_adapted_checkpoint_info(const taca_adapted *a) { return &a->info; }
const char *taca_adapted_new_arch(const taca_adapted *a) { return a->new_arch; }

const char *taca_adapted_source_path(const taca_adapted *a, const char *which) {
  if (!strcmp(which, "new")) return a->new_path;
  if (!strcmp(which, "old")) return a->old_path;
  return a->ckpt_path;
}

int taca_adapted_provenance(taca_adapted *a, encoder_provenance *p, taca_error *err) {
  if (!a->from_export) { /* hash the sources once */
    char w[4096];
    if (!a->new_xxh[0]) {
      taca_model_weights_path(a->new_path, w, sizeof w);
      if (taca_file_xxh3(w, a->new_xxh, err)) return -1;
    }
    if (!a->ckpt_xxh[0] && taca_file_xxh3(a->ckpt_path, a->ckpt_xxh, err)) return -1;
    if (!a->old_xxh[0] && a->old_path[0]) {
      taca_model_weights_path(a->old_path, w, sizeof w);
      if (taca_file_xxh3(w, a->old_xxh, err)) return -1;
    }
    p->weights_xxh[0] = 0; /* no single weights file: the features come from NEW + CKPT */
  } else {
    char w[4200];
    snprintf(w, sizeof w, "%s/model.safetensors", a->dir);
    if (taca_file_xxh3(w, p->weights_xxh, err)) return -1;
  }
  snprintf(p->new_xxh, sizeof p->new_xxh, "%s", a->new_xxh);
  snprintf(p->old_xxh, sizeof p->old_xxh, "%s", a->old_xxh);
  snprintf(p->ckpt_xxh, sizeof p->ckpt_xxh, "%s", a->ckpt_xxh);
  snprintf(p->space, sizeof p->space, "%s", a->old_xxh);
  snprintf(p->peft, sizeof p->peft, "%s", a->info.peft);
  snprintf(p->layers, sizeof p->layers, "%s", a->info.layers);
  return 0;
}
