"""Generation with the official ``LTXVideoPipeline`` / ``LTXMultiScalePipeline`` semantics.

This module is the only place that orders the stages of :meth:`Pipeline.run`, in one direction:

1. resolve the request against the preset (:func:`ltxcli.request.resolve_request`, no model),
2. read and preprocess the condition media, each file once (:func:`ltxcli.conditions.prepare_conditions`),
3. encode the prompt (text encoder stage),
4. encode the conditions and the video-to-video input, read as encoded (VAE encoder stage; :func:`~ltxcli.conditions.source_chunks`),
5. denoise pass by pass (transformer stage; the upsampler between multi-scale passes),
6. decode (VAE decoder stage).

Given the same weights and the same noise it computes what the official pipelines compute (see
tests/test_pipeline.py), with two deliberate differences that make a seed portable: all randomness comes from
CPU generators seeded by the run's seed (never the global RNG, never a CUDA generator), and conditioning media
are encoded to their posterior mode instead of a posterior sample.
"""

from __future__ import annotations

import functools
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor, nn
from typing_extensions import Unpack  # typing's from Python 3.11 (torch requires typing_extensions)

from . import conditions, sampling, step_cache, text_cache, vae_encode, vae_tiling
from .adapters.lora import LoraLike, LoraSpec
from .conditions import EncodedCondition, PreparedCondition, prepare_conditions, record_entry, resize_frames
from .control import (
    EncodedControl,
    PreparedControl,
    at_double_rate,
    control_record,
    place_with_control,
    prepare_control,
)
from .encode_memo import condition_latents
from .field_values import check_run_options
from .formatting import pipeline_repr
from .frames import WEIGHTS_HINT, NumericalError, check_latents, checked_uint8, to_video
from .kernels import attention_option
from .locks import serialised
from .media.write import Quantize
from .memory import decode as decode_memory
from .memory import encode as encode_memory
from .models.configs import SchedulerConfig
from .models.fp8 import fp8_mode
from .models.int8 import storage_mode
from .models.transformer import STGMode, cpu_gemm_route
from .models.upcast import compute_dtype
from .models.upsampler import adain
from .passes import HARD_EPS, as_list
from .presets import NEUTRAL, PassSettings, Preset
from .progress import ProgressFn
from .request import Condition, GenerationRequest, RequestFields, ResolvedRequest, resolve_request
from .request import check_decode_settings as check_decode
from .result import GenerationResult
from .source import with_source_defaults
from .text_cache import TextKVCache

if TYPE_CHECKING:  # annotations only: text imports transformers
    from .enhance.protocol import RequestEnhancer
    from .text import PromptEncoder

_SEED_RANGE = 2**31
# a request either side of resolution: the enhancement stage runs on a windowed video's whole request too
_Request = TypeVar("_Request", GenerationRequest, ResolvedRequest)


