"""An extension longer than one window (ltxcli.extend.run_extension in windows): its generation (the input's
context, then the new frames) runs through the looping sampler of ltxcli.long_video, the context a video condition
at frame 0 of the first window; backward, mirrored, the windows walk back in time from the input's first frames.
Tiny model; the input is a 9-frame 32x32 clip, so the context is all 9 frames."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ltxcli import media
from ltxcli.extend import run_extension
from ltxcli.request import Extension, GenerationRequest
from ltxcli.tiny import build_pipeline

# window 32 / overlap 16 frames: 4 / 2 latent frames, 25-frame windows 2 latent frames (16 frames) apart
BASE = dict(height=32, width=32, seed=5, steps=1, window=32, overlap=16)


@pytest.fixture(scope="module")
def tiny():
    return build_pipeline(torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frames = torch.rand(9, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    return media.write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, 24)


def _extend(pipe, clip: Path, prompt: str, frames: int, **kwargs):
    return run_extension(pipe, GenerationRequest(prompt, extend=Extension(str(clip), frames), **{**BASE, **kwargs}))


def test_two_windows_add_the_frames_and_the_first_is_the_one_window_extension(tiny, clip: Path) -> None:
    """24 new frames after a 9-frame context: a 33-frame generation (5 latent frames) in windows [0, 4) and [2, 5)
    of latent frames; it used to be refused ("extending a video in windows is not supported yet"). Window 0 is the
    extension by the 16 new frames its 25 frames hold, bit for bit: its latents before the cross-fade (the last
    overlap - 1 = 1 of its 4) are unchanged in the output."""
    two = _extend(tiny, clip, "a cat | a dog", 24)
    one = _extend(tiny, clip, "a cat", 16, window=None, overlap=None)
    assert two.video.shape == (9 + 24, 32, 32, 3) and one.video.shape == (9 + 16, 32, 32, 3)
    assert torch.equal(two.video[:9], media.load_video(clip))  # the input's frames as decoded
    windows = two.settings["long"]["windows"]
    assert [(w["first_frame"], w["num_frames"], w["prompt"]) for w in windows] == [(0, 25, "a cat"), (16, 17, "a dog")]
    assert two.settings["extend"]["context_frames"] == 9 and two.settings["num_frames"] == 33
    assert two.latents.shape[2] == 5 and one.latents.shape[2] == 4
    assert torch.equal(two.latents[:, :, :3], one.latents[:, :, :3])
    assert not torch.equal(two.latents[:, :, 3], one.latents[:, :, 3])  # cross-faded into window 1


def test_a_windowed_extension_that_fits_one_window_is_the_extension_bit_for_bit(tiny, clip: Path) -> None:
    """A '|' prompt (windows asked for) whose generation fits one window (9 + 16 frames in a 25-frame window): the
    extension without windows with the first part as its prompt; the record keeps the prompt given."""
    windowed = _extend(tiny, clip, "a cat | a dog", 16)
    plain = _extend(tiny, clip, "a cat", 16, window=None, overlap=None)
    assert torch.equal(windowed.video, plain.video) and torch.equal(windowed.latents, plain.latents)
    assert windowed.settings["prompt"] == "a cat | a dog" and len(windowed.settings["long"]["windows"]) == 1


@pytest.mark.parametrize(("backward", "windows"), [(False, [73, 41]), (True, [41, 73])], ids=["forward", "backward"])
def test_more_new_frames_than_the_time_range_holds_run_in_windows(tiny, tmp_path: Path, backward: bool,
                                                                  windows: list[int]) -> None:
    """At 4 fps the tiny model's 20 s hold 81 frames: 88 new frames were refused ("do not fit in the model's time
    range ... add at most 80"); now they run in windows of the default 80 (73 frames), as a long video does. 97
    frames: 13 latent, windows [0, 10) and [7, 13); backward [3, 13) made first and [0, 6), listed in time order."""
    clip = media.write_video(tmp_path / "slow.mp4", torch.rand(9, 32, 32, 3, generator=torch.Generator()), 4)
    out = run_extension(tiny, GenerationRequest("a cat", height=32, width=32, seed=1, steps=1,
                                                extend=Extension(str(clip), 88, backward)))
    assert out.video.shape[0] == 9 + 88
    assert torch.equal(out.video[88:] if backward else out.video[:9], media.load_video(clip))
    assert [w["num_frames"] for w in out.settings["long"]["windows"]] == windows


def test_each_window_gets_the_control_of_its_own_output_frames(tiny, tmp_path: Path, monkeypatch) -> None:
    """A control counts in output frames: a 20-frame input in 25-frame windows conditions on its last 17 frames
    (window 0 starts at output frame 3), and window 1, 16 frames later, takes the control from output frame 19.
    Control frame j is the grey level j / 80."""
    from ltxcli import control as control_mod
    from ltxcli.request import Control

    clip = media.write_video(tmp_path / "in.mp4", torch.rand(20, 32, 32, 3, generator=torch.Generator()), 24)
    levels = torch.arange(44) / 80
    seen = {}
    real = control_mod.window_control

    def spy(frames, r, first):
        prepared = real(frames, r, first)
        seen[first] = ((prepared.pixels[0, 0, :, 0, 0] + 1) / 2 * 80).round().long().tolist()
        return prepared

    monkeypatch.setattr(control_mod, "window_control", spy)
    control = Control(levels[:, None, None, None].expand(-1, 32, 32, 3).clone(), 0.9)
    out = run_extension(tiny, GenerationRequest("a | b", extend=Extension(str(clip), 24), control=control, **BASE))
    assert out.video.shape[0] == 44 and out.settings["extend"]["context_frames"] == 17
    assert seen == {0: list(range(3, 28)), 16: list(range(19, 44))}


def test_a_control_that_ends_before_the_generation_is_named_in_a_warning(tiny, tmp_path: Path) -> None:
    """A 20-frame input in 25-frame windows is conditioned on its last 17 frames (the generation starts at output
    frame 3): a 3-frame control covers none of it and was dropped without a word (the record naming it)."""
    from ltxcli.request import Control

    clip = media.write_video(tmp_path / "in.mp4", torch.rand(20, 32, 32, 3, generator=torch.Generator()), 24)
    control = Control(torch.rand(3, 32, 32, 3, generator=torch.Generator()), 0.9)
    with pytest.warns(UserWarning, match="ends before output frame 3, where the generation starts"):
        run_extension(tiny, GenerationRequest("a | b", extend=Extension(str(clip), 8), control=control, **BASE))


def test_a_prompt_schedule_counts_in_output_frames(tiny, tmp_path: Path) -> None:
    """A prompt schedule was refused with an extension. Its starts count in output frames, as keyframes do: a
    20-frame input in 25-frame windows conditions on its last 17 frames, so the windows start at output frames 3
    and 19; "b" (from 2) is in force at 3, "c" starts at 19 (in generation frames, 19 > 16, window 1 would keep
    "b"), and "a" (from 0), superseded inside the input's own frames, is named in a warning."""
    clip = media.write_video(tmp_path / "in.mp4", torch.rand(20, 32, 32, 3, generator=torch.Generator()), 24)
    schedule = [{"start": 0, "prompt": "a"}, {"start": 2, "prompt": "b"}, {"start": 19, "prompt": "c"}]
    with pytest.warns(UserWarning, match="entries starting at frame 0 fall in the input's own frames"):
        out = run_extension(tiny, GenerationRequest("x", extend=Extension(str(clip), 24), prompt_schedule=schedule,
                                                    **BASE))
    assert out.video.shape[0] == 44 and out.settings["extend"]["context_frames"] == 17
    assert [w["prompt"] for w in out.settings["long"]["windows"]] == ["b", "c"]


