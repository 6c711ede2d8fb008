"""Depth control videos: Depth-Anything-V2 through transformers' native classes (``DepthAnythingForDepthEstimation``),
for making a depth IC-LoRA control video from an ordinary video (:mod:`ltxcli.control`).

The model is a weights.toml entry (:data:`DEFAULT_DEPTH_MODEL`, ``depth-anything/Depth-Anything-V2-Small-hf``,
safetensors only), a folder in the transformers layout, or ``"tiny"`` (random weights built here, for the
built-in tiny model's plumbing runs). It runs in its own stage: loaded onto the device, run over the frames
:data:`FRAMES_PER_BATCH` at a time, and released before the text encoder and the transformer run
(:meth:`ltxcli.pipeline.Pipeline.run`); the memory plan counts that stage (:func:`depth_memory_bytes`).

Preprocessing as the checkpoint's own ``preprocessor_config.json`` asks transformers' ``DPTImageProcessor`` to do
it (defaults: ``size`` 518x518, ``keep_aspect_ratio``, ``ensure_multiple_of`` 14, bicubic, ImageNet mean/std),
in torch on the device: the scale closest to 1 that brings one side to its target, both sides rounded to
multiples of 14, an antialiased bicubic resize (PIL's filter; PIL also rounds to uint8, hence the clamp), then
the normalisation. The prediction (relative inverse depth: near is large) is resized back bicubically (as
``post_process_depth_estimation``) and normalised to [0, 1] over the whole video, not per frame (no flicker),
so near is white.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: The weights.toml entry of the default depth model.
DEFAULT_DEPTH_MODEL = "depth-anything-v2-small"
TINY = "tiny"
#: Frames estimated at once (bounds the stage's activations; :func:`depth_memory_bytes` counts this many).
FRAMES_PER_BATCH = 4
#: ``DPTImageProcessor`` settings of the Depth-Anything-V2 checkpoints (their ``preprocessor_config.json``).
PREPROCESS_DEFAULTS: dict[str, Any] = {
    "size": {"height": 518, "width": 518}, "ensure_multiple_of": 14, "keep_aspect_ratio": True,
    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
}
# Activations of one batch in elements, per frame: VIT_UNITS * tokens * hidden + HEAD_UNITS * pixels * channels at
# the processing size. Peak RSS above the loaded model, Small configuration (random weights), float32, CPU, one
# batch of 4 frames: 1.26 GB at 512x768 (processed at 518x784), 0.59 GB at 256x384 (350x518); these units give
# 1.45 and 0.65 GB (both terms grow with the pixels, so the split between them is a choice, the sum is fitted).
VIT_UNITS = 16
HEAD_UNITS = 3


def tiny_depth_model() -> nn.Module:
    """A random Depth-Anything model with the real structure (DINOv2 backbone, DPT neck and head), tiny widths."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=2, image_size=518,
                            patch_size=14, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[8, 16, 32, 32], reassemble_hidden_size=32,
                                 fusion_hidden_size=16, head_hidden_size=8, depth_estimation_type="relative")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(20250102)
        return DepthAnythingForDepthEstimation(config).eval()


