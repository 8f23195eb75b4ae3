"""taca_client: a Python client of taca-featured (the taca.v1.FeatureCache gRPC API), for analysts.

    from taca_client import Client, TacaError
    with Client("127.0.0.1:50051", token=None) as c:
        c.info()                                   # the served store: range, models, pixel format
        c.lookup(["000000001"], fields=("captions", "metadata", "old:image"))
        c.get([0, 1, 2], fields=("keys", "old:image"))["embeddings"]["old:image"]   # numpy [3, dim]
        hits = c.search(text="a red circle", model="old", k=10)   # by caption (server's text tower)
        hits.indices, hits.scores, hits.keys, hits.captions
        c.search(vector=v, model="old", with_embeddings=True).embeddings          # neighbours' vectors
        for batch in c.epoch(seed=0, epoch=0, rank=0, world_size=2, batch_size=64, fields=("labels",)):
            ...

Fields are names: "pixels", "tokens", "labels", "keys", "captions", "metadata", and embedding sets
as "MODEL:image" / "MODEL:text". A batch is a dict: "indices" (uint64 array) and one entry per field
(numpy arrays for tokens [n, 77], labels and embeddings; lists for keys, captions (None where none
is stored), metadata (parsed dicts or None) and pixels (bytes as stored; raw crops also decoded as
uint8 [C, S, S] arrays when the codec is raw)); "embeddings" maps "MODEL:modality" to [n, dim]
arrays (float16 as stored, or float32 with as_f32=True) and "present" to boolean masks.

Errors raise TacaError with .code (grpc.StatusCode) and .details (the server's message). Search by
image and the Embed RPC are not in this tree's API yet (search(image=...) raises NotImplementedError).
The message classes come from protoc --python_out at build time (clients/python/CMakeLists.txt).
"""
import json
import os

import grpc
import numpy as np

from . import feature_cache_pb2 as pb

__all__ = ["Client", "TacaError", "SearchHits"]

_SERVICE = "/taca.v1.FeatureCache/"
_MODALITY = {"image": pb.MODALITY_IMAGE, "text": pb.MODALITY_TEXT}
_METRIC = {"ip": pb.METRIC_INNER_PRODUCT, "cosine": pb.METRIC_COSINE}
_PLAIN = ("pixels", "tokens", "labels", "keys", "captions", "metadata")


class TacaError(Exception):
    """A failed call: .code is the grpc.StatusCode, .details the server's one-line message."""

    def __init__(self, code, details):
        super().__init__("%s: %s" % (code.name if hasattr(code, "name") else code, details))
        self.code = code
        self.details = details


class SearchHits:
    """The top-k of one query: scores (float32), indices (uint64), keys, captions (None where none),
    and the neighbours' embeddings [n, dim] float32 when asked for (else None)."""

    def __init__(self, scores, indices, keys, captions, embeddings=None):
        self.scores, self.indices, self.keys, self.captions, self.embeddings = scores, indices, keys, captions, embeddings

    def __len__(self):
        return len(self.indices)

    def __repr__(self):
        return "SearchHits(%d hits: %s)" % (len(self), list(zip(self.keys, np.round(self.scores, 4))))


def _image_bytes(x):
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    with open(x, "rb") as fh:
        return fh.read()


def _fields_proto(fields, as_f32):
    f = pb.Fields(embeddings_as_f32=bool(as_f32))
    for name in fields or ():
        if name in _PLAIN:
            setattr(f, name, True)
            continue
        model, sep, modality = name.rpartition(":")
        if not sep or modality not in _MODALITY or not model:
            raise ValueError("field %r: expected one of %s or MODEL:image / MODEL:text" % (name, ", ".join(_PLAIN)))
        f.embeddings.add(model=model, modality=_MODALITY[modality])
    return f


