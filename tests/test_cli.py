"""The ``ltx`` command line, run as a user runs it: CliRunner in-process (stdout and stderr apart) for most
cases, one real ``python -m ltxcli`` subprocess, and a fake Hub on 127.0.0.1 for downloads.

The tiny model is loaded once per test module (``load_pipeline`` is memoised) to keep the file fast.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cli_harness
import pytest
import torch
from cli_harness import (
    assert_codes_match,
    assert_one_error_line,
    enter_cli_env,
    frame_codes,
    json_lines,
    ltx,
    memoised_loader,
)
from tiny_t5 import make_tiny_text_encoder

import ltxcli
from ltxcli import api as ltxcli_api
from ltxcli import media, metrics
from ltxcli import offload as ltxcli_offload
from ltxcli.cli import common as cli_common
from ltxcli.cli import generate as cli_generate
from ltxcli.cli import preflight
from ltxcli.media import read as media_read
from ltxcli.parallel import launch as parallel_launch
from ltxcli.runner import BatchItem

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--height", "64", "--width", "96", "--num-frames", "9"]

_cached_load = memoised_loader()
# fixtures shared with test_hostile (hub uses this module's cli_env)
one_thread = cli_harness.one_thread
hub = cli_harness.hub


def tiny_pipeline() -> Any:
    """The instance ``ltx generate --model tiny`` gets in these tests (same arguments as the CLI passes)."""
    return _cached_load("tiny", text_encoder=None, upsampler=None, device=None, dtype=None, weights_dir=None,
                        attention="auto", compile=False, offload="none", vae_tiling="auto", vae_conv="auto",
                        cpu_gemm="auto", keep_checkpoint_dtype=None, weights_dtype=None, download=False, loras=None,
                        temporal_upsampler=None)


@pytest.fixture(autouse=True)
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in a temporary folder with an empty weights folder, offline, and a memoised model loader."""
    return enter_cli_env(tmp_path, monkeypatch, _cached_load)


def probe(path: Path) -> dict[str, Any]:
    """Frame count (decoded), size, exact frame rate and the comment tag, straight from PyAV."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(s))
        return {"frames": n, "width": s.codec_context.width, "height": s.codec_context.height,
                "rate": Fraction(s.average_rate), "codec": s.codec_context.name,
                "record": json.loads(c.metadata["comment"])}


# --------------------------------------------------------------------------------------- end to end


def test_subprocess_generate_tiny_writes_mp4_with_record(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "LTX_WEIGHTS_DIR": str(tmp_path / "weights"),
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out.mp4"
    proc = subprocess.run(
        [sys.executable, "-m", "ltxcli", "generate", "a cat surfing", "--model", "tiny", "-o", str(out),
         "--seed", "7", "--frame-rate", "12", *SMALL],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)  # data on stdout, messages on stderr
    info = probe(out)
    assert (info["frames"], info["width"], info["height"], info["rate"], info["codec"]) == (9, 96, 64, 12, "h264")
    rec = info["record"]
    assert rec["tool"] == "ltxcli" and rec["version"] == ltxcli.__version__
    assert (rec["model"], rec["prompt"], rec["seed"], rec["steps"]) == ("tiny", "a cat surfing", 7, 4)
    assert (rec["height"], rec["width"], rec["num_frames"], rec["frame_rate"]) == (64, 96, 9, 12)
    assert rec["guidance_scale"] == 3.0 and rec["stg_scale"] == 1.0 and rec["preset"] == "tiny"
    assert rec["negative_prompt"].startswith("worst quality")
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One in-process --json generation shared by the tests that only read its result."""
    folder = tmp_path_factory.mktemp("gen")
    cwd = Path.cwd()
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(ltxcli_api, "load_pipeline", _cached_load)
        mp.setattr(ltxcli_offload, "free_text_encoder", lambda text_encoder: None)
        mp.setenv("LTX_WEIGHTS_DIR", str(folder))
        os.chdir(folder)
        result = ltx("generate", "a dog runs", "--model", "tiny", "--json", "--seed", "11", "--steps", "2",
                     "--guidance-scale", "2.5", "--negative-prompt", "blurry", *SMALL)
    finally:
        os.chdir(cwd)
        mp.undo()
    assert result.exit_code == 0, result.stderr
    (obj,) = json_lines(result.stdout)
    return {"obj": obj, "path": folder / obj["path"], "stderr": result.stderr}


def test_json_output_and_default_name(generated: dict[str, Any]) -> None:
    obj = generated["obj"]
    assert obj["status"] == "ok" and obj["path"] == "a-dog-runs-11-96x64x9.mp4"
    assert (obj["seed"], obj["model"], obj["prompt"]) == (11, "tiny", "a dog runs")
    s = obj["settings"]
    assert (s["steps"], s["guidance_scale"], s["negative_prompt"], s["height"], s["width"], s["num_frames"]) == (
        2, 2.5, "blurry", 64, 96, 9)
    t = obj["timings"]
    assert {"load_s", "text_encoding_s", "denoise_s", "decode_s", "write_s", "total_s"} <= set(t)
    assert t["total_s"] >= t["denoise_s"] > 0
    info = probe(generated["path"])
    assert (info["frames"], info["width"], info["height"], info["rate"]) == (9, 96, 64, 24)
    assert info["record"]["steps"] == 2 and info["record"]["negative_prompt"] == "blurry"


def test_info_reads_back(generated: dict[str, Any]) -> None:
    result = ltx("info", str(generated["path"]), "--json")
    assert result.exit_code == 0, result.stderr
    (obj,) = json_lines(result.stdout)
    assert obj["stream"] == {"kind": "video", "codec": "h264", "width": 96, "height": 64, "num_frames": 9,
                             "frame_rate": 24, "duration_s": pytest.approx(9 / 24, abs=0.01)}
    assert obj["generation"]["prompt"] == "a dog runs" and obj["generation"]["seed"] == 11
    human = ltx("info", str(generated["path"]))
    assert "prompt: a dog runs" in human.stdout and "seed: 11" in human.stdout


def test_info_shows_no_record_for_another_program_s_json_comment(cli_env: Path) -> None:
    """A JSON object in the comment tag is an ltx record only when it says so (``"tool": "ltxcli"``); another
    program's was shown as one (its "prompt" line, and under "generation" in --json)."""
    media.write_video(cli_env / "other.mp4", torch.rand(3, 64, 96, 3), 24, metadata={"tool": "other", "prompt": "x"})
    (obj,) = json_lines(ltx("info", "other.mp4", "--json").stdout)
    assert obj["generation"] is None
    human = ltx("info", "other.mp4")
    assert "prompt: x" not in human.stdout and "no ltx generation record" in human.stderr


def test_info_counts_the_frames_a_truncated_file_decodes(cli_env: Path) -> None:
    """An MP4 whose index (at the front) outlives its cut-off data: `ltx info` listed the index's 41 frames, while
    `ltx v2v` and `ltx extend` use (and say they use) only those that decode."""
    _, decodable = cli_harness.truncated_mp4(cli_env)
    r = ltx("info", "cut.mp4", "--json")
    assert r.exit_code == 0, r.stderr
    assert json_lines(r.stdout)[0]["stream"]["num_frames"] == decodable
    assert f"lists 41 frames but only {decodable} can be decoded" in r.stderr
    human = ltx("info", "cut.mp4")
    assert f"{decodable} frame(s)" in human.stdout


