"""What the memory of one request depends on beyond its size (:class:`RunShape`), read from a
:class:`~ltxcli.request.GenerationRequest` (:func:`request_shape`), and its estimator (:func:`request_estimator`):
its passes, conditions, video-to-video input, extension and long-video windows priced with
:func:`ltxcli.memory.estimate.estimate_memory` (see that module's docstring for the stages)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from ..long_decode import DECODE_BLEND
from ..models.configs import TransformerConfig, VAEConfig
from ..presets import Preset, multi_scale_sizes
from ..request import padded_size
from ..sampling import pass_branches
from ..vae_encode import encode_frames
from .encode import source_hold
from .estimate import DECODE, DENOISE, MemoryEstimate, PassSize, estimate_memory, input_hold, latent_shape

if TYPE_CHECKING:
    from ..long_plan import WindowSplit


@dataclass(frozen=True)
class RunShape:
    """What the memory of one request depends on beyond its size, as the pipeline resolves it: the guidance
    scales of each pass that runs (``(guidance_scale, stg_scale)`` pairs, scalars or per-interval lists),
    whether it is multi-scale and at which factor, its conditions (``(frame, pixel frames)``), and an IC-LoRA
    control: ``control_frames`` (its pixel frames; at most the video's are used) and ``control_model``
    (``(height, width, num_frames) -> (weights, activations)`` of the depth model making it, e.g.
    :func:`ltxcli.depth.depth_memory_bytes`)."""

    guidance: Sequence[tuple[Any, Any]]
    multi_scale: bool = False
    downscale_factor: float | None = None
    conditions: Sequence[tuple[int, int]] = field(default_factory=tuple)
    control_frames: int = 0
    control_model: Callable[[int, int, int], tuple[int, int]] | None = None
    #: video-to-video: pixels per frame of the input video at its native size (0: none; see :func:`input_hold`)
    v2v: int = 0
    #: an extension: ``(input frames, backward, input pixels per frame (native size), the model's longest frames)``;
    #: its estimator's length is the input's frames plus the new ones, so a shorter one has fewer new frames
    extension: tuple[int, bool, int, int] | None = None
    #: a long video: ``f -> (each window's latent [start, end) in the order made, latent frames each later window
    #: appends)`` or None where ``f`` frames run as one generation (:func:`ltxcli.long_plan.window_frames`)
    windows: Callable[[int], WindowSplit | None] | None = None
    appended: int = 0  # latent frames appended as extra tokens (a later window's view of the previous one's tail)
    #: a long video-to-video's whole input, encoded once before the first window: its padded pixel frames (0: none)
    encoded_input: int = 0
    #: the temporal upscaler doubles the latent frames (``f -> 2f - 1``): between the passes of a multi-scale run
    #: (the second pass, its video conditions and control take it), else before the decode
    temporal_upscale: bool = False

    @classmethod
    def of_preset(
        cls, preset: Preset, *, guidance_scale: Any = None, stg_scale: Any = None, stg_blocks: Any = None,
        conditions: Sequence[tuple[int, int]] = (), control_frames: int = 0,
        control_model: Callable[[int, int, int], tuple[int, int]] | None = None, v2v: int = 0,
        extension: tuple[int, bool, int, int] | None = None,
    ) -> RunShape:
        """The shape of a request under ``preset``: the guidance of each pass that runs (a given
        ``guidance_scale`` / ``stg_scale`` replaces every pass's, as the pipeline applies an explicit scale),
        the preset's multi-scale and factor, and ``conditions`` (``(frame, pixel frames)``)."""
        passes = preset.passes if preset.multi_scale else preset.passes[:1]
        # STG that skips no block runs no branch of its own (the pipeline takes the conditional prediction)
        guidance = [(p.guidance_scale if guidance_scale is None else guidance_scale,
                     (p.stg_scale if stg_scale is None else stg_scale)
                     if (p.skip_block_list if stg_blocks is None else stg_blocks) else 0.0) for p in passes]
        return cls(guidance, multi_scale=preset.multi_scale, downscale_factor=preset.downscale_factor,
                   conditions=list(conditions), control_frames=control_frames, control_model=control_model,
                   v2v=v2v, extension=extension)


def request_shape(preset: Preset, request: Any, *, dtype: torch.dtype, depth_model: str | None = None,
                  weights_dir: Any = None, max_positions: Sequence[int] | None = None) -> RunShape:
    """:meth:`RunShape.of_preset` for a :class:`~ltxcli.request.GenerationRequest`: its guidance, its conditions
    (:func:`condition_frames`) and its IC-LoRA control (as long as the video, the most it can cover), with, for a
    depth control, the depth model's stage (``depth_model`` / ``weights_dir``: :func:`ltxcli.depth.depth_model_path`;
    its config must be on disk), its video-to-video input and its extension (``max_positions``: the transformer's
    position range, which bounds an extension's context; the input's first frame is read for its size)."""
    control = getattr(request, "control", None)
    model = None
    if control is not None and control.kind == "depth":
        from ..depth import depth_config, depth_memory_bytes, depth_model_path

        config = depth_config(depth_model_path(depth_model, weights_dir=weights_dir))

        def model(h: int, w: int, f: int) -> tuple[int, int]:
            return depth_memory_bytes(config, h, w, f, dtype)

    from ..request import resolve_request

    # what the pipeline runs (Pipeline.resolve): per-pass settings, a multi-scale v2v's second pass alone, ...
    resolved = resolve_request(replace(request, extend=None), preset)
    extension = None
    ext, video = getattr(request, "extend", None), getattr(request, "video", None)
    if ext is not None:  # the input's native size (its decoded frames are held) and the model's time range
        from ..extend import longest_frames

        longest = longest_frames(max_positions, request.frame_rate) if max_positions and request.frame_rate else 1 << 30
        extension = (request.num_frames - ext.frames, ext.backward, _native_pixels(ext.video), longest)
    windows = None
    if max_positions and request.frame_rate:  # a long video (an extension's generation) runs a window at a time
        from ..long_plan import window_frames

        windows = window_frames(request, float(request.frame_rate), float(max_positions[0]),
                                backward=ext is not None and ext.backward)
    run = replace(preset, pipeline_type="multi-scale" if resolved.multi_scale else "base", passes=resolved.passes,
                  downscale_factor=resolved.downscale_factor)
    shape = RunShape.of_preset(run, conditions=[(c.frame, condition_frames(c, request.num_frames)) for c in request.conditions],
                               control_frames=request.num_frames if control is not None else 0, control_model=model,
                               v2v=_native_pixels(video) if video is not None else 0, extension=extension)
    return replace(shape, windows=windows, temporal_upscale=resolved.temporal_upscale)


def _native_pixels(source: Any) -> int:
    """Pixels per frame of an input video (a path: its first frame is decoded; a tensor ``[F, H, W, 3]``)."""
    from .. import media

    first = media.load_media(source, max_frames=1)
    return int(first.shape[-3]) * int(first.shape[-2])


def run_passes(shape: RunShape, height: int, width: int, num_frames: int) -> list[PassSize]:
    """The denoising passes of a request at ``height x width x num_frames``: their sizes as the pipeline
    computes them (:func:`ltxcli.request.padded_size`; :func:`ltxcli.presets.multi_scale_sizes`, the first
    pass's 32-aligned downscale and the upsampler's doubling), their branches
    (:func:`ltxcli.sampling.pass_branches`) and their tokens in latent frames (:class:`PassSize`)."""
    ph, pw, pf = padded_size(height, width, num_frames)
    branches = [pass_branches(g, s) for g, s in shape.guidance]
    frames = (pf - 1) // 8 + 1
    if not shape.multi_scale:  # a temporal upscale comes after the pass
        return [PassSize(ph, pw, branches[0], frames, _extra_frames(shape, pf, False))]
    (h1, w1), (h2, w2) = multi_scale_sizes(ph, pw, shape.downscale_factor)
    up = shape.temporal_upscale  # between the passes: the second one refines 2f - 1 latent frames
    return [PassSize(h1, w1, branches[0], frames, _extra_frames(shape, pf, False)),
            PassSize(h2, w2, branches[min(1, len(branches) - 1)], 2 * frames - 1 if up else frames,
                     _extra_frames(shape, pf, up))]


def _extra_frames(shape: RunShape, padded_frames: int, doubled: bool) -> int:
    """Latent frames of conditioning tokens in a pass (:func:`ltxcli.control.place_with_control`): a window's
    appended tail; per condition after frame 0 its first latent frames (an image's one, a video's first two,
    ``conditions.place_conditions``); the control's latent frames (trimmed to the video's ``8k + 1``). ``doubled``:
    after a temporal upscale (:func:`ltxcli.control.at_double_rate`), a video condition's and the control's ``f``
    latent frames are ``2f - 1``."""

    def latent(n: int, video: bool = True) -> int:
        f = (n - 1) // 8 + 1
        return 2 * f - 1 if doubled and video else f

    extra = shape.appended + sum(min(latent(n, n > 1), 2) for frame, n in shape.conditions if frame > 0)
    if shape.control_frames:
        extra += latent((min(shape.control_frames, padded_frames) - 1) // 8 * 8 + 1)
    return extra


def request_estimator(
    shape: RunShape, transformer: TransformerConfig, vae: VAEConfig, *, dtype: torch.dtype, **kwargs: Any
) -> Callable[[int, int, int], MemoryEstimate]:
    """``(height, width, num_frames) -> MemoryEstimate`` for a request of this :class:`RunShape`;
    ``kwargs``: weights, offload, tiling and device of :func:`estimate_memory`."""

    def estimate(h: int, w: int, f: int) -> MemoryEstimate:
        if shape.extension is not None:
            return _extension_estimate(shape, transformer, vae, h, w, f, dtype=dtype, **kwargs)
        runs = window_shapes(shape, h, w, f)
        if runs is not None:  # each window as it runs (the merged estimate: the largest of each stage), and the
            # fused latents [1, C, lf, lh, lw] (float32, on the device from the first window to the end, as
            # long_video._LongRun keeps them); a temporal upscale takes them once every window is done, and the
            # decode the upscaled ones; video-to-video: each window starts from its slice of the whole input's
            # latents, encoded once before the first window (its own input is not read)
            lf, lh, lw = latent_shape(vae, h, w, f)
            latents = 4 * vae.latent_channels * lf * lh * lw
            blend = 4 * 3 * 8 * DECODE_BLEND * h * w  # the previous decode tile's last frames, float32 (long_decode)
            # after a temporal upscale the decode and the result hold the upscaled [1, C, 2 lf - 1, lh, lw]
            late = latents * (2 * lf - 1) // lf if shape.temporal_upscale else latents
            # held through each tile's decode (a CPU's budget for it): those, the blend tail, a v2v's input latents;
            # on a GPU the device holds the fused latents and, after an untiled tile (vae.decode's output stays on
            # the device), its blend tail; a v2v's input latents are on the host (long_video._LongRun)
            held = {"decode_host": kwargs.get("decode_host", 0) + late + blend + (latents if shape.v2v else 0),
                    "decode_device": kwargs.get("decode_device", 0) + late + blend}
            if shape.v2v:  # through the whole input's encode: one read piece's pixels and the latents it makes
                ph, pw, pf = padded_size(h, w, f)
                held["encode_host"] = kwargs.get("encode_host", 0) + source_hold(vae, (1, 3, pf, ph, pw), latents=True)
            est = _merged([request_estimator(one, transformer, vae, dtype=dtype, **{**kwargs, **held})(h, w, n)
                           for one, n in runs])
            est = _fused_on_device(input_hold(est, 0, blend), latents, late)
            if shape.temporal_upscale:
                est = _upscale_fused(est, vae, (lf, lh, lw), dtype, **kwargs)
            return _whole_input(est, vae, shape.v2v, h, w, f, latents) if shape.v2v else est
        ph, pw, pf = padded_size(h, w, f)
        control = (min(shape.control_frames, pf) - 1) // 8 * 8 + 1 if shape.control_frames else 0  # the trim
        # after a temporal upscale the decode makes 2 (pf - 1) + 1 frames of the 2f - 1 latent ones
        est = estimate_memory(
            transformer, vae, height=ph, width=pw, num_frames=2 * (pf - 1) + 1 if shape.temporal_upscale else f,
            dtype=dtype, passes=run_passes(shape, h, w, f),
            per_token_timesteps=bool(shape.conditions or shape.appended),
            condition_frames=[n for _, n in shape.conditions] + ([shape.encoded_input] if shape.encoded_input else []),
            source_frames=pf if shape.v2v else 0, control_frames=control, temporal_upscale=shape.temporal_upscale,
            control_model=shape.control_model(h, w, control) if shape.control_model and control else None,
            **{**kwargs, "encode_host": kwargs.get("encode_host", 0) + (source_hold(vae, (1, 3, pf, ph, pw)) if shape.v2v else 0)})
        # the input read, prepared and encoded a chunk at a time in the encoder's stage (conditions.source_chunks), as
        # in windows: the host holds one read piece's float32 pixels [1, 3, c, ph, pw] beside the encode (encode_host,
        # on the CPU; an extension's own: its input); its latents stay on the device (the first pass's initial latents)
        return _whole_input(est, vae, shape.v2v, h, w, f, 0) if shape.v2v else est

    return estimate


def window_shapes(shape: RunShape, h: int, w: int, f: int) -> list[tuple[RunShape, int]] | None:
    """A long video's windows at ``h x w x f`` as they run, in the order made (None: ``f`` frames run as one
    generation): each one's :class:`RunShape` and pixel frames, one pass at the full size with the first pass's
    settings (:func:`ltxcli.long_video._one_pass`), the tail it appends (none for the first made), its keyframes
    (``shape.conditions``' parts each window takes, :func:`ltxcli.long_plan.condition_parts`, at its own frames and
    trimmed to its end as :func:`condition_frames` trims them)."""
    from ..long_plan import condition_parts

    split = shape.windows(f) if shape.windows is not None else None
    if split is None:
        return None
    spans, tail = split
    pf = padded_size(h, w, f)[2] if shape.v2v else 0
    runs = []
    for j, (start, end) in enumerate(spans):
        n, first = 8 * (end - start - 1) + 1, 8 * start
        conditions = [(c + at - first, (max(1, min(m, n - (c + at - first))) - 1) // 8 * 8 + 1)
                      for c, whole in shape.conditions for k, at, m in condition_parts(spans, c, whole) if k == j]
        runs.append((replace(shape, windows=None, conditions=conditions, appended=tail if j else 0, v2v=0,
                             encoded_input=pf, multi_scale=False, guidance=shape.guidance[:1], temporal_upscale=False), n))
    return runs


def _merged(estimates: Sequence[MemoryEstimate]) -> MemoryEstimate:
    """One estimate of stages that run again and again (a long video's windows, one after the other): each stage the
    largest of each figure it has in any of them, in the order they come."""
    names: list[str] = []
    for est in estimates:
        for i, s in enumerate(est.stages):
            if s.name not in names:  # after the stage it follows there (or first)
                names.insert(names.index(est.stages[i - 1].name) + 1 if i else 0, s.name)
    stages = []
    for name in names:
        same = [s for est in estimates for s in est.stages if s.name == name]
        stages.append(replace(same[0], weights=max(s.weights for s in same), activations=max(s.activations for s in same),
                              host=max(s.host for s in same), tokens=max(s.tokens for s in same)))
    return replace(estimates[0], stages=tuple(stages), vae_tiled=any(e.vae_tiled for e in estimates),
                   encode_chunk=min((e.encode_chunk for e in estimates if e.encode_chunk), default=0))


def _fused_on_device(est: MemoryEstimate, latents: int, late: int) -> MemoryEstimate:
    """``est`` of a long video's windows with its fused latents on the device (``latents`` bytes from the first
    window's stages on, ``late`` from the decode on: the upscaled ones after a temporal upscale) and, at the end, their
    copy on the host (the result's ``latents``; on a CPU device the same tensor)."""
    first = next(i for i, s in enumerate(est.stages) if s.name in ("condition encode", DENOISE))
    at = next(i for i, s in enumerate(est.stages) if s.name == DECODE)
    stages = [replace(s, activations=s.activations + (late if i >= at else latents if i >= first else 0))
              for i, s in enumerate(est.stages)]
    stages[-1] = replace(stages[-1], host=stages[-1].host + (0 if est.device_is_host else late))
    return replace(est, stages=tuple(stages))


def _upscale_fused(est: MemoryEstimate, vae: VAEConfig, latent: tuple[int, int, int], dtype: torch.dtype,
                   **kwargs: Any) -> MemoryEstimate:
    """``est`` of a long video's windows with the temporal upscale of the fused latents (``latent``: their ``(lf,
    lh, lw)``, on the device: :func:`ltxcli.memory.upscale.upscale_bytes` counts them as its input) once every window
    is done, before the decode (:meth:`ltxcli.long_video._LongRun.pixels`): its own stage, the weights as the offload
    mode holds them."""
    from .estimate import TEMPORAL, stage_weights, temporal_stage

    parts = kwargs.get("parts")
    weights = (stage_weights(parts, kwargs.get("offload", "none"), offload_saves=kwargs.get("offload_saves", True),
                             text_encoder_freed=kwargs.get("text_encoder_freed", False))[TEMPORAL]
               if parts is not None else int(kwargs.get("weights_bytes", 0)))
    stage = temporal_stage(vae, parts, weights, *latent, dtype, kwargs.get("device_is_host", False))
    at = next(i for i, s in enumerate(est.stages) if s.name == DECODE)
    stages = (*est.stages[:at], stage, *est.stages[at:])
    return replace(est, stages=stages)


def _whole_input(est: MemoryEstimate, vae: VAEConfig, native_pixels: int, h: int, w: int, f: int,
                 latents: int) -> MemoryEstimate:
    """A video-to-video, in windows (:class:`ltxcli.long_video._LongRun`) or one generation
    (:meth:`ltxcli.pipeline.Pipeline.run`): the whole input decoded, prepared and encoded a chunk at a time in the
    encoder's stage (priced as its largest chunk of ``c`` frames, :func:`ltxcli.vae_encode.encode_frames`, however
    long the input): while a chunk is read, its decoded frames at their native size (float32 and uint8) and the
    copies :func:`ltxcli.conditions.prepared_video_chunks` makes (``read input``); while it is encoded, its float32
    pixels ``[1, 3, c, ph, pw]``; then the ``latents`` bytes the host keeps to the end (in windows: as large as the
    fused latents, float32; one generation keeps them on the device, 0)."""
    ph, pw, pf = padded_size(h, w, f)
    c, piece = encode_frames(vae, pf), source_hold(vae, (1, 3, pf, ph, pw))  # a read piece's float32 pixels
    at = next((i for i, s in enumerate(est.stages) if s.name == "condition encode"), 0)
    stages = tuple(replace(s, host=s.host + (latents if i >= at else 0) + (piece if i == at else 0))
                   for i, s in enumerate(est.stages))
    return input_hold(replace(est, stages=stages), 0, 0, read=5 * 3 * c * native_pixels + 2 * piece)


def _extension_estimate(shape: RunShape, transformer: TransformerConfig, vae: VAEConfig, h: int, w: int, f: int,
                        *, dtype: torch.dtype, **kwargs: Any) -> MemoryEstimate:
    """The memory of an extension to ``f`` output frames, the input's ``M`` and ``N = f - M`` new ones
    (:func:`ltxcli.extend.run_extension`): the generation of ``K + N`` frames (backward ``lead + K``;
    :func:`ltxcli.extend.plan_windows`, in windows one at a time) with the context at frame ``lead``, always
    streamed into the splice; meanwhile the host holds the decoded input (native size, ``M`` frames) and three
    float32 copies of the context (its preprocessed pixels, the condition tensor, the prepared condition), then the
    input at the output size and the condition tensor while the output is spliced; a result that is not streamed
    builds the whole float32 output video."""
    from ..extend import window_context

    m, backward, native_pixels, longest = shape.extension or (1, False, 0, 0)
    new = max(f - m, 1)  # the input's frames are kept whatever the length: only the new ones vary with it
    lead = -(-new // 8) * 8 if backward else 0
    context = (max(min(m, longest - (lead if backward else new)), 1) - 1) // 8 * 8 + 1
    split = shape.windows(context + (lead if backward else new)) if shape.windows is not None else None
    if split is not None:  # extend.plan_windows: in windows, the context leaves the longest one 8 new frames
        context = window_context(m, 8 * (max(e - s for s, e in split[0]) - 1) + 1)
    gen = lead + context + (0 if backward else new)
    ph, pw, _ = padded_size(h, w, gen)
    # the request's conditions count output frames, the generation's start at its first (extend.ExtensionPlan.gen_frame)
    shift = lead - new if backward else context - m
    conditions = [(lead, context), *((c + shift, n) for c, n in shape.conditions)]
    inner = replace(shape, conditions=conditions, extension=None, v2v=False)
    copy = 4 * 3 * context * ph * pw
    early = 4 * 3 * m * native_pixels + 3 * copy  # held through the context's encode too (a CPU's budget for it)
    late = 4 * 3 * m * h * w + copy  # held through the decode (a CPU's budget for it)
    est = request_estimator(inner, transformer, vae, dtype=dtype, **{**kwargs, "streamed": True, "encode_host": early,
                                                                     "decode_host": late})(h, w, gen)
    streamed = kwargs.get("streamed", False)
    return input_hold(est, early, late, 0 if streamed else 4 * 3 * f * h * w)


def condition_frames(c: Any, num_frames: int) -> int:
    """Pixel frames the pipeline keeps of condition ``c`` in a ``num_frames`` video: its decoded frames when the
    pre-load check has read them (:class:`ltxcli.media.DecodedMedia`, a tensor), rounded down to 8k + 1 as the
    official trim does; one for an image or anything not yet read."""
    frames = getattr(c.media, "frames", c.media)
    n = int(frames.shape[0]) if isinstance(frames, torch.Tensor) and frames.ndim == 4 else 1
    return (max(1, min(n, num_frames - c.frame)) - 1) // 8 * 8 + 1


__all__ = ["RunShape", "condition_frames", "request_estimator", "request_shape", "run_passes", "window_shapes"]
