"""``predict --media``: a trained run on new clips, with the features re-created as the run's data was made.

The run folder records what its dataset was extracted with (``best.json`` -> ``data.media``: the recipe,
the modalities, the alignment and the normalisation statistics; ``misalatch.training.run_dir.data_facts``).
``predict_media`` checks that this installation re-creates those features
(``misalatch.media.check_recipe_reproducible``), extracts the clips with the same recipe, applies the
same normalisation and word alignment, prepares the text with the run's own tokenizer or vocabulary and
runs the best model: the numbers equal what ``predict --data`` gives on the extracted dataset. Nothing is
written but the predictions file.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from misalatch.data.canonical import CanonicalDataset, Segment
from misalatch.errors import ConfigError, DataFormatError, MediaError
from misalatch.io.atomic import atomic_write_text
from misalatch.media.corpus import (
    ClipRow,
    ExtractionStats,
    Failure,
    extract_rows,
    normalize,
    read_transcripts,
    read_word_timings,
    segment_arrays,
    single_clip,
)
from misalatch.training.checkpoint import read_sidecar

log = logging.getLogger(__name__)

PREDICTIONS_HEADER = ("segment_id", "clip", "start", "end", "label", "prediction")


@dataclass
class MediaPrediction:
    """One segment's prediction (``logits`` for classification runs)."""

    segment_id: str
    clip: str
    start: float
    end: float
    label: float | None
    prediction: float
    logits: tuple[float, ...] = ()


@dataclass
class MediaPredictions:
    """What ``predict_media`` returns: one prediction per segment that could be extracted, and the others."""

    predictions: list[MediaPrediction]
    failures: list[Failure]
    stats: ExtractionStats = field(default_factory=ExtractionStats)

    def to_csv(self) -> str:
        """segment_id, clip, start, end, label (empty without), prediction (+ logit_<c> for classification)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        n_logits = max((len(p.logits) for p in self.predictions), default=0)
        writer.writerow([*PREDICTIONS_HEADER, *(f"logit_{c}" for c in range(n_logits))])
        for p in self.predictions:
            label = "" if p.label is None else (int(p.label) if n_logits else repr(float(p.label)))
            value = int(p.prediction) if n_logits else repr(float(p.prediction))
            writer.writerow([p.segment_id, p.clip, repr(p.start), repr(p.end), label, value, *map(float, p.logits)])
        return buffer.getvalue()


def media_facts(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's record of how its features were extracted; refuses, in one line naming the run and its
    data, a run whose features did not come from ``misalatch extract`` (CMU-SDK, MMSA, ... features)."""
    sidecar = read_sidecar(run_dir, "best")
    data = sidecar.get("data") if isinstance(sidecar.get("data"), dict) else {}
    media = data.get("media")
    if not isinstance(media, dict) or not isinstance(media.get("recipe"), dict):
        raise MediaError(
            f"{run_dir}: trained on {data.get('name', 'data')!r}, whose features were not extracted from media by "
            "misalatch (no recipe in best.json: e.g. CMU-SDK or MMSA feature files), so they cannot be re-created "
            "from a clip; predict --media needs a run trained on a `misalatch extract` dataset")
    for key, kind in (("modalities", list), ("alignment", str), ("normalization", dict)):
        if not isinstance(media.get(key), kind):
            raise DataFormatError(f"{Path(run_dir) / 'best.json'}: field 'data.media.{key}' is missing or malformed")
    return {**media, "task": data.get("task", "regression")}


def predict_media(run_dir: str | os.PathLike[str], media: str | os.PathLike[str], *,
                  transcripts: str | os.PathLike[str] | None = None, text: str | None = None,
                  word_timings: str | os.PathLike[str] | None = None, workers: int = 1, device: str = "auto",
                  progress: bool | None = None, extractor: Any = None) -> MediaPredictions:
    """Predict every segment of ``media`` (a folder + ``transcripts``, or one clip + ``text``) with the
    run's best model, re-extracting the features with the run's recorded recipe (module docstring).

    Raises ``MediaError`` when the run's features cannot be re-created from media, or when the
    installed extractors differ from the recorded ones (one line naming both versions). Segments that
    cannot be extracted are returned in ``failures``; the others are predicted.
    """
    from misalatch.media.recipe import check_recipe_reproducible
    from misalatch.training.run_dir import evaluate_run, load_run

    if (transcripts is None) == (text is None):
        raise ConfigError("give --transcripts T.csv or --text \"what is said\" (exactly one)")
    facts = media_facts(run_dir)
    recipe = check_recipe_reproducible(facts["recipe"], source=f"{run_dir}: the run's recipe")
    aligned = facts["alignment"] == "word"
    if aligned and word_timings is None:
        raise ConfigError(f"{run_dir}: the run was trained on word-aligned data; pass --word-timings W.csv "
                          "(segment_id, word, start, end) for the clips")
    if not aligned and word_timings is not None:
        raise ConfigError(f"{run_dir}: the run was trained on unaligned data (no word timings); drop --word-timings")
    table = single_clip(media, text) if text is not None else \
        read_transcripts(transcripts, media, task=facts["task"], need_labels=False)  # type: ignore[arg-type]
    timings = read_word_timings(word_timings) if word_timings is not None else None
    stats = ExtractionStats()
    outcomes = extract_rows(table.rows, recipe, modalities=facts["modalities"], workers=workers, progress=progress,
                            extractor=extractor, stats=stats)
    failures = list(table.failures)
    kept: list[tuple[ClipRow, Segment, Any]] = []
    for row in table.rows:
        outcome = outcomes[row.index]
        if outcome.failure is not None or outcome.features is None:
            failures.append(Failure(row.clip, outcome.failure or "not extracted", row.segment_id, row.line))
            continue
        try:
            words, arrays = segment_arrays(row, outcome.features, facts["modalities"], timings)
            clean = normalize(arrays, facts["normalization"])
        except DataFormatError as err:
            failures.append(Failure(row.clip, str(err), row.segment_id, row.line))
            continue
        kept.append((row, Segment(id=row.segment_id, label=row.label if row.label is not None else 0.0, words=words,
                                  acoustic=clean.get("acoustic"), visual=clean.get("visual")), outcome.features))
    result = MediaPredictions([], failures, stats)
    if not kept:
        return result
    dataset = CanonicalDataset(name="media", task=facts["task"], splits={"train": [], "valid": [],
                                                                          "test": [s for _, s, _ in kept]},
                               alignment=facts["alignment"], meta={"unlabelled": True})
    run = load_run(run_dir, device=device, dataset=dataset)
    evaluation = evaluate_run(run, ("test",))["test"]
    for (row, _seg, feats), value in zip(kept, evaluation.predictions):
        value = np.asarray(value)
        if value.ndim == 0:
            result.predictions.append(MediaPrediction(row.segment_id, row.clip, feats.start, feats.end, row.label,
                                                      float(value)))
        else:
            result.predictions.append(MediaPrediction(row.segment_id, row.clip, feats.start, feats.end, row.label,
                                                      float(np.argmax(value)), tuple(float(v) for v in value)))
    return result


def write_media_predictions(predictions: MediaPredictions, path: str | os.PathLike[str]) -> Path:
    """Write ``MediaPredictions.to_csv`` atomically."""
    return atomic_write_text(Path(path), predictions.to_csv())


def is_media_predictions_csv(path: str | os.PathLike[str]) -> bool:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.readline().startswith(",".join(PREDICTIONS_HEADER))


__all__: Sequence[str] = ["MediaPrediction", "MediaPredictions", "media_facts", "predict_media",
                          "write_media_predictions"]
