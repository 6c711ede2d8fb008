"""What the official prompt enhancer does and when (``ltx_video/utils/prompt_enhance_utils.py`` and the rule of
``ltx_video/inference.py``), without torch: the system prompts (verbatim), the generation and caption settings,
and :func:`plan`, which decides per request whether the prompt is rewritten and how.

Official rule: ``inference.py`` enhances when ``prompt_enhancement_words_threshold > 0`` (120 in every official
config) and ``len(prompt.split()) < prompt_enhancement_words_threshold``, an empty prompt (0 words) too;
``generate_cinematic_prompt`` then rewrites it for text-to-video when there is no condition, for image-to-video
when there is exactly one condition at frame 0 (its first frame is captioned), and leaves it unchanged otherwise
(several conditions, or one at a later frame).

Not followed: the official ``LTXMultiScalePipeline`` passes ``enhance_prompt`` and the original prompt to both of its
passes, so the second pass rewrites the prompt again, sampling from the RNG state the first rewrite left (another
text). Here a request is rewritten once, and both passes encode that rewrite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

if TYPE_CHECKING:
    from ltxcli.presets import Preset

# The official system prompts, verbatim (tests/test_enhance.py compares them with ltx_video's).
T2V_CINEMATIC_PROMPT = """You are an expert cinematic director with many award winning movies, When writing prompts based on the user input, focus on detailed, chronological descriptions of actions and scenes.
Include specific movements, appearances, camera angles, and environmental details - all in a single flowing paragraph.
Start directly with the action, and keep descriptions literal and precise.
Think like a cinematographer describing a shot list.
Do not change the user input intent, just enhance it.
Keep within 150 words.
For best results, build your prompts using this structure:
Start with main action in a single sentence
Add specific details about movements and gestures
Describe character/object appearances precisely
Include background and environment details
Specify camera angles and movements
Describe lighting and colors
Note any changes or sudden events
Do not exceed the 150 word limit!
Output the enhanced prompt only.
"""

I2V_CINEMATIC_PROMPT = """You are an expert cinematic director with many award winning movies, When writing prompts based on the user input, focus on detailed, chronological descriptions of actions and scenes.
Include specific movements, appearances, camera angles, and environmental details - all in a single flowing paragraph.
Start directly with the action, and keep descriptions literal and precise.
Think like a cinematographer describing a shot list.
Keep within 150 words.
For best results, build your prompts using this structure:
Describe the image first and then add the user input. Image description should be in first priority! Align to the image caption if it contradicts the user text input.
Start with main action in a single sentence
Add specific details about movements and gestures
Describe character/object appearances precisely
Include background and environment details
Specify camera angles and movements
Describe lighting and colors
Note any changes or sudden events
Align to the image caption if it contradicts the user text input.
Do not exceed the 150 word limit!
Output the enhanced prompt only.
"""

#: ``enhance_prompt`` values: ``auto`` (the official word rule), ``on`` (always, where the condition rule allows),
#: ``off``.
MODES = ("auto", "on", "off")
#: The official ``generate(**inputs, max_new_tokens=text_encoder_max_tokens)``: the pipeline's default of 256.
MAX_NEW_TOKENS = 256
#: Florence-2 caption settings of the official ``_generate_image_captions``.
CAPTION_TASK = "<DETAILED_CAPTION>"
CAPTION_NUM_BEAMS = 3
CAPTION_MAX_NEW_TOKENS = 1024
#: ``prompt_enhancement_words_threshold`` of every official config.
DEFAULT_WORDS_THRESHOLD = 120

Kind = Literal["t2v", "i2v"]
#: The reason of a plan that keeps the prompt because of its conditions (the official code logs a warning then).
CONDITIONS_UNSUPPORTED = "prompt enhancement supports no condition or one condition at frame 0 only"


def word_count(prompt: str) -> int:
    """Words as the official rule counts them (``len(prompt.split())``)."""
    return len(prompt.split())


@dataclass(frozen=True)
class EnhancePlan:
    """What the enhancer does for one request: ``kind`` ``t2v`` / ``i2v``, or ``None`` (prompt unchanged, ``reason``
    says why)."""

    kind: Kind | None
    reason: str = ""


def check_mode(mode: Any) -> str:
    """``mode`` as one of :data:`MODES` (an enum member is accepted as its value); ValueError otherwise."""
    value = getattr(mode, "value", mode)
    if value not in MODES:
        raise ValueError(f"enhance_prompt={mode!r} must be one of {', '.join(MODES)}")
    return str(value)


def plan(mode: str, prompt: str, condition_frames: Sequence[int], threshold: int) -> EnhancePlan:
    """Whether and how the prompt of a request is rewritten. ``condition_frames``: the pixel frame of each
    condition; ``threshold``: the preset's ``prompt_enhancement_words_threshold`` (``auto`` only; 0 disables)."""
    mode = check_mode(mode)
    if mode == "off":
        return EnhancePlan(None, "enhance_prompt=off")
    if mode == "auto":
        words = word_count(prompt)
        if threshold <= 0:
            return EnhancePlan(None, "this preset does not enhance prompts (threshold 0)")
        if words >= threshold:
            return EnhancePlan(None, f"the prompt has {words} words, at least the threshold of {threshold}")
    if not condition_frames:
        return EnhancePlan("t2v")
    if len(condition_frames) > 1 or condition_frames[0] != 0:
        # the official warning: only unconditional or first-frame conditioning is supported
        return EnhancePlan(None, CONDITIONS_UNSUPPORTED)
    return EnhancePlan("i2v")


