#!/usr/bin/env bash
# test_ablations.sh: deploy/ablations.sh (what `make ablations` runs) at its smallest budget, end to
# end, on tiny models trained on the spot and tiny data:
#  1. the pieces it stands on: `taca synth --motion` (whole sequences, labels by direction, refusals),
#     `taca eval --split-group` (no sequence split across train and test), and the downstream modules
#     of deploy/ablations/modules.py on synthetic features whose answer is known;
#  2. one run with --budget 0.5: the plan is reduced (and says so), every planned run finishes, the
#     JSON holds each setting's figures (finite, in range), the four module kinds and the re-tuning
#     baseline, the HTML its tables and plots, and no process of it survives;
#  3. usage: a folder it did not make and a bad --budget are refused with exit 2.
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# 1a. the motion set
rc=0; "$bin/taca" synth --out "$tmp/m" --n 12 --motion 8 2> "$tmp/err" || rc=$?
[ "$rc" = 2 ] && grep -q "multiples of 8" "$tmp/err" || fail "--motion 8 --n 12 was not refused with exit 2 ($rc)"
rc=0; "$bin/taca" synth --out "$tmp/m" --n 16 --motion 1 2> "$tmp/err" || rc=$?
[ "$rc" = 2 ] || fail "--motion 1 was not refused with exit 2 ($rc)"
"$bin/taca" synth --out "$tmp/m" --n 64 --start 800 --motion 8 --format folder --size 32
"$bin/taca" synth --out "$tmp/m2" --n 64 --start 800 --motion 8 --format folder --size 32
cmp -s "$tmp/m/captions.tsv" "$tmp/m2/captions.tsv" && diff -rq "$tmp/m/images" "$tmp/m2/images" > /dev/null ||
  fail "the motion set is not deterministic"
"$py" - "$tmp/m" <<'PY' || fail "the motion set's sequences are not whole"
import hashlib, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1] + "/captions.tsv")]
labels = [int(r[2]) for r in rows]
assert set(labels) <= {0, 1, 2, 3}, labels
for s in range(0, len(rows), 8):
    assert len(set(labels[s:s + 8])) == 1, ("a sequence changes direction", s, labels[s:s + 8])
    frames = {hashlib.sha1(open(sys.argv[1] + "/" + r[0], "rb").read()).hexdigest() for r in rows[s:s + 8]}
    assert len(frames) == 8, "frames of a sequence repeat (the shape does not move)"
assert len(set(labels)) > 1, "every sequence moves the same way"
PY
echo "  taca synth --motion: whole sequences, one direction each, deterministic, bad counts refused"

# 1b. the downstream modules on features with a known answer
PYTHONPATH=$src/deploy/ablations "$py" - <<'PY' || fail "the downstream modules"
import numpy as np, modules as M
rng = np.random.default_rng(0)
n, d, c = 600, 16, 4
centres = rng.normal(0, 3, (c, d))
y = rng.integers(0, c, n)
x = centres[y] + rng.normal(0, 1, (n, d))
tr, te = slice(0, 400), slice(400, n)
for kind in ("linear", "mlp", "knn"):
    m = M.fit(kind, x[tr], y[tr])
    acc = M.score(m, x[te], y[te]).mean()
    assert acc > 0.9, (kind, acc)
    rot = np.linalg.qr(rng.normal(size=(d, d)))[0]  # another space: a module fitted on x must fail on it
    assert M.score(m, x[te] @ rot, y[te]).mean() < 0.6, (kind, "does not depend on its features")
# sequences: direction is the sign of a drift along one axis per class pair; one frame alone says nothing
ns, T = 300, M.FRAMES
lab = rng.integers(0, 4, ns)
base = rng.normal(0, 1, (ns, 1, d))
drift = np.zeros((ns, T, d))
t = np.linspace(-1, 1, T)[None, :]
drift[:, :, 0] = np.where(lab[:, None] == 0, t, np.where(lab[:, None] == 1, -t, 0)) * 2
drift[:, :, 1] = np.where(lab[:, None] == 2, t, np.where(lab[:, None] == 3, -t, 0)) * 2
seq = base + drift + rng.normal(0, 0.2, (ns, T, d))
xf = seq.reshape(-1, d)
yf = np.repeat(lab, T)
g = np.repeat(np.arange(ns), T)
cut = 200 * T
m = M.fit("temporal", xf[:cut], yf[:cut], g[:cut])
acc = M.score(m, xf[cut:], yf[cut:], g[cut:]).mean()
assert acc > 0.9, ("temporal", acc)
shuffled = M.score(m, xf[cut:][::-1], yf[cut:][::-1], g[cut:]).mean()  # frames reversed: directions swap
assert shuffled < 0.5, ("temporal ignores frame order", shuffled)
lin = M.fit("linear", xf[:cut], yf[:cut])  # one frame at a time cannot tell the direction
assert M.score(lin, xf[cut:], yf[cut:]).mean() < 0.6
PY
echo "  downstream modules: learn separable data, fail on another space; temporal reads frame order"

