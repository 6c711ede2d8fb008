"""What the ranks of a multi-process run agree on, share out and report, around the generation itself.

* Values only rank 0 should decide or read (random seeds, stdin) reach every rank through :func:`from_rank0` /
  :func:`on_rank0`, before anything is derived from them (output names).
* Downloads take turns per node (:func:`in_node_turns`): rank 0 first (a cache shared by every node), then
  the first process of each node, then every rank finds the files in place.
* Batches (``--batch`` under torchrun) are spread by :func:`shard_items`: each rank generates whole items on
  its own, no collective involved; :func:`claim_output` makes skip-existing safe when ranks, or two jobs on a
  shared file system, race on one output.
* :func:`rank_stats` gathers every rank's timings, peak memory and communicated bytes.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch.distributed as dist

from ..metrics import peak_memory
from .context import DistContext

T = TypeVar("T")

#: Collective timeout of a multi-process generation: long, because the other ranks wait (at a barrier) while
#: rank 0 downloads weights.
DIST_TIMEOUT_S = 2 * 3600.0

# --- agreeing -------------------------------------------------------------------------------------------------


def from_rank0(ctx: DistContext, value: T) -> T:
    """``value`` as rank 0 has it, on every rank (a collective: every rank calls it)."""
    box = [value]
    dist.broadcast_object_list(box, src=0, group=ctx.group)
    return box[0]


def on_rank0(ctx: DistContext | None, read: Callable[[], T]) -> T:
    """``read()`` on rank 0 only (e.g. stdin, which only one process may consume), its result on every rank.

    Outside torchrun (``ctx=None``) or in a world of one it is just ``read()``."""
    if ctx is None or ctx.world_size == 1:
        return read()
    value = read() if ctx.rank == 0 else None
    # None only on the other ranks, before the broadcast: every rank returns rank 0's read()
    return from_rank0(ctx, value)  # type: ignore[return-value]


def in_node_turns(ctx: DistContext | None, fetch: Callable[[], None]) -> None:
    """Call ``fetch`` (a download that skips files already in place) so that ranks never fetch the same file at
    once: rank 0 first (a cache shared by every node), then the first process of each node (per-node caches),
    then every rank, which finds the files in place (a check, no download). A collective with several ranks."""
    if ctx is None or ctx.world_size == 1:
        fetch()
        return
    for turn in (ctx.rank == 0, ctx.local_rank == 0):
        if turn:
            fetch()
        ctx.barrier()
    fetch()


# --- per-rank statistics ------------------------------------------------------------------------------------


def rank_stats(ctx: DistContext, timings: dict[str, float] | None = None, *, transformer: Any = None) -> list[dict]:
    """Gather every rank's timings, peak memory and communicated bytes; the same list on every rank.

    Collective: all ranks must call it. Entries are ordered by rank::

        {"rank": 0, "local_rank": 0, "host": "node1", "device": "cuda:0", "peak_memory_bytes": ...,
         "comm_bytes": ..., "timings": {...}}
    """
    mine = {
        "rank": ctx.rank, "local_rank": ctx.local_rank, "host": socket.gethostname(), "device": str(ctx.device),
        "peak_memory_bytes": peak_memory(ctx.device)[0],
        "comm_bytes": int(getattr(transformer, "comm_bytes", 0)) if transformer is not None else 0,
        "timings": {k: round(float(v), 4) for k, v in (timings or {}).items()},
    }
    if ctx.world_size == 1:
        return [mine]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, mine, group=ctx.group)
    return out


# --- batches ---------------------------------------------------------------------------------------------------


def shard_items(items: Sequence[T], rank: int, world: int) -> list[T]:
    """This rank's items, round robin (item ``i`` goes to rank ``i % world``): every item to exactly one rank."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world} processes")
    return list(items[rank::world])


def _claim_path(path: str | os.PathLike[str]) -> str:
    return os.fspath(path) + ".claim"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _stale(info: dict[str, Any], mtime: float, stale_after_s: float | None) -> bool:
    if stale_after_s is not None and time.time() - mtime > stale_after_s:
        return True
    pid = info.get("pid")
    return info.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)


#: Claim files this process made and has not released. Ctrl-C can land between a claim and the ``try`` that
#: releases it (a caller's, or between two of this module's statements), so whatever is left here is removed
#: when the interpreter exits (after ``sys.exit(130)`` too): an interrupted run leaves no claim behind.
_HELD: set[str] = set()


@atexit.register
def _release_held() -> None:
    """Remove the claims still held at exit, each only if its file still names this process."""
    for claim in list(_HELD):
        try:
            with open(claim) as fh:
                info = json.loads(fh.read() or "{}")
        except (OSError, ValueError):
            continue
        if info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            with contextlib.suppress(OSError):
                os.unlink(claim)
    _HELD.clear()


def claim_output(path: str | os.PathLike[str], *, stale_after_s: float | None = None) -> bool:
    """Atomically claim the right to write ``path``: True for exactly one of any number of racing processes.

    Creates ``path + ".claim"`` with ``O_CREAT | O_EXCL`` (atomic on local file systems and NFSv3+) holding
    the owner's pid, host and time. Returns False when ``path`` already exists (checked again after the
    claim, so a process that lost the race to a finished writer skips too) or another live claim holds it.
    Call :func:`release_claim` after the output is complete (written to a temporary name and renamed).

    Stale claims (the owner died without releasing): a claim made on this host by a pid that no longer exists
    is broken automatically; a claim from another host is broken only when older than ``stale_after_s``
    seconds (default: never, since a remote pid cannot be checked; delete the ``.claim`` file by hand after a
    crashed multi-node job). Breaking renames the claim aside first, so of two processes breaking the same
    stale claim only one proceeds.
    """
    target = os.fspath(path)
    claim = _claim_path(target)
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    for _ in range(3):
        if os.path.exists(target):
            return False
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(claim) as fh:
                    info = json.loads(fh.read() or "{}")
                mtime = os.path.getmtime(claim)
            except (OSError, ValueError):
                return False  # released meanwhile, or being written: let its owner have it
            if not _stale(info, mtime, stale_after_s):
                return False
            aside = f"{claim}.stale.{os.getpid()}.{time.monotonic_ns()}"
            try:
                os.rename(claim, aside)
            except OSError:
                continue  # someone else broke it first: race for the fresh claim
            try:
                with open(aside) as fh:
                    moved = json.loads(fh.read() or "{}")
            except (OSError, ValueError):
                moved = None
            if moved != info:
                # another breaker replaced the stale claim with a live one before our rename: put it back
                with contextlib.suppress(OSError):
                    os.link(aside, claim)
                os.unlink(aside)
                return False
            os.unlink(aside)
            continue
        try:
            _HELD.add(claim)
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}))
            if os.path.exists(target):  # finished by a process that held and released the claim before us
                release_claim(target)
                return False
        except BaseException:  # Ctrl-C (or a full disk) before the claim is handed over: leave no claim behind
            # (a Ctrl-C arriving during the write or close is raised at the next Python call: os.path.exists)
            release_claim(target)
            raise
        return True
    return False


def release_claim(path: str | os.PathLike[str]) -> None:
    """Remove the claim on ``path`` (after writing it, or after failing to)."""
    claim = _claim_path(path)
    _HELD.discard(claim)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(claim)



__all__ = [
    "DIST_TIMEOUT_S", "claim_output", "from_rank0", "in_node_turns", "on_rank0", "peak_memory", "rank_stats",
    "release_claim", "shard_items",
]
