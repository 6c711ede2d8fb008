"""Float8 (e4m3) linear layers for the DiT's transformer blocks.

Two uses of the same e4m3 codes and per-tensor scales:

* fp8 matmuls (``--dtype fp8``): :class:`FP8Linear` keeps ``nn.Linear``'s parameter names with an e4m3 weight
  and runs ``torch._scaled_mm``; :func:`convert_to_fp8` swaps a transformer's block linears for it. Whether
  this device has fp8 GEMMs at all is decided outside the model (:func:`ltxcli.kernels.require_fp8`).
* fp8 storage (``--weights-dtype fp8``, any device): :class:`FP8StoredLinear` keeps the e4m3 codes and their
  scale resident and widens them to the compute dtype one layer at a time, right before the layer's own GEMM,
  into the model's shared scratch buffer (the mechanism of :mod:`ltxcli.models.upcast`);
  :func:`convert_to_fp8_storage` converts a transformer's block linears. Half the resident bytes of bfloat16
  weights, any GPU (no fp8 tensor cores needed) or the CPU, at the price of one widening pass per layer call.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltxcli.models.upcast import KeepsCodes, StoredLinear, convert_to_stored, inference_only

__all__ = [
    "E4M3_MAX", "FP8Linear", "FP8StoredLinear", "convert_to_fp8", "convert_to_fp8_storage", "e4m3_widens_exactly",
    "fp8_mode", "fp8_storage_keys", "quantize_e4m3", "quantize_stored", "widen_e4m3",
]

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


class FP8Linear(KeepsCodes):  # a dtype move keeps the e4m3 codes and the float32 scale
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



# --- fp8 storage, widened per call ------------------------------------------------------------------------------


class FP8StoredLinear(StoredLinear):
    """A :class:`~ltxcli.models.upcast.StoredLinear` whose stored weight is float8 e4m3 codes ``[out, in]``
    with a per-tensor float32 scale (``weight ≈ codes * weight_scale``); the bias is in the compute dtype.

    At each call the codes are widened into the model's scratch buffer and multiplied by the scale there
    (in the compute dtype), then the layer runs the same GEMM a wide ``nn.Linear`` would. ``weight_scale`` is a
    non-persistent buffer (as for :class:`FP8Linear`): 1 for weights stored in e4m3 by the checkpoint (the
    official fp8 checkpoints are direct casts), ``amax/448`` for weights quantised at load. ``module.to(dtype)``
    changes the compute dtype (the bias), never the codes or the scale (:class:`~ltxcli.models.upcast.StoredLinear`).
    """

    def compute_weight(self) -> Tensor:
        dtype, codes = self.bias.dtype, self.weight
        if self.work_elements() and inference_only():
            # torch's CPU float8 conversion is a scalar loop: the bit-identical int16/float16 route instead
            out = self._scratch.buffer(codes.numel(), dtype, codes.device).view(codes.shape)
            work = self._scratch.buffer(self.work_elements(), torch.int16, codes.device)
            return widen_e4m3(codes, self.weight_scale, out, work, exact=self.widens_exactly())
        # the scale is a 0-d tensor: the product stays in the compute dtype and nothing syncs with the host
        return self._scratch.upcast(codes, dtype).mul_(self.weight_scale)

    def work_elements(self) -> int:
        """The int16 work buffer :func:`widen_e4m3` takes in the scratch, in elements (one per code of a slice): 0
        unless the layer widens in float32 on the CPU (a meta-device layer counts as one, for memory plans; GPUs
        compute in bfloat16)."""
        if self.weight.device.type in ("cpu", "meta") and self.bias.dtype == torch.float32:
            return min(self.weight.numel(), WIDEN_CHUNK)
        return 0

    def widens_exactly(self) -> bool:
        """:func:`e4m3_widens_exactly` for this layer's codes and scale, checked once per change of either (a sync
        and two passes over the codes) instead of at every call: at conversion and LoRA merge
        (:meth:`check_codes`), else at the first call that finds them changed. A change is a new scale or codes
        tensor, new codes storage, or an in-place write that bumps either's version counter (a write through ``.data`` or to
        an inference tensor does not: assign new tensors instead)."""
        seen = self.__dict__.get("_widening")
        if seen is None or seen[0] is not self.weight_scale or seen[1]() is not self.weight \
                or seen[2] != self._codes_key():
            return self.check_codes()
        return seen[3]

    def check_codes(self) -> bool:
        """Check the codes and scale for :func:`widen_e4m3`'s exact route now and remember the verdict (see
        :meth:`widens_exactly`); returns it. A NaN code or a non-finite scale is not an error here: such a layer
        widens through torch's own conversion, and its NaN output is refused after denoising like any other."""
        exact = e4m3_widens_exactly(self.weight, self.weight_scale)
        # the scale itself is held (0-d: 4 bytes): its id cannot be reused by a later scale while the verdict lives;
        # the codes by a weak reference (holding them would keep replaced codes' memory alive): new codes are a new
        # tensor even where an allocator gives them the old memory and version counter, which the key alone matches
        self._widening = (self.weight_scale, weakref.ref(self.weight), self._codes_key(), exact)
        return exact

    def codes_changed(self) -> None:
        """Call after setting new codes or a new scale: a CPU layer checks them now (:meth:`check_codes`), so that
        its first call in a denoising loop does not; a GPU layer never takes the CPU route that needs the check."""
        if self.weight.device.type == "cpu":
            self.check_codes()

    def _codes_key(self) -> tuple[int, int, int, int]:
        """Where the codes and scale live and their version counters: changes whenever their values may have."""
        return (self.weight.data_ptr(), _version(self.weight), self.weight_scale.data_ptr(), _version(self.weight_scale))