# 2. the smallest budget, end to end (models pretrained on the spot)
export ABL_TRAIN=96 ABL_MOTION_TRAIN=64 ABL_EVAL=160 ABL_MOTION_EVAL=160 ABL_BATCH=16 ABL_MAX_STEPS=6 ABL_MIN_STEPS=3 \
  ABL_SEEDS=2 DEMO_PRETRAIN_STEPS=2 DEMO_PRETRAIN_SYNTH=128 DEMO_PRETRAIN_EVAL=32 DEMO_PRETRAIN_BATCH=32 TACA_BIN_DIR=$bin
out=$tmp/abl
tagged() {
  local f
  for f in /proc/[0-9]*/environ; do
    { tr '\0' '\n' < "$f"; } 2>/dev/null | grep -qx "TACA_LIFECYCLE_TAG=$1" && { f=${f#/proc/}; echo "${f%/environ}"; }
  done
  return 0
}
TACA_LIFECYCLE_TAG=abl "$src/deploy/ablations.sh" "$out" --budget 0.5 > "$tmp/abl.log" 2>&1 ||
  { tail -30 "$tmp/abl.log"; fail "deploy/ablations.sh --budget 0.5 failed"; }
left=""
for _ in $(seq 50); do left=$(tagged abl); [ -z "$left" ] && break; sleep 0.1; done
[ -z "$left" ] || fail "processes of deploy/ablations.sh survive: $left"
"$py" - "$out" <<'PY' || { tail -30 "$tmp/abl.log"; fail "ablations.json"; }
import json, math, os, sys
out = sys.argv[1]
r = json.load(open(os.path.join(out, "ablations.json")))
plan = json.load(open(os.path.join(out, "plan.json")))
runs = open(os.path.join(out, "runs.tsv")).read().splitlines()
assert r["plan"]["reductions"], "a 0.5-minute budget must reduce the plan and say so"
assert 2 <= len(r["plan"]["settings"]) < 14, r["plan"]["settings"]
assert r["plan"]["settings"][0] == "base"
assert len(r["runs"]) == len(runs) == len(plan["settings"]) * plan["seeds"], (len(r["runs"]), len(runs))
assert set(r["modules"]) == {"linear", "mlp", "knn", "temporal"}, r["modules"].keys()
for k, m in r["modules"].items():
    for f in ("old_on_old", "retuned_on_new"):
        assert 0 <= m[f] <= 1, (k, f, m[f])
    assert m["retune_cost"]["labelled_samples"] > 0 and m["retune_cost"]["total_s"] > 0
for s, v in r["settings"].items():
    for f in ("old_head_adapted", "negative_flips", "t2i_r1", "cosine"):
        x = v[f]["mean"]
        assert x is not None and math.isfinite(x) and -1 <= x <= 1, (s, f, x)
    assert v["trainable"]["mean"] > v["adapter_params"]["mean"] > 0, (s, v["trainable"], v["adapter_params"])
    assert v["train_s"]["mean"] > 0
    for k in r["modules"]:
        assert 0 <= v["modules"][k]["accuracy"]["mean"] <= 1
# each setting trained what it says: LoRA runs carry LoRA, layer ranges their blocks
for x in r["runs"]:
    if "--peft" in x["flags"]:
        assert x["peft"].startswith("lora"), x
    if "--adapter-layers" in x["flags"]:
        assert x["layers"] == x["flags"][x["flags"].index("--adapter-layers") + 1], x
tp = {s: v["trainable"]["mean"] for s, v in r["settings"].items()}
assert "base" in tp and len(set(tp.values())) > 1 or len(tp) == 1, tp  # settings differ in what they train
b = r["baseline"]
assert b and b["taca"]["train_s"] > 0 and b["mean_retune_s"] > 0 and b["break_even_modules"] >= 1, b
# the motion store's split keeps sequences whole
import numpy as np
ref = os.path.join(out, "reference", "motion")
tr, te = np.load(ref + "/train_index.npy") // 8, np.load(ref + "/test_index.npy") // 8
assert len(te) and len(tr) and not set(tr.tolist()) & set(te.tolist()), "a sequence is split"
h = open(os.path.join(out, "report.html")).read()
for needle in ("Every setting", "Downstream modules of several kinds", "<svg", "re-tuned on new", "Reduced to fit"):
    assert needle in h, needle
PY
grep -q "reduced:" "$tmp/abl.log" || fail "the plan's reductions are not printed"
echo "  --budget 0.5: reduced plan ($(wc -l < "$out/runs.tsv") runs), JSON and HTML complete, nothing left running"

# 3. usage
mkdir -p "$tmp/mine"; echo keep > "$tmp/mine/file"
rc=0; "$src/deploy/ablations.sh" "$tmp/mine" --budget 1 > /dev/null 2> "$tmp/err" || rc=$?
[ "$rc" = 2 ] && [ -f "$tmp/mine/file" ] && grep -q "not made by" "$tmp/err" || fail "a foreign folder was not refused (exit $rc)"
rc=0; "$src/deploy/ablations.sh" "$out" --budget zero 2> "$tmp/err" || rc=$?
[ "$rc" = 2 ] && grep -q "budget" "$tmp/err" || fail "--budget zero was not refused with exit 2 ($rc)"
echo "  a foreign folder and a bad --budget: exit 2"
echo "PASS"
