#!/usr/bin/env bash
# End-to-end test of the docker-compose cluster: build the images, train on a
# synthetic dataset with three worker containers, check the model and its
# metrics, then train again with a worker container killed mid-run and with a
# worker cut off the network; both must end with the same factors, byte for
# byte. Everything is torn down on exit, also on failure.
#   deploy/e2e.sh                 (ALS_E2E_SKIP_BUILD=1: use the images already built)
set -euo pipefail
cd "$(dirname "$0")/.."
compose_file=deploy/docker-compose.yml
start=$(date +%s)

if command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  compose=(docker compose)
fi
log() { echo "e2e: $*" >&2; }
fail() {
  log "FAIL: $*"
  exit 1
}

if [ "${ALS_E2E_SKIP_BUILD:-}" != 1 ]; then
  log "building binaries and images"
  deploy/build.sh
fi

# A unique project, data and output directories: parallel runs do not collide.
work=$(mktemp -d)
project=als-e2e-$$-$RANDOM
current=""
teardown() {
  local rc=$?
  if [ -n "$current" ]; then
    if [ $rc -ne 0 ]; then
      log "logs of $current:"
      "${compose[@]}" -p "$current" -f "$compose_file" --profile serve logs --no-color 2>&1 | tail -n 60 >&2 || true
    fi
    "${compose[@]}" -p "$current" -f "$compose_file" --profile serve down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  exit $rc
}
trap teardown EXIT
trap 'exit 130' INT TERM

mkdir -p "$work/data"
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token")
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/serve_token")
export ALS_UID ALS_GID ALS_TOKEN_FILE=$work/token ALS_SERVE_TOKEN_FILE=$work/serve_token ALS_DATA_DIR=$work/data
ALS_UID=$(id -u)
ALS_GID=$(id -g)
# Big enough that an iteration takes a while on two cores, so there is a mid-run moment.
docker run --rm --user "$ALS_UID:$ALS_GID" --network none -v "$work/data:/data" als-coordinator:"${ALS_TAG:-latest}" \
  generate --out /data/synth.csv --users 20000 --items 4000 --ratings 1000000 --quiet >/dev/null
# Enough iterations that the fault lands mid-run: after iteration 1 the
# script polls the logs (0.5 s), then kills or disconnects, and the run must
# still have seconds to go (at 0.1-0.3 s per iteration, 8 were not enough
# once the objective left the coordinator).
iters=50
export ALS_TRAIN_ARGS="--data /data/synth.csv --factors 32 --iterations $iters --worker-timeout 3"

