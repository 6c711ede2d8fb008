"""rich bars on stderr for the download and hashing events of ``weights.pull`` / ``weights.verify``."""

from __future__ import annotations

from typing import Any

from ltxcli.weights import Event, FileDone, FileStarted

from .common import RichBars


class WeightsProgress(RichBars):
    """``with WeightsProgress(out) as bars: weights.pull(name, on_event=bars)``: one transient bar per file being
    downloaded or hashed, only where ``out`` shows progress (a terminal, no ``--quiet``); otherwise events are
    ignored. ``enabled`` overrides that choice."""

    def columns(self) -> list[Any]:
        from rich import progress as p

        return [p.TextColumn("{task.description}"), p.BarColumn(), p.DownloadColumn(), p.TransferSpeedColumn(),
                p.TimeRemainingColumn()]

    def __call__(self, event: Event) -> None:
        if self._progress is None:
            return
        key = (event.phase, event.file)
        if isinstance(event, FileStarted) or key not in self._tasks:
            if key in self._tasks:
                self._progress.remove_task(self._tasks.pop(key))
            verb = "downloading" if event.phase == "download" else "verifying"
            self._tasks[key] = self._progress.add_task(f"{verb} {event.file.rsplit('/', 1)[-1]}",
                                                       total=event.total, completed=event.done)
        if isinstance(event, FileDone):
            self._progress.remove_task(self._tasks.pop(key))
        else:
            self._progress.update(self._tasks[key], completed=event.done, total=event.total)
