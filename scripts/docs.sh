#!/usr/bin/env bash
# Build the documentation site with `mkdocs build --strict` (a broken link, a broken anchor, a missing
# API reference or a module without a reference page fails) into a temporary folder, or into the folder
# given as the first argument. Nothing is written into the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh docs
out=${1:-$(mktemp -d "${TMPDIR:-/tmp}/misalatch-docs.XXXXXX")}
NO_MKDOCS_2_WARNING=1 PYTHONDONTWRITEBYTECODE=1 .venv/bin/python -m mkdocs build --strict --quiet -d "$out"
echo "site: $out/index.html"
