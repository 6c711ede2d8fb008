"""Broken and hostile input, end to end through ``ltx generate`` / ``ltx i2v`` / ``--model FILE``: every case ends
in exit 0 with a valid output, or one ``error:`` line on stderr, a documented exit code, no traceback and no file
left behind; nothing is unpickled; Ctrl-C exits 130 and leaves the weights cache loadable.

Every file a case needs is made here (images, videos, checkpoints, pickles, a fake Hub on 127.0.0.1). The tiny
model is built once per module (``load_pipeline`` is memoised, as in tests/test_cli.py).
"""

from __future__ import annotations

import ast
import errno
import io
import itertools
import json
import os
import pickle
import re
import struct
import sys
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import cli_harness
import numpy as np
import pytest
import torch
from cli_harness import assert_one_error_line, enter_cli_env, ltx, memoised_loader
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image
from tiny_t5 import make_tiny_text_encoder

from ltxcli import api as ltxcli_api
from ltxcli import media, runner, weights
from ltxcli.cli import common as cli_common
from ltxcli.cli import preflight
from ltxcli.loading import save_official_checkpoint
from ltxcli.request import Condition
from ltxcli.runner import BatchItem

REPO_ROOT = Path(__file__).resolve().parents[1]
# Hypothesis caches what it learns from the sources (.hypothesis/constants): keep that out of the repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "ltxcli-test-hypothesis")
SMALL = ["--height", "64", "--width", "96", "--num-frames", "9", "--steps", "1"]
DOCUMENTED = set(cli_common.EXIT_CODES) - {0}

_cached_load = memoised_loader()
# fixtures shared with test_cli (hub uses this module's cli_env)
one_thread = cli_harness.one_thread
hub = cli_harness.hub


def tiny_pipeline() -> Any:
    return _cached_load("tiny", text_encoder=None, upsampler=None, device=None, dtype=None, weights_dir=None)


@pytest.fixture(autouse=True)
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """As test_cli's, and the memory check's off switch is unset too."""
    return enter_cli_env(tmp_path, monkeypatch, _cached_load, unset=(preflight.NO_MEMORY_CHECK_ENV,))


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Records every model load of a run (to show that a refusal came before any weight was read)."""
    calls: list[Any] = []

    def load(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return _cached_load(*args, **kwargs)

    monkeypatch.setattr(ltxcli_api, "load_pipeline", load)
    return calls


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


def probe(path: Path) -> dict[str, Any]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(s))
        return {"frames": n, "width": s.codec_context.width, "height": s.codec_context.height,
                "rate": Fraction(s.average_rate)}


# ------------------------------------------------------------------------------------------ files made here


def png_bytes(image: Image.Image, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and an IHDR declaring ``width x height`` (8-bit RGB), then one empty IDAT and IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def write_ffv1(path: Path, frames: np.ndarray) -> None:
    """Lossless video of any size (odd ones included), which H.264 4:2:0 cannot hold."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=24)
        s.height, s.width, s.pix_fmt = frames.shape[1], frames.shape[2], "bgr0"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="bgr0")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


class _Boom:
    """Unpickling this creates a marker file: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Media, a tiny text encoder and official single-file checkpoints of the tiny model (good and broken)."""
    d = tmp_path_factory.mktemp("assets")
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(d / "ok.png")
    media.write_video(d / "clip17.mp4", torch.rand(17, 64, 96, 3), 24)
    te = make_tiny_text_encoder(d / "te")
    tiny = tiny_pipeline()
    good = d / "tiny.safetensors"
    save_official_checkpoint(good, transformer=tiny.transformer, vae=tiny.vae)
    return SimpleNamespace(dir=d, te=te, good=good, rgb=rgb)


