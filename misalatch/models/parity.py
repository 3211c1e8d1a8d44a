"""Parity with the original MISA code on golden vector files (MISA.md §13).

A golden case is ``<case>.safetensors`` (original parameters, inputs, every output, loss and
gradient) with ``<case>.json`` beside it (the configuration). ``check_parity`` builds the
model from the JSON, imports the parameters through the same importer as original checkpoints,
runs the inputs in eval mode and compares everything present in the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from misalatch.errors import CheckpointError, DataFormatError
from misalatch.models.checkpoint_import import import_state_dict
from misalatch.models.config import DATASET_DEFAULTS, MisaConfig
from misalatch.models.misa import MISA
from misalatch.models.outputs import ModelInputs

# (atol, rtol) per kind of tensor and text encoder. The BERT gradient rtol is looser because a
# deep attention stack accumulates more float32 rounding; see README "Faithfulness to the original MISA".
TOLERANCES: dict[str, dict[str, tuple[float, float]]] = {
    "lstm": {"output": (1e-5, 1e-4), "loss": (1e-5, 1e-4), "grad": (1e-5, 1e-4), "grad_norm": (1e-6, 1e-4)},
    "bert": {"output": (1e-5, 1e-4), "loss": (1e-5, 1e-4), "grad": (1e-5, 1e-3), "grad_norm": (1e-6, 1e-4)},
}
_DATASET_SUFFIX = {"mosi": "mosi", "mosei": "mosei", "urfunny": "ur_funny", "ur_funny": "ur_funny"}


@dataclass
class Comparison:
    name: str
    max_abs: float
    max_rel: float
    ok: bool
    note: str = ""

    def line(self) -> str:
        status = "ok" if self.ok else "FAIL"
        extra = f"  ({self.note})" if self.note else ""
        return f"{status:4s} {self.name:70s} max_abs={self.max_abs:.3e} max_rel={self.max_rel:.3e}{extra}"


@dataclass
class ParityReport:
    case: str
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.ok]

    @property
    def ok(self) -> bool:
        return bool(self.comparisons) and not self.failures

    def summary(self) -> str:
        n, k = len(self.comparisons), len(self.failures)
        if k == 0:
            return f"parity: ok {n}/{n} tensors within tolerance"
        return f"parity: FAILED {k}/{n} tensors outside tolerance: " + ", ".join(c.name for c in self.failures[:8])


def compare(name: str, got: torch.Tensor | None, want: torch.Tensor, atol: float, rtol: float) -> Comparison:
    """Element-wise ``|got - want| <= atol + rtol·|want|`` with max abs / rel errors for the report."""
    if got is None:
        return Comparison(name, math.inf, math.inf, False, "not computed by misalatch")
    got = got.detach().to(torch.float64).cpu()
    want = want.detach().to(torch.float64).cpu()
    if tuple(got.shape) != tuple(want.shape):
        return Comparison(name, math.inf, math.inf, False, f"shape {tuple(got.shape)} vs golden {tuple(want.shape)}")
    diff = (got - want).abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    rel = diff / want.abs().clamp_min(1e-12)
    max_rel = float(rel.max()) if rel.numel() else 0.0
    ok = bool(torch.all(diff <= atol + rtol * want.abs())) and bool(torch.isfinite(got).all())
    return Comparison(name, max_abs, max_rel, ok)


def config_from_golden(meta: dict[str, Any], source: str = "<json>") -> MisaConfig:
    """Model configuration of a golden case (MISA.md §13.1)."""
    try:
        dataset = _DATASET_SUFFIX[str(meta["case"]).rsplit("_", 1)[-1]]
        bert = meta["text_encoder"] == "bert"
        values: dict[str, Any] = {
            **DATASET_DEFAULTS[dataset],
            "text_encoder": "bert" if bert else "glove",
            "visual_size": int(meta["visual_size"]),
            "acoustic_size": int(meta["acoustic_size"]),
            "hidden_size": int(meta["hidden_size"]),
            "num_classes": int(meta["num_classes"]),
            "similarity": meta["similarity"],
            "reverse_grad_weight": float(meta.get("reverse_grad_weight", 1.0)),
            "activation": meta.get("activation", "relu"),
            "rnncell": meta.get("rnncell", "lstm"),
            "diff_weight": float(meta["loss_weights"]["diff"]),
            "sim_weight": float(meta["loss_weights"]["sim"]),
            "recon_weight": float(meta["loss_weights"]["recon"]),
        }
        if bert:
            values["bert_config"] = dict(meta["bert_config"])
            values["text_input_size"] = int(meta["bert_config"]["hidden_size"])
        else:
            values["text_input_size"] = int(meta["embedding_size"])
            values["vocab_size"] = int(meta["vocab"])
    except (KeyError, TypeError, ValueError) as err:
        raise DataFormatError(f"{source}: golden configuration field missing or malformed: {err!r}") from err
    return MisaConfig.from_dict(values)


def _inputs_from_golden(tensors: dict[str, torch.Tensor], bert: bool) -> ModelInputs:
    return ModelInputs(
        visual=tensors["input.visual"],
        acoustic=tensors["input.acoustic"],
        lengths=tensors["input.lengths"].long().cpu(),
        text_ids=tensors.get("input.text_ids"),
        bert_input_ids=tensors.get("input.bert_input_ids") if bert else None,
        bert_attention_mask=tensors.get("input.bert_attention_mask") if bert else None,
        bert_token_type_ids=tensors.get("input.bert_token_type_ids") if bert else None,
    )


def check_parity(path: str | Path) -> ParityReport:
    """Compare misalatch with one golden file; every output, loss, gradient and gradient norm."""
    from safetensors.torch import load_file

    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file():
        raise DataFormatError(f"{path}: no such golden file")
    if not meta_path.is_file():
        raise DataFormatError(f"{path}: the configuration {meta_path.name} must sit beside it")
    from misalatch.io.documents import load_json

    meta = load_json(meta_path, what="golden-vector configuration")
    if not isinstance(meta, dict):
        raise DataFormatError(f"{meta_path}: expected a JSON object of configuration values, got {type(meta).__name__}")
    try:
        tensors = load_file(str(path))
    except Exception as err:
        raise DataFormatError(f"{path}: not a readable safetensors file ({err})") from err
    config = config_from_golden(meta, str(meta_path))
    kind = "bert" if config.text_encoder == "bert" else "lstm"
    tol = TOLERANCES[kind]

    torch.manual_seed(0)
    model = MISA(config)
    params = {k[len("param."):]: v for k, v in tensors.items() if k.startswith("param.")}
    try:
        import_state_dict(model, params, source=str(path))
    except CheckpointError:
        raise
    model.eval()
    model.zero_grad(set_to_none=True)

    inputs = _inputs_from_golden(tensors, bert=kind == "bert")
    out = model(inputs, labels=tensors["input.label"])
    report = ParityReport(case=str(meta.get("case", path.stem)))

    produced: dict[str, torch.Tensor | None] = {"output.prediction": out.prediction}
    for group in ("utt", "private", "shared", "recon"):
        for m, value in getattr(out, group).items():
            produced[f"output.{group}_{m}"] = value
    if out.domain_logits is not None:
        for m, value in out.domain_logits.items():
            produced[f"output.domain_logits_{m}"] = value
    assert out.losses is not None
    for name, value in vars(out.losses).items():
        produced[f"loss.{name}"] = value

    for key in sorted(k for k in tensors if k.startswith(("output.", "loss."))):
        atol, rtol = tol["output" if key.startswith("output.") else "loss"]
        report.comparisons.append(compare(key, produced.get(key), tensors[key], atol, rtol))

    out.losses.total.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    for key in sorted(k for k in tensors if k.startswith("grad.")):
        atol, rtol = tol["grad"]
        report.comparisons.append(compare(key, grads.get(key[len("grad."):]), tensors[key], atol, rtol))
    norm_keys = {k[len("grad_norm."):] for k in tensors if k.startswith("grad_norm.")}
    for name in sorted(norm_keys):
        atol, rtol = tol["grad_norm"]
        grad = grads.get(name)
        got = None if grad is None else torch.linalg.vector_norm(grad.to(torch.float64))
        report.comparisons.append(compare(f"grad_norm.{name}", got, tensors[f"grad_norm.{name}"], atol, rtol))
    # Parameters the original left without gradient must stay without gradient here.
    for name, grad in grads.items():
        if name not in norm_keys and grad is not None and bool(torch.any(grad != 0)):
            report.comparisons.append(
                Comparison(f"no_grad.{name}", float(grad.abs().max()), math.inf, False, "received a gradient the original did not")
            )
    return report

