"""What a generation takes (:class:`GenerationRequest`) and how it is resolved against a preset.

:func:`resolve_request` is the one place that turns a request into the settings a run uses. It is pure: no
model, no file and no randomness is touched (a ``seed=None`` stays ``None``; the pipeline draws it), so the
memory plan and the batch runner can resolve requests before any weight is loaded. Precedence, per setting:

1. an explicit top-level value of the request (``guidance_scale=3``; it applies to every pass, except
   ``steps`` / ``timesteps``, which apply to the first pass only),
2. the per-pass override (``first_pass`` / ``second_pass``),
3. the checkpoint's preset (:mod:`ltxcli.presets`: the official yaml of that checkpoint),
4. the official default (:class:`~ltxcli.presets.PassSettings` field defaults, the official ``inference.py``
   defaults in :class:`~ltxcli.presets.Preset`).

Per-pass dicts accept the request's own names (``steps``, ``rescale_scale``, ``stg_blocks``, ...) and the
official yaml names (``num_inference_steps``, ``rescaling_scale``, ``skip_block_list``, ...) as aliases; see
:data:`ltxcli.passes.PASS_ALIASES`. This module imports no torch, so the CLI can build requests without loading it.
"""

from __future__ import annotations

import os
import reprlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict, TypeVar

from .enhance.rules import check_enhanced, check_mode, rewrite_of
from .field_values import (
    CACHE_THRESHOLDS,
    MEDIA_KINDS,
    FieldTypeError,
    as_list,
    is_bool,
    is_float_tensor,
    is_int,
    is_media,
    is_number,
    is_tensor,
    is_text,
    list_of,
    parse_cache,
)
from .formatting import brief, dataclass_repr, number_text
from .passes import flat_blocks, keeps_no_step, pass_overrides, v2v_pass, validate_pass
from .presets import DEFAULT_DOWNSCALE_FACTOR, PassSettings, Preset, multi_scale_sizes
from .sizes import MAX_FRAME_RATE, check_size, padded_size, split_pad

if TYPE_CHECKING:
    from torch import Tensor

    from .adapters.lora import LoraLike, LoraSpec

#: The largest seed (a signed 64-bit integer: what torch generators take).
SEED_MAX = 2**63 - 1
#: ``STGMode`` values of :mod:`ltxcli.models.transformer` (kept as strings here so this module needs no torch).
STG_MODES = ("attention_values", "attention_skip", "transformer_block", "residual")
# the short names the official inference.py accepts too (as it does, in any case)
_STG_ALIASES = {"stg_av": "attention_values", "stg_as": "attention_skip", "stg_t": "transformer_block",
                "stg_r": "residual"}



@dataclass
class Condition:
    """A conditioning image or video placed at pixel frame ``frame`` with ``strength`` in [0, 1].

    ``media``: an image or video path, a PIL image, or a float tensor ``[F, H, W, 3]`` in [0, 1] used as is
    (no blur or compression; only resized to the generation size when it differs).
    """

    media: Any
    frame: int = 0
    strength: float = 1.0
    __repr__ = dataclass_repr  # a tensor by its shape, not its numbers


def media_path(media: Any) -> str | None:
    """The file a condition's or control's ``media`` names (a path, or a decoded file's), None for in-memory media."""
    return os.fspath(media) if isinstance(media, (str, os.PathLike)) else None


#: How a :class:`Control` turns its media into the control video: used as given, or made on the fly.
CONTROL_KINDS = ("video", "canny", "depth")


@dataclass
class Control:
    """An IC-LoRA control video (:mod:`ltxcli.control`): its frames join the token sequence as clean in-context
    tokens at the generated frames' own positions, with conditioning ``strength`` in [0, 1].

    ``media``: a video or image path, or a float tensor ``[F, H, W, 3]`` in [0, 1]. ``kind``: ``"video"`` uses
    the media as the control (a depth, pose or Canny video made elsewhere; the detailer's low-resolution clip);
    ``"canny"`` / ``"depth"`` make the control from an ordinary video (:mod:`ltxcli.canny`,
    :mod:`ltxcli.depth`).
    """

    media: Any
    strength: float = 1.0
    kind: str = "video"
    __repr__ = dataclass_repr


@dataclass
class Extension:
    """Continue the video file ``video`` (a path: not a tensor, whose frame rate and timestamps it lacks) by
    ``frames`` new frames after its last frame (``backward``: before its first). The result is the input,
    unchanged, followed (preceded) by the new frames; see :mod:`ltxcli.extend`."""

    video: str
    frames: int
    backward: bool = False

    def record(self) -> dict[str, Any]:
        return {"video": os.fspath(self.video), "frames": self.frames, "backward": self.backward}


