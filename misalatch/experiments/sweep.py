"""Sweeps: a grid of training settings × seeds, one ordinary run folder per point, and the table.

A sweep is an Optuna study whose sampler is a ``GridSampler`` over the grid
(the seed is one of its dimensions), kept in a storage (``misalatch.experiments.studies``) so that
any number of workers, on any number of machines, can share it. The sweep folder holds::

    <out>/sweep.json                 what the folder is (a misalatch sweep), storage and study name
    <out>/study.db                   the default storage (SQLite)
    <out>/runs/<variant>/seed-<s>/   one run folder per point, exactly what ``misalatch train`` writes
    <out>/results.{json,csv,md,png}  the table (see ``misalatch.experiments.results``)

Exactly one complete run per grid point: the command that starts the sweep queues one WAITING
trial per grid point (carrying its ``grid_id``; the GridSampler turns it into parameters), and
workers only pop queued trials, which Optuna hands to exactly one worker each. A trial not from the
queue (two workers racing for the last point) is pruned before it trains. A failed run is queued
again by the one worker that recorded the failure (Optuna's retry callback: the worker itself after
an exception, or the first worker to notice a dead worker's stale heartbeat), at most ``--retries``
times. A point that already has a complete trial is never trained again, so re-running the same
command continues the sweep; it also queues once more (with a fresh ``--retries`` budget) the runs
that failed or were interrupted before; joiners (``--join``) only pull.
"""

from __future__ import annotations

import dataclasses
import fcntl
import itertools
import json
import logging
import math
import re
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from misalatch.errors import ConfigError, MisalatchError
from misalatch.experiments.studies import (
    Liveness,
    attempts,
    fail_stale,
    heartbeat,
    load_existing_study,
    open_storage,
    redact,
    retry_callback,
    run_trial,
    stored_folder,
)
from misalatch.io.atomic import atomic_write_text
from misalatch.io.documents import finite_number
from misalatch.io.progress import progress_bar
from misalatch.io.owned import check_target, claim_output, is_owned, lock_path, record_written
from misalatch.training.config import TrainConfig

log = logging.getLogger(__name__)

SWEEP_MARKER = "sweep.json"
SWEEP_MARKER_FORMAT = "misalatch-sweep"
STUDY_ATTR = "misalatch_sweep"
SPEC_VERSION = 1
DEFAULT_SEEDS = (1111, 1112, 1113, 1114, 1115)
NOT_GRIDDABLE = ("seeds", "out", "overwrite")
QUEUED_ATTR = "misalatch_queued"  # system attr of a trial queued by the sweep itself (resume)
MAX_GRID_POINTS = 10_000  # variants × seeds; checked before the grid is enumerated
VARIANT_FIELD = "variant"  # the grid dimension of named variants (--variants FILE.yaml)


class RunFailed(MisalatchError):
    """One run of a sweep raised; the trial is recorded failed with the error and retried."""


