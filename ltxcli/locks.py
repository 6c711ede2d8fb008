"""One generation at a time per loaded model: the step cache hooks, per-request LoRAs (merged into the weights in
place) and offloading all change the one transformer and VAE that every call shares, so concurrent calls from
several threads would compute with each other's state. :func:`serialised` makes them wait their turn instead."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol, TypeVar


class _Locked(Protocol):
    lock: Any  # a threading.RLock: re-entrant, so a locked call may make others (long_video -> Pipeline.run)


F = TypeVar("F", bound=Callable[..., Any])


def serialised(func: F) -> F:
    """``func(owner, ...)`` run while holding ``owner.lock`` (a method's ``self``, or a function's first argument,
    the pipeline)."""

    @functools.wraps(func)
    def locked(owner: _Locked, *args: Any, **kwargs: Any) -> Any:
        with owner.lock:
            return func(owner, *args, **kwargs)

    return locked  # type: ignore[return-value]


__all__ = ["serialised"]
