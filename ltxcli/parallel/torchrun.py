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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .launch import (
    EXIT_INTERRUPTED,
    RANK_STATUS_ENV,
    STAGE_ENV,
    STOP_GRACE_S,
    record_launcher_signal,
    record_signal_deaths,
    release_held_sigint,
    strip_option,
    torchrun_command,
)


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


def run_stage(args: Sequence[str], nproc: int, prepare: Callable[[], str | None] | None = None) -> int:
    """The torchrun stage of ``ltx ARGS --gpus N`` (:data:`~ltxcli.parallel.launch.STAGE_ENV`; the caller checked
    the visible GPUs and removed ``--gpus N``): ``prepare`` (the job's checks and downloads; it returns the text of
    a ``--batch`` pipe, read once), then torchrun in this process, as :func:`main`, on ``nproc`` workers that run
    ``ltx ARGS``; returns the exit code. A piped batch's text reaches the workers on their stdin, as ``--batch -``.

    A Ctrl-C or SIGTERM the launcher passes on (SIGINT: this process has a session of its own) before torchrun
    handles signals is the launcher's to say, in one line (recorded: :func:`~ltxcli.parallel.launch.record_launcher_signal`);
    one held since this process started (:func:`~ltxcli.parallel.launch.hold_sigint_while_starting`) ends it at
    once, without a word (the launcher says it)."""
    release_held_sigint()
    try:
        batch_text = prepare() if prepare is not None else None
        del os.environ[STAGE_ENV]  # the workers are no stage
        if batch_text is not None:
            path = Path(os.environ[RANK_STATUS_ENV], "batch")
            path.write_text(batch_text, encoding="utf-8")
            args = strip_option(list(args), "--batch", "-")
            _stdin_from(path)
        # the signals as in a process of torchrun's own (ltx --gpus before: python -m ltxcli.parallel.torchrun),
        # until torchrun sets its handlers (a KeyboardInterrupt before: the launcher's, below)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if s is not None and signal.getsignal(s) is not signal.SIG_IGN:  # (nohup's SIGHUP stays ignored)
                signal.signal(s, signal.SIG_DFL)
        sys.stdout.flush()
        sys.argv = ["torchrun", *torchrun_command(args, nproc)[3:]]  # after [python, -m, ltxcli.parallel.torchrun]
        main()
    except KeyboardInterrupt as e:  # (ltxcli.parallel.launch.Terminated carries its code)
        code = getattr(e, "code", EXIT_INTERRUPTED)
        record_launcher_signal(code - 128)
        return code
    except SystemExit as e:  # main's, when a worker failed or a signal stopped torchrun
        return e.code if isinstance(e.code, int) else int(e.code is not None)
    return 0


def _stdin_from(path: Path) -> None:
    """``path`` as this process's stdin (descriptor 0), which torchrun's workers inherit."""
    fd = os.open(path, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)


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
