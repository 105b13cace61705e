#!/usr/bin/env bash
# Load test of `coordinator serve` on loopback with wrk: GET recommendations
# (rotating over every user) and POST fold-in (a few fixed histories).
# Prints requests/s and p99 latency of each.
#
# Usage: bench/serve.sh [RATINGS_FILE]   (default ../shared/data/ml-100k/u.data;
#        without it, the embedded synthetic dataset)
# Environment: COORD (coordinator binary, default target/release/coordinator,
# built when missing), DURATION (default 10s), CONNECTIONS (default 32),
# WRK_THREADS (default 1), SERVE_THREADS (default: all cores).
# Needs wrk (Debian: apt-get install -y wrk) and python3.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${1:-"$ROOT/../shared/data/ml-100k/u.data"}
COORD=${COORD:-"$ROOT/target/release/coordinator"}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
WRK_THREADS=${WRK_THREADS:-1}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
if [ ! -x "$COORD" ]; then
    (cd "$ROOT" && cargo build --release -p als-coordinator)
fi

WORK=$(mktemp -d)
SERVER=""
cleanup() {
    if [ -n "$SERVER" ]; then kill -TERM "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

DATA_ARGS=()
if [ -f "$DATA" ]; then DATA_ARGS=(--data "$DATA"); else echo "no $DATA: using the embedded synthetic dataset" >&2; fi
"$COORD" "${DATA_ARGS[@]}" --no-test --in-process --factors 64 --iterations 10 --quiet --out "$WORK/model" >/dev/null 2>"$WORK/train.log"

# Fold-in bodies: 20 new users with 30 random ratings each.
python3 - "$WORK/model" > "$WORK/histories.jsonl" <<'PY'
import json, random, sys
model = sys.argv[1]
items = [l.rstrip("\n") for l in open(f"{model}/item_ids.txt")]
rng = random.Random(7)
for _ in range(20):
    hist = {i: float(rng.randint(1, 5)) for i in rng.sample(items, 30)}
    print(json.dumps({"ratings": hist, "n": 10}))
PY

SERVE_ARGS=(serve --model "$WORK/model" --listen 127.0.0.1:0)
[ -n "${SERVE_THREADS:-}" ] && SERVE_ARGS+=(--threads "$SERVE_THREADS")
RUST_LOG=warn "$COORD" "${SERVE_ARGS[@]}" > "$WORK/serve.out" &
SERVER=$!
for _ in $(seq 100); do grep -q "listening on" "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^listening on //p' "$WORK/serve.out")
[ -n "$URL" ] || { echo "serve did not start" >&2; exit 1; }

run_wrk() { # NAME SCRIPT
    local out
    out=$(USERS_FILE="$WORK/model/user_ids.txt" HISTORIES_FILE="$WORK/histories.jsonl" \
        wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$ROOT/bench/lua/$2" "$URL")
    local rps p99 errors
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errors=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    printf '%-28s %10s req/s   p99 %8s   non-2xx %s\n' "$1" "$rps" "$p99" "${errors:-0}"
}

echo "model: $(wc -l < "$WORK/model/user_ids.txt") users, $(wc -l < "$WORK/model/item_ids.txt") items, k=64; wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION on $(nproc) cores"
run_wrk "GET user recommendations" users.lua
run_wrk "POST fold-in (30 ratings)" fold_in.lua
