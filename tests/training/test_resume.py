"""Resume after a kill: SIGKILL a training subprocess mid-run, resume it, get exactly the same run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from misalatch.cli import main as cli_main
from misalatch.errors import ConfigError
from misalatch.io.owned import read_marker
from misalatch.training.config import TrainConfig
from misalatch.training.runs import resume_training, train
from tests.conftest import REPO

TINY = ["--synthetic-size", "8", "4", "4", "--text-encoder", "learned", "--hidden-size", "8", "--batch-size", "8",
        "--max-epochs", "4", "--patience", "1", "--trials", "2", "--lr", "0.01", "--device", "cpu"]


def _config(out: Path, feedback: str) -> TrainConfig:
    from misalatch.cli.train import parse_train_args

    return parse_train_args([*TINY, "--feedback", feedback, "--out", str(out)])


def _kill_mid_run(out: Path, feedback: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(torch.get_num_threads()),
           "MKL_NUM_THREADS": str(torch.get_num_threads())}
    code = ("import sys, torch; torch.set_num_threads(%d); from misalatch.cli import main; sys.exit(main(sys.argv[1:]))"
            % torch.get_num_threads())
    proc = subprocess.Popen([sys.executable, "-c", code, "-q", "train", *TINY, "--feedback", feedback, "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 1800  # a hang guard only: a loaded machine needs minutes per epoch
        while not (out / "resume.manifest.json").exists():  # at least one epoch state exists
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no epoch finished in time"
            time.sleep(0.02)
        time.sleep(random.uniform(0.0, 0.4))  # anywhere in the following epochs, mid-write included
    finally:
        proc.send_signal(signal.SIGKILL)  # also when the test fails: never leave the child running
        code = proc.wait()
    assert code == -signal.SIGKILL, "the run finished before it could be killed; raise --max-epochs"


@pytest.mark.parametrize("feedback", ["none", "sequence"])
def test_killed_run_resumes_to_exactly_the_uninterrupted_result(tmp_path: Path, feedback: str) -> None:
    reference = train(_config(tmp_path / "reference", feedback))
    ref_metrics = json.loads((tmp_path / "reference" / "metrics.json").read_text())

    out = tmp_path / "killed"
    _kill_mid_run(out, feedback)
    marker = read_marker(out)
    assert marker is not None and marker["complete"] is False
    assert not (out / "metrics.json").exists()

    resumed = resume_training(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert resumed.runs[0].test == reference.runs[0].test
    for key in ("test", "validation", "dev_loss", "test_loss", "best_epoch", "epochs_run"):
        assert metrics[key] == ref_metrics[key], key
    assert (out / "history.csv").read_text() == (tmp_path / "reference" / "history.csv").read_text()
    # a finished run keeps only what it needs: no optimiser state, no temporaries
    assert not any(p.name.startswith("resume.") for p in out.iterdir())
    assert not any(p.name.startswith(".") for p in out.iterdir())
    assert read_marker(out)["complete"] is True
    with pytest.raises(ConfigError, match="finished"):
        resume_training(out)


def test_resume_refuses_flags_that_change_the_run(tmp_path: Path, capsys) -> None:
    assert cli_main(["train", "--resume", str(tmp_path / "nothing")]) == 1
    assert "not a misalatch run folder" in capsys.readouterr().err
    assert cli_main(["train", "--resume", str(tmp_path), "--lr", "0.1"]) == 1
    err = capsys.readouterr().err
    assert "--lr cannot be changed" in err and "--device" in err
    with pytest.raises(ConfigError, match="--hidden-size"):
        resume_training(tmp_path, hidden_size=4)
