"""The memory plan of the requests one model load serves (:func:`plan_run`), before anything loads.

The plan is built in three steps, each a module of its own: :mod:`~ltxcli.memory.estimate` (the stages of one
generation, the offload modes and the estimate of its peak device and host memory), :mod:`~ltxcli.memory.shape`
(what a request's memory depends on beyond its size, and its estimator: conditions, inputs, extensions, windows)
and :mod:`~ltxcli.memory.verdict` (whether it fits, and the settings or smaller size that would). Their public
names are importable from here too, where the CLI, the job and the tests take them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..models.configs import TransformerConfig
from .estimate import (
    CONTROL_MODEL,
    ENCODE_FACTOR,
    OFFLOAD_MODES,
    TILING_MODES,
    TRANSFORMER_UNITS,
    TRANSFORMER_UNITS_PER_TOKEN_TIMESTEPS,
    Estimator,
    MemoryEstimate,
    PassSize,
    Stage,
    decode_bytes,
    estimate_memory,
    input_hold,
    latent_shape,
    stage_weights,
)
from .shape import RunShape, condition_frames, request_estimator, request_shape, run_passes
from .verdict import MemoryVerdict, memory_alternatives, memory_verdict, plan_estimators, smaller_size


@dataclass(frozen=True)
class RunPlan:
    """The memory plans of the requests one model load serves (:func:`plan_run`): the transformer config (its
    heads decide the parallel modes), the free memory measured on the device, and per request its estimator and
    ``(options text, estimator)`` alternatives, what :func:`memory_verdict` takes."""

    transformer: TransformerConfig
    free_bytes: int
    requests: list[tuple[Estimator, list[tuple[str, Estimator]]]]


def plan_run(
    requests: Sequence[Any], spec: Any, *, device: torch.device | str, dtype: torch.dtype, fp8: bool, narrow: bool,
    offload: str, vae_tiling: str, streamed: bool = True, free_bytes: int | None = None,
    weights_storage: str | None = None,
    enhancer_bytes: Sequence[int] = (),
) -> RunPlan:
    """Plan every request (resolved :class:`~ltxcli.request.GenerationRequest` s: sizes set, conditions checked)
    that one load of ``spec`` (:class:`~ltxcli.spec.ModelSpec`) runs on ``device``: the weights from the headers
    as the loaders will hold them (``fp8``: ``--dtype fp8``; ``narrow``: layer weights kept in the checkpoint's
    dtype, :func:`ltxcli.loading.keep_narrow`), the text encoder freed after use when there is one request, and
    ``streamed``: the video written chunk by chunk (what ``ltx generate`` does). ``free_bytes``: default, what
    the device has free now (:func:`ltxcli.memory.decode.free_memory_bytes`). ``weights_storage``: the blocks'
    linear weights stored in ``"fp8"`` or ``"int8"`` (``--weights-dtype``). ``enhancer_bytes``: per request, the weights of
    its prompt enhancement stage (:func:`ltxcli.enhance.stage.enhancer_bytes`; missing or 0: none)."""
    from .decode import free_memory_bytes
    from .weights import spec_parts

    tcfg, vcfg, parts = spec_parts(spec, dtype, fp8=fp8, narrow=narrow, weights_storage=weights_storage)
    free = free_memory_bytes(device) if free_bytes is None else free_bytes
    kind = torch.device(device).type
    plans = []
    for i, r in enumerate(requests):
        shape = request_shape(spec.preset, r, dtype=dtype, depth_model="tiny" if spec.kind == "builtin" else None,
                              weights_dir=spec.weights_dir, max_positions=tcfg.positional_embedding_max_pos)
        # offloaded weights wait in host memory: on a CPU device that is the same memory, so nothing is saved
        plans.append(plan_estimators(
            shape, tcfg, vcfg, dtype=dtype, offload=offload, vae_tiling=vae_tiling, offload_saves=kind == "cuda",
            parts=parts, free_bytes=free, device_is_host=kind == "cpu", text_encoder_freed=len(requests) == 1,
            streamed=streamed, enhancer_bytes=enhancer_bytes[i] if i < len(enhancer_bytes) else 0))
    return RunPlan(tcfg, free, plans)


__all__ = [
    "CONTROL_MODEL", "ENCODE_FACTOR", "OFFLOAD_MODES", "TILING_MODES", "TRANSFORMER_UNITS", "TRANSFORMER_UNITS_PER_TOKEN_TIMESTEPS",
    "MemoryEstimate", "MemoryVerdict", "PassSize", "RunPlan", "RunShape", "Stage", "condition_frames", "decode_bytes",
    "estimate_memory", "input_hold", "latent_shape", "memory_alternatives", "memory_verdict", "plan_estimators", "plan_run",
    "request_estimator", "request_shape", "run_passes", "smaller_size", "stage_weights",
]
