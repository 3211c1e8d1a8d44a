"""Reading finished results back: a run folder, a multi-seed ``train`` folder, or a sweep folder.

Everything read here is untrusted (a results file may have been edited, truncated or written by
someone else): every field is checked where it enters, and a bad one raises
``DataFormatError`` naming the file and the field. Paths named inside a
results file are only followed when they stay inside the folder that holds it.

* a **run** folder holds ``metrics.json`` (what ``misalatch train`` writes for one seed);
* a **seeds** folder holds ``aggregate.json`` and ``seed-<s>/`` run folders (``train --seeds``);
* a **sweep** folder holds ``results.json`` (``format: misalatch-sweep-results``, what
  ``misalatch sweep`` writes), one run folder per (variant, seed).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from misalatch.errors import ConfigError, DataFormatError, MisalatchError

SWEEP_FORMAT = "misalatch-sweep-results"
SWEEP_VERSIONS = (1,)
SPLITS = ("validation", "test")
MAX_JSON_BYTES = 64 * 1024 * 1024  # a results file larger than this is not what misalatch writes


@dataclass(frozen=True)
class Stat:
    """One metric over seeds: mean, sample std (ddof=1; NaN for one seed), n and the per-seed values."""

    mean: float
    std: float
    n: int
    values: tuple[float, ...]


@dataclass(frozen=True)
class RunRecord:
    """One finished (or failed) run, as a results file or its metrics.json says."""

    seed: int | None
    run_dir: Path | None  # None when the file names no folder, or one outside the results folder
    state: str  # complete | failed
    error: str | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    validation: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    """A group of runs that differ only by seed: a run (n = 1), a ``train --seeds`` folder or a sweep variant."""

    key: str
    params: dict[str, Any]
    runs: tuple[RunRecord, ...]
    metrics: dict[str, dict[str, Stat]]  # split -> metric -> Stat

    @property
    def n(self) -> int:
        return max((s.n for split in self.metrics.values() for s in split.values()), default=0)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs if r.seed is not None and r.state == "complete"]


@dataclass(frozen=True)
class PairedRow:
    """One paired comparison of a sweep: variant − baseline per seed, its mean, 95 % CI and p-value."""

    variant: str
    baseline: str
    split: str
    metric: str
    n: int
    differences: tuple[float, ...]
    mean: float
    ci95: tuple[float, float]
    p_value: float
    test: str


@dataclass(frozen=True)
class Results:
    """Everything read from one folder."""

    kind: Literal["run", "seeds", "sweep"]
    path: Path
    name: str
    variants: tuple[Variant, ...]
    paired: tuple[PairedRow, ...] = ()
    failed: tuple[dict[str, Any], ...] = ()
    pending: tuple[dict[str, Any], ...] = ()  # sweep points no worker has finished yet
    meta: dict[str, Any] = field(default_factory=dict)  # sweep: grid, baseline, storage, study
    task: str = "regression"


# ----------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------
def read_json(path: Path) -> Any:
    """Parse a JSON file with a clear error (size-capped; NaN / Infinity allowed, as Python writes them).

    A symbolic link is refused: misalatch never writes one into a results folder, and following it
    could read a file outside that folder."""
    if path.is_symlink():
        raise DataFormatError(f"{path}: is a symbolic link; misalatch does not follow links inside a results folder")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise DataFormatError(f"{path}: cannot read ({err.strerror})") from err
    if size > MAX_JSON_BYTES:
        raise DataFormatError(f"{path}: {size} bytes is larger than a misalatch results file can be")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataFormatError(f"{path}: not valid JSON ({err})") from err
    except RecursionError as err:
        raise DataFormatError(f"{path}: JSON nested too deeply") from err
    except OSError as err:
        raise DataFormatError(f"{path}: cannot read ({err.strerror})") from err


def _where(path: Path, at: str) -> str:
    return f"{path}, field {at!r}"


def _mapping(value: Any, path: Path, at: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataFormatError(f"{_where(path, at)}: expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, path: Path, at: str) -> list[Any]:
    if not isinstance(value, list):
        raise DataFormatError(f"{_where(path, at)}: expected a list, got {type(value).__name__}")
    return value


def _number(value: Any, path: Path, at: str, *, allow_none: bool = True) -> float:
    """A float; JSON null (how strict writers spell NaN) reads as NaN."""
    if value is None and allow_none:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataFormatError(f"{_where(path, at)}: expected a number, got {value!r:.60}")
    return float(value)


def _int(value: Any, path: Path, at: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataFormatError(f"{_where(path, at)}: expected an integer, got {value!r:.60}")
    return value


def _text(value: Any, path: Path, at: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise DataFormatError(f"{_where(path, at)}: expected a string, got {type(value).__name__}")
    return value


def _metric_dict(value: Any, path: Path, at: str) -> dict[str, float]:
    return {_text(k, path, at) or "": _number(v, path, f"{at}.{k}") for k, v in _mapping(value, path, at).items()}


def _stats(value: Any, path: Path, at: str) -> dict[str, Stat]:
    out: dict[str, Stat] = {}
    for name, raw in _mapping(value, path, at).items():
        where = f"{at}.{name}"
        raw = _mapping(raw, path, where)
        for key in ("mean", "std", "n"):
            if key not in raw:
                raise DataFormatError(f"{_where(path, where)}: missing {key!r} (expected mean, std, n, values)")
        values = tuple(_number(v, path, f"{where}.values[{i}]") for i, v in enumerate(_list(raw.get("values", []), path, f"{where}.values")))
        out[name] = Stat(_number(raw["mean"], path, f"{where}.mean"), _number(raw["std"], path, f"{where}.std"),
                         int(_int(raw["n"], path, f"{where}.n") or 0), values)
    return out


def _inside(root: Path, relative: Any, path: Path, at: str) -> Path | None:
    """``root / relative`` when it stays inside ``root`` (no absolute paths, no ``..`` escapes)."""
    text = _text(relative, path, at, optional=True)
    if not text:
        return None
    candidate = Path(text)
    if candidate.is_absolute():
        return None
    resolved = (root / candidate).resolve()
    try:
        resolved.relative_to(root.resolve())
    except ValueError:
        return None
    return resolved


def stats_from_values(values: list[float]) -> Stat:
    """Mean and sample std (ddof=1) of per-seed values, as ``misalatch.evaluation.aggregate.aggregate``."""
    from misalatch.evaluation.aggregate import aggregate

    summary = aggregate([{"v": v} for v in values])["v"]
    return Stat(summary["mean"], summary["std"], summary["n"], tuple(summary["values"]))


# ----------------------------------------------------------------------------------------------
# the three kinds of folder
# ----------------------------------------------------------------------------------------------
def read_run_record(run_dir: Path) -> RunRecord:
    """A finished run folder's ``metrics.json``."""
    path = run_dir / "metrics.json"
    data = _mapping(read_json(path), path, "(top level)")
    for split in SPLITS:
        if split not in data:
            raise DataFormatError(f"{_where(path, split)}: missing (a run's metrics.json has validation and test)")
    return RunRecord(
        seed=_int(data.get("seed"), path, "seed", optional=True),
        run_dir=run_dir,
        state="complete",
        best_epoch=_int(data.get("best_epoch"), path, "best_epoch", optional=True),
        epochs_run=_int(data.get("epochs_run"), path, "epochs_run", optional=True),
        validation=_metric_dict(data["validation"], path, "validation"),
        test=_metric_dict(data["test"], path, "test"),
    )


