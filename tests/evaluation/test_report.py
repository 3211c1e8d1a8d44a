"""Tests of misalatch.evaluation.report (display formatting)."""

from __future__ import annotations

import math

import pytest

from misalatch.errors import ConfigError
from misalatch.evaluation.aggregate import aggregate
from misalatch.evaluation.report import format_aggregate_table, format_metrics_table


def _value(table: str, name: str) -> str:
    for line in table.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "  "):
            return line[len(name):].strip()
    raise AssertionError(f"{name!r} not in table:\n{table}")


def test_metrics_table_precision_and_order() -> None:
    metrics = {"acc7": 0.335277, "mae": 0.6910474, "corr": math.nan, "acc2_has0": 0.924198}
    table = format_metrics_table(metrics, task="regression")
    names = [line.split("  ")[0].strip() for line in table.splitlines()[2:]]
    assert names == ["MAE", "Corr", "Acc-2 Has0 (%)", "Acc-7 (%)"]  # canonical order, not input order
    assert _value(table, "MAE") == "0.691"
    assert _value(table, "Corr") == "NaN"
    assert _value(table, "Acc-2 Has0 (%)") == "92.42"
    assert _value(table, "Acc-7 (%)") == "33.53"


def test_metrics_table_classification_and_unknown_task() -> None:
    table = format_metrics_table({"acc": 0.70612, "f1": 0.7}, task="classification")
    assert _value(table, "Acc (%)") == "70.61" and _value(table, "F1 (%)") == "70.00"
    with pytest.raises(ConfigError):
        format_metrics_table({"acc": 0.5}, task="humour")


def test_aggregate_table() -> None:
    agg = aggregate([{"mae": 1.0, "acc2_non0": 0.80}, {"mae": 2.0, "acc2_non0": 0.82}])
    table = format_aggregate_table(agg)
    assert _value(table, "MAE") == "1.500 ± 0.707 (n=2)"
    assert _value(table, "Acc-2 Non0 (%)") == "81.00 ± 1.41 (n=2)"
    single = format_aggregate_table(aggregate([{"mae": 1.0}]))
    assert _value(single, "MAE") == "1.000 ± NaN (n=1)"
