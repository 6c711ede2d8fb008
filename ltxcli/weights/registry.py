"""The checkpoint registry: ``weights.toml`` parsed and validated into :class:`Registry` (name -> entry).

Also the validation of every name that becomes a path (file names from ``weights.toml`` or from a Hub listing,
repo ids, revisions): the other modules join paths only through :func:`safe_join`.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from .errors import RegistryError, UnknownWeightsError, UnsafePathError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

Kind = Literal["model", "upsampler", "text_encoder", "depth", "builtin", "lora", "enhancer", "captioner"]
KINDS: tuple[str, ...] = ("model", "upsampler", "text_encoder", "depth", "builtin", "lora", "enhancer", "captioner")
PRECISIONS: tuple[str, ...] = ("float8_e4m3fn",)
REGISTRY_SCHEMA = 1

# ----------------------------------------------------------------------------------- path validation

_DRIVE = re.compile(r"^[A-Za-z]:")
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
SHA1_HEX = re.compile(r"^[0-9a-f]{40}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")

def safe_relpath(rel: str, *, what: str = "file name") -> str:
    """Return ``rel`` unchanged if it is a safe repo-relative path, else raise :class:`UnsafePathError`.

    Safe: non-empty, ``/``-separated, no absolute path, no ``..``/``.``/empty component, no backslash, no drive
    letter or other ``:`` (Windows alternate streams), no control character.
    """
    if not isinstance(rel, str) or not rel:
        raise UnsafePathError(f"unsafe {what} {rel!r}: empty or not a string")
    if (rel.startswith("/") or "\\" in rel or ":" in rel or _DRIVE.match(rel)
            or any(ord(c) < 32 or c == "\x7f" for c in rel)):
        raise UnsafePathError(f"unsafe {what} {rel!r}: must be a relative '/'-separated path")
    if any(part in ("", ".", "..") for part in rel.split("/")):
        raise UnsafePathError(f"unsafe {what} {rel!r}: empty, '.' or '..' path component")
    return rel


def safe_join(base: Path, rel: str) -> Path:
    """``base / rel`` after validating ``rel``, with a lexical containment check as a second guard."""
    safe_relpath(rel)
    out = base.joinpath(*rel.split("/"))
    b, o = os.path.abspath(base), os.path.abspath(out)
    if os.path.commonpath([b, o]) != b or o == b:
        raise UnsafePathError(f"unsafe file name {rel!r}: resolves outside {base}")
    return out


def check_repo_id(repo: str, where: str) -> str:
    parts = repo.split("/") if isinstance(repo, str) else []
    if (len(parts) != 2 or not all(_REPO_PART.match(p) for p in parts)
            or any(p.endswith(".") or ".." in p or "--" in p for p in parts)):
        raise RegistryError(f"{where}: invalid repo id {repo!r} (expected 'owner/name')")
    return repo


def matches(rel: str, allow: tuple[str, ...], ignore: tuple[str, ...]) -> bool:
    """fnmatch filter as huggingface_hub's ``allow_patterns``/``ignore_patterns`` (``*`` crosses ``/``)."""
    if allow and not any(fnmatch.fnmatchcase(rel, p) for p in allow):
        return False
    return not any(fnmatch.fnmatchcase(rel, p) for p in ignore)


# ------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class WeightFile:
    """One file of an entry. ``sha256``/``size`` only when pinned in ``weights.toml``."""

    path: str
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class WeightsEntry:
    """One ``[weights."<name>"]`` table of ``weights.toml``."""

    name: str
    kind: Kind
    description: str
    repo: str | None = None
    revision: str | None = None
    files: tuple[WeightFile, ...] = ()
    allow: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    preset: str | None = None
    precision: str | None = None
    text_encoder: str | None = None
    upsampler: str | None = None
    default: bool = False
    base: tuple[str, ...] = ()  # a LoRA: the models it is made for

    @property
    def is_builtin(self) -> bool:
        return self.kind == "builtin"

    @property
    def is_folder(self) -> bool:
        """True for pattern entries (text encoder): :func:`resolve` returns a folder, not a file."""
        return bool(self.allow)

    @property
    def requires(self) -> tuple[str, ...]:
        """Names of the other entries this one needs at run time (text encoder, upsampler)."""
        return tuple(n for n in (self.text_encoder, self.upsampler) if n)

    def selects(self, rel: str) -> bool:
        """Whether the repo path ``rel`` belongs to this entry."""
        if self.files:
            return any(f.path == rel for f in self.files)
        return bool(self.allow) and matches(rel, self.allow, self.ignore)

    @property
    def hub_revision(self) -> str:
        return self.revision or "main"


