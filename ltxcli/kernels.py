"""Kernel choices for the DiT: attention backend, float8 precision, per-block ``torch.compile``.

Everything here is opt-in and decided once, before generation: :func:`resolve_attention_backend` picks the
attention kernels from the GPU's compute capability and the packages installed, :func:`set_attention_backend`
stores that choice on one model (two pipelines may differ), :func:`require_fp8` checks that ``--dtype fp8`` can
run, :func:`compile_blocks` compiles the blocks one by one. An explicit choice that cannot run here is a
one-line :class:`KernelUnavailableError`, never a silent fallback.

The selection logic (:func:`select_attention_backend`, :func:`fp8_unavailable_reason`) is pure: it takes the
capability and the installed kernels as arguments, so every GPU generation is unit-tested on a CPU.

What the model itself calls lives in :mod:`ltxcli.models` (which imports nothing from the rest of the
package): the kernel dispatch and the loading of the optional kernels in
:mod:`ltxcli.models.attention_kernels`, the float8 layers (:class:`~ltxcli.models.fp8.FP8Linear`,
:func:`~ltxcli.models.fp8.convert_to_fp8`) in :mod:`ltxcli.models.fp8`. This module is the runtime layer above
them: choosing, probing, compiling, timing and describing.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from .models.attention_kernels import (
    HALF_DTYPES,
    KERNEL_PACKAGES,
    MASKLESS_KERNELS,
    AttentionBackend,
    KernelUnavailableError,
    external_kernel,
    load_kernel,
)
from .models.fp8 import FP8Linear
from .models.upcast import compute_dtype, stored_weight_bytes

__all__ = [
    "MASKLESS_KERNELS",
    "AttentionBackend",
    "CompileConfig",
    "CompileTiming",
    "KernelUnavailableError",
    "ResolvedBackend",
    "attention_option",
    "compile_available",
    "compile_blocks",
    "describe_kernels",
    "describe_model",
    "forbid_host_sync",
    "fp8_supported",
    "fp8_unavailable_reason",
    "probe_available",
    "require_fp8",
    "resolve_attention_backend",
    "sdpa_kernels_enabled",
    "select_attention_backend",
    "set_attention_backend",
    "synchronize",
    "warmup_and_time",
]

Capability = tuple[int, int]


# --- attention backends ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Needs:
    package: str  # import name
    label: str
    min_capability: Capability
    below_capability: Capability | None  # exclusive upper bound
    gpu: str  # the requirement in words


_NEEDS: dict[AttentionBackend, _Needs] = {
    # FA3 is built for sm90 only (its wgmma/TMA kernels do not exist on Ampere/Ada, nor on Blackwell).
    AttentionBackend.FLASH3: _Needs(KERNEL_PACKAGES[AttentionBackend.FLASH3], "FlashAttention-3",
                                    (9, 0), (10, 0), "a Hopper GPU (compute capability 9.x)"),
    AttentionBackend.FLASH2: _Needs(KERNEL_PACKAGES[AttentionBackend.FLASH2], "FlashAttention-2",
                                    (8, 0), None, "an NVIDIA GPU with compute capability 8.0+ (Ampere or newer)"),
    AttentionBackend.SAGE: _Needs(KERNEL_PACKAGES[AttentionBackend.SAGE], "SageAttention",
                                  (8, 0), None, "an NVIDIA GPU with compute capability 8.0+ (Ampere or newer)"),
}


@dataclass(frozen=True)
class ResolvedBackend:
    """The attention kernels one model uses: one for self-attention, one for the masked cross-attention."""

    requested: AttentionBackend
    self_attention: AttentionBackend
    cross_attention: AttentionBackend
    reason: str

    def describe(self) -> dict[str, str]:
        """JSON-ready summary for ``ltx doctor``, ``--json`` and bench output."""
        return {
            "requested": self.requested.value,
            "self_attention": self.self_attention.value,
            "cross_attention": self.cross_attention.value,
            "reason": self.reason,
        }

    def __str__(self) -> str:
        if self.self_attention == self.cross_attention:
            return self.self_attention.value
        return f"{self.self_attention.value} (self-attention), {self.cross_attention.value} (masked cross-attention)"


def _parse_backend(requested: AttentionBackend | str) -> AttentionBackend:
    try:
        return AttentionBackend(requested)
    except ValueError:
        choices = ", ".join(b.value for b in AttentionBackend)
        raise ValueError(f"unknown attention backend {requested!r} (choose {choices})") from None


def _fmt_capability(capability: Capability | None) -> str:
    return "unknown" if capability is None else f"{capability[0]}.{capability[1]}"


def _unavailable_reason(
    backend: AttentionBackend,
    device_type: str,
    capability: Capability | None,
    available: set[str],
    dtype: torch.dtype | None,
) -> str | None:
    """Why ``backend`` cannot run here (a one-line message), or ``None`` when it can."""
    needs = _NEEDS.get(backend)
    if needs is None:  # SDPA and MATH run on every device torch supports
        return None
    installed = backend.value in available
    gpu_ok = (
        device_type == "cuda"
        and capability is not None
        and capability >= needs.min_capability
        and (needs.below_capability is None or capability < needs.below_capability)
    )
    if not (installed and gpu_ok):
        where = (f"compute capability {_fmt_capability(capability)}" if device_type == "cuda"
                 else f"no CUDA device ({device_type})")
        pkg = f"{needs.package} {'installed' if installed else 'not installed'}"
        return (f"{backend.value} needs the {needs.package} package ({needs.label}) and {needs.gpu}; "
                f"found {where}, {pkg}")
    if dtype is not None and dtype not in HALF_DTYPES:
        dt = str(dtype).removeprefix("torch.")
        return f"{backend.value} runs in bfloat16 or float16 only; the model runs in {dt} (use bfloat16 or sdpa)"
    return None


def select_attention_backend(
    requested: AttentionBackend | str,
    *,
    device_type: str,
    capability: Capability | None,
    available: set[str],
    dtype: torch.dtype | None = None,
) -> ResolvedBackend:
    """Resolve a backend choice without probing anything (tests pass a fake capability and installed set).

    ``available`` holds the names of the optional kernels that import (``flash3``, ``flash2``, ``sage``).
    ``dtype`` is the model's compute dtype; the flash kernels run in bfloat16/float16 only.
    """
    req = _parse_backend(requested)
    half = dtype is None or dtype in HALF_DTYPES

    if req is not AttentionBackend.AUTO:
        reason = _unavailable_reason(req, device_type, capability, available, dtype)
        if reason is not None:
            raise KernelUnavailableError(reason)
        # The text mask is an additive bias; FA2/FA3/Sage take none, so masked cross-attention stays on SDPA.
        cross = AttentionBackend.SDPA if req in MASKLESS_KERNELS else req
        return ResolvedBackend(req, req, cross, "requested explicitly")

    sdpa = AttentionBackend.SDPA
    if device_type != "cuda":
        # CPU / MPS: torch's own SDPA kernels are the only ones there.
        return ResolvedBackend(req, sdpa, sdpa, f"{device_type}: PyTorch SDPA")
    if capability is None:
        return ResolvedBackend(req, sdpa, sdpa, "unknown compute capability: PyTorch SDPA")
    if not half:
        dt = str(dtype).removeprefix("torch.")
        return ResolvedBackend(req, sdpa, sdpa, f"{dt} model: flash kernels need bfloat16, using PyTorch SDPA")
    if capability[0] == 9 and "flash3" in available:
        # Hopper: FA3 (wgmma + TMA) is ~1.2x cuDNN and ~1.5x FA2-class SDPA flash at head dim 64.
        return ResolvedBackend(req, AttentionBackend.FLASH3, sdpa,
                               "Hopper with FlashAttention-3: flash3 for self-attention, SDPA for the masked "
                               "cross-attention (FA3 takes no additive mask)")
    if capability[0] == 8 and "flash2" in available:
        # Ampere / Ada: FA2 is the fastest exact kernel there (no FA3, no FP8 attention without Sage).
        return ResolvedBackend(req, AttentionBackend.FLASH2, sdpa,
                               "Ampere/Ada with FlashAttention-2: flash2 for self-attention, SDPA for the masked "
                               "cross-attention (FA2 takes no additive mask)")
    # Everything else (Volta/Turing, Hopper without FA3, Blackwell, Ampere/Ada without FA2): SDPA, where torch
    # picks cuDNN or its FA2-derived flash kernel for the unmasked self-attention and an efficient (mask-capable)
    # kernel for cross-attention. SageAttention is never chosen automatically: its 8-bit QK is approximate.
    return ResolvedBackend(req, sdpa, sdpa,
                           f"compute capability {_fmt_capability(capability)}: PyTorch SDPA (cuDNN / flash)")


@functools.cache
def _probe() -> dict[str, str | None]:
    """Import each optional kernel package once: name -> ``None`` when it imports, else why not."""
    return {backend.value: load_kernel(backend) for backend in _NEEDS}


def probe_available() -> set[str]:
    """The optional attention kernels that import here (``flash3``, ``flash2``, ``sage``); probed once."""
    return {name for name, err in _probe().items() if err is None}


def sdpa_kernels_enabled() -> list[str]:
    """The SDPA CUDA kernels torch may pick from (its global flags; empty without CUDA)."""
    if not torch.cuda.is_available():
        return []
    flags = {
        "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
        "flash": torch.backends.cuda.flash_sdp_enabled(),
        "efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
        "math": torch.backends.cuda.math_sdp_enabled(),
    }
    return [name for name, on in flags.items() if on]


def _capability(device: torch.device) -> Capability | None:
    if device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return (major, minor)


def resolve_attention_backend(
    requested: AttentionBackend | str,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
) -> ResolvedBackend:
    """:func:`select_attention_backend` for the real ``device`` and the kernels installed here."""
    dev = torch.device(device)
    return select_attention_backend(
        requested, device_type=dev.type, capability=_capability(dev), available=probe_available(), dtype=dtype
    )


def set_attention_backend(transformer: nn.Module, resolved: ResolvedBackend | AttentionBackend | str) -> ResolvedBackend:
    """Route this model's attention: ``attn1`` of every block to the self-attention kernel, ``attn2`` to the
    cross-attention one. Other models are unaffected. A bare backend name is resolved for the model's device
    and dtype first (so ``auto`` and unavailable choices behave as in :func:`resolve_attention_backend`)."""
    if not isinstance(resolved, ResolvedBackend):
        param = transformer.patchify_proj.weight
        resolved = resolve_attention_backend(resolved, param.device, param.dtype)
    if resolved.cross_attention in MASKLESS_KERNELS:
        raise ValueError(f"cross-attention carries the text mask; {resolved.cross_attention.value} takes no mask")
    if resolved.self_attention in MASKLESS_KERNELS:
        external_kernel(resolved.self_attention)  # fail now, not at the first step
    for block in transformer.transformer_blocks:
        block.attn1.attention_kernel = resolved.self_attention
        block.attn2.attention_kernel = resolved.cross_attention
    transformer.resolved_attention = resolved
    return resolved


# --- float8 -----------------------------------------------------------------------------------------------------

_FP8_MIN_CAPABILITY: Capability = (8, 9)


def fp8_supported(capability: Capability | None) -> bool:
    """Whether ``torch._scaled_mm`` has e4m3 tensor-core GEMMs on a GPU of this compute capability.

    Ada (8.9) and Hopper (9.x) have them; so do Blackwell (10.x data centre, 12.x consumer) with the cuBLASLt
    of torch's CUDA 12.8+ builds, so every capability from 8.9 up counts. Ampere (8.0/8.6) and older do not.
    """
    return capability is not None and capability >= _FP8_MIN_CAPABILITY and hasattr(torch, "_scaled_mm")


def fp8_unavailable_reason(device_type: str, capability: Capability | None, name: str = "") -> str | None:
    """Why ``--dtype fp8`` cannot run on this device (one line), or ``None`` when it can."""
    if device_type == "cuda" and fp8_supported(capability):
        return None
    if device_type == "cuda":
        what = f"{name + ', ' if name else ''}compute capability {_fmt_capability(capability)}"
    else:
        what = device_type
    return f"--dtype fp8 needs an NVIDIA GPU with compute capability 8.9+ (Ada, Hopper, Blackwell); this device is {what}"


def require_fp8(device: torch.device | str) -> None:
    """Raise :class:`KernelUnavailableError` (one line) unless ``device`` runs float8 matmuls."""
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else ""
    reason = fp8_unavailable_reason(dev.type, _capability(dev), name)
    if reason is not None:
        raise KernelUnavailableError(reason)



# --- torch.compile --------------------------------------------------------------------------------------------

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Graph variants one block can need in a run: batch 1 vs more (CFG/STG per step), STG mask or not, per-sample
# or per-token timesteps, block 0 (input is a view of the patchify matmul) vs the rest: up to 16 > dynamo's 8.
_RECOMPILE_LIMIT = 32


@dataclass(frozen=True)
class CompileConfig:
    """How :func:`compile_blocks` compiles each transformer block.

    ``mode="default"``: no CUDA graphs, short compile; sglang measured it ahead of
    ``max-autotune-no-cudagraphs`` for the LTX-2 DiT on B200. ``dynamic=True`` makes the token count symbolic
    from the first call, so every resolution and frame count shares one compiled block.
    """

    mode: str = "default"
    fullgraph: bool = True
    dynamic: bool = True
    backend: str = "inductor"

    def __post_init__(self) -> None:
        if self.mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile mode {self.mode!r} (choose {', '.join(COMPILE_MODES)})")

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "fullgraph": self.fullgraph, "dynamic": self.dynamic, "backend": self.backend}


def _cxx_compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def compile_available(device: torch.device | str) -> tuple[bool, str]:
    """Whether inductor can generate code for ``device`` here, and why (one line)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            importlib.import_module("triton")
        except Exception:
            return False, "torch.compile on CUDA needs the triton package"
        return True, "inductor with triton"
    if dev.type == "cpu":
        cxx = _cxx_compiler()
        return (cxx is not None), (f"inductor C++ with {cxx}" if cxx else "torch.compile on CPU needs a C++ compiler")
    return False, f"torch.compile is not supported here on {dev.type}"


