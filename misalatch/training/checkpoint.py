"""Toolkit checkpoints: safetensors weights + a JSON sidecar (DATA.md §9.3).

Files are written under a temporary name and moved into place with ``os.replace``, so a crash
never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from misalatch.errors import CheckpointError

FORMAT = "misalatch-checkpoint"
FORMAT_VERSION = 1


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    atomic_write_bytes(path, data)


def optimizer_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam state with flattened keys ``<param>.exp_avg`` / ``.exp_avg_sq`` / ``.step``."""
    names = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    out[f"{names[id(p)]}.{key}"] = value
    return out


def load_optimizer_tensors(model: nn.Module, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    for name, p in model.named_parameters():
        state = {k.rsplit(".", 1)[1]: v.to(p.device) for k, v in tensors.items() if k.rsplit(".", 1)[0] == name}
        if state:
            optimizer.state[p] = state


def save_checkpoint(
    directory: str | Path,
    name: str,
    model: nn.Module,
    *,
    sidecar: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
) -> Path:
    """Write ``<name>.safetensors`` (+ ``<name>.optim.safetensors``) and the ``<name>.json`` sidecar."""
    directory = Path(directory)
    weights = directory / f"{name}.safetensors"
    _save_tensors(model.state_dict(), weights)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": package_versions(), **sidecar}
    if optimizer is not None:
        _save_tensors(optimizer_tensors(model, optimizer), directory / f"{name}.optim.safetensors")
        meta["optimizer"] = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    atomic_write_text(directory / f"{name}.json", json.dumps(meta, indent=2, default=_jsonable))
    return weights


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def read_sidecar(directory: str | Path, name: str) -> dict[str, Any]:
    path = Path(directory) / f"{name}.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint sidecar (is this a misalatch run folder?)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: sidecar is not valid JSON ({err})") from err
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {meta.get('format_version')!r} is not supported (expected {FORMAT_VERSION})"
        )
    return meta


def load_weights(directory: str | Path, name: str, model: nn.Module) -> None:
    """Load ``<name>.safetensors`` strictly; differences are reported by name."""
    from safetensors.torch import load_file

    path = Path(directory) / f"{name}.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    state = load_file(str(path))
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: weights do not match the configured model; missing {result.missing_keys[:8]}, "
            f"unexpected {result.unexpected_keys[:8]}"
        )
