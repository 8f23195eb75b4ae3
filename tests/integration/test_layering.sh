#!/usr/bin/env bash
# test_layering.sh: no source file includes a layer above its own (docs/design.md, "Layers").
# The link side (storage and client pull in no network, BLAS or codec library) is checked by
# cmake/layering.cmake at configure time. Each rule: a folder and the folders it may include from.
set -euo pipefail
src=${TACA_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
declare -A allowed=(
  [base]="base"
  [text]="base text"
  [image]="base image"
  [nn]="base nn"
  [methods]="base nn methods"
  [storage]="base storage"
  [search]="base storage search"
  [client]="base client taca grpc"
  [trainer]="base text image nn methods storage client taca grpc trainer"
  [services]="base text image nn methods storage search client taca grpc services"
)
bad=0
for layer in "${!allowed[@]}"; do
  [[ -d $src/$layer ]] || { echo "test_layering: folder $layer/ is missing"; bad=1; continue; }
  while IFS= read -r hit; do
    file=${hit%%:*}
    inc=$(sed -E 's/.*#include "([^"]*)".*/\1/' <<<"$hit")
    top=${inc%%/*}
    [[ $inc == */* ]] || { echo "test_layering: $file includes \"$inc\" without its folder"; bad=1; continue; }
    ok=0
    for a in ${allowed[$layer]}; do [[ $top == "$a" ]] && ok=1; done
    if ((!ok)); then echo "test_layering: $file ($layer) includes $inc from a layer it may not use"; bad=1; fi
  done < <(cd "$src" && grep -rHE '^\s*#\s*include\s+"' --include='*.c' --include='*.h' --include='*.cu' "$layer" || true)
done
if ((bad)); then echo "test_layering: FAILED"; exit 1; fi
echo "test_layering: every include of ${!allowed[*]} stays within its layer or below"
