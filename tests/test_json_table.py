"""README's table of what each command prints with ``--json``, checked against what the commands print.

The table is parsed, not copied: a key the README lists that the command does not print (or prints in another
order), or a key it prints that the README does not list, fails here. Its form: top-level keys in backticks, in
the order printed, ``?`` after one printed only sometimes, alternatives (a skipped item, a dry run) after ``;``;
a key's parenthesis lists its own keys (exactly, unless it says ``...``) or its values (quoted); ``the run (...)``
(ltx bench) names some of the keys printed before the first listed one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import cli_harness
import pytest
import torch
from cli_harness import enter_cli_env, json_lines, ltx, memoised_loader

from ltxcli import media

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--model", "tiny", "--height", "64", "--width", "96", "--num-frames", "9", "--steps", "1", "--seed", "3"]

_cached_load = memoised_loader()
hub = cli_harness.hub


@pytest.fixture(autouse=True)
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return enter_cli_env(tmp_path, monkeypatch, _cached_load)


def _table() -> dict[str, str]:
    """README's rows: each command named in the first cell -> the keys cell."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("What each command prints with `--json`")
    rows: dict[str, str] = {}
    lines = text[start:].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| `"))
    for line in lines[first:]:
        if not line.startswith("| `"):
            break
        commands, _per, keys = line.strip().strip("|").split(" | ")
        for command in re.findall(r"`([a-z0-9 ]+)`", commands):
            rows[command] = keys
    return rows


def _groups(cell: str) -> tuple[str, list[tuple[str, str]]]:
    """``cell`` with its parentheses taken out, and each taken-out group with the text just before it."""
    groups, out, depth, start = [], [], 0, 0
    for i, ch in enumerate(cell):
        if ch == "(":
            if depth == 0:
                start = i
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                groups.append(("".join(out), cell[start + 1:i]))
        elif depth == 0:
            out.append(ch)
    return "".join(out), groups


def _names(text: str) -> list[tuple[str, bool]]:
    """The backticked key names of ``text`` and whether each is marked ``?`` (a quoted value is no name)."""
    return [(m[1], m[2] == "?") for m in re.finditer(r"`([a-z_]+)`(\??)", text)]


def _check_keys(obj: dict[str, Any], listed: list[tuple[str, bool]], *, exact: bool, where: str) -> None:
    shown = list(obj)
    names = [k for k, _ in listed]
    if exact:  # nothing unlisted, in the listed order
        assert shown == [k for k in names if k in shown], (where, shown, names)
    else:  # the listed ones, in order, among others
        assert [k for k in shown if k in names] == [k for k in names if k in shown], (where, shown, names)
    missing = [k for k, optional in listed if not optional and k not in shown]
    assert not missing, (where, missing, shown)


def _check_nested(obj: dict[str, Any], cell: str, where: str) -> None:
    """Each ``key (...)`` group that names keys: the keys of ``obj[key]`` (a dict, or each dict of a list)."""
    _, groups = _groups(cell)
    for before, group in groups:
        key = re.search(r"`([a-z_]+)`\??\s*$", before)
        if key is None or key[1] not in obj or obj[key[1]] is None:
            continue
        value = obj[key[1]]
        items = value if isinstance(value, list) else [value]
        head = re.match(r"\s*((?:`[a-z_]+`, )+`[a-z_]+`): (.*)$", group, re.S)
        if head:  # `a`, `b`: `x`, `y`: the keys of obj[key] and, of each of them, its own keys
            listed, inner = _names(head[1]), _names(head[2])
        else:
            listed, inner = _part_names(group), None
        if not listed:
            continue  # values or words, no keys
        for item in items:
            if not isinstance(item, dict):
                continue
            _check_keys(item, listed, exact="..." not in group, where=f"{where}.{key[1]}")
            if inner is not None:
                for name, _ in listed:
                    _check_keys(item[name], inner, exact=True, where=f"{where}.{key[1]}.{name}")


def _part_names(group: str) -> list[tuple[str, bool]]:
    """A group's key names, part by part (``;``): a part ``\\`key\\`: values`` names one key; a part that starts
    ``a video's`` names keys a video alone has (optional)."""
    listed: list[tuple[str, bool]] = []
    for part in group.split(";"):
        names = _names(part.split(":")[0]) if re.match(r"\s*(a video's )?`[a-z_]+`: ", part) else _names(part)
        listed += [(k, opt or part.strip().startswith("a video's")) for k, opt in names]
    return listed


def check_row(command: str, obj: dict[str, Any], alternative: int = 0) -> None:
    """``obj`` (one JSON line of ``command``) holds the keys README's row lists (``alternative``: after ``;``)."""
    cell = _table()[command]
    flat, _ = _groups(cell)
    alternatives = [alt for alt in flat.split(";") if _names(alt)]
    alt = alternatives[alternative]
    listed = _names(alt)
    shown = obj
    if alt.lstrip().startswith("the run"):  # ltx bench: the run's keys first, some of them named in the group
        run = _groups(cell)[1][0][1]
        _check_keys(obj, _names(run), exact=False, where=f"{command} (the run)")
        first = list(obj).index(listed[0][0])
        shown = dict(list(obj.items())[first:])
    _check_keys(shown, listed, exact=True, where=command)
    _check_nested(obj, cell, command)


def _one(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, result.stderr
    (obj,) = json_lines(result.stdout)
    return obj


def _clip(path: str = "clip.mp4") -> str:
    media.write_video(Path(path), torch.rand(9, 64, 96, 3, generator=torch.Generator().manual_seed(0)), 24)
    return path


def test_the_parser_reads_the_table() -> None:
    """The premise: every command the table names, and the keys the parser takes from a row."""
    rows = _table()
    assert set(rows) == {"generate", "i2v", "v2v", "extend", "info", "prompt", "doctor", "bench", "vae encode",
                         "vae decode", "vae roundtrip", "weights list", "weights pull", "weights verify",
                         "weights path", "weights rm"}
    assert _names(_groups(rows["weights path"])[0]) == [("name", False), ("path", False)]
    with pytest.raises(AssertionError):
        check_row("weights path", {"path": "p", "name": "n"})  # another order
    with pytest.raises(AssertionError):
        check_row("weights path", {"name": "n", "path": "p", "size": 1})  # a key not listed


def test_generate_and_its_skipped_item() -> None:
    check_row("generate", _one(ltx("generate", "a cat", *SMALL, "-o", "a.mp4", "--json")))
    check_row("generate", _one(ltx("generate", "a cat", *SMALL, "-o", "b.mp4", "--latents-out", "b.safetensors",
                                   "--json")))
    check_row("generate", _one(ltx("generate", "a cat", *SMALL, "-o", "a.mp4", "--json", "--skip-existing")), 1)


def test_i2v_v2v_extend() -> None:
    clip = _clip()
    check_row("i2v", _one(ltx("i2v", clip, "a cat", *SMALL, "-o", "i.mp4", "--json")))
    check_row("v2v", _one(ltx("v2v", clip, "a cat", *SMALL, "--steps", "2", "-o", "v.mp4", "--json")))
    extend = [a for a in SMALL if a not in ("--num-frames", "9")]
    check_row("extend", _one(ltx("extend", clip, "a cat", *extend, "--frames", "8", "-o", "e.mp4", "--json")))


def test_info_and_prompt() -> None:
    ltx("generate", "a cat", *SMALL, "-o", "a.mp4", "-q")
    check_row("info", _one(ltx("info", "a.mp4", "--json")))
    media.write_image("still.png", torch.rand(64, 96, 3))
    check_row("info", _one(ltx("info", "still.png", "--json")))
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
