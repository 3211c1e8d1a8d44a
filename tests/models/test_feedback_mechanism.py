"""Does the feedback do its job? A synthetic task only top-down masks from the right source can solve.

Visual features have two groups of 4 dimensions, A (0-3) and B (4-7). In every sample one group
carries the label (a per-sample value z, constant over time, plus small per-step noise) and the other
carries an independent value of the same distribution ("loud" noise as large as the signal), so the
visual stream alone cannot tell which group is informative. Acoustic dimension 0 is a per-sample cue
(−1: A is informative, +1: B is informative); text is pure noise. After a short deterministic training
the visual masks — driven by text and acoustic — must be clearly higher on the informative group than
on the noise group, for each value of the cue, on held-out samples.

Margin = mean mask on the informative group − mean mask on the noise group, over valid steps of the
held-out samples with that cue. Measured with the settings below (seeds 0-4, 2 CPU threads):
``sequence`` (200 steps) 0.07-0.19 — the ceiling is about 0.23, since an LSTM generator's σ lies in
(0.27, 0.73) and the mean of two sigmoids halves the spread (MMLATCH.md §4.2 item 11); ``static``
(150 steps, Linear generators, no cap) 0.24-0.47. A mask wired to the wrong source (the visual
target fed text twice, so no cue) gave −0.07 to 0.08 per cue with the minimum over cues ≤ 0.02, and
a constant mask gives 0. Thresholds: 0.05 (sequence), 0.15 (static).

The auxiliary MISA losses are switched off here (weights 0): at this scale the difference loss
dominates the gradient and the task is not learned within a few hundred steps, with or without
feedback; the losses are tested elsewhere. Training takes about 6 s (sequence) and 4 s (static).
"""

from __future__ import annotations

import pytest
import torch

from misalatch.models.config import MisaConfig
from misalatch.models.feedback import FeedbackBlock
from misalatch.models.misa import MISA
from misalatch.models.outputs import ModelInputs

D_V, D_A, D_E, T = 8, 4, 4, 6  # D_E == D_A so that a miswired source has the right width
GROUPS = (slice(0, 4), slice(4, 8))


def make_task(n: int, seed: int, amplitude: float = 1.5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cue = torch.randint(0, 2, (n,), generator=g)  # 0: group A informative, 1: group B
    z = torch.randn(n, generator=g)
    distractor = torch.randn(n, generator=g)
    lengths = torch.randint(4, T + 1, (n,), generator=g)
    signal = amplitude * z[None, :, None].expand(T, n, 4)
    noise = amplitude * distractor[None, :, None].expand(T, n, 4)
    visual = 0.3 * torch.randn(T, n, D_V, generator=g)
    pick = (cue == 0)[None, :, None]
    visual[:, :, GROUPS[0]] += torch.where(pick, signal, noise)
    visual[:, :, GROUPS[1]] += torch.where(pick, noise, signal)
    acoustic = 0.3 * torch.randn(T, n, D_A, generator=g)
    acoustic[:, :, 0] += 2.0 * cue.float() - 1.0
    text = torch.randn(T, n, D_E, generator=g)
    valid = (torch.arange(T)[:, None] < lengths[None, :]).float()[..., None]
    return {"visual": visual * valid, "acoustic": acoustic * valid, "text": text * valid, "lengths": lengths,
            "cue": cue, "label": z[:, None]}


def batch(task: dict[str, torch.Tensor], idx: torch.Tensor) -> ModelInputs:
    return ModelInputs(visual=task["visual"][:, idx], acoustic=task["acoustic"][:, idx], lengths=task["lengths"][idx],
                       text_vectors=task["text"][:, idx])


def train_and_measure(variant: str, steps: int, seed: int = 0) -> list[float]:
    """Margins (informative − noise group) of the held-out visual masks, per cue value."""
    torch.manual_seed(seed)
    cfg = MisaConfig(text_encoder="vectors", text_input_size=D_E, visual_size=D_V, acoustic_size=D_A, hidden_size=16,
                     dropout=0.1, diff_weight=0.0, sim_weight=0.0, recon_weight=0.0, feedback=variant)
    model = MISA(cfg)
    train, held_out = make_task(512, seed=1), make_task(256, seed=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, 512, (32,), generator=g)
        optimizer.zero_grad()
        model(batch(train, idx), labels=train["label"][idx]).losses.total.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()
    with torch.no_grad():
        masks = model(batch(held_out, torch.arange(256))).masks.visual  # (T, B, D_V)
    valid = torch.arange(T)[:, None] < held_out["lengths"][None, :]
    margins = []
    for cue in (0, 1):
        steps_ = masks[valid & (held_out["cue"][None, :] == cue)]  # (n, D_V)
        informative, noise = steps_[:, GROUPS[cue]], steps_[:, GROUPS[1 - cue]]
        margins.append(float(informative.mean() - noise.mean()))
    return margins


@pytest.mark.parametrize("variant, steps, threshold", [("sequence", 200, 0.05), ("static", 150, 0.15)])
def test_visual_masks_select_the_group_the_acoustic_cue_names(variant: str, steps: int, threshold: float) -> None:
    margins = train_and_measure(variant, steps)
    assert min(margins) > threshold, f"{variant}: margins per cue {margins}"


def test_a_mask_wired_to_the_wrong_source_fails_the_same_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: the visual target sees text twice (no cue) → the margin check fails."""
    original = FeedbackBlock.high_level

    def miswired(self, *args, **kwargs):
        sources = original(self, *args, **kwargs)
        return {**sources, "acoustic": sources["text"]}

    monkeypatch.setattr(FeedbackBlock, "high_level", miswired)
    margins = train_and_measure("sequence", 200)
    assert min(margins) < 0.05, f"miswired margins per cue {margins}"
