"""``~`` in paths ltx reads from text that no shell expanded: ``--condition=~/a.png:0`` and the other options'
``--opt=~/...`` values, quoted arguments, ``--batch`` lines, ``--prompt-schedule`` paths, ``--from`` and the paths
in the record it reads, ``ltx prompt --image``. Each entry point runs in process on the tiny model, with HOME a
temporary folder holding the inputs; the record (or the input the run read) must name the expanded path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_harness import enter_cli_env, json_lines, ltx, memoised_loader

from ltxcli import media, naming
from ltxcli.paths import user_path

SMALL = ["-m", "tiny", "--height", "64", "--width", "96", "--num-frames", "9", "--steps", "1", "--seed", "1",
         "--json", "-q"]
_cached_load = memoised_loader()


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME (a folder apart from the current one) with an image, a 9-frame video and a prompt schedule."""
    (tmp_path / "work").mkdir()
    enter_cli_env(tmp_path / "work", monkeypatch, _cached_load)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    frames = torch.linspace(0, 1, 9 * 64 * 96 * 3).reshape(9, 64, 96, 3)
    media.write_image(home / "a.png", frames[0])
    media.write_video(home / "v.mp4", frames, 24)
    (home / "p.jsonl").write_text('{"start": 0, "prompt": "a cat"}\n{"start": 8, "prompt": "a dog"}\n')
    return home


