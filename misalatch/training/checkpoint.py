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


TRUST_HINT = "pass --trust-unverified (load_run(..., trust_unverified=True)) to load it anyway"


def verify_manifest(directory: str | Path, name: str, *, trust_unverified: bool = False) -> dict[str, Any] | None:
    """Check ``<name>.manifest.json`` against the files it names (sizes, sha256).

    A half-committed set of a dead writer is completed first. The manifest must list the set's
    weights and sidecar: deleting it, or a line of it, does not switch the check off. Without a
    manifest the set is refused unless ``trust_unverified`` (then None is returned and a warning
    logged): every misalatch since manifests exist writes one, so a missing one means the folder
    was edited, copied in part, or written by a very old version.
    """
    directory = Path(directory)
    try:
        recover_pending(directory)
    except OSError as err:  # a read-only folder: verification below still catches a mixed set
        log.debug("%s: cannot complete pending checkpoint writes (%s)", directory, err)
    path = directory / f"{name}.manifest.json"
    if not path.exists() and not path.is_symlink():
        if not (directory / f"{name}.json").is_file():
            raise CheckpointError(f"{directory / (name + '.json')}: no checkpoint here (neither {name}.json nor "
                                  f"{path.name}; is this a misalatch run folder?)")
        if not trust_unverified:
            raise CheckpointError(f"{path}: missing, so {name}.safetensors and {name}.json cannot be verified (the "
                                  f"run folder was edited, copied in part or written by a very old misalatch); "
                                  f"{TRUST_HINT}")
        log.warning("%s: no %s; loading UNVERIFIED files (--trust-unverified)", directory, path.name)
        return None
    if path.is_symlink():
        raise CheckpointError(f"{path}: is a symbolic link; a checkpoint manifest is a plain file")
    manifest = _read_json_object(path, "checkpoint manifest")
    files = manifest.get("files")
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict) or not files:
        raise CheckpointError(f"{path}: not a misalatch checkpoint manifest (format {manifest.get('format')!r})")
    unlisted = [n for n in (f"{name}.safetensors", f"{name}.json") if n not in files]
    if unlisted:
        raise CheckpointError(f"{path}: does not list {', '.join(unlisted)}; a manifest covers the whole set "
                              "(it was edited)")
    for fname, entry in files.items():
        plain = isinstance(fname, str) and fname == Path(fname).name and fname not in ("", ".", "..") \
            and "\\" not in fname and "\0" not in fname and fname.startswith(name + ".")
        if not plain or not isinstance(entry, dict):
            raise CheckpointError(f"{path}: bad entry {str(fname)!r:.80}")
        target = directory / fname
        if target.is_symlink():
            raise CheckpointError(f"{target}: is a symbolic link; misalatch reads only plain files inside a run folder")
        if not target.is_file():
            raise CheckpointError(f"{target}: missing (or not a plain file); {path.name} lists it as part of the checkpoint")
        size = target.stat().st_size
        if size != entry.get("size"):
            raise CheckpointError(f"{target}: {size} bytes, but {path.name} says {entry.get('size')!r:.40} (the file is "
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


def load_weights(directory: str | Path, name: str, model: nn.Module, *, verify: bool = True,
                 trust_unverified: bool = False, reference: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """Load ``<name>.safetensors`` strictly (manifest verified first); differences are reported by name.

    ``reference`` (the sidecar's ``referenced_weights``): those tensors are not in the file; the
    model, built with the installed pretrained encoder, holds them, and they must hash as recorded."""
    if verify:
        verify_manifest(directory, name, trust_unverified=trust_unverified)
    path = Path(directory) / f"{name}.safetensors"
    check_tensor_header(path, model.state_dict(), skip=tuple(reference["keys"]) if reference else ())
    state = fill_referenced(_load_tensors(path), reference, model, Path(directory) / f"{name}.json")
    load_state_checked(model, state, str(path))
    return state


# safetensors' dtype names (the file header) for the dtypes a model holds
_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
              torch.int8: "I8", torch.uint8: "U8", torch.int16: "I16", torch.int32: "I32", torch.int64: "I64",
              torch.bool: "BOOL"}


def _header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Name -> (dtype, shape) of every tensor of a safetensors file, from its header (nothing else is read)."""
    from safetensors import safe_open

    if path.is_symlink() or not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            out = {}
            for key in handle.keys():
                piece = handle.get_slice(key)
                out[key] = (str(piece.get_dtype()), tuple(int(n) for n in piece.get_shape()))
            return out
    except Exception as err:  # safetensors raises its own error types (and Rust panics) for damaged files
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(err)[:200]}); it is truncated or "
                              "garbled") from err


def tensor_problems(expected: dict[str, tuple[str, tuple[int, ...]]],
                    found: dict[str, tuple[str, tuple[int, ...]]]) -> list[str]:
    """What differs between two ``name -> (dtype, shape)`` maps, one phrase per tensor (missing first)."""
    problems = [f"tensor {k!r} is missing" for k in expected if k not in found]
    problems += [f"tensor {k!r} is not part of the model" for k in found if k not in expected]
    for key, (dtype, shape) in expected.items():
        if key not in found:
            continue
        got_dtype, got_shape = found[key]
        if got_dtype != dtype:
            problems.append(f"tensor {key!r} is {got_dtype} {list(got_shape)}, the model expects {dtype} {list(shape)}")
        elif got_shape != shape:
            problems.append(f"tensor {key!r} has shape {list(got_shape)}, the model expects {list(shape)}")
    return problems


def expected_tensors(state: dict[str, torch.Tensor]) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {k: (_ST_DTYPES.get(v.dtype, str(v.dtype)), tuple(v.shape)) for k, v in state.items()}


def _problem_line(source: str, problems: list[str], what: str = "the configured model") -> str:
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return (f"{source}: does not match {what} (weights of another configuration, or an edited file): "
            f"{'; '.join(problems[:3])}{more}")


def check_tensor_header(path: Path, own: dict[str, torch.Tensor], *, skip: tuple[str, ...] = ()) -> None:
    """Every tensor of ``path`` has the dtype and shape of the model's ``own`` state (names in ``skip``
    are not in the file: they are referenced, see ``split_referenced``), checked from the file's
    header before any tensor is loaded. One CheckpointError naming the file and the first tensors."""
    expected = expected_tensors({k: v for k, v in own.items() if k not in skip})
    problems = tensor_problems(expected, _header(path))
    if problems:
        raise CheckpointError(_problem_line(str(path), problems))


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` with missing, unexpected, mis-typed and mis-shaped tensors named in one CheckpointError."""
    problems = tensor_problems(expected_tensors(model.state_dict()), expected_tensors(state))
    if problems:
        raise CheckpointError(_problem_line(source, problems))
    model.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------------------------
