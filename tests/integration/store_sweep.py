"""store_sweep.py: the seeded corruption sweep of test_store_integrity.sh.

Flips one random bit (half of them inside LMDB's branch, leaf and meta pages, half anywhere) or
truncates data.mdb of copies of a small store, then asks the CLI (offline) and, for a few copies, a
taca-featured on the copy (through `taca query --server`). Every answer must be the clean store's
answer, or a failure on one line that does not claim "not found" / "not stored"; never a signal.
usage: store_sweep.py BIN_DIR STORE_DIR WORK_DIR SEED FLIPS TRUNCATIONS SERVER_CASES"""
import os, random, shutil, signal, subprocess, sys, time

bin_dir, store, work, seed, n_flip, n_trunc, n_server = sys.argv[1:8]
seed, n_flip, n_trunc, n_server = int(seed), int(n_flip), int(n_trunc), int(n_server)
taca = os.path.join(bin_dir, "taca")
rng = random.Random(seed)
PAGE = 4096
problems = []


def run(args, timeout=60):
    p = subprocess.run(args, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")




def queries(db, out):
    """(name, argv, output file or None) for one store copy."""
    return [
        ("info", [taca, "query", "--db", db, "info", "--hash"], None),
        ("lookup", [taca, "query", "--db", db, "lookup"] + KEYS, None),
        ("export-image", [taca, "query", "--db", db, "export", "--model", MODEL, "--modality", "image",
                          "--out", out + "-i.npy"], out + "-i.npy"),
        ("export-text", [taca, "query", "--db", db, "export", "--model", MODEL, "--modality", "text",
                         "--out", out + "-t.npy"], out + "-t.npy"),
        ("search", [taca, "query", "--db", db, "search", "--model", MODEL, "--modality", "image", "--vectors",
                    os.path.join(work, "q.npy"), "-k", "5"], None),
    ]


def answer(argv, outfile):
    if outfile and os.path.exists(outfile):
        os.remove(outfile)
    rc, so, se = run(argv)
    data = so + (open(outfile, "rb").read() if outfile and rc == 0 and os.path.exists(outfile) else b"")
    db = argv[argv.index("--db") + 1]
    data = data.replace(db.encode(), b"STORE")
    return rc, data.replace(outfile.encode(), b"OUT") if outfile else data, se


def judge(what, rc, data, se, clean):
    if rc < 0 or rc >= 128:
        problems.append(f"{what}: killed by signal / exit {rc}: {se.strip()[:300]}")
    elif rc == 0:
        if data != clean:
            a, b = data.decode(errors="replace").splitlines(), clean.decode(errors="replace").splitlines()
            diff = [(x, y) for x, y in zip(a, b) if x != y][:1]
            problems.append(f"{what}: exit 0 with an answer that differs from the clean store's: {diff}")
    else:
        lines = [l for l in se.splitlines() if l.strip()]
        if len(lines) != 1:
            problems.append(f"{what}: {len(lines)} lines of error: {se.strip()[:300]}")
        elif "not found" in se or "not stored" in se or "Sanitizer" in se:
            problems.append(f"{what}: damage reported as a miss: {se.strip()[:300]}")
    return rc


def structure_pages(path):
    """Page numbers of LMDB meta, branch and leaf pages (header: pgno u64 at 0, flags u16 at 10)."""
    b = open(path, "rb").read()
    pages = []
    for p in range(len(b) // PAGE):
        pg = b[p * PAGE:(p + 1) * PAGE]
        if int.from_bytes(pg[0:8], "little") == p and int.from_bytes(pg[10:12], "little") & 0x0b:
            pages.append(p)
    return pages, len(b)


# the clean answers
import json
info = json.loads(subprocess.run([taca, "query", "--db", store, "--json", "info"], capture_output=True,
                                 check=True).stdout)
MODEL = info["models"][0]["name"]
dim = info["models"][0]["image_dim"]
import numpy as np
np.save(os.path.join(work, "q.npy"), np.random.default_rng(seed).standard_normal((2, dim)).astype(np.float32))
rc, so, _ = run([taca, "query", "--db", store, "--json", "export", "--model", MODEL, "--modality", "image",
                 "--out", os.path.join(work, "all.npy")])
KEYS = [l.split()[0] for l in subprocess.run(["tar", "-tf", os.path.join(work, "data.tar")],
                                              capture_output=True, text=True).stdout.split() if l.endswith(".txt")]
KEYS = [k[:-4] for k in KEYS][:6]
clean = {}
for name, argv, outfile in queries(store, os.path.join(work, "clean")):
    rc, data, se = answer(argv, outfile)
    assert rc == 0, (name, se)
    clean[name] = data
rc, _, se = run([taca, "verify", "--db", store])
assert rc == 0, se

pages, size = structure_pages(os.path.join(store, "data.mdb"))
outcomes = {"same": 0, "error": 0}
detected_copies = []
for case in range(n_flip + n_trunc):
    copy = os.path.join(work, f"c{case}")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(store, copy)
    path = os.path.join(copy, "data.mdb")
    with open(path, "r+b") as f:
        if case < n_flip:
            if case % 2 == 0 and pages:
                off = rng.choice(pages) * PAGE + rng.randrange(PAGE)
            else:
                off = rng.randrange(size)
            f.seek(off)
            byte = f.read(1)[0] ^ (1 << rng.randrange(8))
            f.seek(off)
            f.write(bytes([byte]))
            what = f"flip at byte {off}"
        else:
            cut = rng.randrange(size)
            f.truncate(cut)
            what = f"truncated to {cut} bytes"
    any_error = False
    for name, argv, outfile in queries(copy, os.path.join(work, f"o{case}")):
        rc, data, se = answer(argv, outfile)
        if judge(f"{what}: {name}", rc, data, se, clean[name]) != 0:
            any_error = True
            outcomes["error"] += 1
        else:
            outcomes["same"] += 1
    rc, so, se = run([taca, "verify", "--db", copy])
    if rc < 0 or rc >= 128:
        problems.append(f"{what}: verify killed by signal / exit {rc}")
    elif any_error and rc == 0:
        problems.append(f"{what}: queries failed but verify found nothing")
    if any_error and case < n_flip:
        detected_copies.append((copy, what))
    elif len(detected_copies) < n_server or case >= n_flip:
        pass
    if not any_error:
        shutil.rmtree(copy, ignore_errors=True)

# the server on damaged copies: it starts and answers DATA_LOSS / a clean error, or refuses to start
# with one line; it never dies
for copy, what in detected_copies[:n_server]:
    pf = os.path.join(work, "ports")
    if os.path.exists(pf):
        os.remove(pf)
    srv = subprocess.Popen([os.path.join(bin_dir, "taca-featured"), "--db", copy, "--listen", "127.0.0.1:0",
                            "--port-file", pf, "--threads", "2"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    for _ in range(200):
        if (os.path.exists(pf) and os.path.getsize(pf)) or srv.poll() is not None:
            break
        time.sleep(0.05)
    if srv.poll() is not None:
        err = srv.stderr.read().decode(errors="replace")
        if srv.returncode < 0 or srv.returncode >= 128:
            problems.append(f"server on {what}: died with {srv.returncode} at start: {err[:300]}")
        continue
    port = [l.split("=")[1] for l in open(pf).read().split() if l.startswith("grpc=")][0]
    addr = f"127.0.0.1:{port}"
    for name, argv in [("lookup", [taca, "query", "--server", addr, "lookup"] + KEYS),
                       ("export", [taca, "query", "--server", addr, "export", "--model", MODEL, "--modality",
                                   "image", "--out", os.path.join(work, "s.npy")])]:
        rc, so, se = run(argv)
        if rc != 0 and not ("DATA_LOSS" in se or "corrupt" in se):
            if "not found" in se or "NOT_FOUND" in se or rc >= 128 or rc < 0:
                problems.append(f"server on {what}: {name}: {se.strip()[:300]}")
        if srv.poll() is not None:
            problems.append(f"server on {what}: died during {name} (exit {srv.returncode})")
            break
    if srv.poll() is None:
        srv.send_signal(signal.SIGTERM)
        srv.wait(timeout=30)

print(f"store_sweep: seed {seed}: {n_flip} flips, {n_trunc} truncations, {len(pages)} structure pages of "
      f"{size // PAGE}; answers: {outcomes['same']} equal to the clean store's, {outcomes['error']} clean errors; "
      f"{min(len(detected_copies), n_server)} damaged copies served")
for p in problems:
    print("FAIL:", p)
sys.exit(1 if problems else 0)
