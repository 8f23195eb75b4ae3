#!/usr/bin/env bash
# The paper's ablations on the embedded setup (`make ablations`): every setting of
# deploy/ablations/grid.tsv (PEFT: adapters or LoRA r4/8/16 on q/v; adapter layer ranges;
# bottleneck widths; lambda 0..4; contrastive only, distill only, both) trained with the same budget
# per run and three seeds, each run scored by `taca eval` on a held-out store and by four kinds of
# downstream modules fitted on the OLD model's features only and plugged in unchanged (a linear
# head, a 2-layer MLP head, k-NN over the old gallery, a temporal model over 8-frame sequences of
# `taca synth --motion 8`), beside the reviewers' baseline: re-tuning each module on the new
# model's own features, with its cost.
#  1. models: --models DIR (old_clip and new_clip in it), else demo-out/models when `make demo` made
#     them, else trained here by deploy/demo/pretrain-models.sh (the demo's recipe);
#  2. data: TaCA's training pool (ABL_TRAIN stills + ABL_MOTION_TRAIN motion frames, labels unused)
#     and two held-out stores (ABL_EVAL stills; ABL_MOTION_EVAL frames, sequences kept whole by
#     `taca eval --split-group 8`), precomputed with the old model;
#  3. taca-featured serving the training store; one reference `taca eval` per held-out store of the
#     unadapted new model (its features and timing: the re-tuning baseline);
#  4. the plan (deploy/ablations/plan.py): a 24-step calibration of two concurrent runs measures
#     the step time; the settings, seeds and steps are then the most that fit --budget (fewer
#     steps first, then fewer settings, then fewer seeds; written into the report);
#  5. the runs, two at a time (one rank, one thread each): taca-train, then `taca eval` on both
#     held-out stores with --save-features;
#  6. deploy/ablations/report.py: OUT_DIR/ablations.json and OUT_DIR/report.html.
#
#   deploy/ablations.sh OUT_DIR [--budget MINUTES] [--models DIR]     (`make ablations`: ablations-out)
#
# --budget (default 30) bounds the whole run, setup included, on this machine's measured speed.
# OUT_DIR is emptied first, but only if it is new, empty or made by this script (marker
# .taca-ablations); any other folder is refused (exit 2). Every process it starts is stopped on
# success, failure and Ctrl-C. Knobs (environment): ABL_TRAIN [4000], ABL_MOTION_TRAIN [1600],
# ABL_EVAL [3000], ABL_MOTION_EVAL [3200], ABL_BATCH [64], ABL_MAX_STEPS [800], ABL_MIN_STEPS [150],
# ABL_SEEDS [3], and DEMO_PRETRAIN_* as in deploy/demo.sh when the models are trained here.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${TACA_BIN_DIR:-$root/build/bin}
py=/usr/bin/python3
me=deploy/ablations.sh
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
out="" budget=30 models=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --budget) [ $# -ge 2 ] || { echo "$me: --budget needs a number of minutes" >&2; exit 2; }; budget=$2; shift 2 ;;
    --models) [ $# -ge 2 ] || { echo "$me: --models needs a folder" >&2; exit 2; }; models=$2; shift 2 ;;
    -*) echo "$me: unknown option '$1' (try --help)" >&2; exit 2 ;;
    *) [ -z "$out" ] || { echo "$me: one OUT_DIR expected, got '$out' and '$1'" >&2; exit 2; }; out=$1; shift ;;
  esac
done
[ -n "$out" ] || { echo "$me: the output folder is required: $me OUT_DIR (try --help)" >&2; exit 2; }
[[ "$budget" =~ ^[0-9]+([.][0-9]+)?$ ]] && awk -v b="$budget" 'BEGIN { exit !(b > 0) }' ||
  { echo "$me: --budget must be a positive number of minutes, got '$budget'" >&2; exit 2; }
if [ -n "$models" ]; then
  for m in old_clip new_clip; do
    [ -f "$models/$m/config.json" ] || { echo "$me: --models $models: no $m/config.json in it" >&2; exit 2; }
  done
  models=$(cd "$models" && pwd)
