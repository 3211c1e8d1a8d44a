"""CMU-MultimodalSDK computational sequences (``.csd``, HDF5) and word alignment (DATA.md §2, §3).

The SDK itself is not needed: the files are read with h5py, and the SDK's ``align`` semantics used by
MISA / MMLatch are re-implemented video by video with vectorised interval intersection, so memory is
bounded by the longest video instead of the whole dataset (the SDK needed hours and ~32 GB for MOSEI).

Recipe (DATA.md §3.2–§3.5), per labelled video:

1. words are the reference: every word row with a non-zero interval gets the **unweighted mean** of
   the visual / acoustic frames overlapping it (ε = 1e-5 rules of §3.2; a frame straddling two words
   counts for both); a word without overlapping frames has no row in that modality, unless
   ``impute=True`` (MMLatch), which fills zeros;
2. segment k (label row k, never re-sorted) holds the word-level rows overlapping its interval;
3. drops, counted in ``meta["dropped"]``: ``no_fold`` (video in no fold), ``missing_modality`` (a
   modality has no row for the segment, or lacks the video), ``length_mismatch`` (modalities have
   different rows: some words lacked frames), ``empty`` (no word, a zero-length label interval, or
   only ``sp``);
4. non-finite visual / acoustic values become 0 (counted in ``meta["nonfinite"]``); a NaN label is an error,
   ``sp`` rows are removed from all modalities together, and visual / acoustic are z-normalised per
   segment (ddof 0, + 1e-6) unless ``normalize=False``.

Segment ids: MOSI ``<vid>_<k+1>`` (the 1-based clip id of the real MOSI tables, verified against the
text table); every other dataset ``<vid>_<k>`` (the SDK's 0-based ``vid[k]`` index, as in the s3prl
MOSEI label table).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np

from misalatch.data.canonical import SPLITS, CanonicalDataset, Segment
from misalatch.data.folds import folds_source, load_folds, split_of
from misalatch.data.safe_pickle import source_entry
from misalatch.errors import ConfigError, DataFormatError, MisalatchError

log = logging.getLogger(__name__)

READER = "csd"
EPS = 1e-5  # interval tolerance of the SDK's align (DATA.md §3.2)
NORM_EPS = 1e-6  # added to the standard deviation in MISA's per-segment z-normalisation
PAUSE = "sp"  # speech-pause token of the SDK word sequences
DROP_REASONS: tuple[str, ...] = ("no_fold", "missing_modality", "length_mismatch", "empty")
MODALITY_ROLES: tuple[str, ...] = ("visual", "acoustic")
REOPEN_EVERY = 128  # videos read between reopenings of a file (bounds HDF5's caches)
PAIR_BUDGET = 1 << 22  # gathered (pair × feature) values per chunk of the word/frame intersection
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# A dataset may declare any shape; what it can really hold is bounded by the bytes stored for it.
# gzip (the only filter SDK files use) expands at most ~1032:1, so a dataset declaring more than
# MAX_EXPANSION times its stored bytes (or anything with no bytes stored: reads as fill values) is
# refused before h5py allocates it, as is any single dataset over MAX_DATASET_BYTES.
MAX_EXPANSION = 1100
MAX_DATASET_BYTES = 8 << 30
_SUFFIX = re.compile(r"\[[^\]]*\]$")
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


class CsdEntry(NamedTuple):
    """One entry's rows: ``intervals`` (n, 2) float64 seconds, ``features`` (n, ...) as stored."""

    intervals: np.ndarray
    features: np.ndarray


@contextlib.contextmanager
def _h5_boundary(path: Path, what: str) -> Iterator[None]:
    """Turn h5py/HDF5 failures into a DataFormatError naming the file and what was being read."""
    try:
        yield
    except MisalatchError:
        raise
    except _H5_ERRORS as err:
        raise DataFormatError(f"{path}: cannot read {what} ({err}); the file may be truncated or corrupt") from err


def _open_error(path: Path, err: Exception) -> DataFormatError:
    text = str(err)
    try:
        with path.open("rb") as fh:
            head = fh.read(len(HDF5_SIGNATURE))
    except OSError:
        head = b""
    if "truncated" in text:
        problem = "truncated HDF5 file"
    elif head != HDF5_SIGNATURE and "signature" in text:
        problem = "not an HDF5 file (a .csd file is HDF5, written by CMU-MultimodalSDK)"
    else:
        problem = "cannot open as HDF5"
    return DataFormatError(f"{path}: {problem} ({text})")


