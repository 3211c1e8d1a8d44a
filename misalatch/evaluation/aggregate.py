"""Aggregation of per-seed results into mean ± std (METRICS.md §5) and the aggregate files.

The sample standard deviation (ddof=1) is reported; the per-seed values are kept next to it, so the
population std (ddof=0, MMSA's convention) can always be recomputed. Nothing is rounded here.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from misalatch.evaluation.metrics import MetricInputError
from misalatch.io.atomic import atomic_write_text

log = logging.getLogger(__name__)

__all__ = [
    "AGGREGATE_FORMAT",
    "AGGREGATE_FORMAT_VERSION",
    "AggregateRow",
    "aggregate",
    "write_aggregate",
]

AGGREGATE_FORMAT = "misalatch-aggregate"
AGGREGATE_FORMAT_VERSION = 1
_RESERVED_COLUMNS = ("n", "seeds")


def aggregate(runs: Sequence[Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """Summarise one metric dict per run into ``{metric: {"mean", "std", "n", "values"}}``.

    Every run must hold the same metric names (order taken from the first run). ``std`` is the
    sample standard deviation (ddof=1) and is NaN for a single run, where it is undefined.
    NaN is propagated, not skipped: if any run's value is NaN (e.g. an undefined corr), that
    metric's mean and std are NaN, while ``values`` still shows which run it was.
    Raises ``MetricInputError`` for no runs, differing metric
    names or non-numeric values.
    """
    if len(runs) == 0:
        raise MetricInputError("aggregate: got no runs; need at least one metric dict")
    names = list(runs[0].keys())
    for i, run in enumerate(runs[1:], start=1):
        if set(run.keys()) != set(names):
            missing = sorted(set(names) - set(run.keys()))
            extra = sorted(set(run.keys()) - set(names))
            raise MetricInputError(
                f"aggregate: run {i} has different metrics than run 0 (missing {missing}, extra {extra})"
            )

    result: dict[str, dict[str, Any]] = {}
    for name in names:
        values = [_as_float(run[name], name, i) for i, run in enumerate(runs)]
        arr = np.asarray(values, dtype=np.float64)
        # n = 1: ddof=1 divides by zero; say NaN explicitly instead of letting NumPy warn.
        std = float(np.std(arr, ddof=1)) if arr.size > 1 else float("nan")
        result[name] = {"mean": float(np.mean(arr)), "std": std, "n": int(arr.size), "values": values}
    return result


def _as_float(value: Any, name: str, run: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise MetricInputError(
            f"aggregate: run {run}, metric {name!r}: expected a number, got {type(value).__name__}"
        )
    return float(value)


@dataclass(frozen=True)
class AggregateRow:
    """One aggregate row: a group (e.g. dataset × model × feedback × text encoder), its seeds, and
    the output of ``aggregate`` over those seeds' runs (in the same order as ``seeds``)."""

    group: Mapping[str, str]  # e.g. {"dataset": "mosi", "feedback": "none", "text_encoder": "bert"}
    seeds: Sequence[int]
    metrics: Mapping[str, Mapping[str, Any]]  # output of aggregate() over the runs of `seeds`

    def __post_init__(self) -> None:
        for name, stats in self.metrics.items():
            if stats.get("n") != len(self.seeds):
                raise MetricInputError(
                    f"aggregate row {dict(self.group)}: metric {name!r} has n={stats.get('n')} "
                    f"but {len(self.seeds)} seeds were given"
                )
        clash = sorted(set(self.group) & (set(_RESERVED_COLUMNS) | set(self._metric_columns())))
        if clash:
            raise MetricInputError(f"aggregate row: group keys {clash} clash with aggregate columns")

    def _metric_columns(self) -> list[str]:
        return [f"{name}_{stat}" for name in self.metrics for stat in ("mean", "std")]


def write_aggregate(rows: Sequence[AggregateRow], out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``aggregate.json`` and ``aggregate.csv`` into ``out_dir`` (created if needed).

    Both go through the atomic writer (``misalatch.io.atomic``): a reader never sees a
    half-written file. The CSV has one row per group:
    the group keys, ``<metric>_mean`` and ``<metric>_std`` for every metric, ``n`` and ``seeds``
    (space-separated); NaN is written as ``nan``, and a metric absent from a row leaves its cells
    empty. The JSON additionally stores the per-seed ``values``; as strict JSON has no NaN, NaN is
    written as ``null`` there. Returns ``(json_path, csv_path)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    group_keys = ordered_union(row.group.keys() for row in rows)
    metric_names = ordered_union(row.metrics.keys() for row in rows)
    columns = group_keys + [f"{m}_{s}" for m in metric_names for s in ("mean", "std")] + list(_RESERVED_COLUMNS)

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        record: dict[str, Any] = {k: row.group.get(k, "") for k in group_keys}
        for name, stats in row.metrics.items():
            record[f"{name}_mean"] = repr(float(stats["mean"]))
            record[f"{name}_std"] = repr(float(stats["std"]))
        record["n"] = len(row.seeds)
        record["seeds"] = " ".join(str(int(s)) for s in row.seeds)
        writer.writerow(record)

    document = {
        "format": AGGREGATE_FORMAT,
        "format_version": AGGREGATE_FORMAT_VERSION,
        "std_ddof": 1,
        "rows": [
            {
                "group": dict(row.group),
                "seeds": [int(s) for s in row.seeds],
                "n": len(row.seeds),
                "metrics": {name: _nan_to_none(dict(stats)) for name, stats in row.metrics.items()},
            }
            for row in rows
        ],
    }
    json_path = atomic_write_text(out / "aggregate.json", json.dumps(document, indent=2, allow_nan=False) + "\n")
    csv_path = atomic_write_text(out / "aggregate.csv", buf.getvalue())
    log.info("wrote %s and %s (%d rows)", json_path, csv_path, len(rows))
    return json_path, csv_path


def ordered_union(key_lists: Any) -> list[str]:
    """Every key of the lists, once, in first-seen order."""
    seen: dict[str, None] = {}
    for keys in key_lists:
        for k in keys:
            seen.setdefault(k, None)
    return list(seen)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
