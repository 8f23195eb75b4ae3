#!/usr/bin/env python3
"""downstream.py: the demo's downstream module, a client of taca-featured that never changes.

It stands for the many modules a team has built on the old model's embeddings. `train` fits its
head once, on the OLD model's features of the first half of the served samples (a ridge
classifier on L2-normalised features, closed form: deterministic), and saves it. `watch` then
classifies the second half again and again through a served name (e.g. the alias "current"),
recording for every pass which stored model answered (each GetBatch reports the alias's target)
and the head's accuracy, until the stop file appears and two more passes are done. Flipping the
alias from old to the adapted model while it runs is the hot swap: the head keeps working, with no
restart and no failed call, because the adapted model lives in the old model's space.

  downstream.py --server ADDR --head HEAD.npz train --model old
  downstream.py --server ADDR --head HEAD.npz watch --model current --out RESULT.json --stop FILE \
      [--ready FILE]

Needs the Python client (clients/python, built into build/clients/python) and NumPy.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

import taca_client

BATCH = 256


def fetch(c, model, idx):
    """Labels, L2-normalised features of `model` and the stored model that answered, per batch."""
    feats, labels, answered = [], [], []
    name = model + ":image"
    for a in range(0, len(idx), BATCH):
        b = c.get(idx[a:a + BATCH], fields=(name, "labels"), as_f32=True)
        x = b["embeddings"][name].astype(np.float64)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        feats.append(x)
        labels.append(np.asarray(b["labels"]))
        answered.append(b["resolved"][name])
    return np.concatenate(feats), np.concatenate(labels), answered


def split(c):
    info = c.info()
    lo, hi = int(info["index_begin"]), int(info["index_end"])
    idx = list(range(lo, hi))
    half = len(idx) // 2
    return idx[:half], idx[half:]


def train(c, a):
    tr, te = split(c)
    x, y, _ = fetch(c, a.model, tr)
    classes = np.unique(y[y >= 0])
    onehot = (y[:, None] == classes[None, :]).astype(np.float64)
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.linalg.solve(xb.T @ xb + 1e-2 * np.eye(xb.shape[1]), xb.T @ onehot)
    acc = float(np.mean(classes[np.argmax(xb @ w, axis=1)] == y))
    np.savez(a.head, w=w, classes=classes, test=np.array(te, dtype=np.uint64), model=a.model)
    print(f"downstream: head trained on '{a.model}' features of {len(tr)} samples ({len(classes)} classes, "
          f"train accuracy {acc:.3f})", file=sys.stderr)


def watch(c, a):
    h = np.load(a.head)
    w, classes, te = h["w"], h["classes"], [int(i) for i in h["test"]]
    passes, extra, t0 = [], None, time.time()
    while extra is None or extra > 0:
        try:
            x, y, answered = fetch(c, a.model, te)
            err = None
        except taca_client.TacaError as e:  # a failed call is what the swap must never cause
            err = f"{e.code}: {e.details}"
        if err:
            passes.append({"t": round(time.time() - t0, 3), "error": err})
            break
        pred = classes[np.argmax(np.hstack([x, np.ones((len(x), 1))]) @ w, axis=1)]
        passes.append({"t": round(time.time() - t0, 3), "models": sorted(set(answered)),
                       "accuracy": float(np.mean(pred == y))})
        time.sleep(0.05)  # a client's steady polling, not a benchmark
        if a.ready and len(passes) == 2:
            open(a.ready, "w").close()
        if extra is None and os.path.exists(a.stop):
            extra = 2
        elif extra is not None:
            extra -= 1
    def side(m):
        acc = [p["accuracy"] for p in passes if p.get("models") == [m]]
        return {"passes": len(acc), "accuracy": acc[-1] if acc else None}
    models = sorted({m for p in passes for m in p.get("models", [])})
    out = {"served_name": a.model, "head_trained_on": str(h["model"]), "test_samples": len(te),
           "failed_calls": sum(1 for p in passes if "error" in p), "passes": passes,
           "by_model": {m: side(m) for m in models}}
    with open(a.out, "w") as fh:
        json.dump(out, fh, indent=1, sort_keys=True)
    for m in models:
        s = out["by_model"][m]
        print(f"downstream: through '{a.model}' -> '{m}': {s['passes']} passes, old head accuracy "
              f"{s['accuracy']:.3f}" if s["accuracy"] is not None else f"downstream: '{m}': mixed passes only",
              file=sys.stderr)
    return 1 if out["failed_calls"] else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--server", required=True)
    p.add_argument("--head", required=True)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--model", required=True)
    wt = sub.add_parser("watch")
    wt.add_argument("--model", required=True)
    wt.add_argument("--out", required=True)
    wt.add_argument("--stop", required=True)
    wt.add_argument("--ready")
    a = p.parse_args()
    with taca_client.Client(a.server) as c:
        return train(c, a) or 0 if a.cmd == "train" else watch(c, a)


if __name__ == "__main__":
    sys.exit(main())
