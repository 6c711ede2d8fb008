"""The causal video VAE of LTX-Video (official ``CausalVideoAutoencoder``), encoder and decoder for every family.

Families (see :attr:`VAEConfig.family`):

* ``0.9``: shared block list, channel changes by ``res_x_y`` blocks with 1x1x1 shortcuts, plain strided
  convolutions down, depth-to-space up, no timestep conditioning.
* ``0.9.1``: same encoder; the decoder is timestep-conditioned (adaLN-style scale/shift per resnet) and injects
  spatial noise maps in its ``res_x`` blocks, with residual depth-to-space upsamplers.
* ``0.9.5`` and later: space-to-depth encoder downsamplers with averaged skip paths, 5-layer decoder stages.

Pixels ``[B, 3, 1+8k, H, W]`` in [-1, 1] map to latents ``[B, C, 1+k, H/32, W/32]``. The encoder is always
causal (first frame replicated in front); the decoder pads both ends unless ``causal_decoder`` is set.
Module attribute names reproduce the official state-dict keys, so official weights load unchanged.

The blocks (reshapes, causal convolution, resnets, resamplers) are in :mod:`ltxcli.models.vae_blocks`; this
module assembles them into the encoder, the decoder and the VAE.

The forward passes are written for inference: they modify their own intermediate tensors in place to keep
the decoder's peak memory down, so run them under ``torch.no_grad()`` / ``torch.inference_mode()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltxcli.models.configs import ConfigError, VAEConfig, decoder_conv_in_channels
from ltxcli.models.upcast import UpcastScratch, compute_dtype, first_param_dtype
from ltxcli.models.vae_blocks import (
    CausalConv3d,
    DepthToSpaceUpsample,
    ResBlockStack,
    ResnetBlock3D,
    SpaceToDepthDownsample,
    Stride,
    TimestepEmbedding,
    patchify,
    pixel_norm,
    unpatchify,
)
from ltxcli.models.winograd import ConvAlgorithm, parse_conv_algorithm

# --- encoder / decoder --------------------------------------------------------------------------------------

_ENCODER_COMPRESS_STRIDES: dict[str, Stride] = {
    "compress_time": (2, 1, 1), "compress_space": (1, 2, 2), "compress_all": (2, 2, 2), "compress_all_x_y": (2, 2, 2),
    "compress_time_res": (2, 1, 1), "compress_space_res": (1, 2, 2), "compress_all_res": (2, 2, 2),
}
_DECODER_COMPRESS_STRIDES: dict[str, Stride] = {
    "compress_time": (2, 1, 1), "compress_space": (1, 2, 2), "compress_all": (2, 2, 2),
}


class Encoder(nn.Module):
    """Pixels ``[B, 3, F, H, W]`` -> moments ``[B, 2C, f, h, w]`` = ``[means | log-variances]`` (uniform log-var)."""

    def __init__(
        self,
        blocks: Sequence[tuple[str, dict]],
        in_channels: int = 3,
        latent_channels: int = 128,
        patch_size: int = 4,
        base_channels: int = 128,
        spatial_padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.latent_channels = latent_channels
        pad = spatial_padding_mode
        ch = base_channels
        self.conv_in = CausalConv3d(in_channels * patch_size**2, ch, 3, spatial_padding_mode=pad)
        self.down_blocks = nn.ModuleList()
        for name, params in blocks:
            block: nn.Module
            if name == "res_x":
                block = ResBlockStack(ch, params["num_layers"], spatial_padding_mode=pad)
            elif name == "res_x_y":
                out = ch * params.get("multiplier", 2)
                block = ResnetBlock3D(ch, out, spatial_padding_mode=pad)
                ch = out
            elif name in ("compress_time", "compress_space", "compress_all"):
                block = CausalConv3d(ch, ch, 3, stride=_ENCODER_COMPRESS_STRIDES[name], spatial_padding_mode=pad)
            elif name == "compress_all_x_y":
                out = ch * params.get("multiplier", 2)
                block = CausalConv3d(ch, out, 3, stride=_ENCODER_COMPRESS_STRIDES[name], spatial_padding_mode=pad)
                ch = out
            elif name in ("compress_time_res", "compress_space_res", "compress_all_res"):
                out = ch * params.get("multiplier", 2)
                block = SpaceToDepthDownsample(ch, out, _ENCODER_COMPRESS_STRIDES[name], pad)
                ch = out
            else:
                raise ConfigError(f"vae config: unsupported encoder block {name!r}")
            self.down_blocks.append(block)
        # "uniform" log-variance: one shared log-var channel after the means.
        self.conv_out = CausalConv3d(ch, latent_channels + 1, 3, spatial_padding_mode=pad)

    def features(self, x: Tensor) -> Tensor:
        """``[B, 3, F, H, W] -> [B, C+1, f, h, w]``: the C means, then the single log-variance channel."""
        x = self.conv_in(patchify(x, self.patch_size))  # [B, base, F, H/p, W/p]
        for block in self.down_blocks:
            x = block(x)
        return self.head(x)

    def head(self, x: Tensor) -> Tensor:
        """PixelNorm, SiLU, conv_out: the last block's ``[B, C', f, h, w]`` -> ``[B, C+1, f, h, w]``."""
        buf, h = self.conv_out.padded_empty(x, True)
        pixel_norm(x, out=h)
        return self.conv_out.forward_padded(F.silu(buf, inplace=True), True)

    def forward(self, x: Tensor) -> Tensor:
        """Official moments ``[B, 2C, f, h, w]`` (the log-variance channel tiled C times)."""
        h = self.features(x)
        logvar = h[:, -1:]
        return torch.cat([h, logvar.expand(-1, self.latent_channels - 1, -1, -1, -1)], dim=1)


class Decoder(nn.Module):
    """Un-normalised latents ``[B, C, f, h, w]`` -> pixels ``[B, 3, 8(f-1)+1, 32h, 32w]``.

    Walks the decoder block list in reverse. ``timestep`` (``[B]``, a scalar tensor or a float) is multiplied
    by the stored ``timestep_scale_multiplier``; timestep-conditioned decoders require it, others ignore it.
    """

    def __init__(
        self,
        blocks: Sequence[tuple[str, dict]],
        latent_channels: int = 128,
        out_channels: int = 3,
        patch_size: int = 4,
        base_channels: int = 128,
        causal: bool = False,
        timestep_conditioning: bool = False,
        spatial_padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.causal = causal
        self.timestep_conditioning = timestep_conditioning
        pad = spatial_padding_mode
        reversed_blocks = list(reversed(blocks))
        ch = decoder_conv_in_channels(blocks, base_channels)
        self.conv_in = CausalConv3d(latent_channels, ch, 3, spatial_padding_mode=pad)
        self.up_blocks = nn.ModuleList()
        for name, params in reversed_blocks:
            block: nn.Module
            if name == "res_x":
                block = ResBlockStack(
                    ch, params["num_layers"], params.get("inject_noise", False), timestep_conditioning, pad
                )
            elif name == "res_x_y":
                out = ch // params.get("multiplier", 2)
                block = ResnetBlock3D(ch, out, params.get("inject_noise", False), False, pad)
                ch = out
            elif name in ("compress_time", "compress_space"):
                block = DepthToSpaceUpsample(ch, _DECODER_COMPRESS_STRIDES[name], spatial_padding_mode=pad)
            elif name == "compress_all":
                mult = params.get("multiplier", 1)
                block = DepthToSpaceUpsample(
                    ch, _DECODER_COMPRESS_STRIDES[name], params.get("residual", False), mult, pad
                )
                ch //= mult
            else:
                raise ConfigError(f"vae config: unsupported decoder block {name!r}")
            self.up_blocks.append(block)
        self.conv_out = CausalConv3d(ch, out_channels * patch_size**2, 3, spatial_padding_mode=pad)
        if timestep_conditioning:
            # Initial value only; the checkpoint's stored value is what runs.
            self.timestep_scale_multiplier = nn.Parameter(torch.tensor(1000.0))
            self.last_time_embedder = TimestepEmbedding(2 * ch)
            self.last_scale_shift_table = nn.Parameter(torch.zeros(2, ch))

    def scaled_timestep(
        self, timestep: Tensor | float | None, batch: int, device: torch.device
    ) -> Tensor | None:
        """``timestep * timestep_scale_multiplier`` as ``[batch]`` (None for a decoder without conditioning)."""
        if not self.timestep_conditioning:
            return None
        if timestep is None:
            raise ValueError("this VAE decoder is timestep-conditioned: pass a timestep (e.g. 0.05)")
        return _batch_timestep(timestep, batch, device) * self.timestep_scale_multiplier  # [B]

    def run_blocks(
        self,
        x: Tensor,
        start: int,
        stop: int,
        scaled_t: Tensor | None,
        generator: torch.Generator | Callable[[Sequence[int], Tensor], Tensor] | None = None,
    ) -> Tensor:
        """``up_blocks[start:stop]`` on ``x``. ``generator``: a torch generator, None (global RNG) or a noise
        source such as ``ltxcli.vae_tiling.CroppedNoise``."""
        for block in self.up_blocks[start:stop]:
            if isinstance(block, ResBlockStack):
                x = block(x, self.causal, scaled_t, generator)
            elif isinstance(block, ResnetBlock3D):
                x = block(x, self.causal, None, generator)
            else:
                x = block(x, self.causal)
        return x

    def forward(
        self,
        z: Tensor,
        timestep: Tensor | float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        batch = z.shape[0]
        scaled_t = self.scaled_timestep(timestep, batch, z.device)
        x = self.conv_in(z, self.causal)
        # As official: the blocks run in the dtype of the up-block parameters.
        x = x.to(first_param_dtype(self.up_blocks))
        x = self.run_blocks(x, 0, len(self.up_blocks), scaled_t, generator)
        buf, h = self.conv_out.padded_empty(x, self.causal)
        x = pixel_norm(x, out=h)
        if scaled_t is not None:
            emb = self.last_time_embedder(scaled_t, x.dtype)  # [B, 2C]
            ada = self.last_scale_shift_table[None, :, :, None, None, None] + emb.reshape(
                batch, 2, -1, 1, 1, 1
            )  # [B, 2, C, 1, 1, 1]
            shift, scale = ada.unbind(dim=1)
            x.mul_(1 + scale).add_(shift)
        x = self.conv_out.forward_padded(F.silu(buf, inplace=True), self.causal)  # [B, 3*p*p, F, H, W]
        del buf
        return unpatchify(x, self.patch_size)


def _batch_timestep(timestep: Tensor | float, batch: int, device: torch.device) -> Tensor:
    """A float, a scalar tensor, ``[1]`` or ``[B]`` -> ``[B]`` on ``device`` (python floats become float32)."""
    if not isinstance(timestep, Tensor):
        timestep = torch.tensor(float(timestep), dtype=torch.float32)
    t = timestep.to(device).reshape(-1)
    if t.shape[0] == 1:
        return t.expand(batch)
    if t.shape[0] != batch:
        raise ValueError(f"decoder timestep has {t.shape[0]} values for a batch of {batch}")
    return t


# --- the VAE ------------------------------------------------------------------------------------------------


class PerChannelStatistics(nn.Module):
    """Latent statistics under the official buffer names (keys ``per_channel_statistics.std-of-means`` etc.)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("std-of-means", torch.ones(channels))
        self.register_buffer("mean-of-means", torch.zeros(channels))

    @property
    def std_of_means(self) -> Tensor:
        return getattr(self, "std-of-means")

    @property
    def mean_of_means(self) -> Tensor:
        return getattr(self, "mean-of-means")


