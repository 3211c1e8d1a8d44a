"""The built-in SYNTHETIC MOSI-shaped dataset: shape, determinism, statistics, and that fusion matters."""

from __future__ import annotations


import numpy as np
import pytest

from misalatch.data.synthetic import mosi as S
from misalatch.data.canonical import SPLITS
from misalatch.data.synthetic import make_synthetic_mosi
from misalatch.errors import ConfigError


@pytest.fixture(scope="module")
def default_data():
    return make_synthetic_mosi()


@pytest.fixture(scope="module")
def big_train():
    """A few thousand training samples for distribution checks."""
    return make_synthetic_mosi(n_train=3000, n_valid=1, n_test=600, seed=7)


def _all(ds):
    return [seg for split in SPLITS for seg in ds.splits[split]]


def test_default_shape_and_flags(default_data):
    ds = default_data
    assert ds.name == "synthetic-mosi" and ds.synthetic is True
    assert ds.task == "regression" and ds.alignment == "word"
    assert ds.split_sizes() == {"train": 600, "valid": 120, "test": 200}
    assert ds.acoustic_dim == 74 and ds.visual_dim == 47
    assert ds.present_modalities() == "tav"
    assert "SYNTHETIC" in ds.meta["description"]
    assert ds.meta["options"] == {"n_train": 600, "n_valid": 120, "n_test": 200, "seed": 0,
                                  "visual_dim": 47, "acoustic_dim": 74, "sarcasm_rate": 0.08}
    ds.validate("synthetic")
    segs = _all(ds)
    assert [s.id for s in segs] == [f"synth_{i:05d}" for i in range(920)]
    for seg in segs:
        assert seg.visual.dtype == np.float32 and seg.acoustic.dtype == np.float32
        assert seg.visual.shape[0] == seg.acoustic.shape[0] == len(seg.words) >= 1
        assert all(w == w.lower() and w.isalpha() for w in seg.words)
        assert np.isfinite(seg.visual).all() and np.isfinite(seg.acoustic).all()


def test_bit_identical_for_same_seed_and_different_for_other_seed(default_data):
    again = make_synthetic_mosi()
    for a, b in zip(_all(default_data), _all(again)):
        assert (a.id, a.label, a.words) == (b.id, b.label, b.words)
        assert a.visual.tobytes() == b.visual.tobytes() and a.acoustic.tobytes() == b.acoustic.tobytes()
    other = make_synthetic_mosi(seed=1)
    assert [s.words for s in _all(other)] != [s.words for s in _all(default_data)]
    assert [s.label for s in _all(other)] != [s.label for s in _all(default_data)]


def test_splits_are_independent_streams():
    small = make_synthetic_mosi(n_train=50, n_valid=10, n_test=20, seed=3)
    large = make_synthetic_mosi(n_train=80, n_valid=10, n_test=20, seed=3)
    # a larger train split extends the smaller one; valid/test content does not depend on n_train
    for a, b in zip(small.splits["train"], large.splits["train"]):
        assert a.words == b.words and a.label == b.label and np.array_equal(a.visual, b.visual)
    for split in ("valid", "test"):
        for a, b in zip(small.splits[split], large.splits[split]):
            assert a.words == b.words and np.array_equal(a.acoustic, b.acoustic)


def test_lengths_follow_mosi(big_train):
    lengths = np.array([len(s.words) for s in big_train.splits["train"]])
    assert 11.8 <= lengths.mean() <= 13.4  # MOSI: 12.6
    assert 9 <= np.median(lengths) <= 11  # MOSI: 10
    assert 25 <= np.percentile(lengths, 95) <= 31  # MOSI: 28
    assert lengths.min() >= 1 and lengths.max() <= 114
    assert (lengths <= 3).any()  # very short segments exist, as in MOSI


def test_labels_on_the_third_grid(big_train):
    labels = np.array([s.label for s in _all(big_train)])
    assert labels.min() >= -3.0 and labels.max() <= 3.0
    np.testing.assert_allclose(labels * 3, np.round(labels * 3), atol=1e-9)
    assert len(np.unique(np.round(labels * 3))) >= 15  # the grid is used, not just integers
    assert -0.3 < labels.mean() < 0.4 and 1.0 < labels.std() < 1.8  # MOSI: mean 0.07, spread over [-3, 3]
    assert (labels > 0).mean() > 0.3 and (labels < 0).mean() > 0.3


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="n_valid"):
        make_synthetic_mosi(n_valid=0)
    with pytest.raises(ConfigError, match="visual_dim"):
        make_synthetic_mosi(visual_dim=2)
    with pytest.raises(ConfigError, match="sarcasm_rate"):
        make_synthetic_mosi(sarcasm_rate=1.5)
    small = make_synthetic_mosi(n_train=5, n_valid=2, n_test=2, visual_dim=20, acoustic_dim=5)  # MMSA's MOSI dims
    assert (small.visual_dim, small.acoustic_dim) == (20, 5)


