"""Video extension and the defaults a video input gives (``ltx extend``, ``ltx v2v``).

An :class:`~ltxcli.request.Extension` request (run by :func:`run_extension`, as :func:`ltxcli.run_batch` does for
every item with ``extend``) becomes an ordinary generation conditioned on the input's frames, with the official
video-extension semantics of ``inference.py`` (a video condition, trimmed to ``8k + 1`` frames, blurred and
CRF-compressed like every condition; at frame 0 it is blended into the first latents, later it also adds its first
latents as extra tokens). The 8k+1 grid decides the plan (:func:`plan_extension`), for an input of ``M`` frames
and ``N`` new:

* forward: the context is the input's last ``K`` frames, ``K`` the largest ``8k + 1`` <= ``M`` (and short
  enough for the model's time range); the generation is ``K + N`` frames with the context at frame 0;
* backward: the generation is ``N8 + K`` frames (``N8``: ``N`` rounded up to a multiple of 8, where a video
  condition may start) with the input's first ``K`` frames at frame ``N8``; its first ``N8 - N`` frames are
  dropped.

The output is the input's own frames (all ``M``, as decoded, resized only when the output size differs),
followed (backward: preceded) by the ``N`` new frames: the input's remainder beyond the context (``M - K <= 7``
frames forward, more when the time range limits ``K``) is kept, never re-generated. Conditions the request adds
are in the output's frames and must fall in the new ones.

A forward extension whose generation does not fit one window (it asks for windows: a ``"a | b"`` prompt, a
window or overlap; or it outlasts the model's time range) runs in windows (:func:`ltxcli.long_video.generate`,
the looping sampler of ComfyUI-LTXVideo as diffusers ports it): the generation is the context and the ``N`` new
frames, the context (``K`` the largest ``8k + 1`` <= ``min(M, W - 8)``, ``W`` one window's frames: at least one
latent frame of new ones) is a video condition at frame 0 of the first window, so that window is exactly the
single-window extension by its ``W - K`` new frames, and each later window is conditioned on the previous
window's tail as a long video's are. A windowed request whose generation fits one window runs as the
extension without windows (the first ``|`` part as its prompt), as a long video's does. A prompt schedule counts
its starts in output frames, as conditions do (:func:`generation_schedule` shifts it to the generation's).

Backward in windows mirrors it (``long_video.generate(backward=True)``): the generation is the ``N8`` frames
before the input's first ``K`` (``K`` as forward's), the windows split from its end, the first one made holding
the context at its tail (so it is the single-window backward extension by its ``W - K`` new frames, under the
run's seed), each next one earlier in time, conditioned at its tail on the head of the one made before it. The
windows' prompts are read in time order as forward's: ``"a | b"`` gives the earliest window ``a`` and every later
one up to the input ``b``; a schedule's entry in force at a window's first output frame is its prompt. Window
seeds are the run's seed plus the latent frames from the generation's end to the window's end.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .encode_memo import share
from .enhance.rules import per_window, request_plan
from .field_values import check_run_options
from .locks import serialised
from .long_plan import DEFAULT_WINDOW, check_window_time, window_frames
from .request import Condition, Extension, GenerationRequest, check_fields, media_path

# (moved to .source, which the pipeline's video-to-video uses too; still exported here)
from .source import check_extension as check_extension
from .source import check_source as check_source
from .source import check_source_length as check_source_length
from .source import source_defaults as source_defaults

if TYPE_CHECKING:  # torch, media and the pipeline are imported where used: the CLI imports this module early
    import torch

    from .media.write import Quantize
    from .pipeline import Pipeline
    from .presets import Preset
    from .progress import ProgressFn
    from .request import Control
    from .result import GenerationResult


@dataclass(frozen=True)
class ExtensionPlan:
    """Where the input and the new frames sit in the generation (see the module docstring)."""

    input_frames: int  # M
    new_frames: int  # N
    backward: bool
    context: int  # K: the input frames the generation is conditioned on (8k + 1)
    lead: int  # backward: N rounded up to a multiple of 8 (the context's frame); forward: 0

    @property
    def gen_frames(self) -> int:
        return self.lead + self.context + (0 if self.backward else self.new_frames)

    @property
    def context_start(self) -> int:
        """The input frame the context starts at."""
        return 0 if self.backward else self.input_frames - self.context

    @property
    def first_output_frame(self) -> int:
        """The output frame of the generation's frame 0 (backward: before the output, ``lead - N`` dropped)."""
        return self.new_frames - self.lead if self.backward else self.context_start

    def gen_frame(self, frame: int) -> int:
        """An output frame (of the new ones) -> its frame in the generation (ValueError inside the input)."""
        first, last = (0, self.new_frames - 1) if self.backward else (self.input_frames, self.input_frames + self.new_frames - 1)
        if not first <= frame <= last:
            raise ValueError(f"a condition at frame {frame} falls outside the new frames {first}-{last} of this "
                             "extension (the input's own frames are kept as they are)")
        return frame + self.lead - self.new_frames if self.backward else frame - self.input_frames + self.context


