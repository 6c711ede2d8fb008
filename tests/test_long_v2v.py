"""Video-to-video in windows (ltxcli.long_video): each window starts from its own slice of the whole input's
latents, as ComfyUI-LTXVideo's ``LTXVLoopingSampler`` hands each temporal tile its slice of the input latents
(``optional_initialization_latents``), with the same tail conditioning and fusion as a text-to-video in windows."""

from __future__ import annotations

import os
import re

import pytest
import torch

from ltxcli import long_video
from ltxcli.request import GenerationRequest
from ltxcli.tiny import build_pipeline

# 41 frames = 6 latent frames at 64x64 (2x2 latents); window 24 / overlap 8 frames = 3 / 1 latent frames, 2 apart:
# windows [0, 3), [2, 5), [4, 6)
SMALL = dict(height=64, width=64, num_frames=41, frame_rate=24, seed=5, window=24, overlap=8, guidance_scale=1.0,
             stg_scale=0.0, stochastic_sampling=False, image_cond_noise_scale=0.0)


@pytest.fixture(scope="module")
def tiny():
    return build_pipeline(torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    # every frame its own noise: each latent frame of the input differs from the others
    return torch.rand(41, 64, 64, 3, generator=torch.Generator().manual_seed(3))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_v2v_in_one_window_is_the_plain_v2v_bit_for_bit(tiny, frames) -> None:
    """A windowed v2v request that fits one window (a '|' prompt, --window) is the plain v2v of its first prompt."""
    one = dict(height=64, width=64, num_frames=25, seed=7, steps=4, denoise_strength=0.5)
    plain = tiny.run(GenerationRequest("a cat", video=frames[:25], **one))
    res = long_video.generate(tiny, GenerationRequest("a cat | a dog", video=frames[:25], window=48, **one))
    assert torch.equal(res.latents, plain.latents) and torch.equal(res.video, plain.video)
    assert res.settings["long"]["window"] == 48 and res.settings["denoise_strength"] == 0.5


def test_each_window_starts_from_its_own_slice_of_the_input(tiny, frames, monkeypatch) -> None:
    """At a low strength (one step from timestep 0.01) every window's output stays near the input's latents at its
    own frames (Pipeline.encode of the whole input; its latent frames are 26-84 % apart), far from another's; window 0, which nothing before it
    conditions, is the plain v2v of its 17 frames (the encoder is causal). The input is read and encoded once for
    the three windows."""
    from ltxcli import conditions

    reads, encodes = [], []
    prepare, encode = conditions.prepared_video_chunks, tiny.vae.encode
    monkeypatch.setattr(conditions, "prepared_video_chunks", lambda *a: reads.append(1) or prepare(*a))
    monkeypatch.setattr(tiny.vae, "encode", lambda x: encodes.append(tuple(x.shape)) or encode(x))
    low = dict(timesteps=[0.01], denoise_strength=0.01, adain=0.0)
    res = long_video.generate(tiny, GenerationRequest("a cat | a dog | a bird", video=frames, **{**SMALL, **low}))
    assert len(res.settings["long"]["windows"]) == 3
    assert reads == [1] and encodes == [(1, 3, 41, 64, 64)]
    monkeypatch.undo()
    want = tiny.encode(frames)  # [1, 16, 6, 2, 2]
    assert res.latents.shape == want.shape
    for a in range(6):
        near = rel_err(res.latents[:, :, a], want[:, :, a])
        far = min(rel_err(res.latents[:, :, a], want[:, :, b]) for b in range(6) if b != a)
        assert near < 0.1 < 0.2 < far, (a, near, far)
    first = tiny.run(GenerationRequest("a cat", video=frames[:17], **{**SMALL, **low, "num_frames": 17,
                                                                       "window": None, "overlap": None,
                                                                       "adain": None}))
    assert rel_err(res.latents[:, :, :2], first.latents[:, :, :2]) < 1e-5  # frames no later window touches


def test_v2v_windows_resume_after_an_interrupt_and_not_for_another_input(tiny, frames, tmp_path) -> None:
    from ltxcli.media import write_video

    clip = tmp_path / "in.mp4"
    write_video(clip, frames[:33, :32, :32], 24)  # 5 latent frames at 1x1: windows [0, 3), [2, 5)
    req = GenerationRequest("a cat | a dog", video=str(clip), **{**SMALL, "steps": 2, "num_frames": 33,
                                                                 "height": 32, "width": 32})
    whole = long_video.generate(tiny, req)
    state = long_video.state_path(tmp_path / "out.mp4")

    def stop_after_the_first_window(stage: str, done: int, total: int) -> None:
        if (stage, done) == ("window", 1):
            raise InterruptedError  # (as Ctrl-C would, after the state is written)

    with pytest.raises(InterruptedError):
        long_video.generate(tiny, req, resume=state, progress=stop_after_the_first_window)
    assert state.is_file()
    resumed = long_video.generate(tiny, req, resume=state)
    assert torch.equal(resumed.latents, whole.latents) and not state.exists()
    # the same path holding another video: its windows are not resumed
    p = long_video.plan(req, tiny.preset)
    before = long_video.request_hash(p, "tiny")
    write_video(clip, frames[:33, :32, :32].flip(0), 24, overwrite=True)
    os.utime(clip, ns=(1, 1))
    assert long_video.request_hash(p, "tiny") != before


def test_a_v2v_input_gives_its_length_and_size_to_the_windows(tiny, frames) -> None:
    """long_video.generate(video=...) without num_frames made the preset's 17 frames of a 41-frame input (in one
    window), where Pipeline.run and ltx v2v take the input's length, size and rate."""
    res = long_video.generate(tiny, GenerationRequest("a cat | a dog", video=frames[:, :32, :32], window=24,
                                                      overlap=8, steps=2, seed=1))
    assert tuple(res.video.shape) == (41, 32, 32, 3)
    assert len(res.settings["long"]["windows"]) == 3


def test_explicit_noise_is_the_whole_video_s_each_window_taking_its_own_frames(tiny) -> None:
    """noise= in windows (refused before) is the whole video's initial latents [1, C, 6, 1, 1]: window 0 is the one
    generation of its 17 frames from the first 3, and a change in the last latent frame reaches only the last
    window's new frame (overlap 8: one latent frame, appended without a cross-fade). A wrong shape is one line."""
    base = dict(SMALL, height=32, width=32, steps=2)
    noise = torch.randn(1, 16, 6, 1, 1, generator=torch.Generator().manual_seed(9))
    a = long_video.generate(tiny, GenerationRequest("a cat | a dog | a bird", noise=noise, **base))
    one = tiny.run(GenerationRequest("a cat", noise=noise[:, :, :3], **{**base, "num_frames": 17, "window": None,
                                                                        "overlap": None}))
    assert rel_err(a.latents[:, :, :3], one.latents) <= 1e-6
    changed = noise.clone()
    changed[:, :, 5] += 1.0
    b = long_video.generate(tiny, GenerationRequest("a cat | a dog | a bird", noise=changed, **base))
    assert torch.equal(a.latents[:, :, :5], b.latents[:, :, :5]) and rel_err(b.latents[:, :, 5], a.latents[:, :, 5]) > 1e-3
    with pytest.raises(ValueError, match=r"^noise must have shape \[1, 16, 6, 1, 1\] .*got \[1, 16, 3, 1, 1\]$"):
        long_video.generate(tiny, GenerationRequest("a cat | a dog", noise=noise[:, :, :3], **base))


def test_a_long_input_is_encoded_in_chunks_equal_to_one_encode(tiny, monkeypatch) -> None:
    """The whole input is encoded once, in time chunks (ltxcli.vae_encode): the encoder never takes more than one
    chunk's 8 * 16 + 1 = 129 frames (it took all 145 in one call, its activations growing with the input), and the
    latents each window starts from are the one-call encode's to float rounding (tests/test_vae_encode.py)."""
    from ltxcli.vae_encode import ENCODE_CHUNK_LATENTS

    video = torch.rand(145, 32, 32, 3, generator=torch.Generator().manual_seed(4))  # 19 latent frames
    seen: list[int] = []
    hook = tiny.vae.encoder.conv_in.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[2]))
    got = {}
    encode_source = long_video._LongRun._encode_source

    def spy(run, chunks):
        held: list[torch.Tensor] = []
        got["latents"] = encode_source(run, (held.append(c.clone()) or c for c in chunks))
        got["pixels"] = torch.cat(held, dim=2)
        return got["latents"]

    monkeypatch.setattr(long_video._LongRun, "_encode_source", spy)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is 0.4 s, two on a busy 2-core machine 10 s
    try:
        res = long_video.generate(tiny, GenerationRequest("a cat | a dog", video=video, height=32, width=32, window=96,
                                                          overlap=16, steps=2, seed=1))
    finally:
        hook.remove()
        torch.set_num_threads(threads)
    assert len(res.settings["long"]["windows"]) == 2 and tuple(res.video.shape) == (145, 32, 32, 3)
    assert seen == [8 * ENCODE_CHUNK_LATENTS + 1, 8 * 2], seen  # latents [0, 17) then [17, 19)
    with torch.inference_mode():
        one = tiny.vae.encode(got["pixels"]).float()  # [1, 16, 19, 1, 1] in one call
    assert got["latents"].shape == one.shape
    assert (got["latents"] - one).abs().max().item() < 1e-5


