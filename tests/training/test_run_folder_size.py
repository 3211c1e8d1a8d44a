"""Run folders that fit a laptop and say what they hold (issue 20 §6): no resume state once a run
finished (unless --keep-resume-state, recorded in run.json), masks prints the final path,
robustness names the text encoder the user chose."""

from __future__ import annotations

from pathlib import Path

import pytest

from misalatch.cli import main as cli_main
from misalatch.io.owned import read_marker

FAST = ["--synthetic-size", "8", "4", "4", "--text-encoder", "learned", "--hidden-size", "8", "--batch-size", "8",
        "--max-epochs", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def feedback_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("size") / "run"
    assert cli_main(["-q", "train", *FAST, "--feedback", "sequence", "--out", str(out)]) == 0
    return out


def test_a_finished_run_holds_no_resume_state(feedback_run):
    assert not any(p.name.startswith("resume.") for p in feedback_run.iterdir())
    marker = read_marker(feedback_run)
    assert marker["complete"] is True and marker["config"]["keep_resume_state"] is False
    assert not any(name.startswith("resume.") for name in marker["files"])


def test_keep_resume_state_keeps_it_and_says_so(tmp_path):
    out = tmp_path / "run"
    assert cli_main(["-q", "train", *FAST, "--keep-resume-state", "--out", str(out)]) == 0
    assert {"resume.json", "resume.safetensors", "resume.manifest.json"} <= {p.name for p in out.iterdir()}
    assert read_marker(out)["config"]["keep_resume_state"] is True


def test_masks_prints_the_final_path(feedback_run, tmp_path, capsys):
    out = tmp_path / "masks"
    assert cli_main(["masks", str(feedback_run), "--out", str(out), "--device", "cpu", "--samples", "1"]) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "mlstage" not in text and ".mlnext" not in text, text
    assert f"written: {out / 'masks.npz'}" in text


def test_robustness_names_the_learned_text_encoder(feedback_run, tmp_path, capsys):
    import json

    out = tmp_path / "rob"
    assert cli_main(["robustness", str(feedback_run), "--out", str(out), "--device", "cpu", "--seeds", "1",
                     "--levels", "0", "1", "--frame-rates", "0", "0.5", "--conditions", "noise"]) == 0
    text = capsys.readouterr().out
    assert "(learned)" in text and "(glove)" not in text, text
    doc = json.loads((out / "robustness.json").read_text())
    assert "glove" not in json.dumps(doc) and "learned" in json.dumps(doc)
