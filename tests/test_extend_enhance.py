"""Prompt enhancement of an extension (``ltx extend``, ltxcli.extend.enhancement_units): the official enhancer has
no extension; the new frames continue from the input's last frame (backward: lead into its first), so the prompt
is rewritten as image-to-video of that frame; per-window prompts follow the per-window rule (the first window
image-to-video, later ones text-to-video). It was refused under --enhance-prompt on and skipped under auto.

The input clip's frames are flat grey levels (frame i: i / 8), so the frame the captioner was handed is known
from its mean. ``PromptEnhancer.enhance`` is replaced by a stand-in (its rewrite "rewritten PROMPT", no model
run: the tiny enhancer's own plumbing is tests/test_enhance_cli.py's)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import av
import pytest
import torch
from cli_harness import cut_inside_a_reference_frame, enter_cli_env, json_lines, ltx, memoised_loader

from ltxcli import media
from ltxcli.enhance.enhancer import PromptEnhancer

_cached_load = memoised_loader()
ARGS = ["--model", "tiny", "--seed", "5", "--steps", "1", "--enhance-prompt", "on", "--json"]


@pytest.fixture(autouse=True)
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    env = enter_cli_env(tmp_path, monkeypatch, _cached_load)
    monkeypatch.delenv("LTX_ENHANCE_PROMPT")
    levels = torch.arange(9.0) / 8  # frame i: grey i / 8 (0 first, 1 last)
    media.write_video(tmp_path / "clip.mp4", levels[:, None, None, None].expand(-1, 64, 64, 3).clone(), 24)
    return env


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, float | None]]:
    """Every rewrite: (prompt, seed, the captioned image's mean grey in [0, 1], None for text-to-video)."""
    seen: list[tuple[str, int, float | None]] = []

    def rewrite(self: PromptEnhancer, prompt: str, *, seed: int, image: Any = None) -> str:
        seen.append((prompt, seed, None if image is None else float((image[:, :, 0] + 1).mean() / 2)))
        return f"rewritten {prompt}"

    monkeypatch.setattr(PromptEnhancer, "enhance", rewrite)
    return seen


@pytest.mark.parametrize(("backward", "grey"), [(False, 1.0), (True, 0.0)], ids=["forward", "backward"])
def test_an_extension_is_enhanced_as_image_to_video_of_the_frame_it_continues_from(
        calls: list, backward: bool, grey: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forward the input's last frame is captioned, backward its first; --from encodes the recorded rewrite with
    no enhancer run, to the same frames."""
    res = ltx("extend", "clip.mp4", "a cat", "--frames", "8", *(["--backward"] if backward else []), *ARGS,
              "-o", "a.mp4")
    assert res.exit_code == 0, res.stderr
    ((prompt, seed, mean),) = calls
    assert (prompt, seed) == ("a cat", 5) and mean == pytest.approx(grey, abs=0.02)
    (obj,) = json_lines(res.stdout)
    assert obj["enhanced_prompt"] == "rewritten a cat" and obj["settings"]["enhance_prompt"] == "on"
    assert "enhanced prompt: rewritten a cat" in res.stderr
    monkeypatch.setattr(PromptEnhancer, "enhance", lambda *a, **k: pytest.fail("the enhancer ran"))
    again = ltx("generate", "--from", "a.mp4", "-o", "b.mp4", "--json")
    assert again.exit_code == 0, again.stderr
    assert json_lines(again.stdout)[0]["enhanced_prompt"] == obj["enhanced_prompt"]
    assert torch.equal(media.load_video("a.mp4"), media.load_video("b.mp4"))


def test_per_window_prompts_of_an_extension_follow_the_per_window_rule(calls: list) -> None:
    """9 input + 24 new frames in 16-frame windows 8 apart: the first window ("a cat") continues from the input's
    last frame (image-to-video), "a dog" first comes in a window without conditions (text-to-video)."""
    res = ltx("extend", "clip.mp4", "a cat | a dog", "--frames", "24", "--window", "16", "--overlap", "8", *ARGS,
              "-o", "w.mp4")
    assert res.exit_code == 0, res.stderr
    assert [(p, s) for p, s, _ in calls] == [("a cat", 5), ("a dog", 5)]
    assert calls[0][2] == pytest.approx(1.0, abs=0.02) and calls[1][2] is None
    (obj,) = json_lines(res.stdout)
    assert obj["enhanced_prompt"] == {"a cat": "rewritten a cat", "a dog": "rewritten a dog"}
    assert len(obj["settings"]["long"]["windows"]) == 3


def test_a_keyframe_besides_the_input_keeps_the_prompt_with_the_warning(calls: list) -> None:
    """The input's frame and a keyframe are two conditions: the official rule keeps the prompt, and warns."""
    media.write_image("key.png", torch.rand(64, 64, 3))
    res = ltx("extend", "clip.mp4", "a cat", "--frames", "8", "-c", "key.png:16", *ARGS, "-o", "k.mp4")
    assert res.exit_code == 0, res.stderr
    assert calls == [] and json_lines(res.stdout)[0]["enhanced_prompt"] is None
    assert "prompt enhancement skipped" in res.stderr


def test_the_library_enhances_an_extension_as_the_cli_does(calls: list) -> None:
    """run_extension (no CLI stage) rewrites the prompt through the pipeline's enhancer, the same text; given
    ``enhanced_prompt`` it runs no enhancer."""
    from ltxcli.extend import run_extension
    from ltxcli.request import Extension, GenerationRequest
    from ltxcli.tiny import build_pipeline

    pipe = build_pipeline(torch.device("cpu"), torch.float32)
    pipe.enhancer = PromptEnhancer("tiny", "tiny")  # (its models never load: the stand-in rewrites)
    req = GenerationRequest("a cat", extend=Extension("clip.mp4", 8), seed=5, steps=1, enhance_prompt="on")
    out = run_extension(pipe, req)
    assert len(calls) == 1 and calls[0][2] == pytest.approx(1.0, abs=0.02)
    run_extension(pipe, GenerationRequest("a cat", extend=Extension("clip.mp4", 8), seed=5, steps=1,
                                          enhance_prompt="on", enhanced_prompt="given"))
    assert len(calls) == 1
    assert out.settings["enhanced_prompt"] == "rewritten a cat"


def test_a_schedule_s_window_prompts_are_rewritten_as_its_windows_take_them(cli_env: Path) -> None:
    """The units of a scheduled extension (no model): the schedule counts in output frames, so with a 1-frame
    context (16-frame windows) at output frame 8, "b" from output frame 20 is first taken by the window at output
    frame 24 (generation frame 16), a text-to-video unit; "a" by the first window, with the input's last frame."""
    from ltxcli.extend import enhancement_units
    from ltxcli.presets import TINY_PRESET
    from ltxcli.request import Extension, GenerationRequest

    req = GenerationRequest("x", extend=Extension("clip.mp4", 24), num_frames=33, frame_rate=24.0, height=64,
                            width=64, seed=5, window=16, overlap=8, enhance_prompt="on",
                            prompt_schedule=[{"start": 0, "prompt": "a"}, {"start": 20, "prompt": "b"}])
    image = torch.full((1, 64, 64, 3), 0.5)
    units = enhancement_units(req, TINY_PRESET, 20.0, image)
    assert [(u.prompt, u.seed, u.num_frames) for u in units] == [("a", 5, 9), ("b", 5, 9)]
    assert units[0].conditions[0].media is image and units[0].conditions[0].frame == 0
    assert units[1].conditions == ()


def test_an_enhanced_extension_decodes_its_input_once(calls: list, monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory plan reads no pixels (what is rewritten depends on where the conditions are, not on what they
    show), the enhancement stage decodes the input for the frame it captions and the run takes those frames: one
    decoding of the whole input (there were three). Its first frame alone is read for the size."""
    from ltxcli.media import read

    real, whole = read._decode_video, []

    def counting(path: Path, max_frames: int | None, max_pixels: int | None) -> Any:
        if max_frames is None:
            whole.append(path)
        return real(path, max_frames, max_pixels)

    monkeypatch.setattr(read, "_decode_video", counting)
    res = ltx("extend", "clip.mp4", "a cat", "--frames", "8", *ARGS, "-o", "a.mp4")
    assert res.exit_code == 0, res.stderr
    assert len(whole) == 1, whole
    assert len(calls) == 1 and calls[0][2] == pytest.approx(1.0, abs=0.02)
    assert media.load_video("a.mp4").shape[0] == 17


def test_input_frames_hold_a_file_until_taken_and_decode_a_changed_one_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    """InputFrames (the job's): the continued frame and the run's frames from one decoding, the file let go once
    taken; a file rewritten in between (another mtime or size) is decoded anew, not served stale."""
    import os

    from ltxcli.extend import InputFrames, continued_frame
    from ltxcli.media import read

    real, decodes = read._decode_video, []
    monkeypatch.setattr(read, "_decode_video", lambda *a: decodes.append(a[0]) or real(*a))
    whole = media.load_video("clip.mp4")
    inputs = InputFrames()
    assert torch.equal(continued_frame("clip.mp4", False, inputs), whole[-1:])
    assert torch.equal(continued_frame("clip.mp4", True, inputs), whole[:1])
    assert torch.equal(inputs.take("clip.mp4"), whole) and len(decodes) == 2  # load_video's, then one
    inputs.decoded("clip.mp4")
    assert len(decodes) == 3  # taken: let go
    media.write_video("clip.mp4", torch.zeros(5, 32, 32, 3), 24, overwrite=True)
    os.utime("clip.mp4", ns=(1, 1))  # (another size as well: either tells)
    assert inputs.decoded("clip.mp4").frames.shape == (5, 32, 32, 3) and len(decodes) == 4



def test_a_batch_s_extensions_of_one_input_share_its_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two batch lines extending clip.mp4: each run decoded the whole input again (the file was let go once a run
    took it); the batch announces its runs, so the input is held for the next and let go after the last."""
    from ltxcli.media import read

    real, whole = read._decode_video, []
    monkeypatch.setattr(read, "_decode_video", lambda p, n, px: (whole.append(p) if n is None else None)
                        or real(p, n, px))
    Path("b.jsonl").write_text("".join(f'{{"prompt": "p{i}", "extend": {{"video": "clip.mp4", "frames": {8 * i}}}}}\n'
                                       for i in (1, 2)))
    res = ltx("generate", "--batch", "b.jsonl", "--model", "tiny", "--steps", "1", "--height", "32", "--width", "32",
              "-o", "out/{index}.mp4", "--json")
    assert res.exit_code == 0, res.stderr
    assert [r["settings"]["num_frames"] for r in json_lines(res.stdout)] == [17, 25]
    assert len(whole) == 1, whole


def test_a_batch_s_extensions_of_one_input_prepare_and_encode_its_context_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The context (the input's last 8k + 1 frames, blurred and CRF-compressed at the generation's size) was
    prepared and VAE-encoded by every line; lines with the same context and size now share both (another length
    of new frames too: the context is the same), a line at another size prepares and encodes its own."""
    from ltxcli.pipeline import Pipeline

    prepared, encoded = [], []
    real_prepare, real_encode = media.preprocess_condition_frames, Pipeline._vae_encode
    monkeypatch.setattr(media, "preprocess_condition_frames",
                        lambda *a, **k: prepared.append(a[1:]) or real_prepare(*a, **k))
    monkeypatch.setattr(Pipeline, "_vae_encode", lambda self, px, **k: encoded.append(tuple(px.shape)) or real_encode(self, px, **k))
    lines = ['"frames": 8}', '"frames": 16}', '"frames": 8}, "height": 64, "width": 64']
    Path("b.jsonl").write_text("".join(f'{{"prompt": "p", "extend": {{"video": "clip.mp4", {x}}}\n' for x in lines))
    res = ltx("generate", "--batch", "b.jsonl", "--model", "tiny", "--steps", "1", "--height", "32", "--width", "32",
              "-o", "out/{index}.mp4")
    assert res.exit_code == 0, res.stderr
    assert prepared == [(32, 32), (64, 64)]
    assert encoded == [(1, 3, 9, 32, 32), (1, 3, 9, 64, 64)]


def test_input_frames_let_a_file_go_at_its_last_announced_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory stays bounded: the announced runs take one decoding, the last one lets it go (decoded anew after)."""
    from ltxcli.extend import InputFrames
    from ltxcli.media import read

    real, decodes = read._decode_video, []
    monkeypatch.setattr(read, "_decode_video", lambda *a: decodes.append(a[0]) or real(*a))
    inputs = InputFrames()
    inputs.expect(["clip.mp4", "./clip.mp4"])  # (one file, however named)
    first, second = inputs.take("clip.mp4"), inputs.take("clip.mp4")
    assert torch.equal(first, second) and len(decodes) == 1
    inputs.take("clip.mp4")
    assert len(decodes) == 2 and not inputs._held  # let go at the last announced run: decoded anew, not held


@pytest.mark.parametrize("enhance", ["on", "off"])
def test_ltx_extend_decodes_its_input_in_one_pass(enhance: str, calls: list, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting the input's frames (its length, a truncated file's warning) is a pass over the whole file too: it
    was one more besides the run's; the plan's decoding now gives the count, the first frame, the captioned one
    and the run's frames."""
    from ltxcli.media import read

    real, counted = read._decodable_frames, []
    real_decode, whole = read._decode_video, []
    monkeypatch.setattr(read, "_decodable_frames", lambda *a: counted.append(a) or real(*a))
    monkeypatch.setattr(read, "_decode_video", lambda p, n, px: (whole.append(p) if n is None else None)
                        or real_decode(p, n, px))
    res = ltx("extend", "clip.mp4", "a cat", "--frames", "8", *ARGS, "--enhance-prompt", enhance, "-o", "a.mp4")
    assert res.exit_code == 0, res.stderr
    assert len(set(counted)) + len(whole) == 1, (counted, whole)  # (a count asked again is cached: no pass)
    assert len(calls) == (enhance == "on") and json_lines(res.stdout)[0]["settings"]["num_frames"] == 17


def test_a_truncated_input_is_counted_from_that_pass_and_warned_of_once() -> None:
    """The count from the one decoding is the frames that decode, said once (the run checks the input again)."""
    import cli_harness

    _, decodable = cli_harness.truncated_mp4(Path.cwd())
    res = ltx("extend", "cut.mp4", "a dog", "--frames", "8", "--model", "tiny", "--steps", "1", "-o", "v.mp4",
              "--json")
    assert res.exit_code == 0, res.stderr
    assert res.stderr.count(f"lists 41 frames but only {decodable} can be decoded") == 1, res.stderr
    assert json_lines(res.stdout)[0]["settings"]["num_frames"] == decodable + 8


def test_a_batchs_truncated_input_is_warned_of_once() -> None:
    """A batch's extension input is counted at planning (not decoded whole) and decoded by its run: the
    truncation warning was said at both, twice for one file; it is said once, as for a single ltx extend."""
    import cli_harness

    _, decodable = cli_harness.truncated_mp4(Path.cwd())
    Path("b.jsonl").write_text('{"prompt": "a dog", "extend": {"video": "cut.mp4", "frames": 8}}\na cat\n')
    res = ltx("generate", "--batch", "b.jsonl", "--model", "tiny", "--steps", "1", "--height", "32", "--width",
              "32", "-o", "out/{index}.mp4", "--json")
    assert res.exit_code == 0, res.stderr
    assert res.stderr.count(f"lists 41 frames but only {decodable} can be decoded") == 1, res.stderr
    assert json_lines(res.stdout)[0]["settings"]["num_frames"] == decodable + 8

@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_ltx_prompt_extend_previews_what_ltx_extend_enhances(backward: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ltx prompt PROMPT --extend VIDEO [--backward]`` hands the enhancer what ``ltx extend VIDEO PROMPT
    [--backward] --enhance-prompt on`` hands it: the prompt, the seed and the captioned frame, pixel for pixel (a
    textured 80x48 clip: its crop and size count), and prints that rewrite."""
    sent: list[tuple[str, int, torch.Tensor]] = []

    def rewrite(self: PromptEnhancer, prompt: str, *, seed: int, image: Any = None) -> str:
        sent.append((prompt, seed, image))
        return f"rewritten {prompt} {float(image.mean()):.6f}"

    monkeypatch.setattr(PromptEnhancer, "enhance", rewrite)
    media.write_video("tex.mp4", torch.rand(9, 48, 80, 3, generator=torch.Generator().manual_seed(0)), 24)
    side = ["--backward"] if backward else []
    preview = ltx("prompt", "a cat", "--extend", "tex.mp4", *side, "--model", "tiny", "--seed", "5", "--json")
    assert preview.exit_code == 0, preview.stderr
    run = ltx("extend", "tex.mp4", "a cat", "--frames", "16", *side, *ARGS, "-o", "a.mp4")
    assert run.exit_code == 0, run.stderr
    (p_prompt, p_seed, p_image), (r_prompt, r_seed, r_image) = sent
    assert (p_prompt, p_seed) == (r_prompt, r_seed) == ("a cat", 5)
    assert p_image is not None and torch.equal(p_image, r_image)
    (obj,) = json_lines(preview.stdout)
    assert obj["enhanced_prompt"] == json_lines(run.stdout)[0]["enhanced_prompt"]
    assert obj["extend"] == {"video": "tex.mp4", "backward": backward}


def test_ltx_prompt_extend_refuses_an_image_besides_and_backward_alone() -> None:
    media.write_image("key.png", torch.rand(64, 64, 3))
    both = ltx("prompt", "a cat", "--extend", "clip.mp4", "--image", "key.png", "--model", "tiny")
    assert both.exit_code == 2 and "not both" in both.stderr
    alone = ltx("prompt", "a cat", "--backward", "--model", "tiny")
    assert alone.exit_code == 2 and "--backward goes with --extend" in alone.stderr


def test_backward_windows_give_the_input_s_first_frame_to_the_window_next_to_it(cli_env: Path) -> None:
    """Backward in windows (no model): 24 new frames before a 1-frame context (16-frame windows, 8 apart) are
    windows at generation frames 0 ("a"), 8 and 16 ("b", next to the input), made last first. The window that
    leads into the input's first frame is made first and is image-to-video of that frame, as forward's first
    window; the image went to the earliest window ("a"), 16 frames away from it."""
    from ltxcli.extend import enhancement_units
    from ltxcli.presets import TINY_PRESET
    from ltxcli.request import Extension, GenerationRequest

    req = GenerationRequest("a | b", extend=Extension("clip.mp4", 24, backward=True), num_frames=33, frame_rate=24.0,
                            height=64, width=64, seed=5, window=16, overlap=8, enhance_prompt="on")
    image = torch.full((1, 64, 64, 3), 0.5)
    units = enhancement_units(req, TINY_PRESET, 20.0, image)
    assert [(u.prompt, u.seed, u.num_frames) for u in units] == [("b", 5, 9), ("a", 5, 9)]
    assert units[0].conditions[0].media is image and units[0].conditions[0].frame == 0
    assert units[1].conditions == ()


def test_ltx_prompt_extend_takes_a_truncated_input_as_ltx_extend_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """A truncated input whose last demuxed packet skips frames: ``ltx extend`` judges its rate by the frames that
    decode (one pass) and extends them with a warning, but ``ltx prompt --extend`` read the packets' times and
    refused it as a variable frame rate (exit 6): the preview now reads it as the run does, to the same rewrite."""
    sent: list[torch.Tensor] = []
    monkeypatch.setattr(PromptEnhancer, "enhance",
                        lambda self, prompt, *, seed, image=None: sent.append(image) or f"rewritten {prompt}")
    assert ltx("generate", "a", "--model", "tiny", "--steps", "1", "--height", "32", "--width", "32",
               "--num-frames", "17", "--seed", "1", "-o", "whole.mp4").exit_code == 0
    decoded = cut_inside_a_reference_frame(Path("whole.mp4"), Path("cut.mp4"))
    with av.open("cut.mp4") as container:  # the premise: the packets' times jump
        times = sorted(p.pts for p in container.demux(container.streams.video[0]) if p.pts is not None)
    assert len({b - a for a, b in itertools.pairwise(times)}) > 1
    run = ltx("extend", "cut.mp4", "a cat", "--frames", "8", *ARGS, "-o", "a.mp4")
    assert run.exit_code == 0, run.stderr
    assert json_lines(run.stdout)[0]["settings"]["num_frames"] == decoded + 8
    preview = ltx("prompt", "a cat", "--extend", "cut.mp4", "--model", "tiny", "--seed", "5", "--json")
    assert preview.exit_code == 0, preview.stderr
    assert json_lines(preview.stdout)[0]["enhanced_prompt"] == "rewritten a cat"
    assert len(sent) == 2 and torch.equal(sent[0], sent[1])  # the run's captioned frame, then the preview's
