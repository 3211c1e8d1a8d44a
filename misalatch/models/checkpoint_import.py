"""Import of original declare-lab/MISA checkpoints (MISA.md §12).

An original checkpoint is a ``state_dict`` saved with ``torch.save`` (read with
``weights_only=True`` only, never unrestricted) or a safetensors file with the original names.
The toolkit's module tree uses the original names, so import is ``load_state_dict`` plus an ignore
list; every difference is reported by name.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from misalatch.errors import CheckpointError
from misalatch.models.config import MisaConfig

log = logging.getLogger(__name__)

# Keys the original saved that the toolkit deliberately does not build (MISA.md §12).
_ALWAYS_IGNORED = (re.compile(r"^sp_discriminator\."), re.compile(r"^bertmodel\.embeddings\.position_ids$"))
_BERT_IGNORED = (re.compile(r"^tlayer_norm\."), re.compile(r"^bertmodel\.pooler\."))


@dataclass
class ImportReport:
    """What an import did: keys loaded, ignored on purpose, and left at their fresh initialisation."""

    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)  # e.g. feedback parameters absent from MISA files


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file or a torch-saved state_dict (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path}: cannot be read with torch.load(weights_only=True) ({err.__class__.__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); misalatch never falls back to unrestricted "
            "unpickling. Re-save the state_dict with a current torch, or convert it to safetensors."
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state_dict (a dict of tensors), got {type(state).__name__}")
    return state


def _ignored(key: str, text_encoder: str) -> bool:
    rules = _ALWAYS_IGNORED + (_BERT_IGNORED if text_encoder == "bert" else ())
    return any(rule.search(key) for rule in rules)


def import_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], *, source: str = "<state_dict>", allow_fresh: tuple[str, ...] = ("feedback.",)
) -> ImportReport:
    """Load original-named tensors into ``model``; fail listing missing, unexpected and mis-shaped keys.

    Parameters whose names start with a prefix in ``allow_fresh`` may be absent from the file (an
    original MISA checkpoint loaded into a feedback model); they keep their initialisation.
    """
    text_encoder = getattr(getattr(model, "config", None), "text_encoder", "glove")
    own = model.state_dict()
    report = ImportReport()
    unexpected, misshaped, to_load = [], [], {}
    for key, tensor in state.items():
        if _ignored(key, text_encoder) and key not in own:
            report.ignored.append(key)
        elif key not in own:
            unexpected.append(key)
        elif tuple(own[key].shape) != tuple(tensor.shape):
            misshaped.append(f"{key}: file {tuple(tensor.shape)} vs model {tuple(own[key].shape)}")
        else:
            to_load[key] = tensor
    missing = []
    for key in own:
        if key not in state:
            if key.startswith(allow_fresh):
                report.fresh.append(key)
            else:
                missing.append(key)
    if missing or unexpected or misshaped:
        parts = [f"{source}: checkpoint does not match the model"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if keys:
                shown = ", ".join(keys[:12]) + (f", ... ({len(keys) - 12} more)" if len(keys) > 12 else "")
                parts.append(f"{len(keys)} {title} key(s): {shown}")
        raise CheckpointError("; ".join(parts))
    with torch.no_grad():
        model.load_state_dict({**own, **to_load}, strict=True)
    report.loaded = sorted(to_load)
    if report.ignored:
        log.info("ignored %d unused original key(s): %s", len(report.ignored), ", ".join(sorted(report.ignored)[:6]))
    if report.fresh:
        log.info("%d parameter(s) not in the file keep their initialisation (e.g. %s)", len(report.fresh), report.fresh[0])
    return report


def infer_config(state: dict[str, torch.Tensor], **overrides: Any) -> MisaConfig:
    """Infer the architecture of an original checkpoint from its keys and shapes (MISA.md §12).

    For BERT checkpoints the caller supplies ``bert_config`` (or builds BERT from a folder whose
    config matches the stored shapes).
    """
    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(f"cannot infer the architecture: key {key!r} is missing")
        return tuple(state[key].shape)

    d_v = shape("vrnn1.weight_ih_l0")[1]
    d_a = shape("arnn1.weight_ih_l0")[1]
    gates = shape("vrnn1.weight_ih_l0")[0] // d_v
    values: dict[str, Any] = {
        "visual_size": d_v,
        "acoustic_size": d_a,
        "hidden_size": shape("shared.shared_1.weight")[0],
        "num_classes": shape("fusion.fusion_layer_3.weight")[0],
        "similarity": "adversarial" if any(k.startswith("discriminator.") for k in state) else "cmd",
        "rnncell": "lstm" if gates == 4 else "gru",
    }
    if any(k.startswith("bertmodel.") for k in state):
        values["text_encoder"] = "bert"
        values["text_input_size"] = shape("project_t.project_t.weight")[1]
    elif "embed.weight" in state:
        vocab, d_e = shape("embed.weight")
        values.update(text_encoder="glove", text_input_size=d_e, vocab_size=vocab)
    else:
        values.update(text_encoder="vectors", text_input_size=shape("trnn1.weight_ih_l0")[1])
    values.update(overrides)
    return MisaConfig.from_dict(values)
