"""The generation record a written video carries (:func:`record`) and the settings ``ltx generate --json``
reports (:func:`run_settings`), both read off a :class:`~ltxcli.result.GenerationResult`, and what a batch item
(:func:`batch_fields`) and a video's encoding (:func:`encoding`) add; :mod:`ltxcli.runner` re-exports them."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .naming import fps_number

if TYPE_CHECKING:
    from .batch import BatchItem
    from .result import GenerationResult


#: Sampling values a request may set apart from the preset's (the library's keyword arguments), recorded so that
#: ``--from`` redoes them: they change the frames.
SAMPLER_KEYS = ("stg_mode", "decode_timestep", "decode_noise_scale", "image_cond_noise_scale", "stochastic_sampling")


def run_settings(result: GenerationResult) -> dict[str, Any]:
    """The settings a result was generated with, as ``ltx generate --json`` reports them (the record's, plus
    the device): size, frame rate, negative prompt, first-pass steps/guidance, every pass, conditions, compute."""
    s = result.settings
    first, upscale = s["passes"][0], s.get("temporal_upscale")
    timesteps = first.get("timesteps")
    return {
        "height": s["height"], "width": s["width"], "num_frames": s["num_frames"],
        "frame_rate": fps_number(s["frame_rate"]), "negative_prompt": s["negative_prompt"],
        "steps": first["num_inference_steps"] if timesteps is None else len(timesteps),
        "guidance_scale": first["guidance_scale"], "stg_scale": first["stg_scale"], "preset": s["preset"],
        "timesteps": timesteps, "multi_scale": s["multi_scale"], "passes": s["passes"],
        "conditions": s["conditions"], "control": s.get("control"), "video": s.get("video"),
        "denoise_strength": s.get("denoise_strength"), "extend": s.get("extend"), "dtype": s["dtype"],
        "fp8": s.get("fp8"), "weights_dtype": s.get("weights_dtype"), "device": s["device"],
        "offload": s["offload"], "vae_tiling": s["vae_tiling"], "vae_conv": s["vae_conv"], "loras": s["loras"],
        "attention": s.get("attention"),  # the option given (auto, math, ...): the kernels change the pixels
        "cpu_gemm": s.get("cpu_gemm"),  # the CPU float32 linears' route (onednn, blas; None off the CPU): likewise
        "cache": s.get("cache"),  # step cache: mode, threshold, branch evaluations and how many were skipped
        # the generated frames and their rate (before the temporal upscale), the rate shown as the output's
        **({"temporal_upscale": upscale | {"frame_rate": fps_number(upscale["frame_rate"])}} if upscale else {}),
        **({"long": s["long"]} if s.get("long") is not None else {}),
        "enhance_prompt": s.get("enhance_prompt", "auto"),
        **{k: s.get(k) for k in SAMPLER_KEYS},  # the library's; --from restores them
    }


def record(result: GenerationResult, *, model: str | None = None) -> dict[str, Any]:
    """The generation record stored in a written file (``ltx info`` and :func:`ltxcli.media.read_video_metadata`
    read it back): tool and version, model (default: the pipeline's name), prompt, seed, the settings of
    :func:`run_settings` without the device, and the time of writing."""
    from . import __version__

    s = result.settings
    return {
        "tool": "ltxcli", "version": __version__, "model": s["model"] if model is None else model,
        "prompt": s["prompt"], "enhanced_prompt": s.get("enhanced_prompt"), "seed": result.seed,
        **{k: v for k, v in run_settings(result).items() if k != "device"},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def encoding(target: Path, crf: int | None = None, preset: str | None = None) -> dict[str, Any]:
    """What the record of a video written to ``target`` adds: how it was encoded (the encoder, ``crf`` and, for
    H.264, x264's ``preset``; None: the defaults), which changes its pixels: ``--from`` encodes a redo alike."""
    from . import media

    crf = media.DEFAULT_CRF if crf is None else crf
    encoder = media.video_format(target, crf, preset)[1]  # a bad suffix, CRF or preset: write_video's error
    return {"encoding": {"encoder": encoder, "crf": crf} | (
        {"preset": preset or media.DEFAULT_PRESET} if encoder == "libx264" else {})}


def batch_fields(item: BatchItem) -> dict[str, Any]:
    """What a written item's record adds to :func:`record`: its ``index`` and, in a batch of several items
    whose seed derives from the batch seed, that ``batch_seed`` (how a rerun resumes the batch)."""
    return {"index": item.index} | ({"batch_seed": item.batch_seed} if item.batch_seed is not None else {})


# record keys shown first, in this order, by ``ltx info`` (the others follow in alphabetical order)
INFO_ORDER = ("prompt", "negative_prompt", "model", "preset", "seed", "steps", "guidance_scale", "stg_scale", "width",
              "height", "num_frames", "frame_rate", "conditions", "dtype", "version", "created")


def record_lines(record: dict[str, Any]) -> list[str]:
    """A generation record as ``ltx info`` shows it: ``key: value`` lines (values other than text as JSON)."""
    from .formatting import to_json

    keys = [k for k in INFO_ORDER if k in record] + sorted(k for k in record if k not in INFO_ORDER and k != "tool")
    return [f"{k}: {record[k] if isinstance(record[k], str) else to_json(record[k])}" for k in keys]


__all__ = ["INFO_ORDER", "SAMPLER_KEYS", "batch_fields", "encoding", "record", "record_lines", "run_settings"]
