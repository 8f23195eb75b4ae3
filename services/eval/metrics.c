/* metrics.c: the math of `taca eval` (see metrics.h): split hash, ranks and recall@k, feature
 * distances, and the softmax-regression head trained with libLBFGS. */
#include "services/eval/metrics.h"

#include <cblas.h>
#include <lbfgs.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------- split ---------- */

static uint64_t mix64(uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ull;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double eval_split_u(uint64_t seed, uint64_t index) {
  uint64_t z = mix64(seed * 0x9E3779B97F4A7C15ull + index * 0xD1B54A32D192ED03ull + 1);
  return (double)(z >> 11) * 0x1.0p-53;
}

int eval_split_is_train(uint64_t seed, uint64_t index, double train_fraction) {
  return eval_split_u(seed, index) < train_fraction;
}

/* ---------- retrieval ---------- */

void eval_rank_rows(const double *S, int rows, int ncols, int row0, int *ranks) {
  for (int r = 0; r < rows; r++) {
    const double *s = S + (size_t)r * ncols;
    const int t = row0 + r;
    const double st = s[t];
    if (isnan(st)) {
      ranks[r] = ncols - 1;
      continue;
    }
    int rank = 0;
    for (int j = 0; j < t; j++) rank += s[j] >= st;
    for (int j = t + 1; j < ncols; j++) rank += s[j] > st;
    ranks[r] = rank;
  }
}

double eval_recall_at(const int *ranks, int n, int k) {
  if (n <= 0) return 0;
  int hits = 0;
  for (int i = 0; i < n; i++) hits += ranks[i] < k;
  return (double)hits / n;
}

double eval_chance_recall(int k, int n) {
  if (n <= 0) return 0;
  return (double)(k < n ? k : n) / n;
}

static int cmp_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

void eval_recall_from_ranks(const int *ranks, int n, eval_recall *out) {
  memset(out, 0, sizeof *out);
  if (n <= 0) return;
  out->r1 = eval_recall_at(ranks, n, 1);
  out->r5 = eval_recall_at(ranks, n, 5);
  out->r10 = eval_recall_at(ranks, n, 10);
  double sum = 0;
  for (int i = 0; i < n; i++) sum += ranks[i] + 1.0;
  out->mean_rank = sum / n;
  int *sorted = malloc(sizeof(int) * n);
  if (sorted) {
    memcpy(sorted, ranks, sizeof(int) * n);
    qsort(sorted, n, sizeof(int), cmp_int);
    out->median_rank = n % 2 ? sorted[n / 2] + 1.0 : (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 + 1.0;
    free(sorted);
  } else {
    out->median_rank = NAN;
  }
}

/* dst [n, d] = rows of src, L2-normalised in F64 (zero rows stay zero). */
static void normalize_rows_f64(const float *src, int n, int d, double *dst) {
  for (int i = 0; i < n; i++) {
    const float *x = src + (size_t)i * d;
    double *y = dst + (size_t)i * d, s = 0;
    for (int j = 0; j < d; j++) s += (double)x[j] * x[j];
    double inv = s > 0 ? 1.0 / sqrt(s) : 0.0;
    for (int j = 0; j < d; j++) y[j] = x[j] * inv;
  }
}

enum { RANK_BLOCK = 256 };

/* ranks of every row of Q against G (both normalised [n, d]), block by block. */
static void rank_all(const double *Q, const double *G, int n, int d, double *S, int *ranks) {
  for (int r0 = 0; r0 < n; r0 += RANK_BLOCK) {
    int rows = n - r0 < RANK_BLOCK ? n - r0 : RANK_BLOCK;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n, d, 1.0, Q + (size_t)r0 * d, d, G, d,
                0.0, S, n);
    eval_rank_rows(S, rows, n, r0, ranks + r0);
  }
}

int eval_retrieval_run(const float *text, const float *image, int n, int d, eval_retrieval *out,
                       taca_error *err) {
  memset(out, 0, sizeof *out);
  if (n <= 0 || d <= 0) return taca_fail(err, "retrieval needs at least one pair (got n=%d, d=%d)", n, d);
  out->n = n;
  int blk = n < RANK_BLOCK ? n : RANK_BLOCK;
  double *tn = malloc(sizeof(double) * n * d), *in = malloc(sizeof(double) * n * d);
  double *S = malloc(sizeof(double) * blk * n);
  int *ranks = malloc(sizeof(int) * n);
  int rc = 0;
  if (!tn || !in || !S || !ranks) {
    rc = taca_fail(err, "out of memory for retrieval over %d x %d", n, d);
  } else {
    normalize_rows_f64(text, n, d, tn);
    normalize_rows_f64(image, n, d, in);
    rank_all(tn, in, n, d, S, ranks);
    eval_recall_from_ranks(ranks, n, &out->t2i);
    rank_all(in, tn, n, d, S, ranks);
    eval_recall_from_ranks(ranks, n, &out->i2t);
  }
  free(tn);
  free(in);
  free(S);
  free(ranks);
  return rc;
}

/* ---------- backward compatibility ---------- */

typedef struct scored {
  double s;
  int j;
} scored;

static int by_score_then_index(const void *a, const void *b) {
  const scored *x = a, *y = b;
  if (x->s != y->s) return x->s > y->s ? -1 : 1;
  return (x->j > y->j) - (x->j < y->j);
}

int eval_bc_retrieval_run(const float *query, const float *gallery, const int32_t *labels, int n, int d,
                          eval_bc_retrieval *out, taca_error *err) {
  memset(out, 0, sizeof *out);
  if (n <= 0 || d <= 0) return 0;
  double *qn = malloc(sizeof(double) * n * d), *gn = malloc(sizeof(double) * n * d);
  scored *row = malloc(sizeof(scored) * n);
  if (!qn || !gn || !row) {
    free(qn), free(gn), free(row);
    return taca_fail(err, "out of memory for label retrieval over %d x %d", n, d);
  }
  normalize_rows_f64(query, n, d, qn);
  normalize_rows_f64(gallery, n, d, gn);
  double r1 = 0, map = 0;
  for (int i = 0; i < n; i++) {
    if (labels[i] < 0) continue;
    int m = 0, relevant = 0;
    for (int j = 0; j < n; j++) {
      if (j == i || labels[j] < 0) continue;
      double s = 0;
      for (int k = 0; k < d; k++) s += qn[(size_t)i * d + k] * gn[(size_t)j * d + k];
      row[m++] = (scored){isnan(s) ? -INFINITY : s, j};
      relevant += labels[j] == labels[i];
    }
    if (!relevant) continue;
    qsort(row, m, sizeof *row, by_score_then_index);
    r1 += labels[row[0].j] == labels[i];
    double ap = 0;
    for (int r = 0, hits = 0; r < m; r++)
      if (labels[row[r].j] == labels[i]) ap += (double)++hits / (r + 1);
    map += ap / relevant;
    out->n++;
  }
  if (out->n) out->r1 = r1 / out->n, out->map = map / out->n;
  free(qn), free(gn), free(row);
  return 0;
}

double eval_negative_flip_rate(const int32_t *pred_old, const int32_t *pred_new, const int32_t *y, int n, int *flips,
                               int *counted) {
  int m = 0, f = 0;
  for (int i = 0; i < n; i++) {
    if (y[i] < 0) continue;
    m++;
    f += pred_old[i] == y[i] && pred_new[i] != y[i];
  }
  if (flips) *flips = f;
  if (counted) *counted = m;
  return m ? (double)f / m : 0.0;
}

/* ---------- distances ---------- */

void eval_pair_stats_run(const float *a, const float *b, int n, int d, eval_pair_stats *out) {
  memset(out, 0, sizeof *out);
  out->n = n;
  if (n <= 0) return;
  double l2 = 0, cs = 0, na = 0, nb = 0;
  for (int i = 0; i < n; i++) {
    const float *x = a + (size_t)i * d, *y = b + (size_t)i * d;
    double dd = 0, xy = 0, xx = 0, yy = 0;
    for (int j = 0; j < d; j++) {
      double u = x[j], v = y[j];
      dd += (u - v) * (u - v);
      xy += u * v;
      xx += u * u;
      yy += v * v;
    }
    l2 += sqrt(dd);
    cs += (xx > 0 && yy > 0) ? xy / (sqrt(xx) * sqrt(yy)) : 0.0;
    na += sqrt(xx);
    nb += sqrt(yy);
  }
  out->mean_l2 = l2 / n;
  out->mean_cosine = cs / n;
  out->mean_norm_a = na / n;
  out->mean_norm_b = nb / n;
}

/* ---------- softmax-regression head ---------- */

void eval_head_config_default(eval_head_config *c) {
  c->l2 = 1e-3;
  c->max_iter = 1000;
  c->epsilon = 1e-6;
}

double eval_softmax_objective(const double *Xn, const int *y, int n, int d, int C, const double *W,
                              const double *b, double l2, double *gW, double *gb, double *work) {
  /* Z = Xn W^T + b */
  double *Z = work;
  for (int i = 0; i < n; i++) memcpy(Z + (size_t)i * C, b, sizeof(double) * C);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, C, d, 1.0, Xn, d, W, d, 1.0, Z, C);
  double loss = 0;
  for (int i = 0; i < n; i++) {
    double *z = Z + (size_t)i * C, mx = z[0], s = 0;
    for (int c = 1; c < C; c++) mx = z[c] > mx ? z[c] : mx;
    for (int c = 0; c < C; c++) s += exp(z[c] - mx);
    double lse = mx + log(s);
    loss += lse - z[y[i]];
    /* z becomes dL_i/dz = softmax - onehot, scaled by 1/n */
    for (int c = 0; c < C; c++) z[c] = exp(z[c] - lse) / n;
    z[y[i]] -= 1.0 / n;
  }
  loss /= n;
  double reg = 0;
  for (size_t k = 0; k < (size_t)C * d; k++) reg += W[k] * W[k];
  loss += 0.5 * l2 * reg;
  if (gW) {
    for (size_t k = 0; k < (size_t)C * d; k++) gW[k] = l2 * W[k];
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, d, n, 1.0, Z, C, Xn, d, 1.0, gW, d);
  }
  if (gb) {
    for (int c = 0; c < C; c++) gb[c] = 0;
    for (int i = 0; i < n; i++)
      for (int c = 0; c < C; c++) gb[c] += Z[(size_t)i * C + c];
  }
  return loss;
}

