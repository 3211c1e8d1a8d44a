"""Reading third-party pickles without running their code (DATA.md §9).

``pickle.load`` on a downloaded file can execute anything: a pickle is a small program whose
``GLOBAL``/``REDUCE``/``BUILD`` instructions call arbitrary functions, and even numpy's own
reconstructors can be abused (a ``dtype`` whose pickled state flags raw bytes as object pointers
segfaults the reader; ``_reconstruct`` without ``BUILD`` hands out uninitialised memory).

So ``safe_load`` does not use ``pickle.Unpickler`` at all. It runs the opcode stream
(decoded by ``pickletools.genops``, which only parses) on a small interpreter of its own that
knows plain containers and scalars and resolves the few admitted globals (``ALLOWED_GLOBALS``)
to constructors written here: nothing from numpy or the standard library is ever called with the
file's arguments. Every dtype is rebuilt from a whitelist of plain kinds (bool, int, uint, float,
fixed-width str/bytes) and never from a pickled state; an array exists only once its data arrived
and ``prod(shape) * itemsize`` equals the buffer's length; object arrays are accepted only when
every element is a str (or every one bytes, or every one a number) and come back as plain string /
numeric arrays. Input size, nesting depth, the number of objects and the bytes the result expands to
(memo references counted each time, so a memo bomb is refused) are limited (``PickleLimits``).
Refusals raise ``UnsafePickleError``, broken or over-limit files
``DataFormatError``; both name the file.

``load_embedding_and_mapping`` reads the original MISA ``embedding_and_mapping.pt`` with
``torch.load(weights_only=True)`` and two stand-ins (§9.2). The small helpers at the end (checksums,
non-finite counting) are shared by the pickle readers in ``misalatch.data.readers``.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import math
import mmap
import os
import pickle
import pickletools
import re
import struct
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from misalatch.errors import ConfigError, DataFormatError, UnsafePickleError

log = logging.getLogger(__name__)

# ---- limits ----

GIB = 1 << 30
MIB = 1 << 20


@dataclass(frozen=True)
class PickleLimits:
    """Bounds on what one pickle may become; every one is checked before the memory is used.

    ``max_input_bytes`` and ``max_array_bytes`` are far above the largest real file (MMSA MOSEI
    ``unaligned_50.pkl``, a few GB); ``max_depth`` far above real nesting (at most 5 levels);
    the result may expand (memo references counted every time they are used) to at most
    ``expansion_factor * input size + expansion_slack`` bytes, which real files, holding no shared
    objects beyond repeated keys, never approach. Raise them with the environment variables named in
    ``from_env`` (docs/security.md).
    """

    max_input_bytes: int = 64 * GIB
    max_array_bytes: int = 64 * GIB  # all arrays of one file together
    max_depth: int = 100
    max_objects: int = 200_000_000  # objects in the result, every reference counted
    expansion_factor: int = 4
    expansion_slack: int = 256 * MIB
    max_string_itemsize: int = 1 * MIB  # bytes per element of a str/bytes array

    @classmethod
    def from_env(cls) -> "PickleLimits":
        """Defaults, overridden by ``MISALATCH_PICKLE_MAX_BYTES`` (input and array bytes),
        ``MISALATCH_PICKLE_MAX_DEPTH`` and ``MISALATCH_PICKLE_MAX_OBJECTS``."""
        values: dict[str, int] = {}
        for var, fields in (("MISALATCH_PICKLE_MAX_BYTES", ("max_input_bytes", "max_array_bytes")),
                            ("MISALATCH_PICKLE_MAX_DEPTH", ("max_depth",)),
                            ("MISALATCH_PICKLE_MAX_OBJECTS", ("max_objects",))):
            raw = os.environ.get(var)
            if raw is None or not raw.strip():
                continue
            try:
                value = int(raw.strip().replace("_", ""))
            except ValueError:
                value = -1
            if value <= 0:
                raise ConfigError(f"environment variable {var}: expected a positive integer, got {raw!r}")
            values.update({f: value for f in fields})
        return cls(**values)

    def expansion_budget(self, input_bytes: int) -> int:
        return self.expansion_factor * input_bytes + self.expansion_slack


# ---- what a pickle may name ----


class _Global:
    """An admitted global: a name for messages and the constructor that replaces it."""

    __slots__ = ("qualname", "build")
    __hash__ = None  # type: ignore[assignment]  # never a dict key or set member

    def __init__(self, qualname: str, build: Callable[..., Any] | None) -> None:
        self.qualname, self.build = qualname, build

    def __repr__(self) -> str:
        return f"<global {self.qualname}>"


class _Dtype:
    """A dtype being read: the whitelisted kind and size from the call, the byte order from BUILD."""

    __slots__ = ("kind", "size", "order", "built")
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, kind: str, size: int | None) -> None:
        self.kind, self.size, self.order, self.built = kind, size, "=", False


class _PendingArray:
    """``_reconstruct``'s result: no data yet. Becomes a real array only through a valid BUILD;
    one still pending when it is used is refused (that was uninitialised memory in numpy)."""

    __slots__ = ("array",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self) -> None:
        self.array: np.ndarray | None = None


_KIND_SIZES: dict[str, tuple[int, ...]] = {
    "b": (1,), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "f": (2, 4, 8),
}
_DTYPE_RE = re.compile(r"([biufUSO])(\d*)")
_NDARRAY = "numpy.ndarray"


class _Refused(Exception):
    """Internal: becomes UnsafePickleError (an unsafe construct) with the file's name."""


class _Broken(Exception):
    """Internal: becomes DataFormatError (a malformed value or a limit) with the file's name."""


