/* taca_checkpoint.c: the TaCA checkpoint format (see taca_checkpoint.h): parameter and optimizer
 * files, the layout read back from a file's tensors, and the trainer's metadata. */
#include "methods/taca_checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Parameter and optimizer files. */

/* Host copy of a region of backend memory (the region itself on host backends). */
static const float *host_view(const taca_params *P, const float *dev, size_t n, float **owned) {
  *owned = NULL;
  if (P->be->host_memory) return dev;
  if (!(*owned = malloc(sizeof(float) * (n ? n : 1)))) return NULL;
  P->be->download(P->be, *owned, dev, sizeof(float) * n);
  return *owned;
}


static int add_meta(st_writer *w, const taca_params *P, const char *const *meta, taca_error *err) {
  char step[32], blocks[32];
  snprintf(step, sizeof step, "%ld", P->step);
  snprintf(blocks, sizeof blocks, "%d-%d", P->cfg.peft.first + 1, P->cfg.peft.last + 1);
  if (st_writer_meta(w, "format", "pt", err) || st_writer_meta(w, "step", step, err) ||
      st_writer_meta(w, "peft", P->cfg.peft.kind == VIT_PEFT_LORA ? "lora" : "adapter", err) ||
      st_writer_meta(w, "blocks", blocks, err))
    return -1;
  for (int i = 0; meta && meta[i]; i += 2) {
    if (!meta[i + 1]) return taca_fail(err, "metadata key '%s' has no value", meta[i]);
    if (st_writer_meta(w, meta[i], meta[i + 1], err)) return -1;
  }
  return 0;
}

/* Writes the tensors of the flat buffers bufs[0..nb) with name suffixes sfx[0..nb). */
static int save_flat(const taca_params *P, const char *path, const float *const *bufs,
                     const char *const *sfx, int nb, const char *const *meta, taca_error *err) {
  float *owned[2] = {NULL, NULL};
  const float *host[2];
  int rc = -1;
  st_writer *w = st_writer_new();
  if (!w) return taca_fail(err, "%s: out of memory", path);
  for (int b = 0; b < nb; b++)
    if (!(host[b] = host_view(P, bufs[b], P->n, &owned[b]))) {
      taca_fail(err, "%s: out of memory", path);
      goto done;
    }
  if (add_meta(w, P, meta, err)) goto done;
  for (int i = 0; i < P->n_tensors; i++) {
    const taca_tensor_info *t = &P->info[i];
    for (int b = 0; b < nb; b++) {
      char name[64];
      snprintf(name, sizeof name, "%s%s", t->name, sfx[b]);
      if (st_writer_add(w, name, TACA_DT_F32, t->ndim, t->shape, host[b] + t->offset, err))
        goto done;
    }
  }
  rc = st_writer_save(w, path, err);
done:
  st_writer_free(w);
  free(owned[0]), free(owned[1]);
  return rc;
}

/* Reads every tensor of the table (with suffixes sfx) from path into host staging (nb * n floats);
 * strict about missing, mis-shaped and unexpected tensors. */
static int load_flat(const taca_params *P, const char *path, float *stage, const char *const *sfx,
                     int nb, const st_file *f, int strict, taca_error *err) {
  int matched = 0;
  for (int i = 0; i < P->n_tensors; i++) {
    const taca_tensor_info *t = &P->info[i];
    for (int b = 0; b < nb; b++) {
      char name[64];
      snprintf(name, sizeof name, "%s%s", t->name, sfx[b]);
      const st_tensor *s = st_find(f, name);
      if (!s)
        return taca_fail(err, "%s: missing tensor '%s' (the checkpoint does not match this "
                              "configuration: %s in blocks %d-%d)",
                         path, name, P->cfg.peft.kind == VIT_PEFT_LORA ? "LoRA" : "adapters",
                         P->cfg.peft.first + 1, P->cfg.peft.last + 1);
      int ok = s->ndim == t->ndim && s->shape[0] == t->shape[0] &&
               (t->ndim == 1 || s->shape[1] == t->shape[1]);
      if (!ok) {
        char got[96] = "[", want[48];
        for (int d = 0; d < s->ndim && d < 4; d++)
          snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "",
                   (long long)s->shape[d]);
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s]", s->ndim > 4 ? ", ..." : "");
        if (t->ndim == 2)
          snprintf(want, sizeof want, "[%lld, %lld]", (long long)t->shape[0], (long long)t->shape[1]);
        else
          snprintf(want, sizeof want, "[%lld]", (long long)t->shape[0]);
        return taca_fail(err, "%s: tensor '%s' has shape %s, expected %s", path, name, got, want);
      }
      if (!taca_dtype_is_float(s->dtype))
        return taca_fail(err, "%s: tensor '%s' has dtype %s, expected F32, F16 or BF16", path, name,
                         taca_dtype_name(s->dtype));
      if (st_to_f32(s, stage + (size_t)b * P->n + t->offset, err))
        return taca_error_prefix(err, "%s: tensor '%s'", path, name);
      matched++;
    }
  }
  if (strict && matched != f->n) {
    for (int j = 0; j < f->n; j++) {
      int known = 0;
      for (int i = 0; i < P->n_tensors && !known; i++)
        for (int b = 0; b < nb && !known; b++) {
          size_t k = strlen(P->info[i].name);
          known = !strncmp(f->tensors[j].name, P->info[i].name, k) &&
                  !strcmp(f->tensors[j].name + k, sfx[b]);
        }
      if (!known)
        return taca_fail(err, "%s: unexpected tensor '%s' (not part of this configuration: %s in "
                              "blocks %d-%d)",
                         path, f->tensors[j].name,
                         P->cfg.peft.kind == VIT_PEFT_LORA ? "LoRA" : "adapters",
                         P->cfg.peft.first + 1, P->cfg.peft.last + 1);
    }
  }
  return 0;
}

