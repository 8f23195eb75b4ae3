# common.sh: the opening the integration test scripts share, sourced first thing as
#   . "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
# Strict mode; bin (the build's programs), fix (the committed fixtures), src (the source tree) from
# CTest's environment; py, the Debian Python the helpers run on (numpy there); tmp, a scratch folder
# removed at exit; fail, one FAIL line and exit 1. A script that starts processes sets its own EXIT
# trap, which stops them and removes tmp too.
set -euo pipefail
bin=${TACA_BIN_DIR:?}
fix=${TACA_FIXTURES_DIR:?}
src=${TACA_SOURCE_DIR:?}
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
