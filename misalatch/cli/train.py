"""``misalatch train``: flags derived from ``TrainConfig`` with tyro, plus the command's own."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import tyro

from misalatch.cli._config import ThreadsFlag, apply_threads, flag_value, parse_flags
from misalatch.errors import ConfigError
from misalatch.training.config import TrainConfig, deferred_validation

_TRAIN_HELP = (
    "Train MISA, a MISA+MMLatch variant (--feedback) or the original MMLatch model (--model mmlatch). "
    "Values come from the model's preset (or --preset NAME), then --config FILE.yaml, then flags. "
    "Lists are written --seeds 1 2 or --seeds 1,2. "
    "Example: misalatch train --data mosei --patience 4. "
    "misalatch train --resume RUN_DIR continues a killed run with its own config (docs/reliability.md); "
    "add --trust-unverified to resume a run whose checkpoint has no manifest (docs/security.md)"
)


@dataclass(frozen=True)
class TrainCommand(ThreadsFlag):
    """The flags of ``misalatch train``: the training settings and the command's own."""

    train: tyro.conf.OmitArgPrefixes[TrainConfig]
    config: Optional[str] = None
    """A YAML file of training settings (e.g. a search's best.yaml): above the preset, below the flags."""
    resume: Optional[str] = None
    """Continue this killed run folder with its own config (only --device, --keep-resume-state and --threads
    may be given)."""


def parse_train_command(argv: list[str]) -> TrainCommand:
    """The ``TrainCommand`` a ``misalatch train`` command line means (preset, then file, then flags)."""
    path = flag_value(argv, "--config")
    # --model / --preset choose the starting values, so they are read before the other flags
    chosen = {key: value for key in ("model", "preset") if (value := flag_value(argv, f"--{key}")) is not None}
    if "-h" in argv or "--help" in argv:
        default = _help_defaults(chosen)
    else:
        default = TrainConfig.from_yaml(path, chosen) if path else TrainConfig.from_dict(chosen, source="command line")
    with deferred_validation():
        parsed = parse_flags(TrainCommand, argv, prog="misalatch train", description=_TRAIN_HELP,
                             default=TrainCommand(train=default, config=path))
    return dataclasses.replace(parsed, train=dataclasses.replace(parsed.train))  # validated now: a ConfigError


def _help_defaults(chosen: dict[str, str]) -> TrainConfig:
    """The defaults ``--help`` shows, without importing the models (torch): the preset's values."""
    from misalatch.training.presets import PRESETS, preset_values

    name = chosen.get("preset") or chosen.get("model", "misa")
    values = {**(preset_values(name) if name in PRESETS else {}), **chosen}
    with deferred_validation():
        return TrainConfig(**values)


def parse_train_args(argv: list[str]) -> TrainConfig:
    """The TrainConfig a ``misalatch train`` command line means (preset, then file, then flags)."""
    command = parse_train_command(argv)
    if command.resume is not None:
        raise ConfigError("--resume belongs to misalatch train (misalatch train --resume RUN_DIR)")
    return command.train


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


def _resume_changes(rest: list[str]) -> tuple[dict[str, object], Optional[int]]:
    """The few flags --resume accepts (and --threads); any other would change the math of a half-done run."""
    from misalatch.training.runs import RESUME_FLAGS

    allowed = {"--" + f.replace("_", "-") for f in RESUME_FLAGS} | {"--threads"}
    given = [a.split("=", 1)[0] for a in rest if a.startswith("--")]
    bad = sorted({f for f in given if f not in allowed | {"--no-keep-resume-state", "--help"}})
    if bad:
        raise ConfigError(f"--resume continues with the run's own config; {', '.join(bad)} cannot be changed "
                          f"(allowed with --resume: {', '.join(sorted(allowed))})")
    with deferred_validation():
        parsed = parse_flags(TrainCommand, rest, prog="misalatch train --resume RUN_DIR",
                             default=TrainCommand(train=TrainConfig()))
    changes = {f: getattr(parsed.train, f) for f in RESUME_FLAGS if any(g.endswith(f.replace("_", "-")) for g in given)}
    return changes, parsed.threads


def main(argv: list[str]) -> int:
    resume, rest = _pop_resume(argv)
    trust_unverified = "--trust-unverified" in rest
    rest = [a for a in rest if a != "--trust-unverified"]
    if trust_unverified and resume is None:
        raise ConfigError("--trust-unverified goes with --resume RUN_DIR (a new run writes its own manifests)")
    if resume is not None:
        changes, threads = _resume_changes(rest)
    else:
        command = parse_train_command(argv)
        threads = command.threads
    # torch only now: --help and a bad flag never pay for it
    from misalatch.evaluation.report import format_aggregate_table, format_metrics_table
    from misalatch.training.distributed import is_main_process
    from misalatch.training.runs import resume_training, train

    apply_threads(threads)
    result = (resume_training(resume, trust_unverified=trust_unverified, **changes) if resume is not None
              else train(command.train))
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
