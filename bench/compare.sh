#!/usr/bin/env bash
# End-to-end comparison: our coordinator against the reference tools of
# ../shared/anchors (implicit, Spark ALS, Surprise) on the same data, the same
# split (SplitMix64, seed 42, 20% test) and the same settings; ONE table of
# seconds per iteration, quality (NDCG@10 or RMSE) and ours/theirs s/iter.
#
#   bench/compare.sh [--quick] [--data-dir DIR] [--out DIR] [--threads N]
#                    [--mode "--in-process"] [--no-build] [--coordinator PATH]
#                    [--timeout SECONDS]
#
#   --quick        ml-100k only, no Spark (implicit, Surprise and ours)
#   --data-dir     where ml-100k/u.data is (default: ../shared/data from the repo root)
#   --out          results folder (default: bench/results/<timestamp>)
#   --threads      threads of our coordinator and of implicit (default 2)
#   --mode         how our coordinator trains (default --in-process; e.g. "--local 2")
#   --no-build     use the existing target/release/coordinator
#   --coordinator  path of the coordinator binary to use (implies --no-build)
#   --timeout      seconds allowed per tool run (default 1800)
#
# Environment: ANCHORS_DIR (default ../shared/anchors), ANCHORS_PY (default
# ~/.anchors/bin/python; the venv is created as the anchors README says when
# it is missing and ANCHORS_PY is not set).
#
# Each tool's failure becomes a row of the table, never the end of the script.
# Everything (stdout, logs, metrics JSON, table.md) lands in the results folder.

set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0
DATA_DIR="$ROOT/../shared/data"
OUT=""
THREADS=2
MODE="--in-process"
BUILD=1
COORD="$ROOT/target/release/coordinator"
TIMEOUT=1800

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --data-dir) DATA_DIR=$2; shift ;;
        --out) OUT=$2; shift ;;
        --threads) THREADS=$2; shift ;;
        --mode) MODE=$2; shift ;;
        --no-build) BUILD=0 ;;
        --coordinator) COORD=$2; BUILD=0; shift ;;
        --timeout) TIMEOUT=$2; shift ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

ANCHORS=${ANCHORS_DIR:-"$ROOT/../shared/anchors"}
[ -d "$DATA_DIR" ] && DATA_DIR=$(cd "$DATA_DIR" && pwd)
[ -d "$ANCHORS" ] && ANCHORS=$(cd "$ANCHORS" && pwd)
PY=${ANCHORS_PY:-"$HOME/.anchors/bin/python"}
OUT=${OUT:-"$ROOT/bench/results/$(date +%Y%m%d-%H%M%S)"}
mkdir -p "$OUT" "$ROOT/bench/results/data"
OUT=$(cd "$OUT" && pwd)
MANIFEST="$OUT/runs.tsv"
: > "$MANIFEST"
LOG_TAG=compare
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------- set-up
COORD_OK=1
COORD_WHY=""
if [ "$BUILD" = 1 ]; then
    log "building coordinator (release) ..."
    if ! (cd "$ROOT" && cargo build --release -p als-coordinator) >"$OUT/build.log" 2>&1; then
        COORD_OK=0; COORD_WHY="coordinator build failed (see build.log)"
        log "$COORD_WHY"
    fi
fi
if [ "$COORD_OK" = 1 ] && [ ! -x "$COORD" ]; then
    COORD_OK=0; COORD_WHY="no coordinator binary at $COORD"
    log "$COORD_WHY"
fi

PY_OK=1
if ! "$PY" -c "import implicit, pyspark, surprise" >/dev/null 2>&1; then
    if [ -z "${ANCHORS_PY:-}" ]; then
        log "anchors venv missing or incomplete: installing it at ~/.anchors (anchors README) ..."
        { python3 -m venv "$HOME/.anchors" &&
          "$HOME/.anchors/bin/python" -m pip install "implicit>=0.7,<0.8" "pyspark>=4,<5" \
              scikit-surprise numpy scipy pandas threadpoolctl; } >"$OUT/venv.log" 2>&1
    fi
    if ! "$PY" -c "import implicit, surprise" >/dev/null 2>&1; then
        PY_OK=0; log "anchors Python ($PY) unusable: see venv.log; anchor rows will fail"
    fi
fi

ML100K="$DATA_DIR/ml-100k/u.data"
SYNTH="$ROOT/bench/results/data/synth_50k_20k_1M.csv"

# ---------------------------------------------------------------- helpers
# ours NAME DATAFILE ARGS...: our coordinator with the common protocol settings.
ours() {
    local name=$1 data=$2; shift 2
    if [ "$COORD_OK" != 1 ]; then fail "$name" "$COORD_WHY"; return; fi
    if [ ! -f "$data" ]; then fail "$name" "no data file $data"; return; fi
    # shellcheck disable=SC2086  # MODE is a flag list on purpose
    invoke "$name" "$COORD" --data "$data" --test-ratio 0.2 --seed 42 --iterations 15 --eval-every 0 \
        --threads "$THREADS" $MODE --metrics-json "$OUT/$name.metrics.json" "$@"
}

