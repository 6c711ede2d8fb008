"""Video sizes as the model takes them: the official padding (multiples of 32 pixels, ``8 k + 1`` frames) and the
check of a size, length and frame rate against a model's position range (:mod:`ltxcli.request` uses both)."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from .formatting import number_text

#: The highest frame rate a request takes (``ltx`` refuses more with the same line).
MAX_FRAME_RATE = 1000
#: The lowest frame rate a video is written at: the writer (:mod:`ltxcli.media.write`) stores a rate given as a
#: number as the nearest fraction with a denominator up to 1001, so 0.0006 fps was written at 1/1001 and 0.0004 was
#: refused (rounded to 0) after all the work; MP4's time base itself takes exact fractions down to 1/99999.
MIN_FRAME_RATE = Fraction(1, 1000)
#: The range every frame-rate check names (options, request fields, a latents file's record, the writer).
FRAME_RATES = f"[{float(MIN_FRAME_RATE):g}, {MAX_FRAME_RATE}]"


def is_frame_rate(rate: float | Fraction) -> bool:
    """Whether ``rate`` fps is one a video is written at: in :data:`FRAME_RATES` (NaN and inf are not)."""
    return MIN_FRAME_RATE <= rate <= MAX_FRAME_RATE  # NaN fails both comparisons, inf the second


def check_frame_rate(rate: float | Fraction, name: str = "frame_rate") -> None:
    """A ValueError naming ``name``, the value, :data:`FRAME_RATES` and the nearest rate in it (else 24)."""
    if not is_frame_rate(rate):
        nearest = MAX_FRAME_RATE if rate > MAX_FRAME_RATE else f"{float(MIN_FRAME_RATE):g}" if rate > 0 else 24
        raise ValueError(f"{name}={number_text(rate)} must be in {FRAME_RATES} (e.g. {nearest})")


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
    check_frame_rate(frame_rate)
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
            f"num_frames={num_frames} at frame_rate={number_text(frame_rate)} lasts {duration:.1f} s, above the model's "
            f"position range of {max_pos[0]} s (at most {longest} frames at this frame rate)"
        )


__all__ = ["FRAME_RATES", "MAX_FRAME_RATE", "MIN_FRAME_RATE", "check_frame_rate", "check_size", "is_frame_rate",
           "padded_size", "split_pad"]
