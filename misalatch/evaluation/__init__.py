"""Evaluation: metrics (METRICS.md §2–§3), aggregation over seeds (§5) and display tables."""

from __future__ import annotations

from misalatch.evaluation.aggregate import AggregateRow, aggregate, write_aggregate
from misalatch.evaluation.metrics import (
    ConstantInputWarning,
    EmptySubsetWarning,
    MetricInputError,
    MetricWarning,
    acc7_sdk,
    classification_metrics,
    compute_metrics,
    regression_metrics,
    sdk_bins,
    weighted_f1,
)
from misalatch.evaluation.report import format_aggregate_table, format_metrics_table

__all__ = [
    "AggregateRow",
    "ConstantInputWarning",
    "EmptySubsetWarning",
    "MetricInputError",
    "MetricWarning",
    "acc7_sdk",
    "aggregate",
    "classification_metrics",
    "compute_metrics",
    "format_aggregate_table",
    "format_metrics_table",
    "regression_metrics",
    "sdk_bins",
    "weighted_f1",
    "write_aggregate",
]
