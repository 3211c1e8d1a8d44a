"""misalatch compare: runs, multi-seed folders and sweeps in one table; per-run plots; clear errors."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from misalatch.cli import main as cli_main
from misalatch.errors import ConfigError, DataFormatError
from misalatch.experiments.compare import compare, to_csv, to_markdown, write_comparison
from misalatch.experiments.folders import read_results
from tests.experiments.conftest import TinyRuns, make_sweep, sweep_document


def test_every_run_has_prediction_plots(tiny_runs: TinyRuns, tmp_path: Path) -> None:
    import matplotlib.image

    for run in (tiny_runs.misa, tiny_runs.feedback):
        for name in ("scatter-test.png", "confusion-test.png", "curves.png"):
            pixels = matplotlib.image.imread(str(run / name))
            assert float(pixels.var()) > 0, (run, name)
    # misalatch evaluate draws them too, for each split, named after its evaluation file
    run = tmp_path / "run"
    shutil.copytree(tiny_runs.misa, run)
    assert cli_main(["evaluate", str(run), "--device", "cpu"]) == 0
    for split in ("valid", "test"):
        for kind in ("scatter", "confusion"):
            assert float(matplotlib.image.imread(str(run / f"evaluation-{kind}-{split}.png")).var()) > 0
    assert cli_main(["evaluate", str(run), "--device", "cpu", "--out", str(tmp_path / "e2.json"), "--no-plots"]) == 0
    assert not list(run.glob("e2-*.png")) and not list(tmp_path.glob("*.png"))


def test_compare_run_and_sweep(tiny_runs: TinyRuns, sweep_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = json.loads((sweep_dir / "results.json").read_text())
    comparison = compare([tiny_runs.misa, sweep_dir])
    assert [r.label for r in comparison.rows] == ["misa", "sweep/none", "sweep/static"]
    run_metrics = json.loads((tiny_runs.misa / "metrics.json").read_text())["test"]
    assert comparison.rows[0].metrics["mae"].mean == run_metrics["mae"] and comparison.rows[0].n == 1
    none = document["variants"][0]["test"]
    assert comparison.rows[1].metrics["mae"].mean == none["mae"]["mean"]
    assert comparison.rows[1].metrics["mae"].std == pytest.approx(none["mae"]["std"])

    markdown = to_markdown(comparison)
    assert markdown.startswith("**SYNTHETIC data** (every folder)")  # what data it is, first
    assert comparison.synthetic == (str(tiny_runs.misa), str(sweep_dir))
    valid = compare([sweep_dir], split="validation")  # the alias of the name every command uses
    assert valid.split == "valid" and valid.rows[0].metrics["mae"].mean == document["variants"][0]["validation"]["mae"]["mean"]
    mae = none["mae"]
    assert f"| sweep/none | sweep | {mae['mean']:.3f} ± {mae['std']:.3f} | " in markdown
    table = list(csv.DictReader(io.StringIO(to_csv(comparison))))
    assert float(table[1]["mae_mean"]) == none["mae"]["mean"] and table[1]["seeds"] == "1111 1112"
    assert table[2]["variant"] == "static" and table[2]["n"] == "2"

    out = tmp_path / "cmp"
    assert cli_main(["compare", str(tiny_runs.misa), str(sweep_dir), "--out", str(out), "--metrics", "mae", "corr"]) == 0
    printed = capsys.readouterr().out
    assert "| misa | run |" in printed and "Acc-7" not in printed.split("written:")[0]
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "comparison.json", "comparison.md", "comparison.png",
                                                     "run.json"]  # run.json: the owned-folder marker
    import matplotlib.image

    assert float(matplotlib.image.imread(str(out / "comparison.png")).var()) > 0
    # an earlier comparison is replaced only with --overwrite; a user's folder never
    assert cli_main(["compare", str(sweep_dir), "--out", str(out)]) == 1
    assert "pass --overwrite" in capsys.readouterr().err
    assert cli_main(["compare", str(sweep_dir), "--out", str(out), "--overwrite"]) == 0
    assert "misa" not in (out / "comparison.md").read_text()
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("my notes")
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="misalatch did not (create|write)|no misalatch run.json"):
            write_comparison(comparison, user, overwrite=overwrite)
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"] and (user / "notes.txt").read_text() == "my notes"


def test_compare_says_what_data_and_which_settings(tiny_runs: TinyRuns, sweep_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Above the table, and in every file it writes: the data (SYNTHETIC) and the resolved settings that
    differ from the defaults, shared ones once and the rest per run (the report's config_differences)."""
    name = json.loads((tiny_runs.misa / "metrics.json").read_text())["data"]["name"]
    out = tmp_path / "cmp"
    assert cli_main(["compare", str(tiny_runs.misa), str(tiny_runs.feedback), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    head = printed[:printed.index("| run / variant |")]
    assert head.startswith("**SYNTHETIC data** (every folder)")
    assert f"Data: {name} (SYNTHETIC)." in head
    shared = next(line for line in head.splitlines() if line.startswith("Settings that differ from the defaults (every run): "))
    for setting in ("`hidden_size` = 8 (default 128)", "`max_epochs` = 1 (default 500)", "`text_encoder` = learned"):
        assert setting in shared, setting
    assert "`feedback`" not in shared and "`out`" not in head  # where a run went is not a setting
    assert "- `static`: `feedback` = static (default none)" in head
    misa = next(line for line in head.splitlines() if line.startswith("- `misa`: "))
    assert "`feedback`" not in misa and "`hidden_size`" not in misa  # MISA is not a feedback run; shared: said once
    assert (out / "comparison.md").read_text() == printed[:printed.index("written:")]
    rows = list(csv.DictReader(io.StringIO((out / "comparison.csv").read_text())))
    assert [(r["data"], r["synthetic"]) for r in rows] == [(name, "true")] * 2
    assert "hidden_size=8 (default 128)" in rows[0]["changed_settings"] and "feedback" not in rows[0]["changed_settings"]
    assert "feedback=static (default none)" in rows[1]["changed_settings"]
    document = json.loads((out / "comparison.json").read_text())
    assert document["rows"][0]["changed_settings"]["hidden_size"] == {"value": 8, "default": 128}
    assert document["rows"][1]["changed_settings"]["feedback"] == {"value": "static", "default": "none"}
    assert document["rows"][1]["data"] == name and document["rows"][1]["synthetic"] is True

    # a sweep: per variant, from that variant's own run folders
    markdown = to_markdown(compare([sweep_dir]))
    assert "- `sweep/static`: `feedback` = static (default none)" in markdown
    # a run whose config.yaml is gone: said so, not passed off as the defaults
    bare = tmp_path / "bare"
    shutil.copytree(tiny_runs.misa, bare)
    (bare / "config.yaml").unlink()
    markdown = to_markdown(compare([bare, tiny_runs.feedback]))
    assert "- `bare`: settings unknown (no run folder with a config.yaml)" in markdown
    assert "(every run)" not in markdown


def test_seeds_folder(tiny_runs: TinyRuns, tmp_path: Path) -> None:
    folder = tmp_path / "multi"
    for seed in (1, 2):
        shutil.copytree(tiny_runs.misa, folder / f"seed-{seed}")
    (folder / "aggregate.json").write_text("{}")
    results = read_results(folder)
    assert results.kind == "seeds" and results.variants[0].n == 2


def test_clear_errors(tiny_runs: TinyRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main(["compare", str(empty)]) == 1
    assert "neither a run folder" in capsys.readouterr().err
    assert cli_main(["compare", str(tmp_path / "absent")]) == 1
    assert "no such folder" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("data: synthetic\n")
    with pytest.raises(ConfigError, match="has not finished"):
        read_results(unfinished)

    bad = sweep_document()
    bad["variants"][0]["test"]["mae"]["mean"] = "0.5; DROP TABLE"
    folder = make_sweep(tmp_path / "bad", tiny_runs, bad)
    with pytest.raises(DataFormatError, match=r"results.json, field 'variants\[0\].test.mae.mean': expected a number"):
        read_results(folder)
    (folder / "results.json").write_text('{"format": "misalatch-sweep-results", "version": 99}')
    with pytest.raises(DataFormatError, match="version 99 is not supported"):
        read_results(folder)
    (folder / "results.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="not valid JSON"):
        read_results(folder)
    with pytest.raises(ConfigError, match="not in any of the results"):
        compare([tiny_runs.misa], metrics=["nope"])


def test_run_dirs_outside_the_sweep_are_not_followed(tiny_runs: TinyRuns, tmp_path: Path) -> None:
    document = sweep_document()
    document["variants"][0]["runs"][0]["run_dir"] = "../../etc"
    document["variants"][0]["runs"][1]["run_dir"] = str(tiny_runs.misa)  # absolute
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(document))
    runs = read_results(folder).variants[0].runs
    assert [r.run_dir for r in runs] == [None, None]


def test_results_markdown_says_data_settings_and_one_seed() -> None:
    from misalatch.experiments.results import results_markdown
    from tests.experiments.conftest import sweep_document

    document = sweep_document(seeds=(1111,))
    document["sweep"]["base_config"] = {"data": "synthetic", "hidden_size": 8, "max_epochs": 1, "out": "x"}
    for variant in document["variants"]:
        for run in variant["runs"]:
            run.setdefault("attempts", 1)
    markdown = results_markdown(document)
    assert markdown.startswith("# Sweep `tiny` [SYNTHETIC data]")
    assert "`hidden_size` = 8 (default 128)" in markdown and "`max_epochs` = 1 (default 500)" in markdown
    assert "`out`" not in markdown  # where it went is not a setting
    assert "Storage: `postgresql://" in markdown and "in this folder" not in markdown  # not the folder's own file
    assert "Storage: `study.db` in this folder (SQLite)" in results_markdown(
        {**document, "sweep": {**document["sweep"], "storage": "sqlite:///" + (Path("s").resolve() / "study.db").as_posix()}},
        Path("s"))
    paired = [line for line in markdown.splitlines() if line.startswith("| static | none |")]
    assert paired and paired[0].count("n/a (1 seed)") == 2
