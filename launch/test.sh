#!/usr/bin/env bash
# Create .venv, install rlr with its test extras, lint, and run the test suite.
# Extra arguments go to pytest, e.g. `bash launch/test.sh -k rewards -x`.
# RLR_NO_TORCH=1 skips installing the CPU torch reference (its parity tests then skip).
# Tests run in RLR_TEST_WORKERS pytest-xdist processes (default: the CPU count, at most 4;
# 1 runs them in this process); an idle worker takes tests queued for the other (worksteal).
# They compile with XLA settings that make compiling cheaper (tests/conftest.py);
# RLR_TEST_XLA_OPT=1 runs them at XLA's defaults, rlr's own.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" dev
if [ "${RLR_NO_TORCH:-0}" != "1" ] && ! python -c "import torch" 2>/dev/null; then
  echo "[rlr] installing the CPU torch reference (torch==2.13.0) for parity tests"
  python -m pip install -q torch==2.13.0 || echo "[rlr] torch unavailable: parity tests will skip"
fi
echo "[rlr] ruff check + format check"
ruff check rlr tests bench
ruff format --check rlr tests bench
echo "[rlr] pytest"
export JAX_PLATFORMS=cpu
# Compiled programs are cached on disk: the resume tests' fresh processes and the many small
# trainers of the suite reuse each other's compilations. Every program is cached, however
# quick its compile: under the test XLA settings most take under 0.2 s, and reading them
# back is cheaper than compiling them again (the trainer and multi-process test files, from
# an empty cache: 193-198 s against 201-202 s with a 0.2 s threshold).
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$RLR_ROOT/.cache/jax}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0}"
workers="${RLR_TEST_WORKERS:-$(python -c 'import os; print(min(4, len(os.sched_getaffinity(0))))')}"
if [ "$workers" -gt 1 ]; then
  # Workers share the one smoke reproduction through a file lock (tests/smoke_run.py).
  python -m pytest -q -n "$workers" --dist worksteal "$@"
else
  python -m pytest -q "$@"
fi
