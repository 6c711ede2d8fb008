"""``ltx vae encode|decode|roundtrip``: the video VAE of a model on its own (the work: :mod:`ltxcli.autoencode`).

Inputs are trimmed to ``8k + 1`` frames and centre-cropped to multiples of 32 px (the VAE's grid); a note on
stderr says when that changes the input.
"""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import EXIT_ERROR, CliError, Output, exit_codes_epilog, guarded, usage_error
from .resolve import MODEL_ENV, WEIGHTS_DIR_ENV, ensure_downloaded, resolve

if TYPE_CHECKING:  # the commands import the library when they run, so `ltx --help` imports no torch
    from ltxcli.autoencode import VideoAutoencoder

app = typer.Typer(help="Encode videos to latents, decode latents, measure VAE reconstruction.",
                  epilog=exit_codes_epilog(), no_args_is_help=True)

ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", envvar=MODEL_ENV, show_default=False,
    help="Whose VAE: a weights.toml name ('tiny' needs no download), a single-file checkpoint or a diffusers "
         "folder. Default: the registry's default model (decode: the model recorded in the latents file).")]
WeightsDirOpt = Annotated[str | None, typer.Option(envvar=WEIGHTS_DIR_ENV, show_default=False,
                                                   help="Plain folder for weights instead of the HF cache.")]
