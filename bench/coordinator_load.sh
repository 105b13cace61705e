#!/usr/bin/env bash
# What the coordinator itself carries (issue 14): three `worker` processes
# on loopback train a file while the coordinator runs alone under
# `/usr/bin/time -v`. Prints, per build, the coordinator's peak RSS and
# wall time, and from the metrics JSON its bytes per iteration (sent and
# received, the peers' bytes taken out), the bytes outside the halves
# (evaluations and the fetch of the model at the end; the coordinator's,
# and the evaluations' item rows between workers apart) and s/iter.
#
#   bench/coordinator_load.sh [--baseline OLD_BINDIR] [--workers N]
#                             [--iterations N] [--eval-every N]
#                             [--both-input-modes] [--bindir DIR]
#                             [--kill-worker-at ITER]
#                             DATA [TRAIN ARGS...]
#
# --kill-worker-at ITER kills the second worker process (SIGKILL) once the
# coordinator logs iteration ITER: each line then says how the run got the
# lost worker's blocks back (built again by the survivors, or shipped from
# the input the coordinator loaded) and what that cost.
#
# KEEP_TMP=1 keeps the runs' logs and metrics JSON in the temporary
# directory, named on stderr at the end.
#
# --both-input-modes runs this build twice: the coordinator shipping the
# ratings, then the workers reading DATA themselves (--input-on-workers;
# every worker gets DATA's directory as its --input-root). Each line also
# gives the bytes the coordinator shipped at the start and how long the
# blocks took to reach the workers (shipped, or built by them).
#
# With `--checkpoint-dir DIR` or `--out MODEL` among the train args,
# workers of builds that can (`worker --output-root`) get the directory
# holding both (DIR, MODEL's parent) as their --output-root and write the
# rows themselves; each line counts the checkpoints and the files of rows
# the workers wrote, and says whether they wrote the model's.
#
# BINDIR holds `coordinator` and `worker` (default target/release, built by
# `cargo build --release --bins -p als-coordinator -p als-worker`). With
# --baseline the older build runs first, then this one, on the same data,
# split (--test-ratio 0.2, seed 42) and settings. Workers run --threads 1
# each (the coordinator's own threads stay free). The data is never
# generated here: `coordinator generate ... --out DATA` makes it.

set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BINDIR="$ROOT/target/release"
BASELINE=""
WORKERS=3
ITERS=5
EVAL_EVERY=1
BOTH=0
KILL_AT=""

while [ $# -gt 0 ]; do
    case "$1" in
        --baseline) BASELINE=$2; shift ;;
        --bindir) BINDIR=$2; shift ;;
        --workers) WORKERS=$2; shift ;;
        --iterations) ITERS=$2; shift ;;
        --eval-every) EVAL_EVERY=$2; shift ;;
        --both-input-modes) BOTH=1 ;;
        --kill-worker-at) KILL_AT=$2; shift ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
        *) break ;;
    esac
    shift
