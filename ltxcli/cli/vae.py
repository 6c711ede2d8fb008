"""``ltx vae encode|decode|roundtrip``: the video VAE of a model on its own.

Inputs are trimmed to ``8k + 1`` frames and centre-cropped to multiples of 32 px (the VAE's grid); a note on
stderr says when that changes the input. Latents files are safetensors with one tensor ``latents``
``[1, C, f, h, w]`` (float32, normalised as the transformer sees them) and string metadata: format, model,
frame_rate, height, width, num_frames, source, ltxcli_version.
"""

from __future__ import annotations

import os
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import EXIT_INPUT, CliError, Output, exit_codes_epilog, guarded, usage_error
from .resolve import MODEL_ENV, WEIGHTS_DIR_ENV, ensure_downloaded, resolve_model

LATENTS_FORMAT = "ltxcli.latents"
LATENTS_KEY = "latents"
SPATIAL_GRID = 32
TEMPORAL_GRID = 8
DEFAULT_IMAGE_FPS = 24  # frame rate recorded for a single image

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
OverwriteOpt = Annotated[bool, typer.Option(help="Replace an existing output.")]
MaxFramesOpt = Annotated[int | None, typer.Option(show_default=False,
                                                  help="Use at most this many frames of the input.")]
TimestepOpt = Annotated[float | None, typer.Option(
    show_default=False, help="Decoder timestep for timestep-conditioned VAEs (default: the model preset's, 0.05).")]


class _Vae:
    def __init__(self, module: Any, label: str, decode_timestep: float) -> None:
        self.module, self.label, self.decode_timestep = module, label, decode_timestep

    @property
    def device(self) -> Any:
        return self.module.decoder.conv_in.conv.weight.device

    @property
    def dtype(self) -> Any:
        from ltxcli.models.upcast import compute_dtype

        return compute_dtype(self.module.decoder.conv_in.conv)


def _load_vae(model: str | None, weights_dir: str | None, device: str | None, dtype: str | None, out: Output) -> _Vae:
    from ltxcli import weights
    from ltxcli.api import resolve_device, resolve_dtype
    from ltxcli.loading import CheckpointError, inspect_checkpoint, load_vae

    try:
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
    except ValueError as e:
        usage_error(str(e))
    ref = resolve_model(model, weights_dir)
    if ref.kind == "builtin":
        from ltxcli.tiny import build_pipeline

        with out.status(f"building {ref.name}"):
            return _Vae(build_pipeline(dev, dt).vae, ref.name, ref.preset.decode_timestep)
    if ref.kind == "registry":
        ensure_downloaded([ref.name], weights_dir=weights_dir, out=out)
        path = weights.resolve(ref.name, weights_dir=weights_dir)
    else:
        assert ref.path is not None
        path = ref.path
    if inspect_checkpoint(path).vae is None:
        raise CheckpointError(f"{path}: has no VAE")
    with out.status(f"loading the VAE of {ref.label}"):
        module = load_vae(path, device=dev, dtype=dt)  # in eval mode, without gradients
    return _Vae(module, ref.label, ref.preset.decode_timestep)


def _read_video(path: Path, max_frames: int | None, out: Output) -> tuple[Any, Fraction]:
    """The video as float ``[F, H, W, 3]`` trimmed to 8k+1 frames and centre-cropped to multiples of 32."""
    from ltxcli import media

    if max_frames is not None and max_frames < 1:
        usage_error(f"--max-frames={max_frames} must be at least 1")
    video = media.load_media(path, max_frames=max_frames)
    rate = media.video_frame_rate(path) if video.shape[0] > 1 else Fraction(DEFAULT_IMAGE_FPS)
    f, h, w = video.shape[:3]
    f2 = (f - 1) // TEMPORAL_GRID * TEMPORAL_GRID + 1
    h2, w2 = h // SPATIAL_GRID * SPATIAL_GRID, w // SPATIAL_GRID * SPATIAL_GRID
    if h2 == 0 or w2 == 0:
        raise CliError(f"{path}: {w}x{h} is smaller than the VAE's {SPATIAL_GRID}x{SPATIAL_GRID} grid", EXIT_INPUT)
    if (f2, h2, w2) != (f, h, w):
        out.info(f"using {f2} frames of {w2}x{h2} (the VAE needs 8k+1 frames and multiples of 32; input is "
                 f"{f} frames of {w}x{h})")
        top, left = (h - h2) // 2, (w - w2) // 2
        video = video[:f2, top : top + h2, left : left + w2]
    return video.contiguous(), rate


def _sync(vae: _Vae) -> None:
    from ltxcli.kernels import synchronize

    synchronize(vae.device)


