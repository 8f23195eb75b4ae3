/* test_eval_metrics.c: the math of `taca eval` (services/eval/metrics.h) on hand-made inputs whose
 * answers are known exactly: the split hash against values computed independently in Python,
 * ranks and recall@k of a hand-written similarity matrix (ties, NaN, blocks), retrieval of identity
 * and shifted one-hot embeddings, feature distances, the softmax objective's gradient against
 * central differences, the head's optimum of a symmetric problem solved in closed form, and a
 * linearly separable problem that the head must classify perfectly. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "services/eval/metrics.h"

/* ---------- split ---------- */

START_TEST(split_known_values) {
  /* u(seed, index) computed with Python integers from the formula in metrics.h. */
  static const struct { uint64_t seed, index; double u; } K[] = {
      {0, 0, 0.3381666012719897},
      {0, 1, 0.5436960876561825},
      {1, 0, 0.5665615751722809},
      {7, 123456789, 0.5038000000392248},
      {9223372036854775813ull, 1099511627776ull, 0.493531607956747},
  };
  for (size_t i = 0; i < sizeof K / sizeof K[0]; i++) {
    double u = eval_split_u(K[i].seed, K[i].index);
    ck_assert_msg(u == K[i].u, "u(%llu, %llu) = %.17g, expected %.17g", (unsigned long long)K[i].seed,
                  (unsigned long long)K[i].index, u, K[i].u);
  }
  ck_assert_int_eq(eval_split_is_train(0, 0, 0.34), 1);
  ck_assert_int_eq(eval_split_is_train(0, 0, 0.33), 0);
}
END_TEST

START_TEST(split_fraction) {
  int train = 0;
  const int n = 20000;
  for (int i = 0; i < n; i++) {
    train += eval_split_is_train(42, (uint64_t)i, 0.8);
    ck_assert_int_eq(eval_split_is_train(42, (uint64_t)i, 0.0), 0);
    ck_assert_int_eq(eval_split_is_train(42, (uint64_t)i, 1.0), 1);
  }
  /* binomial sd = sqrt(n p q) = 57; allow 5 sd */
  ck_assert_msg(abs(train - 16000) < 285, "train %d of %d", train, n);
  int moved = 0;
  for (int i = 0; i < 1000; i++) moved += eval_split_is_train(1, (uint64_t)i, 0.5) != eval_split_is_train(2, (uint64_t)i, 0.5);
  ck_assert_msg(moved > 400 && moved < 600, "seeds 1 and 2 differ on %d of 1000", moved);
}
END_TEST

/* ---------- ranks ---------- */

START_TEST(ranks_hand_matrix) {
  const double S[16] = {
      0.9, 0.1, 0.5, 0.9, /* true 0.9 at col 0: nothing higher, tie at col 3 has a higher index: 0 */
      0.2, 0.3, 0.3, 0.8, /* true 0.3: 0.8 higher, tie at col 2 after it: 1 */
      0.7, 0.6, 0.6, 0.1, /* true 0.6: 0.7 higher, tie at col 1 before it: 2 */
      0.4, 0.4, 0.4, 0.4, /* all tied: three lower indices: 3 */
  };
  int r[4];
  eval_rank_rows(S, 4, 4, 0, r);
  ck_assert_int_eq(r[0], 0);
  ck_assert_int_eq(r[1], 1);
  ck_assert_int_eq(r[2], 2);
  ck_assert_int_eq(r[3], 3);
  /* the same rows as a block starting at query 2 */
  int rb[2];
  eval_rank_rows(S + 8, 2, 4, 2, rb);
  ck_assert_int_eq(rb[0], 2);
  ck_assert_int_eq(rb[1], 3);
  eval_recall rc;
  eval_recall_from_ranks(r, 4, &rc);
  ck_assert_double_eq(rc.r1, 0.25);
  ck_assert_double_eq(rc.r5, 1.0);
  ck_assert_double_eq(rc.r10, 1.0);
  ck_assert_double_eq(rc.median_rank, 2.5);
  ck_assert_double_eq(rc.mean_rank, 2.5);
  ck_assert_double_eq(eval_recall_at(r, 4, 2), 0.5);
  ck_assert_double_eq(eval_recall_at(r, 4, 3), 0.75);
  /* odd count median */
  eval_recall_from_ranks(r, 3, &rc);
  ck_assert_double_eq(rc.median_rank, 2.0);
  /* NaN: a NaN competitor never wins; a NaN true score ranks last */
  const double N2[6] = {NAN, 0.5, 0.1, 0.2, NAN, 0.3};
  int rn[2];
  eval_rank_rows(N2, 2, 3, 0, rn);
  ck_assert_int_eq(rn[0], 2);
  eval_rank_rows(N2, 1, 3, 1, rn); /* row N2[0..2] as query 1: true 0.5, NaN and 0.1 below: 0 */
  ck_assert_int_eq(rn[0], 0);
  ck_assert_double_eq(eval_chance_recall(1, 48), 1.0 / 48);
  ck_assert_double_eq(eval_chance_recall(10, 8), 1.0);
  ck_assert_double_eq(eval_chance_recall(5, 0), 0.0);
}
END_TEST

