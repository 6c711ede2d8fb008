"""Latent upsamplers (spatial: x2 in height and width; temporal: x2 in latent frames) and the AdaIN filter.

The module works on UN-normalised VAE latents: spatial ``[B, C, F, H, W] -> [B, C, F, 2H, 2W]``, temporal
(``ltxv-temporal-upscaler-0.9.7``) ``[B, C, F, H, W] -> [B, C, 2F - 1, H, W]``. The multi-scale pipeline
un-normalises the first-pass latents, runs the model, normalises again and then matches the per-channel
statistics of the result to the first-pass latents with :func:`adain`.
Attribute names follow the official checkpoint keys (``initial_conv``, ``res_blocks.{i}.conv1`` ...).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ltxcli.models.configs import ConfigError, UpsamplerConfig

_GROUPS = 32  # GroupNorm groups in every norm of the released upsamplers


class ResBlock(nn.Module):
    """``conv1 -> norm1 -> SiLU -> conv2 -> norm2 -> SiLU(x + residual)`` with 3x3x3 convolutions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.GroupNorm(_GROUPS, channels)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm2 = nn.GroupNorm(_GROUPS, channels)
        self.activation = nn.SiLU()

    def forward(self, x: Tensor) -> Tensor:
        h = self.activation(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return self.activation(h + x)


class TemporalShuffle(nn.Module):
    """The official ``PixelShuffleND(1)``: ``[B, (C 2), F, H, W] -> [B, C, (F 2), H, W]`` (channel ``c * 2 + p``
    becomes frame ``f * 2 + p``)."""

    def forward(self, x: Tensor) -> Tensor:
        b, c2, f, h, w = x.shape
        # [B, 2C, F, H, W] -> [B, C, 2, F, H, W] -> [B, C, F, 2, H, W] -> [B, C, 2F, H, W]
        return x.view(b, c2 // 2, 2, f, h, w).transpose(2, 3).reshape(b, c2 // 2, 2 * f, h, w)


class LatentUpsampler(nn.Module):
    """The released latent upsamplers (3-D convolutions): spatial x2 through a per-frame Conv2d + pixel shuffle,
    or temporal x2 through a Conv3d + frame shuffle that drops the first output frame (the causal first frame
    stays one frame: ``F -> 2F - 1``)."""

    def __init__(self, config: UpsamplerConfig | None = None) -> None:
        super().__init__()
        config = config or UpsamplerConfig()
        if config.dims != 3 or config.spatial_upsample == config.temporal_upsample:
            raise ConfigError(
                "upsampler config: only dims=3 with exactly one of spatial_upsample / temporal_upsample is "
                "supported (the released spatial and temporal upscalers)"
            )
        if config.mid_channels % _GROUPS:
            raise ConfigError(
                f"upsampler config: mid_channels={config.mid_channels} must be a multiple of {_GROUPS} (GroupNorm groups)"
            )
        self.config = config
        mid = config.mid_channels
        self.initial_conv = nn.Conv3d(config.in_channels, mid, kernel_size=3, padding=1)
        self.initial_norm = nn.GroupNorm(_GROUPS, mid)
        self.initial_activation = nn.SiLU()
        self.res_blocks = nn.ModuleList(ResBlock(mid) for _ in range(config.num_blocks_per_stage))
        self.upsampler: nn.Sequential
        if config.temporal_upsample:
            self.upsampler = nn.Sequential(nn.Conv3d(mid, 2 * mid, kernel_size=3, padding=1), TemporalShuffle())
        else:
            # upsampler.0 is a 2-D conv run on every frame; PixelShuffle(2) maps channel (c, p1, p2) to pixel
            # (h*2 + p1, w*2 + p2), the official "b (c p1 p2) h w -> b c (h p1) (w p2)" layout.
            self.upsampler = nn.Sequential(nn.Conv2d(mid, 4 * mid, kernel_size=3, padding=1), nn.PixelShuffle(2))
        self.post_upsample_res_blocks = nn.ModuleList(ResBlock(mid) for _ in range(config.num_blocks_per_stage))
        self.final_conv = nn.Conv3d(mid, config.in_channels, kernel_size=3, padding=1)

    def forward(self, latents: Tensor) -> Tensor:
        b, _, f, _, _ = latents.shape
        x = self.initial_activation(self.initial_norm(self.initial_conv(latents)))
        for block in self.res_blocks:
            x = block(x)
        if self.config.temporal_upsample:
            # [B, C, F, H, W] -> [B, C, 2F, H, W] -> [B, C, 2F - 1, H, W]: the official drop of the first frame
            x = self.upsampler(x)[:, :, 1:]
        else:
            # [B, C, F, H, W] -> [B*F, C, H, W] -> [B*F, C, 2H, 2W] -> [B, C, F, 2H, 2W]
            x = x.transpose(1, 2).flatten(0, 1)
            x = self.upsampler(x)
            x = x.unflatten(0, (b, f)).transpose(1, 2)
        for block in self.post_upsample_res_blocks:
            x = block(x)
        return self.final_conv(x)


def adain(latents: Tensor, reference: Tensor, factor: float = 1.0) -> Tensor:
    """Give every (batch, channel) slice of ``latents`` the mean and std of the same slice of ``reference``.

    Statistics are over all remaining dims with the unbiased std (``torch.std_mean``); the result is
    ``lerp(latents, matched, factor)``. ``reference`` may differ from ``latents`` in its trailing sizes
    (the upsampled latents are matched to the lower-resolution first-pass latents). Where either side has one
    element per slice the unbiased std is undefined (0/0: the official filter gives NaN), so ``latents`` is returned
    unfiltered.
    """
    if latents.shape[:2] != reference.shape[:2]:
        raise ValueError(
            f"adain: batch/channel dims differ: latents {tuple(latents.shape)}, reference {tuple(reference.shape)}"
        )
    dims = tuple(range(2, latents.ndim))
    # One element per (batch, channel) slice, e.g. a window's one remaining latent frame at 1x1 latents (32x32
    # pixels): no std to match, and a NaN here would reach the decoded video. Larger slices are untouched.
    if min(latents[0, 0].numel(), reference[0, 0].numel()) < 2:
        return latents
    r_std, r_mean = torch.std_mean(reference, dim=dims, keepdim=True)
    i_std, i_mean = torch.std_mean(latents, dim=dims, keepdim=True)
    # The official filter writes the matched values back into a copy of ``latents`` (its dtype).
    matched = ((latents - i_mean) / i_std * r_std + r_mean).to(latents.dtype)
    return torch.lerp(latents, matched, factor)
