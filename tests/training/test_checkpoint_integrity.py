"""Integrity cannot be switched off by deleting a file (issue 17 §2): a run folder without its manifest
is refused by every command that reads one unless --trust-unverified, and every tensor's dtype and
shape is checked against the model the config builds, with or without a manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import misalatch
from misalatch.cli import main as cli_main
from misalatch.errors import CheckpointError
from misalatch.training.checkpoint import best_files, commit_checkpoints
from tests.test_bad_inputs_run import reseal


@pytest.fixture()
def run(tiny_run, tmp_path) -> Path:
    copy = tmp_path / "box" / "run"  # tmp_path/box is the sandbox: nothing outside the run may change there
    shutil.copytree(tiny_run, copy)
    return copy


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error(capsys, argv: list[str]) -> str:
    code = cli_main(["-q", *argv])
    err = capsys.readouterr().err
    assert code == 1, err
    if "--trust-unverified" in argv and "UNVERIFIED" in err:  # the warning line first, then the error
        err = err.split("\n", 1)[1]
    assert err.startswith(f"misalatch {argv[0]}: error: ") and err.count("\n") == 1, err
    return err


def _commands(run: Path) -> dict[str, list[str]]:
    out = run.parent / "out"
    return {
        "evaluate": ["evaluate", str(run), "--device", "cpu"],
        "predict": ["predict", str(run), "--out", str(out / "p.csv"), "--device", "cpu"],
        "masks": ["masks", str(run), "--device", "cpu"],
        "compare": ["compare", str(run)],
        "report": ["report", str(run), "--out", str(run.parent / "r.html")],
        "robustness": ["robustness", str(run), "--out", str(out), "--device", "cpu", "--seeds", "1",
                       "--levels", "0", "1", "--frame-rates", "0", "0.5"],
    }


@pytest.mark.parametrize("command", ["evaluate", "predict", "masks", "compare", "report", "robustness"])
def test_a_run_without_its_manifest_is_refused(run, capsys, command):
    (run / "best.manifest.json").unlink()
    before = _snapshot(run.parent)
    err = _one_error(capsys, _commands(run)[command])
    assert "best.manifest.json: missing" in err and "--trust-unverified" in err
    assert _snapshot(run.parent) == before  # nothing written, moved or deleted


def test_trust_unverified_loads_it_with_a_warning(run, capsys):
    (run / "best.manifest.json").unlink()
    with pytest.raises(CheckpointError, match="cannot be verified"):
        misalatch.load_run(run, device="cpu")
    loaded = misalatch.load_run(run, device="cpu", trust_unverified=True)
    assert loaded.model_name == "misa"
    assert cli_main(["evaluate", str(run), "--device", "cpu", "--trust-unverified"]) == 0
    err = capsys.readouterr().err
    assert "UNVERIFIED" in err
    assert cli_main(["compare", str(run), "--trust-unverified"]) == 0


def test_resume_without_a_manifest_is_refused(run, capsys):
    # a killed run: resume state present, not complete
    from misalatch.io.owned import read_marker

    marker = read_marker(run)
    marker_path = run / "run.json"
    doc = json.loads(marker_path.read_text())
    doc["complete"] = False
    marker_path.write_text(json.dumps(doc))
    assert marker is not None
    (run / "metrics.json").unlink()
    # a resume state for the run (what a killed run holds), then its best manifest removed
    from misalatch.training.checkpoint import ResumeState, resume_files

    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    from misalatch.training.seeding import rng_state

    state = ResumeState(epoch=1, model=None, optimizer=optimizer.state_dict(), best_optimizer=None, best_epoch=1,
                        best_dev_loss=1.0, stopper={}, history=[], rng=rng_state(torch.Generator()))
    commit_checkpoints(run, resume_files(state, best_sha256=None))
    (run / "best.manifest.json").unlink()
    err = _one_error(capsys, ["train", "--resume", str(run)])
    assert "best.manifest.json: missing" in err and "--trust-unverified" in err
    err = _one_error(capsys, ["train", "--trust-unverified"])
    assert "goes with --resume" in err


def test_a_manifest_that_leaves_out_the_weights_is_refused(run, capsys):
    manifest = json.loads((run / "best.manifest.json").read_text())
    del manifest["files"]["best.safetensors"]
    (run / "best.manifest.json").write_text(json.dumps(manifest))
    err = _one_error(capsys, ["evaluate", str(run), "--device", "cpu"])
    assert "does not list best.safetensors" in err


@pytest.mark.parametrize("entry", ["../victim.txt", "/etc/passwd", "best.json/..", "best\x00.json", "x" * 5000])
def test_manifest_entries_are_plain_names_of_the_set(run, capsys, entry):
    (run.parent / "victim.txt").write_text("mine")
    manifest = json.loads((run / "best.manifest.json").read_text())
    manifest["files"][entry] = {"size": 4, "sha256": "0" * 64}
    (run / "best.manifest.json").write_text(json.dumps(manifest))
    before = _snapshot(run.parent)
    err = _one_error(capsys, ["evaluate", str(run), "--device", "cpu"])
    assert "bad entry" in err
    assert _snapshot(run.parent) == before


def _rewrite(run: Path, change) -> None:
    """Replace best.safetensors by ``change(state)``, with a manifest that matches (a crafted consistent set)."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(run / "best.safetensors"))
    save_file(change(dict(state)), str(run / "best.safetensors"))
    reseal(run)


