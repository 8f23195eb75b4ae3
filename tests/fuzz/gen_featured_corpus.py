"""gen_featured_corpus.py: writes the seed corpora of fuzz_featured (tests/fuzz/corpus/featured/: one
file per request, byte 0 the method (0 Info, 1 GetBatch, 2 Lookup, 3 Search, 4 Health.Check,
5 StreamEpoch), then the serialized request) and of fuzz_client_batch (tests/fuzz/corpus/client_batch/:
Batch messages as a server sends them). Deterministic. Needs protoc and python3-protobuf:
    /usr/bin/python3 tests/fuzz/gen_featured_corpus.py
"""
import os
import shutil
import subprocess
import sys
import tempfile

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out = os.path.join(root, "tests", "fuzz", "corpus", "featured")
tmp = tempfile.mkdtemp()
try:
    shutil.copy("/usr/share/grpc-proto/grpc/health/v1/health.proto", os.path.join(tmp, "health_v1.proto"))
    subprocess.check_call(["protoc", "--python_out=" + tmp, "-I" + tmp, "-I" + os.path.join(root, "proto"),
                           "taca/v1/feature_cache.proto", "health_v1.proto"])
    sys.path.insert(0, tmp)
    import health_v1_pb2 as hpb
    from taca.v1 import feature_cache_pb2 as pb

    F = pb.Fields
    E = pb.EmbeddingRef
    all_fields = F(pixels=True, tokens=True, labels=True, keys=True,
                   embeddings=[E(model="old"), E(model="old", modality=pb.MODALITY_TEXT), E(model="wide"),
                               E(model="tiny", modality=pb.MODALITY_TEXT)])
    seeds = {
        "info": (0, pb.InfoRequest()),
        "get_all_fields": (1, pb.GetBatchRequest(indices=[0, 5, 63, 3, 3], fields=all_fields)),
        "get_f32": (1, pb.GetBatchRequest(indices=[1, 2], fields=F(embeddings=[E(model="old")], embeddings_as_f32=True))),
        "get_out_of_range": (1, pb.GetBatchRequest(indices=[64, 2 ** 63])),
        "get_unknown_model": (1, pb.GetBatchRequest(indices=[1], fields=F(embeddings=[E(model="nope")]))),
        "lookup": (2, pb.LookupRequest(keys=["s0000007", "s0000063"], fields=all_fields)),
        "lookup_missing": (2, pb.LookupRequest(keys=["s0000001", "zz", ""], allow_missing=True)),
        "search_vector": (3, pb.SearchRequest(model="old", queries=[0.25] * 32, k=5, with_keys=True)),
        "search_cosine_text": (3, pb.SearchRequest(model="old", modality=pb.MODALITY_TEXT, queries=[0.5, -0.5] * 32,
                                                   k=3, metric=pb.METRIC_COSINE)),
        "search_caption": (3, pb.SearchRequest(model="tiny", captions=["a red circle", "Two &amp; dogs!"], k=4)),
        "health": (4, hpb.HealthCheckRequest()),
        "health_service": (4, hpb.HealthCheckRequest(service="taca.v1.FeatureCache")),
        "stream": (5, pb.StreamEpochRequest(seed=1, epoch=2, rank=1, world_size=3, batch_size=5, fields=all_fields)),
        "stream_resume": (5, pb.StreamEpochRequest(seed=7, rank=0, world_size=1, batch_size=16, start_batch=3,
                                                   drop_last=True)),
    }
    os.makedirs(out, exist_ok=True)
    for name, (method, msg) in sorted(seeds.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes([method]) + msg.SerializeToString())
    print("wrote %d seeds to %s" % (len(seeds), out))

    def emb(model, modality, n, present):
        data = b"".join(((i * 8 + j) % 7 * 0x0400 + 0x3C00).to_bytes(2, "little") for i in range(n) for j in range(8))
        return pb.EmbeddingData(model=model, modality=modality, dtype=pb.DTYPE_F16, dim=8, data=data,
                                present=bytes(present))

    def batch(n, pixel_last=False):
        b = pb.Batch(indices=list(range(10, 10 + n)), tokens=b"".join(
            (49406 if k == 0 else 0).to_bytes(4, "little") for i in range(n) for k in range(77)),
            labels=[i % 3 - 1 for i in range(n)], keys=["s%07d" % (10 + i) for i in range(n)],
            embeddings=[emb("old", pb.MODALITY_IMAGE, n, [1] * n), emb("old", pb.MODALITY_TEXT, n, [i % 2 for i in range(n)])],
            sequence=1, batch_count=3)
        raw = b.SerializeToString()
        pixels = pb.Batch(pixels=[bytes([i]) * (3 * 4 * 4) for i in range(n)]).SerializeToString()
        return raw + pixels if pixel_last else pixels + raw  # pixels after the rest, as taca-featured sends them

    cb = os.path.join(root, "tests", "fuzz", "corpus", "client_batch")
    os.makedirs(cb, exist_ok=True)
    for name, data in [("batch3_tail", batch(3, True)), ("batch3_front", batch(3)), ("batch1_tail", batch(1, True)),
                       ("empty", b"")]:
        with open(os.path.join(cb, name), "wb") as f:
            f.write(data)
    print("wrote 4 seeds to %s" % cb)
finally:
    shutil.rmtree(tmp)
