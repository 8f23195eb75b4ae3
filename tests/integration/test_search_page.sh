#!/usr/bin/env bash
# test_search_page.sh: taca-featured's search page in a real browser (headless Chromium): a
# token-protected server with two models' text towers; the page opened at /?q=..&model=..&compare=..
# runs both searches, and the hits it shows (data-key/data-index in rank order, per model column)
# must be those of `taca query --db search --caption` (offline, the C command line); search by image
# (the page's upload, POST /api/search) gives the hits of `taca query --server search --image`; an
# alias appears in the model selector and its column names its target. Also: the API
# and thumbnails refuse calls without the token, and a page without it shows no hits; a screenshot
# is written (to $TACA_SCREENSHOT if set, e.g. docs/search_page.png). Skips (77) without chromium.
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "skip: chromium not installed (deploy/install-deps.sh)"; exit 77; }
command -v curl >/dev/null || { echo "skip: curl not installed"; exit 77; }
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$tmp/log" ] && tail -5 "$tmp/log" >&2; exit 1; }
model=$fix/clip/hf_gelu_f16
token=page-token-42

"$py" "$src/tests/integration/make_analyst_store.py" "$bin" "$fix" "$tmp" 24
# a second model over the same samples (embed mode), so that the page has two to compare
"$bin/taca" precompute --model "$model" --name tiny_b --db "$tmp/db" --dtype f32 --quiet

"$bin/taca-featured" --db "$tmp/db" --listen 127.0.0.1:0 --http 127.0.0.1:0 --port-file "$tmp/ports" \
  --log "$tmp/log" --threads 2 --token "$token" --model "tiny=$model" --model "tiny_b=$model" &
pid=$!
for _ in $(seq 400); do grep -q '^metrics=' "$tmp/ports" 2>/dev/null && break; sleep 0.05; done
http=$(sed -n 's/^metrics=//p' "$tmp/ports")
[ -n "$http" ] || fail "taca-featured did not start"
base="http://127.0.0.1:$http"

# --- the token guards the page's calls ---
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/api/search?q=x&model=tiny")
[ "$code" = 401 ] || fail "/api/search without the token answered $code, not 401"
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/thumb?index=0")
[ "$code" = 401 ] || fail "/thumb without the token answered $code, not 401"
code=$(curl -s -o "$tmp/t.jpg" -w '%{http_code}' -H "Authorization: Bearer $token" "$base/thumb?index=5")
[ "$code" = 200 ] && [ "$(head -c 2 "$tmp/t.jpg" | od -An -tx1 | tr -d ' ')" = ffd8 ] || fail "/thumb is not a JPEG"
curl -s -H "Authorization: Bearer $token" "$base/api/search?q=x&model=nope" | grep -q "NOT_FOUND" ||
  fail "/api/search with an unknown model does not say NOT_FOUND"

run_browser() { # URL OUT_DOM [SCREENSHOT]
  local extra=()
  [ -n "${3:-}" ] && extra=(--screenshot="$3" --window-size=1280,900 --hide-scrollbars)
  timeout 120 "$browser" --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir="$tmp/chrome" \
    --virtual-time-budget=10000 "${extra[@]}" --dump-dom "$1" > "$2" 2> "$tmp/chrome.err" ||
    { tail -5 "$tmp/chrome.err" >&2; fail "chromium failed on $1"; }
}

