"""IC-LoRA control (:mod:`ltxcli.control`), Canny (:mod:`ltxcli.canny`) and depth (:mod:`ltxcli.depth`) controls, and
the memory plan's control stages.

References: OpenCV's ``cv2.Canny`` (a test-only dependency) for the edges; transformers' PIL ``DPTImageProcessor``
and ``post_process_depth_estimation`` for the depth pipeline; the LTX-Video-Trainer's IC-LoRA semantics (reference
tokens first, the target's own coordinates repeated, mask 1) written out here independently of the code.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from cli_harness import enter_cli_env, ltx, memoised_loader
from tiny_models import one_thread  # noqa: F401

from ltxcli import control as control_mod
from ltxcli import pipeline as pipeline_mod
from ltxcli.canny import canny, canny_video
from ltxcli.models.rope import latent_coords, pixel_coords
from ltxcli.request import Condition, Control, GenerationRequest, resolve_request
from ltxcli.tiny import build_pipeline

cv2 = pytest.importorskip("cv2")

H, W, F = 64, 96, 17  # latent 2 x 3 x 3 = 18 video tokens


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline(torch.device("cpu"), torch.float32)  # depth controls: the tiny random Depth-Anything


def _test_images() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    h, w = 96, 128
    yy, xx = np.mgrid[0:h, 0:w]
    shapes = np.zeros((h, w), np.uint8)
    cv2.circle(shapes, (60, 40), 25, 200, -1)
    cv2.rectangle(shapes, (5, 60), (50, 90), 120, -1)
    cv2.line(shapes, (0, 5), (127, 80), 255, 2)
    noise = rng.integers(0, 256, (h, w)).astype(np.uint8)
    return [
        ("waves", (127 + 120 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.uint8)),
        ("shapes", cv2.GaussianBlur(shapes, (5, 5), 1.2)),
        ("hard shapes", shapes),
        ("noise", noise),
        ("blurred noise", cv2.GaussianBlur(noise, (7, 7), 2)),
        ("ramp and noise", np.clip(xx * 2 + rng.normal(0, 20, (h, w)), 0, 255).astype(np.uint8)),
    ]


@pytest.mark.parametrize("thresholds", [(100, 200), (50, 150), (20, 60), (150.7, 90.2)])
def test_canny_matches_opencv(thresholds):
    """Edge pixels differ from cv2.Canny's by at most 2% of OpenCV's edge count on every test image."""
    low, high = thresholds
    total = 0
    for name, img in _test_images():
        ref = cv2.Canny(img, low, high) > 0
        got = canny(torch.from_numpy(img)[None], low, high)[0].numpy()
        diff = int((ref != got).sum())
        assert diff <= 0.02 * max(int(ref.sum()), 1), f"{name} {thresholds}: {diff} of {int(ref.sum())} edge pixels"
        total += int(ref.sum())
    assert total > 1000  # the images have edges to find


def test_canny_video_is_the_trainers_reference():
    """RGB frames -> the LTX-Video-Trainer's compute_condition: torchvision's grey weights, *255, astype(uint8),
    cv2.Canny(100, 200), three channels, edges white."""
    rng = np.random.default_rng(1)
    rgb = np.stack([cv2.GaussianBlur(rng.random((72, 80, 3)).astype(np.float32), (5, 5), 1.5) for _ in range(3)])
    rgb[:, 20:50, 30:60] = [0.9, 0.2, 0.1]
    got = canny_video(torch.from_numpy(rgb)).numpy()
    grey = (0.2989 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) * 255
    for i in range(3):
        ref = cv2.Canny(grey[i].astype(np.uint8), 100, 200) / 255.0
        assert np.abs(got[i] - ref[..., None]).sum() / 3 <= 0.02 * ref.sum()
        assert ref.sum() > 50


def _trace_tokens(monkeypatch: pytest.MonkeyPatch):
    """Record what place_with_control returns and the transformer's inputs at every step."""
    seen: dict[str, list] = {"placed": [], "steps": []}
    real = pipeline_mod.place_with_control

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen["placed"].append([t.clone() if isinstance(t, torch.Tensor) else t for t in out])
        return out

    monkeypatch.setattr(pipeline_mod, "place_with_control", spy)
    return seen


def _hook_steps(pipe, seen):
    def pre(module, args, kwargs):
        seen["steps"].append((args[0].clone(), args[2].clone()))  # tokens [B, N, C], timesteps [B, N]

    return pipe.transformer.register_forward_pre_hook(pre, with_kwargs=True)


