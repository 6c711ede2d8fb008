"""``load_pipeline``: a weights.toml name, an official single file or a diffusers folder -> :class:`Pipeline`."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, NamedTuple

import torch

from .adapters.lora import LoraLike, LoraRef, fetch_loras
from .loading import CheckpointError, load_transformer, load_upsampler, load_vae
from .models.transformer import set_cpu_gemm
from .models.winograd import parse_conv_algorithm
from .pipeline import Pipeline, default_dtype
from .spec import ModelSpec, ensure_weights, resolve_spec

if TYPE_CHECKING:
    from .calibrate import CpuChoices
    from .kernels import ResolvedBackend

PathLike = str | os.PathLike[str]
FP8_NAMES = ("fp8", "float8_e4m3fn", "float8")

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def device_name(device: str) -> str:
    """torch's spelling of a device string (``cuda:0``), or the string itself where torch cannot parse it."""
    try:
        return str(torch.device(device))
    except (RuntimeError, TypeError):
        return device


@contextmanager
def transformers_progress(show: bool) -> Iterator[None]:
    """transformers draws its own "Loading weights" bar on stderr while a text encoder loads: without ``show``
    it is hidden for the ``with`` block (a caller that shows no progress of its own gets none from there)."""
    if show or "transformers" not in sys.modules:
        yield
        return
    from transformers.utils import logging as tf_logging

    was = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            tf_logging.enable_progress_bar()


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


WEIGHTS_DTYPES = ("auto", *FP8_NAMES, "int8")


def weights_storage(weights_dtype: str | None) -> str | None:
    """How ``weights_dtype`` asks the transformer blocks' linear weights to be stored (widened per call):
    ``"fp8"`` (``fp8`` and its aliases: e4m3, per-tensor scale), ``"int8"`` (per-row scales) or None (``None`` /
    ``auto``: as the checkpoint and ``dtype`` say). A ValueError for anything else."""
    if weights_dtype is None or weights_dtype == "auto":
        return None
    if weights_dtype in FP8_NAMES:
        return "fp8"
    if weights_dtype == "int8":
        return "int8"
    raise ValueError(f"unknown weights dtype {weights_dtype!r} (use auto, fp8 or int8)")


def weights_fp8(weights_dtype: str | None) -> bool:
    """Whether ``weights_dtype`` asks for float8 storage (:func:`weights_storage`)."""
    return weights_storage(weights_dtype) == "fp8"


class Compute(NamedTuple):
    device: torch.device
    dtype: torch.dtype  # the compute dtype (bfloat16 for fp8)
    fp8: bool
    attention: ResolvedBackend


def resolve_compute(
    device: str | torch.device | None, dtype: str | torch.dtype | None, attention: str, weights_dtype: str | None = None
) -> Compute:
    """Device, compute dtype, fp8 and attention kernels of a run, refused (ValueError,
    :class:`ltxcli.kernels.KernelUnavailableError`) before any weights are read; ``weights_dtype`` is checked
    too (:func:`weights_storage`; int8 storage cannot feed float8 matmuls)."""
    from . import kernels

    int8 = weights_storage(weights_dtype) == "int8"
    dev, fp8 = resolve_device(device), is_fp8(dtype)
    if int8 and fp8:
        raise ValueError("weights dtype int8 cannot be combined with dtype fp8 (float8 matmuls take float8 weights)")
    if fp8:
        kernels.require_fp8(dev)
    dt = resolve_dtype(dtype, dev)
    return Compute(dev, dt, fp8, kernels.resolve_attention_backend(attention, dev, dt))


