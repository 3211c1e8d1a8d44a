"""``misalatch search``: validation-only hyper-parameter search; flags of its own plus any train flag."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from misalatch.cli._config import ThreadsFlag, apply_threads, parse_flags
from misalatch.cli.sweep import split_argv
from misalatch.errors import ConfigError


# ----------------------------------------------------------------------------------------------
# misalatch search
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchArgs(ThreadsFlag):
    """Hyper-parameter search on the VALIDATION split only (Optuna TPE, median pruning on the per-epoch
    dev loss); the test split is never evaluated. Exports the best configuration as OUT/best.yaml for
    misalatch train --config / misalatch sweep --config. Any misalatch train flag fixes a setting.
    Example: misalatch search --trials 40 --out searches/mosi --data mosi --feedback static
    """

    out: Optional[str] = None
    """Search folder: one run folder per trial, search.json, best.yaml. Required unless --join."""
    trials: int = 20
    """Finished (complete or pruned) trials the study should hold; a re-run continues up to this."""
    storage: Optional[str] = None
    """Optuna storage URL (default sqlite:///OUT/study.db); see misalatch sweep --help."""
    study: Optional[str] = None
    """Study name (default search-<folder name>)."""
    join: bool = False
    """Work on an existing search (space and settings from --storage/--study); no training flags."""
    space: Optional[str] = None
    """YAML file of ranges replacing the default space (docs/experiments.md)."""
    objective: str = "dev_loss"
    """dev_loss (validation task loss, minimised) or a validation metric (mae minimised, others maximised)."""
    sampler_seed: Optional[int] = None
    """Seed of the TPE sampler (per worker)."""
    wait: float = 600
    """With --join: seconds to wait for the study to appear (a worker may start before the sweep does)."""
    retries: int = 1
    """Extra attempts for a trial whose worker died."""
    heartbeat: int = 30
    """Seconds between a worker's heartbeats."""
    grace: Optional[int] = None
    """Seconds without a heartbeat before a trial is taken for dead (default 4 × --heartbeat)."""
    stall: Optional[int] = None
    """Seconds without a training step before a live worker stops beating, so that its run is taken over
    (a stuck worker; default 1800, at least 2 × --grace)."""


def main(argv: list[str]) -> int:
    mine, train_argv = split_argv(argv, SearchArgs)
    if "-h" in mine or "--help" in mine:
        parse_flags(SearchArgs, ["--help"], prog="misalatch search")
    args = parse_flags(SearchArgs, mine, prog="misalatch search")
    from misalatch.experiments.search import SearchSpec, default_space, join_search, load_space, run_search_worker, start_search
    from misalatch.experiments.studies import Liveness, redact
    from misalatch.cli.train import parse_train_args

    apply_threads(args.threads)
    liveness = Liveness.from_flags(args.heartbeat, args.grace, args.retries, args.stall)
    if args.join:
        if train_argv or args.space:
            raise ConfigError("--join takes the space and every setting from the study; remove the other flags")
        if not args.storage or not args.study:
            raise ConfigError("--join needs --storage URL and --study NAME")
        from misalatch.experiments.studies import wait_for_study

        wait_for_study(args.study, args.storage, timeout=args.wait, on_wait=print)
        search = join_search(args.storage, args.study, out=args.out, liveness=liveness, sampler_seed=args.sampler_seed)
    else:
        if not args.out:
            raise ConfigError("--out FOLDER is required (where the trial folders and best.yaml go)")
        base = parse_train_args(train_argv)
        if base.seeds:
            raise ConfigError("a search trains one seed per trial (--seed); run the best config over seeds with misalatch sweep")
        space = load_space(args.space) if args.space else default_space(base)
        spec = SearchSpec(base, space, args.objective, args.trials)
        search = start_search(spec, args.out, storage=args.storage, study=args.study, liveness=liveness,
                              sampler_seed=args.sampler_seed)
        print(f"search {search.study.study_name}: {args.trials} trials, objective validation {args.objective} "
              f"({spec.direction}); storage {redact(search.storage_url)}")
        print(f"join from another machine: misalatch search --join --storage '{redact(search.storage_url)}' "
              f"--study {search.study.study_name}")
    run_search_worker(search)
    from misalatch.experiments.search import best_trial

    best = best_trial(search.study)
    if best is None:
        print("no trial completed; see search.json for the errors")
        return 1
    print(f"best: trial {best.number}, validation {search.spec.objective} {best.value:.6g}: {best.params}")
    print(f"config: {search.out / 'best.yaml'}  (misalatch train --config {search.out / 'best.yaml'})")
    return 0