def recorded_offset(record: Mapping[str, Any]) -> int:
    """:attr:`ExtensionPlan.first_output_frame` of a generation record (0 without ``extend``): what its windows'
    ``first_frame`` (generation frames) are shifted by to count in output frames, as its prompt schedule does."""
    ext = record.get("extend") or {}
    if not ext:
        return 0
    new, backward = int(ext["frames"]), bool(ext["backward"])
    return ExtensionPlan(int(record["num_frames"]) - new, new, backward, int(ext["context_frames"]),
                         math.ceil(new / 8) * 8 if backward else 0).first_output_frame


def plan_extension(input_frames: int, new_frames: int, backward: bool, longest: int) -> ExtensionPlan:
    """The plan for ``new_frames`` more frames of an ``input_frames``-frame video, the generation at most
    ``longest`` frames (the model's time range at this frame rate); ValueError names the limit."""
    if new_frames < 1:
        raise ValueError(f"frames={new_frames} must be at least 1 (the frames to add)")
    lead = math.ceil(new_frames / 8) * 8 if backward else 0
    room = longest - (lead if backward else new_frames)
    if room < 1:
        raise ValueError(f"frames={new_frames} new frames do not fit in the model's time range ({longest} frames at "
                         f"this frame rate) with any context: add at most {longest - 8 if backward else longest - 1}")
    context = (min(input_frames, room) - 1) // 8 * 8 + 1
    return ExtensionPlan(input_frames, new_frames, backward, context, lead)


def plan_windows(request: GenerationRequest, input_frames: int, max_seconds: float) -> ExtensionPlan:
    """The plan of ``request``'s extension (``frame_rate`` filled in) of an ``input_frames``-frame video, the model's
    time range ``max_seconds``: :func:`plan_extension`'s when its generation runs as one (not in windows, or in
    one window); else the context leaves one window room for at least one latent frame of new frames (see the
    module docstring). ValueError names the limit."""
    ext, fps = request.extend, request.frame_rate
    assert ext is not None and fps is not None
    try:
        one: ExtensionPlan | None = plan_extension(input_frames, ext.frames, ext.backward,
                                                   longest_frames([max_seconds], fps))
    except ValueError:
        one = None  # more new frames than the time range holds: windows, as a long video is made past it
    # None: the generation runs as one (window_frames checks the window settings)
    if one is not None and window_frames(request, fps, max_seconds)(one.gen_frames) is None:
        return one
    window = check_window_time(request.window, input_frames + ext.frames, fps, max_seconds)  # W, 8k + 1 frames
    lead = math.ceil(ext.frames / 8) * 8 if ext.backward else 0
    return ExtensionPlan(input_frames, ext.frames, ext.backward, window_context(input_frames, window), lead)


def check_window_seeds(request: GenerationRequest, max_seconds: float) -> None:
    """Before any work (``num_frames`` and ``frame_rate`` filled in: :func:`source_defaults`): an extension's
    plan (:func:`plan_windows`), and in windows room for the window seeds (:func:`ltxcli.long_video.check_seed`
    of its generation), refused in one line (ValueError) as a long video's are, not once the model has loaded."""
    from .long_plan import check_seed

    ext = request.extend
    if ext is None or request.num_frames is None or request.frame_rate is None:
        return
    plan = plan_windows(request, request.num_frames - ext.frames, max_seconds)
    check_seed(dataclasses.replace(request, extend=None, num_frames=plan.gen_frames), max_seconds)