#: The video-to-video strength a request without one takes (ltx v2v's --strength default).
DEFAULT_STRENGTH = 0.5


@dataclass
class GenerationRequest:
    """Everything one generation takes. Every ``None`` takes the preset's value (see the module docstring).

    ``video`` (a path, or a float tensor ``[F, H, W, 3]`` in [0, 1] used as is) turns the request into
    video-to-video: the video is encoded, noised to the first kept timestep and denoised over the last
    ``denoise_strength`` fraction of the schedule. A file or a tensor of any length of at least ``num_frames``
    frames: its first frames up to the padded length (8k + 1), the last one repeated where it is shorter. Its
    length, size and (a file's) rate fill what is left open (:func:`ltxcli.source.source_defaults`), not the preset.
    ``noise``: the single-pass initial draw, latents ``[1, C, f, h, w]``. ``first_pass`` / ``second_pass``: per-pass
    overrides (multi-scale; one makes a base model run two passes; windows run ``first_pass``, refuse ``second_pass``).
    ``loras``: merged for this request (:meth:`~ltxcli.pipeline.Pipeline.set_loras`; ``[]`` none; None: the held ones).

    Long videos (:mod:`ltxcli.long_video`): ``duration`` (seconds, instead of ``num_frames``), ``window`` and
    ``overlap`` (pixel frames; defaults 80 and 24), ``overlap_strength`` (0.5), ``adain`` (0.25),
    ``prompt_schedule`` (a JSON-lines file or its entries ``{"start": FRAME | "SECONDSs", "prompt": ...}``); a
    ``"a | b | c"`` prompt gives one prompt per window. ``temporal_upscale``: double the latent frame rate with
    the temporal upscaler after the denoising (``2 (F - 1) + 1`` frames at twice the frame rate). ``extend``: continue a video (:class:`Extension`); ``num_frames`` is then the output's length (the input's plus the
    new frames) and conditions are placed in the output's frames.
    ``enhance_prompt``: ``auto`` (the official rule: rewrite a prompt of fewer words than the preset's
    ``prompt_enhancement_words_threshold``), ``on`` or ``off`` (:mod:`ltxcli.enhance`); the rewrite samples under
    ``seed``. ``enhanced_prompt``: the rewrite when it was computed ahead of the run (``ltx generate`` enhances
    every item before it loads the model); the text encoder then encodes it instead of ``prompt``. Per-window
    prompts: a mapping of each window prompt to its rewrite (one it lacks goes through the enhancement stage).
    """

    prompt: str
    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    frame_rate: float | None = None
    steps: int | None = None
    timesteps: Sequence[float] | None = None
    guidance_scale: float | None = None
    stg_scale: float | None = None
    stg_blocks: Sequence[int] | None = None
    rescale_scale: float | None = None
    stg_mode: str | None = None
    cfg_star_rescale: bool | None = None
    stochastic_sampling: bool | None = None
    tone_map_compression_ratio: float | None = None
    image_cond_noise_scale: float | None = None
    decode_timestep: float | None = None
    decode_noise_scale: float | None = None
    downscale_factor: float | None = None
    first_pass: Mapping[str, Any] | None = None
    second_pass: Mapping[str, Any] | None = None
    conditions: Sequence[Condition] = ()
    video: Any = None
    denoise_strength: float = DEFAULT_STRENGTH
    extend: Extension | None = None
    seed: int | None = None
    noise: Tensor | None = None
    cache: str | None = None  # step cache: "none", "teacache[:THRESH]" or "fbcache[:THRESH]" (ltxcli.step_cache)
    loras: Sequence[LoraLike] | None = None
    duration: float | str | None = None  # seconds, or "30s" / "1m30s" (ltxcli.timeline.parse_duration)
    window: int | None = None
    overlap: int | None = None
    overlap_strength: float | None = None
    adain: float | None = None
    prompt_schedule: Any = None
    temporal_upscale: bool = False
    control: Control | None = None
    enhance_prompt: str = "auto"
    enhanced_prompt: str | Mapping[str, str] | None = None
    __repr__ = dataclass_repr  # the fields given, tensors (video, noise, media) by their shapes

    def check_single(self) -> None:
        """Refuse (ValueError) what one generation (:meth:`ltxcli.pipeline.Pipeline.run`) would otherwise run
        without: an extension and the long-video fields are run by the modules that wrap the pipeline, which the
        message names."""
        if self.extend is not None:
            raise ValueError(_EXTENSION_RUNNER)
        asked = [name for name in LONG_VIDEO_FIELDS if getattr(self, name) is not None]
        if asked:
            raise ValueError(f"{asked[0]}= asks for a long video: run the request with ltxcli.long_video.generate("
                             "pipe, request) or ltxcli.run_batch; Pipeline.run makes one generation")


