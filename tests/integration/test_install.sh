#!/usr/bin/env bash
# test_install.sh: `cmake --install` (what `make install PREFIX=... DESTDIR=...` runs) stages the
# programs, the launcher, the .proto files and the docs under DESTDIR/PREFIX, and the installed
# programs run from there (taca-stack finds the programs beside it).
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
build=$(dirname "$bin")
DESTDIR=$tmp/stage cmake --install "$build" --prefix /opt/taca > "$tmp/install.log" || { cat "$tmp/install.log"; fail "cmake --install failed"; }
p=$tmp/stage/opt/taca
for f in bin/taca bin/taca-featured bin/taca-train bin/taca-stack share/taca/proto/taca/v1/feature_cache.proto \
         share/doc/taca/README.md share/doc/taca/ops.md share/doc/taca/featured.md share/doc/taca/storage.md; do
  [ -e "$p/$f" ] || fail "not installed: $f"
done
"$p/bin/taca" --help | grep -q "usage: taca COMMAND" || fail "the installed taca does not run"
"$p/bin/taca-featured" --help > /dev/null || fail "the installed taca-featured does not run"
"$p/bin/taca-train" --help > /dev/null || fail "the installed taca-train does not run"
"$p/bin/taca-stack" --help | grep -q "deploy/stack run" || fail "the installed taca-stack does not run"
[ ! -e "$tmp/stage/opt/taca/stack-state" ] || fail "taca-stack --help created a state folder"
echo "test_install: $(grep -c Installing "$tmp/install.log") files staged under DESTDIR/opt/taca; programs run"
