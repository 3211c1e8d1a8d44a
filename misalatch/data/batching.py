"""Batches: canonical segments → padded, time-first tensors (DATA.md §1.2).

Each batch is padded to its own longest item. Modalities switched off with ``modalities`` (or
absent from the data) are fed as all-zero sequences of one feature per word step, so the MISA
architecture stays the same while that branch carries no information about the sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from misalatch.data.canonical import Segment
from misalatch.errors import ConfigError, DataFormatError
from misalatch.models.outputs import ModelInputs


@dataclass
class Batch:
    """Model inputs plus what the loop needs around them."""

    inputs: ModelInputs
    labels: torch.Tensor  # (B, 1) float32 (regression) or (B,) int64 (classification)
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class BatchSpec:
    """How to turn segments into model inputs; fixed for a run."""

    text_encoder: str  # bert | glove | vectors
    modalities: str = "tav"
    alignment: str = "word"
    task: str = "regression"
    visual_dim: int = 1  # used for zero-filled (absent or disabled) modalities
    acoustic_dim: int = 1


def _pad_time_first(arrays: Sequence[np.ndarray], width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Stack ``(T_i, d)`` arrays into ``(T_max, B, d)`` with zeros after each length."""
    t_max = max(a.shape[0] for a in arrays)
    out = torch.zeros(t_max, len(arrays), width, dtype=dtype)
    for i, a in enumerate(arrays):
        out[: a.shape[0], i] = torch.from_numpy(np.asarray(a, dtype=np.float32))
    return out


def _pad_batch_first(arrays: Sequence[np.ndarray], value: int) -> torch.Tensor:
    w_max = max(a.shape[0] for a in arrays)
    out = torch.full((len(arrays), w_max), value, dtype=torch.long)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = torch.from_numpy(np.asarray(a, dtype=np.int64))
    return out


def collate(segments: Sequence[Segment], spec: BatchSpec) -> Batch:
    """Pad a list of segments into one ``Batch`` (lengths on the CPU)."""
    if not segments:
        raise ValueError("cannot collate an empty batch")
    ids = [s.id for s in segments]
    kw: dict = {"alignment": spec.alignment}
    if spec.text_encoder == "bert":
        if any(s.bert_ids is None for s in segments):
            raise DataFormatError(f"segment {ids[0]!r}: no BERT token ids; the dataset was not tokenized")
        kw["bert_input_ids"] = _pad_batch_first([s.bert_ids for s in segments], 0)
        kw["bert_attention_mask"] = _pad_batch_first([np.ones_like(s.bert_ids) for s in segments], 0)
        kw["bert_token_type_ids"] = torch.zeros_like(kw["bert_input_ids"])
        wp2word = [s.wp2word if s.wp2word is not None else np.full_like(s.bert_ids, -1) for s in segments]
        kw["bert_wp2word"] = _pad_batch_first(wp2word, -1)
    elif spec.text_encoder == "glove":
        if any(s.text_ids is None for s in segments):
            raise DataFormatError(f"segment {ids[0]!r}: no vocabulary ids; build the vocabulary first")
        kw["text_ids"] = _pad_batch_first([s.text_ids for s in segments], 1).t().contiguous()  # (T, B)
    else:
        if any(s.text_vectors is None for s in segments):
            raise DataFormatError(f"segment {ids[0]!r}: no precomputed word vectors")
        kw["text_vectors"] = _pad_time_first([s.text_vectors for s in segments], segments[0].text_vectors.shape[1])

    if spec.alignment == "token":
        text_len = [len(s.bert_ids) for s in segments]
    else:
        text_len = [s.num_words for s in segments]
    lengths = torch.tensor(text_len, dtype=torch.long)
    for name, attr, width in (("visual", "visual", spec.visual_dim), ("acoustic", "acoustic", spec.acoustic_dim)):
        letter = "v" if name == "visual" else "a"
        use = letter in spec.modalities
        if use and any(getattr(s, attr) is None for s in segments):
            raise DataFormatError(f"segment {ids[0]!r} has no {name} features but modalities={spec.modalities!r}")
        if use:
            arrays = [getattr(s, attr) for s in segments]
            seq_len = torch.tensor([a.shape[0] for a in arrays], dtype=torch.long)
            if bool((seq_len == 0).any()):
                raise DataFormatError(f"segment {ids[int((seq_len == 0).nonzero()[0])]!r}: empty {name} sequence")
            kw[name] = _pad_time_first(arrays, arrays[0].shape[1])
        else:
            seq_len = lengths
            kw[name] = torch.zeros(int(lengths.max()), len(segments), width)
        if spec.alignment == "none":
            kw[f"lengths_{letter}"] = seq_len
    return Batch(inputs=ModelInputs(lengths=lengths, **kw), labels=collate_labels(segments, spec), ids=ids)


