"""A generation's latents saved beside its video (``--latents-out``) and decoded again as the generation did.

Before: a generation's latents could be saved from Python only (``res.latents``), and ``ltx vae decode`` added no
decode noise, tone mapping or crop, so they decoded "close to, not exactly as" the video.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_harness import assert_one_error_line, enter_cli_env, json_lines, ltx, memoised_loader

import ltxcli
from ltxcli import api, autoencode, media

_cached_load = memoised_loader()
_real_load = api.load_pipeline  # (the CLI's is the memoised one in these tests)


def _one_tiny(*args: object, **kwargs: object) -> object:
    """One tiny pipeline for the CLI and the library calls alike (every option here is the default)."""
    return _cached_load(*args) if args == ("tiny",) else _cached_load(*args, **kwargs)

# 70 px high: padded to 96 and cropped back; 10 frames: decoded as 17 and cut (the crop must be repeated too)
ODD = ["--model", "tiny", "--seed", "5", "--height", "70", "--width", "64", "--num-frames", "10"]


@pytest.fixture(autouse=True)
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return enter_cli_env(tmp_path, monkeypatch, _one_tiny)


def test_generation_latents_decode_to_the_generations_very_frames() -> None:
    """Library: the saved latents hold the generation's layout, decode noise seed, timestep and crop."""
    pipe = ltxcli.load_pipeline("tiny")  # (memoised: the tests of this module share it)
    res = pipe.generate("a cat", seed=5, height=70, width=64, num_frames=10)
    autoencode.save_generation_latents("g.safetensors", res, vae=pipe.vae, model="tiny", source="g.mp4")
    latents, meta = autoencode.read_latents("g.safetensors")
    vae = autoencode.VideoAutoencoder(pipe.vae, "tiny", 0.05)
    video, how = autoencode.decode_file(vae, latents, meta, "g.safetensors")
    assert how is not None and how.seed == 5 and how.noise_scale == 0.025  # the tiny preset's decode noise
    assert video.shape == res.video.shape and torch.equal(video, res.video)
    plain, none = autoencode.decode_file(vae, latents, meta, "g.safetensors", plain=True)
    assert none is None and plain.shape == (17, 96, 64, 3)  # the VAE's own, uncropped reconstruction


