"""ltxcli.request: the request type and its resolution against a preset (precedence, per-pass aliases)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltxcli.models.configs import UpsamplerConfig
from ltxcli.models.transformer import STGMode
from ltxcli.models.upsampler import LatentUpsampler
from ltxcli.passes import PASS_ALIASES, pass_overrides
from ltxcli.presets import PRESETS, TINY_PRESET, PassSettings, Preset
from ltxcli.request import STG_MODES, GenerationRequest, resolve_request
from ltxcli.tiny import LATENT_CHANNELS, build_pipeline

DEV13 = PRESETS["ltxv-13b-0.9.8-dev"]
DISTILLED = PRESETS["ltxv-2b-0.9.8-distilled"]


def resolve(preset: Preset = TINY_PRESET, **kw):
    return resolve_request(GenerationRequest("a cat", **kw), preset)


def test_official_defaults_fill_what_the_preset_leaves_out() -> None:
    bare = Preset(name="bare", checkpoint="", pipeline_type="base", passes=(PassSettings(num_inference_steps=5),))
    r = resolve(bare)
    assert (r.height, r.width, r.num_frames, r.frame_rate) == (704, 1216, 121, 30)
    assert r.passes[0] == PassSettings(num_inference_steps=5)  # guidance 1, stg 0, rescale 1, no blocks
    assert r.decode_timestep == 0.05 and r.image_cond_noise_scale == 0.15 and r.stg_mode == "attention_values"
    assert not r.multi_scale and r.downscale_factor == 1.0 and r.seed is None


def test_preset_values_fill_every_none() -> None:
    r = resolve()
    assert (r.height, r.width, r.num_frames, r.frame_rate) == (128, 192, 17, 24.0)
    assert r.passes == TINY_PRESET.passes and r.negative_prompt == TINY_PRESET.negative_prompt
    assert r.settings()["preset"] == "tiny" and r.settings()["passes"] == [TINY_PRESET.passes[0].__dict__]


def test_explicit_value_beats_the_per_pass_override_which_beats_the_preset() -> None:
    r = resolve(DEV13, first_pass=dict(stg_scale=2.0, rescale_scale=0.9), stg_scale=3.0)
    first, second = r.passes
    assert first.stg_scale == second.stg_scale == 3.0  # explicit: every pass
    assert first.rescaling_scale == 0.9  # per-pass override: no explicit value
    assert second.rescaling_scale == DEV13.passes[1].rescaling_scale  # preset
    assert first.guidance_scale == DEV13.passes[0].guidance_scale
    # an explicit scalar replaces the per-interval schedule (and collapses the block schedule to its last entry)
    assert first.guidance_timesteps is None and first.skip_block_list == (28,)


def test_explicit_steps_and_timesteps_apply_to_the_first_pass_only() -> None:
    r = resolve(DISTILLED, steps=12)
    assert r.passes[0].num_inference_steps == 12 and r.passes[0].timesteps is None
    assert r.passes[1] == DISTILLED.passes[1]
    r = resolve(DISTILLED, timesteps=[0.9, 0.5], second_pass=dict(timesteps=[0.4]))
    assert r.passes[0].timesteps == (0.9, 0.5) and r.passes[1].timesteps == (0.4,)


@pytest.mark.parametrize(("alias", "yaml"), list(PASS_ALIASES.items()))
def test_per_pass_dicts_take_the_request_names_and_the_yaml_names(alias: str, yaml: str) -> None:
    value, want = {"steps": (9, 9), "rescale_scale": (0.5, 0.5), "stg_blocks": ([1], (1,))}[alias]
    by_alias = resolve(DEV13, first_pass={alias: value}, second_pass={alias: value})
    by_yaml = resolve(DEV13, first_pass={yaml: value}, second_pass={yaml: value})
    assert getattr(by_alias.passes[0], yaml) == getattr(by_alias.passes[1], yaml) == want
    assert pass_overrides({alias: value})[yaml] == value
    if alias != "steps":  # (``steps`` also clears explicit timesteps; the 13B dev passes have none)
        assert by_alias.passes == by_yaml.passes


def test_first_pass_rescale_scale_as_issue_4_specified() -> None:
    r = resolve(DISTILLED, first_pass=dict(rescale_scale=1.0, stg_blocks=[3]))
    assert r.passes[0].rescaling_scale == 1.0 and r.passes[0].skip_block_list == (3,)


def test_per_pass_steps_means_what_the_top_level_steps_means() -> None:
    # the distilled passes list explicit timesteps: ``steps`` replaces them, the raw yaml name does not
    assert resolve(DISTILLED, first_pass=dict(steps=5)).passes[0].timesteps is None
    assert resolve(DISTILLED, first_pass=dict(num_inference_steps=5)).passes[0].timesteps is not None


def test_per_pass_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"unknown per-pass setting.*guidance"):
        resolve(DEV13, first_pass=dict(guidance=3))
    with pytest.raises(ValueError, match="given twice"):
        resolve(DEV13, first_pass=dict(rescale_scale=1.0, rescaling_scale=0.5))


def test_stg_modes_are_the_transformer_modes() -> None:
    assert tuple(m.value for m in STGMode) == STG_MODES
    assert resolve(stg_mode=STGMode.ATTENTION_SKIP).stg_mode == "attention_skip"
    with pytest.raises(ValueError, match="STGMode"):
        resolve(stg_mode="skip")


def test_resolution_is_pure_and_reads_no_media(tmp_path) -> None:
    missing = tmp_path / "nope.png"
    from ltxcli.request import Condition

    request = GenerationRequest("a cat", conditions=[Condition(missing, 0, 1.0)], video=missing)
    before = dataclasses.replace(request)
    r = resolve_request(request, TINY_PRESET)
    assert request == before and r.conditions[0].media == missing and r.video == missing
    assert r.passes[0].skip_initial_inference_steps == 2  # v2v at strength 0.5 keeps half of the 4 steps


def test_multi_scale_sizes() -> None:
    r = resolve(DISTILLED, height=480, width=704)
    assert r.multi_scale and r.downscale_factor == pytest.approx(0.6666666)
    assert r.pass_sizes() == [(288, 448), (576, 896)]  # int(480 * 0.6666666) = 319 -> 288
    with pytest.raises(ValueError, match="no first-pass size"):
        resolve(DISTILLED, height=32, width=32, downscale_factor=0.5).pass_sizes()


def test_model_facts_are_checked_only_when_given() -> None:
    resolve(stg_blocks=[40])  # no model: any block
    with pytest.raises(ValueError, match="do not exist"):
        resolve_request(GenerationRequest("a cat", stg_blocks=[40]), TINY_PRESET, num_layers=2)
    with pytest.raises(ValueError, match="position range"):
        resolve_request(GenerationRequest("a cat", height=4096), TINY_PRESET, max_pos=(20, 2048, 2048))
    with pytest.raises(ValueError, match="upsampler"):
        resolve_request(GenerationRequest("a cat", first_pass={}), TINY_PRESET, has_upsampler=False)


def test_pipeline_runs_a_per_pass_alias_as_its_yaml_name() -> None:
    pipe = build_pipeline(torch.device("cpu"), torch.float32)
    torch.manual_seed(0)
    pipe.upsampler = LatentUpsampler(UpsamplerConfig(in_channels=LATENT_CHANNELS, mid_channels=32,
                                                     num_blocks_per_stage=1)).eval().requires_grad_(False)
    # a base preset runs its one pass twice; the second must start below t = 1
    common = dict(height=64, width=64, num_frames=9, steps=2, seed=3, second_pass=dict(skip_initial_inference_steps=2))
    alias = pipe.generate("a cat", first_pass=dict(rescale_scale=1.0, stg_blocks=[0]), **common)
    yaml = pipe.generate("a cat", first_pass=dict(rescaling_scale=1.0, skip_block_list=[0]), **common)
    assert torch.equal(alias.latents, yaml.latents)
    assert alias.settings["passes"][0]["rescaling_scale"] == 1.0
    assert not torch.equal(alias.latents, pipe.generate("a cat", first_pass={}, **common).latents)
    assert torch.equal(pipe.run(GenerationRequest("a cat", first_pass=dict(rescale_scale=1.0, stg_blocks=[0]),
                                                  **common)).latents, alias.latents)
