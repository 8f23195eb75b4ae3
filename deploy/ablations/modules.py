"""modules.py: the downstream modules of the ablations, the users' code that sits on embeddings.

Each kind is fitted once on the OLD model's features of a train split and then applied, unchanged,
to other features of the test split (the adapted new encoder's: the hot-plug upgrade; or the old
ones: the baseline). The reviewers' alternative, re-tuning each module on the new model's own
features, is the same fit on new features. Deterministic: full-batch training from a seeded start.

  linear    multinomial logistic regression (inputs standardised by train statistics that belong
            to the module), full-batch Adam
  mlp       two layers (hidden 128, ReLU), the same training
  knn       k = 10 nearest neighbours by cosine in the train split's gallery, majority vote (ties:
            the nearer neighbour); the gallery stays in the features it was built from
  temporal  sequences of 8 frames (taca synth --motion 8): each frame through a shared layer
            (hidden 32, ReLU), the 8 outputs in order into a linear classifier of the direction

fit(kind, x, y, groups=None) -> module; module.predict(x) -> labels; module.params (trainable
numbers); module.seconds (fit time). For `temporal`, x rows are frames and `groups` the sequence id
of each row (frames of a sequence in order); predict then returns one label per sequence.
Needs NumPy only.
"""
import time

import numpy as np

FRAMES = 8


def _standardise(x):
    mu = x.mean(axis=0)
    sd = x.std(axis=0) + 1e-6
    return mu, sd


def _adam_fit(params, grad_fn, iters, lr):
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    b1, b2 = 0.9, 0.999
    for t in range(1, iters + 1):
        grads = grad_fn(params)
        for i, (p, g) in enumerate(zip(params, grads)):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            p -= lr * (m[i] / (1 - b1 ** t)) / (np.sqrt(v[i] / (1 - b2 ** t)) + 1e-8)
    return params


def _softmax_grad(logits, y):
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    return p / len(y)


class _Net:
    """linear (hidden=0) or a 2-layer MLP over standardised inputs."""

    def __init__(self, x, y, classes, hidden, seed, l2=1e-4, iters=400, lr=0.01):
        self.classes = classes
        yi = np.searchsorted(classes, y)
        self.mu, self.sd = _standardise(x)
        xs = (x - self.mu) / self.sd
        rng = np.random.default_rng(seed)
        d, c = x.shape[1], len(classes)
        if hidden:
            ps = [rng.normal(0, np.sqrt(2 / d), (d, hidden)), np.zeros(hidden),
                  rng.normal(0, np.sqrt(1 / hidden), (hidden, c)), np.zeros(c)]
        else:
            ps = [np.zeros((d, c)), np.zeros(c)]

        def grads(p):
            if hidden:
                h = np.maximum(xs @ p[0] + p[1], 0)
                g = _softmax_grad(h @ p[2] + p[3], yi)
                gh = (g @ p[2].T) * (h > 0)
                return [xs.T @ gh + l2 * p[0], gh.sum(0), h.T @ g + l2 * p[2], g.sum(0)]
            g = _softmax_grad(xs @ p[0] + p[1], yi)
            return [xs.T @ g + l2 * p[0], g.sum(0)]

        self.p = _adam_fit(ps, grads, iters, lr)
        self.hidden = hidden
        self.params = int(sum(q.size for q in self.p))

    def predict(self, x):
        xs = (x - self.mu) / self.sd
        if self.hidden:
            out = np.maximum(xs @ self.p[0] + self.p[1], 0) @ self.p[2] + self.p[3]
        else:
            out = xs @ self.p[0] + self.p[1]
        return self.classes[np.argmax(out, axis=1)]