def window_context(input_frames: int, window: int) -> int:
    """The context of an extension in windows of ``window`` frames: the largest ``8k + 1`` that leaves the first
    window at least one latent frame (8 frames) of new ones."""
    return (min(input_frames, window - 8) - 1) // 8 * 8 + 1


def longest_frames(max_pos: Any, frame_rate: float) -> int:
    """The most frames (8k + 1) the model's time range (``max_pos[0]`` seconds) holds at ``frame_rate``."""
    return int(max_pos[0] * frame_rate) // 8 * 8 + 1


#: ``ltx v2v`` / ``ltx extend`` help of the size options, whose defaults are the input's (:func:`source_defaults`).
SOURCE_OPTION_HELP = {
    "height": "Height in pixels (default: VIDEO's, or its aspect ratio at the preset's pixel count when VIDEO is "
              "larger; the preset's when only --width is given).",
    "width": "Width in pixels (default: VIDEO's, or its aspect ratio at the preset's pixel count when VIDEO is "
             "larger; the preset's when only --height is given).",
    "num_frames": "Number of frames (default: VIDEO's).",
    "frame_rate": "Frame rate (default: VIDEO's).",
}
EXTEND_OPTION_HELP = SOURCE_OPTION_HELP | {
    "num_frames": "Number of frames of the output: VIDEO's plus --frames (the default, and the only value accepted).",
    "window": f"Window length in frames (default {DEFAULT_WINDOW}, ComfyUI-LTXVideo's looping sampler) where the context and the "
              "new frames outlast one; giving it (or --overlap, a 'a | b | c' prompt) makes windows.",
    "prompt_schedule": "JSON lines {\"start\": FRAME or \"SECONDSs\", \"prompt\": TEXT}, starts counted in output "
                       "frames (VIDEO's first is 0; --backward: the first new frame); each window takes the "
                       "prompt in force at its first frame (makes windows).",
}
#: The long-video options an extension refuses (a duration, the temporal upscaler) or that do not apply to it
#: (--no-temporal-upscale of a --from record): ``ltx extend`` accepts them, to refuse them in one line, but its
#: --help leaves them out (it shows the window options and the prompt schedule).
NOT_FOR_EXTEND = ("duration", "temporal_upscale", "no_temporal_upscale")


def parse_extension(value: Any, where: str) -> Extension:
    """A batch line's ``"extend": {"video": PATH, "frames": N, "backward": false}``."""
    ok = isinstance(value, dict) and isinstance(value.get("video"), str) and not set(value) - {"video", "frames", "backward"}
    frames, backward = (value.get("frames"), value.get("backward", False)) if ok else (None, None)
    if not ok or isinstance(frames, bool) or not isinstance(frames, int) or not isinstance(backward, bool):
        raise ValueError(f"{where}: extend is {{\"video\": PATH, \"frames\": N, \"backward\": false}}")
    return Extension(value["video"], frames, backward)


