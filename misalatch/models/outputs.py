"""Typed model inputs and outputs.

Shapes follow the spec: recurrent tensors are time-first ``(T, B, d)``, BERT tensors batch-first
``(B, W)``, ``lengths`` is an int64 tensor on the CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Iterator, TypeVar

import torch

if TYPE_CHECKING:  # pragma: no cover
    from misalatch.models.encoders import SLSTMOutput

T_ = TypeVar("T_")


@dataclass
class PerModality(Generic[T_]):
    """One value per modality: text ``t``, visual ``v``, acoustic ``a`` (the original's order)."""

    t: T_
    v: T_
    a: T_

    def items(self) -> Iterator[tuple[str, T_]]:
        yield from (("t", self.t), ("v", self.v), ("a", self.a))


@dataclass
class ModelInputs:
    """A batch as the model consumes it (no labels, no ids).

    Text comes in one of three forms, matching ``MisaConfig.text_encoder``: ``text_ids`` (GloVe
    path), ``text_vectors`` (precomputed word vectors) or the ``bert_*`` tensors.
    """

    visual: torch.Tensor  # (T_v, B, d_v)
    acoustic: torch.Tensor  # (T_a, B, d_a)
    lengths: torch.Tensor  # (B,) int64, CPU: text/word lengths (and A/V lengths when aligned)
    text_ids: torch.Tensor | None = None  # (T, B) int64, padded with 1
    text_vectors: torch.Tensor | None = None  # (T, B, d_e)
    bert_input_ids: torch.Tensor | None = None  # (B, W)
    bert_attention_mask: torch.Tensor | None = None  # (B, W)
    bert_token_type_ids: torch.Tensor | None = None  # (B, W)
    bert_wp2word: torch.Tensor | None = None  # (B, W) word index per wordpiece, -1 specials/padding
    lengths_v: torch.Tensor | None = None  # (B,) CPU, only when alignment is "none"
    lengths_a: torch.Tensor | None = None  # (B,) CPU, only when alignment is "none"
    alignment: str = "word"  # word | token | none (DATA.md §1.1)

    @property
    def batch_size(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def visual_lengths(self) -> torch.Tensor:
        return self.lengths if self.lengths_v is None else self.lengths_v

    @property
    def acoustic_lengths(self) -> torch.Tensor:
        return self.lengths if self.lengths_a is None else self.lengths_a

    def pin_memory(self) -> "ModelInputs":
        """A copy with every tensor in page-locked host memory (lengths too: they stay on the CPU)."""
        pinned = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in pinned.items():
            if isinstance(value, torch.Tensor):
                pinned[name] = value.pin_memory()
        return ModelInputs(**pinned)

    def to(self, device: torch.device | str) -> "ModelInputs":
        """Move tensors to ``device``; lengths stay on the CPU (pack_padded_sequence needs them there)."""
        moved = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor) and not f.name.startswith("lengths"):
                value = value.to(device, non_blocking=True)
            moved[f.name] = value
        return ModelInputs(**moved)


@dataclass
class LowLevel:
    """What the feedback masks multiply (MMLATCH.md §4.3): per-modality low-level inputs."""

    text: torch.Tensor  # BERT: embedding output (B, W, d_b); else (T, B, d_e)
    visual: torch.Tensor  # (T_v, B, d_v)
    acoustic: torch.Tensor  # (T_a, B, d_a)


@dataclass
class Encoded:
    """Utterance vectors x_m plus the intermediate sequences feedback sources may read."""

    x: PerModality[torch.Tensor]  # x_t (B, d_b | 4d_e), x_v (B, 4d_v), x_a (B, 4d_a)
    text_hidden: torch.Tensor | None  # BERT last hidden states (B, W, d_b)
    text_slstm: SLSTMOutput | None
    visual_slstm: SLSTMOutput
    acoustic_slstm: SLSTMOutput


@dataclass
class FirstPass:
    """What the model's first pass hands its feedback block (MMLATCH.md §4.2-§4.3): the encoders'
    outputs on the unmasked inputs and, for feedback that reads u_y, the projected utterance vectors."""

    encoded: Encoded
    projected: PerModality[torch.Tensor] | None = None  # u_m (B, H); only when the block reads them


class _LossTerms:
    """Shared by every model's losses dataclass: its scalar terms by name, read cheaply."""

    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self))  # type: ignore[arg-type]

    def as_floats(self) -> dict[str, float]:
        return {name: float(getattr(self, name).detach()) for name in self.names()}

    def stacked(self) -> torch.Tensor:
        """The terms as one float64 tensor in ``names`` order: summed on the device over an
        epoch and read once, so that training never waits for the device at every step."""
        return torch.stack([getattr(self, name).detach().double() for name in self.names()])

    def with_aux_scale(self, scale: float) -> "_LossTerms":
        """The same terms with every term beside the task loss weighted by ``scale`` in ``total``
        (a warm-up of the auxiliary losses; a model with the task loss only is unchanged)."""
        return dataclasses.replace(self, total=self.task + scale * (self.total - self.task))  # type: ignore[arg-type]


@dataclass
class MisaLosses(_LossTerms):
    """The four MISA losses and their weighted sum (MISA.md §9); all scalars."""

    task: torch.Tensor
    diff: torch.Tensor
    sim: torch.Tensor
    recon: torch.Tensor
    total: torch.Tensor


@dataclass
class TaskLosses(_LossTerms):
    """A model whose only loss is the task loss (MMLatch); same seam as ``MisaLosses``."""

    task: torch.Tensor
    total: torch.Tensor


@dataclass
class FeedbackMasks:
    """Combined masks per target modality, in the layout of the masked tensor.

    ``text``: ``(B, W, d_b)`` per wordpiece (``text_layout="wordpiece"``: MISA feedback with BERT,
    1 at [CLS]/[SEP]/padding) or time-first ``(T, B, d)`` (``"time_first"``: one row per text
    step — a word, or a BERT position on token-aligned data); ``visual`` ``(T_v, B, d_v)``;
    ``acoustic`` ``(T_a, B, d_a)``. Evaluation masks lie in [0, 1]; training masks include mask
    dropout (kept entries scaled by 1/(1-p)).
    """

    text: torch.Tensor
    visual: torch.Tensor
    acoustic: torch.Tensor
    text_layout: str = "time_first"  # time_first | wordpiece
    text_lengths: torch.Tensor | None = None  # (B,) CPU: text rows per sample when not inputs.lengths


@dataclass
class MisaOutput:
    """Everything one forward pass computes; nothing is stored on the module.

    ``utt``/``private``/``shared``/``recon`` are ``(B, H)`` per modality (second pass when feedback
    is on); ``prediction`` is ``(B, 1)`` for regression or logits ``(B, C)``.
    """

    prediction: torch.Tensor
    utt: PerModality[torch.Tensor]  # u_m: projection after LayerNorm (reconstruction target)
    private: PerModality[torch.Tensor]
    shared: PerModality[torch.Tensor]
    recon: PerModality[torch.Tensor]
    domain_logits: PerModality[torch.Tensor] | None = None  # (B, 3) each; adversarial similarity only
    masks: FeedbackMasks | None = None  # feedback variants only
    losses: MisaLosses | None = None  # when labels were given
