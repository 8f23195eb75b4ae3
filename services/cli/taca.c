/* taca.c: entry point of the `taca` command-line tool; dispatches to the subcommands. */
#include <stdio.h>
#include <string.h>

#include "services/cli/commands.h"

typedef struct command {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} command;

static const command COMMANDS[] = {
    {"embed", cmd_embed, "image or text features of a CLIP model, .npy in and out"},
    {"tokenize", cmd_tokenize, "CLIP BPE token ids of captions, as int32 [N, 77] .npy"},
    {"query", cmd_query, "inspect a store (info, lookup, export) offline or through a server"},
    {"health", cmd_health, "gRPC health check of running servers (exit 0 when SERVING)"},
    {"alias", cmd_alias, "point a served name (e.g. current) at a stored model on running servers: the hot swap"},
    {"synth", cmd_synth, "write the synthetic captioned-shapes data set (tar shards or folder)"},
    {"pretrain", cmd_pretrain, "train a small CLIP model CLIP-style on the synthetic data set"},
    {"add-features", cmd_add_features, "store embeddings from a .npy, or random noise features, as a model (AFT)"},
    {"import", cmd_import, "an embeddings-only store from .npy files computed elsewhere"},
    {"index", cmd_index, "build an approximate (faiss) search index of a stored model"},
    {"precompute", cmd_precompute, "fill a feature store with a model's embeddings of a data set"},
    {"verify", cmd_verify, "check every record of a store (checksums, key table, counts, content hash)"},
    {"drop-model", cmd_drop_model, "remove one model and its embeddings from a store"},
    {"eval", cmd_eval, "hot-plug compatibility report of a TaCA checkpoint (retrieval, old head, distances)"},
    {"export", cmd_export_model, "the adapted encoder (new tower + TaCA checkpoint + old text tower) as one model"},
};

static void usage(FILE *f) {
  fprintf(f, "usage: taca COMMAND [options]   (taca COMMAND --help for its options)\n\ncommands:\n");
  for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
    fprintf(f, "  %-13s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
  fprintf(f, "\nThe options of embed, tokenize, synth, pretrain, precompute, add-features and eval can also be\n"
             "set in the environment: --NAME as TACA_NAME (--batch-size -> TACA_BATCH_SIZE; a flag as\n"
             "TACA_QUIET=1/true/yes or 0/false/no); the command line wins, an empty variable is unset.\n"
             "query and health read only TACA_TOKEN. Exit status: 0 done, 2 bad usage, 1 failed at run time.\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "taca: give a COMMAND (try taca --help)\n");
    return 2;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return 0;
  }
  for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
    if (strcmp(argv[1], COMMANDS[i].name) == 0) return COMMANDS[i].run(argc - 1, argv + 1);
  fprintf(stderr, "taca: unknown command '%s' (try taca --help)\n", argv[1]);
  return 2;
}
