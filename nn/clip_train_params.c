/* clip_train_params.c: the trainable CLIP's tensors: the table (HF names, shapes, weight-decay
 * group, initialisation), the four flat buffers and their views, random initialisation, loading
 * from a model file, saving as a HuggingFace directory, and the AdamW update (see clip_train.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/rng.h"
#include "base/atomicfile.h"
#include "nn/clip.h"
#include "nn/clip_train_impl.h"
#include "base/safetensors.h"

enum { INIT_ZERO = 0, INIT_ONE, INIT_NORMAL, INIT_UNIFORM, INIT_CONST };
enum { AT_TOP = 0, AT_VBLOCK, AT_TBLOCK };
#define NO_SLOT ((size_t)-1)

/* ---- The tensor table: one walk over the architecture, run once per optimizer group, used to
 * count, to describe and to point the four views into their flat buffers. */

typedef struct walker {
  clip_train *ct; /* NULL: count only */
  int pass;       /* 1: tensors with weight decay (ndim >= 2); 0: the others */
  int n;
  size_t off, numel;
} walker;

typedef struct tensor_spec {
  const char *name;
  int ndim;
  int64_t shape[4];
  int where, layer; /* AT_TOP, or a block of the vision / text tower */
  size_t field;     /* offset of the view pointer in its struct, or NO_SLOT */
  int init;
  float a;
  int adjacent;     /* the next tensor follows without alignment padding (q|k|v packing) */
} tensor_spec;

static void set_view(clip_train_tensors *v, const tensor_spec *s, float *ptr) {
  char *base = s->where == AT_TOP      ? (char *)v
               : s->where == AT_VBLOCK ? (char *)&v->vblocks[s->layer]
                                       : (char *)&v->tblocks[s->layer];
  *(float **)(base + s->field) = ptr;
}

static void put(walker *w, const tensor_spec *s) {
  if ((s->ndim >= 2) != w->pass) return;
  size_t numel = 1;
  for (int d = 0; d < s->ndim; d++) numel *= (size_t)s->shape[d];
  clip_train *ct = w->ct;
  if (ct && ct->info) {
    clip_train_tensor_info *t = &ct->info[w->n];
    snprintf(t->name, sizeof t->name, "%s", s->name);
    t->ndim = s->ndim;
    for (int d = 0; d < 4; d++) t->shape[d] = d < s->ndim ? s->shape[d] : 0;
    t->offset = w->off;
    t->numel = numel;
    t->decay = s->ndim >= 2;
    t->init = s->init;
    t->init_a = s->a;
    if (ct->mem && s->field != NO_SLOT) {
      clip_train_tensors *views[4] = {&ct->p, &ct->g, &ct->m, &ct->v};
      float *bases[4] = {ct->flat_p, ct->flat_g, ct->flat_m, ct->flat_v};
      for (int i = 0; i < 4; i++) set_view(views[i], s, bases[i] + w->off);
    }
  }
  w->n++;
  w->numel += numel;
  w->off += s->adjacent ? numel : (numel + 15) & ~(size_t)15;
}

#define FIELD_T(f) offsetof(clip_train_tensors, f)
#define FIELD_B(f) offsetof(clip_train_block, f)

static void put1(walker *w, const char *name, int64_t d0, int where, int layer, size_t field,
                 int init, float a, int adjacent) {
  tensor_spec s = {name, 1, {d0}, where, layer, field, init, a, adjacent};
  put(w, &s);
}

static void put2(walker *w, const char *name, int64_t d0, int64_t d1, int where, int layer,
                 size_t field, int init, float a, int adjacent) {
  tensor_spec s = {name, 2, {d0, d1}, where, layer, field, init, a, adjacent};
  put(w, &s);
}

