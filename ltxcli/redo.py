"""Redo a generation from the record its video carries (``ltx generate --from old.mp4``).

A video (or PNG frames folder) written by ltx stores its generation record (:func:`ltxcli.runner.record`):
model, how it computed (dtype, float8 matmuls, weight storage, attention option, the CPU GEMM route, VAE
convolutions and tiling), prompt, seed, size, length, frame rate, the sampling values, the step cache, the media it
was conditioned on, its IC-LoRA control, prompt enhancement mode and rewrite, temporal upscale, for a long video its
windows and for a video file its encoding (CRF, x264 preset).
:func:`redo_row` turns it back into the batch row of that generation, leaving out what the caller overrides,
so that the same model, settings and seed give the same frames, bit for bit, on the same machine and software.
The library's sampler values (STG mode, decode timestep and noise, conditioning re-noise, stochastic sampling)
are restored where they differ from the recorded preset's; values the record does not name (STG blocks, ...)
come from the model's preset, as they did; a scalar guidance or step count is only restored when it was one (a
preset's per-interval schedule is the preset's again). Paths of conditions and inputs are used as recorded (relative ones from the current folder).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .extend import recorded_offset
from .formatting import shell_word
from .long_video import bar_prompts
from .paths import user_path
from .presets import PRESETS
from .records import SAMPLER_KEYS
from .request import Condition, Extension

#: Record keys restored as they are (batch-row names).
_PLAIN = ("prompt", "negative_prompt", "height", "width", "num_frames", "frame_rate", "seed")
#: Record keys that are the job's settings, not a batch row's (how the model loads and runs, how the output is
#: written), and ``vae_conv_recorded`` (:class:`ltxcli.job.JobSettings`'s: run the recorded convolutions, an auto
#: unmeasured): the caller takes them out of :func:`redo_row`'s row.
SETTINGS = ("model", "dtype", "weights_dtype", "attention", "cpu_gemm", "vae_conv", "vae_conv_recorded",
            "vae_tiling", "crf", "encoder_preset")
#: What the recorded rewrite was made from (the i2v captioner reads the first condition cropped to the video's
#: size; the model's preset names the enhancer and captioner): one of them given asks for a new rewrite.
_REWRITTEN_FROM = ("seed", "enhance_prompt", "enhancer_model", "caption_model", "conditions", "height", "width",
                   "model", "video")
#: What lays out a per-window record's windows (which window first takes each prompt, and its conditions): one of
#: them given asks for new rewrites of its window prompts too.
_WINDOWS_FROM = ("prompt_schedule", "window", "overlap", "num_frames", "duration", "frame_rate")
#: ``ltx generate --video``'s one value (``given["video"]`` of :func:`redo_row`): not the record's input video. A
#: v2v record is then the text-to-video of its size, length and seed; an extension's the plain generation of the
#: extended video's length (its prompts and conditions as recorded, none of the input's frames kept): what the
#: record asked for, less the input, as --lora none is it less the LoRAs.
NO_VIDEO = "none"
VIDEO_OPTION_HELP = ("none: with --from, not the record's input video: a v2v record's text-to-video, an "
                     "extension's plain generation of the extended length (same seed). Another video: ltx v2v or "
                     "ltx extend.")
_TYPES: dict[str, Any] = {"prompt": str, "negative_prompt": str, "height": int, "width": int, "num_frames": int,
                          "frame_rate": (int, float), "seed": int, "steps": int}


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The generation record of a video, image or frames folder written by ltx (``ValueError`` without one,
    :class:`~ltxcli.media.MediaError` if it cannot be read)."""
    from . import media

    record = media.read_record(user_path(path))
    if not record or "seed" not in record:
        raise ValueError(f"{path}: carries no ltx generation record (only videos written by ltx generate, i2v, "
                         "v2v or extend can be redone)")
    return record


