"""``ltx generate`` (text-to-video, batches) and ``ltx i2v`` (image-to-video); both take keyframes/extension
through ``--condition PATH:FRAME[:STRENGTH]``.

Order of work: parse and validate every item (sizes, conditions, outputs) -> download missing weights ->
load the model once -> generate and write each item atomically -> one stdout line per item.
"""

from __future__ import annotations

import json
import math
import secrets
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from . import naming, preflight
from .common import (
    EXIT_ERROR,
    CliError,
    GenerationProgress,
    Output,
    exit_codes_epilog,
    guarded,
    usage_error,
)
from .resolve import (
    MODEL_ENV,
    WEIGHTS_DIR_ENV,
    ModelRef,
    check_component,
    ensure_downloaded,
    local_component,
    max_positions,
    needed_weights,
    resolve_model,
)

SEED_MAX = 2**63 - 1
MAX_FRAME_RATE = 1000
MAX_STEPS = 1000  # far above any released schedule (8-40 steps); a typo such as 4000000 is refused up front

# --- options shared by every generating command --------------------------------------------------------------

ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", envvar=MODEL_ENV, show_default=False,
    help="A weights.toml name (see `ltx weights list`; 'tiny' needs no download), an official single-file "
         ".safetensors checkpoint or a diffusers-format folder. Default: the registry's default model.")]
TextEncoderOpt = Annotated[str | None, typer.Option(
    help="T5 text encoder: a weights.toml name or a folder with text_encoder/ and tokenizer/. "
         "Default: the one the model needs.")]
UpsamplerOpt = Annotated[str | None, typer.Option(
    help="Latent upsampler for multi-scale models: a weights.toml name or a .safetensors file. "
         "Default: the one the model's preset names.")]
WeightsDirOpt = Annotated[str | None, typer.Option(
    envvar=WEIGHTS_DIR_ENV, show_default=False,
    help="Keep weights in this plain folder instead of the Hugging Face cache.")]
OutputOpt = Annotated[str | None, typer.Option(
    "--output", "-o", show_default=False,
    help="An .mp4 file, a folder, or a pattern such as 'out/{index:03d}-{seed}.mp4' (fields: index, seed, slug, "
         "width, height, num_frames, frame_rate, model). Default: <prompt-slug>-<seed>-<W>x<H>x<F>.mp4 here.")]
FramesDirOpt = Annotated[str | None, typer.Option(
    show_default=False, help="Write lossless PNG frames (frame_00000.png, ...) into this folder instead of an MP4.")]
NegativeOpt = Annotated[str | None, typer.Option(show_default=False, help="Negative prompt (default: the preset's).")]
HeightOpt = Annotated[int | None, typer.Option(show_default=False, help="Height in pixels (default: the preset's).")]
WidthOpt = Annotated[int | None, typer.Option(show_default=False, help="Width in pixels (default: the preset's).")]
FramesOpt = Annotated[int | None, typer.Option(show_default=False, help="Number of frames (default: the preset's).")]
FpsOpt = Annotated[float | None, typer.Option(show_default=False, help="Frame rate (default: the preset's).")]
StepsOpt = Annotated[int | None, typer.Option(show_default=False, help="Denoising steps of the first pass.")]
GuidanceOpt = Annotated[float | None, typer.Option(show_default=False, help="Classifier-free guidance scale.")]
StgOpt = Annotated[float | None, typer.Option(show_default=False, help="Spatio-temporal guidance (STG) scale.")]
SeedOpt = Annotated[int | None, typer.Option(show_default=False, help="Random seed (default: a random one, printed).")]
ConditionOpt = Annotated[list[str] | None, typer.Option(
    "--condition", "-c", show_default=False,
    help="PATH:FRAME[:STRENGTH] (repeatable): an image or video placed at pixel frame FRAME with STRENGTH in "
         "[0, 1] (default 1). Keyframes, first/last frame, video extension.")]
DeviceOpt = Annotated[str | None, typer.Option(show_default=False, help="cpu, cuda or cuda:N (default: best available).")]
DtypeOpt = Annotated[str | None, typer.Option(
    show_default=False, help="bfloat16 or float32 (default: bfloat16 on GPU, float32 on CPU).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per output on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or messages on stderr.")]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace existing outputs.")]
SkipOpt = Annotated[bool, typer.Option(help="Skip items whose output already exists.")]


