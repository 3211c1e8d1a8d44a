"""A folder of clips + a transcripts CSV -> a prepared dataset (``misalatch extract``'s library).

The pieces, in the order they run:

* ``read_transcripts`` reads ``T.csv`` (columns ``clip``, ``text``; optional ``segment_id``,
  ``label``, ``split``, ``start``, ``end``) and resolves every clip under ``--media``. A bad row (a
  missing file, a duplicate id, empty text, a bad number, bytes that are not UTF-8, a symbolic link
  that leaves the media folder) becomes a ``Failure`` naming the file and the reason; the other
  rows go on. ``read_word_timings`` reads the optional word timings CSV (``segment_id, word,
  start, end``, seconds on the clip's own time axis, as forced aligners export them).
* ``extract_rows`` runs ``misalatch.media.extract_clip`` for every row, in ``workers``
  processes, one job per clip file. With a cache folder every segment is stored as
  ``cache/<key>.npz``, ``key = sha256(file content sha256 | recipe fingerprint | start | end |
  modalities)``, written under a temporary name and renamed: a re-run, or a run after ``kill -9``,
  extracts nothing twice and never reads half a clip.
* ``extract_corpus`` ties it together in an output folder (below) and, once every shard has
  reported, assembles the prepared dataset (``misalatch.data.cache.prepared_files``): segments in
  transcript order, the seeded split by clip when the CSV has no ``split`` column, features
  standardised with train-split statistics (recorded, so ``predict --media`` reproduces them exactly),
  word-aligned with ``misalatch.data.readers.csd.collapse_to_words`` when word timings are given
  (else ``alignment: none``), and the recipe in ``meta["media"]``.

The output folder ``--out`` (a misalatch ``prepare`` folder: ``train --data OUT`` reads it)::

    meta.json train.npz valid.npz test.npz   the prepared dataset (committed as one unit, meta.json last)
    failures.csv                              one row per failed segment: line, clip, segment_id, reason
    cache/<key>.npz                           the per-segment features (the cache)
    shards/<K>-of-<N>.json                    what shard K extracted (cache keys, failures) for this plan
    run.json                                  the misalatch marker (every file listed once complete)

``--shard K/N`` takes every N-th clip file (in transcript order), starting at the K-th. Shards may
run on different machines over one shared folder; each writes only its cache entries and its own
report, and the shard that finds all N reports of the same plan (the same transcripts, word timings,
recipe and options) when it finishes assembles the dataset, exactly as one process would. If that
shard dies while assembling, running any shard again finishes the job from the cache.
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

import numpy as np

from misalatch.data.canonical import SPLITS, CanonicalDataset, Segment
from misalatch.errors import ConfigError, DataFormatError, MisalatchError
from misalatch.io.atomic import atomic_write_bytes, atomic_write_json, cleanup_stale_temporaries, commit_files, host_id
from misalatch.io.atomic import parse_temporary_name
from misalatch.io.owned import MARKER, MARKER_FORMAT, MARKER_VERSION, check_target, read_marker
from misalatch.media.features import SegmentFeatures

log = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = ("acoustic", "visual")
SPLIT_RATIOS: tuple[float, float, float] = (0.70, 0.15, 0.15)
"""train / valid / test shares of the clip files when the transcripts have no ``split`` column."""
DEFAULT_SPLIT_SEED = 0
REQUIRED_COLUMNS: tuple[str, ...] = ("clip", "text")
OPTIONAL_COLUMNS: tuple[str, ...] = ("segment_id", "label", "split", "start", "end")
TIMING_COLUMNS: tuple[str, ...] = ("segment_id", "word", "start", "end")
SPLIT_ALIASES: dict[str, str] = {"train": "train", "valid": "valid", "dev": "valid", "test": "test"}
FAILURES_FILE = "failures.csv"
CACHE_DIR = "cache"
SHARDS_DIR = "shards"
NORM_EPS = 1e-6
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")

Extractor = Callable[..., Any]
"""``extract_clip(path, recipe, *, start, end, modalities) -> ClipFeatures`` (tests pass a fake)."""


# ---------------------------------------------------------------------------------------------
# rows and failures
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipRow:
    """One segment to extract: a transcript row whose clip file was found."""

    index: int  # position in the transcripts (0-based data row): the order of the dataset
    line: int | None  # line in the transcripts CSV (None for --text)
    clip: str  # as written in the CSV (relative to --media)
    path: str  # the file it resolved to
    segment_id: str
    text: str
    label: float | None = None
    split: str | None = None
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class Failure:
    """A segment that is not in the dataset, and why (one line for the user, one row of failures.csv)."""

    clip: str
    reason: str
    segment_id: str = ""
    line: int | None = None

    def message(self) -> str:
        where = self.clip + (f" (segment {self.segment_id!r}" + (f", line {self.line})" if self.line else ")")
                             if self.segment_id else (f" (line {self.line})" if self.line else ""))
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class Transcripts:
    """The rows to extract, the rows that failed before extraction, and where they came from."""

    rows: tuple[ClipRow, ...]
    failures: tuple[Failure, ...] = ()
    source: dict[str, str] | None = None  # {"path", "sha256"} of the CSV (None for --text)
    labelled: bool = True
    has_split: bool = False


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _decode_lines(path: Path) -> str:
    """The CSV's text; bytes that are not UTF-8 are kept as surrogates so that only their row fails."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataFormatError(f"{path}: cannot be read ({err.strerror})") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataFormatError(f"{path}: the file is UTF-16 encoded; save it as UTF-8 (expected a UTF-8 CSV)")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    return raw.decode("utf-8", errors="surrogateescape")


