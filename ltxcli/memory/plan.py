"""The memory plan of one generation: its peak device and host memory, stage by stage, before anything loads.

A run goes through these stages (:class:`Stage`), each holding some weights on the device and some working
memory (activations), while the host may hold more:

* ``prompt enhancer`` (only when a prompt is rewritten, :mod:`ltxcli.enhance`): the enhancer LLM's weights, and
  the captioner's for image-to-video. ``ltx generate`` runs it before the video model loads and frees it, so
  its weights are alone on the device (whatever the offload mode); its KV cache (some hundred MB for
  Llama-3.2-3B) is not counted;
* ``text encoder``: its weights (the T5's activations, 256 tokens, are a few MB and not counted);
* ``control model`` (only with a depth control, :mod:`ltxcli.depth`): the depth model's weights and one batch
  of its activations, next to the weights resident before any stage runs; it is released before the next stage;
* ``condition encode`` (only with conditions, a video-to-video input or an IC-LoRA control): the VAE encoder on
  each condition's (and the control's) frames at the largest pass size. Its activations are modelled as
  :data:`ENCODE_FACTOR` times the decode's of the same latent size (the encoder mirrors the decoder's stages; the
  factor measured by peak RSS on the tiny VAE, float32: 1.20-1.22 from 512x320x57 to 640x448x81). It runs after the
  text encoder and before the transformer, in the VAE encoder's own offload stage;
* ``denoise`` (``denoise (first pass)`` / ``(second pass)`` for multi-scale): the transformer's live
  activations for one step, ``units * B * N * D`` elements at the run's dtype, ``B`` the guidance branches of
  that pass (:func:`ltxcli.sampling.pass_branches`), ``N`` the latent tokens at the pass's padded size (plus the
  tokens of conditions placed after frame 0 and an IC-LoRA control's, as many as the frames it covers:
  :mod:`ltxcli.control`), ``D`` the hidden width. Measured by peak RSS on the CPU (float32,
  2-layer models, D 256-512, N 1.5k-3k): 16.5 units with one timestep per sample and 31-33 with per-token
  timesteps (conditioning: the adaLN tables become ``[B, N, 6D]``), hence 18 / 34 here; plus, except under
  sequential offload, the text's cross-attention keys and values the pass computes once
  (:mod:`ltxcli.text_cache`: ``2 * layers * B * 256 * D`` elements);
* ``upsampler`` (multi-scale): its weights and ``UPSAMPLER_UNITS`` tensors of its 4x-latent-channel width at
  the doubled latent size (not calibrated: tens of MB at most for the released models);
* ``decode``: the VAE decode at the last pass's size as :func:`ltxcli.memory.decode.plan_decode` will run it
  (the same call the pipeline makes): untiled (:func:`~ltxcli.memory.decode.decode_memory_bytes`) or tiled
  (:func:`~ltxcli.memory.decode.tiled_decode_memory_bytes`), with the float32 video it produces landing on
  the host;
* an input video (:func:`input_hold`): video-to-video (``video``) encodes its ``8k + 1`` padded frames at the
  output size in ``condition encode`` and holds their float32 pixels on the host until the pipeline returns
  (streamed: until the decode starts); an extension (``extend``, :mod:`ltxcli.extend`) generates ``K + N``
  frames conditioned on the input's last (backward: first) ``K`` frames, holding the decoded input and three
  float32 copies of the context meanwhile, and the input's own frames at the output size while the output is
  spliced and written. The transient copies made while the input is read (before any model work) are not counted;
* ``write``: the float32 ``[F, H, W, 3]`` video the result holds on the host (for multi-scale, the resized
  copy next to the decoded one while it is made), which the writer converts frame by frame; a streamed result
  (``streamed``, what ``ltx generate`` runs) holds one chunk of frames instead.

Weights (:class:`~ltxcli.memory.weights.WeightParts`, built by the loaders on the meta device) on the device
during a stage depend on ``offload`` (:func:`stage_weights`): all of them (``none``); only the running stage's
(``model``); the small non-block parts of the transformer and VAE decoder plus two streamed blocks, the
current one and the prefetched next (``sequential``; the text encoder, upsampler and VAE encoder are then
staged whole). Offloaded weights wait in host memory. On a CPU device host and device memory are the same
(``device_is_host``): offloading saves nothing there, and what the host holds counts in the device peak.

Not counted: the CUDA context (already outside ``mem_get_info``'s free memory when the CLI checks), the page
cache of memory-mapped checkpoints, and the saving of sequence-parallel runs (each rank is estimated as a
single process would be). The estimate is an approximation for refusing runs that cannot fit, not a
guarantee.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..long_decode import DECODE_BLEND
from ..models.configs import TransformerConfig, VAEConfig
from ..presets import Preset, multi_scale_sizes
from ..request import padded_size
from ..sampling import pass_branches
from ..text_cache import TEXT_TOKENS, text_kv_bytes, used_with
from .decode import (
    STREAM_CHUNK_FRAMES,
    chunk_output_bytes,
    decode_memory_bytes,
    output_bytes,
    plan_decode,
    tiled_decode_memory_bytes,
)
from .weights import WeightParts

OFFLOAD_MODES = ("none", "model", "sequential")
TILING_MODES = ("auto", "on", "off")
#: Transformer activation peak in units of ``B * N * D`` elements (see the module docstring).
TRANSFORMER_UNITS = 18
TRANSFORMER_UNITS_PER_TOKEN_TIMESTEPS = 34
#: Latent upsampler activations in tensors of ``4 * latent_channels`` channels at its output size.
UPSAMPLER_UNITS = 4
#: VAE encoder activations relative to the decode's of the same latent size (see the module docstring).
ENCODE_FACTOR = 1.2

DENOISE, DECODE = "denoise", "decode"
CONTROL_MODEL = "control model"


@dataclass(frozen=True)
class Stage:
    """One stage of a run: ``weights`` and ``activations`` on the device, ``host`` bytes held on the host
    meanwhile beyond the weights (on a CPU device the same memory: see :attr:`MemoryEstimate.host_peak_bytes`)."""

    name: str
    weights: int
    activations: int = 0
    host: int = 0

    @property
    def device_bytes(self) -> int:
        return self.weights + self.activations


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak device (and host) memory of one generation, over its :class:`Stage` s.

    ``host_weights``: weights waiting in host memory (offloaded to it on a GPU); ``vae_tiled``: the decode is
    tiled; ``device_is_host``: a CPU run, where the device peak is the whole peak.
    """

    stages: tuple[Stage, ...]
    host_weights: int = 0
    vae_tiled: bool = False
    device_is_host: bool = False

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    def _denoise(self) -> list[Stage]:
        return [s for s in self.stages if s.name.startswith(DENOISE)]

    def footprint(self, stage: Stage) -> int:
        """What ``stage`` needs of the device's free memory: its weights and activations, and on a CPU device
        its host hold too (the decoded video, the frames being written: the same memory)."""
        return stage.device_bytes + (stage.host if self.device_is_host else 0)

    @property
    def peak_stage(self) -> Stage:
        """The stage with the largest :meth:`footprint` (the first denoise pass on ties, then stage order)."""
        order = [*self._denoise(), *(s for s in self.stages if not s.name.startswith(DENOISE))]
        return max(order, key=lambda s: (self.footprint(s), s.name.startswith(DENOISE)))

    @property
    def peak_bytes(self) -> int:
        return self.footprint(self.peak_stage)

    @property
    def host_peak_bytes(self) -> int:
        """Peak host memory: on a CPU device every stage's weights, activations and host hold together (what
        peak RSS measures), else offloaded weights plus the largest host hold."""
        if self.device_is_host:
            return max(s.device_bytes + s.host for s in self.stages)
        return self.host_weights + max((s.host for s in self.stages), default=0)

    @property
    def fixed_bytes(self) -> int:
        """The weights the largest stage needs whatever the video size (what no smaller size can save)."""
        return max(s.weights for s in self.stages)

    # Summaries of the two stages that decide most runs (what the CLI line and older callers name).
    @property
    def weights_bytes(self) -> int:
        """Weights on the device while denoising."""
        return max(s.weights for s in self._denoise())

    @property
    def transformer_bytes(self) -> int:
        """Activations of one denoising step (the largest pass)."""
        return max(s.activations for s in self._denoise())

    @property
    def vae_bytes(self) -> int:
        """Activations of the decode (tiled when :attr:`vae_tiled`)."""
        s = self.stage(DECODE)
        return s.activations if s is not None else 0

    @property
    def decode_weights_bytes(self) -> int:
        s = self.stage(DECODE)
        return s.weights if s is not None else self.weights_bytes