def _first_matrix(state: dict[str, torch.Tensor]) -> str:
    return next(k for k, v in state.items() if v.ndim == 2 and v.shape[0] != v.shape[1] and v.is_floating_point())


@pytest.mark.parametrize("change, needle", [
    (lambda s, k: {**s, k: s[k].to(torch.int8)}, "is I8"),
    (lambda s, k: {**s, k: s[k].to(torch.float16)}, "is F16"),
    (lambda s, k: {**s, k: s[k].t().contiguous()}, "has shape"),
    (lambda s, k: {n: v for n, v in s.items() if n != k}, "is missing"),
    (lambda s, k: {**s, "extra.weight": torch.zeros(3)}, "'extra.weight' is not part of the model"),
])
@pytest.mark.parametrize("manifest", ["resealed", "deleted"])
def test_dtype_and_shape_of_every_tensor(run, capsys, change, needle, manifest):
    from safetensors.torch import load_file

    key = _first_matrix(load_file(str(run / "best.safetensors")))
    _rewrite(run, lambda s: change(s, key))
    flags = []
    if manifest == "deleted":
        (run / "best.manifest.json").unlink()
        flags = ["--trust-unverified"]
    err = _one_error(capsys, ["evaluate", str(run), "--device", "cpu", *flags])
    assert "best.safetensors" in err and needle in err
    if "extra" not in needle:
        assert repr(key) in err
    with pytest.raises(CheckpointError, match="does not match the configured model"):
        misalatch.load_run(run, device="cpu", trust_unverified=True)


def test_consistent_weights_of_another_config_name_the_tensor(run, capsys):
    from misalatch.models.config import MisaConfig
    from misalatch.models.misa import MISA

    sidecar = json.loads((run / "best.json").read_text())
    other = MISA(MisaConfig.from_dict({**sidecar["model_config"], "hidden_size": 6}))
    keep = {k: v for k, v in sidecar.items() if k not in ("format", "format_version", "created", "versions")}
    commit_checkpoints(run, best_files("best", other.state_dict(), keep))
    err = _one_error(capsys, ["evaluate", str(run), "--device", "cpu"])
    assert "has shape" in err and "the model expects" in err


# ---- property: any manifest, any tensor header swap: exit 0 or one line, nothing outside changes --------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_names = st.one_of(st.sampled_from(["best.safetensors", "best.json", "best.manifest.json", "../victim.txt",
                                    "/tmp/x", "best.json/../../victim.txt", "best.\x00json", "", ".", "..",
                                    "seed-1/best.json", "b" * 300]), st.text(max_size=20))
_entries = st.one_of(st.none(), st.integers(), st.text(max_size=5),
                     st.fixed_dictionaries({"size": st.one_of(st.integers(-1, 10**7), st.text(max_size=3)),
                                            "sha256": st.one_of(st.text(max_size=64), st.just("0" * 64))}))
_manifests = st.one_of(
    st.none(),  # deleted
    st.dictionaries(st.sampled_from(["format", "version", "name", "files"]),
                    st.one_of(st.none(), st.text(max_size=10), st.integers(), st.dictionaries(_names, _entries, max_size=4))),
    st.builds(lambda files: {"format": "misalatch-checkpoint-set", "version": 1, "name": "best", "files": files},
              st.dictionaries(_names, _entries, min_size=1, max_size=5)),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(manifest=_manifests, trust=st.booleans())
def test_hostile_manifests_never_escape_and_fail_in_one_line(tiny_run, tmp_path_factory, capsys, manifest, trust):
    box = tmp_path_factory.mktemp("box")
    run = box / "run"
    shutil.copytree(tiny_run, run)
    (box / "victim.txt").write_text("mine")
    if manifest is None:
        (run / "best.manifest.json").unlink()
    else:
        (run / "best.manifest.json").write_text(json.dumps(manifest))
    before = _snapshot(box)
    capsys.readouterr()
    code = cli_main(["-q", "evaluate", str(run), "--device", "cpu", "--no-plots", "--out", str(run / "e.json"),
                     *(["--trust-unverified"] if trust else [])])
    err = capsys.readouterr().err.splitlines()
    after = _snapshot(box)
    for own in ("run/e.json", "run/run.json"):  # evaluate's output, recorded in the run's marker
        before.pop(own, None), after.pop(own, None)
    assert after == before  # nothing else changed, inside or outside the run
    assert code in (0, 1)
    if code == 1:
        assert err[-1].startswith("misalatch evaluate: error: ") and len(err) <= 2, err
    files = manifest.get("files") if manifest is not None else None
    if manifest is not None and (not isinstance(files, dict) or "best.safetensors" not in files):
        assert code == 1  # a manifest that does not cover the weights never lets them load
