"""The weights a run holds, by the stage that uses them, from modules the loader itself builds on the meta device.

No key rule, fp8 rule or narrow-kept rule is re-derived here: the transformer, VAE and upsampler are built by
:func:`ltxcli.loading.load_transformer` / :func:`~ltxcli.loading.load_vae` /
:func:`~ltxcli.loading.load_upsampler` with ``device="meta"`` and the run's dtype, fp8 and
``keep_checkpoint_dtype``, so the same renames, casts, :func:`ltxcli.models.upcast.convert_to_upcast` (layer
weights kept in the checkpoint's narrower dtype) and :func:`ltxcli.models.fp8.convert_to_fp8` (block linears in
float8) apply; only shapes and dtypes exist, nothing is read beyond the safetensors headers (the tensors are
views of a memory map that ``.to("meta")`` never touches). What a module holds is then counted from its
state dict: every persistent tensor at the dtype it was loaded in, plus the one scratch buffer per model
that upcast layers widen their weight into (the largest such weight at its compute dtype). Not counted:
non-persistent buffers (the fp8 layers' 4-byte scales), the VAE's Winograd kernels in that scratch.

The text encoder (a transformers T5 folder, loaded with every float at the run's dtype) is counted from its
safetensors headers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..loading import PICKLE_SUFFIXES, inspect_checkpoint, load_transformer, load_upsampler, load_vae
from ..models.fp8 import FP8StoredLinear
from ..models.int8 import convert_to_storage
from ..models.upcast import StoredLinear, compute_dtype
from ..safetensors_io import CheckpointError, SafetensorsFile

if TYPE_CHECKING:
    from ..models.configs import TransformerConfig, UpsamplerConfig, VAEConfig
    from ..spec import ModelSpec

PathLike = str | os.PathLike[str]
_LAYERS = (nn.Linear, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class WeightParts:
    """The weights of a run by the stage that uses them, in bytes as loaded.

    ``*_blocks``: all the repeated blocks that sequential offload streams (transformer blocks, VAE decoder
    up-blocks); ``*_block``: the largest of them. ``transformer`` and ``vae_decoder`` include their model's
    upcast scratch.
    """

    transformer: int
    transformer_blocks: int
    transformer_block: int
    vae_encoder: int
    vae_decoder: int
    vae_decoder_blocks: int
    vae_decoder_block: int
    vae_other: int  # latent statistics: resident in every mode
    text_encoder: int = 0
    upsampler: int = 0
    # the configs of the upsampler and of the temporal upscaler (a request's temporal_upscale), which their
    # working memory follows (None: unknown, priced as the released ones)
    upsampler_config: UpsamplerConfig | None = field(default=None, compare=False)
    temporal_upsampler: int = 0
    temporal_config: UpsamplerConfig | None = field(default=None, compare=False)
    # the same run with the transformer blocks' linear weights stored in int8 (--weights-dtype int8: one byte a
    # weight, as fp8 storage, with less error), computed on first call; None where they are stored narrow already
    int8_storage: Callable[[], WeightParts] | None = field(default=None, compare=False, repr=False)

    @property
    def total(self) -> int:
        return (self.transformer + self.vae_encoder + self.vae_decoder + self.vae_other + self.text_encoder
                + self.upsampler + self.temporal_upsampler)

    @property
    def model(self) -> int:
        """Transformer + VAE (what one official checkpoint holds)."""
        return self.transformer + self.vae_encoder + self.vae_decoder + self.vae_other


# --- counting loaded modules ---------------------------------------------------------------------------------


def held_bytes(module: nn.Module) -> int:
    """Bytes of ``module``'s persistent tensors at the dtypes they hold (meta-device modules work), with the
    float32 scales of stored layers (not in the state dict; int8's are as large as a bias, 4 bytes a row)."""
    scales = sum(m.weight_scale.numel() * 4 for m in module.modules() if isinstance(m, StoredLinear))
    return scales + sum(t.numel() * t.element_size() for t in module.state_dict(keep_vars=True).values())


def scratch_bytes(module: nn.Module) -> int:
    """What the model's shared upcast scratch grows to: its largest narrow-kept layer weight at the layer's
    compute dtype (0 when no layer widens per call), plus the int16 work buffer of fp8-stored layers widening on
    the CPU (:meth:`ltxcli.models.fp8.FP8StoredLinear.work_elements`, at most 8 MiB)."""
    sizes = [m.weight.numel() * compute_dtype(m).itemsize for m in module.modules()
             if isinstance(m, _LAYERS) and m.bias is not None and compute_dtype(m) != m.weight.dtype]
    work = [m.work_elements() * 2 for m in module.modules() if isinstance(m, FP8StoredLinear)]
    return max(sizes, default=0) + max(work, default=0)


def weight_parts(
    transformer: nn.Module | None, vae: nn.Module | None, *, text_encoder: int = 0, upsampler: int = 0
) -> WeightParts:
    """:class:`WeightParts` of a loaded (or meta-built) transformer and VAE; a missing one counts 0."""
    blocks = [held_bytes(b) for b in transformer.transformer_blocks] if transformer is not None else []
    up = [held_bytes(b) for b in vae.decoder.up_blocks] if vae is not None else []
    encoder = held_bytes(vae.encoder) if vae is not None else 0
    decoder = held_bytes(vae.decoder) + scratch_bytes(vae) if vae is not None else 0
    return WeightParts(
        transformer=held_bytes(transformer) + scratch_bytes(transformer) if transformer is not None else 0,
        transformer_blocks=sum(blocks), transformer_block=max(blocks, default=0),
        vae_encoder=encoder, vae_decoder=decoder, vae_decoder_blocks=sum(up), vae_decoder_block=max(up, default=0),
        vae_other=held_bytes(vae) - held_bytes(vae.encoder) - held_bytes(vae.decoder) if vae is not None else 0,
        text_encoder=text_encoder, upsampler=upsampler,
    )


# --- modules on the meta device, as the loader builds them ----------------------------------------------------


def meta_modules(
    path: PathLike, dtype: torch.dtype | None, *, fp8: bool = False, narrow: bool = False,
    weights_storage: str | None = None,
) -> tuple[nn.Module | None, nn.Module | None]:
    """(transformer, VAE) of an official single file or a diffusers folder, built on the meta device by the
    loaders with the run's ``dtype``, ``fp8`` (``keep_fp8``), ``narrow`` (``keep_checkpoint_dtype``) and
    ``weights_storage``; a component the checkpoint lacks is ``None``. Broken or pickle-based files fail as the
    load would."""
    info = inspect_checkpoint(path)
    transformer = vae = None
    if info.transformer is not None:
        transformer = load_transformer(path, device="meta", dtype=dtype, keep_fp8=fp8, keep_checkpoint_dtype=narrow,
                                       weights_storage=weights_storage)
    if info.vae is not None:
        vae = load_vae(path, device="meta", dtype=dtype, keep_checkpoint_dtype=narrow)
    return transformer, vae


def builtin_modules(
    dtype: torch.dtype, *, fp8: bool = False, weights_storage: str | None = None
) -> tuple[nn.Module, nn.Module]:
    """The built-in ``tiny`` model's transformer and VAE on the meta device, converted as
    :func:`ltxcli.api.load_pipeline` converts them (cast to ``dtype``; fp8 block linears, or stored ones)."""
    from ..models.fp8 import convert_to_fp8
    from ..models.transformer import LTXVideoTransformer
    from ..models.vae import CausalVideoVAE
    from ..tiny import TINY_TRANSFORMER, tiny_vae_config

    with torch.device("meta"):
        transformer = LTXVideoTransformer(TINY_TRANSFORMER).to(dtype)
        vae = CausalVideoVAE(tiny_vae_config()).to(dtype)
    if fp8:
        convert_to_fp8(transformer, dtype=dtype)
    elif weights_storage:
        convert_to_storage(weights_storage, transformer)
    return transformer, vae


def config_transformer_bytes(
    config: TransformerConfig, dtype: torch.dtype, *, narrow: torch.dtype | None = None,
    weights_storage: str | None = None,
) -> int:
    """Bytes a transformer of ``config`` holds as loaded at ``dtype`` (scratch included), from the config alone
    (built on the meta device; no file is read): ``narrow``, the linear weights kept in that dtype and widened
    per call (the CPU loaders with a bfloat16 checkpoint); ``weights_storage``, the blocks' linear weights stored
    in ``"fp8"`` or ``"int8"`` (:func:`ltxcli.models.int8.convert_to_storage`)."""
    from ..models.transformer import LTXVideoTransformer
    from ..models.upcast import convert_to_upcast

    with torch.device("meta"):
        model = LTXVideoTransformer(config).to(dtype)
    if narrow is not None and narrow.itemsize < dtype.itemsize:
        for m in model.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.weight = nn.Parameter(m.weight.detach().to(narrow), requires_grad=False)
        convert_to_upcast(model)
    if weights_storage:
        convert_to_storage(weights_storage, model)
    return held_bytes(model) + scratch_bytes(model)


def checkpoint_parts(
    path: PathLike, dtype: torch.dtype | None = None, *, fp8: bool = False, narrow: bool = False,
    text_encoder: int = 0, upsampler: int = 0, weights_storage: str | None = None,
) -> WeightParts:
    """:class:`WeightParts` of an official single file or a diffusers folder as the loaders would hold it
    (:func:`meta_modules`)."""
    transformer, vae = meta_modules(path, dtype, fp8=fp8, narrow=narrow, weights_storage=weights_storage)
    return weight_parts(transformer, vae, text_encoder=text_encoder, upsampler=upsampler)


def model_bytes(path: PathLike, dtype: torch.dtype | None = None, *, fp8: bool = False, narrow: bool = False) -> int:
    """Transformer + VAE bytes of an official single file or a diffusers folder, as loaded."""
    return checkpoint_parts(path, dtype, fp8=fp8, narrow=narrow).model


def upsampler_bytes(path: PathLike, dtype: torch.dtype | None = None, *, narrow: bool = False) -> int:
    """A latent upsampler as :func:`ltxcli.loading.load_upsampler` holds it (scratch included)."""
    module = load_upsampler(path, device="meta", dtype=dtype, keep_checkpoint_dtype=narrow)
    return held_bytes(module) + scratch_bytes(module)


# --- the text encoder (headers) -------------------------------------------------------------------------------


def _safetensors_bytes(path: Path, dtype: torch.dtype | None) -> int:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: pickle-based checkpoints ({path.suffix}) are refused because loading them can run code; "
            "convert it to .safetensors"
        )
    total = 0
    for info in SafetensorsFile(path).infos.values():
        size = dtype.itemsize if dtype is not None and info.dtype.is_floating_point else info.dtype.itemsize
        total += math.prod(info.shape) * size
    return total