def test_a_long_input_in_tight_memory_is_encoded_in_the_chunks_that_fit(tiny, monkeypatch) -> None:
    """Too little memory free in the encoder's stage for chunks of 16 or 4 latent frames beside what the host comes to
    hold (a read piece's pixels, the latents), enough for 2: the whole input is encoded 17 frames, then 16 at a time
    (ltxcli.memory.encode.fitting_chunk, what the plan prices), with the one-call latents to rounding; the pieces read from the input stay 129 frames (cut to the chunks). It was
    encoded 129 frames at a time whatever was free."""
    from ltxcli.memory import encode as encode_memory

    class Encoded(Exception):
        pass

    video = torch.rand(145, 32, 32, 3, generator=torch.Generator().manual_seed(4))  # 19 latent frames
    price = {c: encode_memory.encode_memory_bytes(tiny.vae.config, (1, 3, 145, 32, 32), torch.float32, c) for c in (4, 2)}
    assert price[4] > price[2]
    hold = 4 * 3 * 129 * 32 * 32 + 4 * 16 * 19  # beside a read piece's float32 pixels and the latents (on the CPU)
    monkeypatch.setattr(encode_memory, "free_memory_bytes", lambda device: hold + int((price[2] + price[4]) / 2 / 0.8))
    seen: list[int] = []
    hook = tiny.vae.encoder.conv_in.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[2]))
    got: dict[str, torch.Tensor] = {}
    encode_source = long_video._LongRun._encode_source
    held: list[torch.Tensor] = []

    def spy(run, chunks):  # the latents, then no window: what is tested is done
        got["latents"] = encode_source(run, (held.append(c.clone()) or c for c in chunks))
        raise Encoded

    monkeypatch.setattr(long_video._LongRun, "_encode_source", spy)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(Encoded):
            long_video.generate(tiny, GenerationRequest("a cat | a dog", video=video, height=32, width=32, window=96,
                                                        overlap=16, steps=2, seed=1))
        with torch.inference_mode():
            one = tiny.vae.encode(torch.cat(held, dim=2)).float()  # [1, 16, 19, 1, 1] in one call (145 frames)
    finally:
        hook.remove()
        torch.set_num_threads(threads)
    assert seen == [17] + [16] * 8 + [145] and [c.shape[2] for c in held] == [129, 16], (seen, [c.shape for c in held])
    assert got["latents"].shape == one.shape and (got["latents"] - one).abs().max().item() < 1e-5