def load_pipeline(
    model: PathLike | ModelSpec = "",
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
    cpu_gemm: str = "auto",
    keep_checkpoint_dtype: bool | None = None,
    weights_dtype: str | None = None,
    download: bool = True,
    on_event: Callable[[object], None] | None = None,
    loras: Sequence[LoraLike] | None = None,
    temporal_upsampler: PathLike | None = None,
    warn: Callable[[str], None] | None = None,
    spatial_upsampler: bool = True,
) -> Pipeline:
    """Load a model for generation.

    ``model``: a weights.toml name (default: the registry's default model), an official single-file
    ``.safetensors``, a diffusers-format folder, or a :class:`~ltxcli.spec.ModelSpec` from
    :func:`~ltxcli.spec.resolve_spec` (then ``text_encoder``, ``upsampler`` and ``weights_dir`` come from it).
    ``text_encoder``: a weights.toml name or a folder with a transformers T5 encoder and its tokenizer (default: a
    diffusers folder's own, else the one weights.toml names). ``upsampler``: a weights.toml name or an official
    latent upsampler single file (default: the one the preset names, if any). ``download``: pull the registry
    weights that are not on disk (or whose check did not finish) first, as ``ltx generate`` does; ``False``
    refuses them with the one-line :class:`ltxcli.weights.WeightsUnavailableError` instead. ``on_event``: receives
    a :class:`~ltxcli.spec.FetchStarted` per pull and its progress events (nothing is written to stderr).
    ``device`` / ``dtype``: default the best available
    (bfloat16 on GPU, float32 on CPU); ``dtype="fp8"`` runs the transformer blocks' linear layers as float8 e4m3
    matmuls (GPUs of compute capability 8.9+), keeping an fp8 checkpoint's weights as stored. ``attention``:
    ``auto`` or an explicit kernel (``sdpa``, ``flash3``, ``flash2``, ``sage``, ``math``); an unavailable explicit
    choice raises :class:`ltxcli.kernels.KernelUnavailableError`. ``compile``: compile the transformer block by block.
    ``offload``: ``none`` (everything on the device), ``model`` (each stage on the device only while it runs) or
    ``sequential`` (transformer and VAE-decoder blocks streamed one at a time); on the CPU it saves nothing, which
    ``warn`` is told (default: an :class:`ltxcli.offload.OffloadIgnoredWarning`). ``vae_tiling``: ``auto`` (tile the
    decode only when it would not fit), ``on`` or ``off``. ``vae_conv``: how the VAE runs its 3x3x3 convolutions
    (:class:`ltxcli.models.winograd.ConvAlgorithm`): ``auto`` (Winograd along time for the large ones on the CPU,
    equal to float rounding), ``direct`` (the official convolutions bit for bit) or ``winograd``. ``cpu_gemm``: the
    CPU float32 linears' route, ``auto`` (this host's measured choice), ``onednn`` or ``blas`` (the same products
    summed in another order: what a redo of a record takes). ``keep_checkpoint_dtype``: keep the
    transformer, VAE and upsampler weights in the checkpoint's dtype and widen each layer's weight per call
    (bit-identical outputs, half the memory of float32 for bfloat16 checkpoints, no conversion at load);
    default: on GPUs off, on the CPU this host's measured choice (:mod:`ltxcli.calibrate`, which also picks the
    CPU's GEMM route and what ``vae_conv="auto"`` runs, on the model's shapes at first use). ``loras``: LoRAs
    merged into the transformer (each a file path or weights.toml name, ``(path_or_name, scale)`` or
    ``"PATH_OR_NAME:SCALE"``; with ``fp8`` before the quantisation); change them later with
    :meth:`Pipeline.set_loras` (default: a ModelSpec's own).
    ``weights_dtype="fp8"``: store the transformer blocks' linear weights as float8 e4m3 with per-tensor scales (an
    fp8 checkpoint's as stored) and widen them to the compute dtype one layer at a time at call: about half the
    transformer's memory of bfloat16, on any GPU or the CPU, outputs within fp8 rounding (``dtype="fp8"`` stores
    them so already and multiplies in fp8 on GPUs of compute capability 8.9+); LoRAs are merged into the stored codes
    and quantised again (:mod:`ltxcli.adapters.lora_merge`). ``weights_dtype="int8"``: the same layers stored as int8
    with one float32 scale per output row (:mod:`ltxcli.models.int8`; an fp8 checkpoint's codes are widened, then
    quantised): the same memory, 3-7x less error per layer than fp8 storage; not with ``dtype="fp8"``.
    ``temporal_upsampler``: a weights.toml name or an official temporal upscaler file, for requests with
    ``temporal_upscale`` (``tiny`` has its own under the name ``ltxv-temporal-upscaler-0.9.7``).
    ``spatial_upsampler=False``: no latent upsampler is pulled or loaded (the preset's or ``upsampler``), for a caller
    whose every request runs in several windows (one pass each: :func:`ltxcli.long_video.generate`), as ``ltx
    generate`` loads a multi-scale model then; a request of both passes is refused (:meth:`Pipeline.resolve`).
    """
    from . import kernels
    from .offload import Offload, OffloadIgnoredWarning, cpu_offload_note

    dev, dt, fp8, backend = resolve_compute(device, dtype, attention, weights_dtype)
    storage = None if fp8 else weights_storage(weights_dtype)  # fp8 matmul layers store float8 already
    try:
        mode = Offload(offload)
    except ValueError:
        raise ValueError(f"offload={offload!r} must be none, model or sequential") from None
    if mode is not Offload.NONE and dev.type == "cpu":  # as ltx generate --offload warns (ltxcli.job.plan_job)
        if warn is None:
            warnings.warn(cpu_offload_note(f"offload={mode.value!r}"), OffloadIgnoredWarning, stacklevel=2)
        else:
            warn(cpu_offload_note(f"offload={mode.value!r}"))
    if vae_tiling not in ("auto", "on", "off"):
        raise ValueError(f"vae_tiling={vae_tiling!r} must be auto, on or off")
    conv_algorithm = parse_conv_algorithm(vae_conv)
    if cpu_gemm not in ("auto", "onednn", "blas"):
        raise ValueError(f"cpu_gemm={cpu_gemm!r} must be auto, onednn or blas")
    if isinstance(model, ModelSpec):
        if text_encoder is not None or upsampler is not None or weights_dir is not None or temporal_upsampler \
                or not spatial_upsampler:
            raise ValueError("text_encoder, upsampler, spatial_upsampler, temporal_upsampler and weights_dir come "
                             "from the ModelSpec: pass them to resolve_spec")
        spec = model if loras is None else model.with_loras(loras)
    else:
        spec = resolve_spec(model, text_encoder=text_encoder, upsampler=upsampler, weights_dir=weights_dir,
                            loras=loras, temporal_upsampler=temporal_upsampler, spatial_upsampler=spatial_upsampler)
        if spec.kind == "builtin" and text_encoder is not None:  # as ltx generate --text-encoder warns
            warnings.warn(f"text_encoder is ignored: {spec.name} has a built-in text encoder", stacklevel=2)
    if download and spec.needed:
        ensure_weights(spec.needed, weights_dir=spec.weights_dir, registry=spec.registry, on_event=on_event)
        spec = spec.refreshed()  # the paths, verification and header of what was just pulled
    # With offload, weights are loaded to (pinned) host memory and visit the device stage by stage.
    load_dev = dev if mode is Offload.NONE else torch.device("cpu")
    refs = fetch_loras(spec.loras, model=spec.name, weights_dir=spec.weights_dir, registry=spec.registry,
                       download=False)  # pulled above, with the model
    choices = _cpu_choices(spec) if dev.type == "cpu" else None  # measured on first use, then cached
    if choices is not None and keep_checkpoint_dtype is None:
        keep_checkpoint_dtype = choices.keep_narrow
    pipe = _load(spec, load_dev, dt, fp8, keep_checkpoint_dtype, refs, dev, storage)
    pipe._device = dev
    pipe.weights_dir, pipe.model_ref = spec.weights_dir, spec.name
    pipe.vae_tiling = vae_tiling
    pipe.vae.set_conv_algorithm(conv_algorithm)
    if choices is not None:
        from . import calibrate

        calibrate.apply(choices, pipe.transformer, pipe.vae, conv_algorithm)
        if cpu_gemm != "auto":
            set_cpu_gemm(pipe.transformer, cpu_gemm == "onednn")
    if mode is not Offload.NONE:
        _apply_offload(pipe, dev, mode)
    from .enhance.enhancer import PromptEnhancer

    pipe.enhancer = PromptEnhancer(spec.preset.prompt_enhancer_llm, spec.preset.prompt_enhancer_captioner, device=dev,
                                   weights_dir=spec.weights_dir, download=download, on_event=on_event)
    kernels.set_attention_backend(pipe.transformer, backend)
    if compile:
        kernels.compile_blocks(pipe.transformer, kernels.CompileConfig())
    return pipe


