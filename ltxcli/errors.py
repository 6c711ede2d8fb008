"""What kind of failure a library exception is, for callers that map failures to exit codes (the CLI) or retries.

The classes are looked up in the modules that define them only if those modules were imported: an exception
of a class whose module was never imported cannot have been raised, so asking imports nothing (no torch), and a
class that moves between modules fails :func:`failure_kind`'s own test instead of silently matching nothing.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, Literal, NoReturn

FailureKind = Literal["input", "numerical", "kernel", "weights", "oom", "peer"]

#: "module:class" -> kind. input: media or checkpoint unreadable; kernel: an explicit kernel that cannot run
#: here; weights: the exception carries its own ``exit_code`` (:class:`ltxcli.weights.WeightsError`).
LIBRARY_ERRORS: dict[str, FailureKind] = {
    "ltxcli.weights.errors:WeightsError": "weights",
    "ltxcli.media.errors:MediaError": "input",
    "ltxcli.safetensors_io:CheckpointError": "input",
    "ltxcli.models.configs:ConfigError": "input",
    "ltxcli.frames:NumericalError": "numerical",
    "ltxcli.models.attention_kernels:KernelUnavailableError": "kernel",
    "ltxcli.parallel.launch:WorkerKilledError": "oom",  # SIGKILL: most likely the out-of-memory killer
}


#: What a collective (gloo, NCCL) raises in a process of a multi-process job when another one left: closed its
#: connections by failing, being stopped or killed. That process's own error says what happened.
PEER_GONE = ("connection closed by peer", "connection reset by peer", "remote process exited")
#: What such a process says instead (its own words name neither the process nor the cause).
PEER_STOPPED = "stopped: another process of this job failed or was stopped (its error line says why)"


def failure_kind(exc: BaseException) -> FailureKind | None:
    """The kind of a library exception (:data:`LIBRARY_ERRORS`), "oom" for running out of host or GPU memory,
    "peer" for a collective broken by another process of the job (:data:`PEER_GONE`), None for anything else."""
    for key, kind in LIBRARY_ERRORS.items():
        module, _, name = key.partition(":")
        if module in sys.modules and isinstance(exc, getattr(sys.modules[module], name)):
            return kind
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch's, without importing it
        return "oom"
    text = str(exc).lower()
    if isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text):
        return "oom"
    if isinstance(exc, RuntimeError) and any(gone in text for gone in PEER_GONE):  # DistBackendError included
        return "peer"
    return None


#: What to try when memory ran out, by command: only options that command takes (``ltx vae decode`` has no
#: --offload, --vae-tiling or size options, and an advice it refuses is no advice).
_GENERATING = "--offload model, --vae-tiling on, a smaller --height/--width, fewer --num-frames, or --dtype bfloat16 on a GPU"
# ltx extend's length is its new frames (--frames; it refuses any other --num-frames)
_OOM_ADVICE = {"generate": _GENERATING, "i2v": _GENERATING, "v2v": _GENERATING,
               "extend": _GENERATING.replace("fewer --num-frames", "fewer --frames"),
               "bench": "a smaller --height/--width, fewer --num-frames, or --dtype bfloat16 on a GPU",
               "vae encode": "fewer --max-frames or --dtype bfloat16 on a GPU",
               "vae roundtrip": "fewer --max-frames or --dtype bfloat16 on a GPU",
               "vae decode": "--dtype bfloat16 on a GPU, or a file of fewer or smaller latent frames"}


def oom_advice(args: list[str], exc: BaseException | None = None) -> str:
    """``try ...`` for a command line (without the program name) that ran out of memory (``exc``: with the size of
    the --batch line it ran out on, :func:`note_failed_item`: that line's keys, not the command's options)."""
    words = [a for a in args if not a.startswith("-")][:2]
    advice = _OOM_ADVICE.get(" ".join(words)) or _OOM_ADVICE.get(words[0] if words else "")
    line = getattr(exc, "batch_line_size", None)
    if line is not None and advice in (_GENERATING, _OOM_ADVICE["extend"]):  # its keys say its size and length
        return f"try --offload model, --vae-tiling on, a smaller {line}, or --dtype bfloat16 on a GPU"
    if advice and _in_windows(args):  # one window's memory: a shorter video saves little, and drops later prompts
        advice = advice.replace("fewer --num-frames", "a smaller --window").replace("fewer --frames", "a smaller --window")
    if advice and any(a == "--duration" or a.startswith("--duration=") for a in args):  # not with --num-frames
        advice = advice.replace("fewer --num-frames", "a shorter --duration")
    return f"try {advice}" if advice else "try a smaller input, or another device with more memory (--device)"


def _in_windows(args: list[str]) -> bool:
    """Whether a command line asks for windows (:func:`ltxcli.long_video.windowed`): a window, overlap or prompt
    schedule option, or a ``"a | b"`` prompt (an argument that is no option with a ``|`` in it)."""
    options = ("--window", "--overlap", "--prompt-schedule")
    return any(a in options or a.startswith(tuple(f"{o}=" for o in options)) or (not a.startswith("-") and "|" in a)
               for a in args)


def note_failed_item(exc: BaseException, item: Any) -> None:
    """Mark ``exc``, out of memory while generating batch ``item`` (a :class:`ltxcli.batch.BatchItem`), with the size
    of its --batch line when the line sets its own (``own_size``: the command's options are only defaults there,
    which its keys override), for :func:`oom_advice`: ``"height"/"width" or fewer "num_frames" in item 1's --batch
    line`` (:meth:`~ltxcli.batch.BatchItem.size_option`). Anything else is left as it is."""
    if getattr(item, "own_size", False) and failure_kind(exc) == "oom":
        exc.batch_line_size = f"{item.size_option()} in item {item.index}'s --batch line"  # type: ignore[attr-defined]


def keeps_resume_state(exc: BaseException, state: os.PathLike[str]) -> None:
    """Mark an interrupt (Ctrl-C, SIGTERM, SIGHUP) of a ``--resume`` run: ``state`` (a long video's finished
    windows) stays for the next run, which :func:`interrupt_message` says instead of "outputs were removed"."""
    exc.resume_state = os.fspath(state)  # type: ignore[attr-defined]


def interrupt_message(exc: BaseException) -> str:
    """The line for an interrupt: its ``what`` (:class:`ltxcli.parallel.launch.Terminated`: "terminated", "hung
    up"), and what it removed and kept (:func:`keeps_resume_state`)."""
    what, state = getattr(exc, "what", "interrupted"), getattr(exc, "resume_state", None)
    if state is None:
        return f"{what}; partial outputs were removed"
    return (f"{what}; the partial video was removed, its finished windows are kept in {state}: the same command "
            "with --resume continues from them")


def exit_closed_stdout(code: int) -> NoReturn:
    """Stop at once with ``code``, without a word, because stdout's reader went away (``| head``); stdout is
    pointed at /dev/null first, so Python's final flush of what is still buffered cannot fail again. A worker of
    ``ltx --gpus`` leaves the code for its launcher, which reports it (else torchrun's 1)."""
    from .parallel.launch import record_exit_code

    record_exit_code(code)
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)


