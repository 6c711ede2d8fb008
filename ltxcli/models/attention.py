"""The attention kernel call of the DiT: one function, dispatching on the backend its caller holds."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from ltxcli.models.attention_kernels import MASKLESS_KERNELS, AttentionBackend, external_kernel


def _sdpa(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Tensor | None) -> Tensor:
    # [B, N, D] -> [B, heads, N, D/heads]
    q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    # [B, heads, Nq, d] -> [B, Nq, D]
    return out.transpose(1, 2).flatten(2)


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    heads: int,
    mask: Tensor | None,
    backend: AttentionBackend | str = AttentionBackend.SDPA,
) -> Tensor:
    """Multi-head scaled-dot-product attention on flat ``[B, N, D]`` tensors; returns ``[B, Nq, D]``.

    ``mask`` is an ADDITIVE bias (0 keep, -10000 drop, as the official code builds it) broadcastable to
    ``[B, heads, Nq, Nk]``, e.g. ``[B, 1, 1, Nk]`` for the text mask; ``None`` attends everywhere.
    The softmax scale is ``1/sqrt(D/heads)``. ``backend``: ``sdpa`` (torch picks the kernel), ``math`` (SDPA's
    exact math kernel), or an unmasked-only kernel (``flash3``, ``flash2``, ``sage``), for which a mask is an
    error. ``auto`` must be resolved beforehand (:func:`ltxcli.kernels.set_attention_backend`).
    """
    if type(backend) is str:
        backend = AttentionBackend(backend)
    if backend is AttentionBackend.SDPA:
        out = _sdpa(q, k, v, heads, mask)
    elif backend is AttentionBackend.MATH:
        with sdpa_kernel(SDPBackend.MATH):
            out = _sdpa(q, k, v, heads, mask)
    elif backend in MASKLESS_KERNELS:
        if mask is not None:
            raise ValueError(f"the {backend.value} attention kernel takes no mask; masked attention must use sdpa")
        kernel = external_kernel(backend)
        # [B, N, D] -> [B, N, heads, D/heads]: the layout these kernels take, no copy
        out = kernel(*(t.unflatten(-1, (heads, -1)) for t in (q, k, v))).flatten(2)
    else:
        raise ValueError(f"attention backend {backend} must be resolved to a kernel first")
    # the official processor casts back to q's dtype
    return out.to(q.dtype)
