"""Evaluation metrics of METRICS.md §2–§3, in pure NumPy and float64.

Every metric is computed once over a whole split from the raw (unclipped) model outputs. Values are
fractions; only ``misalatch.evaluation.report`` turns them into percentages. Inputs are validated
here, where they enter; the helpers below trust them.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from misalatch.errors import ConfigError, MisalatchError

log = logging.getLogger(__name__)

__all__ = [
    "REGRESSION_KEYS",
    "CLASSIFICATION_KEYS",
    "TASKS",
    "MetricInputError",
    "MetricWarning",
    "ConstantInputWarning",
    "EmptySubsetWarning",
    "regression_metrics",
    "acc7_sdk",
    "sdk_bins",
    "classification_metrics",
    "weighted_f1",
    "compute_metrics",
]

#: Keys of ``regression_metrics``, in this order (METRICS.md §2).
REGRESSION_KEYS: tuple[str, ...] = (
    "mae",
    "corr",
    "acc2_has0",
    "f1_has0",
    "acc2_non0",
    "f1_non0",
    "acc5",
    "acc7",
)
#: Keys of ``classification_metrics`` (METRICS.md §3).
CLASSIFICATION_KEYS: tuple[str, ...] = ("acc", "f1")
#: Task names accepted by ``compute_metrics``.
TASKS: tuple[str, ...] = ("regression", "classification")


class MetricInputError(MisalatchError, ValueError):
    """Predictions or labels that cannot be scored (wrong shape, length mismatch, empty, non-finite)."""


class MetricWarning(UserWarning):
    """Base class of the warnings this module emits, so callers can filter them together."""


class ConstantInputWarning(MetricWarning):
    """Pearson correlation is undefined because predictions or labels are constant (corr is NaN)."""


class EmptySubsetWarning(MetricWarning):
    """A metric's subset is empty (e.g. Non0 when every label is 0); the metric is NaN."""


# --------------------------------------------------------------------------------------------------
# validation (the boundary)


def _as_float_vector(values: ArrayLike, name: str) -> NDArray[np.float64]:
    """Return ``values`` as a finite float64 vector ``(N,)``; accepts ``(N,)`` or ``(N, 1)``."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"{name}: expected numbers, could not convert to float64 ({exc})") from exc
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise MetricInputError(
            f"{name}: expected shape (N,) or (N, 1), got {arr.shape}; reshape or select the output column"
        )
    _check_non_empty_finite(arr, name)
    return arr


def _check_non_empty_finite(arr: NDArray[Any], name: str) -> None:
    if arr.shape[0] == 0:
        raise MetricInputError(f"{name}: is empty; metrics need at least one sample")
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            first = int(np.flatnonzero(bad.reshape(arr.shape[0], -1).any(axis=1))[0])
            raise MetricInputError(
                f"{name}: {int(bad.sum())} non-finite value(s) (NaN or inf), first at sample {first}; "
                "metrics are only defined on finite values"
            )


def _check_same_length(a: NDArray[Any], b: NDArray[Any], name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise MetricInputError(f"{name_a} has {a.shape[0]} samples but {name_b} has {b.shape[0]}")


def _as_class_vector(values: ArrayLike, name: str) -> NDArray[np.int64]:
    """Return integer class ids ``(N,)``; float input must hold whole numbers (e.g. labels 0.0 / 1.0)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise MetricInputError(f"{name}: expected class ids of shape (N,), got {arr.shape}")
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
        _check_non_empty_finite(arr, name)
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.floating):
        raise MetricInputError(f"{name}: expected integer class ids, got dtype {arr.dtype}")
    _check_non_empty_finite(arr, name)
    if not np.all(arr == np.round(arr)):
        raise MetricInputError(f"{name}: expected whole-number class ids, got fractional values")
    return arr.astype(np.int64)


# --------------------------------------------------------------------------------------------------
# building blocks (inputs already validated)


def _weighted_f1(y_true: NDArray[Any], y_pred: NDArray[Any]) -> float:
    """Weighted F1 over the union of classes; weights are the *true* supports (METRICS.md §2)."""
    classes = np.union1d(y_true, y_pred)
    n = y_true.shape[0]
    total = 0.0
    for c in classes:
        is_true = y_true == c
        is_pred = y_pred == c
        tp = float(np.sum(is_true & is_pred))
        fp = float(np.sum(~is_true & is_pred))
        fn = float(np.sum(is_true & ~is_pred))
        denom = 2.0 * tp + fp + fn
        f1_c = 2.0 * tp / denom if denom > 0 else 0.0  # zero_division=0
        total += (float(np.sum(is_true)) / n) * f1_c
    return total