@contextlib.contextmanager
def as_the_command_line() -> Iterator[None]:
    """Run the block as the ``ltx`` process: closed standard streams reopened (:func:`reopen_closed_streams`),
    SIGTERM and SIGHUP turned into interrupts (:func:`ltxcli.parallel.launch.terminate_like_ctrl_c`), and an
    interrupt the block does not handle itself ends the process as one during a command does: the README's one
    line and exit code (130; SIGTERM 143, SIGHUP 129). Outside a command (typer building the command line, click
    parsing it: :func:`interrupts_in_one_line`) Python printed a traceback, and typer made it a silent exit 130."""
    from .parallel.launch import terminate_like_ctrl_c

    with interrupts_in_one_line():
        reopen_closed_streams()
        terminate_like_ctrl_c()
        yield


@contextlib.contextmanager
def interrupts_in_one_line() -> Iterator[None]:
    """An interrupt (KeyboardInterrupt; :class:`ltxcli.parallel.launch.Terminated`) in the block: its ``error:``
    line on stderr, recorded for a ``--gpus`` launcher, and ``sys.exit`` with its code (see
    :func:`as_the_command_line`). Also a decorator (each call its own block)."""
    try:
        yield
    except KeyboardInterrupt as exc:
        from .parallel.launch import EXIT_INTERRUPTED, ignore_further_stops, record_exit_code

        ignore_further_stops()  # the process is ending: a second signal would cut the line with a traceback
        code = int(getattr(exc, "code", EXIT_INTERRUPTED))
        with contextlib.suppress(OSError, ValueError):
            print(f"error: {interrupt_message(exc)}", file=sys.stderr, flush=True)
        record_exit_code(code)
        sys.exit(code)


def reopen_closed_streams() -> None:
    """Point a standard stream that the caller closed (``>&-``, ``2>&-``, ``<&-``) at /dev/null, as if it had been
    redirected there. Python leaves ``sys.stdout`` None for a closed descriptor 1 (the first data line then failed
    after the work was done), the next file opened would take the free descriptor (anything written to "stdout"
    would land in it), and a shell wrapper run with ``2>&-`` leaves its own script open read-only as descriptor 2
    (every message failed with EBADF). A stream is usable when open for its direction."""
    if os.name != "posix":
        return
    import fcntl

    for fd, name, modes in ((0, "stdin", (os.O_RDONLY, os.O_RDWR)), (1, "stdout", (os.O_WRONLY, os.O_RDWR)),
                            (2, "stderr", (os.O_WRONLY, os.O_RDWR))):
        try:
            usable = (fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE) in modes
        except OSError:
            usable = False
        if not usable:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False,  # noqa: SIM115 (for the process)
                                    errors="backslashreplace" if fd == 2 else "strict"))


__all__ = ["LIBRARY_ERRORS", "PEER_GONE", "PEER_STOPPED", "FailureKind", "as_the_command_line", "exit_closed_stdout",
           "failure_kind", "interrupt_message", "interrupts_in_one_line", "keeps_resume_state", "note_failed_item",
           "oom_advice", "reopen_closed_streams"]
