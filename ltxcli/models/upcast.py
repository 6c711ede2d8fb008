"""Layers that keep their weight in the checkpoint's (narrower) dtype and compute in a wider one.

The released checkpoints store bfloat16 (or float8) weights; the CPU computes in float32. Converting every
weight at load writes twice the checkpoint's bytes into freshly faulted memory (7.7 GB for the 2B DiT) before
the first step can run, and keeps them resident. An :class:`UpcastLinear` / :class:`UpcastConv3d` instead keeps
the stored weight (on the CPU a view of the memory-mapped checkpoint) and copies it into one scratch buffer
per model, in the compute dtype, right before its GEMM or convolution. Widening a float is exact, and the
kernel called is the same one with the same arguments, so the outputs are bit-identical to converting at load.

The compute dtype of a layer is its bias's dtype: biases (like every tensor that is not a linear or
convolution weight) are converted at load, and ``module.to(dtype)`` / ``.float()`` keep weight and bias
consistent without extra state. Only layers with a bias are converted (every LTX-Video linear and convolution
has one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def inference_only() -> bool:
    """Outside autograd and ``torch.compile`` tracing: only then may a layer use a shared scratch buffer
    (autograd may save a weight for backward, a compiled graph fuses the cast itself; neither may see a buffer
    that the next layer overwrites)."""
    return not (torch.is_grad_enabled() or torch.compiler.is_compiling())


class UpcastScratch:
    """One growable buffer per (device, dtype), shared by the layers of one model that need a weight-sized
    temporary right before their kernel call: the widened weight of an upcast layer, the branch kernels of a
    time-Winograd convolution (:mod:`ltxcli.models.winograd`). One layer uses it at a time.

    Reusing one buffer keeps the per-call copy off the allocator: on Linux a fresh multi-MB CPU allocation is
    page-faulted in on every call, which costs more than the copy itself.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def buffer(self, n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """The first ``n`` elements of the buffer (flat; contents undefined), grown to ``n`` if needed."""
        key = (device, dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < n:
            buf = torch.empty(n, dtype=dtype, device=device)  # grows to the largest request
            self._buffers[key] = buf
        return buf[:n]

    def upcast(self, weight: Tensor, dtype: torch.dtype) -> Tensor:
        if not inference_only():
            return weight.to(dtype)
        return self.buffer(weight.numel(), dtype, weight.device).view(weight.shape).copy_(weight)

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._buffers.values())


class _Upcast:
    """Mixin: ``compute_weight()`` is the weight in the bias's dtype (the stored tensor when they agree)."""

    weight: Tensor
    bias: Tensor
    _scratch: UpcastScratch

    def compute_weight(self) -> Tensor:
        if self.weight.dtype == self.bias.dtype:
            return self.weight
        return self._scratch.upcast(self.weight, self.bias.dtype)


class UpcastLinear(_Upcast, nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.compute_weight(), self.bias)


class UpcastConv2d(_Upcast, nn.Conv2d):
    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.compute_weight(), self.bias)


class UpcastConv3d(_Upcast, nn.Conv3d):
    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.compute_weight(), self.bias)


UPCAST_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: UpcastLinear,
    nn.Conv2d: UpcastConv2d,
    nn.Conv3d: UpcastConv3d,
}


def upcastable_weights(module: nn.Module) -> set[str]:
    """State-dict keys of the weights that :func:`convert_to_upcast` can keep narrow (layers with a bias)."""
    return {
        f"{name}.weight" if name else "weight"
        for name, m in module.named_modules()
        if type(m) in UPCAST_CLASSES and m.bias is not None
    }


def convert_to_upcast(module: nn.Module, scratch: UpcastScratch | None = None) -> int:
    """Turn every plain linear/convolution whose weight is narrower than its bias into its upcast class, in
    place (the class is swapped, parameters and hooks stay); returns how many were converted.

    ``scratch`` defaults to the model's own (a ``scratch`` attribute, as the VAE has for its Winograd
    kernels), else a new one: one buffer per model either way."""
    scratch = scratch or getattr(module, "scratch", None) or UpcastScratch()
    count = 0
    for m in module.modules():
        cls = UPCAST_CLASSES.get(type(m))
        if cls is None or m.bias is None:
            continue
        w, b = m.weight, m.bias
        if w.is_floating_point() and b.is_floating_point() and w.dtype.itemsize < b.dtype.itemsize:
            m.__class__ = cls
            m._scratch = scratch
            count += 1
    return count