def collate_labels(segments: Sequence[Segment], spec: BatchSpec) -> torch.Tensor:
    """``(B, 1)`` float32 (regression) or ``(B,)`` int64 (classification)."""
    if spec.task == "classification":
        return torch.tensor([int(s.label) for s in segments], dtype=torch.long)
    return torch.tensor([[float(s.label)] for s in segments], dtype=torch.float32)


BATCHING_MODES = ("bucketed", "random")
BUCKET_POOL_BATCHES = 16  # batches per length-sorted pool: wide enough to group lengths, small enough to stay random


def segment_lengths(segments: Sequence[Segment], spec: BatchSpec) -> np.ndarray:
    """Steps each segment costs the recurrent/attention layers: its longest sequence (computed once)."""
    out = np.empty(len(segments), dtype=np.int64)
    for i, s in enumerate(segments):
        text = len(s.bert_ids) if spec.text_encoder == "bert" and s.bert_ids is not None else s.num_words
        steps = [text] + [a.shape[0] for a in (s.visual, s.acoustic) if a is not None]
        out[i] = max(steps)
    return out


def batch_order(
    n: int,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    batching: str = "random",
    lengths: np.ndarray | None = None,
) -> list[np.ndarray]:
    """The index batches of one pass.

    ``random``: one seeded permutation cut into batches (the original's order). ``bucketed``: the
    same permutation cut into pools of ``BUCKET_POOL_BATCHES`` batches, each pool sorted by
    length (stable, so equal lengths stay in random order), cut into batches, and the batches of
    every pool shuffled together: every batch holds similar lengths, so little padding is run.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if batching not in BATCHING_MODES:
        raise ConfigError(f"batching={batching!r} is not one of {', '.join(BATCHING_MODES)}")
    order = torch.randperm(n, generator=generator).numpy() if shuffle else np.arange(n)
    if batching == "random" or not shuffle:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if lengths is None or len(lengths) != n:
        raise ValueError("bucketed batching needs one length per segment")
    pool = batch_size * BUCKET_POOL_BATCHES
    batches: list[np.ndarray] = []
    for start in range(0, n, pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    across = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in across]


def iterate_batches(
    segments: Sequence[Segment],
    spec: BatchSpec,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    max_batches: int | None = None,
    batching: str = "random",
    lengths: np.ndarray | None = None,
) -> Iterator[Batch]:
    """Yield batches in file order, or shuffled with the run's seeded generator (see ``batch_order``)."""
    if batching == "bucketed" and shuffle and lengths is None:
        lengths = segment_lengths(segments, spec)
    for n, idx in enumerate(batch_order(len(segments), batch_size, shuffle=shuffle, generator=generator,
                                        batching=batching, lengths=lengths)):
        if max_batches is not None and n >= max_batches:
            return
        yield collate([segments[i] for i in idx], spec)


def num_batches(n_segments: int, batch_size: int, max_batches: int | None = None) -> int:
    n = -(-n_segments // batch_size)
    return n if max_batches is None else min(n, max_batches)
