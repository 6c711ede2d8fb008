"""``ltx extend``, ``ltx v2v``, ``ltx generate --from``, video containers and quality, and progress output (issue 14,
points 3 and 4), run as a user runs them: real ``python -m ltxcli`` subprocesses with the tiny model for the
end-to-end claims, the in-process CliRunner (memoised model) for the option checks.

Bit-exact claims use lossless outputs: ``--frames-dir`` PNG frames hold the very 8-bit codes the run produced,
so ``--from`` is compared with the original run code for code, and an extension's copy of its input is compared
with the input's decoded codes (an H.264 output would re-encode them).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cli_harness
import pytest
import torch
from cli_harness import assert_one_error_line, enter_cli_env, frame_codes, json_lines, ltx, memoised_loader

from ltxcli import media
from ltxcli.progress import Heartbeat

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--height", "64", "--width", "96", "--num-frames", "9"]
_cached_load = memoised_loader()
_real_load = cli_harness.ltxcli_api.load_pipeline  # (tests that must load anew)
one_thread = cli_harness.one_thread


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return enter_cli_env(tmp_path, monkeypatch, _cached_load)


def run_ltx(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m ltxcli ARGS`` in ``cwd`` (stderr is a pipe, not a terminal), offline, one thread."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "LTX_WEIGHTS_DIR": str(cwd / "weights"),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("LTX_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "ltxcli", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300, check=False)


def decoded_codes(path: Path) -> torch.Tensor:
    """A video's frames as uint8 ``[F, H, W, 3]`` (what every reader of the file gets)."""
    return media.to_uint8(media.load_video(path))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-frame 96x64 input at 12 fps (not 8k + 1 frames, so the remainder rule is exercised)."""
    folder = tmp_path_factory.mktemp("clip")
    gen = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, 12)[:, None, None, None]
    frames = (0.6 * torch.rand(1, 64, 96, 3, generator=gen) + 0.4 * ramp).clamp(0, 1)
    return media.write_video(folder / "clip.mp4", frames, 12)


# --------------------------------------------------------------------------------------- extend


@pytest.mark.parametrize("backward", [False, True], ids=["forward-subprocess", "backward"])
def test_extend_adds_frames_and_keeps_the_input(cli_env: Path, clip: Path, backward: bool) -> None:
    args = ["extend", str(clip), "a cat walks", "--frames", "10", "--model", "tiny", "--seed", "3",
            "--frames-dir", "out", "--json", *(["--backward"] if backward else [])]
    if backward:  # in process (the memoised model): the same code path as the subprocess run of forward
        proc: Any = ltx(*args)
        assert proc.exit_code == 0, proc.stderr
    else:
        proc = run_ltx(cli_env, *args)
        assert proc.returncode == 0, proc.stderr
    (obj,) = json_lines(proc.stdout)
    codes, source = frame_codes(cli_env / "out"), decoded_codes(clip)
    assert codes.shape == (22, 64, 96, 3)  # 12 input frames + 10 new, at the input's size
    own, new = (codes[10:], codes[:10]) if backward else (codes[:12], codes[12:])
    assert torch.equal(own, source)  # the input's frames, code for code
    assert not torch.equal(new, source[:10])
    s = obj["settings"]
    assert (s["num_frames"], s["width"], s["height"], s["frame_rate"]) == (22, 96, 64, 12)
    # 12 frames: the context is 9 (8k + 1); forward: its last 9, backward: its first 9
    assert s["extend"] == {"video": str(clip), "frames": 10, "backward": backward, "context_frames": 9}
    assert s["conditions"] == []


def test_extend_to_mp4_length_and_refusals(cli_env: Path, clip: Path) -> None:
    r = ltx("extend", str(clip), "a cat", "--frames", "5", "--model", "tiny", "-o", "long.mp4")
    assert r.exit_code == 0, r.stderr
    with av.open("long.mp4") as c:
        assert sum(1 for _ in c.decode(video=0)) == 17
    assert media.read_video_metadata("long.mp4")["extend"]["frames"] == 5
    assert "--frames" in assert_one_error_line(ltx("extend", str(clip), "a cat", "--model", "tiny"), 2)
    line = assert_one_error_line(ltx("extend", str(clip), "x", "--frames", "0", "--model", "tiny"), 2)
    assert "frames=0 must be at least 1" in line
    line = assert_one_error_line(ltx("extend", str(clip), "x", "--frames", "4", "--num-frames", "9",
                                     "--model", "tiny"), 2)
    assert "has 16" in line
    assert_one_error_line(ltx("extend", "missing.mp4", "x", "--frames", "4", "--model", "tiny"), 6)


def test_extend_in_windows(cli_env: Path, clip: Path) -> None:
    """A '|' prompt with --window/--overlap makes windows: the 9-frame context and 24 new frames (33, 5 latent
    frames) run as windows [0, 4) and [2, 5) of latent frames (they used to be refused: "extending a video in
    windows is not supported yet"); the output is the input's 12 frames and the 24 new ones. Backward in windows
    (refused until now) the new frames come first: the input's 12 frames are the last ones, and the windows
    ([0, 3) and [1, 5): the generation is 24 new frames and the input's first 9) take the parts in time order."""
    r = ltx("extend", str(clip), "a cat | a dog", "--frames", "24", "--window", "32", "--overlap", "16", "--model",
            "tiny", "--steps", "1", "--seed", "3", "--frames-dir", "w", "--json")
    assert r.exit_code == 0, r.stderr
    (obj,) = json_lines(r.stdout)
    codes = frame_codes(cli_env / "w")
    assert codes.shape == (36, 64, 96, 3) and torch.equal(codes[:12], decoded_codes(clip))
    windows = obj["settings"]["long"]["windows"]
    assert [(w["first_frame"], w["num_frames"], w["prompt"]) for w in windows] == [(0, 25, "a cat"), (16, 17, "a dog")]
    r = ltx("extend", str(clip), "a cat | a dog", "--frames", "24", "--backward", "--window", "32", "--overlap", "16",
            "--model", "tiny", "--steps", "1", "--seed", "3", "--frames-dir", "back", "--json")
    assert r.exit_code == 0, r.stderr
    codes = frame_codes(cli_env / "back")
    assert codes.shape == (36, 64, 96, 3) and torch.equal(codes[24:], decoded_codes(clip))
    windows = json_lines(r.stdout)[0]["settings"]["long"]["windows"]
    assert [(w["first_frame"], w["num_frames"], w["prompt"]) for w in windows] == [(0, 17, "a cat"), (8, 25, "a dog")]
    # what acts between windows only has nothing to act on in one generation, as for a short `ltx generate`
    args = ("extend", str(clip), "a cat", "--frames", "4", "--model", "tiny", "--steps", "1", "--seed", "3")
    plain, with_adain = ltx(*args, "--frames-dir", "a"), ltx(*args, "--adain", "0.3", "--frames-dir", "b")
    assert plain.exit_code == 0 and with_adain.exit_code == 0, with_adain.stderr
    assert torch.equal(frame_codes(cli_env / "a"), frame_codes(cli_env / "b"))


def test_extend_with_a_drawn_seed_resumes_from_its_record(cli_env: Path, clip: Path) -> None:
    """--skip-existing with a {seed} pattern finds the extension an earlier run wrote by its record, as for every
    other kind of video (it used to generate a second file: the extension's settings never matched)."""
    args = ("extend", str(clip), "a cat", "--frames", "4", "--model", "tiny", "--steps", "1", "-o", "ext/{seed}.mp4",
            "--skip-existing", "--json")
    first, second = ltx(*args), ltx(*args)
    assert first.exit_code == 0 and second.exit_code == 0, (first.stderr, second.stderr)
    (a,), (b,) = json_lines(first.stdout), json_lines(second.stdout)
    assert (a["status"], b["status"], b["path"]) == ("ok", "skipped", a["path"])
    assert len(list((cli_env / "ext").iterdir())) == 1


@pytest.mark.parametrize("settings, changed", [
    (["a cat", "--num-frames", "9", "--temporal-upscale"], None),
    (["a cat | a dog", "--num-frames", "49", "--window", "32", "--overlap", "16"], ["--adain", "0.9"]),
    (["a cat | a dog", "--num-frames", "17"], None),
    (["a cat", "--num-frames", "9", "--condition", "CLIP:0"], None),
], ids=["temporal-upscale", "windows", "one-window-bar-prompt", "file-condition"])
def test_skip_existing_finds_what_a_drawn_seed_made(cli_env: Path, clip: Path, settings: list[str],
                                                    changed: list[str] | None) -> None:
    """--skip-existing with a drawn seed finds the earlier output by its record for a temporal upscale (the record
    holds the output's length; it used to regenerate), a long video (its windows' settings are compared: a new
    --adain makes a new video; they used to be ignored) and a '|' prompt made in one window (it used to record the
    first part only, and warn of "another prompt") and a file condition (compared by its path, which the checked
    item's decoded media lost: every rerun drew a new seed and wrote the batch again)."""
    settings = [str(clip) + a[4:] if a.startswith("CLIP") else a for a in settings]
    args = ("generate", *settings, "--model", "tiny", "--steps", "1", "--height", "64", "--width", "96", "-o",
            "out/{seed}.mp4", "--skip-existing", "--json")
    first, second = ltx(*args), ltx(*args)
    assert first.exit_code == 0 and second.exit_code == 0, (first.stderr, second.stderr)
    (a,), (b,) = json_lines(first.stdout), json_lines(second.stdout)
    # no warning but the clip's trimming (12 frames used as 9), which every run says: a user's reruns are processes
    # of their own (here one process, where Python may show a warning once)
    warned = [line for line in second.stderr.splitlines() if "warning" in line and "trimmed to its first" not in line]
    assert (a["status"], b["status"], b["path"], warned) == ("ok", "skipped", a["path"], [])
    if changed is not None:
        (c,) = json_lines(ltx(*args, *changed).stdout)
        assert c["status"] == "ok" and c["path"] != a["path"]


def _shown_options(command: str) -> dict[str, tuple[str, bool]]:
    """``ltx COMMAND``'s options as its --help renders them: name -> (help text, hidden)."""
    import typer.main

    from ltxcli.cli import app

    cmd = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {p.name: (p.help or "", p.hidden) for p in cmd.params if p.param_type_name == "option"}


def test_v2v_and_extend_help_give_the_input_video_s_defaults() -> None:
    """--height/--width/--num-frames/--frame-rate said "default: the preset's" in v2v and extend, which take the
    input video's (README); generate keeps the preset's."""
    for command in ("v2v", "extend"):
        shown = _shown_options(command)
        for name in ("height", "width", "num_frames", "frame_rate"):
            text = shown[name][0]
            assert "VIDEO's" in text and not text.endswith("(default: the preset's)."), (command, name, text)
    assert "VIDEO's plus --frames" in _shown_options("extend")["num_frames"][0]
    assert _shown_options("generate")["height"][0] == "Height in pixels (default: the preset's)."


def test_an_extension_s_prompt_schedule_is_redone_in_output_frames(cli_env: Path, clip: Path) -> None:
    """The record's windows count from the context's first frame (here output frame 11: a 1-frame context in
    16-frame windows), its schedule in output frames: --from restores the schedule at the windows' output frames
    ("b" from 20: the third window, at 27), so the same windows take the same prompts, to the same frames."""
    (cli_env / "s.jsonl").write_text('{"start": 0, "prompt": "a"}\n{"start": 20, "prompt": "b"}\n')
    first = ltx("extend", str(clip), "x", "--frames", "24", "--window", "16", "--overlap", "8", "--prompt-schedule",
                "s.jsonl", "--model", "tiny", "--steps", "1", "--seed", "3", "-o", "e.mp4", "--json")
    assert first.exit_code == 0, first.stderr
    windows = json_lines(first.stdout)[0]["settings"]["long"]["windows"]
    assert [(w["first_frame"], w["prompt"]) for w in windows] == [(0, "a"), (8, "a"), (16, "b")]
    again = ltx("generate", "--from", "e.mp4", "-o", "f.mp4", "--json")
    assert again.exit_code == 0, again.stderr
    assert json_lines(again.stdout)[0]["settings"]["long"]["windows"] == windows
    assert torch.equal(media.load_video(cli_env / "e.mp4"), media.load_video(cli_env / "f.mp4"))


def test_extend_help_leaves_out_the_long_video_options(cli_env: Path, clip: Path) -> None:
    """extend's --help listed --duration and --temporal-upscale, which an extension refuses; they stay accepted (a
    refusal is one line) but are not shown. The window options, --prompt-schedule (in output frames) and --resume
    are shown: an extension runs in windows. --no-temporal-upscale (of a --from record) is hidden alike;
    --latents-out (its new frames' latents) is shown. generate shows them all."""
    long = {"duration", "temporal_upscale", "no_temporal_upscale"}
    assert {name for name, (_, hidden) in _shown_options("extend").items() if hidden} == long
    assert not any(hidden for _, hidden in _shown_options("generate").values())
    # (v2v and i2v take no --from: their --no-temporal-upscale is always refused, and hidden as extend's)
    assert {name for name, (_, hidden) in _shown_options("v2v").items() if hidden} == {"no_temporal_upscale"}
    text = ltx("extend", "--help").stdout
    assert "--window" in text and "--resume" in text and "--backward" in text
    assert "in output frames" in _shown_options("extend")["prompt_schedule"][0]
    line = assert_one_error_line(ltx("extend", str(clip), "a cat", "--frames", "4", "--duration", "2",
                                     "--model", "tiny", "-o", "e.mp4"), 2)
    assert "duration is not supported with an extension" in line


def test_an_extension_refuses_what_it_does_not_run_before_loading(cli_env: Path, clip: Path) -> None:
    line = assert_one_error_line(ltx("extend", str(clip), "a cat", "--frames", "4", "--temporal-upscale",
                                     "--model", "tiny", "-o", "e.mp4"), 2)
    assert "temporal_upscale is not supported with an extension" in line and "loading" not in line
    assert not (cli_env / "e.mp4").exists()


def test_the_two_runs_a_refused_extension_upscale_names_make_the_extended_video_at_twice_the_rate(
        cli_env: Path) -> None:
    """`ltx extend --temporal-upscale` said "upscale the extended video" and no way to do it. It names the two
    commands, and they run as given (with the --model the line asks for on both): the extension of a 12-frame,
    12 fps clip by 8 frames (20 frames), then its video-to-video with the temporal upscale, 2 * 19 + 1 = 39 frames
    at 24 fps."""
    import re
    import shlex

    clip = media.write_video(cli_env / "clip.mp4", torch.linspace(0, 1, 12)[:, None, None, None].expand(12, 32, 32, 3), 12)
    line = assert_one_error_line(ltx("extend", str(clip), "a cat", "--frames", "8", "--temporal-upscale",
                                     "--model", "tiny"), 2)
    first, second = (shlex.split(c) for c in re.findall(r"`([^`]+)`", line))
    assert first == ["ltx", "extend", str(clip), "a cat", "--frames", "8", "-o", "clip-extended.mp4"]
    assert second == ["ltx", "v2v", "clip-extended.mp4", "a cat", "--strength", "0.3", "--temporal-upscale", "-o",
                      "clip-extended-2x.mp4"]
    for command in (first, second):
        r = ltx(*command[1:], "--model", "tiny", "--json")
        assert r.exit_code == 0, r.stderr
    settings = json_lines(r.stdout)[0]["settings"]
    assert (settings["num_frames"], settings["frame_rate"]) == (39, 24)
    assert settings["temporal_upscale"] == {"num_frames": 20, "frame_rate": 12}
    assert media.load_video(cli_env / "clip-extended-2x.mp4").shape == (39, 32, 32, 3)


def test_a_condition_longer_than_the_video_is_trimmed_with_a_warning(cli_env: Path, clip: Path) -> None:
    r = ltx("generate", "a cat", "--model", "tiny", "-c", f"{clip}:0", *SMALL)
    assert r.exit_code == 0, r.stderr
    assert "trimmed to its first 9 of 12 frames (only 9 fit from frame 0 of the 9-frame video" in r.stderr
    assert "ltx extend" in r.stderr
    r = ltx("generate", "a cat", "--model", "tiny", "-c", f"{clip}:0", *SMALL[:4], "--num-frames", "17")
    # shorter than the video, it is still cut to 8k + 1: 3 of its 12 frames went unused without a word, while
    # the official prepare_conditioning logs every trim ("Trimming conditioning video ... from 12 to 9 frames")
    assert r.exit_code == 0, r.stderr
    assert "warning: condition " + str(clip) + ": uses its first 9 of 12 frames (a video condition is used in " \
        "8k + 1 frames" in r.stderr, r.stderr
    assert r.stderr.count("warning") == 1


def test_the_python_api_says_when_a_condition_is_trimmed() -> None:
    """The library path (no CLI pre-check) trimmed silently: a 5-frame tensor at frame 4 kept only its first frame,
    a 12-frame file in a 9-frame video its first 9; each says so once."""
    from ltxcli import Condition
    from ltxcli.conditions import prepare_condition

    with pytest.warns(UserWarning) as caught:
        p = prepare_condition(Condition(torch.rand(5, 64, 96, 3), frame=4), 64, 96, 17, (0, 0, 0, 0))
    assert p.pixels.shape[2] == 1
    assert [str(w.message) for w in caught] == [
        "condition a Tensor: uses its first 1 of 5 frames (a video condition is used in 8k + 1 frames: give 1, 9, "
        "17, 25, ...)"]
    with pytest.warns(UserWarning) as caught:
        prepare_condition(Condition(torch.rand(12, 64, 96, 3)), 64, 96, 9, (0, 0, 0, 0))
    assert [str(w.message) for w in caught] == [
        "condition a Tensor: trimmed to its first 9 of 12 frames (only 9 fit from frame 0 of the 9-frame video, used "
        "in 8k + 1 frames; `ltx extend` makes a video longer than its input)"]


# --------------------------------------------------------------------------------------- v2v


def test_v2v_takes_the_input_size_length_and_rate(cli_env: Path, clip: Path) -> None:
    proc = ltx("v2v", str(clip), "a dog runs", "--strength", "0.5", "--model", "tiny", "--seed", "2", "-o",
               "dog.mp4", "--json")
    assert proc.exit_code == 0, proc.stderr
    (obj,) = json_lines(proc.stdout)
    s = obj["settings"]
    assert (s["num_frames"], s["width"], s["height"], s["frame_rate"]) == (12, 96, 64, 12)
    assert (s["video"], s["denoise_strength"]) == (str(clip), 0.5)
    assert s["passes"][0]["skip_initial_inference_steps"] == 2  # the last half of the tiny preset's 4 steps
    assert decoded_codes(cli_env / "dog.mp4").shape == (12, 64, 96, 3)


def test_a_duration_counts_at_the_input_video_s_rate(cli_env: Path, clip: Path) -> None:
    """v2v --duration: the seconds at the input's 12 fps (0.5 s: 9 frames), not the preset's 24 (17 frames, more
    than the 12-frame input has); --from with --duration replaces the recorded frame count (it was refused as
    "num_frames and duration"); an extension takes --frames, and --duration is refused in one line."""
    r = ltx("v2v", str(clip), "a dog", "--duration", "0.5", "--model", "tiny", "--steps", "2", "-o", "v.mp4", "--json")
    assert r.exit_code == 0, r.stderr
    (obj,) = json_lines(r.stdout)
    assert (obj["settings"]["num_frames"], obj["settings"]["frame_rate"]) == (9, 12)
    assert ltx("generate", "a cat", "--model", "tiny", "--frame-rate", "12", *SMALL, "-o", "g.mp4").exit_code == 0
    r = ltx("generate", "--from", "g.mp4", "--duration", "1", "-o", "w.mp4", "--json")
    assert r.exit_code == 0, r.stderr
    assert json_lines(r.stdout)[0]["settings"]["num_frames"] == 17  # 1 s at the recorded 12 fps: 8k + 1 >= 12
    line = assert_one_error_line(ltx("extend", str(clip), "a cat", "--frames", "4", "--duration", "2", "--model",
                                     "tiny", "-o", "e.mp4"), 2)
    assert "duration is not supported with an extension" in line


def test_v2v_that_would_start_from_pure_noise_is_refused_with_a_remedy(cli_env: Path, clip: Path) -> None:
    """One step at strength 0.5 keeps the whole schedule (timestep 1: the input drowned in noise); it used to fail
    after the model loaded with "a second pass (or video-to-video) needs a first timestep below 1"."""
    line = assert_one_error_line(ltx("v2v", str(clip), "a dog", "--steps", "1", "--model", "tiny", "-o", "v.mp4"), 2)
    assert line == "error: strength=0.5 keeps all 1 steps, from pure noise: use more steps (e.g. 3) or a lower strength"
    assert not (cli_env / "v.mp4").exists()


def test_v2v_strength_out_of_range_is_one_line(cli_env: Path, clip: Path) -> None:
    line = assert_one_error_line(ltx("v2v", str(clip), "x", "--strength", "1", "--model", "tiny"), 2)
    assert "strength=1" in line and "(0, 1)" in line


def test_v2v_of_a_truncated_file_uses_the_frames_that_decode(cli_env: Path) -> None:
    """An MP4 whose index (at the front) lists more frames than its cut-off data holds: its length used to come from
    the index, and the run failed after the model loaded with "18 frames; video-to-video at this length needs 41"."""
    cut, decodable = cli_harness.truncated_mp4(cli_env)
    r = ltx("v2v", "cut.mp4", "a dog", "--model", "tiny", "--steps", "2", "-o", "v.mp4", "--json")
    assert r.exit_code == 0, r.stderr
    assert f"lists 41 frames but only {decodable} can be decoded" in r.stderr
    assert json_lines(r.stdout)[0]["settings"]["num_frames"] == decodable
    # the first 9 frames asked for: decoding stops there (a long input is not decoded whole), nothing to warn of
    (cli_env / "cut9.mp4").write_bytes(cut.read_bytes())  # another file: not the one counted (and cached)
    r = ltx("v2v", "cut9.mp4", "a dog", "--num-frames", "9", "--model", "tiny", "--steps", "2", "-o", "v9.mp4")
    assert r.exit_code == 0 and "warning" not in r.stderr, r.stderr


def _vfr_clip(path: Path) -> Path:
    """A tiny variable-frame-rate MP4: 25 fps (40 ms) frames with two long holds, timestamps in milliseconds."""
    gen = torch.Generator().manual_seed(4)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width, stream.pix_fmt = 64, 64, "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        for pts in (0, 40, 80, 120, 160, 200, 240, 280, 320, 600, 640, 680, 720, 760, 1000, 1040, 1080):
            pixels = (torch.rand(64, 64, 3, generator=gen) * 255).to(torch.uint8).numpy()
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def test_extend_and_v2v_refuse_a_variable_frame_rate_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An extension of a variable-frame-rate video was made at its average rate (17 frames over 1.12 s: 15.18 fps):
    the input's own frames, spaced evenly, lost their timing (the holds gone, the motion slowed) and the new frames
    followed at that rate. Refused before the model loads, with the ffmpeg command that makes the rate constant."""
    def no_model(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the model was loaded")

    enter_cli_env(tmp_path, monkeypatch, no_model)
    vfr = _vfr_clip(tmp_path / "vfr.mp4")
    with av.open(str(vfr)) as container:  # the premise: uneven timestamps, 17 frames
        stream = container.streams.video[0]
        times = sorted(float(p.pts * stream.time_base) for p in container.demux(stream) if p.pts is not None)
    assert len(times) == 17 and times[9] - times[8] == pytest.approx(0.28)
    for args in (["extend", str(vfr), "a dog", "--frames", "8"], ["v2v", str(vfr), "a dog"],
                 ["extend", str(vfr), "a dog", "--frames", "8", "--frame-rate", "25"]):
        line = assert_one_error_line(ltx(*args, "--model", "tiny", "-o", "o.mp4"), 6)
        assert "variable frame rate" in line and f"ffmpeg -i {vfr} -vf fps=" in line, line
    assert not (tmp_path / "o.mp4").exists()


def test_a_truncated_input_is_not_taken_for_a_variable_frame_rate(cli_env: Path) -> None:
    """A file cut inside a reference frame: its last demuxed packet (cut off) shows two frames on, the B-frames
    before it gone, so the packets' times jumped and a batch's extension line (its input not decoded at planning)
    was refused as a variable frame rate, as was ltx v2v of it, while ltx extend of the same file (judged by the
    frames that decode) extended it. A truncated file is judged by the frames that decode, each time."""
    assert ltx("generate", "a", "--model", "tiny", "--steps", "1", "--height", "32", "--width", "32",
               "--num-frames", "17", "--seed", "1", "-o", "whole.mp4").exit_code == 0
    decoded = cli_harness.cut_inside_a_reference_frame(Path("whole.mp4"), Path("cut.mp4"))
    with av.open("cut.mp4") as container:  # the premise: the packets' times are uneven
        stream = container.streams.video[0]
        times = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
    assert len({b - a for a, b in itertools.pairwise(times)}) > 1
    # two lines: a batch of one decodes its input at planning, as ltx extend does
    (cli_env / "b.jsonl").write_text('{"prompt": "a dog", "extend": {"video": "cut.mp4", "frames": 8}}\na cat\n')
    r = ltx("generate", "--batch", "b.jsonl", "--model", "tiny", "--steps", "1", "-o", "out/{index}.mp4", "--json")
    assert r.exit_code == 0, r.stderr
    assert json_lines(r.stdout)[0]["settings"]["num_frames"] == decoded + 8
    media.check_constant_rate("cut.mp4", "ltx v2v")  # (ltx v2v's check)

def test_video_conditions_and_controls_refuse_a_variable_frame_rate_file(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A video condition (-c, ltx i2v's video) or an IC-LoRA control gives the output's frames one for one: a
    variable-frame-rate one was taken frame by frame (its 280 ms holds squeezed to one frame interval, its motion
    at the wrong times). Refused before the model loads, as for extend and v2v; only the frames used count."""
    def no_model(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the model was loaded")

    enter_cli_env(tmp_path, monkeypatch, no_model)
    vfr = _vfr_clip(tmp_path / "vfr.mp4")
    for args in (["i2v", "vfr.mp4", "a dog"], ["generate", "a dog", "-c", "vfr.mp4:0"],
                 ["generate", "a dog", "--control", "vfr.mp4"], ["generate", "a", "--control-from", "canny", "vfr.mp4"]):
        line = assert_one_error_line(ltx(*args, "--model", "tiny", "--height", "64", "--width", "64",
                                         "--num-frames", "17", "-o", "o.mp4"), 6)
        assert "variable frame rate" in line and "ffmpeg -i vfr.mp4 -vf fps=25" in line, line
    assert not (tmp_path / "o.mp4").exists()
    media.check_constant_rate(vfr, "a 9-frame use", 9)  # its first 9 frames are 40 ms apart: they may be used
    from ltxcli.conditions import prepare_condition
    from ltxcli.request import Condition

    with pytest.raises(media.MediaError, match="variable frame rate"):  # a Python caller's file, read at run time
        prepare_condition(Condition(str(vfr), 0), 64, 64, 17, (0, 0, 0, 0))


def test_suggested_commands_quote_the_input_s_name(tmp_path: Path) -> None:
    """A VFR input's conversion and `ltx generate --video`'s ltx v2v / ltx extend gave the file's name unquoted:
    `ffmpeg -i my vfr.mp4 ...` pasted gives FFmpeg "my"."""
    from ltxcli.redo import generate_row

    vfr = _vfr_clip(tmp_path / "my vfr.mp4")
    with pytest.raises(media.MediaError) as e:
        media.check_constant_rate(vfr, "ltx v2v")
    assert str(e.value).endswith(f"convert it first, e.g. ffmpeg -i '{tmp_path}/my vfr.mp4' -vf fps=25 "
                                  f"'{tmp_path}/my vfr-cfr.mp4'")
    with pytest.raises(ValueError) as e:
        generate_row(None, {"video": "my clip.mp4"})
    assert str(e.value).endswith("ltx v2v 'my clip.mp4' PROMPT, to continue it: ltx extend 'my clip.mp4' PROMPT --frames N")


def test_suggested_commands_name_the_input_as_typed(cli_env: Path) -> None:
    """`ltx v2v clips/anim.gif ...` suggested `ffmpeg -i anim.gif anim.mp4` (the base name): pasted in the folder the
    user typed it in, FFmpeg found no anim.gif. The input is named as typed and the output beside it."""
    from PIL import Image

    (cli_env / "clips").mkdir()
    frames = [Image.new("RGB", (32, 32), (60 * i, 0, 0)) for i in range(3)]
    frames[0].save(cli_env / "clips" / "anim.gif", save_all=True, append_images=frames[1:], duration=40)
    _vfr_clip(cli_env / "clips" / "vfr.mp4")
    line = assert_one_error_line(ltx("v2v", "clips/anim.gif", "a dog", "--model", "tiny", "-o", "o.mp4"), 6)
    assert line.endswith("(e.g. ffmpeg -i clips/anim.gif clips/anim.mp4)"), line
    line = assert_one_error_line(ltx("v2v", "clips/vfr.mp4", "a dog", "--model", "tiny", "-o", "o.mp4"), 6)
    assert line.endswith("e.g. ffmpeg -i clips/vfr.mp4 -vf fps=25 clips/vfr-cfr.mp4"), line
    line = assert_one_error_line(ltx("vae", "decode", "clips/vfr.mp4", "--model", "tiny", "-o", "o.mp4"), 6)
    assert line.endswith("`ltx vae encode clips/vfr.mp4` makes one"), line


def test_python_video_to_video_refuses_a_variable_frame_rate_file(tmp_path: Path) -> None:
    """`pipe.generate(video=...)` of a variable-frame-rate file ran (17 frames, their timing lost), while `ltx v2v`
    refuses it: the Python caller's file is checked where the pipeline reads it."""
    from ltxcli.conditions import prepare_video
    from ltxcli.presets import TINY_PRESET
    from ltxcli.request import GenerationRequest, resolve_request

    vfr = _vfr_clip(tmp_path / "vfr.mp4")
    r = resolve_request(GenerationRequest("a dog", video=str(vfr), num_frames=17, height=64, width=64, steps=3,
                                          frame_rate=15), TINY_PRESET)
    with pytest.raises(media.MediaError, match=r"variable frame rate.*video-to-video needs a constant rate"):
        prepare_video(r.video, r)


def test_python_video_to_video_takes_a_tensor_of_any_length(clip: Path) -> None:
    """`pipe.generate(video=TENSOR)` needed 8k + 1 frames (a 12-frame tensor at num_frames=12: "the input video has
    12 frames; video-to-video needs 17"), while a 12-frame file is used with its last frame repeated up to 17: a
    tensor follows the file's rule (at least num_frames frames, the first 8k + 1, the last one repeated)."""
    from ltxcli.conditions import prepare_video
    from ltxcli.presets import TINY_PRESET
    from ltxcli.request import GenerationRequest, resolve_request

    frames = media.load_video(clip)  # the file's own 12 frames, [12, 64, 96, 3]
    assert frames.shape == (12, 64, 96, 3)

    def resolved(video: Any, num_frames: int) -> Any:
        return resolve_request(GenerationRequest("a dog", video=video, num_frames=num_frames, height=64, width=96,
                                                 steps=3, frame_rate=12), TINY_PRESET)

    r = resolved(frames, 12)
    assert r.padded == (64, 96, 17)
    from_tensor, from_file = prepare_video(frames, r), prepare_video(str(clip), resolved(str(clip), 12))
    assert from_tensor.shape == from_file.shape == (1, 3, 17, 64, 96)
    used = frames.permute(3, 0, 1, 2)[None] * 2 - 1  # [1, 3, 12, 64, 96]: at the video's size, used as is
    assert torch.equal(from_tensor[:, :, :12], used)
    for pixels in (from_tensor, from_file):  # the last frame repeated up to 17
        assert torch.equal(pixels[:, :, 12:], pixels[:, :, 11:12].expand(-1, -1, 5, -1, -1))
    longer = torch.cat([frames, frames[:8]])  # 20 frames: the first 17, as a file's
    assert torch.equal(prepare_video(longer, r), torch.cat([used, longer[12:17].permute(3, 0, 1, 2)[None] * 2 - 1], 2))
    with pytest.raises(ValueError, match="11 frames; video-to-video at this length needs 12"):
        prepare_video(frames[:11], r)
    with pytest.raises(ValueError, match="12 frames; video-to-video at this length needs 13"):
        prepare_video(str(clip), resolved(str(clip), 13))


def test_run_batch_takes_size_and_length_from_a_v2v_tensor_as_from_a_file(clip: Path, tmp_path: Path) -> None:
    """run_batch filled a v2v FILE item's size and length from the file but gave a TENSOR item the preset's (128x192,
    17 frames, not the 12 the tensor holds): a tensor now gives what a file of its frames gives; having no frame
    rate, it keeps the item's or the preset's."""
    import ltxcli
    from ltxcli.extend import source_defaults
    from ltxcli.presets import TINY_PRESET

    frames = media.load_video(clip)  # [12, 64, 96, 3], 12 fps
    file_item, tensor_item = (ltxcli.BatchItem("a dog", video=v, denoise_strength=0.5, seed=1, steps=2)
                              for v in (str(clip), frames))
    pipe = ltxcli.load_pipeline("tiny")  # preset: 128x192, 17 frames at 24 fps
    results = list(ltxcli.run_batch(pipe, [file_item, tensor_item], output=str(tmp_path / "{index}.mp4"),
                                    write=False))
    assert [r.result.video.shape for r in results] == [(12, 64, 96, 3)] * 2
    assert (file_item.height, file_item.width, file_item.num_frames, file_item.frame_rate) == (64, 96, 12, 12.0)
    assert (tensor_item.height, tensor_item.width, tensor_item.num_frames, tensor_item.frame_rate) == (64, 96, 12, 24.0)
    big = ltxcli.BatchItem("a dog", video=torch.zeros(3, 256, 384, 3), denoise_strength=0.5, frame_rate=30.0)
    source_defaults(big, TINY_PRESET)  # above the preset's pixels: its aspect at the preset's area (scale 1/2)
    assert (big.height, big.width, big.num_frames, big.frame_rate) == (128, 192, 3, 30.0)
    given = ltxcli.BatchItem("a dog", video=frames, denoise_strength=0.5, height=32, width=32, num_frames=9)
    source_defaults(given, TINY_PRESET)  # what the item gives stays
    assert (given.height, given.width, given.num_frames, given.frame_rate) == (32, 32, 9, None)
    with pytest.raises(media.MediaError, match=r"expected a tensor \[F, H, W, 3\]"):  # before any model work
        source_defaults(ltxcli.BatchItem("a dog", video=torch.zeros(3, 64, 64), denoise_strength=0.5), TINY_PRESET)


def test_a_still_image_as_the_input_leaves_the_frame_rate_to_the_preset(tmp_path: Path) -> None:
    """`ltx extend still.png PROMPT --frames 8` (and `ltx v2v still.png`) wrote 25 fps: FFmpeg's image2 demuxer
    gives a picture, which has no frame rate, 25. A one-frame input now leaves the rate to the request or the
    preset (tiny: 24), as a v2v tensor does; its size is still the picture's."""
    from PIL import Image

    import ltxcli
    from ltxcli.presets import TINY_PRESET
    from ltxcli.request import Extension
    from ltxcli.source import source_defaults

    Image.new("RGB", (96, 64), (200, 10, 10)).save(tmp_path / "still.png")
    still = str(tmp_path / "still.png")
    for req in (ltxcli.GenerationRequest("a dog", video=still, denoise_strength=0.5),
                ltxcli.GenerationRequest("a dog", extend=Extension(still, frames=8))):
        source_defaults(req, TINY_PRESET)
        assert (req.frame_rate, req.height, req.width) == (None, 64, 96), req
    given = ltxcli.GenerationRequest("a dog", extend=Extension(still, frames=8), frame_rate=12.0)
    source_defaults(given, TINY_PRESET)
    assert given.frame_rate == 12.0


def test_v2v_longer_than_its_input_is_refused_before_the_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      clip: Path) -> None:
    """--num-frames (or --duration) beyond the input's 12 frames was refused only once the model had loaded."""
    def no_model(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the model was loaded")

    enter_cli_env(tmp_path, monkeypatch, no_model)
    line = assert_one_error_line(ltx("v2v", str(clip), "a dog", "--num-frames", "17", "--model", "tiny"), 2)
    assert "12 frames; video-to-video at this length needs 17 (at most 12" in line
    line = assert_one_error_line(ltx("v2v", str(clip), "a dog", "--duration", "2", "--model", "tiny"), 2)
    assert "12 frames; video-to-video at this length needs 25" in line  # 2 s at the input's 12 fps: 8k + 1


def test_an_animated_image_as_the_input_video_is_refused(cli_env: Path) -> None:
    """ltx reads an image's first frame only: an animated GIF given to v2v or extend used to become a 1-frame video
    (v2v) or a 1-frame context (extend), with no word."""
    from PIL import Image

    gen = torch.Generator().manual_seed(4)
    pictures = [Image.fromarray((torch.rand(48, 64, 3, generator=gen) * 255).to(torch.uint8).numpy())
                for _ in range(5)]
    pictures[0].save(cli_env / "anim.gif", save_all=True, append_images=pictures[1:], duration=100)
    line = assert_one_error_line(ltx("v2v", "anim.gif", "a dog", "--model", "tiny", "-o", "v.mp4"), 6)
    assert "anim.gif: an animated image (5 frames)" in line and "ffmpeg -i anim.gif anim.mp4" in line
    line = assert_one_error_line(ltx("extend", "anim.gif", "a dog", "--frames", "8", "--model", "tiny",
                                     "-o", "e.mp4"), 6)
    assert "an animated image (5 frames)" in line
    pictures[0].save(cli_env / "still.gif")  # one frame: an image, read as a 1-frame video as before
    r = ltx("v2v", "still.gif", "a dog", "--model", "tiny", "--steps", "2", "-o", "s.mp4", "--json")
    assert r.exit_code == 0, r.stderr
    assert json_lines(r.stdout)[0]["settings"]["num_frames"] == 1


# --------------------------------------------------------------------------------------- --from


def test_from_reproduces_the_frames_bit_for_bit(cli_env: Path) -> None:
    """The redo runs in a process of its own (a model loaded anew), the first run in this one (one process
    start, not two)."""
    tmp_path = cli_env
    first = ltx("generate", "a cat walks in the snow", "--model", "tiny", "--seed", "5", "--steps", "3",
                "--frames-dir", "a", *SMALL)
    assert first.exit_code == 0, first.stderr
    again = run_ltx(tmp_path, "generate", "--from", "a", "--frames-dir", "b", "--json")
    assert again.returncode == 0, again.stderr
    assert torch.equal(frame_codes(tmp_path / "b"), frame_codes(tmp_path / "a"))
    (obj,) = json_lines(again.stdout)
    assert (obj["prompt"], obj["seed"], obj["model"], obj["settings"]["steps"]) == ("a cat walks in the snow", 5,
                                                                                    "tiny", 3)


def test_from_an_mp4_record_reproduces_the_frames(cli_env: Path) -> None:
    assert ltx("generate", "a cat", "--model", "tiny", "--seed", "8", "--frames-dir", "a", *SMALL).exit_code == 0
    assert ltx("generate", "--from", "a", "-o", "again.mp4", "--crf", "0").exit_code == 0
    # the MP4's record redoes it too: PNG frames of a run redone from the MP4 are the first run's
    assert ltx("generate", "--from", "again.mp4", "--frames-dir", "c").exit_code == 0
    assert torch.equal(frame_codes(cli_env / "c"), frame_codes(cli_env / "a"))


@pytest.mark.parametrize("made_with", [
    ["a cat | a dog", "--num-frames", "49", "--window", "32", "--overlap", "16", "--adain", "0.9"],
    ["a cat", "--num-frames", "9", "--temporal-upscale"],
    ["a cat", "--num-frames", "9", "--control", "CLIP:0.8"],
    ["a cat", "--num-frames", "9", "--enhance-prompt", "on"],
    ["a cat", "--num-frames", "9", "--weights-dtype", "int8"],
    ["a cat", "--num-frames", "9", "--dtype", "bfloat16"],
], ids=["windows", "temporal-upscale", "control", "enhancement", "int8-weights", "bfloat16"])
def test_from_restores_windows_upscale_control_and_enhancement(cli_env: Path, clip: Path, made_with: list[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """--from redoes these bit for bit too: the record's long-video windows (non-default settings), temporal
    upscale (the record's length and rate are the output's), IC-LoRA control, enhancement mode, weight storage
    and compute dtype were dropped.
    (cli_env sets LTX_ENHANCE_PROMPT=off, which like an option given would replace the recorded mode.)"""
    monkeypatch.delenv("LTX_ENHANCE_PROMPT")
    args = [str(clip) + a[4:] if a.startswith("CLIP") else a for a in made_with]
    first = ltx("generate", *args, "--model", "tiny", "--seed", "5", "--steps", "1", "--height", "64", "--width", "96",
                "--frames-dir", "a")
    assert first.exit_code == 0, first.stderr
    again = ltx("generate", "--from", "a", "--frames-dir", "b")
    assert again.exit_code == 0, again.stderr
    assert torch.equal(frame_codes(cli_env / "b"), frame_codes(cli_env / "a"))


def test_from_reuses_the_recorded_enhanced_prompt(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--from encodes the recorded rewrite, with no enhancer run (it re-ran the preset's enhancer: another model
    than a run's --enhancer-model, and offline none); a new PROMPT (or seed) is rewritten anew."""
    from ltxcli.enhance import tiny
    from ltxcli.enhance.enhancer import PromptEnhancer

    monkeypatch.delenv("LTX_ENHANCE_PROMPT")
    first = ltx("generate", "a cat", "--enhance-prompt", "on", "--model", "tiny", "--seed", "5", "--steps", "1",
                *SMALL, "--frames-dir", "a", "--json")
    assert first.exit_code == 0, first.stderr
    rewrite = json_lines(first.stdout)[0]["enhanced_prompt"]
    from ltxcli.redo import redo_row

    assert redo_row("a", {})["enhanced_prompt"] == rewrite
    for given in ({"height": 96}, {"width": 128}, {"model": "tiny"}):  # the caption's crop, the preset's enhancer
        assert "enhanced_prompt" not in redo_row("a", given), given
    real = PromptEnhancer.enhance
    monkeypatch.setattr(PromptEnhancer, "enhance", lambda *a, **k: pytest.fail("the enhancer ran"))
    again = ltx("generate", "--from", "a", "--frames-dir", "b", "--json")
    assert again.exit_code == 0, again.stderr
    assert json_lines(again.stdout)[0]["enhanced_prompt"] == rewrite
    assert torch.equal(frame_codes(cli_env / "b"), frame_codes(cli_env / "a"))
    monkeypatch.setattr(PromptEnhancer, "enhance", real)
    for args, prompt, seed in ((["a dog"], "a dog", 5), (["--seed", "6"], "a cat", 6)):
        r = ltx("generate", "--from", "a", *args, "--frames-dir", f"c{seed}", "--json")
        assert r.exit_code == 0, r.stderr
        assert json_lines(r.stdout)[0]["enhanced_prompt"] == PromptEnhancer.from_models(
            tiny.build()[:2]).enhance(prompt, seed=seed)


def test_from_restores_the_vae_convolutions_tiling_and_attention(cli_env: Path) -> None:
    """--vae-conv, --vae-tiling and --attention change the pixels: --from restored none of them (it ran auto, one
    code value off after Winograd), and the attention option was not even recorded. Options given still win, an
    explicit auto too."""
    made = ["--vae-conv", "winograd", "--vae-tiling", "on", "--attention", "math"]
    first = ltx("generate", "a cat", "--model", "tiny", "--seed", "4", "--steps", "2", *made, "--frames-dir", "a",
                "--json")
    assert first.exit_code == 0, first.stderr
    again = ltx("generate", "--from", "a", "--frames-dir", "b", "--json")
    assert again.exit_code == 0, again.stderr
    s = json_lines(again.stdout)[0]["settings"]
    assert (s["vae_conv"], s["vae_tiling"], s["attention"]) == ("winograd", "on", "math")
    assert torch.equal(frame_codes(cli_env / "b"), frame_codes(cli_env / "a"))
    r = ltx("generate", "--from", "a", "--vae-conv", "auto", "--vae-tiling", "off", "--attention", "sdpa",
            "--frames-dir", "c", "--json")
    assert r.exit_code == 0, r.stderr
    s = json_lines(r.stdout)[0]["settings"]
    assert (s["vae_conv"], s["vae_tiling"], s["attention"]) == ("auto", "off", "sdpa")


def test_from_keeps_a_recorded_auto_vae_conv_when_the_calibration_changes(
        cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CPU --vae-conv auto runs the calibration's measured choice (auto's Winograd rule, or direct: they
    round differently on a real model), which the record keeps as it ran; --from measured again, so a recorded
    auto ran direct after a new calibration chose that. An auto given on the command line is still measured. The
    tiny model is too narrow to be measured: the calibration is stood in, and loads are not memoised."""
    from ltxcli import api, calibrate

    for target in (api, cli_harness.ltxcli):
        monkeypatch.setattr(target, "load_pipeline", _real_load)

    def calibrated(conv: str) -> None:
        monkeypatch.setattr(calibrate, "for_configs", lambda *a, **k: calibrate.CpuChoices(True, True, conv, {}))

    calibrated("auto")
    first = ltx("generate", "a cat", "--model", "tiny", "--seed", "4", "--steps", "1", "--num-frames", "9",
                "--frames-dir", "a", "--json")
    assert first.exit_code == 0, first.stderr
    calibrated("direct")
    for given, conv in (([], "auto"), (["--vae-conv", "auto"], "direct")):
        r = ltx("generate", "--from", "a", *given, "--frames-dir", f"b{len(given)}", "--json")
        assert r.exit_code == 0, r.stderr
        assert json_lines(r.stdout)[0]["settings"]["vae_conv"] == conv, given


def test_from_encodes_the_video_as_recorded(cli_env: Path) -> None:
    """--crf and --preset were not recorded: a lossless video was redone at CRF 18. A video's record keeps its
    encoding (PNG frames: none) and --from restores it for an output of the same encoder (VP9 has no preset and
    another CRF scale); options given still win."""
    made = ltx("generate", "a cat", "--model", "tiny", "--seed", "5", "--steps", "1", *SMALL, "--crf", "0",
               "--preset", "veryfast", "-o", "c.mp4")
    assert made.exit_code == 0, made.stderr
    lossless = {"encoder": "libx264", "crf": 0, "preset": "veryfast"}
    assert media.read_video_metadata("c.mp4")["encoding"] == lossless
    assert ltx("generate", "--from", "c.mp4", "-o", "r.mp4").exit_code == 0
    assert media.read_video_metadata("r.mp4")["encoding"] == lossless
    assert torch.equal(decoded_codes(cli_env / "r.mp4"), decoded_codes(cli_env / "c.mp4"))
    for args, name, encoding in ((["--crf", "30"], "g.mp4", {**lossless, "crf": 30}),
                                 ([], "w.webm", {"encoder": "libvpx-vp9", "crf": 18})):
        r = ltx("generate", "--from", "c.mp4", *args, "-o", name)
        assert r.exit_code == 0, r.stderr
        assert media.read_video_metadata(name)["encoding"] == encoding
    assert ltx("generate", "--from", "c.mp4", "--frames-dir", "f").exit_code == 0
    assert "encoding" not in media.read_video_metadata(cli_env / "f" / "frame_00000.png")


def test_from_restores_a_prompt_schedule_whose_prompts_hold_a_bar(cli_env: Path) -> None:
    """The windows' prompts came back as "p1 | p2 | ...", which split "a cat | a dog" again: the redo restores
    them as a schedule (each window's prompt from its first frame) and keeps the recorded PROMPT; a new PROMPT
    replaces the schedule, as it replaced the joined prompts."""
    Path("sched.jsonl").write_text('{"start": 0, "prompt": "a cat | a dog"}\n{"start": 30, "prompt": "a bird"}\n')
    made = ["x", "--num-frames", "81", "--window", "33", "--overlap", "9", "--prompt-schedule", "sched.jsonl"]
    first = ltx("generate", *made, "--model", "tiny", "--seed", "5", "--steps", "1", "--height", "64", "--width",
                "96", "--frames-dir", "o", "--json")
    assert first.exit_code == 0, first.stderr
    again = ltx("generate", "--from", "o", "--frames-dir", "r", "--json")
    assert again.exit_code == 0, again.stderr
    (was,), (now,) = json_lines(first.stdout), json_lines(again.stdout)
    prompts = [w["prompt"] for w in was["settings"]["long"]["windows"]]
    assert (prompts[0], prompts[-1]) == ("a cat | a dog", "a bird")
    assert now["settings"]["long"] == was["settings"]["long"] and now["prompt"] == "x"
    assert torch.equal(frame_codes(cli_env / "r"), frame_codes(cli_env / "o"))
    new = ltx("generate", "--from", "o", "a fish", "--frames-dir", "n", "--json")  # a new PROMPT: every window's
    assert new.exit_code == 0, new.stderr
    assert {w["prompt"] for w in json_lines(new.stdout)[0]["settings"]["long"]["windows"]} == {"a fish"}


def test_from_redoes_a_one_window_prompt_schedule_whose_prompt_holds_a_bar(cli_env: Path) -> None:
    """A schedule that fits one window: its entry "a cat | a dog" made the video whole, but the record kept it as
    PROMPT (while --json said the PROMPT given), so --from split it and made "a cat"'s video. The record keeps
    the PROMPT given and the window under "long", as a longer video's does."""
    Path("sched.jsonl").write_text('{"start": 0, "prompt": "a cat | a dog"}\n')
    size = ["--model", "tiny", "--seed", "3", "--steps", "1", "--height", "64", "--width", "64", "--num-frames", "9"]
    first = ltx("generate", "x", "--prompt-schedule", "sched.jsonl", *size, "--frames-dir", "o", "--json")
    assert first.exit_code == 0, first.stderr
    (was,) = json_lines(first.stdout)
    recorded = media.read_video_metadata(cli_env / "o" / "frame_00000.png")
    assert recorded["prompt"] == was["prompt"] == "x"
    assert [w["prompt"] for w in recorded["long"]["windows"]] == ["a cat | a dog"]
    again = ltx("generate", "--from", "o", "--frames-dir", "r", "--json")
    assert again.exit_code == 0, again.stderr
    assert torch.equal(frame_codes(cli_env / "r"), frame_codes(cli_env / "o"))
    assert ltx("generate", "a cat", *size, "--frames-dir", "c").exit_code == 0  # what the split prompt made
    assert not torch.equal(frame_codes(cli_env / "c"), frame_codes(cli_env / "o"))


def test_from_keeps_the_record_but_for_the_given_options(cli_env: Path, clip: Path) -> None:
    assert ltx("extend", str(clip), "a cat", "--frames", "3", "--model", "tiny", "--seed", "4", "-o",
               "ext.mp4").exit_code == 0
    r = ltx("generate", "--from", "ext.mp4", "a dog", "--seed", "9", "-o", "redo.mp4", "--json")
    assert r.exit_code == 0, r.stderr
    (obj,) = json_lines(r.stdout)
    assert (obj["prompt"], obj["seed"], obj["settings"]["num_frames"]) == ("a dog", 9, 15)
    assert obj["settings"]["extend"]["video"] == str(clip)
    media.write_video("plain.mp4", torch.rand(9, 64, 96, 3), 24)
    assert "no ltx generation record" in assert_one_error_line(ltx("generate", "--from", "plain.mp4"), 2)
    assert_one_error_line(ltx("generate", "--from", "ext.mp4", "--batch", "x.txt"), 2)


# --------------------------------------------------------------------------------------- containers and quality


def test_containers_crf_and_preset(cli_env: Path) -> None:
    sizes = {}
    for name, extra in (("a.mkv", ["--crf", "0"]), ("b.mkv", ["--crf", "40"]), ("c.mov", ["--preset", "ultrafast"]),
                        ("d.webm", ["--crf", "30"])):
        r = ltx("generate", "a cat", "--model", "tiny", "--seed", "1", "-o", name, *extra, *SMALL)
        assert r.exit_code == 0, r.stderr
        with av.open(name) as c:
            s = c.streams.video[0]
            assert sum(1 for _ in c.decode(s)) == 9
            assert s.codec_context.name == ("vp9" if name.endswith(".webm") else "h264")
        assert media.read_video_metadata(name)["seed"] == 1  # the record travels in every container
        sizes[name] = Path(name).stat().st_size
    assert sizes["a.mkv"] > 2 * sizes["b.mkv"]  # lossless is larger than CRF 40
    for args, needle in ((["-o", "x.mp4", "--crf", "52"], "0..51"), (["-o", "x.webm", "--crf", "64"], "0..63"),
                         (["-o", "x.webm", "--preset", "fast"], "applies to H.264"),
                         (["-o", "x.mp4", "--preset", "warp"], "not an x264 preset"), (["-o", "x.avi"], ".webm")):
        assert needle in assert_one_error_line(ltx("generate", "a cat", "--model", "tiny", *args, *SMALL), 2)


def test_webm_without_vp9_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = av.codec.Codec

    def codec(name: str, mode: str = "r") -> Any:
        if name == "libvpx-vp9":
            raise av.codec.codec.UnknownCodecError(name)
        return real(name, mode)

    monkeypatch.setattr(av.codec, "Codec", codec)
    with pytest.raises(ValueError, match="needs the libvpx-vp9 encoder, which this PyAV's FFmpeg lacks"):
        media.video_format("x.webm")
    assert media.video_format("x.mkv") == ("matroska", "libx264")


# --------------------------------------------------------------------------------------- progress


def test_progress_plain_prints_stage_lines_and_batch_indices_from_0(cli_env: Path) -> None:
    (cli_env / "p.txt").write_text("a cat\na dog\n")
    args = ["generate", "--batch", "p.txt", "--model", "tiny", "--seed", "1", "--steps", "2", "-o", "out/", *SMALL]
    plain = ltx(*args, "--progress", "plain")  # in process: stderr is not a terminal there either
    assert plain.exit_code == 0, plain.stderr
    lines = plain.stderr.splitlines()
    for i in (0, 1):
        for stage in ("encoding prompt 0/1 prompts", "denoising 0/2 steps", "decoding 0/1 tiles",
                      "writing 0/9 frames"):
            assert f"[{i}] {stage}" in lines, plain.stderr
    assert "loading tiny" in lines



def test_no_progress_lines_by_default_off_a_terminal(cli_env: Path) -> None:
    quiet = ltx("generate", "a cat", "--model", "tiny", *SMALL)  # stderr is not a terminal: no progress by default
    assert quiet.exit_code == 0, quiet.stderr
    assert not [line for line in quiet.stderr.splitlines() if "denoising" in line or "loading" in line]
    silent = ltx("generate", "a cat", "--model", "tiny", "--seed", "1", "--progress", "plain", "--json", "-q", *SMALL,
                 "-o", "q.mp4")
    assert silent.exit_code == 0 and silent.stderr == ""  # -q silences the heartbeat too
    assert json.loads(silent.stdout)["seed"] == 1


def test_heartbeat_at_most_every_10_s() -> None:
    now = [0.0]
    lines: list[str] = []
    beat = Heartbeat(lines.append, "[2]", clock=lambda: now[0])
    beat("denoise", 0, 40)
    for step in range(1, 41):
        now[0] += 1.0  # one step per second
        beat("denoise", step, 40)
    assert lines == ["[2] denoising 0/40 steps", "[2] denoising 10/40 steps, 1 steps/s, 30 s left",
                     "[2] denoising 20/40 steps, 1 steps/s, 20 s left", "[2] denoising 30/40 steps, 1 steps/s, 10 s left",
                     "[2] denoising 40/40 steps, 1 steps/s, took 40.0 s"]
    beat("denoise", 0, 8)  # a second pass restarts the count: a stage of its own, announced at once
    beat("decode", 0, 1)
    assert lines[-2:] == ["[2] denoising (pass 2) 0/8 steps", "[2] decoding 0/1 tiles"]


def test_resumed_windows_do_not_count_in_the_pace() -> None:
    """A long video resumed after 5 of 13 windows: the pace counts only the windows done in this run."""
    now = [100.0]
    lines: list[str] = []
    beat = Heartbeat(lines.append, clock=lambda: now[0], interval=0.0)
    beat("window", 5, 13)  # the run starts with 5 windows already done
    now[0] += 4.0
    beat("window", 6, 13)  # one window in 4 s: 0.25 windows/s, 7 left -> 28 s
    assert lines == ["long video 5/13 windows", "long video 6/13 windows, 0.25 windows/s, 28 s left"]


# --------------------------------------------------------------------------------------- the library rules


def test_extension_plan_on_the_8k_plus_1_grid() -> None:
    from ltxcli.extend import plan_extension

    fwd = plan_extension(12, 10, False, longest=257)  # context: the last 9 of 12 input frames, at frame 0
    assert (fwd.context, fwd.context_start, fwd.lead, fwd.gen_frames) == (9, 3, 0, 19)
    assert (fwd.gen_frame(12), fwd.gen_frame(21)) == (9, 18)  # output frame -> generation frame
    back = plan_extension(12, 10, True, longest=257)  # 10 new frames: 16 generated before the context
    assert (back.context, back.context_start, back.lead, back.gen_frames) == (9, 0, 16, 25)
    assert (back.gen_frame(0), back.gen_frame(9)) == (6, 15)
    with pytest.raises(ValueError, match="outside the new frames 12-21"):
        fwd.gen_frame(11)
    assert plan_extension(300, 48, False, longest=257).context == 209  # the time range limits the context
    with pytest.raises(ValueError, match="add at most 256"):
        plan_extension(30, 257, False, longest=257)


def test_redo_restores_scalars_only_where_they_were_given() -> None:
    from ltxcli.redo import record_values

    rec = {"tool": "ltxcli", "model": "m", "prompt": "p", "seed": 1, "steps": 30, "timesteps": [0.9, 0.5],
           "guidance_scale": [1, 6], "stg_scale": 1.0, "conditions": [{"path": "a.png", "frame": 8, "strength": 0.5}],
           "passes": [{"guidance_timesteps": [1.0, 0.9]}], "num_frames": 9}
    values = record_values(rec)
    assert "steps" not in values and "guidance_scale" not in values  # the preset's timesteps and schedule again
    assert values["stg_scale"] == 1.0  # a scalar given beside the schedule, which it kept for the guidance list
    rec["guidance_scale"] = 3.0
    two = {**rec, "passes": [{"guidance_scale": 3.0}, {"guidance_scale": 1.0}]}  # a first_pass= value: not a scalar's
    assert "guidance_scale" not in record_values(two)
    assert values["conditions"][0].frame == 8 and values["num_frames"] == 9
    rec.update(timesteps=None, passes=[{"guidance_timesteps": None}])
    values = record_values(rec)
    assert (values["steps"], values["guidance_scale"], values["stg_scale"]) == (30, 3.0, 1.0)
    assert "cache" not in values
    rec["cache"] = {"mode": "teacache", "threshold": 0.1, "calls": 9, "skipped": 3}
    assert record_values(rec)["cache"] == "teacache:0.1"


def test_a_long_video_reads_each_condition_file_once(cli_env: Path, clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The items' check decodes a condition file; the windowed run used it as it was (it read the file again, and
    a trimmed video's warning came twice)."""
    reads = []
    real = media.read_media
    monkeypatch.setattr(media, "read_media", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    # two windows (latent frames 0-1 and 1-2); the 12-frame clip at frame 8 has room for 9
    r = ltx("generate", "a cat | a dog", "--model", "tiny", "--num-frames", "17", "--window", "16", "--overlap", "8",
            "--condition", f"{clip}:8", "--steps", "1", "--height", "64", "--width", "96", "-o", "w.mp4", "--json")
    assert r.exit_code == 0, r.stderr
    assert len(json_lines(r.stdout)[0]["settings"]["long"]["windows"]) == 2
    assert reads == [str(clip)] and r.stderr.count("trimmed to its first 9 of 12 frames") == 1


def test_from_a_float8_record_where_float8_cannot_run_says_so_and_how(cli_env: Path) -> None:
    """--from restores --dtype fp8 from a GPU's record; where float8 matmuls cannot run, the error says the value
    came from the record (the user gave no --dtype) and how to redo the video without them."""
    assert ltx("generate", "a cat", "--model", "tiny", "--seed", "4", "-o", "a.mp4", *SMALL).exit_code == 0
    rec = {**media.read_video_metadata(cli_env / "a.mp4"), "fp8": "compute", "dtype": "bfloat16"}
    media.write_video(cli_env / "gpu.mp4", torch.rand(9, 64, 96, 3), 24, metadata=rec)
    line = assert_one_error_line(ltx("generate", "--from", "gpu.mp4", "-o", "b.mp4"), 2)
    assert "--dtype fp8 needs an NVIDIA GPU" in line
    assert line.endswith("the record of gpu.mp4 says --dtype fp8: pass --dtype bfloat16 to redo it without float8 "
                         "matmuls (another video)")
    assert ltx("generate", "--from", "gpu.mp4", "--dtype", "bfloat16", "-o", "b.mp4").exit_code == 0
    # an explicit attention kernel of the GPU's, likewise
    media.write_video(cli_env / "fa.mp4", torch.rand(9, 64, 96, 3), 24, metadata={**rec, "fp8": None,
                                                                                  "attention": "flash3"})
    line = assert_one_error_line(ltx("generate", "--from", "fa.mp4", "-o", "c.mp4"), 2)
    assert line.endswith("the record of fa.mp4 says --attention flash3: pass --attention auto to redo it with this "
                         "machine's kernels (the last bits may differ)"), line
    assert ltx("generate", "--from", "fa.mp4", "--attention", "auto", "-o", "c.mp4").exit_code == 0


def test_from_restores_the_cpu_gemm_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU float32 linears' route is measured (ltxcli.calibrate) and a new calibration can pick the other one,
    whose sums round differently: the record keeps the route the run took and --from takes it again."""
    from ltxcli import api, calibrate

    cli_env = enter_cli_env(tmp_path, monkeypatch, memoised_loader())  # models loaded under the routes set here

    def route(onednn: bool) -> None:
        monkeypatch.setattr(api, "_cpu_choices", lambda spec: calibrate.CpuChoices(onednn, True, "auto", {}))

    route(False)
    made = ltx("generate", "a cat", "--model", "tiny", "--seed", "4", "--steps", "2", "--frames-dir", "a", "--json")
    assert made.exit_code == 0, made.stderr
    assert json_lines(made.stdout)[0]["settings"]["cpu_gemm"] == "blas"
    route(True)  # the host's choice changed since (--vae-tiling off, which changes nothing here: a fresh load)
    other = ltx("generate", "a cat", "--model", "tiny", "--seed", "4", "--steps", "2", "--vae-tiling", "off",
                "--frames-dir", "o", "--json")
    assert json_lines(other.stdout)[0]["settings"]["cpu_gemm"] == "onednn"
    assert not torch.equal(frame_codes(cli_env / "o"), frame_codes(cli_env / "a"))  # the route shows in the frames
    again = ltx("generate", "--from", "a", "--frames-dir", "b", "--json")
    assert again.exit_code == 0, again.stderr
    assert json_lines(again.stdout)[0]["settings"]["cpu_gemm"] == "blas"
    assert torch.equal(frame_codes(cli_env / "b"), frame_codes(cli_env / "a"))


def test_resume_without_a_seed_finds_the_state_of_a_name_that_holds_the_seed(cli_env: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """README's own `--resume` example writes the default name, which holds the seed: the same command after an
    interrupt drew a new seed, named another file, found no state and started over (the old state stayed). It
    now finds the interrupted run's state beside a name that differs only by the seed, and continues it."""
    from ltxcli import long_video

    args = ["generate", "--model", "tiny", "a cat walks | a dog runs", "--num-frames", "41", "--window", "24",
            "--overlap", "8", "--steps", "1", "--height", "64", "--width", "64", "--resume", "--json"]
    save, loaded = long_video._LongRun._save_state, []

    def interrupted(self, out, first, done):
        save(self, out, first, done)
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr(long_video._LongRun, "_save_state", interrupted)
        assert ltx(*args).exit_code == 130
    (state,) = cli_env.glob(".*.ltx-resume")
    kept = torch.load(state, weights_only=True)["seed"]
    load = long_video._LongRun._load_state
    monkeypatch.setattr(long_video._LongRun, "_load_state", lambda self: loaded.append((w := load(self))[2]) or w)
    r = ltx(*args)
    assert r.exit_code == 0, r.stderr
    (obj,) = json_lines(r.stdout)
    assert obj["seed"] == kept and loaded == [1] and not state.exists()
    assert Path(obj["path"]).name == state.name.removeprefix(".").removesuffix(".ltx-resume")


def test_an_interrupted_resume_run_says_its_windows_are_kept(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in a --resume long video said "interrupted; partial outputs were removed", though the finished
    windows stay in the state file for the next run: the line now says what is kept and how to continue."""
    from ltxcli import long_video

    args = ["generate", "--model", "tiny", "a cat walks | a dog runs", "--num-frames", "41", "--window", "24",
            "--overlap", "8", "--steps", "1", "--height", "64", "--width", "64", "--seed", "1", "-o", "long.mp4"]
    save = long_video._LongRun._save_state

    def interrupted(self, out, first, done):  # Ctrl-C once the first window is kept
        save(self, out, first, done)
        raise KeyboardInterrupt

    monkeypatch.setattr(long_video._LongRun, "_save_state", interrupted)
    line = assert_one_error_line(ltx(*args, "--resume"), 130)
    assert line == ("error: interrupted; the partial video was removed, its finished windows are kept in "
                    ".long.mp4.ltx-resume: the same command with --resume continues from them"), line
    assert (cli_env / ".long.mp4.ltx-resume").is_file() and not (cli_env / "long.mp4").exists()
    (cli_env / ".long.mp4.ltx-resume").unlink()
    line = assert_one_error_line(ltx(*args), 130)  # without --resume nothing is kept
    assert line == "error: interrupted; partial outputs were removed", line
    assert list(cli_env.glob(".*")) == []


def test_resume_without_a_seed_continues_a_batch_with_its_seed_and_rewrite(cli_env: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The same --resume command without --seed, after an interrupt: the interrupted item continues with the seed
    its state kept, taken before the prompt is rewritten with it and as the batch seed (the record's seed is the
    batch seed + index, and the rewrite is the seed's)."""
    from ltxcli import long_video

    (cli_env / "b.txt").write_text("a cat walks\na bird flies\n")  # two windows each
    args = ["generate", "--model", "tiny", "--batch", "b.txt", "--num-frames", "41", "--window", "24", "--overlap",
            "8", "--steps", "1", "--height", "64", "--width", "64", "--resume", "--enhance-prompt", "on",
            "--frames-dir", "f{index}", "--json"]  # PNG frames: compared bit for bit (H.264 may vary under load)
    save, loaded = long_video._LongRun._save_state, []

    def interrupted(self, out, first, done):  # Ctrl-C once the first window of the first item is kept
        save(self, out, first, done)
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr(long_video._LongRun, "_save_state", interrupted)
        assert ltx(*args).exit_code == 130
    state = long_video.state_path(cli_env / "f0")
    kept = torch.load(state, weights_only=True)["seed"]
    load = long_video._LongRun._load_state
    monkeypatch.setattr(long_video._LongRun, "_load_state", lambda self: loaded.append((w := load(self))[2]) or w)
    r = ltx(*args)
    assert r.exit_code == 0, r.stderr
    assert loaded[0] == 1 and not state.exists()  # the first item continued from its kept window
    first, second = json_lines(r.stdout)
    assert first["seed"] == kept and second["seed"] == kept + 1
    assert [media.read_record(cli_env / f"f{i}")["batch_seed"] for i in (0, 1)] == [kept, kept]
    fresh = ltx("generate", "--model", "tiny", "a cat walks", "--num-frames", "41", "--window", "24",
                "--overlap", "8", "--steps", "1", "--height", "64", "--width", "64", "--enhance-prompt", "on",
                "--seed", str(kept), "--frames-dir", "fresh", "--json")
    assert json_lines(fresh.stdout)[0]["enhanced_prompt"] == first["enhanced_prompt"]
    assert torch.equal(frame_codes(cli_env / "fresh"), frame_codes(cli_env / "f0"))


def test_the_python_api_decodes_only_the_frames_a_condition_file_can_use(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The library path decoded a condition video whole (the CLI's pre-check stops one frame past what fits): a
    long clip as the first frame of a short video took memory for every frame of it. It now reads as the CLI."""
    from ltxcli import Condition
    from ltxcli.conditions import prepare_condition
    from ltxcli.media import read as media_read

    path = media.write_video(tmp_path / "long.mp4", torch.rand(40, 64, 96, 3), 24)
    decoded = []
    real = media_read._frame_to_rgb
    monkeypatch.setattr(media_read, "_frame_to_rgb", lambda frame: decoded.append(1) or real(frame))
    with pytest.warns(UserWarning, match="trimmed to its first 9 of 40 frames"):
        p = prepare_condition(Condition(str(path)), 64, 96, 9, (0, 0, 0, 0))
    assert p.pixels.shape[2] == 9 and len(decoded) <= 10


def rewrite_record(png: Path, **changes: Any) -> None:
    """Give the PNG frame ``png`` the record of another run: its own with ``changes`` (a value None: the key
    left out, as a record written by an older version has it); the pixels stay."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    rec = {k: v for k, v in {**media.read_record(png), **changes}.items() if v is not None}
    info = PngInfo()
    info.add_text("comment", json.dumps(rec))
    with Image.open(png) as im:
        im.load()
        im.save(png, pnginfo=info)


def test_from_a_record_made_before_prompt_enhancement_does_not_enhance(cli_env: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A record written before prompt enhancement existed (no "enhance_prompt" key) was redone under the default
    auto mode: a short prompt on a real model (threshold 120 words) was rewritten by the enhancer, another video
    than the one recorded. Nothing was rewritten then: the redo runs with enhancement off."""
    from dataclasses import replace

    import ltxcli.spec

    first = ltx("generate", "a cat", "--model", "tiny", "--seed", "5", "--steps", "1", *SMALL, "--frames-dir", "a")
    assert first.exit_code == 0, first.stderr
    rewrite_record(cli_env / "a" / "frame_00000.png", enhance_prompt=None, enhanced_prompt=None)  # an older one
    # the tiny model never enhances under auto; a real model's threshold makes "a cat" one to rewrite
    monkeypatch.setattr(ltxcli.spec, "TINY_PRESET", replace(ltxcli.spec.TINY_PRESET,
                                                            prompt_enhancement_words_threshold=120))
    monkeypatch.delenv("LTX_ENHANCE_PROMPT")
    again = ltx("generate", "--from", "a", "--frames-dir", "b", "--json")
    assert again.exit_code == 0, again.stderr
    (obj,) = json_lines(again.stdout)
    assert (obj["enhanced_prompt"], obj["settings"]["enhance_prompt"]) == (None, "off")
    assert torch.equal(frame_codes(cli_env / "b"), frame_codes(cli_env / "a"))


def test_a_missing_lora_names_the_record_or_batch_line_it_came_from(cli_env: Path) -> None:
    """A LoRA moved since the video was made: --from said "LoRA /old/path: no such file" (a path the user never
    typed) while a moved condition said "--from a: img.png: no such file"; a batch line's missing LoRA named no
    line either. The line now starts with where the LoRA came from, as the other inputs' do."""
    assert ltx("generate", "a cat", "--model", "tiny", "--seed", "5", "--steps", "1", *SMALL,
               "--frames-dir", "a").exit_code == 0
    moved = str(cli_env / "moved" / "style.safetensors")  # the record of a run with a LoRA at a path that is gone
    rewrite_record(cli_env / "a" / "frame_00000.png",
                   loras=[{"name": None, "path": moved, "sha256": "0" * 64, "scale": 0.7}])
    line = assert_one_error_line(ltx("generate", "--from", "a", "--frames-dir", "b"), 2)
    assert line.startswith("error: --from a: LoRA ") and moved in line and "no such file" in line
    Path("b.jsonl").write_text('{"prompt": "a cat"}\n{"prompt": "a dog", "loras": ["gone.safetensors:0.5"]}\n')
    line = assert_one_error_line(ltx("generate", "--batch", "b.jsonl", "--model", "tiny", *SMALL, "-o", "out/"), 2)
    assert line.startswith("error: --batch b.jsonl line 2: LoRA gone.safetensors: no such file"), line


def test_from_takes_the_record_over_the_environment_s_defaults(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LTX_MODEL and LTX_ENHANCE_PROMPT set the defaults of --model and --enhance-prompt, but --from took them as
    options given: the record's model was replaced by LTX_MODEL's (another model, or a download), and its
    enhancement mode by LTX_ENHANCE_PROMPT's (the recorded rewrite dropped: another video). Options given win."""
    first = ltx("generate", "a cat", "--enhance-prompt", "on", "--model", "tiny", "--seed", "5", "--steps", "1",
                *SMALL, "--frames-dir", "a", "--json")
    assert first.exit_code == 0, first.stderr
    rewrite = json_lines(first.stdout)[0]["enhanced_prompt"]
    assert rewrite and os.environ["LTX_ENHANCE_PROMPT"] == "off"  # cli_env's
    monkeypatch.setenv("LTX_MODEL", "no-such-model")
    again = ltx("generate", "--from", "a", "--frames-dir", "b", "--json")
    assert again.exit_code == 0, again.stderr
    (obj,) = json_lines(again.stdout)
    assert (obj["model"], obj["enhanced_prompt"], obj["settings"]["enhance_prompt"]) == ("tiny", rewrite, "on")
    assert torch.equal(frame_codes(cli_env / "b"), frame_codes(cli_env / "a"))
    r = ltx("generate", "--from", "a", "--enhance-prompt", "off", "--frames-dir", "c", "--json")  # given: it wins
    assert r.exit_code == 0, r.stderr
    assert json_lines(r.stdout)[0]["enhanced_prompt"] is None


def test_from_redoes_the_library_s_sampler_settings(cli_env: Path) -> None:
    """A video made in Python with an STG mode, decode noise, conditioning re-noise or stochastic sampling other
    than the preset's: the record left them out, so --from redid it with the preset's (another video, no word).
    The record keeps them and --from restores those that differ from the recorded preset's."""
    import ltxcli

    made = {"stg_mode": "attention_skip", "decode_timestep": 0.1, "decode_noise_scale": 0.0,
            "image_cond_noise_scale": 0.0, "stochastic_sampling": True}
    res = ltxcli.load_pipeline("tiny").generate("a cat", height=64, width=96, num_frames=9, steps=2, seed=5, **made)
    ltxcli.save_video(res, "api.mp4")
    assert {k: media.read_video_metadata("api.mp4")[k] for k in made} == made
    again = ltx("generate", "--from", "api.mp4", "-o", "b.mp4", "--json")
    assert again.exit_code == 0, again.stderr
    assert {k: json_lines(again.stdout)[0]["settings"][k] for k in made} == made
    assert torch.equal(decoded_codes(cli_env / "b.mp4"), decoded_codes(cli_env / "api.mp4"))
    plain = ltx("generate", "a cat", "--model", "tiny", *SMALL, "--steps", "2", "--seed", "5", "-o", "p.mp4")
    assert plain.exit_code == 0 and not torch.equal(decoded_codes(cli_env / "p.mp4"), decoded_codes(cli_env / "b.mp4"))


def test_stg_mode_option_is_used_recorded_redone_and_checked(cli_env: Path) -> None:
    """The request's STG mode (the official stg_mode) had no option: a CLI user could not pick what the official
    configs offer. --stg-mode (and a batch line's "stg_mode") sets it; --json and the record show it, --from redoes
    it, a new one given with --from wins, --skip-existing tells a video of another mode apart; a value outside the
    official four is one line, exit 2."""
    args = ["a cat", "--model", "tiny", "--seed", "5", "--steps", "1", *SMALL]
    made = ltx("generate", *args, "--stg-mode", "attention_skip", "--frames-dir", "a", "--json")
    assert made.exit_code == 0, made.stderr
    assert json_lines(made.stdout)[0]["settings"]["stg_mode"] == "attention_skip"
    assert media.read_video_metadata(cli_env / "a" / "frame_00000.png")["stg_mode"] == "attention_skip"
    assert ltx("generate", *args, "--frames-dir", "p").exit_code == 0  # the tiny preset's: attention_values
    assert not torch.equal(frame_codes(cli_env / "a"), frame_codes(cli_env / "p"))
    again = ltx("generate", "--from", "a", "--frames-dir", "b", "--json")
    assert again.exit_code == 0, again.stderr
    assert json_lines(again.stdout)[0]["settings"]["stg_mode"] == "attention_skip"
    assert torch.equal(frame_codes(cli_env / "b"), frame_codes(cli_env / "a"))
    other = ltx("generate", "--from", "a", "--stg-mode", "attention_values", "--frames-dir", "c")
    assert other.exit_code == 0, other.stderr
    assert torch.equal(frame_codes(cli_env / "c"), frame_codes(cli_env / "p"))
    Path("b.jsonl").write_text('{"prompt": "a cat", "seed": 5, "stg_mode": "transformer_block"}\n')
    r = ltx("generate", "--batch", "b.jsonl", "--model", "tiny", "--steps", "1", *SMALL, "-o", "t.mp4", "--json")
    assert r.exit_code == 0, r.stderr
    assert json_lines(r.stdout)[0]["settings"]["stg_mode"] == "transformer_block"
    # --skip-existing: the same request is that video, the same but for the mode another one (kept, with a warning)
    for mode, same in (("transformer_block", True), ("residual", False)):
        r = ltx("generate", *args, "--stg-mode", mode, "-o", "t.mp4", "--skip-existing")
        assert r.exit_code == 0 and ("other settings" not in r.stderr) == same, (mode, r.stderr)
    line = assert_one_error_line(ltx("generate", *args, "--stg-mode", "stg_x", "-o", "x.mp4"), 2)
    assert "'stg_x' is not one of 'attention_values', 'attention_skip', 'transformer_block', 'residual'" in line
    Path("bad.jsonl").write_text('{"prompt": "a cat", "stg_mode": "stg_x"}\n')
    line = assert_one_error_line(ltx("generate", "--batch", "bad.jsonl", "--model", "tiny", "-o", "o/"), 2)
    assert "line 1: stg_mode='stg_x' must be one of attention_values, attention_skip, transformer_block" in line


def test_from_drops_the_recorded_loras_control_and_temporal_upscale(cli_env: Path) -> None:
    """--from replays a record's LoRAs, control and temporal upscale, and nothing dropped them ("the same but
    without the LoRA"): an empty --lora or a flag left off counts as not given. --lora none, --control none and
    --no-temporal-upscale drop them; without the upscale the redo is the recorded generation's frames at its own
    rate. A batch line's "control": "none" drops the command's --control; "none" with other LoRAs, or both upscale
    flags, are refused."""
    made = ltx("generate", "a cat", "--model", "tiny", "--seed", "5", "--steps", "1", *SMALL, "--temporal-upscale",
               "--frames-dir", "a")
    assert made.exit_code == 0, made.stderr
    # the same record naming a LoRA and a control that are gone: a redo that keeps them cannot run
    rewrite_record(cli_env / "a" / "frame_00000.png", loras=[{"path": "gone.safetensors", "scale": 0.8}],
                   control={"source": "gone.mp4", "kind": "video", "strength": 0.8})
    assert ltx("generate", "--from", "a", "--frames-dir", "x").exit_code != 0
    r = ltx("generate", "--from", "a", "--lora", "none", "--control", "none", "--frames-dir", "b", "--json")
    assert r.exit_code == 0, r.stderr
    s = json_lines(r.stdout)[0]["settings"]
    assert (s["loras"], s["control"], s["num_frames"]) == ([], None, 17)
    assert torch.equal(frame_codes(cli_env / "b"), frame_codes(cli_env / "a"))
    r = ltx("generate", "--from", "a", "--lora", "none", "--control", "none", "--no-temporal-upscale",
            "--frames-dir", "c", "--json")
    assert r.exit_code == 0, r.stderr
    s = json_lines(r.stdout)[0]["settings"]
    assert (s["num_frames"], s["frame_rate"], s.get("temporal_upscale")) == (9, 24, None)
    assert ltx("generate", "a cat", "--model", "tiny", "--seed", "5", "--steps", "1", *SMALL,
               "--frames-dir", "p").exit_code == 0
    assert torch.equal(frame_codes(cli_env / "c"), frame_codes(cli_env / "p"))
    Path("b.jsonl").write_text('{"prompt": "a cat", "seed": 5, "control": "none"}\n')
    r = ltx("generate", "--batch", "b.jsonl", "--control", "gone.mp4", "--model", "tiny", "--steps", "1", *SMALL,
            "--frames-dir", "d", "--json")
    assert r.exit_code == 0, r.stderr
    assert torch.equal(frame_codes(Path(json_lines(r.stdout)[0]["path"])), frame_codes(cli_env / "p"))
    line = assert_one_error_line(ltx("generate", "a cat", "--model", "tiny", "--lora", "none", "--lora",
                                     "x.safetensors", "--frames-dir", "e"), 2)
    assert "--lora none asks for no LoRA: give it alone" in line
    line = assert_one_error_line(ltx("generate", "a cat", "--model", "tiny", "--temporal-upscale",
                                     "--no-temporal-upscale", "--frames-dir", "e"), 2)
    assert "--temporal-upscale and --no-temporal-upscale contradict each other" in line


def test_from_with_condition_none_drops_the_recorded_conditions(cli_env: Path, clip: Path) -> None:
    """A --from record's conditions (an i2v's first frame) could not be dropped: -c none was refused as a
    malformed PATH:FRAME. Now the redo is the text-to-video of the same seed, frame for frame, and its record
    names no condition; none beside a condition is refused in one line."""
    args = ["--model", "tiny", "--seed", "5", "--steps", "1", *SMALL]
    assert ltx("i2v", str(clip), "a cat", *args, "--frames-dir", "a").exit_code == 0
    r = ltx("generate", "--from", "a", "-c", "none", "--frames-dir", "b", "--json")
    assert r.exit_code == 0, r.stderr
    assert json_lines(r.stdout)[0]["settings"]["conditions"] == []
    assert media.read_video_metadata(cli_env / "b" / "frame_00000.png")["conditions"] == []
    assert ltx("generate", "a cat", *args, "--frames-dir", "p").exit_code == 0
    assert torch.equal(frame_codes(cli_env / "b"), frame_codes(cli_env / "p"))
    assert not torch.equal(frame_codes(cli_env / "a"), frame_codes(cli_env / "p"))  # the condition mattered
    line = assert_one_error_line(ltx("generate", "--from", "a", "-c", "none", "-c", f"{clip}:0", "--frames-dir",
                                     "c"), 2)
    assert "--condition none asks for no condition: give it alone" in line


@pytest.mark.parametrize("command", ["v2v", "extend"])
def test_from_with_video_none_drops_the_recorded_v2v_input_or_extension(cli_env: Path, clip: Path,
                                                                        command: str) -> None:
    """A --from record's v2v input or extension could not be dropped (ltx generate had no --video). --video none
    makes a v2v record the text-to-video of its size, length, rate and seed, and an extension's the plain
    generation of the extended length (12 + 3 frames): frame for frame the fresh runs, with records naming no
    input. Another --video value is refused in one line (ltx v2v and ltx extend take an input)."""
    size = ["--model", "tiny", "--height", "32", "--width", "64", "--frame-rate", "12", "--seed", "5"]
    if command == "v2v":
        made = ltx("v2v", str(clip), "a cat", *size, "--num-frames", "9", "--steps", "2", "--frames-dir", "a")
        fresh = ["--num-frames", "9", "--steps", "2"]
    else:
        made = ltx("extend", str(clip), "a cat", "--frames", "3", *size, "--steps", "1", "--frames-dir", "a")
        fresh = ["--num-frames", "15", "--steps", "1"]
    assert made.exit_code == 0, made.stderr
    r = ltx("generate", "--from", "a", "--video", "none", "--frames-dir", "b", "--json")
    assert r.exit_code == 0, r.stderr
    s = json_lines(r.stdout)[0]["settings"]
    assert (s["video"], s["extend"], s["num_frames"]) == (None, None, int(fresh[1]))
    record = media.read_video_metadata(cli_env / "b" / "frame_00000.png")
    assert (record["video"], record["extend"], record["denoise_strength"]) == (None, None, None)
    assert ltx("generate", "a cat", *size, *fresh, "--frames-dir", "p").exit_code == 0
    assert torch.equal(frame_codes(cli_env / "b"), frame_codes(cli_env / "p"))
    line = assert_one_error_line(ltx("generate", "--from", "a", "--video", str(clip), "--frames-dir", "x"), 2)
    assert "ltx generate takes only --video none" in line and f"ltx v2v {clip} PROMPT" in line
    from ltxcli.redo import redo_row

    # a recorded rewrite (an extension's came from its input's frame) is made anew
    rewrite_record(cli_env / "a" / "frame_00000.png", enhanced_prompt="a cat, rewritten")
    assert redo_row("a", {})["enhanced_prompt"] == "a cat, rewritten"
    assert "enhanced_prompt" not in redo_row("a", {"video": "none"})
    Path("b.txt").write_text("a cat\n")  # nothing to drop: not ignored, refused
    line = assert_one_error_line(ltx("generate", "--batch", "b.txt", "--video", "none", *size, "-o", "o/"), 2)
    assert "--video none is for --from" in line


def test_none_without_from_is_refused_not_ignored(cli_env: Path, clip: Path) -> None:
    """``-c none`` and ``--video none`` drop a --from record's conditions or input video; without --from there is
    nothing to drop, and they were accepted in silence (the run went on as if they were not there). Refused in one
    line (exit 2) before the model loads, on every command that takes -c (the -c of a batch is every line's)."""
    Path("b.txt").write_text("a cat\n")
    for args in (["generate", "a cat", "-c", "none"], ["generate", "a cat", "--video", "none"],
                 ["i2v", str(clip), "a cat", "-c", "none"], ["v2v", str(clip), "a cat", "-c", "none"],
                 ["extend", str(clip), "a cat", "--frames", "8", "-c", "none"],
                 ["generate", "--batch", "b.txt", "-c", "none"]):
        line = assert_one_error_line(ltx(*args, "--model", "tiny", "--steps", "1", "--frames-dir", "out"), 2)
        option = "--video none" if "--video" in args else "--condition none"
        # i2v, v2v and extend take no --from: the line names the command that does (--video is generate's only)
        where = "--from" if "--video" in args else "ltx generate --from VIDEO"
        assert line.startswith(f"error: {option} is for {where} (not the record's "), (args, line)
        assert not Path("out").exists()


def test_lora_and_control_none_without_from_are_refused_not_ignored(cli_env: Path, clip: Path) -> None:
    """``--lora none`` and ``--control none`` drop a --from record's LoRAs or control, as ``-c none`` its conditions;
    without --from there is nothing to drop, and ltx generate "a cat" -m tiny --lora none (or --control none) wrote
    the video, exit 0, as if they were not there. Refused in one line (exit 2) before the model loads, on every
    generating command (a batch's --lora and --control are every line's; its lines drop them with their own)."""
    Path("b.txt").write_text("a cat\n")
    for option, what in (("--lora", "LoRAs"), ("--control", "control")):
        for args in (["generate", "a cat"], ["i2v", str(clip), "a cat"], ["v2v", str(clip), "a cat"],
                     ["extend", str(clip), "a cat", "--frames", "8"], ["generate", "--batch", "b.txt"]):
            line = assert_one_error_line(ltx(*args, option, "none", "--model", "tiny", "--steps", "1",
                                             "--frames-dir", "out"), 2)
            assert line.startswith(f"error: {option} none is for ltx generate --from VIDEO (not the record's {what}): "
                                   "with no record there is nothing to drop"), (args, line)
            assert not Path("out").exists()


def test_no_temporal_upscale_without_from_is_refused_not_ignored(cli_env: Path, clip: Path) -> None:
    """``--no-temporal-upscale`` drops a --from record's temporal upscale; without --from there is none to drop:
    generate and extend wrote their video as if it were not there, and a batch line's "temporal_upscale": true
    was still upscaled under it (33 frames at 48 fps of 17 at 24). Refused in one line (exit 2) before the model
    loads, as --lora none is."""
    Path("b.jsonl").write_text('{"prompt": "a cat", "temporal_upscale": true}\n')
    for args in (["generate", "a cat"], ["extend", str(clip), "a cat", "--frames", "8"], ["i2v", str(clip), "a cat"],
                 ["generate", "--batch", "b.jsonl"]):
        line = assert_one_error_line(ltx(*args, "--no-temporal-upscale", "--model", "tiny", "--steps", "1",
                                         "--frames-dir", "out"), 2)
        assert line.startswith("error: --no-temporal-upscale is for ltx generate --from VIDEO (not the record's "
                               "temporal upscale): with no record"), (args, line)
        assert not Path("out").exists()


def test_the_help_of_each_none_value_says_it_is_refused_without_from() -> None:
    """The three tests above refuse -c none, --lora none, --control none and --no-temporal-upscale without --from;
    the --help of generate, i2v, v2v and extend (the last three take no --from) still said "none: no LoRA (with
    --from: not the record's)", a value that asks for no LoRA on any command."""
    import typer.main

    from ltxcli.cli import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for name in ("generate", "i2v", "v2v", "extend"):
        for param in commands[name].params:
            if param.opts[0] in ("--condition", "--lora", "--control", "--no-temporal-upscale") and not param.hidden:
                # (i2v, v2v and extend have no --from of their own: the help names the command that has one)
                assert "with ltx generate --from" in param.help.lower() and "refused otherwise" in param.help, (name, param.help)


def test_no_temporal_upscale_is_not_listed_where_there_is_no_from() -> None:
    """ltx i2v and ltx v2v take no --from, so their --no-temporal-upscale is refused whenever given (test above),
    yet their --help listed it ("Not even the temporal upscale of a --from record."); ltx extend's already left
    it out. Still accepted (refused in one line, not "No such option"), as extend's is."""
    import typer.main

    from ltxcli.cli import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for name in ("i2v", "v2v", "extend"):
        (param,) = [p for p in commands[name].params if p.opts == ["--no-temporal-upscale"]]
        assert param.hidden, name
    assert not next(p for p in commands["generate"].params if p.opts == ["--no-temporal-upscale"]).hidden


def test_a_missing_control_video_names_the_record_or_batch_line_it_came_from(cli_env: Path) -> None:
    """As a LoRA's: a control video moved since the video was made said "ctl.mp4: no such file", naming neither
    the --from record nor the batch line it came from (a missing condition names them)."""
    assert ltx("generate", "a cat", "--model", "tiny", "--seed", "5", "--steps", "1", *SMALL,
               "--frames-dir", "a").exit_code == 0
    rewrite_record(cli_env / "a" / "frame_00000.png", control={"source": "ctl.mp4", "kind": "video", "strength": 0.8})
    line = assert_one_error_line(ltx("generate", "--from", "a", "--frames-dir", "b"), 6)
    assert line == "error: --from a: ctl.mp4: no such file", line
    Path("c.jsonl").write_text('{"prompt": "a dog", "control": "gone.mp4"}\n')
    line = assert_one_error_line(ltx("generate", "--batch", "c.jsonl", "--model", "tiny", *SMALL, "-o", "out/"), 6)
    assert line == "error: --batch c.jsonl line 1: gone.mp4: no such file", line


def test_extend_in_windows_resumes_after_an_interrupt(cli_env: Path, clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--resume keeps an extension's finished windows as a long video's (it was refused with the windows): Ctrl-C in
    the second window (exit 130) leaves the state next to the output, and the same command continues from it to
    the frames of an uninterrupted run, leaving no state behind."""
    from ltxcli import long_video

    args = ("extend", str(clip), "a cat | a dog", "--frames", "24", "--window", "32", "--overlap", "16", "--model",
            "tiny", "--steps", "1", "--seed", "3", "--height", "32", "--width", "32")
    assert ltx(*args, "--frames-dir", "whole").exit_code == 0
    denoise = long_video._LongRun._denoise_window
    windows: list[int] = []

    def interrupted(self: Any, i: int, *a: Any) -> Any:
        windows.append(i)
        if i == 1 and windows.count(1) == 1:
            raise KeyboardInterrupt
        return denoise(self, i, *a)

    monkeypatch.setattr(long_video._LongRun, "_denoise_window", interrupted)
    state = long_video.state_path(cli_env / "out")
    assert ltx(*args, "--frames-dir", "out", "--resume").exit_code == 130
    assert state.is_file() and windows == [0, 1]
    r = ltx(*args, "--frames-dir", "out", "--resume")
    assert r.exit_code == 0, r.stderr
    assert windows == [0, 1, 1] and not state.exists()  # window 0 taken from the state
    assert torch.equal(frame_codes(cli_env / "out"), frame_codes(cli_env / "whole"))