def _version(t: Tensor) -> int:
    # an inference tensor has no version counter (and is only written in place in inference mode)
    return -1 if t.is_inference() else t._version


#: Codes widened per slice by :func:`widen_e4m3`: its int16 work buffer (8 MiB) and the float32 output slice
#: (16 MiB) stay in the last-level cache across the slice's five passes (an 8192x2048 weight 1.6x faster than
#: whole-tensor passes on an idle machine, and 8 MiB of scratch instead of 2 bytes a weight). 1M-code slices were
#: 10 % faster still when idle, but each slice is five parallel regions, and on a CPU shared with other processes
#: their many thread wake-ups made a forward 1.6x slower than with 4M-code slices (BENCHMARKS.md).
WIDEN_CHUNK = 1 << 22
# int16 mask keeping bit 15 (the sign) and bits 13..7 (the e4m3 exponent and mantissa), clearing bit 14
_F16_SIGN_AND_E4M3 = 0xBF80 - 0x10000


def e4m3_widens_exactly(codes: Tensor, scale: Tensor) -> bool:
    """Whether :func:`widen_e4m3`'s integer route gives torch's bits for ``codes`` and ``scale``: contiguous codes,
    none of them NaN (0x7F, 0xFF), and a 0-d ``scale`` with a finite ``scale * 2^8``. Two reductions over the codes
    and a host sync: decide once when codes or scale are set (:meth:`FP8StoredLinear.check_codes`), not per call."""
    if not (codes.is_contiguous() and codes.numel() and scale.dim() == 0
            and math.isfinite((scale * 256.0).item())):  # in float32, as widen_e4m3 multiplies
        return False
    bits = codes.view(torch.uint8)
    # a NaN code: 0x7F is int8's max, 0xFF uint8's
    return not (int(bits.view(torch.int8).max()) == 0x7F or int(bits.max()) == 0xFF)


def widen_e4m3(codes: Tensor, scale: Tensor, out: Tensor, work: Tensor, *, exact: bool | None = None) -> Tensor:
    """``out[...] = codes.to(float32) * scale``, bit for bit, without torch's float8 conversion; returns ``out``.

    ``codes``: e4m3 codes on the CPU; ``scale``: a 0-d float32 tensor (any value); ``out``: contiguous float32 of
    the codes' shape; ``work``: a flat int16 buffer of at least ``min(codes.numel(), WIDEN_CHUNK)`` elements
    (contents undefined). torch's CPU float8 -> float32 conversion is a scalar loop about 10x slower than bfloat16's
    (BENCHMARKS.md, fp8 weight storage); here each code's bits move into a float16 instead: e4m3 ``s eeee mmm``
    becomes float16 ``s 0eeee mmm0000000``, whose value is the code's times 2^-8 exactly for every finite code
    (e4m3 subnormals land on float16 subnormals, and the float16 -> float32 widening is exact and vectorised; no
    float32 denormal is involved, so flushing denormals changes nothing). One multiplication by ``scale * 2^8``
    (exact while finite) then rounds the same real product ``code * scale`` as torch's path, so the result is
    identical bit for bit. NaN codes (0x7F, 0xFF: e4m3fn has no infinities; this route would read them as ±480), a
    non-finite ``scale * 2^8`` or codes that are not contiguous take torch's conversion for the whole tensor.
    ``exact``: :func:`e4m3_widens_exactly` of these codes and scale, when the caller knows it (no host sync
    here); None checks it now."""
    if exact is None:
        exact = e4m3_widens_exactly(codes, scale)
    if not exact:
        return out.copy_(codes).mul_(scale)
    scaled = scale * 256.0  # 0-d, exact: e4m3_widens_exactly saw it finite
    flat_codes = codes.view(torch.int8).view(-1)  # [n], the sign in bit 7
    flat_out = out.view(-1)  # [n] float32
    n = flat_codes.numel()
    for start in range(0, n, WIDEN_CHUNK):
        stop = min(n, start + WIDEN_CHUNK)
        half = work[: stop - start]
        # int8 -> int16 sign-extends (bits 15..7 = s); << 7 puts eeee mmm at bits 13..7 and s at 15 and 14; the
        # mask clears bit 14
        half.copy_(flat_codes[start:stop]).bitwise_left_shift_(7).bitwise_and_(_F16_SIGN_AND_E4M3)
        flat_out[start:stop].copy_(half.view(torch.float16)).mul_(scaled)
    return out


