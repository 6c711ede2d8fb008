"""The building blocks of the causal video VAE (:mod:`ltxcli.models.vae`): the hand-written reshapes, the causal
3D convolution, the norms and timestep embeddings, the resnet blocks and the space/depth resamplers.

Shapes are ``[B, C, F, H, W]`` throughout. Module attribute names reproduce the official state-dict keys.
Like the encoder and decoder built from them, the forward passes are written for inference: they modify their
own intermediate tensors in place to keep the decoder's peak memory down.
"""


from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltxcli.models.configs import ConfigError
from ltxcli.models.embeddings import TIME_PROJ_DIM, timestep_sinusoid
from ltxcli.models.upcast import UpcastScratch
from ltxcli.models.winograd import ConvAlgorithm, time_winograd_conv3d, use_winograd

PIXEL_NORM_EPS = 1e-8  # official PixelNorm
SHORTCUT_NORM_EPS = 1e-6  # LayerNorm before the 1x1x1 shortcut of channel-changing resnets

Stride = tuple[int, int, int]



# --- reshapes (written out by hand; each is one copy at most) -------------------------------------------


def patchify(x: Tensor, patch: int) -> Tensor:
    """``[B, C, F, H*p, W*p] -> [B, C*p*p, F, H, W]``, channel order ``(c, w_sub, h_sub)`` as official."""
    if patch == 1:
        return x
    b, c, f, hp, wp = x.shape
    h, w = hp // patch, wp // patch
    x = x.reshape(b, c, f, h, patch, w, patch)  # [B, C, F, H, q(h_sub), W, r(w_sub)]
    x = x.permute(0, 1, 6, 4, 2, 3, 5)  # [B, C, r, q, F, H, W]
    return x.reshape(b, c * patch * patch, f, h, w)


def unpatchify(x: Tensor, patch: int) -> Tensor:
    """Inverse of :func:`patchify`: ``[B, C*p*p, F, H, W] -> [B, C, F, H*p, W*p]``."""
    if patch == 1:
        return x
    b, cpp, f, h, w = x.shape
    c = cpp // (patch * patch)
    x = x.reshape(b, c, patch, patch, f, h, w)  # [B, C, r(w_sub), q(h_sub), F, H, W]
    x = x.permute(0, 1, 4, 5, 3, 6, 2)  # [B, C, F, H, q, W, r]
    return x.reshape(b, c, f, h * patch, w * patch)


def space_to_depth(x: Tensor, stride: Stride) -> Tensor:
    """``[B, C, D*s1, H*s2, W*s3] -> [B, C*s1*s2*s3, D, H, W]``, channel order ``(c, s1, s2, s3)``."""
    s1, s2, s3 = stride
    b, c, ds, hs, ws = x.shape
    d, h, w = ds // s1, hs // s2, ws // s3
    x = x.reshape(b, c, d, s1, h, s2, w, s3)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # [B, C, s1, s2, s3, D, H, W]
    return x.reshape(b, c * s1 * s2 * s3, d, h, w)


def depth_to_space(x: Tensor, stride: Stride) -> Tensor:
    """Inverse of :func:`space_to_depth`: ``[B, C*s1*s2*s3, D, H, W] -> [B, C, D*s1, H*s2, W*s3]``."""
    s1, s2, s3 = stride
    b, cs, d, h, w = x.shape
    c = cs // (s1 * s2 * s3)
    x = x.reshape(b, c, s1, s2, s3, d, h, w)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)  # [B, C, D, s1, H, s2, W, s3]
    return x.reshape(b, c, d * s1, h * s2, w * s3)


def pixel_norm(x: Tensor, out: Tensor | None = None) -> Tensor:
    """``x / sqrt(mean_c(x^2) + 1e-8)`` over dim 1 (official PixelNorm), no parameters.

    With ``out`` (same shape as ``x``, any strides) the squares and the result are written there, so no
    full-size temporary is allocated.
    """
    if out is None:
        return x / torch.sqrt(torch.mean(x**2, dim=1, keepdim=True) + PIXEL_NORM_EPS)
    squares = torch.mul(x, x, out=out)
    rms = torch.sqrt(squares.mean(dim=1, keepdim=True) + PIXEL_NORM_EPS)  # [B, 1, F, H, W]
    return torch.div(x, rms, out=out)


# --- leaf modules -----------------------------------------------------------------------------------------


