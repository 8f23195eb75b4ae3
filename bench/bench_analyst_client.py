"""bench_analyst_client.py: latency of the analysts' clients against one taca-featured on 127.0.0.1:
the Python client (taca_client: one process, one channel, calls in a loop) beside the C command line
(`taca query --server`: one process per question, so its figure includes start-up, connecting and
the Info call it makes first). Questions: search by caption (the server encodes it), search by
vector, lookup of 1 and of 64 keys (with captions and metadata).

The store comes from tests/integration/make_analyst_store.py (N samples, the tiny fixture model), so
absolute figures say more about overheads than about search over a large store (bench_search.py).

usage: /usr/bin/python3 bench/bench_analyst_client.py [--build build] [--n 2000] [--reps 200]
       (PYTHONPATH is set from --build; prints a table and one JSON line)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ap = argparse.ArgumentParser()
ap.add_argument("--build", default="build")
ap.add_argument("--n", type=int, default=2000)
ap.add_argument("--reps", type=int, default=200)
ap.add_argument("--cli-reps", type=int, default=30)
a = ap.parse_args()
src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
build = os.path.abspath(a.build)
bin_dir, fix = os.path.join(build, "bin"), os.path.join(src, "tests", "fixtures")
sys.path.insert(0, os.path.join(build, "clients", "python"))
import numpy as np  # noqa: E402
from taca_client import Client  # noqa: E402

tmp = tempfile.mkdtemp(prefix="taca-bench-analyst-")
subprocess.run([sys.executable, os.path.join(src, "tests", "integration", "make_analyst_store.py"), bin_dir, fix, tmp,
                str(a.n)], check=True)
model = os.path.join(fix, "clip", "hf_gelu_f16")
ports = os.path.join(tmp, "ports")
srv = subprocess.Popen([os.path.join(bin_dir, "taca-featured"), "--db", os.path.join(tmp, "db"), "--listen",
                        "127.0.0.1:0", "--port-file", ports, "--log", os.path.join(tmp, "log"), "--threads", "2",
                        "--model", "tiny=" + model])
try:
    for _ in range(400):
        if os.path.exists(ports) and "grpc=" in open(ports).read():
            break
        time.sleep(0.05)
    addr = "127.0.0.1:" + [l.split("=")[1] for l in open(ports).read().split() if l.startswith("grpc=")][0]
    c = Client(addr)
    keys1 = ["%09d" % 7]
    keys64 = ["%09d" % i for i in range(0, 64 * 3, 3)]
    vec = c.get([5], fields=("tiny:image",), as_f32=True)["embeddings"]["tiny:image"][0]

    def timed(fn, reps):
        fn()  # warm
        t = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            t.append((time.perf_counter() - t0) * 1e3)
        t.sort()
        return {"p50_ms": round(statistics.median(t), 3), "p90_ms": round(t[int(0.9 * (len(t) - 1))], 3),
                "mean_ms": round(statistics.fmean(t), 3)}

    taca = os.path.join(bin_dir, "taca")

    def cli(*args):
        return lambda: subprocess.run([taca, "query", "--server", addr] + list(args), check=True,
                                      stdout=subprocess.DEVNULL)

    rows = [
        ("search by caption, k=10", timed(lambda: c.search(text="a small red circle", model="tiny", k=10), a.reps),
         timed(cli("search", "--model", "tiny", "--caption", "a small red circle", "-k", "10"), a.cli_reps)),
        ("search by vector, k=10", timed(lambda: c.search(vector=vec, model="tiny", k=10), a.reps), None),
        ("lookup 1 key (caption, metadata)", timed(lambda: c.lookup(keys1), a.reps),
         timed(cli("lookup", *keys1), a.cli_reps)),
        ("lookup 64 keys (caption, metadata)", timed(lambda: c.lookup(keys64), a.reps),
         timed(cli("lookup", *keys64), a.cli_reps)),
    ]
    print("store: %d samples, model tiny (16-d); server on %s, 2 threads" % (a.n, addr))
    print("| question | Python client p50 / p90 ms | C CLI (process per call) p50 / p90 ms |")
    print("| --- | --- | --- |")
    for name, py, cl in rows:
        print("| %s | %.2f / %.2f | %s |" % (name, py["p50_ms"], py["p90_ms"],
                                           "%.1f / %.1f" % (cl["p50_ms"], cl["p90_ms"]) if cl else "—"))
    print(json.dumps({name: {"python": py, "cli": cl} for name, py, cl in rows}))
    c.close()
finally:
    srv.terminate()
    srv.wait(timeout=30)
    subprocess.run(["rm", "-rf", tmp])
