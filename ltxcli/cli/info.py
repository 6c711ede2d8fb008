"""``ltx info FILE``: the video stream and the generation record stored by ``ltx generate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Output, exit_codes_epilog, guarded


@guarded
def info(
    file: Annotated[Path, typer.Argument(show_default=False, help="An MP4 written by ltx, or a --frames-dir folder.")],
    json_: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Show a video's stream and the generation record ltx stored in it (prompt, seed, model, settings)."""
    from ltxcli import media, paths, records

    out = Output(json_mode=json_)
    stream, record = media.media_info(file)  # missing / unreadable file: exit 6
    if json_:
        out.json({"path": paths.user_path(file), "stream": stream, "generation": record})
        return
    out.data(f"file: {paths.user_path(file)}")
    parts = [f"{stream['width']}x{stream['height']}", f"{stream['num_frames']} frame(s)"]
    if stream["kind"] == "video":
        parts += [f"{stream['frame_rate']} fps", stream["codec"]]
    out.data("stream: " + ", ".join(str(p) for p in parts))
    if record is None:
        out.info("no ltx generation record in this file")
        return
    for line in records.record_lines(record):
        out.data(line)


def register(app: typer.Typer) -> None:
    app.command("info", epilog=exit_codes_epilog())(info)