static void walk_block(walker *w, const clip_config *c, int text, int l) {
  const clip_tower_config *t = text ? &c->text : &c->vision;
  const int64_t W = t->width, M = t->mlp;
  const int at = text ? AT_TBLOCK : AT_VBLOCK;
  const float wm = 1.0f / sqrtf((float)W), mm = 1.0f / sqrtf((float)M);
  const float proj_std = wm / sqrtf(2.0f * t->layers), fc_std = 1.0f / sqrtf(2.0f * W);
  const int qkv_init = text ? INIT_NORMAL : INIT_UNIFORM;
  const float qkv_a = text ? wm : sqrtf(6.0f / (4.0f * W)); /* xavier on [3W, W] */
  char n[128];
  const char *pre = text ? "text_model" : "vision_model";
#define NAME(sub) (snprintf(n, sizeof n, "%s.encoder.layers.%d.%s", pre, l, sub), n)
  put1(w, NAME("layer_norm1.weight"), W, at, l, FIELD_B(ln1_w), INIT_ONE, 0, 0);
  put1(w, NAME("layer_norm1.bias"), W, at, l, FIELD_B(ln1_b), INIT_ZERO, 0, 0);
  put2(w, NAME("self_attn.q_proj.weight"), W, W, at, l, FIELD_B(qkv_w), qkv_init, qkv_a, 1);
  put2(w, NAME("self_attn.k_proj.weight"), W, W, at, l, NO_SLOT, qkv_init, qkv_a, 1);
  put2(w, NAME("self_attn.v_proj.weight"), W, W, at, l, NO_SLOT, qkv_init, qkv_a, 0);
  put1(w, NAME("self_attn.q_proj.bias"), W, at, l, FIELD_B(qkv_b), INIT_ZERO, 0, 1);
  put1(w, NAME("self_attn.k_proj.bias"), W, at, l, NO_SLOT, INIT_ZERO, 0, 1);
  put1(w, NAME("self_attn.v_proj.bias"), W, at, l, NO_SLOT, INIT_ZERO, 0, 0);
  put2(w, NAME("self_attn.out_proj.weight"), W, W, at, l, FIELD_B(out_w),
       text ? INIT_NORMAL : INIT_UNIFORM, text ? proj_std : wm, 0);
  put1(w, NAME("self_attn.out_proj.bias"), W, at, l, FIELD_B(out_b), INIT_ZERO, 0, 0);
  put1(w, NAME("layer_norm2.weight"), W, at, l, FIELD_B(ln2_w), INIT_ONE, 0, 0);
  put1(w, NAME("layer_norm2.bias"), W, at, l, FIELD_B(ln2_b), INIT_ZERO, 0, 0);
  put2(w, NAME("mlp.fc1.weight"), M, W, at, l, FIELD_B(fc1_w), text ? INIT_NORMAL : INIT_UNIFORM,
       text ? fc_std : wm, 0);
  put1(w, NAME("mlp.fc1.bias"), M, at, l, FIELD_B(fc1_b), INIT_UNIFORM, wm, 0);
  put2(w, NAME("mlp.fc2.weight"), W, M, at, l, FIELD_B(fc2_w), text ? INIT_NORMAL : INIT_UNIFORM,
       text ? proj_std : mm, 0);
  put1(w, NAME("mlp.fc2.bias"), W, at, l, FIELD_B(fc2_b), INIT_UNIFORM, mm, 0);
#undef NAME
}

