#!/usr/bin/env python3
"""bench_growth.py: how the store's costs grow with its size (bench/run-growth.sh runs it).

For each size N (default 10^5, 10^6, 10^7) of 512-wide F16 embeddings — clustered synthetic vectors
(N/1000 centres, so that recall means something), no pixels — it measures, one after the other on a
quiet machine:
  build     taca import (rows/s), store bytes per sample, taca index (IVF-Flat up to 10^6, IVF-PQ
            with 128 sub-quantisers above: IVF-Flat keeps an F32 copy, 20 GB at 10^7)
  serve     taca-featured start time (until it listens) and RSS after start (VmRSS, and the
            file-backed part separately: mapped store pages)
  lookup    p50/p99 of Lookups paced at 1000/s (bench_featured --mode lookup-rate)
  search    exact Search latency (one query per call), ANN Search latency and recall@10 against exact
            at two nprobe settings (Python client, 200 queries)
  stream    StreamEpoch GB/s of the embeddings (bench_featured --mode stream)
  shards    the same N split into two stores with their own indexes behind two servers: ANN latency
            (both asked in parallel, top-k merged) and recall@10
Prints a table and writes JSON lines (--json FILE).

Usage: bench_growth.py --bin BUILD/bin --pyclient BUILD/clients/python [--sizes 100000,1000000]
                       [--work DIR] [--json FILE]
"""
import argparse, concurrent.futures, json, os, re, shutil, subprocess, sys, tempfile, time

import numpy as np

DIM = 512
CHUNK = 1_000_000


