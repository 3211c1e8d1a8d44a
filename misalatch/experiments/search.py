"""Hyper-parameter search on the validation split only: an Optuna TPE study with pruning.

Each trial is an ordinary run folder (``<out>/trials/trial-<n>/``) trained with
``evaluate_test=False``: the test split is never evaluated, so no test metric is computed, logged or
stored by a search (the final numbers come from a separate ``misalatch sweep --config best.yaml``).
The objective is the validation task loss of the best checkpoint (``dev_loss``, minimised) or a
named validation metric (``mae`` minimised, every other metric maximised). After every epoch the
trial reports its dev loss (negated when the objective is maximised, so that the pruner compares in
the study's direction) and a ``MedianPruner`` stops trials that are worse
than the median of earlier trials at the same epoch.

Default space (``--space FILE.yaml`` replaces it; same format)::

    lr:           {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
    hidden_size:  {type: categorical, choices: [64, 128, 256]}
    dropout:      {type: float, low: 0.0, high: 0.6}
    diff_weight:  {type: float, low: 0.0, high: 1.0}
    sim_weight:   {type: float, low: 0.0, high: 1.5}
    recon_weight: {type: float, low: 0.0, high: 1.5}
    clip_value:   {type: float, low: 0.1, high: 5.0, log: true}
    # only when --feedback is not none:
    mask_dropout:      {type: float, low: 0.0, high: 0.5}
    generator_dropout: {type: float, low: 0.0, high: 0.5}

Like a sweep, a search lives in a storage URL, can be joined from other machines (``--join``),
survives killed workers (heartbeat; the trial is retried with the same parameters) and continues
when re-run: it stops once the study holds ``--trials`` finished (complete or pruned) trials.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import optuna
from optuna.trial import TrialState

from misalatch.errors import ConfigError, MisalatchError
from misalatch.evaluation.metrics import CLASSIFICATION_KEYS, REGRESSION_KEYS
from misalatch.experiments.studies import (
    Liveness,
    attempts,
    default_storage,
    fail_stale,
    heartbeat,
    json_safe,
    load_existing_study,
    open_storage,
    redact,
    run_trial,
    stored_folder,
)
from misalatch.experiments.sweep import train_run_folder
from misalatch.io.atomic import atomic_write_text
from misalatch.io.documents import finite_number, load_yaml
from misalatch.io.owned import check_target, claim_output, is_owned
from misalatch.io.progress import progress_bar
from misalatch.training.config import TrainConfig

log = logging.getLogger(__name__)

STUDY_ATTR = "misalatch_search"
SEARCH_VERSION = 1
SEARCH_MARKER = "search.json"
NOT_SEARCHABLE = ("seed", "seeds", "out", "overwrite", "evaluate_test", "data", "data_root", "device")
OBJECTIVES = ("dev_loss", *REGRESSION_KEYS, *CLASSIFICATION_KEYS)
MAX_CHOICES = 1000  # values of one categorical setting
MAX_BOUND = 1e12  # |low|, |high|, step of a numeric range (Optuna's int ranges overflow far beyond)
MAX_TRIALS = 100_000  # --trials, and the target stored in a study
MAX_CONSECUTIVE_FAILURES = 5  # a worker whose trials fail this many times in a row stops with the first error

DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"type": "float", "low": 1.0e-5, "high": 1.0e-3, "log": True},
    "hidden_size": {"type": "categorical", "choices": [64, 128, 256]},
    "dropout": {"type": "float", "low": 0.0, "high": 0.6},
    "diff_weight": {"type": "float", "low": 0.0, "high": 1.0},
    "sim_weight": {"type": "float", "low": 0.0, "high": 1.5},
    "recon_weight": {"type": "float", "low": 0.0, "high": 1.5},
    "clip_value": {"type": "float", "low": 0.1, "high": 5.0, "log": True},
}
FEEDBACK_SPACE: dict[str, dict[str, Any]] = {
    "mask_dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "generator_dropout": {"type": "float", "low": 0.0, "high": 0.5},
}


class TrialFailed(MisalatchError):
    """A search trial raised (e.g. a diverging loss); it is recorded failed with its error."""


# ----------------------------------------------------------------------------------------------
# the space
# ----------------------------------------------------------------------------------------------
def default_space(base: TrainConfig) -> dict[str, dict[str, Any]]:
    return {**DEFAULT_SPACE, **(FEEDBACK_SPACE if base.feedback != "none" else {})}


def check_space(space: Any, source: str) -> dict[str, dict[str, Any]]:
    """Validate a space mapping (field → {type, low/high[/log/step] | choices}); errors name the key."""
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{source}: expected a non-empty mapping of setting → range")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    out: dict[str, dict[str, Any]] = {}
    for key, rng in space.items():
        name = str(key).replace("-", "_")
        if name not in fields or name in NOT_SEARCHABLE:
            raise ConfigError(f"{source}: {key!r} is not a training setting a search can vary")
        if not isinstance(rng, dict) or rng.get("type") not in ("float", "int", "categorical"):
            raise ConfigError(f"{source}: {key}: expected {{type: float|int|categorical, ...}}, got {rng!r}")
        allowed = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
                   "categorical": {"type", "choices"}}[rng["type"]]
        extra = set(rng) - allowed
        if extra:
            raise ConfigError(f"{source}: {key}: unknown entries {sorted(extra)} for type {rng['type']}")
        if rng["type"] == "categorical":
            choices = rng.get("choices")
            if not isinstance(choices, list) or not choices or len(choices) > MAX_CHOICES or not all(
                    c is None or isinstance(c, (str, int, bool)) or finite_number(c) for c in choices):
                raise ConfigError(f"{source}: {key}: choices must be a non-empty list of at most {MAX_CHOICES} "
                                  "plain values (strings, finite numbers, booleans)")
        else:
            low, high, step = rng.get("low"), rng.get("high"), rng.get("step")
            integer = rng["type"] == "int"

            def number(value: Any) -> bool:
                return finite_number(value) and (not integer or isinstance(value, int)) and abs(value) <= MAX_BOUND

            if not number(low) or not number(high) or not low <= high:
                raise ConfigError(f"{source}: {key}: needs finite {'integers' if integer else 'numbers'} low <= high "
                                  f"(at most {MAX_BOUND:g} in size), got low={low!r} high={high!r}")
            if rng.get("log") is not None and not isinstance(rng["log"], bool):
                raise ConfigError(f"{source}: {key}: log must be true or false, got {rng['log']!r}")
            if rng.get("log") and low <= 0:
                raise ConfigError(f"{source}: {key}: a log range needs low > 0")
            if step is not None:
                if not number(step) or step <= 0:
                    raise ConfigError(f"{source}: {key}: step must be a finite "
                                      f"{'integer' if integer else 'number'} > 0, got {step!r}")
                if rng.get("log"):
                    raise ConfigError(f"{source}: {key}: a log range cannot have a step")
        out[name] = dict(rng)
    return out


def load_space(path: str | Path) -> dict[str, dict[str, Any]]:
    """The space in a YAML file (``--space``), read through the shared safe loader and checked."""
    return check_space(load_yaml(path, flag="--space", what="search space"), f"--space {path}")


def suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    params = {}
    for name, rng in space.items():
        if rng["type"] == "categorical":
            params[name] = trial.suggest_categorical(name, rng["choices"])
        elif rng["type"] == "int":
            params[name] = trial.suggest_int(name, rng["low"], rng["high"], step=rng.get("step", 1), log=rng.get("log", False))
        else:
            params[name] = trial.suggest_float(name, float(rng["low"]), float(rng["high"]), step=rng.get("step"),
                                               log=rng.get("log", False))
    return params


# ----------------------------------------------------------------------------------------------
# the study
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchSpec:
    base: TrainConfig
    space: dict[str, dict[str, Any]]
    objective: str = "dev_loss"
    trials: int = 20

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"--objective {self.objective}: expected dev_loss or a validation metric "
                              f"({', '.join(OBJECTIVES[1:])})")
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or not 1 <= self.trials <= MAX_TRIALS:
            raise ConfigError(f"--trials must be an integer in 1..{MAX_TRIALS}, got {self.trials!r}")
        check_space(self.space, "search space")

    @property
    def direction(self) -> str:
        return "minimize" if self.objective in ("dev_loss", "mae") else "maximize"

    def config_for(self, params: dict[str, Any], run_dir: Path) -> TrainConfig:
        try:
            return TrainConfig.from_dict({**self.base.to_dict(), **params, "out": str(run_dir), "seeds": None,
                                          "overwrite": False, "evaluate_test": False}, source="search trial")
        except ConfigError as err:
            raise ConfigError(f"search trial {params}: {err}") from err

    def best_config(self, params: dict[str, Any]) -> TrainConfig:
        """What the best trial trained, as a config for ``train``/``sweep`` (test evaluation on)."""
        return TrainConfig.from_dict({**self.base.to_dict(), **params, "out": None, "seeds": None,
                                      "overwrite": False, "evaluate_test": True}, source="search result")

    def to_dict(self) -> dict[str, Any]:
        return {"version": SEARCH_VERSION, "base": self.base.to_dict(), "space": self.space,
                "objective": self.objective, "trials": self.trials}

    @classmethod
    def from_dict(cls, doc: Any, source: str = "the study") -> "SearchSpec":
        """The spec stored with a study: a stranger's database, so every value is checked before use."""
        if not isinstance(doc, dict) or doc.get("version") != SEARCH_VERSION:
            raise ConfigError(f"{source}: was not made by this version of misalatch search")
        base, space, objective, trials = (doc.get(k) for k in ("base", "space", "objective", "trials"))
        if not isinstance(base, dict) or not isinstance(objective, str):
            raise ConfigError(f"{source}: the stored search settings are malformed (base {type(base).__name__}, "
                              f"objective {type(objective).__name__})")
        if isinstance(trials, bool) or not isinstance(trials, int):
            raise ConfigError(f"{source}: the stored trial count {trials!r} is not an integer")
        return cls(TrainConfig.from_dict(base, source=f"{source} (stored settings)"),
                   check_space(space, f"{source} (stored space)"), objective, trials)