static void walk(walker *w, const clip_config *c) {
  const int64_t W = c->vision.width, P = c->patch_size, G = c->image_size / c->patch_size;
  const int64_t E = c->embed_dim;
  const float ws = 1.0f / sqrtf((float)W);
  tensor_spec patch = {"vision_model.embeddings.patch_embedding.weight", 4, {W, 3, P, P}, AT_TOP,
                       0, FIELD_T(patch_w), INIT_UNIFORM, 1.0f / sqrtf(3.0f * P * P), 0};
  put(w, &patch);
  put1(w, "vision_model.embeddings.class_embedding", W, AT_TOP, 0, FIELD_T(cls), INIT_NORMAL, ws,
       0);
  put2(w, "vision_model.embeddings.position_embedding.weight", G * G + 1, W, AT_TOP, 0,
       FIELD_T(vpos), INIT_NORMAL, ws, 0);
  put1(w, "vision_model.pre_layrnorm.weight", W, AT_TOP, 0, FIELD_T(ln_pre_w), INIT_ONE, 0, 0);
  put1(w, "vision_model.pre_layrnorm.bias", W, AT_TOP, 0, FIELD_T(ln_pre_b), INIT_ZERO, 0, 0);
  for (int l = 0; l < c->vision.layers; l++) walk_block(w, c, 0, l);
  put1(w, "vision_model.post_layernorm.weight", W, AT_TOP, 0, FIELD_T(ln_post_w), INIT_ONE, 0, 0);
  put1(w, "vision_model.post_layernorm.bias", W, AT_TOP, 0, FIELD_T(ln_post_b), INIT_ZERO, 0, 0);
  put2(w, "visual_projection.weight", E, W, AT_TOP, 0, FIELD_T(vproj), INIT_NORMAL, ws, 0);
  if (!c->has_text) return;
  const int64_t Wt = c->text.width;
  const float ts = 1.0f / sqrtf((float)Wt);
  put2(w, "text_model.embeddings.token_embedding.weight", c->vocab_size, Wt, AT_TOP, 0,
       FIELD_T(tok_emb), INIT_NORMAL, 0.02f, 0);
  put2(w, "text_model.embeddings.position_embedding.weight", c->context_len, Wt, AT_TOP, 0,
       FIELD_T(tpos), INIT_NORMAL, 0.01f, 0);
  for (int l = 0; l < c->text.layers; l++) walk_block(w, c, 1, l);
  put1(w, "text_model.final_layer_norm.weight", Wt, AT_TOP, 0, FIELD_T(ln_final_w), INIT_ONE, 0,
       0);
  put1(w, "text_model.final_layer_norm.bias", Wt, AT_TOP, 0, FIELD_T(ln_final_b), INIT_ZERO, 0,
       0);
  put2(w, "text_projection.weight", E, Wt, AT_TOP, 0, FIELD_T(tproj), INIT_NORMAL, ts, 0);
  tensor_spec ls = {"logit_scale", 0, {0}, AT_TOP, 0, FIELD_T(logit_scale), INIT_CONST,
                    (float)log(1 / 0.07), 0};
  put(w, &ls);
}

size_t clip_train_param_count(const clip_config *cfg) {
  if (clip_config_validate(cfg, NULL)) return 0;
  walker w = {0};
  for (w.pass = 1; w.pass >= 0; w.pass--) walk(&w, cfg);
  return w.numel;
}

int clip_train_params_create(clip_train *ct, uint64_t seed, taca_error *err) {
  nn_backend *be = ct->be;
  const clip_config *c = &ct->cfg;
  walker w = {0};
  for (w.pass = 1; w.pass >= 0; w.pass--) walk(&w, c);
  ct->n_tensors = w.n;
  ct->n = w.off;
  clip_train_tensors *views[4] = {&ct->p, &ct->g, &ct->m, &ct->v};
  int ok = 1;
  for (int i = 0; i < 4; i++) {
    views[i]->vblocks = calloc(c->vision.layers, sizeof(clip_train_block));
    views[i]->tblocks = c->has_text ? calloc(c->text.layers, sizeof(clip_train_block)) : NULL;
    ok &= views[i]->vblocks && (!c->has_text || views[i]->tblocks);
  }
  ct->info = calloc(ct->n_tensors, sizeof *ct->info);
  ct->mem = ok && ct->info ? be->alloc(be, 4 * ct->n * sizeof(float)) : NULL;
  if (!ct->mem)
    return taca_fail(err, "clip_train: out of memory for %zu parameters (%.1f MiB with gradients "
                          "and moments)",
                     w.numel, 16.0 * ct->n / (1 << 20));
  ct->flat_p = ct->mem, ct->flat_g = ct->mem + ct->n, ct->flat_m = ct->mem + 2 * ct->n;
  ct->flat_v = ct->mem + 3 * ct->n;
  walker fill = {ct, 1, 0, 0, 0};
  walk(&fill, c);
  ct->n_decay = fill.off;
  fill.pass = 0;
  walk(&fill, c);
  /* Initial values on the host, tensor by tensor in buffer order; uploaded once. */
  float *host = calloc(ct->n ? ct->n : 1, sizeof(float));
  if (!host) return taca_fail(err, "clip_train: out of memory");
  uint64_t s = seed;
  for (int i = 0; i < ct->n_tensors; i++) {
    const clip_train_tensor_info *t = &ct->info[i];
    float *dst = host + t->offset;
    for (size_t j = 0; j < t->numel; j++) {
      switch (t->init) {
        case INIT_ONE: dst[j] = 1.0f; break;
        case INIT_NORMAL: dst[j] = (float)(t->init_a * rng_normal01(&s)); break;
        case INIT_UNIFORM: dst[j] = (float)(t->init_a * (2.0 * rng_uniform01(&s) - 1.0)); break;
        case INIT_CONST: dst[j] = t->init_a; break;
        default: dst[j] = 0.0f; break;
      }
    }
  }
  be->upload(be, ct->flat_p, host, sizeof(float) * ct->n);
  free(host);
  be->zero(be, ct->flat_g, sizeof(float) * 3 * ct->n);
  ct->step = 0;
  return 0;
}

