"""Conditioning media -> pixels -> latent tokens, as the official ``inference.py`` and ``prepare_conditioning``.

Two steps, run at different stages of a generation (:meth:`ltxcli.pipeline.Pipeline.run`):

* :func:`prepare_conditions` (before any model runs): each condition's media is read once, trimmed, cropped,
  blurred and CRF-compressed (:func:`ltxcli.media.preprocess_condition_frames`) and padded ->
  :class:`PreparedCondition` pixels ``[1, 3, n, h, w]`` in [-1, 1]; the video-to-video input likewise, but a
  chunk at a time as the VAE encoder takes it (:func:`source_chunks`).
* :func:`place_conditions` (inside a denoising pass, after the VAE encoder has turned the pixels into
  :class:`EncodedCondition` latents, which happens before the transformer's stage): the latents are blended
  into the initial latents or appended as extra tokens, with their positions and per-token strength mask.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import media as media_io
from .models.rope import latent_coords, pixel_coords
from .request import Condition, ResolvedRequest, check_placement, media_path, resolve_request
from .source import too_short

if TYPE_CHECKING:
    from .models.configs import VAEConfig
    from .presets import Preset
    from .request import GenerationRequest

# latent token prefix the official video-extension path turns into extra tokens
_PREFIX_LATENT_FRAMES = 2


@dataclass(frozen=True)
class PreparedCondition:
    """A condition ready for the VAE encoder: pixels ``[1, 3, n, h, w]`` in [-1, 1] (any size). ``origin``: a
    tensor condition's ``(tensor, how it was prepared)``, under which its latents are memoised
    (:mod:`ltxcli.encode_memo`); None for a file or picture."""

    pixels: Tensor
    frame: int
    strength: float
    origin: tuple[Tensor, tuple[Any, ...]] | None = None


@dataclass(frozen=True)
class EncodedCondition:
    """A condition encoded at one pass's size: normalised latents ``[1, C, f_l, h, w]`` (float32, on the device)
    of ``pixel_frames`` pixel frames placed at pixel frame ``frame``. ``append``: always extra tokens at its
    positions, never blended into the initial latents (the looping sampler's previous-window tail,
    :mod:`ltxcli.long_video`)."""

    latents: Tensor
    pixel_frames: int
    frame: int
    strength: float
    append: bool = False


def record_entry(c: Condition) -> dict[str, Any]:
    """A condition as the generation record lists it (``path`` None for an in-memory picture or tensor)."""
    path = media_path(c.media)
    return {"path": path, "frame": c.frame, "strength": c.strength}


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


def trim(n: int, start: int, num_frames: int) -> int:
    """Official ``trim_conditioning_sequence``: at most the frames that fit, rounded down to 8k + 1."""
    n = min(n, num_frames - start)
    if n < 1:
        raise ValueError(f"a condition at frame {start} has no frames inside the {num_frames}-frame video")
    return (n - 1) // 8 * 8 + 1


def check_condition(c: Condition, height: int, width: int, num_frames: int,
                    decoded: dict[tuple[str, int], Any] | None = None) -> Condition:
    """A condition of a ``height`` x ``width`` x ``num_frames`` video, checked before any model work: its ranges, then
    the file itself, decoded once (:func:`ltxcli.media.read_media`: an image fully, a video up to the frames the
    video can use) so that a missing, empty, truncated, oversized or unreadable file fails
    here, before any weight is loaded (MediaError). Returns the condition holding the decoded pixels, which the
    pipeline preprocesses without reading the file again. ``decoded``: pixels already read for this run, by
    (path, frames), shared between the requests that use one file."""
    name = c.media
    check_placement([c], num_frames)
    if isinstance(c.media, Tensor):  # its shape and values, and the frame a video of its length starts at
        _check_start(c, "a tensor", int(media_io.load_media(c.media).shape[0]), num_frames)
    if media_path(c.media) is None or isinstance(c.media, media_io.DecodedMedia):
        return c  # in memory (a tensor, checked above; a picture), or a file checked and decoded already
    wanted = num_frames - c.frame  # frames of the file the video has room for
    key = (str(c.media), wanted)
    read = decoded.get(key) if decoded is not None else None
    if read is None:
        # one frame more than fits: a file without a frame count (Matroska, WebM) shows it is longer
        read = media_io.read_media(c.media, max_frames=wanted + 1)
        if decoded is not None:
            decoded[key] = read
    pic_h, pic_w = int(read.frames.shape[1]), int(read.frames.shape[2])  # the file's own size
    left, top, right, bottom = media_io.centre_crop_box(pic_w, pic_h, height, width)
    if right - left < 2 or bottom - top < 2:
        raise media_io.MediaError(f"{name}: a {pic_w}x{pic_h} picture is too small to crop to the "
                                  f"{width}x{height} aspect ratio")
    n = read.listed
    if n > 1:
        decodable = int(read.frames.shape[0])
        if decodable < min(n, wanted):  # FFmpeg stops quietly at the end of a truncated file
            warnings.warn(f"{name}: the file lists {n} frames but only {decodable} can be decoded (truncated or "
                          f"damaged?); using those {decodable}", stacklevel=1)
            n = decodable
    kept = _check_start(c, name, n, num_frames)
    _check_timing(read, kept)  # by the decoded frames' times: the file is read once
    # the count; or, when decoding stopped one past what fits and the file lists no count, what it showed
    total = f"at least {n}" if wanted < n <= read.frames.shape[0] else n
    _warn_trim(name, n, kept, c.frame, num_frames, total)
    return replace(c, media=read)


#: The window of a long video whose conditions are prepared (:func:`in_window`): ``(label, first frame, the whole
#: video's frames)``; a trim warning then names it and counts in the whole video's frames, not the window's.
_WINDOW: ContextVar[tuple[str, int, int] | None] = ContextVar("ltxcli_condition_window", default=None)


@contextmanager
def in_window(label: str, first_frame: int, video_frames: int) -> Iterator[None]:
    """Conditions prepared inside are those of one window (``label``, e.g. "2/3") starting at frame
    ``first_frame`` of a ``video_frames``-frame video (:meth:`ltxcli.long_video._LongRun._denoise_window`)."""
    token = _WINDOW.set((label, first_frame, video_frames))
    try:
        yield
    finally:
        _WINDOW.reset(token)


def _warn_trim(name: Any, n: int, kept: int, frame: int, num_frames: int, total: Any = None) -> None:
    """Say when fewer than the ``n`` frames of a condition are used, as the official ``prepare_conditioning`` logs
    every trim: a longer one than fits, or one cut to 8k + 1 frames (a 12-frame clip uses 9, a 5-frame one only
    its first). ``total``: ``n`` as the message shows it. In a window (:func:`in_window`) the message names the
    window and the whole video's frames: the window's end, not the video's, cut it (the next window takes a video
    condition's frames past it, :func:`ltxcli.long_plan.condition_parts`, unless fewer than 8 or backward)."""
    if kept >= n:
        return
    total = n if total is None else total
    window = _WINDOW.get()
    if window is not None and n > num_frames - frame:
        label, first, video = window
        warnings.warn(f"condition {name}: trimmed to its first {kept} of {total} frames (only {num_frames - frame} "
                      f"fit from frame {first + frame} to the end of window {label}, frames {first}-"
                      f"{first + num_frames - 1} of the {video}-frame video, used in 8k + 1 frames; the next window "
                      "takes a condition's frames past this one only 8 or more at a time, and never backward: a larger "
                      "window holds more of it)", stacklevel=2)
    elif n > num_frames - frame:  # longer than the video from its frame
        warnings.warn(f"condition {name}: trimmed to its first {kept} of {total} frames (only {num_frames - frame} fit "
                      f"from frame {frame} of the {num_frames}-frame video, used in 8k + 1 frames; `ltx extend` makes a "
                      f"video longer than its input)", stacklevel=2)
    else:
        warnings.warn(f"condition {name}: uses its first {kept} of {total} frames (a video condition is used in 8k + 1 "
                      f"frames: give 1, 9, 17, 25, ...)", stacklevel=2)


