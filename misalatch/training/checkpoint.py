"""Toolkit checkpoints: safetensors weights + a JSON sidecar + a manifest (DATA.md §9.3).

A checkpoint is a SET of files committed as one unit (``misalatch.io.atomic.commit_files``)::

    best.safetensors        the model's weights
    best.json               the sidecar: format, config, model_config, epoch, metrics, versions
    best.manifest.json      written last: the set's files with their sizes and sha256

and, while a run is in progress, its resumable state (``ResumeState``)::

    resume.safetensors      current weights (unless they are the best ones), optimiser moments,
                            RNG states; the best epoch's optimiser moments when ``trials > 1``
    resume.json             epoch, early-stopping counters, learning rate, history, RNG states
    resume.manifest.json

Both sets of one epoch go into ONE commit, so the best weights, the sidecar and the optimiser state
are always from the same epoch. Loading verifies the manifest (sizes and sha256) before anything
is read, and every problem — a truncated or garbled file, weights of another configuration, a
sidecar that is not an object or lacks a field — is a ``CheckpointError`` naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from misalatch.errors import CheckpointError
from misalatch.io.atomic import atomic_write_bytes, atomic_write_text, commit_files, recover_pending, sha256_file

log = logging.getLogger(__name__)

FORMAT = "misalatch-checkpoint"
FORMAT_VERSION = 1
MANIFEST_FORMAT = "misalatch-checkpoint-set"
RESUME_FORMAT = "misalatch-resume"
RESUME_VERSION = 1
MAX_SIDECAR_BYTES = 16 << 20  # a sidecar is a few kB; refuse to parse a huge one

Register = Callable[[str], Any]
Files = dict[str, bytes]

__all__ = [
    "CheckpointError", "ResumeState", "atomic_write_bytes", "atomic_write_text", "best_files", "commit_checkpoints",
    "load_resume_state", "load_weights", "read_sidecar", "remove_resume_state", "resume_files", "save_checkpoint",
    "verify_manifest",
]


def package_versions() -> dict[str, str]:
    import numpy
    import transformers

    import misalatch

    return {
        "misalatch": misalatch.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
    }


def _tensor_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})


def _json_bytes(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2, default=_jsonable) + "\n").encode("utf-8")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _manifest(name: str, files: Files, epoch: int | None) -> bytes:
    import hashlib

    return _json_bytes({
        "format": MANIFEST_FORMAT, "version": 1, "name": name, "epoch": epoch,
        "files": {n: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for n, data in files.items()},
    })


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------
def best_files(name: str, model_state: dict[str, torch.Tensor], sidecar: dict[str, Any]) -> Files:
    """The files of a weights checkpoint ``<name>.*`` (manifest included), in memory."""
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": package_versions(), **sidecar}
    files = {f"{name}.safetensors": _tensor_bytes(model_state), f"{name}.json": _json_bytes(meta)}
    files[f"{name}.manifest.json"] = _manifest(name, files, sidecar.get("epoch"))
    return files


def commit_checkpoints(directory: str | Path, *sets: Files, register: Register | None = None) -> None:
    """Commit several checkpoint sets as ONE unit (manifests renamed into place last)."""
    files: Files = {}
    for one in sets:
        files.update(one)
    order = sorted(files, key=lambda n: (n.endswith(".manifest.json"), n))
    commit_files(directory, files, order=order, register=register)


def save_checkpoint(directory: str | Path, name: str, model: nn.Module, *, sidecar: dict[str, Any],
                    register: Register | None = None) -> Path:
    """Write the set ``<name>.safetensors`` + ``<name>.json`` + ``<name>.manifest.json`` as one unit."""
    commit_checkpoints(directory, best_files(name, model.state_dict(), sidecar), register=register)
    return Path(directory) / f"{name}.safetensors"


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------
def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no {what} (is this a misalatch run folder?)")
    if path.stat().st_size > MAX_SIDECAR_BYTES:
        raise CheckpointError(f"{path}: {path.stat().st_size} bytes is far too large for a {what}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: {what} is not valid JSON ({err})") from err
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path}: {what} must be a JSON object, found a {type(doc).__name__}")
    return doc


def verify_manifest(directory: str | Path, name: str) -> dict[str, Any] | None:
    """Check ``<name>.manifest.json`` against the files it names (sizes, sha256).

    A half-committed set of a dead writer is completed first. Returns the manifest, or None for a
    checkpoint written before manifests existed (logged).
    """
    directory = Path(directory)
    try:
        recover_pending(directory)
    except OSError as err:  # a read-only folder: verification below still catches a mixed set
        log.debug("%s: cannot complete pending checkpoint writes (%s)", directory, err)
    path = directory / f"{name}.manifest.json"
    if not path.exists():
        if (directory / f"{name}.json").is_file():
            log.warning("%s: no %s (written by an older misalatch); the files are not verified", directory, path.name)
            return None
        raise CheckpointError(f"{path}: no checkpoint manifest (is this a misalatch run folder?)")
    manifest = _read_json_object(path, "checkpoint manifest")
    files = manifest.get("files")
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict) or not files:
        raise CheckpointError(f"{path}: not a misalatch checkpoint manifest (format {manifest.get('format')!r})")
    for fname, entry in files.items():
        target = directory / str(fname)
        if "/" in str(fname) or not isinstance(entry, dict):
            raise CheckpointError(f"{path}: bad entry {fname!r}")
        if not target.is_file():
            raise CheckpointError(f"{target}: missing; {path.name} lists it as part of the checkpoint")
        size = target.stat().st_size
        if size != entry.get("size"):
            raise CheckpointError(f"{target}: {size} bytes, but {path.name} says {entry.get('size')} (the file is "
                                  "truncated or was replaced; the checkpoint cannot be trusted)")
        if sha256_file(target) != entry.get("sha256"):
            raise CheckpointError(f"{target}: sha256 does not match {path.name} (the file was modified or garbled)")
    return manifest


def _require(meta: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in meta:
        raise CheckpointError(f"{path}: field {key!r} is missing")
    value = meta[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise CheckpointError(f"{path}: field {key!r} must be {names}, found {type(value).__name__} {value!r:.60}")
    return value


def read_sidecar(directory: str | Path, name: str) -> dict[str, Any]:
    """The sidecar ``<name>.json``, with its format and the fields every loader needs checked."""
    path = Path(directory) / f"{name}.json"
    meta = _read_json_object(path, "checkpoint sidecar")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {meta.get('format_version')!r} is not supported (expected {FORMAT_VERSION})"
        )
    _require(meta, "config", dict, path)
    _check_model_config(_require(meta, "model_config", dict, path), path, str(meta.get("model", "misa")))
    return meta


# bounds far above any real model, far below an allocation that takes the machine down
_MODEL_LIMITS = {"hidden_size": 1 << 14, "text_input_size": 1 << 15, "visual_size": 1 << 16, "acoustic_size": 1 << 16,
                 "vocab_size": 1 << 23, "num_classes": 1 << 12, "cmd_moments": 64}


def _check_model_config(values: dict[str, Any], path: Path, model: str = "misa") -> None:
    """Types and sizes of ``model_config`` from a sidecar, checked against the config class of the
    model the sidecar names, before a model is allocated."""
    from misalatch.errors import ConfigError
    from misalatch.models.registry import get_model

    try:
        config_class = get_model(model).config_class
    except ConfigError as err:
        raise CheckpointError(f"{path}: field 'model': {err}") from err
    for f in dataclasses.fields(config_class):
        if f.name not in values or f.name == "bert_config":
            continue
        value, default = values[f.name], f.default
        expected: tuple[type, ...] = (int, float) if isinstance(default, float) else (type(default),)
        if isinstance(value, bool) and not isinstance(default, bool) or not isinstance(value, expected):
            raise CheckpointError(f"{path}: model_config.{f.name} must be {type(default).__name__}, "
                                  f"found {type(value).__name__} {value!r:.60}")
        limit = _MODEL_LIMITS.get(f.name)
        if limit is not None and not 0 <= value <= limit:
            raise CheckpointError(f"{path}: model_config.{f.name} = {value} is outside 0..{limit}")
        if isinstance(value, float) and not math.isfinite(value):
            raise CheckpointError(f"{path}: model_config.{f.name} = {value} is not finite")
    bert = values.get("bert_config")
    if bert is not None:
        if not isinstance(bert, dict):
            raise CheckpointError(f"{path}: model_config.bert_config must be an object or null")
        for key, limit in (("hidden_size", 1 << 14), ("num_hidden_layers", 256), ("intermediate_size", 1 << 16),
                           ("vocab_size", 1 << 22), ("max_position_embeddings", 1 << 16), ("num_attention_heads", 1024)):
            value = bert.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= limit):
                raise CheckpointError(f"{path}: model_config.bert_config.{key} = {value!r:.60} is not an integer "
                                      f"in 1..{limit}")


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err}); it is truncated or garbled") from err


def load_weights(directory: str | Path, name: str, model: nn.Module, *, verify: bool = True) -> dict[str, torch.Tensor]:
    """Load ``<name>.safetensors`` strictly (manifest verified first); differences are reported by name."""
    if verify:
        verify_manifest(directory, name)
    path = Path(directory) / f"{name}.safetensors"
    state = _load_tensors(path)
    load_state_checked(model, state, str(path))
    return state


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` with missing, unexpected and mis-shaped tensors named in one CheckpointError."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} tensors of another size (file vs model): {'; '.join(shapes[:6])}")
        if missing:
            parts.append(f"missing {missing[:6]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:6]}")
        raise CheckpointError(f"{source}: weights do not match the configured model (weights of another "
                              f"configuration?): {', '.join(parts)}")
    model.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------------------------
# the resumable state of a run in progress
# ----------------------------------------------------------------------------------------------
@dataclass
class ResumeState:
    """Everything ``misalatch.training.loop.fit`` needs to continue after ``epoch`` exactly."""

    epoch: int
    model: dict[str, torch.Tensor] | None  # None: the current weights ARE the best weights
    optimizer: dict[str, Any]  # optimizer.state_dict()
    best_optimizer: dict[str, Any] | None  # kept only when a later restore needs it (trials > 1)
    best_epoch: int
    best_dev_loss: float
    stopper: dict[str, Any]
    history: list[dict[str, Any]]
    rng: dict[str, Any]  # python, numpy, torch, cuda, generator (see training.seeding)
    stopped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the config fingerprint of the run
    best_model: dict[str, torch.Tensor] | None = None  # not written here: it is best.safetensors
    scheduler: dict[str, Any] | None = None  # lr scheduler state_dict (ReduceLROnPlateau: plain numbers)


def _flatten_optimizer(prefix: str, state_dict: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Tensors of an optimiser state_dict into ``tensors``; the rest (param groups, scalars) as JSON."""
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in state_dict["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return {"param_groups": state_dict["param_groups"], "scalars": scalars,
            "indices": [int(i) for i in state_dict["state"]]}


