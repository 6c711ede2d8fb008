"""Checkpoint registry (``weights.toml``), downloads from the Hugging Face Hub and sha256 verification.

Where weights live:

* by default in the huggingface_hub cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``), shared with every other Hub tool;
* in a plain folder when ``weights_dir=`` is given or ``LTX_WEIGHTS_DIR`` is set: files go to
  ``<folder>/<owner>/<repo>/<path in repo>`` (one sub-folder per repo, so two repos never collide).

The environment (``HF_HUB_CACHE``, ``HF_HOME``, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, ``LTX_WEIGHTS_DIR``) is read on
every call, not when huggingface_hub was imported; ``HF_TOKEN`` is read by huggingface_hub itself on every request.

Downloads of LFS files (the checkpoints) survive an interruption (Ctrl-C, crash, dropped connection): the bytes go
to a fixed partial file (``blobs/<sha256>.incomplete`` in the Hub cache, ``<file>.partial`` in a plain folder) that
the next pull continues with an HTTP Range request; ``status`` reports such an entry as ``partial`` and ``rm`` deletes
the partial files too.

Every pulled file is checked against the hash the Hub publishes for it (sha256 for LFS files, the git blob id for
small files) or against a hash pinned in ``weights.toml``. A verified file is recorded in ``ltx-verified.json``
(in the plain folder, or in ``$XDG_CACHE_HOME/ltxcli`` for the Hub cache) keyed by its real path, size and mtime,
so pulling again does not re-hash it; :func:`verify` always re-hashes.

All failures are :class:`WeightsError` subclasses with a one-line message and an ``exit_code`` for the CLI.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "ChecksumError",
    "FileStatus",
    "PlannedFile",
    "ProgressEvent",
    "Registry",
    "RegistryError",
    "UnknownWeightsError",
    "UnsafePathError",
    "VerifiedFile",
    "WeightFile",
    "WeightsEntry",
    "WeightsError",
    "WeightsLocation",
    "WeightsStatus",
    "WeightsUnavailableError",
    "hub_cache_dir",
    "is_offline",
    "load_registry",
    "parse_registry",
    "path",
    "plan",
    "pull",
    "resolve",
    "rm",
    "safe_relpath",
    "status",
    "verify",
    "weights_location",
]

Kind = Literal["model", "upsampler", "text_encoder", "builtin"]
KINDS: tuple[str, ...] = ("model", "upsampler", "text_encoder", "builtin")
PRECISIONS: tuple[str, ...] = ("float8_e4m3fn",)
REGISTRY_SCHEMA = 1
VERIFIED_FILE = "ltx-verified.json"
_CHUNK = 8 * 1024 * 1024
PARTIAL_SUFFIX = ".partial"  # plain folder: ``<file>.partial`` while downloading (Hub cache: ``blobs/<sha256>.incomplete``)
_RETRIES = 5  # attempts in a row that receive no byte before a download gives up


# --------------------------------------------------------------------------------------------- errors


class WeightsError(Exception):
    """Base class: a one-line, actionable message. ``exit_code`` is what the CLI should exit with."""

    exit_code: int = 1


class UnknownWeightsError(WeightsError, LookupError):
    """A name that is not in the registry."""

    exit_code = 2


class RegistryError(WeightsError, ValueError):
    """``weights.toml`` is malformed."""


class UnsafePathError(WeightsError, ValueError):
    """A file name (from ``weights.toml`` or a Hub listing) that could escape the weights folder."""


class WeightsUnavailableError(WeightsError):
    """Weights are not on disk and cannot be downloaded now (offline, no network, gated, missing on the Hub)."""

    exit_code = 3


class ChecksumError(WeightsError):
    """A file's size or hash differs from the expected one."""

    exit_code = 4

    def __init__(self, message: str, *, path: Path | None = None, expected: str | None = None,
                 actual: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.expected = expected
        self.actual = actual


# ----------------------------------------------------------------------------------- path validation

_DRIVE = re.compile(r"^[A-Za-z]:")
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
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


def _join(base: Path, rel: str) -> Path:
    """``base / rel`` after validating ``rel``, with a lexical containment check as a second guard."""
    safe_relpath(rel)
    out = base.joinpath(*rel.split("/"))
    b, o = os.path.abspath(base), os.path.abspath(out)
    if os.path.commonpath([b, o]) != b or o == b:
        raise UnsafePathError(f"unsafe file name {rel!r}: resolves outside {base}")
    return out


def _check_repo_id(repo: str, where: str) -> str:
    parts = repo.split("/") if isinstance(repo, str) else []
    if (len(parts) != 2 or not all(_REPO_PART.match(p) for p in parts)
            or any(p.endswith(".") or ".." in p or "--" in p for p in parts)):
        raise RegistryError(f"{where}: invalid repo id {repo!r} (expected 'owner/name')")
    return repo


def _matches(rel: str, allow: tuple[str, ...], ignore: tuple[str, ...]) -> bool:
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
        return bool(self.allow) and _matches(rel, self.allow, self.ignore)

    @property
    def hub_revision(self) -> str:
        return self.revision or "main"


_ENTRY_KEYS = {"kind", "description", "repo", "revision", "files", "allow", "ignore", "preset", "precision",
               "text_encoder", "upsampler", "default"}


def _parse_file(raw: Any, where: str) -> WeightFile:
    if isinstance(raw, str):
        raw = {"path": raw}
    if not isinstance(raw, Mapping) or set(raw) - {"path", "sha256", "size"} or "path" not in raw:
        raise RegistryError(f"{where}: a file is a path string or {{ path, sha256?, size? }}, got {raw!r}")
    sha, size = raw.get("sha256"), raw.get("size")
    if sha is not None and not (isinstance(sha, str) and _SHA256.match(sha)):
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
        _check_repo_id(repo or "", where)
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
    return WeightsEntry(name=name, kind=kind, description=description, repo=repo, revision=revision, files=files,
                        allow=allow, ignore=ignore, preset=preset, precision=precision, text_encoder=text_encoder,
                        upsampler=upsampler, default=default)


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


# ------------------------------------------------------------------------------------------ location


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) as set now, or as huggingface_hub saw it at import."""
    if _truthy(os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")):
        return True
    hf_constants = sys.modules.get("huggingface_hub.constants")
    return bool(getattr(hf_constants, "HF_HUB_OFFLINE", False))


def _expand(p: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(p)))


def hub_cache_dir() -> Path:
    """The huggingface_hub cache folder, from the environment as it is now (same precedence as huggingface_hub)."""
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return _expand(env["HF_HUB_CACHE"])
    if env.get("HUGGINGFACE_HUB_CACHE"):
        return _expand(env["HUGGINGFACE_HUB_CACHE"])
    if env.get("HF_HOME"):
        return _expand(env["HF_HOME"]) / "hub"
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return _expand(xdg) / "huggingface" / "hub"


def _endpoint() -> str | None:
    ep = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    return ep or None


@dataclass(frozen=True)
class WeightsLocation:
    """Where weights are stored: the Hub cache or a plain folder."""

    kind: Literal["hub-cache", "folder"]
    root: Path

    def __str__(self) -> str:
        return f"{self.root} ({self.kind})"

    def repo_dir(self, repo: str) -> Path:
        """Plain folder: ``root/owner/name``. Hub cache: ``root/models--owner--name``."""
        _check_repo_id(repo, "repo")
        if self.kind == "folder":
            owner, name = repo.split("/")
            return self.root / owner / name
        return self.root / ("models--" + repo.replace("/", "--"))

    @property
    def verified_file(self) -> Path:
        if self.kind == "folder":
            return self.root / VERIFIED_FILE
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return _expand(xdg) / "ltxcli" / VERIFIED_FILE


def weights_location(weights_dir: str | os.PathLike[str] | None = None) -> WeightsLocation:
    """``weights_dir`` if given, else ``LTX_WEIGHTS_DIR`` if set, else the huggingface_hub cache."""
    if weights_dir is None and os.environ.get("LTX_WEIGHTS_DIR"):
        weights_dir = os.environ["LTX_WEIGHTS_DIR"]
    if weights_dir is not None:
        return WeightsLocation("folder", _expand(os.fspath(weights_dir)).absolute())
    return WeightsLocation("hub-cache", hub_cache_dir().absolute())


# --------------------------------------------------------------------------------- verified records


class _Store:
    """``ltx-verified.json``: verified files keyed by real path (+ size, mtime) and per-entry manifests.

    Every change re-reads the file and replaces it atomically, so concurrent pulls lose at most a record
    (which only costs a re-hash later), never the file.
    """

    def __init__(self, loc: WeightsLocation) -> None:
        self.path = loc.verified_file
        self.root_key = str(loc.root)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        for key in ("files", "entries", "partials"):
            if not isinstance(data.get(key), dict):
                data[key] = {}
        data["version"] = 1
        return data

    @contextlib.contextmanager
    def _edit(self) -> Iterator[dict[str, Any]]:
        data = self._read()
        yield data
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)

    def lookup(self, file: Path, *, unchanged: bool = True) -> dict[str, Any] | None:
        """The record of ``file``; with ``unchanged`` only if size and mtime are still those recorded."""
        real = os.path.realpath(file)
        rec = self._read()["files"].get(real)
        if not isinstance(rec, dict):
            return None
        if not unchanged:
            return rec
        try:
            st = os.stat(real)
        except OSError:
            return None
        return rec if rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns else None

    def record(self, file: Path, *, algo: str, digest: str, repo: str, rel: str) -> None:
        real = os.path.realpath(file)
        st = os.stat(real)
        with self._edit() as data:
            data["files"][real] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, algo: digest, "repo": repo,
                                   "path": rel, "verified_at": int(time.time())}

    def forget(self, reals: list[str]) -> None:
        if not reals:
            return
        with self._edit() as data:
            for r in reals:
                data["files"].pop(r, None)

    def partials(self, repo: str) -> dict[str, str]:
        """Partial downloads of ``repo`` noted by :meth:`note_partial`: absolute path -> repo-relative file name."""
        out = {}
        for key, rec in self._read()["partials"].items():
            if isinstance(rec, dict) and rec.get("repo") == repo and isinstance(rec.get("path"), str):
                out[key] = rec["path"]
        return out

    def note_partial(self, partial: Path, *, repo: str, rel: str, present: bool) -> None:
        """Remember (``present``) or forget a partial download, so status and rm find it without network."""
        key = os.path.abspath(partial)
        with self._edit() as data:
            if present:
                data["partials"][key] = {"repo": repo, "path": rel}
            else:
                data["partials"].pop(key, None)

    def manifest(self, name: str) -> dict[str, Any] | None:
        m = self._read()["entries"].get(self.root_key, {}).get(name)
        return m if isinstance(m, dict) else None

    def set_manifest(self, name: str, manifest: dict[str, Any] | None) -> None:
        with self._edit() as data:
            per_root = data["entries"].setdefault(self.root_key, {})
            if manifest is None:
                per_root.pop(name, None)
            else:
                per_root[name] = manifest


# ------------------------------------------------------------------------------------------- hashing


def _hash_file(path: Path, algo: Literal["sha256", "git_sha1"], on_bytes: Callable[[int], None] | None = None) -> str:
    """sha256 of the content, or the git blob id (sha1 of ``b"blob <size>\\0" + content``)."""
    h = hashlib.sha256() if algo == "sha256" else hashlib.sha1()
    with open(path, "rb") as f:
        if algo == "git_sha1":
            h.update(b"blob %d\0" % os.fstat(f.fileno()).st_size)
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return h.hexdigest()


@dataclass(frozen=True)
class _Expected:
    """What a file must hash to. ``source``: 'weights.toml', 'hub', 'record' or 'cache'."""

    algo: Literal["sha256", "git_sha1"]
    digest: str
    size: int | None
    source: str


# ------------------------------------------------------------------------------------------ progress


@dataclass(frozen=True)
class ProgressEvent:
    """Passed to a ``progress`` callable: ``done`` of ``total`` bytes of ``file`` downloaded or hashed."""

    phase: Literal["download", "verify"]
    file: str
    done: int
    total: int | None


ProgressArg = bool | Callable[[ProgressEvent], None] | None


class _Reporter:
    """Progress for one pull: rich bars on stderr, a callback, or nothing.

    ``progress=None`` shows bars when stderr is a terminal and ``HF_HUB_DISABLE_PROGRESS_BARS`` is not set.
    """

    def __init__(self, progress: ProgressArg) -> None:
        self.callback: Callable[[ProgressEvent], None] | None = progress if callable(progress) else None
        if progress is None:
            progress = sys.stderr.isatty() and not _truthy(os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"))
        self.bars = progress is True
        self.current = ""
        self._rich: Any = None

    def __enter__(self) -> _Reporter:
        if self.bars:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._rich = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), TimeRemainingColumn(),
                                  console=Console(stderr=True), transient=True)
            self._rich.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def task(self, phase: Literal["download", "verify"], file: str, total: int | None, initial: int = 0) -> _Task:
        return _Task(self, phase, file, total, initial)

    def tqdm_class(self) -> type:
        """A tqdm-compatible class for huggingface_hub's ``tqdm_class=`` that reports to this reporter."""
        reporter = self

        class _HubBar:
            # huggingface_hub constructs it with desc/total/initial/unit/... and calls update, close,
            # set_postfix_str, and for Xet downloads update_transfer (network bytes, not shown) and `total =`.
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                initial = int(kwargs.get("initial") or 0)
                self.n = initial
                self._task = reporter.task("download", reporter.current or str(kwargs.get("desc") or ""),
                                           kwargs.get("total"), initial)

            @property
            def total(self) -> int | None:
                return self._task.total

            @total.setter
            def total(self, value: int | None) -> None:
                self._task.set_total(value)

            @property
            def format_dict(self) -> dict[str, Any]:
                return {"n": self.n, "total": self.total, "rate": None}

            def update(self, n: float | None = 1) -> None:
                n = int(n or 0)
                self.n += n
                self._task.advance(n)

            def update_transfer(self, n: float | None = 1) -> None:
                pass

            def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
                pass

            set_transfer_postfix_str = set_description = set_description_str = set_postfix_str

            def refresh(self, *args: Any, **kwargs: Any) -> None:
                pass

            def close(self) -> None:
                self._task.close()

            def __enter__(self) -> _HubBar:
                return self

            def __exit__(self, *exc: object) -> None:
                self.close()

        return _HubBar


