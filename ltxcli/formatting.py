"""Quantities as people read them, records as JSON and the commands' help examples, shared by the library's
reports (:mod:`ltxcli.diagnose`) and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shlex
from fractions import Fraction
from pathlib import Path
from typing import Any


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines too) as one space: a message that stays one line."""
    return " ".join(str(text).split())


def shell_word(name: str | os.PathLike[str]) -> str:
    """``name`` as one word of a command a message suggests, ready to copy and paste: quoted where it holds spaces,
    quotes or other shell characters (:func:`shlex.quote`), after ``./`` where it starts with ``-`` (an option)."""
    text = os.fspath(name)
    return shlex.quote(f"./{text}" if text.startswith("-") else text)


def number_text(value: float | Fraction) -> str:
    """A number as the user typed it: a float option parses ``1001`` as 1001.0, shown ``1001`` (not a huge float's
    digits: 1e300 stays 1e+300; nan and inf as themselves), any other value as ``str`` gives it."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def text_lines(text: str) -> list[str]:
    """The lines of a text file as an editor numbers them: split at LF, CRLF and CR only (``str.splitlines`` also
    splits at U+2028, U+0085 and form feeds, which a prompt or a JSON string may hold as they are)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def human_bytes(n: int | None) -> str:
    """Decimal units with one decimal (``1.5 GB``), whole bytes below 1 kB; ``?`` for unknown (None)."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    module = type(obj).__module__
    if module.startswith("torch"):
        return str(obj).removeprefix("torch.")
    return str(obj)


def _finite(obj: Any) -> Any:
    """JSON has no inf/NaN: they become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# a lone surrogate: how Python carries a byte that is not UTF-8 in a path or argument (b"\xff" -> "\udcff", PEP 383)
_SURROGATE = re.compile("[\ud800-\udfff]")


def escape_surrogates(text: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) with every lone surrogate (a non-UTF-8 byte of a path,
    surrogate-escaped) as its ``\\udcXX`` escape: written raw it would be that byte, and the text no longer UTF-8;
    escaped, it is valid JSON and ``os.fsencode(json.loads(text)["path"])`` gives the path's bytes back."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def to_json(obj: Any) -> str:
    """One line of JSON for a record: paths, sets, dataclasses and torch dtypes/devices as plain values, inf/NaN
    as null, non-ASCII text kept, lone surrogates escaped (:func:`escape_surrogates`)."""
    return escape_surrogates(json.dumps(_finite(obj), default=_json_default, ensure_ascii=False, allow_nan=False))


def help_examples(command: str) -> list[tuple[str, str]]:
    """``(what it does, command line)`` pairs that end ``ltx COMMAND --help`` (``command``: "generate",
    "vae encode", "ltx" for the root), kept as data in ``ltxcli/cli/examples.toml``."""
    from importlib.resources import files

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    table = tomllib.loads(files("ltxcli.cli").joinpath("examples.toml").read_text(encoding="utf-8"))
    return list(table.get(command, {}).items())


def brief(value: Any) -> str:
    """``repr`` of a value, a tensor or array as its kind, shape and dtype instead of its numbers."""
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"<{type(value).__name__} {list(shape)} {str(dtype).removeprefix('torch.')}>"
    return repr(value)


def dataclass_repr(obj: Any) -> str:
    """A dataclass as ``Name(field=value, ...)`` with only the fields that differ from their defaults (a request
    has forty), tensors as :func:`brief` shows them."""
    shown = [f"{f.name}={brief(getattr(obj, f.name))}" for f in dataclasses.fields(obj)
             if f.repr and not _is_default(getattr(obj, f.name), f)]
    return f"{type(obj).__name__}({', '.join(shown)})"


def pipeline_repr(pipe: Any) -> str:
    """A :class:`~ltxcli.pipeline.Pipeline` as ``Pipeline(name, device=..., dtype=..., offload=..., loras=[...],
    upsampler=..., temporal_upsampler=...)``."""
    loras = [f"{spec.source}:{spec.scale:g}" for spec in pipe.lora_specs]
    parts = [f"{n}={getattr(pipe, n) is not None}" for n in ("upsampler", "temporal_upsampler")]
    return (f"Pipeline({pipe.name!r}, device={pipe.device}, dtype={str(pipe.dtype).removeprefix('torch.')}, "
            f"offload={pipe.offload.value!r}, loras={loras}, {', '.join(parts)})")


def _is_default(value: Any, f: dataclasses.Field[Any]) -> bool:
    if f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    elif f.default is not dataclasses.MISSING:
        default = f.default
    else:
        return False
    # never == on a tensor (elementwise); a tuple of another length compares False before its items
    return value is default or (getattr(value, "shape", None) is None and type(value) is type(default)
                                and value == default)


#: Request fields whose ltx option has another name (``ltx v2v --strength``): a check names a value as
#: ``name=value``, the same line from Python and ltx (tests/test_public_api.py) where the option is the field's name
#: with dashes (``frame_rate=5000`` for ``--frame-rate 5000``), else by the option's (tests/test_cli.py checks each).
CLI_NAMES = {"denoise_strength": "strength"}


def cli_wording(message: str) -> str:
    """A library message that starts with such a field (``denoise_strength=0.3 is below ...``) with the names of
    the options that set it (``strength=0.3 is below ...``, as ltx's own checks of ``--strength`` word it). Any
    other message is left as it is: one naming a ``--batch`` line (whose JSON keys are the field names) or a file."""
    first = re.match(r"(\w+)=", message)
    if first is None or first[1] not in CLI_NAMES:
        return message
    return re.sub(r"\b(\w+)=", lambda m: f"{CLI_NAMES.get(m[1], m[1])}=", message)