def record_values(record: Mapping[str, Any]) -> dict[str, Any]:
    """A generation record -> the values of the batch row (and the ``model``) that made it."""
    for key, kind in _TYPES.items():  # what later checks take for granted
        v = record.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, kind)):
            raise TypeError(f"{key} is {v!r}")
    values = {k: record[k] for k in _PLAIN if record.get(k) is not None}
    values["model"] = record.get("model")
    # how the model computed (load options, as model): float8 matmuls, else the compute dtype, and the storage
    dtype = "fp8" if record.get("fp8") == "compute" else record.get("dtype")
    if isinstance(dtype, str):
        values["dtype"] = dtype
    if isinstance(record.get("weights_dtype"), str):
        values["weights_dtype"] = record["weights_dtype"]
    elif record.get("fp8") == "storage":  # recorded before int8 storage existed
        values["weights_dtype"] = "fp8"
    # kernels and decoding that change the pixels (the CPU GEMM route: a new calibration can pick the other one)
    for key in ("attention", "cpu_gemm", "vae_conv", "vae_tiling"):
        if isinstance(record.get(key), str):
            values[key] = record[key]
    if record.get("timesteps") is None and record.get("steps") is not None:
        values["steps"] = record["steps"]
    # a number in every pass was given (or is the preset's own, which giving it again leaves as it was); a list is
    # the preset's per-interval schedule, which the other scalar may have kept
    for key in ("guidance_scale", "stg_scale"):
        v = record.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and all(
                p.get(key, v) == v for p in record.get("passes") or () if isinstance(p, Mapping)):
            values[key] = v
    preset = PRESETS.get(record.get("preset") or "")
    for key in SAMPLER_KEYS:  # set apart from the preset's (in Python): the preset's own stay the preset's
        if record.get(key) is not None and (preset is None or record[key] != getattr(preset, key)):
            values[key] = record[key]
    encoded = record.get("encoding")
    if encoded:  # a video's CRF and x264 preset (redo_row keeps them for an output of the same encoder)
        values.update(crf=encoded["crf"], encoder_preset=encoded.get("preset"))
    conditions = []
    for c in record.get("conditions") or []:
        if c.get("path") is None:
            raise ValueError("the record names a condition given in memory (not a file): it cannot be redone")
        conditions.append(Condition(c["path"], _recorded(int, c["frame"], "condition frame"),
                                    _recorded(float, c["strength"], "condition strength")))
    values["conditions"] = conditions
    if record.get("video") is not None:
        values["video"], values["denoise_strength"] = record["video"], record["denoise_strength"]
    if record.get("loras"):  # the record's form (path or name, scale, sha256) is a batch line's
        from .adapters.lora import lora_spec

        values["loras"] = [lora_spec(v) for v in record["loras"]]
    cache = record.get("cache") or {}
    if cache.get("mode") not in (None, "none"):  # a step cache changes the frames: the same mode and threshold
        values["cache"] = f"{cache['mode']}:{cache['threshold']}"
    control = record.get("control")
    if control:
        if control.get("source") is None:
            raise ValueError("the record names a control given in memory (not a file): it cannot be redone")
        values["control"] = {"path": control["source"], "strength": control["strength"], "kind": control["kind"]}
    if record.get("enhance_prompt") is not None:  # the mode, and the rewrite it made: encoded again, no enhancer
        values["enhance_prompt"] = record["enhance_prompt"]  # runs (the run's --enhancer-model is not recorded)
    elif "enhance_prompt" not in record:  # written before prompt enhancement existed: nothing was rewritten
        values["enhance_prompt"] = "off"
    if isinstance(record.get("enhanced_prompt"), (str, Mapping)):  # per-window prompts: a rewrite by window prompt
        values["enhanced_prompt"] = record["enhanced_prompt"]
    upscaled = record.get("temporal_upscale")
    if upscaled:  # the record's length and rate are the output's: the generation's are kept beside them
        values.update(temporal_upscale=True, num_frames=upscaled["num_frames"], frame_rate=upscaled["frame_rate"])
    long = record.get("long")
    if long:  # the windows as they were made: their settings, and each window's prompt
        values.update({k: long[k] for k in ("window", "overlap", "overlap_strength", "adain")})
        windows = long["windows"]
        if [w["prompt"] for w in windows] != bar_prompts(values["prompt"], len(windows)):  # from a prompt schedule:
            # one entry per window, at its first frame (joined with " | " they would split a prompt holding a "|");
            # an extension's windows count from its generation's first frame (forward its context's, backward up to
            # 7 frames before the first new one), its schedule in output frames
            shift = recorded_offset(record)
            values["prompt_schedule"] = [{"start": max(w["first_frame"] + shift, 0), "prompt": w["prompt"]}
                                         for w in windows]
    ext = record.get("extend")
    if ext:
        values["extend"] = Extension(ext["video"], _recorded(int, ext["frames"], "extend frames"),
                                     _recorded(bool, ext["backward"], "extend backward"))
        del values["num_frames"]  # the input's length plus the new frames, counted again
    return values


