"""Progress bars with an ETA (tqdm) for the long commands, quiet where nobody watches.

A bar is shown only when stderr is an interactive terminal and misalatch logs at INFO or below
(``-q`` sets WARNING): logs, CI and pipes get no bar and no carriage returns.
"""

from __future__ import annotations

import logging
import sys
from typing import Any


def progress_enabled() -> bool:
    """Bars only on an interactive terminal and when misalatch logs at INFO or below."""
    return sys.stderr.isatty() and logging.getLogger("misalatch").getEffectiveLevel() <= logging.INFO


def progress_bar(total: int | None, desc: str, *, unit: str = "it", initial: int = 0, **options: Any) -> Any:
    """A tqdm bar on stderr (elapsed, ETA, rate), disabled unless ``progress_enabled``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr, dynamic_ncols=True,
                disable=not progress_enabled(), **options)
