"""Winograd F(2,3) along time for the VAE's 3x3x3 convolutions (ltxcli.models.winograd).

References: PyTorch's own conv3d of the time-padded input (the direct path, bit-identical to the official
code) and the official ``ltx_video`` VAE. The regrouped sum agrees to float rounding, not bit for bit.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from tiny_models import randomise_scaled

from ltxcli.models import winograd
from ltxcli.models.configs import VAEConfig
from ltxcli.models.upcast import UpcastScratch, convert_to_upcast
from ltxcli.models.vae import CausalVideoVAE
from ltxcli.models.vae_blocks import CausalConv3d, DepthToSpaceUpsample, ResnetBlock3D
from ltxcli.models.winograd import (
    MIN_CHANNELS,
    MIN_OUTPUT_VOXELS,
    ConvAlgorithm,
    parse_conv_algorithm,
    time_winograd_conv3d,
    use_winograd,
)


def _padded(x: torch.Tensor, causal: bool) -> torch.Tensor:
    """The official time padding, written out independently of CausalConv3d."""
    if causal:
        return torch.cat([x[:, :, :1], x[:, :, :1], x], dim=2)
    return torch.cat([x[:, :, :1], x, x[:, :, -1:]], dim=2)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("frames", [2, 3, 4, 5, 8, 9])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate"])
@pytest.mark.parametrize("chunk", [None, 35, 70])  # one chunk; one pair (5x7 positions) or two pairs per chunk
def test_equals_direct_conv_in_float64(
    frames: int, causal: bool, mode: str, chunk: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if chunk is not None:
        monkeypatch.setattr(winograd, "CHUNK_POSITIONS", chunk)
    g = torch.Generator().manual_seed(frames)
    conv = CausalConv3d(6, 5, 3, spatial_padding_mode=mode).double()
    x = torch.randn(2, 6, frames, 5, 7, generator=g, dtype=torch.float64)
    with torch.no_grad():
        ref = conv.conv(_padded(x, causal))  # PyTorch's conv3d of the padded input
        got = time_winograd_conv3d(conv.conv, _padded(x, causal))
        conv.algorithm = ConvAlgorithm.WINOGRAD
        via_module = conv(x, causal)
    assert got.shape == ref.shape == (2, 5, frames, 5, 7) and got.is_contiguous()
    assert (got - ref).abs().max().item() < 1e-12
    assert torch.equal(via_module, got)


@pytest.mark.parametrize("plane", [8, 16])  # 16x16 takes the forced oneDNN branch conv, 8x8 PyTorch's dispatch
@pytest.mark.parametrize("frames", [4, 7])
def test_float32_agrees_to_rounding(plane: int, frames: int) -> None:
    g = torch.Generator().manual_seed(plane + frames)
    conv = CausalConv3d(32, 48, 3)
    with torch.no_grad():
        conv.conv.weight.copy_(torch.randn(conv.conv.weight.shape, generator=g) / (27 * 32) ** 0.5)
        x = _padded(torch.randn(1, 32, frames, plane, plane, generator=g), False)
        ref = F.conv3d(x.double(), conv.conv.weight.double(), conv.conv.bias.double(), padding=(0, 1, 1))
        direct = conv.conv(x)
        got = time_winograd_conv3d(conv.conv, x)
    # as close to the float64 result as float32 direct convolution is (both about 1e-7 of the range)
    assert _rel(got.double(), ref) < 4 * max(_rel(direct.double(), ref), 1e-7)
    assert _rel(got, direct) < 2e-6


def test_upcast_layer_reads_the_stored_bfloat16_weight() -> None:
    g = torch.Generator().manual_seed(5)
    conv = CausalConv3d(16, 16, 3)
    with torch.no_grad():
        conv.conv.weight.copy_(torch.randn(conv.conv.weight.shape, generator=g) / 12)
        conv.conv.weight.data = conv.conv.weight.data.bfloat16()
        assert convert_to_upcast(conv) == 1
        x = torch.randn(1, 16, 6, 8, 8, generator=g)
        widened = conv.conv.weight.float()
        ref = F.conv3d(_padded(x, False).double(), widened.double(), conv.conv.bias.double(), padding=(0, 1, 1))
        conv.algorithm = ConvAlgorithm.WINOGRAD
        got = conv(x, False)
    assert conv.conv.weight.dtype == torch.bfloat16  # kept as stored, not converted
    assert _rel(got.double(), ref) < 2e-6


def _fake(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, device: str = "cpu") -> SimpleNamespace:
    # use_winograd reads only shape, dtype and device type: a stand-in for a tensor on a device we lack
    return SimpleNamespace(shape=torch.Size(shape), dtype=dtype, device=torch.device(device))


def test_auto_selection_rules() -> None:
    big = CausalConv3d(MIN_CHANNELS, MIN_CHANNELS, 3).conv
    small = CausalConv3d(MIN_CHANNELS // 2, MIN_CHANNELS, 3).conv
    strided = CausalConv3d(MIN_CHANNELS, MIN_CHANNELS, 3, stride=(2, 1, 1)).conv
    enough = (1, MIN_CHANNELS, 4 + 2, 8, 8)  # 4 output frames of 8x8 = 256 output positions
    assert 4 * 8 * 8 >= MIN_OUTPUT_VOXELS > 2 * 8 * 8
    auto, direct, wino = ConvAlgorithm.AUTO, ConvAlgorithm.DIRECT, ConvAlgorithm.WINOGRAD
    with torch.no_grad():
        assert use_winograd(auto, big, _fake(enough))
        assert use_winograd(auto, big, _fake(enough, torch.float64))
        assert not use_winograd(auto, big, _fake((1, MIN_CHANNELS, 2 + 2, 8, 8)))  # 128 positions: too little work
        assert not use_winograd(auto, small, _fake((1, MIN_CHANNELS // 2, 6, 8, 8)))  # too few channels
        assert not use_winograd(auto, big, _fake(enough, torch.bfloat16))  # CPU float32/float64 only
        assert not use_winograd(auto, big, _fake(enough, torch.float16))
        assert not use_winograd(auto, big, _fake(enough, device="cuda"))  # GPUs keep cuDNN's choice
        assert not use_winograd(direct, big, _fake(enough))
        assert not use_winograd(wino, strided, _fake(enough))  # not a stride-1 conv
        assert not use_winograd(wino, big, _fake((1, MIN_CHANNELS, 1 + 2, 8, 8)))  # one output frame
        # an explicit choice applies wherever the algorithm is valid
        assert use_winograd(wino, small, _fake((1, 4, 2 + 2, 2, 2), torch.bfloat16, "cuda"))
    with torch.enable_grad():  # never under autograd: the kernels live in shared scratch buffers
        assert not use_winograd(wino, big, _fake(enough))
        assert not use_winograd(auto, big, _fake(enough))


def test_parse_conv_algorithm() -> None:
    from ltxcli import load_pipeline

    assert parse_conv_algorithm("winograd") is ConvAlgorithm.WINOGRAD
    assert parse_conv_algorithm(ConvAlgorithm.DIRECT) is ConvAlgorithm.DIRECT
    with pytest.raises(ValueError, match="auto, direct, winograd"):
        parse_conv_algorithm("fft")
    with pytest.raises(ValueError, match="unknown VAE conv algorithm 'fft'"):
        load_pipeline("tiny", vae_conv="fft")
    assert load_pipeline("tiny", vae_conv="direct").vae.conv_algorithm is ConvAlgorithm.DIRECT


@torch.no_grad()
def test_real_width_blocks_auto_takes_winograd_and_agrees() -> None:
    """Decoder blocks at the released 0.9.5 widths of its last stages (128 and 256 channels) on a small clip."""
    torch.manual_seed(0)
    res = randomise_scaled(ResnetBlock3D(MIN_CHANNELS, timestep_conditioning=True).eval(), seed=3)
    up = randomise_scaled(DepthToSpaceUpsample(2 * MIN_CHANNELS, (2, 2, 2), residual=True,
                                               out_channels_reduction_factor=2).eval(), seed=4)
    x = torch.randn(1, MIN_CHANNELS, 5, 16, 16)
    temb = torch.randn(1, 4 * MIN_CHANNELS)
    x2 = torch.randn(1, 2 * MIN_CHANNELS, 4, 8, 8)
    outs = {}
    for alg in (ConvAlgorithm.DIRECT, ConvAlgorithm.AUTO):
        scratch = UpcastScratch()
        for m in (*res.modules(), *up.modules()):
            if isinstance(m, CausalConv3d):
                m.algorithm, m.scratch = alg, scratch
        outs[alg] = (res(x, False, temb), up(x2, False))
        if alg is ConvAlgorithm.AUTO:
            # two kernel buffers, each one branch (a third) of the largest weight: 256 -> 1024 channels
            assert scratch.nbytes() == 2 * 1024 * 256 * 9 * 4
        else:
            assert scratch.nbytes() == 0
    for got, ref in zip(outs[ConvAlgorithm.AUTO], outs[ConvAlgorithm.DIRECT], strict=True):
        assert got.shape == ref.shape
        assert 0 < _rel(got, ref) < 2e-6  # Winograd ran (not bit-identical) and agrees to rounding


ltx_cva = pytest.importorskip("ltx_video.models.autoencoders.causal_video_autoencoder")


@pytest.mark.parametrize("family", ["0.9", "0.9.1", "0.9.5"])
@torch.no_grad()
def test_tiny_vae_with_winograd_matches_official(family: str) -> None:
    from test_vae import build_pair, latents, vae_encode, video

    official, ours = build_pair(family)
    assert ours.conv_algorithm is ConvAlgorithm.AUTO
    z, x = latents(seed=4), video(seed=3)
    t_ref = torch.tensor([0.05, 0.05]) if ours.timestep_conditioning else None
    torch.manual_seed(1234)  # the 0.9.1 decoder injects noise from the global RNG, ours from a generator
    ref = vae_encode.vae_decode(z, official, is_video=True, vae_per_channel_normalize=True, timestep=t_ref)

    def decode() -> torch.Tensor:
        return ours.decode(z, 0.05, generator=torch.Generator().manual_seed(1234))

    auto_dec = decode()
    ours.set_conv_algorithm("winograd")
    assert ours.conv_algorithm is ConvAlgorithm.WINOGRAD
    wino_dec, wino_enc = decode(), ours.encoder(x)
    ours.set_conv_algorithm("direct")
    assert torch.equal(auto_dec, decode())  # auto on a tiny model (8-64 channels) is the direct path
    assert _rel(wino_dec, ref) < 1e-5
    assert _rel(wino_enc, official.encoder(x)) < 1e-5
    assert not torch.equal(wino_dec, auto_dec)  # the Winograd path really ran


def test_set_conv_algorithm_reaches_every_conv_and_keeps_one_scratch() -> None:
    from ltxcli.models.configs import official_vae_config

    cfg = official_vae_config("0.9.5")
    cfg.update(latent_channels=16, encoder_base_channels=8, decoder_base_channels=8)
    with torch.device("meta"):
        vae = CausalVideoVAE(VAEConfig.from_official(copy.deepcopy(cfg)))
    convs = [m for m in vae.modules() if isinstance(m, CausalConv3d)]
    first = convs[0].scratch
    assert first is not None and all(m.scratch is first for m in convs)
    vae.set_conv_algorithm("direct")
    assert all(m.algorithm is ConvAlgorithm.DIRECT and m.scratch is first for m in convs)
    with pytest.raises(ValueError, match="unknown VAE conv algorithm"):
        vae.set_conv_algorithm("nope")