def test_info_counts_a_whole_video_without_decoding_it(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ltx info` decoded every frame to count them: 10 s for a one-minute 640x360 H.264 file (4 s before). A file
    whose index's packets are all whole in it is counted by them; a cut one is still decoded (the test above)."""
    cli_harness.truncated_mp4(cli_env)  # and whole-cut.mp4, its 41 frames whole

    def no_decoding(*_args: Any) -> int:
        raise AssertionError("frames decoded to count them")

    monkeypatch.setattr(media_read, "_decodable_frames", no_decoding)
    r = ltx("info", "whole-cut.mp4", "--json")
    assert r.exit_code == 0 and r.stderr == "", r.stderr
    assert json_lines(r.stdout)[0]["stream"]["num_frames"] == 41
    assert ltx("info", "cut.mp4").exit_code != 0  # a cut file is decoded to count it (here: refused)


def test_info_refuses_a_file_that_does_not_decode(cli_env: Path) -> None:
    """Text named .jpg was described (exit 0) as "stream: 0x0, 1 frame(s), 25 fps, mjpeg" while `ltx i2v` refused
    it (exit 6); a truncated PNG (its header whole) likewise. A real JPEG, PNG and an ltx MP4 are still described."""
    (cli_env / "bad.jpg").write_text("garbage\n")
    path = media.write_video(cli_env / "v.mp4", torch.rand(9, 64, 96, 3), 24)
    (cli_env / "cut.mp4").write_bytes(path.read_bytes()[:2000])
    media.write_image(cli_env / "ok.png", torch.rand(30, 40, 3))
    (cli_env / "cut.png").write_bytes((cli_env / "ok.png").read_bytes()[:100])  # the header, part of the data
    for name in ("bad.jpg", "cut.mp4", "cut.png"):
        for extra in ([], ["--json"]):
            line = assert_one_error_line(ltx("info", name, *extra), 6)
            assert line.startswith(f"error: {name}: "), line
    assert_one_error_line(ltx("i2v", "bad.jpg", "x", "-m", "tiny", "-o", "o.mp4"), 6)
    from PIL import Image

    Image.new("RGB", (40, 30)).save(cli_env / "ok.jpg")
    (obj,) = json_lines(ltx("info", "ok.jpg", "--json").stdout)
    assert (obj["stream"]["width"], obj["stream"]["height"], obj["stream"]["num_frames"]) == (40, 30, 1)
    assert ltx("info", "v.mp4").exit_code == 0 and ltx("info", "ok.png").exit_code == 0
    with pytest.MonkeyPatch.context() as mp:  # a PNG past Pillow's decompression-bomb limit: one line, not exit 1
        mp.setattr(Image, "MAX_IMAGE_PIXELS", 100)
        assert "error: ok.png: " in assert_one_error_line(ltx("info", "ok.png"), 6)


def test_frames_dir_is_exactly_the_library_result() -> None:
    """--frames-dir PNGs are lossless: they equal the library's frames for the same arguments, code for code."""
    result = ltx("generate", "a dog runs", "--model", "tiny", "--seed", "11", "--steps", "2", "--guidance-scale",
                 "2.5", "--negative-prompt", "blurry", "--frames-dir", "frames", *SMALL)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "frames"
    pngs = sorted(Path("frames").glob("frame_*.png"))
    assert [p.name for p in pngs] == [f"frame_{i:05d}.png" for i in range(9)]
    expected = tiny_pipeline().generate("a dog runs", seed=11, steps=2, guidance_scale=2.5, negative_prompt="blurry",
                                        height=64, width=96, num_frames=9).video
    got = torch.cat([media.load_image(p) for p in pngs])
    assert torch.equal(media.to_uint8(got), media.to_uint8(expected))
    (info,) = json_lines(ltx("info", "frames", "--json").stdout)
    assert info["stream"]["num_frames"] == 9 and info["generation"]["seed"] == 11


def test_prompt_from_stdin_and_i2v_with_keyframe(cli_env: Path) -> None:
    media.write_image(cli_env / "first.png", torch.rand(64, 96, 3))
    media.write_image(cli_env / "last.png", torch.rand(40, 50, 3))
    r = ltx("i2v", "first.png", "-", "--model", "tiny", "--seed", "1", "-o", "clips/", "--condition", "last.png:8:0.5",
            "--json", *SMALL, input="a horse walks\n")
    assert r.exit_code == 0, r.stderr
    (obj,) = json_lines(r.stdout)
    assert obj["prompt"] == "a horse walks" and obj["path"] == "clips/a-horse-walks-1-96x64x9.mp4"
    assert obj["settings"]["conditions"] == [{"path": "first.png", "frame": 0, "strength": 1.0},
                                             {"path": "last.png", "frame": 8, "strength": 0.5}]
    assert probe(Path(obj["path"]))["frames"] == 9


def test_batch_pattern_and_skip_existing(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[Any] = []
    monkeypatch.setattr(ltxcli_api, "load_pipeline", lambda *a, **k: loads.append(a) or _cached_load(*a, **k))
    (cli_env / "prompts.txt").write_text(
        "a cat\n# a comment\n\n"
        '{"prompt": "a bird flies", "seed": 5, "num_frames": 17, "steps": 1}\n'
        '{"prompt": "a fish", "output": "special.mp4"}\n'
    )
    args = ["generate", "--batch", "prompts.txt", "--model", "tiny", "--seed", "3", "--steps", "2", "--json",
            "-o", "out/{index:02d}-{seed}-{slug}.mp4", "--height", "64", "--width", "64", "--num-frames", "9"]
    first = ltx(*args)
    assert first.exit_code == 0, first.stderr
    objs = json_lines(first.stdout)
    assert [o["status"] for o in objs] == ["ok", "ok", "ok"]
    assert [o["path"] for o in objs] == ["out/00-3-a-cat.mp4", "out/01-5-a-bird-flies.mp4", "special.mp4"]
    assert [o["seed"] for o in objs] == [3, 5, 5]  # --seed seeds the batch: item i without a seed gets 3 + i
    assert len(loads) == 1 and objs[1]["timings"]["load_s"] == 0  # one model load for the batch
    assert probe(Path(objs[1]["path"]))["frames"] == 17
    assert probe(Path(objs[1]["path"]))["record"]["steps"] == 1

    Path(objs[1]["path"]).unlink()
    again = ltx(*args, "--skip-existing")
    assert again.exit_code == 0, again.stderr
    objs2 = json_lines(again.stdout)
    assert [o["status"] for o in objs2] == ["skipped", "ok", "skipped"]
    assert len(loads) == 2 and probe(Path(objs[1]["path"]))["frames"] == 17
    loads.clear()
    assert json_lines(ltx(*args, "--skip-existing").stdout)[1]["status"] == "skipped"
    assert loads == []  # everything exists: the model is not even loaded

    refused = ltx(*args)  # existing outputs and neither --overwrite nor --skip-existing: nothing runs
    assert_one_error_line(refused, 2)


# --------------------------------------------------------------------------------------- error paths


def _corrupt(path: Path) -> str:
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    return str(path)


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["generate", "x", "--model", "tiny", "--height", "101", "-o", "o.mp4"], 2, "height=101"),
        (["generate", "x", "--model", "tiny", "--width", "4000", "-o", "o.mp4"], 2, "width=4000"),
        (["generate", "x", "--model", "tiny", "--num-frames", "0", "-o", "o.mp4"], 2, "num_frames=0"),
        (["generate", "x", "--model", "tiny", "--frame-rate", "0", "-o", "o.mp4"], 2, "frame_rate=0"),
        (["generate", "x", "--model", "tiny", "--num-frames", "2001", "--window", "600", "-o", "o.mp4"], 2,
         "window=600 (593 frames) at 24 fps lasts 24.7 s"),
        (["generate", "x", "--model", "tiny", "--num-frames", "600", "--seed", str(2**63 - 1), "-o", "o.mp4"], 2,
         f"seed={2**63 - 1} is too large for a video in 11 windows"),
        (["generate", "x", "--model", "tiny", "--steps", "0", "-o", "o.mp4"], 2, "steps=0"),
        (["generate", "x", "--model", "tiny", "--guidance-scale", "-1", "-o", "o.mp4"], 2, "guidance_scale=-1"),
        (["generate", "x", "--model", "tiny", "--condition", "c.png:99", "-o", "o.mp4"], 2, "frame=99"),
        (["generate", "x", "--model", "tiny", "--condition", "c.png:0:1.5", "-o", "o.mp4"], 2, "strength=1.5"),
        (["generate", "x", "--model", "tiny", "--condition", "c.png", "-o", "o.mp4"], 2, "PATH:FRAME"),
        (["generate", "x", "--model", "tiny", "-o", "o/{bogus}.mp4"], 2, "{bogus}"),
        (["generate", "x", "--model", "tiny", "-o", "o.gif"], 2, ".mp4"),
        (["generate", "x", "--model", "tiny", "--dtype", "float16", "-o", "o.mp4"], 2, "float16"),
        (["generate", "x", "--model", "ltxv-2b-0.9.9", "-o", "o.mp4"], 2, "did you mean"),
        (["generate", "x", "--model", "t5-xxl", "-o", "o.mp4"], 2, "not a model"),
        (["generate", "x", "--model", "nothere.safetensors", "-o", "o.mp4"], 2, "no such file"),
        (["generate", "x", "--model", "ltxv-2b-0.9", "--text-encoder", "no/such", "-o", "o.mp4"], 2, "no/such"),
        (["i2v", "missing.png", "x", "--model", "tiny", "-o", "o.mp4"], 6, "missing.png"),
        (["generate", "x", "--model", "tiny", "--condition", "nope.mp4:0", "-o", "o.mp4"], 6, "nope.mp4"),
        (["generate", "x", "--model", "CORRUPT", "-o", "o.mp4"], 6, "corrupt.safetensors"),
        (["vae", "roundtrip", "missing.mp4", "--model", "tiny"], 6, "missing.mp4"),
        (["vae", "decode", "CORRUPT", "--model", "tiny", "-o", "o.mp4"], 6, "corrupt.safetensors"),
        (["info", "missing.mp4"], 6, "missing.mp4"),
    ],
)
def test_error_paths_one_line_and_exit_code(cli_env: Path, args: list[str], code: int, needle: str) -> None:
    media.write_image(cli_env / "c.png", torch.rand(8, 8, 3))
    args = [_corrupt(cli_env / "corrupt.safetensors") if a == "CORRUPT" else a for a in args]
    line = assert_one_error_line(ltx(*args), code)
    assert needle in line
    assert not (cli_env / "o.mp4").exists() and not (cli_env / "o").exists()


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (["--frame-rate", "1001"], "frame_rate=1001 must be in [0.001, 1000]"),
        (["--frame-rate", "1e300"], "frame_rate=1e+300 must be in"),  # not its 301 digits
        (["--frame-rate", "600", "--temporal-upscale"], "frame_rate=600 doubled by temporal_upscale is 1200, "),
        (["--guidance-scale", "-1"], "guidance_scale=-1 must be a finite number"),
        (["--duration", "0"], "duration=0 must be a positive number"),
        (["--overlap-strength", "2"], "overlap_strength=2 must be in [0, 1]"),
        (["--strength", "1"], "strength=1 must be in (0, 1)"),
    ],
)
def test_an_integer_given_to_a_number_option_is_echoed_as_given(
        cli_env: Path, options: list[str], needle: str) -> None:
    """A number option parses ``--frame-rate 1001`` as 1001.0, and the refusal echoed that float
    ("frame_rate=1001.0 must be in ..."), not what the user typed; so did the other number options' checks."""
    media.write_video(cli_env / "in.mp4", torch.rand(9, 32, 32, 3), 24)
    command = ["v2v", "in.mp4"] if options[0] == "--strength" else ["generate"]
    line = assert_one_error_line(ltx(*command, "x", "--model", "tiny", *options, "-o", "o.mp4"), 2)
    assert needle in line, line


def test_fields_renamed_in_ltx_messages_are_ltx_options() -> None:
    """ltx words a library check of a field its option names otherwise with the option's name (``strength=0.3``
    for ``denoise_strength=0.3``: :func:`ltxcli.formatting.cli_wording`, tests/test_cli_video.py); each such name
    is an option of ``ltx v2v`` (its Typer options), and a message that does not start with one is left alone."""
    import typer.main

    from ltxcli.cli import app
    from ltxcli.formatting import CLI_NAMES, cli_wording

    options = {o for p in typer.main.get_command(app).commands["v2v"].params for o in p.opts}  # type: ignore[attr-defined]
    assert {f"--{name}" for name in CLI_NAMES.values()} <= options
    batch = "--batch b.jsonl line 1: denoise_strength=0.3 is below every timestep of this schedule"
    assert cli_wording(batch) == batch  # a --batch line's JSON key is the field's name


def test_offline_with_missing_weights_exits_3(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = assert_one_error_line(ltx("generate", "a cat", "-o", "o.mp4"), 3)  # the default model
    assert "HF_HUB_OFFLINE" in line and "ltx weights pull" in line
    assert not (cli_env / "o.mp4").exists()


def test_existing_output_needs_overwrite(cli_env: Path) -> None:
    (cli_env / "o.mp4").write_bytes(b"keep me")
    line = assert_one_error_line(ltx("generate", "x", "--model", "tiny", "-o", "o.mp4", *SMALL), 2)
    assert "--overwrite" in line
    assert (cli_env / "o.mp4").read_bytes() == b"keep me"
    ok = ltx("generate", "x", "--model", "tiny", "-o", "o.mp4", "--overwrite", "--steps", "1", *SMALL)
    assert ok.exit_code == 0, ok.stderr
    assert probe(cli_env / "o.mp4")["frames"] == 9


def test_interrupt_exits_130_and_leaves_nothing(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(temp: Path, *args: Any) -> None:
        temp.write_bytes(b"half a video")
        raise KeyboardInterrupt

    monkeypatch.setattr(media.write, "_encode", interrupted)
    r = ltx("generate", "x", "--model", "tiny", "-o", "o.mp4", "--steps", "1", *SMALL)
    assert_one_error_line(r, 130)
    assert sorted(p.name for p in cli_env.iterdir()) == ["weights"]  # no output, no temporary file


def test_out_of_memory_exits_5(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = tiny_pipeline()

    def oom(*args: Any, **kwargs: Any) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(pipe, "run", oom)  # what the batch runner calls
    line = assert_one_error_line(ltx("generate", "x", "--model", "tiny", "-o", "o.mp4", *SMALL), 5)
    assert "out of memory" in line and "--height" in line
    assert not (cli_env / "o.mp4").exists()


def test_out_of_memory_in_a_batch_line_of_its_own_size_names_its_keys(cli_env: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of memory while running a --batch line that sets its own size and length was told "a smaller
    --height/--width, fewer --num-frames": options that are only defaults for its items (the line's keys win), so
    the same command with them ran out of memory again. It is told the line's keys, as the pre-flight check does,
    and which item."""
    pipe = tiny_pipeline()
    run = pipe.run

    def oom_on_the_longer(request: Any, **kwargs: Any) -> Any:
        if request.num_frames == 17:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return run(request, **kwargs)

    monkeypatch.setattr(pipe, "run", oom_on_the_longer)
    lines = [{"prompt": "a cat"}, {"prompt": "a dog", "height": 64, "width": 96, "num_frames": 17}]
    (cli_env / "b.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    r = ltx("generate", "--batch", "b.jsonl", "--model", "tiny", "--steps", "1", "-q", "-o", "o{index}.mp4", *SMALL)
    assert r.exit_code == 5 and r.stdout == "o0.mp4\n", (r.stdout, r.stderr)  # the first item ran
    (line,) = r.stderr.splitlines()
    assert line.startswith("error: out of memory (CUDA out of memory"), line
    assert 'a smaller "height"/"width" or fewer "num_frames" in item 1\'s --batch line' in line, line
    assert "--height" not in line and "--num-frames" not in line and "--offload model" in line, line


def test_needed_weights_follow_the_registry(tmp_path: Path) -> None:
    from ltxcli.spec import resolve_spec

    default = resolve_spec(None)  # the registry default: a multi-scale model
    assert default.kind == "registry" and default.preset.multi_scale
    assert default.needed == [default.name, "t5-xxl", default.preset.upsampler]
    (tmp_path / "my" / "te").mkdir(parents=True)  # given components must exist
    (tmp_path / "up.safetensors").write_bytes(b"")
    given = resolve_spec(None, text_encoder=tmp_path / "my" / "te", upsampler=tmp_path / "up.safetensors")
    assert given.needed == [default.name]
    assert resolve_spec("tiny").needed == []


def test_typer_usage_errors_exit_2() -> None:
    assert ltx("generate", "x", "--num-frames", "many").exit_code == 2
    assert ltx("generate").exit_code == 2  # no PROMPT, no --batch


def test_help_documents_exit_codes() -> None:
    result = ltx("--help")
    assert result.exit_code == 0
    for code in cli_common.EXIT_CODES:
        assert f"  {code} " in result.stdout


def test_exit_code_table_says_what_each_missing_or_corrupt_file_gives(cli_env: Path) -> None:
    """The help's table said 6 is "input media or checkpoint unreadable (missing, corrupt)", but a checkpoint path
    that does not exist is 2 (README: "unknown model or path"); a corrupt checkpoint and missing media are 6."""
    corrupt = _corrupt(cli_env / "corrupt.safetensors")
    for args, code, words in (
        (["generate", "x", "-m", "./nope.safetensors"], 2, ("path", "does not exist")),
        (["generate", "x", "-m", "tiny", "--lora", "nope.safetensors"], 2, ("path", "LoRA")),
        (["generate", "x", "-m", corrupt], 6, ("checkpoint", "corrupt")),
        (["generate", "x", "-m", "tiny", "--lora", corrupt], 6, ("LoRA", "corrupt")),
        (["i2v", "missing.png", "x", "-m", "tiny"], 6, ("input media", "missing")),
        (["vae", "decode", "missing.safetensors", "-m", "tiny"], 6, ("latents", "missing")),
        # option files as --batch files: a --prompt-schedule that could not be read (not UTF-8) was exit 2
        (["generate", "--batch", "nope.txt", "-m", "tiny"], 2, ("--batch", "does not exist")),
        (["generate", "--batch", "latin1.txt", "-m", "tiny"], 6, ("--batch", "unreadable")),
        (["generate", "x", "-m", "tiny", "--duration", "5", "--prompt-schedule", "nope.txt"], 2,
         ("--prompt-schedule", "does not exist")),
        (["generate", "x", "-m", "tiny", "--duration", "5", "--prompt-schedule", "latin1.txt"], 6,
         ("--prompt-schedule", "unreadable")),
    ):
        (cli_env / "latin1.txt").write_bytes(b"caf\xe9\n")
        assert_one_error_line(ltx(*args, "-o", "o.mp4"), code)
        readme = re.search(rf"^\| {code} \| (.*) \|$", (REPO_ROOT / "README.md").read_text(), re.M)
        for table in (cli_common.EXIT_CODES[code], readme.group(1).replace("`", "") if readme else ""):
            assert all(w in table for w in words), (args, table)
    assert "missing" not in cli_common.EXIT_CODES[6].split(";")[1]  # of checkpoints: only unreadable ones


# --------------------------------------------------------------------------------------- vae


def test_vae_roundtrip_encode_decode(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ltxcli.tiny

    tiny = tiny_pipeline()
    monkeypatch.setattr(ltxcli.tiny, "build_pipeline", lambda device, dtype: tiny)
    torch.manual_seed(0)
    media.write_video(cli_env / "clip.mp4", torch.rand(11, 70, 100, 3), 25)  # trimmed to 9 x 64 x 96

    r = ltx("vae", "roundtrip", "clip.mp4", "--model", "tiny", "--json")
    assert r.exit_code == 0, r.stderr
    (obj,) = json_lines(r.stdout)
    assert (obj["num_frames"], obj["height"], obj["width"]) == (9, 64, 96)
    assert len(obj["psnr_per_frame"]) == len(obj["ssim_per_frame"]) == 9
    assert 0 < obj["psnr"] < 100 and -1 <= obj["ssim"] <= 1
    assert obj["peak_memory_bytes"] > 0 and obj["timings"]["encode_s"] > 0
    assert "using 9 frames of 96x64" in r.stderr
    # the vae commands name their input "source" (as decode and every record do) and latents' shape "latent_shape"
    assert obj["source"] == "clip.mp4" and obj["latent_shape"] == [1, 16, 2, 2, 3] and "video" not in obj
    human = ltx("vae", "roundtrip", "clip.mp4", "--model", "tiny")
    assert "psnr" in human.stdout and "ssim" in human.stdout and "peak memory" in human.stdout

    enc = ltx("vae", "encode", "clip.mp4", "--model", "tiny", "-o", "lat.safetensors", "--json")
    assert enc.exit_code == 0, enc.stderr
    (eobj,) = json_lines(enc.stdout)  # was "shape" (roundtrip's "latent_shape"), without its input
    assert (eobj["source"], eobj["latent_shape"], "shape" in eobj) == ("clip.mp4", [1, 16, 2, 2, 3], False)
    assert '"frame_rate": 25,' in enc.stdout  # a whole rate is an integer, as in every --json (was 25.0)
    from safetensors import safe_open

    with safe_open("lat.safetensors", framework="pt") as f:
        meta = f.metadata()
        assert list(f.get_tensor("latents").shape) == [1, 16, 2, 2, 3]
    assert meta["model"] == "tiny" and meta["frame_rate"] == "25" and meta["num_frames"] == "9"
    dec = ltx("vae", "decode", "lat.safetensors", "-o", "dec.mp4")  # the model comes from the file
    assert dec.exit_code == 0, dec.stderr
    info = probe(cli_env / "dec.mp4")
    assert (info["frames"], info["width"], info["height"], info["rate"]) == (9, 96, 64, 25)


def test_vae_encode_takes_an_upper_case_safetensors_suffix(cli_env: Path) -> None:
    """-o LAT.SAFETENSORS was refused as "latents are written as .safetensors" (decode takes .MP4)."""
    media.write_video(cli_env / "clip.mp4", torch.zeros(9, 32, 32, 3), 24)
    r = ltx("vae", "encode", "clip.mp4", "--model", "tiny", "-o", "LAT.SAFETENSORS")
    assert r.exit_code == 0, r.stderr
    assert (cli_env / "LAT.SAFETENSORS").is_file()
    assert_one_error_line(ltx("vae", "encode", "clip.mp4", "--model", "tiny", "-o", "lat.pt"), 2)


def test_vae_decode_names_the_latents_file_when_its_recorded_model_is_not_found(cli_env: Path) -> None:
    """Without --model, decode uses the model the file records; one that does not resolve from here (a relative
    checkpoint path from another folder, an unknown name) is one line naming the file and saying to pass --model
    (not "--model X", which the user never passed)."""
    from safetensors.torch import save_file

    for name, value in (("rel", "ckpt.safetensors"), ("unknown", "nope-model")):
        save_file({"latents": torch.zeros(1, 16, 2, 2, 3)}, f"{name}.safetensors", metadata={"model": value})
        line = assert_one_error_line(ltx("vae", "decode", f"{name}.safetensors", "-o", f"{name}.mp4"), 2)
        assert line.startswith(f"error: {name}.safetensors: ") and value in line and "pass --model" in line, line


def test_ssim_psnr_hand_derived() -> None:
    # constant frames a, b: all variances vanish, so SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b = 0.25, 0.75
    fa, fb = torch.full((1, 16, 16, 3), a), torch.full((1, 16, 16, 3), b)
    c1 = 0.01**2
    assert float(metrics.ssim_per_frame(fa, fb)[0]) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-9)
    torch.manual_seed(0)
    x = torch.rand(2, 20, 24, 3, dtype=torch.float64)
    assert torch.allclose(metrics.ssim_per_frame(x, x), torch.ones(2, dtype=torch.float64))
    assert metrics.psnr_from_mse(float(metrics.mse_per_frame(fa, fb)[0])) == pytest.approx(-20 * math.log10(0.5))
    assert metrics.psnr_from_mse(0.0) == metrics.PSNR_MAX_DB


def test_ssim_matches_a_direct_window_sum() -> None:
    """One SSIM-map value recomputed by explicit weighted sums over the 11x11 window (float64, no convolution)."""
    torch.manual_seed(1)
    x = torch.rand(1, 13, 12, 3, dtype=torch.float64)
    y = (x + 0.2 * torch.rand(1, 13, 12, 3, dtype=torch.float64)).clamp(0, 1)
    lum = lambda t: 0.299 * t[..., 0] + 0.587 * t[..., 1] + 0.114 * t[..., 2]  # noqa: E731
    gx, gy = lum(x)[0], lum(y)[0]
    g = [math.exp(-((i - 5) ** 2) / (2 * 1.5**2)) for i in range(11)]
    total = sum(g) ** 2
    values = []
    for top in range(13 - 10):  # every valid window position
        for left in range(12 - 10):
            w = [[g[i] * g[j] / total for j in range(11)] for i in range(11)]
            px = [[float(gx[top + i, left + j]) for j in range(11)] for i in range(11)]
            py = [[float(gy[top + i, left + j]) for j in range(11)] for i in range(11)]
            mx = sum(w[i][j] * px[i][j] for i in range(11) for j in range(11))
            my = sum(w[i][j] * py[i][j] for i in range(11) for j in range(11))
            vx = sum(w[i][j] * (px[i][j] - mx) ** 2 for i in range(11) for j in range(11))
            vy = sum(w[i][j] * (py[i][j] - my) ** 2 for i in range(11) for j in range(11))
            cxy = sum(w[i][j] * (px[i][j] - mx) * (py[i][j] - my) for i in range(11) for j in range(11))
            c1, c2 = 0.01**2, 0.03**2
            values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    assert float(metrics.ssim_per_frame(x, y)[0]) == pytest.approx(sum(values) / len(values), rel=1e-9)


# --------------------------------------------------------------------------------------- weights, doctor


def test_weights_list_and_doctor_json(cli_env: Path) -> None:
    r = ltx("weights", "list", "--json")
    assert r.exit_code == 0, r.stderr
    rows = {o["name"]: o for o in json_lines(r.stdout)}
    assert rows["tiny"]["state"] == "builtin" and rows["t5-xxl"]["kind"] == "text_encoder"
    assert sum(o["default"] for o in rows.values()) == 1
    assert all(o["state"] in ("missing", "builtin") for o in rows.values())
    assert rows["t5-xxl"]["location"] == str(cli_env / "weights")

    d = ltx("doctor", "--json")
    assert d.exit_code == 0, d.stderr
    (rep,) = json_lines(d.stdout)
    assert rep["torch"]["version"] == torch.__version__ and rep["torch"]["attention"]["backend"] == "sdpa"
    assert rep["av"]["libx264"] is True and rep["weights"]["location"] == str(cli_env / "weights")
    assert rep["weights"]["free_disk_bytes"] > 0 and {c["check"] for c in rep["checks"]} >= {"libx264", "gpu"}

    missing = ltx("weights", "path", "t5-xxl")
    assert_one_error_line(missing, 3)


def test_weights_pull_verify_path_rm(hub: Any, cli_env: Path) -> None:
    data = os.urandom(4096)
    hub.add("Lightricks/LTX-Video", "ltxv-spatial-upscaler-0.9.8.safetensors", data)
    name = "ltxv-spatial-upscaler-0.9.8"
    dry = ltx("weights", "pull", name, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    (plan,) = json_lines(dry.stdout)
    assert plan["download_bytes"] == 4096 and not plan["files"][0]["present"]
    assert not hub.resolve_requests("GET")

    pulled = ltx("weights", "pull", name, "--json")
    assert pulled.exit_code == 0, pulled.stderr
    (obj,) = json_lines(pulled.stdout)
    local = cli_env / "weights" / "Lightricks" / "LTX-Video" / "ltxv-spatial-upscaler-0.9.8.safetensors"
    assert obj["paths"] == [str(local)] and local.read_bytes() == data
    assert ltx("weights", "path", name).stdout.strip() == str(local)
    # bytes are *_bytes in every --json (doctor's default_model_on_disk_bytes, pull's download_bytes)
    (row,) = [o for o in json_lines(ltx("weights", "list", "--json").stdout) if o["name"] == name]
    assert row["on_disk_bytes"] == 4096 and "size_on_disk" not in row
    # --json as its peers (list, pull, verify, rm) take it: one object, the entry's name and its local path
    assert json_lines(ltx("weights", "path", name, "--json").stdout) == [{"name": name, "path": str(local)}]
    assert_one_error_line(ltx("weights", "path", "t5-xxl", "--json"), 3)  # not downloaded: stdout stays empty
    ver = ltx("weights", "verify", name, "--json")
    assert ver.exit_code == 0 and json_lines(ver.stdout)[0]["files"][0]["source"] in ("hub", "record")

    local.write_bytes(b"x" * 4096)  # damaged copy: same size, other bytes
    assert_one_error_line(ltx("weights", "verify", name), 4)

    rm = ltx("weights", "rm", name, "--json")
    # a "status" as pull's and verify's
    assert rm.exit_code == 0 and json_lines(rm.stdout) == [{"name": name, "status": "ok", "removed": [str(local)]}]
    assert not local.exists()


def test_weights_verify_of_the_builtin_model_says_so(cli_env: Path) -> None:
    """`ltx weights verify tiny` printed nothing at all (and `--json` called it "ok" with no files)."""
    r = ltx("weights", "verify", "tiny")
    assert r.exit_code == 0 and r.stdout == "" and "tiny is built in: nothing to verify" in r.stderr, r.stderr
    r = ltx("weights", "verify", "tiny", "--json")
    assert r.exit_code == 0 and json_lines(r.stdout) == [{"name": "tiny", "status": "builtin", "files": []}]


def test_weights_rm_json_has_a_status_as_pull_and_verify(cli_env: Path) -> None:
    """`ltx weights rm --json` printed only `name` and `removed`: no `status`, which pull and verify print."""
    r = ltx("weights", "rm", "tiny", "ltxv-2b-0.9", "--json")  # built in; a model not downloaded
    assert r.exit_code == 0, r.stderr
    assert json_lines(r.stdout) == [{"name": "tiny", "status": "builtin", "removed": []},
                                    {"name": "ltxv-2b-0.9", "status": "ok", "removed": []}]


def test_weights_verify_all_goes_past_an_interrupted_download(hub: Any, cli_env: Path) -> None:
    """`ltx weights verify` (everything on disk) stopped at the first entry an interrupted pull left partial:
    exit 3 "not downloaded", and the entries after it were never checked."""
    done, cut = os.urandom(4096), os.urandom(8192)
    hub.add("Lightricks/LTX-Video", "ltxv-spatial-upscaler-0.9.8.safetensors", done)
    hub.add("Lightricks/LTX-Video", "ltxv-spatial-upscaler-0.9.7.safetensors", cut)  # before 0.9.8 in weights.toml
    assert ltx("weights", "pull", "ltxv-spatial-upscaler-0.9.8").exit_code == 0
    repo = cli_env / "weights" / "Lightricks" / "LTX-Video"
    (repo / "ltxv-spatial-upscaler-0.9.7.safetensors.partial").write_bytes(cut[:1000])
    assert ltx("weights", "list", "--json").stdout.count('"state": "partial"') == 1

    r = ltx("weights", "verify", "--json")
    assert r.exit_code == 0, r.stderr
    assert [o["name"] for o in json_lines(r.stdout)] == ["ltxv-spatial-upscaler-0.9.8"]
    assert "ltxv-spatial-upscaler-0.9.7 is partly downloaded, not verified: run `ltx weights pull" in r.stderr
    (repo / "ltxv-spatial-upscaler-0.9.8.safetensors").write_bytes(b"x" * 4096)  # still checked: exit 4
    assert "ltxv-spatial-upscaler-0.9.8.safetensors" in assert_one_error_line(ltx("weights", "verify", "-q"), 4)


def test_weights_pull_into_a_file_is_a_usage_error(hub: Any, cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ltx weights pull --weights-dir afile` failed with exit 1 and "[Errno 20] Not a directory: .../.cache/..."
    (rm already said "is a file, not a folder", exit 2)."""
    hub.add("Lightricks/LTX-Video", "ltxv-spatial-upscaler-0.9.8.safetensors", os.urandom(4096))
    (cli_env / "afile").write_text("x")

    def refused(*args: str) -> str:  # after the "pulling ... into" line: one error line, exit 2, no traceback
        r = ltx("weights", *args)
        assert r.exit_code == 2 and "Traceback" not in r.stderr, (r.exit_code, r.stderr)
        assert r.stderr.strip().splitlines()[-1].startswith("error: "), r.stderr
        return r.stderr.strip().splitlines()[-1]

    line = refused("pull", "ltxv-spatial-upscaler-0.9.8", "--weights-dir", "afile")
    assert "afile is a file, not a folder" in line and "--weights-dir" in line
    monkeypatch.setenv("LTX_WEIGHTS_DIR", str(cli_env / "afile"))  # the same through the environment, and for rm
    assert "afile is a file" in refused("pull", "ltxv-spatial-upscaler-0.9.8")
    assert "afile is a file" in refused("rm", "ltxv-spatial-upscaler-0.9.8")
    assert not hub.resolve_requests("GET") and (cli_env / "afile").read_text() == "x"


def test_generate_pulls_a_registry_model_then_runs(hub: Any, cli_env: Path) -> None:
    """A weights.toml model that is not downloaded is pulled (model + text encoder) and then generates."""
    from ltxcli.loading import save_official_checkpoint

    tiny = tiny_pipeline()
    save_official_checkpoint(cli_env / "ckpt.safetensors", transformer=tiny.transformer, vae=tiny.vae)
    hub.add("Lightricks/LTX-Video", "ltx-video-2b-v0.9.safetensors", (cli_env / "ckpt.safetensors").read_bytes())
    te = make_tiny_text_encoder(cli_env / "te")
    for f in sorted(p for p in te.rglob("*") if p.is_file()):
        hub.add("PixArt-alpha/PixArt-XL-2-1024-MS", f.relative_to(te).as_posix(), f.read_bytes())

    r = ltx("generate", "a cat", "--model", "ltxv-2b-0.9", "--steps", "2", "--stg-scale", "0", "--seed", "2",
            "--json", "-o", "reg.mp4", "--progress", "plain", *SMALL)
    assert r.exit_code == 0, r.stderr
    # --progress plain: a line as each download (and its hash check) starts, in MB
    size_mb = (cli_env / "ckpt.safetensors").stat().st_size // 10**6
    for verb in ("downloading", "verifying"):
        assert f"{verb} ltx-video-2b-v0.9.safetensors 0/{size_mb} MB" in r.stderr.splitlines(), r.stderr
    (obj,) = json_lines(r.stdout)
    assert obj["model"] == "ltxv-2b-0.9" and obj["settings"]["preset"] == "ltxv-2b-0.9"
    assert (cli_env / "weights" / "Lightricks" / "LTX-Video" / "ltx-video-2b-v0.9.safetensors").is_file()
    assert (cli_env / "weights" / "PixArt-alpha" / "PixArt-XL-2-1024-MS" / "text_encoder").is_dir()
    assert probe(cli_env / "reg.mp4")["frames"] == 9

    # the same checkpoint passed as a file, with the text encoder as a folder
    r2 = ltx("generate", "a cat", "--model", "ckpt.safetensors", "--text-encoder", "te", "--steps", "1",
             "--stg-scale", "0", "--seed", "2", "-o", "file.mp4", *SMALL)
    assert r2.exit_code == 0, r2.stderr
    assert probe(cli_env / "file.mp4")["record"]["model"] == "ckpt.safetensors"


def test_cpu_run_keeps_bf16_weights_unless_upcast_at_load(cli_env: Path) -> None:
    """A bf16 checkpoint on the CPU: layer weights stay bf16 (widened per call) by default, --upcast-at-load
    converts them while loading; the frames are the same code for code."""
    import copy

    from ltxcli.loading import save_official_checkpoint

    tiny = tiny_pipeline()
    save_official_checkpoint(cli_env / "bf16.safetensors", transformer=copy.deepcopy(tiny.transformer).bfloat16(),
                             vae=copy.deepcopy(tiny.vae).bfloat16())
    make_tiny_text_encoder(cli_env / "te")
    common = ["a cat", "--model", "bf16.safetensors", "--text-encoder", "te", "--steps", "2", "--stg-scale", "0",
              "--seed", "4", "--json", *SMALL]
    lazy = ltx("generate", *common, "--frames-dir", "lazy")
    eager = ltx("generate", *common, "--frames-dir", "eager", "--upcast-at-load")
    assert lazy.exit_code == 0, lazy.stderr
    assert eager.exit_code == 0, eager.stderr
    assert json_lines(lazy.stdout)[0]["kernels"]["upcast_layers"] > 0
    assert json_lines(eager.stdout)[0]["kernels"]["upcast_layers"] == 0
    assert torch.equal(frame_codes(cli_env / "lazy"), frame_codes(cli_env / "eager"))


# --------------------------------------------------------------------- kernels, offload, tiling, memory hints


def test_offload_tiling_attention_reach_load_pipeline_and_keep_the_frames(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--offload sequential --vae-tiling on --attention sdpa reach load_pipeline, the decode is tiled, and the
    PNG frames equal a plain run's code for code (offload moves weights only; tiling is exact by default)."""
    from ltxcli import kernels
    from ltxcli.memory import decode as decode_memory

    calls: list[dict[str, Any]] = []
    tiled: list[int] = []
    real_plan = decode_memory.plan_decode  # the pipeline's choice: a tiling plan, or None for an untiled decode

    def plan_decode(*args: Any, **kwargs: Any) -> Any:
        plan = real_plan(*args, **kwargs)
        if plan is not None:
            tiled.append(1)
        return plan

    def load(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return _cached_load(*args, **{**kwargs, "compile": False})  # --compile is checked for arrival only

    monkeypatch.setattr(decode_memory, "plan_decode", plan_decode)
    monkeypatch.setattr(ltxcli_api, "load_pipeline", load)
    # 128 x 192: large enough for an exact tiling plan with two windows (at 64 x 96, `on` must approximate)
    common = ["--model", "tiny", "--seed", "5", "--steps", "2", "--json", "--height", "128", "--width", "192",
              "--num-frames", "9"]
    r = ltx("generate", "a cat", "--frames-dir", "low", "--offload", "sequential", "--vae-tiling", "on",
            "--attention", "sdpa", *common)
    assert r.exit_code == 0, r.stderr
    (obj,) = json_lines(r.stdout)
    assert {k: calls[-1][k] for k in ("attention", "compile", "offload", "vae_tiling")} == {
        "attention": "sdpa", "compile": False, "offload": "sequential", "vae_tiling": "on"}
    assert (obj["settings"]["offload"], obj["settings"]["vae_tiling"]) == ("sequential", "on")
    assert obj["kernels"]["attention"]["requested"] == "sdpa" and obj["kernels"]["fp8_linear_layers"] == 0
    assert tiled == [1]

    plain = ltx("generate", "a cat", "--frames-dir", "plain", "--vae-tiling", "off", *common)
    assert plain.exit_code == 0, plain.stderr
    assert calls[-1]["offload"] == "none" and calls[-1]["vae_tiling"] == "off" and tiled == [1]
    # offload is bit-exact; the tiled decode agrees to ~1e-6, which may flip a code at a rounding boundary
    expected = tiny_pipeline().generate("a cat", seed=5, steps=2, height=128, width=192, num_frames=9).video
    assert torch.equal(frame_codes(cli_env / "plain"), media.to_uint8(expected))
    flipped = assert_codes_match(frame_codes(cli_env / "low"), expected)
    print(f"offload sequential + tiled decode vs plain: {flipped} of {expected.numel()} codes one off at a boundary")

    monkeypatch.setattr(kernels, "compile_available", lambda device: (True, "test"))
    c = ltx("generate", "a cat", "-o", "c.mp4", "--compile", "--offload", "model", *common)
    assert c.exit_code == 0, c.stderr
    assert calls[-1]["compile"] is True and calls[-1]["offload"] == "model" and calls[-1]["vae_tiling"] == "auto"


def test_vae_conv_reaches_load_pipeline_and_the_record(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--vae-conv winograd reaches load_pipeline and the record; its frames agree with the direct run's to a code
    flipped at a rounding boundary (the tiny model's auto default is the direct path, bit for bit)."""
    calls: list[dict[str, Any]] = []

    def load(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return _cached_load(*args, **kwargs)

    monkeypatch.setattr(ltxcli_api, "load_pipeline", load)
    common = ["--model", "tiny", "--seed", "5", "--steps", "2", "--json", *SMALL]
    objs = {}
    for conv in ("winograd", "direct"):
        r = ltx("generate", "a cat", "--frames-dir", conv, "--vae-conv", conv, *common)
        assert r.exit_code == 0, r.stderr
        (objs[conv],) = json_lines(r.stdout)
        assert calls[-1]["vae_conv"] == conv and objs[conv]["settings"]["vae_conv"] == conv
    r = ltx("generate", "a cat", "--frames-dir", "auto", *common)
    assert calls[-1]["vae_conv"] == "auto" and json_lines(r.stdout)[0]["settings"]["vae_conv"] == "auto"
    expected = tiny_pipeline().generate("a cat", seed=5, steps=2, height=64, width=96, num_frames=9).video
    assert torch.equal(frame_codes(cli_env / "direct"), media.to_uint8(expected))
    assert torch.equal(frame_codes(cli_env / "auto"), media.to_uint8(expected))
    flipped = assert_codes_match(frame_codes(cli_env / "winograd"), expected)
    print(f"--vae-conv winograd vs direct: {flipped} of {expected.numel()} codes one off at a boundary")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without these kernels")
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--attention", "flash3"], "flash3 needs the flash_attn_interface package"),
        (["--attention", "sage"], "sage needs the sageattention package"),
        (["--dtype", "fp8"], "--dtype fp8 needs an NVIDIA GPU with compute capability 8.9+ (Ada, Hopper, Blackwell); "
                             "this device is cpu (--weights-dtype int8 or fp8 stores the weights in one byte on any "
                             "device)"),
        (["--dtype", "fp8", "--weights-dtype", "int8"], "weights dtype int8 cannot be combined with dtype fp8"),
        (["--compile"], "--compile: no compiler here"),
        (["--attention", "nope"], "'nope' is not one of"),
        (["--offload", "disk"], "'disk' is not one of"),
        (["--vae-tiling", "maybe"], "'maybe' is not one of"),
        (["--vae-conv", "fft"], "'fft' is not one of"),
    ],
)
def test_unavailable_kernels_exit_2_before_anything_loads(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], needle: str
) -> None:
    from ltxcli import kernels

    loads: list[Any] = []
    monkeypatch.setattr(ltxcli_api, "load_pipeline", lambda *a, **k: loads.append(a))
    monkeypatch.setattr(kernels, "compile_available", lambda device: (False, "no compiler here"))
    # the default model: an unavailable kernel is refused before anything is downloaded (offline would exit 3)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = assert_one_error_line(ltx("generate", "a cat", "-o", "o.mp4", *args), 2)
    assert needle in line, line
    assert loads == [] and not (cli_env / "o.mp4").exists()
    assert not any((cli_env / "weights").iterdir())


def test_memory_hint_suggests_vae_tiling_then_auto_fits(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CPU the tiny model's peak is its decode: with the untiled decode just above the free memory the line
    suggests --vae-tiling on (offloading saves nothing on a CPU and is not offered); the default --vae-tiling
    auto tiles that decode and runs (at a size where the tiled windows plus the decoded video they fill on the
    host, the same memory on a CPU, fit where the untiled decode does not)."""
    from ltxcli.memory.decode import decode_memory_bytes
    from ltxcli.memory.weights import spec_parts
    from ltxcli.spec import resolve_spec

    _, vcfg, parts = spec_parts(resolve_spec("tiny"), torch.float32)
    wb = parts.total
    untiled = decode_memory_bytes(vcfg, (1, vcfg.latent_channels, 3, 8, 12), torch.float32)  # 256x384x17
    free = wb + untiled * 9 // 10
    monkeypatch.setattr(preflight, "free_memory_bytes", lambda device: free)
    args = ["generate", "a cat", "--model", "tiny", "--height", "256", "--width", "384", "--num-frames", "17",
            "--steps", "1", "-o", "o.mp4"]
    line = assert_one_error_line(ltx(*args, "--vae-tiling", "off"), 5)
    assert "try --vae-tiling on, which needs about" in line and "tiled decoding" in line
    assert "--offload" not in line and "or a smaller size, e.g. --height" in line
    ok = ltx(*args)
    assert ok.exit_code == 0, ok.stderr
    assert probe(cli_env / "o.mp4")["frames"] == 17


def test_memory_advice_for_a_duration_names_a_duration(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--duration 2` that would not fit was told "e.g. --height 128 --width 192 --num-frames 25", which cannot be
    given with --duration (exit 2): the smaller length is now a --duration, and the advice works as given."""
    from ltxcli.errors import oom_advice

    monkeypatch.setattr(preflight, "free_memory_bytes", lambda device: 40_000_000)
    args = ["generate", "a cat", "--model", "tiny", "--steps", "1", "-o", "o.mp4", "--json"]
    line = assert_one_error_line(ltx(*args, "--height", "256", "--width", "384", "--duration", "2"), 5)
    suggested = re.search(r"e\.g\. (--height \d+ --width \d+ --duration [\d.]+s),", line)
    assert suggested is not None and "--num-frames" not in line, line
    ok = ltx(*args, *suggested.group(1).split())
    assert ok.exit_code == 0, ok.stderr
    assert json_lines(ok.stdout)[0]["settings"]["num_frames"] == 25  # 1 s at 24 fps: 8k + 1 frames, not fewer
    assert "a shorter --duration" in oom_advice(["generate", "a cat", "--duration=2"])  # out of memory while running
    assert "--num-frames" not in oom_advice(["generate", "a cat", "--duration", "2"])


def test_memory_advice_for_an_extension_names_its_new_frames(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ltx extend` that would not fit was told "e.g. --height 128 --width 192 --num-frames 41" (output frames), which
    it refuses (exit 2: --num-frames must be the input's plus --frames): the smaller length is now its new frames,
    --frames N, the output N frames longer than the 17-frame input."""
    media.write_video(cli_env / "in.mp4", torch.rand(17, 32, 48, 3, generator=torch.Generator().manual_seed(0)), 24)
    monkeypatch.setattr(preflight, "free_memory_bytes", lambda device: 100_000_000)
    line = assert_one_error_line(ltx("extend", "in.mp4", "a cat", "--frames", "40", "--model", "tiny", "--steps", "1",
                                     "--height", "256", "--width", "384", "-o", "o.mp4"), 5)
    suggested = re.search(r"e\.g\. --height \d+ --width \d+ --frames (\d+),", line)
    assert suggested is not None and "--num-frames" not in line, line
    assert 0 < int(suggested.group(1)) < 40


@pytest.mark.parametrize(("input_frames", "new", "free"), [(17, 40, 100_000_000), (49, 8, 60_000_000)])
def test_memory_advice_for_an_extension_keeps_its_input_and_fits(cli_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 input_frames: int, new: int, free: int) -> None:
    """The smaller size an extension was told was priced at a shorter output, as if its input were shorter: a
    17-frame input with --frames 40 was told "e.g. --height 192 --width 288 --frames 24, which needs about 96.5 MB",
    which then needed 117.7 MB and was refused (exit 5) at 100 MB; a 49-frame input with --frames 8 was told
    "e.g. --height 128 --width 192 fewer --frames, which needs about 42.3 MB", priced at 25 output frames. The
    smaller size now keeps the input's frames, names its new ones (--frames N, 1 <= N < the asked), and the
    suggested run passes the same check (it goes on to load the model)."""
    clip = torch.rand(input_frames, 32, 48, 3, generator=torch.Generator().manual_seed(0))
    media.write_video(cli_env / "in.mp4", clip, 24)
    monkeypatch.setattr(preflight, "free_memory_bytes", lambda device: free)
    args = ["extend", "in.mp4", "a cat", "--model", "tiny", "--steps", "1", "-o", "o.mp4"]
    line = assert_one_error_line(ltx(*args, "--frames", str(new), "--height", "256", "--width", "384"), 5)
    assert 1 <= int(assert_suggestion_passes_the_checks(monkeypatch, args, line, "--frames")) < new


def assert_suggestion_passes_the_checks(monkeypatch: pytest.MonkeyPatch, args: list[str], line: str,
                                        length: str) -> str:
    """The smaller size ``line`` suggests (``e.g. --height H --width W <length> N``), run as ``args`` with it,
    passes every check before the model loads (the load is stubbed: a tiny run takes 20 s); returns its N."""
    suggested = re.search(rf"e\.g\. (--height \d+ --width \d+ {length} (\d+)),", line)
    assert suggested is not None, line
    loads: list[Any] = []
    monkeypatch.setattr(ltxcli, "load_pipeline", lambda *a, **k: loads.append(a))
    monkeypatch.setattr(ltxcli_api, "load_pipeline", lambda *a, **k: loads.append(a))
    r = ltx(*args, *suggested.group(1).split())
    assert r.exit_code not in (2, 5) and loads, f"the suggested {suggested.group(1)} was refused: {r.stderr}"
    return suggested.group(2)


@pytest.mark.parametrize("command", ["generate", "extend"])
def test_memory_advice_keeps_the_conditions_in_the_video(cli_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                         command: str) -> None:
    """A condition at frame 88 of a 97-frame video (at 50 of an extension of a 17-frame input by 40) was told a
    smaller size "e.g. --height 160 --width 224 --num-frames 57" ("--frames 16"), which is refused (exit 2: the
    condition's frame must be in the video, an extension's in its new frames): a shorter length now keeps every
    condition's frame in the video (--num-frames 89, --frames 34)."""
    media.write_video(cli_env / "in.mp4", torch.rand(17, 32, 48, 3, generator=torch.Generator().manual_seed(0)), 24)
    media.write_image(cli_env / "cond.png", torch.rand(32, 48, 3))
    monkeypatch.setattr(preflight, "free_memory_bytes", lambda device: 60_000_000)
    at, length, asked = (88, "--num-frames", "97") if command == "generate" else (50, "--frames", "40")
    args = [command, *(["in.mp4"] if command == "extend" else []), "a cat", "--condition", f"cond.png:{at}",
            "--model", "tiny", "--steps", "1", "-o", "o.mp4"]
    line = assert_one_error_line(ltx(*args, length, asked, "--height", "256", "--width", "384"), 5)
    n = int(assert_suggestion_passes_the_checks(monkeypatch, args, line, length))
    assert n < int(asked)


def test_memory_advice_for_a_long_video_keeps_its_length(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long video in windows ("a cat | a dog", --window 64, 161 frames) was told "e.g. --height 96 --width 128
    --num-frames 57": one window, which runs its first prompt alone (the dog never comes), to save little (its
    memory is one window's). A request that asks for windows keeps its length; the smaller size is a smaller
    --height/--width, and it passes every check before the model loads."""
    monkeypatch.setattr(preflight, "free_memory_bytes", lambda device: 40_000_000)
    args = ["generate", "a cat | a dog", "--window", "64", "--overlap", "32", "--model", "tiny", "--steps", "1",
            "-o", "o.mp4"]
    line = assert_one_error_line(ltx(*args, "--num-frames", "161", "--height", "256", "--width", "384"), 5)
    assert assert_suggestion_passes_the_checks(monkeypatch, args, line, "--num-frames") == "161"


def test_memory_advice_for_a_long_video_that_fits_no_smaller_size_names_a_smaller_window(
        cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no smaller size fits either (10.4 MB free: 9.9 MB of weights, and a 32x32 window denoises in 10.43 MB;
    at 11 MB a 32x32 one fits, its decode tiled beside the fused latents as the run tiles it), a long video in
    windows was told "try a smaller --height/--width or fewer --num-frames", the length its memory hardly depends on
    (one window's): it is told "a smaller --window"."""
    monkeypatch.setattr(preflight, "free_memory_bytes", lambda device: 10_400_000)
    line = assert_one_error_line(ltx("generate", "a cat | a dog", "--window", "64", "--model", "tiny", "--steps", "1",
                                     "--num-frames", "161", "--height", "256", "--width", "384", "-o", "o.mp4"), 5)
    assert "try a smaller --height/--width or a smaller --window;" in line and "frames" not in line, line


@pytest.mark.parametrize(("length", "key"), [({"num_frames": 97}, r'"num_frames": (\d+)'),
                                           ({"duration": "4s"}, r'"duration": "([\d.]+s)"'),
                                           ({"extend": {"video": "in.mp4", "frames": 40}}, r'"frames": (\d+) in "extend"')])
def test_memory_advice_for_a_batch_line_names_its_keys(cli_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                       length: dict[str, Any], key: str) -> None:
    """A --batch line that sets its own size was told "e.g. --height 160 --width 224 --num-frames 57", options
    that are only defaults for its items (the line's keys win): the same command with them was refused again, as
    much memory short. The advice now names the line's keys ("height": 160, "width": 224 and "num_frames",
    "duration" or the "frames" in "extend"), and the line with them passes every check before the model loads."""
    media.write_video(cli_env / "in.mp4", torch.rand(17, 32, 48, 3, generator=torch.Generator().manual_seed(0)), 24)
    monkeypatch.setattr(preflight, "free_memory_bytes", lambda device: 60_000_000)
    line = {"prompt": "a cat", "height": 256, "width": 384, **length}
    args = ["generate", "--batch", "b.jsonl", "--model", "tiny", "--steps", "1", "-o", "o{index}.mp4"]
    (cli_env / "b.jsonl").write_text(json.dumps(line))
    error = assert_one_error_line(ltx(*args), 5)
    suggested = re.search(r'e\.g\. "height": (\d+), "width": (\d+), ' + key + ",", error)
    assert suggested is not None and "--height" not in error, error
    value: Any = suggested.group(3) if "duration" in length else int(suggested.group(3))
    line.update(height=int(suggested.group(1)), width=int(suggested.group(2)))
    if "extend" in length:
        line["extend"]["frames"] = value
    else:
        line[next(iter(length))] = value
    (cli_env / "b.jsonl").write_text(json.dumps(line))
    loads: list[Any] = []
    monkeypatch.setattr(ltxcli, "load_pipeline", lambda *a, **k: loads.append(a))
    monkeypatch.setattr(ltxcli_api, "load_pipeline", lambda *a, **k: loads.append(a))
    r = ltx(*args)
    assert r.exit_code not in (2, 5) and loads, f"the suggested line {line} was refused: {r.stderr}"


def test_out_of_memory_advice_for_an_extension_names_its_new_frames() -> None:
    """Out of memory while running, ltx extend was told "fewer --num-frames", an option it refuses at any other
    value than its input's frames plus --frames: it is told "fewer --frames" (the new frames)."""
    from ltxcli.errors import oom_advice

    advice = oom_advice(["extend", "in.mp4", "a cat", "--frames", "40"])
    assert "fewer --frames" in advice and "--num-frames" not in advice, advice


def test_out_of_memory_advice_for_a_video_in_windows_names_a_smaller_window() -> None:
    """Out of memory while running a video in windows ("a | b", --window, --overlap, --prompt-schedule), ltx was
    told "fewer --num-frames" ("fewer --frames", "a shorter --duration"): its memory is one window's, which a
    shorter video hardly lowers (one window's length runs its first prompt alone). It is told "a smaller --window"."""
    from ltxcli.errors import oom_advice

    for args in (["generate", "a cat | a dog", "--num-frames", "161"], ["extend", "in.mp4", "a cat", "--window", "64"],
                 ["generate", "a cat", "--prompt-schedule=s.jsonl", "--duration", "60"],
                 ["i2v", "cat.png", "a cat", "--overlap", "24"]):
        advice = oom_advice(args)
        assert "a smaller --window" in advice and "fewer" not in advice and "shorter" not in advice, (args, advice)
    assert "fewer --num-frames" in oom_advice(["generate", "a cat", "--num-frames", "161"])  # not in windows


def test_memory_preflight_counts_offloaded_stages_and_suggests_offload(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU (estimated, nothing runs on it): weights per stage from the tiny modules themselves, and a free
    memory that holds the transformer stage but not every weight gets `try --offload model`."""
    from ltxcli.memory.plan import RunShape, request_estimator
    from ltxcli.memory.weights import spec_parts
    from ltxcli.spec import resolve_spec

    tiny = tiny_pipeline()

    def nbytes(module: Any) -> int:
        return sum(t.numel() * 4 for t in module.state_dict().values())

    stats = nbytes(tiny.vae.per_channel_statistics)
    everything = nbytes(tiny.transformer) + nbytes(tiny.vae)
    block = max(nbytes(b) for b in tiny.transformer.transformer_blocks)
    up_block = max(nbytes(b) for b in tiny.vae.decoder.up_blocks)
    resident = (nbytes(tiny.transformer) - sum(nbytes(b) for b in tiny.transformer.transformer_blocks)
                + nbytes(tiny.vae.decoder) - sum(nbytes(b) for b in tiny.vae.decoder.up_blocks) + stats)

    ref = resolve_spec("tiny")
    tcfg, vcfg, parts = spec_parts(ref, torch.float32)
    total = parts.total
    assert total == parts.total == everything
    item = BatchItem(index=0, prompt="x", seed=0, height=64, width=96, num_frames=9, frame_rate=24)

    def est(offload: str) -> Any:
        shape = RunShape.of_preset(ref.preset, guidance_scale=item.guidance_scale, stg_scale=item.stg_scale)
        return request_estimator(shape, tcfg, vcfg, weights_bytes=total, dtype=torch.float32,
                                 parts=parts, offload=offload, vae_tiling="off")(64, 96, 9)

    none, model, seq = est("none"), est("model"), est("sequential")
    assert none.peak_bytes == everything + max(none.transformer_bytes, none.vae_bytes)
    assert model.weights_bytes == nbytes(tiny.transformer) + stats
    assert model.decode_weights_bytes == nbytes(tiny.vae.decoder) + stats
    assert (seq.weights_bytes, seq.decode_weights_bytes) == (resident + 2 * block, resident + 2 * up_block)
    assert seq.peak_bytes < model.peak_bytes < none.peak_bytes

    free = (model.peak_bytes + none.peak_bytes) // 2
    monkeypatch.setattr(preflight, "free_memory_bytes", lambda device: free)
    opts = cli_generate.Options(vae_tiling="off")
    with pytest.raises(cli_common.CliError) as err:
        cli_generate.check_memory([item], [{}], ref, opts, device=torch.device("cuda"),
                                  dtype=torch.float32)
    assert err.value.code == 5
    msg = str(err.value)
    assert "on cuda but" in msg and "try --offload model, which needs about" in msg, msg
    # the same estimate on the CPU: offloading keeps every weight in the same memory, so it is not offered
    with pytest.raises(cli_common.CliError) as err:
        cli_generate.check_memory([item], [{}], ref, opts, device=torch.device("cpu"),
                                  dtype=torch.float32)
    assert "--offload" not in str(err.value)
    cli_generate.check_memory([item], [{}], ref, cli_generate.Options(vae_tiling="off", offload="model"),
                              device=torch.device("cuda"), dtype=torch.float32)


def test_gpus_option_is_checked_in_process(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "--gpus 0 must be at least 1" in assert_one_error_line(
        ltx("generate", "a cat", "--model", "tiny", "--gpus", "0", "-o", "o.mp4"), 2)
    # --gpus 1: this process runs it, no torchrun
    monkeypatch.setattr(parallel_launch, "launch", lambda *a: pytest.fail("--gpus 1 must not launch torchrun"))
    r = ltx("generate", "a cat", "--model", "tiny", "--gpus", "1", "--steps", "1", "-o", "o.mp4", *SMALL)
    assert r.exit_code == 0, r.stderr
    # under torchrun already: refused, not nested
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    line = assert_one_error_line(ltx("generate", "a cat", "--model", "tiny", "--gpus", "2", "-o", "p.mp4"), 2)
    assert "inside torchrun" in line
    assert parallel_launch.strip_option(["generate", "--gpus", "2", "x", "--gpus=3", "-o", "a", "--", "--gpus", "4"],
                                        "--gpus") == ["generate", "x", "-o", "a", "--", "--gpus", "4"]


# `ltx --gpus` up to where it starts its torchrun stage, which is not started: what it starts, and whether
# torch or transformers were imported by then
_LAUNCHER = """
import subprocess, sys
def started(cmd, **kwargs):
    print(cmd[1:3], "torch" in sys.modules, "transformers" in sys.modules)
    raise SystemExit(0)
subprocess.Popen = started
sys.argv = ["ltx", *sys.argv[1:]]
from ltxcli.cli import main
main()
"""


@pytest.mark.parametrize("device", [["--device", "cpu"], []])
def test_gpus_launcher_imports_no_torch(cli_env: Path, device: list[str]) -> None:
    """`ltx generate --gpus 2` imported torch (for the job's plan before the launch; without --device cpu, to count
    the GPUs), then started torchrun, which imported it again: seconds of start-up twice. It now starts `ltx`
    again as its torchrun stage, which makes those checks and runs torchrun itself, torch imported once."""
    r = subprocess.run([sys.executable, "-c", _LAUNCHER, "generate", "a cat", "--model", "tiny", "--gpus", "2",
                        *device, "-o", "o.mp4", *SMALL], env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "['-m', 'ltxcli'] False False\n"), r.stderr


@pytest.fixture
def stage(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], str | None]]:
    """Run the CLI as the torchrun stage of `ltx --gpus` (its checks in this process), torchrun not started:
    each start's (torchrun's arguments, the text given to the workers on stdin or None)."""
    from ltxcli.parallel import torchrun

    monkeypatch.setenv(parallel_launch.STAGE_ENV, "1")
    monkeypatch.setenv(parallel_launch.RANK_STATUS_ENV, str(cli_env))
    stdin: list[str] = []
    monkeypatch.setattr(torchrun, "_stdin_from", lambda path: stdin.append(path.read_text()))
    started: list[tuple[list[str], str | None]] = []

    def start() -> None:
        started.append((sys.argv[1:], stdin.pop() if stdin else None))
        monkeypatch.setenv(parallel_launch.STAGE_ENV, "1")  # (run_stage removes it for the workers)

    monkeypatch.setattr(torchrun, "main", start)
    return started


def test_gpus_reads_a_batch_pipe_once_and_hands_its_text_to_the_workers(cli_env: Path, stage: Any) -> None:
    """`--gpus 2 --batch <(...)`: the checks before the launch read the pipe, then the workers found it gone (a
    process substitution's /dev/fd/63 is not passed on: "no such file", exit 2) or empty (a FIFO: they waited for a
    writer for ever). The text read once goes to the workers on their stdin, as `--batch -`."""
    started = stage
    read, write = os.pipe()
    os.write(write, b"a cat\na dog\n")
    os.close(write)
    try:
        r = ltx("generate", "--batch", f"/dev/fd/{read}", "--gpus", "2", "--device", "cpu", "--model", "tiny",
                *SMALL, "-o", "o{index}.mp4")
    finally:
        os.close(read)
    assert r.exit_code == 0, r.stderr
    ((args, text),) = started
    assert text == "a cat\na dog\n" and args[args.index("--batch") + 1] == "-", started
    (cli_env / "b.txt").write_text("a cat\n")  # a file: read by every worker, by its name
    started.clear()
    r = ltx("generate", "--batch", "b.txt", "--gpus", "2", "--device", "cpu", "--model", "tiny", *SMALL)
    assert r.exit_code == 0, r.stderr
    ((args, text),) = started
    assert text is None and args[args.index("--batch") + 1] == "b.txt" and "--gpus" not in args, started


def test_launch_gives_a_piped_batch_to_torchrun_on_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = tmp_path / "seen"
    stand_in = f"import pathlib, sys; pathlib.Path({str(seen)!r}).write_text(repr(sys.argv[1:]) + sys.stdin.read())"
    monkeypatch.setattr(parallel_launch, "torchrun_command", lambda args, nproc, **k: [sys.executable, "-c",
                                                                                       stand_in, *args])
    assert parallel_launch.launch(["generate", "--batch=/dev/fd/63", "-o", "a"], 2, device="cpu",
                                  batch_text="a cat\n") == 0
    assert seen.read_text() == "['generate', '--batch', '-', '-o', 'a']a cat\n"


def test_a_multi_process_job_says_the_plans_warnings_once(cli_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                          stage: Any) -> None:
    """Every rank plans every item, and `--gpus` plans before it starts them: the plan's warnings (an empty prompt,
    an option that does nothing on the CPU) came once from the launcher and once from each rank. Rank 0 says
    them; the launcher and the other ranks only what their own items raise."""
    from contextlib import nullcontext

    from ltxcli.parallel import orchestrate
    from ltxcli.parallel.context import DistContext

    r = ltx("generate", "", "--model", "tiny", "--gpus", "2", "--device", "cpu", "-o", "o.mp4", *SMALL)
    assert r.exit_code == 0 and "warning" not in r.stderr and len(stage) == 1, r.stderr  # the stage's checks
    monkeypatch.delenv(parallel_launch.STAGE_ENV)
    # rank 1 of a batch shared over two processes (rank 0's seeds are its own here, no other rank at the barriers)
    monkeypatch.setattr(cli_generate, "distributed_context", lambda: nullcontext(DistContext(1, 2, 1, torch.device("cpu"))))
    monkeypatch.setattr(DistContext, "barrier", lambda self: None)
    monkeypatch.setattr(orchestrate, "from_rank0", lambda ctx, value: value)
    (cli_env / "p.jsonl").write_text('{"prompt": ""}\n{"prompt": "a dog"}\n')
    r = ltx("generate", "--batch", "p.jsonl", "--model", "tiny", "--offload", "model", "--steps", "1", "-o",
            "out/{index}.mp4", *SMALL)
    assert r.exit_code == 0 and "wrote out/1.mp4" in r.stderr and not (cli_env / "out" / "0.mp4").exists(), r.stderr
    assert "warning" not in r.stderr, r.stderr


def test_a_batch_rank_takes_the_download_turns_whatever_its_share(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ranks take turns downloading (barriers), so every rank must take them alike. A batch rank took them for
    the prompt enhancer of its own items only, and for the model only when its node missed files: a rank whose
    share was done (a resumed --skip-existing batch, fewer items than ranks) or whose node had the files met the
    others' barriers with its final one and left; they then failed on a closed connection."""
    from contextlib import nullcontext

    from ltxcli.enhance import stage as enhance_stage
    from ltxcli.parallel import orchestrate
    from ltxcli.parallel.context import DistContext

    barriers: list[int] = []
    monkeypatch.setattr(DistContext, "barrier", lambda self: barriers.append(self.rank))
    monkeypatch.setattr(cli_generate, "distributed_context", lambda: nullcontext(DistContext(1, 2, 1, torch.device("cpu"))))
    monkeypatch.setattr(orchestrate, "from_rank0", lambda ctx, value: value)
    monkeypatch.setattr(cli_generate, "ensure_downloaded", lambda names, **kwargs: None)
    # as a real enhancer model: pulled (or found in place) for the items of this rank that it rewrites
    monkeypatch.setattr(enhance_stage, "enhance_items", lambda todo, preset, *, download=None, **kwargs: download(["llm"]))
    (cli_env / "p.txt").write_text("a cat\na dog\n")
    counts = []
    for share_done in (True, False):  # rank 1's item (index 1) written already, or not
        (cli_env / "out").mkdir(exist_ok=True)
        if share_done:
            (cli_env / "out" / "1.mp4").write_bytes(b"done")
        else:
            (cli_env / "out" / "1.mp4").unlink()
        barriers.clear()
        r = ltx("generate", "--batch", "p.txt", "--model", "tiny", "--steps", "1", "--skip-existing", "-o",
                "out/{index}.mp4", *SMALL)
        assert r.exit_code == 0 and ("wrote out/1.mp4" in r.stderr) != share_done, r.stderr
        counts.append(len(barriers))
    assert counts[0] == counts[1] > 0, counts


def test_doctor_compares_free_disk_with_the_hub_sizes_of_the_default_model(hub: Any, cli_env: Path) -> None:
    """weights.toml pins no sizes, so doctor asks the Hub's listing (no download) for what the default needs."""
    from ltxcli.weights import load_registry

    reg = load_registry()
    sizes = {"model": 3000, "upsampler": 500}
    for entry in reg.closure(reg.default.name):
        if entry.kind in sizes:
            hub.add(entry.repo, entry.files[0].path, os.urandom(sizes[entry.kind]))
        else:  # the text encoder: one safetensors file and a tokenizer file
            hub.add(entry.repo, "text_encoder/model.safetensors", os.urandom(200))
            hub.add(entry.repo, "tokenizer/spiece.model", os.urandom(100))
    res = ltx("doctor", "--json")
    report = json.loads(res.stdout)
    assert report["weights"]["default_model_needs_bytes"] == 3000 + 500 + 200 + 100
    assert not hub.resolve_requests("GET")  # sizes only, nothing downloaded


def test_single_video_releases_the_text_encoder_after_encoding(cli_env: Path) -> None:
    res = ltx("generate", "a cat", "--model", "tiny", "-o", "one.mp4", *SMALL, "--steps", "1")
    assert res.exit_code == 0, res.stderr
    assert tiny_pipeline().free_text_encoder_after_use is True  # one item: released right after encoding


def test_condition_files_are_decoded_once_per_run(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13, point 5: the pre-load check decodes each condition file once and the pipeline uses those pixels;
    a file that two items of a batch use is read once for both."""
    from PIL import Image

    media.write_video(cli_env / "clip.mp4", torch.rand(17, 64, 96, 3), 24)
    Image.fromarray((torch.rand(64, 96, 3) * 255).to(torch.uint8).numpy()).save(cli_env / "key.png")
    opened: list[str] = []
    real_av_open, real_pil_open = av.open, Image.open

    def av_open(file: Any, *a: Any, **k: Any) -> Any:
        opened.append(Path(str(file)).name)
        return real_av_open(file, *a, **k)

    def pil_open(fp: Any, *a: Any, **k: Any) -> Any:
        opened.append(Path(str(fp)).name)
        return real_pil_open(fp, *a, **k)

    monkeypatch.setattr(av, "open", av_open)
    monkeypatch.setattr(Image, "open", pil_open)
    (cli_env / "b.jsonl").write_text(
        '{"prompt": "a cat", "conditions": ["clip.mp4:0", "key.png:16:0.8"], "output": "a.mp4"}\n'
        '{"prompt": "a dog", "conditions": ["clip.mp4:0"], "output": "b.mp4"}\n')
    result = ltx("generate", "--batch", "b.jsonl", "--model", "tiny", "--seed", "1", "--steps", "1",
                 "--height", "64", "--width", "96", "--num-frames", "25")
    assert result.exit_code == 0, result.stderr
    inputs = [name for name in opened if name in ("clip.mp4", "key.png")]
    assert sorted(inputs) == ["clip.mp4", "key.png"], opened


def test_per_command_option_helps_name_shared_options() -> None:
    """generation_command(helps=, hidden=) ignores a name that is no shared option: a typo would hide nothing."""
    from ltxcli.cli.generate import SHARED_OPTIONS
    from ltxcli.extend import EXTEND_OPTION_HELP, NOT_FOR_EXTEND, SOURCE_OPTION_HELP

    named = {*EXTEND_OPTION_HELP, *SOURCE_OPTION_HELP, *NOT_FOR_EXTEND}
    assert named <= set(SHARED_OPTIONS), named - set(SHARED_OPTIONS)


def test_out_of_memory_advice_names_only_options_the_command_takes(cli_env: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``ltx vae decode`` (and ``vae encode``/``roundtrip``, ``bench``) out of memory said "try --offload model,
    --vae-tiling on, a smaller --height/--width, fewer --num-frames", options these commands refuse (exit 2)."""
    from ltxcli import autoencode

    def oom(*args: Any, **kwargs: Any) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    media.write_video(cli_env / "clip.mp4", torch.rand(9, 64, 96, 3), 25)
    assert ltx("vae", "encode", "clip.mp4", "--model", "tiny", "-o", "lat.safetensors").exit_code == 0
    monkeypatch.setattr(autoencode.VideoAutoencoder, "decode", oom)
    monkeypatch.setattr(autoencode.VideoAutoencoder, "encode", oom)
    for args, allowed in [(["vae", "decode", "lat.safetensors", "-o", "d.mp4"], {"--dtype"}),
                          (["vae", "roundtrip", "clip.mp4", "--model", "tiny"], {"--max-frames", "--dtype"})]:
        line = assert_one_error_line(ltx(*args), 5)
        named = set(re.findall(r"--[a-z][a-z-]+", line))
        assert "out of memory" in line and named and named <= allowed, line
        again = [a for o in sorted(named) for a in (o, "float32" if o == "--dtype" else "9")]
        assert ltx(*args, *again).exit_code == 5  # each option the advice names is accepted


def test_window_options_on_a_one_window_video_are_said_to_be_ignored(cli_env: Path) -> None:
    """--overlap, --overlap-strength, --adain and --resume act between windows (or keep finished ones); a video
    made in one window (a 9-frame one here, even with --overlap, which asks for windows) ran without them, in
    silence. A warning names them; a video in two windows gets none, and a --from redo of a recorded one-window
    long video (whose record holds its window settings) gets none either."""
    r = ltx("generate", "a cat", "--model", "tiny", "--steps", "1", *SMALL, "--overlap", "8", "--overlap-strength",
            "0.5", "--adain", "0.5", "--resume", "--frames-dir", "a")
    assert r.exit_code == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert warned == ["warning: --overlap, --overlap-strength, --adain and --resume are ignored: the video is made "
                      "in one window (they act between windows)"], r.stderr
    r = ltx("generate", "a cat", "--model", "tiny", "--steps", "1", *SMALL, "--adain", "0.5", "--frames-dir", "b")
    assert "warning: --adain is ignored: the video is made in one window" in r.stderr
    assert "warning" not in ltx("generate", "--from", "a", "--frames-dir", "c").stderr
    r = ltx("generate", "a cat | a dog", "--model", "tiny", "--steps", "1", "--height", "64", "--width", "64",
            "--num-frames", "17", "--window", "16", "--overlap", "8", "--adain", "0.5", "--frames-dir", "d")
    assert r.exit_code == 0 and "warning" not in r.stderr, r.stderr


def test_a_negative_prompt_without_guidance_is_said_to_be_ignored(cli_env: Path) -> None:
    """A negative prompt acts through classifier-free guidance only (official: guidance_scale > 1 at some step);
    with guidance 1 (a distilled model's preset) --negative-prompt ran without it, in silence. A warning says so;
    with guidance it gets none, nor does a --from redo of the guidance-1 video (its record holds the negative
    prompt)."""
    args = ("generate", "a cat", "--model", "tiny", "--steps", "1", *SMALL, "--negative-prompt", "rain")
    r = ltx(*args, "--guidance-scale", "1", "--frames-dir", "a")
    assert r.exit_code == 0, r.stderr
    assert [line for line in r.stderr.splitlines() if line.startswith("warning: ")] == [
        "warning: --negative-prompt is ignored: it acts through classifier-free guidance alone, which guidance_scale "
        "1 (or less) turns off (give --guidance-scale above 1)"], r.stderr
    assert "warning" not in ltx(*args, "--guidance-scale", "3", "--frames-dir", "b").stderr
    assert "warning" not in ltx("generate", "--from", "a", "--frames-dir", "c").stderr


def test_crf_and_preset_with_frames_dir_are_said_to_be_ignored(cli_env: Path) -> None:
    """--crf and --preset tune the video encoder; --frames-dir writes lossless PNG frames, and both were dropped in
    silence. A warning says so (no other change); a --from redo of an MP4 (whose record holds its --crf and
    --preset) into PNG frames gets none."""
    args = ("generate", "a cat", "--model", "tiny", "--steps", "1", *SMALL)
    r = ltx(*args, "--crf", "10", "--preset", "slow", "--frames-dir", "a")
    assert r.exit_code == 0, r.stderr
    assert [line for line in r.stderr.splitlines() if line.startswith("warning: ")] == [
        "warning: --crf is ignored: --frames-dir writes lossless PNG frames, not a video file",
        "warning: --preset is ignored: --frames-dir writes lossless PNG frames, not a video file"], r.stderr
    made = ltx(*args, "--crf", "10", "--preset", "slow", "-o", "a.mp4")
    assert made.exit_code == 0 and "warning" not in made.stderr, made.stderr
    r = ltx("generate", "--from", "a.mp4", "--frames-dir", "b")
    assert r.exit_code == 0 and "warning" not in r.stderr, r.stderr


def test_stg_mode_without_stg_is_said_to_be_ignored(cli_env: Path) -> None:
    """--stg-mode says how STG perturbs the blocks it skips; with stg_scale 0 on every step no step runs STG
    (official: stg > 0), and --stg-mode was dropped in silence. A warning says so; with STG it gets none."""
    args = ("generate", "a cat", "--model", "tiny", "--steps", "1", *SMALL, "--stg-mode", "residual")
    r = ltx(*args, "--stg-scale", "0", "--frames-dir", "a")
    assert r.exit_code == 0, r.stderr
    assert [line for line in r.stderr.splitlines() if line.startswith("warning: ")] == [
        "warning: --stg-mode is ignored: no step runs STG, which stg_scale 0 turns off (give --stg-scale above 0)"
    ], r.stderr
    assert "warning" not in ltx(*args, "--stg-scale", "1", "--frames-dir", "b").stderr


def test_enhancer_and_captioner_no_rewrite_uses_are_said_to_be_ignored(cli_env: Path) -> None:
    """--enhancer-model rewrites prompts and --caption-model captions the first frame of an image-to-video
    rewrite; with --enhance-prompt off they were dropped in silence. A warning names each (which rewrites use
    which: test_enhance.py::test_unused_enhancer_models_are_those_no_rewrite_uses)."""
    r = ltx("generate", "a cat", "--model", "tiny", "--steps", "1", *SMALL, "--caption-model", "tiny",
            "--enhance-prompt", "off", "--enhancer-model", "tiny", "--frames-dir", "a")
    assert r.exit_code == 0, r.stderr
    assert [line for line in r.stderr.splitlines() if line.startswith("warning: ")] == [
        "warning: --enhancer-model is ignored: no prompt is rewritten (see --enhance-prompt)",
        "warning: --caption-model is ignored: no image-to-video prompt is rewritten (it captions their first frame)",
    ], r.stderr


def test_an_upsampler_for_a_one_pass_model_is_said_to_be_ignored(cli_env: Path) -> None:
    """The latent upsampler runs between a multi-scale model's two passes; a one-pass model's preset never runs
    it, and --upsampler was dropped in silence. A warning says so, once its file passed the checks every weight
    file gets (a pickle is still refused: test_hostile.py)."""
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, "up.safetensors")
    r = ltx("generate", "a cat", "--model", "tiny", "--steps", "1", *SMALL, "--upsampler", "up.safetensors",
            "--frames-dir", "a")
    assert r.exit_code == 0, r.stderr
    assert [line for line in r.stderr.splitlines() if line.startswith("warning: ")] == [
        "warning: --upsampler is ignored: tiny runs one pass at the requested size (an upsampler runs between the "
        "two passes of a multi-scale model)"], r.stderr


def test_an_upsampler_name_not_downloaded_for_the_tiny_model_is_only_said_to_be_ignored(cli_env: Path) -> None:
    """The tiny model pulls nothing, so a weights.toml upsampler it ignores is not on disk: its missing path went to
    the load as the string "None" ("error: None: no such file or folder, and not a name in weights.toml", exit 2)."""
    r = ltx("generate", "a cat", "--model", "tiny", "--steps", "1", *SMALL, "--upsampler",
            "ltxv-spatial-upscaler-0.9.8", "--frames-dir", "a")
    assert r.exit_code == 0, r.stderr
    assert [line for line in r.stderr.splitlines() if line.startswith(("warning: ", "error: "))] == [
        "warning: --upsampler is ignored: tiny runs one pass at the requested size (an upsampler runs between the "
        "two passes of a multi-scale model)"], r.stderr
    assert not any((cli_env / "weights").iterdir())  # nothing pulled for it


def test_ltx_extend_warns_of_options_it_ignores_as_ltx_generate_does(
        cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ltx extend ran --adain, --overlap-strength, --negative-prompt under guidance 1 and --stg-mode under stg 0
    without a word (exit 0) where ltx generate warns of each: the same warnings now, from its generation's windows
    and passes (16 new frames after a 9-frame context fit one 25-frame window; 24 need two: no window warning)."""
    from ltxcli import runner

    media.write_video(cli_env / "clip.mp4", torch.rand(9, 32, 32, 3, generator=torch.Generator().manual_seed(0)), 24)
    base = ["extend", "clip.mp4", "a cat", "--model", "tiny", "--steps", "1", "--seed", "5"]
    # the warnings are the plan's, said before the generation: each run is stopped there (no model work)
    monkeypatch.setattr(runner, "run_extension", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    r = ltx(*base, "--frames", "16", "--adain", "0.5", "--overlap-strength", "0.5", "--negative-prompt", "blur",
            "--guidance-scale", "1", "--stg-mode", "residual", "--stg-scale", "0", "--frames-dir", "a")
    assert r.exit_code == 130, r.stderr
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert warned == [
        "warning: --overlap-strength and --adain are ignored: the video is made in one window (they act between "
        "windows)",
        "warning: --negative-prompt is ignored: it acts through classifier-free guidance alone, which guidance_scale "
        "1 (or less) turns off (give --guidance-scale above 1)",
        "warning: --stg-mode is ignored: no step runs STG, which stg_scale 0 turns off (give --stg-scale above 0)",
    ], r.stderr
    for frames, warns in ((["--frames", "8", "--backward"], True), (["--frames", "24", "--window", "32"], False)):
        r = ltx(*base, *frames, "--overlap", "16", "--adain", "0.5", "--frames-dir", "b")
        assert r.exit_code == 130 and ("warning: --overlap and --adain are ignored" in r.stderr) == warns, r.stderr