def fp8_mode(transformer: nn.Module) -> str | None:
    """How the block linears of ``transformer`` use float8: ``"compute"`` (:class:`FP8Linear`, ``--dtype fp8``),
    ``"storage"`` (:class:`FP8StoredLinear`, ``--weights-dtype fp8``) or None (no float8 layer)."""
    for m in transformer.modules():
        if isinstance(m, FP8Linear):
            return "compute"
        if isinstance(m, FP8StoredLinear):
            return "storage"
    return None


def fp8_storage_keys(transformer: nn.Module) -> list[str]:
    """State-dict keys of the weights :func:`convert_to_fp8_storage` stores in e4m3: every linear with a bias
    inside ``transformer.transformer_blocks`` (attn1/attn2 q, k, v, out; both feed-forward layers)."""
    return [
        f"transformer_blocks.{i}.{name}.weight"
        for i, block in enumerate(transformer.transformer_blocks)
        for name, m in block.named_modules()
        if isinstance(m, nn.Linear) and m.bias is not None
    ]


def quantize_stored(
    tensors: Mapping[str, Tensor], keys: Iterable[str], device: torch.device | str | None
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``tensors`` with those of ``keys`` as e4m3 codes on ``device``, and the scales by layer name (the key
    without ``.weight``). Each wide weight is moved to ``device`` and quantised there alone (on the CPU: read
    from the memory map), so a GPU never holds more than one of them wide; e4m3 weights move as stored (their
    scale is 1). What a loader calls while reading, before :func:`convert_to_fp8_storage`."""
    out = dict(tensors)
    scales: dict[str, Tensor] = {}
    for key in keys:
        t = tensors[key].to(device or "cpu")
        if t.dtype != torch.float8_e4m3fn:
            t, scales[key.removesuffix(".weight")] = quantize_e4m3(t)
        out[key] = t
    return out, scales


def convert_to_fp8_storage(transformer: nn.Module, scales: dict[str, Tensor] | None = None) -> list[str]:
    """Turn the block linears (:func:`fp8_storage_keys`) into :class:`FP8StoredLinear`, in place; returns the
    converted layer names. Weights already in e4m3 are kept as they are, with the scale ``scales`` gives for
    the layer name (the loader quantises one tensor at a time while reading, see
    :func:`ltxcli.loading.load_transformer`) or 1 (an official fp8 checkpoint); wider weights are quantised
    per tensor here (:func:`quantize_e4m3`). Every other module keeps its weights and dtype. The layers share
    the transformer's existing upcast scratch (or one new buffer)."""
    given = scales or {}

    def codes_of(name: str, _layer: nn.Module, w: Tensor) -> tuple[Tensor, Tensor]:
        if w.dtype == torch.float8_e4m3fn:
            return w, given.get(name, torch.ones((), dtype=torch.float32, device=w.device))
        return quantize_e4m3(w)

    names = convert_to_stored(transformer, fp8_storage_keys(transformer), FP8StoredLinear, codes_of)
    for name in names:  # the CPU widening route is decided here, at load, not in the denoising loop
        layer = transformer.get_submodule(name)
        if isinstance(layer, FP8StoredLinear):
            layer.codes_changed()
    return names
