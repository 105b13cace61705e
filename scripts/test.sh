#!/usr/bin/env bash
# The test suite: builds the binaries (end-to-end tests run them as real
# processes), tests the LAPACK backend against faer, runs every test, then
# the docker-compose cluster end to end (deploy/e2e.sh) when Docker is there.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --bins --locked
cargo nextest run --locked -p als-core --features lapack --lib -E 'test(/lapack|linalg::|solve::/)'
cargo nextest run --locked --no-fail-fast
# The container cluster: skipped without a Docker engine, unless ALS_E2E_DOCKER=1 (CI) demands it.
if [ "${ALS_E2E_DOCKER:-}" = 1 ] || docker info >/dev/null 2>&1; then
  deploy/e2e.sh
else
  echo "test.sh: no Docker engine: skipping deploy/e2e.sh" >&2
fi