class CausalVideoVAE(nn.Module):
    """The official ``CausalVideoAutoencoder`` for one :class:`VAEConfig` (any released family)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(
            config.encoder_blocks,
            in_channels=config.in_channels,
            latent_channels=config.latent_channels,
            patch_size=config.patch_size,
            base_channels=config.encoder_base_channels,
            spatial_padding_mode=config.spatial_padding_mode,
        )
        self.decoder = Decoder(
            config.decoder_blocks,
            latent_channels=config.latent_channels,
            out_channels=config.out_channels,
            patch_size=config.patch_size,
            base_channels=config.decoder_base_channels,
            causal=config.causal_decoder,
            timestep_conditioning=config.timestep_conditioning,
            spatial_padding_mode=config.spatial_padding_mode,
        )
        self.per_channel_statistics = PerChannelStatistics(config.latent_channels)
        self.set_conv_algorithm(ConvAlgorithm.AUTO)

    def set_conv_algorithm(self, algorithm: ConvAlgorithm | str) -> ConvAlgorithm:
        """Choose how every 3x3x3 convolution of the encoder and decoder runs (see
        :class:`~ltxcli.models.winograd.ConvAlgorithm`; ``direct`` reproduces the official outputs bit for bit,
        ``auto`` (the default) takes time-Winograd where it is faster: large convolutions on the CPU)."""
        algorithm = parse_conv_algorithm(algorithm)
        scratch = self.scratch or UpcastScratch()
        for m in self.modules():
            if isinstance(m, CausalConv3d):
                m.algorithm, m.scratch = algorithm, scratch
        return algorithm

    @property
    def scratch(self) -> UpcastScratch | None:
        """The model's one scratch buffer: Winograd branch kernels and, once loaded narrow, widened weights."""
        return self.decoder.conv_in.scratch

    @property
    def conv_algorithm(self) -> ConvAlgorithm:
        return self.decoder.conv_in.algorithm

    @property
    def spatial_compression(self) -> int:
        return self.config.spatial_compression

    @property
    def temporal_compression(self) -> int:
        return self.config.temporal_compression

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def timestep_conditioning(self) -> bool:
        return self.config.timestep_conditioning

    def normalize(self, z: Tensor) -> Tensor:
        """Posterior mean -> model latents: ``(z - mean_of_means) / std_of_means`` per channel."""
        stats = self.per_channel_statistics
        mean = stats.mean_of_means.to(z.dtype).view(1, -1, 1, 1, 1)
        std = stats.std_of_means.to(z.dtype).view(1, -1, 1, 1, 1)
        return (z - mean) / std

    def unnormalize(self, z: Tensor) -> Tensor:
        """Model latents -> decoder input: ``z * std_of_means + mean_of_means`` per channel."""
        stats = self.per_channel_statistics
        mean = stats.mean_of_means.to(z.dtype).view(1, -1, 1, 1, 1)
        std = stats.std_of_means.to(z.dtype).view(1, -1, 1, 1, 1)
        return z * std + mean

    def encode(self, video: Tensor) -> Tensor:
        """``[B, 3, 1+8k, H, W]`` in [-1, 1] -> normalised posterior mode ``[B, C, 1+k, H/32, W/32]``."""
        video = video.to(compute_dtype(self.encoder.conv_in.conv))
        mean = self.encoder.features(video)[:, : self.config.latent_channels]
        return self.normalize(mean)

    def decode(
        self,
        latents: Tensor,
        timestep: Tensor | float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Normalised ``[B, C, 1+k, h, w]`` -> pixels ``[B, 3, 1+8k, 32h, 32w]`` (about [-1, 1]).

        ``timestep`` (float, scalar or ``[B]``) is required by timestep-conditioned decoders (0.9.1+) and
        ignored by the 0.9 decoder. Noise injection (0.9.1) draws from ``generator``, else the global RNG.
        """
        z = self.unnormalize(latents.to(compute_dtype(self.decoder.conv_in.conv)))
        return self.decoder(z, timestep, generator)
