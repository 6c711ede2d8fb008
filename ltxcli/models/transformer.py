"""The LTX-Video DiT (official ``Transformer3DModel``), for every 0.9.x release (2B and 13B).

Module and parameter names are the official checkpoint keys, so an official state dict (prefix
``model.diffusion_model.`` stripped) loads with ``strict=True``. Precision follows the official code:
RoPE tables and the timestep sinusoid in float32; RMSNorm variance in float32; every other op in the
dtype of its inputs.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltxcli.models.attention import attention
from ltxcli.models.attention_kernels import AttentionBackend
from ltxcli.models.configs import TransformerConfig
from ltxcli.models.embeddings import TIME_PROJ_DIM, timestep_sinusoid
from ltxcli.models.rope import apply_rope, rope_tables
from ltxcli.models.upcast import UpcastLinear, compute_dtype

_TEXT_MASK_BIAS = -10000.0


def _onednn_linear_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_ONEDNN_LINEAR = _onednn_linear_available()  # whether the oneDNN route exists at all in this torch build


def set_cpu_gemm(model: nn.Module, onednn: bool) -> int:
    """Which GEMM route the CPU float32 linears of ``model`` take (:func:`_dense`): oneDNN (``True``, the
    default of a freshly built model) or the module's own ``F.linear`` (BLAS). Which one is faster depends on
    the CPU, so the choice is made outside the model (:mod:`ltxcli.calibrate` measures it) and set here, per
    model, on every linear layer; returns how many layers were set."""
    count = 0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.onednn_gemm = onednn
            count += 1
    return count


def cpu_gemm_route(model: nn.Module) -> str:
    """The route the CPU float32 linears of ``model`` take (:func:`set_cpu_gemm`): ``"onednn"`` or ``"blas"``
    (``F.linear``; also where this torch build has no oneDNN route). The two sum in another order, so the last bits
    of a video depend on it: a generation record keeps it."""
    layer = next((m for m in model.modules() if isinstance(m, nn.Linear)), None)
    return "onednn" if _ONEDNN_LINEAR and getattr(layer, "onednn_gemm", True) else "blas"


def _dense(layer: nn.Module, x: Tensor, gelu_tanh: bool = False) -> Tensor:
    """``layer(x)``, or ``gelu(layer(x), approximate="tanh")`` with ``gelu_tanh``.

    A plain float32 ``nn.Linear`` (or an :class:`UpcastLinear` computing in float32) on the CPU, outside
    autograd, autocast and hooks, runs its GEMM through oneDNN instead of the BLAS behind ``F.linear`` unless
    :func:`set_cpu_gemm` turned that off for its model: the same float32 product and bias, summed in another
    order (about 1e-6 relative apart), 1.2-1.5x faster on an AVX-512 AMD EPYC but slower on an AVX2-only one
    (BENCHMARKS.md); the GELU then runs inside the GEMM (a oneDNN post-op on the output tile while it
    is in cache) instead of as a second pass over a fresh ``[B, N, 4D]`` tensor. Every other layer, dtype and
    device takes the module's own ``forward`` (and ``F.gelu``).
    """
    kind = type(layer)
    upcast = isinstance(layer, UpcastLinear)
    if (
        _ONEDNN_LINEAR
        and (kind is nn.Linear or upcast)
        and getattr(layer, "onednn_gemm", True)
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and compute_dtype(layer) == torch.float32
        and not torch.is_grad_enabled()
        and not (layer._forward_hooks or layer._forward_pre_hooks)
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()  # inductor cannot lower the oneDNN op; it picks its own GEMM
    ):
        weight = layer.compute_weight() if upcast else layer.weight
        if gelu_tanh:
            return torch.ops.mkldnn._linear_pointwise(x, weight, layer.bias, "gelu", [], "tanh")
        return torch.ops.mkldnn._linear_pointwise(x, weight, layer.bias, "none", [], "")
    return F.gelu(layer(x), approximate="tanh") if gelu_tanh else layer(x)


def _table_init(rows: int, dim: int) -> Tensor:
    """The official ``randn(rows, dim) / sqrt(dim)`` initial modulation table. On the meta device (models built
    for checkpoint loading) there is nothing to scale, and dividing a meta tensor would import ``torch._dynamo``
    (about 1.5 s of every load), so the division is skipped there."""
    table = torch.randn(rows, dim)
    return table if table.is_meta else table / dim**0.5


class STGMode(str, enum.Enum):
    """Spatio-temporal guidance perturbation of the batch elements whose skip-mask entry is 0."""

    ATTENTION_VALUES = "attention_values"  # self-attention output := V (identity attention map)
    ATTENTION_SKIP = "attention_skip"  # self-attention output := its input (before to_out)
    TRANSFORMER_BLOCK = "transformer_block"  # block output := block input
    # The official ``Residual`` drops the self-attention's residual connection, which LTX-Video's attention layers
    # do not have (``residual_connection=False``): it perturbs nothing, and STG then only rescales.
    RESIDUAL = "residual"


def _blend(keep: Tensor, other: Tensor, mask: Tensor | None) -> Tensor:
    """``keep`` where ``mask`` is 1, ``other`` where it is 0 (``mask`` is ``[B, 1, 1]``); official arithmetic."""
    if mask is None:
        return keep
    return keep * mask + other * (1.0 - mask)


def _rms(x: Tensor, eps: float) -> Tensor:
    """``x / sqrt(mean(x^2) + eps)`` over the last dim, the variance in float32 (result in float32 for
    half-precision ``x``)."""
    var = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
    return x * torch.rsqrt(var + eps)


class RMSNorm(nn.Module):
    """RMS norm over the last dim, variance in float32 (diffusers ``RMSNorm`` semantics).

    With a weight, the normalised value is cast to the weight's dtype only when that is half precision
    (so it stays float32 for a float32 weight); without one it is cast back to the input dtype.
    """

    def __init__(self, dim: int, eps: float, weight: bool) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if weight else None

    def forward(self, x: Tensor) -> Tensor:
        y = _rms(x, self.eps)
        if self.weight is None:
            return y.to(x.dtype)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            y = y.to(self.weight.dtype)
        return y * self.weight


class Attention(nn.Module):
    """Self- (attn1) or cross- (attn2) attention with q/k RMSNorm over the full inner dim (eps 1e-5)."""

    def __init__(self, dim: int, heads: int, kv_dim: int, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_k = nn.Linear(kv_dim, dim, bias=bias)
        self.to_v = nn.Linear(kv_dim, dim, bias=bias)
        self.q_norm = RMSNorm(dim, eps=1e-5, weight=True)
        self.k_norm = RMSNorm(dim, eps=1e-5, weight=True)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        # per-model kernel choice, set by ltxcli.kernels.set_attention_backend
        self.attention_kernel = AttentionBackend.SDPA

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        rope: tuple[Tensor, Tensor] | None = None,
        mask: Tensor | None = None,
        skip: Tensor | None = None,
        skip_mode: STGMode | None = None,
        kv: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """``context=None`` (and no ``kv``) is self-attention (RoPE applied to q and k after their norms).

        ``kv``: this layer's keys and values of the context, already computed (:meth:`context_kv`), used
        instead of ``context``. ``skip`` (``[B, 1, 1]``, 0 = perturb) with an attention ``skip_mode``
        replaces the attention output of those batch elements by V (ATTENTION_VALUES) or by ``x``
        (ATTENTION_SKIP) before ``to_out``.
        """
        q = self.q_norm(_dense(self.to_q, x))
        if kv is not None:
            k, v = kv
        elif context is not None:
            k, v = self.context_kv(context)
        else:
            k = self.k_norm(_dense(self.to_k, x))
            v = _dense(self.to_v, x)
            if rope is not None:
                k = apply_rope(k, *rope)
                q = apply_rope(q, *rope)
        out = self._attend(q, k, v, mask)
        if skip_mode is STGMode.ATTENTION_SKIP:
            out = _blend(out, x, skip)
        elif skip_mode is STGMode.ATTENTION_VALUES:
            out = _blend(out, v, skip)
        return _dense(self.to_out[0], out)

    def context_kv(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys (normed) and values ``[B, S, D]`` of ``context [B, S, kv_dim]``: what
        :meth:`forward` computes from its ``context`` (they depend on nothing else, so a caller may compute
        them once and pass them as ``kv`` on every later call)."""
        return self.k_norm(_dense(self.to_k, context)), _dense(self.to_v, context)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """The attention kernel call of :meth:`forward` (``[B, N, D]`` each). A swap point:
        ``ltxcli.parallel.transformer`` replaces it on an instance for sequence parallelism."""
        return attention(q, k, v, self.heads, mask, self.attention_kernel)


