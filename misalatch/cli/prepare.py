"""``misalatch prepare``: read a dataset in any standard format and write a prepared folder."""

from __future__ import annotations

from dataclasses import dataclass

from misalatch.data.prepare import PrepareSource

_DESCRIPTION = (
    "Read a dataset in a standard format into a prepared folder for --data. Examples: "
    "misalatch prepare --format mmsa --input MOSI/aligned_50.pkl --out prepared/mosi-mmsa; "
    "misalatch prepare --format urfunny --input ted_humor_sdk_v1 --version 1 --out prepared/ur_funny; "
    "misalatch prepare --format csd --dataset mosi --labels CMU_MOSI_Opinion_Labels.csd "
    "--words CMU_MOSI_TimestampedWords.csd --visual CMU_MOSI_Visual_Facet_41.csd "
    "--acoustic CMU_MOSI_COVAREP.csd --out prepared/mosi"
)


@dataclass(frozen=True, kw_only=True)
class PrepareArgs(PrepareSource):
    """Flags of ``misalatch prepare``: what to read (the library's PrepareSource) and where to write it."""

    out: str
    """Prepared folder to write (must not exist or be empty, unless --overwrite)."""
    overwrite: bool = False
    """Replace an existing prepared folder at --out."""


def main(argv: list[str]) -> int:
    """``misalatch prepare --format F ... --out DIR``; returns the exit code."""
    from misalatch.cli._config import parse_flags
    from misalatch.data.cache import check_out_dir, read_prepared_info, save_prepared
    from misalatch.data.prepare import check_source, log_summary, read_any

    try:
        args = parse_flags(PrepareArgs, argv, prog="misalatch prepare", description=_DESCRIPTION)
    except SystemExit as exit_:  # --help, or a flag tyro could not parse (it printed why)
        return int(exit_.code or 0)
    check_source(args)
    check_out_dir(args.out, overwrite=args.overwrite)  # fail before a long read, not after
    ds = read_any(args)
    log_summary(ds)
    out = save_prepared(ds, args.out, overwrite=args.overwrite)
    info = read_prepared_info(out)
    print(f"written: {out} ({info['fingerprint']})")
    return 0
