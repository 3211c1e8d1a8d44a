"""The original MMLatch model (Paraskevopoulos et al., ICASSP 2022; MMLATCH.md §6 and §2).

Per modality a BiLSTM encoder (directions summed) with single-head self-attention; a first pass of
these encoders drives top-down mask generators (an LSTM, or a per-step Linear, per target and
source) whose sigmoids are averaged, dropped out and multiplied into the low-level inputs; a
second pass of the same encoders feeds a cross-attention fuser (three bimodal symmetric
attentions and one trimodal attention) and a BiLSTM + attention head summed over time.

Toolkit deviations from georgepar/mmlatch, each with an option where it changes results:

* true lengths everywhere (the original collator gave every sample the batch maximum);
  ``length_quirk=True`` restores that (padded steps then carry zero vectors in every modality, GloVe
  text included, as the original's). With true lengths, padded steps are also left out of the
  fuser's attentions and of the head's sum over time, so a sample's prediction does not depend on
  the batch it is in;
* mask dropout in training only; ``mask_dropout_at_eval=True`` restores the original's stochastic
  evaluation;
* text may be BERT (word vectors = mean of BERT's last hidden states over each word's wordpieces,
  the word/wordpiece rules of ``misalatch.models.feedback``) and data may be unaligned (masks
  and A/V encodings resampled in time as in MMLATCH.md §4.6) — the original knew GloVe on
  word-aligned data only.

``forward`` returns an ``MMLatchOutput`` and assigns nothing to ``self``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from misalatch.errors import ConfigError
from misalatch.models.config import RegressionLoss, TextEncoderKind, check_known_keys, check_probabilities
from misalatch.models.encoders import apply_bert_freeze, build_bert
from misalatch.models.feedback import (
    MODALITIES,
    LinearMaskGenerator,
    SequenceMaskGenerator,
    combine_masks,
    other_modalities,
    pool_steps,
    time_axes,
)
from misalatch.models.losses import task_loss
from misalatch.models.outputs import FeedbackMasks, LowLevel, ModelInputs, TaskLosses
from misalatch.models.registry import register_model
from misalatch.models.resample import fit_time, resample_time, valid_steps

MaskGenerator = Literal["lstm", "linear"]
_BERT_FREEZE = re.compile(r"^(none|all|layers:\d+)$")


@dataclass(frozen=True)
class MMLatchConfig:
    """Architecture of the original MMLatch model; the defaults are the original's (CMU-MOSEI, GloVe)."""

    # --- text ---
    text_encoder: TextEncoderKind = "glove"
    text_input_size: int = 300  # d_e (GloVe / vectors) or d_b (BERT)
    vocab_size: int = 0  # GloVe path only
    freeze_embeddings: bool = True  # the original fed fixed GloVe vectors
    bert_freeze: str = "all"  # BERT as a fixed feature extractor, as GloVe is in the original
    bert_config: dict[str, Any] | None = None
    # --- acoustic / visual ---
    visual_size: int = 35  # FACET 4.2
    acoustic_size: int = 74  # COVAREP
    # --- architecture ---
    hidden_size: int = 100  # per-direction BiLSTM width = attention / projection size
    num_classes: int = 1  # 1 = regression
    encoder_dropout: float = 0.2  # unimodal BiLSTM outputs and self-attention weights
    fuser_dropout: float = 0.1  # cross-attention weights, head BiLSTM outputs and attention weights
    # --- feedback (MMLATCH.md §2) ---
    feedback: bool = True  # False: one pass of the encoders, no masks (the original's baseline)
    mask_generator: MaskGenerator = "lstm"  # lstm = learnable_sequence_mask, linear = learnable_static_mask
    generator_dropout: float = 0.1  # on LSTM generator outputs
    mask_dropout: float = 0.2
    mask_dropout_at_eval: bool = False  # True: the original's stochastic evaluation
    length_quirk: bool = False  # True: every length = the batch maximum, as the original collator
    # --- loss ---
    regression_loss: RegressionLoss = "l1"

    def __post_init__(self) -> None:
        if self.text_encoder not in ("bert", "glove", "vectors"):
            raise ConfigError(f"text_encoder={self.text_encoder!r} is not one of bert, glove, vectors")
        if self.mask_generator not in ("lstm", "linear"):
            raise ConfigError(f"mask_generator={self.mask_generator!r} is not one of lstm, linear")
        if self.regression_loss not in ("l1", "mse"):
            raise ConfigError(f"regression_loss={self.regression_loss!r} is not one of l1, mse")
        if not _BERT_FREEZE.match(str(self.bert_freeze)):
            raise ConfigError(f"bert_freeze={self.bert_freeze!r}: expected none, all or layers:<k>")
        for name in ("text_input_size", "visual_size", "acoustic_size", "hidden_size", "num_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.text_encoder == "glove" and self.vocab_size < 2:
            raise ConfigError("text_encoder=glove needs vocab_size >= 2 (<unk> and <pad>)")
        check_probabilities(self, ("encoder_dropout", "fuser_dropout", "generator_dropout", "mask_dropout"))

    # --- the facts every model config offers (see misalatch.models.registry) ---
    @property
    def is_classification(self) -> bool:
        return self.num_classes > 1

    @property
    def has_masks(self) -> bool:
        return self.feedback

    @property
    def variant(self) -> str:
        """A short label for tables and mask exports."""
        if not self.feedback:
            return "mmlatch-nofeedback"
        return "mmlatch" if self.mask_generator == "lstm" else "mmlatch-linear"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "MMLatchConfig":
        """Build from a plain dict, rejecting unknown keys with the nearest valid one."""
        check_known_keys(cls, values, "MMLatch config")
        return cls(**values)

    @classmethod
    def from_options(cls, values: dict[str, Any]) -> "MMLatchConfig":
        """From a run's flat options (see ``ModelSpec.config_from_options``).

        ``feedback`` is a MISA variant name there: ``sequence`` (the original's masks) or ``none``.
        """
        from misalatch.models.registry import pick_fields

        picked = pick_fields(cls, values, {"regression_loss": "loss"})
        feedback = values.get("feedback", "sequence")
        if feedback not in ("sequence", "none", True, False):
            raise ConfigError(f"model mmlatch: feedback={feedback!r}; the MMLatch model has the original's masks "
                              "(feedback sequence, with mask_generator lstm or linear) or none")
        picked["feedback"] = feedback in ("sequence", True)
        return cls.from_dict(picked)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "MMLatchConfig":
        return dataclasses.replace(self, **changes)


@dataclass
class MMLatchOutput:
    """What one forward pass computes; nothing is stored on the module.

    ``prediction`` ``(B, 1)`` (regression) or logits ``(B, C)``; ``masks`` in the layout of the
    tensors they multiply, time-first ``(T_m, B, d_m)`` for all three modalities (text: one row per
    word, or per BERT position on token-aligned data), ``None`` without feedback.
    """

    prediction: torch.Tensor
    masks: FeedbackMasks | None = None
    losses: TaskLosses | None = None


# ----------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------
def key_padding_bias(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(B, 1, L)`` additive score bias: 0 at valid keys, -1e5 at padded ones (the original's constant)."""
    return ((~valid).to(dtype) * -1e5)[:, None, :]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: int, dropout: nn.Dropout,
           valid_keys: torch.Tensor | None) -> torch.Tensor:
    """softmax(q kᵀ / √scale [+ key mask]) with dropout on the weights, times v; batch-first."""
    scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(scale)
    if valid_keys is not None:
        scores = scores + key_padding_bias(valid_keys, scores.dtype)
    return torch.bmm(dropout(F.softmax(scores, dim=-1)), v)


def _projection(size: int) -> nn.Linear:
    layer = nn.Linear(size, size, bias=False)
    nn.init.xavier_uniform_(layer.weight)
    return layer


class SelfAttention(nn.Module):
    """Single-head scaled dot-product attention with bias-free, Xavier-initialised Q, K, V."""

    def __init__(self, size: int, dropout: float) -> None:
        super().__init__()
        self.size = size
        self.q, self.k, self.v = _projection(size), _projection(size), _projection(size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid_keys: torch.Tensor | None = None,
                queries: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, L, d)`` gives keys and values; ``queries`` (default ``x``) ``(B, L_q, d)``."""
        q = self.q(x if queries is None else queries)
        return attend(q, self.k(x), self.v(x), self.size, self.dropout, valid_keys)


class SymmetricCrossAttention(nn.Module):
    """One bimodal pair: out1 = Attn(q=mod2, k=v=mod1) + mod2, out2 = Attn(q=mod1, k=v=mod2) + mod1.

    Six bias-free projections, named after the original (``*x`` read mod1, ``*y`` read mod2);
    returns out1 + out2.
    """

    def __init__(self, size: int, dropout: float) -> None:
        super().__init__()
        self.size = size
        self.qx, self.kx, self.vx = _projection(size), _projection(size), _projection(size)
        self.qy, self.ky, self.vy = _projection(size), _projection(size), _projection(size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, mod1: torch.Tensor, mod2: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        out1 = attend(self.qy(mod2), self.kx(mod1), self.vx(mod1), self.size, self.dropout, valid) + mod2
        out2 = attend(self.qx(mod1), self.ky(mod2), self.vy(mod2), self.size, self.dropout, valid) + mod1
        return out1 + out2


def run_bilstm(rnn: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Packed BiLSTM on ``x (T, B, d)``; outputs ``(T, B, 2h)``, zero at padded steps."""
    packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
    out, _ = rnn(packed)
    out, _ = pad_packed_sequence(out, total_length=x.shape[0])
    return out


class UnimodalEncoder(nn.Module):
    """BiLSTM(d_m → h per direction) → dropout → directions summed → self-attention (MMLATCH.md §6).

    Returns the attended sequence ``(T, B, h)``, zero at padded steps.
    """

    def __init__(self, input_size: int, hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.rnn = nn.LSTM(input_size, hidden_size, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.attention = SelfAttention(hidden_size, dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out = self.dropout(run_bilstm(self.rnn, x, lengths))
        summed = out[..., : self.hidden_size] + out[..., self.hidden_size:]
        valid = valid_steps(lengths, x.shape[0], x.device).t()  # (B, T)
        attended = self.attention(summed.transpose(0, 1), valid)  # (B, T, h)
        return (attended * valid[..., None].to(attended.dtype)).transpose(0, 1)


class AttentionFuser(nn.Module):
    """Bimodal (ta, va, tv) and trimodal (queries va, keys/values text) attention → ``(B, L, 7h)``.

    Concatenation order of the original: [t, a, v, ta, tv, va, tav].
    """

    def __init__(self, size: int, dropout: float) -> None:
        super().__init__()
        self.ta = SymmetricCrossAttention(size, dropout)
        self.va = SymmetricCrossAttention(size, dropout)
        self.tv = SymmetricCrossAttention(size, dropout)
        self.tav = SelfAttention(size, dropout)

    def forward(self, t: torch.Tensor, a: torch.Tensor, v: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        ta = self.ta(t, a, valid)
        va = self.va(v, a, valid)
        tv = self.tv(t, v, valid)
        tav = self.tav(t, valid, queries=va)
        return torch.cat((t, a, v, ta, tv, va, tav), dim=-1)


class FusionHead(nn.Module):
    """BiLSTM(7h → h per direction, concatenated) → dropout → self-attention → sum over time → Linear."""

    def __init__(self, size: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.rnn = nn.LSTM(7 * size, size, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.attention = SelfAttention(2 * size, dropout)
        self.out = nn.Linear(2 * size, num_classes)

    def forward(self, fused: torch.Tensor, lengths: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``fused (B, L, 7h)``, ``valid (B, L)`` → prediction ``(B, num_classes)``."""
        out = self.dropout(run_bilstm(self.rnn, fused.transpose(0, 1), lengths)).transpose(0, 1)
        attended = self.attention(out, valid) * valid[..., None].to(out.dtype)
        return self.out(attended.sum(dim=1))


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------
@dataclass
class _Sequences:
    """Time-first per-modality sequences with their CPU lengths."""

    text: torch.Tensor
    visual: torch.Tensor
    acoustic: torch.Tensor
    lengths: dict[str, torch.Tensor]

    def get(self, modality: str) -> torch.Tensor:
        return getattr(self, modality)


@register_model("mmlatch", config=MMLatchConfig, recipe="mmlatch",
                description="the original MMLatch model (Paraskevopoulos et al. 2022): BiLSTM encoders, "
                            "top-down masks, cross-attention fuser",
                signature="head.out.weight")
class MMLatch(nn.Module):
    """The original MMLatch model on ``ModelInputs``.

    Args:
        config: the architecture; sizes must match the data and the text encoder.
        bert: an already-built Hugging Face ``BertModel`` (BERT text only; default: built from
            ``config.bert_config`` with random weights, expected to come from a checkpoint).
        embedding: initial GloVe matrix ``(V, d_e)`` (GloVe text only).
    """

    def __init__(self, config: MMLatchConfig, *, bert: nn.Module | None = None,
                 embedding: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        h = config.hidden_size
        if config.text_encoder == "bert":
            self.bertmodel = bert if bert is not None else build_bert(config.bert_config)
            if self.bertmodel.config.hidden_size != config.text_input_size:
                raise ValueError(f"BERT hidden size {self.bertmodel.config.hidden_size} != text_input_size "
                                 f"{config.text_input_size}")
            apply_bert_freeze(self.bertmodel, config.bert_freeze)
        elif config.text_encoder == "glove":
            self.embed = nn.Embedding(config.vocab_size, config.text_input_size)
            if embedding is not None:
                if tuple(embedding.shape) != (config.vocab_size, config.text_input_size):
                    raise ValueError(f"embedding shape {tuple(embedding.shape)} != "
                                     f"{(config.vocab_size, config.text_input_size)}")
                self.embed.weight.data.copy_(embedding)
            self.embed.weight.requires_grad_(not config.freeze_embeddings)
        widths = self.input_widths
        self.encoders = nn.ModuleDict({m: UnimodalEncoder(widths[m], h, config.encoder_dropout) for m in MODALITIES})
        if config.feedback:
            self.feedback = nn.ModuleDict({
                target: nn.ModuleDict({
                    source: (SequenceMaskGenerator(h, widths[target], config.generator_dropout)
                             if config.mask_generator == "lstm" else LinearMaskGenerator(h, widths[target]))
                    for source in other_modalities(target)
                })
                for target in MODALITIES
            })
        else:
            self.feedback = None
        self.fuser = AttentionFuser(h, config.fuser_dropout)
        self.head = FusionHead(h, config.num_classes, config.fuser_dropout)

    @property
    def input_widths(self) -> dict[str, int]:
        """d_x: the width of each modality's low-level (masked) input."""
        c = self.config
        return {"text": c.text_input_size, "visual": c.visual_size, "acoustic": c.acoustic_size}

    # ------------------------------------------------------------------------------------------
    def low_level(self, inputs: ModelInputs) -> _Sequences:
        """Time-first inputs per modality with their lengths (what the masks multiply)."""
        cfg = self.config
        if inputs.alignment not in ("word", "token", "none"):
            raise ValueError(f"unknown alignment {inputs.alignment!r}")
        visual, acoustic = inputs.visual, inputs.acoustic
        if cfg.text_encoder == "bert":
            if inputs.bert_input_ids is None or inputs.bert_attention_mask is None:
                raise ValueError("text_encoder=bert needs bert_input_ids and bert_attention_mask")
            token_types = inputs.bert_token_type_ids
            if token_types is None:
                token_types = torch.zeros_like(inputs.bert_input_ids)
            hidden = self.bertmodel(input_ids=inputs.bert_input_ids, attention_mask=inputs.bert_attention_mask,
                                    token_type_ids=token_types).last_hidden_state
            # the feedback's step axes: words (word), BERT positions (token) or content wordpieces (none)
            axes = time_axes(cfg, LowLevel(text=hidden, visual=visual, acoustic=acoustic), inputs)  # type: ignore[arg-type]
            assert axes.text_source_step is not None
            text = pool_steps(hidden, axes.text_source_step, axes.total["text"])  # (T, B, d_b), word rules
            text_lengths = axes.lengths["text"]
        elif cfg.text_encoder == "glove":
            if inputs.text_ids is None:
                raise ValueError("text_encoder=glove needs text_ids")
            text_lengths = inputs.lengths.cpu()
            # padded steps are zero vectors, as the original's collator padded precomputed GloVe vectors
            # (not the <pad> row); only visible under length_quirk, where padding is data
            valid = valid_steps(text_lengths, inputs.text_ids.shape[0], inputs.text_ids.device)
            text = self.embed(inputs.text_ids) * valid[..., None].to(self.embed.weight.dtype)
        else:
            if inputs.text_vectors is None:
                raise ValueError("text_encoder=vectors needs text_vectors")
            text, text_lengths = inputs.text_vectors, inputs.lengths.cpu()
        lengths = {"text": text_lengths.cpu().long()}
        if inputs.alignment == "none":
            lengths["visual"] = inputs.visual_lengths.cpu().long()
            lengths["acoustic"] = inputs.acoustic_lengths.cpu().long()
        else:  # one length vector for all modalities (MMLATCH.md §2)
            lengths["visual"] = lengths["acoustic"] = lengths["text"]
        seqs = {"text": text, "visual": visual, "acoustic": acoustic}
        for m in MODALITIES:
            if bool((lengths[m] < 1).any()):
                raise ValueError(f"{m}: every sample needs at least one step")
            total = int(lengths[m].max())
            if cfg.length_quirk:  # the original collator: padding is data
                lengths[m] = torch.full_like(lengths[m], total)
            seqs[m] = fit_time(seqs[m], total)
        return _Sequences(lengths=lengths, **seqs)

    def encode(self, low: _Sequences) -> _Sequences:
        """One pass of the shared unimodal encoders → ``(T_m, B, h)`` each."""
        return _Sequences(lengths=low.lengths,
                          **{m: self.encoders[m](low.get(m), low.lengths[m]) for m in MODALITIES})

    def masks(self, high: _Sequences, low: _Sequences) -> dict[str, torch.Tensor]:
        """m_x = ½[σ(G_{y→x}(h_y)) + σ(G_{z→x}(h_z))], on x's time axis, 0 at padded steps, dropped out."""
        assert self.feedback is not None
        cfg = self.config
        out: dict[str, torch.Tensor] = {}
        for target in MODALITIES:
            t_len, total = low.lengths[target], low.get(target).shape[0]
            sigmoids = []
            for source in other_modalities(target):
                gen, h, s_len = self.feedback[target][source], high.get(source), high.lengths[source]
                logits = gen(h, s_len) if cfg.mask_generator == "lstm" else gen(h)
                sigmoids.append(resample_time(torch.sigmoid(logits), s_len, t_len, total))
            mask = combine_masks(sigmoids[0], sigmoids[1], "mean")
            out[target] = F.dropout(mask, cfg.mask_dropout, self.training or cfg.mask_dropout_at_eval)
        return out

    def fuse(self, enc: _Sequences) -> torch.Tensor:
        """Fuser and head on the text time axis (A/V encodings resampled there when unaligned)."""
        t_len, total = enc.lengths["text"], enc.text.shape[0]
        on_text = {m: resample_time(enc.get(m), enc.lengths[m], t_len, total) for m in ("visual", "acoustic")}
        valid = valid_steps(t_len, total, enc.text.device).t()  # (B, T)
        t, v, a = (x.transpose(0, 1) for x in (enc.text, on_text["visual"], on_text["acoustic"]))
        fused = self.fuser(t, a, v, valid)
        return self.head(fused, t_len, valid)

    def forward(self, inputs: ModelInputs, labels: torch.Tensor | None = None, *,
                mask_transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> MMLatchOutput:
        """Run MMLatch; ``losses`` are filled when labels are given.

        ``mask_transform(target, mask) -> mask`` replaces each mask before it is applied (tests,
        ablations), as on the MISA feedback model.
        """
        low = self.low_level(inputs)
        masks = None
        if self.feedback is not None:
            per_target = self.masks(self.encode(low), low)  # first pass: gradients flow, nothing detached
            if mask_transform is not None:
                per_target = {m: mask_transform(m, mask) for m, mask in per_target.items()}
            masks = FeedbackMasks(**per_target, text_layout="time_first", text_lengths=low.lengths["text"])
            low = _Sequences(lengths=low.lengths, **{m: low.get(m) * per_target[m] for m in MODALITIES})
        elif mask_transform is not None:
            raise ValueError("mask_transform needs feedback (feedback=False has no masks)")
        prediction = self.fuse(self.encode(low))
        output = MMLatchOutput(prediction=prediction, masks=masks)
        if labels is not None:
            output.losses = self.losses(output, labels)
        return output

    def losses(self, output: MMLatchOutput, labels: torch.Tensor) -> TaskLosses:
        """The task loss of a forward's output (the seam ``MISA.losses`` describes)."""
        task = task_loss(output.prediction, labels, self.config.num_classes, self.config.regression_loss)
        return TaskLosses(task=task, total=task)