def test_generation_latents_record_the_vae_convolutions_the_decode_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU generation's VAE runs the calibration's choice for ``--vae-conv auto`` (Winograd or direct: they round
    differently); ``ltx vae decode`` loads the VAE without measuring, so it runs the recorded one. The tiny model is
    too narrow to be measured: the calibration is made to choose Winograd, which its auto rule never takes."""
    from ltxcli import calibrate
    from ltxcli.models.winograd import ConvAlgorithm

    monkeypatch.setattr(calibrate, "for_configs", lambda *a, **k: calibrate.CpuChoices(True, True, "winograd", {}))
    pipe = _real_load("tiny")  # not the memoised one: its VAE would keep the choice
    assert pipe.vae.conv_algorithm is ConvAlgorithm.WINOGRAD
    res = pipe.generate("a cat", seed=5, height=64, width=64, num_frames=9)
    autoencode.save_generation_latents("w.safetensors", res, vae=pipe.vae, model="tiny", source="w.mp4")
    latents, meta = autoencode.read_latents("w.safetensors")
    vae = autoencode.load_autoencoder("tiny", label="tiny", decode_timestep=0.05, device=torch.device("cpu"),
                                      dtype=torch.float32)  # as `ltx vae decode` loads it: its own auto
    video, how = autoencode.decode_file(vae, latents, meta, "w.safetensors")
    assert torch.equal(video, res.video)  # auto's direct convolutions differ by ~1e-6
    assert how is not None and how.vae_conv == "winograd"
    assert vae.module.conv_algorithm is ConvAlgorithm.AUTO  # set back after the decode


@pytest.mark.parametrize("stream", [False, True])
def test_generation_latents_decode_in_the_generations_windows(monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
    """A tiled decode (or a CPU's streamed head, at large sizes) rounds unlike one whole ``vae.decode``: ``ltx vae
    decode`` decoded whole, so it missed the video's frames by an 8-bit step here and there (150 values of a
    320x480x33 tiny video streamed by the CLI). The file records the windows and the decode replays them. An
    approximate plan (windows of 2x2 latents without context) makes the difference large, at a small size."""
    from ltxcli import pipeline
    from ltxcli.frames import to_uint8

    plan = {"split_block": 0, "tile_hw": 2, "context_hw": 0}  # latents h=2, w=3: two windows, no context
    monkeypatch.setattr(pipeline.decode_memory, "plan_decode", lambda *a, **k: dict(plan))
    pipe = ltxcli.load_pipeline("tiny")
    res = pipe.generate("a cat", seed=5, height=64, width=96, num_frames=9, stream=stream)
    frames = torch.cat(list(res.frames()))  # uint8 [9, 64, 96, 3]
    autoencode.save_generation_latents("t.safetensors", res, vae=pipe.vae, model="tiny", source="t.mp4")
    latents, meta = autoencode.read_latents("t.safetensors")
    video, how = autoencode.decode_file(autoencode.VideoAutoencoder(pipe.vae, "tiny", 0.05), latents, meta,
                                        "t.safetensors")
    assert torch.equal(to_uint8(video), frames)
    assert how is not None and how.plan == plan


def test_latents_out_then_vae_decode_gives_the_videos_frames(cli_env: Path) -> None:
    r = ltx("generate", "a cat", *ODD, "-o", "v.mp4", "--latents-out", "lat/v.safetensors", "--json")
    assert r.exit_code == 0, r.stderr
    (obj,) = json_lines(r.stdout)
    assert obj["latents_path"] == "lat/v.safetensors" and obj["path"] == "v.mp4"
    assert "latents in lat/v.safetensors" in r.stderr
    d = ltx("vae", "decode", "lat/v.safetensors", "-o", "d.mp4", "--json")  # model and settings from the file
    assert d.exit_code == 0, d.stderr
    assert json_lines(d.stdout)[0]["generation_decode"]["seed"] == 5
    # the same frames, encoded with the same settings: the same decoded MP4 frames
    assert torch.equal(media.load_media(cli_env / "d.mp4"), media.load_media(cli_env / "v.mp4"))
    p = ltx("vae", "decode", "lat/v.safetensors", "-o", "p.mp4", "--plain")
    assert p.exit_code == 0, p.stderr
    assert media.load_media(cli_env / "p.mp4").shape == (17, 96, 64, 3)


def test_latents_out_mistakes_are_one_line_before_any_work(cli_env: Path) -> None:
    (cli_env / "taken.safetensors").write_bytes(b"x")
    (cli_env / "dir.safetensors").mkdir()
    (cli_env / "p.txt").write_text("a cat\n")
    media.write_video(cli_env / "clip.mp4", torch.zeros(9, 64, 64, 3), 24)
    for args, code, says in (
        (["-o", "v.mp4", "--latents-out", "v.mp4"], 2, "is the video's own path"),
        (["-o", "v.mp4", "--latents-out", "v.pt"], 2, "--latents-out v.pt: latents are written as .safetensors"),
        # a hidden name with no stem has no suffix: it was told "latents are written as .safetensors", its own name
        (["-o", "v.mp4", "--latents-out", ".safetensors"], 2, "--latents-out .safetensors: give the file a name "
                                                              "before .safetensors (e.g. latents.safetensors)"),
        (["-o", "v.mp4", "--latents-out", "taken.safetensors"], 2, "already exists: pass --overwrite"),
        (["-o", "v.mp4", "--latents-out", "dir.safetensors"], 1, "cannot write dir.safetensors: it is a folder"),
        (["-o", "v.mp4", "--latents-out", "p.txt/x.safetensors"], 1, "is not a folder"),
    ):
        line = assert_one_error_line(ltx("generate", "a cat", "--model", "tiny", *args), code)
        assert says in line, line
    assert not (cli_env / "v.mp4").exists() and (cli_env / "taken.safetensors").read_bytes() == b"x"


def test_vae_decode_of_encoded_latents_is_unchanged(cli_env: Path) -> None:
    """A file of `ltx vae encode` records no generation: decoded plainly, as before (seed 0, no crop)."""
    media.write_video(cli_env / "clip.mp4", torch.rand(9, 64, 96, 3), 24)
    assert ltx("vae", "encode", "clip.mp4", "--model", "tiny", "-o", "e.safetensors").exit_code == 0
    d = ltx("vae", "decode", "e.safetensors", "-o", "d.mp4", "--json")
    assert d.exit_code == 0, d.stderr
    assert json_lines(d.stdout)[0]["generation_decode"] is None
    latents, _ = autoencode.read_latents(cli_env / "e.safetensors")
    vae = autoencode.VideoAutoencoder(ltxcli.load_pipeline("tiny").vae, "tiny", 0.05)
    media.write_video(cli_env / "ref.mp4", vae.decode(latents, None, 0), 24)
    assert torch.equal(media.load_media(cli_env / "d.mp4"), media.load_media(cli_env / "ref.mp4"))


def _with_decode_field(src: Path, dst: Path, field: str, value: object) -> None:
    """A copy of latents file ``src`` whose recorded decode setting ``field`` was changed by hand to ``value``."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta["decode"] = json.dumps({**json.loads(meta["decode"]), field: value})
    save_file(tensors, str(dst), metadata=meta)


