"""make_analyst_store.py: a small store with captions and img2dataset-style metadata, for the analyst
tests (the Python client, the search page, taca query): `taca synth` shards with a KEY.json member
added after each sample's members ({"url", "width", "height", "n"}; sample 3's is malformed JSON),
then `taca precompute` with the tiny HF fixture model (name "tiny").

usage: make_analyst_store.py BIN_DIR FIXTURES_DIR OUT_DIR [N]   (store in OUT_DIR/db)
"""
import io
import os
import subprocess
import sys
import tarfile


def with_metadata(src_path, dst_path):
    src = tarfile.open(src_path)
    dst = tarfile.open(dst_path, "w")
    prev, n = None, 0

    def add_json(key, n):
        if n == 3:
            body = b'{"url": broken'
        else:
            body = b'{"url": "https://example.invalid/%s.png", "width": 40, "height": 40, "n": %d}' % (key.encode(), n)
        ti = tarfile.TarInfo(key + ".json")
        ti.size = len(body)
        dst.addfile(ti, io.BytesIO(body))

    for m in src.getmembers():
        key = m.name.rsplit(".", 1)[0]
        if prev is not None and key != prev:
            add_json(prev, n)
            n += 1
        dst.addfile(m, src.extractfile(m))
        prev = key
    if prev is not None:
        add_json(prev, n)
    dst.close()


def main():
    bin_dir, fix, out = sys.argv[1], sys.argv[2], sys.argv[3]
    n = sys.argv[4] if len(sys.argv) > 4 else "24"
    taca = os.path.join(bin_dir, "taca")
    os.makedirs(out, exist_ok=True)
    subprocess.run([taca, "synth", "--out", os.path.join(out, "syn"), "--n", n, "--size", "40", "--shards", "1"],
                   check=True, stdout=subprocess.DEVNULL)
    with_metadata(os.path.join(out, "syn", "00000.tar"), os.path.join(out, "meta.tar"))
    subprocess.run([taca, "precompute", "--model", os.path.join(fix, "clip", "hf_gelu_f16"), "--name", "tiny",
                    "--data", os.path.join(out, "meta.tar"), "--db", os.path.join(out, "db"), "--batch-size", "8",
                    "--quiet"], check=True)


if __name__ == "__main__":
    main()