class _Task:
    def __init__(self, reporter: _Reporter, phase: Literal["download", "verify"], file: str, total: int | None,
                 initial: int) -> None:
        self.reporter, self.phase, self.file, self.total, self.done = reporter, phase, file, total, initial
        self._id = None
        if reporter._rich is not None:
            label = f"{'downloading' if phase == 'download' else 'verifying'} {Path(file).name}"
            self._id = reporter._rich.add_task(label, total=total, completed=initial)
        self._emit()

    def _emit(self) -> None:
        if self.reporter.callback is not None:
            self.reporter.callback(ProgressEvent(self.phase, self.file, self.done, self.total))

    def advance(self, n: int) -> None:
        self.done += n
        if self._id is not None and self.reporter._rich is not None:
            self.reporter._rich.update(self._id, completed=self.done)
        self._emit()

    def restart(self, done: int) -> None:
        """Count from ``done`` again (a download that restarts from zero or from what is on disk)."""
        if done == self.done:
            return
        self.done = done
        if self._id is not None and self.reporter._rich is not None:
            self.reporter._rich.update(self._id, completed=done)
        self._emit()

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self._id is not None and self.reporter._rich is not None:
            self.reporter._rich.update(self._id, total=total)

    def close(self) -> None:
        if self._id is not None and self.reporter._rich is not None:
            self.reporter._rich.remove_task(self._id)
            self._id = None