def _bad_bytes(values: Iterable[str]) -> str | None:
    for value in values:
        for ch in value:
            if 0xDC80 <= ord(ch) <= 0xDCFF:
                return f"0x{ord(ch) - 0xDC00:02x}"
    return None


def _csv_rows(path: Path, required: Sequence[str], known: Sequence[str]) -> Iterable[tuple[int, dict[str, str]]]:
    """(line, row) for every data row, after checking the header; whole-file problems raise."""
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file (expected a CSV with columns {', '.join(required)})")
    text = _decode_lines(path)
    pulled = [0]

    def lines() -> Iterable[str]:
        for line in io.StringIO(text, newline=""):
            pulled[0] += 1
            yield line

    reader = csv.DictReader(lines())
    try:
        columns = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = columns
        missing = [c for c in required if c not in columns]
        if missing:
            raise DataFormatError(
                f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; the header has "
                f"{', '.join(repr(c) for c in columns) or 'no columns'} (expected {', '.join(required)}"
                f"{', optional ' + ', '.join(c for c in known if c not in required) if len(known) > len(required) else ''})")
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        if dupes:
            raise DataFormatError(f"{path}: column(s) {', '.join(map(repr, dupes))} appear more than once in the header")
        for row in reader:
            yield reader.line_num, row
    except csv.Error as err:
        raise DataFormatError(f"{path}, line {pulled[0]}: not a readable CSV row ({err})") from None


def _number(raw: str) -> float | None:
    raw = raw.strip()
    return float(raw) if _NUMBER.fullmatch(raw) else None


def resolve_clip(media: Path, clip: str) -> Path:
    """The file ``clip`` names under ``media`` (a folder, or the one clip the user passed).

    A path that leaves the media folder (``..``, an absolute path, or a symbolic link pointing
    outside) is refused: only paths the user passed are followed out of it. Only regular files are
    accepted (a FIFO or a device would hang the decoder). Raises ``MediaError``-compatible
    ``DataFormatError`` with the reason.
    """
    if media.is_file():
        base = media.parent
        candidate = base / clip
        if not candidate.exists() or candidate.resolve() != media.resolve():
            raise DataFormatError(f"not the --media file {media.name!r} (with a single clip as --media, "
                                  "every row must name it)")
        return media
    if not clip.strip():
        raise DataFormatError("empty clip path")
    if Path(clip).is_absolute():
        raise DataFormatError("an absolute path; clips are named relative to --media")
    candidate = media / clip
    if not candidate.exists():
        raise DataFormatError(f"no such file under {media}" if not candidate.is_symlink() else "a broken symbolic link")
    real = candidate.resolve()
    root = media.resolve()
    if real != root and root not in real.parents:
        raise DataFormatError(f"resolves to {real}, outside the media folder {media} (a symbolic link or '..'); "
                              "pass that file as --media to use it")
    mode = real.stat().st_mode
    if not stat.S_ISREG(mode):
        raise DataFormatError("not a regular file")
    return real


def read_transcripts(path: str | os.PathLike[str], media: str | os.PathLike[str], *,
                     task: Literal["regression", "classification"] = "regression",
                     need_labels: bool = True) -> Transcripts:
    """Read ``T.csv`` against the media folder; per-row problems become ``Failure`` objects.

    ``need_labels``: the ``label`` column is required (``extract``; ``predict --media`` reads labels
    when present and never needs them). Regression labels are finite numbers; classification labels
    class indices 0, 1, ... Whole-file problems (no such file, missing columns, UTF-16, an unreadable
    CSV) raise ``DataFormatError``.
    """
    path, media = Path(path), Path(media)
    if not media.exists():
        raise ConfigError(f"--media {media}: no such file or folder")
    rows: list[ClipRow] = []
    failures: list[Failure] = []
    by_id: dict[str, list[int]] = {}
    columns_seen: set[str] = set()
    parsed: list[tuple[int, dict[str, str]]] = list(_csv_rows(path, REQUIRED_COLUMNS, REQUIRED_COLUMNS + OPTIONAL_COLUMNS))
    if parsed:
        columns_seen = {k for k in parsed[0][1] if k is not None}
    labelled = "label" in columns_seen
    if need_labels and not labelled:
        raise DataFormatError(f"{path}: column 'label' is missing; a dataset to train on needs one label per row "
                              "(predict --media reads transcripts without labels)")
    has_split = "split" in columns_seen
    candidates: list[tuple[int, dict[str, Any]]] = []
    for n, (line, row) in enumerate(parsed):
        clip = (row.get("clip") or "").strip()
        if None in row:
            failures.append(Failure(clip or "?", f"the row has more fields than the header", line=line))
            continue
        if any(row.get(c) is None for c in REQUIRED_COLUMNS):
            failures.append(Failure(clip or "?", "the row has fewer fields than the header", line=line))
            continue
        seg_id = (row.get("segment_id") or "").strip() or str(Path(clip).with_suffix("")).replace(os.sep, "/")
        bad = _bad_bytes(v for v in row.values() if v is not None)
        if bad is not None:
            failures.append(Failure(clip.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                                    f"not valid UTF-8 (byte {bad}); save the transcripts as UTF-8", line=line))
            continue
        by_id.setdefault(seg_id, []).append(line)
        candidates.append((n, {"line": line, "clip": clip, "segment_id": seg_id, "row": row}))
    for n, item in candidates:
        line, clip, seg_id, row = item["line"], item["clip"], item["segment_id"], item["row"]
        fail = lambda reason: failures.append(Failure(clip, reason, seg_id, line))  # noqa: E731
        if len(by_id[seg_id]) > 1:
            fail(f"duplicate segment id (lines {', '.join(map(str, by_id[seg_id]))}); give each row its own "
                 "segment_id")
            continue
        text = row["text"].strip()
        if not text:
            fail("empty text (field 'text'); every segment needs its transcript")
            continue
        label: float | None = None
        raw_label = (row.get("label") or "").strip()
        if labelled:
            value = _number(raw_label)
            if task == "classification":
                if value is None or value != int(value) or value < 0:
                    if need_labels or raw_label:
                        fail(f"field 'label': expected a class index 0, 1, ..., got {raw_label!r}")
                        continue
                else:
                    label = float(int(value))
            elif value is None or not math.isfinite(value):
                if need_labels or raw_label:
                    fail(f"field 'label': expected a number, got {raw_label!r}")
                    continue
            else:
                label = value
        split = None
        if has_split:
            raw_split = (row.get("split") or "").strip()
            split = SPLIT_ALIASES.get(raw_split.lower())
            if split is None and need_labels:
                fail(f"field 'split': expected train, valid (or dev) or test, got {raw_split!r}")
                continue
        times: dict[str, float | None] = {}
        for key in ("start", "end"):
            raw = (row.get(key) or "").strip()
            value = _number(raw) if raw else None
            if raw and (value is None or not math.isfinite(value) or value < 0):
                fail(f"field {key!r}: expected seconds >= 0, got {raw!r}")
                break
            times[key] = value
        else:
            if times["start"] is not None and times["end"] is not None and times["end"] <= times["start"]:
                fail(f"the segment ends ({times['end']} s) before it starts ({times['start']} s)")
                continue
            try:
                resolved = resolve_clip(media, clip)
            except DataFormatError as err:
                fail(str(err))
                continue
            rows.append(ClipRow(index=n, line=line, clip=clip, path=str(resolved), segment_id=seg_id, text=text,
                                label=label, split=split, start=times["start"], end=times["end"]))
    return Transcripts(tuple(rows), tuple(failures), {"path": str(path), "sha256": _sha256_file(path)},
                       labelled=labelled, has_split=has_split)


