"""Search: validation only, resumable, and its best configuration trains."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from misalatch.cli import main as cli_main
from misalatch.data.loading import load_dataset
from misalatch.errors import ConfigError
from misalatch.experiments.search import check_space, default_space
from misalatch.training.config import TrainConfig
from misalatch.training.runs import train
from tests.experiments.conftest import TINY_FLAGS

SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
         "hidden_size": {"type": "categorical", "choices": [4, 8]},
         "dropout": {"type": "float", "low": 0.0, "high": 0.5}}


def test_search_never_touches_the_test_split_and_exports_a_config_that_trains(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import misalatch.training.loop as loop
    import misalatch.training.runs as runs

    test_ids = {s.id for s in load_dataset("synthetic", synthetic_sizes={"train": 16, "valid": 8, "test": 8}).splits["test"]}
    seen: list[set[str]] = []
    real = runs.evaluate

    def spy(model, segments, *args, **kwargs):
        seen.append({s.id for s in segments})
        return real(model, segments, *args, **kwargs)

    monkeypatch.setattr(runs, "evaluate", spy)  # the final evaluations of a run
    monkeypatch.setattr(loop, "evaluate", spy)  # the per-epoch dev evaluations inside fit()
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    out = tmp_path / "search"
    argv = ["search", "--trials", "3", "--out", str(out), "--space", str(tmp_path / "space.yaml"), "--sampler-seed", "0",
            *TINY_FLAGS, "--max-epochs", "2"]
    assert cli_main(argv) == 0
    assert seen and all(not (ids & test_ids) for ids in seen)  # validation segments only, every time
    doc = json.loads((out / "search.json").read_text())
    assert doc["split"] == "validation" and doc["counts"]["complete"] + doc["counts"]["pruned"] == 3
    assert "test" not in json.dumps(doc["trials"]).replace("evaluate_test", "")
    study = optuna.load_study(study_name="search-search", storage=f"sqlite:///{out.resolve()}/study.db")
    for trial in study.get_trials():
        assert "test" not in trial.user_attrs
        metrics = json.loads((out / trial.user_attrs["run_dir"] / "metrics.json").read_text())
        assert metrics["test"] is None and metrics["test_loss"] is None
    best = min((t for t in study.get_trials() if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert doc["best"]["number"] == best.number

    # the exported YAML trains as it is, with the test split evaluated as usual
    cfg = TrainConfig.from_yaml(out / "best.yaml")
    assert cfg.evaluate_test and cfg.lr == pytest.approx(best.params["lr"]) and cfg.hidden_size == best.params["hidden_size"]
    result = train(cfg.replace(out=str(tmp_path / "final"), max_epochs=1))
    assert set(result.runs[0].test) >= {"mae", "acc2_non0"}

    # re-running the same command continues: with 3 finished trials nothing is trained again
    seen.clear()
    assert cli_main(argv) == 0 and seen == []
    argv[2] = "4"
    assert cli_main(argv) == 0
    assert len(optuna.load_study(study_name="search-search", storage=f"sqlite:///{out.resolve()}/study.db").get_trials()) == 4


def test_the_space_is_validated_and_feedback_adds_mask_dropouts() -> None:
    assert "mask_dropout" not in default_space(TrainConfig())
    assert {"mask_dropout", "generator_dropout"} <= set(default_space(TrainConfig(feedback="static")))
    with pytest.raises(ConfigError, match="'seed' is not a training setting"):
        check_space({"seed": {"type": "int", "low": 1, "high": 3}}, "space.yaml")
    with pytest.raises(ConfigError, match="log range needs low > 0"):
        check_space({"lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, "space.yaml")
    with pytest.raises(ConfigError, match="unknown entries"):
        check_space({"lr": {"type": "float", "low": 0.1, "high": 1.0, "choices": [1]}}, "space.yaml")