void clip_train_params_free(clip_train *ct) {
  if (ct->mem) ct->be->free(ct->be, ct->mem);
  ct->mem = NULL;
  free(ct->info);
  ct->info = NULL;
  clip_train_tensors *views[4] = {&ct->p, &ct->g, &ct->m, &ct->v};
  for (int i = 0; i < 4; i++) {
    free(views[i]->vblocks);
    free(views[i]->tblocks);
    views[i]->vblocks = views[i]->tblocks = NULL;
  }
}

void clip_train_zero_grad(clip_train *ct) {
  ct->be->zero(ct->be, ct->flat_g, sizeof(float) * ct->n);
}

float clip_train_logit_scale(const clip_train *ct) {
  if (!ct->p.logit_scale) return 0.0f;
  float v;
  ct->be->download(ct->be, &v, ct->p.logit_scale, sizeof v);
  return v;
}

void clip_train_update(clip_train *ct, const clip_train_optim *o) {
  nn_backend *be = ct->be;
  ct->step++;
  be->adamw_update(be, ct->flat_p, ct->flat_g, ct->flat_m, ct->flat_v, ct->n_decay, o->lr,
                   o->beta1, o->beta2, o->eps, o->weight_decay, ct->step);
  const size_t d = ct->n_decay;
  be->adamw_update(be, ct->flat_p + d, ct->flat_g + d, ct->flat_m + d, ct->flat_v + d, ct->n - d,
                   o->lr, o->beta1, o->beta2, o->eps, 0.0, ct->step);
  if (ct->p.logit_scale) {
    /* open_clip: logit_scale.clamp_(0, math.log(100)) after the step. */
    const float hi = (float)log(100.0);
    float v = clip_train_logit_scale(ct), c = v < 0.0f ? 0.0f : v > hi ? hi : v;
    if (c != v) be->upload(be, ct->p.logit_scale, &c, sizeof c);
  }
}

/* ---- Loading from a model file. */

static int tower_matches(const clip_tower_config *a, const clip_tower_config *b) {
  return a->width == b->width && a->layers == b->layers && a->heads == b->heads &&
         a->mlp == b->mlp && a->act == b->act;
}

static void describe(char *buf, size_t n, const clip_config *c) {
  int off = snprintf(buf, n, "vision %dx%d/%d, width %d, %d layers, %d heads, mlp %d, %s; embed %d",
                     c->image_size, c->image_size, c->patch_size, c->vision.width,
                     c->vision.layers, c->vision.heads, c->vision.mlp,
                     c->vision.act == NN_ACT_GELU ? "gelu" : "quick_gelu", c->embed_dim);
  if (c->has_text && off > 0 && (size_t)off < n)
    snprintf(buf + off, n - off, "; text width %d, %d layers, %d heads, mlp %d, vocab %d, context %d",
             c->text.width, c->text.layers, c->text.heads, c->text.mlp, c->vocab_size,
             c->context_len);
}