class Client:
    """One taca-featured server (one shard). token: sent as 'authorization: Bearer TOKEN'.
    tls_ca: a PEM file of trusted roots to connect with TLS. timeout: seconds per call."""

    def __init__(self, address, token=None, timeout=30.0, tls_ca=None, max_message=256 << 20):
        opts = [("grpc.max_receive_message_length", max_message), ("grpc.max_send_message_length", max_message)]
        if tls_ca:
            with open(tls_ca, "rb") as fh:
                creds = grpc.ssl_channel_credentials(root_certificates=fh.read())
            self._channel = grpc.secure_channel(address, creds, options=opts)
        else:
            self._channel = grpc.insecure_channel(address, options=opts)
        self._metadata = (("authorization", "Bearer " + token),) if token else ()
        self._timeout = timeout
        self._info = None

        def unary(method, req, resp):
            return self._channel.unary_unary(_SERVICE + method, request_serializer=req.SerializeToString,
                                             response_deserializer=resp.FromString)

        self._rpc = {
            "Info": unary("Info", pb.InfoRequest, pb.InfoResponse),
            "GetBatch": unary("GetBatch", pb.GetBatchRequest, pb.Batch),
            "Lookup": unary("Lookup", pb.LookupRequest, pb.LookupResponse),
            "Search": unary("Search", pb.SearchRequest, pb.SearchResponse),
            "Embed": unary("Embed", pb.EmbedRequest, pb.EmbedResponse),
            "SetAlias": unary("SetAlias", pb.SetAliasRequest, pb.SetAliasResponse),
        }
        self._stream = self._channel.unary_stream(_SERVICE + "StreamEpoch",
                                                  request_serializer=pb.StreamEpochRequest.SerializeToString,
                                                  response_deserializer=pb.Batch.FromString)

    # ---- plumbing ----
    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, req):
        try:
            return self._rpc[method](req, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise TacaError(e.code(), e.details()) from None

    def _info_msg(self):
        if self._info is None:
            self._info = self._call("Info", pb.InfoRequest())
        return self._info

    def _pixel_format(self):
        i = self._info_msg()
        return i.pixel_format if i.HasField("pixel_format") else None

    def _batch(self, b, fields, ctx=77):
        out = {"indices": np.array(b.indices, dtype=np.uint64)}
        n = len(b.indices)
        fields = tuple(fields or ())
        if "keys" in fields:
            out["keys"] = list(b.keys)
        if "labels" in fields:
            out["labels"] = np.array(b.labels, dtype=np.int32)
        if "tokens" in fields:
            out["tokens"] = np.frombuffer(b.tokens, dtype="<i4").reshape(n, ctx).copy()
        if "captions" in fields:
            out["captions"] = [c if c else None for c in b.captions]
        if "metadata" in fields:
            out["metadata"] = [json.loads(m) if m else None for m in b.metadata]
        if "pixels" in fields:
            out["pixels"] = list(b.pixels)
            pf = self._pixel_format()
            if pf is not None and pf.codec == "raw":
                shape = (pf.channels, pf.size, pf.size)
                out["crops"] = [np.frombuffer(p, dtype=np.uint8).reshape(shape) if p else None for p in b.pixels]
        if b.embeddings:
            out["embeddings"], out["present"] = {}, {}
            for e in b.embeddings:
                name = "%s:%s" % (e.model, "text" if e.modality == pb.MODALITY_TEXT else "image")
                dt = "<f2" if e.dtype == pb.DTYPE_F16 else "<f4"
                out["embeddings"][name] = np.frombuffer(e.data, dtype=dt).reshape(n, e.dim).copy()
                out["present"][name] = np.frombuffer(e.present, dtype=np.uint8).astype(bool)
                out.setdefault("resolved", {})[name] = e.resolved_model or e.model  # an alias's target
        return out

    # ---- the API ----
    def info(self):
        """The served store as a dict (InfoResponse fields: sample_count, index_begin/end, models, ...)."""
        from google.protobuf.json_format import MessageToDict
        self._info = None
        return MessageToDict(self._info_msg(), preserving_proto_field_name=True, including_default_value_fields=True)

    def get(self, indices, fields=("keys",), as_f32=False):
        """The samples at these indices, in that order (a dict of arrays and lists, see the module doc)."""
        idx = [int(i) for i in np.asarray(indices, dtype=np.uint64).reshape(-1)]
        b = self._call("GetBatch", pb.GetBatchRequest(indices=idx, fields=_fields_proto(fields, as_f32)))
        return self._batch(b, fields)

    def lookup(self, keys, fields=("keys", "captions", "metadata"), as_f32=False, allow_missing=False):
        """The samples with these keys, in request order; keys are always returned. With allow_missing,
        unknown keys are skipped and listed under "missing_keys"."""
        if isinstance(keys, str):
            keys = [keys]
        fields = tuple(fields or ()) + (("keys",) if "keys" not in (fields or ()) else ())
        r = self._call("Lookup", pb.LookupRequest(keys=list(keys), fields=_fields_proto(fields, as_f32),
                                                 allow_missing=allow_missing))
        out = self._batch(r.batch, fields)
        out["missing_keys"] = list(r.missing_keys)
        return out

    def search(self, text=None, vector=None, image=None, model=None, k=10, modality="image", metric="ip",
               with_embeddings=False, ann=False, nprobe=0, refine=0, query_model=None, fallback=()):
        """Exact top-k over (model, modality) by caption text(s), query vector(s) or image(s) (encoded
        JPEG/PNG/WebP bytes, or paths to such files; the server embeds them with query_model's
        encoder). One caption, one image or a 1-D vector gives one SearchHits; lists or a 2-D array
        give a list of them. query_model (default: model) names the model the queries come from; it
        must live in model's embedding space (an adapted model's queries against its old model's
        gallery). fallback: further models of the space, a mixed gallery in order of preference.
        ann=True searches through the server's ANN index of the model (taca index), nprobe lists
        (0 = the index's default); k x refine candidates (0 = the index's default) are rescored
        exactly."""
        if model is None:
            raise ValueError("search: model is required")
        if (text is not None) + (vector is not None) + (image is not None) != 1:
            raise ValueError("search: give exactly one of text, vector or image")
        req = pb.SearchRequest(model=model, modality=_MODALITY[modality], k=int(k), metric=_METRIC[metric],
                               with_keys=True, with_captions=True, ann=bool(ann), nprobe=int(nprobe), refine=int(refine),
                               query_model=query_model or "", gallery_fallback=list(fallback))
        if text is not None:
            single = isinstance(text, str)
            req.captions.extend([text] if single else list(text))
        elif image is not None:
            single = isinstance(image, (bytes, bytearray, str, os.PathLike))
            req.images.extend(_image_bytes(x) for x in ([image] if single else list(image)))
        else:
            q = np.asarray(vector, dtype=np.float32)
            single = q.ndim == 1
            req.queries.extend(q.reshape(-1).tolist())
        r = self._call("Search", req)
        hits = []
        for h in r.results:
            hits.append(SearchHits(np.array(h.scores, dtype=np.float32), np.array(h.indices, dtype=np.uint64),
                                   list(h.keys), [c if c else None for c in h.captions] or [None] * len(h.indices)))
        if with_embeddings:
            name = "%s:%s" % (model, modality)
            flat = [int(i) for h in hits for i in h.indices]
            emb = self.get(flat, fields=(name,), as_f32=True)["embeddings"][name] if flat else None
            at = 0
            for h in hits:
                h.embeddings = emb[at:at + len(h)] if emb is not None else np.zeros((0, 0), np.float32)
                at += len(h)
        return hits[0] if single else hits

    def embed(self, images=None, text=None, model=None, normalize=False):
        """Features of new data through the server's encoder of model (an alias resolves on the
        server), in the space of model's stored vectors: images (encoded bytes or file paths) or
        captions. Returns a float32 array [n, dim]; an item the server could not embed raises
        TacaError naming it (the others are in the response, but a partial array is not returned)."""
        if model is None:
            raise ValueError("embed: model is required")
        if (images is None) == (text is None):
            raise ValueError("embed: give exactly one of images or text")
        req = pb.EmbedRequest(model=model, normalize=bool(normalize))
        if images is not None:
            single = isinstance(images, (bytes, bytearray, str, os.PathLike))
            req.images.extend(_image_bytes(x) for x in ([images] if single else list(images)))
        else:
            single = isinstance(text, str)
            req.captions.extend([text] if single else list(text))
        r = self._call("Embed", req)
        if r.errors:
            e = r.errors[0]
            raise TacaError(grpc.StatusCode.INVALID_ARGUMENT, "item %d: %s" % (e.item, e.message))
        out = np.frombuffer(r.data, dtype="<f4").reshape(-1, r.dim).copy()
        return out[0] if single else out

    def set_alias(self, name, target, allow_space_change=False):
        """Points alias name at stored model target on this server (target "" removes it); returns the
        previous target ("" when new). A flip into another embedding space is refused unless
        allow_space_change."""
        r = self._call("SetAlias", pb.SetAliasRequest(name=name, target=target,
                                                       allow_space_change=bool(allow_space_change)))
        self._info = None
        return r.previous_target

    def epoch(self, seed=0, epoch=0, rank=0, world_size=1, batch_size=256, fields=("keys",), drop_last=False,
              as_f32=False, start_batch=0):
        """Iterates rank `rank`'s share of the (seed, epoch) permutation in batches (dicts as get()
        returns, plus "sequence" and "batch_count")."""
        req = pb.StreamEpochRequest(seed=seed, epoch=epoch, rank=rank, world_size=world_size,
                                    batch_size=batch_size, fields=_fields_proto(fields, as_f32),
                                    drop_last=drop_last, start_batch=start_batch)
        try:
            for b in self._stream(req, metadata=self._metadata):
                out = self._batch(b, fields)
                out["sequence"], out["batch_count"] = b.sequence, b.batch_count
                yield out
        except grpc.RpcError as e:
            raise TacaError(e.code(), e.details()) from None