typedef struct fit_ctx {
  const double *Xn;
  const int *y;
  int n, d, C;
  double l2;
  double *work;
  int iterations;
} fit_ctx;

/* libLBFGS callback: x = [W (C*d) | b (C)]. */
static lbfgsfloatval_t fit_evaluate(void *inst, const lbfgsfloatval_t *x, lbfgsfloatval_t *g, const int nx,
                                    const lbfgsfloatval_t step) {
  (void)nx;
  (void)step;
  const fit_ctx *c = inst;
  const size_t nw = (size_t)c->C * c->d;
  return eval_softmax_objective(c->Xn, c->y, c->n, c->d, c->C, x, x + nw, c->l2, g, g + nw, c->work);
}

static int fit_progress(void *inst, const lbfgsfloatval_t *x, const lbfgsfloatval_t *g, const lbfgsfloatval_t fx,
                        const lbfgsfloatval_t xnorm, const lbfgsfloatval_t gnorm, const lbfgsfloatval_t step, int n,
                        int k, int ls) {
  (void)x, (void)g, (void)fx, (void)xnorm, (void)gnorm, (void)step, (void)n, (void)ls;
  ((fit_ctx *)inst)->iterations = k;
  return 0;
}

static int cmp_i32(const void *a, const void *b) {
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

/* Index of label in the ascending classes array, or -1. */
static int class_of(const int32_t *classes, int C, int32_t label) {
  int lo = 0, hi = C - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (classes[mid] == label) return mid;
    if (classes[mid] < label) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

void eval_head_free(eval_linear_head *h) {
  if (!h) return;
  free(h->classes);
  free(h->mean);
  free(h->W);
  free(h->b);
  memset(h, 0, sizeof *h);
}

int eval_head_fit(eval_linear_head *h, const float *X, const int32_t *y, int n, int d,
                  const eval_head_config *cfg, taca_error *err) {
  memset(h, 0, sizeof *h);
  if (d <= 0) return taca_fail(err, "head: feature width must be positive (got %d)", d);
  if (!(cfg->l2 >= 0) || !(cfg->epsilon > 0) || cfg->max_iter <= 0)
    return taca_fail(err, "head: bad configuration (l2 %g, epsilon %g, max_iter %d)", cfg->l2, cfg->epsilon,
                     cfg->max_iter);
  int m = 0;
  for (int i = 0; i < n; i++) m += y[i] >= 0;
  if (m == 0) return taca_fail(err, "head: no labelled training rows");
  int rc = -1;
  double *Xn = NULL, *work = NULL;
  int *yi = NULL;
  lbfgsfloatval_t *x = NULL;
  h->d = d;
  h->l2 = cfg->l2;
  h->n_train = m;
  h->classes = malloc(sizeof(int32_t) * m);
  h->mean = calloc((size_t)d, sizeof(double));
  Xn = malloc(sizeof(double) * m * d);
  yi = malloc(sizeof(int) * m);
  if (!h->classes || !h->mean || !Xn || !yi) {
    taca_fail(err, "head: out of memory for %d x %d", m, d);
    goto done;
  }
  /* the classes: distinct labels, ascending */
  int C = 0;
  for (int i = 0; i < n; i++)
    if (y[i] >= 0) h->classes[C++] = y[i];
  qsort(h->classes, C, sizeof(int32_t), cmp_i32);
  int u = 0;
  for (int i = 0; i < C; i++)
    if (i == 0 || h->classes[i] != h->classes[u - 1]) h->classes[u++] = h->classes[i];
  h->n_classes = C = u;
  if (C < 2) {
    taca_fail(err, "head: the training rows have a single class (%d); a classifier needs two", (int)h->classes[0]);
    goto done;
  }
  /* centre and scale */
  for (int i = 0, r = 0; i < n; i++) {
    if (y[i] < 0) continue;
    const float *xi = X + (size_t)i * d;
    for (int j = 0; j < d; j++) h->mean[j] += xi[j];
    yi[r++] = class_of(h->classes, C, y[i]);
  }
  for (int j = 0; j < d; j++) h->mean[j] /= m;
  double ss = 0;
  for (int i = 0, r = 0; i < n; i++) {
    if (y[i] < 0) continue;
    const float *xi = X + (size_t)i * d;
    double *o = Xn + (size_t)r++ * d;
    for (int j = 0; j < d; j++) {
      o[j] = xi[j] - h->mean[j];
      ss += o[j] * o[j];
    }
  }
  h->scale = ss > 0 ? sqrt(ss / m) : 1.0;
  for (size_t k = 0; k < (size_t)m * d; k++) Xn[k] /= h->scale;

  const int nx = C * d + C;
  work = malloc(sizeof(double) * m * C);
  x = lbfgs_malloc(nx);
  h->W = malloc(sizeof(double) * C * d);
  h->b = malloc(sizeof(double) * C);
  if (!work || !x || !h->W || !h->b) {
    taca_fail(err, "head: out of memory for %d classes x %d", C, d);
    goto done;
  }
  for (int k = 0; k < nx; k++) x[k] = 0;
  lbfgs_parameter_t p;
  lbfgs_parameter_init(&p);
  p.epsilon = cfg->epsilon;
  p.max_iterations = cfg->max_iter;
  fit_ctx ctx = {Xn, yi, m, d, C, cfg->l2, work, 0};
  lbfgsfloatval_t fx = 0;
  h->status = lbfgs(nx, x, &fx, fit_evaluate, fit_progress, &ctx, &p);
  h->iterations = ctx.iterations;
  if (h->status == LBFGSERR_OUTOFMEMORY) {
    taca_fail(err, "head: out of memory in L-BFGS");
    goto done;
  }
  if (h->status < 0 && h->status != LBFGSERR_ROUNDING_ERROR && h->status != LBFGSERR_MAXIMUMITERATION &&
      h->status != LBFGSERR_MAXIMUMLINESEARCH && h->status != LBFGSERR_MINIMUMSTEP &&
      h->status != LBFGSERR_MAXIMUMSTEP && h->status != LBFGSERR_WIDTHTOOSMALL &&
      h->status != LBFGSERR_INCREASEGRADIENT) {
    taca_fail(err, "head: L-BFGS refused to run (libLBFGS code %d)", h->status);
    goto done;
  }
  /* the parameters L-BFGS returns are its best point; recompute objective and gradient there */
  memcpy(h->W, x, sizeof(double) * C * d);
  memcpy(h->b, x + (size_t)C * d, sizeof(double) * C);
  lbfgsfloatval_t *g = lbfgs_malloc(nx);
  if (!g) {
    taca_fail(err, "head: out of memory");
    goto done;
  }
  h->objective = eval_softmax_objective(Xn, yi, m, d, C, h->W, h->b, cfg->l2, g, g + (size_t)C * d, work);
  double gn = 0;
  for (int k = 0; k < nx; k++) gn += g[k] * g[k];
  h->grad_norm = sqrt(gn);
  lbfgs_free(g);
  rc = 0;
done:
  free(Xn);
  free(work);
  free(yi);
  if (x) lbfgs_free(x);
  if (rc) eval_head_free(h);
  return rc;
}

int eval_head_predict(const eval_linear_head *h, const float *X, int n, int32_t *pred, taca_error *err) {
  const int d = h->d, C = h->n_classes;
  double *xn = malloc(sizeof(double) * d);
  if (!xn) return taca_fail(err, "out of memory");
  for (int i = 0; i < n; i++) {
    const float *xi = X + (size_t)i * d;
    for (int j = 0; j < d; j++) xn[j] = (xi[j] - h->mean[j]) / h->scale;
    int best = 0;
    double bz = -INFINITY;
    for (int c = 0; c < C; c++) {
      const double *w = h->W + (size_t)c * d;
      double z = h->b[c];
      for (int j = 0; j < d; j++) z += w[j] * xn[j];
      if (z > bz) { /* NaN never wins; the lowest class wins ties */
        bz = z;
        best = c;
      }
    }
    pred[i] = h->classes[best];
  }
  free(xn);
  return 0;
}

double eval_accuracy(const int32_t *pred, const int32_t *y, int n, int *counted) {
  int m = 0, ok = 0;
  for (int i = 0; i < n; i++) {
    if (y[i] < 0) continue;
    m++;
    ok += pred[i] == y[i];
  }
  if (counted) *counted = m;
  return m ? (double)ok / m : 0.0;
}
