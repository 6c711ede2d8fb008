"""ltxcli.media: reading, the official conditioning preprocessing, and atomic writing.

References: the official ``crf_compressor.compress`` and ``load_image_to_tensor_with_resize_and_crop``
(imported from the installed ``ltx_video``; torchvision, which the latter needs, is replaced by a transcription
of its ``to_tensor`` / ``gaussian_blur`` source), numpy arithmetic and hand-derived values. All inputs are
generated here.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import importlib.machinery
import json
import math
import os
import re
import struct
import subprocess
import sys
import types
import warnings
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ltxcli import media
from ltxcli.media import MediaError

# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------


def _rng(seed: int = 0) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def _save(array: np.ndarray, path: Path, **kwargs) -> Path:
    Image.fromarray(array).save(path, **kwargs)
    return path


def _assert_one_line_naming(exc: pytest.ExceptionInfo, path: Path) -> None:
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message, message


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` RGB8 but has no pixel data (a decompression-bomb header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _write_lossless_video(path: Path, frames: np.ndarray, rate=24, rotation: int | None = None) -> Path:
    """uint8 [F, H, W, 3] -> PNG-codec video (exact pixels, any size) in .mov."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("png", rate=rate)
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], "rgb24"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for index, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = index
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))
    return path


def _smooth_frames(count: int, height: int, width: int) -> torch.Tensor:
    """Gentle colour gradients: 4:2:0 chroma and CRF 18 keep them within a few code values."""
    y = torch.linspace(0, 1, height)[:, None]
    x = torch.linspace(0, 1, width)[None, :]
    frames = []
    for t in range(count):
        phase = t / max(count, 1)
        frames.append(torch.stack([0.2 + 0.3 * x.expand(height, width),
                                   0.3 + 0.3 * y.expand(height, width),
                                   0.5 + 0.1 * torch.sin(3.14 * (x + y) + 6.28 * phase)], dim=-1))
    return torch.stack(frames).clamp(0, 1)


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# --------------------------------------------------------------------------------------------------------------
# load_image
# --------------------------------------------------------------------------------------------------------------


def test_load_image_rgb_is_exact_uint8_over_255(tmp_path):
    rgb = _rng().integers(0, 256, (13, 21, 3), dtype=np.uint8)
    out = media.load_image(_save(rgb, tmp_path / "a.png"))
    assert out.shape == (1, 13, 21, 3) and out.dtype == torch.float32
    assert torch.equal(out[0], torch.from_numpy(rgb).float() / 255)
    # round(x * 255) recovers every 8-bit code exactly (what preprocessing relies on)
    codes = torch.arange(256, dtype=torch.uint8)
    assert torch.equal((codes.float() / 255 * 255).round().to(torch.uint8), codes)


@pytest.mark.parametrize(("orientation", "turns"), [(6, -1), (8, 1), (3, 2), (1, 0)])
def test_load_image_applies_exif_orientation(tmp_path, orientation, turns):
    # EXIF 6 = stored rotated, display needs 90° clockwise (np.rot90 k=-1); 8 = 90° counter-clockwise; 3 = 180°.
    rgb = _rng(1).integers(0, 256, (2, 3, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(rgb, tmp_path / "o.png", exif=exif.tobytes())
    expected = np.rot90(rgb, k=turns)
    assert torch.equal(media.load_image(path)[0], torch.from_numpy(expected.copy()).float() / 255)
    # the same for a PIL image handed in directly
    with Image.open(path) as image:
        assert torch.equal(media.load_image(image)[0], torch.from_numpy(expected.copy()).float() / 255)


def test_load_image_grey_bilevel_and_cmyk(tmp_path):
    grey = _rng(2).integers(0, 256, (5, 7), dtype=np.uint8)
    out = media.load_image(_save(grey, tmp_path / "l.png"))[0]
    assert torch.equal(out, torch.from_numpy(np.repeat(grey[..., None], 3, -1)).float() / 255)

    bits = Image.new("1", (3, 2))
    bits.putdata([0, 255, 0, 255, 255, 0])
    bits.save(tmp_path / "b.png")
    out = media.load_image(tmp_path / "b.png")[0]
    assert out[..., 0].tolist() == [[0, 1, 0], [1, 1, 0]] and torch.equal(out[..., 0], out[..., 2])

    # CMYK corners, hand-derived: no ink = white, full cyan = (0,255,255), full black = black, M+Y = red.
    cmyk = Image.new("CMYK", (4, 1))
    cmyk.putdata([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255), (0, 255, 255, 0)])
    cmyk.save(tmp_path / "c.tiff")
    out = media.load_image(tmp_path / "c.tiff")[0, 0] * 255
    assert out.round().tolist() == [[255, 255, 255], [0, 255, 255], [0, 0, 0], [255, 0, 0]]


def test_load_image_palette_with_and_without_transparency(tmp_path):
    palette = [10, 20, 30, 200, 150, 100, 0, 255, 0]
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    image = Image.new("P", (3, 2))
    image.putpalette(palette)
    image.putdata(indices.ravel().tolist())
    image.save(tmp_path / "p.png")
    colours = np.array(palette, dtype=np.float64).reshape(3, 3) / 255
    assert np.allclose(media.load_image(tmp_path / "p.png")[0].numpy(), colours[indices])

    image.info["transparency"] = 1  # palette entry 1 fully transparent (tRNS chunk)
    image.save(tmp_path / "pt.png", transparency=1)
    expected = colours[indices].copy()
    expected[indices == 1] = 0.0  # composited over black
    assert np.allclose(media.load_image(tmp_path / "pt.png")[0].numpy(), expected, atol=1e-7)
    # background=None: the official convert("RGB"), alpha dropped
    assert np.allclose(media.load_image(tmp_path / "pt.png", background=None)[0].numpy(), colours[indices])


def test_load_image_alpha_is_composited(tmp_path):
    rng = _rng(3)
    rgba = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
    path = _save(rgba, tmp_path / "a.png")
    rgb, alpha = rgba[..., :3] / 255.0, rgba[..., 3:] / 255.0
    out = media.load_image(path)[0].double().numpy()
    err = np.abs(out - rgb * alpha).max()
    print(f"RGBA over black: max abs err vs float64 {err:.2e}")
    assert err < 1e-6
    white = media.load_image(path, background=(1.0, 1.0, 1.0))[0].double().numpy()
    assert np.abs(white - (rgb * alpha + (1 - alpha))).max() < 1e-6
    assert np.array_equal(media.load_image(path, background=None)[0].numpy() * 255, rgba[..., :3].astype(np.float32))

    grey, a = rng.integers(0, 256, (4, 4), dtype=np.uint8), rng.integers(0, 256, (4, 4), dtype=np.uint8)
    Image.merge("LA", [Image.fromarray(grey), Image.fromarray(a)]).save(tmp_path / "la.png")
    out = media.load_image(tmp_path / "la.png")[0].double().numpy()
    assert np.abs(out - (grey.astype(np.float64) * a / 255.0**2)[..., None]).max() < 1e-6


def test_load_image_16_bit_is_scaled_not_clipped(tmp_path):
    values = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000 + 7).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as check:
        assert check.mode.startswith("I;16")
    out = media.load_image(tmp_path / "g16.png")[0]
    assert np.allclose(out[..., 1].double().numpy(), values / 65535.0, atol=1e-7)
    assert out.max() < 1.0 and out[0, 1, 0] < 0.1  # Pillow's convert("RGB") would give 1.0 here

    wide = np.array([[-5, 300, 70000]], dtype=np.int32)  # mode "I": 16-bit samples, clipped
    Image.fromarray(wide).save(tmp_path / "i32.tiff")
    out = media.load_image(tmp_path / "i32.tiff")[0, 0, :, 0].double().numpy()
    assert np.allclose(out, [0.0, 300 / 65535, 1.0], atol=1e-7)


