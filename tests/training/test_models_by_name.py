"""Both registered models through the same training loop, run folder and commands (MISA and MMLatch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from misalatch.cli import main as cli_main
from misalatch.errors import CheckpointError, ConfigError
from misalatch.training.config import TrainConfig
from misalatch.training.runs import train

TINY = dict(synthetic_size=(16, 8, 8), text_encoder="learned", hidden_size=8, batch_size=8, max_epochs=1)


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# config: the model chooses its recipe, flags override it
# ----------------------------------------------------------------------------------------------
def test_model_mmlatch_starts_from_its_recipe() -> None:
    cfg = TrainConfig.from_dict({"model": "mmlatch"})
    assert (cfg.preset, cfg.loss, cfg.lr, cfg.batch_size, cfg.scheduler) == ("mmlatch", "l1", 5e-4, 32, "plateau")
    assert (cfg.plateau_factor, cfg.plateau_patience, cfg.plateau_cooldown, cfg.plateau_min_lr_factor) == (0.5, 2, 2, 0.05)
    assert (cfg.patience, cfg.trials, cfg.max_epochs, cfg.clip_value) == (9, 1, 100, 0.0)
    assert cfg.dev_loss_reduction == "sample_mean" and cfg.hidden_size == 100 and cfg.mask_dropout == 0.2
    misa = TrainConfig.from_dict({})
    assert (misa.model, misa.preset, misa.loss, misa.lr, misa.scheduler) == ("misa", "misa", "mse", 1e-4, "none")


def test_flags_and_files_override_the_preset(tmp_path: Path) -> None:
    from misalatch.cli.train import parse_train_args

    cfg = parse_train_args(["--model", "mmlatch", "--lr", "0.001", "--patience", "3"])
    assert (cfg.model, cfg.lr, cfg.patience, cfg.loss, cfg.batch_size) == ("mmlatch", 0.001, 3, "l1", 32)
    mixed = parse_train_args(["--preset", "mmlatch", "--model", "misa"])  # MISA with the MMLatch recipe
    assert (mixed.model, mixed.preset, mixed.loss, mixed.scheduler) == ("misa", "mmlatch", "l1", "plateau")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"model": "mmlatch", "batch_size": 8}))
    from_file = parse_train_args(["--config", str(path), "--max-epochs", "2"])
    assert (from_file.batch_size, from_file.max_epochs, from_file.lr) == (8, 2, 5e-4)


def test_an_unknown_model_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'mult'; valid: misa, mmlatch"):
        TrainConfig(model="mult")
    with pytest.raises(ConfigError, match=r"unknown training preset 'fast'; valid: misa, mmlatch"):
        TrainConfig.from_dict({"preset": "fast"})
    assert cli_main(["train", "--model", "mult"]) == 1


def test_mmlatch_refuses_a_misa_only_feedback_variant(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="feedback='static'"):
        train(TrainConfig.from_dict({"model": "mmlatch", "feedback": "static", "out": str(tmp_path / "r"), **TINY}))


# ----------------------------------------------------------------------------------------------
# train -> evaluate / predict / masks, and the run folder's record
# ----------------------------------------------------------------------------------------------
def test_mmlatch_trains_evaluates_predicts_and_exports_masks(tmp_path: Path) -> None:
    """The synthetic default (MiniLM text), tiny."""
    out = tmp_path / "run"
    result = train(TrainConfig.from_dict({"model": "mmlatch", "out": str(out), **{**TINY, "text_encoder": None}}))
    test = result.runs[0].test
    assert {"mae", "corr", "acc2_has0", "f1_has0", "acc7"} <= set(test)
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert (recorded["model"], recorded["preset"], recorded["loss"]) == ("mmlatch", "mmlatch", "l1")
    sidecar = json.loads((out / "best.json").read_text())
    assert sidecar["model"] == "mmlatch" and sidecar["model_config"]["mask_generator"] == "lstm"
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,lr,train_task,train_total,train_eval_loss,dev_loss")  # the scheduler's first step

    assert cli_main(["evaluate", str(out)]) == 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["test"]["mae"] == pytest.approx(test["mae"], rel=1e-5)
    assert cli_main(["predict", str(out), "--out", str(tmp_path / "pred.csv")]) == 0
    assert len((tmp_path / "pred.csv").read_text().splitlines()) == 1 + 8
    assert cli_main(["masks", str(out), "--out", str(tmp_path / "masks")]) == 0
    summary = json.loads((tmp_path / "masks" / "summary.json").read_text())
    assert summary["feedback"] == "mmlatch"


def test_a_checkpoint_of_one_model_does_not_load_as_the_other(tmp_path: Path) -> None:
    from misalatch.training.run_dir import load_run

    misa_dir = tmp_path / "misa"
    train(TrainConfig.from_dict({"out": str(misa_dir), **TINY}))
    mm_dir = tmp_path / "mmlatch"
    train(TrainConfig.from_dict({"model": "mmlatch", "out": str(mm_dir), **TINY}))
    # a MISA folder whose record was switched to MMLatch (config and sidecar), weights left as they were
    sidecar = json.loads((mm_dir / "best.json").read_text())
    for name in ("best.json",):
        record = json.loads((misa_dir / name).read_text())
        record["model"], record["model_config"] = "mmlatch", sidecar["model_config"]
        record["config"]["model"] = "mmlatch"
        (misa_dir / name).write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=r"best\.json.*best\.manifest\.json says"):
        load_run(misa_dir)
    from tests.test_bad_inputs_run import reseal

    reseal(misa_dir)  # a consistent crafted set: the model check itself must refuse it
    with pytest.raises(CheckpointError, match=r"best\.safetensors.*'misa'.*'mmlatch'"):
        load_run(misa_dir)
