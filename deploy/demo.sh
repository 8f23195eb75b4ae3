#!/usr/bin/env bash
# The embedded demo (`make demo`): everything generated here, no downloads.
#  1. two small CLIP models, "old" and "new" (bigger, different embedding size), trained CLIP-style
#     by `taca pretrain` on the synthetic captioned-shapes data (deploy/demo/*.json);
#  2. a training set and a held-out evaluation set of the same data, as WebDataset shards;
#  3. `taca precompute` of the old model's embeddings into two stores;
#  4. deploy/stack: taca-featured serving the training store, two taca-train ranks (MPI) adapting
#     the new model to the old one (TaCA adapters + projector);
#  5. `taca eval` on the held-out store: cross-model retrieval, the old linear head on old, adapted
#     and unadapted features (the paper's Eq. 2), distances; a table, JSON and an HTML report;
#  6. AFT: the new model's embeddings and a random "noise" feature set join the old model's in the
#     training store (`taca precompute`, `taca add-features`); `taca-train --objective aft` trains a
#     small ViT (deploy/demo/downstream_vit.json) on the stored labels with AFT, standard training
#     and KD from the same start, and reports test accuracy per method and rho per source model.
# Knobs (environment): DEMO_DIR [demo-out], DEMO_TRAIN [4000], DEMO_EVAL [3000], DEMO_STEPS [800],
# DEMO_BATCH [64], DEMO_AFT_STEPS [600].
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${TACA_BIN_DIR:-$root/build/bin}
out=${DEMO_DIR:-$root/demo-out}
py=/usr/bin/python3
. "$root/deploy/demo/demo.env"
n_train=${DEMO_TRAIN:-4000}
n_eval=${DEMO_EVAL:-3000}
steps=${DEMO_STEPS:-800}
aft_steps=${DEMO_AFT_STEPS:-600}
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

say "AFT: the new model's and random noise features join the old model's in the training store"
"$bin/taca" precompute --model "$out/models/new_clip" --name new --db "$out/train-db" --quiet
"$bin/taca" add-features --db "$out/train-db" --name noise --random 32 --seed 1 --quiet
srv=()
stop_servers() { for p in "${srv[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; srv=(); }
trap stop_servers EXIT
serve() { # serve DB NAME -> the port (taca-featured on 127.0.0.1, an ephemeral port)
  rm -f "$out/$2.ports"
  "$bin/taca-featured" --db "$1" --listen 127.0.0.1:0 --port-file "$out/$2.ports" > "$out/$2.featured.log" 2>&1 &
  srv+=($!)
  for _ in $(seq 200); do [ -s "$out/$2.ports" ] && break; sleep 0.05; done
  sed -n 's/^grpc=//p' "$out/$2.ports"
}
p_train=$(serve "$out/train-db" aft-train)
p_test=$(serve "$out/eval-db" aft-test)
say "AFT: small ViT on the labels, $aft_steps steps per method (aft, stl, kd), features old,new,noise"
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe -np 2 "$bin/taca-train" \
  --objective aft --server "127.0.0.1:$p_train" --test-server "127.0.0.1:$p_test" \
  --features old,new,noise --downstream "$root/deploy/demo/downstream_vit.json" --methods aft,stl,kd \
  --steps "$aft_steps" --batch-size "$batch" --threads 1 --out "$out/aft" --log-json "$out/aft/log.json" --quiet
stop_servers
say "done: report in $out/report.html (JSON: $out/report.json); AFT report in $out/aft/report.json"
