"""rich bars on stderr for the download and hashing events of ``weights.pull`` / ``weights.verify``."""

from __future__ import annotations

from typing import Any

from ltxcli.weights import Event, FileDone, FileStarted

from .common import Output


class WeightsProgress:
    """``with WeightsProgress(out) as bars: weights.pull(name, on_event=bars)``: one transient bar per file being
    downloaded or hashed, only where ``out`` shows progress (a terminal, no ``--quiet``); otherwise events are
    ignored. ``enabled`` overrides that choice."""

    def __init__(self, out: Output, *, enabled: bool | None = None) -> None:
        self.enabled = out.progress_enabled if enabled is None else enabled
        self._progress: Any = None
        self._tasks: dict[tuple[str, str], Any] = {}  # (phase, file) -> rich task id

    def __enter__(self) -> WeightsProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                      TransferSpeedColumn(), TimeRemainingColumn(),
                                      console=Console(stderr=True), transient=True)
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()

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
