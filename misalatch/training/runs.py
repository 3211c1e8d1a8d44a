"""Runs: from a :class:`TrainConfig` to trained, evaluated, saved models.

``train(config)`` sets the run up once (:mod:`misalatch.training.setup`: data loaded, text tokenised
or mapped to ids exactly once), then for each seed builds a fresh model, fits it on the train split
with model selection on the validation split, evaluates the best checkpoint once on the test split
and writes its run folder (:mod:`misalatch.training.run_dir`, which also loads runs back).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from misalatch.evaluation.aggregate import AggregateRow, aggregate, write_aggregate
from misalatch.training.checkpoint import save_checkpoint
from misalatch.training.config import TrainConfig
from misalatch.training.loop import SplitEvaluation, evaluate, fit
from misalatch.training.run_dir import (
    claim_out_dir,
    data_facts,
    save_text_assets,
    write_history,
    write_metrics,
    write_run_config,
)
from misalatch.training.seeding import seed_everything
from misalatch.training.setup import RunSetup, build_model, resolve_device, setup_run

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """One seed's outcome (also in ``<run_dir>/metrics.json``)."""

    seed: int
    run_dir: Path
    best_epoch: int
    dev_loss: float
    validation: dict[str, float]
    test: dict[str, float]  # empty when the config's evaluate_test is off
    epochs_run: int = 0


@dataclass
class TrainResult:
    """What :func:`train` returns: one :class:`RunResult` per seed and the aggregate over seeds."""

    out_dir: Path
    runs: list[RunResult]
    aggregate: dict[str, dict[str, Any]] = field(default_factory=dict)
    synthetic: bool = False

    @property
    def test_metrics(self) -> dict[str, float]:
        """Test metrics of the only run, or the mean over seeds."""
        if len(self.runs) == 1:
            return self.runs[0].test
        return {k: v["mean"] for k, v in self.aggregate.items()}


def train_seed(setup: RunSetup, seed: int, run_dir: Path, *,
               on_epoch: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Fit one seed, save its best checkpoint, evaluate it once on the test split (unless the
    config's ``evaluate_test`` is off: then the test split is never touched). ``on_epoch`` sees
    every epoch's history row (a search trial reports and prunes there)."""
    cfg = setup.config
    device = resolve_device(cfg.device)
    generator = seed_everything(seed)
    model = build_model(setup).to(device)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_text_assets(setup, run_dir)
    resolved = cfg.replace(seed=seed, seeds=None, out=str(run_dir))
    write_run_config(run_dir, setup, resolved)
    sidecar_base = {"config": resolved.to_dict(), "model_config": setup.model_config.to_dict(), "seed": seed,
                    "data": data_facts(setup.dataset), "text_encoder": setup.text.description}

    def save_best(epoch: int, dev: SplitEvaluation, optimizer: torch.optim.Optimizer) -> None:
        save_checkpoint(run_dir, "best", model, optimizer=optimizer,
                        sidecar={**sidecar_base, "epoch": epoch, "metrics": {"validation": dev.metrics, "dev_loss": dev.loss}})

    log.info("seed %d: training on %s (%d train / %d valid), device %s", seed, setup.dataset.name,
             len(setup.dataset.splits["train"]), len(setup.dataset.splits["valid"]), device)
    fit_result = fit(
        model, setup.dataset.splits["train"], setup.dataset.splits["valid"], setup.spec,
        batch_size=cfg.batch_size, lr=cfg.lr, clip_value=cfg.clip_value, max_epochs=cfg.max_epochs,
        patience=cfg.patience, trials=cfg.trials, lr_decay=cfg.lr_decay, dev_loss_reduction=cfg.dev_loss_reduction,
        generator=generator, device=device, max_batches_per_epoch=cfg.max_batches_per_epoch, on_improvement=save_best,
        warmup_epochs=cfg.resolved_warmup_epochs, on_epoch=on_epoch,
    )
    write_history(run_dir, fit_result.history)
    # the model holds the best weights; evaluate validation (for the record) and test once
    kw = dict(batch_size=cfg.batch_size, device=device, reduction=cfg.dev_loss_reduction)
    valid = evaluate(model, setup.dataset.splits["valid"], setup.spec, **kw)
    test = evaluate(model, setup.dataset.splits["test"], setup.spec, **kw) if cfg.evaluate_test else None
    test_metrics = test.metrics if test is not None else None
    metrics = {"validation": valid.metrics, "test": test_metrics, "dev_loss": valid.loss,
               "test_loss": test.loss if test is not None else None,
               "best_epoch": fit_result.best_epoch, "epochs_run": len(fit_result.history), "seed": seed,
               "data": data_facts(setup.dataset), "text_encoder": setup.text.description}
    write_metrics(run_dir, metrics)
    save_checkpoint(run_dir, "best", model, sidecar={**sidecar_base, "epoch": fit_result.best_epoch,
                                                      "metrics": {"validation": valid.metrics, "test": test_metrics,
                                                                  "dev_loss": valid.loss}})
    return RunResult(seed, run_dir, fit_result.best_epoch, valid.loss, valid.metrics, test_metrics or {},
                     epochs_run=len(fit_result.history))


def train(config: TrainConfig | dict[str, Any] | None = None, **overrides: Any) -> TrainResult:
    """Train MISA (or a MISA+MMLatch variant) as configured; one run per seed.

    ``config`` is a :class:`TrainConfig`, a dict of its fields, or None for the defaults (the
    built-in synthetic data); keyword ``overrides`` win. Returns a :class:`TrainResult`.
    """
    if config is None:
        config = TrainConfig()
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    if overrides:
        config = TrainConfig.from_dict({**config.to_dict(), **overrides})
    setup = setup_run(config)
    out = claim_out_dir(config, setup.dataset)
    seeds = config.run_seeds
    runs = []
    for seed in seeds:
        run_dir = out if len(seeds) == 1 else out / f"seed-{seed}"
        runs.append(train_seed(setup, seed, run_dir))
    result = TrainResult(out_dir=out, runs=runs, synthetic=setup.dataset.synthetic)
    if len(runs) > 1:
        result.aggregate = aggregate([r.test for r in runs])
        group = {"dataset": setup.dataset.name + (" (synthetic)" if setup.dataset.synthetic else ""),
                 "feedback": config.feedback, "text_encoder": setup.text.description.split(" (")[0], "split": "test"}
        write_aggregate([AggregateRow(group=group, seeds=list(seeds), metrics=result.aggregate)], out)
    return result
