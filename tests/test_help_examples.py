"""Every command's ``--help`` ends with two or three examples (issue 14, point 5), kept in
``ltxcli/cli/examples.toml``; each one is parsed here by the real command, so an example naming a removed option,
a missing argument or a bad value fails this test."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from ltxcli.cli import app
from ltxcli.formatting import help_examples

ROOT = typer.main.get_command(app)
REPO_ROOT = Path(__file__).resolve().parents[1]


def _commands(group: Any = ROOT, path: str = "") -> Iterator[tuple[str, Any]]:
    """``("vae encode", command)`` for every command and group under ``ltx`` (the root as "ltx")."""
    yield path or "ltx", group
    for name, cmd in getattr(group, "commands", {}).items():
        yield from _commands(cmd, f"{path} {name}".strip())


COMMANDS = dict(_commands())


def _parse(argv: list[str]) -> str:
    """Parse ``ltx ARGV`` as click would before running it (options, arguments, types, choices), without running
    it; returns the command path reached."""
    cmd, ctx, name, args, path = ROOT, None, "ltx", list(argv), []
    while True:
        ctx = cmd.make_context(name, args, parent=ctx)
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]  # a group's subcommand and its arguments
        if not hasattr(cmd, "commands") or not rest:
            return " ".join(path) or "ltx"
        name, cmd, args = cmd.resolve_command(ctx, rest)
        path.append(name)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_two_or_three_examples_that_parse(command: str) -> None:
    examples = help_examples(command)
    assert 2 <= len(examples) <= 3, (command, examples)
    for what, line in examples:
        argv = shlex.split(line)
        assert argv[0] == "ltx" and what, line
        reached = _parse(argv[1:])  # raises click's UsageError / BadParameter for an untrue example
        if command != "ltx":
            assert f"{reached} ".startswith(f"{command} "), (line, reached)  # a group: one of its commands


def test_examples_end_the_help(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "ltxcli", "extend", "--help"], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200", "PATH": "/usr/bin:/bin"},
                          check=True)
    tail = [line.strip() for line in proc.stdout.rstrip().splitlines()[-7:]]
    assert tail[0] == "Examples:" and tail[-1] == help_examples("extend")[-1][1]


def test_an_untrue_example_fails_to_parse() -> None:
    with pytest.raises(Exception, match="No such option"):
        _parse(shlex.split("generate 'a cat' --no-such-option 3"))
    with pytest.raises(Exception, match="Missing"):
        _parse(shlex.split("extend clip.mp4 'a cat'"))


def _readme_commands() -> list[str]:
    """Every ``ltx ...`` (or ``torchrun ... -m ltxcli ...``) line of README.md's bash blocks, comments, ``| ...``
    and the optional-flag brackets (``[--dry-run]``) taken off."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(re.sub(r"\[(--[a-z-]+)\]", r"\1", line), comments=True)
            module = [i for i in range(1, len(words)) if words[i - 1:i + 1] == ["-m", "ltxcli"]]
            if module:  # torchrun ... -m ltxcli ARGS
                words = ["ltx", *words[module[0] + 1:]]
            if words[:1] == ["ltx"]:
                out.append(shlex.join(words[:words.index("|")] if "|" in words else words))
    return out


def test_every_readme_command_parses() -> None:
    commands = _readme_commands()
    assert len(commands) > 40 and any(c.startswith("ltx generate --batch") for c in commands), commands
    for line in commands:
        try:
            _parse(shlex.split(line)[1:])  # raises click's UsageError / BadParameter for an untrue command
        except Exception as e:
            raise AssertionError(f"README: {line}: {e}") from e
