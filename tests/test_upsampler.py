"""LatentUpsampler and adain vs the official ``LatentUpsampler`` / ``adain_filter_latent`` and diffusers."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ltxcli.models.configs import ConfigError, UpsamplerConfig
from ltxcli.models.upsampler import LatentUpsampler, adain
from ltxcli.request import GenerationRequest

CFG = UpsamplerConfig(in_channels=16, mid_channels=32, num_blocks_per_stage=2)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def official():
    from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler as Official

    return _randomised(Official, CFG, seed=0)


def _randomised(official: Any, cfg: Any, seed: int) -> Any:
    """The official upsampler for ``cfg``, with non-trivial norms and biases so that every key's role is
    exercised."""
    torch.manual_seed(seed)
    model = official(**{k: v for k, v in cfg.to_official().items() if k != "_class_name"}).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    return model


def test_keys_match_official_and_diffusers(official) -> None:
    from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

    ours = LatentUpsampler(CFG)
    ref = {k: tuple(v.shape) for k, v in official.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert got == ref
    diff = LTXLatentUpsamplerModel(in_channels=16, mid_channels=32, num_blocks_per_stage=2)
    assert {k: tuple(v.shape) for k, v in diff.state_dict().items()} == ref
    assert "upsampler.0.weight" in got and got["upsampler.0.weight"] == (128, 32, 3, 3)  # per-frame Conv2d


@pytest.mark.parametrize("shape", [(1, 16, 1, 4, 4), (2, 16, 3, 5, 6)])
def test_forward_matches_official_and_diffusers(official, shape) -> None:
    from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

    sd = official.state_dict()
    ours = LatentUpsampler(CFG).eval()
    ours.load_state_dict(sd, strict=True)
    diff = LTXLatentUpsamplerModel(in_channels=16, mid_channels=32, num_blocks_per_stage=2).eval()
    diff.load_state_dict(sd, strict=True)
    torch.manual_seed(1)
    x = torch.randn(*shape) * 2.0
    with torch.no_grad():
        y = ours(x)
        y_off = official(x)
        y_diff = diff(x)
    b, c, f, h, w = shape
    assert y.shape == (b, c, f, 2 * h, 2 * w)
    r_off, r_diff = _rel(y, y_off), _rel(y, y_diff)
    print(f"upsampler {shape}: rel err vs official {r_off:.3e}, vs diffusers {r_diff:.3e}")
    assert r_off <= 1e-5
    assert r_diff <= 1e-5
    # the output depends on the input (no degenerate weights)
    assert y.std() > 0.1


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="mid_channels"):
        LatentUpsampler(UpsamplerConfig(in_channels=16, mid_channels=48))
    with pytest.raises(ConfigError, match="temporal_upsample"):
        LatentUpsampler(UpsamplerConfig(temporal_upsample=True))
    with pytest.raises(ConfigError):
        UpsamplerConfig.from_official({"_class_name": "LatentUpsampler", "temporal_upsample": True})


@pytest.mark.parametrize("factor", [1.0, 0.25, -0.5])
def test_adain_matches_official(factor: float) -> None:
    from ltx_video.pipelines.pipeline_ltx_video import adain_filter_latent

    torch.manual_seed(2)
    lat = torch.randn(2, 4, 3, 8, 10) * 3 + 1
    ref = torch.randn(2, 4, 3, 4, 5) * torch.rand(2, 4, 1, 1, 1) * 2 - 0.7
    got = adain(lat, ref, factor)
    want = adain_filter_latent(lat, ref, factor)
    err = _rel(got, want)
    print(f"adain factor {factor}: rel err vs official {err:.3e}")
    assert err <= 1e-6
    if factor == 1.0:  # statistics really are transferred
        assert torch.allclose(got.mean(dim=(2, 3, 4)), ref.mean(dim=(2, 3, 4)), atol=1e-5)
        assert torch.allclose(got.std(dim=(2, 3, 4)), ref.std(dim=(2, 3, 4)), atol=1e-5)


def test_adain_leaves_a_one_element_slice_unfiltered() -> None:
    """One element per (batch, channel) on either side has no unbiased std (the official filter returns NaN there):
    the latents come back as they were; two elements still follow the official filter."""
    from ltx_video.pipelines.pipeline_ltx_video import adain_filter_latent

    torch.manual_seed(3)
    one, many = torch.randn(1, 4, 1, 1, 1), torch.randn(1, 4, 3, 1, 1) * 2 + 1
    assert torch.equal(adain(one, many, 0.25), one)  # a window's one latent frame at 1x1 latents
    assert torch.equal(adain(many, one, 0.25), many)  # a one-element reference
    two = torch.randn(1, 4, 2, 1, 1)
    assert _rel(adain(two, many, 0.25), adain_filter_latent(two, many, 0.25)) <= 1e-6


def test_adain_shape_check() -> None:
    with pytest.raises(ValueError, match="batch/channel"):
        adain(torch.zeros(1, 4, 1, 2, 2), torch.zeros(1, 3, 1, 2, 2))


# --- the temporal upscaler (ltxv-temporal-upscaler-0.9.7) ----------------------------------------------------------

TCFG = UpsamplerConfig(in_channels=16, mid_channels=32, num_blocks_per_stage=2, spatial_upsample=False,
                       temporal_upsample=True)


@pytest.fixture(scope="module")
def official_temporal():
    from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler as Official

    return _randomised(Official, TCFG, seed=3)


@pytest.mark.parametrize("shape", [(1, 16, 1, 4, 4), (2, 16, 4, 5, 6)])
def test_temporal_forward_matches_official(official_temporal, shape) -> None:
    ours = LatentUpsampler(TCFG).eval()
    ours.load_state_dict(official_temporal.state_dict(), strict=True)
    torch.manual_seed(4)
    x = torch.randn(*shape) * 2.0
    with torch.no_grad():
        y, want = ours(x), official_temporal(x)
    b, c, f, h, w = shape
    assert y.shape == (b, c, 2 * f - 1, h, w) == want.shape
    err = _rel(y, want)
    print(f"temporal upsampler {shape}: rel err vs official {err:.3e}")
    assert err <= 1e-6
    assert y.std() > 0.1


def test_temporal_loads_the_official_layout(official_temporal, tmp_path) -> None:
    """The official file layout (its state dict, the flat config in the metadata) loads with no missing or
    unexpected key: ``load_upsampler`` is strict, and the official module's keys are the file's."""
    import json

    from safetensors.torch import save_file

    from ltxcli.loading import load_upsampler

    sd = official_temporal.state_dict()
    assert "upsampler.0.weight" in sd and tuple(sd["upsampler.0.weight"].shape) == (64, 32, 3, 3, 3)
    path = tmp_path / "ltxv-temporal-upscaler.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path),
              metadata={"config": json.dumps(official_temporal.config())})  # the official config() dict
    loaded = load_upsampler(path)
    assert loaded.config == TCFG
    assert set(loaded.state_dict()) == set(sd)
    x = torch.randn(1, 16, 3, 4, 4)
    with torch.no_grad():
        assert _rel(loaded(x), official_temporal(x)) <= 1e-6


def test_both_directions_at_once_is_refused() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        LatentUpsampler(UpsamplerConfig(in_channels=16, mid_channels=32, temporal_upsample=True))
    with pytest.raises(ConfigError, match="not supported"):
        UpsamplerConfig.from_official({"_class_name": "LatentUpsampler", "spatial_upsample": False,
                                       "temporal_upsample": False})


def test_multi_scale_temporal_upscale_keeps_video_conditions_at_their_times(multi_temporal: Any) -> None:
    """A video condition with a multi-scale temporal upscale was refused ("not supported yet"): between the passes
    only the video's latents were upscaled, so a condition's 9 frames would have covered 9 of the second pass's
    frames at twice the rate, half their time. Its latents now take the same upscale: in the second pass (twice
    the frames and the rate) a 9-frame condition at frame 0 holds latent frames 0-2 (2 -> 3), and one at frame 8
    starts at frame 16: its upscaled latents 0-1 are extra tokens there, its latent 2 is the video's latent 4.
    Strength 1 without re-noising: the final latents there are the condition's exactly."""
    from ltxcli import Condition

    pipe = multi_temporal
    g = torch.Generator().manual_seed(5)
    early, late = torch.rand(9, 64, 64, 3, generator=g), torch.rand(9, 64, 64, 3, generator=g)
    res = pipe.run(GenerationRequest("a cat", height=64, width=64, num_frames=17, seed=1, temporal_upscale=True,
                                     first_pass={}, second_pass={"timesteps": [0.5, 0.25]}, image_cond_noise_scale=0.0,
                                     conditions=[Condition(early, 0), Condition(late, 8)]))
    assert res.video.shape[0] == 33 and res.latents.shape[2] == 5  # 17 frames (3 latents) -> 33 (5)

    def upscaled(frames: torch.Tensor) -> torch.Tensor:  # encoded at the second pass's size (64x64), then upscaled
        with torch.no_grad():
            return pipe.vae.normalize(pipe.temporal_upsampler(pipe.vae.unnormalize(pipe.encode(frames))))

    assert _rel(res.latents[:, :, 0:3], upscaled(early)) <= 1e-5
    assert _rel(res.latents[:, :, 4:5], upscaled(late)[:, :, 2:3]) <= 1e-5


