"""IC-LoRA control: a control video joins the token sequence as clean in-context tokens at the generated frames'
own positions (:class:`ltxcli.request.Control`; ``ltx generate --control VIDEO[:STRENGTH]``).

What an IC-LoRA (in-context LoRA: Lightricks' depth, pose, Canny and detailer LoRAs, or one made with the
LTX-Video-Trainer's ``reference_video`` mode) was trained on, and so what inference must reproduce:

* LTX-Video-Trainer ``src/ltxv_trainer/training_strategies.py`` (``ReferenceVideoTrainingStrategy``): the clean
  reference latents are concatenated *before* the noised target latents, ``[reference, target]``; their
  conditioning mask is 1 (timestep 0); the positions come from ``prepare_video_coordinates(...,
  sequence_multiplier=2)`` (``src/ltxv_trainer/ltxv_utils.py``), i.e. the target's own grid repeated: reference
  token ``k`` has the same (frame, row, column) as target token ``k``. The loss covers the target only.
* Its validation sampler, ``src/ltxv_trainer/ltxv_pipeline.py`` (``reference_video=``): the reference frames are
  resized keeping the aspect ratio to cover the generation size (``resize(..., antialias=True)``), centre-cropped
  to it, trimmed to at most ``num_frames`` frames (``8k + 1``), VAE-encoded, placed before the keyframe tokens
  and the video (``[reference, frame conditions, target]``) with the coordinates of a video starting at frame 0
  (the causal fix included, as the generated frames'), mask 1 (so ``timestep = min(t, 1 - mask) = 0`` and the
  tokens are never updated; a hard conditioning token, so ``image_cond_noise_scale`` re-noises it as it does a
  first frame); after the loop the reference tokens are dropped and only the target is decoded.
* ComfyUI-LTXVideo ``easy_samplers.py`` (``LTXVInContextSampler``) and ``latents.py`` (``LTXVAddLatentGuide``):
  the guide latents are appended as keyframe tokens at latent index 0 (the generated video's positions) with a
  ``strength`` (noise mask ``1 - strength``), and cropped off before decoding (``LTXVCropGuides``).

Here: :func:`prepare_control` reads the media once (before any model runs), fits it to the generation size as
the trainer's sampler does, makes the Canny or depth video when asked (:mod:`ltxcli.canny`, :mod:`ltxcli.depth`)
and pads it as the generated frames are padded; :meth:`~ltxcli.pipeline.Pipeline.run` encodes it at each pass's
size (:class:`EncodedControl`); :func:`place_with_control` puts its tokens first. A ``strength`` below 1 follows
the official pipeline's conditioning tokens (what ``LTXVAddLatentGuide``'s strength approximates): the tokens
start as ``lerp(noise, control, strength)`` and join the denoising once ``t < 1 - strength``. With strength 1
(the default, the trainer's only value) no noise is drawn for them. They are removed with the other extra
tokens before decoding (:meth:`~ltxcli.pipeline.Pipeline._denoise`): never decoded, never written.

Differences from the sources, on purpose: the control is padded like the generated frames (sizes that are not
multiples of 32), and with a first-frame image condition the control keeps its first latent frame (the trainer
trains exactly that pair; ComfyUI's sampler drops the guide's first latent then).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import media as media_io
from .conditions import EncodedCondition, place_conditions, trim
from .models.rope import latent_coords, pixel_coords
from .request import Control, ResolvedRequest, media_path, parse_control


@dataclass(frozen=True)
class PreparedControl:
    """A control ready for the VAE encoder: pixels ``[1, 3, n, ph, pw]`` in [-1, 1] at the padded generation
    size (``n`` = ``8k + 1`` frames, at most the padded frame count)."""

    pixels: Tensor
    strength: float


@dataclass(frozen=True)
class EncodedControl:
    """A control encoded at one pass's size: normalised latents ``[1, C, f_c, h, w]`` (float32, on the device)."""

    latents: Tensor
    strength: float


def control_record(c: Control | None) -> dict[str, Any] | None:
    """The control as the generation record lists it: ``source`` (None for a tensor), ``kind``, ``strength``."""
    if c is None:
        return None
    source = media_path(c.media)
    return {"source": source, "kind": c.kind, "strength": float(c.strength)}


