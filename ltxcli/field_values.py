"""Checks of single request field values that need nothing else of the request: the types a field takes
(:class:`FieldTypeError` and the predicates :func:`ltxcli.request.check_fields` applies) and the step-cache spec
(:func:`parse_cache`). Kept apart from :mod:`ltxcli.request`, which re-exports the public names; like it, this
module imports no torch.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any


class FieldTypeError(TypeError, ValueError):
    """A request field of the wrong type (a tuple for a :class:`~ltxcli.request.Condition`, ``"3"`` for a number): a TypeError that
    names the field and what it takes, and a ValueError, so that callers reporting ValueErrors as a user's
    mistake (the CLI: exit 2) report it as one."""


def is_text(v: Any) -> bool:
    """A string that is UTF-8 text: an argument in another encoding (Latin-1 ``caf\\xe9``) reaches Python with its
    bytes as lone surrogates (os.fsdecode), on which the tokenizer fails with a TypeError."""
    if not isinstance(v, str):
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_bool(v: Any) -> bool:
    return type(v).__name__ in ("bool", "bool_")  # Python's or numpy's


def is_number(v: Any, kind: type = numbers.Real) -> bool:
    """A Python or numpy (registered as a ``numbers`` kind) number of ``kind``, or a 0-d tensor or array of an
    integer (or, for Real, floating) dtype; never a bool or text."""
    if is_bool(v) or isinstance(v, (str, bytes)):
        return False
    dtype = str(getattr(v, "dtype", "bool"))  # "torch.int64", "float32", ...
    by_dtype = "int" in dtype or (kind is numbers.Real and "float" in dtype)
    return isinstance(v, kind) or (getattr(v, "ndim", None) == 0 and "bool" not in dtype and by_dtype)


def is_int(v: Any) -> bool:
    return is_number(v, numbers.Integral)


def is_tensor(v: Any) -> bool:
    """A torch tensor (or parameter), by its type's name: torch is not imported here (the CLI's start)."""
    return type(v).__name__ in ("Tensor", "Parameter")


def is_float_tensor(v: Any) -> bool:
    """A torch tensor of a real floating dtype that holds data (not on the meta device): what latents are. An integer
    or bool tensor would be taken as its values cast (``torch.randn(...).long()``: mostly 0 and -1), a complex one
    would lose its imaginary part with a warning, a meta one fails deep in the run."""
    return is_tensor(v) and v.is_floating_point() and not v.is_meta


#: What a condition's or a control's media may be (:func:`is_media`).
MEDIA_KINDS = "a path, a PIL image or a torch tensor [F, H, W, 3] (torch.from_numpy)"


def is_media(v: Any) -> bool:
    """A path, a PIL image (by what reading uses), a torch tensor or a file decoded already (a path-like): not a
    numpy array, which reading takes for a path."""
    return isinstance(v, (str, os.PathLike)) or is_tensor(v) or (hasattr(v, "mode") and hasattr(v, "convert"))


def as_list(v: Any) -> list[Any] | None:
    """A list or tuple, or a numpy array or tensor as its Python list; None for anything else."""
    v = v.tolist() if hasattr(v, "tolist") and not isinstance(v, (str, bytes)) else v
    return list(v) if isinstance(v, Sequence) and not isinstance(v, (str, bytes)) else None


def list_of(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: (items := as_list(v)) is not None and all(ok(x) for x in items)



#: ``--cache`` modes and the threshold each takes when none is given (TeaCache4LTX-Video's example uses 0.05 for
#: its 2.1x; diffusers' ``FirstBlockCacheConfig`` defaults to 0.05).
CACHE_THRESHOLDS: Mapping[str, float] = {"none": 0.0, "teacache": 0.05, "fbcache": 0.05}


def parse_cache(spec: str | None) -> tuple[str, float]:
    """``"none"``, ``"teacache[:THRESH]"`` or ``"fbcache[:THRESH]"`` -> ``(mode, threshold)`` (``None``: no cache).
    ``ValueError`` names the rule; threshold 0 caches nothing (every step computed)."""
    if spec is None:
        return "none", 0.0
    mode, sep, value = str(spec).strip().lower().partition(":")
    usage = f"cache={spec!r} must be none, teacache[:THRESHOLD] or fbcache[:THRESHOLD] (e.g. teacache:0.05)"
    if mode not in CACHE_THRESHOLDS or (mode == "none" and sep):
        raise ValueError(usage)
    if not sep:
        return mode, CACHE_THRESHOLDS[mode]
    if "_" in value:  # float() reads "1_0" as 10
        raise ValueError(usage)
    try:
        threshold = float(value)
    except ValueError:
        raise ValueError(usage) from None
    if not (math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"cache threshold {value} must be a finite number >= 0 (e.g. teacache:0.05)")
    return mode, threshold


def check_run_options(progress: Any, stream: Any) -> None:
    """The ``progress`` and ``stream`` arguments of the run entry points (:meth:`ltxcli.Pipeline.run`,
    :func:`ltxcli.long_video.generate`, :func:`ltxcli.extend.run_extension`, :func:`ltxcli.run_batch`), checked
    before any work: ``progress=5`` failed with "'int' object is not callable" once the text stage reported, and
    ``stream="yes"`` (any truthy object) was taken as True. One TypeError naming each bad value."""
    bad = []
    if progress is not None and not callable(progress):
        bad.append(f"progress={progress!r} must be a callable or None")
    if not is_bool(stream):
        bad.append(f"stream={stream!r} must be True or False")
    if bad:
        raise TypeError("; ".join(bad))


__all__ = ["CACHE_THRESHOLDS", "MEDIA_KINDS", "FieldTypeError", "as_list", "check_run_options", "is_bool",
           "is_float_tensor", "is_int", "is_media", "is_number", "is_tensor", "is_text", "list_of", "parse_cache"]