def _unflatten_optimizer(prefix: str, doc: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(i): dict(doc["scalars"].get(str(i), {})) for i in doc["indices"]}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            index, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    groups = [{**g, **({"betas": tuple(g["betas"])} if "betas" in g else {})} for g in doc["param_groups"]]
    return {"state": state, "param_groups": groups}


def resume_files(state: ResumeState, *, best_sha256: str | None) -> Files:
    """The files of the resumable state (manifest included), in memory."""
    from misalatch.training.seeding import split_rng_state

    tensors: dict[str, torch.Tensor] = {}
    if state.model is not None:
        tensors.update({f"model.{k}": v for k, v in state.model.items()})
    optimizer = _flatten_optimizer("optim", state.optimizer, tensors)
    best_optimizer = None if state.best_optimizer is None else _flatten_optimizer("best_optim", state.best_optimizer, tensors)
    rng_json, rng_tensors = split_rng_state(state.rng)
    tensors.update({f"rng.{k}": v for k, v in rng_tensors.items()})
    doc = {"format": RESUME_FORMAT, "version": RESUME_VERSION, "epoch": state.epoch,
           "model_is_best": state.model is None, "optimizer": optimizer, "best_optimizer": best_optimizer,
           "best_epoch": state.best_epoch, "best_dev_loss": state.best_dev_loss, "best_sha256": best_sha256,
           "stopper": state.stopper, "history": state.history, "rng": rng_json, "stopped": state.stopped,
           "extra": state.extra, "scheduler": state.scheduler}
    files = {"resume.safetensors": _tensor_bytes(tensors), "resume.json": _json_bytes(doc)}
    files["resume.manifest.json"] = _manifest("resume", files, state.epoch)
    return files


