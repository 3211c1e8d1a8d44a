"""``misalatch compare RUN_OR_SWEEP_DIR ...``: runs and sweeps side by side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import tyro

from misalatch.cli._config import parse_flags


@dataclass(frozen=True)
class CompareArgs:
    """Put runs (misalatch train), multi-seed train folders and sweeps (misalatch sweep) side by side: one
    table of mean ± sample std per run or variant, printed as Markdown under what data the runs are on
    (SYNTHETIC when so) and the settings that differ from the defaults; with --out also CSV, JSON and a bar
    chart with error bars. Example: misalatch compare runs/misa runs/static sweeps/mosi --out comparisons/today"""

    folders: tyro.conf.Positional[tuple[str, ...]]
    """Run folders (misalatch train) or sweep folders (misalatch sweep)."""
    split: Literal["valid", "test"] = "test"
    """The split whose metrics are compared (validation is also accepted for valid)."""
    metrics: Optional[tuple[str, ...]] = None
    """Metric keys to show (default: every metric, e.g. mae corr acc2_non0 acc7)."""
    out: Optional[str] = None
    """A new folder for comparison.md, comparison.csv, comparison.png and comparison.json."""
    overwrite: bool = False
    """Replace an earlier comparison folder (only one misalatch wrote; any other folder is refused)."""
    trust_unverified: bool = False
    """Read run folders whose checkpoint has no manifest (its files cannot be verified; docs/security.md)."""


def main(argv: list[str]) -> int:
    from misalatch.experiments.compare import compare, to_markdown, write_comparison

    args = parse_flags(CompareArgs, argv, prog="misalatch compare")
    comparison = compare(list(args.folders), split=args.split, metrics=args.metrics,
                         trust_unverified=args.trust_unverified)
    print(to_markdown(comparison), end="")
    if args.out:
        written = write_comparison(comparison, args.out, overwrite=args.overwrite)
        print(f"written: {', '.join(str(p) for p in written.values())}")
    return 0
