#!/usr/bin/env bash
# The test suite, from a fresh clone: installs what the tests need where this
# machine allows (Debian packages as root, the musl target with rustup,
# cargo-nextest with cargo), then builds the binaries (end-to-end tests run
# them as real processes), tests the LAPACK backend against faer, runs every
# test, the checks on MovieLens when ../shared/data is beside the checkout,
# the Python package (python/) against the real `implicit`, and the
# docker-compose cluster end to end when a Docker engine answers.
# Whatever cannot run here is named, with how to get it, and counted as
# skipped: never as passed.
set -euo pipefail
cd "$(dirname "$0")/.."

skipped=()
skip() { skipped+=("$1"); echo "test.sh: SKIPPED $1" >&2; }
# The first Python on PATH (or Debian's) that has numpy, for the .npy interop test.
find_numpy_python() {
  for p in python3 /usr/bin/python3; do
    if "$p" -c 'import numpy' >/dev/null 2>&1; then echo "$p"; return; fi
  done
}

docker_wanted=0
if [ "${ALS_E2E_DOCKER:-}" = 1 ] || docker info >/dev/null 2>&1; then docker_wanted=1; fi

# --- set-up --------------------------------------------------------------
missing=()
dpkg -s libopenblas-dev >/dev/null 2>&1 || missing+=(libopenblas-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
[ -n "$(find_numpy_python)" ] || missing+=(python3-numpy)
if [ "$docker_wanted" = 1 ] && ! command -v x86_64-linux-musl-gcc >/dev/null 2>&1; then missing+=(musl-tools); fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || echo "test.sh: apt-get could not install ${missing[*]}" >&2
  else
    echo "test.sh: missing Debian packages: ${missing[*]} (install: sudo apt-get install ${missing[*]}); the parts that need them are skipped" >&2
  fi
fi
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
if [ "$docker_wanted" = 1 ] && ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  rustup target add x86_64-unknown-linux-musl || echo "test.sh: cannot add the musl target (rustup target add x86_64-unknown-linux-musl)" >&2
fi

# --- tests ---------------------------------------------------------------
cargo build --bins --locked
if dpkg -s libopenblas-dev >/dev/null 2>&1 && command -v pkg-config >/dev/null 2>&1; then
  cargo nextest run --locked -p als-core --features lapack --lib -E 'test(/lapack|linalg::|solve::/)'
else
  skip "the LAPACK backend tests (needs libopenblas-dev and pkg-config)"
fi
cargo nextest run --locked --no-fail-fast
# Ignored by default, run here when what they need is present.
if [ -f ../shared/data/ml-100k/u1.base ] && [ -f ../shared/data/ml-latest-small/ratings.csv ]; then
  cargo nextest run --locked --no-fail-fast --run-ignored only -E 'binary(movielens) | test(/on_shared_data/)'
else
  skip "the MovieLens accuracy checks (needs ../shared/data/ml-100k and ml-latest-small beside the checkout; the same learners ran on generated data above)"
fi
ALS_PYTHON=$(find_numpy_python)
if [ -n "$ALS_PYTHON" ]; then
  ALS_PYTHON=$ALS_PYTHON cargo nextest run --locked --run-ignored only -E 'test(/needs_numpy/)'
else
  skip "the numpy interop test (needs python3 with numpy: apt-get install python3-numpy)"
fi
# The Python package (python/): built with `pip install ./python` into a venv
# (FERRALS_VENV, default ~/.ferrals-venv) with pytest and the real `implicit`
# it is compared against, then its tests. Skipped, visibly, where no Python
# venv can be made; CI (ALS_PYTHON_REQUIRED=1) requires it.
FERRALS_VENV=${FERRALS_VENV:-$HOME/.ferrals-venv}
python_ready=0
if [ ! -x "$FERRALS_VENV/bin/python" ]; then
  python3 -m venv "$FERRALS_VENV" 2>/dev/null || {
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$FERRALS_VENV"
  } || true
fi
if [ -x "$FERRALS_VENV/bin/python" ] &&
  "$FERRALS_VENV/bin/python" -m pip install -q --disable-pip-version-check "pytest" "tqdm" "numpy" "scipy" "threadpoolctl" "implicit>=0.7,<0.8" &&
  "$FERRALS_VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./python; then
  python_ready=1
fi
if [ "$python_ready" = 1 ]; then
  FERRALS_COORDINATOR="$PWD/target/debug/coordinator" "$FERRALS_VENV/bin/python" -m pytest python/tests -q -rs
elif [ "${ALS_PYTHON_REQUIRED:-}" = 1 ]; then
  echo "test.sh: the Python package tests are required here, but the venv at $FERRALS_VENV could not be set up" >&2
  exit 1
else
  skip "the Python package tests (needs python3 -m venv and pip reaching PyPI: python3 -m venv $FERRALS_VENV && $FERRALS_VENV/bin/pip install ./python pytest implicit)"
fi
# The container cluster: skipped without a Docker engine, unless ALS_E2E_DOCKER=1 (CI) demands it.
if [ "$docker_wanted" = 1 ]; then
  if command -v x86_64-linux-musl-gcc >/dev/null 2>&1; then
    deploy/e2e.sh
  elif [ "${ALS_E2E_DOCKER:-}" = 1 ]; then
    echo "test.sh: the Docker end-to-end test is required here but musl-tools is missing" >&2
    exit 1
  else
    skip "deploy/e2e.sh (needs musl-tools: apt-get install musl-tools)"
  fi
else
  skip "deploy/e2e.sh (no Docker engine answers)"
fi
if [ ${#skipped[@]} -gt 0 ]; then
  echo "test.sh: passed, with ${#skipped[@]} part(s) skipped:" >&2
  printf '  - %s\n' "${skipped[@]}" >&2
fi