def warn_parts_trim(c: Condition, num_frames: int) -> None:
    """A tensor condition of a ``num_frames`` video that a long video's windows take in parts, each exactly
    (:meth:`ltxcli.long_plan.LongPlan.condition_parts`: no window says it): its trim, said once as one generation
    says it (a file's: :func:`check_condition`)."""
    if isinstance(c.media, Tensor) and c.media.ndim == 4:
        n = int(c.media.shape[0])
        _warn_trim(f"a {type(c.media).__name__}", n, trim(n, c.frame, num_frames), c.frame, num_frames)


def _check_start(c: Condition, name: Any, n: int, num_frames: int) -> int:
    """The frames the pipeline keeps of an ``n``-frame condition (at most those that fit, rounded down to 8k + 1:
    the official trim); a video (more than one kept) must start on the 8-frame grid (ValueError)."""
    kept = (min(n, num_frames - c.frame) - 1) // 8 * 8 + 1
    if kept > 1 and c.frame % 8:
        lo = c.frame // 8 * 8
        raise ValueError(f"condition {name}: a video must start at a multiple of 8, not frame={c.frame} "
                         f"(use {lo} or {lo + 8})")
    return kept


def _check_timing(media: Any, kept: int) -> None:
    """A video condition's ``kept`` frames become output frames ``frame``, ``frame + 1``, ...: a file's uneven
    timestamps (variable frame rate) would put its motion at the wrong times, so that is refused
    (:func:`ltxcli.media.check_constant_rate`, on a path or a :class:`~ltxcli.media.DecodedMedia`); one frame
    (an image, a still) has no timing."""
    if kept > 1 and media_path(media) is not None:
        media_io.check_constant_rate(media, "a video condition (or ltx i2v's video)", kept)


