"""Owned output folders: marker, protected places, staged replace, lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from misalatch.errors import ConfigError
from misalatch.io.atomic import host_id
from misalatch.io.owned import (
    MARKER,
    OutputLockedError,
    check_target,
    claim_output,
    foreign_entries,
    lock_path,
    open_output,
    read_marker,
    record_written,
)


def _make_run(path, files=("best.json", "metrics.json")):
    with claim_output(path, "train") as out:
        for name in files:
            out.write_text(name, f"content of {name}")
    return path


def test_claim_builds_in_staging_and_commits_with_marker(tmp_path):
    target = tmp_path / "runs" / "a"
    with claim_output(target, "train") as out:
        out.write_text("config.yaml", "x: 1")
        assert not target.exists() and out.path.parent == target.parent and out.path.name.startswith(".a.mlstage-")
        assert lock_path(target).exists()
        out.commit()
        assert target.is_dir() and out.path == target
        out.write_text("tokenizer/vocab.txt", "[PAD]")
    doc = read_marker(target)
    assert doc["kind"] == "train" and doc["complete"] is True and doc["host"] == host_id()
    assert doc["files"] == ["config.yaml", "tokenizer/vocab.txt"]
    assert not lock_path(target).exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["a"]
    assert foreign_entries(target) == []


def test_failure_before_commit_leaves_old_run_intact(tmp_path):
    target = _make_run(tmp_path / "run")
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    with pytest.raises(RuntimeError):
        with claim_output(target, "train", overwrite=True) as out:
            out.write_text("best.json", "new")
            raise RuntimeError("no CUDA")
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_replaces_only_after_commit(tmp_path):
    target = _make_run(tmp_path / "run", files=("old.txt",))
    with claim_output(target, "train", overwrite=True) as out:
        out.write_text("new.txt", "n")
        assert (target / "old.txt").exists()
    assert sorted(p.name for p in target.iterdir()) == sorted([MARKER, "new.txt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("where", ["cwd", "parent", "home", "root"])
def test_protected_places_are_refused(tmp_path, monkeypatch, where):
    work = tmp_path / "project" / "sub"
    work.mkdir(parents=True)
    (work / "keep.txt").write_text("mine")
    monkeypatch.chdir(work)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("KEY")
    monkeypatch.setenv("HOME", str(home))
    target = {"cwd": ".", "parent": "..", "home": str(home), "root": "/"}[where]
    with pytest.raises(ConfigError, match="never writes its output there"):
        with claim_output(target, "train", overwrite=True):
            pass
    assert (work / "keep.txt").read_text() == "mine" and (home / ".ssh" / "id_rsa").read_text() == "KEY"


def test_folder_with_common_names_but_no_marker_is_refused(tmp_path):
    target = tmp_path / "project"
    target.mkdir()
    (target / "config.yaml").write_text("mine")
    (target / "aggregate.json").write_text("{}")
    with pytest.raises(ConfigError, match="no misalatch run.json marker"):
        check_target(target, "train", overwrite=True)
    with pytest.raises(ConfigError, match="not empty"):
        check_target(target, "train")
    assert (target / "config.yaml").read_text() == "mine"


def test_owned_folder_with_a_user_file_is_refused(tmp_path):
    target = _make_run(tmp_path / "run")
    (target / "notes.txt").write_text("mine")
    (target / "data").mkdir()
    with pytest.raises(ConfigError, match=r"did not write \(data/, notes.txt\)"):
        check_target(target, "train", overwrite=True)
    assert (target / "notes.txt").exists()


def test_forged_or_other_kind_markers_are_refused(tmp_path):
    target = _make_run(tmp_path / "run")
    with pytest.raises(ConfigError, match="prepare output"):
        check_target(target, "prepare", overwrite=True)
    (target / MARKER).write_text(json.dumps({"format": "misalatch-run", "version": 1, "kind": "train", "files": "*"}))
    with pytest.raises(ConfigError, match="no misalatch run.json"):
        check_target(target, "train", overwrite=True)


def test_nested_owned_folder_counts_as_ours(tmp_path):
    target = _make_run(tmp_path / "run")
    with claim_output(target / "masks-test", "masks") as out:
        out.write_text("summary.json", "{}")
    assert foreign_entries(target) == []
    (target / "masks-test" / "extra").write_text("user")
    assert foreign_entries(target) == ["masks-test/extra"]


def test_record_written_adds_to_marker(tmp_path):
    target = _make_run(tmp_path / "run")
    (target / "evaluation.json").write_text("{}")
    assert foreign_entries(target) == ["evaluation.json"]
    record_written(target / "evaluation.json")
    assert foreign_entries(target) == []


def test_symlink_and_file_targets_are_refused(tmp_path):
    real = _make_run(tmp_path / "real")
    (tmp_path / "link").symlink_to(real)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="symbolic link"):
        check_target(tmp_path / "link", "train", overwrite=True)
    with pytest.raises(ConfigError, match="is a file"):
        check_target(tmp_path / "file", "train", overwrite=True)
    with pytest.raises(ConfigError, match="is a file"):
        check_target(tmp_path / "file" / "sub", "train")


def test_second_writer_is_stopped_by_the_lock(tmp_path):
    target = tmp_path / "run"
    with claim_output(target, "train") as out:
        out.commit()
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
            with claim_output(target, "train", overwrite=True):
                pass
        with pytest.raises(OutputLockedError):
            with open_output(target, "train"):
                pass
    assert read_marker(target)["complete"] is True


def test_stale_lock_of_dead_process_is_taken_over(tmp_path, caplog):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    target = tmp_path / "run"
    lock_path(target).write_text(json.dumps({"pid": proc.pid, "host": host_id(), "started": "then"}))
    with caplog.at_level("WARNING"):
        with claim_output(target, "train") as out:
            out.write_text("a", "b")
    assert "no longer running" in caplog.text
    assert not lock_path(target).exists()


def test_lock_of_another_host_is_respected(tmp_path):
    target = tmp_path / "run"
    lock_path(target).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "then"}))
    with pytest.raises(OutputLockedError, match="elsewhere"):
        with claim_output(target, "train"):
            pass


def test_stale_staging_of_killed_writer_is_removed_on_next_claim(tmp_path):
    code = ("import os, sys; from misalatch.io.owned import claim_output\n"
            "with claim_output(sys.argv[1], 'train') as out:\n"
            "    out.write_text('a', 'b'); os._exit(9)\n")
    target = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    assert subprocess.run([sys.executable, "-c", code, str(target)], env=env).returncode == 9
    assert any(".mlstage-" in p.name for p in tmp_path.iterdir())
    with claim_output(target, "train") as out:
        out.write_text("c", "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_open_output_resumes_in_place(tmp_path):
    target = _make_run(tmp_path / "run")
    with open_output(target, "train") as out:
        assert out.path == target
        out.write_text("resume.json", "{}")
    assert "resume.json" in read_marker(target)["files"]
    with pytest.raises(ConfigError, match="no valid run.json"):
        (tmp_path / "plain").mkdir()
        with open_output(tmp_path / "plain", "train"):
            pass


def test_remove_drops_a_file_and_its_marker_entry_but_refuses_foreign_files(tmp_path):
    target = _make_run(tmp_path / "run")
    with open_output(target, "train") as out:
        out.write_text("resume.json", "{}")
        out.remove("resume.json")
        (target / "notes.txt").write_text("mine")
        with pytest.raises(ValueError, match="not a file of this output"):
            out.remove("notes.txt")
    assert "resume.json" not in read_marker(target)["files"] and not (target / "resume.json").exists()
    assert (target / "notes.txt").read_text() == "mine"


def test_a_finished_run_lists_exactly_the_files_it_holds(tmp_path):
    """The resume state is deleted at the end of a run; the marker must not list it any more."""
    from misalatch.training.config import TrainConfig
    from misalatch.training.runs import train

    out = tmp_path / "run"
    train(TrainConfig(synthetic_size=(12, 6, 6), text_encoder="learned", hidden_size=8, batch_size=6, max_epochs=1,
                       device="cpu", seeds=(1, 2), out=str(out)))
    listed = set(read_marker(out)["files"])
    held = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "run.json"}
    assert listed == held
    assert not any(name.endswith(("resume.json", "resume.safetensors", "resume.manifest.json")) for name in listed)


def test_a_listed_name_counts_only_for_a_regular_file(tmp_path):
    """A crafted run.json listing a user's folder or a link does not make them misalatch's."""
    target = _make_run(tmp_path / "run")
    (target / "notes").mkdir()
    (target / "notes" / "mine.txt").write_text("mine")
    (tmp_path / "outside").mkdir()
    (target / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    doc = read_marker(target)
    doc["files"] += ["notes", "link", "../outside"]
    (target / MARKER).write_text(json.dumps(doc))
    assert foreign_entries(target) == ["link", "notes/"]
    with pytest.raises(ConfigError, match="did not write"):
        check_target(target, "train", overwrite=True)
    assert (target / "notes" / "mine.txt").read_text() == "mine"


def test_a_replaced_folder_loses_only_what_misalatch_wrote(tmp_path, caplog):
    target = _make_run(tmp_path / "run")
    with caplog.at_level("WARNING"):
        with claim_output(target, "train", overwrite=True) as out:
            out.write_text("new.txt", "n")
            (target / "added.txt").write_text("the user's, written after the check")
    assert sorted(p.name for p in target.iterdir()) == sorted([MARKER, "new.txt"])
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("run.kept-")]
    assert len(kept) == 1 and [p.name for p in kept[0].iterdir()] == ["added.txt"] and "were kept in" in caplog.text


def test_output_never_writes_or_removes_through_a_link(tmp_path):
    from misalatch.errors import MisalatchError

    target = _make_run(tmp_path / "run")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "resume.json").write_text("theirs")
    (target / "seed-1").symlink_to(tmp_path / "outside", target_is_directory=True)
    with open_output(target, "train") as out:
        out._marker["files"].append("seed-1/resume.json")  # as a crafted run.json would list it
        with pytest.raises(MisalatchError, match="symbolic link"):
            out.write_text("seed-1/resume.json", "x")
        with pytest.raises(MisalatchError, match="symbolic link"):
            out.remove("seed-1/resume.json")
    assert (tmp_path / "outside" / "resume.json").read_text() == "theirs"
