"""Downloading: :func:`plan` (what a pull would fetch) and :func:`pull` (download, verify, record).

Every file is checked against its expected hash (see :mod:`.verify`) before it counts as downloaded; a file that
fails is deleted. Progress goes to an ``on_event`` callback as :mod:`.events`; nothing is printed.

Downloads of LFS files (the checkpoints) survive an interruption (Ctrl-C, crash, dropped connection): the bytes go
to a fixed partial file (``blobs/<sha256>.incomplete`` in the Hub cache, ``<file>.partial`` in a plain folder) that
the next pull continues with an HTTP Range request. That is done in this module's "resumable downloads" section
rather than by huggingface_hub; :func:`_fetch_lfs` says why.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache import (
    Store,
    WeightsLocation,
    folder_location,
    hub_cache_dir,
    is_offline,
    local_files,
    offline_message,
    partial_path,
    weights_location,
)
from .errors import ChecksumError, HubUnreachableError, UnsafePathError, WeightsUnavailableError
from .events import EventCallback, FileTask
from .hub import RemoteFile, client_id, endpoint, map_hub_error, remote_files
from .registry import SHA1_HEX, Registry, WeightsEntry, registry_or_default, safe_join
from .remove import delete_file
from .verify import check_file, check_pinned_size, expected_for, expected_offline


@dataclass(frozen=True)
class PlannedFile:
    """One file of a pull: where it goes, its size on the Hub, whether it is already on disk."""

    path: str
    local_path: Path
    size: int | None
    present: bool


def _write_ref(loc: WeightsLocation, entry: WeightsEntry, commit: str) -> None:
    """Point ``refs/<branch>`` at ``commit`` as ``snapshot_download`` does, so other Hub tools find the files
    offline (downloads are pinned to the commit whose hashes were listed, which alone writes no ref)."""
    rev = entry.hub_revision
    if SHA1_HEX.match(rev) or entry.repo is None:
        return
    ref = safe_join(loc.repo_dir(entry.repo) / "refs", rev)
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
    entry = registry_or_default(registry)[name]
    if entry.is_builtin:
        return []
    loc = weights_location(weights_dir)
    store = Store(loc)
    pinned = {f.path: f.size for f in entry.files}  # sizes weights.toml pins (None: not pinned)
    if is_offline():
        return _plan_local(entry, loc, store, pinned, WeightsUnavailableError(
            f"{name} is not (fully) downloaded and HF_HUB_OFFLINE=1 is set: a dry run asks the Hub which files "
            f"a pull would download and their sizes, so unset HF_HUB_OFFLINE to see them"))
    try:
        commit, remote = remote_files(entry, loc)
    except HubUnreachableError as e:
        # The Hub cannot be asked (no network): plan from the disk and weights.toml as offline, as pull falls back
        # to what is on disk; the Hub's own error where that is not enough (its definite answers pass through).
        return _plan_local(entry, loc, store, pinned, e)
    assert entry.repo is not None
    out = []
    for rf in remote:
        dest = _destination(loc, entry, commit, rf.path)
        blob = loc.repo_dir(entry.repo) / "blobs" / (rf.sha256 or rf.blob_id or "-")
        present = dest.is_file() or (loc.kind != "folder" and blob.is_file())
        out.append(PlannedFile(rf.path, dest, rf.size if rf.size is not None else pinned.get(rf.path), present))
    return out


def _plan_local(entry: WeightsEntry, loc: WeightsLocation, store: Store, pinned: dict[str, int | None],
                unavailable: WeightsUnavailableError) -> list[PlannedFile]:
    """The plan without the Hub: the files on disk, and those missing where weights.toml pins every size
    (a missing file goes where a pull of the entry's revision puts it); else ``unavailable`` is raised."""
    assert entry.repo is not None
    local = local_files(entry, loc, store)
    if (local.missing or not local.files) and not (pinned and None not in pinned.values()):
        raise unavailable
    return [PlannedFile(rel, p, os.stat(p).st_size, True) if p is not None else PlannedFile(
                rel, _destination(loc, entry, None, rel), pinned.get(rel), False) for rel, p in local.files]


def _destination(loc: WeightsLocation, entry: WeightsEntry, commit: str | None, rel: str) -> Path:
    """Where a pull puts ``rel`` of ``entry``: the repo folder, or the Hub cache snapshot of ``commit`` (unknown:
    the entry's revision)."""
    assert entry.repo is not None
    if loc.kind == "folder":
        return safe_join(loc.repo_dir(entry.repo), rel)
    return safe_join(loc.repo_dir(entry.repo) / "snapshots" / (commit or entry.hub_revision), rel)


def _hub_bar_class(on_event: EventCallback | None, rel: str) -> type:
    """A tqdm-compatible class for ``hf_hub_download(tqdm_class=...)`` that turns its progress into events for
    ``rel`` (and keeps huggingface_hub from drawing its own bars on stderr)."""

    class _HubBar:
        # huggingface_hub constructs it with desc/total/initial/unit/... and calls update, close,
        # set_postfix_str, and for Xet downloads update_transfer (network bytes, not shown) and `total =`.
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            initial = int(kwargs.get("initial") or 0)
            self.n = initial
            self._task = FileTask(on_event, "download", rel, kwargs.get("total"), initial)
            self._closed = False

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
            if not self._closed:
                self._closed = True
                self._task.finish()

        def __enter__(self) -> _HubBar:
            return self

        def __exit__(self, *exc: object) -> None:
            if exc[0] is None:  # a failed download ends the pull; it reports no FileDone (see events.py)
                self.close()

    return _HubBar


def pull(name: str, *, weights_dir: str | os.PathLike[str] | None = None, on_event: EventCallback | None = None,
         dry_run: bool = False, registry: Registry | None = None) -> list[Path]:
    """Download ``name`` (only that entry: see :meth:`Registry.closure` for its dependencies) and verify it.

    Returns the local paths of its files. Files already present and recorded as verified are not re-hashed.
    A file whose hash does not match is deleted and :class:`ChecksumError` is raised; nothing unverified is
    recorded. Offline (``HF_HUB_OFFLINE``), only files already on disk are used. ``dry_run`` returns where the
    files would go without downloading. ``on_event`` receives the progress of every download and hash as
    :mod:`.events` (an exception it raises stops the pull; what was downloaded so far is kept for the next one).

    Interrupted downloads resume: LFS files (the checkpoints) are written to a fixed partial file (Hub cache:
    ``blobs/<sha256>.incomplete``, plain folder: ``<file>.partial``) that the next pull continues with a Range
    request; a resumed file is hashed like any other and deleted if it does not match. Small files go through
    ``hf_hub_download`` (resumed within a call only).
    """
    entry = registry_or_default(registry)[name]
    if entry.is_builtin:
        return []
    assert entry.repo is not None
    if dry_run:
        return [p.local_path for p in plan(name, weights_dir=weights_dir, registry=registry)]
    loc = folder_location(weights_dir)
    store = Store(loc)

    if is_offline():
        return _pull_local(entry, loc, store, on_event, reason=offline_message(entry, loc))
    try:
        commit, remote = remote_files(entry, loc)
    except WeightsUnavailableError as e:
        # The Hub cannot be asked (no network, token refused, ...): what is on disk will do, as huggingface_hub
        # itself falls back to its cache.
        return _pull_local(entry, loc, store, on_event, reason=str(e))

    from huggingface_hub import hf_hub_download

    paths: list[Path] = []
    hashes: dict[str, list[str]] = {}
    for rf in remote:
        exp = expected_for(entry, rf.path, rf)
        kwargs: dict[str, Any] = {
            "revision": commit or entry.hub_revision, "endpoint": endpoint(), **client_id(),
            "tqdm_class": _hub_bar_class(on_event, rf.path),
        }
        if loc.kind == "folder":
            kwargs.update(local_dir=loc.repo_dir(entry.repo), cache_dir=hub_cache_dir())
            dest = safe_join(loc.repo_dir(entry.repo), rf.path)
        else:
            kwargs.update(cache_dir=loc.root)
            dest = safe_join(loc.repo_dir(entry.repo) / "snapshots" / (commit or "-"), rf.path)
        if exp is None:  # the Hub published no hash for it (not seen on huggingface.co)
            raise ChecksumError(f"{rf.path} of {entry.repo}: the Hub lists no hash for it, cannot verify")
        # A copy already on disk that fails the check is deleted and downloaded once more.
        present_before = dest.is_file() or (
            loc.kind == "hub-cache" and (loc.repo_dir(entry.repo) / "blobs" / (rf.sha256 or rf.blob_id or "-")).is_file())
        own = rf.sha256 is not None and (loc.kind == "folder" or commit is not None)
        for attempt in (1, 2):
            try:
                if own:
                    local = _fetch_lfs(entry, rf, commit, loc, store, on_event)
                else:
                    local = Path(hf_hub_download(entry.repo, rf.path, **kwargs))
            except Exception as e:
                mapped = map_hub_error(e, entry, loc, rf.path)
                if mapped is None:
                    raise
                raise mapped from e
            if loc.kind == "folder" and os.path.abspath(local) != os.path.abspath(dest):
                raise UnsafePathError(f"{rf.path}: huggingface_hub wrote {local}, expected {dest}")
            try:
                check_file(local, rf.path, exp, entry, store, on_event, trust_record=True)
                break
            except ChecksumError as e:
                delete_file(local, entry, loc, store)
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


def _pull_local(entry: WeightsEntry, loc: WeightsLocation, store: Store, on_event: EventCallback | None,
                reason: str) -> list[Path]:
    """Pull without network: every file must be on disk; check what can be checked from local knowledge."""
    local = local_files(entry, loc, store)
    if local.missing or not local.files:
        raise WeightsUnavailableError(reason)
    for rel, p in local.present:
        exp = expected_offline(entry, rel, p, loc, store)
        try:
            if exp is None:
                check_pinned_size(p, rel, entry)
                continue
            check_file(p, rel, exp, entry, store, on_event, trust_record=True)
        except ChecksumError as e:  # kept: without network it cannot be replaced now
            raise ChecksumError(f"{e}: run `ltx weights pull {entry.name}` with network access to replace it",
                                path=p, expected=e.expected, actual=e.actual) from None
    return [p for _, p in local.present]


# ------------------------------------------------------------------------------- resumable downloads
#
# The workaround for one huggingface_hub behaviour, kept to this section (see _fetch_lfs for the reason).

_RETRIES = 5  # attempts in a row that receive no byte before a download gives up


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"^\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*$", value or "")
    return int(m.group(1)) if m else None