def prepare_condition(
    c: Condition, height: int, width: int, num_frames: int, padding: tuple[int, int, int, int]
) -> PreparedCondition:
    """Official ``inference.py`` media handling: trim, crop to the aspect ratio, blur, CRF 29, pad.

    A file is read once (here, up to the frames that fit, unless :func:`check_condition` decoded it already); a
    tensor is used as is."""
    if isinstance(c.media, Tensor):
        frames = media_io.load_media(c.media)  # checked: [F, H, W, 3] (or [H, W, 3]), finite, in [0, 1] (or uint8)
        keep = trim(frames.shape[0], c.frame, num_frames)
        pixels = frames[:keep].permute(3, 0, 1, 2)[None].float() * 2 - 1  # [1, 3, n, h, w]
        # at the video's size, then padded as a file's pixels are: the padding is cropped off the output, so the
        # tensor lands where the video is (stretched over the padded frame, the output showed a zoomed part of it)
        pixels = F.pad(resize_frames(pixels, height, width), padding)
    else:
        if media_path(c.media) is not None and not isinstance(c.media, media_io.DecodedMedia):
            # a file not checked yet (the Python API): decoded as the CLI's pre-check does, up to one frame past
            # what fits (a long clip is not decoded whole), with its warnings and its frames' times
            c = check_condition(c, height, width, num_frames)
        # its timing checked by check_condition, here or before; its uint8 codes (a video, an 8-bit picture) as
        # they are: preprocessing quantises to them, and a float copy of a large picture took seconds
        frames = c.media.frames if isinstance(c.media, media_io.DecodedMedia) else media_io.load_media(c.media)
        keep = trim(frames.shape[0], c.frame, num_frames)
        pixels = media_io.preprocess_condition_frames(frames[:keep], height, width, just_crop=True)
        if any(padding):  # inference.py pads the (cropped, native-size) media with zeros by the generation's padding
            pixels = F.pad(pixels, padding)
    name = media_path(c.media) or f"a {type(c.media).__name__}"
    _check_start(c, name, int(frames.shape[0]), num_frames)
    # a file was checked (and its trim told) against the whole video: only a window's end, before the video's, cuts
    # it more (a 12-frame clip using 9 was said once already)
    window = _WINDOW.get()
    cut = window is not None and window[1] + num_frames < window[2] and frames.shape[0] > num_frames - c.frame
    if not isinstance(c.media, media_io.DecodedMedia) or cut:
        _warn_trim(name, int(frames.shape[0]), keep, c.frame, num_frames)
    origin = (c.media, (keep, height, width, tuple(padding))) if isinstance(c.media, Tensor) else None
    return PreparedCondition(pixels, c.frame, float(c.strength), origin)


def first_frame_pixels(request: GenerationRequest, preset: Preset) -> Tensor:
    """The pixels ``[1, 3, n, H, W]`` in [-1, 1] of the request's first condition, preprocessed as the pipeline
    preprocesses it (resized, cropped and padded to the generation size): what the prompt enhancer captions."""
    r = resolve_request(request, preset)
    return prepare_condition(r.conditions[0], r.height, r.width, r.num_frames, r.padding).pixels