def _control_video(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((F, 48, 80, 3), generator=g)  # another aspect ratio: fitted by resize + centre crop


def test_control_tokens_at_the_video_coordinates(pipe, monkeypatch, one_thread):  # noqa: F811
    """The control's tokens come first, sit at the generated tokens' coordinates (the trainer's doubled grid),
    hold the VAE latents of the fitted control, keep timestep 0 and their values through every step, and are
    gone from the result; the control changes the video."""
    seen = _trace_tokens(monkeypatch)
    ctrl = _control_video(0)
    kw = dict(height=H, width=W, num_frames=F, steps=3, seed=5, image_cond_noise_scale=0.0)
    hook = _hook_steps(pipe, seen)
    try:
        with_ctrl = pipe.generate("a cat", control=Control(ctrl), **kw)
    finally:
        hook.remove()
    plain = pipe.generate("a cat", **kw)

    tokens, coords, mask, n_extra = seen["placed"][0]
    f, h, w = (F - 1) // 8 + 1, H // 32, W // 32
    n = f * h * w
    assert tokens.shape[1] == 2 * n and n_extra == n
    # the trainer's prepare_video_coordinates(sequence_multiplier=2): the video's grid, twice
    grid = pixel_coords(latent_coords(f, h, w), causal_fix=pipe.transformer.config.causal_temporal_positioning)
    torch.testing.assert_close(coords[0], torch.cat([grid, grid], dim=1), rtol=0, atol=0)
    assert torch.equal(mask[0, :n], torch.ones(n)) and torch.equal(mask[0, n:], torch.zeros(n))
    # the control's tokens are its latents: resized to cover 64x96 and centre-cropped, then encoded
    fitted = torch.nn.functional.interpolate(ctrl.permute(0, 3, 1, 2), size=(H, int(H * 80 / 48)), mode="bilinear",
                                             antialias=True).clamp(0, 1)
    left = round((fitted.shape[-1] - W) / 2)
    fitted = fitted[..., left : left + W].permute(0, 2, 3, 1)
    expected = pipe.encode(fitted)  # [1, C, f, h, w]
    torch.testing.assert_close(tokens[:, :n], expected.flatten(2).transpose(1, 2), rtol=1e-4, atol=1e-4)
    # every step: timestep 0 for the control tokens, their values unchanged
    assert len(seen["steps"]) == 3
    for x, tau in seen["steps"]:
        assert x.shape[1] == 2 * n
        assert torch.equal(tau[:, :n], torch.zeros_like(tau[:, :n])) and bool((tau[:, n:] > 0).all())
        torch.testing.assert_close(x[:1, :n], tokens[:, :n], rtol=0, atol=0)
    # removed before decoding: the result is the video's latents only, and the video has the requested size
    assert with_ctrl.latents.shape == (1, pipe.transformer.config.in_channels, f, h, w)
    assert with_ctrl.video.shape == (F, H, W, 3)
    assert float((with_ctrl.video - plain.video).abs().max()) > 1e-3
    other = pipe.generate("a cat", control=Control(_control_video(1)), **kw)
    assert float((with_ctrl.video - other.video).abs().max()) > 1e-3
    assert with_ctrl.settings["control"] == {"source": None, "kind": "video", "strength": 1.0}


def test_control_with_first_frame_and_keyframe(pipe, monkeypatch, one_thread):  # noqa: F811
    """[control, keyframe tokens, video]: the control at the video's coordinates, the keyframe at its frame, the
    first frame blended into the video; a control strength below 1 is the mask and a noised start."""
    seen = _trace_tokens(monkeypatch)
    g = torch.Generator().manual_seed(3)
    first, key = torch.rand((1, H, W, 3), generator=g), torch.rand((1, H, W, 3), generator=g)
    conds = [Condition(first, 0, 1.0), Condition(key, 16, 0.8)]
    out = pipe.generate("a cat", height=H, width=W, num_frames=F, steps=2, seed=2, conditions=conds,
                        control=Control(_control_video(0), strength=0.7))
    tokens, coords, mask, n_extra = seen["placed"][0]
    f, h, w = 3, 2, 3
    n, k = f * h * w, h * w  # control tokens, keyframe tokens (one latent frame)
    assert tokens.shape[1] == 2 * n + k and n_extra == n + k
    grid = pixel_coords(latent_coords(f, h, w), causal_fix=True)
    torch.testing.assert_close(coords[0, :, :n], grid, rtol=0, atol=0)
    torch.testing.assert_close(coords[0, :, n + k :], grid, rtol=0, atol=0)
    assert torch.equal(coords[0, 0, n : n + k], torch.full((k,), 16.0))
    torch.testing.assert_close(mask[0, :n], torch.full((n,), 0.7))
    torch.testing.assert_close(mask[0, n : n + k], torch.full((k,), 0.8))
    torch.testing.assert_close(mask[0, n + k : n + k + h * w], torch.ones(h * w))  # the first frame
    assert out.video.shape == (F, H, W, 3) and out.latents.shape[2:] == (f, h, w)


def test_short_control_and_kinds(pipe, one_thread):  # noqa: F811
    """A control shorter than the video covers its first frames (8k + 1), and says so (it was silent: the later
    frames had no control, a 12-frame control used 9); canny and depth make their videos."""
    r = resolve_request(GenerationRequest("a", height=H, width=W, num_frames=F, control=Control(_control_video(0)[:12])),
                        pipe.preset)
    with pytest.warns(UserWarning) as caught:
        prepared = control_mod.prepare_control(r, device=torch.device("cpu"), dtype=torch.float32)
    assert prepared is not None and prepared.pixels.shape == (1, 3, 9, H, W)
    assert [str(w.message) for w in caught] == [
        f"control a Tensor steers only frames 0-8 of the {F} generated (its first 9 of 12 frames: a control is used "
        "in 8k + 1 frames); the later ones have no control (give a control as long as the video)"]
    r = replace(r, control=Control(_control_video(0)[:1]))
    with pytest.warns(UserWarning, match=rf"^control a Tensor steers only frames 0-0 of the {F} generated \(it has 1 "
                                         r"frame\); the later"):
        control_mod.prepare_control(r, device=torch.device("cpu"), dtype=torch.float32)
    for kind in ("canny", "depth"):  # (as long as the video: nothing to say)
        r = resolve_request(GenerationRequest("a", height=H, width=W, num_frames=F,
                                              control=Control(_control_video(0), 1.0, kind)), pipe.preset)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            frames = control_mod.control_frames(r.control, r, device=torch.device("cpu"), dtype=torch.float32,
                                                depth_model="tiny")
        assert frames.shape == (F, H, W, 3) and float(frames.min()) >= 0 and float(frames.max()) <= 1
        assert torch.equal(frames[..., 0], frames[..., 2])  # grey
    with pytest.raises(ValueError, match="control strength"):
        resolve_request(GenerationRequest("a", control=Control("x.mp4", 1.5)), pipe.preset)
    with pytest.raises(ValueError, match="control kind"):
        resolve_request(GenerationRequest("a", control=Control("x.mp4", 1.0, "normals")), pipe.preset)
    with pytest.raises(ValueError, match="pose control videos are not made here"):
        resolve_request(GenerationRequest("a", control=Control("x.mp4", 1.0, "pose")), pipe.preset)


@pytest.mark.parametrize(("backward", "new", "shift"), [(False, 8, 3), (True, 10, -6)])
def test_extension_control_counts_in_output_frames(pipe, tmp_path, monkeypatch, one_thread,  # noqa: F811
                                                   backward, new, shift):
    """``ltx extend --control``: the control counts in output frames, as the extension's ``-c`` keyframes do. A
    20-frame input conditions on 17 frames, so forward the generation starts at output frame 3; backward 10 new
    frames are generated as 16 (6 dropped before the output), the generation starting 6 frames before it (the
    control's first frame stands in there). Control frame j is the grey level j / 40."""
    from ltxcli import media
    from ltxcli.extend import run_extension
    from ltxcli.request import Extension

    clip = media.write_video(tmp_path / "in.mp4", torch.rand(20, H, W, 3, generator=torch.Generator().manual_seed(0)),
                             24)
    levels = torch.arange(28 if not backward else 30) / 40
    ctrl = levels[:, None, None, None].expand(-1, H, W, 3).clone()
    seen = []
    real = pipeline_mod.prepare_control
    monkeypatch.setattr(pipeline_mod, "prepare_control", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    out = run_extension(pipe, GenerationRequest("a cat", steps=1, seed=1, extend=Extension(str(clip), new, backward),
                                                control=Control(ctrl, 0.9)))
    pixels = seen[0].pixels[0, 0, :, 0, 0]  # [-1, 1], one value per generation frame
    want = levels[(torch.arange(len(pixels)) + shift).clamp(min=0)] * 2 - 1
    torch.testing.assert_close(pixels, want)
    assert out.settings["control"] == {"source": None, "kind": "video", "strength": 0.9}
    assert out.video.shape[0] == 20 + new


@pytest.mark.parametrize(("height", "width", "src"), [(56, 72, (28, 36)), (56, 72, (112, 144)), (200, 360, (40, 72))])
def test_control_of_the_same_aspect_fills_the_size(height, width, src):
    """A control of the generation's own aspect ratio whose ``width / (w / h)`` rounds below the height in floating
    point (55.999... for 56) still fills every row: it is the plain resize to the generation size, and prepared
    pixels have the padded size."""
    frames = torch.rand((2, *src, 3), generator=torch.Generator().manual_seed(0))
    want = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2), size=(height, width), mode="bilinear",
                                           antialias=True).clamp(0, 1).permute(0, 2, 3, 1)
    torch.testing.assert_close(control_mod.fit_frames(frames, height, width), want, rtol=0, atol=0)
    r = resolve_request(GenerationRequest("a", height=height, width=width, num_frames=9, control=Control(frames)),
                        build_pipeline(torch.device("cpu"), torch.float32).preset)
    prepared = control_mod.prepare_control(r, device=torch.device("cpu"), dtype=torch.float32)
    assert prepared is not None and prepared.pixels.shape[-2:] == r.padded[:2]


