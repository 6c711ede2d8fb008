"""Starting a command on several processes with ``torchrun``, and the exit code the job then reports.

torchrun exits 1 whatever its workers' codes were, so :func:`launch` asks each worker to leave its own code in a
status folder (:data:`RANK_STATUS_ENV`, written by :func:`record_exit_code`) and returns the code of the first
worker that failed. Nothing here imports torch at module level: :func:`record_exit_code` runs on every error
path of the CLI, including those that never needed torch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

#: Where :func:`launch` asks its torchrun workers to record their exit codes (one file per rank).
RANK_STATUS_ENV = "LTX_RANK_STATUS_DIR"
#: Set by :func:`launch` (``stage=True``) for the process it starts, ``ltx`` itself again: the torchrun stage,
#: which makes the checks that need torch (the visible GPUs, the job's plan) and the downloads, then runs torchrun
#: in-process (:func:`ltxcli.parallel.torchrun.run_stage`), so that torch is imported once before the workers
#: start, not once by the launching process and again by torchrun's.
STAGE_ENV = "LTX_TORCHRUN_STAGE"
#: The exit code of a process stopped by Ctrl-C (128 + SIGINT, the shell's convention; the CLI uses it too).
EXIT_INTERRUPTED = 130


def under_torchrun() -> bool:
    """True when the environment names this process's rank (torchrun, or any ``env://`` launcher)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def in_stage() -> bool:
    """True in the torchrun stage that :func:`launch` started (:data:`STAGE_ENV`), not in its workers."""
    return bool(os.environ.get(STAGE_ENV)) and not under_torchrun()


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread (:func:`terminate_like_ctrl_c`): a KeyboardInterrupt, so that
    what cleans up after Ctrl-C (partial outputs, a long video's kept windows) runs for it too. ``code``: the exit
    code (128 + the signal), ``what``: what happened, in words."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__()
        self.code = 128 + int(signum)
        self.what = "hung up" if signum == getattr(signal, "SIGHUP", None) else "terminated"


def _stop_signals() -> list[signal.Signals]:
    """SIGTERM, and SIGHUP where the platform has it."""
    return [signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])]


#: How long a rank of a launcher (torchrun) gives its main thread to clean up after SIGTERM or SIGHUP before it
#: removes its partial outputs itself and exits (:func:`terminate_like_ctrl_c`): torchrun kills a worker that is
#: still running 30 s after its SIGTERM, which would leave them behind.
STOP_GRACE_S = 20.0


