"""Generation with the official ``LTXVideoPipeline`` / ``LTXMultiScalePipeline`` semantics.

This module is the only place that orders the stages: prompt -> text embeddings -> noise + conditions ->
denoised latents -> frames. Given the same weights and the same noise it computes what the official
pipelines compute (see tests/test_pipeline.py), with two deliberate differences that make a seed portable:
all randomness comes from CPU generators seeded by the run's seed (never the global RNG, never a CUDA
generator), and conditioning media are encoded to their posterior mode instead of a posterior sample.
"""

from __future__ import annotations

import itertools
import math
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import sampling
from .models.configs import SchedulerConfig
from .models.rope import latent_coords, pixel_coords
from .models.transformer import STGMode
from .models.upcast import compute_dtype
from .presets import NEUTRAL, PassSettings, Preset

# Conditioning tokens whose mask reaches 1 - eps are "hard" (never denoised, only re-noised).
_HARD_EPS = 1e-6
# latent token prefix the official video-extension path turns into extra tokens
_PREFIX_LATENT_FRAMES = 2
_SEED_RANGE = 2**31


class NumericalError(RuntimeError):
    """NaN or Inf appeared in the latents (checked once per pass, after the loop, so the loop never syncs)."""


@dataclass
class Condition:
    """A conditioning image or video placed at pixel frame ``frame`` with ``strength`` in [0, 1].

    ``media``: an image or video path, a PIL image, or a float tensor ``[F, H, W, 3]`` in [0, 1] used as is
    (no blur or compression; only resized to the generation size when it differs).
    """

    media: Any
    frame: int = 0
    strength: float = 1.0


@dataclass
class GenerationResult:
    video: Tensor  # float32 [F, H, W, 3] in [0, 1], CPU
    latents: Tensor  # normalised latents [1, C, f, h, w] after the last step, before decode noise, CPU
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Cond:
    """A condition ready for the latent stage: pixels ``[1, 3, n, h, w]`` in [-1, 1] (any size)."""

    pixels: Tensor
    frame: int
    strength: float


def _condition_record(c: Condition) -> dict[str, Any]:
    """A condition as the generation record lists it (``path`` None for an in-memory picture or tensor)."""
    path = os.fspath(c.media) if isinstance(c.media, (str, os.PathLike)) else None
    return {"path": path, "frame": c.frame, "strength": c.strength}


# --- sizes ------------------------------------------------------------------------------------------------------


