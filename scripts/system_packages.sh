#!/usr/bin/env bash
# System packages that two groups of tests use; everything else is in the Python lock files.
#   postgresql  a throw-away PostgreSQL server for the distributed-sweep tests (tests/experiments)
#   chromium    a headless browser that opens `misalatch report` pages (tests/experiments/test_html_report.py)
# Installed with apt-get only when missing and when this runs as root with apt; otherwise it says
# why it skips, and those tests skip with the same reason. Set MISALATCH_NO_APT=1 to never install.
set -uo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} = 0 ]; then
    exit 0
fi
why="tests that need ${need[*]} will be skipped"
if [ "${MISALATCH_NO_APT:-0}" = 1 ]; then
    echo "system_packages.sh: MISALATCH_NO_APT=1: not installing ${need[*]}; $why" >&2
elif [ "$(id -u)" != 0 ]; then
    echo "system_packages.sh: not root: not installing ${need[*]} (sudo apt-get install ${need[*]}); $why" >&2
elif ! command -v apt-get >/dev/null 2>&1; then
    echo "system_packages.sh: no apt-get: install ${need[*]} with your package manager; $why" >&2
else
    echo "system_packages.sh: installing ${need[*]} with apt-get (PostgreSQL for the distributed-sweep tests, Chromium for the report browser test)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || \
        echo "system_packages.sh: apt-get could not install ${need[*]}; $why" >&2
fi
exit 0
