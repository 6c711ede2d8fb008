"""Deleting weights: ``rm`` of an entry (its files only, partial downloads included) and of one file that failed
its check.

Other entries sharing a repo keep their files: in the Hub cache, revisions holding only this entry's files go
through huggingface_hub's own delete strategy; in shared revisions only this entry's snapshot links go, then the
blobs no snapshot links to any more. The verified-file records of everything deleted are dropped.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from .cache import Store, WeightsLocation, folder_location, inside, known_partials, walk
from .registry import Registry, WeightsEntry, registry_or_default, safe_join


def rm(name: str, *, weights_dir: str | os.PathLike[str] | None = None,
       registry: Registry | None = None) -> list[Path]:
    """Delete the files of ``name`` only (other entries sharing the repo are kept), partial downloads included.
    Returns what was removed."""
    entry = registry_or_default(registry)[name]
    if entry.is_builtin:
        return []
    assert entry.repo is not None
    loc = folder_location(weights_dir)
    store = Store(loc)
    removed = _rm_partials(entry, loc, store)
    removed += _rm_folder(entry, loc, store) if loc.kind == "folder" else _rm_cache(entry, loc, store)
    if removed or store.path.exists():  # nothing there: no state file made in a folder that holds nothing
        store.set_manifest(entry.name, None)
    return removed


def _prune_empty(start: Path, stop: Path) -> None:
    d = start
    while inside(d, stop) and os.path.abspath(d) != os.path.abspath(stop):
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent


def _rm_folder(entry: WeightsEntry, loc: WeightsLocation, store: Store) -> list[Path]:
    assert entry.repo is not None
    repo_dir = loc.repo_dir(entry.repo)
    if not repo_dir.is_dir():
        return []
    rels = [f.path for f in entry.files] if entry.files else [x for x in walk(repo_dir) if entry.selects(x)]
    removed: list[Path] = []
    meta_root = repo_dir / ".cache" / "huggingface" / "download"
    for rel in rels:
        p = safe_join(repo_dir, rel)
        if p.is_file() or p.is_symlink():
            store.forget([os.path.realpath(p), os.path.abspath(p)])
            p.unlink()
            removed.append(p)
            _prune_empty(p.parent, repo_dir)
        for suffix in (".metadata", ".lock"):
            meta = safe_join(meta_root, rel + suffix)
            if meta.is_file():
                meta.unlink()
                _prune_empty(meta.parent, repo_dir)
    _prune_empty(repo_dir, loc.root)
    return removed


def _rm_cache(entry: WeightsEntry, loc: WeightsLocation, store: Store) -> list[Path]:
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
                if inside(Path(blob), repo_dir / "blobs"):
                    blobs.add(blob)
    still_used = {os.path.realpath(os.path.join(d, fn))
                  for d, _, fns in os.walk(repo_dir / "snapshots") for fn in fns}
    for blob in blobs - still_used:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(blob)
    return removed


def _rm_partials(entry: WeightsEntry, loc: WeightsLocation, store: Store) -> list[Path]:
    """Delete the partial downloads of ``entry``'s files."""
    removed = []
    for p in known_partials(entry, loc, store).values():
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
        store.note_partial(p, repo=entry.repo or "", rel="", present=False)
        if entry.repo is not None:
            _prune_empty(p.parent, loc.repo_dir(entry.repo))
    return removed


def delete_file(local: Path, entry: WeightsEntry, loc: WeightsLocation, store: Store) -> None:
    """Remove one downloaded file (and, in the Hub cache, its blob) after a failed check."""
    assert entry.repo is not None
    repo_dir = loc.repo_dir(entry.repo)
    real = os.path.realpath(local)
    store.forget([real, os.path.abspath(local)])
    if local.is_symlink() or local.exists():
        local.unlink()
    if loc.kind == "hub-cache" and real != os.path.abspath(local) and inside(Path(real), repo_dir / "blobs"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(real)

