"""The verdict on a request's memory: whether it fits the free memory, and what would (settings that save memory,
:func:`memory_alternatives` / :func:`plan_estimators`, or a smaller size, :func:`smaller_size`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..models.configs import TransformerConfig, VAEConfig
from .estimate import OFFLOAD_MODES, MemoryEstimate
from .shape import RunShape, request_estimator
from .weights import WeightParts


def memory_alternatives(offload: str, vae_tiling: str, *, offload_saves: bool) -> list[tuple[str, str, str]]:
    """``(options text, offload, vae_tiling)`` settings that save memory over the given ones, fastest first:
    tiling the decode, then offloading by stage, then streaming blocks (offload only where it saves device
    memory, i.e. on a GPU)."""
    offloads = list(OFFLOAD_MODES[OFFLOAD_MODES.index(offload):]) if offload_saves else [offload]
    tilings = [vae_tiling, "on"] if vae_tiling == "off" else [vae_tiling]
    out = []
    for o in offloads:
        for t in tilings:
            if (o, t) == (offload, vae_tiling):
                continue
            text = " ".join(([f"--offload {o}"] if o != offload else []) + ([f"--vae-tiling {t}"] if t != vae_tiling else []))
            out.append((text, o, t))
    return out


def plan_estimators(
    shape: RunShape, transformer: TransformerConfig, vae: VAEConfig, *, dtype: torch.dtype, offload: str,
    vae_tiling: str, offload_saves: bool = True, **kwargs: Any,
) -> tuple[Callable[[int, int, int], MemoryEstimate], list[tuple[str, Callable[[int, int, int], MemoryEstimate]]]]:
    """The estimator of a request of this shape with the given ``offload`` / ``vae_tiling``, and
    ``(options text, estimator)`` for each of its :func:`memory_alternatives` (what :func:`memory_verdict`
    takes); ``kwargs``: the rest of :func:`estimate_memory`'s settings (weights, device, ``streamed``).

    Where the weights ``parts`` can be stored in one byte (:attr:`WeightParts.int8_storage`), the same settings
    with ``--weights-dtype int8`` join them: after tiling and ``--offload model`` (exact, and cheap next to a run),
    before streaming blocks (``--offload sequential``, slow). int8 rather than fp8 storage: the same bytes (plus 4
    a row), a third to a seventh of fp8's rounding error (0.4-0.9 % of a layer's output against 2.5 %); a
    widening pass per layer call costs little."""

    def estimator(o: str, t: str, **extra: Any) -> Callable[[int, int, int], MemoryEstimate]:
        return request_estimator(shape, transformer, vae, dtype=dtype, offload=o, vae_tiling=t,
                                 offload_saves=offload_saves, **{**kwargs, **extra})

    plain = memory_alternatives(offload, vae_tiling, offload_saves=offload_saves)
    ranked = [(_cost(o, t, False), text, estimator(o, t)) for text, o, t in plain]
    parts: WeightParts | None = kwargs.get("parts")
    if parts is not None and parts.int8_storage is not None:
        int8_parts = functools.cache(parts.int8_storage)  # built once, when a verdict first needs it

        def stored_int8(o: str, t: str) -> Callable[[int, int, int], MemoryEstimate]:
            return lambda h, w, f: estimator(o, t, parts=int8_parts())(h, w, f)

        ranked += [(_cost(o, t, True), " ".join(filter(None, ["--weights-dtype int8", text])), stored_int8(o, t))
                   for text, o, t in [("", offload, vae_tiling), *plain]]
    ranked.sort(key=lambda r: r[0])  # stable: memory_alternatives' order among equals
    return estimator(offload, vae_tiling), [(text, est) for _, text, est in ranked]


def _cost(offload: str, vae_tiling: str, stored: bool) -> float:
    """Rank of a memory-saving setting, cheapest first: tiling the decode, offloading by stage, int8 storage,
    then streaming blocks."""
    return {"none": 0.0, "model": 1.0, "sequential": 3.0}[offload] + (1.5 if stored else 0.0) + 0.1 * (vae_tiling == "on")


def smaller_size(fits: Callable[[int, int, int], bool], height: int, width: int, num_frames: int,
                 input_frames: int = 0, least_frames: int = 1) -> tuple[int, int, int] | None:
    """The largest request with the same aspect ratio (sizes multiples of 32, frames 8k + 1) that ``fits``.
    ``input_frames``: an extension's input, whose frames the output keeps whatever its length: only the new ones
    (``ltx extend --frames``) are scaled, to a multiple of 8 (the generation's 8k + 1 grid) or at least one.
    ``least_frames``: no shorter length is tried (one past the last condition's frame: a shorter one is refused),
    rounded up to 8k + 1 for a length that is not an extension's."""
    if not input_frames:
        least_frames = min(num_frames, (least_frames + 6) // 8 * 8 + 1)
    for scale in (0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125):
        h = max(32, int(height * scale) // 32 * 32)
        w = max(32, int(width * scale) // 32 * 32)
        if input_frames:
            f = input_frames + max(1, int((num_frames - input_frames) * scale) // 8 * 8)
        else:
            f = max(1, int((num_frames - 1) * scale) // 8 * 8 + 1)
        f = max(f, least_frames)
        if (h, w, f) != (height, width, num_frames) and fits(h, w, f):
            return h, w, f
    return None


@dataclass(frozen=True)
class MemoryVerdict:
    """Whether a request fits ``free_bytes``, and what would: ``fitting`` (the first alternative settings that
    fit at this size, ``(options text, estimate)``), ``least`` (else the alternative that needs least),
    ``smaller`` (a smaller size that fits with the current settings, with its estimate)."""

    estimate: MemoryEstimate
    free_bytes: int
    fitting: tuple[str, MemoryEstimate] | None = None
    least: tuple[str, MemoryEstimate] | None = None
    smaller: tuple[tuple[int, int, int], MemoryEstimate] | None = None

    @property
    def fits(self) -> bool:
        return self.estimate.peak_bytes <= self.free_bytes

    @property
    def weights_too_large(self) -> bool:
        return self.estimate.fixed_bytes >= self.free_bytes


def memory_verdict(
    estimate: Callable[[int, int, int], MemoryEstimate], *, height: int, width: int, num_frames: int,
    free_bytes: int, alternatives: Sequence[tuple[str, Callable[[int, int, int], MemoryEstimate]]] = (),
    input_frames: int = 0, least_frames: int = 1,
) -> MemoryVerdict:
    """:class:`MemoryVerdict` of ``estimate(height, width, num_frames)`` against ``free_bytes``;
    ``alternatives``: ``(options text, estimate)`` pairs, the fastest first (:func:`memory_alternatives`);
    ``input_frames``: an extension's input frames, which a smaller size keeps, and ``least_frames``: the fewest
    it may have (:func:`smaller_size`)."""
    est = estimate(height, width, num_frames)
    if est.peak_bytes <= free_bytes:
        return MemoryVerdict(est, free_bytes)
    options = [(label, alt(height, width, num_frames)) for label, alt in alternatives]
    fitting = next(((label, e) for label, e in options if e.peak_bytes <= free_bytes), None)
    least = None
    if fitting is None and options:
        label, e = min(options, key=lambda o: o[1].peak_bytes)
        least = (label, e) if e.peak_bytes < est.peak_bytes else None
    smaller = None
    if est.fixed_bytes < free_bytes:
        size = smaller_size(lambda h, w, f: estimate(h, w, f).peak_bytes <= free_bytes, height, width, num_frames,
                            input_frames, least_frames)
        smaller = (size, estimate(*size)) if size is not None else None
    return MemoryVerdict(est, free_bytes, fitting, least, smaller)


__all__ = ["MemoryVerdict", "memory_alternatives", "memory_verdict", "plan_estimators", "smaller_size"]
