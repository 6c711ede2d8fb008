"""Checks a generating command runs before any weight is loaded: will the run fit in memory, can the
outputs be written.

Memory model (:func:`estimate_memory`): the peak over the stages of a run of what each keeps on the device,

* weights (:class:`WeightParts`): every tensor of the model checkpoint (transformer + VAE), the text encoder
  and the upsampler, at the run's dtype (floats are cast to it, as the loaders do), read from the
  safetensors headers alone. With ``narrow`` (a CPU run: the loaders' ``keep_checkpoint_dtype`` default)
  linear and convolution weights narrower than that dtype count at their stored size, plus one scratch copy
  of the largest of them at the run's dtype per model (:mod:`ltxcli.models.upcast`). Which of them are on the device during a stage depends on ``--offload``
  (:func:`stage_weights`): all of them (``none``); only the running stage's (``model``); the small
  non-block parts of the transformer and VAE decoder plus two streamed blocks, the current one and the
  prefetched next (``sequential``; the text encoder, upsampler and VAE encoder are then staged whole).
  Offloading moves weights to host memory, so on a CPU device it saves nothing and is not counted;
* denoising: the transformer's live activations for one step, ``units * B * N * D`` elements at the run's
  dtype, ``B`` the guidance branches (1 + CFG + STG), ``N`` the latent tokens at the padded size (plus the
  tokens of conditions placed after frame 0), ``D`` the hidden width. Measured by peak RSS on the CPU
  (float32, 2-layer models, D 256-512, N 1.5k-3k): 16.5 units with one timestep per sample and 31-33
  with per-token timesteps (conditioning: the adaLN tables become ``[B, N, 6D]``), hence 18 / 34 here;
* decoding: the VAE decode of the whole latent video, untiled
  (:func:`ltxcli.vae_tiling.decode_memory_bytes`, calibrated the same way) or, with ``--vae-tiling on``
  and with ``auto`` when the untiled decode would not fit in what the decode stage has free, the tiled
  plan the pipeline will choose (:func:`ltxcli.vae_tiling.plan_decode`,
  :func:`~ltxcli.vae_tiling.tiled_decode_memory_bytes`);
* the other stages (text encoder, upsampler, VAE encoder of conditions): their weights only.

Not counted: the text encoder's activations (256 tokens: a few MB), the upsampler's activations (half
size), the VAE encode of conditions (smaller than the decode), the CUDA context (already outside
``mem_get_info``'s free memory when this runs), the host memory that offloaded weights occupy, and the
saving of sequence-parallel runs (each rank is estimated as a single process would be). The estimate is an
approximation for refusing runs that cannot fit, not a guarantee; ``LTX_NO_MEMORY_CHECK=1`` skips the check.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import EXIT_OOM, CliError, human_bytes

NO_MEMORY_CHECK_ENV = "LTX_NO_MEMORY_CHECK"
#: Transformer activation peak in units of ``B * N * D`` elements (see the module docstring).
TRANSFORMER_UNITS = 18
TRANSFORMER_UNITS_PER_TOKEN_TIMESTEPS = 34
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


# --- weights ----------------------------------------------------------------------------------------------


def _fp8_linear(key: str, shape: tuple[int, ...]) -> bool:
    """A transformer block's linear weight: what ``dtype="fp8"`` keeps in float8 (one byte per element)."""
    return "transformer_blocks." in key and key.endswith(".weight") and len(shape) == 2


def _layer_weight(key: str, shape: tuple[int, ...]) -> bool:
    """A linear or convolution weight: what the CPU loaders keep in the checkpoint's dtype (``narrow``)."""
    return key.endswith(".weight") and len(shape) >= 2


def _loaded_size(key: str, info: Any, dtype: Any, fp8: bool, narrow: bool) -> tuple[int, int]:
    """(bytes per element once loaded, elements of a narrow-kept layer weight or 0)."""
    stored = info.dtype.itemsize
    if dtype is None or not info.dtype.is_floating_point:
        return stored, 0
    if fp8 and _fp8_linear(key, info.shape):
        return 1, 0
    if narrow and stored < dtype.itemsize and _layer_weight(key, info.shape):
        return stored, math.prod(info.shape)
    return dtype.itemsize, 0


