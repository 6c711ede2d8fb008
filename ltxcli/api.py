"""``load_pipeline``: a weights.toml name, an official single file or a diffusers folder -> :class:`Pipeline`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

from . import weights
from .loading import CheckpointError, inspect_checkpoint, load_transformer, load_upsampler, load_vae
from .models.winograd import parse_conv_algorithm
from .pipeline import Pipeline, default_dtype
from .presets import NEUTRAL, PRESETS, Preset, preset_for_checkpoint

if TYPE_CHECKING:
    from .kernels import ResolvedBackend

PathLike = str | os.PathLike[str]
FP8_NAMES = ("fp8", "float8_e4m3fn", "float8")

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> the best available device (CUDA, else CPU); a device that does not exist is a ValueError."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA device(s))")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The compute dtype (``fp8`` computes in bfloat16: only the block linears store and multiply in fp8)."""
    if dtype is None:
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif is_fp8(dtype):
        resolved = torch.bfloat16
    else:
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r} (use bfloat16, float32 or fp8)")
        resolved = DTYPES[dtype]
    if resolved == torch.float16:
        # LTX-Video activations overflow float16 (black / NaN frames, openvino#37039); bfloat16 has the range.
        raise ValueError("float16 is not supported: LTX-Video overflows it and produces NaN frames; use bfloat16")
    return resolved


def is_fp8(dtype: str | torch.dtype | None) -> bool:
    """Whether ``dtype`` asks for float8 block linears (``fp8`` and its aliases)."""
    return isinstance(dtype, str) and dtype in FP8_NAMES


class Compute(NamedTuple):
    device: torch.device
    dtype: torch.dtype  # the compute dtype (bfloat16 for fp8)
    fp8: bool
    attention: ResolvedBackend


def resolve_compute(device: str | torch.device | None, dtype: str | torch.dtype | None, attention: str) -> Compute:
    """Device, compute dtype, fp8 and attention kernels of a run, refused (ValueError,
    :class:`ltxcli.kernels.KernelUnavailableError`) before any weights are read."""
    from . import kernels

    dev = resolve_device(device)
    fp8 = is_fp8(dtype)
    if fp8:
        kernels.require_fp8(dev)
    dt = resolve_dtype(dtype, dev)
    return Compute(dev, dt, fp8, kernels.resolve_attention_backend(attention, dev, dt))


def load_pipeline(
    model: PathLike = "",
    *,
    text_encoder: PathLike | None = None,
    upsampler: PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    weights_dir: PathLike | None = None,
    attention: str = "auto",
    compile: bool = False,
    offload: str = "none",
    vae_tiling: str = "auto",
    vae_conv: str = "auto",
    keep_checkpoint_dtype: bool | None = None,
) -> Pipeline:
    """Load a model for generation.

    ``model``: a weights.toml name (default: the registry's default model), an official single-file
    ``.safetensors`` or a diffusers-format folder. ``text_encoder``: a folder with a transformers T5 encoder and
    its tokenizer (default: the one weights.toml names). ``upsampler``: an official latent upsampler single file
    (default: the one the preset names, if any). ``device`` / ``dtype``: default the best available
    (bfloat16 on GPU, float32 on CPU); ``dtype="fp8"`` runs the transformer blocks' linear layers as float8 e4m3
    matmuls (GPUs of compute capability 8.9+), keeping an fp8 checkpoint's weights as stored. ``attention``:
    ``auto`` or an explicit kernel (``sdpa``, ``flash3``, ``flash2``, ``sage``, ``math``); an unavailable explicit
    choice raises :class:`ltxcli.kernels.KernelUnavailableError`. ``compile``: compile the transformer block by block.
    ``offload``: ``none`` (everything on the device), ``model`` (each stage on the device only while it runs) or
    ``sequential`` (transformer and VAE-decoder blocks streamed one at a time). ``vae_tiling``: ``auto`` (tile the
    decode only when it would not fit), ``on`` or ``off``. ``vae_conv``: how the VAE runs its 3x3x3 convolutions
    (:class:`ltxcli.models.winograd.ConvAlgorithm`): ``auto`` (Winograd along time for the large ones on the CPU,
    equal to float rounding), ``direct`` (the official convolutions bit for bit) or ``winograd``. ``keep_checkpoint_dtype``: keep the
    transformer, VAE and upsampler weights in the checkpoint's dtype and widen each layer's weight per call
    (bit-identical outputs, half the memory of float32 for bfloat16 checkpoints, no conversion at load);
    default: on when the weights are loaded to the CPU, off on GPUs.
    """
    from . import kernels
    from .offload import Offload

    dev, dt, fp8, backend = resolve_compute(device, dtype, attention)
    try:
        mode = Offload(offload)
    except ValueError:
        raise ValueError(f"offload={offload!r} must be none, model or sequential") from None
    if vae_tiling not in ("auto", "on", "off"):
        raise ValueError(f"vae_tiling={vae_tiling!r} must be auto, on or off")
    conv_algorithm = parse_conv_algorithm(vae_conv)
    # With offload, weights are loaded to (pinned) host memory and visit the device stage by stage.
    load_dev = dev if mode is Offload.NONE else torch.device("cpu")
    pipe = _load(model, text_encoder, upsampler, load_dev, dt, weights_dir, fp8, keep_checkpoint_dtype)
    pipe._device = dev
    pipe.vae_tiling = vae_tiling
    pipe.vae.set_conv_algorithm(conv_algorithm)
    if mode is not Offload.NONE:
        _apply_offload(pipe, dev, mode)
    kernels.set_attention_backend(pipe.transformer, backend)
    if compile:
        kernels.compile_blocks(pipe.transformer, kernels.CompileConfig())
    return pipe


