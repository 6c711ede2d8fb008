"""The attention kernels the DiT's :func:`~ltxcli.models.attention.attention` dispatches to.

:class:`AttentionBackend` names one kernel each; the optional ones (FlashAttention-3, FlashAttention-2,
SageAttention) are imported on first use from their packages (:data:`KERNEL_PACKAGES`) and wrapped to one
signature, ``[B, N, H, d]`` q, k, v -> ``[B, N, H, d]``. Which kernel a model uses is decided outside the
model (:func:`ltxcli.kernels.resolve_attention_backend` picks it from the GPU and the packages installed,
:func:`ltxcli.kernels.set_attention_backend` stores it on the attention modules); this module only loads and
calls it, so ``ltxcli.models`` needs nothing from the rest of the package.
"""

from __future__ import annotations

import enum
import functools
import importlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "HALF_DTYPES",
    "KERNEL_PACKAGES",
    "MASKLESS_KERNELS",
    "AttentionBackend",
    "KernelUnavailableError",
    "external_kernel",
    "load_kernel",
]


class KernelUnavailableError(RuntimeError):
    """An explicitly requested kernel or precision cannot run on this machine (one-line message)."""


class AttentionBackend(str, enum.Enum):
    """``auto`` resolves to one of the others; the others name one kernel each."""

    AUTO = "auto"
    SDPA = "sdpa"  # torch.nn.functional.scaled_dot_product_attention; torch picks cuDNN / flash / efficient / math
    FLASH3 = "flash3"  # FlashAttention-3 (``flash_attn_interface``), Hopper only
    FLASH2 = "flash2"  # FlashAttention-2 (``flash_attn``)
    SAGE = "sage"  # SageAttention (``sageattention``): 8-bit QK, approximate
    MATH = "math"  # SDPA restricted to its math kernel: the slow, exact reference

    def __str__(self) -> str:
        return self.value


# Kernels that read no additive mask: they can serve the unmasked self-attention only.
MASKLESS_KERNELS = frozenset({AttentionBackend.FLASH3, AttentionBackend.FLASH2, AttentionBackend.SAGE})
# The dtypes the flash kernels run in (and the only ones their packages accept).
HALF_DTYPES = (torch.bfloat16, torch.float16)

# The package each optional kernel is imported from.
KERNEL_PACKAGES: dict[AttentionBackend, str] = {
    AttentionBackend.FLASH3: "flash_attn_interface",
    AttentionBackend.FLASH2: "flash_attn",
    AttentionBackend.SAGE: "sageattention",
}

# Loaded kernel entry points: [B, N, H, d] q, k, v -> [B, N, H, d]; filled by the probe.
_KERNELS: dict[AttentionBackend, Callable[[Tensor, Tensor, Tensor], Tensor]] = {}


def _make_kernel(backend: AttentionBackend, module: Any) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    if backend is AttentionBackend.SAGE:
        sageattn = module.sageattn

        def sage(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            return sageattn(q, k, v, tensor_layout="NHD", is_causal=False)

        return sage
    flash_fn = module.flash_attn_func

    def flash(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        out = flash_fn(q, k, v, causal=False)
        # some FA3 releases return (out, softmax_lse)
        return out[0] if isinstance(out, tuple) else out

    return flash



@functools.cache
def load_kernel(backend: AttentionBackend) -> str | None:
    """Import ``backend``'s package once: ``None`` when its kernel is loaded, else why not (one line)."""
    try:
        module = importlib.import_module(KERNEL_PACKAGES[backend])
    except ModuleNotFoundError:
        return "not installed"
    except Exception as exc:  # a wheel built for another CUDA/torch fails with OSError, RuntimeError, ...
        return f"installed but fails to import ({type(exc).__name__}: {exc})".splitlines()[0]
    _KERNELS[backend] = _make_kernel(backend, module)
    return None


def external_kernel(backend: AttentionBackend) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """The loaded entry point of an optional kernel (``[B, N, H, d]`` layout, softmax scale ``1/sqrt(d)``)."""
    fn = _KERNELS.get(backend)
    if fn is None:
        reason = load_kernel(backend) if backend in KERNEL_PACKAGES else "not an external kernel"
        fn = _KERNELS.get(backend)
    if fn is None:
        raise KernelUnavailableError(f"attention backend {backend.value} is not loaded: {reason}")
    return fn
