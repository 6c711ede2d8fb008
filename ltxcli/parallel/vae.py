"""One video's VAE decode split along time across the ranks of a :class:`~ltxcli.parallel.context.DistContext`.

Each rank decodes a contiguous range of latent frames and the pixel frames are gathered. The decoder is not
causal in time (every conv sees both neighbouring frames), so by default each temporal conv receives its
padding frame at an inner cut from the neighbouring rank: the result is the single-process decode at ``1/P``
of the work and memory per rank. An overlapping-window mode (``halo=h``) needs no communication during the
decode but is exact only for very large halos.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.upcast import compute_dtype
from ..models.vae_blocks import CausalConv3d, DepthToSpaceUpsample
from ..vae_tiling import decoder_receptive_field
from .collectives import all_gather, balanced_bounds
from .context import DistContext


def _pixel_start(k: int, scale: int = 8) -> int:
    """First pixel frame of latent frame ``k``: latent 0 -> frame 0, latent k > 0 -> frames 8k-7 .. 8k."""
    return 0 if k == 0 else scale * (k - 1) + 1


def receptive_halo(vae: nn.Module) -> int:
    """The decoder's temporal receptive radius in latent frames: a window halo this large is exact."""
    return decoder_receptive_field(vae.config)[0]


@dataclass(frozen=True)
class DecodeSlice:
    """What one rank decodes: latent ``core`` plus halo ``window``, and the pixel frames ``keep`` it returns."""

    core: tuple[int, int]
    window: tuple[int, int]
    keep: tuple[int, int]


def plan_decode(latent_frames: int, world: int, halo: int, scale: int = 8) -> list[DecodeSlice]:
    """Contiguous latent-frame ranges per rank (sizes differing by at most one) with ``halo`` context frames
    on each side.

    A window starting at latent ``a > 0`` decodes to pixel frames ``scale * a ..``, so a core starting at
    ``s > 0`` needs at least one latent in front (its first pixel frame is ``scale * s - scale + 1``).
    """
    if halo < 0:
        raise ValueError(f"halo={halo} must be >= 0")
    plan = []
    for s, e in balanced_bounds(latent_frames, world):
        if e == s:
            plan.append(DecodeSlice((s, e), (s, s), (0, 0)))
            continue
        front = max(halo, 1) if s > 0 else 0
        window = (max(0, s - front), min(latent_frames, e + halo))
        plan.append(DecodeSlice((s, e), window, (_pixel_start(s, scale), _pixel_start(e, scale))))
    return plan


class _HaloExchange:
    """Boundary frames between time-adjacent ranks, for the patched convolutions of a time-split decode."""

    def __init__(self, ctx: DistContext) -> None:
        self.ctx = ctx
        self.comm_bytes = 0

    def __call__(self, x: Tensor, front: int, back: int) -> tuple[Tensor | None, Tensor | None]:
        """``x [B, C, F, H, W]`` (this rank's frames) -> the ``front`` frames before them and the ``back`` frames
        after them, held by the previous and the next rank (``None`` at the ends of the video)."""
        rank, world, group = self.ctx.rank, self.ctx.world_size, self.ctx.group
        prev_rank = next_rank = None
        if rank > 0:
            prev_rank = dist.get_global_rank(group, rank - 1) if group is not None else rank - 1
        if rank < world - 1:
            next_rank = dist.get_global_rank(group, rank + 1) if group is not None else rank + 1
        b, c, _, h, w = x.shape
        ops, before, after = [], None, None
        if prev_rank is not None and front:
            before = x.new_empty((b, c, front, h, w))
            ops.append(dist.P2POp(dist.irecv, before, prev_rank, group))
        if next_rank is not None and back:
            after = x.new_empty((b, c, back, h, w))
            ops.append(dist.P2POp(dist.irecv, after, next_rank, group))
        if prev_rank is not None and back:  # the previous rank's back padding is my first frames
            head = x[:, :, :back].contiguous()
            ops.append(dist.P2POp(dist.isend, head, prev_rank, group))
            self.comm_bytes += head.numel() * head.element_size()
        if next_rank is not None and front:
            tail = x[:, :, x.shape[2] - front :].contiguous()
            ops.append(dist.P2POp(dist.isend, tail, next_rank, group))
            self.comm_bytes += tail.numel() * tail.element_size()
        if ops:
            for work in dist.batch_isend_irecv(ops):
                work.wait()
        return before, after


