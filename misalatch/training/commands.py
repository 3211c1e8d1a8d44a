"""``misalatch train | evaluate | predict``: flags derived from typed dataclasses with tyro."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

from misalatch.evaluation.report import format_aggregate_table, format_metrics_table
from misalatch.training.checkpoint import atomic_write_text
from misalatch.training.config import TrainConfig

log = logging.getLogger(__name__)

_TRAIN_HELP = (
    "Train MISA or a MISA+MMLatch variant. Defaults reproduce the original MISA; --config FILE.yaml "
    "loads a config file first and command-line flags override it. Example: misalatch train --data mosei --patience 4"
)


def _pop_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """Take ``--config FILE`` (or ``--config=FILE``) out of argv; it seeds the defaults."""
    rest, path = [], None
    it = iter(range(len(argv)))
    skip = False
    for i in it:
        if skip:
            skip = False
            continue
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv):
                from misalatch.errors import ConfigError

                raise ConfigError("--config needs a file path")
            path, skip = argv[i + 1], True
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return path, rest


def parse_train_args(argv: list[str]) -> TrainConfig:
    """The TrainConfig a ``misalatch train`` command line means (file first, then flags)."""
    path, rest = _pop_config(argv)
    default = TrainConfig.from_yaml(path) if path else TrainConfig()
    return tyro.cli(TrainConfig, default=default, args=rest, prog="misalatch train", description=_TRAIN_HELP)


def train_main(argv: list[str]) -> int:
    from misalatch.training.runs import train

    cfg = parse_train_args(argv)
    result = train(cfg)
    label = " [SYNTHETIC data]" if result.synthetic else ""
    if len(result.runs) == 1:
        run = result.runs[0]
        task = "classification" if "acc" in run.test else "regression"
        print(f"test metrics{label} (best epoch {run.best_epoch}, seed {run.seed}):")
        print(format_metrics_table(run.test, task=task))
    else:
        print(f"test metrics{label}, mean ± std over seeds {[r.seed for r in result.runs]}:")
        print(format_aggregate_table(result.aggregate))
    print(f"run folder: {result.out_dir}")
    return 0


@dataclass(frozen=True)
class EvaluateArgs:
    """Re-evaluate a saved run on its validation and test splits (or on other data)."""

    run_dir: tyro.conf.Positional[str]
    data: Optional[str] = None
    """Other data prepared the same way (default: the run's own --data)."""
    data_root: Optional[str] = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    out: Optional[str] = None
    """Where to write the metrics JSON (default: RUN_DIR/evaluation.json)."""


def evaluate_main(argv: list[str]) -> int:
    from misalatch.training.runs import evaluate_run, load_run

    args = tyro.cli(EvaluateArgs, args=argv, prog="misalatch evaluate")
    run = load_run(args.run_dir, data=args.data, data_root=args.data_root, device=args.device)
    results = evaluate_run(run)
    task = run.dataset.task
    payload = {"data": run.config.data, "synthetic": run.dataset.synthetic}
    for split, ev in results.items():
        payload[split] = ev.metrics
        print(f"{split}{' [SYNTHETIC data]' if run.dataset.synthetic else ''} (loss {ev.loss:.4f}):")
        print(format_metrics_table(ev.metrics, task=task))
    out = Path(args.out) if args.out else Path(args.run_dir) / "evaluation.json"
    atomic_write_text(out, json.dumps(payload, indent=2))
    print(f"written: {out}")
    return 0


@dataclass(frozen=True)
class PredictArgs:
    """Write one prediction per segment id of a split as CSV."""

    run_dir: tyro.conf.Positional[str]
    out: str
    """CSV file to write (split, segment_id, label, prediction)."""
    data: Optional[str] = None
    data_root: Optional[str] = None
    split: Literal["train", "valid", "test", "all"] = "test"
    device: Literal["auto", "cpu", "cuda"] = "auto"


def predict_main(argv: list[str]) -> int:
    from misalatch.training.runs import evaluate_run, load_run, write_predictions

    args = tyro.cli(PredictArgs, args=argv, prog="misalatch predict")
    run = load_run(args.run_dir, data=args.data, data_root=args.data_root, device=args.device)
    splits = ("train", "valid", "test") if args.split == "all" else (args.split,)
    path = write_predictions(evaluate_run(run, splits), args.out)
    print(f"written: {path} ({sum(len(run.dataset.splits[s]) for s in splits)} rows)")
    return 0
