"""A run folder is untrusted input (issue 17 §1): property-based tests with hostile run folders.

Each example copies one tiny trained run into a fresh sandbox with sentinel files around it (and,
where the test says so, user files inside it), makes it hostile (a dead writer's checkpoint journal
naming ``..``, absolute paths, NUL bytes, very long names or links; a ``run.json`` listing outside
paths or user folders; symbolic links in place of the run's files or seed folders), runs one
command through :func:`misalatch.cli.main` and asserts that no file outside the run folder changed
(and no user file inside it), that the command exited 0 or with one ``misalatch X: error:`` line,
and that nothing outside the run folder was read into its output.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from misalatch.cli import main as cli_main
from misalatch.io.atomic import host_id, plain_name_problem

FAST = ["--synthetic-size", "8", "4", "4", "--text-encoder", "learned", "--hidden-size", "8", "--batch-size", "8",
        "--max-epochs", "1", "--device", "cpu"]
SECRET = b"SECRET-OUTSIDE-THE-RUN-FOLDER"
# a PNG the report would embed if it followed a link out of a run folder
SECRET_PNG = b"\x89PNG\r\n\x1a\n" + SECRET * 4
PROPERTY = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny feedback run (masks exist) that kept its resume state, trained once for the module."""
    run = tmp_path_factory.mktemp("trained") / "run"
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        assert cli_main(["-q", "train", *FAST, "--feedback", "sequence", "--keep-resume-state", "--out", str(run)]) == 0
    return run, _dead_pid()


@dataclass
class Sandbox:
    """``box/a/b/run``: the run; sentinels in box, box/a and box/a/b; ``outside/`` a folder beside the run."""

    box: Path
    run: Path
    outside: Path
    user_inside: tuple[str, ...] = ()

    @property
    def out(self) -> Path:
        """Where the commands' own outputs go (not a sentinel)."""
        return self.box / "out"

    def snapshot(self) -> dict[str, str]:
        """Every entry outside the run folder (and the user's files inside it): content hash or link target."""
        found: dict[str, str] = {}
        for folder, dirs, files in os.walk(self.box):
            here = Path(folder)
            for name in dirs + files:
                path = here / name
                rel = path.relative_to(self.box).as_posix()
                if path == self.out or self.out in path.parents:
                    continue
                inside = path == self.run or self.run in path.parents
                if inside and not any(rel.startswith(self._rel(u)) for u in self.user_inside):
                    continue
                if path.is_symlink():
                    found[rel] = "link:" + os.readlink(path)
                elif path.is_file():
                    found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
                else:
                    found[rel] = "dir"
        return found

    def _rel(self, inside: str) -> str:
        return (self.run / inside).relative_to(self.box).as_posix()


@contextlib.contextmanager
def sandbox(trained_run: Path, *, marker_complete: bool = True) -> Sandbox:
    with tempfile.TemporaryDirectory(prefix="misalatch-hostile-") as tmp:
        box = Path(tmp)
        run = box / "a" / "b" / "run"
        shutil.copytree(trained_run, run, symlinks=True)
        for i, folder in enumerate((box, box / "a", box / "a" / "b")):
            (folder / "victim.txt").write_bytes(SECRET + b" %d" % i)
        outside = box / "a" / "b" / "outside"
        (outside / "sub").mkdir(parents=True)
        (outside / "secret.txt").write_bytes(SECRET)
        (outside / "curves.png").write_bytes(SECRET_PNG)
        (outside / "sub" / "deep.txt").write_bytes(SECRET)
        (box / "out").mkdir()
        if not marker_complete:  # a run killed after its last epoch: --resume finishes it
            marker = json.loads((run / "run.json").read_text())
            marker["complete"] = False
            (run / "run.json").write_text(json.dumps(marker))
        yield Sandbox(box, run, outside)


