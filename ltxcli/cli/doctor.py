"""``ltx doctor``: what this machine can run, and where weights go. Exit 1 if something blocks generation.

The report and its checks are :func:`ltxcli.diagnose.diagnose`, its lines :func:`ltxcli.diagnose.report_lines`; this
module prints them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .common import EXIT_ERROR, Output, exit_codes_epilog, guarded
from .resolve import WEIGHTS_DIR_ENV


@guarded
def doctor(
    weights_dir: Annotated[str | None, typer.Option(envvar=WEIGHTS_DIR_ENV, show_default=False,
                                                    help="Weights folder to check instead of the HF cache.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    recalibrate: Annotated[bool, typer.Option(help="Measure this CPU's GEMM/Winograd/narrow choices again.")] = False,
) -> None:
    """Report torch/CUDA/GPU capabilities, the attention backend, fp8 and torch.compile support, torchrun's world,
    PyAV/libx264, the weights cache and disk space."""
    from ltxcli.diagnose import diagnose, report_lines

    out = Output(json_mode=json_)
    report = diagnose(weights_dir, recalibrate=recalibrate)
    if json_:
        out.json(report)
    else:
        for line in report_lines(report):
            out.data(line)
    if any(c["status"] == "fail" for c in report["checks"]):
        raise typer.Exit(EXIT_ERROR)


def register(app: typer.Typer) -> None:
    app.command("doctor", epilog=exit_codes_epilog())(doctor)
