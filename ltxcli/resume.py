"""Resuming a batch: finding the outputs an earlier run of the same batch already wrote, by their records.

Every written file carries its generation record (:func:`ltxcli.runner.record`): the prompt, seed and settings,
and in a batch of several items its ``index`` and the ``batch_seed`` the items without a seed of their own
derived theirs from (``seed = batch_seed + index``). A rerun with ``skip_existing`` that drew a new random batch
seed would name and seed its items differently; :func:`find_previous` looks where the items would be written
whatever the seed (:func:`ltxcli.naming.output_glob`), reads the records found there and matches them to the
items by index, prompt and settings. :func:`ltxcli.runner.plan_outputs` then takes the earlier batch seed and
skips the matched items, so the rerun regenerates nothing already written and writes no duplicate.
"""

from __future__ import annotations

import glob
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import naming
from .paths import user_path
from .request import media_path

if TYPE_CHECKING:
    from .batch import BatchItem
    from .presets import Preset

#: Compared with the item's own value when it has one; ``prompt`` and the size always.
_SIZE_KEYS = ("height", "width")  # the length and rate: below


def read_record(path: Path) -> dict[str, Any] | None:
    """The ltx record of an output (an MP4, or a folder of PNG frames); None when there is none or the file
    cannot be read (a partial or foreign file is simply not recognised)."""
    from . import media

    try:
        return media.read_record(path)
    except (media.MediaError, OSError, ValueError):
        return None


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def matches(item: BatchItem, rec: Mapping[str, Any], *, preset: Preset | None = None, model: str = "",
            compute: Mapping[str, Any] | None = None) -> bool:
    """Whether ``rec`` (a file's record) is the output of ``item``: the same place in the batch (``index``, 0 for
    a single video), prompt, size, frame rate, conditions, LoRAs, control, input video, extension, temporal
    upscale, enhancement mode and (with ``preset``) resolved pass settings, step cache and negative prompt; the same model when ``model`` (the ``{model}`` field) is given; the same seed unless the
    item's was drawn at random (``seed_drawn``: a rerun cannot know it); with ``compute`` (``{"dtype": "bfloat16",
    "fp8": None | "compute" | "storage", "weights_dtype": None | "fp8" | "int8"}``, what the run will record) the
    same compute dtype, float8 use and weight storage (a record written before ``fp8`` was recorded is compared on
    ``dtype`` only; one written before ``weights_dtype`` stored fp8 or nothing, as its ``fp8`` says)."""
    from .request import resolve_request

    if rec.get("index", 0) != item.index or rec.get("prompt") != item.prompt:
        return False
    if not item.seed_drawn and rec.get("seed") != item.seed:
        return False
    # a temporal upscale records the output's length and rate, and the generation's (the item's) beside them
    made = rec.get("temporal_upscale") if item.temporal_upscale else None
    made = made if isinstance(made, Mapping) else {k: rec.get(k) for k in ("num_frames", "frame_rate")}
    if any(rec.get(k) != getattr(item, k) for k in _SIZE_KEYS):
        return False
    if made.get("num_frames") != item.num_frames or item.frame_rate is None:
        return False
    if naming.fps_number(made.get("frame_rate") or 0) != naming.fps_number(item.frame_rate):
        return False
    recorded_model = str(rec.get("model", ""))
    if model and model not in (recorded_model, Path(recorded_model).stem):
        return False
    # a checked item's condition holds its decoded file (DecodedMedia, a PathLike naming it)
    conds = [{"path": media_path(c.media), "frame": c.frame,
              "strength": float(c.strength)} for c in item.conditions]
    if _json(conds) != _json(rec.get("conditions", [])):
        return False
    if not _same_inputs(item, rec):
        return False
    if "fp8" in rec and "weights_dtype" not in rec:  # recorded before int8 storage existed
        rec = {**rec, "weights_dtype": "fp8" if rec["fp8"] == "storage" else None}
    if compute is not None and any(rec.get(k) != v for k, v in compute.items() if k in rec or k == "dtype"):
        return False
    if preset is None:
        wanted = {"steps": item.steps, "guidance_scale": item.guidance_scale, "stg_scale": item.stg_scale,
                  "negative_prompt": item.negative_prompt}
        return all(v is None or rec.get(k) == v for k, v in wanted.items())
    # an extension's record holds the settings of its generation (ltxcli.extend), which resolve as the item does
    # without the extension; its frames and conditions, in the output's frames, were compared above
    plain = item if item.extend is None else replace(item, extend=None, num_frames=None, conditions=())
    try:
        r = resolve_request(plain, preset)
    except ValueError:
        return False
    settings = r.settings()
    if settings["stg_mode"] != (rec.get("stg_mode") or preset.stg_mode):  # older records: the preset's
        return False
    cache = settings.get("cache")  # the step cache's mode and threshold (a record without one had none)
    recorded_cache = rec.get("cache") or {"mode": "none", "threshold": 0.0}
    if cache is not None and any(recorded_cache.get(k) != v for k, v in cache.items()):
        return False
    return r.negative_prompt == rec.get("negative_prompt") and _json(settings["passes"]) == rec.get("passes")


def _same_lora(spec: Any, rec: Mapping[str, Any]) -> bool:
    """A LoRA spec (registry name or file, scale) against a record's ``{"name", "path", "sha256", "scale"}``: a
    registry LoRA by its name (its download is checked against weights.toml), a file by its content, the sha256
    the record stores (another file at the recorded path is another LoRA; the same file moved is the same)."""
    from .adapters.lora import lora_file, lora_sha256

    if float(rec.get("scale", 1.0)) != float(spec.scale) or (spec.sha256 and spec.sha256 != rec.get("sha256")):
        return False
    if spec.source == rec.get("name"):
        return True
    path = lora_file(Path(user_path(spec.source)))  # a PEFT folder: its weights file, as recorded
    return path.is_file() and lora_sha256(path) == rec.get("sha256")


