"""Synthetic CMU-SDK ``.csd`` files in the real layout, at any scale (tests, demos, the alignment benchmark).

One HDF5 file per role — words (``*_TimestampedWords``: byte strings with ``sp`` pauses), COVAREP-like
acoustic frames (74-d at 100 Hz, with −inf values as in real COVAREP), FACET-like visual frames
(35-d FACET 4.2 for MOSEI or 47-d FACET 4.1 for MOSI, at 30 Hz, a few NaN rows and, in some videos, a
hole without frames) and segment labels (rows sometimes out of time order, as in the real MOSI file)
— plus a fold JSON in the layout of the standard folds, with a few videos in no fold. Metadata are
JSON-encoded strings like the SDK's, and the acoustic file carries the SDK's concatenated key
``dimension namescomputational sequence version``.

The numbers are random (seeded); anything computed from them is synthetic. MOSEI's size
(3,293 videos, 23,259 segments, about 65 hours) is the default per-video scale; generation is
vectorised within a video, so a full-size set takes minutes, most of it gzip.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MOSEI_VIDEOS = 3293
MOSEI_SEGMENTS = 23259
MOSEI_SECONDS = 65 * 3600
VOCAB = ("i", "the", "movie", "was", "really", "good", "bad", "liked", "it", "not", "funny", "boring", "and",
         "but", "very", "acting", "plot", "um", "so", "café")  # one non-ASCII word exercises UTF-8
ACOUSTIC_HZ = 100.0
VISUAL_HZ = 30.0
FOLD_SHARES = (0.683, 0.091, 0.206)  # MOSEI standard folds: 2250 / 300 / 678 of 3293 videos (rest: no fold)


def _meta(root: str, description: str, dims: list[str], dataset: str, *, joined_key: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "root name": root,
        "computational sequence description": description,
        "alignment compatible": True,
        "dataset name": dataset,
        "dataset version": 1.0,
        "creator": "misalatch synthetic generator",
        "contact": "nobody@example.org",
        "featureset bib citation": "synthetic",
        "dataset bib citation": "synthetic",
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"misalatch-synthetic/{dataset}/{root}")),
        "md5": None,
    }
    if joined_key:  # the SDK template's missing comma: one key holding the dimension names
        meta["dimension namescomputational sequence version"] = dims
    else:
        meta["dimension names"] = dims
        meta["computational sequence version"] = 1.0
    return meta


class CsdWriter:
    """Writes ``/<root>/data/<vid>/{features,intervals}`` and ``/<root>/metadata/<key>`` like the SDK.

    Metadata values are stored JSON-encoded in ``(1,)`` variable-length UTF-8 string datasets;
    datasets are chunked and gzip-compressed. Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike[str], root: str, metadata: dict[str, Any] | None = None, *,
                 compression_level: int = 4) -> None:
        import h5py

        self.file = h5py.File(path, "w")
        self.root = self.file.create_group(root)
        self.data = self.root.create_group("data")
        self.level = compression_level
        group = self.root.create_group("metadata")
        for key, value in (metadata or {}).items():
            group.create_dataset(key, (1,), dtype=h5py.string_dtype("utf-8"), data=[json.dumps(value)])

    def add(self, entry: str, intervals: np.ndarray, features: np.ndarray) -> None:
        """One entry (a video id, or ``vid[k]``); ``features`` may be numbers or byte strings."""
        group = self.data.create_group(entry)
        features = np.asarray(features)
        if features.dtype.kind == "O":  # variable-length byte strings
            import h5py

            group.create_dataset("features", data=features, dtype=h5py.vlen_dtype(bytes))
            group.create_dataset("intervals", data=intervals)
            return
        width = int(np.prod(features.shape[1:])) if features.ndim > 1 else 1
        rows = max(1, min(features.shape[0], (1 << 18) // max(1, features.dtype.itemsize * width)))
        opts: dict[str, Any] = dict(compression="gzip", compression_opts=self.level)
        if features.shape[0] == 0:
            opts = {}
        else:
            opts["chunks"] = (rows,) + features.shape[1:]
        group.create_dataset("features", data=features, **opts)
        if features.shape[0]:
            opts["chunks"] = (rows,) + tuple(np.shape(intervals)[1:])
        group.create_dataset("intervals", data=intervals, **opts)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "CsdWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_csd(
    path: str | os.PathLike[str],
    entries: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    root: str = "sequence",
    metadata: dict[str, Any] | None = None,
    compression_level: int = 4,
) -> Path:
    """A small ``.csd`` file from ``{entry: (intervals (n, 2), features (n, d))}`` (tests, examples)."""
    with CsdWriter(path, root, metadata, compression_level=compression_level) as writer:
        for entry, (intervals, features) in entries.items():
            writer.add(entry, np.asarray(intervals), np.asarray(features))
    return Path(path)


def _split_total(rng: np.random.Generator, n: int, total: float, low: float, high: float) -> np.ndarray:
    """``n`` positive sizes drawn in [low, high] × mean, rescaled to sum to ``total``."""
    raw = rng.uniform(low, high, n)
    return raw * (total / raw.sum())


def _video_ids(n: int) -> list[str]:
    """Ids like the real ones: mostly 11-character YouTube-style, some integer-like, some starting with '-'."""
    out = []
    for i in range(n):
        if i % 20 == 7:
            out.append(str(200000 + i))  # integer-like (MOSEI has ids such as 286943)
        elif i % 50 == 3:
            out.append(f"-v{i:09d}")
        else:
            out.append(f"v{i:05d}_syn")
    return out


def _words(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Word rows tiling [t0, seconds]: intervals (n, 2) float64 and byte strings (n, 1), with ``sp`` pauses."""
    n = int(seconds / 0.3 * 1.2) + 8
    pause = rng.random(n) < 0.12
    dur = np.where(pause, rng.uniform(0.1, 1.0, n), rng.uniform(0.15, 0.6, n))
    start = rng.uniform(0.0, 1.0) + np.concatenate([[0.0], np.cumsum(dur)[:-1]])
    keep = start + dur <= seconds
    start, dur, pause = start[keep], dur[keep], pause[keep]
    zero = rng.random(start.shape[0]) < 0.002  # a few zero-length rows, which alignment must drop
    end = np.where(zero, start, start + dur)
    vocab = np.array([w.encode("utf-8") for w in VOCAB])
    tokens = vocab[rng.integers(0, len(VOCAB), start.shape[0])]
    tokens = np.where(pause, b"sp", tokens).astype(f"S{max(len(w) for w in vocab)}")
    return np.stack([start, end], axis=1), tokens[:, None]


def _segments(rng: np.random.Generator, word_iv: np.ndarray, n_seg: int) -> np.ndarray:
    """``n_seg`` label intervals covering consecutive word runs (time order; shuffled by the caller)."""
    n_w = word_iv.shape[0]
    n_seg = max(1, min(n_seg, n_w))
    cuts = np.sort(rng.choice(np.arange(1, n_w), size=n_seg - 1, replace=False)) if n_seg > 1 else np.array([], int)
    first = np.concatenate([[0], cuts])
    last = np.concatenate([cuts, [n_w]]) - 1
    return np.stack([word_iv[first, 0], word_iv[last, 1]], axis=1)


def _frames(rng: np.random.Generator, seconds: float, hz: float, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame intervals ``[i/hz, (i+1)/hz]`` and float32 features on a 1/64 grid (few mantissa bits: gzip-friendly)."""
    n = int(np.ceil(seconds * hz)) + 1
    t = np.arange(n + 1, dtype=np.float64) / hz
    intervals = np.stack([t[:-1], t[1:]], axis=1)
    base = (rng.integers(-16, 17, dim) / 4).astype(np.float32)  # per-video offset per column
    scale = (2.0 ** rng.integers(-2, 2, dim) / 16).astype(np.float32)  # powers of two keep values exact
    x = rng.integers(-48, 49, size=(n, dim), dtype=np.int8).astype(np.float32)
    x *= scale
    x += base
    return intervals, x


def write_synthetic_csds(
    out_dir: str | os.PathLike[str],
    *,
    n_videos: int,
    segments_per_video: float = MOSEI_SEGMENTS / MOSEI_VIDEOS,
    seconds_per_video: float = MOSEI_SECONDS / MOSEI_VIDEOS,
    seed: int = 0,
    visual_dim: int = 35,
    acoustic_dim: int = 74,
    compression_level: int = 4,
    progress: bool = False,
) -> dict[str, Path]:
    """Write synthetic words / visual / acoustic / labels ``.csd`` files and a fold JSON into ``out_dir``.

    Returns ``{"words", "visual", "acoustic", "labels", "folds"} -> path``. The dataset is named
    MOSEI (``visual_dim`` 35, 7 label columns) or MOSI (otherwise, 1 label column), which fixes the
    file names, the fold file's key and the segment-id convention of the reader. The total number
    of segments is ``round(n_videos * segments_per_video)``; video lengths vary ±50 % around
    ``seconds_per_video``.
    """
    from tqdm.auto import tqdm

    if n_videos < 3:
        raise ValueError(f"n_videos must be at least 3 (one per split), got {n_videos}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    mosei = visual_dim == 35
    dataset, prefix = ("mosei", "CMU_MOSEI") if mosei else ("mosi", "CMU_MOSI")
    name = "CMU-MOSEI" if mosei else "CMU-MOSI"
    paths = {
        "words": out / f"{prefix}_TimestampedWords.csd",
        "visual": out / (f"{prefix}_VisualFacet42.csd" if mosei else f"{prefix}_Visual_Facet_41.csd"),
        "acoustic": out / f"{prefix}_COVAREP.csd",
        "labels": out / (f"{prefix}_Labels.csd" if mosei else f"{prefix}_Opinion_Labels.csd"),
        "folds": out / "folds.json",
    }
    label_dims = ["sentiment", "happy", "sad", "anger", "surprise", "disgust", "fear"] if mosei else ["sentiment score"]
    roots = {"words": "words", "visual": "FACET 4.2" if mosei else "FACET_4.1", "acoustic": "COVAREP",
             "labels": "All Labels" if mosei else "Opinion Segment Labels"}
    metas = {
        "words": _meta(roots["words"], "Word timestamps", ["word"], name),
        "visual": _meta(roots["visual"], "Facial action units (synthetic)", [f"facet_{i}" for i in range(visual_dim)], name),
        "acoustic": _meta(roots["acoustic"], "COVAREP acoustic features (synthetic)",
                          [f"covarep_{i}" for i in range(acoustic_dim)], name, joined_key=True),
        "labels": _meta(roots["labels"], "Sentiment labels (synthetic)", label_dims, name),
    }
    writers: dict[str, CsdWriter] = {}
    vids = _video_ids(n_videos)
    seconds = _split_total(rng, n_videos, seconds_per_video * n_videos, 0.5, 1.5)
    total_segments = int(round(n_videos * segments_per_video))
    n_seg = np.full(n_videos, total_segments // n_videos)
    n_seg[rng.choice(n_videos, total_segments - n_seg.sum(), replace=False)] += 1
    n_seg = np.maximum(n_seg, 1)
    try:
        for role, root in roots.items():
            writers[role] = CsdWriter(paths[role], root, metas[role], compression_level=compression_level)
        for i in tqdm(range(n_videos), desc="synthetic csd", unit="video", disable=not progress):
            vid = vids[i]
            word_iv, tokens = _words(rng, max(float(seconds[i]), 2.0))
            writers["words"].add(vid, word_iv, tokens)
            seg_iv = _segments(rng, word_iv, int(n_seg[i]))
            order = np.arange(seg_iv.shape[0])
            if seg_iv.shape[0] > 2 and rng.random() < 0.05:  # rows out of time order, as in real MOSI
                a, b = rng.choice(seg_iv.shape[0], 2, replace=False)
                order[[a, b]] = order[[b, a]]
            values = np.round(rng.uniform(-3, 3, (seg_iv.shape[0], len(label_dims))) * 3) / 3
            if mosei:
                values[:, 1:] = np.abs(values[:, 1:])
            writers["labels"].add(vid, seg_iv[order].astype(np.float32), values[order].astype(np.float32))
            span = float(word_iv[-1, 1]) + 0.5
            a_iv, a_x = _frames(rng, span, ACOUSTIC_HZ, acoustic_dim)
            silent = rng.random(a_x.shape[0]) < 0.01
            a_x[silent, 0] = -np.inf  # COVAREP writes -inf (log of zero energy) in silent frames
            writers["acoustic"].add(vid, a_iv, a_x)
            v_iv, v_x = _frames(rng, span, VISUAL_HZ, visual_dim)
            v_x[rng.random(v_x.shape[0]) < 0.003] = np.nan  # face not found
            if rng.random() < 0.03:  # a hole without frames: some words get no visual row
                t0 = rng.uniform(0, span)
                hole = (v_iv[:, 0] >= t0) & (v_iv[:, 1] <= t0 + rng.uniform(0.5, 2.0))
                v_iv, v_x = v_iv[~hole], v_x[~hole]
            writers["visual"].add(vid, v_iv, v_x)
    finally:
        for w in writers.values():
            w.close()
    perm = rng.permutation(n_videos)
    share = np.array(FOLD_SHARES)
    counts = np.maximum(1, np.floor(share * n_videos).astype(int))
    counts = np.minimum(counts, n_videos - 2)  # tiny sets: at least one video per split
    bounds = np.cumsum(counts)
    fold = {"train": perm[: bounds[0]], "valid": perm[bounds[0]: bounds[1]], "test": perm[bounds[1]: bounds[2]]}
    doc = {"_source": "misalatch synthetic generator (not real folds)",
           dataset: {s: [vids[j] for j in sorted(idx)] for s, idx in fold.items()}}
    paths["folds"].write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    log.info("synthetic %s CSDs: %d videos, %d segments, %.1f h in %s", dataset, n_videos, int(n_seg.sum()),
             float(seconds.sum()) / 3600, out)
    return paths
