"""README's table of what each command prints with ``--json``, checked against what the commands print (the
table is parsed, not copied: tests/readme_json.py; --gpus batches: test_cli_parallel.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cli_harness
import pytest
import torch
from cli_harness import enter_cli_env, json_lines, ltx, memoised_loader
from readme_json import check_row, key_names, readme_table, split_groups

from ltxcli import media

SMALL = ["--model", "tiny", "--height", "64", "--width", "96", "--num-frames", "9", "--steps", "1", "--seed", "3"]

_cached_load = memoised_loader()
hub = cli_harness.hub


@pytest.fixture(autouse=True)
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return enter_cli_env(tmp_path, monkeypatch, _cached_load)


def _one(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, result.stderr
    (obj,) = json_lines(result.stdout)
    return obj


def _clip(path: str = "clip.mp4") -> str:
    media.write_video(Path(path), torch.rand(9, 64, 96, 3, generator=torch.Generator().manual_seed(0)), 24)
    return path


def test_the_parser_reads_the_table() -> None:
    """The premise: every command the table names, and the keys the parser takes from a row."""
    rows = readme_table()
    assert set(rows) == {"generate", "i2v", "v2v", "extend", "info", "prompt", "doctor", "bench", "vae encode",
                         "vae decode", "vae roundtrip", "weights list", "weights pull", "weights verify",
                         "weights path", "weights rm"}
    assert key_names(split_groups(rows["weights path"])[0]) == [("name", False), ("path", False)]
    with pytest.raises(AssertionError):
        check_row("weights path", {"path": "p", "name": "n"})  # another order
    with pytest.raises(AssertionError):
        check_row("weights path", {"name": "n", "path": "p", "size": 1})  # a key not listed


def test_generate() -> None:
    check_row("generate", _one(ltx("generate", "a cat", *SMALL, "-o", "b.mp4", "--latents-out", "b.safetensors",
                                   "--json")))


def test_a_skipped_item() -> None:
    Path("a.mp4").write_bytes(b"kept")  # no video of this request: kept and skipped, with a reason
    check_row("generate", _one(ltx("generate", "a cat", *SMALL, "-o", "a.mp4", "--json", "--skip-existing")), 1)


def test_i2v() -> None:
    check_row("i2v", _one(ltx("i2v", _clip(), "a cat", *SMALL, "-o", "i.mp4", "--json")))


def test_v2v() -> None:
    check_row("v2v", _one(ltx("v2v", _clip(), "a cat", *SMALL, "--steps", "2", "-o", "v.mp4", "--json")))


def test_extend() -> None:
    extend = [a for a in SMALL if a not in ("--num-frames", "9")]
    check_row("extend", _one(ltx("extend", _clip(), "a cat", *extend, "--frames", "8", "-o", "e.mp4", "--json")))


def test_info() -> None:
    ltx("generate", "a cat", *SMALL, "-o", "a.mp4", "-q")
    check_row("info", _one(ltx("info", "a.mp4", "--json")))
    media.write_image("still.png", torch.rand(64, 96, 3))
    check_row("info", _one(ltx("info", "still.png", "--json")))


def test_prompt() -> None:
    check_row("prompt", _one(ltx("prompt", "a cat", "--model", "tiny", "--enhancer-model", "tiny", "--json")))


def test_vae_commands() -> None:
    clip = _clip()
    check_row("vae encode", _one(ltx("vae", "encode", clip, "--model", "tiny", "-o", "c.safetensors", "--json")))
    check_row("vae decode", _one(ltx("vae", "decode", "c.safetensors", "-o", "d.mp4", "--json")))
    check_row("vae roundtrip", _one(ltx("vae", "roundtrip", clip, "--model", "tiny", "--json", "-o", "r.mp4")))


def test_bench() -> None:
    check_row("bench", _one(ltx("bench", "--random-weights", "--preset", "tiny", "--device", "cpu", "--gpu", "cpu",
                                "--height", "64", "--width", "64", "--num-frames", "9", "--steps", "1",
                                "--warmup", "0", "--repeats", "1", "--text-encoder", "skip", "--json", "-q")))


def test_doctor() -> None:
    check_row("doctor", _one(ltx("doctor", "--json")))


def test_weights_commands(hub: Any) -> None:
    name = "ltxv-spatial-upscaler-0.9.8"
    hub.add("Lightricks/LTX-Video", f"{name}.safetensors", os.urandom(64))
    check_row("weights pull", _one(ltx("weights", "pull", name, "--dry-run", "--json")), 1)
    check_row("weights pull", _one(ltx("weights", "pull", name, "--json")))
    rows = {o["name"]: o for o in json_lines(ltx("weights", "list", "--json").stdout)}
    check_row("weights list", rows[name])
    check_row("weights verify", _one(ltx("weights", "verify", name, "--json")))
    check_row("weights path", _one(ltx("weights", "path", name, "--json")))
    check_row("weights rm", _one(ltx("weights", "rm", name, "--json")))
