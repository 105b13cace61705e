#!/usr/bin/env bash
# Cluster overhead on one machine: the same training (same data, seed and
# hyperparameters) in-process and through the gRPC cluster path with 1, 2 and
# 3 loopback workers; prints seconds per iteration, the ratio to in-process,
# and bytes sent against the routing minimum (summed over iterations).
#
#   bench/cluster.sh [--users 200000] [--items 50000] [--ratings 10000000]
#                    [--factors 64] [--iterations 5] [--implicit]
#                    [--modes "in-process local1 local2 local3"]
#                    [--threads N] [--out DIR] [--no-build] [--coordinator PATH]
#                    [--timeout SECONDS]
#
# The data file is made once by `coordinator generate` (seed 42) into
# bench/results/data/ and reused.  Runs use --eval-every 0 (the per-iteration
# seconds never include evaluation anyway).  Explicit ratings with a 20% test
# split by default; --implicit trains implicit feedback (alpha 1, CG) with
# --no-test instead (ranking evaluation at this size takes minutes).
# Results: bench/results/<timestamp>-cluster/ (table.md, metrics JSON, logs).

set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
USERS=200000
ITEMS=50000
RATINGS=10000000
FACTORS=64
ITERS=5
IMPLICIT=0
MODES="in-process local1 local2 local3"
THREADS=""
OUT=""
BUILD=1
COORD="$ROOT/target/release/coordinator"
TIMEOUT=3600

while [ $# -gt 0 ]; do
    case "$1" in
        --users) USERS=$2; shift ;;
        --items) ITEMS=$2; shift ;;
        --ratings) RATINGS=$2; shift ;;
        --factors) FACTORS=$2; shift ;;
        --iterations) ITERS=$2; shift ;;
        --implicit) IMPLICIT=1 ;;
        --modes) MODES=$2; shift ;;
        --threads) THREADS=$2; shift ;;
        --out) OUT=$2; shift ;;
        --no-build) BUILD=0 ;;
        --coordinator) COORD=$2; BUILD=0; shift ;;
        --timeout) TIMEOUT=$2; shift ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "cluster.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

OUT=${OUT:-"$ROOT/bench/results/$(date +%Y%m%d-%H%M%S)-cluster"}
DATA_DIR="$ROOT/bench/results/data"
mkdir -p "$OUT" "$DATA_DIR"
OUT=$(cd "$OUT" && pwd)
MANIFEST="$OUT/runs.tsv"
: > "$MANIFEST"
log() { echo "[cluster $(date +%H:%M:%S)] $*" >&2; }

if [ "$BUILD" = 1 ]; then
    log "building coordinator and worker (release) ..."
    if ! (cd "$ROOT" && cargo build --release -p als-coordinator -p als-worker) >"$OUT/build.log" 2>&1; then
        log "build failed: see $OUT/build.log"; tail -20 "$OUT/build.log" >&2; exit 1
    fi
fi
[ -x "$COORD" ] || { log "no coordinator binary at $COORD"; exit 1; }

DATA="$DATA_DIR/gen_u${USERS}_i${ITEMS}_r${RATINGS}.csv"
if [ ! -s "$DATA" ]; then
    log "generating $DATA ($RATINGS ratings, $USERS users, $ITEMS items) ..."
    if ! "$COORD" generate --out "$DATA.partial" --users "$USERS" --items "$ITEMS" \
        --ratings "$RATINGS" --seed 42 --quiet >"$OUT/generate.log" 2>&1; then
        log "coordinator generate failed: see $OUT/generate.log"; tail -5 "$OUT/generate.log" >&2
        rm -f "$DATA.partial"; exit 1
    fi
    mv "$DATA.partial" "$DATA"
fi
log "data: $DATA ($(du -h "$DATA" | cut -f1))"

COMMON=(--data "$DATA" --factors "$FACTORS" --iterations "$ITERS" --lambda 0.05
        --seed 42 --eval-every 0)
if [ "$IMPLICIT" = 1 ]; then
    # No test split: ranking 200k users over 50k items after training costs
    # minutes and is not part of what is measured here.
    COMMON+=(--implicit --alpha 1 --solver cg --no-test)
    KIND="implicit CG, no test split"
else
    COMMON+=(--test-ratio 0.2)
    KIND="explicit, 20% test"
fi
[ -n "$THREADS" ] && COMMON+=(--threads "$THREADS")

for m in $MODES; do
    case "$m" in
        in-process) flags=(--in-process) ;;
        local[0-9]*) flags=(--local "${m#local}") ;;
        *) log "unknown mode $m (in-process, localN)"; continue ;;
    esac
    log "$m: ${flags[*]}"
    t0=$SECONDS
    timeout --kill-after=30 "$TIMEOUT" "$COORD" "${COMMON[@]}" "${flags[@]}" \
        --metrics-json "$OUT/$m.metrics.json" >"$OUT/$m.out" 2>"$OUT/$m.err" </dev/null
    rc=$?
    echo "$rc" > "$OUT/$m.rc"
    log "$m: exit $rc after $((SECONDS - t0)) s"
    printf '%s\tours\t%s\t%s\t%s\t\t\n' "$m" "$(basename "$DATA")" "$m (${flags[*]})" "$m" >> "$MANIFEST"
done

echo
echo "# cluster.sh $(date -Is): $KIND, k=$FACTORS, $ITERS iterations, $RATINGS ratings ($USERS users x $ITEMS items), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/header.txt"
python3 "$ROOT/bench/summarize.py" cluster "$OUT"
echo
echo "results: $OUT"
