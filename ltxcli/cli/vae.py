"""``ltx vae encode|decode|roundtrip``: the video VAE of a model on its own (the work: :mod:`ltxcli.autoencode`).

Inputs are trimmed to ``8k + 1`` frames and centre-cropped to multiples of 32 px (the VAE's grid); a note on
stderr says when that changes the input.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .common import Output, exit_codes_epilog, guarded
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
    show_default=False, help="Decoder timestep for timestep-conditioned VAEs. Default: the model preset's, 0.05 "
                             "(decode: the one a generation's latents file records, unless --plain).")]


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
    from ltxcli import autoencode, naming

    out = Output(json_mode=json_, quiet=quiet)
    target = autoencode.check_target(output or Path(video.stem + ".latents.safetensors"), overwrite=overwrite, suffix=".safetensors")
    frames, rate, note = autoencode.read_fitted(video, max_frames, stream=True)
    if note:
        out.info(note)
    vae = _load_vae(model, weights_dir, device, dtype, out)
    t0 = time.perf_counter()
    latents = vae.encode(frames)
    encode_s = time.perf_counter() - t0
    autoencode.save_latents(target, latents, meta := autoencode.latents_metadata(vae, frames, rate, video), overwrite=overwrite, statistics=vae.statistics)
    f, h, w = frames.shape[:3]
    out.info(f"wrote {target} (latents {list(latents.shape)} from {f} frames of {w}x{h}, {encode_s:.2f} s)")
    if json_:
        out.json({"path": str(target), "source": meta["source"], "latent_shape": list(latents.shape), "model": vae.label, "num_frames": f,
                  "height": h, "width": w, "frame_rate": naming.fps_number(rate), "timings": {"encode_s": round(encode_s, 4)}})
    else:
        out.data(str(target))


@app.command()
@guarded
def decode(
    latents_file: Annotated[Path, typer.Argument(metavar="LATENTS", show_default=False,
                                                 help="A .safetensors file written by `ltx vae encode` or `--latents-out`.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", show_default=False,
                                                help="Output .mp4 (default: <latents stem>.mp4 here).")] = None,
    model: ModelOpt = None,
    frame_rate: Annotated[float | None, typer.Option(show_default=False, help="Frame rate (default: the one the file records, else 24).")] = None,
    decode_timestep: TimestepOpt = None,
    seed: Annotated[int | None, typer.Option(show_default=False, help="Seed of the decode noise and the decoder's "
                                             "noise injection (0.9.1 VAE). Default: the generation's, else 0.")] = None,
    plain: Annotated[bool, typer.Option("--plain", help="Ignore the decode settings a generation recorded in the file "
                                        "(decode noise, tone mapping, crop): the VAE's own reconstruction.")] = False,
    weights_dir: WeightsDirOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    overwrite: OverwriteOpt = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Decode a latents file to an H.264 MP4 (a generation's latents as that generation decoded them)."""
    from ltxcli import autoencode

    out = Output(json_mode=json_, quiet=quiet)
    stem = latents_file.name.removesuffix(".safetensors").removesuffix(".latents")
    target = autoencode.check_target(output or Path(stem + ".mp4"), overwrite=overwrite, suffix=".mp4")
    autoencode.check_frame_rate(frame_rate)
    autoencode.check_decode_timestep(decode_timestep)
    latents, meta = autoencode.read_latents(latents_file)
    rate = frame_rate if frame_rate is not None else autoencode.latents_frame_rate(meta, latents_file)
    vae = _load_vae(model or autoencode.recorded_model(latents_file, meta), weights_dir, device, dtype, out)
    autoencode.check_latents(vae, latents, latents_file, meta)
    t0 = time.perf_counter()
    video, how = autoencode.decode_file(vae, latents, meta, latents_file, timestep=decode_timestep, seed=seed,
                                        plain=plain)
    decode_s = time.perf_counter() - t0
    record = autoencode.decoded_record(vae, video, rate, latents_file, how)
    autoencode.write_video(target, video, rate, record, overwrite=overwrite)
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
    from ltxcli import autoencode

    out = Output(json_mode=json_, quiet=quiet)
    autoencode.check_decode_timestep(decode_timestep)
    if output is not None:
        output = autoencode.check_target(output, overwrite=overwrite, suffix=".mp4")
    frames, rate, note = autoencode.read_fitted(video, max_frames, writes_video=output is not None)
    if note:
        out.info(note)
    vae = _load_vae(model, weights_dir, device, dtype, out)
    run = autoencode.roundtrip(vae, frames, source=video, decode_timestep=decode_timestep)
    if output is not None:
        autoencode.write_video(output, run.reconstruction, rate, run.record, overwrite=overwrite)
        out.info(f"wrote {output}")
    result = run.to_dict() | ({"output": str(output)} if output is not None else {})
    if json_:
        out.json(result)
        return
    for line in run.table_lines():
        out.data(line)
