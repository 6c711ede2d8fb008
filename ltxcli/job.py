"""A generation job as ``ltx generate`` / ``i2v`` / ``v2v`` / ``extend`` run it, for any caller.

Order of work, every step before the load one that a mistake can stop cheaply::

    job = plan_job(settings, rows, batch=...)   # device, kernels, items, seeds, checks, output names, weights needed
    ... pull job.needed ...                     # (the caller renders the download)
    job.refresh()                               # the spec of what was pulled, all of it there
    plan = memory_plan(job.todo, job.spec, ...) # per item: will it fit (the caller renders the verdict)
    pipe, load_s, kernels = load(job, plan=plan)  # enhancement stage, one load of the model (parallelised)
    for result, ranks in results(job, pipe, load_s=load_s): ...   # generate, write, one result per item

Several processes (torchrun; ``ctx`` a :class:`~ltxcli.parallel.context.DistContext`): every rank plans the same
items; rank 0 draws the random seeds and sends them to the others before output names are derived from them. One
video is split across the ranks (:func:`ltxcli.parallel.transformer.parallelize`) and only rank 0 writes it; a
batch is shared out item by item (:func:`ltxcli.parallel.orchestrate.shard_items`) and every rank writes its own.

Mistakes a user can make are ``ValueError`` with one line (:mod:`ltxcli.runner`'s conventions); a model, text
encoder or upsampler that resolves to nothing is :class:`ltxcli.spec.SpecError` naming the argument.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import long_video, naming, runner
from .adapters.lora import NO_LORA, check_lora_sources, lora_specs
from .batch import ITEM_KEYS, NO_CONDITION, parse_conditions
from .extend import InputFrames
from .request import NO_CONTROL, Condition

if TYPE_CHECKING:
    import torch

    from .memory.plan import RunPlan
    from .pipeline import Pipeline
    from .spec import ModelSpec


@dataclass
class JobSettings:
    """What a job takes besides its rows: the model and its parts, how to load and run it, where and how to
    write. A subclass with request fields (``steps``, ``height``, ...) gives them as every item's defaults
    (:meth:`item_defaults`; a row's own value wins)."""

    model: str | None = None
    text_encoder: str | None = None
    upsampler: str | None = None
    weights_dir: str | None = None
    output: str | None = None
    frames_dir: str | None = None  # PNG frames into this folder instead of a video file
    conditions: list[str] = field(default_factory=list)  # PATH:FRAME[:STRENGTH], every item's
    loras: list[str] = field(default_factory=list)
    device: str | None = None
    dtype: str | None = None
    attention: str = "auto"
    compile: bool = False
    offload: str = "none"
    vae_tiling: str = "auto"
    vae_conv: str = "auto"
    cpu_gemm: str = "auto"  # the CPU float32 linears' route: not an option, a redo's (ltxcli.redo.SETTINGS)
    # vae_conv is a record's (a redo's): run as recorded, also auto, which on the CPU is otherwise this host's
    # measured choice (ltxcli.calibrate), so that a new calibration does not change a redo's rounding
    vae_conv_recorded: bool = False
    upcast_at_load: bool = False
    weights_dtype: str | None = None
    no_temporal_upscale: bool = False  # not even the temporal upscale of a --from record (ltxcli.redo.redo_row)
    parallel: str = "auto"
    overwrite: bool = False
    skip_existing: bool = False
    crf: int | None = None
    encoder_preset: str | None = None
    enhancer_model: str | None = None
    caption_model: str | None = None
    latents_out: str | None = None  # also write the final latents here: a file or pattern (plan_latents)

    @property
    def keep_checkpoint_dtype(self) -> bool | None:
        """``load_pipeline``'s argument: False with ``upcast_at_load``, else its device default."""
        return False if self.upcast_at_load else None

    def item_defaults(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ITEM_KEYS if hasattr(self, k)}


@dataclass
class Job:
    """A planned job: its items checked and named, the weights it still needs (:func:`plan_job`)."""

    settings: JobSettings
    batch: bool
    ctx: Any  # DistContext or None
    device: torch.device
    dtype: torch.dtype
    spec: ModelSpec
    items: list[runner.BatchItem]
    mine: list[runner.BatchItem]  # this rank's share of a batch (every item otherwise)
    note: str | None  # what output planning wants said (e.g. the batch seed drawn)
    anything: bool  # False: every item exists already (on every rank)
    needed: list[str] = field(default_factory=list)  # registry names to pull before the load
    # extension inputs decoded once for the checks, enhancement stage and run (the last one held: a batch's in turn)
    inputs: InputFrames = field(default_factory=InputFrames)

    @property
    def world(self) -> int:
        return self.ctx.world_size if self.ctx is not None else 1

    @property
    def main(self) -> bool:
        return self.ctx is None or self.ctx.rank == 0

    @property
    def todo(self) -> list[runner.BatchItem]:
        return [it for it in self.mine if not it.skip]

    @property
    def split(self) -> bool:
        """One video split across the processes (not a batch shared out)."""
        return not self.batch and self.world > 1

    @property
    def frames(self) -> bool:
        return self.settings.frames_dir is not None

    def refresh(self) -> None:
        """After the download step: the spec of what it pulled, verified or replaced; all of it there."""
        self.spec = self.spec.refreshed()
        self.spec.require()


def check_kernels(settings: JobSettings, device: torch.device) -> None:
    """Refuse (ValueError) an explicit ``attention``, ``dtype="fp8"`` or ``compile`` that cannot run on ``device``,
    before any weight is downloaded or read (``load_pipeline`` would refuse them too, later)."""
    from . import api, kernels

    try:
        api.resolve_compute(device, settings.dtype, settings.attention, settings.weights_dtype)
    except kernels.KernelUnavailableError as exc:
        if not str(exc).startswith("--dtype fp8"):
            raise
        # what saves the same weight memory on this device (fp8 matmuls are what needs 8.9+, not fp8 weights)
        raise kernels.KernelUnavailableError(
            f"{exc} (--weights-dtype int8 or fp8 stores the weights in one byte on any device)") from None
    if settings.compile:
        ok, how = kernels.compile_available(device)
        if not ok:
            raise ValueError(f"--compile: {how}")


def _nothing_to_drop(s: JobSettings) -> None:
    """Without ``--from``: ``-c none``, ``--lora none``, ``--control none`` and ``--no-temporal-upscale`` drop a
    record's conditions, LoRAs, control or temporal upscale (:func:`ltxcli.redo.redo_row`); with no record there is
    nothing to drop and they would change nothing (a batch line's ``temporal_upscale`` is its own), so a ValueError
    (one line), not ignored. (Given beside others, ``none`` is refused where they are parsed.)"""
    for option, given, what in (("--condition none", s.conditions == [NO_CONDITION], "conditions"),
                                ("--lora none", s.loras == [NO_LORA], "LoRAs"),
                                ("--control none", getattr(s, "control", None) == NO_CONTROL, "control"),  # (a request field)
                                ("--no-temporal-upscale", s.no_temporal_upscale, "temporal upscale")):
        if given:  # (i2v, v2v and extend take no --from: the message names the command that does)
            raise ValueError(f"{option} is for ltx generate --from VIDEO (not the record's {what}): with no record "
                             "there is nothing to drop; leave it out")


def _resolve(s: JobSettings, **parts: Any) -> ModelSpec:
    from .spec import resolve_spec
    from .weights import load_registry

    return resolve_spec(s.model, weights_dir=s.weights_dir, registry=load_registry(), **parts)


def plan_job(
    settings: JobSettings, rows: list[dict[str, Any]], *, batch: bool, first_image: Condition | None = None,
    ctx: Any = None, warn: Callable[[str], None] | None = None,
) -> Job:
    """Check and plan every row before any weight is read: the device and kernels, the items (a row's value >
    ``settings``' defaults > the preset's), rank 0's seeds on every rank, sizes and condition files, output names
    and existing outputs, the video format, this rank's share; then the weights the items need (``needed``).

    ``warn`` gets the plan's warnings, the Python warnings raised while planning (an empty prompt, a trimmed
    condition) included, as they come; every rank of a multi-process job plans every item, so all but one
    pass a no-op (or a launcher that plans before its workers do). None: Python warnings as usual, no others."""
    if warn is None:
        return _plan_job(settings, rows, batch=batch, first_image=first_image, ctx=ctx, warn=lambda message: None)
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *args, **kwargs: warn(str(message))
        return _plan_job(settings, rows, batch=batch, first_image=first_image, ctx=ctx, warn=warn)


def _plan_job(
    settings: JobSettings, rows: list[dict[str, Any]], *, batch: bool, first_image: Condition | None,
    ctx: Any, warn: Callable[[str], None],
) -> Job:
    from . import api, media, resume
    from .control import weights_needed as control_weights
    from .enhance.stage import unused_models
    from .offload import cpu_offload_note
    from .parallel.orchestrate import from_rank0, shard_items
    from .spec import given_component

    s = settings
    if s.output is not None and s.frames_dir is not None:
        raise ValueError("give either -o/--output (MP4) or --frames-dir (PNG frames), not both")
    if s.overwrite and s.skip_existing:
        raise ValueError("--overwrite and --skip-existing contradict each other: pick one")
    if s.no_temporal_upscale and getattr(s, "temporal_upscale", False):  # (a subclass's request field)
        raise ValueError("--temporal-upscale and --no-temporal-upscale contradict each other: pick one")
    world, main = (ctx.world_size, ctx.rank == 0) if ctx is not None else (1, True)
    if ctx is not None:
        device = ctx.device
        if s.device is not None and main and api.device_name(s.device) != str(device):
            warn(f"--device {s.device} is ignored under torchrun: each process uses {device.type}"
                 + (":LOCAL_RANK" if device.type == "cuda" else ""))
    else:
        device = api.resolve_device(s.device)
    dtype = api.resolve_dtype(s.dtype, device)
    if ctx is None and s.parallel != "auto":
        warn("--parallel applies only to several processes (--gpus N or torchrun); ignored")
    elif batch and world > 1 and s.parallel != "auto":
        warn("--parallel is ignored with --batch: each process generates whole items")
    if s.offload != "none" and device.type == "cpu":  # said before any download (load_pipeline: once more)
        warn(cpu_offload_note(f"--offload {s.offload}"))
    check_kernels(s, device)  # an explicit kernel this machine cannot run: refused before any download

    spec = _resolve(s)  # reads a file's header: a corrupt one fails here
    if spec.kind == "builtin" and s.text_encoder:
        warn(f"--text-encoder is ignored: {spec.name} has a built-in text encoder")
    redo = any(row.get("_redo") for row in rows)  # a --from record's row (ltxcli.redo.redo_row)
    if not redo:  # (a record's --crf and --preset stay with a redo into PNG frames: not the user's to leave out)
        _nothing_to_drop(s)
        for option, value in (("--crf", s.crf), ("--preset", s.encoder_preset)) if s.frames_dir is not None else ():
            if value is not None:
                warn(f"{option} is ignored: --frames-dir writes lossless PNG frames, not a video file")
    base_conds = ([first_image] if first_image else []) + parse_conditions(s.conditions)
    # one video: an extension's input decoded here, once, for its checks, the enhancement stage and the run (a
    # batch's are counted as before: holding one input at a time, each would be decoded again later)
    inputs = InputFrames()
    items = runner.build_items(rows, preset=spec.preset, conditions=base_conds, defaults=s.item_defaults(),
                               inputs=inputs if len(rows) == 1 else None)
    if world > 1:  # the seeds (random ones included) of rank 0, before any name is derived from them
        for it, (seed, batch_seed) in zip(items, from_rank0(ctx, [(it.seed, it.batch_seed) for it in items]), strict=True):
            it.seed, it.batch_seed = seed, batch_seed
    frames, decoded = s.frames_dir is not None, {}  # decoded: condition files, each read once
    for it in items:
        where = rows[it.index].get("_where", "")
        runner.validate_item(it, spec.max_positions, frames_out=frames, where=f"{where}: " if where else "",
                             decoded=decoded, preset=spec.preset)
        if not rows[it.index].get("_redo"):  # a record's windows, negative prompt, STG mode: not given
            runner.warn_ignored(it, spec.preset, spec.max_positions[0], f"{where}: " if where else "")
        if where and it.loras:  # a batch line's or a record's LoRA: a missing one names where it came from
            check_lora_sources(it.loras, where=f"{where}: ", weights_dir=s.weights_dir)
    if not redo:  # (a record's enhancer models are taken, not given)
        for message in unused_models(items, spec.preset, llm=s.enhancer_model, captioner=s.caption_model,
                                     max_seconds=float(spec.max_positions[0])):
            warn(message)
    note = runner.plan_outputs(
        items, output=s.frames_dir if frames else s.output, frames=frames, batch=batch,
        model=naming.model_field(spec.name, is_path=spec.kind in ("file", "folder")), overwrite=s.overwrite,
        skip_existing=s.skip_existing, preset=spec.preset,
        compute=resume.compute_record(s.dtype, s.weights_dtype, dtype))
    for it in [] if frames else items:  # an unknown suffix, a bad crf/preset, no VP9 encoder: refused now
        media.video_format(it.target, media.DEFAULT_CRF if s.crf is None else s.crf, s.encoder_preset)
    plan_latents(s, items, spec=spec, model=naming.model_field(spec.name, is_path=spec.kind in ("file", "folder")),
                 warn=warn, wheres={it.index: rows[it.index].get("_where", "") for it in items})
    mine = shard_items(items, ctx.rank, world) if batch and world > 1 else items
    anything = any(not it.skip for it in items)
    if world > 1:
        anything = from_rank0(ctx, anything)  # every rank takes the same path through the collectives below
    job = Job(s, batch, ctx, device, dtype, spec, items, mine, note, anything, inputs=inputs)
    if anything:
        # with the components: a mistyped text encoder / upsampler path fails before anything is downloaded; a
        # one-pass model runs no upsampler, nor does a multi-scale one in windows (one pass each): when no item runs
        # both passes the default is not resolved, one given is checked by name or path; neither pulled nor read
        used = runner.needs_upsampler(items, spec.preset, spec.max_positions[0])
        up = s.upsampler if used else None
        if s.upsampler is not None and up is None:
            given_component("upsampler", s.upsampler, weights_dir=s.weights_dir, registry=spec.registry)
        job.spec = _resolve(s, text_encoder=None if spec.kind == "builtin" else s.text_encoder, upsampler=up,
                            loras=[lo for it in items for lo in lora_specs(it.loras)],  # every item's, pulled with the model
                            temporal_upsampler=long_video.temporal_upscaler(items),
                            spatial_upsampler=used or not spec.preset.multi_scale)
        job.needed = job.spec.needed + control_weights(items, builtin=job.spec.kind == "builtin")
    return job


def plan_latents(settings: JobSettings, items: list[runner.BatchItem], *, spec: ModelSpec, model: str = "",
                 warn: Callable[[str], None] = lambda message: None, wheres: Mapping[int, str] | None = None) -> None:
    """Set each item's ``latents_target`` (its own ``latents_out``, else ``--latents-out``: a ``.safetensors`` file,
    or a pattern of the ``-o`` fields, :func:`ltxcli.naming.latents_path`), after the outputs are planned, before any
    work (an extension's: its generation's, which decode to its new frames). Refused (ValueError): a file shared by
    several items, a path
    that is a video's or another item's latents, another suffix than .safetensors, an existing file (without
    ``overwrite``, as a video); a folder or a place it cannot be made: :class:`~ltxcli.runner.OutputError`. A
    skipped item (its video exists) writes none: nothing is checked for it (``warn``: when its latents are missing).
    ``wheres``: item index -> where it came from (a batch file's line), which names an item's own ``latents_out``."""
    from pathlib import Path

    from .autoencode import check_target, latents_source

    shared = sum(it.latents_out is None for it in items) > 1 and settings.latents_out is not None
    videos = {Path(os.path.realpath(it.target)): it.index for it in items if it.target is not None}
    seen: dict[Path, int] = {}

    def name(index: int) -> str:  # another item, in a message
        return (wheres or {}).get(index) or f"item {index}"

    for it in items:
        value = it.latents_out if it.latents_out is not None else settings.latents_out
        if value is None:
            continue
        # an item's own value is named by its batch line, as that line's other mistakes are
        line = (wheres or {}).get(it.index, "") if it.latents_out is not None else ""
        where = ("--latents-out" if it.latents_out is None else
                 f"{line}: latents_out" if line else f"item {it.index}'s latents_out")
        assert it.seed is not None and it.width is not None and it.height is not None and it.target is not None
        assert it.num_frames is not None and it.frame_rate is not None
        fields = naming.fields(index=it.index, seed=it.seed, prompt=it.prompt, width=it.width, height=it.height,
                               num_frames=it.num_frames, frame_rate=it.frame_rate, model=model)
        target = naming.latents_path(value, fields, option=where, many=shared and it.latents_out is None)
        key = Path(os.path.realpath(target))
        if key in videos:
            whose = "the video's own path" if videos[key] == it.index else f"the video of {name(videos[key])}"
            raise ValueError(f"{where} {target} is {whose}: give the latents their own .safetensors file")
        if key in seen:
            both = (f"{where} {target} is where {name(seen[key])} writes its latents too" if line else
                    f"items {seen[key]} and {it.index} would both write their latents to {target}")
            raise ValueError(f"{both}: use a pattern with {{index}} or {{seed}}")
        seen[key] = it.index
        it.latents_target = target
        # --skip-existing regenerates an item whose video is missing: latents it wrote before (their record names
        # this video) are replaced with it, as an interrupted run's; another file is kept, and the run refused
        own = settings.skip_existing and not it.skip and latents_source(target) == str(it.target)
        if settings.skip_existing and not it.skip and not own and (target.exists() or target.is_symlink()):
            raise ValueError(f"{where}: {target} already exists and holds no latents of {it.target}: delete it or "
                             "name another file")
        if not it.skip:
            try:
                check_target(target, overwrite=settings.overwrite or own, suffix=".safetensors", option=where)
            except (ValueError, runner.OutputError) as e:  # an existing file or a folder: named by the line too
                if not line or str(e).startswith(line):
                    raise
                raise type(e)(f"{where} {e}" if isinstance(e, ValueError) else f"{line}: {e}") from None
        elif not (target.exists() or target.is_symlink()):
            warn(f"{it.target} exists, its latents {target} do not: skipped, so none are written (--overwrite "
                 "makes both again)")


def memory_plan(
    items: list[runner.BatchItem], spec: ModelSpec, settings: JobSettings, *, device: torch.device,
    dtype: torch.dtype, free_bytes: int | None = None,
) -> RunPlan:
    """The memory plan of ``items`` (:func:`ltxcli.memory.plan.plan_run`) with ``settings``' precision, offload,
    tiling and enhancement stage, against ``free_bytes`` (default: what the device has free). The weight headers
    are read (and so checked) even for no item."""
    from . import api
    from .enhance.stage import enhancer_bytes
    from .loading import keep_narrow
    from .memory.plan import plan_run

    s = settings
    return plan_run(items, spec, device=device, dtype=dtype, fp8=api.is_fp8(s.dtype),
                    narrow=keep_narrow(s.keep_checkpoint_dtype, device), offload=s.offload,
                    vae_tiling=s.vae_tiling, free_bytes=free_bytes if items else 0,
                    weights_storage=api.weights_storage(s.weights_dtype), enhancer_bytes=[enhancer_bytes(
                        it, spec.preset, llm=s.enhancer_model, captioner=s.caption_model,
                        weights_dir=s.weights_dir, max_seconds=float(spec.max_positions[0])) for it in items])


def load(
    job: Job, *, plan: RunPlan | None = None, warn: Callable[[str], None] = lambda message: None,
    info: Callable[[str], None] = lambda message: None, download: Callable[[list[str]], None] | None = None,
    status: Callable[[str], AbstractContextManager[Any]] | None = None, show_progress: bool = False,
) -> tuple[Pipeline, float, dict[str, Any]]:
    """Enhance the prompts to generate (:func:`ltxcli.enhance.stage.enhance_items`; a video split across processes:
    on rank 0, its rewrites sent to the others; ``download`` is then called on rank 0 alone), then load the model once
    (inside ``status("loading ...")``) and split it across the processes of a single video: ``(pipeline, load
    seconds, kernels in use)``. ``plan``: :func:`memory_plan`'s, whose transformer config checks the parallel mode
    before the load."""
    from . import api
    from .enhance import stage as enhance_stage
    from .kernels import describe_model
    from .parallel.orchestrate import from_rank0
    from .parallel.transformer import check_mode, parallelize

    s, spec = job.settings, job.spec
    if s.upsampler is not None and not (spec.preset.multi_scale and spec.spatial_upsampler) and job.main:
        # (plan_job checked its name or path)
        how = f"{spec.label} runs" if not spec.preset.multi_scale else "every video is made in windows, each"
        warn(f"--upsampler is ignored: {how} one pass at the requested size (an upsampler runs between the two "
             "passes of a multi-scale model)")
    if job.split and plan is not None and plan.transformer is not None:
        check_mode(s.parallel, plan.transformer.num_attention_heads, job.world)  # a ValueError before loading
    if job.main or not job.split:  # a split video's rewrite is rank 0's, as its seed: sampled once, shared
        enhance_stage.enhance_items(job.todo, spec.preset, llm=s.enhancer_model, captioner=s.caption_model,
                                    device=job.device, warn=warn, info=info, download=download,
                                    max_seconds=float(spec.max_positions[0]), inputs=job.inputs)
    if job.split:  # (the other ranks load no enhancer, and take no tokens a device of theirs sampled otherwise)
        for it, text in zip(job.todo, from_rank0(job.ctx, [it.enhanced_prompt for it in job.todo]), strict=True):
            it.enhanced_prompt = text
    # only what was given is passed on (local paths now): load_pipeline finds the defaults in the same spec
    te_path = str(spec.text_encoder.path) if s.text_encoder is not None and spec.text_encoder is not None else None
    up_path = str(spec.upsampler.path) if s.upsampler is not None and spec.upsampler is not None else None
    t0 = time.perf_counter()
    with (status or (lambda m: nullcontext()))(f"loading {spec.label}"), api.transformers_progress(show_progress):
        pipe = api.load_pipeline(
            str(spec.path) if spec.kind in ("file", "folder") else spec.name,
            text_encoder=te_path, upsampler=up_path, device=job.device if job.ctx is not None else s.device,
            dtype=s.dtype, weights_dir=s.weights_dir, attention=s.attention, compile=s.compile,
            offload=s.offload, vae_tiling=s.vae_tiling, vae_conv=s.vae_conv, cpu_gemm=s.cpu_gemm,
            keep_checkpoint_dtype=s.keep_checkpoint_dtype, weights_dtype=s.weights_dtype,
            download=False, loras=s.loras or None, temporal_upsampler=spec.temporal_source,  # pulled before
            warn=_said_by_plan_job, spatial_upsampler=spec.spatial_upsampler)
    if s.vae_conv_recorded:
        pipe.vae.set_conv_algorithm(s.vae_conv)
    load_s = time.perf_counter() - t0
    kernels = describe_model(pipe.transformer)
    # one video: the text encoder's memory is released as soon as the prompt is encoded
    pipe.free_text_encoder_after_use = len(job.todo) == 1
    if job.split:
        parallelize(pipe, job.ctx, mode=s.parallel)
    return pipe, load_s, kernels


def _said_by_plan_job(message: str) -> None:
    """load_pipeline's note that offload saves nothing on the CPU: :func:`plan_job` said it, naming --offload."""


def results(
    job: Job, pipe: Pipeline, *, load_s: float = 0.0,
    progress: Callable[[runner.BatchItem], AbstractContextManager[Any]] | None = None,
) -> Iterator[tuple[runner.ItemResult, list[dict[str, Any]] | None]]:
    """Generate and write this rank's items (:func:`ltxcli.runner.run_batch`, decoded frames streamed into the
    writer; the latents too with ``latents_out``, by the writing rank): ``(result, ranks)`` per item as it finishes, ``ranks`` every process's statistics of a video split
    across them (a collective), else None."""
    from .parallel.orchestrate import rank_stats

    s = job.settings
    for r in runner.run_batch(
            pipe, job.mine, frames=job.frames, overwrite=s.overwrite, skip_existing=s.skip_existing,
            claim=job.batch and s.skip_existing, model=job.spec.label, write=job.main or job.batch, load_s=load_s,
            progress=progress, stream=True, crf=s.crf, preset=s.encoder_preset, inputs=job.inputs):
        to = r.item.latents_target
        # a batch's items are each written by the rank that made them, a video split across ranks by rank 0
        if to is not None and r.status == "ok" and (job.main or job.batch) and r.result is not None:
            from .autoencode import save_generation_latents

            r.latents_path = save_generation_latents(to, r.result, vae=pipe.vae, model=r.record["model"],
                                                     source=r.path, overwrite=s.overwrite or s.skip_existing)
        gather = r.status != "skipped" and job.ctx is not None and not job.batch
        yield r, rank_stats(job.ctx, r.timings, transformer=pipe.transformer) if gather else None


__all__ = ["Job", "JobSettings", "check_kernels", "load", "memory_plan", "plan_job", "results"]
