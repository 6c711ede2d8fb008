"""Batch runs: a list of items generated with one loaded model, one output file per item, with its record.

Order of work for a batch (``ltx generate --batch`` follows it, and so can a Python user)::

    rows = batch.parse_batch(text)              # JSON lines / one prompt per line -> dicts (optional)
    items = build_items(rows, preset=...)       # -> BatchItem: a row's value > defaults > the preset's
    validate_item(item, max_pos, ...)           # sizes, ranges, condition files: before any weight is read
    plan_outputs(items, output=..., ...)        # names from patterns, duplicates, existing outputs, writable
    for r in run_batch(pipe, items, ...): ...   # generate, write atomically with the record, one result each

``run_batch`` plans and validates the items itself when they have no output path yet, so the short form is
``run_batch(pipe, [BatchItem("a cat"), BatchItem("a dog")], output="out/{index}.mp4")``.

Mistakes a user can make (a size, a pattern, an existing output) are ``ValueError`` with a one-line message;
an unreadable condition file is :class:`ltxcli.media.MediaError`; an output that cannot be written is
:class:`OutputError` (an ``OSError``); an existing output without ``overwrite`` is ``FileExistsError``.
"""

from __future__ import annotations

import math
import os
import secrets
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import long_video, naming, timeline
from .batch import BatchItem, item_control
from .enhance.rules import request_plan
from .errors import keeps_resume_state, note_failed_item
from .extend import InputFrames, check_window_seeds, generation_request, plan_windows, run_extension
from .field_values import FieldTypeError, check_run_options, parse_cache
from .formatting import number_text
from .long_state import interrupted_target, saved_seed, state_path
from .naming import fps_number
from .passes import MAX_STEPS
from .paths import user_media
from .progress import ProgressFn
from .records import SAMPLER_KEYS, batch_fields, encoding, record, run_settings
from .request import SEED_MAX, Condition, GenerationRequest, check_fields, preset_size, resolve_request
from .sizes import MAX_FRAME_RATE, check_frame_rate, check_size, padded_size
from .source import check_extension, check_source_length, source_defaults

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .presets import Preset
    from .result import GenerationResult

#: a batch line's keys of its size and length (BatchItem.own_size)
_SIZE_KEYS = ("height", "width", "num_frames", "duration", "extend")
MAX_FRAMES = 1_000_000  # over 11 hours at 24 fps; a typo such as 10**20 would plan windows for minutes



class OutputError(OSError):
    """An output that cannot be written (a read-only folder, a full disk, a file in the way of a folder)."""


@dataclass
class ItemResult:
    """What :func:`run_batch` yields for each item, in order: ``status`` "ok" (generated; written unless the
    run was told not to write) or "skipped" (``reason``: "exists", its video is there; "other_video", a file
    made for another request or settings is there, kept; or "claimed" by another process)."""

    item: BatchItem
    status: str
    reason: str | None = None
    result: GenerationResult | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # the run's settings (the record's, plus the device)
    record: dict[str, Any] = field(default_factory=dict)  # the generation record stored in the file
    timings: dict[str, float] = field(default_factory=dict)  # seconds: load_s (first item), stages, write_s, total_s
    latents_path: Path | None = None  # where its final latents were written too (ltxcli.job: --latents-out)

    def __repr__(self) -> str:  # not the dataclass's: the item's request and the result's tensors in full
        reason = f", reason={self.reason!r}" if self.reason else ""
        return (f"ItemResult(index={self.item.index}, status={self.status!r}{reason}, "
                f"path={os.fspath(self.item.target) if self.item.target else None!r}, seed={self.item.seed})")

    @property
    def path(self) -> Path:
        """The item's output file (its ``target``, as planned by the run that yielded this result)."""
        assert self.item.target is not None
        return self.item.target

    @classmethod
    def skipped(cls, item: BatchItem, *, claimed: bool = False) -> ItemResult:
        """``item`` skipped: "claimed" by another process, else as planned (:attr:`BatchItem.kept_other`)."""
        return cls(item, "skipped", reason="claimed" if claimed else "other_video" if item.kept_other else "exists")

    def skipped_line(self) -> str:
        """The message that says it was skipped, and why."""
        why = {"claimed": "another process is writing it", "other_video": "kept: it holds another video"}
        return f"skipped {self.item.target} ({why.get(self.reason or 'exists', 'exists')})"

    def summary(self, *, frames: bool = False) -> dict[str, Any]:
        """The item as ``ltx generate --json`` reports it: skipped (with its ``reason`` unless "exists"), or
        generated (``kind`` "frames" when written as PNG frames, else "video") with its settings and timings."""
        it = self.item
        if self.status == "skipped":
            obj: dict[str, Any] = {"status": "skipped", "index": it.index, "path": str(it.target),
                                   "prompt": it.prompt, "seed": it.seed}
            if self.reason not in (None, "exists"):
                obj["reason"] = self.reason
            return obj
        return {"status": "ok", "index": it.index, "path": str(self.path), "kind": "frames" if frames else "video",
                "prompt": it.prompt, "enhanced_prompt": self.record.get("enhanced_prompt"), "seed": self.record["seed"], "model": self.record["model"],
                "settings": self.settings, "timings": self.timings,
                **({"latents_path": str(self.latents_path)} if self.latents_path is not None else {})}

    def written(self) -> str:
        """The line that says a generated item was written: its path, size, frames, seed, time (and latents)."""
        s = self.settings
        latents = f"; latents in {self.latents_path}" if self.latents_path is not None else ""
        return (f"wrote {self.path} ({s['num_frames']} frames {s['width']}x{s['height']} @ {s['frame_rate']} fps, "
                f"seed {self.record['seed']}, {self.timings['total_s']:.1f} s){latents}")


