/* progress.c: terminal progress bar or periodic log lines, with rate and ETA. */
#include "services/precompute/progress.h"
#include "base/clock.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static void fmt_eta(char *buf, size_t n, double s) {
  if (s < 0 || s > 1e7) snprintf(buf, n, "--");
  else if (s < 60) snprintf(buf, n, "%.0fs", s);
  else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
  else snprintf(buf, n, "%dh%02dm", (int)s / 3600, (int)s / 60 % 60);
}

void progress_init(progress *p, FILE *out, const char *what, uint64_t total, uint64_t start_done) {
  p->out = out;
  p->what = what;
  p->tty = isatty(fileno(out));
  const char *fmt = getenv("TACA_LOG_FORMAT");
  p->json = !p->tty && fmt && !strcmp(fmt, "json");
  p->total = total;
  p->start_done = start_done;
  p->t0 = p->last = taca_now_s();
}

void progress_update(progress *p, uint64_t done, uint64_t rejected, int force) {
  double t = taca_now_s();
  if (!force && t - p->last < (p->tty ? 0.2 : 5.0)) return;
  p->last = t;
  double el = t - p->t0, rate = el > 0 ? (double)(done - p->start_done) / el : 0;
  char eta[32];
  fmt_eta(eta, sizeof eta, rate > 0 ? (double)(p->total - done) / rate : -1);
  double frac = p->total ? (double)done / p->total : 1;
  if (p->tty) {
    char bar[31];
    int fill = (int)(frac * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
    bar[30] = 0;
    fprintf(p->out, "\r%s [%s] %llu/%llu  %.1f/s  ETA %s  rejected %llu ", p->what, bar,
            (unsigned long long)done, (unsigned long long)p->total, rate, eta,
            (unsigned long long)rejected);
  } else if (p->json) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[32];
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    /* what is a fixed word of the caller: no escaping needed */
    fprintf(p->out,
            "{\"ts\":\"%s.%03dZ\",\"level\":\"info\",\"msg\":\"%s: %llu/%llu samples (%.1f%%), ETA %s\","
            "\"what\":\"%s\",\"done\":%llu,\"total\":%llu,\"rejected\":%llu,\"rate\":%.3f,\"eta_s\":%.0f}\n",
            ts, (int)(tv.tv_usec / 1000), p->what, (unsigned long long)done, (unsigned long long)p->total,
            100 * frac, eta, p->what, (unsigned long long)done, (unsigned long long)p->total,
            (unsigned long long)rejected, rate, rate > 0 ? (double)(p->total - done) / rate : -1.0);
  } else {
    fprintf(p->out, "%s: %llu/%llu samples (%.1f%%), %.1f samples/s, ETA %s, %llu rejected\n",
            p->what, (unsigned long long)done, (unsigned long long)p->total, 100 * frac, rate, eta,
            (unsigned long long)rejected);
  }
  fflush(p->out);
}

void progress_finish(progress *p, uint64_t done, uint64_t rejected) {
  progress_update(p, done, rejected, 1);
  if (p->tty) fputc('\n', p->out);
}
