/* inputs.c: recording and comparing the inputs of an ingest (see inputs.h). */
#include "services/precompute/inputs.h"

#include <stdio.h>
#include <string.h>

json_t *inputs_record(const data_source *ds) {
  json_t *a = json_array();
  for (int i = 0; a && i < ds_num_inputs(ds); i++) {
    const ds_input *in = ds_get_input(ds, i);
    json_t *o = json_pack("{s:s,s:I,s:I,s:s}", "path", in->path, "entries", (json_int_t)in->entries, "size",
                          (json_int_t)in->size, "fingerprint", in->fingerprint);
    if (o && in->problem) json_object_set_new(o, "problem", json_string(in->problem));
    json_array_append_new(a, o);
  }
  return a;
}

static const char *path_of(json_t *o) {
  const char *p = json_string_value(json_object_get(o, "path"));
  return p ? p : "?";
}

static json_t *find_path(json_t *arr, const char *path) {
  size_t i;
  json_t *o;
  json_array_foreach(arr, i, o) if (!strcmp(path_of(o), path)) return o;
  return NULL;
}

static long long field(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_integer(v) ? (long long)json_integer_value(v) : -1;
}

int inputs_differ(json_t *recorded, json_t *now, char *why, size_t cap) {
  if (!json_is_array(recorded)) {
    snprintf(why, cap, "the store records no inputs");
    return 1;
  }
  size_t i;
  json_t *o;
  json_array_foreach(now, i, o) {
    json_t *r = find_path(recorded, path_of(o));
    if (!r) {
      snprintf(why, cap, "'%s' is not among the %zu inputs of the recorded ingest", path_of(o),
               json_array_size(recorded));
      return 1;
    }
    if (field(r, "size") != field(o, "size")) {
      snprintf(why, cap, "'%s' changed: %lld bytes, recorded %lld", path_of(o), field(o, "size"), field(r, "size"));
      return 1;
    }
    const char *fr = json_string_value(json_object_get(r, "fingerprint")),
               *fo = json_string_value(json_object_get(o, "fingerprint"));
    if (!fr || !fo || strcmp(fr, fo)) {
      snprintf(why, cap, "'%s' changed: its content fingerprint is %s, recorded %s", path_of(o), fo ? fo : "?",
               fr ? fr : "none");
      return 1;
    }
    if (field(r, "entries") != field(o, "entries")) {
      snprintf(why, cap, "'%s' changed: %lld entries, recorded %lld", path_of(o), field(o, "entries"),
               field(r, "entries"));
      return 1;
    }
  }
  json_array_foreach(recorded, i, o) if (!find_path(now, path_of(o))) {
    snprintf(why, cap, "'%s' of the recorded ingest is not among this run's inputs", path_of(o));
    return 1;
  }
  if (!json_equal(recorded, now)) {
    snprintf(why, cap, "the same inputs in another order");
    return 1;
  }
  return 0;
}