# --- batch files ---------------------------------------------------------------------------------------------

_LONG_KEYS = ("window", "overlap", "overlap_strength", "adain", "prompt_schedule", "temporal_upscale", "resume")


def _length(row: Mapping[str, Any], defaults: Mapping[str, Any]) -> tuple[Any, Any]:
    """A batch item's ``(num_frames, duration)``: the row's length (either), else the command's (:func:`build_items`
    refuses a command giving both); a row giving both is a ValueError. A ``duration`` becomes frames in
    :func:`_complete`, at the item's frame rate (which an input video may give)."""
    if row.get("num_frames") is not None and row.get("duration") is not None:
        raise ValueError("give either num_frames or duration, not both")
    own = row.get("num_frames") is not None or row.get("duration") is not None
    return (row if own else defaults).get("num_frames"), (row if own else defaults).get("duration")


def _long_fields(pick: Callable[[str], Any], duration: Any) -> dict[str, Any]:
    """A batch item's long-video fields, each the row's, else the command's (``pick``), and its ``duration`` in
    seconds."""
    fields = {k: pick(k) for k in _LONG_KEYS if pick(k) is not None}
    return fields | ({"duration": timeline.parse_duration(duration)} if duration is not None else {})


def _prefixed(e: ValueError, where: str) -> ValueError:
    """``e`` with ``where`` in front, unless it starts so already (a MediaError stays one: its exit code differs)."""
    from . import media

    if not where or str(e).startswith(where):
        return e
    return (media.MediaError if isinstance(e, media.MediaError) else ValueError)(f"{where}{e}")


def build_items(
    rows: Sequence[Mapping[str, Any]], *, preset: Preset | None = None, defaults: Mapping[str, Any] | None = None,
    conditions: Sequence[Condition] = (), inputs: InputFrames | None = None,
) -> list[BatchItem]:
    """Rows (:func:`ltxcli.batch.parse_batch`'s dicts) -> items. Each value: the row's, else ``defaults``' (the command's
    options), else the preset's (sizes and frame rate). ``conditions`` come first in every item (not in a row
    whose ``conditions`` were ``["none"]``); a row's ``image`` is a first-frame condition before them, its
    ``conditions`` follow. ``inputs``: where an extension's video is decoded, once
    (:func:`ltxcli.source.source_defaults`)."""
    defaults = defaults or {}
    if defaults.get("num_frames") is not None and defaults.get("duration") is not None:  # the command's, no line's
        raise ValueError("give either num_frames or duration, not both")
    batch_seed = defaults.get("seed")
    items = []
    for i, row in enumerate(rows):
        conds = [] if row.get("_no_conditions") else list(conditions)  # a line's "conditions": ["none"]
        if row.get("image"):
            conds.insert(0, Condition(row["image"], 0, 1.0))
        conds += row.get("conditions") or []
        # paths written as text (an option's value, a batch line, a record) with their "~" expanded
        conds = [replace(c, media=user_media(c.media)) for c in conds]

        def pick(key: str, row: Mapping[str, Any] = row) -> Any:  # sizes left open: _complete fills them
            return row[key] if row.get(key) is not None else defaults.get(key)

        frame_rate, extend = pick("frame_rate"), pick("extend")
        try:
            num_frames, duration = _length(row, defaults)
            long = _long_fields(pick, duration)
        except ValueError as e:
            raise _prefixed(e, f"{row['_where']}: " if row.get("_where") else "") from None
        # a row's explicit "seed": null asks for a random seed of its own, whatever the batch seed
        own_random = "seed" in row and row["seed"] is None
        items.append(BatchItem(
            index=i, prompt=row["prompt"], seed=secrets.randbelow(2**31) if own_random else row.get("seed"),
            seed_drawn=own_random, height=pick("height"), width=pick("width"),
            num_frames=num_frames, frame_rate=None if frame_rate is None else float(frame_rate),
            negative_prompt=pick("negative_prompt"), steps=pick("steps"), guidance_scale=pick("guidance_scale"),
            stg_scale=pick("stg_scale"), stg_mode=pick("stg_mode"), conditions=conds, output=row.get("output"), cache=pick("cache"),
            latents_out=row.get("latents_out"),
            loras=pick("loras"), enhance_prompt=pick("enhance_prompt") or "auto", **long,
            enhanced_prompt=row.get("enhanced_prompt"),  # a redo's (ltxcli.redo): not a batch file's key
            **{k: row[k] for k in SAMPLER_KEYS if k != "stg_mode" and row.get(k) is not None},  # a redo's too
            control=item_control(row, defaults),  # checked here, before any weight
            video=user_media(pick("video")),
            extend=extend if extend is None else replace(extend, video=user_media(extend.video)),
            denoise_strength=0.5 if pick("denoise_strength") is None else pick("denoise_strength"),
            own_size=bool(row.get("_line")) and any(row.get(k) is not None for k in _SIZE_KEYS),
        ))
    _complete(items, preset, batch_seed, wheres=[f"{row['_where']}: " if row.get("_where") else "" for row in rows],
              inputs=inputs)
    return items