# frozen, unmodified pretrained weights: referenced by name and sha256, not copied
# ----------------------------------------------------------------------------------------------
REFERENCED = "referenced_weights"  # the sidecar field


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of ``tensors`` (sorted by name): what a referenced
    set of weights must hash to when it is taken from the installed encoder again."""
    import hashlib

    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}\0{tensor.dtype}\0{list(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def pretrained_module_prefix(model: nn.Module) -> str | None:
    """The state-dict prefix of the model's pretrained text encoder (a Hugging Face model), if any."""
    from transformers import PreTrainedModel

    for name, module in model.named_modules():
        if isinstance(module, PreTrainedModel) and name:
            return name + "."
    return None


def split_referenced(state: dict[str, torch.Tensor], pretrained: dict[str, torch.Tensor] | None,
                     encoder: str, cache: dict[frozenset[str], str] | None = None
                     ) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """``state`` without the tensors still equal to the ``pretrained`` ones (a frozen encoder, or its
    frozen layers), and the sidecar record that names them: the encoder, the keys and their digest.
    Nothing is referenced when every pretrained tensor was trained (or there is none)."""
    if not pretrained:
        return state, None
    same = sorted(k for k, v in pretrained.items() if k in state and state[k].dtype == v.dtype
                  and state[k].shape == v.shape and torch.equal(state[k].detach().cpu(), v.detach().cpu()))
    if not same:
        return state, None
    key = frozenset(same)
    digest = (cache or {}).get(key) or weights_digest({k: pretrained[k] for k in same})
    if cache is not None:
        cache[key] = digest
    kept = {k: v for k, v in state.items() if k not in key}
    return kept, {"encoder": encoder, "keys": same, "sha256": digest}


def check_reference(record: Any, path: Path) -> dict[str, Any] | None:
    """The sidecar's ``referenced_weights`` record, type-checked (None when the weights are all in the file)."""
    if record is None:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("encoder"), str) \
            or not isinstance(record.get("keys"), list) or not all(isinstance(k, str) for k in record["keys"]) \
            or not isinstance(record.get("sha256"), str) or len(record["sha256"]) != 64:
        raise CheckpointError(f"{path}: field {REFERENCED!r} must be an object with encoder, keys and sha256")
    return record