def _child(group: Any, name: str, path: Path, what: str) -> Any:
    """``group[name]``, refusing an external link (it would open another file) before following it."""
    import h5py

    link = group.get(name, getlink=True)
    if isinstance(link, h5py.ExternalLink):
        raise DataFormatError(
            f"{path}: {what} {name!r} is an external link to {link.filename!r}:{link.path!r}; links to other "
            "files are refused (a .csd holds its own data)"
        )
    return group[name]


def check_dataset(dset: Any, path: Path, what: str) -> None:
    """Refuse a dataset misalatch must not read: external storage (raw bytes of another file, e.g.
    /etc/passwd), a virtual dataset (mapped from other files), or a declared size that its stored
    bytes cannot hold (a 730 kB file declaring 70 GiB) -- all before any data is read."""
    import h5py

    dcpl = dset.id.get_create_plist()
    if dcpl.get_external_count() > 0:
        name = dcpl.get_external(0)[0].decode("utf-8", errors="replace")
        raise DataFormatError(
            f"{path}: {what} stores its data in the external file {name!r}; external storage is refused"
        )
    if dcpl.get_layout() == h5py.h5d.VIRTUAL:
        raise DataFormatError(f"{path}: {what} is a virtual dataset (data mapped from other files); refused")
    count = 1
    for n in dset.shape or ():
        count *= int(n)
    declared = count * dset.dtype.itemsize
    if declared == 0:
        return
    stored = int(dset.id.get_storage_size())
    if declared > MAX_DATASET_BYTES or declared > max(stored, 1) * MAX_EXPANSION:
        raise DataFormatError(
            f"{path}: {what} declares shape {tuple(dset.shape)} of {dset.dtype} ({declared} bytes) but stores "
            f"{stored} bytes (at most {MAX_EXPANSION}x expansion and {MAX_DATASET_BYTES} bytes per dataset); "
            "refused before reading"
        )


def _decode_meta(raw: Any) -> Any:
    """Metadata values are JSON-encoded strings (``"CMU-MOSI"``, ``true``, ``1.0``, ``null``)."""
    if isinstance(raw, np.ndarray):
        if raw.size == 0:
            return None
        raw = raw.reshape(-1)[0] if raw.size == 1 else raw.tolist()
    if isinstance(raw, np.generic):
        raw = raw.item()
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw  # some writers stored plain strings; keep them as they are
    if isinstance(raw, list):
        return [_decode_meta(v) for v in raw]
    return raw


def decode_words(features: np.ndarray, *, where: str = "<words>", cache: dict[bytes, str] | None = None) -> list[str]:
    """Words from a ``(n, 1)`` byte-string array (fixed ``|S`` or variable length), decoded UTF-8.

    ``cache`` (bytes → str, shared across videos) makes every occurrence of a word the same ``str``
    object: MOSEI's ~600k words then cost a pointer each instead of a string each.
    """
    flat = features.reshape(features.shape[0], -1)[:, 0] if features.ndim > 1 else features
    kind = flat.dtype.kind
    if kind == "U":
        return [str(s) for s in flat.tolist()]
    if kind not in "SO":
        raise DataFormatError(
            f"{where}: word features must be byte strings (a *_TimestampedWords sequence), found dtype "
            f"{flat.dtype}; word vectors (*_TimestampedWordVectors) cannot give words"
        )
    memo: dict[bytes, str] = {} if cache is None else cache
    out = []
    for item in flat.tolist():
        if isinstance(item, bytes):
            word = memo.get(item)
            if word is None:
                word = memo[item] = item.decode("utf-8", errors="replace")
            out.append(word)
        elif isinstance(item, str):
            out.append(item)
        else:
            raise DataFormatError(f"{where}: word features must be byte strings, found {type(item).__name__}")
    return out


def video_id(entry: str) -> str:
    """The video id of an entry key: ``vid`` or ``vid[k]`` (after an SDK alignment) → ``vid``."""
    return _SUFFIX.sub("", entry)


