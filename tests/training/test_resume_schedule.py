"""Resume keeps the model's name and the ReduceLROnPlateau state, so an MMLatch run continues exactly."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

import misalatch.training.runs as runs
from misalatch.io.owned import read_marker
from misalatch.training.config import TrainConfig
from misalatch.training.runs import resume_training, train

# patience/cooldown 0 and a large factor: the plateau schedule lowers the lr within a few epochs
TINY = dict(model="mmlatch", synthetic_size=(16, 8, 8), text_encoder="learned", hidden_size=8, batch_size=8,
            max_epochs=5, patience=9, lr=0.05, scheduler="plateau", plateau_patience=0, plateau_cooldown=0,
            plateau_factor=0.3, device="cpu")


class _Killed(Exception):
    pass


pytestmark = pytest.mark.usefixtures("one_thread")


def test_mmlatch_with_plateau_schedule_resumes_exactly(tmp_path: Path, monkeypatch) -> None:
    reference = train(TrainConfig.from_dict({**TINY, "out": str(tmp_path / "reference")}))
    ref_history = (tmp_path / "reference" / "history.csv").read_text()

    out = tmp_path / "killed"
    real_csv = runs.write_history_csv

    def dies_after_epoch_3(output, sub, history):
        if len(history) == 3:
            raise _Killed  # after epoch 3's checkpoint set was committed, like a kill right there
        real_csv(output, sub, history)

    monkeypatch.setattr(runs, "write_history_csv", dies_after_epoch_3)
    with pytest.raises(_Killed):
        train(TrainConfig.from_dict({**TINY, "out": str(out)}))
    monkeypatch.setattr(runs, "write_history_csv", real_csv)

    saved = json.loads((out / "resume.json").read_text())
    assert saved["epoch"] == 3 and saved["scheduler"] is not None
    assert read_marker(out)["config"]["model"] == "mmlatch"

    resumed = resume_training(out)
    assert resumed.runs[0].test == reference.runs[0].test
    history = (out / "history.csv").read_text()
    assert history == ref_history
    lrs = [float(row["lr"]) for row in csv.DictReader(io.StringIO(history))]
    assert min(lrs) < max(lrs), "the schedule never lowered the lr: the test would not notice a lost state"
    assert json.loads((out / "best.json").read_text())["model"] == "mmlatch"
