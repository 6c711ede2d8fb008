"""Long videos in windows (ltxcli.long_video) against diffusers' ``LTXI2VLongMultiPromptPipeline`` and on their own.

Parity: the tiny model's transformer converted to diffusers' ``LTXVideoTransformer3DModel`` (the key renames of
tests/test_transformer.py), the same text embeddings (diffusers' ``encode_prompt`` returns ltx's), the same
per-window initial noise (diffusers' ``randn_tensor`` returns ltx's draw) and the deterministic Euler scheduler
(``FlowMatchEulerDiscreteScheduler`` with explicit sigmas; ltx with the same explicit timesteps). Run with ``-s``
to see the measured errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from ltxcli import long_video, timeline
from ltxcli.request import Condition, Extension, GenerationRequest
from ltxcli.tiny import build_pipeline

SIGMAS = [1.0, 0.75, 0.5, 0.25]
PROMPTS = ["a cat walks", "a dog runs", "a bird flies"]
# window 48 / overlap 24 pixel frames = 6 / 3 latent frames, 3 apart: 12 latent frames make three windows
BASE = dict(height=64, width=96, num_frames=89, frame_rate=24, seed=5, window=48, overlap=24, timesteps=SIGMAS,
            guidance_scale=1.0, stg_scale=0.0, stochastic_sampling=False)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(scope="module")
def tiny():
    return build_pipeline(torch.device("cpu"), torch.float32)


def _noise(shape: tuple[int, ...], i: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(100 + i))


def _diffusers_latents(tiny, monkeypatch, *, strength: float, adain: float) -> torch.Tensor:
    mod = pytest.importorskip("diffusers.pipelines.ltx.pipeline_ltx_i2v_long_multi_prompt")
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel

    cfg = tiny.transformer.config
    dt = LTXVideoTransformer3DModel(
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, num_attention_heads=cfg.num_attention_heads,
        attention_head_dim=cfg.attention_head_dim, cross_attention_dim=cfg.cross_attention_dim,
        num_layers=cfg.num_layers, caption_channels=cfg.caption_channels, norm_eps=cfg.norm_eps,
    ).eval()
    renames = {"patchify_proj": "proj_in", "adaln_single": "time_embed", "q_norm": "norm_q", "k_norm": "norm_k"}
    state = {}
    for key, value in tiny.transformer.state_dict().items():
        for old, new in renames.items():
            key = key.replace(old, new)
        state[key] = value
    dt.load_state_dict(state, strict=True)
    pipe = mod.LTXI2VLongMultiPromptPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None,
                                             text_encoder=None, tokenizer=None, transformer=dt)

    def encode_prompt(prompt, **_):  # ltx's embeddings of the same text
        embeds, mask = tiny.text_encoder.encode(list(prompt))
        return embeds.float(), mask.bool(), None, None

    calls = []

    def randn_tensor(shape, **_):  # the window's ltx noise; the appended tail slots are replaced by the tail
        i = len(calls)
        calls.append(shape)
        noise = torch.zeros(shape)
        t = shape[2] - (3 if i else 0)
        noise[:, :, :t] = _noise((*shape[:2], t, *shape[3:]), i)
        return noise

    monkeypatch.setattr(pipe, "encode_prompt", encode_prompt)
    monkeypatch.setattr(mod, "randn_tensor", randn_tensor)
    with torch.no_grad():
        out = pipe(prompt=" | ".join(PROMPTS), height=64, width=96, num_frames=89, frame_rate=24, guidance_scale=1.0,
                   sigmas=[*SIGMAS, 0.0], seed=5, temporal_tile_size=48, temporal_overlap=24,
                   temporal_overlap_cond_strength=strength, adain_factor=adain, output_type="latent").frames
    assert len(calls) == 3
    return out


def _ltx_latents(tiny, *, strength: float, adain: float, **extra) -> torch.Tensor:
    req = GenerationRequest(" | ".join(PROMPTS), overlap_strength=strength, adain=adain,
                            image_cond_noise_scale=0.0, **{**BASE, **extra})
    res = long_video.generate(tiny, req, window_noise=lambda i, shape: _noise(shape, i))
    assert [w["prompt"] for w in res.settings["long"]["windows"]] == PROMPTS
    return res.latents


def test_three_windows_match_diffusers(tiny, monkeypatch) -> None:
    want = _diffusers_latents(tiny, monkeypatch, strength=1.0, adain=0.25)
    got = _ltx_latents(tiny, strength=1.0, adain=0.25)
    assert got.shape == want.shape == (1, 16, 12, 2, 3)
    err = rel_err(got, want)
    print(f"\n3 windows vs diffusers LTXI2VLongMultiPromptPipeline (overlap strength 1, adain 0.25): rel err {err:.3e}")
    assert err <= 1e-4
    # the windows depend on each other: without the tail the later windows differ
    alone = _ltx_latents(tiny, strength=0.0, adain=0.25)
    assert rel_err(alone[:, :, 6:], want[:, :, 6:]) > 1e-3


def test_overlap_strength_below_one_follows_the_official_rule(tiny, monkeypatch) -> None:
    """Named difference: at strength 0.5 ltx conditions the tail tokens the official way (start at lerp(noise,
    tail, 0.5), timestep min(t, 0.5), frozen while t > 0.5) where diffusers blends them back every step. Window 0
    is the same in both; the later windows differ by the rule alone."""
    want = _diffusers_latents(tiny, monkeypatch, strength=0.5, adain=0.25)
    got = _ltx_latents(tiny, strength=0.5, adain=0.25)
    head = rel_err(got[:, :, :4], want[:, :, :4])  # frames no later window touches
    tail = rel_err(got[:, :, 6:], want[:, :, 6:])
    print(f"\nstrength 0.5: window 0 rel err {head:.3e}, later windows {tail:.3e} (the conditioning rule)")
    assert head <= 1e-4 and tail > 1e-3


def test_one_window_is_todays_generate_bit_for_bit(tiny) -> None:
    plain = dict(height=64, width=96, num_frames=33, seed=7, steps=2)
    a = tiny.run(GenerationRequest("a cat walks", **plain))
    b = long_video.generate(tiny, GenerationRequest("a cat walks | a dog runs", window=48, **plain))
    assert torch.equal(a.video, b.video) and torch.equal(a.latents, b.latents)
    assert long_video.plan(GenerationRequest("a cat", **plain), tiny.preset, 20.0) is None  # not windowed at all


def test_windows_at_1x1_latents_stay_finite(tiny) -> None:
    """32x32 pixels are 1x1 latents: window 16 / overlap 8 leaves one latent frame after the dropped one, whose
    AdaIN std was 0/0 and made the decoded video NaN ("decoded video contains NaN or Inf")."""
    req = GenerationRequest("a cat | a dog", height=32, width=32, num_frames=33, seed=1, steps=1, window=16, overlap=8)
    res = long_video.generate(tiny, req)
    assert len(res.settings["long"]["windows"]) > 1
    assert torch.isfinite(res.latents).all() and torch.isfinite(res.video).all()


def test_a_duration_that_fits_one_window_gives_its_frames(tiny) -> None:
    """A duration within the model's range is one plain generation of that many frames (1 s at 24 fps: 25 frames,
    8k + 1), the very generation of those num_frames; it used to fall back to the preset's frame count."""
    plain = dict(height=64, width=96, frame_rate=24, seed=7, steps=1, adain=0.5)  # adain: nothing between windows
    res = long_video.generate(tiny, GenerationRequest("a cat walks", duration=1.0, **plain))
    assert res.video is not None and res.video.shape[0] == 25 and res.settings["num_frames"] == 25
    ref = tiny.run(GenerationRequest("a cat walks", num_frames=25, **{**plain, "adain": None}))
    assert torch.equal(res.video, ref.video)


