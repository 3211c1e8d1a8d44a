"""The pickle-free prepared folder (DATA.md §3.8): round trips, atomic writes, safe loading."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from misalatch.data import cache
from misalatch.data.cache import is_prepared, load_prepared, read_prepared_info, save_prepared
from misalatch.data.canonical import SPLITS, CanonicalDataset, Segment
from misalatch.data.readers.misa_pickle import read_misa_pickles
from misalatch.data.readers.mmsa_pickle import read_mmsa_pickle
from misalatch.data.readers.mult_pickle import read_mult_pickle
from misalatch.data.readers.urfunny import read_urfunny
from misalatch.data.synthetic.files import write_misa_pickles, write_mmsa_pickle, write_mult_pickle, write_urfunny
from misalatch.errors import ConfigError, DataFormatError

FIELDS = ("words", "text_ids", "text_vectors", "visual", "acoustic", "bert_ids", "wp2word")


def assert_same(a: CanonicalDataset, b: CanonicalDataset) -> None:
    for attr in ("name", "task", "alignment", "num_classes", "synthetic", "vocab", "text_encoder", "meta"):
        assert getattr(a, attr) == getattr(b, attr), attr
    if a.embedding is None:
        assert b.embedding is None
    else:
        assert b.embedding.dtype == a.embedding.dtype and np.array_equal(a.embedding, b.embedding)
    for split in SPLITS:
        assert len(a.splits[split]) == len(b.splits[split])
        for x, y in zip(a.splits[split], b.splits[split]):
            assert (x.id, x.label, x.truncated) == (y.id, y.label, y.truncated)
            assert type(x.label) is type(y.label)
            for field in FIELDS:
                u, v = getattr(x, field), getattr(y, field)
                if u is None or field == "words":
                    assert u == v, (split, x.id, field)
                else:
                    assert v.dtype == u.dtype and v.shape == u.shape and np.array_equal(u, v), (split, x.id, field)


def _hand_built() -> CanonicalDataset:
    """Fields present in some segments only, unicode and empty words, truncated flags, classification."""
    rng = np.random.default_rng(0)
    splits = {}
    for split in SPLITS:
        segs = []
        for i in range(3):
            n = i + 1
            segs.append(Segment(
                id=f"{split}-ü{i}",
                label=i % 2,
                words=None if i == 1 else (["naïve", "", "日本"][:n] if i == 2 else ["x"]),
                visual=rng.standard_normal((n, 3)).astype(np.float32) if i != 0 else None,
                bert_ids=np.array([101, 7, 102], dtype=np.int64) if i == 2 else None,
                wp2word=np.array([-1, 0, -1], dtype=np.int64) if i == 2 else None,
                truncated=i == 2,
            ))
        splits[split] = segs
    return CanonicalDataset(name="hand", task="classification", splits=splits, alignment="none", num_classes=2,
                            synthetic=True, text_encoder=None, meta={"note": ["a", 1, 2.5, None, {"k": True}]})


def _from_readers(tmp_path):
    yield "mmsa aligned", read_mmsa_pickle(write_mmsa_pickle(tmp_path / "MOSI" / "aligned_50.pkl"))
    yield "mmsa unaligned", read_mmsa_pickle(write_mmsa_pickle(tmp_path / "MOSI" / "u.pkl", aligned=False))
    yield "mult", read_mult_pickle(write_mult_pickle(tmp_path / "mosei_senti_data_noalign.pkl", aligned=False))
    yield "misa", read_misa_pickles(write_misa_pickles(tmp_path / "MOSI_misa"))
    yield "urfunny v1", read_urfunny(write_urfunny(tmp_path / "v1", version=1))
    yield "urfunny v2", read_urfunny(write_urfunny(tmp_path / "v2", version=2))
    yield "hand", _hand_built()


def test_round_trip_every_field_combination(tmp_path):
    seen_fields = set()
    for name, ds in _from_readers(tmp_path / "src"):
        out = save_prepared(ds, tmp_path / "prepared" / name.replace(" ", "_"))
        assert is_prepared(out)
        back = load_prepared(out)
        assert_same(ds, back)
        info = read_prepared_info(out)
        assert info["split_sizes"] == ds.split_sizes()
        assert info["dims"]["visual"] == ds.visual_dim and info["sources"] == ds.meta.get("sources", {})
        seen_fields |= {f for s in SPLITS for f in info["fields"][s]}
        assert (out / "vocab.json").exists() == (ds.vocab is not None)
        assert (out / "embedding.safetensors").exists() == (ds.embedding is not None)
        # a second save of the same data has the same fingerprint (content, not file bytes)
        again = save_prepared(back, tmp_path / "again" / name.replace(" ", "_"))
        assert read_prepared_info(again)["fingerprint"] == info["fingerprint"]
    assert set(FIELDS) <= seen_fields
    assert read_prepared_info(tmp_path / "prepared" / "hand")["counts"]["truncated"] == {s: 1 for s in SPLITS}


@pytest.fixture()
def small(tmp_path):
    return _hand_built()


def test_overwrite_rules(tmp_path, small):
    out = save_prepared(small, tmp_path / "p")
    with pytest.raises(ConfigError, match=r"not empty \(a misalatch prepare folder\); pass --overwrite"):
        save_prepared(small, out)
    changed = small.replace(name="changed")
    save_prepared(changed, out, overwrite=True)
    assert load_prepared(out).name == "changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # no temporary folders left behind
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="refusing to overwrite.*no misalatch run.json marker"):
        save_prepared(small, user, overwrite=True)
    assert (user / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_prepared(save_prepared(small, empty)).name == "hand"


def test_crash_while_writing_leaves_nothing(tmp_path, small, monkeypatch):
    calls = []

    real = np.savez

    def failing_savez(*args, **kwargs):  # the second split archive fails, as on a full disk
        calls.append(args[0])
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(cache.np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        save_prepared(small, tmp_path / "p")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(cache.np, "savez", real)
    out = save_prepared(small, tmp_path / "p")
    monkeypatch.setattr(cache.np, "savez", failing_savez)
    calls.clear()
    with pytest.raises(OSError):
        save_prepared(small.replace(name="new"), out, overwrite=True)
    assert load_prepared(out).name == "hand"  # the old dataset is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


def test_load_refuses_what_is_not_a_prepared_dataset(tmp_path, small):
    with pytest.raises(DataFormatError, match="not a prepared dataset.*misalatch prepare"):
        load_prepared(tmp_path)
    out = save_prepared(small, tmp_path / "p")
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(DataFormatError, match="unknown format_version 99"):
        load_prepared(out)
    (out / "meta.json").write_text(json.dumps({**meta, "format": "something-else"}))
    with pytest.raises(DataFormatError, match="not a misalatch prepared dataset"):
        load_prepared(out)
    (out / "meta.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="unreadable JSON"):
        load_prepared(out)


def test_tampered_content_is_detected(tmp_path, small):
    out = save_prepared(small, tmp_path / "p")
    with np.load(out / "valid.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["labels"] = 1 - arrays["labels"]
    np.savez(out / "valid.npz", **arrays)
    with pytest.raises(DataFormatError, match="does not match the fingerprint"):
        load_prepared(out)
    assert load_prepared(out, verify=False).splits["valid"][0].label == 1


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_loading_never_unpickles(tmp_path, small):
    out = save_prepared(small, tmp_path / "p")
    marker = tmp_path / "marker"
    with np.load(out / "test.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["ids"] = np.array([_Payload(marker)] * 3, dtype=object)
    np.savez(out / "test.npz", allow_pickle=True, **arrays)  # pickling does not run the payload
    with pytest.raises(DataFormatError, match="test.npz: array .ids. has dtype object"):
        load_prepared(out)
    assert not marker.exists()
