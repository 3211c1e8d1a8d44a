"""Command line: ``misalatch <command> [flags]`` (also ``python -m misalatch``).

Each command is a small module here (``misalatch/cli/<command>.py``) whose ``main(argv)`` parses its
flags (typed dataclasses with tyro, so there is no hand-written ``add_argument`` per field) and calls
down into the library. Only this package configures logging and prints; library code logs, and no
library module imports ``misalatch.cli``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable

from misalatch.errors import ConfigError, MisalatchError

log = logging.getLogger("misalatch")

# name -> (one-line help, handler(argv) -> exit code). Handlers import lazily so that
# `misalatch --help` stays fast and no command pays for another's imports.
Command = Callable[[list[str]], int]


def _lazy(module: str, attr: str) -> Command:
    def run(argv: list[str]) -> int:
        import importlib

        return getattr(importlib.import_module(module), attr)(argv)

    return run


COMMANDS: dict[str, tuple[str, Command]] = {
    "train": ("train MISA or a MISA+MMLatch variant (default: built-in SYNTHETIC data)", _lazy("misalatch.cli.train", "main")),
    "evaluate": ("re-evaluate a saved run", _lazy("misalatch.cli.evaluate", "main")),
    "predict": ("write one prediction per segment id as CSV", _lazy("misalatch.cli.predict", "main")),
    "check-parity": ("compare the MISA model with golden vectors of the original code", _lazy("misalatch.cli.check_parity", "main")),
    "prepare": ("read a dataset in any standard format into a prepared folder", _lazy("misalatch.cli.prepare", "main")),
    "extract": ("features from your own clips + transcripts into a prepared folder", _lazy("misalatch.cli.extract", "main")),
    "masks": ("export feedback masks, heatmaps and statistics of a trained run", _lazy("misalatch.cli.masks", "main")),
    "sweep": ("run variants × seeds as one Optuna study (joinable); mean ± std and paired tests", _lazy("misalatch.cli.sweep", "main")),
    "search": ("validation-only hyper-parameter search (Optuna TPE, pruning); exports the best config", _lazy("misalatch.cli.search", "main")),
    "download": ("fetch a public CMU-SDK file with sha256 verification", _lazy("misalatch.cli.download", "main")),
    "compare": ("runs and sweeps side by side: one table and a bar chart", _lazy("misalatch.cli.compare", "main")),
    "report": ("one self-contained HTML page of a sweep or run", _lazy("misalatch.cli.report", "main")),
    "robustness": ("curves of trained runs under noise, frame drop and modality drop", _lazy("misalatch.cli.robustness", "main")),
}


def _usage() -> str:
    lines = ["usage: misalatch <command> [flags]   (misalatch <command> --help for its flags)", "", "commands:"]
    width = max(len(n) for n in COMMANDS) if COMMANDS else 0
    lines += [f"  {name.ljust(width)}  {helptext}" for name, (helptext, _) in COMMANDS.items()]
    return "\n".join(lines)


def setup_logging(verbosity: int = 0) -> None:
    """Send misalatch logs to stderr: INFO by default, DEBUG with -v, WARNING with -q."""
    level = logging.INFO if verbosity == 0 else (logging.DEBUG if verbosity > 0 else logging.WARNING)
    root = logging.getLogger("misalatch")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def _distributed_launch() -> bool:
    from misalatch.training.distributed import (
        is_distributed_launch,  # imports torch: only when torchrun is seen
    )

    return is_distributed_launch()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbosity = 0
    while argv and argv[0] in ("-v", "--verbose", "-q", "--quiet"):
        verbosity += 1 if argv.pop(0) in ("-v", "--verbose") else -1
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"misalatch: unknown command {name!r}{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    setup_logging(verbosity)
    try:
        if name != "train" and "WORLD_SIZE" in os.environ and _distributed_launch():
            raise ConfigError(f"torchrun starts several processes for one `misalatch train`; `misalatch {name}` "
                              "runs as one process (a sweep or search spreads with --join instead)")
        return COMMANDS[name][1](rest)
    except MisalatchError as err:
        print(f"misalatch {name}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # the system refused a path (a parent that cannot be created, no permission, disk full)
        where = f"{err.filename}: " if err.filename else ""
        print(f"misalatch {name}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