def _new_dtype(obj: Any, align: Any = False, copy: Any = True) -> _Dtype:
    """``numpy.dtype(obj, align, copy)``, admitted only for plain kinds (no structure, no objects)."""
    if isinstance(obj, bytes):
        obj = obj.decode("latin-1")
    if not isinstance(obj, str) or not isinstance(align, (bool, int)) or not isinstance(copy, (bool, int)):
        raise _Refused(f"numpy.dtype called with {type(obj).__name__} (only a type code string is admitted)")
    match = _DTYPE_RE.fullmatch(obj)
    if match is None:
        raise _Refused(f"dtype {obj[:40]!r} is not admitted (only bool, int, uint, float, str and bytes)")
    kind, digits = match.group(1), match.group(2)
    size = int(digits) if digits else None
    if kind in _KIND_SIZES and size not in _KIND_SIZES[kind]:
        raise _Refused(f"dtype {obj!r} is not admitted (sizes {kind}{_KIND_SIZES[kind]})")
    return _Dtype(kind, size)


def _build_dtype(dt: _Dtype, state: Any) -> None:
    """Read only the byte order and, for str/bytes, the element size from a dtype's pickled state;
    flags, field names and sub-arrays are never applied (a state with fields is refused)."""
    if dt.built:
        raise _Refused("a dtype's state is set twice")
    if not isinstance(state, tuple) or len(state) not in (8, 9):
        raise _Refused(f"dtype state must be numpy's 8- or 9-tuple, found {_kind_of(state)}")
    order, subdescr, names, fields, elsize = state[1], state[2], state[3], state[4], state[5]
    if subdescr is not None or names is not None or fields is not None:
        raise _Refused("structured or sub-array dtypes are not admitted (the state names fields)")
    if isinstance(order, bytes):
        order = order.decode("latin-1")
    if order not in ("<", ">", "|", "="):
        raise _Broken(f"dtype byte order {order!r} is not one of < > | =")
    if isinstance(elsize, bool) or not isinstance(elsize, int):
        raise _Broken(f"dtype element size must be an int, found {_kind_of(elsize)}")
    if dt.kind in "US" and elsize > 0:
        dt.size = elsize // 4 if dt.kind == "U" else elsize
        if dt.kind == "U" and elsize % 4:
            raise _Broken(f"str dtype element size {elsize} is not a multiple of 4")
    dt.order, dt.built = order, True


def _numpy_dtype(dt: Any, limits: PickleLimits) -> np.dtype:
    if not isinstance(dt, _Dtype):
        raise _Refused(f"an array's dtype must be a numpy.dtype, found {_kind_of(dt)}")
    if dt.kind == "O":
        return np.dtype(object)  # only a marker for the caller; object arrays are converted, never returned
    if dt.kind in "US":
        if not dt.size:
            raise _Broken(f"{dt.kind} dtype without an element size")
        if dt.size * (4 if dt.kind == "U" else 1) > limits.max_string_itemsize:
            raise _Broken(f"string dtype of {dt.size} characters exceeds the limit of "
                          f"{limits.max_string_itemsize} bytes per element")
    code = f"{dt.kind}{dt.size}"
    out = np.dtype(code)
    if dt.order in "<>" and out.itemsize > 1 and dt.kind != "b":
        out = out.newbyteorder(dt.order)
    return out


def _check_text(arr: np.ndarray) -> np.ndarray:
    """A str array holds UCS-4 code points; refuse values that are not characters."""
    if arr.dtype.kind == "U" and arr.size:
        order = arr.dtype.byteorder if arr.dtype.byteorder in "<>" else "="
        codes = np.ascontiguousarray(arr).view(f"{order}u4")
        if np.any((codes > 0x10FFFF) | ((codes >= 0xD800) & (codes <= 0xDFFF))):
            raise _Broken("a str array holds values that are not Unicode characters")
    return arr


def _shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, tuple) or len(shape) > 32 or not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 <= n < (1 << 48) for n in shape):
        raise _Broken(f"array shape must be a tuple of at most 32 non-negative ints, found {_kind_of(shape)}")
    return shape


def _buffer(raw: Any) -> bytes | bytearray:
    if isinstance(raw, str):  # Python 2 byte strings decoded as latin-1; numpy encodes them back
        try:
            return raw.encode("latin-1")
        except UnicodeEncodeError as err:
            raise _Broken("an array buffer given as text holds characters above U+00FF") from err
    if isinstance(raw, (bytes, bytearray)):
        return raw
    raise _Refused(f"array data must be bytes, found {_kind_of(raw)}")


def _kind_of(obj: Any) -> str:
    if isinstance(obj, (_Global, _Dtype, _PendingArray)):
        return {_Global: "a global", _Dtype: "a dtype", _PendingArray: "an array"}[type(obj)]
    return type(obj).__name__


_NUMBER = (int, float, bool)


def _object_array(items: list[Any], shape: tuple[int, ...], fortran: bool, budget: int) -> np.ndarray:
    """An object array's elements as a str, bytes or numeric array (never object dtype)."""
    if len(items) != math.prod(shape):
        raise _Broken(f"object array of shape {shape} has {len(items)} elements")
    if all(isinstance(v, str) for v in items):
        width = max((len(v) for v in items), default=1) or 1
        itemsize = 4 * width
    elif all(isinstance(v, bytes) for v in items):
        width = max((len(v) for v in items), default=1) or 1
        itemsize = width
    elif all(isinstance(v, _NUMBER) for v in items):
        itemsize = 8
    else:
        kinds = sorted({type(v).__name__ for v in items})
        raise _Refused(f"object array with elements of type {', '.join(kinds[:5])} is not admitted "
                       "(only all-str, all-bytes or all-number object arrays are read, as plain arrays)")
    if itemsize * len(items) > budget:
        raise _Broken(f"object array of {len(items)} elements would expand to {itemsize * len(items)} bytes")
    try:
        out = np.array(items) if items else np.zeros(0, dtype="<U1")
    except (OverflowError, ValueError) as err:
        raise _Broken(f"object array elements cannot form one array ({err})") from err
    if out.dtype == object:
        raise _Refused("object array elements do not form a plain array")
    return out.reshape(shape, order="F" if fortran else "C")