def test_a_schedule_entry_no_window_takes_is_named_in_output_frames(tiny, tmp_path: Path) -> None:
    """The windows start at output frames 3 and 19 (as above): "c" from 10 is replaced by "d" from 19 before any
    window takes it. The warning named it at frame 7 and the windows at 0 and 16 (the generation's frames), where
    the schedule counts output frames."""
    clip = media.write_video(tmp_path / "in.mp4", torch.rand(20, 32, 32, 3, generator=torch.Generator()), 24)
    schedule = [{"start": 0, "prompt": "b"}, {"start": 10, "prompt": "c"}, {"start": 19, "prompt": "d"}]
    with pytest.warns(UserWarning, match=r"the entry starting at frame 10 used by no window .*windows start at 3, "
                                         r"19\)"):
        out = run_extension(tiny, GenerationRequest("x", extend=Extension(str(clip), 24), prompt_schedule=schedule,
                                                    **BASE))
    assert [w["prompt"] for w in out.settings["long"]["windows"]] == ["b", "d"]


def test_what_an_extension_does_not_run_in_windows_is_refused_in_one_line(tiny, clip: Path) -> None:
    with pytest.raises(ValueError, match="duration is not supported with an extension"):
        run_extension(tiny, GenerationRequest("a cat | a dog", **{**BASE, "extend": Extension("clip.mp4", 40),
                                                                  "duration": 2.0}))


