/* report.h: the three renderings of an eval_result (services/eval/eval.h): the terminal table, the
 * JSON document with every figure, and one self-contained HTML page (inline CSS and SVG, no
 * scripts, no external assets; XHTML-clean so XML parsers read it too). */
#ifndef TACA_EVAL_REPORT_H
#define TACA_EVAL_REPORT_H

#include <stdio.h>

#include <jansson.h>

#include "services/eval/eval.h"

/* The readable table (ASCII) to f. */
void eval_print_table(FILE *f, const eval_result *r, const eval_options *o);

/* The JSON document (schema described in services/cli/cmd_eval.c's --help and in eval.h). New
 * reference; NULL when out of memory. */
json_t *eval_result_json(const eval_result *r, const eval_options *o);
/* Writes it to path (atomically), pretty-printed with sorted keys. */
int eval_write_json(const char *path, const eval_result *r, const eval_options *o, taca_error *err);

/* Writes the HTML report to path (atomically). */
int eval_write_html(const char *path, const eval_result *r, const eval_options *o, taca_error *err);

#endif
