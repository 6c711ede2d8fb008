"""CausalVideoVAE against the official ``CausalVideoAutoencoder`` (ltx-video 0.1.2), per release family.

Tiny widths (base channels 8, 16 latent channels) with the real block lists of each family.
"""

from __future__ import annotations

import copy

import pytest
import torch

einops = pytest.importorskip("einops")
cva = pytest.importorskip("ltx_video.models.autoencoders.causal_video_autoencoder")
vae_encode = pytest.importorskip("ltx_video.models.autoencoders.vae_encode")

from tiny_models import randomise_scaled  # noqa: E402

from ltxcli.models.configs import VAEConfig, official_vae_config  # noqa: E402
from ltxcli.models.vae import CausalVideoVAE  # noqa: E402
from ltxcli.models.vae_blocks import (  # noqa: E402
    depth_to_space,
    patchify,
    space_to_depth,
    unpatchify,
)

FAMILIES = ("0.9", "0.9.1", "0.9.5")
LATENT_CH = 16


def tiny_official_config(family: str, **overrides: object) -> dict:
    cfg = official_vae_config(family)
    cfg.update(latent_channels=LATENT_CH, encoder_base_channels=8, decoder_base_channels=8, **overrides)
    return cfg


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def stats(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "per_channel_statistics.std-of-means": 0.5 + torch.rand(LATENT_CH, generator=g),
        "per_channel_statistics.mean-of-means": 0.5 * torch.randn(LATENT_CH, generator=g),
    }


def build_pair(family: str, **overrides: object) -> tuple[torch.nn.Module, CausalVideoVAE]:
    torch.manual_seed(0)
    cfg = tiny_official_config(family, **overrides)
    official = cva.CausalVideoAutoencoder.from_config(copy.deepcopy(cfg)).eval()
    randomise_scaled(official, seed=1)
    sd = {**official.state_dict(), **stats(seed=2)}
    official.load_state_dict(sd)  # also registers std_of_means / mean_of_means
    ours = CausalVideoVAE(VAEConfig.from_official(cfg)).eval()
    ours.load_state_dict(sd, strict=True)
    return official, ours


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request: pytest.FixtureRequest) -> tuple[str, torch.nn.Module, CausalVideoVAE]:
    official, ours = build_pair(request.param)
    return request.param, official, ours


def video(seed: int, frames: int = 17, h: int = 64, w: int = 64, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, h, w, generator=g) * 2 - 1


def latents(seed: int, frames: int = 3, h: int = 2, w: int = 2, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, LATENT_CH, frames, h, w, generator=g)


def test_reshapes_match_einops() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 8, 12)
    ref = einops.rearrange(x, "b c (f p) (h q) (w r) -> b (c p r q) f h w", p=1, q=4, r=4)
    assert torch.equal(patchify(x, 4), ref)
    assert torch.equal(unpatchify(ref, 4), x)
    y = torch.randn(2, 3, 4, 8, 6)
    for s in ((2, 2, 2), (1, 2, 2), (2, 1, 1)):
        ref = einops.rearrange(y, "b c (d p1) (h p2) (w p3) -> b (c p1 p2 p3) d h w", p1=s[0], p2=s[1], p3=s[2])
        assert torch.equal(space_to_depth(y, s), ref)
        back = einops.rearrange(ref, "b (c p1 p2 p3) d h w -> b c (d p1) (h p2) (w p3)", p1=s[0], p2=s[1], p3=s[2])
        assert torch.equal(depth_to_space(ref, s), back)


def test_state_dict_keys_match_official(pair: tuple[str, torch.nn.Module, CausalVideoVAE]) -> None:
    family, official, ours = pair
    theirs = {k: v.shape for k, v in official.state_dict().items() if k not in ("std_of_means", "mean_of_means")}
    mine = {k: v.shape for k, v in ours.state_dict().items() if not k.startswith("per_channel_statistics.")}
    assert mine == theirs
    keys = set(mine)
    if family != "0.9":
        assert "decoder.timestep_scale_multiplier" in keys
        assert "decoder.last_scale_shift_table" in keys
        assert "decoder.up_blocks.0.res_blocks.0.scale_shift_table" in keys
        assert "decoder.last_time_embedder.timestep_embedder.linear_2.weight" in keys
    if family == "0.9.1":
        assert "decoder.up_blocks.2.res_blocks.0.per_channel_scale1" in keys
    if family in ("0.9", "0.9.1"):
        assert "encoder.down_blocks.2.norm3.norm.weight" in keys
        assert "encoder.down_blocks.2.conv_shortcut.weight" in keys
        assert "encoder.down_blocks.1.conv.weight" in keys
    else:
        assert "encoder.down_blocks.1.conv.conv.weight" in keys
    assert ours.decoder.timestep_conditioning == (family != "0.9")


@torch.no_grad()
def test_encode_matches_official(pair: tuple[str, torch.nn.Module, CausalVideoVAE]) -> None:
    family, official, ours = pair
    x = video(seed=3)
    ref = vae_encode.normalize_latents(official.encode(x).latent_dist.mode(), official, True)
    got = ours.encode(x)
    assert got.shape == ref.shape == (2, LATENT_CH, 3, 2, 2)
    moments_err = rel_err(ours.encoder(x), official.encoder(x))
    err = rel_err(got, ref)
    print(f"[{family}] encode: max rel err {err:.2e} (moments {moments_err:.2e})")
    assert err <= 1e-5 and moments_err <= 1e-5


