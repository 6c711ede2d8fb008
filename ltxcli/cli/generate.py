"""``ltx generate`` (text-to-video, batches, ``--from``), ``ltx i2v``, ``ltx v2v`` and ``ltx extend``: their options,
declared once; the ``--gpus`` relaunch under torchrun; the job itself (checks, downloads, memory plan, one load,
one output per item) is :mod:`ltxcli.job`, rendered here. Errors are printed by every rank of a multi-process run,
prefixed with ``[rank R/W host]``.
"""

from __future__ import annotations

import copy
import enum
import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import field, make_dataclass
from typing import TYPE_CHECKING, Annotated, Any, get_args, get_origin

import typer

from ltxcli import batch as batch_file
from ltxcli import runner
from ltxcli.extend import EXTEND_OPTION_HELP, NOT_FOR_EXTEND, SOURCE_OPTION_HELP
from ltxcli.job import JobSettings
from ltxcli.long_video import OPTION_HELP
from ltxcli.parallel import launch, torchrun
from ltxcli.redo import SETTINGS, VIDEO_OPTION_HELP, generate_row, hinted
from ltxcli.request import STG_MODES, Condition, Extension

from . import common, preflight
from .common import EXIT_USAGE, CliError, GenerationProgress, Output, guarded, usage_error
from .resolve import MODEL_ENV, OPTIONS, WEIGHTS_DIR_ENV, ensure_downloaded

if TYPE_CHECKING:
    from ltxcli.spec import ModelSpec


def _choice(name: str, *values: str) -> Any:  # an option's fixed choices (typer shows them as [a|b|c])
    return enum.Enum(name, {v.replace("+", "_"): v for v in values}, type=str)  # type: ignore[misc]


Attention = _choice("Attention", "auto", "sdpa", "flash3", "flash2", "sage", "math")
OffloadMode = _choice("OffloadMode", "none", "model", "sequential")
TilingMode = _choice("TilingMode", "auto", "on", "off")
VaeConvMode = _choice("VaeConvMode", "auto", "direct", "winograd")
ProgressMode = _choice("ProgressMode", "auto", "plain")
ParallelMode = _choice("ParallelMode", "auto", "cfg", "sequence", "cfg+sequence")
EnhanceMode = _choice("EnhanceMode", "auto", "on", "off")
StgMode = _choice("StgMode", *STG_MODES)

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
    help="A .mp4/.mov/.mkv (H.264) or .webm (VP9) file, a folder (existing, or ending in /), or a pattern such as "
         "out/{index}-{seed}.mp4 (fields: index, seed, slug, width, height, num_frames, frame_rate, model). Default: "
         "the prompt's words, seed and size in the current folder, e.g. a-cat-7-768x512x97.mp4")]
LatentsOutOpt = Annotated[str | None, typer.Option(show_default=False, metavar="PATH", help="Also write the final latents to "
    "this .safetensors file (with --batch a pattern of -o's fields: lat/{index}-{seed}.safetensors), with how the video was "
    "decoded from them (a long video's: all its windows'): `ltx vae decode PATH` gives its frames (an extension's new ones).")]
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
StgModeOpt = Annotated[StgMode | None, typer.Option(show_default=False, help="How STG perturbs the blocks it skips "
    "(the official stg_mode). Default: the preset's (attention_values in every official config).")]
SeedOpt = Annotated[int | None, typer.Option(show_default=False, help="Random seed (default: a random one, printed). With --batch: the batch seed, item i gets SEED + i.")]
ConditionOpt = Annotated[list[str] | None, typer.Option(
    "--condition", "-c", show_default=False,
    help="PATH:FRAME[:STRENGTH] (repeatable): an image or video placed at pixel frame FRAME with STRENGTH in [0, 1] "
         "(default 1). Keyframes, first/last frame, video extension. none: with ltx generate --from, not the record's (refused otherwise).")]
LoraOpt = Annotated[list[str] | None, typer.Option("--lora", show_default=False, help="PATH_OR_NAME[:SCALE] "
    "(repeatable): a LoRA file, PEFT folder or weights.toml LoRA merged into the model at SCALE (default 1); none: "
    "with ltx generate --from, not the record's (refused otherwise).")]
