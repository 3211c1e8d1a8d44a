"""UR-FUNNY V1/V2 (DATA.md §6, §13.5): the real label and fold pickles, and tiny release folders."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest

from misalatch.data.readers.urfunny import TEXT_ID_OFFSET, read_urfunny, read_urfunny_labels
from misalatch.data.synthetic.files import write_urfunny
from misalatch.errors import DataFormatError

REAL = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "urfunny"


def _real(name: str) -> Path:
    path = REAL / name
    if not path.is_file():
        pytest.skip(f"real UR-FUNNY file not found: {path}")
    return path


def test_real_v1_labels_and_folds():
    out = read_urfunny_labels(_real("urfunny_v1_humor_label_sdk.pkl"), _real("urfunny_v1_data_folds.pkl"))
    assert {k: len(v) for k, v in out.items()} == {"train": 10598, "valid": 2626, "test": 3290, "unassigned": 92}
    assert all(v in (0, 1) for split in out.values() for v in split.values())
    assert sum(len(v) for v in out.values()) == 16606
    # humour rates 50.1 / 50.0 / 49.8 % (DATA.md §13.5)
    rates = {s: round(100 * sum(out[s].values()) / len(out[s]), 1) for s in ("train", "valid", "test")}
    assert rates == {"train": 50.1, "valid": 50.0, "test": 49.8}
    # the same as the CSV conversion, id by id
    split_name = {"train": "train", "dev": "valid", "test": "test", "": "unassigned"}
    from_csv: dict[str, dict[str, int]] = {k: {} for k in out}
    with open(_real("urfunny_v1_labels_folds.csv"), newline="") as fh:
        for row in csv.DictReader(fh):
            from_csv[split_name[row["split"]]][row["id"]] = int(row["humor"])
    assert from_csv == out


def test_real_v2_labels_without_folds():
    out = read_urfunny_labels(_real("urfunny_v2_humor_label_sdk.pkl"))
    assert len(out["unassigned"]) == 10166 and sum(out["unassigned"].values()) == 5083
    assert not out["train"] and not out["valid"] and not out["test"]


def _load(path):
    with open(path, "rb") as fh:  # our own file
        return pickle.load(fh)


def test_v1_release_folder(tmp_path):
    folder = write_urfunny(tmp_path / "ted_humor_sdk_v1", version=1, prefix="urfunny_v1_")
    folds = _load(folder / "urfunny_v1_data_folds.pkl")
    indexes = _load(folder / "urfunny_v1_word_embedding_indexes_sdk.pkl")
    covarep = _load(folder / "urfunny_v1_covarep_features_sdk.pkl")
    vectors = np.asarray(_load(folder / "urfunny_v1_word_embedding_list.pkl"), dtype=np.float32)
    ds = read_urfunny(folder)
    assert ds.name == "ur_funny" and ds.task == "classification" and ds.num_classes == 2
    assert ds.meta["options"]["version"] == 1
    assert ds.split_sizes() == {"train": 6, "valid": 3, "test": 4}
    assert [s.id for s in ds.splits["valid"]] == [str(i) for i in folds["dev"]]
    assert ds.meta["dropped"] == {"no_fold": 2}
    assert ds.meta["nonfinite"] == {"acoustic": 2}
    assert not ds.has_words and ds.vocab is None
    assert ds.visual_dim == 7 and ds.acoustic_dim == 6
    # text_ids keep <unk> 0 / <pad> 1 free; embedding[text_ids] is the release's vector of each word
    assert ds.embedding.shape == (len(vectors) + TEXT_ID_OFFSET, 5)
    assert not ds.embedding[:TEXT_ID_OFFSET].any()
    for seg in ds.splits["test"]:
        idx = indexes[int(seg.id)]["punchline_embedding_indexes"]
        np.testing.assert_array_equal(seg.text_ids, np.array(idx) + TEXT_ID_OFFSET)
        np.testing.assert_array_equal(ds.embedding[seg.text_ids], vectors[idx])
        assert seg.label in (0, 1) and type(seg.label) is int
    # z-normalised per segment and dimension; the one-word segment becomes zeros
    one_word = ds.splits["train"][0]
    assert one_word.acoustic.shape == (1, 6) and not one_word.acoustic.any() and not one_word.visual.any()
    seg = ds.splits["train"][2]
    np.testing.assert_allclose(seg.acoustic.mean(axis=0), 0, atol=1e-5)
    raw = covarep[int(seg.id)]["punchline_features"]
    expected = (raw - raw.mean(0)) / (raw.std(0) + 1e-6)
    np.testing.assert_allclose(seg.acoustic, expected, rtol=1e-5, atol=1e-5)
    # without normalisation only the non-finite values change
    raw_ds = read_urfunny(folder, version=1, normalize=False)
    nf = raw_ds.splits["train"][1].acoustic
    assert nf[0, 0] == 0.0 and nf[-1, -1] == 0.0 and np.isfinite(nf).all()


def test_v2_release_folder(tmp_path):
    folder = write_urfunny(tmp_path / "v2", version=2)
    lang = _load(folder / "language_sdk.pkl")
    ds = read_urfunny(folder)  # version detected from language_sdk.pkl
    assert ds.meta["options"]["version"] == 2
    assert ds.split_sizes() == {"train": 6, "valid": 3, "test": 3}
    assert ds.meta["dropped"] == {"length_mismatch": 1, "no_fold": 2}
    assert ds.meta["dropped_by_split"] == {"test": {"length_mismatch": 1}}
    for seg in ds.splits["train"]:
        assert seg.words == lang[int(seg.id)]["punchline_sentence"].split()
        assert len(seg.words) == len(seg.text_ids) == seg.visual.shape[0]


@pytest.mark.parametrize("file, value, pattern", [
    ("humor_label_sdk.pkl", {0: 2.0}, r"humor_label_sdk.pkl: id 0: field 'label': humour label must be 0 or 1"),
    ("data_folds.pkl", {"train": [1, 2], "dev": [2], "test": [3]}, r"data_folds.pkl: id 2 is in both fold"),
    ("data_folds.pkl", {"train": [1], "dev": [], "test": [3]}, r"data_folds.pkl: fold 'dev' is empty"),
    ("data_folds.pkl", [1, 2, 3], r"data_folds.pkl: expected \{'train', 'dev', 'test'\} id lists"),
    ("covarep_features_sdk.pkl", [], r"covarep_features_sdk.pkl: expected a dict \{id: features\}"),
])
def test_bad_input(tmp_path, file, value, pattern):
    folder = write_urfunny(tmp_path / "v1", version=1)
    (folder / file).write_bytes(pickle.dumps(value))
    with pytest.raises(DataFormatError, match=pattern):
        read_urfunny(folder)


def test_missing_features_and_files(tmp_path):
    folder = write_urfunny(tmp_path / "v1", version=1)
    covarep = _load(folder / "covarep_features_sdk.pkl")
    first = _load(folder / "data_folds.pkl")["train"][2]
    del covarep[first]
    (folder / "covarep_features_sdk.pkl").write_bytes(pickle.dumps(covarep))
    ds = read_urfunny(folder)
    assert ds.meta["dropped"]["missing_modality"] == 1
    (folder / "openface_features_sdk.pkl").unlink()
    with pytest.raises(DataFormatError, match="openface_features_sdk.pkl not found"):
        read_urfunny(folder)
    with pytest.raises(DataFormatError, match="not a UR-FUNNY release folder"):
        read_urfunny(tmp_path)
    labels = tmp_path / "labels.pkl"
    labels.write_bytes(pickle.dumps({5: 1.0}))
    folds = tmp_path / "folds.pkl"
    folds.write_bytes(pickle.dumps({"train": [5], "dev": [6], "test": [7]}))
    with pytest.raises(DataFormatError, match=r"folds.pkl: 1 ids of fold 'valid' have no label"):
        read_urfunny_labels(labels, folds)
