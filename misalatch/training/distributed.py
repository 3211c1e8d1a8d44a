"""Several processes training one model: ``torchrun --nproc-per-node N -m misalatch train ...``.

Every rank draws the same global batch (the run's seeded generator is the same everywhere) and runs
the model on its contiguous shard of it, wrapped in ``DistributedDataParallel``
(gradients averaged over ranks). MISA's difference and CMD losses are statistics of the whole batch,
so the model's outputs are gathered (differentiably, gradients summed back to their rank) and every
rank computes the losses of the *global* batch: the step is the single-process step of that batch
(up to float rounding and dropout draws, which are per rank). Evaluation shards the split, gathers
the per-sample losses and predictions and computes the metrics once over the whole split, so the
early-stopping decisions are the same on every rank. Only rank 0 writes the run folder.

Nothing here runs unless ``WORLD_SIZE`` > 1: a plain ``misalatch train`` is a single process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

from misalatch.data.batching import Batch, BatchSpec, collate, collate_labels
from misalatch.data.canonical import Segment
from misalatch.errors import ConfigError
from misalatch.models.outputs import PerModality

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job (``rank`` of ``world_size``; ``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """Each rank on its own GPU (``cuda:LOCAL_RANK``); CPU ranks share the CPU."""
        if self.enabled and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def shards(self, n: int) -> list[np.ndarray]:
        """Contiguous index ranges of a batch of ``n``, one per rank, in rank order (sizes differ by ≤ 1)."""
        return np.array_split(np.arange(n), self.world_size)

    def shard(self, n: int) -> np.ndarray:
        return self.shards(n)[self.rank]


SINGLE = Distributed()


def _env_int(name: str) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r}: expected an integer (set by torchrun)") from None


def is_distributed_launch() -> bool:
    """True in a process that torchrun started with more than one process."""
    return "WORLD_SIZE" in os.environ and _env_int("WORLD_SIZE") > 1


def is_main_process() -> bool:
    """False on every torchrun rank but 0 (which alone prints and writes)."""
    return not is_distributed_launch() or _env_int("RANK") == 0


@contextlib.contextmanager
def distributed_job(device: torch.device) -> Iterator[Distributed]:
    """``from_environment`` for the length of a run; the process group it joined is left at the end."""
    joined = is_distributed_launch() and not dist.is_initialized()
    ctx = from_environment(device)
    try:
        yield ctx
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()


def from_environment(device: torch.device) -> Distributed:
    """The job torchrun described in the environment; the process group is joined here (gloo on
    CPU, NCCL on CUDA). A single process when ``WORLD_SIZE`` is unset or 1."""
    if not is_distributed_launch():
        return SINGLE
    ctx = Distributed(rank=_env_int("RANK"), world_size=_env_int("WORLD_SIZE"),
                      local_rank=_env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0)
    if not 0 <= ctx.rank < ctx.world_size:
        raise ConfigError(f"RANK={ctx.rank} is outside 0..WORLD_SIZE-1 ({ctx.world_size - 1})")
    if device.type == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={ctx.local_rank}, but this machine has {torch.cuda.device_count()} "
                              "CUDA device(s): use --nproc-per-node at most that")
        torch.cuda.set_device(ctx.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if not ctx.is_main:  # one copy of the log: rank 0's
        logging.getLogger("misalatch").setLevel(logging.WARNING)
    return ctx


def wrap(model: torch.nn.Module, ctx: Distributed, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel (rank 0's weights broadcast to all), or itself alone."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)  # e.g. an unused modality's encoder


def gather_rows(x: torch.Tensor, sizes: Sequence[int], ctx: Distributed) -> torch.Tensor:
    """Rows ``x[:sizes[rank]]`` of every rank, concatenated in rank order; differentiable (the
    gradient of each row goes back to its rank, summed over the ranks that used it)."""
    import torch.distributed.nn.functional as dnn

    width = max(sizes)
    local = x[: sizes[ctx.rank]]
    if local.shape[0] < width:  # all_gather needs equal shapes: pad, gather, cut
        local = torch.cat([local, local.new_zeros((width - local.shape[0], *local.shape[1:]))])
    with warnings.catch_warnings():
        # deprecated in favour of a private module (torch.distributed._functional_collectives); it
        # is the public autograd-aware gather, and its backward sums gradients as we need
        warnings.simplefilter("ignore", FutureWarning)
        parts = dnn.all_gather(local)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def _batch_tensors(output: Any) -> list[tuple[str, Optional[str], torch.Tensor]]:
    """(field, modality or None, tensor) for every batch-first tensor of a model output; masks
    (time-first, not used by any loss) and losses are left out."""
    found = []
    for f in dataclasses.fields(output):
        value = getattr(output, f.name)
        if isinstance(value, torch.Tensor):
            found.append((f.name, None, value))
        elif isinstance(value, PerModality):
            found.extend((f.name, m, t) for m, t in value.items() if isinstance(t, torch.Tensor))
    return found


def gather_output(output: Any, sizes: Sequence[int], ctx: Distributed) -> Any:
    """The model output of the global batch: every batch-first tensor gathered over ranks, in one
    collective (the tensors are flattened side by side and split again)."""
    parts = _batch_tensors(output)
    flat = torch.cat([t.reshape(t.shape[0], -1).float() for _, _, t in parts], dim=1)
    pieces = gather_rows(flat, sizes, ctx).split([t[0].numel() for _, _, t in parts], dim=1)
    changes: dict[str, Any] = {}
    for (name, modality, t), piece in zip(parts, pieces):
        piece = piece.reshape(-1, *t.shape[1:]).to(t.dtype)
        if modality is None:
            changes[name] = piece
        else:
            changes.setdefault(name, dict(getattr(output, name).items()))[modality] = piece
    for name, value in changes.items():
        if isinstance(value, dict):
            changes[name] = PerModality(**value)
    return dataclasses.replace(output, **changes)


def gather_objects(obj: Any, ctx: Distributed) -> list[Any]:
    """Every rank's ``obj`` (picklable, on the CPU), in rank order."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def local_batch(segments: Sequence[Segment], idx: np.ndarray, spec: BatchSpec,
                ctx: Distributed) -> tuple[Batch, torch.Tensor, list[int]]:
    """This rank's part of the global batch ``idx``: its collated shard, the labels of the whole
    batch and every rank's shard size. A rank whose shard is empty (a last batch smaller than the
    world) runs on one sample of the batch and contributes no rows, so that it still takes part in
    every collective."""
    if not ctx.enabled:
        batch = collate([segments[i] for i in idx], spec)
        return batch, batch.labels, [len(idx)]
    shards = ctx.shards(len(idx))
    mine = idx[shards[ctx.rank]] if len(shards[ctx.rank]) else idx[:1]
    labels = collate_labels([segments[i] for i in idx], spec)
    return collate([segments[i] for i in mine], spec), labels, [len(s) for s in shards]