def folder_bytes(folder: PathLike, dtype: torch.dtype | None = None, *, what: str = "weights") -> int:
    """Every tensor of the ``*.safetensors`` files directly in ``folder``, floats at ``dtype`` (else as stored).

    A folder without any (pickle-based ``.bin`` weights only, say) is a one-line ``CheckpointError``."""
    f = Path(folder)
    files: Iterable[Path] = sorted(f.glob("*.safetensors"))
    if not files:
        pickles = " (only pickle-based files, which are refused)" if any(
            p.suffix.lower() in PICKLE_SUFFIXES for p in f.glob("*")) else ""
        raise CheckpointError(f"{f}: no .safetensors {what}{pickles}")
    return sum(_safetensors_bytes(p, dtype) for p in files)


def text_encoder_bytes(folder: PathLike, dtype: torch.dtype | None = None) -> int:
    """Weights of a text-encoder folder (the PixArt layout with ``text_encoder/``, or a flat folder), every
    float at ``dtype`` as :meth:`ltxcli.text.TextEncoder.from_pretrained` loads them."""
    f = Path(folder)
    model_dir = f / "text_encoder" if (f / "text_encoder").is_dir() else f
    return folder_bytes(model_dir, dtype, what="text encoder weights")



# --- a whole model spec -----------------------------------------------------------------------------------------


