"""The four MISA losses (MISA.md §9), computed from a ``MisaOutput``, never from the module."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from misalatch.models.config import MisaConfig
from misalatch.models.outputs import MisaLosses, MisaOutput


class GradientReversal(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by ``-weight`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:  # type: ignore[override]
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad.neg() * ctx.weight, None


def reverse_gradient(x: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    return GradientReversal.apply(x, weight)


def safe_norm(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of all entries with a zero-safe square root.

    Same value as ``sqrt(sum(x**2))``; the gradient is 0 where the squared norm is exactly 0, where
    the original produced NaN (e.g. a batch of one, MISA.md §9.3).
    """
    squared = torch.sum(x.pow(2))
    positive = squared > 0
    return torch.where(positive, torch.where(positive, squared, torch.ones_like(squared)).sqrt(), torch.zeros_like(squared))


def diff_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Soft orthogonality D(X, Y) of two ``(B, H)`` codes (MISA.md §9.2)."""
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    x = x / (torch.norm(x, p=2, dim=1, keepdim=True).detach() + 1e-6)
    y = y / (torch.norm(y, p=2, dim=1, keepdim=True).detach() + 1e-6)
    return torch.mean(x.t().mm(y).pow(2))


def cmd(x: torch.Tensor, y: torch.Tensor, moments: int = 5) -> torch.Tensor:
    """Central moment discrepancy with ``moments`` moments, no range scaling (MISA.md §9.3)."""
    mx, my = x.mean(dim=0), y.mean(dim=0)
    sx, sy = x - mx, y - my
    total = safe_norm(mx - my)
    for k in range(2, moments + 1):
        total = total + safe_norm(sx.pow(k).mean(dim=0) - sy.pow(k).mean(dim=0))
    return total


def recon_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Plain MSE over all entries (the target is not detached, as in the original)."""
    diffs = target - recon
    return torch.sum(diffs.pow(2)) / diffs.numel()


def task_loss(prediction: torch.Tensor, labels: torch.Tensor, num_classes: int,
              regression: str = "mse", reduction: str = "mean") -> torch.Tensor:
    """MSE (or L1, ``regression="l1"``) for regression (``(B,1)`` vs ``(B,1)``), cross-entropy for classification.

    ``reduction="none"`` gives one loss per sample ``(B,)`` (evaluation regroups them into batches).
    """
    if num_classes == 1:
        target = labels.view(-1, 1).to(prediction.dtype)
        if regression == "l1":
            loss = F.l1_loss(prediction, target, reduction=reduction)
        elif regression == "mse":
            loss = F.mse_loss(prediction, target, reduction=reduction)
        else:
            raise ValueError(f"regression loss {regression!r} is not one of mse, l1")
        return loss.view(-1) if reduction == "none" else loss
    return F.cross_entropy(prediction, labels.view(-1).long(), reduction=reduction)


def compute_losses(output: MisaOutput, labels: torch.Tensor, config: MisaConfig) -> MisaLosses:
    """L = L_task + α·L_diff + β·L_sim + γ·L_recon with the original normalisations."""
    p, s = output.private, output.shared
    task = task_loss(output.prediction, labels, config.num_classes, config.regression_loss)
    diff = (
        diff_loss(p.t, s.t)
        + diff_loss(p.v, s.v)
        + diff_loss(p.a, s.a)
        + diff_loss(p.a, p.t)
        + diff_loss(p.a, p.v)
        + diff_loss(p.t, p.v)
    )
    if config.similarity == "cmd":
        k = config.cmd_moments
        sim = (cmd(s.t, s.v, k) + cmd(s.t, s.a, k) + cmd(s.a, s.v, k)) / 3.0
    else:
        logits = output.domain_logits
        assert logits is not None, "adversarial similarity needs discriminator logits"
        batch = logits.t.shape[0]
        domains = torch.cat([torch.full((batch,), i, dtype=torch.long, device=logits.t.device) for i in range(3)])
        sim = F.cross_entropy(torch.cat((logits.t, logits.v, logits.a), dim=0), domains)
    recon = (
        recon_loss(output.recon.t, output.utt.t)
        + recon_loss(output.recon.v, output.utt.v)
        + recon_loss(output.recon.a, output.utt.a)
    ) / 3.0
    total = task + config.diff_weight * diff + config.sim_weight * sim + config.recon_weight * recon
    return MisaLosses(task=task, diff=diff, sim=sim, recon=recon, total=total)
