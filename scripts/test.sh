#!/usr/bin/env bash
# Set up the environment with the test and docs groups (first run only), the system packages some
# tests need (scripts/system_packages.sh says what and why, or why it skips), then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test docs media
bash scripts/system_packages.sh
# Two test processes (pytest-xdist), one torch thread each (no thread oversubscription between the
# workers and the subprocesses tests start; tests/conftest.py follows OMP_NUM_THREADS).
# MISALATCH_TEST_WORKERS=0 runs everything in this process.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
workers=${MISALATCH_TEST_WORKERS:-2}
if [ "$workers" = 0 ]; then dist=(); else dist=(-n "$workers" --dist worksteal); fi
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python -m pytest -q "${dist[@]}" "$@"
