"""The text + label CSV reader (real MOSI table, broken files) and the --data dispatch that reaches it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from misalatch.data.loading import load_dataset
from misalatch.data.readers.text_csv import read_text_csv
from misalatch.errors import ConfigError, DataFormatError

EMPTY_MOSI = {"2WGyTLYerpo_44", "5W7Z1C_fDaE_24", "BioHAh1qJAQ_30", "lXPQBPVc5Cw_30"}  # DATA.md §11.3


def test_real_mosi_table(mosi_csv):
    ds = read_text_csv(mosi_csv)
    assert ds.split_sizes() == {"train": 1281, "valid": 229, "test": 685}
    assert ds.meta["dropped"] == {"empty": 4}
    assert set(ds.meta["dropped_ids"]["empty"]) == EMPTY_MOSI
    assert ds.task == "regression" and ds.alignment == "word" and not ds.synthetic
    assert ds.present_modalities() == "t" and ds.visual_dim is None and ds.acoustic_dim is None
    assert ds.meta["sources"][0]["sha256"] == "a4dcd8ad6ee9f6473c165a70dcc3dd3ca21633dab1985cec28fde33cc953bc9f"
    ds.validate(str(mosi_csv))

    with mosi_csv.open(newline="") as fh:
        rows = {r["segment_id"]: r for r in csv.DictReader(fh)}
    for split, segs in ds.splits.items():
        for seg in segs:
            row = rows[seg.id]
            assert isinstance(seg.id, str) and row["split"] == split
            assert seg.label == float(row["label"])
            assert seg.words == row["text"].split()
    first = ds.splits["train"][0]
    assert (first.id, first.label, first.words) == ("03bSnISJMiM_1", 2.4, ["anyhow", "it", "was", "really", "good"])


def _write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = (
    "segment_id,extra,text,label,split\n"
    "007,x,it was good,1.5,train\n"
    "a_2,x,bad,-2,dev\n"
    "a_3,x,okay i guess,0,test\n"
)


def test_minimal_file_ids_stay_strings_and_dev_is_valid(tmp_path):
    ds = read_text_csv(_write(tmp_path, GOOD))
    assert [s.id for s in ds.splits["train"]] == ["007"]
    assert ds.splits["valid"][0].label == -2.0
    assert ds.splits["test"][0].words == ["okay", "i", "guess"]
    assert ds.name == "t" and ds.meta["dropped"] == {}


def test_empty_split_value_is_counted_as_no_fold(tmp_path):
    ds = read_text_csv(_write(tmp_path, GOOD + "a_4,x,hmm,1,\n"))
    assert ds.meta["dropped"] == {"no_fold": 1}


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("segment_id,text,label\n1,a,0\n", r"t\.csv: missing column\(s\) 'split'"),
        (GOOD + "a_5,x,fine,great,train\n", r"t\.csv, line 5, field 'label': .*'great'"),
        (GOOD + "a_5,x,fine,nan,train\n", r"line 5, field 'label'"),
        (GOOD + "a_5,x,fine,4.5,train\n", r"line 5, field 'label': expected a sentiment score in \[-3, 3\]"),
        (GOOD + "a_5,x,fine,1,training\n", r"line 5, field 'split': unknown split 'training'"),
        (GOOD + "a_2,x,fine,1,train\n", r"line 5, field 'segment_id': duplicate id 'a_2' \(first seen on line 3\)"),
        (GOOD.replace("okay i guess", ""), r"t\.csv, field 'split': split 'test' has no segments"),
        (GOOD + "a_5,x\n", r"line 5: the row has fewer fields"),
        (GOOD + "a_5,x,fine, really,1,train\n", r"line 5: the row has 6 fields but the header has 5"),
    ],
)
def test_bad_files_name_file_line_and_field(tmp_path, text, pattern):
    with pytest.raises(DataFormatError, match=pattern):
        read_text_csv(_write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(DataFormatError, match=r"nope\.csv: no such file"):
        read_text_csv(tmp_path / "nope.csv")


# ---- load_dataset: the --data dispatch ----------------------------------------------------------
def test_load_dataset_synthetic_default():
    ds = load_dataset("synthetic", synthetic_sizes={"train": 12, "valid": 3, "test": 4}, seed=5)
    assert ds.synthetic and ds.split_sizes() == {"train": 12, "valid": 3, "test": 4}
    assert ds.meta["options"]["seed"] == 5
    assert load_dataset().split_sizes() == {"train": 600, "valid": 120, "test": 200}
    with pytest.raises(ConfigError, match="synthetic_sizes: unknown key 'dev'"):
        load_dataset("synthetic", synthetic_sizes={"dev": 3})


def test_load_dataset_csv_by_path_and_under_data_root(tmp_path, monkeypatch):
    path = _write(tmp_path, GOOD, name="mine.csv")
    assert load_dataset(str(path)).split_sizes() == {"train": 1, "valid": 1, "test": 1}
    assert load_dataset("mine.csv", data_root=str(tmp_path)).name == "mine"
    monkeypatch.setenv("MISALATCH_DATA", str(tmp_path))
    assert load_dataset("mine.csv").name == "mine"


def test_load_dataset_errors(tmp_path):
    with pytest.raises(DataFormatError, match=r"no such file or folder: .*nope\.csv"):
        load_dataset(str(tmp_path / "nope.csv"))
    with pytest.raises(ConfigError, match=r"unknown dataset 'mosy'; accepted: .*'synthetic'.*\.csv"):
        load_dataset("mosy")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataFormatError, match=r"notes\.txt: cannot read files of type '\.txt'"):
        load_dataset(str(tmp_path / "notes.txt"))
    with pytest.raises(DataFormatError, match="folder is not in a layout misalatch can read"):
        load_dataset(str(tmp_path))
