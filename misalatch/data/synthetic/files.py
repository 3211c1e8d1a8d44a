"""Tiny files in the exact layouts of the real third-party releases, for tests and demos.

Each writer produces a small, seeded file (or folder) in the layout a reader in
``misalatch.data.readers`` expects — MMSA, MulT/MultiBench, original MISA and UR-FUNNY V1/V2 —
with the quirks the readers must handle planted on purpose: −inf in audio, a NaN in visual, a NaN
label, an all-zero (empty) sample, a V2 sentence whose word count differs from its feature rows.
The numbers are random: anything computed from them is synthetic and says so.
"""

from __future__ import annotations

import contextlib
import csv
import os
import pickle
import sys
import types
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import numpy as np

WORDS = ("the", "movie", "was", "really", "good", "bad", "i", "liked", "it", "not", "sp", "funny")


def _dump(obj: object, path: Path, protocol: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)
    return path


def write_mmsa_pickle(
    path: str | os.PathLike[str],
    *,
    aligned: bool = True,
    sizes: tuple[int, int, int] = (5, 3, 4),
    max_len: int = 12,
    d_a: int = 5,
    d_v: int = 20,
    d_bert: int = 8,
    seed: int = 0,
    plant_quirks: bool = True,
) -> Path:
    """An MMSA ``aligned_50``/``unaligned_50``-style pickle (right-padded, ``text_bert`` (N, 3, L)).

    With ``plant_quirks``: train sample 0 has −inf in audio and train sample 1 a NaN in vision (a NaN
    label is an error of the reader, not a quirk to plant: see ``CanonicalDataset.validate``).
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    t_a, t_v = (max_len, max_len) if aligned else (2 * max_len, 3 * max_len)
    for split, n in zip(("train", "valid", "test"), sizes):
        text_bert = np.zeros((n, 3, max_len), np.float32)
        audio = np.zeros((n, t_a, d_a), np.float32)
        vision = np.zeros((n, t_v, d_v), np.float32)
        la, lv = np.zeros(n, np.int64), np.zeros(n, np.int64)
        raw_text, ids = [], []
        for i in range(n):
            length = int(rng.integers(3, max_len + 1))
            n_words = length - 2
            text_bert[i, 0, :length] = [101, *rng.integers(1000, 2000, n_words), 102]
            text_bert[i, 1, :length] = 1
            raw_text.append(" ".join(rng.choice(WORDS[:10], n_words)))
            ids.append(f"{split}vid{i // 2}$_${i % 2 + 1}")
            la[i] = length if aligned else int(rng.integers(1, t_a + 1))
            lv[i] = length if aligned else int(rng.integers(1, t_v + 1))
            audio[i, : la[i]] = rng.standard_normal((la[i], d_a))
            vision[i, : lv[i]] = rng.standard_normal((lv[i], d_v))
        labels = rng.uniform(-3, 3, n).astype(np.float32)
        if plant_quirks and split == "train":
            audio[0, 0, 0] = -np.inf
            vision[1, 0, 1] = np.nan
        d = {
            "raw_text": np.array(raw_text),
            "text": rng.standard_normal((n, max_len, d_bert)).astype(np.float32),
            "text_bert": text_bert,
            "audio": audio,
            "vision": vision,
            "regression_labels": labels,
            "classification_labels": np.digitize(np.nan_to_num(labels), [-1e-9, 1e-9]).astype(np.float32),
            "annotations": np.array(["Neutral"] * n),
            "id": np.array(ids),
        }
        if not aligned:
            d["audio_lengths"], d["vision_lengths"] = la, lv
        out[split] = d
    return _dump(out, Path(path))


def write_mult_pickle(
    path: str | os.PathLike[str],
    *,
    aligned: bool = True,
    classification: bool = False,
    sizes: tuple[int, int, int] = (5, 3, 4),
    seq_len: int = 10,
    d_t: int = 8,
    d_a: int = 5,
    d_v: int = 6,
    seed: int = 0,
    plant_quirks: bool = True,
) -> Path:
    """A MulT / MultiBench pickle: fixed-length, **left**-padded ``(N, T, d)`` arrays.

    With ``plant_quirks``: the last train sample has all-zero text (dropped as ``empty``) and train
    sample 0 has −inf in its last audio step. Ids are ``(N, 3)`` string arrays ``[video, clip, '']``.
    Labels are ``(N, 1, 1)`` floats, or ``(N, 1)`` 0/1 floats with ``classification``.
    """
    rng = np.random.default_rng(seed)
    t_a, t_v = (seq_len, seq_len) if aligned else (seq_len + 7, seq_len + 3)
    out: dict[str, dict[str, np.ndarray]] = {}
    for split, n in zip(("train", "valid", "test"), sizes):
        text = np.zeros((n, seq_len, d_t), np.float32)
        audio = np.zeros((n, t_a, d_a), np.float32)
        vision = np.zeros((n, t_v, d_v), np.float32)
        for i in range(n):
            length = int(rng.integers(2, seq_len + 1))
            text[i, seq_len - length:] = rng.standard_normal((length, d_t)) + 0.1
            la = length if aligned else int(rng.integers(1, t_a + 1))
            lv = length if aligned else int(rng.integers(1, t_v + 1))
            audio[i, t_a - la:] = rng.standard_normal((la, d_a)) + 0.1
            vision[i, t_v - lv:] = rng.standard_normal((lv, d_v)) + 0.1
        if plant_quirks and split == "train":
            text[-1] = 0
            audio[0, -1, 0] = -np.inf
        if classification:
            labels = rng.integers(0, 2, (n, 1)).astype(np.float32)
        else:
            labels = rng.uniform(-3, 3, (n, 1, 1)).astype(np.float32)
        ids = np.array([[f"{split}vid{i // 2}", str(i % 2), ""] for i in range(n)])
        out[split] = {"vision": vision, "audio": audio, "text": text, "labels": labels, "id": ids}
    return _dump(out, Path(path))


@contextlib.contextmanager
def _create_dataset_module() -> Iterator[types.FunctionType]:
    """Temporarily provide the original ``create_dataset.return_unk`` so its reference can be pickled."""
    module = types.ModuleType("create_dataset")

    def return_unk() -> int:
        return 0

    return_unk.__module__ = "create_dataset"
    return_unk.__qualname__ = "return_unk"
    module.return_unk = return_unk  # type: ignore[attr-defined]
    previous = sys.modules.get("create_dataset")
    sys.modules["create_dataset"] = module
    try:
        yield return_unk
    finally:
        if previous is None:
            del sys.modules["create_dataset"]
        else:
            sys.modules["create_dataset"] = previous


def write_embedding_and_mapping(path: str | os.PathLike[str], word2id: dict[str, int], *, d_e: int = 6,
                                seed: int = 0) -> Path:
    """An original-style ``embedding_and_mapping.pt``: ``torch.save((tensor (V, d_e), defaultdict))``
    whose default factory is ``create_dataset.return_unk``."""
    import torch

    path = Path(path)
    with _create_dataset_module() as return_unk:
        mapping: defaultdict[str, int] = defaultdict(return_unk)
        mapping.update(word2id)
        gen = torch.Generator().manual_seed(seed)
        emb = torch.randn(max(word2id.values()) + 1, d_e, generator=gen)
        torch.save((emb, mapping), path)
    return path


def write_misa_pickles(
    folder: str | os.PathLike[str],
    *,
    layout: str = "mosi",
    sizes: tuple[int, int, int] = (5, 3, 4),
    max_len: int = 8,
    d_v: int = 7,
    d_a: int = 6,
    with_embedding: bool = True,
    seed: int = 0,
    plant_quirks: bool = True,
) -> Path:
    """An original MISA ``datasets/<NAME>/`` folder: ``train.pkl``, ``dev.pkl``, ``test.pkl`` (and
    ``embedding_and_mapping.pt``). ``layout`` ``mosi`` (samples with ``vid[k]`` ids, regression) or
    ``ur_funny`` (no ids, 0/1 labels). With ``plant_quirks`` train sample 0 has a NaN in visual."""
    if layout not in ("mosi", "ur_funny"):
        raise ValueError(f"layout must be 'mosi' or 'ur_funny', got {layout!r}")
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    word2id: dict[str, int] = {"<unk>": 0, "<pad>": 1}
    for split, file, n in zip(("train", "valid", "test"), ("train.pkl", "dev.pkl", "test.pkl"), sizes):
        samples = []
        for i in range(n):
            length = int(rng.integers(1, max_len + 1))
            words = [str(w) for w in rng.choice([w for w in WORDS if w != "sp"], length)]
            ids = np.array([word2id.setdefault(w, len(word2id)) for w in words])
            visual = rng.standard_normal((length, d_v))
            acoustic = rng.standard_normal((length, d_a))
            if plant_quirks and split == "train" and i == 0:
                visual[0, 0] = np.nan
            if layout == "mosi":
                label = np.array([[rng.uniform(-3, 3)]], dtype=np.float32)
                samples.append(((ids, visual, acoustic, words), label, f"{split}vid{i // 2}[{i % 2}]"))
            else:
                label = np.array([[float(i % 2)]], dtype=np.float32)
                samples.append(((ids, visual, acoustic, words), label))
        _dump(samples, folder / file, protocol=3)
    if with_embedding:
        write_embedding_and_mapping(folder / "embedding_and_mapping.pt", word2id, seed=seed)
    return folder


def write_urfunny(
    folder: str | os.PathLike[str],
    *,
    version: int = 1,
    sizes: tuple[int, int, int] = (6, 3, 4),
    n_no_fold: int = 2,
    max_len: int = 6,
    d_v: int = 7,
    d_a: int = 6,
    d_e: int = 5,
    vocab_size: int = 30,
    prefix: str = "",
    seed: int = 0,
    plant_quirks: bool = True,
) -> Path:
    """A UR-FUNNY V1 or V2 release folder (integer ids, ``train``/``dev``/``test`` folds, punchline and
    context features). With ``plant_quirks``: train id 0's punchline is one word, train id 1 has −inf
    and NaN in acoustic, and in V2 the sentence of test id 0 has one word more than its features
    (dropped as ``length_mismatch``). ``prefix`` is prepended to every file name."""
    if version not in (1, 2):
        raise ValueError(f"version must be 1 or 2, got {version!r}")
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    total = sum(sizes) + n_no_fold
    all_ids = [int(i) for i in np.sort(rng.choice(np.arange(3 * total), total, replace=False))]
    folds, k = {}, 0
    for fold, n in zip(("train", "dev", "test"), sizes):
        folds[fold] = all_ids[k:k + n]
        k += n
    labels = {i: (float(j % 2) if version == 1 else j % 2) for j, i in enumerate(all_ids)}
    text, covarep, openface = {}, {}, {}
    for i in all_ids:
        n_words = int(rng.integers(2, max_len + 1))
        if plant_quirks and i == folds["train"][0]:
            n_words = 1
        idx = [int(x) for x in rng.integers(0, vocab_size, n_words)]
        a = rng.standard_normal((n_words, d_a))
        if plant_quirks and i == folds["train"][1]:
            a[0, 0], a[-1, -1] = -np.inf, np.nan
        ctx_idx = [[int(x) for x in rng.integers(0, vocab_size, 3)]]
        covarep[i] = {"punchline_features": a, "context_features": [rng.standard_normal((3, d_a))]}
        openface[i] = {"punchline_features": rng.standard_normal((n_words, d_v)),
                       "context_features": [rng.standard_normal((3, d_v))]}
        if version == 1:
            text[i] = {"punchline_embedding_indexes": idx, "context_embedding_indexes": ctx_idx}
        else:
            words = [f"w{x}" for x in idx]
            if plant_quirks and i == folds["test"][0]:
                words.append("extra")
            text[i] = {
                "punchline_embedding_indexes": idx,
                "context_embedding_indexes": ctx_idx,
                "punchline_sentence": " ".join(words),
                "context_sentences": ["a b c"],
                "punchline_intervals": [[0.5 * j, 0.5 * j + 0.4] for j in range(n_words)],
                "context_intervals": [[[0.0, 0.4], [0.5, 0.9], [1.0, 1.4]]],
            }
    embedding = [rng.standard_normal(d_e) for _ in range(vocab_size)]
    _dump(folds, folder / f"{prefix}data_folds.pkl")
    _dump(labels, folder / f"{prefix}humor_label_sdk.pkl", protocol=3)
    _dump(text, folder / f"{prefix}{'word_embedding_indexes_sdk' if version == 1 else 'language_sdk'}.pkl")
    _dump(embedding, folder / f"{prefix}word_embedding_list.pkl")
    _dump(covarep, folder / f"{prefix}covarep_features_sdk.pkl")
    _dump(openface, folder / f"{prefix}openface_features_sdk.pkl")
    return folder


def write_utterance_table(
    path: str | os.PathLike[str],
    *,
    sizes: tuple[int, int, int] = (12, 0, 6),
    dims: dict[str, int] | None = None,
    with_labels: bool = True,
    clips_per_video: int = 3,
    seed: int = 0,
) -> Path:
    """A per-utterance feature table (``--format utterances``) as .csv, .parquet or .npz (by suffix).

    Ids are ``vid<k>_<clip>`` (``clips_per_video`` utterances per video, videos never shared between
    splits); ``sizes`` of 0 leave a split out (the default has no validation rows, for
    ``--valid-fraction``). Acoustic features carry an F0-like column in the hundreds, as real
    utterance statistics do. The label (without ``with_labels``: left out, for ``--labels``) is a
    noisy linear function of the features, clipped to [-3, 3].
    """
    path = Path(path)
    dims = dims or {"text": 4, "acoustic": 3, "visual": 5}
    rng = np.random.default_rng(seed)
    ids, splits = [], []
    video = 0
    for split, n in zip(("train", "valid", "test"), sizes):
        for i in range(n):
            if i % clips_per_video == 0:
                video += 1
            ids.append(f"vid{video}_{i % clips_per_video + 1}")
            splits.append(split)
    n = len(ids)
    features = {m: rng.standard_normal((n, d)) for m, d in dims.items()}
    if "acoustic" in features:
        features["acoustic"][:, 0] = 150 + 40 * features["acoustic"][:, 0]
    signal = sum(f[:, 1 % f.shape[1]] for f in features.values())
    labels = np.clip(signal + 0.3 * rng.standard_normal(n), -3, 3).round(4)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: dict[str, list] = {"segment_id": ids, "split": splits}
    if with_labels:
        columns["label"] = labels.tolist()
    for m, f in features.items():
        for j in range(f.shape[1]):
            columns[f"{m}_{j}"] = f[:, j].tolist()
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays = {"segment_id": np.array(ids), "split": np.array(splits), **features}
        if with_labels:
            arrays["label"] = labels
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    elif suffix in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(columns), path)
    else:
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(list(columns))
            writer.writerows(zip(*columns.values()))
    return path


def write_utterance_labels(path: str | os.PathLike[str], table: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """A ``segment_id,label`` CSV for the ids of a CSV utterance table written by
    ``write_utterance_table`` (labels random in [-3, 3]; extra columns as in mosi_text_labels.csv)."""
    with open(table, newline="") as fh:
        ids = [row["segment_id"] for row in csv.DictReader(fh)]
    rng = np.random.default_rng(seed)
    path = Path(path)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["segment_id", "label", "text"])
        for seg in ids:
            writer.writerow([seg, round(float(rng.uniform(-3, 3)), 4), "some words"])
    return path
