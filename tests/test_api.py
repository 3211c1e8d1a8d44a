"""The notebook-facing Python API: misalatch.train(...) and misalatch.load_run(...)."""

from __future__ import annotations

from pathlib import Path

import torch

import misalatch
from misalatch.data.batching import collate


def test_train_and_load_run_from_python(tmp_path: Path) -> None:
    result = misalatch.train(out=str(tmp_path / "nb"), synthetic_size=(32, 16, 16), text_encoder="learned",
                             hidden_size=16, batch_size=16, max_epochs=1)
    assert isinstance(result, misalatch.TrainResult) and result.synthetic
    assert set(result.test_metrics) == {"mae", "corr", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc5", "acc7"}
    run = misalatch.load_run(result.runs[0].run_dir)
    batch = collate(run.dataset.splits["test"][:8], run.spec)
    out = run.model(batch.inputs, batch.labels)
    assert isinstance(out, misalatch.MisaOutput) and out.prediction.shape == (8, 1)
    assert out.losses is not None and torch.isfinite(out.losses.total)
    assert out.masks is None  # feedback none


def test_unknown_top_level_name() -> None:
    import pytest

    with pytest.raises(AttributeError):
        misalatch.no_such_thing  # noqa: B018
