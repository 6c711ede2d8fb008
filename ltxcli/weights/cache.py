"""Where weights live on disk and what is there: locations, verified-file records, local lookups and status.

* By default in the huggingface_hub cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``), shared with every other Hub tool: ``models--owner--name/snapshots/<commit>/...``
  linking to ``blobs/<hash>``.
* In a plain folder when ``weights_dir=`` is given or ``LTX_WEIGHTS_DIR`` is set: files go to
  ``<folder>/<owner>/<repo>/<path in repo>`` (one sub-folder per repo, so two repos never collide).

The environment (``HF_HUB_CACHE``, ``HF_HOME``, ``HF_HUB_OFFLINE``, ``LTX_WEIGHTS_DIR``) is read on every call, not
when huggingface_hub was imported.

A verified file is recorded in ``ltx-verified.json`` (in the plain folder, or in ``$XDG_CACHE_HOME/ltxcli`` for the
Hub cache) keyed by its real path, size and mtime, so pulling again does not re-hash it. The same file keeps, per
entry, the manifest of the last pull (commit, file list, the Hub's hashes) and the partial downloads in progress,
so status, path and rm need no network. Nothing here hashes or downloads.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import NoFilesError, UnsafePathError, WeightsUnavailableError
from .registry import (
    SHA1_HEX,
    SHA256_HEX,
    Registry,
    WeightsEntry,
    check_repo_id,
    registry_or_default,
    safe_join,
    safe_relpath,
)

VERIFIED_FILE = "ltx-verified.json"
PARTIAL_SUFFIX = ".partial"  # plain folder: ``<file>.partial`` while downloading (Hub cache: ``blobs/<sha256>.incomplete``)

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


def _xdg_cache() -> Path:
    return _expand(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"))


def hub_cache_dir() -> Path:
    """The huggingface_hub cache folder, from the environment as it is now (same precedence as huggingface_hub)."""
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return _expand(env["HF_HUB_CACHE"])
    if env.get("HUGGINGFACE_HUB_CACHE"):
        return _expand(env["HUGGINGFACE_HUB_CACHE"])
    if env.get("HF_HOME"):
        return _expand(env["HF_HOME"]) / "hub"
    return _xdg_cache() / "huggingface" / "hub"


@dataclass(frozen=True)
class WeightsLocation:
    """Where weights are stored: the Hub cache or a plain folder."""

    kind: Literal["hub-cache", "folder"]
    root: Path

    def __str__(self) -> str:
        return f"{self.root} ({self.kind})"

    def repo_dir(self, repo: str) -> Path:
        """Plain folder: ``root/owner/name``. Hub cache: ``root/models--owner--name``."""
        check_repo_id(repo, "repo")
        if self.kind == "folder":
            owner, name = repo.split("/")
            return self.root / owner / name
        return self.root / ("models--" + repo.replace("/", "--"))

    @property
    def verified_file(self) -> Path:
        if self.kind == "folder":
            return self.root / VERIFIED_FILE
        return _xdg_cache() / "ltxcli" / VERIFIED_FILE


def weights_location(weights_dir: str | os.PathLike[str] | None = None) -> WeightsLocation:
    """``weights_dir`` if given, else ``LTX_WEIGHTS_DIR`` if set, else the huggingface_hub cache."""
    if weights_dir is None and os.environ.get("LTX_WEIGHTS_DIR"):
        weights_dir = os.environ["LTX_WEIGHTS_DIR"]
    if weights_dir is not None:
        return WeightsLocation("folder", _expand(os.fspath(weights_dir)).absolute())
    return WeightsLocation("hub-cache", hub_cache_dir().absolute())


def folder_location(weights_dir: str | os.PathLike[str] | None = None) -> WeightsLocation:
    """:func:`weights_location` for writing into: a plain-folder location that is a file is a usage error (one
    line naming the option) rather than an OS error deep inside a download or a delete."""
    loc = weights_location(weights_dir)
    if loc.kind == "folder" and loc.root.is_file():
        raise ValueError(f"{loc.root} is a file, not a folder: give the weights folder to --weights-dir / "
                         "LTX_WEIGHTS_DIR")
    return loc


def offline_message(entry: WeightsEntry, loc: WeightsLocation) -> str:
    return (f"{entry.name} is not downloaded (looked in {loc}) and HF_HUB_OFFLINE=1 is set: "
            f"run `ltx weights pull {entry.name}` with network access")


def not_downloaded(entry: WeightsEntry, loc: WeightsLocation) -> WeightsUnavailableError:
    """The error for an entry that is not (fully) on disk, saying how to get it."""
    if is_offline():
        return WeightsUnavailableError(offline_message(entry, loc))
    return WeightsUnavailableError(
        f"{entry.name} is not downloaded (looked in {loc}): run `ltx weights pull {entry.name}`")


# --------------------------------------------------------------------------------- verified records


class Store:
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

    def manifest(self, entry: WeightsEntry) -> dict[str, Any]:
        """What the last pull of ``entry`` here recorded (commit, files, the Hub's hashes); empty when nothing
        was recorded or it was for another repo (``weights.toml`` changed since)."""
        m = self._read()["entries"].get(self.root_key, {}).get(entry.name)
        return m if isinstance(m, dict) and m.get("repo") == entry.repo else {}

    def pulled_hash(self, entry: WeightsEntry, rel: str) -> tuple[Literal["sha256", "git_sha1"], str] | None:
        """(algo, digest) the Hub published for ``rel`` at the last pull of ``entry``, if recorded."""
        known = (self.manifest(entry).get("hashes") or {}).get(rel)
        if (isinstance(known, list) and len(known) == 2 and known[0] in ("sha256", "git_sha1")
                and isinstance(known[1], str)):
            return known[0], known[1]
        return None

    def set_manifest(self, name: str, manifest: dict[str, Any] | None) -> None:
        with self._edit() as data:
            per_root = data["entries"].setdefault(self.root_key, {})
            if manifest is None:
                per_root.pop(name, None)
            else:
                per_root[name] = manifest


# --------------------------------------------------------------------------------- local lookups


def walk(root: Path) -> list[str]:
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
    if SHA1_HEX.match(rev):
        commits.append(rev)
    else:
        with contextlib.suppress(OSError, UnsafePathError):
            ref = safe_join(loc.repo_dir(entry.repo) / "refs", rev).read_text().strip()
            commits.append(ref)
    for c in commits:
        if c and SHA1_HEX.match(c) and (snaps / c).is_dir() and snaps / c not in ordered:
            ordered.append(snaps / c)
    others = sorted((d for d in snaps.iterdir() if d.is_dir() and SHA1_HEX.match(d.name) and d not in ordered),
                    key=lambda d: d.stat().st_mtime, reverse=True)
    return ordered + others


@dataclass(frozen=True)
class LocalFiles:
    """What is on disk for an entry: root folder (snapshot or repo folder), each expected file (None: not there)
    and the partial downloads of its files (repo path -> partial file)."""

    root: Path | None
    files: tuple[tuple[str, Path | None], ...]
    partials: dict[str, Path] = field(default_factory=dict)

    @property
    def present(self) -> list[tuple[str, Path]]:
        return [(r, p) for r, p in self.files if p is not None]

    @property
    def missing(self) -> list[str]:
        return [r for r, p in self.files if p is None]


def local_files(entry: WeightsEntry, loc: WeightsLocation, store: Store) -> LocalFiles:
    """Find ``entry``'s files on disk. The file list is ``weights.toml``'s, else the one the last pull recorded,
    else (a pattern entry never fully pulled) whatever matches its patterns. No network, no hashing."""
    assert entry.repo is not None
    manifest = store.manifest(entry)
    partials = known_partials(entry, loc, store)
    wanted: list[str] | None = [f.path for f in entry.files] if entry.files else None
    if wanted is None:
        listed = manifest.get("files")
        if isinstance(listed, list) and all(isinstance(x, str) for x in listed):
            wanted = [safe_relpath(x) for x in listed if entry.selects(x)]

    if loc.kind == "folder":
        roots = [loc.repo_dir(entry.repo)]
    else:
        roots = _snapshot_dirs(loc, entry, prefer=manifest.get("commit"))
    if wanted is not None:
        found: list[tuple[str, Path | None]] = []
        for rel in wanted:
            hit = next((p for p in (safe_join(r, rel) for r in roots) if p.is_file()), None)
            found.append((rel, hit))
        root = next((r for r in roots if any(p is not None and inside(p, r) for _, p in found)), None)
        return LocalFiles(root, tuple(found), partials)
    # Without a file list (pattern entry, never fully pulled), a partly downloaded file still makes it incomplete.
    partly = sorted(partials)
    for r in roots:
        rels = [x for x in walk(r) if entry.selects(x)] if r.is_dir() else []
        if rels:
            return LocalFiles(r, tuple((x, safe_join(r, x)) for x in rels)
                              + tuple((x, None) for x in partly if x not in rels), partials)
    return LocalFiles(None, tuple((x, None) for x in partly), partials)


def partial_path(loc: WeightsLocation, repo: str, rel: str, sha256: str | None) -> Path | None:
    """Where an interrupted download of ``rel`` is kept for the next pull to continue (see ``download.py``).

    Hub cache: ``blobs/<sha256>.incomplete``, the name huggingface_hub gives a blob being written (None when the
    file's sha256 is not known); plain folder: ``<file>.partial`` next to the file."""
    if loc.kind == "hub-cache":
        return loc.repo_dir(repo) / "blobs" / f"{sha256}.incomplete" if sha256 else None
    return safe_join(loc.repo_dir(repo), rel + PARTIAL_SUFFIX)


def known_partials(entry: WeightsEntry, loc: WeightsLocation, store: Store) -> dict[str, Path]:
    """Partial downloads on disk of the entry's files: repo path -> partial file. No network.

    Those the records noted, and for the files ``weights.toml`` lists, the partial file of their name (plain
    folder) or of their sha256 (pinned, or recorded by an earlier pull) in the Hub cache."""
    assert entry.repo is not None
    repo_dir = loc.repo_dir(entry.repo)
    out: dict[str, Path] = {}
    for key, rel in store.partials(entry.repo).items():
        p = Path(key)
        if entry.selects(rel) and inside(p, repo_dir) and p.is_file():
            out[rel] = p
    for f in entry.files:
        pulled = store.pulled_hash(entry, f.path)
        sha = f.sha256 or (pulled[1] if pulled is not None and pulled[0] == "sha256" else None)
        p = partial_path(loc, entry.repo, f.path, sha if sha and SHA256_HEX.match(sha) else None)
        if p is not None and p.is_file():
            out.setdefault(f.path, p)
    return out


def inside(p: Path, root: Path) -> bool:
    a, b = os.path.abspath(p), os.path.abspath(root)
    return os.path.commonpath([a, b]) == b



def path(name: str, *, weights_dir: str | os.PathLike[str] | None = None,
         registry: Registry | None = None) -> Path | None:
    """Local path of ``name`` if it is fully on disk, else None. Single-file entries give the file, pattern
    entries (the text encoder) the folder holding ``text_encoder/`` and ``tokenizer/``. Never downloads."""
    entry = registry_or_default(registry)[name]
    if entry.is_builtin:
        return None
    loc = weights_location(weights_dir)
    local = local_files(entry, loc, Store(loc))
    if local.missing or not local.files:
        return None
    if entry.is_folder:
        return local.root
    return local.present[0][1] if len(local.files) == 1 else local.root


def resolve(name: str, *, weights_dir: str | os.PathLike[str] | None = None,
            registry: Registry | None = None) -> Path:
    """Like :func:`path` but raises :class:`WeightsUnavailableError` when the weights are not on disk."""
    entry = registry_or_default(registry)[name]
    if entry.is_builtin:
        raise NoFilesError(f"{name} is built in: it has no files, so no path (it needs no download)")
    p = path(name, weights_dir=weights_dir, registry=registry)
    if p is None:
        raise not_downloaded(entry, weights_location(weights_dir))
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
    entry = registry_or_default(registry)[name]
    loc = weights_location(weights_dir)
    if entry.is_builtin:
        return WeightsStatus(name, entry.kind, "builtin", loc, 0)
    store = Store(loc)
    local = local_files(entry, loc, store)
    partials = dict(local.partials)
    pinned = {f.path: f.size for f in entry.files if f.size}
    files = []
    for rel, p in local.files:
        if p is None and rel in partials:  # size: bytes downloaded so far
            files.append(FileStatus(rel, None, _size_or_none(partials.pop(rel)), False))
            continue
        size = os.stat(p).st_size if p is not None else None
        if size is not None and rel in pinned and size != pinned[rel]:  # a truncated copy is not downloaded
            files.append(FileStatus(rel, None, size, False))
            continue
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


def status_record(name: str, *, weights_dir: str | os.PathLike[str] | None = None,
                  registry: Registry | None = None) -> dict[str, Any]:
    """The entry's registry facts and its :func:`status` as one plain record (``ltx weights list --json``)."""
    entry = registry_or_default(registry)[name]
    st = status(name, weights_dir=weights_dir, registry=registry)
    return {
        "name": name, "kind": entry.kind, "state": st.state, "default": entry.default,
        "on_disk_bytes": st.size_on_disk, "description": entry.description, "repo": entry.repo,
        "revision": entry.hub_revision if entry.repo else None, "preset": entry.preset, "requires": list(entry.requires),
        "base": list(entry.base),
        "location": str(st.location.root), "location_kind": st.location.kind,
        "files": [{"path": f.path, "local_path": str(f.local_path) if f.local_path else None, "size": f.size,
                   "verified": f.verified} for f in st.files],
    }


def table_lines(rows: list[dict[str, Any]], columns: int | None = None) -> list[str]:
    """``ltx weights list``: a header, then one line per :func:`status_record` row (the default model marked ``*``,
    LoRAs in their own group after a blank row); ``columns``: the terminal's width, which cuts the descriptions."""
    from ..formatting import human_bytes

    header = ("name", "kind", "state", "size", "description")
    cells = [(row["name"] + (" *" if row["default"] else ""), row["kind"], row["state"],
              human_bytes(row["on_disk_bytes"]) if row["on_disk_bytes"] else "-", row["description"]) for row in rows]
    loras = [c for c in cells if c[1] == "lora"]  # their own group, after a blank row
    cells = [c for c in cells if c[1] != "lora"] + ([("",) * 5, *loras] if loras else [])
    widths = [max(len(header[i]), *(len(c[i]) for c in cells)) for i in range(4)]
    room = columns - sum(widths) - 2 * 4 if columns is not None else None
    lines = []
    for c in [header, *cells]:
        desc = c[4]
        if room is not None and len(desc) > max(room, 20):
            desc = desc[: max(room, 20) - 1] + "…"
        lines.append("  ".join(v.ljust(w) for v, w in zip(c[:4], widths, strict=True)) + "  " + desc)
    return lines