def test_multi_scale_temporal_upscale_keeps_the_control_on_the_video_grid(multi_temporal: Any, monkeypatch) -> None:
    """An IC-LoRA control with a multi-scale temporal upscale was refused ("not supported yet"; before that it
    failed after the first pass with an AttributeError). Its latents now take the video's upscale between the
    passes: in the second pass its tokens cover the video's 5 latent frames (3 -> 5), token for token, and are the
    control encoded at that pass's size, then upscaled in time."""
    from ltxcli import pipeline as pipeline_module
    from ltxcli.control import EncodedControl
    from ltxcli.request import Control

    seen: list[tuple[Any, tuple[int, ...]]] = []
    place = pipeline_module.place_with_control

    def spy(conds, latents, gen, *, causal):
        seen.append(([c for c in conds if isinstance(c, EncodedControl)], tuple(latents.shape)))
        return place(conds, latents, gen, causal=causal)

    monkeypatch.setattr(pipeline_module, "place_with_control", spy)
    pipe = multi_temporal
    control = torch.rand(17, 64, 64, 3, generator=torch.Generator().manual_seed(6))
    res = pipe.run(GenerationRequest("a cat", height=64, width=64, num_frames=17, seed=1, temporal_upscale=True,
                                     first_pass={}, second_pass={"timesteps": [0.5, 0.25]}, control=Control(control)))
    assert res.video.shape[0] == 33 and res.settings["control"]["strength"] == 1.0
    (first, shape1), (second, shape2) = seen
    assert first[0].latents.shape[2:] == shape1[2:] == (3, 1, 1)  # first pass: 32x32, 3 latent frames
    assert second[0].latents.shape[2:] == shape2[2:] == (5, 2, 2)  # second: 64x64, 5 latent frames after the upscale
    with torch.no_grad():
        want = pipe.vae.normalize(pipe.temporal_upsampler(pipe.vae.unnormalize(pipe.encode(control))))
    assert _rel(second[0].latents.cpu(), want) <= 1e-5