@pytest.mark.parametrize("kwargs, runner", [
    ({"duration": 1.0}, "long_video.generate"), ({"window": 48}, "long_video.generate"),
    ({"adain": 0.5}, "long_video.generate"),
    ({"prompt_schedule": [{"start": 0, "prompt": "a"}]}, "long_video.generate"),
    ({"extend": Extension("clip.mp4", frames=8)}, "extend.run_extension"),
])
def test_one_generation_refuses_what_it_would_run_without(tiny, kwargs, runner) -> None:
    """Pipeline.run makes one generation: a request for a long video or an extension is refused in one line that
    names what runs it, before any work, instead of being generated as a plain clip."""
    with pytest.raises(ValueError, match=f"ltxcli.{runner}.*Pipeline.run makes one generation"):
        tiny.generate("a cat", height=64, width=64, steps=1, **kwargs)


class _Rewriter:
    """An enhancer stand-in for the pipeline's stage: rewrites every prompt it is asked for into ``text``."""

    def __init__(self, text: str) -> None:
        self.text, self.calls = text, []

    def enhance_resolved(self, r, preset, seed, pixels):
        from dataclasses import replace

        self.calls.append((r.prompt, seed, None if pixels is None else tuple(pixels.shape)))
        return replace(r, enhanced_prompt=self.text)


def test_a_windowed_video_is_enhanced_once_for_every_window(tiny, tmp_path) -> None:
    """The library enhances a windowed video's one prompt as Pipeline.run enhances one generation (ltx generate
    did, the library skipped it without a word): one rewrite under the request's seed, every window encoding it,
    the record carrying it; image-to-video captions the first frame at the generation size."""
    from PIL import Image

    req = dict(BASE, timesteps=None, steps=1)
    tiny.enhancer = _Rewriter("a bird flies")
    try:
        res = long_video.generate(tiny, GenerationRequest("a cat walks", enhance_prompt="on", **req))
        assert tiny.enhancer.calls == [("a cat walks", 5, None)]
        assert res.settings["enhanced_prompt"] == "a bird flies" and res.settings["prompt"] == "a cat walks"
        ref = long_video.generate(tiny, GenerationRequest("a bird flies", enhance_prompt="off", **req))
        assert torch.equal(res.video, ref.video)
        image = tmp_path / "first.png"
        Image.new("RGB", (96, 64), (200, 30, 30)).save(image)
        long_video.generate(tiny, GenerationRequest("a cat walks", enhance_prompt="on", conditions=[Condition(str(image), 0)],
                                                    **req))
        assert tiny.enhancer.calls[1] == ("a cat walks", 5, (1, 3, 1, 64, 96))
    finally:
        tiny.enhancer = None
    with pytest.raises(ValueError, match="enhance_prompt='on' needs a prompt enhancer"):
        long_video.generate(tiny, GenerationRequest("a cat walks", enhance_prompt="on", **req))


def test_conditions_are_checked_against_the_whole_video_before_the_first_window(tiny, tmp_path) -> None:
    """A frame past the end was a bare StopIteration, or (inside the padded length) ran and recorded a frame the
    video does not have; a later window's missing file or off-grid video condition failed only once that window
    came, after the earlier ones were denoised. All are refused before any model work now."""
    from ltxcli import media

    calls = []
    hook = tiny.transformer.register_forward_hook(lambda *a: calls.append(1))
    try:
        req = dict(BASE, timesteps=None, steps=1)
        for frame, n in ((89, 89), (87, 86)):  # 86 frames pad to 89: frame 87 is inside the windows, not the video
            with pytest.raises(ValueError, match=f"x.png: frame={frame} must be in \\[0, {n - 1}\\] for a {n}-frame"):
                long_video.generate(tiny, GenerationRequest("a | b", conditions=[Condition("x.png", frame)],
                                                            **{**req, "num_frames": n}))
        with pytest.raises(media.MediaError, match=r"nope\.png: no such file"):
            long_video.generate(tiny, GenerationRequest("a | b", conditions=[Condition("nope.png", 60)], **req))
        media.write_video(tmp_path / "clip.mp4", torch.rand(9, 64, 96, 3), 24)
        for media_ in (str(tmp_path / "clip.mp4"), torch.rand(9, 64, 96, 3)):  # a file, or a tensor
            with pytest.raises(ValueError, match="a video must start at a multiple of 8, not frame=60 \\(use 56 or 64\\)"):
                long_video.generate(tiny, GenerationRequest("a | b", conditions=[Condition(media_, 60)], **req))
    finally:
        hook.remove()
    assert calls == []


class _ByPrompt(_Rewriter):
    """An enhancer stand-in that rewrites each prompt into a text of its own: ``"<prompt> in the rain"``."""

    def enhance_resolved(self, r, preset, seed, pixels):
        from dataclasses import replace

        super().enhance_resolved(r, preset, seed, pixels)
        return replace(r, enhanced_prompt=f"{r.prompt} in the rain")


def test_per_window_prompts_in_one_window_enhance_the_first_alone(tiny) -> None:
    """'a | b' that fits one window was refused under on (and kept under auto): its one window's prompt is
    rewritten, as that window runs it, and recorded by window prompt as several windows' rewrites are."""
    plain = dict(height=64, width=96, num_frames=17, seed=7, steps=1, window=48)
    tiny.enhancer = _ByPrompt("")
    try:
        res = long_video.generate(tiny, GenerationRequest("a cat walks | a dog runs", enhance_prompt="on", **plain))
        assert tiny.enhancer.calls == [("a cat walks", 7, None)]
        assert res.settings["enhanced_prompt"] == {"a cat walks": "a cat walks in the rain"}
        assert res.settings["enhance_prompt"] == "on" and res.settings["prompt"] == "a cat walks | a dog runs"
    finally:
        tiny.enhancer = None


def test_per_window_prompts_are_enhanced_window_prompt_by_window_prompt(tiny, tmp_path) -> None:
    """The library refused 'a | b' under on and kept it under auto. Each distinct window prompt is rewritten once
    under the run's seed, image-to-video (the first frame captioned) for the first window, which holds the frame-0
    image; every window encodes its own prompt's rewrite (the video is the one made from the rewrites as given),
    the record maps them, and a request carrying them (a redo) runs no enhancer and makes the same video."""
    from PIL import Image

    image = tmp_path / "first.png"
    Image.new("RGB", (64, 32), (200, 30, 30)).save(image)
    # 25 frames in windows of 16 (2 latent frames) with 8 shared: three windows, the third taking the first's prompt
    small = dict(height=32, width=64, num_frames=25, seed=7, steps=1, window=16, overlap=8,
                 conditions=[Condition(str(image), 0)])
    tiny.enhancer = _ByPrompt("")
    try:
        res = long_video.generate(tiny, GenerationRequest("a cat | a dog | a cat", enhance_prompt="on", **small))
        assert tiny.enhancer.calls == [("a cat", 7, (1, 3, 1, 32, 64)), ("a dog", 7, None)]
        rewrites = {"a cat": "a cat in the rain", "a dog": "a dog in the rain"}
        assert res.settings["enhanced_prompt"] == rewrites
        again = long_video.generate(tiny, GenerationRequest("a cat | a dog | a cat", enhance_prompt="on",
                                                            enhanced_prompt=rewrites, **small))
        assert len(tiny.enhancer.calls) == 2 and torch.equal(again.video, res.video)
    finally:
        tiny.enhancer = None
    ref = long_video.generate(tiny, GenerationRequest("a cat in the rain | a dog in the rain | a cat in the rain",
                                                      enhance_prompt="off", **small))
    assert torch.equal(res.video, ref.video)


def test_a_videos_window_prompts_load_the_enhancer_once(tiny, monkeypatch) -> None:
    """The library rewrote each window prompt through the pipeline's enhancer stage, which loaded the enhancer's
    models and freed them every time (a 6 GB LLM read again for every window prompt): they are loaded once for all
    of a video's window prompts now, and freed when they are done."""
    from ltxcli.enhance import tiny as tiny_enhancer
    from ltxcli.enhance.enhancer import PromptEnhancer

    real, builds = tiny_enhancer.build, []
    monkeypatch.setattr(tiny_enhancer, "build", lambda *a, **k: builds.append(1) or real(*a, **k))
    tiny.enhancer = PromptEnhancer("tiny", "tiny", max_new_tokens=4)  # (a short rewrite: the loads are counted)
    try:
        # 17 frames in windows of 16 (2 latent frames) with 8 shared: two windows, one prompt each; the stage that
        # long_video.generate runs before denoising any window
        p = long_video.plan(GenerationRequest("a cat | a dog", enhance_prompt="on", height=32, width=64,
                                              num_frames=17, seed=7, window=16, overlap=8), tiny.preset)
        assert sorted(long_video._enhanced(tiny, p).enhanced_prompt) == ["a cat", "a dog"]
        assert len(builds) == 1 and tiny.enhancer.modules == []
    finally:
        tiny.enhancer = None