# ------------------------------------------------------------------------------- Hub error mapping


def _offline_message(entry: WeightsEntry, loc: WeightsLocation) -> str:
    return (f"{entry.name} is not downloaded (looked in {loc}) and HF_HUB_OFFLINE=1 is set: "
            f"run `ltx weights pull {entry.name}` with network access")


def _map_hub_error(exc: BaseException, entry: WeightsEntry, loc: WeightsLocation, rel: str | None = None
                   ) -> WeightsError | None:
    """One-line :class:`WeightsError` for a huggingface_hub / network exception, or None if it is not one."""
    from huggingface_hub import errors as hfe

    repo, rev = entry.repo, entry.hub_revision
    what = f"{rel} of {repo}" if rel else repo
    remote_missing = getattr(hfe, "RemoteEntryNotFoundError", None)
    if isinstance(exc, hfe.GatedRepoError):
        return WeightsUnavailableError(
            f"{repo} is gated: accept its conditions at https://huggingface.co/{repo} while logged in, "
            "then run `hf auth login` or set HF_TOKEN")
    if isinstance(exc, hfe.RevisionNotFoundError):
        return WeightsUnavailableError(f"revision {rev!r} of {repo} does not exist on the Hub (weights.toml may be out of date)")
    if isinstance(exc, hfe.RepositoryNotFoundError):
        return WeightsUnavailableError(
            f"{repo} was not found on the Hub or is not accessible with your token (check HF_TOKEN / `hf auth login`)")
    if (remote_missing is not None and isinstance(exc, remote_missing)) or (
            isinstance(exc, hfe.EntryNotFoundError) and not isinstance(exc, hfe.LocalEntryNotFoundError)):
        return WeightsUnavailableError(f"{what} does not exist at revision {rev!r} (weights.toml may be out of date)")
    if isinstance(exc, (hfe.OfflineModeIsEnabled, hfe.LocalEntryNotFoundError)):
        if is_offline() or isinstance(exc, hfe.OfflineModeIsEnabled):
            return WeightsUnavailableError(_offline_message(entry, loc))
        return WeightsUnavailableError(
            f"cannot reach the Hub ({_endpoint() or 'https://huggingface.co'}) and {entry.name} is not downloaded: "
            "check your connection or HF_ENDPOINT")
    if isinstance(exc, hfe.HfHubHTTPError):
        code = getattr(getattr(exc, "response", None), "status_code", None)
        if code == 401:
            return WeightsUnavailableError(f"the Hub refused the token for {repo} (HTTP 401): check HF_TOKEN / `hf auth login`")
        if code == 429:
            return WeightsUnavailableError(f"the Hub is rate-limiting downloads of {repo} (HTTP 429): retry later, logged in")
        return WeightsUnavailableError(f"the Hub answered HTTP {code} for {what}: retry later")
    if isinstance(exc, OSError) and "Consistency check failed" in str(exc):
        return ChecksumError(f"the download of {what} was cut short (size differs from the Hub's): "
                             f"run `ltx weights pull {entry.name}` again")
    mod = type(exc).__module__.split(".")[0]
    if mod in {"httpx", "httpx2", "httpcore", "requests", "urllib3"} or isinstance(exc, (ConnectionError, TimeoutError)):
        return WeightsUnavailableError(
            f"cannot reach the Hub ({_endpoint() or 'https://huggingface.co'}) to download {entry.name}: "
            f"check your connection or HF_ENDPOINT ({type(exc).__name__})")
    return None


# --------------------------------------------------------------------------------- local lookups


