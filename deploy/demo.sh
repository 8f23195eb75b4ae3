#!/usr/bin/env bash
# The embedded demo (`make demo`): everything generated here, no downloads.
#  1. two small CLIP models, "old" and "new" (bigger, different embedding size), trained CLIP-style
#     by `taca pretrain` on the synthetic captioned-shapes data (deploy/demo/*.json);
#  2. a training set and a held-out evaluation set of the same data, as WebDataset shards;
#  3. `taca precompute` of the old model's embeddings into two stores;
#  4. deploy/stack: taca-featured serving the training store, two taca-train ranks (MPI) adapting
#     the new model to the old one (TaCA adapters + projector);
#  5. `taca eval` on the held-out store: cross-model retrieval, the old linear head on old, adapted
#     and unadapted features (the paper's Eq. 2), distances; a table, JSON and an HTML report.
# Knobs (environment): DEMO_DIR [demo-out], DEMO_TRAIN [4000], DEMO_EVAL [3000], DEMO_STEPS [800],
# DEMO_BATCH [64].
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${TACA_BIN_DIR:-$root/build/bin}
out=${DEMO_DIR:-$root/demo-out}
py=/usr/bin/python3
. "$root/deploy/demo/demo.env"
n_train=${DEMO_TRAIN:-4000}
n_eval=${DEMO_EVAL:-3000}
steps=${DEMO_STEPS:-800}
batch=${DEMO_BATCH:-64}
size=$DATA_SIZE
t0=$(date +%s)
say() { printf '\n== %s (%ds)\n' "$*" $(( $(date +%s) - t0 )); }
rm -rf "$out"; mkdir -p "$out"

say "pretraining the old and the new CLIP model (deploy/demo/pretrain-models.sh)"
TACA="$bin/taca" SIZE="$size" "$root/deploy/demo/pretrain-models.sh" "$out/models"
for m in old_clip new_clip; do
  "$py" - "$out/models/$m.summary.json" "$m" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
t, e = d["train"], d["eval"]
print(f"  {sys.argv[2]}: {t['steps']} steps in {t['seconds']:.0f} s; held-out: same-attribute R@1 i->t "
      f"{e['r1_i2t_attr']:.3f}, linear probe {e['probe_acc']:.3f} (chance {e['probe_chance']:.3f})")
PY
done

say "synthetic data: $n_train training + $n_eval held-out samples"
"$bin/taca" synth --out "$out/train-data" --n "$n_train" --start 1000000 --size "$size" --shards 4
"$bin/taca" synth --out "$out/eval-data" --n "$n_eval" --start 2000000 --size "$size" --shards 1
say "precompute (old model) of the held-out set"
"$bin/taca" precompute --model "$out/models/old_clip" --name old --data "$out/eval-data/00000.tar" --db "$out/eval-db" \
  --pixel-size "$NEW_IMAGE_SIZE" --quiet

say "stack: precompute -> taca-featured -> 2 trainer ranks ($steps steps, global batch $batch)"
cat > "$out/stack.env" <<ENV
TACA_BIN_DIR=$bin
TACA_STATE_DIR=$out/stack-state
TACA_OLD_MODEL=$out/models/old_clip
TACA_OLD_NAME=old
TACA_DATA=$out/train-data/{00000..00003}.tar
TACA_DB=$out/train-db
TACA_NEW_MODEL=$out/models/new_clip
TACA_TRAINERS=2
TACA_OUT=$out/ckpt
TACA_PRECOMPUTE_ARGS="--quiet --pixel-size $NEW_IMAGE_SIZE"
TACA_TRAIN_ARGS="--steps $steps --batch-size $batch --save-every $(( steps / 2 )) --log-json $out/ckpt/log.json --lr $TACA_LR --lambda $TACA_LAMBDA --quiet"
ENV
"$root/deploy/stack" run "$out/stack.env"

say "evaluation on the held-out store"
ckpt=$(printf '%s/ckpt/step-%06d.safetensors' "$out" "$steps")
"$bin/taca" eval --db "$out/eval-db" --old old --new-model "$out/models/new_clip" --checkpoint "$ckpt" \
  --log-json "$out/ckpt/log.json" --json "$out/report.json" --html "$out/report.html"
say "done: report in $out/report.html (JSON: $out/report.json)"