def compile_blocks(transformer: nn.Module, config: CompileConfig | None = None) -> int:
    """Compile each ``transformer_blocks[i]`` in place (``nn.Module.compile``); returns how many.

    All blocks run the same code and dynamo treats their parameters as inputs, so they share compiled
    graphs; compilation happens lazily at the first call, which bench timing should keep apart
    (:func:`warmup_and_time`). SageAttention is not traceable as one graph, so with the ``sage`` kernel the
    blocks compile with graph breaks around it.
    """
    cfg = config or CompileConfig()
    fullgraph = cfg.fullgraph
    resolved = getattr(transformer, "resolved_attention", None)
    if isinstance(resolved, ResolvedBackend) and resolved.self_attention is AttentionBackend.SAGE:
        fullgraph = False
    _raise_recompile_limit(torch._dynamo.config)
    kwargs: dict[str, Any] = {"backend": cfg.backend, "fullgraph": fullgraph, "dynamic": cfg.dynamic}
    if cfg.backend == "inductor":
        kwargs["mode"] = cfg.mode
    count = 0
    for block in transformer.transformer_blocks:
        block.compile(**kwargs)
        count += 1
    transformer.compile_config = cfg
    return count


def _raise_recompile_limit(dynamo_config: Any, limit: int = _RECOMPILE_LIMIT) -> None:
    """Let dynamo keep at least ``limit`` graphs per code object (the blocks' resolutions and dtypes).

    torch 2.7 renamed ``cache_size_limit`` to ``recompile_limit`` (pytorch#143709, the old name kept as an
    alias); torch 2.4-2.6, which pyproject allows, have only the old name.
    """
    name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    setattr(dynamo_config, name, max(getattr(dynamo_config, name), limit))


