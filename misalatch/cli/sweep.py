"""``misalatch sweep``: flags of its own plus any ``misalatch train`` flag (also used by ``search``).

The command's own flags are a typed dataclass (tyro); everything else on the line is a training
flag, parsed by the train command's own parser. For a sweep, a training flag given several values
(``--feedback none,static`` or ``--feedback none static``, ``--lr 1e-4,3e-4``) becomes a grid
dimension; each value is parsed and checked by the same parser, one at a time. A training flag that
takes a list itself (``--synthetic-size 60 20 20``) is never a grid dimension.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Optional

import tyro

from misalatch.cli._config import ThreadsFlag, apply_threads, flag_kinds, normalize_argv, parse_flags
from misalatch.errors import ConfigError
from misalatch.training.config import TrainConfig

log = logging.getLogger(__name__)

_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
_TRAIN_LISTS = flag_kinds(TrainConfig).lists  # flags that take a list of values themselves


def split_argv(argv: list[str], own: type) -> tuple[list[str], list[str]]:
    """Separate the flags of the dataclass ``own`` (and -h/--help) from the training flags."""
    fields = {f.name.replace("_", "-"): f for f in dataclasses.fields(own)}
    booleans = {name for name, f in fields.items() if f.type in (bool, "bool")}
    lists = {flag[2:] for flag in flag_kinds(own).lists}
    mine, rest = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else None
        if arg in ("-h", "--help"):
            mine.append(arg)
        elif name is not None and (name in fields or (name.startswith("no-") and name[3:] in booleans)):
            mine.append(arg)
            if "=" not in arg and name in fields and name not in booleans:
                if i + 1 >= len(argv):
                    raise ConfigError(f"--{name} needs a value")
                mine.append(argv[i + 1])
                i += 1
                while name in lists and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                    mine.append(argv[i + 1])  # --seeds 1 2 3: every value up to the next flag
                    i += 1
        else:
            rest.append(arg)
        i += 1
    return mine, rest


def grid_from_argv(argv: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Pull lists out of training flags (``--lr 1e-4,3e-4`` or ``--lr 1e-4 3e-4``): (argv with the first
    value of each, {field: values}). Flags that take a list themselves keep theirs."""
    argv = normalize_argv(argv, flag_kinds(TrainConfig))
    out, grid = [], {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, inline = arg.partition("=")
        field = flag[2:].replace("-", "_")
        if arg.startswith("--") and flag not in ("--config",) and flag not in _TRAIN_LISTS and field in _TRAIN_FIELDS:
            if eq:
                values, i = [inline], i + 1
            else:
                values, i = [], i + 1
                while i < len(argv) and not argv[i].startswith("--"):
                    values.append(argv[i])
                    i += 1
            values = [v.strip() for raw in values for v in (raw.split(",") if "," in raw else [raw])]
            if any(not v for v in values):
                raise ConfigError(f"{flag} {','.join(values)}: an empty value in the list")
            if len(values) > 1:
                grid[field] = values
            out += [flag, *values[:1]]
            continue
        out.append(arg)
        i += 1
    return out, grid


def typed_values(base: TrainConfig, field: str, values: list[str]) -> tuple:
    """Each raw value parsed by the train parser (choices and types checked), in order."""
    flag = f"--{field.replace('_', '-')}"
    parsed = []
    for raw in values:
        try:
            cfg = tyro.cli(TrainConfig, default=base, args=[flag, raw], prog="misalatch sweep")
        except SystemExit as err:
            raise ConfigError(f"{flag} {','.join(values)}: {raw!r} is not a valid value") from err
        parsed.append(getattr(cfg, field))
    return tuple(parsed)


# ----------------------------------------------------------------------------------------------
# misalatch sweep
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepArgs(ThreadsFlag):
    """Run a grid of training settings × seeds as one Optuna study; write results.{md,csv,json,png}.

    Any `misalatch train` flag (--config FILE.yaml included) applies to every run; several values
    (--feedback none,static or --feedback none static, --lr 1e-4,3e-4) make it a dimension of the grid.
    Example: misalatch sweep --data mosi --feedback none sequence static --seeds 1111 1112 1113 --out sweeps/mosi
    """

    out: Optional[str] = None
    """Sweep folder: run folders, results and (by default) the study database. Required unless --join."""
    seeds: tuple[int, ...] = (1111, 1112, 1113, 1114, 1115)
    """Seeds, a dimension of the grid (--seeds 1 2 or --seeds 1,2)."""
    storage: Optional[str] = None
    """Optuna storage URL (default sqlite:///OUT/study.db); postgresql+psycopg2://..., mysql+pymysql://... or
    journal:PATH let workers on other machines --join."""
    study: Optional[str] = None
    """Study name (default sweep-<folder name>)."""
    join: bool = False
    """Work on an existing sweep (grid and settings come from --storage/--study); no training flags."""
    baseline: Optional[str] = None
    """Values every variant is compared with (default none: feedback=none); e.g. static or feedback=none."""
    variants: Optional[str] = None
    """YAML file of named variants (name: {setting: value, ...}): a grid dimension 'variant' over these points,
    for sweeps that are not a product of flags; a variant setting model or preset starts from that recipe."""
    wait: float = 600
    """With --join: seconds to wait for the study to appear (a worker may start before the sweep does)."""
    retries: int = 1
    """Extra attempts for a run that raised or whose worker died."""
    heartbeat: int = 30
    """Seconds between a worker's heartbeats."""
    grace: Optional[int] = None
    """Seconds without a heartbeat before a run is taken for dead and retried (default 4 × --heartbeat)."""
    stall: Optional[int] = None
    """Seconds without a training step before a live worker stops beating, so that its run is taken over
    (a stuck worker; default 1800, at least 2 × --grace)."""
    summarize: bool = False
    """Only write results from the storage (nothing is trained)."""


def parse_sweep(argv: list[str]):
    """(SweepArgs, SweepSpec or None for --join) from a ``misalatch sweep`` command line."""
    mine, train_argv = split_argv(argv, SweepArgs)
    if "-h" in mine or "--help" in mine:
        parse_flags(SweepArgs, ["--help"], prog="misalatch sweep")
    args = parse_flags(SweepArgs, mine, prog="misalatch sweep")
    from misalatch.experiments.sweep import SweepSpec, default_baseline
    from misalatch.cli.train import parse_train_args

    if args.join:
        if train_argv:
            raise ConfigError(f"--join takes the grid and every setting from the study; remove {' '.join(train_argv)}")
        if not args.storage or not args.study:
            raise ConfigError("--join needs --storage URL and --study NAME (printed by the command that started the sweep)")
        return args, None
    if not args.out:
        raise ConfigError("--out FOLDER is required (where the run folders and results go)")
    train_argv, raw_grid = grid_from_argv(train_argv)
    base = parse_train_args(train_argv)
    seeds = tuple(args.seeds)
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    grid = {field: typed_values(base, field, values) for field, values in raw_grid.items()}
    named = read_variants(args.variants) if args.variants else {}
    if named:
        grid = {"variant": tuple(named), **grid}
    grid["seed"] = seeds
    spec = SweepSpec(base, grid, default_baseline(grid, args.baseline), named)
    return args, spec


def read_variants(path: str) -> dict[str, dict]:
    """``--variants FILE.yaml``: an ordered mapping of variant names to mappings of training settings."""
    import yaml
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--variants {path}: no such file")
    try:
        doc = yaml.safe_load(file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"--variants {path}: not valid YAML ({err})") from None
    if not isinstance(doc, dict) or not doc:
        raise ConfigError(f"--variants {path}: expected a mapping of variant names to settings")
    out = {}
    for name, settings in doc.items():
        if not isinstance(name, str) or not name.strip() or "," in name:
            raise ConfigError(f"--variants {path}: variant name {name!r} must be a non-empty string without commas")
        if settings is None:
            settings = {}
        if not isinstance(settings, dict):
            raise ConfigError(f"--variants {path}: variant {name!r} must map to settings (field: value), got {settings!r:.60}")
        out[name] = {str(k).replace("-", "_"): v for k, v in settings.items()}
    return out


def main(argv: list[str]) -> int:
    args, spec = parse_sweep(argv)
    from misalatch.experiments.results import write_results
    from misalatch.experiments.studies import Liveness, redact
    from misalatch.experiments.sweep import join_sweep, progress, run_worker, start_sweep

    apply_threads(args.threads)
    liveness = Liveness.from_flags(args.heartbeat, args.grace, args.retries, args.stall)
    if spec is None:
        from misalatch.experiments.studies import wait_for_study

        wait_for_study(args.study, args.storage, timeout=args.wait, on_wait=print)
        sweep = join_sweep(args.storage, args.study, out=args.out, liveness=liveness)
    else:
        sweep = start_sweep(spec, args.out, storage=args.storage, study=args.study, liveness=liveness)
        print(f"sweep {sweep.name}: {len(spec.variants())} variant(s) × {len(spec.seeds)} seed(s) = {spec.size} runs; "
              f"storage {redact(sweep.storage_url)}")
        print(f"join from another machine: misalatch sweep --join --storage '{redact(sweep.storage_url)}' "
              f"--study {sweep.name}")
    if not args.summarize:
        run_worker(sweep, resume=spec is not None)
    paths = write_results(sweep)
    state = progress(sweep)
    from misalatch.experiments.results import collect

    doc = collect(sweep)
    print(f"{len(state.complete)}/{spec.size if spec else sweep.spec.size} runs complete; results: {paths['md']}")
    for failure in doc["failed"]:
        print(f"FAILED {failure['key']} seed {failure['seed']} after {failure['attempts']} attempt(s): {failure['error']}")
    return 1 if doc["failed"] else 0