def _array_from_buffer(dt: np.dtype, shape: tuple[int, ...], raw: bytes | bytearray, fortran: bool) -> np.ndarray:
    count = math.prod(shape)
    if count * dt.itemsize != len(raw):
        raise _Broken(f"array of shape {shape} and dtype {dt.str} needs {count * dt.itemsize} bytes, "
                      f"the pickle gives {len(raw)}")
    flat = np.frombuffer(raw, dtype=dt, count=count)
    if dt.kind == "b":
        flat = flat.view(np.uint8) != 0  # only 0/1 bytes are valid booleans
    out = flat.reshape(shape, order="F" if fortran else "C").copy(order="K")
    return _check_text(out)


# ---- the admitted globals and what replaces them ----


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _PendingArray:
    if not (isinstance(cls, _Global) and cls.qualname == _NDARRAY):
        raise _Refused(f"_reconstruct of {_kind_of(cls)} (only numpy.ndarray is admitted)")
    _shape(shape)
    return _PendingArray()


def _frombuffer_factory(limits: PickleLimits, counter: "_Machine") -> Callable[..., np.ndarray]:
    def frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        if order not in ("C", "F"):
            raise _Broken(f"array order must be 'C' or 'F', found {order!r}")
        dt = _numpy_dtype(dtype, limits)
        if dt == object:
            raise _Refused("object arrays from a raw buffer are not admitted")
        raw = _buffer(buf)
        counter.count_array_bytes(len(raw))
        return _array_from_buffer(dt, _shape(shape), raw, order == "F")
    return frombuffer


def _scalar_factory(limits: PickleLimits) -> Callable[..., np.generic]:
    def scalar(dtype: Any, raw: Any = None) -> np.generic:
        dt = _numpy_dtype(dtype, limits)
        if dt == object:
            raise _Refused("object scalars are not admitted")
        data = _buffer(raw)
        if len(data) != dt.itemsize:
            raise _Broken(f"numpy scalar of dtype {dt.str} needs {dt.itemsize} bytes, the pickle gives {len(data)}")
        return _array_from_buffer(dt, (1,), data, False)[0]
    return scalar


