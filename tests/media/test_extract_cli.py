"""``misalatch extract`` with the real extractor on the real MOSI clip and audio (by path, read-only):
failures named one line each, exit status 3, failures.csv, the cache on a re-run, the recipe's dims."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from misalatch.cli import main
from misalatch.data.cache import load_prepared

pytest.importorskip("av", reason="needs the media extra")
pytest.importorskip("mediapipe", reason="needs the media extra")

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mosi"
CLIP = "Oz06ZWiO20M_6.mp4"  # h264 + aac, 7.5 s, one face throughout


@pytest.fixture(scope="module")
def mosi() -> Path:
    if not (SHARED / CLIP).is_file():
        pytest.skip(f"shared data not available: {SHARED / CLIP}")
    return SHARED.resolve()


def transcripts(path: Path, rows: list[list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["clip", "text", "label", "segment_id", "start", "end", "split"])
        writer.writerows(rows)
    return path


@pytest.mark.slow
def test_extract_real_clips_with_bad_rows(mosi: Path, tmp_path: Path, capsys) -> None:
    t = transcripts(tmp_path / "t.csv", [
        [CLIP, "i liked it", "1.5", "a", "0", "1", "train"],
        [CLIP, "not at all", "-2", "b", "1", "2", "train"],
        [CLIP, "so so", "0", "c", "2", "3", "valid"],
        [CLIP, "great fun", "2.5", "d", "3", "4", "test"],
        ["03bSnISJMiM_1.wav", "audio only", "1", "wav", "", "", "train"],  # no video stream
        ["CMU_MOSI_Opinion_Labels.csd", "not media", "1", "csd", "", "", "train"],
        [CLIP, "past the end", "1", "late", "6", "20", "train"],
        ["nowhere.mp4", "missing", "1", "gone", "", "", "train"],
    ])
    out = tmp_path / "out"
    argv = ["-q", "extract", "--media", str(mosi), "--transcripts", str(t), "--out", str(out), "--workers", "1"]
    assert main(argv) == 3  # the dataset is written without the 4 failed segments
    printed = capsys.readouterr()
    lines = [line.strip() for line in printed.out.splitlines()]
    assert "4 segment(s) extracted, 0 from the cache, 3 failed" in lines[0]
    failed = {line.split(" (segment ")[1].split("'")[1]: line for line in lines if "(segment '" in line}
    assert set(failed) == {"wav", "csd", "late", "gone"}
    assert failed["wav"].startswith("03bSnISJMiM_1.wav") and "no video stream" in failed["wav"]
    assert failed["gone"].startswith("nowhere.mp4") and "no such file" in failed["gone"]
    assert "Traceback" not in printed.err
    rows = list(csv.DictReader(open(out / "failures.csv", encoding="utf-8")))
    assert sorted(r["segment_id"] for r in rows) == ["csd", "gone", "late", "wav"]
    ds = load_prepared(out)
    recipe = ds.meta["media"]["recipe"]
    segs = {s.id: s for split in ds.splits.values() for s in split}
    assert set(segs) == {"a", "b", "c", "d"} and ds.alignment == "none"
    assert segs["a"].acoustic.shape == (100, recipe["acoustic_dim"])  # 1 s at 100 rows/s
    assert segs["a"].visual.shape == (round(recipe["visual_rate"]), recipe["visual_dim"])
    fingerprint = json.loads((out / "meta.json").read_text())["fingerprint"]
    # a re-run extracts nothing again and writes the same dataset
    assert main(argv) == 3
    assert "0 segment(s) extracted, 4 from the cache, 3 failed" in capsys.readouterr().out
    assert json.loads((out / "meta.json").read_text())["fingerprint"] == fingerprint


def test_extract_one_clip_with_text_is_unlabelled_and_cannot_be_trained_on(mosi: Path, tmp_path: Path,
                                                                             capsys) -> None:
    out = tmp_path / "one"
    assert main(["-q", "extract", "--media", str(mosi / CLIP), "--text", "it was fine", "--modalities", "a",
                 "--out", str(out)]) == 0
    ds = load_prepared(out)
    (seg,) = ds.splits["test"]
    assert seg.id == "Oz06ZWiO20M_6" and seg.visual is None
    assert seg.acoustic.shape == (750, ds.meta["media"]["recipe"]["acoustic_dim"])  # 7.5 s at 100 rows/s
    assert ds.meta["unlabelled"] and ds.splits["train"] == []
    capsys.readouterr()
    assert main(["-q", "train", "--data", str(out), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no labels" in err[0] and not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, message", [
    (["--shard", "3/2"], "--shard 3/2"),
    (["--modalities", "tx"], "--modalities 'tx'"),
    (["--text", "hi"], "exactly one"),  # with --transcripts as well
])
def test_bad_flags_are_one_line(mosi: Path, tmp_path: Path, capsys, argv, message) -> None:
    t = transcripts(tmp_path / "t.csv", [[CLIP, "x", "1", "a", "", "", "train"]])
    code = main(["extract", "--media", str(mosi), "--transcripts", str(t), "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("misalatch extract: error:") and message in err[0]
    assert not (tmp_path / "o").exists()