def _recorded(kind: type, value: Any, name: str) -> Any:
    """A recorded number (``kind`` int or float) or flag (bool) as written by ltx; anything else (``"x"``, or
    ``"false"``, which ``bool`` takes for True) is a TypeError naming it, which :func:`redo_row` reports as a
    damaged record."""
    ok = isinstance(value, bool) if kind is bool else (
        not isinstance(value, bool) and (isinstance(value, int) or (kind is float and isinstance(value, float))))
    if not ok:
        raise TypeError(f"{name} is {value!r}")
    return kind(value)


def _given(given: Mapping[str, Any], key: str) -> bool:
    """Whether the caller gave ``key``: an option left at its default is None, an empty list or a flag's False."""
    v = given.get(key)
    return v not in (None, [], ()) and v is not False


def _encoder(given: Mapping[str, Any]) -> str | None:
    """The encoder of the caller's output: None for PNG frames, else the one of the ``output`` suffix (a folder,
    or no output: the default name's .mp4)."""
    from .media import VIDEO_FORMATS

    if _given(given, "frames_dir"):
        return None
    return VIDEO_FORMATS.get(Path(given.get("output") or "").suffix.lower(), VIDEO_FORMATS[".mp4"])[1]


def _check_video(video: Any) -> None:
    """``given["video"]``: None or :data:`NO_VIDEO` (an input of its own is ``ltx v2v``'s or ``ltx extend``'s)."""
    if video not in (None, NO_VIDEO):
        raise ValueError(f"--video {video}: ltx generate takes only --video {NO_VIDEO} (with --from: not the "
                         f"record's input video); to transform a video: ltx v2v {shell_word(str(video))} PROMPT, to continue it: "
                         f"ltx extend {shell_word(str(video))} PROMPT --frames N")


def generate_row(path: str | os.PathLike[str] | None, given: Mapping[str, Any],
                 prompt: str | None = None) -> dict[str, Any]:
    """``ltx generate``'s row: with ``--from`` (``path``) :func:`redo_row`'s, else ``prompt``'s (a ``video``
    given is checked either way: only :data:`NO_VIDEO`, and that only with ``path``)."""
    _check_video(given.get("video"))
    if path is None and given.get("video") == NO_VIDEO:  # it would change nothing: not ignored, refused
        raise ValueError(f"--video {NO_VIDEO} is for --from (not the record's input video): without --from there "
                         "is none to drop; leave it out")
    return redo_row(path, given, prompt) if path is not None else {"prompt": prompt}