int taca_params_save(const taca_params *P, const char *path, const char *const *meta,
                     taca_error *err) {
  const float *bufs[1] = {P->flat_p};
  const char *sfx[1] = {""};
  return save_flat(P, path, bufs, sfx, 1, meta, err);
}

int taca_params_load(taca_params *P, const char *path, taca_error *err) {
  float *stage = calloc(P->n ? P->n : 1, sizeof(float));
  if (!stage) return taca_fail(err, "%s: out of memory", path);
  st_file f = {0};
  const char *sfx[1] = {""};
  int rc = st_open(&f, path, err) ? -1 : load_flat(P, path, stage, sfx, 1, &f, 1, err);
  if (rc == 0) P->be->upload(P->be, P->flat_p, stage, sizeof(float) * P->n);
  st_close(&f);
  free(stage);
  return rc;
}

int taca_params_load_from(taca_params *P, const st_file *f, const char *path, taca_error *err) {
  float *stage = calloc(P->n ? P->n : 1, sizeof(float));
  if (!stage) return taca_fail(err, "%s: out of memory", path);
  const char *sfx[1] = {""};
  int rc = load_flat(P, path, stage, sfx, 1, f, 0, err);
  if (rc == 0) P->be->upload(P->be, P->flat_p, stage, sizeof(float) * P->n);
  free(stage);
  return rc;
}

int taca_optim_save(const taca_params *P, const char *path, const char *const *meta,
                    taca_error *err) {
  const float *bufs[2] = {P->flat_m, P->flat_v};
  const char *sfx[2] = {".m", ".v"};
  return save_flat(P, path, bufs, sfx, 2, meta, err);
}

int taca_optim_load(taca_params *P, const char *path, taca_error *err) {
  float *stage = calloc(2 * P->n + 1, sizeof(float));
  if (!stage) return taca_fail(err, "%s: out of memory", path);
  st_file f = {0};
  const char *sfx[2] = {".m", ".v"};
  int rc = st_open(&f, path, err) ? -1 : load_flat(P, path, stage, sfx, 2, &f, 1, err);
  long step = 0;
  if (rc == 0 && st_meta_count(&f, "step", &step, err)) rc = taca_error_prefix(err, "%s", path);
  if (rc == 0) {
    P->be->upload(P->be, P->flat_m, stage, sizeof(float) * P->n);
    P->be->upload(P->be, P->flat_v, stage + P->n, sizeof(float) * P->n);
    P->step = step;
  }
  st_close(&f);
  free(stage);
  return rc;
}

/* ---- The layout of a checkpoint file. */

