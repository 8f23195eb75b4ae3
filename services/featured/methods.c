/* methods.c: names and gRPC paths of the methods of methods.h. */
#include "services/featured/methods.h"

#include <stddef.h>

const char *const FEATURED_METHOD_NAMES[FM_COUNT] = {
    "Info", "GetBatch", "StreamEpoch", "Lookup", "Search", "Embed", "SetAlias", "Health.Check", "Health.Watch", "Reflection", "Reflection.v1alpha", "Unknown",
};

const char *const FEATURED_METHOD_PATHS[FM_COUNT] = {
    "/taca.v1.FeatureCache/Info",
    "/taca.v1.FeatureCache/GetBatch",
    "/taca.v1.FeatureCache/StreamEpoch",
    "/taca.v1.FeatureCache/Lookup",
    "/taca.v1.FeatureCache/Search",
    "/taca.v1.FeatureCache/Embed",
    "/taca.v1.FeatureCache/SetAlias",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    NULL,
};

const int FEATURED_METHOD_STREAMING[FM_COUNT] = {0, 0, 1, 0, 0, 0, 0, 0, 1, 1, 1, 0};