def run_cli(*args: str) -> tuple[int, str, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = cli_main(["-q", *args])
    return code, out.getvalue(), err.getvalue()


def assert_clean_exit(command: str, code: int, err: str) -> None:
    """Exit 0, or 1 with exactly one ``misalatch X: error:`` line (warnings may precede it)."""
    assert "Traceback" not in err, err
    assert code in (0, 1), (code, err)
    if code == 1:
        errors = [line for line in err.splitlines() if line.startswith(f"misalatch {command}: error:")]
        assert len(errors) == 1, err


def commands(s: Sandbox) -> dict[str, list[str]]:
    run = str(s.run)
    return {
        "evaluate": ["evaluate", run, "--device", "cpu", "--no-plots"],
        "predict": ["predict", run, "--out", str(s.out / "predictions.csv"), "--device", "cpu"],
        "resume": ["train", "--resume", run],
        "overwrite": ["train", *FAST, "--out", run, "--overwrite"],
        "into": ["train", *FAST, "--out", str(s.run / "inner")],
        "report": ["report", run, "--out", str(s.out / "report.html"), "--no-compute-masks"],
        "compare": ["compare", run, "--out", str(s.out / "comparison")],
    }


# ----------------------------------------------------------------------------------------------
# the checkpoint journal of a "dead writer"
# ----------------------------------------------------------------------------------------------
HOSTILE_NAMES = st.one_of(
    st.sampled_from([
        "../victim.txt", "../../victim.txt", "../../../victim.txt", "../outside/secret.txt", "..", ".", "",
        "best.json/../../victim.txt", "sub/best.json", "..\\victim.txt", "best.json\x00", "COMMIT.json", ".hidden",
        "ABSOLUTE", "a" * 300, "é" * 200, "best.json\n", "C:victim.txt",
    ]),
    st.text(min_size=0, max_size=40),
)
LEGIT_NAMES = st.sampled_from(["best.json", "best.safetensors", "best.manifest.json", "resume.json"])


@st.composite
def journals(draw):
    n_hostile = draw(st.integers(0, 2))
    entries = [(draw(LEGIT_NAMES), draw(st.sampled_from(["file", "file", "link", "missing"])))
               for _ in range(draw(st.integers(0 if n_hostile else 1, 2)))]
    entries += [(draw(HOSTILE_NAMES), draw(st.sampled_from(["file", "link", "missing"]))) for _ in range(n_hostile)]
    shape = draw(st.sampled_from(["valid"] * 6 + ["link-journal", "not-json", "deep", "bad-types", "huge-list"]))
    command = draw(st.sampled_from(["evaluate", "predict", "resume", "resume", "overwrite", "into", "evaluate"]))
    return entries, shape, command


def _plant_journal(s: Sandbox, dead: int, entries: list[tuple[str, str]], shape: str) -> list[str]:
    """Write a dead writer's journal into the run folder; returns the run's files it would replace."""
    journal = s.run / f".files.mlnext-{dead}-0123abcd@{host_id()}"
    if shape == "link-journal":  # the journal is a link to a folder outside, whose files it "commits"
        (s.outside / "COMMIT.json").write_text(json.dumps({"files": [
            {"name": "secret.txt", "size": len(SECRET), "sha256": hashlib.sha256(SECRET).hexdigest()}]}))
        journal.symlink_to(s.outside, target_is_directory=True)
        return []
    journal.mkdir()
    doc_entries = []
    for name, how in entries:
        name = str(s.box / "victim.txt") if name == "ABSOLUTE" else name
        content = b"new " + name.encode("utf-8", "replace")
        try:
            where = Path(os.path.normpath(journal / name))
            if how == "file" and not where.exists() and where.parent.is_dir() and s.box in where.parents:
                where.write_bytes(content)
            elif how == "link":
                where.symlink_to(s.outside / "secret.txt")
            if where.is_file():
                content = where.read_bytes()
        except (OSError, ValueError):
            pass  # a name the file system cannot hold: the entry names a missing file
        doc_entries.append({"name": name, "size": len(content), "sha256": hashlib.sha256(content).hexdigest()})
    doc: object = {"files": doc_entries}
    if shape == "bad-types":
        doc = {"files": [{"name": e["name"], "size": True, "sha256": 7} for e in doc_entries]}
    elif shape == "huge-list":
        doc = {"files": doc_entries * 100}
    text = json.dumps(doc)
    if shape == "not-json":
        text = text[: len(text) // 2]
    elif shape == "deep":
        text = "[" * 100_000 + "]" * 100_000
    (journal / "COMMIT.json").write_text(text)
    return [name for name, _ in entries if name in ("best.json", "best.safetensors", "best.manifest.json", "resume.json")]


@PROPERTY
@given(journals())
@example(([("best.json", "file"), ("../victim.txt", "file")], "valid", "resume"))  # the examples
@example(([("../../victim.txt", "file")], "valid", "into"))
@example(([], "link-journal", "predict"))
def test_a_crafted_journal_never_touches_anything_outside_the_run(trained, case):
    trained_run, dead = trained
    entries, shape, command = case
    hostile = shape != "valid" or any(plain_name_problem(n) is not None or n == "ABSOLUTE" or how == "link"
                                      for n, how in entries)
    with sandbox(trained_run, marker_complete=command != "overwrite") as s:
        replaced = _plant_journal(s, dead, entries, shape)
        before = s.snapshot()
        links = {p.name for p in s.run.iterdir() if p.is_symlink()}
        run_files = {n: (s.run / n).read_bytes() for n in replaced if (s.run / n).is_file()}
        code, _, err = run_cli(*commands(s)[command])
        assert_clean_exit("train" if command in ("resume", "overwrite", "into") else command, code, err)
        assert s.snapshot() == before
        if hostile and command != "overwrite":  # checked before anything moves: none of the set was applied
            assert {n: (s.run / n).read_bytes() for n in run_files if (s.run / n).is_file()} == {
                n: b for n, b in run_files.items() if (s.run / n).is_file()}
        if s.run.is_dir():
            assert {p.name for p in s.run.iterdir() if p.is_symlink()} <= links, "a link was moved into the run folder"


# ----------------------------------------------------------------------------------------------
# run.json listing outside paths and user folders
# ----------------------------------------------------------------------------------------------
OUTSIDE_LISTED = st.lists(st.sampled_from([
    "../victim.txt", "../../victim.txt", "ABSOLUTE", "../outside", "../outside/secret.txt", "notes/../../victim.txt",
    "", ".", "..", "run.json", "a/b/c/d", "x\x00y",
]), max_size=3)


@PROPERTY
@given(st.sampled_from(["notes", "notes/", "./notes", "notes//"]), st.sampled_from(["data", "data/", "./data/"]),
       st.sampled_from(["link", "link/", "./link"]), OUTSIDE_LISTED, st.sampled_from(["overwrite", "overwrite", "resume",
                                                                                  "evaluate", "into"]))
def test_a_crafted_run_json_never_gets_a_user_file_deleted(trained, notes, data, link, listed, command):
    """The run.json of a received run lists the user's own sub-folders (and paths outside) as its files."""
    trained_run, _ = trained
    with sandbox(trained_run, marker_complete=command != "overwrite") as s:
        (s.run / "notes").mkdir()
        (s.run / "notes" / "mine.txt").write_text("my analysis")
        (s.run / "data" / "2024").mkdir(parents=True)
        (s.run / "data" / "2024" / "table.csv").write_text("1,2,3")
        (s.run / "link").symlink_to(s.outside, target_is_directory=True)
        s.user_inside = ("notes", "data", "link")
        marker = json.loads((s.run / "run.json").read_text())
        marker["files"] += [notes, data, link] + [str(s.box / "victim.txt") if f == "ABSOLUTE" else f for f in listed]
        (s.run / "run.json").write_text(json.dumps(marker))
        before = s.snapshot()
        code, _, err = run_cli(*commands(s)[command])
        assert_clean_exit(command if command == "evaluate" else "train", code, err)
        assert s.snapshot() == before
        if command == "overwrite":
            assert code == 1 and "did not write" in err


# ----------------------------------------------------------------------------------------------
# symbolic links in place of a run's files
# ----------------------------------------------------------------------------------------------
LINKED = st.sampled_from(["best.json", "best.safetensors", "best.manifest.json", "vocab.json", "metrics.json",
                          "curves.png", "evaluation.json", "resume.json", "config.yaml", "masks-test",
                          "evaluation-scatter-test.png", "history.csv"])


@PROPERTY
@given(LINKED, st.sampled_from(["evaluate", "predict", "resume", "report", "compare", "evaluate-plots"]))
@example("metrics.json", "report")  # followed, the stranger's results (seed 987654321) were on the page
@example("vocab.json", "predict")
def test_links_out_of_a_run_folder_are_never_followed(trained, linked, command):
    """A file of the run is a link to the same file of another run outside (valid, so it would be used)."""
    trained_run, _ = trained
    with sandbox(trained_run, marker_complete=command != "report") as s:
        stranger = s.outside / "stranger"
        shutil.copytree(s.run, stranger, symlinks=True)
        metrics = json.loads((stranger / "metrics.json").read_text())
        metrics["seed"] = 987654321
        (stranger / "metrics.json").write_text(json.dumps(metrics))
        (stranger / "curves.png").write_bytes(SECRET_PNG)
        (stranger / "evaluation.json").write_text(json.dumps({"data": "x", "synthetic": True, "note": SECRET.decode()}))
        target = s.run / linked
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
        source = stranger / linked
        if not source.exists():
            source = s.outside / ("sub" if linked == "masks-test" else "secret.txt")
        target.symlink_to(source, target_is_directory=source.is_dir())
        before = s.snapshot()
        argv = commands(s).get(command) or ["evaluate", str(s.run), "--device", "cpu"]
        code, out, err = run_cli(*argv)
        assert_clean_exit("train" if command == "resume" else command.split("-")[0], code, err)
        assert s.snapshot() == before
        written = b"".join(p.read_bytes() for p in s.out.rglob("*") if p.is_file())
        import base64

        for text in (written.decode("latin-1"), out):
            assert SECRET.decode() not in text and "987654321" not in text
            assert base64.b64encode(SECRET_PNG).decode() not in text


# ----------------------------------------------------------------------------------------------
# the examples of the issue, one by one
# ----------------------------------------------------------------------------------------------
def test_report_of_a_seeds_folder_does_not_embed_a_seed_link_out_of_it(trained):
    import base64

    trained_run, _ = trained
    with sandbox(trained_run) as s:
        seeds = s.box / "a" / "b" / "seeds"
        seeds.mkdir()
        shutil.copytree(s.run, seeds / "seed-1", symlinks=True)
        (seeds / "aggregate.json").write_text("{}")
        stranger = s.outside / "run"
        shutil.copytree(s.run, stranger, symlinks=True)
        (stranger / "curves.png").write_bytes(SECRET_PNG)
        metrics = json.loads((stranger / "metrics.json").read_text())
        metrics["seed"] = 987654321
        (stranger / "metrics.json").write_text(json.dumps(metrics))
        (seeds / "seed-2").symlink_to(stranger, target_is_directory=True)
        code, _, err = run_cli("report", str(seeds), "--out", str(s.out / "r.html"), "--no-compute-masks")
        assert code == 0, err
        page = (s.out / "r.html").read_text()
        assert base64.b64encode(SECRET_PNG).decode() not in page and "987654321" not in page
        assert base64.b64encode((s.run / "curves.png").read_bytes()).decode() in page  # the real seed is there


@pytest.mark.parametrize("name", ["best.json", "best.safetensors", "metrics.json", "run.json", "config.yaml"])
def test_predict_or_evaluate_out_never_replaces_a_file_of_the_run(trained, name):
    trained_run, _ = trained
    with sandbox(trained_run) as s:
        before = (s.run / name).read_bytes()
        for argv in (["predict", str(s.run), "--out", str(s.run / name), "--device", "cpu"],
                     ["predict", str(s.run), "--out", str(s.run / name), "--device", "cpu", "--overwrite"],
                     ["evaluate", str(s.run), "--out", str(s.run / name), "--device", "cpu", "--overwrite"]):
            code, _, err = run_cli(*argv)
            assert code == 1 and re.search(r"refusing to (replace|overwrite)|exists; pass --overwrite", err), err
            assert (s.run / name).read_bytes() == before


def test_a_user_file_added_during_train_overwrite_is_kept(trained, monkeypatch):
    import misalatch.training.runs as runs

    trained_run, _ = trained
    real_fit = runs.fit
    with sandbox(trained_run) as s:
        def fit_while_the_user_writes(*args, **kwargs):
            (s.run / "added-meanwhile.txt").write_text("my notes")  # after --overwrite was checked
            (s.run / "mine").mkdir()
            (s.run / "mine" / "table.csv").write_text("1,2")
            return real_fit(*args, **kwargs)

        monkeypatch.setattr(runs, "fit", fit_while_the_user_writes)
        code, _, err = run_cli("train", *FAST, "--out", str(s.run), "--overwrite")
        assert code == 0, err
        kept = [p for p in s.run.parent.iterdir() if p.name.startswith("run.kept-")]
        assert len(kept) == 1 and "were kept in" in err
        assert (kept[0] / "added-meanwhile.txt").read_text() == "my notes"
        assert (kept[0] / "mine" / "table.csv").read_text() == "1,2"
        assert sorted(p.name for p in kept[0].iterdir()) == ["added-meanwhile.txt", "mine"]  # only the user's
        assert (s.run / "best.json").is_file() and not (s.run / "added-meanwhile.txt").exists()


def test_masks_and_robustness_refuse_a_linked_run_file(trained):
    trained_run, _ = trained
    with sandbox(trained_run) as s:
        (s.run / "best.safetensors").unlink()
        (s.run / "best.safetensors").symlink_to(s.outside / "secret.txt")
        before = s.snapshot()
        for argv in (["masks", str(s.run), "--device", "cpu"],
                     ["robustness", str(s.run), "--out", str(s.out / "rob"), "--device", "cpu"]):
            code, _, err = run_cli(*argv)
            assert code == 1 and "symbolic link" in err and err.count("error:") == 1, err
        assert s.snapshot() == before


def test_resume_refuses_a_seed_folder_that_is_a_link(trained):
    trained_run, _ = trained
    with sandbox(trained_run, marker_complete=False) as s:
        seeds = s.box / "a" / "b" / "seeds"
        shutil.copytree(s.run, s.outside / "seed-2", symlinks=True)
        seeds.mkdir()
        shutil.copytree(s.run, seeds / "seed-1", symlinks=True)
        (seeds / "seed-1" / "run.json").unlink()
        (seeds / "seed-2").symlink_to(s.outside / "seed-2", target_is_directory=True)
        marker = json.loads((s.run / "run.json").read_text())
        marker["config"]["seeds"] = [1, 2]
        marker["files"] = [f"seed-{i}/{f}" for i in (1, 2) for f in marker["files"]]
        (seeds / "run.json").write_text(json.dumps(marker))
        before = s.snapshot()
        code, _, err = run_cli("train", "--resume", str(seeds))
        assert code == 1 and "symbolic link" in err and "seed-2" in err, err
        assert s.snapshot() == before