static void copy_block(nn_backend *be, clip_train_block *dst, const clip_block *src, int W, int M) {
  const size_t WW = (size_t)W * W, f = sizeof(float);
  be->copy(be, dst->ln1_w, src->ln1_w, W * f);
  be->copy(be, dst->ln1_b, src->ln1_b, W * f);
  be->copy(be, dst->qkv_w, src->q_w, WW * f);
  be->copy(be, dst->qkv_w + WW, src->k_w, WW * f);
  be->copy(be, dst->qkv_w + 2 * WW, src->v_w, WW * f);
  be->copy(be, dst->qkv_b, src->q_b, W * f);
  be->copy(be, dst->qkv_b + W, src->k_b, W * f);
  be->copy(be, dst->qkv_b + 2 * W, src->v_b, W * f);
  be->copy(be, dst->out_w, src->out_w, WW * f);
  be->copy(be, dst->out_b, src->out_b, W * f);
  be->copy(be, dst->ln2_w, src->ln2_w, W * f);
  be->copy(be, dst->ln2_b, src->ln2_b, W * f);
  be->copy(be, dst->fc1_w, src->fc1_w, (size_t)M * W * f);
  be->copy(be, dst->fc1_b, src->fc1_b, M * f);
  be->copy(be, dst->fc2_w, src->fc2_w, (size_t)M * W * f);
  be->copy(be, dst->fc2_b, src->fc2_b, W * f);
}

int clip_train_load(clip_train *ct, const char *path, const char *arch, taca_error *err) {
  clip_model *m = clip_model_load(path, arch, ct->be, err);
  if (!m) return -1;
  const clip_config *a = &ct->cfg, *b = &m->cfg;
  int same = tower_matches(&a->vision, &b->vision) && a->image_size == b->image_size &&
             a->patch_size == b->patch_size && a->embed_dim == b->embed_dim;
  if (a->has_text)
    same = same && b->has_text && tower_matches(&a->text, &b->text) &&
           a->vocab_size == b->vocab_size && a->context_len == b->context_len;
  if (!same) {
    char want[320], got[320];
    describe(want, sizeof want, a);
    describe(got, sizeof got, b);
    const int no_text = a->has_text && !b->has_text;
    clip_model_free(m);
    return taca_fail(err, "%s: the model's architecture (%s%s) is not the one being trained (%s)",
                     path, got, no_text ? "; no text tower" : "", want);
  }
  nn_backend *be = ct->be;
  const size_t f = sizeof(float);
  const int W = a->vision.width, P = a->patch_size, G = a->image_size / P, E = a->embed_dim;
  const clip_vision_weights *v = &m->vision;
  clip_train_tensors *p = &ct->p;
  be->copy(be, p->patch_w, v->patch_w, (size_t)W * 3 * P * P * f);
  be->copy(be, p->cls, v->cls, W * f);
  be->copy(be, p->vpos, v->pos, (size_t)(G * G + 1) * W * f);
  be->copy(be, p->ln_pre_w, v->ln_pre_w, W * f);
  be->copy(be, p->ln_pre_b, v->ln_pre_b, W * f);
  for (int l = 0; l < a->vision.layers; l++)
    copy_block(be, &p->vblocks[l], &v->blocks[l], W, a->vision.mlp);
  be->copy(be, p->ln_post_w, v->ln_post_w, W * f);
  be->copy(be, p->ln_post_b, v->ln_post_b, W * f);
  be->copy(be, p->vproj, v->proj, (size_t)E * W * f);
  if (a->has_text) {
    const int Wt = a->text.width;
    const clip_text_weights *t = &m->text;
    be->copy(be, p->tok_emb, t->tok_emb, (size_t)a->vocab_size * Wt * f);
    be->copy(be, p->tpos, t->pos, (size_t)a->context_len * Wt * f);
    for (int l = 0; l < a->text.layers; l++)
      copy_block(be, &p->tblocks[l], &t->blocks[l], Wt, a->text.mlp);
    be->copy(be, p->ln_final_w, t->ln_final_w, Wt * f);
    be->copy(be, p->ln_final_b, t->ln_final_b, Wt * f);
    be->copy(be, p->tproj, t->proj, (size_t)E * Wt * f);
    /* A file without logit_scale keeps the current value (clip_model reports 0 for "absent"). */
    if (st_find(&m->st, "logit_scale")) be->upload(be, p->logit_scale, &m->logit_scale, f);
  }
  be->synchronize(be);
  clip_model_free(m);
  return 0;
}

