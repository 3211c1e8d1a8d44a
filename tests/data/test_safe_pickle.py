"""The restricted unpickler (DATA.md §9.1) and the embedding_and_mapping.pt loader (§9.2)."""

from __future__ import annotations

import collections
import pickle
import pickletools
import struct
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest

from misalatch.data.safe_pickle import load_embedding_and_mapping, safe_load, safe_loads
from misalatch.data.synthetic.files import write_embedding_and_mapping
from misalatch.errors import DataFormatError, UnsafePickleError


def _shell_pickles(marker) -> dict[str, bytes]:
    """Pickles that would run ``touch <marker>`` if loaded with pickle.load (never done here)."""
    cmd = f"touch {marker}".encode()
    # protocol 0: GLOBAL 'os system', MARK, STRING cmd, TUPLE, REDUCE, STOP
    proto0 = b"cos\nsystem\n(S'" + cmd + b"'\ntR."
    # protocol 2 as CPython writes it on Linux: GLOBAL 'posix system', SHORT_BINUNICODE, TUPLE1, REDUCE
    proto2 = b"\x80\x02cposix\nsystem\nq\x00X" + struct.pack("<I", len(cmd)) + cmd + b"\x85R."
    # protocol 4: STACK_GLOBAL with module and name pushed as strings
    proto4 = (b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c" + bytes([len(cmd)]) + cmd + b"\x85R.")
    # a refused global hidden inside an otherwise harmless dict
    nested = b"\x80\x02}q\x00X\x01\x00\x00\x00kcbuiltins\neval\nX" + struct.pack("<I", 4) + b"1+1;\x85Rs."
    return {"proto0": proto0, "proto2": proto2, "proto4": proto4, "nested": nested}


@pytest.mark.parametrize("variant", ["proto0", "proto2", "proto4", "nested"])
def test_shell_command_pickle_is_refused_and_never_runs(tmp_path, variant):
    marker = tmp_path / "marker"
    data = _shell_pickles(marker)[variant]
    pickletools.dis(data, out=open(tmp_path / "dis.txt", "w"))  # a well-formed pickle (dis does not execute)
    path = tmp_path / f"evil_{variant}.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError) as err:
        safe_load(path)
    msg = str(err.value)
    assert str(path) in msg
    expected = {"proto0": "os.system", "proto2": "posix.system", "proto4": "os.system", "nested": "builtins.eval"}
    assert expected[variant] in msg
    assert not marker.exists()
    assert isinstance(err.value, DataFormatError)  # callers catching data errors catch this too


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_dict_round_trips(tmp_path, protocol):
    obj = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.array([1, 2, 3], dtype=np.int64),
        "s": np.array(["x", "yz"]),
        "scalar": np.float64(2.5),
        "nested": [("w", 1, None, True), {1: b"raw"}],
        "od": OrderedDict(k=np.zeros(2)),
    }
    obj["empty"] = np.zeros((0, 5), dtype=np.float32)  # protocol 2 spells b'' as __builtin__.bytes()
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    out = safe_load(path)
    assert set(out) == set(obj)
    for key in {"a", "b", "s", "empty"} & set(obj):
        assert out[key].dtype == obj[key].dtype and np.array_equal(out[key], obj[key])
    assert out["scalar"] == 2.5 and out["nested"] == obj["nested"]
    assert isinstance(out["od"], OrderedDict)


def _py2_numpy_pickle() -> tuple[bytes, np.ndarray]:
    """A dict {'x': float64 array, 'name': 'café'} as Python 2 / numpy 1.x pickled it (protocol 2,
    byte strings as SHORT_BINSTRING, the array buffer a non-ASCII byte string)."""
    values = np.array([1.0, 2.5, -3.0])
    buf = values.tobytes()
    sbs = lambda b: b"U" + bytes([len(b)]) + b  # noqa: E731  SHORT_BINSTRING
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\n" b"cnumpy\nndarray\n" b"K\x00\x85" + sbs(b"b") + b"\x87R"
        b"(K\x01K\x03\x85" b"cnumpy\ndtype\n" + sbs(b"f8") + b"K\x00K\x01\x87R"
        b"(K\x03" + sbs(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb" b"\x89" + sbs(buf) + b"tb"
    )
    data = b"\x80\x02}(" + sbs(b"x") + array + sbs(b"name") + sbs(b"caf\xe9") + b"u."
    return data, values


def test_python2_pickle_reads_with_latin1():
    data, values = _py2_numpy_pickle()
    out = safe_loads(data, source="py2.pkl")
    assert np.array_equal(out["x"], values) and out["x"].dtype == np.float64
    assert out["name"] == "café"
    with pytest.raises(DataFormatError, match="py2.pkl"):
        safe_loads(data, source="py2.pkl", encoding="ASCII")


def test_old_numpy_core_path_and_codecs_encode_allowed():
    # numpy 2 writes numpy._core; files from numpy 1.x say numpy.core (protocol 2 spells it in text)
    data = pickle.dumps(np.arange(5, dtype=np.int16), protocol=2)
    assert b"_codecs" in data
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert np.array_equal(safe_loads(old), np.arange(5))


@pytest.mark.parametrize("content, what", [
    (b"", "empty file"),
    (b"segment_id,label\nabc,1.0\n", "a CSV"),
    (pickle.dumps({"a": list(range(100))}, protocol=4)[:40], "truncated"),
])
def test_not_a_pickle_is_a_data_format_error(tmp_path, content, what):
    path = tmp_path / "bad.pkl"
    path.write_bytes(content)
    with pytest.raises(DataFormatError) as err:
        safe_load(path)
    assert not isinstance(err.value, UnsafePickleError), what
    assert str(path) in str(err.value)


def test_other_refusals(tmp_path):
    # collections.defaultdict and persistent ids are not plain data
    with pytest.raises(UnsafePickleError, match="collections.defaultdict"):
        safe_loads(pickle.dumps(collections.defaultdict(list, a=[1]), protocol=2))
    with pytest.raises(DataFormatError, match="persistent"):
        safe_loads(b"\x80\x02X\x01\x00\x00\x00aQ.")
    with pytest.raises(DataFormatError, match="cannot read"):
        safe_load(tmp_path / "missing.pkl")


# ---- embedding_and_mapping.pt ----

def test_embedding_and_mapping_loads_with_stand_ins(tmp_path):
    word2id = {"<unk>": 0, "<pad>": 1, "movie": 2, "good": 3}
    path = write_embedding_and_mapping(tmp_path / "embedding_and_mapping.pt", word2id, d_e=4)
    assert "create_dataset" not in sys.modules  # the writer's stand-in module is gone again
    emb, mapping = load_embedding_and_mapping(path)
    assert emb.shape == (4, 4) and emb.dtype == np.float32
    assert mapping == word2id and type(mapping) is dict


def test_embedding_and_mapping_refuses_other_globals(tmp_path):
    import torch

    module = types.ModuleType("evil_module")

    def payload() -> int:
        return 1

    payload.__module__, payload.__qualname__ = "evil_module", "payload"
    module.payload = payload
    sys.modules["evil_module"] = module
    try:
        mapping = collections.defaultdict(payload, {"<unk>": 0})
        torch.save((torch.zeros(1, 2), mapping), tmp_path / "evil.pt")
    finally:
        del sys.modules["evil_module"]
    with pytest.raises(UnsafePickleError, match="evil.pt"):
        load_embedding_and_mapping(tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataFormatError, match="junk.pt"):
        load_embedding_and_mapping(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "wrong.pt")
    with pytest.raises(DataFormatError, match="pair"):
        load_embedding_and_mapping(tmp_path / "wrong.pt")