ControlOpt = Annotated[str | None, typer.Option(show_default=False, help="VIDEO[:STRENGTH]: an IC-LoRA control "
    "video (depth, pose or Canny video; the detailer's low-resolution clip) in context, at the video's positions; "
    "none: with ltx generate --from, not the record's (refused otherwise).")]
ControlFromOpt = Annotated[tuple[str, str] | None, typer.Option(show_default=False, metavar="canny|depth VIDEO",
    help="Make the control from an ordinary VIDEO[:STRENGTH] (Canny edges; Depth-Anything-V2 depth). Pose videos "
         "must be made elsewhere (e.g. DWPose), then given with --control.")]
NoUpscaleOpt = Annotated[bool, typer.Option("--no-temporal-upscale", help="With ltx generate --from, not "
                                           "the record's temporal upscale (refused otherwise).")]
DeviceOpt = Annotated[str | None, typer.Option(show_default=False, help="cpu, cuda or cuda:N (default: best available).")]
DtypeOpt = Annotated[str | None, typer.Option(
    show_default=False,
    help="bfloat16, float32, or fp8 (the transformer blocks' linear layers as float8 matmuls on GPUs of compute "
         "capability 8.9+). Default: bfloat16 on GPU, float32 on CPU.")]
AttentionOpt = Annotated[Attention, typer.Option(
    help="Attention kernel: auto picks the fastest available (flash3 on Hopper, else PyTorch SDPA); an explicit "
         "choice that cannot run here is an error (exit 2).")]
CompileOpt = Annotated[bool, typer.Option(
    "--compile", help="torch.compile the transformer block by block (the first video is slower, later ones faster).")]
OffloadOpt = Annotated[OffloadMode, typer.Option(
    help="Keep weights in host memory: model (each stage on the GPU only while it runs) or sequential (transformer "
         "and VAE decoder streamed block by block: least memory, slowest).")]
VaeTilingOpt = Annotated[TilingMode, typer.Option(
    help="Decode the video in tiles: auto (only when the whole decode would not fit), on, or off.")]
VaeConvOpt = Annotated[VaeConvMode, typer.Option(
    help="VAE 3x3x3 convolutions: auto (Winograd along time for the large ones on the CPU: fewer multiply-adds, "
         "same result to float rounding), direct (the official convolutions, bit for bit) or winograd.")]
WeightsDtypeOpt = Annotated[str | None, typer.Option(show_default=False, help=(
    "fp8 or int8: store the transformer blocks' linear weights in one byte (half of bfloat16) and widen them layer by "
    "layer at call, on any GPU or the CPU; int8 (a scale per row) changes outputs 3-7x less than fp8. auto (the "
    "default): as --dtype says (with --from, it replaces the recorded storage)."))]
UpcastAtLoadOpt = Annotated[bool, typer.Option(
    "--upcast-at-load",
    help="Convert every weight to --dtype while loading. By default a CPU run keeps the checkpoint's bfloat16 "
         "linear and convolution weights and widens each one when it is used: the same video, half the weight "
         "memory, no conversion at load, slightly slower steps.")]
GpusOpt = Annotated[int | None, typer.Option(
    show_default=False,
    help="Run on N local GPUs: re-runs this command under torchrun with N processes (one video is split across "
         "them, a --batch is shared out). Not with torchrun itself.")]
ParallelOpt = Annotated[ParallelMode, typer.Option(
    help="With several processes, how one video is split: cfg (guidance branches), sequence (video tokens), "
         "cfg+sequence, or auto (the least work per process, chosen per step).")]
