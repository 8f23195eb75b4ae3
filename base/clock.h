/* clock.h: the one clock for durations and deadlines: CLOCK_MONOTONIC in seconds. */
#ifndef TACA_BASE_CLOCK_H
#define TACA_BASE_CLOCK_H

#include <time.h>

static inline double taca_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
