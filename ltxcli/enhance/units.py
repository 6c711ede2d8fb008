"""The enhancement stage of a generation that runs through a module around :meth:`ltxcli.pipeline.Pipeline.run`
(a long video's windows, an extension): its prompt rewritten as the *units* it is enhanced as, each one prompt
under the official rule (the whole request; per-window prompts each distinct window prompt as the first window
that takes it; an extension image-to-video of the input frame it continues from), before any window runs and
under one load of the pipeline's enhancer. Importing this module imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from .rules import held, note_skipped, per_window, request_plan

if TYPE_CHECKING:
    from ltxcli.pipeline import Pipeline
    from ltxcli.request import GenerationRequest


def enhanced(pipe: Pipeline, request: GenerationRequest, units: Sequence[GenerationRequest]) -> GenerationRequest:
    """``request`` with the rewrites of its ``units`` (each with the run's seed) as its ``enhanced_prompt``: one
    prompt's rewrite (``units`` is one request then), or per-window prompts' ``{window prompt: rewrite}`` (None
    when none is rewritten), as :meth:`ltxcli.pipeline.Pipeline.run` enhances one generation."""
    with held(pipe.enhancer):
        done = [enhanced_one(pipe, u) for u in units]
    if not per_window(request):
        return replace(request, enhanced_prompt=done[0].enhanced_prompt)
    rewrites = {u.prompt: u.enhanced_prompt for u in done if isinstance(u.enhanced_prompt, str)}
    return replace(request, enhanced_prompt=rewrites or None)


def enhanced_one(pipe: Pipeline, request: GenerationRequest) -> GenerationRequest:
    """One unit (one prompt, its seed set) with its rewrite where its plan says so; a prompt kept because of its
    conditions is one :class:`~ltxcli.enhance.rules.EnhancementSkippedWarning`, said once for the whole video (its
    windows have no enhancement stage). Image-to-video captions its first condition at the generation size."""
    plan_ = request_plan(request, pipe.preset)
    if plan_.kind is None or request.enhanced_prompt is not None:
        if request.enhanced_prompt is None:
            note_skipped(plan_)
        return request
    from ltxcli.conditions import first_frame_pixels

    pixels = first_frame_pixels(request, pipe.preset) if plan_.kind == "i2v" and pipe.enhancer is not None else None
    assert request.seed is not None  # (the caller's: long_video.plan draws one)
    return pipe._enhance(request, request.seed, pixels)


__all__ = ["enhanced", "enhanced_one"]