done
[ $# -ge 1 ] || { echo "usage: $0 [options] DATA [TRAIN ARGS...]" >&2; exit 2; }
DATA=$1; shift
[ -f "$DATA" ] || { echo "no data file $DATA" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install -y time)" >&2; exit 2; }

DATA=$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA")
INPUT_ROOT=$(dirname "$DATA")
TMP=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; if [ -n "${KEEP_TMP:-}" ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi' EXIT
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$TMP/token"

# run_one BINDIR LABEL: one training with WORKERS worker processes; one line out.
run_one() {
    local bd=$1 label=$2 pids=() addrs="" port root_flag=()
    shift 2
    # Workers may read the input only when asked to (--input-on-workers).
    case " $* " in *" --input-on-workers "*) root_flag=(--input-root "$INPUT_ROOT") ;; esac
    # And write the rows of checkpoints and of the model where the coordinator puts them (builds that can).
    local out_root="" prev="" dir
    for a in "$@"; do
        dir=""
        [ "$prev" = --checkpoint-dir ] && dir=$a
        [ "$prev" = --out ] && dir=$(dirname "$a")
        if [ -n "$dir" ]; then
            mkdir -p "$dir"
            dir=$(cd "$dir" && pwd)
            # The directory holding both.
            if [ -z "$out_root" ]; then out_root=$dir; else
                while [[ "$dir/" != "$out_root/"* ]]; do out_root=$(dirname "$out_root"); done
            fi
        fi
        prev=$a
    done
    if [ -n "$out_root" ] && "$bd/worker" --help | grep -q -- --output-root; then
        root_flag+=(--output-root "$out_root")
    fi
    for i in $(seq 0 $((WORKERS - 1))); do
        port=$((52300 + i))
        "$bd/worker" --listen "127.0.0.1:$port" --token-file "$TMP/token" --threads 1 \
            "${root_flag[@]}" > "$TMP/w$i.log" 2>&1 &
        pids+=($!)
        addrs="${addrs:+$addrs,}127.0.0.1:$port"
    done
    sleep 1
    : > "$TMP/c.log"
    local watcher=""
    if [ -n "$KILL_AT" ]; then
        (
            until sed 's/\x1b\[[0-9;]*m//g' "$TMP/c.log" | grep -q "iteration=$KILL_AT "; do sleep 0.05; done
            kill -9 "${pids[1]}"
        ) &
        watcher=$!
    fi
    /usr/bin/time -v "$bd/coordinator" --workers "$addrs" --token-file "$TMP/token" --data "$DATA" \
        --test-ratio 0.2 --seed 42 --iterations "$ITERS" --eval-every "$EVAL_EVERY" --objective-every 0 \
        --quiet --metrics-json "$TMP/m.json" "$@" > "$TMP/c.log" 2>&1
    local rc=$?
    [ -n "$watcher" ] && { kill "$watcher" 2>/dev/null; wait "$watcher" 2>/dev/null; }
    kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null
    if [ $rc != 0 ]; then
        echo "$label: the coordinator exited $rc:"; grep -v "^	" "$TMP/c.log" | tail -5; return
    fi
    local rss wall
    rss=$(awk -F: '/Maximum resident/ {gsub(/ /, "", $2); print $2}' "$TMP/c.log")
    wall=$(awk '/Elapsed \(wall clock\)/ {print $NF}' "$TMP/c.log")
    python3 - "$TMP/m.json" "$label" "$rss" "$wall" "$TMP/c.log" <<'PY'
import json, re, sys
path, label, rss, wall, log = sys.argv[1:]
text = re.sub(r"\x1b\[[0-9;]*m", "", open(log).read())
shipped = re.search(r"ratings shipped to workers.*?bytes=(\d+) seconds=([0-9.]+)", text)
built = re.search(r"the workers built their blocks.*?peer_bytes=(\d+) seconds=([0-9.]+)", text)
start = ""
if built:
    start = f"blocks built by the workers in {float(built.group(2)):.2f} s ({int(built.group(1)) / 1e6:.1f} MB between them); "
if shipped:
    start += f"coordinator shipped {int(shipped.group(1)) / 1e6:.1f} MB in {float(shipped.group(2)):.2f} s; "
d = json.load(open(path))
its = d["iterations"]
coord = [(i["bytes_sent"] - i["bytes_peer"]) / 1e6 for i in its]
peer = [i["bytes_peer"] / 1e6 for i in its]
secs = [i["seconds"] for i in its]
metric = next((its[-1][k] for k in ("rmse", "ndcg@10") if k in its[-1]), None)
later = coord[1:] or coord
ckpt = re.search(r"rows written by the workers.*?(?:writes|checkpoints)=(\d+)", text)
if "checkpoint written" in text:
    start += f"{text.count('checkpoint written')} checkpoints; "
if ckpt:
    start += f"{ckpt.group(1)} files of rows written by the workers; "
if "worker lost" in text:
    rebuilt = re.findall(r"the survivors built the blocks again.*?peer_bytes=(\d+) seconds=([0-9.]+)", text)
    loss = "worker lost: "
    if rebuilt:
        loss += f"the survivors built the blocks again {len(rebuilt)}x in {sum(float(s) for _, s in rebuilt):.2f} s " \
                f"({sum(int(b) for b, _ in rebuilt) / 1e6:.1f} MB between them)"
    if "needs the ratings the workers hold" in text:
        loss += "the coordinator loaded the input"
    if "replaying the halves" in text:
        loss += f", {text.count('replaying the halves')} replay(s)"
    start += loss + "; "
# Builds before the split counted the evaluations' peer rows in with the coordinator's.
peer_out = d.get("peer_bytes_outside_halves")
outside_coord = d["bytes_outside_halves"] - (peer_out or 0)
outside_peer = f" ({peer_out / 1e6:.2f} MB between workers)" if peer_out is not None else " (the peers' share not told apart)"
saved = re.search(r"model saved.*", text)
if saved:
    start += f"model rows by the workers: {'yes' if 'rows_by_workers=true' in saved.group(0) else 'no'}; "
print(f"{label}: {start}coordinator peak RSS {int(rss) / 1024:.0f} MiB, wall {wall}; "
      f"coordinator MB per iteration {[round(c, 3) for c in coord]} (after the first: max {max(later):.3f}); "
      f"outside the halves {outside_coord / 1e6:.3f} MB through the coordinator{outside_peer}; "
      f"peers MB per iteration {peer[-1]:.1f}; "
      f"s/iter {sum(secs[1:]) / max(1, len(secs) - 1):.3f}; last metric {metric}")
PY
}

if [ -n "$BASELINE" ]; then
    run_one "$BASELINE" "baseline ($BASELINE)" "$@"
fi
run_one "$BINDIR" "this build ($BINDIR)" "$@"
if [ "$BOTH" = 1 ]; then
    run_one "$BINDIR" "this build, input on workers" --input-on-workers "$@"
fi