CacheOpt = Annotated[str | None, typer.Option(
    show_default=False, metavar="none|teacache[:T]|fbcache[:T]",
    help="Step cache: skip transformer work on steps whose input barely changed (TeaCache, default threshold 0.05, "
         "or a first-block cache, 0.05); faster, slightly different video. Default: none.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per output on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or messages on stderr.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
CrfOpt = Annotated[int | None, typer.Option(show_default=False, help="Video quality: 0 (lossless) to 51 (63 for .webm); "
                                            "lower is better and larger. Default: 18, visually lossless.")]
EncPresetOpt = Annotated[str | None, typer.Option("--preset", show_default=False, help="x264 speed/size trade-off "
                                                  "(ultrafast ... medium ... veryslow; .mp4/.mov/.mkv). Default: medium.")]
ProgressOpt = Annotated[ProgressMode, typer.Option(help="auto: bars on a terminal, nothing otherwise; plain: one "
                                                   "line as each stage starts, then at most one every 10 s (logs).")]
SkipOpt = Annotated[bool, typer.Option("--skip-existing", help="Skip items already written: found by name, or by their record (index, prompt, settings) when the batch seed was drawn at random.")]
EnhanceOpt = Annotated[EnhanceMode | None, typer.Option(envvar="LTX_ENHANCE_PROMPT", show_default=False, help="Rewrite the prompt as the official pipeline does: auto (the default: if shorter than the preset's threshold, 120 words), on or off.")]
EnhancerOpt = Annotated[str | None, typer.Option(show_default=False, help="Prompt enhancer: a weights.toml name, 'tiny' or a transformers instruct model folder. Default: the preset's.")]
CaptionerOpt = Annotated[str | None, typer.Option(show_default=False, help="Image captioner of i2v prompt enhancement: a weights.toml name, 'tiny' or a Florence-2 folder.")]


def _long(key: str) -> Any:  # an option whose help the library gives (ltxcli.long_video.OPTION_HELP)
    return typer.Option(f"--{key.replace('_', '-')}", show_default=False, help=OPTION_HELP[key])


def _shared_options(
    model: ModelOpt = None,
    text_encoder: TextEncoderOpt = None,
    upsampler: UpsamplerOpt = None,
    weights_dir: WeightsDirOpt = None,
    output: OutputOpt = None,
    frames_dir: FramesDirOpt = None,
    latents_out: LatentsOutOpt = None,
    negative_prompt: NegativeOpt = None,
    height: HeightOpt = None,
    width: WidthOpt = None,
    num_frames: FramesOpt = None,
    duration: Annotated[str | None, _long("duration")] = None,
    frame_rate: FpsOpt = None,
    steps: StepsOpt = None,
    guidance_scale: GuidanceOpt = None,
    stg_scale: StgOpt = None,
    stg_mode: StgModeOpt = None,
    seed: SeedOpt = None,
    condition: ConditionOpt = None,
    window: Annotated[int | None, _long("window")] = None,
    overlap: Annotated[int | None, _long("overlap")] = None,
    overlap_strength: Annotated[float | None, _long("overlap_strength")] = None,
    adain: Annotated[float | None, _long("adain")] = None,
    prompt_schedule: Annotated[str | None, _long("prompt_schedule")] = None,
    resume: Annotated[bool, _long("resume")] = False,
    temporal_upscale: Annotated[bool, _long("temporal_upscale")] = False,
    no_temporal_upscale: NoUpscaleOpt = False,
    lora: LoraOpt = None,
    control: ControlOpt = None,
    control_from: ControlFromOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    attention: AttentionOpt = Attention.auto,
    compile: CompileOpt = False,
    offload: OffloadOpt = OffloadMode.none,
    vae_tiling: VaeTilingOpt = TilingMode.auto,
    vae_conv: VaeConvOpt = VaeConvMode.auto,
    upcast_at_load: UpcastAtLoadOpt = False,
    weights_dtype: WeightsDtypeOpt = None,
    gpus: GpusOpt = None,
    parallel: ParallelOpt = ParallelMode.auto,
    cache: CacheOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipOpt = False,
    crf: CrfOpt = None,
    encoder_preset: EncPresetOpt = None,
    progress: ProgressOpt = ProgressMode.auto,
    enhance_prompt: EnhanceOpt = None, enhancer_model: EnhancerOpt = None, caption_model: CaptionerOpt = None,
) -> None:
    """The one declaration of the options every generating command takes, in ``--help`` order: a command gets
    them through :func:`generation_command`, and :class:`Options` has a field for each. A new option is one
    parameter here (and its ``...Opt`` above)."""


SHARED_OPTIONS = inspect.signature(_shared_options, eval_str=True).parameters
# parameter -> Options field where they differ (`json_`: a parameter may not shadow the json module in a command)
_FIELDS = {"condition": "conditions", "json_": "json", "lora": "loras"}


def _value(v: Any) -> Any:
    return getattr(v, "value", v)


def _repeatable(p: inspect.Parameter) -> bool:
    """An option given several times (``Annotated[list[str] | None, ...]``): a list field, ``[]`` by default."""
    return any(get_origin(t) is list for t in get_args(get_args(p.annotation)[0]))


#: The shared options' values (``--gpus`` is the launcher's, not a field): one field per :data:`SHARED_OPTIONS`
#: parameter, with its default (enum defaults as their string values, repeatable options as lists); a
#: :class:`ltxcli.job.JobSettings`, its request fields every item's defaults.
Options = make_dataclass(
    "Options",
    [(_FIELDS.get(name, name), Any, field(default_factory=list) if _repeatable(p) else field(default=_value(p.default)))
     for name, p in SHARED_OPTIONS.items() if name != "gpus"],
    bases=(JobSettings,), namespace={"__module__": __name__},
)


def generation_command(func: Callable[..., None] | None = None, *, helps: dict[str, str] | None = None,
                       hidden: tuple[str, ...] = ()) -> Any:
    """A generating command: ``func`` declares only its own parameters plus ``**shared``; Typer sees them followed by
    :data:`SHARED_OPTIONS` (``helps``: its own help of some; ``hidden``: those its --help leaves out, still accepted),
    and ``func`` receives those in ``shared`` (``gpus`` included). One-line errors (:func:`~ltxcli.cli.common.guarded`)."""
    if func is None:
        return functools.partial(generation_command, helps=helps, hidden=hidden)
    own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]

    @functools.wraps(func)
    def command(**kwargs: Any) -> None:
        func(**kwargs)

    params = own + [_shown(p, (helps or {}).get(p.name), p.name in hidden) for p in SHARED_OPTIONS.values()]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    del command.__wrapped__  # typer reads the signature above, not func's
    return guarded(command)


def _shown(p: inspect.Parameter, help: str | None, hidden: bool) -> inspect.Parameter:
    """Shared option ``p`` as a command's keyword parameter, with its ``help`` there (None: as declared)."""
    kind, info = get_args(p.annotation)
    info = copy.copy(info)
    info.help, info.hidden = info.help if help is None else help, info.hidden or hidden
    return p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, info])