def spec_parts(
    spec: ModelSpec, dtype: torch.dtype, *, fp8: bool = False, narrow: bool = False, weights_storage: str | None = None
) -> tuple[TransformerConfig, VAEConfig, WeightParts]:
    """(transformer config, VAE config, :class:`WeightParts` by stage) of every weight a run of ``spec`` loads
    at ``dtype``, from headers only: the built-in model's modules (:func:`builtin_modules`), else the
    checkpoint's (:func:`checkpoint_parts`) with its text encoder (:func:`text_encoder_bytes`) and upsampler
    (:func:`upsampler_bytes`), and its temporal upscaler's (:func:`temporal_upsampler_module`). ``fp8``: the transformer blocks' linear weights kept in float8 (``--dtype fp8``);
    ``narrow``: the loaders keep layer weights in the checkpoint's dtype (CPU runs); ``weights_storage``: the
    blocks' linear weights stored in ``"fp8"`` or ``"int8"`` and widened per call (``--weights-dtype``). Without
    either, the parts' ``int8_storage`` gives those of the same run with int8 storage (built when called: what the
    memory plan offers where the weights would not fit otherwise)."""
    temporal = temporal_upsampler_module(spec, dtype, narrow=narrow)
    extra: dict[str, Any] = {} if temporal is None else {
        "temporal_upsampler": held_bytes(temporal) + scratch_bytes(temporal), "temporal_config": temporal.config}
    tcfg, vcfg, parts = _spec_parts(spec, dtype, fp8=fp8, narrow=narrow, weights_storage=weights_storage)
    parts = replace(parts, **extra)
    if not (fp8 or weights_storage):
        parts = replace(parts, int8_storage=lambda: replace(
            _spec_parts(spec, dtype, narrow=narrow, weights_storage="int8")[2], **extra))
    return tcfg, vcfg, parts


