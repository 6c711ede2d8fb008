"""Float8 (e4m3) linear layers for the DiT's transformer blocks.

:class:`FP8Linear` keeps ``nn.Linear``'s parameter names with an e4m3 weight and runs ``torch._scaled_mm``;
:func:`convert_to_fp8` swaps a transformer's block linears for it. Whether this device has fp8 GEMMs at all is
decided outside the model (:func:`ltxcli.kernels.require_fp8`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["E4M3_MAX", "FP8Linear", "convert_to_fp8", "quantize_e4m3"]

E4M3_MAX = float(torch.finfo(torch.float8_e4m3fn).max)  # 448
# cuBLASLt fuses the bias into the fp8 GEMM only for a half-precision output.
_FUSED_BIAS_DTYPES = (torch.bfloat16, torch.float16)


def quantize_e4m3(x: Tensor, scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-tensor float8 e4m3 codes and their float32 scale, ``x ≈ codes.float() * scale``.

    ``scale`` defaults to ``amax(|x|) / 448`` (kept on the device: no host sync); values are rounded to
    nearest-even in e4m3 after the division, saturating at ±448.
    """
    if scale is None:
        amax = x.detach().abs().amax().to(torch.float32)
        scale = (amax / E4M3_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    codes = (x.to(torch.float32) / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return codes, scale


class FP8Linear(nn.Module):
    """``nn.Linear`` with float8 e4m3 weights run as a ``torch._scaled_mm`` GEMM.

    Parameter names are those of ``nn.Linear`` (``weight`` in e4m3 ``[out, in]``, ``bias`` in the compute
    dtype), so official fp8 checkpoints load as they are. ``weight_scale`` (float32, 0-d) is a buffer outside
    the state dict: 1 for weights stored in e4m3 (the official fp8 checkpoints are direct casts, read with unit
    scales as the official Q8 patch does), ``amax/448`` for weights quantised here from a wider dtype (so a
    state dict saved from such a layer does not carry its scale). Activations are quantised per tensor
    on every call (``amax/448``); the output has the input's dtype.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        super().__init__()
        if in_features % 16 or out_features % 16:
            # cuBLASLt fp8 GEMMs need both weight dims divisible by 16
            raise ValueError(f"FP8Linear needs in/out features divisible by 16, got {in_features}x{out_features}")
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(
            torch.empty(out_features, in_features, dtype=torch.float8_e4m3fn, device=device), requires_grad=False
        )
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype, device=device), requires_grad=False)
        else:
            self.register_parameter("bias", None)
        self.register_buffer("weight_scale", torch.ones((), dtype=torch.float32, device=device), persistent=False)
        self.use_scaled_mm = True  # False: dequantise + float32 matmul (reference; any device)
        self.fast_accum = True  # Hopper fast accumulation, as the official Q8 kernels use

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, dtype: torch.dtype = torch.bfloat16) -> FP8Linear:
        """Wrap ``linear``: e4m3 weights are kept bit for bit (unit scale); others are quantised per tensor."""
        w = linear.weight.detach()
        if w.dtype == torch.float8_e4m3fn:
            codes, scale = w, torch.ones((), dtype=torch.float32, device=w.device)
        else:
            codes, scale = quantize_e4m3(w)
        with torch.device("meta"):
            layer = cls(linear.in_features, linear.out_features, linear.bias is not None, dtype=dtype)
        layer.weight = nn.Parameter(codes, requires_grad=False)
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach().to(dtype), requires_grad=False)
        layer.weight_scale = scale
        return layer

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> FP8Linear:
        # ``module.to(dtype)`` / ``.float()`` must move but not re-type the fp8 codes and the float32 scale.
        weight_dtype, scale = self.weight.dtype, self.weight_scale
        super()._apply(fn, recurse)
        if self.weight.dtype != weight_dtype:
            # every e4m3 value is exact in the wider float types, so casting back restores the codes
            self.weight = nn.Parameter(self.weight.detach().to(weight_dtype), requires_grad=False)
        if self.weight_scale.dtype != scale.dtype:
            self.weight_scale = scale.to(self.weight_scale.device)
        return self

    def forward(self, x: Tensor) -> Tensor:
        if not self.use_scaled_mm:
            return self.forward_reference(x)
        out_dtype = x.dtype
        x_q, x_scale = quantize_e4m3(x)
        # [..., in] -> [M, in]: _scaled_mm takes 2-D operands, the weight as the column-major [in, out] view.
        # cuBLASLt fuses the bias only for a half-precision output.
        fuse_bias = self.bias is not None and out_dtype in _FUSED_BIAS_DTYPES
        y = torch._scaled_mm(
            x_q.reshape(-1, self.in_features), self.weight.t(), scale_a=x_scale, scale_b=self.weight_scale,
            bias=self.bias.to(out_dtype) if fuse_bias else None, out_dtype=out_dtype, use_fast_accum=self.fast_accum,
        )
        if self.bias is not None and not fuse_bias:
            y = y + self.bias.to(out_dtype)
        # [M, out] -> [..., out]
        return y.reshape(*x.shape[:-1], self.out_features)

    def forward_reference(self, x: Tensor) -> Tensor:
        """The same quantised product as :meth:`forward`, dequantised and multiplied in float32."""
        x_q, x_scale = quantize_e4m3(x)
        w = self.weight.to(torch.float32) * self.weight_scale
        bias = self.bias.to(torch.float32) if self.bias is not None else None
        return F.linear(x_q.to(torch.float32) * x_scale, w, bias).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def convert_to_fp8(transformer: nn.Module, *, dtype: torch.dtype = torch.bfloat16) -> list[str]:
    """Swap every ``nn.Linear`` inside ``transformer.transformer_blocks`` (attn1/attn2 q, k, v, out and both
    feed-forward layers) for :class:`FP8Linear`, in place; returns the swapped names.

    Everything else (embeddings, caption projection, adaLN, norms, tables, proj_out, the FP8Linear biases)
    is cast to ``dtype``, the compute dtype: fp8 checkpoints may store more than the block linears in fp8, and
    the official Q8 patch likewise runs all other modules in bfloat16.
    """
    if dtype not in (torch.bfloat16, torch.float32):
        raise ValueError(f"fp8 layers compute in bfloat16 (or float32), not {dtype}")
    swapped: list[str] = []
    for i, block in enumerate(transformer.transformer_blocks):
        for name, module in list(block.named_modules()):
            if type(module) is not nn.Linear:
                continue
            parent_name, _, child = name.rpartition(".")
            parent = block.get_submodule(parent_name)
            setattr(parent, child, FP8Linear.from_linear(module, dtype=dtype))
            swapped.append(f"transformer_blocks.{i}.{name}")
    for module in transformer.modules():
        if isinstance(module, FP8Linear):
            continue
        for pname, p in list(module.named_parameters(recurse=False)):
            if p.is_floating_point() and p.dtype != dtype:
                setattr(module, pname, nn.Parameter(p.detach().to(dtype), requires_grad=False))
        for bname, b in list(module.named_buffers(recurse=False)):
            if b.is_floating_point() and b.dtype != dtype:
                setattr(module, bname, b.to(dtype))
    return swapped