# ----------------------------------------------------------------------------------------------
# the grid
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs: the settings common to every run and the grid (field → values).

    ``grid`` always holds ``seed``; every other entry is a ``TrainConfig`` field. A *variant*
    is one combination of the non-seed values; its ``key`` is the bare value when there is a single
    non-seed dimension (``none``, ``static``), else ``field=value,field=value``. ``baseline`` names
    the values that make a variant's baseline (default ``feedback=none`` when the grid has it):
    every variant is compared with the variant equal to it except for those values.
    """

    base: TrainConfig
    grid: dict[str, tuple[Any, ...]]
    baseline: dict[str, Any] = field(default_factory=dict)
    named: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Named variants (``--variants FILE.yaml``): the grid's ``variant`` dimension takes these names,
    each a set of training settings over the base, so that a sweep can hold points that are not a
    product of flags (MISA on t and tav, a feedback variant on tav only, another model)."""

    def __post_init__(self) -> None:
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        if not isinstance(self.grid, dict) or "seed" not in self.grid or not self.grid["seed"]:
            raise ConfigError("a sweep needs at least one seed (--seeds 1111,1112,...)")
        if self.named or VARIANT_FIELD in self.grid:
            self._check_named(names)
        size = 1
        for name, values in self.grid.items():
            if name != VARIANT_FIELD and (not isinstance(name, str) or name not in names or name in NOT_GRIDDABLE):
                raise ConfigError(f"--{str(name).replace('_', '-')}: not a training setting a sweep can vary")
            if not isinstance(values, tuple) or not values:
                raise ConfigError(f"--{name.replace('_', '-')}: an empty list of values")
            size *= len(values)  # checked before anything enumerates the grid (a crafted study may hold 10^14)
            if size > MAX_GRID_POINTS:
                raise ConfigError(f"the grid has more than {MAX_GRID_POINTS} points (variants × seeds); split the "
                                  "sweep into several")
            for value in values:
                if value is not None and not isinstance(value, (str, int, bool)) and not finite_number(value):
                    raise ConfigError(f"--{name.replace('_', '-')}: {value!r} cannot be a grid value "
                                      "(use a string, finite number or boolean setting)")
            if len(set(map(repr, values))) != len(values):
                raise ConfigError(f"--{name.replace('_', '-')}: a value is listed twice ({list(values)})")
        for seed in self.grid["seed"]:
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
                raise ConfigError(f"--seeds: {seed!r} is not a seed (an integer in 0..{2**32 - 1})")
        if not isinstance(self.baseline, dict):
            raise ConfigError(f"--baseline: expected field=value pairs, got {self.baseline!r}")
        for name, value in self.baseline.items():
            if name not in self.grid or name == "seed" or value not in self.grid[name]:
                raise ConfigError(f"--baseline {name}={value}: not a value of the grid "
                                  f"({ {k: list(v) for k, v in self.variant_grid.items()} })")
        for params in self.variants():  # every combination must be a valid config, before any run
            self.config_for(params, self.grid["seed"][0])

    def _check_named(self, fields: set[str]) -> None:
        if tuple(self.grid.get(VARIANT_FIELD, ())) != tuple(self.named) or not self.named:
            raise ConfigError(f"the grid's {VARIANT_FIELD!r} values must be the names of the named variants")
        for name, settings in self.named.items():
            if not isinstance(settings, dict):
                raise ConfigError(f"variant {name!r}: expected a mapping of training settings, got {settings!r:.60}")
            for key, value in settings.items():
                if key not in fields or key in NOT_GRIDDABLE or key == "seed":
                    raise ConfigError(f"variant {name!r}: {key!r} is not a training setting a variant can set")
                if key in self.grid:
                    raise ConfigError(f"variant {name!r}: {key!r} is also a grid dimension; set it in one place")
                if value is not None and not isinstance(value, (str, int, float, bool)):
                    raise ConfigError(f"variant {name!r}: {key}={value!r} must be a string, number or boolean")

    def _variant_settings(self, name: str) -> dict[str, Any]:
        """The base settings under a named variant: all of them, or, when the variant chooses another
        model or preset, only those the command line changed (the rest come from that recipe)."""
        bundle = self.named[name]
        base = self.base.to_dict()
        if "model" not in bundle and "preset" not in bundle:
            return {**base, **bundle}
        start = TrainConfig.from_dict({"model": self.base.model, "preset": self.base.preset}).to_dict()
        return {**{k: v for k, v in base.items() if start.get(k) != v}, **bundle}

    @property
    def variant_grid(self) -> dict[str, tuple[Any, ...]]:
        return {k: v for k, v in self.grid.items() if k != "seed"}

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.grid["seed"])

    @property
    def size(self) -> int:
        return len(self.variants()) * len(self.seeds)

    def variants(self) -> list[dict[str, Any]]:
        grid = self.variant_grid
        return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]

    def key(self, params: dict[str, Any]) -> str:
        grid = self.variant_grid
        if not grid:
            return "base"
        if len(grid) == 1:
            return str(params[next(iter(grid))])
        return ",".join(f"{name}={params[name]}" for name in grid)

    def folder(self, params: dict[str, Any]) -> str:
        """The variant's folder name under runs/: the key made safe, unique within the sweep."""
        safe = {self.key(p): re.sub(r"[^A-Za-z0-9._=,+-]+", "_", self.key(p)).replace(",", "__") for p in self.variants()}
        name = safe[self.key(params)]
        if list(safe.values()).count(name) > 1 or name in ("", ".", ".."):
            name = f"variant-{[self.key(p) for p in self.variants()].index(self.key(params))}"
        return name

    def baseline_of(self, params: dict[str, Any]) -> Optional[dict[str, Any]]:
        """The params of ``params``' baseline variant, or None when it is a baseline itself."""
        if not self.baseline:
            return None
        other = {**params, **self.baseline}
        return None if other == params else other

    def config_for(self, params: dict[str, Any], seed: int, run_dir: str | Path | None = None) -> TrainConfig:
        settings = dict(params)
        name = settings.pop(VARIANT_FIELD, None)
        start = self.base.to_dict() if name is None else self._variant_settings(name)
        try:
            return TrainConfig.from_dict({**start, **settings, "seed": int(seed), "seeds": None,
                                          "out": None if run_dir is None else str(run_dir), "overwrite": False},
                                         source="sweep grid")
        except ConfigError as err:
            raise ConfigError(f"sweep point {self.key(params)} (seed {seed}): {err}") from err

    # -- stored in the study, so that --join needs nothing but the storage and the study name --
    def to_dict(self) -> dict[str, Any]:
        doc = {"version": SPEC_VERSION, "base": self.base.to_dict(),
               "grid": {k: list(v) for k, v in self.grid.items()}, "baseline": dict(self.baseline)}
        if self.named:
            doc["variants"] = {k: dict(v) for k, v in self.named.items()}
        return doc

    @classmethod
    def from_dict(cls, doc: Any, source: str = "the study") -> "SweepSpec":
        """The spec stored with a study: a stranger's database, so every value is checked before use."""
        if not isinstance(doc, dict) or doc.get("version") != SPEC_VERSION:
            raise ConfigError(f"{source}: was not made by this version of misalatch sweep")
        base, grid, baseline = doc.get("base"), doc.get("grid"), doc.get("baseline") or {}
        variants = doc.get("variants") or {}
        if not isinstance(base, dict) or not isinstance(grid, dict) or not isinstance(baseline, dict) or not all(
                isinstance(v, list) for v in grid.values()) or not isinstance(variants, dict) or not all(
                isinstance(v, dict) for v in variants.values()):
            raise ConfigError(f"{source}: the stored sweep settings are malformed (base, grid of lists, baseline "
                              "and variants must be mappings)")
        try:
            return cls(TrainConfig.from_dict(base, source=f"{source} (stored settings)"),
                       {k: tuple(v) for k, v in grid.items()}, dict(baseline), {k: dict(v) for k, v in variants.items()})
        except ConfigError as err:
            raise ConfigError(f"{source}: stored sweep: {err}") from None


