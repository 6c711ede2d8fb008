"""Token coordinates and the 3D rotary tables of the LTX-Video DiT.

Positions flow: latent integer coords ``(f, h, w)`` -> pixel coords (VAE scale factors, optional causal
time fix) -> the pipeline divides time by the frame rate -> :func:`rope_tables` divides by ``max_pos`` and
builds cos/sin over the FULL inner dim (all heads together), in float32 and in the official order of
operations, so the tables equal the official ``precompute_freqs_cis`` bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def latent_coords(frames: int, height: int, width: int, device: torch.device | str | None = None) -> Tensor:
    """Integer latent coordinates ``[3, frames*height*width]`` (int64), tokens in ``(f, h, w)`` row-major order."""
    axes = [torch.arange(n, device=device) for n in (frames, height, width)]
    grid = torch.meshgrid(*axes, indexing="ij")  # 3 x [f, h, w]
    return torch.stack(grid).flatten(1)


def pixel_coords(
    latent_coords: Tensor, *, causal_fix: bool, scale: Sequence[int] = (8, 32, 32)
) -> Tensor:
    """Pixel coordinates (float32) of latent coords ``[..., 3, N]``.

    Each axis is multiplied by its VAE scale factor. With ``causal_fix`` (releases 0.9.5+) the first latent
    frame covers a single pixel frame, so time becomes ``max(0, 8f + 1 - 8)``. The arithmetic is done on the
    integer coords, as the official code does, then converted to float32.
    """
    factors = torch.tensor(list(scale), dtype=latent_coords.dtype, device=latent_coords.device)
    px = latent_coords * factors[:, None]  # [..., 3, N]
    if causal_fix:
        t = (px[..., 0, :] + 1 - int(scale[0])).clamp(min=0)
        px = torch.cat([t.unsqueeze(-2), px[..., 1:, :]], dim=-2)
    return px.to(torch.float32)


def rope_tables(
    indices_grid: Tensor, dim: int, theta: float, max_pos: Sequence[float]
) -> tuple[Tensor, Tensor]:
    """cos and sin tables, each float32 ``[B, N, dim]``.

    ``indices_grid`` is ``[B, 3, N]``: pixel coordinates with time already in seconds (divided by the frame
    rate). Channel layout: ``dim % 6`` leading pad channels (cos 1, sin 0), then for frequency ``k`` and axis
    ``a`` (t, h, w) the pair ``2(3k + a), 2(3k + a) + 1`` shares one angle.
    """
    n_freq = dim // 6
    # [B, N, 3]: positions as a fraction of max_pos, per axis.
    frac = torch.stack([indices_grid[:, a] / max_pos[a] for a in range(3)], dim=-1)
    # theta ** linspace(log_theta(1), log_theta(theta)) = theta ** linspace(0, 1); the scaling keeps the
    # official two-step order (* pi, then / 2).
    omega = torch.pow(theta, torch.linspace(0.0, 1.0, n_freq, dtype=torch.float32, device=frac.device))
    omega = omega.to(torch.float32) * torch.pi / 2
    # [B, N, F, 3] -> [B, N, 3F]: angle index 3k + a.
    angles = (omega[:, None] * (frac.unsqueeze(-2) * 2 - 1)).flatten(2)
    cos = angles.cos().repeat_interleave(2, dim=-1)
    sin = angles.sin().repeat_interleave(2, dim=-1)
    pad = dim % 6
    if pad:
        cos = torch.cat([cos.new_ones(*cos.shape[:-1], pad), cos], dim=-1)
        sin = torch.cat([sin.new_zeros(*sin.shape[:-1], pad), sin], dim=-1)
    return cos, sin


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate adjacent channel pairs of ``x [B, N, D]`` (before the head split): ``x*cos + rot(x)*sin``.

    ``rot`` maps each pair ``(x0, x1)`` to ``(-x1, x0)``. cos/sin are cast to ``x``'s dtype first (a no-op
    when the caller already did); tables with batch 1 broadcast over the batch.
    """
    cos = cos.to(x.dtype)
    sin = sin.to(x.dtype)
    x0, x1 = x.unflatten(-1, (-1, 2)).unbind(-1)  # [B, N, D/2] each
    rotated = torch.stack((-x1, x0), dim=-1).flatten(-2)
    return x * cos + rotated * sin
