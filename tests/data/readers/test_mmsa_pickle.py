"""MMSA aligned_50 / unaligned_50 pickles (DATA.md §5) on tiny files in the real layout."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest

from misalatch.data.readers.mmsa_pickle import read_mmsa_pickle
from misalatch.data.safe_pickle import sha256_file
from misalatch.data.synthetic.files import write_mmsa_pickle
from misalatch.errors import DataFormatError, UnsafePickleError


def _raw(path):
    with open(path, "rb") as fh:  # our own file: plain pickle is fine here
        return pickle.load(fh)


@pytest.mark.parametrize("aligned", [True, False])
def test_read_mmsa(tmp_path, aligned):
    path = write_mmsa_pickle(tmp_path / "MOSI" / "Processed" / ("aligned_50.pkl" if aligned else "unaligned_50.pkl"),
                             aligned=aligned)
    raw = _raw(path)
    ds = read_mmsa_pickle(path)
    assert ds.name == "mosi" and ds.task == "regression" and ds.num_classes == 1
    assert ds.alignment == ("token" if aligned else "none")
    assert ds.split_sizes() == {"train": 5, "valid": 3, "test": 4}
    assert ds.visual_dim == 20 and ds.acoustic_dim == 5
    for split, segs in ds.splits.items():
        d = raw[split]
        for i, seg in enumerate(segs):
            length = int(d["text_bert"][i, 1].sum())
            assert seg.id == d["id"][i] and "$_$" in seg.id
            np.testing.assert_array_equal(seg.bert_ids, d["text_bert"][i, 0, :length].astype(np.int64))
            assert seg.bert_ids[0] == 101 and seg.bert_ids[-1] == 102 and seg.bert_ids.dtype == np.int64
            assert seg.wp2word.tolist() == [-1, *range(length - 2), -1]
            assert seg.words == str(d["raw_text"][i]).split()
            la = length if aligned else int(d["audio_lengths"][i])
            lv = length if aligned else int(d["vision_lengths"][i])
            assert seg.acoustic.shape == (la, 5) and seg.visual.shape == (lv, 20)
            assert seg.visual.dtype == np.float32
            assert np.isfinite(seg.acoustic).all() and np.isfinite(seg.visual).all()
            if not (split == "train" and i in (0, 1)):
                np.testing.assert_array_equal(seg.acoustic, d["audio"][i, :la])
                assert seg.label == pytest.approx(float(d["regression_labels"][i]))
    train = ds.splits["train"]
    assert train[0].acoustic[0, 0] == 0.0  # -inf -> 0
    assert train[1].visual[0, 1] == 0.0  # NaN -> 0
    assert ds.meta["nonfinite"] == {"acoustic": 1, "visual": 1}  # a NaN label is an error, not a 0
    assert ds.meta["dropped"] == {}
    assert ds.meta["sources"] == [{"path": str(path), "sha256": sha256_file(path)}]


def test_nonzero_padding_is_counted(tmp_path, caplog):
    path = write_mmsa_pickle(tmp_path / "a.pkl", plant_quirks=False)
    raw = _raw(path)
    length = int(raw["valid"]["text_bert"][0, 1].sum())
    assert length < raw["valid"]["audio"].shape[1]
    raw["valid"]["audio"][0, -1] = 1.0
    path.write_bytes(pickle.dumps(raw, protocol=4))
    logger = logging.getLogger("misalatch.data.readers.mmsa_pickle")
    logger.addHandler(caplog.handler)  # the CLI's logging set-up may stop propagation to the root
    try:
        ds = read_mmsa_pickle(path, dataset="mosei")
    finally:
        logger.removeHandler(caplog.handler)
    assert ds.name == "mosei" and ds.meta["nonzero_padding"] == {"acoustic": 1}
    assert "beyond their length" in caplog.text


def _rewrite(path, change):
    raw = _raw(path)
    change(raw)
    path.write_bytes(pickle.dumps(raw, protocol=4))
    return path


@pytest.mark.parametrize("change, pattern", [
    (lambda r: r.pop("valid"), r"expected an MMSA dict with splits"),
    (lambda r: r["test"].pop("vision"), r"split 'test': missing key\(s\) \['vision'\]"),
    (lambda r: r["train"].update(regression_labels=r["train"]["regression_labels"][:-1]),
     r"split 'train': key 'regression_labels' has 4 samples but 'text_bert' has 5"),
    (lambda r: r["valid"].update({k: v[:0] for k, v in r["valid"].items()}), r"split 'valid': split is empty"),
    (lambda r: r["train"].update(text_bert=r["train"]["text_bert"][:, 0]), r"'text_bert' must have shape \(N, 3, L\)"),
    (lambda r: r["train"]["text_bert"].__setitem__((0, 1, 0), 0), r"sample 0: attention_mask is not ones followed"),
])
def test_bad_input(tmp_path, change, pattern):
    path = _rewrite(write_mmsa_pickle(tmp_path / "aligned_50.pkl"), change)
    with pytest.raises(DataFormatError, match=pattern) as err:
        read_mmsa_pickle(path)
    assert str(path) in str(err.value)


def test_wrong_structure_and_unsafe_file(tmp_path):
    path = tmp_path / "aligned_50.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataFormatError, match="expected an MMSA dict.*list of length 3"):
        read_mmsa_pickle(path)
    path.write_bytes(b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x04true\x85R.")
    with pytest.raises(UnsafePickleError, match="os.system"):
        read_mmsa_pickle(path)


def test_unaligned_length_beyond_steps(tmp_path):
    path = _rewrite(write_mmsa_pickle(tmp_path / "unaligned_50.pkl", aligned=False),
                    lambda r: r["test"]["audio_lengths"].__setitem__(1, 10_000))
    with pytest.raises(DataFormatError, match=r"split 'test' sample 1: lengths audio 10000"):
        read_mmsa_pickle(path)
