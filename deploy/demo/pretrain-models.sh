#!/usr/bin/env bash
# pretrain-models.sh: trains the demo's two CLIP models from scratch with `taca pretrain` on the
# synthetic shapes data set, so that "old" and "new" are real trained models and the new one is
# better (see README.md in this folder for how the configurations were chosen and what they reach).
#
#   deploy/demo/pretrain-models.sh OUTDIR        -> OUTDIR/old_clip, OUTDIR/new_clip (HF directories)
#
# Environment: TACA (the taca binary, default build/bin/taca), SIZE (the pixel size the demo's data
# set is written at by `taca synth --size`, default 64: the models see the same CLIP resize of the
# same renders as precompute will), SEED (synthetic data seed for pretraining, default 2: a draw
# apart from the demo store's seed 1), THREADS (default 2), and for quick trial runs STEPS (default
# 600), SYNTH (synthetic training samples, default 100000), EVAL (held-out samples, default 2000),
# BATCH (default 128).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: pretrain-models.sh OUTDIR}
taca=${TACA:-$here/../../build/bin/taca}
size=${SIZE:-64}
seed=${SEED:-2}
threads=${THREADS:-2}
steps=${STEPS:-600}
mkdir -p "$out"
common=(--synth "${SYNTH:-100000}" --synth-seed "$seed" --size "$size" --batch-size "${BATCH:-128}" --lr 1e-3
        --eval "${EVAL:-2000}" --log-every 100 --threads "$threads")
"$taca" pretrain --arch "$here/old_clip.json" --out "$out/old_clip" --steps "$steps" --seed 1 \
  --log-json "$out/old_clip.log.json" "${common[@]}" > "$out/old_clip.summary.json"
"$taca" pretrain --arch "$here/new_clip.json" --out "$out/new_clip" --steps "$steps" --seed 2 \
  --log-json "$out/new_clip.log.json" "${common[@]}" > "$out/new_clip.summary.json"
