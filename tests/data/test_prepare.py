"""``misalatch prepare`` through the CLI, and ``--data`` resolution of prepared folders and names."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from misalatch.cli import main as cli
from misalatch.data.cache import load_prepared, read_prepared_info, save_prepared
from misalatch.data.loading import load_dataset
from misalatch.data.readers.mmsa_pickle import read_mmsa_pickle
from misalatch.data.synthetic.files import write_misa_pickles, write_mmsa_pickle, write_mult_pickle, write_urfunny
from misalatch.errors import ConfigError, DataFormatError


@pytest.fixture()
def sources(tmp_path) -> dict[str, Path]:
    src = tmp_path / "src"
    csv = src / "table.csv"
    csv.parent.mkdir(parents=True)
    csv.write_text("segment_id,text,label,split\n" + "\n".join(
        f"v{i}_1,word{i} and more,{(i % 7) - 3}.0,{('train', 'valid', 'test')[i % 3]}" for i in range(9)) + "\n")
    return {
        "mmsa": write_mmsa_pickle(src / "MOSI" / "aligned_50.pkl"),
        "mult": write_mult_pickle(src / "humor.pkl", classification=True),
        "misa": write_misa_pickles(src / "MOSEI"),
        "urfunny": write_urfunny(src / "ted_humor_sdk_v2", version=2),
        "csv": csv,
    }


@pytest.mark.parametrize("fmt, extra, name, sizes", [
    ("mmsa", [], "mosi", (5, 3, 4)),
    ("mult", [], "ur_funny", (4, 3, 4)),
    ("misa", ["--dataset", "mosei"], "mosei", (5, 3, 4)),
    ("urfunny", ["--version", "2", "--no-normalize"], "ur_funny", (6, 3, 3)),
    ("csv", ["--dataset", "mosi"], "mosi", (3, 3, 3)),
])
def test_prepare_each_format(tmp_path, sources, capsys, fmt, extra, name, sizes):
    out = tmp_path / "prepared" / fmt
    assert cli(["-q", "prepare", "--format", fmt, "--input", str(sources[fmt]), "--out", str(out), *extra]) == 0
    assert f"written: {out}" in capsys.readouterr().out
    ds = load_prepared(out)
    assert ds.name == name and tuple(ds.split_sizes().values()) == sizes
    assert read_prepared_info(out)["meta"]["sources"]
    if fmt == "urfunny":
        assert ds.meta["options"]["normalize"] is False
    if fmt == "mmsa":  # the same content as reading the file directly (fingerprints cover every array)
        direct = save_prepared(read_mmsa_pickle(sources["mmsa"]), tmp_path / "direct")
        assert read_prepared_info(direct)["fingerprint"] == read_prepared_info(out)["fingerprint"]
        assert ds.meta["nonfinite"] == {"acoustic": 1, "visual": 1}


def test_prepare_errors_and_overwrite(tmp_path, sources, capsys):
    out = tmp_path / "p"
    base = ["prepare", "--format", "mmsa", "--input", str(sources["mmsa"]), "--out", str(out)]
    assert cli(base) == 0
    assert cli(base) == 1
    err = capsys.readouterr().err
    assert "misalatch prepare: error:" in err and "pass --overwrite" in err
    assert cli([*base, "--overwrite", "--dataset", "mosei"]) == 0
    assert load_prepared(out).name == "mosei"
    for argv, message in [
        (["prepare", "--format", "mmsa", "--out", str(out)], "--format mmsa needs --input PATH"),
        ([*base[:5], "--labels", "x.csd", "--out", str(tmp_path / "q")], "--labels apply to --format csd only"),
        (["prepare", "--format", "csd", "--words", "w.csd", "--out", str(tmp_path / "q")], "needs --labels"),
        ([*base[:5], "--version", "1", "--out", str(tmp_path / "q")], "--version applies to --format urfunny"),
        (["prepare", "--format", "misa", "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "q")],
         "no such file or folder"),
        (["prepare", "--format", "mult", "--input", str(sources["mmsa"]), "--out", str(tmp_path / "q")],
         "expected keys"),
    ]:
        assert cli(argv) == 1, argv
        assert message in capsys.readouterr().err
    assert not (tmp_path / "q").exists()
    assert cli(["prepare", "--help"]) == 0
    assert "--format" in capsys.readouterr().out
    assert cli(["prepare", "--format", "nonsense", "--out", "x"]) == 2


def test_prepare_csd_passes_every_option(tmp_path, sources, monkeypatch):
    calls = []

    def build_csd_dataset(**kwargs):
        calls.append(kwargs)
        return read_mmsa_pickle(sources["mmsa"], dataset="from-csd")

    fake = types.ModuleType("misalatch.data.readers.csd")
    fake.build_csd_dataset = build_csd_dataset
    monkeypatch.setitem(sys.modules, "misalatch.data.readers.csd", fake)
    out = tmp_path / "csd"
    argv = ["prepare", "--format", "csd", "--labels", "l.csd", "--words", "w.csd", "--visual", "v.csd",
            "--acoustic", "a.csd", "--folds", "f.json", "--dataset", "mosei", "--impute", "--no-normalize",
            "--out", str(out)]
    assert cli(argv) == 0
    assert calls == [dict(labels="l.csd", words="w.csd", visual="v.csd", acoustic="a.csd", dataset="mosei",
                          folds="f.json", normalize=False, impute=True, progress=False)]
    assert load_prepared(out).name == "from-csd"


# ---- --data DIR and dataset names (misalatch.data.loading) ----

def test_data_dir_and_names(tmp_path, sources, monkeypatch):
    ds = read_mmsa_pickle(sources["mmsa"])
    root = tmp_path / "root"
    save_prepared(ds.replace(name="mosi"), root / "mosi")
    save_prepared(ds.replace(name="ur_funny"), root / "UR_FUNNY")
    assert load_dataset(str(root / "mosi")).name == "mosi"  # --data DIR
    monkeypatch.delenv("MISALATCH_DATA", raising=False)
    assert load_dataset("mosi", data_root=str(root)).name == "mosi"
    assert load_dataset("ur_funny", data_root=str(root)).name == "ur_funny"  # MISA-style upper case
    monkeypatch.setenv("MISALATCH_DATA", str(root))
    assert load_dataset("mosi").name == "mosi"
    with pytest.raises(DataFormatError) as err:
        load_dataset("mosei")
    assert str(root / "mosei") in str(err.value) and str(root / "MOSEI") in str(err.value)
    monkeypatch.delenv("MISALATCH_DATA")
    with pytest.raises(ConfigError, match="--data-root DIR or set \\$MISALATCH_DATA"):
        load_dataset("mosei")
    (root / "plain").mkdir()
    with pytest.raises(DataFormatError, match="not in a layout misalatch can read.*prepared dataset"):
        load_dataset(str(root / "plain"))
