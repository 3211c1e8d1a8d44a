"""Feedback takes off under MISA's full objective with the defaults, on the cue task of
benchmarks/feedback_takeoff.py: a text cue says which of two equally distributed visual groups
carries the label, so a model that has not learned to gate vision by the text can only read the
groups' average (test MAE about 0.85).

The run below is the benchmark's ``sequence-mlp`` seed 3 cut to 8 epochs, with the difference,
similarity and reconstruction losses at their default weights: with the default mask learning-rate
factor (10) and auxiliary-loss warm-up its masks gate vision by the cue (measured test MAE 0.27,
selectivity 0.089); with the previous defaults (factor 1, one learning rate; auxiliary losses at
full weight from epoch 1) the masks stay flat — over 25 epochs they collapse to the same mask for every sample — and the run only
reads the average (MAE 0.83, selectivity 0.016).

``static-projected`` seed 3 is the run that collapsed with the 10× factor alone: with the auxiliary
losses at full weight from epoch 1, the whole model fell onto their trivial minimum (constant
representations; the prediction a constant: measured MAE 1.15, selectivity 0.007); with the default
auxiliary-loss warm-up (their weights ramp from 0 over the 10 warm-up epochs) the task shapes the
representations first and the masks take off (MAE 0.24, selectivity 0.121). docs/experiments.md
has the 5-seed table of every variant.
"""

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


def _benchmark():
    spec = importlib.util.spec_from_file_location("feedback_takeoff_benchmark", REPO / "benchmarks" / "feedback_takeoff.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _benchmark()


@pytest.fixture(scope="module")
def cue_data(bench, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cue") / "data"
    save_prepared(bench.make_cue_task(), folder)
    return folder


def _run(bench, data: Path, out: Path, feedback: str = "sequence-mlp", **changes) -> tuple[dict, TrainConfig]:
    cfg = TrainConfig(data=str(data), text_encoder="vectors", feedback=feedback, hidden_size=32, batch_size=32,
                      lr=1e-3, max_epochs=8, device="cpu", seed=3, out=str(out), **changes)
    run = train(cfg).runs[0]
    return bench.run_summary(run.run_dir), cfg


@pytest.mark.slow
def test_feedback_takes_off_under_the_full_objective_with_the_defaults(bench, cue_data: Path, tmp_path: Path) -> None:
    row, cfg = _run(bench, cue_data, tmp_path / "default")
    assert (cfg.diff_weight, cfg.sim_weight, cfg.recon_weight) == (0.3, 1.0, 1.0)  # MISA's full objective
    assert cfg.resolved_mask_lr_factor == 10.0 and cfg.resolved_warmup_epochs == 10 and cfg.patience == 6
    assert cfg.resolved_aux_warmup_epochs == 10
    assert row["test_mae"] < 0.5, f"test MAE {row['test_mae']:.3f}: the masks did not learn to gate vision by the text"
    assert row["selectivity"] > 0.03, row


@pytest.mark.slow
def test_with_the_previous_default_the_same_run_does_not_take_off(bench, cue_data: Path, tmp_path: Path) -> None:
    row, _ = _run(bench, cue_data, tmp_path / "one-rate", mask_lr_factor=1.0, aux_warmup_epochs=0)
    assert row["test_mae"] > 0.7 and row["selectivity"] < 0.03, row


@pytest.mark.slow
def test_static_projected_takes_off_with_the_auxiliary_warm_up_and_collapses_without(bench, cue_data: Path,
                                                                                      tmp_path: Path) -> None:
    row, _ = _run(bench, cue_data, tmp_path / "ramp", feedback="static-projected")
    assert row["test_mae"] < 0.5 and row["selectivity"] > 0.03, row
    flat, _ = _run(bench, cue_data, tmp_path / "flat", feedback="static-projected", aux_warmup_epochs=0)
    assert flat["test_mae"] > 0.9 and abs(flat["selectivity"]) < 0.02, flat  # a constant prediction
