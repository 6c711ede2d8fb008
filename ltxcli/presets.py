"""One preset per released checkpoint: the official defaults of its pipeline config.

Values are copied from the official ``configs/*.yaml`` of Lightricks/LTX-Video (commit 5260738, October 2025;
the 13B 0.9.7 configs from the commit before they were removed, 02844ce) and from the defaults of the
official ``ltx_video/inference.py`` (size, frame rate, negative prompt, conditioning noise), which every
config is run with. The official configs all use ``sampler: from_checkpoint``: the schedule comes from the
scheduler config embedded in the checkpoint, so presets give step counts, not schedules, except where the
yaml lists explicit timesteps.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

# official ltx_video/inference.py InferenceConfig defaults
DEFAULT_HEIGHT = 704
DEFAULT_WIDTH = 1216
DEFAULT_NUM_FRAMES = 121
DEFAULT_FRAME_RATE = 30
DEFAULT_NEGATIVE_PROMPT = "worst quality, inconsistent motion, blurry, jittery, distorted"
DEFAULT_IMAGE_COND_NOISE_SCALE = 0.15
# Multi-scale: the first pass runs at this fraction of the (padded) size, the official configs' value.
DEFAULT_DOWNSCALE_FACTOR = 0.6666666


def multi_scale_sizes(height: int, width: int, factor: float | None) -> tuple[tuple[int, int], tuple[int, int]]:
    """The (height, width) of the two passes of a multi-scale run at padded size ``height x width``: the first
    at ``factor`` (``None``: :data:`DEFAULT_DOWNSCALE_FACTOR`) rounded down to multiples of 32, the second at
    twice that (the upsampler doubles it); the decode runs at the second. ValueError when nothing is left."""
    factor = DEFAULT_DOWNSCALE_FACTOR if factor is None else factor
    h1 = int(height * factor)
    h1 -= h1 % 32
    w1 = int(width * factor)
    w1 -= w1 % 32
    if h1 < 32 or w1 < 32:
        raise ValueError(f"downscale_factor={factor} leaves no first-pass size for {height}x{width}")
    return (h1, w1), (2 * h1, 2 * w1)

# A guidance value is a scalar for every step or a list indexed through ``guidance_timesteps``.
Schedule = float | tuple[float, ...]
BlockList = tuple[int, ...] | tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class PassSettings:
    """The sampling settings of one denoising pass (the base pipeline has exactly one)."""

    num_inference_steps: int | None = None
    timesteps: tuple[float, ...] | None = None
    skip_initial_inference_steps: int = 0
    skip_final_inference_steps: int = 0
    guidance_scale: Schedule = 1.0
    stg_scale: Schedule = 0.0
    rescaling_scale: Schedule = 1.0
    skip_block_list: BlockList = ()
    guidance_timesteps: tuple[float, ...] | None = None
    cfg_star_rescale: bool = False
    tone_map_compression_ratio: float = 0.0

    def updated(self, overrides: dict[str, Any]) -> PassSettings:
        """A copy with ``overrides`` (official per-pass yaml keys) applied; unknown keys are an error."""
        unknown = set(overrides) - set(self.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown per-pass setting(s): {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(self.__dataclass_fields__))})"
            )
        clean = {k: _freeze(v) for k, v in overrides.items()}
        if "timesteps" in clean and clean["timesteps"] is not None:
            clean.setdefault("num_inference_steps", None)
        return replace(self, **clean)


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class Preset:
    """Official defaults for one released checkpoint."""

    name: str
    checkpoint: str
    pipeline_type: str  # "base" | "multi-scale"
    passes: tuple[PassSettings, ...]  # one for "base", (first, second) for "multi-scale"
    stochastic_sampling: bool = False
    stg_mode: str = "attention_values"
    decode_timestep: float = 0.05
    decode_noise_scale: float = 0.025
    precision: str = "bfloat16"
    downscale_factor: float | None = None
    upsampler: str | None = None
    height: int = DEFAULT_HEIGHT
    width: int = DEFAULT_WIDTH
    num_frames: int = DEFAULT_NUM_FRAMES
    frame_rate: float = DEFAULT_FRAME_RATE
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    image_cond_noise_scale: float = DEFAULT_IMAGE_COND_NOISE_SCALE
    text_encoder: str = "t5-xxl"
    # Prompt enhancement (official ``prompt_enhancement_words_threshold``, 120 in every config, and the two models
    # every config names; weights.toml entries, or "tiny" for the built-in random ones): ltxcli.enhance.
    prompt_enhancement_words_threshold: int = 120
    prompt_enhancer_llm: str = "llama-3.2-3b-instruct"
    prompt_enhancer_captioner: str = "florence-2-large-promptgen-v2.0"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def multi_scale(self) -> bool:
        return self.pipeline_type == "multi-scale"


# 2B "base" configs (0.9, 0.9.1, 0.9.5, 0.9.6-dev share them).
_BASE_2B = PassSettings(
    num_inference_steps=40, guidance_scale=3.0, stg_scale=1.0, rescaling_scale=0.7, skip_block_list=(19,)
)
# 0.9.6 distilled: 8 steps from the checkpoint's scheduler, no guidance, stochastic sampling.
_DISTILLED_096 = PassSettings(num_inference_steps=8, guidance_scale=1.0, stg_scale=0.0, rescaling_scale=1.0)
# Distilled multi-scale (2B 0.9.8, 13B 0.9.7 / 0.9.8): explicit timesteps per pass.
_DISTILLED_FIRST = PassSettings(
    timesteps=(1.0000, 0.9937, 0.9875, 0.9812, 0.9750, 0.9094, 0.7250),
    guidance_scale=1.0, stg_scale=0.0, rescaling_scale=1.0, skip_block_list=(42,),
)
_DISTILLED_SECOND = PassSettings(
    timesteps=(0.9094, 0.7250, 0.4219), guidance_scale=1.0, stg_scale=0.0, rescaling_scale=1.0, skip_block_list=(42,),
)
# 13B dev multi-scale: per-step guidance schedules.
_DEV13_FIRST = PassSettings(
    num_inference_steps=30, skip_final_inference_steps=3,
    guidance_scale=(1, 1, 6, 8, 6, 1, 1), stg_scale=(0, 0, 4, 4, 4, 2, 1),
    rescaling_scale=(1, 1, 0.5, 0.5, 1, 1, 1),
    guidance_timesteps=(1.0, 0.996, 0.9933, 0.9850, 0.9767, 0.9008, 0.6180),
    skip_block_list=((), (11, 25, 35, 39), (22, 35, 39), (28,), (28,), (28,), (28,)),
    cfg_star_rescale=True,
)
_DEV13_SECOND = PassSettings(
    num_inference_steps=30, skip_initial_inference_steps=17,
    guidance_scale=(1,), stg_scale=(1,), rescaling_scale=(1,), guidance_timesteps=(1.0,),
    skip_block_list=(27,), cfg_star_rescale=True,
)


def _multi(name: str, checkpoint: str, first: PassSettings, second: PassSettings, upsampler: str, **kw: Any) -> Preset:
    return Preset(
        name=name, checkpoint=checkpoint, pipeline_type="multi-scale", passes=(first, second),
        downscale_factor=DEFAULT_DOWNSCALE_FACTOR, upsampler=upsampler, **kw,
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("ltxv-2b-0.9", "ltx-video-2b-v0.9.safetensors", "base", (_BASE_2B,)),
        Preset("ltxv-2b-0.9.1", "ltx-video-2b-v0.9.1.safetensors", "base", (_BASE_2B,)),
        Preset("ltxv-2b-0.9.5", "ltx-video-2b-v0.9.5.safetensors", "base", (_BASE_2B,)),
        Preset("ltxv-2b-0.9.6-dev", "ltxv-2b-0.9.6-dev-04-25.safetensors", "base", (_BASE_2B,)),
        Preset(
            "ltxv-2b-0.9.6-distilled", "ltxv-2b-0.9.6-distilled-04-25.safetensors", "base", (_DISTILLED_096,),
            stochastic_sampling=True,
        ),
        _multi("ltxv-2b-0.9.8-distilled", "ltxv-2b-0.9.8-distilled.safetensors",
               _DISTILLED_FIRST, _DISTILLED_SECOND, "ltxv-spatial-upscaler-0.9.8"),
        _multi("ltxv-2b-0.9.8-distilled-fp8", "ltxv-2b-0.9.8-distilled-fp8.safetensors",
               _DISTILLED_FIRST, _DISTILLED_SECOND, "ltxv-spatial-upscaler-0.9.8", precision="float8_e4m3fn"),
        _multi("ltxv-13b-0.9.7-dev", "ltxv-13b-0.9.7-dev.safetensors",
               _DEV13_FIRST, _DEV13_SECOND, "ltxv-spatial-upscaler-0.9.7"),
        _multi("ltxv-13b-0.9.7-dev-fp8", "ltxv-13b-0.9.7-dev-fp8.safetensors",
               _DEV13_FIRST, _DEV13_SECOND, "ltxv-spatial-upscaler-0.9.7", precision="float8_e4m3fn"),
        _multi("ltxv-13b-0.9.7-distilled", "ltxv-13b-0.9.7-distilled.safetensors",
               _DISTILLED_FIRST, _DISTILLED_SECOND, "ltxv-spatial-upscaler-0.9.7"),
        _multi("ltxv-13b-0.9.7-distilled-fp8", "ltxv-13b-0.9.7-distilled-fp8.safetensors",
               _DISTILLED_FIRST, _DISTILLED_SECOND, "ltxv-spatial-upscaler-0.9.7", precision="float8_e4m3fn"),
        _multi("ltxv-13b-0.9.8-dev", "ltxv-13b-0.9.8-dev.safetensors",
               _DEV13_FIRST, _DEV13_SECOND, "ltxv-spatial-upscaler-0.9.8"),
        _multi("ltxv-13b-0.9.8-dev-fp8", "ltxv-13b-0.9.8-dev-fp8.safetensors",
               _DEV13_FIRST, _DEV13_SECOND, "ltxv-spatial-upscaler-0.9.8", precision="float8_e4m3fn"),
        _multi("ltxv-13b-0.9.8-distilled", "ltxv-13b-0.9.8-distilled.safetensors",
               _DISTILLED_FIRST, replace(_DISTILLED_SECOND, tone_map_compression_ratio=0.6),
               "ltxv-spatial-upscaler-0.9.8"),
        _multi("ltxv-13b-0.9.8-distilled-fp8", "ltxv-13b-0.9.8-distilled-fp8.safetensors",
               _DISTILLED_FIRST, replace(_DISTILLED_SECOND, tone_map_compression_ratio=0.6),
               "ltxv-spatial-upscaler-0.9.8", precision="float8_e4m3fn"),
    ]
}

# The built-in random-weight model (ltxcli/tiny.py): small sizes so a CPU run takes seconds; every stage of
# the pipeline runs (CFG, STG with rescale, decode timestep and noise).
TINY_PRESET = Preset(
    name="tiny", checkpoint="", pipeline_type="base",
    passes=(PassSettings(num_inference_steps=4, guidance_scale=3.0, stg_scale=1.0, rescaling_scale=0.7,
                         skip_block_list=(1,)),),
    height=128, width=192, num_frames=17, frame_rate=24, text_encoder="tiny",
    # auto never enhances (a tiny run stays a seconds-long plumbing check); --enhance-prompt on uses the tiny
    # random enhancer models (ltxcli/enhance/tiny.py)
    prompt_enhancement_words_threshold=0, prompt_enhancer_llm="tiny", prompt_enhancer_captioner="tiny",
)
PRESETS["tiny"] = TINY_PRESET

# A checkpoint loaded by path that matches no preset: the official pipeline's ``__call__`` defaults (20 steps,
# CFG 4.5, deterministic sampling, no CFG-star, no tone mapping) and the schedule embedded in the checkpoint.
# Their STG (scale 1) has no skip blocks, so it perturbs nothing, but it still switches on the rescaling (0.7):
# the CFG prediction is scaled towards the conditional one's standard deviation at every step.
NEUTRAL = Preset(
    name="(checkpoint defaults)", checkpoint="", pipeline_type="base",
    passes=(PassSettings(num_inference_steps=20, guidance_scale=4.5, stg_scale=1.0, rescaling_scale=0.7),),
)


def preset_for_checkpoint(filename: str) -> Preset | None:
    """The preset whose official checkpoint file has this name, if any."""
    for preset in PRESETS.values():
        if preset.checkpoint == filename:
            return preset
    return None