def options(shared: dict[str, Any]) -> Options:
    """A command's shared option values -> :class:`Options`."""
    return Options(**{_FIELDS.get(k, k): [] if v is None and _repeatable(SHARED_OPTIONS[k]) else _value(v)
                      for k, v in shared.items() if k != "gpus"})


# --- running -------------------------------------------------------------------------------------------------


def run(
    opts: Options, rows: list[dict[str, Any]], *, batch: bool, first_image: Condition | None = None, ctx: Any = None,
    prepare_only: bool = False,
) -> None:
    """Generate every row (:mod:`ltxcli.job`), rendering its messages, downloads, memory verdict, progress and data
    lines. ``ctx``: the :class:`~ltxcli.parallel.context.DistContext` of a torchrun worker; ``prepare_only``: stop
    after the checks that need no weights and the download of missing weights (what ``--gpus`` does before it
    starts the workers; data lines and warnings are left to them)."""
    from ltxcli.job import load, plan_job, results
    from ltxcli.spec import SpecError

    main = ctx is None or ctx.rank == 0
    if prepare_only:
        out = Output(json_mode=opts.json, quiet=opts.quiet, stdout=False)
    elif batch or main:
        # batch ranks each report their own items; progress bars only from rank 0 (one terminal)
        out = Output(json_mode=opts.json, quiet=opts.quiet, progress=main, prefix="" if main else common.rank_label())
    else:
        out = Output(json_mode=opts.json, quiet=True, stdout=False)  # rank 0 speaks for the single video
    out.plain = opts.progress == "plain"
    try:  # the plan's warnings from rank 0 alone (every rank plans every item), then each rank's of its items
        job = plan_job(opts, rows, batch=batch, first_image=first_image, ctx=ctx, warn=out.warn if main else lambda m: None)
    except SpecError as e:  # the option that resolves to nothing, named
        raise CliError(f"{OPTIONS[e.argument]} {e}", EXIT_USAGE) from None
    out.take_warnings()
    if job.note and main and not prepare_only:
        out.info(job.note)
    if job.anything:
        _download(job.needed, opts, out, ctx)
        if prepare_only:
            return
    rank = ctx.rank if ctx is not None and batch and job.world > 1 else None  # a shared-out batch's JSON lines
    if not job.todo:  # every item exists, or (a batch rank) every item of this rank's share
        for it in job.mine if not prepare_only else ():  # (before --gpus starts the workers: they report them)
            _emit_skipped(out, runner.ItemResult.skipped(it), rank)
        return
    job.refresh()
    # headers of every file the load will read (refusing pickles and broken files), then the memory estimate
    plan = check_memory(job.todo, rows, job.spec, opts, device=job.device, dtype=job.dtype,
                        enforce=not preflight.memory_check_disabled())
    pipe, load_s, kernels = load(job, plan=plan, warn=out.warn, info=out.info, status=out.status,
                                 download=lambda names: _download(names, opts, out, None),  # (rank 0 of a split video, or a batch rank, alone)
                                 show_progress=out.progress_enabled)
    many = len(job.items) > 1
    for r, ranks in results(job, pipe, load_s=load_s, progress=lambda it: GenerationProgress(
            out, f"[{it.index}]" if many else "")):  # as {index} and JSON "index" count
        if r.status == "skipped":
            _emit_skipped(out, r, rank)
        elif job.main or batch:
            _emit_written(out, r, frames=job.frames, kernels=kernels, ranks=ranks, rank=rank)