def _encode(vae: _Vae, video: Any) -> Any:
    import torch

    pixels = video.permute(3, 0, 1, 2)[None] * 2 - 1  # [F, H, W, 3] in [0, 1] -> [1, 3, F, H, W] in [-1, 1]
    with torch.inference_mode():
        lat = vae.module.encode(pixels.to(device=vae.device, dtype=vae.dtype))
    return lat.float().cpu()


def _decode(vae: _Vae, latents: Any, timestep: float | None, seed: int) -> Any:
    """Normalised latents -> float ``[F, H, W, 3]`` in [0, 1] (no decode noise: the VAE's own reconstruction)."""
    import torch

    t = (vae.decode_timestep if timestep is None else timestep) if vae.module.timestep_conditioning else None
    gen = torch.Generator("cpu").manual_seed(seed)
    with torch.inference_mode():
        video = vae.module.decode(latents.to(device=vae.device, dtype=vae.dtype), timestep=t, generator=gen)
    return (video.float() / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 3, 0).cpu()


def _peak_memory(vae: _Vae) -> dict[str, Any]:
    import torch

    if vae.device.type == "cuda":
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(vae.device), "peak_memory_kind": "cuda_allocated"}
    try:
        import resource
    except ImportError:  # Windows
        return {"peak_memory_bytes": None, "peak_memory_kind": "unavailable"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return {"peak_memory_bytes": rss * scale, "peak_memory_kind": "process_peak_rss"}


def _fraction_text(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


def _write_latents(target: Path, latents: Any, meta: dict[str, str], overwrite: bool) -> None:
    from safetensors.torch import save_file

    from ltxcli import media

    with media.atomic_output(target, overwrite=overwrite) as temp:
        save_file({LATENTS_KEY: latents.contiguous()}, os.fspath(temp), metadata=meta)


def read_latents(path: Path) -> tuple[Any, dict[str, str]]:
    """A latents file written by ``ltx vae encode`` -> (tensor, metadata). Exit 6 if it is not one."""
    from safetensors import safe_open

    if not path.is_file():
        raise CliError(f"{path}: no such file", EXIT_INPUT)
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            if LATENTS_KEY not in f.keys():  # noqa: SIM118 - safe_open has keys(), not __contains__
                raise CliError(f"{path}: no '{LATENTS_KEY}' tensor (not written by `ltx vae encode`)", EXIT_INPUT)
            latents = f.get_tensor(LATENTS_KEY)
    except CliError:
        raise
    except Exception as e:
        raise CliError(f"{path}: not a readable safetensors file ({' '.join(str(e).split())})", EXIT_INPUT) from None
    if latents.ndim != 5 or latents.shape[0] != 1 or not latents.is_floating_point():
        raise CliError(f"{path}: latents must be a float tensor [1, C, f, h, w], got {list(latents.shape)}", EXIT_INPUT)
    return latents.float(), meta


def _check_target(target: Path, overwrite: bool) -> None:
    if (target.exists() or target.is_symlink()) and not overwrite:
        usage_error(f"{target} already exists: pass --overwrite to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)


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
    from ltxcli import __version__

    out = Output(json_mode=json_, quiet=quiet)
    target = output or Path(video.stem + ".latents.safetensors")
    if target.suffix != ".safetensors":
        usage_error(f"-o {target}: latents are written as .safetensors")
    _check_target(target, overwrite)
    frames, rate = _read_video(video, max_frames, out)
    vae = _load_vae(model, weights_dir, device, dtype, out)
    t0 = time.perf_counter()
    latents = _encode(vae, frames)
    encode_s = time.perf_counter() - t0
    f, h, w = frames.shape[:3]
    meta = {"format": LATENTS_FORMAT, "model": vae.label, "frame_rate": _fraction_text(rate), "height": str(h),
            "width": str(w), "num_frames": str(f), "source": str(video), "ltxcli_version": __version__}
    _write_latents(target, latents, meta, overwrite)
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
    from ltxcli import __version__, media

    out = Output(json_mode=json_, quiet=quiet)
    stem = latents_file.name.removesuffix(".safetensors").removesuffix(".latents")
    target = output or Path(stem + ".mp4")
    if target.suffix.lower() != ".mp4":
        usage_error(f"-o {target}: videos are written as .mp4")
    if frame_rate is not None and not 0 < frame_rate <= 1000:
        usage_error(f"--frame-rate={frame_rate} must be in (0, 1000]")
    if decode_timestep is not None and decode_timestep < 0:
        usage_error(f"--decode-timestep={decode_timestep} must be >= 0")
    _check_target(target, overwrite)
    latents, meta = read_latents(latents_file)
    vae = _load_vae(model or meta.get("model"), weights_dir, device, dtype, out)
    if latents.shape[1] != vae.module.latent_channels:
        raise CliError(f"{latents_file}: latents have {latents.shape[1]} channels, the VAE of {vae.label} expects "
                       f"{vae.module.latent_channels} (encoded with {meta.get('model', 'another model')}?)", 2)
    rate: float | Fraction = frame_rate if frame_rate is not None else _meta_rate(meta)
    t0 = time.perf_counter()
    video = _decode(vae, latents, decode_timestep, seed)
    decode_s = time.perf_counter() - t0
    record = {"tool": "ltxcli", "version": __version__, "model": vae.label, "source": str(latents_file),
              "frame_rate": float(rate), "num_frames": video.shape[0], "height": video.shape[1],
              "width": video.shape[2]}
    media.write_video(target, video, rate, metadata=record, overwrite=overwrite)
    out.info(f"wrote {target} ({video.shape[0]} frames {video.shape[2]}x{video.shape[1]}, {decode_s:.2f} s)")
    if json_:
        out.json({"path": str(target), **{k: v for k, v in record.items() if k not in ("tool", "version")},
                  "timings": {"decode_s": round(decode_s, 4)}})
    else:
        out.data(str(target))


def _meta_rate(meta: dict[str, str]) -> Fraction:
    try:
        rate = Fraction(meta.get("frame_rate", str(DEFAULT_IMAGE_FPS)))
    except (ValueError, ZeroDivisionError):
        return Fraction(DEFAULT_IMAGE_FPS)
    return rate if 0 < rate <= 1000 else Fraction(DEFAULT_IMAGE_FPS)


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
    import torch

    from ltxcli import media

    from . import metrics

    out = Output(json_mode=json_, quiet=quiet)
    if output is not None:
        if output.suffix.lower() != ".mp4":
            usage_error(f"-o {output}: videos are written as .mp4")
        _check_target(output, overwrite)
    frames, rate = _read_video(video, max_frames, out)
    vae = _load_vae(model, weights_dir, device, dtype, out)
    if vae.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(vae.device)
    _sync(vae)
    t0 = time.perf_counter()
    latents = _encode(vae, frames)
    _sync(vae)
    encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    recon = _decode(vae, latents, decode_timestep, 0)
    _sync(vae)
    decode_s = time.perf_counter() - t0
    memory = _peak_memory(vae)

    ref8 = media.to_uint8(frames).double() / 255
    rec8 = media.to_uint8(recon).double() / 255
    mse = metrics.mse_per_frame(ref8, rec8)
    psnr = [metrics.psnr_from_mse(float(m)) for m in mse]
    ssim = [float(s) for s in metrics.ssim_per_frame(ref8, rec8)]
    overall = {"psnr": metrics.psnr_from_mse(float(mse.mean())), "ssim": sum(ssim) / len(ssim)}
    if output is not None:
        media.write_video(output, recon, rate, metadata={"tool": "ltxcli", "model": vae.label,
                                                         "source": str(video), "roundtrip": True},
                          overwrite=overwrite)
        out.info(f"wrote {output}")
    f, h, w = frames.shape[:3]
    result = {
        "video": str(video), "model": vae.label, "num_frames": f, "height": h, "width": w,
        "latent_shape": list(latents.shape), "device": str(vae.device), "dtype": str(vae.dtype).removeprefix("torch."),
        "psnr": round(overall["psnr"], 4), "ssim": round(overall["ssim"], 6),
        "psnr_per_frame": [round(p, 4) for p in psnr], "ssim_per_frame": [round(s, 6) for s in ssim],
        "timings": {"encode_s": round(encode_s, 4), "decode_s": round(decode_s, 4)}, **memory,
        "ssim_method": "BT.601 luma, 11x11 Gaussian sigma 1.5, valid windows, 8-bit frames",
    }
    if output is not None:
        result["output"] = str(output)
    if json_:
        out.json(result)
        return
    out.data("frame  psnr_db  ssim")
    for i, (p, s) in enumerate(zip(psnr, ssim, strict=True)):
        out.data(f"{i:5d}  {p:7.2f}  {s:.4f}")
    out.data(f"  all  {overall['psnr']:7.2f}  {overall['ssim']:.4f}")
    peak = memory["peak_memory_bytes"]
    peak_text = f"{peak / 2**20:.0f} MiB ({memory['peak_memory_kind']})" if peak is not None else "unknown"
    out.data(f"encode {encode_s:.2f} s, decode {decode_s:.2f} s, peak memory {peak_text}, "
             f"{vae.label} on {vae.device} ({result['dtype']})")