def prepare_video(video: Any, r: ResolvedRequest) -> Tensor:
    """Official ``load_media_file`` for the v2v input -> pixels ``[1, 3, pf, ph, pw]`` in [-1, 1]: ``pf`` frames,
    cropped, resized, blurred, CRF, padded (a tensor: only resized to the video's size and padded). A file and a
    tensor alike need ``num_frames`` frames (any number: not 8k + 1); the first ``pf`` are used, the last one
    repeated up to ``pf``. :func:`prepared_video_chunks` in one chunk."""
    (pixels,) = prepared_video_chunks(video, r, [r.padded[2]])
    return pixels


def prepared_video_chunks(video: Any, r: ResolvedRequest, sizes: Sequence[int]) -> Iterator[Tensor]:
    """:func:`prepare_video` in time chunks: ``[1, 3, n, ph, pw]`` for each ``n`` of ``sizes`` (their sum the padded
    length ``pf``), equal bit for bit to the frames ``prepare_video`` gives there: every step is per frame (crop,
    bicubic resize, blur, CRF, padding, bilinear resize; the frame count's padding repeats the last frame). A video
    file is decoded as the chunks are asked for (:func:`ltxcli.media.iter_video`), so the host holds one chunk's
    frames, not the input's (a long v2v's, :meth:`ltxcli.long_video._LongRun.pixels`). A file's frame rate is checked
    here (MediaError), and its length (ValueError: fewer than ``num_frames`` frames): before any model work."""
    if sum(sizes) != r.padded[2]:
        raise ValueError(f"chunks of {sum(sizes)} frames in all; this video has {r.padded[2]}")
    if not isinstance(video, Tensor):  # frame i of the input is frame i of the output (ltx v2v refused a VFR file already)
        media_io.check_constant_rate(video, "video-to-video", r.num_frames)
    # too short: refused now, before any model work, though its frames are read later (a file's packets are counted,
    # nothing decoded, where it holds each whole)
    count = ((video.shape[0] if video.ndim == 4 else 1) if isinstance(video, Tensor)
             else media_io.source_frame_count(video, r.num_frames, quick=True))
    if count < r.num_frames:
        raise ValueError(_too_short(video, count, r))
    return _prepared_chunks(video, r, sizes)


def _too_short(video: Any, frames: int, r: ResolvedRequest) -> str:
    return too_short("the input video tensor" if isinstance(video, Tensor) else video, frames, r.num_frames)


def _prepared_chunks(video: Any, r: ResolvedRequest, sizes: Sequence[int]) -> Iterator[Tensor]:
    frames = _source_frames(video, r.padded[2])
    read, last = 0, None
    for n in sizes:
        chunk = list(itertools.islice(frames, n))  # each [1, H, W, 3]
        read += len(chunk)
        if len(chunk) < n:  # the input ended: its last frame repeated up to pf (the output is cut back to num_frames)
            if read < r.num_frames:  # (fewer than counted: a file changed since, or its count was wrong)
                raise ValueError(_too_short(video, read, r))
            fill = chunk[-1] if chunk else last  # (a frame was read: num_frames >= 1)
            assert fill is not None
            chunk += [fill] * (n - len(chunk))
        last = chunk[-1]
        stack = torch.cat(chunk)  # [n, H, W, 3]
        del chunk
        pixels = _prepared(stack, video, r)  # (its copies freed on return: none kept beside the next chunk's)
        del stack
        yield pixels
        del pixels  # the consumer's now: not held here while the next chunk is read
    trim_host_heap()  # the input read: its decoding's freed buffers handed back (see trim_host_heap)


def _prepared(frames: Tensor, video: Any, r: ResolvedRequest) -> Tensor:
    """The v2v input's frames ``[n, H, W, 3]`` -> pixels ``[1, 3, n, ph, pw]`` as :func:`prepare_video` makes them."""
    if isinstance(video, Tensor):
        pixels = frames.permute(3, 0, 1, 2)[None].float() * 2 - 1  # [1, 3, n, h, w]
        return F.pad(resize_frames(pixels, r.height, r.width), r.padding)  # where the video is, as a condition
    pixels = media_io.preprocess_condition_frames(frames, r.height, r.width, just_crop=False)
    return resize_frames(F.pad(pixels, r.padding), *r.padded[:2])  # odd target sizes lose a row/column in the H.264 step


def _source_frames(video: Any, limit: int) -> Iterator[Tensor]:
    """The v2v input's first ``limit`` frames one by one, ``[1, H, W, 3]``: a tensor's (float in [0, 1], checked as
    :func:`ltxcli.media.load_media` checks it), a decoded file's (uint8), a video file's decoded as they are asked
    for (uint8; :func:`ltxcli.media.is_video_file`: a .ts or .mpg too); an image is read whole first."""
    if isinstance(video, Tensor):
        frames = video if video.ndim == 4 else video[None]
        for i in range(min(limit, frames.shape[0])):
            yield media_io.load_media(frames[i : i + 1])
    elif isinstance(video, media_io.DecodedMedia):
        yield from video.frames[:limit].split(1)
    elif media_io.is_video_file(video):
        for rgb in media_io.iter_video(video, limit):
            yield torch.from_numpy(rgb)[None]
    else:
        yield from media_io.read_media(video, max_frames=limit).frames.split(1)


def source_chunks(r: ResolvedRequest, vae: VAEConfig, size: tuple[int, int] | None = None) -> Iterator[Tensor] | None:
    """The video-to-video input's pixels (None without one) as :func:`prepared_video_chunks` in the chunks the VAE
    encoder takes (:func:`ltxcli.vae_encode.chunk_frames` of the module's chunk read now: none cut or joined), each
    resized to ``size`` (the pass it starts at: a multi-scale first pass's) when given: decoded, prepared and resized
    as the encoder takes them (:func:`ltxcli.vae_encode.encode_chunks`), so the host holds one chunk's pixels,
    not the input's, in one generation and in windows alike. Its frame rate and length are checked now."""
    from . import vae_encode

    if r.video is None:
        return None
    chunks = prepared_video_chunks(r.video, r, vae_encode.chunk_frames(vae, r.padded[2], vae_encode.ENCODE_CHUNK_LATENTS))
    return chunks if size is None else _resized(chunks, size)


def _resized(chunks: Iterator[Tensor], size: tuple[int, int]) -> Iterator[Tensor]:
    for pixels in chunks:  # per frame, so bit for bit the whole input's resize (:func:`resize_frames`)
        out = resize_frames(pixels, *size)
        del pixels  # (the full-size chunk not held beside the next one)
        yield out
        del out


def prepare_conditions(r: ResolvedRequest) -> list[PreparedCondition]:
    """Every condition medium of a resolved request read and preprocessed once, before any model work: the
    conditions' pixels. The video-to-video input is read as it is encoded (:func:`source_chunks`)."""
    prepared = [prepare_condition(c, r.height, r.width, r.num_frames, r.padding) for c in r.conditions]
    if prepared:
        trim_host_heap()
    return prepared


def trim_host_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim``; elsewhere nothing): decoding and
    preprocessing a video frame by frame leaves freed buffers scattered in the heap (about 90 MB for 57 frames at
    512x320), which would otherwise stay in the resident set for the whole run (the memory plan does not count them)."""
    import contextlib
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl has no malloc_trim)
            ctypes.CDLL(None).malloc_trim(0)


def place_conditions(
    conds: Sequence[EncodedCondition], latents: Tensor, gen: torch.Generator, *, causal: bool
) -> tuple[Tensor, Tensor, Tensor | None, int]:
    """Official ``prepare_conditioning`` on encoded conditions: blends frame-0 conditions (and the body of later
    video segments) into ``latents`` ``[1, C, f, h, w]`` in place, turns the others into extra tokens (noised
    by ``1 - strength`` from ``gen``). Returns tokens ``[1, N, C]``, pixel coords ``[1, 3, N]``, the strength
    mask ``[1, N]`` (``None`` without conditions) and the number of extra tokens (they come first)."""
    f, h, w = latents.shape[2:]
    mask = torch.zeros((1, f, h, w), dtype=torch.float32, device=latents.device) if conds else None
    extra_tokens: list[Tensor] = []
    extra_coords: list[Tensor] = []
    extra_mask: list[Tensor] = []
    for cond in conds:
        lat = cond.latents.to(latents.dtype)  # [1, C, f_l, h, w]
        f_l = lat.shape[2]
        if cond.frame == 0 and not cond.append:
            latents[:, :, :f_l] = torch.lerp(latents[:, :, :f_l], lat, cond.strength)
            mask[:, :f_l] = cond.strength
            continue
        if cond.pixel_frames > 1 and not cond.append:
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


__all__ = [
    "EncodedCondition", "PreparedCondition", "check_condition", "first_frame_pixels", "place_conditions",
    "prepare_condition", "prepare_conditions",
    "prepare_video", "record_entry", "resize_frames", "source_chunks", "trim", "trim_host_heap", "warn_parts_trim",
]
