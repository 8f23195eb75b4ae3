/* commands.h: the subcommands of the `taca` tool, each in its own cmd_*.c file. Each returns the
 * process exit status: 0 success, 1 failure at run time, 2 bad usage. */
#ifndef TACA_CLI_COMMANDS_H
#define TACA_CLI_COMMANDS_H

int cmd_embed(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_precompute(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_pretrain(int argc, char **argv);
int cmd_query(int argc, char **argv);
int cmd_health(int argc, char **argv);
int cmd_alias(int argc, char **argv);
/* `taca query --server ...` (cmd_query_server.c): argv as given to cmd_query, --server among the options. */
int cmd_query_server(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_add_features(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_drop_model(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_index(int argc, char **argv);
int cmd_export_model(int argc, char **argv);

#endif
