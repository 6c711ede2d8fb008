"""README's table of what each command prints with ``--json``, read as the keys each command's objects hold.

The table's form: top-level keys in backticks, in the order printed, ``?`` after one printed only sometimes,
alternatives (a skipped item, a dry run) after ``;``; a key's parenthesis lists its own keys (exactly, unless it
says ``...``) or its values (quoted); ``the run (...)`` (ltx bench) names some of the keys printed before the
first listed one. :func:`check_row` fails on a key the README lists that the command does not print (or prints
in another order), or a key it prints that the README does not list.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def readme_table() -> dict[str, str]:
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


def split_groups(cell: str) -> tuple[str, list[tuple[str, str]]]:
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


def key_names(text: str) -> list[tuple[str, bool]]:
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
    _, groups = split_groups(cell)
    for before, group in groups:
        key = re.search(r"`([a-z_]+)`\??\s*$", before)
        if key is None or key[1] not in obj or obj[key[1]] is None:
            continue
        value = obj[key[1]]
        items = value if isinstance(value, list) else [value]
        head = re.match(r"\s*((?:`[a-z_]+`, )+`[a-z_]+`): (.*)$", group, re.S)
        if head:  # `a`, `b`: `x`, `y`: the keys of obj[key] and, of each of them, its own keys
            listed, inner = key_names(head[1]), key_names(head[2])
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
        names = key_names(part.split(":")[0]) if re.match(r"\s*(a video's )?`[a-z_]+`: ", part) else key_names(part)
        listed += [(k, opt or part.strip().startswith("a video's")) for k, opt in names]
    return listed


def check_row(command: str, obj: dict[str, Any], alternative: int = 0) -> None:
    """``obj`` (one JSON line of ``command``) holds the keys README's row lists (``alternative``: after ``;``)."""
    cell = readme_table()[command]
    flat, _ = split_groups(cell)
    alternatives = [alt for alt in flat.split(";") if key_names(alt)]
    alt = alternatives[alternative]
    listed = key_names(alt)
    shown = obj
    if alt.lstrip().startswith("the run"):  # ltx bench: the run's keys first, some of them named in the group
        run = split_groups(cell)[1][0][1]
        _check_keys(obj, key_names(run), exact=False, where=f"{command} (the run)")
        first = list(obj).index(listed[0][0])
        shown = dict(list(obj.items())[first:])
    _check_keys(shown, listed, exact=True, where=command)
    _check_nested(obj, cell, command)
