"""The collectives and range splits that the parallel transformer and VAE share.

Inference only: no autograd through the collectives. Shapes are Python ints, so nothing here syncs with the
host and the loop stays asynchronous on GPUs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

_all_gather_flat = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def all_gather(x: Tensor, size: int, group: Any) -> Tensor:
    """``x`` from every rank of ``group`` stacked on a new leading dim: ``[size, *x.shape]``."""
    x = x.contiguous().view(1, *x.shape)
    # concatenated along dim 0, the one output layout every backend takes
    out = x.new_empty((size, *x.shape[1:]))
    _all_gather_flat(out, x, group=group)
    return out


def all_to_all(x: Tensor, group: Any) -> Tensor:
    """``x [P, ...]``: chunk ``j`` goes to rank ``j``; returns ``[P, ...]`` whose chunk ``j`` came from rank ``j``."""
    x = x.contiguous()
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x, group=group)
    return out


def all_reduce_sum(x: Tensor, group: Any) -> Tensor:
    """``x`` summed over the ranks of ``group`` (every rank gets the same values), as a new tensor."""
    out = x.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
    return out


def split_bounds(total: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` ranges of ``ceil(total/parts)`` (the last ones shorter or empty)."""
    chunk = -(-total // parts)
    return [(min(total, i * chunk), min(total, (i + 1) * chunk)) for i in range(parts)]


def balanced_bounds(total: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous ranges whose sizes differ by at most one (the first ones longer)."""
    base, extra = divmod(total, parts)
    out, lo = [], 0
    for i in range(parts):
        hi = lo + base + (1 if i < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


__all__ = ["all_gather", "all_reduce_sum", "all_to_all", "balanced_bounds", "split_bounds"]
