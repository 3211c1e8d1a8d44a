"""With the default early stopping of feedback variants (10 warm-up epochs, then patience 5), every
feedback variant takes off on the cue task of benchmarks/feedback_takeoff.py: a text cue says which
of two visual groups carries the label, so a model that has not learned the task predicts from the
average of the groups (test MAE about 0.86 or worse). docs/experiments.md has the 3-seed table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from misalatch.data.cache import save_prepared
from misalatch.training.config import TrainConfig
from misalatch.training.runs import train
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("one_thread")


def _cue_task():
    spec = importlib.util.spec_from_file_location("feedback_takeoff_benchmark", REPO / "benchmarks" / "feedback_takeoff.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.make_cue_task()


@pytest.fixture(scope="module")
def cue_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cue") / "data"
    save_prepared(_cue_task(), folder)
    return folder


def _run(data: Path, out: Path, feedback: str) -> tuple[float, int, TrainConfig]:
    cfg = TrainConfig(data=str(data), text_encoder="vectors", feedback=feedback, patience=5, max_epochs=12,
                      hidden_size=16, batch_size=32, lr=3e-3, diff_weight=0.0, sim_weight=0.0, recon_weight=0.0,
                      device="cpu", seed=1, out=str(out))
    run = train(cfg).runs[0]
    return run.test["mae"], run.epochs_run, cfg


@pytest.mark.slow
@pytest.mark.parametrize("feedback", ["sequence", "sequence-mlp", "static", "static-projected"])
def test_every_feedback_variant_takes_off_with_the_default_warmup(cue_data: Path, tmp_path: Path, feedback: str) -> None:
    mae, _, cfg = _run(cue_data, tmp_path / feedback, feedback)
    assert cfg.resolved_warmup_epochs == 10  # the default for every feedback variant
    assert mae < 0.5, f"{feedback}: test MAE {mae:.3f}: the masks did not learn to gate vision by the text"