# Run the cluster as project $1, output to $work/$1; $2: none, kill or disconnect.
run() {
  local name=$1 fault=$2
  current=$project-$name
  export ALS_OUT_DIR=$work/$name
  mkdir -p "$ALS_OUT_DIR"
  local c=("${compose[@]}" -p "$current" -f "$compose_file")
  local t0
  t0=$(date +%s)
  if [ "$fault" = none ]; then
    # The README's command: the exit status is the coordinator's.
    "${c[@]}" up --abort-on-container-exit --exit-code-from coordinator >"$work/$name.log" 2>&1 ||
      fail "$name: compose up exited $? (log: $(tail -n 20 "$work/$name.log"))"
  else
    # Detached: --abort-on-container-exit would stop everything when the worker dies.
    "${c[@]}" up -d >"$work/$name.log" 2>&1 || fail "$name: compose up -d failed: $(cat "$work/$name.log")"
    local coord victim
    coord=$("${c[@]}" ps -q coordinator)
    victim=$("${c[@]}" ps -q worker2)
    [ -n "$coord" ] && [ -n "$victim" ] || fail "$name: containers not found"
    # Mid-run: after the first iteration has finished, before the last.
    local waited=0
    until docker logs "$coord" 2>&1 | grep -q 'iteration=1 '; do
      [ "$(docker inspect -f '{{.State.Running}}' "$coord")" = true ] || fail "$name: coordinator ended before its first iteration"
      sleep 0.5
      waited=$((waited + 1))
      [ $waited -lt 600 ] || fail "$name: no iteration after 300 s"
    done
    if [ "$fault" = kill ]; then
      log "$name: docker kill worker2 after iteration 1"
      docker kill "$victim" >/dev/null
    else
      local net
      net=$(docker network ls -q --filter "label=com.docker.compose.project=$current" --filter label=com.docker.compose.network=cluster)
      [ -n "$net" ] || fail "$name: network not found"
      log "$name: docker network disconnect worker2 after iteration 1"
      docker network disconnect -f "$net" "$victim"
    fi
    local rc
    rc=$(timeout 600 docker wait "$coord") || fail "$name: coordinator did not finish"
    docker logs "$coord" >>"$work/$name.log" 2>&1
    [ "$rc" = 0 ] || fail "$name: coordinator exited $rc: $(tail -n 20 "$work/$name.log")"
    # The fault landed mid-run: the coordinator lost worker2, then still had iterations to go.
    local lost last
    lost=$(grep -n 'worker lost' "$work/$name.log" | grep worker2 | head -n 1 | cut -d: -f1)
    last=$(grep -n "iteration=$iters " "$work/$name.log" | head -n 1 | cut -d: -f1)
    [ -n "$lost" ] || fail "$name: the coordinator never lost worker2: $(tail -n 20 "$work/$name.log")"
    [ -n "$last" ] && [ "$lost" -lt "$last" ] || fail "$name: worker2 was lost after the last iteration, not mid-run"
    log "$name: $(sed -n "${lost}p" "$work/$name.log" | sed 's/.*WARN //')"
  fi
  "${c[@]}" down -v --remove-orphans -t 5 >/dev/null 2>&1
  current=""
  log "$name: trained in $(($(date +%s) - t0)) s"
  check_model "$name"
}

# The model directory is complete and the metrics are sane.
check_model() {
  local dir=$work/$1
  for f in model.json user_factors.npy item_factors.npy user_bias.npy item_bias.npy user_ids.txt item_ids.txt seen_indptr.npy seen_indices.npy; do
    [ -s "$dir/model/$f" ] || fail "$1: model/$f missing or empty"
  done
  python3 - "$dir/metrics.json" "$dir/model/model.json" "$iters" <<'PY' || fail "$1: metrics check failed"
import json, math, sys
m = json.load(open(sys.argv[1]))
json.load(open(sys.argv[2]))
its, n = m["iterations"], int(sys.argv[3])
assert [i["iteration"] for i in its] == list(range(1, n + 1)), f"{len(its)} iterations"
rmse = m["final"]["rmse"]
# Synthetic 1..5 ratings with noise 0.5: a trained model is far better than a constant guess.
assert math.isfinite(rmse) and 0.3 < rmse < 1.2, f"rmse {rmse}"
assert m["seconds_per_iteration"] > 0
print(f"rmse {rmse:.4f}, {m['seconds_per_iteration']:.2f} s/iteration", file=sys.stderr)
PY
}

same_factors() {
  for f in user_factors.npy item_factors.npy user_bias.npy item_bias.npy; do
    cmp -s "$work/clean/model/$f" "$work/$1/model/$f" || fail "$1: $f differs from the clean run"
  done
  log "$1: factors identical to the clean run"
}

