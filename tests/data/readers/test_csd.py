"""CMU-SDK ``.csd`` reader: the real MOSI label file, tolerant metadata, and bad input (DATA.md §2, §13.2)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from misalatch.data.readers.csd import (
    CsdSequence,
    build_csd_dataset,
    decode_words,
    read_csd,
    read_csd_metadata,
    read_label_sequence,
)
from misalatch.data.synthetic.csd import write_csd
from misalatch.errors import ConfigError, DataFormatError

# tests/data/readers/test_csd.py -> repo root is parents[3]; real files live beside the project
SHARED_DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
MOSI_LABELS = SHARED_DATA / "mosi" / "CMU_MOSI_Opinion_Labels.csd"
MOSI_CSV = SHARED_DATA / "mosi" / "mosi_text_labels.csv"
FOLDS = SHARED_DATA / "folds" / "standard_folds.json"


def real(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"real file not found: {path}")
    return path


# ---- the real MOSI label sequence ---------------------------------------------------------------

def test_real_mosi_labels_match_text_table() -> None:
    ds = build_csd_dataset(labels=real(MOSI_LABELS), folds=real(FOLDS), dataset="mosi")
    assert ds.split_sizes() == {"train": 1284, "valid": 229, "test": 686}
    assert ds.meta["dropped"] == {"no_fold": 0, "missing_modality": 0, "length_mismatch": 0, "empty": 0}
    with real(MOSI_CSV).open(newline="") as fh:
        table = {row["segment_id"]: row for row in csv.DictReader(fh)}
    seen = set()
    for split, segs in ds.splits.items():
        for seg in segs:
            row = table[seg.id]  # <vid>_<k+1>
            assert row["split"] == split, seg.id
            assert abs(float(row["label"]) - seg.label) <= 1e-6, (seg.id, row["label"], seg.label)
            assert seg.words is None
            seen.add(seg.id)
    assert seen == set(table)
    assert ds.meta["csd_metadata"]["labels"]["root name"] == "Opinion Segment Labels"
    assert ds.meta["sources"][0]["sha256"] == "aef5f4617cdb067cc7606bb798eb6452c3de45f0f21cb3427be33c4d8c7fe852"


def test_real_mosi_labels_with_packaged_folds() -> None:
    ds = build_csd_dataset(labels=real(MOSI_LABELS))  # folds=None: the copy shipped with misalatch
    assert ds.split_sizes() == {"train": 1284, "valid": 229, "test": 686}
    assert ds.meta["sources"][-1]["role"] == "folds"


def test_real_label_rows_keep_file_order() -> None:
    rows = read_label_sequence(real(MOSI_LABELS))
    assert len(rows) == 93 and sum(e.intervals.shape[0] for e in rows.values()) == 2199
    for vid, k in (("VbQk4H8hgr0", 44), ("d6hH302o4v8", 23)):
        starts = rows[vid].intervals[:, 0]
        assert not np.all(np.diff(starts) >= 0), vid  # out of time order, kept as stored
        assert starts[k] < starts[k - 1] or starts[k + 1] < starts[k]


def test_real_metadata_decoded_from_json() -> None:
    meta = read_csd_metadata(real(MOSI_LABELS))
    assert meta["root name"] == "Opinion Segment Labels"
    assert meta["dataset name"] == "CMU-MOSI"
    assert meta["dimension names"] == ["sentiment score"]
    assert meta["alignment compatible"] is True and meta["md5"] is None and meta["dataset version"] == 1.0
    assert len(meta) == 13


# ---- tolerant reading ---------------------------------------------------------------------------

def entry(n: int = 2, d: int = 3) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([np.arange(n), np.arange(n) + 1.0], 1), np.ones((n, d), np.float32)


def test_odd_or_missing_metadata_is_tolerated(tmp_path: Path) -> None:
    path = write_csd(tmp_path / "a.csd", {"v": entry()}, root="COVAREP", metadata={
        "dimension namescomputational sequence version": ["f0", "VUV", "NAQ"], "dataset name": "CMU-MOSEI"})
    with h5py.File(path, "a") as f:
        f["COVAREP/metadata"].create_dataset("plain", data=np.array([b"not json"], dtype=object),
                                             dtype=h5py.vlen_dtype(bytes))
        f["COVAREP/metadata"].attrs["as attribute"] = '"x"'
    meta = read_csd_metadata(path)
    assert meta["dimension names"] == ["f0", "VUV", "NAQ"]  # from the concatenated key
    assert meta["plain"] == "not json" and meta["as attribute"] == "x"
    bare = tmp_path / "bare.csd"
    with h5py.File(bare, "w") as f:  # no metadata group at all
        f.create_dataset("root/data/v/features", data=np.ones((1, 2)))
        f.create_dataset("root/data/v/intervals", data=np.array([[0.0, 1.0]]))
    assert read_csd_metadata(bare) == {"root name": "root"}
    assert read_csd(bare)["v"].features.shape == (1, 2)


def test_higher_rank_features_are_flattened(tmp_path: Path) -> None:
    path = write_csd(tmp_path / "r.csd", {"v": (np.array([[0.0, 1.0], [1.0, 2.0]]), np.ones((2, 2, 3)))})
    with CsdSequence(path, role="visual") as seq:
        assert seq.read("v").features.shape == (2, 6) and seq.dim == 6


def test_decode_words_rejects_numbers() -> None:
    assert decode_words(np.array([[b"sp"], [b"caf\xc3\xa9"]])) == ["sp", "café"]
    with pytest.raises(DataFormatError, match="byte strings"):
        decode_words(np.zeros((2, 300)), where="vectors.csd")


def test_invalid_entries_are_skipped_and_reported(tmp_path: Path) -> None:
    path = write_csd(tmp_path / "v.csd", {"good": entry(), "flat": entry(), "short": entry(), "noint": entry()})
    with h5py.File(path, "a") as f:
        data = f["sequence/data"]
        del data["noint/intervals"]
        del data["flat/intervals"]
        data["flat"].create_dataset("intervals", data=np.arange(4.0))  # 1-D
        del data["short/features"]
        data["short"].create_dataset("features", data=np.ones((5, 3)))  # 5 rows for 2 intervals
    with CsdSequence(path, role="visual") as seq:
        assert seq.read("good") is not None
        assert seq.read("noint") is None and seq.read("flat") is None and seq.read("short") is None
        assert seq.skipped == {
            "noint": "no 'intervals' dataset",
            "flat": "intervals float64 (4,) are not numeric (n, 2)",
            "short": "5 feature rows but 2 intervals",
        }


# ---- bad input ----------------------------------------------------------------------------------

def test_truncated_hdf5_file(tmp_path: Path) -> None:
    data = real(MOSI_LABELS).read_bytes()
    bad = tmp_path / "truncated.csd"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="truncated HDF5 file") as err:
        build_csd_dataset(labels=bad)
    assert str(bad) in str(err.value)


def test_not_hdf5_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "labels.csd"
    bad.write_text("segment_id,label\n")
    with pytest.raises(DataFormatError, match="not an HDF5 file") as err:
        read_label_sequence(bad)
    assert str(bad) in str(err.value)
    with pytest.raises(DataFormatError, match="no such file"):
        read_label_sequence(tmp_path / "absent.csd")


def test_no_data_group_and_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "nodata.csd"
    with h5py.File(path, "w") as f:
        f.create_group("Opinion Segment Labels/metadata")
    with pytest.raises(DataFormatError, match=r"has no 'data' group") as err:
        read_label_sequence(path)
    assert str(path) in str(err.value)
    empty = tmp_path / "empty.csd"
    h5py.File(empty, "w").close()
    with pytest.raises(DataFormatError, match="no top-level group"):
        read_label_sequence(empty)


def synthetic_set(tmp_path: Path, *, folds: dict | None = None) -> dict[str, Path]:
    """Two videos per split, clean data; ``folds`` replaces the fold lists."""
    vids = ["t1", "t2", "v1", "v2", "s1", "s2"]
    words = {v: (np.array([[0.0, 1.0], [1.0, 2.0]]), np.array([[b"good"], [b"movie"]])) for v in vids}
    frames = {v: (np.array([[0.0, 1.0], [1.0, 2.0]]), np.arange(6, dtype=np.float32).reshape(2, 3)) for v in vids}
    labels = {v: (np.array([[0.0, 2.0]]), np.array([[1.0]], np.float32)) for v in vids}
    paths = {
        "words": write_csd(tmp_path / "w.csd", words), "visual": write_csd(tmp_path / "v.csd", frames),
        "acoustic": write_csd(tmp_path / "a.csd", frames), "labels": write_csd(tmp_path / "l.csd", labels),
        "folds": tmp_path / "folds.json",
    }
    folds = folds or {"train": ["t1", "t2"], "valid": ["v1", "v2"], "test": ["s1", "s2"]}
    paths["folds"].write_text(json.dumps({"mosi": folds}))
    return paths


def build(paths: dict[str, Path], **kw):
    return build_csd_dataset(labels=paths["labels"], words=paths["words"], visual=paths["visual"],
                             acoustic=paths["acoustic"], folds=paths["folds"], **kw)


def test_sequence_without_intervals(tmp_path: Path) -> None:
    paths = synthetic_set(tmp_path)
    with h5py.File(paths["visual"], "a") as f:
        del f["sequence/data/t1/intervals"]
    ds = build(paths)  # one entry without intervals: skipped, reported, its segment dropped
    assert ds.split_sizes() == {"train": 1, "valid": 2, "test": 2}
    assert ds.meta["dropped"]["missing_modality"] == 1
    assert ds.meta["skipped_entries"] == {"visual": {"t1": "no 'intervals' dataset"}}
    with h5py.File(paths["visual"], "a") as f:
        for vid in ("t2", "v1", "v2", "s1", "s2"):
            del f[f"sequence/data/{vid}/intervals"]
    with pytest.raises(DataFormatError, match="no valid entry") as err:
        build(paths)
    assert str(paths["visual"]) in str(err.value)


def test_feature_dims_differ_between_videos(tmp_path: Path) -> None:
    paths = synthetic_set(tmp_path)
    with h5py.File(paths["acoustic"], "a") as f:
        del f["sequence/data/v1/features"]
        f["sequence/data/v1"].create_dataset("features", data=np.ones((2, 5), np.float32))
    with pytest.raises(DataFormatError, match=r"5 dimensions but entry 's1' has 3") as err:
        build(paths)
    assert str(paths["acoustic"]) in str(err.value)


def test_ids_missing_from_folds_are_counted(tmp_path: Path) -> None:
    paths = synthetic_set(tmp_path, folds={"train": ["t1"], "dev": ["v1", "v2"], "test": ["s1", "s2"]})
    ds = build(paths)
    assert ds.split_sizes() == {"train": 1, "valid": 2, "test": 2}
    assert ds.meta["dropped"]["no_fold"] == 1


def test_empty_split_is_an_error(tmp_path: Path) -> None:
    paths = synthetic_set(tmp_path, folds={"train": ["t1", "t2"], "valid": ["v1", "v2"], "test": ["elsewhere"]})
    with pytest.raises(DataFormatError, match=r"split 'test' has no segment") as err:
        build(paths)
    assert str(paths["labels"]) in str(err.value) and "no_fold" in str(err.value)


def test_wrong_file_roles(tmp_path: Path) -> None:
    paths = synthetic_set(tmp_path)
    with pytest.raises(DataFormatError, match="byte strings"):
        build_csd_dataset(labels=paths["labels"], words=paths["visual"], folds=paths["folds"])
    with pytest.raises(DataFormatError, match="must be numeric"):
        build_csd_dataset(labels=paths["labels"], words=paths["words"], visual=paths["words"], folds=paths["folds"])
    with pytest.raises(ConfigError):
        build_csd_dataset(labels=paths["labels"], acoustic=paths["acoustic"], folds=paths["folds"])


def test_corrupt_chunk_inside_a_valid_file(tmp_path: Path) -> None:
    paths = synthetic_set(tmp_path)
    with h5py.File(paths["acoustic"], "r") as f:
        info = f["sequence/data/s1/features"].id.get_chunk_info(0)  # a gzip-compressed chunk
    raw = bytearray(paths["acoustic"].read_bytes())
    raw[info.byte_offset: info.byte_offset + info.size] = b"\xff" * info.size
    paths["acoustic"].write_bytes(bytes(raw))
    with pytest.raises(DataFormatError, match=r"cannot read entry 's1'") as err:
        build(paths)
    assert str(paths["acoustic"]) in str(err.value)
