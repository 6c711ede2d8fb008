"""A frame rate in every ``--json`` output and record is one number, as README's examples and
:func:`ltxcli.naming.fps_number` show it: an integer for a whole rate (``24``, never ``24.0``), a float for
another (a video's exact 24000/1001 as the float that :func:`ltxcli.media.write_video` maps back to 24000/1001).
``==`` does not tell 24 from 24.0, so these check the JSON text and the type."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from types import SimpleNamespace
from typing import Any

import torch

from ltxcli import autoencode, records
from ltxcli.formatting import to_json
from ltxcli.media.write import _exact_rate
from ltxcli.naming import fps_number
from ltxcli.perf.bench import BenchResult

NTSC = Fraction(24000, 1001)


def test_fps_number_of_a_video_rate_is_an_int_or_a_float_that_keeps_the_exact_rate() -> None:
    assert type(fps_number(Fraction(24))) is int and fps_number(Fraction(24)) == 24
    ntsc = fps_number(NTSC)  # a video's rate (media.video_frame_rate): was the Fraction itself, not a JSON number
    assert type(ntsc) is float and _exact_rate(ntsc) == NTSC
    assert to_json({"frame_rate": ntsc}) == '{"frame_rate": 23.976023976023978}'


def test_vae_decode_record_and_json_show_a_whole_rate_as_an_integer() -> None:
    """`ltx vae decode --json` and the decoded video's record said 24.0 where `ltx generate --json` says 24."""
    vae: Any = SimpleNamespace(label="tiny")
    video = torch.zeros(9, 32, 32, 3)
    rec = autoencode.decoded_record(vae, video, Fraction(24), "lat.safetensors")
    assert '"frame_rate": 24,' in to_json(rec), to_json(rec)
    rec = autoencode.decoded_record(vae, video, NTSC, "lat.safetensors")
    assert type(rec["frame_rate"]) is float and _exact_rate(rec["frame_rate"]) == NTSC


def test_bench_json_shows_a_whole_rate_as_an_integer() -> None:
    """`ltx bench --json` said "frame_rate": 24.0 (the run's float)."""
    result = BenchResult(**{f.name: None for f in dataclasses.fields(BenchResult)
                            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING})
    result.frame_rate = 24.0
    assert '"frame_rate": 24,' in to_json(result.to_dict())
    result.frame_rate = 12.5
    assert '"frame_rate": 12.5,' in to_json(result.to_dict())


def test_generate_json_temporal_upscale_rate_is_shown_as_the_outputs() -> None:
    """`ltx generate --json` (and the record) said "frame_rate": 48 for the output but 24.0 for the generated
    frames under "temporal_upscale"."""
    settings = dict.fromkeys(("conditions", "device", "dtype", "loras", "multi_scale", "negative_prompt", "offload",
                              "preset", "vae_conv", "vae_tiling"))
    settings |= {"height": 64, "width": 96, "num_frames": 17, "frame_rate": 48.0,
                 "temporal_upscale": {"num_frames": 9, "frame_rate": 24.0},
                 "passes": [{"num_inference_steps": 2, "guidance_scale": 1.0, "stg_scale": 0.0}]}
    text = to_json(records.run_settings(SimpleNamespace(settings=settings)))  # type: ignore[arg-type]
    assert '"frame_rate": 48,' in text and '"temporal_upscale": {"num_frames": 9, "frame_rate": 24}' in text, text


def test_info_stream_rate_is_the_exact_rate(tmp_path: Any) -> None:
    """`ltx info --json` rounded a fractional rate to 6 decimals (23.976024), unlike every other --json."""
    from ltxcli import media

    media.write_video(tmp_path / "ntsc.mp4", torch.zeros(2, 32, 32, 3), NTSC)
    media.write_video(tmp_path / "24.mp4", torch.zeros(2, 32, 32, 3), 24)
    ntsc = media.media_info(tmp_path / "ntsc.mp4")[0]["frame_rate"]
    assert ntsc == float(NTSC) and _exact_rate(ntsc) == NTSC
    assert '"frame_rate": 24,' in to_json(media.media_info(tmp_path / "24.mp4")[0])
