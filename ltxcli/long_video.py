"""Long videos as overlapping temporal windows: the looping sampler of ComfyUI-LTXVideo (``LTXVLoopingSampler``
with ``MultiPromptProvider``), as diffusers ports it (``LTXI2VLongMultiPromptPipeline``).

A request is *windowed* when it asks for it (``window`` / ``overlap`` given, a prompt schedule, a ``"a | b"``
prompt) or when it lasts longer than the model's position range; a windowed request that fits in one window
runs exactly as a plain request (:meth:`ltxcli.pipeline.Pipeline.run`, bit for bit). Otherwise, in latent
frames (``window // 8`` long, windows ``(window - overlap) // 8`` apart, the last one shorter):

* every window is a plain single-pass generation of ``8 (T - 1) + 1`` pixel frames with its own prompt and a
  seed derived from the run's (``seed + first latent frame``, as both references do); a multi-scale model runs
  its first pass's settings at the requested size (ComfyUI-LTXVideo's long multi-prompt workflow with 0.9.8
  distilled), ``first_pass`` included; ``second_pass`` is refused (:func:`plan`);
* from the second window on, the previous output's last ``overlap // 8`` latent frames are appended as extra
  conditioning tokens at the window's head positions (frames ``0 .. k-1``) with ``overlap_strength``; the
  first window takes the first-frame image, and each keyframe goes to the first window holding its frame; a video
  condition running past that window's end goes on in the next one, from its last frame (ComfyUI-LTXVideo slices
  its guiding latents per window: :func:`ltxcli.long_plan.condition_parts`);
* an IC-LoRA control (:mod:`ltxcli.control`) is made once for the whole video and each window takes the frames
  of its own span (:func:`ltxcli.control.window_control`), VAE-encoded per window;
* the new window's first latent frame is dropped, its statistics are pulled towards the first window's with
  AdaIN (``adain``), and its head is cross-faded linearly into the previous output's tail over
  ``max(k - 1, 1)`` latent frames (diffusers' ``linear_overlap_fuse``);
* latent frames no later window touches are decoded at once and handed to the writer, so memory stays flat
  however long the video is: in tiles of one window's latent frames, ``window - 2`` apart, whose 16 shared
  pixel frames are blended linearly (diffusers' ``AutoencoderKLLTXVideo._temporal_tiled_decode`` with
  window-sized tiles; the references decode the whole latent video at the end, which holds every frame);
  with ``temporal_upscale`` the whole fused latent video is upscaled once every window is done (the
  upscaler's GroupNorms span the whole video; ComfyUI's upsampler node takes the looping sampler's whole output)
  and then decoded the same way; ``--resume`` keeps the finished windows' latents in a state file next to the output (:func:`state_path`),
  checked against a hash of the request;
* backward (a backward extension, :mod:`ltxcli.extend`) the same windows mirrored: split and seeded counting latent
  frames from the end, made last first, each conditioned on the head of the one made before it (at its own tail)
  and fused mirrored (:func:`ltxcli.long_fuse.fuse`), decoded once every window is done.

Where ltx keeps the official conventions instead of diffusers' port (tests/test_long_video.py names and
checks each): an ``overlap_strength`` below 1 is the official per-token timestep rule (tokens start at
``lerp(noise, tail, s)`` and move only once the schedule falls below ``1 - s``) where diffusers blends the
tail back in every step; conditioning tokens are re-noised by the preset's ``image_cond_noise_scale``; the
first-frame image is the official conditioning (preprocessed, strength as given), not also appended at a
negative index of every window; the decode runs window by window instead of once at the end.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from .enhance.rules import per_window, rewrite_of
from .enhance.units import enhanced
from .locks import serialised
from .long_fuse import fuse as fuse  # (moved there; still exported here)
from .long_plan import (  # (moved there; still exported here)
    DEFAULT_ADAIN,
    DEFAULT_OVERLAP,
    DEFAULT_OVERLAP_STRENGTH,
    DEFAULT_WINDOW,
    LongPlan,
    Window,
    check,
    check_seed,
    check_window_time,
    checked_frames,
    plan,
    split_windows,
    window_frames,
    windowed,
)
from .long_state import read_state, seed_of, state_hash, state_path
from .request import GenerationRequest
from .source import with_source_defaults
from .timeline import FRAMES_PER_LATENT as _LATENT_T
from .timeline import bar_prompts as bar_prompts  # (moved there; still exported here)
from .timeline import duration_frames, in_force, read_schedule, schedule_frames, window_prompts

if TYPE_CHECKING:
    from torch import Tensor

    from .pipeline import Pipeline
    from .presets import Preset
    from .progress import ProgressFn
    from .request import ResolvedRequest
    from .result import GenerationResult

#: ``ltx generate`` help of the request fields this module reads (the CLI declares each option once from it).
OPTION_HELP = {
    "duration": "Length in seconds (30, 30s, 1m30s) instead of --num-frames; past the model's range (about 20 s) "
                "the video is made in overlapping windows.",
    "window": f"Long videos: window length in frames (default {DEFAULT_WINDOW}, ComfyUI-LTXVideo's looping "
              "sampler); giving it (or --overlap, --prompt-schedule, a 'a | b | c' prompt) makes windows.",
    "overlap": f"Long videos: frames shared by consecutive windows (default {DEFAULT_OVERLAP}).",
    "overlap_strength": "Long videos: conditioning strength of the previous window's tail in [0, 1] (default "
                        f"{DEFAULT_OVERLAP_STRENGTH}).",
    "adain": f"Long videos: AdaIN of each window towards the first in [0, 1] (default {DEFAULT_ADAIN}).",
    "prompt_schedule": "Long videos: JSON lines {\"start\": FRAME or \"SECONDSs\", \"prompt\": TEXT}: each "
                       "window takes the prompt in force at its first frame.",
    "resume": "Long videos: keep finished windows next to the output and continue an interrupted run of the "
              "same command.",
    "temporal_upscale": "Double the frames and frame rate with the temporal latent upscaler "
                        "(ltxv-temporal-upscaler-0.9.7) after the denoising (multi-scale: between the passes; long "
                        "videos: once every window is done).",
}


def temporal_upscaler(requests: Sequence[GenerationRequest]) -> str | None:
    """The temporal upscaler to load for ``requests``: the default one when one asks for ``temporal_upscale``."""
    from .spec import DEFAULT_TEMPORAL_UPSCALER

    return DEFAULT_TEMPORAL_UPSCALER if any(r.temporal_upscale for r in requests) else None


# --- resume state -------------------------------------------------------------------------------------------


def request_hash(p: LongPlan, model: str, compute: Mapping[str, Any] | None = None) -> str:
    """:func:`ltxcli.long_state.state_hash` of a plan: its request and its windows' settings (media files with
    their size and modification time, so that the windows of a replaced input, condition or control are not
    resumed)."""
    return state_hash(p.request, p.settings(), model, compute)


# --- generation ---------------------------------------------------------------------------------------------


@serialised  # every window on this pipeline, none of another thread's runs between them
def generate(
    pipe: Pipeline, request: GenerationRequest, *, progress: ProgressFn | None = None, stream: bool = False,
    resume: str | os.PathLike[str] | None = None, keep_state: bool = True,
    window_noise: Callable[[int, tuple[int, ...]], Tensor] | None = None, frame_offset: int = 0,
    backward: bool = False,
) -> GenerationResult:
    """Generate ``request``, in windows when :func:`plan` says so (else exactly ``pipe.run``).

    ``stream``: the windows are denoised while the result's :meth:`~ltxcli.result.GenerationResult.frames`
    is iterated, each decoded as soon as no later window changes it (flat memory); its ``latents`` are set once
    the iterator is exhausted. ``resume``: a state file (:func:`state_path`) to continue from (when its hash
    matches) and to keep the finished windows in; deleted once the video is complete. ``keep_state`` False: the
    state is read, never written or deleted (a rank of a video split across processes other than the one that
    writes it: every rank resumes from the same windows, one process writes the file). ``window_noise(i,
    shape)``: the initial noise of window ``i`` (tests; default: the request's ``noise``, the whole video's
    ``[1, C, T, h, w]``, sliced to the window's latent frames, else drawn from the window's seed). ``frame_offset``:
    the caller's number of the video's frame 0 in messages (an extension's schedule counts in output frames).
    ``backward``: :func:`plan`'s (the windows are made last first; decoded once all are done)."""
    from .field_values import check_run_options
    from .result import GenerationResult

    check_run_options(progress, stream)  # before any work: the state file, the plan, the first window
    max_seconds = float(pipe.transformer.config.positional_embedding_max_pos[0])
    if resume is not None and not isinstance(resume, (str, os.PathLike)):  # (pathlib's bare TypeError)
        raise TypeError(f"resume={resume!r} must be a state file's path (long_video.state_path(output))")
    state = Path(resume) if resume is not None else None
    if state is not None and state.is_dir():  # (it failed writing the state, once the first window was done)
        raise ValueError(f"resume={state}: a folder, not a state file: give a file's path "
                         "(long_video.state_path(output) names the one ltx --resume keeps)")
    saved = read_state(state) if state is not None else {}  # once: the seed here, the kept windows in _LongRun
    if request.seed is None and seed_of(saved) is not None:  # (a batch item's: ltxcli.runner.plan_outputs)
        request = replace(request, seed=seed_of(saved))
    # a video-to-video input's length, size and rate where the request leaves them open, as Pipeline.run takes them
    request = with_source_defaults(request, pipe.preset)
    p = plan(request, pipe.preset, max_seconds, backward)
    if p is not None and p.request.prompt_schedule is not None:
        _warn_unused_entries(p, frame_offset)
    if p is None or len(p.windows) == 1:
        one = replace(p.window_request(0, p.request.noise), num_frames=p.num_frames) if p is not None else \
            _single(request, pipe.preset)
        result = pipe.run(one, progress=progress, stream=stream)  # (per-window prompts: window 0's is enhanced)
        if per_window(request) and (text := result.settings["enhanced_prompt"]) is not None:  # by window prompt,
            result.settings["enhanced_prompt"] = {one.prompt: text}  # as several windows' rewrites are recorded
        if p is not None:  # the record keeps the prompt given and, as a longer video's, the window (its prompt:
            # a schedule's entry is taken whole, a "a | b" prompt's first part; a redo from PROMPT alone would split)
            result.settings.update(enhance_prompt=request.enhance_prompt, prompt=request.prompt, long=p.settings())
        return result
    from .control import control_record

    if p.request.noise is not None and window_noise is None:
        window_noise = _sliced_noise(pipe, p)
    # what the windows' resolve refuses (first_pass= without an upsampler, ...) before any file is read or prompt
    # rewritten, as Pipeline.run resolves first: one window and several give the same line
    pipe.resolve(p.window_request(0), window=True)
    p = replace(p, request=_media_checked(pipe, p))
    p = replace(p, request=_enhanced(pipe, p))
    run = _LongRun(pipe, p, progress, state, window_noise, keep_state, saved)
    settings = {**run.full.settings(), **pipe.record_facts(request.prompt, p.request.conditions),
                "control": control_record(request.control), "long": p.settings(),
                "enhanced_prompt": p.request.enhanced_prompt}
    assert p.request.seed is not None  # plan() draws one
    result = GenerationResult(video=None, latents=run.empty(), seed=p.request.seed, timings=run.timings,
                              settings=settings)
    if stream:
        result._stream = run.stream_for(result)
        return result
    import torch

    chunks = list(run.pixels(result))
    result.video = torch.cat(chunks) if chunks else None
    return result


def _warn_unused_entries(p: LongPlan, offset: int) -> None:
    # an entry past the video's end, or replaced before the next window starts, was dropped without a word
    entries = schedule_frames(read_schedule(p.request.prompt_schedule), p.frame_rate)
    taken = {in_force(entries, w.first_frame) for w in p.windows}
    unused = [f + offset for i, (f, _) in enumerate(entries) if i not in taken]
    if unused:
        # (backward extension: the first window starts up to 7 frames before the output, the frames it drops)
        starts = ", ".join(str(max(w.first_frame + offset, 0)) for w in p.windows[:4]) + (", ..." if len(p.windows) > 4 else "")
        which = "the entry" if len(unused) == 1 else f"{len(unused)} entries"
        warnings.warn(f"prompt schedule: {which} starting at frame {', '.join(map(str, unused))} used by no window "
                      f"(a window takes the entry in force at its first frame; windows start at {starts})", stacklevel=3)


def _sliced_noise(pipe: Pipeline, p: LongPlan) -> Callable[[int, tuple[int, ...]], Tensor]:
    """``noise=`` in windows: the whole video's initial draw, normalised latents ``[1, C, T, h, w]`` (``T`` its
    latent frames, as one generation of its length takes), each window taking its own frames ``[start, end)``;
    checked before any work. A multi-scale model refuses it as one generation does (its windows run one pass,
    but a request that fits one window runs both)."""
    from .request import check_noise, padded_size, preset_size

    noise = p.request.noise
    assert noise is not None
    if pipe.preset.multi_scale:
        raise ValueError("noise= replaces the single-pass initial draw; it is not supported with multi-scale")
    check_noise(noise)  # every window's values, before the first
    h, w = preset_size(pipe.preset, p.request.height, p.request.width, p.num_frames, p.frame_rate)[:2]
    ph, pw, _ = padded_size(h, w, p.num_frames)
    shape = (1, pipe.transformer.config.in_channels, p.windows[-1].end, ph // 32, pw // 32)
    if tuple(noise.shape) != shape:
        raise ValueError(f"noise must have shape {list(shape)} (the whole video's; each window takes its own latent "
                         f"frames), got {list(noise.shape)}")
    return lambda i, _: noise[:, :, p.windows[i].start: p.windows[i].end]


def _media_checked(pipe: Pipeline, p: LongPlan) -> GenerationRequest:
    """The plan's request with every condition checked against the whole video and its file decoded, once, before
    the first window (:func:`ltxcli.conditions.check_condition`): a missing file or a video condition off the
    8-frame grid fails here, not when its window comes; each window then uses the decoded pixels."""
    from .conditions import check_condition, warn_parts_trim
    from .request import preset_size

    r = p.request
    height, width = preset_size(pipe.preset, r.height, r.width, p.num_frames, p.frame_rate)[:2]
    decoded: dict[tuple[str, int], Any] = {}
    checked = tuple(check_condition(c, height, width, p.num_frames, decoded) for c in r.conditions)
    for c in checked:  # one taken by several windows, each its part exactly: its trim said here, once
        if len(p.condition_parts(c)) > 1:
            warn_parts_trim(c, p.num_frames)
    return replace(r, conditions=checked)


def _enhanced(pipe: Pipeline, p: LongPlan) -> GenerationRequest:
    """The plan's request with its enhanced prompt where its plan says so, as ``Pipeline.run`` enhances one generation
    (and ``ltx generate`` every item before the model loads): one prompt once, under the run's seed, for every window
    (image-to-video captions the first frame at the generation size); per-window prompts each distinct one as the
    first window that takes it (:meth:`LongPlan.prompt_requests`), by window prompt, under one load of the enhancer."""
    return enhanced(pipe, p.request, p.prompt_requests() if per_window(p.request) else [p.request])


def _single(request: GenerationRequest, preset: Preset) -> GenerationRequest:
    """A request :func:`plan` runs as one generation, as ``Pipeline.run`` takes it: a ``duration`` becomes its
    ``num_frames``; the settings between windows (``overlap_strength``, ``adain``) have nothing to act on."""
    r = replace(request, overlap_strength=None, adain=None)
    return r if r.duration is None else replace(r, num_frames=duration_frames(r, preset), duration=None)


def _one_pass(r: ResolvedRequest) -> ResolvedRequest:
    """A multi-scale model's window runs as one pass at the requested size with the first pass's settings (the
    request's ``first_pass`` applied), as ComfyUI-LTXVideo's long multi-prompt workflow runs 0.9.8 distilled (its
    first-pass sigmas, no upscale)."""
    if not r.multi_scale:
        return r
    return replace(r, passes=r.passes[:1], multi_scale=False, downscale_factor=1.0)


class _LongRun:
    """The state of one windowed generation (see the module docstring)."""

    def __init__(self, pipe: Pipeline, p: LongPlan, progress: Any, state: Path | None,
                 window_noise: Callable[[int, tuple[int, ...]], Tensor] | None, keep_state: bool = True,
                 saved: Mapping[str, Any] | None = None) -> None:
        self.pipe, self.plan, self.progress, self.state = pipe, p, progress, state
        self.saved = saved or {}  # the state's contents, read by generate (read_state)
        self.keep_state = keep_state
        self.window_noise = window_noise
        self.control: Tensor | None = None  # the whole video's control frames (set in pixels)
        self.source: Tensor | None = None  # video-to-video: the whole input's latents (set in pixels)
        self.timings: dict[str, float] = {"text_encoding_s": 0.0, "denoise_s": 0.0, "decode_s": 0.0}
        self.tile_plans: list[dict[str, Any] | None] = []  # each decode tile's VAE plan (Pipeline._decoded's)
        from .step_cache import Tally

        pipe.cache_tally = Tally()  # the step cache counts over every window (each pass attaches a fresh cache)
        r0 = _one_pass(pipe.resolve(p.window_request(0), window=True))
        if r0.loras is not None:  # as Pipeline.run: the request's LoRAs, merged once for every window
            pipe.set_loras(r0.loras)
        # the whole video as the decode crops it: window 0's settings with the full length
        self.full = replace(r0, num_frames=p.num_frames, prompt=p.request.prompt)
        # the LoRAs merged in the pipeline, not only those the request names (None keeps the pipeline's)
        self.hash = request_hash(p, pipe.name, {**pipe.compute_record(), "loras": pipe.lora_records})

    def empty(self) -> Tensor:
        import torch

        return torch.empty(0)

    def stream_for(self, result: GenerationResult) -> Callable[[int, Any], Iterator[Tensor]]:
        from .frames import checked_uint8

        def frames(chunk_frames: int, quantize: Any) -> Iterator[Tensor]:
            for video in self.pixels(result):
                for a in range(0, video.shape[0], chunk_frames):
                    yield checked_uint8(video[a: a + chunk_frames], quantize)
                del video  # not alive while the next window is denoised or decoded
        return frames

    # -- the loop ---------------------------------------------------------------------------------------

    def pixels(self, result: GenerationResult) -> Iterator[Tensor]:
        """Float ``[n, H, W, 3]`` chunks of the whole video in order, windows denoised on the way."""
        from .conditions import source_chunks
        from .frames import check_latents, to_video
        from .long_decode import TiledDecode

        p = self.plan
        out, first, done = self._load_state()
        for kept in (t for t in (out, first) if t is not None):  # resumed: else the next stage is blamed for a NaN
            check_latents(kept, f"in the windows --resume kept in {self.state}", "delete that file to start over")
        # video-to-video (not when every window is kept): the input checked before the text encoder, as Pipeline.run
        # reads it, then decoded, prepared and encoded a chunk at a time in the encoder's stage (_encode_source)
        source = source_chunks(self.full, self.pipe.vae.config) if done < len(p.windows) else None
        self.control = self._control_frames()
        texts = self._encode_texts()
        if source is not None:
            self.source, source = self._encode_source(source), None
        # the decoded video: twice the frames and frame rate after a temporal upscale
        length, whole = max(p.windows[0].end - p.windows[0].start - 1, 1), self.full.output()
        tiles = TiledDecode(self.decode_tile, lambda pixels, start: to_video(pixels, whole, start), length)
        # how the fused latents are decoded, for a latents file (--latents-out): each tile's plan as it goes
        # (the seed of every tile's decode noise, :meth:`decode_tile`: the run's, backward windows too)
        result.decode_tiles = {"length": length, "seed": p.request.seed, "plans": self.tile_plans}
        upscale = self.full.temporal_upscale
        n = len(p.windows)
        k = p.overlap_latents
        if self.progress:  # the clock of the windows' pace starts here; resumed windows are not counted in it
            self.progress("window", done, n)
        for j, i in enumerate(p.made()):  # the j-th window made
            w = p.windows[i]
            if j >= done:
                lat = self._denoise_window(i, texts[w.prompt], out)
                out = check_latents(fuse(out, lat, first, k, p.adain, p.backward), f"after fusing window {j + 1}",
                                    "AdaIN of a window with a constant channel (std 0)? lower --adain (0: off)")
                if first is None:
                    first = lat
                self._save_state(out, first, j + 1)
            assert out is not None
            # after window i the output holds latent frames [0, w.end); the next window cross-fades the last k - 1
            settled = w.end if i == n - 1 else w.end - max(k - 1, 0)
            if not upscale and not p.backward:  # backward: the first frames are made last
                yield from tiles.ready(out, settled, final=i == n - 1)
            if self.progress:
                self.progress("window", j + 1, n)
        assert out is not None
        if upscale:  # the upscaler's GroupNorms see the whole video: the finished latents, then the decode
            out = self._temporal_upscale(out)
        if upscale or p.backward:
            yield from tiles.ready(out, out.shape[2], final=True)
        self.source = None
        result.latents = out.float().cpu()
        # complete once the windows are done (a streamed file's record, written first, has the mode only)
        result.settings["cache"] = {**result.settings["cache"], **self.pipe.cache_tally.record(self.full.cache)}
        if self.state is not None and self.keep_state:
            self.state.unlink(missing_ok=True)

    def _temporal_upscale(self, out: Tensor) -> Tensor:
        """The fused latents ``[1, C, T, h, w]`` -> ``[1, C, 2T - 1, h, w]`` (:meth:`Pipeline._temporal_upscale`),
        once every window is done, as ComfyUI's ``LTXVLatentUpsampler`` takes the looping sampler's whole output;
        the latents are small next to the pixels, which are still decoded tile by tile."""
        import torch

        pipe = self.pipe
        t0 = time.perf_counter()
        with torch.inference_mode():
            up = pipe._temporal_upscale(out.to(pipe.device)).float()
        self.timings["denoise_s"] += pipe._elapsed(t0)
        return up

    def _encode_source(self, chunks: Iterator[Tensor]) -> Tensor:
        """Video-to-video: the whole input's pixels ``[1, 3, 8 (T - 1) + 1, H, W]`` as prepared chunks
        (:func:`ltxcli.conditions.source_chunks`, decoded from the file as they are taken) -> its normalised latents
        ``[1, C, T, h, w]`` (float32, CPU), encoded once in the VAE encoder's stage, a chunk at a time, as
        :meth:`ltxcli.pipeline.Pipeline.run` encodes a plain v2v's input (bit for bit the latents of the whole
        input's pixels, ``chunked_encode(prepare_video(...))``; the host holds one chunk's pixels, not the input's),
        in the largest chunks that fit the memory free there (:func:`ltxcli.memory.encode.fitting_chunk`).
        Each window starts from its own latent frames ``[start, end)`` of them, noised to its first timestep
        (ComfyUI-LTXVideo's looping sampler slices the input's latents into each tile's
        ``optional_initialization_latents``); they are 1/192 of the pixels."""
        import torch

        from .memory.encode import source_hold

        pipe, shape = self.pipe, (1, 3, self.full.padded[2], *self.full.padded[:2])  # [B, 3, F, H, W] of the input
        held = source_hold(pipe.vae.config, shape, latents=True)  # a read piece's pixels, the latents made (the plan's)
        t0 = time.perf_counter()
        with torch.inference_mode(), pipe._stage(pipe.vae.encoder):
            latents = pipe._encode_chunks(chunks, shape, held=held).float().cpu()
        self.timings["denoise_s"] += pipe._elapsed(t0)  # (as Pipeline.run counts the encoder stage)
        return latents

    def _control_frames(self) -> Tensor | None:
        """The whole video's IC-LoRA control frames ``[F, H, W, 3]`` (float32, CPU; None without a control), read
        and made (Canny, depth) once before the text encoder, as :meth:`Pipeline.run` prepares a control. Held for
        the whole run (``12 H W`` bytes a frame): each window slices its own span from it."""
        import torch

        from .control import control_frames

        pipe, c = self.pipe, self.full.control
        if c is None:
            return None
        with torch.inference_mode():  # a depth control's model runs (and is released) here, in its own stage
            return control_frames(c, self.full, device=pipe.device, dtype=pipe.dtype, depth_model=pipe.depth_model,
                                  weights_dir=pipe.weights_dir)

    def _encode_texts(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Each distinct prompt encoded once (the text encoder is released afterwards when the pipeline says so)."""
        from . import sampling
        from .passes import as_list

        pipe = self.pipe
        t0 = time.perf_counter()
        need_negative = any(sampling.cfg_active(g) for q in self.full.passes for g in as_list(q.guidance_scale))
        free, pipe.free_text_encoder_after_use = pipe.free_text_encoder_after_use, False
        prompts = list(dict.fromkeys(w.prompt for w in self.plan.windows))
        texts = {}
        try:
            import torch

            with torch.inference_mode():
                for j, prompt in enumerate(prompts):
                    pipe.free_text_encoder_after_use = free and j == len(prompts) - 1
                    rewrite = rewrite_of(self.plan.request.enhanced_prompt, prompt)
                    texts[prompt] = pipe._encode_text(replace(self.full, prompt=prompt, enhanced_prompt=rewrite),
                                                      need_negative, self.progress)
        finally:
            pipe.free_text_encoder_after_use = free
        self.timings["text_encoding_s"] += time.perf_counter() - t0
        return texts

    def _denoise_window(self, i: int, text: tuple[Tensor, Tensor], out: Tensor | None) -> Tensor:
        import torch

        from .conditions import EncodedCondition, in_window, prepare_conditions
        from .control import window_control

        p, pipe = self.plan, self.pipe
        w = p.windows[i]
        ph, pw = self.full.pass_sizes()[0]
        shape = (1, pipe.transformer.config.in_channels, w.end - w.start, ph // 32, pw // 32)
        noise = self.window_noise(i, shape) if self.window_noise is not None else None
        r = _one_pass(pipe.resolve(p.window_request(i, noise), window=True))
        sizes = r.pass_sizes()
        t0 = time.perf_counter()
        with torch.inference_mode():
            with in_window(f"{p.made().index(i) + 1}/{len(p.windows)}", w.first_frame, p.num_frames):
                prepared = prepare_conditions(r)  # (the input: read once, self.source)
            # the control frames of this window's span, encoded as a video of its own: exactly a one-window run's
            control = window_control(self.control, r, w.first_frame) if self.control is not None else None
            encoded, _ = pipe._encode_conditions(prepared, None, sizes, control)
            conds = list(encoded[0])
            k = min(p.overlap_latents, out.shape[2]) if out is not None else 0
            if out is not None and k > 0 and p.overlap_strength > 0:
                # the previous window's tail at this window's head; backward the next window's head (made
                # before it) at its tail: its last k of T latent frames, pixel frame 8 (T - k) on
                tail = (out[:, :, :k] if p.backward else out[:, :, -k:]).to(pipe.device)
                at = _LATENT_T * (w.end - w.start - k) if p.backward else 0
                conds.append(EncodedCondition(tail, _LATENT_T * (k - 1) + 1, at, p.overlap_strength, append=True))
            gen = torch.Generator("cpu").manual_seed(w.seed)
            progress = None
            if self.progress is not None:  # one bar per window: "denoising" would read as a multi-scale pass
                label, outer = f"window {p.made().index(i) + 1}/{len(p.windows)}", self.progress

                def progress(stage: str, done: int, total: int) -> None:
                    outer(label if stage == "denoise" else stage, done, total)
            init = self.source[:, :, w.start: w.end] if self.source is not None else None  # [1, C, T, h, w]
            lat = pipe._denoise_passes(r, text[0], text[1], sizes, [conds], init, gen, progress)
        self.timings["denoise_s"] += pipe._elapsed(t0)
        return lat.float()

    def decode_tile(self, latents: Tensor, start: int) -> Tensor:
        """Decoder output ``[1, 3, n, H', W']`` in [-1, 1] of latent frames ``start ..`` (decode noise from a
        generator seeded by the run's seed and ``start``)."""
        import torch

        pipe, r = self.pipe, self.full
        t0 = time.perf_counter()
        seed = self.plan.request.seed  # the run's (the first window's)
        assert seed is not None
        gen = torch.Generator("cpu").manual_seed(seed + start)
        # The decode noise fills the latents' own layout (as the official randn_like does); a tile's layout is
        # that of whatever it was cut from (a window's channels-last output, a blend, a resume state read back),
        # so it is fixed here: the same tile gets the same noise however the run got to it.
        latents = latents.contiguous(memory_format=torch.channels_last_3d)
        probe = SimpleNamespace(decode_plan=None)  # the tile's VAE plan, which a latents file records
        with torch.inference_mode():
            (pixels,) = pipe._decoded(latents.to(pipe.device), r.decode_timestep, r.decode_noise_scale,
                                      r.passes[-1].tone_map_compression_ratio, gen, chunks=False, into=probe)
        self.tile_plans.append(probe.decode_plan)
        self.timings["decode_s"] += pipe._elapsed(t0)
        return pixels

    # -- resume ----------------------------------------------------------------------------------------------

    def _load_state(self) -> tuple[Tensor | None, Tensor | None, int]:
        # none, another run's, or unreadable: start over (the file is replaced by the next window's)
        saved, self.saved = self.saved, {}  # not held while the windows run on from it
        if saved.get("hash") != self.hash:
            if self.state is not None and self.state.is_file() and self.keep_state:  # once, by the writing rank
                # a changed option (or model, LoRA) would otherwise lose the kept windows without a word
                warnings.warn(f"{self.state.name}: the kept windows were made with other settings (request, model "
                              "or LoRAs) or cannot be read: starting over", stacklevel=2)
            return None, None, 0
        # read to the host (long_state); the windows fuse on the device: a resumed run joins the next window there
        device = self.pipe.device
        return saved["out"].to(device), saved["first"].to(device), int(saved["done"])

    def _save_state(self, out: Tensor, first: Tensor, done: int) -> None:
        import torch

        if self.state is None or not self.keep_state or done >= len(self.plan.windows):
            return
        tmp = self.state.with_name(self.state.name + ".tmp")
        self.state.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"hash": self.hash, "seed": self.plan.request.seed, "out": out.cpu(), "first": first.cpu(),
                    "done": done}, tmp)
        os.replace(tmp, self.state)


__all__ = [
    "DEFAULT_ADAIN", "DEFAULT_OVERLAP", "DEFAULT_OVERLAP_STRENGTH", "DEFAULT_WINDOW", "OPTION_HELP",
    "LongPlan", "Window", "bar_prompts", "check", "check_seed", "check_window_time", "checked_frames", "fuse",
    "generate", "plan", "request_hash", "split_windows", "state_path", "temporal_upscaler", "window_frames",
    "window_prompts", "windowed",
]