class CsdSequence:
    """An open computational sequence, read one video at a time (a context manager).

    ``root_name``: the first top-level key; ``metadata``: decoded JSON values (tolerant: odd or
    missing keys are fine, ``dimension namescomputational sequence version`` is understood);
    ``skipped``: entry → why it failed the §2 validation (those entries are treated as absent).
    Entries keyed ``vid[k]`` are grouped by video and their rows concatenated in start order.
    """

    def __init__(self, path: str | Path, *, role: str = "sequence", words: bool = False) -> None:
        import h5py

        self.path = Path(path)
        self.role = role
        self.words = words  # the features are byte strings
        self.skipped: dict[str, str] = {}
        self.dim: int | None = None  # feature width, fixed by the first valid entry
        self._dim_entry = ""
        self.rows_read = 0
        self._reads_since_open = 0
        if not self.path.is_file():
            raise DataFormatError(f"{self.path}: no such file ({role} sequence)")
        try:
            self._file = h5py.File(self.path, "r")
        except _H5_ERRORS as err:
            raise _open_error(self.path, err) from err
        try:
            with _h5_boundary(self.path, "the top-level groups"):
                keys = list(self._file.keys())
                if not keys:
                    raise DataFormatError(f"{self.path}: empty HDF5 file (no top-level group); not a computational sequence")
                self.root_name = keys[0]
                root = _child(self._file, self.root_name, self.path, "top-level group")
                if not isinstance(root, h5py.Group):
                    raise DataFormatError(f"{self.path}: top-level object {self.root_name!r} is not a group")
                if "data" not in root or not isinstance(_child(root, "data", self.path, "group"), h5py.Group):
                    raise DataFormatError(
                        f"{self.path}: root group {self.root_name!r} has no 'data' group (found {sorted(root.keys())}); "
                        f"not a computational sequence"
                    )
                self._data = root["data"]
                groups: dict[str, list[str]] = {}
                for entry in self._data.keys():
                    groups.setdefault(video_id(entry), []).append(entry)
                self._groups = groups
            self.metadata = self._read_metadata(root)
        except BaseException:
            self._file.close()
            raise

    # ---- metadata ----
    def _read_metadata(self, root: Any) -> dict[str, Any]:
        import h5py

        meta: dict[str, Any] = {}
        try:
            if "metadata" not in root:
                return meta
            group = _child(root, "metadata", self.path, "group")
            meta.update({k: _decode_meta(v) for k, v in group.attrs.items()})
            if hasattr(group, "keys"):
                for key in group.keys():
                    try:
                        item = _child(group, key, self.path, "metadata entry")
                        if not isinstance(item, h5py.Dataset):
                            continue
                        check_dataset(item, self.path, f"metadata entry {key!r}")
                        meta[key] = _decode_meta(item[()])
                    except MisalatchError:
                        raise
                    except _H5_ERRORS as err:  # odd metadata never stops reading the data
                        log.debug("%s: metadata %r unreadable (%s)", self.path, key, err)
        except MisalatchError:
            raise
        except _H5_ERRORS as err:
            log.debug("%s: metadata unreadable (%s)", self.path, err)
        joined = "dimension namescomputational sequence version"  # a missing comma in the SDK's template
        if "dimension names" not in meta and isinstance(meta.get(joined), list):
            meta["dimension names"] = meta[joined]
        return meta

    def summary(self) -> dict[str, Any]:
        """The metadata worth keeping with results (root, dataset, dimension names, version)."""
        keep = ("dataset name", "dataset version", "computational sequence version", "dimension names")
        out: dict[str, Any] = {"root name": self.root_name}
        out.update({k: self.metadata[k] for k in keep if k in self.metadata})
        return out

    # ---- data ----
    def videos(self) -> list[str]:
        """Video ids, in the file's key order."""
        return list(self._groups)

    def __contains__(self, vid: str) -> bool:
        return vid in self._groups

    def _read_entry(self, entry: str) -> CsdEntry | None:
        import h5py

        with _h5_boundary(self.path, f"entry {entry!r}"):
            group = _child(self._data, entry, self.path, "entry")
            if not isinstance(group, h5py.Group):
                self.skipped[entry] = "not a group"
                return None
            missing = [name for name in ("features", "intervals") if name not in group]
            if missing:
                self.skipped[entry] = f"no {' and no '.join(repr(m) for m in missing)} dataset"
                return None
            arrays = {}
            for name in ("intervals", "features"):
                dset = _child(group, name, self.path, f"entry {entry!r} dataset")
                if not isinstance(dset, h5py.Dataset):
                    self.skipped[entry] = f"{name!r} is not a dataset"
                    return None
                check_dataset(dset, self.path, f"entry {entry!r} dataset {name!r}")
                arrays[name] = np.asarray(dset[()])
            intervals, features = arrays["intervals"], arrays["features"]
        if intervals.shape[:1] == (0,) or features.shape[:1] == (0,):
            # a video without frames has nothing to align: it counts as absent (its segments are
            # dropped as missing_modality, or, for labels, it has no segment) and is reported
            self.skipped[entry] = "no rows (a video with zero frames)"
            return None
        if intervals.ndim != 2 or intervals.shape[1] != 2 or intervals.dtype.kind not in "fiu":
            self.skipped[entry] = f"intervals {intervals.dtype} {intervals.shape} are not numeric (n, 2)"
            return None
        if features.ndim < 2:
            self.skipped[entry] = f"features {features.shape} are not at least 2-D (n, d)"
            return None
        if features.shape[0] != intervals.shape[0]:
            self.skipped[entry] = f"{features.shape[0]} feature rows but {intervals.shape[0]} intervals"
            return None
        where = f"{self.path}: entry {entry!r}"
        with np.errstate(invalid="ignore"):
            reversed_rows = np.flatnonzero(intervals[:, 1].astype(np.float64) < intervals[:, 0].astype(np.float64) - EPS)
        if reversed_rows.size:  # an end before its start: a corrupt or mis-built file, not a row to guess at
            shown = ", ".join(str(int(r)) for r in reversed_rows[:5]) + (", ..." if reversed_rows.size > 5 else "")
            first = int(reversed_rows[0])
            raise DataFormatError(
                f"{where}, dataset 'intervals': {reversed_rows.size} row(s) end before they start (rows {shown}; "
                f"row {first}: [{intervals[first, 0]:g}, {intervals[first, 1]:g}]); expected [start, end] with start <= end"
            )
        if self.words:
            if features.dtype.kind not in "SUO":
                raise DataFormatError(
                    f"{where}: word features must be byte strings (a *_TimestampedWords sequence), found dtype "
                    f"{features.dtype}"
                )
        else:
            if features.dtype.kind not in "fiub":
                raise DataFormatError(
                    f"{where}: {self.role} features must be numeric, found dtype {features.dtype} "
                    f"(is this the words file?)"
                )
            features = features.reshape(features.shape[0], -1)
            if self.dim is None:
                self.dim, self._dim_entry = features.shape[1], entry
            elif features.shape[1] != self.dim:
                raise DataFormatError(
                    f"{where}: {self.role} features have {features.shape[1]} dimensions but entry "
                    f"{self._dim_entry!r} has {self.dim}; every video of a sequence must have the same width"
                )
        return CsdEntry(intervals.astype(np.float64, copy=False), features)

    def _refresh(self) -> None:
        """Reopen the file now and then: HDF5's per-file caches grow with every object read (about 60 MB
        over one pass of MOSEI-sized files) and are only released when the file closes."""
        import h5py

        self._reads_since_open += 1
        if self._reads_since_open < REOPEN_EVERY:
            return
        self._reads_since_open = 0
        self._file.close()
        with _h5_boundary(self.path, "the file (reopening)"):
            self._file = h5py.File(self.path, "r")
            self._data = self._file[self.root_name]["data"]

    def read(self, vid: str) -> CsdEntry | None:
        """Rows of video ``vid`` (entries ``vid[k]`` concatenated in start order); None if absent or invalid."""
        entries = self._groups.get(vid)
        if not entries:
            return None
        self._refresh()
        parts = [p for p in (self._read_entry(e) for e in entries) if p is not None]
        if not parts:
            return None
        if len(parts) == 1 and entries[0] == vid:
            out = parts[0]
        else:
            intervals = np.concatenate([p.intervals for p in parts])
            features = np.concatenate([p.features for p in parts])
            order = np.argsort(intervals[:, 0], kind="stable")
            out = CsdEntry(intervals[order], features[order])
        self.rows_read += out.intervals.shape[0]
        return out

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "CsdSequence":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_csd_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of a ``.csd`` file plus its ``root name`` (never prompts, never fails on odd keys)."""
    with CsdSequence(path) as seq:
        return {"root name": seq.root_name, **seq.metadata}


def read_csd(path: str | Path, *, words: bool = False) -> dict[str, CsdEntry]:
    """Every valid entry of a (small) ``.csd`` file, by video id. For big files use ``CsdSequence``."""
    with CsdSequence(path, words=words) as seq:
        out = {vid: entry for vid in seq.videos() if (entry := seq.read(vid)) is not None}
        if seq.skipped:
            log.warning("%s: skipped %d invalid entries: %s", path, len(seq.skipped), _examples(seq.skipped))
        return out


def read_label_sequence(path: str | Path) -> dict[str, CsdEntry]:
    """Label rows per video: ``intervals`` (n, 2) float64, ``features`` (n, c) float64; row k = segment k.

    Rows keep the file's order: label rows are not always in time order (DATA.md §2), and the row
    index is the segment index.
    """
    with CsdSequence(path, role="labels") as seq:
        return _label_rows(seq)


def _label_rows(seq: CsdSequence) -> dict[str, CsdEntry]:
    out: dict[str, CsdEntry] = {}
    for vid in seq.videos():
        entries = seq._groups[vid]
        if entries != [vid]:
            raise DataFormatError(
                f"{seq.path}: label entries must be keyed by video id, found {entries[:3]} (an aligned label "
                f"sequence cannot give segment indexes)"
            )
        entry = seq.read(vid)
        if entry is not None:
            out[vid] = CsdEntry(entry.intervals, entry.features.astype(np.float64, copy=False))
    if seq.skipped:
        log.warning("%s: skipped %d invalid entries: %s", seq.path, len(seq.skipped), _examples(seq.skipped))
    if not out:
        raise DataFormatError(f"{seq.path}: no valid label entry ({len(seq.skipped)} skipped: {_examples(seq.skipped)})")
    return out


def _examples(skipped: dict[str, str], n: int = 3) -> str:
    items = list(skipped.items())
    text = "; ".join(f"{k!r}: {v}" for k, v in items[:n])
    return text + (f"; ... ({len(items) - n} more)" if len(items) > n else "")


# ---------------------------------------------------------------------------------------------
# Alignment kernels (pure NumPy; one video at a time)


@dataclass
class WordRows:
    """One modality collapsed onto the words of a video.

    ``features`` (n_w, d) float64 means (zeros where absent); ``intervals`` (n_w, 2) the extent of
    the kept (clipped) frames; ``present`` (n_w,) whether the word has a row in this modality.
    """

    features: np.ndarray
    intervals: np.ndarray
    present: np.ndarray


def collapse_to_words(
    word_intervals: np.ndarray, frame_intervals: np.ndarray, frame_features: np.ndarray, *, eps: float = EPS
) -> WordRows:
    """SDK ``align(words, collapse=mean)`` for one video, vectorised (DATA.md §3.2).

    A frame j belongs to word i when ``s0_j < r1 + eps``, ``s1_j > r0 - eps`` and its clipped
    interval ``[max(s0_j, r0), min(s1_j, r1)]`` is longer than ``eps``; the word's row is the
    unweighted mean of those frames. Words with ``|r1 - r0| < eps`` get no row. Work is done in
    chunks of words so that at most about ``PAIR_BUDGET`` gathered values exist at once.
    """
    n_w = word_intervals.shape[0]
    d = frame_features.shape[1]
    means = np.zeros((n_w, d), np.float64)
    rows = np.zeros((n_w, 2), np.float64)
    present = np.zeros(n_w, bool)
    finite = np.isfinite(frame_intervals).all(axis=1)
    if not finite.all():  # NaN intervals never satisfy the overlap test (as in the SDK)
        frame_intervals, frame_features = frame_intervals[finite], frame_features[finite]
    if n_w == 0 or frame_intervals.shape[0] == 0:
        return WordRows(means, rows, present)
    order = np.argsort(frame_intervals[:, 0], kind="stable")  # the SDK sorts rows by start, stably
    if not (order[1:] > order[:-1]).all():
        frame_intervals, frame_features = frame_intervals[order], frame_features[order]
    s0, s1 = frame_intervals[:, 0], frame_intervals[:, 1]
    r0, r1 = word_intervals[:, 0], word_intervals[:, 1]
    valid = np.abs(r1 - r0) >= eps  # zero-length reference rows vanish (NaN compares False)
    # Candidate frames of word i form the index range [lo_i, hi_i): starts are sorted, and the running
    # maximum of the ends is sorted, so both bounds are binary searches; the exact test follows.
    hi = np.searchsorted(s0, r1 + eps, side="left")
    lo = np.searchsorted(np.maximum.accumulate(s1), r0 - eps, side="right")
    counts = np.where(valid, np.maximum(hi - lo, 0), 0)
    per_chunk = max(1, PAIR_BUDGET // max(d, 1))
    cum = np.cumsum(counts)
    start = 0
    while start < n_w:
        # the largest word range whose pair count fits the budget (at least one word)
        base = cum[start - 1] if start else 0
        stop = max(int(np.searchsorted(cum, base + per_chunk, side="right")), start + 1)
        _collapse_chunk(start, stop, lo, counts, s0, s1, r0, r1, frame_features, eps, means, rows, present)
        start = stop
    return WordRows(means, rows, present)


def _collapse_chunk(
    a: int, b: int, lo: np.ndarray, counts: np.ndarray, s0: np.ndarray, s1: np.ndarray, r0: np.ndarray,
    r1: np.ndarray, feats: np.ndarray, eps: float, means: np.ndarray, rows: np.ndarray, present: np.ndarray,
) -> None:
    c = counts[a:b]
    total = int(c.sum())
    if total == 0:
        return
    word = np.repeat(np.arange(a, b), c)  # pair -> word, grouped by word
    offsets = np.cumsum(c) - c
    frame = lo[word] + (np.arange(total) - np.repeat(offsets, c))
    fs0, fs1, ws0, ws1 = s0[frame], s1[frame], r0[word], r1[word]
    c0, c1 = np.maximum(fs0, ws0), np.minimum(fs1, ws1)
    keep = (fs0 < ws1 + eps) & (fs1 > ws0 - eps) & (np.abs(c0 - c1) > eps)
    if not keep.any():
        return
    word, frame, c0, c1 = word[keep], frame[keep], c0[keep], c1[keep]
    first = np.flatnonzero(np.r_[True, word[1:] != word[:-1]])
    owners = word[first]
    n = np.diff(np.r_[first, word.shape[0]])
    sums = np.add.reduceat(feats[frame], first, axis=0, dtype=np.float64)
    means[owners] = sums / n[:, None]
    # the collapsed row's interval spans the kept clipped intervals (SDK: intervals.min(), .max())
    rows[owners, 0] = np.minimum.reduceat(np.minimum(c0, c1), first)
    rows[owners, 1] = np.maximum.reduceat(np.maximum(c0, c1), first)
    present[owners] = True


def overlap_matrix(
    label_intervals: np.ndarray, row_intervals: np.ndarray, present: np.ndarray, *, eps: float = EPS
) -> np.ndarray:
    """``(n_l, n_w)`` bool: word-level row w is part of label segment k (SDK ``align(labels)``, §3.3)."""
    n_l, n_w = label_intervals.shape[0], row_intervals.shape[0]
    out = np.zeros((n_l, n_w), bool)
    if n_l == 0 or n_w == 0:
        return out
    step = max(1, (1 << 22) // n_w)  # bounded temporaries for very long videos
    s0, s1 = row_intervals[None, :, 0], row_intervals[None, :, 1]
    for a in range(0, n_l, step):
        l0, l1 = label_intervals[a:a + step, 0:1], label_intervals[a:a + step, 1:2]
        c0, c1 = np.maximum(s0, l0), np.minimum(s1, l1)
        out[a:a + step] = (s0 < l1 + eps) & (s1 > l0 - eps) & (np.abs(c0 - c1) > eps) & present[None, :]
    return out


def znorm(x: np.ndarray) -> np.ndarray:
    """MISA's per-segment z-normalisation over time: ``(x - mean) / (std + 1e-6)``, ddof 0, non-finite → 0."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        out = (x - x.mean(axis=0, keepdims=True)) / (x.std(axis=0, keepdims=True) + NORM_EPS)
    out[~np.isfinite(out)] = 0
    return out


