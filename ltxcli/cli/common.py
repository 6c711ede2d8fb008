"""Shared CLI plumbing: exit codes, the stderr console, one-line errors, JSON output, progress.

Rules every command follows: data goes to stdout (with ``--json``: JSON Lines, one object per output), messages
and progress bars go to stderr; progress is shown only when stderr is a terminal and ``--quiet`` is not given;
anything a user can cause ends in ONE line on stderr and an exit code from :data:`EXIT_CODES`, never a traceback
(``LTX_DEBUG=1`` adds the traceback, not another exit code); a closed stdout ends quietly (:data:`EXIT_PIPE`).
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
import typer
from typer.core import TyperGroup

from ltxcli.errors import PEER_STOPPED, exit_closed_stdout, failure_kind, interrupt_message, oom_advice
from ltxcli.errors import interrupts_in_one_line as _in_one_line

# the commands' byte formatting and JSON encoding are the library's (ltx doctor's checks use them too)
from ltxcli.formatting import cli_wording, help_examples, one_line, to_json
from ltxcli.formatting import human_bytes as human_bytes
from ltxcli.parallel.launch import EXIT_INTERRUPTED, record_exit_code, write_stdout

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_WEIGHTS = 3
EXIT_CHECKSUM = 4
EXIT_OOM = 5
EXIT_INPUT = 6
EXIT_PIPE = 141  # 128 + SIGPIPE: what the shell reports for a Unix tool whose reader went away
EXIT_TERMINATED, EXIT_HUNG_UP = 143, 129  # 128 + SIGTERM (kill, timeout, a scheduler), 128 + SIGHUP (terminal closed)
# EXIT_INTERRUPTED (130, Ctrl-C) comes from ltxcli.parallel.launch: a --gpus launch reports it for its workers

#: Exit code -> meaning; printed in ``ltx --help`` and the README.
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_ERROR: "other error (output not writable, NaN/Inf result, internal error)",
    EXIT_USAGE: "usage: bad option or size, unknown model or path (a model, LoRA, text encoder, --batch or --prompt-schedule file that does not exist), output exists",
    EXIT_WEIGHTS: "weights missing and not downloadable (offline, network, gated)",
    EXIT_CHECKSUM: "checksum mismatch of downloaded weights",
    EXIT_OOM: "out of memory or would not fit (try --offload model, --vae-tiling on, or a smaller size or fewer frames); a --gpus process killed by SIGKILL",
    EXIT_INPUT: "input media or latents file missing or unreadable; checkpoint, LoRA, --batch or --prompt-schedule file unreadable (corrupt, not UTF-8)",
    EXIT_HUNG_UP: "hung up (SIGHUP: the terminal or SSH session closed); partial outputs are removed",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); partial outputs are removed (a resumable long video keeps its finished windows)",
    EXIT_PIPE: "stdout (or stderr) closed early (e.g. `| head -1`): the rest of the output is dropped, no error line",
    EXIT_TERMINATED: "terminated (SIGTERM: kill, timeout, a scheduler); partial outputs are removed",
}


def exit_codes_epilog() -> str:
    """The exit-code table for ``--help`` (``\\b`` keeps click/rich from re-wrapping it)."""
    rows = "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES.items())
    return f"\b\nExit codes:\n{rows}"


def help_epilog(command: str) -> str:
    """The exit codes, then the examples of ``ltx COMMAND`` (:func:`ltxcli.formatting.help_examples`)."""
    rows = "".join(f"\n  # {what}\n  {line}" for what, line in help_examples(command))
    return exit_codes_epilog() + (f"\n\n\b\nExamples:{rows}" if rows else "")


DEBUG_ENV = "LTX_DEBUG"

# This process's place in a multi-process run: the label that starts its error lines, its rank (set by the
# command once it has joined the process group), where its Python warnings go (Output.take_warnings).
_RANK: dict[str, Any] = {"label": "", "rank": None, "warn": None}
# The arguments of this invocation (after the program name), as the root group received them.
_ARGS: list[str] = []


def set_rank(label: str, rank: int | None) -> None:
    """Mark this process as one rank of a multi-process run (``label`` prefixes its error lines)."""
    _RANK["label"], _RANK["rank"] = label, rank


def rank_label() -> str:
    return str(_RANK["label"])


def invocation_args() -> list[str]:
    """The command line of this invocation without the program name (``generate "a cat" --gpus 2 ...``)."""
    return list(_ARGS)


class CliError(Exception):
    """An error with a one-line message and an exit code; raised anywhere below a command."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def usage_error(message: str) -> NoReturn:
    raise CliError(message, EXIT_USAGE)


# ------------------------------------------------------------------------------------------------ output


