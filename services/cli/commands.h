/* commands.h: the subcommands of the `taca` tool, each in its own cmd_*.c file. Each returns the
 * process exit status: 0 success, 1 failure at run time, 2 bad usage. */
#ifndef TACA_CLI_COMMANDS_H
#define TACA_CLI_COMMANDS_H

int cmd_embed(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);

#endif