def single_clip(media: str | os.PathLike[str], text: str, *, segment_id: str | None = None) -> Transcripts:
    """The transcripts of ``--media ONE_CLIP --text "..."``: one unlabelled row."""
    media = Path(media)
    if not media.is_file():
        raise ConfigError(f"--media {media}: --text needs one clip file (use --transcripts for a folder)")
    if not text.strip():
        raise ConfigError("--text: empty; give what is said in the clip")
    if not stat.S_ISREG(media.resolve().stat().st_mode):
        raise ConfigError(f"--media {media}: not a regular file")
    row = ClipRow(index=0, line=None, clip=media.name, path=str(media.resolve()),
                  segment_id=segment_id or media.stem, text=text.strip())
    return Transcripts((row,), labelled=False)


@dataclass(frozen=True)
class WordTimings:
    """Words with their times (seconds on the clip's time axis) per segment id, sorted by start."""

    words: dict[str, tuple[tuple[str, float, float], ...]]
    problems: dict[str, str]  # segment id -> why its timings cannot be used
    source: dict[str, str]


def read_word_timings(path: str | os.PathLike[str]) -> WordTimings:
    """Read a word timings CSV (``segment_id, word, start, end``); a bad row fails its segment only."""
    path = Path(path)
    words: dict[str, list[tuple[str, float, float]]] = {}
    problems: dict[str, str] = {}
    for line, row in _csv_rows(path, TIMING_COLUMNS, TIMING_COLUMNS):
        seg = (row.get("segment_id") or "").strip()
        if not seg or any(row.get(c) is None for c in TIMING_COLUMNS):
            raise DataFormatError(f"{path}, line {line}: expected segment_id, word, start, end")
        bad = _bad_bytes(v for v in row.values() if v is not None)
        if bad is not None:
            problems.setdefault(seg, f"{path}, line {line}: not valid UTF-8 (byte {bad})")
            continue
        start, end, word = _number(row["start"]), _number(row["end"]), row["word"].strip()
        if start is None or end is None or not (0 <= start <= end) or not math.isfinite(end):
            problems.setdefault(seg, f"{path}, line {line}: word {word!r} has start {row['start']!r}, end "
                                     f"{row['end']!r}; expected seconds with 0 <= start <= end")
            continue
        if not word:
            problems.setdefault(seg, f"{path}, line {line}: empty word")
            continue
        words.setdefault(seg, []).append((word, start, end))
    ordered = {k: tuple(sorted(v, key=lambda w: (w[1], w[2]))) for k, v in words.items() if k not in problems}
    return WordTimings(ordered, problems, {"path": str(path), "sha256": _sha256_file(path)})


