"""``misalatch predict RUN_DIR --out FILE.csv``: one prediction per segment id of a split."""

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


def _is_predictions_csv(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.readline().startswith("split,segment_id,label,prediction")


def main(argv: list[str]) -> int:
    args = parse_flags(PredictArgs, argv, prog="misalatch predict")
    from misalatch.io.owned import check_file_target, record_written
    from misalatch.training.run_dir import evaluate_run, load_run, write_predictions

    apply_threads(args.threads)
    check_file_target(args.out, overwrite=args.overwrite, looks_ours=_is_predictions_csv)  # before the model runs
    run = load_run(args.run_dir, data=args.data, data_root=args.data_root, device=args.device)
    splits = ("train", "valid", "test") if args.split == "all" else (args.split,)
    record_written(Path(args.out))
    path = write_predictions(evaluate_run(run, splits), args.out)
    print(f"written: {path} ({sum(len(run.dataset.splits[s]) for s in splits)} rows)")
    return 0
