"""ltxcli.autoencode (the library under ``ltx vae``) and ltxcli.media.media_info (under ``ltx info``), from Python."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch

from ltxcli import autoencode, media
from ltxcli.media import MediaError


@pytest.fixture(scope="module")
def vae() -> autoencode.VideoAutoencoder:
    return autoencode.load_autoencoder("tiny", label="tiny", decode_timestep=0.05, device=torch.device("cpu"),
                                       dtype=torch.float32)


def test_fit_to_grid_trims_and_centre_crops() -> None:
    video = torch.arange(11 * 70 * 100 * 3, dtype=torch.float32).reshape(11, 70, 100, 3)
    fitted = autoencode.fit_to_grid(video)
    assert fitted.shape == (9, 64, 96, 3)
    assert torch.equal(fitted, video[:9, 3:67, 2:98])
    with pytest.raises(MediaError, match="smaller than the VAE's 32x32 grid"):
        autoencode.fit_to_grid(torch.zeros(1, 31, 64, 3), "small.png")


def test_latents_file_round_trip(vae: autoencode.VideoAutoencoder, tmp_path: Path) -> None:
    torch.manual_seed(0)
    video = torch.rand(9, 64, 96, 3)
    latents = vae.encode(video)
    assert latents.shape == (1, vae.latent_channels, 2, 2, 3) and latents.dtype == torch.float32
    meta = autoencode.latents_metadata(vae, video, Fraction(30000, 1001), "clip.mp4")
    assert (meta["frame_rate"], meta["num_frames"], meta["model"]) == ("30000/1001", "9", "tiny")
    autoencode.save_latents(tmp_path / "l.safetensors", latents, meta)
    back, meta_back = autoencode.read_latents(tmp_path / "l.safetensors")
    assert torch.equal(back, latents) and meta_back == meta
    assert autoencode.latents_frame_rate(meta_back, "l.safetensors") == Fraction(30000, 1001)
    assert autoencode.latents_frame_rate({}, "l.safetensors") == autoencode.DEFAULT_IMAGE_FPS  # none recorded
    decoded = vae.decode(back)
    assert decoded.shape == video.shape and 0 <= float(decoded.min()) <= float(decoded.max()) <= 1
    with pytest.raises(ValueError, match="latents have 3 channels"):
        autoencode.check_latents(vae, back[:, :3], "l.safetensors", meta)
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(MediaError, match="not a readable safetensors file"):
        autoencode.read_latents(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("name", ["clip.mp4", "clip.mkv", "clip.ts", "clip.avi", "still.png", "still.jpg"])
def test_a_video_or_picture_given_for_latents_says_what_to_give(tmp_path: Path, name: str) -> None:
    """`ltx vae decode clip.mp4` (the video, not its latents) said "not a readable safetensors file (Error while
    deserializing header: header too large)": nothing a user can act on. It says the file is a video (or picture),
    that decode takes the latents file ltx writes, and the command that makes one."""
    from PIL import Image

    path = tmp_path / name
    if path.suffix in (".png", ".jpg"):
        Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    else:
        with av.open(str(path), "w") as out:  # the container by the suffix: MP4, Matroska, MPEG-TS, AVI
            s = out.add_stream("mpeg4", rate=24)
            s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
            for i in range(3):
                out.mux(s.encode(av.VideoFrame.from_ndarray(torch.full((32, 32, 3), 40 * i).byte().numpy(), "rgb24")))
            out.mux(s.encode(None))
    kind = "an image" if path.suffix in (".png", ".jpg") else "a video"
    with pytest.raises(MediaError) as e:
        autoencode.read_latents(path)
    assert str(e.value) == (f"{path}: is {kind}, not latents: `ltx vae decode` takes a latents .safetensors file "
                            f"(from `ltx vae encode` or --latents-out): `ltx vae encode {path}` makes one")
    (tmp_path / "notes.mp4").write_text("not a video either\n" * 20)  # neither: the safetensors reader's words
    with pytest.raises(MediaError, match=r"notes\.mp4: not a readable safetensors file \("):
        autoencode.read_latents(tmp_path / "notes.mp4")


@pytest.mark.parametrize("text", ["0", "-24", "abc", "inf", "nan", "1/0", "", "1001"])
def test_a_garbled_recorded_frame_rate_is_refused_naming_the_file_and_field(text: str) -> None:
    """A recorded frame_rate that is no rate in [0.001, 1000] decoded silently at 24 fps; a missing one still does."""
    with pytest.raises(MediaError) as e:
        autoencode.latents_frame_rate({"frame_rate": text}, "l.safetensors")
    assert str(e.value).startswith(f"l.safetensors: its 'frame_rate' record {text!r} ") and "--frame-rate" in str(e.value)


def test_encoding_a_clip_above_1000_fps_says_decode_needs_a_frame_rate(tmp_path: Path) -> None:
    """`ltx vae encode` of a 2000 fps clip recorded 2000 without a word; `ltx vae decode` then refused the file.
    The read now notes it up front (the latents keep the true rate), and decode's refusal says what to pass."""
    import numpy as np

    path = tmp_path / "fast.mp4"
    with av.open(str(path), "w") as out:  # written here: ltxcli's writer refuses a rate above 1000
        stream = out.add_stream("libx264", rate=2000)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        for i in range(9):
            frame = np.full((32, 64, 3), 20 * i, dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    frames, rate, note = autoencode.read_fitted(path)
    assert rate == 2000 and frames.shape == (9, 32, 64, 3)
    assert note == (f"{path} is 2000 fps, above the 1000 a video is written at: decoding it to a video needs "
                    "--frame-rate (at most 1000)")
    with pytest.raises(MediaError, match=r"record '2000' is above the 1000 fps .*: pass --frame-rate \(at most 1000"):
        autoencode.latents_frame_rate({"frame_rate": "2000"}, "l.safetensors")


def test_roundtrip_measures_quality_and_time(vae: autoencode.VideoAutoencoder) -> None:
    torch.manual_seed(1)
    video = torch.rand(9, 64, 64, 3)
    run = autoencode.roundtrip(vae, video)
    assert run.reconstruction.shape == video.shape
    q = run.quality
    assert len(q.psnr_per_frame) == len(q.ssim_per_frame) == 9
    assert 0 < q.psnr < 100 and q.ssim == pytest.approx(sum(q.ssim_per_frame) / 9)
    assert run.encode_s > 0 and run.decode_s > 0 and run.peak_memory_kind == "process_peak_rss"


def test_media_info_of_a_video_and_a_frames_folder(tmp_path: Path) -> None:
    # an ltx record names its tool (another program's JSON comment is no record: test_cli.py)
    media.write_video(tmp_path / "v.mp4", torch.rand(5, 32, 48, 3), 25, metadata={"tool": "ltxcli", "seed": 3})
    stream, record = media.media_info(tmp_path / "v.mp4")
    assert stream == {"kind": "video", "codec": "h264", "width": 48, "height": 32, "num_frames": 5,
                      "frame_rate": 25, "duration_s": pytest.approx(0.2, abs=0.01)}
    assert record == {"tool": "ltxcli", "seed": 3}
    media.write_png_frames(tmp_path / "f", torch.rand(3, 8, 8, 3), metadata={"tool": "ltxcli", "seed": 4})
    assert media.media_info(tmp_path / "f") == ({"kind": "frames", "width": 8, "height": 8, "num_frames": 3},
                                                {"tool": "ltxcli", "seed": 4})
    # a portrait phone video: landscape frames and a display matrix; info gives the size ltx reads it at
    with av.open(str(tmp_path / "phone.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.height, stream.width, stream.pix_fmt = 32, 48, "yuv420p"
        stream.set_display_rotation(-90)  # what the `rotate=90` tag of a phone's file reads as
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame(48, 32, "yuv420p")))
        container.mux(stream.encode(None))
    stream_info, _ = media.media_info(tmp_path / "phone.mp4")
    assert (stream_info["width"], stream_info["height"], stream_info["num_frames"]) == (32, 48, 3)
    # images as ltx reads them: an animated WebP (FFmpeg cannot decode it: info refused it, exit 6) and a photo
    # turned by its EXIF orientation (6: a quarter turn), whose upright size is the other way round
    from PIL import Image

    pictures = [Image.new("RGB", (40, 24), (10 * i, 0, 0)) for i in range(5)]
    pictures[0].save(tmp_path / "a.webp", save_all=True, append_images=pictures[1:], duration=100, lossless=True)
    assert media.media_info(tmp_path / "a.webp")[0] == {"kind": "image", "width": 40, "height": 24, "num_frames": 5}
    exif = Image.Exif()
    exif[0x0112] = 6
    pictures[0].save(tmp_path / "photo.jpg", exif=exif)
    assert media.media_info(tmp_path / "photo.jpg")[0] == {"kind": "image", "width": 24, "height": 40,
                                                            "num_frames": 1}
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "photo.jpg").read_bytes()[:300])
    with pytest.raises(MediaError, match=r"cut\.jpg: cannot read image"):
        media.media_info(tmp_path / "cut.jpg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MediaError, match=r"without frame_00000\.png"):
        media.media_info(tmp_path / "empty")


def test_latents_of_another_vae_are_refused(vae: autoencode.VideoAutoencoder, tmp_path: Path) -> None:
    """Latents normalised with one VAE's per-channel statistics decode to garbage through a VAE with others (the
    channel count alone does not tell 0.9 from 0.9.1 or 0.9.5 latents): the file keeps the statistics it was
    encoded with, and a VAE whose statistics differ is refused naming the model to use."""
    import copy

    latents = vae.encode(torch.rand(9, 64, 64, 3))
    meta = autoencode.latents_metadata(vae, torch.zeros(9, 64, 64, 3), Fraction(24), "clip.mp4")
    path = tmp_path / "l.safetensors"
    autoencode.save_latents(path, latents, meta, statistics=vae.statistics)
    back, meta_back = autoencode.read_latents(path)
    assert meta_back == meta
    autoencode.check_latents(vae, back, path, meta_back)  # the same VAE: accepted
    other = autoencode.VideoAutoencoder(copy.deepcopy(vae.module), "other-model", 0.05)
    with torch.no_grad():
        other.module.per_channel_statistics.std_of_means.mul_(2)
    with pytest.raises(ValueError, match=r"encoded with the VAE of tiny.*other-model.*--model tiny"):
        autoencode.check_latents(other, back, path, meta_back)
    # bfloat16 storage of the same statistics is the same VAE
    bf16 = autoencode.VideoAutoencoder(copy.deepcopy(vae.module).bfloat16(), "tiny-bf16", 0.05)
    autoencode.check_latents(bf16, back, path, meta_back)


def test_vae_encode_of_a_video_file_decodes_a_chunk_at_a_time(vae: autoencode.VideoAutoencoder, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`ltx vae encode clip.mp4` decoded the whole clip as float32 [F, H, W, 3] before its chunked encode (2 GB a
    minute at 512x768); now each chunk's frames are decoded, cropped and encoded in turn, with the whole clip's latents
    bit for bit. 30 frames of 70x38 -> 25 of 64x32; chunks of 1 latent frame: 9, 8 and 8 frames."""
    from ltxcli import vae_encode

    torch.manual_seed(0)
    clip = tmp_path / "clip.mp4"
    media.write_video(clip, torch.rand(30, 38, 70, 3), 24)
    monkeypatch.setattr(vae_encode, "ENCODE_CHUNK_LATENTS", 1)
    decoded: list[int] = []  # frames the file's reader has given so far
    iter_video, encode_chunks = media.read.iter_video, vae_encode.encode_chunks

    def counting(*a, **k):
        decoded.append(0)
        for frame in iter_video(*a, **k):
            decoded[-1] += 1
            yield frame

    seen: list[tuple[int, int]] = []  # (frames of each piece handed to the encoder, frames decoded by then)

    def spy(v, chunks, frames, **k):
        return encode_chunks(v, ((seen.append((x.shape[2], sum(decoded))), x)[1] for x in chunks), frames, **k)

    monkeypatch.setattr(media.read, "iter_video", counting)  # the stream's reader
    monkeypatch.setattr(vae_encode, "encode_chunks", spy)
    stream, rate, note = autoencode.read_fitted(clip, stream=True)
    assert (stream.shape, rate) == ((25, 32, 64, 3), 24) and note is not None and "input is 30 frames of 70x38" in note
    got = vae.encode(stream)
    assert [n for n, _ in seen] == [9, 8, 8]
    assert [d for _, d in seen] == [9, 17, 25]  # decoded no further than the chunk being encoded
    monkeypatch.setattr(vae_encode, "encode_chunks", encode_chunks)
    whole, _, _ = autoencode.read_fitted(clip)  # float [25, 32, 64, 3]
    assert isinstance(whole, torch.Tensor) and whole.shape == (25, 32, 64, 3)
    assert torch.equal(got, vae.encode(whole))
    assert got.shape == (1, vae.latent_channels, 4, 1, 2)
    assert autoencode.latents_metadata(vae, stream, rate, clip) == autoencode.latents_metadata(vae, whole, rate, clip)


def _damaged_clip(clip: Path) -> Path:
    """40 frames of 64x64 noise (no frame predicts another well: each packet large), garbled in the middle."""
    with av.open(str(clip), "w") as out:
        s = out.add_stream("libx264", rate=24)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        for i in range(40):
            frame = torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(i)).mul(255).byte().numpy()
            out.mux(s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(s.encode(None))
    data = bytearray(clip.read_bytes())  # mdat first (no faststart): bytes 1/3 to 1/2 are frame data, garbled
    data[len(data) // 3 : len(data) // 2] = bytes((b * 7 + 13) & 255 for b in data[len(data) // 3 : len(data) // 2])
    clip.write_bytes(bytes(data))
    return clip


def test_a_clip_that_stops_decoding_part_way_names_the_max_frames_that_encodes(vae: autoencode.VideoAutoencoder,
                                                                                 tmp_path: Path) -> None:
    """A clip damaged in the middle (every packet whole, so counted up front: the stream's frames are not decoded
    twice) stops decoding part way through `ltx vae encode`'s stream. The line said "decoding stopped after 12 of
    the 33 frames it lists", and no more; it names the --max-frames that encodes the frames before, which does."""
    import re

    clip = _damaged_clip(tmp_path / "clip.mp4")
    stream, _, _ = autoencode.read_fitted(clip, stream=True)
    assert stream.shape[0] == 33
    with pytest.raises(MediaError, match=rf"^{re.escape(str(clip))}: decoding stopped after (\d+) of 33 frames "
                                         r"\(damaged or truncated\?\): --max-frames \1 encodes those$") as exc:
        vae.encode(stream)
    n = int(re.search(r"after (\d+)", str(exc.value)).group(1))  # type: ignore[union-attr]
    assert 1 <= n < 33
    fewer, _, _ = autoencode.read_fitted(clip, n, stream=True)
    assert vae.encode(fewer).shape[2] == (n - 1) // 8 + 1


def test_the_encode_a_video_given_for_latents_needs_quotes_its_name(tmp_path: Path) -> None:
    """`ltx vae decode "my clip.mp4"` suggested `ltx vae encode my clip.mp4`: two arguments, pasted."""
    path = media.write_video(tmp_path / "my clip.mp4", torch.rand(2, 32, 32, 3), 24)
    with pytest.raises(MediaError) as e:
        autoencode.read_latents(path)
    assert str(e.value).endswith(f"`ltx vae encode '{tmp_path}/my clip.mp4'` makes one")


@pytest.mark.parametrize("stream", [False, True])
def test_an_animated_image_is_refused_not_encoded_as_its_first_frame(tmp_path: Path, stream: bool) -> None:
    """`ltx vae encode anim.gif` (and roundtrip) encoded the first of its 12 frames without a word, the rest lost:
    ltx reads an image as its first frame. Refused as `ltx v2v` refuses one, with the conversion to a video; a still
    image is still one frame."""
    from PIL import Image

    frames = [Image.new("RGB", (64, 32), (20 * i, 0, 0)) for i in range(12)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=40)
    frames[0].save(tmp_path / "still.gif")
    with pytest.raises(MediaError, match=r"anim\.gif: an animated image \(12 frames\), read as its first frame only: "
                                         rf"convert it to a video first \(e\.g\. ffmpeg -i {re.escape(f'{tmp_path}/anim.gif')} "
                                         rf"{re.escape(f'{tmp_path}/anim.mp4')}\)$"):
        autoencode.read_fitted(tmp_path / "anim.gif", stream=stream)
    still, rate, _ = autoencode.read_fitted(tmp_path / "still.gif", stream=stream)
    assert still.shape == (1, 32, 64, 3) and rate == 24


def test_vae_encode_streams_a_video_without_a_video_suffix(vae: autoencode.VideoAutoencoder, tmp_path: Path) -> None:
    """`ltx vae encode clip.ts` (a recorder's MPEG-TS; .mpg, .flv) decoded the whole clip first: only a file named
    .mp4/.mov/.mkv/... was streamed a chunk at a time. It is streamed too, to the latents of the whole clip."""
    clip = tmp_path / "clip.ts"
    with av.open(str(clip), "w", format="mpegts") as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        for i in range(12):
            frame = torch.rand(32, 64, 3, generator=torch.Generator().manual_seed(i)).mul(255).byte().numpy()
            out.mux(s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(s.encode(None))
    stream, _, _ = autoencode.read_fitted(clip, stream=True)
    whole, _, _ = autoencode.read_fitted(clip)
    assert isinstance(stream, media.VideoStream) and stream.shape == whole.shape == (9, 32, 64, 3)
    assert torch.equal(vae.encode(stream), vae.encode(whole))


def test_roundtrip_of_a_clip_that_stops_decoding_says_how_many_frames_decode(tmp_path: Path) -> None:
    """`ltx vae roundtrip` (the clip read whole) of a damaged or cut-off clip measured the frames before the damage
    without a word (a note said "input is 12 frames" of a 40-frame file); `ltx v2v` and the streamed `ltx vae
    encode` warn that the file lists more. It warns alike, once."""
    clip = _damaged_clip(tmp_path / "clip.mp4")
    with pytest.warns(UserWarning, match=r"clip\.mp4: the file lists 40 frames but only (\d+) can be decoded") as seen:
        video, _, note = autoencode.read_fitted(clip)
    assert len(seen) == 1 and note is not None and f"input is {seen[0].message.args[0].split()[-1]} frames" in note
    assert 1 <= video.shape[0] < 33
