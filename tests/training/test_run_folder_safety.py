"""Nothing a user has is ever deleted: `train --out/--overwrite`, staging, the lock (issue 8 §1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from misalatch.cli import main as cli_main
from misalatch.io.owned import claim_output, lock_path, read_marker
from tests.conftest import REPO

FAST = ["--synthetic-size", "8", "4", "4", "--text-encoder", "learned", "--hidden-size", "8", "--batch-size", "8",
        "--max-epochs", "1", "--device", "cpu"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _fake_run(path: Path) -> Path:
    """A run folder misalatch wrote (marker and all), without spending CPU on training."""
    with claim_output(path, "train") as out:
        out.write_text("config.yaml", "lr: 0.1\n")
        out.write_text("metrics.json", '{"test": {"mae": 1.0}}')
        out.write_bytes("best.safetensors", b"weights")
    return path


def _train(capsys, *args: str) -> tuple[int, str]:
    code = cli_main(["train", *FAST, *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("where", [".", "..", "home"])
def test_overwrite_never_touches_cwd_parents_or_home(tmp_path, monkeypatch, capsys, where):
    project = tmp_path / "home" / "project"
    project.mkdir(parents=True)
    (project / "config.yaml").write_text("my own config")
    (project / "aggregate.json").write_text("{}")
    ssh = tmp_path / "home" / ".ssh"
    ssh.mkdir()
    (ssh / "id_rsa").write_text("PRIVATE KEY")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(project)
    before = _snapshot(tmp_path)
    out = str(tmp_path / "home") if where == "home" else where
    code, err = _train(capsys, "--out", out, "--overwrite")
    assert code == 1
    assert "never writes its output there" in err and err.count("\n") == 1
    assert _snapshot(tmp_path) == before


def test_folder_with_common_names_is_not_taken_for_a_run(tmp_path, capsys):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "config.yaml").write_text("not misalatch's")
    (user / "aggregate.json").write_text("{}")
    before = _snapshot(user)
    code, err = _train(capsys, "--out", str(user), "--overwrite")
    assert code == 1 and "no misalatch run.json marker" in err and str(user) in err
    assert _snapshot(user) == before


def test_run_folder_with_a_user_file_is_not_replaced(tmp_path, capsys):
    run = _fake_run(tmp_path / "run")
    (run / "my-notes.txt").write_text("results I wrote down")
    before = _snapshot(run)
    code, err = _train(capsys, "--out", str(run), "--overwrite")
    assert code == 1 and "my-notes.txt" in err and "did not write" in err
    assert _snapshot(run) == before


def test_out_that_is_a_file_or_a_symlink(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("data")
    code, err = _train(capsys, "--out", str(target), "--overwrite")
    assert code == 1 and "is a file" in err and target.read_text() == "data"
    real = _fake_run(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real)
    before = _snapshot(real)
    code, err = _train(capsys, "--out", str(link), "--overwrite")
    assert code == 1 and "symbolic link" in err
    assert _snapshot(real) == before and link.is_symlink()


def test_run_that_cannot_start_leaves_the_old_run_intact(tmp_path, capsys, monkeypatch):
    run = _fake_run(tmp_path / "run")
    before = _snapshot(run)
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = _train(capsys, "--out", str(run), "--overwrite", "--device", "cuda")
    assert code == 1 and "no CUDA device" in err
    code, err = _train(capsys, "--out", str(run), "--overwrite", "--lr", "nan")
    assert code == 1 and "lr must be a finite number" in err
    assert _snapshot(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_run_failing_before_its_first_checkpoint_leaves_the_old_run_intact(tmp_path, capsys, monkeypatch):
    run = _fake_run(tmp_path / "run")
    before = _snapshot(run)
    import misalatch.training.runs as runs

    def dies(*args, **kwargs):
        raise FloatingPointError("epoch 1: training loss is nan")

    monkeypatch.setattr(runs, "fit", dies)
    with pytest.raises(FloatingPointError):
        cli_main(["train", *FAST, "--out", str(run), "--overwrite"])
    assert _snapshot(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder, no lock left


def test_second_writer_is_refused_while_a_run_is_writing(tmp_path, capsys):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    slow = list(FAST)
    slow[slow.index("--max-epochs") + 1] = "50"  # still running while the second writer tries
    proc = subprocess.Popen([sys.executable, "-m", "misalatch", "-q", "train", *slow, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 1800  # a hang guard only
        while not lock_path(out).exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for extra in ([], ["--overwrite"]):
            code, err = _train(capsys, "--out", str(out), *extra)
            assert code == 1 and "another misalatch process is writing this folder" in err and f"pid {proc.pid}" in err
        assert proc.poll() is None  # the first run was not disturbed
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the killed writer's lock is stale now: a new run takes it over (and its staging folder is cleaned)
    marker = read_marker(out) if out.exists() else None
    assert marker is None or marker["complete"] is False
