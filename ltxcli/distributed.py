"""Several processes (GPUs, nodes) working on one video or one batch, as started by ``torchrun``.

One video is split across ranks by :class:`ParallelTransformer` and :class:`ParallelVAE`
(:func:`parallelize` installs both on a :class:`~ltxcli.pipeline.Pipeline`); every rank runs the same
pipeline code on the same inputs with the same CPU-seeded noise, so the replicated parts (text encoding,
conditioning, sampler arithmetic) agree bit for bit and only the expensive parts are divided:

* **CFG/STG-parallel** (``mode="cfg"``): the 1-3 guidance branches of a step (``[uncond, cond, perturbed]``)
  are split into contiguous groups, one per rank, and the velocities are all-gathered (one collective of
  ``branches x N x 128`` values per step). Ranks beyond the branch count idle.
* **Sequence-parallel** (``mode="sequence"``, Ulysses): every rank holds a contiguous ``1/P`` of the video
  tokens through the whole model; only self-attention needs the full sequence, so each ``attn1`` sends its
  q/k/v with one all-to-all from ``[B, N/P, H*d]`` to ``[B, N, H/P*d]`` (its own heads, all tokens),
  attends, and sends the output back with a second all-to-all. q/k RMSNorm (over the full inner dim) and
  RoPE are per token, so they run on the local shard before the exchange. A token count that ``P`` does
  not divide is padded with zero tokens that are dropped before attention, so every ``N`` works; the
  head count must be divisible by ``P``.
* ``mode="cfg+sequence"``: ``cfg_degree`` groups of ``P / cfg_degree`` sequence-parallel ranks.
* ``mode="auto"``: per call, the factorisation ``P = cfg x seq`` (seq dividing the head count) that gives
  each rank the least work for this call's branch count, preferring less sequence parallelism on ties
  (2 branches on 2 ranks -> cfg; 3 branches on 2 ranks -> sequence; 1 branch -> sequence).
* **VAE decode** (:func:`parallel_decode`): each rank decodes a contiguous range of latent frames and the
  pixel frames are gathered. The decoder is not causal in time (every conv sees both neighbouring frames),
  so by default each temporal conv receives its padding frame at an inner cut from the neighbouring rank:
  the result is the single-process decode at ``1/P`` of the work and memory per rank. An overlapping-window
  mode (``halo=h``) needs no communication during the decode but is exact only for very large halos.

Batches (``--batch`` under torchrun) are spread by :func:`shard_items`: each rank generates whole items on its
own, no collective involved; :func:`claim_output` makes ``--skip-existing`` safe when ranks, or two jobs on a
shared file system, race on one output.

Inference only: the collectives carry no autograd. Communication never syncs with the host (shapes are
Python ints), so the loop stays asynchronous on GPUs.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .models.attention import attention
from .models.transformer import STGMode
from .models.upcast import compute_dtype

Mode = Literal["auto", "cfg", "sequence", "cfg+sequence"]
MODES: tuple[str, ...] = ("auto", "cfg", "sequence", "cfg+sequence")
T = TypeVar("T")

# --- process context ---------------------------------------------------------------------------------------


@dataclass
class DistContext:
    """This process's place in the job. ``group`` is the process group the wrappers use (default: world)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    group: Any = None  # torch.distributed.ProcessGroup; Any keeps the annotation import-free

    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            if self.device.type == "cuda":
                dist.barrier(group=self.group, device_ids=[self.device.index or 0])
            else:
                dist.barrier(group=self.group)

    def destroy(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def under_torchrun() -> bool:
    """True when the environment names this process's rank (torchrun, or any ``env://`` launcher)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def init(
    rank: int,
    world_size: int,
    *,
    init_method: str = "env://",
    backend: str | None = None,
    local_rank: int | None = None,
    timeout_s: float | None = None,
) -> DistContext:
    """Join (or reuse) the default process group: ``nccl`` with CUDA, else ``gloo``.

    The device is ``cuda:local_rank`` for ``nccl`` (made the current device), else the CPU.
    """
    backend = backend or default_backend()
    local_rank = rank if local_rank is None else local_rank
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size} processes")
    if backend == "nccl":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise RuntimeError(
                f"local rank {local_rank} needs GPU {local_rank} but only {count} are visible: start at most "
                f"{count} processes per node (torchrun --nproc-per-node {count})"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {}
        if timeout_s is not None:
            kwargs["timeout"] = datetime.timedelta(seconds=timeout_s)
        if backend == "nccl":
            kwargs["device_id"] = device
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size, **kwargs)
    return DistContext(rank, world_size, local_rank, device, dist.group.WORLD)


def init_from_env(backend: str | None = None, *, timeout_s: float | None = None) -> DistContext | None:
    """The context of a process started by ``torchrun``; ``None`` when RANK/WORLD_SIZE are not set.

    A world of one is still initialised (so collectives work), which makes ``torchrun --nproc-per-node 1``
    behave like a plain run.
    """
    if not under_torchrun():
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    return init(rank, world, backend=backend, local_rank=local_rank, timeout_s=timeout_s)


def is_main(ctx: DistContext | None = None) -> bool:
    """Whether this process writes files and prints results (rank 0, or any process outside torchrun)."""
    if ctx is not None:
        return ctx.is_main()
    return not dist.is_initialized() or dist.get_rank() == 0


def rank_label(ctx: DistContext | None) -> str:
    """``"[rank 1/4 host]"`` for messages from a worker; empty outside torchrun."""
    if ctx is None or ctx.world_size == 1:
        return ""
    return f"[rank {ctx.rank}/{ctx.world_size} {socket.gethostname()}]"


# --- collectives ----------------------------------------------------------------------------------------------

_all_gather_flat = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _all_gather(x: Tensor, size: int, group: Any) -> Tensor:
    """``x`` from every rank of ``group`` stacked on a new leading dim: ``[size, *x.shape]``."""
    x = x.contiguous().view(1, *x.shape)
    # concatenated along dim 0, the one output layout every backend takes
    out = x.new_empty((size, *x.shape[1:]))
    _all_gather_flat(out, x, group=group)
    return out


def _all_to_all(x: Tensor, group: Any) -> Tensor:
    """``x [P, ...]``: chunk ``j`` goes to rank ``j``; returns ``[P, ...]`` whose chunk ``j`` came from rank ``j``."""
    x = x.contiguous()
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x, group=group)
    return out


def _split_bounds(total: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` ranges of ``ceil(total/parts)`` (the last ones shorter or empty)."""
    chunk = -(-total // parts)
    return [(min(total, i * chunk), min(total, (i + 1) * chunk)) for i in range(parts)]


def _balanced_bounds(total: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous ranges whose sizes differ by at most one (the first ones longer)."""
    base, extra = divmod(total, parts)
    out, lo = [], 0
    for i in range(parts):
        hi = lo + base + (1 if i < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


# --- transformer --------------------------------------------------------------------------------------------


@dataclass
class _Layout:
    """One factorisation of the world: ``cfg`` groups of ``seq`` consecutive ranks."""

    cfg: int
    seq: int
    cfg_rank: int  # which group of branches this rank runs
    seq_rank: int  # which token shard this rank holds
    cfg_group: Any
    seq_group: Any


class _SeqState:
    """What the patched self-attentions need during one sequence-parallel forward (inactive otherwise)."""

    def __init__(self) -> None:
        self.group: Any = None
        self.degree = 1
        self.tokens = 0  # real (unpadded) sequence length
        self.comm_bytes = 0


def _seq_to_heads(x: Tensor, degree: int, group: Any, state: _SeqState) -> Tensor:
    """``[..., n, D]`` (my tokens, all heads) -> ``[..., P*n, D/P]`` (all tokens, my heads)."""
    *lead, n, d = x.shape
    # [..., n, D] -> [..., n, P, D/P] -> [P, ..., n, D/P]: chunk j (heads of rank j) goes to rank j
    parts = x.reshape(*lead, n, degree, d // degree).movedim(-2, 0)
    state.comm_bytes += x.numel() * x.element_size() * (degree - 1) // degree
    got = _all_to_all(parts, group)  # [P, ..., n, D/P]: chunk j = tokens of rank j
    return got.movedim(0, -3).reshape(*lead, degree * n, d // degree)


def _heads_to_seq(x: Tensor, degree: int, group: Any, state: _SeqState) -> Tensor:
    """Inverse of :func:`_seq_to_heads`: ``[..., P*n, D/P]`` -> ``[..., n, D]``."""
    *lead, pn, dp = x.shape
    n = pn // degree
    # [..., P*n, D/P] -> [P, ..., n, D/P]: chunk j (tokens of rank j) goes to rank j
    parts = x.reshape(*lead, degree, n, dp).movedim(-3, 0)
    state.comm_bytes += x.numel() * x.element_size() * (degree - 1) // degree
    got = _all_to_all(parts, group)  # [P, ..., n, D/P]: chunk j = heads of rank j
    return got.movedim(0, -2).reshape(*lead, n, degree * dp)


def _sequence_parallel_attend(
    attn: nn.Module, state: _SeqState, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None
) -> Tensor:
    """``Attention._attend`` of a self-attention whose tokens are sharded across ``state.group``.

    ``Attention.forward`` computes the projections, norms and RoPE of its own tokens as usual; only this
    kernel call sees the whole sequence, for ``heads / P`` of the heads.
    """
    if state.group is None:
        return type(attn)._attend(attn, q, k, v, mask)
    if mask is not None:
        raise ValueError("a key mask on sequence-parallel self-attention is not supported yet (the pipeline never passes one)")
    p = state.degree
    qkv = _seq_to_heads(torch.stack([q, k, v]), p, state.group, state)  # [3, B, N_pad, D/P]
    n_pad = qkv.shape[-2]
    # padded tokens (zeros appended to the last shard) are dropped: attention sees exactly the real keys
    q_h, k_h, v_h = qkv[:, :, : state.tokens].unbind(0)
    out = attention(q_h, k_h, v_h, attn.heads // p, None, attn.attention_kernel)  # [B, N, D/P]
    if n_pad > state.tokens:
        out = F.pad(out, (0, 0, 0, n_pad - state.tokens))
    return _heads_to_seq(out, p, state.group, state)  # [B, N/P, D]


def _take(t: Tensor | None, lo: int, hi: int, batch: int, dim: int = 0) -> Tensor | None:
    """Rows ``lo:hi`` of a per-branch tensor; tensors broadcast over the batch (size 1, scalars) pass through."""
    if t is None or t.ndim <= dim or (t.shape[dim] == 1 and batch != 1):
        return t
    if t.shape[dim] != batch:
        raise ValueError(f"expected {batch} (or 1) entries along dim {dim}, got shape {list(t.shape)}")
    return t.narrow(dim, lo, hi - lo)


def _shard_tokens(t: Tensor, dim: int, n_real: int, n_local: int, index: int) -> Tensor:
    """Shard ``index`` (``n_local`` tokens) of ``t`` along ``dim``, zero-padding the sequence to ``P * n_local``."""
    lo, hi = index * n_local, (index + 1) * n_local
    if hi <= n_real:
        return t.narrow(dim, lo, n_local)
    start = min(lo, n_real)  # a shard may be all padding when N < P * n_local - n_local
    part = t.narrow(dim, start, n_real - start)
    pad_shape = list(t.shape)
    pad_shape[dim] = hi - max(lo, n_real)
    return torch.cat([part, t.new_zeros(pad_shape)], dim=dim)


class ParallelTransformer(nn.Module):
    """An ``LTXVideoTransformer`` run across the ranks of ``ctx`` with the same call signature and results.

    Attribute access falls through to the wrapped model (``config``, ``patchify_proj``, ``rope_tables``...),
    so a :class:`~ltxcli.pipeline.Pipeline` uses it unchanged. Every rank must make the same calls with the
    same inputs; every rank gets the full output. ``comm_bytes`` counts the bytes this rank has sent (and, for
    all-gathers, received from others) so far.

    Sequence modes patch each block's ``attn1._attend`` (the attention kernel call) on the instance (undone
    by :meth:`unwrap`); the patched call falls back to the class one outside a sequence-parallel call.
    """

    def __init__(
        self, module: nn.Module, ctx: DistContext, mode: Mode | str = "auto", *, cfg_degree: int | None = None
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown parallel mode {mode!r} (use one of {', '.join(MODES)})")
        self.module = module
        self.ctx = ctx
        self.mode = mode
        heads = module.config.num_attention_heads
        world = ctx.world_size
        if mode == "cfg":
            shapes = [(world, 1)]
        elif mode == "sequence":
            shapes = [(1, world)]
        elif mode == "cfg+sequence":
            c = cfg_degree or 2
            if c < 1 or world % c:
                raise ValueError(f"cfg_degree={c} must divide the number of processes ({world})")
            shapes = [(c, world // c)]
        else:
            shapes = [(world // s, s) for s in range(1, world + 1) if world % s == 0 and heads % s == 0]
        for _, s in shapes:
            if heads % s:
                raise ValueError(
                    f"sequence parallelism over {s} processes needs the head count ({heads}) to be divisible "
                    f"by {s}: use a process count that divides {heads}, or mode 'cfg'"
                )
        self._layouts = {shape: self._make_layout(*shape) for shape in shapes}
        self._state = _SeqState()
        self.comm_bytes = 0
        if any(s > 1 for _, s in shapes):
            for block in module.transformer_blocks:
                if "_attend" in block.attn1.__dict__:
                    raise RuntimeError("this transformer is already wrapped for sequence parallelism")
                block.attn1._attend = functools.partial(_sequence_parallel_attend, block.attn1, self._state)

    def _make_layout(self, cfg: int, seq: int) -> _Layout:
        ctx = self.ctx
        rank = ctx.rank
        cfg_group = seq_group = ctx.group
        if cfg > 1 and seq > 1:
            # Every rank creates every group, in the same order (new_group is collective).
            for ci in range(cfg):
                ranks = [ci * seq + j for j in range(seq)]
                g = dist.new_group(ranks)
                if rank in ranks:
                    seq_group = g
            for sj in range(seq):
                ranks = [ci * seq + sj for ci in range(cfg)]
                g = dist.new_group(ranks)
                if rank in ranks:
                    cfg_group = g
        return _Layout(cfg, seq, rank // seq, rank % seq, cfg_group, seq_group)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if "module" not in modules:
                raise
            return getattr(modules["module"], name)

    def unwrap(self) -> nn.Module:
        """Remove the attention patches and return the plain model."""
        for block in self.module.transformer_blocks:
            block.attn1.__dict__.pop("_attend", None)
        return self.module

    def layout_for(self, branches: int) -> tuple[int, int]:
        """``(cfg degree, sequence degree)`` used for a call with ``branches`` batch elements."""
        shape = min(self._layouts, key=lambda cs: (math.ceil(branches / cs[0]) / cs[1], cs[1]))
        return shape

    def forward(
        self,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor,
        timestep: Tensor,
        *,
        indices_grid: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
        encoder_attention_mask: Tensor | None = None,
        skip_layer_mask: Tensor | None = None,
        skip_layer_strategy: STGMode | None = None,
    ) -> Tensor:
        """Same arguments and result as ``LTXVideoTransformer.forward``."""
        if (indices_grid is None) == (rope is None):
            raise ValueError("pass exactly one of indices_grid or rope")
        if rope is None:
            rope = self.module.rope_tables(indices_grid)
        batch, tokens = hidden_states.shape[:2]
        layout = self._layouts[self.layout_for(batch)]
        if layout.cfg == 1:
            return self._sequence_forward(
                layout, hidden_states, encoder_hidden_states, timestep, rope, encoder_attention_mask,
                skip_layer_mask, skip_layer_strategy,
            )
        bounds = _split_bounds(batch, layout.cfg)
        chunk = bounds[0][1] - bounds[0][0]
        lo, hi = bounds[layout.cfg_rank]
        out_channels = self.module.config.out_channels
        dtype = compute_dtype(self.module.proj_out)
        if hi > lo:
            local = self._sequence_forward(
                layout, hidden_states[lo:hi], encoder_hidden_states[lo:hi], _take(timestep, lo, hi, batch),
                (_take(rope[0], lo, hi, batch), _take(rope[1], lo, hi, batch)),
                _take(encoder_attention_mask, lo, hi, batch), _take(skip_layer_mask, lo, hi, batch, dim=1),
                skip_layer_strategy,
            )
            dtype = local.dtype
            if hi - lo < chunk:
                local = torch.cat([local, local.new_zeros(chunk - (hi - lo), tokens, out_channels)])
        else:
            # Ranks beyond the branch count only take part in the gather.
            local = hidden_states.new_zeros((chunk, tokens, out_channels), dtype=dtype)
        gathered = _all_gather(local, layout.cfg, layout.cfg_group)  # [cfg, chunk, N, C]
        self.comm_bytes += local.numel() * local.element_size() * (layout.cfg - 1)
        return torch.cat([gathered[i, : b - a] for i, (a, b) in enumerate(bounds)])

    def _sequence_forward(
        self,
        layout: _Layout,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor,
        timestep: Tensor,
        rope: tuple[Tensor, Tensor],
        encoder_attention_mask: Tensor | None,
        skip_layer_mask: Tensor | None,
        skip_layer_strategy: STGMode | None,
    ) -> Tensor:
        kwargs = {
            "encoder_attention_mask": encoder_attention_mask, "skip_layer_mask": skip_layer_mask,
            "skip_layer_strategy": skip_layer_strategy,
        }
        p = layout.seq
        if p == 1:
            return self.module(hidden_states, encoder_hidden_states, timestep, rope=rope, **kwargs)
        batch, tokens = hidden_states.shape[:2]
        n = -(-tokens // p)
        r = layout.seq_rank
        x = _shard_tokens(hidden_states, 1, tokens, n, r)  # [B, n, C]
        rope_local = (_shard_tokens(rope[0], 1, tokens, n, r), _shard_tokens(rope[1], 1, tokens, n, r))
        if timestep.ndim >= 2 and timestep.shape[-1] == tokens and tokens > 1:
            timestep = _shard_tokens(timestep, timestep.ndim - 1, tokens, n, r)  # per-token [B, n]
        state = self._state
        state.group, state.degree, state.tokens, state.comm_bytes = layout.seq_group, p, tokens, 0
        try:
            out = self.module(x, encoder_hidden_states, timestep, rope=rope_local, **kwargs)  # [B, n, C]
        finally:
            state.group = None
        gathered = _all_gather(out, p, layout.seq_group)  # [P, B, n, C]
        self.comm_bytes += state.comm_bytes + out.numel() * out.element_size() * (p - 1)
        # [P, B, n, C] -> [B, P*n, C] -> the real tokens
        return gathered.movedim(0, 1).reshape(batch, p * n, -1)[:, :tokens]


# --- VAE -------------------------------------------------------------------------------------------------------


def _pixel_start(k: int, scale: int = 8) -> int:
    """First pixel frame of latent frame ``k``: latent 0 -> frame 0, latent k > 0 -> frames 8k-7 .. 8k."""
    return 0 if k == 0 else scale * (k - 1) + 1


def receptive_halo(vae: nn.Module) -> int:
    """The decoder's temporal receptive radius in latent frames: a window halo this large is exact."""
    from .vae_tiling import decoder_receptive_field

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
    for s, e in _balanced_bounds(latent_frames, world):
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
def _time_split(decoder: nn.Module, ctx: DistContext) -> Any:
    """Patch the decoder's temporal convolutions (and, off rank 0, the upsamplers' frame drop) for the slab."""
    from .models.vae_blocks import CausalConv3d, DepthToSpaceUpsample

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
    from .models.vae_blocks import CausalConv3d

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
        gathered = _all_gather(local, ctx.world_size, ctx.group)  # [P, B, 3, T, H, W]
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
        bounds = _balanced_bounds(f, world)
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


class ParallelVAE(nn.Module):
    """A VAE whose ``decode`` is :func:`parallel_decode` (every rank gets the video); everything else is the
    wrapped VAE's (``encode``, ``normalize``, ``config``, ``decoder``...)."""

    def __init__(self, module: nn.Module, ctx: DistContext, *, halo: int | None = None) -> None:
        super().__init__()
        self.module = module
        self.ctx = ctx
        self.halo = halo

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if "module" not in modules:
                raise
            return getattr(modules["module"], name)

    def decode(
        self, latents: Tensor, timestep: Tensor | float | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        out = parallel_decode(self.module, latents, timestep=timestep, generator=generator, ctx=self.ctx,
                              halo=self.halo)
        assert out is not None
        return out


def parallelize(
    pipe: Any, ctx: DistContext, *, mode: Mode | str = "auto", cfg_degree: int | None = None,
    vae: bool = True, halo: int | None = None,
) -> Any:
    """Wrap ``pipe.transformer`` (and ``pipe.vae`` when ``vae``) for ``ctx``, in place; returns ``pipe``.

    A world of one leaves the pipeline unchanged. Every rank must then call ``pipe.generate`` with the same
    arguments (including the seed); every rank gets the same result, and only rank 0 should write it.
    """
    if ctx.world_size == 1:
        return pipe
    if not isinstance(pipe.transformer, ParallelTransformer):
        pipe.transformer = ParallelTransformer(pipe.transformer, ctx, mode, cfg_degree=cfg_degree)
    if vae and not isinstance(pipe.vae, ParallelVAE):
        pipe.vae = ParallelVAE(pipe.vae, ctx, halo=halo)
    return pipe


# --- per-rank statistics ------------------------------------------------------------------------------------


def peak_memory_bytes(device: torch.device) -> int:
    """Peak allocated CUDA memory of ``device``, or this process's peak resident set size on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)
    except (ImportError, OSError):
        return 0


def rank_stats(ctx: DistContext, timings: dict[str, float] | None = None, *, transformer: Any = None) -> list[dict]:
    """Gather every rank's timings, peak memory and communicated bytes; the same list on every rank.

    Collective: all ranks must call it. Entries are ordered by rank::

        {"rank": 0, "local_rank": 0, "host": "node1", "device": "cuda:0", "peak_memory_bytes": ...,
         "comm_bytes": ..., "timings": {...}}
    """
    mine = {
        "rank": ctx.rank, "local_rank": ctx.local_rank, "host": socket.gethostname(), "device": str(ctx.device),
        "peak_memory_bytes": peak_memory_bytes(ctx.device),
        "comm_bytes": int(getattr(transformer, "comm_bytes", 0)) if transformer is not None else 0,
        "timings": {k: round(float(v), 4) for k, v in (timings or {}).items()},
    }
    if ctx.world_size == 1:
        return [mine]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, mine, group=ctx.group)
    return out


# --- batches ---------------------------------------------------------------------------------------------------


def shard_items(items: Sequence[T], rank: int, world: int) -> list[T]:
    """This rank's items, round robin (item ``i`` goes to rank ``i % world``): every item to exactly one rank."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world} processes")
    return list(items[rank::world])


def _claim_path(path: str | os.PathLike[str]) -> str:
    return os.fspath(path) + ".claim"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _stale(info: dict[str, Any], mtime: float, stale_after_s: float | None) -> bool:
    if stale_after_s is not None and time.time() - mtime > stale_after_s:
        return True
    pid = info.get("pid")
    return info.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)


def claim_output(path: str | os.PathLike[str], *, stale_after_s: float | None = None) -> bool:
    """Atomically claim the right to write ``path``: True for exactly one of any number of racing processes.

    Creates ``path + ".claim"`` with ``O_CREAT | O_EXCL`` (atomic on local file systems and NFSv3+) holding
    the owner's pid, host and time. Returns False when ``path`` already exists (checked again after the
    claim, so a process that lost the race to a finished writer skips too) or another live claim holds it.
    Call :func:`release_claim` after the output is complete (written to a temporary name and renamed).

    Stale claims (the owner died without releasing): a claim made on this host by a pid that no longer exists
    is broken automatically; a claim from another host is broken only when older than ``stale_after_s``
    seconds (default: never, since a remote pid cannot be checked; delete the ``.claim`` file by hand after a
    crashed multi-node job). Breaking renames the claim aside first, so of two processes breaking the same
    stale claim only one proceeds.
    """
    target = os.fspath(path)
    claim = _claim_path(target)
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    for _ in range(3):
        if os.path.exists(target):
            return False
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(claim) as fh:
                    info = json.loads(fh.read() or "{}")
                mtime = os.path.getmtime(claim)
            except (OSError, ValueError):
                return False  # released meanwhile, or being written: let its owner have it
            if not _stale(info, mtime, stale_after_s):
                return False
            aside = f"{claim}.stale.{os.getpid()}.{time.monotonic_ns()}"
            try:
                os.rename(claim, aside)
            except OSError:
                continue  # someone else broke it first: race for the fresh claim
            try:
                with open(aside) as fh:
                    moved = json.loads(fh.read() or "{}")
            except (OSError, ValueError):
                moved = None
            if moved != info:
                # another breaker replaced the stale claim with a live one before our rename: put it back
                with contextlib.suppress(OSError):
                    os.link(aside, claim)
                os.unlink(aside)
                return False
            os.unlink(aside)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}))
        if os.path.exists(target):  # finished by a process that held and released the claim before us
            release_claim(target)
            return False
        return True
    return False