def _download(names: list[str], opts: Options, out: Output, ctx: Any) -> None:
    """Pull missing weights; several processes take turns (:func:`ltxcli.parallel.orchestrate.in_node_turns`, a
    collective), each of them, whatever its own node's cache misses: pass ``ctx`` only where every rank calls."""
    from ltxcli.parallel.orchestrate import in_node_turns

    in_node_turns(ctx, lambda: ensure_downloaded(names, weights_dir=opts.weights_dir, out=out) if names else None)


def check_memory(
    items: list[runner.BatchItem], rows: list[dict[str, Any]], ref: ModelSpec, opts: Options, *, device: Any,
    dtype: Any, enforce: bool = True,
) -> Any:
    """Refuse (exit 5, one line) an item whose estimated peak memory (:func:`ltxcli.job.memory_plan`) exceeds the
    device's free memory, with ``--offload`` / ``--vae-tiling`` settings or a smaller size that would fit; returns
    the plan. The weight headers are read (and so checked) even when ``enforce`` is off."""
    from ltxcli.job import memory_plan

    items = items if enforce else []
    plan = memory_plan(items, ref, opts, device=device, dtype=dtype,
                       free_bytes=preflight.free_memory_bytes(device) if items else 0)
    for it, (estimate, alternatives) in zip(items, plan.requests, strict=True):
        where = rows[it.index].get("_where", "")
        preflight.check_memory(estimate, it, device=device, free_bytes=plan.free_bytes,
                               where=f"{where}: " if where else "", alternatives=alternatives)
    return plan


def _emit_skipped(out: Output, r: runner.ItemResult, rank: int | None = None) -> None:
    out.info(r.skipped_line())
    if out.json_mode:
        out.json(r.summary() | ({"rank": rank} if rank is not None else {}))
    else:
        out.data(str(r.item.target))


def _emit_written(out: Output, r: runner.ItemResult, *, frames: bool, kernels: dict[str, Any] | None, ranks: Any,
                  rank: int | None) -> None:
    """The "wrote ..." message and the item's data line or JSON object (``rank``: the writer's, in a batch
    shared over several processes; ``ranks``: every rank's statistics of a video split across them)."""
    out.info(r.written())
    if out.json_mode:
        extra = {"kernels": kernels, "rank": rank, "ranks": ranks}
        out.json(r.summary(frames=frames) | {k: v for k, v in extra.items() if v is not None})
    else:
        out.data(str(r.path))


# --- commands ------------------------------------------------------------------------------------------------