#: The fields that ask for a long video (:mod:`ltxcli.long_video`), which ``Pipeline.run`` does not run.
LONG_VIDEO_FIELDS = ("duration", "window", "overlap", "overlap_strength", "adain", "prompt_schedule")
_EXTENSION_RUNNER = ("extend= continues a video: run the request with ltxcli.extend.run_extension(pipe, request) "
                     "or ltxcli.run_batch; Pipeline.run makes one generation")


class RequestFields(TypedDict, total=False):
    """The keyword arguments of :meth:`ltxcli.pipeline.Pipeline.generate`: :class:`GenerationRequest`'s fields but
    ``prompt``, with the same types (a type checker refuses a misspelt field or a value of the wrong type; a test
    keeps the two in step), each optional as the dataclass's default makes it."""

    negative_prompt: str | None
    height: int | None
    width: int | None
    num_frames: int | None
    frame_rate: float | None
    steps: int | None
    timesteps: Sequence[float] | None
    guidance_scale: float | None
    stg_scale: float | None
    stg_blocks: Sequence[int] | None
    rescale_scale: float | None
    stg_mode: str | None
    cfg_star_rescale: bool | None
    stochastic_sampling: bool | None
    tone_map_compression_ratio: float | None
    image_cond_noise_scale: float | None
    decode_timestep: float | None
    decode_noise_scale: float | None
    downscale_factor: float | None
    first_pass: Mapping[str, Any] | None
    second_pass: Mapping[str, Any] | None
    conditions: Sequence[Condition]
    video: Any
    denoise_strength: float
    extend: Extension | None
    seed: int | None
    noise: Tensor | None
    cache: str | None
    loras: Sequence[LoraLike] | None
    duration: float | str | None
    window: int | None
    overlap: int | None
    overlap_strength: float | None
    adain: float | None
    prompt_schedule: Any
    temporal_upscale: bool
    control: Control | None
    enhance_prompt: str
    enhanced_prompt: str | Mapping[str, str] | None


@dataclass(frozen=True)
class ResolvedRequest:
    """A request with every value decided (:func:`resolve_request`): what the pipeline runs."""

    prompt: str
    negative_prompt: str
    height: int
    width: int
    num_frames: int
    frame_rate: float
    passes: tuple[PassSettings, ...]  # one, or (first, second) for multi-scale; v2v already applied
    multi_scale: bool
    downscale_factor: float  # 1.0 for a single pass
    decode_timestep: float
    decode_noise_scale: float
    image_cond_noise_scale: float
    stochastic_sampling: bool
    stg_mode: str
    conditions: tuple[Condition, ...] = ()
    video: Any = None
    denoise_strength: float = DEFAULT_STRENGTH
    seed: int | None = None
    noise: Any = None  # Tensor | None
    preset: str = ""
    cache: str = "none"  # "none", "teacache" or "fbcache"
    cache_threshold: float = 0.0
    loras: tuple[LoraSpec, ...] | None = None  # None: the pipeline's current ones
    temporal_upscale: bool = False
    control: Control | None = None
    enhance_prompt: str = "auto"
    enhanced_prompt: str | None = None  # set by the enhancement stage (ltxcli.enhance.stage)

    @property
    def text_prompt(self) -> str:
        """What the text encoder encodes: the enhanced prompt when there is one, else the prompt."""
        return self.prompt if self.enhanced_prompt is None else self.enhanced_prompt

    def output(self) -> ResolvedRequest:
        """The request as the decoded video has it: after a temporal upscale ``2 (F - 1) + 1`` frames at twice the
        frame rate (the same duration), else itself."""
        if not self.temporal_upscale:
            return self
        return replace(self, num_frames=2 * (self.num_frames - 1) + 1, frame_rate=2 * self.frame_rate)

    def temporal_pass(self) -> ResolvedRequest:
        """The second pass of a multi-scale run after the temporal upscaler: the padded length doubled."""
        return replace(self, num_frames=2 * (self.padded[2] - 1) + 1, frame_rate=2 * self.frame_rate)

    @property
    def padded(self) -> tuple[int, int, int]:
        """``(height, width, num_frames)`` padded as the official pipeline pads them (:func:`padded_size`)."""
        return padded_size(self.height, self.width, self.num_frames)

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """``(left, right, top, bottom)`` pixels of zero padding around the requested size (``F.pad`` order)."""
        ph, pw, _ = self.padded
        left, right = split_pad(pw - self.width)
        top, bottom = split_pad(ph - self.height)
        return left, right, top, bottom

    def pass_sizes(self) -> list[tuple[int, int]]:
        """``(height, width)`` each pass denoises at: the padded size, or for multi-scale the downscaled size
        (32-aligned) and twice that. Raises ``ValueError`` when the downscale leaves nothing."""
        ph, pw, _ = self.padded
        if not self.multi_scale:
            return [(ph, pw)]
        return list(multi_scale_sizes(ph, pw, self.downscale_factor))

    def settings(self) -> dict[str, Any]:
        """The resolved values as a JSON-friendly dict (``GenerationResult.settings``); ``num_frames`` and
        ``frame_rate`` are the output's (after a temporal upscale, ``temporal_upscale`` holds the generated ones)."""
        out = self.output()
        upscale = {"num_frames": self.num_frames, "frame_rate": self.frame_rate} if self.temporal_upscale else None
        return {
            "height": self.height, "width": self.width, "num_frames": out.num_frames, "frame_rate": out.frame_rate,
            "temporal_upscale": upscale,
            "negative_prompt": self.negative_prompt, "passes": [p.__dict__ for p in self.passes],
            "multi_scale": self.multi_scale, "downscale_factor": self.downscale_factor if self.multi_scale else None,
            "decode_timestep": self.decode_timestep, "decode_noise_scale": self.decode_noise_scale,
            "image_cond_noise_scale": self.image_cond_noise_scale, "stochastic_sampling": self.stochastic_sampling,
            "stg_mode": self.stg_mode, "preset": self.preset, "enhance_prompt": self.enhance_prompt,
            "cache": {"mode": self.cache, "threshold": self.cache_threshold},
            # video-to-video: the input (a file's path; None for a tensor) and the strength
            "video": os.fspath(self.video) if isinstance(self.video, (str, os.PathLike)) else None,
            "denoise_strength": self.denoise_strength if self.video is not None else None,
        }