def _record(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, result.stderr
    (obj,) = json_lines(result.stdout)
    return media.read_record(obj["path"])


def test_user_path_expands_only_a_leading_tilde(home: Path) -> None:
    assert user_path("~/a.png") == f"{home}/a.png" and user_path("~") == str(home)
    assert user_path("a/~/b.png") == "a/~/b.png" and user_path("x~.png") == "x~.png"
    assert user_path("~no-such-user-here/a.png") == "~no-such-user-here/a.png"  # kept, as a shell keeps it


@pytest.mark.parametrize(("args", "key"), [
    (["generate", "a cat", "--condition=~/a.png:0"], "conditions"),
    (["i2v", "~/a.png", "a cat"], "conditions"),  # a quoted argument
    (["generate", "a cat", "--control=~/v.mp4:0.9"], "control"),
    (["generate", "a cat", "--control-from", "canny", "~/v.mp4"], "control"),
    (["v2v", "~/v.mp4", "a cat", "--steps", "2"], "video"),
    (["extend", "~/v.mp4", "a cat", "--frames", "8"], "extend"),
])
def test_options_and_arguments(home: Path, args: list[str], key: str) -> None:
    # extend and v2v take their length from the input
    small = [a for a in SMALL if a not in ("--num-frames", "9")] if args[0] in ("v2v", "extend") else SMALL
    rec = _record(ltx(*args, *small, *(["--steps", "2"] if args[0] == "v2v" else [])))
    value = rec[key][0]["path"] if key == "conditions" else rec[key]["source"] if key == "control" else \
        rec[key] if key == "video" else rec[key]["video"]
    assert value == str(home / ("a.png" if key == "conditions" else "v.mp4"))


@pytest.mark.parametrize(("line", "key"), [
    ({"image": "~/a.png"}, "conditions"),
    ({"conditions": ["~/a.png:0"]}, "conditions"),
    ({"conditions": [{"path": "~/a.png", "frame": 0}]}, "conditions"),
    ({"control": "~/v.mp4"}, "control"),
    ({"control": {"path": "~/v.mp4", "strength": 1.0, "kind": "video"}}, "control"),
    ({"control_from": ["canny", "~/v.mp4"]}, "control"),
])
def test_batch_lines(home: Path, line: dict[str, Any], key: str) -> None:
    Path("b.jsonl").write_text(json.dumps({"prompt": "a cat", **line}) + "\n")
    rec = _record(ltx("generate", "--batch", "b.jsonl", *SMALL))
    assert (rec[key][0]["path"] if key == "conditions" else rec[key]["source"]) == str(
        home / ("a.png" if key == "conditions" else "v.mp4"))


@pytest.mark.parametrize("line", [{"video": "~/v.mp4", "denoise_strength": 0.5},
                                  {"extend": {"video": "~/v.mp4", "frames": 8}}])
def test_batch_input_videos(home: Path, line: dict[str, Any]) -> None:
    Path("b.jsonl").write_text(json.dumps({"prompt": "a cat", **line}) + "\n")
    small = [a for a in SMALL if a not in ("--num-frames", "9")]  # the input's length
    rec = _record(ltx("generate", "--batch", "b.jsonl", *small, "--steps", "2"))
    assert (rec["video"] if "video" in line else rec["extend"]["video"]) == str(home / "v.mp4")


@pytest.mark.parametrize("where", ["option", "batch"])
def test_prompt_schedule(home: Path, where: str) -> None:
    long = ["--num-frames", "17", "--window", "16", "--overlap", "8"]
    small = [a for a in SMALL if a not in ("--num-frames", "9")] + long
    if where == "option":
        result = ltx("generate", "x", "--prompt-schedule=~/p.jsonl", *small)
    else:
        Path("b.jsonl").write_text('{"prompt": "x", "prompt_schedule": "~/p.jsonl"}\n')
        result = ltx("generate", "--batch", "b.jsonl", *small)
    assert [w["prompt"] for w in _record(result)["long"]["windows"]] == ["a cat", "a dog"]


def test_from_a_path_and_the_paths_in_its_record(home: Path) -> None:
    first = _record(ltx("generate", "a cat", "--condition", str(home / "a.png") + ":0", *SMALL, "-o",
                        str(home / "made.mp4")))
    # a record that names its condition with "~" (written by hand, or by a version that kept it so)
    first["conditions"][0]["path"] = "~/a.png"
    media.write_video(home / "rec.mp4", torch.zeros(9, 64, 96, 3), 24, metadata=first)
    rec = _record(ltx("generate", "--from=~/rec.mp4", "--json", "-q", "-o", "again.mp4"))
    assert rec["conditions"][0]["path"] == str(home / "a.png") and rec["seed"] == 1


def test_prompt_image(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ltxcli.enhance import stage

    seen = []
    monkeypatch.setattr(stage, "enhance_items", lambda requests, *a, **k: seen.extend(requests))
    result = ltx("prompt", "a cat", "--image=~/a.png", "--model", "tiny", "--json", "--seed", "1")
    assert result.exit_code == 0, result.stderr
    assert seen[0].conditions[0].media == str(home / "a.png")


def test_an_output_under_an_unknown_user_is_no_internal_error(home: Path) -> None:
    # Path.expanduser raised RuntimeError("Could not determine home directory"): exit 1, "internal error"
    target = naming.output_path("~no-such-user-here/x.mp4", {}, batch=False, frames=False)
    assert target == Path("~no-such-user-here/x.mp4")
    assert naming.output_path("~/x.mp4", {}, batch=False, frames=False) == home / "x.mp4"



# ltx vae encode|decode|roundtrip and ltx info took "~/v.mp4" (quoted, or a --opt=~ value) literally: exit 6
# "~/v.mp4: no such file"; a quoted -o "~/x" made a folder named "~" here
def test_vae_encode_reads_and_writes_a_quoted_tilde_path(home: Path) -> None:
    enc = ltx("vae", "encode", "~/v.mp4", "-m", "tiny", "-o", "~/v.latents.safetensors", "-q")
    assert enc.exit_code == 0, enc.stderr
    assert (home / "v.latents.safetensors").is_file() and not Path("~").exists()


def test_vae_decode_reads_and_writes_a_quoted_tilde_path(home: Path) -> None:
    from ltxcli import autoencode

    # latents of the tiny VAE's width [1, 16, f=2, h=2, w=3] -> 9 frames of 96x64
    autoencode.save_latents(home / "z.safetensors", torch.zeros(1, 16, 2, 2, 3), {"model": "tiny"})
    dec = ltx("vae", "decode", "~/z.safetensors", "-o", "~/d.mp4", "-q")
    assert dec.exit_code == 0, dec.stderr
    assert media.read_record(home / "d.mp4")["source"] == str(home / "z.safetensors") and not Path("~").exists()


def test_vae_roundtrip_and_info_read_a_quoted_tilde_path(home: Path) -> None:
    assert ltx("vae", "roundtrip", "~/v.mp4", "-m", "tiny", "--json", "-q").exit_code == 0
    info = ltx("info", "~/v.mp4", "--json")
    assert info.exit_code == 0, info.stderr
    assert json_lines(info.stdout)[0]["stream"]["num_frames"] == 9


def test_latents_out_with_a_tilde_is_written_and_reported_under_home(home: Path) -> None:
    # --latents-out=~/l.safetensors (no shell expands it) wrote ./~/l.safetensors and reported "~/l.safetensors"
    result = ltx("generate", "a cat", *SMALL, "--latents-out=~/l.safetensors")
    assert result.exit_code == 0, result.stderr
    assert json_lines(result.stdout)[0]["latents_path"] == str(home / "l.safetensors")
    assert (home / "l.safetensors").is_file() and not Path("~").exists()


# the JSON of ltx vae and ltx info reported a quoted "~/x" as written, "~/x": a path no script can open, unlike
# ltx generate's, which names the file written ($HOME/x)
def test_vae_and_info_json_report_a_quoted_tilde_path_as_the_file_used(home: Path) -> None:
    def obj(*args: str) -> dict[str, Any]:
        r = ltx(*args, "--json", "-q")
        assert r.exit_code == 0, r.stderr
        (o,) = json_lines(r.stdout)
        return o

    assert obj("vae", "encode", "~/v.mp4", "-m", "tiny", "-o", "~/l.safetensors")["path"] == str(home / "l.safetensors")
    assert obj("vae", "decode", "~/l.safetensors", "-o", "~/d.mp4")["path"] == str(home / "d.mp4")
    trip = obj("vae", "roundtrip", "~/v.mp4", "-m", "tiny", "-o", "~/r.mp4")
    assert (trip["source"], trip["output"]) == (str(home / "v.mp4"), str(home / "r.mp4"))
    assert ltx("info", "~/d.mp4", "--json").stdout.startswith(json.dumps({"path": str(home / "d.mp4")})[:-1])