def fit_frames(frames: Tensor, height: int, width: int) -> Tensor:
    """Frames ``[F, H, W, 3]`` -> ``[F, height, width, 3]``: resized keeping the aspect ratio to cover the size
    (antialiased bilinear), then centre-cropped, as the trainer's sampler prepares ``reference_video``."""
    h, w = frames.shape[1:3]
    aspect, target = w / h, width / height
    # at least the size: ``width / aspect`` of the very same ratio can round to 55.999... for 56 rows
    if aspect > target:
        rh, rw = height, max(int(height * aspect), width)
    else:
        rh, rw = max(int(width / aspect), height), width
    x = frames.permute(0, 3, 1, 2)  # [F, 3, H, W]
    if (rh, rw) != (h, w):
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
    top, left = round((rh - height) / 2.0), round((rw - width) / 2.0)  # torchvision's center_crop
    return x[:, :, top : top + height, left : left + width].permute(0, 2, 3, 1)


def check_control_timing(c: Control, num_frames: int) -> None:
    """Refuse a control file whose first ``num_frames`` frames have uneven timestamps (variable frame rate,
    :func:`ltxcli.media.check_constant_rate`): control frame i steers output frame i, so they would steer the
    wrong times. Nothing is decoded (the CLI checks this before any weight is read)."""
    path = media_path(c.media)
    if path is not None:
        media_io.check_constant_rate(path, "an IC-LoRA control video", num_frames)


def control_frames(c: Control, r: ResolvedRequest, *, device: torch.device, dtype: torch.dtype,
                   depth_model: str | None = None, weights_dir: str | os.PathLike[str] | None = None) -> Tensor:
    """The control video at the requested size: float32 ``[n, height, width, 3]`` in [0, 1], ``n`` the media's
    frames trimmed to ``8k + 1`` within the padded frame count; Canny or depth made here when ``c.kind`` asks."""
    _, _, pf = r.padded
    check_control_timing(c, r.num_frames)
    frames = media_io.load_media(c.media, max_frames=pf)
    n, kept = int(frames.shape[0]), trim(int(frames.shape[0]), 0, pf)
    if kept < r.num_frames:
        # (control frame i steers output frame i: the later ones took none, silently; a 12-frame control used 9)
        name = media_path(c.media) or f"a {type(c.media).__name__}"
        used = f"its first {kept} of {n} frames: a control is used in 8k + 1 frames" if kept < n else \
            f"it has {n} frame{'s' if n > 1 else ''}"
        warnings.warn(f"control {name} steers only frames 0-{kept - 1} of the {r.num_frames} generated ({used}); the "
                      "later ones have no control (give a control as long as the video)", stacklevel=2)
    frames = fit_frames(frames[:kept], r.height, r.width)
    if c.kind == "canny":
        from .canny import canny_video

        return canny_video(frames.to(device)).cpu()
    if c.kind == "depth":
        from .depth import depth_video

        return depth_video(frames, depth_model, device=device, dtype=dtype, weights_dir=weights_dir)
    return frames


def prepare_control(r: ResolvedRequest, *, device: torch.device, dtype: torch.dtype, depth_model: str | None = None,
                    weights_dir: str | os.PathLike[str] | None = None) -> PreparedControl | None:
    """The request's control as pixels for the VAE encoder (``None`` without one): :func:`control_frames`, then
    ``[-1, 1]`` and the generation's zero padding. Runs before the text encoder (the depth model's stage)."""
    if r.control is None:
        return None
    frames = control_frames(r.control, r, device=device, dtype=dtype, depth_model=depth_model, weights_dir=weights_dir)
    return _prepared(frames, r)


def window_control(frames: Tensor, r: ResolvedRequest, first_frame: int) -> PreparedControl | None:
    """The control of one window of a long video (:mod:`ltxcli.long_video`): ``frames``, the whole video's
    :func:`control_frames` (made once: a depth video keeps one depth scale over every window), from the window's
    first frame ``first_frame`` on, at most the window's padded frame count, trimmed to ``8k + 1``, prepared for
    ``r`` (the window's request) as :func:`prepare_control` prepares a control; ``None`` when the control ends
    before the window. So a window gets exactly what a one-window request whose control is that slice gets."""
    assert r.control is not None
    _, _, pf = r.padded
    part = frames[first_frame : first_frame + pf]
    if part.shape[0] == 0:
        return None
    return _prepared(part[: trim(part.shape[0], 0, pf)], r)


