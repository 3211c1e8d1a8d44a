"""Prediction plots: the confusion matrices agree with the metrics, and the PNGs are real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from misalatch.errors import ConfigError
from misalatch.evaluation.metrics import classification_metrics, regression_metrics
from misalatch.evaluation.plots import acc7_classes, confusion_matrix, plot_predictions


def _image(path: Path) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(str(path))


def test_acc7_confusion_diagonal_is_acc7() -> None:
    rng = np.random.default_rng(0)
    labels = np.round(rng.uniform(-3, 3, 300) * 5) / 5  # MOSI-like scores, exact halves included
    labels[:4] = [2.5, -2.5, 0.5, -0.5]
    predictions = labels + rng.normal(0, 0.9, 300)
    counts = confusion_matrix(acc7_classes(labels), acc7_classes(predictions), (-3, -2, -1, 0, 1, 2, 3))
    assert counts.shape == (7, 7) and counts.sum() == 300
    assert np.trace(counts) / 300 == pytest.approx(regression_metrics(predictions, labels)["acc7"])
    # rows are the true classes: row sums are the label histogram
    assert list(counts.sum(axis=1)) == [int(np.sum(acc7_classes(labels) == c)) for c in range(-3, 4)]
    assert acc7_classes(np.array([2.5, -2.5, 0.5, 7.0]) ).tolist() == [2, -2, 0, 3]  # half to even, clipped


def test_classification_confusion() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    counts = confusion_matrix(labels, logits.argmax(1), 2)
    assert counts.tolist() == [[1, 1], [1, 2]]
    assert np.trace(counts) / 5 == pytest.approx(classification_metrics(logits, labels)["acc"])
    with pytest.raises(ConfigError, match="class 2"):
        confusion_matrix(np.array([0, 2]), np.array([0, 1]), 2)


def test_plot_predictions_writes_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    y = rng.uniform(-3, 3, 50)
    written = plot_predictions(y + rng.normal(0, 0.5, 50), y, tmp_path, task="regression", split="test")
    assert set(written) == {"scatter", "confusion"}
    assert written["scatter"].name == "scatter-test.png" and written["confusion"].name == "confusion-test.png"
    for path in written.values():
        pixels = _image(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and float(pixels.var()) > 0
    written = plot_predictions(rng.normal(size=(20, 2)), rng.integers(0, 2, 20), tmp_path, task="classification",
                               split="valid", prefix="evaluation-")
    assert list(written) == ["confusion"] and written["confusion"].name == "evaluation-confusion-valid.png"
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporaries
