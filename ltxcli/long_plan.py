"""The plan of a long video (:mod:`ltxcli.long_video`): whether a request runs in windows, the windows' spans,
prompts and seeds, each window as a plain request, and the checks of the looping sampler's settings before any
model work. No torch, no model."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .enhance.rules import rewrite_of
from .formatting import number_text
from .request import SEED_MAX, Condition, GenerationRequest, check_fields, check_placement, padded_size
from .sizes import check_frame_rate
from .timeline import FRAMES_PER_LATENT as _LATENT_T
from .timeline import frames_of, read_schedule, schedule_frames, window_prompts

if TYPE_CHECKING:
    from torch import Tensor

    from .presets import Preset

#: ComfyUI-LTXVideo's ``LTXVLoopingSampler`` / diffusers' defaults, in pixel frames.
DEFAULT_WINDOW = 80
DEFAULT_OVERLAP = 24
DEFAULT_OVERLAP_STRENGTH = 0.5
DEFAULT_ADAIN = 0.25
_SEED_RANGE = 2**31


@dataclass(frozen=True)
class Window:
    """One window: latent frames ``[start, end)`` of the whole video, its prompt and seed."""

    index: int
    start: int
    end: int
    prompt: str
    seed: int

    @property
    def num_frames(self) -> int:
        return _LATENT_T * (self.end - self.start - 1) + 1

    @property
    def first_frame(self) -> int:
        """The pixel frame of the whole video that is the window's frame 0."""
        return _LATENT_T * self.start

    def record(self) -> dict[str, Any]:
        return {"first_frame": self.first_frame, "num_frames": self.num_frames, "prompt": self.prompt,
                "seed": self.seed}


@dataclass(frozen=True)
class LongPlan:
    """A windowed request resolved (:func:`plan`): the windows and the looping sampler's settings."""

    request: GenerationRequest  # num_frames and frame_rate filled in
    num_frames: int
    frame_rate: float
    window: int
    overlap: int
    overlap_strength: float
    adain: float
    windows: tuple[Window, ...]  # in time order
    backward: bool = False  # made from the last window back, each conditioned on the head of the one after it

    def made(self) -> list[int]:
        """The windows' indices in the order they are made."""
        return list(range(len(self.windows)))[:: -1 if self.backward else 1]

    @property
    def overlap_latents(self) -> int:
        return self.overlap // _LATENT_T

    def settings(self) -> dict[str, Any]:
        """What the generation record lists under ``long``."""
        return {"window": self.window, "overlap": self.overlap, "overlap_strength": self.overlap_strength,
                "adain": self.adain, "windows": [w.record() for w in self.windows]}

    def prompt_requests(self) -> list[GenerationRequest]:
        """Each distinct window prompt as the first window made that takes it runs it (its conditions), under the
        run's seed: what per-window prompt enhancement rewrites, each as one generation (in the order made)."""
        made = self.made()
        first = {self.windows[i].prompt: i for i in reversed(made)}
        return [replace(self.window_request(i), seed=self.request.seed) for i in sorted(first.values(), key=made.index)]

    def condition_parts(self, c: Condition) -> list[tuple[int, int, int]]:
        """:func:`condition_parts` of condition ``c`` over the windows: ``(window index, first frame of ``c`` it
        takes, frames)`` for each window that takes a part of it (several: a video condition running past a window)."""
        made = self.made()
        spans = [(self.windows[j].start, self.windows[j].end) for j in made]
        n = min(_media_frames(c.media), self.num_frames - c.frame)  # (a file not read yet: 1, it goes whole)
        return [(made[k], at, count) for k, at, count in condition_parts(spans, c.frame, n)]

    def window_request(self, i: int, noise: Tensor | None = None) -> GenerationRequest:
        """Window ``i`` as a plain request: its frames, prompt and its rewrite, seed, the conditions' frames inside
        it (:meth:`condition_parts`)."""
        w = self.windows[i]
        conds = []
        for c in self.request.conditions:
            parts = self.condition_parts(c)
            # one part: the condition as given (its window trims it); several: each window its own frames, exactly
            conds += [replace(c, media=c.media if len(parts) == 1 else _media_part(c.media, at, count),
                              frame=c.frame + at - w.first_frame) for j, at, count in parts if j == i]
        rewrite = rewrite_of(self.request.enhanced_prompt, w.prompt)  # (per-window prompts: this window's)
        return replace(self.request, prompt=w.prompt, enhanced_prompt=rewrite, num_frames=w.num_frames, seed=w.seed,
                       conditions=tuple(conds), noise=noise, duration=None, window=None, overlap=None,
                       overlap_strength=None, adain=None, prompt_schedule=None)


# --- planning -----------------------------------------------------------------------------------------------


def holder(spans: Sequence[tuple[int, int]], frame: int) -> int | None:
    """The index in ``spans`` (latent ``[start, end)`` windows in the order they are made) of the first window made
    that holds pixel frame ``frame``: the window a keyframe there goes to (None: no window holds it)."""
    return next((j for j, (s, e) in enumerate(spans) if _LATENT_T * s <= frame <= _LATENT_T * (e - 1)), None)


def condition_parts(spans: Sequence[tuple[int, int]], frame: int, n: int) -> list[tuple[int, int, int]]:
    """The windows that take a condition of ``n`` pixel frames at pixel frame ``frame``: ``(index in spans, first
    frame of the condition it takes, frames)`` each. ``spans``: latent ``[start, end)`` windows in the order made.
    The first window made that holds its start (:func:`holder`) takes it from there (whole: that window trims it);
    a video condition (on the 8-frame grid) running past that window's last frame goes on, as ComfyUI-LTXVideo's
    looping sampler slices its guiding latents per window, in the next window: from that last frame on (the leading
    frame of its 8k + 1, in the overlap the previous tail conditions; then its frames after the overlap), while 9 or
    more are left; each part then in 8k + 1 frames that its window holds, the frames one generation of the whole
    video uses. Backward (a later window made first) the first window keeps it whole: its end cuts it."""
    j = holder(spans, frame)
    if j is None:
        return []
    parts: list[tuple[int, int, int]] = []
    at = frame
    while True:
        last = _LATENT_T * (spans[j][1] - 1)  # the window's last pixel frame
        rest = frame + n - last  # the condition's frames from it on: the next window's part
        if rest < _LATENT_T + 1 or frame % _LATENT_T or j + 1 == len(spans) or spans[j + 1][0] <= spans[j][0]:
            if not parts:  # in one window: whole, as given (the window trims it)
                return [(j, 0, n)]
            # the last part: what its window holds, in 8k + 1 (the frames one generation of the video uses)
            return [*parts, (j, at - frame, (min(frame + n - 1, last) - at) // _LATENT_T * _LATENT_T + 1)]
        parts.append((j, at - frame, last - at + 1))
        at, j = last, j + 1


def _media_frames(media: Any) -> int:
    """Frames of a condition's media read already (a tensor ``[F, H, W, 3]``, a decoded file); 1 for an image or a
    file not read yet (it goes whole to the window holding its start)."""
    shape: tuple[int, ...] = tuple(getattr(getattr(media, "frames", media), "shape", ()))
    return int(shape[0]) if len(shape) == 4 else 1


def _media_part(media: Any, start: int, count: int) -> Any:
    """Frames ``start .. start + count - 1`` of a video condition's media (a tensor, a decoded file: duck-typed, no
    torch here)."""
    end = start + count
    if hasattr(media, "frames"):  # ltxcli.media.DecodedMedia
        return replace(media, frames=media.frames[start:end], listed=count, times=media.times[start:end])
    return media[start:end]


def split_windows(latent_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """diffusers' ``split_into_temporal_windows``: latent ``[start, end)`` windows of ``window`` latent frames,
    ``window - overlap`` apart, the last one ending at ``latent_frames``."""
    stride = max(window - overlap, 1)
    out, start = [], 0
    while start < latent_frames:
        end = min(start + window, latent_frames)
        out.append((start, end))
        if end == latent_frames:
            break
        start += stride
    return out


def windowed(request: GenerationRequest) -> bool:
    """Whether ``request`` asks for windows itself (a longer-than-the-model request is windowed too: :func:`plan`)."""
    r = request
    return r.window is not None or r.overlap is not None or r.prompt_schedule is not None or "|" in r.prompt


def _latent_frames(num_frames: int) -> int:
    """Latent frames of a ``num_frames``-frame video (its padded length: ``8 k + 1`` frames make ``k + 1``)."""
    return (padded_size(32, 32, num_frames)[2] - 1) // _LATENT_T + 1


def _in_windows(r: GenerationRequest, num_frames: int, frame_rate: float, max_seconds: float | None) -> bool:
    """Whether ``r`` at ``num_frames`` runs in windows: it asks for them, or outlasts the model's time range."""
    return windowed(r) or (max_seconds is not None
                           and (_latent_frames(num_frames) - 1) * _LATENT_T / frame_rate > max_seconds)


def checked_frames(request: GenerationRequest, max_seconds: float) -> int:
    """The frames whose length must fit the model's time range: the request's, or for a windowed request (or
    one longer than ``max_seconds`` at its frame rate) one window's. Needs ``num_frames`` and ``frame_rate``."""
    r = request
    assert r.num_frames is not None and r.frame_rate is not None
    if not _in_windows(r, r.num_frames, r.frame_rate, max_seconds):
        return r.num_frames
    return check_window_time(r.window, r.num_frames, r.frame_rate, max_seconds)


def check_window_time(window: int | None, num_frames: int, frame_rate: float, max_seconds: float) -> int:
    """The frames of one window of a ``num_frames`` video, checked against the model's time range: a ValueError
    names the window (``None``: the default one) and the largest that fits, not the window's frame count."""
    check_frame_rate(frame_rate)  # (an extension's windows come here first: 0 divided by zero)
    given = DEFAULT_WINDOW if window is None else int(window)
    frames = min(num_frames, _LATENT_T * (max(given // _LATENT_T, 2) - 1) + 1)
    seconds = (padded_size(32, 32, frames)[2] - 1) / frame_rate
    if seconds > max_seconds:
        k = int(max_seconds * frame_rate) // _LATENT_T  # latent frames after the first that fit
        name = f"window={window} ({frames} frames)" if window is not None else \
            f"the default window ({DEFAULT_WINDOW}: {frames} frames)"
        # the smallest window (2 latent frames: 9 frames) needs 8 frames' time: else only a higher rate helps
        fix = f"use a window of at most {_LATENT_T * (k + 1)} ({_LATENT_T * k + 1} frames)" if k >= 1 else \
            f"no window fits at this rate: use a frame rate of at least {_LATENT_T / max_seconds:g} fps"
        raise ValueError(f"{name} at {frame_rate:g} fps lasts {seconds:.1f} s, above the model's position range of "
                         f"{max_seconds:g} s: {fix}")
    return frames


def check(request: GenerationRequest) -> tuple[int, int, float, float]:
    """The looping sampler's settings of ``request`` with their defaults, checked (ValueError naming the value and
    the rule; the prompt schedule is read), before any model work: ``(window, overlap, strength, adain)``."""
    r = request
    window = DEFAULT_WINDOW if r.window is None else int(r.window)
    overlap = DEFAULT_OVERLAP if r.overlap is None else int(r.overlap)
    strength = DEFAULT_OVERLAP_STRENGTH if r.overlap_strength is None else float(r.overlap_strength)
    factor = DEFAULT_ADAIN if r.adain is None else float(r.adain)
    if window < 2 * _LATENT_T:
        raise ValueError(f"window={window} must be at least {2 * _LATENT_T} frames (e.g. {DEFAULT_WINDOW})")
    if not _LATENT_T <= overlap <= window - _LATENT_T:
        hi = window - _LATENT_T  # the example: the default, or the nearest end of the range for this window
        # a value the user did not give is named as the default ("--window 24" alone said "overlap=24 must be ...")
        name = f"overlap={overlap}" if r.overlap is not None else f"the default overlap ({DEFAULT_OVERLAP})"
        span = f"window={window}" if r.window is not None else f"the default window ({DEFAULT_WINDOW})"
        raise ValueError(f"{name} must be in [{_LATENT_T}, {hi}] frames for {span} (e.g. "
                         f"{min(max(DEFAULT_OVERLAP, _LATENT_T), hi)})")
    for name, v in (("overlap_strength", strength), ("adain", factor)):
        if not 0 <= v <= 1:
            raise ValueError(f"{name}={number_text(v)} must be in [0, 1]")
    if r.prompt_schedule is not None:  # read, and each start converted, before any model work
        schedule_frames(read_schedule(r.prompt_schedule), float(r.frame_rate or 24))
    return window, overlap, strength, factor


def plan(request: GenerationRequest, preset: Preset, max_seconds: float | None = None,
         backward: bool = False) -> LongPlan | None:
    """The windows of ``request`` (None: it runs as one plain request). ``max_seconds``: the model's time range
    (a longer request is windowed even without asking). ``backward``: the windows walk back from the video's end
    (a backward extension), split and seeded as forward's counting latent frames from the end. Raises ValueError
    for settings out of range, and for ``second_pass`` in several windows (each runs one pass: ``first_pass``)."""
    from .request import preset_size

    r = check_fields(request)  # Python numbers (seeds are derived from its seed)
    frame_rate = float(preset_size(preset, r.height, r.width, r.num_frames, r.frame_rate)[3])
    check_frame_rate(frame_rate)  # first: 0 divided the window's seconds by zero, a negative rate passed them
    asked = frames_of(r, frame_rate)
    num_frames = preset.num_frames if asked is None else asked
    window, overlap, strength, factor = check(r)  # a value out of range is refused in one window too, as ltx does
    if not _in_windows(r, num_frames, frame_rate, max_seconds):
        return None
    if max_seconds is not None:  # before the first window, naming the window (not the frames it makes)
        check_window_time(r.window, num_frames, frame_rate, max_seconds)
    check_placement(r.conditions, num_frames)  # the whole video's frames (the windows cover its padded length)
    latents = _latent_frames(num_frames)
    spans = split_windows(latents, window // _LATENT_T, overlap // _LATENT_T)  # in the order they are made
    if r.second_pass is not None and len(spans) > 1:
        # each window runs one pass with the first pass's settings (long_video._one_pass): a second pass's settings
        # would be dropped without a word (one window runs as one generation: both passes, second_pass too)
        raise ValueError(f"second_pass= sets the second pass of a multi-scale run, which a video in {len(spans)} "
                         "windows does not run (each window is one pass at the requested size, with the first pass's "
                         "settings): give them in first_pass= or at the top level")
    seed = r.seed if r.seed is not None else secrets.randbelow(_SEED_RANGE)
    _check_window_seeds(seed, spans)
    seeds = [seed + s for s, _ in spans]  # the first window made takes the run's seed
    if backward:  # the spans counted from the end -> in time order
        spans, seeds = [(latents - e, latents - s) for s, e in reversed(spans)], seeds[::-1]
    prompts = window_prompts(r, spans, frame_rate)  # in time order, backward too
    windows = tuple(Window(i, s, e, prompts[i], seeds[i]) for i, (s, e) in enumerate(spans))
    full = replace(r, num_frames=num_frames, frame_rate=frame_rate, seed=seed, duration=None)
    return LongPlan(full, num_frames, frame_rate, window, overlap, strength, factor, windows, backward)


def check_seed(request: GenerationRequest, max_seconds: float) -> None:
    """Before any work: the seed of a request that runs in windows (as :func:`plan` decides; ``num_frames`` and
    ``frame_rate`` filled in) leaves room for its window seeds, ``seed + first latent frame``."""
    r = request
    assert r.num_frames is not None and r.frame_rate is not None
    if r.seed is None or r.extend is not None or not _in_windows(r, r.num_frames, r.frame_rate, max_seconds):
        return
    window, overlap, _, _ = check(r)
    _check_window_seeds(int(r.seed), split_windows(_latent_frames(r.num_frames), window // _LATENT_T,
                                                   overlap // _LATENT_T))


def _check_window_seeds(seed: int, spans: Sequence[tuple[int, int]]) -> None:
    """A valid ``seed`` whose last window seed would not be: one line naming it and the largest usable one (not
    the derived seed, which the user never gave)."""
    top = spans[-1][0]
    if 0 <= seed <= SEED_MAX < seed + top:
        raise ValueError(f"seed={seed} is too large for a video in {len(spans)} windows (window seeds are seed + "
                         f"their first latent frame, up to seed + {top}, above 2**63 - 1): use a seed of at most "
                         f"{SEED_MAX - top}")


#: :func:`window_frames`' answer: each window's latent ``[start, end)`` in the order made, and the latent frames of
#: the previous window's tail that each later window appends as tokens.
WindowSplit = tuple[tuple[tuple[int, int], ...], int]


def window_frames(request: GenerationRequest, frame_rate: float, max_seconds: float,
                  backward: bool = False) -> Callable[[int], WindowSplit | None]:
    """For the memory plan: ``num_frames -> (each window's latent [start, end) in the order made, latent frames of
    the previous window's tail each later window appends)`` where ``request`` at that length runs in several windows
    (as :func:`plan` decides; ``backward``: split from the end, made last first), else None. The tail is
    ``overlap // 8`` frames, none with ``overlap_strength`` 0 (:class:`ltxcli.long_video._LongRun` appends none);
    a keyframe goes to the first window made holding its frame (:func:`holder`). The window settings are read and
    checked once, here."""
    window, overlap, strength, _ = check(request)

    def frames(num_frames: int) -> WindowSplit | None:
        if not _in_windows(request, num_frames, frame_rate, max_seconds):
            return None
        latents = _latent_frames(num_frames)
        spans = split_windows(latents, window // _LATENT_T, overlap // _LATENT_T)
        if len(spans) == 1:
            return None
        if backward:  # (as plan: the spans counted from the end; made in this order)
            spans = [(latents - e, latents - s) for s, e in spans]
        return tuple(spans), overlap // _LATENT_T if strength > 0 else 0

    return frames



__all__ = [
    "DEFAULT_ADAIN", "DEFAULT_OVERLAP", "DEFAULT_OVERLAP_STRENGTH", "DEFAULT_WINDOW", "LongPlan", "Window", "WindowSplit",
    "check", "check_seed", "check_window_time", "checked_frames", "condition_parts", "holder", "plan", "split_windows",
    "window_frames", "windowed",
]
