"""``ltx info FILE``: the video stream and the generation record stored by ``ltx generate``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import Output, exit_codes_epilog, guarded, to_json

# record keys shown first, in this order, by the human-readable view
_ORDER = ("prompt", "negative_prompt", "model", "preset", "seed", "steps", "guidance_scale", "stg_scale", "width",
          "height", "num_frames", "frame_rate", "conditions", "dtype", "version", "created")


def _stream_info(path: Path) -> dict[str, Any]:
    """Container facts without decoding: size, frames, frame rate, codec."""
    import av

    from ltxcli import media

    if path.suffix.lower() == ".png":
        from PIL import Image

        with Image.open(path) as im:
            return {"kind": "image", "width": im.width, "height": im.height, "num_frames": 1}
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                raise media.MediaError(f"{path}: contains no video stream")
            stream = container.streams.video[0]
            width, height, codec = stream.codec_context.width, stream.codec_context.height, stream.codec_context.name
            duration = float(container.duration / 1_000_000) if container.duration else None
    except av.error.FFmpegError as e:
        raise media.MediaError(f"{path}: cannot open video: {' '.join(str(e).split())}") from None
    rate = media.video_frame_rate(path)
    fps: float | int = int(rate) if rate.denominator == 1 else round(float(rate), 6)
    return {"kind": "video", "codec": codec, "width": width, "height": height,
            "num_frames": media.media_num_frames(path), "frame_rate": fps, "duration_s": duration}


def _target(file: Path) -> Path:
    """A folder written by --frames-dir is read through its first frame."""
    if file.is_dir():
        first = file / "frame_00000.png"
        if first.is_file():
            return first
        from ltxcli.media import MediaError

        raise MediaError(f"{file}: a folder without frame_00000.png (not written by --frames-dir)")
    return file


@guarded
def info(
    file: Annotated[Path, typer.Argument(show_default=False, help="An MP4 written by ltx, or a --frames-dir folder.")],
    json_: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Show a video's stream and the generation record ltx stored in it (prompt, seed, model, settings)."""
    from ltxcli import media

    out = Output(json_mode=json_)
    target = _target(file)
    record = media.read_video_metadata(target)  # missing / unreadable file: exit 6
    stream = _stream_info(target)
    if target != file:  # a --frames-dir folder: one PNG per frame
        stream.update(kind="frames", num_frames=len(list(file.glob("frame_*.png"))))
    if json_:
        out.json({"path": str(file), "stream": stream, "generation": record})
        return
    out.data(f"file: {file}")
    parts = [f"{stream['width']}x{stream['height']}", f"{stream['num_frames']} frame(s)"]
    if stream["kind"] == "video":
        parts += [f"{stream['frame_rate']} fps", stream["codec"]]
    out.data("stream: " + ", ".join(str(p) for p in parts))
    if record is None:
        out.info("no ltx generation record in this file")
        return
    keys = [k for k in _ORDER if k in record] + sorted(k for k in record if k not in _ORDER and k != "tool")
    for k in keys:
        v = record[k]
        out.data(f"{k}: {v if isinstance(v, str) else to_json(v)}")


def register(app: typer.Typer) -> None:
    app.command("info", epilog=exit_codes_epilog())(info)
