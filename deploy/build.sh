#!/usr/bin/env bash
# Build the static (musl) release binaries and the FROM-scratch images
# als-worker and als-coordinator; create the cluster token and deploy/.env if
# absent. Then:
#   docker-compose -f deploy/docker-compose.yml up --abort-on-container-exit --exit-code-from coordinator
# Needs: rustup's x86_64-unknown-linux-musl target and a musl C compiler for
# ring (Debian: apt-get install musl-tools). Env: ALS_TAG (default latest),
# ALS_BIN_DIR (use the static worker and coordinator binaries found there instead of building).
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
tag=${ALS_TAG:-latest}

if [ -n "${ALS_BIN_DIR:-}" ]; then
  # Static binaries built elsewhere (e.g. another checkout or machine).
  bin=$ALS_BIN_DIR
else
  if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    rustup target add "$target"
  fi
  # ring compiles C for the target; cc-rs finds Debian's x86_64-linux-musl-gcc by name.
  if [ -z "${CC_x86_64_unknown_linux_musl:-}" ] && ! command -v x86_64-linux-musl-gcc >/dev/null 2>&1; then
    echo "build.sh: x86_64-linux-musl-gcc not found: apt-get install musl-tools (or set CC_x86_64_unknown_linux_musl)" >&2
    exit 1
  fi
  # Fully static: no libc in the image to link against.
  cargo build --release --locked --target "$target" -p als-worker -p als-coordinator --bins
  bin=${CARGO_TARGET_DIR:-target}/$target/release
fi
# Docker's context is a small staging directory, not the repository (target/ is huge).
ctx=$(mktemp -d)
blog=$(mktemp)
trap 'rm -rf "$ctx" "$blog"' EXIT
cp deploy/Dockerfile "$ctx/"
for b in worker coordinator; do
  cp "$bin/$b" "$ctx/$b"
  # Symbols only: a smaller image, same code.
  if command -v strip >/dev/null 2>&1; then strip "$ctx/$b"; fi
done
mkdir -m 1777 "$ctx/tmp"
chmod 1777 "$ctx/tmp"
for b in worker coordinator; do
  # The classic builder needs no buildx plugin and pulls nothing for FROM scratch.
  # (Its deprecation notice is shown only if the build fails.)
  DOCKER_BUILDKIT=0 docker build -q --target "$b" -t "als-$b:$tag" "$ctx" >"$blog" 2>&1 || {
    cat "$blog" >&2
    exit 1
  }
done

# The tokens: random, readable only by their owner, never in an image. The
# cluster's (workers and coordinator) and the model server's (its clients)
# are separate: a serving client is no cluster peer.
for t in token serve_token; do
  if [ ! -s "deploy/secrets/$t" ]; then
    mkdir -p -m 700 deploy/secrets
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "deploy/secrets/$t")
    echo "build.sh: wrote a new token to deploy/secrets/$t"
  fi
done
# Containers run as you, so they can read the token and the model lands owned by you.
if [ ! -f deploy/.env ]; then
  printf 'ALS_UID=%s\nALS_GID=%s\n' "$(id -u)" "$(id -g)" > deploy/.env
fi
mkdir -p deploy/out deploy/data
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^als-(worker|coordinator):$tag " || true
