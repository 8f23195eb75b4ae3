#!/usr/bin/env bash
# CPU AFT training-step benchmark: taca's C step (bench_aft: a CLIP vision tower trained in full +
# linear classifier, CE + 10 R with the AFT kernel regulariser over 1024 + 512 pre-trained features,
# AdamW and Adam on s) vs PyTorch autograd (bench_aft.py) on the same weights and batch, side by
# side in one run, with the sgemm roofline measured on the step's GEMM shapes. Checks first that
# both compute the same loss on the starting parameters (1e-4 relative). Run on a quiet machine.
#   bench/run-aft.sh [ARCH_OR_JSON] [BATCH] [ITERS]
#   (defaults: bench/vit_s16.json, a ViT-S/16 at 224 px; 16; 5. Needs `make build` and --reference deps)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
arch=${1:-$here/vit_s16.json}
batch=${2:-16}
iters=${3:-5}
bin=${TACA_BIN_DIR:-$root/build/bin}
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$root/deploy/install-deps.sh" --reference
"$py" "$here/bench_aft.py" write --arch "$arch" --batch "$batch" --classes 100 --dims 1024,512 --out "$tmp"
torch_json=$("$py" "$here/bench_aft.py" time --arch "$arch" --dir "$tmp" --iters "$iters")
c_json=$("$bin/bench_aft" --model "$tmp/tower.safetensors" --arch "$arch" --inputs "$tmp/inputs.safetensors" \
  --iters "$iters")
echo "$torch_json"
echo "$c_json"
"$py" - "$torch_json" "$c_json" <<'PY'
import json, os, sys
t, c = json.loads(sys.argv[1]), json.loads(sys.argv[2])
def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-30)
e_ce, e_reg = rel(c["loss_ce"], t["loss_ce"]), rel(c["loss_reg"], t["loss_reg"])
e_steps = max(rel(x, y) for x, y in zip(c["losses"], t["losses"]))
print(f"\nAFT step, {os.path.basename(c['arch'])} trained in full + classifier over {c['classes']} classes, "
      f"R over {c['pretrained_dim']} pre-trained features, batch {c['batch']}, {c['threads']} threads")
print(f"  same step: CE {c['loss_ce']:.7g} (PyTorch {t['loss_ce']:.7g}, rel {e_ce:.1e}), "
      f"R {c['loss_reg']:.7g} (PyTorch {t['loss_reg']:.7g}, rel {e_reg:.1e}); "
      f"loss of each later step within {e_steps:.1e}")
print(f"  PyTorch {t['impl']:>22}: {t['samples_per_s']:7.2f} samples/s  (forward {t['forward_s']:.2f} s, "
      f"loss {t['loss_s']:.3f} s, backward+update {t['backward_s']:.2f} s)")
print(f"  taca C                        : {c['samples_per_s']:7.2f} samples/s  ({c['gflops']:.0f} GFLOP/s; "
      f"forward {c['forward_s']:.2f} s, CE {c['ce_s']:.4f} s, AFT term {c['aft_s']:.4f} s, "
      f"backward+update {c['backward_s']:.2f} s of which update {c['update_s']:.3f} s)")
print(f"  sgemm roofline (same shapes)  : {c['roofline_samples_per_s']:7.2f} samples/s  "
      f"({c['gflop_per_sample']:.1f} GFLOP per sample)")
print(f"  C / PyTorch = {c['samples_per_s'] / t['samples_per_s']:.2f}x, "
      f"C / roofline = {100 * c['fraction_of_roofline']:.0f}%, "
      f"PyTorch / roofline = {100 * t['samples_per_s'] / c['roofline_samples_per_s']:.0f}%")
if max(e_ce, e_reg) > 1e-4:
    sys.exit(f"run-aft.sh: C and PyTorch disagree on the first step's loss (CE rel {e_ce:.2e}, R rel {e_reg:.2e} > 1e-4)")
PY
