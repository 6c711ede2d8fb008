"""A generation pass's settings (:class:`~ltxcli.presets.PassSettings`) as a request changes them: per-pass dicts
by request or yaml name, the checks every pass must pass, and video-to-video's cut of the schedule. No torch."""

from __future__ import annotations

import itertools
import math
import reprlib
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from .field_values import FieldTypeError, is_bool, is_int, is_number, list_of
from .field_values import as_list as plain_list
from .formatting import number_text
from .presets import PassSettings

#: Conditioning tokens whose mask reaches 1 - eps are "hard" (never denoised, only re-noised); the same
#: tolerance keeps a video-to-video timestep equal to the strength.
HARD_EPS = 1e-6

#: The most steps a pass takes: the scheduler's 1000 training timesteps (more would repeat timesteps), far above any
#: released schedule (8-40 steps); a typo such as 4000000 is refused up front.
MAX_STEPS = 1000
#: Request field names accepted in a per-pass dict -> the official yaml name (:class:`PassSettings` field).
#: The yaml names themselves are accepted too.
PASS_ALIASES: Mapping[str, str] = {
    "steps": "num_inference_steps",
    "rescale_scale": "rescaling_scale",
    "stg_blocks": "skip_block_list",
}


def _blocks(v: Any) -> list[Any]:
    """Block indices, or a per-interval list of them, as Python ints."""
    if list_of(is_int)(v):
        return [int(b) for b in plain_list(v) or ()]
    return [[int(b) for b in plain_list(group) or ()] for group in plain_list(v) or ()]


def _schedule(v: Any) -> Any:
    """A guidance value (a number, or one per interval) as Python floats."""
    return float(v) if is_number(v) else [float(x) for x in plain_list(v) or ()]


def _floats(v: Any) -> list[float]:
    return [float(x) for x in plain_list(v) or ()]


_INT = (is_int, "an integer", int)
_SCHEDULE = (lambda v: is_number(v) or list_of(is_number)(v), "a number or a list of numbers (one per interval)",
             _schedule)
_TIMES = (list_of(is_number), "a list of numbers", _floats)
#: What each per-pass setting (PassSettings field) takes, and its Python value; None only where the field takes it.
_PASS_TYPES: Mapping[str, tuple[Any, str, Any]] = {
    "num_inference_steps": _INT, "skip_initial_inference_steps": _INT, "skip_final_inference_steps": _INT,
    "timesteps": _TIMES, "guidance_timesteps": _TIMES,
    "guidance_scale": _SCHEDULE, "stg_scale": _SCHEDULE, "rescaling_scale": _SCHEDULE,
    "skip_block_list": (lambda v: list_of(is_int)(v) or list_of(list_of(is_int))(v),
                        "a list of block indices (or one list per interval)", _blocks),
    "cfg_star_rescale": (is_bool, "True or False", bool),
    "tone_map_compression_ratio": (is_number, "a number", float),
}
_OPTIONAL = ("num_inference_steps", "timesteps", "guidance_timesteps")


def pass_overrides(overrides: Mapping[str, Any] | None, name: str = "per-pass setting") -> dict[str, Any]:
    """A per-pass dict in request names and/or yaml names -> yaml names (:class:`PassSettings` fields).

    ``steps`` means what the top-level ``steps`` means (a step count replacing explicit timesteps, unless the
    dict also gives ``timesteps``); ``num_inference_steps`` is the raw yaml value. A setting given under both
    names, or an unknown name, is an error; a value of the wrong type (``steps=True`` ran one step, ``"2"`` failed
    comparing it) is a :class:`~ltxcli.field_values.FieldTypeError` naming ``name`` (``first_pass``) and the key.
    """
    given = dict(overrides or {})
    odd = [k for k in given if not isinstance(k, str)]
    if odd:
        raise FieldTypeError(f"{name} keys must be setting names (strings), got {reprlib.repr(odd[0])}")
    known = {f.name for f in fields(PassSettings)}
    unknown = sorted(k for k in given if PASS_ALIASES.get(k, k) not in known)
    if unknown:
        raise ValueError(
            f"unknown per-pass setting(s): {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known | set(PASS_ALIASES)))})"
        )
    out: dict[str, Any] = {}
    for key, value in given.items():
        field = PASS_ALIASES.get(key, key)
        if key != field and field in given:
            raise ValueError(f"per-pass setting {field!r} is given twice (as {key!r} and as {field!r}): give one")
        ok, what, to_python = _PASS_TYPES[field]
        if value is None and field in _OPTIONAL:
            out[field] = value
            continue
        if not ok(value):
            raise FieldTypeError(f"{name} {key}={reprlib.repr(value)} must be {what}")
        out[field] = to_python(value)
    if "steps" in given and "timesteps" not in out:
        out["timesteps"] = None
    return out


def flat_blocks(blocks: Any) -> tuple[int, ...]:
    """A per-interval block schedule collapsed to the blocks of its last (lowest-noise) interval."""
    return tuple(blocks[-1]) if blocks and isinstance(blocks[0], tuple) else tuple(blocks)


def as_list(value: Any) -> list[float]:
    """A guidance value (a scalar or a per-interval schedule) as a list."""
    return list(value) if isinstance(value, (tuple, list)) else [value]


