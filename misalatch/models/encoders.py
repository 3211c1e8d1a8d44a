"""Encoder building blocks: the sLSTM block (MISA.md §3) and the BERT adapter (MISA.md §2.1).

The sLSTM modules keep the original parameter names on the MISA model (``vrnn1``, ``vlayer_norm``,
``vrnn2``, ...) so that original checkpoints load without renaming; ``run_slstm`` is the one
function that runs such a triple.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from misalatch.errors import ResourceNotFoundError

log = logging.getLogger(__name__)

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
}


def make_rnn(kind: str, input_size: int, hidden_size: int) -> nn.Module:
    """One-layer bidirectional LSTM/GRU, time-first (as every MISA recurrent block)."""
    cls = nn.LSTM if kind == "lstm" else nn.GRU
    return cls(input_size, hidden_size, bidirectional=True)


@dataclass
class SLSTMOutput:
    utterance: torch.Tensor  # (B, 4d) = [h1_fwd | h2_fwd | h1_bwd | h2_bwd]
    sequence: torch.Tensor  # (T', B, 2d) LayerNorm(rnn1 outputs), T' = max(lengths)
    final2: torch.Tensor  # (B, 2d) = [h2_fwd | h2_bwd]


def _final_hidden(rnn: nn.Module, packed: Any) -> tuple[Any, torch.Tensor]:
    out, state = rnn(packed)
    hidden = state[0] if isinstance(state, tuple) else state  # LSTM returns (h, c)
    return out, hidden


def run_slstm(
    x: torch.Tensor, lengths: torch.Tensor, rnn1: nn.Module, norm: nn.LayerNorm, rnn2: nn.Module
) -> SLSTMOutput:
    """Run the two-layer sLSTM block on ``x (T, B, d)`` with CPU ``lengths (B,)``.

    Packing makes padded steps irrelevant. The concatenation order of the final states is the
    original's (cat on features, then batch first, then flatten).
    """
    lengths = lengths.cpu()
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    packed_h1, final_h1 = _final_hidden(rnn1, packed)
    padded_h1, _ = pad_packed_sequence(packed_h1)
    normed_h1 = norm(padded_h1)
    packed_normed = pack_padded_sequence(normed_h1, lengths, enforce_sorted=False)
    _, final_h2 = _final_hidden(rnn2, packed_normed)
    batch = x.shape[1]
    utterance = torch.cat((final_h1, final_h2), dim=2).permute(1, 0, 2).contiguous().view(batch, -1)
    final2 = final_h2.permute(1, 0, 2).contiguous().view(batch, -1)
    return SLSTMOutput(utterance=utterance, sequence=normed_h1, final2=final2)


def init_recurrent_weights(module: nn.Module) -> None:
    """Orthogonal init of every recurrent ``weight_hh*`` (the original's solver did this)."""
    for name, param in module.named_parameters():
        if "weight_hh" in name:
            nn.init.orthogonal_(param)


# ----------------------------------------------------------------------------------------------
# BERT
# ----------------------------------------------------------------------------------------------
def build_bert(bert_config: dict[str, Any] | None = None, path: str | None = None) -> nn.Module:
    """A Hugging Face ``BertModel`` without pooler (its output is never used).

    From a local folder (pretrained weights, nothing downloaded) or from config fields alone
    (random init; the weights then come from a checkpoint).
    """
    from transformers import BertConfig, BertModel

    if path is not None:
        from transformers.utils import logging as hf_logging

        # Without the pooler, HF would print a load report listing the (unused) pooler weights.
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            return BertModel.from_pretrained(path, add_pooling_layer=False, local_files_only=True)
        except OSError as err:
            raise ResourceNotFoundError(f"{path}: cannot load a BERT model from this folder ({err})") from err
        finally:
            hf_logging.set_verbosity(level)
            hf_logging.enable_progress_bar()
    if bert_config is None:
        raise ValueError("build_bert needs a path or a bert_config")
    return BertModel(BertConfig(**bert_config), add_pooling_layer=False)


BERT_CONFIG_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "type_vocab_size",
    "hidden_act",
    "layer_norm_eps",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
)


def bert_config_dict(bert: nn.Module) -> dict[str, Any]:
    """The architecture fields of a loaded BERT, to store with a checkpoint."""
    return {k: getattr(bert.config, k) for k in BERT_CONFIG_FIELDS}


def apply_bert_freeze(bert: nn.Module, rule: str) -> None:
    """``none`` | ``all`` | ``layers:k`` (freeze encoder layers 0..k inclusive; MISA.md §11)."""
    if rule == "none":
        return
    if rule == "all":
        for p in bert.parameters():
            p.requires_grad_(False)
        return
    k = int(rule.split(":", 1)[1])
    layers = bert.encoder.layer
    if k >= len(layers) - 1:
        log.warning(
            "bert_freeze=%s freezes every encoder layer of this %d-layer encoder", rule, len(layers)
        )
    for i, layer in enumerate(layers):
        if i <= k:
            for p in layer.parameters():
                p.requires_grad_(False)


def bert_embed(bert: nn.Module, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
    """BERT's embedding-layer output E ``(B, W, d_b)`` (word + position + segment, LayerNorm, dropout)."""
    return bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)


def bert_encode(bert: nn.Module, embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Run BERT's encoder directly on ``embeddings`` and return the last hidden layer ``(B, W, d_b)``.

    Position and segment embeddings are not added again. The additive float mask ``(B, 1, 1, W)``
    (0 at attended positions, the dtype's minimum at padding) is what the standard forward builds.
    """
    dtype = embeddings.dtype
    additive = (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
    out = bert.encoder(embeddings, attention_mask=additive)
    return out[0] if isinstance(out, tuple) else out.last_hidden_state


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden (B, W, d)`` over positions where ``mask (B, W)`` is 1 ([CLS]/[SEP] included)."""
    mask = mask.to(hidden.dtype)
    summed = torch.sum(mask.unsqueeze(2) * hidden, dim=1)
    return summed / torch.sum(mask, dim=1, keepdim=True)
