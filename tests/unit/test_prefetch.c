/* test_prefetch.c: the one prefetch queue (base/prefetch.h) that precompute, pretraining and the
 * trainer's batch feed stand on: items come in fill order, the producer never runs further ahead than
 * its free items, the end and an error reach the consumer after what was queued before them, and a
 * stop mid-stream joins the producer and hands every filled, untaken item to drop. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "base/prefetch.h"

typedef struct {
  long n;            /* elements in the stream; < 0: endless */
  long fail_at;      /* fill fails at this k (-1: never) */
  atomic_long filled; /* fills that returned 1 */
  atomic_long dropped;
} stream;

typedef struct {
  long k;
  long payload[4];
} item;

static int fill(void *ctx, long k, void *it, taca_error *err) {
  stream *s = ctx;
  if (k == s->fail_at) return taca_fail(err, "element %ld cannot be made", k);
  if (s->n >= 0 && k >= s->n) return 0;
  item *x = it;
  x->k = k;
  for (int i = 0; i < 4; i++) x->payload[i] = k * 10 + i;
  atomic_fetch_add(&s->filled, 1);
  return 1;
}

static void drop(void *ctx, void *it) {
  (void)it;
  atomic_fetch_add(&((stream *)ctx)->dropped, 1);
}

START_TEST(test_order_and_end) {
  stream s = {.n = 1000, .fail_at = -1};
  item items[3];
  void *const p[3] = {&items[0], &items[1], &items[2]};
  taca_prefetch *q;
  taca_error err = {{0}};
  ck_assert_int_eq(taca_prefetch_start(&q, p, 3, fill, &s, &err), 0);
  for (long k = 0; k < 1000; k++) {
    void *it = NULL;
    ck_assert_int_eq(taca_prefetch_next(q, &it, &err), 1);
    item *x = it;
    ck_assert_int_eq(x->k, k);
    ck_assert_int_eq(x->payload[3], k * 10 + 3);
    taca_prefetch_release(q, it);
  }
  void *it = NULL;
  ck_assert_int_eq(taca_prefetch_next(q, &it, &err), 0); /* the end, and it stays the end */
  ck_assert_int_eq(taca_prefetch_next(q, &it, &err), 0);
  taca_prefetch_stop(q, drop);
  ck_assert_int_eq(atomic_load(&s.dropped), 0);
}
END_TEST

START_TEST(test_bounded_ahead) {
  stream s = {.n = -1, .fail_at = -1};
  item items[4];
  void *const p[4] = {&items[0], &items[1], &items[2], &items[3]};
  taca_prefetch *q;
  taca_error err = {{0}};
  ck_assert_int_eq(taca_prefetch_start(&q, p, 4, fill, &s, &err), 0);
  void *held[2];
  for (int i = 0; i < 2; i++) ck_assert_int_eq(taca_prefetch_next(q, &held[i], &err), 1);
  usleep(100 * 1000); /* the producer has had time to run ahead as far as it may */
  ck_assert_int_eq(atomic_load(&s.filled), 4); /* 2 held + 2 queued, no more */
  taca_prefetch_release(q, held[0]);
  for (int t = 0; t < 200 && atomic_load(&s.filled) < 5; t++) usleep(1000);
  usleep(20 * 1000);
  ck_assert_int_eq(atomic_load(&s.filled), 5); /* one item back: one fill more */
  taca_prefetch_stop(q, drop);                 /* mid-stream, with an item still held */
  ck_assert_int_eq(atomic_load(&s.dropped), 3); /* the queued ones, not the held one */
}
END_TEST

START_TEST(test_error_after_queued) {
  stream s = {.n = -1, .fail_at = 5};
  item items[8];
  void *p[8];
  for (int i = 0; i < 8; i++) p[i] = &items[i];
  taca_prefetch *q;
  taca_error err = {{0}};
  ck_assert_int_eq(taca_prefetch_start(&q, p, 8, fill, &s, &err), 0);
  usleep(50 * 1000); /* elements 0..4 queued, then the failure */
  for (long k = 0; k < 5; k++) {
    void *it = NULL;
    ck_assert_int_eq(taca_prefetch_next(q, &it, &err), 1);
    ck_assert_int_eq(((item *)it)->k, k);
    taca_prefetch_release(q, it);
  }
  void *it = NULL;
  ck_assert_int_eq(taca_prefetch_next(q, &it, &err), -1);
  ck_assert_str_eq(err.msg, "element 5 cannot be made");
  taca_prefetch_stop(q, NULL);
}
END_TEST

START_TEST(test_bad_start) {
  taca_prefetch *q = (taca_prefetch *)1;
  taca_error err = {{0}};
  stream s = {.n = 1, .fail_at = -1};
  ck_assert_int_eq(taca_prefetch_start(&q, NULL, 0, fill, &s, &err), -1);
  ck_assert_ptr_null(q);
  ck_assert_ptr_nonnull(strstr(err.msg, "items"));
  taca_prefetch_stop(NULL, NULL); /* a no-op */
}
END_TEST

int main(void) {
  Suite *s = suite_create("prefetch");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_order_and_end);
  tcase_add_test(tc, test_bounded_ahead);
  tcase_add_test(tc, test_error_after_queued);
  tcase_add_test(tc, test_bad_start);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
