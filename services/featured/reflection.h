/* reflection.h: gRPC server reflection (grpc.reflection.v1 and v1alpha, the same messages) from the
 * descriptor set that protoc emits at build time (proto/CMakeLists.txt: taca_descriptor_set[], every
 * served .proto with its imports), so grpcurl, grpcui, evans or Postman need no .proto by hand.
 * Answers list_services, file_by_filename, file_containing_symbol (messages, enums, services,
 * methods, nested types; the file and everything it imports), and the extension queries (the served
 * protos declare no extensions: an empty list for a known type, NOT_FOUND otherwise). */
#ifndef TACA_FEATURED_REFLECTION_H
#define TACA_FEATURED_REFLECTION_H

#include <stddef.h>
#include <stdint.h>

#include "services/featured/reply.h"

/* One ServerReflectionRequest (bytes) -> its ServerReflectionResponse in r (code OK), or
 * INVALID_ARGUMENT for a malformed request. Questions it cannot answer get an error_response inside
 * an OK reply, as the protocol wants. Thread-safe. */
void reflection_handle(const uint8_t *req, size_t len, reply *r);

#endif