def _walk(root: Path) -> list[str]:
    """Repo-relative paths of the files under ``root`` (symlinks followed), without huggingface_hub's ``.cache``."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != ".cache"]
        for fn in filenames:
            p = os.path.join(dirpath, fn)
            if os.path.isfile(p) and not fn.endswith((".incomplete", PARTIAL_SUFFIX)):
                rel = os.path.relpath(p, root).replace(os.sep, "/")
                out.append(rel)
    return sorted(out)


def _snapshot_dirs(loc: WeightsLocation, entry: WeightsEntry, prefer: str | None = None) -> list[Path]:
    """Hub cache snapshots of the entry's repo: the preferred commit, then the one its revision points to,
    then the others, newest first."""
    assert entry.repo is not None
    snaps = loc.repo_dir(entry.repo) / "snapshots"
    if not snaps.is_dir():
        return []
    ordered: list[Path] = []
    rev = entry.hub_revision
    commits = [prefer] if prefer else []
    if _SHA1.match(rev):
        commits.append(rev)
    else:
        with contextlib.suppress(OSError, UnsafePathError):
            ref = _join(loc.repo_dir(entry.repo) / "refs", rev).read_text().strip()
            commits.append(ref)
    for c in commits:
        if c and _SHA1.match(c) and (snaps / c).is_dir() and snaps / c not in ordered:
            ordered.append(snaps / c)
    others = sorted((d for d in snaps.iterdir() if d.is_dir() and _SHA1.match(d.name) and d not in ordered),
                    key=lambda d: d.stat().st_mtime, reverse=True)
    return ordered + others


@dataclass(frozen=True)
class _Local:
    """What is on disk for an entry: root folder (snapshot or repo folder) and each expected file."""

    root: Path | None
    files: tuple[tuple[str, Path | None], ...]

    @property
    def present(self) -> list[tuple[str, Path]]:
        return [(r, p) for r, p in self.files if p is not None]

    @property
    def missing(self) -> list[str]:
        return [r for r, p in self.files if p is None]


def _local(entry: WeightsEntry, loc: WeightsLocation, store: _Store) -> _Local:
    assert entry.repo is not None
    manifest = store.manifest(entry.name)
    if manifest is not None and manifest.get("repo") != entry.repo:
        manifest = None
    wanted: list[str] | None = [f.path for f in entry.files] if entry.files else None
    if wanted is None and manifest is not None:
        listed = manifest.get("files")
        if isinstance(listed, list) and all(isinstance(x, str) for x in listed):
            wanted = [safe_relpath(x) for x in listed if entry.selects(x)]

    if loc.kind == "folder":
        roots = [loc.repo_dir(entry.repo)]
    else:
        roots = _snapshot_dirs(loc, entry, prefer=(manifest or {}).get("commit"))
    if wanted is not None:
        found: list[tuple[str, Path | None]] = []
        for rel in wanted:
            hit = next((p for p in (_join(r, rel) for r in roots) if p.is_file()), None)
            found.append((rel, hit))
        root = next((r for r in roots if any(p is not None and _inside(p, r) for _, p in found)), None)
        return _Local(root, tuple(found))
    # Without a file list (pattern entry, never fully pulled), a partly downloaded file still makes it incomplete.
    partly = sorted(_known_partials(entry, loc, store))
    for r in roots:
        rels = [x for x in _walk(r) if entry.selects(x)] if r.is_dir() else []
        if rels:
            return _Local(r, tuple((x, _join(r, x)) for x in rels) + tuple((x, None) for x in partly if x not in rels))
    return _Local(None, tuple((x, None) for x in partly))


def _inside(p: Path, root: Path) -> bool:
    a, b = os.path.abspath(p), os.path.abspath(root)
    return os.path.commonpath([a, b]) == b


# ---------------------------------------------------------------------------------- remote manifest


@dataclass(frozen=True)
class _RemoteFile:
    path: str
    size: int | None
    sha256: str | None
    blob_id: str | None


def _remote(entry: WeightsEntry, loc: WeightsLocation) -> tuple[str | None, list[_RemoteFile]]:
    """(commit, files) of the entry at its revision, from one ``model_info(files_metadata=True)`` call."""
    from huggingface_hub import HfApi

    from ltxcli import __version__

    assert entry.repo is not None
    api = HfApi(endpoint=_endpoint(), library_name="ltxcli", library_version=__version__)
    try:
        info = api.model_info(entry.repo, revision=entry.hub_revision, files_metadata=True)
    except Exception as e:
        mapped = _map_hub_error(e, entry, loc)
        if mapped is None:
            raise
        raise mapped from e
    siblings = {s.rfilename: s for s in (info.siblings or [])}
    if entry.files:
        names = [f.path for f in entry.files]
        absent = [n for n in names if n not in siblings]
        if absent:
            raise WeightsUnavailableError(
                f"{absent[0]} does not exist in {entry.repo} at revision {entry.hub_revision!r} "
                "(weights.toml may be out of date)")
    else:
        names = [n for n in siblings if _matches(n, entry.allow, entry.ignore)]
        for n in names:  # validate every Hub-listed name before anything is joined or downloaded
            safe_relpath(n, what=f"file name listed by the Hub for {entry.repo}")
        if not names:
            raise WeightsUnavailableError(
                f"no file of {entry.repo} at revision {entry.hub_revision!r} matches {list(entry.allow)}")
    out = []
    for n in sorted(names) if not entry.files else names:
        s = siblings[n]
        lfs = dict(s.lfs) if isinstance(s.lfs, Mapping) else vars(s.lfs) if s.lfs is not None else {}
        sha, size = lfs.get("sha256"), lfs.get("size", s.size)
        blob = s.blob_id if isinstance(s.blob_id, str) and _SHA1.match(s.blob_id) else None
        out.append(_RemoteFile(n, size if isinstance(size, int) else None,
                               sha if isinstance(sha, str) and _SHA256.match(sha) else None, blob))
    commit = info.sha if isinstance(info.sha, str) and _SHA1.match(info.sha) else None
    return commit, out


def _expected_for(entry: WeightsEntry, rel: str, remote: _RemoteFile | None) -> _Expected | None:
    pinned = next((f for f in entry.files if f.path == rel), None)
    if pinned is not None and pinned.sha256:
        return _Expected("sha256", pinned.sha256, pinned.size, "weights.toml")
    size = pinned.size if pinned is not None and pinned.size else (remote.size if remote else None)
    if remote is not None and remote.sha256:
        return _Expected("sha256", remote.sha256, size, "hub")
    if remote is not None and remote.blob_id:
        return _Expected("git_sha1", remote.blob_id, size, "hub")
    return None


def _expected_offline(entry: WeightsEntry, rel: str, local: Path, loc: WeightsLocation,
                      store: _Store) -> _Expected | None:
    """The best hash known without network: weights.toml, the Hub's hash recorded by the last pull, the Hub cache
    blob name, an earlier verification of the same path."""
    pinned = _expected_for(entry, rel, None)
    if pinned is not None:
        return pinned
    manifest = store.manifest(entry.name) or {}
    known = (manifest.get("hashes") or {}).get(rel) if manifest.get("repo") == entry.repo else None
    if (isinstance(known, list) and len(known) == 2 and known[0] in ("sha256", "git_sha1")
            and isinstance(known[1], str)):
        return _Expected(known[0], known[1], None, "record")
    if loc.kind == "hub-cache" and local.is_symlink():
        blob = Path(os.path.realpath(local))
        if blob.parent.name == "blobs" and _inside(blob, loc.repo_dir(entry.repo or "")):
            if _SHA256.match(blob.name):
                return _Expected("sha256", blob.name, None, "cache")
            if _SHA1.match(blob.name):
                return _Expected("git_sha1", blob.name, None, "cache")
    rec = store.lookup(local, unchanged=False)
    if rec is not None:
        for algo in ("sha256", "git_sha1"):
            if isinstance(rec.get(algo), str):
                return _Expected(algo, rec[algo], None, "record")  # type: ignore[arg-type]
    return None


def _check(local: Path, rel: str, exp: _Expected, entry: WeightsEntry, store: _Store, rep: _Reporter,
           *, trust_record: bool) -> str:
    """Hash ``local`` (unless an unchanged earlier verification says the same) and compare with ``exp``."""
    size = os.stat(local).st_size
    if exp.size is not None and size != exp.size:
        raise ChecksumError(
            f"{rel} of {entry.repo} is {size} bytes, expected {exp.size} ({exp.source})",
            path=local, expected=str(exp.size), actual=str(size))
    if trust_record:
        rec = store.lookup(local)
        if rec is not None and rec.get(exp.algo) == exp.digest:
            return exp.digest
    rep.current = rel
    task = rep.task("verify", rel, size)
    try:
        digest = _hash_file(local, exp.algo, task.advance)
    finally:
        task.close()
    if digest != exp.digest:
        label = "sha256" if exp.algo == "sha256" else "git blob id"
        raise ChecksumError(
            f"{rel} of {entry.repo}: {label} {digest} does not match {exp.digest} ({exp.source})",
            path=local, expected=exp.digest, actual=digest)
    store.record(local, algo=exp.algo, digest=digest, repo=entry.repo or "", rel=rel)
    return digest


def _delete_file(local: Path, entry: WeightsEntry, loc: WeightsLocation, store: _Store) -> None:
    """Remove one downloaded file (and, in the Hub cache, its blob) after a failed check."""
    assert entry.repo is not None
    repo_dir = loc.repo_dir(entry.repo)
    real = os.path.realpath(local)
    store.forget([real, os.path.abspath(local)])
    if local.is_symlink() or local.exists():
        local.unlink()
    if loc.kind == "hub-cache" and real != os.path.abspath(local) and _inside(Path(real), repo_dir / "blobs"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(real)


# ------------------------------------------------------------------------------- resumable downloads
#
# huggingface_hub (>= PR #4228) downloads into a temporary file unique to the process and deletes it on failure, so
# an interrupted multi-GB download starts from zero next time. LFS files (the checkpoints) are therefore fetched here
# into a fixed partial file that the next run continues with a Range request; small files still go through
# hf_hub_download.


def _partial_path(loc: WeightsLocation, entry: WeightsEntry, rf: _RemoteFile) -> Path:
    """Hub cache: ``blobs/<sha256>.incomplete`` (the name huggingface_hub gives a blob being written);
    plain folder: ``<file>.partial`` next to the file."""
    assert entry.repo is not None and rf.sha256 is not None
    if loc.kind == "hub-cache":
        return loc.repo_dir(entry.repo) / "blobs" / f"{rf.sha256}.incomplete"
    return _join(loc.repo_dir(entry.repo), rf.path + PARTIAL_SUFFIX)


def _known_partials(entry: WeightsEntry, loc: WeightsLocation, store: _Store) -> dict[str, Path]:
    """Partial downloads on disk of the entry's files: repo path -> partial file. No network."""
    assert entry.repo is not None
    repo_dir = loc.repo_dir(entry.repo)
    out: dict[str, Path] = {}
    for key, rel in store.partials(entry.repo).items():
        p = Path(key)
        if entry.selects(rel) and _inside(p, repo_dir) and p.is_file():
            out[rel] = p
    if loc.kind == "folder":
        for f in entry.files:
            p = _join(repo_dir, f.path + PARTIAL_SUFFIX)
            if p.is_file():
                out.setdefault(f.path, p)
    else:
        manifest = store.manifest(entry.name) or {}
        hashes = (manifest.get("hashes") or {}) if manifest.get("repo") == entry.repo else {}
        for f in entry.files:
            known = hashes.get(f.path)
            sha = f.sha256 or (known[1] if isinstance(known, list) and len(known) == 2 and known[0] == "sha256"
                               else None)
            if isinstance(sha, str) and _SHA256.match(sha):
                p = repo_dir / "blobs" / f"{sha}.incomplete"
                if p.is_file():
                    out.setdefault(f.path, p)
    return out


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"^\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*$", value or "")
    return int(m.group(1)) if m else None


