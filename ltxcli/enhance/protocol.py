"""What a :class:`~ltxcli.pipeline.Pipeline` needs of its prompt enhancer, typed by shape: the pipeline cannot name
:class:`~ltxcli.enhance.enhancer.PromptEnhancer` (that module reaches the pipeline through the tiny models), and a
caller may set a stand-in of its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from torch import Tensor

    from ltxcli.presets import Preset
    from ltxcli.request import GenerationRequest, ResolvedRequest

    # a request either side of resolution: a windowed video is enhanced before its windows are resolved
    _Request = TypeVar("_Request", GenerationRequest, ResolvedRequest)


class RequestEnhancer(Protocol):
    """:meth:`~ltxcli.enhance.enhancer.PromptEnhancer.enhance_resolved`: ``r`` with its enhanced prompt where its
    plan says so (``pixels``: its first condition's, prepared, ``[1, 3, 1, H, W]``), its models freed after."""

    def enhance_resolved(self, r: _Request, preset: Preset, seed: int, pixels: Tensor | None) -> _Request: ...


__all__ = ["RequestEnhancer"]
