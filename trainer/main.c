/* main.c: entry point of taca-train: options, MPI world, --dry-run's parameter table, the run. */
#include <stdio.h>
#include <string.h>

#include "nn/clip_config.h"
#include "client/taca_client.h"
#include "trainer/collectives.h"
#include "trainer/collectives_nccl.h"
#include "methods/taca_params.h"
#include "trainer/aft_train.h"
#include "trainer/train.h"
#include "trainer/train_options.h"

/* The paper's Table 1 for the new towers it upgrades to, with ViT-B/16 as the old model (E_old 512):
 * frozen vision parameters, and the trainable adapters + projector under this run's settings. */
static int dry_run(const train_options *o) {
  static const char *ARCHS[] = {"ViT-B-16", "ViT-L-14", "ViT-H-14", "ViT-g-14"};
  static const char *PAPER[] = {"86M / -", "307M / 37M", "632M / 70M", "1011M / 111M"};
  printf("%-12s %6s %14s %18s %10s %12s   %s\n", "new tower", "layers", "frozen params", "adapters+projector",
         "bottleneck", "ratio", "paper (frozen / learnable)");
  for (size_t i = 0; i < sizeof ARCHS / sizeof ARCHS[0]; i++) {
    clip_config c;
    taca_error err;
    if (clip_config_builtin(&c, ARCHS[i], &err)) {
      fprintf(stderr, "taca-train: %s\n", err.msg);
      return 1;
    }
    taca_param_config pc;
    taca_param_config_default(&pc, &c, 512);
    pc.proj_hidden = o->projector_hidden;
    if (o->bottleneck) pc.peft.bottleneck = o->bottleneck;
    if (taca_parse_layer_range(o->adapter_layers, c.vision.layers, &pc.peft.first, &pc.peft.last, &err)) {
      fprintf(stderr, "taca-train: %s\n", err.msg);
      return 2;
    }
    long long frozen = clip_config_vision_params(&c);
    size_t train = i == 0 ? 0 : taca_param_count(&pc);
    printf("%-12s %6d %13.1fM %17.1fM %10d %11.1f%%   %s\n", ARCHS[i], c.vision.layers, frozen / 1e6, train / 1e6,
           pc.peft.bottleneck, 100.0 * train / frozen, PAPER[i]);
  }
  printf("(old model ViT-B/16, embedding 512; projector hidden %d; adapters in blocks %s. The paper\n"
         " does not state the bottleneck behind its learnable counts.)\n", o->projector_hidden, o->adapter_layers);
  return 0;
}

int main(int argc, char **argv) {
  train_options o;
  int prc = train_options_parse(&o, argc, argv);
  if (prc == 1) return 0;
  if (prc == 2) return 2;
  if (o.dry_run) return dry_run(&o);
  taca_client_tune_malloc(); /* large batch buffers reuse heap memory instead of fresh mmaps */
  taca_comm comm;
  taca_error err = {{0}};
  if (comm_init(&comm, &argc, &argv, &err)) {
    fprintf(stderr, "taca-train: %s\n", err.msg);
    return 1;
  }
  int rc = o.objective == OBJECTIVE_AFT ? aft_run(&o, &comm, &err) : train_run(&o, &comm, &err);
  if (rc) {
    comm_fail_fast(&comm, NULL, &err); /* a failure of this rank's own: ends every rank */
    fprintf(stderr, "taca-train: rank %d: %s\n", comm.rank, err.msg);
  }
  comm_finalize();
  return rc ? 1 : 0;
}
