"""Evaluation: metrics (METRICS.md §2–§3), aggregation over seeds (§5), display tables and feedback masks.

The mask names (``collect_masks``, ``export_masks``, ``CollectedMasks``) need torch, so they are
imported on first use: importing this package for metrics or tables stays light.
"""

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
from misalatch.io.lazy import lazy_attributes

_LAZY = {
    "CollectedMasks": ("misalatch.evaluation.masks", "CollectedMasks"),
    "collect_masks": ("misalatch.evaluation.masks", "collect_masks"),
    "export_masks": ("misalatch.evaluation.masks", "export_masks"),
}

__all__ = [
    "AggregateRow",
    "CollectedMasks",
    "ConstantInputWarning",
    "EmptySubsetWarning",
    "MetricInputError",
    "MetricWarning",
    "acc7_sdk",
    "aggregate",
    "classification_metrics",
    "collect_masks",
    "compute_metrics",
    "export_masks",
    "format_aggregate_table",
    "format_metrics_table",
    "regression_metrics",
    "sdk_bins",
    "weighted_f1",
    "write_aggregate",
]

__getattr__ = lazy_attributes(__name__, _LAZY)
