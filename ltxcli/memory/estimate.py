"""The memory estimate of one generation: its peak device and host memory, stage by stage, before anything loads.

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
  factor measured by peak RSS on the tiny VAE, float32: 1.20-1.22 from 512x320x57 to 640x448x81). A video is
  encoded in time chunks (:func:`ltxcli.vae_encode.chunked_encode`, 16 latent frames, 129 pixel frames, the first):
  priced as its largest chunk (:func:`ltxcli.vae_encode.encode_frames`), however long the video, the chunk halved
  down to 1 latent frame until it fits ``free_bytes`` less the stage's weights (on a CPU device less the input's
  pixels the host holds too: ``encode_host``), as the encoder picks it at run time
  (:func:`ltxcli.memory.encode.encode_chunk`; :attr:`MemoryEstimate.encode_chunk`). It runs after the
  text encoder and before the transformer, in the VAE encoder's own offload stage;
* ``denoise`` (``denoise (first pass)`` / ``(second pass)`` for multi-scale): the transformer's live
  activations for one step, ``units * B * N * D`` elements at the run's dtype, ``B`` the guidance branches of
  that pass (:func:`ltxcli.sampling.pass_branches`), ``N`` the latent tokens at the pass's padded size (plus the
  tokens of conditions placed after frame 0 and an IC-LoRA control's, as many as the frames it covers:
  :mod:`ltxcli.control`; a multi-scale temporal upscale gives the second pass ``2f - 1`` latent frames, its video
  conditions' and control's likewise: :func:`ltxcli.memory.shape.run_passes`), ``D`` the hidden width. Measured by peak RSS on the CPU (float32,
  2-layer models, D 256-512, N 1.5k-3k): 16.5 units with one timestep per sample and 31-33 with per-token
  timesteps (conditioning: the adaLN tables become ``[B, N, 6D]``), hence 18 / 34 here; plus, except under
  sequential offload, the text's cross-attention keys and values the pass computes once
  (:mod:`ltxcli.text_cache`: ``2 * layers * B * 256 * D`` elements);
* ``upsampler`` (multi-scale): its weights and its working memory on the first pass's latents
  (:func:`ltxcli.memory.upscale.upscale_bytes`, from its config: ``WeightParts.upsampler_config``, else the
  released one's);
* ``temporal upscale`` (a request's ``temporal_upscale``): the temporal upscaler's weights and its working memory
  (:func:`ltxcli.memory.upscale.upscale_bytes`, from its config: ``WeightParts.temporal_config``, else the
  released one's) on the latents it doubles: after the single pass, or between the upsampler and the second pass
  of a multi-scale run (the video's latents at the second pass's size; its video conditions' and control's, each
  no larger, one after another); a long video's fused latents once every window is done
  (:func:`ltxcli.memory.shape.request_estimator`);
* ``decode``: the VAE decode at the last pass's size as :func:`ltxcli.memory.decode.plan_decode` will run it
  (the same call the pipeline makes): untiled (:func:`~ltxcli.memory.decode.decode_memory_bytes`) or tiled
  (:func:`~ltxcli.memory.decode.tiled_decode_memory_bytes`), with the float32 video it produces landing on
  the host. Its budget is the free memory less the stage's weights and what stays on the device through it
  (``decode_device``: a long video's fused latents, blend tail), on a CPU device less all the host holds through it
  (``decode_host``: an extension's input, a long video's fused latents), as the run finds it;
* an input video (:func:`input_hold`): video-to-video (``video``) reads, prepares and encodes its ``8k + 1``
  padded frames a chunk at a time at the first pass's size in ``condition encode``, holding one chunk's float32
  pixels on the host (:func:`ltxcli.memory.shape.request_estimator`); an extension (``extend``, :mod:`ltxcli.extend`) generates ``K + N``
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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..models.configs import TransformerConfig, UpsamplerConfig, VAEConfig
from ..request import padded_size
from ..text_cache import TEXT_TOKENS, text_kv_bytes, used_with
from .decode import (
    STREAM_CHUNK_FRAMES,
    chunk_output_bytes,
    decode_memory_bytes,
    output_bytes,
    plan_decode,
    tiled_decode_memory_bytes,
)
from .encode import ENCODE_FACTOR, encode_chunk, encode_memory_bytes
from .upscale import upscale_bytes
from .weights import WeightParts

OFFLOAD_MODES = ("none", "model", "sequential")
TILING_MODES = ("auto", "on", "off")
#: Transformer activation peak in units of ``B * N * D`` elements (see the module docstring).
TRANSFORMER_UNITS = 18
TRANSFORMER_UNITS_PER_TOKEN_TIMESTEPS = 34
DENOISE, DECODE = "denoise", "decode"
TEMPORAL = "temporal upscale"
CONTROL_MODEL = "control model"


@dataclass(frozen=True)
class Stage:
    """One stage of a run: ``weights`` and ``activations`` on the device, ``host`` bytes held on the host
    meanwhile beyond the weights (on a CPU device the same memory: see :attr:`MemoryEstimate.host_peak_bytes`)."""

    name: str
    weights: int
    activations: int = 0
    host: int = 0
    tokens: int = 0  # a denoise stage's: the tokens the transformer takes each step (per guidance branch)

    @property
    def device_bytes(self) -> int:
        return self.weights + self.activations


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak device (and host) memory of one generation, over its :class:`Stage` s.

    ``host_weights``: weights waiting in host memory (offloaded to it on a GPU); ``vae_tiled``: the decode is
    tiled; ``device_is_host``: a CPU run, where the device peak is the whole peak; ``encode_chunk``: latent frames
    per chunk of the VAE encode chunked the most (:func:`ltxcli.memory.encode.encode_chunk`; 0: nothing encoded).
    """

    stages: tuple[Stage, ...]
    host_weights: int = 0
    vae_tiled: bool = False
    device_is_host: bool = False
    encode_chunk: int = 0

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