def test_load_image_size_limits(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(30_000, 30_000))  # 900 MP: Pillow's own DecompressionBombError
    with pytest.raises(MediaError) as exc:
        media.load_image(bomb)
    _assert_one_line_naming(exc, bomb)

    big = tmp_path / "big.png"
    big.write_bytes(_png_header(12_000, 10_000))  # 120 MP: above our 100 MP default, refused from the header
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(MediaError, match="above the limit") as exc:
            media.load_image(big)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    _assert_one_line_naming(exc, big)

    small = _save(np.zeros((64, 64, 3), np.uint8), tmp_path / "s.png")
    assert media.load_image(small, max_pixels=4096).shape == (1, 64, 64, 3)
    with pytest.raises(MediaError, match="4,095"):
        media.load_image(small, max_pixels=4095)


def test_load_image_bad_files(tmp_path):
    rgb = _rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    good_png = _save(rgb, tmp_path / "good.png").read_bytes()
    good_jpg = _save(rgb, tmp_path / "good.jpg", quality=90).read_bytes()
    (tmp_path / "cut.png").write_bytes(good_png[: len(good_png) // 2])
    (tmp_path / "cut.jpg").write_bytes(good_jpg[: len(good_jpg) // 2])
    (tmp_path / "text.png").write_text("this is not an image\n")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    cases = {"cut.png": "truncated", "cut.jpg": "truncated", "text.png": "not an image", "empty.png": "empty",
             "folder.png": "folder", "missing.png": "no such file"}
    for name, words in cases.items():
        with pytest.raises(MediaError, match=words) as exc:
            media.load_image(tmp_path / name)
        _assert_one_line_naming(exc, tmp_path / name)
    assert issubclass(MediaError, ValueError)


# --------------------------------------------------------------------------------------------------------------
# load_video / load_media
# --------------------------------------------------------------------------------------------------------------


def test_load_video_exact_pixels_odd_size_and_max_frames(tmp_path):
    frames = _rng(5).integers(0, 256, (5, 17, 33, 3), dtype=np.uint8)
    path = _write_lossless_video(tmp_path / "v.mov", frames, rate=Fraction(30000, 1001))
    out = media.load_video(path)
    assert out.shape == (5, 17, 33, 3) and out.dtype == torch.float32
    assert torch.equal(out, torch.from_numpy(frames).float() / 255)
    assert torch.equal(media.load_video(path, max_frames=3), out[:3])
    assert media.video_frame_rate(path) == Fraction(30000, 1001)
    assert media.media_num_frames(path) == 5
    with pytest.raises(ValueError):
        media.load_video(path, max_frames=0)


def test_load_video_applies_display_rotation(tmp_path):
    frames = _rng(6).integers(0, 256, (2, 3, 5, 3), dtype=np.uint8)
    path = _write_lossless_video(tmp_path / "r.mov", frames, rotation=90)  # 90° counter-clockwise
    out = media.load_video(path)
    expected = np.stack([np.rot90(frame, k=1) for frame in frames])
    assert out.shape == (2, 5, 3, 3)
    assert torch.equal(out, torch.from_numpy(expected.copy()).float() / 255)


def test_load_video_full_range_tag_is_honoured(tmp_path):
    colours = [(250, 10, 128), (5, 240, 60)]
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:16], rgb[16:] = colours
    from av.video.reformatter import ColorRange

    path = tmp_path / "full.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24, options={"qp": "0"})
        stream.height, stream.width, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.color_range = 2  # JPEG / full range
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
            format="yuv420p", dst_color_range=ColorRange.JPEG
        )
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    out = media.load_video(path)[0] * 255
    for rows, colour in ((slice(2, 14), colours[0]), (slice(18, 30), colours[1])):
        err = (out[rows, 2:30] - torch.tensor(colour, dtype=torch.float32)).abs().max().item()
        assert err <= 3, err  # misreading full range as limited would stretch contrast by ~15%


def test_load_video_bad_files(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video at all\n" * 20)
    with av.open(str(tmp_path / "zero.mkv"), "w") as container:  # a header and no frames
        stream = container.add_stream("libx264", rate=24)
        stream.height, stream.width, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    with av.open(str(tmp_path / "audio.wav"), "w") as container:  # no video stream
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
    cases = {"missing.mp4": "no such file", "empty.mp4": "empty", "text.mp4": "not a video",
             "zero.mkv": "has no video frames", "audio.wav": "no video stream"}
    for name, words in cases.items():
        with pytest.raises(MediaError, match=words) as exc:
            media.load_video(tmp_path / name)
        _assert_one_line_naming(exc, tmp_path / name)
    with pytest.raises(MediaError):
        media.video_frame_rate(tmp_path / "audio.wav")


def _first_frame_cut_ts(path: Path) -> Path:
    """An MPEG-TS of 64x64 H.264 noise cut after five TS packets (188 bytes each), inside its first frame."""
    with av.open(str(path), "w", format="mpegts") as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for i in range(4):
            noise = np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # no frame compresses small
            out.mux(s.encode(av.VideoFrame.from_ndarray(noise, format="rgb24")))
        out.mux(s.encode(None))
    path.write_bytes(path.read_bytes()[: 5 * 188])
    return path


def test_a_video_with_no_frame_says_what_is_wrong_in_words(tmp_path):
    """A Matroska file of a header and no packet was refused as "cannot open video: [Errno 541478725] End of file",
    and an MPEG-TS cut inside its first frame as "video decoding failed after 0 frames: [Errno 1094995529] Invalid
    data ...": FFmpeg's error numbers. Each says what is wrong with the file, by every reader (v2v's frame count,
    load_video, ltx info)."""
    with av.open(str(tmp_path / "zero.mkv"), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.height, stream.width, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    _first_frame_cut_ts(tmp_path / "cut.mp4")
    words = {"zero.mkv": r"has no video frames \(the file ends before the first one: empty or cut off\)$",
             "cut.mp4": r"is damaged or truncated: no frame decodes$"}
    for name, pattern in words.items():
        for read in (media.load_video, media.source_frame_count, media.media_info):
            with pytest.raises(MediaError, match=rf"{re.escape(name)}: {pattern}") as exc:
                read(tmp_path / name)
            assert "Errno" not in str(exc.value)
            _assert_one_line_naming(exc, tmp_path / name)


def test_a_video_whose_packets_cannot_be_read_says_so_without_ffmpeg_s_errno(tmp_path):
    """A NUT file (no frame count in its header: its packets are counted) whose index start code is damaged opens,
    but demuxing fails at the end: `ltx info bad.nut` said "cannot read video packets: [Errno 1094995529] Invalid
    data found when processing input: '...bad.nut'", FFmpeg's number and the file named twice."""
    path = tmp_path / "bad.nut"
    with av.open(str(path), "w", format="nut") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.height, stream.width, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 60 * i, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = bytearray(path.read_bytes())
    at = data.rindex(bytes.fromhex("4e58dd672f23e64e"))  # NUT's index start code ("NX" + 0xDD672F23E64E)
    data[at + 7] ^= 0x2F  # its last byte
    path.write_bytes(bytes(data))
    for read in (media.media_num_frames, media.source_frame_count, media.media_info):
        with pytest.raises(MediaError) as exc:
            read(path)
        assert str(exc.value) == f"{path}: cannot read video packets: Invalid data found when processing input"


def test_a_stream_that_starts_partway_through_is_the_file_s_error_not_an_internal_one(tmp_path):
    """An MPEG-TS with a packet of an unlisted PID partway through (a damaged recording: one bit of its header)
    gives FFmpeg a new stream while demuxing, and PyAV's lookup of it an IndexError: `ltx info bad.ts` and `ltx v2v
    bad.ts` said "internal error: IndexError: list index out of range" (exit 1). Every reader says what it is."""
    path = tmp_path / "bad.ts"
    with av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("mpeg4", rate=24)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(12):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * i, np.uint8), format="rgb24")))
        out.mux(stream.encode(None))
    data = bytearray(path.read_bytes())
    # the 188-byte packets of the video's PID 0x100 that start a frame (header 0x47 0x41 0x00): one moved to 0x176
    starts = [k for k in range(0, len(data), 188) if data[k + 1 : k + 3] == b"\x41\x00"]
    data[starts[len(starts) // 2] + 2] = 0x76
    path.write_bytes(bytes(data))
    readers = [media.media_num_frames, media.source_frame_count, media.load_video, media.media_info,
               lambda p: media.check_constant_rate(p, "ltx v2v"), lambda p: list(media.iter_video(p))]
    for read in readers:
        with pytest.raises(MediaError) as exc:
            read(path)
        assert str(exc.value) == (f"{path}: a new stream starts partway through the file (damaged?): keep its first "
                                  f"video stream, e.g. ffmpeg -i {path} -map 0:v:0 {tmp_path}/bad-v0.mp4")


def test_suggested_commands_quote_file_names_for_the_shell(tmp_path):
    """The commands messages suggest (`ffmpeg -i NAME ...`, `ltx vae encode NAME`) gave names as they are: one
    with a space or quote, pasted, was several words (or an open quote), one starting with "-" an option."""
    from ltxcli.formatting import shell_word

    assert [shell_word(n) for n in ("clip.mp4", "my clip.mp4", "it's.gif", "-x.mp4", Path("a b/c.mp4"))] == \
        ["clip.mp4", "'my clip.mp4'", """'it'"'"'s.gif'""", "./-x.mp4", "'a b/c.mp4'"]
    frames = [Image.new("RGB", (32, 32), (60 * i, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "it's anim.gif", save_all=True, append_images=frames[1:], duration=40)
    with pytest.raises(MediaError) as exc:
        media.source_frame_count(tmp_path / "it's anim.gif")
    assert str(exc.value).endswith(f"""(e.g. ffmpeg -i '{tmp_path}/it'"'"'s anim.gif' '{tmp_path}/it'"'"'s anim.mp4')""")


def test_a_damaged_video_without_a_video_suffix_is_called_damaged_not_no_media(tmp_path):
    """An MPEG-TS cut inside its first frame, named .ts (no suffix of VIDEO_SUFFIXES: tried as an image first), was
    "neither an image Pillow can read nor a video FFmpeg can read" (`ltx v2v cut.ts`): FFmpeg reads it as a video,
    whose first frame is cut off. Said so, as for the same file named .mp4; text named .ts is still neither."""
    _first_frame_cut_ts(tmp_path / "cut.ts")
    (tmp_path / "notes.ts").write_text("not a video\n" * 40)
    for read in (media.load_media, media.read_media):
        with pytest.raises(MediaError) as exc:
            read(tmp_path / "cut.ts")
        assert str(exc.value) == f"{tmp_path / 'cut.ts'}: is damaged or truncated: no frame decodes"
        with pytest.raises(MediaError, match=r"notes\.ts: neither an image Pillow can read nor a video FFmpeg can read$"):
            read(tmp_path / "notes.ts")


def test_a_pipe_is_refused_as_one_not_as_an_empty_file(tmp_path):
    """A FIFO (``ltx vae encode /dev/stdin`` under ``cat clip.mp4 |``, a named pipe) was refused as "file is empty"
    (its size is 0): the file is not empty, and a reader that needs it more than once (counted, then streamed)
    cannot take a pipe. Said as such by every reader, none of which opens it (nobody writes to it: it would hang)."""
    from ltxcli import autoencode

    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    readers = [media.load_media, media.load_video, media.media_num_frames, media.source_frame_count,
               lambda p: next(media.iter_video(p)), lambda p: autoencode.read_fitted(p, stream=True),
               media.read_video_metadata, lambda p: media.load_image(p.with_name("clip.png"))]
    os.mkfifo(tmp_path / "clip.png")
    for read in readers:
        with pytest.raises(MediaError, match=rf"^{re.escape(str(tmp_path))}/clip\.(mp4|png): is a pipe or device, "
                                             r"not a file: save it to a file and give that$"):
            read(fifo)


def test_a_raw_mpeg_stream_is_read_as_a_video(tmp_path):
    """Pillow recognises a raw MPEG-1/2 stream (.m1v, .m2v) but cannot decode it: ``ltx i2v``/``-c`` said
    "damaged or truncated image: cannot load this image" for a file FFmpeg reads."""
    path = tmp_path / "clip.m2v"
    with av.open(str(path), "w", format="mpeg2video") as container:
        stream = container.add_stream("mpeg2video", rate=25, options={"qscale": "1"})
        stream.height, stream.width, stream.pix_fmt = 48, 64, "yuv420p"
        for i in range(9):
            grey = np.full((48, 64, 3), 20 * i + 30, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(grey, format="rgb24")))
        container.mux(stream.encode(None))
    with Image.open(path) as image:
        assert image.format == "MPEG"  # the premise: Pillow claims the file
    frames = media.load_media(path) * 255
    assert frames.shape == (9, 48, 64, 3)
    levels = frames.mean(dim=(1, 2, 3))
    assert torch.allclose(levels, torch.arange(9) * 20.0 + 30, atol=3), levels
    assert media.media_num_frames(path) == 9 and media.read_media(path).frames.shape[0] == 9
    stream_info, _ = media.media_info(path)
    assert (stream_info["kind"], stream_info["num_frames"]) == ("video", 9)


_ONE_CPU_READ = """
import os, sys, warnings
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # FFmpeg sizes its decoding threads by the CPUs it may use
warnings.simplefilter("ignore")
from ltxcli import media
print(media.load_video(sys.argv[1]).shape[0], media.source_frame_count(sys.argv[1]))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_truncated_video_reads_the_same_on_one_cpu_as_on_many(tmp_path):
    """The cut-off last packet of a truncated file: frame-threaded decoding (several CPUs) skips it, one-thread
    decoding raised it, so the same file was read on one machine and refused on another ("video decoding failed
    after 18 frames: Invalid data found")."""
    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as container:  # index first: it outlives the cut
        stream = container.add_stream("libx264", rate=24)
        stream.height, stream.width, stream.pix_fmt = 64, 96, "yuv420p"
        for frame in _rng(11).integers(0, 256, (41, 64, 96, 3), dtype=np.uint8):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    decodable = 0
    with av.open(str(cut)) as container, contextlib.suppress(av.error.InvalidDataError):  # one thread
        for _ in container.decode(video=0):  # every frame before FFmpeg's error
            decodable += 1
    assert 1 < decodable < 41
    with pytest.warns(UserWarning, match=f"lists 41 frames but only {decodable} can be decoded"):
        assert media.source_frame_count(cut) == decodable
    assert media.load_video(cut).shape[0] == decodable
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", _ONE_CPU_READ, str(cut)], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(decodable), str(decodable)]


def test_load_media_dispatch(tmp_path):
    rng = _rng(7)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    _save(rgb, tmp_path / "image.dat", format="PNG")  # unknown suffix: tried as an image first
    frames = rng.integers(0, 256, (3, 8, 6, 3), dtype=np.uint8)
    _write_lossless_video(tmp_path / "clip.mov", frames)
    os.replace(tmp_path / "clip.mov", tmp_path / "clip.bin")  # unknown suffix, not an image: tried as video
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01junk" * 50)

    assert torch.equal(media.load_media(tmp_path / "image.dat"), torch.from_numpy(rgb)[None].float() / 255)
    assert media.media_num_frames(tmp_path / "image.dat") == 1
    assert torch.equal(media.load_media(tmp_path / "clip.bin"), torch.from_numpy(frames).float() / 255)
    assert media.load_media(tmp_path / "clip.bin", max_frames=2).shape[0] == 2
    with pytest.raises(MediaError, match="neither") as exc:
        media.load_media(tmp_path / "junk.bin")
    _assert_one_line_naming(exc, tmp_path / "junk.bin")
    with Image.open(tmp_path / "image.dat") as image:
        assert media.load_media(image).shape == (1, 9, 11, 3)

    tensor = torch.rand(2, 4, 5, 3)
    assert torch.equal(media.load_media(tensor), tensor)
    assert media.load_media(tensor[0]).shape == (1, 4, 5, 3)
    assert torch.equal(media.load_media((tensor * 255).round().to(torch.uint8)), (tensor * 255).round() / 255)
    for bad in (tensor * 2, tensor - 1, torch.full((1, 2, 2, 3), float("nan")), torch.rand(2, 4, 5, 4),
                torch.rand(4, 5)):
        with pytest.raises(MediaError):
            media.load_media(bad)


# --------------------------------------------------------------------------------------------------------------
# official preprocessing
# --------------------------------------------------------------------------------------------------------------


def _tv_to_tensor(pic: Image.Image) -> torch.Tensor:
    """torchvision.transforms.functional.to_tensor for an 8-bit PIL image (transcribed)."""
    img = torch.from_numpy(np.array(pic, np.uint8, copy=True))
    img = img.view(pic.size[1], pic.size[0], len(pic.getbands()))
    img = img.permute((2, 0, 1)).contiguous()
    return img.to(dtype=torch.get_default_dtype()).div(255)


def _tv_gaussian_blur(img: torch.Tensor, kernel_size, sigma=None) -> torch.Tensor:
    """torchvision.transforms.functional.gaussian_blur -> _functional_tensor.gaussian_blur (transcribed)."""
    if isinstance(kernel_size, int):
        kernel_size = [kernel_size, kernel_size]
    if sigma is None:
        sigma = [ksize * 0.15 + 0.35 for ksize in kernel_size]
    if isinstance(sigma, (int, float)):
        sigma = [float(sigma), float(sigma)]

    def kernel1d(ksize, s):
        ksize_half = (ksize - 1) * 0.5
        x = torch.linspace(-ksize_half, ksize_half, steps=ksize, dtype=img.dtype, device=img.device)
        pdf = torch.exp(-0.5 * (x / s).pow(2))
        return pdf / pdf.sum()

    kernel = torch.mm(kernel1d(kernel_size[1], sigma[1])[:, None], kernel1d(kernel_size[0], sigma[0])[None, :])
    kernel = kernel.expand(img.shape[-3], 1, kernel.shape[0], kernel.shape[1])
    batch = img.unsqueeze(0) if img.ndim < 4 else img
    padding = [kernel_size[0] // 2, kernel_size[0] // 2, kernel_size[1] // 2, kernel_size[1] // 2]
    out = F.conv2d(F.pad(batch, padding, mode="reflect"), kernel, groups=batch.shape[-3])
    return out.squeeze(0) if img.ndim < 4 else out


@pytest.fixture(scope="module")
def official_inference():
    """The official ``ltx_video.inference`` module. It imports torchvision and imageio, neither installed:
    they are replaced by stubs (torchvision's two functions by the transcriptions above) while it loads."""
    # Import what inference.py imports first, so transformers/diffusers record that torchvision is absent.
    import transformers  # noqa: F401
    from transformers import T5EncoderModel  # noqa: F401

    importlib.import_module("ltx_video.pipelines.pipeline_ltx_video")
    names = ["torchvision", "torchvision.transforms", "torchvision.transforms.functional", "imageio",
             "ltx_video.inference"]
    saved = {name: sys.modules.get(name) for name in names}
    stubs = {}
    for name in names[:4]:
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        stubs[name] = module
    stubs["torchvision"].transforms = stubs["torchvision.transforms"]
    stubs["torchvision.transforms"].functional = stubs["torchvision.transforms.functional"]
    stubs["torchvision.transforms.functional"].to_tensor = _tv_to_tensor
    stubs["torchvision.transforms.functional"].gaussian_blur = _tv_gaussian_blur
    try:
        sys.modules.update(stubs)
        sys.modules.pop("ltx_video.inference", None)
        module = importlib.import_module("ltx_video.inference")
    except Exception as exc:  # pragma: no cover - depends on the installed reference
        pytest.skip(f"official inference.py not importable: {exc}")
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    return module


def test_gaussian_blur_matches_torchvision_formula():
    torch.manual_seed(0)
    image = torch.rand(3, 17, 23)
    ours = media.gaussian_blur(image, 3, 1.0)
    assert torch.equal(ours, _tv_gaussian_blur(image, 3, 1.0))
    assert torch.equal(media.gaussian_blur(image[None], 3, 1.0)[0], ours)

    # independent float64 reference: hand-derived weights, numpy reflect padding (edge pixel not repeated)
    w_side = math.exp(-0.5) / (1 + 2 * math.exp(-0.5))
    w_mid = 1 / (1 + 2 * math.exp(-0.5))
    assert abs(w_side - 0.27406862) < 1e-8 and abs(w_mid - 0.45186276) < 1e-8
    kernel = np.outer([w_side, w_mid, w_side], [w_side, w_mid, w_side])
    padded = np.pad(image.double().numpy(), ((0, 0), (1, 1), (1, 1)), mode="reflect")
    expected = np.zeros((3, 17, 23))
    for dy in range(3):
        for dx in range(3):
            expected += kernel[dy, dx] * padded[:, dy : dy + 17, dx : dx + 23]
    err = np.abs(ours.double().numpy() - expected).max()
    print(f"gaussian_blur vs float64 reference: max abs err {err:.2e}")
    assert err < 1e-6
    # reflect, not replicate: a one-hot edge pixel spreads into the pixel beyond its neighbour's mirror
    impulse = torch.zeros(1, 4, 4)
    impulse[0, 0, 1] = 1
    row = media.gaussian_blur(impulse)[0, 0]
    assert torch.allclose(row, torch.tensor([2 * w_side * w_mid, w_mid * w_mid, w_side * w_mid, 0.0]), atol=1e-7)


def test_crf_round_trip_bit_identical_to_official():
    from ltx_video.pipelines.crf_compressor import compress

    torch.manual_seed(0)
    smooth = _smooth_frames(1, 40, 64)[0]
    for image in (torch.rand(37, 50, 3), smooth, torch.rand(2, 2, 3), torch.rand(33, 17, 3).double()):
        ours, official = media.crf_round_trip(image), compress(image)
        assert ours.dtype == official.dtype and torch.equal(ours, official), tuple(image.shape)
        assert ours.shape == (image.shape[0] // 2 * 2, image.shape[1] // 2 * 2, 3)
    assert media.crf_round_trip(smooth, 0) is smooth
    assert torch.equal(media.crf_round_trip(smooth, 18), compress(smooth, crf=18))


@pytest.mark.parametrize(
    ("in_hw", "target_hw", "just_crop"),
    [((61, 97), (64, 96), False),  # wider than 3:2 -> crop width, then upscale
     ((120, 50), (32, 48), False),  # much taller -> crop height, downscale
     ((48, 72), (32, 48), False),  # same aspect ratio
     ((61, 97), (64, 96), True),  # native crop, 61 rows -> cropped to even by the H.264 step
     ((45, 31), (32, 32), True)],
)
def test_preprocess_bit_identical_to_official(tmp_path, official_inference, in_hw, target_hw, just_crop):
    rgb = _rng(8).integers(0, 256, (*in_hw, 3), dtype=np.uint8)
    path = _save(rgb, tmp_path / "c.png")
    expected = official_inference.load_image_to_tensor_with_resize_and_crop(
        str(path), target_hw[0], target_hw[1], just_crop=just_crop
    )
    ours = media.preprocess_condition_frames(media.load_media(path), *target_hw, just_crop=just_crop)
    assert ours.shape == expected.shape and ours.dtype == expected.dtype
    assert torch.equal(ours, expected)
    assert ours.min() >= -1 and ours.max() <= 1


def test_preprocess_video_frames_match_official_per_frame(official_inference):
    # official load_media_file: each video frame as a PIL image through the same function, cat on dim 2
    frames = _rng(9).integers(0, 256, (3, 50, 70, 3), dtype=np.uint8)
    expected = torch.cat(
        [official_inference.load_image_to_tensor_with_resize_and_crop(Image.fromarray(f), 32, 64) for f in frames],
        dim=2,
    )
    ours = media.preprocess_condition_frames(torch.from_numpy(frames).float() / 255, 32, 64)
    assert ours.shape == (1, 3, 3, 32, 64)
    assert torch.equal(ours, expected)
    pil = media.preprocess_condition_frames([Image.fromarray(f) for f in frames], 32, 64)
    assert torch.equal(pil, expected)


@pytest.mark.parametrize(
    ("in_hw", "target_hw", "padding"),
    [((900, 1500), (96, 160), (0, 0, 0, 0)),  # exactly 5:3: no crop, 9.4x down
     ((1000, 600), (96, 160), (0, 0, 0, 0)),  # tall: height cropped to 360
     ((389, 601), (64, 96), (1, 2, 0, 3)),  # odd sizes (the H.264 step drops a row and a column), padded
     ((500, 500), (96, 64), (0, 0, 0, 0))],  # square to portrait
)
def test_condition_image_at_generation_size_bit_identical_to_official(tmp_path, official_inference, in_hw,
                                                                      target_hw, padding):
    # A large condition image: the official load_media_file (native-size crop, blur, CRF, pad), then the
    # pipeline's resize_tensor (bilinear, no antialias) to the generation size; the same bits from ltx's path.
    from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline

    from ltxcli.conditions import prepare_condition, resize_frames
    from ltxcli.request import Condition

    # a photo-like picture (gradients, mild noise): random noise would make the H.264 step slow
    y, x = np.mgrid[0 : in_hw[0], 0 : in_hw[1]]
    rgb = np.stack([x * 255 // in_hw[1], y * 255 // in_hw[0], (x + y) % 256], -1)
    rgb = (rgb + _rng(11).integers(-6, 7, rgb.shape)).clip(0, 255).astype(np.uint8)
    path = _save(rgb, tmp_path / "big.png", compress_level=1)
    h, w = target_hw
    expected = LTXVideoPipeline.resize_tensor(
        official_inference.load_media_file(str(path), h, w, 1, padding, just_crop=True), h, w)
    prepared = prepare_condition(Condition(path, 0, 1.0), h, w, 9, padding)
    ours = resize_frames(prepared.pixels, h, w)
    assert ours.shape == expected.shape == (1, 3, 1, h, w)
    assert torch.equal(ours, expected)


def test_an_8bit_picture_is_read_as_its_uint8_codes_with_the_same_pixels(tmp_path):
    # read_media kept a picture as float32 (768 MB for 8000x8000, 4 s to convert, and preprocessing quantised it
    # back to the codes): an 8-bit one now stays uint8, a quarter of the memory; what it stands for is unchanged
    codes = np.stack(np.meshgrid(np.arange(256), np.arange(256)[::-1], indexing="ij"), -1).reshape(256, 256, 2)
    rgb = np.concatenate([codes, (codes[..., :1] * 7 % 256)], -1).astype(np.uint8)  # every code, in each channel
    path = _save(rgb, tmp_path / "all.png")
    read = media.read_media(path)
    assert read.frames.dtype == torch.uint8 and np.array_equal(read.frames[0].numpy(), rgb)
    assert torch.equal(read.pixels(), media.load_image(path))  # uint8 / 255: the same float32 bits
    assert torch.equal(media.load_media(read), media.load_image(path))
    # from the codes, preprocessing gives what it gives from the floats (round(x * 255) recovers them)
    assert torch.equal(media.preprocess_condition_frames(read.frames, 32, 48, just_crop=True),
                       media.preprocess_condition_frames(media.load_image(path), 32, 48, just_crop=True))
    # transparency composited over the background: floats, as before
    rgba = np.concatenate([rgb, rgb[..., :1]], -1)
    alpha = media.read_media(_save(rgba, tmp_path / "alpha.png"))
    assert alpha.frames.dtype == torch.float32 and torch.equal(alpha.pixels(), media.load_image(tmp_path / "alpha.png"))
    with pytest.raises(MediaError, match="expected a tensor"):
        media.preprocess_condition_frames(torch.zeros(2, 3, 4, dtype=torch.uint8), 32, 48)


def test_gaussian_blur_convolves_channels_last_memory(monkeypatch):
    # An NCHW input of 3 channels takes oneDNN's slow depthwise path (33 s for an 8000x5333 picture on 2 cores,
    # 2 s on channels-last memory, the same bits: the test above and test_gaussian_blur_matches_torchvision_formula)
    seen: list[bool] = []
    conv2d = F.conv2d

    def spy(x, *args, **kwargs):
        seen.append(x.is_contiguous(memory_format=torch.channels_last))
        return conv2d(x, *args, **kwargs)

    monkeypatch.setattr(F, "conv2d", spy)
    image = torch.rand(3, 20, 30)
    out = media.gaussian_blur(image)
    assert seen == [True]
    monkeypatch.setattr(F, "conv2d", conv2d)
    assert torch.equal(out, _tv_gaussian_blur(image, 3, 1.0))


def test_gaussian_blur_float64_is_torchvisions_bits():
    # the channels-last convolution (the float32 speed-up) summed float64 pixels in another order: last-bit
    # differences from torchvision's NCHW convolution, which the docstring promises for every dtype
    image = torch.rand(3, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(media.gaussian_blur(image), _tv_gaussian_blur(image, 3, 1.0))
    assert torch.equal(media.gaussian_blur(image[None].expand(2, -1, -1, -1)), _tv_gaussian_blur(image, 3, 1.0)[None]
                       .expand(2, -1, -1, -1))


def test_gaussian_blur_without_onednn_is_torchvisions_bits(monkeypatch):
    # with oneDNN switched off (torch.backends.mkldnn, or a build without it) PyTorch's own channels-last
    # convolution sums in another order than its NCHW one: last-bit differences from torchvision, which moved a
    # 1999x1333 condition picture's codes after the CRF step by up to 14
    image = torch.rand(3, 17, 33, generator=torch.Generator().manual_seed(2))
    assert torch.equal(media.gaussian_blur(image), _tv_gaussian_blur(image, 3, 1.0))  # oneDNN: channels-last
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    assert torch.equal(media.gaussian_blur(image), _tv_gaussian_blur(image, 3, 1.0))


def test_centre_crop_box_hand_values():
    # 1920x1080 to 3:2 -> width int(1080 * 1.5) = 1620 centred: left (1920 - 1620) // 2 = 150
    assert media.centre_crop_box(1920, 1080, 512, 768) == (150, 0, 1770, 1080)
    # 1000x1000 to 3:2 -> height int(1000 / 1.5) = 666, top (1000 - 666) // 2 = 167
    assert media.centre_crop_box(1000, 1000, 512, 768) == (0, 167, 1000, 833)
    with pytest.raises(MediaError):
        media.preprocess_condition_frames(torch.rand(1, 1, 40, 3), 64, 64)


# --------------------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fps", "rate"),
    [(24, Fraction(24)), (25.0, Fraction(25)), (29.97, Fraction(30000, 1001)), (Fraction(30000, 1001), Fraction(30000, 1001)),
     (12.5, Fraction(25, 2))],
)
def test_write_video_round_trip(tmp_path, fps, rate):
    frames = _smooth_frames(5, 32, 48)
    record = {"prompt": "a cät, \"quoted\"\nnew line", "seed": 42, "steps": [1.0, 0.5]}
    path = media.write_video(tmp_path / "out.mp4", frames, fps, metadata=record)
    assert path == tmp_path / "out.mp4" and _listing(tmp_path) == ["out.mp4"]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (48, 32)
        assert stream.average_rate == rate
        decoded = list(container.decode(stream))
        assert len(decoded) == 5
        assert decoded[0].format.name == "yuv420p"
        assert (int(decoded[0].colorspace), int(decoded[0].color_range)) == (1, 1)  # BT.709, limited: tagged
        assert json.loads(container.metadata["comment"]) == record
    assert media.read_video_metadata(path) == record
    assert media.video_frame_rate(path) == rate
    back = media.load_video(path)
    err = (back - frames).abs().mean().item()
    print(f"write_video -> load_video at fps {fps}: mean abs err {err * 255:.2f}/255")
    assert back.shape == frames.shape and err < 3 / 255


def test_write_video_honours_quantize(tmp_path):
    frames = torch.full((2, 16, 16, 3), 0.5)  # 127.5: truncate -> 127, round (half to even) -> 128
    with pytest.raises(ValueError, match="quantize must be"):
        media.write_video(tmp_path / "bad.mp4", frames, 24, quantize="floor")
    seen: list[str] = []
    real = media.write.to_uint8
    try:
        media.write.to_uint8 = lambda f, q="round": (seen.append(q), real(f, q))[1]
        media.write_video(tmp_path / "t.mp4", frames, 24, quantize="truncate")
    finally:
        media.write.to_uint8 = real
    assert seen and set(seen) == {"truncate"}


def test_write_video_odd_size_crops_and_iterable_input(tmp_path):
    frames = _smooth_frames(3, 49, 65)
    frames[:, -1], frames[:, :, -1] = 1.0, 1.0  # white last row and column: cropped, not scaled in
    path = media.write_video(tmp_path / "odd.mp4", iter(list(frames)), 24)  # a generator of [H, W, 3]
    back = media.load_video(path)
    assert back.shape == (3, 48, 64, 3)
    err = (back - frames[:, :48, :64]).abs()
    print(f"odd size: mean abs err {err.mean() * 255:.2f}/255, max on the new edge {err[:, -1].max() * 255:.1f}")
    assert err.mean() < 3 / 255 and err[:, -1].max() < 16 / 255 and err[:, :, -1].max() < 16 / 255
    assert media.read_video_metadata(path) is None
    with pytest.raises(MediaError, match="too small"):
        media.write_video(tmp_path / "tiny.mp4", torch.rand(2, 1, 8, 3), 24)
    assert _listing(tmp_path) == ["odd.mp4"]


def test_quantisation_modes_match_numpy(tmp_path):
    torch.manual_seed(0)
    frame = torch.rand(7, 9, 3)
    frame[0, 0] = torch.tensor([0.999, 1.0, 0.5 / 255])
    frame[0, 1] = torch.tensor([float("nan"), -0.2, 1.3])
    clean = np.nan_to_num(frame.numpy(), nan=0.0).clip(0, 1)
    official = (clean * 255).astype(np.uint8)  # inference.py: (video_np * 255).astype(np.uint8)
    rounded = np.round(clean * 255).astype(np.uint8)
    assert np.array_equal(media.to_uint8(frame, "truncate").numpy(), official)
    assert np.array_equal(media.to_uint8(frame).numpy(), rounded)
    paths = media.write_png_frames(tmp_path / "t", frame[None], quantize="truncate")
    assert np.array_equal(np.asarray(Image.open(paths[0])), official)
    paths = media.write_png_frames(tmp_path / "r", frame[None])
    assert np.array_equal(np.asarray(Image.open(paths[0])), rounded)
    with pytest.raises(ValueError):
        media.to_uint8(frame, "floor")  # type: ignore[arg-type]


def test_exact_rate():
    assert media.write._exact_rate(29.97) == Fraction(30000, 1001)
    assert media.write._exact_rate(23.976) == Fraction(24000, 1001)
    assert media.write._exact_rate(59.94) == Fraction(60000, 1001)
    assert media.write._exact_rate(24.0) == 24 and media.write._exact_rate(30) == 30 and media.write._exact_rate(12.5) == Fraction(25, 2)
    for bad in (0, -24, float("nan"), float("inf"), 5000):
        with pytest.raises(ValueError):
            media.write._exact_rate(bad)


def test_write_video_refuses_a_rate_below_one_frame_per_1000_s_in_the_checks_words(tmp_path):
    """0.0006 fps was written at 1/1001 (floats are stored with denominators up to 1001), 0.0004 refused as "(0, 1000]"
    though it is in it, and 1/10**6 (a latents file's record) failed in PyAV ("Invalid argument ... returned 22").
    Each is now refused with the range every frame-rate check names; its lowest rate is written exactly."""
    frames = _smooth_frames(2, 16, 16)
    for bad in (0.0006, 0.0004, 1e-6, Fraction(1, 10**6), Fraction(1, 1001)):
        with pytest.raises(ValueError, match=r"frame rate must be in \[0\.001, 1000\], got"):
            media.write_video(tmp_path / "slow.mp4", frames, bad)
        assert not (tmp_path / "slow.mp4").exists()
    path = media.write_video(tmp_path / "slow.mp4", frames, 0.001)
    with av.open(str(path)) as c:
        assert Fraction(c.streams.video[0].average_rate) == Fraction(1, 1000)


def test_write_refuses_to_overwrite(tmp_path):
    frames = _smooth_frames(2, 16, 16)
    path = media.write_video(tmp_path / "a.mp4", frames, 24, metadata={"v": 1})
    before = path.read_bytes()
    with pytest.raises(FileExistsError) as exc:
        media.write_video(path, frames, 24, metadata={"v": 2})
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)
    assert path.read_bytes() == before and _listing(tmp_path) == ["a.mp4"]
    media.write_video(path, frames, 24, metadata={"v": 2}, overwrite=True)
    assert media.read_video_metadata(path) == {"v": 2} and _listing(tmp_path) == ["a.mp4"]

    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(MediaError, match="folder"):
        media.write_video(tmp_path / "dir.mp4", frames, 24, overwrite=True)


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failed_write_leaves_nothing(tmp_path, error):
    (tmp_path / "keep.mp4").write_bytes(b"previous")

    def frames():
        yield torch.rand(16, 16, 3)
        yield torch.rand(16, 16, 3)
        raise error

    with pytest.raises(type(error)):
        media.write_video(tmp_path / "new.mp4", frames(), 24)
    with pytest.raises(type(error)):
        media.write_video(tmp_path / "keep.mp4", frames(), 24, overwrite=True)
    with pytest.raises(type(error)):
        media.write_png_frames(tmp_path / "frames", frames())
    assert _listing(tmp_path) == ["keep.mp4"]
    assert (tmp_path / "keep.mp4").read_bytes() == b"previous"


def test_missing_folder_permission_and_disk_full(tmp_path, monkeypatch):
    frames = _smooth_frames(2, 16, 16)
    target = tmp_path / "nope" / "out.mp4"
    with pytest.raises(MediaError, match="does not exist") as exc:
        media.write_video(target, frames, 24)
    _assert_one_line_naming(exc, target)
    assert _listing(tmp_path) == []

    if os.name == "posix" and os.geteuid() != 0:  # a real read-only folder (root ignores permissions)
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        try:
            with pytest.raises(MediaError, match="permission denied"):
                media.write_video(locked / "out.mp4", frames, 24)
            assert _listing(locked) == []
        finally:
            locked.chmod(0o700)
        locked.rmdir()

    def refuse(*_args, **_kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    with monkeypatch.context() as patch:  # the rename into place fails
        patch.setattr(os, "replace", refuse)
        with pytest.raises(MediaError, match="permission denied") as exc:
            media.write_video(tmp_path / "out.mp4", frames, 24)
        _assert_one_line_naming(exc, tmp_path / "out.mp4")
    assert _listing(tmp_path) == []

    with monkeypatch.context() as patch:  # PNG encoder hits a full disk
        def full(*_args, **_kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        patch.setattr(Image.Image, "save", full)
        with pytest.raises(MediaError, match="no space left on device"):
            media.write_png_frames(tmp_path / "frames", frames)
        with pytest.raises(MediaError, match="no space left on device"):
            media.write_image(tmp_path / "one.png", frames[0])
    assert _listing(tmp_path) == []

    if os.path.exists("/dev/full"):  # FFmpeg itself gets ENOSPC: the muxer writes to /dev/full
        real_open = av.open

        def open_on_full_disk(file, mode="r", **kwargs):
            if mode == "w" and str(file).endswith(".partial.mp4"):
                return real_open("/dev/full", mode, **kwargs)
            return real_open(file, mode, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(av, "open", open_on_full_disk)
            with pytest.raises(MediaError, match="no space left on device") as exc:
                media.write_video(tmp_path / "out.mp4", _smooth_frames(8, 64, 64), 24)
            _assert_one_line_naming(exc, tmp_path / "out.mp4")
        assert _listing(tmp_path) == []


def test_write_png_frames_and_image(tmp_path):
    frames = torch.from_numpy(_rng(10).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)).float() / 255
    paths = media.write_png_frames(tmp_path / "frames", frames, metadata={"seed": 3})
    assert [p.name for p in paths] == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
    assert _listing(tmp_path) == ["frames"]
    for path, frame in zip(paths, frames, strict=True):
        assert np.array_equal(np.asarray(Image.open(path)), (frame * 255).round().to(torch.uint8).numpy())
    assert media.read_video_metadata(paths[1]) == {"seed": 3}

    with pytest.raises(FileExistsError):
        media.write_png_frames(tmp_path / "frames", frames[:1])
    assert len(os.listdir(tmp_path / "frames")) == 3
    media.write_png_frames(tmp_path / "frames", frames[:1], overwrite=True)
    assert _listing(tmp_path / "frames") == ["frame_00000.png"] and _listing(tmp_path) == ["frames"]

    (tmp_path / "frames" / "notes.txt").write_text("mine")
    with pytest.raises(MediaError, match="other than"):
        media.write_png_frames(tmp_path / "frames", frames, overwrite=True)
    assert (tmp_path / "frames" / "notes.txt").read_text() == "mine"

    one = media.write_image(tmp_path / "still.png", frames[0], metadata={"prompt": "ünï"})
    assert np.array_equal(np.asarray(Image.open(one)), (frames[0] * 255).round().to(torch.uint8).numpy())
    assert media.read_video_metadata(one) == {"prompt": "ünï"}
    with pytest.raises(FileExistsError):
        media.write_image(one, frames[1])


def test_atomic_output_for_other_writers(tmp_path):
    final = tmp_path / "latents.safetensors"
    with media.atomic_output(final) as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".") and temp.name.endswith(".partial.safetensors")
        assert not final.exists()
        temp.write_bytes(b"data")
    assert final.read_bytes() == b"data" and _listing(tmp_path) == ["latents.safetensors"]

    with contextlib.suppress(ValueError), media.atomic_output(tmp_path / "b.bin") as temp:
        temp.write_bytes(b"half")
        raise ValueError("stop")
    assert _listing(tmp_path) == ["latents.safetensors"]

    with pytest.raises(FileExistsError), media.atomic_output(final):
        pass
    with media.atomic_output(final, overwrite=True) as temp:
        temp.write_bytes(b"new")
    assert final.read_bytes() == b"new" and _listing(tmp_path) == ["latents.safetensors"]


def test_metadata_must_be_json():
    with pytest.raises(ValueError, match="JSON"):
        media.write._record_json({"x": object()})
    with pytest.raises(ValueError, match="JSON"):
        media.write._record_json({"x": float("nan")})
    assert media.write._record_json({"a": [1, 2]}) == '{"a":[1,2]}'


# --------------------------------------------------------------------------------------- H.264 encodes repeat


def _mbtree_clip() -> torch.Tensor:
    """41 frames 192x128 of smooth random colour: a clip whose encodes differed from one to the next."""
    g = torch.Generator().manual_seed(0)
    x = F.interpolate(torch.rand(41, 3, 16, 24, generator=g), size=(128, 192), mode="bilinear")
    return x.permute(0, 2, 3, 1).clamp(0, 1)


def test_the_same_frames_encode_to_the_same_h264_file(tmp_path: Path) -> None:
    """x264's AVX-512 code made every encode of this clip a different file on an AVX-512 host (12 of 12, decoded
    frames up to 19 codes apart; with threads=1 too): on such a CPU it is left out, and the encodes repeat."""
    clip = _mbtree_clip()
    files = {media.write_video(tmp_path / f"{i}.mp4", clip, 24).read_bytes() for i in range(4)}
    assert len(files) == 1


@pytest.mark.parametrize("flags, asm", [
    ("fpu sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi1 bmi2 abm avx512f avx512dq avx512cd avx512bw avx512vl",
     "MMX2,SSE2,SSE2Fast,SSE3,SSSE3,SSE4.1,SSE4.2,AVX,FMA3,BMI1,BMI2,AVX2,LZCNT,Cache64"),
    ("fpu sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi1 bmi2 abm", None),  # no AVX-512: x264 detects as it does
    ("fpu sse2 avx512f", None),  # AVX-512 Foundation alone: x264 uses no AVX-512 code there
    ("", None),  # no /proc/cpuinfo (macOS, Windows) or another architecture
])
def test_x264_is_given_the_cpu_without_avx512(flags: str, asm: str | None) -> None:
    assert media.x264_asm(flags) == asm


@pytest.mark.parametrize("name", ["notes.png", "notes.jpg", "notes.dat"])
def test_a_text_file_with_an_image_name_is_neither_image_nor_video(tmp_path: Path, name: str) -> None:
    """Text named .png went past Pillow to FFmpeg, which picked a demuxer by the suffix and failed on the first
    packet: ``video decoding failed after 0 frames: [Errno 1094995529] Invalid data found ...``, a video error
    for what the user gave as a picture. Either reader says what the file is not."""
    path = tmp_path / name
    path.write_text("hello, not a picture\n")
    for read in (media.load_media, media.read_media):
        with pytest.raises(media.MediaError) as info:
            read(path)
        assert str(info.value) == f"{path}: neither an image Pillow can read nor a video FFmpeg can read"


def test_a_16_bit_grey_png_with_a_transparent_key_is_composited(tmp_path: Path) -> None:
    """16-bit grey took its own path (Pillow clips it at 255) and skipped the transparency every other mode
    honours: the pixels equal to the PNG's tRNS key kept their grey instead of the background."""
    grey = np.full((4, 6), 30000, dtype=np.uint16)
    grey[:, :3] = 65535
    Image.fromarray(grey).save(tmp_path / "g.png", transparency=30000)
    got = media.load_image(tmp_path / "g.png", background=(0.0, 0.5, 1.0))[0].numpy()
    assert np.array_equal(got[:, :3], np.ones((4, 3, 3), np.float32))  # opaque white
    assert np.array_equal(got[:, 3:], np.broadcast_to(np.float32([0.0, 0.5, 1.0]), (4, 3, 3)))  # the background
    # background=None drops the transparency, as the official convert("RGB") path does
    assert np.allclose(media.load_image(tmp_path / "g.png", background=None)[0, :, 3:].numpy(), 30000 / 65535)