def test_prompt_schedule_switches_at_the_right_window(tiny, tmp_path) -> None:
    sched = tmp_path / "prompts.jsonl"
    # windows start at pixel frames 0, 24, 48: "1.5s" at 24 fps is frame 36 -> in force from the third window
    sched.write_text('{"start": 0, "prompt": "a cat walks"}\n{"start": "1.5s", "prompt": "a bird flies"}\n')
    p = long_video.plan(GenerationRequest("ignored", prompt_schedule=str(sched), **BASE), tiny.preset)
    assert p is not None
    assert [w.prompt for w in p.windows] == ["a cat walks", "a cat walks", "a bird flies"]
    assert [w.first_frame for w in p.windows] == [0, 24, 48]
    assert [w.seed for w in p.windows] == [5, 8, 11]  # seed + first latent frame, as the references
    bar = long_video.plan(GenerationRequest("a | b", **BASE), tiny.preset)
    assert bar is not None and [w.prompt for w in bar.windows] == ["a", "b", "b"]


def test_streamed_equals_whole_and_resume_after_an_interrupt(tiny, tmp_path) -> None:
    req = GenerationRequest(" | ".join(PROMPTS), **{**BASE, "timesteps": None, "steps": 2})
    whole = long_video.generate(tiny, req)
    state = long_video.state_path(tmp_path / "out.mp4")

    class Stop(Exception):
        pass

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage == "window" and done == 2:  # after the second window
            raise Stop

    streamed = long_video.generate(tiny, req, stream=True, resume=state, progress=interrupt)
    got = []
    with pytest.raises(Stop):
        for chunk in streamed.frames():
            got.append(chunk)
    assert state.is_file()
    resumed = long_video.generate(tiny, req, stream=True, resume=state)
    frames = torch.cat(list(resumed.frames()))
    assert not state.exists()  # deleted on success
    from ltxcli.frames import checked_uint8

    assert torch.equal(frames, checked_uint8(whole.video))
    assert torch.equal(resumed.latents, whole.latents)
    # a state of another request is not used
    other = GenerationRequest(" | ".join(PROMPTS), **{**BASE, "timesteps": None, "steps": 2, "seed": 6})
    assert long_video.request_hash(long_video.plan(other, tiny.preset), "tiny") != \
        long_video.request_hash(long_video.plan(req, tiny.preset), "tiny")
    # nor one made with other weight storage or dtype (it resumed int8 windows into a float32 run)
    same = long_video.plan(req, tiny.preset)
    assert long_video.request_hash(same, "tiny", {**tiny.compute_record(), "weights_dtype": "int8"}) != \
        long_video.request_hash(same, "tiny", tiny.compute_record())


