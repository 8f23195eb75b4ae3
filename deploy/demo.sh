#!/usr/bin/env bash
# The embedded demo (`make demo`): everything generated here, no downloads.
#  1. two small CLIP models, "old" and "new" (bigger, different embedding size), trained CLIP-style
#     by `taca pretrain` on the synthetic captioned-shapes data (deploy/demo/*.json);
#  2. a training set and a held-out evaluation set of the same data, as WebDataset shards;
#  3. `taca precompute` of the old model's embeddings into two stores;
#  4. deploy/stack: taca-featured serving the training store, two taca-train ranks (MPI) adapting
#     the new model to the old one (TaCA adapters + projector);
#  5. the upgrade into service: `taca export` of the adapted encoder, taca-featured serving the
#     held-out store with the alias "current" -> old, a downstream client (deploy/demo/downstream.py:
#     a head trained once on old features) classifying through "current" pass after pass, `taca
#     precompute` of the adapted model into the served store, `taca alias current adapted` on the
#     running server: the client's accuracy before and after, and its failed calls (none);
#  6. AFT: the new model's embeddings and a random "noise" feature set join the old model's in the
#     training store (`taca precompute`, `taca add-features`); `taca-train --objective aft` trains a
#     small ViT (deploy/demo/downstream_vit.json) on the stored labels with AFT, standard training
#     and KD from the same start, and reports test accuracy per method and rho per source model;
#  7. `taca eval` on the held-out store: cross-model retrieval, the old linear head on old, adapted
#     and unadapted features (the paper's Eq. 2), distances, with the swap and AFT results: a
#     table, JSON and an HTML report.
#
#   deploy/demo.sh OUT_DIR      (`make demo` passes demo-out)
#
# OUT_DIR is emptied first, but only if it is new, empty, or made by this script before (it holds
# the marker file .taca-demo): any other folder is refused (exit 2). Every process it starts
# (taca-featured, deploy/stack, mpirun and its ranks) is stopped on success, failure and Ctrl-C.
# Knobs (environment): DEMO_TRAIN [4000], DEMO_EVAL [3000], DEMO_STEPS [800], DEMO_BATCH [64],
# DEMO_AFT_STEPS [600], and for pretrain-models.sh DEMO_PRETRAIN_STEPS [600],
# DEMO_PRETRAIN_SYNTH [100000], DEMO_PRETRAIN_EVAL [2000], DEMO_PRETRAIN_BATCH [128] (tests run a
# tiny configuration: tests/integration/test_demo_lifecycle.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${TACA_BIN_DIR:-$root/build/bin}
py=/usr/bin/python3
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") echo "deploy/demo.sh: the output folder is required: deploy/demo.sh OUT_DIR (try --help)" >&2; exit 2 ;;
esac
[ $# -eq 1 ] || { echo "deploy/demo.sh: one argument expected (OUT_DIR), got $#" >&2; exit 2; }
out=$1
. "$root/deploy/lib/procs.sh"
own_processes "deploy/demo.sh"
. "$root/deploy/demo/demo.env"
n_train=${DEMO_TRAIN:-4000}
n_eval=${DEMO_EVAL:-3000}
steps=${DEMO_STEPS:-800}
aft_steps=${DEMO_AFT_STEPS:-600}
batch=${DEMO_BATCH:-64}
size=$DATA_SIZE
t0=$(date +%s)
say() { printf '\n== %s (%ds)\n' "$*" $(( $(date +%s) - t0 )); }
own_out deploy/demo.sh "$out" .taca-demo

say "pretraining the old and the new CLIP model (deploy/demo/pretrain-models.sh)"
TACA="$bin/taca" SIZE="$size" STEPS="${DEMO_PRETRAIN_STEPS:-600}" SYNTH="${DEMO_PRETRAIN_SYNTH:-100000}" \
  EVAL="${DEMO_PRETRAIN_EVAL:-2000}" BATCH="${DEMO_PRETRAIN_BATCH:-128}" run "$root/deploy/demo/pretrain-models.sh" "$out/models"
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
run "$bin/taca" synth --out "$out/train-data" --n "$n_train" --start 1000000 --size "$size" --shards 4
run "$bin/taca" synth --out "$out/eval-data" --n "$n_eval" --start 2000000 --size "$size" --shards 1
say "precompute (old model) of the held-out set"
run "$bin/taca" precompute --model "$out/models/old_clip" --name old --data "$out/eval-data/00000.tar" --db "$out/eval-db" \
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
run "$root/deploy/stack" run "$out/stack.env"

ckpt=$(printf '%s/ckpt/step-%06d.safetensors' "$out" "$steps")
say "the upgrade into service: export, precompute into the served store, flip 'current' under a running client"
run "$bin/taca" export --new-model "$out/models/new_clip" --checkpoint "$ckpt" --text-model "$out/models/old_clip" \
  --out "$out/models/adapted_clip"
serve "$out/eval-db" service; p_svc=$port
mkdir -p "$out/downstream"
export PYTHONPATH=$bin/../clients/python${PYTHONPATH:+:$PYTHONPATH}
run "$bin/taca" alias --server "127.0.0.1:$p_svc" current old
dsargs=(--server "127.0.0.1:$p_svc" --head "$out/downstream/head.npz")
run "$py" "$root/deploy/demo/downstream.py" "${dsargs[@]}" train --model old
"$py" "$root/deploy/demo/downstream.py" "${dsargs[@]}" watch --model current --out "$out/service.json" \
  --stop "$out/downstream/stop" --ready "$out/downstream/ready" &
p_ds=$!; pids+=("$p_ds")
for _ in $(seq 600); do [ -e "$out/downstream/ready" ] && break; kill -0 "$p_ds" 2>/dev/null || break; sleep 0.1; done
[ -e "$out/downstream/ready" ] || { echo "deploy/demo.sh: the downstream client did not start" >&2; exit 1; }
run "$bin/taca" precompute --model "$out/models/adapted_clip" --name adapted --db "$out/eval-db" --quiet
run "$bin/taca" alias --server "127.0.0.1:$p_svc" current adapted
: > "$out/downstream/stop"
rc=0; wait "$p_ds" || rc=$?; forget "$p_ds"
[ "$rc" = 0 ] || { echo "deploy/demo.sh: the downstream client failed across the flip (see $out/service.json)" >&2; exit 1; }
stop_servers

say "AFT: the new model's and random noise features join the old model's in the training store"
run "$bin/taca" precompute --model "$out/models/new_clip" --name new --db "$out/train-db" --quiet
run "$bin/taca" add-features --db "$out/train-db" --name noise --random 32 --seed 1 --quiet
serve "$out/train-db" aft-train; p_train=$port
serve "$out/eval-db" aft-test; p_test=$port
say "AFT: small ViT on the labels, $aft_steps steps per method (aft, stl, kd), features old,new,noise"
run env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe -np 2 "$bin/taca-train" \
  --objective aft --server "127.0.0.1:$p_train" --test-server "127.0.0.1:$p_test" \
  --features old,new,noise --downstream "$root/deploy/demo/downstream_vit.json" --methods aft,stl,kd \
  --steps "$aft_steps" --batch-size "$batch" --threads 1 --out "$out/aft" --log-json "$out/aft/log.json" --quiet
stop_servers

say "evaluation on the held-out store (the report: compatibility, the swap, AFT)"
run "$bin/taca" eval --db "$out/eval-db" --old old --new-model "$out/models/new_clip" --checkpoint "$ckpt" \
  --log-json "$out/ckpt/log.json" --service-json "$out/service.json" --aft-json "$out/aft/report.json" \
  --json "$out/report.json" --html "$out/report.html"
say "done: report in $out/report.html (JSON: $out/report.json); AFT report in $out/aft/report.json"
