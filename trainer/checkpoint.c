/* checkpoint.c: saving, finding and loading the trainer's checkpoints (see checkpoint.h). */
#include "trainer/checkpoint.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/safetensors.h"

void checkpoint_path(char *buf, size_t n, const char *dir, long step, int optim) {
  snprintf(buf, n, "%s/step-%06ld%s.safetensors", dir, step, optim ? ".optim" : "");
}

int checkpoint_save(const taca_params *P, const char *dir, const char *const *meta, taca_error *err) {
  char p[4096], o[4096];
  checkpoint_path(p, sizeof p, dir, P->step, 0);
  checkpoint_path(o, sizeof o, dir, P->step, 1);
  if (taca_optim_save(P, o, meta, err)) return -1;
  return taca_params_save(P, p, meta, err);
}

long checkpoint_latest(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  long best = -1;
  struct dirent *e;
  while ((e = readdir(d))) {
    long step;
    int len = 0;
    if (sscanf(e->d_name, "step-%ld.safetensors%n", &step, &len) == 1 && e->d_name[len] == 0 &&
        len == (int)strlen(e->d_name) && step > best) {
      char o[4096];
      checkpoint_path(o, sizeof o, dir, step, 1);
      FILE *f = fopen(o, "rb");
      if (f) {
        fclose(f);
        best = step;
      }
    }
  }
  closedir(d);
  return best;
}

int checkpoint_load(taca_params *P, const char *dir, long step, const char *const *must_match,
                    taca_error *err) {
  char p[4096], o[4096];
  checkpoint_path(p, sizeof p, dir, step, 0);
  checkpoint_path(o, sizeof o, dir, step, 1);
  if (taca_checkpoint_match_meta(p, must_match, err)) return -1;
  if (taca_params_load(P, p, err) || taca_optim_load(P, o, err)) return -1;
  if (P->step != step) return taca_fail(err, "%s holds step %ld, its name says %ld", o, P->step, step);
  return 0;
}
