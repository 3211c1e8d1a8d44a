"""Fixtures of the experiment tests: tiny training flags, worker processes and a throwaway PostgreSQL
for sweeps and searches; two tiny real runs (MISA and a feedback variant) trained once per session,
and a sweep folder around copies of them with a hand-written results.json of the sweep schema
(values chosen here, so that a report or comparison showing them proves it read the file)."""

from __future__ import annotations

import copy
import json
import math
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

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
        pytest.skip("PostgreSQL server binaries are not installed (scripts/system_packages.sh installs Debian's postgresql)")
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


TINY = dict(synthetic_size=(24, 12, 12), text_encoder="learned", hidden_size=8, batch_size=24, max_epochs=1)
METRICS = ("mae", "corr", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc5", "acc7")
HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


@dataclass(frozen=True)
class TinyRuns:
    misa: Path
    feedback: Path  # feedback: static


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    from misalatch.training.config import TrainConfig
    from misalatch.training.runs import train

    root = tmp_path_factory.mktemp("runs")
    train(TrainConfig(out=str(root / "misa"), **TINY))
    train(TrainConfig(out=str(root / "static"), feedback="static", **TINY))
    return TinyRuns(root / "misa", root / "static")


def _stats(values: list[float]) -> dict[str, Any]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else float("nan")
    return {"mean": mean, "std": std, "n": len(values), "values": values}


def sweep_document(seeds: tuple[int, ...] = (1111, 1112)) -> dict[str, Any]:
    """A results.json of the sweep schema: variants none and static over two seeds, one failed run."""
    per_seed = {
        "none": [{m: 0.50 + 0.01 * i + 0.001 * k for k, m in enumerate(METRICS)} for i in range(len(seeds))],
        "static": [{m: 0.60 + 0.02 * i + 0.001 * k for k, m in enumerate(METRICS)} for i in range(len(seeds))],
    }
    per_seed["none"][0]["mae"] = 0.987654321  # a value whose rounding shows (0.988)
    variants = []
    for key, values in per_seed.items():
        runs = [{"seed": s, "run_dir": f"{key}-seed{s}", "state": "complete", "error": None, "best_epoch": 1,
                 "epochs_run": 1, "validation": {m: v[m] - 0.05 for m in METRICS}, "test": v}
                for s, v in zip(seeds, values)]
        variants.append({
            "key": key, "params": {"feedback": key}, "n": len(seeds), "seeds": list(seeds), "runs": runs,
            "validation": {m: _stats([v[m] - 0.05 for v in values]) for m in METRICS},
            "test": {m: _stats([v[m] for v in values]) for m in METRICS},
        })
    variants[1]["runs"].append({"seed": 1113, "run_dir": "static-seed1113", "state": "failed", "error": HOSTILE,
                                "best_epoch": None, "epochs_run": None, "validation": {}, "test": {}})
    diffs = [per_seed["static"][i]["mae"] - per_seed["none"][i]["mae"] for i in range(len(seeds))]
    mean = sum(diffs) / len(diffs)
    return {
        "format": "misalatch-sweep-results", "version": 1,
        "sweep": {"grid": {"feedback": ["none", "static"]}, "baseline": "none",
                  "storage": "postgresql://lab:s3cret@db.example/sweeps", "study": "tiny"},
        "variants": variants,
        "paired": [{"variant": "static", "baseline": "none", "split": "test", "metric": "mae", "n": len(seeds),
                    "differences": diffs, "mean": mean, "ci95": [mean - 0.1, mean + 0.1], "p_value": 0.0123,
                    "test": "paired t-test (two-sided)"}],
        "failed": [{"key": "static", "seed": 1113, "error": HOSTILE, "attempts": 2}],
        "pending": [{"key": "none", "seed": 1114}],
    }


def make_sweep(root: Path, runs: TinyRuns, document: dict[str, Any] | None = None) -> Path:
    """A sweep folder: copies of the tiny runs as (variant, seed) run folders + results.json."""
    document = copy.deepcopy(document or sweep_document())
    root.mkdir(parents=True, exist_ok=True)
    for variant in document["variants"]:
        source = runs.misa if variant["key"] == "none" else runs.feedback
        for run in variant["runs"]:
            if run["state"] == "complete":
                shutil.copytree(source, root / run["run_dir"])
    (root / "results.json").write_text(json.dumps(document, indent=2))
    return root


@pytest.fixture()
def sweep_dir(tmp_path: Path, tiny_runs: TinyRuns) -> Path:
    return make_sweep(tmp_path / "sweep", tiny_runs)