def _variant_from_runs(key: str, params: dict[str, Any], runs: list[RunRecord]) -> Variant:
    complete = [r for r in runs if r.state == "complete"]
    metrics: dict[str, dict[str, Stat]] = {}
    for split in SPLITS:
        names = list(getattr(complete[0], split)) if complete else []
        metrics[split] = {m: stats_from_values([getattr(r, split).get(m, math.nan) for r in complete]) for m in names}
    return Variant(key, params, tuple(runs), metrics)


def _run_params(run_dir: Path) -> dict[str, Any]:
    """The few config fields that tell runs apart in a table (from the checkpoint sidecar)."""
    path = run_dir / "best.json"
    if not path.is_file():
        return {}
    try:
        config = read_json(path).get("config", {})
    except (DataFormatError, AttributeError):
        return {}
    if not isinstance(config, dict):
        return {}
    return {k: config[k] for k in ("data", "feedback", "text_encoder") if isinstance(config.get(k), (str, type(None)))}


def _task_of(variants: tuple[Variant, ...]) -> str:
    names = {m for v in variants for split in v.metrics.values() for m in split}
    return "classification" if "acc" in names and "mae" not in names else "regression"


def read_sweep(folder: Path) -> Results:
    """A sweep folder's ``results.json`` (see the module docstring)."""
    path = folder / "results.json"
    data = _mapping(read_json(path), path, "(top level)")
    if data.get("format") != SWEEP_FORMAT:
        raise DataFormatError(f"{_where(path, 'format')}: expected {SWEEP_FORMAT!r}, got {data.get('format')!r:.60}")
    if data.get("version") not in SWEEP_VERSIONS:
        raise DataFormatError(f"{_where(path, 'version')}: version {data.get('version')!r:.20} is not supported "
                              f"(this misalatch reads {', '.join(map(str, SWEEP_VERSIONS))})")
    sweep = _mapping(data.get("sweep", {}), path, "sweep")
    variants = []
    for i, raw in enumerate(_list(data.get("variants"), path, "variants")):
        at = f"variants[{i}]"
        raw = _mapping(raw, path, at)
        runs = []
        for j, run in enumerate(_list(raw.get("runs", []), path, f"{at}.runs")):
            rat = f"{at}.runs[{j}]"
            run = _mapping(run, path, rat)
            state = _text(run.get("state", "complete"), path, f"{rat}.state")
            if state not in ("complete", "failed"):
                raise DataFormatError(f"{_where(path, rat + '.state')}: expected complete or failed, got {state!r:.40}")
            runs.append(RunRecord(
                seed=_int(run.get("seed"), path, f"{rat}.seed", optional=True),
                run_dir=_inside(folder, run.get("run_dir"), path, f"{rat}.run_dir"),
                state=state,
                error=_text(run.get("error"), path, f"{rat}.error", optional=True),
                best_epoch=_int(run.get("best_epoch"), path, f"{rat}.best_epoch", optional=True),
                epochs_run=_int(run.get("epochs_run"), path, f"{rat}.epochs_run", optional=True),
                validation=_metric_dict(run.get("validation") or {}, path, f"{rat}.validation"),
                test=_metric_dict(run.get("test") or {}, path, f"{rat}.test"),
            ))
        metrics = {split: _stats(raw.get(split, {}), path, f"{at}.{split}") for split in SPLITS}
        variants.append(Variant(_text(raw.get("key"), path, f"{at}.key") or f"variant-{i}",
                                dict(_mapping(raw.get("params", {}), path, f"{at}.params")), tuple(runs), metrics))
    paired = []
    for i, raw in enumerate(_list(data.get("paired", []), path, "paired")):
        at = f"paired[{i}]"
        raw = _mapping(raw, path, at)
        ci = _list(raw.get("ci95", [None, None]), path, f"{at}.ci95")
        if len(ci) != 2:
            raise DataFormatError(f"{_where(path, at + '.ci95')}: expected [low, high]")
        paired.append(PairedRow(
            variant=_text(raw.get("variant"), path, f"{at}.variant") or "",
            baseline=_text(raw.get("baseline"), path, f"{at}.baseline") or "",
            split=_text(raw.get("split"), path, f"{at}.split") or "",
            metric=_text(raw.get("metric"), path, f"{at}.metric") or "",
            n=int(_int(raw.get("n", 0), path, f"{at}.n") or 0),
            differences=tuple(_number(v, path, f"{at}.differences[{k}]")
                              for k, v in enumerate(_list(raw.get("differences", []), path, f"{at}.differences"))),
            mean=_number(raw.get("mean"), path, f"{at}.mean"),
            ci95=(_number(ci[0], path, f"{at}.ci95[0]"), _number(ci[1], path, f"{at}.ci95[1]")),
            p_value=_number(raw.get("p_value"), path, f"{at}.p_value"),
            test=_text(raw.get("test", ""), path, f"{at}.test") or "",
        ))
    failed = tuple(_mapping(f, path, f"failed[{i}]") for i, f in enumerate(_list(data.get("failed", []), path, "failed")))
    pending = tuple(_mapping(f, path, f"pending[{i}]") for i, f in enumerate(_list(data.get("pending", []), path, "pending")))
    meta = {k: sweep.get(k) for k in ("grid", "baseline", "storage", "study") if k in sweep}
    result_variants = tuple(variants)
    return Results("sweep", folder, folder.name, result_variants, tuple(paired), failed, pending, meta,
                   _task_of(result_variants))