def test_parse_control():
    assert control_mod.parse_control("a:b.mp4:0.5") == Control("a:b.mp4", 0.5, "video")
    assert control_mod.parse_control("clip.mp4", "canny") == Control("clip.mp4", 1.0, "canny")
    assert control_mod.parse_control("c:\\x.mp4") == Control("c:\\x.mp4", 1.0, "video")


# --- depth ------------------------------------------------------------------------------------------------------


def _tiny_depth_folder(tmp_path, safetensors: bool = True):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=518,
                            patch_size=14, out_indices=[1, 2], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[8, 16], reassemble_factors=[2, 1],
                                 reassemble_hidden_size=24, fusion_hidden_size=8, head_hidden_size=8,
                                 depth_estimation_type="relative")
    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # visible outputs (random init leaves the ReLU head near zero)
            p.normal_(0, 0.3)
    folder = tmp_path / "depth"
    model.save_pretrained(folder, safe_serialization=safetensors)
    return folder, model


def test_depth_matches_transformers_pipeline(tmp_path, one_thread):  # noqa: F811
    """The depth video: transformers' DPTImageProcessor (PIL) + the model + post_process_depth_estimation,
    normalised over the video (rel err <= 3%: PIL rounds the resized image to uint8, torch does not)."""
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    from ltxcli import depth

    folder, model = _tiny_depth_folder(tmp_path)
    g = torch.Generator().manual_seed(4)
    small = torch.rand((3, 3, 12, 16), generator=g)
    frames = torch.nn.functional.interpolate(small, size=(60, 80), mode="bilinear").permute(0, 2, 3, 1)
    frames = (frames * 255).round() / 255  # what a decoded video holds
    got = depth.depth_video(frames, str(folder), device=torch.device("cpu"), dtype=torch.float32)

    proc = DPTImageProcessorPil(do_resize=True, size={"height": 518, "width": 518}, keep_aspect_ratio=True,
                                ensure_multiple_of=14, resample=3, do_rescale=True, rescale_factor=1 / 255,
                                do_normalize=True, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    images = [(f.numpy() * 255).round().astype(np.uint8) for f in frames]
    inputs = proc(images=images, return_tensors="pt")
    assert tuple(inputs["pixel_values"].shape[-2:]) == depth.processing_size(60, 80, depth.PREPROCESS_DEFAULTS)
    with torch.no_grad():
        post = proc.post_process_depth_estimation(model(**inputs), target_sizes=[(60, 80)] * 3)
    ref = torch.stack([p["predicted_depth"] for p in post])
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    assert got.shape == (3, 60, 80, 3) and torch.equal(got[..., 0], got[..., 1])
    rel = float((got[..., 0] - ref).norm() / ref.norm())
    assert rel <= 0.03, rel
    assert float(ref.std()) > 0.05  # the reference is not flat


def test_depth_refuses_other_formats(tmp_path):
    from ltxcli import depth

    folder, _ = _tiny_depth_folder(tmp_path, safetensors=False)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ValueError, match=r"no \.safetensors"):
        depth.load_depth_model(folder, torch.device("cpu"), torch.float32)