DeviceOpt = Annotated[str | None, typer.Option(show_default=False, help="cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[str | None, typer.Option(show_default=False, help="bfloat16 or float32.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No messages on stderr.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
MaxFramesOpt = Annotated[int | None, typer.Option(show_default=False,
                                                  help="Use at most this many frames of the input.")]
TimestepOpt = Annotated[float | None, typer.Option(
    show_default=False, help="Decoder timestep for timestep-conditioned VAEs (default: the model preset's, 0.05).")]


def _check_timestep(decode_timestep: float | None) -> None:
    if decode_timestep is not None and not 0 <= decode_timestep < float("inf"):  # NaN fails both comparisons
        usage_error(f"--decode-timestep={decode_timestep} must be a finite number >= 0 (e.g. 0.05)")


def _load_vae(model: str | None, weights_dir: str | None, device: str | None, dtype: str | None,
              out: Output) -> VideoAutoencoder:
    from ltxcli import autoencode
    from ltxcli.api import resolve_device, resolve_dtype

    dev = resolve_device(device)  # a bad --device / --dtype is a ValueError: exit 2
    dt = resolve_dtype(dtype, dev)
    ref = resolve(model, weights_dir=weights_dir, need="vae")  # a file without a VAE fails here (exit 6)
    if ref.kind == "registry":
        ensure_downloaded(ref.needed, weights_dir=weights_dir, out=out)
        ref = ref.refreshed()
        ref.require()
    source = "tiny" if ref.kind == "builtin" else ref.path
    assert source is not None
    with out.status(f"building {ref.name}" if ref.kind == "builtin" else f"loading the VAE of {ref.label}"):
        return autoencode.load_autoencoder(source, label=ref.label, decode_timestep=ref.preset.decode_timestep,
                                           device=dev, dtype=dt)


def _read_video(path: Path, max_frames: int | None, out: Output) -> tuple[Any, Fraction]:
    """The video fitted to the VAE's grid, with a note on stderr when that changes it."""
    if max_frames is not None and max_frames < 1:
        usage_error(f"--max-frames={max_frames} must be at least 1")
    from ltxcli import autoencode

    video, rate = autoencode.read_video(path, max_frames)
    fitted = autoencode.fit_to_grid(video, path)
    if fitted.shape != video.shape:
        (f, h, w), (f2, h2, w2) = video.shape[:3], fitted.shape[:3]
        out.info(f"using {f2} frames of {w2}x{h2} (the VAE needs 8k+1 frames and multiples of 32; input is "
                 f"{f} frames of {w}x{h})")
    return fitted, rate


def _check_target(target: Path, overwrite: bool) -> None:
    """Before any work: an output that exists (without --overwrite), is a folder, or cannot be made where it is."""
    from ltxcli.runner import check_writable

    if target.is_dir():  # first: --overwrite would not help
        raise CliError(f"cannot write {target}: it is a folder", EXIT_ERROR)
    if (target.exists() or target.is_symlink()) and not overwrite:
        usage_error(f"{target} already exists: pass --overwrite to replace it")
    check_writable(target)  # a file where a folder should be: one line, as ltx generate says it


def _made_folder(target: Path) -> Path:
    """``target`` once its folder exists: made when the output is written, so a failure before leaves none."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


@app.command()
@guarded
def encode(
    video: Annotated[Path, typer.Argument(show_default=False, help="A video (or an image).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", show_default=False,
                                                help="Latents .safetensors (default: <video>.latents.safetensors here).")] = None,
    model: ModelOpt = None,
    max_frames: MaxFramesOpt = None,
    weights_dir: WeightsDirOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    overwrite: OverwriteOpt = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Encode a video to normalised latents (posterior mode) in a safetensors file."""
    from ltxcli import autoencode

    out = Output(json_mode=json_, quiet=quiet)
    target = output or Path(video.stem + ".latents.safetensors")
    if target.suffix.lower() != ".safetensors":
        usage_error(f"-o {target}: latents are written as .safetensors")
    _check_target(target, overwrite)
    frames, rate = _read_video(video, max_frames, out)
    vae = _load_vae(model, weights_dir, device, dtype, out)
    t0 = time.perf_counter()
    latents = vae.encode(frames)
    encode_s = time.perf_counter() - t0
    autoencode.save_latents(_made_folder(target), latents, autoencode.latents_metadata(vae, frames, rate, video), overwrite=overwrite, statistics=vae.statistics)
    f, h, w = frames.shape[:3]
    out.info(f"wrote {target} (latents {list(latents.shape)} from {f} frames of {w}x{h}, {encode_s:.2f} s)")
    if json_:
        out.json({"path": str(target), "shape": list(latents.shape), "model": vae.label, "num_frames": f,
                  "height": h, "width": w, "frame_rate": float(rate), "timings": {"encode_s": round(encode_s, 4)}})
    else:
        out.data(str(target))


@app.command()
@guarded
def decode(
    latents_file: Annotated[Path, typer.Argument(metavar="LATENTS", show_default=False,
                                                 help="A .safetensors file written by `ltx vae encode`.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", show_default=False,
                                                help="Output .mp4 (default: <latents stem>.mp4 here).")] = None,
    model: ModelOpt = None,
    frame_rate: Annotated[float | None, typer.Option(show_default=False,
                                                     help="Frame rate (default: the one recorded at encoding).")] = None,
    decode_timestep: TimestepOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the decoder's noise injection (0.9.1 VAE).")] = 0,
    weights_dir: WeightsDirOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    overwrite: OverwriteOpt = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Decode a latents file to an H.264 MP4."""
    from ltxcli import autoencode, media

    out = Output(json_mode=json_, quiet=quiet)
    stem = latents_file.name.removesuffix(".safetensors").removesuffix(".latents")
    target = output or Path(stem + ".mp4")
    if target.suffix.lower() != ".mp4":
        usage_error(f"-o {target}: videos are written as .mp4")
    if frame_rate is not None and not 0 < frame_rate <= 1000:
        usage_error(f"--frame-rate={frame_rate} must be in (0, 1000]")
    _check_timestep(decode_timestep)
    _check_target(target, overwrite)
    latents, meta = autoencode.read_latents(latents_file)
    vae = _load_vae(model or autoencode.recorded_model(latents_file, meta), weights_dir, device, dtype, out)
    autoencode.check_latents(vae, latents, latents_file, meta)
    rate: float | Fraction = frame_rate if frame_rate is not None else autoencode.latents_frame_rate(meta)
    t0 = time.perf_counter()
    video = vae.decode(latents, decode_timestep, seed)
    decode_s = time.perf_counter() - t0
    record = autoencode.decoded_record(vae, video, rate, latents_file)
    media.write_video(_made_folder(target), video, rate, metadata=record, overwrite=overwrite)
    out.info(f"wrote {target} ({video.shape[0]} frames {video.shape[2]}x{video.shape[1]}, {decode_s:.2f} s)")
    if json_:
        out.json({"path": str(target), **{k: v for k, v in record.items() if k not in ("tool", "version")},
                  "timings": {"decode_s": round(decode_s, 4)}})
    else:
        out.data(str(target))


@app.command()
@guarded
def roundtrip(
    video: Annotated[Path, typer.Argument(show_default=False, help="A video (or an image).")],
    model: ModelOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", show_default=False,
                                                help="Also write the reconstruction as .mp4.")] = None,
    max_frames: MaxFramesOpt = None,
    decode_timestep: TimestepOpt = None,
    weights_dir: WeightsDirOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    overwrite: OverwriteOpt = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Encode and decode a video; print PSNR and SSIM per frame and overall, timings and peak memory.

    PSNR and SSIM compare 8-bit RGB frames (the reconstruction rounded as it would be written). SSIM is on
    BT.601 luma with the standard 11x11 Gaussian window (sigma 1.5); overall PSNR comes from the mean squared
    error of all frames, overall SSIM is the mean over frames.
    """
    from ltxcli import autoencode, media

    out = Output(json_mode=json_, quiet=quiet)
    _check_timestep(decode_timestep)
    if output is not None:
        if output.suffix.lower() != ".mp4":
            usage_error(f"-o {output}: videos are written as .mp4")
        _check_target(output, overwrite)
    frames, rate = _read_video(video, max_frames, out)
    vae = _load_vae(model, weights_dir, device, dtype, out)
    run = autoencode.roundtrip(vae, frames, source=video, decode_timestep=decode_timestep)
    if output is not None:
        media.write_video(_made_folder(output), run.reconstruction, rate, metadata=run.record, overwrite=overwrite)
        out.info(f"wrote {output}")
    result = run.to_dict() | ({"output": str(output)} if output is not None else {})
    if json_:
        out.json(result)
        return
    q = run.quality
    out.data("frame  psnr_db  ssim")
    for i, (p, s) in enumerate(zip(q.psnr_per_frame, q.ssim_per_frame, strict=True)):
        out.data(f"{i:5d}  {p:7.2f}  {s:.4f}")
    out.data(f"  all  {q.psnr:7.2f}  {q.ssim:.4f}")
    peak = run.peak_memory_bytes
    peak_text = f"{peak / 2**20:.0f} MiB ({run.peak_memory_kind})" if peak is not None else "unknown"
    out.data(f"encode {run.encode_s:.2f} s, decode {run.decode_s:.2f} s, peak memory {peak_text}, "
             f"{vae.label} on {vae.device} ({result['dtype']})")