q="a small red circle"
qe=$("$py" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$q")
run_browser "$base/?q=$qe&model=tiny&k=6&compare=tiny_b#token=$token" "$tmp/dom.html"

# --- the hits on the page = taca query's, per model, in rank order ---
for m in tiny tiny_b; do
  "$bin/taca" query --db "$tmp/db" --json search --model "$m" --modality image --caption "$q" \
    --text-model "$model" -k 6 > "$tmp/cli_$m.json"
done
"$py" - "$tmp/dom.html" "$tmp/cli_tiny.json" "$tmp/cli_tiny_b.json" <<'PY' || fail "page results differ from taca query"
import json, sys
from html.parser import HTMLParser

class Hits(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cols, self.cur = {}, None
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and "column" in a.get("class", ""):
            self.cur = self.cols.setdefault(a["data-model"], [])
        if tag == "figure" and a.get("class") == "hit":
            self.cur.append((int(a["data-rank"]), a["data-key"], int(a["data-index"]), float(a["data-score"])))

p = Hits()
p.feed(open(sys.argv[1]).read())
assert list(p.cols) == ["tiny", "tiny_b"], p.cols.keys()
for model, path in (("tiny", sys.argv[2]), ("tiny_b", sys.argv[3])):
    ref = json.loads(open(path).read())["results"]
    got = p.cols[model]
    assert [r for r, *_ in got] == list(range(1, len(ref) + 1)), got
    assert [(k, i) for _, k, i, _ in got] == [(o["key"], o["index"]) for o in ref], (model, got, ref)
    assert all(abs(s - o["score"]) <= 1e-4 * max(1, abs(o["score"])) for (*_, s), o in zip(got, ref)), (got, ref)
    print("  %s: %d hits as taca query ranks them: %s" % (model, len(got), [k for _, k, _, _ in got]))
PY
grep -q 'data-state="done"' "$tmp/dom.html" || fail "the page did not reach the done state"
grep -q '<span class="meta url">https://example.invalid/000000016.png</span>' "$tmp/dom.html" ||
  fail "the page does not show the hits' metadata url"

# --- without the token the page shows no hits ---
run_browser "$base/?q=$qe&model=tiny&k=6" "$tmp/dom_anon.html"
! grep -q 'class="hit"' "$tmp/dom_anon.html" || fail "the page showed hits without the token"
grep -q 'data-state="error"' "$tmp/dom_anon.html" || fail "the page without the token shows no error"

# --- search by image: POST /api/search (the page's upload) = taca query --server search --image ---
grpc=$(sed -n 's/^grpc=//p' "$tmp/ports")
img=$(ls "$fix"/images/*.png | head -1)
curl -s -H "Authorization: Bearer $token" -H 'Content-Type: application/octet-stream' --data-binary @"$img" \
  "$base/api/search?model=tiny&k=6" > "$tmp/img_api.json"
TACA_TOKEN=$token "$bin/taca" query --server "127.0.0.1:$grpc" --json search --model tiny --image "$img" -k 6 \
  > "$tmp/img_cli.json" || fail "taca query search --image"
"$py" - "$tmp/img_api.json" "$tmp/img_cli.json" <<'PY' || fail "search by image: the page's API and the CLI differ"
import json, sys
api = json.load(open(sys.argv[1])); cli = json.loads(open(sys.argv[2]).readline())
a = [(h["index"], h["key"]) for h in api["results"]]; c = [(h["index"], h["key"]) for h in cli["results"]]
assert len(a) == 6 and a == c, (api, cli)
assert all(abs(x["score"] - y["score"]) <= 1e-5 * max(1, abs(y["score"])) for x, y in zip(api["results"], cli["results"]))
print(f"  search by image: POST /api/search = taca query search --image ({len(a)} hits)")
PY
code=$(curl -s -o /dev/null -w '%{http_code}' --data-binary @"$img" "$base/api/search?model=tiny&k=6")
[ "$code" = 401 ] || fail "POST /api/search without the token answered $code, not 401"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Length: 999999999' "$base/api/search?model=tiny")
[ "$code" = 413 ] || fail "an oversized POST answered $code, not 413"

# --- aliases in the model selector; a screenshot comparing a model with an alias ---
TACA_TOKEN=$token "$bin/taca" alias --server "127.0.0.1:$grpc" current tiny_b > /dev/null
shot=${TACA_SCREENSHOT:-$tmp/page.png}
run_browser "$base/?q=$qe&model=tiny&k=8&compare=current#token=$token" "$tmp/dom2.html" "$shot"
grep -q '<option value="current"[^>]*>current → tiny_b' "$tmp/dom2.html" || fail "the model selector does not list the alias"
grep -q 'data-model="current → tiny_b"' "$tmp/dom2.html" || fail "the alias column does not name its target"
[ "$(head -c 4 "$shot" | od -An -tx1 | tr -d ' ')" = 89504e47 ] || fail "no PNG screenshot at $shot"
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=""
[ "$status" = 0 ] || fail "taca-featured exited $status after SIGTERM"
echo "ok (screenshot $shot)"