@contextlib.contextmanager
def _time_split(decoder: nn.Module, ctx: DistContext) -> Iterator[_HaloExchange]:
    """Patch the decoder's temporal convolutions (and, off rank 0, the upsamplers' frame drop) for the slab."""
    exchange = _HaloExchange(ctx)
    patched: list[tuple[nn.Module, tuple[str, ...]]] = []
    try:
        for m in decoder.modules():
            if isinstance(m, CausalConv3d):
                m.time_halo = exchange  # neighbours' frames at inner cuts instead of replicated ones
                patched.append((m, ("time_halo",)))
            elif isinstance(m, DepthToSpaceUpsample) and ctx.rank > 0 and m.stride[0] == 2:
                # a slab that does not start the video keeps its first frame (the official upsampler drops
                # the first frame of the whole video only)
                m.forward = m.upsample
                patched.append((m, ("forward",)))
        yield exchange
    finally:
        for m, names in patched:
            for name in names:
                m.__dict__.pop(name, None)


def _min_frames_per_rank(decoder: nn.Module) -> int:
    """Frames a slab must hold so that one neighbour can fill a conv's padding (1; 2 for a causal decoder)."""
    causal = bool(getattr(decoder, "causal", False))
    pads = [max(m.time_padding(causal)) for m in decoder.modules() if isinstance(m, CausalConv3d)]
    return max([1, *pads])


def _gather_frames(local: Tensor, lengths: Sequence[int], ctx: DistContext, dst: int | None) -> Tensor | None:
    """Concatenate every rank's ``[B, 3, T_r, H, W]`` along time (padded to the longest for the collective)."""
    longest = max(lengths)
    if local.shape[2] < longest:
        local = F.pad(local, (0, 0, 0, 0, 0, longest - local.shape[2]))
    local = local.contiguous()
    if dst is None:
        gathered = all_gather(local, ctx.world_size, ctx.group)  # [P, B, 3, T, H, W]
    else:
        parts = [torch.empty_like(local) for _ in range(ctx.world_size)] if ctx.rank == dst else None
        dist.gather(local, parts, dst=dst, group=ctx.group)
        if parts is None:
            return None
        gathered = torch.stack(parts)
    return torch.cat([gathered[i, :, :, :n] for i, n in enumerate(lengths)], dim=2)


