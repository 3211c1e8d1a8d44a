"""Read a dataset in any standard format with the matching reader (``misalatch prepare``'s library).

``PrepareSource`` says what to read; ``read_any`` checks that its fields fit the format and
reads it. The command line (``misalatch prepare``) adds the output folder. The prepared folder
(DATA.md §3.8, ``misalatch.data.cache``) is pickle-free and is what ``--data DIR`` loads afterwards,
so third-party pickles are opened (safely) exactly once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from misalatch.data.canonical import CanonicalDataset
from misalatch.errors import ConfigError

log = logging.getLogger(__name__)

Format = Literal["csd", "mmsa", "mult", "misa", "urfunny", "csv", "utterances"]
CSD_FLAGS = ("labels", "words", "visual", "acoustic", "folds")


@dataclass(frozen=True)
class PrepareSource:
    """What to read: the format and its input file(s), with the reader options (each field is also a
    ``misalatch prepare`` flag of the same name)."""

    format: Format
    """Input format: csd (CMU-SDK .csd files), mmsa (aligned_50/unaligned_50.pkl), mult (MulT/MultiBench
    .pkl), misa (folder with train.pkl, dev.pkl, test.pkl), urfunny (UR-FUNNY release folder), csv
    (segment_id,text,label,split table), utterances (one row of features per utterance: .csv, .parquet or .npz)."""
    input: Optional[str] = None
    """mmsa, mult, csv, utterances: the file; misa, urfunny: the folder (or a file in it)."""
    labels: Optional[str] = None
    """csd: label sequence (e.g. CMU_MOSI_Opinion_Labels.csd); utterances: a segment_id,label CSV joined on the id."""
    words: Optional[str] = None
    """csd: word sequence (e.g. CMU_MOSI_TimestampedWords.csd)."""
    visual: Optional[str] = None
    """csd: visual sequence (e.g. CMU_MOSI_Visual_Facet_41.csd)."""
    acoustic: Optional[str] = None
    """csd: acoustic sequence (e.g. CMU_MOSI_COVAREP.csd)."""
    folds: Optional[str] = None
    """csd: fold lists JSON (default: the standard folds shipped with misalatch)."""
    dataset: Optional[str] = None
    """Dataset name (mosi, mosei, ur_funny); default: from the file names (csd: mosi)."""
    version: Optional[Literal[1, 2]] = None
    """urfunny: release version (default: detected from the files)."""
    task: Optional[Literal["regression", "classification"]] = None
    """mult: override the task (default: classification for humor.pkl / ur_funny, else regression)."""
    normalize: bool = True
    """csd, urfunny: z-normalise visual/acoustic per segment (as the original preprocessing; docs/data.md); utterances: standardise every
    feature column with the training split's mean and standard deviation."""
    impute: bool = False
    """csd: fill missing visual/acoustic words with zeros (MMLatch) instead of dropping the segment."""
    allow_label_range: bool = False
    """Accept MOSI/MOSEI sentiment labels outside [-3, 3] (otherwise an error: another column or scale)."""
    valid_fraction: Optional[float] = None
    """utterances: hold out this share of the training rows as validation, whole speakers (videos) at a time."""
    valid_seed: int = 0
    """utterances: seed of the speaker permutation behind --valid-fraction."""


def check_source(args: PrepareSource) -> None:
    """Each field belongs to some formats; a misplaced one is a ConfigError rather than silently ignored."""
    given = {name for name in CSD_FLAGS if getattr(args, name) is not None
             and not (name == "labels" and args.format == "utterances")}
    if args.format == "csd":
        if args.input is not None:
            raise ConfigError("--input is not used with --format csd; give --labels, --words, --visual, --acoustic")
        missing = [f"--{n}" for n in ("labels", "words") if getattr(args, n) is None]
        if missing:
            raise ConfigError(f"--format csd needs {' and '.join(missing)}")
    else:
        if given:
            flags = ", ".join(f"--{n}" for n in CSD_FLAGS if n in given)
            raise ConfigError(f"{flags} apply to --format csd only; use --input for --format {args.format}")
        if args.input is None:
            raise ConfigError(f"--format {args.format} needs --input PATH")
        if not Path(args.input).exists():
            raise ConfigError(f"--input {args.input}: no such file or folder")
    if args.version is not None and args.format != "urfunny":
        raise ConfigError("--version applies to --format urfunny only")
    if args.task is not None and args.format != "mult":
        raise ConfigError("--task applies to --format mult only")
    if args.impute and args.format != "csd":
        raise ConfigError("--impute applies to --format csd only")
    if args.valid_fraction is not None and args.format != "utterances":
        raise ConfigError("--valid-fraction applies to --format utterances only")


def read_any(args: PrepareSource) -> CanonicalDataset:
    """Read the input that ``args`` describes, then check the labels against the dataset's range."""
    ds = _read(args)
    ds.check_label_range(str(args.labels or args.input), allow=args.allow_label_range)
    return ds


def _read(args: PrepareSource) -> CanonicalDataset:
    """Read the input that ``args`` describes with the matching reader (call ``check_source`` first
    to fail before a long read rather than inside it; this calls it too)."""
    check_source(args)
    if not args.normalize and args.format not in ("csd", "urfunny", "utterances"):
        log.warning("--no-normalize has no effect with --format %s (features are used as stored)", args.format)
    if args.format == "csd":
        from misalatch.data.readers.csd import build_csd_dataset
        from misalatch.io.progress import progress_enabled

        return build_csd_dataset(
            labels=args.labels, words=args.words, visual=args.visual, acoustic=args.acoustic,
            dataset=args.dataset or "mosi", folds=args.folds, normalize=args.normalize,
            impute=args.impute, progress=progress_enabled(),
        )
    assert args.input is not None
    if args.format == "mmsa":
        from misalatch.data.readers.mmsa_pickle import read_mmsa_pickle

        return read_mmsa_pickle(args.input, dataset=args.dataset)
    if args.format == "mult":
        from misalatch.data.readers.mult_pickle import read_mult_pickle

        return read_mult_pickle(args.input, dataset=args.dataset, task=args.task)
    if args.format == "misa":
        from misalatch.data.readers.misa_pickle import read_misa_pickles

        return read_misa_pickles(args.input, dataset=args.dataset)
    if args.format == "utterances":
        from misalatch.data.readers.utterance_table import read_utterance_table

        return read_utterance_table(args.input, labels=args.labels, normalize=args.normalize,
                                    valid_fraction=args.valid_fraction, valid_seed=args.valid_seed, name=args.dataset)
    if args.format == "urfunny":
        from misalatch.data.readers.urfunny import read_urfunny

        ds = read_urfunny(args.input, version=args.version, normalize=args.normalize)
    else:
        from misalatch.data.readers.text_csv import read_text_csv

        ds = read_text_csv(args.input)
    return ds.replace(name=args.dataset) if args.dataset else ds


def log_summary(ds: CanonicalDataset) -> None:
    sizes = ds.split_sizes()
    dims = ", ".join(f"{k} {v}" for k, v in (("visual", ds.visual_dim), ("acoustic", ds.acoustic_dim),
                                              ("text vectors", ds.text_vector_dim)) if v is not None)
    log.info("%s (%s, %s, alignment %s): train %d / valid %d / test %d segments%s", ds.name, ds.task,
             ds.meta.get("reader", "?"), ds.alignment, sizes["train"], sizes["valid"], sizes["test"],
             f"; dims {dims}" if dims else "")
    log.info("dropped: %s", ds.meta.get("dropped") or "none")
    log.info("non-finite values set to 0: %s", ds.meta.get("nonfinite") or "none")

