"""``misalatch train``: flags derived from :class:`~misalatch.training.config.TrainConfig` with tyro."""

from __future__ import annotations

import dataclasses

import tyro

from misalatch.cli._config import flag_value, pop_config
from misalatch.errors import ConfigError
from misalatch.evaluation.report import format_aggregate_table, format_metrics_table
from misalatch.training.config import TrainConfig, deferred_validation

_TRAIN_HELP = (
    "Train MISA, a MISA+MMLatch variant (--feedback) or the original MMLatch model (--model mmlatch). "
    "Values come from the model's preset (or --preset NAME), then --config FILE.yaml, then flags. "
    "Example: misalatch train --data mosei --patience 4. "
    "misalatch train --resume RUN_DIR continues a killed run with its own config (docs/reliability.md); "
    "add --trust-unverified to resume a run whose checkpoint has no manifest (docs/security.md)"
)


def parse_train_args(argv: list[str]) -> TrainConfig:
    """The TrainConfig a ``misalatch train`` command line means (preset, then file, then flags)."""
    path, rest = pop_config(argv)
    # --model / --preset choose the starting values, so they are read before the other flags
    chosen = {key: value for key in ("model", "preset") if (value := flag_value(rest, f"--{key}")) is not None}
    default = TrainConfig.from_yaml(path, chosen) if path else TrainConfig.from_dict(chosen, source="command line")
    with deferred_validation():
        parsed = tyro.cli(TrainConfig, default=default, args=rest, prog="misalatch train", description=_TRAIN_HELP)
    return dataclasses.replace(parsed)  # validated now: a bad value is a ConfigError (one line, exit 1)


def _pop_resume(argv: list[str]) -> tuple[str | None, list[str]]:
    """Take ``--resume RUN_DIR`` out of argv."""
    for i, arg in enumerate(argv):
        if arg == "--resume":
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise ConfigError("--resume needs the run folder to continue (misalatch train --resume RUN_DIR)")
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if arg.startswith("--resume="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1:]
    return None, argv


def _resume_changes(rest: list[str]) -> dict[str, object]:
    """The few flags --resume accepts; any other would change the math of a half-done run."""
    from misalatch.training.runs import RESUME_FLAGS

    allowed = {"--" + f.replace("_", "-") for f in RESUME_FLAGS}
    given = [a.split("=", 1)[0] for a in rest if a.startswith("--")]
    bad = sorted({f for f in given if f not in allowed | {"--no-keep-resume-state"}})
    if bad:
        raise ConfigError(f"--resume continues with the run's own config; {', '.join(bad)} cannot be changed "
                          f"(allowed with --resume: {', '.join(sorted(allowed))})")
    with deferred_validation():
        parsed = tyro.cli(TrainConfig, args=rest, prog="misalatch train --resume RUN_DIR")
    return {f: getattr(parsed, f) for f in RESUME_FLAGS
            if any(g.endswith(f.replace("_", "-")) for g in given)}


def main(argv: list[str]) -> int:
    from misalatch.training.distributed import is_main_process
    from misalatch.training.runs import resume_training, train

    resume, rest = _pop_resume(argv)
    trust_unverified = "--trust-unverified" in rest
    rest = [a for a in rest if a != "--trust-unverified"]
    if trust_unverified and resume is None:
        raise ConfigError("--trust-unverified goes with --resume RUN_DIR (a new run writes its own manifests)")
    if resume is not None:
        result = resume_training(resume, trust_unverified=trust_unverified, **_resume_changes(rest))
    else:
        result = train(parse_train_args(rest))
    if not is_main_process():  # torchrun: rank 0 prints (and alone wrote the run folder)
        return 0
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
