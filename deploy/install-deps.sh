#!/usr/bin/env bash
# Installs every Debian package taca needs, idempotently: only what is missing is installed.
#   deploy/install-deps.sh            build + test dependencies
#   deploy/install-deps.sh --reference  also PyTorch/NumPy/PIL/faiss (fixture generation, benchmarks)
set -euo pipefail

core=(
  build-essential cmake pkg-config git ca-certificates
  libopenblas-dev libopenblas0-pthread
  check libjansson-dev libutf8proc-dev
  libjpeg62-turbo-dev libpng-dev libwebp-dev libarchive-dev zlib1g-dev
  liblmdb-dev lmdb-utils libuv1-dev libxxhash-dev
  libgrpc-dev protobuf-c-compiler libprotobuf-c-dev protobuf-compiler grpc-proto
  libopenmpi-dev openmpi-bin liblbfgs-dev libfaiss-dev liblapack-dev g++
  libdnnl-dev  # oneDNN 2.6: the CPU backend's BF16 GEMMs (--precision bf16), as PyTorch uses it
  qemu-user binutils  # test_portable.sh: taca embed under qemu-x86_64 -cpu Haswell; objdump scan
  python3 python3-numpy python3-grpcio python3-protobuf python3-h2
  chromium  # tests/integration/test_search_page.sh: the search page in a headless browser
  python3-torch  # tests/integration/test_eval.sh recomputes the report with torch.optim.LBFGS
)
reference=(python3-torch python3-numpy python3-pil python3-regex python3-faiss)

want=("${core[@]}")
for arg in "$@"; do
  case "$arg" in
    --reference) want+=("${reference[@]}") ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) echo "install-deps: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
