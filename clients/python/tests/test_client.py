"""test_client.py: taca_client against a real taca-featured on 127.0.0.1 serving a store with captions
and metadata (tests/integration/make_analyst_store.py), token-protected, with the model's text tower
loaded. Results are checked against the C command line (`taca query --db`, offline) and the shard
itself, not against hard-coded values."""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest

import grpc
import numpy as np

from taca_client import Client, TacaError

BIN = os.environ["TACA_BIN_DIR"]
FIX = os.environ["TACA_FIXTURES_DIR"]
SRC = os.environ["TACA_SOURCE_DIR"]
TOKEN = "s3cret-analyst"
MODEL_DIR = os.path.join(FIX, "clip", "hf_gelu_f16")


def taca_json(*args):
    out = subprocess.run([os.path.join(BIN, "taca"), "query", "--json"] + list(args), check=True,
                         capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="taca-pyclient-")
        subprocess.run([sys.executable, os.path.join(SRC, "tests", "integration", "make_analyst_store.py"), BIN, FIX,
                        cls.tmp, "24"], check=True)
        cls.db = os.path.join(cls.tmp, "db")
        ports = os.path.join(cls.tmp, "ports")
        cls.server = subprocess.Popen([os.path.join(BIN, "taca-featured"), "--db", cls.db, "--listen", "127.0.0.1:0",
                                       "--port-file", ports, "--log", os.path.join(cls.tmp, "log"), "--threads", "2",
                                       "--token", TOKEN, "--model", "tiny=" + MODEL_DIR])
        for _ in range(400):
            if os.path.exists(ports) and "grpc=" in open(ports).read():
                break
            time.sleep(0.05)
        port = [l.split("=")[1] for l in open(ports).read().split() if l.startswith("grpc=")][0]
        cls.addr = "127.0.0.1:" + port
        cls.c = Client(cls.addr, token=TOKEN)
        # the shard's own captions and metadata, by key
        cls.captions, cls.meta = {}, {}
        with tarfile.open(os.path.join(cls.tmp, "meta.tar")) as t:
            for m in t.getmembers():
                key, ext = m.name.rsplit(".", 1)
                body = t.extractfile(m).read()
                if ext == "txt":
                    cls.captions[key] = body.decode().strip()
                elif ext == "json":
                    try:
                        cls.meta[key] = json.loads(body)
                    except ValueError:
                        cls.meta[key] = None

    @classmethod
    def tearDownClass(cls):
        cls.c.close()
        cls.server.terminate()
        cls.server.wait(timeout=30)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_info(self):
        i = self.c.info()
        self.assertEqual(int(i["sample_count"]), 24)
        self.assertEqual([m["name"] for m in i["models"]], ["tiny"])
        self.assertTrue(i["models"][0]["caption_search"])

    def test_token_required(self):
        with Client(self.addr) as anon:
            with self.assertRaises(TacaError) as cm:
                anon.info()
        self.assertEqual(cm.exception.code, grpc.StatusCode.UNAUTHENTICATED)
        self.assertIn("Bearer", cm.exception.details)

    def test_errors_carry_status_and_message(self):
        with self.assertRaises(TacaError) as cm:
            self.c.search(text="a red circle", model="nope")
        self.assertEqual(cm.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertIn("nope", cm.exception.details)
        with self.assertRaises(TacaError) as cm:
            self.c.lookup(["no-such-key"])
        self.assertEqual(cm.exception.code, grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(TacaError) as cm:
            self.c.get([10 ** 6])
        self.assertEqual(cm.exception.code, grpc.StatusCode.INVALID_ARGUMENT)

    def test_lookup_captions_metadata_vectors(self):
        keys = sorted(self.captions)[:6]
        r = self.c.lookup(keys, fields=("captions", "metadata", "labels", "tiny:image"), as_f32=True)
        self.assertEqual(r["keys"], keys)
        self.assertEqual(r["captions"], [self.captions[k] for k in keys])
        self.assertEqual(r["metadata"], [self.meta[k] for k in keys])  # the malformed one is None
        self.assertIsNone(r["metadata"][3])
        cli = {o["key"]: o for o in taca_json("--db", self.db, "lookup", *keys)}
        for i, k in enumerate(keys):
            self.assertEqual(int(r["indices"][i]), cli[k]["index"])
            self.assertEqual(int(r["labels"][i]), cli[k]["label"])
            np.testing.assert_allclose(r["embeddings"]["tiny:image"][i], cli[k]["vectors"]["tiny"]["image"], rtol=0,
                                       atol=1e-6)
        r = self.c.lookup(["no-such-key", keys[0]], allow_missing=True)
        self.assertEqual(r["keys"], [keys[0]])
        self.assertEqual(r["missing_keys"], ["no-such-key"])

    def test_get_matches_export(self):
        npy = os.path.join(self.tmp, "img.npy")
        subprocess.run([os.path.join(BIN, "taca"), "query", "--db", self.db, "export", "--model", "tiny", "--modality",
                        "image", "--out", npy, "--dtype", "stored"], check=True, capture_output=True)
        ref = np.load(npy)
        r = self.c.get(range(24), fields=("keys", "tokens", "pixels", "tiny:image", "tiny:text"))
        self.assertEqual(r["embeddings"]["tiny:image"].dtype, np.float16)
        np.testing.assert_array_equal(r["embeddings"]["tiny:image"], ref)
        self.assertTrue(r["present"]["tiny:text"].all())
        self.assertEqual(r["tokens"].shape, (24, 77))
        self.assertEqual(r["crops"][0].shape, (3, 40, 40))
        self.assertEqual(r["keys"], ["%09d" % i for i in range(24)])

    def test_search_matches_cli(self):
        texts = ["a small red circle", "a large blue square"]
        hits = self.c.search(text=texts, model="tiny", k=5, with_embeddings=True)
        cli = taca_json("--db", self.db, "search", "--model", "tiny", "--modality", "image", "--caption", texts[0],
                        "--caption", texts[1], "--text-model", MODEL_DIR, "-k", "5")
        self.assertEqual(len(hits), 2)
        for h, ref in zip(hits, cli):
            self.assertEqual([int(i) for i in h.indices], [o["index"] for o in ref["results"]])
            self.assertEqual(h.keys, [o["key"] for o in ref["results"]])
            self.assertEqual(h.captions, [o["caption"] for o in ref["results"]])
            np.testing.assert_allclose(h.scores, [o["score"] for o in ref["results"]], rtol=1e-4, atol=1e-4)
            self.assertEqual(h.embeddings.shape, (5, 16))
        # by vector: the stored embedding of sample 7 finds itself first (cosine)
        v = self.c.get([7], fields=("tiny:image",), as_f32=True)["embeddings"]["tiny:image"][0]
        h = self.c.search(vector=v, model="tiny", k=3, metric="cosine", with_embeddings=True)
        self.assertEqual(int(h.indices[0]), 7)
        self.assertAlmostEqual(float(h.scores[0]), 1.0, places=3)
        np.testing.assert_allclose(h.embeddings[0], v, atol=1e-6)

    def test_embed_and_search_by_image(self):
        imgs = sorted(os.path.join(FIX, "images", f) for f in os.listdir(os.path.join(FIX, "images"))
                      if f.endswith(".png"))[:3]
        out = os.path.join(self.tmp, "emb.npy")
        subprocess.run([os.path.join(BIN, "taca"), "embed", "--model", MODEL_DIR, "--images"] + imgs + ["--out", out],
                       check=True, capture_output=True)
        y = self.c.embed(images=imgs, model="tiny")
        np.testing.assert_array_equal(y, np.load(out))  # one forward of the same rows: the same bits
        t = self.c.embed(text=["a small red circle"], model="tiny")
        self.assertEqual(t.shape, (1, 16))
        with open(imgs[0], "rb") as fh:
            by_bytes = self.c.search(image=fh.read(), model="tiny", k=4)
        by_vec = self.c.search(vector=y[0], model="tiny", k=4)
        self.assertEqual(list(by_bytes.indices), list(by_vec.indices))
        with self.assertRaises(TacaError) as e:
            self.c.embed(images=[b"not an image"], model="tiny")
        self.assertIn("item 0", e.exception.details)

    def test_alias(self):
        self.assertEqual(self.c.set_alias("current", "tiny"), "")
        info = self.c.info()
        self.assertEqual([(a["name"], a["target"]) for a in info["aliases"]], [("current", "tiny")])
        b = self.c.get([3], fields=("current:image",), as_f32=True)
        self.assertEqual(b["resolved"]["current:image"], "tiny")
        ref = self.c.get([3], fields=("tiny:image",), as_f32=True)["embeddings"]["tiny:image"]
        np.testing.assert_array_equal(b["embeddings"]["current:image"], ref)
        with self.assertRaises(TacaError) as e:
            self.c.set_alias("tiny", "tiny")
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(self.c.set_alias("current", ""), "tiny")

    def test_epoch_shares(self):
        seen = []
        for rank in range(2):
            batches = list(self.c.epoch(seed=3, epoch=1, rank=rank, world_size=2, batch_size=5, fields=("keys",)))
            self.assertEqual([b["sequence"] for b in batches], list(range(len(batches))))
            self.assertTrue(all(b["batch_count"] == len(batches) for b in batches))
            seen += [int(i) for b in batches for i in b["indices"]]
        self.assertEqual(sorted(seen), list(range(24)))


if __name__ == "__main__":
    unittest.main()