def assign_splits(rows: Sequence[ClipRow], seed: int = DEFAULT_SPLIT_SEED,
                  ratios: tuple[float, float, float] = SPLIT_RATIOS) -> dict[str, str]:
    """Segment id -> split, by clip file: every segment of a clip lands in the same split (no speaker's
    video in both train and test). The distinct clips (sorted by name) are shuffled with
    ``numpy.random.default_rng(seed)``; the first 70 % go to train, the next 15 % to valid and the
    rest to test, with at least one clip in valid and in test."""
    clips = sorted({r.clip for r in rows})
    if len(clips) < 3:
        raise ConfigError(f"the transcripts name {len(clips)} clip file(s); a split by clip needs at least 3 "
                          "(or give a 'split' column)")
    order = [clips[i] for i in np.random.default_rng(seed).permutation(len(clips))]
    n_valid = max(1, round(ratios[1] * len(clips)))
    n_test = max(1, round(ratios[2] * len(clips)))
    n_train = len(clips) - n_valid - n_test
    if n_train < 1:
        n_train, n_valid, n_test = 1, 1, len(clips) - 2
    which = {c: ("train" if i < n_train else "valid" if i < n_train + n_valid else "test") for i, c in enumerate(order)}
    return {r.segment_id: which[r.clip] for r in rows}


# ---------------------------------------------------------------------------------------------
# extraction with a cache
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Job:
    path: str
    rows: tuple[tuple[int, float | None, float | None], ...]  # (row index, start, end)
    recipe: Any
    fingerprint: str
    modalities: tuple[str, ...]
    cache_dir: str | None
    extractor: Extractor | None


@dataclass(frozen=True)
class _Outcome:
    index: int
    key: str | None = None
    features: SegmentFeatures | None = None  # without a cache folder
    failure: str | None = None
    cached: bool = False
    seconds: float = 0.0  # media seconds extracted now (not from the cache)
    warnings: tuple[str, ...] = ()  # the extractor's notes (no face in some rows, ...), logged by the parent


def cache_key(content_sha256: str, fingerprint: str, start: float | None, end: float | None,
              modalities: Sequence[str]) -> str:
    """The cache key of one segment: the file's content, the recipe and the cut."""
    text = f"{content_sha256}|{fingerprint}|{start!r}|{end!r}|{','.join(modalities)}"
    return hashlib.sha256(text.encode()).hexdigest()


def _default_extractor() -> Extractor:
    from misalatch.media.features import extract_clip  # imports the media libraries lazily itself

    return extract_clip


def _run_job(job: _Job) -> list[_Outcome]:
    """Extract (or find in the cache) every segment of one clip file; runs in a worker process."""
    extractor = job.extractor or _default_extractor()
    outcomes: list[_Outcome] = []
    content: str | None = None
    for index, start, end in job.rows:
        try:
            key = None
            if job.cache_dir is not None:
                if content is None:
                    content = _sha256_file(Path(job.path))
                key = cache_key(content, job.fingerprint, start, end, job.modalities)
                target = Path(job.cache_dir) / f"{key}.npz"
                if target.is_file():
                    try:
                        SegmentFeatures.from_file(target)
                        outcomes.append(_Outcome(index, key=key, cached=True))
                        continue
                    except Exception as err:  # noqa: BLE001 - a damaged entry is extracted again
                        log.warning("%s: damaged cache entry (%s); extracting again", target, err)
            clip = extractor(job.path, job.recipe, start=start, end=end, modalities=job.modalities)
            feats = SegmentFeatures.of(clip)  # any extractor's result, without its path
            seconds = feats.end - feats.start
            if key is not None:
                atomic_write_bytes(Path(job.cache_dir) / f"{key}.npz", feats.to_bytes())  # type: ignore[arg-type]
                outcomes.append(_Outcome(index, key=key, seconds=seconds, warnings=feats.warnings))
            else:
                outcomes.append(_Outcome(index, features=feats, seconds=seconds, warnings=feats.warnings))
        except MisalatchError as err:
            outcomes.append(_Outcome(index, failure=_strip_path(str(err), job.path)))
        except OSError as err:
            outcomes.append(_Outcome(index, failure=f"cannot be read ({err.strerror or err})"))
        except Exception as err:  # noqa: BLE001 - one clip's bug must not stop the corpus; named in failures.csv
            outcomes.append(_Outcome(index, failure=f"extraction failed ({type(err).__name__}: {err})"))
    return outcomes