def _scalar_overrides(r: GenerationRequest, preset: Preset) -> dict[str, Any]:
    """The request's top-level sampling values as yaml-named overrides (they win over everything else)."""
    out: dict[str, Any] = {}
    if r.steps is not None:
        out.update(num_inference_steps=r.steps, timesteps=None)
    if r.timesteps is not None:
        out["timesteps"] = tuple(float(t) for t in r.timesteps)
    for key, value in (
        ("guidance_scale", r.guidance_scale), ("stg_scale", r.stg_scale), ("rescaling_scale", r.rescale_scale),
        ("cfg_star_rescale", r.cfg_star_rescale), ("tone_map_compression_ratio", r.tone_map_compression_ratio),
    ):
        if value is not None:
            out[key] = value
    if r.stg_blocks is not None:
        out["skip_block_list"] = tuple(int(b) for b in r.stg_blocks)
    return out


_SCALES = ("guidance_scale", "stg_scale", "rescaling_scale")


def _with_scalars(p: PassSettings, scalars: dict[str, Any]) -> PassSettings:
    """``p`` with the explicit scalar overrides. A scalar applies at every step; while another scale is still a
    per-interval list, the interval schedule stays to index it (as in an official config mixing the two). Once none
    is, the schedule goes and a per-interval block list becomes the blocks of the pass's last interval."""
    p = p.updated(scalars)
    if not any(k in scalars for k in _SCALES) or any(isinstance(getattr(p, k), tuple) for k in _SCALES):
        return p
    return p.updated({"guidance_timesteps": None, "skip_block_list": flat_blocks(p.skip_block_list)})


# --- IC-LoRA control ----------------------------------------------------------------------------------------------


def parse_control(spec: str, kind: str = "video") -> Control:
    """``VIDEO[:STRENGTH]`` (split from the right, so paths may contain ':') -> :class:`Control` of ``kind``."""
    path, sep, tail = spec.rpartition(":")
    if sep and path:
        try:
            return Control(path, float(tail), kind)
        except ValueError:
            pass
    if not spec:
        raise ValueError("a control needs a video: VIDEO[:STRENGTH], e.g. depth.mp4 or depth.mp4:0.9")
    return Control(spec, 1.0, kind)


#: The ``--control`` value (a batch line's ``"control"``) that asks for no control: it replaces a ``--from`` record's,
#: or the command's for a batch line (a video of that name is ``./none``).
NO_CONTROL = "none"