def terminate_like_ctrl_c(grace_s: float | None = None) -> None:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` (unless set to be ignored, as ``nohup`` does for SIGHUP):
    ``kill``, ``timeout`` or a closed terminal left the temporary ``.partial`` output behind, which only Ctrl-C
    removed.

    In a rank of a launcher too: torchrun passes a SIGTERM (SIGHUP) it gets on to its workers as such, and stops
    the others with SIGTERM when one failed. The Python handler runs only when the main thread returns from C
    code, which a collective waiting for a peer that is gone may not do before torchrun's SIGKILL (30 s later):
    so a rank also watches for the signal in a thread of its own (:func:`_watch_stop`), which removes the partial
    outputs (:func:`ltxcli.media.write.remove_partial_outputs`) and exits with the signal's code after
    ``grace_s`` (None: :data:`STOP_GRACE_S`) if the main thread has not ended by then.

    SIGINT keeps Python's KeyboardInterrupt, but neither is raised inside a finalizer (:func:`_raise_stop`)."""
    installed = []
    for signum in _stop_signals():
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _raise_stop)
            installed.append(int(signum))
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler or in_stage():  # Ctrl-C: torchrun passes on
        # the launcher's; so does the launcher to its torchrun stage, even where a background job inherited it ignored
        signal.signal(signal.SIGINT, _raise_stop)
        installed.append(int(signal.SIGINT))
    if installed and under_torchrun():
        _watch_stop(installed, STOP_GRACE_S if grace_s is None else grace_s)
    if under_torchrun():  # (the torchrun stage's is released once its command runs: ltxcli.parallel.torchrun.run_stage)
        release_held_sigint()
    held, _HELD[:] = list(_HELD), []
    if held:  # (hold_stops_while_starting) a signal held meanwhile is delivered in this call: its handler raises
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def release_held_sigint() -> None:
    """Unblock SIGINT in a worker that :mod:`ltxcli.parallel.torchrun` started with it blocked (a no-op where it is
    not blocked). A SIGINT that reached the worker in Python's start-up (``ltx --gpus`` stopped by Ctrl-C or
    SIGTERM, passed on as SIGINT) would have raised KeyboardInterrupt in ``site`` or an import, and Python printed
    ``Fatal Python error: init_import_site`` with a traceback; blocked, it waits for this call. The worker then
    dies of it without a word, as one that had no handler yet did (the launcher says it in one line:
    :func:`launch`); after this call SIGINT stops the worker cleanly (exit 130). Blocked rather than ignored: an
    ignored signal is lost, and the worker would run on until torchrun's SIGKILL 30 s later."""
    if not hasattr(signal, "pthread_sigmask") or signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, []):
        return
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])  # a held SIGINT's handler runs in this call
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)  # SIGINT is unblocked: delivered before kill() returns
        os._exit(EXIT_INTERRUPTED)  # not reached


def hold_sigint_while_starting() -> None:
    """In a worker of torchrun (a user's own ``torchrun -m ltxcli``, whose workers are not started with SIGINT
    blocked as ``ltx --gpus``'s are: :mod:`ltxcli.parallel.torchrun`), block SIGINT for the rest of the start-up:
    ``python -m ltxcli`` calls this before it imports the command line (click, torch: seconds), and
    :func:`terminate_like_ctrl_c` releases it (:func:`release_held_sigint`), so that a SIGINT torchrun passes on
    meanwhile ends the worker without a traceback from inside an import. A SIGINT in Python's own start-up
    (``site``), before any code of ltxcli runs, still prints one: nothing of ltxcli can hold it there. So does the
    torchrun stage of ``ltx --gpus`` (:data:`STAGE_ENV`), which the launcher passes a Ctrl-C on to: until its
    command runs (:func:`ltxcli.parallel.torchrun.run_stage`), past the command line's set-up."""
    if (under_torchrun() or in_stage()) and hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])


#: The signals :func:`hold_stops_while_starting` blocked, until :func:`terminate_like_ctrl_c` releases them.
_HELD: list[int] = []


def hold_stops_while_starting() -> None:
    """``ltx`` (``python -m ltxcli``, the console script) before it imports its command line (typer, click, the
    command modules: half a second or more): block SIGINT, SIGTERM and SIGHUP until :func:`terminate_like_ctrl_c`
    has made them interrupts and releases them, so that one that comes meanwhile ends the process as later ones
    do, in one line and its exit code (:func:`ltxcli.errors.as_the_command_line`), not with a KeyboardInterrupt
    traceback from inside an import or a silent death by SIGTERM. Only those :func:`terminate_like_ctrl_c` will
    handle: one left ignored (``nohup``, a background job's SIGINT) stays as it is. A worker of torchrun and the
    torchrun stage hold SIGINT only, their own way (:func:`hold_sigint_while_starting`)."""
    if under_torchrun() or in_stage() or not hasattr(signal, "pthread_sigmask"):
        hold_sigint_while_starting()
        return
    held = [int(s) for s in _stop_signals() if signal.getsignal(s) is signal.SIG_DFL]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        held.append(int(signal.SIGINT))
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    _HELD[:] = held


def ignore_further_stops() -> None:
    """Ignore SIGINT, SIGTERM and SIGHUP where :func:`terminate_like_ctrl_c` made them interrupts: for a process
    that is ending because of one (:func:`ltxcli.errors.interrupts_in_one_line`). Elsewhere (a test calling the
    command line in-process: its handlers are not ours) nothing changes."""
    for signum in (signal.SIGINT, *_stop_signals()):
        with contextlib.suppress(ValueError):  # not the main thread: then none was ours
            if signal.getsignal(signum) is _raise_stop:
                signal.signal(signum, signal.SIG_IGN)


#: How long a signal that found the main thread in a finalizer waits before it is sent again (:func:`_raise_stop`).
_FINALIZER_RETRY_S = 0.05


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    """The handler of SIGINT (KeyboardInterrupt) and SIGTERM, SIGHUP (:class:`Terminated`). Where the main thread
    runs a ``__del__`` (an object collected mid-run: regex's, a tokenizer's), Python prints an exception raised
    there as "Exception ignored in ..." with its traceback and drops it: the process ran on (a rank of ``ltx
    --gpus`` then failed as a peer of the others). The signal is sent again to this process once
    :data:`_FINALIZER_RETRY_S` has passed instead, when the finalizer is most likely done."""
    while frame is not None and frame.f_code.co_name != "__del__":
        frame = frame.f_back
    if frame is not None:
        import threading

        again = threading.Timer(_FINALIZER_RETRY_S, os.kill, (os.getpid(), signum))
        again.daemon = True  # an exit meanwhile does not wait for it
        again.start()
        return
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)


_WATCH: list[Any] = []  # the wakeup socket pair of _watch_stop


def _watch_stop(signals: Sequence[int], grace_s: float) -> None:
    """After one of ``signals``, give the main thread ``grace_s`` to end, then remove this process's partial
    outputs, record the signal's exit code and exit (see :func:`terminate_like_ctrl_c`). The C-level handler
    writes each signal's number to the wakeup descriptor, whichever thread it interrupted."""
    import socket
    import threading

    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main thread: the handlers above were not installed either
        return

    def watch() -> None:
        got = b""
        while not (got and got[0] in signals):
            got = reader.recv(1)
        time.sleep(grace_s)
        write = sys.modules.get("ltxcli.media.write")  # not imported: nothing was written
        if write is not None:
            write.remove_partial_outputs()
        signum = got[0]
        what = "interrupted" if signum == signal.SIGINT else Terminated(signum).what
        world, host = os.environ.get("WORLD_SIZE", "1"), socket.gethostname()
        label = f"[rank {os.environ.get('RANK')}/{world} {host}] " if world != "1" else ""
        with contextlib.suppress(OSError):
            os.write(2, f"{label}error: {what}; partial outputs were removed (the main thread did not stop within "
                        f"{grace_s:g} s)\n".encode())
        record_exit_code(128 + signum)
        os._exit(128 + signum)

    threading.Thread(target=watch, name="ltx-stop-watch", daemon=True).start()
    _WATCH[:] = [reader, writer]  # open for the life of the process


def torchrun_command(
    args: Sequence[str], nproc: int, *, nnodes: int = 1, node_rank: int | None = None,
    rdzv_endpoint: str | None = None, module: str = "ltxcli",
) -> list[str]:
    """The torchrun command (``python -m ltxcli.parallel.torchrun``: ``torch.distributed.run`` without its traceback)
    that runs ``python -m ltxcli ARGS`` on ``nproc`` processes.

    One node: ``--standalone`` (a private rendezvous on localhost). Several nodes: run the same command on
    every node with ``nnodes`` and one shared ``rdzv_endpoint`` (``host:port`` of any node), c10d rendezvous.
    """
    if nproc < 1:
        raise ValueError(f"--gpus {nproc} must be at least 1")
    # torchrun itself, ending without its traceback (ltxcli.parallel.torchrun)
    cmd = [sys.executable, "-m", "ltxcli.parallel.torchrun", f"--nproc-per-node={nproc}"]
    if nnodes == 1 and rdzv_endpoint is None:
        cmd.append("--standalone")
    else:
        if rdzv_endpoint is None:
            raise ValueError("several nodes need a rendezvous endpoint (host:port reachable from every node)")
        cmd += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}"]
        if node_rank is not None:
            cmd.append(f"--node-rank={node_rank}")
    return [*cmd, "-m", module, *args]


def check_launch(nproc: int, device: str | None = None, *, count_gpus: bool = True) -> None:
    """Refuse (ValueError, one line) a launch of ``nproc`` local processes that cannot work: fewer than one, from
    inside a torchrun worker (the process count is torchrun's), or more than the visible GPUs (none on a machine
    without CUDA) unless ``device`` is explicitly ``"cpu"``: then the processes run on the CPU with gloo, a
    testing aid for the multi-process code paths. ``count_gpus=False``: not the GPUs, which only torch counts (the
    torchrun stage does: :data:`STAGE_ENV`)."""
    if nproc < 1:
        raise ValueError(f"--gpus {nproc} must be at least 1")
    if under_torchrun():
        raise ValueError("--gpus cannot be used inside torchrun (the process count is torchrun's): drop --gpus")
    if nproc == 1 or device == "cpu" or not count_gpus:
        return  # this process runs it, or CPU processes were asked for: no need to ask torch about GPUs
    import torch  # only here: the checks above must stay cheap

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if nproc > visible:
        raise ValueError(f"--gpus {nproc} but {visible or 'no'} GPU(s) are visible (add --device cpu to run "
                         f"{nproc} CPU processes instead, a testing aid)")


def launch(args: Sequence[str], nproc: int, *, device: str | None = None, quiet: bool = False,
           batch_text: str | None = None, stage: bool = False, **kwargs: Any) -> int:
    """Run ``ltx ARGS`` under torchrun on ``nproc`` local processes and wait; returns the job's exit code.

    That is the code of the first worker that failed other than by an interrupt (the others usually fail
    because it left), :data:`EXIT_INTERRUPTED` after Ctrl-C, else torchrun's own code. The caller removes
    its own ``--gpus N`` from ``args`` first; ``kwargs`` go to :func:`torchrun_command`. Checks
    :func:`check_launch` first (``device``: the command's ``--device``). ``quiet``: torchrun prints no banner
    (it warns that it sets ``OMP_NUM_THREADS`` to 1 when that is unset: it is set to 1 here instead) and no log
    lines (``LOGLEVEL``, which its loggers read).

    torchrun runs in a session of its own, so that each signal reaches it once, from here: Ctrl-C (SIGINT),
    SIGTERM and SIGHUP to this process are passed on to torchrun as SIGINT, which it passes on to its workers,
    and they turn it into a clean exit (partial outputs removed, claims released, exit 130), as they do a SIGTERM
    sent to torchrun itself (exit 143; :func:`terminate_like_ctrl_c`). A worker still in Python's start-up holds
    the SIGINT until its code runs (:func:`release_held_sigint`), and dies of it without a traceback. Once torchrun is done, a SIGTERM or SIGHUP
    is delivered to this process again, under its own handler (the CLI's: exit 143 or 129).

    ``batch_text``: the text of a ``--batch`` pipe (``<(...)``, a FIFO), read once by the caller: a pipe cannot be
    read again, and a process substitution's descriptor does not reach the workers. They get ``--batch -`` and
    the text on their stdin (rank 0 reads it for all).

    ``stage``: start ``ltx ARGS`` (``--gpus N`` kept) rather than torchrun: the torchrun stage (:data:`STAGE_ENV`),
    which checks what needs torch, reads a ``--batch`` pipe (its descriptors are passed on) and starts torchrun
    itself; this process imports no torch. A signal the stage died of is then said here, as one passed on.
    """
    check_launch(nproc, device, count_gpus=not stage)
    env = dict(os.environ)
    if stage:
        env[STAGE_ENV] = "1"
    if quiet:
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("LOGLEVEL", "CRITICAL")  # torchrun's log lines (each worker says what failed, in one line)
    with tempfile.TemporaryDirectory(prefix="ltx-ranks-") as status:
        env[RANK_STATUS_ENV] = status
        stdin = None
        if batch_text is not None:
            Path(status, "batch").write_text(batch_text, encoding="utf-8")
            args, stdin = strip_option(list(args), "--batch", "-"), open(Path(status, "batch"), "rb")  # noqa: SIM115
        with stdin or contextlib.nullcontext():
            proc = subprocess.Popen([sys.executable, "-m", "ltxcli", *args] if stage else
                                    torchrun_command(args, nproc, **kwargs), env=env, start_new_session=True,
                                    stdin=stdin, close_fds=not stage)
        received: list[int] = []

        def pass_on(signum: int, frame: object) -> None:
            received.append(signum)
            proc.send_signal(signal.SIGINT)

        try:
            previous = {s: signal.signal(s, pass_on) for s in (signal.SIGINT, *_stop_signals())
                        if s != getattr(signal, "SIGHUP", None) or signal.getsignal(s) is not signal.SIG_IGN}
            # nohup's SIGHUP stays ignored; SIGINT is passed on even where a background job inherited it ignored
        except ValueError:  # not the main thread
            previous = {}
        try:
            code = proc.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        recorded = _recorded(Path(status))
        stopped_by = _launcher_signal(Path(status))
        if stage and stopped_by is None and code < 0 and not recorded:  # the stage, still starting: it said nothing
            stopped_by = -code
    for s in _stop_signals():
        if s in received:  # this process's own handler now (the CLI's: clean up, exit 143 or 129)
            os.kill(os.getpid(), s)
    if stopped_by is not None and not any(c for _, c, _, _ in recorded):
        # torchrun was signalled (not through this process) and no worker said so: each was still starting (and
        # died of it, before its handler) or had finished; said here, as Ctrl-C or SIGTERM to this process would be
        raise KeyboardInterrupt if stopped_by == signal.SIGINT else Terminated(stopped_by)
    first = min(recorded, default=None)
    if stopped_by is None and first is not None and first[1] == EXIT_INTERRUPTED and not first[3]:
        raise KeyboardInterrupt  # the first to fail, a worker still starting, died of a SIGINT of its own silently
    code = job_exit_code(code, [(when, c) for when, c, _, _ in recorded])
    killed = min(((when, rank) for when, c, rank, _ in recorded if c == code), default=None)
    if killed is not None and code - 128 in _DEATHS:  # said by no worker: it could not
        raise (WorkerKilledError if code - 128 == _DEATHS[0] else WorkerDiedError)(killed[1], code - 128)
    if killed is not None and code - 128 in _stop_signals() and not any(own for _, c, _, own in recorded if c == code):
        raise Terminated(code - 128)  # a worker still starting, before its handler, died of SIGTERM (SIGHUP) silently
    return code


def job_exit_code(torchrun_code: int, recorded: Sequence[tuple[float, int]]) -> int:
    """The job's code from torchrun's and the workers' recorded ``(time, code)`` pairs (see :func:`launch`)."""
    if torchrun_code == 0:
        return 0
    real = [c for _, c in sorted(recorded) if c not in (0, EXIT_INTERRUPTED)]
    if real:
        return real[0]  # the first failure is the cause, later ones follow from it
    if any(c == EXIT_INTERRUPTED for _, c in recorded) or torchrun_code < 0:
        return EXIT_INTERRUPTED
    return torchrun_code


def _recorded_codes(folder: Path) -> list[tuple[float, int]]:
    """``(time, code)`` of every worker that recorded its exit in ``folder``."""
    return [(when, code) for when, code, _, _ in _recorded(folder)]


def _recorded(folder: Path) -> list[tuple[float, int, int, bool]]:
    """``(time, code, rank, own)`` of every worker that recorded its exit in ``folder`` (``own``: the worker itself,
    which then said why; else torchrun for it, :func:`record_signal_deaths`)."""
    recorded: list[tuple[float, int, int, bool]] = []
    for f in folder.glob("rank-*"):
        try:
            code_text, when, *by = f.read_text().split()
            recorded.append((float(when), int(code_text), int(f.name.removeprefix("rank-")), not by))
        except (OSError, ValueError):
            continue
    return recorded


#: Signals that end a worker without a word of its own (SIGKILL first: on Linux most likely the kernel's
#: out-of-memory killer; the others: a crash in native code). torchrun records them for it
#: (:func:`record_signal_deaths`), and :func:`launch` raises :class:`WorkerKilledError` or :class:`WorkerDiedError`.
_DEATHS = tuple(int(getattr(signal, name)) for name in ("SIGKILL", "SIGSEGV", "SIGBUS", "SIGABRT", "SIGILL", "SIGFPE")
                if hasattr(signal, name))


class WorkerDiedError(RuntimeError):
    """A worker of :func:`launch` died from a signal that let it say nothing (a crash in native code): exit 1."""

    def __init__(self, rank: int, signum: int) -> None:
        self.rank, self.signum = rank, signum
        super().__init__(self._says(rank, signal.Signals(signum).name))

    def _says(self, rank: int, name: str) -> str:
        return f"rank {rank} died from {name} (a crash in native code: torch, a kernel or a driver)"


class WorkerKilledError(WorkerDiedError):
    """A worker of :func:`launch` was killed by SIGKILL: on Linux most likely by the kernel's out-of-memory killer
    (host memory: every process holds the whole model), so it is an out-of-memory failure
    (:func:`ltxcli.errors.failure_kind`: ``"oom"``, exit 5), not torchrun's exit 1."""

    def _says(self, rank: int, name: str) -> str:
        return (f"rank {rank} was killed by {name}, most likely by the system's out-of-memory killer: every process "
                "holds the whole model in host memory")


def record_signal_deaths(deaths: dict[int, tuple[int, float]]) -> None:
    """For torchrun (:mod:`ltxcli.parallel.torchrun`): ``{rank: (signal, time)}`` of workers a signal ended, each
    recorded as code 128 + signal at that time (as :func:`record_exit_code` would), unless the worker recorded its
    own; a no-op outside :func:`launch`."""
    folder = os.environ.get(RANK_STATUS_ENV)
    if not folder:
        return
    for rank, (signum, when) in deaths.items():
        with contextlib.suppress(OSError), open(Path(folder, f"rank-{rank}"), "x") as fh:  # "x": not the worker's own
            fh.write(f"{128 + signum} {when} signal")  # "signal": recorded for it, the worker said nothing


#: The file of :func:`launch`'s status folder where torchrun records a signal that stopped it.
_LAUNCHER_SIGNAL = "torchrun-signal"


def record_launcher_signal(signum: int) -> None:
    """For torchrun (:mod:`ltxcli.parallel.torchrun`): the signal that stopped torchrun itself (SIGTERM from a
    scheduler or ``kill``; it stops its workers with the same signal), for :func:`launch`; a no-op elsewhere."""
    folder = os.environ.get(RANK_STATUS_ENV)
    if folder:
        with contextlib.suppress(OSError):
            Path(folder, _LAUNCHER_SIGNAL).write_text(str(signum))


def _launcher_signal(folder: Path) -> int | None:
    """The signal :func:`record_launcher_signal` recorded in ``folder``, if any."""
    try:
        return int(Path(folder, _LAUNCHER_SIGNAL).read_text())
    except (OSError, ValueError):
        return None


def record_exit_code(code: int, *, follows: bool = False) -> None:
    """A worker started by :func:`launch` leaves its exit code for the launching process; a no-op elsewhere.
    ``follows``: this worker stopped because another one left (a collective broke): it leaves nothing, so that
    the job's code is the one that failed first even when this worker got to record its own before it."""
    folder, rank = os.environ.get(RANK_STATUS_ENV), os.environ.get("RANK")
    if not folder or rank is None or not rank.isdigit() or follows:
        return
    with contextlib.suppress(OSError):
        Path(folder, f"rank-{rank}").write_text(f"{code} {time.time()}")


#: The file of :func:`launch`'s status folder that its workers lock to write a stdout line each (:func:`write_stdout`).
_STDOUT_LOCK = "stdout.lock"


def write_stdout(text: str) -> None:
    """``text`` (a line, newline included) to stdout, whole. The workers of :func:`launch` share one stdout, and
    a pipe keeps a write whole only up to PIPE_BUF (4096 bytes): a longer ``--json`` line (a long prompt, its
    rewrite, LoRAs) could interleave with another rank's. So a worker writes its line in one locked turn (an
    exclusive ``flock`` on a file of the status folder, each process opening it itself: a lock on the shared
    stdout would be held by all of them at once). The workers of a user's own torchrun have no status folder: each
    locks stdout itself, opened anew (Linux: ``/proc/self/fd``, its own open file on the same pipe or file).
    Elsewhere (one process; Windows: no ``fcntl``; a stdout with no descriptor, a test's capture; a socket) it is
    an ordinary write."""
    lock = None
    try:
        import fcntl

        fd = sys.stdout.fileno()
        if os.environ.get(RANK_STATUS_ENV):
            lock = os.open(Path(os.environ[RANK_STATUS_ENV], _STDOUT_LOCK), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        elif under_torchrun():  # O_NONBLOCK: a pipe whose reader is gone fails (ENXIO) rather than waits
            lock = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
    except (ImportError, AttributeError, OSError, ValueError):
        pass
    if lock is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    data = text.encode(sys.stdout.encoding or "utf-8", sys.stdout.errors or "strict")
    sys.stdout.flush()  # anything written before stays first
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        view = memoryview(data)
        while view:  # a blocking pipe takes it all in one write unless a signal interrupts it
            view = view[os.write(fd, view):]
    finally:
        os.close(lock)  # releases the lock


def strip_option(argv: list[str], name: str, value: str | None = None) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE`` (before a ``--`` that ends the options): the launching
    command's ``--gpus N`` removed from the arguments its workers get; with ``value``: ``name value`` in its place
    (a piped ``--batch`` becomes ``--batch -``)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out += argv[i:]
            break
        if arg == name or arg.startswith(name + "="):
            out += [name, value] if value is not None else []
            i += 1 if arg != name else 2
            continue
        out.append(arg)
        i += 1
    return out


__all__ = [
    "EXIT_INTERRUPTED", "RANK_STATUS_ENV", "STAGE_ENV", "STOP_GRACE_S", "Terminated", "WorkerDiedError", "WorkerKilledError",
    "check_launch", "hold_sigint_while_starting", "hold_stops_while_starting", "ignore_further_stops", "in_stage", "job_exit_code", "launch", "record_exit_code",
    "record_launcher_signal", "record_signal_deaths", "release_held_sigint", "strip_option", "terminate_like_ctrl_c",
    "torchrun_command", "under_torchrun", "write_stdout",
]
