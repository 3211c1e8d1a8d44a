"""Per-sample time resampling of masks (MMLATCH.md §4.6, §4.11 item 9)."""

from __future__ import annotations

import pytest
import torch

from misalatch.models.resample import fit_time, resample_time, valid_steps


def test_identity_when_lengths_match() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(7, 3, 4, generator=g)
    lengths = torch.tensor([7, 5, 2])
    out = resample_time(x, lengths, lengths)
    valid = valid_steps(lengths, 7)[..., None]
    torch.testing.assert_close(out, torch.where(valid, x, torch.zeros(())), rtol=0, atol=0)
    # also through the interpolation code path: one sample differs, the equal ones stay exact
    other = resample_time(x, torch.tensor([7, 5, 2]), torch.tensor([7, 5, 3]))
    torch.testing.assert_close(other[:, :2], out[:, :2], rtol=0, atol=0)


def test_constant_stays_constant_up_and_down() -> None:
    x = torch.full((9, 2, 3), 0.37)
    for src, dst in (([9, 4], [3, 8]), ([2, 9], [9, 1])):
        out = resample_time(x, torch.tensor(src), torch.tensor(dst), total_length=10)
        assert out.shape == (10, 2, 3)
        for b, n in enumerate(dst):
            torch.testing.assert_close(out[:n, b], torch.full((n, 3), 0.37), rtol=0, atol=1e-7)
            assert torch.count_nonzero(out[n:, b]) == 0


def test_hand_computed_example() -> None:
    # source [0, 10, 20, 30] (L=4) → 2 steps: p_j = (j + .5)·2 − .5 = .5, 2.5 → 5, 25
    # source [0, 10] (L=2) → 4 steps: p_j = (j + .5)/2 − .5 = −.25, .25, .75, 1.25 → clamp → 0, 2.5, 7.5, 10
    x = torch.zeros(4, 2, 1)
    x[:, 0, 0] = torch.tensor([0.0, 10.0, 20.0, 30.0])
    x[:2, 1, 0] = torch.tensor([0.0, 10.0])
    out = resample_time(x, torch.tensor([4, 2]), torch.tensor([2, 4]))
    assert out.shape == (4, 2, 1)
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([5.0, 25.0, 0.0, 0.0]))
    torch.testing.assert_close(out[:, 1, 0], torch.tensor([0.0, 2.5, 7.5, 10.0]))


def test_steps_beyond_the_source_length_are_never_read() -> None:
    x = torch.rand(5, 1, 2)
    ref = resample_time(x, torch.tensor([3]), torch.tensor([7]))
    x[3:] = 1e6
    torch.testing.assert_close(resample_time(x, torch.tensor([3]), torch.tensor([7])), ref, rtol=0, atol=0)


def test_fit_time_and_bad_lengths() -> None:
    x = torch.ones(3, 2, 1)
    assert fit_time(x, 5).shape == (5, 2, 1) and fit_time(x, 2).shape == (2, 2, 1)
    with pytest.raises(ValueError):
        resample_time(x, torch.tensor([0, 2]), torch.tensor([1, 3]))
