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
from tests.experiments.conftest import HOSTILE, TinyRuns

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
