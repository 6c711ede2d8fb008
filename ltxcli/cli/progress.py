"""rich bars on stderr for the download and hashing events of ``weights.pull`` / ``weights.verify``."""

from __future__ import annotations

from typing import Any

from ltxcli.weights import Event, FileDone, FileStarted

from .common import Output, RichBars


class WeightsProgress(RichBars):
    """``with WeightsProgress(out) as bars: weights.pull(name, on_event=bars)``: one transient bar per file being
    downloaded or hashed, only where ``out`` shows progress (a terminal, no ``--quiet``); otherwise events are
    ignored. ``enabled`` overrides that choice; ``out.plain``: heartbeat lines in MB instead of bars."""

    def __init__(self, out: Output, *, enabled: bool | None = None) -> None:
        from ltxcli.progress import Heartbeat

        super().__init__(out, enabled=False if out.plain else enabled)
        self.heartbeat = Heartbeat(out.info) if out.plain and out.progress else None

    def columns(self) -> list[Any]:
        from rich import progress as p

        return [p.TextColumn("{task.description}"), p.BarColumn(), p.DownloadColumn(), p.TransferSpeedColumn(),
                p.TimeRemainingColumn()]

    def __call__(self, event: Event) -> None:
        name = f"{'downloading' if event.phase == 'download' else 'verifying'} {event.file.rsplit('/', 1)[-1]}"
        if self.heartbeat is not None:
            self.heartbeat(name, event.done // 10**6, (event.total or 0) // 10**6, "MB")
        if self._progress is None:
            return
        key = (event.phase, event.file)
        if isinstance(event, FileStarted) or key not in self._tasks:
            if key in self._tasks:
                self._progress.remove_task(self._tasks.pop(key))
            self._tasks[key] = self._progress.add_task(name, total=event.total, completed=event.done)
        if isinstance(event, FileDone):
            self._progress.remove_task(self._tasks.pop(key))
        else:
            self._progress.update(self._tasks[key], completed=event.done, total=event.total)