fi
. "$root/deploy/lib/procs.sh"
own_processes "$me"
. "$root/deploy/demo/demo.env"
n_train=${ABL_TRAIN:-4000}
n_mtrain=${ABL_MOTION_TRAIN:-1600}
n_eval=${ABL_EVAL:-3000}
n_meval=${ABL_MOTION_EVAL:-3200}
batch=${ABL_BATCH:-64}
frames=8
t0=$EPOCHREALTIME
since() { awk -v a="$EPOCHREALTIME" -v b="$1" 'BEGIN { printf "%.3f", a - b }'; } # seconds since $1
elapsed() { since "$t0"; }
say() { printf '\n== %s (%.0fs)\n' "$*" "$(elapsed)"; }
own_out "$me" "$out" .taca-ablations
out=$(cd "$out" && pwd)

if [ -z "$models" ] && [ -f "$root/demo-out/models/old_clip/config.json" ] && [ -f "$root/demo-out/models/new_clip/config.json" ]; then
  models=$root/demo-out/models
fi
if [ -n "$models" ]; then
  say "models: reusing $models (old_clip, new_clip)"
else
  say "models: none trained yet; pretraining the demo's old and new CLIP models (deploy/demo/pretrain-models.sh)"
  models=$out/models
  TACA="$bin/taca" SIZE="$DATA_SIZE" STEPS="${DEMO_PRETRAIN_STEPS:-600}" SYNTH="${DEMO_PRETRAIN_SYNTH:-100000}" \
    EVAL="${DEMO_PRETRAIN_EVAL:-2000}" BATCH="${DEMO_PRETRAIN_BATCH:-128}" run "$root/deploy/demo/pretrain-models.sh" "$models"
fi
printf '%s\n' "$models" > "$out/models.txt"

say "data: $n_train stills + $n_mtrain motion frames to train on; held out: $n_eval stills, $n_meval motion frames"
d=$out/data; mkdir -p "$d"
run "$bin/taca" synth --out "$d/train" --n "$n_train" --start 1000000 --size "$DATA_SIZE" --shards 2
run "$bin/taca" synth --out "$d/train-motion" --n "$n_mtrain" --start 4000000 --size "$DATA_SIZE" --motion $frames
run "$bin/taca" synth --out "$d/eval" --n "$n_eval" --start 2000000 --size "$DATA_SIZE"
run "$bin/taca" synth --out "$d/eval-motion" --n "$n_meval" --start 3000000 --size "$DATA_SIZE" --motion $frames
pre=(--model "$models/old_clip" --name old --pixel-size "$NEW_IMAGE_SIZE" --quiet)
run "$bin/taca" precompute "${pre[@]}" --data "$d/train/00000.tar" "$d/train/00001.tar" "$d/train-motion/00000.tar" --db "$out/train-db"
run "$bin/taca" precompute "${pre[@]}" --data "$d/eval/00000.tar" --db "$out/eval-db"
run "$bin/taca" precompute "${pre[@]}" --data "$d/eval-motion/00000.tar" --db "$out/motion-db"
rm -rf "$d"

serve "$out/train-db" train; p_train=$port
say "reference: the unadapted new model on both held-out stores (the re-tuning baseline's features and cost)"
ev_still=(--db "$out/eval-db" --old old --new-model "$models/new_clip" --threads 1 --quiet)
ev_motion=(--db "$out/motion-db" --old old --new-model "$models/new_clip" --split 0.5 --split-group $frames --threads 1 --quiet)
mkdir -p "$out/reference"
run "$bin/taca" eval "${ev_still[@]}" --threads 2 --json "$out/reference/still.json" --save-features "$out/reference/still" \
  > "$out/reference/still.txt"
run "$bin/taca" eval "${ev_motion[@]}" --threads 2 --json "$out/reference/motion.json" --save-features "$out/reference/motion" \
  > "$out/reference/motion.txt"

# one run: taca-train (timed), then `taca eval` on both held-out stores with its checkpoint
train_args=(--server "127.0.0.1:$p_train" --targets old --new-model "$models/new_clip" --batch-size "$batch" --threads 1
            --lr "$TACA_LR" --lambda "$TACA_LAMBDA" --quiet)