def segment_id(dataset: str, vid: str, k: int) -> str:
    """``<vid>_<k+1>`` for MOSI (clip ids are 1-based), ``<vid>_<k>`` otherwise (SDK index k)."""
    return f"{vid}_{k + 1}" if dataset.lower() == "mosi" else f"{vid}_{k}"


# ---------------------------------------------------------------------------------------------
# The dataset builder


class _Counts:
    """Drop reasons (overall and per split) and non-finite values, for ``meta``."""

    def __init__(self) -> None:
        self.dropped: Counter[str] = Counter({r: 0 for r in DROP_REASONS})
        self.by_split: dict[str, Counter[str]] = {s: Counter() for s in SPLITS}
        self.nonfinite: Counter[str] = Counter()

    def drop(self, reason: str, split: str | None, n: int = 1) -> None:
        self.dropped[reason] += n
        if split is not None:
            self.by_split[split][reason] += n

    def clean(self, x: np.ndarray, field: str) -> np.ndarray:
        bad = ~np.isfinite(x)
        n = int(bad.sum())
        if n:
            x = x.copy()
            x[bad] = 0
            self.nonfinite[field] += n
        return x


def _video_segments(
    vid: str, split: str, labels: CsdEntry, words: CsdEntry | None, modal: dict[str, CsdEntry | None],
    *, dataset: str, normalize: bool, impute: bool, counts: _Counts, where: str, word_cache: dict[bytes, str],
) -> list[Segment]:
    """Every kept segment of one video (DATA.md §3.2–§3.5)."""
    label_values = labels.features.reshape(labels.features.shape[0], -1)
    n_l = label_values.shape[0]
    if words is None or any(entry is None for entry in modal.values()):
        counts.drop("missing_modality", split, n_l)
        return []
    # step 1: words are the reference; order them by start (the SDK re-sorts them, stably, in step 2)
    order = np.argsort(words.intervals[:, 0], kind="stable")
    w_iv = words.intervals[order]
    tokens = decode_words(words.features[order], where=f"{where} (words, video {vid!r})", cache=word_cache)
    word_ok = (np.abs(w_iv[:, 1] - w_iv[:, 0]) >= EPS) & np.isfinite(w_iv).all(axis=1)
    rows: dict[str, WordRows] = {}
    for role, entry in modal.items():
        assert entry is not None
        collapsed = collapse_to_words(w_iv, entry.intervals, entry.features)
        if impute:  # MMLatch: every word without frames gets a zero row with the word's interval
            fill = word_ok & ~collapsed.present
            collapsed.intervals[fill] = w_iv[fill]
            collapsed.present |= fill
        rows[role] = collapsed
    # step 2: label rows are the reference; k is the row index, whatever the time order
    in_word = overlap_matrix(labels.intervals, w_iv, word_ok)
    in_modal = {role: overlap_matrix(labels.intervals, r.intervals, r.present) for role, r in rows.items()}
    zero_length = np.abs(labels.intervals[:, 1] - labels.intervals[:, 0]) < EPS
    out: list[Segment] = []
    for k in range(n_l):
        chosen = in_word[k]
        if zero_length[k] or not chosen.any():
            counts.drop("empty", split)
            continue
        if any(not m[k].any() for m in in_modal.values()):
            counts.drop("missing_modality", split)
            continue
        if any(not np.array_equal(m[k], chosen) for m in in_modal.values()):
            counts.drop("length_mismatch", split)  # some words lack frames in a modality
            continue
        idx = np.flatnonzero(chosen)
        feats = {role: counts.clean(rows[role].features[idx], role) for role in rows}
        keep = np.array([tokens[i] != PAUSE for i in idx], bool)
        if not keep.any():
            counts.drop("empty", split)
            continue
        seg_words = [tokens[i] for i, kept in zip(idx, keep) if kept]
        arrays = {}
        for role, x in feats.items():
            x = x[keep]
            arrays[role] = (znorm(x) if normalize else x).astype(np.float32)
        label = float(label_values[k, 0])  # NaN kept: validate() refuses it, naming the file and split
        out.append(Segment(id=segment_id(dataset, vid, k), label=label, words=seg_words,
                           visual=arrays.get("visual"), acoustic=arrays.get("acoustic")))
    return out


