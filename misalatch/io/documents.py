"""Reading small YAML / JSON documents a user or a stranger wrote (configs, search spaces, golden-vector
metadata), as one boundary: every way such a file can be wrong becomes a ``ConfigError`` that names
the file and the flag it came from, never a ``UnicodeDecodeError``, ``RecursionError`` or a parser's
traceback.

Limits: a document is at most ``MAX_BYTES`` bytes and nests at most ``MAX_DEPTH`` levels (the
parsers recurse once per level, so a file of ten thousand ``[`` would otherwise exhaust the stack). Both
are far beyond any configuration misalatch reads.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from misalatch.errors import ConfigError

MAX_BYTES = 4 << 20
MAX_DEPTH = 50


def _label(path: Path, flag: str | None) -> str:
    return f"{flag} {path}" if flag else str(path)


def read_document_text(path: str | os.PathLike[str], *, flag: str | None = None, what: str = "file") -> str:
    """The text of a small UTF-8 file; a missing, unreadable, huge or binary file is a ConfigError."""
    path = Path(path)
    label = _label(path, flag)
    try:
        if not path.is_file():
            raise ConfigError(f"{label}: no such {what}")
        if path.stat().st_size > MAX_BYTES:
            raise ConfigError(f"{label}: {path.stat().st_size} bytes is too large for a {what} "
                              f"(at most {MAX_BYTES} bytes)")
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{label}: cannot read the {what} ({err.strerror or err})") from None
    if b"\x00" in raw:
        raise ConfigError(f"{label}: a binary file, not a text {what} (it contains NUL bytes)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise ConfigError(f"{label}, line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); "
                          f"expected a UTF-8 {what}") from None


def check_depth(value: Any, label: str, limit: int = MAX_DEPTH) -> None:
    """Refuse a parsed document nested deeper than ``limit`` (iteratively: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            if depth > limit:
                raise ConfigError(f"{label}: nested deeper than {limit} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def _bracket_depth(text: str) -> int:
    """The deepest nesting of brackets/braces in ``text`` (a cheap upper bound for flow-style YAML and
    JSON, checked before a recursive parser sees the text)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    return deepest


def parse_yaml(text: str, label: str) -> Any:
    """``yaml.safe_load`` of ``text`` with the depth limit; errors name ``label``."""
    import yaml

    if _bracket_depth(text) > MAX_DEPTH:
        raise ConfigError(f"{label}: nested deeper than {MAX_DEPTH} levels")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{label}: not valid YAML ({' '.join(str(err).split())})") from None
    except RecursionError:
        raise ConfigError(f"{label}: nested deeper than {MAX_DEPTH} levels") from None
    check_depth(doc, label)
    return doc


def parse_json(text: str, label: str) -> Any:
    """Strict JSON (no NaN/Infinity) of ``text`` with the depth limit; errors name ``label``."""
    if _bracket_depth(text) > MAX_DEPTH:
        raise ConfigError(f"{label}: nested deeper than {MAX_DEPTH} levels")

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        doc = json.loads(text, parse_constant=constant)
    except (ValueError, RecursionError) as err:
        raise ConfigError(f"{label}: not valid JSON ({err})") from None
    check_depth(doc, label)
    return doc


def load_yaml(path: str | os.PathLike[str], *, flag: str | None = None, what: str = "YAML file") -> Any:
    """The parsed YAML document in ``path`` (see the module docstring for what is refused)."""
    return parse_yaml(read_document_text(path, flag=flag, what=what), _label(Path(path), flag))


def load_json(path: str | os.PathLike[str], *, flag: str | None = None, what: str = "JSON file") -> Any:
    """The parsed JSON document in ``path`` (see the module docstring for what is refused)."""
    return parse_json(read_document_text(path, flag=flag, what=what), _label(Path(path), flag))


def finite_number(value: Any) -> bool:
    """A real int/float (not a bool) that is finite: what a range bound, step or seed may be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
