"""misalatch report: a self-contained page, checked in a real headless Chromium.

The browser loads the page from a file URL with nothing else reachable; the test reads the console
log (every page message is logged as ``INFO:CONSOLE``), the rendered DOM (``--dump-dom``) and a
screenshot. A page with a deliberate console error proves the console check can fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from misalatch.cli import main as cli_main
from misalatch.errors import ConfigError
from misalatch.evaluation.report import format_mean_std
from misalatch.experiments.html_report import build_report, redact_url, write_report
from tests.experiments.conftest import HOSTILE, TinyRuns, make_sweep

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium binary on PATH (install it with `apt-get install -y chromium`; "
                "scripts/system_packages.sh does so when run as root)")


def run_chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
               "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}", "--window-size=1280,1800", *extra, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def console_messages(stderr: str) -> list[str]:
    """Page console messages and network errors from Chromium's log (dbus/GPU noise ignored)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "net::ERR" in line]


class Cells(HTMLParser):
    """The ``<td data-metric>`` cells (and ``<tr data-mean>`` rows) of each table, by table id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict[str, str]]] = {}
        self.images: list[str] = []
        self.scripts = 0
        self._table: str | None = None
        self._variant: str | None = None
        self._cell: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table = a.get("id", "")
            self.tables.setdefault(self._table, [])
        elif tag == "tr":
            self._variant = a.get("data-variant")
            if "data-mean" in a and self._table is not None:  # a paired-comparison row
                self.tables[self._table].append(a)
        elif tag == "td" and "data-metric" in a and self._table is not None:
            self._cell = {**a, "variant": self._variant or "", "text": ""}
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "script":
            self.scripts += 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._table is not None:
            self.tables[self._table].append(self._cell)
            self._cell = None
        elif tag == "table":
            self._table = None


def test_report_in_headless_chromium(sweep_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert cli_main(["report", str(sweep_dir), "--out", str(out)]) == 0
    page = out.read_text()
    assert "http://" not in page and "https://" not in page.replace("https://db.example", "")  # nothing remote
    url = out.resolve().as_uri()

    dom = run_chromium(url, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_messages(dom.stderr) == []
    cells = Cells()
    cells.feed(dom.stdout)

    # the rendered tables hold the values of results.json: exact in data-mean, rounded in the text
    document = json.loads((sweep_dir / "results.json").read_text())
    for split in ("test", "validation"):
        rendered = {(c["variant"], c["data-metric"]): c for c in cells.tables[f"results-{split}"]}
        expected = {(v["key"], m): s for v in document["variants"] for m, s in v[split].items()}
        assert set(rendered) == set(expected)
        for key, stats in expected.items():
            cell = rendered[key]
            assert float(cell["data-mean"]) == stats["mean"] and float(cell["data-std"]) == pytest.approx(stats["std"])
            assert cell["text"] == format_mean_std(key[1], stats["mean"], stats["std"], stats["n"])
    paired = cells.tables["paired"]
    assert paired and float(paired[0]["data-mean"]) == document["paired"][0]["mean"]

    # untrusted strings are text, not markup; the only images are embedded PNGs
    assert cells.scripts == 0
    assert len(cells.images) >= 8 and all(src.startswith("data:image/png;base64,") for src in cells.images)
    assert HOSTILE in dom.stdout.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    assert "s3cret" not in page and "lab:***@db.example" in page
    assert '<ul id="failed">' in page and "attempts: 2" in page and '<ul id="pending"><li>key: none, seed: 1114</li>' in page
    assert "feedback masks" in page and "computed in memory" in page  # the static variant's masks

    shot = tmp_path / "shot.png"
    result = run_chromium(url, tmp_path / "profile-shot", f"--screenshot={shot}")
    assert result.returncode == 0 and console_messages(result.stderr) == []
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (1800, 1280)
    assert float(pixels.var()) > 0
    assert float(np.mean(pixels.min(axis=2) < 0.9)) > 0.02  # more than a few non-white pixels


def test_console_check_catches_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><p>x</p><script>console.error("boom"); missing();</script></body></html>')
    result = run_chromium(bad.resolve().as_uri(), tmp_path / "profile", "--dump-dom")
    messages = console_messages(result.stderr)
    assert any("boom" in m for m in messages) and any("missing" in m for m in messages)


def test_masks_read_from_folder_and_refusals(tiny_runs: TinyRuns, tmp_path: Path) -> None:
    run = tmp_path / "static"
    shutil.copytree(tiny_runs.feedback, run)
    assert cli_main(["masks", str(run), "--samples", "1"]) == 0
    page = build_report(run)
    assert "read from masks-test/" in page and "computed in memory" not in page
    assert re.search(r'<table id="results-test">', page)
    assert "feedback masks" not in build_report(tiny_runs.misa)  # MISA has no masks

    user_file = tmp_path / "page.html"
    user_file.write_text("<html>my own page</html>")
    with pytest.raises(ConfigError, match="not a report misalatch wrote"):
        write_report(page, user_file)
    assert user_file.read_text() == "<html>my own page</html>"
    ours = write_report(page, tmp_path / "ours.html")
    assert write_report(page, ours) == ours  # our own report may be replaced
    with pytest.raises(ConfigError, match="is a folder"):
        write_report(page, tmp_path)


def test_redact_url() -> None:
    assert redact_url("postgresql://u:pw@host:5432/db") == "postgresql://u:***@host:5432/db"
    assert redact_url("sqlite:///sweeps/mosi/optuna.db") == "sqlite:///sweeps/mosi/optuna.db"


def _text(page: str) -> str:
    """The page without its embedded images (whose base64 may spell anything)."""
    return re.sub(r"data:image/png;base64,[^\"]*", "", page)


def test_report_says_what_data_and_config_and_aggregates_masks_over_seeds(sweep_dir: Path) -> None:
    page = build_report(sweep_dir)
    assert re.search(r"<title>misalatch report \[SYNTHETIC data\]: ", page)  # the data in the title
    assert re.search(r"<h1>misalatch report \[SYNTHETIC data\]", page)
    # the resolved configuration where it differs from the defaults (the tiny runs' settings)
    config = re.search(r'<table id="config">(.*?)</table>', page, re.S)
    assert config is not None
    for field, value in (("hidden_size", "8"), ("max_epochs", "1"), ("text_encoder", "learned"), ("batch_size", "24")):
        assert re.search(rf'data-field="{field}"><td><code>{field}</code></td><td>{value}</td>', config.group(1)), field
    assert 'data-field="lr"' not in config.group(1)  # at its default: not listed
    # the static variant's masks over both seeds, not the first seed only
    assert "feedback masks over 2 seeds" in page
    assert page.count("feedback masks, seed ") == 2
    assert re.search(r'<table class="masks-seeds">.*?<td class="num" data-stat="mean">[0-9.]+ ± [0-9.]+</td>', page, re.S)
    # navigable: a summary first, the long sections folded
    assert page.index('id="summary"') < page.index('id="results"') < page.index('id="curves"')
    assert '<details id="curves">' in page and '<details id="runs">' in page
    assert "NaN" not in _text(page)


def test_one_seed_says_not_applicable_instead_of_nan(tiny_runs: TinyRuns, tmp_path: Path) -> None:
    import copy

    from tests.experiments.conftest import sweep_document

    page = build_report(tiny_runs.feedback, compute_masks=True)
    assert "n/a (1 seed)" in page and "NaN" not in _text(page)
    assert "feedback masks over 1 seed" in page
    document = sweep_document(seeds=(1111,))
    one = make_sweep(tmp_path / "one", tiny_runs, copy.deepcopy(document))
    paired = re.search(r'<table id="paired">(.*?)</table>', build_report(one, masks=False), re.S)
    assert paired is not None and paired.group(1).count("n/a (1 seed)") == 2  # CI and p-value


def test_first_screen_shows_the_summary(sweep_dir: Path, tmp_path: Path) -> None:
    """A screenshot of the first screen (1280 x 800) holds the summary box and the SYNTHETIC warning,
    found by their background colours."""
    out = tmp_path / "report.html"
    assert cli_main(["report", str(sweep_dir), "--out", str(out), "--no-masks"]) == 0
    shot = tmp_path / "first.png"
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,800", "--hide-scrollbars",
               f"--screenshot={shot}", out.resolve().as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    import matplotlib.image

    pixels = (matplotlib.image.imread(str(shot))[..., :3] * 255).round().astype(int)
    assert pixels.shape[:2] == (800, 1280)

    def share(rgb: tuple[int, int, int]) -> float:
        return float(np.mean(np.all(np.abs(pixels - np.array(rgb)) <= 2, axis=2)))

    assert share((0xea, 0xf2, 0xff)) > 0.01  # the summary box (#eaf2ff)
    assert share((0xff, 0xf4, 0xe0)) > 0.002  # the SYNTHETIC warning (#fff4e0)
