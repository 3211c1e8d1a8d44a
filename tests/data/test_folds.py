"""Standard folds shipped with misalatch (DATA.md §8, §13.3) and user fold files."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from misalatch.data.folds import folds_source, load_folds
from misalatch.errors import DataFormatError

SHARED_FOLDS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "folds" / "standard_folds.json"


def test_packaged_folds_sizes_and_source() -> None:
    mosi, mosei = load_folds("mosi"), load_folds("mosei")
    assert {s: len(v) for s, v in mosi.items()} == {"train": 52, "valid": 10, "test": 31}
    assert {s: len(v) for s, v in mosei.items()} == {"train": 2250, "valid": 300, "test": 678}
    assert not (mosei["train"] & mosei["test"]) and "-NFrJFQijFE" in mosei["train"]
    doc = json.loads(resources.files("misalatch.data").joinpath("resources", "standard_folds.json").read_text())
    assert "cmu-multimodal-sdk==0.0.6" in doc["_source"] and "cmu_mosei_std_folds" in doc["_source"]
    assert folds_source()["path"].endswith("standard_folds.json") and len(folds_source()["sha256"]) == 64


def test_packaged_folds_equal_the_shared_copy() -> None:
    if not SHARED_FOLDS.is_file():
        pytest.skip(f"shared folds not found: {SHARED_FOLDS}")
    for name in ("mosi", "mosei"):
        assert load_folds(name) == load_folds(name, SHARED_FOLDS)


def test_user_file_overrides_and_layouts(tmp_path: Path) -> None:
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"train": ["a", 286943], "dev": ["b"], "test": ["c"], "_note": "x"}))
    assert load_folds("mosei", one) == {"train": {"a", "286943"}, "valid": {"b"}, "test": {"c"}}
    many = tmp_path / "many.json"
    many.write_text(json.dumps({"CMU_MOSI": {"train": ["a"], "valid": ["b"], "test": ["c"]}}))
    assert load_folds("mosi", many)["valid"] == {"b"}
    with pytest.raises(DataFormatError, match=r"no folds for dataset 'mosei'"):
        load_folds("mosei", many)


@pytest.mark.parametrize("doc, message", [
    ({"train": ["a"], "valid": ["a"], "test": []}, "in both 'train' and 'valid'"),
    ({"train": "a", "valid": [], "test": []}, "expected a list"),
    ({"mosi": {"train": [], "holdout": []}}, "unknown split 'holdout'"),
])
def test_bad_fold_files(tmp_path: Path, doc: dict, message: str) -> None:
    path = tmp_path / "folds.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataFormatError, match=message) as err:
        load_folds("mosi", path)
    assert str(path) in str(err.value)


def test_missing_or_invalid_json(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="fold file not found"):
        load_folds("mosi", tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataFormatError, match="not valid JSON"):
        load_folds("mosi", bad)