def _codecs_encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """How protocol 2 spells ``bytes``: ``_codecs.encode(text, 'latin1')``; no other codec is admitted."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "iso-8859-1") or errors != "strict":
        raise _Refused(f"_codecs.encode is admitted only as encode(str, 'latin1'), found encoding {encoding!r}")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError as err:
        raise _Broken("_codecs.encode(..., 'latin1') of text with characters above U+00FF") from err


def _empty_bytes(*args: Any) -> bytes:
    """How protocol 2 spells ``b''``: ``bytes()``; any argument is refused."""
    if args:
        raise _Refused("builtins.bytes is admitted only without arguments (the empty bytes)")
    return b""


def _ordered_dict(*args: Any) -> OrderedDict:
    """``OrderedDict()`` (Python 3 then adds the items) or ``OrderedDict([[k, v], ...])`` (Python 2)."""
    if not args:
        return OrderedDict()
    if len(args) == 1 and isinstance(args[0], list) and all(
            isinstance(p, (list, tuple)) and len(p) == 2 for p in args[0]):
        try:
            return OrderedDict((k, v) for k, v in args[0])
        except TypeError as err:
            raise _Broken(f"OrderedDict with an unhashable key ({err})") from err
    raise _Refused("collections.OrderedDict is admitted only with no arguments or a list of pairs")


# (module, name) -> the replacement's key in _Machine.globals. numpy 2 writes numpy._core,
# numpy 1.x numpy.core; protocol 2 spells bytes with _codecs.encode and b'' with __builtin__.bytes.
_GLOBAL_ROLES: dict[tuple[str, str], str] = {
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("numpy.core.multiarray", "scalar"): "scalar",
    ("numpy._core.multiarray", "scalar"): "scalar",
    ("numpy.core.numeric", "_frombuffer"): "frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "frombuffer",
    ("collections", "OrderedDict"): "ordered_dict",
    ("_codecs", "encode"): "codecs_encode",
    ("__builtin__", "bytes"): "bytes",
    ("builtins", "bytes"): "bytes",
}
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(_GLOBAL_ROLES)

# Opcodes that create objects of arbitrary classes, use an extension registry or out-of-band data.
_REFUSED_OPS: dict[str, str] = {
    "PERSID": "persistent ids", "BINPERSID": "persistent ids",
    "EXT1": "extension codes", "EXT2": "extension codes", "EXT4": "extension codes",
    "INST": "class instances", "OBJ": "class instances", "NEWOBJ": "class instances",
    "NEWOBJ_EX": "class instances", "NEXT_BUFFER": "out-of-band buffers",
    "READONLY_BUFFER": "out-of-band buffers",
    "EMPTY_SET": "sets", "ADDITEMS": "sets", "FROZENSET": "sets",
}
_HASHABLE_LEAF = (str, bytes, int, float, bool, type(None), np.generic)
_PUSH_ARG = frozenset({"INT", "LONG", "BININT", "BININT1", "BININT2", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
                       "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "BINBYTES",
                       "SHORT_BINBYTES", "BINBYTES8"})


_INTERNAL = (_Global, _Dtype, _PendingArray)
_INTERNAL_TYPES = frozenset(_INTERNAL)
_BIG = 1 << 20  # buffers from this size on are dropped from the memo once an array holds their data
_RELEASED = object()
_MISSING = object()
_GO_ON = object()  # step() result of every opcode but STOP


def _printable(name: str) -> str:
    """A name from the file as it may appear in a one-line message."""
    return name if name.isprintable() and len(name) <= 200 else repr(name[:200])


class _Machine:
    """Runs one pickle's opcodes on a stack; see the module docstring for what it admits."""

    def __init__(self, limits: PickleLimits, input_bytes: int, encoding: str) -> None:
        self.limits, self.encoding = limits, encoding
        self.budget = limits.expansion_budget(input_bytes)
        self.array_bytes = 0
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.big: dict[int, int] = {}  # id of a large memoized buffer -> its memo key
        self.globals = {
            "reconstruct": _reconstruct, "ndarray": None, "dtype": _new_dtype,
            "scalar": _scalar_factory(limits), "frombuffer": _frombuffer_factory(limits, self),
            "ordered_dict": _ordered_dict, "codecs_encode": _codecs_encode, "bytes": _empty_bytes,
        }

    def put(self, key: int, value: Any) -> None:
        """Store a memo entry; large buffers (and array states holding them) are remembered so that
        ``release`` can drop them once an array owns a copy (otherwise the memo would keep a
        second copy of every array alive until the end: twice the file in memory)."""
        self.memo[key] = value
        t = type(value)
        if (t is bytes or t is str) and len(value) >= _BIG or t is tuple and len(value) in (4, 5) and any(
                type(v) in (bytes, str) and len(v) >= _BIG for v in value):
            self.big[id(value)] = key

    def release(self, *objs: Any) -> None:
        for obj in objs:
            key = self.big.pop(id(obj), None)
            if key is not None and self.memo.get(key) is obj:
                self.memo[key] = _RELEASED

    def count_array_bytes(self, n: int) -> None:
        self.array_bytes += n
        if self.array_bytes > self.limits.max_array_bytes:
            raise _Broken(f"arrays exceed the limit of {self.limits.max_array_bytes} bytes "
                          "(PickleLimits.max_array_bytes, MISALATCH_PICKLE_MAX_BYTES)")

    # -- stack helpers --
    def pop(self) -> Any:
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise _Broken("stack underflow (an opcode found no value to use)")
        return self.stack.pop()

    def pop_mark(self) -> list[Any]:
        if not self.marks:
            raise _Broken("an opcode needs a MARK that is not there")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    @staticmethod
    def value(obj: Any, *, in_tuple: bool = False) -> Any:
        """``obj`` as it may be stored in a container: built arrays resolved, the rest refused."""
        if isinstance(obj, _PendingArray):
            if obj.array is None:
                raise _Refused("an array is used before its data was given (a reconstruct without BUILD)")
            return obj.array
        if isinstance(obj, (_Dtype, _Global)) and in_tuple:
            return obj  # call arguments and array states are tuples; never part of the result
        if isinstance(obj, (_Global, _Dtype)):
            raise _Refused(f"{_kind_of(obj)} stored as data is not admitted")
        return obj

    def text(self, raw: str) -> Any:
        """A Python 2 byte string (pickletools gives it decoded as latin-1) in the caller's encoding."""
        if self.encoding in ("latin1", "latin-1"):
            return raw
        data = raw.encode("latin-1")
        if self.encoding == "bytes":
            return data
        return data.decode(self.encoding)

    # -- the interpreter --
    def run(self, buf: Any) -> Any:
        """Run the pickle in ``buf`` (bytes or a read-only mmap) to its STOP.

        The most frequent opcodes (numbers, short strings, memo access, marks, empty containers)
        are decoded here with ``struct``; every other one is decoded by its ``pickletools`` argument
        reader and executed by ``step``. Both paths check that the bytes they read exist.
        """
        stream = io.BytesIO(buf) if isinstance(buf, (bytes, bytearray)) else buf
        n = len(buf)
        st, memo, unpack = self.stack, self.memo, struct.unpack_from
        code2op = pickletools.code2op
        pos = 0
        while pos < n:
            c = buf[pos]
            if c == 0x47:  # BINFLOAT
                if pos + 9 > n:
                    break
                st.append(unpack(">d", buf, pos + 1)[0])
                pos += 9
            elif c == 0x4B:  # BININT1
                if pos + 2 > n:
                    break
                st.append(buf[pos + 1])
                pos += 2
            elif c == 0x4A:  # BININT
                if pos + 5 > n:
                    break
                st.append(unpack("<i", buf, pos + 1)[0])
                pos += 5
            elif c == 0x4D:  # BININT2
                if pos + 3 > n:
                    break
                st.append(unpack("<H", buf, pos + 1)[0])
                pos += 3
            elif c == 0x94 and st:  # MEMOIZE
                self.put(len(memo), st[-1])
                pos += 1
            elif c == 0x71 and st:  # BINPUT
                if pos + 2 > n:
                    break
                self.put(buf[pos + 1], st[-1])
                pos += 2
            elif c == 0x68 or c == 0x6A:  # BINGET, LONG_BINGET
                width = 1 if c == 0x68 else 4
                if pos + 1 + width > n:
                    break
                key = buf[pos + 1] if width == 1 else unpack("<I", buf, pos + 1)[0]
                value = memo.get(key, _MISSING)
                if value is _MISSING or value is _RELEASED:
                    self.step("BINGET", key)  # raises the precise error
                st.append(value)
                pos += 1 + width
            elif c == 0x8C:  # SHORT_BINUNICODE
                if pos + 2 > n or pos + 2 + buf[pos + 1] > n:
                    break
                end = pos + 2 + buf[pos + 1]
                st.append(str(buf[pos + 2:end], "utf-8", "surrogatepass"))
                pos = end
            elif c == 0x28:  # MARK
                self.marks.append(len(st))
                pos += 1
            elif c == 0x4E:  # NONE
                st.append(None)
                pos += 1
            else:
                op = code2op.get(chr(c))
                if op is None:
                    raise _Broken(f"unknown opcode {bytes([c])!r} at byte {pos}")
                stream.seek(pos + 1)
                arg = op.arg.reader(stream) if op.arg is not None else None
                pos = stream.tell()
                result = self.step(op.name, arg)
                if result is not _GO_ON:
                    return result
        raise _Broken("pickle ended before STOP (the file is truncated)")

    def step(self, name: str, arg: Any) -> Any:
        """Execute one opcode (decoded by pickletools); the result at STOP, else ``_GO_ON``."""
        st = self.stack
        memo = self.memo
        if name in _PUSH_ARG:  # the common case first: a value given inline
            st.append(arg)
        elif name == "MEMOIZE" and st:
            self.put(len(memo), st[-1])
        elif name == "BINPUT" and st:
            self.put(arg, st[-1])
        elif name in _REFUSED_OPS:
            raise _Refused(f"opcode {name} ({_REFUSED_OPS[name]}) is not admitted")
        elif name in ("PROTO", "FRAME"):
            if name == "PROTO" and not 0 <= arg <= 5:
                raise _Broken(f"unknown pickle protocol {arg}")
        elif name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
            st.append(self.text(arg))
        elif name == "BYTEARRAY8":
            st.append(bytes(arg))
        elif name == "NONE":
            st.append(None)
        elif name in ("NEWTRUE", "NEWFALSE"):
            st.append(name == "NEWTRUE")
        elif name == "EMPTY_LIST":
            st.append([])
        elif name == "EMPTY_DICT":
            st.append({})
        elif name == "EMPTY_TUPLE":
            st.append(())
        elif name == "MARK":
            self.marks.append(len(st))
        elif name == "POP":
            if st and (not self.marks or len(st) > self.marks[-1]):
                st.pop()
            elif self.marks:  # POP right after MARK discards the mark (as pickle does)
                self.marks.pop()
            else:
                raise _Broken("POP on an empty stack")
        elif name == "POP_MARK":
            self.pop_mark()
        elif name == "DUP":
            v = self.pop()
            st.extend((v, v))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = [self.pop() for _ in range(n)][::-1]
            st.append(tuple(self.value(v, in_tuple=True) for v in items))
        elif name == "TUPLE":
            items = self.pop_mark()
            st.append(tuple(items) if _INTERNAL_TYPES.isdisjoint(map(type, items))
                      else tuple(self.value(v, in_tuple=True) for v in items))
        elif name == "LIST":
            items = self.pop_mark()
            st.append(items if _INTERNAL_TYPES.isdisjoint(map(type, items)) else [self.value(v) for v in items])
        elif name == "DICT":
            items = self.pop_mark()
            d: dict[Any, Any] = {}
            self.set_items(d, items)
            st.append(d)
        elif name == "APPEND":
            v = self.value(self.pop())
            self.target(list, "APPEND").append(v)
        elif name == "APPENDS":
            items = self.pop_mark()
            if not _INTERNAL_TYPES.isdisjoint(map(type, items)):  # type set at C speed
                items = [self.value(v) for v in items]
            self.target(list, "APPENDS").extend(items)
        elif name == "SETITEM":
            v = self.pop()
            k = self.pop()
            self.set_items(self.target(dict, "SETITEM"), [k, v])
        elif name == "SETITEMS":
            items = self.pop_mark()
            self.set_items(self.target(dict, "SETITEMS"), items)
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                raise _Broken(f"memo entry {arg} is used before it was stored")
            value = self.memo[arg]
            if value is _RELEASED:
                raise _Broken(f"memo entry {arg} (an array's data) is used a second time")
            st.append(value)
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            if not st:
                raise _Broken("PUT on an empty stack")
            self.put(arg, st[-1])
        elif name == "MEMOIZE":
            if not st:
                raise _Broken("MEMOIZE on an empty stack")
            self.put(len(self.memo), st[-1])
        elif name == "GLOBAL":
            module, _, qual = arg.partition(" ")
            st.append(self.global_(module, qual))
        elif name == "STACK_GLOBAL":
            qual = self.pop()
            module = self.pop()
            if not isinstance(module, str) or not isinstance(qual, str):
                raise _Broken("STACK_GLOBAL needs two strings")
            st.append(self.global_(module, qual))
        elif name == "REDUCE":
            args = self.pop()
            func = self.pop()
            st.append(self.call(func, args))
        elif name == "BUILD":
            state = self.pop()
            target = self.pop()
            self.build(target, state)
            st.append(target)
        elif name == "STOP":
            result = self.pop()
            return self.value(result)
        else:  # an opcode of a newer protocol
            raise _Refused(f"opcode {name} is not admitted")
        return _GO_ON

    def target(self, kind: type, opname: str) -> Any:
        if not self.stack or (self.marks and len(self.stack) <= self.marks[-1]):
            raise _Broken(f"{opname} found no container")
        obj = self.stack[-1]
        if type(obj) is not kind and not (kind is dict and type(obj) is OrderedDict):
            raise _Broken(f"{opname} applied to {_kind_of(obj)} (expected a {kind.__name__})")
        return obj

    def set_items(self, d: dict, items: list[Any]) -> None:
        if len(items) % 2:
            raise _Broken("a dict needs key/value pairs (odd number of items)")
        for k, v in zip(items[::2], items[1::2]):
            k, v = self.value(k), self.value(v)
            if not _hashable_key(k):
                raise _Broken(f"dict key of type {_kind_of(k)} is not admitted")
            d[k] = v

    def global_(self, module: str, qual: str) -> _Global:
        role = _GLOBAL_ROLES.get((module, qual))
        if role is None:
            raise _Refused(f"refused to load global {_printable(module)}.{_printable(qual)}")
        return _Global(f"{module}.{qual}" if role != "ndarray" else _NDARRAY, self.globals[role])

    def call(self, func: Any, args: Any) -> Any:
        if not isinstance(func, _Global):
            raise _Refused(f"REDUCE calls {_kind_of(func)}, not an admitted global")
        if not isinstance(args, tuple):
            raise _Broken(f"REDUCE arguments must be a tuple, found {_kind_of(args)}")
        if func.build is None:
            raise _Refused(f"calling {func.qualname} is not admitted")
        if self.big:  # a buffer passed to _frombuffer / scalar / _codecs.encode is copied by them
            self.release(*args)
        if func.qualname.endswith("_reconstruct"):
            if len(args) != 3:
                raise _Broken("_reconstruct takes 3 arguments")
        elif not all(not isinstance(a, (_PendingArray, _Global)) for a in args):
            raise _Refused(f"{func.qualname} called with {', '.join(_kind_of(a) for a in args)}")
        try:
            return func.build(*args)
        except TypeError as err:  # wrong number of arguments
            raise _Broken(f"{func.qualname} called with {len(args)} arguments") from err

    def build(self, target: Any, state: Any) -> None:
        if isinstance(target, _Dtype):
            _build_dtype(target, state)
        elif isinstance(target, _PendingArray):
            if target.array is not None:
                raise _Refused("an array's state is set twice")
            target.array = self.build_array(state)
            self.release(state, state[-1])  # the array holds a copy of the data now
        else:
            raise _Refused(f"BUILD (setting the state of {_kind_of(target)}) is not admitted")

    def build_array(self, state: Any) -> np.ndarray:
        """``ndarray.__setstate__((version, shape, dtype, is_fortran, data))``, checked first."""
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise _Broken(f"array state must be (version, shape, dtype, fortran, data), found {_kind_of(state)}")
        shape, dtype, fortran, raw = state
        shape = _shape(shape)
        if not isinstance(fortran, (bool, int)):
            raise _Broken(f"array fortran flag must be a bool, found {_kind_of(fortran)}")
        dt = _numpy_dtype(dtype, self.limits)
        if dt == object:
            if not isinstance(raw, list):
                raise _Refused("object array data must be a list of values")
            out = _object_array(raw, shape, bool(fortran), self.budget)
            self.count_array_bytes(out.nbytes)
            return out
        data = _buffer(raw)
        self.count_array_bytes(len(data))
        return _array_from_buffer(dt, shape, data, bool(fortran))


