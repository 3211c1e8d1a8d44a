"""``misalatch extract``: a folder of clips + transcripts -> a prepared dataset (docs/own-videos.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

EXIT_SOME_FAILED = 3
"""Exit status when the dataset was written without some segments (listed in OUT/failures.csv)."""

_DESCRIPTION = (
    "Extract acoustic and visual features from your own clips into a prepared dataset for --data. "
    "Examples: misalatch extract --media clips/ --transcripts transcripts.csv --out prepared/interviews; "
    "misalatch extract --media clip.mp4 --text \"what is said\" --out prepared/one-clip. "
    "Exit status 0: every segment extracted; 3: the dataset was written without the failed segments "
    "(listed in OUT/failures.csv); 1: nothing written (an error)."
)


@dataclass(frozen=True)
class ExtractArgs:
    """Flags of ``misalatch extract``."""

    media: str
    """A folder of clips (the transcripts' clip column is relative to it), or one clip file."""
    out: str
    """Prepared folder to write; a re-run (or another shard) continues in it and extracts nothing twice."""
    transcripts: Optional[str] = None
    """CSV with columns clip, text and label; optional segment_id, split (train/valid/test), start, end (seconds)."""
    text: Optional[str] = None
    """What is said in the one clip given as --media (instead of --transcripts; an unlabelled dataset to predict on)."""
    word_timings: Optional[str] = None
    """CSV of segment_id, word, start, end (seconds on the clip's time axis): word-aligned data (default: unaligned)."""
    modalities: str = "av"
    """Features to extract: a (acoustic), v (visual) or av."""
    task: Literal["regression", "classification"] = "regression"
    """regression: labels are scores (MOSI's -3..3); classification: labels are class indices 0, 1, ..."""
    split_seed: int = 0
    """Seed of the split by clip (70/15/15 % of the clip files) when the transcripts have no split column."""
    normalize: bool = True
    """Standardise each feature with the train split's mean and std (recorded; predict --media applies the same)."""
    workers: int = 0
    """Extraction processes (0: one per CPU this process may use)."""
    shard: str = "1/1"
    """K/N: extract only shard K of N (every N-th clip file) into the shared --out; the last shard to finish writes the dataset."""
    name: Optional[str] = None
    """Dataset name (default: the --out folder's name)."""


def parse_modalities(value: str) -> tuple[str, ...]:
    """``a``, ``v``, ``av`` (also ``acoustic,visual``) -> the corpus layer's names."""
    from misalatch.errors import ConfigError

    names = {"a": "acoustic", "v": "visual", "acoustic": "acoustic", "visual": "visual"}
    parts = [p for p in value.replace(",", " ").split()] if ("," in value or value in names) else list(value)
    if not parts or any(p not in names for p in parts) or len({names[p] for p in parts}) != len(parts):
        raise ConfigError(f"--modalities {value!r}: expected a, v or av")
    return tuple(sorted((names[p] for p in parts), key=("acoustic", "visual").index))


def main(argv: list[str]) -> int:
    import tyro

    from misalatch.media.corpus import ExtractOptions, extract_corpus, parse_shard

    try:
        args = tyro.cli(ExtractArgs, args=argv, prog="misalatch extract", description=_DESCRIPTION)
    except SystemExit as exit_:  # --help, or a flag tyro could not parse (it printed why)
        return int(exit_.code or 0)
    options = ExtractOptions(modalities=parse_modalities(args.modalities), task=args.task,
                             split_seed=args.split_seed, normalize=args.normalize, workers=args.workers,
                             shard=parse_shard(args.shard), name=args.name)
    result = extract_corpus(args.media, args.out, transcripts=args.transcripts, text=args.text,
                            word_timings=args.word_timings, options=options)
    stats = result.stats
    k, n = result.shard
    where = f"shard {k}/{n}: " if n > 1 else ""
    speed = f", {stats.real_time_factor:.1f}x real time" if stats.media_seconds else ""
    print(f"{where}{stats.extracted} segment(s) extracted, {stats.cached} from the cache, {stats.failed} failed"
          f"{speed}")
    if result.failures:
        print(f"{len(result.failures)} segment(s) not in the dataset"
              + (f" (listed in {result.out / 'failures.csv'})" if result.written else "") + ":")
        for failure in result.failures:
            print(f"  {failure.message()}")
    if result.written:
        sizes = result.split_sizes
        print(f"written: {result.out} ({result.fingerprint}); train {sizes['train']} / valid {sizes['valid']} / "
              f"test {sizes['test']} segments")
    else:
        print(f"waiting for shard(s) {', '.join(map(str, result.waiting_for))}: the last shard to finish writes "
              f"the dataset into {result.out}")
    return EXIT_SOME_FAILED if result.failures else 0
