"""Prompt enhancement through ``ltx generate`` / ``ltx prompt`` (in-process CliRunner, one subprocess) and through
``Pipeline.run``: the enhanced prompt on stderr, in ``--json`` and in the MP4 record next to the original, the
same rewrite from ``ltx prompt`` and ``ltx generate`` for one seed, offline exit codes, and no enhancer model
alive while the transformer denoises (forward pre-hooks on its blocks, as the offload tests use)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import cli_harness
import pytest
import torch
from cli_harness import assert_one_error_line, enter_cli_env, json_lines, ltx, memoised_loader

import ltxcli
from ltxcli import media
from ltxcli.enhance import tiny
from ltxcli.enhance.enhancer import PromptEnhancer

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--height", "64", "--width", "96", "--num-frames", "9"]
_cached_load = memoised_loader()
one_thread = cli_harness.one_thread


@pytest.fixture(autouse=True)
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    env = enter_cli_env(tmp_path, monkeypatch, _cached_load)
    monkeypatch.delenv("LTX_ENHANCE_PROMPT")  # the harness turns enhancement off for the other CLI tests
    return env


def expected(prompt: str, seed: int) -> str:
    """The tiny enhancer's rewrite, computed directly on freshly built tiny models."""
    llm, tok, _, _ = tiny.build()
    return PromptEnhancer.from_models((llm, tok)).enhance(prompt, seed=seed)


def test_generate_enhance_on_reports_and_records_both_prompts(cli_env: Path) -> None:
    res = ltx("generate", "a cat surfing", "--model", "tiny", "--enhance-prompt", "on", "--seed", "3", *SMALL, "--json")
    assert res.exit_code == 0, res.stderr
    want = expected("a cat surfing", 3)
    (obj,) = json_lines(res.stdout)
    assert obj["prompt"] == "a cat surfing" and obj["enhanced_prompt"] == want
    assert obj["settings"]["enhance_prompt"] == "on"
    assert f"enhanced prompt: {want}" in res.stderr
    record = media.read_video_metadata(obj["path"])
    assert record is not None
    assert record["prompt"] == "a cat surfing" and record["enhanced_prompt"] == want
    # auto on the tiny preset (threshold 0) leaves the prompt alone; the record says so
    res = ltx("generate", "a cat surfing", "--model", "tiny", "--seed", "3", *SMALL, "--json", "-o", "plain.mp4")
    (obj,) = json_lines(res.stdout)
    assert obj["enhanced_prompt"] is None and "enhanced prompt" not in res.stderr


