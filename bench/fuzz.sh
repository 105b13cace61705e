#!/usr/bin/env bash
# Bounded mutation fuzzing of the worker's message validation (not part of CI).
#   bench/fuzz.sh [SECONDS]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
ALS_FUZZ_SECONDS="${1:-60}" cargo test --release -p als-worker --test fuzz_validation -- --ignored --nocapture
