/* metrics.h: the figures of `taca eval` as plain functions over flat buffers: the seeded train/test
 * split, cross-model retrieval (recall@k from cosine similarities), a softmax-regression head (the
 * "old downstream head" of the paper's Eq. (2)) trained with full-batch L-BFGS, and feature
 * distances. No store or model access here: services/eval/eval.c feeds these.
 *
 * Conventions:
 *   - Embeddings are F32 rows [n, d] as stored (unnormalised); similarities and the head run in F64.
 *   - Retrieval pairs query i with gallery item i (the sample's own caption and image). The rank of
 *     the true item among all n is the number of items scoring strictly higher plus the number of
 *     items with an equal score and a lower index (ties broken by index, as store_search and
 *     numpy's stable argsort of -score do), so rank 0 is a hit at 1 and a constant encoder gets no
 *     credit from ties. R@k = fraction of queries with rank < k; chance is min(k, n) / n.
 *   - Cosine of a zero vector with anything is 0. */
#ifndef TACA_EVAL_METRICS_H
#define TACA_EVAL_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

/* ---- split ---- */

/* The uniform number in [0, 1) that decides the split of sample `index` under `seed`:
 *   z = splitmix64 finaliser of (seed * 0x9E3779B97F4A7C15 + index * 0xD1B54A32D192ED03 + 1)
 *   u = (z >> 11) * 2^-53
 * (splitmix64 finaliser: z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB;
 *  z ^= z >> 31, all mod 2^64). A sample is in the TRAIN split iff u < train_fraction, so a sample's
 * side depends only on (seed, index): adding samples never moves the others. */
double eval_split_u(uint64_t seed, uint64_t index);
int eval_split_is_train(uint64_t seed, uint64_t index, double train_fraction);

/* ---- retrieval ---- */

/* Ranks from rows of a similarity block: S [rows, ncols] row-major; row r is the query whose true
 * item is column row0 + r. ranks[r] = #{j : S[r,j] > S[r,t]} + #{j < t : S[r,j] == S[r,t]}, t = row0 + r
 * (0-based). NaN scores never rank above the true item; a NaN true score ranks last (ncols - 1). */
void eval_rank_rows(const double *S, int rows, int ncols, int row0, int *ranks);

/* Fraction of ranks[0..n) below k. */
double eval_recall_at(const int *ranks, int n, int k);
/* Chance level of R@k among n items: min(k, n) / n (0 when n = 0). */
double eval_chance_recall(int k, int n);

typedef struct eval_recall {
  double r1, r5, r10;
  double median_rank, mean_rank; /* 1-based (a hit at 1 has rank 1); median of an even count is
                                    the mean of the two middle ranks */
} eval_recall;

void eval_recall_from_ranks(const int *ranks, int n, eval_recall *out);

typedef struct eval_retrieval {
  int n;
  eval_recall t2i; /* each text i queries the n images; true item image i */
  eval_recall i2t; /* each image i queries the n texts; true item text i */
} eval_retrieval;

/* Cross-modal retrieval between text [n, d] and image [n, d] by cosine similarity, in blocks of
 * queries (memory O(block x n) doubles besides the normalised copies, n x d doubles each). */
int eval_retrieval_run(const float *text, const float *image, int n, int d, eval_retrieval *out,
                       taca_error *err);

/* ---- backward compatibility (BCT's protocol: Shen et al., CVPR 2020; negative flips: Yan et al.,
 * CVPR 2021) ----
 * Label retrieval within the test split: each labelled sample i queries the gallery of every OTHER
 * labelled sample, with the query encoder's features of i against the gallery encoder's features
 * of the others (cosine, ties broken by index); an item is relevant iff it has i's label. Queries
 * without a relevant gallery item are left out. R@1: the top item is relevant. AP: the mean over
 * the relevant items of (relevant items up to its rank) / rank; mAP its mean over queries.
 * "old/old" = old query, old gallery; "new->old" = adapted query, old gallery (the upgrade without
 * backfill); "new/new" = unadapted new on both sides (the upgrade with a full backfill). */
