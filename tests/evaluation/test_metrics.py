"""Tests of misalatch.evaluation.metrics against METRICS.md §2–§4."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from misalatch.errors import ConfigError, MisalatchError
from misalatch.evaluation.metrics import (
    REGRESSION_KEYS,
    ConstantInputWarning,
    EmptySubsetWarning,
    MetricInputError,
    acc7_sdk,
    classification_metrics,
    compute_metrics,
    regression_metrics,
    sdk_bins,
    weighted_f1,
)

# ---------------------------------------------------------------------------------------------
# anchors on the real CMU-MOSI test split (METRICS.md §4)

ANCHORS = {
    "zero": dict(
        mae=1.417371, corr=math.nan, acc2_has0=0.447522, f1_has0=0.276715,
        acc2_non0=0.577744, f1_non0=0.423121, acc5=0.154519, acc7=0.154519,
    ),
    "linear": dict(
        mae=0.691047, corr=1.000000, acc2_has0=0.924198, f1_has0=0.923125,
        acc2_non0=0.943598, f1_non0=0.942892, acc5=0.402332, acc7=0.335277,
    ),
    "noisy": dict(
        mae=0.448802, corr=0.947815, acc2_has0=0.921283, f1_has0=0.921007,
        acc2_non0=0.940549, f1_non0=0.940504, acc5=0.620991, acc7=0.548105,
    ),
}


def _predictor(name: str, y: np.ndarray) -> np.ndarray:
    i = np.arange(y.shape[0], dtype=np.float64)
    return {"zero": np.zeros_like(y), "linear": 0.5 * y - 0.2, "noisy": 0.8 * y + 0.6 * np.sin(i)}[name]


@pytest.mark.parametrize("name", list(ANCHORS))
def test_anchor_values_on_mosi_test_split(mosi_test_labels: np.ndarray, name: str) -> None:
    y = mosi_test_labels
    p = _predictor(name, y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = regression_metrics(p, y)
    assert tuple(got) == REGRESSION_KEYS
    for key, expected in ANCHORS[name].items():
        if math.isnan(expected):
            assert math.isnan(got[key]), key
        else:
            assert round(got[key], 6) == expected, (key, got[key])
    constant_warnings = [w for w in caught if issubclass(w.category, ConstantInputWarning)]
    assert len(constant_warnings) == (1 if name == "zero" else 0)


def test_f1_argument_order_regression(mosi_test_labels: np.ndarray) -> None:
    y = mosi_test_labels
    non0 = y != 0
    truth, pred = y[non0] > 0, np.zeros(int(non0.sum())) > 0
    assert round(weighted_f1(truth, pred), 6) == 0.423121
    assert round(weighted_f1(pred, truth), 6) == 0.732367  # the original MISA/MMLatch order


def test_mosi_test_split_facts(mosi_test_labels: np.ndarray) -> None:
    y = mosi_test_labels
    assert y.shape == (686,) and y.dtype == np.float64
    assert (int((y == 0).sum()), int((y > 0).sum()), int((y < 0).sum())) == (30, 277, 379)
    assert int(np.sum(2 * y == np.round(2 * y)) - np.sum(y == np.round(y))) == 18  # exact halves


def test_acc7_class_counts_through_constant_predictors(mosi_test_labels: np.ndarray) -> None:
    # Predicting the constant k scores exactly the labels whose rounded class is k.
    y = mosi_test_labels
    expected = {-3: 46, -2: 156, -1: 145, 0: 106, 1: 113, 2: 100, 3: 20}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        counts = {k: regression_metrics(np.full_like(y, k), y)["acc7"] * y.size for k in expected}
    assert {k: round(v) for k, v in counts.items()} == expected
    assert all(abs(v - round(v)) < 1e-9 for v in counts.values())


# ---------------------------------------------------------------------------------------------
# hand-computed regression cases


def test_hand_case_all_metrics() -> None:
    y = [-1.0, 0.0, 0.0, 2.0]
    p = [-0.5, 0.0, -0.1, 1.0]
    m = regression_metrics(p, y)
    assert m["mae"] == pytest.approx((0.5 + 0.0 + 0.1 + 1.0) / 4)
    # Has0: truth [F,T,T,T], pred [F,T,F,T]
    assert m["acc2_has0"] == pytest.approx(0.75)
    # class T: TP 2, FN 1 -> 0.8 (weight 3/4); class F: TP 1, FP 1 -> 2/3 (weight 1/4)
    assert m["f1_has0"] == pytest.approx(0.75 * 0.8 + 0.25 * 2 / 3)
    # Non0 keeps samples 0 and 3: truth [F,T], pred [F,T]
    assert m["acc2_non0"] == 1.0 and m["f1_non0"] == 1.0
    # rounded classes: y [-1, 0, 0, 2], p [-0 (from -0.5), 0, -0, 1] -> matches at samples 1, 2
    assert m["acc5"] == pytest.approx(0.5) and m["acc7"] == pytest.approx(0.5)
    assert m["corr"] == pytest.approx(np.corrcoef(p, y)[0, 1])
    assert all(type(v) is float for v in m.values())


def test_prediction_exactly_zero_counts_negative_in_non0_and_non_negative_in_has0() -> None:
    m = regression_metrics([0.0, -1.0], [1.0, -1.0])
    assert m["acc2_non0"] == 0.5  # 0 -> negative, label positive
    assert m["acc2_has0"] == 1.0  # 0 -> non-negative, label non-negative


def test_zero_labels_excluded_from_non0_only() -> None:
    # The zero label is wrong under Has0 (pred negative) but does not enter Non0 at all.
    m = regression_metrics([-0.3, 1.0, -2.0], [0.0, 1.0, -2.0])
    assert m["acc2_has0"] == pytest.approx(2 / 3)
    assert m["acc2_non0"] == 1.0


def test_all_zero_labels_make_non0_nan_with_warning() -> None:
    with pytest.warns(EmptySubsetWarning), pytest.warns(ConstantInputWarning, match="labels"):
        m = regression_metrics([0.5, -0.5], [0.0, 0.0])
    assert math.isnan(m["acc2_non0"]) and math.isnan(m["f1_non0"])
    assert m["acc2_has0"] == 0.5


def test_half_integers_round_half_to_even() -> None:
    y = [-2.5, 0.5, 1.5, 2.5, -0.5]
    # np.round: -2.5 -> -2, 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0 (== 0)
    m = regression_metrics([-2.0, 0.0, 2.0, 2.0, 0.4], y)
    assert m["acc7"] == 1.0 and m["acc5"] == 1.0
    # Half-away-from-zero would match the first four of these; half-to-even matches none.
    m = regression_metrics([-3.0, 1.0, 1.0, 3.0, -1.0], y)
    assert m["acc7"] == 0.0
    # acc5 clips to ±2 first: -3 -> -2 matches -2.5 -> -2, 3 -> 2 matches 2.5 -> 2
    assert m["acc5"] == pytest.approx(2 / 5)


def test_predictions_are_not_clipped_for_mae() -> None:
    m = regression_metrics([5.0, -4.0], [3.0, -3.0])
    assert m["mae"] == pytest.approx(1.5)
    assert m["acc7"] == 1.0  # clipped to ±3 for the class comparison only


def test_accepts_column_vectors() -> None:
    p = np.array([[0.2], [-1.3], [2.7]])
    y = np.array([0.0, -1.0, 3.0])
    assert regression_metrics(p, y) == regression_metrics(p[:, 0], y[:, None])


@pytest.mark.parametrize("constant", ["predictions", "labels"])
def test_corr_nan_with_warning_for_constant_input(constant: str) -> None:
    varying, flat = [0.1, -0.7, 1.9], [1.0, 1.0, 1.0]
    p, y = (flat, varying) if constant == "predictions" else (varying, flat)
    with pytest.warns(ConstantInputWarning, match=constant):
        m = regression_metrics(p, y)
    assert math.isnan(m["corr"])
    assert m["mae"] > 0  # the other metrics are still computed


# ---------------------------------------------------------------------------------------------
# SDK binning


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (-3.7, -3), (-2.5, -3), (-2.0, -2), (-1.5, -2), (-1.0, -1), (-0.5, -1), (-0.0, 0),
        (0.0, 0), (0.5, 1), (1.0, 1), (1.5, 2), (2.0, 2), (2.5, 3), (4.0, 3),
    ],
)
def test_sdk_bins(value: float, expected: int) -> None:
    assert sdk_bins([value])[0] == expected
    assert acc7_sdk([float(expected)], [value]) == 1.0
    neighbour = expected - 1 if expected == 3 else expected + 1
    assert acc7_sdk([float(neighbour)], [value]) == 0.0


def test_acc7_sdk_differs_from_rounding() -> None:
    p, y = [1.0, -2.0], [0.3, -1.2]
    assert acc7_sdk(p, y) == 1.0  # 0.3 -> 1, -1.2 -> -2
    assert regression_metrics(p, y)["acc7"] == 0.0  # round: 0.3 -> 0, -1.2 -> -1
    assert "acc7_sdk" not in regression_metrics(p, y)


# ---------------------------------------------------------------------------------------------
# weighted F1 and classification


def test_weighted_f1_hand_case_and_argument_order() -> None:
    y_true, y_pred = [1, 1, 1, 0], [1, 0, 1, 0]
    assert weighted_f1(y_true, y_pred) == pytest.approx(0.75 * 0.8 + 0.25 * 2 / 3)
    assert weighted_f1(y_pred, y_true) == pytest.approx(0.5 * 0.8 + 0.5 * 2 / 3)


def test_weighted_f1_zero_when_all_wrong() -> None:
    assert weighted_f1([1, 1, 1], [0, 0, 0]) == 0.0


def test_classification_hand_case() -> None:
    logits = np.array([[1.0, 2.0], [3.0, 0.0], [0.5, 0.5], [0.0, 1.0]])  # third: tie -> class 0
    labels = [1, 0, 1, 1]
    m = classification_metrics(logits, labels)
    assert list(m) == ["acc", "f1"]
    assert m["acc"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(0.75 * 0.8 + 0.25 * 2 / 3)
    assert classification_metrics(np.array([1, 0, 0, 1]), np.array([1.0, 0.0, 1.0, 1.0])) == m


def test_compute_metrics_dispatch() -> None:
    assert compute_metrics("regression", [0.5, -1.0], [1.0, -2.0]) == regression_metrics([0.5, -1.0], [1.0, -2.0])
    assert compute_metrics("classification", [[0.0, 1.0]], [1]) == {"acc": 1.0, "f1": 1.0}
    with pytest.raises(ConfigError, match="regression, classification"):
        compute_metrics("ranking", [0.0], [0.0])


# ---------------------------------------------------------------------------------------------
# validation at the boundary


@pytest.mark.parametrize(
    ("p", "y", "match"),
    [
        ([0.0, 1.0], [0.0], "2 samples but labels has 1"),
        ([], [], "empty"),
        ([0.0, np.nan], [0.0, 1.0], "non-finite.*sample 1"),
        ([0.0, 1.0], [np.inf, 1.0], "non-finite.*sample 0"),
        (np.zeros((2, 2)), [0.0, 1.0], r"shape \(N,\) or \(N, 1\)"),
        (["a", "b"], [0.0, 1.0], "expected numbers"),
    ],
)
def test_regression_validation(p: object, y: object, match: str) -> None:
    with pytest.raises(MetricInputError, match=match) as info:
        regression_metrics(p, y)
    assert isinstance(info.value, ValueError) and isinstance(info.value, MisalatchError)


@pytest.mark.parametrize(
    ("out", "y", "match"),
    [
        (np.zeros((3, 1)), [0, 1, 0], "C >= 2"),
        ([0.5, 1.0], [0, 1], "whole-number"),
        ([[0.0, 1.0]], [0, 1], "1 samples but labels has 2"),
        ([[np.nan, 1.0]], [0], "non-finite"),
    ],
)
def test_classification_validation(out: object, y: object, match: str) -> None:
    with pytest.raises(MetricInputError, match=match):
        classification_metrics(out, y)
