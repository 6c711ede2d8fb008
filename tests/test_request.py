"""ltxcli.request: the request type and its resolution against a preset (precedence, per-pass aliases)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from ltxcli.models.configs import UpsamplerConfig
from ltxcli.models.transformer import STGMode
from ltxcli.models.upsampler import LatentUpsampler
from ltxcli.passes import PASS_ALIASES, pass_overrides
from ltxcli.presets import PRESETS, TINY_PRESET, PassSettings, Preset
from ltxcli.request import STG_MODES, Condition, Control, GenerationRequest, resolve_request
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


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.5, 1.5, 1e36])
def test_decode_timestep_must_be_a_noise_level_in_0_1(value: float) -> None:
    # NaN passed the old `< 0` test and decoded a timestep-conditioned VAE to a NaN video; so did 1e36, a finite
    # number whose scaled timestep (x 1000, the VAE's multiplier) overflows float32: a black video, exit 0
    with pytest.raises(ValueError, match=r"^decode_timestep=.* must be in \[0, 1\]"):
        resolve(decode_timestep=value)
    assert resolve(decode_timestep=1.0).decode_timestep == 1.0  # the official default noise scale's upper end


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
    # a scalar applies at every step; the guidance and rescaling lists left still need their interval schedule,
    # and each pass keeps its own blocks
    for got, want in zip(r.passes, DEV13.passes, strict=True):
        assert got.guidance_timesteps == want.guidance_timesteps and got.skip_block_list == want.skip_block_list
    # with no list left, the schedule goes and a per-interval block list becomes its last interval's blocks
    first, second = resolve(DEV13, guidance_scale=3.0, stg_scale=1.0, rescale_scale=0.7).passes
    assert first.guidance_timesteps is second.guidance_timesteps is None
    assert (first.skip_block_list, second.skip_block_list) == ((28,), (27,))


def test_explicit_steps_and_timesteps_apply_to_the_first_pass_only() -> None:
    r = resolve(DISTILLED, steps=12)
    assert r.passes[0].num_inference_steps == 12 and r.passes[0].timesteps is None
    assert r.passes[1] == DISTILLED.passes[1]
    r = resolve(DISTILLED, timesteps=[0.9, 0.5], second_pass=dict(timesteps=[0.4]))
    assert r.passes[0].timesteps == (0.9, 0.5) and r.passes[1].timesteps == (0.4,)


@pytest.mark.parametrize(("alias", "yaml"), list(PASS_ALIASES.items()))
def test_per_pass_dicts_take_the_request_names_and_the_yaml_names(alias: str, yaml: str) -> None:
    # (20 steps: the dev second pass skips its first 17, which 9 steps would not leave one after)
    value, want = {"steps": (20, 20), "rescale_scale": (0.5, 0.5), "stg_blocks": ([1], (1,))}[alias]
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


def test_a_strength_without_a_video_is_named_once_as_ignored() -> None:
    """denoise_strength acts on a video-to-video input only: without one, 0.3 changed nothing, silently (the batch
    runner alone said so). Resolution names it, once: what it returns and what it is resolved from again keep quiet."""
    import warnings

    with pytest.warns(UserWarning) as caught:
        r = resolve_request(GenerationRequest("a", denoise_strength=0.3), TINY_PRESET)
    assert [str(w.message) for w in caught] == [
        "denoise_strength=0.3 is ignored: it is the strength of a video-to-video run (give video)"]
    assert r.settings()["denoise_strength"] is None
    from ltxcli.request import check_fields

    with pytest.warns(UserWarning, match="is ignored"):
        checked = check_fields(GenerationRequest("a", denoise_strength=0.3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_request(checked, TINY_PRESET)
        resolve_request(GenerationRequest("a"), TINY_PRESET)


def test_stg_modes_are_the_transformer_modes() -> None:
    assert tuple(m.value for m in STGMode) == STG_MODES
    assert resolve(stg_mode=STGMode.ATTENTION_SKIP).stg_mode == "attention_skip"
    with pytest.raises(ValueError, match=r"^stg_mode='skip' must be one of attention_values, attention_skip, transformer_block, residual$"):
        resolve(stg_mode="skip")
    # the names and short names the official inference.py accepts, in any case
    assert resolve(stg_mode="residual").stg_mode == "residual"
    assert resolve(stg_mode="STG_R").stg_mode == "residual"
    assert resolve(stg_mode="stg_av").stg_mode == "attention_values"
    assert resolve(stg_mode="Transformer_Block").stg_mode == "transformer_block"


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


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"conditions": [("img.png", 0)]}, "conditions=[('img.png', 0)] must be a list of ltxcli.Condition"),
    ({"control": "depth.mp4"}, "control='depth.mp4' must be an ltxcli.Control"),
    # an array as the control's media failed in pathlib: "expected str, bytes or os.PathLike object, not ndarray"
    ({"control": Control(np.zeros((9, 4, 4, 3)))}, "control media=array([[[[0"),
    ({"control": Control(5)}, "control media=5 must be a path, a PIL image or a torch tensor [F, H, W, 3]"),
    ({"steps": 1.5}, "steps=1.5 must be an integer"),
    ({"steps": True}, "steps=True must be an integer"),
    ({"seed": True}, "seed=True must be an integer"),
    ({"steps": "2"}, "steps='2' must be an integer"),
    ({"guidance_scale": "3"}, "guidance_scale='3' must be a number"),
    ({"negative_prompt": 123}, "negative_prompt=123 must be a string"),
    ({"timesteps": 0.5}, "timesteps=0.5 must be a list of numbers"),
    ({"first_pass": [1]}, "first_pass=[1] must be a dict"),
    ({"cfg_star_rescale": "no"}, "cfg_star_rescale='no' must be True or False"),
    ({"stochastic_sampling": "no"}, "stochastic_sampling='no' must be True or False"),
    ({"denoise_strength": "0.5"}, "denoise_strength='0.5' must be a number"),
    # long_video.generate failed reading it: "'int' object is not iterable"
    ({"prompt_schedule": 5}, "prompt_schedule=5 must be a JSON-lines file's path or a list of {\"start\""),
    ({"prompt_schedule": {"start": 0, "prompt": "a"}}, "prompt_schedule={'prompt': 'a', 'start': 0} must be a "),
    # a 0-d tensor or array is a number by its dtype (a float one passed as an integer and was truncated)
    ({"steps": torch.tensor(1.5)}, "steps=tensor(1.5000) must be an integer"),
    ({"steps": torch.tensor(True)}, "steps=tensor(True) must be an integer"),
    ({"seed": np.array(7.9)}, "seed=array(7.9) must be an integer"),
])
def test_a_field_of_the_wrong_type_is_named(kwargs, needle) -> None:
    """A library user's wrong type fails in resolution (before any model work) with the field and what it takes;
    these were AttributeErrors deep inside, torch errors after the text encoder ran, or silently truthy strings
    that switched CFG-star or stochastic sampling on."""
    from ltxcli.request import FieldTypeError

    with pytest.raises(FieldTypeError, match="^" + re.escape(needle)) as e:
        resolve(**kwargs)
    assert isinstance(e.value, TypeError) and isinstance(e.value, ValueError)  # the CLI reports it as a usage error


@pytest.mark.parametrize(("first_pass", "needle"), [
    # these went through resolution: True and 2.5 failed in torch.linspace once the text encoder had run, "yes"
    # switched CFG-star on, [True] passed as a block index; "2", "x" and a number key were bare TypeErrors
    ({"steps": True}, "first_pass steps=True must be an integer"),
    ({"num_inference_steps": 2.5}, "first_pass num_inference_steps=2.5 must be an integer"),
    ({"steps": "2"}, "first_pass steps='2' must be an integer"),
    ({"skip_initial_inference_steps": True}, "first_pass skip_initial_inference_steps=True must be an integer"),
    ({"timesteps": "1"}, "first_pass timesteps='1' must be a list of numbers"),
    ({"guidance_scale": [1, "x"]}, "first_pass guidance_scale=[1, 'x'] must be a number or a list of numbers"),
    ({"stg_blocks": [True]}, "first_pass stg_blocks=[True] must be a list of block indices"),
    ({"cfg_star_rescale": "yes"}, "first_pass cfg_star_rescale='yes' must be True or False"),
    ({"rescale_scale": None}, "first_pass rescale_scale=None must be a number"),
    ({1: 2}, "first_pass keys must be setting names (strings), got 1"),
])
def test_a_per_pass_value_of_the_wrong_type_is_named(first_pass, needle) -> None:
    from ltxcli.request import FieldTypeError

    with pytest.raises(FieldTypeError, match="^" + re.escape(needle)):
        resolve(DEV13, first_pass=first_pass)


def test_per_pass_values_become_python_numbers() -> None:
    """numpy and 0-d tensor numbers are numbers (as at the top level), stored as Python's own; None keeps what the
    optional settings take it for (steps=None is refused by the step check, timesteps=None means steps)."""
    r = resolve(DEV13, first_pass={"steps": np.int64(5), "guidance_scale": torch.tensor(2.0),
                                   "stg_blocks": np.array([3, 4]), "timesteps": None})
    p = r.passes[0]
    assert (p.num_inference_steps, p.guidance_scale, p.skip_block_list) == (5, 2.0, (3, 4))
    assert type(p.num_inference_steps) is int and type(p.guidance_scale) is float
    assert all(type(b) is int for b in p.skip_block_list)


@pytest.mark.parametrize(("cond", "needle"), [
    (Condition("img.png", 2.5), "condition frame=2.5 must be an integer"),
    (Condition("img.png", "0"), "condition frame='0' must be an integer"),
    (Condition(None, 0), "condition media=None must be a path"),
    (Condition("img.png", 0, "1"), "condition strength='1' must be a number"),
    (Condition("img.png", torch.tensor(2.5)), "condition frame=tensor(2.5000) must be an integer"),
    (Condition(np.zeros((1, 4, 4, 3)), 0), "condition media=array("),
    # these went through and failed at read time with os.fspath's bare TypeError
    (Condition(b"img.png", 0), "condition media=b'img.png' must be a path, a PIL image or a torch tensor"),
    (Condition(5, 0), "condition media=5 must be a path"),
    (Condition(["a.png"], 0), "condition media=['a.png'] must be a path"),
])
def test_a_condition_field_of_the_wrong_type_is_named(cond, needle) -> None:
    from ltxcli.request import FieldTypeError

    with pytest.raises(FieldTypeError, match="^" + re.escape(needle)):
        resolve(conditions=[cond])


def test_an_extension_of_a_tensor_is_refused_in_one_line() -> None:
    """An extension reads its rate, timestamps and frames from a file: a tensor failed with a bare AssertionError
    (run_extension) or os.fspath's TypeError (run_batch); now one line naming the field and the way out."""
    import threading
    from types import SimpleNamespace

    from ltxcli.extend import run_extension
    from ltxcli.request import Extension, FieldTypeError

    needle = "extend video=<Tensor [9, 32, 64, 3] float32> must be a video file's path (a tensor: write it first"
    request = GenerationRequest("it runs on", extend=Extension(torch.zeros(9, 32, 64, 3), 8))
    with pytest.raises(FieldTypeError, match="^" + re.escape(needle)):
        run_extension(SimpleNamespace(lock=threading.Lock()), request)  # refused before the pipeline is used
    with pytest.raises(FieldTypeError, match="^" + re.escape(needle)):
        resolve(extend=Extension(torch.zeros(9, 32, 64, 3), 8))