def _strip_path(message: str, path: str) -> str:
    for prefix in (f"{path}: ", f"{Path(path).name}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def progress_default() -> bool:
    """Bars only on an interactive terminal and when misalatch logs at INFO or below (not with -q)."""
    return sys.stderr.isatty() and logging.getLogger("misalatch").getEffectiveLevel() <= logging.INFO


def default_workers() -> int:
    """The CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@dataclass
class ExtractionStats:
    extracted: int = 0
    cached: int = 0
    failed: int = 0
    media_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def real_time_factor(self) -> float:
        """Seconds of media extracted per wall second (cache hits excluded)."""
        return self.media_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


def extract_rows(rows: Sequence[ClipRow], recipe: Any, *, modalities: Sequence[str] = MODALITIES,
                 workers: int = 1, cache_dir: Path | None = None, progress: bool | None = None,
                 extractor: Extractor | None = None, stats: ExtractionStats | None = None) -> dict[int, _Outcome]:
    """Extract every row (one job per clip file) in ``workers`` processes; row index -> outcome.

    With ``cache_dir`` the features go to the cache and outcomes carry keys; without, they carry the
    arrays. A failed segment is logged on one line (file and reason) and the others go on.
    """
    by_file: dict[str, list[ClipRow]] = {}
    for row in rows:
        by_file.setdefault(row.path, []).append(row)
    jobs = [_Job(path, tuple((r.index, r.start, r.end) for r in group), recipe, _fingerprint_of(recipe),
                 tuple(modalities), None if cache_dir is None else str(cache_dir), extractor)
            for path, group in by_file.items()]
    clip_of = {r.index: r for r in rows}
    stats = stats if stats is not None else ExtractionStats()
    results: dict[int, _Outcome] = {}
    show = progress_default() if progress is None else progress
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    began = time.perf_counter()
    bar = tqdm(total=len(rows), unit="clip", desc="extract", disable=not show, file=sys.stderr, smoothing=0.1)

    def take(outcomes: list[_Outcome]) -> None:
        for out in outcomes:
            results[out.index] = out
            if out.failure is not None:
                stats.failed += 1
                log.warning("%s", Failure(clip_of[out.index].clip, out.failure, clip_of[out.index].segment_id,
                                          clip_of[out.index].line).message())
            elif out.cached:
                stats.cached += 1
            else:
                for warning in out.warnings:
                    log.warning("%s (segment %r): %s", clip_of[out.index].clip, clip_of[out.index].segment_id, warning)
                stats.extracted += 1
                stats.media_seconds += out.seconds
        stats.wall_seconds = time.perf_counter() - began
        bar.update(len(outcomes))
        if stats.media_seconds:
            bar.set_postfix_str(f"{stats.real_time_factor:.1f}x real time", refresh=False)

    n_workers = max(1, min(workers, len(jobs)))
    with logging_redirect_tqdm(loggers=[logging.getLogger("misalatch")]) if show else _nullcontext():
        try:
            if n_workers == 1:
                for job in jobs:
                    take(_run_job(job))
            else:
                _run_pool(jobs, n_workers, take, clip_of)
        finally:
            bar.close()
    stats.wall_seconds = time.perf_counter() - began
    return results


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _run_pool(jobs: list[_Job], n_workers: int, take: Callable[[list[_Outcome]], None],
              clip_of: Mapping[int, ClipRow]) -> None:
    """Jobs in ``n_workers`` spawned processes (MediaPipe and FFmpeg are not fork-safe); a worker that
    dies (a crash in a native library) fails its jobs with that reason, the others go on."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    pending = list(jobs)
    while pending:
        with concurrent.futures.ProcessPoolExecutor(n_workers, mp_context=context,
                                                    initializer=_worker_init) as pool:
            futures = {pool.submit(_run_job, job): job for job in pending}
            pending = []
            broken: list[_Job] = []
            try:
                for future in concurrent.futures.as_completed(futures):
                    try:
                        take(future.result())
                    except concurrent.futures.process.BrokenProcessPool:
                        broken.append(futures[future])
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        if broken:
            if len(broken) == 1 or len(broken) == len(jobs):
                take([_Outcome(i, failure="the extraction process died (a crash in a native library, or out of "
                                          "memory)") for job in broken for i, _, _ in job.rows])
            else:  # which job killed the pool is unknown: run the survivors again, one pool each time
                pending = broken[1:]
                take([_Outcome(i, failure="the extraction process died (a crash in a native library, or out of "
                                          "memory)") for i, _, _ in broken[0].rows])
            jobs = pending


def _worker_init() -> None:
    """Workers stay quiet: failures and the extractor's warnings are logged by the parent, one line each."""
    logging.getLogger("misalatch").setLevel(logging.ERROR)


def _fingerprint_of(recipe: Any) -> str:
    return str(recipe.fingerprint())


# ---------------------------------------------------------------------------------------------
# segments, normalisation and alignment
# ---------------------------------------------------------------------------------------------
def frame_intervals(n: int, rate: float, offset: float) -> np.ndarray:
    """(n, 2) start and end (seconds on the clip's axis) of n frames at ``rate`` from ``offset``."""
    starts = offset + np.arange(n, dtype=np.float64) / rate
    return np.stack([starts, starts + 1.0 / rate], axis=1)


def align_to_words(feats: SegmentFeatures, words: Sequence[tuple[str, float, float]],
                   modalities: Sequence[str]) -> dict[str, np.ndarray]:
    """Each modality's frames averaged over each word's interval (the CMU-SDK rule of
    ``misalatch.data.readers.csd.collapse_to_words``); a word without frames gets zeros."""
    from misalatch.data.readers.csd import collapse_to_words

    word_iv = np.array([[s, e] for _, s, e in words], dtype=np.float64).reshape(-1, 2)
    out: dict[str, np.ndarray] = {}
    for name in modalities:
        frames = getattr(feats, name)
        if frames is None:
            continue
        rate = feats.acoustic_rate if name == "acoustic" else feats.visual_rate
        rows = collapse_to_words(word_iv, frame_intervals(frames.shape[0], rate, feats.start),
                                 frames.astype(np.float64))
        out[name] = np.where(rows.present[:, None], rows.features, 0.0)
    return out


def check_words_inside(words: Sequence[tuple[str, float, float]], feats: SegmentFeatures) -> str | None:
    """Why the timings do not fit the segment (None when they do)."""
    for word, start, end in words:
        if start < feats.start - 1e-3 or end > feats.end + 1e-3:
            return (f"word {word!r} at {start:g}-{end:g} s lies outside the segment "
                    f"{feats.start:g}-{feats.end:g} s (word timings are seconds on the clip's time axis)")
    return None


def segment_arrays(row: ClipRow, feats: SegmentFeatures, modalities: Sequence[str],
                   timings: WordTimings | None) -> tuple[list[str], dict[str, np.ndarray]]:
    """The words and raw (not yet normalised) feature arrays of one segment; raises DataFormatError."""
    if timings is None:
        arrays = {m: np.asarray(getattr(feats, m), np.float64) for m in modalities if getattr(feats, m) is not None}
        for name, arr in arrays.items():
            if arr.shape[0] == 0:
                raise DataFormatError(f"no {name} frames in the segment")
        return row.text.split(), arrays
    if row.segment_id in timings.problems:
        raise DataFormatError(timings.problems[row.segment_id])
    words = timings.words.get(row.segment_id)
    if not words:
        raise DataFormatError("no word timings for this segment id")
    problem = check_words_inside(words, feats)
    if problem is not None:
        raise DataFormatError(problem)
    return [w for w, _, _ in words], align_to_words(feats, words, modalities)


def fit_normalization(arrays: Iterable[dict[str, np.ndarray]], modalities: Sequence[str]) -> dict[str, Any]:
    """Per-dimension mean and standard deviation (ddof 0) over every frame of the given segments (the
    train split); a dimension that does not vary keeps std 1. Stored in ``meta["media"]``."""
    sums: dict[str, list[np.ndarray]] = {m: [] for m in modalities}
    for item in arrays:
        for name, arr in item.items():
            sums[name].append(arr)
    stats: dict[str, Any] = {"kind": "standard", "fitted_on": "train"}
    for name, parts in sums.items():
        if not parts:
            continue
        x = np.concatenate(parts, axis=0)
        mean, std = x.mean(axis=0), x.std(axis=0)
        std = np.where(std > NORM_EPS, std, 1.0)
        stats[name] = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    return stats


def normalize(arrays: dict[str, np.ndarray], normalization: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """Apply recorded statistics (float64 arithmetic, then float32: the same bits in extract and predict)."""
    out = {}
    for name, arr in arrays.items():
        params = (normalization or {}).get(name) if (normalization or {}).get("kind") == "standard" else None
        if params is not None:
            mean, std = np.asarray(params["mean"], np.float64), np.asarray(params["std"], np.float64)
            if mean.shape != (arr.shape[1],) or std.shape != (arr.shape[1],):
                raise DataFormatError(f"{name} has {arr.shape[1]} features but the recorded normalisation has "
                                      f"{mean.shape[0]}")
            arr = (arr - mean) / std
        clean = np.asarray(arr, np.float32)
        clean[~np.isfinite(clean)] = 0
        out[name] = clean
    return out


# ---------------------------------------------------------------------------------------------
# the output folder
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExtractOptions:
    """How a corpus is extracted (each field is also a ``misalatch extract`` flag)."""

    modalities: tuple[str, ...] = MODALITIES
    task: Literal["regression", "classification"] = "regression"
    split_seed: int = DEFAULT_SPLIT_SEED
    normalize: bool = True
    workers: int = 0  # 0: every CPU this process may use
    shard: tuple[int, int] = (1, 1)
    name: str | None = None
    progress: bool | None = None  # None: on a terminal, unless -q

    def __post_init__(self) -> None:
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ConfigError(f"modalities: expected one or both of {', '.join(MODALITIES)}, got {list(self.modalities)}")
        k, n = self.shard
        if not (1 <= k <= n):
            raise ConfigError(f"--shard {k}/{n}: expected K/N with 1 <= K <= N")
        if self.workers < 0:
            raise ConfigError(f"--workers {self.workers}: expected 0 (every CPU) or more")


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise ConfigError(f"--shard {text!r}: expected K/N, e.g. 3/8 (shard 3 of 8)")
    k, n = int(match[1]), int(match[2])
    if not (1 <= k <= n):
        raise ConfigError(f"--shard {text}: expected 1 <= K <= N")
    return k, n


@dataclass
class ExtractResult:
    """What ``extract_corpus`` did."""

    out: Path
    shard: tuple[int, int]
    segments: int  # rows of the transcripts (all shards)
    failures: list[Failure]  # every failed segment (this shard's until the dataset is written)
    stats: ExtractionStats
    written: bool  # the prepared dataset was (re)assembled by this call
    waiting_for: list[int] = field(default_factory=list)  # shards whose report is missing
    fingerprint: str | None = None
    split_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures


def _marker_doc(files: list[str], complete: bool, extract: dict[str, Any]) -> dict[str, Any]:
    import misalatch

    return {"format": MARKER_FORMAT, "version": MARKER_VERSION, "kind": "prepare",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid(), "host": host_id(),
            "misalatch": misalatch.__version__, "complete": complete, "files": sorted(files), "extract": extract}


def open_extract_folder(out: Path) -> None:
    """Make ``out`` an extract folder, or check that it is one (a re-run and the other shards continue
    in it). A folder misalatch did not write, or another kind of output, is refused."""
    if out.is_symlink():
        raise ConfigError(f"--out {out}: is a symbolic link; give the real folder")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is a file, not a folder")
    entries = [e for e in out.iterdir() if parse_temporary_name(e) is None] if out.is_dir() else []
    if entries:
        doc = read_marker(out)
        if doc is None or doc["kind"] != "prepare" or "extract" not in doc:
            what = "a folder misalatch did not create" if doc is None else f"a misalatch {doc['kind']} folder " \
                "not written by extract"
            raise ConfigError(f"--out {out}: exists and is not empty ({what}); extract continues only in a "
                              "folder it wrote: choose a new path")
        return
    check_target(out, "prepare")  # protected places (the working directory, home, /)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / MARKER, _marker_doc([], False, {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))


def _plan(transcripts: Transcripts, timings: WordTimings | None, recipe: Any, options: ExtractOptions) -> str:
    """What every shard of one extraction must agree on."""
    doc = {"transcripts": transcripts.source or [r.segment_id + "|" + r.text for r in transcripts.rows],
           "timings": None if timings is None else timings.source["sha256"], "recipe": _fingerprint_of(recipe),
           "modalities": list(options.modalities), "task": options.task, "split_seed": options.split_seed,
           "normalize": options.normalize, "shards": options.shard[1], "name": options.name}
    if transcripts.source is not None:
        doc["transcripts"] = transcripts.source["sha256"]
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def shard_rows(rows: Sequence[ClipRow], shard: tuple[int, int]) -> list[ClipRow]:
    """The rows of shard K of N: every N-th clip file in transcript order, from the K-th."""
    k, n = shard
    files = list(dict.fromkeys(r.path for r in rows))
    mine = {p for i, p in enumerate(files) if i % n == k - 1}
    return [r for r in rows if r.path in mine]


def _failure_csv(failures: Sequence[Failure]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["line", "clip", "segment_id", "reason"])
    for f in failures:
        writer.writerow(["" if f.line is None else f.line, f.clip, f.segment_id, f.reason])
    return buffer.getvalue().encode("utf-8")


def resolve_recipe(recipe: Any = None) -> Any:
    """``recipe``, else the default recipe of the installed extractors."""
    if recipe is not None:
        return recipe
    from misalatch.media.recipe import default_recipe

    return default_recipe()


def extract_corpus(media: str | os.PathLike[str], out: str | os.PathLike[str], *,
                   transcripts: str | os.PathLike[str] | None = None, text: str | None = None,
                   word_timings: str | os.PathLike[str] | None = None, recipe: Any = None,
                   options: ExtractOptions = ExtractOptions(), extractor: Extractor | None = None) -> ExtractResult:
    """Extract a corpus (or this shard of it) into ``out`` and assemble the prepared dataset when every
    shard has reported (module docstring). Per-segment problems are in ``result.failures`` (and in
    ``out/failures.csv``); whole-input problems raise ``MisalatchError`` before ``out`` is touched.
    """
    media, out = Path(media), Path(out)
    if (transcripts is None) == (text is None):
        raise ConfigError("give --transcripts T.csv or --text \"what is said\" (exactly one)")
    recipe = resolve_recipe(recipe)
    if text is not None:
        if word_timings is not None:
            raise ConfigError("--word-timings needs --transcripts (its segment_id column names the segments)")
        table = single_clip(media, text)
    else:
        assert transcripts is not None
        # without a label column: an unlabelled dataset (features to look at, or to evaluate a model with later)
        table = read_transcripts(transcripts, media, task=options.task, need_labels=False)
    timings = read_word_timings(word_timings) if word_timings is not None else None
    for failure in table.failures:
        log.warning("%s", failure.message())
    if not table.rows and not table.failures:
        raise DataFormatError(f"{transcripts}: no rows")
    splits = None
    if table.labelled and not table.has_split:
        splits = assign_splits(list(table.rows) + [_pseudo_row(f) for f in table.failures if f.segment_id],
                               options.split_seed)
    plan = _plan(table, timings, recipe, options)
    open_extract_folder(out)
    cache = out / CACHE_DIR
    cache.mkdir(exist_ok=True)
    cleanup_stale_temporaries(cache)
    (out / SHARDS_DIR).mkdir(exist_ok=True)
    k, n = options.shard
    mine = shard_rows(table.rows, options.shard)
    stats = ExtractionStats()
    workers = options.workers or default_workers()
    outcomes = extract_rows(mine, recipe, modalities=options.modalities, workers=workers, cache_dir=cache,
                            progress=options.progress, extractor=extractor, stats=stats)
    report = {"plan": plan, "shard": k, "of": n, "host": host_id(),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "rows": {str(i): ({"failure": o.failure} if o.failure is not None else {"key": o.key})
                       for i, o in sorted(outcomes.items())}}
    atomic_write_json(out / SHARDS_DIR / f"{k}-of-{n}.json", report)
    reports = _reports(out, plan, n)
    waiting = [s for s in range(1, n + 1) if s not in reports]
    mine_failures = list(table.failures) if k == 1 else []
    rows_of = {r.index: r for r in table.rows}
    mine_failures += [Failure(rows_of[i].clip, o.failure, rows_of[i].segment_id, rows_of[i].line)
                      for i, o in sorted(outcomes.items()) if o.failure is not None]
    result = ExtractResult(out, options.shard, len(table.rows) + len(table.failures), mine_failures, stats,
                           written=False, waiting_for=waiting)
    if waiting:
        log.info("shard %d/%d done; waiting for shard(s) %s (the last to finish writes the dataset)", k, n,
                 ", ".join(map(str, waiting)))
        return result
    keys: dict[int, dict[str, str]] = {}
    for rep in reports.values():
        keys.update({int(i): v for i, v in rep["rows"].items()})
    return _assemble(out, table, timings, recipe, options, splits, keys, result)


def _pseudo_row(failure: Failure) -> ClipRow:
    """A failed row still takes part in the split by clip (so the split does not depend on failures)."""
    return ClipRow(index=-1, line=failure.line, clip=failure.clip, path="", segment_id=failure.segment_id + "\0",
                   text="")


def _reports(out: Path, plan: str, n: int) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for k in range(1, n + 1):
        path = out / SHARDS_DIR / f"{k}-of-{n}.json"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("plan") == plan and isinstance(doc.get("rows"), dict):
            found[k] = doc
        else:
            log.info("%s: written for other transcripts or options; ignored", path)
    return found


def _assemble(out: Path, table: Transcripts, timings: WordTimings | None, recipe: Any, options: ExtractOptions,
              splits: dict[str, str] | None, keys: dict[int, dict[str, str]], result: ExtractResult) -> ExtractResult:
    """Every shard reported: build the dataset from the cache and commit it with failures.csv."""
    failures: list[Failure] = list(table.failures)
    kept: list[tuple[ClipRow, list[str], dict[str, np.ndarray], SegmentFeatures]] = []
    warnings = 0
    for row in table.rows:
        entry = keys.get(row.index)
        fail = lambda reason: failures.append(Failure(row.clip, reason, row.segment_id, row.line))  # noqa: E731
        if entry is None:
            fail("not extracted by any shard (the shards were run with different transcripts?)")
            continue
        if "failure" in entry:
            fail(entry["failure"])
            continue
        try:
            feats = SegmentFeatures.from_file(out / CACHE_DIR / f"{entry['key']}.npz")
        except Exception as err:  # noqa: BLE001 - removed or damaged meanwhile
            fail(f"cache entry {entry['key'][:12]} unreadable ({err}); run extract again")
            continue
        try:
            words, arrays = segment_arrays(row, feats, options.modalities, timings)
        except DataFormatError as err:
            fail(str(err))
            continue
        warnings += len(feats.warnings)
        kept.append((row, words, arrays, feats))
    failures.sort(key=lambda f: (f.line or 0, f.clip))
    labelled = table.labelled
    split_of = (lambda r: r.split) if table.has_split else (lambda r: splits[r.segment_id]) if splits else \
        (lambda r: "test")
    normalization: dict[str, Any] = {"kind": "none"}
    if options.normalize:
        train = [a for r, _, a, _ in kept if split_of(r) == "train"] if labelled else [a for _, _, a, _ in kept]
        normalization = fit_normalization(train, options.modalities)
        if not labelled:
            normalization["fitted_on"] = "all"
    by_split: dict[str, list[Segment]] = {s: [] for s in SPLITS}
    for row, words, arrays, _ in kept:
        clean = normalize(arrays, normalization)
        by_split[split_of(row)].append(Segment(id=row.segment_id, label=row.label if row.label is not None else 0.0,
                                               words=words, acoustic=clean.get("acoustic"),
                                               visual=clean.get("visual")))
    num_classes = 1
    if options.task == "classification" and labelled:
        labels = [int(s.label) for segs in by_split.values() for s in segs]
        num_classes = max(2, max(labels, default=0) + 1)
    media_meta = {"recipe": recipe.to_dict(), "recipe_fingerprint": _fingerprint_of(recipe),
                  "modalities": list(options.modalities), "alignment": "word" if timings is not None else "none",
                  "normalization": normalization,
                  "split": ("column" if table.has_split else
                            {"by": "clip", "seed": options.split_seed, "ratios": list(SPLIT_RATIOS)} if splits else "none")}
    sources = [table.source] if table.source else []
    if timings is not None:
        sources.append(timings.source)
    meta = {"reader": "media", "sources": sources, "media": media_meta,
            "dropped": {"failed": len(failures)} if failures else {},
            "dropped_ids": {"failed": [f.segment_id for f in failures if f.segment_id]} if failures else {},
            "options": {"modalities": list(options.modalities), "task": options.task, "normalize": options.normalize,
                        "split_seed": options.split_seed},
            "warnings": warnings}
    if not labelled:
        meta["unlabelled"] = True
    name = options.name or out.name
    dataset = CanonicalDataset(name=name, task=options.task, splits=by_split,
                               alignment="word" if timings is not None else "none", num_classes=num_classes,
                               meta=meta)
    from misalatch.data.cache import META_FILE, prepared_files

    try:
        dataset.validate(str(out))
    except DataFormatError as err:
        atomic_write_bytes(out / FAILURES_FILE, _failure_csv(failures))
        hint = f"; {len(failures)} segment(s) failed (listed in {out / FAILURES_FILE})" if failures else ""
        raise DataFormatError(f"{err}{hint}; nothing was written to the dataset (the extracted clips are "
                              "cached: fix the transcripts and run extract again)") from None

    files = prepared_files(dataset)
    files[FAILURES_FILE] = _failure_csv(failures)
    order = [n for n in files if n != META_FILE] + [META_FILE]
    commit_files(out, files, order=order)
    listed = [p.relative_to(out).as_posix() for p in out.rglob("*")
              if p.is_file() and p.name != MARKER and not any(parse_temporary_name(q) for q in (p, *p.parents))]
    doc = read_marker(out) or {}
    atomic_write_json(out / MARKER, {**_marker_doc(listed, True, {**doc.get("extract", {}), "plan_shards": options.shard[1]}),
                                     "created": doc.get("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))})
    fingerprint = json.loads(files[META_FILE])["fingerprint"]
    log.info("prepared dataset written to %s (%s)", out, fingerprint[:19])
    result.failures = failures
    result.written = True
    result.fingerprint = fingerprint
    result.split_sizes = dataset.split_sizes()
    return result


__all__ = ["ClipRow", "ExtractOptions", "ExtractResult", "ExtractionStats", "Failure", "SegmentFeatures",
           "Transcripts", "WordTimings", "assign_splits", "cache_key", "extract_corpus", "extract_rows",
           "fit_normalization", "normalize", "open_extract_folder", "parse_shard", "read_transcripts",
           "read_word_timings", "resolve_clip", "segment_arrays", "shard_rows", "single_clip"]