def test_an_interrupted_windowed_extension_resumes(tiny, clip: Path, tmp_path: Path) -> None:
    """resume= keeps the finished windows (their hash counts the context's pixels) and the same request continues
    to the uninterrupted video."""
    req = GenerationRequest("a cat | a dog", extend=Extension(str(clip), 24), **BASE)
    resumed, whole = _resumed(tiny, req, tmp_path / "state"), run_extension(tiny, req)
    assert torch.equal(resumed.latents, whole.latents) and torch.equal(resumed.video, whole.video)


def _resumed(pipe, req: GenerationRequest, state: Path):
    """``req`` stopped once its first window is made, then run again with the state it kept (deleted once done)."""
    class Stop(Exception):
        pass

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage == "window" and done == 1:
            raise Stop

    with pytest.raises(Stop):
        run_extension(pipe, req, resume=state, progress=interrupt)
    assert state.is_file()
    resumed = run_extension(pipe, req, resume=state)
    assert not state.exists()
    return resumed


def test_a_seed_too_large_for_the_window_seeds_is_refused_before_any_model_work(clip: Path) -> None:
    """Window seeds are seed + the window's first latent frame: --seed 2**63 - 1 on an extension in windows was
    refused only by the run, once the model had loaded; now by the checks before the load (runner.validate_item,
    as a long video's), naming the seed given. Windows [0, 4) and [2, 5): up to seed + 2."""
    from ltxcli.batch import BatchItem
    from ltxcli.runner import validate_item

    top = 2**63 - 1

    def item(seed: int) -> BatchItem:
        return BatchItem("a cat | a dog", extend=Extension(str(clip), 24), num_frames=9 + 24, frame_rate=24.0,
                         **{**BASE, "seed": seed})

    with pytest.raises(ValueError, match=rf"^seed={top} is too large for a video in 2 windows .* up to seed \+ 2, "
                                         rf".*use a seed of at most {top - 2}$"):
        validate_item(item(top), (20, 2048, 2048), frames_out=True)
    validate_item(item(top - 2), (20, 2048, 2048), frames_out=True)


# --- backward: the new frames precede the input, the windows walk back in time from its first frames (split from
# the generation's end, each conditioned on the head of the one made before it) ------------------------------------


def _back(pipe, clip: Path, prompt: str, frames: int, **kwargs):
    return run_extension(pipe, GenerationRequest(prompt, extend=Extension(str(clip), frames, backward=True),
                                                 **{**BASE, **kwargs}))


def _spy_windows(pipe, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, list[int]]]:
    """Each denoised generation in the order made: (its prompt, its frames, the frames its appended latents sit
    at: the neighbour window's head)."""
    calls: list[tuple[str, int, list[int]]] = []
    real = pipe._denoise_passes

    def spy(r, *args, **kwargs):
        conds = args[3][0]
        calls.append((r.prompt, r.num_frames, [c.frame for c in conds if c.append]))
        return real(r, *args, **kwargs)

    monkeypatch.setattr(pipe, "_denoise_passes", spy)
    return calls


@pytest.fixture(scope="module")
def two(tiny, clip: Path):
    """24 new frames in two windows, and the generations it denoised (:func:`_spy_windows`)."""
    with pytest.MonkeyPatch.context() as mp:
        calls = _spy_windows(tiny, mp)
        return _back(tiny, clip, "a cat | a dog", 24), calls