def test_values_a_run_would_refuse_late_are_refused_in_resolution() -> None:
    """Each of these ran the text encoder (or every step) before failing, or was recorded as something else than
    what ran (steps above the scheduler's 1000 timesteps were clamped, the record kept the asked count)."""
    for kwargs, needle in (({"seed": 2**64}, "seed=18446744073709551616 must be in [0, 2**63 - 1] (use 2**63 - 1)"),
                           ({"steps": 5000}, "steps=5000 must be in [1, 1000]"),
                           ({"tone_map_compression_ratio": 5.0}, "tone_map_compression_ratio=5 must be in [0, 1]")):
        with pytest.raises(ValueError, match=re.escape(needle)):
            resolve(**kwargs)
    assert resolve(steps=1000, seed=2**63 - 1).passes[0].num_inference_steps == 1000


def test_per_pass_dicts_on_a_single_pass_model_say_they_asked_for_two_passes() -> None:
    with pytest.raises(ValueError, match=r"^first_pass= / second_pass= ask for two passes .* give its settings at the"):
        resolve_request(GenerationRequest("a cat", first_pass={"steps": 2}), TINY_PRESET, has_upsampler=False)
    with pytest.raises(ValueError, match=r"^multi-scale generation needs a latent upsampler: .*upscaler-0\.9\.8\)$"):
        resolve_request(GenerationRequest("a cat"), DISTILLED, has_upsampler=False)


