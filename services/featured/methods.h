/* methods.h: the RPC methods taca-featured answers, by id (for dispatch, metrics and logs). */
#ifndef TACA_FEATURED_METHODS_H
#define TACA_FEATURED_METHODS_H

typedef enum featured_method {
  FM_INFO = 0,
  FM_GET_BATCH,
  FM_STREAM_EPOCH,
  FM_LOOKUP,
  FM_SEARCH,
  FM_EMBED,
  FM_SET_ALIAS,
  FM_HEALTH_CHECK,
  FM_HEALTH_WATCH,
  FM_REFLECTION,        /* grpc.reflection.v1.ServerReflection/ServerReflectionInfo (bidi stream) */
  FM_REFLECTION_ALPHA,  /* the same as grpc.reflection.v1alpha */
  FM_UNKNOWN,  /* any other path: answered UNIMPLEMENTED */
  FM_COUNT
} featured_method;

/* Short names ("GetBatch"), the full gRPC paths ("/taca.v1.FeatureCache/GetBatch"; NULL for
 * FM_UNKNOWN), and whether the method streams its responses. */
extern const char *const FEATURED_METHOD_NAMES[FM_COUNT];
extern const char *const FEATURED_METHOD_PATHS[FM_COUNT];
extern const int FEATURED_METHOD_STREAMING[FM_COUNT];
/* Whether requests stream too (no initial payload: messages are received one by one). */
#define FEATURED_METHOD_BIDI(m) ((m) == FM_REFLECTION || (m) == FM_REFLECTION_ALPHA)

#endif
