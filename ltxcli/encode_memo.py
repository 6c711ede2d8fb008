"""The VAE latents of the last shared condition tensor a pipeline encoded, for a run that hands it in again.

A batch's extensions of one input (:func:`ltxcli.run_batch`) hand each run the same prepared context tensor
(:meth:`ltxcli.extend.InputFrames.context`), which the library made and marked with :func:`share`: its latents at
each pass's size are computed once. Only such tensors are memoised: a caller's tensor can change without torch
seeing it (a NumPy array's memory written through NumPy leaves the tensor's version counter as it was), so a
caller's condition is encoded at every run. The memo is keyed on the tensor's identity (a weak reference: no pixels
are kept alive here) and its version counter, how it was prepared (frames kept, size, padding), the size it is
encoded at, the VAE (its object, compute dtype and convolution algorithm) and the pixel frames of each time chunk it
is encoded in (picked from the memory free at each run: another chunk, other rounding). One tensor at a time: a different one
replaces it. Files and pictures are prepared anew by each run and never memoised.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from torch import Tensor

    from .conditions import PreparedCondition


class Encoder(Protocol):
    """What encodes a condition (a :class:`~ltxcli.pipeline.Pipeline`; not imported: it imports this module)."""

    vae: Any
    device: Any

    def _vae_encode(self, pixels: Tensor, chunk: int | None = None) -> Tensor: ...


class ConditionLatents:
    """One condition tensor's latents ``[1, C, f, h, w]`` (float32, on the device: small next to its pixels) at
    each (preparation, size, VAE) it was encoded at."""

    def __init__(self) -> None:
        self._source: weakref.ref[Tensor] | None = None
        self._version = -1
        self._latents: dict[tuple[Any, ...], Tensor] = {}

    def latents(self, source: Tensor, key: tuple[Any, ...], encode: Any) -> Tensor:
        """``encode()``'s latents for ``source`` under ``key``, computed once while ``source`` lives unchanged; a
        copy each time (a run may write into its latents)."""
        if self._source is None or self._source() is not source or source._version != self._version:
            self._source, self._version, self._latents = weakref.ref(source), source._version, {}
        if key not in self._latents:
            self._latents[key] = encode()
        return self._latents[key].clone()


#: id -> a weak reference to each tensor :func:`share` marked (an entry goes with its tensor)
_SHARED: dict[int, weakref.ref[Tensor]] = {}


def share(tensor: Tensor) -> Tensor:
    """Mark ``tensor`` (made by the library and held unchanged, as a batch's extension context) as one whose latents
    a pipeline may reuse while it lives; returns it."""
    key = id(tensor)

    def gone(_: weakref.ref[Tensor]) -> None:  # (its id may be another tensor's next)
        _SHARED.pop(key, None)

    _SHARED[key] = weakref.ref(tensor, gone)
    return tensor


def _shared(tensor: Tensor) -> bool:
    ref = _SHARED.get(id(tensor))
    return ref is not None and ref() is tensor


def condition_latents(pipe: Encoder, c: PreparedCondition, height: int, width: int) -> Tensor:
    """The normalised latents of ``c``'s pixels resized to ``height`` x ``width`` (inside the VAE encoder's stage):
    memoised for a tensor condition (``c.origin``) marked with :func:`share`, encoded each time otherwise."""
    from .conditions import resize_frames
    from .memory.encode import fitting_chunk
    from .models.upcast import compute_dtype
    from .vae_encode import chunk_frames

    if c.origin is None or not _shared(c.origin[0]):
        return pipe._vae_encode(resize_frames(c.pixels, height, width)).float()
    memo = pipe.__dict__.setdefault("_condition_latents", ConditionLatents())
    source, how = c.origin
    n = c.pixels.shape[2]  # [1, 3, n, h, w]: encoded [1, 3, n, height, width] in chunks of `chunk` latent frames
    chunk = fitting_chunk(pipe.vae, (1, 3, n, height, width), pipe.device)
    # the VAE object, its compute dtype (as _vae_encode casts), convolution algorithm and the frames of each chunk
    # (chunks that cut a video alike give the same latents): the rounding it encodes with
    vae = (id(pipe.vae), compute_dtype(pipe.vae.decoder.conv_in.conv), str(getattr(pipe.vae, "conv_algorithm", "")),
           tuple(chunk_frames(pipe.vae.config, n, chunk)))
    return memo.latents(source, (how, height, width, vae),
                        lambda: pipe._vae_encode(resize_frames(c.pixels, height, width), chunk=chunk).float())


__all__ = ["ConditionLatents", "Encoder", "condition_latents", "share"]