def _hashable_key(k: Any) -> bool:
    if isinstance(k, _HASHABLE_LEAF):
        return True
    if isinstance(k, tuple):
        stack = [k]
        while stack:
            for v in stack.pop():
                if isinstance(v, tuple):
                    stack.append(v)
                elif not isinstance(v, _HASHABLE_LEAF):
                    return False
        return True
    return False


_LEAF_TYPES = (str, bytes, int, float, bool, type(None))


def _check_result(obj: Any, limits: PickleLimits, budget: int) -> None:
    """Walk the result once (iteratively: no recursion, shared objects summed from a cache) and
    refuse cycles, nesting deeper than ``max_depth``, and a result that would expand (every
    reference counted) beyond ``max_objects`` objects or ``budget`` bytes: what a consumer copying
    it (``np.asarray`` of a list) would have to allocate."""
    if _leaf_size(obj) is not None:
        return
    sizes: dict[int, tuple[int, int]] = {}  # id -> (objects, bytes) of an expanded subtree
    on_path: set[int] = {id(obj)}
    frames: list[list[Any]] = [[obj, _children(obj), 1, 8]]  # container, children left, objects, bytes
    while frames:
        frame = frames[-1]
        n, b = frame[2], frame[3]
        descend = None
        for child in frame[1]:
            t = type(child)
            if t is float or t is int or t is bool or child is None:
                n += 1
                b += 8
            elif t is str or t is bytes:
                n += 1
                b += 8 + len(child)
            elif t is list or t is tuple or t is dict or t is OrderedDict:
                key = id(child)
                if key in sizes:
                    cn, cb = sizes[key]
                    n += cn
                    b += cb
                elif key in on_path:
                    raise _Broken("the pickle holds a cyclic structure (a container inside itself)")
                else:
                    descend = child
                    break
            else:
                n += 1
                b += _leaf_size(child)  # arrays, numpy scalars; anything else is refused there
            if n > limits.max_objects or b > budget:
                break
        frame[2], frame[3] = n, b
        if n > limits.max_objects:
            raise _Broken(f"the pickle expands to more than {limits.max_objects} objects (memo references "
                          "counted each time; PickleLimits.max_objects, MISALATCH_PICKLE_MAX_OBJECTS)")
        if b > budget:
            raise _Broken(f"the pickle expands to more than {budget} bytes, far more than its size allows "
                          "(memo references counted each time: a memo-reference bomb?)")
        if descend is not None:
            if len(frames) >= limits.max_depth:
                raise _Broken(f"the pickle nests deeper than {limits.max_depth} levels "
                              "(PickleLimits.max_depth, MISALATCH_PICKLE_MAX_DEPTH)")
            flat = _flat_size(descend)
            if flat is not None:  # a list of plain scalars (GloVe vectors as lists): summed at C speed
                sizes[id(descend)] = flat
                frame[2] += flat[0]
                frame[3] += flat[1]
                continue
            on_path.add(id(descend))
            frames.append([descend, _children(descend), 1, 8])
            continue
        frames.pop()
        on_path.discard(id(frame[0]))
        sizes[id(frame[0])] = (n, b)
        if frames:
            frames[-1][2] += n
            frames[-1][3] += b


