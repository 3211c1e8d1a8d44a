"""Fixtures for sweeps and searches: tiny training flags, worker processes, a throwaway PostgreSQL."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import REPO

# tiny runs: a few seconds each on a loaded 2-core machine
TINY_FLAGS = ["--synthetic-size", "16", "8", "8", "--text-encoder", "learned", "--hidden-size", "8",
              "--batch-size", "8", "--device", "cpu"]


def worker(args: list[str], log: Path) -> subprocess.Popen:
    """``python -m misalatch <args>`` as a separate process (its own session, so it can be killed alone)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    handle = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", "misalatch", *args], cwd=REPO, env=env, stdout=handle,
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_all(procs: list[subprocess.Popen], logs: list[Path], timeout: float = 300) -> list[int]:
    deadline = time.time() + timeout
    codes = []
    for proc, log in zip(procs, logs):
        try:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.time())))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"worker did not finish in {timeout} s; log:\n{log.read_text()[-3000:]}")
    return codes


def _postgres_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster in a temporary folder, reachable on a Unix socket only.

    The server refuses to run as root, so as root it runs as the ``postgres`` user (runuser)."""
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries are not installed (scripts/setup_env.sh installs Debian's postgresql)")
    root = Path(tempfile.mkdtemp(prefix="misalatch-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = root / "data"

    def pg(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)

    try:
        pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
           "-o", f"-k {root} -c listen_addresses='' -F", "start")
        pg(str(bindir / "createdb"), "-h", str(root), "-U", "postgres", "misalatch")
        yield f"postgresql+psycopg2://postgres@/misalatch?host={root}"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
