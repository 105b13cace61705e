#!/usr/bin/env bash
# The test suite: builds the binaries (end-to-end tests run them as real
# processes), tests the LAPACK backend against faer, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --bins --locked
cargo nextest run --locked -p als-core --features lapack --lib -E 'test(/lapack|linalg::|solve::/)'
cargo nextest run --locked --no-fail-fast
