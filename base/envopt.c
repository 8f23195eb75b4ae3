/* envopt.c: reading options from the environment (rules in envopt.h). */
#include "base/envopt.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

void taca_env_var_name(const char *prefix, const char *name, char *var, size_t size) {
  size_t k = 0;
  for (const char *s = prefix; *s && k + 1 < size; s++) var[k++] = *s;
  for (const char *s = name; *s && k + 1 < size; s++) var[k++] = *s == '-' ? '_' : (char)toupper((unsigned char)*s);
  if (size) var[k] = '\0';
}

static int is_one_of(const char *v, const char *a, const char *b, const char *c) {
  return !strcmp(v, a) || !strcmp(v, b) || !strcmp(v, c);
}

int taca_env_option(const char *prefix, const struct option *o, char *var, size_t var_size, const char **value,
                    taca_error *err) {
  *value = NULL;
  if (!strcmp(o->name, "help")) return 0;
  taca_env_var_name(prefix, o->name, var, var_size);
  const char *v = getenv(var);
  if (!v || !*v) return 0;
  if (o->has_arg != no_argument) {
    *value = v;
    return 1;
  }
  if (is_one_of(v, "1", "true", "yes")) return 1;
  if (is_one_of(v, "0", "false", "no")) return 0;
  return taca_fail(err, "%s: the flag --%s takes 1, true or yes (set) or 0, false or no (off), got '%s'", var,
                   o->name, v);
}
