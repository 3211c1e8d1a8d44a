"""Per-utterance feature tables (``--format utterances``): CSV, Parquet, NPZ, label join, hold-out."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from misalatch.cli import main as cli_main
from misalatch.data.readers.utterance_table import hold_out_valid, read_utterance_table, speaker_of
from misalatch.data.synthetic.files import write_utterance_labels, write_utterance_table
from misalatch.errors import ConfigError, DataFormatError


def _arrays(ds, split, attr):
    return np.concatenate([getattr(s, attr) for s in ds.splits[split]])


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".npz"])
def test_the_three_file_types_read_to_the_same_dataset(tmp_path: Path, suffix: str) -> None:
    reference = read_utterance_table(write_utterance_table(tmp_path / "t.csv", sizes=(9, 3, 6)), normalize=False)
    ds = read_utterance_table(write_utterance_table(tmp_path / f"t{suffix}", sizes=(9, 3, 6)), normalize=False)
    assert ds.split_sizes() == {"train": 9, "valid": 3, "test": 6}
    assert (ds.visual_dim, ds.acoustic_dim, ds.text_vector_dim, ds.present_modalities()) == (5, 3, 4, "tav")
    seg = ds.splits["train"][0]
    assert seg.id == "vid1_1" and seg.text_vectors.shape == (1, 4) and seg.acoustic.shape == (1, 3)
    for split in ("train", "valid", "test"):
        assert [s.id for s in ds.splits[split]] == [s.id for s in reference.splits[split]]
        for attr in ("text_vectors", "acoustic", "visual"):
            np.testing.assert_allclose(_arrays(ds, split, attr), _arrays(reference, split, attr), rtol=1e-6)
        assert [s.label for s in ds.splits[split]] == pytest.approx([s.label for s in reference.splits[split]])


def test_features_are_standardised_with_training_statistics_only(tmp_path: Path) -> None:
    path = write_utterance_table(tmp_path / "t.csv", sizes=(30, 6, 12))
    raw = read_utterance_table(path, normalize=False)
    ds = read_utterance_table(path)
    train = _arrays(ds, "train", "acoustic")
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0), 1, atol=1e-4)
    raw_train, raw_test = _arrays(raw, "train", "acoustic"), _arrays(raw, "test", "acoustic")
    expected = (raw_test - raw_train.mean(axis=0)) / raw_train.std(axis=0)
    np.testing.assert_allclose(_arrays(ds, "test", "acoustic"), expected, rtol=1e-4, atol=1e-5)
    assert abs(float(_arrays(raw, "train", "acoustic")[:, 0].mean()) - 150) < 40  # the F0-like column was raw


def test_labels_are_joined_by_segment_id(tmp_path: Path) -> None:
    table = write_utterance_table(tmp_path / "t.csv", sizes=(6, 3, 3), with_labels=False)
    labels = write_utterance_labels(tmp_path / "labels.csv", table)
    ds = read_utterance_table(table, labels=labels)
    with open(labels, newline="") as fh:
        truth = {row["segment_id"]: float(row["label"]) for row in csv.DictReader(fh)}
    assert {s.id: s.label for split in ds.splits.values() for s in split} == truth
    with pytest.raises(DataFormatError, match="no 'label' column; give the labels with --labels"):
        read_utterance_table(table)
    short = tmp_path / "short.csv"
    short.write_text("".join(labels.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(DataFormatError, match=r"short.csv: no label for 1 segment id\(s\) of t.csv"):
        read_utterance_table(table, labels=short)


def test_validation_is_held_out_by_whole_speakers_seeded(tmp_path: Path) -> None:
    path = write_utterance_table(tmp_path / "t.csv", sizes=(30, 0, 6))
    ds = read_utterance_table(path, valid_fraction=0.2, valid_seed=3)
    train, valid = ({speaker_of(s.id) for s in ds.splits[k]} for k in ("train", "valid"))
    assert not train & valid and valid == set(ds.meta["held_out_speakers"])
    assert 6 <= ds.split_sizes()["valid"] <= 9 and ds.split_sizes()["train"] + ds.split_sizes()["valid"] == 30
    again = read_utterance_table(path, valid_fraction=0.2, valid_seed=3)
    assert [s.id for s in again.splits["valid"]] == [s.id for s in ds.splits["valid"]]
    ids = [s.id for split in ("train", "valid") for s in ds.splits[split]]
    assert any(hold_out_valid(ids, 0.2, seed) != hold_out_valid(ids, 0.2, 3) for seed in range(4))
    assert speaker_of("03bSnISJMiM_10") == "03bSnISJMiM" and speaker_of("c5xsKMxpXnc_0_1") == "c5xsKMxpXnc_0"
    with pytest.raises(DataFormatError, match=r"split 'valid' has no rows \(hold out part of train with --valid-fraction\)"):
        read_utterance_table(path)
    with_valid = write_utterance_table(tmp_path / "v.csv", sizes=(6, 3, 3))
    with pytest.raises(ConfigError, match="has validation rows already"):
        read_utterance_table(with_valid, valid_fraction=0.2)


def test_broken_tables_fail_with_the_file_row_and_field(tmp_path: Path) -> None:
    good = write_utterance_table(tmp_path / "t.csv", sizes=(6, 3, 3)).read_text().splitlines()
    header, rows = good[0], good[1:]

    def broken(name: str, lines: list[str]) -> Path:
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n")
        return path

    cases = {
        "missing column 'split'": [header.replace("split,", "fold,")],
        "unknown column\\(s\\) 'fold'": [header + ",fold", *[r + ",x" for r in rows]],
        "line 3, field 'text_1': expected a number, got 'abc'":
            [header, rows[0], rows[1].replace(rows[1].split(",")[4], "abc", 1), *rows[2:]],
        "row 2, field 'segment_id': duplicate id 'vid1_1'": [header, rows[0], rows[0], *rows[2:]],
        "row 1, field 'split': unknown split 'training'": [header, rows[0].replace(",train,", ",training,"), *rows[1:]],
        "line 2: 3 fields, the header has": [header, "a,b,c"],
        "field 'label': expected a sentiment score in \\[-3, 3\\], got 7.0":
            [header, ",".join(rows[0].split(",")[:2] + ["7"] + rows[0].split(",")[3:]), *rows[1:]],
        "no feature columns": ["segment_id,split,label", "a_1,train,1", "b_1,valid,1", "c_1,test,1"],
    }
    for i, (message, lines) in enumerate(cases.items()):
        with pytest.raises(DataFormatError, match=message):
            read_utterance_table(broken(f"b{i}.csv", lines))
    (tmp_path / "x.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataFormatError, match="x.parquet: not a readable Parquet file"):
        read_utterance_table(tmp_path / "x.parquet")
    np.savez(tmp_path / "o.npz", segment_id=np.array(["a_1"], dtype=object), split=np.array(["train"]))
    with pytest.raises(DataFormatError, match="o.npz, array 'segment_id': not a plain array"):
        read_utterance_table(tmp_path / "o.npz")
    (tmp_path / "t.tsv").write_text("x")
    with pytest.raises(DataFormatError, match="unknown table type '.tsv'"):
        read_utterance_table(tmp_path / "t.tsv")


def test_prepare_and_train_on_a_feature_table(tmp_path: Path) -> None:
    table = write_utterance_table(tmp_path / "t.parquet", sizes=(18, 0, 6))
    out = tmp_path / "prepared"
    assert cli_main(["prepare", "--format", "utterances", "--input", str(table), "--valid-fraction", "0.3",
                     "--out", str(out)]) == 0
    assert cli_main(["prepare", "--format", "mmsa", "--input", str(table), "--valid-fraction", "0.3",
                     "--out", str(tmp_path / "p2")]) == 1  # --valid-fraction is for utterances only
    run = tmp_path / "run"
    assert cli_main(["train", "--data", str(out), "--max-epochs", "1", "--hidden-size", "8", "--batch-size", "8",
                     "--out", str(run)]) == 0
    assert (run / "metrics.json").is_file()