def control_of(control: Any = None, control_from: Any = None) -> Control | None:
    """A control from ``control`` (``"VIDEO[:STRENGTH]"``, a :class:`Control`, or a JSON object ``{"path",
    "strength", "kind"}``; :data:`NO_CONTROL`: none) or ``control_from`` (``(kind, "VIDEO[:STRENGTH]")``: a Canny or depth control made from an
    ordinary video); giving both is an error."""
    if isinstance(control, str) and control == NO_CONTROL:  # none, over a --from record's or the command's
        control = None
    if control is not None and control_from is not None:
        raise ValueError("give --control (a control video) or --control-from (one made from a video), not both")
    if control_from is not None:
        if not (isinstance(control_from, (list, tuple)) and len(control_from) == 2
                and all(isinstance(v, str) for v in control_from)):
            raise ValueError("control_from is [KIND, \"VIDEO[:STRENGTH]\"], e.g. [\"canny\", \"clip.mp4\"]")
        return parse_control(control_from[1], control_from[0])
    if control is None or isinstance(control, Control):
        return control
    if isinstance(control, str):
        return parse_control(control)
    if isinstance(control, Mapping) and isinstance(control.get("path"), str) and not set(control) - {
            "path", "strength", "kind"}:
        strength, kind = control.get("strength", 1.0), control.get("kind", "video")
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not isinstance(kind, str):
            raise ValueError("a control's strength must be a number and its kind a string")
        return Control(control["path"], float(strength), kind)
    raise ValueError("a control is \"VIDEO[:STRENGTH]\" or {\"path\", \"strength\", \"kind\"}")


def check_control(c: Control) -> None:
    """A control's kind and strength (its media is read later, by :func:`ltxcli.control.prepare_control`)."""
    if c.kind == "pose":
        raise ValueError("pose control videos are not made here: make one elsewhere (e.g. with DWPose) and give it "
                         "as the control video (--control POSE.mp4)")
    if c.kind not in CONTROL_KINDS:
        raise ValueError(f"control kind {c.kind!r} must be one of {', '.join(CONTROL_KINDS)}")
    if not (isinstance(c.strength, (int, float)) and 0 <= c.strength <= 1):
        raise ValueError(f"control strength {c.strength} must be in [0, 1] (1: the control is kept clean)")


# --- field types ------------------------------------------------------------------------------------------------


_R = TypeVar("_R", bound=GenerationRequest)  # a request or a batch item: check_fields returns the same kind


#: What each request field takes when given (``None``: the preset's, or none), and the Python value it becomes
#: (None: itself).
#: Fields checked by value elsewhere (``stg_mode``, ``cache``, ``enhance_prompt``, ``loras``) and media (paths,
#: images or tensors) are not listed.
_FIELD_TYPES: dict[str, tuple[Callable[[Any], bool], str, Callable[[Any], Any] | None]] = {
    **dict.fromkeys(("prompt", "negative_prompt"), (is_text, "a string of UTF-8 text (a byte it cannot decode "
                                                              "shows as \\udcXX: iconv -t utf-8 it, or use a UTF-8 "
                                                              "locale)", None)),
    **dict.fromkeys(("height", "width", "num_frames", "steps", "seed", "window", "overlap"),
                    (is_int, "an integer", int)),
    **dict.fromkeys(("frame_rate", "guidance_scale", "stg_scale", "rescale_scale", "tone_map_compression_ratio",
                     "image_cond_noise_scale", "decode_timestep", "decode_noise_scale", "downscale_factor",
                     "denoise_strength", "overlap_strength", "adain"), (is_number, "a number", float)),
    "duration": (lambda v: is_number(v) or isinstance(v, str), "seconds: a number or a string such as \"1m30s\"",
                 lambda v: v if isinstance(v, str) else float(v)),
    **dict.fromkeys(("cfg_star_rescale", "stochastic_sampling", "temporal_upscale"), (is_bool, "True or False", bool)),
    "timesteps": (list_of(is_number), "a list of numbers", lambda v: [float(x) for x in as_list(v) or ()]),
    "stg_blocks": (list_of(is_int), "a list of block indices", lambda v: [int(x) for x in as_list(v) or ()]),
    **dict.fromkeys(("first_pass", "second_pass"), (lambda v: isinstance(v, Mapping), "a dict of pass settings", None)),
    "conditions": (list_of(lambda c: isinstance(c, Condition)), "a list of ltxcli.Condition(media, frame, strength)",
                   None),
    "extend": (lambda v: isinstance(v, Extension), "an ltxcli.Extension(video, frames, backward)", None),
    # (a number failed reading it: "'int' object is not iterable")
    "prompt_schedule": (lambda v: isinstance(v, (str, os.PathLike)) or (isinstance(v, Sequence) and not isinstance(
        v, bytes)), "a JSON-lines file's path or a list of {\"start\": FRAME or \"SECONDSs\", \"prompt\": TEXT} entries",
        None),
    "control": (lambda v: isinstance(v, Control), "an ltxcli.Control(media, strength, kind)", None),
}