START_TEST(retrieval_identity) {
  enum { n = 12, d = 12 };
  float t[n * d] = {0}, im[n * d] = {0};
  for (int i = 0; i < n; i++) {
    t[i * d + i] = 1.f + i;     /* scale does not matter: cosine */
    im[i * d + i] = 0.5f;
  }
  eval_retrieval r;
  taca_error err = {{0}};
  ck_assert_msg(eval_retrieval_run(t, im, n, d, &r, &err) == 0, "%s", err.msg);
  ck_assert_int_eq(r.n, n);
  ck_assert_double_eq(r.t2i.r1, 1.0);
  ck_assert_double_eq(r.i2t.r1, 1.0);
  ck_assert_double_eq(r.t2i.median_rank, 1.0);
  ck_assert_double_eq(r.i2t.mean_rank, 1.0);
}
END_TEST

START_TEST(retrieval_shifted) {
  /* text i = e_i, image i = e_{(i+1) mod n}. Text i's only image with cosine 1 is i-1 (n-1 for
   * i = 0); every other image scores 0, so the true one ranks after that image and after the
   * zero-score images with a lower index: ranks 1, 1, 2, ..., n-1. Image j's only text with cosine
   * 1 is j+1: ranks 1, 2, ..., n-1, and n-1 for the last (its match, text 0, and n-2 lower ties). */
  enum { n = 12, d = 12 };
  float t[n * d] = {0}, im[n * d] = {0};
  for (int i = 0; i < n; i++) {
    t[i * d + i] = 1.f;
    im[i * d + (i + 1) % n] = 2.f;
  }
  eval_retrieval r;
  taca_error err = {{0}};
  ck_assert_msg(eval_retrieval_run(t, im, n, d, &r, &err) == 0, "%s", err.msg);
  ck_assert_double_eq(r.t2i.r1, 0.0);
  ck_assert_double_eq(r.t2i.r5, 5.0 / 12);
  ck_assert_double_eq(r.t2i.r10, 10.0 / 12);
  ck_assert_double_eq_tol(r.t2i.mean_rank, 79.0 / 12, 1e-12);
  ck_assert_double_eq(r.t2i.median_rank, 6.5);
  ck_assert_double_eq(r.i2t.r1, 0.0);
  ck_assert_double_eq(r.i2t.r5, 4.0 / 12);
  ck_assert_double_eq(r.i2t.r10, 9.0 / 12);
  /* 1-based ranks 2..12 and 12: (sum 2..12 = 77) + 12 */
  ck_assert_double_eq_tol(r.i2t.mean_rank, 89.0 / 12, 1e-12);
}
END_TEST

START_TEST(retrieval_blocks) {
  /* more queries than one block (256): every pair distinct and matched -> R@1 = 1; and with the
   * images reversed, text i's true image i ranks by the construction below. */
  enum { n = 300, d = 2 };
  float *t = malloc(sizeof(float) * n * d), *im = malloc(sizeof(float) * n * d);
  for (int i = 0; i < n; i++) {
    double a = 3.0 * i / n; /* angles in [0, 3) rad: all distinct directions within a half-turn */
    t[i * d] = im[i * d] = (float)cos(a);
    t[i * d + 1] = im[i * d + 1] = (float)sin(a);
  }
  eval_retrieval r;
  ck_assert_int_eq(eval_retrieval_run(t, im, n, d, &r, NULL), 0);
  ck_assert_double_eq(r.t2i.r1, 1.0);
  ck_assert_double_eq(r.i2t.r1, 1.0);
  ck_assert_int_eq(eval_retrieval_run(t, im, 0, d, &r, NULL), -1);
  free(t);
  free(im);
}
END_TEST

/* ---------- distances ---------- */