@pytest.mark.parametrize("how", ["windows", "one generation"])
def test_noise_that_is_not_finite_float_latents_is_refused_before_any_work(tiny, monkeypatch, how: str) -> None:
    """noise= of another kind than float latents: a list or an array failed with an AttributeError (no shape, no .to),
    an integer or bool tensor ran as its cast values (torch.randn(...).long(): mostly 0 and -1) and a complex one as
    its real part, a meta tensor failed with NotImplementedError; NaN or Inf latents ran every window's denoising,
    then failed as "the checkpoint may be broken". Each is now one line before any model work."""
    base = dict(SMALL, height=32, width=32, steps=2)
    if how == "windows":
        shape, run = (1, 16, 6, 1, 1), lambda noise: long_video.generate(tiny, GenerationRequest(
            "a cat | a dog", noise=noise, **base))
    else:
        shape, run = (1, 16, 3, 1, 1), lambda noise: tiny.run(GenerationRequest(
            "a cat", noise=noise, **{**base, "num_frames": 17, "window": None, "overlap": None}))

    def no_work(*args, **kwargs):
        raise AssertionError("the denoising started")

    monkeypatch.setattr(tiny, "_denoise_passes", no_work)
    noise = torch.randn(shape)
    dims = ", ".join(map(str, shape))
    wrong = {"a list": noise.tolist(), f"<ndarray [{dims}] float32>": noise.numpy(),
             f"<Tensor [{dims}] int64>": noise.long(), f"<Tensor [{dims}] bool>": noise > 0,
             f"<Tensor [{dims}] complex64>": noise.to(torch.complex64),
             f"<Tensor [{dims}] float32> on the meta device": torch.empty(shape, device="meta")}
    for got, value in wrong.items():
        with pytest.raises(TypeError) as e:
            run(value)
        assert str(e.value) == ("noise must be a floating-point torch tensor of latents [1, C, f, h, w] holding "
                                f"values (e.g. torch.randn(...)), got {got}")
    for bad in (float("nan"), float("inf")):
        broken = noise.clone()
        broken[0, 3, -1] = bad  # (in windows: the last window's frame, which only the last window would use)
        with pytest.raises(ValueError, match=r"^noise= holds NaN or Inf values: the initial latents must be finite"):
            run(broken)