@dataclass
class Options:
    model: str | None = None
    text_encoder: str | None = None
    upsampler: str | None = None
    weights_dir: str | None = None
    output: str | None = None
    frames_dir: str | None = None
    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    frame_rate: float | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    stg_scale: float | None = None
    seed: int | None = None
    conditions: list[str] = field(default_factory=list)
    device: str | None = None
    dtype: str | None = None
    json: bool = False
    quiet: bool = False
    overwrite: bool = False
    skip_existing: bool = False


@dataclass(frozen=True)
class CondSpec:
    path: str
    frame: int
    strength: float


@dataclass
class Item:
    index: int
    prompt: str
    seed: int
    height: int
    width: int
    num_frames: int
    frame_rate: float
    negative_prompt: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    stg_scale: float | None = None
    conditions: list[CondSpec] = field(default_factory=list)
    output: str | None = None
    target: Path = Path()
    skip: bool = False


# --- parsing -------------------------------------------------------------------------------------------------


def parse_condition(spec: str) -> CondSpec:
    """``PATH:FRAME[:STRENGTH]``, split from the right so paths may contain ':'."""
    parts = spec.rsplit(":", 2)
    if len(parts) == 3:
        path, frame, strength = parts
        if _is_int(frame) and _is_float(strength):
            return CondSpec(path, int(frame), float(strength))
    parts = spec.rsplit(":", 1)
    if len(parts) == 2 and _is_int(parts[1]) and parts[0]:
        return CondSpec(parts[0], int(parts[1]), 1.0)
    usage_error(f"--condition {spec!r}: expected PATH:FRAME[:STRENGTH], e.g. first.png:0 or end.png:96:0.8")


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


_ITEM_INT = ("seed", "steps", "height", "width", "num_frames")
_ITEM_FLOAT = ("frame_rate", "guidance_scale", "stg_scale")
_ITEM_STR = ("prompt", "negative_prompt", "output", "image")
ITEM_KEYS = (*_ITEM_STR, *_ITEM_INT, *_ITEM_FLOAT, "conditions")