@pytest.mark.parametrize("kwargs, match", [
    ({"window": 8}, "window=8"),
    ({"overlap": 48}, "overlap=48"),
    # the example is inside the range it states (it suggested the default 24 for a range of [8, 16])
    ({"window": 24, "overlap": 24}, r"overlap=24 must be in \[8, 16\] frames for window=24 \(e\.g\. 16\)"),
    # a value not given is named as the default: `--window 24` alone said "overlap=24 must be in [8, 16] ..."
    ({"window": 24, "overlap": None}, r"^the default overlap \(24\) must be in \[8, 16\] frames for window=24 \(e\.g\. 16\)$"),
    ({"window": None, "overlap": 80}, r"^overlap=80 must be in \[8, 72\] frames for the default window \(80\) \(e\.g\. 24\)$"),
    ({"overlap_strength": 2.0}, "overlap_strength"),
    ({"duration": 3.0}, "num_frames or duration"),
])
def test_bad_settings_are_one_line_errors(tiny, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        long_video.plan(GenerationRequest("a", **{**BASE, **kwargs}), tiny.preset)


@pytest.mark.parametrize(("rate", "said"), [(0, "frame_rate=0 must be in [0.001, 1000] (e.g. 24)"),
                                            (-24, "frame_rate=-24 must be in [0.001, 1000] (e.g. 24)")])
def test_a_frame_rate_out_of_range_is_refused_before_the_windows_are_planned(tiny, rate, said) -> None:
    """long_video.generate(..., frame_rate=0) failed with ZeroDivisionError in the window's time check; a negative
    rate passed it (negative seconds) and was refused only once the first window was resolved, after the media
    checks and prompt enhancement."""
    with pytest.raises(ValueError) as e:
        long_video.plan(GenerationRequest("a | b", **{**BASE, "frame_rate": rate}), tiny.preset, 20)
    assert str(e.value) == said
    with pytest.raises(ValueError) as e:  # (what an extension's windows check first: run_extension failed there)
        long_video.check_window_time(48, 89, float(rate), 20)
    assert str(e.value) == said


def test_a_window_longer_than_the_model_s_time_range_is_named_as_the_window(tiny) -> None:
    """--window 600 at 24 fps said "num_frames=593 at frame_rate=24.0 lasts 24.7 s" (the window's frames, a number
    the user never gave), and only once the first window ran (API) or at the check (CLI)."""
    req = GenerationRequest("a", height=64, width=96, num_frames=2001, frame_rate=24, window=600)
    message = (r"^window=600 \(593 frames\) at 24 fps lasts 24\.7 s, above the model's position range of 20 s: use "
               r"a window of at most 488 \(481 frames\)$")
    with pytest.raises(ValueError, match=message):
        long_video.checked_frames(req, 20)
    with pytest.raises(ValueError, match=message):
        long_video.plan(req, tiny.preset, 20)
    ok = GenerationRequest("a", height=64, width=96, num_frames=2001, frame_rate=24, window=488)
    assert long_video.checked_frames(ok, 20) == 481 and long_video.plan(ok, tiny.preset, 20) is not None
    slow = GenerationRequest("a", height=64, width=96, num_frames=2001, frame_rate=3)  # the default window: 73 frames
    with pytest.raises(ValueError, match=r"^the default window \(80: 73 frames\) at 3 fps lasts 24\.0 s, .* at most "
                                         r"64 \(57 frames\)$"):
        long_video.checked_frames(slow, 20)
    crawl = GenerationRequest("a", height=64, width=96, num_frames=41, frame_rate=0.3, window=24)  # 9 frames: 26.7 s
    with pytest.raises(ValueError, match=r"no window fits at this rate: use a frame rate of at least 0\.4 fps$"):
        long_video.checked_frames(crawl, 20)


def test_a_seed_too_large_for_the_window_seeds_names_the_seed_given(tiny) -> None:
    """Window seeds are seed + the window's first latent frame: --seed 2**63 - 1 (accepted) failed with
    "seed=9223372036854775810 must be an integer in [0, ...]" after the first window ran. Now refused before any
    work (the CLI's check and plan()), naming the seed given; valid seeds derive the window seeds as before."""
    top = 2**63 - 1
    req = GenerationRequest("a", **{**BASE, "seed": top})  # three windows, starting at latent frames 0, 3, 6
    message = (rf"^seed={top} is too large for a video in 3 windows \(window seeds are seed \+ their first latent "
               rf"frame, up to seed \+ 6, above 2\*\*63 - 1\): use a seed of at most {top - 6}$")
    with pytest.raises(ValueError, match=message):
        long_video.check_seed(req, 20)
    with pytest.raises(ValueError, match=message):
        long_video.plan(req, tiny.preset)
    ok = GenerationRequest("a", **{**BASE, "seed": top - 6})
    long_video.check_seed(ok, 20)
    assert [w.seed for w in long_video.plan(ok, tiny.preset).windows] == [top - 6, top - 3, top]
    one = GenerationRequest("a", height=64, width=96, num_frames=9, frame_rate=24, seed=top)  # no windows
    long_video.check_seed(one, 20)


def test_duration_and_schedule_parsing() -> None:
    assert timeline.frames_for_duration(30, 24) == 721
    assert timeline.parse_duration("1m30s") == 90.0 and timeline.parse_duration("2.5s") == 2.5
    for bad in ("1m-30s", "1m+30s"):  # read as 30 s and 90 s before
        with pytest.raises(ValueError, match="expected seconds such as 30"):
            timeline.parse_duration(bad)
    assert long_video.split_windows(12, 6, 3) == [(0, 6), (3, 9), (6, 12)]
    with pytest.raises(ValueError, match="entry 1"):
        timeline.read_schedule([{"begin": 0, "prompt": "x"}])
    with pytest.raises(ValueError, match="prompt schedule: the path is empty"):  # it read the current folder
        timeline.read_schedule(" ")


def test_cli_long_video_interrupted_and_resumed(tmp_path) -> None:
    """``ltx generate`` as a user runs it: three prompts in four windows with --resume, interrupted (SIGINT) once
    the first windows are kept, then the same command again: the same frames as an uninterrupted run, and no
    state left behind."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from ltxcli import media

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "LTX_WEIGHTS_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "ltxcli", "generate", "-m", "tiny", " | ".join(PROMPTS), "--num-frames", "113",
           "--window", "48", "--overlap", "24", "--steps", "2", "--height", "64", "--width", "64", "--seed", "3", "-q",
           "--crf", "0"]  # lossless: the decoded frames are the frames (H.264 may encode them differently under load)
    subprocess.run([*cmd, "-o", "whole.mp4"], cwd=tmp_path, env=env, check=True, timeout=600)
    state = long_video.state_path(tmp_path / "out.mp4")
    # Interrupted as the second window starts (the first is kept by then): its plain progress line wakes this
    # process up (a blocking read, no polling a file that lives a second), so a loaded machine cannot let the run
    # finish first unless it starves this process for the run's remaining windows; then again.
    plain = [a for a in cmd if a != "-q"] + ["--progress", "plain"]
    for _ in range(3):
        proc = subprocess.Popen([*plain, "-o", "out.mp4", "--resume"], cwd=tmp_path, env=env,
                                stderr=subprocess.PIPE, text=True,
                                # Ctrl-C as at a terminal (a background job of a shell may inherit SIGINT ignored)
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("window 2/"):
                proc.send_signal(signal.SIGINT)
                break
        proc.stderr.read()  # the rest, so the child never blocks on a full pipe
        if proc.wait(timeout=120) != 0:
            break
        (tmp_path / "out.mp4").unlink()
    else:
        pytest.fail("the run finished before it could be interrupted, three times")
    assert state.is_file() and not (tmp_path / "out.mp4").exists()
    subprocess.run([*cmd, "-o", "out.mp4", "--resume"], cwd=tmp_path, env=env, check=True, timeout=600)
    assert not state.exists()
    a, b = media.load_video(tmp_path / "out.mp4"), media.load_video(tmp_path / "whole.mp4")
    assert a.shape[0] == 113 and torch.equal(a, b)


def _tiled_decode_reference(pipe, z: torch.Tensor, num_frames: int) -> torch.Tensor:
    """diffusers' ``_temporal_tiled_decode`` written out on the VAE's raw output, with window-sized tiles (6 latent
    frames, 4 apart) over latents ``z``: float ``[num_frames, H, W, 3]`` in [0, 1]."""
    n_lat, tile_len, stride = z.shape[2], 5, 3  # tile = z[i : i + tile_len + 1]
    blend = 8 * (tile_len - stride)
    with torch.no_grad():
        t = torch.tensor([pipe.preset.decode_timestep]) if pipe.vae.timestep_conditioning else None
        row = []
        for i in range(0, n_lat, stride):
            decoded = pipe.vae.decode(z[:, :, i: i + tile_len + 1], timestep=t).float()
            row.append(decoded[:, :, 1:] if i > 0 else decoded)
        out = []
        for i, tile in enumerate(row):
            if i > 0:
                m = min(row[i - 1].shape[2], tile.shape[2], blend)
                for x in range(m):
                    tile[:, :, x] = row[i - 1][:, :, -m + x] * (1 - x / m) + tile[:, :, x] * (x / m)
                out.append(tile[:, :, : 8 * stride])
            else:
                out.append(tile[:, :, : 8 * stride + 1])
        return ((torch.cat(out, dim=2)[:, :, :num_frames] / 2 + 0.5).clamp(0, 1))[0].permute(1, 2, 3, 0)


def test_streamed_decode_is_diffusers_temporal_tiled_decode(tiny) -> None:
    """The windows' video equals diffusers' ``_temporal_tiled_decode`` algorithm (written out here, on the VAE's
    raw output) with window-sized tiles over the final latents: tiles of 6 latent frames, 4 apart."""
    req = GenerationRequest(" | ".join(PROMPTS), decode_noise_scale=0.0, **{**BASE, "timesteps": None, "steps": 2})
    res = long_video.generate(tiny, req)
    want = _tiled_decode_reference(tiny, res.latents, 89)
    assert want.shape == res.video.shape
    err = (res.video - want).abs().max().item()
    print(f"\nstreamed decode vs diffusers' temporal tiled decode: max abs err {err:.2e}")
    assert err <= 1e-5


def test_temporal_upscale_over_several_windows() -> None:
    """``temporal_upscale`` with three windows: the latents are the temporal upscaler's output on the whole
    windowed run's latents (un-normalise, upscale, normalise: ComfyUI's node on the looping sampler's output),
    12 -> 23 latent frames; the video is the tiled decode of those (177 frames at 48 fps); the record states both
    frame counts and rates. Streamed, the same frames."""
    from dataclasses import replace

    from ltxcli import load_pipeline
    from ltxcli.frames import checked_uint8

    pipe = load_pipeline("tiny", temporal_upsampler="ltxv-temporal-upscaler-0.9.7")
    req = GenerationRequest(" | ".join(PROMPTS), decode_noise_scale=0.0, **{**BASE, "timesteps": None, "steps": 2})
    plain = long_video.generate(pipe, req)
    up = long_video.generate(pipe, replace(req, temporal_upscale=True))
    with torch.no_grad():
        want = pipe.vae.normalize(pipe.temporal_upsampler(pipe.vae.unnormalize(plain.latents)))
    assert up.latents.shape == (1, 16, 23, 2, 3) and rel_err(up.latents, want) <= 1e-6
    assert up.video.shape == (177, 64, 96, 3)
    assert (up.video - _tiled_decode_reference(pipe, up.latents, 177)).abs().max().item() <= 1e-5
    s = up.settings
    assert (s["num_frames"], s["frame_rate"], s["temporal_upscale"]) == (177, 48, {"num_frames": 89, "frame_rate": 24})
    streamed = long_video.generate(pipe, replace(req, temporal_upscale=True), stream=True)
    assert torch.equal(torch.cat(list(streamed.frames())), checked_uint8(up.video))


def _as_multi_scale(tiny, monkeypatch) -> None:
    """The tiny pipeline as a multi-scale model: passes of sigmas (1.0, 0.5) then (0.4, 0.2), guidance off, with an
    upsampler (random weights)."""
    from ltxcli.models.configs import UpsamplerConfig
    from ltxcli.models.upsampler import LatentUpsampler
    from ltxcli.presets import PassSettings

    first = PassSettings(timesteps=(1.0, 0.5), guidance_scale=1.0, stg_scale=0.0)
    second = PassSettings(timesteps=(0.4, 0.2), guidance_scale=1.0, stg_scale=0.0)
    monkeypatch.setattr(tiny, "preset", replace(tiny.preset, pipeline_type="multi-scale", passes=(first, second)))
    monkeypatch.setattr(tiny, "upsampler", LatentUpsampler(UpsamplerConfig(16, 32, 1)).eval())
    assert tiny.preset.multi_scale


#: Two windows of 48 frames (6 latent frames) over 57 frames (8 latent frames); 17 frames fit one.
TWO_WINDOWS = dict(height=32, width=64, num_frames=57, seed=1, window=48, overlap=24)


@contextmanager
def _transformer_calls(tiny) -> Iterator[list[tuple[int, float]]]:
    """Every transformer call inside as (its batch: the guidance branches, its highest token timestep: the step's
    sigma; conditioning tokens have lower ones)."""
    calls: list[tuple[int, float]] = []
    handle = tiny.transformer.register_forward_pre_hook(
        lambda _, args: calls.append((args[0].shape[0], round(float(args[2].max()), 6))))
    try:
        yield calls
    finally:
        handle.remove()


def test_first_pass_is_the_pass_every_window_of_a_multi_scale_model_runs(tiny, monkeypatch) -> None:
    """first_pass= over several windows (refused before) is each window's one pass: the transformer gets its sigmas,
    not the preset's (1.0, 0.5), in both windows, with CFG's two branches for its guidance 3 (the preset's: 1, one
    branch); the record's one pass is that pass."""
    _as_multi_scale(tiny, monkeypatch)
    req = GenerationRequest("a cat | a dog", first_pass=dict(timesteps=[0.9, 0.6, 0.3], guidance_scale=3.0),
                            **TWO_WINDOWS)
    with _transformer_calls(tiny) as calls:
        res = long_video.generate(tiny, req)
    assert calls == [(2, 0.9), (2, 0.6), (2, 0.3)] * 2
    (ran,) = res.settings["passes"]
    assert (tuple(ran["timesteps"]), ran["guidance_scale"], res.settings["multi_scale"]) == ((0.9, 0.6, 0.3), 3.0, False)


def test_per_pass_settings_in_one_window_are_the_plain_two_pass_run(tiny, monkeypatch) -> None:
    """A windowed request that fits one window runs as one generation, first_pass and second_pass included (both
    passes, bit for bit)."""
    _as_multi_scale(tiny, monkeypatch)
    per_pass = dict(first_pass=dict(timesteps=[0.9, 0.3]), second_pass=dict(timesteps=[0.35]))
    size = dict(height=64, width=96, num_frames=17, seed=1)  # (a multi-scale first pass needs a 64 x 96 video)
    windowed = long_video.generate(tiny, GenerationRequest("a cat | a dog", **{**TWO_WINDOWS, **size}, **per_pass))
    plain = tiny.run(GenerationRequest("a cat", **size, **per_pass))
    assert torch.equal(windowed.latents, plain.latents) and torch.equal(windowed.video, plain.video)
    assert windowed.settings["passes"] == plain.settings["passes"] and len(plain.settings["passes"]) == 2


def test_second_pass_in_several_windows_is_refused_before_any_step(tiny, monkeypatch) -> None:
    """Windows run no second pass: second_pass= is one line saying so (not dropped without a word), before the
    transformer runs."""
    _as_multi_scale(tiny, monkeypatch)
    req = GenerationRequest("a cat | a dog", first_pass={}, second_pass=dict(timesteps=[0.3]), **TWO_WINDOWS)
    with _transformer_calls(tiny) as calls, pytest.raises(ValueError, match=(
            r"^second_pass= sets the second pass of a multi-scale run, which a video in 2 windows does not run \(each "
            r"window is one pass .*\): give them in first_pass= or at the top level$")):
        long_video.generate(tiny, req)
    assert calls == []


def test_first_pass_on_a_one_pass_model_is_refused_in_windows_as_in_one(tiny) -> None:
    """On a model without an upsampler first_pass= asks for two passes, as in one generation: several windows and
    one window give the same line (before, windows were refused with their own)."""
    messages = []
    for frames in (57, 17):  # two windows, one
        with pytest.raises(ValueError) as err:
            long_video.generate(tiny, GenerationRequest("a cat | a dog", first_pass=dict(steps=2),
                                                        **{**TWO_WINDOWS, "num_frames": frames}))
        messages.append(str(err.value))
    assert messages[0] == messages[1] and messages[0].startswith("first_pass= / second_pass= ask for two passes")


def test_a_window_s_refusal_comes_before_its_files_are_read(tiny) -> None:
    """Several windows refuse what one generation refuses before reading any file (Pipeline.run resolves first): a
    missing condition file with first_pass= on a model without an upsampler is the first_pass line in both (the
    windows read the file first before, a MediaError: exit 6 instead of 2)."""
    messages = []
    for frames in (57, 17):  # two windows, one
        with pytest.raises(ValueError) as err:
            long_video.generate(tiny, GenerationRequest("a cat | a dog", first_pass=dict(steps=2),
                                                        conditions=[Condition("/no/such/key.png", 0)],
                                                        **{**TWO_WINDOWS, "num_frames": frames}))
        messages.append((type(err.value), str(err.value)))
    assert messages[0] == messages[1] and messages[0][1].startswith("first_pass= / second_pass= ask for two passes")


def test_multi_scale_model_runs_windows_as_one_first_pass(tiny, monkeypatch) -> None:
    """A multi-scale preset's windows run its first pass at the requested size (ComfyUI's long workflow)."""
    _as_multi_scale(tiny, monkeypatch)
    req = GenerationRequest("a cat | a dog", height=64, width=96, num_frames=57, seed=1, window=48, overlap=24)
    res = long_video.generate(tiny, req)
    assert res.settings["multi_scale"] is False and len(res.settings["passes"]) == 1
    assert tuple(res.settings["passes"][0]["timesteps"]) == (1.0, 0.5)
    assert res.latents.shape == (1, 16, 8, 2, 3) and res.video.shape == (57, 64, 96, 3)


def test_conditions_go_to_the_window_that_holds_their_frame(tiny) -> None:
    """The first-frame image conditions window 0 only; a keyframe goes to the first window holding its frame, at
    its frame inside that window (windows start at pixel frames 0, 24, 48 and are 41 frames long)."""
    from ltxcli.request import Condition

    image, key = torch.zeros(1, 8, 8, 3), torch.ones(1, 8, 8, 3)
    req = GenerationRequest("a", conditions=[Condition(image, 0), Condition(key, 60, 0.8)], **BASE)
    p = long_video.plan(req, tiny.preset)
    assert p is not None
    got = [[(c.media is image, c.frame, c.strength) for c in p.window_request(i).conditions] for i in range(3)]
    assert got == [[(True, 0, 1.0)], [(False, 36, 0.8)], []]  # frame 60: window 1 covers 24 .. 64
    assert [p.window_request(i).num_frames for i in range(3)] == [41, 41, 41]
    assert p.window_request(1).seed == 8 and p.window_request(2).prompt == "a"


def test_each_window_gets_the_control_of_its_own_span(tiny, monkeypatch) -> None:
    """An IC-LoRA control over three windows: each window's denoised latents equal a one-window run (``pipe.run``)
    of that window's request with the same noise and, as its control, the control video's frames of the window's
    own span (frames 0..40, 24..64, 48..88; the media's own frames, sliced here, fitted there). Overlap strength
    0 leaves each window on its own, so the plain run is the whole reference. The control decides the video:
    the control of another span gives other latents."""
    from dataclasses import replace

    from ltxcli.request import Control

    media = torch.rand((89, 48, 80, 3), generator=torch.Generator().manual_seed(3))  # fitted: resize + crop
    req = GenerationRequest(" | ".join(PROMPTS), overlap_strength=0.0, control=Control(media, 0.9),
                            **{**BASE, "timesteps": None, "steps": 2})
    seen: list[torch.Tensor] = []
    real = long_video._LongRun._denoise_window

    def spy(self, i, text, out):
        lat = real(self, i, text, out)
        seen.append(lat.clone())
        return lat

    monkeypatch.setattr(long_video._LongRun, "_denoise_window", spy)
    res = long_video.generate(tiny, req, window_noise=lambda i, shape: _noise(shape, i))
    assert res.settings["control"] == {"source": None, "kind": "video", "strength": 0.9}
    p = long_video.plan(req, tiny.preset)
    assert p is not None and len(seen) == 3
    for i, w in enumerate(p.windows):
        one = p.window_request(i, _noise((1, 16, 6, 2, 3), i))
        start = w.first_frame
        want = tiny.run(replace(one, control=Control(media[start: start + w.num_frames], 0.9))).latents
        assert torch.equal(seen[i], want), (i, rel_err(seen[i], want))
        if i:
            other = tiny.run(replace(one, control=Control(media[: w.num_frames], 0.9))).latents
            assert rel_err(other, want) > 1e-3


def test_cli_control_over_several_windows(tmp_path, monkeypatch) -> None:
    """``ltx generate --control`` with two windows (in process, cli_harness: a subprocess only added its
    start-up); the record lists the control and both windows."""
    import json

    from cli_harness import enter_cli_env, ltx, memoised_loader

    from ltxcli import media

    enter_cli_env(tmp_path, monkeypatch, memoised_loader())
    clip = torch.zeros(57, 48, 64, 3)
    for i in range(57):  # a square moving right
        clip[i, 10:30, i % 40: i % 40 + 16] = 1.0
    media.write_video(tmp_path / "depth.mp4", clip, 24)
    proc = ltx("generate", "-m", "tiny", "a car | a bus", "--num-frames", "57", "--window", "48", "--overlap", "24",
               "--steps", "2", "--height", "64", "--width", "64", "--seed", "3", "--control", "depth.mp4:0.8",
               "-o", "out.mp4", "--json")
    assert proc.exit_code == 0, proc.stderr
    summary = json.loads(proc.stdout)
    want = {"source": "depth.mp4", "kind": "video", "strength": 0.8}
    assert summary["settings"]["control"] == want
    stream, record = media.media_info(tmp_path / "out.mp4")
    assert stream["num_frames"] == 57 and record["control"] == want
    assert [w["first_frame"] for w in record["long"]["windows"]] == [0, 24]


def test_a_rank_that_does_not_write_reads_the_resume_state_and_never_writes_it(tiny, tmp_path) -> None:
    """``keep_state=False`` (the ranks of a split video other than the writer): an interrupted run leaves no
    state; given the writer's state it resumes from the same window (the same latents) and leaves the file."""
    req = GenerationRequest("a cat | a dog", height=64, width=64, num_frames=57, seed=2, steps=2, window=48,
                            overlap=24)
    state = tmp_path / ".out.ltx-resume"

    class Stop(Exception):
        pass

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage == "window" and done == 1:
            raise Stop

    for keep in (False, True):
        with pytest.raises(Stop):
            long_video.generate(tiny, req, resume=state, keep_state=keep, progress=interrupt)
        assert state.is_file() == keep
    saved = state.read_bytes()
    whole = long_video.generate(tiny, req)
    stages: set[str] = set()
    resumed = long_video.generate(tiny, req, resume=state, keep_state=False, progress=lambda s, *_: stages.add(s))
    assert "window 1/2" not in stages and "window 2/2" in stages  # window 1 came from the state, not denoised
    assert torch.equal(resumed.latents, whole.latents) and state.read_bytes() == saved


def test_resumed_from_any_window_equals_the_uninterrupted_video(tiny, tmp_path, monkeypatch) -> None:
    """The state after each finished window, resumed: the same latents and the same pixels. (The decode noise of a
    tile once followed the memory layout of the latents it was cut from, which a state read back does not keep.)"""
    import shutil

    from ltxcli.long_video import _LongRun

    # windows of 5 latent frames, 1 shared: the first decode tile (5 latent frames) waits for the second window
    req = GenerationRequest("a cat | a dog | a bird | a cow", **{**BASE, "timesteps": None, "steps": 2,
                                                                 "num_frames": 97, "window": 33, "overlap": 9})
    state = tmp_path / "state.pt"
    save = _LongRun._save_state

    def keep_each(self, out, first, done):  # a copy of the state after every window
        save(self, out, first, done)
        if state.is_file():
            shutil.copy(state, tmp_path / f"after{done}.pt")

    monkeypatch.setattr(_LongRun, "_save_state", keep_each)
    whole = long_video.generate(tiny, req, resume=state)
    assert not state.exists() and (tmp_path / "after3.pt").is_file()
    for done in (1, 2, 3):
        shutil.copy(tmp_path / f"after{done}.pt", state)
        resumed = long_video.generate(tiny, req, resume=state)
        assert torch.equal(resumed.latents, whole.latents), done
        assert torch.equal(resumed.video, whole.video), done


def _interrupted(pipe, req, state, after: int) -> None:
    class Stop(Exception):
        pass

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage == "window" and done == after:
            raise Stop

    with pytest.raises(Stop):
        long_video.generate(pipe, req, resume=state, progress=interrupt)
    assert state.is_file()


def test_a_resumed_run_without_a_seed_continues_with_the_interrupted_runs_seed(tiny, tmp_path) -> None:
    """The same command after an interrupt continues, with or without --seed: a drawn seed is the state's."""
    req = GenerationRequest(" | ".join(PROMPTS), **{**BASE, "timesteps": None, "steps": 2, "seed": None})
    state = tmp_path / "state.pt"
    _interrupted(tiny, req, state, after=2)
    seeded = []
    spy = long_video._LongRun._load_state

    def loaded(self):
        out = spy(self)
        seeded.append(out[2])  # the windows taken from the state
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(long_video._LongRun, "_load_state", loaded)
        resumed = long_video.generate(tiny, req, resume=state)
    assert seeded == [2] and not state.exists()
    whole = long_video.generate(tiny, replace(req, seed=resumed.seed))
    assert torch.equal(resumed.latents, whole.latents) and torch.equal(resumed.video, whole.video)


def test_the_resume_state_is_read_once_by_a_run_and_its_seed_once_when_planned(tiny, tmp_path, monkeypatch) -> None:
    """A resumed run without a seed read the whole state file twice (its seed, then its windows), and the CLI's
    planning read it twice more for the seed alone (finding the interrupted output, then taking its seed). Now
    a run reads it once, and planning once with its latents left unread (mapped): the item's run needs the kept
    windows only when it starts, and a batch holding every item's from the planning on would hold them all."""
    from ltxcli import runner

    req = GenerationRequest("a cat | a dog", height=64, width=64, num_frames=57, steps=1, window=48, overlap=24)
    state = tmp_path / "state.pt"
    _interrupted(tiny, req, state, after=1)
    seed = torch.load(state, weights_only=True)["seed"]
    reads: list[tuple[str, bool]] = []
    load = torch.load

    def counted(f, *args, **kwargs):
        reads.append((str(f), bool(kwargs.get("mmap"))))
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted)
    resumed = long_video.generate(tiny, req, resume=state)
    assert reads == [(str(state), False)] and resumed.seed == seed and not state.exists()
    reads.clear()
    kept = tmp_path / f".{seed}.mp4.ltx-resume"  # what an interrupted run named "{seed}.mp4" left
    torch.save({"hash": "x", "seed": seed, "out": torch.zeros(1, 128, 6, 2, 2), "first": torch.zeros(1),
                "done": 1}, kept)
    (item,) = runner.build_items([{"prompt": "a cat | a dog", "resume": True, "window": 48}], preset=tiny.preset)
    assert item.seed_drawn and item.seed != seed
    runner.plan_outputs([item], output=str(tmp_path / "{seed}.mp4"), model="tiny", preset=tiny.preset)
    assert (item.seed, item.target, reads) == (seed, tmp_path / f"{seed}.mp4", [(str(kept), True)])


