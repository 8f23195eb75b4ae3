/* reflection.c: the index of the built-in descriptor set and the answers of reflection.h. */
#include "services/featured/reflection.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/reflection/v1/reflection.pb-c.h"
#include "services/featured/wire.h"

extern const unsigned char taca_descriptor_set[];
extern const unsigned long taca_descriptor_set_len;

enum { MAX_FILES = 32, MAX_DEPS = 16, MAX_SYMBOLS = 1024, MAX_SERVICES = 16, NAME_MAX_LEN = 160 };

typedef struct proto_file {
  char name[NAME_MAX_LEN];
  const uint8_t *bytes; /* the serialized FileDescriptorProto */
  size_t len;
  int n_deps;
  char deps[MAX_DEPS][NAME_MAX_LEN];
} proto_file;

typedef struct symbol {
  char name[NAME_MAX_LEN]; /* fully qualified, without the leading dot */
  int file;
} symbol;

static struct {
  int n_files, n_symbols, n_services, ok;
  proto_file files[MAX_FILES];
  symbol symbols[MAX_SYMBOLS];
  char services[MAX_SERVICES][NAME_MAX_LEN];
} IX;
static pthread_once_t ix_once = PTHREAD_ONCE_INIT;

static void copy_name(char *dst, const uint8_t *p, size_t n) {
  if (n >= NAME_MAX_LEN) n = NAME_MAX_LEN - 1;
  memcpy(dst, p, n);
  dst[n] = '\0';
}

/* out = scope + "." + name (cut at NAME_MAX_LEN - 1 bytes), recorded as a symbol of `file`. */
static void add_symbol(const char *scope, const uint8_t *p, size_t n, int file, char *out) {
  size_t k = 0, sl = strlen(scope);
  for (size_t i = 0; i < sl && k + 1 < NAME_MAX_LEN; i++) out[k++] = scope[i];
  if (sl && k + 1 < NAME_MAX_LEN) out[k++] = '.';
  for (size_t i = 0; i < n && k + 1 < NAME_MAX_LEN; i++) out[k++] = (char)p[i];
  out[k] = '\0';
  if (IX.n_symbols < MAX_SYMBOLS) {
    memcpy(IX.symbols[IX.n_symbols].name, out, k + 1);
    IX.symbols[IX.n_symbols++].file = file;
  }
}

/* The name (field 1) of a descriptor message. */
static int name_of(const uint8_t *p, size_t n, const uint8_t **name, size_t *len) {
  const uint8_t *q = p, *end = p + n;
  wire_field f;
  int rc;
  while ((rc = wire_next_field(&q, end, &f)) == 1)
    if (f.num == 1 && f.wire == 2) {
      *name = f.p;
      *len = f.n;
      return 0;
    }
  return -1;
}

/* DescriptorProto: the message, its nested messages (3) and enums (4). */
static int index_message(const char *scope, const uint8_t *p, size_t n, int file) {
  const uint8_t *nm;
  size_t nl;
  if (name_of(p, n, &nm, &nl)) return -1;
  char full[NAME_MAX_LEN];
  add_symbol(scope, nm, nl, file, full);
  const uint8_t *q = p, *end = p + n;
  wire_field f;
  int rc;
  while ((rc = wire_next_field(&q, end, &f)) == 1) {
    if (f.wire != 2) continue;
    if (f.num == 3 && index_message(full, f.p, f.n, file)) return -1;
    if (f.num == 4) {
      char e[NAME_MAX_LEN];
      if (name_of(f.p, f.n, &nm, &nl)) return -1;
      add_symbol(full, nm, nl, file, e);
    }
  }
  return rc;
}

static int index_file(const uint8_t *p, size_t n) {
  if (IX.n_files >= MAX_FILES) return -1;
  int fi = IX.n_files++;
  proto_file *pf = &IX.files[fi];
  pf->bytes = p;
  pf->len = n;
  char package[NAME_MAX_LEN] = "";
  wire_field f;
  const uint8_t *q = p, *end = p + n;
  int rc;
  while ((rc = wire_next_field(&q, end, &f)) == 1) /* the package first: symbols are named by it */
    if (f.num == 2 && f.wire == 2) copy_name(package, f.p, f.n);
  if (rc < 0) return -1;
  q = p;
  while ((rc = wire_next_field(&q, end, &f)) == 1) {
    if (f.wire != 2) continue;
    const uint8_t *nm;
    size_t nl;
    char full[NAME_MAX_LEN];
    if (f.num == 1) copy_name(pf->name, f.p, f.n);
    else if (f.num == 3 && pf->n_deps < MAX_DEPS) copy_name(pf->deps[pf->n_deps++], f.p, f.n);
    else if (f.num == 4) {
      if (index_message(package, f.p, f.n, fi)) return -1;
    } else if (f.num == 5) {
      if (name_of(f.p, f.n, &nm, &nl)) return -1;
      add_symbol(package, nm, nl, fi, full);
    } else if (f.num == 6) { /* ServiceDescriptorProto: name (1), methods (2) */
      if (name_of(f.p, f.n, &nm, &nl)) return -1;
      add_symbol(package, nm, nl, fi, full);
      if (IX.n_services < MAX_SERVICES) snprintf(IX.services[IX.n_services++], NAME_MAX_LEN, "%s", full);
      const uint8_t *s = f.p, *se = f.p + f.n;
      wire_field m;
      int mr;
      while ((mr = wire_next_field(&s, se, &m)) == 1)
        if (m.num == 2 && m.wire == 2) {
          char meth[NAME_MAX_LEN];
          if (name_of(m.p, m.n, &nm, &nl)) return -1;
          add_symbol(full, nm, nl, fi, meth);
        }
      if (mr < 0) return -1;
    }
  }
  return rc;
}

