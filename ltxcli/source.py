"""The defaults a video input gives a request, and what such a request must satisfy before any model work.

Video-to-video (``video``) and an extension (``extend``) take their input's frame rate, size and length where
the request leaves them open (:func:`source_defaults`), wherever they run: ``ltx v2v`` / ``ltx extend`` and
:func:`ltxcli.run_batch` (:mod:`ltxcli.runner`), :meth:`ltxcli.pipeline.Pipeline.run` (:func:`with_source_defaults`)
and :func:`ltxcli.extend.run_extension`. Here, not in :mod:`ltxcli.extend`, so that the pipeline can use it (the
extension module wraps the pipeline).
"""

from __future__ import annotations

import math
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .enhance.rules import check_mode
from .formatting import number_text
from .request import GenerationRequest, check_fields
from .sizes import padded_size

if TYPE_CHECKING:  # torch and media are imported where used: the CLI imports this module early
    from .presets import Preset


class Decodings(Protocol):
    """Where an extension's input is decoded once (:class:`ltxcli.extend.InputFrames`)."""

    def decoded(self, video: str | os.PathLike[str]) -> Any: ...

    def count(self, video: str | os.PathLike[str]) -> int: ...


def with_source_defaults(request: GenerationRequest, preset: Preset) -> GenerationRequest:
    """``request`` (not changed) with what its video-to-video input leaves open filled in as
    :func:`source_defaults` fills it (the input's length, size and rate): the pipeline's, so that
    ``pipe.generate(prompt, video=...)`` takes what ``ltx v2v`` and :func:`ltxcli.run_batch` take. The fields'
    types are checked first (:func:`~ltxcli.request.check_fields`): a ``denoise_strength`` of ``"0.5"`` or ``None``
    failed comparing it with 0, an array ``video`` in pathlib."""
    import torch

    open_fields = (request.num_frames, request.height, request.width,
                   None if isinstance(request.video, torch.Tensor) else request.frame_rate)  # a tensor has no rate
    if request.video is None or request.extend is not None or None not in open_fields:
        return request  # nothing left to the input (ltx v2v and run_batch filled it): not read again
    filled = check_fields(request)  # (a copy)
    source_defaults(filled, preset)
    return filled


def source_defaults(request: GenerationRequest, preset: Preset, inputs: Decodings | None = None) -> None:
    """Fill what a video-to-video or extension request leaves open from its input video (read here, so an
    unreadable or variable-frame-rate file fails before any model work, :class:`~ltxcli.media.MediaError`): the frame rate, the size
    (the input's when it has at most the preset's pixels, else its aspect ratio at the preset's area in
    multiples of 32), the length (v2v: the input's; extension: the input's plus the new frames). A v2v tensor
    ``[F, H, W, 3]`` gives its size and length likewise, no frame rate. ``inputs``: an extension's video is decoded
    there, whole, and all of this read from that decoding (which its run takes)."""
    check_source(request)
    check_extension(request, preset)
    import torch

    from . import media

    source = request.extend.video if request.extend is not None else request.video
    if isinstance(source, torch.Tensor) and request.extend is None:
        # a v2v tensor [F, H, W, 3] (checked here, before any model work) gives what a file of its frames gives but
        # the frame rate, which it has not: the request's or the preset's
        frames = media.load_media(source)
        count, first = int(frames.shape[0]), frames[:1]
    elif source is None or not isinstance(source, (str, os.PathLike)):
        return
    else:
        if inputs is not None and request.extend is not None and Path(source).suffix.lower() in media.VIDEO_SUFFIXES:
            source = inputs.decoded(source)  # a DecodedMedia: its timestamps, count and first frame, not read again
        # the output takes its timing from the input: frame i of the input is frame i (or i + N) of the output
        media.check_constant_rate(source, "ltx extend" if request.extend is not None else "ltx v2v")
        # a truncated file: the frames that decode; v2v of a given length: those it reads (a long input is not
        # decoded whole)
        count = (inputs.count(source) if inputs is not None and isinstance(source, media.DecodedMedia)
                 else media.source_frame_count(source, _frames_read(request.num_frames if request.extend is None else None)))
        if request.frame_rate is None and count > 1:  # a still image has no rate (FFmpeg's image2 says 25): the preset's
            request.frame_rate = float(media.video_frame_rate(source))
        first = None
    if request.height is None and request.width is None:
        first = media.load_media(source, max_frames=1) if first is None else first
        h, w = int(first.shape[1]), int(first.shape[2])
        if h * w > preset.height * preset.width:
            scale = math.sqrt(preset.height * preset.width / (h * w))
            h, w = max(32, round(h * scale / 32) * 32), max(32, round(w * scale / 32) * 32)
        request.height, request.width = h, w
    if request.extend is not None and request.extend.frames < 1:
        raise ValueError(f"frames={request.extend.frames} must be at least 1 (the frames to add)")
    length = count if request.extend is None else count + request.extend.frames
    if request.num_frames is None and request.duration is None:  # a duration is counted at the input's rate
        request.num_frames = length
    elif request.extend is not None and request.num_frames != length:
        raise ValueError(f"num_frames={request.num_frames}: an extension of a {count}-frame video by "
                         f"{request.extend.frames} frames has {length} (give the new frames only)")