def test_a_hand_edited_decode_record_is_one_line_naming_the_file_and_the_field(
        cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``plan`` edited into one the decoder cannot run was exit 2 with tiled_decode's own words ("tile=0 must be
    >= 1 ..."), naming neither the file nor the field; a negative timestep, a seed past 2**63 or more frames than the
    latents hold decoded anyway or failed as obscurely. Each is now exit 6 (a latents file unreadable) in one line
    with the file, the field and its value."""
    from ltxcli import pipeline

    monkeypatch.setattr(pipeline.decode_memory, "plan_decode", lambda *a, **k: {"split_block": 0, "tile_hw": 2})
    res = ltxcli.load_pipeline("tiny").generate("a cat", seed=5, height=64, width=96, num_frames=9)
    autoencode.save_generation_latents("g.safetensors", res, vae=ltxcli.load_pipeline("tiny").vae, model="tiny",
                                       source="g.mp4")
    vae = autoencode.VideoAutoencoder(ltxcli.load_pipeline("tiny").vae, "tiny", 0.05)
    for field, value, says in (
            ("plan", {"split_block": 0, "tile_hw": 0}, "tile=0 must be >= 1"),
            ("plan", {"split_block": 99}, "split_block=99 must be in"),
            ("plan", {"chunk_frames": 0}, "chunk_frames=0 must be at least 1"),
            ("plan", {"tile_hw": 2, "overlap_hw": 2}, "overlap=2 must be smaller"),
            ("plan", {"context_hw": -1}, "context=-1 must be >= 0"),
            ("plan", {"tile_hw": [2, 2, 2]}, "tile_hw is one size or (height, width)"),
            ("timestep", -1, "timestep=-1 must be in [0, 1]"),
            ("timestep", float("nan"), "timestep=NaN must be in [0, 1]"),
            ("timestep", 1e36, "timestep=1e+36 must be in [0, 1]"),  # decoded to NaN: a black video, exit 0
            ("seed", 2**70, "seed=1180591620717411303424 must be in [0, 2**63 - 1]"),
            ("tone_map_compression_ratio", 5, "tone_map_compression_ratio=5 must be in [0, 1]"),
            ("num_frames", 1000, "num_frames=1000 must be in [1, 9]"),  # decoded to the 9 there are, exit 0
            ("first_frame", 9, "first_frame=9 must be in [0, 8] (below num_frames)"),  # an empty video
            ("first_frame", -1, "first_frame=-1 must be in [0, 8]"),
            ("padded", [10000, 96], "padded=[10000, 96] must be [64, 96]"),
            ("padded", [64, 96, 3], "padded=[64, 96, 3] must be [64, 96]"),
            ("tiles", "x", "tiles 'x' is not a temporal tiling"),
            ("resize", "false", 'resize="false" must be true or false'),  # bool("false"): resized, silently
            # 2 latent frames: 2 tiles (the message said "plans hold 2 per tile": one plan per tile, 2 tiles)
            ("tiles", {"length": 1, "plans": [None]}, "plans must hold one plan per tile (2 tiles of length 1), not 1"),
            ("tiles", {"length": 0, "plans": [None]}, "length=0 must be at least 1"),
            # no tile, no plan: was decoded, "internal error: generator raised StopIteration" (exit 1)
            ("tiles", {"length": 0, "plans": []}, "length=0 must be at least 1"),
            ("tiles", {"length": 1, "plans": [None, {"tile_hw": 0}]}, "tile=0 must be >= 1")):
        _with_decode_field(cli_env / "g.safetensors", cli_env / "bad.safetensors", field, value)
        latents, meta = autoencode.read_latents("bad.safetensors")
        with pytest.raises(media.MediaError) as e:
            autoencode.decode_file(vae, latents, meta, "bad.safetensors")
        assert str(e.value).startswith("bad.safetensors: its 'decode' record") and says in str(e.value), field
        assert field in str(e.value), str(e.value)
    _with_decode_field(cli_env / "g.safetensors", cli_env / "bad.safetensors", "plan", {"tile_hw": 0})
    line = assert_one_error_line(ltx("vae", "decode", "bad.safetensors", "-o", "bad.mp4"), 6)
    assert "bad.safetensors: its 'decode' record's plan" in line and "tile=0 must be >= 1" in line, line
    assert not (cli_env / "bad.mp4").exists()


def test_a_hand_edited_integer_field_of_a_decode_record_must_be_an_integer(
        cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``"seed": 1.5`` or ``"num_frames": true`` decoded as if the record said 1 (int() of each, exit 0: one frame
    for num_frames); an integer field now takes an integer only (9.0 is 9), else exit 6 naming the file and field."""
    from ltxcli import pipeline

    monkeypatch.setattr(pipeline.decode_memory, "plan_decode", lambda *a, **k: {"split_block": 0, "tile_hw": 2})
    res = ltxcli.load_pipeline("tiny").generate("a cat", seed=5, height=64, width=96, num_frames=9)
    autoencode.save_generation_latents("g.safetensors", res, vae=ltxcli.load_pipeline("tiny").vae, model="tiny",
                                       source="g.mp4")
    for field, value, says in (
            ("seed", 1.5, "seed=1.5 must be an integer"),
            ("num_frames", True, "num_frames=true must be an integer"),
            ("num_frames", "9", 'num_frames="9" must be an integer'),
            ("first_frame", 1.5, "first_frame=1.5 must be an integer"),
            ("padded", [64.5, 96], "padded=64.5 must be an integer"),
            ("padding", [0, 0, False, 0], "padding=false must be an integer"),
            ("stride", [1.5, 1, 1, 1, 1], "stride=1.5 must be an integer"),
            ("plan", {"tile_hw": 2.5}, "tile_hw=2.5 must be an integer"),
            ("plan", {"tile_hw": [2, True]}, "tile_hw=true must be an integer"),
            ("tiles", {"length": 1.5, "plans": [None, None]}, "length=1.5 must be an integer")):
        _with_decode_field(cli_env / "g.safetensors", cli_env / "bad.safetensors", field, value)
        with pytest.raises(media.MediaError) as e:
            autoencode.DecodeSettings.read(autoencode.read_latents("bad.safetensors")[1], tuple(res.latents.shape),
                                           "bad.safetensors")
        assert str(e.value).startswith("bad.safetensors: its 'decode' record") and says in str(e.value), (field, e)
    _with_decode_field(cli_env / "g.safetensors", cli_env / "ok.safetensors", "num_frames", 9.0)  # JSON 9.0: 9
    d = autoencode.DecodeSettings.read(autoencode.read_latents("ok.safetensors")[1], tuple(res.latents.shape), "ok")
    assert d is not None and d.num_frames == 9 and type(d.num_frames) is int
    _with_decode_field(cli_env / "g.safetensors", cli_env / "bad.safetensors", "num_frames", True)
    line = assert_one_error_line(ltx("vae", "decode", "bad.safetensors", "-o", "bad.mp4"), 6)
    assert "bad.safetensors: its 'decode' record" in line and "num_frames=true must be an integer" in line, line
    assert not (cli_env / "bad.mp4").exists()


def test_ltx_vae_decode_refuses_a_garbled_frame_rate_before_loading_a_model(cli_env: Path) -> None:
    """frame_rate "abc" (or 0, inf) decoded at 24 fps without a word; now exit 6 (as a hand-edited 'decode' record)
    in one line naming the file and the field, before the VAE loads; --frame-rate overrides the record."""
    meta = {"format": "ltxcli.latents", "model": "tiny", "frame_rate": "abc", "num_frames": "9"}
    autoencode.save_latents("bad.safetensors", torch.randn(1, 16, 2, 1, 1), meta)
    line = assert_one_error_line(ltx("vae", "decode", "bad.safetensors", "-o", "bad.mp4"), 6)
    assert "bad.safetensors: its 'frame_rate' record 'abc' is not a frame rate" in line, line
    assert not (cli_env / "bad.mp4").exists()
    assert ltx("vae", "decode", "bad.safetensors", "-o", "ok.mp4", "--frame-rate", "12").exit_code == 0
    assert media.media_info(cli_env / "ok.mp4")[0]["frame_rate"] == 12


def test_ltx_vae_decode_help_gives_the_defaults_it_uses(cli_env: Path) -> None:
    """ltx vae decode --help said --frame-rate defaults to "the one recorded at encoding" (a file that records none
    is written at 24, as the README says) and --decode-timestep to "the model preset's, 0.05" only (a generation's
    latents file decodes at its recorded timestep unless --plain: ltxcli.autoencode.decode_file)."""
    import typer.main

    from ltxcli.cli import app

    autoencode.save_latents("none.safetensors", torch.randn(1, 16, 2, 1, 1), {"format": "ltxcli.latents",
                                                                              "model": "tiny", "num_frames": "9"})
    assert ltx("vae", "decode", "none.safetensors", "-o", "none.mp4").exit_code == 0
    assert media.media_info(cli_env / "none.mp4")[0]["frame_rate"] == 24  # no record: 24 fps
    vae = typer.main.get_command(app).commands["vae"]  # type: ignore[attr-defined]
    helps = {p.opts[0]: p.help for p in vae.commands["decode"].params}
    assert "else 24" in helps["--frame-rate"], helps["--frame-rate"]
    assert "generation's latents file records" in helps["--decode-timestep"], helps["--decode-timestep"]
    assert "unless --plain" in helps["--decode-timestep"]


def test_ltx_vae_decode_names_the_lowest_frame_rate_it_writes(cli_env: Path) -> None:
    """--frame-rate 0.000001 said "must be in (0, 1000]" (1e-06 is in it: the writer rounds it to 0) and a record's
    frame_rate 1e-6 failed in PyAV's words (exit 2); both name the one range now, the record as a bad record (6)."""
    meta = {"format": "ltxcli.latents", "model": "tiny", "frame_rate": "1e-6", "num_frames": "9"}
    autoencode.save_latents("slow.safetensors", torch.randn(1, 16, 2, 1, 1), meta)
    line = assert_one_error_line(ltx("vae", "decode", "slow.safetensors", "-o", "a.mp4"), 6)
    assert "slow.safetensors: its 'frame_rate' record '1e-6' is not a frame rate in [0.001, 1000]" in line, line
    line = assert_one_error_line(ltx("vae", "decode", "slow.safetensors", "-o", "a.mp4", "--frame-rate", "1e-6"), 2)
    assert "--frame-rate=1e-06 must be in [0.001, 1000] (e.g. 0.001)" in line, line
    assert not (cli_env / "a.mp4").exists()
    assert ltx("vae", "decode", "slow.safetensors", "-o", "ok.mp4", "--frame-rate", "0.001").exit_code == 0
    assert media.media_info(cli_env / "ok.mp4")[0]["frame_rate"] == 0.001


def test_ltx_vae_roundtrip_refuses_writing_a_clip_above_1000_fps_before_the_vae(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ltx vae roundtrip fast.mp4 -o rt.mp4` of a 2000 fps clip encoded and decoded it, then failed at the write
    ("frame rate must be in (0, 1000]"): it is refused before the VAE loads (exit 2, one line saying what to do),
    and without -o the clip is measured as before."""
    import av
    import numpy as np

    with av.open(str(cli_env / "fast.mp4"), "w") as out:  # written here: ltxcli's writer refuses a rate above 1000
        stream = out.add_stream("libx264", rate=2000)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        for i in range(9):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((32, 64, 3), 20 * i, np.uint8), format="rgb24")))
        out.mux(stream.encode())
    loads: list[object] = []
    real = autoencode.load_autoencoder
    monkeypatch.setattr(autoencode, "load_autoencoder", lambda *a, **k: loads.append(a) or real(*a, **k))
    line = assert_one_error_line(ltx("vae", "roundtrip", "fast.mp4", "-m", "tiny", "-o", "rt.mp4"), 2)
    assert "fast.mp4 is 2000 fps, above the 1000 a video is written at: -o cannot write" in line, line
    assert loads == [] and not (cli_env / "rt.mp4").exists()
    assert ltx("vae", "roundtrip", "fast.mp4", "-m", "tiny").exit_code == 0 and len(loads) == 1


SMALL = ["--model", "tiny", "--height", "64", "--width", "64", "--num-frames", "9", "--seed", "3"]


def test_batch_latents_out_is_a_pattern_or_a_lines_own_and_each_decodes_to_its_video(cli_env: Path) -> None:
    """``--latents-out`` was refused with ``--batch``; it now takes a pattern of the ``-o`` fields (every item its own
    file) and a line may name its own ``latents_out``, each decoding to its own video's frames."""
    (cli_env / "p.txt").write_text('a cat\n{"prompt": "a dog", "latents_out": "dog.safetensors"}\n')
    r = ltx("generate", "--batch", "p.txt", *SMALL, "-o", "out/{index}.mp4", "--latents-out",
            "lat/{index}-{seed}.safetensors", "--json")
    assert r.exit_code == 0, r.stderr
    assert [o["latents_path"] for o in json_lines(r.stdout)] == ["lat/0-3.safetensors", "dog.safetensors"]
    for lat, video in (("lat/0-3.safetensors", "out/0.mp4"), ("dog.safetensors", "out/1.mp4")):
        assert autoencode.read_latents(lat)[1]["source"] == video
        assert ltx("vae", "decode", lat, "-o", "d.mp4", "--overwrite").exit_code == 0
        assert torch.equal(media.load_media(cli_env / "d.mp4"), media.load_media(cli_env / video))


def test_a_batch_lines_own_latents_out_mistake_names_the_line(cli_env: Path) -> None:
    """A line's own refused ``latents_out`` was named "item N's latents_out" (or, an existing file, not at all) where
    the line's other mistakes say ``--batch FILE line K: ...``."""
    (cli_env / "exist.safetensors").write_bytes(b"")
    for value, says in (
            ("lat.bin", "--batch p.txt line 3: latents_out lat.bin: latents are written as .safetensors"),
            ("exist.safetensors", "--batch p.txt line 3: latents_out exist.safetensors already exists: pass "
                                  "--overwrite"),
            ("x.safetensors", "--batch p.txt line 3: latents_out x.safetensors is where --batch p.txt line 2 writes "
                              "its latents too")):
        (cli_env / "p.txt").write_text(f'a cat\n{{"prompt": "a dog", "latents_out": "x.safetensors"}}\n'
                                       f'{{"prompt": "a fox", "latents_out": "{value}"}}\n')
        line = assert_one_error_line(ltx("generate", "--batch", "p.txt", *SMALL, "-o", "out/{index}.mp4"), 2)
        assert says in line, line
    assert not (cli_env / "out").exists()


def test_batch_latents_out_follows_the_videos_existing_output_rules(cli_env: Path) -> None:
    """Refused before any work as two videos of one batch would be: one file for several items, two items on one
    file, an item's latents on a video, an existing file without --overwrite. --skip-existing: a skipped item writes
    none (a warning when its latents are missing); one regenerated replaces the latents it wrote before (their
    record names its video), never another file."""
    (cli_env / "p.txt").write_text("a cat\na dog\n")
    batch = ["generate", "--batch", "p.txt", *SMALL, "-o", "out/{index}.mp4"]
    for args, says in (
            (["--latents-out", "one.safetensors"], "names one file but this is a batch"),
            (["--latents-out", "lat/{width}.safetensors"], "items 0 and 1 would both write their latents"),
            (["--latents-out", "lat/{index}.mp4"], "must end in .safetensors")):
        line = assert_one_error_line(ltx(*batch, *args), 2)
        assert says in line, line
    (cli_env / "q.txt").write_text('a cat\n{"prompt": "a dog", "latents_out": "out/0.mp4"}\n')
    line = assert_one_error_line(ltx("generate", "--batch", "q.txt", *SMALL, "-o", "out/{index}.mp4"), 2)
    assert "q.txt line 2: latents_out out/0.mp4 is the video of --batch q.txt line 1" in line, line
    assert not (cli_env / "out").exists()

    pattern = ["--latents-out", "lat/{index}.safetensors"]
    assert ltx(*batch, *pattern).exit_code == 0
    line = assert_one_error_line(ltx(*batch, "-o", "again/{index}.mp4", *pattern), 2)
    assert "lat/0.safetensors already exists: pass --overwrite" in line, line
    (cli_env / "lat/0.safetensors").unlink()
    (cli_env / "out/1.mp4").unlink()
    before = (cli_env / "lat/1.safetensors").stat().st_mtime_ns
    r = ltx(*batch, *pattern, "--skip-existing", "--json")
    assert r.exit_code == 0, r.stderr
    assert [o["status"] for o in json_lines(r.stdout)] == ["skipped", "ok"]
    assert "out/0.mp4 exists, its latents lat/0.safetensors do not" in r.stderr
    assert not (cli_env / "lat/0.safetensors").exists()
    assert (cli_env / "lat/1.safetensors").stat().st_mtime_ns != before  # its own: replaced with its video
    (cli_env / "lat/1.safetensors").rename(cli_env / "lat/0.safetensors")  # (no warning about item 0 now)
    (cli_env / "out/1.mp4").unlink()
    (cli_env / "lat/1.safetensors").write_bytes(b"not latents")
    line = assert_one_error_line(ltx(*batch, *pattern, "--skip-existing"), 2)
    assert "--latents-out: lat/1.safetensors already exists and holds no latents of out/1.mp4" in line, line
    assert (cli_env / "lat/1.safetensors").read_bytes() == b"not latents"


def test_long_video_latents_decode_to_its_very_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--latents-out`` was refused for a video made in several windows. Its file now holds the fused latents of
    the whole video (the temporal upscale's, with one) and the temporal tiles they were decoded in as the windows
    settled (each with its own decode-noise seed and VAE plan); the decode replays them, to the video's very
    frames. An approximate VAE plan (2x2 latent windows, no context) makes any tile decoded otherwise differ."""
    from ltxcli import long_video, pipeline

    monkeypatch.setattr(pipeline.decode_memory, "plan_decode", lambda *a, **k: {"split_block": 0, "tile_hw": 2,
                                                                                "context_hw": 0})
    pipe = ltxcli.load_pipeline("tiny")
    res = long_video.generate(pipe, ltxcli.GenerationRequest("a cat | a dog", seed=5, height=64, width=96,
                                                             num_frames=41, window=32, overlap=8))
    assert len(res.settings["long"]["windows"]) == 2 and res.latents.shape[2] == 6
    autoencode.save_generation_latents("l.safetensors", res, vae=pipe.vae, model="tiny", source="l.mp4")
    latents, meta = autoencode.read_latents("l.safetensors")
    video, how = autoencode.decode_file(autoencode.VideoAutoencoder(pipe.vae, "tiny", 0.05), latents, meta,
                                        "l.safetensors")
    assert how is not None and how.tiles is not None and how.tiles["length"] == 3  # 4 latent frames a window
    assert len(how.tiles["plans"]) == 6 and how.seed == 5  # a tile at each of the 6 latent frames (3 - 2 apart)
    assert torch.equal(video, res.video)


@pytest.mark.parametrize(("backward", "window"), [(True, None), (False, 24)])
def test_extension_latents_decode_to_its_new_frames(monkeypatch: pytest.MonkeyPatch, backward: bool,
                                                    window: int | None) -> None:
    """``--latents-out`` was refused with an extension. Its latents are its generation's (context and new frames,
    in windows too): the file records the frames of their decode the video holds, the new ones, and the decode
    gives those very frames (the input's own, in the video, are no latents'). An approximate VAE plan makes a
    decode in other windows differ. In windows the result is streamed, as ltx streams it."""
    from ltxcli import Extension, extend, pipeline
    from ltxcli.frames import to_uint8

    monkeypatch.setattr(pipeline.decode_memory, "plan_decode", lambda *a, **k: {"split_block": 0, "tile_hw": 2,
                                                                                "context_hw": 0})
    media.write_video("in.mp4", torch.rand(12, 64, 96, 3), 24, overwrite=True)
    pipe = ltxcli.load_pipeline("tiny")
    res = extend.run_extension(pipe, ltxcli.GenerationRequest(
        "a cat | a dog", seed=5, steps=1, window=window, overlap=window and 8, extend=Extension("in.mp4", 20, backward)),
        stream=window is not None)
    frames = torch.cat(list(res.frames()))  # uint8 [32, 64, 96, 3]: the extension's written frames
    assert frames.shape[0] == 32
    assert (window is not None) == (len(res.settings["long"]["windows"]) > 1)
    autoencode.save_generation_latents("e.safetensors", res, vae=pipe.vae, model="tiny", source="e.mp4")
    latents, meta = autoencode.read_latents("e.safetensors")
    assert meta["num_frames"] == "20"
    video, how = autoencode.decode_file(autoencode.VideoAutoencoder(pipe.vae, "tiny", 0.05), latents, meta,
                                        "e.safetensors")
    assert how is not None and how.first_frame == (4 if backward else 9)  # (backward: 20 made as 24, 4 dropped)
    assert torch.equal(to_uint8(video), frames[:20] if backward else frames[12:])


def test_latents_out_of_a_long_video_then_vae_decode_gives_the_videos_frames(cli_env: Path) -> None:
    r = ltx("generate", "a cat | a dog", *SMALL, "--num-frames", "33", "--window", "16", "--overlap", "8",
            "-o", "long.mp4", "--latents-out", "long.safetensors", "--json")
    assert r.exit_code == 0, r.stderr
    assert len(json_lines(r.stdout)[0]["settings"]["long"]["windows"]) > 1  # (4: 2 latent frames, 1 apart)
    d = ltx("vae", "decode", "long.safetensors", "-o", "d.mp4")
    assert d.exit_code == 0, d.stderr
    assert torch.equal(media.load_media(cli_env / "d.mp4"), media.load_media(cli_env / "long.mp4"))


def test_a_latents_pattern_mistake_names_latents_out_not_the_output_pattern(cli_env: Path) -> None:
    """A bad field or format spec in ``--latents-out`` (or a line's ``latents_out``) was reported as the "output
    pattern", which reads as ``-o``'s: the line names the option (or the batch line) the pattern came from."""
    (cli_env / "p.txt").write_text('a cat\n{"prompt": "a dog", "latents_out": "lat/{bogus}.safetensors"}\n')
    batch = ["generate", "--batch", "p.txt", *SMALL, "-o", "out/{index}.mp4"]
    line = assert_one_error_line(ltx(*batch), 2)
    assert "--batch p.txt line 2: latents_out pattern 'lat/{bogus}.safetensors': unknown field {bogus}" in line, line
    line = assert_one_error_line(ltx(*batch, "--latents-out", "lat/{index:q}.safetensors"), 2)
    assert "--latents-out pattern 'lat/{index:q}.safetensors': Unknown format code 'q'" in line, line
    assert not (cli_env / "out").exists()


def test_an_extension_writes_the_latents_of_its_new_frames(cli_env: Path) -> None:
    """``--latents-out`` was refused with ``ltx extend`` (and for a batch's extension line under the option): it
    now writes the extension's generation, which ``ltx vae decode`` decodes to its new frames."""
    media.write_video(cli_env / "clip.mp4", torch.zeros(9, 32, 32, 3), 24)
    r = ltx("extend", "clip.mp4", "on", "--frames", "8", "--model", "tiny", "--steps", "1", "-o", "e.mp4",
            "--latents-out", "e.safetensors", "--json")
    assert r.exit_code == 0, r.stderr
    assert json_lines(r.stdout)[0]["latents_path"] == "e.safetensors"
    d = ltx("vae", "decode", "e.safetensors", "-o", "d.mp4", "--json")
    assert d.exit_code == 0, d.stderr
    got = json_lines(d.stdout)[0]
    assert got["num_frames"] == 8 and got["generation_decode"]["first_frame"] == 9  # after its 9 frames of context
    assert media.load_video(cli_env / "d.mp4").shape == (8, 32, 32, 3)