/* ---- Saving as a HuggingFace directory. */

char *clip_train_hf_config_json(const clip_config *c) {
  json_t *root = json_object();
  json_t *vc = json_object();
  json_object_set_new(root, "architectures", json_pack("[s]", "CLIPModel"));
  json_object_set_new(root, "model_type", json_string("clip"));
  json_object_set_new(root, "projection_dim", json_integer(c->embed_dim));
  json_object_set_new(root, "logit_scale_init_value", json_real(2.6592));
  json_object_set_new(root, "torch_dtype", json_string("float32"));
  json_object_set_new(vc, "model_type", json_string("clip_vision_model"));
  json_object_set_new(vc, "hidden_size", json_integer(c->vision.width));
  json_object_set_new(vc, "intermediate_size", json_integer(c->vision.mlp));
  json_object_set_new(vc, "num_hidden_layers", json_integer(c->vision.layers));
  json_object_set_new(vc, "num_attention_heads", json_integer(c->vision.heads));
  json_object_set_new(vc, "image_size", json_integer(c->image_size));
  json_object_set_new(vc, "patch_size", json_integer(c->patch_size));
  json_object_set_new(vc, "num_channels", json_integer(3));
  json_object_set_new(vc, "hidden_act",
                      json_string(c->vision.act == NN_ACT_GELU ? "gelu" : "quick_gelu"));
  json_object_set_new(vc, "layer_norm_eps", json_real(1e-5));
  json_object_set_new(vc, "projection_dim", json_integer(c->embed_dim));
  json_object_set_new(root, "vision_config", vc);
  if (c->has_text) {
    json_t *tc = json_object();
    json_object_set_new(tc, "model_type", json_string("clip_text_model"));
    json_object_set_new(tc, "hidden_size", json_integer(c->text.width));
    json_object_set_new(tc, "intermediate_size", json_integer(c->text.mlp));
    json_object_set_new(tc, "num_hidden_layers", json_integer(c->text.layers));
    json_object_set_new(tc, "num_attention_heads", json_integer(c->text.heads));
    json_object_set_new(tc, "max_position_embeddings", json_integer(c->context_len));
    json_object_set_new(tc, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(tc, "hidden_act",
                        json_string(c->text.act == NN_ACT_GELU ? "gelu" : "quick_gelu"));
    json_object_set_new(tc, "layer_norm_eps", json_real(1e-5));
    json_object_set_new(tc, "projection_dim", json_integer(c->embed_dim));
    /* OpenAI's HF configs: eos_token_id 2 selects transformers' argmax pooling, which is the rule
     * used here (the first 49407, the largest id, else the first largest id). */
    json_object_set_new(tc, "bos_token_id", json_integer(0));
    json_object_set_new(tc, "eos_token_id", json_integer(2));
    json_object_set_new(tc, "pad_token_id", json_integer(1));
    json_object_set_new(root, "text_config", tc);
  }
  char *s = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
  json_decref(root);
  return s;
}

/* Removes the regular files of dir (not recursing) and then dir itself; best effort. */
static void remove_dir_files(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char path[4352];
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    unlink(path);
  }
  closedir(d);
  rmdir(dir);
}

