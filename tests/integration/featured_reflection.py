"""featured_reflection.py: a reflection client (what grpcurl does) against a running taca-featured.

For grpc.reflection.v1 and v1alpha, on one stream each: list_services; file_containing_symbol for
every service (the files come with their imports); file_by_filename; a method and a nested symbol;
an unknown symbol (error_response NOT_FOUND); all_extension_numbers_of_type. Then, from the
descriptors alone: describe FeatureCache (methods, request/response types, fields) and call Info and
grpc.health.v1 Check with messages built from them (dynamic messages, no generated code).

usage: featured_reflection.py PORT PYPROTO_DIR TOKEN
"""
import sys

port, pyproto, token = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, pyproto)

import grpc  # noqa: E402
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402

import reflection_v1_pb2 as v1  # noqa: E402
import reflection_v1alpha_pb2 as v1a  # noqa: E402

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


SERVICES = {"taca.v1.FeatureCache", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"}
channel = grpc.insecure_channel("127.0.0.1:" + port)
files = {}  # name -> FileDescriptorProto

for mod, pkg in ((v1, "grpc.reflection.v1"), (v1a, "grpc.reflection.v1alpha")):
    rpc = channel.stream_stream("/%s.ServerReflection/ServerReflectionInfo" % pkg,
                                request_serializer=mod.ServerReflectionRequest.SerializeToString,
                                response_deserializer=mod.ServerReflectionResponse.FromString)
    R = mod.ServerReflectionRequest
    reqs = [R(list_services="*")]
    reqs += [R(file_containing_symbol=s) for s in sorted(SERVICES)]
    reqs += [R(file_by_filename="grpc/health/v1/health.proto"),
             R(file_containing_symbol="taca.v1.FeatureCache.GetBatch"),
             R(file_containing_symbol="grpc.health.v1.HealthCheckResponse.ServingStatus"),
             R(file_containing_symbol="taca.v1.NoSuchThing"),
             R(all_extension_numbers_of_type="taca.v1.InfoRequest")]
    resps = list(rpc(iter(reqs), timeout=20))
    check(len(resps) == len(reqs), "%s: %d answers to %d questions" % (pkg, len(resps), len(reqs)))
    names = {s.name for s in resps[0].list_services_response.service}
    check(names == SERVICES, "%s: list_services gave %s" % (pkg, sorted(names)))
    for req, resp in zip(reqs[1:8], resps[1:8]):
        check(resp.WhichOneof("message_response") == "file_descriptor_response",
              "%s: %s answered %s" % (pkg, req, resp.WhichOneof("message_response")))
        check(resp.original_request == req, "%s: original_request not echoed" % pkg)
        for blob in resp.file_descriptor_response.file_descriptor_proto:
            fd = descriptor_pb2.FileDescriptorProto.FromString(blob)
            files[fd.name] = fd
    err = resps[8]
    check(err.WhichOneof("message_response") == "error_response" and err.error_response.error_code == 5,
          "%s: an unknown symbol gave %s" % (pkg, err))
    ext = resps[9]
    check(ext.WhichOneof("message_response") == "all_extension_numbers_response" and
          ext.all_extension_numbers_response.base_type_name == "taca.v1.InfoRequest",
          "%s: all_extension_numbers_of_type gave %s" % (pkg, ext))

check({"taca/v1/feature_cache.proto", "grpc/health/v1/health.proto"} <= set(files),
      "files received: %s" % sorted(files))

# describe, as `grpcurl describe taca.v1.FeatureCache` does, from the received descriptors only
pool = descriptor_pool.DescriptorPool()
added = set()


def add(name):
    if name in added:
        return
    for dep in files[name].dependency:
        add(dep)
    pool.Add(files[name])
    added.add(name)


for name in files:
    add(name)
svc = pool.FindServiceByName("taca.v1.FeatureCache")
methods = {m.name: m for m in svc.methods}
check({"Info", "GetBatch", "StreamEpoch", "Lookup", "Search"} <= set(methods), "methods: %s" % sorted(methods))
gb = methods["GetBatch"].input_type
check(gb.full_name == "taca.v1.GetBatchRequest" and "indices" in gb.fields_by_name,
      "GetBatch's request: %s %s" % (gb.full_name, sorted(gb.fields_by_name)))
check(methods["StreamEpoch"].output_type.full_name == "taca.v1.Batch", "StreamEpoch's response type")
print("  describe taca.v1.FeatureCache: " + ", ".join(
    "%s(%s) returns (%s)" % (m.name, m.input_type.name, m.output_type.name) for m in svc.methods))


def cls(full):
    d = pool.FindMessageTypeByName(full)
    try:
        return message_factory.GetMessageClass(d)
    except AttributeError:  # protobuf < 4.22
        return message_factory.MessageFactory(pool).GetPrototype(d)


# call Info and Health.Check with dynamic messages (the token only for FeatureCache)
Info = cls("taca.v1.InfoResponse")
info = channel.unary_unary("/taca.v1.FeatureCache/Info", request_serializer=lambda m: m.SerializeToString(),
                           response_deserializer=Info.FromString)(
    cls("taca.v1.InfoRequest")(), metadata=[("authorization", "Bearer " + token)], timeout=10)
check(info.ListFields(), "Info through the reflected descriptors returned an empty message")
HC = cls("grpc.health.v1.HealthCheckResponse")
hc = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda m: m.SerializeToString(),
                         response_deserializer=HC.FromString)(cls("grpc.health.v1.HealthCheckRequest")(), timeout=10)
check(hc.status == 1, "Health.Check through the reflected descriptors: %s" % hc)
print("  Info through reflection: " + ", ".join("%s" % f.name for f, _ in info.ListFields()))

if failures:
    print("%d check(s) failed" % len(failures), file=sys.stderr)
    sys.exit(1)
print("featured_reflection: list, describe and call through v1 and v1alpha: ok (%d files)" % len(files))