def check_fields(request: _R) -> _R:
    """Each given field of ``request`` (and of its conditions, extension and control) has the type it takes:
    :class:`FieldTypeError` naming the first that does not. Every entry point runs it before any work. Returns
    the request with those values as Python's own (a numpy or 0-d tensor number as an int or float, an array as
    a list), which the run computes with."""
    def fail(name: str, value: Any, what: str) -> NoReturn:
        raise FieldTypeError(f"{name}={reprlib.repr(value)} must be {what}")

    if request.prompt is None:  # the one field without a default
        fail("prompt", None, "a string (\"\" for none)")
    plain: dict[str, Any] = {"enhance_prompt": "auto" if request.enhance_prompt is None else request.enhance_prompt,
                             # (None, as every None, takes the default: it failed comparing None with 0)
                             "denoise_strength": DEFAULT_STRENGTH}
    for name, (ok, what, to_python) in _FIELD_TYPES.items():
        value = getattr(request, name)
        if value is not None:
            if not ok(value):
                fail(name, value, what)
            plain[name] = value if to_python is None else to_python(value)
    conditions = []
    for c in request.conditions or ():  # None, as every None, takes the default: none
        if not is_media(c.media):
            fail("condition media", c.media, MEDIA_KINDS)
        if not is_int(c.frame):
            fail("condition frame", c.frame, "an integer")
        if not is_number(c.strength):
            fail("condition strength", c.strength, "a number")
        conditions.append(replace(c, frame=int(c.frame), strength=float(c.strength)))
    plain["conditions"] = conditions if isinstance(request.conditions, list) else tuple(conditions)
    e = request.extend
    if e is not None:
        if not (is_int(e.frames) and is_bool(e.backward)):
            fail("extend", e, "an Extension with integer frames and backward True or False")
        if not isinstance(e.video, (str, os.PathLike)):  # its rate, timestamps and frames are read from the file
            raise FieldTypeError(f"extend video={brief(e.video) if hasattr(e.video, 'shape') else reprlib.repr(e.video)}"
                                 " must be a video file's path (a tensor: write it first with "
                                 "ltxcli.media.write_video(path, frames, fps))")
        plain["extend"] = replace(e, frames=int(e.frames), backward=bool(e.backward))
    if request.control is not None:
        if not is_media(request.control.media):  # (an array failed in pathlib: "expected str, bytes or os.PathLike")
            fail("control media", request.control.media, MEDIA_KINDS)
        if not is_number(request.control.strength):
            fail("control strength", request.control.strength, "a number")
        plain["control"] = replace(request.control, strength=float(request.control.strength))
    video = request.video
    if video is not None and not (isinstance(video, (str, os.PathLike)) or is_tensor(video)):  # (pathlib failed)
        got = brief(video) if hasattr(video, "shape") else \
            reprlib.repr(video) if isinstance(video, (int, float, bytes)) else f"a {type(video).__name__}"
        raise FieldTypeError("video must be a video file's path or a torch tensor [F, H, W, 3] in [0, 1] (an array: "
                             f"torch.from_numpy(array)), got {got}")
    if request.noise is not None and not is_float_tensor(request.noise):
        # (a list or array failed with an AttributeError, an integer or bool tensor ran as its cast values)
        noise = request.noise
        got = brief(noise) if hasattr(noise, "shape") else f"a {type(noise).__name__}"
        got += " on the meta device" if getattr(noise, "is_meta", False) else ""
        raise FieldTypeError("noise must be a floating-point torch tensor of latents [1, C, f, h, w] holding values "
                             f"(e.g. torch.randn(...)), got {got}")
    if video is None and plain["denoise_strength"] != DEFAULT_STRENGTH:  # the copy holds the default: said once
        warnings.warn(f"denoise_strength={number_text(plain['denoise_strength'])} is ignored: it is the strength of "
                      "a video-to-video run (give video)", stacklevel=2)
        plain["denoise_strength"] = DEFAULT_STRENGTH
    return replace(request, **plain)


def check_noise(noise: Tensor | None) -> None:
    """``noise=`` (a float tensor, :func:`check_fields`) of finite values, checked before any work: NaN or Inf
    initial latents used to fail after the denoising (every window's before it, in windows) as if the checkpoint
    were broken."""
    if noise is not None and not bool(noise.isfinite().all()):
        raise ValueError("noise= holds NaN or Inf values: the initial latents must be finite (e.g. torch.randn(...))")


def check_placement(conditions: Sequence[Condition], num_frames: int) -> None:
    """Each condition's strength in [0, 1] and frame inside the ``num_frames``-frame video: a ValueError naming
    the condition (its file), the value and the nearest valid one."""
    for c in conditions:
        name = media_path(c.media) or f"a {type(c.media).__name__}"
        if not 0 <= c.strength <= 1:
            raise ValueError(f"condition {name}: strength={c.strength} must be in [0, 1] (use {0 if c.strength < 0 else 1})")
        if not 0 <= c.frame < num_frames:
            # a negative frame is Python's "from the end" more often than a near miss of 0: name both ends
            use = (f"frames count from the first, 0: use 0 for the first frame, {num_frames - 1} for the last"
                   if c.frame < 0 else f"use {num_frames - 1}")
            raise ValueError(f"condition {name}: frame={c.frame} must be in [0, {num_frames - 1}] for a {num_frames}-frame "
                             f"video ({use})")


