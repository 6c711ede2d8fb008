"""One video's transformer split across the ranks of a :class:`~ltxcli.parallel.context.DistContext`.

Every rank runs the same pipeline code on the same inputs with the same CPU-seeded noise, so the replicated
parts (text encoding, conditioning, sampler arithmetic) agree bit for bit and only the expensive parts are
divided (:func:`parallelize` installs :class:`ParallelTransformer` and :class:`~ltxcli.parallel.vae.ParallelVAE`
on a :class:`~ltxcli.pipeline.Pipeline`):

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

Inference only: the collectives carry no autograd. Communication never syncs with the host (shapes are
Python ints), so the loop stays asynchronous on GPUs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.attention import attention
from ..models.transformer import STGMode, TextKV
from ..models.upcast import compute_dtype
from .collectives import all_gather, all_reduce_sum, all_to_all, split_bounds
from .context import DistContext
from .vae import Delegating, ParallelVAE

Mode = Literal["auto", "cfg", "sequence", "cfg+sequence"]
MODES: tuple[str, ...] = ("auto", "cfg", "sequence", "cfg+sequence")


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
        self.local_tokens = 0  # real tokens in this rank's shard (the rest is padding)
        self.comm_bytes = 0


def _seq_to_heads(x: Tensor, degree: int, group: Any, state: _SeqState) -> Tensor:
    """``[..., n, D]`` (my tokens, all heads) -> ``[..., P*n, D/P]`` (all tokens, my heads)."""
    *lead, n, d = x.shape
    # [..., n, D] -> [..., n, P, D/P] -> [P, ..., n, D/P]: chunk j (heads of rank j) goes to rank j
    parts = x.reshape(*lead, n, degree, d // degree).movedim(-2, 0)
    state.comm_bytes += x.numel() * x.element_size() * (degree - 1) // degree
    got = all_to_all(parts, group)  # [P, ..., n, D/P]: chunk j = tokens of rank j
    return got.movedim(0, -3).reshape(*lead, degree * n, d // degree)


def _heads_to_seq(x: Tensor, degree: int, group: Any, state: _SeqState) -> Tensor:
    """Inverse of :func:`_seq_to_heads`: ``[..., P*n, D/P]`` -> ``[..., n, D]``."""
    *lead, pn, dp = x.shape
    n = pn // degree
    # [..., P*n, D/P] -> [P, ..., n, D/P]: chunk j (tokens of rank j) goes to rank j
    parts = x.reshape(*lead, degree, n, dp).movedim(-3, 0)
    state.comm_bytes += x.numel() * x.element_size() * (degree - 1) // degree
    got = all_to_all(parts, group)  # [P, ..., n, D/P]: chunk j = heads of rank j
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


class ParallelTransformer(Delegating):
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
        text_kv: TextKV | None = None,
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
                skip_layer_mask, skip_layer_strategy, text_kv,
            )
        bounds = split_bounds(batch, layout.cfg)
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
                None if text_kv is None else tuple((_take(k, lo, hi, batch), _take(v, lo, hi, batch))
                                                   for k, v in text_kv),  # type: ignore[misc]
            )
            dtype = local.dtype
            if hi - lo < chunk:
                local = torch.cat([local, local.new_zeros(chunk - (hi - lo), tokens, out_channels)])
        else:
            # Ranks beyond the branch count only take part in the gather.
            local = hidden_states.new_zeros((chunk, tokens, out_channels), dtype=dtype)
        gathered = all_gather(local, layout.cfg, layout.cfg_group)  # [cfg, chunk, N, C]
        self.comm_bytes += local.numel() * local.element_size() * (layout.cfg - 1)
        return torch.cat([gathered[i, : b - a] for i, (a, b) in enumerate(bounds)])

    def text_keys_values(self, encoder_hidden_states: Tensor) -> TextKV:
        """The wrapped model's :meth:`~ltxcli.models.transformer.LTXVideoTransformer.text_keys_values` of the whole
        text batch (every rank computes them; :meth:`forward` hands each rank its guidance rows)."""
        return self.module.text_keys_values(encoder_hidden_states)

    # --- what a step cache (ltxcli.step_cache) needs to decide alike on every rank ---------------------------------

    def token_sums(self, parts: list[Tensor]) -> Tensor:
        """Per batch element of each part ``[B, n, D]`` (tensors over the tokens the wrapped model sees in this
        call), its float32 sum over the whole sequence, concatenated: inside a sequence-parallel call over the
        shard's real tokens (padding dropped), summed over the sequence group in one all-reduce (a collective
        every rank of the group makes in the same call); elsewhere the local sums."""
        state = self._state
        if state.group is None:
            return torch.cat([t.sum(dim=(1, 2), dtype=torch.float32) for t in parts])
        local = torch.cat([t[:, : state.local_tokens].sum(dim=(1, 2), dtype=torch.float32) for t in parts])
        return all_reduce_sum(local, state.group)

    def sequence_degree(self) -> int:
        """How many ranks share the tokens of the current call (1 outside a sequence-parallel call)."""
        return self._state.degree if self._state.group is not None else 1

    def world_sum(self, values: list[float]) -> list[float]:
        """``values`` summed over every rank (a collective of the whole group; call it on every rank)."""
        out = all_reduce_sum(torch.tensor(values, dtype=torch.float64, device=self.ctx.device), self.ctx.group)
        return out.tolist()

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
        text_kv: TextKV | None,
    ) -> Tensor:
        kwargs = {
            "encoder_attention_mask": encoder_attention_mask, "skip_layer_mask": skip_layer_mask,
            "skip_layer_strategy": skip_layer_strategy, "text_kv": text_kv,  # the text is not sharded
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
        state.local_tokens = max(0, min(n, tokens - r * n))
        try:
            out = self.module(x, encoder_hidden_states, timestep, rope=rope_local, **kwargs)  # [B, n, C]
        finally:
            state.group = None
        gathered = all_gather(out, p, layout.seq_group)  # [P, B, n, C]
        self.comm_bytes += state.comm_bytes + out.numel() * out.element_size() * (p - 1)
        # [P, B, n, C] -> [B, P*n, C] -> the real tokens
        return gathered.movedim(0, 1).reshape(batch, p * n, -1)[:, :tokens]


def check_mode(mode: str, heads: int, world: int) -> None:
    """Refuse (:class:`ValueError`) a ``mode`` that cannot split a transformer with ``heads`` attention heads over
    ``world`` processes, before any weight is loaded (:class:`ParallelTransformer` would refuse it later)."""
    if mode == "sequence" and heads % world:
        raise ValueError(f"--parallel sequence over {world} processes needs the model's {heads} attention heads "
                         f"to be divisible by {world}: use --parallel auto or cfg, or a process count that divides "
                         f"{heads}")
    if mode == "cfg+sequence":
        if world % 2:
            raise ValueError(
                f"--parallel cfg+sequence needs an even number of processes (2 guidance groups), not {world}")
        if heads % (world // 2):
            raise ValueError(f"--parallel cfg+sequence over {world} processes splits the {heads} attention heads "
                             f"{world // 2} ways, which does not divide them: use --parallel auto or cfg")


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


__all__ = ["MODES", "Mode", "ParallelTransformer", "check_mode", "parallelize"]
