"""``ltx bench``: random full-size models and the timed run, related to FLOPs, GPU peaks and the paper's 2 s.

The bench run times the real :meth:`Pipeline.generate` (text encoding, every denoising step with its guidance
branches, the latent upsampler of multi-scale presets, the VAE decode and the copy of the video to the host),
counts FLOPs from the shapes each module actually received (forward pre-hooks, :mod:`ltxcli.perf.flops`), and
reports medians over repeats after warm-up runs. Under torchrun one video is split over the ranks
(:func:`ltxcli.parallel.transformer.parallelize`) and every rank's statistics are gathered.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..metrics import PEAK_MEMORY_KINDS, peak_memory
from ..models.configs import (
    TRANSFORMER_2B,
    TRANSFORMER_13B,
    TransformerConfig,
    UpsamplerConfig,
    VAEConfig,
    official_vae_config,
)
from ..models.fp8 import convert_to_fp8
from ..models.transformer import LTXVideoTransformer
from ..models.upcast import convert_to_upcast, upcastable_weights
from ..models.upsampler import LatentUpsampler
from ..models.vae import CausalVideoVAE
from ..models.winograd import parse_conv_algorithm
from ..naming import fps_number
from ..parallel.orchestrate import rank_stats
from ..parallel.transformer import parallelize
from .flops import t5_encoder_flops, t5_xxl_config, transformer_flops, upsampler_flops, vae_decoder_flops
from .gpus import BenchError, device_name, resolve_gpu

if TYPE_CHECKING:  # transformers is imported only where a text encoder is built
    from ..text import Padding

__all__ = [
    "PAPER_SECONDS",
    "Architecture",
    "BenchError",
    "BenchResult",
    "StageResult",
    "build_random_pipeline",
    "format_table",
    "materialize_random_",
    "random_architecture",
    "run_bench",
]

# The paper's claim (arXiv 2501.00103): 5 s of 24 fps video (121 frames) at 768x512 in 2 s on one H100.
PAPER_SECONDS = 2.0
PAPER_SIZE = (512, 768, 121)  # height, width, frames
PAPER_FPS = 24.0


# --- random full-size models ------------------------------------------------------------------------------


def _init_value(name: str, shape: tuple[int, ...]) -> tuple[str, float]:
    """(``"uniform"`` with this std | ``"fill"`` with this value) for a parameter or buffer by name and shape."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "timestep_scale_multiplier":
        return "fill", 1000.0
    if leaf == "std-of-means":
        return "fill", 1.0
    if leaf in ("mean-of-means", "bias") or leaf.startswith("per_channel_scale"):
        return "fill", 0.0
    if len(shape) <= 1:
        return "fill", 1.0  # norm weights
    # weights and modulation tables: fan-in scaled, so activations keep unit scale through the depth
    return "uniform", 1.0 / math.sqrt(math.prod(shape[1:]))


@torch.no_grad()
def materialize_random_(
    module: nn.Module,
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    seed: int = 0,
    prefixes: Iterable[str] | None = None,
    narrow: torch.dtype | None = None,
) -> nn.Module:
    """Replace the meta tensors of ``module`` by random ones allocated directly on ``device``.

    Floating tensors get ``dtype``: weights a fan-in scaled uniform draw (std ``1/sqrt(fan_in)``), biases and
    noise scales 0, 1-D norm weights 1, the VAE latent statistics identity and its timestep multiplier 1000.
    Nothing is initialised on the CPU first, so a 13B model appears in seconds on a GPU. ``prefixes``
    restricts it to tensors whose qualified name starts with one of them (the rest stay on the meta device).
    Tied parameters stay tied. ``narrow`` (e.g. bfloat16, the released checkpoints' dtype): linear and
    convolution weights are drawn in it and kept there, their layers widening them per call, as the CPU loaders
    leave a checkpoint of that dtype (:mod:`ltxcli.models.upcast`). Returns ``module`` (eval mode, no grad).
    """
    device = torch.device(device)
    narrow_keys = upcastable_weights(module) if narrow is not None and narrow.itemsize < dtype.itemsize else set()
    gen = torch.Generator(device=device).manual_seed(seed)
    wanted = tuple(prefixes) if prefixes is not None else None
    done: dict[int, Tensor] = {}
    for mod_name, mod in module.named_modules(remove_duplicate=False):
        for kind in ("_parameters", "_buffers"):
            table: dict[str, Tensor | None] = getattr(mod, kind)
            for name, old in list(table.items()):
                if old is None or not old.is_meta:
                    continue
                full = f"{mod_name}.{name}" if mod_name else name
                if wanted is not None and not full.startswith(wanted):
                    continue
                if id(old) in done:
                    table[name] = done[id(old)]
                    continue
                dt = (narrow if full in narrow_keys else dtype) if old.is_floating_point() else old.dtype
                t = torch.empty(old.shape, device=device, dtype=dt)
                how, value = _init_value(full, tuple(old.shape))
                if how == "fill" or not t.is_floating_point():
                    t.fill_(value)
                else:
                    bound = value * math.sqrt(3.0)
                    t.uniform_(-bound, bound, generator=gen)
                new: Tensor = nn.Parameter(t, requires_grad=False) if kind == "_parameters" else t
                done[id(old)] = new
                table[name] = new
    if narrow_keys:
        convert_to_upcast(module)
    return module.eval().requires_grad_(False)