def release_claim(path: str | os.PathLike[str]) -> None:
    """Remove the claim on ``path`` (after writing it, or after failing to)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_claim_path(path))


# --- launching -------------------------------------------------------------------------------------------------


def torchrun_command(
    args: Sequence[str], nproc: int, *, nnodes: int = 1, node_rank: int | None = None,
    rdzv_endpoint: str | None = None, module: str = "ltxcli",
) -> list[str]:
    """The ``python -m torch.distributed.run`` command that runs ``python -m ltxcli ARGS`` on ``nproc`` processes.

    One node: ``--standalone`` (a private rendezvous on localhost). Several nodes: run the same command on
    every node with ``nnodes`` and one shared ``rdzv_endpoint`` (``host:port`` of any node), c10d rendezvous.
    """
    if nproc < 1:
        raise ValueError(f"--gpus {nproc} must be at least 1")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nnodes == 1 and rdzv_endpoint is None:
        cmd.append("--standalone")
    else:
        if rdzv_endpoint is None:
            raise ValueError("several nodes need a rendezvous endpoint (host:port reachable from every node)")
        cmd += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}"]
        if node_rank is not None:
            cmd.append(f"--node-rank={node_rank}")
    return [*cmd, "-m", module, *args]


def launch(args: Sequence[str], nproc: int, **kwargs: Any) -> int:
    """Run ``ltx ARGS`` under torchrun on ``nproc`` local processes; returns its exit status.

    The caller removes its own ``--gpus N`` from ``args`` first. Refuses to nest inside a torchrun worker.
    """
    if under_torchrun():
        raise RuntimeError("already running under torchrun: drop --gpus (the process count is torchrun's)")
    if torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise ValueError(f"--gpus {nproc} but only {torch.cuda.device_count()} GPU(s) are visible")
    return subprocess.call(torchrun_command(args, nproc, **kwargs))


# --- communication model -----------------------------------------------------------------------------------

NVLINK_H100_GBPS = 450.0  # NVLink 4 (H100 SXM): 900 GB/s total = 450 GB/s per direction per GPU
ACHIEVED_TFLOPS = 400.0  # bf16 dense, averaged over GEMMs and attention (~40% of the 989 TF/s H100 peak)
COLLECTIVE_LATENCY_US = 20.0  # per NCCL collective inside one NVLink node (launch + sync)


@dataclass(frozen=True)
class CommRow:
    """One configuration of the model: all figures per rank and per denoising step."""

    model: str
    height: int
    width: int
    frames: int
    tokens: int
    gpus: int
    mode: str  # "cfg", "sequence" or "cfg2+seq"
    branches: int
    compute_tflop: float  # this rank's transformer FLOPs per step (1e12)
    comm_mb: float  # bytes this rank sends (all-to-all) or receives (all-gather) per step (1e6)
    collectives: int
    compute_ms: float
    comm_ms: float
    speedup: float  # single-GPU step time / (compute + comm), no overlap

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _seq_comm_bytes(layers: int, branches: int, tokens: int, dim: int, out_ch: int, p: int, nbytes: int) -> float:
    """Per rank and step: 4 all-to-alls (q, k, v, out) per layer, each sending ``(N/P) D b (P-1)/P``; plus
    the all-gather of the output (receiving ``(P-1)/P`` of ``N x out_channels``)."""
    if p == 1:
        return 0.0
    frac = (p - 1) / p
    a2a = layers * 4 * branches * (tokens / p) * dim * nbytes * frac
    return a2a + branches * tokens * out_ch * nbytes * frac


def comm_model(
    *,
    sizes: Sequence[tuple[int, int, int]] = ((768, 512, 121), (1216, 704, 121)),
    gpus: Sequence[int] = (2, 4, 8),
    models: Sequence[str] = ("2b", "13b"),
    branches: int = 3,
    text_len: int = 128,
    bytes_per_element: int = 2,
    link_gbps: float = NVLINK_H100_GBPS,
    achieved_tflops: float = ACHIEVED_TFLOPS,
    latency_us: float = COLLECTIVE_LATENCY_US,
) -> list[CommRow]:
    """Communication per step against compute per step for the parallel modes (an estimate, not a measurement).

    Sizes are ``(width, height, frames)``. FLOPs from :func:`ltxcli.bench.transformer_flops` (one branch,
    text length ``text_len``); time = FLOPs / ``achieved_tflops`` + bytes / ``link_gbps`` + one
    ``latency_us`` per collective, no overlap of compute and communication. ``cfg`` runs
    ``ceil(branches / P)`` branches per rank and all-gathers the ``[branches, N, 128]`` velocity once;
    ``sequence`` runs all branches on ``N / P`` tokens with 2 all-to-all calls per layer (q, k, v fused
    into one; 4 tensors' worth of bytes) and one all-gather; ``cfg2+seq`` is 2 branch groups of ``P / 2``
    sequence-parallel ranks.
    """
    from .bench import transformer_flops
    from .models.configs import TRANSFORMER_2B, TRANSFORMER_13B

    configs = {"2b": TRANSFORMER_2B, "13b": TRANSFORMER_13B}
    rows: list[CommRow] = []
    for name in models:
        cfg = configs[name]
        d, layers, out_ch = cfg.inner_dim, cfg.num_layers, cfg.out_channels
        for width, height, frames in sizes:
            tokens = ((frames - 1) // 8 + 1) * (height // 32) * (width // 32)
            branch = transformer_flops(cfg, tokens, text_len)["total"]
            single_ms = branches * branch / (achieved_tflops * 1e12) * 1e3
            for p in gpus:
                shapes = [("cfg", p, 1), ("sequence", 1, p)]
                if p >= 4:
                    shapes.append(("cfg2+seq", 2, p // 2))
                for mode, c, s in shapes:
                    local_branches = math.ceil(branches / c)
                    flops = local_branches * branch / s  # attention and linear layers both split by s
                    nbytes = _seq_comm_bytes(layers, local_branches, tokens, d, out_ch, s, bytes_per_element)
                    calls = 2 * layers + 1 if s > 1 else 0
                    if c > 1:
                        nbytes += (c - 1) * local_branches * tokens * out_ch * bytes_per_element
                        calls += 1
                    compute_ms = flops / (achieved_tflops * 1e12) * 1e3
                    comm_ms = nbytes / (link_gbps * 1e9) * 1e3 + calls * latency_us / 1e3
                    rows.append(CommRow(
                        name, height, width, frames, tokens, p, mode, branches, flops / 1e12, nbytes / 1e6, calls,
                        compute_ms, comm_ms, single_ms / (compute_ms + comm_ms),
                    ))
    return rows


def format_comm_table(rows: Sequence[CommRow]) -> list[str]:
    """A Markdown table of :func:`comm_model` rows."""
    lines = [
        "| model | size | tokens | GPUs | mode | TFLOP/rank | comm MB/rank | collectives | compute ms | comm ms "
        "| comm/compute | speedup |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.width}x{r.height}x{r.frames} | {r.tokens} | {r.gpus} | {r.mode} | "
            f"{r.compute_tflop:.1f} | {r.comm_mb:.1f} | {r.collectives} | {r.compute_ms:.1f} | {r.comm_ms:.2f} | "
            f"{r.comm_ms / r.compute_ms:.3f} | {r.speedup:.2f}x |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ltxcli.distributed [--branches N] [--json]``: print the communication model."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ltxcli.distributed", description=main.__doc__)
    parser.add_argument("--branches", type=int, default=3, help="guidance branches per step (CFG+STG: 3)")
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    parser.add_argument("--link-gbps", type=float, default=NVLINK_H100_GBPS)
    parser.add_argument("--tflops", type=float, default=ACHIEVED_TFLOPS)
    ns = parser.parse_args(argv)
    rows = comm_model(branches=ns.branches, link_gbps=ns.link_gbps, achieved_tflops=ns.tflops)
    if ns.json:
        for r in rows:
            print(json.dumps(r.as_dict()))
    else:
        print(f"per rank and denoising step; {ns.branches} branches, bf16, {ns.link_gbps:g} GB/s per direction, "
              f"{ns.tflops:g} TFLOP/s achieved, {COLLECTIVE_LATENCY_US:g} us per collective, no overlap")
        print("\n".join(format_comm_table(rows)))
    return 0


__all__ = [
    "DecodeSlice", "DistContext", "ParallelTransformer", "ParallelVAE", "claim_output", "comm_model",
    "format_comm_table", "init", "init_from_env", "is_main", "launch", "parallel_decode",
    "parallelize", "plan_decode", "rank_stats", "receptive_halo", "release_claim", "shard_items",
    "torchrun_command", "under_torchrun",
]

if __name__ == "__main__":
    raise SystemExit(main())