def temporal_upsampler_module(spec: ModelSpec, dtype: torch.dtype, *, narrow: bool = False) -> nn.Module | None:
    """``spec``'s temporal upscaler (None: none) as :func:`ltxcli.api.load_pipeline` loads it, on the meta device
    (the builtin model's own random one: built on the CPU, tiny); a file not on disk yet counts as none."""
    t = spec.temporal_upsampler
    if t is None:
        return None
    if t.path is None:
        if spec.kind != "builtin":
            return None
        from ..tiny import build_temporal_upsampler

        return build_temporal_upsampler(torch.device("meta"), dtype)
    module: nn.Module = load_upsampler(t.path, device="meta", dtype=dtype, keep_checkpoint_dtype=narrow)
    return module


def _spec_parts(
    spec: ModelSpec, dtype: torch.dtype, *, fp8: bool = False, narrow: bool = False, weights_storage: str | None = None
) -> tuple[TransformerConfig, VAEConfig, WeightParts]:
    if spec.kind == "builtin":
        transformer, vae = builtin_modules(dtype, fp8=fp8, weights_storage=weights_storage)
        return transformer.config, vae.config, weight_parts(transformer, vae)
    info = spec.header()  # read now: the download step may have replaced files since the spec was resolved
    # a generating spec's header has both (ltxcli.spec.inspect_model refuses a checkpoint without them)
    assert spec.path is not None and info.transformer is not None and info.vae is not None
    te = spec.text_encoder.path if spec.text_encoder is not None else None
    te_bytes = text_encoder_bytes(te, dtype) if te is not None else 0
    up = spec.upsampler.path if spec.upsampler is not None else None
    module = load_upsampler(up, device="meta", dtype=dtype, keep_checkpoint_dtype=narrow) if up is not None else None
    up_bytes = held_bytes(module) + scratch_bytes(module) if module is not None else 0
    parts = checkpoint_parts(spec.path, dtype, fp8=fp8, narrow=narrow, text_encoder=te_bytes, upsampler=up_bytes,
                             weights_storage=weights_storage)
    return info.transformer, info.vae, replace(parts, upsampler_config=module.config if module is not None else None)


__all__ = [
    "WeightParts", "builtin_modules", "checkpoint_parts", "config_transformer_bytes", "folder_bytes", "held_bytes", "meta_modules",
    "model_bytes", "scratch_bytes", "spec_parts", "temporal_upsampler_module", "text_encoder_bytes", "upsampler_bytes",
    "weight_parts",
]
