"""Hostile pickles against the restricted interpreter (issue 8 §2): each was a crash, a leak of
uninitialised memory, a raw exception or an unbounded allocation with ``pickle.Unpickler``."""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from misalatch.data.safe_pickle import ALLOWED_GLOBALS, PickleLimits, safe_load, safe_loads
from misalatch.errors import ConfigError, DataFormatError, UnsafePickleError

REPO = Path(__file__).resolve().parents[2]

FLAGS_PLAIN = b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"  # elsize -1, alignment -1, flags 0, TUPLE


def _float_array_p2() -> bytes:
    data = pickle.dumps(np.array([1.0, 2.0]), protocol=2)
    assert data.count(FLAGS_PLAIN) == 1
    return data


def test_admitted_globals_are_exactly_what_numpy_pickles_need():
    modules = {m for m, _ in ALLOWED_GLOBALS}
    assert modules == {"numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                       "numpy._core.numeric", "collections", "_codecs", "__builtin__", "builtins"}
    assert ("builtins", "eval") not in ALLOWED_GLOBALS and len(ALLOWED_GLOBALS) == 12


def test_dtype_flags_from_the_pickle_are_never_applied():
    # flags 63 mark the dtype as holding object pointers: numpy then dereferenced the raw floats (segfault)
    evil = _float_array_p2().replace(FLAGS_PLAIN, b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK?t")
    out = safe_loads(evil, source="flags.pkl")
    assert out.dtype == np.float64 and out.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("code", [b"O8", b"V8", b"M8", b"c16", b"f16", b"i3", b"U5,i4"])
def test_dtypes_outside_the_whitelist_are_refused(code):
    evil = _float_array_p2().replace(b"X\x02\x00\x00\x00f8", b"X" + struct.pack("<I", len(code)) + code)
    with pytest.raises(UnsafePickleError, match=r"dtype.pkl: (dtype .* not admitted|object array data must be a list)"):
        safe_loads(evil, source="dtype.pkl")


def test_structured_dtype_state_is_refused():
    # names/fields in the state would turn the plain dtype into a record type
    evil = _float_array_p2().replace(b"NNNJ", b"N(X\x01\x00\x00\x00at" + b"NJ")
    with pytest.raises(UnsafePickleError, match="structured"):
        safe_loads(evil)


RECONSTRUCT = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\xe1\xf5\x05\x85U\x01b\x87R"


def test_reconstruct_without_build_never_hands_out_memory():
    for tail in (b".", b"q\x00]q\x01h\x00a."):  # the pending array itself, or stored in a list
        with pytest.raises(UnsafePickleError, match="before its data"):
            safe_loads(RECONSTRUCT + tail, source="uninit.pkl")


def test_array_whose_data_does_not_fill_its_shape_is_refused():
    evil = _float_array_p2().replace(b"K\x01K\x02\x85", b"K\x01J\x00\x00\x00\x10\x85")  # shape (2**28,)
    with pytest.raises(DataFormatError, match=r"needs 2147483648 bytes, the pickle gives 16"):
        safe_loads(evil)


@pytest.mark.parametrize("blob, match", [
    (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.", "latin1"),
    (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x03\x00\x00\x00nop\x86R.", "latin1"),
    (b"\x80\x02c__builtin__\nbytes\nK\x05\x85R.", "without arguments"),
    (b"\x80\x02ccollections\nOrderedDict\nK\x05\x85R.", "OrderedDict"),
    (b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00f8\x85R.", "dtype stored as data"),
    (b"\x80\x02cnumpy\nndarray\n.", "global stored as data"),
    (b"\x80\x04\x8f.", "sets"),
    (b"\x80\x02\x82\x01.", "extension"),
    (b"\x80\x02cnumpy\nndarray\n)\x81.", "class instances"),
    (b"\x80\x02K\x01K\x02b.", "BUILD"),
])
def test_allowed_globals_misused_give_clean_refusals(blob, match):
    with pytest.raises(UnsafePickleError, match=match):
        safe_loads(blob, source="misuse.pkl")


def test_structured_void_scalar_is_refused():
    void = pickle.dumps(np.zeros(1, dtype="V8")[0], protocol=2)
    with pytest.raises(UnsafePickleError, match="not admitted"):
        safe_loads(void)
    record = pickle.dumps(np.zeros(1, dtype=[("a", "<i4")])[0], protocol=4)
    with pytest.raises(UnsafePickleError):
        safe_loads(record)


def _memo_bomb(levels: int = 4, width: int = 1000) -> bytes:
    """``width`` references to a list of ``width`` references ... (``width ** levels`` leaves)."""
    out = b"\x80\x02]q\x00(" + b"K\x00" * width + b"e"
    for level in range(1, levels):
        out += b"]" + b"q" + bytes([level]) + b"(" + (b"h" + bytes([level - 1])) * width + b"e"
    return out + b"."


def test_memo_amplification_is_refused_quickly():
    bomb = _memo_bomb()
    assert len(bomb) < 10_000  # 10**12 leaves from under 10 kB
    start = time.process_time()
    with pytest.raises(DataFormatError, match="memo"):
        safe_loads(bomb, source="bomb.pkl")
    assert time.process_time() - start < 5
    # a shared sub-list used twice is fine: the limit is on the expansion, not on sharing
    assert safe_loads(_memo_bomb(levels=2, width=10)) == [[0] * 10] * 10


def test_deep_nesting_is_refused_without_recursion_error():
    deep = b"\x80\x02" + b"]" * 200_000 + b"a" * 199_999 + b"."
    with pytest.raises(DataFormatError, match="nests deeper than 100 levels"):
        safe_loads(deep, source="deep.pkl")


def test_cycles_are_refused():
    with pytest.raises(DataFormatError, match="cyclic"):
        safe_loads(b"\x80\x02]q\x00h\x00a.")


def test_forged_length_field_does_not_allocate(tmp_path):
    path = tmp_path / "forged.pkl"
    path.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 1 << 60) + b"abc")  # BINBYTES8 of 2**60 bytes
    with pytest.raises(DataFormatError, match=r"forged.pkl: not a readable pickle"):
        safe_load(path)


def test_object_arrays_become_plain_arrays_or_are_refused():
    ids = safe_loads(pickle.dumps(np.array(["vid$_$1", "vid$_$22"], dtype=object), protocol=4))
    assert ids.dtype.kind == "U" and ids.tolist() == ["vid$_$1", "vid$_$22"]
    nums = safe_loads(pickle.dumps(np.array([1, 2], dtype=object), protocol=2))
    assert nums.dtype.kind == "i" and nums.tolist() == [1, 2]
    with pytest.raises(UnsafePickleError, match="object array"):
        safe_loads(pickle.dumps(np.array(["a", 1, None], dtype=object), protocol=4))


def test_text_arrays_with_invalid_code_points_are_refused():
    data = pickle.dumps(np.array(["ab"]), protocol=3)
    evil = data.replace(b"a\x00\x00\x00b\x00\x00\x00", b"a\x00\x00\x00\x00\x00\x00\xff")
    with pytest.raises(DataFormatError, match="not Unicode characters"):
        safe_loads(evil)


def test_boolean_arrays_hold_only_true_and_false():
    data = pickle.dumps(np.array([True, False, True]), protocol=3).replace(b"\x01\x00\x01", b"\x07\x00\xff")
    out = safe_loads(data)
    assert out.dtype == bool and out.view(np.uint8).tolist() == [1, 0, 1]


def test_limits_are_configurable(tmp_path, monkeypatch):
    nested = pickle.dumps([[[[1]]]], protocol=4)
    assert safe_loads(nested) == [[[[1]]]]
    with pytest.raises(DataFormatError, match="nests deeper than 3"):
        safe_loads(nested, limits=PickleLimits(max_depth=3))
    monkeypatch.setenv("MISALATCH_PICKLE_MAX_DEPTH", "3")
    with pytest.raises(DataFormatError, match="MISALATCH_PICKLE_MAX_DEPTH"):
        safe_loads(nested)
    monkeypatch.setenv("MISALATCH_PICKLE_MAX_DEPTH", "many")
    with pytest.raises(ConfigError, match="MISALATCH_PICKLE_MAX_DEPTH"):
        safe_loads(nested)
    monkeypatch.delenv("MISALATCH_PICKLE_MAX_DEPTH")
    path = tmp_path / "big.pkl"
    path.write_bytes(pickle.dumps(np.zeros(1000), protocol=4))
    with pytest.raises(DataFormatError, match=r"big.pkl: \d+ bytes is over the limit of 100 bytes"):
        safe_load(path, limits=PickleLimits(max_input_bytes=100))
    with pytest.raises(DataFormatError, match="arrays exceed the limit of 100 bytes"):
        safe_load(path, limits=PickleLimits(max_array_bytes=100))
    with pytest.raises(DataFormatError, match="more than 10 objects"):
        safe_loads(pickle.dumps(list(range(50))), limits=PickleLimits(max_objects=10))


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_every_protocol_round_trips_plain_data(protocol):
    obj = {
        "big_endian": np.arange(6, dtype=">f4").reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
        "flags": np.array([True, False]),
        "bytes": np.array([b"ab", b"c"]),
        "scalar": np.int64(-7),
        "text": np.str_("naïve"),
        "tuple": (1, -2.5, None, "w", b"raw", True),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    out = safe_loads(pickle.dumps(obj, protocol=protocol))
    for key in ("big_endian", "fortran", "flags", "bytes", "empty"):
        assert out[key].dtype == obj[key].dtype and np.array_equal(out[key], obj[key]), key
        assert out[key].flags.writeable
    assert out["fortran"].flags.f_contiguous
    assert type(out["scalar"]) is np.int64 and out["scalar"] == -7
    assert out["text"] == "naïve" and out["tuple"] == obj["tuple"]


# ---- property-based: mutated valid pickles never crash and never return anything else ----

FUZZ = textwrap.dedent('''
    import pickle, sys
    from collections import OrderedDict
    import numpy as np
    from hypothesis import HealthCheck, given, settings, strategies as st
    from misalatch.data.safe_pickle import PickleLimits, safe_loads
    from misalatch.errors import MisalatchError

    SEEDS = []
    for protocol in (0, 2, 3, 4, 5):
        for obj in (
            {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "ids": np.array(["x", "yz"]), "n": 3},
            [((np.arange(3), np.ones((3, 2)), np.zeros((3, 1)), ["a", "b", "c"]), np.array([[0.5]]), "v[0]")],
            {"train": {"labels": np.array([1.0, -2.0]), "id": np.array(["a", "b"], dtype=object)}},
            {1: 0.0, 2: 1.0, "k": OrderedDict(x=np.float64(2.0)), "b": b"raw", "t": (True, None)},
        ):
            SEEDS.append(pickle.dumps(obj, protocol=protocol))
    LIMITS = PickleLimits(max_objects=100_000, expansion_slack=1 << 20, max_array_bytes=1 << 24)
    PLAIN = (dict, list, tuple, str, bytes, int, float, bool, type(None))

    def check(obj):
        todo, seen = [obj], set()
        while todo:
            x = todo.pop()
            if isinstance(x, np.ndarray):
                assert x.dtype.kind in "biufUS", x.dtype
                x.sum() if x.dtype.kind in "biuf" else x.tolist()  # touch every element
                continue
            if isinstance(x, np.generic):
                assert x.dtype.kind in "biufUS", x.dtype
                continue
            assert isinstance(x, PLAIN), type(x)
            if isinstance(x, (list, tuple, dict)) and id(x) not in seen:
                seen.add(id(x))
                todo.extend([v for kv in x.items() for v in kv] if isinstance(x, dict) else x)

    OUTCOMES = {"loaded": 0, "refused": 0}

    def run(data):
        try:
            out = safe_loads(data, source="fuzz.pkl", limits=LIMITS)
        except MisalatchError as err:
            assert str(err).startswith("fuzz.pkl: ") and "\\n" not in str(err), str(err)
            OUTCOMES["refused"] += 1
            return
        check(out)
        OUTCOMES["loaded"] += 1

    mutation = st.one_of(
        st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
        st.tuples(st.just("cut"), st.integers(0, 10**6), st.just(0)),
        st.tuples(st.just("splice"), st.integers(0, 10**6), st.integers(0, 10**6)),
        st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=12)),
    )

    @settings(max_examples=int(sys.argv[1]), deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(0, len(SEEDS) - 1), st.integers(0, len(SEEDS) - 1), st.lists(mutation, min_size=1, max_size=4))
    def fuzz(i, j, mutations):
        data = bytearray(SEEDS[i])
        for kind, a, b in mutations:
            if not data:
                break
            a %= len(data)
            if kind == "flip":
                data[a] ^= b
            elif kind == "cut":
                del data[a:]
            elif kind == "splice":
                other = SEEDS[j]
                b %= len(other)
                data[a:a + 8] = other[b:b + 8]
            else:
                data[a:a] = b
        run(bytes(data))

    fuzz()
    assert OUTCOMES["loaded"] and OUTCOMES["refused"], OUTCOMES
    print("fuzz ok", OUTCOMES)
''')


def test_mutated_pickles_never_crash_the_interpreter(tmp_path):
    script = tmp_path / "fuzz.py"
    script.write_text(FUZZ)
    # a subprocess: a segfault fails this test instead of killing pytest
    proc = subprocess.run([sys.executable, str(script), "200"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "fuzz ok" in proc.stdout