def test_v2v_fields_of_the_wrong_type_are_named_before_the_input_is_read(tiny, frames, monkeypatch) -> None:
    """The input's defaults were filled before the fields' types were checked: denoise_strength="0.5" failed with
    "TypeError: '<' not supported between instances of 'int' and 'str'", True with "strength=True must be in (0, 1)",
    and None (which takes the default, as every None does) with the same TypeError; a video= array, list, number or
    bytes failed in pathlib ("expected str, bytes or os.PathLike object, not ndarray"). In one generation and in
    windows alike, each is now a FieldTypeError naming the field, before any model work."""
    def no_work(*args, **kwargs):
        raise AssertionError("the denoising started")

    monkeypatch.setattr(tiny, "_denoise_passes", no_work)
    one = dict(height=32, width=32, seed=1, steps=2)
    runs = {"one generation": lambda **kw: tiny.run(GenerationRequest("a cat", **one, **kw)),
            "windows": lambda **kw: long_video.generate(tiny, GenerationRequest("a cat | a dog", window=24, overlap=8,
                                                                                **one, **kw))}
    for run in runs.values():
        for value, shown in (("0.5", "'0.5'"), (True, "True")):
            with pytest.raises(TypeError, match=rf"^denoise_strength={shown} must be a number$"):
                run(video=frames, denoise_strength=value)
        for value, got in ((frames.numpy(), "<ndarray [41, 64, 64, 3] float32>"), (list(frames[:2]), "a list"),
                           (3, "3"), (b"in.mp4", "b'in.mp4'")):
            with pytest.raises(TypeError) as e:
                run(video=value)
            assert str(e.value) == ("video must be a video file's path or a torch tensor [F, H, W, 3] in [0, 1] (an "
                                    f"array: torch.from_numpy(array)), got {got}")
    assert tiny.resolve(GenerationRequest("a cat", video=frames, denoise_strength=None, **one)).denoise_strength == 0.5


def test_a_resume_path_that_is_no_state_file_is_refused_before_any_work(tiny, frames, tmp_path, monkeypatch) -> None:
    """resume= a folder failed with IsADirectoryError writing the state once the first window was done (its work
    lost); a number failed in pathlib ("expected str, bytes or os.PathLike object, not int")."""
    def no_work(*args, **kwargs):
        raise AssertionError("the denoising started")

    monkeypatch.setattr(tiny, "_denoise_passes", no_work)
    req = GenerationRequest("a cat | a dog", video=frames[:, :32, :32], **{**SMALL, "height": 32, "width": 32})
    with pytest.raises(ValueError, match=rf"^resume={re.escape(str(tmp_path))}: a folder, not a state file: give a "
                                         r"file's path \(long_video\.state_path\(output\) names"):
        long_video.generate(tiny, req, resume=tmp_path)
    with pytest.raises(TypeError, match=r"^resume=5 must be a state file's path"):
        long_video.generate(tiny, req, resume=5)  # type: ignore[arg-type]


