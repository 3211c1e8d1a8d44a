"""MMLatch top-down feedback inside MISA (MMLATCH.md §4): every variant in one code path.

A first pass of MISA's unimodal encoders gives high-level sources h_y; for every target x and each
of the two other modalities y, a generator G_{y→x} turns h_y into a sigmoid mask of the target's
input width; the two masks of a target are combined (mean, product or max), mapped onto the target's
layout, dropped out in training, and multiply the low-level input before MISA's second pass.

The model runs its own passes: ``MISA`` computes the low-level inputs,
the ``TimeAxes`` (``time_axes``) and its first pass (``FirstPass``), hands them to the
block and applies the masks it gets back. This module never calls into the model.

The variants differ only in what the generators read and which generator they use — they are
arguments of one class, ``FeedbackBlock``, registered by name in ``FEEDBACK``:

==================  ===============================================  ===============================
``feedback``        high-level source h_y                            generator G_{y→x}
==================  ===============================================  ===============================
sequence            per-step first-pass sequences (§4.3)             ``SequenceMaskGenerator``
sequence-mlp        the same after a per-source MLP                  ``SequenceMaskGenerator``
static              pooled first-pass vectors                        ``LinearMaskGenerator``
static-projected    first-pass projected utterance vectors u_y (H)   ``LinearMaskGenerator``
==================  ===============================================  ===============================

Parameter names (MMLATCH.md §4.10): ``feedback.<target>.<source>.lstm.*`` or ``.linear.*`` and
``feedback.mlp.<source>.{linear,norm}.*`` with target, source in ``text``, ``visual``, ``acoustic``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from misalatch.errors import ConfigError
from misalatch.models.config import MisaConfig
from misalatch.models.outputs import FeedbackMasks, FirstPass, LowLevel, ModelInputs
from misalatch.models.registry import Registry
from misalatch.models.resample import resample_time, valid_steps

log = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = ("text", "visual", "acoustic")
SourceKind = Literal["sequence", "pooled", "projected"]
# A test / ablation hook: (target name, combined mask in the target's layout) -> mask to apply.
MaskTransform = Callable[[str, torch.Tensor], torch.Tensor]


def other_modalities(target: str) -> tuple[str, str]:
    """The two sources of ``target`` (the target never drives its own mask)."""
    return tuple(m for m in MODALITIES if m != target)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------
FEEDBACK: Registry[Callable[[MisaConfig], nn.Module]] = Registry("feedback variant")


def build_feedback(config: MisaConfig) -> nn.Module:
    """The feedback block of ``config.feedback`` (``none`` has none: plain MISA)."""
    if config.feedback == "none":
        raise ConfigError("feedback=none is plain MISA and has no feedback block")
    return FEEDBACK.get(config.feedback)(config)


# ----------------------------------------------------------------------------------------------
# small pure functions
# ----------------------------------------------------------------------------------------------
def combine_masks(first: torch.Tensor, second: torch.Tensor, how: str) -> torch.Tensor:
    """m_x from the two source sigmoids: ``mean`` ½(a + b), ``product`` a ⊙ b, ``max`` max(a, b)."""
    if how == "mean":
        return 0.5 * (first + second)
    if how == "product":
        return first * second
    if how == "max":
        return torch.maximum(first, second)
    raise ConfigError(f"mask_combine={how!r} is not one of mean, product, max")


def pool_steps(hidden: torch.Tensor, step: torch.Tensor, n_steps: int) -> torch.Tensor:
    """Mean of ``hidden (B, W, d)`` per step: ``step (B, W)`` gives each position's step (-1: none).

    Returns ``(n_steps, B, d)``; a step without positions (e.g. a word whose wordpieces were all
    truncated) gets a zero vector.
    """
    grid = torch.arange(n_steps, device=hidden.device)
    onehot = (step[:, :, None] == grid[None, None, :]).to(hidden.dtype)  # (B, W, T)
    sums = torch.bmm(onehot.transpose(1, 2), hidden)  # (B, T, d)
    counts = onehot.sum(dim=1).clamp(min=1.0)  # (B, T)
    return (sums / counts[..., None]).transpose(0, 1)


def content_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """``(B, W)`` bool: attended wordpieces other than ``[CLS]`` (first) and ``[SEP]`` (last attended)."""
    attended = attention_mask.bool()
    pos = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    n_att = attended.sum(dim=1, keepdim=True)
    return attended & (pos[None, :] >= 1) & (pos[None, :] < n_att - 1)


@dataclass
class Source:
    """A high-level source h_y: per-step ``(T, B, w)`` with CPU ``lengths``, or pooled ``(B, w)``."""

    value: torch.Tensor
    lengths: torch.Tensor | None = None


@dataclass
class TimeAxes:
    """The step axis of every target (where masks are combined) and, for BERT text, its wordpiece maps.

    ``lengths[m]`` ``(B,)`` CPU step counts, ``total[m]`` the time size of the step axis. For BERT
    text the step axis is words (``word``), BERT positions (``token``) or content wordpieces
    (``none``); ``text_source_step`` gives the step each wordpiece feeds when text is a source,
    ``text_target_step`` the step whose mask each wordpiece takes (-1: mask 1, i.e. ``[CLS]``,
    ``[SEP]``, padding).
    """

    lengths: dict[str, torch.Tensor]
    total: dict[str, int]
    text_source_step: torch.Tensor | None = None  # (B, W) long
    text_target_step: torch.Tensor | None = None  # (B, W) long
    text_content: torch.Tensor | None = None  # (B, W) bool


def time_axes(config: MisaConfig, low: LowLevel, inputs: ModelInputs) -> TimeAxes:
    """Step axes of the three targets for this batch (MMLATCH.md §4.4, §4.6)."""
    lengths = {"visual": inputs.visual_lengths.cpu(), "acoustic": inputs.acoustic_lengths.cpu()}
    total = {"visual": int(low.visual.shape[0]), "acoustic": int(low.acoustic.shape[0])}
    if config.text_encoder != "bert":
        lengths["text"] = inputs.lengths.cpu()
        total["text"] = int(low.text.shape[0])
        return TimeAxes(lengths, total)
    attn = inputs.bert_attention_mask
    if attn is None:
        raise ValueError("feedback with BERT text needs bert_attention_mask")
    content = content_positions(attn)
    pos = torch.arange(attn.shape[1], device=attn.device).expand_as(attn)
    none = torch.full_like(pos, -1)
    if inputs.alignment == "word":
        if inputs.bert_wp2word is None:
            raise ValueError("feedback with BERT text on word-aligned data needs bert_wp2word")
        target = torch.where(content, inputs.bert_wp2word.to(attn.device), none)
        source = target
        text_len = inputs.lengths.cpu()
        if int(target.max()) >= int(text_len.max()):
            raise ValueError("bert_wp2word refers to a word beyond the word lengths")
    elif inputs.alignment == "token":
        source = torch.where(attn.bool(), pos, none)  # every attended position, no pooling
        target = torch.where(content, pos, none)
        text_len = attn.sum(dim=1).cpu()
    elif inputs.alignment == "none":
        target = torch.where(content, pos - 1, none)  # the content wordpieces, compacted
        source = target
        text_len = content.sum(dim=1).cpu().clamp(min=1)
    else:
        raise ValueError(f"unknown alignment {inputs.alignment!r}")
    lengths["text"] = text_len.to(torch.long)
    total["text"] = int(text_len.max())
    return TimeAxes(lengths, total, source.long(), target.long(), content)


# ----------------------------------------------------------------------------------------------
# generators
# ----------------------------------------------------------------------------------------------
class SequenceMaskGenerator(nn.Module):
    """G_{y→x} of the sequence variants: unidirectional 1-layer LSTM(w_y → d_x) + output dropout.

    Runs packed with the source lengths; logits are 0 at padded steps.
    """

    def __init__(self, in_size: int, out_size: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_size, out_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``h (T, B, w_y)`` → logits ``(T, B, d_x)``."""
        packed = pack_padded_sequence(h, lengths.cpu(), enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, total_length=h.shape[0])
        return self.dropout(out)


