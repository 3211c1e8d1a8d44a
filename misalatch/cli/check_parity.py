"""``misalatch check-parity FILE.safetensors [FILE ...]``: compare the model with golden vectors."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str]) -> int:
    """Print one line per compared tensor; exit 0 only when every tensor of every file matches."""
    import torch

    from misalatch.models.parity import check_parity

    parser = argparse.ArgumentParser(
        prog="misalatch check-parity", description="Parity with the original MISA code on golden vector files (MISA.md §13)."
    )
    parser.add_argument("files", nargs="+", type=Path, help="golden .safetensors file(s) with their .json beside")
    args = parser.parse_args(argv)
    all_ok = True
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for file in args.files:
        report = check_parity(file)
        print(f"# {report.case} ({file})")
        for comparison in report.comparisons:
            print(comparison.line())
        print(report.summary())
        all_ok &= report.ok
    return 0 if all_ok else 1