typedef struct eval_bc_retrieval {
  int n;       /* queries scored */
  double r1;   /* fraction */
  double map;  /* fraction */
} eval_bc_retrieval;
int eval_bc_retrieval_run(const float *query, const float *gallery, const int32_t *labels, int n, int d,
                          eval_bc_retrieval *out, taca_error *err);

/* Negative flips of a head: rows with y >= 0 that pred_old gets right and pred_new gets wrong;
 * returns their fraction of the labelled rows (0 when none), *flips and *counted (optional) the
 * numbers. */
double eval_negative_flip_rate(const int32_t *pred_old, const int32_t *pred_new, const int32_t *y, int n, int *flips,
                               int *counted);

/* ---- feature distances ---- */

typedef struct eval_pair_stats {
  int n;
  double mean_l2;       /* mean_i ||a_i - b_i||_2 (Eq. 4's distance) */
  double mean_cosine;   /* mean_i cos(a_i, b_i) */
  double mean_norm_a, mean_norm_b;
} eval_pair_stats;

void eval_pair_stats_run(const float *a, const float *b, int n, int d, eval_pair_stats *out);

/* ---- softmax-regression head ----
 * z = W ((x - mean) / scale) + b, p = softmax(z), prediction = the label of argmax z (lowest class
 * on ties). mean and scale are fixed from the training features (scale = sqrt(mean ||x - mean||^2))
 * and belong to the head: applying the head to other features uses the same values, so the whole
 * head is one affine map of the raw embedding, as a downstream linear layer would be.
 * Objective: (1/n) sum_i CE(z_i, y_i) + (l2 / 2) ||W||_F^2 (the bias is not penalised), minimised
 * by full-batch L-BFGS (libLBFGS, More-Thuente line search, 6 corrections) from W = 0, b = 0 until
 * ||grad|| <= epsilon * max(1, ||x||) or max_iter iterations: deterministic for given inputs. */
typedef struct eval_head_config {
  double l2;       /* 1e-3 */
  int max_iter;    /* 1000 */
  double epsilon;  /* 1e-6 */
} eval_head_config;

void eval_head_config_default(eval_head_config *c);

typedef struct eval_linear_head {
  int d, n_classes;
  int32_t *classes;    /* [n_classes]: the label each output stands for, ascending */
  double *mean;        /* [d] */
  double scale;
  double *W;           /* [n_classes, d] */
  double *b;           /* [n_classes] */
  double l2;
  double objective;    /* the objective at the returned parameters */
  double grad_norm;    /* its gradient norm there */
  int iterations;      /* L-BFGS iterations run */
  int status;          /* libLBFGS return code (0 converged, 2 already minimised, < 0 stopped early) */
  int n_train;         /* labelled rows used */
} eval_linear_head;

/* Softmax cross-entropy objective and gradient on prepared inputs: Xn [n, d] (already centred and
 * scaled), class ids y [n] in [0, C), parameters W [C, d], b [C]. Writes gW [C, d] and gb [C]
 * (either may be NULL when not wanted) and returns the objective. work: n * C doubles. */
double eval_softmax_objective(const double *Xn, const int *y, int n, int d, int C, const double *W,
                              const double *b, double l2, double *gW, double *gb, double *work);

/* Trains a head on the rows of X [n, d] with a label y >= 0 (rows with y < 0 are ignored). The
 * classes are the distinct labels present. Needs at least one labelled row and two classes. On
 * success *h owns its buffers (eval_head_free). L-BFGS stopping early (iteration cap, rounding at
 * the optimum) is not a failure: status and grad_norm say how it ended. */
int eval_head_fit(eval_linear_head *h, const float *X, const int32_t *y, int n, int d,
                  const eval_head_config *cfg, taca_error *err);
/* Predicted labels of X [n, d] (which must have the head's d). */
int eval_head_predict(const eval_linear_head *h, const float *X, int n, int32_t *pred,
                      taca_error *err);
void eval_head_free(eval_linear_head *h);

/* Accuracy of pred against y over the rows with y >= 0; *counted (optional) gets their number.
 * 0 when there are none. */
double eval_accuracy(const int32_t *pred, const int32_t *y, int n, int *counted);

#endif
