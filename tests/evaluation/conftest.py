"""Fixtures for the evaluation tests: the real CMU-MOSI test labels of METRICS.md §4."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

MOSI_LABELS_CSV = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mosi" / "mosi_text_labels.csv"


@pytest.fixture(scope="session")
def mosi_test_labels() -> np.ndarray:
    """Labels of the rows with split == "test", in file order, as float64 (686 values)."""
    if not MOSI_LABELS_CSV.is_file():
        pytest.skip(f"real MOSI label file not found at {MOSI_LABELS_CSV}")
    with MOSI_LABELS_CSV.open(newline="", encoding="utf-8") as fh:
        labels = [float(row["label"]) for row in csv.DictReader(fh) if row["split"] == "test"]
    return np.asarray(labels, dtype=np.float64)