# The model server of the compose file (profile "serve") on the clean run's
# model: health without the token, a recommendation and /metrics with it.
serve_check() {
  local name=$1
  current=$project-serve
  export ALS_OUT_DIR=$work/$name
  ALS_SERVE_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  export ALS_SERVE_PORT
  local c=("${compose[@]}" -p "$current" -f "$compose_file" --profile serve)
  "${c[@]}" up -d serve >"$work/serve.log" 2>&1 || fail "serve: compose up failed: $(cat "$work/serve.log")"
  python3 - "$ALS_SERVE_PORT" "$work/serve_token" "$(head -n 1 "$work/$name/model/user_ids.txt")" <<'PY' || fail "serve: the model server did not answer as expected"
import json, sys, time, urllib.request, urllib.error
port, token, user = sys.argv[1], open(sys.argv[2]).read().strip(), sys.argv[3]
base = f"http://127.0.0.1:{port}"
def get(path, auth=True):
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"} if auth else {})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, r.read().decode()
deadline = time.time() + 60
while True:
    try:
        status, body = get("/health", auth=False)
        break
    except (urllib.error.URLError, ConnectionError, OSError):
        if time.time() > deadline:
            raise
        time.sleep(0.5)
health = json.loads(body)
assert status == 200 and health["users"] > 0, body
status, body = get(f"/v1/users/{user}/recommendations?n=5")
recs = json.loads(body)
assert status == 200 and len(recs) == 5 and all("item" in r for r in recs), body
try:
    get(f"/v1/users/{user}/recommendations", auth=False)
    raise AssertionError("answered without the token")
except urllib.error.HTTPError as e:
    assert e.code == 401, e.code
status, body = get("/metrics")
assert status == 200 and 'als_serve_requests_total{route="/v1/users/{id}/recommendations",status="200"} 1' in body, body
print(f"serve: {health['users']} users, top-5 of {user}, /metrics", file=sys.stderr)
PY
  "${c[@]}" down -v --remove-orphans -t 5 >/dev/null 2>&1
  current=""
  log "serve: the compose model server answered on the clean model"
}

# The clean and kill runs have the workers read /data themselves (the shared
# volume) and build their blocks: the clean one by default, since every
# worker's --input-root holds it; the disconnect run ships them from the
# coordinator (--input-here). All three models must be the same.
run clean none
grep -q 'the workers built their blocks from the input' "$work/clean.log" ||
  fail "clean: the workers did not build their blocks: $(grep -i 'blocks' "$work/clean.log" | head -n 5)"
if grep -q 'shipping the blocks instead' "$work/clean.log"; then
  fail "clean: the coordinator read the input: $(grep 'shipping the blocks instead' "$work/clean.log")"
fi
grep -q 'keeps no copy of the factors' "$work/clean.log" ||
  fail "clean: the coordinator kept a copy of the factors"
# It holds no ids either: the workers wrote the model's ids files.
grep -q 'ids_by_workers=true' "$work/clean.log" ||
  fail "clean: the workers did not write the ids files: $(grep 'model saved' "$work/clean.log")"
serve_check clean
# Evaluated every 25 iterations only, so the kill lands while the rows are on
# the workers: the coordinator, which keeps no copy of the factors, recovers
# by a replay from the initial rows, drawn from the ids, the killed worker's
# blocks built again by the survivors from /data.
ALS_TRAIN_ARGS="$ALS_TRAIN_ARGS --input-on-workers --eval-every 25" run kill kill
grep -q 'replaying the halves' "$work/kill.log" || fail "kill: no replay in the log: $(grep -i 'lost\|replay' "$work/kill.log" | head -n 5)"
# The survivors built the killed worker's blocks again; the coordinator read none of the input.
grep -q 'the survivors built the blocks again' "$work/kill.log" ||
  fail "kill: the survivors did not build the lost blocks: $(grep -i 'lost\|blocks' "$work/kill.log" | head -n 5)"
if grep -q 'needs the ratings the workers hold\|shipping the blocks instead' "$work/kill.log"; then
  fail "kill: the coordinator read the input after the loss"
fi
grep -q 'keeps no copy of the factors' "$work/kill.log" ||
  fail "kill: the coordinator kept a copy of the factors"
grep -q 'ids_by_workers=true' "$work/kill.log" ||
  fail "kill: the workers did not write the ids files: $(grep 'model saved' "$work/kill.log")"

same_factors kill
ALS_TRAIN_ARGS="$ALS_TRAIN_ARGS --input-here" run disconnect disconnect
# Here the coordinator read the input and wrote the ids files itself: the
# three models' ids files, compared below, come from both ways.
grep -q 'ids_by_workers=false' "$work/disconnect.log" ||
  fail "disconnect: the ids files were not the coordinator's: $(grep 'model saved' "$work/disconnect.log")"
same_factors disconnect
log "PASS in $(($(date +%s) - start)) s"
