"""``misalatch check-parity FILE.safetensors [FILE ...]``: compare the model with golden vectors."""

from __future__ import annotations

from dataclasses import dataclass

import tyro

from misalatch.cli._config import ThreadsFlag, apply_threads, parse_flags


@dataclass(frozen=True)
class CheckParityArgs(ThreadsFlag):
    """Compare the MISA model with golden vectors recorded from the original MISA code (docs/misa.md):
    one line per compared tensor; the exit status is 0 only when every tensor of every file matches."""

    files: tyro.conf.Positional[tuple[str, ...]]
    """Golden .safetensors file(s), each with its .json beside it."""


def main(argv: list[str]) -> int:
    """Print one line per compared tensor; exit 0 only when every tensor of every file matches."""
    args = parse_flags(CheckParityArgs, argv, prog="misalatch check-parity")
    from misalatch.models.parity import check_parity

    apply_threads(args.threads)
    all_ok = True
    for file in args.files:
        report = check_parity(file)
        print(f"# {report.case} ({file})")
        for comparison in report.comparisons:
            print(comparison.line())
        print(report.summary())
        all_ok &= report.ok
    return 0 if all_ok else 1