class Output:
    """Where a command writes: ``data``/``json`` to stdout, ``info``/``warn`` to stderr.

    For the ranks of a multi-process run: ``stdout=False`` drops the data lines (another rank prints them),
    ``progress=False`` shows no progress bars, ``prefix`` starts every message (``[rank 1/2 host]``); ``plain``
    (``--progress plain``): stage lines and heartbeats instead of bars, on a terminal or not."""

    plain = False

    def __init__(self, *, json_mode: bool = False, quiet: bool = False, stdout: bool = True, progress: bool = True,
                 prefix: str = "") -> None:
        from rich.console import Console

        self.json_mode = json_mode
        self.quiet = quiet
        self.stdout = stdout
        self.progress = progress
        self.prefix = f"{prefix} " if prefix else ""
        if quiet:  # libraries' own notices too (transformers: an optional package it lacks); ltx's warnings stay
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            if "transformers" in sys.modules:
                sys.modules["transformers"].logging.set_verbosity_error()
        # soft_wrap: a long message stays one line (rich would otherwise wrap it at the terminal width).
        self.console = Console(stderr=True, soft_wrap=True, highlight=False)

    @property
    def progress_enabled(self) -> bool:
        return self.progress and not self.quiet and _stderr_isatty()

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(self.prefix + message, markup=False)

    def warn(self, message: str) -> None:
        if self.stdout:  # a silent rank leaves warnings to the rank that speaks
            self.console.print(f"{self.prefix}warning: {one_line(message)}", markup=False, style="yellow")

    def take_warnings(self) -> None:  # the command's Python warnings: labelled, or dropped by a silent rank
        _RANK["warn"] = self.warn

    def data(self, line: str) -> None:
        if not self.stdout:
            return
        write_stdout(line + "\n")  # whole, whatever its length, among the lines of other ranks

    def json(self, obj: Any) -> None:
        self.data(to_json(obj))

    @contextmanager
    def status(self, message: str) -> Iterator[None]:
        """A transient spinner on a terminal, nothing otherwise."""
        if self.progress_enabled and not self.plain:
            with self.console.status(message):
                yield
        else:
            if self.plain and self.progress:
                self.info(message)
            yield


def _stderr_isatty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


# ------------------------------------------------------------------------------------------------ errors


class OneLineErrorsGroup(TyperGroup):
    """The root command group: click's usage errors (a bad option value, an unknown option or command) become
    one ``error: ...`` line on stderr and exit 2, like every other error, instead of a usage block and a box."""
    make_context = _in_one_line()(TyperGroup.make_context)  # parsing, then (invoke) a command's own parsing: typer
    invoke = _in_one_line()(TyperGroup.invoke)  # made an interrupt there a silent exit 130 (SIGTERM's too), no line

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        _ARGS[:] = list(args) if args is not None else sys.argv[1:]
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        # rich (help, messages, progress) exits 1 on a closed stdout or stderr: quietly, as a closed stdout does
        from rich.console import Console

        Console.on_broken_pipe = lambda self: exit_closed_stdout(EXIT_PIPE)  # type: ignore[method-assign]
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except OSError as e:  # writing --help or --version (a command handles its own): a closed pipe, a full disk
            if not isinstance(e, BrokenPipeError):
                click.echo(f"error: cannot write {e.filename or 'to stdout'}: {e.strerror or one_line(str(e))}", err=True)
            exit_closed_stdout(EXIT_PIPE if isinstance(e, BrokenPipeError) else EXIT_ERROR)
        except (click.ClickException, typer.exceptions.TyperException) as e:
            # typer vendors its own click; its ClickException derives from TyperException
            code = int(getattr(e, "exit_code", EXIT_USAGE))
            if type(e).__name__ == "NoArgsIsHelpError" or not hasattr(e, "format_message"):
                sys.exit(code)  # no arguments: the help was printed already
            message = one_line(e.format_message())
            ctx = getattr(e, "ctx", None)
            if ctx is not None:
                message += f" (`{ctx.command_path} --help` lists the options)"
            click.echo(f"error: {message}", err=True)
            sys.exit(code)
        except (click.Abort, typer.Abort):
            click.echo("error: aborted", err=True)
            sys.exit(EXIT_ERROR)
        sys.exit(rv if isinstance(rv, int) else EXIT_OK)


def _placeholder(param: Any, ctx: Any) -> str:
    """Help beside a parameter: not typer's ``--json <bool>``/``<list[str]>`` but nothing, or a value's kind."""
    if param.param_type_name == "argument" or getattr(param, "is_flag", False):
        return ""
    label = param.metavar or param.display_type(ctx).strip("<>").removeprefix("list[").removesuffix("]")
    return f"[{label}]" if "|" in label else {"str": "TEXT", "float": "NUMBER"}.get(label, label.upper())


typer.core.TyperArgument.display_type_rich = _placeholder  # type: ignore[method-assign,assignment]
typer.core.TyperOption.display_type_rich = _placeholder  # type: ignore[method-assign,assignment]


# ltxcli.errors.failure_kind -> exit code (a WeightsError carries its own exit_code)
_KIND_CODES = {"input": EXIT_INPUT, "numerical": EXIT_ERROR, "kernel": EXIT_USAGE, "peer": EXIT_ERROR}