def test_two_windows_precede_the_input_and_the_first_made_is_the_one_window_extension(
        tiny, clip: Path, two, monkeypatch: pytest.MonkeyPatch) -> None:
    """24 new frames before the 9-frame context: a 33-frame generation (5 latent frames) in windows [1, 5) (made
    first, the context at its frames 16-24) and [0, 3) (made second, the first one's 2 head latents appended at
    its frame 8); it used to be refused ("extending a video backward in windows is not supported yet"). The
    earliest window takes the first '|' part. The window made first is the backward extension by the 16 new frames
    its 25 frames hold, bit for bit: its latents after the cross-fade (global latent frame 2, the only shared one
    once the first window's head frame is dropped) are unchanged in the output."""
    two, made = two
    assert made == [("a dog", 25, []), ("a cat", 17, [8])]
    calls = _spy_windows(tiny, monkeypatch)
    one = _back(tiny, clip, "a dog", 16, window=None, overlap=None)
    assert calls == [("a dog", 25, [])]
    assert two.video.shape == (24 + 9, 32, 32, 3) and one.video.shape == (16 + 9, 32, 32, 3)
    assert torch.equal(two.video[24:], media.load_video(clip))  # the input's frames as decoded, last
    assert two.settings["extend"] == {"video": str(clip), "frames": 24, "backward": True, "context_frames": 9}
    assert two.settings["num_frames"] == 33 and two.latents.shape[2] == 5 and one.latents.shape[2] == 4
    assert torch.equal(two.latents[:, :, 3:], one.latents[:, :, 2:])
    assert not torch.equal(two.latents[:, :, 2], one.latents[:, :, 1])  # cross-faded with the earlier window


