"""``misalatch report SWEEP_OR_RUN_DIR --out report.html``: one self-contained HTML page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import tyro

from misalatch.cli._config import ThreadsFlag, apply_threads, parse_flags


@dataclass(frozen=True)
class ReportArgs(ThreadsFlag):
    """One self-contained HTML page (images embedded, no network) of a sweep, a multi-seed train folder or a
    run: results table, paired comparison, curves, prediction plots and, for feedback runs, the mask plots.
    Example: misalatch report sweeps/mosi --out mosi-report.html"""

    folder: tyro.conf.Positional[str]
    out: str
    """The HTML file to write (an existing file is only replaced when misalatch wrote it)."""
    masks: bool = True
    """Mask plots for feedback variants."""
    compute_masks: bool = True
    """Without a masks-<split>/ folder, compute the masks in memory from the best checkpoint."""
    mask_split: Literal["train", "valid", "test"] = "test"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    """Device for computing masks in memory."""
    trust_unverified: bool = False
    """Read run folders whose checkpoint has no manifest (its files cannot be verified; docs/security.md)."""


def main(argv: list[str]) -> int:
    args = parse_flags(ReportArgs, argv, prog="misalatch report")
    from misalatch.experiments.html_report import report

    if args.masks and args.compute_masks:
        apply_threads(args.threads)  # masks computed in memory run the model
    path = report(args.folder, args.out, masks=args.masks, compute_masks=args.compute_masks,
                  mask_split=args.mask_split, device=args.device, trust_unverified=args.trust_unverified)
    print(f"written: {path}")
    return 0