@dataclass(frozen=True)
class Architecture:
    """The full-size modules a preset runs, for building them with random weights."""

    transformer: TransformerConfig
    vae: VAEConfig
    upsampler: UpsamplerConfig | None
    text: Any  # a transformers T5Config
    label: str


def random_architecture(preset: Any) -> Architecture:
    """The architecture of a :class:`~ltxcli.presets.Preset`: 2B or 13B DiT, its VAE family, the upsampler of
    multi-scale presets and the T5-XXL text encoder (the ``tiny`` preset gets the tiny built-in model)."""
    if preset.name == "tiny":
        from .. import tiny

        up = UpsamplerConfig(in_channels=tiny.LATENT_CHANNELS, mid_channels=32, num_blocks_per_stage=1)
        text = tiny.make_text_model(len(tiny.TINY_WORDS) + 4).config
        return Architecture(tiny.TINY_TRANSFORMER, tiny.tiny_vae_config(), up, text, "tiny")
    name = preset.name
    version = name.split("-")[2] if name.count("-") >= 2 else ""
    family = "0.9" if version == "0.9" else "0.9.1" if version == "0.9.1" else "0.9.5"
    big = "13b" in name
    transformer = replace(TRANSFORMER_13B if big else TRANSFORMER_2B, causal_temporal_positioning=family == "0.9.5")
    vae = VAEConfig.from_official(official_vae_config(family))
    upsampler = UpsamplerConfig() if preset.multi_scale else None
    return Architecture(transformer, vae, upsampler, t5_xxl_config(), f"{'13B' if big else '2B'}, VAE {family}")


def _param_count_t5(config: Any) -> int:
    d, inner, ff = config.d_model, config.num_heads * config.d_kv, config.d_ff
    gated = bool(getattr(config, "is_gated_act", True))
    per_layer = 4 * d * inner + (3 if gated else 2) * d * ff
    return config.num_layers * per_layer + config.vocab_size * d