def redo_row(path: str | os.PathLike[str], given: Mapping[str, Any], prompt: str | None = None) -> dict[str, Any]:
    """The batch row (and ``model``) that redoes the generation recorded in ``path``: every recorded value
    except those ``given`` (a caller's explicit settings: not ``None``, not empty; ``loras=["none"]``,
    ``conditions=["none"]`` and ``control="none"`` (:data:`~ltxcli.adapters.lora.NO_LORA`,
    :data:`~ltxcli.batch.NO_CONDITION`, :data:`~ltxcli.request.NO_CONTROL`) replace the record's with none,
    ``no_temporal_upscale=True`` drops its temporal upscale: the recorded generation's frames at its own rate,
    ``video="none"`` (:data:`NO_VIDEO`) its v2v input or extension) and, when given, ``prompt``."""
    _check_video(given.get("video"))
    record = read_record(path)
    try:
        values = record_values(record)
        if given.get("video") == NO_VIDEO:  # v2v: its size, length and rate are recorded; an extension's length
            values.pop("denoise_strength", None)  # is the extended video's (record_values counted it again)
            if values.pop("extend", None) is not None:
                values["num_frames"] = record["num_frames"]
        if (record.get("encoding") or {}).get("encoder") != _encoder(given):  # VP9: no preset, another CRF scale
            values.update(crf=None, encoder_preset=None)
    except (KeyError, TypeError, AttributeError) as e:  # a record edited by hand, or written by no version of ltx
        raise ValueError(f"{path}: its generation record is damaged ({type(e).__name__}: {e}): it cannot be "
                         "redone") from None
    row = {k: v for k, v in values.items() if not _given(given, k) and v is not None}
    if "vae_conv" in row:  # the VAE's convolutions as they ran (auto too: not this CPU's choice measured anew)
        row["vae_conv_recorded"] = True
    if _given(given, "control_from"):  # a control made from a video replaces the recorded one
        row.pop("control", None)
    if given.get("no_temporal_upscale"):  # the frames and rate recorded beside the upscaled ones stay
        row.pop("temporal_upscale", None)
    if given.get("duration") is not None:  # a length in seconds replaces the recorded frame count
        row.pop("num_frames", None)
    if prompt is not None or any(_given(given, k) for k in _REWRITTEN_FROM) or (
            isinstance(row.get("enhanced_prompt"), Mapping) and any(_given(given, k) for k in _WINDOWS_FROM)):
        row.pop("enhanced_prompt", None)
    if prompt is not None:  # the windows' prompts too
        row["prompt"] = prompt
        row.pop("prompt_schedule", None)
    row["_where"] = f"--from {path}"
    row["_redo"] = True  # its conditions are the record's, which -c none drops (ltxcli.batch.parse_conditions)
    return row


def kernel_hint(taken: Mapping[str, Any], path: str | os.PathLike[str]) -> str | None:
    """What to pass when a kernel the record of ``path`` named (``taken``: the settings :func:`redo_row` restored)
    cannot run here: float8 matmuls, an explicit attention kernel; None when the record chose neither."""
    hints = []
    if taken.get("dtype") == "fp8":
        hints.append("--dtype fp8: pass --dtype bfloat16 to redo it without float8 matmuls (another video)")
    if taken.get("attention") not in (None, "auto"):
        hints.append(f"--attention {taken['attention']}: pass --attention auto to redo it with this machine's "
                     "kernels (the last bits may differ)")
    return f"the record of {os.fspath(path)} says " + "; and ".join(hints) if hints else None


def hinted(e: Exception, taken: Mapping[str, Any], path: str | os.PathLike[str] | None) -> Exception:
    """``e``, or when it is a kernel that cannot run here (:func:`ltxcli.errors.failure_kind`) and the record of
    ``path`` named it (``taken``), the same error ending with what to pass (:func:`kernel_hint`); a ValueError
    quoting a setting ``taken`` from the record (not the model), the same error naming the record and the field."""
    from .errors import failure_kind

    if path is None:
        return e
    hint = kernel_hint(taken, path) if failure_kind(e) == "kernel" else None
    # a setting the record holds that no parser here takes (edited by hand: "attention": "zzz") was refused in
    # the parser's words alone ("unknown attention backend 'zzz'"), as if the caller had passed it
    named = [k for k, v in taken.items() if k != "model" and isinstance(v, str) and repr(v) in str(e)]
    if hint is None and not (named and isinstance(e, ValueError)):
        return e
    new = type(e)(f"{e}; {hint}" if hint is not None else f"--from {os.fspath(path)}: the record's {named[0]}: {e}")
    new.__suppress_context__ = True  # as `raise ... from None`: the one error, not the one it replaces
    return new


__all__ = ["NO_VIDEO", "SETTINGS", "VIDEO_OPTION_HELP", "generate_row", "hinted", "kernel_hint", "read_record",
           "record_values", "redo_row"]