#: ``(height, width, num_frames) -> MemoryEstimate`` of one request (:func:`ltxcli.memory.shape.request_estimator`).
Estimator = Callable[[int, int, int], MemoryEstimate]


# --- weights per stage ----------------------------------------------------------------------------------------


def stage_weights(
    parts: WeightParts, offload: str = "none", *, offload_saves: bool = True, text_encoder_freed: bool = False
) -> dict[str, int]:
    """Weights on the device during each stage (``control model``: only the pipeline's, the depth model comes on
    top; ``text encoder``, ``condition encode``, ``denoise``, ``upsampler``, ``temporal upscale``, ``decode``) under
    ``offload``.
    ``offload_saves=False`` (a CPU device: host and device memory are the same) counts every weight in every stage. ``text_encoder_freed``: the text encoder's weights are
    released after the prompt is encoded (:attr:`ltxcli.pipeline.Pipeline.free_text_encoder_after_use`)."""
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload={offload!r} must be one of {', '.join(OFFLOAD_MODES)}")
    te = parts.text_encoder
    if offload == "none" or not offload_saves:
        later = parts.total - (te if text_encoder_freed else 0)
        return {CONTROL_MODEL: parts.total, "text encoder": parts.total, "condition encode": later, DENOISE: later,
                "upsampler": later, TEMPORAL: later, DECODE: later}
    stats = parts.vae_other
    if offload == "model":
        return {CONTROL_MODEL: stats, "text encoder": te + stats, "condition encode": parts.vae_encoder + stats,
                DENOISE: parts.transformer + stats, "upsampler": parts.upsampler + stats,
                TEMPORAL: parts.temporal_upsampler + stats, DECODE: parts.vae_decoder + stats}
    # sequential: the non-block parts stay; the current block and the prefetched next one are on the device
    resident = (parts.transformer - parts.transformer_blocks) + (parts.vae_decoder - parts.vae_decoder_blocks) + stats
    streamed = resident + 2 * parts.transformer_block
    return {CONTROL_MODEL: resident, "text encoder": resident + te, "condition encode": resident + parts.vae_encoder,
            DENOISE: streamed, "upsampler": resident + parts.upsampler, TEMPORAL: resident + parts.temporal_upsampler,
            DECODE: resident + 2 * parts.vae_decoder_block}


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
    """One denoising pass: the padded pixel size it runs at, its guidance branches per step, and where known
    (:func:`ltxcli.memory.shape.run_passes`) its token count in latent frames of that size: ``frames`` of the video
    (twice the first pass's less one after a temporal upscale) and ``extra`` of conditioning tokens (conditions
    after frame 0, an IC-LoRA control, a window's appended tail). ``frames=0``: the output's latent frames, with
    :func:`estimate_memory`'s ``extra_tokens`` and control."""

    height: int
    width: int
    branches: int = 3
    frames: int = 0
    extra: int = 0


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
    source_frames: int = 0,
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
    temporal_upscale: bool = False,
    encode_host: int = 0,
    decode_host: int = 0,
    decode_device: int = 0,
) -> MemoryEstimate:
    """Estimated memory of generating ``height x width x num_frames`` (the padded output size; see the module
    docstring).

    ``transformer`` / ``vae``: their configs. ``passes``: the denoising passes (default: one at the output
    size with ``branches``); the decode runs at the last one's size. ``extra_tokens``: tokens of conditions
    placed after frame 0 per latent ``h * w`` of the output size (scaled to each pass); ``per_token_timesteps``:
    conditioning is used (the timestep differs per token); ``condition_frames``: pixel frames of each condition
    the VAE encodes (at the largest pass's size); ``source_frames``: those of a video-to-video input, encoded at
    the first pass's size (:meth:`ltxcli.pipeline.Pipeline._encode_conditions`). ``parts`` (else ``weights_bytes``, all on the device in every stage), ``offload``,
    ``offload_saves``, ``text_encoder_freed``: see :func:`stage_weights`; ``device_is_host``: a CPU run.
    ``vae_tiling`` / ``free_bytes``: the decode as the pipeline will run it (``auto`` tiles when the untiled
    decode would not fit in ``free_bytes`` less the decode stage's weights and ``decode_device``, ``decode_host`` on a CPU). ``streamed``: the result is decoded
    into its writer chunk by chunk (``run_batch(stream=True)``, what ``ltx generate`` does), so the write stage
    holds one chunk of :data:`~ltxcli.memory.decode.STREAM_CHUNK_FRAMES` frames, not the whole float32 video.
    ``control_frames``: pixel frames of an IC-LoRA control (encoded, and its latent frames' tokens in every pass);
    ``control_model``: ``(weights, activations)`` of the depth model that makes it (its own stage).
    ``enhancer_bytes``: the prompt enhancer's weights (:func:`ltxcli.enhance.stage.enhancer_bytes`; 0: no
    enhancement), a stage of its own before everything else. ``temporal_upscale``: the temporal upscaler doubles the
    latent frames after the single pass or between the passes (``num_frames``: the decoded ``2 (n - 1) + 1``).
    ``encode_host``: bytes the host holds through the condition encode (a video-to-video input's pixels, which
    :func:`input_hold` adds to the stages): on a CPU device the free memory's too, so out of the encode's budget.
    ``decode_host``: bytes held through the decode besides its own (an extension's input, a long video's fused latents,
    :mod:`ltxcli.memory.shape`): on a CPU device out of the decode's budget too, as the run, measuring its free memory
    there (:meth:`ltxcli.pipeline.Pipeline._decoded`), finds them gone. ``decode_device``: the part of them on the
    device (a long video's fused latents, blend tail): out of the decode's budget on any device (on a CPU ``decode_host`` has it).
    """
    passes = list(passes) or [PassSize(height, width, branches)]
    f, h, w = latent_shape(vae, height, width, num_frames)
    if parts is None:
        weights = dict.fromkeys((CONTROL_MODEL, "text encoder", "condition encode", DENOISE, "upsampler", TEMPORAL,
                                 DECODE), int(weights_bytes))
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
    largest = (max(p.height for p in passes), max(p.width for p in passes))
    encodes = [(n, largest) for n in condition_frames]
    if source_frames:
        encodes.append((source_frames, (passes[0].height, passes[0].width)))
    chunks = []  # each encode a chunk at a time, the largest chunk that fits beside the stage's weights
    if encodes:
        # on a CPU device the host's hold is taken from the same free memory: the encoder at run time finds it gone
        held = encode_host if device_is_host else 0
        budget = None if free_bytes is None else free_bytes - weights["condition encode"] - held
        chunks = [encode_chunk(vae, (1, 3, n, *size), dtype, budget) for n, size in encodes]
        encode = max(encode_memory_bytes(vae, (1, 3, n, *size), dtype, c) for (n, size), c in zip(encodes, chunks, strict=True))
        stages.append(Stage("condition encode", weights["condition encode"], encode))
    for i, p in enumerate(passes):
        _, ph, pw = latent_shape(vae, p.height, p.width, num_frames)
        if p.frames:  # the pass's own count ([1, N, C] tokens, N = frames * h * w of the pass)
            tokens = (p.frames + p.extra) * ph * pw
        else:
            tokens = (f + control_latent_frames) * ph * pw + extra_tokens * ph * pw // max(h * w, 1)
        name = DENOISE if len(passes) == 1 else f"{DENOISE} ({('first', 'second')[min(i, 1)]} pass)"
        if i > 0:  # the latent upsampler doubles the previous pass's latents (before any temporal upscale)
            _, h1, w1 = latent_shape(vae, passes[i - 1].height, passes[i - 1].width, num_frames)
            spatial = parts.upsampler_config if parts is not None else None
            spatial = spatial or UpsamplerConfig(in_channels=vae.latent_channels)
            up = upscale_bytes(spatial, passes[i - 1].frames or f, h1, w1, dtype, cpu=device_is_host)
            stages.append(Stage("upsampler", weights["upsampler"], up))
            if temporal_upscale:  # then the temporal upscaler doubles them: [1, C, f, h, w] -> [1, C, 2f - 1, h, w]
                stages.append(temporal_stage(vae, parts, weights[TEMPORAL], passes[i - 1].frames or (f + 1) // 2, ph,
                                             pw, dtype, device_is_host))
        act = units * p.branches * tokens * transformer.inner_dim * item
        if used_with(offload):  # the pass's text keys and values (ltxcli.text_cache)
            act += text_kv_bytes(transformer.num_layers, transformer.inner_dim, p.branches, TEXT_TOKENS, item)
        stages.append(Stage(name, weights[DENOISE], act, tokens=tokens))
    _, dh, dw = latent_shape(vae, passes[-1].height, passes[-1].width, num_frames)
    if temporal_upscale and len(passes) == 1:  # after the pass, the decode takes its 2f - 1 latent frames
        stages.append(temporal_stage(vae, parts, weights[TEMPORAL], passes[0].frames or (f + 1) // 2, dh, dw, dtype,
                                     device_is_host))
    latent = (1, vae.latent_channels, f, dh, dw)
    # as the encode's: what the device holds through the decode (on a CPU device: all the host holds) is gone from
    # the memory the run finds free
    free = None if free_bytes is None else free_bytes - weights[DECODE] - (decode_host if device_is_host else decode_device)
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
    return MemoryEstimate(tuple(stages), host_weights=host_weights, vae_tiled=tiled, device_is_host=device_is_host,
                          encode_chunk=min(chunks, default=0))


def temporal_stage(vae: VAEConfig, parts: WeightParts | None, weights: int, frames: int, height: int, width: int,
                   dtype: torch.dtype, device_is_host: bool) -> Stage:
    """The ``temporal upscale`` stage on latents ``[1, C, frames, height, width]``: ``weights`` on the device and the
    working memory of the upscaler of ``parts.temporal_config`` (else the released one's: 512 channels, 4 blocks)."""
    config = parts.temporal_config if parts is not None else None
    config = config or UpsamplerConfig(in_channels=vae.latent_channels, spatial_upsample=False, temporal_upsample=True)
    return Stage(TEMPORAL, weights, upscale_bytes(config, frames, height, width, dtype, cpu=device_is_host))


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


__all__ = [
    "CONTROL_MODEL", "DECODE", "DENOISE", "ENCODE_FACTOR", "OFFLOAD_MODES", "TEMPORAL", "TILING_MODES", "TRANSFORMER_UNITS",
    "TRANSFORMER_UNITS_PER_TOKEN_TIMESTEPS", "Estimator", "MemoryEstimate", "PassSize", "Stage",
    "decode_bytes", "estimate_memory", "input_hold", "latent_shape", "stage_weights", "temporal_stage",
]