def test_numbers_from_numpy_torch_and_fractions_are_numbers() -> None:
    """The type check takes what generated before it: numpy scalars and arrays, 0-d tensors, Fractions, a
    duration string; the run is the one of the same plain Python values."""
    from fractions import Fraction

    import numpy as np

    plain = resolve(guidance_scale=3.0, steps=2, timesteps=None, frame_rate=25.0, stg_blocks=[0],
                    cfg_star_rescale=True, conditions=[Condition("x.png", 0, 0.9)])
    other = resolve(guidance_scale=np.float32(3.0), steps=np.int64(2), timesteps=None, frame_rate=np.float32(25),
                    stg_blocks=np.array([0]), cfg_star_rescale=np.bool_(True),
                    conditions=[Condition("x.png", np.int64(0), np.float32(0.9))])
    assert other.settings() == plain.settings()
    assert resolve(timesteps=torch.tensor([1.0, 0.5])).passes[0].timesteps == (1.0, 0.5)
    assert resolve(frame_rate=Fraction(30000, 1001)).frame_rate == pytest.approx(30000 / 1001)
    pipe = build_pipeline(torch.device("cpu"), torch.float32)
    a = pipe.generate("a cat", height=64, width=96, num_frames=9, seed=3, steps=1, guidance_scale=3.0)
    b = pipe.generate("a cat", height=64, width=96, num_frames=9, seed=np.int64(3), steps=torch.tensor(1),
                      guidance_scale=np.float32(3.0))
    assert torch.equal(a.video, b.video)