def test_a_prompt_schedule_counts_output_frames_from_the_first_new_one(tiny, clip: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """20 new frames: the generation is 24 + 9 frames, its first 4 dropped, so the windows start at output frames
    -4 (the earliest) and 4. A schedule counts output frames from the first new one: "b" from 4 is the later
    window's (made first), "a" the earliest's; "c" from 22 starts inside the input's own frames (20-28) and is
    named in a warning as used by no window."""
    calls = _spy_windows(tiny, monkeypatch)
    schedule = [{"start": 0, "prompt": "a"}, {"start": 4, "prompt": "b"}, {"start": 22, "prompt": "c"}]
    with pytest.warns(UserWarning, match=r"the entry starting at frame 22 used by no window .*windows start at 0, 4\)"):
        out = _back(tiny, clip, "x", 20, prompt_schedule=schedule)
    assert [(p, n) for p, n, _ in calls] == [("b", 25), ("a", 17)]
    assert out.video.shape[0] == 29 and torch.equal(out.video[20:], media.load_video(clip))


def test_a_schedule_entry_after_a_window_starts_is_not_its_prompt(tiny, clip: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """As above, "b" from 5 is not yet in force at output frame 4, where the later window starts (in generation
    frames, 9 > 8: counted from the generation's frame 0 it would be)."""
    calls = _spy_windows(tiny, monkeypatch)
    with pytest.warns(UserWarning, match="the entry starting at frame 5 used by no window"):
        _back(tiny, clip, "x", 20, prompt_schedule=[{"start": 0, "prompt": "a"}, {"start": 5, "prompt": "b"}])
    assert [p for p, _, _ in calls] == ["a", "a"]


def test_an_interrupted_backward_extension_resumes(tiny, clip: Path, two, tmp_path: Path) -> None:
    """resume= keeps the windows made so far (the latest in time) and the same request continues to the
    uninterrupted video."""
    req = GenerationRequest("a cat | a dog", extend=Extension(str(clip), 24, backward=True), **BASE)
    resumed, whole = _resumed(tiny, req, tmp_path / "state"), two[0]
    assert torch.equal(resumed.latents, whole.latents) and torch.equal(resumed.video, whole.video)


def test_a_temporal_upscale_is_refused_backward_in_windows_with_the_two_runs_that_make_it() -> None:
    """The refusal said "upscale the extended video" and not how: it names the extension (its windows kept) and
    the video-to-video that upscales it in time, in the same windows with the same prompts."""
    from ltxcli.extend import check_extension

    with pytest.raises(ValueError, match="temporal_upscale is not supported with an extension") as e:
        check_extension(GenerationRequest("a | b", extend=Extension("in/clip.mp4", 40, backward=True), window=32,
                                          temporal_upscale=True))
    assert ("`ltx extend in/clip.mp4 'a | b' --frames 40 --backward --window 32 -o clip-extended.mp4`, then "
            "`ltx v2v clip-extended.mp4 'a | b' --strength 0.3 --temporal-upscale --window 32 -o "
            "clip-extended-2x.mp4`") in str(e.value)


def test_a_multi_scale_extension_s_upscale_runs_on_a_single_pass_model() -> None:
    """A multi-scale distilled model (the default one among them) keeps no step at strength 0.3 (its schedules end
    at 0.4219): with one, the v2v the refusal names runs on a single-pass model, whose preset resolves that
    video-to-video with the temporal upscale."""
    from ltxcli.extend import check_extension
    from ltxcli.presets import PRESETS
    from ltxcli.request import resolve_request

    req = GenerationRequest("a cat", extend=Extension("clip.mp4", 8), temporal_upscale=True)
    with pytest.raises(ValueError) as e:
        check_extension(req, PRESETS["ltxv-2b-0.9.8-distilled"])
    assert ("`ltx v2v clip-extended.mp4 'a cat' --strength 0.3 --temporal-upscale -m ltxv-2b-0.9.6-distilled -o "
            "clip-extended-2x.mp4`") in str(e.value)
    v2v = GenerationRequest("a cat", video="clip-extended.mp4", denoise_strength=0.3, temporal_upscale=True,
                            num_frames=20, height=64, width=96, frame_rate=12)
    with pytest.raises(ValueError, match="below every timestep"):
        resolve_request(v2v, PRESETS["ltxv-2b-0.9.8-distilled"])
    r = resolve_request(v2v, PRESETS["ltxv-2b-0.9.6-distilled"])
    assert r.temporal_upscale and r.passes[0].skip_initial_inference_steps == 6  # 2 of its 8 steps redone


def test_a_backward_record_s_windows_redo_as_the_schedule_in_output_frames() -> None:
    """--from rebuilds a schedule from the record's windows (generation frames): backward, 20 new frames make a
    generation of 24 + 9 whose first 4 frames are dropped, so its windows at generation frames 0 and 8 start at
    output frames 0 (-4, in the dropped frames) and 4, as the schedule a@0, b@4 that made them. It read them as
    starting at 0 and 8 (forward's shift, the input's frames before the context: none), and the redo's later
    window took "a"."""
    from ltxcli.redo import record_values

    windows = [{"first_frame": 0, "num_frames": 17, "prompt": "a", "seed": 7},
               {"first_frame": 8, "num_frames": 25, "prompt": "b", "seed": 5}]
    record = {"prompt": "x", "seed": 5, "num_frames": 29, "frame_rate": 24.0,
              "extend": {"video": "clip.mp4", "frames": 20, "backward": True, "context_frames": 9},
              "long": {"window": 32, "overlap": 16, "overlap_strength": 0.5, "adain": 0.25, "windows": windows}}
    assert record_values(record)["prompt_schedule"] == [{"start": 0, "prompt": "a"}, {"start": 4, "prompt": "b"}]


@pytest.mark.parametrize(("backward", "frames", "windows", "later", "other"), [
    (False, 24, [(0, "a"), (16, "b")], 17, 20),  # a 12-frame input's last 9 frames: windows at output frames 3, 19
    (True, 20, [(0, "a"), (8, "a")], 6, 4),  # 24 + 9 frames, the first 4 dropped: windows at output frames -4, 4
], ids=["forward", "backward"])
def test_skip_existing_reads_an_extension_s_windows_in_output_frames(backward: bool, frames: int, windows: list,
                                                                     later: int, other: int) -> None:
    """--skip-existing compares the prompt each recorded window took with the item's schedule: the windows count
    generation frames, the schedule output frames. Forward "b" from 17 is in force at output frame 19 (generation
    frame 16), backward "b" from 6 not yet at output frame 4 (generation frame 8): compared at the generation's
    frames, the earlier output of the same command was taken for another video (a new seed, a second file), and
    one of another schedule ("b" from 20 forward, from 4 backward) could be taken for it."""
    from ltxcli.batch import BatchItem
    from ltxcli.resume import _same_windows

    def item(start: int) -> BatchItem:
        return BatchItem("x", extend=Extension("clip.mp4", frames, backward), frame_rate=24.0, window=32,
                         overlap=16, prompt_schedule=[{"start": 0, "prompt": "a"}, {"start": start, "prompt": "b"}])

    record = {"num_frames": 12 + frames, "extend": {"video": "clip.mp4", "frames": frames, "backward": backward,
                                                     "context_frames": 9},
              "long": {"window": 32, "overlap": 16, "overlap_strength": 0.5, "adain": 0.25,
                       "windows": [{"first_frame": f, "prompt": p} for f, p in windows]}}
    assert _same_windows(item(later), record)
    assert not _same_windows(item(other), record)  # a schedule whose "b" the later window takes (forward: not)