def _http_download(url: str, partial: Path, headers: dict[str, str], size: int | None, task: _Task) -> None:
    """Download ``url`` into ``partial``, continuing what it already holds with ``Range: bytes=<size>-``.

    206 with the expected ``Content-Range``: append; 200 (Range ignored) or any other start: rewrite from zero.
    A dropped connection is continued in the same call; after ``_RETRIES`` attempts in a row without a byte the
    transport error is raised. Bytes are written before progress is reported, so an interrupt from a progress
    callback leaves everything reported on disk.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session, hf_raise_for_status

    session = get_session()  # huggingface_hub's client (proxies, SSL settings): httpx2 in 2.x, httpx in 1.x
    client_module = sys.modules.get(type(session).__module__.split(".")[0])
    transport_error: type[BaseException] = getattr(client_module, "TransportError", OSError)
    failures = 0
    while True:
        have = partial.stat().st_size if partial.is_file() else 0
        if size is not None and have > size:  # not a prefix of this file
            partial.unlink()
            have = 0
        task.restart(have)
        if size is not None and have == size:
            return
        req = {**headers, "Accept-Encoding": "identity"}
        if have:
            req["Range"] = f"bytes={have}-"
        received = 0
        try:
            with session.stream("GET", url, headers=req, follow_redirects=True,
                                timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT) as r:
                if have and r.status_code == 416:  # the partial file is no prefix the server knows
                    partial.unlink()
                    failures += 1
                    if failures > _RETRIES:
                        hf_raise_for_status(r)
                    continue
                hf_raise_for_status(r)
                append = have > 0 and r.status_code == 206
                if append and _content_range_start(r.headers.get("Content-Range")) != have:
                    partial.unlink()  # a range we did not ask for: start again without one
                    failures += 1
                    if failures > _RETRIES:
                        raise ChecksumError(f"the server answered a range request for {task.file} with another range")
                    continue
                if not append:
                    task.restart(0)
                with open(partial, "ab" if append else "wb") as f:
                    for chunk in r.iter_bytes():  # as received: a dropped connection loses no byte
                        if chunk:
                            f.write(chunk)
                            received += len(chunk)
                            task.advance(len(chunk))
        except (transport_error, ConnectionError, TimeoutError):
            failures = 0 if received else failures + 1
            if failures >= _RETRIES:
                raise
            if not received:
                time.sleep(min(0.5 * failures, 4.0))
            continue
        done = partial.stat().st_size
        if size is None or done >= size:
            return  # a longer file fails the size check that follows
        failures = 0 if received else failures + 1  # the body ended early without an error
        if failures >= _RETRIES:
            return  # the size check reports it


def _fetch_lfs(entry: WeightsEntry, rf: _RemoteFile, commit: str | None, loc: WeightsLocation, store: _Store,
               rep: _Reporter) -> Path:
    """Download one LFS file resumably (see :func:`_http_download`); return its path as hf_hub_download would:
    Hub cache ``snapshots/<commit>/<path>`` -> ``../../blobs/<sha256>``, plain folder ``<folder>/<path>``.
    Not hashed here: the caller checks the result."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import WeakFileLock, build_hf_headers

    from ltxcli import __version__

    assert entry.repo is not None and rf.sha256 is not None
    repo_dir = loc.repo_dir(entry.repo)
    if loc.kind == "hub-cache":
        assert commit is not None
        dest = _join(repo_dir / "snapshots" / commit, rf.path)
        final = repo_dir / "blobs" / rf.sha256
        lock = loc.root / ".locks" / repo_dir.name / f"{rf.sha256}.lock"  # huggingface_hub's lock for this blob
    else:
        dest = final = _join(repo_dir, rf.path)
        lock = _join(repo_dir / ".cache" / "huggingface" / "download", rf.path + ".lock")
    if dest.is_file():
        return dest
    partial = _partial_path(loc, entry, rf)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(lock):
        if not final.is_file():
            partial.parent.mkdir(parents=True, exist_ok=True)
            store.note_partial(partial, repo=entry.repo, rel=rf.path, present=True)
            url = hf_hub_url(entry.repo, rf.path, revision=commit or entry.hub_revision, endpoint=_endpoint())
            headers = build_hf_headers(library_name="ltxcli", library_version=__version__)
            rep.current = rf.path
            task = rep.task("download", rf.path, rf.size, partial.stat().st_size if partial.is_file() else 0)
            try:
                _http_download(url, partial, headers, rf.size, task)
            finally:
                task.close()
            os.replace(partial, final)
            store.note_partial(partial, repo=entry.repo, rel=rf.path, present=False)
        if final != dest and not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_symlink():  # dangling
                dest.unlink()
            os.symlink(os.path.relpath(final, dest.parent), dest)  # relative, as huggingface_hub links it
    return dest


