"""Hashing and verification: what a file must hash to, checking it, and :func:`verify` (always re-hashes).

A file is checked against the hash pinned in ``weights.toml``, else the one the Hub publishes for it (sha256 for LFS
files, the git blob id for small files); without network against the Hub's hash recorded by the last pull, the Hub
cache blob name, or an earlier verification. A file that passes is recorded (see ``cache.Store``), so a later pull
does not hash it again unless it changed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .cache import (
    Store,
    WeightsLocation,
    inside,
    is_offline,
    local_files,
    not_downloaded,
    status,
    weights_location,
)
from .errors import ChecksumError, HubUnreachableError
from .events import EventCallback, FileTask
from .hub import RemoteFile, remote_files
from .registry import SHA1_HEX, SHA256_HEX, Registry, WeightsEntry, registry_or_default

_CHUNK = 8 * 1024 * 1024


def hash_file(path: Path, algo: Literal["sha256", "git_sha1"], on_bytes: Callable[[int], None] | None = None) -> str:
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
class Expected:
    """What a file must hash to. ``source``: 'weights.toml', 'hub', 'record' or 'cache'."""

    algo: Literal["sha256", "git_sha1"]
    digest: str
    size: int | None
    source: str


def expected_for(entry: WeightsEntry, rel: str, remote: RemoteFile | None) -> Expected | None:
    """The hash pinned in ``weights.toml``, else the one the Hub lists (``remote``); size from either."""
    pinned = next((f for f in entry.files if f.path == rel), None)
    if pinned is not None and pinned.sha256:
        return Expected("sha256", pinned.sha256, pinned.size, "weights.toml")
    size = pinned.size if pinned is not None and pinned.size else (remote.size if remote else None)
    if remote is not None and remote.sha256:
        return Expected("sha256", remote.sha256, size, "hub")
    if remote is not None and remote.blob_id:
        return Expected("git_sha1", remote.blob_id, size, "hub")
    return None


def expected_offline(entry: WeightsEntry, rel: str, local: Path, loc: WeightsLocation,
                     store: Store) -> Expected | None:
    """The best hash known without network: weights.toml, the Hub's hash recorded by the last pull, the Hub cache
    blob name, an earlier verification of the same path."""
    pinned = expected_for(entry, rel, None)
    if pinned is not None:
        return pinned
    pulled = store.pulled_hash(entry, rel)
    if pulled is not None:
        return Expected(*pulled, None, "record")
    if loc.kind == "hub-cache" and local.is_symlink():
        blob = Path(os.path.realpath(local))
        if blob.parent.name == "blobs" and inside(blob, loc.repo_dir(entry.repo or "")):
            if SHA256_HEX.match(blob.name):
                return Expected("sha256", blob.name, None, "cache")
            if SHA1_HEX.match(blob.name):
                return Expected("git_sha1", blob.name, None, "cache")
    rec = store.lookup(local, unchanged=False)
    if rec is not None:
        for algo in ("sha256", "git_sha1"):
            if isinstance(rec.get(algo), str):
                return Expected(algo, rec[algo], None, "record")  # type: ignore[arg-type]
    return None


def check_pinned_size(local: Path, rel: str, entry: WeightsEntry) -> None:
    """Without a known hash, the size ``weights.toml`` pins (if any): a file of another size is a ChecksumError
    (a truncated copy passed as unchecked)."""
    pinned = next((f.size for f in entry.files if f.path == rel and f.size), None)
    size = os.stat(local).st_size
    if pinned is not None and size != pinned:
        raise ChecksumError(f"{rel} of {entry.repo} is {size} bytes, expected {pinned} (weights.toml)",
                            path=local, expected=str(pinned), actual=str(size))


def check_file(local: Path, rel: str, exp: Expected, entry: WeightsEntry, store: Store,
               on_event: EventCallback | None, *, trust_record: bool) -> str:
    """Hash ``local`` (unless an unchanged earlier verification says the same) and compare with ``exp``."""
    size = os.stat(local).st_size
    if exp.size is not None and size != exp.size:
        pinned = any(f.path == rel and f.size == exp.size for f in entry.files)
        raise ChecksumError(
            f"{rel} of {entry.repo} is {size} bytes, expected {exp.size} ({'weights.toml' if pinned else exp.source})",
            path=local, expected=str(exp.size), actual=str(size))
    if trust_record:
        rec = store.lookup(local)
        if rec is not None and rec.get(exp.algo) == exp.digest:
            return exp.digest
    task = FileTask(on_event, "verify", rel, size)
    digest = hash_file(local, exp.algo, task.advance)
    task.finish()
    if digest != exp.digest:
        label = "sha256" if exp.algo == "sha256" else "git blob id"
        raise ChecksumError(
            f"{rel} of {entry.repo}: {label} {digest} does not match {exp.digest} ({exp.source})",
            path=local, expected=exp.digest, actual=digest)
    store.record(local, algo=exp.algo, digest=digest, repo=entry.repo or "", rel=rel)
    return digest


@dataclass(frozen=True)
class VerifiedFile:
    """One file :func:`verify` hashed (or could not check: ``digest`` None)."""

    path: str
    local_path: Path
    digest: str | None  # None: nothing known to check against
    source: str | None  # where the expected hash came from: weights.toml, hub, cache, record


def verify(name: str, *, weights_dir: str | os.PathLike[str] | None = None,
           on_event: EventCallback | None = None, registry: Registry | None = None) -> list[VerifiedFile]:
    """Re-hash every file of ``name`` and compare with weights.toml, else the Hub cache blob name or an earlier
    verification, else (online) the Hub. Raises :class:`ChecksumError` listing mismatches (files are kept).
    ``on_event`` receives the hashing progress (see :mod:`.events`)."""
    entry = registry_or_default(registry)[name]
    if entry.is_builtin:
        return []
    loc = weights_location(weights_dir)
    store = Store(loc)
    local = local_files(entry, loc, store)
    if local.missing or not local.files:
        raise not_downloaded(entry, loc)
    remote: dict[str, RemoteFile] | None = None
    unreachable: HubUnreachableError | None = None  # the Hub could not be asked for the hashes it knows
    out: list[VerifiedFile] = []
    bad: list[str] = []
    for rel, p in local.present:
        exp = expected_offline(entry, rel, p, loc, store)
        if exp is None and not is_offline():
            if remote is None:
                try:
                    remote = {rf.path: rf for rf in remote_files(entry, loc)[1]}
                except HubUnreachableError as e:  # the offline checks still run (a pinned size, known hashes)
                    remote, unreachable = {}, e
            exp = expected_for(entry, rel, remote.get(rel))
        try:
            if exp is None:
                check_pinned_size(p, rel, entry)
                out.append(VerifiedFile(rel, p, None, None))
                continue
            digest = check_file(p, rel, exp, entry, store, on_event, trust_record=False)
        except ChecksumError as e:
            store.forget([os.path.realpath(p)])
            bad.append(str(e))
            continue
        out.append(VerifiedFile(rel, p, digest, exp.source))
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ChecksumError(f"{bad[0]}{more}: run `ltx weights rm {name}` then `ltx weights pull {name}`")
    if unreachable is not None and any(f.digest is None for f in out):
        raise unreachable  # a file only the Hub's hash could check: not verified, and not a success
    return out



def verify_targets(names: list[str] | None = None, *, weights_dir: str | os.PathLike[str] | None = None,
                   registry: Registry | None = None) -> tuple[list[str], list[str]]:
    """What ``ltx weights verify`` checks: ``names``, else every entry with files on disk; and, without names, the
    entries an interrupted pull left unfinished (a file still missing), apart: :func:`verify` refuses those as
    not downloaded, which would stop the check of every entry after them."""
    reg = registry_or_default(registry)
    if names:
        return [reg[n].name for n in names], []
    loc = weights_location(weights_dir)
    store = Store(loc)
    todo: list[str] = []
    unfinished: list[str] = []
    for e in reg:
        if status(e.name, weights_dir=weights_dir, registry=reg).state in ("downloaded", "partial"):
            (unfinished if local_files(e, loc, store).missing else todo).append(e.name)
    return todo, unfinished
