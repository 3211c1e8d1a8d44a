"""End-to-end training on tiny synthetic data: checkpoint, evaluate, predict, determinism, config."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from misalatch.cli import main as cli_main
from misalatch.errors import ConfigError
from misalatch.cli.train import parse_train_args
from misalatch.training.config import TrainConfig
from misalatch.training.run_dir import load_run
from misalatch.training.runs import train
from tests.conftest import shared_file

TINY = dict(synthetic_size=(48, 24, 24), text_encoder="learned", hidden_size=16, batch_size=16, max_epochs=2)
REGRESSION_KEYS = ["mae", "corr", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc5", "acc7"]


def test_train_checkpoint_evaluate_predict(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(TrainConfig(out=str(out), **TINY))
    assert result.synthetic
    for name in ("config.yaml", "metrics.json", "history.csv", "curves.png", "best.safetensors", "best.json", "best.manifest.json", "run.json", "vocab.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["validation"]) == REGRESSION_KEYS and list(metrics["test"]) == REGRESSION_KEYS
    assert metrics["data"]["synthetic"] is True and metrics["data"]["name"] == "synthetic-mosi"
    sidecar = json.loads((out / "best.json").read_text())
    assert sidecar["format"] == "misalatch-checkpoint" and sidecar["seed"] == 1111 and "torch" in sidecar["versions"]
    with open(out / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and "train_diff" in rows[0] and "dev_mae" in rows[0]

    # re-evaluating the saved run reproduces the test metrics
    assert cli_main(["evaluate", str(out)]) == 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    for key in REGRESSION_KEYS:
        assert evaluation["test"][key] == pytest.approx(metrics["test"][key], rel=1e-5, nan_ok=True)

    preds = tmp_path / "preds.csv"
    assert cli_main(["predict", str(out), "--out", str(preds)]) == 0
    with open(preds) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 24 and len({r["segment_id"] for r in rows}) == 24
    assert rows[0].keys() == {"split", "segment_id", "label", "prediction"}


def test_same_seed_gives_identical_metrics(tmp_path: Path) -> None:
    a = train(TrainConfig(out=str(tmp_path / "a"), **TINY)).runs[0]
    b = train(TrainConfig(out=str(tmp_path / "b"), **TINY)).runs[0]
    assert a.test == b.test and a.validation == b.validation
    c = train(TrainConfig(out=str(tmp_path / "c"), seed=7, **TINY)).runs[0]
    assert c.test != a.test


def test_several_seeds_write_an_aggregate(tmp_path: Path) -> None:
    cfg = TrainConfig(out=str(tmp_path / "multi"), seeds=(1, 2), **{**TINY, "max_epochs": 1})
    result = train(cfg)
    assert [r.seed for r in result.runs] == [1, 2]
    assert (tmp_path / "multi" / "seed-1" / "metrics.json").is_file()
    agg = json.loads((tmp_path / "multi" / "aggregate.json").read_text())
    text = json.dumps(agg)
    assert "mae" in text and result.aggregate["mae"]["n"] == 2


def test_trials_and_lr_decay_take_effect(tmp_path: Path) -> None:
    # lr so large that dev loss gets worse: patience 0 -> restore + decay after each bad epoch
    cfg = TrainConfig(out=str(tmp_path / "r"), patience=0, trials=3, lr_decay=0.5, lr=0.05, **{**TINY, "max_epochs": 8})
    train(cfg)
    with open(tmp_path / "r" / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    lrs = [float(r["lr"]) for r in rows]
    bad = [r["improved"] == "False" for r in rows]
    assert any(bad), "the test needs at least one non-improving epoch"
    # after every non-improving epoch (patience 0) the next epoch runs at half the lr
    for i in range(len(rows) - 1):
        assert lrs[i + 1] == pytest.approx(lrs[i] * (0.5 if bad[i] else 1.0))
    assert sum(bad) <= 3 and (sum(bad) == 3 or len(rows) == 8)  # stops after the third restore


def test_config_file_and_command_line_override(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"data": "mosei", "patience": 9, "lr": 0.001, "seeds": [1, 2]}))
    cfg = parse_train_args(["--config", str(path), "--patience", "4"])
    assert (cfg.data, cfg.patience, cfg.lr, cfg.seeds) == ("mosei", 4, 0.001, (1, 2))
    assert parse_train_args(["--data", "mosei", "--patience", "4"]).patience == 4  # the seed's example
    path.write_text(yaml.safe_dump({"patiense": 3}))
    with pytest.raises(ConfigError, match="unknown key 'patiense' \\(did you mean 'patience'\\?\\)"):
        parse_train_args(["--config", str(path)])
    path.write_text(yaml.safe_dump({"patience": "six"}))
    with pytest.raises(ConfigError, match="patience must be an integer"):
        parse_train_args(["--config", str(path)])


def test_resolved_config_reloads(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), **{**TINY, "max_epochs": 1}))
    again = TrainConfig.from_yaml(out / "config.yaml")
    assert again.batch_size == 16 and again.bert_freeze == "none" and again.hidden_size == 16


def test_bad_inputs_give_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["train", "--data", str(tmp_path / "nope.csv")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    assert cli_main(["train", "--data", "mosq"]) == 1
    err = capsys.readouterr().err
    assert "unknown dataset 'mosq'" in err and "synthetic" in err
    with pytest.raises(SystemExit) as info:
        cli_main(["train", "--petience", "3"])
    assert info.value.code == 2
    assert "petience" in capsys.readouterr().err
    assert cli_main(["trian"]) == 2
    assert "did you mean 'train'" in capsys.readouterr().err


def test_existing_output_is_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(ConfigError, match="not empty"):
        train(TrainConfig(out=str(out), **TINY))
    with pytest.raises(ConfigError, match="no misalatch run.json marker"):
        train(TrainConfig(out=str(out), overwrite=True, **TINY))
    assert (out / "notes.txt").read_text() == "my notes"


def test_disabled_modalities_carry_no_information(tmp_path: Path) -> None:
    out = tmp_path / "t_only"
    train(TrainConfig(out=str(out), modalities="t", **{**TINY, "max_epochs": 1}))
    run = load_run(out)
    from misalatch.data.batching import collate

    segs = run.dataset.splits["test"][:4]
    base = run.model(collate(segs, run.spec).inputs).prediction
    import dataclasses

    shuffled = [dataclasses.replace(s, visual=s.visual * -5 + 3, acoustic=s.acoustic[::-1].copy()) for s in segs]
    torch.testing.assert_close(run.model(collate(shuffled, run.spec).inputs).prediction, base, rtol=0, atol=0)


def test_text_only_csv_requires_modalities_t(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = shared_file("data", "mosi", "mosi_text_labels.csv")
    assert cli_main(["train", "--data", str(csv_path), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "no acoustic, visual features" in err and "--modalities t" in err


def test_a_few_batches_on_the_real_mosi_text_csv(tmp_path: Path) -> None:
    """Real CMU-MOSI text and labels with the offline MiniLM encoder (A/V absent: --modalities t)."""
    csv_path = shared_file("data", "mosi", "mosi_text_labels.csv")
    result = train(TrainConfig(data=str(csv_path), modalities="t", out=str(tmp_path / "mosi"), max_epochs=1,
                               max_batches_per_epoch=2, batch_size=32, hidden_size=32))
    metrics = json.loads((tmp_path / "mosi" / "metrics.json").read_text())
    assert metrics["data"]["split_sizes"] == {"train": 1281, "valid": 229, "test": 685}
    assert metrics["data"]["dropped"] == {"empty": 4}
    assert metrics["data"]["synthetic"] is False
    assert set(metrics["test"]) == set(REGRESSION_KEYS) and result.runs[0].best_epoch == 1