def run(cmd, **kw):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode:
        sys.exit(f"bench_growth: {' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    return time.perf_counter() - t0, p.stdout + p.stderr


def make_data(work, n, seed=1):
    """Clustered F16 rows in files of CHUNK rows, and 200 queries near the centres."""
    rng = np.random.default_rng(seed)
    c = max(16, n // 1000)
    cent = rng.normal(size=(c, DIM)).astype(np.float32)
    files = []
    for i, a in enumerate(range(0, n, CHUNK)):
        m = min(CHUNK, n - a)
        x = cent[rng.integers(0, c, m)] + 0.5 * rng.normal(size=(m, DIM)).astype(np.float32)
        f = os.path.join(work, f"emb_{i:03d}.npy")
        np.save(f, x.astype(np.float16))
        files.append(f)
    q = cent[rng.integers(0, c, 200)] + 0.5 * rng.normal(size=(200, DIM)).astype(np.float32)
    with open(os.path.join(work, "keys.txt"), "w") as kf:
        for i in range(n):
            kf.write(f"s{i:07d}\n")
    return files, q


def rss_kb(pid):
    out = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssFile", "RssAnon"):
            out[k] = int(v.split()[0])
    return out


class Server:
    def __init__(self, binp, db, log):
        pf = db + ".ports"
        if os.path.exists(pf):
            os.unlink(pf)
        t0 = time.perf_counter()
        self.p = subprocess.Popen([f"{binp}/taca-featured", "--db", db, "--listen", "127.0.0.1:0",
                                   "--port-file", pf, "--max-k", "1000", "--log", log])
        while not (os.path.exists(pf) and os.path.getsize(pf)):
            if self.p.poll() is not None:
                sys.exit(f"bench_growth: taca-featured on {db} did not start (see {log})")
            time.sleep(0.005)
        self.start_s = time.perf_counter() - t0
        self.port = int(re.search(r"grpc=(\d+)", open(pf).read()).group(1))
        self.addr = f"127.0.0.1:{self.port}"
        time.sleep(0.2)
        self.rss = rss_kb(self.p.pid)

    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=60)


def pct(xs, p):
    return float(np.percentile(np.asarray(xs) * 1e3, p))


def search_stats(clients, q, k=10, **kw):
    """Per-query latency (one query per call, all shards asked in parallel) and the merged top-k."""
    lat, res = [], []
    pool = concurrent.futures.ThreadPoolExecutor(len(clients))
    for row in q:
        t0 = time.perf_counter()
        parts = list(pool.map(lambda c: c.search(vector=row, model="clip", k=k, metric="cosine", **kw), clients))
        lat.append(time.perf_counter() - t0)
        s = np.concatenate([h.scores for h in parts])
        ix = np.concatenate([h.indices.astype(np.int64) for h in parts])
        order = np.lexsort((ix, -s))[:k]
        res.append(set(ix[order].tolist()))
    pool.shutdown()
    return lat, res


def recall(a, b):
    return sum(len(x & y) for x, y in zip(a, b)) / sum(len(x) for x in a)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--pyclient", required=True)
    ap.add_argument("--sizes", default="100000,1000000,10000000")
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    sys.path.insert(0, a.pyclient)
    import taca_client

    work = a.work or tempfile.mkdtemp(prefix="taca-growth-")
    out = open(a.json, "w") if a.json else None
    rows = []
    for n in [int(s) for s in a.sizes.split(",")]:
        d = os.path.join(work, f"n{n}")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        files, q = make_data(d, n)
        r = {"n": n, "dim": DIM}
        db = os.path.join(d, "store")
        t, _ = run([f"{a.bin}/taca", "import", "--db", db, "--name", "clip", "--keys", f"{d}/keys.txt",
                    "--quiet", "--npy"] + files)
        r["import_s"] = t
        r["bytes_per_sample"] = os.stat(f"{db}/data.mdb").st_blocks * 512 / n
        kind = ["--kind", "ivfflat"] if n <= 1_000_000 else ["--kind", "ivfpq", "--pq", "128"]
        t, txt = run([f"{a.bin}/taca", "index", "--db", db, "--model", "clip", "--quiet"] + kind)
        r["index_s"] = t
        m = re.search(r"index: (\S+) (\S+) of", txt)
        r["index"] = f"{m.group(1)} {m.group(2)}" if m else "?"
        r["index_bytes"] = os.path.getsize(f"{db}/index-clip-image.faiss")
        nlist = int(re.search(r"IVF(\d+)", txt).group(1))
        srv = Server(a.bin, db, f"{d}/featured.log")
        r["start_s"] = srv.start_s
        r["rss_mb"] = srv.rss.get("VmRSS", 0) / 1024
        r["rss_anon_mb"] = srv.rss.get("RssAnon", 0) / 1024
        _, txt = run([f"{a.bin}/bench_featured", "--server", srv.addr, "--mode", "lookup-rate", "--rate", "1000",
                      "--seconds", "10"])
        m = re.search(r'"p50_ms":\s*([\d.]+).*?"p99_ms":\s*([\d.]+)', txt)
        r["lookup_p50_ms"], r["lookup_p99_ms"] = (float(m.group(1)), float(m.group(2))) if m else (None, None)
        c = taca_client.Client(srv.addr)
        lat, exact = search_stats([c], q)
        r["exact_ms"] = pct(lat, 50)
        for label, nprobe in (("a", max(1, nlist // 64)), ("b", max(1, nlist // 16))):
            lat, got = search_stats([c], q, ann=True, nprobe=nprobe)
            r[f"ann_{label}_nprobe"], r[f"ann_{label}_ms"], r[f"ann_{label}_recall"] = nprobe, pct(lat, 50), recall(exact, got)
        _, txt = run([f"{a.bin}/bench_featured", "--server", srv.addr, "--mode", "stream", "--seconds", "10",
                      "--batch", "1024"])
        m = re.search(r'"MB_per_s":\s*([\d.]+)', txt) or re.search(r"([\d.]+) MB/s", txt)
        r["stream_GBps"] = float(m.group(1)) / 1000 if m else None
        r["rss_after_mb"] = rss_kb(srv.p.pid).get("VmHWM", 0) / 1024
        srv.stop()
        # two shards of the same rows
        half = n // 2
        x0 = np.concatenate([np.load(f, mmap_mode="r") for f in files])
        np.save(f"{d}/h0.npy", x0[:half])
        np.save(f"{d}/h1.npy", x0[half:])
        del x0
        for i, (first, f) in enumerate(((0, "h0"), (half, "h1"))):
            run([f"{a.bin}/taca", "import", "--db", f"{d}/shard{i}", "--name", "clip", "--npy", f"{d}/{f}.npy",
                 "--first-index", str(first), "--shard", f"{i}/2", "--quiet"])
            run([f"{a.bin}/taca", "index", "--db", f"{d}/shard{i}", "--model", "clip", "--quiet",
                 "--nlist", str(max(1, nlist // 2))] + kind)
        s0, s1 = Server(a.bin, f"{d}/shard0", f"{d}/s0.log"), Server(a.bin, f"{d}/shard1", f"{d}/s1.log")
        cs = [taca_client.Client(s0.addr), taca_client.Client(s1.addr)]
        lat, got = search_stats(cs, q, ann=True, nprobe=max(1, nlist // 32))
        r["shards_ann_ms"], r["shards_ann_recall"] = pct(lat, 50), recall(exact, got)
        lat, got = search_stats(cs, q)
        r["shards_exact_ms"] = pct(lat, 50)
        s0.stop()
        s1.stop()
        rows.append(r)
        print(json.dumps(r), flush=True)
        if out:
            out.write(json.dumps(r) + "\n")
            out.flush()
        shutil.rmtree(d, ignore_errors=True)
    print("\n| N | import rows/s | bytes/sample | index | start s | RSS MB (anon) | lookup p50/p99 ms @1000/s | "
          "exact ms | ANN ms / recall@10 (nprobe) | StreamEpoch GB/s | 2 shards ANN ms / recall |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['n']:.0e} | {r['n'] / r['import_s']:.0f} | {r['bytes_per_sample']:.0f} | {r['index']} "
              f"{r['index_s']:.0f} s | {r['start_s']:.2f} | {r['rss_mb']:.0f} ({r['rss_anon_mb']:.0f}) | "
              f"{r['lookup_p50_ms']} / {r['lookup_p99_ms']} | {r['exact_ms']:.1f} | "
              f"{r['ann_a_ms']:.2f} / {r['ann_a_recall']:.3f} ({r['ann_a_nprobe']}), "
              f"{r['ann_b_ms']:.2f} / {r['ann_b_recall']:.3f} ({r['ann_b_nprobe']}) | {r['stream_GBps']} | "
              f"{r['shards_ann_ms']:.2f} / {r['shards_ann_recall']:.3f} |")


if __name__ == "__main__":
    main()