def default_baseline(grid: dict[str, tuple[Any, ...]], requested: Optional[str]) -> dict[str, Any]:
    """``--baseline`` as values: ``none`` (a value of the first non-seed field), ``field=value,...``,
    or by default ``feedback=none`` when the grid varies feedback (else the first value of the first field)."""
    variant_fields = [k for k in grid if k != "seed"]
    if not variant_fields:
        return {}
    if requested is None:
        if "none" in grid.get("feedback", ()):
            return {"feedback": "none"}
        return {variant_fields[0]: grid[variant_fields[0]][0]}
    out: dict[str, Any] = {}
    for part in requested.split(","):
        name, _, value = part.rpartition("=")
        name = (name or variant_fields[0]).strip().replace("-", "_")
        if name not in grid or name == "seed":
            raise ConfigError(f"--baseline {requested}: {name!r} is not a field of the grid ({', '.join(variant_fields)})")
        match = [v for v in grid[name] if str(v) == value.strip()]
        if not match:
            raise ConfigError(f"--baseline {requested}: {value!r} is not one of --{name.replace('_', '-')} "
                              f"{','.join(map(str, grid[name]))}")
        out[name] = match[0]
    return out


# ----------------------------------------------------------------------------------------------
# the folder and the study
# ----------------------------------------------------------------------------------------------
def check_sweep_folder(out: Path) -> None:
    """A sweep folder is new, empty, or already a misalatch sweep (then the sweep continues); it is
    recognised by its ``run.json`` marker of kind ``sweep`` (``misalatch.io.owned``)."""
    if not is_owned(out, "sweep"):
        check_target(out, "sweep", flag="--out")  # refuses a non-empty folder that is not a sweep