def has_resume_state(directory: str | Path) -> bool:
    """True when ``directory`` holds a resumable state (or a half-committed one that will complete)."""
    directory = Path(directory)
    if not directory.is_dir():
        return False
    return (directory / "resume.manifest.json").is_file() or any(
        p.name.startswith(".files.mlnext-") for p in directory.iterdir())


def load_resume_state(directory: str | Path) -> ResumeState:
    """The resumable state of ``directory`` with the best weights it refers to (both verified)."""
    from misalatch.training.seeding import join_rng_state

    directory = Path(directory)
    verify_manifest(directory, "resume")
    path = directory / "resume.json"
    doc = _read_json_object(path, "resume state")
    if doc.get("format") != RESUME_FORMAT or doc.get("version") != RESUME_VERSION:
        raise CheckpointError(f"{path}: not a misalatch resume state (format {doc.get('format')!r})")
    tensors = _load_tensors(directory / "resume.safetensors")
    verify_manifest(directory, "best")
    best_path = directory / "best.safetensors"
    if doc.get("best_sha256") is not None and sha256_file(best_path) != doc["best_sha256"]:
        raise CheckpointError(f"{best_path}: is not the best checkpoint {path.name} refers to (epoch "
                              f"{doc.get('best_epoch')}); the run folder was modified")
    best = _load_tensors(best_path)
    try:
        model = None if doc["model_is_best"] else {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        state = ResumeState(
            epoch=int(doc["epoch"]), model=model,
            optimizer=_unflatten_optimizer("optim", doc["optimizer"], tensors),
            best_optimizer=None if doc["best_optimizer"] is None
            else _unflatten_optimizer("best_optim", doc["best_optimizer"], tensors),
            best_epoch=int(doc["best_epoch"]), best_dev_loss=float(doc["best_dev_loss"]),
            stopper=dict(doc["stopper"]), history=list(doc["history"]),
            rng=join_rng_state(doc["rng"], {k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}),
            stopped=bool(doc["stopped"]), extra=dict(doc.get("extra") or {}), best_model=best,
            scheduler=None if doc.get("scheduler") is None else dict(doc["scheduler"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{path}: incomplete resume state ({type(err).__name__}: {err})") from err
    return state


RESUME_FILES = ("resume.manifest.json", "resume.json", "resume.safetensors")  # manifest first: the set is then gone


def remove_resume_state(directory: str | Path, output: Any = None, sub: str = "") -> None:
    """Drop the resumable state of a finished run; through ``output`` (an owned folder being
    written, the files under ``sub``) they also leave its marker's list of files."""
    for name in RESUME_FILES:
        if output is not None and sub + name in output.marker["files"]:
            output.remove(sub + name)
        else:
            (Path(directory) / name).unlink(missing_ok=True)
