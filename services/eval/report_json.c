/* report_json.c: an eval_result as one JSON document (jansson), every figure included; a figure
 * that does not apply is {"applicable": false, "reason": "..."} rather than a number. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/atomicfile.h"
#include "services/eval/report.h"

/* Non-finite numbers are not JSON: null. */
static json_t *num(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static json_t *str_or_null(const char *s) { return s && s[0] ? json_string(s) : json_null(); }

static json_t *recall_json(const eval_recall *c) {
  return json_pack("{s:o, s:o, s:o, s:o, s:o}", "r1", num(c->r1), "r5", num(c->r5), "r10", num(c->r10),
                   "median_rank", num(c->median_rank), "mean_rank", num(c->mean_rank));
}

static json_t *na_json(const eval_na *na) {
  return json_pack("{s:b, s:s}", "applicable", 0, "reason", na->reason);
}

static json_t *retrieval_json(const eval_na *ok, const eval_na *ok2, const eval_retrieval *ret) {
  if (!ok->applicable) return na_json(ok);
  if (ok2 && !ok2->applicable) return na_json(ok2);
  return json_pack("{s:b, s:i, s:o, s:o}", "applicable", 1, "n", ret->n, "t2i", recall_json(&ret->t2i), "i2t",
                   recall_json(&ret->i2t));
}

static json_t *value_json(const eval_na *ok, const eval_na *ok2, double v) {
  if (!ok->applicable) return na_json(ok);
  if (ok2 && !ok2->applicable) return na_json(ok2);
  return json_pack("{s:b, s:o}", "applicable", 1, "value", num(v));
}

static json_t *bc_json(const eval_na *ok, const eval_na *ok2, const eval_bc_retrieval *x) {
  if (!ok->applicable) return na_json(ok);
  if (ok2 && !ok2->applicable) return na_json(ok2);
  return json_pack("{s:b, s:i, s:o, s:o}", "applicable", 1, "queries", x->n, "r1", num(x->r1), "map", num(x->map));
}

static json_t *pair_json(const eval_na *ok, const eval_pair_stats *p) {
  if (!ok->applicable) return na_json(ok);
  return json_pack("{s:b, s:i, s:o, s:o, s:o, s:o}", "applicable", 1, "n", p->n, "mean_l2", num(p->mean_l2),
                   "mean_cosine", num(p->mean_cosine), "mean_norm", num(p->mean_norm_a), "mean_norm_old",
                   num(p->mean_norm_b));
}

json_t *eval_result_json(const eval_result *r, const eval_options *o) {
  json_t *root = json_object();
  if (!root) return NULL;
  json_object_set_new(root, "taca_eval", json_integer(1));
  if (o->service_json) { /* the later steps' results, as given (NULL when unreadable) */
    json_t *sj = json_load_file(o->service_json, 0, NULL);
    json_object_set_new(root, "service", sj ? sj : json_null());
  }
  if (o->aft_json) {
    json_t *aj = json_load_file(o->aft_json, 0, NULL);
    json_object_set_new(root, "aft", aj ? aj : json_null());
  }
  json_object_set_new(root, "inputs",
                      json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:o}", "db", r->db, "old", r->old_name, "old_arch",
                                r->old_arch, "new_model", r->new_model, "arch", str_or_null(o->arch),
                                "checkpoint", str_or_null(r->checkpoint), "log_json", str_or_null(o->log_json)));
  json_object_set_new(root, "dims",
                      json_pack("{s:i, s:i, s:i, s:i}", "old_image", r->old_image_dim, "old_text", r->old_text_dim,
                                "new", r->new_dim, "image_size", r->image_size));
  /* only for BF16: an F32 report keeps its fields as they were (absent = f32) */
  if (o->precision != NN_PRECISION_F32)
    json_object_set_new(root, "precision", json_string(nn_precision_name(o->precision)));
  if (r->checkpoint[0])
    json_object_set_new(
        root, "checkpoint",
        json_pack("{s:o, s:s, s:s, s:o, s:i, s:I}", "step", r->ckpt_step >= 0 ? json_integer(r->ckpt_step) : json_null(),
                  "peft", r->ckpt_peft, "layers", r->ckpt_layers, "targets", str_or_null(r->ckpt_targets),
                  "projector_hidden", r->ckpt_proj_hidden, "trainable_parameters", (json_int_t)r->ckpt_trainable));
  else
    json_object_set_new(root, "checkpoint", json_null());

  json_t *ti = json_array();
  for (int i = 0; i < r->n_test; i++) json_array_append_new(ti, json_integer((json_int_t)r->test_index[i]));
  json_object_set_new(
      root, "split",
      json_pack("{s:o, s:I, s:i, s:s, s:I, s:I, s:i, s:i, s:i, s:i, s:o}", "fraction", num(r->split), "seed",
                (json_int_t)r->seed, "group", r->split_group,
                "rule", "a sample is in the train split iff u(seed, index / group) < fraction (services/eval/metrics.h)",
                "records", (json_int_t)r->n_records, "skipped", (json_int_t)r->n_skipped, "train", r->n_train,
                "test", r->n_test, "train_labelled", r->n_train_labelled, "test_labelled", r->n_test_labelled,
                "test_indices", ti));
  json_object_set_new(root, "chance",
                      json_pack("{s:o, s:o, s:o}", "r1", num(r->chance_r1), "r5", num(r->chance_r5), "r10",
                                num(r->chance_r10)));
  json_object_set_new(root, "retrieval",
                      json_pack("{s:o, s:o, s:o}", "old", retrieval_json(&r->ret_ok, NULL, &r->ret_old), "adapted",
                                retrieval_json(&r->ret_ok, &r->adapted_ok, &r->ret_adapted), "new",
                                retrieval_json(&r->new_text_ok, NULL, &r->ret_new)));

  json_t *head = r->head_ok.applicable
                     ? json_pack("{s:b, s:s, s:i, s:o, s:i, s:i, s:o, s:o, s:o}", "applicable", 1, "kind",
                                 "softmax regression, full-batch L-BFGS (services/eval/metrics.h)", "classes",
                                 r->head_classes, "l2", num(o->head.l2), "iterations", r->head_iterations,
                                 "lbfgs_status", r->head_status, "objective", num(r->head_objective), "grad_norm",
                                 num(r->head_grad_norm), "train_accuracy", num(r->head_train_acc))
                     : na_json(&r->head_ok);
  json_t *nh = r->new_head_ok.applicable
                   ? json_pack("{s:b, s:o, s:i, s:i, s:i, s:o}", "applicable", 1, "value", num(r->acc_new_new),
                               "classes", r->new_head_classes, "iterations", r->new_head_iterations, "lbfgs_status",
                               r->new_head_status, "objective", num(r->new_head_objective))
                   : na_json(&r->new_head_ok);
  json_object_set_new(root, "accuracy",
                      json_pack("{s:o, s:o, s:o, s:o, s:o}", "head", head, "old_head_old",
                                value_json(&r->head_ok, NULL, r->acc_old_old), "old_head_adapted",
                                value_json(&r->head_ok, &r->adapted_ok, r->acc_old_adapted), "old_head_new",
                                value_json(&r->head_ok, &r->new_image_ok, r->acc_old_new), "new_head_new", nh));
  json_object_set_new(root, "distance",
                      json_pack("{s:o, s:o}", "adapted_vs_old", pair_json(&r->adapted_ok, &r->sim_adapted),
                                "new_vs_old", pair_json(&r->new_image_ok, &r->sim_new)));

  /* backward compatibility: BCT label retrieval, gains, negative flips of the old head */
  const int ad = r->adapted_ok.applicable;
  json_t *flips = !r->head_ok.applicable ? na_json(&r->head_ok)
                  : !ad                  ? na_json(&r->adapted_ok)
                                         : json_pack("{s:b, s:o, s:i, s:i}", "applicable", 1, "rate", num(r->neg_flip_rate),
                                                     "flips", r->neg_flips, "labelled", r->neg_flip_counted);
  json_object_set_new(
      root, "compatibility",
      json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:o}", "protocol",
                "label retrieval in the test split, each labelled sample querying the others (services/eval/metrics.h)",
                "old_old", bc_json(&r->bc_ok, NULL, &r->bc_old_old), "new_old", bc_json(&r->bc_ok, &r->adapted_ok, &r->bc_new_old),
                "new_new", bc_json(&r->bc_new_new_ok, NULL, &r->bc_new_new), "gain",
                value_json(&r->bc_ok, &r->adapted_ok, r->bc_gain), "update_gain",
                value_json(&r->bc_update_gain_ok, NULL, r->bc_update_gain), "negative_flips", flips));

  /* Eq. (2): M(zeta_old(phi_old)) < M(zeta_old(phi^_new)) <= M(zeta_new(phi_new)) */
  if (r->head_ok.applicable && r->adapted_ok.applicable) {
    json_t *hp = json_pack("{s:b, s:o, s:o, s:o, s:b}", "applicable", 1, "old_head_old", num(r->acc_old_old),
                           "old_head_adapted", num(r->acc_old_adapted), "gain",
                           num(r->acc_old_adapted - r->acc_old_old), "upgrade_beats_old",
                           r->acc_old_adapted > r->acc_old_old);
    json_object_set_new(hp, "new_head_new", r->new_head_ok.applicable ? num(r->acc_new_new) : json_null());
    json_object_set_new(hp, "within_upper_bound",
                        r->new_head_ok.applicable ? json_boolean(r->acc_old_adapted <= r->acc_new_new) : json_null());
    json_object_set_new(hp, "holds", r->new_head_ok.applicable
                                         ? json_boolean(r->acc_old_adapted > r->acc_old_old &&
                                                        r->acc_old_adapted <= r->acc_new_new)
                                         : json_null());
    json_object_set_new(root, "hot_plug", hp);
  } else {
    json_object_set_new(root, "hot_plug", na_json(!r->head_ok.applicable ? &r->head_ok : &r->adapted_ok));
  }

  if (r->log.n > 0) {
    json_t *tr = json_object(), *series = json_array(), *first = json_object(), *last = json_object();
    for (int k = 0; k < r->log.n_series; k++) {
      json_array_append_new(series, json_string(r->log.names[k]));
      json_object_set_new(first, r->log.names[k], num(r->log.value[k]));
      json_object_set_new(last, r->log.names[k], num(r->log.value[(size_t)(r->log.n - 1) * r->log.n_series + k]));
    }
    json_object_set_new(tr, "steps", json_integer(r->log.n));
    json_object_set_new(tr, "first_step", json_integer(r->log.step[0]));
    json_object_set_new(tr, "last_step", json_integer(r->log.step[r->log.n - 1]));
    json_object_set_new(tr, "series", series);
    json_object_set_new(tr, "first", first);
    json_object_set_new(tr, "last", last);
    json_object_set_new(root, "training", tr);
  } else {
    json_object_set_new(root, "training", json_null());
  }
  if (r->gate_checked) {
    const eval_gate *g = o->gate;
    json_t *gj = json_pack("{s:b, s:o}", "passed", !r->gate_failed, "reason",
                           r->gate_failed ? json_string(r->gate_why) : json_null());
    if (g->has_min_gain) json_object_set_new(gj, "min_gain", num(g->min_gain));
    if (g->has_max_flip) json_object_set_new(gj, "max_flip", num(g->max_flip));
    if (g->has_min_update_gain) json_object_set_new(gj, "min_update_gain", num(g->min_update_gain));
    json_object_set_new(root, "gate", gj);
  } else {
    json_object_set_new(root, "gate", json_null());
  }
  json_object_set_new(root, "timing",
                      json_pack("{s:i, s:o, s:o}", "encoded_images", r->encoded_images, "seconds",
                                num(r->encode_seconds), "images_per_s",
                                num(r->encode_seconds > 0 ? r->encoded_images / r->encode_seconds : NAN)));
  return root;
}

int eval_write_json(const char *path, const eval_result *r, const eval_options *o, taca_error *err) {
  json_t *j = eval_result_json(r, o);
  char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17)) : NULL;
  json_decref(j);
  if (!s) return taca_fail(err, "--json %s: out of memory", path);
  size_t len = strlen(s);
  taca_chunk ch[2] = {{s, len}, {"\n", 1}};
  int rc = taca_write_file_atomic(path, ch, 2, err);
  free(s);
  return rc;
}
