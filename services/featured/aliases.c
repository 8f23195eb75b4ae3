/* aliases.c: the alias table, its file and its rules (see aliases.h). */
#include "services/featured/aliases.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/atomicfile.h"

int alias_check_name(const char *name, taca_error *err) {
  size_t n = strlen(name);
  if (n == 0) return taca_fail(err, "alias name is empty");
  if (n >= STORE_NAME_MAX) return taca_fail(err, "alias name '%.64s...' is longer than %d bytes", name, STORE_NAME_MAX - 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)name[i];
    if (c <= ' ' || c >= 127 || c == '/')
      return taca_fail(err, "alias name '%.64s' has a character other than printable ASCII (no spaces or '/')", name);
  }
  return 0;
}

const featured_alias *alias_find(const alias_table *t, const char *name) {
  for (int i = 0; i < t->n; i++)
    if (!strcmp(t->a[i].name, name)) return &t->a[i];
  return NULL;
}

int alias_table_set(alias_table *t, const char *name, const char *target, taca_error *err) {
  if (alias_check_name(name, err)) return -1;
  int at = -1;
  for (int i = 0; i < t->n; i++)
    if (!strcmp(t->a[i].name, name)) at = i;
  if (!target[0]) {
    if (at < 0) return taca_fail(err, "alias '%s' does not exist", name);
    t->a[at] = t->a[--t->n];
    t->version++;
    return 0;
  }
  if (strlen(target) >= STORE_NAME_MAX) return taca_fail(err, "alias target is longer than %d bytes", STORE_NAME_MAX - 1);
  if (at < 0) {
    if (t->n == FEATURED_MAX_ALIASES) return taca_fail(err, "at most %d aliases", FEATURED_MAX_ALIASES);
    at = t->n++;
    snprintf(t->a[at].name, sizeof t->a[at].name, "%s", name);
  }
  snprintf(t->a[at].target, sizeof t->a[at].target, "%s", target);
  t->a[at].version = ++t->version;
  return 0;
}

int alias_table_load(const char *path, alias_table *t, taca_error *err) {
  memset(t, 0, sizeof *t);
  FILE *f = fopen(path, "rb");
  if (!f) {
    if (errno == ENOENT) return 0;
    return taca_fail(err, "%s: cannot open: %s", path, strerror(errno));
  }
  json_error_t je;
  json_t *root = json_loadf(f, 0, &je);
  fclose(f);
  if (!root) return taca_fail(err, "%s: invalid JSON at line %d: %s", path, je.line, je.text);
  int rc = 0;
  json_t *ver = json_object_get(root, "version"), *al = json_object_get(root, "aliases");
  if (!json_is_object(root) || !json_is_integer(ver) || json_integer_value(ver) < 0 || !json_is_object(al)) {
    rc = taca_fail(err, "%s: not an alias table ({\"version\": N, \"aliases\": {...}})", path);
    goto out;
  }
  t->version = (uint64_t)json_integer_value(ver);
  const char *name;
  json_t *v;
  json_object_foreach(al, name, v) {
    json_t *tg = json_object_get(v, "target"), *av = json_object_get(v, "version");
    if (!json_is_string(tg) || (av && !json_is_integer(av))) {
      rc = taca_fail(err, "%s: alias '%.64s' has no string \"target\"", path, name);
      goto out;
    }
    if (alias_check_name(name, err)) {
      rc = taca_error_prefix(err, "%s", path);
      goto out;
    }
    size_t tl = strlen(json_string_value(tg));
    if (tl == 0 || tl >= STORE_NAME_MAX) {
      rc = taca_fail(err, "%s: alias '%s' has an empty or over-long target", path, name);
      goto out;
    }
    if (t->n == FEATURED_MAX_ALIASES) {
      rc = taca_fail(err, "%s: more than %d aliases", path, FEATURED_MAX_ALIASES);
      goto out;
    }
    featured_alias *a = &t->a[t->n++];
    snprintf(a->name, sizeof a->name, "%s", name);
    snprintf(a->target, sizeof a->target, "%s", json_string_value(tg));
    a->version = av ? (uint64_t)json_integer_value(av) : 0;
  }
out:
  json_decref(root);
  return rc;
}

int alias_table_save(const char *path, const alias_table *t, taca_error *err) {
  json_t *root = json_object(), *al = json_object();
  json_object_set_new(root, "version", json_integer((json_int_t)t->version));
  for (int i = 0; i < t->n; i++) {
    json_t *a = json_object();
    json_object_set_new(a, "target", json_string(t->a[i].target));
    json_object_set_new(a, "version", json_integer((json_int_t)t->a[i].version));
    json_object_set_new(al, t->a[i].name, a);
  }
  json_object_set_new(root, "aliases", al);
  char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
  json_decref(root);
  if (!text) return taca_fail(err, "out of memory");
  size_t n = strlen(text);
  taca_chunk ch[2] = {{text, n}, {"\n", 1}};
  int rc = taca_write_file_atomic(path, ch, 2, err);
  free(text);
  return rc;
}