def _cpu_choices(spec: ModelSpec) -> CpuChoices:
    """This host's CPU choices for the shapes of ``spec``'s transformer and VAE (:mod:`ltxcli.calibrate`)."""
    from . import calibrate

    if spec.kind == "builtin":
        from .tiny import TINY_TRANSFORMER, tiny_vae_config

        return calibrate.for_configs(TINY_TRANSFORMER, tiny_vae_config())
    info = spec.header()
    return calibrate.for_configs(info.transformer, info.vae) if info.transformer is not None else calibrate.CpuChoices(
        True, True, "auto", {})


def _apply_offload(pipe: Pipeline, dev: torch.device, mode: object) -> None:
    from .offload import Offload, enable_sequential_offload, pin_module

    for module in (pipe.transformer, pipe.vae, pipe.upsampler, pipe.temporal_upsampler,
                   getattr(pipe.text_encoder, "model", None)):
        if module is not None:
            pin_module(module)
    # The latent statistics are tiny and used around every stage (normalise / un-normalise): keep them resident.
    pipe.vae.per_channel_statistics.to(dev)
    if mode is Offload.SEQUENTIAL:
        enable_sequential_offload(pipe.transformer, dev)
        enable_sequential_offload(pipe.vae.decoder, dev)
    pipe.offload = Offload(mode)


