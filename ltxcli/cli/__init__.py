"""The ``ltx`` command line: a thin Typer layer over the library (parse, call, print).

Commands: ``generate``, ``i2v``, ``prompt``, ``vae encode|decode|roundtrip``, ``weights list|pull|verify|path|rm``,
``doctor``, ``info``, ``bench``. Exit codes: :data:`ltxcli.cli.common.EXIT_CODES`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ltxcli.errors import as_the_command_line

from . import bench, doctor, generate, info, prompt, vae, weights
from .common import EXIT_CODES, OneLineErrorsGroup, help_epilog

app = typer.Typer(
    name="ltx",
    cls=OneLineErrorsGroup,
    help="Generate videos with Lightricks' LTX-Video models.\n\n"
         "Data goes to stdout (--json: one JSON object per line), messages and progress to stderr.",
    epilog=help_epilog("ltx"),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from ltxcli import __version__

        typer.echo(f"ltx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass


generate.register(app)
app.command("prompt")(prompt.prompt)
app.add_typer(vae.app, name="vae")
app.add_typer(weights.app, name="weights")
doctor.register(app)
info.register(app)
bench.register(app)  # ltxcli/cli/bench.py belongs to the benchmark work
for _prefix, _group in [("", app), *((f"{g.name} ", g.typer_instance) for g in app.registered_groups)]:
    _group.info.epilog = help_epilog(_prefix.strip() or "ltx")  # exit codes, then ltxcli/cli/examples.toml
    for _cmd in _group.registered_commands:
        _cmd.epilog = help_epilog(_prefix + (_cmd.name or _cmd.callback.__name__))  # type: ignore[union-attr]


def main() -> None:
    """Console-script entry point (``ltx``)."""
    with as_the_command_line():  # from here on a signal ends it in one line and its exit code, never a traceback
        app(prog_name="ltx")


__all__ = ["EXIT_CODES", "app", "main"]