_SCALAR_TYPES = frozenset({float, int, bool, type(None)})


def _flat_size(obj: Any) -> tuple[int, int] | None:
    """(objects, bytes) of a list/tuple holding only plain scalars and strings, else None."""
    if type(obj) is dict or type(obj) is OrderedDict:
        return None
    kinds = set(map(type, obj))
    if kinds <= _SCALAR_TYPES:
        return 1 + len(obj), 8 + 8 * len(obj)
    if kinds <= _SCALAR_TYPES | {str, bytes}:
        return 1 + len(obj), 8 + 8 * len(obj) + sum(len(v) for v in obj if type(v) is str or type(v) is bytes)
    return None


_DONE = object()


def _leaf_size(obj: Any) -> int | None:
    """Bytes a leaf stands for, or None for a container; anything else is refused."""
    if isinstance(obj, (str, bytes)):
        return 8 + len(obj)
    if isinstance(obj, _LEAF_TYPES):
        return 8
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biufUS":
            raise _Refused(f"an array of dtype {obj.dtype} reached the result")
        return 8 + obj.nbytes
    if isinstance(obj, np.generic):
        if obj.dtype.kind not in "biufUS":
            raise _Refused(f"a scalar of dtype {obj.dtype} reached the result")
        return 8 + obj.dtype.itemsize
    if isinstance(obj, (list, tuple, dict)):
        return None
    raise _Refused(f"{_kind_of(obj)} is not admitted in the result")


def _children(obj: Any) -> Iterator[Any]:
    return itertools.chain.from_iterable(obj.items()) if isinstance(obj, dict) else iter(obj)