class _Placed(Protocol):
    @property
    def frame(self) -> int: ...


class PlannedRequest(Protocol):
    """What :func:`request_plan` reads of a request (a :class:`~ltxcli.request.GenerationRequest` or
    :class:`~ltxcli.request.ResolvedRequest`): typed by shape, since the request module imports this one."""

    @property
    def enhance_prompt(self) -> str: ...
    @property
    def prompt(self) -> str: ...
    @property
    def conditions(self) -> Sequence[_Placed]: ...


def per_window(request: PlannedRequest) -> bool:
    """Whether ``request`` gives its windows prompts of their own (``"a | b"``, a prompt schedule): then each
    distinct window prompt is rewritten on its own, under the official rule for the first window that takes it (its
    conditions; :meth:`ltxcli.long_video.LongPlan.prompt_requests`), and ``enhanced_prompt`` maps each window
    prompt to its rewrite."""
    return "|" in request.prompt or getattr(request, "prompt_schedule", None) is not None


def rewrite_of(enhanced: str | Mapping[str, str] | None, prompt: str) -> str | None:
    """The rewrite of ``prompt`` in a request's ``enhanced_prompt``: the string itself (one prompt), or a per-window
    mapping's entry for it (None: that window prompt is encoded as given)."""
    return enhanced if enhanced is None or isinstance(enhanced, str) else enhanced.get(prompt)


def check_enhanced(enhanced: Any) -> None:
    """A request's ``enhanced_prompt``: None, a string, or (per-window prompts) a mapping of strings to strings."""
    if enhanced is None or isinstance(enhanced, str) or (isinstance(enhanced, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in enhanced.items())):
        return
    raise ValueError("enhanced_prompt must be a string (per-window prompts: a mapping of each window prompt to its "
                     "rewrite)")


class StagedRequest(PlannedRequest, Protocol):
    """What :func:`run_stage` reads besides :class:`PlannedRequest`: the rewrite when it was computed ahead."""

    @property
    def enhanced_prompt(self) -> str | Mapping[str, str] | None: ...


# a request either side of resolution (a windowed video is enhanced before its windows are resolved)
_Request = TypeVar("_Request", bound=StagedRequest)


