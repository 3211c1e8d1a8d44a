"""Progress bars: an ETA on a terminal, nothing under -q or when stderr is not a terminal."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from misalatch.io.progress import progress_bar, progress_enabled


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def level():
    logger = logging.getLogger("misalatch")
    before = logger.level
    yield logger
    logger.setLevel(before)


def _draw(monkeypatch, stream: io.StringIO) -> str:
    monkeypatch.setattr(sys, "stderr", stream)
    with progress_bar(4, "sweep demo", unit="run") as bar:
        bar.update(2)
    return stream.getvalue()


def test_a_terminal_gets_a_bar_with_an_eta(monkeypatch, level):
    level.setLevel(logging.INFO)
    shown = _draw(monkeypatch, Terminal())
    assert "sweep demo" in shown and "2/4" in shown and "<" in shown  # elapsed<remaining
    assert progress_enabled()


def test_quiet_and_pipes_get_no_bar(monkeypatch, level):
    level.setLevel(logging.WARNING)  # misalatch -q
    assert _draw(monkeypatch, Terminal()) == ""
    level.setLevel(logging.INFO)
    assert _draw(monkeypatch, io.StringIO()) == ""  # not a terminal: a log file, CI, a pipe