# ---- the public loaders ----


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:500]


def _load_stream(buf: Any, size: int, source: str, encoding: str, limits: PickleLimits | None) -> object:
    limits = limits or PickleLimits.from_env()
    if size > limits.max_input_bytes:
        raise DataFormatError(f"{source}: {size} bytes is over the limit of {limits.max_input_bytes} bytes for "
                              "one pickle (PickleLimits.max_input_bytes, MISALATCH_PICKLE_MAX_BYTES)")
    machine = _Machine(limits, size, encoding)
    try:
        result = machine.run(buf)
        machine.stack.clear()
        machine.memo.clear()
        _check_result(result, limits, machine.budget)
        return result
    except _Refused as err:
        raise UnsafePickleError(
            f"{source}: {_one_line(err)}; only numpy arrays and scalars of plain dtypes, OrderedDict and plain "
            "containers are admitted, and nothing from this file was executed"
        ) from None
    except _Broken as err:
        raise DataFormatError(f"{source}: not a readable pickle: {_one_line(err)}") from None
    except (ValueError, EOFError, struct.error, OverflowError, AssertionError, UnicodeError,
            IndexError, KeyError, TypeError) as err:
        # malformed opcodes or arguments as pickletools decodes them, or a truncated file
        raise DataFormatError(
            f"{source}: not a readable pickle ({type(err).__name__}: {_one_line(err)}); the file may be truncated "
            "or of another format"
        ) from None
    except MemoryError:
        raise DataFormatError(f"{source}: out of memory while reading the pickle") from None


def safe_loads(data: bytes, *, source: str = "<bytes>", encoding: str = "latin1",
               limits: PickleLimits | None = None) -> object:
    """Unpickle ``data`` with the restricted interpreter; see ``safe_load``."""
    return _load_stream(bytes(data), len(data), source, encoding, limits)


def safe_load(path: str | os.PathLike[str], *, encoding: str = "latin1",
              limits: PickleLimits | None = None) -> object:
    """Load a third-party pickle, admitting only numpy arrays, scalars and plain containers.

    ``encoding="latin1"`` (the default) reads Python-2 pickles: their byte strings, including numpy
    array buffers, decode one byte per character, which map back losslessly. Python-3 pickles are
    unaffected. ``limits`` defaults to ``PickleLimits.from_env``. Raises ``UnsafePickleError``
    naming the file and the refused global / opcode / dtype; ``DataFormatError`` for a file that is
    not a (complete) pickle or exceeds a limit.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                return _load_stream(b"", 0, str(path), encoding, limits)
            # A read-only map: the OS pages the file in as it is parsed (multi-GB files are not read
            # whole first), and a read past the end is short instead of allocating what a forged
            # length field asks for (a buffered file allocates the requested size up front).
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return _load_stream(mapped, size, str(path), encoding, limits)
    except OSError as err:
        raise DataFormatError(f"{path}: cannot read ({err.strerror or err})") from err


# ---- embedding_and_mapping.pt (DATA.md §9.2) ----


def _return_unk() -> int:
    """Stand-in for the original ``create_dataset.return_unk`` (the ``<unk>`` id)."""
    return 0


def _defaultdict_as_dict(default_factory: object = None, *args: object) -> dict:
    """Stand-in for ``collections.defaultdict``: torch's weights-only unpickler can only fill a
    plain dict, and the factory only served to map unknown words to 0, which callers do."""
    return dict(*args)


def _torch_reason(message: str) -> str:
    """The informative line of torch's long weights-only refusal (e.g. the refused GLOBAL)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or "WeightsUnpickler error" in ln or "Unsupported" in ln:
            i = lines.index(ln)
            return " ".join(lines[i:i + 2] if ln.endswith(":") else [ln])[:300]
    return (lines[-1] if lines else message)[:300]


def load_embedding_and_mapping(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, int]]:
    """Read the original MISA ``embedding_and_mapping.pt``: ``(embedding (V, d_e) float32, word2id)``.

    Uses ``torch.load(weights_only=True)`` with exactly two extra globals: ``collections.defaultdict``
    and ``create_dataset.return_unk``, both replaced by harmless stand-ins. Anything else is refused
    with ``UnsafePickleError``; the pickles' own word ids suffice for evaluation without this file.
    """
    import torch  # heavy; only this loader needs it

    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: embedding_and_mapping file not found")
    allowed = [(_defaultdict_as_dict, "collections.defaultdict"), (_return_unk, "create_dataset.return_unk")]
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafePickleError(
            f"{path}: refused by torch.load(weights_only=True) with only collections.defaultdict and "
            f"create_dataset.return_unk allowed ({_torch_reason(str(err))}); the pickles' word ids "
            "suffice for evaluation, so the file can be left out"
        ) from err
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise DataFormatError(f"{path}: not a readable torch file ({type(err).__name__}: {err})") from err
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise DataFormatError(f"{path}: expected a pair (embedding, word2id), found {type(obj).__name__}")
    emb, word2id = obj
    if not isinstance(emb, torch.Tensor) or emb.ndim != 2:
        shape = tuple(emb.shape) if hasattr(emb, "shape") else type(emb).__name__
        raise DataFormatError(f"{path}: embedding must be a 2-D tensor (V, d_e), found {shape}")
    if not isinstance(word2id, dict) or not all(isinstance(k, str) and isinstance(v, int)
                                               for k, v in word2id.items()):
        raise DataFormatError(f"{path}: word2id must map str to int, found {type(word2id).__name__}")
    bad = [w for w, i in word2id.items() if not 0 <= i < emb.shape[0]]
    if bad:
        raise DataFormatError(
            f"{path}: {len(bad)} word ids outside the embedding's {emb.shape[0]} rows (e.g. {bad[0]!r})"
        )
    return emb.detach().to(torch.float32).numpy().copy(), dict(word2id)