static void build_index(void) {
  const uint8_t *p = taca_descriptor_set, *end = p + taca_descriptor_set_len; /* FileDescriptorSet */
  wire_field f;
  int rc;
  while ((rc = wire_next_field(&p, end, &f)) == 1)
    if (f.num == 1 && f.wire == 2 && index_file(f.p, f.n)) return;
  IX.ok = rc == 0;
}

static int find_file(const char *name) {
  for (int i = 0; i < IX.n_files; i++)
    if (!strcmp(IX.files[i].name, name)) return i;
  return -1;
}

static int find_symbol(const char *name) {
  if (*name == '.') name++;
  for (int i = 0; i < IX.n_symbols; i++)
    if (!strcmp(IX.symbols[i].name, name)) return IX.symbols[i].file;
  return -1;
}

/* The file and, transitively, what it imports (each once, the asked-for file first). */
static void add_with_deps(int fi, int *list, int *n, char *seen) {
  if (fi < 0 || seen[fi]) return;
  seen[fi] = 1;
  list[(*n)++] = fi;
  for (int d = 0; d < IX.files[fi].n_deps; d++) add_with_deps(find_file(IX.files[fi].deps[d]), list, n, seen);
}

void reflection_handle(const uint8_t *req, size_t len, reply *r) {
  pthread_once(&ix_once, build_index);
  if (!IX.ok) {
    reply_fail(r, GRPC_STATUS_INTERNAL, "the built-in descriptor set could not be read");
    return;
  }
  Grpc__Reflection__V1__ServerReflectionRequest *q = grpc__reflection__v1__server_reflection_request__unpack(NULL, len, req);
  if (!q) {
    reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "malformed ServerReflectionRequest (%zu bytes)", len);
    return;
  }
  Grpc__Reflection__V1__ServerReflectionResponse out = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
  Grpc__Reflection__V1__ListServiceResponse ls = GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
  Grpc__Reflection__V1__ServiceResponse svc[MAX_SERVICES];
  Grpc__Reflection__V1__ServiceResponse *svcp[MAX_SERVICES];
  Grpc__Reflection__V1__FileDescriptorResponse fd = GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
  ProtobufCBinaryData blobs[MAX_FILES];
  Grpc__Reflection__V1__ExtensionNumberResponse ext = GRPC__REFLECTION__V1__EXTENSION_NUMBER_RESPONSE__INIT;
  Grpc__Reflection__V1__ErrorResponse er = GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
  char why[300];
  out.valid_host = q->host ? q->host : "";
  out.original_request = q;
  int fi = -1;
  const char *asked = "";
  switch (q->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
      for (int i = 0; i < IX.n_services; i++) {
        grpc__reflection__v1__service_response__init(&svc[i]);
        svc[i].name = IX.services[i];
        svcp[i] = &svc[i];
      }
      ls.n_service = (size_t)IX.n_services;
      ls.service = svcp;
      out.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
      out.list_services_response = &ls;
      break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
      asked = q->file_by_filename;
      fi = find_file(asked);
      goto files;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
      asked = q->file_containing_symbol;
      fi = find_symbol(asked);
    files:
      if (fi >= 0) {
        int list[MAX_FILES], n = 0;
        char seen[MAX_FILES] = {0};
        add_with_deps(fi, list, &n, seen);
        for (int i = 0; i < n; i++) blobs[i] = (ProtobufCBinaryData){IX.files[list[i]].len, (uint8_t *)IX.files[list[i]].bytes};
        fd.n_file_descriptor_proto = (size_t)n;
        fd.file_descriptor_proto = blobs;
        out.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
        out.file_descriptor_response = &fd;
      } else {
        snprintf(why, sizeof why, "%s '%s' is not served here",
                 q->message_request_case == GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME
                     ? "file" : "symbol", asked);
      }
      break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
      asked = q->all_extension_numbers_of_type;
      if (find_symbol(asked) >= 0) {
        ext.base_type_name = (char *)asked;
        out.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
        out.all_extension_numbers_response = &ext;
      } else {
        snprintf(why, sizeof why, "type '%s' is not served here", asked);
      }
      break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
      snprintf(why, sizeof why, "no extensions are declared by the served protos");
      break;
    default: snprintf(why, sizeof why, "empty ServerReflectionRequest (no question asked)"); break;
  }
  if (out.message_response_case == GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE__NOT_SET) {
    er.error_code = GRPC_STATUS_NOT_FOUND;
    er.error_message = why;
    out.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
    out.error_response = &er;
  }
  reply_pack(r, &out.base, SIZE_MAX);
  grpc__reflection__v1__server_reflection_request__free_unpacked(q, NULL);
}
