/* eval.h: `taca eval`, the hot-plug compatibility evaluation of the paper's Eq. (2): for a held-out
 * split of a store, how the adapted new encoder (a TaCA checkpoint) compares with the old encoder,
 * with the unadapted new encoder and with chance, in
 *   - cross-model retrieval against the OLD text embeddings (text->image and image->text R@1/5/10),
 *   - the accuracy of an OLD downstream head (softmax regression trained here on the old image
 *     embeddings of the train split, see metrics.h) applied unchanged to each encoder's features,
 *     beside a head trained on the new model's own features (the cold-plug upper reference),
 *   - the distance and cosine between each encoder's features and the old image embeddings.
 * eval_run computes every figure into an eval_result; services/eval/report*.c print it as a table,
 * JSON or a self-contained HTML page.
 *
 * Data: every sample of the store with a record, pixels (codec raw or jpeg, at the new model's
 * input size) and the old model's image embedding (and text embedding when the old model stored
 * text) takes part; others are counted as skipped. The split is metrics.h's eval_split_is_train.
 * The unadapted new encoder is clip_encode_image of the stored pixels; the adapted one is
 * taca_model_forward (new tower + adapters/LoRA + projector) with the checkpoint's parameters. */
#ifndef TACA_EVAL_EVAL_H
#define TACA_EVAL_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "nn/backend.h"
#include "services/eval/metrics.h"

/* --gate: thresholds that make `taca eval` exit EVAL_GATE_EXIT when one fails (or cannot be
 * checked because its figure does not apply). Parsed from "min-gain=X,max-flip=Y,min-update-gain=Z"
 * (any subset, comma-separated): min-gain in points of BCT R@1 (new->old minus old/old), max-flip
 * the old head's negative-flip rate in percent, min-update-gain BCT's relative update gain. */
#define EVAL_GATE_EXIT 3
typedef struct eval_gate {
  int has_min_gain, has_max_flip, has_min_update_gain;
  double min_gain;        /* points */
  double max_flip;        /* percent */
  double min_update_gain; /* ratio */
} eval_gate;
int eval_gate_parse(const char *spec, eval_gate *g, taca_error *err);

typedef struct eval_options {
  const char *db;          /* store directory */
  const char *old_name;    /* stored model whose embeddings are "old" */
  const char *new_model;   /* the new CLIP model (HF dir or open_clip .safetensors) */
  const char *arch;        /* its architecture when open_clip (NULL otherwise) */
  const char *checkpoint;  /* TaCA parameters (step-NNNNNN.safetensors), or NULL */
  const char *log_json;    /* the trainer's --log-json, or NULL (only read for the report) */
  const char *service_json; /* deploy/demo/downstream.py watch's result (the swap), or NULL (report only) */
  const char *aft_json;    /* taca-train --objective aft's report.json, or NULL (report only) */
  double split;            /* train fraction, 0.8 */
  uint64_t seed;           /* split seed, 0 */
  int split_group;         /* the split decides by index / split_group (1: per sample) */
  int batch_size;          /* new-model forward batch, 32 */
  int threads;             /* compute threads (<= 0: all cores) */
  nn_precision precision;  /* of the new tower's GEMMs (--precision; adapters/projector stay F32) */
  int new_head;            /* also encode the train split and fit the head on new features */
  float lora_alpha;        /* LoRA scale numerator when the checkpoint does not record it (8) */
  eval_head_config head;
  const char *features_dir; /* when set: the features and labels eval scored, as .npy (below) */
  int quiet;               /* no progress on stderr */
  const eval_gate *gate;   /* --gate, or NULL: checked at the end of eval_run, reported in r */
} eval_options;

/* Files eval_run writes into features_dir (created if missing), rows in split order:
 *   test_index.npy (int64 [n_test], store indices), test_label.npy (int32, -1 = none),
 *   test_old_image.npy, test_old_text.npy (when stored), test_new.npy, test_adapted.npy (with a
 *   checkpoint): F32 [n_test, dim]; train_index.npy, train_label.npy, train_old_image.npy, and
 *   train_new.npy when the new head is trained. */

void eval_options_default(eval_options *o);


/* One figure that may not apply (e.g. the unadapted new model when its width differs from the old
 * embedding width): applicable = 0 and a reason instead of a number. */
typedef struct eval_na {
  int applicable;
  char reason[200];
} eval_na;