def read_seeds(folder: Path) -> Results:
    """A ``train --seeds`` folder: its ``seed-<s>/`` run folders, aggregated here from their metrics."""
    runs = []
    # a seed-<s> link is not followed: it could embed another folder's files (or a stranger's) in the results
    for sub in sorted(p for p in folder.iterdir() if p.name.startswith("seed-") and p.is_dir() and not p.is_symlink()):
        runs.append(read_run_record(sub) if (sub / "metrics.json").is_file() else
                    RunRecord(seed=None, run_dir=sub, state="failed", error="no metrics.json (unfinished)"))
    if not any(r.state == "complete" for r in runs):
        raise DataFormatError(f"{folder}: has aggregate.json but no finished seed-<s>/metrics.json")
    params = _run_params(runs[0].run_dir) if runs[0].run_dir else {}
    variants = (_variant_from_runs(folder.name, params, runs),)
    return Results("seeds", folder, folder.name, variants, task=_task_of(variants))


def read_run(folder: Path) -> Results:
    record = read_run_record(folder)
    variants = (_variant_from_runs(folder.name, _run_params(folder), [record]),)
    return Results("run", folder, folder.name, variants, task=_task_of(variants))


def read_results(path: str | Path) -> Results:
    """Whatever finished results ``path`` holds: a sweep, a ``train --seeds`` folder or one run."""
    folder = Path(path)
    if not folder.exists():
        raise ConfigError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise ConfigError(f"{folder}: is a file; expected a run folder (metrics.json) or a sweep folder (results.json)")
    if (folder / "results.json").is_file():
        return read_sweep(folder)
    if (folder / "metrics.json").is_file():
        return read_run(folder)
    if (folder / "aggregate.json").is_file():
        return read_seeds(folder)
    if (folder / "config.yaml").is_file() or (folder / "best.json").is_file():
        raise ConfigError(f"{folder}: a run folder without metrics.json (the run has not finished, or failed)")
    raise ConfigError(f"{folder}: neither a run folder (metrics.json), a multi-seed train folder (aggregate.json "
                      "and seed-<s>/) nor a sweep folder (results.json)")


