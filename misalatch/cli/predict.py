"""``misalatch predict RUN_DIR --out FILE.csv``: one prediction per segment id of a split; with
``--media DIR_OR_FILE (--transcripts T.csv | --text "...")`` one per segment of new clips, whose features
are extracted with the run's recorded recipe (docs/own-videos.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

from misalatch.cli._config import ThreadsFlag, apply_threads, parse_flags


@dataclass(frozen=True)
class PredictArgs(ThreadsFlag):
    """Write one prediction per segment id of a split as CSV."""

    run_dir: tyro.conf.Positional[str]
    """The run folder written by misalatch train (with several seeds: one of its seed-<s>/ folders)."""
    out: str
    """CSV file to write (split, segment_id, label, prediction)."""
    data: Optional[str] = None
    """Other data prepared the same way (default: the run's own --data)."""
    data_root: Optional[str] = None
    """Where mosi|mosei|ur_funny live (default: the run's own, else MISALATCH_DATA)."""
    split: Literal["train", "valid", "test", "all"] = "test"
    """Split to predict; all writes train, valid and test."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto picks CUDA when available."""
    overwrite: bool = False
    """Replace an existing --out file misalatch wrote (a predictions CSV)."""
    trust_unverified: bool = False
    """Load a run folder whose checkpoint has no manifest (its files cannot be verified; docs/security.md)."""
    media: Optional[str] = None
    """New clips to predict: a folder (with --transcripts) or one clip (with --text); features are extracted with the run's recipe."""
    transcripts: Optional[str] = None
    """With --media: CSV with columns clip, text; optional segment_id, label, start, end."""
    text: Optional[str] = None
    """With --media ONE_CLIP: what is said in it."""
    word_timings: Optional[str] = None
    """With --media, for runs trained on word-aligned data: CSV of segment_id, word, start, end."""
    workers: int = 1
    """With --media: extraction processes."""


def _is_predictions_csv(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.readline().startswith("split,segment_id,label,prediction")


def _predict_media(args: PredictArgs) -> int:
    from misalatch.errors import ConfigError
    from misalatch.io.owned import check_file_target, record_written
    from misalatch.training.predict_media import is_media_predictions_csv, predict_media, write_media_predictions

    if args.data is not None or args.split != "test":
        raise ConfigError("--media predicts new clips; --data and --split apply to prepared data only")
    check_file_target(args.out, overwrite=args.overwrite, looks_ours=is_media_predictions_csv)
    result = predict_media(args.run_dir, args.media, transcripts=args.transcripts, text=args.text,  # type: ignore[arg-type]
                           word_timings=args.word_timings, workers=args.workers, device=args.device)
    if result.predictions:
        record_written(Path(args.out))
        path = write_media_predictions(result, args.out)
        print(f"written: {path} ({len(result.predictions)} rows)")
    if result.failures:
        print(f"{len(result.failures)} segment(s) not predicted:")
        for failure in result.failures:
            print(f"  {failure.message()}")
        return 3
    return 0


def main(argv: list[str]) -> int:
    args = parse_flags(PredictArgs, argv, prog="misalatch predict")
    from misalatch.io.owned import check_file_target, record_written
    from misalatch.training.run_dir import evaluate_run, load_run, write_predictions

    apply_threads(args.threads)
    if args.media is not None:
        return _predict_media(args)
    if args.transcripts is not None or args.text is not None or args.word_timings is not None:
        from misalatch.errors import ConfigError

        raise ConfigError("--transcripts, --text and --word-timings go with --media (new clips to predict)")
    check_file_target(args.out, overwrite=args.overwrite, looks_ours=_is_predictions_csv)  # before the model runs
    run = load_run(args.run_dir, data=args.data, data_root=args.data_root, device=args.device,
                   trust_unverified=args.trust_unverified)
    splits = ("train", "valid", "test") if args.split == "all" else (args.split,)
    record_written(Path(args.out))
    path = write_predictions(evaluate_run(run, splits), args.out)
    print(f"written: {path} ({sum(len(run.dataset.splits[s]) for s in splits)} rows)")
    return 0