class _SkippedText:
    """Stands in for the text encoder when it is not timed: fixed random embeddings, 16 real tokens."""

    TOKENS = 16

    def __init__(self, width: int, device: torch.device, dtype: torch.dtype) -> None:
        self.width, self.device, self.dtype = width, device, dtype
        self.hidden_size = width

    def encode(self, prompts: Sequence[str], max_tokens: int = 256, padding: Padding = "longest",
               names: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
        # padded as TextEncoder.encode pads: to the longest prompt (here all 16 tokens) or to max_tokens
        width = min(self.TOKENS, max_tokens) if padding == "longest" else max_tokens
        gen = torch.Generator().manual_seed(0)
        emb = torch.randn(len(prompts), width, self.width, generator=gen).to(self.device, self.dtype)
        mask = torch.zeros(len(prompts), width, dtype=torch.long, device=self.device)
        mask[:, : self.TOKENS] = 1
        return emb, mask


def _default_preset() -> str:
    """The preset of the registry's default model (what ``ltx generate`` runs without ``--model``)."""
    from .. import weights

    return weights.load_registry().default.preset or ""


def build_random_pipeline(
    preset: Any, device: torch.device, dtype: torch.dtype, *, text_encoder: str = "auto", seed: int = 0
) -> tuple[Any, Architecture, str]:
    """A :class:`Pipeline` with the preset's full-size architecture and random weights made on ``device``.

    ``text_encoder``: ``"random"`` builds a random T5 of the release's shape, ``"skip"`` replaces it by fixed
    embeddings (its stage is then not timed), ``"auto"`` is random when the weights are cheap to hold (on a GPU,
    or under 1 GB) and skip otherwise. Returns the pipeline, the architecture and the text mode used.
    """
    from transformers import T5EncoderModel

    from ..pipeline import Pipeline
    from ..text import PromptEncoder, TextEncoder
    from ..tiny import make_tokenizer

    arch = random_architecture(preset)
    if text_encoder not in ("auto", "random", "skip"):
        raise BenchError(f"text encoder mode {text_encoder!r}: use auto, random or skip")
    t5_bytes = _param_count_t5(arch.text) * torch.finfo(dtype).bits // 8
    mode = text_encoder
    if mode == "auto":
        mode = "random" if device.type == "cuda" or t5_bytes < 1e9 else "skip"

    with torch.device("meta"):
        transformer = LTXVideoTransformer(arch.transformer)
        vae = CausalVideoVAE(arch.vae)
        upsampler = LatentUpsampler(arch.upsampler) if arch.upsampler is not None else None
        t5 = T5EncoderModel(arch.text) if mode == "random" else None
    # On the CPU, weights as a load of the bf16 checkpoints leaves them (keep_checkpoint_dtype's default).
    narrow = torch.bfloat16 if device.type == "cpu" else None
    materialize_random_(transformer, device=device, dtype=dtype, seed=seed, narrow=narrow)
    # Only the decoder and the latent statistics run; the encoder stays on the meta device (no memory).
    materialize_random_(vae, device=device, dtype=dtype, seed=seed + 1, prefixes=("decoder.", "per_channel_statistics."),
                        narrow=narrow)
    if upsampler is not None:
        materialize_random_(upsampler, device=device, dtype=dtype, seed=seed + 2, narrow=narrow)
    if t5 is not None:
        materialize_random_(t5, device=device, dtype=dtype, seed=seed + 3)
        text: PromptEncoder = TextEncoder(t5, make_tokenizer())
    else:
        text = _SkippedText(arch.transformer.caption_channels, device, dtype)
    pipe = Pipeline(transformer, vae, text, preset=preset, upsampler=upsampler, name=f"{preset.name} (random weights)")
    return pipe, arch, mode


# --- the bench run --------------------------------------------------------------------------------------------


@dataclass
class StageResult:
    runs_s: list[float]
    flops: float | None = None
    median_s: float | None = None
    tflops_per_s: float | None = None
    utilisation: float | None = None  # fraction of the peak
    note: str | None = None


@dataclass
class BenchResult:
    """Everything ``ltx bench`` reports (``asdict`` gives the ``--json`` object)."""

    preset: str
    architecture: str
    weights: str  # "random" or the model name / path
    device: str
    device_name: str
    dtype: str
    torch_version: str
    attention: Any  # the transformer's kernels (ltxcli.kernels.describe_model)
    kernels: Any  # what this machine offers (ltxcli.kernels.describe_kernels)
    gpu: str
    peak_tflops: float | None
    height: int
    width: int
    num_frames: int
    frame_rate: float
    video_s: float
    warmup: int
    repeats: int
    transformer_calls: int  # denoising steps, all passes
    branches: list[int]  # batch (guidance branches) of each transformer call
    tokens: list[int]  # video tokens of each transformer call
    text_encoder: str  # "real", "random" or "skipped"
    build_s: float
    stages: dict[str, StageResult] = field(default_factory=dict)
    peak_memory_bytes: int | None = None
    peak_memory_kind: str = ""
    real_time_factor: float | None = None  # end-to-end seconds / video seconds (< 1: faster than real time)
    paper_s: float = PAPER_SECONDS
    paper_ratio: float | None = None  # end-to-end seconds / the paper's 2 s
    notes: list[str] = field(default_factory=list)
    # Seconds of each warm-up run: with --compile the first one holds the compilation, kept apart from the
    # steady-state medians above.
    warmup_s: list[float] = field(default_factory=list)
    # Under torchrun: per-rank host, device, timings, peak memory and bytes communicated (ltxcli.parallel.orchestrate.rank_stats).
    ranks: list[dict[str, Any]] | None = None
    # The step cache of the runs (ltxcli.step_cache): mode, threshold, and over the last timed run the branch
    # evaluations of the transformer ("calls", None without a cache) and how many were skipped, as in the record.
    cache: dict[str, Any] = field(default_factory=lambda: {"mode": "none", "threshold": 0.0, "calls": None,
                                                           "skipped": 0})

    def to_dict(self) -> dict[str, Any]:  # the frame rate as every --json shows it: 24, not 24.0
        return asdict(self) | {"frame_rate": fps_number(self.frame_rate)}


class _FlopRecorder:
    """Forward pre-hooks that record the FLOPs of every call of the timed modules, per stage."""

    def __init__(self, pipe: Any) -> None:
        self.flops: dict[str, float] = {"text": 0.0, "denoise": 0.0, "decode": 0.0}
        self.calls: list[tuple[int, int]] = []  # (batch, tokens) per transformer call
        self._last_kv: Any = None  # the text keys and values of the previous call
        self.handles: list[Any] = []
        tcfg = pipe.transformer.config
        vcfg = pipe.vae.config

        def on_transformer(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            ctx = args[1] if len(args) > 1 else kwargs["encoder_hidden_states"]
            t = args[2] if len(args) > 2 else kwargs["timestep"]
            b, n = int(x.shape[0]), int(x.shape[1])
            rows = max(1, t.numel() // b)
            # With the pass's text keys and values (ltxcli.text_cache), a call skips their projection; it ran once,
            # for the first call that got them (the same tuple is handed to every step of its slice).
            kv = kwargs.get("text_kv")
            fresh = kv is None or kv is not self._last_kv
            self._last_kv = kv
            self.flops["denoise"] += transformer_flops(tcfg, n, int(ctx.shape[1]), b, rows,
                                                       text_kv=not fresh)["total"]
            self.calls.append((b, n))

        def on_decoder(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            z = args[0] if args else kwargs["z"]
            b, _, f, h, w = z.shape
            self.flops["decode"] += vae_decoder_flops(vcfg, f, h, w, b)

        self.handles.append(pipe.transformer.register_forward_pre_hook(on_transformer, with_kwargs=True))
        self.handles.append(pipe.vae.decoder.register_forward_pre_hook(on_decoder, with_kwargs=True))
        if pipe.upsampler is not None:
            ucfg = pipe.upsampler.config

            def on_upsampler(_m: nn.Module, args: tuple, kwargs: dict) -> None:
                z = args[0] if args else kwargs["latents"]
                b, _, f, h, w = z.shape
                self.flops["denoise"] += upsampler_flops(ucfg, f, h, w, b)

            self.handles.append(pipe.upsampler.register_forward_pre_hook(on_upsampler, with_kwargs=True))
        model = getattr(pipe.text_encoder, "model", None)
        if isinstance(model, nn.Module):
            t5cfg = model.config

            def on_text(_m: nn.Module, args: tuple, kwargs: dict) -> None:
                ids = args[0] if args else kwargs.get("input_ids")
                if ids is not None:
                    self.flops["text"] += t5_encoder_flops(t5cfg, int(ids.shape[1]), int(ids.shape[0]))

            self.handles.append(model.register_forward_pre_hook(on_text, with_kwargs=True))

    def reset(self) -> None:
        self.flops = dict.fromkeys(self.flops, 0.0)
        self.calls = []

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def run_bench(
    *,
    preset: str | None = None,
    model: str | None = None,
    random_weights: bool = False,
    height: int = PAPER_SIZE[0],
    width: int = PAPER_SIZE[1],
    num_frames: int = PAPER_SIZE[2],
    frame_rate: float | None = None,
    steps: int | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    gpu: str | None = None,
    warmup: int = 1,
    repeats: int = 3,
    text_encoder: str = "auto",
    attention: str = "auto",
    compile: bool = False,
    vae_conv: str = "auto",
    dist: Any = None,
    parallel: str = "auto",
    seed: int = 0,
    cache: str | None = None,
    prompt: str = "a red car drives along a mountain road at sunset, the camera follows it",
    log: Callable[[str], None] | None = None,
) -> BenchResult:
    """Time ``Pipeline.generate`` stage by stage and relate it to FLOPs, the GPU peak and the paper's 2 s.

    With ``random_weights`` the preset's full-size architecture (default: the registry's default model) is
    built directly on the device with random weights (no download); otherwise ``model`` (a weights.toml name,
    a single file or a diffusers folder; default the registry default) is loaded. ``steps`` replaces the step
    count of the (first) pass. ``gpu`` names the peak table entry and must match the device (else
    :class:`BenchError`). ``dtype="fp8"`` runs the block linears as float8 matmuls; ``attention`` and
    ``compile`` choose kernels as in :func:`ltxcli.load_pipeline` (compilation happens in the warm-up runs),
    ``vae_conv`` the VAE's convolution algorithm (:class:`ltxcli.models.winograd.ConvAlgorithm`). ``cache``: the
    step cache, ``none``, ``teacache[:THRESH]`` or ``fbcache[:THRESH]`` as for a request
    (:func:`ltxcli.field_values.parse_cache`); the result counts the transformer calls it skipped. Runs ``warmup``
    untimed generations, then ``repeats`` timed ones; stage times are medians. Timing waits for the device only at
    stage boundaries.
    """
    from .. import kernels
    from ..api import load_pipeline, resolve_compute, resolve_device
    from ..field_values import parse_cache
    from ..presets import PRESETS

    say = log or (lambda _msg: None)
    if repeats < 1 or warmup < 0:
        raise BenchError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    dev = resolve_device(device)
    peak = resolve_gpu(gpu, dev.type, device_name(dev))
    _, dt, fp8, backend = resolve_compute(dev, dtype, attention)
    try:
        conv_algorithm = parse_conv_algorithm(vae_conv)
        cache_mode, cache_threshold = parse_cache(cache)
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    notes: list[str] = []
    if preset is not None and preset not in PRESETS:  # before any model is loaded (or found missing)
        raise BenchError(f"unknown preset {preset!r} (known: {', '.join(sorted(PRESETS))})")

    t0 = time.perf_counter()
    if random_weights:
        if model is not None:
            raise BenchError("pass either --random-weights or --model, not both")
        name = preset or _default_preset()
        if name not in PRESETS:  # the registry's default model names no known preset
            raise BenchError(f"unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})")
        say(f"building {name} with random weights on {dev} ({str(dt).removeprefix('torch.')})")
        pipe, arch, text_mode = build_random_pipeline(PRESETS[name], dev, dt, text_encoder=text_encoder, seed=seed)
        label, weights_label = arch.label, "random"
        if fp8:
            convert_to_fp8(pipe.transformer, dtype=dt)
        elif PRESETS[name].precision.startswith("float8"):
            notes.append("fp8 preset run in the bench dtype; pass --dtype fp8 for float8 matmuls")
        kernels.set_attention_backend(pipe.transformer, backend)
        if compile:
            kernels.compile_blocks(pipe.transformer, kernels.CompileConfig())
    else:
        say(f"loading {model or 'the default model'} on {dev}")
        # weights must be on disk already (`ltx weights pull`): a benchmark never starts a download
        pipe = load_pipeline(model or "", device=dev, dtype="fp8" if fp8 else dt, attention=attention,
                             compile=compile, download=False)
        if preset is not None:
            pipe.preset = PRESETS[preset]
        cfg = pipe.transformer.config
        label = f"{cfg.num_layers} blocks x {cfg.inner_dim}, VAE {pipe.vae.config.family}"
        weights_label = model or pipe.name
        text_mode = "real"
    pipe.vae.set_conv_algorithm(conv_algorithm)
    if dev.type == "cpu":  # this host's measured CPU choices, as load_pipeline sets them (cached after the first)
        from .. import calibrate

        calibrate.apply(calibrate.for_configs(pipe.transformer.config, pipe.vae.config), pipe.transformer, pipe.vae,
                        conv_algorithm)
    if dist is not None:
        parallelize(pipe, dist, mode=parallel)
    kernels.synchronize(dev)
    build_s = time.perf_counter() - t0
    if text_mode == "skip":
        notes.append("text encoding skipped (random weights: a T5-XXL-shaped encoder does not fit cheaply here)")
    if compile and warmup < 1:
        notes.append("--compile without warm-up: the first timed run includes compilation")

    fps = float(frame_rate if frame_rate is not None else pipe.preset.frame_rate)
    recorder = _FlopRecorder(pipe)
    kwargs: dict[str, Any] = dict(
        height=height, width=width, num_frames=num_frames, frame_rate=fps, steps=steps, seed=seed,
        cache=cache,  # checked above: the request parses the same spec
    )
    cache_record: dict[str, Any] = {"mode": cache_mode, "threshold": cache_threshold, "calls": None, "skipped": 0}
    runs: dict[str, list[float]] = {"text": [], "denoise": [], "decode": [], "total": []}
    warmup_s: list[float] = []
    try:
        for i in range(warmup + repeats):
            timed = i >= warmup
            say(f"{'run' if timed else 'warm-up'} {i - warmup + 1 if timed else i + 1}/{repeats if timed else warmup}")
            recorder.reset()
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            kernels.synchronize(dev)
            start = time.perf_counter()
            result = pipe.generate(prompt, **kwargs)
            kernels.synchronize(dev)
            total = time.perf_counter() - start
            if not timed:
                warmup_s.append(total)
            if timed:
                runs["text"].append(result.timings["text_encoding_s"])
                runs["denoise"].append(result.timings["denoise_s"])
                runs["decode"].append(result.timings["decode_s"])
                runs["total"].append(total)
                cache_record = dict(result.settings["cache"])
    finally:
        recorder.remove()

    flops = dict(recorder.flops)
    flops["total"] = flops["text"] + flops["denoise"] + flops["decode"]
    stages: dict[str, StageResult] = {}
    for stage, values in runs.items():
        med = statistics.median(values)
        if stage == "text" and text_mode == "skip":
            stages[stage] = StageResult(runs_s=[], note="skipped (random weights)")
            continue
        st = StageResult(runs_s=values, flops=flops[stage], median_s=med)
        if med > 0 and flops[stage]:
            st.tflops_per_s = flops[stage] / med / 1e12
            if peak.tflops:
                st.utilisation = st.tflops_per_s / peak.tflops
        stages[stage] = st
    n_calls = len(recorder.calls)
    if n_calls:
        stages["denoise"].note = f"{stages['denoise'].median_s / n_calls:.4g} s per step"
    if cache_mode != "none":
        notes.append("FLOPs count every transformer call, the step cache's skipped ones included (an effective rate)")
    if text_mode == "skip":
        stages["total"].note = "without text encoding"

    mem, mem_kind = peak_memory(dev)
    ranks = None
    if dist is not None:
        medians = {f"{k}_s": statistics.median(v) for k, v in runs.items() if v}
        ranks = rank_stats(dist, medians, transformer=pipe.transformer)  # a collective: every rank calls it
    video_s = num_frames / fps
    total_med = stages["total"].median_s or 0.0
    if (height, width, num_frames) != PAPER_SIZE:
        notes.append(f"size {width}x{height}x{num_frames} differs from the paper's 768x512x121")
    if peak.key != "h100":
        notes.append("the paper's 2 s was measured on an H100")
    return BenchResult(
        preset=pipe.preset.name, architecture=label, weights=weights_label, device=str(dev),
        device_name=peak.device_name, dtype=("fp8 (e4m3 block linears), " if fp8 else "") + str(dt).removeprefix("torch."), torch_version=torch.__version__,
        attention={**kernels.describe_model(pipe.transformer), "vae_conv": str(pipe.vae.conv_algorithm)},
        kernels=kernels.describe_kernels(dev, attention=attention, dtype=dt),
        gpu=peak.label if peak.key != "unknown" else f"unknown ({peak.device_name})",
        peak_tflops=peak.tflops, height=height, width=width, num_frames=num_frames, frame_rate=fps,
        video_s=video_s, warmup=warmup, repeats=repeats, transformer_calls=n_calls,
        branches=[b for b, _ in recorder.calls], tokens=[n for _, n in recorder.calls],
        text_encoder={"random": "random", "skip": "skipped", "real": "real"}[text_mode], build_s=build_s,
        stages=stages, peak_memory_bytes=mem, peak_memory_kind=mem_kind,
        real_time_factor=total_med / video_s if video_s else None,
        paper_ratio=total_med / PAPER_SECONDS, notes=notes, warmup_s=warmup_s, ranks=ranks, cache=cache_record,
    )


def format_table(result: BenchResult) -> list[str]:
    """Plain-text lines of the human report (the CLI prints them with rich)."""
    r = result
    lines = [
        f"preset {r.preset} ({r.architecture}), weights: {r.weights}",
        f"device {r.device} [{r.device_name}], {r.dtype}, torch {r.torch_version}, kernels: {_kernel_line(r.attention)}",
        f"size {r.width}x{r.height}x{r.num_frames} @ {r.frame_rate:g} fps ({r.video_s:.2f} s of video); "
        f"{r.transformer_calls} transformer calls, branches {_runs(r.branches)}, tokens {_runs(r.tokens)}",
        f"warm-up {r.warmup}, repeats {r.repeats} (medians); build {r.build_s:.1f} s",
        "",
        f"{'stage':<9}{'median s':>10}{'FLOP':>10}{'TFLOP/s':>10}{'util':>8}  note",
    ]
    for name, st in r.stages.items():
        med = f"{st.median_s:.3f}" if st.median_s is not None else "-"
        fl = _si(st.flops) if st.flops else "-"
        tp = f"{st.tflops_per_s:.3g}" if st.tflops_per_s is not None else "-"
        ut = f"{st.utilisation * 100:.1f}%" if st.utilisation is not None else "-"
        lines.append(f"{name:<9}{med:>10}{fl:>10}{tp:>10}{ut:>8}  {st.note or ''}")
    lines.append("")
    peak = f"{r.peak_tflops:g} TFLOP/s bf16 dense" if r.peak_tflops else "no peak table (no utilisation)"
    lines.append(f"peak: {r.gpu}, {peak}")
    if r.peak_memory_bytes is not None:
        lines.append(f"peak memory: {r.peak_memory_bytes / 1e9:.2f} GB ({PEAK_MEMORY_KINDS.get(r.peak_memory_kind, r.peak_memory_kind)})")
    if r.real_time_factor is not None:
        speed = "faster" if r.real_time_factor < 1 else "slower"
        lines.append(f"real-time factor: {r.real_time_factor:.3g} (generation time / video time; {speed} than real time)")
    total = r.stages["total"].median_s
    if total is not None and r.paper_ratio is not None:
        lines.append(
            f"end-to-end {total:.3f} s vs the paper's {r.paper_s:g} s (768x512x121, H100): {r.paper_ratio:.3g}x"
        )
    if r.cache.get("mode", "none") != "none":
        lines.append(f"step cache {r.cache['mode']} (threshold {r.cache['threshold']:g}): {r.cache.get('skipped')} of "
                     f"{r.cache.get('calls')} transformer branch calls skipped (last timed run)")
    if r.warmup_s:
        lines.append("warm-up runs (compilation included, not in the medians): "
                     + ", ".join(f"{v:.3g} s" for v in r.warmup_s))
    for rank in r.ranks or []:
        lines.append(f"rank {rank.get('rank')}: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rank.items() if k != "rank"))
    lines.extend(f"note: {n}" for n in r.notes)
    return lines


def _si(value: float) -> str:
    """``2.91e13`` -> ``29.1 T``."""
    for scale, unit in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g}"


def _runs(values: Sequence[int]) -> str:
    """Run-length summary: ``[2, 2, 2, 1]`` -> ``2x3, 1``."""
    if not values:
        return "-"
    parts: list[str] = []
    prev, count = values[0], 0
    for v in [*values, None]:
        if v == prev:
            count += 1
            continue
        parts.append(f"{prev}x{count}" if count > 1 else f"{prev}")
        prev, count = v, 1
    return ", ".join(parts)


def _kernel_line(value: Any) -> str:
    """``describe_model`` -> ``attention sdpa/sdpa, fp8 layers 0, compile off``."""
    if not isinstance(value, Mapping):
        return str(value)
    att = value.get("attention", {})
    att_s = f"{att.get('self_attention', '?')}/{att.get('cross_attention', '?')}" if isinstance(att, Mapping) else att
    comp = value.get("compile")
    upcast = value.get("upcast_layers", 0)
    widened = f", {upcast} layers widened per call" if upcast else ""
    vae_conv = f", VAE conv {value['vae_conv']}" if "vae_conv" in value else ""
    return (f"attention {att_s}, fp8 layers {value.get('fp8_linear_layers', 0)}{widened}, "
            f"compile {'on' if comp else 'off'}{vae_conv}")
