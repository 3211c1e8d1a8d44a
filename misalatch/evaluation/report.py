"""Plain-text tables of metrics for the CLI (display only: rounding happens here and nowhere else).

Accuracies and F1 are shown as percentages with two decimals, MAE and Corr with three decimals
(METRICS.md, introduction). The functions return strings; the CLI decides where to print them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from misalatch.errors import ConfigError
from misalatch.evaluation.metrics import CLASSIFICATION_KEYS, REGRESSION_KEYS, TASKS

log = logging.getLogger(__name__)

__all__ = ["DISPLAY_NAMES", "format_metrics_table", "format_aggregate_table", "format_value", "metric_label"]

#: Human-readable names; keys not listed are shown as they are.
DISPLAY_NAMES: dict[str, str] = {
    "mae": "MAE",
    "corr": "Corr",
    "acc2_has0": "Acc-2 Has0",
    "f1_has0": "F1 Has0",
    "acc2_non0": "Acc-2 Non0",
    "f1_non0": "F1 Non0",
    "acc5": "Acc-5",
    "acc7": "Acc-7",
    "acc7_sdk": "Acc-7 SDK",
    "acc": "Acc",
    "f1": "F1",
}
_TASK_KEYS = {"regression": REGRESSION_KEYS, "classification": CLASSIFICATION_KEYS}


def _is_percent(key: str) -> bool:
    return key.startswith(("acc", "f1"))


def _label(key: str) -> str:
    name = DISPLAY_NAMES.get(key, key)
    return f"{name} (%)" if _is_percent(key) else name


def _fmt(key: str, value: float) -> str:
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if _is_percent(key):
        return f"{100.0 * value:.2f}"
    if key in ("mae", "corr"):
        return f"{value:.3f}"
    return f"{value:.4f}"


def _ordered_keys(keys: Any, preferred: tuple[str, ...]) -> list[str]:
    present = list(keys)
    return [k for k in preferred if k in present] + [k for k in present if k not in preferred]


def _table(header: tuple[str, str], rows: list[tuple[str, str]]) -> str:
    w0 = max(len(header[0]), *(len(r[0]) for r in rows)) if rows else len(header[0])
    w1 = max(len(header[1]), *(len(r[1]) for r in rows)) if rows else len(header[1])
    lines = [f"{header[0]:<{w0}}  {header[1]:>{w1}}", f"{'-' * w0}  {'-' * w1}"]
    lines += [f"{name:<{w0}}  {value:>{w1}}" for name, value in rows]
    return "\n".join(lines)


def format_metrics_table(metrics: Mapping[str, float], *, task: str) -> str:
    """Two-column table ``metric | value`` of one evaluation, in the task's canonical key order.

    Keys outside the task's standard set (e.g. ``acc7_sdk``) follow at the end. NaN shows as "NaN".
    Raises ``ConfigError`` for an unknown task.
    """
    if task not in _TASK_KEYS:
        raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    keys = _ordered_keys(metrics.keys(), _TASK_KEYS[task])
    return _table(("metric", "value"), [(_label(k), _fmt(k, metrics[k])) for k in keys])


def format_aggregate_table(agg: Mapping[str, Mapping[str, Any]]) -> str:
    """Table ``metric | mean ± std (n=…)`` of the output of
    ``aggregate``; std is ddof=1 and "NaN" for a single run."""
    keys = _ordered_keys(agg.keys(), REGRESSION_KEYS + ("acc7_sdk",) + CLASSIFICATION_KEYS)
    rows = [
        (_label(k), f"{_fmt(k, agg[k]['mean'])} ± {_fmt(k, agg[k]['std'])} (n={int(agg[k]['n'])})")
        for k in keys
    ]
    return _table(("metric", "mean ± std"), rows)


def metric_label(key: str) -> str:
    """Display name of a metric key, with "(%)" for accuracies and F1 (``acc7`` → ``Acc-7 (%)``)."""
    return _label(key)


def format_value(key: str, value: float) -> str:
    """One value as tables show it: percentages with two decimals, MAE / Corr with three, NaN as "NaN"."""
    return _fmt(key, value)


def format_mean_std(key: str, mean: float, std: float, n: int) -> str:
    """``mean ± std`` (std omitted for a single run, where it is undefined)."""
    if n <= 1 or math.isnan(float(std)):
        return _fmt(key, mean)
    return f"{_fmt(key, mean)} ± {_fmt(key, std)}"