START_TEST(pair_stats_known) {
  const float a[6] = {3, 4, 1, 0, 1, 1}, b[6] = {0, 0, 0, 2, 2, 2};
  eval_pair_stats s;
  eval_pair_stats_run(a, b, 3, 2, &s);
  ck_assert_int_eq(s.n, 3);
  ck_assert_double_eq_tol(s.mean_l2, (5 + sqrt(5) + sqrt(2)) / 3, 1e-12);
  ck_assert_double_eq_tol(s.mean_cosine, 1.0 / 3, 1e-12);
  ck_assert_double_eq_tol(s.mean_norm_a, (5 + 1 + sqrt(2)) / 3, 1e-12);
  ck_assert_double_eq_tol(s.mean_norm_b, (0 + 2 + sqrt(8)) / 3, 1e-12);
}
END_TEST

/* ---------- softmax head ---------- */

static uint64_t rng_state = 12345;
static double urand(void) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (rng_state >> 11) * 0x1.0p-53;
}

START_TEST(objective_gradient) {
  enum { n = 9, d = 5, C = 4 };
  double X[n * d], W[C * d], b[C], gW[C * d], gb[C], work[n * C];
  int y[n];
  for (int i = 0; i < n * d; i++) X[i] = urand() * 2 - 1;
  for (int i = 0; i < C * d; i++) W[i] = urand() - 0.5;
  for (int i = 0; i < C; i++) b[i] = urand() - 0.5;
  for (int i = 0; i < n; i++) y[i] = i % C;
  const double l2 = 0.3, h = 1e-6;
  double f = eval_softmax_objective(X, y, n, d, C, W, b, l2, gW, gb, work);
  ck_assert(isfinite(f) && f > 0);
  double worst = 0;
  for (int k = 0; k < C * d + C; k++) {
    double *p = k < C * d ? &W[k] : &b[k - C * d], g = k < C * d ? gW[k] : gb[k - C * d], v = *p;
    *p = v + h;
    double fp = eval_softmax_objective(X, y, n, d, C, W, b, l2, NULL, NULL, work);
    *p = v - h;
    double fm = eval_softmax_objective(X, y, n, d, C, W, b, l2, NULL, NULL, work);
    *p = v;
    double fd = (fp - fm) / (2 * h), e = fabs(fd - g) / fmax(1e-3, fabs(g));
    if (e > worst) worst = e;
  }
  /* central differences in F64 with h = 1e-6: truncation ~1e-12, rounding ~1e-10; measured ~1e-9 */
  ck_assert_msg(worst < 1e-7, "gradient vs central differences: worst relative error %g", worst);
  /* a known value: W = 0, b = 0 -> every class 1/C: objective log C */
  memset(W, 0, sizeof W);
  memset(b, 0, sizeof b);
  ck_assert_double_eq_tol(eval_softmax_objective(X, y, n, d, C, W, b, l2, NULL, NULL, work), log(C), 1e-14);
}
END_TEST

START_TEST(head_symmetric_optimum) {
  /* x = +1 labelled 7, x = -1 labelled 3 (mean 0, scale 1 after the head's centring). By symmetry
   * the optimum has b = 0 and W = (-w, w) with delta = 2w solving
   *   d/d delta [log(1 + e^-delta) + l2 delta^2 / 4] = 0,  i.e.  l2 delta / 2 = sigmoid(-delta). */
  const float X[2] = {1.f, -1.f};
  const int32_t y[2] = {7, 3};
  const double l2 = 0.1;
  double lo = 0, hi = 50;
  for (int it = 0; it < 200; it++) {
    double mid = (lo + hi) / 2;
    if (l2 * mid / 2 - 1 / (1 + exp(mid)) < 0) lo = mid;
    else hi = mid;
  }
  const double delta = (lo + hi) / 2;
  eval_head_config cfg;
  eval_head_config_default(&cfg);
  cfg.l2 = l2;
  cfg.epsilon = 1e-10;
  eval_linear_head h;
  taca_error err = {{0}};
  ck_assert_msg(eval_head_fit(&h, X, y, 2, 1, &cfg, &err) == 0, "%s", err.msg);
  ck_assert_int_eq(h.n_classes, 2);
  ck_assert_int_eq(h.classes[0], 3);
  ck_assert_int_eq(h.classes[1], 7);
  ck_assert_double_eq(h.mean[0], 0.0);
  ck_assert_double_eq(h.scale, 1.0);
  ck_assert_double_eq_tol(h.W[1], delta / 2, 1e-7);
  ck_assert_double_eq_tol(h.W[0], -delta / 2, 1e-7);
  ck_assert_double_eq_tol(h.b[1] - h.b[0], 0.0, 1e-7);
  ck_assert_double_eq_tol(h.objective, log1p(exp(-delta)) + l2 * delta * delta / 4, 1e-12);
  int32_t pred[2];
  ck_assert_int_eq(eval_head_predict(&h, X, 2, pred, &err), 0);
  ck_assert_int_eq(pred[0], 7);
  ck_assert_int_eq(pred[1], 3);
  eval_head_free(&h);
}
END_TEST