def padded_size(height: int, width: int, num_frames: int) -> tuple[int, int, int]:
    """Official padding: sizes up to multiples of 32, frames up to ``8k + 1``."""
    return (
        ((height - 1) // 32 + 1) * 32,
        ((width - 1) // 32 + 1) * 32,
        ((num_frames - 2) // 8 + 1) * 8 + 1,
    )


def _split_pad(total: int) -> tuple[int, int]:
    return total // 2, total - total // 2


def resize_frames(video: Tensor, height: int, width: int) -> Tensor:
    """Bilinear per-frame resize of ``[B, C, F, h, w]`` to ``[B, C, F, height, width]`` (the official
    ``resize_tensor``: ``align_corners=False``); a no-op at the target size."""
    if video.shape[-2:] == (height, width):
        return video
    b, c, f, h, w = video.shape
    # [B, C, F, h, w] -> [B*F, C, h, w]: F.interpolate resizes the last two dims of 4-D input
    frames = video.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    frames = F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False)
    return frames.reshape(b, f, c, height, width).permute(0, 2, 1, 3, 4)


def check_size(height: int, width: int, num_frames: int, frame_rate: float, max_pos: Sequence[int]) -> None:
    """Reject impossible requests before any work; messages name the value, the rule and a valid value."""
    for name, value in (("height", height), ("width", width), ("num_frames", num_frames)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name}={value!r} must be an integer")
        if value < 1:
            raise ValueError(f"{name}={value} must be at least 1")
    if not (frame_rate > 0 and math.isfinite(frame_rate)):
        raise ValueError(f"frame_rate={frame_rate} must be a positive number (e.g. 30)")
    ph, pw, pf = padded_size(height, width, num_frames)
    # Positions are fractions of max_pos (seconds, pixels); the model was trained within that range.
    if ph > max_pos[1]:
        raise ValueError(f"height={height} pads to {ph}, above the model's position range of {max_pos[1]} px")
    if pw > max_pos[2]:
        raise ValueError(f"width={width} pads to {pw}, above the model's position range of {max_pos[2]} px")
    duration = (pf - 1) / frame_rate
    if duration > max_pos[0]:
        longest = int(max_pos[0] * frame_rate) // 8 * 8 + 1
        raise ValueError(
            f"num_frames={num_frames} at frame_rate={frame_rate} lasts {duration:.1f} s, above the model's "
            f"position range of {max_pos[0]} s (at most {longest} frames at this frame rate)"
        )


# --- pipeline ---------------------------------------------------------------------------------------------------


class Pipeline:
    """A loaded model: ``generate``, ``encode`` and ``decode``. Build it with :func:`ltxcli.load_pipeline`."""

    def __init__(
        self,
        transformer: nn.Module,
        vae: nn.Module,
        text_encoder: Any,
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

    @property
    def device(self) -> torch.device:
        return self._device or self.transformer.patchify_proj.weight.device

    def _stage(self, module: Any, *, streamed: bool = False):  # -> context manager
        """The context a stage runs in (:func:`ltxcli.offload.stage` with this pipeline's device and offload)."""
        from .offload import stage

        return stage(module, self.device, self.offload, streamed=streamed)

    @property
    def dtype(self) -> torch.dtype:
        return compute_dtype(self.transformer.patchify_proj)

    # --- VAE helpers ----------------------------------------------------------------------------------

    def encode(self, video: Tensor) -> Tensor:
        """Float ``[F, H, W, 3]`` in [0, 1] -> normalised latents ``[1, C, f, h, w]`` (posterior mode).

        ``F`` must be ``8k + 1`` and ``H``, ``W`` multiples of 32.
        """
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"encode expects a float tensor [F, H, W, 3], got shape {list(video.shape)}")
        f, h, w = video.shape[:3]
        if (f - 1) % 8 or h % 32 or w % 32:
            raise ValueError(f"encode needs 8k+1 frames and sizes divisible by 32, got {f}x{h}x{w}")
        pixels = (video.permute(3, 0, 1, 2)[None] * 2 - 1).to(self.device)  # [1, 3, F, H, W] in [-1, 1]
        with torch.inference_mode():
            return self._encode_pixels(pixels).float().cpu()

    def _encode_pixels(self, pixels: Tensor) -> Tensor:
        vae_dtype = compute_dtype(self.vae.decoder.conv_in.conv)
        with self._stage(self.vae.encoder):
            return self.vae.encode(pixels.to(device=self.device, dtype=vae_dtype))

    def decode(
        self, latents: Tensor, *, timestep: float | None = None, noise_scale: float = 0.0, seed: int | None = None
    ) -> Tensor:
        """Normalised latents ``[1, C, f, h, w]`` -> float ``[F, H, W, 3]`` in [0, 1] (CPU).

        ``timestep`` conditions timestep-aware decoders (default: the preset's decode timestep);
        ``noise_scale`` blends in decode noise drawn from a CPU generator seeded with ``seed``.
        """
        if latents.ndim != 5:
            raise ValueError(f"decode expects latents [1, C, f, h, w], got shape {list(latents.shape)}")
        gen = torch.Generator("cpu").manual_seed(seed if seed is not None else 0)
        t = self.preset.decode_timestep if timestep is None else timestep
        with torch.inference_mode():
            video = self._decode(latents.to(self.device), t, noise_scale, 0.0, gen)
        return video[0].permute(1, 2, 3, 0).cpu()

    def _decode(
        self, latents: Tensor, timestep: float, noise_scale: float, tone_map: float, gen: torch.Generator
    ) -> Tensor:
        """Decode noise, tone mapping and the VAE, as the official pipeline orders them -> float32 [B, 3, F, H, W]
        in [0, 1]."""
        t: float | None = None
        if self.vae.timestep_conditioning:
            if noise_scale:
                # The official ``randn_like`` fills the latents' own (non-contiguous, channels-last) layout, which
                # the CPU kernel draws element by element: the same layout gives the same values for one seed.
                noise = torch.empty_strided(latents.shape, latents.stride(), dtype=latents.dtype)
                noise = noise.normal_(generator=gen).to(latents.device)
                latents = latents * (1 - noise_scale) + noise * noise_scale
            t = timestep
        latents = sampling.tone_map(latents, tone_map)
        from .vae_tiling import free_memory_bytes, plan_decode, tiled_decode

        vae_dtype = compute_dtype(self.vae.decoder.conv_in.conv)
        with self._stage(self.vae.decoder, streamed=True):
            # Free memory is measured with the decoder resident, so the plan accounts for its weights.
            plan = plan_decode(self.vae.config, tuple(latents.shape), vae_dtype, self.vae_tiling,
                               free_memory_bytes(self.device), out_on_device=False)
            if plan is None:
                video = self.vae.decode(latents, timestep=t, generator=gen)
            else:
                video = tiled_decode(self.vae, latents, timestep=t, generator=gen, out_device="cpu", **plan)
        # The decoder's output is a fresh tensor (``float()`` copies it or returns it as is): scale it in place.
        video = video.float()
        return video.div_(2).add_(0.5).clamp_(0, 1)

    # --- prompts ------------------------------------------------------------------------------------------

    def _encode_prompts(self, prompt: str, negative_prompt: str, need_negative: bool) -> tuple[Tensor, Tensor]:
        """Embeddings and masks batched as the official loop slices them: ``[negative, positive, positive]``."""
        prompts = [prompt, negative_prompt] if need_negative else [prompt]
        embeds, mask = self.text_encoder.encode(prompts)
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

    def generate(
        self,
        prompt: str,
        *,
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        frame_rate: float | None = None,
        steps: int | None = None,
        timesteps: Sequence[float] | None = None,
        guidance_scale: float | None = None,
        stg_scale: float | None = None,
        stg_blocks: Sequence[int] | None = None,
        rescale_scale: float | None = None,
        conditions: Sequence[Condition] = (),
        seed: int | None = None,
        noise: Tensor | None = None,
        decode_timestep: float | None = None,
        decode_noise_scale: float | None = None,
        image_cond_noise_scale: float | None = None,
        stochastic_sampling: bool | None = None,
        cfg_star_rescale: bool | None = None,
        tone_map_compression_ratio: float | None = None,
        downscale_factor: float | None = None,
        first_pass: dict[str, Any] | None = None,
        second_pass: dict[str, Any] | None = None,
        stg_mode: str | None = None,
        video: Any = None,
        denoise_strength: float = 0.5,
        progress: Any = None,
    ) -> GenerationResult:
        """Generate a video. Every ``None`` takes the loaded checkpoint's preset default.

        ``video`` (a path, or a float tensor ``[F, H, W, 3]`` in [0, 1] used as is) turns this into
        video-to-video: the video is encoded, noised to the first kept timestep and denoised over the last
        ``denoise_strength`` fraction of the schedule (official ``input_media_path`` with skipped initial steps).

        ``progress``, if given, is called as ``progress(stage, done, total)`` (stage: "text", "denoise",
        "decode") from the host between steps; it never forces a device synchronisation.
        """
        timings: dict[str, float] = {}
        preset = self.preset
        height = preset.height if height is None else height
        width = preset.width if width is None else width
        num_frames = preset.num_frames if num_frames is None else num_frames
        frame_rate = preset.frame_rate if frame_rate is None else float(frame_rate)
        negative_prompt = preset.negative_prompt if negative_prompt is None else negative_prompt
        if not isinstance(prompt, str):
            raise ValueError("prompt must be a string")
        check_size(height, width, num_frames, frame_rate, self.transformer.config.positional_embedding_max_pos)

        # Per-pass settings: preset passes, then explicit per-pass dicts, then explicit scalar arguments.
        multi = first_pass is not None or second_pass is not None or preset.multi_scale
        scalar_overrides: dict[str, Any] = {}
        if steps is not None:
            scalar_overrides["num_inference_steps"] = steps
            scalar_overrides["timesteps"] = None
        if timesteps is not None:
            scalar_overrides["timesteps"] = tuple(float(t) for t in timesteps)
        for key, value in (
            ("guidance_scale", guidance_scale), ("stg_scale", stg_scale), ("rescaling_scale", rescale_scale),
            ("cfg_star_rescale", cfg_star_rescale),
        ):
            if value is not None:
                scalar_overrides[key] = value
        if stg_blocks is not None:
            scalar_overrides["skip_block_list"] = tuple(int(b) for b in stg_blocks)
        if guidance_scale is not None or stg_scale is not None or rescale_scale is not None:
            scalar_overrides["guidance_timesteps"] = None  # a scalar replaces a per-interval schedule
            base_blocks = preset.passes[0].skip_block_list
            if stg_blocks is None and any(isinstance(b, tuple) for b in base_blocks):
                scalar_overrides["skip_block_list"] = self._flat_blocks(base_blocks)
        if tone_map_compression_ratio is not None:
            scalar_overrides["tone_map_compression_ratio"] = tone_map_compression_ratio
        if multi:
            base_first, base_second = (preset.passes if preset.multi_scale else (preset.passes[0], preset.passes[0]))
            first = base_first.updated(first_pass or {})
            second = base_second.updated(second_pass or {})
            # Explicit scalar arguments apply to both passes (timesteps/steps only to the first).
            first = first.updated(scalar_overrides)
            second = second.updated({k: v for k, v in scalar_overrides.items()
                                     if k not in ("num_inference_steps", "timesteps")})
            passes = [first, second]
            if self.upsampler is None:
                raise ValueError(
                    "multi-scale generation needs a latent upsampler: pass upsampler= to load_pipeline "
                    "(e.g. ltxv-spatial-upscaler-0.9.8)"
                )
            factor = preset.downscale_factor if downscale_factor is None else downscale_factor
            if factor is None:
                factor = 0.6666666
            if not 0 < factor <= 1:
                raise ValueError(f"downscale_factor={factor} must be in (0, 1]")
        else:
            passes = [preset.passes[0].updated(scalar_overrides)]
            factor = 1.0
        for p in passes:
            self._validate_pass(p)

        decode_timestep = preset.decode_timestep if decode_timestep is None else decode_timestep
        decode_noise_scale = preset.decode_noise_scale if decode_noise_scale is None else decode_noise_scale
        image_cond_noise_scale = (
            preset.image_cond_noise_scale if image_cond_noise_scale is None else image_cond_noise_scale
        )
        stochastic = preset.stochastic_sampling if stochastic_sampling is None else stochastic_sampling
        mode = STGMode(stg_mode or preset.stg_mode)
        for name, value in (("decode_noise_scale", decode_noise_scale), ("image_cond_noise_scale", image_cond_noise_scale)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name}={value} must be in [0, 1]")
        if decode_timestep < 0:
            raise ValueError(f"decode_timestep={decode_timestep} must be >= 0")

        ph, pw, pf = padded_size(height, width, num_frames)
        pad_left, pad_right = _split_pad(pw - width)
        pad_top, pad_bottom = _split_pad(ph - height)
        for c in conditions:
            if not 0 <= c.strength <= 1:
                raise ValueError(f"condition strength {c.strength} must be in [0, 1]")
            if not 0 <= c.frame < num_frames:
                raise ValueError(f"condition frame {c.frame} must be in [0, {num_frames - 1}]")

        if seed is None:
            seed = secrets.randbelow(_SEED_RANGE)
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed={seed!r} must be a non-negative integer")
        if noise is not None and multi:
            raise ValueError("noise= replaces the single-pass initial draw; it is not supported with multi-scale")
        source = None
        if video is not None:
            if multi:
                raise ValueError("video-to-video is not supported yet with multi-scale models (use a base model)")
            if not 0 < denoise_strength < 1:
                raise ValueError(f"denoise_strength={denoise_strength} must be in (0, 1), e.g. 0.5")
            passes = [self._v2v_pass(passes[0], denoise_strength)]
            source = self._prepare_video(video, ph, pw, pf, (pad_left, pad_right, pad_top, pad_bottom), height, width)

        prepared = [
            self._prepare_condition(c, height, width, num_frames, (pad_left, pad_right, pad_top, pad_bottom))
            for c in conditions
        ]

        need_negative = any(sampling.cfg_active(g) for p in passes for g in self._as_list(p.guidance_scale))
        with torch.inference_mode():
            t0 = time.perf_counter()
            if progress:
                progress("text", 0, 1)
            from .offload import free_text_encoder, is_freed

            te_model = getattr(self.text_encoder, "model", None)  # None for stand-ins without weights (bench)
            if isinstance(te_model, nn.Module) and is_freed(te_model):
                raise RuntimeError(
                    "the text encoder was released after the previous generation (free_text_encoder_after_use); "
                    "load the pipeline again"
                )
            with self._stage(te_model):
                text, text_mask = self._encode_prompts(prompt, negative_prompt, need_negative)
            if self.free_text_encoder_after_use and isinstance(te_model, nn.Module):
                free_text_encoder(te_model)
            if progress:
                progress("text", 1, 1)
            timings["text_encoding_s"] = self._elapsed(t0)

            gen = torch.Generator("cpu").manual_seed(seed)
            t0 = time.perf_counter()
            if multi:
                h1 = int(ph * factor)
                h1 -= h1 % 32
                w1 = int(pw * factor)
                w1 -= w1 % 32
                if h1 < 32 or w1 < 32:
                    raise ValueError(f"downscale_factor={factor} leaves no first-pass size for {ph}x{pw}")
                with self._stage(self.transformer, streamed=True):
                    lat1 = self._denoise(passes[0], text, text_mask, h1, w1, pf, frame_rate, prepared, None, None,
                                         gen, stochastic, image_cond_noise_scale, mode, progress)
                with self._stage(self.upsampler):
                    up = self.vae.normalize(self.upsampler(self.vae.unnormalize(lat1)))
                from .models.upsampler import adain

                up = adain(up, lat1)
                with self._stage(self.transformer, streamed=True):
                    latents = self._denoise(passes[1], text, text_mask, 2 * h1, 2 * w1, pf, frame_rate, prepared,
                                            up, None, gen, stochastic, image_cond_noise_scale, mode, progress)
            else:
                init = self._encode_pixels(source) if source is not None else None  # widened in _denoise
                with self._stage(self.transformer, streamed=True):
                    latents = self._denoise(passes[0], text, text_mask, ph, pw, pf, frame_rate, prepared, init,
                                            noise, gen, stochastic, image_cond_noise_scale, mode, progress)
            timings["denoise_s"] = self._elapsed(t0)

            t0 = time.perf_counter()
            if progress:
                progress("decode", 0, 1)
            # Official decode noise and VAE noise injection use the global RNG (seeded with the run's seed);
            # here a private generator with the same seed stands in for it.
            aux = torch.Generator("cpu").manual_seed(seed)
            video = self._decode(latents, decode_timestep, decode_noise_scale, passes[-1].tone_map_compression_ratio, aux)
            if multi:
                video = resize_frames(video, ph, pw)  # the second pass ran above the padded target size
            video = video[:, :, :num_frames, pad_top : ph - pad_bottom, pad_left : pw - pad_right]
            out = video[0].permute(1, 2, 3, 0).cpu()
            if progress:
                progress("decode", 1, 1)
            timings["decode_s"] = self._elapsed(t0)

        settings = {
            "height": height, "width": width, "num_frames": num_frames, "frame_rate": frame_rate,
            "negative_prompt": negative_prompt, "passes": [p.__dict__ for p in passes],
            "multi_scale": multi, "downscale_factor": factor if multi else None,
            "decode_timestep": decode_timestep, "decode_noise_scale": decode_noise_scale,
            "image_cond_noise_scale": image_cond_noise_scale, "stochastic_sampling": stochastic,
            "stg_mode": mode.value, "preset": preset.name,
            **self.record_facts(prompt, conditions),
        }
        return GenerationResult(video=out, latents=latents.float().cpu(), seed=seed, timings=timings, settings=settings)

    def record_facts(self, prompt: str, conditions: Sequence[Condition]) -> dict[str, Any]:
        """What a saved file's generation record needs besides the sampling settings (``GenerationResult.settings``
        carries both, so :func:`ltxcli.save_video` needs the result only): prompt, model, conditions, compute."""
        return {
            "prompt": prompt, "model": self.name, "conditions": [_condition_record(c) for c in conditions],
            "dtype": str(self.dtype).removeprefix("torch."), "device": str(self.device),
            "offload": self.offload.value, "vae_tiling": self.vae_tiling, "vae_conv": str(self.vae.conv_algorithm),
        }

    def _elapsed(self, t0: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # stage boundary only, never inside the loop
        return time.perf_counter() - t0

    @staticmethod
    def _flat_blocks(blocks: Any) -> tuple[int, ...]:
        """A per-interval block schedule collapsed to the blocks of its last (lowest-noise) interval."""
        return tuple(blocks[-1]) if blocks and isinstance(blocks[0], tuple) else tuple(blocks)

    @staticmethod
    def _as_list(value: Any) -> list[float]:
        return list(value) if isinstance(value, (tuple, list)) else [value]

    def _validate_pass(self, p: PassSettings) -> None:
        if p.timesteps is None:
            if p.num_inference_steps is None or p.num_inference_steps < 1:
                raise ValueError(f"steps={p.num_inference_steps} must be at least 1")
        else:
            ts = list(p.timesteps)
            if not ts or any(not (0 < t <= 1) for t in ts) or any(a <= b for a, b in itertools.pairwise(ts)):
                raise ValueError(f"timesteps={ts} must be a non-empty strictly decreasing list in (0, 1]")
        for name in ("guidance_scale", "stg_scale", "rescaling_scale"):
            for v in self._as_list(getattr(p, name)):
                if not math.isfinite(v) or v < 0:
                    raise ValueError(f"{name}={v} must be a finite number >= 0")
        layers = self.transformer.config.num_layers
        blocks = p.skip_block_list
        flat = [b for group in blocks for b in group] if blocks and isinstance(blocks[0], tuple) else list(blocks)
        bad = [b for b in flat if not 0 <= b < layers]
        if bad and any(v > 0 for v in self._as_list(p.stg_scale)):
            raise ValueError(f"stg blocks {bad} do not exist: this transformer has blocks 0-{layers - 1}")

    # --- video-to-video ---------------------------------------------------------------------------------------

    @staticmethod
    def _v2v_pass(p: PassSettings, strength: float) -> PassSettings:
        """Keep the last ``strength`` of the schedule: explicit timesteps at or below it, else skipped steps."""
        if p.timesteps is not None:
            kept = tuple(t for t in p.timesteps if t <= strength + _HARD_EPS)
            if not kept:
                raise ValueError(
                    f"denoise_strength={strength} is below every timestep of this schedule "
                    f"({', '.join(map(str, p.timesteps))}): use at least {min(p.timesteps)}"
                )
            return p.updated({"timesteps": kept})
        steps = p.num_inference_steps
        keep = max(1, round(steps * strength))
        return p.updated({"skip_initial_inference_steps": max(p.skip_initial_inference_steps, steps - keep)})

    def _prepare_video(
        self, video: Any, ph: int, pw: int, pf: int, padding: tuple[int, int, int, int], height: int, width: int
    ) -> Tensor:
        """Official ``load_media_file`` for the v2v input: ``pf`` frames, cropped, resized, blurred, CRF, padded."""
        from . import media as media_io

        if isinstance(video, Tensor):
            frames = media_io.load_media(video)
            if frames.shape[0] < pf:
                raise ValueError(f"the input video has {frames.shape[0]} frames; video-to-video needs {pf}")
            pixels = frames[:pf].permute(3, 0, 1, 2)[None].float() * 2 - 1  # [1, 3, F, h, w]
            return resize_frames(pixels, ph, pw)
        frames = media_io.load_media(video, max_frames=pf)
        if frames.shape[0] < pf:
            raise ValueError(f"{video}: {frames.shape[0]} frames; video-to-video at this length needs {pf}")
        pixels = media_io.preprocess_condition_frames(frames, height, width, just_crop=False)
        pixels = F.pad(pixels, padding)
        return resize_frames(pixels, ph, pw)  # odd target sizes lose a row/column in the H.264 step

    # --- conditions ---------------------------------------------------------------------------------------------

    def _prepare_condition(
        self, c: Condition, height: int, width: int, num_frames: int, padding: tuple[int, int, int, int]
    ) -> _Cond:
        """Official ``inference.py`` media handling: trim, crop to the aspect ratio, blur, CRF 29, pad."""
        from . import media as media_io

        if isinstance(c.media, Tensor):
            frames = c.media
            if frames.ndim != 4 or frames.shape[-1] != 3 or not frames.is_floating_point():
                raise ValueError(f"a condition tensor must be float [F, H, W, 3] in [0, 1], got {list(frames.shape)}")
            keep = self._trim(frames.shape[0], c.frame, num_frames)
            pixels = frames[:keep].permute(3, 0, 1, 2)[None].float() * 2 - 1  # [1, 3, n, h, w]
        else:
            frames = media_io.load_media(c.media)
            keep = self._trim(frames.shape[0], c.frame, num_frames)
            pixels = media_io.preprocess_condition_frames(frames[:keep], height, width, just_crop=True)
            # inference.py pads the (cropped, native-size) media with zeros by the generation's padding
            pixels = F.pad(pixels, padding)
        if c.frame > 0 and pixels.shape[2] > 1 and c.frame % 8:
            raise ValueError(f"a video condition must start at a multiple of 8 frames, not at frame {c.frame}")
        return _Cond(pixels, c.frame, float(c.strength))

    @staticmethod
    def _trim(n: int, start: int, num_frames: int) -> int:
        """Official ``trim_conditioning_sequence``: at most the frames that fit, rounded down to 8k + 1."""
        n = min(n, num_frames - start)
        if n < 1:
            raise ValueError(f"a condition at frame {start} has no frames inside the {num_frames}-frame video")
        return (n - 1) // 8 * 8 + 1

    def _condition_tokens(
        self, conds: Sequence[_Cond], latents: Tensor, height: int, width: int, gen: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor | None, int]:
        """Official ``prepare_conditioning``: returns tokens ``[1, N, C]``, pixel coords ``[1, 3, N]``, mask, #extra."""
        causal = self.transformer.config.causal_temporal_positioning
        f, h, w = latents.shape[2:]
        mask = torch.zeros((1, f, h, w), dtype=torch.float32, device=latents.device) if conds else None
        extra_tokens: list[Tensor] = []
        extra_coords: list[Tensor] = []
        extra_mask: list[Tensor] = []
        for cond in conds:
            pixels = resize_frames(cond.pixels, height, width)
            lat = self._encode_pixels(pixels).to(latents.dtype)  # [1, C, f_l, h, w]
            f_l = lat.shape[2]
            if cond.frame == 0:
                latents[:, :, :f_l] = torch.lerp(latents[:, :, :f_l], lat, cond.strength)
                mask[:, :f_l] = cond.strength
                continue
            if pixels.shape[2] > 1:
                # A later video segment: its body goes in place, its first latents become extra tokens.
                if f_l > _PREFIX_LATENT_FRAMES:
                    start = cond.frame // 8 + _PREFIX_LATENT_FRAMES
                    end = start + f_l - _PREFIX_LATENT_FRAMES
                    latents[:, :, start:end] = torch.lerp(latents[:, :, start:end], lat[:, :, _PREFIX_LATENT_FRAMES:],
                                                          cond.strength)
                    mask[:, start:end] = cond.strength
                lat = lat[:, :, :_PREFIX_LATENT_FRAMES]
            noise = torch.randn(lat.shape, generator=gen, dtype=torch.float32).to(lat.device, lat.dtype)
            lat = torch.lerp(noise, lat, cond.strength)
            fe, he, we = lat.shape[2:]
            # [1, C, f, h, w] -> [1, f*h*w, C]
            extra_tokens.append(lat.flatten(2).transpose(1, 2))
            coords = pixel_coords(latent_coords(fe, he, we, device=lat.device), causal_fix=causal)[None]
            coords[:, 0] += cond.frame
            extra_coords.append(coords)
            extra_mask.append(torch.full((1, fe * he * we), cond.strength, dtype=torch.float32, device=lat.device))

        tokens = latents.flatten(2).transpose(1, 2)  # [1, C, f, h, w] -> [1, f*h*w, C]
        coords = pixel_coords(latent_coords(f, h, w, device=latents.device), causal_fix=causal)[None]
        flat_mask = mask.flatten(1) if mask is not None else None
        if extra_tokens:
            tokens = torch.cat([*extra_tokens, tokens], dim=1)
            coords = torch.cat([*extra_coords, coords], dim=2)
            flat_mask = torch.cat([*extra_mask, flat_mask], dim=1)
        return tokens, coords, flat_mask, sum(t.shape[1] for t in extra_tokens)

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
        text: Tensor,
        text_mask: Tensor,
        height: int,
        width: int,
        num_frames: int,
        frame_rate: float,
        conds: Sequence[_Cond],
        init: Tensor | None,
        noise: Tensor | None,
        gen: torch.Generator,
        stochastic: bool,
        image_cond_noise_scale: float,
        mode: STGMode,
        progress: Any,
    ) -> Tensor:
        """One pass of the official denoising loop; returns normalised latents ``[1, C, f, h, w]``."""
        device = self.device
        channels = self.transformer.config.in_channels
        f, h, w = (num_frames - 1) // 8 + 1, height // 32, width // 32
        shape = (1, channels, f, h, w)
        timesteps = self._timesteps(p, shape)
        ts = timesteps.tolist()
        n_steps = len(ts)
        cfg_l = sampling.per_step(p.guidance_scale, timesteps, p.guidance_timesteps)
        stg_l = sampling.per_step(p.stg_scale, timesteps, p.guidance_timesteps)
        resc_l = sampling.per_step(p.rescaling_scale, timesteps, p.guidance_timesteps)
        blocks = p.skip_block_list
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

        tokens, coords, mask, n_extra = self._condition_tokens(conds, latents, height, width, gen)
        fractional = coords.to(torch.float32)
        fractional[:, 0] = fractional[:, 0] * (1.0 / frame_rate)
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
            n_conds = 1 + do_cfg + do_stg
            plan.append((do_cfg, do_stg, n_conds))
            if not (do_stg and blocks_l[i]):
                skip_masks.append(None)
                continue
            key = (n_conds, tuple(blocks_l[i]))
            if key not in built:
                m = torch.ones((layers, n_conds), dtype=self.dtype)
                m[list(blocks_l[i]), n_conds - 1] = 0
                built[key] = m.to(device)
            skip_masks.append(built[key])
        hard = (mask > 1.0 - _HARD_EPS).unsqueeze(-1) if renoise else None
        open_mask = 1.0 - mask if mask is not None else None  # the highest timestep each token may have
        # per step, the tokens whose timestep is still open to the update ([B, N, 1])
        updates = [(schedule[i] - _HARD_EPS < open_mask).unsqueeze(-1) for i in range(n_steps)] \
            if open_mask is not None else None

        for i, t in enumerate(ts):
            do_cfg, do_stg, n_conds = plan[i]
            # text batch is [negative, positive, positive]; pick the branches this step runs
            lo = 0 if do_cfg else 1
            sl = slice(lo, lo + n_conds)

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
            )
            chunks = v.chunk(n_conds)
            v_u = chunks[0] if do_cfg else None
            v_c = chunks[1] if do_cfg else chunks[0]
            v_p = chunks[-1] if do_stg else None
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

        tokens = tokens[:, n_extra:]
        # One host sync per pass, after the loop: a NaN anywhere in the loop propagates to the final latents.
        if not bool(torch.isfinite(tokens).all()):
            hint = (
                "float16 overflows LTX-Video; use bfloat16" if self.dtype == torch.float16
                else "the checkpoint may be broken (run `ltx weights verify`) or the settings extreme"
            )
            raise NumericalError(f"the latents contain NaN or Inf after denoising: {hint}")
        # [1, f*h*w, C] -> [1, C, f, h, w]
        return tokens.transpose(1, 2).reshape(shape)


def _device_default() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on GPUs (the official precision), float32 on the CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


__all__ = [
    "Condition", "GenerationResult", "NumericalError", "Pipeline", "check_size", "default_dtype", "padded_size",
]