def safetensors_bytes(
    path: str | os.PathLike[str], dtype: Any = None, *, fp8: bool = False, narrow: bool = False
) -> int:
    """Bytes the tensors of one ``.safetensors`` file take once loaded, floats at ``dtype`` (else as stored);
    ``fp8``: the transformer blocks' linear weights at one byte each; ``narrow``: layer weights narrower than
    ``dtype`` as stored, plus the scratch copy of the largest at ``dtype``.

    Header only (no tensor data is read); a broken file is a one-line ``CheckpointError``.
    """
    from ltxcli.safetensors_io import CheckpointError, SafetensorsFile

    p = Path(path)
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{p}: pickle-based checkpoints ({p.suffix}) are refused because loading them can run code; "
            "convert it to .safetensors"
        )
    total = scratch = 0
    for key, info in SafetensorsFile(p).infos.items():
        size, kept = _loaded_size(key, info, dtype, fp8, narrow)
        total += math.prod(info.shape) * size
        scratch = max(scratch, kept)
    return total + (scratch * dtype.itemsize if scratch else 0)


def folder_bytes(folder: str | os.PathLike[str], dtype: Any = None, *, what: str = "weights", fp8: bool = False) -> int:
    """Sum of :func:`safetensors_bytes` over the ``*.safetensors`` files directly in ``folder``.

    A folder without any (pickle-based ``.bin`` weights only, say) is a one-line ``CheckpointError``.
    """
    from ltxcli.safetensors_io import CheckpointError

    f = Path(folder)
    files = sorted(f.glob("*.safetensors"))
    if not files:
        pickles = " (only pickle-based files, which are refused)" if any(
            p.suffix.lower() in PICKLE_SUFFIXES for p in f.glob("*")) else ""
        raise CheckpointError(f"{f}: no .safetensors {what}{pickles}")
    return sum(safetensors_bytes(p, dtype, fp8=fp8) for p in files)


def text_encoder_bytes(folder: str | os.PathLike[str], dtype: Any = None) -> int:
    """Weights of a text-encoder folder (the PixArt layout with ``text_encoder/``, or a flat folder)."""
    f = Path(folder)
    model_dir = f / "text_encoder" if (f / "text_encoder").is_dir() else f
    return folder_bytes(model_dir, dtype, what="text encoder weights")


def model_bytes(path: str | os.PathLike[str], dtype: Any = None, *, fp8: bool = False) -> int:
    """Transformer + VAE weights of an official single file or a diffusers-format folder."""
    p = Path(path)
    if p.is_dir():
        return sum(folder_bytes(p / part, dtype, fp8=fp8) for part in ("transformer", "vae") if (p / part).is_dir())
    return safetensors_bytes(p, dtype, fp8=fp8)


def module_bytes(modules: Iterable[Any], dtype: Any = None) -> int:
    """Parameter + buffer bytes of modules (meta-device modules work: only shapes are read)."""
    total = 0
    for m in modules:
        for t in [*m.parameters(), *m.buffers()]:
            size = dtype.itemsize if dtype is not None and t.is_floating_point() else t.element_size()
            total += t.numel() * size
    return total