_ENTRY_KEYS = {"kind", "description", "repo", "revision", "files", "allow", "ignore", "preset", "precision",
               "text_encoder", "upsampler", "default", "base"}


def _parse_file(raw: Any, where: str) -> WeightFile:
    if isinstance(raw, str):
        raw = {"path": raw}
    if not isinstance(raw, Mapping) or set(raw) - {"path", "sha256", "size"} or "path" not in raw:
        raise RegistryError(f"{where}: a file is a path string or {{ path, sha256?, size? }}, got {raw!r}")
    sha, size = raw.get("sha256"), raw.get("size")
    if sha is not None and not (isinstance(sha, str) and SHA256_HEX.match(sha)):
        raise RegistryError(f"{where}: sha256 must be 64 lowercase hex digits, got {sha!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise RegistryError(f"{where}: size must be a positive integer, got {size!r}")
    return WeightFile(path=safe_relpath(raw["path"]), sha256=sha, size=size)


def _str_tuple(raw: Any, key: str, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise RegistryError(f"{where}: {key} must be a list of non-empty strings")
    return tuple(raw)


def _opt_str(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    v = raw.get(key)
    if v is not None and not (isinstance(v, str) and v):
        raise RegistryError(f"{where}: {key} must be a non-empty string")
    return v


def _parse_entry(name: str, raw: Any) -> WeightsEntry:
    where = f"weights.toml [weights.{name!r}]"
    if not _NAME.match(name):
        raise RegistryError(f"{where}: entry names are lowercase letters, digits, '.', '_' and '-'")
    if not isinstance(raw, Mapping):
        raise RegistryError(f"{where}: must be a table")
    unknown = set(raw) - _ENTRY_KEYS
    if unknown:
        raise RegistryError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise RegistryError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    description = _opt_str(raw, "description", where)
    if not description:
        raise RegistryError(f"{where}: description is required")
    default = raw.get("default", False)
    if not isinstance(default, bool):
        raise RegistryError(f"{where}: default must be true or false")
    if not isinstance(raw.get("files", []), list):
        raise RegistryError(f"{where}: files must be a list")
    files = tuple(_parse_file(f, where) for f in raw.get("files", []))
    allow, ignore = _str_tuple(raw.get("allow"), "allow", where), _str_tuple(raw.get("ignore"), "ignore", where)
    repo, revision = _opt_str(raw, "repo", where), _opt_str(raw, "revision", where)
    preset, precision = _opt_str(raw, "preset", where), _opt_str(raw, "precision", where)
    text_encoder, upsampler = _opt_str(raw, "text_encoder", where), _opt_str(raw, "upsampler", where)

    if kind == "builtin":
        if repo or revision or files or allow or ignore:
            raise RegistryError(f"{where}: builtin entries have no repo, revision or files")
    else:
        check_repo_id(repo or "", where)
        if bool(files) == bool(allow):
            raise RegistryError(f"{where}: give exactly one of files or allow")
        if ignore and not allow:
            raise RegistryError(f"{where}: ignore needs allow")
        if len({f.path for f in files}) != len(files):
            raise RegistryError(f"{where}: duplicate file")
    if revision is not None and (not _REVISION.match(revision) or ".." in revision):
        raise RegistryError(f"{where}: invalid revision {revision!r}")
    if kind in ("model", "builtin") and not preset:
        raise RegistryError(f"{where}: {kind} entries need a preset")
    if kind not in ("model", "builtin") and (preset or text_encoder or upsampler or precision):
        raise RegistryError(f"{where}: only models have preset, precision, text_encoder or upsampler")
    if precision is not None and precision not in PRECISIONS:
        raise RegistryError(f"{where}: precision must be one of {', '.join(PRECISIONS)}")
    if default and kind != "model":
        raise RegistryError(f"{where}: only a model can be the default")
    base = _str_tuple(raw.get("base"), "base", where)
    if (kind == "lora") != bool(base):
        raise RegistryError(f"{where}: a lora entry names the models it is made for in base (and only a lora does)")
    if kind == "lora" and len(files) != 1:
        raise RegistryError(f"{where}: a lora entry has exactly one file")
    return WeightsEntry(name=name, kind=kind, description=description, repo=repo, revision=revision, files=files,
                        allow=allow, ignore=ignore, preset=preset, precision=precision, text_encoder=text_encoder,
                        upsampler=upsampler, default=default, base=base)


@dataclass(frozen=True)
class Registry:
    """The parsed registry: name -> :class:`WeightsEntry`, in file order."""

    entries: Mapping[str, WeightsEntry]

    def __getitem__(self, name: str) -> WeightsEntry:
        try:
            return self.entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.entries), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UnknownWeightsError(
                f"unknown weights {name!r}{hint}: `ltx weights list` shows the known names") from None

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[WeightsEntry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def names(self) -> list[str]:
        return list(self.entries)

    @property
    def default(self) -> WeightsEntry:
        return next(e for e in self if e.default)

    def of_kind(self, kind: Kind) -> list[WeightsEntry]:
        return [e for e in self if e.kind == kind]

    def closure(self, name: str) -> list[WeightsEntry]:
        """``name`` followed by everything it needs to run (upsampler, text encoder)."""
        entry = self[name]
        return [entry, *(self[n] for n in (entry.upsampler, entry.text_encoder) if n)]


def parse_registry(data: Mapping[str, Any]) -> Registry:
    """Validate a parsed ``weights.toml`` document. Raises :class:`RegistryError` / :class:`UnsafePathError`."""
    if set(data) - {"schema", "weights"}:
        raise RegistryError(f"weights.toml: unknown top-level key(s) {', '.join(sorted(set(data) - {'schema', 'weights'}))}")
    if data.get("schema") != REGISTRY_SCHEMA:
        raise RegistryError(f"weights.toml: schema must be {REGISTRY_SCHEMA}, got {data.get('schema')!r}")
    raw = data.get("weights")
    if not isinstance(raw, Mapping) or not raw:
        raise RegistryError("weights.toml: no [weights.<name>] tables")
    entries = {name: _parse_entry(name, value) for name, value in raw.items()}
    for e in entries.values():
        for ref in e.base:
            if ref not in entries or entries[ref].kind != "model":
                raise RegistryError(f"weights.toml [weights.{e.name!r}]: base {ref!r} is not a model entry")
        for key, kind in (("text_encoder", "text_encoder"), ("upsampler", "upsampler")):
            ref = getattr(e, key)
            if ref is not None and (ref not in entries or entries[ref].kind != kind):
                raise RegistryError(f"weights.toml [weights.{e.name!r}]: {key} {ref!r} is not a {kind} entry")
    defaults = [e.name for e in entries.values() if e.default]
    if len(defaults) != 1:
        raise RegistryError(f"weights.toml: exactly one entry must have default = true, found {defaults or 'none'}")
    return Registry(MappingProxyType(entries))


def load_registry(source: str | os.PathLike[str] | None = None) -> Registry:
    """Parse the packaged ``ltxcli/weights.toml`` (or ``source``)."""
    try:
        if source is None:
            text = resources.files("ltxcli").joinpath("weights.toml").read_text(encoding="utf-8")
        else:
            text = Path(source).read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RegistryError(f"weights.toml is not valid TOML: {e}") from None
    except OSError as e:
        raise RegistryError(f"cannot read weights.toml: {e}") from None
    return parse_registry(data)




def registry_or_default(registry: Registry | None) -> Registry:
    """``registry``, or the packaged one when None (the ``registry=`` argument of every public function)."""
    return registry if registry is not None else load_registry()