def test_temporal_upscale_refuses_a_doubled_frame_rate_the_writer_refuses() -> None:
    """--frame-rate 1000 --temporal-upscale generated the whole video, then failed writing it ("frame rate must be
    in (0, 1000], got 2000"): the doubled rate is checked with the request, before any model work."""
    from ltxcli import load_pipeline
    from ltxcli.request import GenerationRequest

    pipe = load_pipeline("tiny", temporal_upsampler="ltxv-temporal-upscaler-0.9.7")
    base = dict(height=64, width=64, num_frames=9, seed=1, temporal_upscale=True)
    with pytest.raises(ValueError, match=r"frame_rate=501 doubled by temporal_upscale is 1002, above 1000 \(use "
                                         r"at most 500\)"):
        pipe.resolve(GenerationRequest("a cat", frame_rate=501.0, **base))
    assert pipe.resolve(GenerationRequest("a cat", frame_rate=500.0, **base)).output().frame_rate == 1000.0


def test_temporal_upscale_in_a_run_doubles_frames_and_rate() -> None:
    """After a single pass (and between the passes of a multi-scale run): ``2 (F - 1) + 1`` frames at twice the
    frame rate, stated in the settings (the record); the latents are the upscaler's output."""
    from ltxcli import load_pipeline
    from ltxcli.request import GenerationRequest

    pipe = load_pipeline("tiny", temporal_upsampler="ltxv-temporal-upscaler-0.9.7")
    base = dict(height=64, width=64, seed=1, steps=2)
    plain = pipe.run(GenerationRequest("a cat", num_frames=17, **base))
    up = pipe.run(GenerationRequest("a cat", num_frames=17, temporal_upscale=True, **base))
    assert up.video.shape[0] == 33 and up.latents.shape[2] == 2 * plain.latents.shape[2] - 1
    assert up.settings["num_frames"] == 33 and up.settings["frame_rate"] == 48
    assert up.settings["temporal_upscale"] == {"num_frames": 17, "frame_rate": 24}
    with torch.no_grad():
        want = pipe.vae.normalize(pipe.temporal_upsampler(pipe.vae.unnormalize(plain.latents)))
    assert _rel(up.latents, want) <= 1e-6  # ComfyUI's node: un-normalise, upsample, normalise
    torch.manual_seed(0)
    pipe.upsampler = LatentUpsampler(UpsamplerConfig(in_channels=16, mid_channels=32, num_blocks_per_stage=1)).eval()
    two = pipe.run(GenerationRequest("a cat", num_frames=20, temporal_upscale=True, first_pass={},
                                     second_pass={"timesteps": [0.5, 0.25]}, **base))
    assert two.video.shape[0] == 39 and two.settings["frame_rate"] == 48 and two.latents.shape[2] == 7  # 25 padded frames: 4 latents -> 7
    bare = load_pipeline("tiny")
    with pytest.raises(ValueError, match="temporal upscaler"):
        bare.run(GenerationRequest("a cat", temporal_upscale=True, **base))