@dataclass(frozen=True)
class WeightParts:
    """The weights of a run by the stage that uses them, in bytes at the run's dtype.

    ``*_blocks``: all the repeated blocks that sequential offload streams (transformer blocks, VAE decoder
    up-blocks); ``*_block``: the largest of them.
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

    @property
    def total(self) -> int:
        return (self.transformer + self.vae_encoder + self.vae_decoder + self.vae_other + self.text_encoder
                + self.upsampler)


def _bytes_of(named: Iterable[tuple[str, Any]], dtype: Any, fp8_prefix: str | None = None) -> int:
    total = 0
    for name, t in named:
        size = dtype.itemsize if dtype is not None and t.is_floating_point() else t.element_size()
        if fp8_prefix is not None and name.startswith(fp8_prefix) and name.endswith(".weight") and t.ndim == 2:
            size = 1
        total += t.numel() * size
    return total


def _tensors(module: Any) -> list[tuple[str, Any]]:
    return [*module.named_parameters(), *module.named_buffers()]


def weight_parts(
    transformer: Any, vae: Any, dtype: Any, *, fp8: bool = False, text_encoder: int = 0, upsampler: int = 0
) -> WeightParts:
    """:class:`WeightParts` of a transformer and a VAE module (meta-device modules work: shapes only).

    ``fp8``: the transformer blocks' linear weights take one byte each (``--dtype fp8``)."""
    fp8_prefix = "transformer_blocks." if fp8 else None
    blocks = [_bytes_of(_tensors(b), dtype, "" if fp8 else None) for b in transformer.transformer_blocks]
    up = [module_bytes([b], dtype) for b in vae.decoder.up_blocks]
    encoder = module_bytes([vae.encoder], dtype)
    decoder = module_bytes([vae.decoder], dtype)
    return WeightParts(
        transformer=_bytes_of(_tensors(transformer), dtype, fp8_prefix),
        transformer_blocks=sum(blocks), transformer_block=max(blocks, default=0),
        vae_encoder=encoder, vae_decoder=decoder, vae_decoder_blocks=sum(up), vae_decoder_block=max(up, default=0),
        vae_other=module_bytes([vae], dtype) - encoder - decoder, text_encoder=text_encoder, upsampler=upsampler,
    )


_TRANSFORMER_PREFIX, _VAE_PREFIX = "model.diffusion_model.", "vae."
_VAE_KEYS = ("encoder.", "decoder.", "per_channel_statistics.")


def _block(key: str, prefix: str) -> int | None:
    """``N`` of a key ``{prefix}N.…``, else ``None``."""
    if not key.startswith(prefix):
        return None
    head = key[len(prefix):].split(".", 1)[0]
    return int(head) if head.isdigit() else None


def checkpoint_parts(
    path: str | os.PathLike[str], dtype: Any = None, *, fp8: bool = False, text_encoder: int = 0, upsampler: int = 0,
    narrow: bool = False,
) -> WeightParts:
    """:class:`WeightParts` of an official single file or a diffusers-format folder, from the headers alone
    (a diffusers VAE's ``mid_block`` counts as a non-streamed part: close enough for an estimate).
    ``narrow``: as :func:`safetensors_bytes`; the VAE's scratch is counted with its decoder."""
    from ltxcli.safetensors_io import SafetensorsFile

    p = Path(path)
    sources: list[tuple[str | None, Path]] = []
    if p.is_dir():
        for part in ("transformer", "vae"):
            sources += [(part, f) for f in sorted((p / part).glob("*.safetensors"))] if (p / part).is_dir() else []
    else:
        sources.append((None, p))
    sizes = {"transformer": 0, "encoder": 0, "decoder": 0, "other": 0}
    blocks: dict[int, int] = {}
    up: dict[int, int] = {}
    scratch = {"transformer": 0, "vae": 0}
    for part, file in sources:
        for key, info in SafetensorsFile(file).infos.items():
            size, kept = _loaded_size(key, info, dtype, fp8 and (part in (None, "transformer")), narrow)
            nbytes = math.prod(info.shape) * size
            if part is None and key.startswith(_TRANSFORMER_PREFIX):
                part_, name = "transformer", key[len(_TRANSFORMER_PREFIX):]
            elif part is None and key.startswith(_VAE_PREFIX):
                part_, name = "vae", key[len(_VAE_PREFIX):]
            else:
                part_, name = part or ("vae" if key.startswith(_VAE_KEYS) else "transformer"), key
            scratch[part_] = max(scratch[part_], kept)
            if part_ == "transformer":
                sizes["transformer"] += nbytes
                n = _block(name, "transformer_blocks.")
                if n is not None:
                    blocks[n] = blocks.get(n, 0) + nbytes
            elif name.startswith("encoder."):
                sizes["encoder"] += nbytes
            elif name.startswith("decoder."):
                sizes["decoder"] += nbytes
                n = _block(name, "decoder.up_blocks.")
                if n is not None:
                    up[n] = up.get(n, 0) + nbytes
            else:
                sizes["other"] += nbytes
    if narrow and dtype is not None:
        sizes["transformer"] += scratch["transformer"] * dtype.itemsize
        sizes["decoder"] += scratch["vae"] * dtype.itemsize
    return WeightParts(
        transformer=sizes["transformer"], transformer_blocks=sum(blocks.values()),
        transformer_block=max(blocks.values(), default=0), vae_encoder=sizes["encoder"], vae_decoder=sizes["decoder"],
        vae_decoder_blocks=sum(up.values()), vae_decoder_block=max(up.values(), default=0), vae_other=sizes["other"],
        text_encoder=text_encoder, upsampler=upsampler,
    )