def relaunch(gpus: int | None, prepare: Callable[[], str | None] | None = None, device: str | None = None,
             quiet: bool = False) -> None:
    """``--gpus N``: run this very command (without ``--gpus``) under torchrun on N processes and exit with the
    job's status (:func:`ltxcli.parallel.launch.launch`, through ``ltx`` again, its torchrun stage: torch is imported
    there, not here); with ``--gpus 1`` or none, return: this process runs it. ``prepare`` runs in the stage first
    (:func:`ltxcli.parallel.torchrun.run_stage`): mistakes found before any weight is read (a bad size, an existing
    output, an unavailable kernel, missing weights offline) are then one line and their own exit code rather than
    a failed torchrun job, and missing weights are downloaded once, with progress, before the workers start."""
    if gpus is None:
        return
    try:  # --device cpu: CPU processes, a testing aid; the visible GPUs (torch) are the stage's to count
        launch.check_launch(gpus, device, count_gpus=launch.in_stage())
    except ValueError as e:
        usage_error(str(e))
    if gpus == 1:
        return
    if launch.in_stage():
        raise typer.Exit(torchrun.run_stage(launch.strip_option(common.invocation_args(), "--gpus"), gpus, prepare))
    raise typer.Exit(launch.launch(common.invocation_args(), gpus, device=device, quiet=quiet, stage=True))


@contextmanager
def distributed_context() -> Iterator[Any]:
    """The torchrun worker's :class:`~ltxcli.parallel.context.DistContext` (``None`` outside torchrun) for a
    ``with`` block (:func:`ltxcli.parallel.context.worker`); its error lines are prefixed with the rank."""
    from ltxcli.parallel import context, orchestrate

    with context.worker(timeout_s=orchestrate.DIST_TIMEOUT_S) as ctx:
        if ctx is not None:
            common.set_rank(context.rank_label(ctx), ctx.rank)
        yield ctx


def _read_stdin(ctx: Any, what: str) -> str:
    """All of stdin (UTF-8, ``what`` names it in errors); with several processes rank 0 reads it for all."""
    from ltxcli.parallel.orchestrate import on_rank0

    return on_rank0(ctx, lambda: batch_file.read_stdin(what))


def _single(opts: Any, gpus: int | None, row: dict[str, Any], first: Condition | None = None) -> None:
    """One video from ``row`` (generate, i2v, v2v, extend); its prompt '-' is read from stdin (by rank 0)."""
    relaunch(gpus, None if row["prompt"] == "-" else  # stdin is left for the workers to read
             lambda: run(opts, [row], batch=False, first_image=first, prepare_only=True), opts.device, opts.quiet)
    with distributed_context() as ctx:
        text = _read_stdin(ctx, "PROMPT -").strip() if row["prompt"] == "-" else row["prompt"]
        run(opts, [{**row, "prompt": text}], batch=False, first_image=first, ctx=ctx)


PromptArg = Annotated[str, typer.Argument(metavar="PROMPT", help="The prompt; '-' reads it from stdin.")]


