"""The attention kernel call of the DiT: one function, so a backend choice can be routed through it later."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def attention(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Tensor | None) -> Tensor:
    """Multi-head scaled-dot-product attention on flat ``[B, N, D]`` tensors; returns ``[B, Nq, D]``.

    ``mask`` is an ADDITIVE bias (0 keep, -10000 drop, as the official code builds it) broadcastable to
    ``[B, heads, Nq, Nk]``, e.g. ``[B, 1, 1, Nk]`` for the text mask; ``None`` attends everywhere.
    The softmax scale is ``1/sqrt(D/heads)``.
    """
    # [B, N, D] -> [B, heads, N, D/heads]
    q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    # [B, heads, Nq, d] -> [B, Nq, D]; the official processor casts back to q's dtype.
    return out.transpose(1, 2).flatten(2).to(q.dtype)