@torch.no_grad()
def parallel_decode(
    vae: nn.Module,
    latents: Tensor,
    *,
    timestep: Tensor | float | None = None,
    generator: torch.Generator | None = None,
    ctx: DistContext,
    halo: int | None = None,
    dst: int | None = None,
) -> Tensor | None:
    """``vae.decode`` split along time across the ranks of ``ctx``: pixels ``[B, 3, 8(f-1)+1, H, W]``.

    Rank ``r`` owns a contiguous ``1/P`` of the latent frames (latent ``k`` -> pixel frames ``[0]`` for
    ``k = 0``, ``[8k-7, 8k]`` otherwise). The decoder is not causal in time: every 3x3x3 conv pads both ends
    by replicating the edge frame, so a slab needs its neighbours' frames at every layer. Two ways:

    * ``halo=None`` (default), exact: each rank decodes only its own latents, and every temporal conv takes
      its one padding frame on each inner cut from the neighbouring rank (a point-to-point exchange of one
      ``[B, C, 1, H, W]`` frame per side and conv); upsamplers drop the first frame only on rank 0. Each
      rank computes and holds ``1/P`` of the decode, and the result is the single-process decode (the
      same operations on the same values; with the time-Winograd convolutions of ``vae_conv="auto"`` on the
      CPU a slab pairs its frames from its own first frame, so it agrees to float rounding, about 1e-6).
      Needs at least one latent frame per rank (two for causal decoders); otherwise every rank decodes the
      whole video.
    * ``halo=h``: no communication during the decode; each rank decodes its latents plus ``h`` neighbouring
      latent frames on each side (``2h`` extra latents of work) and keeps its own frames. Exact only for
      ``h >=`` :func:`receptive_halo` (9 latents for the tiny model, 24 for 0.9.5+, 32 for 0.9.1); below
      that the frames next to a cut differ (tests/test_distributed.py measures how much).

    Noise-injecting (0.9.1) decoders draw one ``[H, W]`` map per injection point regardless of the frame
    count, so a ``generator`` in the same state on every rank reproduces the single-process noise; with
    ``generator=None`` the global RNG must be seeded identically on all ranks.

    ``dst=None`` returns the video on every rank (all-gather); ``dst=r`` only on rank ``r`` (``None`` elsewhere).
    """
    if latents.ndim != 5:
        raise ValueError(f"parallel_decode expects latents [B, C, f, h, w], got shape {list(latents.shape)}")
    world = ctx.world_size
    scale = vae.config.temporal_compression
    f = latents.shape[2]
    if halo is None:
        bounds = balanced_bounds(f, world)
        if world == 1 or f < world * _min_frames_per_rank(vae.decoder):
            video = vae.decode(latents, timestep=timestep, generator=generator)
            return video if dst is None or ctx.rank == dst else None
        s, e = bounds[ctx.rank]
        with _time_split(vae.decoder, ctx):
            local = vae.decode(latents[:, :, s:e], timestep=timestep, generator=generator)
        lengths = [_pixel_start(e, scale) - _pixel_start(s, scale) for s, e in bounds]
        return _gather_frames(local, lengths, ctx, dst)

    plan = plan_decode(f, world, halo, scale)
    mine = plan[ctx.rank]
    (a, b), (k0, k1) = mine.window, mine.keep
    if b > a:
        video = vae.decode(latents[:, :, a:b], timestep=timestep, generator=generator)
        offset = scale * a  # global pixel frame of the window's first output frame
        local = video[:, :, k0 - offset : k1 - offset]
    else:
        # fewer latent frames than ranks: this rank only takes part in the gather
        bsz, _, _, h, w = latents.shape
        s_scale = vae.config.spatial_compression
        dtype = compute_dtype(vae.decoder.conv_out.conv)
        local = latents.new_zeros((bsz, vae.config.out_channels, 0, h * s_scale, w * s_scale), dtype=dtype)
    return _gather_frames(local, [s.keep[1] - s.keep[0] for s in plan], ctx, dst)


class Delegating(nn.Module):
    """A wrapper module whose unknown attributes are its wrapped ``module``'s (config, blocks, methods), so the
    pipeline can keep using a parallel transformer or VAE where it used the plain one."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if "module" not in modules:
                raise
            return getattr(modules["module"], name)


class ParallelVAE(Delegating):
    """A VAE whose ``decode`` is :func:`parallel_decode` (every rank gets the video); everything else is the
    wrapped VAE's (``encode``, ``normalize``, ``config``, ``decoder``...), the encode's chunk the ranks' smallest
    (:meth:`least_over_ranks`)."""

    #: Every rank must call ``decode`` (it gathers across them): the pipeline then decodes through it rather than
    #: running the decoder's parts itself (the CPU head windows of ``ltxcli.memory.decode.stream_plan``).
    collective_decode = True

    def __init__(self, module: nn.Module, ctx: DistContext, *, halo: int | None = None) -> None:
        super().__init__()
        self.module = module
        self.ctx = ctx
        self.halo = halo

    def decode(
        self, latents: Tensor, timestep: Tensor | float | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        out = parallel_decode(self.module, latents, timestep=timestep, generator=generator, ctx=self.ctx,
                              halo=self.halo)
        assert out is not None
        return out

    def least_over_ranks(self, value: int) -> int:
        """The smallest ``value`` over the ranks (one collective: every rank calls it, as each encodes the same
        pixels): a choice each rank makes from its own state (the VAE encode's chunk from its free memory,
        :func:`ltxcli.memory.encode.fitting_chunk`) made the same on all of them."""
        box = torch.tensor([int(value)], dtype=torch.int64, device=self.ctx.device)  # (nccl reduces on the GPU)
        dist.all_reduce(box, op=dist.ReduceOp.MIN, group=self.ctx.group)
        return int(box.item())


__all__ = ["DecodeSlice", "ParallelVAE", "parallel_decode", "plan_decode", "receptive_halo"]
