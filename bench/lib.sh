# Helpers shared by the bench scripts that write a results folder and a
# runs.tsv manifest (compare.sh, speed.sh). Source it after setting
# LOG_TAG, OUT, MANIFEST and TIMEOUT.

log() { echo "[$LOG_TAG $(date +%H:%M:%S)] $*" >&2; }

# invoke NAME CMD...: run with a timeout; NAME.out = stdout, NAME.err = stderr, NAME.rc = exit code.
invoke() {
    local name=$1; shift
    log "$name: $*"
    local t0=$SECONDS
    timeout --kill-after=30 "$TIMEOUT" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" </dev/null
    local rc=$?
    echo "$rc" > "$OUT/$name.rc"
    [ "$rc" = 124 ] && echo "timeout after ${TIMEOUT}s" >> "$OUT/$name.err"
    log "$name: exit $rc after $((SECONDS - t0)) s"
    return 0
}

# fail NAME WHY: record a run that could not start.
fail() {
    echo "$2" > "$OUT/$1.err"; echo 127 > "$OUT/$1.rc"; log "$1: skipped: $2"
}

# row ID KIND DATA SETTING INVOCATION SELECTOR REF: one line of the table.
row() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$MANIFEST"; }