# --- resolution -------------------------------------------------------------------------------------------------


def preset_size(
    preset: Preset, height: int | None, width: int | None, num_frames: int | None, frame_rate: float | None,
) -> tuple[int, int, int, float]:
    """``(height, width, num_frames, frame_rate)`` with each ``None`` taken from ``preset`` (an explicit frame rate
    becomes a float, the preset's is kept as it is). One rule for :func:`resolve_request` and the batch runner."""
    return (
        preset.height if height is None else height,
        preset.width if width is None else width,
        preset.num_frames if num_frames is None else num_frames,
        preset.frame_rate if frame_rate is None else float(frame_rate),
    )


def check_decode_settings(timestep: float, noise_scale: float) -> None:
    """Decode noise scale and timestep in [0, 1], for requests and decode: the timestep is a noise level (the
    official pipeline's default noise scale); NaN, or a timestep that overflows float32 once the VAE scales it by
    1000 (1e36), would decode to a NaN video, written black."""
    if not 0 <= noise_scale <= 1:
        raise ValueError(f"decode_noise_scale={noise_scale} must be in [0, 1]")
    if not 0 <= timestep <= 1:  # NaN fails both comparisons
        raise ValueError(f"decode_timestep={timestep} must be in [0, 1] (a noise level, e.g. 0.05)")


