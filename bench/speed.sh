#!/usr/bin/env bash
# Speed, side by side, in one go on data this script generates itself:
# our coordinator in-process and in the default mode (--local N) for
# explicit and implicit ALS at k=64 and k=128, the `implicit` library on the
# same data, split and settings, and the roofline (measured f32 GEMM peak,
# minimal flops per iteration, achieved GFLOP/s, efficiency) of each case.
#
#   bench/speed.sh [--quick] [--netflix] [--threads N] [--iterations N]
#                  [--out DIR] [--no-build] [--timeout SECONDS]
#                  [--coordinator PATH]
#
#   --quick       the k=64 cases only
#   --netflix     also the 100M-rating run: explicit k=64, --local 3, its
#                 s/iter and the peak RSS of the whole run (loading included);
#                 generates a 1.9 GB file once and takes ~15 minutes
#   --threads     threads of ours and of implicit (default 2)
#   --iterations  iterations per run (default 10)
#   --out         results folder (default bench/results/speed-<timestamp>)
#   --coordinator the coordinator binary to time (implies --no-build), e.g.
#                 an older build's, run right before this one's in one sitting
#
# Shapes: "ml1m" is MovieLens-1M-shaped (6,040 × 3,706, 800k ratings);
# "gowalla" 30k users × 41k items with 810k interactions (issue 11's
# k=128, α 30, λ 1 case). Both come from `coordinator generate` (seed 42),
# so nothing is downloaded. The split is the anchors protocol's (seed 42,
# 20% test) for every tool. The anchors venv (~/.anchors) is created as
# ../shared/anchors/README.md says when missing. Ours run with
# --objective-every 0: `implicit`'s fit computes no loss either, and the
# objective now counts in an iteration's seconds (it comes with the halves).

set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0
NETFLIX=0
THREADS=2
ITERS=10
OUT=""
BUILD=1
TIMEOUT=1800
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --netflix) NETFLIX=1 ;;
        --threads) THREADS=$2; shift ;;
        --iterations) ITERS=$2; shift ;;
        --out) OUT=$2; shift ;;
        --no-build) BUILD=0 ;;
        --timeout) TIMEOUT=$2; shift ;;
        --coordinator) COORD_GIVEN=$2; BUILD=0; shift ;;
        -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "speed.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

ANCHORS=${ANCHORS_DIR:-"$ROOT/../shared/anchors"}
[ -d "$ANCHORS" ] && ANCHORS=$(cd "$ANCHORS" && pwd)
PY=${ANCHORS_PY:-"$HOME/.anchors/bin/python"}
OUT=${OUT:-"$ROOT/bench/results/speed-$(date +%Y%m%d-%H%M%S)"}
DATA="$ROOT/bench/results/data"
mkdir -p "$OUT" "$DATA"
OUT=$(cd "$OUT" && pwd)
MANIFEST="$OUT/runs.tsv"
ROOFS="$OUT/roofline.tsv"
: > "$MANIFEST"
: > "$ROOFS"
COORD=${COORD_GIVEN:-"$ROOT/target/release/coordinator"}
ROOF="$ROOT/target/release/roofline"
LOG_TAG=speed
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

if [ "$BUILD" = 1 ]; then
    log "building coordinator and roofline (release) ..."
    (cd "$ROOT" && cargo build --release -p als-coordinator -p als-worker && cargo build --release -p als-bench --bin roofline) \
        >"$OUT/build.log" 2>&1 || { log "build failed (see $OUT/build.log)"; exit 1; }
fi
PY_OK=1
if ! "$PY" -c "import implicit, threadpoolctl" >/dev/null 2>&1; then
    if [ -z "${ANCHORS_PY:-}" ]; then
        log "anchors venv missing: installing implicit at ~/.anchors ..."
        { python3 -m venv "$HOME/.anchors" &&
          "$HOME/.anchors/bin/python" -m pip install "implicit>=0.7,<0.8" numpy scipy pandas threadpoolctl; } >"$OUT/venv.log" 2>&1
    fi
    "$PY" -c "import implicit" >/dev/null 2>&1 || { PY_OK=0; log "no usable anchors Python: implicit rows will fail"; }
