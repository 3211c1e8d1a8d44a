#!/usr/bin/env bash
# Set up the environment (first run only; the runtime dependencies only: no test or docs tools, no apt,
# no root) and train MISA on the built-in SYNTHETIC MOSI-shaped data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
HF_HUB_OFFLINE=1 .venv/bin/misalatch train --out runs/demo --overwrite --max-epochs 6 "$@"
