"""Video sizes as the model takes them: the official padding (multiples of 32 pixels, ``8 k + 1`` frames) and the
check of a size, length and frame rate against a model's position range (:mod:`ltxcli.request` uses both)."""

from __future__ import annotations

import math
from collections.abc import Sequence

#: The highest frame rate a request takes (``ltx`` refuses more with the same line).
MAX_FRAME_RATE = 1000


def padded_size(height: int, width: int, num_frames: int) -> tuple[int, int, int]:
    """Official padding: sizes up to multiples of 32, frames up to ``8k + 1``."""
    return (
        ((height - 1) // 32 + 1) * 32,
        ((width - 1) // 32 + 1) * 32,
        ((num_frames - 2) // 8 + 1) * 8 + 1,
    )


def split_pad(total: int) -> tuple[int, int]:
    """Padding ``total`` split as the official pipeline splits it: the smaller half first."""
    return total // 2, total - total // 2


def check_size(height: int, width: int, num_frames: int, frame_rate: float, max_pos: Sequence[int]) -> None:
    """Reject impossible requests before any work; messages name the value, the rule and a valid value."""
    for name, value in (("height", height), ("width", width), ("num_frames", num_frames)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name}={value!r} must be an integer")
        if value < 1:  # worded as ltx's check (ltxcli.runner), which asks 2 px of an H.264 file
            hint = ("e.g. 121; 8k + 1 frames avoid padding" if name == "num_frames"
                    else "e.g. 512; sizes are padded to multiples of 32")
            raise ValueError(f"{name}={value} must be at least 1 ({hint})")
    if not (0 < frame_rate <= MAX_FRAME_RATE and math.isfinite(frame_rate)):
        raise ValueError(f"frame_rate={frame_rate} must be in (0, {MAX_FRAME_RATE}] (e.g. "
                         f"{MAX_FRAME_RATE if frame_rate > MAX_FRAME_RATE else 24})")
    ph, pw, pf = padded_size(height, width, num_frames)
    # Positions are fractions of max_pos (seconds, pixels); the model was trained within that range.
    if ph > max_pos[1]:
        raise ValueError(f"height={height} pads to {ph}, above the model's position range of {max_pos[1]} px "
                         f"(use at most {max_pos[1]})")
    if pw > max_pos[2]:
        raise ValueError(f"width={width} pads to {pw}, above the model's position range of {max_pos[2]} px "
                         f"(use at most {max_pos[2]})")
    duration = (pf - 1) / frame_rate
    if duration > max_pos[0]:
        longest = int(max_pos[0] * frame_rate) // 8 * 8 + 1
        raise ValueError(
            f"num_frames={num_frames} at frame_rate={frame_rate} lasts {duration:.1f} s, above the model's "
            f"position range of {max_pos[0]} s (at most {longest} frames at this frame rate)"
        )


__all__ = ["MAX_FRAME_RATE", "check_size", "padded_size", "split_pad"]