def resolve_request(
    request: GenerationRequest,
    preset: Preset,
    *,
    max_pos: Sequence[int] | None = None,
    num_layers: int | None = None,
    has_upsampler: bool | None = None,
    has_temporal_upsampler: bool | None = None,
) -> ResolvedRequest:
    """``request`` with every ``None`` filled from ``preset`` and every value checked (``ValueError`` names the
    value and the rule). Precedence: explicit value > per-pass override > preset > official default.

    The model facts are optional (the memory plan resolves before loading): ``max_pos`` (the transformer's
    ``positional_embedding_max_pos``) checks the size, ``num_layers`` the STG blocks, ``has_upsampler=False``
    refuses multi-scale. Media are not read (conditions keep their ``media``).
    """
    r = check_fields(request)
    height, width, num_frames, frame_rate = preset_size(preset, r.height, r.width, r.num_frames, r.frame_rate)
    negative_prompt = preset.negative_prompt if r.negative_prompt is None else r.negative_prompt
    if max_pos is not None:
        check_size(height, width, num_frames, frame_rate, max_pos)

    # Per-pass settings: preset passes, then explicit per-pass dicts, then explicit scalar arguments.
    multi = r.first_pass is not None or r.second_pass is not None or preset.multi_scale
    scalars = _scalar_overrides(r, preset)
    if multi:
        base_first, base_second = preset.passes if preset.multi_scale else (preset.passes[0], preset.passes[0])
        first = base_first.updated(pass_overrides(r.first_pass, "first_pass"))
        second = base_second.updated(pass_overrides(r.second_pass, "second_pass"))
        # Explicit scalar arguments apply to both passes (timesteps/steps only to the first).
        first = _with_scalars(first, scalars)
        second = _with_scalars(second, {k: v for k, v in scalars.items() if k not in ("num_inference_steps", "timesteps")})
        passes = [first, second]
        if has_upsampler is False:
            own = preset.multi_scale  # else the per-pass dicts asked for two passes
            raise ValueError(
                ("multi-scale generation" if own else "first_pass= / second_pass= ask for two passes (multi-scale), which")
                + " needs a latent upsampler: pass upsampler= to load_pipeline (e.g. ltxv-spatial-upscaler-0.9.8)"
                + ("" if own else "; for one pass give its settings at the top level (steps=, guidance_scale=, ...)"))
        factor = preset.downscale_factor if r.downscale_factor is None else r.downscale_factor
        factor = DEFAULT_DOWNSCALE_FACTOR if factor is None else factor
        if not 0 < factor <= 1:
            raise ValueError(f"downscale_factor={factor} must be in (0, 1]")
    else:
        passes = [_with_scalars(preset.passes[0], scalars)]
        factor = 1.0
    for p in passes:
        validate_pass(p, num_layers)

    decode_timestep = preset.decode_timestep if r.decode_timestep is None else r.decode_timestep
    decode_noise_scale = preset.decode_noise_scale if r.decode_noise_scale is None else r.decode_noise_scale
    image_cond_noise_scale = preset.image_cond_noise_scale if r.image_cond_noise_scale is None else r.image_cond_noise_scale
    stochastic = preset.stochastic_sampling if r.stochastic_sampling is None else r.stochastic_sampling
    mode = r.stg_mode or preset.stg_mode
    mode = getattr(mode, "value", mode)  # an STGMode member is accepted as its value
    if isinstance(mode, str):
        mode = _STG_ALIASES.get(mode.lower(), mode.lower())
    if mode not in STG_MODES:
        raise ValueError(f"stg_mode={mode!r} must be one of {', '.join(STG_MODES)}")
    if not 0 <= image_cond_noise_scale <= 1:
        raise ValueError(f"image_cond_noise_scale={image_cond_noise_scale} must be in [0, 1]")
    check_decode_settings(decode_timestep, decode_noise_scale)

    check_placement(r.conditions, num_frames)

    from .adapters.lora import lora_specs

    loras = None if r.loras is None else lora_specs(r.loras)
    if r.control is not None:
        check_control(r.control)
    enhance = check_mode(r.enhance_prompt)
    check_enhanced(r.enhanced_prompt)
    if r.seed is not None and not 0 <= r.seed <= SEED_MAX:
        raise ValueError(f"seed={r.seed} must be in [0, 2**63 - 1] (use {0 if r.seed < 0 else '2**63 - 1'})")
    if r.noise is not None and multi:
        raise ValueError("noise= replaces the single-pass initial draw; it is not supported with multi-scale")
    check_noise(r.noise)
    if r.extend is not None:
        raise ValueError(_EXTENSION_RUNNER)
    if r.video is not None:
        if not 0 < r.denoise_strength < 1:
            raise ValueError(f"denoise_strength={number_text(r.denoise_strength)} must be in (0, 1), e.g. 0.5")
        # multi-scale: the first pass denoises the input at its size, the second the upscaled result; neither
        # noises it above the strength (the official run, media_items in both passes, fails its shape checks)
        if multi and keeps_no_step(passes[0], r.denoise_strength):
            # below the whole first schedule (distilled: 0.725, above ltx v2v's default 0.5; 13B dev: up to 0.1, whose
            # last 3 of 30 steps it skips) the first pass keeps no step: the second pass alone denoises the input,
            # at the full size, from the strength
            multi, passes, factor = False, passes[1:], 1.0
        passes = [v2v_pass(p, r.denoise_strength, f"the {n} pass's schedule" if multi else "this schedule")
                  for n, p in zip(("first", "second"), passes, strict=False)]
    if r.temporal_upscale:
        if 2 * frame_rate > MAX_FRAME_RATE:  # the output's rate, which the writer refuses after all the work
            raise ValueError(f"frame_rate={number_text(frame_rate)} doubled by temporal_upscale is "
                             f"{number_text(2 * frame_rate)}, above {MAX_FRAME_RATE} (use at most {MAX_FRAME_RATE // 2})")
        if has_temporal_upsampler is False:
            raise ValueError("temporal_upscale needs the temporal upscaler: pass temporal_upsampler= to "
                             "load_pipeline (e.g. ltxv-temporal-upscaler-0.9.7)")

    cache, cache_threshold = parse_cache(r.cache)

    return ResolvedRequest(
        prompt=r.prompt, negative_prompt=negative_prompt, height=height, width=width, num_frames=num_frames,
        frame_rate=frame_rate, passes=tuple(passes), multi_scale=multi, downscale_factor=factor,
        decode_timestep=decode_timestep, decode_noise_scale=decode_noise_scale,
        image_cond_noise_scale=image_cond_noise_scale, stochastic_sampling=stochastic, stg_mode=mode,
        conditions=tuple(r.conditions), video=r.video, denoise_strength=r.denoise_strength, seed=r.seed,
        noise=r.noise, preset=preset.name, cache=cache, cache_threshold=cache_threshold, control=r.control,
        loras=loras,
        temporal_upscale=bool(r.temporal_upscale),
        enhance_prompt=enhance, enhanced_prompt=rewrite_of(r.enhanced_prompt, r.prompt),
    )


__all__ = [
    "CACHE_THRESHOLDS", "CONTROL_KINDS", "LONG_VIDEO_FIELDS", "NO_CONTROL", "SEED_MAX", "STG_MODES",
    "Condition", "Control", "Extension", "FieldTypeError", "GenerationRequest", "RequestFields", "ResolvedRequest",
    "check_control", "check_fields", "check_noise", "check_placement", "check_size", "control_of", "media_path",
    "padded_size", "parse_cache", "parse_control", "preset_size", "resolve_request",
]