def _apply_offload(pipe: Pipeline, dev: torch.device, mode: object) -> None:
    from .offload import Offload, enable_sequential_offload, pin_module

    for module in (pipe.transformer, pipe.vae, pipe.upsampler, getattr(pipe.text_encoder, "model", None)):
        if module is not None:
            pin_module(module)
    # The latent statistics are tiny and used around every stage (normalise / un-normalise): keep them resident.
    pipe.vae.per_channel_statistics.to(dev)
    if mode is Offload.SEQUENTIAL:
        enable_sequential_offload(pipe.transformer, dev)
        enable_sequential_offload(pipe.vae.decoder, dev)
    pipe.offload = Offload(mode)


def _load(
    model: PathLike,
    text_encoder: PathLike | None,
    upsampler: PathLike | None,
    dev: torch.device,
    dt: torch.dtype,
    weights_dir: PathLike | None,
    fp8: bool,
    keep_narrow: bool | None = None,
) -> Pipeline:
    registry = weights.load_registry()
    name = os.fspath(model) if model else registry.default.name
    if name == "tiny" or (name in registry and registry[name].is_builtin):
        from .models.fp8 import convert_to_fp8
        from .tiny import build_pipeline

        pipe = build_pipeline(dev, dt)
        if fp8:
            convert_to_fp8(pipe.transformer, dtype=dt)
        return pipe

    path = Path(name)
    preset: Preset | None = None
    entry_text = entry_up = None
    if path.exists():
        if path.is_file():
            preset = preset_for_checkpoint(path.name)
        label = str(path)
    elif name in registry:
        entry = registry[name]
        if entry.kind != "model":
            raise ValueError(f"{name} is a {entry.kind}, not a model (see `ltx weights list`)")
        path = weights.resolve(name, weights_dir=weights_dir, registry=registry)
        preset = PRESETS.get(entry.preset or "")
        entry_text, entry_up = entry.text_encoder, entry.upsampler
        label = name
    else:
        raise FileNotFoundError(
            f"{name}: no such file or folder, and not a model name in weights.toml (see `ltx weights list`)"
        )

    info = inspect_checkpoint(path)
    if info.transformer is None or info.vae is None:
        raise CheckpointError(f"{path}: needs both a transformer and a VAE to generate")
    preset = preset or NEUTRAL

    transformer = load_transformer(path, device=dev, dtype=dt, keep_fp8=fp8, keep_checkpoint_dtype=keep_narrow)
    vae = load_vae(path, device=dev, dtype=dt, keep_checkpoint_dtype=keep_narrow)

    from .text import TextEncoder

    if text_encoder is not None:
        te_path = Path(text_encoder)
    elif path.is_dir() and (path / "text_encoder").is_dir():
        te_path = path
    else:
        te_path = weights.resolve(entry_text or preset.text_encoder or "t5-xxl", weights_dir=weights_dir,
                                  registry=registry)
    text = TextEncoder.from_pretrained(te_path, device=dev, dtype=dt)
    if text.hidden_size != transformer.config.caption_channels:
        raise CheckpointError(
            f"{te_path}: text encoder width {text.hidden_size} does not match the model's "
            f"caption_channels={transformer.config.caption_channels}"
        )

    up_source: PathLike | None = upsampler
    if up_source is None and (preset.upsampler or entry_up):
        up_source = weights.resolve(entry_up or preset.upsampler, weights_dir=weights_dir, registry=registry)
    up_module = None
    if up_source is not None:
        up_module = load_upsampler(up_source, device=dev, dtype=dt, keep_checkpoint_dtype=keep_narrow)

    return Pipeline(
        transformer, vae, text, preset=preset, scheduler=info.scheduler,
        allowed_inference_steps=info.allowed_inference_steps, upsampler=up_module, name=label,
    )