class KeepsCodes(nn.Module):
    """The dtype move of a layer holding one-byte weight codes with a float32 ``weight_scale`` (storage here, and
    :class:`ltxcli.models.fp8.FP8Linear`'s fp8 matmuls): ``module.to(dtype)`` changes the compute dtype (the bias)
    only. Float codes a cast widened are cast back (every one-byte code is exact in any wider float), integer codes
    are never cast, and the scale keeps its float32 values (moved to the new device, never rounded through the
    narrower dtype). Put it first among the bases, so that its ``_apply`` wraps theirs."""

    weight: nn.Parameter
    weight_scale: Tensor

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> KeepsCodes:
        codes_dtype, scale = self.weight.dtype, self.weight_scale
        super()._apply(fn, recurse)
        if self.weight.dtype != codes_dtype:
            self.weight = nn.Parameter(self.weight.detach().to(codes_dtype), requires_grad=False)
        if self.weight_scale.dtype != scale.dtype:
            self.weight_scale = scale.to(self.weight_scale.device)
        return self


class StoredLinear(KeepsCodes, UpcastLinear):
    """An :class:`UpcastLinear` whose weight is stored as one-byte codes ``[out, in]`` with a float32
    ``weight_scale`` (a non-persistent buffer, so the state dict keeps the checkpoint's keys): the base of fp8 and
    int8 storage (:mod:`ltxcli.models.fp8`, :mod:`ltxcli.models.int8`), which say how codes and scale widen; a dtype
    move keeps codes and scale (:class:`KeepsCodes`)."""


#: ``(layer name, layer, its weight) -> (codes, float32 scale)``: how a storage mode stores one layer's weight.
StoredCodes = Callable[[str, nn.Module, Tensor], tuple[Tensor, Tensor]]


def convert_to_stored(model: nn.Module, keys: Iterable[str], cls: type[StoredLinear], codes_of: StoredCodes) -> list[str]:
    """Turn the linears whose weights are the state-dict ``keys`` of ``model`` into ``cls`` (a stored-weight
    :class:`UpcastLinear`: fp8 or int8 storage), in place; returns the converted layer names. Each holds the codes
    ``codes_of`` gives and their float32 ``weight_scale``, a non-persistent buffer (the state dict keeps the
    checkpoint's keys); the class is swapped in place (the module, its bias and hooks stay). The layers share the
    model's existing upcast scratch (or one new buffer)."""
    scratch = upcast_scratch(model) or UpcastScratch()
    converted: list[str] = []
    for key in keys:
        name = key.removesuffix(".weight")
        layer = model.get_submodule(name)
        codes, scale = codes_of(name, layer, layer.weight.detach())
        layer.weight = nn.Parameter(codes, requires_grad=False)
        layer.__class__ = cls
        layer._scratch = scratch
        layer.register_buffer("weight_scale", scale.to(device=codes.device, dtype=torch.float32), persistent=False)
        converted.append(name)
    return converted


def upcast_scratch(module: nn.Module) -> UpcastScratch | None:
    """The scratch buffer the upcast layers of ``module`` already share (``None`` when it has none)."""
    return next((m._scratch for m in module.modules() if isinstance(m, _Upcast)), None)


def compute_dtype(layer: nn.Module) -> torch.dtype:
    """The dtype ``layer`` computes in: its bias's for an upcast layer, else its weight's."""
    if isinstance(layer, _Upcast):
        return layer.bias.dtype
    return layer.weight.dtype


def first_param_dtype(module: nn.Module) -> torch.dtype:
    """``next(module.parameters()).dtype``, with an upcast layer's weight counted at its compute dtype."""
    for m in module.modules():
        p = next(m.parameters(recurse=False), None)
        if p is not None:
            return m.bias.dtype if isinstance(m, _Upcast) else p.dtype
    raise ValueError(f"{type(module).__name__} has no parameters")


def stored_weight_bytes(module: nn.Module) -> tuple[int, int]:
    """(upcast layers, bytes their stored weights hold) in ``module``."""
    layers = [m for m in module.modules() if isinstance(m, _Upcast) and m.weight.dtype != m.bias.dtype]
    return len(layers), sum(m.weight.numel() * m.weight.element_size() for m in layers)
