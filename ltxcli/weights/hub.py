"""Questions to the Hugging Face Hub (no file content): an entry's file listing with the hashes the Hub
publishes, and the mapping of huggingface_hub / network exceptions to one-line :class:`WeightsError` messages.

``HF_ENDPOINT`` is read on every call; ``HF_TOKEN`` is read by huggingface_hub itself on every request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from .cache import WeightsLocation, is_offline, offline_message
from .errors import ChecksumError, HubUnreachableError, WeightsError, WeightsUnavailableError
from .registry import SHA1_HEX, SHA256_HEX, WeightsEntry, matches, safe_relpath


def endpoint() -> str | None:
    """``HF_ENDPOINT`` without a trailing slash, or None for huggingface_hub's default."""
    ep = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    return ep or None


def client_id() -> dict[str, str]:
    """``library_name``/``library_version`` for huggingface_hub calls (they go into the user agent)."""
    from ltxcli import __version__

    return {"library_name": "ltxcli", "library_version": __version__}


def map_hub_error(exc: BaseException, entry: WeightsEntry, loc: WeightsLocation, rel: str | None = None
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
            return WeightsUnavailableError(offline_message(entry, loc))
        return HubUnreachableError(
            f"cannot reach the Hub ({endpoint() or 'https://huggingface.co'}) and {entry.name} is not downloaded: "
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
        return HubUnreachableError(
            f"cannot reach the Hub ({endpoint() or 'https://huggingface.co'}) to download {entry.name}: "
            f"check your connection or HF_ENDPOINT ({type(exc).__name__})")
    return None


@dataclass(frozen=True)
class RemoteFile:
    """One file of an entry as the Hub lists it: size and the hash it publishes (sha256 for LFS files, else the
    git blob id)."""

    path: str
    size: int | None
    sha256: str | None
    blob_id: str | None


def remote_files(entry: WeightsEntry, loc: WeightsLocation) -> tuple[str | None, list[RemoteFile]]:
    """(commit, files) of the entry at its revision, from one ``model_info(files_metadata=True)`` call."""
    from huggingface_hub import HfApi

    assert entry.repo is not None
    api = HfApi(endpoint=endpoint(), **client_id())
    try:
        info = api.model_info(entry.repo, revision=entry.hub_revision, files_metadata=True)
    except Exception as e:
        mapped = map_hub_error(e, entry, loc)
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
        names = [n for n in siblings if matches(n, entry.allow, entry.ignore)]
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
        blob = s.blob_id if isinstance(s.blob_id, str) and SHA1_HEX.match(s.blob_id) else None
        out.append(RemoteFile(n, size if isinstance(size, int) else None,
                              sha if isinstance(sha, str) and SHA256_HEX.match(sha) else None, blob))
    commit = info.sha if isinstance(info.sha, str) and SHA1_HEX.match(info.sha) else None
    return commit, out