@pytest.fixture()
def one_thread():
    """Tiny tensors: a second thread costs more than it saves (10x on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _Encoded(Exception):
    """Raised by a spy once the input is encoded: the windows need not run."""


@pytest.mark.parametrize(("chunk", "num_frames", "sizes"), [
    (16, 33, [33]),  # one chunk
    (16, 30, [33]),  # one chunk, its last 3 frames the input's last repeated
    (3, 30, [25, 8]),  # two chunks, padding in the second
    (1, 26, [9, 8, 8, 8]),  # four chunks; the last one all padding (the input ends 1 frame into the third)
])
def test_a_file_input_is_read_prepared_and_encoded_a_chunk_at_a_time(tiny, frames, tmp_path, monkeypatch, one_thread,
                                                                     chunk, num_frames, sizes) -> None:
    """The input file was decoded and prepared whole (float32 [1, 3, pf, H, W] on the host: 14.8 GB for 60 s at
    704x1216) before its chunked encode; now each chunk of frames is decoded, prepared and encoded in turn: the
    preprocessing never takes more than one chunk's frames, and the latents are bit for bit those of the whole
    input's pixels (prepare_video) encoded in the same chunks (chunked_encode), padding to 8k + 1 frames included."""
    from ltxcli import media, vae_encode
    from ltxcli.media import write_video

    clip = tmp_path / "in.mp4"
    write_video(clip, frames[:num_frames, :32, :32], 24)
    monkeypatch.setattr(vae_encode, "ENCODE_CHUNK_LATENTS", chunk)
    seen: list[int] = []
    preprocess = media.preprocess_condition_frames
    monkeypatch.setattr(media, "preprocess_condition_frames",
                        lambda f, *a, **k: seen.append(int(f.shape[0])) or preprocess(f, *a, **k))
    got = {}
    encode_source = long_video._LongRun._encode_source

    def spy(run, chunks):
        got["run"], got["latents"] = run, encode_source(run, chunks)
        raise _Encoded

    monkeypatch.setattr(long_video._LongRun, "_encode_source", spy)
    req = GenerationRequest("a cat | a dog", video=str(clip), **{**SMALL, "steps": 2, "num_frames": num_frames,
                                                                 "height": 32, "width": 32})
    with pytest.raises(_Encoded):
        long_video.generate(tiny, req)
    assert seen == sizes  # one chunk's frames at a time (the file's last frame repeated in the padding)
    monkeypatch.undo()
    from ltxcli.conditions import prepare_video

    whole = prepare_video(str(clip), got["run"].full)  # [1, 3, 33, 32, 32]
    with torch.inference_mode():
        want = vae_encode.chunked_encode(tiny.vae, whole, chunk=chunk).float()
    assert torch.equal(got["latents"], want)


def _size_changing_clip(path, sizes: list[tuple[int, int]]) -> None:
    """An MPEG-TS file (named ``path``, e.g. ``.mp4``: FFmpeg goes by the contents) whose frame size changes: one
    H.264 segment per ``(frames, side)``, their timestamps continuing (a constant rate: no VFR refusal first)."""
    import av
    import numpy as np

    data, start = b"", 0
    for n, side in sizes:
        part = path.with_suffix(f".{start}.ts")
        with av.open(str(part), "w", format="mpegts") as out:
            s = out.add_stream("libx264", rate=24, options={"bf": "0"})  # no B-frames: pts in decode order
            s.width = s.height = side
            s.pix_fmt = "yuv420p"
            for i in range(start, start + n):
                frame = av.VideoFrame.from_ndarray(np.full((side, side, 3), 8 * i % 256, np.uint8), format="rgb24")
                frame.pts = i
                out.mux(s.encode(frame))
            out.mux(s.encode(None))
        data, start = data + part.read_bytes(), start + n
        part.unlink()
    path.write_bytes(data)