def fill_referenced(state: dict[str, torch.Tensor], record: dict[str, Any] | None, model: nn.Module,
                    path: Path) -> dict[str, torch.Tensor]:
    """``state`` completed with the referenced tensors of ``model`` (built with the installed
    pretrained encoder), after checking that they hash to what the run recorded."""
    if record is None:
        return state
    own = model.state_dict()
    missing = [k for k in record["keys"] if k not in own]
    if missing:
        raise CheckpointError(f"{path}: references tensors the model does not have ({missing[:3]})")
    overlap = [k for k in record["keys"] if k in state]
    if overlap:
        raise CheckpointError(f"{path}: tensor {overlap[0]!r} is both stored and referenced")
    referenced = {k: own[k] for k in record["keys"]}
    digest = weights_digest(referenced)
    if digest != record["sha256"]:
        raise CheckpointError(
            f"{path}: the run references the frozen weights of text encoder {record['encoder']!r} (sha256 "
            f"{record['sha256'][:12]}…), but the encoder installed here differs (sha256 {digest[:12]}…); install the "
            "encoder the run was trained with")
    return {**state, **referenced}


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
    source: str = ""  # the file it was read from, for error messages


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


def load_resume_state(directory: str | Path, *, trust_unverified: bool = False) -> ResumeState:
    """The resumable state of ``directory`` with the best weights it refers to (both verified;
    ``trust_unverified`` admits sets without a manifest)."""
    from misalatch.training.seeding import join_rng_state

    directory = Path(directory)
    verify_manifest(directory, "resume", trust_unverified=trust_unverified)
    path = directory / "resume.json"
    doc = _read_json_object(path, "resume state")
    if doc.get("format") != RESUME_FORMAT or doc.get("version") != RESUME_VERSION:
        raise CheckpointError(f"{path}: not a misalatch resume state (format {doc.get('format')!r})")
    tensors = _load_tensors(directory / "resume.safetensors")
    verify_manifest(directory, "best", trust_unverified=trust_unverified)
    best_path = directory / "best.safetensors"
    if doc.get("best_sha256") is not None and sha256_file(best_path) != doc["best_sha256"]:
        raise CheckpointError(f"{best_path}: is not the best checkpoint {path.name} refers to (epoch "
                              f"{doc.get('best_epoch')}); the run folder was modified")
    best = _load_tensors(best_path)
    check_resume_document(doc, tensors, path)
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
            source=str(path),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{path}: incomplete resume state ({type(err).__name__}: {err})") from err
    return state


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_resume_document(doc: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path) -> None:
    """The types and sizes of a resume state that do not depend on the model: counters, history,
    optimiser layout, RNG states. A crafted or mismatched state is one CheckpointError naming the
    field (never a traceback from torch, NumPy or ``random`` when it is put back)."""

    def bad(field_name: str, expected: str) -> CheckpointError:
        value = doc.get(field_name, "(missing)") if "." not in field_name and "[" not in field_name else "…"
        return CheckpointError(f"{path}: field {field_name!r} must be {expected} (found {type(value).__name__} "
                               f"{value!r:.40}); the resume state was edited or is from another version")

    epoch = doc.get("epoch")
    if not _is_int(epoch) or not 1 <= epoch <= 10**7:
        raise bad("epoch", "an integer >= 1")
    if not _is_int(doc.get("best_epoch")) or not 0 <= doc["best_epoch"] <= epoch:
        raise bad("best_epoch", f"an integer in 0..{epoch}")
    if not _is_number(doc.get("best_dev_loss")) or math.isnan(doc["best_dev_loss"]):
        raise bad("best_dev_loss", "a number")
    for name in ("model_is_best", "stopped"):
        if not isinstance(doc.get(name), bool):
            raise bad(name, "true or false")
    stopper = doc.get("stopper")
    if not isinstance(stopper, dict) or not _is_number(stopper.get("best")) \
            or not all(_is_int(stopper.get(k)) for k in ("left", "trials_left")) \
            or "epoch" in stopper and not _is_int(stopper["epoch"]):
        raise bad("stopper", "an object with best (number), left, trials_left and epoch (integers)")
    history = doc.get("history")
    if not isinstance(history, list) or len(history) != epoch:
        raise bad("history", f"a list of {epoch} rows (one per epoch)")
    for i, row in enumerate(history):
        if not isinstance(row, dict) or set(row) != set(history[0]) or row.get("epoch") != i + 1 \
                or not isinstance(row.get("improved"), bool) or not _is_number(row.get("dev_loss")) \
                or not all(isinstance(v, (int, float, bool)) for v in row.values()):
            raise CheckpointError(f"{path}: history row {i + 1} must be an object of numbers with the keys of row 1 "
                                  f"(epoch {i + 1}, improved, dev_loss, ...); the resume state was edited")
    for name in ("optimizer", "best_optimizer"):
        opt = doc.get(name)
        if opt is None and name == "best_optimizer":
            continue
        if not isinstance(opt, dict) or not isinstance(opt.get("param_groups"), list) \
                or not all(isinstance(g, dict) for g in opt["param_groups"]) or not isinstance(opt.get("scalars"), dict) \
                or not isinstance(opt.get("indices"), list) or not all(_is_int(i) and i >= 0 for i in opt["indices"]):
            raise bad(name, "an optimiser state (param_groups, scalars, indices)")
    prefixes = {"optim": doc["optimizer"]["indices"],
                "best_optim": (doc.get("best_optimizer") or {}).get("indices", [])}
    for key in tensors:
        head, _, rest = key.partition(".")
        if head in prefixes:
            index, _, leaf = rest.partition(".")
            if not index.isdigit() or int(index) not in prefixes[head] or not leaf:
                raise CheckpointError(f"{path.with_suffix('.safetensors')}: tensor {key!r:.80} is not part of the "
                                      "optimiser state its resume.json describes")
        elif head not in ("model", "rng"):
            raise CheckpointError(f"{path.with_suffix('.safetensors')}: unexpected tensor {key!r:.80}")
    _check_rng(doc.get("rng"), {k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}, path)
    if doc.get("scheduler") is not None and not isinstance(doc["scheduler"], dict):
        raise bad("scheduler", "an object or null")
    if doc.get("extra") is not None and not isinstance(doc["extra"], dict):
        raise bad("extra", "an object or null")


