"""The corpus layer of ``misalatch extract`` (transcripts, split, cache, shards, failures) with a fake
extractor: each 'clip' is a small text file ``duration=<s>`` whose features are a function of its bytes,
so the logic is tested in milliseconds. The real extractor runs in test_extract_cli / test_predict_media."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from misalatch.data.cache import load_prepared
from misalatch.errors import ConfigError, DataFormatError, MediaError
from misalatch.media.features import ClipFeatures
from tests.media.conftest import write_csv
from misalatch.media.corpus import (
    ExtractOptions,
    assign_splits,
    extract_corpus,
    normalize,
    parse_shard,
    read_transcripts,
    read_word_timings,
)

CALLS_ENV = "MISALATCH_FAKE_CALLS"
SLEEP_ENV = "MISALATCH_FAKE_SLEEP"


@dataclass(frozen=True)
class FakeRecipe:
    tag: str = "fake-1"

    def fingerprint(self) -> str:
        return hashlib.sha256(self.tag.encode()).hexdigest()

    def to_dict(self) -> dict:
        return {"tag": self.tag}


def fake_extract(path, recipe, *, start=None, end=None, modalities=("acoustic", "visual")):
    """Features from the file's bytes: 10 acoustic rows/s of 3 dims, 5 visual rows/s of 2 dims."""
    raw = Path(path).read_bytes()
    if SLEEP_ENV in os.environ:
        time.sleep(float(os.environ[SLEEP_ENV]))
    if CALLS_ENV in os.environ:
        with open(os.environ[CALLS_ENV], "a") as fh:
            fh.write(f"{Path(path).name}|{start}|{end}\n")
    if not raw.startswith(b"duration="):
        raise MediaError(f"{path}: cannot be decoded (not a media file)")
    duration = float(raw.split(b"=")[1])
    start = 0.0 if start is None else start
    end = duration if end is None else end
    if end > duration + 1e-9:
        raise MediaError(f"{path}: segment {start}-{end} s is outside the clip (duration {duration} s)")
    seed = int(hashlib.sha256(raw + f"{start}".encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    n_a, n_v = max(1, round((end - start) * 10)), max(1, round((end - start) * 5))
    return ClipFeatures(start, end, duration,
                        rng.normal(size=(n_a, 3)).astype(np.float32) if "acoustic" in modalities else None, 10.0,
                        rng.normal(size=(n_v, 2)).astype(np.float32) if "visual" in modalities else None,
                        np.ones(n_v, bool) if "visual" in modalities else None, 5.0, path=str(path))


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path]:
    """Six clips (one with two segments), labelled, no split column."""
    media = tmp_path / "media"
    (media / "sub").mkdir(parents=True)
    rows = []
    for i in range(6):
        name = f"sub/c{i}.mp4" if i == 5 else f"c{i}.mp4"
        (media / name).write_bytes(f"duration={2 + i}".encode())
        rows.append([name, f"words of clip {i}", str(i - 2.5)])
    rows.append(["c0.mp4", "a second segment", "1.0"])
    t = write_csv(tmp_path / "t.csv", ["clip", "text", "label"], rows)
    # the second segment of c0 needs an id (the default is the clip's path without suffix) and a cut
    lines = t.read_text().splitlines()
    header = "clip,text,label,segment_id,start,end"
    body = [line + ",,," for line in lines[1:-1]] + [lines[-1] + ",c0_b,0.5,1.5"]
    t.write_text("\n".join([header, *body]) + "\n")
    return media, t


def run(media: Path, out: Path, transcripts: Path | None = None, **kw):
    options = ExtractOptions(**{"workers": 1, "progress": False, "name": "corpus", **kw.pop("options", {})})
    return extract_corpus(media, out, transcripts=transcripts, recipe=FakeRecipe(), options=options,
                          extractor=fake_extract, **kw)


def test_corpus_becomes_a_prepared_dataset(corpus, tmp_path: Path) -> None:
    media, t = corpus
    result = run(media, tmp_path / "out", t)
    assert result.written and result.ok and result.stats.extracted == 7 and result.stats.cached == 0
    ds = load_prepared(tmp_path / "out")
    assert ds.alignment == "none" and ds.task == "regression" and ds.meta["reader"] == "media"
    ids = {s.id: s for segs in ds.splits.values() for s in segs}
    assert set(ids) == {"c0", "c1", "c2", "c3", "c4", "sub/c5", "c0_b"}
    assert ids["c3"].words == ["words", "of", "clip", "3"] and ids["c3"].label == 0.5
    assert ids["c3"].acoustic.shape == (50, 3) and ids["c3"].visual.shape == (25, 2)
    assert ids["c0_b"].acoustic.shape == (10, 3)  # the 0.5-1.5 s cut
    # the split is by clip: c0's two segments together; every split has a clip
    split_of = {s.id: split for split, segs in ds.splits.items() for s in segs}
    assert split_of["c0"] == split_of["c0_b"] and all(ds.splits[s] for s in ("train", "valid", "test"))
    # standardised with train statistics, recorded with the recipe
    media_meta = ds.meta["media"]
    assert media_meta["recipe"] == {"tag": "fake-1"} and media_meta["normalization"]["fitted_on"] == "train"
    train_a = np.concatenate([s.acoustic for s in ds.splits["train"]])
    np.testing.assert_allclose(train_a.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(train_a.std(0), 1, atol=1e-4)
    raw = fake_extract(media / "c3.mp4", None).acoustic.astype(np.float64)
    np.testing.assert_array_equal(normalize({"acoustic": raw}, media_meta["normalization"])["acoustic"],
                                  ids["c3"].acoustic)
    assert media_meta["split"] == {"by": "clip", "seed": 0, "ratios": [0.7, 0.15, 0.15]}
    assert (tmp_path / "out" / "failures.csv").read_text().splitlines() == ["line,clip,segment_id,reason"]
    marker = json.loads((tmp_path / "out" / "run.json").read_text())
    assert marker["complete"] and marker["kind"] == "prepare" and "meta.json" in marker["files"]
    assert {f"cache/{f}" for f in os.listdir(tmp_path / "out" / "cache")} <= set(marker["files"])


def test_rerun_extracts_nothing_twice_and_a_new_clip_only_once(corpus, tmp_path: Path, monkeypatch) -> None:
    media, t = corpus
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv(CALLS_ENV, str(calls))
    first = run(media, tmp_path / "out", t)
    assert len(calls.read_text().splitlines()) == 7
    second = run(media, tmp_path / "out", t)
    assert len(calls.read_text().splitlines()) == 7 and second.stats.cached == 7 and second.stats.extracted == 0
    assert second.fingerprint == first.fingerprint  # the same dataset
    # a renamed copy of a clip has the same content: the cache (keyed by content) serves it
    (media / "copy.mp4").write_bytes((media / "c1.mp4").read_bytes())
    (media / "c9.mp4").write_bytes(b"duration=11")
    with open(t, "a") as fh:
        fh.write("copy.mp4,the copy,0.0,,,\nc9.mp4,new clip,1.0,,,\n")
    third = run(media, tmp_path / "out", t)
    assert third.stats.extracted == 1 and third.stats.cached == 8
    assert calls.read_text().splitlines()[-1].startswith("c9.mp4")


def test_killed_run_leaves_no_half_clip_and_resumes(corpus, tmp_path: Path, monkeypatch) -> None:
    """A crash mid-way (here: the extractor raising KeyboardInterrupt on the 4th clip) keeps the finished
    clips in the cache, no partial file, no dataset; the next run extracts only the rest."""
    media, t = corpus
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv(CALLS_ENV, str(calls))
    count = {"n": 0}

    def dying(path, recipe, **kw):
        count["n"] += 1
        if count["n"] == 4:
            raise KeyboardInterrupt
        return fake_extract(path, recipe, **kw)

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        extract_corpus(media, out, transcripts=t, recipe=FakeRecipe(),
                       options=ExtractOptions(workers=1, progress=False), extractor=dying)
    cached = sorted((out / "cache").iterdir())
    assert len(cached) == 3 and all(p.name.endswith(".npz") and not p.name.startswith(".") for p in cached)
    assert not (out / "meta.json").exists()
    before = len(calls.read_text().splitlines())
    result = run(media, out, t)
    assert result.written and result.stats.cached == 3 and result.stats.extracted == 4
    assert len(calls.read_text().splitlines()) == before + 4  # the 4th clip's call never finished


_KILLED_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from test_corpus import FakeRecipe, fake_extract
from misalatch.media.corpus import ExtractOptions, extract_corpus
extract_corpus(Path(sys.argv[2]), Path(sys.argv[3]), transcripts=Path(sys.argv[4]), recipe=FakeRecipe(),
               options=ExtractOptions(workers=1, progress=False, name="corpus"), extractor=fake_extract)
"""


def test_sigkill_mid_run_keeps_whole_clips_only(corpus, tmp_path: Path, monkeypatch) -> None:
    """kill -9 while a clip is being extracted: finished clips stay cached, no partial file is ever read,
    and the next run extracts only what is missing and writes the same dataset as an unbroken run."""
    media, t = corpus
    out, calls = tmp_path / "out", tmp_path / "calls.txt"
    env = {**os.environ, CALLS_ENV: str(calls), SLEEP_ENV: "0.3", "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, str(Path(__file__).parent), str(media), str(out),
                              str(t)], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list((out / "cache").glob("*.npz"))) < 2:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done = len(list((out / "cache").glob("*.npz")))
    assert 2 <= done < 7 and not (out / "meta.json").exists()
    monkeypatch.setenv(CALLS_ENV, str(calls))
    before = len(calls.read_text().splitlines())
    result = run(media, out, t)
    assert result.written and result.stats.cached == done and result.stats.extracted == 7 - done
    assert len(calls.read_text().splitlines()) == before + 7 - done
    assert not [p for p in (out / "cache").iterdir() if not p.name.endswith(".npz") or p.name.startswith(".")]
    assert result.fingerprint == run(media, tmp_path / "fresh", t).fingerprint


def test_bad_rows_fail_alone_with_one_line_each(tmp_path: Path, caplog) -> None:
    media = tmp_path / "media"
    media.mkdir()
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"duration=3")
    for i in range(4):
        (media / f"ok{i}.mp4").write_bytes(f"duration={3 + i}".encode())
    (media / "broken.mp4").write_bytes(b"\x00\x01garbage")
    (media / "link.mp4").symlink_to(outside)
    rows = ("clip,text,label,segment_id,start,end,split\n"
            "ok0.mp4,fine,1,,,,train\n"
            "ok1.mp4,fine too,0.5,,,,train\n"
            "ok2.mp4,and this,-1,,,,valid\n"
            "ok3.mp4,and that,2,,,,test\n"
            "missing.mp4,no file,1,,,,train\n"
            "ok0.mp4,dup id,1,ok1,1,2,train\n"
            "ok0.mp4,   ,1,empty,,,train\n"
            "ok0.mp4,late,1,late,2,9,train\n"
            "broken.mp4,bad bytes,1,,,,train\n"
            "link.mp4,escapes,1,,,,train\n"
            "../secret.mp4,dots,1,dots,,,train\n"
            "ok0.mp4,label,abc,badlabel,,,train\n")
    t = tmp_path / "t.csv"
    t.write_bytes(rows.encode() + b"ok1.mp4,caf\xe9,1,latin,,,train\n")
    caplog.set_level("WARNING", logger="misalatch")
    result = run(media, tmp_path / "out", t)
    reasons = {f.segment_id: f.reason for f in result.failures}
    assert set(reasons) == {"missing", "ok1", "empty", "late", "broken", "link", "dots", "badlabel", ""}
    assert "no such file" in reasons["missing"]
    assert "duplicate segment id (lines 3, 7)" in reasons["ok1"]
    assert "empty text" in reasons["empty"]
    assert "outside the clip" in reasons["late"]
    assert "cannot be decoded" in reasons["broken"]
    assert "outside the media folder" in reasons["link"] and "outside the media folder" in reasons["dots"]
    assert "field 'label'" in reasons["badlabel"]
    assert any("not valid UTF-8 (byte 0xe9)" in f.reason and f.line == 14 for f in result.failures)
    # every extraction failure was one log line naming the file
    assert any(r.getMessage().startswith("broken.mp4 (segment 'broken', line 10): cannot be decoded")
               for r in caplog.records)
    # the good rows are in the dataset, the failures in failures.csv
    ds = load_prepared(tmp_path / "out")
    assert {s.id for segs in ds.splits.values() for s in segs} == {"ok0", "ok2", "ok3"}
    listed = list(csv.DictReader(open(tmp_path / "out" / "failures.csv", encoding="utf-8")))
    assert len(listed) == len(result.failures) == 10 and {r["segment_id"] for r in listed} >= {"missing", "late"}
    assert ds.meta["dropped"] == {"failed": 10}
    # nothing was written outside --out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["media", "out", "secret.mp4", "t.csv"]


def test_transcripts_without_labels_give_an_unlabelled_dataset(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (media / name).write_bytes(b"duration=2")
    t = write_csv(tmp_path / "t.csv", ["clip", "text"], [["a.mp4", "one"], ["b.mp4", "two words"]])
    result = run(media, tmp_path / "out", t)
    ds = load_prepared(tmp_path / "out")
    assert result.written and result.ok and ds.meta["unlabelled"]
    assert ds.splits["train"] == [] and [s.id for s in ds.splits["test"]] == ["a", "b"]


def test_symlink_passed_by_the_user_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere" / "clip.mp4"
    real.parent.mkdir()
    real.write_bytes(b"duration=2")
    link = tmp_path / "link.mp4"
    link.symlink_to(real)
    result = extract_corpus(link, tmp_path / "out", text="hello there", recipe=FakeRecipe(),
                            options=ExtractOptions(workers=1, progress=False), extractor=fake_extract)
    ds = load_prepared(tmp_path / "out")
    assert result.written and ds.meta["unlabelled"] and [s.id for s in ds.splits["test"]] == ["link"]
    assert ds.splits["train"] == [] and ds.splits["test"][0].words == ["hello", "there"]


def test_whole_file_problems_raise_before_out_is_touched(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    out = tmp_path / "out"
    with pytest.raises(DataFormatError, match="no such file"):
        run(media, out, tmp_path / "nope.csv")
    bad = write_csv(tmp_path / "t.csv", ["file", "words"], [["a.mp4", "x"]])
    with pytest.raises(DataFormatError, match=r"missing column\(s\) 'clip', 'text'"):
        run(media, out, bad)
    utf16 = tmp_path / "u.csv"
    utf16.write_bytes("clip,text,label\n".encode("utf-16"))
    with pytest.raises(DataFormatError, match="UTF-16"):
        run(media, out, utf16)
    assert not out.exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    ok = write_csv(tmp_path / "ok.csv", ["clip", "text", "label", "split"], [["a.mp4", "x", "1", "train"]])
    with pytest.raises(ConfigError, match="folder misalatch did not create"):
        run(media, foreign, ok)
    assert os.listdir(foreign) == ["notes.txt"]


def test_shards_give_the_same_dataset_as_one_process(corpus, tmp_path: Path) -> None:
    media, t = corpus
    whole = run(media, tmp_path / "one", t)
    results = [run(media, tmp_path / "shared", t, options={"shard": (k, 3)}) for k in (2, 3, 1)]
    assert [r.written for r in results] == [False, False, True]
    assert results[0].waiting_for == [1, 3] and results[1].waiting_for == [1]
    assert sum(r.stats.extracted for r in results) == 7
    assert results[-1].fingerprint == whole.fingerprint
    a, b = load_prepared(tmp_path / "one"), load_prepared(tmp_path / "shared")
    for split in ("train", "valid", "test"):
        assert [s.id for s in a.splits[split]] == [s.id for s in b.splits[split]]
        for x, y in zip(a.splits[split], b.splits[split]):
            np.testing.assert_array_equal(x.acoustic, y.acoustic)


def test_split_by_clip_is_seeded_and_documented_ratios() -> None:
    from misalatch.media.corpus import ClipRow

    rows = [ClipRow(i, i + 2, f"c{i // 2}.mp4", f"/m/c{i // 2}.mp4", f"s{i}", "t") for i in range(40)]
    a, b, c = assign_splits(rows, 0), assign_splits(rows, 0), assign_splits(rows, 1)
    assert a == b and a != c
    clips = {}
    for r in rows:
        clips.setdefault(a[r.segment_id], set()).add(r.clip)
    assert [len(clips[s]) for s in ("train", "valid", "test")] == [14, 3, 3]
    assert not (clips["train"] & clips["test"])
    with pytest.raises(ConfigError, match="at least 3"):
        assign_splits(rows[:4], 0)


def test_word_timings_align_features_to_words(corpus, tmp_path: Path) -> None:
    media, t = corpus
    rows = []
    ids = ["c0", "c1", "c2", "c3", "c4", "sub/c5", "c0_b"]
    for seg in ids:
        start = 0.5 if seg == "c0_b" else 0.0
        rows += [[seg, "hello", start, start + 0.3], [seg, "world", start + 0.3, start + 0.9]]
    rows[-2] = ["c0_b", "bad", "x", "1"]
    w = write_csv(tmp_path / "w.csv", ["segment_id", "word", "start", "end"], rows)
    timings = read_word_timings(w)
    assert "c0_b" in timings.problems and timings.words["c0"] == (("hello", 0.0, 0.3), ("world", 0.3, 0.9))
    result = run(media, tmp_path / "out", t, word_timings=w, options={"normalize": False})
    assert [f.segment_id for f in result.failures] == ["c0_b"]
    ds = load_prepared(tmp_path / "out")
    assert ds.alignment == "word"
    seg = next(s for segs in ds.splits.values() for s in segs if s.id == "c3")
    assert seg.words == ["hello", "world"] and seg.acoustic.shape == (2, 3) and seg.visual.shape == (2, 2)
    raw = fake_extract(media / "c3.mp4", None)
    np.testing.assert_allclose(seg.acoustic[0], raw.acoustic[0:3].mean(0), rtol=1e-6)  # frames 0-0.3 s at 10/s
    np.testing.assert_allclose(seg.visual[1], raw.visual[1:5].mean(0), rtol=1e-6)  # 0.3-0.9 s overlaps frames 1-4


@pytest.mark.slow
def test_workers_processes_and_parse_shard(corpus, tmp_path: Path) -> None:
    media, t = corpus
    one = run(media, tmp_path / "one", t)
    two = run(media, tmp_path / "two", t, options={"workers": 2})
    assert two.fingerprint == one.fingerprint and two.stats.extracted == 7
    assert parse_shard("3/8") == (3, 8)
    for bad in ("0/2", "3/2", "x"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


def test_transcripts_resolve_relative_to_media(corpus) -> None:
    media, t = corpus
    table = read_transcripts(t, media)
    assert [r.segment_id for r in table.rows][:2] == ["c0", "c1"] and table.rows[5].path.endswith("sub/c5.mp4")
    assert table.labelled and not table.has_split and not table.failures


def test_classification_labels_are_class_indices(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    splits = ["train", "train", "train", "valid", "test", "test"]
    rows = []
    for i in range(6):
        (media / f"k{i}.mp4").write_bytes(f"duration={2 + i}".encode())
        rows.append([f"k{i}.mp4", f"text {i}", str(i % 3), splits[i], ""])
    rows.append(["k0.mp4", "half a class", "1.5", "train", "half"])
    t = write_csv(tmp_path / "t.csv", ["clip", "text", "label", "split", "segment_id"], rows)
    result = run(media, tmp_path / "out", t, options={"task": "classification"})
    assert [(f.segment_id, "class index" in f.reason) for f in result.failures] == [("half", True)]
    ds = load_prepared(tmp_path / "out")
    assert ds.task == "classification" and ds.num_classes == 3
    assert sorted(int(s.label) for segs in ds.splits.values() for s in segs) == [0, 0, 1, 1, 2, 2]