def test_a_state_made_with_other_loras_in_the_pipeline_is_not_resumed(tmp_path) -> None:
    """LoRAs set on the pipeline (not named by the request) decide the windows too."""
    from test_lora import tiny_lora

    import ltxcli

    styled = ltxcli.load_pipeline("tiny", loras=[(str(tiny_lora(tmp_path)), 0.8)])
    plain = ltxcli.load_pipeline("tiny")
    req = GenerationRequest("a cat | a dog", height=64, width=64, num_frames=57, seed=2, steps=2, window=48,
                            overlap=24)
    state = tmp_path / "state.pt"
    _interrupted(styled, req, state, after=1)
    resumed = long_video.generate(plain, req, resume=state)
    assert torch.equal(resumed.latents, long_video.generate(plain, req).latents)


def test_schedule_errors_name_the_file_line(tmp_path) -> None:
    """Blank and comment lines were dropped before numbering, so "line 2" pointed at the wrong line; a comment
    indented by a space was parsed as JSON."""
    sched = tmp_path / "s.jsonl"
    sched.write_text('# schedule\n\n{"start": 0, "prompt": "a cat"}\n  # a dog next\n{"start": "2s", "prompt": "a dog"\n')
    with pytest.raises(ValueError, match=r"s\.jsonl line 5: invalid JSON"):
        timeline.read_schedule(str(sched))
    sched.write_text('# schedule\n\n{"start": 0, "prompt": "a cat"}\n  # a dog next\n{"start": "2s", "prompt": "a dog"}\n')
    assert timeline.read_schedule(str(sched)) == [(0, "a cat"), ("2s", "a dog")]


