/* progress.h: progress of a long job: a bar with rate and ETA on a terminal, plain log lines
 * (at most one every few seconds) otherwise; with TACA_LOG_FORMAT=json in the environment those
 * lines are JSON objects: {"ts","level":"info","msg",FIELDS} as taca-featured --log-format json
 * writes them, the fields being what, done, total, rejected, rate (per second) and eta_s. */
#ifndef TACA_PRECOMPUTE_PROGRESS_H
#define TACA_PRECOMPUTE_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

typedef struct progress {
  FILE *out;
  const char *what;    /* "precompute" */
  int tty;
  int json;            /* not a terminal and TACA_LOG_FORMAT=json */
  uint64_t total, start_done;
  double t0, last;
} progress;

/* start_done: units already done before this run (resumed), excluded from the rate. */
void progress_init(progress *p, FILE *out, const char *what, uint64_t total, uint64_t start_done);
/* rejected is shown beside the count. force: print now (e.g. at the end). */
void progress_update(progress *p, uint64_t done, uint64_t rejected, int force);
void progress_finish(progress *p, uint64_t done, uint64_t rejected);

#endif
