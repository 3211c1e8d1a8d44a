"""``misalatch train``: flags derived from :class:`~misalatch.training.config.TrainConfig` with tyro."""

from __future__ import annotations

import tyro

from misalatch.cli._config import flag_value, pop_config
from misalatch.evaluation.report import format_aggregate_table, format_metrics_table
from misalatch.training.config import TrainConfig

_TRAIN_HELP = (
    "Train MISA, a MISA+MMLatch variant (--feedback) or the original MMLatch model (--model mmlatch). "
    "Values come from the model's preset (or --preset NAME), then --config FILE.yaml, then flags. "
    "Example: misalatch train --data mosei --patience 4"
)


def parse_train_args(argv: list[str]) -> TrainConfig:
    """The TrainConfig a ``misalatch train`` command line means (preset, then file, then flags)."""
    path, rest = pop_config(argv)
    # --model / --preset choose the starting values, so they are read before the other flags
    chosen = {key: value for key in ("model", "preset") if (value := flag_value(rest, f"--{key}")) is not None}
    default = TrainConfig.from_yaml(path, chosen) if path else TrainConfig.from_dict(chosen, source="command line")
    return tyro.cli(TrainConfig, default=default, args=rest, prog="misalatch train", description=_TRAIN_HELP)


def main(argv: list[str]) -> int:
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