def derive_seeds(items: Sequence[BatchItem], batch_seed: int, *, drawn: bool = False, redo: bool = False) -> None:
    """Seed each item without a seed of its own ``batch_seed + index`` (``redo``: also those derived from
    another batch seed before); with several items each records ``batch_seed`` (a single video's seed is the
    batch seed). ``drawn``: ``batch_seed`` was drawn at random. A valid ``batch_seed`` that would give an item an
    invalid seed is a ValueError naming it and the largest usable one (not the derived seed, never given)."""
    last = max((it.index for it in items if it.seed is None or (redo and it.batch_seed is not None)), default=0)
    if 0 <= batch_seed <= SEED_MAX < batch_seed + last:
        raise ValueError(f"seed={batch_seed} is too large for a batch of {len(items)} items (item {last} gets seed + "
                         f"{last}, above 2**63 - 1): use a seed of at most {SEED_MAX - last}")
    for it in items:
        if it.seed is None or (redo and it.batch_seed is not None):
            it.seed = batch_seed + it.index
            it.batch_seed = batch_seed if len(items) > 1 else None
            it.seed_drawn = drawn


def _complete(items: Sequence[BatchItem], preset: Preset | None, batch_seed: int | None = None,
              wheres: Sequence[str] = (), inputs: InputFrames | None = None) -> None:
    """Fill what an item leaves open: a seed derived from ``batch_seed`` (None: a random one, drawn here), the
    frames of a ``duration``, an input video's size, rate and length (:func:`ltxcli.source.source_defaults`), the
    preset's size and rate. ``wheres``: per item, what its mistakes start with (a batch file's line); ``inputs``:
    :func:`build_items`'."""
    if any(it.seed is None for it in items):
        drawn = batch_seed is None
        derive_seeds(items, secrets.randbelow(2**31) if drawn else batch_seed, drawn=drawn)
    for i, it in enumerate(items):
        if preset is None:
            continue
        try:
            source_defaults(it, preset, inputs)
            if it.duration is not None and it.extend is None:  # the seconds asked for, at the item's rate
                it.num_frames, it.duration, it.from_duration = timeline.duration_frames(it, preset), None, True
            check_source_length(it)
        except ValueError as e:
            raise _prefixed(e, wheres[i] if i < len(wheres) else "") from None
        it.height, it.width, it.num_frames, frame_rate = preset_size(
            preset, it.height, it.width, it.num_frames, it.frame_rate)
        it.frame_rate = float(frame_rate)


# --- validation ----------------------------------------------------------------------------------------------


def _nearest_even(v: int) -> str:
    return f"{v - 1} or {v + 1}"


def check_range(name: str, value: float, lo: float, hi: float, example: str = "") -> None:
    """``lo <= value <= hi`` (finite), else a ValueError naming the value, the rule and the nearest valid value."""
    if (isinstance(value, int) or math.isfinite(value)) and lo <= value <= hi:
        return
    nearest = hi if value != value else min(max(value, lo), hi)  # NaN -> the top (any valid value would do)
    hint = example or f"use {_fmt(nearest)}"
    raise ValueError(f"{name}={_fmt(value)} must be in [{_fmt(lo)}, {_fmt(hi)}] ({hint})")


def _fmt(v: float) -> str:
    return "2**63 - 1" if v == SEED_MAX else number_text(v)