def test_a_schedule_from_a_pipe_is_refused_by_name(tmp_path) -> None:
    """`--prompt-schedule <(...)`: it is read when checked and again for the windows, and the second read of the
    pipe was empty: "the prompt schedule has no entries"."""
    import os
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    threading.Thread(target=lambda: fifo.write_text('{"start": 0, "prompt": "a cat"}\n'), daemon=True).start()
    try:
        with pytest.raises(ValueError, match=r"fifo: a pipe, which can be read once only: save it to a file"):
            timeline.read_schedule(str(fifo))
    finally:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # lets the writer go, had it not been opened


def test_schedule_entries_starting_at_the_same_frame_are_refused(tmp_path) -> None:
    """Two entries at one start frame ("1s" and 24 at 24 fps too): the window took whichever prompt sorted last
    alphabetically, not the one the file gave last; it is refused before any model work, naming both entries."""
    sched = tmp_path / "s.jsonl"
    sched.write_text('{"start": 0, "prompt": "a cat"}\n{"start": "1s", "prompt": "b dog"}\n{"start": 24, "prompt": "a bird"}\n')
    request = GenerationRequest("x", num_frames=65, frame_rate=24, window=16, overlap=8, prompt_schedule=str(sched))
    with pytest.raises(ValueError, match=r"entries 2 and 3 both start at frame 24 \(at 24 fps\)"):
        long_video.check(request)
    sched.write_text('{"start": 0, "prompt": "a cat"}\n{"start": "1s", "prompt": "b dog"}\n{"start": 32, "prompt": "a bird"}\n')
    spans = long_video.split_windows(9, 2, 1)
    assert long_video.window_prompts(request, spans, 24.0) == ["a cat"] * 3 + ["b dog"] * 1 + ["a bird"] * 4


