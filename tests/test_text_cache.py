"""The text's cross-attention keys and values computed once per pass (:mod:`ltxcli.text_cache`).

The reference is the same model or pipeline without them: every block then projects the text at every step, as the
official loop and diffusers do. Results must be equal bit for bit, and the projection must run once per distinct
text slice of a pass instead of once per step.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny_models import cpu_tiny_pipeline, randomise_normal

import ltxcli.pipeline as pipeline_module
from ltxcli.memory.plan import estimate_memory
from ltxcli.models.configs import TransformerConfig
from ltxcli.models.rope import latent_coords, pixel_coords
from ltxcli.models.transformer import LTXVideoTransformer
from ltxcli.text_cache import TextKVCache
from ltxcli.tiny import tiny_vae_config

TINY = TransformerConfig(
    num_attention_heads=2, attention_head_dim=10, num_layers=3, in_channels=8, out_channels=8,
    cross_attention_dim=20, caption_channels=32,
)
SMALL = dict(height=64, width=96, num_frames=9, seed=3)


@pytest.fixture(scope="module")
def model() -> LTXVideoTransformer:
    torch.manual_seed(0)
    m = LTXVideoTransformer(TINY).eval().requires_grad_(False)
    randomise_normal(m, seed=1)
    return m


def _inputs(per_token: bool) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(5)
    n = 12
    grid = pixel_coords(latent_coords(3, 2, 2), causal_fix=True)[None]
    t = torch.rand(3, n, generator=gen) if per_token else torch.tensor([[0.7], [0.7], [0.7]])
    skip = torch.ones(TINY.num_layers, 3)
    skip[1, 2] = 0  # STG on block 1 of the perturbed branch
    return dict(
        hidden_states=torch.randn(3, n, TINY.in_channels, generator=gen),
        encoder_hidden_states=torch.randn(3, 6, TINY.caption_channels, generator=gen),
        timestep=t, indices_grid=grid, encoder_attention_mask=torch.tensor([[1, 1, 1, 1, 0, 0]] * 3),
        skip_layer_mask=skip, skip_layer_strategy="attention_values",
    )


@pytest.mark.parametrize("per_token", [False, True])
def test_forward_with_the_text_keys_values_is_the_plain_forward_bit_for_bit(model: LTXVideoTransformer,
                                                                             per_token: bool) -> None:
    kw = _inputs(per_token)
    with torch.no_grad():
        plain = model(**kw)
        kv = model.text_keys_values(kw["encoder_hidden_states"])
        cached = model(**kw, text_kv=kv)
    assert len(kv) == TINY.num_layers and kv[0][0].shape == (3, 6, TINY.inner_dim)
    assert torch.equal(cached, plain)


def test_a_block_without_text_is_refused(model: LTXVideoTransformer) -> None:
    x, inputs = model.prepare(**_inputs(False))
    with pytest.raises(ValueError, match="needs the text"):
        model.run_blocks(x, inputs._replace(context=None))


def test_rows_of_the_block_inputs_pick_the_keys_and_values_too(model: LTXVideoTransformer) -> None:
    """What a step cache does when only some branches compute (:meth:`BlockInputs.rows`)."""
    kw = _inputs(False)
    index = torch.tensor([0, 2])
    with torch.no_grad():
        x, inputs = model.prepare(**kw)
        x_kv, inputs_kv = model.prepare(**kw, text_kv=model.text_keys_values(kw["encoder_hidden_states"]))
        assert inputs_kv.context is None  # the projection is skipped
        plain = model.run_blocks(x.index_select(0, index), inputs.rows(index))
        cached = model.run_blocks(x_kv.index_select(0, index), inputs_kv.rows(index))
    torch.testing.assert_close(cached, plain, rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def tiny() -> Any:
    yield from cpu_tiny_pipeline()


class _Counting:
    """Counts the calls of one attention layer's :meth:`context_kv` (an instance attribute shadowing it)."""

    def __init__(self, attn: Any) -> None:
        self.attn, self.calls = attn, 0
        bound = attn.context_kv

        def counted(context: torch.Tensor) -> Any:
            self.calls += 1
            return bound(context)

        attn.context_kv = counted

    def __enter__(self) -> _Counting:
        return self

    def __exit__(self, *exc: object) -> None:
        del self.attn.context_kv