one_run() { # one_run DIR STEPS SEED FLAGS...
  local dir=$1 steps=$2 seed=$3; shift 3
  mkdir -p "$dir"
  local t=$EPOCHREALTIME
  "$bin/taca-train" "${train_args[@]}" --steps "$steps" --save-every "$steps" --seed "$seed" --out "$dir/ckpt" \
    --log-json "$dir/log.json" "$@" > "$dir/train.log" 2>&1 || { echo "$me: taca-train failed in $dir:" >&2; tail -3 "$dir/train.log" >&2; return 1; }
  local train_s; train_s=$(since "$t")
  local ck; ck=$(printf '%s/ckpt/step-%06d.safetensors' "$dir" "$steps")
  t=$EPOCHREALTIME
  "$bin/taca" eval "${ev_still[@]}" --checkpoint "$ck" --no-new-head --json "$dir/still.json" --save-features "$dir/still" \
    > "$dir/still.txt" 2>&1 || { echo "$me: taca eval failed in $dir:" >&2; tail -3 "$dir/still.txt" >&2; return 1; }
  "$bin/taca" eval "${ev_motion[@]}" --checkpoint "$ck" --no-new-head --json "$dir/motion.json" --save-features "$dir/motion" \
    > "$dir/motion.txt" 2>&1 || { echo "$me: taca eval failed in $dir:" >&2; tail -3 "$dir/motion.txt" >&2; return 1; }
  local eval_s; eval_s=$(since "$t")
  rm -f "$dir"/ckpt/*.optim.safetensors
  "$py" - "$steps" "$batch" "$seed" "$train_s" "$eval_s" "$dir/run.json" "$@" <<'PY'
import json, sys
steps, batch, seed, train_s, eval_s, path = sys.argv[1:7]
json.dump({"steps": int(steps), "batch": int(batch), "seed": int(seed), "train_seconds": float(train_s),
           "eval_seconds": float(eval_s), "flags": sys.argv[7:]}, open(path, "w"))
PY
}
# pool: at most two runs at once; a failed run stops the ablations
running=0
start_run() {
  one_run "$@" & pids+=("$!"); running=$((running + 1))
  [ "$running" -lt 2 ] || reap
}
reap() {
  local done_pid="" rc=0
  wait -n -p done_pid || rc=$?
  [ -z "$done_pid" ] || forget "$done_pid"
  running=$((running - 1))
  [ "$rc" = 0 ] || exit 1
}
drain() { while [ "$running" -gt 0 ]; do reap; done; }

say "calibration: two concurrent 24-step runs of the base setting"
start_run "$out/calibration/a" 24 100
start_run "$out/calibration/b" 24 101
drain
say "plan for a budget of $budget min"
"$py" "$root/deploy/ablations/plan.py" --grid "$root/deploy/ablations/grid.tsv" --budget-min "$budget" \
  --elapsed-s "$(elapsed)" --calibration "$out/calibration" \
  --max-steps "${ABL_MAX_STEPS:-800}" --min-steps "${ABL_MIN_STEPS:-150}" --seeds "${ABL_SEEDS:-3}" \
  --out "$out/plan.json" --runs "$out/runs.tsv"
n_runs=$(wc -l < "$out/runs.tsv")
say "runs: $n_runs (two at a time)"
i=0
while IFS=$'\t' read -r name seed steps flags; do
  i=$((i + 1))
  printf '  [%d/%d] %s seed %s, %s steps (%.0fs)\n' "$i" "$n_runs" "$name" "$seed" "$steps" "$(elapsed)"
  # shellcheck disable=SC2086 # flags are words from grid.tsv
  start_run "$out/runs/$name-s$seed" "$steps" "$seed" $flags
done < "$out/runs.tsv"
drain
stop_servers

say "report"
OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$py" "$root/deploy/ablations/report.py" "$out" --total-s "$(elapsed)"
say "done: $out/report.html (JSON: $out/ablations.json)"