def rewrite_header(data: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """A safetensors file with its JSON header changed by ``change`` (the data section is kept as it is)."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    change(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + n :]


def _first(header: dict[str, Any], prefix: str, ndim: int) -> str:
    return next(k for k, v in header.items() if k.startswith(prefix) and len(v.get("shape", [])) == ndim
                and len(set(v["shape"])) == ndim)


def _set_config(header: dict[str, Any], config: Any) -> None:
    header["__metadata__"]["config"] = config if isinstance(config, str) else json.dumps(config)


def _outside(header: dict[str, Any]) -> None:
    key = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    b, e = header[key]["data_offsets"]
    header[key]["data_offsets"] = [b + 4096, e + 4096]


def _wrong_dtype(header: dict[str, Any]) -> None:
    header[_first(header, "model.diffusion_model.proj_out.weight", 2)]["dtype"] = "I32"


def _wrong_shape(header: dict[str, Any]) -> None:
    key = _first(header, "model.diffusion_model.proj_out.weight", 2)
    header[key]["shape"] = header[key]["shape"][::-1]


def _only(prefix: str) -> Callable[[bytes], bytes]:
    def make(good: bytes) -> bytes:
        def change(h: dict[str, Any]) -> None:
            cfg = json.loads(h["__metadata__"]["config"])
            for k in [k for k in h if k != "__metadata__" and not k.startswith(prefix)]:
                del h[k]
            _set_config(h, {k: v for k, v in cfg.items() if k == prefix.rstrip(".")})
        return rewrite_header(good, change)
    return make


# name -> (bytes from the good checkpoint's bytes, text the error line must contain)
CHECKPOINT_CASES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "empty": (lambda g: b"", "truncated or not a safetensors file (0 bytes)"),
    "truncated": (lambda g: g[: len(g) * 6 // 10], "points outside the file"),
    "header-length": (lambda g: struct.pack("<Q", 2**40) + g[8:], "corrupt safetensors header"),
    "header-not-json": (lambda g: g[:8] + b"\xff" * struct.unpack("<Q", g[:8])[0] + g[8 + struct.unpack(
        "<Q", g[:8])[0]:], "not valid JSON"),
    "offsets-outside": (lambda g: rewrite_header(g, _outside), "points outside the file"),
    "metadata-not-json": (lambda g: rewrite_header(g, lambda h: _set_config(h, "{not json")),
                          "metadata 'config' is not valid JSON"),
    "unknown-architecture": (lambda g: rewrite_header(g, lambda h: _set_config(h, {"unet": {"layers": 3}})),
                             "unknown architecture"),
    "foreign-class": (lambda g: rewrite_header(g, lambda h: _set_config(h, {
        "transformer": {"_class_name": "UNet2DConditionModel"}, "vae": {"_class_name": "AutoencoderKL"}})),
        "unsupported _class_name='UNet2DConditionModel'"),
    "no-config": (lambda g: rewrite_header(g, lambda h: h["__metadata__"].clear()),
                  "not an official LTX-Video checkpoint"),
    "vae-only": (_only("vae."), "needs both a transformer and a VAE"),
    "wrong-dtype": (lambda g: rewrite_header(g, _wrong_dtype), "has dtype torch.int32"),
    "wrong-shape": (lambda g: rewrite_header(g, _wrong_shape), "has shape"),
}


# ================================================================= 1. validation before work, memory estimate


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--height", "0"], ["height=0", "at least 2"]),
        (["--height=-64"], ["height=-64", "at least 2"]),
        (["--width", "4001"], ["width=4001 pads to 4032", "position range of 2048 px", "use at most 2048"]),
        (["--height", "101"], ["height=101", "even", "100 or 102"]),
        (["--num-frames", "0"], ["num_frames=0", "at least 1"]),
        (["--num-frames", str(10**23)], [f"num_frames={10**23}", "above 1,000,000"]),  # used to plan for minutes
        # past the model's range a video is made in windows (ltxcli.long_video): their settings are checked
        (["--num-frames", "100000", "--window", "8"], ["window=8", "at least 16"]),
        (["--overlap-strength", "2"], ["overlap_strength=2", "[0, 1]"]),
        (["--prompt-schedule", "missing.jsonl"], ["prompt schedule missing.jsonl", "no such file"]),
        (["--frame-rate", "0"], ["frame_rate=0", "[0.001, 1000]", "e.g. 24"]),
        (["--frame-rate", "nan"], ["frame_rate=nan", "[0.001, 1000]"]),
        # was written at 1/1001 fps, saying "@ 0.0006 fps" (0.0004: refused by the writer after all the work)
        (["--frame-rate", "0.0006"], ["frame_rate=0.0006", "[0.001, 1000]", "e.g. 0.001"]),
        (["--frame-rate", "5000"], ["frame_rate=5000", "e.g. 1000"]),
        (["--steps", "0"], ["steps=0", "[1, 1000]", "use 1"]),
        (["--steps", "5000000"], ["steps=5000000", "use 1000"]),
        (["--guidance-scale=-1"], ["guidance_scale=-1", ">= 0", "use 0"]),
        (["--guidance-scale", "inf"], ["guidance_scale=inf"]),
        (["--stg-scale=-0.5"], ["stg_scale=-0.5"]),
        (["--seed=-1"], ["seed=-1", "[0, 2**63 - 1]", "use 0"]),
        (["--seed", str(2**64)], [f"seed={2**64}", "use 2**63 - 1"]),
        (["--condition", "ok.png:99"], ["frame=99", "[0, 8]", "use 8"]),
        (["--condition", "ok.png:-1"], ["frame=-1", "use 0"]),
        (["--condition", "ok.png:0:1.5"], ["strength=1.5", "[0, 1]", "use 1"]),
        (["--condition", "ok.png:0:-0.5"], ["strength=-0.5", "use 0"]),
        (["--condition", "ok.png"], ["PATH:FRAME"]),
        (["--num-frames", "17", "--condition", "clip17.mp4:3"], ["multiple of 8", "use 0 or 8"]),
        (["--height", "1e3"], ["--height", "valid integer"]),
        (["--dtype", "float16"], ["float16", "bfloat16"]),
        (["--device", "cuda:99"], ["cuda:99"]),
    ],
)
def test_invalid_values_are_refused_before_any_weight_loads(
    cli_env: Path, assets: SimpleNamespace, loads: list[Any], args: list[str], needles: list[str]
) -> None:
    for name in ("ok.png", "clip17.mp4"):
        (cli_env / name).symlink_to(assets.dir / name)
    base = ["--height", "64", "--width", "96", "--num-frames", "9"]
    line = assert_one_error_line(ltx("generate", "a cat", "--model", "tiny", "-o", "o.mp4", *base, *args), 2)
    for needle in needles:
        assert needle in line, line
    assert loads == [] and not (cli_env / "o.mp4").exists()


def test_extreme_numbers_and_odd_files_are_one_line_or_read_right(cli_env: Path, loads: list[Any]) -> None:
    """Found by a hostile-input pass: each of these was an internal error, a hang or a silent misreading."""
    small = ["--model", "tiny", "--height", "64", "--width", "64", "--steps", "1"]
    line = assert_one_error_line(ltx("generate", "a cat", *small, "--duration", "1e308s", "-o", "o.mp4"), 2)
    assert "duration=1e+308 must be a positive number of seconds" in line  # OverflowError before
    (cli_env / "s.jsonl").write_text('{"start": "infs", "prompt": "a"}\n')
    line = assert_one_error_line(ltx("generate", "a cat", *small, "--prompt-schedule", "s.jsonl", "-o", "o.mp4"), 2)
    assert "prompt schedule start 'infs'" in line
    (cli_env / "deep.txt").write_text('{"prompt": "x", "seed": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    line = assert_one_error_line(ltx("generate", "--batch", "deep.txt", *small, "-o", "out/"), 2)
    assert "deep.txt line 1: invalid JSON (nested too deeply)" in line
    media.write_video(cli_env / "in.mp4", torch.rand(9, 64, 64, 3), 24)
    line = assert_one_error_line(ltx("v2v", "in.mp4", "x", "--strength", "0", *small, "-o", "o.mp4"), 2)
    assert "strength=0 must be in (0, 1)" in line  # a 0 used to run at 0.5
    assert loads == [] and not (cli_env / "o.mp4").exists()
    # a byte-order mark (some editors write one) and a numeric duration in a batch line are read as meant
    (cli_env / "bom.txt").write_bytes(b'\xef\xbb\xbf{"prompt": "a cat", "seed": 3, "duration": 1}\n')
    r = ltx("generate", "--batch", "bom.txt", *small, "-o", "out/", "--json")
    assert r.exit_code == 0, r.stderr
    (obj,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert (obj["prompt"], obj["seed"], obj["settings"]["num_frames"]) == ("a cat", 3, 25)


@pytest.mark.parametrize(("strength", "steps"), [(0.9, 2), (0.99, 20), (0.85, 3), (0.9999, 20), (0.9999, 1), (0.5, 1)])
def test_a_v2v_strength_that_keeps_every_step_names_a_remedy_that_works(strength: float, steps: int) -> None:
    """A strength near 1 that keeps all the steps (from pure noise) was told "use more steps (e.g. N)" with N from
    ceil(1.5 / strength): 2 for 0.9 or 0.99, which keeps every step again (`ltx v2v --strength 0.99 --steps 20` said
    "e.g. 2"). The remedy named now works: more steps than given, or (no count up to 1000 leaves a step out) a
    strength for these steps."""
    from ltxcli.passes import MAX_STEPS, v2v_pass
    from ltxcli.presets import PassSettings

    def run(strength: float, steps: int) -> int:
        return v2v_pass(PassSettings(num_inference_steps=steps), strength).skip_initial_inference_steps

    with pytest.raises(ValueError, match=rf"^denoise_strength={strength} keeps all {steps} steps, from pure noise: ") as e:
        run(strength, steps)
    said = str(e.value).split("from pure noise: ")[1]
    if m := re.fullmatch(r"use more steps \(e\.g\. (\d+)\) or a lower strength", said):
        more = int(m.group(1))
        assert steps < more <= MAX_STEPS and run(strength, more) >= 1
        if (strength, steps) == (0.9, 2):  # 3, 4 keep round(2.7) = 3 and round(3.6) = 4; 5 keeps round(4.5) = 4
            assert more == 5
    elif m := re.fullmatch(r"use a lower strength \(at most ([0-9.]+)\)", said):
        assert run(float(m.group(1)), steps) >= 1 and 1 - strength < 0.5 / MAX_STEPS
    else:  # one step: no strength keeps fewer than one, so both
        assert said == "use a lower strength (e.g. 0.5) with more steps (e.g. 3)" and run(0.5, 3) >= 1


def test_patterns_lora_scales_latents_and_records_from_a_review_pass(cli_env: Path, loads: list[Any]) -> None:
    """More of the hostile-input pass: an attribute of a name field (internal error, or a file named after a
    Python class), a LoRA scale of nan (reported as an unknown LoRA), latents with a 0-size side (internal error)
    or NaN (a black video, exit 0), a hand-damaged record for --from (internal errors)."""
    from PIL import PngImagePlugin
    from safetensors.torch import save_file

    small = ["--model", "tiny", "--height", "64", "--width", "64", "--steps", "1", "--num-frames", "9"]
    for pattern in ("{slug.x}.mp4", "{slug.__class__}.mp4", "{seed[0]}.mp4"):
        line = assert_one_error_line(ltx("generate", "a cat", *small, "-o", pattern), 2)
        assert f"unknown field {pattern[:-4]}" in line
    line = assert_one_error_line(ltx("generate", "a cat", *small, "--lora", "x.safetensors:nan", "-o", "o.mp4"), 2)
    assert "scale nan must be a finite number" in line
    assert loads == []
    save_file({"latents": torch.zeros(1, 16, 0, 2, 2)}, cli_env / "z.safetensors")
    save_file({"latents": torch.full((1, 16, 2, 2, 2), float("nan"))}, cli_env / "n.safetensors")
    assert "none of them 0" in assert_one_error_line(ltx("vae", "decode", "z.safetensors", "-m", "tiny"), 6)
    assert "NaN or infinite" in assert_one_error_line(ltx("vae", "decode", "n.safetensors", "-m", "tiny"), 6)
    assert ltx("generate", "a cat", *small, "--frames-dir", "r").exit_code == 0
    first = Image.open(cli_env / "r" / "frame_00000.png")
    record = json.loads(first.info["comment"])
    extend = {"video": "in.mp4", "frames": 8, "backward": False}
    # a number or flag of an extension or condition: was int("x")'s own words (no file, no field), or bool("false"),
    # True: a backward extension
    for damage in ({"seed": "abc"}, {"cache": "teacache"}, {"conditions": [{"path": "ok.png"}]},
                   {"extend": {**extend, "frames": "x"}}, {"extend": {**extend, "backward": "false"}},
                   {"conditions": [{"path": "ok.png", "frame": "x", "strength": 1.0}]},
                   {"conditions": [{"path": "ok.png", "frame": 0, "strength": "x"}]}):
        info = PngImagePlugin.PngInfo()
        info.add_text("comment", json.dumps({**record, **damage}))
        first.save(cli_env / "r" / "frame_00000.png", pnginfo=info)
        line = assert_one_error_line(ltx("generate", "--from", "r", "-o", "again.mp4"), 2)
        assert "its generation record is damaged" in line, damage
    # a load setting no parser takes was the parser's words alone ("unknown attention backend 'zzz'"): as if given
    for key in ("attention", "weights_dtype", "vae_conv", "dtype"):
        info = PngImagePlugin.PngInfo()
        info.add_text("comment", json.dumps({**record, key: "zzz"}))
        first.save(cli_env / "r" / "frame_00000.png", pnginfo=info)
        line = assert_one_error_line(ltx("generate", "--from", "r", "-o", "again.mp4"), 2)
        assert line.startswith(f"error: --from r: the record's {key}: ") and "'zzz'" in line, line
    assert not (cli_env / "o.mp4").exists() and not (cli_env / "again.mp4").exists()


def test_vae_and_doctor_refusals_from_a_review_pass(cli_env: Path) -> None:
    """`ltx vae` checks --decode-timestep alike in decode and roundtrip (NaN and inf passed, and -1 in roundtrip),
    says that a file stands where its output folder should be (it printed Errno 17 and "--overwrite", with or
    without it), and `ltx doctor` fails on a weights location that is a file (it reported a folder, exit 0)."""
    media.write_video(cli_env / "in.mp4", torch.rand(9, 64, 64, 3), 24)
    (cli_env / "afile").write_text("x")
    for args in (["roundtrip", "in.mp4", "--decode-timestep", "nan"], ["roundtrip", "in.mp4", "--decode-timestep=-1"],
                 ["decode", "l.safetensors", "--decode-timestep", "inf"],
                 ["decode", "l.safetensors", "--decode-timestep", "1e36"]):  # x 1000 overflows: a black video
        assert "must be in [0, 1]" in assert_one_error_line(ltx("vae", *args, "-m", "tiny"), 2)
    for extra in ([], ["--overwrite"]):
        line = assert_one_error_line(ltx("vae", "decode", "l.safetensors", "-m", "tiny", "-o", "afile/x.mp4", *extra), 1)
        assert line == "error: cannot write afile/x.mp4: afile is not a folder"
    r = ltx("doctor", "--weights-dir", "afile", "--json")
    assert r.exit_code == 1
    (check,) = [c for c in json.loads(r.stdout)["checks"] if c["check"] == "weights"]
    assert check["status"] == "fail" and "is a file, not a folder" in check["detail"]


def test_doctor_and_calibration_say_what_cannot_be_written(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ltx doctor` passed a weights folder it cannot write to ("will be downloaded on first use"), and a
    calibration cache that cannot be written lost `--recalibrate`'s measurements without a word."""
    import ltxcli.diagnose as diagnose
    from ltxcli import calibrate

    monkeypatch.setattr(diagnose.os, "access", lambda path, mode: False)  # as a read-only folder (root writes all)
    r = ltx("doctor", "--json")
    (check,) = [c for c in json.loads(r.stdout)["checks"] if c["check"] == "weights"]
    assert r.exit_code == 1 and check["status"] == "fail" and "is not writable" in check["detail"]
    (cli_env / "afile").write_text("x")
    monkeypatch.setenv(calibrate.ENV_DIR, str(cli_env / "afile"))
    with pytest.warns(UserWarning, match="the CPU calibration cannot be kept in .*afile"):
        calibrate._write({})


def test_vae_output_checks_come_before_any_work_and_leave_no_folder(cli_env: Path, loads: list[Any]) -> None:
    """An output that is a folder was found after the model loaded and the work was done (exit 6); the output's
    folders were made before the input and model were checked, and stayed after their errors. Without
    --overwrite a folder was "already exists: pass --overwrite" (exit 2), which then failed as a folder."""
    media.write_video(cli_env / "in.mp4", torch.rand(9, 64, 64, 3), 24)
    (cli_env / "d.safetensors").mkdir()
    (cli_env / "d.mp4").mkdir()
    for args, extra in itertools.product((["encode", "in.mp4", "-o", "d.safetensors"], ["decode", "l.safetensors",
                                          "-o", "d.mp4"], ["roundtrip", "in.mp4", "-o", "d.mp4"]), ([], ["--overwrite"])):
        line = assert_one_error_line(ltx("vae", *args, "-m", "tiny", *extra), 1)
        assert line == f"error: cannot write {args[-1]}: it is a folder"
    assert loads == []
    assert_one_error_line(ltx("vae", "encode", "missing.mp4", "-m", "tiny", "-o", "new/sub/x.safetensors"), 6)
    assert not (cli_env / "new").exists()
    assert ltx("vae", "encode", "in.mp4", "-m", "tiny", "-o", "new/sub/x.safetensors").exit_code == 0
    assert (cli_env / "new" / "sub" / "x.safetensors").is_file()


def test_generate_output_of_the_wrong_kind_is_refused_before_work(cli_env: Path, loads: list[Any]) -> None:
    """--frames-dir naming a file was "already exists: pass --overwrite" (exit 2), then with --overwrite failed
    after the whole run; a pattern naming a folder likewise. -o naming an existing folder writes into it."""
    (cli_env / "afile").write_text("x")
    (cli_env / "0.mp4").mkdir()
    for out, what in ((["--frames-dir", "afile"], "afile: it exists and is not a folder"),
                      (["-o", "{index}.mp4"], "0.mp4: it is a folder")):
        for extra in ([], ["--overwrite"]):
            line = assert_one_error_line(ltx("generate", "a cat", "--model", "tiny", *out, *extra, *SMALL), 1)
            assert line == f"error: cannot write {what}"
    assert loads == [] and (cli_env / "afile").read_text() == "x"
    assert ltx("generate", "a cat", "--model", "tiny", "-o", "0.mp4", "--seed", "1", *SMALL).exit_code == 0
    assert [p.name for p in (cli_env / "0.mp4").iterdir()] == ["a-cat-1-96x64x9.mp4"]


def test_batch_mistakes_found_while_completing_items_name_their_line(cli_env: Path, loads: list[Any]) -> None:
    """A line's input video, strength, extension or duration is checked while its item is completed (before the
    per-item checks that already named the line): those errors now name it too."""
    media.write_video(cli_env / "in.mp4", torch.rand(9, 64, 64, 3), 24)
    cases = [('{"prompt": "a", "video": "in.mp4", "denoise_strength": -0.5}', 2, "strength=-0.5"),
             ('{"prompt": "a", "duration": "abc"}', 2, "duration 'abc'"),
             ('{"prompt": "a", "extend": {"video": "in.mp4", "frames": -8}}', 2, "frames=-8"),
             ('{"prompt": "a", "video": "missing.mp4"}', 6, "missing.mp4"),
             # an empty path named the current folder ("video": "" was ".: is a folder, not a media file")
             *((f'{{"prompt": "a", "{key}": ""}}', 2, f"{key} is empty: give a file path")
               for key in ("video", "image", "output", "prompt_schedule"))]
    for text, code, needle in cases:
        (cli_env / "b.txt").write_text('{"prompt": "fine"}\n' + text + "\n")
        line = assert_one_error_line(ltx("generate", "--batch", "b.txt", "-m", "tiny", "-o", "out/"), code)
        assert line.startswith("error: --batch b.txt line 2: ") and needle in line, line
    assert loads == []


def test_i2v_image_strength_is_checked(cli_env: Path, assets: SimpleNamespace, loads: list[Any]) -> None:
    line = assert_one_error_line(ltx("i2v", str(assets.dir / "ok.png"), "x", "--model", "tiny", "--image-strength", "2",
                              "-o", "o.mp4", *SMALL), 2)
    assert "strength=2" in line and "use 1" in line and loads == []


def test_memory_estimate_reads_weights_from_the_headers(assets: SimpleNamespace) -> None:
    """The weight bytes come from the safetensors headers; the reference counts the modules' own tensors."""
    from transformers import T5EncoderModel

    from ltxcli.memory.weights import spec_parts
    from ltxcli.spec import resolve_spec

    tiny = tiny_pipeline()
    dit_vae = sum(t.numel() for m in (tiny.transformer, tiny.vae) for t in m.state_dict().values())
    te = sum(p.numel() for p in T5EncoderModel.from_pretrained(assets.te / "text_encoder").parameters())
    ref = resolve_spec(str(assets.good), text_encoder=str(assets.te))
    for dtype, size in ((torch.float32, 4), (torch.bfloat16, 2)):
        tcfg, vcfg, parts = spec_parts(ref, dtype)
        total = parts.total
        assert total == (dit_vae + te) * size
        assert tcfg == tiny.transformer.config and vcfg == tiny.vae.config


def test_memory_estimate_activations_hand_derived() -> None:
    """LTX-Video 2B at 768x512x121 in bfloat16 with CFG + STG: 16 x 16 x 24 = 6144 latent tokens of width 2048."""
    from ltxcli.memory.decode import decode_memory_bytes
    from ltxcli.memory.plan import estimate_memory
    from ltxcli.models.configs import TRANSFORMER_2B, VAEConfig, official_vae_config

    vae = VAEConfig.from_official(official_vae_config("0.9.5"))
    est = estimate_memory(TRANSFORMER_2B, vae, height=512, width=768, num_frames=121, dtype=torch.bfloat16,
                                    weights_bytes=7_000_000_000, branches=3)
    # plus the text's keys and values of the 28 blocks, 3 branches x 256 tokens (ltxcli.text_cache): 0.18 GB
    text_kv = 2 * 28 * 3 * 256 * 2048 * 2
    assert est.transformer_bytes == 18 * 3 * 6144 * 2048 * 2 + text_kv  # 1.36 GB + 0.18 GB
    assert est.vae_bytes == decode_memory_bytes(vae, (1, 128, 16, 16, 24), torch.bfloat16)
    assert est.peak_bytes == 7_000_000_000 + max(est.transformer_bytes, est.vae_bytes)
    # a keyframe at frame 64 adds its 2 x 16 x 24 latent tokens; conditioning makes the timesteps per token
    cond = estimate_memory(TRANSFORMER_2B, vae, height=512, width=768, num_frames=121, dtype=torch.bfloat16,
                                     branches=3, extra_tokens=2 * 16 * 24, per_token_timesteps=True)
    assert cond.transformer_bytes == 34 * 3 * (6144 + 768) * 2048 * 2 + text_kv


def test_memory_estimate_follows_guidance_conditions_multi_scale_and_fp8(assets: SimpleNamespace) -> None:
    from ltxcli.memory.decode import decode_memory_bytes
    from ltxcli.memory.plan import RunShape, request_estimator
    from ltxcli.memory.weights import model_bytes
    from ltxcli.models.configs import TRANSFORMER_13B, VAEConfig, official_vae_config
    from ltxcli.presets import PRESETS

    vae = VAEConfig.from_official(official_vae_config("0.9.5"))
    bf16 = torch.bfloat16
    assert TRANSFORMER_13B.inner_dim == 4096

    def item(**kw: Any) -> Any:
        return BatchItem(index=0, prompt="x", seed=0, height=512, width=768, num_frames=121, frame_rate=30, **kw)

    def item_estimator(it: Any, preset: Any, transformer: Any, vae: Any, **kw: Any) -> Any:
        # the CLI's shape of an item: its scales over every pass, its (image) conditions one frame each
        shape = RunShape.of_preset(preset, guidance_scale=it.guidance_scale, stg_scale=it.stg_scale,
                                   conditions=[(c.frame, 1) for c in it.conditions])
        return request_estimator(shape, transformer, vae, **kw)

    def text_kv(branches: int) -> int:  # the 13B's 48 blocks' keys and values of 256 text tokens per branch
        return 2 * 48 * branches * 256 * 4096 * 2

    single = PRESETS["ltxv-2b-0.9.5"]
    est = item_estimator(item(guidance_scale=1.0, stg_scale=0.0), single, TRANSFORMER_13B, vae,
                         weights_bytes=0, dtype=bf16)(512, 768, 121)
    assert est.transformer_bytes == 18 * 1 * 6144 * 4096 * 2 + text_kv(1)  # CFG and STG off: one branch
    # multi-scale: 512 x 768 -> first pass 320 x 480 (2/3, down to a multiple of 32) -> second pass 640 x 960
    multi = PRESETS["ltxv-13b-0.9.8-dev"]
    est = item_estimator(item(guidance_scale=3.0, stg_scale=1.0), multi, TRANSFORMER_13B, vae,
                         weights_bytes=0, dtype=bf16)(512, 768, 121)
    assert est.transformer_bytes == 18 * 3 * (16 * 20 * 30) * 4096 * 2 + text_kv(3)
    assert est.vae_bytes == decode_memory_bytes(vae, (1, 128, 16, 20, 30), bf16)
    # an image keyframe at frame 40: one more latent frame of tokens (a video's would add two), per-token timesteps
    cond = item(guidance_scale=3.0, stg_scale=0.0, conditions=[Condition("k.png", 40, 1.0)])
    est = item_estimator(cond, single, TRANSFORMER_13B, vae, weights_bytes=0, dtype=bf16)(512, 768, 121)
    assert est.transformer_bytes == 34 * 2 * (6144 + 16 * 24) * 4096 * 2 + text_kv(2)
    # --dtype fp8 keeps the blocks' linear weights at one byte each
    tiny = tiny_pipeline()
    linear = sum(p.numel() for n, p in tiny.transformer.named_parameters()
                 if n.startswith("transformer_blocks.") and n.endswith(".weight") and p.ndim == 2)
    total = sum(t.numel() for m in (tiny.transformer, tiny.vae) for t in m.state_dict().values())
    assert linear > 0
    assert model_bytes(assets.good, bf16) == 2 * total
    assert model_bytes(assets.good, bf16, fp8=True) == 2 * total - linear


def test_memory_estimate_above_free_memory_exits_5_before_loading(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, loads: list[Any]
) -> None:
    from ltxcli.memory.plan import estimate_memory
    from ltxcli.memory.weights import spec_parts
    from ltxcli.spec import resolve_spec

    tcfg, vcfg, parts = spec_parts(resolve_spec("tiny"), torch.float32)
    wb = parts.total

    def peak(h: int, w: int, f: int) -> int:
        return estimate_memory(tcfg, vcfg, height=h, width=w, num_frames=f, dtype=torch.float32,
                                         weights_bytes=wb, branches=3).peak_bytes

    free = (peak(64, 96, 9) + peak(128, 192, 17)) // 2  # the small size fits, the large one does not
    monkeypatch.setattr(preflight, "free_memory_bytes", lambda device: free)
    # untiled decodes, as peak() estimates them (the default --vae-tiling auto would tile the big one to fit)
    big = ["generate", "a cat", "--model", "tiny", "-o", "big.mp4", "--height", "128", "--width", "192",
           "--num-frames", "17", "--steps", "1", "--vae-tiling", "off"]
    line = assert_one_error_line(ltx(*big), 5)
    assert "this run needs about" in line and "on cpu but" in line and "LTX_NO_MEMORY_CHECK=1" in line
    assert loads == [] and not (cli_env / "big.mp4").exists()
    # the suggested smaller size passes the same check and runs
    m = re.search(r"--height (\d+) --width (\d+) --num-frames (\d+)", line)
    assert m is not None, line
    h, w, f = (int(v) for v in m.groups())
    assert (h, w, f) != (128, 192, 17) and h <= 128 and w <= 192 and f <= 17
    assert peak(h, w, f) <= free < peak(128, 192, 17)
    ok = ltx("generate", "a cat", "--model", "tiny", "-o", "small.mp4", "--height", str(h), "--width", str(w),
             "--num-frames", str(f), "--steps", "1", "--vae-tiling", "off")
    assert ok.exit_code == 0, ok.stderr
    assert probe(cli_env / "small.mp4")["frames"] == f
    # weights that alone exceed the free memory
    monkeypatch.setattr(preflight, "free_memory_bytes", lambda device: wb // 2)
    assert "the weights alone need" in assert_one_error_line(ltx(*big), 5)
    # the check can be switched off
    monkeypatch.setenv(preflight.NO_MEMORY_CHECK_ENV, "1")
    assert ltx(*big).exit_code == 0 and probe(cli_env / "big.mp4")["frames"] == 17


# ================================================================================================ 2. inputs


def _input_cases(d: Path, assets: SimpleNamespace) -> dict[str, tuple[Path, str]]:
    """name -> (file, text the error line must contain)."""
    ok = (assets.dir / "ok.png").read_bytes()
    clip = (assets.dir / "clip17.mp4").read_bytes()
    cases = {
        "missing": (d / "missing.png", "no such file"),
        "empty": (d / "empty.png", "file is empty"),
        "truncated-png": (d / "trunc.png", "damaged or truncated image"),
        # Pillow does not know it; FFmpeg's text ("tty") demuxer opens it but nothing decodes: no media at all
        "text-as-png": (d / "notes.png", "neither an image Pillow can read nor a video FFmpeg can read"),
        "noise-as-mp4": (d / "noise.mp4", "not a video format FFmpeg can read"),
        "header-only-mp4": (d / "head.mp4", "contains no video stream"),
        "damaged-mp4": (d / "damaged.mp4", "is damaged or truncated: no frame decodes"),
        "folder": (d / "folder.png", "is a folder"),
        "huge-120mp": (d / "huge.png", "above the limit of 100,000,000 pixels"),
        "bomb-900mp": (d / "bomb.png", "refusing to decode"),
        "one-pixel": (d / "dot.png", "too small to crop"),
        # cropped to the video's aspect ratio, not its own (the check passed every picture for a while)
        "sliver": (d / "sliver.png", "a 2x1000 picture is too small to crop to the 96x64 aspect ratio"),
    }
    (d / "empty.png").write_bytes(b"")
    (d / "trunc.png").write_bytes(ok[: len(ok) // 2])
    (d / "notes.png").write_text("this is not a picture\n")
    (d / "noise.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (d / "head.mp4").write_bytes(clip[:200])
    (d / "damaged.mp4").write_bytes(clip[:2500])
    (d / "folder.png").mkdir()
    (d / "huge.png").write_bytes(png_header_only(12_000, 10_000))
    (d / "bomb.png").write_bytes(png_header_only(30_000, 30_000))
    Image.new("RGB", (1, 1)).save(d / "dot.png")
    Image.new("RGB", (2, 1000)).save(d / "sliver.png")
    return cases


@pytest.mark.parametrize("case", ["missing", "empty", "truncated-png", "text-as-png", "noise-as-mp4",
                                  "header-only-mp4", "damaged-mp4", "folder", "huge-120mp", "bomb-900mp",
                                  "one-pixel", "sliver"])
@pytest.mark.parametrize("how", ["i2v", "condition"])
def test_unreadable_inputs_exit_6_before_loading(
    cli_env: Path, assets: SimpleNamespace, loads: list[Any], case: str, how: str
) -> None:
    path, needle = _input_cases(cli_env, assets)[case]
    if how == "i2v":
        result = ltx("i2v", str(path), "a cat", "--model", "tiny", "-o", "out/o.mp4", *SMALL)
    else:
        result = ltx("generate", "a cat", "--model", "tiny", "-o", "out/o.mp4", "--condition", f"{path}:0", *SMALL)
    line = assert_one_error_line(result, 6)
    assert str(path) in line and needle in line, line
    assert loads == [] and not (cli_env / "out").exists()


def test_unusual_images_and_videos_generate(cli_env: Path, assets: SimpleNamespace) -> None:
    """EXIF rotation, alpha, 16-bit, palette, grey, 1-bit, CMYK, odd sizes, too few frames: all produce videos."""
    rng = np.random.default_rng(2)
    rgb = assets.rgb
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    (cli_env / "exif.png").write_bytes(png_bytes(Image.fromarray(rgb), exif=exif))
    rgba = np.dstack([rgb, rng.integers(0, 256, rgb.shape[:2], dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(cli_env / "alpha.png")
    grey16 = rng.integers(0, 65536, (30, 50), dtype=np.uint16)
    Image.fromarray(grey16).save(cli_env / "grey16.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(cli_env / "palette.png",
                                                                                      transparency=0)
    Image.fromarray(rgb).convert("L").save(cli_env / "grey.png")
    Image.fromarray(rgb).convert("1").save(cli_env / "bits.png")
    Image.fromarray(rgb).convert("CMYK").save(cli_env / "cmyk.jpg")
    Image.fromarray(rgb[:33, :47]).save(cli_env / "odd.png")
    write_ffv1(cli_env / "odd.mkv", rng.integers(0, 256, (11, 33, 47, 3), dtype=np.uint8))
    media.write_video(cli_env / "two.mp4", torch.rand(2, 64, 96, 3), 24)
    media.write_video(cli_env / "one.mp4", torch.rand(1, 64, 96, 3), 24)
    clip = (assets.dir / "clip17.mp4").read_bytes()
    (cli_env / "cut.mp4").write_bytes(clip[: len(clip) * 6 // 10])  # FFmpeg decodes the first frames only

    rows = [{"prompt": "a cat", "image": name} for name in
            ("exif.png", "alpha.png", "grey16.png", "palette.png", "grey.png", "bits.png", "cmyk.jpg", "odd.png",
             "odd.mkv", "two.mp4", "one.mp4")]
    rows.append({"prompt": "a cat", "conditions": ["ok.png:0", "cut.mp4:8:0.7"], "num_frames": 25})
    (cli_env / "ok.png").symlink_to(assets.dir / "ok.png")
    (cli_env / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = ltx("generate", "--batch", "items.jsonl", "--model", "tiny", "-o", "out/{index:02d}.mp4", "--seed", "1",
            "--height", "64", "--width", "96", "--num-frames", "9", "--steps", "1", "--json")
    assert r.exit_code == 0, r.stderr
    objs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [o["status"] for o in objs] == ["ok"] * len(rows)
    for o, row in zip(objs, rows, strict=True):
        info = probe(cli_env / o["path"])
        assert (info["frames"], info["width"], info["height"]) == (row.get("num_frames", 9), 96, 64)
    # the truncated video is reported (one warning line) and used with the frames that decode
    warning = [x for x in r.stderr.splitlines() if x.startswith("warning:")]
    assert len(warning) == 4 and "cut.mp4" in warning[2] and "lists 17 frames" in warning[2], r.stderr
    # a video cut to 8k + 1 frames says so too: 2 frames -> 1, the 8 that decode -> 1
    assert "condition two.mp4: uses its first 1 of 2 frames" in warning[1]
    assert "condition cut.mp4: uses its first 1 of 8 frames" in warning[3]
    # the 11-frame Matroska (no frame count) in a 9-frame video is cut, and says so (issue 14)
    assert "condition odd.mkv: trimmed to its first 9 of at least 10 frames (only 9 fit from frame 0" in warning[0]

    # what "handled correctly" means for the pixels (hand-derived from the stored arrays)
    upright = media.load_image(cli_env / "exif.png")[0].numpy()
    assert np.array_equal(upright, np.rot90(rgb, k=-1).astype(np.float32) / 255)  # EXIF orientation applied
    a = rgba[..., 3:].astype(np.float32) / 255
    assert np.allclose(media.load_image(cli_env / "alpha.png")[0].numpy(), rgb / 255 * a, atol=1e-6)  # over black
    assert np.allclose(media.load_image(cli_env / "grey16.png")[0, ..., 0].numpy(), grey16 / 65535, atol=1e-7)


# =========================================================================================== 3. checkpoints


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_broken_checkpoints_one_line_naming_the_file(cli_env: Path, assets: SimpleNamespace, case: str) -> None:
    make, needle = CHECKPOINT_CASES[case]
    path = cli_env / f"{case}.safetensors"
    path.write_bytes(make(assets.good.read_bytes()))
    line = assert_one_error_line(ltx("generate", "a cat", "--model", str(path), "--text-encoder", str(assets.te),
                              "-o", "o.mp4", *SMALL), 6)
    assert str(path) in line and needle in line, line
    assert files_under(cli_env) == [f"{case}.safetensors"]


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth", ".ckpt"])
@pytest.mark.parametrize("role", ["--model", "--upsampler", "--text-encoder"])
@pytest.mark.parametrize("memory_check", ["on", "off"])
def test_pickle_files_are_refused_never_unpickled(
    cli_env: Path, assets: SimpleNamespace, loads: list[Any], monkeypatch: pytest.MonkeyPatch, suffix: str,
    role: str, memory_check: str
) -> None:
    if memory_check == "off":
        monkeypatch.setenv(preflight.NO_MEMORY_CHECK_ENV, "1")  # the headers are still read before loading
    marker = cli_env / "UNPICKLED"
    payload = pickle.dumps({"state_dict": _Boom(marker)})
    if role == "--text-encoder":
        te = cli_env / "te_bin"
        for sub in ("text_encoder", "tokenizer"):
            (te / sub).mkdir(parents=True)
            for f in (assets.te / sub).iterdir():
                if f.suffix != ".safetensors":
                    (te / sub / f.name).write_bytes(f.read_bytes())
        evil = te / "text_encoder" / f"pytorch_model{suffix}"
        args = ["--model", str(assets.good), "--text-encoder", str(te)]
        where = te / "text_encoder"
    else:
        evil = cli_env / f"evil{suffix}"
        # an upsampler is used by a multi-scale model alone (a one-pass one ignores it, never reading it: below)
        multi = cli_env / "ltxv-2b-0.9.8-distilled.safetensors"
        if role == "--upsampler":
            multi.write_bytes(assets.good.read_bytes())
        args = [role, str(evil)] + (["--model", str(multi), "--text-encoder", str(assets.te)]
                                     if role == "--upsampler" else [])
        where = evil
    evil.write_bytes(payload)
    line = assert_one_error_line(ltx("generate", "a cat", *args, "-o", "o.mp4", *SMALL), 6)
    assert str(where) in line and "pickle" in line, line
    assert not marker.exists() and loads == [] and not (cli_env / "o.mp4").exists()


def test_an_ignored_pickle_upsampler_is_never_read(cli_env: Path, assets: SimpleNamespace, loads: list[Any]) -> None:
    """A one-pass model runs no upsampler: one given is said to be ignored and never opened (a used one is refused:
    test_pickle_files_are_refused_never_unpickled); a path that does not exist is still a usage error."""
    marker = cli_env / "UNPICKLED"
    (cli_env / "evil.pt").write_bytes(pickle.dumps({"state_dict": _Boom(marker)}))
    model = ["--model", str(assets.good), "--text-encoder", str(assets.te)]
    r = ltx("generate", "a cat", *model, "--upsampler", "evil.pt", "-o", "o.mp4", *SMALL)
    assert r.exit_code == 0 and "warning: --upsampler is ignored:" in r.stderr, r.stderr
    assert not marker.exists() and len(loads) == 1
    line = assert_one_error_line(ltx("generate", "a cat", *model, "--upsampler", "nope.pt", "-o", "p.mp4", *SMALL), 2)
    assert "--upsampler" in line and "nope.pt" in line, line


def test_broken_text_encoder_weights(cli_env: Path, assets: SimpleNamespace, loads: list[Any]) -> None:
    te = cli_env / "te"
    for f in assets.te.rglob("*"):
        if f.is_file():
            (te / f.relative_to(assets.te)).parent.mkdir(parents=True, exist_ok=True)
            data = f.read_bytes()
            (te / f.relative_to(assets.te)).write_bytes(data[: len(data) // 2] if f.suffix == ".safetensors" else data)
    line = assert_one_error_line(ltx("generate", "a cat", "--model", str(assets.good), "--text-encoder", str(te), "-o",
                              "o.mp4", *SMALL), 6)
    assert "te/text_encoder/model.safetensors" in line and "points outside the file" in line
    assert loads == []


def _scan_for_unsafe_calls(source: str, name: str) -> list[str]:
    """Unsafe deserialisation or code execution in one module's source (AST, not text, so comments don't count)."""
    found: list[str] = []

    def dotted(node: ast.AST) -> str:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            return f"{dotted(node.value)}.{node.attr}"
        return ""

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in mods:
                if m.split(".")[0] in {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}:
                    found.append(f"{name}:{node.lineno}: import {m}")
        if not isinstance(node, ast.Call):
            continue
        fn = dotted(node.func)
        kw = {k.arg: k.value for k in node.keywords}

        def is_const(key: str, value: object, kw: dict[str | None, ast.expr] = kw) -> bool:
            v = kw.get(key)
            return isinstance(v, ast.Constant) and v.value is value

        if fn in {"eval", "exec", "compile", "__import__"}:
            found.append(f"{name}:{node.lineno}: {fn}()")
        if (fn == "torch.load" or fn.endswith(".torch.load")) and not is_const("weights_only", True):
            found.append(f"{name}:{node.lineno}: torch.load without weights_only=True")
        if fn in {"np.load", "numpy.load"} and "allow_pickle" in kw and not is_const("allow_pickle", False):
            found.append(f"{name}:{node.lineno}: numpy.load(allow_pickle=...)")
        if fn in {"yaml.load", "yaml.unsafe_load", "yaml.full_load"}:
            found.append(f"{name}:{node.lineno}: {fn}")
        if "trust_remote_code" in kw and not is_const("trust_remote_code", False):
            found.append(f"{name}:{node.lineno}: trust_remote_code not False")
        if "shell" in kw and not is_const("shell", False):
            found.append(f"{name}:{node.lineno}: shell=")
    return found


def test_source_never_unpickles_or_executes_file_content() -> None:
    # the scanner itself finds what it looks for
    bad = ("import pickle\nimport torch\nx = torch.load(f)\ny = torch.load(f, weights_only=False)\neval(s)\n"
           "m.from_pretrained(p, trust_remote_code=True)\nsubprocess.run(c, shell=True)\n")
    assert len(_scan_for_unsafe_calls(bad, "bad")) == 6
    assert _scan_for_unsafe_calls("torch.load(f, weights_only=True)\nm.eval()\nre.compile('x')\n", "ok") == []
    sources = sorted((REPO_ROOT / "ltxcli").rglob("*.py"))
    assert len(sources) > 20
    problems = [p for f in sources for p in _scan_for_unsafe_calls(f.read_text(encoding="utf-8"), f.name)]
    assert problems == []
    text = (REPO_ROOT / "ltxcli" / "text.py").read_text()
    assert '"trust_remote_code": False' in text and "trust_remote_code=False" in text


# ====================================================================================== 4. files and paths


def _disk_full_mp4(temp: Path, *args: Any) -> None:
    temp.write_bytes(b"\x00" * 1000)
    raise OSError(errno.ENOSPC, "No space left on device")


def _disk_full_png(target: Path, *args: Any) -> None:
    if target.name == "frame_00003.png":
        raise OSError(errno.ENOSPC, "No space left on device")
    target.write_bytes(b"png")


@pytest.mark.parametrize("kind", ["mp4", "frames"])
def test_disk_full_leaves_no_partial_output(cli_env: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    if kind == "mp4":
        monkeypatch.setattr(media.write, "_encode", _disk_full_mp4)
        out = ["-o", "out/o.mp4"]
    else:
        monkeypatch.setattr(media.write, "_save_png", _disk_full_png)
        out = ["--frames-dir", "out/frames"]
    line = assert_one_error_line(ltx("generate", "a cat", "--model", "tiny", *out, *SMALL), 1)
    assert "cannot write out/" in line and "no space left on device" in line
    assert files_under(cli_env) == []


def test_read_only_folder_is_refused_before_work(cli_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                 loads: list[Any]) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(runner, "tempfile", SimpleNamespace(mkstemp=refuse))  # what the OS answers on a ro mount
    line = assert_one_error_line(ltx("generate", "a cat", "--model", "tiny", "-o", "ro/o.mp4", *SMALL), 1)
    assert "cannot write ro/o.mp4" in line and "read-only file system" in line and loads == []


def test_a_folder_that_takes_no_new_files_is_named_as_such(cli_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                          loads: list[Any]) -> None:
    """-o /proc/x.mp4 said "cannot write /proc/x.mp4: /proc: no such file or directory": /proc exists, it only
    takes no new file (mkstemp's ENOENT there). The line says what failed, then the system's reason."""
    def enoent(*args: Any, **kwargs: Any) -> Any:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    (cli_env / "d").mkdir()
    monkeypatch.setattr(runner, "tempfile", SimpleNamespace(mkstemp=enoent))  # what /proc answers
    line = assert_one_error_line(ltx("generate", "a cat", "--model", "tiny", "-o", "d/x.mp4", *SMALL), 1)
    assert line == "error: cannot write d/x.mp4: cannot create files in d (no such file or directory)"
    assert loads == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_real_permissions(cli_env: Path, loads: list[Any]) -> None:
    (cli_env / "ro").mkdir(mode=0o555)
    try:
        line = assert_one_error_line(ltx("generate", "a cat", "--model", "tiny", "-o", "ro/o.mp4", *SMALL), 1)
    finally:
        (cli_env / "ro").chmod(0o755)
    assert "permission denied" in line and loads == [] and files_under(cli_env / "ro") == []


def test_folder_turning_read_only_during_the_run(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(temp: Path, *args: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(media.write, "_encode", denied)
    line = assert_one_error_line(ltx("generate", "a cat", "--model", "tiny", "-o", "o.mp4", *SMALL), 1)
    assert "cannot write o.mp4: permission denied" in line and files_under(cli_env) == []


def test_missing_parent_folders(cli_env: Path, loads: list[Any]) -> None:
    ok = ltx("generate", "a cat", "--model", "tiny", "-o", "a/b/c/o.mp4", *SMALL)  # created, as mkdir -p
    assert ok.exit_code == 0 and probe(cli_env / "a/b/c/o.mp4")["frames"] == 9
    (cli_env / "file.txt").write_text("not a folder")
    loads.clear()
    line = assert_one_error_line(ltx("generate", "a cat", "--model", "tiny", "-o", "file.txt/sub/o.mp4", *SMALL), 1)
    assert "file.txt is not a folder" in line and loads == []


@pytest.mark.parametrize("name", ["../../escape.safetensors", "/etc/passwd", "a/../../b.safetensors",
                                  "C:/x.safetensors", "a\\..\\b.safetensors", "ok/./x.safetensors"])
def test_registry_file_names_cannot_escape(name: str) -> None:
    entry = {"kind": "upsampler", "description": "x", "repo": "acme/up", "files": [name]}
    data = {"schema": 1, "weights": {"up": entry, "m": {"kind": "model", "description": "m", "repo": "acme/m",
                                                        "files": ["m.safetensors"], "preset": "p", "default": True}}}
    with pytest.raises(weights.UnsafePathError):
        weights.parse_registry(data)


def test_hub_listing_cannot_escape_the_weights_folder(hub: Any, cli_env: Path, assets: SimpleNamespace) -> None:
    for f in sorted(p for p in assets.te.rglob("*") if p.is_file()):
        hub.add("PixArt-alpha/PixArt-XL-2-1024-MS", f.relative_to(assets.te).as_posix(), f.read_bytes())
    hub.add("PixArt-alpha/PixArt-XL-2-1024-MS", "text_encoder/../../../../escape.json", b"{}")
    line = assert_one_error_line(ltx("weights", "pull", "t5-xxl", "--quiet"), 1)
    assert "unsafe file name" in line and "escape.json" in line
    assert hub.resolve_requests() == []  # refused from the listing, before any download
    assert not list(cli_env.rglob("escape.json")) and not list(cli_env.parent.glob("escape.json"))


# ========================================================================================= 5. interruption


def _registry_model_on_hub(hub: Any, assets: SimpleNamespace) -> Any:
    model = hub.add("Lightricks/LTX-Video", "ltx-video-2b-v0.9.safetensors", assets.good.read_bytes())
    for f in sorted(p for p in assets.te.rglob("*") if p.is_file()):
        hub.add("PixArt-alpha/PixArt-XL-2-1024-MS", f.relative_to(assets.te).as_posix(), f.read_bytes())
    return model


REGISTRY_RUN = ["generate", "a cat", "--model", "ltxv-2b-0.9", "--stg-scale", "0", "--seed", "2", "-o", "o.mp4",
                *SMALL]


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, phase: str, file: str) -> None:
    real = weights.events.FileTask.advance

    def advance(self: Any, n: int) -> None:
        real(self, n)
        if self.phase == phase and self.file == file:
            raise KeyboardInterrupt

    monkeypatch.setattr(weights.events.FileTask, "advance", advance)


@pytest.fixture(params=["folder", "hub-cache"])
def location(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Weights in a plain LTX_WEIGHTS_DIR folder, or in the huggingface_hub cache (HF_HOME/hub)."""
    if request.param == "hub-cache":
        monkeypatch.delenv("LTX_WEIGHTS_DIR")
    return request.param


MODEL_FILE = "ltx-video-2b-v0.9.safetensors"


def test_ctrl_c_during_download_then_the_next_run_downloads_again(
    hub: Any, cli_env: Path, assets: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, location: str
) -> None:
    _registry_model_on_hub(hub, assets)
    with monkeypatch.context() as m:
        _interrupt_at(m, "download", MODEL_FILE)
        assert_one_error_line(ltx(*REGISTRY_RUN, "--quiet"), 130)
    assert not (cli_env / "o.mp4").exists()
    # the partial download is kept for the next run, under a name nothing loads
    assert weights.path("ltxv-2b-0.9") is None and weights.status("ltxv-2b-0.9").state == "partial"
    assert not list(cli_env.rglob(MODEL_FILE))
    (partial,) = [*cli_env.rglob("*.incomplete"), *cli_env.rglob(MODEL_FILE + ".partial")]
    done = partial.stat().st_size
    assert 0 < done < len(assets.good.read_bytes())
    again = ltx(*REGISTRY_RUN)
    model_gets = [g.range for g in hub.resolve_requests("GET") if g.path.endswith(MODEL_FILE)]
    assert model_gets == [None, f"bytes={done}-"] and not partial.exists()  # resumed where it stopped
    assert again.exit_code == 0, again.stderr
    local = weights.path("ltxv-2b-0.9")
    assert local is not None and local.name == MODEL_FILE and local.read_bytes() == assets.good.read_bytes()
    assert (location == "hub-cache") == ((cli_env / "hf" / "hub") in local.parents)
    assert probe(cli_env / "o.mp4")["frames"] == 9


def test_ctrl_c_while_verifying_a_bad_download_never_loads_it(
    hub: Any, cli_env: Path, assets: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, loads: list[Any],
    location: str
) -> None:
    model = _registry_model_on_hub(hub, assets)
    good = assets.good.read_bytes()
    model.served = bytes(reversed(good))  # the Hub sends damaged bytes (same size, same advertised hash)
    with monkeypatch.context() as m:
        _interrupt_at(m, "verify", MODEL_FILE)
        assert_one_error_line(ltx(*REGISTRY_RUN, "--quiet"), 130)
    local = weights.path("ltxv-2b-0.9")
    assert local is not None and local.read_bytes() == model.served and loads == []  # complete, never verified
    model.served = None
    r = ltx(*REGISTRY_RUN)
    assert r.exit_code == 0, r.stderr  # loading the damaged copy would have failed with exit 6
    assert "verifying ltxv-2b-0.9" in r.stderr
    local = weights.path("ltxv-2b-0.9")
    assert local is not None and local.read_bytes() == good
    assert len(loads) == 1 and probe(cli_env / "o.mp4")["frames"] == 9


def test_an_ignored_registry_upsampler_is_neither_downloaded_nor_loaded(
    hub: Any, cli_env: Path, assets: SimpleNamespace, loads: list[Any]
) -> None:
    """--upsampler on a one-pass model is ignored (a warning says so), yet a registry one was pulled (and loaded)
    with the model; only the weights the run uses are pulled now. A local file's checks: test_pickle_files_..."""
    from ltxcli.loading import save_upsampler
    from ltxcli.models.configs import UpsamplerConfig
    from ltxcli.models.upsampler import LatentUpsampler
    from ltxcli.tiny import LATENT_CHANNELS

    _registry_model_on_hub(hub, assets)
    up, up_file = "ltxv-spatial-upscaler-0.9.8", "ltxv-spatial-upscaler-0.9.8.safetensors"
    save_upsampler(cli_env / "up.safetensors", LatentUpsampler(UpsamplerConfig(
        in_channels=LATENT_CHANNELS, mid_channels=32, num_blocks_per_stage=1)))  # a usable one: the run would load it
    hub.add("Lightricks/LTX-Video", up_file, (cli_env / "up.safetensors").read_bytes())
    r = ltx(*REGISTRY_RUN, "--upsampler", up)
    assert r.exit_code == 0, r.stderr
    assert "warning: --upsampler is ignored: ltxv-2b-0.9 runs one pass at the requested size" in r.stderr
    pulled = [g.path.rsplit("/", 1)[-1] for g in hub.resolve_requests("GET")]
    assert MODEL_FILE in pulled and up_file not in pulled, pulled  # the model was pulled, the upsampler not
    assert weights.status(up).state == "missing" and len(loads) == 1
    assert probe(cli_env / "o.mp4")["frames"] == 9


def test_a_multi_scale_model_s_upsampler_is_pulled_only_for_a_job_that_runs_both_passes(
    hub: Any, cli_env: Path, assets: SimpleNamespace, loads: list[Any]
) -> None:
    """A video in several windows runs one pass per window (no upsampler), yet a multi-scale model's default
    upsampler was pulled (GBs for a real one) and loaded for a job of such videos alone. It is now pulled only when
    an item runs both passes: here a batch line made in one generation; a given --upsampler unused is warned of."""
    from ltxcli.loading import save_upsampler
    from ltxcli.models.configs import UpsamplerConfig
    from ltxcli.models.upsampler import LatentUpsampler
    from ltxcli.tiny import LATENT_CHANNELS

    up, up_file = "ltxv-spatial-upscaler-0.9.8", "ltxv-spatial-upscaler-0.9.8.safetensors"
    save_upsampler(cli_env / "up.safetensors", LatentUpsampler(UpsamplerConfig(
        in_channels=LATENT_CHANNELS, mid_channels=32, num_blocks_per_stage=1)))
    hub.add("Lightricks/LTX-Video", up_file, (cli_env / "up.safetensors").read_bytes())
    multi = cli_env / "ltxv-2b-0.9.8-distilled.safetensors"  # (its file name: the multi-scale preset)
    multi.write_bytes(assets.good.read_bytes())
    model = ["--model", str(multi), "--text-encoder", str(assets.te), "--seed", "2"]
    windows = {"prompt": "a cat | a dog", "window": 16, "overlap": 8, "num_frames": 17}  # two windows
    Path("w.jsonl").write_text(json.dumps(windows) + "\n" + json.dumps({**windows, "output": "b.mp4"}) + "\n")
    r = ltx("generate", "--batch", "w.jsonl", *model, "--height", "64", "--width", "96", "--steps", "1", "-o", "o.mp4")
    assert r.exit_code == 0, r.stderr
    assert hub.resolve_requests("GET") == [] and weights.status(up).state == "missing"
    assert probe(cli_env / "b.mp4")["frames"] == 17
    r = ltx("generate", "a cat | a dog", "--window", "16", "--overlap", "8", "--num-frames", "17", *model,
            "--upsampler", str(cli_env / "up.safetensors"), *SMALL[:4], "--steps", "1", "-o", "c.mp4")
    assert r.exit_code == 0 and "warning: --upsampler is ignored: every video is made in windows" in r.stderr, r.stderr
    # a line made in one generation (its windowed prompt fits one window: both passes) needs it
    Path("m.jsonl").write_text(json.dumps({**windows, "output": "d.mp4"}) + "\n"
                               + json.dumps({**windows, "num_frames": 9, "output": "e.mp4"}) + "\n")
    r = ltx("generate", "--batch", "m.jsonl", *model, "--height", "64", "--width", "96", "--steps", "1")
    assert r.exit_code == 0, r.stderr
    assert [g.path.rsplit("/", 1)[-1] for g in hub.resolve_requests("GET")] == [up_file]
    assert probe(cli_env / "e.mp4")["frames"] == 9 and len(loads) == 3


def _interrupt_denoising(monkeypatch: pytest.MonkeyPatch, at_call: int) -> None:
    calls = Counter()
    real = cli_common.GenerationProgress.__call__

    def progress(self: Any, stage: str, done: int, total: int) -> None:
        real(self, stage, done, total)
        if stage == "denoise" and done:  # the steps (each pass also reports its start, done=0)
            calls["n"] += 1
            if calls["n"] == at_call:
                raise KeyboardInterrupt

    monkeypatch.setattr(cli_common.GenerationProgress, "__call__", progress)


def _interrupt_encoding(temp: Path, *args: Any) -> None:
    temp.write_bytes(b"half a video")
    raise KeyboardInterrupt


def _interrupt_png(target: Path, *args: Any) -> None:
    if target.name == "frame_00004.png":
        raise KeyboardInterrupt
    target.write_bytes(b"png")


@pytest.mark.parametrize("where", ["denoising", "encoding", "png-frames"])
def test_ctrl_c_during_a_run_exits_130_and_leaves_nothing(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    out = ["-o", "out/o.mp4"]
    if where == "denoising":
        _interrupt_denoising(monkeypatch, at_call=2)
    elif where == "encoding":
        monkeypatch.setattr(media.write, "_encode", _interrupt_encoding)
    else:
        monkeypatch.setattr(media.write, "_save_png", _interrupt_png)
        out = ["--frames-dir", "out/frames"]
    line = assert_one_error_line(ltx("generate", "a cat", "--model", "tiny", *out, *SMALL[:-1], "3"), 130)
    assert "interrupted" in line
    assert files_under(cli_env) == []


HOOK = """
import os, pathlib
if os.environ.get("LTX_TEST_MARKER"):
    import ltxcli.cli.common as c
    real = c.GenerationProgress.__call__
    def call(self, stage, done, total):
        real(self, stage, done, total)
        if stage == "denoise" and done == 1:
            pathlib.Path(os.environ["LTX_TEST_MARKER"]).touch()
    c.GenerationProgress.__call__ = call
"""


@pytest.mark.parametrize(("name", "code", "said"), [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated"),
                                                    ("SIGHUP", 129, "hung up")])
def test_real_sigint_during_denoising(tmp_path: Path, name: str, code: int, said: str) -> None:
    """A real SIGINT (or SIGTERM: kill, timeout, a scheduler; or SIGHUP: the terminal or SSH session closed; each
    used to leave the partial output behind and say nothing) to a real ``python -m ltxcli`` process (a
    sitecustomize hook only says when denoising began)."""
    import signal
    import subprocess
    import time

    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(HOOK)
    marker = tmp_path / "denoising"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'hook'}{os.pathsep}{REPO_ROOT}", "OMP_NUM_THREADS": "1",
           "LTX_WEIGHTS_DIR": str(tmp_path / "weights"), "LTX_TEST_MARKER": str(marker)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ltxcli", "generate", "a cat", "--model", "tiny", "-o", str(tmp_path / "out" / "o.mp4"),
         "--height", "64", "--width", "96", "--num-frames", "9", "--steps", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
        # Ctrl-C and a hangup as at a terminal (a background job of a shell may inherit SIGINT ignored, and one
        # started under nohup SIGHUP: the run would finish)
        preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGHUP)],
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.stderr.read() if proc.poll() is not None else "denoising never started"
        proc.send_signal(getattr(signal, name))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert err.strip().splitlines() == [f"error: {said}; partial outputs were removed"] and out == ""
    assert not (tmp_path / "out").exists()


def test_ctrl_c_in_a_batch_keeps_the_finished_videos(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _interrupt_denoising(monkeypatch, at_call=4)  # step 1 of the second item (steps=3)
    (cli_env / "p.txt").write_text("a cat\na dog\na bird\n")
    r = ltx("generate", "--batch", "p.txt", "--model", "tiny", "-o", "out/{index}.mp4", *SMALL[:-1], "3")
    assert r.exit_code == 130 and r.stdout.strip() == "out/0.mp4"
    assert r.stderr.strip().splitlines()[-1].startswith("error: interrupted")
    assert files_under(cli_env) == ["out/0.mp4", "p.txt"] and probe(cli_env / "out/0.mp4")["frames"] == 9


# ====================================================================================== 6. numerical faults


@pytest.mark.parametrize(("key", "needle", "checks_made"), [
    # the latents checked once, after the 4-step loop
    ("model.diffusion_model.proj_out.bias", "the latents contain NaN or Inf after denoising", 1),
    # the same (the decoder takes them as checked: no second sync for the same latents), then the decoded video
    ("vae.decoder.conv_out.conv.bias", "the decoded video contains NaN or Inf", 2),
])
def test_nan_weights_exit_1_with_the_likely_cause(
    cli_env: Path, assets: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, key: str, needle: str, checks_made: int
) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(assets.good)
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    meta = json.loads(assets.good.read_bytes()[8 : 8 + struct.unpack("<Q", assets.good.read_bytes()[:8])[0]])
    save_file(tensors, cli_env / "nan.safetensors", metadata=meta["__metadata__"])
    checks: list[str] = []
    real_isfinite = torch.isfinite

    def counting_isfinite(x: torch.Tensor) -> torch.Tensor:
        checks.append(sys._getframe(1).f_globals.get("__name__", ""))
        return real_isfinite(x)

    monkeypatch.setattr(torch, "isfinite", counting_isfinite)
    line = assert_one_error_line(ltx("generate", "a cat", "--model", "nan.safetensors", "--text-encoder", str(assets.te),
                              "-o", "o.mp4", *SMALL[:-1], "4"), 1)
    assert needle in line and "weights verify" in line, line
    assert checks == ["ltxcli.frames"] * checks_made  # (frames.check_latents) after each stage, never inside the loop
    assert files_under(cli_env) == ["nan.safetensors"]


# ================================================================================ 7. random option combinations


_IMG, _VID, _BAD = "IMG", "VID", "BAD"


def _opt(name: str, valid: list[Any], invalid: list[Any]) -> st.SearchStrategy[list[str]]:
    """Omitted (45 %), a valid value (45 %) or an invalid one (10 %): about half the runs succeed."""
    def pick(t: tuple[int, Any, Any]) -> list[str]:
        roll, good, bad = t
        return [] if roll < 9 else [f"{name}={good if roll < 18 else bad}"]

    return st.tuples(st.integers(0, 19), st.sampled_from(valid), st.sampled_from(invalid)).map(pick)


OPTIONS = st.tuples(
    _opt("--height", [32, 64, 96], [0, -32, 33, 4096, 10**9, "abc"]),
    _opt("--width", [32, 48, 96], [0, -1, 35, 2**40]),
    _opt("--num-frames", [1, 2, 9, 10], [0, -1, 100_000, "nine"]),
    _opt("--frame-rate", [24, 12.5, 29.97, 1], [0, -24, "nan", "inf", 5000]),
    _opt("--steps", [1, 2], [0, -3, 10**7]),
    _opt("--guidance-scale", [1, 3.5, "1e30"], [-1, "nan", "inf"]),
    _opt("--stg-scale", [0, 1], [-0.5]),
    _opt("--seed", [0, 42, 2**63 - 1], [-1, 2**64]),
    st.one_of(
        st.just([]),
        st.lists(st.sampled_from([f"{_IMG}:0", f"{_IMG}:0:0.5", f"{_IMG}:8", f"{_VID}:0", f"{_VID}:8"]), max_size=2),
        st.lists(st.sampled_from([f"{_IMG}:-1", f"{_IMG}:99", f"{_IMG}:0:1.5", f"{_VID}:3", f"{_BAD}:0",
                                  "missing.png:0", _IMG]), min_size=1, max_size=1),
    ),
    st.sampled_from(["mp4", "frames"]),
    st.sampled_from([[], [], [], ["--device=cpu"], ["--json"], ["--dtype=float32"], ["--device=tpu"],
                     ["--dtype=float16"], ["--dtype=int8"]]),
)


def _value(args: list[str], name: str, default: Any) -> Any:
    for a in args:
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default


def test_random_option_combinations(cli_env: Path, assets: SimpleNamespace, capsys: pytest.CaptureFixture[str]
                                    ) -> None:
    """Exit 0 with a valid output, or a documented code with one stderr line, no traceback, no file left."""
    media.write_video(cli_env / "v.mp4", torch.rand(9, 40, 60, 3), 24)
    (cli_env / "bad.png").write_text("not an image")
    subs = {_IMG: str(assets.dir / "ok.png"), _VID: str(cli_env / "v.mp4"), _BAD: str(cli_env / "bad.png")}
    outcomes: Counter[str] = Counter()
    n = Counter()

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(OPTIONS)
    @example(([], [], [], [], ["--steps=2"], ["--guidance-scale=1e30"], [], [], [], "mp4", []))  # overflow
    @example((["--height=33"], ["--width=35"], ["--num-frames=2"], [], ["--steps=1"], [], [], [], [f"{_VID}:8"],
              "frames", []))  # odd sizes are fine as PNG frames
    @example(([], [], [], [], [], [], [], [], ["missing.png:0"], "mp4", ["--json"]))
    def run(options: tuple[Any, ...]) -> None:
        *sized, conds, kind, extra = options
        n["i"] += 1
        folder = cli_env / f"ex{n['i']}"
        folder.mkdir()
        args = [a for group in sized for a in group] + extra
        for c in conds:
            for k, v in subs.items():
                c = c.replace(k, v)
            args += ["--condition", c]
        target = folder / ("out.mp4" if kind == "mp4" else "frames")
        args += ["-o", str(target)] if kind == "mp4" else ["--frames-dir", str(target)]
        result = ltx("generate", "a cat walks", "--model", "tiny", *args)
        if result.exit_code == 0:
            h, w = int(_value(args, "--height", 128)), int(_value(args, "--width", 192))
            f = int(_value(args, "--num-frames", 17))
            if kind == "mp4":
                info = probe(target)
                assert (info["frames"], info["width"], info["height"]) == (f, w, h), args
            else:
                pngs = sorted(target.glob("frame_*.png"))
                assert len(pngs) == f and Image.open(pngs[0]).size == (w, h), args
            assert files_under(folder) == ([target.name] if kind == "mp4" else
                                           [f"frames/frame_{i:05d}.png" for i in range(f)])
            outcomes["0 ok"] += 1
            return
        assert result.exit_code in DOCUMENTED, (result.exit_code, args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
        assert "Traceback" not in result.stderr and result.stdout == ""
        assert files_under(folder) == [], args
        outcomes[f"{result.exit_code} {lines[0][7:40]}"] += 1

    run()
    by_code = Counter(k.split()[0] for k in outcomes.elements())
    with capsys.disabled():
        print(f"\nrandom option combinations: {sum(outcomes.values())} runs, by exit code {dict(sorted(by_code.items()))}")
        for k, v in sorted(outcomes.items()):
            print(f"  {v:3d}  {k}")
    assert by_code["0"] >= 3 and sum(v for k, v in by_code.items() if k != "0") >= 10


def test_sigterm_becomes_an_interrupt_but_a_nohup_sighup_stays_ignored() -> None:
    import signal

    from ltxcli.parallel.launch import terminate_like_ctrl_c

    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    hangup = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup: left ignored
    interrupt = signal.getsignal(signal.SIGINT)
    try:
        terminate_like_ctrl_c()
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGHUP, hangup)
        signal.signal(signal.SIGINT, interrupt)


_IN_A_FINALIZER = """
import os, signal, sys, time
from ltxcli.parallel import launch
launch.terminate_like_ctrl_c()
class Finalized:
    def __del__(self):  # the signal comes while a finalizer runs: an object collected mid-run (regex's)
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
        sum(range(1000))
try:
    Finalized()
    end = time.monotonic() + 5
    while time.monotonic() < end:
        sum(range(1000))
    print("ran on")
except KeyboardInterrupt as e:
    print("stopped:", type(e).__name__)
"""


@pytest.mark.parametrize(("name", "raised"), [("SIGINT", "KeyboardInterrupt"), ("SIGTERM", "Terminated"),
                                              ("SIGHUP", "Terminated")])
def test_a_signal_in_a_finalizer_still_stops_the_run(name: str, raised: str) -> None:
    """Ctrl-C or SIGTERM (SIGHUP) whose handler ran while the main thread was in a ``__del__`` (seen in a rank of
    `ltx --gpus 2`, in regex's Group.__del__) was printed as "Exception ignored in ..." with a traceback and
    dropped: the process ran on (the rank then failed as a peer of the others). It stops the run now, shortly
    after, without that traceback."""
    import signal
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    # (the default actions, as a terminal gives them: a job started with `nohup ... &` inherits both ignored)
    r = subprocess.run([sys.executable, "-c", _IN_A_FINALIZER, name], env=env, capture_output=True, text=True,
                       timeout=60, check=False,
                       preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGHUP)])
    assert (r.returncode, r.stdout, r.stderr) == (0, f"stopped: {raised}\n", "")


_SIGNAL_AT = """
import os, signal, sys
import typer._click.core, typer.main
name, where, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
owner, attr = {"build": (typer.main, "get_command"), "parse": (typer._click.core.Command, "parse_args")}[where]
original, calls = getattr(owner, attr), []
def signalled(*args, **kwargs):  # the signal arrives in the nth call of this step of the start-up, as kill's would
    calls.append(1)
    if len(calls) == nth:
        os.kill(os.getpid(), getattr(signal, name))
    return original(*args, **kwargs)
setattr(owner, attr, signalled)
sys.argv = ["ltx", "info", "missing.mp4"]
from ltxcli.cli import main
main()
"""


@pytest.mark.parametrize(("name", "code", "what"), [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated"),
                                                    ("SIGHUP", 129, "hung up")])
@pytest.mark.parametrize(("where", "nth"), [("build", 1), ("parse", 1), ("parse", 2)])
def test_a_signal_while_the_command_line_starts_is_one_line(name: str, code: int, what: str, where: str,
                                                             nth: int) -> None:
    """A signal after `ltx` installed its handlers but before the command ran: while typer built the command line
    ("build": Python printed a traceback of Terminated or KeyboardInterrupt, exit 1) or click parsed the root's
    (nth 1) or the command's (nth 2) options (typer ended it as a silent exit 130, SIGTERM's too). Each is now
    the README's one line and exit code, as during the command."""
    import signal
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    r = subprocess.run([sys.executable, "-c", _SIGNAL_AT, name, where, str(nth)], env=env, capture_output=True,
                       text=True, timeout=60, check=False,  # the default actions, as at a terminal (not nohup's)
                       preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGHUP)])
    assert (r.returncode, r.stdout, r.stderr) == (code, "", f"error: {what}; partial outputs were removed\n")


_SIGNAL_IN_IMPORT = """
import importlib.abc, os, runpy, signal, sys
name, module = sys.argv[1], sys.argv[2]
class Signalled(importlib.abc.MetaPathFinder):  # the signal arrives as `module` is imported, as kill's would
    def find_spec(self, fullname, path, target=None):
        if fullname == module:
            os.kill(os.getpid(), getattr(signal, name))
        return None
sys.meta_path.insert(0, Signalled())
sys.argv = ["ltx", "info", "missing.mp4"]
if sys.argv[3:] == ["script"]:  # the `ltx` console script (pyproject's entry point)
    sys.exit(__import__("ltxcli.__main__", fromlist=["main"]).main())
runpy.run_module("ltxcli", run_name="__main__", alter_sys=True)  # python -m ltxcli
"""


@pytest.mark.parametrize(("name", "code", "what"), [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated"),
                                                    ("SIGHUP", 129, "hung up")])
@pytest.mark.parametrize(("module", "how"), [("typer", "-m"), ("ltxcli.cli.generate", "-m"),
                                             ("ltxcli.cli.generate", "script")])
def test_a_signal_while_the_command_line_is_imported_is_one_line(name: str, code: int, what: str, module: str,
                                                                 how: str) -> None:
    """A signal while `ltx` (`python -m ltxcli`, or the console script) imported its command line (typer, the
    command modules: half a second), before any handler: SIGINT printed a KeyboardInterrupt traceback from inside
    the import, SIGTERM and SIGHUP killed it without a word. They are held until the handlers are in place now:
    the README's one line and exit code, as later in the start-up."""
    import signal
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    r = subprocess.run([sys.executable, "-c", _SIGNAL_IN_IMPORT, name, module, how], env=env, capture_output=True,
                       text=True, timeout=60, check=False,  # the default actions, as at a terminal (not nohup's)
                       preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGHUP)])
    assert (r.returncode, r.stdout, r.stderr) == (code, "", f"error: {what}; partial outputs were removed\n")


_BLOCKED_RANK = """
import os, sys
from ltxcli import media
from ltxcli.parallel import launch
launch.STOP_GRACE_S = 0.5
launch.terminate_like_ctrl_c()
with media.atomic_output(sys.argv[1]):
    # the main thread in C code from here on (as in a collective waiting for a peer that is gone), so the Python
    # handler cannot run: the shell says so, then waits for stdin to close
    os.system(f"touch {sys.argv[2]}; read line")
"""


def test_a_rank_blocked_in_c_code_still_removes_its_partial_output_on_sigterm(tmp_path: Path) -> None:
    """A rank of torchrun turns SIGTERM into an interrupt as the launching process does (torchrun passes on the
    SIGTERM it gets and stops the other workers with one: Python's default action left their `.partial` outputs
    behind). Where the main thread cannot run the Python handler (blocked in C code) a thread of the rank removes
    the partial outputs after the grace period, records the code for the launcher and exits 143, before
    torchrun's SIGKILL (30 s) would."""
    import signal
    import subprocess
    import time

    tmp_path = tmp_path / "rank"
    (tmp_path / "status").mkdir(parents=True)
    ready = tmp_path / "status" / "blocked"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "RANK": "1", "WORLD_SIZE": "2",
           "LTX_RANK_STATUS_DIR": str(tmp_path / "status")}
    proc = subprocess.Popen([sys.executable, "-c", _BLOCKED_RANK, str(tmp_path / "o.mp4"), str(ready)], env=env,
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        names = sorted(p.name for p in tmp_path.iterdir())
        assert ready.exists() and len(names) == 2 and names[0].endswith(".partial.mp4"), (names, proc.poll())
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)  # stdin open: the main thread is still blocked when the rank exits
    finally:
        proc.kill()
        proc.stdin.close()  # the shell reads the end of its stdin and exits (closing its copy of stderr)
    err = proc.stderr.read()
    assert code == 143, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status"]  # the partial output is gone
    assert (tmp_path / "status" / "rank-1").read_text().split()[0] == "143"
    assert err.startswith("[rank 1/2 ") and "error: terminated; partial outputs were removed" in err, err
