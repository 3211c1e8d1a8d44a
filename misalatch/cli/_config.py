"""The grammar every command shares: ``--config FILE``, lists, split names, ``--threads``.

Every command parses its flags through ``parse_flags``, so that a list is written the same way
everywhere (``--seeds 1 2`` and ``--seeds 1,2`` mean the same) and a split is named the same way
everywhere (``valid``; ``validation``, ``val`` and ``dev`` are accepted as aliases). Nothing here
imports torch: ``misalatch <command> --help`` must stay fast.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any, Literal, Optional, TypeVar

from misalatch.errors import ConfigError

T = TypeVar("T")

SPLIT_ALIASES = {"validation": "valid", "val": "valid", "dev": "valid"}
"""Other names for the validation split; ``valid`` is the one the commands print and write."""



def pop_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """Take ``--config FILE`` (or ``--config=FILE``) out of argv; it seeds the defaults, flags override."""
    rest: list[str] = []
    path: str | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv):
                raise ConfigError("--config needs a file path")
            path = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return path, rest


def flag_value(argv: list[str], flag: str) -> str | None:
    """The value of ``--flag VALUE`` / ``--flag=VALUE`` in argv (the last one wins), without removing it."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


# ----------------------------------------------------------------------------------------------
# one grammar for lists and split names
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FlagKinds:
    """Which flags of a command take lists, and which name a split."""

    lists: frozenset[str]
    splits: frozenset[str]


def _strip(hint: Any) -> Any:
    """``Optional[X]`` -> X, ``Annotated[X, ...]`` -> X."""
    while True:
        origin = typing.get_origin(hint)
        if origin is typing.Annotated:
            hint = typing.get_args(hint)[0]
        elif origin is typing.Union or origin is types.UnionType:
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            if len(args) != 1:
                return hint
            hint = args[0]
        else:
            return hint


def flag_kinds(cls: type) -> FlagKinds:
    """The list flags (tuple-typed fields) and split flags (a Literal holding ``valid``) of a dataclass,
    nested dataclasses included (their flags carry no prefix in the commands that nest them)."""
    lists: set[str] = set()
    splits: set[str] = set()
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        if name not in {f.name for f in dataclasses.fields(cls)}:
            continue
        inner = _strip(hint)
        flag = "--" + name.replace("_", "-")
        if dataclasses.is_dataclass(inner):
            nested = flag_kinds(inner)
            lists |= nested.lists
            splits |= nested.splits
        elif typing.get_origin(inner) is tuple:
            lists.add(flag)
            items = typing.get_args(inner)
            if items and typing.get_origin(_strip(items[0])) is Literal and "valid" in typing.get_args(_strip(items[0])):
                splits.add(flag)
        elif typing.get_origin(inner) is Literal and "valid" in typing.get_args(inner):
            splits.add(flag)
    return FlagKinds(frozenset(lists), frozenset(splits))


def normalize_argv(argv: list[str], kinds: FlagKinds) -> list[str]:
    """``--seeds 1,2`` -> ``--seeds 1 2`` for list flags; ``--split validation`` -> ``--split valid``."""
    out: list[str] = []
    current: str | None = None  # a list or split flag whose values follow
    for arg in argv:
        if arg.startswith("--"):
            flag, eq, inline = arg.partition("=")
            current = flag if flag in kinds.lists or flag in kinds.splits else None
            if eq and current:
                out += [flag, *_values(flag, inline, kinds)]
                current = flag if flag in kinds.lists else None
            else:
                out.append(arg)
        elif current is not None:
            out += _values(current, arg, kinds)
            current = current if current in kinds.lists else None
        else:
            out.append(arg)
    return out


def _values(flag: str, raw: str, kinds: FlagKinds) -> list[str]:
    values = [v.strip() for v in raw.split(",")] if flag in kinds.lists and "," in raw else [raw]
    if flag in kinds.lists and "," in raw and any(not v for v in values):
        raise ConfigError(f"{flag} {raw}: an empty value in the comma list")
    if flag in kinds.splits:
        values = [SPLIT_ALIASES.get(v, v) for v in values]
    return values


def parse_flags(cls: type[T], argv: list[str], *, prog: str, description: str | None = None,
                default: T | None = None) -> T:
    """``tyro.cli`` with the shared grammar (lists, split names) applied to ``argv`` first."""
    import tyro

    return tyro.cli(cls, args=normalize_argv(list(argv), flag_kinds(cls)), prog=prog, description=description,
                    default=default)


# ----------------------------------------------------------------------------------------------
# --threads
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class ThreadsFlag:
    """``--threads``: a base of the flag dataclass of every command that trains or evaluates a model."""

    threads: Optional[int] = None
    """Torch CPU threads of this process (default: what torch picks, capped by the CPUs this process may
    use). Recorded in the run folder (run.json, metrics.json). See docs/speed.md."""


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def apply_threads(requested: int | None) -> int:
    """Set torch's intra-op threads for this process and return the number set.

    ``None`` keeps what torch picked by itself (``OMP_NUM_THREADS`` when set, else its core count),
    capped by ``usable_cpus``: a process pinned to 2 CPUs of a 64-core machine must not start 64
    spinning threads. Torch is imported here, after the flags were parsed.
    """
    if requested is not None and requested < 1:
        raise ConfigError(f"--threads must be >= 1, got {requested}")
    import torch

    threads = requested if requested is not None else max(1, min(torch.get_num_threads(), usable_cpus()))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
