"""One seed for every random source a run touches, and their states for resuming a run."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return the generator that shuffles batches."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random state a run draws from: Python, NumPy, torch CPU, each CUDA device, the batch order."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": generator.get_state(),
    }


def restore_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Put back what ``rng_state`` captured (CUDA states only where the devices exist)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        cuda = list(state["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)
    generator.set_state(state["generator"])


def split_rng_state(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON part and the tensor part of a ``rng_state`` (for safetensors + JSON files)."""
    version, mt, gauss = state["python"]
    kind, keys, pos, has_gauss, cached = state["numpy"]
    tensors = {"torch": state["torch"], "generator": state["generator"],
               "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
               "python_mt": torch.tensor(list(mt), dtype=torch.int64)}
    tensors.update({f"cuda{i}": s for i, s in enumerate(state["cuda"])})
    doc = {"python": [version, gauss], "numpy": [kind, int(pos), int(has_gauss), float(cached)],
           "cuda_devices": len(state["cuda"])}
    return doc, tensors


def join_rng_state(doc: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    version, gauss = doc["python"]
    kind, pos, has_gauss, cached = doc["numpy"]
    return {
        "python": (int(version), tuple(int(v) for v in tensors["python_mt"].tolist()), gauss),
        "numpy": (str(kind), tensors["numpy_keys"].numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)),
        "torch": tensors["torch"],
        "cuda": [tensors[f"cuda{i}"] for i in range(int(doc["cuda_devices"]))],
        "generator": tensors["generator"],
    }