class LinearMaskGenerator(nn.Module):
    """G_{y→x} of the static variants: Linear(w_y → d_x), no dropout."""

    def __init__(self, in_size: int, out_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_size, out_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h (B, w_y)`` → logits ``(B, d_x)``."""
        return self.linear(h)


class SourceMLP(nn.Module):
    """``sequence-mlp``'s per-source, per-step MLP: Linear(w → w) → GELU → LayerNorm(w)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.activation = nn.GELU()
        self.norm = nn.LayerNorm(width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(self.activation(self.linear(h)))


# ----------------------------------------------------------------------------------------------
# the block
# ----------------------------------------------------------------------------------------------
def source_widths(config: MisaConfig, kind: SourceKind) -> dict[str, int]:
    """Width of h_y per source modality (MMLATCH.md §4.3, §4.7)."""
    if kind == "projected":
        return {m: config.hidden_size for m in MODALITIES}
    text = config.text_input_size if config.text_encoder == "bert" else 2 * config.text_input_size
    return {"text": text, "visual": 2 * config.visual_size, "acoustic": 2 * config.acoustic_size}


def target_widths(config: MisaConfig) -> dict[str, int]:
    """d_x: the width of each masked low-level tensor."""
    return {"text": config.text_input_size, "visual": config.visual_size, "acoustic": config.acoustic_size}


class FeedbackBlock(nn.Module):
    """Mask generators for the three targets; ``forward`` returns the masks, the model applies them.

    Args:
        config: sizes, ``mask_combine``, ``mask_dropout``, ``generator_dropout``,
            ``detach_first_pass``.
        source: ``sequence`` (per-step first-pass sequences, LSTM generators), ``pooled``
            (utterance-level first-pass vectors, Linear generators) or ``projected`` (u_y, Linear).
        mlp: pass per-step sources through a per-source ``SourceMLP`` first (``sequence-mlp``).
    """

    def __init__(self, config: MisaConfig, *, source: SourceKind, mlp: bool = False) -> None:
        super().__init__()
        if mlp and source != "sequence":
            raise ValueError("the source MLP exists for per-step sources only")
        self.source_kind = source
        self.reads_projection = source == "projected"  # the model then hands over u_y too
        self.text_encoder = config.text_encoder
        self.mask_combine = config.mask_combine
        self.mask_dropout = config.mask_dropout
        self.detach_first_pass = config.detach_first_pass
        widths, d = source_widths(config, source), target_widths(config)
        for target in MODALITIES:
            if source == "sequence":
                gens = {s: SequenceMaskGenerator(widths[s], d[target], config.generator_dropout) for s in other_modalities(target)}
            else:
                gens = {s: LinearMaskGenerator(widths[s], d[target]) for s in other_modalities(target)}
            self.add_module(target, nn.ModuleDict(gens))
        self.mlp = nn.ModuleDict({s: SourceMLP(widths[s]) for s in MODALITIES}) if mlp else None

    def generator(self, target: str, source: str) -> nn.Module:
        return self.get_submodule(f"{target}.{source}")

    # --- the steps of MMLATCH.md §4.2, each usable on its own (tests, analysis) ---
    def high_level(self, first_pass: FirstPass, axes: TimeAxes) -> dict[str, Source]:
        """The model's first pass → h_t, h_v, h_a as this variant reads them (§4.3)."""
        first = first_pass.encoded
        bert = self.text_encoder == "bert"
        if self.source_kind == "projected":
            u = first_pass.projected
            if u is None:
                raise ValueError(f"feedback {self.source_kind!r} reads the projected first pass; the model must pass it")
            return {"text": Source(u.t), "visual": Source(u.v), "acoustic": Source(u.a)}
        if self.source_kind == "pooled":
            if bert:
                assert first.text_hidden is not None and axes.text_content is not None
                weights = axes.text_content.to(first.text_hidden.dtype)  # content wordpieces only
                text = (weights[..., None] * first.text_hidden).sum(1) / weights.sum(1, keepdim=True).clamp(min=1.0)
            else:
                assert first.text_slstm is not None
                text = first.text_slstm.final2
            return {"text": Source(text), "visual": Source(first.visual_slstm.final2),
                    "acoustic": Source(first.acoustic_slstm.final2)}
        if bert:
            assert first.text_hidden is not None and axes.text_source_step is not None
            text_seq = pool_steps(first.text_hidden, axes.text_source_step, axes.total["text"])
        else:
            assert first.text_slstm is not None
            text_seq = first.text_slstm.sequence
        return {
            "text": Source(text_seq, axes.lengths["text"]),
            "visual": Source(first.visual_slstm.sequence, axes.lengths["visual"]),
            "acoustic": Source(first.acoustic_slstm.sequence, axes.lengths["acoustic"]),
        }

    def source_masks(self, sources: dict[str, Source], axes: TimeAxes) -> dict[str, dict[str, torch.Tensor]]:
        """σ_{y→x} per target and source: on the target's step axis ``(T_x, B, d_x)``, or ``(B, d_x)`` static."""
        masks: dict[str, dict[str, torch.Tensor]] = {}
        for target in MODALITIES:
            masks[target] = {}
            for name in other_modalities(target):
                src, gen = sources[name], self.generator(target, name)
                if src.lengths is None:
                    masks[target][name] = torch.sigmoid(gen(src.value))
                else:
                    sig = torch.sigmoid(gen(src.value, src.lengths))
                    masks[target][name] = resample_time(sig, src.lengths, axes.lengths[target], axes.total[target])
        return masks

    def to_layout(self, target: str, mask: torch.Tensor, axes: TimeAxes) -> torch.Tensor:
        """A combined mask on the step axis (or static ``(B, d)``) → the masked tensor's layout.

        A/V and sLSTM text: ``(T, B, d)``, 0 at padded steps. BERT text: ``(B, W, d)``, wordpiece j
        takes its step's mask; non-content positions get 1 later (after mask dropout).
        """
        total = axes.total[target]
        valid = valid_steps(axes.lengths[target], total, mask.device)[..., None]  # (T, B, 1)
        if mask.dim() == 2:  # static: one vector per sample, broadcast over time
            mask = mask[None].expand(total, -1, -1)
        mask = torch.where(valid, mask, torch.zeros((), dtype=mask.dtype, device=mask.device))
        if target != "text" or self.text_encoder != "bert":
            return mask
        assert axes.text_target_step is not None
        index = axes.text_target_step.clamp(min=0)[..., None].expand(-1, -1, mask.shape[2])  # (B, W, d)
        return mask.transpose(0, 1).gather(1, index)

    def forward(self, first_pass: FirstPass, axes: TimeAxes) -> FeedbackMasks:
        """Masks per target in the layout of the tensor they multiply (see ``FeedbackMasks``)."""
        sources = self.high_level(first_pass, axes)
        if self.detach_first_pass:
            sources = {m: Source(s.value.detach(), s.lengths) for m, s in sources.items()}
        if self.mlp is not None:
            sources = {m: Source(self.mlp[m](s.value), s.lengths) for m, s in sources.items()}
        per_source = self.source_masks(sources, axes)
        out: dict[str, torch.Tensor] = {}
        for target in MODALITIES:
            first, second = (per_source[target][s] for s in other_modalities(target))
            mask = self.to_layout(target, combine_masks(first, second, self.mask_combine), axes)
            mask = F.dropout(mask, self.mask_dropout, self.training)
            if target == "text" and axes.text_target_step is not None:
                mask = torch.where(axes.text_target_step[..., None] >= 0, mask,
                                   torch.ones((), dtype=mask.dtype, device=mask.device))
            out[target] = mask
        layout = "wordpiece" if axes.text_target_step is not None else "time_first"
        return FeedbackMasks(**out, text_layout=layout)


# ----------------------------------------------------------------------------------------------
# the variants (MMLATCH.md §4.1)
# ----------------------------------------------------------------------------------------------
@FEEDBACK.register("sequence")
def _sequence(config: MisaConfig) -> nn.Module:
    """``master``/``diff_dim``: per-step first-pass sequences, LSTM generators."""
    return FeedbackBlock(config, source="sequence")


@FEEDBACK.register("sequence-mlp")
def _sequence_mlp(config: MisaConfig) -> nn.Module:
    """``mpl_seq``: the same sequences after a per-source MLP, LSTM generators."""
    return FeedbackBlock(config, source="sequence", mlp=True)


@FEEDBACK.register("static")
def _static(config: MisaConfig) -> nn.Module:
    """``static_mask``: pooled first-pass vectors, Linear generators, constant over time."""
    return FeedbackBlock(config, source="pooled")


@FEEDBACK.register("static-projected")
def _static_projected(config: MisaConfig) -> nn.Module:
    """``static_after_mlp``: first-pass projected utterance vectors u_y, Linear generators."""
    return FeedbackBlock(config, source="projected")
