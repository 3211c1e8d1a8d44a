"""Inputs that used to end in a raw traceback (issue 17 §7): each is one ``misalatch X: error: ...``
line naming the input, exit status 1. The YAML/JSON cases go through the one safe loader
(:mod:`misalatch.io.documents`), the path cases through the CLI's boundary."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from misalatch import cli


def _file(name: str, body: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(body)
        return tmp / name

    return make


def _space(body: bytes) -> Callable[[Path], tuple[list[str], str]]:
    def make(tmp: Path) -> tuple[list[str], str]:
        path = _file("space.yaml", body)(tmp)
        return ["search", "--out", str(tmp / "out"), "--space", str(path)], "--space"

    return make


def _parity(tmp: Path) -> tuple[list[str], str]:
    (tmp / "case.safetensors").write_bytes(b"x")
    (tmp / "case.json").write_text("{not json")
    return ["check-parity", str(tmp / "case.safetensors")], "case.json"


def _parity_deep(tmp: Path) -> tuple[list[str], str]:
    (tmp / "case.safetensors").write_bytes(b"x")
    (tmp / "case.json").write_text("[" * 100_000 + "]" * 100_000)
    return ["check-parity", str(tmp / "case.safetensors")], "case.json"


CASES: dict[str, Callable[[Path], tuple[list[str], str]]] = {
    "binary --config": lambda t: (["train", "--config", str(_file("c.yaml", b"\x89PNG\r\n\x1a\n\x00\xff")(t)),
                                   "--out", str(t / "run")], "c.yaml"),
    "non-UTF-8 --config": lambda t: (["train", "--config", str(_file("c.yaml", b"lr: 0.1 # \xff\n")(t))], "c.yaml"),
    "--base-url ::::": lambda t: (["download", "CMU_MOSI_Opinion_Labels", "--dest", str(t), "--base-url", "::::"],
                                  "--base-url"),
    "--base-url http://[::1": lambda t: (["download", "CMU_MOSI_Opinion_Labels", "--dest", str(t), "--base-url",
                                          "http://[::1"], "--base-url"),
    "check-parity invalid JSON": _parity,
    "check-parity deep JSON": _parity_deep,
    "--space inf bound": _space(b"lr: {type: float, low: 0.0, high: .inf}\n"),
    "--space nan bound": _space(b"lr: {type: float, low: .nan, high: 1.0}\n"),
    "--space step 0": _space(b"lr: {type: float, low: 0.0, high: 1.0, step: 0}\n"),
    "--space int step -1": _space(b"hidden_size: {type: int, low: 8, high: 64, step: -1}\n"),
    "--space deep nesting": _space(b"lr: " + b"[" * 5000 + b"]" * 5000 + b"\n"),
    "--space deep block nesting": _space(b"".join(b"  " * i + b"k:\n" for i in range(2000))),
    "--space non-UTF-8": _space(b"lr: {type: float, low: 0.0, high: 1.0}\n# \xff\xfe\n"),
    "--space huge int": _space(b"hidden_size: {type: int, low: 1, high: 100000000000000000000}\n"),
    "--storage under /proc": lambda t: (["sweep", "--out", str(t / "s"), "--storage",
                                         "sqlite:////proc/misalatch-none/x/study.db", "--seeds", "1"], "--storage"),
    "sweep --out under /proc": lambda t: (["sweep", "--out", "/proc/misalatch-none/sweep", "--seeds", "1"], "/proc"),
    "search --out under /proc": lambda t: (["search", "--out", "/proc/misalatch-none/search"], "/proc"),
    "train --out under /proc": lambda t: (["train", "--out", "/proc/misalatch-none/run", "--max-epochs", "1",
                                           "--synthetic-size", "8", "4", "4", "--hidden-size", "4"], "/proc"),
    "journal under /proc": lambda t: (["sweep", "--join", "--storage", "journal:/proc/misalatch-none/j.log",
                                       "--study", "s"], "--storage"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv, names = CASES[case](tmp_path)
    capsys.readouterr()
    status = cli.main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"misalatch {argv[0]}: error:")]
    assert status == 1 and "Traceback" not in err, err
    assert len(lines) == 1 and names in lines[0], err