def _pearson(p: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    # A constant input has no correlation; reporting 0 would look like a (bad) measurement.
    constant = [name for name, a in (("predictions", p), ("labels", y)) if np.all(a == a[0])]
    if constant:
        warnings.warn(
            f"corr is NaN: {' and '.join(constant)} constant over {p.shape[0]} sample(s)",
            ConstantInputWarning,
            stacklevel=3,
        )
        return float("nan")
    return float(np.corrcoef(p, y)[0, 1])


def _rounded_class_acc(p: NDArray[np.float64], y: NDArray[np.float64], bound: float) -> float:
    # np.round is half-to-even (2.5 -> 2), as in MISA/MMLatch/MMSA; -0.0 == 0.0 compares equal.
    return float(np.mean(np.round(np.clip(p, -bound, bound)) == np.round(np.clip(y, -bound, bound))))


# --------------------------------------------------------------------------------------------------
# public API


def weighted_f1(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Weighted F1 with weights n_c / n from the **true** class supports, ``zero_division=0``.

    Same value as ``sklearn.metrics.f1_score(y_true, y_pred, average="weighted")``. Argument order
    matters: MISA and MMLatch passed ``(y_pred, y_true)``, which weights by predicted support.
    Classes may be any comparable values (bool, int, str); both inputs are 1-D of equal length.
    """
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    for arr, name in ((t, "y_true"), (p, "y_pred")):
        if arr.ndim != 1:
            raise MetricInputError(f"{name}: expected shape (N,), got {arr.shape}")
        _check_non_empty_finite(arr, name)
    _check_same_length(t, p, "y_true", "y_pred")
    return _weighted_f1(t, p)


def regression_metrics(predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Sentiment regression metrics (CMU-MOSI / CMU-MOSEI), METRICS.md §2.

    ``predictions`` are the raw, unclipped outputs and ``labels`` the scores in [-3, 3], each of
    shape ``(N,)`` or ``(N, 1)``. Returns the keys of ``REGRESSION_KEYS`` in that order:
    ``mae``, ``corr`` (NaN with ``ConstantInputWarning`` when either side is constant),
    Acc-2/F1 in both conventions — ``*_has0``: negative vs non-negative on all samples;
    ``*_non0``: negative vs positive on samples with label != 0, a prediction of exactly 0 counting
    as negative (NaN with ``EmptySubsetWarning`` if every label is 0) — and ``acc5``/``acc7``
    after clipping to ±2/±3 and half-to-even rounding.

    Raises ``MetricInputError`` for mismatched lengths, empty or non-finite input.
    """
    p = _as_float_vector(predictions, "predictions")
    y = _as_float_vector(labels, "labels")
    _check_same_length(p, y, "predictions", "labels")

    truth_has0, pred_has0 = y >= 0, p >= 0
    non0 = y != 0
    if non0.any():
        truth_non0, pred_non0 = y[non0] > 0, p[non0] > 0
        acc2_non0 = float(np.mean(truth_non0 == pred_non0))
        f1_non0 = _weighted_f1(truth_non0, pred_non0)
    else:
        warnings.warn(
            "acc2_non0 and f1_non0 are NaN: every label is 0, so the Non0 subset is empty",
            EmptySubsetWarning,
            stacklevel=2,
        )
        acc2_non0 = f1_non0 = float("nan")

    return {
        "mae": float(np.mean(np.abs(p - y))),
        "corr": _pearson(p, y),
        "acc2_has0": float(np.mean(truth_has0 == pred_has0)),
        "f1_has0": _weighted_f1(truth_has0, pred_has0),
        "acc2_non0": acc2_non0,
        "f1_non0": f1_non0,
        "acc5": _rounded_class_acc(p, y, 2.0),
        "acc7": _rounded_class_acc(p, y, 3.0),
    }


def sdk_bins(values: ArrayLike) -> NDArray[np.float64]:
    """CMU-MultimodalSDK seven-class binning (METRICS.md §2), elementwise, as float64 in {-3, …, 3}.

    a < -2 → -3; -2 ≤ a < -1 → -2; -1 ≤ a < 0 → -1; a = 0 → 0; 0 < a ≤ 1 → 1; 1 < a ≤ 2 → 2; a > 2 → 3.
    """
    a = np.asarray(values, dtype=np.float64)
    conditions = [a < -2, a < -1, a < 0, a == 0, a <= 1, a <= 2]
    return np.select(conditions, [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0], default=3.0)


def acc7_sdk(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Seven-class accuracy after the SDK binning of ``sdk_bins`` on both sides.

    An optional extra, never to be reported as "Acc-7": it differs from the rounding convention
    (e.g. label 0.3, prediction 1.0 match here but not under rounding). Validation as in
    ``regression_metrics``.
    """
    p = _as_float_vector(predictions, "predictions")
    y = _as_float_vector(labels, "labels")
    _check_same_length(p, y, "predictions", "labels")
    return float(np.mean(sdk_bins(p) == sdk_bins(y)))


def classification_metrics(logits_or_predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Classification metrics (UR-FUNNY), METRICS.md §3: ``acc2`` = accuracy, ``f1`` = weighted F1.

    ``logits_or_predictions`` is either float logits ``(N, C)`` with C ≥ 2, reduced by argmax (a tie
    goes to the lowest class index, i.e. class 0 for two tied logits), or class ids ``(N,)``.
    ``labels`` are class ids ``(N,)`` (whole-number floats are accepted).
    """
    out = np.asarray(logits_or_predictions)
    if out.ndim == 2:
        if out.shape[1] < 2:
            raise MetricInputError(
                f"logits: expected shape (N, C) with C >= 2, got {out.shape}; "
                "pass class ids of shape (N,) instead"
            )
        try:
            out = out.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise MetricInputError(f"logits: expected numbers ({exc})") from exc
        _check_non_empty_finite(out, "logits")
        pred = np.argmax(out, axis=1).astype(np.int64)  # first maximum wins: ties -> lowest class
    else:
        pred = _as_class_vector(out, "predictions")
    y = _as_class_vector(labels, "labels")
    _check_same_length(pred, y, "predictions", "labels")
    return {"acc": float(np.mean(pred == y)), "f1": _weighted_f1(y, pred)}


def compute_metrics(task: str, outputs: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Dispatch on ``task``: ``"regression"`` → ``regression_metrics``,
    ``"classification"`` → ``classification_metrics``.

    ``outputs`` must be a NumPy array or array-like on the CPU (detach torch tensors first).
    Raises ``ConfigError`` for an unknown task.
    """
    if task == "regression":
        return regression_metrics(outputs, labels)
    if task == "classification":
        return classification_metrics(outputs, labels)
    raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