OFFLOAD_MODES = ("none", "model", "sequential")
TILING_MODES = ("auto", "on", "off")


def stage_weights(parts: WeightParts, offload: str = "none", *, offload_saves: bool = True) -> dict[str, int]:
    """Weights on the device during each stage (``denoise``, ``decode``, ``other``: the largest of the text
    encoder, upsampler and VAE encoder stages) under ``offload``. ``offload_saves=False`` (a CPU device:
    host and device memory are the same) counts every weight in every stage."""
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload={offload!r} must be one of {', '.join(OFFLOAD_MODES)}")
    if offload == "none" or not offload_saves:
        return dict.fromkeys(("denoise", "decode", "other"), parts.total)
    others = (parts.text_encoder, parts.upsampler, parts.vae_encoder)
    if offload == "model":
        return {"denoise": parts.transformer + parts.vae_other, "decode": parts.vae_decoder + parts.vae_other,
                "other": max(others) + parts.vae_other}
    # sequential: the non-block parts stay; the current block and the prefetched next one are on the device
    resident = (parts.transformer - parts.transformer_blocks) + (parts.vae_decoder - parts.vae_decoder_blocks) \
        + parts.vae_other
    return {"denoise": resident + 2 * parts.transformer_block, "decode": resident + 2 * parts.vae_decoder_block,
            "other": resident + max(others)}


