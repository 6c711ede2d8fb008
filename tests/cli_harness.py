"""What the in-process ``ltx`` command-line tests share (test_cli, test_hostile, test_cli_parallel).

Fixtures (``one_thread``, ``hub``) are imported into each test module's namespace; ``hub`` uses the importing
module's own ``cli_env`` fixture, which calls :func:`enter_cli_env`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import av
import pytest
import torch
from fake_hub import FakeHub
from tiny_models import one_thread  # noqa: F401  (re-exported: test modules take it from here)
from typer.testing import CliRunner

import ltxcli
from ltxcli import api as ltxcli_api
from ltxcli import media
from ltxcli import offload as ltxcli_offload
from ltxcli.cli import app


def memoised_loader() -> Callable[..., Any]:
    """A memoising ``load_pipeline``, one per test module (each module keeps its own loaded models)."""
    pipelines: dict[Any, Any] = {}
    real_load = ltxcli_api.load_pipeline
    defaults = {k: p.default for k, p in inspect.signature(real_load).parameters.items()}

    def cached_load(*args: Any, **kwargs: Any) -> Any:
        if args == ("tiny",):
            kwargs.pop("weights_dir", None)  # the tiny model reads no weights: one instance serves every test folder
        # `warn` (where the load's notes go) makes no other model: the CLI passes one, tests' tiny_pipeline() none;
        # nor does a value given as its default (the CLI passes spatial_upsampler=True, tiny_pipeline() nothing)
        key = (args, tuple(sorted((k, str(v)) for k, v in kwargs.items()
                                  if k != "warn" and not (k in defaults and type(v) is type(defaults[k]) and v == defaults[k]))))
        if key not in pipelines:
            pipelines[key] = real_load(*args, **kwargs)
        return pipelines[key]

    return cached_load


def enter_cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, load: Callable[..., Any],
                  unset: Iterable[str] = ()) -> Path:
    """Work in ``tmp_path`` with an empty weights folder, offline, with ``load`` as the CLI's model loader;
    ``unset`` names more environment variables to remove."""
    monkeypatch.chdir(tmp_path)
    for var in ("LTX_MODEL", "HF_ENDPOINT", "LTX_DEBUG", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *unset):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "weights").mkdir()
    monkeypatch.setenv("LTX_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # prompt enhancement (tests/test_enhance*.py) would pull Llama for every short prompt on a file checkpoint
    monkeypatch.setenv("LTX_ENHANCE_PROMPT", "off")
    # the package's lazy name first (resolved under the patch below, it would keep the stand-in after the test)
    monkeypatch.setattr(ltxcli, "load_pipeline", load)
    monkeypatch.setattr(ltxcli_api, "load_pipeline", load)
    # the memoised model serves many runs: keep its text encoder (the CLI releases it after a single video)
    monkeypatch.setattr(ltxcli_offload, "free_text_encoder", lambda text_encoder: None)
    return tmp_path


@pytest.fixture
def hub(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fake Hub on 127.0.0.1 as HF_ENDPOINT, with no token, proxy or hub-cache override from the caller."""
    import huggingface_hub.constants as hfc

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HTTP_PROXY",
                "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hfc, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(hfc, "HF_TOKEN_PATH", str(cli_env / "hf" / "token"))
    monkeypatch.setattr(hfc, "HF_STORED_TOKENS_PATH", str(cli_env / "hf" / "stored_tokens"))
    h = FakeHub()
    with h:
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        yield h


def ltx(*args: str, input: str | None = None) -> Any:
    """``ltx ARGS`` in process (stdout and stderr apart); an exception other than SystemExit is raised."""
    result = CliRunner().invoke(app, list(args), input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def assert_one_error_line(result: Any, code: int) -> str:
    """Exit ``code``, nothing on stdout, and one ``error: `` line (no traceback) on stderr; returns that line."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return lines[0]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def frame_codes(folder: Path) -> torch.Tensor:
    """The 8-bit codes of the ``frame_*.png`` files in ``folder``, in frame order."""
    return media.to_uint8(torch.cat([media.load_image(p) for p in sorted(folder.glob("frame_*.png"))]))


def assert_codes_match(codes: torch.Tensor, reference: torch.Tensor, tol: float = 1e-5) -> int:
    """8-bit ``codes`` are the rounding of a video within ``tol`` (in [0, 1]) of the float ``reference``: equal to
    its codes except where ``reference`` lies within ``tol`` of a rounding boundary, where they may be one off.
    Returns how many codes differ."""
    expected = media.to_uint8(reference)
    assert codes.shape == expected.shape
    diff = (codes.int() - expected.int()).abs()
    scaled = reference.clamp(0, 1) * 255
    near = (scaled - scaled.floor() - 0.5).abs() <= tol * 255
    assert int(diff.max()) <= 1 and bool((near | (diff == 0)).all()), int((diff > 0).sum())
    return int((diff > 0).sum())


def cut_inside_a_reference_frame(src: Path, dst: Path) -> int:
    """``dst``: ``src`` (an H.264 MP4 with B-frames) cut inside a reference frame coded ahead of the B-frames
    shown before it: the index lists every frame, the demuxer still yields that frame's partial packet (a
    timestamp two frames on) but not the B-frames', so the packets' times jump while the frames that decode
    (returned: at least 2) are evenly spaced. The latest such cut from which some decode."""
    with av.open(str(src)) as c:
        packets = [(p.pts, p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.pts is not None]
    data = src.read_bytes()
    for i in reversed(range(1, len(packets) - 1)):
        if packets[i][0] > packets[i + 1][0]:  # a reference frame ahead of the B-frames shown before it
            dst.write_bytes(data[: packets[i][1] + packets[i][2] // 2])
            try:
                decoded = len(media.read_video(dst).frames)
            except media.MediaError:
                continue
            if decoded >= 2:
                return decoded
    raise AssertionError(f"{src}: no B-frames to cut before")


def truncated_mp4(folder: Path, name: str = "cut.mp4", seed: int = 3) -> tuple[Path, int]:
    """``name``: a 41-frame 96x64 MP4 whose index (at the front) lists all 41 frames, cut in half, and the frames
    FFmpeg decodes from it on one thread (checked to be some, not all: the premise of a truncated file)."""
    gen = torch.Generator().manual_seed(seed)
    whole = folder / f"whole-{name}"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=24)
        stream.height, stream.width, stream.pix_fmt = 64, 96, "yuv420p"
        for _ in range(41):  # noise: big frames, so that half the file is about half the frames
            pixels = (torch.rand(64, 96, 3, generator=gen) * 255).to(torch.uint8).numpy()
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))
    data = whole.read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    decodable = 0
    with av.open(str(folder / name)) as container:
        listed = container.streams.video[0].frames
        try:  # one thread: FFmpeg says where the data ends (frame threads stop there quietly)
            for _ in container.decode(video=0):
                decodable += 1
        except av.error.InvalidDataError:
            pass
    assert listed == 41 and 1 < decodable < 41  # the premise: an index that outlives the data
    return folder / name, decodable
