/* aliases.h: served names that stand for stored models ("current" -> "old_clip"), the table that
 * SetAlias repoints and that persists beside the store (DIR/aliases.json by default).
 *
 * Contract:
 *   - An alias name follows the store's model-name rules (printable ASCII, no '/' or spaces, under
 *     STORE_NAME_MAX bytes) and is not the name of a stored model; a target is a stored model, never
 *     another alias (one level: what a name means is always one lookup).
 *   - The table is a value (copied into each call's snapshot): a call resolves every name it carries
 *     against the one table it took, so a flip is atomic per call.
 *   - The file is JSON {"version": V, "aliases": {"NAME": {"target": T, "version": v}, ...}}, written
 *     with base/atomicfile (readers see the old table or the new one, never a torn file). A missing
 *     file is an empty table. */
#ifndef TACA_FEATURED_ALIASES_H
#define TACA_FEATURED_ALIASES_H

#include <stdint.h>

#include "base/error.h"
#include "storage/store.h"

#define FEATURED_MAX_ALIASES 32

typedef struct featured_alias {
  char name[STORE_NAME_MAX];
  char target[STORE_NAME_MAX];
  uint64_t version;  /* the table version of the alias's last change */
} featured_alias;

typedef struct alias_table {
  uint64_t version;  /* raised by every change */
  int n;
  featured_alias a[FEATURED_MAX_ALIASES];
} alias_table;

/* Reads path into t (empty when the file does not exist). */
int alias_table_load(const char *path, alias_table *t, taca_error *err);
int alias_table_save(const char *path, const alias_table *t, taca_error *err);
const featured_alias *alias_find(const alias_table *t, const char *name);
/* Sets (target non-empty) or removes (target "") an alias in t, raising the versions. */
int alias_table_set(alias_table *t, const char *name, const char *target, taca_error *err);
/* The name rules above, less the "not a stored model" one (the caller knows the store). */
int alias_check_name(const char *name, taca_error *err);

#endif
