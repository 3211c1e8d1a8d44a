"""One command-line grammar: fast help (no torch), --threads everywhere a model runs, lists and split
names written the same way in every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from misalatch.cli import COMMANDS, main as cli_main
from misalatch.cli._config import ThreadsFlag, apply_threads, usable_cpus
from misalatch.errors import ConfigError
from tests.conftest import REPO

HEAVY = ("torch", "transformers", "optuna", "scipy", "matplotlib")
# commands that run a model (train or evaluate) and so take --threads
MODEL_COMMANDS = ("train", "evaluate", "predict", "masks", "sweep", "search", "robustness", "report", "check-parity")


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    """``misalatch --help`` and ``misalatch <cmd> --help`` of every command, in one fresh interpreter that
    then reports which heavy modules the help imported."""
    code = (
        "import contextlib, io, json, sys\n"
        "from misalatch.cli import COMMANDS, main\n"
        "out = {}\n"
        "for name in ['', *COMMANDS]:\n"
        "    buf = io.StringIO()\n"
        "    with contextlib.redirect_stdout(buf):\n"
        "        try:\n"
        "            main([name, '--help'] if name else ['--help'])\n"
        "        except SystemExit:\n"
        "            pass\n"
        "    out[name] = buf.getvalue()\n"
        f"out['__heavy__'] = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_help_imports_neither_torch_nor_transformers(helps):
    assert helps.pop("__heavy__") == []
    assert set(helps) == {"", *COMMANDS}
    for name, text in helps.items():
        assert "usage" in text.lower(), (name, text[:200])


def test_help_texts_cite_no_internal_spec_sections(helps):
    for name, text in helps.items():
        assert "§" not in text and ".md §" not in text, name


def test_train_help_shows_config_resume_and_threads(helps):
    text = helps["train"]
    for flag in ("--config", "--resume", "--threads", "--seeds", "--max-epochs"):
        assert flag in text, flag


@pytest.mark.parametrize("name", MODEL_COMMANDS)
def test_every_model_command_takes_threads(helps, name):
    assert "--threads" in helps[name]


def test_threads_default_is_torch_choice_capped_by_affinity(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
        assert usable_cpus() == 2
        assert apply_threads(None) == 2 and torch.get_num_threads() == 2  # capped by the usable CPUs
        torch.set_num_threads(1)
        assert apply_threads(None) == 1  # torch's own pick (OMP_NUM_THREADS) below the cap is kept
        assert apply_threads(3) == 3 and torch.get_num_threads() == 3  # asked for explicitly
        with pytest.raises(ConfigError, match="--threads"):
            apply_threads(0)
    finally:
        torch.set_num_threads(before)


TINY = ["--synthetic-size", "8,4,4", "--text-encoder", "learned", "--hidden-size", "8", "--batch-size", "8",
        "--max-epochs", "1", "--patience", "0", "--lr", "0.01", "--device", "cpu", "--no-evaluate-test"]


def test_threads_recorded_in_the_run_folder(tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        out = tmp_path / "run"
        assert cli_main(["-q", "train", *TINY, "--threads", "1", "--out", str(out)]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert json.loads((out / "run.json").read_text())["threads"] == 1
    assert json.loads((out / "metrics.json").read_text())["threads"] == 1


# ----------------------------------------------------------------------------------------------
# lists and split names
# ----------------------------------------------------------------------------------------------
def test_train_lists_space_or_comma():
    from misalatch.cli.train import parse_train_args

    spaced = parse_train_args(["--seeds", "1", "2", "--synthetic-size", "8", "4", "4"])
    commas = parse_train_args(["--seeds", "1,2", "--synthetic-size=8,4,4"])
    assert spaced == commas
    assert commas.seeds == (1, 2) and commas.synthetic_size == (8, 4, 4)


def test_sweep_lists_space_or_comma(tmp_path):
    from misalatch.cli.sweep import parse_sweep

    out = ["--out", str(tmp_path / "s")]
    _, spaced = parse_sweep([*out, "--seeds", "1", "2", "--feedback", "none", "static", "--lr", "0.1", "0.2"])
    _, commas = parse_sweep([*out, "--seeds", "1,2", "--feedback", "none,static", "--lr=0.1,0.2"])
    assert spaced.grid == commas.grid
    assert spaced.grid == {"feedback": ("none", "static"), "lr": (0.1, 0.2), "seed": (1, 2)}
    # a flag that takes a list itself is not a grid dimension
    _, sized = parse_sweep([*out, "--seeds", "1", "--synthetic-size", "8,4,4"])
    assert sized.base.synthetic_size == (8, 4, 4) and set(sized.grid) == {"seed"}


def test_robustness_and_masks_lists_space_or_comma():
    from misalatch.cli._config import parse_flags
    from misalatch.cli.masks import MasksArgs
    from misalatch.cli.robustness import RobustnessArgs

    a = parse_flags(RobustnessArgs, ["run", "--out", "o", "--seeds", "1", "2", "--levels", "0", "0.5"], prog="x")
    b = parse_flags(RobustnessArgs, ["run", "--out", "o", "--seeds", "1,2", "--levels=0,0.5"], prog="x")
    assert a == b and a.seeds == (1, 2) and a.levels == (0.0, 0.5) and a.paths == ("run",)
    m = parse_flags(MasksArgs, ["run", "--ids", "a,b"], prog="x")
    assert m.ids == ("a", "b") == parse_flags(MasksArgs, ["run", "--ids", "a", "b"], prog="x").ids


@pytest.mark.parametrize("alias", ["valid", "validation", "val", "dev"])
def test_split_named_valid_everywhere(alias):
    from misalatch.cli._config import parse_flags
    from misalatch.cli.compare import CompareArgs
    from misalatch.cli.masks import MasksArgs
    from misalatch.cli.predict import PredictArgs
    from misalatch.cli.report import ReportArgs
    from misalatch.cli.robustness import RobustnessArgs

    assert parse_flags(CompareArgs, ["a", "--split", alias], prog="x").split == "valid"
    assert parse_flags(MasksArgs, ["a", "--split", alias], prog="x").split == "valid"
    assert parse_flags(PredictArgs, ["a", "--out", "p.csv", "--split", alias], prog="x").split == "valid"
    assert parse_flags(ReportArgs, ["a", "--out", "r.html", f"--mask-split={alias}"], prog="x").mask_split == "valid"
    assert parse_flags(RobustnessArgs, ["a", "--out", "o", "--split", alias], prog="x").split == "valid"


def test_every_model_command_dataclass_has_threads():
    import importlib

    for name in MODEL_COMMANDS:
        module = importlib.import_module("misalatch.cli." + name.replace("-", "_"))
        classes = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, ThreadsFlag)
                   and v is not ThreadsFlag]
        assert classes, name



def test_a_missing_prepared_folder_names_the_commands_that_make_it(tmp_path, capsys):
    assert cli_main(["train", "--data", str(tmp_path / "prepared" / "mosi")]) == 1
    err = capsys.readouterr().err
    assert "no such file or folder" in err
    assert "misalatch download CMU_MOSI_Opinion_Labels" in err
    assert f"misalatch prepare --format csd --dataset mosi" in err and f"--out {tmp_path / 'prepared' / 'mosi'}" in err
    assert cli_main(["train", "--data", "mosi", "--data-root", str(tmp_path)]) == 1
    assert "misalatch prepare --format" in capsys.readouterr().err


def test_join_waits_for_the_study_then_times_out_with_a_message(tmp_path):
    import threading

    import optuna

    from misalatch.experiments.studies import wait_for_study

    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    told = []
    with pytest.raises(ConfigError, match="after waiting 0.3 s; start it first"):
        wait_for_study("s", url, timeout=0.3, poll=0.05, on_wait=told.append)
    assert told and "waiting up to 0.3 s" in told[0]
    assert not db.exists()  # waiting never creates the starter's database

    def start() -> None:
        study = optuna.create_study(study_name="s", storage=url)
        study.set_user_attr("misalatch", {"grid": 1})

    timer = threading.Timer(0.3, start)
    timer.start()
    try:
        wait_for_study("s", url, timeout=30, poll=0.05)
    finally:
        timer.join()
    assert db.exists()
