"""The video VAE of a model on its own: encode videos to latents, decode latents, measure the reconstruction.

This is ``ltx vae encode|decode|roundtrip`` as a library. Videos are fitted to the VAE's grid (:func:`fit_to_grid`:
``8k + 1`` frames, centre-cropped to multiples of 32 px). Latents files are safetensors with one tensor
``latents`` ``[1, C, f, h, w]`` (float32, normalised as the transformer sees them), the encoding VAE's
per-channel statistics ``vae_statistics`` ``[2, C]`` (mean of means, std of means: which VAE the latents belong to)
and string metadata: format, model, frame_rate, height, width, num_frames, source, ltxcli_version. A generation's
latents (``ltx generate --latents-out``) add ``decode``: how that generation decoded them (:class:`DecodeSettings`),
which :meth:`VideoAutoencoder.decode_as` repeats, to the video's very frames.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from . import __version__, media, sampling, sizes, tiny, weights
from .field_values import is_int
from .formatting import shell_word
from .frames import crop_video
from .kernels import synchronize
from .loading import CheckpointError, inspect_checkpoint, load_vae
from .long_decode import DECODE_BLEND, TiledDecode
from .media import MediaError, VideoStream
from .metrics import FrameQuality, frame_quality, peak_memory
from .models.upcast import compute_dtype
from .models.winograd import parse_conv_algorithm
from .naming import fps_number
from .paths import user_path
from .request import SEED_MAX
from .sizes import MAX_FRAME_RATE, padded_size, split_pad
from .vae_tiling import plan_windows, tiled_decode

if TYPE_CHECKING:
    from .result import GenerationResult

LATENTS_FORMAT = "ltxcli.latents"
LATENTS_KEY = "latents"
STATISTICS_KEY = "vae_statistics"
DECODE_KEY = "decode"  # metadata: how the generation that wrote the file decoded them (DecodeSettings, JSON)
SPATIAL_GRID = 32
TEMPORAL_GRID = 8
DEFAULT_IMAGE_FPS = 24  # frame rate recorded for a single image

PathLike = str | os.PathLike[str]


@dataclass
class VideoAutoencoder:
    """A loaded causal video VAE (``module``, in eval mode), the model's name and its preset's decode timestep."""

    module: nn.Module
    label: str
    decode_timestep: float

    @property
    def device(self) -> torch.device:
        return self.module.decoder.conv_in.conv.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return compute_dtype(self.module.decoder.conv_in.conv)

    @property
    def statistics(self) -> Tensor:
        """The per-channel latent statistics ``[2, C]`` float32 (mean of means, std of means) that normalise its
        latents: they tell VAEs of the same latent width apart (0.9, 0.9.1, 0.9.5+)."""
        return vae_statistics(self.module)

    @property
    def latent_channels(self) -> int:
        return int(self.module.latent_channels)

    def encode(self, video: Tensor | VideoStream) -> Tensor:
        """Float ``[F, H, W, 3]`` in [0, 1] (on the grid) -> normalised latents ``[1, C, f, h, w]`` float32 on the CPU
        (the posterior's mode). A :class:`VideoStream` is decoded a chunk of the encode at a time: the same latents.
        The chunk: the largest that fits the memory free now (:func:`ltxcli.memory.encode.fitting_chunk`)."""
        from . import vae_encode
        from .memory.encode import fitting_chunk

        f, chunk = video.shape[0], fitting_chunk(self.module, (1, 3, *video.shape[:3]), self.device)  # [B, 3, F, H, W]
        # a stream decoded in the encode's own chunks (chunk_frames: none cut or joined), one at a time
        pieces = video.pieces(vae_encode.chunk_frames(self.module.config, f, chunk)) if isinstance(video, VideoStream) \
            else [video]
        # [n, H, W, 3] in [0, 1] -> [1, 3, n, H, W] in [-1, 1]; map holds no piece while its pixels are encoded
        pixels = map(lambda x: x.permute(3, 0, 1, 2)[None] * 2 - 1, pieces)
        with torch.inference_mode():  # a long clip in time chunks, each on the device in turn: the one-call latents
            lat = vae_encode.encode_chunks(self.module, pixels, f, chunk=chunk, device=self.device, dtype=self.dtype)
        return lat.float().cpu()

    def decode(self, latents: Tensor, timestep: float | None = None, seed: int = 0) -> Tensor:
        """Normalised latents ``[1, C, f, h, w]`` -> float ``[F, H, W, 3]`` in [0, 1] on the CPU (no decode noise:
        the VAE's own reconstruction). ``timestep`` (default: :attr:`decode_timestep`) is used only by
        timestep-conditioned VAEs; ``seed`` seeds their noise injection (0.9.1)."""
        t = (self.decode_timestep if timestep is None else timestep) if self.module.timestep_conditioning else None
        gen = torch.Generator("cpu").manual_seed(seed)
        with torch.inference_mode():
            video = self.module.decode(latents.to(device=self.device, dtype=self.dtype), timestep=t, generator=gen)
        return (video.float() / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 3, 0).cpu()

    def decode_as(self, latents: Tensor, d: DecodeSettings, timestep: float | None = None,
                  seed: int | None = None) -> Tensor:
        """Normalised latents ``[1, C, f, h, w]`` -> float ``[F, H, W, 3]`` in [0, 1] on the CPU as the generation
        that recorded ``d`` decoded them (:meth:`ltxcli.pipeline.Pipeline.run`'s decode stage): decode noise drawn
        in its memory layout from its seed, its tone mapping and decode timestep, by its VAE convolutions (the
        module's own are set back after), then its crop to the video's size. ``timestep``, ``seed``: given, they
        replace the recorded ones."""
        t = (d.timestep if timestep is None else timestep) if self.module.timestep_conditioning else None
        base = d.seed if seed is None else seed
        crop = dict(num_frames=d.num_frames, padded=d.padded, padding=d.padding, resize=d.resize)
        own = self.module.conv_algorithm
        try:
            if d.vae_conv is not None:  # Winograd and direct convolutions round differently
                self.module.set_conv_algorithm(d.vae_conv)
            if d.tiles is None:
                # the latents in the generation's layout (channels-last in practice): its decode noise was drawn in it
                z = torch.empty_strided(latents.shape, d.stride, dtype=latents.dtype).copy_(latents)
                pixels = self._decode_noised(z, d, t, base, d.plan)
                with torch.inference_mode():  # (crop_video scales the inference tensor in place)
                    return crop_video(pixels, **crop)[d.first_frame :].cpu()
            # a long video's fused latents, decoded in temporal tiles as its windows settled (ltxcli.long_video):
            # each tile channels-last (its noise layout there), its noise seeded by the seed plus its first frame
            plans = iter(d.tiles["plans"])
            tiles = TiledDecode(lambda z, start: self._decode_noised(z.contiguous(
                memory_format=torch.channels_last_3d), d, t, base + start, next(plans)),
                lambda pixels, start: crop_video(pixels, **crop, start=start), d.tiles["length"])
            return torch.cat(list(tiles.ready(latents, latents.shape[2], final=True)))[d.first_frame :]
        finally:
            self.module.set_conv_algorithm(own)

    def _decode_noised(self, z: Tensor, d: DecodeSettings, t: float | None, seed: int,
                       plan: dict[str, Any] | None) -> Tensor:
        """Latents ``[1, C, f, h, w]`` -> the decoder's output ``[1, 3, F, H, W]`` in [-1, 1] as the pipeline's
        decode stage makes it: decode noise from ``seed`` (timestep-conditioned decoders only), ``d``'s tone
        mapping, then one decode or the windows of ``plan`` (they round unlike a whole decode)."""
        gen = torch.Generator("cpu").manual_seed(seed)
        with torch.inference_mode():
            z = z.to(self.device)
            if t is not None:  # as the pipeline: noise only for a timestep-conditioned decoder
                z = sampling.decode_noise(z, d.noise_scale, gen)
            z = sampling.tone_map(z, d.tone_map_compression_ratio)
            return (self.module.decode(z, timestep=t, generator=gen) if plan is None else
                    tiled_decode(self.module, z, timestep=t, generator=gen, out_device="cpu", **plan))


def vae_statistics(vae: nn.Module) -> Tensor:
    """A VAE module's per-channel latent statistics ``[2, C]`` float32 on the CPU (mean of means, std of means)."""
    stats = vae.per_channel_statistics
    return torch.stack([stats.mean_of_means, stats.std_of_means]).float().cpu()


@dataclass(frozen=True)
class DecodeSettings:
    """How a generation decoded its final latents (``Pipeline.run``'s decode stage), as a latents file records
    them: the decode ``timestep``, decode ``noise_scale`` drawn from ``seed`` in the latents' memory layout
    ``stride``, the last pass's ``tone_map_compression_ratio``; then the decoded frames cropped to the video
    (:func:`ltxcli.frames.crop_video`: ``num_frames``, ``padded`` ``(height, width)``, ``padding`` ``(left, right,
    top, bottom)``, ``resize``: a multi-scale run's). ``vae_conv``: the VAE's 3x3x3 convolution algorithm in that
    decode (:class:`~ltxcli.models.winograd.ConvAlgorithm`'s value, as resolved at load: a CPU's measured choice
    for ``--vae-conv auto`` included); None: not recorded (files written before it), the decoding VAE's own.
    ``plan``: the windows the decode ran in (:func:`~ltxcli.vae_tiling.tiled_decode`'s keyword arguments: a tiled
    decode's, or on the CPU the streamed head's); None: one whole ``vae.decode`` (or not recorded). ``tiles``: a
    long video's decode of its fused latents in temporal tiles (:class:`~ltxcli.long_decode.TiledDecode`:
    ``{"length", "plans"}``, each tile's ``plan``; its noise seeded by ``seed`` plus its first latent frame, in the
    channels-last layout); None: one decode as above. ``first_frame``: the first of the cropped frames the video
    holds (an extension's first new frame: its generation's context frames, the input's own in the video, dropped)."""

    timestep: float
    noise_scale: float
    seed: int
    tone_map_compression_ratio: float
    stride: tuple[int, ...]
    num_frames: int
    padded: tuple[int, int]
    padding: tuple[int, int, int, int]
    resize: bool
    vae_conv: str | None = None
    plan: dict[str, Any] | None = None
    tiles: dict[str, Any] | None = None
    first_frame: int = 0

    @classmethod
    def of(cls, result: GenerationResult) -> DecodeSettings:
        """The decode of ``result``: a single generation's (:meth:`ltxcli.pipeline.Pipeline.run`), or a long video's
        in temporal tiles (:mod:`ltxcli.long_video`: ``tiles``, the seed its tiles' noise counts from)."""
        s, tiles = result.settings, result.decode_tiles
        start, end = result.kept_frames or (0, s["num_frames"])  # (an extension's settings count the output's)
        ph, pw, _ = padded_size(s["height"], s["width"], end)
        return cls(float(s["decode_timestep"]), float(s["decode_noise_scale"]),
                   int(result.seed if tiles is None else tiles["seed"]),
                   float(s["passes"][-1]["tone_map_compression_ratio"]), tuple(result.latents.stride()),
                   int(end), (ph, pw), (*split_pad(pw - s["width"]), *split_pad(ph - s["height"])),
                   bool(s["multi_scale"]), str(s["vae_conv"]), result.decode_plan,
                   None if tiles is None else {"length": int(tiles["length"]), "plans": list(tiles["plans"])}, int(start))

    def to_json(self) -> str:
        return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()})

    @classmethod
    def read(cls, meta: dict[str, str], shape: tuple[int, ...], path: PathLike) -> DecodeSettings | None:
        """The settings a latents file's metadata records for latents of ``shape`` (None: none recorded, as in
        a file of ``ltx vae encode``); a malformed record is a :class:`~ltxcli.media.MediaError`."""
        text = meta.get(DECODE_KEY)
        if text is None:
            return None
        try:
            v = json.loads(text)
            d = cls(float(v["timestep"]), float(v["noise_scale"]), _int(v["seed"], "seed"),
                    float(v["tone_map_compression_ratio"]), tuple(_int(x, "stride") for x in v["stride"]),
                    _int(v["num_frames"], "num_frames"), (_int(v["padded"][0], "padded"), _int(v["padded"][1], "padded")),
                    tuple(_int(x, "padding") for x in v["padding"]),  # type: ignore[arg-type]
                    _flag(v["resize"], "resize"), None if v.get("vae_conv") is None else str(parse_conv_algorithm(v["vae_conv"])),
                    _plan(v.get("plan")), _tiles(v.get("tiles")), _int(v.get("first_frame", 0), "first_frame"))
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise MediaError(f"{path}: its '{DECODE_KEY}' record is not readable ({type(e).__name__}: {e})") from None
        if (misfit := d._misfit(shape, v)) is not None:
            raise MediaError(f"{path}: its '{DECODE_KEY}' record does not fit latents {list(shape)}: {misfit}")
        return d

    def _misfit(self, shape: tuple[int, ...], recorded: dict[str, Any]) -> str | None:
        """The first field (``name=value must be ...``, the value as ``recorded``) that latents of ``shape``
        ``[1, C, f, h, w]`` cannot be decoded with (a hand-edited record: the pipeline never writes one), or None."""
        f, h, w = shape[2:]
        frames = TEMPORAL_GRID * (f - 1) + 1  # what the latents decode to, before the crop
        (ph, pw), (left, right, top, bottom) = self.padded, (*self.padding, 0, 0, 0, 0)[:4]
        grid = (SPATIAL_GRID * h, SPATIAL_GRID * w)  # a multi-scale run's frames are resized to padded first
        checks = (
            ("timestep", 0 <= self.timestep <= 1, "in [0, 1]"),  # a noise level, as a request's; NaN fails both
            ("noise_scale", 0 <= self.noise_scale <= 1, "in [0, 1]"),
            ("seed", 0 <= self.seed <= SEED_MAX, "in [0, 2**63 - 1]"),
            ("tone_map_compression_ratio", 0 <= self.tone_map_compression_ratio <= 1, "in [0, 1]"),
            ("stride", _dense(shape, self.stride), f"a dense layout of {list(shape)}"),
            ("num_frames", 1 <= self.num_frames <= frames, f"in [1, {frames}] (the frames the latents decode to)"),
            ("first_frame", 0 <= self.first_frame < self.num_frames, f"in [0, {self.num_frames - 1}] (below num_frames)"),
            ("padded", len(recorded["padded"]) == 2 and min(self.padded) > 0 and (self.resize or self.padded == grid),
             f"{list(grid)} (the latents' size in pixels)"),
            ("padding", len(self.padding) == 4 and min(self.padding) >= 0 and left + right < pw and top + bottom < ph,
             "4 sizes >= 0 (left, right, top, bottom) that leave pixels of padded"),
        )
        for name, ok, want in checks:
            if not ok:
                return f"{name}={json.dumps(recorded[name])} must be {want}"
        return None


def _flag(value: Any, name: str) -> bool:
    """A recorded JSON boolean (``bool("false")`` would be True: a string is a ValueError)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={json.dumps(value)} must be true or false")
    return value


def _int(value: Any, name: str) -> int:
    """A recorded JSON integer (``int(1.5)`` is 1 and ``int(true)`` 1: decoded as if the record said 1, so either
    is a ValueError); an integral float (``9.0``) is its integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not is_int(value):  # (a bool is not); a huge JSON integer stays an int, unrounded
        raise ValueError(f"{name}={json.dumps(value)} must be an integer")
    return int(value)


def _tiles(value: Any) -> dict[str, Any] | None:
    """A recorded temporal tiling (``{"length": n, "plans": [plan or null per tile]}``); anything else is a
    ValueError. Whether its tiles fit the latents is :func:`check_plan`'s."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"length", "plans"} or not isinstance(value["plans"], list):
        raise ValueError(f"tiles {value!r} is not a temporal tiling ({{\"length\": n, \"plans\": [...]}})")
    return {"length": _int(value["length"], "length"), "plans": [_plan(p) for p in value["plans"]]}


def _plan(value: Any) -> dict[str, Any] | None:
    """A recorded decode plan (JSON: tuples as lists) as :func:`~ltxcli.vae_tiling.tiled_decode` takes it; a key
    it does not take, or a value that is not an integer (a pair of them for ``tile_hw``), is a ValueError. Whether
    the decoder can run it is :func:`check_plan`'s."""
    if value is None:
        return None
    if not isinstance(value, dict) or not set(value) <= PLAN_KEYS:
        raise ValueError(f"plan {value!r} is not a tiled decode's settings")
    plan = {k: tuple(_int(x, k) for x in v) if isinstance(v, list) else None if v is None else _int(v, k)
            for k, v in value.items()}
    pair = isinstance(plan.get("tile_hw"), tuple) and len(plan["tile_hw"]) != 2
    if pair or any(isinstance(v, tuple) for k, v in plan.items() if k != "tile_hw"):
        raise ValueError(f"plan {value!r}: tile_hw is one size or (height, width), the others one number each")
    return plan


def check_plan(vae: VideoAutoencoder, latents: Tensor, d: DecodeSettings, path: PathLike) -> None:
    """A recorded decode ``plan`` that ``vae``'s decoder cannot run on ``latents`` (a split block it does not have,
    a tile under 1, an overlap as large as its tile, a negative context: a hand-edited file) is a
    :class:`~ltxcli.media.MediaError` naming the file and the field, before any decoding."""
    f, h, w = latents.shape[2:]
    if d.tiles is None:
        plans, spans = [d.plan], [f]
    else:  # TiledDecode's tiles: length + 1 latent frames, length - DECODE_BLEND apart (the last one shorter)
        n, plans = d.tiles["length"], d.tiles["plans"]
        spans = [min(n + 1, f - a) for a in range(0, f, max(n - DECODE_BLEND, 1))] if n >= 1 else []
        if n < 1 or len(plans) != len(spans):  # n < 1: no tile, so an empty list of plans would match
            want = (f"length={n} must be at least 1" if n < 1 else f"plans must hold one plan per tile ({len(spans)} "
                    f"tiles of length {n}), not {len(plans)}")
            raise MediaError(f"{path}: its '{DECODE_KEY}' record's tiles {json.dumps(d.tiles)} do not fit latents "
                             f"{list(latents.shape)}: {want}")
    for i, (plan, frames) in enumerate(zip(plans, spans, strict=True)):
        try:
            if plan is not None:
                plan_windows(vae.module.config, (frames, h, w), **plan)
        except ValueError as e:
            field = "plan" if d.tiles is None else f"tiles' plan {i}"
            raise MediaError(f"{path}: its '{DECODE_KEY}' record's {field} {json.dumps(plan)} cannot be decoded "
                             f"({e})") from None


PLAN_KEYS = frozenset({"split_block", "tile_hw", "overlap_hw", "context_hw", "chunk_frames", "overlap_frames",
                       "context_frames"})


def _dense(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Whether ``stride`` lays out a tensor of ``shape`` densely, each element once (an order of its dimensions)."""
    if len(stride) != len(shape) or min(stride, default=0) < 0:
        return False
    expect = 1
    for st, size in sorted((st, size) for st, size in zip(stride, shape, strict=True) if size > 1):
        if st != expect:
            return False
        expect *= size
    return True


def load_autoencoder(
    source: PathLike, *, label: str, decode_timestep: float, device: torch.device, dtype: torch.dtype
) -> VideoAutoencoder:
    """The VAE of a single-file checkpoint or a diffusers folder; ``source="tiny"`` builds the built-in model's.

    A file without VAE weights is a :class:`~ltxcli.loading.CheckpointError` (found from its header, before
    any weight is read)."""
    if isinstance(source, str) and source == "tiny":
        return VideoAutoencoder(tiny.build_pipeline(device, dtype).vae, label, decode_timestep)
    if inspect_checkpoint(source).vae is None:
        raise CheckpointError(f"{source}: has no VAE")
    return VideoAutoencoder(load_vae(source, device=device, dtype=dtype), label, decode_timestep)


# ------------------------------------------------------------------------------------------------ videos


def fit_to_grid(video: Tensor, name: PathLike = "video") -> Tensor:
    """``[F, H, W, 3]`` trimmed to ``8k + 1`` frames and centre-cropped to multiples of 32 (the VAE's grid).

    A frame smaller than 32x32 is a :class:`~ltxcli.media.MediaError` naming ``name``."""
    (f2, h2, w2), top, left = _grid_box(video.shape[:3], name)
    return video[:f2, top : top + h2, left : left + w2].contiguous()


def _grid_box(shape: tuple[int, ...], name: PathLike) -> tuple[tuple[int, int, int], int, int]:
    """:func:`fit_to_grid`'s frames, height and width of a ``[F, H, W]`` video, and its crop's top and left."""
    f, h, w = shape
    h2, w2 = h // SPATIAL_GRID * SPATIAL_GRID, w // SPATIAL_GRID * SPATIAL_GRID
    if h2 == 0 or w2 == 0:
        raise MediaError(f"{name}: {w}x{h} is smaller than the VAE's {SPATIAL_GRID}x{SPATIAL_GRID} grid")
    return ((f - 1) // TEMPORAL_GRID * TEMPORAL_GRID + 1, h2, w2), (h - h2) // 2, (w - w2) // 2


def read_video(path: PathLike, max_frames: int | None = None, *, stream: bool = False
               ) -> tuple[Tensor | VideoStream, Fraction]:
    """A video (or an image) as float ``[F, H, W, 3]`` in [0, 1] and its frame rate (24 for an image), NOT yet
    fitted to the grid, so a caller can say when :func:`fit_to_grid` changes it. ``stream``: a video file
    (:func:`ltxcli.media.is_video_file`) as a :class:`VideoStream`, its frames counted (decodable packets) and its
    first decoded, not the rest."""
    path = user_path(path)  # a quoted "~/a.mp4" argument: no shell expanded it
    if stream and media.is_video_file(path):
        (h, w, _), n = next(media.iter_video(path, 1)).shape, media.source_frame_count(path, max_frames, quick=True)
        video: Tensor | VideoStream = VideoStream(Path(path), (n, h, w, 3))
    else:
        decoded = media.read_media(path, max_frames=max_frames)
        if len(decoded.frames) == 1 or Path(path).suffix.lower() in media.VIDEO_SUFFIXES:
            # as ltx v2v: an animated image (read as its first frame) refused; a video's frames past the damage or
            # cut, which do not decode, warned of (counted from this decoding, not decoded again)
            media.source_frame_count(decoded, max_frames)
        video = decoded.pixels()
    rate = media.video_frame_rate(path) if video.shape[0] > 1 else Fraction(DEFAULT_IMAGE_FPS)
    return video, rate


@overload
def read_fitted(path: PathLike, max_frames: int | None = None, *, writes_video: bool = False,
                stream: Literal[False] = False) -> tuple[Tensor, Fraction, str | None]: ...
@overload
def read_fitted(path: PathLike, max_frames: int | None = None, *, writes_video: bool = False,
                stream: bool) -> tuple[Tensor | VideoStream, Fraction, str | None]: ...
def read_fitted(path: PathLike, max_frames: int | None = None, *, writes_video: bool = False, stream: bool = False
                ) -> tuple[Tensor | VideoStream, Fraction, str | None]:
    """:func:`read_video` fitted to the grid (:func:`fit_to_grid`), with the note to show when that changed it
    (else None). ``max_frames`` under 1 is a ValueError. ``writes_video``: its frames are to be written at its
    rate (``ltx vae roundtrip -o``): a rate outside the writer's is a ValueError now, before any VAE work.
    ``stream``: a video file as a :class:`VideoStream` (:func:`read_video`)."""
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"--max-frames={max_frames} must be at least 1")
    video, rate = read_video(path, max_frames, stream=stream)
    low = f"{float(sizes.MIN_FRAME_RATE):g}"  # an MP4 takes down to 1/99999 fps, the writer 1/1000
    side, bound = (f"above the {MAX_FRAME_RATE}", f"at most {MAX_FRAME_RATE}") if rate > MAX_FRAME_RATE else \
        (f"below the {low}", f"at least {low}")
    outside = None if sizes.is_frame_rate(rate) else f"{user_path(path)} is {float(rate):g} fps, {side} a video is written at"
    if writes_video and outside:
        raise ValueError(f"{outside}: -o cannot write its reconstruction (leave -o out to measure it)")
    (f2, h2, w2), top, left = _grid_box(video.shape[:3], path)  # a stream: cropped as its frames are decoded
    fitted = VideoStream(video.path, (f2, h2, w2, 3), top, left) if isinstance(video, VideoStream) else fit_to_grid(video, path)
    # a rate the writer refuses: said now (the latents record it as it is), not first by `ltx vae decode`'s refusal
    fast = f"{outside}: decoding it to a video needs --frame-rate ({bound})" if outside else None
    if fitted.shape == video.shape:
        return fitted, rate, fast
    (f, h, w), (f2, h2, w2) = video.shape[:3], fitted.shape[:3]
    return fitted, rate, (f"using {f2} frames of {w2}x{h2} (the VAE needs 8k+1 frames and multiples of 32; input "
                          f"is {f} frames of {w}x{h})" + (f"; {fast}" if fast else ""))


def check_decode_timestep(decode_timestep: float | None) -> None:
    """``--decode-timestep``: None or a noise level in [0, 1], as a request's (a ValueError otherwise)."""
    if decode_timestep is not None and not 0 <= decode_timestep <= 1:  # NaN fails both comparisons
        raise ValueError(f"--decode-timestep={decode_timestep} must be in [0, 1] (a noise level, e.g. 0.05)")


def check_frame_rate(frame_rate: float | None) -> None:
    """``--frame-rate``: None or a rate a video is written at (:func:`ltxcli.sizes.check_frame_rate`)."""
    if frame_rate is not None:
        sizes.check_frame_rate(frame_rate, "--frame-rate")


def check_target(target: Path, *, overwrite: bool, suffix: str, option: str = "-o") -> Path:
    """Before any work, an output ``target`` (given as ``option``) refused: another suffix than ``suffix`` (".mp4": a video,
    ".safetensors": latents) or one that exists without ``overwrite`` (ValueError); a folder, or a place where
    it cannot be made (:class:`~ltxcli.runner.OutputError`, as ``ltx generate`` says it). Returns the file that will
    be written (a leading ``~`` expanded): the path to report, as ``ltx generate`` reports its output."""
    from .runner import OutputError, check_writable

    target = Path(user_path(target))  # the place write_video and save_latents write
    if target.name.lower() == suffix:  # ".safetensors" alone is a hidden name with no suffix (Path: suffix "")
        stem = "latents" if suffix == ".safetensors" else "video"
        raise ValueError(f"{option} {target}: give the file a name before {suffix} (e.g. {stem}{suffix})")
    if target.suffix.lower() != suffix:
        kind = "latents are written as .safetensors" if suffix == ".safetensors" else f"videos are written as {suffix}"
        raise ValueError(f"{option} {target}: {kind}")
    if target.is_dir():  # first: --overwrite would not help
        raise OutputError(f"cannot write {target}: it is a folder")
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise ValueError(f"{target} already exists: pass --overwrite to replace it")
    check_writable(target)
    return target


def write_video(target: Path, video: Tensor, rate: float | Fraction, record: dict[str, Any], *,
                overwrite: bool = False) -> None:
    """:func:`ltxcli.media.write_video` into ``target``, its folder made now (so a failure before leaves none)."""
    target = Path(user_path(target))  # a quoted "-o ~/x.mp4": not a folder named ~
    target.parent.mkdir(parents=True, exist_ok=True)
    media.write_video(target, video, rate, metadata=record, overwrite=overwrite)


# ------------------------------------------------------------------------------------------------ latents files


def frame_rate_text(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


def _metadata(model: str, frame_rate: str, height: int, width: int, num_frames: int, source: str) -> dict[str, str]:
    """The string metadata every latents file carries (the module docstring's list)."""
    return {"format": LATENTS_FORMAT, "model": model, "frame_rate": frame_rate, "height": str(height),
            "width": str(width), "num_frames": str(num_frames), "source": source, "ltxcli_version": __version__}


def latents_metadata(vae: VideoAutoencoder, video: Tensor | VideoStream, rate: Fraction, source: PathLike) -> dict[str, str]:
    """The string metadata of a latents file encoded from ``video`` ``[F, H, W, 3]``."""
    f, h, w = video.shape[:3]
    return _metadata(vae.label, frame_rate_text(rate), h, w, f, user_path(source))


def save_latents(path: PathLike, latents: Tensor, metadata: dict[str, str], *, overwrite: bool = False,
                 statistics: Tensor | None = None) -> Path:
    """Write a latents file atomically (:func:`~ltxcli.media.atomic_output`; its folder made now), with the VAE's
    ``statistics`` (:attr:`VideoAutoencoder.statistics`) when given, for :func:`check_latents`; returns where
    (``~`` expanded)."""
    target = Path(user_path(path))
    tensors = {LATENTS_KEY: latents.contiguous()}
    if statistics is not None:
        tensors[STATISTICS_KEY] = statistics.float().contiguous()
    target.parent.mkdir(parents=True, exist_ok=True)
    with media.atomic_output(target, overwrite=overwrite) as temp:
        save_file(tensors, os.fspath(temp), metadata=metadata)
    return target


def save_generation_latents(path: PathLike, result: GenerationResult, *, vae: nn.Module, model: str,
                            source: PathLike, overwrite: bool = False) -> Path:
    """Write a generation's final latents (``result.latents``, before decode noise) as :func:`save_latents` does,
    with the VAE's statistics and how the generation decoded them (:class:`DecodeSettings`), so that
    ``ltx vae decode`` gives the video ``source`` holds (an extension's: its new frames, ``result.kept_frames``).
    ``model``: the name the video records."""
    s, d = result.settings, DecodeSettings.of(result)
    meta = {**_metadata(model, str(fps_number(s["frame_rate"])), s["height"], s["width"], d.num_frames - d.first_frame,
                        str(source)), DECODE_KEY: d.to_json()}
    # where save_latents wrote: --latents-out=~/x.safetensors, expanded
    return save_latents(path, result.latents, meta, overwrite=overwrite, statistics=vae_statistics(vae))


def latents_source(path: PathLike) -> str | None:
    """The ``source`` a latents file records (the video a generation's latents belong to), None when ``path`` is
    not a readable latents file."""
    try:
        with safe_open(os.fspath(user_path(path)), framework="pt") as f:
            return (f.metadata() or {}).get("source")
    except Exception:  # anything that is not a safetensors file: no source
        return None


def read_latents(path: PathLike) -> tuple[Tensor, dict[str, str]]:
    """A latents file written by :func:`save_latents` -> (float32 ``[1, C, f, h, w]``, metadata).

    Anything else (missing, not safetensors, no ``latents`` tensor, wrong rank) is a one-line
    :class:`~ltxcli.media.MediaError`."""
    path = Path(user_path(path))  # a quoted "~/x.safetensors" argument
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            if LATENTS_KEY not in f.keys():  # noqa: SIM118 - safe_open has keys(), not __contains__
                raise MediaError(f"{path}: no '{LATENTS_KEY}' tensor (not written by `ltx vae encode`)")
            latents = f.get_tensor(LATENTS_KEY)
    except MediaError:
        raise
    except Exception as e:  # a video or picture given for its latents: say what to give and what makes it
        kind = media.sniff_media(path)
        raise MediaError(f"{path}: is {kind}, not latents: `ltx vae decode` takes a latents .safetensors file (from `ltx "
                         f"vae encode` or --latents-out): `ltx vae encode {shell_word(path)}` makes one" if kind else
                         f"{path}: not a readable safetensors file ({' '.join(str(e).split())})") from None
    if latents.ndim != 5 or latents.shape[0] != 1 or not latents.is_floating_point() or latents.numel() == 0:
        raise MediaError(f"{path}: latents must be a float tensor [1, C, f, h, w] (none of them 0), got "
                         f"{list(latents.shape)}")
    if not bool(torch.isfinite(latents).all()):  # would decode to a black video without a word
        raise MediaError(f"{path}: the latents hold NaN or infinite values")
    return latents.float(), meta


def latents_frame_rate(meta: dict[str, str], path: PathLike) -> Fraction:
    """The frame rate recorded in a latents file's metadata; 24 when none is recorded (a file of another writer).
    A recorded value that is not a rate in :data:`~ltxcli.sizes.FRAME_RATES` (a hand-edited record: ``ltx vae
    encode`` writes a fraction; a clip's rate above it is the writer's limit)
    is a :class:`~ltxcli.media.MediaError` naming the file ``path`` and the field, not a silent 24 fps."""
    text = meta.get("frame_rate")
    if text is None:
        return Fraction(DEFAULT_IMAGE_FPS)
    try:
        rate = Fraction(text)
    except (ValueError, ZeroDivisionError):  # "abc", "inf", "nan", "1/0"
        rate = None
    if rate is not None and rate > MAX_FRAME_RATE:  # a real clip's rate (`ltx vae encode` records it as it is)
        raise MediaError(f"{user_path(path)}: its 'frame_rate' record {text!r} is above the {MAX_FRAME_RATE} fps a "
                         f"video is written at: pass --frame-rate (at most {MAX_FRAME_RATE}, e.g. 30)")
    if rate is None or not sizes.is_frame_rate(rate):
        raise MediaError(f"{user_path(path)}: its 'frame_rate' record {text!r} is not a frame rate in "
                         f"{sizes.FRAME_RATES}: pass --frame-rate")
    return rate


def recorded_model(path: PathLike, meta: dict[str, str]) -> str | None:
    """The model a latents file records, which ``ltx vae decode`` uses without ``--model``; None when none is.

    A relative checkpoint path is recorded as given at encoding: from another folder it names nothing, as does
    an unknown name. Either is a ValueError naming the file and saying to pass ``--model`` (the resolver's own
    message would name a ``--model`` the user never passed)."""
    name = meta.get("model")
    if not name or name in weights.load_registry() or Path(user_path(name)).exists():
        return name or None
    raise ValueError(f"{path}: encoded with model '{name}', which is neither a known name nor a file or folder "
                     f"from here: pass --model (that model, or one with the same VAE)")


def check_latents(vae: VideoAutoencoder, latents: Tensor, path: PathLike, meta: dict[str, str]) -> None:
    """Latents of another latent width than ``vae`` decodes, or encoded by a VAE with other per-channel
    statistics (the file's ``vae_statistics``; a file without them is taken as it is), are a ValueError naming
    both models."""
    if latents.shape[1] != vae.latent_channels:
        raise ValueError(f"{path}: latents have {latents.shape[1]} channels, the VAE of {vae.label} expects "
                         f"{vae.latent_channels} (encoded with {meta.get('model', 'another model')}?)")
    with safe_open(user_path(path), framework="pt") as f:  # read_latents has read it: it opens
        stats = f.get_tensor(STATISTICS_KEY).float() if STATISTICS_KEY in f.keys() else None  # noqa: SIM118
    # a bfloat16 copy of the same VAE rounds its statistics to 8 bits of mantissa: 1% tells them apart
    if stats is not None and not (stats.shape == (2, vae.latent_channels)
                                  and torch.allclose(stats, vae.statistics, rtol=1e-2, atol=1e-3)):
        name = meta.get("model", "another model")
        raise ValueError(f"{path}: encoded with the VAE of {name}, whose latent statistics differ from those of "
                         f"{vae.label}'s VAE: decode with --model {name} (or a model with the same VAE)")


def decode_file(vae: VideoAutoencoder, latents: Tensor, meta: dict[str, str], path: PathLike, *,
                timestep: float | None = None, seed: int | None = None, plain: bool = False,
                ) -> tuple[Tensor, DecodeSettings | None]:
    """``ltx vae decode``: the latents of file ``path`` (``meta``: its metadata) decoded as the generation that
    wrote them decoded them (:meth:`VideoAutoencoder.decode_as`) when the file records how, unless ``plain``;
    else the VAE's own reconstruction (:meth:`VideoAutoencoder.decode`, ``seed`` default 0). Returns the video
    and the settings applied (None: plain)."""
    d = None if plain else DecodeSettings.read(meta, tuple(latents.shape), path)
    if d is not None:
        check_plan(vae, latents, d, path)
    if d is None:
        return vae.decode(latents, timestep, 0 if seed is None else seed), None
    return vae.decode_as(latents, d, timestep, seed), d


def decoded_record(vae: VideoAutoencoder, video: Tensor, rate: float | Fraction, source: PathLike,
                   decode: DecodeSettings | None = None) -> dict[str, Any]:
    """The record a video decoded from latents file ``source`` stores (see :func:`ltxcli.media.write_video`);
    ``decode``: the generation's decode settings applied (``generation_decode``; None: a plain decode)."""
    return {"tool": "ltxcli", "version": __version__, "model": vae.label, "source": user_path(source),
            "frame_rate": fps_number(rate), "num_frames": video.shape[0], "height": video.shape[1], "width": video.shape[2],
            "generation_decode": json.loads(decode.to_json()) if decode is not None else None}


# ------------------------------------------------------------------------------------------------ roundtrip


SSIM_METHOD = "BT.601 luma, 11x11 Gaussian sigma 1.5, valid windows, 8-bit frames"


@dataclass
class Roundtrip:
    """What :func:`roundtrip` measured. ``peak_memory_kind``: cuda_allocated, process_peak_rss or unavailable."""

    source: str  # where the video came from (a path, or what the caller calls it)
    vae: VideoAutoencoder
    latents: Tensor  # [1, C, f, h, w] float32
    reconstruction: Tensor  # [F, H, W, 3] float32 in [0, 1]
    quality: FrameQuality
    encode_s: float
    decode_s: float
    peak_memory_bytes: int | None
    peak_memory_kind: str

    @property
    def record(self) -> dict[str, Any]:
        """The record a written reconstruction stores (see :func:`ltxcli.media.write_video`)."""
        return {"tool": "ltxcli", "model": self.vae.label, "source": self.source, "roundtrip": True}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (``ltx vae roundtrip --json``): sizes, PSNR/SSIM rounded, timings, peak memory."""
        f, h, w = self.reconstruction.shape[:3]
        q = self.quality
        return {
            "source": self.source, "model": self.vae.label, "num_frames": f, "height": h, "width": w,
            "latent_shape": list(self.latents.shape), "device": str(self.vae.device),
            "dtype": str(self.vae.dtype).removeprefix("torch."), "psnr": round(q.psnr, 4), "ssim": round(q.ssim, 6),
            "psnr_per_frame": [round(p, 4) for p in q.psnr_per_frame],
            "ssim_per_frame": [round(s, 6) for s in q.ssim_per_frame],
            "timings": {"encode_s": round(self.encode_s, 4), "decode_s": round(self.decode_s, 4)},
            "peak_memory_bytes": self.peak_memory_bytes, "peak_memory_kind": self.peak_memory_kind,
            "ssim_method": SSIM_METHOD,
        }

    def table_lines(self) -> list[str]:
        """``ltx vae roundtrip``'s table: PSNR and SSIM per frame and overall, then timings and peak memory."""
        q, peak = self.quality, self.peak_memory_bytes
        lines = ["frame  psnr_db  ssim"]
        lines += [f"{i:5d}  {p:7.2f}  {s:.4f}" for i, (p, s) in enumerate(zip(q.psnr_per_frame, q.ssim_per_frame,
                                                                              strict=True))]
        lines.append(f"  all  {q.psnr:7.2f}  {q.ssim:.4f}")
        peak_text = f"{peak / 2**20:.0f} MiB ({self.peak_memory_kind})" if peak is not None else "unknown"
        dtype = str(self.vae.dtype).removeprefix("torch.")
        return [*lines, f"encode {self.encode_s:.2f} s, decode {self.decode_s:.2f} s, peak memory {peak_text}, "
                        f"{self.vae.label} on {self.vae.device} ({dtype})"]


def roundtrip(vae: VideoAutoencoder, video: Tensor, *, source: PathLike = "video",
              decode_timestep: float | None = None) -> Roundtrip:
    """Encode and decode ``video`` (on the grid), timing each half and comparing 8-bit frames
    (:func:`ltxcli.metrics.frame_quality`); peak memory is the device's since this call (CUDA) or the process's."""
    if vae.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(vae.device)
    synchronize(vae.device)
    t0 = time.perf_counter()
    latents = vae.encode(video)
    synchronize(vae.device)
    encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    recon = vae.decode(latents, decode_timestep, 0)
    synchronize(vae.device)
    decode_s = time.perf_counter() - t0
    peak, kind = peak_memory(vae.device)
    return Roundtrip(user_path(source), vae, latents, recon, frame_quality(video, recon), encode_s, decode_s, peak, kind)