def depth_model_path(source: str | None = None, *, weights_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Where the depth model loads from: ``None`` for :data:`TINY`, a folder as given, else a weights.toml name
    (default :data:`DEFAULT_DEPTH_MODEL`) that must be on disk (``ltx weights pull``, or ``ltx generate
    --control-from depth``, which pulls it; else :class:`ltxcli.weights.WeightsUnavailableError` says how)."""
    if source == TINY:
        return None
    if source is not None and Path(source).is_dir():
        return Path(source)
    from . import weights

    return weights.resolve(source or DEFAULT_DEPTH_MODEL, weights_dir=weights_dir)


def preprocess_config(path: Path | None) -> dict[str, Any]:
    """The checkpoint's ``preprocessor_config.json`` over :data:`PREPROCESS_DEFAULTS`."""
    cfg = dict(PREPROCESS_DEFAULTS)
    if path is not None and (path / "preprocessor_config.json").is_file():
        given = json.loads((path / "preprocessor_config.json").read_text(encoding="utf-8"))
        cfg.update({k: given[k] for k in PREPROCESS_DEFAULTS if k in given})
    return cfg


def load_depth_model(path: Path | None, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The model from ``path`` (a transformers folder; safetensors only) or the tiny one (``None``)."""
    if path is None:
        model = tiny_depth_model()
    else:
        from transformers import DepthAnythingForDepthEstimation

        if not any(path.glob("*.safetensors")):
            raise ValueError(f"{path}: no .safetensors weights (other formats are not loaded)")
        model = DepthAnythingForDepthEstimation.from_pretrained(path, use_safetensors=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def processing_size(height: int, width: int, cfg: dict[str, Any]) -> tuple[int, int]:
    """``DPTImageProcessor``'s output size for a ``height x width`` input (keep the aspect ratio, scale as little as
    possible, each side rounded to a multiple of ``ensure_multiple_of``)."""
    multiple = int(cfg["ensure_multiple_of"])
    scale_h, scale_w = cfg["size"]["height"] / height, cfg["size"]["width"] / width
    if cfg["keep_aspect_ratio"]:
        if abs(1 - scale_w) < abs(1 - scale_h):
            scale_h = scale_w
        else:
            scale_w = scale_h
    return (max(multiple, round(scale_h * height / multiple) * multiple),
            max(multiple, round(scale_w * width / multiple) * multiple))


def estimate_depth(model: nn.Module, frames: Tensor, cfg: dict[str, Any] = PREPROCESS_DEFAULTS) -> Tensor:
    """Relative inverse depth of frames ``[F, H, W, 3]`` in [0, 1] -> float32 ``[F, H, W]`` on the model's device,
    :data:`FRAMES_PER_BATCH` frames per forward."""
    p = next(model.parameters())
    n, h, w, _ = frames.shape
    size = processing_size(h, w, cfg)
    mean = torch.tensor(cfg["image_mean"], device=p.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg["image_std"], device=p.device).view(1, 3, 1, 1)
    out = torch.empty((n, h, w), dtype=torch.float32, device=p.device)
    for a in range(0, n, FRAMES_PER_BATCH):
        x = frames[a : a + FRAMES_PER_BATCH].to(p.device, torch.float32).permute(0, 3, 1, 2)  # [b, 3, H, W]
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)
        depth = model(pixel_values=((x - mean) / std).to(p.dtype)).predicted_depth  # [b, h', w']
        out[a : a + FRAMES_PER_BATCH] = F.interpolate(depth[:, None].float(), size=(h, w), mode="bicubic",
                                                      align_corners=False)[:, 0]
    return out


def depth_video(frames: Tensor, source: str | None = None, *, device: torch.device, dtype: torch.dtype,
                weights_dir: str | os.PathLike[str] | None = None) -> Tensor:
    """A depth control video: RGB frames ``[F, H, W, 3]`` in [0, 1] -> grey ``[F, H, W, 3]`` in [0, 1] (near is
    white), float32 on the CPU. Loads the model (``source``: see :func:`depth_model_path`), runs it and releases
    it before returning."""
    path = depth_model_path(source, weights_dir=weights_dir)
    model = load_depth_model(path, device, dtype)
    try:
        with torch.inference_mode():
            d = estimate_depth(model, frames, preprocess_config(path))
    finally:
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the stage's memory goes back before the next stage loads
    lo, hi = torch.aminmax(d)
    d = (d - lo) / (hi - lo) if bool(hi > lo) else torch.zeros_like(d)  # a flat prediction: no depth cue
    return d.cpu()[..., None].expand(-1, -1, -1, 3).contiguous()


def depth_memory_bytes(config: Any, height: int, width: int, num_frames: int, dtype: torch.dtype,
                       cfg: dict[str, Any] = PREPROCESS_DEFAULTS) -> tuple[int, int]:
    """(weights, activations) bytes of the depth stage for ``num_frames`` frames of ``height x width``:
    parameters at ``dtype``; one batch of activations (:data:`VIT_UNITS`, :data:`HEAD_UNITS`) plus the float32
    frames in and depth out. ``config``: the model's ``DepthAnythingConfig`` (or the model itself)."""
    if isinstance(config, nn.Module):
        params = sum(p.numel() for p in config.parameters())
        config = config.config
    else:
        params = depth_parameters(config)
    ph, pw = processing_size(height, width, cfg)
    batch = min(FRAMES_PER_BATCH, num_frames)
    tokens = (ph // 14) * (pw // 14)
    channels = max(config.fusion_hidden_size, config.head_hidden_size)
    per_frame = VIT_UNITS * tokens * config.backbone_config.hidden_size + HEAD_UNITS * ph * pw * channels
    io = 4 * num_frames * height * width * (3 + 1)
    return params * dtype.itemsize, batch * per_frame * dtype.itemsize + io


def depth_parameters(config: Any) -> int:
    """Parameter count of a ``DepthAnythingConfig``'s model (built on the meta device: nothing is allocated)."""
    from transformers import DepthAnythingForDepthEstimation

    with torch.device("meta"):
        model = DepthAnythingForDepthEstimation(config)
    return sum(p.numel() for p in model.parameters())


def depth_config(path: Path | None) -> Any:
    """The ``DepthAnythingConfig`` of a folder's ``config.json`` (the tiny model's for ``None``)."""
    if path is None:
        return tiny_depth_model().config
    from transformers import DepthAnythingConfig

    return DepthAnythingConfig.from_pretrained(path)


__all__ = [
    "DEFAULT_DEPTH_MODEL", "FRAMES_PER_BATCH", "PREPROCESS_DEFAULTS", "TINY", "depth_config", "depth_memory_bytes",
    "depth_model_path", "depth_parameters", "depth_video", "estimate_depth", "load_depth_model",
    "preprocess_config", "processing_size", "tiny_depth_model",
]
