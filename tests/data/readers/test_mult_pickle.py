"""MulT / MultiBench pickles (DATA.md §7): left padding, empty samples, aligned and noalign, humor."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from misalatch.data.readers.mult_pickle import read_mult_pickle
from misalatch.data.synthetic.files import write_mult_pickle
from misalatch.errors import DataFormatError


def _raw(path):
    with open(path, "rb") as fh:  # our own file
        return pickle.load(fh)


def _real_steps(x: np.ndarray) -> np.ndarray:
    """The steps after the left padding of one (T, d) sample."""
    nz = np.flatnonzero(np.any(np.nan_to_num(x, neginf=1.0) != 0, axis=1))
    return x[nz[0]:]


@pytest.mark.parametrize("aligned", [True, False])
def test_read_mult(tmp_path, aligned):
    path = write_mult_pickle(tmp_path / ("mosi_data.pkl" if aligned else "mosi_data_noalign.pkl"), aligned=aligned)
    raw = _raw(path)
    ds = read_mult_pickle(path)
    assert ds.name == "mosi" and ds.task == "regression"
    assert ds.alignment == ("word" if aligned else "none")
    assert ds.split_sizes() == {"train": 4, "valid": 3, "test": 4}  # the all-zero train sample is gone
    assert ds.meta["dropped"] == {"empty": 1} and ds.meta["dropped_by_split"] == {"train": {"empty": 1}}
    assert ds.meta["nonfinite"] == {"acoustic": 1}
    assert ds.text_vector_dim == 8 and ds.acoustic_dim == 5 and ds.visual_dim == 6
    assert not ds.has_words and ds.splits["train"][0].text_ids is None
    for split, segs in ds.splits.items():
        d = raw[split]
        for i, seg in enumerate(segs):
            text = _real_steps(d["text"][i])
            np.testing.assert_array_equal(seg.text_vectors, text)
            assert seg.id == f"{split}vid{i // 2}_{i % 2}"
            assert seg.label == pytest.approx(float(d["labels"][i].reshape(-1)[0]))
            if aligned:
                assert seg.visual.shape[0] == seg.acoustic.shape[0] == text.shape[0]
            else:
                assert seg.visual.shape == _real_steps(d["vision"][i]).shape
                assert seg.acoustic.shape == _real_steps(d["audio"][i]).shape
    assert ds.splits["train"][0].acoustic[-1, 0] == 0.0  # -inf -> 0


def test_humor_is_binary_classification(tmp_path):
    path = write_mult_pickle(tmp_path / "humor.pkl", classification=True)
    raw = _raw(path)
    ds = read_mult_pickle(path)
    assert ds.name == "ur_funny" and ds.task == "classification" and ds.num_classes == 2
    labels = [seg.label for seg in ds.splits["test"]]
    assert labels == [int(v) for v in raw["test"]["labels"].reshape(-1)]
    assert all(type(v) is int for v in labels)
    # a MOSI-style file can be forced to classification only if its labels are 0/1
    with pytest.raises(DataFormatError, match="classification label must be 0 or 1"):
        read_mult_pickle(write_mult_pickle(tmp_path / "mosi_data.pkl"), task="classification")


@pytest.mark.parametrize("change, pattern", [
    (lambda r: r.pop("test"), r"expected a MulT dict with splits"),
    (lambda r: r["valid"].pop("labels"), r"split 'valid': expected keys"),
    (lambda r: r["train"].update(labels=r["train"]["labels"][:-2]), r"split 'train': field 'labels' has shape \(3, 1, 1\)"),
    (lambda r: r["train"].update(audio=r["train"]["audio"][:-1]), r"key 'audio' has 4 samples but 'text' has 5"),
    (lambda r: r["test"].update({k: v[:0] for k, v in r["test"].items()}), r"split 'test': split is empty"),
    (lambda r: r["valid"].update(vision=r["valid"]["vision"][:, :, 0]), r"key 'vision' must be an array \(N, T, d\)"),
])
def test_bad_input(tmp_path, change, pattern):
    path = write_mult_pickle(tmp_path / "mosei_senti_data.pkl")
    raw = _raw(path)
    change(raw)
    path.write_bytes(pickle.dumps(raw, protocol=4))
    with pytest.raises(DataFormatError, match=pattern) as err:
        read_mult_pickle(path)
    assert str(path) in str(err.value)


def test_all_samples_empty_is_an_error(tmp_path):
    path = write_mult_pickle(tmp_path / "mosi_data.pkl")
    raw = _raw(path)
    raw["valid"]["text"][:] = 0
    path.write_bytes(pickle.dumps(raw, protocol=4))
    with pytest.raises(DataFormatError, match="split 'valid' is empty"):
        read_mult_pickle(path)
