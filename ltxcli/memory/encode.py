"""The VAE encode's memory model and the choice of its time chunk, shared by the memory plan and the encoders.

The encoder streams a video ``chunk`` latent frames at a time (:mod:`ltxcli.vae_encode`: ``8 * chunk + 1`` pixel
frames the first chunk, the same latents to float rounding whatever the chunk), so its activations are one
chunk's. :func:`encode_chunk` picks the largest chunk that fits, :data:`~ltxcli.vae_encode.ENCODE_CHUNK_LATENTS`
(16) halved down to 1: a 1216x704 input in bfloat16 needs 9.7 GiB at 16 (its 121 frames in one call) but 2.7 GiB
at 4. The plan (:func:`ltxcli.memory.estimate.estimate_memory`: its free memory less the stage's weights) and the
encoders at run time (:func:`fitting_chunk`: the memory free then, the encoder's weights resident) ask the same
function, as both ask :func:`ltxcli.memory.decode.plan_decode` how to decode.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import vae_encode
from ..models.configs import VAEConfig
from ..models.upcast import compute_dtype
from ..models.vae import CausalVideoVAE
from .decode import DEFAULT_SAFETY, decode_memory_bytes, free_memory_bytes

#: VAE encoder activations relative to the decode's of the same latent size (see :mod:`ltxcli.memory.estimate`).
ENCODE_FACTOR = 1.2


def encode_memory_bytes(config: VAEConfig, shape: Sequence[int], dtype: torch.dtype, chunk: int | None = None) -> int:
    """Estimated peak activations of encoding pixels ``shape`` ``[B, 3, F, H, W]`` (``F = 8k + 1``, ``H``, ``W``
    multiples of 32) ``chunk`` latent frames at a time (default :data:`~ltxcli.vae_encode.ENCODE_CHUNK_LATENTS`):
    :data:`ENCODE_FACTOR` times the decode's of its largest chunk's latents (:func:`~ltxcli.vae_encode.encode_frames`)."""
    b, _, f, h, w = (int(v) for v in shape)
    n = vae_encode.encode_frames(config, f, vae_encode.ENCODE_CHUNK_LATENTS if chunk is None else chunk)
    s, t = config.spatial_compression, config.temporal_compression
    latent = (b, config.latent_channels, (n - 1) // t + 1, h // s, w // s)  # [B, C, f, h, w] of the largest chunk
    return int(ENCODE_FACTOR * decode_memory_bytes(config, latent, dtype))


def encode_chunk(config: VAEConfig, shape: Sequence[int], dtype: torch.dtype, free_bytes: int | None,
                 safety: float = DEFAULT_SAFETY) -> int:
    """Latent frames per chunk to encode pixels ``shape`` ``[B, 3, F, H, W]`` with: the largest of
    :data:`~ltxcli.vae_encode.ENCODE_CHUNK_LATENTS` halved (16, 8, 4, 2, 1) whose :func:`encode_memory_bytes` is at
    most ``safety * free_bytes`` (as an ``auto`` decode tiles), else 1, the least memory (``None``: unlimited)."""
    chunk = vae_encode.ENCODE_CHUNK_LATENTS
    if free_bytes is None:
        return chunk
    while chunk > 1 and encode_memory_bytes(config, shape, dtype, chunk) > safety * free_bytes:
        chunk //= 2
    return chunk


def source_hold(config: VAEConfig, shape: Sequence[int], *, latents: bool = False) -> int:
    """Host bytes a video-to-video input read as it is encoded (:func:`ltxcli.conditions.source_chunks`) comes to
    hold through its encode, pixels ``shape`` ``[1, 3, F, H, W]``: one read piece's float32 pixels ``[1, 3, c, H, W]``
    (``c``: :func:`~ltxcli.vae_encode.encode_frames`, the pieces' size whatever the chunk) and, with ``latents`` (a long
    video's, kept for its windows), the whole input's float32 latents ``[1, C, (F - 1) / t + 1, H / s, W / s]``."""
    _, _, f, h, w = (int(v) for v in shape)
    s, t = config.spatial_compression, config.temporal_compression
    whole = 4 * config.latent_channels * ((f - 1) // t + 1) * (h // s) * (w // s) if latents else 0
    return 4 * 3 * vae_encode.encode_frames(config, f) * h * w + whole


def fitting_chunk(vae: CausalVideoVAE, shape: Sequence[int], device: torch.device | str, held: int = 0) -> int:
    """:func:`encode_chunk` of pixels ``shape`` ``[B, 3, F, H, W]`` for ``vae`` on ``device`` against the memory free
    there now (:func:`~ltxcli.memory.decode.free_memory_bytes`): call it inside the encoder's stage, its weights
    resident, as the plan prices the stage. ``held``: host bytes the encode will come to hold that are not taken yet
    (:func:`source_hold`), on the CPU out of that memory too, as the plan takes them (``encode_host``). A parallel
    run's VAE (:class:`ltxcli.parallel.vae.ParallelVAE`) takes the smallest over its ranks (a collective), so that
    every rank encodes the same latents."""
    free = free_memory_bytes(device) - (held if torch.device(device).type == "cpu" else 0)
    chunk = encode_chunk(vae.config, shape, compute_dtype(vae.encoder.conv_in.conv), free)
    # every rank encodes the same pixels, each from its own free memory: the chunks differ by float rounding
    agree = getattr(vae, "least_over_ranks", None)
    return chunk if agree is None else int(agree(chunk))


__all__ = ["ENCODE_FACTOR", "encode_chunk", "encode_memory_bytes", "fitting_chunk", "source_hold"]