def _check_sizes(item: BatchItem, max_pos: Sequence[int], frames_out: bool) -> None:

    assert item.height is not None and item.width is not None and item.num_frames is not None
    assert item.frame_rate is not None
    lowest = 1 if frames_out else 2
    ph, pw, _ = padded_size(item.height, item.width, 1)
    for name, v, padded, limit in (("height", item.height, ph, max_pos[1]), ("width", item.width, pw, max_pos[2])):
        if v < lowest:
            raise ValueError(f"{name}={v} must be at least {lowest} (e.g. 512; sizes are padded to multiples of 32)")
        if padded > limit:
            raise ValueError(f"{name}={v} pads to {padded}, above the model's position range of "
                             f"{limit} px (use at most {limit})")
        if not frames_out and v % 2:
            raise ValueError(f"{name}={v} must be even for an H.264 MP4 (4:2:0 chroma): use "
                             f"{_nearest_even(v)}, or write PNG frames with --frames-dir")
    if item.num_frames < 1:
        raise ValueError(f"num_frames={item.num_frames} must be at least 1 (e.g. 121; 8k + 1 frames avoid padding)")
    if item.num_frames > MAX_FRAMES:
        raise ValueError(f"num_frames={item.num_frames} is above {MAX_FRAMES:,} frames (over 11 hours at 24 fps): "
                         "give the length of the video wanted")
    check_frame_rate(item.frame_rate)
    # the model's time range, for a long video that of one window
    check_size(item.height, item.width, long_video.checked_frames(item, max_pos[0]), item.frame_rate, max_pos)


def validate_item(item: BatchItem, max_pos: Sequence[int], *, frames_out: bool = False, where: str = "",
                  decoded: dict[tuple[str, int], Any] | None = None, preset: Preset | None = None) -> None:
    """Everything that can be checked without the model (``max_pos``: its positional range, seconds and pixels;
    ``preset``: the item's settings are resolved against it too). A mistake is a ValueError that starts with
    ``where`` and names the value, the rule and the nearest valid value; an unreadable condition file is a
    :class:`~ltxcli.media.MediaError`. ``frames_out``: the output is PNG frames (odd sizes allowed). Condition
    files are decoded here, once (``decoded``: shared by the items of one run, so a file many use is read once)."""
    from .conditions import check_condition  # torch: imported with the first item checked, not with the CLI
    from .control import check_control_timing

    try:
        with warnings.catch_warnings(record=True) as seen:  # (a strength without a video: named with its line)
            warnings.simplefilter("always")
            checked = check_fields(item)
        for w in seen:
            warnings.warn(f"{where}{w.message}", stacklevel=2)
        # None: the defaults; an ignored strength the default (the run's checks do not warn again)
        item.conditions, item.enhance_prompt = checked.conditions, checked.enhance_prompt
        item.denoise_strength = checked.denoise_strength
        if not item.prompt.strip():
            # an empty prompt is enhanced as any other short one (inference.py counts 0 words < threshold)
            kind = request_plan(item, preset).kind if preset is not None else None
            follows = {"t2v": "a prompt the enhancer writes from nothing", "i2v": "the enhancer's rewrite of the "
                       "first frame's caption"}.get(kind or "", "only the negative prompt"
                                                    + (" and the conditions" if item.conditions else ""))
            warnings.warn(f"{where}the prompt is empty: the video follows {follows} (give a PROMPT)", stacklevel=2)
        _check_sizes(item, max_pos, frames_out)
        if item.steps is not None:
            check_range("steps", item.steps, 1, MAX_STEPS)
        for name, v in (("guidance_scale", item.guidance_scale), ("stg_scale", item.stg_scale)):
            if v is not None and (not math.isfinite(v) or v < 0):
                raise ValueError(f"{name}={number_text(v)} must be a finite number >= 0 (use 0; guidance 1 "
                                 "disables CFG, stg 0 disables STG)")
        assert item.seed is not None
        check_range("seed", item.seed, 0, SEED_MAX)
        parse_cache(item.cache)
        item.conditions = [check_condition(c, item.height, item.width, item.num_frames, decoded)
                           for c in item.conditions]
        if item.control is not None:
            check_control_timing(item.control, item.num_frames)
        long_video.check(item)  # window settings and the prompt schedule (read here)
        long_video.check_seed(item, max_pos[0])  # room for the window seeds
        check_extension(item, preset)
        check_window_seeds(item, max_pos[0])  # an extension in windows: room for its window seeds
        if preset is not None and item.extend is None:  # the passes too (an extension resolves inside run_extension)
            resolve_request(item, preset)
    except ValueError as e:
        raise _prefixed(e, where) from None


def _generation(item: BatchItem, preset: Preset, max_seconds: float) -> tuple[GenerationRequest, int]:
    """The generation ``item`` (validated: :func:`validate_item`) runs (an extension's:
    :func:`ltxcli.extend.generation_request`, as :func:`~ltxcli.extend.run_extension` makes it) and the windows it
    is made in (1: one generation, both passes of a multi-scale model; more: one pass each)."""
    gen, ext = item, item.extend
    if ext is not None:  # (validate_item filled in num_frames, the output's, and checked the plan)
        assert item.num_frames is not None
        gen = generation_request(item, plan_windows(item, item.num_frames - ext.frames, max_seconds), warn=False)
    p = long_video.plan(gen, preset, max_seconds, ext is not None and ext.backward)  # (the seed is drawn)
    return gen, 1 if p is None else len(p.windows)


