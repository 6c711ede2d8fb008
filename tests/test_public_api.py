"""The library as ``import ltxcli`` users meet it: what its objects print, and what a wrong argument raises."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import torch
from cli_harness import assert_one_error_line, enter_cli_env, ltx, memoised_loader
from tiny_models import one_thread  # noqa: F401  (module autouse fixture)

import ltxcli
from ltxcli import extend, long_video

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


@pytest.fixture(scope="module")
def pipe() -> ltxcli.Pipeline:
    return ltxcli.load_pipeline("tiny", device="cpu")


def test_reprs_name_shapes_not_numbers(pipe, tmp_path) -> None:
    result = pipe.generate("a cat", seed=3, num_frames=9)
    text = repr(result)
    assert text.startswith("GenerationResult(seed=3, video=<Tensor [9, 128, 192, 3] float32>, "
                           "latents=<Tensor [1, 16, 2, 4, 6] float32>, prompt='a cat', model='tiny', timings={")
    assert len(text) < 300
    streamed = pipe.generate("a cat", seed=3, num_frames=9, stream=True)
    assert "video=None (streamed)" in repr(streamed)

    request = ltxcli.GenerationRequest("a cat", seed=1, noise=torch.zeros(1, 16, 2, 4, 6),
                                       conditions=[ltxcli.Condition(torch.rand(9, 64, 64, 3), frame=0)])
    assert repr(request) == ("GenerationRequest(prompt='a cat', conditions=[Condition(media=<Tensor [9, 64, 64, 3] "
                             "float32>)], seed=1, noise=<Tensor [1, 16, 2, 4, 6] float32>)")
    assert repr(ltxcli.BatchItem("a dog", seed=3, output="o.mp4")) == "BatchItem(prompt='a dog', seed=3, output='o.mp4')"
    assert repr(ltxcli.Condition("a.png", frame=8, strength=0.5)) == "Condition(media='a.png', frame=8, strength=0.5)"
    assert repr(ltxcli.Control("d.mp4", kind="depth")) == "Control(media='d.mp4', kind='depth')"

    assert repr(pipe) == ("Pipeline('tiny', device=cpu, dtype=float32, offload='none', loras=[], upsampler=False, "
                          "temporal_upsampler=False)")
    (item,) = ltxcli.run_batch(pipe, [ltxcli.BatchItem("a cat", num_frames=9, seed=5)], output=f"{tmp_path}/x.mp4")
    assert repr(item) == f"ItemResult(index=0, status='ok', path='{tmp_path}/x.mp4', seed=5)"


def test_none_takes_the_default_and_a_missing_prompt_is_named(pipe, tmp_path) -> None:
    plain = pipe.generate("a cat", seed=2, num_frames=9)
    nones = pipe.generate("a cat", seed=2, num_frames=9, conditions=None, enhance_prompt=None)
    assert torch.equal(nones.video, plain.video)
    item = ltxcli.BatchItem("a cat", seed=2, num_frames=9, conditions=None, enhance_prompt=None)
    assert [r.status for r in ltxcli.run_batch(pipe, [item], output=f"{tmp_path}/")] == ["ok"]
    for run in (lambda: pipe.generate(None, seed=2, num_frames=9),
                lambda: list(ltxcli.run_batch(pipe, [ltxcli.BatchItem(None)], output=f"{tmp_path}/")),
                lambda: long_video.generate(pipe, ltxcli.GenerationRequest(None, duration=1.0))):
        with pytest.raises(ValueError, match=r'^prompt=None must be a string \(\"\" for none\)$'):
            run()


def test_an_unknown_stg_mode_lists_the_modes(pipe) -> None:
    with pytest.raises(ValueError, match=r"^stg_mode='skip' must be one of attention_values, attention_skip, "
                                         r"transformer_block, residual$"):
        pipe.resolve(ltxcli.GenerationRequest("a cat", stg_mode="skip"))


def test_the_package_is_marked_typed() -> None:
    # PEP 561: without py.typed in the wheel, a user's mypy skips ltxcli ("missing library stubs or py.typed
    # marker") and every ltxcli name is Any
    package = Path(ltxcli.__file__).parent
    assert (package / "py.typed").is_file()
    pyproject = tomllib.loads((package.parent / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["ltxcli"]


def test_callbacks_and_loras_are_typed_not_any() -> None:
    # what a user's type checker sees (py.typed): with Any, progress=5 or loras=[5] passed unnoticed
    for f in (ltxcli.Pipeline.generate, ltxcli.Pipeline.run, extend.run_extension, long_video.generate):
        assert inspect.signature(f).parameters["progress"].annotation == "ProgressFn | None"
    assert inspect.signature(ltxcli.Pipeline.set_loras).parameters["loras"].annotation == "Sequence[LoraLike] | None"
    assert {f.name: f.type for f in dataclasses.fields(ltxcli.GenerationRequest)}["loras"] == "Sequence[LoraLike] | None"
    assert inspect.signature(ltxcli.Pipeline.lora_specs.fget).return_annotation == "tuple[LoraSpec, ...]"


def test_the_pipeline_s_text_encoder_and_enhancer_are_typed_not_any() -> None:
    # both were Any: pipe.enhancer = "llama" or Pipeline(t, v, text_encoder=5) passed a user's type checker
    import typing

    from ltxcli import pipeline
    from ltxcli.enhance.protocol import RequestEnhancer
    from ltxcli.text import PromptEncoder

    names = {**vars(pipeline), "RequestEnhancer": RequestEnhancer, "PromptEncoder": PromptEncoder}  # TYPE_CHECKING's
    assert typing.get_type_hints(ltxcli.Pipeline.__init__, names)["text_encoder"] is PromptEncoder
    assert typing.get_type_hints(ltxcli.Pipeline, names)["enhancer"] == RequestEnhancer | None


def test_a_lora_scale_that_is_no_number_is_named_as_one(pipe) -> None:
    # was "unknown weights 'style.safetensors:O.8'" (a registry lookup), pointing at `ltx weights list`
    with pytest.raises(ValueError, match=r"^LoRA style\.safetensors: scale 'O\.8' must be a number "
                                         r"\(e\.g\. style\.safetensors:0\.8\)$"):
        pipe.set_loras(["style.safetensors:O.8"])
    assert pipe.lora_specs == ()


def test_decode_names_the_latent_shape_it_takes(pipe) -> None:
    # was torch's "The size of tensor a (3) must match the size of tensor b (16)" from inside the VAE
    for bad in (torch.zeros(1, 3, 2, 4, 6), torch.zeros(2, 16, 2, 4, 6)):
        with pytest.raises(ValueError, match=r"^decode expects latents \[1, 16, f, h, w\] \(this model's VAE\), "
                                             rf"got shape \[{bad.shape[0]}, {bad.shape[1]}, 2, 4, 6\]$"):
            pipe.decode(bad)
    assert pipe.decode(torch.zeros(1, 16, 2, 4, 6)).shape == (9, 128, 192, 3)


def test_the_readme_names_the_errors_a_caller_can_catch() -> None:
    import importlib
    import re

    text = (Path(ltxcli.__file__).parent.parent / "README.md").read_text()
    named = {}
    for dotted in re.findall(r"`(ltxcli(?:\.\w+)+Error)`", text):
        module, _, name = dotted.rpartition(".")
        named[name] = getattr(importlib.import_module(module), name)
    for name in ("FieldTypeError", "MediaError", "CheckpointError", "ModelNotFoundError"):
        assert issubclass(named[name], ValueError), name  # "a mistake in the arguments is a ValueError"
    assert named["WeightsError"].exit_code == 1 and issubclass(named["KernelUnavailableError"], Exception)


# Python's field, its value, ltx's option: the same mistake, refused with the same words by both
SAME_MISTAKES = [
    ("num_frames", 0, "--num-frames"), ("seed", -1, "--seed"), ("seed", 2**63, "--seed"), ("steps", 0, "--steps"),
    ("steps", 5000, "--steps"), ("frame_rate", 0, "--frame-rate"), ("frame_rate", 5000, "--frame-rate"),
    ("guidance_scale", float("nan"), "--guidance-scale"), ("stg_scale", -1.0, "--stg-scale"),
    ("width", 4001, "--width"), ("cache", "teacache:-1", "--cache"),
]


@pytest.mark.parametrize(("field", "value", "option"), SAME_MISTAKES)
def test_python_and_ltx_refuse_a_mistake_with_the_same_line(pipe, tmp_path, monkeypatch, field, value, option):
    with pytest.raises(ValueError) as refused:
        pipe.generate("a cat", **{"num_frames": 9, field: value})
    enter_cli_env(tmp_path, monkeypatch, memoised_loader())
    line = assert_one_error_line(ltx("generate", "a cat", "-m", "tiny", "-o", "c.mp4", option, str(value)), 2)
    assert line == f"error: {refused.value}"


def test_generations_from_two_threads_take_turns(pipe) -> None:
    import threading

    cached_alone = pipe.generate("a cat", seed=11, num_frames=9, cache="teacache:0.5")
    plain_alone = pipe.generate("a cat", seed=11, num_frames=9)
    a_inside, b_done, out = threading.Event(), threading.Event(), {}

    def pause_a(stage: str, done: int, total: int) -> None:
        if stage == "denoise" and done == 1:  # B is started now: without turns it would run in the middle of A
            a_inside.set()
            b_done.wait(timeout=2)

    def a() -> None:
        out["a"] = pipe.generate("a cat", seed=11, num_frames=9, cache="teacache:0.5", progress=pause_a)

    def b() -> None:
        a_inside.wait(timeout=30)
        out["b"] = pipe.generate("a cat", seed=11, num_frames=9)
        b_done.set()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert torch.equal(out["a"].video, cached_alone.video) and torch.equal(out["b"].video, plain_alone.video)
    assert out["a"].settings["cache"] == cached_alone.settings["cache"]
    assert out["b"].settings["cache"] == plain_alone.settings["cache"]


@pytest.mark.parametrize(("field", "value"), [("adain", 2.0), ("overlap_strength", -0.5)])
def test_a_looping_setting_out_of_range_is_refused_in_one_window_too(pipe, field, value) -> None:
    # ltx --adain 2 is refused; long_video.generate ran such a short request as one window, ignoring the value
    # (2.0 shown as 2: the value as ltx --adain 2 echoes it, ltxcli.formatting.number_text)
    with pytest.raises(ValueError, match=rf"^{field}={value:g} must be in \[0, 1\]$"):
        long_video.generate(pipe, ltxcli.GenerationRequest("a cat", seed=1, duration=1.0, **{field: value}))


def test_a_video_condition_off_the_8_frame_grid_gets_ltx_s_hint(pipe) -> None:
    clip = ltxcli.Condition(torch.full((9, 64, 64, 3), 0.5), frame=3)
    with pytest.raises(ValueError, match=r"^condition a Tensor: a video must start at a multiple of 8, not frame=3 "
                                         r"\(use 0 or 8\)$"):
        pipe.generate("a cat", seed=1, num_frames=17, conditions=[clip])