def build_csd_dataset(
    *,
    labels: str | Path,
    words: str | Path | None = None,
    visual: str | Path | None = None,
    acoustic: str | Path | None = None,
    dataset: str = "mosi",
    folds: str | Path | None = None,
    normalize: bool = True,
    impute: bool = False,
    progress: bool = False,
) -> CanonicalDataset:
    """Word-aligned regression segments from CMU-SDK ``.csd`` files, the MISA recipe (module docstring).

    ``labels`` alone gives label-only segments (``words`` None) for label checks; ``words`` alone
    gives text-only segments; ``visual`` / ``acoustic`` need ``words`` (they are aligned to it).
    ``folds`` None uses the standard folds shipped with misalatch for ``dataset``. Files are read
    video by video, so memory is bounded by the longest video plus the output.

    Raises ``DataFormatError`` (naming the file) for unreadable files, inconsistent feature
    widths, a sequence with no valid entry, or a split left empty; per-segment problems are counted
    in ``meta["dropped"]`` / ``meta["nonfinite"]`` instead.
    """
    from tqdm.auto import tqdm

    if words is None and (visual is not None or acoustic is not None):
        raise ConfigError("visual/acoustic sequences are aligned to the words: give the words sequence too")
    labels = Path(labels)
    split_by_vid = split_of(load_folds(dataset, folds))
    counts = _Counts()
    word_cache: dict[bytes, str] = {}  # one str object per distinct word
    splits: dict[str, list[Segment]] = {s: [] for s in SPLITS}
    paths = {"words": words, "visual": visual, "acoustic": acoustic}
    with contextlib.ExitStack() as stack:
        label_seq = stack.enter_context(CsdSequence(labels, role="labels"))
        label_rows = _label_rows(label_seq)
        seqs = {role: stack.enter_context(CsdSequence(p, role=role, words=role == "words"))
                for role, p in paths.items() if p is not None}
        for vid in tqdm(list(label_rows), desc="aligning", unit="video", disable=not progress):
            entry = label_rows[vid]
            n_l = entry.intervals.shape[0]
            split = split_by_vid.get(vid)
            if split is None:
                counts.drop("no_fold", None, n_l)
            elif not seqs:  # label-only segments, for label checks
                values = entry.features.reshape(n_l, -1)
                splits[split].extend(
                    Segment(id=segment_id(dataset, vid, k), label=float(values[k, 0]))
                    for k in range(n_l)
                )
            else:
                modal = {role: seqs[role].read(vid) for role in MODALITY_ROLES if role in seqs}
                splits[split].extend(_video_segments(
                    vid, split, entry, seqs["words"].read(vid), modal, dataset=dataset, normalize=normalize,
                    impute=impute, counts=counts, where=str(labels), word_cache=word_cache,
                ))
        report = _sequence_report(label_seq, seqs, label_rows, split_by_vid)
    dropped = dict(counts.dropped)
    sizes = {s: len(v) for s, v in splits.items()}
    log.info("%s: %d segments (train %d / valid %d / test %d); dropped %s; non-finite set to 0: %s",
             labels.name, sum(sizes.values()), sizes["train"], sizes["valid"], sizes["test"],
             {k: v for k, v in dropped.items() if v} or "none", dict(counts.nonfinite) or "none")
    for split, n in sizes.items():
        if n == 0:
            raise DataFormatError(
                f"{labels}: split {split!r} has no segment after alignment ({sum(sizes.values())} segments kept; "
                f"dropped {dropped}; fold file {folds_source(folds)['path']}); check the folds and the "
                f"modality files"
            )
    sources = [{**source_entry(labels), "role": "labels"}]
    sources += [{**source_entry(p), "role": role} for role, p in paths.items() if p is not None]
    sources.append(folds_source(folds))
    ds = CanonicalDataset(
        name=dataset.lower(),
        task="regression",
        splits=splits,
        alignment="word",
        num_classes=1,
        meta={
            "reader": READER,
            "sources": sources,
            "dropped": dropped,
            "dropped_by_split": {s: dict(c) for s, c in counts.by_split.items() if c},
            "nonfinite": dict(counts.nonfinite),
            **report,
            "options": {
                "normalize": normalize,
                "impute": impute,
                "eps": EPS,
                "segment_ids": "<vid>_<k+1>" if dataset.lower() == "mosi" else "<vid>_<k>",
                "modalities": [role for role in paths if paths[role] is not None],
            },
        },
    )
    ds.validate(str(labels))
    return ds


