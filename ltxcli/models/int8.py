"""Int8 weight storage (``--weights-dtype int8``) for the DiT's transformer blocks, and the storage modes.

:class:`Int8StoredLinear` keeps the block linears' weights as int8 codes ``[out, in]`` with one float32 scale per
output row (symmetric: ``scale = amax(|row|) / 127``, ``codes = round(w / scale)`` clamped to ±127) and widens
them to the compute dtype one layer at a time, right before the layer's own GEMM, into the model's shared upcast
scratch (:mod:`ltxcli.models.upcast`; on the CPU the oneDNN route of ``ltxcli.models.transformer._dense`` takes
it like any upcast layer). The same resident bytes as fp8 storage (:class:`ltxcli.models.fp8.FP8StoredLinear`)
plus 4 bytes a row, but 7 significant bits instead of e4m3's 4: one linear's output is 3-7x closer to the
unquantised one (BENCHMARKS.md, ``benchmarks/fp8_storage.py --floor``). Per-row scales follow the rows' own range
(a row is one output channel). fp8 storage stays what the official fp8 checkpoints hold.

The storage modes (:data:`STORAGE_MODES`) dispatch between the two for the loaders and the memory plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from ltxcli.models.fp8 import FP8StoredLinear, convert_to_fp8_storage, fp8_storage_keys, quantize_stored
from ltxcli.models.upcast import StoredLinear, convert_to_stored

__all__ = [
    "INT8_MAX", "STORAGE_MODES", "Int8StoredLinear", "convert_to_int8_storage", "convert_to_storage",
    "quantize_for_storage", "quantize_int8", "storage_mode",
]

INT8_MAX = 127  # symmetric: -128 is never used, so negating a code stays in range
STORAGE_MODES = ("fp8", "int8")  # what --weights-dtype stores the block linears as


def quantize_int8(w: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row int8 codes ``[out, in]`` and float32 scales ``[out]`` of ``w`` ``[out, in]``, with
    ``w ≈ codes.float() * scale[:, None]``.

    ``scale = amax(|row|) / 127`` in float32 (an all-zero row gets the smallest normal float32, its codes 0);
    ``codes = round(w / scale)`` (half to even, as ``torch.round``) clamped to ±127. Computed in float32 on
    ``w``'s device (a float8 weight is widened first: its values are exact in float32)."""
    w32 = w.detach().to(torch.float32)
    # [out, in] -> [out]: one scale per output channel; max(amax, -amin) is amax(|w|) without an |w| temporary
    amax = torch.maximum(w32.amax(dim=1), w32.amin(dim=1).neg())
    scale = (amax / INT8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    codes = w32.div(scale[:, None]).round_().clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)  # one float temporary
    return codes, scale


class Int8StoredLinear(StoredLinear):
    """A :class:`~ltxcli.models.upcast.StoredLinear` whose stored weight is int8 codes ``[out, in]`` with a
    float32 scale per output row ``weight_scale`` ``[out]`` (``weight ≈ codes * weight_scale[:, None]``); the bias
    is in the compute dtype.

    At each call the codes are widened into the model's scratch buffer and multiplied by their row's scale there
    (the product rounded once to the compute dtype), then the layer runs the GEMM a wide ``nn.Linear`` would.
    ``weight_scale`` is a non-persistent buffer (as :class:`~ltxcli.models.fp8.FP8StoredLinear`'s): the state
    dict keeps the checkpoint's keys. ``module.to(dtype)`` changes the compute dtype (the bias), never the codes
    nor the float32 scales (:class:`~ltxcli.models.upcast.StoredLinear`).
    """

    def compute_weight(self) -> Tensor:
        # [out, in] codes (exact in bfloat16 too: |code| <= 127) times [out, 1] scales, in the compute dtype
        return self._scratch.upcast(self.weight, self.bias.dtype).mul_(self.weight_scale[:, None])


def convert_to_int8_storage(transformer: nn.Module, scales: Mapping[str, Tensor] | None = None) -> list[str]:
    """Turn the block linears (:func:`ltxcli.models.fp8.fp8_storage_keys`: the layers fp8 storage takes) into
    :class:`Int8StoredLinear`, in place; returns the converted layer names. Weights already int8 are codes the
    loader quantised while reading, with their scales in ``scales`` by layer name; other weights (any float dtype,
    float8 included) are quantised here (:func:`quantize_int8`). The layers share the transformer's existing
    upcast scratch (or one new buffer)."""
    given = scales or {}

    def codes_of(name: str, layer: nn.Module, w: Tensor) -> tuple[Tensor, Tensor]:
        if isinstance(layer, FP8StoredLinear):  # fp8-stored already: its values are the codes times their scale
            w = w.to(torch.float32) * layer.weight_scale
        if w.dtype != torch.int8:
            return quantize_int8(w)
        if name not in given:
            raise ValueError(f"{name}: int8 codes without their per-row scales")
        return w, given[name]

    return convert_to_stored(transformer, fp8_storage_keys(transformer), Int8StoredLinear, codes_of)


# --- storage modes ------------------------------------------------------------------------------------------------


def quantize_for_storage(
    mode: str, tensors: Mapping[str, Tensor], keys: Iterable[str], device: torch.device | str | None
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``tensors`` with those of ``keys`` as ``mode``'s codes on ``device``, and their scales by layer name: what
    a loader calls while reading, before :func:`convert_to_storage`. Each weight is moved to ``device`` and
    quantised there alone, so a GPU never holds more than one of them wide. ``fp8``:
    :func:`ltxcli.models.fp8.quantize_stored`; ``int8``: :func:`quantize_int8` (an fp8 checkpoint's codes are
    widened, then quantised per row)."""
    if mode == "fp8":
        return quantize_stored(tensors, keys, device)
    _check(mode)
    out = dict(tensors)
    scales: dict[str, Tensor] = {}
    for key in keys:
        out[key], scales[key.removesuffix(".weight")] = quantize_int8(tensors[key].to(device or "cpu"))
    return out, scales


def convert_to_storage(mode: str, transformer: nn.Module, scales: dict[str, Tensor] | None = None) -> list[str]:
    """:func:`ltxcli.models.fp8.convert_to_fp8_storage` or :func:`convert_to_int8_storage` by ``mode``."""
    if mode == "fp8":
        return convert_to_fp8_storage(transformer, scales)
    _check(mode)
    return convert_to_int8_storage(transformer, scales)


def storage_mode(transformer: nn.Module) -> str | None:
    """How the block linears of ``transformer`` are stored narrow and widened per call: ``"fp8"``, ``"int8"``
    or None (neither; float8 matmul layers, ``--dtype fp8``, are :func:`ltxcli.models.fp8.fp8_mode`'s)."""
    for m in transformer.modules():
        if isinstance(m, Int8StoredLinear):
            return "int8"
        if isinstance(m, FP8StoredLinear):
            return "fp8"
    return None


def _check(mode: str) -> None:
    if mode not in STORAGE_MODES:
        raise ValueError(f"unknown weight storage {mode!r} (use {' or '.join(STORAGE_MODES)})")