@torch.no_grad()
def test_decode_matches_official(pair: tuple[str, torch.nn.Module, CausalVideoVAE]) -> None:
    family, official, ours = pair
    z = latents(seed=4)
    for t_ours, t_official in ((0.05, torch.tensor([0.05, 0.05])), (torch.tensor([0.05, 0.3]),) * 2):
        t_ref = t_official if ours.timestep_conditioning else None
        torch.manual_seed(1234)
        ref = vae_encode.vae_decode(z, official, is_video=True, vae_per_channel_normalize=True, timestep=t_ref)
        got = ours.decode(z, t_ours, generator=torch.Generator().manual_seed(1234))
        torch.manual_seed(1234)
        got_global = ours.decode(z, t_ours)  # no generator: the global RNG, like official
        assert got.shape == ref.shape == (2, 3, 17, 64, 64)
        err = rel_err(got, ref)
        print(f"[{family}] decode t={t_ours}: max rel err {err:.2e} (global RNG {rel_err(got_global, ref):.2e})")
        assert err <= 1e-5
        assert torch.equal(got, got_global)


@torch.no_grad()
def test_noise_injection_follows_generator() -> None:
    _, ours = build_pair("0.9.1")
    z = latents(seed=5)
    a = ours.decode(z, 0.05, generator=torch.Generator().manual_seed(7))
    b = ours.decode(z, 0.05, generator=torch.Generator().manual_seed(7))
    c = ours.decode(z, 0.05, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert rel_err(c, a) > 1e-3


@pytest.mark.parametrize(
    ("family", "overrides"),
    [("0.9.5", {"spatial_padding_mode": "reflect"}), ("0.9.1", {"causal_decoder": True})],
)
@torch.no_grad()
def test_config_variants_match_official(family: str, overrides: dict) -> None:
    official, ours = build_pair(family, **overrides)
    x = video(seed=6, batch=1)
    ref = vae_encode.normalize_latents(official.encode(x).latent_dist.mode(), official, True)
    enc_err = rel_err(ours.encode(x), ref)
    z = latents(seed=7, batch=1)
    torch.manual_seed(99)
    ref = vae_encode.vae_decode(z, official, True, vae_per_channel_normalize=True, timestep=torch.tensor([0.05]))
    dec_err = rel_err(ours.decode(z, 0.05, generator=torch.Generator().manual_seed(99)), ref)
    print(f"[{family} {overrides}] encode {enc_err:.2e}, decode {dec_err:.2e}")
    assert enc_err <= 1e-5 and dec_err <= 1e-5


@torch.no_grad()
def test_bfloat16_close_to_official() -> None:
    official, ours = build_pair("0.9.5")
    official.to(torch.bfloat16)
    ours.to(torch.bfloat16)
    x = video(seed=8, batch=1).to(torch.bfloat16)
    ref = vae_encode.normalize_latents(official.encode(x).latent_dist.mode(), official, True)
    got = ours.encode(x)
    assert got.dtype == torch.bfloat16
    enc_err = rel_err(got.float(), ref.float())
    z = latents(seed=9, batch=1).to(torch.bfloat16)
    ref = vae_encode.vae_decode(z, official, True, vae_per_channel_normalize=True, timestep=torch.tensor([0.05]))
    got = ours.decode(z, 0.05)
    assert got.dtype == torch.bfloat16
    dec_err = rel_err(got.float(), ref.float())
    print(f"[0.9.5 bf16] encode {enc_err:.2e}, decode {dec_err:.2e}")
    assert enc_err <= 1e-2 and dec_err <= 1e-2


@pytest.mark.parametrize("family", ["0.9", "0.9.5"])
@torch.no_grad()
def test_encoder_is_temporally_causal(family: str) -> None:
    _, ours = build_pair(family)
    x = video(seed=10, frames=17, batch=1)
    full = ours.encode(x)
    first = ours.encode(x[:, :, :1])
    nine = ours.encode(x[:, :, :9])
    assert first.shape[2] == 1 and nine.shape[2] == 2
    for part, ref in ((first, full[:, :, :1]), (nine, full[:, :, :2])):
        err = (part - ref).abs().max().item()
        assert err <= 1e-6 or err <= 1e-5 * ref.abs().max().item(), err


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_frame_and_size_arithmetic(family: str) -> None:
    _, ours = build_pair(family)
    assert ours.spatial_compression == 32 and ours.temporal_compression == 8
    for k in (0, 1, 2):
        z = ours.encode(video(seed=11, frames=1 + 8 * k, h=32, w=96, batch=1))
        assert z.shape == (1, LATENT_CH, 1 + k, 1, 3)
        out = ours.decode(z, 0.05)
        assert out.shape == (1, 3, 1 + 8 * k, 32, 96)


@torch.no_grad()
def test_timestep_conditioning() -> None:
    z = latents(seed=12, batch=1)
    _, ours = build_pair("0.9.5")
    a, b = ours.decode(z, 0.05), ours.decode(z, 0.5)
    assert rel_err(a, b) > 1e-3
    assert torch.equal(ours.decode(z, torch.tensor([0.05])), a)
    with pytest.raises(ValueError, match="timestep"):
        ours.decode(z)
    with pytest.raises(ValueError, match="batch"):
        ours.decode(z, torch.tensor([0.05, 0.1, 0.2]))

    _, ours09 = build_pair("0.9")
    a = ours09.decode(z)
    assert torch.equal(ours09.decode(z, 0.05), a)
    assert torch.equal(ours09.decode(z, torch.tensor([0.9])), a)


def test_normalize_roundtrip() -> None:
    _, ours = build_pair("0.9")
    s = stats(seed=2)
    z = latents(seed=13)
    std = s["per_channel_statistics.std-of-means"].view(1, -1, 1, 1, 1)
    mean = s["per_channel_statistics.mean-of-means"].view(1, -1, 1, 1, 1)
    assert torch.allclose(ours.normalize(z), (z - mean) / std)
    assert torch.allclose(ours.unnormalize(ours.normalize(z)), z, atol=1e-6)