def _same_inputs(item: BatchItem, rec: Mapping[str, Any]) -> bool:
    """The request fields besides prompt, size and sampling that change the frames: the LoRAs merged (an item
    without any: none, what ``ltx generate`` without ``--lora`` runs), the IC-LoRA control, the video-to-video
    input and strength, the extension, the temporal upscale, a long video's windows and the prompt enhancement
    mode."""
    from .adapters.lora import lora_specs
    from .control import control_record

    specs = lora_specs(item.loras)
    recorded = rec.get("loras") or []
    if len(specs) != len(recorded) or not all(_same_lora(s, r) for s, r in zip(specs, recorded, strict=True)):
        return False
    if _json(control_record(item.control)) != rec.get("control"):
        return False
    video = str(item.video) if isinstance(item.video, (str, Path)) else None
    if video != rec.get("video") or (video is not None and rec.get("denoise_strength") != item.denoise_strength):
        return False
    if (item.extend.record() if item.extend is not None else None) != _without(rec.get("extend"), "context_frames"):
        return False
    if bool(item.temporal_upscale) != bool(rec.get("temporal_upscale")):
        return False
    if not _same_windows(item, rec):
        return False
    return item.enhance_prompt == rec.get("enhance_prompt", item.enhance_prompt)


def _same_windows(item: BatchItem, rec: Mapping[str, Any]) -> bool:
    """A long video's windows (the record's ``long``: made in several windows) against the item's settings (their
    defaults where unset) and the prompt each window takes (a ``|`` part or the schedule's entry, read here)."""
    from . import long_video
    from .extend import recorded_offset

    long = rec.get("long")
    if not isinstance(long, Mapping):
        return True  # one generation: the item's window settings had nothing to act on
    window, overlap, strength, adain = long_video.check(item)
    if [window, overlap, strength, adain] != [long.get(k) for k in ("window", "overlap", "overlap_strength", "adain")]:
        return False
    windows = long.get("windows") or []
    spans = [(int(w["first_frame"]) // 8, 0) for w in windows]  # window_prompts reads the latent start of each
    assert item.frame_rate is not None
    # an extension's windows count generation frames, its schedule output frames
    prompts = long_video.window_prompts(item, spans, float(item.frame_rate), recorded_offset(rec))
    return prompts == [w.get("prompt") for w in windows]


def _without(value: Any, key: str) -> Any:
    return {k: v for k, v in value.items() if k != key} if isinstance(value, Mapping) else value


def find_previous(
    items: Sequence[BatchItem], *, output: str | None, frames: bool, batch: bool, preset: Preset | None = None,
    model: str = "", compute: Mapping[str, Any] | None = None,
) -> dict[int, tuple[Path, dict[str, Any]]]:
    """Item index -> ``(path, record)`` of an existing output that :func:`matches` it, found where ``output``
    (see :func:`ltxcli.naming.output_path`) would put the item whatever its seed. Items need their sizes and
    frame rate (completed); an item with its own ``output`` is looked for there."""
    shared = sum(it.output is None for it in items)
    globs: dict[int, str] = {}
    for it in items:
        assert it.width is not None and it.height is not None and it.num_frames is not None
        assert it.frame_rate is not None
        values = naming.fields(index=it.index, seed=0, prompt=it.prompt, width=it.width, height=it.height,
                               num_frames=it.num_frames, frame_rate=it.frame_rate, model=model)
        value = it.output if it.output is not None else output
        globs[it.index] = naming.output_glob(value, values, batch=batch, frames=frames,
                                             many=it.output is None and shared > 1)
    records: dict[Path, dict[str, Any] | None] = {}
    found: dict[int, tuple[Path, dict[str, Any]]] = {}
    for it in items:
        for name in sorted(glob.glob(globs[it.index])):
            path = Path(name)
            if path not in records:
                records[path] = read_record(path)
            rec = records[path]
            if rec is not None and matches(it, rec, preset=preset, model=model, compute=compute):
                found[it.index] = (path, rec)
                break
    return found


def compute_record(dtype_option: str | None, weights_dtype: str | None, dtype: Any) -> dict[str, Any]:
    """What a run with ``--dtype`` ``dtype_option`` (resolved: ``dtype``) and ``--weights-dtype`` will record as its
    ``dtype``, ``fp8`` (:func:`ltxcli.models.fp8.fp8_mode`) and ``weights_dtype``
    (:func:`ltxcli.models.int8.storage_mode`), for :func:`matches` before the model loads."""
    from .api import is_fp8, weights_storage

    storage = None if is_fp8(dtype_option) else weights_storage(weights_dtype)
    fp8 = "compute" if is_fp8(dtype_option) else "storage" if storage == "fp8" else None
    return {"dtype": str(dtype).removeprefix("torch."), "fp8": fp8, "weights_dtype": storage}


def earlier_batch_seed(found: Mapping[int, tuple[Path, Mapping[str, Any]]]) -> int | None:
    """The batch seed most of the found outputs were derived from (None: none recorded one)."""
    seeds = Counter(rec["batch_seed"] for _, rec in found.values() if isinstance(rec.get("batch_seed"), int))
    return seeds.most_common(1)[0][0] if seeds else None


__all__ = ["compute_record", "earlier_batch_seed", "find_previous", "matches", "read_record"]
