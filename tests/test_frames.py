"""Streamed decode (``run(..., stream=True)`` + ``GenerationResult.frames()``) against the whole decode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ltxcli import media
from ltxcli.frames import NumericalError
from ltxcli.media.write import to_uint8
from ltxcli.models.configs import UpsamplerConfig
from ltxcli.models.upsampler import LatentUpsampler
from ltxcli.pipeline import Pipeline
from ltxcli.request import Condition, GenerationRequest
from ltxcli.tiny import LATENT_CHANNELS, build_pipeline

SMALL = dict(height=64, width=96, num_frames=17, steps=2, seed=4)


@pytest.fixture(scope="module")
def tiny() -> Pipeline:
    return build_pipeline(torch.device("cpu"), torch.float32)


def _whole_and_streamed(pipe: Pipeline, chunk: int = 8, **kw) -> tuple[torch.Tensor, list[torch.Tensor]]:
    request = GenerationRequest("a boat", **{**SMALL, **kw})
    whole = pipe.run(request)
    streamed = pipe.run(request, stream=True)
    assert streamed.video is None and torch.equal(streamed.latents, whole.latents)
    chunks = list(streamed.frames(chunk))
    assert "decode_s" in streamed.timings
    return whole.video, chunks


@pytest.mark.parametrize(("tiling", "chunk", "kw"), [
    ("off", 8, {}),  # untiled (on the CPU: the head in time windows, memory.decode.stream_plan), 8 frames a chunk
    ("off", 5, dict(height=50, width=70, num_frames=14)),  # padding and the frame crop
    ("on", 3, dict(num_frames=33)),  # time windows of the tiled decode, each handed out as it is finished
])
def test_streamed_frames_equal_the_whole_video(tiny: Pipeline, tiling: str, chunk: int, kw: dict) -> None:
    tiny.vae_tiling = tiling
    try:
        video, chunks = _whole_and_streamed(tiny, chunk, **kw)
    finally:
        tiny.vae_tiling = "auto"
    assert all(c.dtype == torch.uint8 and 1 <= c.shape[0] <= chunk for c in chunks)
    assert torch.equal(torch.cat(chunks), to_uint8(video))


def test_streamed_multi_scale_frames_equal_the_whole_video() -> None:
    pipe = build_pipeline(torch.device("cpu"), torch.float32)
    torch.manual_seed(0)
    pipe.upsampler = LatentUpsampler(UpsamplerConfig(in_channels=LATENT_CHANNELS, mid_channels=32,
                                                     num_blocks_per_stage=1)).eval().requires_grad_(False)
    video, chunks = _whole_and_streamed(pipe, 4, first_pass={}, second_pass=dict(skip_initial_inference_steps=2),
                                        height=50, width=70, num_frames=9)
    assert torch.equal(torch.cat(chunks), to_uint8(video))  # the resize after the second pass is per frame


def test_streamed_mp4_gets_the_same_frames(tiny: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The MP4 writer given a stream of uint8 chunks hands the encoder exactly the frames it hands it for the
    same video as one float tensor; the PNG writer stores them losslessly."""
    request = GenerationRequest("a boat", conditions=[Condition(torch.rand(1, 64, 96, 3), 0, 1.0)], **SMALL)
    chunks = list(tiny.run(request, stream=True).frames(3))
    frames = torch.cat(chunks)
    assert frames.shape == (SMALL["num_frames"], 64, 96, 3)
    encoded: dict[str, list[torch.Tensor]] = {}
    real = media.write._encode

    def spy(temp: Path, frame_iter, *args):
        got = [to_uint8(f) for f in frame_iter]  # what _encode converts each frame to
        encoded[temp.suffix + str(len(encoded))] = got
        return real(temp, iter(got), *args)

    monkeypatch.setattr(media.write, "_encode", spy)
    media.write_video(tmp_path / "stream.mp4", iter(chunks), 24, metadata={"prompt": "a boat"})
    media.write_video(tmp_path / "whole.mp4", frames.float() / 255, 24, metadata={"prompt": "a boat"})
    streamed, whole = encoded.values()
    assert len(streamed) == len(whole) == SMALL["num_frames"]
    assert all(torch.equal(a, b) for a, b in zip(streamed, whole, strict=True))
    assert media.media_num_frames(tmp_path / "stream.mp4") == SMALL["num_frames"]
    media.write_png_frames(tmp_path / "png", iter(chunks), metadata={"prompt": "a boat"})
    assert torch.equal(media.load_media(tmp_path / "png" / "frame_00004.png")[0], frames[4].float() / 255)


def test_streamed_frames_are_decoded_once_with_progress(tiny: Pipeline) -> None:
    events: list[tuple[str, int, int]] = []
    result = tiny.run(GenerationRequest("a boat", **SMALL), stream=True,
                      progress=lambda stage, done, total: events.append((stage, done, total)))
    assert ("decode", 0, 1) not in events  # nothing decoded yet
    frames = result.frames()
    assert sum(c.shape[0] for c in frames) == SMALL["num_frames"]
    decode = [e for e in events if e[0] == "decode"]  # from 0, then once per decoded window (tile)
    assert decode[0] == ("decode", 0, 1) and decode[-1][1] == decode[-1][2] >= 1 and events[-1] == decode[-1]
    with pytest.raises(RuntimeError, match="once"):
        result.frames()