def _without_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline_module, "TextKVCache",
                        lambda *a, **k: TextKVCache(*a, **{**k, "enabled": False}))


@pytest.mark.parametrize("settings", [
    dict(steps=5),  # CFG + STG: one slice of three rows
    dict(steps=4, cache="teacache:0.3"),  # with the step cache skipping some branches
])
def test_a_pass_projects_each_text_slice_once_with_the_same_result(tiny: Any, monkeypatch: pytest.MonkeyPatch,
                                                                    settings: dict[str, Any]) -> None:
    block = tiny.transformer.transformer_blocks[-1]
    with _Counting(block.attn2) as counted:
        res = tiny.generate("a cat", **SMALL, **settings)
    with monkeypatch.context() as m:
        _without_cache(m)
        with _Counting(block.attn2) as plain_count:
            plain = tiny.generate("a cat", **SMALL, **settings)
    steps = settings["steps"]
    assert counted.calls == 1
    if "cache" in settings:  # skipped steps run no block, partial ones project their branches' rows
        assert 1 < plain_count.calls < steps
        assert res.settings["cache"]["skipped"] > 0
        torch.testing.assert_close(res.latents, plain.latents, rtol=1e-5, atol=1e-6)
    else:
        assert plain_count.calls == steps
        assert torch.equal(res.latents, plain.latents)
        assert torch.equal(res.video, plain.video)


def test_each_slice_is_computed_at_its_first_step_and_released_after_its_last(model: LTXVideoTransformer) -> None:
    """A schedule whose guidance changes (CFG off, then on with STG, then CFG alone): three slices of the text batch
    ``[negative, positive, positive]``."""
    text = torch.randn(3, 6, TINY.caption_channels, generator=torch.Generator().manual_seed(6))
    slices = [slice(1, 2)] * 2 + [slice(0, 3)] * 3 + [slice(0, 2)] * 2
    cache = TextKVCache(model, text, slices)
    with torch.no_grad():
        for step, sl in enumerate(slices):
            got = cache.at(step)
            want = model.text_keys_values(text[sl])
            assert got is not None and all(torch.equal(a, b) for pa, pb in zip(got, want, strict=True)
                                           for a, b in zip(pa, pb, strict=True))
            assert len(cache._held) == (0 if step in (1, 4, 6) else 1)
    assert cache.computed == 3
    assert TextKVCache(model, text, slices, enabled=False).at(0) is None


def test_sequential_offload_computes_them_at_every_step(tiny: Any) -> None:
    offload = tiny.offload
    from ltxcli.offload import Offload

    tiny.offload = Offload.SEQUENTIAL
    try:
        with _Counting(tiny.transformer.transformer_blocks[0].attn2) as counted:
            tiny.generate("a cat", **SMALL, steps=3)
    finally:
        tiny.offload = offload
    assert counted.calls == 3


def test_the_memory_plan_counts_them_except_under_sequential_offload() -> None:
    cfg = TransformerConfig(num_layers=28)  # the 2B's blocks
    vae = tiny_vae_config()
    kw = dict(height=512, width=768, num_frames=121, dtype=torch.bfloat16, branches=2)
    held = estimate_memory(cfg, vae, offload="none", **kw).stage("denoise").activations
    streamed = estimate_memory(cfg, vae, offload="sequential", **kw).stage("denoise").activations
    # 28 blocks x (keys, values) x 2 branches x 256 text tokens x 2048 wide x 2 bytes (bfloat16)
    assert held - streamed == 28 * 2 * 2 * 256 * 2048 * 2