def _read_text(source: str, what: str) -> str:
    if source == "-":
        return click.get_text_stream("stdin").read()
    path = Path(source).expanduser()
    if not path.is_file():
        usage_error(f"{what} {source}: no such file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CliError(f"{what} {source}: cannot read: {e}", 6) from None


def parse_batch(text: str, source: str) -> list[dict[str, Any]]:
    """One prompt per line, or one JSON object per line (keys: :data:`ITEM_KEYS`). '#' lines are comments."""
    rows: list[dict[str, Any]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"--batch {source} line {number}"
        if not line.startswith("{"):
            rows.append({"prompt": line})
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            usage_error(f"{where}: invalid JSON ({e})")
        if not isinstance(obj, dict):
            usage_error(f"{where}: expected a JSON object")
        unknown = sorted(set(obj) - set(ITEM_KEYS))
        if unknown:
            usage_error(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(ITEM_KEYS)})")
        if not isinstance(obj.get("prompt"), str):
            usage_error(f"{where}: needs a \"prompt\" string")
        for key in _ITEM_STR:
            if key in obj and obj[key] is not None and not isinstance(obj[key], str):
                usage_error(f"{where}: {key} must be a string")
        for key in _ITEM_INT:
            v = obj.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                usage_error(f"{where}: {key} must be an integer, got {v!r}")
        for key in _ITEM_FLOAT:
            v = obj.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                usage_error(f"{where}: {key} must be a number, got {v!r}")
        conds = obj.get("conditions")
        if conds is not None:
            if not isinstance(conds, list):
                usage_error(f"{where}: conditions must be a list")
            parsed = []
            for c in conds:
                if isinstance(c, str):
                    parsed.append(parse_condition(c))
                elif isinstance(c, dict) and isinstance(c.get("path"), str) and not set(c) - {"path", "frame", "strength"}:
                    frame, strength = c.get("frame", 0), c.get("strength", 1.0)
                    if isinstance(frame, bool) or not isinstance(frame, int) or not isinstance(strength, (int, float)):
                        usage_error(f"{where}: condition frame must be an integer and strength a number")
                    parsed.append(CondSpec(c["path"], frame, float(strength)))
                else:
                    usage_error(f"{where}: a condition is \"PATH:FRAME[:STRENGTH]\" or {{\"path\", \"frame\", \"strength\"}}")
            obj["conditions"] = parsed
        obj["_where"] = where
        rows.append(obj)
    if not rows:
        usage_error(f"--batch {source}: no prompts in it")
    return rows


# --- validation ----------------------------------------------------------------------------------------------


def _nearest_even(v: int) -> str:
    return f"{v - 1} or {v + 1}"


def _check_range(name: str, value: float, lo: float, hi: float, example: str = "") -> None:
    """``lo <= value <= hi`` (finite), else a ValueError naming the value, the rule and the nearest valid value."""
    if (isinstance(value, int) or math.isfinite(value)) and lo <= value <= hi:
        return
    nearest = hi if value != value else min(max(value, lo), hi)  # NaN -> the top (any valid value would do)
    hint = example or f"use {_fmt(nearest)}"
    raise ValueError(f"{name}={_fmt(value)} must be in [{_fmt(lo)}, {_fmt(hi)}] ({hint})")


def _fmt(v: float) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    if v == SEED_MAX:
        return "2**63 - 1"
    return str(v)


def _check_sizes(item: Item, max_pos: tuple[int, int, int], frames_out: bool) -> None:
    from ltxcli.pipeline import check_size

    lowest = 1 if frames_out else 2
    for name, v, limit in (("height", item.height, max_pos[1]), ("width", item.width, max_pos[2])):
        if v < lowest:
            raise ValueError(f"{name}={v} must be at least {lowest} (e.g. 512; sizes are padded to multiples of 32)")
        if (v - 1) // 32 * 32 + 32 > limit:
            raise ValueError(f"{name}={v} pads to {(v - 1) // 32 * 32 + 32}, above the model's position range of "
                             f"{limit} px (use at most {limit})")
        if not frames_out and v % 2:
            raise ValueError(f"{name}={v} must be even for an H.264 MP4 (4:2:0 chroma): use "
                             f"{_nearest_even(v)}, or write PNG frames with --frames-dir")
    if item.num_frames < 1:
        raise ValueError(f"num_frames={item.num_frames} must be at least 1 (e.g. 121; 8k + 1 frames avoid padding)")
    if not math.isfinite(item.frame_rate) or not 0 < item.frame_rate <= MAX_FRAME_RATE:
        nearest = MAX_FRAME_RATE if item.frame_rate > MAX_FRAME_RATE else 24
        raise ValueError(f"frame_rate={item.frame_rate} must be in (0, {MAX_FRAME_RATE}] (e.g. {nearest})")
    check_size(item.height, item.width, item.num_frames, item.frame_rate, max_pos)  # the model's time range


def _check_condition(c: CondSpec, item: Item) -> None:
    """Range checks, then the file itself: decoded (an image fully, a video's first frame) so that a missing,
    empty, truncated, oversized or unreadable file fails here, before any weight is loaded (MediaError, exit 6)."""
    from ltxcli import media

    _check_range(f"condition {c.path}: strength", c.strength, 0.0, 1.0)
    if not 0 <= c.frame < item.num_frames:
        nearest = min(max(c.frame, 0), item.num_frames - 1)
        raise ValueError(f"condition {c.path}: frame={c.frame} must be in [0, {item.num_frames - 1}] for a "
                         f"{item.num_frames}-frame video (use {nearest})")
    first = media.load_media(c.path, max_frames=1)
    height, width = int(first.shape[1]), int(first.shape[2])
    left, top, right, bottom = media.centre_crop_box(width, height, item.height, item.width)
    if right - left < 2 or bottom - top < 2:
        raise media.MediaError(f"{c.path}: a {width}x{height} picture is too small to crop to the "
                               f"{item.width}x{item.height} aspect ratio")
    n = media.media_num_frames(c.path)
    if n > 1:
        wanted = min(n, item.num_frames - c.frame)
        decodable = _decodable_frames(c.path, wanted)
        if decodable < wanted:  # FFmpeg stops quietly at the end of a truncated file
            warnings.warn(f"{c.path}: the file lists {n} frames but only {decodable} can be decoded (truncated or "
                          f"damaged?); using those {decodable}", stacklevel=1)
            n = decodable
    # the pipeline keeps at most the frames that fit, rounded down to 8k + 1 (official trim)
    kept = (min(n, item.num_frames - c.frame) - 1) // 8 * 8 + 1
    if kept > 1 and c.frame % 8:
        lo = c.frame // 8 * 8
        raise ValueError(f"condition {c.path}: a video must start at a multiple of 8, not frame={c.frame} "
                         f"(use {lo} or {lo + 8})")


def _decodable_frames(path: str, limit: int) -> int:
    """How many of the first ``limit`` frames of a video decode (frames are decoded and dropped, not kept)."""
    import av

    from ltxcli import media

    count = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                count += 1
                if count >= limit:
                    break
    except av.error.FFmpegError as e:
        raise media.MediaError(f"{path}: video decoding failed after {count} frames: {' '.join(str(e).split())}") from None
    return count


def validate_item(item: Item, max_pos: tuple[int, int, int], *, frames_out: bool, where: str) -> None:
    """Everything that can be checked without the model; a usage error names the value, the rule and the
    nearest valid value; an unreadable condition file is a MediaError (exit 6)."""
    from ltxcli import media

    try:
        _check_sizes(item, max_pos, frames_out)
        if item.steps is not None:
            _check_range("steps", item.steps, 1, MAX_STEPS)
        for name, v in (("guidance_scale", item.guidance_scale), ("stg_scale", item.stg_scale)):
            if v is not None and (not math.isfinite(v) or v < 0):
                raise ValueError(f"{name}={v} must be a finite number >= 0 (use 0; guidance 1 disables CFG, "
                                 "stg 0 disables STG)")
        _check_range("seed", item.seed, 0, SEED_MAX)
        for c in item.conditions:
            _check_condition(c, item)
    except ValueError as e:
        if isinstance(e, media.MediaError):
            raise
        usage_error(f"{where}{e}")


def build_items(opts: Options, rows: list[dict[str, Any]], ref: ModelRef, *, first_image: CondSpec | None) -> list[Item]:
    preset = ref.preset
    base_conds = ([first_image] if first_image else []) + [parse_condition(c) for c in opts.conditions]
    items = []
    for i, row in enumerate(rows):
        conds = list(base_conds)
        if row.get("image"):
            conds.insert(0, CondSpec(row["image"], 0, 1.0))
        conds += row.get("conditions") or []
        seed = row.get("seed", opts.seed)
        item = Item(
            index=i,
            prompt=row["prompt"],
            seed=secrets.randbelow(2**31) if seed is None else seed,
            height=_pick(row, "height", opts.height, preset.height),
            width=_pick(row, "width", opts.width, preset.width),
            num_frames=_pick(row, "num_frames", opts.num_frames, preset.num_frames),
            frame_rate=float(_pick(row, "frame_rate", opts.frame_rate, preset.frame_rate)),
            negative_prompt=_pick(row, "negative_prompt", opts.negative_prompt, None),
            steps=_pick(row, "steps", opts.steps, None),
            guidance_scale=_pick(row, "guidance_scale", opts.guidance_scale, None),
            stg_scale=_pick(row, "stg_scale", opts.stg_scale, None),
            conditions=conds,
            output=row.get("output"),
        )
        items.append(item)
    return items


def _pick(row: dict[str, Any], key: str, option: Any, default: Any) -> Any:
    if row.get(key) is not None:
        return row[key]
    return default if option is None else option


def plan_outputs(items: list[Item], opts: Options, ref: ModelRef, *, batch: bool) -> None:
    """Resolve every target, refuse duplicates and existing outputs (unless --overwrite / --skip-existing)."""
    frames = opts.frames_dir is not None
    default_value = opts.frames_dir if frames else opts.output
    for value in {default_value, *(it.output for it in items)}:
        if value is not None and naming.is_pattern(value):
            naming.check_pattern(value)
    model_name = Path(ref.name).stem if ref.kind in ("file", "folder") else ref.name
    shared = sum(it.output is None for it in items)
    seen: dict[Path, int] = {}
    for it in items:
        fields = {"index": it.index, "seed": it.seed, "slug": naming.slugify(it.prompt), "width": it.width,
                  "height": it.height, "num_frames": it.num_frames, "frame_rate": _fps_text(it.frame_rate),
                  "model": model_name}
        value = it.output if it.output is not None else default_value
        many = it.output is None and shared > 1
        it.target = naming.output_path(value, fields, batch=batch, frames=frames, many=many)
        key = it.target.absolute()
        if key in seen:
            usage_error(f"items {seen[key]} and {it.index} would both write {it.target}: "
                        "use a pattern with {index} or {seed}")
        seen[key] = it.index
        if it.target.exists() or it.target.is_symlink():
            if opts.skip_existing:
                it.skip = True
            elif not opts.overwrite:
                usage_error(f"{it.target} already exists: pass --overwrite to replace it, --skip-existing to keep it, "
                            "or choose another -o")
        if not it.skip:
            preflight.check_writable(it.target)  # a read-only or impossible folder fails before any work


def _fps_text(fps: float) -> int | float:
    return int(fps) if float(fps).is_integer() else fps


# --- running -------------------------------------------------------------------------------------------------


def run(opts: Options, rows: list[dict[str, Any]], *, batch: bool, first_image: CondSpec | None = None) -> None:
    from ltxcli.api import resolve_device, resolve_dtype

    out = Output(json_mode=opts.json, quiet=opts.quiet)
    if opts.output is not None and opts.frames_dir is not None:
        usage_error("give either -o/--output (MP4) or --frames-dir (PNG frames), not both")
    if opts.overwrite and opts.skip_existing:
        usage_error("--overwrite and --skip-existing contradict each other: pick one")
    try:
        device = resolve_device(opts.device)
        dtype = resolve_dtype(opts.dtype, device)
    except ValueError as e:
        usage_error(str(e))

    ref = resolve_model(opts.model, opts.weights_dir)
    if ref.kind == "builtin" and opts.text_encoder:
        out.warn(f"--text-encoder is ignored: {ref.name} has a built-in text encoder")
    max_pos = max_positions(ref, opts.weights_dir)  # reads the checkpoint header: a corrupt file fails here (exit 6)
    items = build_items(opts, rows, ref, first_image=first_image)
    frames_out = opts.frames_dir is not None
    for it in items:
        where = rows[it.index].get("_where", "")
        validate_item(it, max_pos, frames_out=frames_out, where=f"{where}: " if where else "")
    plan_outputs(items, opts, ref, batch=batch)

    todo = [it for it in items if not it.skip]
    for it in items:
        if it.skip and not todo:
            _emit_skipped(out, it)
    if not todo:
        return

    text_encoder = None if ref.kind == "builtin" else opts.text_encoder
    for value, what in ((text_encoder, "--text-encoder"), (opts.upsampler, "--upsampler")):
        check_component(value, what)  # a mistyped path fails before anything is downloaded
    ensure_downloaded(needed_weights(ref, text_encoder=text_encoder, upsampler=opts.upsampler),
                      weights_dir=opts.weights_dir, out=out)
    te_path = local_component(text_encoder, weights_dir=opts.weights_dir, what="--text-encoder")
    up_path = local_component(opts.upsampler, weights_dir=opts.weights_dir, what="--upsampler")
    # headers of every file the load will read (refusing pickles and broken files), then the memory estimate
    check_memory(todo, rows, ref, opts, te_path=te_path, up_path=up_path, device=device, dtype=dtype,
                 enforce=not preflight.memory_check_disabled())

    t0 = time.perf_counter()
    with out.status(f"loading {ref.label}"), _library_bars(out.progress_enabled):
        pipe = load_pipeline(
            str(ref.path) if ref.kind in ("file", "folder") else ref.name,
            text_encoder=te_path, upsampler=up_path, device=opts.device, dtype=opts.dtype,
            weights_dir=opts.weights_dir,
        )
    load_s = time.perf_counter() - t0

    for it in items:
        if it.skip:
            _emit_skipped(out, it)
            continue
        _generate_one(pipe, it, ref, opts, out, load_s if it is todo[0] else 0.0, many=len(items) > 1)


@contextmanager
def _library_bars(enabled: bool) -> Iterator[None]:
    """transformers draws its own "Loading weights" bar on stderr; it is shown only where ours would be."""
    if enabled or "transformers" not in sys.modules:
        yield
        return
    from transformers.utils import logging as tf_logging

    was = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            tf_logging.enable_progress_bar()


#: Further one-line suggestions for a run that does not fit in memory (options that trade speed for memory,
#: such as CPU offloading or VAE tiling, belong here once ``generate`` has them).
MEMORY_HINTS: tuple[str, ...] = ()


def model_memory(
    ref: ModelRef, *, te_path: str | None, up_path: str | None, weights_dir: str | None, dtype: Any,
    fp8: bool = False,
) -> tuple[Any, Any, int]:
    """(transformer config, VAE config, bytes of every weight the run loads at ``dtype``), from headers only.

    ``fp8``: the transformer blocks' linear weights are kept in float8 (``--dtype fp8``)."""
    from ltxcli import weights

    if ref.kind == "builtin":
        import torch

        from ltxcli.models.transformer import LTXVideoTransformer
        from ltxcli.models.vae import CausalVideoVAE
        from ltxcli.tiny import TINY_TRANSFORMER, tiny_vae_config

        vcfg = tiny_vae_config()
        with torch.device("meta"):
            modules = [LTXVideoTransformer(TINY_TRANSFORMER), CausalVideoVAE(vcfg)]
        return TINY_TRANSFORMER, vcfg, preflight.module_bytes(modules, dtype)
    from ltxcli.loading import CheckpointError, ConfigError, inspect_checkpoint

    reg = weights.load_registry()
    entry = reg[ref.name] if ref.kind == "registry" else None
    # a registry model is looked up again: the download step may just have replaced it
    path = weights.resolve(ref.name, weights_dir=weights_dir, registry=reg) if entry is not None else ref.path
    assert path is not None
    try:
        info = inspect_checkpoint(path)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    total = preflight.model_bytes(path, dtype, fp8=fp8)
    te: Path | str | None = te_path
    if te is None:
        if path.is_dir() and (path / "text_encoder").is_dir():
            te = path
        else:
            te = weights.path((entry.text_encoder if entry else None) or ref.preset.text_encoder or "t5-xxl",
                              weights_dir=weights_dir, registry=reg)
    if te is not None:
        total += preflight.text_encoder_bytes(te, dtype)
    up: Path | str | None = up_path
    up_name = (entry.upsampler if entry else None) or ref.preset.upsampler
    if up is None and up_name:
        up = weights.path(up_name, weights_dir=weights_dir, registry=reg)
    if up is not None:
        total += preflight.safetensors_bytes(up, dtype)
    return info.transformer, info.vae, total


def item_estimator(
    it: Item, preset: Any, transformer: Any, vae: Any, *, weights_bytes: int, dtype: Any
) -> Callable[[int, int, int], preflight.MemoryEstimate]:
    """``(height, width, num_frames) -> MemoryEstimate`` for item ``it`` under ``preset``: its guidance branches
    (an item's scale, else every pass's schedule), its conditions, and for multi-scale presets the second pass,
    which (with the decode) runs at twice the 32-aligned downscaled size, above the padded target at most sizes."""
    from ltxcli import sampling
    from ltxcli.pipeline import padded_size

    def values(v: Any) -> list[float]:
        return list(v) if isinstance(v, (list, tuple)) else [v]

    passes = preset.passes
    cfg = [it.guidance_scale] if it.guidance_scale is not None else [g for p in passes for g in values(p.guidance_scale)]
    stg = [it.stg_scale] if it.stg_scale is not None else [g for p in passes for g in values(p.stg_scale)]
    branches = 1 + any(sampling.cfg_active(g) for g in cfg) + any(sampling.stg_active(g) for g in stg)
    later = sum(c.frame > 0 for c in it.conditions)  # each adds up to 2 latent frames of extra tokens
    factor = (preset.downscale_factor or 0.6666666) if preset.multi_scale else None

    def estimate(h: int, w: int, f: int) -> preflight.MemoryEstimate:
        ph, pw, _ = padded_size(h, w, f)
        if factor is not None:
            ph, pw = max(ph, 2 * (int(ph * factor) // 32 * 32)), max(pw, 2 * (int(pw * factor) // 32 * 32))
        _, lh, lw = preflight.latent_shape(vae, ph, pw, f)
        return preflight.estimate_memory(
            transformer, vae, height=ph, width=pw, num_frames=f, dtype=dtype, weights_bytes=weights_bytes,
            branches=branches, extra_tokens=2 * lh * lw * later, per_token_timesteps=bool(it.conditions))

    return estimate


def check_memory(
    items: list[Item], rows: list[dict[str, Any]], ref: ModelRef, opts: Options, *, te_path: str | None,
    up_path: str | None, device: Any, dtype: Any, enforce: bool = True,
) -> None:
    """Refuse (exit 5, one line) an item whose estimated peak memory exceeds the device's free memory.

    The weight headers are read (and so checked) even when ``enforce`` is off.
    """
    from ltxcli.api import FP8_NAMES

    fp8 = isinstance(opts.dtype, str) and opts.dtype in FP8_NAMES
    tcfg, vcfg, weight_bytes = model_memory(ref, te_path=te_path, up_path=up_path, weights_dir=opts.weights_dir,
                                            dtype=dtype, fp8=fp8)
    if not enforce:
        return
    free = preflight.free_memory_bytes(device)
    for it in items:
        estimate = item_estimator(it, ref.preset, tcfg, vcfg, weights_bytes=weight_bytes, dtype=dtype)
        where = rows[it.index].get("_where", "")
        preflight.check_memory(estimate, height=it.height, width=it.width, num_frames=it.num_frames, device=device,
                               free_bytes=free, hints=MEMORY_HINTS, where=f"{where}: " if where else "")


def load_pipeline(*args: Any, **kwargs: Any) -> Any:
    """Indirection so tests can reuse one loaded model across in-process runs."""
    from ltxcli.api import load_pipeline as _load

    return _load(*args, **kwargs)


def _emit_skipped(out: Output, it: Item) -> None:
    out.info(f"skipped {it.target} (exists)")
    if out.json_mode:
        out.json({"status": "skipped", "index": it.index, "path": str(it.target), "prompt": it.prompt,
                  "seed": it.seed})
    else:
        out.data(str(it.target))


def _generate_one(pipe: Any, it: Item, ref: ModelRef, opts: Options, out: Output, load_s: float, *, many: bool) -> None:
    import torch

    from ltxcli import __version__, media
    from ltxcli.pipeline import Condition, NumericalError

    t_start = time.perf_counter()
    conditions = [Condition(c.path, c.frame, c.strength) for c in it.conditions]
    label = f"[{it.index + 1}]" if many else ""
    with GenerationProgress(out, label) as progress:
        result = pipe.generate(
            it.prompt, negative_prompt=it.negative_prompt, height=it.height, width=it.width,
            num_frames=it.num_frames, frame_rate=it.frame_rate, steps=it.steps, guidance_scale=it.guidance_scale,
            stg_scale=it.stg_scale, conditions=conditions, seed=it.seed, progress=progress,
        )
    if not bool(torch.isfinite(result.video).all()):  # the latents were checked; a broken VAE shows here
        raise NumericalError("the decoded video contains NaN or Inf: the VAE weights may be broken "
                             "(run `ltx weights verify`)")
    s = result.settings
    first = s["passes"][0]
    timesteps = first.get("timesteps")
    settings = {
        "height": s["height"], "width": s["width"], "num_frames": s["num_frames"],
        "frame_rate": _fps_text(s["frame_rate"]), "negative_prompt": s["negative_prompt"],
        "steps": first["num_inference_steps"] if timesteps is None else len(timesteps),
        "guidance_scale": first["guidance_scale"], "stg_scale": first["stg_scale"], "preset": s["preset"],
        "timesteps": timesteps, "multi_scale": s["multi_scale"], "passes": s["passes"],
        "conditions": [{"path": c.path, "frame": c.frame, "strength": c.strength} for c in it.conditions],
        "dtype": str(pipe.dtype).removeprefix("torch."), "device": str(pipe.device),
    }
    record = {
        "tool": "ltxcli", "version": __version__, "model": ref.label, "prompt": it.prompt, "seed": result.seed,
        **{k: v for k, v in settings.items() if k != "device"},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    t_write = time.perf_counter()
    try:
        it.target.parent.mkdir(parents=True, exist_ok=True)
        if opts.frames_dir is not None:
            media.write_png_frames(it.target, result.video, metadata=record, overwrite=opts.overwrite)
        else:
            media.write_video(it.target, result.video, _fps_text(s["frame_rate"]), metadata=record,
                              overwrite=opts.overwrite)
    except media.MediaError as e:
        raise CliError(str(e), EXIT_ERROR) from None
    except OSError as e:
        if isinstance(e, FileExistsError):
            raise
        raise CliError(f"cannot write {it.target}: {e.strerror or e}", EXIT_ERROR) from None
    timings = {"load_s": load_s, **result.timings, "write_s": time.perf_counter() - t_write}
    timings["total_s"] = load_s + time.perf_counter() - t_start
    timings = {k: round(v, 4) for k, v in timings.items()}
    kind = "frames" if opts.frames_dir is not None else "video"
    out.info(f"wrote {it.target} ({s['num_frames']} frames {s['width']}x{s['height']} @ {_fps_text(s['frame_rate'])} fps, "
             f"seed {result.seed}, {timings['total_s']:.1f} s)")
    if out.json_mode:
        out.json({"status": "ok", "index": it.index, "path": str(it.target), "kind": kind, "prompt": it.prompt,
                  "seed": result.seed, "model": ref.label, "settings": settings, "timings": timings})
    else:
        out.data(str(it.target))


# --- commands ------------------------------------------------------------------------------------------------

HELP_EPILOG = exit_codes_epilog()


def _options(params: dict[str, Any], skip: tuple[str, ...]) -> Options:
    """A command's parameters -> :class:`Options` (option names match its fields, except the two renamed)."""
    kw = {k: v for k, v in params.items() if k not in skip}
    kw["conditions"] = kw.pop("condition") or []
    kw["json"] = kw.pop("json_")
    return Options(**kw)


@guarded
def generate(
    prompt: Annotated[str | None, typer.Argument(
        metavar="PROMPT", show_default=False, help="The prompt; '-' reads it from stdin. Omit with --batch.")] = None,
    batch: Annotated[str | None, typer.Option(
        show_default=False,
        help="File with one prompt per line, or JSON lines with per-item prompt, seed, steps, height, width, "
             "num_frames, frame_rate, guidance_scale, stg_scale, negative_prompt, image, conditions, output "
             "('-' = stdin). One model load, one output per item.")] = None,
    model: ModelOpt = None,
    text_encoder: TextEncoderOpt = None,
    upsampler: UpsamplerOpt = None,
    weights_dir: WeightsDirOpt = None,
    output: OutputOpt = None,
    frames_dir: FramesDirOpt = None,
    negative_prompt: NegativeOpt = None,
    height: HeightOpt = None,
    width: WidthOpt = None,
    num_frames: FramesOpt = None,
    frame_rate: FpsOpt = None,
    steps: StepsOpt = None,
    guidance_scale: GuidanceOpt = None,
    stg_scale: StgOpt = None,
    seed: SeedOpt = None,
    condition: ConditionOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipOpt = False,
) -> None:
    """Generate a video from a text prompt (or a batch of prompts)."""
    params = dict(locals())
    opts = _options(params, skip=("prompt", "batch"))
    if batch is not None:
        if prompt is not None:
            usage_error("give a PROMPT or --batch FILE, not both")
        rows = parse_batch(_read_text(batch, "--batch"), batch)
        run(opts, rows, batch=True)
        return
    if prompt is None:
        usage_error("missing PROMPT (or --batch FILE); `ltx generate --help` shows the options")
    if prompt == "-":
        prompt = click.get_text_stream("stdin").read().strip()
    run(opts, [{"prompt": prompt}], batch=False)


@guarded
def i2v(
    image: Annotated[str, typer.Argument(metavar="IMAGE", show_default=False, help="The first frame (an image, or a video).")],
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="The prompt; '-' reads it from stdin.")] = "",
    image_strength: Annotated[float, typer.Option(help="Conditioning strength of IMAGE in [0, 1].")] = 1.0,
    model: ModelOpt = None,
    text_encoder: TextEncoderOpt = None,
    upsampler: UpsamplerOpt = None,
    weights_dir: WeightsDirOpt = None,
    output: OutputOpt = None,
    frames_dir: FramesDirOpt = None,
    negative_prompt: NegativeOpt = None,
    height: HeightOpt = None,
    width: WidthOpt = None,
    num_frames: FramesOpt = None,
    frame_rate: FpsOpt = None,
    steps: StepsOpt = None,
    guidance_scale: GuidanceOpt = None,
    stg_scale: StgOpt = None,
    seed: SeedOpt = None,
    condition: ConditionOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipOpt = False,
) -> None:
    """Generate a video that starts from IMAGE (image-to-video)."""
    params = dict(locals())
    opts = _options(params, skip=("image", "prompt", "image_strength"))
    if prompt == "-":
        prompt = click.get_text_stream("stdin").read().strip()
    run(opts, [{"prompt": prompt}], batch=False, first_image=CondSpec(image, 0, image_strength))


def register(app: typer.Typer) -> None:
    app.command("generate", epilog=HELP_EPILOG)(generate)
    app.command("i2v", epilog=HELP_EPILOG)(i2v)


__all__ = ["Options", "generate", "i2v", "parse_batch", "parse_condition", "register", "run"]