def _rm_partials(entry: WeightsEntry, loc: WeightsLocation, store: _Store) -> list[Path]:
    """Delete the partial downloads of ``entry``'s files."""
    removed = []
    for p in _known_partials(entry, loc, store).values():
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
        store.note_partial(p, repo=entry.repo or "", rel="", present=False)
        if entry.repo is not None:
            _prune_empty(p.parent, loc.repo_dir(entry.repo))
    return removed


# ------------------------------------------------------------------------------------------- public


@dataclass(frozen=True)
class PlannedFile:
    """One file of a pull: where it goes, its size on the Hub, whether it is already on disk."""

    path: str
    local_path: Path
    size: int | None
    present: bool


def _registry(registry: Registry | None) -> Registry:
    return registry if registry is not None else load_registry()


def _write_ref(loc: WeightsLocation, entry: WeightsEntry, commit: str) -> None:
    """Point ``refs/<branch>`` at ``commit`` as ``snapshot_download`` does, so other Hub tools find the files
    offline (downloads are pinned to the commit whose hashes were listed, which alone writes no ref)."""
    rev = entry.hub_revision
    if _SHA1.match(rev) or entry.repo is None:
        return
    ref = _join(loc.repo_dir(entry.repo) / "refs", rev)
    with contextlib.suppress(OSError):
        if ref.is_file() and ref.read_text().strip() == commit:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
        tmp.write_text(commit)
        os.replace(tmp, ref)


def plan(name: str, *, weights_dir: str | os.PathLike[str] | None = None,
         registry: Registry | None = None) -> list[PlannedFile]:
    """What :func:`pull` would do, without downloading (asks the Hub for the file list unless offline)."""
    entry = _registry(registry)[name]
    if entry.is_builtin:
        return []
    loc = weights_location(weights_dir)
    store = _Store(loc)
    if is_offline():
        local = _local(entry, loc, store)
        if local.missing or not local.files:
            raise WeightsUnavailableError(_offline_message(entry, loc))
        return [PlannedFile(r, p, os.stat(p).st_size, True) for r, p in local.present]
    commit, remote = _remote(entry, loc)
    assert entry.repo is not None
    out = []
    for rf in remote:
        if loc.kind == "folder":
            dest = _join(loc.repo_dir(entry.repo), rf.path)
            present = dest.is_file()
        else:
            dest = _join(loc.repo_dir(entry.repo) / "snapshots" / (commit or entry.hub_revision), rf.path)
            blob = loc.repo_dir(entry.repo) / "blobs" / (rf.sha256 or rf.blob_id or "-")
            present = dest.is_file() or blob.is_file()
        out.append(PlannedFile(rf.path, dest, rf.size, present))
    return out