def validate_pass(p: PassSettings, num_layers: int | None = None) -> None:
    """Steps or timesteps, guidance values, and (given the transformer's ``num_layers``) the STG blocks."""
    if p.timesteps is None:
        if p.num_inference_steps is None or not 1 <= p.num_inference_steps <= MAX_STEPS:
            nearest = 1 if p.num_inference_steps is None or p.num_inference_steps < 1 else MAX_STEPS
            raise ValueError(f"steps={p.num_inference_steps} must be in [1, {MAX_STEPS}] (use {nearest})")
        # (checked by the sampler once the pass started: a second pass's after the whole first pass had run)
        first, last = p.skip_initial_inference_steps, p.skip_final_inference_steps
        if first < 0 or last < 0 or first + last >= p.num_inference_steps:
            raise ValueError(f"skip_initial_inference_steps={first} and skip_final_inference_steps={last} must be >= 0 "
                             f"and leave at least one of the {p.num_inference_steps} steps")
    else:
        ts = list(p.timesteps)
        if not ts or any(not (0 < t <= 1) for t in ts) or any(a <= b for a, b in itertools.pairwise(ts)):
            raise ValueError(f"timesteps={ts} must be a non-empty strictly decreasing list in (0, 1]")
    for name in ("guidance_scale", "stg_scale", "rescaling_scale"):
        for v in as_list(getattr(p, name)):
            if not math.isfinite(v) or v < 0:
                hint = " (use 0; guidance 1 disables CFG, stg 0 disables STG)" if name != "rescaling_scale" else ""
                raise ValueError(f"{name}={number_text(v)} must be a finite number >= 0{hint}")
    if not 0 <= p.tone_map_compression_ratio <= 1:
        raise ValueError(f"tone_map_compression_ratio={number_text(p.tone_map_compression_ratio)} must be in [0, 1]")
    if num_layers is None:
        return
    blocks = p.skip_block_list
    flat = [b for group in blocks for b in group] if blocks and isinstance(blocks[0], tuple) else list(blocks)
    bad = [b for b in flat if not 0 <= b < num_layers]
    if bad and any(v > 0 for v in as_list(p.stg_scale)):
        raise ValueError(f"stg blocks {bad} do not exist: this transformer has blocks 0-{num_layers - 1}")


def v2v_pass(p: PassSettings, strength: float, schedule: str = "this schedule") -> PassSettings:
    """Keep the last ``strength`` of the schedule: explicit timesteps at or below it, else skipped steps.
    ``schedule`` names it in the error (a multi-scale pass's)."""
    if p.timesteps is not None:
        kept = tuple(t for t in p.timesteps if t <= strength + HARD_EPS)
        if not kept:
            raise ValueError(
                f"denoise_strength={strength} is below every timestep of {schedule} "
                f"({', '.join(map(str, p.timesteps))}): use at least {min(p.timesteps)}"
            )
        return p.updated({"timesteps": kept})
    steps = p.num_inference_steps
    assert steps is not None  # (validate_pass: a pass without timesteps has steps)
    skip = max(p.skip_initial_inference_steps, _skipped(steps, strength))
    if skip == 0:  # the whole schedule, from timestep 1: the input would be pure noise
        raise ValueError(f"denoise_strength={strength} keeps all {steps} steps, from pure noise: "
                         f"{_pure_noise_remedy(steps, strength)}")
    last = p.skip_final_inference_steps
    if skip + last >= steps:  # (the sampler named the skip_initial it derived, a number the user never gave)
        raise ValueError(f"denoise_strength={strength} keeps the last {steps - skip} of {schedule}'s {steps} steps, "
                         f"which skip_final_inference_steps={last} drops: none is left (use a higher strength or "
                         "skip fewer final steps)")
    return p.updated({"skip_initial_inference_steps": skip})


def keeps_no_step(p: PassSettings, strength: float) -> bool:
    """Whether a ``strength`` video-to-video keeps no step of the pass ``p``: every explicit timestep is above it
    (the distilled first pass's below 0.725), or the last steps it keeps are all among those ``p`` skips at the
    end (the 13B dev first pass's last 3 of 30: a strength up to 0.1)."""
    if p.timesteps is not None:
        return strength + HARD_EPS < min(p.timesteps)
    steps = p.num_inference_steps
    assert steps is not None  # (validate_pass: a pass without timesteps has steps)
    return max(p.skip_initial_inference_steps, _skipped(steps, strength)) + p.skip_final_inference_steps >= steps


def _skipped(steps: int, strength: float) -> int:
    """The steps a ``strength`` video-to-video leaves out of a ``steps``-step schedule (at least one is kept)."""
    return steps - max(1, round(steps * strength))


def _pure_noise_remedy(steps: int, strength: float) -> str:
    """What makes a ``strength`` that keeps all ``steps`` steps leave one out: more steps, the fewest from about 1.5
    kept on (more than ``steps``, at most :data:`MAX_STEPS`) that do, else (a strength within ``0.5 / MAX_STEPS`` of
    1) a strength that does at ``steps`` (the first rule, ``ceil(1.5 / strength)``, named a count that keeps all
    steps again for a strength near 1: 0.9 with 2 steps said "e.g. 2")."""
    first = max(2, steps + 1, min(math.ceil(1.5 / strength), MAX_STEPS))
    more = next((n for n in range(first, MAX_STEPS + 1) if _skipped(n, strength) > 0), None)
    if more is not None:
        return f"use more steps (e.g. {more}) or a lower strength"
    if steps >= 2:
        return f"use a lower strength (at most {(steps - 1) / steps:.6f}".rstrip("0") + ")"
    return "use a lower strength (e.g. 0.5) with more steps (e.g. 3)"


__all__ = ["HARD_EPS", "MAX_STEPS", "PASS_ALIASES", "as_list", "flat_blocks", "keeps_no_step", "pass_overrides", "v2v_pass",
           "validate_pass"]