def test_a_negative_condition_frame_is_told_where_the_last_frame_is() -> None:
    """``-c end.png:-1`` (Python's "last") was answered "(use 0)" alone: the first frame, the opposite end of what was
    meant. Frames count from 0; the line names both ends."""
    from ltxcli import Condition

    for frame in (-1, -5):
        with pytest.raises(ValueError) as info:
            resolve_request(GenerationRequest("a cat", num_frames=17, conditions=[Condition("end.png", frame)]),
                            TINY_PRESET)
        assert str(info.value) == (f"condition end.png: frame={frame} must be in [0, 16] for a 17-frame video "
                                   "(frames count from the first, 0: use 0 for the first frame, 16 for the last)")


def test_a_tensor_condition_or_v2v_input_fills_the_video_not_its_padding() -> None:
    """A 100x150 video is generated at 128x160 and cropped back (rows 14..113, columns 5..154). A tensor condition
    of exactly the video's size was stretched over the whole padded frame, so the output's frame showed a zoomed
    part of it; it is now placed where the video is, the padding zero (grey) as a file condition's is. A v2v
    tensor likewise. The tensor's own values come through unchanged (x * 2 - 1)."""
    from ltxcli.conditions import prepare_conditions, prepare_video

    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 100, 150, 3, generator=gen)
    video = torch.rand(9, 100, 150, 3, generator=gen)
    r = resolve_request(GenerationRequest("a", height=100, width=150, num_frames=9, conditions=[Condition(image)],
                                          video=video, denoise_strength=0.5), TINY_PRESET)
    (cond,), source = prepare_conditions(r), prepare_video(r.video, r)
    for pixels, frames in ((cond.pixels, image), (source, video)):
        assert pixels.shape == (1, 3, frames.shape[0], 128, 160)
        inside = pixels[0, :, :, 14:114, 5:155].permute(1, 2, 3, 0)  # [F, 100, 150, 3]
        assert torch.equal(inside, frames * 2 - 1)
        pixels[0, :, :, 14:114, 5:155] = 0
        assert not pixels.any()  # all padding is 0


def test_generate_keywords_are_the_request_fields_with_their_types() -> None:
    """``Pipeline.generate(prompt, **settings)`` types ``settings`` as :class:`RequestFields` (PEP 692), so a type
    checker refuses ``num_frame=9`` or ``height="a"``: its keys and types must stay GenerationRequest's (the
    annotations as written, both modules using ``from __future__ import annotations``), every key optional."""
    import inspect

    from ltxcli.pipeline import Pipeline
    from ltxcli.request import RequestFields

    fields = {f.name: f.type for f in dataclasses.fields(GenerationRequest) if f.name != "prompt"}
    typed = {name: getattr(t, "__forward_arg__", t) for name, t in RequestFields.__annotations__.items()}
    assert typed == fields
    assert list(typed) == list(fields)  # in the dataclass's order, for a reader comparing the two
    assert RequestFields.__required_keys__ == frozenset()  # each field has a default in the dataclass
    settings = inspect.signature(Pipeline.generate).parameters["settings"]
    assert settings.kind is inspect.Parameter.VAR_KEYWORD and settings.annotation == "Unpack[RequestFields]"


