/* clip_export.c: a CLIP model's towers as HF-layout tensors and config objects (see clip_export.h). */
#include "nn/clip_export.h"

#include <stdarg.h>
#include <stdio.h>

typedef struct adder {
  st_writer *w;
  taca_error *err;
  int failed;
} adder;

static void add(adder *a, const float *data, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void add(adder *a, const float *data, int ndim, const int64_t *shape, const char *fmt, ...) {
  if (a->failed) return;
  char name[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  if (st_writer_add(a->w, name, TACA_DT_F32, ndim, shape, data, a->err)) a->failed = 1;
}

#define S1(a) ((const int64_t[]){a})
#define S2(a, b) ((const int64_t[]){a, b})

/* q, k, v packed in memory as [3W, W] and [3W] (open_clip's in_proj: one GEMM in the trainer's
 * forward) stay packed in the file (weights, then biases, back to back; the writer adds no padding),
 * so that the export computes exactly what its source computes; otherwise they alternate. */
static void add_block(adder *a, const clip_block *b, const clip_tower_config *tc, const char *pre, int l) {
  const int64_t W = tc->width, M = tc->mlp;
  const size_t WW = (size_t)W * W;
  const int packed = b->k_w == b->q_w + WW && b->v_w == b->k_w + WW && b->k_b == b->q_b + W && b->v_b == b->k_b + W;
  static const char *const QKV[3] = {"q", "k", "v"};
  const float *w[3] = {b->q_w, b->k_w, b->v_w}, *bias[3] = {b->q_b, b->k_b, b->v_b};
  for (int pass = 0; pass < (packed ? 2 : 1); pass++)
    for (int i = 0; i < 3; i++) {
      if (!packed || pass == 0) add(a, w[i], 2, S2(W, W), "%s%d.self_attn.%s_proj.weight", pre, l, QKV[i]);
      if (!packed || pass == 1) add(a, bias[i], 1, S1(W), "%s%d.self_attn.%s_proj.bias", pre, l, QKV[i]);
    }
  add(a, b->out_w, 2, S2(W, W), "%s%d.self_attn.out_proj.weight", pre, l);
  add(a, b->out_b, 1, S1(W), "%s%d.self_attn.out_proj.bias", pre, l);
  add(a, b->ln1_w, 1, S1(W), "%s%d.layer_norm1.weight", pre, l);
  add(a, b->ln1_b, 1, S1(W), "%s%d.layer_norm1.bias", pre, l);
  add(a, b->ln2_w, 1, S1(W), "%s%d.layer_norm2.weight", pre, l);
  add(a, b->ln2_b, 1, S1(W), "%s%d.layer_norm2.bias", pre, l);
  add(a, b->fc1_w, 2, S2(M, W), "%s%d.mlp.fc1.weight", pre, l);
  add(a, b->fc1_b, 1, S1(M), "%s%d.mlp.fc1.bias", pre, l);
  add(a, b->fc2_w, 2, S2(W, M), "%s%d.mlp.fc2.weight", pre, l);
  add(a, b->fc2_b, 1, S1(W), "%s%d.mlp.fc2.bias", pre, l);
}

int clip_model_add_hf_tensors(const clip_model *m, unsigned towers, st_writer *w, taca_error *err) {
  if (!m->be->host_memory) return taca_fail(err, "exporting a model needs it on a host-memory backend");
  const clip_config *c = &m->cfg;
  adder a = {w, err, 0};
  const int64_t E = c->embed_dim;
  if (towers & CLIP_TOWER_VISION) {
    if (!m->has_vision) return taca_fail(err, "the model has no vision tower to export");
    const clip_vision_weights *v = &m->vision;
    const int64_t W = c->vision.width, P = c->patch_size, G = c->image_size / c->patch_size;
    add(&a, v->patch_w, 4, ((const int64_t[]){W, 3, P, P}), "vision_model.embeddings.patch_embedding.weight");
    add(&a, v->cls, 1, S1(W), "vision_model.embeddings.class_embedding");
    add(&a, v->pos, 2, S2(G * G + 1, W), "vision_model.embeddings.position_embedding.weight");
    add(&a, v->ln_pre_w, 1, S1(W), "vision_model.pre_layrnorm.weight");
    add(&a, v->ln_pre_b, 1, S1(W), "vision_model.pre_layrnorm.bias");
    for (int l = 0; l < c->vision.layers; l++) add_block(&a, &v->blocks[l], &c->vision, "vision_model.encoder.layers.", l);
    add(&a, v->ln_post_w, 1, S1(W), "vision_model.post_layernorm.weight");
    add(&a, v->ln_post_b, 1, S1(W), "vision_model.post_layernorm.bias");
    add(&a, v->proj, 2, S2(E, W), "visual_projection.weight");
  }
  if (towers & CLIP_TOWER_TEXT) {
    if (!c->has_text) return taca_fail(err, "the model has no text tower to export");
    const clip_text_weights *t = &m->text;
    const int64_t W = c->text.width;
    add(&a, t->tok_emb, 2, S2(c->vocab_size, W), "text_model.embeddings.token_embedding.weight");
    add(&a, t->pos, 2, S2(c->context_len, W), "text_model.embeddings.position_embedding.weight");
    for (int l = 0; l < c->text.layers; l++) add_block(&a, &t->blocks[l], &c->text, "text_model.encoder.layers.", l);
    add(&a, t->ln_final_w, 1, S1(W), "text_model.final_layer_norm.weight");
    add(&a, t->ln_final_b, 1, S1(W), "text_model.final_layer_norm.bias");
    add(&a, t->proj, 2, S2(E, W), "text_projection.weight");
  }
  return a.failed ? -1 : 0;
}

json_t *clip_config_hf_tower_json(const clip_config *cfg, unsigned tower) {
  const int text = tower == CLIP_TOWER_TEXT;
  const clip_tower_config *t = text ? &cfg->text : &cfg->vision;
  json_t *j = json_pack("{s:i,s:i,s:i,s:i,s:s,s:f,s:i}", "hidden_size", t->width, "intermediate_size", t->mlp,
                        "num_hidden_layers", t->layers, "num_attention_heads", t->heads, "hidden_act",
                        t->act == NN_ACT_QUICK_GELU ? "quick_gelu" : "gelu", "layer_norm_eps", 1e-5,
                        "projection_dim", cfg->embed_dim);
  if (!j) return NULL;
  int bad = text ? json_object_set_new(j, "max_position_embeddings", json_integer(cfg->context_len)) ||
                       json_object_set_new(j, "vocab_size", json_integer(cfg->vocab_size)) ||
                       json_object_set_new(j, "bos_token_id", json_integer(49406)) ||
                       json_object_set_new(j, "eos_token_id", json_integer(49407))
                 : json_object_set_new(j, "image_size", json_integer(cfg->image_size)) ||
                       json_object_set_new(j, "patch_size", json_integer(cfg->patch_size)) ||
                       json_object_set_new(j, "num_channels", json_integer(3));
  if (bad) {
    json_decref(j);
    return NULL;
  }
  return j;
}