def _http_download(url: str, partial: Path, headers: dict[str, str], size: int | None, task: FileTask) -> None:
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


def _fetch_lfs(entry: WeightsEntry, rf: RemoteFile, commit: str | None, loc: WeightsLocation, store: Store,
               on_event: EventCallback | None) -> Path:
    """Download one LFS file resumably; return its path as hf_hub_download would: Hub cache
    ``snapshots/<commit>/<path>`` -> ``../../blobs/<sha256>``, plain folder ``<folder>/<path>``.

    Why this exists instead of ``hf_hub_download``: huggingface_hub (since PR #4228) downloads into a temporary
    file unique to the process and deletes it on failure, so a multi-GB checkpoint download interrupted by Ctrl-C,
    a crash or a dropped connection starts from zero next time. Here the bytes go to a fixed partial file
    (:func:`.cache.partial_path`, noted in the records so status and rm find it) that the next pull continues with
    a Range request (:func:`_http_download`), under huggingface_hub's own lock for the file, and the result is laid
    out as huggingface_hub lays out a blob, so other Hub tools use it. Small files (configs, tokenizer) still go
    through ``hf_hub_download``. Not hashed here: the caller checks the result (a resumed file is hashed whole).
    """
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import WeakFileLock, build_hf_headers

    assert entry.repo is not None and rf.sha256 is not None
    repo_dir = loc.repo_dir(entry.repo)
    if loc.kind == "hub-cache":
        assert commit is not None
        dest = safe_join(repo_dir / "snapshots" / commit, rf.path)
        final = repo_dir / "blobs" / rf.sha256
        lock = loc.root / ".locks" / repo_dir.name / f"{rf.sha256}.lock"  # huggingface_hub's lock for this blob
    else:
        dest = final = safe_join(repo_dir, rf.path)
        lock = safe_join(repo_dir / ".cache" / "huggingface" / "download", rf.path + ".lock")
    if dest.is_file():
        return dest
    partial = partial_path(loc, entry.repo, rf.path, rf.sha256)
    assert partial is not None
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(lock):
        if not final.is_file():
            partial.parent.mkdir(parents=True, exist_ok=True)
            store.note_partial(partial, repo=entry.repo, rel=rf.path, present=True)
            url = hf_hub_url(entry.repo, rf.path, revision=commit or entry.hub_revision, endpoint=endpoint())
            headers = build_hf_headers(**client_id())
            task = FileTask(on_event, "download", rf.path, rf.size, partial.stat().st_size if partial.is_file() else 0)
            _http_download(url, partial, headers, rf.size, task)
            task.finish()
            os.replace(partial, final)
            store.note_partial(partial, repo=entry.repo, rel=rf.path, present=False)
        if final != dest and not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_symlink():  # dangling
                dest.unlink()
            os.symlink(os.path.relpath(final, dest.parent), dest)  # relative, as huggingface_hub links it
    return dest

