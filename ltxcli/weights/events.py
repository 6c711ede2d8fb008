"""Progress of :func:`~ltxcli.weights.pull` and :func:`~ltxcli.weights.verify`, reported as events.

The library never draws anything: it calls ``on_event(event)`` (when given) and the caller renders, e.g. the CLI's
rich bars on stderr (``ltxcli/cli/progress.py``). Every event carries the whole state of one file's download or
hash (``done`` of ``total`` bytes), so a renderer needs no memory beyond which bar belongs to which file.

Per file and phase the order is one :class:`FileStarted`, any number of :class:`FileProgress`, then one
:class:`FileDone` when that download or hash completed. An exception (a network error, Ctrl-C) ends the whole
``pull``/``verify`` call without a :class:`FileDone`: a renderer should drop its bars when the call returns or
raises. An exception raised by ``on_event`` itself propagates out of the call (that is how a caller stops a
download); everything reported as downloaded is on disk by then, and the next pull resumes from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["Event", "EventCallback", "FileDone", "FileProgress", "FileStarted", "FileTask", "Phase"]

#: ``download``: bytes received from the Hub; ``verify``: bytes hashed (sha256 or the git blob id).
Phase = Literal["download", "verify"]


@dataclass(frozen=True)
class Event:
    """``done`` of ``total`` bytes (None: unknown) of ``file`` (its path in the repo) downloaded or hashed."""

    phase: Phase
    file: str
    done: int
    total: int | None


@dataclass(frozen=True)
class FileStarted(Event):
    """A download or hash begins. ``done`` is not 0 when a download resumes a partial file."""


@dataclass(frozen=True)
class FileProgress(Event):
    """The count moved: bytes arrived or were hashed, a download started over (``done`` went down), or the total
    became known."""


@dataclass(frozen=True)
class FileDone(Event):
    """The download or hash of the file completed (a hash that does not match is reported after this event)."""


EventCallback = Callable[[Event], None]


class FileTask:
    """The events of one file's download or hash, sent to ``on_event`` (nothing is sent when it is None)."""

    def __init__(self, on_event: EventCallback | None, phase: Phase, file: str, total: int | None,
                 initial: int = 0) -> None:
        self.on_event, self.phase, self.file, self.total, self.done = on_event, phase, file, total, initial
        self._emit(FileStarted)

    def _emit(self, kind: type[Event]) -> None:
        if self.on_event is not None:
            self.on_event(kind(self.phase, self.file, self.done, self.total))

    def advance(self, n: int) -> None:
        self.done += n
        self._emit(FileProgress)

    def restart(self, done: int) -> None:
        """Count from ``done`` again (a download that restarts from zero or from what is on disk)."""
        if done == self.done:
            return
        self.done = done
        self._emit(FileProgress)

    def set_total(self, total: int | None) -> None:
        self.total = total
        self._emit(FileProgress)

    def finish(self) -> None:
        self._emit(FileDone)