@dataclass
class Search:
    study: optuna.Study
    spec: SearchSpec
    out: Path
    storage_url: str
    liveness: Liveness = field(default_factory=Liveness)


def _sampler(seed: Optional[int]) -> optuna.samplers.TPESampler:
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # liar: parallel workers spread out


def _pruner() -> optuna.pruners.MedianPruner:
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)


def check_search_folder(out: Path) -> None:
    """New, empty, or already a misalatch search folder (``run.json`` marker of kind ``search``)."""
    if not is_owned(out, "search"):
        check_target(out, "search", flag="--out")


def _ensure_search_folder(out: Path) -> None:
    check_search_folder(out)
    if not is_owned(out, "search"):
        with claim_output(out, "search", flag="--out") as folder:
            for name in (SEARCH_MARKER, "best.yaml", "study.db", "trials"):
                folder.file(name)


def start_search(spec: SearchSpec, out: str | Path, *, storage: Optional[str] = None, study: Optional[str] = None,
                 liveness: Liveness = Liveness(), sampler_seed: Optional[int] = None) -> Search:
    """Create the search (or continue it). As for a sweep, a ``--storage`` is opened before the folder
    is made, so that a start that fails there leaves nothing behind."""
    from misalatch.experiments.sweep import folder_lock

    out = Path(out)
    check_search_folder(out)
    url = storage or default_storage(out)
    name = study or f"search-{out.resolve().name}"
    with folder_lock(out):
        if url == default_storage(out):
            _ensure_search_folder(out)
            opt = _create_search_study(spec, name, url, out, sampler_seed)
        else:
            opt = _create_search_study(spec, name, url, out, sampler_seed)
            _ensure_search_folder(out)
    return Search(opt, spec, out, url, liveness)