fi

gen() { # gen NAME USERS ITEMS RATINGS
    local f="$DATA/$1.csv"
    if [ ! -s "$f" ]; then
        log "generating $f ($2 users, $3 items, $4 ratings) ..."
        "$COORD" generate --users "$2" --items "$3" --ratings "$4" --seed 42 --quiet --out "$f.partial" --overwrite \
            >"$OUT/gen-$1.log" 2>&1 && mv "$f.partial" "$f"
    fi
    echo "$f"
}


ours() { # ours NAME DATA MODE ARGS...
    local name=$1 data=$2 mode=$3; shift 3
    # shellcheck disable=SC2086  # mode is a flag list on purpose
    invoke "$name" "$COORD" --data "$data" --test-ratio 0.2 --seed 42 --iterations "$ITERS" --eval-every 0 \
        --objective-every 0 --threads "$THREADS" $mode --quiet --metrics-json "$OUT/$name.metrics.json" "$@"
}

roofline() { # roofline NAME DATA ARGS...: one line of roofline.tsv
    local name=$1 data=$2; shift 2
    invoke "roof-$name" "$ROOF" --data "$data" --threads "$THREADS" --iterations 5 "$@"
    awk -v n="$name" '
        /^peak/ { split($0, a, ": "); sub(/ GFLOP.*/, "", a[2]); peak = a[2] }
        /^floor/ { split($0, a, ": "); sub(/ GFLOP.*/, "", a[2]); floor = a[2] }
        /^measured/ { split($0, a, ": "); split(a[2], b, " "); s = b[1]; sub(/.*, /, "", a[2]); sub(/ GFLOP.*/, "", a[2]); g = a[2] }
        /^efficiency/ { split($0, a, ": "); split(a[2], b, " "); e = b[1] }
        END { printf "%s\t%s\t%s\t%s\t%s\t%s\n", n, peak, floor, s, g, e }' "$OUT/roof-$name.out" >> "$ROOFS"
}

anchor_implicit() { # anchor_implicit NAME DATA FACTORS REG ALPHA
    if [ "$PY_OK" != 1 ]; then fail "$1" "anchors Python unusable"; return; fi
    (cd "$ANCHORS" && invoke "$1" "$PY" implicit_als.py "$2" --format csv --factors "$3" --reg "$4" --alpha "$5" \
        --iters "$ITERS" --solvers cg --threads "$THREADS" --no-lib-eval)
}

ML1M=$(gen ml1m 6040 3706 800000)
EXP="--reg-scaling count --lambda 0.05"
LOCAL="--local $THREADS"

# explicit k=64 (and k=128)
for k in 64 128; do
    [ "$QUICK" = 1 ] && [ "$k" = 128 ] && continue
    # shellcheck disable=SC2086
    ours "exp$k-inproc" "$ML1M" --in-process --factors "$k" $EXP
    # shellcheck disable=SC2086
    ours "exp$k-local" "$ML1M" "$LOCAL" --factors "$k" $EXP
    row "exp$k-inproc" ours ml1m "explicit k=$k l=0.05 x n, in-process" "exp$k-inproc" "" ""
    row "exp$k-local" ours ml1m "explicit k=$k l=0.05 x n, $LOCAL" "exp$k-local" "" ""
    roofline "explicit k=$k ml1m" "$ML1M" --factors "$k" --lambda 0.05
done