# --- memory plan --------------------------------------------------------------------------------------------------


def test_memory_plan_counts_control_and_depth():
    """A control adds its frames to the encode and its tokens to every denoising step; a depth control adds a
    stage holding the depth model's weights and activations."""
    from ltxcli import depth
    from ltxcli.memory.plan import CONTROL_MODEL, RunShape, request_estimator
    from ltxcli.presets import TINY_PRESET
    from ltxcli.tiny import TINY_TRANSFORMER, tiny_vae_config

    vae = tiny_vae_config()
    cfg = depth.tiny_depth_model().config

    def estimate(**kw):
        shape = RunShape.of_preset(TINY_PRESET, **kw)
        return request_estimator(shape, TINY_TRANSFORMER, vae, dtype=torch.float32, weights_bytes=1000)(256, 384, 49)

    plain, ctrl = estimate(), estimate(control_frames=1000)
    assert plain.stage("condition encode") is None and ctrl.stage("condition encode").activations > 0
    tokens = 7 * 8 * 12  # latent frames x rows x columns at 256x384x49
    dim = TINY_TRANSFORMER.num_attention_heads * TINY_TRANSFORMER.attention_head_dim
    branches = 3
    # the text's keys and values of each block (ltxcli.text_cache): 256 text tokens per branch, whatever the control
    text_kv = 2 * TINY_TRANSFORMER.num_layers * branches * 256 * dim * 4
    # per-token timesteps (34 units) over twice the tokens
    assert ctrl.stage("denoise").activations == 34 * branches * 2 * tokens * dim * 4 + text_kv
    assert plain.stage("denoise").activations == 18 * branches * tokens * dim * 4 + text_kv
    with_depth = estimate(control_frames=49, control_model=lambda h, w, f: depth.depth_memory_bytes(
        cfg, h, w, f, torch.float32))
    stage = with_depth.stage(CONTROL_MODEL)
    weights, acts = depth.depth_memory_bytes(cfg, 256, 384, 49, torch.float32)
    assert stage.weights == 1000 + weights and stage.activations == acts > 0
    assert weights == 4 * sum(p.numel() for p in depth.tiny_depth_model().parameters())