def test_an_input_that_changes_size_while_streamed_is_the_input_s_error(tiny, tmp_path, one_thread) -> None:
    """A v2v input whose frame size changes after the frames counted up front is found as it is streamed into the
    windows' encode, inside the writer's loop: it was reported as a failure to write the output (OutputError, `ltx
    v2v` exit 1, not the input's 6). The input's MediaError now, and no output file is left."""
    from ltxcli import media, runner

    clip, out = tmp_path / "grows.mp4", tmp_path / "out.mp4"
    # 30 frames asked for (all the pre-check decodes), 33 streamed (the padding to 8k + 1 is the file's next ones)
    _size_changing_clip(clip, [(31, 32), (2, 64)])
    req = GenerationRequest("a cat | a dog", video=str(clip), **{**SMALL, "steps": 2, "num_frames": 30,
                                                                 "height": 32, "width": 32})
    res = long_video.generate(tiny, req, stream=True)
    # with the ways out (the message had none): 25 = 8k + 1 frames stop short of frame 31, whose padding reads 33
    with pytest.raises(media.MediaError, match=r"grows\.mp4: frame size changes from 32x32 to 64x64 at frame 31: use at "
                       r"most its first 25 frames, or re-encode it at one size, e\.g\. ffmpeg -i "
                       rf"{re.escape(str(clip))} -vf scale=32:32,setsar=1 {re.escape(f'{tmp_path}/grows-32x32.mp4')}$") as e:
        runner.save_video(res, out)
    assert not isinstance(e.value, runner.OutputError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grows.mp4"]


@pytest.fixture
def no_model_work(tiny, monkeypatch):
    """``tiny`` whose text encoding (the first model work of a run) fails the test."""
    def no_work(*args, **kwargs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(long_video._LongRun, "_encode_texts", no_work)
    monkeypatch.setattr(tiny, "_encode_prompts", no_work)
    return tiny


def test_an_input_that_changes_size_is_refused_before_any_work(tiny, no_model_work, tmp_path, one_thread) -> None:
    """The frames a long v2v uses are counted up front by decoding them (the frames that decode; `ltx v2v` always),
    but their size was checked only once they were streamed into the encoder, after the model loaded and the text
    encoding (on a real model, minutes): the count's decoding refuses the change, before any model work."""
    from ltxcli import media

    clip = tmp_path / "grows.mp4"
    _size_changing_clip(clip, [(16, 32), (17, 64)])
    # its length left to the input (as `ltx v2v` leaves it, or checks it): counted, up to the frames used
    req = GenerationRequest("a cat | a dog", video=str(clip), **{**SMALL, "steps": 2, "num_frames": None,
                                                                 "height": 32, "width": 32})
    with pytest.raises(media.MediaError, match=r"grows\.mp4: frame size changes from 32x32 to 64x64 at frame 16: "
                                                r"use at most its first 9 frames, or re-encode it at one size"):
        long_video.generate(tiny, req, stream=True)


@pytest.mark.parametrize("entry", ["run_batch", "generate"])
def test_a_size_change_in_the_padding_frames_is_refused_before_any_work(tiny, no_model_work, tmp_path, entry) -> None:
    """30 frames asked of a file changing size at frame 31 read 33 (the padding to 8k + 1 is the file's next
    frames): the up-front count decoded 30 only, so `ltx v2v` (run_batch) refused the change once the model had
    loaded. The count now decodes the frames the run reads."""
    import ltxcli
    from ltxcli import media

    clip = tmp_path / "grows.mp4"
    _size_changing_clip(clip, [(31, 32), (2, 64)])
    fields = {**SMALL, "steps": 2, "num_frames": 30, "height": 32, "width": 32, "frame_rate": None}
    with pytest.raises(media.MediaError, match=r"grows\.mp4: frame size changes from 32x32 to 64x64 at frame 31: "
                                                r"use at most its first 25 frames"):
        if entry == "run_batch":
            list(ltxcli.run_batch(tiny, [ltxcli.BatchItem("a cat | a dog", video=str(clip), **fields)],
                                  output=str(tmp_path / "out.mp4")))
        else:
            long_video.generate(tiny, GenerationRequest("a cat | a dog", video=str(clip), **fields), stream=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grows.mp4"]


def test_a_size_change_s_re_encoding_quotes_the_file_names(tmp_path) -> None:
    """The re-encoding suggested for "my grows.mp4" read `ffmpeg -i my grows.mp4 ... my grows-32x32.mp4`: pasted,
    FFmpeg's input was "my"."""
    from ltxcli import media

    clip = tmp_path / "my grows.mp4"
    _size_changing_clip(clip, [(9, 32), (2, 64)])
    with pytest.raises(media.MediaError) as e:
        media.source_frame_count(clip)
    assert str(e.value).endswith(f"e.g. ffmpeg -i '{tmp_path}/my grows.mp4' -vf scale=32:32,setsar=1 "
                                  f"'{tmp_path}/my grows-32x32.mp4'")


def test_a_size_change_before_frame_9_says_to_use_the_first_frame(tmp_path) -> None:
    """A change at frame 5 leaves one usable 8k + 1 count, 1: the remedy said "its first 1 frames"."""
    from ltxcli import media

    clip = tmp_path / "grows.mp4"
    _size_changing_clip(clip, [(5, 32), (2, 64)])
    with pytest.raises(media.MediaError, match=r"at frame 5: use at most its first frame, or re-encode it at one size"):
        media.load_video(clip)


def test_an_input_without_a_video_suffix_is_streamed_too(tiny, tmp_path, monkeypatch, one_thread) -> None:
    """A long v2v input is decoded a chunk at a time, but only a file named .mp4/.mov/.mkv/... was: a recorder's .ts,
    an .mpg or .flv was decoded whole first (uint8 [F, H, W, 3]: 4.6 GB for 60 s at 704x1216), however long. Now
    any video file is streamed; the chunks are those of the same stream in an .mp4 (its packets copied)."""
    import av

    from ltxcli import conditions
    from ltxcli.request import resolve_request

    ts, mp4 = tmp_path / "in.ts", tmp_path / "in.mp4"
    _size_changing_clip(ts, [(30, 32)])
    with av.open(str(ts)) as src, av.open(str(mp4), "w") as dst:  # the very packets: the same decoded frames
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)

    def chunks(path):
        r = resolve_request(GenerationRequest("a cat", video=str(path), **{**SMALL, "num_frames": 30, "height": 32,
                                                                            "width": 32}), tiny.preset)
        return list(conditions.prepared_video_chunks(str(path), r, [17, 16]))

    want = chunks(mp4)
    monkeypatch.setattr(conditions.media_io, "read_media", lambda *a, **k: pytest.fail("read whole"))
    got = chunks(ts)
    assert [c.shape[2] for c in got] == [17, 16] and all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def _plain_init(pipe, request: GenerationRequest, monkeypatch: pytest.MonkeyPatch) -> dict:
    """One generation (Pipeline.run) stopped once its v2v input is encoded: its resolved request, pass sizes and
    initial latents (``init``, the input's latents at the first pass's size)."""
    from ltxcli.pipeline import Pipeline

    got: dict = {}

    def spy(self, r, text, text_mask, sizes, encoded, init, *rest):
        got.update(r=r, sizes=sizes, init=init)
        raise _Encoded

    with monkeypatch.context() as m:
        m.setattr(Pipeline, "_denoise_passes", spy)
        with pytest.raises(_Encoded):
            pipe.run(request)
    return got


def test_a_plain_v2v_reads_prepares_and_encodes_its_file_a_chunk_at_a_time(tiny, frames, tmp_path, monkeypatch,
                                                                            one_thread) -> None:
    """One generation (Pipeline.run, no windows) decoded and prepared its whole input file (float32 [1, 3, pf, H, W]
    on the host: 303 MB for 257 frames at 384x256) before encoding it; now it is read, prepared and encoded a
    chunk at a time as in windows: the preprocessing never takes more than one chunk's frames."""
    from ltxcli import media, vae_encode
    from ltxcli.media import write_video

    clip = tmp_path / "in.mp4"
    write_video(clip, frames[:26, :32, :32], 24)
    monkeypatch.setattr(vae_encode, "ENCODE_CHUNK_LATENTS", 1)  # chunks of 9, 8, 8, 8 frames of the 33
    seen: list[int] = []
    preprocess = media.preprocess_condition_frames
    monkeypatch.setattr(media, "preprocess_condition_frames",
                        lambda f, *a, **k: seen.append(int(f.shape[0])) or preprocess(f, *a, **k))
    req = GenerationRequest("a cat", video=str(clip), **{**SMALL, "steps": 2, "num_frames": 26, "height": 32,
                                                          "width": 32, "window": None, "overlap": None})
    got = _plain_init(tiny, req, monkeypatch)
    assert seen == [9, 8, 8, 8]  # was [33]: the whole input at once (the last frame repeated in the padding)
    assert got["init"].shape == (1, 16, 5, 1, 1)


@pytest.mark.parametrize("kind", ["file", "tensor", "multi-scale"])
def test_a_plain_v2v_s_streamed_latents_equal_the_whole_input_s(tiny, tmp_path, monkeypatch, one_thread,
                                                                 kind) -> None:
    """The input's latents of one generation read a chunk at a time (137 frames: chunks of 129 and 8) are bit for
    bit those of the whole input prepared at once and encoded (``chunked_encode(resize_frames(prepare_video(...)))``,
    what Pipeline.run encoded before), a multi-scale first pass's resize to its smaller size included."""
    from ltxcli import vae_encode
    from ltxcli.conditions import prepare_video, resize_frames
    from ltxcli.media import write_video
    from ltxcli.models.upcast import compute_dtype
    from ltxcli.models.upsampler import LatentUpsampler, UpsamplerConfig

    pipe = tiny
    video = torch.rand(137, 32, 32, 3, generator=torch.Generator().manual_seed(4))
    source: object = video
    if kind != "tensor":
        source = str(tmp_path / "in.mp4")
        write_video(source, video, 24)
    fields = dict(video=source, num_frames=137, height=32, width=32, seed=5, steps=6, denoise_strength=0.7,
                  guidance_scale=1.0, stg_scale=0.0)
    if kind == "multi-scale":
        torch.manual_seed(0)
        monkeypatch.setattr(pipe, "upsampler", LatentUpsampler(UpsamplerConfig(
            in_channels=pipe.vae.config.latent_channels, mid_channels=32, num_blocks_per_stage=1)).eval().requires_grad_(False))
        fields.update(height=64, width=64, first_pass={})
    got = _plain_init(pipe, GenerationRequest("a cat", **fields), monkeypatch)
    r, size = got["r"], got["sizes"][0]
    assert (size != tuple(r.padded[:2])) == (kind == "multi-scale")  # the first pass's size: the input resized
    with torch.inference_mode():
        whole = resize_frames(prepare_video(source, r), *size)  # [1, 3, 137, h, w]
        want = vae_encode.chunked_encode(pipe.vae, whole, dtype=compute_dtype(pipe.vae.decoder.conv_in.conv))
    assert vae_encode.chunk_frames(pipe.vae.config, 137) == [129, 8]
    assert torch.equal(got["init"], want)


@pytest.mark.parametrize("kind", ["file", "tensor"])
def test_a_plain_v2v_input_too_short_is_refused_before_the_text_encoder(tiny, frames, tmp_path, monkeypatch,
                                                                        kind) -> None:
    """Its frames are read as they are encoded (after the text encoder), but a 12-frame input for 17 frames is
    refused as it was when the input was read whole up front: before any model work (Pipeline.run with every
    field given, so that nothing counted the file before)."""
    from ltxcli.media import write_video
    from ltxcli.pipeline import Pipeline

    source: object = frames[:12, :32, :32]
    if kind == "file":
        source = str(tmp_path / "in.mp4")
        write_video(source, frames[:12, :32, :32], 24)
    monkeypatch.setattr(Pipeline, "_encode_text", lambda *a: pytest.fail("the text encoder ran"))
    req = GenerationRequest("a cat", video=source, num_frames=17, height=32, width=32, frame_rate=24, steps=2,
                            denoise_strength=0.5)
    name = "the input video tensor" if kind == "tensor" else source
    with pytest.raises(ValueError, match=rf"^{re.escape(str(name))}: 12 frames; video-to-video at this length needs 17$"):
        tiny.run(req)