int taca_checkpoint_inspect(const char *path, const clip_config *new_cfg, int e_old, float lora_alpha,
                            taca_param_config *pc, taca_checkpoint_info *info, taca_error *err) {
  memset(info, 0, sizeof *info);
  info->step = -1;
  st_file f;
  if (st_open(&f, path, err)) return -1;
  int rc = -1;
  const st_tensor *fc1 = st_find(&f, "projector.fc1.weight"), *fc2 = st_find(&f, "projector.fc2.weight");
  if (!fc1 || !fc2 || fc1->ndim != 2 || fc2->ndim != 2) {
    taca_fail(err, "%s: not a TaCA checkpoint (no 2-D projector.fc1.weight / projector.fc2.weight)", path);
    goto done;
  }
  if (fc1->shape[1] != new_cfg->embed_dim) {
    taca_fail(err, "%s: the projector takes %lld-d input but the new model embeds to %d (another new model?)", path,
              (long long)fc1->shape[1], new_cfg->embed_dim);
    goto done;
  }
  if (e_old > 0 && fc2->shape[0] != e_old) {
    taca_fail(err, "%s: the projector outputs %lld dims but the old model's image embeddings have %d (another old model?)",
              path, (long long)fc2->shape[0], e_old);
    goto done;
  }
  taca_param_config_default(pc, new_cfg, (int)fc2->shape[0]);
  pc->proj_hidden = (int)fc1->shape[0];
  int first = -1, last = -1, adapters = 0, loras = 0;
  for (int i = 0; i < f.n; i++) {
    const st_tensor *t = &f.tensors[i];
    int L, used = 0;
    char kind[8];
    if (sscanf(t->name, "adapter.%d.down.weigh%1[t]%n", &L, kind, &used) == 2 && !t->name[used]) {
      adapters++;
      if (t->ndim == 2) pc->peft.bottleneck = (int)t->shape[0];
    } else if (sscanf(t->name, "lora.%d.q.%1[A]%n", &L, kind, &used) == 2 && !t->name[used]) {
      loras++;
      if (t->ndim == 2) pc->peft.lora_rank = (int)t->shape[0];
    } else {
      continue;
    }
    if (L < 0 || L >= new_cfg->vision.layers) {
      taca_fail(err, "%s: tensor '%s' names block %d but the new tower has %d blocks", path, t->name, L,
                new_cfg->vision.layers);
      goto done;
    }
    if (first < 0 || L < first) first = L;
    if (L > last) last = L;
  }
  if (adapters && loras) {
    taca_fail(err, "%s: holds both adapter.* and lora.* tensors", path);
    goto done;
  }
  if (!adapters && !loras) {
    taca_fail(err, "%s: no adapter.L.* or lora.L.* tensors", path);
    goto done;
  }
  pc->peft.kind = loras ? VIT_PEFT_LORA : VIT_PEFT_ADAPTER;
  pc->peft.first = first;
  pc->peft.last = last;
  const char *alpha = st_meta(&f, "taca.lora_alpha");
  pc->peft.lora_alpha = alpha ? strtof(alpha, NULL) : lora_alpha;
  snprintf(info->layers, sizeof info->layers, "%d-%d", first + 1, last + 1);
  snprintf(info->peft, sizeof info->peft, "%s/%d", loras ? "lora" : "adapter",
           loras ? pc->peft.lora_rank : pc->peft.bottleneck);
  const char *ml = st_meta(&f, "taca.layers"), *mp = st_meta(&f, "taca.peft"), *ms = st_meta(&f, "step"),
             *mt = st_meta(&f, "taca.targets");
  if (ml && strcmp(ml, info->layers)) {
    taca_fail(err, "%s: metadata taca.layers is '%s' but the tensors cover blocks %s", path, ml, info->layers);
    goto done;
  }
  if (mp && strcmp(mp, info->peft)) {
    taca_fail(err, "%s: metadata taca.peft is '%s' but the tensors are %s", path, mp, info->peft);
    goto done;
  }
  info->step = ms ? strtol(ms, NULL, 10) : -1;
  snprintf(info->targets, sizeof info->targets, "%s", mt ? mt : "");
  info->proj_hidden = pc->proj_hidden;
  info->trainable = (long)taca_param_count(pc);
  rc = 0;
done:
  st_close(&f);
  return rc;
}

/* ---- The trainer's metadata. */

void taca_checkpoint_train_meta(taca_checkpoint_meta *m, const taca_param_config *pc, int batch_size, int world,
                                uint64_t seed, const char *targets, const char *new_model) {
  memset(m, 0, sizeof *m);
  const int lora = pc->peft.kind == VIT_PEFT_LORA;
  snprintf(m->batch_size, sizeof m->batch_size, "%d", batch_size);
  snprintf(m->world_size, sizeof m->world_size, "%d", world);
  snprintf(m->seed, sizeof m->seed, "%llu", (unsigned long long)seed);
  snprintf(m->layers, sizeof m->layers, "%d-%d", pc->peft.first + 1, pc->peft.last + 1);
  snprintf(m->peft, sizeof m->peft, "%s/%d", lora ? "lora" : "adapter", lora ? pc->peft.lora_rank : pc->peft.bottleneck);
  snprintf(m->lora_alpha, sizeof m->lora_alpha, "%.9g", pc->peft.lora_alpha);
  snprintf(m->targets, sizeof m->targets, "%s", targets);
  snprintf(m->new_model, sizeof m->new_model, "%s", new_model);
  const char *kv[] = {"taca.lora_alpha", m->lora_alpha, "taca.batch_size", m->batch_size, "taca.seed", m->seed,
                      "taca.layers", m->layers, "taca.peft", m->peft, "taca.targets", m->targets,
                      "taca.new_model", m->new_model, "taca.world_size", m->world_size, NULL};
  const char *must[] = {"taca.batch_size", m->batch_size, "taca.seed", m->seed, "taca.layers", m->layers,
                        "taca.peft", m->peft, "taca.targets", m->targets, NULL};
  memcpy(m->kv, kv, sizeof kv);
  memcpy(m->must, must, sizeof must);
}

int taca_checkpoint_match_meta(const char *path, const char *const *must, taca_error *err) {
  st_file f;
  if (st_open(&f, path, err)) return -1;
  int rc = 0;
  for (int i = 0; must && must[i] && rc == 0; i += 2) {
    const char *have = st_meta(&f, must[i]);
    if (!have || strcmp(have, must[i + 1]) != 0)
      rc = taca_fail(err, "%s was written with %s=%s, this run has %s=%s: resume with the same settings", path, must[i],
                     have ? have : "(none)", must[i], must[i + 1]);
  }
  st_close(&f);
  return rc;
}
