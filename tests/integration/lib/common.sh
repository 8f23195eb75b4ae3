# common.sh: the opening the integration test scripts share, sourced first thing as
#   . "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
# Strict mode; bin (the build's programs), fix (the committed fixtures), src (the source tree) from
# CTest's environment; py, the Debian Python the helpers run on (numpy there); tmp, a scratch folder
# removed at exit; fail, one FAIL line and exit 1. Processes a script starts go into pids (stopped
# with SIGTERM and waited for at exit) or kill9 (SIGKILL: trainers and servers whose end is not under
# test). A script that needs more at exit sets its own EXIT trap, which must remove tmp too.
set -euo pipefail
bin=${TACA_BIN_DIR:?}
fix=${TACA_FIXTURES_DIR:?}
src=${TACA_SOURCE_DIR:?}
py=/usr/bin/python3
tmp=$(mktemp -d)
pids=()
kill9=()
common_cleanup() {
  local p
  for p in "${kill9[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}" "${kill9[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap common_cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