# --- weights per stage ----------------------------------------------------------------------------------------


def stage_weights(
    parts: WeightParts, offload: str = "none", *, offload_saves: bool = True, text_encoder_freed: bool = False
) -> dict[str, int]:
    """Weights on the device during each stage (``control model``: only the pipeline's, the depth model comes on
    top; ``text encoder``, ``condition encode``, ``denoise``, ``upsampler``, ``decode``) under ``offload``.
    ``offload_saves=False`` (a CPU device: host and device memory are the same) counts every weight in every stage. ``text_encoder_freed``: the text encoder's weights are
    released after the prompt is encoded (:attr:`ltxcli.pipeline.Pipeline.free_text_encoder_after_use`)."""
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload={offload!r} must be one of {', '.join(OFFLOAD_MODES)}")
    te = parts.text_encoder
    if offload == "none" or not offload_saves:
        later = parts.total - (te if text_encoder_freed else 0)
        return {CONTROL_MODEL: parts.total, "text encoder": parts.total, "condition encode": later, DENOISE: later,
                "upsampler": later, DECODE: later}
    stats = parts.vae_other
    if offload == "model":
        return {CONTROL_MODEL: stats, "text encoder": te + stats, "condition encode": parts.vae_encoder + stats,
                DENOISE: parts.transformer + stats, "upsampler": parts.upsampler + stats,
                DECODE: parts.vae_decoder + stats}
    # sequential: the non-block parts stay; the current block and the prefetched next one are on the device
    resident = (parts.transformer - parts.transformer_blocks) + (parts.vae_decoder - parts.vae_decoder_blocks) + stats
    streamed = resident + 2 * parts.transformer_block
    return {CONTROL_MODEL: resident, "text encoder": resident + te, "condition encode": resident + parts.vae_encoder,
            DENOISE: streamed, "upsampler": resident + parts.upsampler, DECODE: resident + 2 * parts.vae_decoder_block}