def _fit(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Float ``[F, H, W, 3]`` -> ``[F, height, width, 3]``: centre crop to the aspect ratio and a bilinear resize
    (the pipeline's :func:`~ltxcli.conditions.resize_frames`); as is at that size already (then the output holds
    the input's decoded frames code for code)."""
    from . import media
    from .conditions import resize_frames

    if tuple(frames.shape[1:3]) == (height, width):
        return frames
    left, top, right, bottom = media.centre_crop_box(frames.shape[2], frames.shape[1], height, width)
    crop = frames[:, top:bottom, left:right].permute(3, 0, 1, 2)[None]  # [1, 3, F, h, w]
    return resize_frames(crop, height, width)[0].permute(1, 2, 3, 0).clamp(0, 1)


def generation_schedule(request: GenerationRequest, plan: ExtensionPlan, warn: bool = True
                        ) -> list[dict[str, Any]] | None:
    """An extension's prompt schedule (``frame_rate`` filled in), whose starts count in output frames as its
    keyframes do, as its generation's (counted from its frame 0, output frame ``plan.first_output_frame``: forward
    the context's first, backward up to 7 frames before the first new one): the entry in force there starts the
    generation, later ones shifted; earlier ones fall in the input's own frames, which no window makes (one
    warning names them, unless not ``warn``)."""
    if request.prompt_schedule is None:
        return None
    import warnings

    from .timeline import in_force, read_schedule, schedule_frames

    assert request.frame_rate is not None
    entries = schedule_frames(read_schedule(request.prompt_schedule), request.frame_rate)
    start = plan.first_output_frame
    first = in_force(entries, start)
    if first and warn:
        warnings.warn(f"prompt schedule: the entries starting at frame {', '.join(str(f) for f, _ in entries[:first])}"
                      f" fall in the input's own frames (the generation starts at output frame "
                      f"{start}): used by no window", stacklevel=3)
    return [{"start": max(f - start, 0), "prompt": p} for f, p in entries[first:]]


def generation_request(request: GenerationRequest, plan: ExtensionPlan, warn: bool = True) -> GenerationRequest:
    """The generation of the extension ``request`` as ``plan`` places it: no ``extend``, ``plan.gen_frames``
    frames, its prompt schedule counted from the generation's frame 0 (:func:`generation_schedule`, which warns
    unless not ``warn``) and no conditions (each caller places the context and the user's own). Whether it runs
    in windows, and its passes, are those of this request (``ltx generate``'s warnings of ignored options use it)."""
    return dataclasses.replace(request, extend=None, num_frames=plan.gen_frames, conditions=[],
                               prompt_schedule=generation_schedule(request, plan, warn))


class InputFrames:
    """The extension inputs of one run (a job or a batch: its enhancement stage, then its generations), each file
    decoded once while this object holds it: the stage captions the frame the new ones continue from
    (:func:`continued_frame`), each run takes the whole input (:func:`run_extension`). Keyed on the file's real
    path, modification time and size (a file replaced in between is decoded anew); the last ``keep`` files are
    held, as uint8 ``[M, H, W, 3]`` (a quarter of float32), and :meth:`take` lets go of a file at its last use:
    the runs :meth:`expect` announced (a batch's lines on one input share one decoding), else the first.
    Owned by its caller, not a module global: the frames go when it does."""

    def __init__(self, keep: int = 1) -> None:
        self.keep = keep
        self._held: dict[tuple[str, int, int], Any] = {}  # key -> media.DecodedMedia, oldest first
        self._counts: dict[tuple[str, int, int], int] = {}  # key -> frames that decode (a few ints)
        self._uses: dict[tuple[str, int, int], int] = {}  # key -> runs still to take it (announced by expect)
        self._context: tuple[Any, torch.Tensor] | None = None  # (key, how) -> a prepared context (context())

    @staticmethod
    def _key(video: str | os.PathLike[str]) -> tuple[str, int, int] | None:
        try:
            st = os.stat(video)
        except OSError:  # (the decoding says what is wrong with the file)
            return None
        return os.path.realpath(video), st.st_mtime_ns, st.st_size

    def decoded(self, video: str | os.PathLike[str]) -> Any:
        """``video`` decoded (:func:`ltxcli.media.read_video`, a :class:`~ltxcli.media.DecodedMedia`), once."""
        from . import media

        key = self._key(video)
        if key is not None and key in self._held:
            return self._held[key]
        read = media.read_video(video)
        if key is not None and self.keep > 0:
            while len(self._held) >= self.keep:  # the oldest goes: a batch holds no more than ``keep`` inputs
                del self._held[next(iter(self._held))]
            self._held[key] = read
        return read

    def count(self, video: str | os.PathLike[str]) -> int:
        """The frames of ``video`` that decode (:func:`ltxcli.media.source_frame_count` of its decoding): a
        truncated file's warning said once, however often a run asks (its checks, then the run's own)."""
        from . import media

        key = self._key(video)
        if key is None:  # (no file to key it on: decoding it says what is wrong)
            return media.source_frame_count(self.decoded(video))
        if key not in self._counts:
            self._counts[key] = media.source_frame_count(self.decoded(video))
        return self._counts[key]

    def expect(self, videos: Iterable[str | os.PathLike[str]]) -> None:
        """Announce the runs that will :meth:`take` each of ``videos`` (one entry a run: a batch's extensions), so
        that a file is held for the next run of it (while it is among the last ``keep``), not decoded again."""
        for video in videos:
            if (key := self._key(video)) is not None:
                self._uses[key] = self._uses.get(key, 0) + 1

    def take(self, video: str | os.PathLike[str]) -> torch.Tensor:
        """``video``'s frames, float32 ``[M, H, W, 3]`` in [0, 1] as :func:`ltxcli.media.load_video` gives them;
        the file let go at its last announced run (the run's float32 copy is all that stays), else held for the
        next."""
        pixels, key = self.decoded(video).pixels(), self._key(video)
        if key is not None and (left := self._uses.pop(key, 1) - 1) > 0:
            self._uses[key] = left
        elif key is not None:
            self._held.pop(key, None)
        return pixels

    def context(self, video: str | os.PathLike[str], how: tuple[Any, ...], make: Callable[[], torch.Tensor]
                ) -> torch.Tensor:
        """An extension's context as its run prepares it (``make()``: ``[K, ph, pw, 3]``, cropped, resized,
        blurred, CRF-compressed and padded), after :meth:`take`; held for the next announced run of ``video``
        prepared the same ``how`` (frames, size, padding), which then neither prepares it nor, handed the same
        tensor, VAE-encodes it again (:mod:`ltxcli.encode_memo`). One context is held, none past the last run."""
        key = self._key(video)
        held = self._context
        tensor = held[1] if held is not None and key is not None and held[0] == (key, how) else share(make())
        self._context = ((key, how), tensor) if key is not None and key in self._uses else None
        return tensor


def continued_frame(video: str | os.PathLike[str], backward: bool, inputs: InputFrames | None = None
                    ) -> torch.Tensor:
    """The input frame an extension's new frames continue from, ``[1, H, W, 3]`` in [0, 1] as decoded: forward
    the input's last, backward its first (which they lead into). ``inputs``: the run's decoded inputs (the whole
    file is decoded there, for the run to take), else the file is read for that frame."""
    from . import media

    if inputs is not None:
        frames = inputs.decoded(video).frames  # uint8 [M, H, W, 3]
        return (frames[:1] if backward else frames[-1:]).float().div_(255.0)
    return media.load_video(video, max_frames=1) if backward else media.load_video(video)[-1:].clone()


def enhancement_units(request: GenerationRequest, preset: Preset, max_seconds: float | None = None,
                      image: torch.Tensor | None = None, *, inputs: InputFrames | None = None,
                      pixels: bool = True) -> list[GenerationRequest]:
    """What the prompt of the extension ``request`` is enhanced as (:func:`ltxcli.enhance.units.enhanced`), each
    one prompt under the request's seed; ``max_seconds``: the model's time range (default: the released models'
    20 s). The official enhancer has no extension: it captions an image for image-to-video, and the new frames
    continue from the input's last frame (backward: lead into its first), so that frame (``image``, else
    :func:`continued_frame`, from ``inputs`` when given) is the image at frame 0 of the generation, its keyframes
    besides (which keep the prompt). One prompt: that generation; per-window prompts: each distinct one as the
    first of its windows made that takes it (the image in the first window made: backward the latest, at its frame
    0). Just the request when nothing is rewritten (nothing read). ``pixels`` False: the image is a black 1x1
    stand-in, no frame is decoded (which units are rewritten, and how, depends on where the conditions are, not on
    what they show: the memory plan's question)."""
    ext = request.extend
    assert ext is not None
    if request.enhanced_prompt is not None or (not per_window(request) and request_plan(request, preset).kind is None):
        return [request]
    from . import long_video
    from .models.configs import TransformerConfig

    if request.num_frames is None or request.frame_rate is None:  # (ltx generate's items are completed already)
        request = dataclasses.replace(request)
        source_defaults(request, preset)
    assert request.num_frames is not None
    max_seconds = float(TransformerConfig.positional_embedding_max_pos[0]) if max_seconds is None else max_seconds
    plan = plan_windows(request, request.num_frames - ext.frames, max_seconds)
    if image is None:
        import torch

        image = continued_frame(ext.video, ext.backward, inputs) if pixels else torch.zeros(1, 1, 1, 3)
    gen = dataclasses.replace(generation_request(request, plan, warn=False), conditions=[  # (the run warns)
        Condition(image, 0), *(dataclasses.replace(c, frame=plan.gen_frame(c.frame)) for c in request.conditions)])
    p = long_video.plan(gen, preset, max_seconds, ext.backward) if per_window(request) else None
    if p is not None and ext.backward:  # the image leads the first window made (the latest), as forward's first
        at = p.windows[p.made()[0]].first_frame
        p = dataclasses.replace(p, request=dataclasses.replace(p.request, conditions=(
            Condition(image, at), *p.request.conditions[1:])))
    return [gen] if p is None else p.prompt_requests()


def generation_control(control: Control, plan: ExtensionPlan) -> Control | None:
    """An extension's IC-LoRA control, given in output frames as its conditions are, from the generation's first
    frame on: forward the input's frame ``plan.context_start``; backward ``lead - new_frames`` frames before the
    output (frames the generation drops), where the control's first frame stands in. None when the control ends
    before the generation starts (as a long video's window past its control)."""
    import torch

    from . import media

    early = -plan.first_output_frame  # the output frame of the generation's frame 0, negated
    frames = media.load_media(control.media, max_frames=plan.gen_frames - early)[max(-early, 0):]
    if frames.shape[0] == 0:
        return None
    if early > 0:
        frames = torch.cat([frames[:1].expand(early, -1, -1, -1), frames])
    return dataclasses.replace(control, media=frames)


def _context_pixels(ctx: torch.Tensor, r: Any) -> torch.Tensor:
    """The context frames ``[K, H, W, 3]`` as every file condition is prepared (crop, resize, blur, CRF; the
    generation's size ``r``, padded as inference.py pads media) -> ``[K, ph, pw, 3]`` in [0, 1]."""
    import torch

    from . import media
    from .conditions import resize_frames

    pixels = media.preprocess_condition_frames(ctx, r.height, r.width)  # [1, 3, K, h, w] in [-1, 1]
    pixels = torch.nn.functional.pad(resize_frames(pixels, r.height, r.width), r.padding)
    return ((pixels[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)


@serialised
def run_extension(pipe: Pipeline, request: GenerationRequest, *, progress: ProgressFn | None = None,
                  stream: bool = False, resume: str | os.PathLike[str] | None = None,
                  keep_state: bool = True, inputs: InputFrames | None = None) -> GenerationResult:
    """Generate ``request`` (with ``extend``) as :meth:`Pipeline.run` does: the result is the whole output video
    (input and new frames; streamed when ``stream``), its settings those of the output, with ``extend``. In
    windows (see the module docstring) ``resume`` and ``keep_state`` are :func:`ltxcli.long_video.generate`'s.
    ``inputs``: the decoded inputs of the run around it (its enhancement stage's), which it takes its input from
    instead of decoding it again."""
    import torch

    from . import long_video, media
    from .control import control_record
    from .enhance.units import enhanced
    from .long_state import saved_seed

    check_run_options(progress, stream)  # before the input is decoded
    request = check_fields(request)  # a copy, with Python numbers: the defaults below are filled in it
    ext = request.extend
    if ext is None:
        raise ValueError("run_extension needs a request with extend= (an Extension)")
    check_extension(request, pipe.preset)
    if request.video is not None:
        raise ValueError("an extension cannot also be video-to-video: give extend or video, not both")
    source_defaults(request, pipe.preset, inputs)
    assert request.frame_rate is not None and request.height is not None and request.width is not None
    frame_rate = request.frame_rate  # (the rewrite below returns a new request: the checked value kept)
    frames = media.load_video(ext.video) if inputs is None else inputs.take(ext.video)  # float [M, H, W, 3]
    max_pos = pipe.transformer.config.positional_embedding_max_pos
    plan = plan_windows(request, frames.shape[0], float(max_pos[0]))
    if request.seed is None:  # the rewrite samples under the run's seed: drawn here (resumed: the state's)
        saved = saved_seed(Path(resume)) if resume is not None else None
        request.seed = secrets.randbelow(2**31) if saved is None else saved
    if request.enhanced_prompt is None:  # (ltx generate's stage rewrote it before the model loaded)
        image = frames[:1] if ext.backward else frames[-1:]
        request = enhanced(pipe, request, enhancement_units(request, pipe.preset, float(max_pos[0]), image))
    user = [dataclasses.replace(c, frame=plan.gen_frame(c.frame)) for c in request.conditions]
    # the generation, in windows or not as long_video.generate decides (one: overlap_strength, adain dropped),
    # encoding the rewrite made above and enhancing nothing itself (its context is no image of the rule's)
    inner = dataclasses.replace(generation_request(request, plan), enhance_prompt="off")
    # the size and padding (a length the time range holds: in windows the generation is longer)
    r = pipe.resolve(dataclasses.replace(inner, num_frames=min(plan.gen_frames, longest_frames(max_pos, frame_rate))))
    # the context prepared as a file condition is, handed over as a tensor [K, ph, pw, 3] in [0, 1]; a batch's next
    # extension of the same input, context and size takes the same tensor: not prepared or VAE-encoded again
    how = (plan.context_start, plan.context, r.height, r.width, tuple(r.padding))
    prepared = functools.partial(_context_pixels, frames[plan.context_start : plan.context_start + plan.context], r)
    context = Condition(prepared() if inputs is None else inputs.context(ext.video, how, prepared), plan.lead, 1.0)
    del prepared
    control = None if request.control is None else generation_control(request.control, plan)
    if request.control is not None and control is None:  # all of it in the input's kept frames: nothing controlled
        import warnings

        warnings.warn(f"control {media_path(request.control.media) or '(frames)'}: it ends before output frame "
                      f"{plan.context_start}, where the generation starts (the input's frames before it are kept): "
                      "no frame is controlled; give a control of the output's length", stacklevel=2)
    result = long_video.generate(pipe, dataclasses.replace(inner, conditions=[context, *user], control=control),
                                 progress=progress, stream=True, resume=resume, keep_state=keep_state,
                                 frame_offset=plan.first_output_frame,  # (a schedule counts output frames)
                                 backward=plan.backward)
    kept = _fit(frames, r.height, r.width)
    del frames
    lo = plan.lead - plan.new_frames if plan.backward else plan.context  # the new frames of the generation

    def spliced(chunk_frames: int, quantize: Quantize) -> Iterator[torch.Tensor]:
        def own() -> Iterator[torch.Tensor]:
            for a in range(0, kept.shape[0], chunk_frames):
                yield media.to_uint8(kept[a : a + chunk_frames], quantize)

        def new() -> Iterator[torch.Tensor]:
            seen = 0
            for chunk in result.frames(chunk_frames, quantize):
                a, b = max(lo - seen, 0), min(lo + plan.new_frames - seen, len(chunk))
                seen += len(chunk)
                if a < b:
                    yield chunk[a:b]
            # in windows the latents and the step cache's tally are complete once the last window is decoded; the
            # decode's windows (a latents file replays them) are known once it ran
            out.latents, out.settings["cache"] = result.latents, result.settings["cache"]
            out.decode_plan, out.decode_tiles = result.decode_plan, result.decode_tiles

        yield from (new() if plan.backward else own())
        yield from (own() if plan.backward else new())

    paths = [media_path(c.media) for c in request.conditions]
    settings = {**result.settings, "num_frames": plan.input_frames + plan.new_frames,
                "conditions": [{"path": path, "frame": c.frame, "strength": c.strength}
                               for path, c in zip(paths, request.conditions, strict=True)],
                "extend": {**ext.record(), "context_frames": plan.context}, "enhance_prompt": request.enhance_prompt,
                "control": control_record(request.control)}  # its file, not the frames the generation took
    out = dataclasses.replace(result, settings=settings)
    out._stream, out.kept_frames = spliced, (lo, lo + plan.new_frames)  # the latents decode to the generation's frames
    if stream:
        return out
    # filled chunk by chunk: one float32 copy of the output on the host, not the chunks and their concatenation
    video = torch.empty((plan.input_frames + plan.new_frames, r.height, r.width, 3))
    done = 0
    for chunk in out.frames():
        video[done : done + len(chunk)].copy_(chunk).div_(255)
        done += len(chunk)
    out.video = video
    return out


__all__ = [
    "EXTEND_OPTION_HELP", "NOT_FOR_EXTEND", "SOURCE_OPTION_HELP", "ExtensionPlan", "InputFrames", "check_extension", "check_source",
    "check_source_length", "check_window_seeds", "continued_frame", "enhancement_units", "generation_control", "generation_request", "generation_schedule", "longest_frames",
    "parse_extension", "plan_extension", "plan_windows", "recorded_offset", "run_extension", "source_defaults", "window_context",
]