# ---- the label signal: text lexicon and non-verbal cue --------------------------------------------
_POLARITY = {w: lv for lv, ws in S.POSITIVE.items() for w in ws} | {w: -lv for lv, ws in S.NEGATIVE.items() for w in ws}


def _text_score(words: list[str]) -> float:
    """A hand-written lexicon reading of the words (negation flips, intensifier strengthens)."""
    values = []
    for i, w in enumerate(words):
        if w in _POLARITY:
            v = _POLARITY[w]
            if i and words[i - 1] in S.NEGATIONS:
                v = -np.sign(v)
            elif i and words[i - 1] in S.INTENSIFIERS:
                v = np.sign(v) * min(3, abs(v) + 1)
            values.append(v)
    return float(np.mean(values)) if values else 0.0


def _nonverbal_cue(seg) -> float:
    """Mean of the documented valence dims (acoustic + visual) over the segment."""
    a = seg.acoustic[:, list(S.ACOUSTIC_VALENCE_DIMS)].mean(1)
    v = seg.visual[:, list(S.VISUAL_VALENCE_DIMS)].mean(1)
    return float((a + v).mean())


def test_sarcastic_samples_contradict_the_words(big_train):
    segs = big_train.splits["train"]
    sarcastic = set(big_train.meta["sarcastic_ids"])
    mask = np.array([s.id in sarcastic for s in segs])
    assert 0.05 < mask.mean() < 0.11  # default rate 0.08
    text = np.array([_text_score(s.words) for s in segs])
    cue = np.array([_nonverbal_cue(s) for s in segs])
    labels = np.array([s.label for s in segs])
    # there: the words are positive, face/voice negative, and the label follows face/voice
    assert (text[mask] > 0).all()
    assert (labels[mask] < 0).all()
    assert cue[mask].mean() < -0.4
    # elsewhere: words and non-verbal cue agree with the label
    pos_text = ~mask & (text > 0)
    assert cue[pos_text].mean() > 0.4
    assert np.corrcoef(text[~mask], labels[~mask])[0, 1] > 0.85
    assert np.corrcoef(cue[~mask], labels[~mask])[0, 1] > 0.4


def test_no_sarcasm_when_rate_is_zero():
    ds = make_synthetic_mosi(n_train=200, n_valid=5, n_test=5, sarcasm_rate=0.0)
    assert ds.meta["sarcastic_ids"] == []


def test_cue_survives_per_segment_z_normalisation(big_train):
    """MISA z-normalises A/V per segment (DATA.md §3.5): the word-level pattern must remain."""
    opinion = set(_POLARITY) | set(S.NEUTRAL)
    at_opinion, labels = [], []
    for s in big_train.splits["train"]:
        positions = [i for i, w in enumerate(s.words) if w in opinion]
        if len(s.words) < 4 or not positions:
            continue
        x = s.visual[:, list(S.VISUAL_VALENCE_DIMS)].mean(1)
        z = (x - x.mean()) / (x.std() + 1e-6)
        at_opinion.append(z[positions].mean())  # above the segment's mean when positive
        labels.append(s.label)
    assert np.corrcoef(at_opinion, labels)[0, 1] > 0.4


def _ridge_predict(x_train, y_train, x_test, lam=1.0):
    x_train = np.c_[x_train, np.ones(len(x_train))]
    x_test = np.c_[x_test, np.ones(len(x_test))]
    w = np.linalg.solve(x_train.T @ x_train + lam * np.eye(x_train.shape[1]), x_train.T @ y_train)
    return x_test @ w


def test_fusion_beats_text_alone(big_train):
    """A linear model on bag-of-words + A/V summaries beats bag-of-words alone on held-out data."""
    vocab = {w: i for i, w in enumerate(sorted({w for s in big_train.splits["train"] for w in s.words}))}

    def features(segs):
        bow = np.zeros((len(segs), len(vocab)))
        av = []
        for i, s in enumerate(segs):
            for w in s.words:
                if w in vocab:
                    bow[i, vocab[w]] += 1
            av.append(np.r_[s.acoustic.max(0)[:5], s.acoustic.min(0)[:5], s.acoustic.mean(0)[:5],
                            s.visual.max(0)[:5], s.visual.min(0)[:5], s.visual.mean(0)[:5]])
        return bow, np.array(av), np.array([s.label for s in segs])

    bow_tr, av_tr, y_tr = features(big_train.splits["train"])
    bow_te, av_te, y_te = features(big_train.splits["test"])
    text_only = np.abs(_ridge_predict(bow_tr, y_tr, bow_te) - y_te).mean()
    fused = np.abs(_ridge_predict(np.c_[bow_tr, av_tr], y_tr, np.c_[bow_te, av_te]) - y_te).mean()
    assert fused < 0.9 * text_only