class CausalConv3d(nn.Module):
    """3D convolution with spatial padding inside the conv and temporal padding by frame replication.

    ``causal``: ``k-1`` copies of the first frame in front; otherwise ``(k-1)/2`` copies of the first and
    the last frame on either side. The wrapped conv is ``.conv`` (keys ``*.conv.weight``).

    ``forward`` pads by concatenation (one copy of the input). Callers that compute the conv input
    themselves can avoid that copy: write it into the interior of :meth:`padded_empty` and call
    :meth:`forward_padded`, which fills the replicated frames in place.

    ``algorithm`` (set model-wide by :meth:`CausalVideoVAE.set_conv_algorithm`) picks the direct or the
    time-Winograd convolution (:mod:`ltxcli.models.winograd`); ``scratch`` holds the Winograd kernels.
    """

    algorithm: ConvAlgorithm = ConvAlgorithm.AUTO
    scratch: UpcastScratch | None = None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int | Stride = 1,
        spatial_padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.time_kernel_size = kernel_size
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=(0, kernel_size // 2, kernel_size // 2),
            padding_mode=spatial_padding_mode,
        )

    def time_padding(self, causal: bool) -> tuple[int, int]:
        """Replicated frames (in front, behind)."""
        k = self.time_kernel_size
        return (k - 1, 0) if causal else ((k - 1) // 2, (k - 1) // 2)

    def time_halo(self, x: Tensor, front: int, back: int) -> tuple[Tensor | None, Tensor | None]:
        """The ``front`` / ``back`` padding frames of ``x`` ``[B, C, F, H, W]`` that come from outside it; None
        where the edge frame is replicated (always, here). The swap point of ``ltxcli.parallel.vae``'s time-split
        decode, which sets it on an instance to its neighbours' frames."""
        return None, None

    def forward(self, x: Tensor, causal: bool = True) -> Tensor:
        # x: [B, C, F, H, W]
        front, back = self.time_padding(causal)
        before, after = self.time_halo(x, front, back)
        parts = [x]
        if front:
            parts.insert(0, before if before is not None else x[:, :, :1].expand(-1, -1, front, -1, -1))
        if back:
            parts.append(after if after is not None else x[:, :, -1:].expand(-1, -1, back, -1, -1))
        if len(parts) > 1:
            x = torch.cat(parts, dim=2)  # [B, C, front+F+back, H, W]
        return self.conv_time_padded(x)

    def conv_time_padded(self, x: Tensor) -> Tensor:
        """The convolution of an input already padded in time: ``[B, C, front+F+back, H, W] -> [B, O, F, H, W]``."""
        if use_winograd(self.algorithm, self.conv, x):
            return time_winograd_conv3d(self.conv, x, self.scratch)
        return self.conv(x)

    def padded_empty(self, like: Tensor, causal: bool) -> tuple[Tensor, Tensor]:
        """An uninitialised ``[B, C, front+F+back, H, W]`` buffer shaped for ``like`` and its ``[B, C, F, H, W]`` interior."""
        front, back = self.time_padding(causal)
        b, c, f, h, w = like.shape
        buf = like.new_empty(b, c, front + f + back, h, w)
        return buf, buf[:, :, front : front + f]

    def forward_padded(self, buf: Tensor, causal: bool) -> Tensor:
        """Conv of a :meth:`padded_empty` buffer whose interior holds the input (pad frames filled here)."""
        front, back = self.time_padding(causal)
        end = buf.shape[2] - back
        before, after = self.time_halo(buf[:, :, front:end], front, back)
        if front:
            buf[:, :, :front] = before if before is not None else buf[:, :, front : front + 1]
        if back:
            buf[:, :, end:] = after if after is not None else buf[:, :, end - 1 : end]
        return self.conv_time_padded(buf)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel dim of ``[B, C, F, H, W]`` (official ``LayerNorm``; keys ``norm.weight/bias``)."""

    def __init__(self, channels: int, eps: float = SHORTCUT_NORM_EPS) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps, elementwise_affine=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x.permute(0, 2, 3, 4, 1))  # [B, F, H, W, C]
        return x.permute(0, 4, 1, 2, 3)  # [B, C, F, H, W] (channels-last strides, as official)


class TimestepMLP(nn.Module):
    """``linear_1 -> SiLU -> linear_2`` (diffusers ``TimestepEmbedding``)."""

    def __init__(self, in_features: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_features, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TimestepEmbedding(nn.Module):
    """Scaled timestep ``[B] -> [B, dim]``; keys ``timestep_embedder.linear_{1,2}.*``.

    Same computation as diffusers ``PixArtAlphaCombinedTimestepSizeEmbeddings(dim, 0)`` without size inputs:
    float32 sinusoid, cast to the activation dtype, then the MLP (no trailing SiLU/linear).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.timestep_embedder = TimestepMLP(TIME_PROJ_DIM, dim)

    def forward(self, timestep: Tensor, dtype: torch.dtype) -> Tensor:
        return self.timestep_embedder(timestep_sinusoid(timestep).to(dtype))


# --- blocks -------------------------------------------------------------------------------------------------


def _add_spatial_noise(h: Tensor, per_channel_scale: Tensor, generator: torch.Generator | None) -> Tensor:
    """``h += randn(H, W) * scale[C, 1, 1]``: one noise map shared by batch, frames and channels (in place)."""
    shape = h.shape[-2:]
    if callable(generator):
        # A noise source (ltxcli.vae_tiling.CroppedNoise): this tile's crop of the full-size map.
        noise = generator(shape, h)
    elif generator is None:
        noise = torch.randn(shape, device=h.device, dtype=h.dtype)  # global RNG, as official
    else:
        # Drawn on the generator's device so a CPU generator reproduces the same map on any device.
        noise = torch.randn(shape, generator=generator, device=generator.device, dtype=h.dtype).to(h.device)
    scaled = noise[None] * per_channel_scale  # [C, H, W]
    return h.add_(scaled[:, None])  # broadcast over [B, C, F, H, W]


class ResnetBlock3D(nn.Module):
    """PixelNorm -> [scale/shift] -> SiLU -> conv1 -> [noise] -> PixelNorm -> [scale/shift] -> SiLU -> conv2
    -> [noise], plus the shortcut (LayerNorm + 1x1x1 conv when the channel count changes).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        inject_noise: bool = False,
        timestep_conditioning: bool = False,
        spatial_padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.inject_noise = inject_noise
        self.timestep_conditioning = timestep_conditioning
        self.conv1 = CausalConv3d(in_channels, out_channels, 3, spatial_padding_mode=spatial_padding_mode)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3, spatial_padding_mode=spatial_padding_mode)
        if inject_noise:
            # Both sized by in_channels, as official (only res_x blocks, where in == out, use them).
            self.per_channel_scale1 = nn.Parameter(torch.zeros(in_channels, 1, 1))
            self.per_channel_scale2 = nn.Parameter(torch.zeros(in_channels, 1, 1))
        if in_channels != out_channels:
            self.norm3 = ChannelLayerNorm(in_channels)
            self.conv_shortcut = nn.Conv3d(in_channels, out_channels, kernel_size=1)
        if timestep_conditioning:
            self.scale_shift_table = nn.Parameter(torch.zeros(4, in_channels))

    def forward(
        self,
        x: Tensor,
        causal: bool = True,
        temb: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        # x: [B, C_in, F, H, W]; temb: [B, 4*C_in] (the owning block's timestep embedding).
        # Each conv input is computed straight into its time-padded buffer (no concatenation copy), and
        # every elementwise step runs in place: at most x, one buffer and one conv output are alive.
        # SiLU runs over the whole contiguous buffer (its pad frames are overwritten by forward_padded), so
        # it takes the same vectorised path as official's contiguous tensors: same bits.
        if self.timestep_conditioning:
            if temb is None:
                raise ValueError("a timestep-conditioned resnet needs a timestep embedding")
            ada = self.scale_shift_table[None, :, :, None, None, None] + temb.reshape(
                x.shape[0], 4, -1, 1, 1, 1
            )  # [B, 4, C, 1, 1, 1]
            shift1, scale1, shift2, scale2 = ada.unbind(dim=1)
        buf, h = self.conv1.padded_empty(x, causal)
        h = pixel_norm(x, out=h)
        if self.timestep_conditioning:
            h.mul_(1 + scale1).add_(shift1)
        h = self.conv1.forward_padded(F.silu(buf, inplace=True), causal)  # [B, C_out, F, H, W]
        del buf  # before conv2's buffer exists: peak is x + one padded buffer + one conv output
        if self.inject_noise:
            h = _add_spatial_noise(h, self.per_channel_scale1, generator)
        buf, h2 = self.conv2.padded_empty(h, causal)
        h = pixel_norm(h, out=h2)
        if self.timestep_conditioning:
            h.mul_(1 + scale2).add_(shift2)
        h = self.conv2.forward_padded(F.silu(buf, inplace=True), causal)
        del buf
        if self.inject_noise:
            h = _add_spatial_noise(h, self.per_channel_scale2, generator)
        if self.in_channels != self.out_channels:
            x = self.conv_shortcut(self.norm3(x))
        return h.add_(x)


class ResBlockStack(nn.Module):
    """Official ``UNetMidBlock3D`` (``res_x``): ``num_layers`` resnets at constant width.

    Timestep-conditioned stacks embed the (already scaled) timestep once into ``[B, 4C]`` for all resnets.
    """

    def __init__(
        self,
        channels: int,
        num_layers: int,
        inject_noise: bool = False,
        timestep_conditioning: bool = False,
        spatial_padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.timestep_conditioning = timestep_conditioning
        if timestep_conditioning:
            self.time_embedder = TimestepEmbedding(4 * channels)
        self.res_blocks = nn.ModuleList(
            ResnetBlock3D(channels, channels, inject_noise, timestep_conditioning, spatial_padding_mode)
            for _ in range(num_layers)
        )

    def forward(
        self,
        x: Tensor,
        causal: bool = True,
        timestep: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        temb = None
        if self.timestep_conditioning:
            if timestep is None:
                raise ValueError("a timestep-conditioned block needs a timestep")
            temb = self.time_embedder(timestep, x.dtype)  # [B, 4C]
        for block in self.res_blocks:
            x = block(x, causal, temb, generator)
        return x


class SpaceToDepthDownsample(nn.Module):
    """Encoder ``compress_*_res``: conv to ``out/prod(stride)`` channels then space-to-depth, plus a skip path
    (space-to-depth of the input, averaged over groups of consecutive channels).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: Stride, spatial_padding_mode: str) -> None:
        super().__init__()
        factor = stride[0] * stride[1] * stride[2]
        if (in_channels * factor) % out_channels or out_channels % factor:
            raise ConfigError(f"vae config: space-to-depth {in_channels}->{out_channels} with stride {stride}")
        self.stride = stride
        self.group_size = in_channels * factor // out_channels
        self.conv = CausalConv3d(in_channels, out_channels // factor, 3, spatial_padding_mode=spatial_padding_mode)

    def forward(self, x: Tensor, causal: bool = True, starts_video: bool = True) -> Tensor:
        # ``starts_video=False``: x continues a video (a later chunk of ltxcli.vae_encode's streamed encode, its
        # conv fed the previous chunk's last frames): its frames pair up as they come, no first frame to double
        if self.stride[0] == 2 and starts_video:
            x = torch.cat([x[:, :, :1], x], dim=2)  # [B, C, F+1, H, W]: frame 0 alone forms latent frame 0
        skip = space_to_depth(x, self.stride)  # [B, C*prod, F', H', W']
        b, cg, d, h, w = skip.shape
        skip = skip.view(b, cg // self.group_size, self.group_size, d, h, w).mean(dim=2)  # [B, out, F', H', W']
        y = space_to_depth(self.conv(x, causal), self.stride)  # [B, out, F', H', W']
        return y.add_(skip)


class DepthToSpaceUpsample(nn.Module):
    """Decoder ``compress_*``: conv to ``prod(stride)*C/reduction`` channels then depth-to-space; a temporal
    stride drops the first output frame. ``residual`` adds the input's depth-to-space tiled along channels.
    """

    def __init__(
        self,
        in_channels: int,
        stride: Stride,
        residual: bool = False,
        out_channels_reduction_factor: int = 1,
        spatial_padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        factor = stride[0] * stride[1] * stride[2]
        if in_channels % factor or factor % out_channels_reduction_factor:
            raise ConfigError(
                f"vae config: depth-to-space of {in_channels} channels with stride {stride} "
                f"and multiplier {out_channels_reduction_factor}"
            )
        self.stride = stride
        self.residual = residual
        self.num_repeat = factor // out_channels_reduction_factor
        self.conv = CausalConv3d(
            in_channels, factor * in_channels // out_channels_reduction_factor, 3,
            spatial_padding_mode=spatial_padding_mode,
        )

    def upsample(self, x: Tensor, causal: bool = True) -> Tensor:
        """Conv, depth-to-space and the residual, keeping every frame (no first-frame drop)."""
        y = depth_to_space(self.conv(x, causal), self.stride)  # [B, C_out, F*s1, H*s2, W*s3], contiguous
        if self.residual:
            skip = depth_to_space(x, self.stride)  # [B, C_in/prod, F*s1, H*s2, W*s3]
            b, c, d, h, w = y.shape
            # Official tiles the skip along channels (repeat, not interleave): channel j*C' + c gets skip[c].
            y.view(b, self.num_repeat, c // self.num_repeat, d, h, w).add_(skip[:, None])
        return y

    def forward(self, x: Tensor, causal: bool = True) -> Tensor:
        y = self.upsample(x, causal)
        if self.stride[0] == 2:
            y = y[:, :, 1:]
        return y
