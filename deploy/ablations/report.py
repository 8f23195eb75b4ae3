#!/usr/bin/env python3
"""report.py: the ablations' figures, OUT/ablations.json and OUT/report.html (deploy/ablations.sh step 6).

Reads what deploy/ablations.sh left in OUT: plan.json, reference/{still,motion}{.json,/} (`taca eval`
of the unadapted new model, with --save-features) and runs/SETTING-sSEED/ (run.json, still.json and
motion.json from `taca eval --checkpoint`, with their features). For every run it takes from
`taca eval` the old linear head's accuracy on adapted features (the paper's Eq. 2), its negative-flip
rate, cross-model R@1 (adapted images against the old text embeddings), the mean cosine to the old
embeddings and the trainable parameters; it adds the run's training time; and it scores the four
downstream modules of deploy/ablations/modules.py, each fitted ONCE on the old model's features of
the train split and applied unchanged to the run's adapted features (accuracy and negative flips).
Settings are summarised as mean +- sample standard deviation over their seeds. The reviewers'
baseline re-tunes each module on the new model's own features; its cost (embedding the module's
training set with the new model, at the measured speed of the reference `taca eval`, plus the fit)
is set beside TaCA's (one training run, no labels), with the number of modules where TaCA becomes
the cheaper.

  report.py OUT [--total-s SECONDS]
"""
import argparse
import datetime
import html
import json
import math
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import modules  # noqa: E402

REF_THREADS = 2  # deploy/ablations.sh's reference `taca eval --threads 2`; runs train with one thread each
GROUPS = [  # (key, title, what the paper reports for it)
    ("peft", "Adapters or LoRA on q/v (the paper's Table 5)",
     "the paper: adapters best across tasks; LoRA gains on retrieval but loses on video recognition"),
    ("layers", "Which blocks carry adapters (Table 10)",
     "the paper: shallow blocks beat deep ones, all blocks best"),
    ("bottleneck", "Adapter bottleneck width (Table 6)", "the paper: wider is better, with small gains past 128"),
    ("lambda", "Distillation weight lambda (Table 7)",
     "the paper: lambda 0 (no distillation) clearly worse, 1 to 5 close, 2 chosen"),
    ("loss", "Loss terms (Table 7)", "the paper: both terms together best"),
]
METRICS = [  # (key, label, unit: pct | num | int | s)
    ("old_head_adapted", "old linear head on adapted features", "pct"),
    ("negative_flips", "negative flips (old head)", "pct"),
    ("t2i_r1", "cross-model R@1 text->image", "pct"),
    ("i2t_r1", "cross-model R@1 image->text", "pct"),
    ("cosine", "cosine to old embeddings", "num"),
    ("trainable", "trainable parameters", "int"),
    ("adapter_params", "of which adapters/LoRA", "int"),
    ("train_s", "training time", "s"),
]


def load_npy(folder, name):
    return np.load(os.path.join(folder, name + ".npy"))


