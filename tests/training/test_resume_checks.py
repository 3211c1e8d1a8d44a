"""Resume checks what it resumes (issue 17 §3): crafted or mismatched resume state, a run.json that
names another model or feedback variant, a run folder that lost a file it needs — each is one line
(``misalatch train: error: ...``), never a traceback, and the run is not marked complete."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from misalatch.cli import main as cli_main
from misalatch.io.owned import read_marker
from misalatch.training.config import TrainConfig
from tests.test_bad_inputs_run import FAST, reseal


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """A two-epoch run whose resume state is kept, turned back into a run killed after its last epoch
    (marker incomplete, no metrics.json): what ``train --resume`` continues from."""
    from misalatch.training.runs import train

    out = tmp_path_factory.mktemp("resume") / "run"
    train(TrainConfig(out=str(out), keep_resume_state=True, **{**FAST, "max_epochs": 2, "patience": 5}))
    _set_marker(out, complete=False)
    (out / "metrics.json").unlink()
    return out


def _set_marker(run: Path, **changes: Any) -> None:
    doc = json.loads((run / "run.json").read_text())
    doc.update(changes)
    (run / "run.json").write_text(json.dumps(doc))


@pytest.fixture()
def run(killed, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(killed, copy)
    return copy


def _resume_fails(capsys, run: Path, *needles: str) -> str:
    code = cli_main(["-q", "train", "--resume", str(run)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith("misalatch train: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    marker = read_marker(run)
    assert marker is not None and marker["complete"] is False  # not "resumed" and marked complete
    assert not (run / "metrics.json").exists()
    return err


def test_an_intact_killed_run_resumes(run, capsys):
    assert cli_main(["-q", "train", "--resume", str(run)]) == 0, capsys.readouterr().err
    assert read_marker(run)["complete"] is True and (run / "metrics.json").is_file()


def _edit_json(run: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads((run / "resume.json").read_text())
    change(doc)
    (run / "resume.json").write_text(json.dumps(doc))
    reseal(run, "resume")  # consistent: the checks behind the manifest must refuse it


def _edit_tensors(run: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    from safetensors.torch import load_file, save_file

    tensors = dict(load_file(str(run / "resume.safetensors")))
    change(tensors)
    save_file(tensors, str(run / "resume.safetensors"))
    reseal(run, "resume")


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.__setitem__(key, value)


@pytest.mark.parametrize("change, needles", [
    (_set("history", "abc"), ("resume.json", "'history' must be a list of 2 rows")),
    (_set("history", [{"epoch": 1}, {"epoch": 2}]), ("resume.json", "history row 1")),
    (lambda d: d["history"][1].__setitem__("dev_loss", "low"), ("history row 2",)),
    (_set("epoch", "two"), ("'epoch' must be an integer",)),
    (_set("best_epoch", 9), ("'best_epoch' must be an integer in 0..2",)),
    (_set("stopper", {"best": "x"}), ("'stopper'",)),
    (_set("stopped", "no"), ("'stopped' must be true or false",)),
    (lambda d: d["rng"].__setitem__("numpy", ["PCG64", 1, 0, 0.0]), ("RNG state numpy",)),
    (lambda d: d["rng"].__setitem__("python", [2, None]), ("RNG state python",)),
    (lambda d: d["rng"].__setitem__("cuda_devices", 3), ("rng.cuda0 is missing",)),
    (lambda d: d["optimizer"]["param_groups"][0].__setitem__("params", [0]), ("optimizer parameter group",)),
    (lambda d: d["optimizer"]["param_groups"][0].__setitem__("lr", "fast"), ("optimizer field 'lr'",)),
    (lambda d: d["optimizer"].__setitem__("indices", "all"), ("'optimizer' must be an optimiser state",)),
])
def test_crafted_resume_json(run, capsys, change, needles):
    _edit_json(run, change)
    _resume_fails(capsys, run, *needles)


def _first_moment(tensors: dict[str, torch.Tensor]) -> str:
    return next(k for k, v in tensors.items() if k.startswith("optim.") and k.endswith("exp_avg") and v.ndim == 2
                and v.shape[0] != v.shape[1])


@pytest.mark.parametrize("change, needles", [
    (lambda t: t.__setitem__("rng.python_mt", t["rng.python_mt"][:100]), ("rng.python_mt is int64 [100]",)),
    (lambda t: t.__setitem__("rng.torch", t["rng.torch"][:10]), ("rng.torch is uint8 [10]",)),
    (lambda t: t.__setitem__("rng.generator", t["rng.generator"].to(torch.int64)), ("rng.generator is int64",)),
    (lambda t: t.__setitem__("rng.numpy_keys", t["rng.numpy_keys"] - 2**40), ("outside 0..2**32-1",)),
    (lambda t: t.__setitem__(_first_moment(t), t[_first_moment(t)].t().contiguous()), ("optimizer state", "exp_avg")),
    (lambda t: t.__setitem__(_first_moment(t), t[_first_moment(t)].to(torch.float16)), ("float16",)),
    (lambda t: t.__setitem__("optim.9999.exp_avg", torch.zeros(2)), ("optim.9999.exp_avg",)),
    (lambda t: t.__setitem__("evil", torch.zeros(2)), ("unexpected tensor 'evil'",)),
])
def test_crafted_resume_tensors(run, capsys, change, needles):
    _edit_tensors(run, change)
    _resume_fails(capsys, run, *needles)


def test_resume_state_of_another_model_size(run, capsys):
    """Current weights of another configuration (the best weights stay right)."""
    def change(doc: dict[str, Any]) -> None:
        doc["model_is_best"] = False
    _edit_json(run, change)
    from safetensors.torch import load_file

    best = {f"model.{k}": v for k, v in load_file(str(run / "best.safetensors")).items()}
    _edit_tensors(run, lambda t: t.update({**best, "model.bogus": torch.zeros(3, dtype=torch.int8)}))
    _resume_fails(capsys, run, "current weights", "'bogus' is not part of the model")


@pytest.mark.parametrize("field, value, needle", [
    ("model", "mmlatch", "records model 'misa'"),
    ("feedback", "sequence", "records feedback 'none'"),
])
def test_run_json_naming_another_model_or_variant(run, capsys, field, value, needle):
    doc = json.loads((run / "run.json").read_text())
    doc["config"][field] = value
    (run / "run.json").write_text(json.dumps(doc))
    err = _resume_fails(capsys, run, "run.json", needle)
    assert f"--{field} {value!r}" in err


@pytest.mark.parametrize("lost", ["vocab.json", "config.yaml"])
def test_a_run_that_lost_a_file_it_needs_is_not_resumed(run, capsys, lost):
    (run / lost).unlink()
    _resume_fails(capsys, run, f"{run / lost}: missing", "cannot be resumed")


def test_a_changed_vocabulary_is_not_resumed(run, capsys):
    vocab = json.loads((run / "vocab.json").read_text())
    (run / "vocab.json").write_text(json.dumps(vocab[:-1] + ["zzz-other"]))
    _resume_fails(capsys, run, "vocab.json", "is not the vocabulary")


def test_a_finished_seed_that_lost_its_weights_is_not_counted(run, capsys):
    # the seed looks finished (metrics.json) but its checkpoint is gone
    (run / "metrics.json").write_text(json.dumps({"best_epoch": 1, "dev_loss": 1.0, "validation": {}, "test": {}}))
    (run / "best.safetensors").unlink()
    code = cli_main(["-q", "train", "--resume", str(run)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "best.safetensors" in err, err
    assert read_marker(run)["complete"] is False


@pytest.mark.parametrize("key, value", [("params", 3), ("fused", "yes"), ("foreach", "no"), ("betas", [0.9])])
def test_crafted_optimizer_group(run, capsys, key, value):
    _edit_json(run, lambda d: d["optimizer"]["param_groups"][0].__setitem__(key, value))
    _resume_fails(capsys, run, "optimizer")
