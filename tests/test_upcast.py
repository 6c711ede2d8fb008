"""Weights kept in the checkpoint's dtype and upcast per call (ltxcli.models.upcast, keep_checkpoint_dtype).

The reference for every comparison is the same checkpoint converted to the compute dtype at load
(``keep_checkpoint_dtype=False``), the behaviour the official loaders have: outputs must agree bit for bit.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_models import randomise_scaled
from tiny_t5 import make_tiny_text_encoder
from torch import nn

from ltxcli.kernels import describe_model
from ltxcli.loading import (
    keep_narrow,
    load_transformer,
    load_upsampler,
    load_vae,
    save_official_checkpoint,
    save_upsampler,
)
from ltxcli.models import transformer as T
from ltxcli.models.configs import UpsamplerConfig, VAEConfig, official_vae_config
from ltxcli.models.transformer import LTXVideoTransformer
from ltxcli.models.upcast import (
    UpcastConv3d,
    UpcastLinear,
    UpcastScratch,
    compute_dtype,
    convert_to_upcast,
    first_param_dtype,
    stored_weight_bytes,
)
from ltxcli.models.upsampler import LatentUpsampler
from ltxcli.models.vae import CausalVideoVAE
from ltxcli.tiny import TINY_TRANSFORMER


def _pair(loader, path, **kw):
    eager = loader(path, dtype=torch.float32, keep_checkpoint_dtype=False, **kw)
    lazy = loader(path, dtype=torch.float32, **kw)  # the CPU default
    return eager, lazy


def _transformer_inputs(cfg, n_tok: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        "hidden_states": torch.randn(2, n_tok, cfg.in_channels, generator=g),
        "encoder_hidden_states": torch.randn(2, 5, cfg.caption_channels, generator=g),
        "timestep": torch.rand(2, 1, generator=g),
        "indices_grid": torch.rand(2, 3, n_tok, generator=g) * 8,
        "encoder_attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]),
    }


@pytest.fixture(scope="module")
def transformer_file(tmp_path_factory):
    cfg = dataclasses.replace(TINY_TRANSFORMER, num_layers=3)
    torch.manual_seed(0)
    model = randomise_scaled(LTXVideoTransformer(cfg), seed=1).eval().to(torch.bfloat16)
    path = tmp_path_factory.mktemp("upcast") / "t.safetensors"
    save_official_checkpoint(path, transformer=model)
    return path, cfg


@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "blas"])
def test_transformer_bit_identical_to_converting_at_load(transformer_file, monkeypatch, onednn):
    if onednn and not T._onednn_linear_available():
        pytest.skip("oneDNN linear is not available in this torch build: the BLAS case covers this machine")
    monkeypatch.setattr(T, "_ONEDNN_LINEAR", onednn)
    path, cfg = transformer_file
    eager, lazy = _pair(load_transformer, path)
    to_q = lazy.transformer_blocks[0].attn1.to_q
    assert type(to_q) is UpcastLinear and to_q.weight.dtype == torch.bfloat16 and to_q.bias.dtype == torch.float32
    assert compute_dtype(to_q) == torch.float32 and compute_dtype(lazy.patchify_proj) == torch.float32
    # norms and tables are converted at load; only linear weights stay narrow
    assert lazy.transformer_blocks[0].scale_shift_table.dtype == torch.float32
    n_linear = sum(type(m) is nn.Linear for m in eager.modules())
    layers, nbytes = stored_weight_bytes(lazy)
    assert layers == n_linear == sum(isinstance(m, UpcastLinear) for m in lazy.modules())
    assert nbytes == sum(m.weight.numel() * 2 for m in eager.modules() if type(m) is nn.Linear)
    assert describe_model(lazy)["upcast_layers"] == layers and describe_model(eager)["upcast_layers"] == 0
    # one scratch per model, grown to the largest weight
    scratches = {id(m._scratch) for m in lazy.modules() if isinstance(m, UpcastLinear)}
    assert len(scratches) == 1
    inp = _transformer_inputs(cfg)
    with torch.inference_mode():
        want = eager(**inp)
        got = lazy(**inp)
        again = lazy(**inp)  # the scratch is reused: a stale weight would show here
    assert torch.equal(got, want) and torch.equal(again, want)
    biggest = max(m.weight.numel() for m in eager.modules() if type(m) is nn.Linear)
    assert to_q._scratch.nbytes() == biggest * 4


def test_transformer_under_autograd_and_dtype_moves(transformer_file):
    path, cfg = transformer_file
    eager, lazy = _pair(load_transformer, path)
    inp = _transformer_inputs(cfg)
    with torch.no_grad():
        want = eager(**inp)
    x = inp["hidden_states"].clone().requires_grad_(True)
    got = lazy(**{**inp, "hidden_states": x})  # grad mode: a fresh cast, never the shared scratch
    got.square().sum().backward()
    assert torch.allclose(got.detach(), want, rtol=1e-5, atol=1e-6) and x.grad is not None
    assert torch.isfinite(x.grad).all()
    # .to(bfloat16) makes weight and bias agree: no upcast, plain bf16 compute
    lazy_bf16 = lazy.to(torch.bfloat16)
    to_q = lazy_bf16.transformer_blocks[0].attn1.to_q
    assert compute_dtype(to_q) == torch.bfloat16 and to_q.compute_weight() is to_q.weight
    # .float() materialises the weights
    lazy_f32 = load_transformer(path, dtype=torch.float32).float()
    assert lazy_f32.transformer_blocks[0].attn1.to_q.weight.dtype == torch.float32
    with torch.inference_mode():
        assert torch.equal(lazy_f32(**inp), want)


@pytest.mark.parametrize("family", ["0.9", "0.9.1", "0.9.5"])
def test_vae_bit_identical_to_converting_at_load(tmp_path, family):
    cfg = official_vae_config(family)
    cfg.update(latent_channels=16, encoder_base_channels=8, decoder_base_channels=8)
    torch.manual_seed(0)
    vae = randomise_scaled(CausalVideoVAE(VAEConfig.from_official(cfg)), seed=2).eval()
    vae.per_channel_statistics.load_state_dict(
        {"std-of-means": 0.5 + torch.rand(16), "mean-of-means": 0.3 * torch.randn(16)}
    )
    path = tmp_path / "vae.safetensors"
    save_official_checkpoint(path, vae=vae.to(torch.bfloat16))
    eager, lazy = _pair(load_vae, path)
    conv = lazy.decoder.conv_in.conv
    assert type(conv) is UpcastConv3d and conv.weight.dtype == torch.bfloat16
    assert first_param_dtype(lazy.decoder.up_blocks) == torch.float32
    g = torch.Generator().manual_seed(4)
    z = torch.randn(1, 16, 2, 2, 2, generator=g)
    video = torch.rand(1, 3, 9, 64, 64, generator=g) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(lazy.encode(video), eager.encode(video))
        want = eager.decode(z, timestep=0.05, generator=torch.Generator().manual_seed(5))
        got = lazy.decode(z, timestep=0.05, generator=torch.Generator().manual_seed(5))
    assert got.dtype == torch.float32 and torch.equal(got, want)


def test_upsampler_bit_identical_to_converting_at_load(tmp_path):
    torch.manual_seed(0)
    up = randomise_scaled(LatentUpsampler(UpsamplerConfig(in_channels=16, mid_channels=32, num_blocks_per_stage=2)),
                          6).eval()
    path = tmp_path / "up.safetensors"
    save_upsampler(path, up.to(torch.bfloat16))
    eager, lazy = _pair(load_upsampler, path)
    assert stored_weight_bytes(lazy)[0] == sum(type(m) in (nn.Conv2d, nn.Conv3d) for m in eager.modules())
    x = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        assert torch.equal(lazy(x), eager(x))


def test_wide_checkpoints_and_explicit_off_are_untouched(tmp_path, transformer_file):
    path, _ = transformer_file
    # bf16 compute from a bf16 checkpoint: nothing is narrower, nothing converted
    same = load_transformer(path, dtype=torch.bfloat16)
    assert stored_weight_bytes(same) == (0, 0) and not any(isinstance(m, UpcastLinear) for m in same.modules())
    # explicit off, and the default only turns it on for the CPU
    off = load_transformer(path, dtype=torch.float32, keep_checkpoint_dtype=False)
    assert stored_weight_bytes(off) == (0, 0)
    assert keep_narrow(None, None) and keep_narrow(None, "cpu")
    assert not keep_narrow(None, "cuda:0") and not keep_narrow(False, "cpu") and keep_narrow(True, "cuda")


def test_convert_to_upcast_only_touches_narrow_layers_with_bias():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4, bias=False), nn.Conv3d(2, 2, 1), nn.Linear(4, 4))
    model[0].weight.data = model[0].weight.data.bfloat16()
    model[1].weight.data = model[1].weight.data.bfloat16()
    model[2].weight.data = model[2].weight.data.bfloat16()
    assert convert_to_upcast(model, UpcastScratch()) == 2
    assert [type(m).__name__ for m in model] == ["UpcastLinear", "Linear", "UpcastConv3d", "Linear"]


def test_load_pipeline_default_on_cpu_matches_converting_at_load(tmp_path):
    """A bf16 checkpoint through load_pipeline + generate: the CPU default (narrow weights) gives the same video."""
    import ltxcli
    from ltxcli.tiny import build_pipeline

    tiny = build_pipeline(torch.device("cpu"), torch.float32)
    path = tmp_path / "ckpt.safetensors"
    save_official_checkpoint(path, transformer=tiny.transformer.to(torch.bfloat16), vae=tiny.vae.to(torch.bfloat16))
    te = make_tiny_text_encoder(tmp_path / "te")
    kwargs = dict(seed=3, num_frames=9, height=64, width=96, steps=2, enhance_prompt="off")  # no Hub access
    eager = ltxcli.load_pipeline(path, text_encoder=te, keep_checkpoint_dtype=False)
    lazy = ltxcli.load_pipeline(path, text_encoder=te)
    assert stored_weight_bytes(eager.transformer)[0] == 0 and stored_weight_bytes(lazy.transformer)[0] > 0
    assert stored_weight_bytes(lazy.vae)[0] > 0 and lazy.dtype == torch.float32
    want = eager.generate("a cat", **kwargs)
    got = lazy.generate("a cat", **kwargs)
    assert torch.equal(got.latents, want.latents) and torch.equal(got.video, want.video)


def test_preflight_counts_what_the_cpu_loader_keeps(transformer_file):
    """The memory plan (modules the loader builds on the meta device) agrees with the bytes a CPU load holds after
    a forward."""
    from ltxcli.memory.weights import checkpoint_parts, model_bytes

    path, cfg = transformer_file
    lazy = load_transformer(path, dtype=torch.float32)
    with torch.inference_mode():
        lazy(**_transformer_inputs(cfg))  # grows the scratch to the largest weight
    scratch = next(m._scratch for m in lazy.modules() if isinstance(m, UpcastLinear)).nbytes()
    held = sum(t.numel() * t.element_size() for t in lazy.state_dict().values()) + scratch
    assert model_bytes(path, torch.float32, narrow=True) == held
    assert checkpoint_parts(path, torch.float32, narrow=True).transformer == held
    eager = load_transformer(path, dtype=torch.float32, keep_checkpoint_dtype=False)
    assert model_bytes(path, torch.float32) == sum(t.numel() * 4 for t in eager.state_dict().values())


def test_random_weights_can_be_built_narrow():
    """``ltx bench --random-weights`` on the CPU: layer weights drawn in bf16 and kept there, like a CPU load."""
    from ltxcli.perf.bench import materialize_random_

    cfg = dataclasses.replace(TINY_TRANSFORMER, num_layers=2)
    with torch.device("meta"):
        model = LTXVideoTransformer(cfg)
    materialize_random_(model, device="cpu", dtype=torch.float32, seed=0, narrow=torch.bfloat16)
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert stored_weight_bytes(model)[0] == n_linear
    assert {p.dtype for n, p in model.named_parameters() if not n.endswith("weight")} == {torch.float32}
    with torch.inference_mode():
        assert torch.isfinite(model(**_transformer_inputs(cfg))).all()


def test_bench_kernel_line_names_widened_layers():
    from ltxcli.perf.bench import _kernel_line

    base = {"attention": {"self_attention": "sdpa", "cross_attention": "sdpa"}, "fp8_linear_layers": 0,
            "compile": None}
    assert _kernel_line(base) == "attention sdpa/sdpa, fp8 layers 0, compile off"
    assert _kernel_line({**base, "upcast_layers": 254}) == (
        "attention sdpa/sdpa, fp8 layers 0, 254 layers widened per call, compile off")