def classify(exc: BaseException) -> tuple[int, str]:
    """Exception -> (exit code, one-line message)."""
    msg = one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, CliError):
        return exc.code, msg
    if isinstance(exc, KeyboardInterrupt):  # ltxcli.parallel.launch.Terminated (SIGTERM, SIGHUP) carries its own
        return getattr(exc, "code", EXIT_INTERRUPTED), interrupt_message(exc)
    kind = failure_kind(exc)
    if kind == "weights":
        return int(getattr(exc, "exit_code", EXIT_ERROR)), msg
    if kind in _KIND_CODES:  # (a "peer" one: not gloo's "GLHF! 🏖️" but what it means)
        return _KIND_CODES[kind], PEER_STOPPED if kind == "peer" else msg
    if kind == "oom":
        return EXIT_OOM, f"out of memory ({msg[:200]}): {oom_advice(_ARGS, exc)}"
    if isinstance(exc, FileExistsError):  # the library's own message names its keyword argument
        return EXIT_USAGE, msg.replace("overwrite=True", "--overwrite") if "overwrite=" in msg else f"{msg}; pass --overwrite to replace it"
    if isinstance(exc, ValueError):
        return EXIT_USAGE, cli_wording(msg)  # a field its option names otherwise: by the option's name
    if isinstance(exc, OSError):
        return EXIT_ERROR, msg
    return EXIT_ERROR, f"internal error: {type(exc).__name__}: {msg} (set {DEBUG_ENV}=1 for a traceback)"


def fail(code: int, message: str, follows: bool = False) -> NoReturn:
    label = rank_label()
    click.echo(f"{label + ' ' if label else ''}error: {one_line(message)}", err=True)
    record_exit_code(code, follows=follows)  # a `--gpus` worker: the launcher reports the first failing rank's code
    raise typer.Exit(code)


F = TypeVar("F", bound=Callable[..., Any])


def guarded(func: F) -> F:
    """Command decorator: library exceptions become one line on stderr and a documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _warnings_to_stderr():
            try:
                return func(*args, **kwargs)
            except (typer.Exit, click.exceptions.Exit, click.ClickException, click.Abort):
                raise
            except BaseException as exc:  # KeyboardInterrupt included: click would print "Aborted!", exit 1
                if isinstance(exc, SystemExit):
                    raise
                if isinstance(exc, BrokenPipeError):
                    exit_closed_stdout(EXIT_PIPE)
                if os.environ.get(DEBUG_ENV) and not isinstance(exc, KeyboardInterrupt):
                    traceback.print_exc()  # then the same line and exit code as without it
                fail(*classify(exc), follows=failure_kind(exc) == "peer")  # (following another rank's failure)

    return wrapper  # type: ignore[return-value]


@contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Python warnings as one ``warning: ...`` line each (the default format prints the source line too)."""
    previous = warnings.showwarning

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        (_RANK["warn"] or (lambda m: click.echo(f"warning: {one_line(m)}", err=True)))(str(message))

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning, _RANK["warn"] = previous, None


# ------------------------------------------------------------------------------------------ progress


class RichBars:
    """Transient rich progress bars on ``out``'s stderr console, drawn only where ``out`` shows progress (a
    terminal, no ``--quiet``; ``enabled`` overrides that); a subclass's ``__call__`` adds and moves the bars in
    ``self._progress`` (None when nothing is drawn), keyed in ``self._tasks``."""

    def __init__(self, out: Output, *, enabled: bool | None = None) -> None:
        self.out = out
        self.enabled = out.progress_enabled if enabled is None else enabled
        self._progress: Any = None
        self._tasks: dict[Any, Any] = {}

    def columns(self) -> list[Any]:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

        return [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]

    def __enter__(self) -> Self:
        if self.enabled:
            from rich.progress import Progress

            self._progress = Progress(*self.columns(), console=self.out.console, transient=True)
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()


class GenerationProgress(RichBars):
    """Bars with rate and time left for ``Pipeline.run(progress=...)`` and the writer (prompt, denoising per pass,
    decode tiles, frames written; :class:`ltxcli.progress.Stages`), or with ``out.plain`` their heartbeat lines."""

    def __init__(self, out: Output, label: str = "") -> None:
        from ltxcli.progress import Heartbeat, Stages

        super().__init__(out, enabled=out.progress_enabled and not out.plain)
        self.stages = Stages(label)
        self.heartbeat = Heartbeat(out.info, label) if out.plain and out.progress else None

    def columns(self) -> list[Any]:
        from rich.progress import TextColumn

        return [*super().columns(), TextColumn("{task.fields[pace]}")]

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.heartbeat is not None:
            self.heartbeat(stage, done, total)
        if self._progress is not None:
            s, new = self.stages.update(stage, done, total)
            if new:
                self._tasks[s.key] = self._progress.add_task(s.label, total=total, pace="")
            self._progress.update(self._tasks[s.key], completed=done, total=total, pace=s.pace())