def is_synthetic(results: Results) -> bool:
    """Whether the runs of ``results`` trained on SYNTHETIC data (their first ``metrics.json`` says so)."""
    for v in results.variants:
        for r in v.runs:
            if r.run_dir is not None and (r.run_dir / "metrics.json").is_file():
                try:
                    data = read_json(r.run_dir / "metrics.json")
                except MisalatchError:
                    continue
                facts = data.get("data") if isinstance(data, dict) else None
                return bool(isinstance(facts, dict) and facts.get("synthetic") is True)
    return False


def data_name(results: Results) -> str:
    """The name of the data the runs of ``results`` trained on (their first ``metrics.json`` says it)."""
    for v in results.variants:
        for r in v.runs:
            if r.run_dir is not None and (r.run_dir / "metrics.json").is_file():
                try:
                    facts = read_json(r.run_dir / "metrics.json").get("data")
                except (MisalatchError, AttributeError):
                    continue
                if isinstance(facts, dict) and isinstance(facts.get("name"), str):
                    return facts["name"]
    return "unknown (no metrics.json with data facts)"


def config_differences(results: Results, variant: Variant | None = None) -> tuple[dict[str, tuple[Any, Any]] | None, str]:
    """(field -> (value, default) where the resolved configuration of the first complete run (of
    ``variant``, else of any variant) differs from the defaults of its model's preset, a note naming
    that run): what a report or a comparison shows so that its numbers say how they were trained.
    No readable ``config.yaml``: (None, why)."""
    from misalatch.training.config import TrainConfig, changed_settings

    variants = results.variants if variant is None else (variant,)
    run = next((r for v in variants for r in v.runs
                if r.state == "complete" and r.run_dir is not None and (r.run_dir / "config.yaml").is_file()), None)
    if run is None or run.run_dir is None:
        return None, "no run folder with a config.yaml"
    path = run.run_dir / "config.yaml"
    try:
        config = TrainConfig.from_yaml(path)
        return changed_settings(config), f"{run.run_dir.name}/config.yaml (preset {config.preset})"
    except MisalatchError as err:
        return None, f"{path.name} could not be read ({err})"


def settings_text(changed: dict[str, tuple[Any, Any]]) -> str:
    """Changed settings as one line of Markdown: `` `field` = value (default d), ...``."""
    return ", ".join(f"`{k}` = {v} (default {d})" for k, (v, d) in changed.items())