def pull(name: str, *, weights_dir: str | os.PathLike[str] | None = None, progress: ProgressArg = None,
         dry_run: bool = False, registry: Registry | None = None) -> list[Path]:
    """Download ``name`` (only that entry: see :meth:`Registry.closure` for its dependencies) and verify it.

    Returns the local paths of its files. Files already present and recorded as verified are not re-hashed.
    A file whose hash does not match is deleted and :class:`ChecksumError` is raised; nothing unverified is
    recorded. Offline (``HF_HUB_OFFLINE``), only files already on disk are used. ``dry_run`` returns where the
    files would go without downloading. ``progress``: True/False for rich bars on stderr, a callable receiving
    :class:`ProgressEvent`, or None for bars when stderr is a terminal.

    Interrupted downloads resume: LFS files (the checkpoints) are written to a fixed partial file (Hub cache:
    ``blobs/<sha256>.incomplete``, plain folder: ``<file>.partial``) that the next pull continues with a Range
    request; a resumed file is hashed like any other and deleted if it does not match. Small files go through
    ``hf_hub_download`` (resumed within a call only).
    """
    entry = _registry(registry)[name]
    if entry.is_builtin:
        return []
    assert entry.repo is not None
    if dry_run:
        return [p.local_path for p in plan(name, weights_dir=weights_dir, registry=registry)]
    loc = weights_location(weights_dir)
    store = _Store(loc)

    if is_offline():
        return _pull_local(entry, loc, store, progress, reason=_offline_message(entry, loc))
    try:
        commit, remote = _remote(entry, loc)
    except WeightsUnavailableError as e:
        # The Hub cannot be asked (no network, token refused, ...): what is on disk will do, as huggingface_hub
        # itself falls back to its cache.
        return _pull_local(entry, loc, store, progress, reason=str(e))

    from huggingface_hub import hf_hub_download

    from ltxcli import __version__

    paths: list[Path] = []
    hashes: dict[str, list[str]] = {}
    with _Reporter(progress) as rep:
        for rf in remote:
            exp = _expected_for(entry, rf.path, rf)
            rep.current = rf.path
            kwargs: dict[str, Any] = {
                "revision": commit or entry.hub_revision, "endpoint": _endpoint(), "library_name": "ltxcli",
                "library_version": __version__, "tqdm_class": rep.tqdm_class(),
            }
            if loc.kind == "folder":
                kwargs.update(local_dir=loc.repo_dir(entry.repo), cache_dir=hub_cache_dir())
                dest = _join(loc.repo_dir(entry.repo), rf.path)
            else:
                kwargs.update(cache_dir=loc.root)
                dest = _join(loc.repo_dir(entry.repo) / "snapshots" / (commit or "-"), rf.path)
            if exp is None:  # the Hub published no hash for it (not seen on huggingface.co)
                raise ChecksumError(f"{rf.path} of {entry.repo}: the Hub lists no hash for it, cannot verify")
            # A copy already on disk that fails the check is deleted and downloaded once more.
            present_before = dest.is_file() or (
                loc.kind == "hub-cache" and (loc.repo_dir(entry.repo) / "blobs" / (rf.sha256 or rf.blob_id or "-")).is_file())
            own = rf.sha256 is not None and (loc.kind == "folder" or commit is not None)
            for attempt in (1, 2):
                try:
                    if own:
                        local = _fetch_lfs(entry, rf, commit, loc, store, rep)
                    else:
                        local = Path(hf_hub_download(entry.repo, rf.path, **kwargs))
                except Exception as e:
                    mapped = _map_hub_error(e, entry, loc, rf.path)
                    if mapped is None:
                        raise
                    raise mapped from e
                if loc.kind == "folder" and os.path.abspath(local) != os.path.abspath(dest):
                    raise UnsafePathError(f"{rf.path}: huggingface_hub wrote {local}, expected {dest}")
                try:
                    _check(local, rf.path, exp, entry, store, rep, trust_record=True)
                    break
                except ChecksumError as e:
                    _delete_file(local, entry, loc, store)
                    if present_before and attempt == 1:
                        continue
                    raise ChecksumError(f"{e} - the file was deleted; run `ltx weights pull {entry.name}` again",
                                        path=local, expected=e.expected, actual=e.actual) from None
            hashes[rf.path] = [exp.algo, exp.digest]
            paths.append(local)
    if loc.kind == "hub-cache" and commit:
        _write_ref(loc, entry, commit)
    store.set_manifest(entry.name, {"repo": entry.repo, "revision": entry.hub_revision, "commit": commit,
                                    "files": [rf.path for rf in remote], "hashes": hashes})
    return paths


def _pull_local(entry: WeightsEntry, loc: WeightsLocation, store: _Store, progress: ProgressArg,
                reason: str) -> list[Path]:
    """Pull without network: every file must be on disk; check what can be checked from local knowledge."""
    local = _local(entry, loc, store)
    if local.missing or not local.files:
        raise WeightsUnavailableError(reason)
    with _Reporter(progress) as rep:
        for rel, p in local.present:
            exp = _expected_offline(entry, rel, p, loc, store)
            if exp is None:
                continue
            try:
                _check(p, rel, exp, entry, store, rep, trust_record=True)
            except ChecksumError as e:  # kept: without network it cannot be replaced now
                raise ChecksumError(f"{e}: run `ltx weights pull {entry.name}` with network access to replace it",
                                    path=p, expected=e.expected, actual=e.actual) from None
    return [p for _, p in local.present]


def path(name: str, *, weights_dir: str | os.PathLike[str] | None = None,
         registry: Registry | None = None) -> Path | None:
    """Local path of ``name`` if it is fully on disk, else None. Single-file entries give the file, pattern
    entries (the text encoder) the folder holding ``text_encoder/`` and ``tokenizer/``. Never downloads."""
    entry = _registry(registry)[name]
    if entry.is_builtin:
        return None
    loc = weights_location(weights_dir)
    local = _local(entry, loc, _Store(loc))
    if local.missing or not local.files:
        return None
    if entry.is_folder:
        return local.root
    return local.present[0][1] if len(local.files) == 1 else local.root


def resolve(name: str, *, weights_dir: str | os.PathLike[str] | None = None,
            registry: Registry | None = None) -> Path:
    """Like :func:`path` but raises :class:`WeightsUnavailableError` when the weights are not on disk."""
    entry = _registry(registry)[name]
    if entry.is_builtin:
        raise WeightsError(f"{name} is built in: it has no files to resolve")
    p = path(name, weights_dir=weights_dir, registry=registry)
    if p is None:
        loc = weights_location(weights_dir)
        if is_offline():
            raise WeightsUnavailableError(_offline_message(entry, loc))
        raise WeightsUnavailableError(f"{name} is not downloaded (looked in {loc}): run `ltx weights pull {name}`")
    return p


def _size_or_none(p: Path) -> int | None:
    try:
        return os.stat(p).st_size
    except OSError:
        return None


@dataclass(frozen=True)
class FileStatus:
    path: str
    local_path: Path | None  # None while missing or partly downloaded
    size: int | None  # on disk (a partial download: the bytes downloaded so far)
    verified: bool  # recorded as verified and unchanged since


@dataclass(frozen=True)
class WeightsStatus:
    name: str
    kind: str
    state: Literal["downloaded", "partial", "missing", "builtin"]
    location: WeightsLocation
    size_on_disk: int
    files: tuple[FileStatus, ...] = field(default_factory=tuple)


