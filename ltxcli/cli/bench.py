"""``ltx bench``: time text encoding, denoising and VAE decode; FLOPs, utilisation, the paper's 2 s.

Register with ``bench.register(app)``. The work is :func:`ltxcli.perf.bench.run_bench`; this module parses options,
maps a ``--gpu`` / device mismatch to exit code 2 and prints the report (a table, or one JSON object with
``--json``) on stdout.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .common import Output, exit_codes_epilog, guarded, usage_error

GPU_CHOICES = ("h100", "h200", "a100", "l40s", "4090", "cpu")


@guarded
def bench(
    preset: Annotated[str | None, typer.Option(
        help="Preset whose architecture and sampling settings run (default: the default model's preset).")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Real weights: a weights.toml name, a single .safetensors file or a diffusers folder.")] = None,
    random_weights: Annotated[bool, typer.Option(
        "--random-weights", help="Full-size architecture with random weights made on the device (no download).")] = False,
    height: Annotated[int, typer.Option(help="Frame height in pixels (the paper: 512).")] = 512,
    width: Annotated[int, typer.Option(help="Frame width in pixels (the paper: 768).")] = 768,
    num_frames: Annotated[int, typer.Option(help="Number of frames (the paper: 121).")] = 121,
    frame_rate: Annotated[float | None, typer.Option(help="Frame rate (default: the preset's).")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps of the (first) pass (default: the preset's).")] = None,
    gpu: Annotated[str | None, typer.Option(
        help=f"Peak table to compare with ({'|'.join(GPU_CHOICES)}); checked against the device found. "
             "Default: detected from the device name.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N (default: CUDA if available).")] = None,
    dtype: Annotated[str | None, typer.Option(
        help="bfloat16, float32 or fp8 (float8 block linears, GPUs of compute capability 8.9+); "
             "default: bfloat16 on GPU, float32 on CPU.")] = None,
    attention: Annotated[str, typer.Option(
        help="Attention kernels: auto, sdpa, flash3, flash2, sage or math (as for generate).")] = "auto",
    compile: Annotated[bool, typer.Option(
        "--compile", help="Compile the transformer block by block (compilation happens in the warm-up).")] = False,
    vae_conv: Annotated[str, typer.Option(
        help="VAE convolutions: auto, direct or winograd (as for generate).")] = "auto",
    cache: Annotated[str, typer.Option(help="Step cache: none, teacache[:T] or fbcache[:T] (as for generate).")] = "none",
    warmup: Annotated[int, typer.Option(help="Untimed runs before timing.")] = 1,
    repeats: Annotated[int, typer.Option(help="Timed runs; stage times are medians.")] = 3,
    text_encoder: Annotated[str, typer.Option(
        help="With --random-weights: random (a random T5-XXL-shaped encoder is timed), skip (not timed), "
             "auto (random on a GPU or for a text encoder under 1 GB, such as --preset tiny's; skip otherwise).")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the random weights and of the generation.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the table.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress messages on stderr.")] = False,
) -> None:
    """Benchmark generation stage by stage: medians, FLOPs, TFLOP/s, utilisation, memory, real-time factor."""
    from ltxcli.parallel import context
    from ltxcli.perf.bench import BenchError, format_table, run_bench

    out = Output(json_mode=json_out, quiet=quiet)
    if gpu is not None and gpu.lower() not in GPU_CHOICES:
        usage_error(f"--gpu {gpu}: unknown (use one of {', '.join(GPU_CHOICES)})")
    if model is not None and random_weights:
        usage_error("pass either --random-weights or --model, not both")
    if steps is not None and steps < 1:
        usage_error(f"--steps {steps} must be at least 1")
    if text_encoder not in ("auto", "random", "skip"):
        usage_error(f"--text-encoder {text_encoder}: use auto, random or skip")
    # under torchrun: one video split over the ranks, rank 0 reports
    try:
        with context.worker() as ctx:
            if ctx is not None:
                device = str(ctx.device)
            result = run_bench(
                preset=preset, model=model, random_weights=random_weights, height=height, width=width,
                num_frames=num_frames, frame_rate=frame_rate, steps=steps, device=device, dtype=dtype, gpu=gpu,
                warmup=warmup, repeats=repeats, text_encoder=text_encoder, attention=attention, compile=compile,
                vae_conv=vae_conv, seed=seed, log=out.info, dist=ctx, cache=cache,
            )
    except BenchError as exc:
        usage_error(str(exc))
    if ctx is not None and ctx.rank != 0:
        return
    if json_out:
        out.json(result.to_dict())
    else:
        for line in format_table(result):
            out.data(line)


def register(app: typer.Typer) -> None:
    app.command("bench", epilog=exit_codes_epilog())(bench)


__all__ = ["bench", "register"]