def _create_search_study(spec: SearchSpec, name: str, url: str, out: Path, sampler_seed: Optional[int]) -> optuna.Study:
    opt = optuna.create_study(study_name=name, storage=open_storage(url), sampler=_sampler(sampler_seed),
                              pruner=_pruner(), direction=spec.direction, load_if_exists=True)
    existing = opt.user_attrs.get(STUDY_ATTR)
    if existing is not None:
        before = {k: v for k, v in SearchSpec.from_dict(existing, f"--study {name}").to_dict().items() if k != "trials"}
        now = {k: v for k, v in SearchSpec.from_dict(json.loads(json.dumps(spec.to_dict()))).to_dict().items()
               if k != "trials"}
        if before != now:
            raise ConfigError(f"--study {name}: exists with other settings, space or objective; choose another "
                              "--study (only --trials may change when a search is run again)")
    if existing is None or existing.get("trials") != spec.trials:
        opt.set_user_attr(STUDY_ATTR, {**spec.to_dict(), "out": str(out.resolve())})
    return opt


def join_search(storage: str, study: str, *, out: str | Path | None = None, liveness: Liveness = Liveness(),
                sampler_seed: Optional[int] = None) -> Search:
    """Open an existing search from its storage alone; everything read from the storage is checked."""
    from misalatch.experiments.sweep import folder_lock

    store = open_storage(storage)
    opt = load_existing_study(study, store, storage)
    doc = opt.user_attrs.get(STUDY_ATTR)
    if doc is None:
        raise ConfigError(f"--study {study}: is not a misalatch search")
    spec = SearchSpec.from_dict(doc, f"--study {study}")
    opt = optuna.load_study(study_name=study, storage=store, sampler=_sampler(sampler_seed), pruner=_pruner())
    folder = stored_folder(doc, out, f"--study {study}")
    with folder_lock(folder):
        _ensure_search_folder(folder)
    return Search(opt, spec, folder, storage, liveness)