def test_non_finite_decoded_frames_are_refused(tiny: Pipeline) -> None:
    pipe = build_pipeline(torch.device("cpu"), torch.float32)
    with torch.no_grad():
        pipe.vae.decoder.conv_out.conv.bias.fill_(float("nan"))
    result = pipe.run(GenerationRequest("a boat", **SMALL), stream=True)
    with pytest.raises(NumericalError, match="decoded video contains NaN"):
        next(result.frames())
    whole = pipe.run(GenerationRequest("a boat", **SMALL))  # the Python API returns the video as before
    assert torch.isnan(whole.video).any()
    with pytest.raises(NumericalError):
        list(whole.frames())


# --- a NaN is reported by the stage that made it, not by the VAE that decodes it ---------------------------------

def test_a_nan_from_the_temporal_upscaler_is_named_not_blamed_on_the_vae() -> None:
    from ltxcli.tiny import build_temporal_upsampler

    pipe = build_pipeline(torch.device("cpu"), torch.float32)
    pipe.temporal_upsampler = build_temporal_upsampler(torch.device("cpu"), torch.float32)
    with torch.no_grad():
        pipe.temporal_upsampler.final_conv.bias.fill_(float("nan"))
    request = GenerationRequest("a boat", **{**SMALL, "num_frames": 9}, temporal_upscale=True)
    with pytest.raises(NumericalError, match="NaN or Inf after the temporal upscale: the temporal upscaler's weights"):
        pipe.run(request)
    with pytest.raises(NumericalError, match="after the temporal upscale"):
        pipe.run(request, stream=True)  # before any frame is handed out


def test_a_nan_from_the_spatial_upsampler_is_named_not_blamed_on_the_second_pass() -> None:
    pipe = build_pipeline(torch.device("cpu"), torch.float32)
    pipe.upsampler = LatentUpsampler(UpsamplerConfig(in_channels=LATENT_CHANNELS, mid_channels=32,
                                                     num_blocks_per_stage=1)).eval()
    with torch.no_grad():
        pipe.upsampler.final_conv.bias.fill_(float("nan"))
    request = GenerationRequest("a boat", **{**SMALL, "num_frames": 9}, first_pass={},
                                second_pass={"timesteps": [0.5, 0.25]})
    with pytest.raises(NumericalError, match="after the spatial upscale between the passes"):
        pipe.run(request)


def test_a_nan_from_the_window_fusion_is_named_not_blamed_on_the_vae(monkeypatch: pytest.MonkeyPatch) -> None:
    """A window whose latents have a constant channel: AdaIN towards the first window divides by its std, 0."""
    from ltxcli import long_video

    pipe = build_pipeline(torch.device("cpu"), torch.float32)
    made = pipe._denoise_passes
    calls: list[int] = []

    def constant_second_window(*a, **kw):
        lat = made(*a, **kw)
        calls.append(1)
        return torch.zeros_like(lat) if len(calls) == 2 else lat

    monkeypatch.setattr(pipe, "_denoise_passes", constant_second_window)
    request = GenerationRequest("a boat", height=64, width=64, num_frames=41, seed=1, steps=1, window=24,
                                overlap=16, adain=0.5)
    with pytest.raises(NumericalError, match="NaN or Inf after fusing window 2: AdaIN"):
        long_video.generate(pipe, request)


def test_nan_latents_handed_to_decode_are_refused_before_the_vae(tiny: Pipeline) -> None:
    latents = torch.zeros(1, LATENT_CHANNELS, 2, 2, 2)
    latents[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(NumericalError, match="NaN or Inf on entering the decoder: they were handed in"):
        tiny.decode(latents)


def test_the_latents_are_checked_once_per_decode(tiny: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """One host sync for the latents a decode takes: a generation's by the stage that made them (after denoising),
    latents handed to Pipeline.decode on entering the decoder; the decoder checked a generation's a second time."""
    import ltxcli.pipeline as pipeline_module

    stages: list[str] = []
    real = pipeline_module.check_latents
    monkeypatch.setattr(pipeline_module, "check_latents", lambda lat, stage, hint: stages.append(stage) or real(lat, stage, hint))
    request = GenerationRequest("a boat", **{**SMALL, "num_frames": 9})
    tiny.run(request)
    list(tiny.run(request, stream=True).frames())
    assert stages == ["after denoising"] * 2
    stages.clear()
    tiny.decode(torch.zeros(1, LATENT_CHANNELS, 2, 2, 3))
    assert stages == ["on entering the decoder"]


@pytest.mark.parametrize(("kw", "said"), [
    ({"progress": 5}, "^progress=5 must be a callable or None$"),  # was "'int' object is not callable" in the run
    ({"stream": "yes"}, "^stream='yes' must be True or False$"),  # was taken as True
    ({"progress": "bar", "stream": 1}, "^progress='bar' must be a callable or None; stream=1 must be True or False$"),
])
def test_a_bad_progress_or_stream_is_refused_before_any_work(tiny: Pipeline, kw: dict, said: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run entry point checks them first (ltxcli.field_values.check_run_options): no model work is reached."""
    from ltxcli import extend, long_video, runner
    from ltxcli.request import Extension

    monkeypatch.setattr(tiny, "resolve", lambda *a: pytest.fail("resolved: the check came after work began"))
    plain = GenerationRequest("a boat", **SMALL)
    runs = [lambda: tiny.run(plain, **kw), lambda: long_video.generate(tiny, plain, **kw),
            lambda: extend.run_extension(tiny, GenerationRequest("a boat", extend=Extension("missing.mp4", 8)), **kw),
            lambda: next(runner.run_batch(tiny, [], **kw)), ]
    for run in runs:
        with pytest.raises(TypeError, match=said):
            run()