def test_schedule_entries_starting_before_frame_0_are_refused(tmp_path) -> None:
    """A start of -8 or "-1s" was accepted (then used by no window, or by the first in place of the entry at 0);
    it is refused before any model work, naming the start."""
    sched = tmp_path / "s.jsonl"
    for start, shown in ((-8, "-8"), ('"-1s"', "'-1s'"), ('"-0.01s"', "'-0.01s'"), ('"-3"', "'-3'")):
        sched.write_text(f'{{"start": 0, "prompt": "a cat"}}\n{{"start": {start}, "prompt": "a dog"}}\n')
        request = GenerationRequest("x", num_frames=65, frame_rate=24, window=16, overlap=8, prompt_schedule=str(sched))
        with pytest.raises(ValueError, match=rf"^prompt schedule start {shown} is before the video's first frame: "
                                             r"give 0 or later$"):
            long_video.check(request)
    assert timeline.schedule_frames([(0, "a"), ("1s", "b")], 24.0) == [(0, "a"), (24, "b")]  # the rest still read


def test_a_state_of_other_settings_says_it_starts_over(tiny, tmp_path) -> None:
    """--resume after changing one option (here --adain): the kept windows were dropped and every window denoised
    again without a word, as if resuming; now one warning names the state and says it starts over. The same
    settings resume silently."""
    import warnings

    req = GenerationRequest("a cat | a dog", height=64, width=64, num_frames=57, seed=2, steps=1, window=48,
                            overlap=24)
    state = tmp_path / ".out.mp4.ltx-resume"
    _interrupted(tiny, req, state, after=1)
    with pytest.warns(UserWarning, match=r"^\.out\.mp4\.ltx-resume: the kept windows were made with other settings"):
        _interrupted(tiny, replace(req, adain=0.3), state, after=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        long_video.generate(tiny, replace(req, adain=0.3), resume=state)  # its own state: resumed
    assert not state.exists()


def test_schedule_entries_no_window_uses_are_named(tiny, tmp_path) -> None:
    """An entry past the video's end, or replaced by a later one before the next window starts, was dropped
    without a word; now one warning names their start frames. A schedule whose entries are all used says nothing."""
    import warnings

    sched = tmp_path / "s.jsonl"
    sched.write_text('{"start": 0, "prompt": "a cat"}\n{"start": 12, "prompt": "a dog"}\n'
                     '{"start": 14, "prompt": "a fox"}\n{"start": "9s", "prompt": "a bird"}\n')
    req = GenerationRequest("x", height=64, width=64, num_frames=25, frame_rate=24, seed=2, steps=1, window=16,
                            overlap=8, prompt_schedule=str(sched))  # windows start at frames 0, 8, 16
    with pytest.warns(UserWarning, match=r"^prompt schedule: 2 entries starting at frame 12, 216 used by no window "
                                         r"\(.*windows start at 0, 8, 16\)$"):
        res = long_video.generate(tiny, req)
    assert [w["prompt"] for w in res.settings["long"]["windows"]] == ["a cat", "a cat", "a fox"]
    sched.write_text('{"start": 0, "prompt": "a cat"}\n{"start": 16, "prompt": "a fox"}\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        long_video.generate(tiny, req)


def test_a_state_made_with_another_tensor_condition_is_not_resumed(tiny, tmp_path) -> None:
    """A condition given in memory (a tensor: an image from the Python API, an extension's context) counted in the
    state's hash by its type alone: a run with another picture resumed the windows made with the first one. Now
    its contents count: another tensor starts over (with the warning), the same one resumes."""
    import warnings

    from ltxcli.request import Condition

    def req(value: float) -> GenerationRequest:
        return GenerationRequest("a cat | a dog", height=64, width=64, num_frames=57, seed=2, steps=1, window=48,
                                 overlap=24, conditions=[Condition(torch.full((1, 64, 64, 3), value), 0)])

    state = tmp_path / ".out.mp4.ltx-resume"
    _interrupted(tiny, req(0.2), state, after=1)
    with pytest.warns(UserWarning, match=r"the kept windows were made with other settings"):
        _interrupted(tiny, req(0.8), state, after=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        long_video.generate(tiny, req(0.8), resume=state)  # its own state: resumed
    assert not state.exists()


@pytest.mark.parametrize("role", ["condition", "control"])
def test_a_state_made_with_a_replaced_condition_or_control_file_is_not_resumed(tiny, tmp_path, role) -> None:
    """A condition (-c img.png:0) or control (--control) file counted in the state's hash by its path alone: the
    same path holding another picture after the interrupt resumed the windows made from the first one, fused with
    new ones from the second. Now, like a v2v input, its size and modification time count: a replaced file starts
    over (with the warning)."""
    import os
    import warnings

    import numpy as np
    from PIL import Image

    from ltxcli.request import Control

    img = tmp_path / "media.png"
    media = {"conditions": [Condition(str(img), 0)]} if role == "condition" else {"control": Control(str(img))}
    req = GenerationRequest("a cat | a dog", height=64, width=64, num_frames=57, seed=2, steps=1, window=48,
                            overlap=24, **media)
    state = tmp_path / ".out.mp4.ltx-resume"
    Image.fromarray(np.full((64, 64, 3), 40, np.uint8)).save(img)
    _interrupted(tiny, req, state, after=1)
    Image.fromarray(np.full((64, 64, 3), 220, np.uint8)).save(img)  # another picture at the same path
    os.utime(img, ns=(1, 1))  # (a file system with a coarse clock: the replacement's time differs all the same)
    with pytest.warns(UserWarning, match=r"the kept windows were made with other settings"):
        _interrupted(tiny, req, state, after=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", r".*the kept windows")  # (a one-frame control is warned of: not this)
        long_video.generate(tiny, req, resume=state)  # the state of the file as it is now: resumed
    assert not state.exists()


def test_a_state_made_without_lora_resumes_under_lora_none(tiny) -> None:
    """`--lora none` (``loras=["none"]``) and no `--lora` (None, nothing merged) make the same windows: a run
    interrupted under one resumed under the other started over, as the request's own ``loras`` entry was hashed
    beside the LoRAs actually merged (the state hash's ``compute``, which decides the latents)."""
    req = GenerationRequest(" | ".join(PROMPTS), **{**BASE, "seed": 6})
    merged = {"dtype": "float32", "loras": []}  # what Pipeline.compute_record and lora_records give with none
    plain = long_video.request_hash(long_video.plan(req, tiny.preset), "tiny", merged)
    for loras in (["none"], []):
        none = replace(req, loras=loras)
        assert long_video.request_hash(long_video.plan(none, tiny.preset), "tiny", merged) == plain, loras
    # the LoRAs merged still tell states apart
    styled = {**merged, "loras": [{"path": "style.safetensors", "sha256": "ab", "scale": 1.0}]}
    assert long_video.request_hash(long_video.plan(req, tiny.preset), "tiny", styled) != plain


def test_a_resumed_state_with_nan_latents_is_named_not_blamed_on_the_fusion(tiny, tmp_path) -> None:
    """A resume state whose kept windows hold NaN (a disk error, a run on a broken device) was reported as made
    by the window fusion ("after fusing window 2: AdaIN of a window with a constant channel?"), which had only
    carried the NaN on. Now the state file is named, with what to do, before any window is denoised."""
    from ltxcli.frames import NumericalError

    req = GenerationRequest("a cat | a dog", height=64, width=64, num_frames=57, seed=2, steps=1, window=48,
                            overlap=24)
    state = tmp_path / ".out.mp4.ltx-resume"
    _interrupted(tiny, req, state, after=1)
    saved = torch.load(state, weights_only=True)
    saved["out"][:, :, 0] = float("nan")  # the first latent frame: the next window fuses it in untouched
    torch.save(saved, state)
    stages: list[str] = []
    with pytest.raises(NumericalError) as e:
        long_video.generate(tiny, req, resume=state, progress=lambda stage, *_: stages.append(stage))
    assert str(e.value) == (f"the latents contain NaN or Inf in the windows --resume kept in {state}: delete that "
                            "file to start over")
    assert "denoise" not in stages and state.is_file()  # nothing denoised; the file left for the user to see


def test_resumed_windows_are_put_on_the_pipeline_s_device() -> None:
    """The state file is read to the host (``map_location="cpu"``) while the windows run and fuse on the device:
    a resumed run on a GPU concatenated CPU latents with the next window's device latents. The meta device stands in
    for a GPU here (the tensors only move)."""
    saved = {"hash": "h", "out": torch.zeros(1, 2, 3, 1, 1), "first": torch.ones(1, 2, 2, 1, 1), "done": 2}
    run = SimpleNamespace(saved=saved, hash="h", state=None, keep_state=False,
                          pipe=SimpleNamespace(device=torch.device("meta")))
    out, first, done = long_video._LongRun._load_state(run)  # type: ignore[arg-type]
    assert (out.device.type, first.device.type, done) == ("meta", "meta", 2)
    assert (tuple(out.shape), tuple(first.shape)) == ((1, 2, 3, 1, 1), (1, 2, 2, 1, 1))


def test_a_video_condition_cut_by_its_windows_end_names_the_window(tiny, tmp_path) -> None:
    """A 17-frame clip at frame 8 of a 49-frame video in windows of 17 frames (0-16, 16-32, 32-48) made backward
    (last first) goes to window 0, made third, whose end leaves it 9 frames: no window made after it goes on with
    the rest. The warning said "from frame 8 of the 17-frame video" (the window, not the video asked for); a file
    (checked against the whole video, where it fits) was cut without a word. Forward, the next window goes on
    with the rest, without a word (test_a_video_condition_goes_on_in_the_next_window)."""
    import warnings

    from ltxcli import media

    media.write_video(tmp_path / "clip.mp4", torch.rand(17, 32, 32, 3), 24)
    req = dict(height=32, width=32, num_frames=49, frame_rate=24, seed=1, steps=1, window=24, overlap=8)
    for clip, name in ((torch.rand(17, 32, 32, 3), "a Tensor"), (str(tmp_path / "clip.mp4"), str(tmp_path / "clip.mp4"))):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            long_video.generate(tiny, GenerationRequest("a | b", conditions=[Condition(clip, 8)], **req), backward=True)
        said = [str(w.message) for w in seen if "trimmed" in str(w.message)]
        assert said == [f"condition {name}: trimmed to its first 9 of 17 frames (only 9 fit from frame 8 to the end "
                        "of window 3/3, frames 0-16 of the 49-frame video, used in 8k + 1 frames; the next window "
                        "takes a condition's frames past this one only 8 or more at a time, and never backward: a "
                        "larger window holds more of it)"]


def test_a_video_condition_goes_on_in_the_next_window(tiny, monkeypatch) -> None:
    """A 41-frame clip at frame 48 of an 89-frame video in windows 0-40, 24-64 and 48-88: window 1 (the first
    holding frame 48) takes its frames 0-16 (video frames 48-64) at its frame 24, window 2 its frames 16-40 (video
    frames 64-88: the frame window 1 ends on, then the frames after the overlap the tail conditions) at its frame
    16, as ComfyUI-LTXVideo's looping sampler gives each window its own slice of the guiding latents. Window 1 took
    the whole clip, cut to 17 frames, and window 2 nothing: frames 65-88 of it were dropped. A keyframe image in
    one window goes there as given (the same object). Nothing is trimmed: no warning."""
    import warnings

    from ltxcli import conditions

    clip, key = torch.rand(41, 32, 32, 3), torch.rand(1, 32, 32, 3)
    seen: list[list[tuple[torch.Tensor, int]]] = []
    real = conditions.prepare_conditions

    def spy(r):
        seen.append([(c.media, c.frame) for c in r.conditions])
        return real(r)

    monkeypatch.setattr(conditions, "prepare_conditions", spy)
    req = GenerationRequest("a", conditions=[Condition(clip, 48), Condition(key, 8)], **{**BASE, "steps": 1})
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        long_video.generate(tiny, req)
    assert [str(w.message) for w in said if "condition" in str(w.message)] == []
    assert len(seen) == 3 and [[f for _, f in window] for window in seen] == [[8], [24], [16]]
    assert seen[0][0][0] is key
    assert torch.equal(seen[1][0][0], clip[:17]) and torch.equal(seen[2][0][0], clip[16:])


def test_a_file_condition_goes_on_in_the_next_window_and_a_trim_is_told_once(tiny, tmp_path) -> None:
    """The windows of test_a_video_condition_goes_on_in_the_next_window: a 41-frame file at frame 48, decoded once,
    goes on in window 2 with its decoded frames 16-40 at frame 16. A 30-frame tensor there uses 25 frames (48-72)
    as one generation would: 17 in window 1, 9 in window 2 (its frames 16-24); the trim is told once, counting
    the whole clip's frames (each window's part, exact, says nothing): not "9 of 14"."""
    import warnings

    from ltxcli import media

    media.write_video(tmp_path / "clip.mp4", torch.rand(41, 32, 32, 3), 24)
    short = torch.rand(30, 32, 32, 3)
    req = GenerationRequest("a", conditions=[Condition(str(tmp_path / "clip.mp4"), 48), Condition(short, 48)], **BASE)
    p = long_video.plan(req, tiny.preset)
    assert p is not None
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        p = replace(p, request=long_video._media_checked(tiny, p))
    assert [str(w.message) for w in said] == ["condition a Tensor: uses its first 25 of 30 frames (a video condition "
                                              "is used in 8k + 1 frames: give 1, 9, 17, 25, ...)"]
    decoded = p.request.conditions[0].media.frames  # [41, 32, 32, 3] uint8
    (file1, short1), (file2, short2) = p.window_request(1).conditions, p.window_request(2).conditions
    assert (file1.frame, short1.frame, file2.frame, short2.frame) == (24, 24, 16, 16)
    assert torch.equal(file1.media.frames, decoded[:17]) and torch.equal(file2.media.frames, decoded[16:])
    assert torch.equal(short1.media, short[:17]) and torch.equal(short2.media, short[16:25])
    assert p.window_request(0).conditions == ()