# --- the estimate -----------------------------------------------------------------------------------------------


def latent_shape(vae: VAEConfig, height: int, width: int, num_frames: int) -> tuple[int, int, int]:
    """Latent ``(f, h, w)`` of a request, at the official padded size."""
    ph, pw, pf = padded_size(height, width, num_frames)
    s, t = vae.spatial_compression, vae.temporal_compression
    return (pf - 1) // t + 1, ph // s, pw // s


def decode_bytes(vae: VAEConfig, latent: Sequence[int], dtype: torch.dtype, vae_tiling: str = "off",
                 free_bytes: int | None = None) -> tuple[int, dict[str, Any] | None]:
    """(estimated decode activations, the tiling plan or None) as :class:`ltxcli.pipeline.Pipeline` decodes
    ``latent`` (``[B, C, f, h, w]``) under ``vae_tiling`` with ``free_bytes`` free at the decode (``None``:
    unlimited)."""
    if vae_tiling not in TILING_MODES:
        raise ValueError(f"vae_tiling={vae_tiling!r} must be one of {', '.join(TILING_MODES)}")
    free = 1 << 62 if free_bytes is None else max(int(free_bytes), 0)
    # the pipeline keeps the decoded video on the host (out_on_device=False)
    plan = plan_decode(vae, latent, dtype, vae_tiling, free, out_on_device=False)  # type: ignore[arg-type]
    if plan is None:
        return decode_memory_bytes(vae, latent, dtype), None
    return tiled_decode_memory_bytes(vae, latent, dtype, out_on_device=False, **plan), plan


@dataclass(frozen=True)
class PassSize:
    """One denoising pass: the padded pixel size it runs at and its guidance branches per step."""

    height: int
    width: int
    branches: int = 3