def _load(spec: ModelSpec, dev: torch.device, dt: torch.dtype, fp8: bool, keep_narrow: bool | None = None,
          loras: Sequence[LoraRef] = (), merge_on: torch.device | None = None, storage: str | None = None) -> Pipeline:
    pipe = _load_models(spec, dev, dt, fp8, keep_narrow, loras, merge_on, storage)
    temporal = spec.temporal_upsampler
    if temporal is not None:
        if temporal.path is None:  # the builtin model's own
            from .tiny import build_temporal_upsampler

            pipe.temporal_upsampler = build_temporal_upsampler(dev, dt)
        else:
            module = load_upsampler(temporal.path, device=dev, dtype=dt, keep_checkpoint_dtype=keep_narrow)
            if not module.config.temporal_upsample:
                raise CheckpointError(f"{temporal.path}: a spatial upsampler, not a temporal one")
            pipe.temporal_upsampler = module
    return pipe


def _load_models(spec: ModelSpec, dev: torch.device, dt: torch.dtype, fp8: bool, keep_narrow: bool | None,
                 loras: Sequence[LoraRef], merge_on: torch.device | None, storage: str | None) -> Pipeline:
    records: list[dict[str, object]] = []

    # before an fp8 matmul conversion (merged, then quantised); after the fp8 storage one (into the stored codes)
    def merge(transformer: torch.nn.Module) -> None:
        if loras:
            from .adapters.lora_merge import apply_loras

            records[:] = apply_loras(transformer, loras, device=merge_on)

    if spec.kind == "builtin":
        from .models.fp8 import convert_to_fp8
        from .models.int8 import convert_to_storage
        from .tiny import build_pipeline

        pipe = build_pipeline(dev, dt)
        if not storage:
            merge(pipe.transformer)
        if fp8:
            convert_to_fp8(pipe.transformer, dtype=dt)
        elif storage:
            convert_to_storage(storage, pipe.transformer)
            merge(pipe.transformer)  # into the stored codes, as a later change is (ltxcli.adapters.lora_merge)
        return _with_loras(pipe, loras, records)

    spec.require()  # anything not on disk: the one-line "not downloaded" error, before any weight is read
    assert spec.path is not None and spec.text_encoder is not None and spec.text_encoder.path is not None
    path = spec.path
    info = spec.header()  # read here for a registry file whose check has not finished (download=False)
    preset = spec.preset

    transformer = load_transformer(path, device=dev, dtype=dt, keep_fp8=fp8, keep_checkpoint_dtype=keep_narrow,
                                   before_fp8=merge, weights_storage=storage)
    vae = load_vae(path, device=dev, dtype=dt, keep_checkpoint_dtype=keep_narrow)

    from .text import TextEncoder

    te_path = spec.text_encoder.path
    text = TextEncoder.from_pretrained(te_path, device=dev, dtype=dt)
    if text.hidden_size != transformer.config.caption_channels:
        raise CheckpointError(
            f"{te_path}: text encoder width {text.hidden_size} does not match the model's "
            f"caption_channels={transformer.config.caption_channels}"
        )

    up_module = None
    if spec.upsampler is not None:
        assert spec.upsampler.path is not None
        up_module = load_upsampler(spec.upsampler.path, device=dev, dtype=dt, keep_checkpoint_dtype=keep_narrow)

    return _with_loras(Pipeline(
        transformer, vae, text, preset=preset, scheduler=info.scheduler,
        allowed_inference_steps=info.allowed_inference_steps, upsampler=up_module, name=spec.label,
    ), loras, records)


def _with_loras(pipe: Pipeline, loras: Sequence[LoraRef], records: list[dict[str, object]]) -> Pipeline:
    """The pipeline knowing the LoRAs :func:`_load` merged (so a request asking for the same set changes nothing)."""
    pipe._lora_specs = tuple(ref.spec for ref in loras)
    pipe.lora_records = records
    return pipe
