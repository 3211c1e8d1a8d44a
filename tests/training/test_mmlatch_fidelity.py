"""``--model mmlatch`` trains and evaluates as the original trainer (georgepar/mmlatch) does (issue 19, part 1).

The original: ignite early stopping with patience 10 from epoch 1; one evaluation handler holding
ReduceLROnPlateau attached to the train evaluator and then the validation evaluator (two steps
per epoch); shuffled evaluation loaders of 32.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import misalatch.training.loop as loop
from misalatch.data.batching import collate
from misalatch.training.config import TrainConfig
from misalatch.training.run_dir import evaluate_run, load_run
from misalatch.training.runs import eval_seed, plateau_schedule, train
from misalatch.training.seeding import seed_everything
from misalatch.training.setup import build_model, setup_run

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(synthetic_size=(24, 8, 8), text_encoder="learned", hidden_size=8, batch_size=8)
LR = 5e-4
# scripted per-epoch losses: the dev loss never beats epoch 1, the eval-mode training loss keeps falling
DEV = [1.0] + [1.5] * 40
TRAIN = [0.9 - 0.01 * e for e in range(41)]


def expected_lrs(epochs: int, steps: str) -> list[float]:
    """The lr each epoch trains with, from torch's ReduceLROnPlateau driven as the original drives it."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "min", factor=0.5, patience=2, cooldown=2,
                                                           min_lr=LR / 20.0)
    lrs = []
    for epoch in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        if steps == "train-then-dev":
            scheduler.step(TRAIN[epoch])  # EvaluationHandler on the train evaluator
        scheduler.step(DEV[epoch])  # the same handler on the validation evaluator
    return lrs


@pytest.fixture
def scripted_losses(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """fit's evaluations report the scripted losses (train split: 24 segments, dev: 8)."""
    real = loop.evaluate
    calls = {"train": 0, "valid": 0}

    def scripted(model, segments, spec, **kw):
        out = real(model, segments, spec, **kw)
        split = "train" if len(segments) == TINY["synthetic_size"][0] else "valid"
        out.loss = (TRAIN if split == "train" else DEV)[calls[split]]
        calls[split] += 1
        return out

    monkeypatch.setattr(loop, "evaluate", scripted)
    return calls


def fit_mmlatch(**changes) -> loop.FitResult:
    """fit() as ``train`` calls it for ``--model mmlatch`` (no run folder: only the loop is under test)."""
    cfg = TrainConfig.from_dict({"model": "mmlatch", **TINY, **changes})
    setup = setup_run(cfg)
    cfg = setup.config
    return loop.fit(build_model(setup), setup.dataset.splits["train"], setup.dataset.splits["valid"], setup.spec,
                    batch_size=cfg.batch_size, lr=cfg.lr, clip_value=cfg.clip_value, max_epochs=cfg.max_epochs,
                    patience=cfg.patience, trials=cfg.trials, lr_decay=cfg.lr_decay,
                    dev_loss_reduction=cfg.dev_loss_reduction, generator=seed_everything(cfg.seed),
                    device=torch.device("cpu"), schedule=plateau_schedule(cfg),
                    warmup_epochs=cfg.resolved_warmup_epochs, eval_seed=eval_seed(cfg, cfg.seed))


def test_mmlatch_patience_counts_from_epoch_1_and_the_lr_steps_twice_per_epoch(scripted_losses) -> None:
    result = fit_mmlatch(max_epochs=40)
    # best at epoch 1, then the 10th non-improving epoch stops it (ignite EarlyStopping(patience=10)):
    # no feedback warm-up although the MMLatch masks are on
    assert (result.best_epoch, len(result.history)) == (1, 11)
    lrs = [row["lr"] for row in result.history]
    assert lrs == pytest.approx(expected_lrs(11, "train-then-dev"), rel=1e-12)
    assert lrs != pytest.approx(expected_lrs(11, "dev"))  # the script tells the two schedules apart
    assert [row["train_eval_loss"] for row in result.history] == pytest.approx(TRAIN[:11])
    assert scripted_losses == {"train": 11, "valid": 11}


def test_plateau_steps_dev_keeps_the_single_step(scripted_losses) -> None:
    result = fit_mmlatch(max_epochs=8, patience=20, plateau_steps="dev")
    assert [row["lr"] for row in result.history] == pytest.approx(expected_lrs(8, "dev"), rel=1e-12)
    assert scripted_losses["train"] == 0  # no pass over the training set


def test_the_warmup_a_run_used_is_recorded(tmp_path: Path) -> None:
    out = tmp_path / "mmlatch"
    train(TrainConfig.from_dict({"model": "mmlatch", "max_epochs": 1, "out": str(out), **TINY}))
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["warmup_epochs"] == 0 and recorded["plateau_steps"] == "train-then-dev"
    assert json.loads((out / "best.json").read_text())["config"]["warmup_epochs"] == 0
    assert TrainConfig.from_dict({"model": "misa", "feedback": "static"}).warmup_epochs is None  # resolved at run time
    assert TrainConfig.from_dict({"model": "mmlatch"}).resolved_warmup_epochs == 0
    assert TrainConfig.from_dict({"model": "mmlatch", "warmup_epochs": 4}).resolved_warmup_epochs == 4


def test_length_quirk_evaluates_in_seeded_shuffled_batches(tmp_path: Path) -> None:
    """Under the quirk a prediction depends on its batch mates: evaluation uses shuffled, seeded batches
    of the run's batch size, and ``misalatch evaluate`` reproduces the run's own numbers."""
    out = tmp_path / "quirk"
    cfg = TrainConfig.from_dict({"model": "mmlatch", "max_epochs": 2, "length_quirk": True, "out": str(out),
                                 **{**TINY, "synthetic_size": (24, 8, 20)}})
    metrics = train(cfg).runs[0].test
    run = load_run(out)
    again = evaluate_run(run, splits=("test",))["test"]
    assert again.metrics["mae"] == metrics["mae"]

    segments = run.dataset.splits["test"]
    seed = loop.eval_shuffle_seed(cfg.seed, 0, "test")
    perm = torch.randperm(len(segments), generator=torch.Generator().manual_seed(seed)).numpy()
    manual = np.empty(len(segments))
    with torch.no_grad():
        for start in range(0, len(segments), 8):
            idx = perm[start:start + 8]
            manual[idx] = run.model(collate([segments[i] for i in idx], run.spec).inputs).prediction.reshape(-1).numpy()
    np.testing.assert_allclose(again.predictions, manual, rtol=1e-6, atol=1e-6)
    assert again.ids == [s.id for s in segments]  # still reported in file order
    sorted_batches = loop.evaluate(run.model, segments, run.spec, batch_size=8, device=torch.device("cpu"))
    assert not np.allclose(sorted_batches.predictions, manual)  # batch-dependent, as documented