def estimate_memory(
    transformer: TransformerConfig,
    vae: VAEConfig,
    *,
    height: int,
    width: int,
    num_frames: int,
    dtype: torch.dtype,
    weights_bytes: int = 0,
    branches: int = 3,
    passes: Sequence[PassSize] = (),
    extra_tokens: int = 0,
    per_token_timesteps: bool = False,
    condition_frames: Sequence[int] = (),
    parts: WeightParts | None = None,
    offload: str = "none",
    offload_saves: bool = True,
    device_is_host: bool = False,
    text_encoder_freed: bool = False,
    vae_tiling: str = "off",
    free_bytes: int | None = None,
    streamed: bool = False,
    control_frames: int = 0,
    control_model: tuple[int, int] | None = None,
    enhancer_bytes: int = 0,
) -> MemoryEstimate:
    """Estimated memory of generating ``height x width x num_frames`` (the padded output size; see the module
    docstring).

    ``transformer`` / ``vae``: their configs. ``passes``: the denoising passes (default: one at the output
    size with ``branches``); the decode runs at the last one's size. ``extra_tokens``: tokens of conditions
    placed after frame 0 per latent ``h * w`` of the output size (scaled to each pass); ``per_token_timesteps``:
    conditioning is used (the timestep differs per token); ``condition_frames``: pixel frames of each condition
    the VAE encodes. ``parts`` (else ``weights_bytes``, all on the device in every stage), ``offload``,
    ``offload_saves``, ``text_encoder_freed``: see :func:`stage_weights`; ``device_is_host``: a CPU run.
    ``vae_tiling`` / ``free_bytes``: the decode as the pipeline will run it (``auto`` tiles when the untiled
    decode would not fit in ``free_bytes`` less the decode stage's weights). ``streamed``: the result is decoded
    into its writer chunk by chunk (``run_batch(stream=True)``, what ``ltx generate`` does), so the write stage
    holds one chunk of :data:`~ltxcli.memory.decode.STREAM_CHUNK_FRAMES` frames, not the whole float32 video.
    ``control_frames``: pixel frames of an IC-LoRA control (encoded, and its latent frames' tokens in every pass);
    ``control_model``: ``(weights, activations)`` of the depth model that makes it (its own stage).
    ``enhancer_bytes``: the prompt enhancer's weights (:func:`ltxcli.enhance.stage.enhancer_bytes`; 0: no
    enhancement), a stage of its own before everything else.
    """
    passes = list(passes) or [PassSize(height, width, branches)]
    f, h, w = latent_shape(vae, height, width, num_frames)
    if parts is None:
        weights = dict.fromkeys((CONTROL_MODEL, "text encoder", "condition encode", DENOISE, "upsampler", DECODE),
                                int(weights_bytes))
        host_weights = 0
    else:
        weights = stage_weights(parts, offload, offload_saves=offload_saves, text_encoder_freed=text_encoder_freed)
        # offloaded weights wait (pinned) in host memory; without offload they were loaded to the device
        host_weights = parts.total if offload != "none" and not device_is_host else 0
    item = dtype.itemsize
    stages = [Stage("prompt enhancer", enhancer_bytes)] if enhancer_bytes else []
    if control_model is not None:
        stages.append(Stage(CONTROL_MODEL, weights[CONTROL_MODEL] + control_model[0], control_model[1]))
    stages.append(Stage("text encoder", weights["text encoder"]))
    if control_frames:
        per_token_timesteps = True
        condition_frames = [*condition_frames, control_frames]
    control_latent_frames = (control_frames - 1) // vae.temporal_compression + 1 if control_frames else 0
    units = TRANSFORMER_UNITS_PER_TOKEN_TIMESTEPS if per_token_timesteps else TRANSFORMER_UNITS
    if condition_frames:
        _, lh, lw = latent_shape(vae, max(p.height for p in passes), max(p.width for p in passes), 1)
        encode = max(int(ENCODE_FACTOR * decode_memory_bytes(
            vae, (1, vae.latent_channels, (n - 1) // vae.temporal_compression + 1, lh, lw), dtype))
            for n in condition_frames)
        stages.append(Stage("condition encode", weights["condition encode"], encode))
    for i, p in enumerate(passes):
        _, ph, pw = latent_shape(vae, p.height, p.width, num_frames)
        tokens = (f + control_latent_frames) * ph * pw + extra_tokens * ph * pw // max(h * w, 1)
        name = DENOISE if len(passes) == 1 else f"{DENOISE} ({('first', 'second')[min(i, 1)]} pass)"
        if i > 0:  # the latent upsampler doubles the previous pass's latents
            up = UPSAMPLER_UNITS * 4 * vae.latent_channels * f * ph * pw * item
            stages.append(Stage("upsampler", weights["upsampler"], up))
        act = units * p.branches * tokens * transformer.inner_dim * item
        if used_with(offload):  # the pass's text keys and values (ltxcli.text_cache)
            act += text_kv_bytes(transformer.num_layers, transformer.inner_dim, p.branches, TEXT_TOKENS, item)
        stages.append(Stage(name, weights[DENOISE], act))
    _, dh, dw = latent_shape(vae, passes[-1].height, passes[-1].width, num_frames)
    latent = (1, vae.latent_channels, f, dh, dw)
    free = None if free_bytes is None else free_bytes - weights[DECODE]
    dec, tiling = decode_bytes(vae, latent, dtype, vae_tiling, free)
    tiled = tiling is not None
    video = output_bytes(vae, latent)  # float32 [1, 3, F, H, W] at the decode size
    final = 4 * 3 * num_frames * height * width if len(passes) > 1 else video  # resized to the output size
    # The decoded video lands on the host. On the CPU an untiled decode's output is its last activation (already
    # in ``dec``); a tiled one accumulates it beside the windows, which the pipeline's tiling plan (and so the
    # device figure) leaves out; a streamed one holds one time window of it at a time. On a CPU device that
    # host memory is the device's (MemoryEstimate.footprint counts it against the free memory).
    held = chunk_output_bytes(vae, latent, **tiling) if streamed and tiling is not None else video
    decode_host = held if not device_is_host or tiled else 0
    if streamed:
        # One chunk of n frames at a time: its float32 slice at the decode size, for multi-scale its resized copy
        # at the output size, and the uint8 [n, H, W, 3] handed to the writer.
        n = min(STREAM_CHUNK_FRAMES, num_frames)
        chunk = 4 * 3 * n * passes[-1].height * passes[-1].width
        write_host = chunk + (4 * 3 * n * height * width if len(passes) > 1 else 0) + 3 * n * height * width
    else:
        write_host = final + (video if len(passes) > 1 else 0)
    stages.append(Stage(DECODE, weights[DECODE], dec, host=decode_host))
    stages.append(Stage("write", weights[DECODE] if device_is_host else 0, 0, host=write_host))
    return MemoryEstimate(tuple(stages), host_weights=host_weights, vae_tiled=tiled, device_is_host=device_is_host)


@dataclass(frozen=True)
class RunShape:
    """What the memory of one request depends on beyond its size, as the pipeline resolves it: the guidance
    scales of each pass that runs (``(guidance_scale, stg_scale)`` pairs, scalars or per-interval lists),
    whether it is multi-scale and at which factor, its conditions (``(frame, pixel frames)``), and an IC-LoRA
    control: ``control_frames`` (its pixel frames; at most the video's are used) and ``control_model``
    (``(height, width, num_frames) -> (weights, activations)`` of the depth model making it, e.g.
    :func:`ltxcli.depth.depth_memory_bytes`)."""

    guidance: Sequence[tuple[Any, Any]]
    multi_scale: bool = False
    downscale_factor: float | None = None
    conditions: Sequence[tuple[int, int]] = field(default_factory=tuple)
    control_frames: int = 0
    control_model: Callable[[int, int, int], tuple[int, int]] | None = None
    #: video-to-video: pixels per frame of the input video at its native size (0: none; see :func:`input_hold`)
    v2v: int = 0
    #: an extension: ``(new frames, backward, input pixels per frame (native size), the model's longest frames)``
    extension: tuple[int, bool, int, int] | None = None
    #: a long video: ``f -> (frames of its longest window, latent frames each later window appends)`` or None
    #: where ``f`` frames run as one generation (:func:`ltxcli.long_video.window_frames`)
    windows: Callable[[int], tuple[int, int] | None] | None = None
    appended: int = 0  # latent frames appended as extra tokens (a later window's view of the previous one's tail)

    @classmethod
    def of_preset(
        cls, preset: Preset, *, guidance_scale: Any = None, stg_scale: Any = None, stg_blocks: Any = None,
        conditions: Sequence[tuple[int, int]] = (), control_frames: int = 0,
        control_model: Callable[[int, int, int], tuple[int, int]] | None = None, v2v: int = 0,
        extension: tuple[int, bool, int, int] | None = None,
    ) -> RunShape:
        """The shape of a request under ``preset``: the guidance of each pass that runs (a given
        ``guidance_scale`` / ``stg_scale`` replaces every pass's, as the pipeline applies an explicit scale),
        the preset's multi-scale and factor, and ``conditions`` (``(frame, pixel frames)``)."""
        passes = preset.passes if preset.multi_scale else preset.passes[:1]
        # STG that skips no block runs no branch of its own (the pipeline takes the conditional prediction)
        guidance = [(p.guidance_scale if guidance_scale is None else guidance_scale,
                     (p.stg_scale if stg_scale is None else stg_scale)
                     if (p.skip_block_list if stg_blocks is None else stg_blocks) else 0.0) for p in passes]
        return cls(guidance, multi_scale=preset.multi_scale, downscale_factor=preset.downscale_factor,
                   conditions=list(conditions), control_frames=control_frames, control_model=control_model,
                   v2v=v2v, extension=extension)


def request_shape(preset: Preset, request: Any, *, dtype: torch.dtype, depth_model: str | None = None,
                  weights_dir: Any = None, max_positions: Sequence[int] | None = None) -> RunShape:
    """:meth:`RunShape.of_preset` for a :class:`~ltxcli.request.GenerationRequest`: its guidance, its conditions
    (:func:`condition_frames`) and its IC-LoRA control (as long as the video, the most it can cover), with, for a
    depth control, the depth model's stage (``depth_model`` / ``weights_dir``: :func:`ltxcli.depth.depth_model_path`;
    its config must be on disk), its video-to-video input and its extension (``max_positions``: the transformer's
    position range, which bounds an extension's context; the input's first frame is read for its size)."""
    control = getattr(request, "control", None)
    model = None
    if control is not None and control.kind == "depth":
        from ..depth import depth_config, depth_memory_bytes, depth_model_path

        config = depth_config(depth_model_path(depth_model, weights_dir=weights_dir))

        def model(h: int, w: int, f: int) -> tuple[int, int]:
            return depth_memory_bytes(config, h, w, f, dtype)

    extension = None
    ext, video = getattr(request, "extend", None), getattr(request, "video", None)
    if ext is not None:  # the input's native size (its decoded frames are held) and the model's time range
        from ..extend import longest_frames

        longest = longest_frames(max_positions, request.frame_rate) if max_positions and request.frame_rate else 1 << 30
        extension = (ext.frames, ext.backward, _native_pixels(ext.video), longest)
    windows = None
    if max_positions and request.frame_rate:  # a long video (an extension's generation) runs a window at a time
        from ..long_video import window_frames

        windows = window_frames(request, float(request.frame_rate), float(max_positions[0]))
    shape = RunShape.of_preset(preset, guidance_scale=request.guidance_scale, stg_scale=request.stg_scale,
                               stg_blocks=request.stg_blocks,
                               conditions=[(c.frame, condition_frames(c, request.num_frames)) for c in request.conditions],
                               control_frames=request.num_frames if control is not None else 0, control_model=model,
                               v2v=_native_pixels(video) if video is not None else 0, extension=extension)
    return replace(shape, windows=windows)


def _native_pixels(source: Any) -> int:
    """Pixels per frame of an input video (a path: its first frame is decoded; a tensor ``[F, H, W, 3]``)."""
    from .. import media

    first = media.load_media(source, max_frames=1)
    return int(first.shape[-3]) * int(first.shape[-2])


def run_passes(shape: RunShape, height: int, width: int, num_frames: int) -> list[PassSize]:
    """The denoising passes of a request at ``height x width x num_frames``: their sizes as the pipeline
    computes them (:func:`ltxcli.request.padded_size`; :func:`ltxcli.presets.multi_scale_sizes`, the first
    pass's 32-aligned downscale and the upsampler's doubling) and their branches
    (:func:`ltxcli.sampling.pass_branches`)."""
    ph, pw, _ = padded_size(height, width, num_frames)
    branches = [pass_branches(g, s) for g, s in shape.guidance]
    if not shape.multi_scale:
        return [PassSize(ph, pw, branches[0])]
    sizes = multi_scale_sizes(ph, pw, shape.downscale_factor)
    return [PassSize(hh, ww, branches[min(i, len(branches) - 1)]) for i, (hh, ww) in enumerate(sizes)]


def request_estimator(
    shape: RunShape, transformer: TransformerConfig, vae: VAEConfig, *, dtype: torch.dtype, **kwargs: Any
) -> Callable[[int, int, int], MemoryEstimate]:
    """``(height, width, num_frames) -> MemoryEstimate`` for a request of this :class:`RunShape`;
    ``kwargs``: weights, offload, tiling and device of :func:`estimate_memory`."""
    later = sum(frame > 0 for frame, _ in shape.conditions)  # each adds up to 2 latent frames of extra tokens

    def estimate(h: int, w: int, f: int) -> MemoryEstimate:
        if shape.extension is not None:
            return _extension_estimate(shape, transformer, vae, h, w, f, dtype=dtype, **kwargs)
        window = shape.windows(f) if shape.windows is not None else None
        if window is not None:  # its longest window with the tail it appends, and the fused latents [1, C, lf, lh, lw]
            one = replace(shape, windows=None, appended=window[1])  # float32, held on the host to the end
            lf, lh, lw = latent_shape(vae, h, w, f)
            latents = 4 * vae.latent_channels * lf * lh * lw
            blend = 4 * 3 * 8 * DECODE_BLEND * h * w  # the previous decode tile's last frames, float32 (long_decode)
            return input_hold(request_estimator(one, transformer, vae, dtype=dtype, **kwargs)(h, w, window[0]),
                              latents, latents + blend)
        ph, pw, pf = padded_size(h, w, f)
        _, lh, lw = latent_shape(vae, ph, pw, f)
        control = (min(shape.control_frames, pf) - 1) // 8 * 8 + 1 if shape.control_frames else 0  # the trim
        est = estimate_memory(
            transformer, vae, height=ph, width=pw, num_frames=f, dtype=dtype, passes=run_passes(shape, h, w, f),
            extra_tokens=(2 * later + shape.appended) * lh * lw, per_token_timesteps=bool(shape.conditions or shape.appended),
            condition_frames=[n for _, n in shape.conditions] + ([pf] if shape.v2v else []), control_frames=control,
            control_model=shape.control_model(h, w, control) if shape.control_model and control else None, **kwargs)
        if not shape.v2v:
            return est
        # the input's pixels [1, 3, pf, ph, pw] float32 (conditions.prepare_video), held until run() returns; while
        # they are made: the decoded frames (native size, float32 and uint8), the preprocessed ones and the padded copy
        source = 4 * 3 * pf * ph * pw
        return input_hold(est, source, 0 if kwargs.get("streamed") else source, read=5 * 3 * pf * shape.v2v + 2 * source)

    return estimate


def input_hold(est: MemoryEstimate, early: int, late: int, write: int = 0, read: int = 0) -> MemoryEstimate:
    """``est`` with an input video's host memory: ``early`` bytes in every stage before the decode, ``late`` in the
    decode and write stages, ``write`` more in the write stage; ``read``: a first stage, ``read input``, holding that
    much while the input is read and preprocessed (the weights already loaded: a CPU run's all)."""
    late_stages = (DECODE, "write")
    stages = tuple(replace(s, host=s.host + (late if s.name in late_stages else early) + (write if s.name == "write" else 0))
                   for s in est.stages)
    if read:
        stages = (Stage("read input", max(s.weights for s in stages) if est.device_is_host else 0, host=read), *stages)
    return replace(est, stages=stages)


def _extension_estimate(shape: RunShape, transformer: TransformerConfig, vae: VAEConfig, h: int, w: int, f: int,
                        *, dtype: torch.dtype, **kwargs: Any) -> MemoryEstimate:
    """The memory of an extension to ``f`` output frames (:func:`ltxcli.extend.run_extension`): the generation
    of ``K + N`` frames (:func:`ltxcli.extend.plan_windows`, in windows one at a time) with the context at frame
    ``lead``, always streamed into the splice; meanwhile the host holds the decoded input (native size, ``M``
    frames) and three float32 copies of the context (its preprocessed pixels, the condition tensor, the prepared
    condition), then the input at the output size and the condition tensor while the output is spliced; a result
    that is not streamed builds the whole float32 output video."""
    from ..extend import window_context

    new, backward, native_pixels, longest = shape.extension or (0, False, 0, 0)
    m = max(f - new, 1)
    lead = -(-new // 8) * 8 if backward else 0
    context = (max(min(m, longest - (lead if backward else new)), 1) - 1) // 8 * 8 + 1
    split = shape.windows(context + new) if shape.windows is not None and not backward else None
    context = window_context(m, split[0]) if split is not None else context  # extend.plan_windows: in windows
    gen = lead + context + (0 if backward else new)
    ph, pw, _ = padded_size(h, w, gen)
    conditions = [(lead, context), *shape.conditions]
    inner = replace(shape, conditions=conditions, extension=None, v2v=False)
    est = request_estimator(inner, transformer, vae, dtype=dtype, **{**kwargs, "streamed": True})(h, w, gen)
    copy = 4 * 3 * context * ph * pw
    streamed = kwargs.get("streamed", False)
    return input_hold(est, 4 * 3 * m * native_pixels + 3 * copy, 4 * 3 * m * h * w + copy,
                      0 if streamed else 4 * 3 * f * h * w)


# --- the verdict ------------------------------------------------------------------------------------------------


def memory_alternatives(offload: str, vae_tiling: str, *, offload_saves: bool) -> list[tuple[str, str, str]]:
    """``(options text, offload, vae_tiling)`` settings that save memory over the given ones, fastest first:
    tiling the decode, then offloading by stage, then streaming blocks (offload only where it saves device
    memory, i.e. on a GPU)."""
    offloads = list(OFFLOAD_MODES[OFFLOAD_MODES.index(offload):]) if offload_saves else [offload]
    tilings = [vae_tiling, "on"] if vae_tiling == "off" else [vae_tiling]
    out = []
    for o in offloads:
        for t in tilings:
            if (o, t) == (offload, vae_tiling):
                continue
            text = " ".join(([f"--offload {o}"] if o != offload else []) + ([f"--vae-tiling {t}"] if t != vae_tiling else []))
            out.append((text, o, t))
    return out


def plan_estimators(
    shape: RunShape, transformer: TransformerConfig, vae: VAEConfig, *, dtype: torch.dtype, offload: str,
    vae_tiling: str, offload_saves: bool = True, **kwargs: Any,
) -> tuple[Callable[[int, int, int], MemoryEstimate], list[tuple[str, Callable[[int, int, int], MemoryEstimate]]]]:
    """The estimator of a request of this shape with the given ``offload`` / ``vae_tiling``, and
    ``(options text, estimator)`` for each of its :func:`memory_alternatives` (what :func:`memory_verdict`
    takes); ``kwargs``: the rest of :func:`estimate_memory`'s settings (weights, device, ``streamed``).

    Where the weights ``parts`` can be stored in one byte (:attr:`WeightParts.int8_storage`), the same settings
    with ``--weights-dtype int8`` join them: after tiling and ``--offload model`` (exact, and cheap next to a run),
    before streaming blocks (``--offload sequential``, slow). int8 rather than fp8 storage: the same bytes (plus 4
    a row), a third to a seventh of fp8's rounding error (0.4-0.9 % of a layer's output against 2.5 %); a
    widening pass per layer call costs little."""

    def estimator(o: str, t: str, **extra: Any) -> Callable[[int, int, int], MemoryEstimate]:
        return request_estimator(shape, transformer, vae, dtype=dtype, offload=o, vae_tiling=t,
                                 offload_saves=offload_saves, **{**kwargs, **extra})

    plain = memory_alternatives(offload, vae_tiling, offload_saves=offload_saves)
    ranked = [(_cost(o, t, False), text, estimator(o, t)) for text, o, t in plain]
    parts: WeightParts | None = kwargs.get("parts")
    if parts is not None and parts.int8_storage is not None:
        int8_parts = functools.cache(parts.int8_storage)  # built once, when a verdict first needs it

        def stored_int8(o: str, t: str) -> Callable[[int, int, int], MemoryEstimate]:
            return lambda h, w, f: estimator(o, t, parts=int8_parts())(h, w, f)

        ranked += [(_cost(o, t, True), " ".join(filter(None, ["--weights-dtype int8", text])), stored_int8(o, t))
                   for text, o, t in [("", offload, vae_tiling), *plain]]
    ranked.sort(key=lambda r: r[0])  # stable: memory_alternatives' order among equals
    return estimator(offload, vae_tiling), [(text, est) for _, text, est in ranked]


def _cost(offload: str, vae_tiling: str, stored: bool) -> float:
    """Rank of a memory-saving setting, cheapest first: tiling the decode, offloading by stage, int8 storage,
    then streaming blocks."""
    return {"none": 0.0, "model": 1.0, "sequential": 3.0}[offload] + (1.5 if stored else 0.0) + 0.1 * (vae_tiling == "on")


def smaller_size(fits: Callable[[int, int, int], bool], height: int, width: int,
                 num_frames: int) -> tuple[int, int, int] | None:
    """The largest request with the same aspect ratio (sizes multiples of 32, frames 8k + 1) that ``fits``."""
    for scale in (0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125):
        h = max(32, int(height * scale) // 32 * 32)
        w = max(32, int(width * scale) // 32 * 32)
        f = max(1, int((num_frames - 1) * scale) // 8 * 8 + 1)
        if (h, w, f) != (height, width, num_frames) and fits(h, w, f):
            return h, w, f
    return None


@dataclass(frozen=True)
class MemoryVerdict:
    """Whether a request fits ``free_bytes``, and what would: ``fitting`` (the first alternative settings that
    fit at this size, ``(options text, estimate)``), ``least`` (else the alternative that needs least),
    ``smaller`` (a smaller size that fits with the current settings, with its estimate)."""

    estimate: MemoryEstimate
    free_bytes: int
    fitting: tuple[str, MemoryEstimate] | None = None
    least: tuple[str, MemoryEstimate] | None = None
    smaller: tuple[tuple[int, int, int], MemoryEstimate] | None = None

    @property
    def fits(self) -> bool:
        return self.estimate.peak_bytes <= self.free_bytes

    @property
    def weights_too_large(self) -> bool:
        return self.estimate.fixed_bytes >= self.free_bytes


def memory_verdict(
    estimate: Callable[[int, int, int], MemoryEstimate], *, height: int, width: int, num_frames: int,
    free_bytes: int, alternatives: Sequence[tuple[str, Callable[[int, int, int], MemoryEstimate]]] = (),
) -> MemoryVerdict:
    """:class:`MemoryVerdict` of ``estimate(height, width, num_frames)`` against ``free_bytes``;
    ``alternatives``: ``(options text, estimate)`` pairs, the fastest first (:func:`memory_alternatives`)."""
    est = estimate(height, width, num_frames)
    if est.peak_bytes <= free_bytes:
        return MemoryVerdict(est, free_bytes)
    options = [(label, alt(height, width, num_frames)) for label, alt in alternatives]
    fitting = next(((label, e) for label, e in options if e.peak_bytes <= free_bytes), None)
    least = None
    if fitting is None and options:
        label, e = min(options, key=lambda o: o[1].peak_bytes)
        least = (label, e) if e.peak_bytes < est.peak_bytes else None
    smaller = None
    if est.fixed_bytes < free_bytes:
        size = smaller_size(lambda h, w, f: estimate(h, w, f).peak_bytes <= free_bytes, height, width, num_frames)
        smaller = (size, estimate(*size)) if size is not None else None
    return MemoryVerdict(est, free_bytes, fitting, least, smaller)


Estimator = Callable[[int, int, int], MemoryEstimate]


@dataclass(frozen=True)
class RunPlan:
    """The memory plans of the requests one model load serves (:func:`plan_run`): the transformer config (its
    heads decide the parallel modes), the free memory measured on the device, and per request its estimator and
    ``(options text, estimator)`` alternatives, what :func:`memory_verdict` takes."""

    transformer: TransformerConfig
    free_bytes: int
    requests: list[tuple[Estimator, list[tuple[str, Estimator]]]]


def condition_frames(c: Any, num_frames: int) -> int:
    """Pixel frames the pipeline keeps of condition ``c`` in a ``num_frames`` video: its decoded frames when the
    pre-load check has read them (:class:`ltxcli.media.DecodedMedia`, a tensor), rounded down to 8k + 1 as the
    official trim does; one for an image or anything not yet read."""
    frames = getattr(c.media, "frames", c.media)
    n = int(frames.shape[0]) if isinstance(frames, torch.Tensor) and frames.ndim == 4 else 1
    return (max(1, min(n, num_frames - c.frame)) - 1) // 8 * 8 + 1


def plan_run(
    requests: Sequence[Any], spec: Any, *, device: torch.device | str, dtype: torch.dtype, fp8: bool, narrow: bool,
    offload: str, vae_tiling: str, streamed: bool = True, free_bytes: int | None = None,
    weights_storage: str | None = None,
    enhancer_bytes: Sequence[int] = (),
) -> RunPlan:
    """Plan every request (resolved :class:`~ltxcli.request.GenerationRequest` s: sizes set, conditions checked)
    that one load of ``spec`` (:class:`~ltxcli.spec.ModelSpec`) runs on ``device``: the weights from the headers
    as the loaders will hold them (``fp8``: ``--dtype fp8``; ``narrow``: layer weights kept in the checkpoint's
    dtype, :func:`ltxcli.loading.keep_narrow`), the text encoder freed after use when there is one request, and
    ``streamed``: the video written chunk by chunk (what ``ltx generate`` does). ``free_bytes``: default, what
    the device has free now (:func:`ltxcli.memory.decode.free_memory_bytes`). ``weights_storage``: the blocks'
    linear weights stored in ``"fp8"`` or ``"int8"`` (``--weights-dtype``). ``enhancer_bytes``: per request, the weights of
    its prompt enhancement stage (:func:`ltxcli.enhance.stage.enhancer_bytes`; missing or 0: none)."""
    from .decode import free_memory_bytes
    from .weights import spec_parts

    tcfg, vcfg, parts = spec_parts(spec, dtype, fp8=fp8, narrow=narrow, weights_storage=weights_storage)
    free = free_memory_bytes(device) if free_bytes is None else free_bytes
    kind = torch.device(device).type
    plans = []
    for i, r in enumerate(requests):
        shape = request_shape(spec.preset, r, dtype=dtype, depth_model="tiny" if spec.kind == "builtin" else None,
                              weights_dir=spec.weights_dir, max_positions=tcfg.positional_embedding_max_pos)
        # offloaded weights wait in host memory: on a CPU device that is the same memory, so nothing is saved
        plans.append(plan_estimators(
            shape, tcfg, vcfg, dtype=dtype, offload=offload, vae_tiling=vae_tiling, offload_saves=kind == "cuda",
            parts=parts, free_bytes=free, device_is_host=kind == "cpu", text_encoder_freed=len(requests) == 1,
            streamed=streamed, enhancer_bytes=enhancer_bytes[i] if i < len(enhancer_bytes) else 0))
    return RunPlan(tcfg, free, plans)


__all__ = [
    "CONTROL_MODEL", "ENCODE_FACTOR", "OFFLOAD_MODES", "TILING_MODES", "TRANSFORMER_UNITS", "TRANSFORMER_UNITS_PER_TOKEN_TIMESTEPS",
    "MemoryEstimate", "MemoryVerdict", "PassSize", "RunPlan", "RunShape", "Stage", "condition_frames", "decode_bytes",
    "estimate_memory", "input_hold", "latent_shape", "memory_alternatives", "memory_verdict", "plan_estimators", "plan_run",
    "request_estimator", "request_shape", "run_passes", "smaller_size", "stage_weights",
]