# ---- helpers shared by the pickle readers ----


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, recorded in ``meta["sources"]`` so results name their inputs."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_entry(path: str | os.PathLike[str]) -> dict[str, str]:
    """One ``meta["sources"]`` entry: ``{"path", "sha256"}`` (the text CSV reader's layout)."""
    return {"path": str(path), "sha256": sha256_file(path)}


class NonFiniteCounter:
    """Replace NaN/±inf by 0 (DATA.md §3.5 step 1) and count them per field for ``meta["nonfinite"]``."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def clean(self, arr: Any, field: str, *, where: str = "", dtype: type = np.float32) -> np.ndarray:
        """A fresh contiguous ``dtype`` copy of ``arr`` with non-finite values set to 0 (counted).

        ``where`` (file, split, sample) prefixes the error raised for non-numeric content.
        """
        try:
            out = np.array(arr, dtype=dtype, copy=True, order="C")
        except (TypeError, ValueError) as err:
            raise DataFormatError(
                f"{where}: {field} must be numeric, found {type(arr).__name__} ({err})"
            ) from err
        bad = ~np.isfinite(out)
        n = int(bad.sum())
        if n:
            out[bad] = 0
            self.counts[field] = self.counts.get(field, 0) + n
        return out

    def clean_label(self, value: float, field: str = "label") -> float:
        """The label as a float, NaN/inf kept: a missing label is not a neutral 0 (issue 17), so
        ``CanonicalDataset.validate`` refuses the dataset, naming the file, split and count."""
        return float(value)


def infer_dataset_name(path: str | os.PathLike[str], default: str) -> str:
    """Guess ``mosi`` / ``mosei`` / ``ur_funny`` from a file name or its nearest folders (e.g.
    ``MOSI/Processed/aligned_50.pkl``, ``mosei_senti_data.pkl``, ``humor.pkl``); ``default`` otherwise."""
    p = Path(path).absolute()
    parts = [p.name, p.parent.name] + ([p.parent.parent.name] if p.suffix else [])
    for part in parts:
        low = part.lower()
        if "mosei" in low:
            return "mosei"
        if "mosi" in low:
            return "mosi"
        if "funny" in low or "humor" in low:
            return "ur_funny"
    return default


def describe(obj: object) -> str:
    """A short description of an unpickled object for error messages (type, shape or keys)."""
    if isinstance(obj, np.ndarray):
        return f"array of shape {obj.shape} ({obj.dtype})"
    if isinstance(obj, dict):
        keys = list(obj)[:8]
        more = ", ..." if len(obj) > 8 else ""
        return f"dict with keys {', '.join(repr(k) for k in keys)}{more}"
    if isinstance(obj, (list, tuple)):
        return f"{type(obj).__name__} of length {len(obj)}"
    return type(obj).__name__


def record_drops(label: str, split: str, drops: Counter[str], dropped: Counter[str],
                 dropped_by_split: dict[str, dict[str, int]]) -> None:
    """Add one split's drop counts to the dataset totals and log them once (shared by the readers)."""
    if drops:
        dropped.update(drops)
        dropped_by_split[split] = dict(drops)
        log.info("%s: split %s: dropped %s", label, split, dict(drops))


# A word id names a row of the embedding matrix the model allocates: real vocabularies (MISA's
# MOSI/MOSEI word2id, GloVe 840B's 2.2 M words) stay far below this, a forged 10**9 does not.
MAX_WORD_ID = 10_000_000


def float_values(value: Any, where: str, field: str, n: int | None = None) -> np.ndarray:
    """``value`` as a float64 array (numeric arrays or lists of numbers only), ``n`` values first."""
    arr = value if isinstance(value, np.ndarray) else None
    if arr is None and isinstance(value, (list, tuple, int, float, np.generic)) and not isinstance(value, bool):
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):
            arr = None
    if arr is None or arr.dtype.kind not in "biuf":
        found = f"dtype {arr.dtype}" if arr is not None else describe(value)
        raise DataFormatError(f"{where}: field {field!r} must hold numbers, found {found}")
    arr = arr.astype(np.float64)
    if n is not None and arr.shape[:1] != (n,):
        raise DataFormatError(f"{where}: field {field!r} has shape {arr.shape}, expected {n} values first")
    return arr


def id_strings(value: Any, where: str, field: str, n: int) -> list[str]:
    """Segment ids as strings: a 1-D str / bytes / integer array, or a list of such scalars."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind not in "USiu":
            raise DataFormatError(f"{where}: field {field!r} must be a 1-D array of str or int ids, "
                                  f"found {describe(value)}")
        items = value.tolist()
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise DataFormatError(f"{where}: field {field!r} must be a list or array of ids, found {describe(value)}")
    if len(items) != n:
        raise DataFormatError(f"{where}: field {field!r} has {len(items)} ids but there are {n} samples")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, bytes):
            item = item.decode("utf-8", errors="replace")
        elif isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_)):
            item = str(int(item))
        if not isinstance(item, str):
            raise DataFormatError(f"{where}: field {field!r} entry {i} must be a str or int id, found "
                                  f"{type(item).__name__}")
        out.append(str(item))
    return out


def check_unique_ids(ids: Iterable[tuple[str, str]], where: str, field: str) -> None:
    """Refuse a repeated segment id (``(id, place)`` pairs), as the CSV reader does: two segments
    with one id would silently overwrite each other in predictions and results."""
    first: dict[str, str] = {}
    for seg_id, place in ids:
        if seg_id in first:
            raise DataFormatError(f"{where}: field {field!r}: duplicate id {seg_id!r} ({first[seg_id]} and {place})")
        first[seg_id] = place


def class_label(value: float, where: str, field: str = "label", classes: int = 2) -> int:
    """A classification label: exactly one of 0..classes-1; NaN is refused, never read as class 0."""
    v = float(value)
    if not (np.isfinite(v) and v.is_integer() and 0 <= v < classes):
        expected = "0 or 1" if classes == 2 else f"a class in 0..{classes - 1}"
        raise DataFormatError(f"{where}: field {field!r}: classification label must be {expected}, found {value!r}")
    return int(v)