# implicit_case TAG DATANAME DATAFILE FACTORS ALPHA LAMBDA: ours in-process and
# in the default mode, implicit's CG at equal settings, the roofline.
implicit_case() {
    local tag=$1 dname=$2 data=$3 k=$4 alpha=$5 lam=$6
    local args="--implicit --alpha $alpha --reg-scaling none --lambda $lam --factors $k --solver cg"
    local setting="implicit k=$k a=$alpha l=$lam, CG"
    # shellcheck disable=SC2086  # args is a flag list on purpose
    ours "$tag-inproc" "$data" --in-process $args
    # shellcheck disable=SC2086
    ours "$tag-local" "$data" "$LOCAL" $args
    anchor_implicit "implicit$k" "$data" "$k" "$lam" "$alpha"
    row "$tag-inproc" ours "$dname" "$setting, in-process" "$tag-inproc" "" ""
    row "$tag-local" ours "$dname" "$setting, $LOCAL" "$tag-local" "" ""
    row "implicit$k" implicit "$dname" "$setting, $THREADS thr" "implicit$k" "solver=cg,threads=$THREADS" "$tag-local"
    roofline "implicit k=$k $dname" "$data" --factors "$k" --implicit --solver cg --alpha "$alpha" --lambda "$lam"
}

# implicit k=64 (α 1, λ 0.05) on ml1m, k=128 (α 30, λ 1) on gowalla.
implicit_case imp64 ml1m "$ML1M" 64 1 0.05
if [ "$QUICK" = 0 ]; then
    implicit_case imp128 gowalla "$(gen gowalla 30000 41000 810000)" 128 30 1
fi

NET_LINE=""
if [ "$NETFLIX" = 1 ]; then
    NET=$(gen netflix 480000 18000 100000000)
    log "netflix: 100M ratings, explicit k=64, --local 3, 3 iterations (peak RSS by /usr/bin/time)"
    invoke netflix /usr/bin/time -v "$COORD" --data "$NET" --no-test --iterations 3 --objective-every 0 --factors 64 --threads "$THREADS" \
        --local 3 --quiet --metrics-json "$OUT/netflix.metrics.json"
    RSS=$(awk -F': ' '/Maximum resident set size/ { printf "%.2f", $2 / 1048576 }' "$OUT/netflix.err")
    SPI=$(python3 -c "import json,sys; print('%.2f' % json.load(open(sys.argv[1]))['seconds_per_iteration'])" "$OUT/netflix.metrics.json" 2>/dev/null || echo "failed")
    NET_LINE="| explicit k=64, 100M synthetic ratings (480k × 18k), --local 3 | $SPI s/iter | peak RSS $RSS GiB (whole run) |"
fi

{
    echo "# speed.sh $(date -Is) on $(hostname), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), $ITERS iterations, $THREADS threads"
    echo "# git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo '+dirty')"
} > "$OUT/header.txt"
cat "$OUT/header.txt"
echo
python3 "$ROOT/bench/summarize.py" compare "$OUT"
echo
echo "Default mode over in-process (s/iter of $LOCAL / s/iter in-process):"
echo
python3 - "$OUT" <<'PY'
import json, os, sys
d = sys.argv[1]
def spi(name):
    try:
        return json.load(open(os.path.join(d, name + ".metrics.json")))["seconds_per_iteration"]
    except Exception:
        return None
print("| case | in-process s/iter | default mode s/iter | ratio |")
print("| --- | --- | --- | --- |")
for case in ("exp64", "exp128", "imp64", "imp128"):
    a, b = spi(case + "-inproc"), spi(case + "-local")
    if a is None and b is None:
        continue
    r = "%.2f" % (b / a) if a and b else "n/a"
    f = lambda v: "failed" if v is None else "%.4f" % v
    print("| %s | %s | %s | %s |" % (case, f(a), f(b), r))
PY
echo
echo "Roofline (in-process, 5 iterations; efficiency = floor time at the measured peak / measured time):"
echo
echo "| case | peak f32 GEMM GFLOP/s | floor GFLOP/iter | s/iter | achieved GFLOP/s | efficiency |"
echo "| --- | --- | --- | --- | --- | --- |"
awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6 }' "$ROOFS"
if [ -n "$NET_LINE" ]; then
    echo
    echo "| case | s/iter | memory |"
    echo "| --- | --- | --- |"
    echo "$NET_LINE"
fi
echo
echo "results: $OUT"
