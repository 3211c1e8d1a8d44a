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


MINILM = ["--synthetic-size", "8", "4", "4", "--text-encoder", "minilm", "--hidden-size", "8", "--batch-size", "8",
          "--max-epochs", "1", "--device", "cpu", "--max-wordpieces", "16"]


@pytest.fixture(scope="module")
def frozen_minilm(tmp_path_factory) -> Path:
    from tests.conftest import minilm_path

    minilm_path()  # skips when the encoder package is not installed
    out = tmp_path_factory.mktemp("minilm") / "run"
    assert cli_main(["-q", "train", *MINILM, "--bert-freeze", "all", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_frozen_encoder_weights_are_referenced_not_copied(frozen_minilm, tmp_path, capsys):
    import json
    import shutil

    from safetensors import safe_open

    import misalatch
    from tests.test_bad_inputs_run import reseal

    sidecar = json.loads((frozen_minilm / "best.json").read_text())
    record = sidecar["referenced_weights"]
    assert record["encoder"] == "minilm" and len(record["sha256"]) == 64
    with safe_open(str(frozen_minilm / "best.safetensors"), framework="pt") as handle:
        stored = set(handle.keys())
    assert record["keys"] and not stored & set(record["keys"])
    assert all(k.startswith("bertmodel.") for k in record["keys"])
    assert (frozen_minilm / "best.safetensors").stat().st_size < 5_000_000  # MiniLM alone is ~90 MB
    # loads with the installed encoder, to the same predictions as trained
    assert cli_main(["-q", "evaluate", str(frozen_minilm), "--device", "cpu", "--out", str(tmp_path / "e.json")]) == 0
    evaluated = json.loads((tmp_path / "e.json").read_text())["test"]
    trained = json.loads((frozen_minilm / "metrics.json").read_text())["test"]
    assert evaluated == pytest.approx(trained, nan_ok=True)
    # another installed encoder (its weights hash differently): one clear line
    other = tmp_path / "other"
    shutil.copytree(frozen_minilm, other)
    sidecar["referenced_weights"]["sha256"] = "0" * 64
    (other / "best.json").write_text(json.dumps(sidecar))
    reseal(other)
    assert cli_main(["-q", "evaluate", str(other), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.splitlines()[-1]  # after the data's truncation warnings
    assert err.startswith("misalatch evaluate: error: ") and "references the frozen weights of text encoder 'minilm'" in err, err
    from misalatch.errors import CheckpointError

    with pytest.raises(CheckpointError, match="encoder installed here differs"):
        misalatch.load_run(other, device="cpu")


@pytest.mark.slow
def test_a_run_referencing_frozen_weights_resumes(tmp_path):
    import json

    from tests.conftest import minilm_path

    minilm_path()
    out = tmp_path / "run"
    assert cli_main(["-q", "train", *MINILM, "--bert-freeze", "all", "--max-epochs", "2", "--keep-resume-state",
                     "--out", str(out)]) == 0
    finished = json.loads((out / "metrics.json").read_text())
    doc = json.loads((out / "run.json").read_text())
    doc["complete"] = False
    (out / "run.json").write_text(json.dumps(doc))
    (out / "metrics.json").unlink()  # killed after its last epoch: the best weights miss the frozen encoder
    assert cli_main(["-q", "train", "--resume", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["test"] == pytest.approx(finished["test"], nan_ok=True)


@pytest.mark.slow
def test_resume_state_references_frozen_weights_too(tmp_path, monkeypatch):
    """Mid-training, the resume state holds the current weights (when the epoch did not improve): the
    frozen encoder is referenced there as in best.safetensors, and put back (checked) on --resume."""
    import json

    from safetensors import safe_open

    from misalatch.training import loop
    from tests.conftest import minilm_path

    minilm_path()
    step = loop.EarlyStopping.step

    def only_the_first_epoch_improves(self, dev_loss):
        decision = step(self, dev_loss if not hasattr(self, "_seen") else float("inf"))
        self._seen = True
        return decision

    monkeypatch.setattr(loop.EarlyStopping, "step", only_the_first_epoch_improves)
    out = tmp_path / "run"
    assert cli_main(["-q", "train", *MINILM, "--bert-freeze", "all", "--max-epochs", "2", "--patience", "5",
                     "--keep-resume-state", "--out", str(out)]) == 0
    doc = json.loads((out / "resume.json").read_text())
    assert doc["model_is_best"] is False and doc["extra"]["referenced_weights"]["encoder"] == "minilm"
    with safe_open(str(out / "resume.safetensors"), framework="pt") as handle:
        keys = set(handle.keys())
    assert any(k.startswith("model.") for k in keys) and not any(k.startswith("model.bertmodel.") for k in keys)
    assert (out / "resume.safetensors").stat().st_size < 5_000_000  # MiniLM alone is ~90 MB
    finished = json.loads((out / "metrics.json").read_text())
    run = json.loads((out / "run.json").read_text())
    run["complete"] = False
    (out / "run.json").write_text(json.dumps(run))
    (out / "metrics.json").unlink()
    assert cli_main(["-q", "train", "--resume", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["test"] == pytest.approx(finished["test"], nan_ok=True)