# --- activations --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak device memory of one generation: the largest of its stages' weights plus activations.

    ``weights_bytes``: the weights on the device while denoising (all of them without offload);
    ``decode_weights_bytes``: while decoding (``None``: the same); ``other_bytes``: the largest of the other
    stages (their weights: text encoder, upsampler, VAE encoder). Without offload the peak is
    ``weights_bytes + max(transformer_bytes, vae_bytes)``.
    """

    weights_bytes: int
    transformer_bytes: int  # activations of one denoising step
    vae_bytes: int  # activations of the decode (tiled when ``vae_tiled``)
    decode_weights_bytes: int | None = None
    other_bytes: int = 0
    vae_tiled: bool = False
    other_stage: str = "the text encoder"  # the largest of the other stages

    def _stages(self) -> dict[str, tuple[int, int]]:
        dw = self.weights_bytes if self.decode_weights_bytes is None else self.decode_weights_bytes
        return {"denoising": (self.weights_bytes, self.transformer_bytes),
                "decoding": (dw, self.vae_bytes), "other": (self.other_bytes, 0)}

    @property
    def peak_bytes(self) -> int:
        return max(w + a for w, a in self._stages().values())

    @property
    def fixed_bytes(self) -> int:
        """The weights the largest stage needs whatever the video size (what no smaller size can save)."""
        return max(w for w, _ in self._stages().values())

    def describe(self) -> str:
        stages = self._stages()
        stage = max(stages, key=lambda k: (sum(stages[k]), k == "denoising"))
        weights, act = stages[stage]
        if stage == "decoding" and self.vae_tiled:
            stage = "tiled decoding"
        tail = f" + {stage} {human_bytes(act)}" if stage != "other" else f" while running {self.other_stage}"
        return f"about {human_bytes(self.peak_bytes)} (weights {human_bytes(weights)}{tail})"


def latent_shape(vae: Any, height: int, width: int, num_frames: int) -> tuple[int, int, int]:
    """Latent ``(f, h, w)`` of a request, at the official padded size."""
    from ltxcli.request import padded_size

    ph, pw, pf = padded_size(height, width, num_frames)
    s, t = vae.spatial_compression, vae.temporal_compression
    return (pf - 1) // t + 1, ph // s, pw // s


def decode_bytes(vae: Any, latent: Sequence[int], dtype: Any, vae_tiling: str = "off",
                 free_bytes: int | None = None) -> tuple[int, bool]:
    """(estimated decode activations, tiled?) as :meth:`ltxcli.pipeline.Pipeline` decodes ``latent``
    (``[B, C, f, h, w]``) under ``vae_tiling`` with ``free_bytes`` free at the decode (``None``: unlimited)."""
    from ltxcli.memory.decode import decode_memory_bytes, plan_decode, tiled_decode_memory_bytes

    if vae_tiling not in TILING_MODES:
        raise ValueError(f"vae_tiling={vae_tiling!r} must be one of {', '.join(TILING_MODES)}")
    free = 1 << 62 if free_bytes is None else max(int(free_bytes), 0)
    # the pipeline keeps the decoded video on the host (out_on_device=False)
    plan = plan_decode(vae, latent, dtype, vae_tiling, free, out_on_device=False)  # type: ignore[arg-type]
    if plan is None:
        return decode_memory_bytes(vae, latent, dtype), False
    return tiled_decode_memory_bytes(vae, latent, dtype, out_on_device=False, **plan), True


def estimate_memory(
    transformer: Any,
    vae: Any,
    *,
    height: int,
    width: int,
    num_frames: int,
    dtype: Any,
    weights_bytes: int = 0,
    branches: int = 3,
    extra_tokens: int = 0,
    per_token_timesteps: bool = False,
    parts: WeightParts | None = None,
    offload: str = "none",
    offload_saves: bool = True,
    vae_tiling: str = "off",
    free_bytes: int | None = None,
) -> MemoryEstimate:
    """Estimated peak memory of generating ``height x width x num_frames`` (see the module docstring).

    ``transformer`` / ``vae``: :class:`~ltxcli.models.configs.TransformerConfig` / ``VAEConfig``;
    ``branches``: guidance branches per step (1 + CFG + STG); ``extra_tokens``: tokens of conditions placed
    after frame 0; ``per_token_timesteps``: conditioning is used (the timestep differs per token).
    ``parts`` (else ``weights_bytes``, all on the device in every stage), ``offload``, ``offload_saves``:
    see :func:`stage_weights`. ``vae_tiling`` / ``free_bytes``: the decode as the pipeline will run it
    (``auto`` tiles when the untiled decode would not fit in ``free_bytes`` less the decode stage's weights).
    """
    f, h, w = latent_shape(vae, height, width, num_frames)
    tokens = f * h * w + extra_tokens
    units = TRANSFORMER_UNITS_PER_TOKEN_TIMESTEPS if per_token_timesteps else TRANSFORMER_UNITS
    act = units * branches * tokens * transformer.inner_dim * dtype.itemsize
    other = "the text encoder"
    if parts is None:
        stages = dict.fromkeys(("denoise", "decode", "other"), int(weights_bytes))
    else:
        stages = stage_weights(parts, offload, offload_saves=offload_saves)
        sizes = {"the text encoder": parts.text_encoder, "the upsampler": parts.upsampler,
                 "the VAE encoder": parts.vae_encoder}
        other = max(sizes, key=lambda k: sizes[k])
    free = None if free_bytes is None else free_bytes - stages["decode"]
    dec, tiled = decode_bytes(vae, (1, vae.latent_channels, f, h, w), dtype, vae_tiling, free)
    return MemoryEstimate(int(stages["denoise"]), int(act), int(dec), decode_weights_bytes=int(stages["decode"]),
                          other_bytes=int(stages["other"]), vae_tiled=tiled, other_stage=other)


# --- free memory -------------------------------------------------------------------------------------------


def free_memory_bytes(device: Any) -> int:
    """What a run on ``device`` can still allocate (:func:`ltxcli.vae_tiling.free_memory_bytes`; imported
    here lazily so the CLI starts without torch)."""
    from ltxcli.memory.decode import free_memory_bytes as _free

    return _free(device)


def memory_check_disabled() -> bool:
    return os.environ.get(NO_MEMORY_CHECK_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _smaller_size(fits: Any, height: int, width: int, num_frames: int) -> tuple[int, int, int] | None:
    """The largest request with the same aspect ratio (sizes multiples of 32, frames 8k + 1) that ``fits``."""
    for scale in (0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125):
        h = max(32, int(height * scale) // 32 * 32)
        w = max(32, int(width * scale) // 32 * 32)
        f = max(1, int((num_frames - 1) * scale) // 8 * 8 + 1)
        if (h, w, f) != (height, width, num_frames) and fits(h, w, f):
            return h, w, f
    return None


def check_memory(
    estimate: Callable[[int, int, int], MemoryEstimate],
    *,
    height: int,
    width: int,
    num_frames: int,
    device: Any,
    free_bytes: int,
    where: str = "",
    alternatives: Sequence[tuple[str, Callable[[int, int, int], MemoryEstimate]]] = (),
) -> None:
    """Exit 5 with one line when ``estimate(height, width, num_frames)`` (a :class:`MemoryEstimate`) exceeds
    ``free_bytes``. The line names both, the first of ``alternatives`` (``(options, estimate)`` pairs, the
    fastest first: ``--offload model``, ``--vae-tiling on``...) that fits at this size, a smaller size that
    fits with the current options (if any)."""
    est = estimate(height, width, num_frames)
    if est.peak_bytes <= free_bytes:
        return
    advice: list[str] = []
    options = [(label, alt(height, width, num_frames)) for label, alt in alternatives]
    fitting = next(((label, e) for label, e in options if e.peak_bytes <= free_bytes), None)
    if est.fixed_bytes >= free_bytes:
        advice.append(f"the weights alone need {human_bytes(est.fixed_bytes)}")
    if fitting is not None:
        advice.append(f"try {fitting[0]}, which needs {fitting[1].describe()}")
    elif options:
        label, least = min(options, key=lambda o: o[1].peak_bytes)
        if least.peak_bytes < est.peak_bytes:
            advice.append(f"{label} alone still needs {least.describe()}")
    if est.fixed_bytes < free_bytes:
        smaller = _smaller_size(lambda h, w, f: estimate(h, w, f).peak_bytes <= free_bytes, height, width, num_frames)
        lead = "or a smaller size" if fitting is not None else "try a smaller size"
        if smaller is not None:
            h, w, f = smaller
            advice.append(f"{lead}, e.g. --height {h} --width {w} --num-frames {f}, which needs "
                          f"{estimate(h, w, f).describe()}")
        elif fitting is None:
            advice.append("try a smaller --height/--width or fewer --num-frames")
    advice.append(f"or set {NO_MEMORY_CHECK_ENV}=1 to try anyway")
    raise CliError(
        f"{where}this run needs {est.describe()} on {device} but {human_bytes(free_bytes)} is free: "
        + "; ".join(advice),
        EXIT_OOM,
    )


__all__ = [
    "NO_MEMORY_CHECK_ENV", "OFFLOAD_MODES", "TILING_MODES", "MemoryEstimate", "WeightParts", "check_memory",
    "checkpoint_parts", "decode_bytes", "estimate_memory", "folder_bytes", "free_memory_bytes", "model_bytes",
    "module_bytes", "safetensors_bytes", "stage_weights", "text_encoder_bytes", "weight_parts",
]