static void fsync_parent(const char *path) {
  char parent[4096];
  snprintf(parent, sizeof parent, "%s", path);
  char *slash = strrchr(parent, '/');
  if (slash == parent) parent[1] = 0;
  else if (slash) *slash = 0;
  else snprintf(parent, sizeof parent, ".");
  int fd = open(parent, O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

/* Puts the directory tmp in the place of dir: a rename when dir does not exist (or is empty), else
 * an atomic exchange (renameat2 RENAME_EXCHANGE; a two-step rename where the file system lacks
 * it) after which the old directory's files are removed. */
static int replace_dir(const char *tmp, const char *dir, taca_error *err) {
  struct stat sb;
  if (lstat(dir, &sb) == 0 && !S_ISDIR(sb.st_mode))
    return taca_fail(err, "%s exists and is not a directory", dir);
  if (rename(tmp, dir) == 0) {
    fsync_parent(dir);
    return 0;
  }
  if (errno != ENOTEMPTY && errno != EEXIST)
    return taca_fail(err, "%s: cannot move %s into place: %s", dir, tmp, strerror(errno));
  if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
    fsync_parent(dir);
    remove_dir_files(tmp); /* tmp now holds the previous model */
    return 0;
  }
  char old[4200];
  snprintf(old, sizeof old, "%s.old", dir);
  remove_dir_files(old);
  if (rename(dir, old) || rename(tmp, dir))
    return taca_fail(err, "%s: cannot replace the existing directory: %s", dir, strerror(errno));
  fsync_parent(dir);
  remove_dir_files(old);
  return 0;
}

int clip_train_save_hf(const clip_train *ct, const char *dir, const char *const *meta,
                       taca_error *err) {
  nn_backend *be = ct->be;
  char tmp[4096], path[4200];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", dir) >= (int)sizeof tmp)
    return taca_fail(err, "%s: path too long", dir);
  float *owned = NULL;
  const float *host = ct->flat_p;
  if (!be->host_memory) {
    if (!(owned = malloc(sizeof(float) * (ct->n ? ct->n : 1))))
      return taca_fail(err, "%s: out of memory", dir);
    be->download(be, owned, ct->flat_p, sizeof(float) * ct->n);
    host = owned;
  }
  be->synchronize(be);
  int rc = -1;
  char *config = clip_train_hf_config_json(&ct->cfg);
  st_writer *w = st_writer_new();
  if (!config || !w) {
    taca_fail(err, "%s: out of memory", dir);
    goto done;
  }
  if (st_writer_meta(w, "format", "pt", err)) goto done;
  for (int i = 0; meta && meta[i]; i += 2) {
    if (!meta[i + 1]) {
      taca_fail(err, "metadata key '%s' has no value", meta[i]);
      goto done;
    }
    if (st_writer_meta(w, meta[i], meta[i + 1], err)) goto done;
  }
  for (int i = 0; i < ct->n_tensors; i++) {
    const clip_train_tensor_info *t = &ct->info[i];
    if (st_writer_add(w, t->name, TACA_DT_F32, t->ndim, t->shape, host + t->offset, err))
      goto done;
  }
  struct stat sb;
  if (stat(tmp, &sb) == 0) remove_dir_files(tmp); /* left over from an interrupted save */
  if (mkdir(tmp, 0755)) {
    taca_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
    goto done;
  }
  snprintf(path, sizeof path, "%s/model.safetensors", tmp);
  if (st_writer_save(w, path, err)) goto fail_tmp;
  snprintf(path, sizeof path, "%s/config.json", tmp);
  taca_chunk chunks[2] = {{config, strlen(config)}, {"\n", 1}};
  if (taca_write_file_atomic(path, chunks, 2, err)) goto fail_tmp;
  if (replace_dir(tmp, dir, err)) goto fail_tmp;
  rc = 0;
  goto done;
fail_tmp:
  remove_dir_files(tmp);
done:
  st_writer_free(w);
  free(config);
  free(owned);
  return rc;
}
