"""torchrun (``torch.distributed.run``) as ``ltx --gpus`` starts it (:func:`ltxcli.parallel.launch.launch`): the
same launcher, ending without its Python traceback when a worker failed or a signal stopped it. Each worker has
already said what went wrong in one line; the launcher's exit code is unchanged (1), and the job's code comes
from the workers' (:func:`ltxcli.parallel.launch.job_exit_code`). A worker a signal ended (SIGKILL: most
likely the out-of-memory killer) could do neither: its signal is recorded here for it
(:func:`ltxcli.parallel.launch.record_signal_deaths`), as is a signal that stopped torchrun itself
(:func:`ltxcli.parallel.launch.record_launcher_signal`): workers still starting die of it before they can say so."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .launch import STOP_GRACE_S, record_launcher_signal, record_signal_deaths


def main() -> None:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    if os.environ.get("LOGLEVEL"):  # torch's own variable, which only some of its elastic loggers read
        logging.getLogger("torch.distributed").setLevel(os.environ["LOGLEVEL"])
    start_workers_with_sigint_blocked()
    try:
        torchrun()
    except ChildFailedError as e:  # a worker a signal ended said nothing: recorded here for `ltx --gpus`
        record_signal_deaths({rank: (-f.exitcode, f.timestamp) for rank, f in e.failures.items() if f.exitcode < 0})
        sys.exit(1)
    except SignalException as e:  # torchrun itself was signalled, and stopped the workers with the same signal
        record_launcher_signal(int(e.sigval))  # a worker still starting dies of it without a word
        stop_leftover_workers(int(e.sigval), STOP_GRACE_S + 5.0)
        sys.exit(1)


def start_workers_with_sigint_blocked() -> None:
    """torchrun starts each worker with SIGINT blocked (the signal mask is inherited across fork and exec, and
    Python's start-up leaves it as it is): torchrun passes ``ltx``'s Ctrl-C or SIGTERM on to its workers as SIGINT,
    which raised KeyboardInterrupt in a worker still in Python's start-up (``Fatal Python error:
    init_import_site`` and a traceback, per worker). The worker's code unblocks it first thing
    (:func:`ltxcli.parallel.launch.release_held_sigint`); SIGTERM is not blocked (its default action is silent).
    The mask is set in the thread that spawns, for the spawn only: torchrun's own SIGINT waits meanwhile."""
    from torch.distributed.elastic.multiprocessing.subprocess_handler import subprocess_handler as handler

    popen = getattr(handler.SubprocessHandler, "_popen", None)
    if popen is None or not hasattr(signal, "pthread_sigmask"):  # another torch, or no POSIX signal masks
        return

    def blocked(self: Any, *args: Any, **kwargs: Any) -> Any:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])
        try:
            return popen(self, *args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)

    handler.SubprocessHandler._popen = blocked  # type: ignore[method-assign]


def stop_leftover_workers(signum: int, grace_s: float) -> list[int]:
    """Stop the workers torchrun left running; returns their pids. A signal that reaches torchrun while it is still
    starting them (before it holds their handles) leaves them waiting for a rendezvous that is gone (for up to the
    job's 2 h timeout), holding the launching process's stderr open. Each gets ``signum`` (a worker that has its
    handler removes its partial outputs and exits within :data:`ltxcli.parallel.launch.STOP_GRACE_S`; one still
    starting dies of it), then SIGKILL after ``grace_s``. Linux (``/proc``); elsewhere none are found."""
    left = _children()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    deadline, waiting = time.monotonic() + grace_s, list(left)
    while waiting and time.monotonic() < deadline:
        time.sleep(0.05)
        waiting = [pid for pid in waiting if not _reaped(pid)]
    for pid in waiting:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _reaped(pid, block=True)
    return left


def _children() -> list[int]:
    """The process ids of this process's children (those of all its threads), from ``/proc``."""
    pids: list[int] = []
    for task in Path("/proc/self/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


def _reaped(pid: int, *, block: bool = False) -> bool:
    """Whether child ``pid`` has ended (and is reaped now); ``block``: wait for it."""
    try:
        done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:  # not (or no longer) a child of this process
        return True
    return done == pid


if __name__ == "__main__":
    main()