@generation_command
def generate(
    command: typer.Context,
    prompt: Annotated[str | None, typer.Argument(
        metavar="PROMPT", show_default=False, help="The prompt; '-' reads it from stdin. Omit with --batch.")] = None,
    batch: Annotated[str | None, typer.Option(
        show_default=False,
        help="File with one prompt per line, or JSON lines with per-item prompt, seed, steps, height, width, "
             "num_frames, frame_rate, guidance_scale, stg_scale, stg_mode, negative_prompt, image, conditions, "
             "cache, video, denoise_strength, extend, output ('-' = stdin). One model load, one output per item.")] = None,
    from_: Annotated[str | None, typer.Option("--from", show_default=False, help="Redo a video (or --frames-dir "
                     "folder) ltx wrote, from its record: same model, settings and seed but for the options given "
                     "(and PROMPT).")] = None,
    video: Annotated[str | None, typer.Option(show_default=False, help=VIDEO_OPTION_HELP)] = None,
    **shared: Any,
) -> None:
    """Generate a video from a text prompt (or a batch of prompts)."""
    opts, gpus = options(shared), shared["gpus"]
    if batch is not None and (prompt is not None or from_ is not None):
        usage_error("give a PROMPT (or --from VIDEO) or --batch FILE, not both")
    if batch is not None and video is not None:  # a batch line's "video" is its own v2v input
        usage_error("--video none is for --from (not the record's input video), not --batch (a line's \"video\" "
                    "is its input)")
    if batch is None and prompt is None and from_ is None:
        usage_error("missing PROMPT (or --batch FILE); `ltx generate --help` shows the options")
    if batch is None:
        given = {_FIELDS.get(k, k): getattr(opts, _FIELDS.get(k, k)) for k in SHARED_OPTIONS if k != "gpus" and
                 command.get_parameter_source(k).name in ("COMMANDLINE", "PROMPT")}  # not LTX_MODEL's, not defaults
        row = generate_row(from_, {**given, "video": video}, prompt)
        taken = {key: row.pop(key) for key in SETTINGS if key in row}  # the record's, where not given
        vars(opts).update(taken)
        try:
            return _single(opts, gpus, row)
        except Exception as e:  # a kernel the record names that cannot run here: say where it came from
            raise hinted(e, taken, from_)  # noqa: B904  (e itself, or the error that replaces it)

    def prepare() -> str | None:  # stdin is left for the workers to read; a pipe is read once, here, for them
        text = batch_file.read_batch_file(batch) if batch != "-" else None
        if text is not None:
            run(opts, batch_file.parse_batch(text, f"--batch {batch}"), batch=True, prepare_only=True)
        return text if text is not None and batch_file.is_pipe(batch) else None

    relaunch(gpus, prepare, opts.device, opts.quiet)
    with distributed_context() as ctx:
        text = _read_stdin(ctx, "--batch -") if batch == "-" else batch_file.read_batch_file(batch)
        run(opts, batch_file.parse_batch(text, f"--batch {batch}"), batch=True, ctx=ctx)


@generation_command(hidden=("no_temporal_upscale",))  # no --from, so never usable: accepted, refused, unlisted
def i2v(
    image: Annotated[str, typer.Argument(metavar="IMAGE", show_default=False, help="The first frame (an image, or a video).")],
    prompt: PromptArg = "",
    image_strength: Annotated[float, typer.Option(help="Conditioning strength of IMAGE in [0, 1].")] = 1.0,
    **shared: Any,
) -> None:
    """Generate a video that starts from IMAGE (image-to-video)."""
    _single(options(shared), shared["gpus"], {"prompt": prompt}, Condition(image, 0, image_strength))


@generation_command(helps=SOURCE_OPTION_HELP, hidden=("no_temporal_upscale",))
def v2v(
    video: Annotated[str, typer.Argument(metavar="VIDEO", show_default=False, help="The video to transform.")],
    prompt: PromptArg = "",
    strength: Annotated[float, typer.Option(help="How much is redone, in (0, 1): the input is noised to this point "
                                            "of the schedule and denoised from there (lower keeps more).")] = 0.5,
    **shared: Any,
) -> None:
    """Transform VIDEO to follow PROMPT (video-to-video); size, length and frame rate default to VIDEO's."""
    _single(options(shared), shared["gpus"], {"prompt": prompt, "video": video, "denoise_strength": strength})


@generation_command(helps=EXTEND_OPTION_HELP, hidden=NOT_FOR_EXTEND)
def extend(
    video: Annotated[str, typer.Argument(metavar="VIDEO", show_default=False, help="The video to continue.")],
    frames: Annotated[int, typer.Option(show_default=False, help="Frames to add (the output is VIDEO's frames "
                                        "and these).")],
    prompt: PromptArg = "",
    backward: Annotated[bool, typer.Option("--backward", help="Add them before VIDEO's start, not after its end.")] = False,
    **shared: Any,
) -> None:
    """Make VIDEO longer: new frames after its end (or before its start) generated from its frames."""
    _single(options(shared), shared["gpus"], {"prompt": prompt, "extend": Extension(video, frames, backward)})


def register(app: typer.Typer) -> None:
    for name, command in (("generate", generate), ("i2v", i2v), ("v2v", v2v), ("extend", extend)):
        app.command(name)(command)


__all__ = ["SHARED_OPTIONS", "Options", "check_memory", "distributed_context", "extend", "generate", "generation_command",
           "i2v", "options", "register", "relaunch", "run", "v2v"]