def _check_rng(doc: Any, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """The RNG states of a resume state have the sizes and types of this Python, NumPy and torch."""
    import random

    import numpy as np

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: RNG state {what}; the resume state was edited or written by an "
                               "incompatible version")

    if not isinstance(doc, dict) or not isinstance(doc.get("python"), list) or len(doc["python"]) != 2 \
            or not isinstance(doc.get("numpy"), list) or len(doc["numpy"]) != 4 \
            or not _is_int(doc.get("cuda_devices")) or not 0 <= doc["cuda_devices"] <= 1024:
        raise bad("'rng' must be an object with python [2 values], numpy [4 values] and cuda_devices")
    version, gauss = doc["python"]
    if version != random.getstate()[0] or not (gauss is None or _is_number(gauss)):
        raise bad(f"python: version {version!r:.20} is not {random.getstate()[0]}")
    kind, pos, has_gauss, cached = doc["numpy"]
    if kind != "MT19937" or not _is_int(pos) or not 0 <= pos <= 624 or has_gauss not in (0, 1) \
            or not _is_number(cached):
        raise bad("numpy: expected ['MT19937', position 0..624, 0|1, number]")
    expected = {"python_mt": (torch.int64, (len(random.getstate()[1]),)),
                "numpy_keys": (torch.int64, tuple(np.random.get_state()[1].shape)),
                "torch": (torch.uint8, tuple(torch.get_rng_state().shape)),
                "generator": (torch.uint8, tuple(torch.Generator().get_state().shape))}
    for i in range(doc["cuda_devices"]):
        expected[f"cuda{i}"] = (torch.uint8, tensors[f"cuda{i}"].shape if f"cuda{i}" in tensors else (-1,))
    for name, (dtype, shape) in expected.items():
        tensor = tensors.get(name)
        if tensor is None:
            raise bad(f"rng.{name} is missing")
        if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape) or tensor.ndim != 1:
            raise bad(f"rng.{name} is {str(tensor.dtype).replace('torch.', '')} {list(tensor.shape)}, expected "
                      f"{str(dtype).replace('torch.', '')} {list(shape)}")
    for name in ("python_mt", "numpy_keys"):
        values = tensors[name]
        if int(values.min()) < 0 or int(values.max()) >= 2**32:
            raise bad(f"rng.{name} holds values outside 0..2**32-1")
    if int(tensors["python_mt"][-1]) > 624:
        raise bad("rng.python_mt: position outside 0..624")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise bad(f"holds unexpected tensors {extra[:3]}")