def _l2n(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class _Knn:
    def __init__(self, x, y, k=10):
        self.g, self.y, self.k = _l2n(x.astype(np.float64)), y, k
        self.classes = np.unique(y)
        self.params = 0  # a gallery, not trained: its cost is the embeddings it holds

    def predict(self, x):
        s = _l2n(x.astype(np.float64)) @ self.g.T
        nn = np.argsort(-s, axis=1, kind="stable")[:, :self.k]
        out = np.empty(len(x), dtype=self.y.dtype)
        for i, row in enumerate(nn):
            votes = {}
            for rank, j in enumerate(row):  # majority, ties to the class of the nearer neighbour
                c = self.y[j]
                n, first = votes.get(c, (0, rank))
                votes[c] = (n + 1, first)
            out[i] = max(votes.items(), key=lambda kv: (kv[1][0], -kv[1][1]))[0]
        return out


def sequences(x, y, groups):
    """Rows grouped into [n_seq, FRAMES, dim] in frame order, one label per sequence; sequences
    with a missing frame are dropped."""
    order = np.argsort(groups, kind="stable")
    xs, ys, gs = x[order], y[order], groups[order]
    ids, start, count = np.unique(gs, return_index=True, return_counts=True)
    keep = [(s) for s, c in zip(start, count) if c == FRAMES]
    seq = np.stack([xs[s:s + FRAMES] for s in keep]) if keep else np.zeros((0, FRAMES, x.shape[1]))
    lab = np.array([ys[s] for s in keep], dtype=y.dtype)
    return seq, lab


class _Temporal:
    def __init__(self, x, y, groups, seed, hidden=32, l2=1e-4, iters=400, lr=0.01):
        seq, lab = sequences(x, y, groups)
        self.classes = np.unique(lab)
        yi = np.searchsorted(self.classes, lab)
        flat = seq.reshape(-1, seq.shape[2])
        self.mu, self.sd = _standardise(flat)
        xs = (seq - self.mu) / self.sd  # [n, T, d]
        n, T, d = xs.shape
        c = len(self.classes)
        rng = np.random.default_rng(seed)
        ps = [rng.normal(0, np.sqrt(2 / d), (d, hidden)), np.zeros(hidden),
              rng.normal(0, np.sqrt(1 / (T * hidden)), (T * hidden, c)), np.zeros(c)]

        def grads(p):
            h = np.maximum(xs @ p[0] + p[1], 0)  # [n, T, H], one layer shared by the frames
            hf = h.reshape(n, T * hidden)
            g = _softmax_grad(hf @ p[2] + p[3], yi)
            gh = ((g @ p[2].T).reshape(n, T, hidden)) * (h > 0)
            return [np.einsum("ntd,nth->dh", xs, gh) + l2 * p[0], gh.sum((0, 1)),
                    hf.T @ g + l2 * p[2], g.sum(0)]

        self.p = _adam_fit(ps, grads, iters, lr)
        self.hidden = hidden
        self.params = int(sum(q.size for q in self.p))

    def predict(self, x, groups):
        seq, _ = sequences(x, np.zeros(len(x), dtype=np.int64), groups)
        xs = (seq - self.mu) / self.sd
        h = np.maximum(xs @ self.p[0] + self.p[1], 0).reshape(len(seq), -1)
        return self.classes[np.argmax(h @ self.p[2] + self.p[3], axis=1)]


KINDS = ("linear", "mlp", "knn", "temporal")


def fit(kind, x, y, groups=None, seed=0):
    x = np.asarray(x, dtype=np.float64)
    keep = y >= 0
    t0 = time.perf_counter()
    if kind == "linear":
        m = _Net(x[keep], y[keep], np.unique(y[keep]), 0, seed)
    elif kind == "mlp":
        m = _Net(x[keep], y[keep], np.unique(y[keep]), 128, seed)
    elif kind == "knn":
        m = _Knn(x[keep], y[keep])
    elif kind == "temporal":
        m = _Temporal(x[keep], y[keep], groups[keep], seed)
    else:
        raise ValueError(f"unknown downstream module kind '{kind}' (expected one of {', '.join(KINDS)})")
    m.seconds = time.perf_counter() - t0
    m.kind = kind
    return m


def score(m, x, y, groups=None):
    """Predictions and per-item correctness of module m on features x (labels y): per sample, or
    per sequence for `temporal` (then y is per frame and the sequence's label is its frames')."""
    x = np.asarray(x, dtype=np.float64)
    if m.kind == "temporal":
        _, lab = sequences(x, y, groups)
        pred = m.predict(x, groups)
        return pred == lab
    keep = y >= 0
    return m.predict(x[keep]) == y[keep]
