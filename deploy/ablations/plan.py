#!/usr/bin/env python3
"""plan.py: which ablation runs fit the budget (deploy/ablations.sh step 4).

From the calibration (two concurrent 24-step runs of the base setting: their per-step times, start-up
and evaluation seconds) it predicts a run of S steps as overhead + S * step, two runs at a time, and
chooses the largest plan that fits what is left of --budget-min after the set-up already spent and a
reserve for the report: all settings of the grid with --seeds seeds and up to --max-steps steps;
when that does not fit, fewer steps (down to --min-steps), then fewer settings (the grid's later rows
first, down to 4), then fewer seeds (down to 1), then fewer settings still (down to 2). Every
reduction is written into plan.json and so into the report. The settings are the grid's rows
(deploy/ablations/grid.tsv). Writes --out (the plan) and --runs (one line per run: setting, seed,
steps, taca-train flags; tab-separated; seeds interleaved so that a cut-short run still has every
setting's first seed).
"""
import argparse
import glob
import json
import math
import os
import statistics
import sys

WORKERS = 2
REPORT_RESERVE_S = 30.0


def read_grid(path):
    rows = []
    for line in open(path):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.rstrip("\n").split("\t")
        if len(cols) < 2:
            sys.exit(f"plan.py: {path}: a row needs a setting and its groups: {line.strip()!r}")
        groups = {}
        for g in cols[1].split(","):
            k, _, v = g.partition("=")
            groups[k.strip()] = v.strip()
        rows.append({"setting": cols[0], "groups": groups, "flags": cols[2].split() if len(cols) > 2 else []})
    if not rows or rows[0]["setting"] != "base":
        sys.exit(f"plan.py: {path}: the first row must be the base setting")
    return rows


def calibrate(folder):
    step_s, overhead = [], []
    for run in sorted(glob.glob(os.path.join(folder, "*", "run.json"))):
        r = json.load(open(run))
        steps = [json.loads(line)["step_s"] for line in open(os.path.join(os.path.dirname(run), "log.json"))]
        if len(steps) < 4:
            sys.exit(f"plan.py: {run}: the calibration logged {len(steps)} steps")
        s = statistics.median(steps[2:])
        step_s.append(s)
        overhead.append(r["train_seconds"] - s * len(steps) + r["eval_seconds"])
    if not step_s:
        sys.exit(f"plan.py: {folder}: no calibration runs")
    return max(step_s), max(overhead)


def predict(n_runs, steps, step_s, overhead):
    return math.ceil(n_runs / WORKERS) * (overhead + steps * step_s)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", required=True)
    ap.add_argument("--budget-min", type=float, required=True)
    ap.add_argument("--elapsed-s", type=float, required=True)
    ap.add_argument("--calibration", required=True)
    ap.add_argument("--max-steps", type=int, default=800)
    ap.add_argument("--min-steps", type=int, default=150)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", required=True)
    a = ap.parse_args()
    if a.min_steps < 1 or a.max_steps < a.min_steps or a.seeds < 1:
        sys.exit("plan.py: need 1 <= --min-steps <= --max-steps and --seeds >= 1")
    grid = read_grid(a.grid)
    step_s, overhead = calibrate(a.calibration)
    avail = a.budget_min * 60 - a.elapsed_s - REPORT_RESERVE_S
    reductions = []

    def steps_that_fit(n_settings, seeds):
        slots = math.ceil(n_settings * seeds / WORKERS)
        return int(min(a.max_steps, math.floor((avail / slots - overhead) / step_s))) if slots else 0

    n_set, seeds = len(grid), a.seeds
    steps = steps_that_fit(n_set, seeds)
    if steps < a.max_steps:
        reductions.append(f"steps per run {max(steps, a.min_steps)} instead of {a.max_steps}")
    while steps < a.min_steps and (n_set > 4 or seeds > 1 or n_set > 2):
        if n_set > 4:
            n_set -= 1
        elif seeds > 1:
            seeds -= 1
        else:
            n_set -= 1
        steps = steps_that_fit(n_set, seeds)
    steps = max(min(steps, a.max_steps), a.min_steps)
    if n_set < len(grid):
        reductions.append(f"{n_set} of {len(grid)} settings (dropped: "
                          f"{', '.join(r['setting'] for r in grid[n_set:])})")
    if seeds < a.seeds:
        reductions.append(f"{seeds} seed(s) instead of {a.seeds}")
    predicted = predict(n_set * seeds, steps, step_s, overhead)
    if predicted > avail:
        reductions.append(f"even the smallest plan is predicted to take {predicted:.0f} s where {max(avail, 0):.0f} s "
                          "were left: the budget will be exceeded")
    plan = {"budget_min": a.budget_min, "setup_s": a.elapsed_s, "available_s": avail, "workers": WORKERS,
            "calibration": {"step_s": step_s, "overhead_s": overhead}, "steps": steps, "seeds": seeds,
            "settings": [r["setting"] for r in grid[:n_set]], "grid": grid, "predicted_s": predicted,
            "reductions": reductions}
    json.dump(plan, open(a.out, "w"), indent=1)
    with open(a.runs, "w") as f:
        for seed in range(seeds):
            for r in grid[:n_set]:
                f.write(f"{r['setting']}\t{seed}\t{steps}\t{' '.join(r['flags'])}\n")
    print(f"  step {step_s * 1000:.0f} ms (two runs at once), {overhead:.1f} s start-up and evaluation per run; "
          f"{n_set} settings x {seeds} seeds x {steps} steps, predicted {predicted:.0f} s of {avail:.0f} s left"
          + "".join(f"\n  reduced: {x}" for x in reductions))


if __name__ == "__main__":
    main()
