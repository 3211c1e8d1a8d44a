"""``misalatch download NAME``: fetch a public CMU-SDK file, verified by sha256 and resumable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import tyro


@dataclass(frozen=True)
class DownloadArgs:
    """Download a public CMU-MultimodalSDK file by name (e.g. CMU_MOSI_Opinion_Labels) into --dest.
    Interrupted downloads resume from <file>.part when the command is run again; the file gets its
    final name only after its sha256 was checked. --list shows the known names."""

    name: tyro.conf.Positional[Optional[str]] = None
    """Known file name (see --list); a .csd or .pkl suffix is allowed."""
    dest: str = "."
    """Folder to save the file in (created if needed)."""
    base_url: Optional[str] = None
    """Mirror to use instead of http://immortal.multicomp.cs.cmu.edu (same paths below it)."""
    list: bool = False
    """Print the known files (name, sha256 known or not, description) and exit."""


def _table() -> str:
    from misalatch.data.download import REGISTRY

    width = max(len(n) for n in REGISTRY)
    lines = [f"{'name'.ljust(width)}  sha256   description"]
    for name, entry in REGISTRY.items():
        lines.append(f"{name.ljust(width)}  {'known  ' if entry.sha256 else 'unknown'}  {entry.description}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Parse ``argv``, download, print the saved path; returns the exit code."""
    from misalatch.cli._config import parse_flags
    from misalatch.data.download import download
    from misalatch.errors import ConfigError

    try:
        args = parse_flags(DownloadArgs, argv, prog="misalatch download")
    except SystemExit as exit_:  # --help, or a flag tyro could not parse (it printed why)
        return int(exit_.code or 0)
    if args.list:
        print(_table())
        return 0
    if not args.name:
        raise ConfigError("give the name of a file to download (misalatch download --list shows them)")
    from misalatch.io.progress import progress_enabled

    path = download(args.name, args.dest, base_url=args.base_url, progress=progress_enabled())
    print(f"saved: {path}")
    return 0