def _sequence_report(
    label_seq: CsdSequence, seqs: dict[str, CsdSequence], label_rows: dict[str, CsdEntry], split_by_vid: dict[str, str]
) -> dict[str, Any]:
    """Per-file facts for ``meta`` (skipped entries, videos missing or unlabelled, metadata); raises when
    a sequence had no valid entry at all, which means a wrong or broken file rather than bad rows."""
    for seq in seqs.values():
        if seq.skipped and seq.rows_read == 0:
            raise DataFormatError(
                f"{seq.path}: no valid entry among the labelled videos ({len(seq.skipped)} skipped: "
                f"{_examples(seq.skipped)})"
            )
    missing: dict[str, int] = {}
    for role, seq in seqs.items():
        absent = [v for v in label_rows if v in split_by_vid and v not in seq]
        missing[role] = len(absent)
        if absent:
            log.info("%s sequence lacks %d labelled videos (their segments: missing_modality), e.g. %s",
                     role, len(absent), absent[:3])
        if seq.skipped:
            log.warning("%s sequence: skipped %d invalid entries: %s", role, len(seq.skipped), _examples(seq.skipped))
    return {
        "skipped_entries": {role: dict(list(seq.skipped.items())[:20]) for role, seq in seqs.items() if seq.skipped},
        "skipped_entry_counts": {role: len(seq.skipped) for role, seq in seqs.items() if seq.skipped},
        "videos_missing": missing,
        "videos_unlabelled": {role: sum(1 for v in seq.videos() if v not in label_rows) for role, seq in seqs.items()},
        "csd_metadata": {"labels": label_seq.summary(), **{role: seq.summary() for role, seq in seqs.items()}},
    }