class EnhancementSkippedWarning(UserWarning):
    """The original prompt is used where enhancement was asked for: ``enhance_prompt="auto"`` could not have its
    models, or the request's conditions are not ones the enhancer takes."""


def note_skipped(p: EnhancePlan) -> None:
    """One :class:`EnhancementSkippedWarning` when ``p`` keeps the prompt because of the request's conditions (the
    official code logs a warning then); nothing for the other reasons (off, the word threshold)."""
    if p.reason == CONDITIONS_UNSUPPORTED:
        import warnings

        warnings.warn(f"prompt enhancement skipped, the original prompt is used: {p.reason}",
                      EnhancementSkippedWarning, stacklevel=4)


def held(enhancer: object) -> AbstractContextManager[Any]:
    """``enhancer`` as a ``with`` block that keeps its models loaded across several rewrites (a
    :class:`~ltxcli.enhance.enhancer.PromptEnhancer` is re-entrant), or a no-op for a stand-in that is no context
    manager (or None)."""
    return enhancer if isinstance(enhancer, AbstractContextManager) else nullcontext()


class _Enhancer(Protocol):
    def enhance_resolved(self, r: _Request, preset: Preset, seed: int, pixels: Any) -> _Request: ...


def run_stage(r: _Request, preset: Preset, enhancer: _Enhancer | None, seed: int, pixels: Any) -> _Request:
    """:meth:`ltxcli.pipeline.Pipeline.run`'s enhancement stage: ``r`` with its enhanced prompt where its plan
    says so (``enhancer``: a :class:`~ltxcli.enhance.enhancer.PromptEnhancer`; ``pixels``: the prepared pixels
    ``[1, 3, n, H, W]`` of its first condition), else ``r``. A prompt kept because of its conditions is one
    :class:`EnhancementSkippedWarning`, as the official code logs a warning; ``on`` without an enhancer is a
    ValueError."""
    p = request_plan(r, preset)
    if r.enhanced_prompt is not None or p.kind is None:
        if r.enhanced_prompt is None:
            note_skipped(p)
        return r
    if enhancer is None:
        if r.enhance_prompt == "on":
            raise ValueError("enhance_prompt='on' needs a prompt enhancer: load the pipeline with "
                             "ltxcli.load_pipeline, or set pipe.enhancer = ltxcli.PromptEnhancer(...)")
        return r
    return enhancer.enhance_resolved(r, preset, seed, pixels)


def request_plan(request: PlannedRequest, preset: Preset) -> EnhancePlan:
    """:func:`plan` for a request (its mode, prompt and condition frames) under ``preset``: one prompt (per-window
    prompts are planned window prompt by window prompt, :func:`per_window`). An extension, which the official code
    does not have, is image-to-video of the input frame its new frames continue from (forward the input's last,
    backward its first, which they lead into: :func:`ltxcli.extend.enhancement_units`), so that image counts as a
    condition at frame 0 besides its keyframes (a keyframe then keeps the prompt, as a second condition does)."""
    frames = [c.frame for c in request.conditions]
    if getattr(request, "extend", None) is not None:
        frames = [0, *frames]
    return plan(request.enhance_prompt, request.prompt, frames, preset.prompt_enhancement_words_threshold)

__all__ = [
    "CAPTION_MAX_NEW_TOKENS", "CAPTION_NUM_BEAMS", "CAPTION_TASK", "CONDITIONS_UNSUPPORTED", "DEFAULT_WORDS_THRESHOLD",
    "I2V_CINEMATIC_PROMPT", "MAX_NEW_TOKENS", "MODES", "T2V_CINEMATIC_PROMPT", "EnhancePlan", "EnhancementSkippedWarning",
    "Kind", "PlannedRequest", "StagedRequest", "check_enhanced", "check_mode", "held", "note_skipped", "per_window", "plan",
    "request_plan", "rewrite_of", "run_stage", "word_count",
]