class CompileTiming(NamedTuple):
    """Seconds: ``compile_s`` = first call minus one steady call; ``steady_s`` = median of the later calls."""

    compile_s: float
    steady_s: float
    first_s: float


def synchronize(device: torch.device | None) -> None:
    """Wait for ``device``'s queued work (CUDA only; timings are taken at stage boundaries only)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def warmup_and_time(
    fn: Callable[[], Any],
    *,
    device: torch.device | str | None = None,
    iters: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> CompileTiming:
    """Time ``fn()`` once cold (compilation included) and ``iters`` times warm, synchronising ``device``."""
    if iters < 1:
        raise ValueError("iters must be at least 1")
    dev = torch.device(device) if device is not None else None
    synchronize(dev)
    t0 = clock()
    fn()
    synchronize(dev)
    first = clock() - t0
    steady: list[float] = []
    for _ in range(iters):
        t0 = clock()
        fn()
        synchronize(dev)
        steady.append(clock() - t0)
    median = statistics.median(steady)
    return CompileTiming(compile_s=max(first - median, 0.0), steady_s=median, first_s=first)


@contextlib.contextmanager
def forbid_host_sync(device: torch.device | str) -> Iterator[None]:
    """Within the block, any CUDA host synchronisation (``.item()``, ``.cpu()``, ``nonzero``...) raises.

    No-op off CUDA. For a steady-state loop: compilation and autotuning synchronise on their own.
    """
    dev = torch.device(device)
    if dev.type != "cuda":
        yield
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


# --- reporting ------------------------------------------------------------------------------------------------


def describe_kernels(
    device: torch.device | str, *, attention: AttentionBackend | str = "auto", dtype: torch.dtype | None = None
) -> dict[str, Any]:
    """What ``ltx doctor`` / ``--json`` / bench report about kernels on ``device`` (JSON-ready)."""
    dev = torch.device(device)
    capability = _capability(dev)
    probes = _probe()
    try:
        resolved: dict[str, str] = resolve_attention_backend(attention, dev, dtype).describe()
    except KernelUnavailableError as exc:
        resolved = {"requested": str(attention), "error": str(exc)}
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
    fp8_reason = fp8_unavailable_reason(dev.type, capability, name if dev.type == "cuda" else "")
    compile_ok, compile_how = compile_available(dev)
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(dev),
        "device_name": name,
        "capability": None if capability is None else _fmt_capability(capability),
        "attention_kernels": {n: ("available" if err is None else err) for n, err in probes.items()},
        "sdpa_kernels": sdpa_kernels_enabled() if dev.type == "cuda" else [],
        "attention": resolved,
        "fp8": {"supported": fp8_reason is None, "detail": fp8_reason or "float8 e4m3 torch._scaled_mm"},
        "compile": {"available": compile_ok, "detail": compile_how},
    }


def attention_option(transformer: nn.Module) -> str:
    """The ``attention`` option a loaded transformer was given (``auto``, ``math``, ...; the kernels it resolved
    to: :func:`describe_model`): what a generation record keeps, so that a redo routes attention alike."""
    resolved = getattr(transformer, "resolved_attention", None)
    return resolved.requested.value if isinstance(resolved, ResolvedBackend) else AttentionBackend.SDPA.value


def describe_model(transformer: nn.Module) -> dict[str, Any]:
    """The kernels one loaded transformer uses: attention routing, fp8 layer count, compile settings."""
    resolved = getattr(transformer, "resolved_attention", None)
    compiled = getattr(transformer, "compile_config", None)
    fp8_layers = sum(isinstance(m, FP8Linear) for m in transformer.modules())
    return {
        "attention": resolved.describe() if isinstance(resolved, ResolvedBackend) else {
            "requested": "sdpa", "self_attention": "sdpa", "cross_attention": "sdpa", "reason": "default"},
        "dtype": str(compute_dtype(transformer.patchify_proj)).removeprefix("torch."),
        "fp8_linear_layers": fp8_layers,
        "upcast_layers": stored_weight_bytes(transformer)[0],
        "compile": compiled.describe() if isinstance(compiled, CompileConfig) else None,
    }