# ----------------------------------------------------------------------------------------------
# the worker
# ----------------------------------------------------------------------------------------------
def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _objective(search: Search):
    spec = search.spec
    sign = -1.0 if spec.direction == "maximize" else 1.0

    def objective(trial: optuna.Trial) -> float:
        from misalatch.training.setup import setup_run

        params = suggest(trial, spec.space)
        run_dir = search.out / "trials" / f"trial-{trial.number}"
        trial.set_user_attr("run_dir", str(run_dir.relative_to(search.out)))
        trial.set_user_attr("attempt", attempts(search.study._storage.get_trial(trial._trial_id)))

        def report(row: dict[str, Any]) -> None:
            beat.check()
            trial.report(sign * float(row["dev_loss"]), int(row["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {row['epoch']}: dev loss {row['dev_loss']:.4f} is worse than the median")

        log.info("search %s: trial %d %s", search.study.study_name, trial.number,
                 " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()))
        try:
            with heartbeat(search.study, trial, search.liveness) as beat:
                cfg = spec.config_for(params, run_dir)
                if run_dir.exists():  # a dead attempt of this trial number cannot exist: numbers are unique
                    raise ConfigError(f"{run_dir}: exists already; refusing to overwrite it")
                result = train_run_folder(setup_run(cfg), cfg, cfg.seed, run_dir, on_epoch=report, on_step=beat.step)
        except optuna.TrialPruned:
            raise
        except Exception as err:
            message = f"{type(err).__name__}: {err}"
            trial.set_user_attr("error", message)
            trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
            log.error("search %s: trial %d failed: %s", search.study.study_name, trial.number, message)
            raise TrialFailed(message) from err
        trial.set_user_attr("validation", result.validation)
        trial.set_user_attr("dev_loss", result.dev_loss)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("epochs_run", result.epochs_run)
        value = result.dev_loss if spec.objective == "dev_loss" else result.validation[spec.objective]
        if not math.isfinite(value):
            raise TrialFailed(f"the validation {spec.objective} is {value}")
        return float(value)

    return objective


class SearchFailed(MisalatchError):
    """Every recent trial of this worker failed: the search stops with the first error instead of
    failing forever (failed trials do not count towards ``--trials``)."""


def run_search_worker(search: Search, *, poll: Optional[float] = None,
                      max_consecutive_failures: int = MAX_CONSECUTIVE_FAILURES) -> int:
    """Run trials until the study holds ``trials`` finished ones (wait while others finish theirs).

    A worker whose last ``max_consecutive_failures`` trials all failed (a broken data path, a setting
    that always diverges) stops with ``SearchFailed``, naming the first of those errors; a
    trial that completes or is pruned resets the count."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    objective = _objective(search)
    poll = poll if poll is not None else max(1.0, search.liveness.heartbeat_interval / 2)
    started = 0
    failures: list[str] = []
    bar = progress_bar(search.spec.trials, f"search {search.study.study_name}", unit="trial")
    while True:
        fail_stale(search.study, search.liveness)
        finished = _finished(search.study)
        bar.update(min(finished, search.spec.trials) - bar.n)
        running = len(search.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        waiting = len(search.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        if finished + running < search.spec.trials or (waiting and finished < search.spec.trials):
            done = run_trial(search.study, objective, TrialFailed)
            started += 1
            _write_summary(search)
            if done is not None and done.state == TrialState.FAIL:
                error = done.user_attrs.get("error")
                error = " ".join(error.split())[:500] if isinstance(error, str) else "failed"
                failures.append(f"trial {done.number}: {error}")
                if len(failures) >= max_consecutive_failures:
                    raise SearchFailed(f"search {search.study.study_name}: {len(failures)} trials in a row failed; "
                                       f"stopping. The first: {failures[0]}")
            elif done is not None:
                failures.clear()
        elif running and finished < search.spec.trials:
            time.sleep(poll)
        else:
            break
    bar.close()
    _write_summary(search)
    return started


# ----------------------------------------------------------------------------------------------
# the result
# ----------------------------------------------------------------------------------------------
def best_trial(study: optuna.Study) -> Optional[optuna.trial.FrozenTrial]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    return study.best_trial


def _write_summary(search: Search) -> dict[str, Any]:
    """search.json (every trial: params, state, value, validation metrics; no test metric exists)
    and best.yaml (the best trial's full config), written atomically."""
    study, spec = search.study, search.spec
    trials = study.get_trials(deepcopy=False)
    best = best_trial(study)
    doc = {"format": "misalatch-search", "version": 1, "study": study.study_name, "storage": redact(search.storage_url),
           "objective": spec.objective, "direction": spec.direction, "split": "validation", "space": spec.space,
           "trials_target": spec.trials,
           "counts": {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState},
           "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params,
                                              "run_dir": best.user_attrs.get("run_dir"), "config": "best.yaml"},
           "trials": [{"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
                       "run_dir": t.user_attrs.get("run_dir"), "error": t.user_attrs.get("error"),
                       "best_epoch": t.user_attrs.get("best_epoch"), "epochs_run": t.user_attrs.get("epochs_run"),
                       "last_epoch_reported": max(t.intermediate_values) if t.intermediate_values else None,
                       "validation": t.user_attrs.get("validation")} for t in trials]}
    search.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(search.out / SEARCH_MARKER, json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
    if best is not None:
        cfg = spec.best_config(best.params)
        header = (f"# best of search {study.study_name}: trial {best.number}, validation {spec.objective} = "
                  f"{best.value:.6g}\n# final numbers: misalatch sweep --config best.yaml --seeds 1111,1112,1113,1114,1115 "
                  f"--out sweeps/final\n")
        atomic_write_text(search.out / "best.yaml", header + cfg.to_yaml())
    return doc