def get(d, path, default=None):
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def machine():
    cpu, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and cpu in ("", "unknown CPU", platform.processor()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return {"cpu": cpu, "cores": os.cpu_count(), "isa": isa, "system": platform.platform()}


class Features:
    """One `taca eval --save-features` folder; groups = sequence ids (index // 8) for the motion set."""

    def __init__(self, folder, motion):
        self.folder = folder
        self.test_index = load_npy(folder, "test_index")
        self.test_label = load_npy(folder, "test_label")
        self.test_old = load_npy(folder, "test_old_image")
        self.groups = self.test_index // modules.FRAMES if motion else None


def mean_std(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return {"mean": None, "std": None, "n": 0}
    m = float(np.mean(xs))
    return {"mean": m, "std": float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0, "n": len(xs)}


def flips(right_old, right_new):
    return float(np.mean(right_old & ~right_new)) if len(right_old) else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--total-s", type=float, default=None)
    a = ap.parse_args()
    out = a.out
    plan = json.load(open(os.path.join(out, "plan.json")))
    grid = {r["setting"]: r for r in plan["grid"]}
    ref_still = json.load(open(os.path.join(out, "reference", "still.json")))
    ref_motion = json.load(open(os.path.join(out, "reference", "motion.json")))
    rs, rm = os.path.join(out, "reference", "still"), os.path.join(out, "reference", "motion")
    still, motion = Features(rs, False), Features(rm, True)

    # the downstream modules, fitted once on old features (and, for the baseline, on new ones)
    data = {
        "linear": (rs, False), "mlp": (rs, False), "knn": (rs, False), "temporal": (rm, True),
    }
    fitted, retuned, mod_info = {}, {}, {}
    for kind, (folder, is_motion) in data.items():
        f = motion if is_motion else still
        y_tr = load_npy(folder, "train_label")
        g_tr = load_npy(folder, "train_index") // modules.FRAMES if is_motion else None
        m_old = modules.fit(kind, load_npy(folder, "train_old_image"), y_tr, g_tr)
        m_new = modules.fit(kind, load_npy(folder, "train_new"), y_tr, g_tr)
        right_old = modules.score(m_old, f.test_old, f.test_label, f.groups)
        right_new = modules.score(m_new, load_npy(folder, "test_new"), f.test_label, f.groups)
        unadapted = None
        if load_npy(folder, "test_new").shape[1] == f.test_old.shape[1]:
            unadapted = float(np.mean(modules.score(m_old, load_npy(folder, "test_new"), f.test_label, f.groups)))
        fitted[kind], retuned[kind] = (m_old, right_old), m_new
        n_items = len(right_old)
        n_lab = int(np.sum(y_tr >= 0))
        ref = ref_motion if is_motion else ref_still
        ips = get(ref, "timing.images_per_s")
        mod_info[kind] = {
            "data": "motion frames, 8 per sequence (taca synth --motion 8)" if is_motion else "stills",
            "test_items": n_items, "train_labelled_samples": n_lab, "params": m_old.params,
            "old_on_old": float(np.mean(right_old)), "old_on_unadapted_new": unadapted,
            "retuned_on_new": float(np.mean(right_new)),
            # core-seconds: the reference embedded with REF_THREADS threads; the fit runs on one core
            "retune_cost": {"labelled_samples": n_lab, "params": m_new.params, "fit_s": m_new.seconds,
                            "embed_train_s": (n_lab / ips * REF_THREADS) if ips else None,
                            "images_per_s": ips, "unit": "core-seconds"},
        }
        mod_info[kind]["retune_cost"]["total_s"] = m_new.seconds + (mod_info[kind]["retune_cost"]["embed_train_s"] or 0)

    runs = []
    for setting in plan["settings"]:
        for seed in range(plan["seeds"]):
            d = os.path.join(out, "runs", f"{setting}-s{seed}")
            if not os.path.exists(os.path.join(d, "run.json")):
                continue
            rj = json.load(open(os.path.join(d, "run.json")))
            ej = json.load(open(os.path.join(d, "still.json")))
            r = {"setting": setting, "seed": seed, "steps": rj["steps"], "batch": rj["batch"], "train_s": rj["train_seconds"],
                 "eval_s": rj["eval_seconds"], "flags": rj["flags"],
                 "old_head_adapted": get(ej, "accuracy.old_head_adapted.value"),
                 "old_head_old": get(ej, "accuracy.old_head_old.value"),
                 "negative_flips": get(ej, "compatibility.negative_flips.rate"),
                 "t2i_r1": get(ej, "retrieval.adapted.t2i.r1"), "i2t_r1": get(ej, "retrieval.adapted.i2t.r1"),
                 "cosine": get(ej, "distance.adapted_vs_old.mean_cosine"),
                 "trainable": get(ej, "checkpoint.trainable_parameters"), "peft": get(ej, "checkpoint.peft"),
                 "layers": get(ej, "checkpoint.layers"), "bct_gain": get(ej, "compatibility.gain.value")}
            H = get(ej, "checkpoint.projector_hidden") or 0
            En, Eo = get(ej, "dims.new") or 0, get(ej, "dims.old_image") or 0
            r["projector_params"] = En * H + H + H * Eo + Eo
            r["adapter_params"] = (r["trainable"] or 0) - r["projector_params"]
            r["modules"] = {}
            for kind, (m_old, right_old) in fitted.items():
                is_motion = data[kind][1]
                f = motion if is_motion else still
                sub = os.path.join(d, "motion" if is_motion else "still")
                ti = load_npy(sub, "test_index")
                if not np.array_equal(ti, f.test_index):
                    sys.exit(f"report.py: {sub}: its test split differs from the reference's (another --seed or store?)")
                right = modules.score(m_old, load_npy(sub, "test_adapted"), f.test_label, f.groups)
                r["modules"][kind] = {"accuracy": float(np.mean(right)), "negative_flips": flips(right_old, right)}
            runs.append(r)
    if not runs:
        sys.exit(f"report.py: {out}/runs: no finished run")

    settings = {}
    for s in plan["settings"]:
        rr = [r for r in runs if r["setting"] == s]
        if not rr:
            continue
        agg = {k: mean_std([r[k] for r in rr]) for k, _, _ in METRICS}
        agg["modules"] = {kind: {m: mean_std([r["modules"][kind][m] for r in rr]) for m in ("accuracy", "negative_flips")}
                          for kind in fitted}
        settings[s] = {"seeds": [r["seed"] for r in rr], "groups": grid[s]["groups"], "flags": grid[s]["flags"],
                       "peft": rr[0]["peft"], "layers": rr[0]["layers"], **agg}

    old_old = get(ref_still, "accuracy.old_head_old.value")
    groups = []
    for key, title, paper in GROUPS:
        rows = [(grid[s]["groups"][key], s) for s in settings if key in grid[s]["groups"]]
        rows.sort(key=lambda vs: order_key(key, vs[0]))
        if len(rows) >= 2:
            groups.append({"key": key, "title": title, "paper": paper, "rows": [{"value": v, "setting": s} for v, s in rows],
                           "findings": {mk: dict(finding(key, rows, settings, get_m), measure=label)
                                        for mk, label, get_m in measures(fitted)}})

    base = settings.get("base")
    baseline = None
    if base:
        taca_s = base["train_s"]["mean"]
        per_module = {k: v["retune_cost"]["total_s"] for k, v in mod_info.items()}
        mean_retune = float(np.mean(list(per_module.values())))
        baseline = {
            "taca": {"train_s": taca_s, "trainable": base["trainable"]["mean"], "labelled_samples": 0,
                     "unlabelled_images_seen": plan["steps"] * runs[0]["batch"],
                     "accuracy": {k: base["modules"][k]["accuracy"] for k in fitted}},
            "retune_s_per_module": per_module, "mean_retune_s": mean_retune,
            "break_even_modules": (math.ceil(taca_s / mean_retune) if mean_retune > 0 else None),
        }

    result = {
        "taca_ablations": 1, "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "models": open(os.path.join(out, "models.txt")).read().strip(),
        "plan": {k: plan[k] for k in ("budget_min", "steps", "seeds", "settings", "reductions", "predicted_s",
                                      "setup_s", "workers", "calibration")},
        "total_s": a.total_s,
        "reference": {"old_head_old": old_old, "new_head_new": get(ref_still, "accuracy.new_head_new.value"),
                      "old_head_unadapted_new": get(ref_still, "accuracy.old_head_new.value"),
                      "old_t2i_r1": get(ref_still, "retrieval.old.t2i.r1"),
                      "chance_r1": get(ref_still, "chance.r1"),
                      "test_stills": get(ref_still, "split.test"), "test_motion_frames": get(ref_motion, "split.test")},
        "modules": mod_info, "settings": settings, "groups": groups, "baseline": baseline, "runs": runs,
    }
    result = finite(result)
    with open(os.path.join(out, "ablations.json"), "w") as f:
        json.dump(result, f, indent=1, allow_nan=False)
    with open(os.path.join(out, "report.html"), "w") as f:
        f.write(render_html(result))
    print_summary(result)


def finite(x):
    """JSON has no NaN: a figure that could not be measured is null."""
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def order_key(group, value):
    try:
        return (0, float(value.split()[0]), value)
    except ValueError:
        pass
    if group == "peft":
        return (0, 0 if value == "adapter" else int(value.split("r")[-1]), value)
    fixed = ["all (1-4)", "first half (1-2)", "second half (3-4)", "last block (4)",
             "contrastive only", "distill only", "contrastive + distill"]
    return (1, fixed.index(value) if value in fixed else 99, value)


def measures(fitted):
    """What a direction is checked on: (key, label, setting -> mean/std/n): the old linear head of
    `taca eval`, cross-model retrieval (the paper's Tables 5, 6 and 10 measure MSR-VTT retrieval), and
    each downstream module (Table 5 and 7 also measure K400 video recognition: the temporal module)."""
    out = [("old_head", "old linear head (taca eval)", lambda v: v["old_head_adapted"]),
           ("t2i_r1", "cross-model R@1 text->image", lambda v: v["t2i_r1"])]
    for k in fitted:
        out.append((k, f"{k} module", lambda v, k=k: v["modules"][k]["accuracy"]))
    return out


def finding(key, rows, settings, measure):
    """Whether the paper's direction for this group holds here on one measure (of adapted features),
    and whether the difference that decides it exceeds the seeds' noise (twice the larger standard
    error of the two means compared)."""
    acc = {v: measure(settings[s]) for v, s in rows}

    def cmp(a, b):  # (a > b, margin in points, beyond noise)
        ma, mb = acc[a]["mean"], acc[b]["mean"]
        se = max((acc[x]["std"] or 0) / math.sqrt(max(acc[x]["n"], 1)) for x in (a, b))
        return ma > mb, 100 * (ma - mb), abs(ma - mb) > 2 * se and min(acc[a]["n"], acc[b]["n"]) > 1

    def claim(text, a, b):
        gt, d, real = cmp(a, b)
        return {"claim": text, "holds": gt, "margin_points": d, "beyond_noise": real}

    vals = [v for v, _ in rows]
    checks = []
    if key == "peft" and "adapter" in acc:
        for v in vals:
            if v != "adapter":
                checks.append(claim(f"adapter beats {v}", "adapter", v))
    elif key == "layers":
        lab = {v.split(" (")[0]: v for v in vals}
        if "all" in lab:
            for v in vals:
                if v != lab["all"]:
                    checks.append(claim(f"all blocks beat {v}", lab["all"], v))
        if "first half" in lab and "second half" in lab:
            checks.append(claim("shallow blocks (first half) beat deep ones (second half)", lab["first half"], lab["second half"]))
    elif key == "bottleneck":
        nums = sorted(vals, key=lambda v: float(v))
        for lo, hi in zip(nums, nums[1:]):
            checks.append(claim(f"bottleneck {hi} beats {lo}", hi, lo))
    elif key == "lambda" and "0" in acc:
        for v in vals:
            if v != "0":
                checks.append(claim(f"lambda {v} beats lambda 0 (no distillation)", v, "0"))
    elif key == "loss" and "contrastive + distill" in acc:
        for v in vals:
            if v != "contrastive + distill":
                checks.append(claim(f"both terms beat {v}", "contrastive + distill", v))
    best = max(vals, key=lambda v: acc[v]["mean"])
    held = sum(c["holds"] for c in checks)
    real = sum(c["holds"] and c["beyond_noise"] for c in checks)
    against = sum((not c["holds"]) and c["beyond_noise"] for c in checks)
    if not checks:
        verdict = "nothing to compare"
    elif against:
        verdict = "contradicts the paper's direction"
    elif held == len(checks):
        verdict = "reproduces the paper's direction" if real else "goes the paper's way, but within the seeds' noise"
    else:
        verdict = "partly goes the paper's way" if held else "does not go the paper's way (within noise)"
    text = (f"{verdict}: {held} of {len(checks)} comparisons go the paper's way ({real} beyond the seeds' noise, "
            f"{against} against it beyond noise); best here: {best} ({100 * acc[best]['mean']:.1f}%)")
    return {"text": text, "verdict": verdict, "checks": checks, "best": best}


# ---------- HTML ----------

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.note{color:#555;font-size:90%}
h2{margin-top:2em;border-bottom:1px solid #ddd}svg{background:#fff}"""
COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2"]


def fmt(x, unit):
    if x is None:
        return "—"
    if unit == "pct":
        return f"{100 * x:.1f}%"
    if unit == "int":
        return f"{x:,.0f}"
    if unit == "s":
        return f"{x:.1f} s"
    return f"{x:.3f}"


def pm(ms, unit):
    if not ms or ms["mean"] is None:
        return "—"
    if ms["n"] < 2 or unit == "int":
        return fmt(ms["mean"], unit)
    sd = 100 * ms["std"] if unit == "pct" else ms["std"]
    return f"{fmt(ms['mean'], unit)} ± {sd:.1f}" if unit in ("pct", "s") else f"{fmt(ms['mean'], unit)} ± {sd:.3f}"


def bars_svg(labels, series, names, title, ref=None, ref_label="", unit="pct", w=520, h=240):
    """Grouped bars with error bars: series[j][i] = (mean, std) of bar group i, series j."""
    pad_l, pad_b, pad_t = 50, 60, 26
    vals = [m + s for ser in series for (m, s) in ser if m is not None] + ([ref] if ref is not None else [])
    top = max(vals + [1e-9]) * 1.1
    if unit == "pct":
        top = min(1.0, math.ceil(top * 5) / 5)
    gw = (w - pad_l - 10) / max(len(labels), 1)
    bw = gw * 0.8 / max(len(series), 1)
    y = lambda v: pad_t + (h - pad_t - pad_b) * (1 - v / top)  # noqa: E731
    o = [f'<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg" font-size="11">',
         f'<text x="{w / 2}" y="14" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>']
    for t in range(5):
        v = top * t / 4
        o.append(f'<line x1="{pad_l}" x2="{w - 10}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
                 f'<text x="{pad_l - 4}" y="{y(v) + 4:.1f}" text-anchor="end">'
                 f'{(f"{100 * v:.0f}%" if unit == "pct" else f"{v:.2g}")}</text>')
    for i, lab in enumerate(labels):
        for j, ser in enumerate(series):
            m, s = ser[i]
            if m is None:
                continue
            x = pad_l + i * gw + gw * 0.1 + j * bw
            o.append(f'<rect x="{x:.1f}" y="{y(m):.1f}" width="{bw - 1:.1f}" height="{y(0) - y(m):.1f}" '
                     f'fill="{COLORS[j % len(COLORS)]}"><title>{html.escape(names[j])} {html.escape(lab)}: '
                     f'{fmt(m, unit)}</title></rect>')
            if s:
                cx = x + bw / 2
                o.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(m + s):.1f}" y2="{y(max(m - s, 0)):.1f}" stroke="#000"/>')
        o.append(f'<text x="{pad_l + (i + 0.5) * gw:.1f}" y="{h - pad_b + 14}" text-anchor="middle">'
                 f'{html.escape(lab[:18])}</text>')
    if ref is not None:
        o.append(f'<line x1="{pad_l}" x2="{w - 10}" y1="{y(ref):.1f}" y2="{y(ref):.1f}" stroke="#d00" '
                 f'stroke-dasharray="4 3"/><text x="{w - 12}" y="{y(ref) - 3:.1f}" text-anchor="end" fill="#d00">'
                 f'{html.escape(ref_label)}</text>')
    for j, n in enumerate(names):
        if len(names) > 1:
            o.append(f'<rect x="{pad_l + j * 180}" y="{h - 22}" width="10" height="10" fill="{COLORS[j % len(COLORS)]}"/>'
                     f'<text x="{pad_l + j * 180 + 14}" y="{h - 13}">{html.escape(n)}</text>')
    o.append("</svg>")
    return "".join(o)


def dots_svg(labels, series, names, title, ref=None, ref_label="", w=520, h=240):
    """Means as dots with +-1 std bars, on an axis zoomed to the values (differences of a point or two
    between settings would vanish on bars from zero): series[j][i] = (mean, std)."""
    pad_l, pad_b, pad_t = 50, 60, 26
    vals = [v for ser in series for (m, sd) in ser if m is not None for v in (m - (sd or 0), m + (sd or 0))]
    if ref is not None:
        vals.append(ref)
    lo, hi = min(vals), max(vals)
    span = max(hi - lo, 0.01)
    lo, hi = lo - 0.1 * span, hi + 0.1 * span
    gw = (w - pad_l - 10) / max(len(labels), 1)
    y = lambda v: pad_t + (h - pad_t - pad_b) * (1 - (v - lo) / (hi - lo))  # noqa: E731
    o = [f'<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg" font-size="11">',
         f'<text x="{w / 2}" y="14" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>']
    for t in range(5):
        v = lo + (hi - lo) * t / 4
        o.append(f'<line x1="{pad_l}" x2="{w - 10}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
                 f'<text x="{pad_l - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{100 * v:.1f}%</text>')
    if ref is not None:
        o.append(f'<line x1="{pad_l}" x2="{w - 10}" y1="{y(ref):.1f}" y2="{y(ref):.1f}" stroke="#d00" '
                 f'stroke-dasharray="4 3"/><text x="{pad_l + 4}" y="{y(ref) - 3:.1f}" fill="#d00">'
                 f'{html.escape(ref_label)}</text>')
    n = max(len(series), 1)
    for i, lab in enumerate(labels):
        for j, ser in enumerate(series):
            m, sd = ser[i]
            if m is None:
                continue
            cx = pad_l + i * gw + gw * (j + 1) / (n + 1)
            col = COLORS[j % len(COLORS)]
            if sd:
                o.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(m + sd):.1f}" y2="{y(m - sd):.1f}" stroke="{col}"/>')
            o.append(f'<circle cx="{cx:.1f}" cy="{y(m):.1f}" r="4" fill="{col}"><title>{html.escape(names[j])} '
                     f'{html.escape(lab)}: {100 * m:.1f}% ± {100 * (sd or 0):.1f}</title></circle>')
        o.append(f'<text x="{pad_l + (i + 0.5) * gw:.1f}" y="{h - pad_b + 14}" text-anchor="middle">'
                 f'{html.escape(lab if gw > 110 else lab.split(" (")[0][:12])}</text>')
    if len(names) > 1:
        for j, nm in enumerate(names):
            o.append(f'<circle cx="{pad_l + j * 110 + 5}" cy="{h - 17}" r="4" fill="{COLORS[j % len(COLORS)]}"/>'
                     f'<text x="{pad_l + j * 110 + 14}" y="{h - 13}">{html.escape(nm)}</text>')
    o.append("</svg>")
    return "".join(o)


def scatter_svg(points, title, w=520, h=260):
    """points: (x = trainable parameters, y = accuracy, label); log x."""
    pad_l, pad_b, pad_t = 50, 40, 26
    xs = [p[0] for p in points]
    lo, hi = math.log10(min(xs)) - 0.05, math.log10(max(xs)) + 0.05
    ys = [p[1] for p in points]
    ylo, yhi = min(ys) - 0.02, max(ys) + 0.02
    X = lambda v: pad_l + (w - pad_l - 20) * (math.log10(v) - lo) / max(hi - lo, 1e-9)  # noqa: E731
    Y = lambda v: pad_t + (h - pad_t - pad_b) * (1 - (v - ylo) / max(yhi - ylo, 1e-9))  # noqa: E731
    o = [f'<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg" font-size="11">',
         f'<text x="{w / 2}" y="14" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>',
         f'<text x="{w / 2}" y="{h - 6}" text-anchor="middle">trainable parameters (log scale)</text>']
    for t in range(5):
        v = ylo + (yhi - ylo) * t / 4
        o.append(f'<text x="{pad_l - 4}" y="{Y(v) + 4:.1f}" text-anchor="end">{100 * v:.0f}%</text>'
                 f'<line x1="{pad_l}" x2="{w - 20}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#eee"/>')
    for x, yv, lab in points:
        o.append(f'<circle cx="{X(x):.1f}" cy="{Y(yv):.1f}" r="4" fill="#4c78a8"><title>{html.escape(lab)}: {x:,} '
                 f'parameters, {100 * yv:.1f}%</title></circle><text x="{X(x) + 6:.1f}" y="{Y(yv) + 4:.1f}">'
                 f'{html.escape(lab)}</text>')
    o.append("</svg>")
    return "".join(o)


def cost_svg(b, w=520, h=240):
    """Cumulative compute of serving M downstream modules with the new model: TaCA once, or one
    re-tune per module."""
    pad_l, pad_b, pad_t = 50, 40, 26
    M = max(8, 2 * (b["break_even_modules"] or 4))
    taca, per = b["taca"]["train_s"], b["mean_retune_s"]
    top = max(taca, per * M) * 1.1
    X = lambda m: pad_l + (w - pad_l - 20) * m / M  # noqa: E731
    Y = lambda v: pad_t + (h - pad_t - pad_b) * (1 - v / top)  # noqa: E731
    o = [f'<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg" font-size="11">',
         f'<text x="{w / 2}" y="14" text-anchor="middle" font-weight="bold">core-seconds to move M modules onto the new model</text>',
         f'<text x="{w / 2}" y="{h - 6}" text-anchor="middle">downstream modules M</text>']
    for t in range(5):
        v = top * t / 4
        o.append(f'<text x="{pad_l - 4}" y="{Y(v) + 4:.1f}" text-anchor="end">{v:.0f} s</text>'
                 f'<line x1="{pad_l}" x2="{w - 20}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#eee"/>')
    o.append(f'<line x1="{X(0):.1f}" x2="{X(M):.1f}" y1="{Y(taca):.1f}" y2="{Y(taca):.1f}" stroke="#4c78a8" stroke-width="2"/>'
             f'<text x="{X(M) - 4:.1f}" y="{Y(taca) - 4:.1f}" text-anchor="end" fill="#4c78a8">TaCA (once)</text>'
             f'<line x1="{X(0):.1f}" x2="{X(M):.1f}" y1="{Y(0):.1f}" y2="{Y(per * M):.1f}" stroke="#f58518" stroke-width="2"/>'
             f'<text x="{X(M) - 4:.1f}" y="{Y(per * M) + 12:.1f}" text-anchor="end" fill="#f58518">re-tune each module</text>')
    for m in range(0, M + 1, max(1, M // 8)):
        o.append(f'<text x="{X(m):.1f}" y="{h - pad_b + 14}" text-anchor="middle">{m}</text>')
    o.append("</svg>")
    return "".join(o)


def render_html(r):
    p, ref, mach = r["plan"], r["reference"], r["machine"]
    S = r["settings"]
    o = [f"<!doctype html><html><head><meta charset='utf-8'><title>taca ablations</title><style>{CSS}</style></head><body>",
         "<h1>TaCA ablations on the embedded setup</h1>",
         f"<p class='note'>Generated {html.escape(r['generated'])} by deploy/ablations.sh on {html.escape(mach['cpu'])}, "
         f"{mach['cores']} cores ({html.escape(', '.join(mach['isa']) or 'no AVX2')}). Models: "
         f"{html.escape(r['models'])}. Budget {p['budget_min']:g} min"
         + (f", whole run {r['total_s'] / 60:.1f} min" if r["total_s"] else "") +
         f"; {len(p['settings'])} settings × {p['seeds']} seed(s) × {p['steps']} steps of batch "
         f"{r['runs'][0]['batch']}, two runs at a time "
         f"(one rank, one thread each: training times are under that sharing).</p>"]
    if p["reductions"]:
        o.append("<p><b>Reduced to fit the budget:</b> " + html.escape("; ".join(p["reductions"])) + ".</p>")
    o.append(f"<p>Held out: {ref['test_stills']} stills (24 shape × colour classes) and {ref['test_motion_frames']} "
             f"motion frames (4 directions, sequences of 8). Before the upgrade the old linear head scores "
             f"{fmt(ref['old_head_old'], 'pct')} on old features; plugged onto the unadapted new encoder it scores "
             f"{fmt(ref['old_head_unadapted_new'], 'pct')}; a head re-trained on new features "
             f"{fmt(ref['new_head_new'], 'pct')}. Mean ± sample std over seeds.</p>")

    # the settings table
    o.append("<h2>Every setting</h2><table><tr><th>setting</th><th>seeds</th>"
             + "".join(f"<th>{html.escape(lab)}</th>" for _, lab, _ in METRICS) + "</tr>")
    for s, v in S.items():
        o.append(f"<tr><td>{html.escape(s)} <span class='note'>{html.escape(' '.join(v['flags']) or '(base)')}</span></td>"
                 f"<td>{len(v['seeds'])}</td>" + "".join(f"<td>{pm(v[k], u)}</td>" for k, _, u in METRICS) + "</tr>")
    o.append("</table>")

    for g in r["groups"]:
        labels = [row["value"] for row in g["rows"]]
        ser = lambda k: [(S[row["setting"]][k]["mean"], S[row["setting"]][k]["std"]) for row in g["rows"]]  # noqa: E731
        o.append(f"<h2>{html.escape(g['title'])}</h2><p class='note'>{html.escape(g['paper'])}. Here: "
                 "whether each of the paper's comparisons holds, per measure of the adapted features (points; "
                 "* = beyond twice the seeds' standard error).</p>")
        claims = [c["claim"] for c in next(iter(g["findings"].values()))["checks"]]
        o.append("<table><tr><th>measure</th><th>verdict</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in claims)
                 + "</tr>")
        for mk, fd in g["findings"].items():
            o.append(f"<tr><td>{html.escape(fd['measure'])}</td><td>{html.escape(fd['verdict'])}</td>" + "".join(
                f"<td>{'yes' if c['holds'] else 'no'} ({c['margin_points']:+.1f}{'*' if c['beyond_noise'] else ''})</td>"
                for c in fd["checks"]) + "</tr>")
        o.append("</table>")
        o.append(dots_svg(labels, [ser("old_head_adapted")], ["old head on adapted"],
                          "old linear head on adapted features (mean ± std)", ref=ref["old_head_old"],
                          ref_label="old head on old features"))
        o.append(bars_svg(labels, [ser("negative_flips"), ser("t2i_r1")], ["negative flips", "cross-model R@1 t→i"],
                          "negative flips and cross-model R@1"))
        kinds = list(r["modules"])
        for k in kinds:
            o.append(dots_svg(labels, [[(S[row["setting"]]["modules"][k]["accuracy"]["mean"],
                                         S[row["setting"]]["modules"][k]["accuracy"]["std"]) for row in g["rows"]]],
                              [k], f"{k} module on adapted features (fitted on old)", ref=r["modules"][k]["old_on_old"],
                              ref_label="on old features", w=340, h=220))
        o.append("<table><tr><th>" + html.escape(g["key"]) + "</th>"
                 + "".join(f"<th>{html.escape(lab)}</th>" for _, lab, _ in METRICS[:6])
                 + "".join(f"<th>{k}</th>" for k in kinds) + "</tr>")
        for row in g["rows"]:
            v = S[row["setting"]]
            o.append(f"<tr><td>{html.escape(row['value'])}</td>" + "".join(f"<td>{pm(v[k], u)}</td>" for k, _, u in METRICS[:6])
                     + "".join(f"<td>{pm(v['modules'][k]['accuracy'], 'pct')}</td>" for k in kinds) + "</tr>")
        o.append("</table>")

    pts = [(v["trainable"]["mean"], v["old_head_adapted"]["mean"], s) for s, v in S.items() if v["trainable"]["mean"]]
    if len(pts) >= 2:
        o.append("<h2>Accuracy against trainable parameters</h2>")
        o.append(scatter_svg(pts, "old head on adapted features vs trainable parameters"))
        o.append("<p class='note'>Trainable parameters include the projector (Linear(new → 4096) → GELU → Linear(4096 → old), "
                 "the paper's default), which is most of them at these widths; the table's last parameter column is the "
                 "adapters or LoRA alone.</p>")

    # downstream modules and the reviewers' baseline
    M = r["modules"]
    b = r["baseline"]
    o.append("<h2>Downstream modules of several kinds, and re-tuning them instead</h2>")
    o.append("<p>Each module is fitted once on the old model's features and never changed. TaCA (base setting) plugs the "
             "adapted encoder under it; the reviewers' alternative re-tunes each module on the new model's own features.</p>")
    o.append("<table><tr><th>module</th><th>data</th><th>parameters</th><th>old features (before)</th>"
             "<th>unadapted new features</th><th>TaCA adapted (module unchanged)</th><th>negative flips</th>"
             "<th>re-tuned on new features</th><th>re-tune cost: labelled samples</th><th>re-tune: embed + fit (core-s)</th></tr>")
    for k, m in M.items():
        t = S["base"]["modules"][k] if "base" in S else None
        c = m["retune_cost"]
        o.append(f"<tr><td>{k}</td><td>{html.escape(m['data'])}</td><td>{m['params']:,}</td>"
                 f"<td>{fmt(m['old_on_old'], 'pct')}</td><td>{fmt(m['old_on_unadapted_new'], 'pct')}</td>"
                 f"<td>{pm(t['accuracy'], 'pct') if t else '—'}</td><td>{pm(t['negative_flips'], 'pct') if t else '—'}</td>"
                 f"<td>{fmt(m['retuned_on_new'], 'pct')}</td><td>{c['labelled_samples']:,}</td>"
                 f"<td>{fmt(c['embed_train_s'], 's')} + {fmt(c['fit_s'], 's')}</td></tr>")
    o.append("</table>")
    kinds = list(M)
    o.append(bars_svg(kinds, [[(M[k]["old_on_old"], 0) for k in kinds],
                              [((S["base"]["modules"][k]["accuracy"]["mean"] if "base" in S else None),
                                (S["base"]["modules"][k]["accuracy"]["std"] if "base" in S else 0)) for k in kinds],
                              [(M[k]["retuned_on_new"], 0) for k in kinds]],
                      ["old features", "TaCA, unchanged module", "re-tuned on new"], "accuracy per downstream module", w=620))
    if b:
        o.append(f"<p>Cost, in core-seconds on this machine. TaCA: {b['taca']['train_s']:.1f} of training once (one "
                 f"thread; two runs shared the 2 cores), "
                 f"{b['taca']['trainable']:,.0f} trainable parameters, {b['taca']['unlabelled_images_seen']:,} unlabelled "
                 f"images seen and no labels, for every module at once. Re-tuning: {b['mean_retune_s']:.2f} per module on "
                 f"average (embedding its training set with the new model at the reference's measured speed, then the fit "
                 f"on one core), "
                 f"and each module's own labelled data again. On compute alone TaCA is the cheaper from "
                 f"<b>{b['break_even_modules']}</b> modules on; it never needs the modules' labels or their owners, which "
                 f"re-tuning does, and it gives up accuracy against re-tuning (the table above).</p>")
        o.append(cost_svg(b))
    o.append("<h2>Runs</h2><table><tr><th>setting</th><th>seed</th><th>steps</th><th>train</th><th>eval</th>"
             "<th>old head</th><th>flips</th><th>R@1 t→i</th><th>cosine</th></tr>")
    for x in r["runs"]:
        o.append(f"<tr><td>{html.escape(x['setting'])}</td><td>{x['seed']}</td><td>{x['steps']}</td><td>{x['train_s']:.1f} s</td>"
                 f"<td>{x['eval_s']:.1f} s</td><td>{fmt(x['old_head_adapted'], 'pct')}</td><td>{fmt(x['negative_flips'], 'pct')}</td>"
                 f"<td>{fmt(x['t2i_r1'], 'pct')}</td><td>{fmt(x['cosine'], 'num')}</td></tr>")
    o.append("</table></body></html>\n")
    return "\n".join(o)


def print_summary(r):
    S = r["settings"]
    print(f"{'setting':<14} {'seeds':>5} {'old head':>14} {'flips':>12} {'R@1 t->i':>14} {'cosine':>8} {'trainable':>10} "
          f"{'train':>8}  " + " ".join(f"{k:>9}" for k in r["modules"]))
    for s, v in S.items():
        print(f"{s:<14} {len(v['seeds']):>5} {pm(v['old_head_adapted'], 'pct'):>14} {pm(v['negative_flips'], 'pct'):>12} "
              f"{pm(v['t2i_r1'], 'pct'):>14} {fmt(v['cosine']['mean'], 'num'):>8} {fmt(v['trainable']['mean'], 'int'):>10} "
              f"{fmt(v['train_s']['mean'], 's'):>8}  "
              + " ".join(f"{fmt(v['modules'][k]['accuracy']['mean'], 'pct'):>9}" for k in r["modules"]))
    ref = r["reference"]
    print(f"reference: old head on old {fmt(ref['old_head_old'], 'pct')}, on unadapted new "
          f"{fmt(ref['old_head_unadapted_new'], 'pct')}, new head on new {fmt(ref['new_head_new'], 'pct')}")
    for k, m in r["modules"].items():
        print(f"module {k:<9} old {fmt(m['old_on_old'], 'pct'):>7}  re-tuned on new {fmt(m['retuned_on_new'], 'pct'):>7}  "
              f"re-tune cost {m['retune_cost']['total_s']:.2f} s, {m['retune_cost']['labelled_samples']} labels")
    if r["baseline"]:
        b = r["baseline"]
        print(f"TaCA once: {b['taca']['train_s']:.1f} core-s; re-tuning {b['mean_retune_s']:.2f} core-s per module: "
              f"TaCA cheaper from {b['break_even_modules']} modules")
    for g in r["groups"]:
        for mk, fd in g["findings"].items():
            print(f"{g['key']:<10} {fd['measure']:<28} {fd['verdict']}: {fd['text'].split(': ', 1)[1]}")


if __name__ == "__main__":
    main()