def test_multi_scale_video_to_video_cuts_both_passes_at_the_strength() -> None:
    """Multi-scale v2v was refused ("not supported yet"); now each pass keeps its steps at or below the strength
    (the distilled schedules: first 1.0 ... 0.725, second 0.9094, 0.725, 0.4219), the dev schedule's share of its
    steps, and a strength below a pass's schedule names that pass."""
    r = resolve(DISTILLED, video="in.mp4", denoise_strength=0.8, height=256, width=256, num_frames=9)
    assert r.multi_scale and [p.timesteps for p in r.passes] == [(0.725,), (0.725, 0.4219)]
    dev = resolve(DEV13, video="in.mp4", denoise_strength=0.5, height=256, width=256, num_frames=9)
    assert [p.skip_initial_inference_steps for p in dev.passes] == [15, 17]  # 15 of 30 steps; the second's own 17
    # below the whole first schedule (ltx v2v's default 0.5) the second pass alone runs, at the full size
    low = resolve(DISTILLED, video="in.mp4", denoise_strength=0.5, height=256, width=256, num_frames=9)
    assert not low.multi_scale and low.downscale_factor == 1.0 and [p.timesteps for p in low.passes] == [(0.4219,)]
    with pytest.raises(ValueError, match=r"^denoise_strength=0.3 is below every timestep of this schedule "
                                         r"\(0.9094, 0.725, 0.4219\): use at least 0.4219$"):
        resolve(DISTILLED, video="in.mp4", denoise_strength=0.3, height=256, width=256, num_frames=9)


def test_skipped_steps_that_leave_no_step_are_refused_in_resolution() -> None:
    """Per-pass skipped steps that leave no step were refused by the sampler once the pass started: a second pass's
    after the whole first pass had run ("skip_initial=17 and skip_final=30 must be >= 0 ..."), and a v2v cut that
    the pass's skipped final steps drop named the skip_initial it derived ("skip_initial=26 and skip_final=4"), a
    number the user never gave. Both are refused in resolution, naming what was given."""
    size = dict(height=256, width=256, num_frames=9)
    with pytest.raises(ValueError, match=r"^skip_initial_inference_steps=17 and skip_final_inference_steps=30 must be "
                                         r">= 0 and leave at least one of the 30 steps$"):
        resolve(DEV13, second_pass={"skip_final_inference_steps": 30}, **size)
    with pytest.raises(ValueError, match=r"^skip_initial_inference_steps=-1 and skip_final_inference_steps=3 must"):
        resolve(DEV13, first_pass={"skip_initial_inference_steps": -1}, **size)
    # 0.15 keeps round(4.5) = 4 of 30 steps (26 skipped): the first pass's 3 final skipped leave one, a second
    # pass skipping its last 4 none
    with pytest.raises(ValueError, match=r"^denoise_strength=0.15 keeps the last 4 of the second pass's schedule's 30 "
                                         r"steps, which skip_final_inference_steps=4 drops: none is left \(use a "
                                         r"higher strength or skip fewer final steps\)$"):
        resolve(DEV13, video="in.mp4", denoise_strength=0.15, second_pass={"skip_final_inference_steps": 4}, **size)
    kept = resolve(DEV13, video="in.mp4", denoise_strength=0.15, second_pass={"skip_final_inference_steps": 3}, **size)
    assert [(p.skip_initial_inference_steps, p.skip_final_inference_steps) for p in kept.passes] == [(26, 3), (26, 3)]


@pytest.mark.parametrize("strength", [0.05, 0.1])
def test_multi_scale_v2v_whose_first_pass_keeps_no_step_runs_the_second_pass_alone_on_a_dev_model(strength) -> None:
    """The 13B dev first pass runs 30 steps and skips its last 3: a strength up to 0.1 keeps round(30 x strength) <= 3
    steps, all among those it skips. That first pass keeps no step, as the distilled one below 0.725, and the second
    pass alone denoises the input at the full size (the README's rule); it failed after the model had loaded with
    "skip_initial=27 and skip_final=3 must be >= 0 and leave at least one of the 30 steps"."""
    r = resolve(DEV13, video="in.mp4", denoise_strength=strength, height=256, width=256, num_frames=9)
    assert not r.multi_scale and r.downscale_factor == 1.0 and len(r.passes) == 1
    second = DEV13.passes[1]
    kept = round(30 * strength)  # 2 or 3 of the second pass's 30 steps, which skips no final step
    assert r.passes[0] == dataclasses.replace(second, skip_initial_inference_steps=30 - kept)
    # 0.12 keeps round(3.6) = 4: one step of the first pass is left, both passes run
    assert resolve(DEV13, video="in.mp4", denoise_strength=0.12, height=256, width=256, num_frames=9).multi_scale
