"""End to end with the real extractor: a small labelled corpus (segments cut from the real MOSI clip and
generated clips) -> ``extract`` -> ``train`` one epoch (tiny MISA, text + acoustic + visual) ->
``predict --media`` on clips of the test split equals ``predict`` on the extracted dataset; and the two
refusals (a run without a recipe, a recipe whose extractor versions differ)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from misalatch.cli import main
from tests.media.conftest import write_csv

av = pytest.importorskip("av", reason="needs the media extra")
pytest.importorskip("mediapipe", reason="needs the media extra")

SHARED_CLIP = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mosi" / "Oz06ZWiO20M_6.mp4"
TINY = ["--text-encoder", "learned", "--hidden-size", "8", "--batch-size", "4", "--max-epochs", "1",
        "--modalities", "tav"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, make_clip) -> dict[str, Path]:
    if not SHARED_CLIP.is_file():
        pytest.skip(f"shared data not available: {SHARED_CLIP}")
    root = tmp_path_factory.mktemp("e2e")
    media = root / "media"
    media.mkdir()
    shutil.copyfile(SHARED_CLIP, media / "interview.mp4")  # the media folder holds every clip of the corpus
    # generated clips (tests/media/conftest.py): moving colours, no face, two containers and codecs
    shutil.copyfile(make_clip("e2e_a.mp4", video_codec="mpeg4", seconds=2.0, fps=15), media / "gen_a.mp4")
    shutil.copyfile(make_clip("e2e_b.webm", container="webm", video_codec="libvpx-vp9", audio_codec="libopus",
                              sample_rate=48000, channels=1, seconds=2.0, fps=15), media / "gen_b.webm")
    texts = ["i really liked it", "it was not good", "the acting was great", "boring and slow",
             "what a fun movie", "i hated the end"]
    splits = ["train", "train", "train", "valid", "test", "test"]
    rows = [["interview.mp4", texts[i], (i - 2.5) / 1.5, f"seg{i}", i * 1.2, (i + 1) * 1.2, splits[i]]
            for i in range(6)]
    rows += [["gen_a.mp4", "a tone and some colours", "0.5", "", "", "", "train"],
             ["gen_b.webm", "another tone", "-0.5", "", "", "", "test"]]
    header = ["clip", "text", "label", "segment_id", "start", "end", "split"]
    t = write_csv(root / "t.csv", header, rows)
    out, run = root / "prepared", root / "run"
    assert main(["-q", "extract", "--media", str(media), "--transcripts", str(t), "--out", str(out),
                 "--workers", "1"]) == 0
    assert main(["-q", "train", "--data", str(out), *TINY, "--out", str(run)]) == 0
    new = write_csv(root / "new.csv", ["clip", "text", "segment_id", "start", "end"],
                     [["interview.mp4", texts[4], "seg4", 4.8, 6.0], ["interview.mp4", texts[5], "seg5", 6.0, 7.2],
                      ["gen_b.webm", "another tone", "", "", ""]])
    return {"media": media, "out": out, "run": run, "new": new, "root": root}


def predictions(path: Path) -> dict[str, float]:
    return {r["segment_id"]: float(r["prediction"]) for r in csv.DictReader(open(path, encoding="utf-8"))}


@pytest.mark.slow
def test_predict_media_equals_predict_on_the_extracted_dataset(trained, capsys) -> None:
    root = trained["root"]
    assert main(["-q", "predict", str(trained["run"]), "--split", "all", "--out", str(root / "p.csv")]) == 0
    assert main(["-q", "predict", str(trained["run"]), "--media", str(trained["media"]), "--transcripts",
                 str(trained["new"]), "--out", str(root / "pm.csv")]) == 0
    on_data, on_media = predictions(root / "p.csv"), predictions(root / "pm.csv")
    assert set(on_media) == {"seg4", "seg5", "gen_b"}
    for seg in on_media:  # the test split's segments in its order: the same batch, the same numbers
        assert on_media[seg] == pytest.approx(on_data[seg], rel=1e-6, abs=1e-7)
    rows = list(csv.DictReader(open(root / "pm.csv", encoding="utf-8")))
    assert rows[0]["clip"] == "interview.mp4" and float(rows[0]["start"]) == 4.8 and rows[0]["label"] == ""
    # one clip and its text: the same number again (a batch of one instead of three: float32 summation order)
    assert main(["-q", "predict", str(trained["run"]), "--media", str(trained["media"] / "gen_b.webm"), "--text",
                 "another tone", "--out", str(root / "one.csv")]) == 0
    assert predictions(root / "one.csv")["gen_b"] == pytest.approx(on_data["gen_b"], rel=1e-4, abs=1e-6)


def test_run_folder_records_the_recipe(trained) -> None:
    dataset_meta = json.loads((trained["out"] / "meta.json").read_text())["meta"]["media"]
    sidecar = json.loads((trained["run"] / "best.json").read_text())
    assert sidecar["data"]["media"] == dataset_meta
    assert dataset_meta["recipe"]["tools"]["mediapipe"] == "0.10.14"
    assert "recipe_fingerprint" in (trained["run"] / "config.yaml").read_text()


def test_refuses_a_run_whose_features_cannot_be_recreated(trained, tmp_path: Path, capsys) -> None:
    run = tmp_path / "synthetic-run"
    assert main(["-q", "train", "--synthetic-size", "8", "4", "4", *TINY[:-2], "--out", str(run)]) == 0
    capsys.readouterr()
    code = main(["predict", str(run), "--media", str(trained["media"] / "gen_a.mp4"), "--text", "x",
                 "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and str(run) in err[0] and "synthetic" in err[0]
    assert "cannot be re-created" in err[0] and not (tmp_path / "p.csv").exists()


def test_refuses_other_extractor_versions(trained, tmp_path: Path, capsys, monkeypatch) -> None:
    import misalatch.media.recipe as recipe_module

    real = recipe_module.installed_version
    monkeypatch.setattr(recipe_module, "installed_version",
                        lambda package: "0.10.9" if package == "mediapipe" else real(package))
    code = main(["predict", str(trained["run"]), "--media", str(trained["media"] / "gen_a.mp4"), "--text", "x",
                 "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "mediapipe 0.10.14 (installed: 0.10.9)" in err[0]
    assert str(trained["run"]) in err[0] and not (tmp_path / "p.csv").exists()
