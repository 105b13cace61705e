#!/usr/bin/env bash
# Users per second of `coordinator recommend --all` (top-10, seen items
# filtered, CSV written) on an ml-100k-sized model and a larger synthetic one,
# next to `implicit`'s batch recommend on random factors of the same shapes
# (bench/implicit_recommend.py).
#
# Usage: bench/recommend_all.sh   Environment: COORD (default target/release/coordinator,
# built when missing), ANCHORS_PY (default ~/.anchors/bin/python, with implicit 0.7),
# ML100K (default ../shared/data/ml-100k/u.data), BIG="users items ratings"
# (default "100000 20000 2000000").
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
COORD=${COORD:-"$ROOT/target/release/coordinator"}
PY=${ANCHORS_PY:-"$HOME/.anchors/bin/python"}
ML100K=${ML100K:-"$ROOT/../shared/data/ml-100k/u.data"}
read -r BU BI BR <<<"${BIG:-100000 20000 2000000}"
if [ ! -x "$COORD" ]; then
    (cd "$ROOT" && cargo build --release -p als-coordinator)
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

ours() { # NAME MODEL_DIR
    local log t
    log=$("$COORD" recommend --model "$2" --all -n 10 --out "$WORK/top.csv" 2>&1 >/dev/null)
    t=$(grep -o 'users_per_second=[0-9]*' <<<"$log" | cut -d= -f2)
    printf '%-34s ours: %8s users/s\n' "$1" "$t"
}

theirs() { # USERS ITEMS RATINGS
    OPENBLAS_NUM_THREADS=1 "$PY" "$ROOT/bench/implicit_recommend.py" --users "$1" --items "$2" --ratings "$3" --factors 64 2>/dev/null
}

"$COORD" --data "$ML100K" --no-test --in-process --factors 64 --iterations 5 --quiet --out "$WORK/ml100k" >/dev/null 2>&1
ours "ml-100k (943 x 1682, k=64)" "$WORK/ml100k"
theirs 943 1682 100000

"$COORD" generate --out "$WORK/big.csv" --users "$BU" --items "$BI" --ratings "$BR" --quiet >/dev/null 2>&1
"$COORD" --data "$WORK/big.csv" --no-test --in-process --factors 64 --iterations 2 --quiet --out "$WORK/big" >/dev/null 2>&1
ours "synthetic ($BU x $BI, k=64)" "$WORK/big"
theirs "$BU" "$BI" "$BR"