def status(name: str, *, weights_dir: str | os.PathLike[str] | None = None,
           registry: Registry | None = None) -> WeightsStatus:
    """downloaded / partial / missing (builtin for built-in entries) and the size on disk. No network, no hashing."""
    entry = _registry(registry)[name]
    loc = weights_location(weights_dir)
    if entry.is_builtin:
        return WeightsStatus(name, entry.kind, "builtin", loc, 0)
    store = _Store(loc)
    local = _local(entry, loc, store)
    partials = _known_partials(entry, loc, store)
    files = []
    for rel, p in local.files:
        if p is None and rel in partials:  # size: bytes downloaded so far
            files.append(FileStatus(rel, None, _size_or_none(partials.pop(rel)), False))
            continue
        size = os.stat(p).st_size if p is not None else None
        files.append(FileStatus(rel, p, size, p is not None and store.lookup(p) is not None))
    listed = {f.path for f in files}
    files.extend(FileStatus(rel, None, _size_or_none(p), False) for rel, p in partials.items() if rel not in listed)
    total = sum(f.size or 0 for f in files)
    n_present = sum(f.local_path is not None for f in files)
    state: Literal["downloaded", "partial", "missing"]
    if n_present == len(files) and files:
        state = "downloaded"
    elif n_present or any(f.size for f in files):
        state = "partial"
    else:
        state = "missing"
    return WeightsStatus(name, entry.kind, state, loc, total, tuple(files))


@dataclass(frozen=True)
class VerifiedFile:
    path: str
    local_path: Path
    digest: str | None  # None: nothing known to check against
    source: str | None  # where the expected hash came from: weights.toml, hub, cache, record


def verify(name: str, *, weights_dir: str | os.PathLike[str] | None = None, progress: ProgressArg = None,
           registry: Registry | None = None) -> list[VerifiedFile]:
    """Re-hash every file of ``name`` and compare with weights.toml, else the Hub cache blob name or an earlier
    verification, else (online) the Hub. Raises :class:`ChecksumError` listing mismatches (files are kept)."""
    entry = _registry(registry)[name]
    if entry.is_builtin:
        return []
    loc = weights_location(weights_dir)
    store = _Store(loc)
    local = _local(entry, loc, store)
    if local.missing or not local.files:
        if is_offline():
            raise WeightsUnavailableError(_offline_message(entry, loc))
        raise WeightsUnavailableError(f"{name} is not downloaded (looked in {loc}): run `ltx weights pull {name}`")
    remote: dict[str, _RemoteFile] | None = None
    out: list[VerifiedFile] = []
    bad: list[str] = []
    with _Reporter(progress) as rep:
        for rel, p in local.present:
            exp = _expected_offline(entry, rel, p, loc, store)
            if exp is None and not is_offline():
                if remote is None:
                    remote = {rf.path: rf for rf in _remote(entry, loc)[1]}
                exp = _expected_for(entry, rel, remote.get(rel))
            if exp is None:
                out.append(VerifiedFile(rel, p, None, None))
                continue
            try:
                digest = _check(p, rel, exp, entry, store, rep, trust_record=False)
            except ChecksumError as e:
                store.forget([os.path.realpath(p)])
                bad.append(str(e))
                continue
            out.append(VerifiedFile(rel, p, digest, exp.source))
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ChecksumError(f"{bad[0]}{more}: run `ltx weights rm {name}` then `ltx weights pull {name}`")
    return out


def rm(name: str, *, weights_dir: str | os.PathLike[str] | None = None,
       registry: Registry | None = None) -> list[Path]:
    """Delete the files of ``name`` only (other entries sharing the repo are kept), partial downloads included.
    Returns what was removed."""
    entry = _registry(registry)[name]
    if entry.is_builtin:
        return []
    assert entry.repo is not None
    loc = weights_location(weights_dir)
    store = _Store(loc)
    removed = _rm_partials(entry, loc, store)
    removed += _rm_folder(entry, loc, store) if loc.kind == "folder" else _rm_cache(entry, loc, store)
    store.set_manifest(entry.name, None)
    return removed


def _prune_empty(start: Path, stop: Path) -> None:
    d = start
    while _inside(d, stop) and os.path.abspath(d) != os.path.abspath(stop):
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent


def _rm_folder(entry: WeightsEntry, loc: WeightsLocation, store: _Store) -> list[Path]:
    assert entry.repo is not None
    repo_dir = loc.repo_dir(entry.repo)
    if not repo_dir.is_dir():
        return []
    rels = [f.path for f in entry.files] if entry.files else [x for x in _walk(repo_dir) if entry.selects(x)]
    removed: list[Path] = []
    meta_root = repo_dir / ".cache" / "huggingface" / "download"
    for rel in rels:
        p = _join(repo_dir, rel)
        if p.is_file() or p.is_symlink():
            store.forget([os.path.realpath(p), os.path.abspath(p)])
            p.unlink()
            removed.append(p)
            _prune_empty(p.parent, repo_dir)
        for suffix in (".metadata", ".lock"):
            meta = _join(meta_root, rel + suffix)
            if meta.is_file():
                meta.unlink()
                _prune_empty(meta.parent, repo_dir)
    _prune_empty(repo_dir, loc.root)
    return removed


def _rm_cache(entry: WeightsEntry, loc: WeightsLocation, store: _Store) -> list[Path]:
    """Hub cache: revisions holding only this entry's files go through huggingface_hub's delete strategy
    (which also drops their refs); in shared revisions only this entry's snapshot links are removed, then
    the blobs no snapshot links to any more."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    assert entry.repo is not None
    repo_dir = loc.repo_dir(entry.repo)

    def scan() -> Any:
        try:
            info = scan_cache_dir(loc.root)
        except CacheNotFound:
            return None, None
        repo = next((r for r in info.repos if r.repo_id == entry.repo and r.repo_type == "model"), None)
        return info, repo

    removed: list[Path] = []
    info, repo = scan()
    if repo is None:
        return removed
    whole = []
    for rev in repo.revisions:
        rels = {f.file_path.relative_to(rev.snapshot_path).as_posix() for f in rev.files}
        if rels and all(entry.selects(r) for r in rels):
            whole.append(rev)
    if whole:
        for rev in whole:
            store.forget([os.path.realpath(f.file_path) for f in rev.files])
            removed.extend(f.file_path for f in rev.files)
        info.delete_revisions(*(rev.commit_hash for rev in whole)).execute()
        info, repo = scan()
    if repo is None:
        return removed
    blobs: set[str] = set()
    for rev in repo.revisions:
        for f in rev.files:
            rel = f.file_path.relative_to(rev.snapshot_path).as_posix()
            if entry.selects(rel):
                blob = os.path.realpath(f.file_path)
                store.forget([blob])
                f.file_path.unlink()
                removed.append(f.file_path)
                _prune_empty(f.file_path.parent, rev.snapshot_path)
                if _inside(Path(blob), repo_dir / "blobs"):
                    blobs.add(blob)
    still_used = {os.path.realpath(os.path.join(d, fn))
                  for d, _, fns in os.walk(repo_dir / "snapshots") for fn in fns}
    for blob in blobs - still_used:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(blob)
    return removed
