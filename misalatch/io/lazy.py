"""Package names imported on first use (PEP 562), so importing a light part of misalatch never pays
for torch, Optuna or MediaPipe."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_attributes(package: str, table: Mapping[str, tuple[str, str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``table`` maps a public name to (module, attribute)."""

    def __getattr__(name: str) -> Any:
        if name in table:
            module, attr = table[name]
            return getattr(importlib.import_module(module), attr)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
