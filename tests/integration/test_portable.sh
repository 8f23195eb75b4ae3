#!/usr/bin/env bash
# Portable binaries (issue 20): the shipped programs run on CPUs older than the build machine.
#  1. Build check: objdump of taca, taca-train, taca-featured (and the CUDA module) finds no
#     instruction past the x86-64-v2 baseline outside dispatched code (functions named *_v3 or
#     *_avx2, chosen at run time: nn/backend_cpu_dispatch.c, search/exact.c, image/image_resize.c);
#     the scan itself is shown to see such instructions (it flags the dispatched code when nothing
#     is allowed).
#  2. `taca embed` (pixels, images, text) under qemu-x86_64 -cpu Haswell (AVX2, no AVX-512): the
#     same bytes as natively here (the dispatched x86-64-v3 paths on both, OpenBLAS's Haswell
#     kernels pinned for the native run); under -cpu Nehalem
#     (SSE4.2 only: the baseline paths) within 1e-5 of the native features; `--precision bf16`
#     under -cpu Haswell (oneDNN has no BF16 matmul without AVX-512: the portable BF16 path) the
#     same bytes as that path forced natively.
# Skips (77) on a non-x86-64 machine or a TACA_NATIVE=ON build (not portable by choice); the qemu part
# skips when qemu-user is not installed (deploy/install-deps.sh installs it) and is left out in a
# sanitizer build (ASan does not run under qemu-user).
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
[ "$(uname -m)" = x86_64 ] || { echo "skip: not x86-64"; exit 77; }
cache=$bin/../CMakeCache.txt
if [ -f "$cache" ] && grep -q '^TACA_NATIVE:BOOL=ON' "$cache"; then echo "skip: a TACA_NATIVE=ON build"; exit 77; fi
command -v objdump > /dev/null || fail "objdump (binutils) is missing: deploy/install-deps.sh"

# --- 1. no instruction past the baseline outside dispatched code ---
scan="$src/tests/integration/isa_scan.awk"
targets=("$bin/taca" "$bin/taca-train" "$bin/taca-featured")
[ -f "$bin/../lib/libtaca_cuda.so" ] && targets+=("$bin/../lib/libtaca_cuda.so")
for b in "${targets[@]}"; do
  objdump -d --no-show-raw-insn "$b" > "$tmp/dis"
  awk -f "$scan" "$tmp/dis" > "$tmp/bad"
  [ ! -s "$tmp/bad" ] || { head -20 "$tmp/bad"; fail "$(basename "$b"): $(wc -l < "$tmp/bad") function(s) past x86-64-v2 outside dispatched code"; }
  dispatched=$(awk -v allow='^$' -f "$scan" "$tmp/dis" | wc -l)
  echo "  $(basename "$b"): baseline clean; $dispatched dispatched function(s) use AVX2/FMA"
done
# the CUDA module loads NCCL lazily: it is not among its libraries
if [ -f "$bin/../lib/libtaca_cuda.so" ] && command -v readelf > /dev/null; then
  ! readelf -d "$bin/../lib/libtaca_cuda.so" | grep -q 'NEEDED.*libnccl' || fail "libtaca_cuda.so links libnccl (it must dlopen it)"
  echo "  libtaca_cuda.so: libnccl not linked (loaded on first use)"
fi
# the scan sees wide instructions: the dispatched CPU backend and search kernels are there
awk -v allow='^$' -f "$scan" <(objdump -d --no-show-raw-insn "$bin/taca") | grep -q '_v3' ||
  fail "the scan finds no x86-64-v3 code in taca: the CPU backend's v3 copy is missing or the scan is blind"

# --- 2. taca embed under emulated CPUs ---
if [ -f "$cache" ] && grep -q '^TACA_SANITIZE:BOOL=ON' "$cache"; then
  echo "  (sanitizer build: AddressSanitizer's shadow memory does not run under qemu-user; emulation not run)"
  echo "test_portable: all checks passed"
  exit 0
fi
command -v qemu-x86_64 > /dev/null || { echo "skip: qemu-x86_64 (qemu-user) is not installed"; exit 77; }
m=$fix/clip/hf_gelu_f16
imgs=("$fix"/images/*.png)
embed() { # embed OUT_PREFIX [qemu -cpu CPU]
  local out=$1
  shift
  "$@" "$bin/taca" embed --model "$m" --pixels "$m/pixels.npy" --out "$out.pix.npy" --threads 2
  "$@" "$bin/taca" embed --model "$m" --images "${imgs[@]}" --out "$out.img.npy" --threads 2
  "$@" "$bin/taca" embed --model "$m" --tokens "$m/tokens.npy" --out "$out.txt.npy" --threads 2
}
# OpenBLAS picks its kernels by the CPU it sees: on an AVX-512 host natively its SkylakeX/Zen
# kernels, under -cpu Haswell its Haswell ones, and the two round differently. Pin the Haswell
# kernels for the native run so that the comparison is of our own dispatch, whatever the host.
OPENBLAS_CORETYPE=Haswell embed "$tmp/native"
embed "$tmp/haswell" qemu-x86_64 -cpu Haswell 2> "$tmp/qemu.err" || { cat "$tmp/qemu.err"; fail "taca embed failed under qemu -cpu Haswell"; }
embed "$tmp/nehalem" qemu-x86_64 -cpu Nehalem 2> "$tmp/qemu.err" || { cat "$tmp/qemu.err"; fail "taca embed failed under qemu -cpu Nehalem"; }
for k in pix img txt; do
  cmp -s "$tmp/native.$k.npy" "$tmp/haswell.$k.npy" || fail "taca embed ($k) under -cpu Haswell differs from the native result"
done
"$py" - "$tmp" <<'PY' || fail "taca embed under -cpu Nehalem is not within 1e-5 of the native result"
import sys, numpy as np
t = sys.argv[1]
worst = 0.0
for k in ('pix', 'img', 'txt'):
    a, b = np.load(f'{t}/native.{k}.npy'), np.load(f'{t}/nehalem.{k}.npy')
    assert a.shape == b.shape and a.shape[0] > 0, (a.shape, b.shape)
    worst = max(worst, float(np.abs(a - b).max() / np.abs(a).max()))
print(f"  taca embed: -cpu Haswell bit-identical to native; -cpu Nehalem (baseline paths) max rel. diff {worst:.2g}")
sys.exit(0 if worst < 1e-5 else 1)
PY
# --precision bf16 on a CPU without AVX-512 (oneDNN has no BF16 matmul there): the portable BF16 path,
# bit-identical to that path forced natively (TACA_BF16_GEMM=portable, same OpenBLAS kernels).
b16=("$bin/taca" embed --model "$m" --pixels "$m/pixels.npy" --threads 2 --precision bf16)
TACA_BF16_GEMM=portable OPENBLAS_CORETYPE=Haswell "${b16[@]}" --out "$tmp/native.b16.npy"
qemu-x86_64 -cpu Haswell "${b16[@]}" --out "$tmp/haswell.b16.npy" 2> "$tmp/qemu.err" || { cat "$tmp/qemu.err"; fail "taca embed --precision bf16 failed under qemu -cpu Haswell"; }
cmp -s "$tmp/native.b16.npy" "$tmp/haswell.b16.npy" || fail "taca embed --precision bf16 under -cpu Haswell differs from the native portable BF16 path"
echo "  taca embed --precision bf16: -cpu Haswell (no AVX-512: portable BF16 path) bit-identical to it natively"
echo "test_portable: all checks passed"