class _GeluTanhProj(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return _dense(self.proj, x, gelu_tanh=True)


class FeedForward(nn.Module):
    """``Linear(D, 4D) -> GELU(tanh) -> Linear(4D, D)``; index 1 is the (parameter-free) dropout slot."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.ModuleList([_GeluTanhProj(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = _dense(layer, x)
        return x


class TransformerBlock(nn.Module):
    """Pre-norm DiT block with adaLN-single modulation (shift/scale/gate for attn1 and for the FF).

    Cross-attention has no norm, gate or modulation and reads the running hidden state directly.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        dim = cfg.inner_dim
        self.norm_eps = cfg.norm_eps
        self.attn1 = Attention(dim, cfg.num_attention_heads, dim, cfg.attention_bias)
        self.attn2 = Attention(dim, cfg.num_attention_heads, cfg.cross_attention_dim, cfg.attention_bias)
        self.ff = FeedForward(dim)
        self.scale_shift_table = nn.Parameter(_table_init(6, dim))

    def _norm(self, x: Tensor) -> Tensor:
        return _rms(x, self.norm_eps).to(x.dtype)

    def modulated_input(self, x: Tensor, tmod: Tensor) -> Tensor:
        """The self-attention input ``norm1(x) * (1 + scale_msa) + shift_msa`` that :meth:`forward` computes, for
        ``x [B, N, D]`` and ``tmod [B, T, 6D]`` (what TeaCache measures)."""
        # Called outside this block's own call, where sequential offload (ltxcli.offload) has its weights on the
        # host: the two rows are brought to x's device (a no-op when they are there).
        table = self.scale_shift_table[:2].to(x.device)
        # [B, T, 6D] -> [B, T, 6, D]: rows 0 and 1 are shift_msa and scale_msa
        ada = table[None, None] + tmod.reshape(x.shape[0], tmod.shape[1], 6, -1)[:, :, :2]
        return self._norm(x) * (1 + ada[:, :, 1]) + ada[:, :, 0]

    def forward(
        self,
        x: Tensor,
        context: Tensor | None,
        tmod: Tensor,
        rope: tuple[Tensor, Tensor],
        text_bias: Tensor | None,
        skip: Tensor | None = None,
        skip_mode: STGMode | None = None,
        text_kv: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """``x [B, N, D]``, ``context [B, S, D]`` (None with ``text_kv``: attn2's keys and values ``[B, S, D]``
        of it, computed before), ``tmod [B, T, 6D]`` (T = 1 or N), ``skip [B, 1, 1]``."""
        if context is None and text_kv is None:  # attn2 would silently attend to x itself
            raise ValueError("a block needs the text: its context or its keys and values (text_kv)")
        batch = x.shape[0]
        # [B, T, 6D] -> [B, T, 6, D]
        ada = self.scale_shift_table[None, None] + tmod.reshape(batch, tmod.shape[1], 6, -1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = ada.unbind(dim=2)

        h = self._norm(x) * (1 + scale_msa) + shift_msa
        attn_mode = skip_mode if skip_mode is not STGMode.TRANSFORMER_BLOCK else None
        out = x + gate_msa * self.attn1(h, rope=rope, skip=skip, skip_mode=attn_mode)
        out = out + self.attn2(out, context, mask=text_bias, kv=text_kv)
        h = self._norm(out) * (1 + scale_mlp) + shift_mlp
        out = out + gate_mlp * self.ff(h)
        if skip_mode is STGMode.TRANSFORMER_BLOCK:
            out = _blend(out, x, skip)
        return out


class _TimestepMLP(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(TIME_PROJ_DIM, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return _dense(self.linear_2, F.silu(_dense(self.linear_1, x)))


class _TimestepEmbedding(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.timestep_embedder = _TimestepMLP(dim)


class AdaLNSingle(nn.Module):
    """adaLN-single: ``t -> sinusoid(256) -> MLP -> temb [M, D]`` and ``Linear(SiLU(temb)) -> [M, 6D]``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.emb = _TimestepEmbedding(dim)
        self.linear = nn.Linear(dim, 6 * dim)

    def forward(self, t: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        temb = self.emb.timestep_embedder(timestep_sinusoid(t).to(dtype))
        return _dense(self.linear, F.silu(temb)), temb


class CaptionProjection(nn.Module):
    """Text features -> inner dim: ``Linear -> GELU(tanh) -> Linear``."""

    def __init__(self, in_features: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_features, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return _dense(self.linear_2, _dense(self.linear_1, x, gelu_tanh=True))


#: Every block's cross-attention keys and values ``([B, S, D], [B, S, D])`` of one text batch
#: (:meth:`LTXVideoTransformer.text_keys_values`).
TextKV = tuple[tuple[Tensor, Tensor], ...]


class BlockInputs(NamedTuple):
    """What every block of one forward takes besides the tokens (:meth:`LTXVideoTransformer.prepare`).

    ``context [B, S, D]`` (None when ``text_kv`` holds every block's cross-attention keys and values
    ``[B, S, D]`` of it), ``tmod [B, T, 6D]`` and ``temb [B, T, D]`` (T = 1 or N), RoPE tables (batch B or 1),
    ``text_bias [B, 1, 1, S]``, ``skip_mask [num_layers, B]`` (0 perturbs) with its STG ``mode``.
    """

    context: Tensor | None
    tmod: Tensor
    temb: Tensor
    rope: tuple[Tensor, Tensor]
    text_bias: Tensor | None
    skip_mask: Tensor | None
    mode: STGMode | None
    text_kv: TextKV | None = None

    def rows(self, index: Tensor) -> BlockInputs:
        """The inputs of the batch elements ``index`` (a 1-D int64 tensor on their device); tables shared by the
        whole batch (batch 1) are kept as they are."""

        def pick(t: Tensor | None, dim: int = 0) -> Tensor | None:
            if t is None or t.shape[dim] == 1:
                return t
            return t.index_select(dim, index)

        rope = (pick(self.rope[0]), pick(self.rope[1]))
        text_kv = None if self.text_kv is None else tuple((pick(k), pick(v)) for k, v in self.text_kv)
        return BlockInputs(pick(self.context), pick(self.tmod), pick(self.temb), rope,  # type: ignore[arg-type]
                           pick(self.text_bias), pick(self.skip_mask, 1), self.mode, text_kv)  # type: ignore[arg-type]


class LTXVideoTransformer(nn.Module):
    """The LTX-Video DiT. ``forward`` returns the flow velocity ``[B, N, out_channels]``."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.inner_dim
        self.patchify_proj = nn.Linear(config.in_channels, dim)
        self.adaln_single = AdaLNSingle(dim)
        self.caption_projection = CaptionProjection(config.caption_channels, dim)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(config) for _ in range(config.num_layers)])
        self.scale_shift_table = nn.Parameter(_table_init(2, dim))
        self.proj_out = nn.Linear(dim, config.out_channels)

    def rope_tables(self, indices_grid: Tensor) -> tuple[Tensor, Tensor]:
        """float32 cos/sin ``[B, N, D]`` for fractional pixel coords ``[B, 3, N]`` (time in seconds)."""
        cfg = self.config
        return rope_tables(
            indices_grid, cfg.inner_dim, cfg.positional_embedding_theta, cfg.positional_embedding_max_pos
        )

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
        """Velocity for latent tokens ``hidden_states [B, N, in_channels]``.

        ``timestep``: raw t in [0, 1], ``[B]``, ``[B, 1]`` or per token ``[B, N]``. Positions: exactly one of
        ``indices_grid`` (float32 ``[B, 3, N]`` pixel coords, time divided by the frame rate) or ``rope``
        (the float32 tables of :meth:`rope_tables`, batch B or 1, reusable across steps; they are cast to the
        parameter dtype here, so tables already in that dtype skip the per-step cast).
        ``encoder_attention_mask [B, S]``: 1 keep, 0 padding. ``skip_layer_mask [num_layers, B]``: 0 perturbs
        that batch element in that block with ``skip_layer_strategy`` (spatio-temporal guidance).
        ``text_kv``: :meth:`text_keys_values` of ``encoder_hidden_states``, computed once for the calls that share
        the text (the denoising steps of a pass); the result is the same, bit for bit, as without it.
        """
        x, inputs = self.prepare(
            hidden_states, encoder_hidden_states, timestep, indices_grid=indices_grid, rope=rope,
            encoder_attention_mask=encoder_attention_mask, skip_layer_mask=skip_layer_mask,
            skip_layer_strategy=skip_layer_strategy, text_kv=text_kv,
        )
        return self.project(self.final_norm(self.run_blocks(x, inputs), inputs.temb))

    def prepare(
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
    ) -> tuple[Tensor, BlockInputs]:
        """The part of :meth:`forward` before the blocks: patchified tokens ``x [B, N, D]`` and what every block
        takes. ``forward`` is ``project(final_norm(run_blocks(*prepare(...)), temb))``; a step cache
        (:mod:`ltxcli.step_cache`) calls the pieces itself."""
        if (indices_grid is None) == (rope is None):
            raise ValueError("pass exactly one of indices_grid or rope")
        batch = hidden_states.shape[0]
        param_dtype = compute_dtype(self.patchify_proj)

        text_bias = None
        if encoder_attention_mask is not None:
            # [B, S] keep-mask -> additive bias [B, 1, 1, S] (broadcast over heads and queries)
            text_bias = (1 - encoder_attention_mask.to(hidden_states.dtype)) * _TEXT_MASK_BIAS
            text_bias = text_bias[:, None, None, :]

        x = _dense(self.patchify_proj, hidden_states)

        if rope is None:
            rope = self.rope_tables(indices_grid)
        # The official model casts the fp32 tables to its parameter dtype once per forward.
        rope = (rope[0].to(param_dtype), rope[1].to(param_dtype))

        t = self.config.timestep_scale_multiplier * timestep
        if t.ndim == 0:
            t = t.expand(batch)
        tmod, temb = self.adaln_single(t.flatten(), x.dtype)
        # [B*T, .] -> [B, T, .] with T = 1 or N
        tmod = tmod.view(batch, -1, tmod.shape[-1])
        temb = temb.view(batch, -1, temb.shape[-1])

        # with the blocks' keys and values of the text given, its projection is not needed
        context = None if text_kv is not None else self.text_context(encoder_hidden_states)

        mode = STGMode(skip_layer_strategy) if skip_layer_strategy is not None else None
        skip_mask = None
        if skip_layer_mask is not None and mode is not None:
            # the official pipeline builds this mask in the parameter dtype
            skip_mask = skip_layer_mask.to(param_dtype)
        return x, BlockInputs(context, tmod, temb, rope, text_bias, skip_mask, mode, text_kv)

    def run_blocks(self, x: Tensor, inputs: BlockInputs, start: int = 0, stop: int | None = None) -> Tensor:
        """Blocks ``start:stop`` (default: all) on ``x [B, N, D]``."""
        batch = x.shape[0]
        blocks = self.transformer_blocks
        for i in range(start, len(blocks) if stop is None else stop):
            skip = inputs.skip_mask[i].view(batch, 1, 1) if inputs.skip_mask is not None else None
            kv = inputs.text_kv[i] if inputs.text_kv is not None else None
            x = blocks[i](x, inputs.context, inputs.tmod, inputs.rope, inputs.text_bias, skip, inputs.mode, kv)
        return x

    def text_context(self, encoder_hidden_states: Tensor) -> Tensor:
        """The text features ``[B, S, caption_channels]`` projected to the blocks' width ``[B, S, D]``."""
        return self.caption_projection(encoder_hidden_states)

    def text_keys_values(self, encoder_hidden_states: Tensor) -> TextKV:
        """Every block's cross-attention keys and values of ``encoder_hidden_states [B, S, caption_channels]``
        (``2 * num_layers`` tensors ``[B, S, D]``), for :meth:`forward`'s ``text_kv``: they depend on the text
        alone, not on the latents or the timestep, so a pass computes them once instead of at every step (for the
        2B at CFG, 0.94 GFLOP a step per text token: 240 GFLOP with the official 256)."""
        context = self.text_context(encoder_hidden_states)
        return tuple(block.attn2.context_kv(context) for block in self.transformer_blocks)

    def final_norm(self, x: Tensor, temb: Tensor) -> Tensor:
        """The output norm and its modulation by ``temb [B, T, D]`` (what :meth:`project` takes)."""
        # [B, T, 2, D]: row 0 shift, row 1 scale
        shift_scale = self.scale_shift_table[None, None] + temb[:, :, None]
        shift, scale = shift_scale[:, :, 0], shift_scale[:, :, 1]
        x = F.layer_norm(x, (x.shape[-1],), eps=1e-6)
        return x * (1 + scale) + shift

    def project(self, x: Tensor) -> Tensor:
        """``[B, N, D]`` -> the velocity ``[B, N, out_channels]``."""
        return _dense(self.proj_out, x)
