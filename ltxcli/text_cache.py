"""The text's cross-attention keys and values, computed once per denoising pass instead of at every step.

Every block's cross-attention reads the text through ``k_norm(to_k(context))`` and ``to_v(context)``, which
depend on the text embeddings alone: not on the latents, the timestep or the guidance. The official loop (and
diffusers') recomputes them at every step; for the 2B at CFG with the official 256 text tokens that is 240 GFLOP
a step, some 8 % of a CPU step at 384 latent tokens (BENCHMARKS.md), under 1 % at the paper's 6144 tokens. ltxcli's
text has only the longest prompt's tokens (:mod:`ltxcli.text`), which makes them smaller still.

A pass slices its text batch ``[negative, positive, positive]`` per step by the guidance branches that step runs
(:meth:`ltxcli.pipeline.Pipeline._denoise`). :class:`TextKVCache` computes each distinct slice's keys and values
(:meth:`ltxcli.models.transformer.LTXVideoTransformer.text_keys_values`) at the first step that uses it, from
the same slice the uncached call would project, so every step's result is the uncached one bit for bit, and
drops them after the last step that uses it. They take ``2 * num_layers * branches * text tokens * width``
elements of the run's dtype (:func:`text_kv_bytes`; the memory plan counts them at :data:`TEXT_TOKENS`): at most
117 MB for the 2B at CFG in bfloat16, 403 MB for the 13B.

Not used under sequential offload: there a block's weights reach the device only inside that block's call
(:mod:`ltxcli.offload`), and that mode exists to trade speed for memory, which the cache would spend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from ltxcli.models.transformer import TextKV

__all__ = ["TEXT_TOKENS", "TextKVCache", "text_kv_bytes", "used_with"]

#: The most text tokens a pass holds (:meth:`ltxcli.text.TextEncoder.encode`'s ``max_tokens``; it pads only to the
#: longest prompt, so this is the memory plan's upper bound).
TEXT_TOKENS = 256


def used_with(offload: str) -> bool:
    """Whether a pass keeps the text's keys and values under the ``--offload`` mode ``offload`` (the pipeline and
    the memory plan both ask): not under ``sequential`` (see the module docstring)."""
    return offload != "sequential"


def text_kv_bytes(num_layers: int, width: int, branches: int, text_tokens: int, itemsize: int) -> int:
    """Bytes of one text slice's keys and values: ``num_layers`` pairs of ``[branches, text_tokens, width]``."""
    return 2 * num_layers * branches * text_tokens * width * itemsize


class TextKVCache:
    """The keys and values of ``text[slices[step]]`` for each step of one pass (``at(step)``), or None for every
    step when not ``enabled``. ``transformer``: an ``LTXVideoTransformer`` or a wrapper with its
    ``text_keys_values``."""

    def __init__(self, transformer: Any, text: Tensor, slices: Sequence[slice], enabled: bool = True) -> None:
        self._transformer = transformer
        self._text = text
        self._keys = [(s.start, s.stop) for s in slices]
        self._last = {key: step for step, key in enumerate(self._keys)}  # the last step that uses each slice
        self._held: dict[tuple[int, int], TextKV] = {}
        self.enabled = enabled
        self.computed = 0  # slices computed (for tests and diagnostics)

    def at(self, step: int) -> TextKV | None:
        """The keys and values for ``step``: computed at the first step of its slice, released from the cache at
        the last one (the caller's reference keeps them for that step's call)."""
        if not self.enabled:
            return None
        key = self._keys[step]
        kv = self._held.get(key)
        if kv is None:
            kv = self._held[key] = self._transformer.text_keys_values(self._text[key[0]:key[1]])
            self.computed += 1
        if self._last[key] == step:
            del self._held[key]  # so the cache is empty once the pass's last step has its tensors
        return kv
