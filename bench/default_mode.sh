#!/usr/bin/env bash
# The default mode's cost: in-process against `--local N` on one data file,
# alternating runs (this machine is noisy; compare within one run), and the
# same for a baseline binary when one is given. Prints each variant's median
# and fastest s/iter, the factor bytes per iteration, the quality (RMSE or
# NDCG@10, which must not move) and `--local N` over in-process: as medians,
# fastest runs, and the median of each rep's back-to-back ratio (the figure
# least moved by a shared machine's drift).
#
#   bench/default_mode.sh [--baseline COORDINATOR] [--reps N] [--iterations N]
#                         [--local N] [--threads N] DATA [TRAIN ARGS...]
#
# e.g. bench/default_mode.sh --baseline /tmp/old/target/release/coordinator \
#        data.csv --implicit --alpha 1 --reg-scaling none --lambda 0.05 --factors 64 --solver cg
#
# The split is the anchors protocol's (seed 42, 20% test); no evaluation but
# the last, no objective. Build first: cargo build --release --bin coordinator.

set -u -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASELINE=""
REPS=5
ITERS=10
LOCAL=2
THREADS=2
while [ $# -gt 0 ]; do
    case "$1" in
        --baseline) BASELINE=$2; shift ;;
        --reps) REPS=$2; shift ;;
        --iterations) ITERS=$2; shift ;;
        --local) LOCAL=$2; shift ;;
        --threads) THREADS=$2; shift ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --*) echo "default_mode.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
        *) break ;;
    esac
    shift
done
[ $# -ge 1 ] || { echo "default_mode.sh: give a data file (see --help)" >&2; exit 2; }
DATA=$1; shift
COORD="$ROOT/target/release/coordinator"
[ -x "$COORD" ] || { echo "default_mode.sh: build first: cargo build --release --bin coordinator" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

variants=("this|$COORD")
[ -n "$BASELINE" ] && variants=("baseline|$BASELINE" "${variants[@]}")
for _ in $(seq "$REPS"); do
    for v in "${variants[@]}"; do
        name=${v%%|*}; bin=${v#*|}
        for mode in --in-process "--local $LOCAL"; do
            # shellcheck disable=SC2086  # mode is a flag list on purpose
            if "$bin" --data "$DATA" --test-ratio 0.2 --seed 42 --iterations "$ITERS" --eval-every 0 --objective-every 0 \
                --threads "$THREADS" $mode --quiet --metrics-json "$TMP/m.json" "$@" >"$TMP/out" 2>"$TMP/err"; then
                echo "$name|$mode|$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
f = d["final"]
q = f.get("ndcg@10", f.get("rmse"))
print(d["seconds_per_iteration"], q, d["iterations"][-1]["bytes_sent"])' "$TMP/m.json")"
            else
                echo "default_mode.sh: $name $mode failed:" >&2
                tail -3 "$TMP/err" >&2
                exit 1
            fi
        done
    done
done | python3 -c '
import statistics as st, sys
runs, last = {}, {}
for line in sys.stdin:
    name, mode, rest = line.strip().split("|")
    spi, quality, sent = rest.split()
    runs.setdefault((name, mode), []).append(float(spi))
    last[(name, mode)] = (quality, sent)
print("| binary | mode | median s/iter | fastest | bytes/iter | quality |")
print("| --- | --- | --- | --- | --- | --- |")
for (name, mode), v in runs.items():
    q, b = last[(name, mode)]
    print("| %s | %s | %.4f | %.4f | %s | %s |" % (name, mode, st.median(v), min(v), b, q))
print()
for name in dict.fromkeys(n for n, _ in runs):
    modes = [m for n, m in runs if n == name]
    a, l = runs[(name, modes[0])], runs[(name, modes[1])]
    # Each rep runs in-process then --local back to back: their ratio
    # cancels most of the drift a shared machine has over a sitting.
    paired = sorted(y / x for x, y in zip(a, l))
    print("%s: %s over in-process: median %+.0f%%, fastest %+.0f%%, paired median %+.0f%% (%d pairs, %+.0f%% to %+.0f%%)" % (
        name, modes[1], 100 * (st.median(l) / st.median(a) - 1), 100 * (min(l) / min(a) - 1),
        100 * (st.median(paired) - 1), len(paired), 100 * (paired[0] - 1), 100 * (paired[-1] - 1)))
'