def test_enhanced_prompt_is_what_the_text_encoder_encodes(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = ltxcli.load_pipeline("tiny", offload="model")
    encoded: list[list[str]] = []
    real_encode = pipe.text_encoder.encode
    monkeypatch.setattr(pipe.text_encoder, "encode", lambda prompts, **kw: encoded.append(list(prompts)) or real_encode(prompts, **kw))
    alive: list[weakref.ref[Any]] = []
    real_build = tiny.build

    def build_and_watch() -> Any:
        built = real_build()
        alive.extend(weakref.ref(m) for m in (built[0], built[2]))
        return built

    monkeypatch.setattr(tiny, "build", build_and_watch)
    checked: list[bool] = []

    def no_enhancer_resident(module: Any, args: Any) -> None:
        if not checked:
            gc.collect()
            checked.append(all(r() is None for r in alive))

    hooks = [b.register_forward_pre_hook(no_enhancer_resident) for b in pipe.transformer.transformer_blocks]
    try:
        res = pipe.generate("a cat surfing", seed=3, num_frames=9, height=64, width=96, enhance_prompt="on")
    finally:
        for h in hooks:
            h.remove()
    assert len(alive) == 2 and checked == [True]  # loaded for the enhancement stage, gone before denoising
    assert encoded[0][0] == res.settings["enhanced_prompt"] == expected("a cat surfing", 3)
    assert pipe.enhancer.modules == []


def test_prompt_command_matches_generate(cli_env: Path) -> None:
    res = ltx("prompt", "a cat surfing", "--model", "tiny", "--seed", "3", "--json")
    assert res.exit_code == 0, res.stderr
    (obj,) = json_lines(res.stdout)
    assert obj == {"prompt": "a cat surfing", "enhanced_prompt": expected("a cat surfing", 3), "seed": 3, "image": None,
                   "extend": None}


def test_offline_without_enhancer_models_exits_3(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for args in (["prompt", "a cat", "--enhancer-model", "llama-3.2-3b-instruct"],
                 ["generate", "a cat", "--model", "tiny", *SMALL, "--enhance-prompt", "on",
                  "--enhancer-model", "llama-3.2-3b-instruct"]):
        line = assert_one_error_line(ltx(*args), 3)
        assert "llama-3.2-3b-instruct" in line and "ltx weights pull" in line, line
    assert not list(cli_env.glob("*.mp4"))


def test_pickle_only_enhancer_folder_is_refused_with_one_line(cli_env: Path) -> None:
    folder = cli_env / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    torch.save({}, folder / "pytorch_model.bin")
    line = assert_one_error_line(ltx("prompt", "a cat", "--enhancer-model", str(folder)), 2)
    assert "only pickle-based weights" in line and "safetensors" in line


def test_batch_lines_accept_enhance_prompt(cli_env: Path) -> None:
    batch = cli_env / "b.jsonl"
    batch.write_text(json.dumps({"prompt": "a dog", "seed": 4, "enhance_prompt": "on"}) + "\n"
                     + json.dumps({"prompt": "a cat", "seed": 5}) + "\n")
    res = ltx("generate", "--batch", str(batch), "--model", "tiny", *SMALL, "--json", "-o", "out/")
    assert res.exit_code == 0, res.stderr
    first, second = json_lines(res.stdout)
    assert first["enhanced_prompt"] == expected("a dog", 4) and second["enhanced_prompt"] is None
    bad = cli_env / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a dog", "enhance_prompt": "always"}) + "\n")
    assert "enhance_prompt='always' must be one of auto, on, off" in assert_one_error_line(
        ltx("generate", "--batch", str(bad), "--model", "tiny", *SMALL), 2)


def test_an_empty_prompt_that_is_enhanced_is_not_said_to_follow_the_negative_prompt(cli_env: Path) -> None:
    """Official inference.py enhances an empty prompt (0 words < threshold): the warning said the video followed
    only the negative prompt, while it followed the enhancer's invention."""
    res = ltx("generate", "", "--model", "tiny", *SMALL, "--enhance-prompt", "on", "--seed", "3", "-o", "e.mp4")
    assert res.exit_code == 0, res.stderr
    assert "the prompt is empty: the video follows a prompt the enhancer writes from nothing" in res.stderr
    assert f"enhanced prompt: {expected('', 3)}" in res.stderr
    from PIL import Image

    Image.new("RGB", (96, 64), (200, 40, 40)).save(cli_env / "first.png")
    res = ltx("i2v", "first.png", "", "--model", "tiny", *SMALL, "--enhance-prompt", "on", "--seed", "3", "-o", "i.mp4")
    assert res.exit_code == 0, res.stderr
    assert "the prompt is empty: the video follows the enhancer's rewrite of the first frame's caption" in res.stderr
    res = ltx("generate", " ", "--model", "tiny", *SMALL, "--seed", "3", "-o", "plain.mp4")  # auto: tiny never enhances
    assert "the prompt is empty: the video follows only the negative prompt" in res.stderr


def test_enhance_on_with_conditions_it_cannot_use_says_so(cli_env: Path) -> None:
    """--enhance-prompt on with two conditions (or one at a later frame): the official code warns and keeps the
    prompt; ltx kept it without a word."""
    from PIL import Image

    Image.new("RGB", (96, 64), (200, 40, 40)).save(cli_env / "k.png")
    for conds in (["-c", "k.png:0", "-c", "k.png:8"], ["-c", "k.png:8"]):
        res = ltx("generate", "a cat", "--model", "tiny", *SMALL, "--enhance-prompt", "on", "--seed", "3", *conds,
                  "--json", "--overwrite", "-o", "k.mp4")
        assert res.exit_code == 0, res.stderr
        (obj,) = json_lines(res.stdout)
        assert obj["enhanced_prompt"] is None
        assert ("warning: prompt enhancement skipped, the original prompt is used: prompt enhancement supports no "
                "condition or one condition at frame 0 only") in res.stderr
    # a long video (windows) enhances its whole request once: the same warning, once
    res = ltx("generate", "a cat", "--model", "tiny", "--height", "64", "--width", "64", "--num-frames", "65",
              "--window", "33", "--overlap", "9", "--steps", "1", "--enhance-prompt", "on", "--seed", "3",
              "-c", "k.png:0", "-c", "k.png:16", "--json", "--overwrite", "-o", "k.mp4")
    assert res.exit_code == 0, res.stderr
    assert json_lines(res.stdout)[0]["enhanced_prompt"] is None
    assert res.stderr.count("warning: prompt enhancement skipped, the original prompt is used") == 1, res.stderr


def test_subprocess_prompt(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "LTX_WEIGHTS_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "ltxcli", "prompt", "a cat surfing", "--model", "tiny", "--seed", "3"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip("\n") == expected("a cat surfing", 3)
    # without torchvision the captioner's image processor is the PIL one, named directly: no notice about it
    assert "[transformers]" not in proc.stderr and "torchvision" not in proc.stderr, proc.stderr
    # --quiet silences libraries' notices too (transformers said that torchvision is missing, on every run)
    quiet = subprocess.run([sys.executable, "-m", "ltxcli", "prompt", "a cat surfing", "--model", "tiny", "--seed", "3",
                            "-q"], capture_output=True, text=True, env=env, timeout=600)
    assert (quiet.returncode, quiet.stderr, quiet.stdout) == (0, "", proc.stdout)



hub = cli_harness.hub


def test_prompt_pulls_the_registry_enhancer_on_first_use(hub: Any, cli_env: Path) -> None:
    # a tiny Llama served as the registry's unsloth/Llama-3.2-3B-Instruct: pulled with progress, then loaded
    llm, tok, _, _ = tiny.build()
    src = cli_env / "src"
    llm.save_pretrained(src)
    tok.save_pretrained(src)
    for f in src.iterdir():
        hub.add("unsloth/Llama-3.2-3B-Instruct", f.name, f.read_bytes())
    res = ltx("prompt", "a cat surfing", "--seed", "3", "--enhancer-model", "llama-3.2-3b-instruct", "--json")
    assert res.exit_code == 0, res.stderr
    assert "downloading llama-3.2-3b-instruct" in res.stderr
    (obj,) = json_lines(res.stdout)
    assert obj["enhanced_prompt"] == PromptEnhancer(src).enhance("a cat surfing", seed=3)  # the same folder, bf16
    again = ltx("prompt", "a cat surfing", "--seed", "3", "--enhancer-model", "llama-3.2-3b-instruct", "--json")
    assert "downloading" not in again.stderr and json_lines(again.stdout) == [obj]


def test_prompt_says_the_seed_it_drew() -> None:
    """`ltx prompt` without --seed draws one (the help says "printed"): it said nothing, so the rewrite could not be
    made again (only --json carried it)."""
    r = ltx("prompt", "a cat", "--model", "tiny", "--enhancer-model", "tiny")
    assert r.exit_code == 0, r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("seed ")]
    again = ltx("prompt", "a cat", "--model", "tiny", "--enhancer-model", "tiny", "--seed", line.split()[1])
    assert again.stdout == r.stdout


def test_prompt_without_an_image_says_its_caption_model_is_ignored(cli_env: Path) -> None:
    """README: "an --enhancer-model or --caption-model that no rewrite of the run uses ... is named in a warning",
    as ltx generate does; ltx prompt "a cat" --caption-model tiny (no --image, no --extend: a text-to-video rewrite
    that captions nothing) dropped it in silence. With --image it captions that image: no warning."""
    r = ltx("prompt", "a cat", "--model", "tiny", "--seed", "3", "--caption-model", "tiny")
    assert r.exit_code == 0, r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("warning: ")] == [
        "warning: --caption-model is ignored: no image-to-video prompt is rewritten (it captions their first frame)"]
    media.write_image(cli_env / "first.png", torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(0)))
    r = ltx("prompt", "a cat", "--model", "tiny", "--seed", "3", "--caption-model", "tiny", "--image", "first.png")
    assert r.exit_code == 0 and "warning: " not in r.stderr, r.stderr