def needs_upsampler(items: Sequence[BatchItem], preset: Preset, max_seconds: float) -> bool:
    """Whether a multi-scale ``preset``'s latent upsampler is used by any of ``items`` that runs (validated, not
    skipped): each made in one generation runs both passes and the upsampler between them; one in several windows
    runs one pass per window (:func:`ltxcli.long_video.generate`), no upsampler. False for a one-pass preset."""
    return preset.multi_scale and any(_generation(it, preset, max_seconds)[1] == 1 for it in items if not it.skip)


def warn_ignored(item: BatchItem, preset: Preset, max_seconds: float, where: str = "") -> None:
    """Warn of options ``item`` gives that change nothing (checked, as :func:`validate_item` leaves it):

    - the overlap, its strength and AdaIN act between windows and ``resume`` keeps finished ones, but a video made
      in one window (or none: a plain run, :func:`ltxcli.long_video.generate`) has no other (an extension: its
      generation's windows, :func:`ltxcli.extend.generation_request`, as :func:`~ltxcli.extend.run_extension`
      makes them);
    - a negative prompt acts through classifier-free guidance alone, which no step runs when every pass's
      guidance_scale is 1 or less (official: ``cfg > 1``; :meth:`ltxcli.pipeline.Pipeline.run` then encodes none);
      the STG mode, likewise, through STG, off where every stg_scale is 0 (official: ``stg > 0``); a video in
      several windows runs the first pass alone, so only its scales count there."""
    from .passes import as_list
    from .sampling import cfg_active, stg_active

    given = [f"--{key.replace('_', '-')}" for key in ("overlap", "overlap_strength", "adain", "resume")
             if getattr(item, key) not in (None, False)]
    if not given and item.negative_prompt is None and item.stg_mode is None:
        return
    gen, windows = _generation(item, preset, max_seconds)
    if given and windows == 1:
        names = given[0] if len(given) == 1 else f"{', '.join(given[:-1])} and {given[-1]}"
        warnings.warn(f"{where}{names} {'is' if len(given) == 1 else 'are'} ignored: the video is made in one "
                      "window (they act between windows)", stacklevel=2)
    if item.negative_prompt is None and item.stg_mode is None:
        return
    # several windows run one pass each, the first's (long_video._one_pass): a second pass's CFG or STG runs nowhere
    passes = resolve_request(gen, preset).passes[: 1 if windows > 1 else None]
    if item.negative_prompt is not None and not any(cfg_active(g) for p in passes for g in as_list(p.guidance_scale)):
        warnings.warn(f"{where}--negative-prompt is ignored: it acts through classifier-free guidance alone, which "
                      "guidance_scale 1 (or less) turns off (give --guidance-scale above 1)", stacklevel=2)
    if item.stg_mode is not None and not any(stg_active(g) for p in passes for g in as_list(p.stg_scale)):
        warnings.warn(f"{where}--stg-mode is ignored: no step runs STG, which stg_scale 0 turns off (give "
                      "--stg-scale above 0)", stacklevel=2)


# --- outputs -------------------------------------------------------------------------------------------------


