/* clip_load.c: loading CLIP weights from HF or open_clip safetensors into the canonical layout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nn/clip.h"

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

typedef struct loader {
  clip_model *m;
  char *used;    /* per tensor of m->st: consumed by the loader */
  taca_error *err;
} loader;

static int own(clip_model *m, void *p) {
  if (m->n_owned == m->cap_owned) {
    int cap = m->cap_owned ? 2 * m->cap_owned : 64;
    void **o = realloc(m->owned, sizeof *o * cap);
    if (!o) return -1;
    m->owned = o;
    m->cap_owned = cap;
  }
  m->owned[m->n_owned++] = p;
  return 0;
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
  size_t off = 0;
  off += snprintf(buf + off, n - off, "[");
  for (int i = 0; i < ndim && off < n; i++)
    off += snprintf(buf + off, n - off, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (off < n) snprintf(buf + off, n - off, "]");
}

/* Finds a tensor, checks its shape, and returns its data as backend F32 (zero-copy when possible).
 * transpose2d: the file holds [a, b] and the canonical layout wants [b, a]. */
static const float *param(loader *L, const char *name, int ndim, const int64_t *shape,
                          int transpose2d) {
  clip_model *m = L->m;
  const st_tensor *t = st_find(&m->st, name);
  if (!t) {
    taca_fail(L->err, "missing tensor '%s'", name);
    return NULL;
  }
  L->used[t - m->st.tensors] = 1;
  int ok = t->ndim == ndim;
  for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
  if (!ok) {
    char want[128], got[128];
    shape_str(want, sizeof want, ndim, shape);
    shape_str(got, sizeof got, t->ndim, t->shape);
    taca_fail(L->err, "tensor '%s' has shape %s, the architecture needs %s", name, got, want);
    return NULL;
  }
  if (!taca_dtype_is_float(t->dtype)) {
    taca_fail(L->err, "tensor '%s' has dtype %s, expected F32, F16 or BF16", name,
              taca_dtype_name(t->dtype));
    return NULL;
  }
  const float *view = st_f32_view(t);
  if (view && !transpose2d && m->be->host_memory) return view;
  size_t n = t->numel, bytes = sizeof(float) * (n ? n : 1);
  float *host = malloc(bytes);
  if (!host) {
    taca_fail(L->err, "out of memory loading '%s'", name);
    return NULL;
  }
  if (st_to_f32(t, host, L->err)) {
    free(host);
    return NULL;
  }
  if (transpose2d) {
    float *tr = malloc(bytes);
    if (!tr) {
      free(host);
      taca_fail(L->err, "out of memory loading '%s'", name);
      return NULL;
    }
    int64_t a = shape[0], b = shape[1];
    for (int64_t i = 0; i < a; i++)
      for (int64_t j = 0; j < b; j++) tr[j * a + i] = host[i * b + j];
    free(host);
    host = tr;
  }
  float *dev;
  if (m->be->host_memory) {
    dev = host;
  } else {
    dev = m->be->alloc(m->be, bytes);
    if (dev) m->be->upload(m->be, dev, host, bytes);
    free(host);
  }
  if (!dev || own(m, dev)) {
    taca_fail(L->err, "out of memory loading '%s'", name);
    return NULL;
  }
  return dev;
}

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define P1(name, a) param(L, name, 1, SHAPE(a), 0)
#define P2(name, a, b) param(L, name, 2, SHAPE(a, b), 0)

/* Loads one residual block. fmt has one %d for the block index, then %s for the sub-key. */
static int load_block(loader *L, clip_block *blk, const clip_tower_config *tc, const char *prefix,
                      int layer, clip_layout layout) {
  char k[256];
  const int64_t W = tc->width, M = tc->mlp;
#define K(sub) (snprintf(k, sizeof k, "%s%d.%s", prefix, layer, sub), k)
  if (layout == CLIP_LAYOUT_OPEN_CLIP) {
    const float *w = P2(K("attn.in_proj_weight"), 3 * W, W);
    const float *b = P1(K("attn.in_proj_bias"), 3 * W);
    if (!w || !b) return -1;
    blk->q_w = w, blk->k_w = w + W * W, blk->v_w = w + 2 * W * W;
    blk->q_b = b, blk->k_b = b + W, blk->v_b = b + 2 * W;
    if (!(blk->out_w = P2(K("attn.out_proj.weight"), W, W)) ||
        !(blk->out_b = P1(K("attn.out_proj.bias"), W)) || !(blk->ln1_w = P1(K("ln_1.weight"), W)) ||
        !(blk->ln1_b = P1(K("ln_1.bias"), W)) || !(blk->ln2_w = P1(K("ln_2.weight"), W)) ||
        !(blk->ln2_b = P1(K("ln_2.bias"), W)) || !(blk->fc1_w = P2(K("mlp.c_fc.weight"), M, W)) ||
        !(blk->fc1_b = P1(K("mlp.c_fc.bias"), M)) ||
        !(blk->fc2_w = P2(K("mlp.c_proj.weight"), W, M)) ||
        !(blk->fc2_b = P1(K("mlp.c_proj.bias"), W)))
      return -1;
  } else {
    if (!(blk->q_w = P2(K("self_attn.q_proj.weight"), W, W)) ||
        !(blk->q_b = P1(K("self_attn.q_proj.bias"), W)) ||
        !(blk->k_w = P2(K("self_attn.k_proj.weight"), W, W)) ||
        !(blk->k_b = P1(K("self_attn.k_proj.bias"), W)) ||
        !(blk->v_w = P2(K("self_attn.v_proj.weight"), W, W)) ||
        !(blk->v_b = P1(K("self_attn.v_proj.bias"), W)) ||
        !(blk->out_w = P2(K("self_attn.out_proj.weight"), W, W)) ||
        !(blk->out_b = P1(K("self_attn.out_proj.bias"), W)) ||
        !(blk->ln1_w = P1(K("layer_norm1.weight"), W)) ||
        !(blk->ln1_b = P1(K("layer_norm1.bias"), W)) ||
        !(blk->ln2_w = P1(K("layer_norm2.weight"), W)) ||
        !(blk->ln2_b = P1(K("layer_norm2.bias"), W)) ||
        !(blk->fc1_w = P2(K("mlp.fc1.weight"), M, W)) || !(blk->fc1_b = P1(K("mlp.fc1.bias"), M)) ||
        !(blk->fc2_w = P2(K("mlp.fc2.weight"), W, M)) || !(blk->fc2_b = P1(K("mlp.fc2.bias"), W)))
      return -1;
  }
#undef K
  return 0;
}

static int load_vision(loader *L, clip_model *m) {
  const clip_config *c = &m->cfg;
  const int64_t W = c->vision.width, P = c->patch_size, G = c->image_size / c->patch_size;
  const int64_t E = c->embed_dim;
  clip_vision_weights *v = &m->vision;
  v->blocks = calloc(c->vision.layers, sizeof *v->blocks);
  if (!v->blocks) return taca_fail(L->err, "out of memory");
  int oc = m->layout == CLIP_LAYOUT_OPEN_CLIP;
  v->patch_w = param(L, oc ? "visual.conv1.weight" : "vision_model.embeddings.patch_embedding.weight",
                     4, SHAPE(W, 3, P, P), 0);
  if (!v->patch_w) return -1;
  if (oc) {
    if (!(v->cls = P1("visual.class_embedding", W)) ||
        !(v->pos = P2("visual.positional_embedding", G * G + 1, W)) ||
        !(v->ln_pre_w = P1("visual.ln_pre.weight", W)) ||
        !(v->ln_pre_b = P1("visual.ln_pre.bias", W)) ||
        !(v->ln_post_w = P1("visual.ln_post.weight", W)) ||
        !(v->ln_post_b = P1("visual.ln_post.bias", W)) ||
        !(v->proj = param(L, "visual.proj", 2, SHAPE(W, E), 1)))
      return -1;
  } else {
    if (!(v->cls = P1("vision_model.embeddings.class_embedding", W)) ||
        !(v->pos = P2("vision_model.embeddings.position_embedding.weight", G * G + 1, W)) ||
        !(v->ln_pre_w = P1("vision_model.pre_layrnorm.weight", W)) ||
        !(v->ln_pre_b = P1("vision_model.pre_layrnorm.bias", W)) ||
        !(v->ln_post_w = P1("vision_model.post_layernorm.weight", W)) ||
        !(v->ln_post_b = P1("vision_model.post_layernorm.bias", W)) ||
        !(v->proj = P2("visual_projection.weight", E, W)))
      return -1;
  }
  const char *prefix = oc ? "visual.transformer.resblocks." : "vision_model.encoder.layers.";
  for (int l = 0; l < c->vision.layers; l++)
    if (load_block(L, &v->blocks[l], &c->vision, prefix, l, m->layout)) return -1;
  return 0;
}

static int load_text(loader *L, clip_model *m) {
  const clip_config *c = &m->cfg;
  const int64_t W = c->text.width, E = c->embed_dim, V = c->vocab_size, T = c->context_len;
  clip_text_weights *t = &m->text;
  t->blocks = calloc(c->text.layers, sizeof *t->blocks);
  if (!t->blocks) return taca_fail(L->err, "out of memory");
  int oc = m->layout == CLIP_LAYOUT_OPEN_CLIP;
  if (oc) {
    if (!(t->tok_emb = P2("token_embedding.weight", V, W)) ||
        !(t->pos = P2("positional_embedding", T, W)) ||
        !(t->ln_final_w = P1("ln_final.weight", W)) || !(t->ln_final_b = P1("ln_final.bias", W)) ||
        !(t->proj = param(L, "text_projection", 2, SHAPE(W, E), 1)))
      return -1;
  } else {
    if (!(t->tok_emb = P2("text_model.embeddings.token_embedding.weight", V, W)) ||
        !(t->pos = P2("text_model.embeddings.position_embedding.weight", T, W)) ||
        !(t->ln_final_w = P1("text_model.final_layer_norm.weight", W)) ||
        !(t->ln_final_b = P1("text_model.final_layer_norm.bias", W)) ||
        !(t->proj = P2("text_projection.weight", E, W)))
      return -1;
  }
  const char *prefix = oc ? "transformer.resblocks." : "text_model.encoder.layers.";
  for (int l = 0; l < c->text.layers; l++)
    if (load_block(L, &t->blocks[l], &c->text, prefix, l, m->layout)) return -1;
  return 0;
}

/* Loads the towers of m->cfg that `towers` names from m->st (layout m->layout). strict: every tensor
 * of the file must be used (else only those under a loaded tower's prefixes must be). */
static int load_tensors(clip_model *m, unsigned towers, int strict, taca_error *err) {
  loader L = {m, calloc(m->st.n ? m->st.n : 1, 1), err};
  if (!L.used) return taca_fail(err, "out of memory");
  int rc = -1;
  if ((towers & CLIP_TOWER_VISION) && load_vision(&L, m)) goto done;
  if ((towers & CLIP_TOWER_TEXT) && m->cfg.has_text && load_text(&L, m)) goto done;
  const st_tensor *ls = st_find(&m->st, "logit_scale");
  if (ls) {
    L.used[ls - m->st.tensors] = 1;
    float v;
    if (ls->numel != 1 || st_to_f32(ls, &v, err)) {
      taca_fail(err, "tensor 'logit_scale' must be one float");
      goto done;
    }
    m->logit_scale = v;
  }
  static const char *const VISION_PREFIX[] = {"vision_model.", "visual_projection.", NULL};
  static const char *const TEXT_PREFIX[] = {"text_model.", "text_projection.", NULL};
  for (int i = 0; i < m->st.n; i++) {
    const char *name = m->st.tensors[i].name;
    if (L.used[i] || ends_with(name, "position_ids")) continue;
    int ours = strict;
    for (int k = 0; !ours && VISION_PREFIX[k]; k++)
      ours = (towers & CLIP_TOWER_VISION) && !strncmp(name, VISION_PREFIX[k], strlen(VISION_PREFIX[k]));
    for (int k = 0; !ours && TEXT_PREFIX[k]; k++)
      ours = (towers & CLIP_TOWER_TEXT) && !strncmp(name, TEXT_PREFIX[k], strlen(TEXT_PREFIX[k]));
    if (!ours) continue;
    taca_fail(err, "unexpected tensor '%s' (not part of a %s CLIP model of this architecture)", name,
              m->layout == CLIP_LAYOUT_HF ? "HF" : "open_clip");
    goto done;
  }
  rc = 0;
done:
  free(L.used);
  return rc;
}

clip_model *clip_model_load(const char *path, const char *arch, nn_backend *be, taca_error *err) {
  clip_model *m = calloc(1, sizeof *m);
  if (!m) {
    taca_fail(err, "out of memory");
    return NULL;
  }
  m->be = be;
  struct stat sb;
  if (stat(path, &sb) != 0) {
    taca_fail(err, "%s: no such model file or directory", path);
    free(m);
    return NULL;
  }
  char file[4096];
  int rc;
  if (S_ISDIR(sb.st_mode)) {
    m->layout = CLIP_LAYOUT_HF;
    char cfgpath[4096];
    snprintf(cfgpath, sizeof cfgpath, "%s/config.json", path);
    snprintf(file, sizeof file, "%s/model.safetensors", path);
    rc = arch ? (ends_with(arch, ".json") ? clip_config_open_clip_json(&m->cfg, arch, err)
                                         : clip_config_builtin(&m->cfg, arch, err))
              : clip_config_hf_json(&m->cfg, cfgpath, err);
  } else {
    m->layout = CLIP_LAYOUT_OPEN_CLIP;
    snprintf(file, sizeof file, "%s", path);
    if (!arch) {
      taca_fail(err, "%s: an open_clip state dict needs --arch NAME or --arch CONFIG.json", path);
      free(m);
      return NULL;
    }
    rc = ends_with(arch, ".json") ? clip_config_open_clip_json(&m->cfg, arch, err)
                                  : clip_config_builtin(&m->cfg, arch, err);
  }
  if (rc || st_open(&m->st, file, err)) {
    free(m);
    return NULL;
  }
  /* The text tower is optional (vision-only checkpoints); present iff its token embedding is. */
  m->cfg.has_text = st_find(&m->st, m->layout == CLIP_LAYOUT_HF
                                        ? "text_model.embeddings.token_embedding.weight"
                                        : "token_embedding.weight") != NULL;
  m->has_vision = 1;
  if (load_tensors(m, CLIP_TOWER_VISION | CLIP_TOWER_TEXT, 1, err)) {
    taca_error_prefix(err, "%s", file);
    clip_model_free(m);
    return NULL;
  }
  return m;
}

clip_model *clip_model_load_towers(const char *file, const clip_config *cfg, unsigned towers, nn_backend *be,
                                   taca_error *err) {
  clip_model *m = calloc(1, sizeof *m);
  if (!m) {
    taca_fail(err, "out of memory");
    return NULL;
  }
  m->be = be;
  m->layout = CLIP_LAYOUT_HF;
  m->cfg = *cfg;
  m->cfg.has_text = (towers & CLIP_TOWER_TEXT) && cfg->has_text;
  m->has_vision = (towers & CLIP_TOWER_VISION) != 0;
  if (st_open(&m->st, file, err)) {
    free(m);
    return NULL;
  }
  if (load_tensors(m, towers, 0, err)) {
    taca_error_prefix(err, "%s", file);
    clip_model_free(m);
    return NULL;
  }
  return m;
}

static void unregister_bf16(clip_model *m) {
  for (int l = 0; m->vision.blocks && l < m->cfg.vision.layers; l++) m->vision.blocks[l].qkv_fused = 0;
  for (int l = 0; m->text.blocks && l < m->cfg.text.layers; l++) m->text.blocks[l].qkv_fused = 0;
  for (int i = 0; i < m->n_bf16; i++) m->be->bf16_unregister(m->be, m->bf16_regions[i]);
  free(m->bf16_regions);
  m->bf16_regions = NULL;
  m->n_bf16 = 0;
  m->precision = NN_PRECISION_F32;
}

static int register_bf16(clip_model *m, const float *w, size_t n, taca_error *err) {
  if (!w || !n) return 0;
  for (int i = 0; i < m->n_bf16; i++)
    if (m->bf16_regions[i] == w) return 0;
  const float **r = realloc(m->bf16_regions, sizeof *r * (m->n_bf16 + 1));
  if (!r) return taca_fail(err, "out of memory");
  m->bf16_regions = r;
  if (m->be->bf16_register(m->be, w, n, err)) return -1;
  r[m->n_bf16++] = w;
  return 0;
}

/* A block's GEMM weights: q, k and v as one region where they lie back to back (open_clip's packed
 * in_proj_weight; the trainer then multiplies them as one [3W, W] matrix). */
static int register_block(clip_model *m, clip_block *b, const clip_tower_config *tc,
                          taca_error *err) {
  const size_t W = tc->width, M = tc->mlp, WW = W * W;
  if (b->k_w == b->q_w + WW && b->v_w == b->k_w + WW) {
    if (register_bf16(m, b->q_w, 3 * WW, err)) return -1;
    b->qkv_fused = b->k_b == b->q_b + W && b->v_b == b->k_b + W;
  } else if (register_bf16(m, b->q_w, WW, err) || register_bf16(m, b->k_w, WW, err) ||
             register_bf16(m, b->v_w, WW, err)) {
    return -1;
  }
  return register_bf16(m, b->out_w, WW, err) || register_bf16(m, b->fc1_w, M * W, err) ||
                 register_bf16(m, b->fc2_w, W * M, err)
             ? -1
             : 0;
}

int clip_model_set_precision(clip_model *m, nn_precision p, taca_error *err) {
  if (p == m->precision) return 0;
  unregister_bf16(m);
  if (p == NN_PRECISION_F32) return 0;
  if (nn_backend_check_precision(m->be, p, err)) return -1;
  const clip_config *c = &m->cfg;
  const size_t E = c->embed_dim;
  int rc = 0;
  if (m->has_vision) {
    const size_t W = c->vision.width, P = c->patch_size;
    rc = register_bf16(m, m->vision.patch_w, W * 3 * P * P, err) ||
         register_bf16(m, m->vision.proj, E * W, err);
    for (int l = 0; !rc && l < c->vision.layers; l++)
      rc = register_block(m, &m->vision.blocks[l], &c->vision, err);
  }
  if (!rc && c->has_text) {
    rc = register_bf16(m, m->text.proj, E * (size_t)c->text.width, err);
    for (int l = 0; !rc && l < c->text.layers; l++)
      rc = register_block(m, &m->text.blocks[l], &c->text, err);
  }
  if (rc) {
    unregister_bf16(m);
    return -1;
  }
  m->precision = p;
  return 0;
}

void clip_model_workspace_free(clip_model *m);

void clip_model_free(clip_model *m) {
  if (!m) return;
  unregister_bf16(m);
  clip_model_workspace_free(m);
  for (int i = 0; i < m->n_owned; i++) {
    if (m->be->host_memory) free(m->owned[i]);
    else m->be->free(m->be, m->owned[i]);
  }
  free(m->owned);
  free(m->vision.blocks);
  free(m->text.blocks);
  st_close(&m->st);
  free(m);
}