def check_resume_against(state: ResumeState, model: nn.Module, optimizer: torch.optim.Optimizer,
                         scheduler: Any = None) -> None:
    """A resume state fits the model, optimiser and scheduler the run's config builds: every weight's
    dtype and shape, the optimiser's parameter groups and each moment's shape, the scheduler's fields.
    Checked before anything is put back, so a mismatch is one CheckpointError, not a torch traceback."""
    source = state.source or "resume state"
    own = expected_tensors(model.state_dict())
    for what, weights in (("current weights", state.model), ("best weights", state.best_model)):
        if weights is not None:
            problems = tensor_problems(own, expected_tensors(weights))
            if problems:
                raise CheckpointError(_problem_line(f"{source} ({what})", problems))
    fresh = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for name, opt in (("optimizer", state.optimizer), ("best_optimizer", state.best_optimizer)):
        if opt is None:
            continue
        groups = opt.get("param_groups")
        if not isinstance(groups, list) or len(groups) != len(fresh["param_groups"]):
            raise CheckpointError(f"{source}: {name} has {len(groups) if isinstance(groups, list) else '?'} parameter "
                                  f"groups, the model's optimiser {len(fresh['param_groups'])}")
        for got, want in zip(groups, fresh["param_groups"]):
            if not isinstance(got.get("params"), list) or got["params"] != list(want["params"]):
                raise CheckpointError(f"{source}: {name} parameter group does not match the optimiser of this model "
                                      f"(params {str(got.get('params'))[:40]}, keys {sorted(got)[:8]})")
            for key, value in got.items():
                if key == "params" or key not in want:  # a field of another torch version: torch ignores it
                    continue
                ref = want[key]
                ok = (isinstance(value, bool) == isinstance(ref, bool) and
                      (_is_number(value) and math.isfinite(value) if _is_number(ref) else
                       isinstance(value, (list, tuple)) and len(value) == len(ref) and all(_is_number(v) for v in value)
                       if isinstance(ref, (list, tuple)) else
                       value is None or isinstance(value, bool) if ref is None else value == ref))
                if not ok:
                    raise CheckpointError(f"{source}: {name} field {key!r} = {value!r:.40} does not fit Adam "
                                          f"(expected like {ref!r:.40})")
        for index, per_param in opt["state"].items():
            if not _is_int(index) or not 0 <= index < len(params) or not isinstance(per_param, dict):
                raise CheckpointError(f"{source}: {name} has state for parameter {index!r:.20}, the model has "
                                      f"{len(params)} trainable parameters")
            param = params[index]
            for key, value in per_param.items():
                if key == "step":
                    if not (isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point()
                            or _is_number(value)):
                        raise CheckpointError(f"{source}: {name} state {index}.step must be one number")
                elif not isinstance(value, torch.Tensor) or value.dtype != param.dtype \
                        or tuple(value.shape) != tuple(param.shape):
                    found = (f"{str(value.dtype).replace('torch.', '')} {list(value.shape)}"
                             if isinstance(value, torch.Tensor) else type(value).__name__)
                    raise CheckpointError(f"{source}: {name} state {index}.{key} is {found}, the parameter is "
                                          f"{str(param.dtype).replace('torch.', '')} {list(param.shape)} (an "
                                          "optimiser state of another model or configuration)")
    if scheduler is not None and state.scheduler is not None:
        want = scheduler.state_dict()
        if set(state.scheduler) != set(want):
            raise CheckpointError(f"{source}: scheduler state has the fields {sorted(state.scheduler)[:6]}, not those "
                                  f"of ReduceLROnPlateau")
        for key, ref in want.items():
            value = state.scheduler[key]
            if type(value) is not type(ref) and not (_is_number(value) and _is_number(ref)) \
                    or isinstance(ref, list) and (len(value) != len(ref) or not all(_is_number(v) for v in value)):
                raise CheckpointError(f"{source}: scheduler field {key!r} = {value!r:.40} (expected like {ref!r:.40})")


RESUME_FILES = ("resume.manifest.json", "resume.json", "resume.safetensors")  # manifest first: the set is then gone


def remove_resume_state(directory: str | Path, output: Any = None, sub: str = "") -> None:
    """Drop the resumable state of a finished run; through ``output`` (an owned folder being
    written, the files under ``sub``) they also leave its marker's list of files."""
    for name in RESUME_FILES:
        if output is not None and sub + name in output.marker["files"]:
            output.remove(sub + name)
        else:
            (Path(directory) / name).unlink(missing_ok=True)