def plan_outputs(
    items: Sequence[BatchItem], *, output: str | None = None, frames: bool = False, model: str = "",
    batch: bool = False, overwrite: bool = False, skip_existing: bool = False, preset: Preset | None = None,
    compute: Mapping[str, Any] | None = None,
) -> str | None:
    """Set every item's ``target`` (its own ``output``, else ``output``: a file, folder or pattern, see
    :mod:`ltxcli.naming`; ``frames``: a folder of PNG frames) and ``skip``; returns a note for the user about
    the batch seed, or None.

    ``skip_existing``: an item whose output exists is skipped. Outputs are recognised by their record
    (:mod:`ltxcli.resume`: index, prompt, settings; ``preset`` resolves the settings to compare), so a rerun of
    a batch whose seed was drawn at random takes the earlier run's batch seed and skips what it wrote whatever
    the names; an existing target made for another prompt or settings is kept and skipped with a warning.
    ``compute``: the compute dtype and float8 use the run will record (:func:`ltxcli.resume.matches`).

    ``batch``: default names start with the item index. Refused (ValueError) before any work: two items with one
    target, an existing target without ``overwrite``/``skip_existing``; (:class:`OutputError`) a target that
    cannot be created."""
    from . import resume

    if overwrite and skip_existing:
        raise ValueError("--overwrite and --skip-existing contradict each other: pick one")
    for value in {output, *(it.output for it in items)}:
        if value is not None and naming.is_pattern(value):
            naming.check_pattern(value)
    found = resume.find_previous(items, output=output, frames=frames, batch=batch, preset=preset,
                                 model=model, compute=compute) if skip_existing else {}
    note = None
    drawn = [it for it in items if it.seed_drawn and it.batch_seed is not None]
    earlier = resume.earlier_batch_seed(found)
    if drawn and earlier is not None:
        derive_seeds(items, earlier, drawn=True, redo=True)
        note = f"resuming batch seed {earlier} (recorded in the existing outputs)"
    elif drawn:
        note = f"batch seed {drawn[0].batch_seed} (items without a seed use it + their index; --seed " \
               f"{drawn[0].batch_seed} repeats them)"
    shared = sum(it.output is None for it in items)
    seen: dict[Path, int] = {}
    for it in items:
        assert it.seed is not None and it.width is not None and it.height is not None
        assert it.num_frames is not None and it.frame_rate is not None
        if it.index in found:  # written by an earlier run, under this or another name
            target, rec = found[it.index]
            it.seed, state = rec.get("seed", it.seed), None
        else:
            values = naming.fields(index=it.index, seed=it.seed, prompt=it.prompt, width=it.width,
                                   height=it.height, num_frames=it.num_frames, frame_rate=it.frame_rate, model=model)
            value = it.output if it.output is not None else output
            many = it.output is None and shared > 1
            target = naming.output_path(value, values, batch=batch, frames=frames, many=many)
            state = None  # the seed an interrupted run kept beside the target, each state read once
            if it.resume and it.seed_drawn and state_path(target).exists():
                state = saved_seed(state_path(target))
            elif it.resume and it.seed_drawn:  # a name holding the seed
                target, state = interrupted_target(
                    naming.output_glob(value, values, batch=batch, frames=frames, many=many),
                    lambda s, v=value, f=values, m=many: naming.output_path(
                        v, {**f, "seed": s}, batch=batch, frames=frames, many=m)) or (target, None)
        it.target = target
        if state is not None and state != it.seed:  # an interrupted long video of this item: continue its seed
            if it.batch_seed is not None:
                derive_seeds(items, state - it.index, drawn=True, redo=True)
            it.seed = state
            note = (f"seed {state}, kept by an interrupted run beside {target} (its finished windows are used if "
                    "the rest of the command is the same)")
        key = Path(os.path.realpath(target))  # one file under two spellings (sub/../x.mp4, a linked folder)
        if key in seen:
            raise ValueError(f"items {seen[key]} and {it.index} would both write {target}: "
                             "use a pattern with {index} or {seed}")
        seen[key] = it.index
        it.skip = it.kept_other = False
        if target.exists() and frames != target.is_dir():  # before "pass --overwrite": that would not help
            raise OutputError(f"cannot write {target}: it is a folder" if not frames else
                              f"cannot write {target}: it exists and is not a folder")
        if target.exists() or target.is_symlink():
            if skip_existing:
                it.skip = True
                rec = found[it.index][1] if it.index in found else resume.read_record(target)
                if rec is not None and it.index not in found:
                    it.kept_other = True
                    warnings.warn(f"{target} exists but holds a video of another prompt or other settings "
                                  f"(index {rec.get('index', 0)}, seed {rec.get('seed')}): kept and skipped; "
                                  "--overwrite replaces it", stacklevel=2)
            elif not overwrite:
                raise ValueError(f"{target} already exists: pass --overwrite to replace it, --skip-existing to keep "
                                 f"it, or choose another {'--frames-dir' if frames else '-o'}")
        if not it.skip:
            check_writable(target)  # a read-only or impossible folder fails before any work
    return note