def read_sweep_marker(out: Path) -> Optional[dict[str, Any]]:
    """What ``sweep.json`` says (study, storage) in an owned sweep folder, else None."""
    path = out / SWEEP_MARKER
    if not is_owned(out, "sweep") or path.is_symlink() or not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == SWEEP_MARKER_FORMAT else None


def _ensure_sweep_folder(out: Path, study: str, url: str) -> dict[str, Any]:
    """Create the owned sweep folder (marker + sweep.json) unless it exists; return sweep.json."""
    check_sweep_folder(out)  # again, now that no other worker is half-way through creating it
    if not is_owned(out, "sweep"):
        with claim_output(out, "sweep", flag="--out") as folder:
            folder.write_json(SWEEP_MARKER, {"format": SWEEP_MARKER_FORMAT, "version": 1, "study": study,
                                             "storage": redact(url), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            folder.file("study.db")  # the default storage, created next
            folder.file("runs")
    marker = read_sweep_marker(out)
    if marker is None:
        raise ConfigError(f"--out {out}: a misalatch sweep folder without a readable {SWEEP_MARKER}; choose another --out")
    return marker


def write_owned(folder: Path, name: str, text: str) -> Path:
    """A file of the sweep folder itself (results), recorded in its marker and written atomically."""
    record_written(folder / name)
    return atomic_write_text(folder / name, text)


@contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Serialise the workers of one sweep folder while they create or top up the study (the lock
    file lies beside the folder, so that nothing appears in a folder before it is known to be ours)."""
    out = out.resolve()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        handle = open(out.parent / f".{out.name}.lock-sweep", "a")
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot create the folder or its lock beside it "
                          f"({err.strerror or err}: {err.filename or out.parent})") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Sweep:
    """An opened sweep: the study, its spec, where run folders go, and how workers stay alive."""

    study: optuna.Study
    spec: SweepSpec
    out: Path
    storage_url: str
    liveness: Liveness

    @property
    def name(self) -> str:
        return self.study.study_name


class _QueueGridSampler(optuna.samplers.GridSampler):
    """The GridSampler without its end-of-grid ``study.stop()``: our workers decide when the grid is
    done (from the queue, see ``progress``) and tell trials outside ``Study.optimize``, where
    ``stop()`` raises."""

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Optional[list[float]]) -> None:
        return None


def _sampler(spec: SweepSpec) -> optuna.samplers.GridSampler:
    grid = {k: list(v) for k, v in spec.grid.items()}
    return _QueueGridSampler(grid, seed=0)  # same order in every worker


def start_sweep(spec: SweepSpec, out: str | Path, *, storage: Optional[str] = None, study: Optional[str] = None,
                liveness: Liveness = Liveness()) -> Sweep:
    """Create the sweep (or continue the same one): folder, marker, study with the grid.

    A storage given with ``--storage`` is opened (and the study made) before anything is written to
    ``out``: a start that fails there (a wrong URL, a server down) leaves no folder or marker that
    would tie ``out`` to the failed storage, so the corrected command can be run with the same ``--out``."""
    from misalatch.experiments.studies import default_storage

    out = Path(out)
    check_sweep_folder(out)
    url = storage or default_storage(out)
    name = study or f"sweep-{out.resolve().name}"
    with folder_lock(out):
        marker = read_sweep_marker(out)
        if marker is not None and (marker.get("study") != name or marker.get("storage") != redact(url)):
            raise ConfigError(f"--out {out}: holds the sweep {marker.get('study')!r} in {marker.get('storage')}; "
                              f"continue it with the same --storage/--study, or choose another --out")
        if url == default_storage(out):  # the database lives in the folder: the folder comes first
            _ensure_sweep_folder(out, name, url)
            opt = _create_sweep_study(spec, name, url, out)
        else:
            opt = _create_sweep_study(spec, name, url, out)
            _ensure_sweep_folder(out, name, url)
    return Sweep(opt, spec, out, url, liveness)


def _create_sweep_study(spec: SweepSpec, name: str, url: str, out: Path) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # as run_worker: misalatch logs what it opens and runs
    opt = optuna.create_study(study_name=name, storage=open_storage(url), sampler=_sampler(spec), load_if_exists=True,
                              direction="minimize")
    existing = opt.user_attrs.get(STUDY_ATTR)
    if existing is None:
        opt.set_user_attr(STUDY_ATTR, {**spec.to_dict(), "out": str(out.resolve())})
    elif not isinstance(existing, dict) or {k: v for k, v in existing.items() if k != "out"} != json.loads(
            json.dumps(spec.to_dict())):
        raise ConfigError(f"--study {name}: exists with a different grid or settings; choose another --study "
                          f"(or --out), or run the same command as before")
    return opt


def join_sweep(storage: str, study: str, *, out: str | Path | None = None, liveness: Liveness = Liveness()) -> Sweep:
    """Open an existing sweep from its storage alone (``misalatch sweep --join``); everything read from
    the storage is checked first (it may be a stranger's database)."""
    store = open_storage(storage)
    opt = load_existing_study(study, store, storage)
    doc = opt.user_attrs.get(STUDY_ATTR)
    if doc is None:
        raise ConfigError(f"--study {study}: is not a misalatch sweep (no grid stored with it)")
    spec = SweepSpec.from_dict(doc, source=f"--study {study}")
    opt = load_existing_study(study, store, storage, sampler=_sampler(spec))
    folder = stored_folder(doc, out, f"--study {study}")
    with folder_lock(folder):
        _ensure_sweep_folder(folder, study, storage)
    return Sweep(opt, spec, folder, storage, liveness)


# ----------------------------------------------------------------------------------------------
# where each grid point stands
# ----------------------------------------------------------------------------------------------
def point_of(spec: SweepSpec, trial: FrozenTrial) -> Optional[tuple[str, int]]:
    """(variant key, seed) of a trial that has its parameters, else None."""
    if not all(name in trial.params for name in spec.grid):
        return None
    params = {k: trial.params[k] for k in spec.variant_grid}
    seed = trial.params["seed"]
    if isinstance(seed, bool) or not isinstance(seed, (int, float)) or not math.isfinite(seed):
        return None  # a crafted trial: not a point of this grid
    return spec.key(params), int(seed)


@dataclass
class Progress:
    complete: dict[tuple[str, int], FrozenTrial] = field(default_factory=dict)
    running: int = 0
    waiting: int = 0
    failed: dict[tuple[str, int], list[FrozenTrial]] = field(default_factory=dict)  # points with no complete run
    grid_ids_needing_run: list[int] = field(default_factory=list)  # nothing complete, running or queued

    @property
    def work_left(self) -> bool:
        return self.waiting > 0


def progress(sweep: Sweep, since: Optional[float] = None) -> Progress:
    """Where the grid stands. ``grid_ids_needing_run``: points with nothing complete, running or
    queued whose last failure is older than ``since`` (an earlier invocation's), so that a run out
    of retries now is not tried forever."""
    trials = sweep.study.get_trials(deepcopy=False)
    state = Progress()
    live_ids: set[int] = set()
    done_ids: set[int] = set()
    latest_failure: dict[int, float] = {}
    for t in trials:
        point = point_of(sweep.spec, t)
        grid_id = t.system_attrs.get("grid_id")
        if t.state == TrialState.COMPLETE and point is not None:
            state.complete.setdefault(point, t)
            done_ids.add(grid_id)
        elif t.state == TrialState.RUNNING:
            state.running += 1
            live_ids.add(grid_id)
        elif t.state == TrialState.WAITING:
            state.waiting += 1
            live_ids.add(grid_id)
        elif t.state == TrialState.FAIL:
            if point is not None:
                state.failed.setdefault(point, []).append(t)
            if isinstance(grid_id, int):
                finished = t.datetime_complete.timestamp() if t.datetime_complete else 0.0
                latest_failure[grid_id] = max(latest_failure.get(grid_id, 0.0), finished)
    for point in list(state.failed):
        if point in state.complete:
            del state.failed[point]
    state.grid_ids_needing_run = sorted(
        g for g in range(sweep.spec.size)
        if g not in live_ids | done_ids and (since is None or latest_failure.get(g, 0.0) < since))
    return state


def queue_unfinished(sweep: Sweep, since: Optional[float] = None) -> int:
    """Queue one WAITING trial for every grid point with nothing complete, running or queued: all
    of them when the sweep starts, the interrupted or failed ones when its command is run again.

    Only the command that starts a sweep queues (under the folder lock); joiners only pull. A queued
    trial carries just its ``grid_id``: the GridSampler turns it into the point's parameters."""
    with folder_lock(sweep.out):
        needed = progress(sweep, since).grid_ids_needing_run
        search_space = {k: list(v) for k, v in sweep.spec.grid.items()}
        for grid_id in needed:
            sweep.study.add_trial(optuna.trial.create_trial(
                state=TrialState.WAITING,
                system_attrs={"grid_id": grid_id, "search_space": search_space, QUEUED_ATTR: True}))
        if needed:
            log.info("sweep %s: %d run(s) queued", sweep.name, len(needed))
        return len(needed)


# ----------------------------------------------------------------------------------------------
# the worker
# ----------------------------------------------------------------------------------------------
@dataclass
class _SetupCache:
    """The last prepared data/text (tokenised once), reused by the next run with the same settings."""

    key: Optional[str] = None
    setup: Any = None

    def get(self, cfg: TrainConfig) -> Any:
        from misalatch.training.setup import setup_run

        key = cfg.replace(seed=0, out=None).to_yaml()
        if key != self.key:
            self.setup, self.key = None, None
            self.setup, self.key = setup_run(cfg), key
        return self.setup


def _set_aside(run_dir: Path) -> None:
    """A run folder left by a failed or killed attempt is kept beside the new one, never deleted.

    The storage gave this point to this worker alone (the earlier attempt's trial is finished), so
    the earlier attempt's folder lock is set aside with it even when it names a process on another
    machine, which no local check could prove dead."""
    stale_lock = lock_path(run_dir)
    if not run_dir.exists() and not stale_lock.exists():
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        return
    k = 1
    while (aside := run_dir.with_name(f"{run_dir.name}.failed-{k}")).exists() or lock_path(aside).exists():
        k += 1
    if run_dir.exists():
        run_dir.rename(aside)
        log.info("%s: the folder of an earlier attempt is kept as %s", run_dir, aside.name)
    if stale_lock.exists():
        stale_lock.rename(lock_path(aside))


def train_run_folder(setup: Any, cfg: TrainConfig, seed: int, run_dir: Path, *,
               on_epoch: Optional[Callable[[dict[str, Any]], None]] = None,
               on_step: Optional[Callable[[], None]] = None) -> Any:
    """One seed in its own owned ``train`` run folder (marker, lock, staged until the first epoch),
    exactly as ``misalatch train`` would leave it, so that every tool that reads run folders (and
    ``misalatch train --resume``) reads it too."""
    from misalatch.training.runs import train_seed

    with claim_output(run_dir, "train", flag="run folder") as output:
        output.annotate(config=cfg.replace(seed=seed, seeds=None, out=str(run_dir), overwrite=False).to_dict())
        return train_seed(setup, seed, output, on_epoch=on_epoch, on_step=on_step)


def _objective(sweep: Sweep, cache: _SetupCache):
    spec = sweep.spec

    def objective(trial: optuna.Trial) -> float:
        frozen = sweep.study._storage.get_trial(trial._trial_id)
        if QUEUED_ATTR not in frozen.system_attrs:  # not from the queue: another worker took the last run first
            raise optuna.TrialPruned("nothing queued: every point is complete, running or queued")
        params = {name: trial.suggest_categorical(name, list(values)) for name, values in spec.grid.items()}
        seed = int(params.pop("seed"))
        key = spec.key(params)
        for other in sweep.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if point_of(spec, other) == (key, seed):
                raise optuna.TrialPruned(f"{key} seed {seed} is already complete (trial {other.number})")
        run_dir = sweep.out / "runs" / spec.folder(params) / f"seed-{seed}"
        attempt = attempts(frozen)
        for name, value in {"key": key, "seed": seed, "run_dir": str(run_dir.relative_to(sweep.out)),
                            "attempt": attempt, "error": None}.items():
            trial.set_user_attr(name, value)
        log.info("sweep %s: %s seed %d (trial %d, attempt %d) -> %s", sweep.name, key, seed, trial.number, attempt,
                 run_dir)
        try:
            with heartbeat(sweep.study, trial, sweep.liveness) as beat:
                cfg = spec.config_for(params, seed, run_dir)
                setup = cache.get(cfg)
                _set_aside(run_dir)
                result = train_run_folder(setup, cfg, seed, run_dir, on_epoch=lambda _row: beat.check(),
                                          on_step=beat.step)
        except Exception as err:  # recorded with the trial, retried by the callback below
            message = f"{type(err).__name__}: {err}"
            trial.set_user_attr("error", message)
            trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
            log.error("sweep %s: %s seed %d failed: %s", sweep.name, key, seed, message)
            raise RunFailed(message) from err
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("epochs_run", result.epochs_run)
        trial.set_user_attr("validation", result.validation)
        trial.set_user_attr("test", result.test)
        trial.set_user_attr("dev_loss", result.dev_loss)
        return result.dev_loss

    return objective


def _after_trial(sweep: Sweep):
    callback = retry_callback(sweep.liveness.retries)

    def after(study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.FAIL and trial.user_attrs.get("error"):
            if attempts(trial) <= sweep.liveness.retries:
                log.info("sweep %s: %s seed %s queued for attempt %d", sweep.name, trial.user_attrs.get("key"),
                         trial.user_attrs.get("seed"), attempts(trial) + 1)
            callback(study, trial)  # queues the retry unless --retries are used up

    return after


def run_worker(sweep: Sweep, *, resume: bool = True, max_runs: Optional[int] = None, poll: Optional[float] = None) -> int:
    """Pull runs until the grid is done; wait while others hold the last ones (they may die).

    ``resume`` (the command that starts or re-runs the sweep): first queue every point that has
    nothing complete, running or queued (all of them in a new sweep; the failed or interrupted ones
    of an earlier invocation otherwise). Returns the number of trials this worker started.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # misalatch logs each run itself
    objective, after = _objective(sweep, _SetupCache()), _after_trial(sweep)
    poll = poll if poll is not None else max(1.0, sweep.liveness.heartbeat_interval / 2)
    started, since = 0, time.time()
    bar = progress_bar(sweep.spec.size, f"sweep {sweep.name}", unit="run")
    while max_runs is None or started < max_runs:
        fail_stale(sweep.study, sweep.liveness)
        state = progress(sweep, since)
        bar.update(len(state.complete) - bar.n)  # every worker's finished runs: the ETA is the sweep's
        if resume:
            resume = False
            if state.grid_ids_needing_run:
                queue_unfinished(sweep, since)
                continue
        if state.work_left:
            run_trial(sweep.study, objective, RunFailed, after)
            started += 1
        elif state.running:
            time.sleep(poll)  # the last runs are held by other workers; take over if one dies
        else:
            break
    bar.close()
    return started
