"""What a generation's progress events mean, for any renderer: which bar an event moves, its label and unit,
its rate and time left, and the plain one-line heartbeat for logs.

The pipeline and the writer call ``progress(stage, done, total)`` (:data:`ProgressFn`): stage
"text" (the prompt), "denoise" (steps; each pass restarts at 0), "decode" (tiles or time windows of the VAE
decode, one when it is not tiled) and "write" (frames written). :class:`Stages` turns that stream into
:class:`Stage` states (one per bar: a multi-scale run's second pass is a bar of its own; other stages, such as a download, name
their unit) and
:class:`Heartbeat` into lines: one when a stage starts, then at most one every :data:`HEARTBEAT_S` seconds.
Nothing here touches a device or a terminal (``ltx`` draws rich bars or prints the lines).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

#: Seconds between two heartbeat lines of one stage (``ltx generate --progress plain``).
HEARTBEAT_S = 10.0
LABELS = {"text": "encoding prompt", "denoise": "denoising", "decode": "decoding", "write": "writing",
          "window": "long video"}
#: A progress callback as ``Pipeline.generate(progress=...)`` takes it: ``(stage, done, total)``.
ProgressFn = Callable[[str, int, int], None]

UNITS = {"text": "prompts", "denoise": "steps", "decode": "tiles", "write": "frames", "window": "windows"}


@dataclass
class Stage:
    """One bar: ``key`` ("denoise2" for a second pass), its label (with the pass and the item's prefix), unit,
    progress and when it started (the monotonic clock of its first event)."""

    key: str
    label: str
    unit: str
    done: int = 0
    total: int = 0
    started: float = 0.0
    shown: float = field(default=-1.0)  # when its last heartbeat line was printed (-1: never)
    base: int = 0  # units already done when the stage started (the finished windows of a resumed long video)

    def rate(self, now: float) -> float | None:
        """Units per second since the stage started (None before the first unit done here)."""
        spent, done = now - self.started, self.done - self.base
        return done / spent if done > 0 and spent > 0 else None

    def left_s(self, now: float) -> float | None:
        """Seconds left at the current rate (None without one)."""
        rate = self.rate(now)
        return (self.total - self.done) / rate if rate else None

    def pace(self, now: float | None = None) -> str:
        """``1.52 steps/s, 18 s left`` (when done: the time it took); empty before the first unit."""
        now = time.monotonic() if now is None else now
        rate, left = self.rate(now), self.left_s(now)
        if rate is None or left is None:
            return ""
        return f"{rate:.3g} {self.unit}/s, " + (f"{left:.0f} s left" if self.done < self.total else
                                                 f"took {now - self.started:.1f} s")

    def line(self, now: float) -> str:
        """``denoising 12/40 steps, 1.52 steps/s, 18 s left``: the heartbeat text of this stage."""
        pace = self.pace(now)
        return f"{self.label} {self.done}/{self.total} {self.unit}" + (f", {pace}" if pace else "")


class Stages:
    """The stages of one generation (``prefix``: the batch item, "[0]" as ``{index}`` counts): ``update`` takes an
    event and returns its :class:`Stage`, new when the stage (or pass) just started."""

    def __init__(self, prefix: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.prefix = prefix
        self.clock = clock
        self.stages: dict[str, Stage] = {}
        self._last: dict[str, int] = {}
        self._pass = 1

    def update(self, stage: str, done: int, total: int, unit: str | None = None) -> tuple[Stage, bool]:
        if stage == "denoise" and done < self._last.get("denoise", 0):
            self._pass += 1  # multi-scale: the second pass restarts the count
        self._last[stage] = done
        key = f"denoise{self._pass}" if stage == "denoise" and self._pass > 1 else stage
        new = key not in self.stages
        if new:
            label = LABELS.get(stage, stage) + (f" (pass {self._pass})" if key != stage else "")
            self.stages[key] = Stage(key, f"{self.prefix} {label}" if self.prefix else label,
                                     unit or UNITS.get(stage, "steps"), started=self.clock(), base=done)
        s = self.stages[key]
        s.done, s.total = done, total
        return s, new


class Heartbeat:
    """``progress(stage, done, total)`` -> ``emit(line)``: a line when a stage starts, then at most one every
    ``interval`` seconds while it runs (``ltx --progress plain``: readable in a log, quiet for short stages)."""

    def __init__(self, emit: Callable[[str], None], prefix: str = "", interval: float = HEARTBEAT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.emit = emit
        self.interval = interval
        self.stages = Stages(prefix, clock)

    def __call__(self, stage: str, done: int, total: int, unit: str | None = None) -> None:
        s, new = self.stages.update(stage, done, total, unit)
        now = self.stages.clock()
        if new or now - s.shown >= self.interval:
            s.shown = now
            self.emit(s.line(now))


def counted(chunks: Iterable[Any], total: int, progress: Callable[[str, int, int], None] | None) -> Iterator[Any]:
    """Frame chunks passed through to a writer, reporting ``("write", frames written, total)`` as it asks for the
    next one (the first one is produced, e.g. decoded, before the write starts)."""
    written = 0
    for chunk in chunks:
        if progress and not written:
            progress("write", 0, total)
        yield chunk
        written += len(chunk)
        if progress:
            progress("write", written, total)


__all__ = ["HEARTBEAT_S", "LABELS", "UNITS", "Heartbeat", "Stage", "Stages", "counted"]