def check_writable(target: Path) -> None:
    """Raise :class:`OutputError` now if ``target`` cannot be created: the nearest existing folder above it must
    accept a new file (a probe file is created there and removed at once). Missing folders in between are
    created later, at write time."""
    parent = target.parent
    anc = parent
    while not (anc.exists() or anc.is_symlink()) and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise OutputError(f"cannot write {target}: {anc} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".ltx-write-test-", dir=anc)
    except OSError as e:
        reason = os.strerror(e.errno).lower() if e.errno else str(e)
        raise OutputError(f"cannot write {target}: cannot create files in {anc} ({reason})") from None
    os.close(fd)
    os.unlink(probe)


def write_output(
    result: GenerationResult, target: Path, *, record: Mapping[str, Any] | None, frames: bool = False,
    overwrite: bool = False, crf: int | None = None, preset: str | None = None, progress: ProgressFn | None = None,
) -> Path:
    """Write ``result`` atomically: a video (container and codec from the suffix, ``crf``, ``preset``: see
    :func:`ltxcli.media.write_video`; ``progress`` gets "write" events) or (``frames``) PNG frames, with ``record``.

    Raises FileExistsError (``target`` exists, not ``overwrite``) or :class:`OutputError`; nothing is left
    behind on failure. The one place a batch writes a video."""
    from . import media
    from .progress import counted

    failed: list[Exception] = []  # the frames' own MediaError (a streamed v2v input that stops decoding)
    chunks = counted(_noting(result.frames(), failed), result.settings["num_frames"], progress)  # "write" events
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file in the way is FileExistsError here too, but not an existing output
        raise OutputError(f"cannot write {target}: {e.strerror or e}") from None
    try:
        if frames:
            media.write_png_frames(target, chunks, metadata=record, overwrite=overwrite)
        else:
            media.write_video(target, chunks, fps_number(result.settings["frame_rate"]), metadata=record,
                              overwrite=overwrite, crf=media.DEFAULT_CRF if crf is None else crf, preset=preset)
    except media.MediaError as e:
        if failed and e is failed[0]:
            raise  # the input's (exit 6), not a failure to write
        raise OutputError(str(e)) from None
    except OSError as e:
        if isinstance(e, (FileExistsError, OutputError)):
            raise
        raise OutputError(f"cannot write {target}: {e.strerror or e}") from None
    return target


def _noting(chunks: Iterator[Any], failed: list[Exception]) -> Iterator[Any]:
    """``chunks`` passed through, a MediaError they raise noted in ``failed``."""
    from .media import MediaError

    try:
        yield from chunks
    except MediaError as e:
        failed.append(e)
        raise


def save_video(result: GenerationResult, path: str | Path, *, overwrite: bool = False,
               model: str | None = None) -> Path:
    """Write a :class:`~ltxcli.result.GenerationResult` as an MP4 with its generation record (prompt, seed,
    model, settings; ``ltx info`` shows it), atomically. ``model``: the name to record (default: the
    pipeline's). Raises FileExistsError if ``path`` exists and not ``overwrite``, :class:`OutputError` if it
    cannot be written."""
    return write_output(result, Path(path), record=record(result, model=model) | encoding(Path(path)),
                        overwrite=overwrite)


# --- running -------------------------------------------------------------------------------------------------


def _generate(pipe: Pipeline, item: BatchItem, *, progress: ProgressFn | None, stream: bool,
              keep_state: bool, inputs: InputFrames | None = None) -> GenerationResult:
    """One item: an extension through :func:`ltxcli.extend.run_extension` (in windows when its generation needs
    them), anything else through :func:`ltxcli.long_video.generate` (in windows when it asks for them or
    outlasts the model, else ``pipe.run``).
    Every rank of a split video reads the resume state; the writing one (``keep_state``) alone keeps it."""
    resume = state_path(item.target) if item.resume and item.target is not None else None
    if item.extend is not None:
        return run_extension(pipe, item, progress=progress, stream=stream, resume=resume, keep_state=keep_state,
                             inputs=inputs)
    assert item.target is not None
    return long_video.generate(pipe, item, progress=progress, stream=stream, resume=resume, keep_state=keep_state)


def run_batch(
    pipe: Pipeline, items: Iterable[BatchItem], *, output: str | os.PathLike[str] | None = None, frames: bool = False,
    overwrite: bool = False, skip_existing: bool = False, claim: bool | None = None, model: str | None = None,
    write: bool = True, load_s: float = 0.0,
    progress: Callable[[BatchItem], AbstractContextManager[ProgressFn | None]] | None = None, stream: bool = False,
    crf: int | None = None, preset: str | None = None, inputs: InputFrames | None = None,
) -> Iterator[ItemResult]:
    """Generate every item with ``pipe`` and write it; yields one :class:`ItemResult` per item, in order, as
    each finishes (skipped ones included).

    Items without a ``target`` (or all, given ``output``) are first completed from ``pipe.preset``, validated and planned here
    (:func:`plan_outputs` with ``output``, ``frames``, ``overwrite``, ``skip_existing``; ``model`` is the
    ``{model}`` pattern field and the record's model, default ``pipe.name``). ``claim`` (default:
    ``skip_existing``): claim each output before generating it
    (:func:`ltxcli.parallel.orchestrate.claim_output`), so processes sharing an output folder never generate the
    same item twice. ``write`` False: generate only (the other ranks of a video split across processes). ``load_s`` is reported in the first generated item's
    timings. ``progress(item)``: a context manager giving the item's progress callback. ``stream``: decode each
    written item while writing it (:meth:`~ltxcli.result.GenerationResult.frames`: uint8 chunks, no float32
    copy of the whole video on the host); its result then has ``video=None``. ``crf``, ``preset``: the encoder's.
    An item whose ``loras`` is None gets the LoRAs the pipeline holds as the batch begins; it holds them again
    once the batch ends. ``inputs``: extension inputs decoded already (:class:`ltxcli.extend.InputFrames`, the
    enhancement stage's), taken instead of decoding them again; without it the batch makes its own. Items
    extending the same file take one decoding (the last input held between items)."""
    from .parallel.orchestrate import claim_output, release_claim

    check_run_options(progress, stream)  # (progress: a factory of each item's callback) before any item is planned
    items = list(items)  # a generator too: the items are planned, then generated
    output = None if output is None else os.fspath(output)
    for it in items:
        if not isinstance(it, BatchItem):
            raise FieldTypeError(f"run_batch items must be ltxcli.BatchItem (a request and where its video goes), "
                                 f"not {type(it).__name__}")
    if len({id(it) for it in items}) < len(items):
        raise ValueError("the same BatchItem is listed twice: give each video its own item")
    base_loras = list(pipe.lora_specs)  # an item without its own: these, not those the item before it merged
    if output is not None or any(it.target is None for it in items):  # items of an earlier run: planned anew
        _plan_here(pipe, items, output=output, frames=frames, model=model, overwrite=overwrite,
                   skip_existing=skip_existing)
    if claim is None:
        claim = skip_existing
    inputs = InputFrames() if inputs is None else inputs
    inputs.expect(it.extend.video for it in items if it.extend is not None and not it.skip)
    # the load is reported with the first item to generate (None: every item is skipped)
    first = next((it for it in items if not it.skip), None)
    try:  # the pipeline is left with the LoRAs it held as the batch began, not the last item's
        for it in items:
            assert it.target is not None
            if it.skip:
                yield ItemResult.skipped(it)
                continue
            if claim and not claim_output(it.target):
                # another rank or job is writing it, or has written it since the outputs were planned
                yield ItemResult.skipped(it, claimed=not it.target.exists())
                continue
            try:
                t_start = time.perf_counter()
                with progress(it) if progress is not None else nullcontext(None) as callback:
                    # A streamed result is decoded inside the write, as uint8 chunks checked for NaN/Inf on the way
                    # (a broken VAE shows there); written otherwise, the same check runs on the video's chunks.
                    # (the same video whether or not the items before it ran; the caller's item is left as it is)
                    one = it if it.loras is not None else replace(it, loras=base_loras)
                    result = _generate(pipe, one, progress=callback, stream=stream and write, keep_state=write,
                                       inputs=inputs)
                    rec = record(result, model=model) | batch_fields(it)
                    rec |= {} if frames else encoding(it.target, crf, preset)  # PNG frames are lossless
                    t_write = time.perf_counter()
                    if write:
                        write_output(result, it.target, record=rec, frames=frames, overwrite=overwrite, crf=crf,
                                     preset=preset, progress=callback)
                item_load_s = load_s if it is first else 0.0
                # a streamed decode ran inside the write: its time is decode_s, the rest write_s
                decode_s = result.timings.get("decode_s", 0.0) if stream and write else 0.0
                timings = {"load_s": item_load_s, **result.timings, "write_s": time.perf_counter() - t_write - decode_s}
                timings["total_s"] = item_load_s + time.perf_counter() - t_start
            except KeyboardInterrupt as e:  # (SIGTERM, SIGHUP too) the finished windows stay for the next --resume
                if it.resume and state_path(it.target).is_file():
                    keeps_resume_state(e, state_path(it.target))
                raise
            except Exception as e:  # out of memory: the advice names this item's own size keys, if it has any
                note_failed_item(e, it)
                raise
            finally:
                if claim:
                    release_claim(it.target)
            yield ItemResult(it, "ok", result=result, settings=run_settings(result), record=rec,
                             timings={k: round(v, 4) for k, v in timings.items()})
    finally:
        pipe.set_loras(base_loras, download=False)  # (nothing is done when they are still merged)


def _plan_here(
    pipe: Pipeline, items: Sequence[BatchItem], *, output: str | None, frames: bool, model: str | None,
    overwrite: bool, skip_existing: bool,
) -> None:
    """:func:`run_batch` for a Python caller: index, complete, validate and plan the items against ``pipe``."""
    for i, it in enumerate(items):
        it.index = i
    _complete(items, pipe.preset)
    max_pos = pipe.transformer.config.positional_embedding_max_pos
    decoded: dict[tuple[str, int], Any] = {}  # a file several items use is read once
    for it in items:
        validate_item(it, max_pos, frames_out=frames, decoded=decoded, preset=pipe.preset)
    name = pipe.name if model is None else model
    plan_outputs(items, output=output, frames=frames, model=naming.model_field(name, is_path=Path(name).exists()),
                 batch=len(items) > 1, overwrite=overwrite, skip_existing=skip_existing, preset=pipe.preset,
                 compute=pipe.compute_record())


__all__ = [
    "MAX_FRAMES", "MAX_FRAME_RATE", "MAX_STEPS", "SEED_MAX", "BatchItem", "ItemResult", "OutputError",
    "batch_fields", "build_items", "check_range", "check_writable", "derive_seeds", "encoding",
    "needs_upsampler", "plan_outputs", "record", "run_batch", "run_settings", "save_video",
    "validate_item", "warn_ignored", "write_output",
]