# anchor NAME SCRIPT ARGS...: one anchors script (run from its folder).
anchor() {
    local name=$1 script=$2; shift 2
    if [ "$PY_OK" != 1 ]; then fail "$name" "anchors Python unusable (venv.log)"; return; fi
    (cd "$ANCHORS" && invoke "$name" "$PY" "$script" "$@")
}

IMP="--implicit --alpha 1 --reg-scaling none --lambda 0.05 --factors 64 --solver cg"
IMP_SET="implicit k=64 a=1 l=0.05 plain, CG, 15 it, ${THREADS} thr"

# ---------------------------------------------------------------- ml-100k
if [ ! -f "$ML100K" ]; then log "missing $ML100K: every ml-100k row will fail"; fi
D=ml-100k
# (a) implicit feedback: ours vs implicit, CG, equal factors/threads/λ/α.
ours ours-imp-100k "$ML100K" $IMP
row ours-imp-100k ours $D "$IMP_SET" ours-imp-100k "" ""
anchor implicit-100k implicit_als.py "$ML100K" --format ml-100k --factors 64 --reg 0.05 \
    --iters 15 --alpha 1.0 --solvers cg --threads "$THREADS" --no-lib-eval
row implicit-100k implicit $D "$IMP_SET" implicit-100k "solver=cg,threads=$THREADS" ours-imp-100k

# (b) explicit ratings: ours (ALS-WR λ·n, as Spark) vs Spark and Surprise.
ours ours-exp-100k "$ML100K" --factors 64 --lambda 0.05 --reg-scaling count
row ours-exp-100k ours $D "explicit k=64 l=0.05 x n, 15 it" ours-exp-100k "" ""
if [ "$QUICK" = 0 ]; then
    ours ours-exp10-100k "$ML100K" --factors 10 --lambda 0.1 --reg-scaling count
    row ours-exp10-100k ours $D "explicit k=10 l=0.1 x n, 15 it" ours-exp10-100k "" ""
    ours ours-impc-100k "$ML100K" --implicit --alpha 1 --reg-scaling count --lambda 0.05 \
        --factors 64 --solver cholesky
    row ours-impc-100k ours $D "implicit k=64 a=1 l=0.05 x n, Cholesky, 15 it" ours-impc-100k "" ""
    anchor spark-100k spark_als.py "$ML100K" --format ml-100k --iters 15 \
        --modes explicit64,explicit10,implicit64
    row spark-exp64-100k spark $D "explicit k=64 l=0.05 x n, 15 it, local[2]" spark-100k name=explicit64 ours-exp-100k
    row spark-exp10-100k spark $D "explicit k=10 l=0.1 x n, 15 it, local[2]" spark-100k name=explicit10 ours-exp10-100k
    row spark-imp64-100k spark $D "implicit k=64 a=1 l=0.05 x n, 15 it, local[2]" spark-100k name=implicit64 ours-impc-100k
fi
anchor surprise-100k surprise_mf.py "$ML100K" --format ml-100k --factors 64 --epochs 20
row surprise-100k surprise $D "SVD (SGD) k=64, 20 epochs, 1 thr" surprise-100k factors=64 ours-exp-100k

# ---------------------------------------------------------------- synthetic 1M
if [ "$QUICK" = 0 ]; then
    D=synth-1M
    if [ ! -s "$SYNTH" ] && [ "$PY_OK" = 1 ]; then
        log "generating $SYNTH (anchors gen_synth.py, 50k users, 20k items, 1M ratings) ..."
        (cd "$ANCHORS" && "$PY" gen_synth.py "$SYNTH.partial" --users 50000 --items 20000 \
            --ratings 1000000 --seed 42 >"$OUT/gen_synth.out" 2>"$OUT/gen_synth.err") &&
            mv "$SYNTH.partial" "$SYNTH"
    fi
    ours ours-imp-synth "$SYNTH" $IMP
    row ours-imp-synth ours $D "$IMP_SET" ours-imp-synth "" ""
    if [ -s "$SYNTH" ]; then
        anchor implicit-synth implicit_als.py "$SYNTH" --format csv --factors 64 --reg 0.05 \
            --iters 15 --alpha 1.0 --solvers cg --threads "$THREADS" --no-lib-eval
    else
        fail implicit-synth "no synthetic data file $SYNTH (gen_synth.err)"
    fi
    row implicit-synth implicit $D "$IMP_SET" implicit-synth "solver=cg,threads=$THREADS" ours-imp-synth
fi

# ---------------------------------------------------------------- table
{
    echo "# compare.sh $(date -Is) on $(hostname), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# coordinator: $COORD $MODE (git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo '+dirty'))"
} > "$OUT/header.txt"
echo
cat "$OUT/header.txt"
python3 "$ROOT/bench/summarize.py" compare "$OUT"
echo
echo "results: $OUT"
