"""Per-sample resampling of time-first sequences (MMLATCH.md §4.6).

Masks computed on one modality's time axis are moved onto another's by linear interpolation with
half-step (not corner-aligned) sampling: output step ``j`` of sample ``b`` reads source position

    p = (j + 0.5) · L_src[b] / L_dst[b] − 0.5,   clamped to [0, L_src[b] − 1],

interpolating between ``floor(p)`` and the next step. Equal lengths give the identity, a constant
sequence stays constant. Steps at or beyond ``L_dst[b]`` are 0.
"""

from __future__ import annotations

import torch


def valid_steps(lengths: torch.Tensor, total_length: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean ``(total_length, B)``: True at steps ``j < lengths[b]``."""
    steps = torch.arange(total_length, device=device)
    return steps[:, None] < lengths.to(device)[None, :]


def fit_time(x: torch.Tensor, total_length: int) -> torch.Tensor:
    """Crop or zero-pad ``x (T, B, d)`` along time to ``total_length`` steps."""
    t = x.shape[0]
    if t == total_length:
        return x
    if t > total_length:
        return x[:total_length]
    pad = x.new_zeros((total_length - t, *x.shape[1:]))
    return torch.cat((x, pad), dim=0)


def resample_time(
    x: torch.Tensor,
    src_lengths: torch.Tensor,
    dst_lengths: torch.Tensor,
    total_length: int | None = None,
) -> torch.Tensor:
    """Resample ``x (T_src, B, d)`` per sample from ``src_lengths`` to ``dst_lengths`` steps.

    Args:
        x: time-first sequence; only steps ``< src_lengths[b]`` of sample ``b`` are read.
        src_lengths: ``(B,)`` integer lengths of the input (any device; >= 1).
        dst_lengths: ``(B,)`` integer lengths of the result (any device; >= 1).
        total_length: time size of the result (default ``max(dst_lengths)``).

    Returns:
        ``(total_length, B, d)``, zero at steps ``>= dst_lengths[b]``.
    """
    src = src_lengths.detach().to("cpu", torch.long)
    dst = dst_lengths.detach().to("cpu", torch.long)
    if total_length is None:
        total_length = int(dst.max())
    valid = valid_steps(dst, total_length, x.device)  # (T_out, B)
    if torch.equal(src, dst):
        out = fit_time(x, total_length)
        return torch.where(valid[..., None], out, torch.zeros((), dtype=out.dtype, device=out.device))
    if bool((src < 1).any()) or bool((dst < 1).any()):
        raise ValueError("resample_time needs lengths >= 1")
    # positions in float64 so that the identity and hand examples are exact
    steps = torch.arange(total_length, dtype=torch.float64)[:, None]  # (T_out, 1)
    ratio = (src.to(torch.float64) / dst.to(torch.float64))[None, :]  # (1, B)
    last = (src - 1).to(torch.float64)[None, :]
    pos = ((steps + 0.5) * ratio - 0.5).clamp(min=0.0)
    pos = torch.minimum(pos, last)  # (T_out, B)
    lo = pos.floor()
    hi = torch.minimum(lo + 1.0, last)
    weight = (pos - lo).to(x.dtype).to(x.device)[..., None]  # (T_out, B, 1)
    d = x.shape[2]
    lo_idx = lo.long().to(x.device)[..., None].expand(-1, -1, d)
    hi_idx = hi.long().to(x.device)[..., None].expand(-1, -1, d)
    out = (1.0 - weight) * x.gather(0, lo_idx) + weight * x.gather(0, hi_idx)
    return torch.where(valid[..., None], out, torch.zeros((), dtype=out.dtype, device=out.device))
