"""The memory check a generating command runs before any weight is loaded: will the run fit.

The memory plan itself (what each stage of the run holds, per offload mode and tiling) is the library's
(:mod:`ltxcli.memory.plan`); here its verdict becomes the one-line refusal (exit 5) with the settings or the
smaller size that would fit. ``LTX_NO_MEMORY_CHECK=1`` skips the check.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from .common import EXIT_OOM, CliError, human_bytes

NO_MEMORY_CHECK_ENV = "LTX_NO_MEMORY_CHECK"
_RUNNING = {"text encoder": "the text encoder", "condition encode": "the VAE encoder", "upsampler": "the upsampler",
            "write": "the output video"}


def free_memory_bytes(device: Any) -> int:
    """What a run on ``device`` can still allocate (:func:`ltxcli.memory.decode.free_memory_bytes`; imported
    here lazily so the CLI starts without torch)."""
    from ltxcli.memory.decode import free_memory_bytes as _free

    return _free(device)


def memory_check_disabled() -> bool:
    return os.environ.get(NO_MEMORY_CHECK_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def describe(est: Any) -> str:
    """``about X (weights Y + denoising Z)`` for a :class:`ltxcli.memory.plan.MemoryEstimate`: its peak
    and the stage that reaches it."""
    stage = est.peak_stage
    if stage.name.startswith("denoise") or stage.name == "decode":
        label = "denoising" if stage.name != "decode" else "tiled decoding" if est.vae_tiled else "decoding"
        tail = f" + {label} {human_bytes(stage.activations)}"
    else:
        chunks = f" in chunks of {c} latent frame{'s' * (c > 1)}" if stage.name == "condition encode" and (c := est.encode_chunk) else ""
        tail = (f" + {human_bytes(stage.activations)}" if stage.activations else "") + f" while running {_RUNNING.get(stage.name, stage.name)}{chunks}"
    tail += f" + the video on the host {human_bytes(held)}" if (held := est.footprint(stage) - stage.device_bytes) else ""
    return f"about {human_bytes(est.peak_bytes)} (weights {human_bytes(stage.weights)}{tail})"


def check_memory(estimate: Callable[[int, int, int], Any], it: Any, *, device: Any, free_bytes: int, where: str = "",
                 alternatives: Sequence[tuple[str, Callable[[int, int, int], Any]]] = ()) -> None:
    """Exit 5 with one line when ``estimate`` (a :class:`MemoryEstimate`) of batch item ``it``'s size exceeds
    ``free_bytes``. The line names both, the first of ``alternatives`` (``(options, estimate)`` pairs, the fastest
    first: ``--offload model``...) that fits at this size, a smaller size that fits with the current options (if
    any; :func:`ltxcli.memory.plan.memory_verdict`), asked for as the item asks (:meth:`ltxcli.batch.BatchItem.size_option`:
    a --duration, an extension's --frames, a --batch line's keys)."""
    from ltxcli.memory.plan import memory_verdict

    v = memory_verdict(estimate, height=it.height, width=it.width, num_frames=it.num_frames, free_bytes=free_bytes,
                       alternatives=alternatives, input_frames=it.input_frames or 0, least_frames=it.least_frames)
    if v.fits:
        return
    est = v.estimate
    advice: list[str] = []
    if v.weights_too_large:
        advice.append(f"the weights alone need {human_bytes(est.fixed_bytes)}")
    if v.fitting is not None:
        advice.append(f"try {v.fitting[0]}, which needs {describe(v.fitting[1])}")
    elif v.least is not None:
        advice.append(f"{v.least[0]} alone still needs {describe(v.least[1])}")
    if not v.weights_too_large:
        lead = "or a smaller size" if v.fitting is not None else "try a smaller size"
        if v.smaller is not None:
            (h, w, f), smaller = v.smaller
            advice.append(f"{lead}, e.g. {it.size_option(h, w, f)}, which needs {describe(smaller)}")
        elif v.fitting is None:
            advice.append(f"try a smaller {it.size_option()}")
    advice.append(f"or set {NO_MEMORY_CHECK_ENV}=1 to try anyway")
    raise CliError(f"{where}this run needs {describe(est)} on {device} but {human_bytes(free_bytes)} is free: "
                   + "; ".join(advice), EXIT_OOM)


__all__ = ["NO_MEMORY_CHECK_ENV", "check_memory", "describe", "free_memory_bytes", "memory_check_disabled"]