# --- the command line -------------------------------------------------------------------------------------------


_cached_load = memoised_loader()


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """``ltx`` in process in ``tmp_path`` (cli_harness): one tiny model for the module, where a subprocess per
    command would only add its start-up (the exit codes and stderr are the same code's)."""
    return enter_cli_env(tmp_path, monkeypatch, _cached_load)


def _write_clip(path, height: int, width: int, frames: int = 17) -> None:
    from ltxcli import media

    video = torch.zeros(frames, height, width, 3)
    for i in range(frames):  # a square moving over a grey block: edges and depth cues
        video[i, height // 5 + i : height // 2 + i, width // 4 + 2 * i : width // 2 + 2 * i] = torch.tensor([0.9, 0.3, 0.2])
        video[i, height // 2 :, : width // 3] = 0.5
    media.write_video(path, video, 24)


def test_cli_control_from_canny_and_a_batch_with_detailer_and_depth(tmp_path, cli_env):
    """--control-from canny writes the control into the record and --json; a batch takes "control" (the
    detailer's low-resolution clip, upscaled to the generation size) and "control_from" (depth) per line."""
    import json

    from ltxcli import media

    _write_clip(tmp_path / "clip.mp4", 96, 128)
    _write_clip(tmp_path / "low.mp4", 48, 64)
    small = ["--model", "tiny", "--height", "64", "--width", "96", "--num-frames", "17", "--steps", "2"]
    proc = ltx("generate", "a red car", *small, "--seed", "3", "--control-from", "canny", "clip.mp4:0.9",
               "-o", "canny.mp4", "--json")
    assert proc.exit_code == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["settings"]["control"] == {"source": "clip.mp4", "kind": "canny", "strength": 0.9}
    stream, record = media.media_info(tmp_path / "canny.mp4")
    assert (stream["width"], stream["height"], stream["num_frames"]) == (96, 64, 17)
    assert record["control"] == {"source": "clip.mp4", "kind": "canny", "strength": 0.9}

    lines = [{"prompt": "a red car", "seed": 1, "output": "detail.mp4", "control": {"path": "low.mp4"}},
             {"prompt": "a red car", "seed": 1, "output": "depth.mp4", "control_from": ["depth", "clip.mp4"]}]
    proc = ltx("generate", "--batch", "-", *small, "--json", input="\n".join(map(json.dumps, lines)))
    assert proc.exit_code == 0, proc.stderr
    for name, kind, source in (("detail.mp4", "video", "low.mp4"), ("depth.mp4", "depth", "clip.mp4")):
        stream, record = media.media_info(tmp_path / name)
        assert (stream["width"], stream["height"], stream["num_frames"]) == (96, 64, 17)
        assert record["control"] == {"source": source, "kind": kind, "strength": 1.0}


@pytest.mark.parametrize(("args", "message"), [
    (["--control-from", "pose", "clip.mp4"], "pose control videos are not made here"),
    (["--control", "clip.mp4", "--control-from", "canny", "clip.mp4"], "not both"),
    (["--control", "clip.mp4:1.5"], "control strength 1.5 must be in [0, 1]"),
])
def test_cli_control_mistakes_are_one_line(tmp_path, cli_env, args, message):
    _write_clip(tmp_path / "clip.mp4", 48, 64, frames=9)
    proc = ltx("generate", "a car", "--model", "tiny", *args)
    assert proc.exit_code == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_an_animated_image_as_the_control_is_refused_before_loading(tmp_path, cli_env):
    """ltx reads an image's first frame only: an animated GIF given as --control used to steer the video with its
    first frame, with no word."""
    from PIL import Image

    pictures = [Image.new("RGB", (64, 48), (40 * i, 0, 0)) for i in range(5)]
    pictures[0].save(tmp_path / "pose.gif", save_all=True, append_images=pictures[1:], duration=100)
    proc = ltx("generate", "a car", "--model", "tiny", "--control", "pose.gif", "-o", "o.mp4")
    assert proc.exit_code == 6 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "pose.gif: an animated image (5 frames)" in proc.stderr and not (tmp_path / "o.mp4").exists()


def write_tiny_iclora(path) -> None:
    """A tiny IC-LoRA for the built-in tiny model (random rank-4 ComfyUI-format pairs on every self-attention
    projection): what an IC-LoRA file looks like to the loader, for the plumbing of --lora with --control."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(11)
    tensors = {}
    for block in range(2):
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            stem = f"diffusion_model.transformer_blocks.{block}.attn1.{proj}"
            tensors[f"{stem}.lora_A.weight"] = torch.randn(4, 32, generator=g) * 0.3
            tensors[f"{stem}.lora_B.weight"] = torch.randn(32, 4, generator=g) * 0.3
    save_file(tensors, str(path))


def test_cli_control_with_an_iclora(tmp_path, cli_env):
    """--lora (an IC-LoRA) and --control-from canny together: the record has both; the LoRA changes the video made
    under the same control (the batch's second line drops it)."""
    import json

    from ltxcli import media

    _write_clip(tmp_path / "clip.mp4", 96, 128)
    write_tiny_iclora(tmp_path / "ic.safetensors")
    lines = [{"prompt": "a red car", "seed": 2, "output": "with.mp4"},
             {"prompt": "a red car", "seed": 2, "output": "without.mp4", "loras": []}]
    proc = ltx("generate", "--batch", "-", "--model", "tiny", "--height", "64", "--width", "96",
               "--num-frames", "9", "--steps", "2", "--lora", "ic.safetensors", "--control-from", "canny", "clip.mp4",
               input="\n".join(map(json.dumps, lines)))
    assert proc.exit_code == 0, proc.stderr
    _, with_lora = media.media_info(tmp_path / "with.mp4")
    _, without = media.media_info(tmp_path / "without.mp4")
    assert [lo["scale"] for lo in with_lora["loras"]] == [1.0] and without["loras"] == []
    assert with_lora["control"] == without["control"] == {"source": "clip.mp4", "kind": "canny", "strength": 1.0}
    a, b = media.load_video(tmp_path / "with.mp4"), media.load_video(tmp_path / "without.mp4")
    assert float((a - b).abs().max()) > 0.01