def test_prompt_command_reads_a_dash_from_stdin_as_generate_does(cli_env: Path) -> None:
    """`ltx generate - --enhance-prompt on` rewrites the prompt on stdin; `ltx prompt -` rewrote the text "-"."""
    res = ltx("prompt", "-", "--model", "tiny", "--seed", "3", "--json", input="a cat surfing\n")
    assert res.exit_code == 0, res.stderr
    (obj,) = json_lines(res.stdout)
    assert obj["prompt"] == "a cat surfing" and obj["enhanced_prompt"] == expected("a cat surfing", 3)


def test_a_batch_line_extension_is_enhanced(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--enhance-prompt on` on a batch line with an extension was refused ("prompt enhancement is not supported yet
    with an extension", exit 2): it is rewritten as image-to-video of the input's last frame (the stage's call is
    stood in for), the other line (auto, the tiny preset's threshold 0) kept."""
    media.write_video(cli_env / "clip.mp4", torch.rand(9, 64, 96, 3), 24)
    (cli_env / "w.jsonl").write_text('{"prompt": "a cat"}\n{"prompt": "a dog", "extend": {"video": "clip.mp4", '
                                     '"frames": 8}, "enhance_prompt": "on"}\n')
    seen = []
    monkeypatch.setattr(PromptEnhancer, "enhance", lambda self, prompt, *, seed, image=None: seen.append(
        (prompt, image is not None)) or f"rewritten {prompt}")
    res = ltx("generate", "--batch", "w.jsonl", "--model", "tiny", *SMALL[:4], "--steps", "1", "--json")
    assert res.exit_code == 0, res.stderr
    assert seen == [("a dog", True)]
    assert [o["enhanced_prompt"] for o in json_lines(res.stdout)] == [None, "rewritten a dog"]


def test_per_window_prompts_are_enhanced_and_redone_without_the_enhancer(cli_env: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`--enhance-prompt on` with "a | b" was refused (exit 2): each window prompt is rewritten (as `ltx prompt`
    rewrites it under the seed), reported, and recorded by window prompt in --json and the record; --from encodes
    the recorded rewrites with no enhancer run, to the same frames."""
    from ltxcli.redo import redo_row

    # 17 frames in windows of 16 (2 latent frames) with 8 shared: two windows, "a cat" then "a dog"
    args = ["--model", "tiny", "--seed", "5", "--steps", "1", "--height", "64", "--width", "96", "--num-frames", "17",
            "--window", "16", "--overlap", "8"]
    first = ltx("generate", "a cat | a dog", "--enhance-prompt", "on", *args, "--frames-dir", "a", "--json")
    assert first.exit_code == 0, first.stderr
    rewrites = {"a cat": expected("a cat", 5), "a dog": expected("a dog", 5)}
    (obj,) = json_lines(first.stdout)
    assert obj["prompt"] == "a cat | a dog" and obj["enhanced_prompt"] == rewrites
    assert f"enhanced prompt (a dog): {rewrites['a dog']}" in first.stderr
    assert redo_row("a", {})["enhanced_prompt"] == rewrites
    for given in ({"window": 24}, {"num_frames": 25}, {"prompt_schedule": "s.jsonl"}):  # other windows take them
        assert "enhanced_prompt" not in redo_row("a", given), given
    monkeypatch.setattr(PromptEnhancer, "enhance", lambda *a, **k: pytest.fail("the enhancer ran"))
    again = ltx("generate", "--from", "a", "--frames-dir", "b", "--json")
    assert again.exit_code == 0, again.stderr
    assert json_lines(again.stdout)[0]["enhanced_prompt"] == rewrites and "enhanced prompt" not in again.stderr
    assert torch.equal(cli_harness.frame_codes(cli_env / "b"), cli_harness.frame_codes(cli_env / "a"))
    # ltx prompt rewrites one prompt (it crashed on the mapping): "a | b" is one line naming what to give instead
    assert "give the parts of 'a | b' one at a time" in assert_one_error_line(
        ltx("prompt", "a cat | a dog", "--model", "tiny", "--seed", "5"), 2)