START_TEST(head_separable) {
  /* three well-separated clusters in 3-D around large offsets (the head must centre and scale),
   * with unlabelled rows (-1) that training and accuracy ignore */
  enum { per = 20, d = 3 };
  const float centre[3][3] = {{100, 0, 0}, {0, 100, 0}, {0, 0, 100}};
  const int32_t label[3] = {30, 10, 20};
  float X[(3 * per + 5) * d];
  int32_t y[3 * per + 5];
  int n = 0;
  for (int c = 0; c < 3; c++)
    for (int i = 0; i < per; i++, n++) {
      for (int j = 0; j < d; j++) X[n * d + j] = 500 + centre[c][j] + (float)(urand() * 20 - 10);
      y[n] = label[c];
    }
  for (int i = 0; i < 5; i++, n++) {
    for (int j = 0; j < d; j++) X[n * d + j] = (float)(urand() * 1000);
    y[n] = -1;
  }
  eval_head_config cfg;
  eval_head_config_default(&cfg);
  eval_linear_head h;
  taca_error err = {{0}};
  ck_assert_msg(eval_head_fit(&h, X, y, n, d, &cfg, &err) == 0, "%s", err.msg);
  ck_assert_int_eq(h.n_train, 3 * per);
  ck_assert_int_eq(h.n_classes, 3);
  ck_assert_int_eq(h.classes[0], 10);
  ck_assert_int_eq(h.classes[2], 30);
  ck_assert_msg(h.status >= 0, "L-BFGS status %d", h.status);
  int32_t pred[3 * per + 5];
  ck_assert_int_eq(eval_head_predict(&h, X, n, pred, &err), 0);
  int counted = 0;
  ck_assert_double_eq(eval_accuracy(pred, y, n, &counted), 1.0);
  ck_assert_int_eq(counted, 3 * per);
  /* fresh points at the centres */
  float T[3 * d];
  for (int c = 0; c < 3; c++)
    for (int j = 0; j < d; j++) T[c * d + j] = 500 + centre[c][j];
  int32_t tp[3];
  ck_assert_int_eq(eval_head_predict(&h, T, 3, tp, &err), 0);
  for (int c = 0; c < 3; c++) ck_assert_int_eq(tp[c], label[c]);
  eval_head_free(&h);

  /* refusals with a reason */
  int32_t one[3] = {4, 4, -1};
  ck_assert_int_eq(eval_head_fit(&h, X, one, 3, d, &cfg, &err), -1);
  ck_assert_ptr_nonnull(strstr(err.msg, "single class"));
  int32_t none[3] = {-1, -1, -1};
  ck_assert_int_eq(eval_head_fit(&h, X, none, 3, d, &cfg, &err), -1);
  ck_assert_ptr_nonnull(strstr(err.msg, "no labelled"));
}
END_TEST

START_TEST(accuracy_counts) {
  const int32_t pred[5] = {1, 2, 3, 4, 5}, y[5] = {1, -1, 0, 4, -1};
  int counted = 0;
  ck_assert_double_eq_tol(eval_accuracy(pred, y, 5, &counted), 2.0 / 3, 1e-15);
  ck_assert_int_eq(counted, 3);
  ck_assert_double_eq(eval_accuracy(pred, y, 0, &counted), 0.0);
  ck_assert_int_eq(counted, 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("eval_metrics");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, split_known_values);
  tcase_add_test(tc, split_fraction);
  tcase_add_test(tc, ranks_hand_matrix);
  tcase_add_test(tc, retrieval_identity);
  tcase_add_test(tc, retrieval_shifted);
  tcase_add_test(tc, retrieval_blocks);
  tcase_add_test(tc, pair_stats_known);
  tcase_add_test(tc, objective_gradient);
  tcase_add_test(tc, head_symmetric_optimum);
  tcase_add_test(tc, head_separable);
  tcase_add_test(tc, accuracy_counts);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