def _prepared(frames: Tensor, r: ResolvedRequest) -> PreparedControl:
    """Control frames ``[F, H, W, 3]`` in [0, 1] -> ``[-1, 1]`` with the generation's zero padding."""
    assert r.control is not None
    pixels = frames.permute(3, 0, 1, 2)[None] * 2 - 1  # [F, H, W, 3] -> [1, 3, F, H, W]
    return PreparedControl(F.pad(pixels, r.padding), float(r.control.strength))


def weights_needed(requests: Sequence[Any], *, builtin: bool) -> list[str]:
    """The weights.toml entries the requests' controls need on disk (the depth model unless the pipeline is the
    built-in tiny one, whose depth model is built on the fly)."""
    from .depth import DEFAULT_DEPTH_MODEL

    depth = any(getattr(r, "control", None) is not None and r.control.kind == "depth" for r in requests)
    return [DEFAULT_DEPTH_MODEL] if depth and not builtin else []


def place_with_control(
    conds: Sequence[EncodedCondition | EncodedControl], latents: Tensor, gen: torch.Generator, *, causal: bool
) -> tuple[Tensor, Tensor, Tensor | None, int]:
    """:func:`ltxcli.conditions.place_conditions` for the conditions, then the control's tokens in front:
    ``[control, keyframe tokens, video]`` as the trainer's sampler orders them. Returns tokens ``[1, N, C]``, pixel
    coords ``[1, 3, N]``, the strength mask ``[1, N]`` and the number of leading tokens the decode drops."""
    controls = [c for c in conds if isinstance(c, EncodedControl)]
    tokens, coords, mask, n_extra = place_conditions(
        [c for c in conds if isinstance(c, EncodedCondition)], latents, gen, causal=causal)
    if not controls:
        return tokens, coords, mask, n_extra
    if mask is None:  # no conditions: the video's tokens are free
        mask = torch.zeros(tokens.shape[:2], dtype=torch.float32, device=tokens.device)
    for c in reversed(controls):
        lat = c.latents.to(latents.dtype)  # [1, C, f_c, h, w]
        if c.strength < 1:
            noise = torch.randn(lat.shape, generator=gen, dtype=torch.float32).to(lat.device, lat.dtype)
            lat = torch.lerp(noise, lat, c.strength)
        fc, h, w = lat.shape[2:]
        # the generated video's own grid (frames from 0): token k of the control sits where video token k sits
        ctrl_coords = pixel_coords(latent_coords(fc, h, w, device=lat.device), causal_fix=causal)[None]
        tokens = torch.cat([lat.flatten(2).transpose(1, 2), tokens], dim=1)  # [1, C, f, h, w] -> [1, f*h*w, C]
        coords = torch.cat([ctrl_coords, coords], dim=2)
        mask = torch.cat([torch.full((1, fc * h * w), c.strength, dtype=torch.float32, device=lat.device), mask], 1)
        n_extra += fc * h * w
    return tokens, coords, mask, n_extra


def at_double_rate(conds: Sequence[EncodedCondition | EncodedControl], upscale: Callable[[Tensor], Tensor]
                   ) -> list[EncodedCondition | EncodedControl]:
    """The second pass's conditions of a multi-scale run after the temporal upscaler, which took the video's latents
    from ``f`` to ``2f - 1`` frames at twice the frame rate (:meth:`ltxcli.pipeline.Pipeline._denoise_passes`).
    Each keeps its time: an image moves to twice its frame; a video condition's latents take the video's upscale
    (``upscale``: ``[1, C, f_l, h, w] -> [1, C, 2 f_l - 1, h, w]``), so its ``n`` frames become ``2 (n - 1) + 1``
    from twice its frame, one for one with the output's frames, as before the upscale; so do a control's, which
    stay token for token on the video's grid (the IC-LoRA's pairing)."""
    out: list[EncodedCondition | EncodedControl] = []
    for c in conds:
        if isinstance(c, EncodedControl):
            out.append(replace(c, latents=upscale(c.latents)))
        elif c.pixel_frames > 1:
            out.append(replace(c, latents=upscale(c.latents), pixel_frames=2 * (c.pixel_frames - 1) + 1,
                               frame=2 * c.frame))
        else:
            out.append(replace(c, frame=2 * c.frame))
    return out


__all__ = [
    "EncodedControl", "PreparedControl", "at_double_rate", "check_control_timing", "control_frames", "control_record", "fit_frames", "parse_control",
    "place_with_control", "prepare_control", "weights_needed", "window_control",
]