class Pipeline:
    """A loaded model: ``generate``, ``encode`` and ``decode``. Build it with :func:`ltxcli.load_pipeline`."""

    # The prompt enhancer (a PromptEnhancer, set by load_pipeline from the preset) of requests that need one and arrive without their
    # enhanced prompt; its models are loaded for the enhancement stage only and freed right after it. None: no
    # enhancement (auto keeps the prompt).
    enhancer: RequestEnhancer | None

    def __init__(
        self,
        transformer: nn.Module,
        vae: nn.Module,
        text_encoder: PromptEncoder,
        *,
        preset: Preset = NEUTRAL,
        scheduler: SchedulerConfig | None = None,
        allowed_inference_steps: Sequence[float] | None = None,
        upsampler: nn.Module | None = None,
        name: str = "",
        device: torch.device | None = None,
        offload: str = "none",
        vae_tiling: str = "auto",
    ) -> None:
        from .offload import Offload

        self.transformer = transformer
        self.vae = vae
        self.text_encoder = text_encoder
        self.upsampler = upsampler
        # the temporal upscaler for requests with ``temporal_upscale`` (load_pipeline(temporal_upsampler=...))
        self.temporal_upsampler: nn.Module | None = None
        self.preset = preset
        # Official configs use ``sampler: from_checkpoint``; a checkpoint without one gets the default scheduler.
        self.scheduler = scheduler or SchedulerConfig()
        self.allowed_inference_steps = tuple(allowed_inference_steps) if allowed_inference_steps else None
        self.name = name
        # Under offload the weights live on the host, so the execution device is stored, not inferred.
        self._device = device
        self.offload = Offload(offload)
        if vae_tiling not in ("auto", "on", "off"):
            raise ValueError(f"vae_tiling={vae_tiling!r} must be auto, on or off")
        self.vae_tiling = vae_tiling
        # Set by callers that generate once (the CLI with a single item): the text encoder's weights are
        # released right after encoding, freeing its memory (T5-XXL: 9.5 GB in bf16) for denoising and decoding.
        self.free_text_encoder_after_use = False
        # what the step cache skipped over the passes of the current generation (the record's "cache" entry)
        self.cache_tally = step_cache.Tally()
        self.lock = threading.RLock()  # held by each generation and LoRA change (ltxcli.locks)
        # LoRAs (and a depth control's model): where registry weights are found, the model LoRAs are checked against
        # (load_pipeline sets both), what is merged now and its records
        self.weights_dir: str | os.PathLike[str] | None = None
        self.model_ref = name
        self._lora_specs: tuple[LoraSpec, ...] = ()
        self.lora_records: list[dict[str, Any]] = []
        # The depth model of ``Control(kind="depth")`` (:func:`ltxcli.depth.depth_model_path`: None = the registry's).
        self.depth_model: str | None = None
        self.enhancer = None

    __repr__ = pipeline_repr

    @property
    def device(self) -> torch.device:
        """Where the models compute (the transformer's device unless the pipeline was built for another)."""
        return self._device or self.transformer.patchify_proj.weight.device

    def _stage(self, module: Any, *, streamed: bool = False):  # -> context manager
        """The context a stage runs in (:func:`ltxcli.offload.stage` with this pipeline's device and offload)."""
        from .offload import stage

        return stage(module, self.device, self.offload, streamed=streamed)

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (the transformer's; its weights may be stored narrower: ``compute_record``)."""
        return compute_dtype(self.transformer.patchify_proj)

    # --- LoRAs ---------------------------------------------------------------------------------------------

    @property
    def lora_specs(self) -> tuple[LoraSpec, ...]:
        """The LoRAs merged now (:class:`~ltxcli.adapters.lora.LoraSpec` s; ``()`` none)."""
        return self._lora_specs

    @serialised
    def set_loras(self, loras: Sequence[LoraLike] | None, *, download: bool = True,
                  on_event: Callable[[object], None] | None = None) -> None:
        """Merge ``loras`` into the transformer in place of the current ones, without reloading anything: each a
        file path or weights.toml name, ``(path_or_name, scale)``, a string ``PATH_OR_NAME[:SCALE]`` or a
        :class:`~ltxcli.adapters.lora.LoraSpec`; ``[]`` restores the base weights bit for bit
        (:mod:`ltxcli.adapters.lora_merge`). Registry LoRAs are downloaded first unless ``download`` is False, and
        refused on a model they are not made for. Nothing changes when a file fails its checks."""
        from .adapters.lora import fetch_loras, lora_specs
        from .adapters.lora_merge import apply_loras

        specs = lora_specs(loras)
        if specs == self._lora_specs:
            return
        refs = fetch_loras(specs, model=self.model_ref, weights_dir=self.weights_dir, download=download,
                           on_event=on_event)
        self.lora_records = apply_loras(self.transformer, refs, device=self.device)
        self._lora_specs = specs

    # --- VAE helpers ----------------------------------------------------------------------------------

    def encode(self, video: Tensor) -> Tensor:
        """Float ``[F, H, W, 3]`` in [0, 1] (``F = 8k + 1``; ``H``, ``W`` multiples of 32) -> normalised latents
        ``[1, C, f, h, w]`` (posterior mode)."""
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"encode expects a float tensor [F, H, W, 3], got shape {list(video.shape)}")
        if not video.is_floating_point():  # uint8 would wrap around in `* 2 - 1` and encode to garbage
            raise ValueError(f"encode expects float frames in [0, 1], got {str(video.dtype).removeprefix('torch.')}"
                             f" (uint8 frames: divide by 255)")
        f, h, w = video.shape[:3]
        if (f - 1) % 8 or h % 32 or w % 32:
            raise ValueError(f"encode needs 8k+1 frames and sizes divisible by 32, got {f}x{h}x{w}")
        pixels = video.permute(3, 0, 1, 2)[None] * 2 - 1  # [1, 3, F, H, W] in [-1, 1], on the device a chunk at a time
        with torch.inference_mode(), self._stage(self.vae.encoder):
            return self._vae_encode(pixels).float().cpu()

    def _vae_encode(self, pixels: Tensor, chunk: int | None = None) -> Tensor:
        """Pixels ``[1, 3, F, H, W]`` in [-1, 1] (any device) -> normalised latents: :meth:`_encode_chunks` in one piece."""
        return self._encode_chunks([pixels], pixels.shape, chunk)

    def _encode_chunks(self, chunks: Iterable[Tensor], shape: Sequence[int], chunk: int | None = None, held: int = 0) -> Tensor:
        """Pixels ``shape`` ``[1, 3, F, H, W]`` in [-1, 1] as pieces along time (any device) -> normalised latents, in the VAE's
        dtype (in its stage), in time chunks of ``chunk`` latent frames (default: the largest that fit beside ``held``: :mod:`ltxcli.memory.encode`)."""
        chunk, dtype = chunk or encode_memory.fitting_chunk(self.vae, shape, self.device, held), compute_dtype(self.vae.decoder.conv_in.conv)
        return vae_encode.encode_chunks(self.vae, chunks, shape[2], chunk=chunk, device=self.device, dtype=dtype)

    def decode(
        self, latents: Tensor, *, timestep: float | None = None, noise_scale: float = 0.0, seed: int | None = None,
        tone_map_compression_ratio: float = 0.0,
    ) -> Tensor:
        """Normalised latents ``[1, C, f, h, w]`` -> float ``[F, H, W, 3]`` in [0, 1] (CPU).

        ``timestep`` conditions timestep-aware decoders (default: the preset's decode timestep);
        ``noise_scale`` blends in decode noise drawn from a CPU generator seeded with ``seed``; then the latents
        are tone-mapped (a generation's last-pass ratio: 0.6 in the 0.9.8 13B distilled presets) as generate does.
        """
        if latents.shape[:2] != (1, channels := self.vae.config.latent_channels) or latents.ndim != 5:
            raise ValueError(f"decode expects latents [1, {channels}, f, h, w] (this model's VAE), got shape "
                             f"{list(latents.shape)}")
        t = self.preset.decode_timestep if timestep is None else timestep
        check_decode(t, noise_scale)  # as a request's: NaN would decode to a NaN video
        # a generation's stages check their own output (one host sync each): only latents handed in are checked here
        check_latents(latents, "on entering the decoder", "they were handed in (Pipeline.decode's input): check their source")
        gen = torch.Generator("cpu").manual_seed(seed if seed is not None else 0)
        with torch.inference_mode():
            video = self._decode(latents.to(self.device), t, noise_scale, tone_map_compression_ratio, gen)
        return video[0].permute(1, 2, 3, 0).cpu()

    def _decode(
        self, latents: Tensor, timestep: float, noise_scale: float, tone_map: float, gen: torch.Generator
    ) -> Tensor:
        """Decode noise, tone mapping and the VAE, as the official pipeline orders them -> float32 [B, 3, F, H, W]
        in [0, 1]."""
        (video,) = self._decoded(latents, timestep, noise_scale, tone_map, gen, chunks=False)
        # The decoder's output is a fresh tensor (``float()`` copies it or returns it as is): scale it in place.
        video = video.float()
        return video.div_(2).add_(0.5).clamp_(0, 1)

    def _decoded(
        self, latents: Tensor, timestep: float, noise_scale: float, tone_map: float, gen: torch.Generator, *,
        chunks: bool, progress: Any = None, into: Any = None,
    ) -> Iterator[Tensor]:
        """The decoder stage: the VAE's output ``[B, 3, n, H, W]`` in [-1, 1], whole (one tensor) or, when
        ``chunks`` and the decode is tiled in time, one time window after another (the plan is the same, so
        are the values); the stage is left when the iterator is exhausted. ``progress("decode", done, total)``
        after each tile (an untiled decode is one)."""
        def tiles(done: int, total: int) -> None:
            if progress:
                progress("decode", done, total)

        t: float | None = None
        if self.vae.timestep_conditioning:
            latents = sampling.decode_noise(latents, noise_scale, gen)
            t = timestep
        latents = sampling.tone_map(latents, tone_map)  # (checked finite by the stage that made them: see decode)
        vae_dtype = compute_dtype(self.vae.decoder.conv_in.conv)
        with self._stage(self.vae.decoder, streamed=True):
            # Free memory is measured with the decoder resident, so the plan accounts for its weights.
            plan = decode_memory.plan_decode(self.vae.config, tuple(latents.shape), vae_dtype, self.vae_tiling,
                                             decode_memory.free_memory_bytes(self.device), out_on_device=False)
            if plan is None and chunks and self.device.type == "cpu" and not getattr(self.vae, "collective_decode", False):
                # the decoder's output would be a float32 copy of the whole video on the host: hand it out in
                # time windows of the head instead (same values). Not for a decode split over ranks, which
                # every rank must enter through vae.decode (ltxcli.parallel.vae.ParallelVAE)
                plan = decode_memory.stream_plan(self.vae.config, tuple(latents.shape))
            if into is not None:  # `ltx vae decode` of its latents decodes in the same windows (same rounding)
                into.decode_plan = plan
            if plan is None:
                pixels = self.vae.decode(latents, timestep=t, generator=gen)
                tiles(1, 1)
                yield pixels
            elif chunks:
                for _, pixels in vae_tiling.tiled_decode_chunks(self.vae, latents, timestep=t, generator=gen,
                                                                out_device="cpu", progress=tiles, **plan):
                    yield pixels
            else:
                yield vae_tiling.tiled_decode(self.vae, latents, timestep=t, generator=gen, out_device="cpu",
                                              progress=tiles, **plan)

    # --- prompts ------------------------------------------------------------------------------------------

    def _encode_prompts(self, prompt: str, negative_prompt: str, need_negative: bool, enhanced: bool = False
                        ) -> tuple[Tensor, Tensor]:
        """Embeddings and masks batched as the official loop slices them: ``[negative, positive, positive]``
        (``enhanced``: ``prompt`` is the enhancer's rewrite, as a truncation warning names it)."""
        prompts = [prompt, negative_prompt] if need_negative else [prompt]
        names = ["the enhanced prompt" if enhanced else "the prompt", "the negative prompt"][: len(prompts)]
        embeds, mask = self.text_encoder.encode(prompts, names=names)
        embeds = embeds.to(device=self.device, dtype=self.dtype)
        mask = mask.to(self.device)
        if need_negative:
            pos, neg = embeds[:1], embeds[1:]
            pos_m, neg_m = mask[:1], mask[1:]
        else:
            # The unconditional branch never runs: its slot is only a placeholder (as the official zeros are).
            pos, pos_m = embeds, mask
            neg, neg_m = torch.zeros_like(pos), torch.zeros_like(pos_m)
        return torch.cat([neg, pos, pos]), torch.cat([neg_m, pos_m, pos_m])

    # --- generation -------------------------------------------------------------------------------------------

    def generate(self, prompt: str, *, progress: ProgressFn | None = None, stream: bool = False,
                 **settings: Unpack[RequestFields]) -> GenerationResult:
        """Generate a video: ``run(GenerationRequest(prompt, **settings), progress=..., stream=...)``. ``settings``
        are the fields of :class:`~ltxcli.request.GenerationRequest`: each one left out (or ``None``) takes the
        checkpoint's preset default, but a ``video``'s length, size and frame rate are its own (as in ``ltx v2v``)."""
        return self.run(GenerationRequest(prompt, **settings), progress=progress, stream=stream)

    def resolve(self, request: GenerationRequest, *, window: bool = False) -> ResolvedRequest:
        """``request`` resolved against this pipeline's preset and checked against its models (no model runs).
        ``window``: one of several windows, which a multi-scale model runs as one pass: no upsampler needed."""
        return resolve_request(
            with_source_defaults(request, self.preset), self.preset, has_temporal_upsampler=self.temporal_upsampler is not None,
            max_pos=self.transformer.config.positional_embedding_max_pos, num_layers=self.transformer.config.num_layers,
            has_upsampler=self.upsampler is not None or (window and self.preset.multi_scale))

    @serialised
    def run(self, request: GenerationRequest, *, progress: ProgressFn | None = None,
            stream: bool = False) -> GenerationResult:
        """Generate the video ``request`` describes (see the module docstring for the stages).

        ``progress``, if given, is called as ``progress(stage, done, total)`` (stage: "text", "denoise" (from 0
        at the start of each pass), "decode" (tiles); a writer adds "write", see :func:`ltxcli.runner.write_output`)
        from the host between steps; it never forces a device synchronisation. ``stream=True`` stops before the decode: the result's ``video`` is ``None`` and
        :meth:`GenerationResult.frames` decodes when iterated, handing out uint8 chunks, so that a writer
        (:func:`ltxcli.media.write_video`) never holds the whole video as floats on the host. A progress that
        is not callable or a stream not a bool: TypeError. One generation: a request with ``extend``
        (:func:`ltxcli.extend.run_extension`) or with long-video fields (``duration``, ``window``, ...:
        :func:`ltxcli.long_video.generate`) is refused with a ValueError naming what runs it
        (:func:`ltxcli.run_batch` runs both), and a ``|`` in the prompt is part of the prompt here."""
        check_run_options(progress, stream)  # before any work (an int progress failed in the text stage)
        request.check_single()  # an extension or a long video: the modules that wrap this one run them
        timings: dict[str, float] = {}
        r = self.resolve(request)
        if r.loras is not None:
            self.set_loras(r.loras)
        sizes = r.pass_sizes()
        seed = secrets.randbelow(_SEED_RANGE) if r.seed is None else r.seed
        # every condition read once, before any model work; the v2v input's rate checked, its frames read as encoded
        prepared, source = prepare_conditions(r), conditions.source_chunks(r, self.vae.config, sizes[0])
        r = self._enhance(r, seed, prepared[0].pixels if prepared else None)
        with torch.inference_mode():  # a depth control's model runs (and is released) here, in its own stage
            control = prepare_control(r, device=self.device, dtype=self.dtype, depth_model=self.depth_model,
                                      weights_dir=self.weights_dir)

        need_negative = any(sampling.cfg_active(g) for p in r.passes for g in as_list(p.guidance_scale))
        self.cache_tally = step_cache.Tally()
        with torch.inference_mode():
            t0 = time.perf_counter()
            text, text_mask = self._encode_text(r, need_negative, progress)
            timings["text_encoding_s"] = self._elapsed(t0)

            gen = torch.Generator("cpu").manual_seed(seed)
            t0 = time.perf_counter()
            encoded, init = self._encode_conditions(prepared, source, sizes, control, r.padded[2])
            latents = self._denoise_passes(r, text, text_mask, sizes, encoded, init, gen, progress)
            if r.temporal_upscale and not r.multi_scale:  # after a single pass (multi-scale: between the passes)
                latents = self._temporal_upscale(latents)
            timings["denoise_s"] = self._elapsed(t0)
            result = GenerationResult(video=None, latents=latents.float().cpu(), seed=seed, timings=timings,
                                      settings={**r.settings(), **self.record_facts(r.prompt, r.conditions),
                                                "control": control_record(r.control),
                                                "enhanced_prompt": r.enhanced_prompt})
            result.settings["cache"].update(self.cache_tally.record(r.cache))
            r = r.output()  # the decoded video: twice the frames and frame rate after a temporal upscale
            if stream:
                result._stream = functools.partial(self._stream_frames, latents, r, seed, progress, result)
                return result

            t0 = time.perf_counter()
            if progress:
                progress("decode", 0, 1)
            result.video = self._decode_video(latents, r, seed, progress, result)
            timings["decode_s"] = self._elapsed(t0)
        return result

    def _enhance(self, r: _Request, seed: int, pixels: Tensor | None) -> _Request:
        """The enhancement stage (before the text encoder's): ``r`` with its enhanced prompt where its plan says so
        (:mod:`ltxcli.enhance`); ``pixels``: its first condition's, prepared (image-to-video). The enhancer's models
        are freed before it returns. A windowed video (:mod:`ltxcli.long_video`) calls it with its whole request."""
        from .enhance.rules import run_stage

        return run_stage(r, self.preset, self.enhancer, seed, pixels)

    def compute_record(self) -> dict[str, Any]:
        """The record's ``dtype``, ``fp8`` (float8 matmuls, storage or none) and ``weights_dtype`` (the block linears'
        storage, fp8 / int8 / none): what a rerun with ``--skip-existing`` compares (:func:`ltxcli.resume.matches`)."""
        return {"dtype": str(self.dtype).removeprefix("torch."), "fp8": fp8_mode(self.transformer),
                "weights_dtype": storage_mode(self.transformer)}

    def record_facts(self, prompt: str, conditions: Sequence[Condition]) -> dict[str, Any]:
        """What a saved file's generation record needs besides the sampling settings (``GenerationResult.settings``
        carries both, so :func:`ltxcli.save_video` needs the result only): prompt, model, conditions, compute."""
        return {
            "prompt": prompt, "model": self.name, "conditions": [record_entry(c) for c in conditions],
            **self.compute_record(), "device": str(self.device),
            "offload": self.offload.value, "vae_tiling": self.vae_tiling, "vae_conv": str(self.vae.conv_algorithm),
            "attention": attention_option(self.transformer),
            "cpu_gemm": cpu_gemm_route(self.transformer) if self.device.type == "cpu" else None,
            "loras": [dict(rec) for rec in self.lora_records],
        }

    def _encode_text(self, r: ResolvedRequest, need_negative: bool, progress: Any) -> tuple[Tensor, Tensor]:
        """The text encoder stage (released afterwards when :attr:`free_text_encoder_after_use`)."""
        from .offload import free_text_encoder, is_freed

        if progress:
            progress("text", 0, 1)
        te_model = getattr(self.text_encoder, "model", None)  # None for stand-ins without weights (bench)
        if isinstance(te_model, nn.Module) and is_freed(te_model):
            raise RuntimeError(
                "the text encoder was released after the previous generation (free_text_encoder_after_use); "
                "load the pipeline again"
            )
        with self._stage(te_model):
            text, text_mask = self._encode_prompts(r.text_prompt, r.negative_prompt, need_negative,
                                                   r.enhanced_prompt is not None)
        if self.free_text_encoder_after_use and isinstance(te_model, nn.Module):
            free_text_encoder(te_model)
        if progress:
            progress("text", 1, 1)
        return text, text_mask

    def _encode_conditions(
        self, prepared: Sequence[PreparedCondition], source: Iterator[Tensor] | None, sizes: Sequence[tuple[int, int]],
        control: PreparedControl | None = None, source_frames: int = 0,
    ) -> tuple[list[list[EncodedCondition | EncodedControl]], Tensor | None]:
        """The VAE encoder stage, before the transformer's: every condition and the IC-LoRA control at every
        pass's size (resized there first, as the official pipeline does per pass; a tensor handed in again is not
        re-encoded: :mod:`ltxcli.encode_memo`) and the video-to-video input's ``source_frames`` at the first pass's (widened later)."""
        if not prepared and source is None and control is None:
            return [[] for _ in sizes], None
        with self._stage(self.vae.encoder):
            encoded: list[list[EncodedCondition | EncodedControl]] = [
                [EncodedCondition(condition_latents(self, c, h, w), c.pixels.shape[2], c.frame, c.strength) for c in prepared]
                for h, w in sizes
            ]
            if control is not None:
                for per_pass, (h, w) in zip(encoded, sizes, strict=True):
                    latents = self._vae_encode(resize_frames(control.pixels, h, w)).float()
                    per_pass.append(EncodedControl(latents, control.strength))
            init = None if source is None else self._encode_chunks(source, s := (1, 3, source_frames, *sizes[0]), held=encode_memory.source_hold(self.vae.config, s))
        return encoded, init

    def _denoise_passes(
        self, r: ResolvedRequest, text: Tensor, text_mask: Tensor, sizes: Sequence[tuple[int, int]],
        encoded: Sequence[Sequence[EncodedCondition | EncodedControl]], init: Tensor | None, gen: torch.Generator, progress: Any,
    ) -> Tensor:
        """The transformer stage of each pass (and, between multi-scale passes, the upsampler's) -> normalised
        latents ``[1, C, f, h, w]`` of the last pass."""
        if not r.multi_scale:
            with self._stage(self.transformer, streamed=True):
                return self._denoise(r.passes[0], r, text, text_mask, sizes[0], encoded[0], init, r.noise, gen,
                                     progress)
        with self._stage(self.transformer, streamed=True):
            lat1 = self._denoise(r.passes[0], r, text, text_mask, sizes[0], encoded[0], init, None, gen, progress)
        with self._stage(self.upsampler):
            up = self.vae.normalize(self.upsampler(self.vae.unnormalize(lat1)))
        # the first pass's latents were checked: a NaN here is the upsampler's (or AdaIN's, on a constant channel)
        up = check_latents(adain(up, lat1), "after the spatial upscale between the passes", "the upsampler's " + WEIGHTS_HINT)
        conds = encoded[1]
        if r.temporal_upscale:
            # the second pass refines twice the frames at twice the frame rate; conditions keep their times
            up = self._temporal_upscale(up)
            conds = at_double_rate(conds, self._temporal_upscale)
            r = r.temporal_pass()
        with self._stage(self.transformer, streamed=True):
            return self._denoise(r.passes[1], r, text, text_mask, sizes[1], conds, up, None, gen, progress)

    def _temporal_upscale(self, latents: Tensor) -> Tensor:
        """ComfyUI-LTXVideo's ``LTXVLatentUpsampler`` with the temporal model: un-normalise, upsample (``[1, C, f,
        h, w] -> [1, C, 2f - 1, h, w]``), normalise."""
        assert self.temporal_upsampler is not None
        with self._stage(self.temporal_upsampler):
            return check_latents(self.vae.normalize(self.temporal_upsampler(self.vae.unnormalize(latents))),
                                 "after the temporal upscale", "the temporal upscaler's " + WEIGHTS_HINT)

    def _decode_video(self, latents: Tensor, r: ResolvedRequest, seed: int, progress: Any = None,
                      into: GenerationResult | None = None) -> Tensor:
        """The VAE decoder stage -> float32 ``[F, H, W, 3]`` in [0, 1] at the requested size, CPU."""
        # Official decode noise and VAE noise injection use the global RNG (seeded with the run's seed);
        # here a private generator with the same seed stands in for it.
        aux = torch.Generator("cpu").manual_seed(seed)
        (pixels,) = self._decoded(latents, r.decode_timestep, r.decode_noise_scale,
                                  r.passes[-1].tone_map_compression_ratio, aux, chunks=False, progress=progress,
                                  into=into)
        return to_video(pixels, r).cpu()

    def _stream_frames(
        self, latents: Tensor, r: ResolvedRequest, seed: int, progress: Any, result: GenerationResult,
        chunk_frames: int, quantize: Quantize,
    ) -> Iterator[Tensor]:
        """:meth:`_decode_video` a time window at a time, as uint8 ``[n, H, W, 3]`` CPU chunks of at most
        ``chunk_frames`` frames (:func:`ltxcli.frames.checked_uint8`). The work runs in inference mode between
        the yields (not while the consumer runs); ``result.timings["decode_s"]`` counts it alone."""
        spent = 0.0
        if progress:
            progress("decode", 0, 1)
        aux = torch.Generator("cpu").manual_seed(seed)  # as in _decode_video
        decoded = self._decoded(latents, r.decode_timestep, r.decode_noise_scale,
                                r.passes[-1].tone_map_compression_ratio, aux, chunks=True,
                                progress=progress, into=result)  # runs on next()
        start = 0
        while True:
            t0 = time.perf_counter()
            with torch.inference_mode():
                pixels = next(decoded, None)
            spent += self._elapsed(t0)
            if pixels is None:
                break
            for a in range(0, min(pixels.shape[2], r.num_frames - start), chunk_frames):
                t0 = time.perf_counter()
                with torch.inference_mode():
                    chunk = checked_uint8(to_video(pixels[:, :, a : a + chunk_frames], r, start + a), quantize)
                spent += self._elapsed(t0)
                yield chunk
            start += pixels.shape[2]
        result.timings["decode_s"] = spent

    def _elapsed(self, t0: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # stage boundary only, never inside the loop
        return time.perf_counter() - t0

    # --- one denoising pass ------------------------------------------------------------------------------------

    def _timesteps(self, p: PassSettings, latent_shape: tuple[int, ...]) -> Tensor:
        if p.timesteps is not None:
            ts = sampling.timesteps_from_list(p.timesteps)
        else:
            ts = sampling.make_timesteps(
                self.scheduler, p.num_inference_steps, latent_shape,
                skip_initial=p.skip_initial_inference_steps, skip_final=p.skip_final_inference_steps,
            )
        if self.allowed_inference_steps is not None:
            sampling.check_allowed_timesteps(ts, self.allowed_inference_steps)
        return ts

    def _denoise(
        self,
        p: PassSettings,
        r: ResolvedRequest,
        text: Tensor,
        text_mask: Tensor,
        size: tuple[int, int],
        conds: Sequence[EncodedCondition | EncodedControl],
        init: Tensor | None,
        noise: Tensor | None,
        gen: torch.Generator,
        progress: Any,
    ) -> Tensor:
        """One pass of the official denoising loop; returns normalised latents ``[1, C, f, h, w]``."""
        device = self.device
        channels = self.transformer.config.in_channels
        height, width = size
        num_frames = r.padded[2]
        stochastic, image_cond_noise_scale = r.stochastic_sampling, r.image_cond_noise_scale
        mode = STGMode(r.stg_mode)
        f, h, w = (num_frames - 1) // 8 + 1, height // 32, width // 32
        shape = (1, channels, f, h, w)
        timesteps = self._timesteps(p, shape)
        ts = timesteps.tolist()
        n_steps = len(ts)
        cfg_l = sampling.per_step(p.guidance_scale, timesteps, p.guidance_timesteps)
        stg_l = sampling.per_step(p.stg_scale, timesteps, p.guidance_timesteps)
        resc_l = sampling.per_step(p.rescaling_scale, timesteps, p.guidance_timesteps)
        blocks = () if mode is STGMode.RESIDUAL else p.skip_block_list  # it perturbs no block
        if blocks and isinstance(blocks[0], tuple):
            blocks_l = sampling.per_step(list(blocks), timesteps, p.guidance_timesteps)
        else:
            blocks_l = [tuple(blocks)] * n_steps

        # Initial noise: drawn in the patchified layout [1, f*h*w, C] from the CPU generator (official order).
        given = noise is not None
        if noise is None:
            draw = torch.randn((1, f * h * w, channels), generator=gen, dtype=torch.float32)
            noise = draw.transpose(1, 2).reshape(shape)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {list(shape)}, got {list(noise.shape)}")
        # the conditioning below writes into the latents: a caller's noise tensor must not be that tensor
        latents = noise.to(device=device, dtype=torch.float32, copy=given)
        schedule = timesteps.to(device)
        if init is not None:
            t0 = schedule[0]
            if not ts[0] < 1.0:
                raise ValueError("a second pass (or video-to-video) needs a first timestep below 1")
            latents = t0 * latents + (1 - t0) * init.to(device=device, dtype=torch.float32)

        causal = self.transformer.config.causal_temporal_positioning
        # conditions blended or appended, an IC-LoRA control's tokens in front (the n_extra tokens dropped below)
        tokens, coords, mask, n_extra = place_with_control(conds, latents, gen, causal=causal)
        fractional = coords.to(torch.float32)
        fractional[:, 0] = fractional[:, 0] * (1.0 / r.frame_rate)
        cos, sin = self.transformer.rope_tables(fractional)
        rope = (cos.to(self.dtype), sin.to(self.dtype))

        # Everything random or step-dependent is prepared here, so the loop itself never syncs with the host.
        n_tok = tokens.shape[1]
        # Hard conditioning tokens are re-noised from their initial values every step.
        renoise = mask is not None and image_cond_noise_scale > 0
        # ``tokens`` is only ever replaced, never written in place, so it stays the initial tokens here.
        init_tokens = tokens if renoise else None
        cond_noise: list[Tensor | None] = []
        step_noise: list[Tensor | None] = []
        for _ in range(n_steps):  # drawn in the official order (per step: condition noise, then step noise)
            cond_noise.append(
                torch.randn((1, n_tok, channels), generator=gen, dtype=torch.float32).to(device) if renoise else None
            )
            step_noise.append(
                torch.randn((1, n_tok, channels), generator=gen, dtype=torch.float32).to(device) if stochastic else None
            )
        # float32 on the device, as the official loop's ``t`` tensors (t**2 and t - eps are rounded in float32)
        t_sq = schedule**2
        layers = self.transformer.config.num_layers
        # STG masks [layers, branches] per step, built on the host and copied once (0 = the perturbed branch).
        skip_masks: list[Tensor | None] = []
        built: dict[tuple[int, tuple[int, ...]], Tensor] = {}
        plan: list[tuple[bool, bool, int]] = []  # per step (do_cfg, do_stg, n_conds): the branches it runs
        for i in range(n_steps):
            do_cfg, do_stg = sampling.cfg_active(cfg_l[i]), sampling.stg_active(stg_l[i])
            n_conds = sampling.guidance_branches(cfg_l[i], stg_l[i])  # the one rule the memory plan counts too
            if not (do_stg and blocks_l[i]):
                # STG that skips no block perturbs nothing: its prediction is the conditional one, which the
                # official loop computes a second time and then still rescales by; taken as is, not recomputed
                n_conds -= do_stg
                plan.append((do_cfg, do_stg, n_conds))
                skip_masks.append(None)
                continue
            plan.append((do_cfg, do_stg, n_conds))
            key = (n_conds, tuple(blocks_l[i]))
            if key not in built:
                m = torch.ones((layers, n_conds), dtype=self.dtype)
                m[list(blocks_l[i]), n_conds - 1] = 0
                built[key] = m.to(device)
            skip_masks.append(built[key])
        hard = (mask > 1.0 - HARD_EPS).unsqueeze(-1) if renoise else None
        open_mask = 1.0 - mask if mask is not None else None  # the highest timestep each token may have
        # per step, the tokens whose timestep is still open to the update ([B, N, 1])
        updates = [(schedule[i] - HARD_EPS < open_mask).unsqueeze(-1) for i in range(n_steps)] \
            if open_mask is not None else None

        # the text's cross-attention keys and values, once per slice of the text batch instead of at every step
        # (not under sequential offload: a block's weights reach the device only inside its own call)
        slices = [sampling.text_rows(do_cfg, n_conds) for do_cfg, _, n_conds in plan]
        text_kv = TextKVCache(self.transformer, text, slices, enabled=text_cache.used_with(self.offload.value))
        if progress:
            progress("denoise", 0, n_steps)  # the clock of the steps/s and time-left estimates starts here
        # the step cache (--cache) wraps the transformer for this pass only: every pass starts with a fresh state
        with step_cache.attached(self.transformer, r.cache, r.cache_threshold, n_steps) as cache:
            for i, t in enumerate(ts):
                do_cfg, do_stg, n_conds = plan[i]
                sl = slices[i]

                if renoise:
                    noised = init_tokens + image_cond_noise_scale * cond_noise[i] * t_sq[i]
                    tokens = torch.where(hard, noised, tokens)

                skip_mask = skip_masks[i]

                tau = torch.full((n_conds, 1), t, dtype=torch.float32, device=device)
                if open_mask is not None:
                    tau = torch.minimum(tau, open_mask)  # [n_conds, N]
                # a real copy per branch, as the official ``torch.cat``: a stride-0 (expanded) batch can take another
                # GEMM path and round differently for short sequences
                x_in = torch.cat([tokens.to(self.dtype)] * n_conds)
                v = self.transformer(
                    x_in, text[sl], tau, rope=rope, encoder_attention_mask=text_mask[sl],
                    skip_layer_mask=skip_mask, skip_layer_strategy=mode if skip_mask is not None else None,
                    text_kv=text_kv.at(i),
                )
                chunks = v.chunk(n_conds)
                v_u = chunks[0] if do_cfg else None
                v_c = chunks[1] if do_cfg else chunks[0]
                v_p = (v_c if skip_mask is None else chunks[-1]) if do_stg else None
                v = sampling.guide(v_u, v_c, v_p, cfg=cfg_l[i], stg=stg_l[i], rescale=resc_l[i], cfg_star=p.cfg_star_rescale)

                tau1 = tau[:1]
                tau_next = sampling.next_timesteps(schedule, tau1)
                if stochastic:
                    new = sampling.stochastic_step(tokens, v, tau1, tau_next, step_noise[i])  # all float32
                else:
                    new = sampling.euler_step(tokens, v, tau1, tau_next)
                tokens = torch.where(updates[i], new, tokens) if updates is not None else new
                if progress:
                    progress("denoise", i + 1, n_steps)

        self.cache_tally.add(cache)

        tokens = tokens[:, n_extra:]
        # One host sync per pass, after the loop: a NaN anywhere in the loop propagates to the final latents.
        check_latents(tokens, "after denoising", "float16 overflows LTX-Video; use bfloat16" if self.dtype == torch.float16
                      else "the checkpoint may be broken (run `ltx weights verify`) or the settings extreme")
        # [1, f*h*w, C] -> [1, C, f, h, w]
        return tokens.transpose(1, 2).reshape(shape)


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on GPUs (the official precision), float32 on the CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


__all__ = ["NumericalError", "Pipeline", "default_dtype"]
