"""Each MISA loss against a small hand-computed example (MISA.md §9)."""

from __future__ import annotations

import math

import pytest
import torch

from misalatch.models.config import MisaConfig
from misalatch.models.losses import cmd, compute_losses, diff_loss, recon_loss, reverse_gradient, safe_norm, task_loss
from misalatch.models.outputs import MisaOutput, PerModality


def test_diff_loss_hand_example() -> None:
    # B=2, H=2. Centred X rows: (+1, 0), (-1, 0) -> unit rows (1,0), (-1,0) (norm 1, +1e-6).
    x = torch.tensor([[2.0, 5.0], [0.0, 5.0]])
    y = torch.tensor([[1.0, 1.0], [1.0, 3.0]])  # centred rows (0,-1), (0,1)
    # X̂ᵀŶ = [[0*... ]]: column 0 of X̂ = (1,-1)/(1+1e-6); column 1 of Ŷ = (-1, 1)/(1+1e-6)
    # (X̂ᵀŶ)[0,1] = -2/(1+1e-6)^2, other entries 0 -> mean of squares over H²=4 entries.
    expected = (2.0 / (1 + 1e-6) ** 2) ** 2 / 4
    assert float(diff_loss(x, y)) == pytest.approx(expected, rel=1e-6)
    assert float(diff_loss(x, y)) == pytest.approx(float(diff_loss(y, x)), rel=1e-7)  # symmetric


def test_diff_loss_treats_the_row_norm_as_constant() -> None:
    x = torch.tensor([[2.0, 5.0], [0.0, 5.0]], requires_grad=True)
    y = torch.tensor([[1.0, 1.0], [1.0, 3.0]])
    diff_loss(x, y).backward()
    # With the norm detached: L = sum_ij (sum_b xhat_bi yhat_bj)^2 / 4, d/dx through xhat = xbar/(n+eps) only.
    yc = torch.tensor([[0.0, -1.0], [0.0, 1.0]]) / (1 + 1e-6)
    xc = torch.tensor([[1.0, 0.0], [-1.0, 0.0]]) / (1 + 1e-6)
    m = xc.t() @ yc
    grad_xhat = 2 * yc @ m.t() / 4
    grad_xbar = grad_xhat / (1 + 1e-6)
    expected = grad_xbar - grad_xbar.mean(dim=0, keepdim=True)
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-7)


def test_cmd_hand_example() -> None:
    x = torch.tensor([[0.0], [1.0]])  # mean .5, central moments k: (.5^k + (-.5)^k)/2
    y = torch.tensor([[0.5], [0.5]])  # mean .5, all central moments 0
    expected = 0.0 + sum(abs((0.5**k + (-0.5) ** k) / 2) for k in range(2, 6))
    assert float(cmd(x, y, 5)) == pytest.approx(expected)
    assert float(cmd(x, y, 2)) == pytest.approx(0.25)


def test_cmd_gradient_is_finite_for_a_batch_of_one() -> None:
    """The original's sqrt gives NaN gradients when two moment vectors coincide (MISA.md §9.3)."""
    x = torch.rand(1, 4, requires_grad=True)
    y = torch.rand(1, 4, requires_grad=True)
    value = cmd(x, y, 5)
    value.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    assert float(value.detach()) == pytest.approx(float(torch.linalg.vector_norm(x.detach().mean(0) - y.detach().mean(0))))


def test_safe_norm_value_and_zero_gradient() -> None:
    v = torch.tensor([3.0, 4.0], requires_grad=True)
    assert float(safe_norm(v).detach()) == 5.0
    z = torch.zeros(3, requires_grad=True)
    safe_norm(z).backward()
    assert torch.equal(z.grad, torch.zeros(3))


def test_recon_and_task_losses() -> None:
    r = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    u = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    assert float(recon_loss(r, u)) == pytest.approx((4 + 9) / 4)
    pred = torch.tensor([[1.0], [-1.0]])
    assert float(task_loss(pred, torch.tensor([[0.0], [1.0]]), 1)) == pytest.approx((1 + 4) / 2)
    logits = torch.tensor([[0.0, 0.0]])
    # a batch of one keeps a 1-D target (the original's squeeze() made it 0-d)
    assert float(task_loss(logits, torch.tensor([1]), 2)) == pytest.approx(math.log(2))


def _output(b: int = 4, h: int = 2, seed: int = 0) -> MisaOutput:
    g = torch.Generator().manual_seed(seed)
    r = lambda: torch.rand(b, h, generator=g)  # noqa: E731
    tri = lambda: PerModality(t=r(), v=r(), a=r())  # noqa: E731
    return MisaOutput(prediction=torch.rand(b, 1, generator=g), utt=tri(), private=tri(), shared=tri(), recon=tri())


def test_weighted_total_and_sums() -> None:
    out = _output()
    labels = torch.zeros(4, 1)
    cfg = MisaConfig(text_encoder="vectors", text_input_size=2, hidden_size=2, diff_weight=0.3, sim_weight=1.0, recon_weight=2.0)
    losses = compute_losses(out, labels, cfg)
    p, s = out.private, out.shared
    diff = sum(float(diff_loss(a, b)) for a, b in [(p.t, s.t), (p.v, s.v), (p.a, s.a), (p.a, p.t), (p.a, p.v), (p.t, p.v)])
    sim = (float(cmd(s.t, s.v)) + float(cmd(s.t, s.a)) + float(cmd(s.a, s.v))) / 3
    recon = sum(float(recon_loss(getattr(out.recon, m), getattr(out.utt, m))) for m in "tva") / 3
    task = float(((out.prediction - labels) ** 2).mean())
    assert float(losses.diff) == pytest.approx(diff, rel=1e-6)
    assert float(losses.sim) == pytest.approx(sim, rel=1e-6)
    assert float(losses.recon) == pytest.approx(recon, rel=1e-6)
    assert float(losses.total) == pytest.approx(task + 0.3 * diff + sim + 2.0 * recon, rel=1e-6)


def test_adversarial_similarity_is_domain_cross_entropy() -> None:
    out = _output(b=2)
    logits = torch.zeros(2, 3)
    logits_v = torch.tensor([[0.0, 5.0, 0.0], [0.0, 5.0, 0.0]])
    out.domain_logits = PerModality(t=logits, v=logits_v, a=logits)
    cfg = MisaConfig(text_encoder="vectors", text_input_size=2, hidden_size=2, similarity="adversarial")
    sim = float(compute_losses(out, torch.zeros(2, 1), cfg).sim)
    ce_uniform = math.log(3)
    ce_v = -math.log(math.exp(5) / (math.exp(5) + 2))
    assert sim == pytest.approx((4 * ce_uniform + 2 * ce_v) / 6, rel=1e-6)


def test_gradient_reversal_flips_and_scales() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = reverse_gradient(x, 0.5)
    assert torch.equal(y, x)
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-0.5, -1.0, -1.5]))
