"""This process's place in a multi-process job (torchrun, or any ``env://`` launcher): rank, world, device.

Every rank runs the same code on the same inputs; the helpers here set up and tear down the process group and
name a rank in messages (``[rank 1/4 host]``).
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .launch import under_torchrun


@dataclass
class DistContext:
    """This process's place in the job. ``group`` is the process group the wrappers use (default: world)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    group: Any = None  # torch.distributed.ProcessGroup; Any keeps the annotation import-free

    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            if self.device.type == "cuda":
                dist.barrier(group=self.group, device_ids=[self.device.index or 0])
            else:
                dist.barrier(group=self.group)

    def destroy(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def init(
    rank: int,
    world_size: int,
    *,
    init_method: str = "env://",
    backend: str | None = None,
    local_rank: int | None = None,
    timeout_s: float | None = None,
) -> DistContext:
    """Join (or reuse) the default process group: ``nccl`` with CUDA, else ``gloo``.

    The device is ``cuda:local_rank`` for ``nccl`` (made the current device), else the CPU.
    """
    backend = backend or default_backend()
    local_rank = rank if local_rank is None else local_rank
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size} processes")
    if backend == "nccl":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise RuntimeError(
                f"local rank {local_rank} needs GPU {local_rank} but only {count} are visible: start at most "
                f"{count} processes per node (torchrun --nproc-per-node {count})"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {}
        if timeout_s is not None:
            kwargs["timeout"] = datetime.timedelta(seconds=timeout_s)
        if backend == "nccl":
            kwargs["device_id"] = device
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size, **kwargs)
    return DistContext(rank, world_size, local_rank, device, dist.group.WORLD)


def init_from_env(backend: str | None = None, *, timeout_s: float | None = None) -> DistContext | None:
    """The context of a process started by ``torchrun``; ``None`` when RANK/WORLD_SIZE are not set.

    A world of one is still initialised (so collectives work), which makes ``torchrun --nproc-per-node 1``
    behave like a plain run.
    """
    if not under_torchrun():
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    return init(rank, world, backend=backend, local_rank=local_rank, timeout_s=timeout_s)


@contextmanager
def worker(*, timeout_s: float | None = None) -> Iterator[DistContext | None]:
    """:func:`init_from_env` for the length of a ``with`` block (``None`` outside torchrun).

    On leaving the block normally every rank waits at a barrier (past its last collective: a peer closing
    the group early aborts gloo); the process group is destroyed at the end, also on errors.
    """
    ctx = init_from_env(timeout_s=timeout_s)
    if ctx is None:
        yield None
        return
    try:
        yield ctx
        ctx.barrier()
    finally:
        ctx.destroy()


def is_main(ctx: DistContext | None = None) -> bool:
    """Whether this process writes files and prints results (rank 0, or any process outside torchrun)."""
    if ctx is not None:
        return ctx.is_main()
    return not dist.is_initialized() or dist.get_rank() == 0


def rank_label(ctx: DistContext | None) -> str:
    """``"[rank 1/4 host]"`` for messages from a worker; empty outside torchrun."""
    if ctx is None or ctx.world_size == 1:
        return ""
    return f"[rank {ctx.rank}/{ctx.world_size} {socket.gethostname()}]"


__all__ = ["DistContext", "default_backend", "init", "init_from_env", "is_main", "rank_label", "worker"]