def check_source_length(request: GenerationRequest) -> None:
    """A video-to-video request for more frames than its input video decodes, refused before any model work
    (ValueError); the pipeline refused it only once the model had loaded. Call once the length is known."""
    from . import media

    video = request.video
    if video is None or request.extend is not None or request.num_frames is None:
        return
    count = (media.source_frame_count(video, _frames_read(request.num_frames)) if isinstance(video, (str, os.PathLike))
             else None)
    if count is not None and request.num_frames > count:
        raise ValueError(f"{too_short(video, count, request.num_frames)} (at most {count}: --num-frames {count}, or a "
                         "shorter --duration)")


def too_short(name: object, frames: int, needed: int) -> str:
    """The refusal of a video-to-video input ``name`` of ``frames`` frames for a ``needed``-frame video, here and
    where the pipeline reads it (:func:`ltxcli.conditions.prepared_video_chunks`)."""
    return f"{name}: {frames} frames; video-to-video at this length needs {needed}"


def _frames_read(num_frames: int | None) -> int | None:
    # The input frames a v2v of num_frames decodes (None: all): its padding to 8k + 1 reads the file's next frames
    # (30 read 33), so the count's decoding, before any model work, checks their size too: a change at frame 31 was
    # refused only once they were streamed into the encoder, after the model loaded
    return None if num_frames is None or num_frames < 1 else padded_size(32, 32, num_frames)[2]


def check_source(item: GenerationRequest) -> None:
    """What an item with an input video must satisfy before any work (ValueError, one line)."""
    if item.video is not None and not 0 < item.denoise_strength < 1:
        raise ValueError(f"strength={number_text(item.denoise_strength)} must be in (0, 1) (e.g. 0.5: the lower, the closer to "
                         "the input)")
    if item.video is not None and item.extend is not None:
        raise ValueError("an item is video-to-video or an extension, not both")


#: The model ``ltx v2v`` is pointed at to upscale an extension in time when the extension's is multi-scale (whose
#: distilled schedules end at 0.4219, above :data:`UPSCALE_STRENGTH`): the newest single-pass 2B, with the 0.9.5+
#: VAE the temporal upscaler is made for.
SINGLE_PASS_MODEL = "ltxv-2b-0.9.6-distilled"
#: The strength of that video-to-video: the last 0.3 of the steps redone (at least one of a 4-step schedule, two of
#: the distilled model's 8), little of the extended video changed besides the frames the upscaler adds.
UPSCALE_STRENGTH = 0.3


def check_extension(request: GenerationRequest, preset: Preset | None = None) -> None:
    """Refuse (ValueError), before any model work, what an extension does not run: a duration (its length is the
    new frames) or a temporal upscale (:func:`upscale_commands` says how); an unknown ``enhance_prompt``.
    ``preset``: the model's, when known (a multi-scale one changes the commands)."""
    if request.extend is None:
        return
    check_mode(request.enhance_prompt)
    if request.duration is not None:
        raise ValueError("duration is not supported with an extension (its length is the input's and the new "
                         "frames): give the number of new frames")
    if request.temporal_upscale:
        raise ValueError(upscale_commands(request, preset))


def upscale_commands(request: GenerationRequest, preset: Preset | None = None) -> str:
    """Why an extension (``request.extend``) is not upscaled in time, and the two commands that make the extended
    video at twice the frame rate: the extension, then ``ltx v2v --temporal-upscale`` of its output. The extension
    keeps the input's own frames one for one; at twice their rate every other output frame would be one the input
    does not have, so the whole extended video is upscaled (re-made) instead. ``preset``: the extension's model's;
    a multi-scale one (whose schedule keeps no step at that strength) sends the v2v to :data:`SINGLE_PASS_MODEL`."""
    ext = request.extend
    assert ext is not None
    stem = Path(ext.video).stem
    made, doubled = f"{stem}-extended.mp4", f"{stem}-extended-2x.mp4"
    # v2v runs windows too: the same prompts (in time order) and window sizes
    windows = [f for name in ("window", "overlap") if getattr(request, name) is not None
               for f in (f"--{name}", str(getattr(request, name)))]
    first = ["ltx", "extend", os.fspath(ext.video), request.prompt, "--frames", str(ext.frames),
             *(["--backward"] if ext.backward else []), *windows, "-o", made]
    multi = preset is not None and preset.multi_scale
    second = ["ltx", "v2v", made, request.prompt, "--strength", str(UPSCALE_STRENGTH), "--temporal-upscale",
              *windows, *(["-m", SINGLE_PASS_MODEL] if multi else []), "-o", doubled]
    options = ("add your other options to the first; -m: a single-pass model that takes this strength" if multi
               else "add your other options to the first and your --model to both")
    return ("temporal_upscale is not supported with an extension: the extension keeps the input's own frames, and "
            "at twice their rate every other frame would be one the input does not have; upscale the whole extended "
            f"video instead, in two runs: `{shlex.join(first)}`, then `{shlex.join(second)}` ({options}; a lower "
            "--strength changes less)")


__all__ = ["SINGLE_PASS_MODEL", "UPSCALE_STRENGTH", "Decodings", "check_extension", "check_source", "check_source_length", "source_defaults", "too_short",
           "upscale_commands", "with_source_defaults"]