typedef struct eval_loss_log {
  int n;                 /* logged steps */
  int n_series;          /* numeric "loss*" keys, in first-seen order */
  char names[8][32];
  long *step;            /* [n] */
  double *value;         /* [n][n_series]; NaN where a line lacks the key */
} eval_loss_log;

typedef struct eval_result {
  /* what was evaluated */
  char old_name[64], new_model[512], checkpoint[512], db[512];
  int old_image_dim, old_text_dim, new_dim, image_size;
  char old_arch[64];
  /* the checkpoint (when given) */
  long ckpt_step;            /* from its "step" metadata, -1 when absent */
  char ckpt_peft[32];        /* "adapter/128" or "lora/8" */
  char ckpt_layers[32];      /* "A-B", 1-based */
  char ckpt_targets[64];     /* the metadata's taca.targets ("" when absent) */
  int ckpt_proj_hidden;
  long ckpt_trainable;       /* parameter count */
  /* data */
  uint64_t n_records, n_skipped;
  int n_train, n_test, n_train_labelled, n_test_labelled;
  uint64_t *test_index;      /* [n_test], ascending */
  double split;
  int split_group; /* the split decided by index / split_group */
  uint64_t seed;
  /* retrieval on the test split against the old text embeddings */
  eval_na ret_ok;            /* the old model stored text embeddings of its image width */
  eval_retrieval ret_old;    /* old image vs old text (what the old system does) */
  eval_na adapted_ok;        /* a checkpoint was given */
  eval_retrieval ret_adapted;
  eval_na new_text_ok;       /* new width == old text width */
  eval_retrieval ret_new;
  double chance_r1, chance_r5, chance_r10;
  /* heads */
  eval_na head_ok;           /* the old head could be trained */
  int head_classes, head_iterations, head_status;
  double head_objective, head_grad_norm, head_train_acc;
  double acc_old_old;        /* zeta_old(phi_old) */
  double acc_old_adapted;    /* zeta_old(phi^_new); adapted_ok */
  eval_na new_image_ok;      /* new width == old image width */
  double acc_old_new;        /* zeta_old(phi_new) */
  eval_na new_head_ok;       /* --new-head and the head could be trained */
  double acc_new_new;        /* zeta_new(phi_new): the cold-plug upper reference */
  int new_head_classes, new_head_iterations, new_head_status;
  double new_head_objective;
  /* distances to the old image embeddings (test split) */
  eval_pair_stats sim_adapted, sim_new;
  /* backward compatibility (metrics.h): label retrieval within the labelled test samples */
  eval_na bc_ok;             /* labelled test samples with a same-label neighbour exist */
  eval_bc_retrieval bc_old_old;   /* old query, old gallery */
  eval_bc_retrieval bc_new_old;   /* adapted query, old gallery; adapted_ok */
  eval_na bc_new_new_ok;          /* the new model's features (any width) */
  eval_bc_retrieval bc_new_new;   /* unadapted new query and gallery */
  double bc_gain;            /* new->old R@1 - old/old R@1 (fraction; "points" = 100 x) */
  eval_na bc_update_gain_ok; /* new/new R@1 > old/old R@1 */
  double bc_update_gain;     /* BCT's update gain: bc_gain / (new/new R@1 - old/old R@1) */
  /* negative flips of the old head: labelled test samples right on old features, wrong on adapted */
  double neg_flip_rate;      /* head_ok and adapted_ok */
  int neg_flips, neg_flip_counted;
  /* throughput */
  double encode_seconds;
  int encoded_images;
  /* the training log (when given) */
  eval_loss_log log;
  /* --gate (when given) */
  int gate_checked, gate_failed;
  char gate_why[1024];       /* the failed thresholds, one line */
} eval_result;

/* Runs the whole evaluation. On failure the reason names the input at fault. */
int eval_run(const eval_options *o, eval_result *r, taca_error *err);
void eval_result_free(eval_result *r);

/* Reads a trainer --log-json file (one JSON object per line with "step" and loss terms). Lines
 * that are not JSON objects with an integer "step" are an error naming the line. */
int eval_read_loss_log(const char *path, eval_loss_log *log, taca_error *err);
void eval_loss_log_free(eval_loss_log *log);


/* 0 when every threshold holds; otherwise 1 and why (one line naming each failed threshold). */
int eval_gate_check(const eval_gate *g, const eval_result *r, char *why, size_t cap);

#endif
