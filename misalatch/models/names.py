"""Name -> value registries (models, feedback variants, training presets), free of torch imports.

Kept apart from ``misalatch.models.registry`` so that what only needs names (a preset's values
for ``misalatch train --help``) does not import torch.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from misalatch.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → value, filled where each value is defined; unknown names raise ``ConfigError``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, value: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = value
        return value

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of ``add``."""
        return lambda value: self.add(name, value)

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ConfigError(f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self.names()))}")
        return self._items[name]
