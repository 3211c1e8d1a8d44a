"""Original MISA train/dev/test pickles (DATA.md §4) with and without embedding_and_mapping.pt."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from misalatch.data.readers.misa_pickle import read_misa_pickles
from misalatch.data.safe_pickle import load_embedding_and_mapping
from misalatch.data.synthetic.files import write_misa_pickles
from misalatch.errors import DataFormatError, UnsafePickleError

FILES = {"train": "train.pkl", "valid": "dev.pkl", "test": "test.pkl"}


def _raw(folder, split):
    with open(folder / FILES[split], "rb") as fh:  # our own file
        return pickle.load(fh)


def test_mosi_layout_with_embedding(tmp_path):
    folder = write_misa_pickles(tmp_path / "MOSI")
    ds = read_misa_pickles(folder)
    assert ds.name == "mosi" and ds.task == "regression" and ds.alignment == "word"
    assert ds.split_sizes() == {"train": 5, "valid": 3, "test": 4}
    assert ds.visual_dim == 7 and ds.acoustic_dim == 6
    emb, word2id = load_embedding_and_mapping(folder / "embedding_and_mapping.pt")
    np.testing.assert_array_equal(ds.embedding, emb)
    assert ds.vocab[:2] == ["<unk>", "<pad>"] and all(ds.vocab[i] == w for w, i in word2id.items())
    for split in ds.splits:
        for seg, ((ids, visual, acoustic, words), label, seg_id) in zip(ds.splits[split], _raw(folder, split)):
            assert seg.id == seg_id and "[" in seg.id
            np.testing.assert_array_equal(seg.text_ids, ids)
            assert seg.text_ids.dtype == np.int64
            assert seg.words == words and [ds.vocab[i] for i in seg.text_ids] == words
            np.testing.assert_allclose(seg.acoustic, acoustic.astype(np.float32))
            assert seg.label == pytest.approx(float(label[0, 0]))
    assert ds.splits["train"][0].visual[0, 0] == 0.0 and ds.meta["nonfinite"] == {"visual": 1}
    assert len(ds.meta["sources"]) == 4 and ds.meta["options"]["vocabulary"] == "embedding_and_mapping.pt"


def test_ur_funny_layout_without_embedding(tmp_path):
    folder = write_misa_pickles(tmp_path / "UR_FUNNY", layout="ur_funny", with_embedding=False)
    ds = read_misa_pickles(folder / "train.pkl")  # a file in the folder works too
    assert ds.name == "ur_funny" and ds.task == "classification" and ds.num_classes == 2
    assert [s.id for s in ds.splits["valid"]] == ["valid_0", "valid_1", "valid_2"]
    assert [s.label for s in ds.splits["train"]] == [0, 1, 0, 1, 0]
    assert ds.embedding is None and ds.vocab[:2] == ["<unk>", "<pad>"]
    for segs in ds.splits.values():  # the vocabulary rebuilt from the pickles' (id, word) pairs
        for seg in segs:
            assert [ds.vocab[i] for i in seg.text_ids] == seg.words
    assert ds.meta["options"]["vocabulary"] == "pickles"


def _rewrite(folder, split, change):
    samples = _raw(folder, split)
    samples = change(samples)
    (folder / FILES[split]).write_bytes(pickle.dumps(samples, protocol=3))


@pytest.mark.parametrize("split, change, pattern", [
    ("train", lambda s: {"not": "a list"}, r"train.pkl: expected a list of samples"),
    ("valid", lambda s: [], r"dev.pkl: split 'valid' is empty"),
    ("test", lambda s: [((s[0][0][0], s[0][0][1][:-1], s[0][0][2], s[0][0][3]), s[0][1], s[0][2])] + s[1:],
     r"test.pkl: sample 0: word-aligned fields differ in length"),
    ("train", lambda s: [(s[0][0], s[0][1], "id", "extra")] + s[1:], r"train.pkl: sample 0: expected \(\(word_ids"),
    ("valid", lambda s: s[:1] + [(s[1][0], s[1][1])], r"dev.pkl: sample 1: mixes samples with and without"),
])
def test_bad_input(tmp_path, split, change, pattern):
    folder = write_misa_pickles(tmp_path / "MOSI", with_embedding=False)
    _rewrite(folder, split, change)
    with pytest.raises(DataFormatError, match=pattern):
        read_misa_pickles(folder)


def test_missing_files_and_unsafe_embedding(tmp_path):
    folder = write_misa_pickles(tmp_path / "MOSEI", with_embedding=False)
    (folder / "dev.pkl").unlink()
    with pytest.raises(DataFormatError, match=r"no dev.pkl or valid.pkl for split 'valid'"):
        read_misa_pickles(folder)
    folder = write_misa_pickles(tmp_path / "MOSI", with_embedding=False)
    marker = tmp_path / "marker"
    cmd = f"touch {marker}".encode()
    evil = b"\x80\x02cposix\nsystem\nX" + len(cmd).to_bytes(4, "little") + cmd + b"\x85R."
    (folder / "embedding_and_mapping.pt").write_bytes(evil)
    with pytest.raises(UnsafePickleError, match=r"embedding_and_mapping.pt.*GLOBAL posix.system"):
        read_misa_pickles(folder)
    assert not marker.exists()
