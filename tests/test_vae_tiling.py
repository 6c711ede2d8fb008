"""Tiled VAE decoding against the untiled ``vae.decode``, window plans, and the memory estimate.

Tiled decodes with the exact context must equal the untiled decode (bit for bit at the default split);
with less context they are approximate, and the error must come from the cut-off context. Decoders have
random weights: PyTorch's default init (every conv at its usual scale), the zero-initialised scale/shift
tables and 0.9.1 noise scales drawn from N(0, 0.1), latent statistics std U(0.5, 1.5) and mean N(0, 0.1),
as in ``ltxcli.tiny``. "Tiny" decoders use each family's block list with one layer per res_x block and 8
base channels; the "real" 0.9.5 decoder keeps every layer (5 per block) with 8 base channels. Run with
``-s`` to see the measured errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from ltxcli.memory.decode import (
    DECODE_MEMORY_FACTOR,
    choose_tiling,
    decode_memory_bytes,
    free_memory_bytes,
    plan_decode,
    should_tile,
    stream_plan,
    tiled_decode_memory_bytes,
)
from ltxcli.models.configs import VAEConfig, official_vae_config
from ltxcli.models.vae import CausalVideoVAE
from ltxcli.tiny import tiny_vae_config
from ltxcli.vae_tiling import (
    _spans,
    decoder_receptive_field,
    default_split_block,
    plan_axis,
    split_scales,
    suffix_receptive_field,
    tiled_decode,
    tiled_decode_chunks,
)

LATENT_CH = 16
T_DEC = 0.05


def init_vae(cfg: VAEConfig, seed: int = 0) -> CausalVideoVAE:
    torch.manual_seed(seed)
    vae = CausalVideoVAE(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if "scale_shift_table" in name or "per_channel_scale" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        vae.per_channel_statistics.get_buffer("std-of-means").copy_(0.5 + torch.rand(LATENT_CH, generator=g))
        vae.per_channel_statistics.get_buffer("mean-of-means").copy_(0.1 * torch.randn(LATENT_CH, generator=g))
    return vae


def family_vae(family: str, layers: int | None = 1) -> CausalVideoVAE:
    """The family's block lists, ``layers`` per res_x block (None: as released), 8 base channels."""
    cfg = official_vae_config(family)
    for key in ("blocks", "encoder_blocks", "decoder_blocks"):
        for item in cfg.get(key, []):
            if layers is not None and item[0] == "res_x":
                if isinstance(item[1], dict):
                    item[1]["num_layers"] = layers
                else:
                    item[1] = layers
    cfg.update(latent_channels=LATENT_CH, encoder_base_channels=8, decoder_base_channels=8)
    return init_vae(VAEConfig.from_official(cfg))


def latents(shape: tuple[int, int, int], seed: int = 3, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, LATENT_CH, *shape, generator=torch.Generator().manual_seed(seed))


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def has_interior_edge(length: int, tile: int, overlap: int, context: int, temporal: bool) -> bool:
    """Some window is decoded without reaching both ends: the test really exercises context."""
    windows = plan_axis(length, tile, overlap, context, 8 if temporal else 32, temporal)
    return len(windows) > 1 and any(w.decode[0] > 0 or w.decode[1] < length for w in windows)


# --- plans ------------------------------------------------------------------------------------------------


def test_temporal_plan_hand_derived() -> None:
    # 5 latent frames -> 33 frames; latent 0 -> frame 0, latent k -> frames 8k-7..8k.
    windows = plan_axis(5, 2, 0, 1, 8, temporal=True)
    assert [w.keep for w in windows] == [(0, 9), (9, 17), (17, 33)]
    assert [w.decode for w in windows] == [(0, 3), (1, 4), (2, 5)]
    # A window of latents [a, b) decodes to 8(b-a-1)+1 frames, the first being global frame 8a.
    assert [w.offset for w in windows] == [0, 8, 16]
    assert all(torch.equal(w.weight, torch.ones(w.keep[1] - w.keep[0], dtype=torch.float64)) for w in windows)
    # Without context a chunk starting at latent s > 0 still decodes from s-1 (for frames 8s-7 .. 8s-1).
    assert [w.decode for w in plan_axis(5, 2, 0, 0, 8, temporal=True)] == [(0, 2), (1, 3), (2, 5)]


def test_spatial_plan_hand_derived() -> None:
    # 10 latents, windows of 6 sharing 2: cores [0,3) [3,7) [7,10) widened by 1 on each side.
    windows = plan_axis(10, 6, 2, 1, 32, temporal=False)
    assert [w.keep for w in windows] == [(0, 128), (64, 256), (192, 320)]
    assert [w.decode for w in windows] == [(0, 5), (1, 9), (5, 10)]
    assert [w.offset for w in windows] == [0, 32, 160]
    w0, w1 = windows[0].weight, windows[1].weight
    assert torch.all(w0[:64] == 1)
    assert w0[64].item() == pytest.approx(63.5 / 64) and w0[127].item() == pytest.approx(0.5 / 64)
    assert w1[0].item() == pytest.approx(0.5 / 64) and w1[63].item() == pytest.approx(63.5 / 64)
    total = torch.zeros(320, dtype=torch.float64)
    for w in windows:
        total[w.keep[0] : w.keep[1]] += w.weight
    assert torch.allclose(total, torch.ones(320, dtype=torch.float64), atol=1e-12, rtol=0)
    assert _spans(4, 6, 2) == [(0, 4)]


def test_receptive_field_and_scales_hand_derived() -> None:
    cfg = tiny_vae_config()  # up_blocks: res_x, up, res_x, up, res_x, up, res_x (one resnet each)
    # Output side first: conv_out 1, res_x 2 -> 3; upsampler ceil(3/2)+1, its conv +1 -> 4; res_x -> 6;
    # up -> 3+1+1 = 5; res_x -> 7; up -> 4+1+1 = 6; res_x -> 8; conv_in -> 9 (latents).
    assert decoder_receptive_field(cfg) == (9, 9)
    assert suffix_receptive_field(cfg, 0) == (8, 8)
    assert default_split_block(cfg) == 5
    assert suffix_receptive_field(cfg, 5) == (4, 4)  # last upsampler + res_x + conv_out, stage-2 positions
    assert suffix_receptive_field(cfg, 7) == (1, 1)  # conv_out alone
    # pixel frames per frame and pixels per position at each split
    assert [split_scales(cfg, k) for k in range(8)] == [(8, 32), (8, 32), (4, 16), (4, 16), (2, 8), (2, 8),
                                                        (1, 4), (1, 4)]


# --- decoding -----------------------------------------------------------------------------------------------


def test_single_window_is_the_untiled_decode() -> None:
    vae = init_vae(tiny_vae_config())
    z = latents((3, 2, 2), batch=2)
    with torch.no_grad():
        ref = vae.decode(z, T_DEC)
        out = tiled_decode(vae, z, timestep=T_DEC)
    assert out.dtype == torch.float32
    assert torch.equal(out, ref.float())


EXACT_CASES = [  # (name, vae builder, batch)
    ("tiny 0.9.5 (ltxcli.tiny)", lambda: init_vae(tiny_vae_config()), 2),
    ("tiny 0.9", lambda: family_vae("0.9"), 2),
    ("real 0.9.5 blocks, base 8", lambda: family_vae("0.9.5", layers=None), 1),
]


@pytest.mark.parametrize("conv", ["auto", "winograd"])  # winograd: windows pair their frames from their own start
@pytest.mark.parametrize(("name", "build", "batch"), EXACT_CASES, ids=[c[0] for c in EXACT_CASES])
def test_default_split_is_exact(name: str, build, batch: int, conv: str) -> None:
    """Windows in time, height and width at once (default split, exact context): equal to the untiled
    decode up to float rounding."""
    vae = build()
    vae.set_conv_algorithm(conv)
    split = default_split_block(vae.config)
    rt, rs = suffix_receptive_field(vae.config, split)
    z = latents((4, 2, 5), batch=batch)  # split-point activation 13 x 8 x 20 (stage 2 of the released layout)
    settings = {"tile_hw": (8, 10), "chunk_frames": 6}  # 3 x 1 x 2 windows
    t_scale, s_scale = split_scales(vae.config, split)
    fs, ws = (8 // t_scale) * 3 + 1, 5 * (32 // s_scale)
    assert has_interior_edge(fs, 6, 0, rt, True) and has_interior_edge(ws, 10, 0, rs, False)
    with torch.no_grad():
        ref = vae.decode(z, T_DEC)
        out = tiled_decode(vae, z, timestep=T_DEC, **settings)
    err = max_abs(out, ref)
    print(f"\n{name}, {conv}: split {split}, context {rt}/{rs}: max abs {err:.2e} (output max {ref.abs().max():.2f})")
    assert err < 1e-5


@pytest.mark.parametrize("settings", [
    {"tile_hw": 6, "chunk_frames": 2},  # 0.9.1 split point: 3 x 2 x 2 windows, no time overlap
    {"tile_hw": 6, "chunk_frames": 3, "overlap_frames": 2},  # blended across time windows
    {"split_block": 0, "tile_hw": 2, "chunk_frames": 2, "overlap_frames": 1, "context_frames": 1},
])
def test_chunks_are_the_tiled_decode_bit_for_bit(settings: dict) -> None:
    """The streamed chunks, in time order and without gaps, are exactly the frames of the whole decode, noise
    injection included; a chunk never holds more than about one time window."""
    vae = family_vae("0.9.1")
    z = latents((4, 2, 3))
    with torch.no_grad():
        whole = tiled_decode(vae, z, timestep=T_DEC, generator=torch.Generator().manual_seed(5), **settings)
        chunks = list(tiled_decode_chunks(vae, z, timestep=T_DEC, generator=torch.Generator().manual_seed(5),
                                          **settings))
    assert len(chunks) > 1 and [s for s, _ in chunks] == list(itertools.accumulate(
        [0] + [c.shape[2] for _, c in chunks[:-1]]))
    assert torch.equal(torch.cat([c for _, c in chunks], dim=2), whole)


@pytest.mark.parametrize("conv", ["direct", "winograd"])
@pytest.mark.parametrize("family", ["0.9.1", "0.9.5"])  # 0.9.1: noise injection; 0.9.5: the released layout
def test_stream_plan_is_the_untiled_decode(family: str, conv: str) -> None:
    """Issue 13, point 5: a CPU decode that is written as it goes runs the head in time windows
    (:func:`stream_plan`), so the float32 output never exists whole: its chunks are the untiled decode's frames
    (bit for bit with the direct convolutions), and none holds more than a window of frames."""
    vae = family_vae(family, layers=None if family == "0.9.5" else 1)
    vae.set_conv_algorithm(conv)
    z = latents((6, 2, 3))  # 41 pixel frames
    plan = stream_plan(vae.config, z.shape, chunk_frames=16)
    assert plan["split_block"] == len(vae.decoder.up_blocks)
    with torch.no_grad():
        ref = vae.decode(z, T_DEC, generator=torch.Generator().manual_seed(5)).float()
        chunks = list(tiled_decode_chunks(vae, z, timestep=T_DEC, generator=torch.Generator().manual_seed(5),
                                          **plan))
    sizes = [c.shape[2] for _, c in chunks]
    assert len(sizes) == 3 and sum(sizes) == 41 and max(sizes) <= 16, sizes  # windows balanced by plan_axis
    out = torch.cat([c for _, c in chunks], dim=2)
    if conv == "direct":
        assert torch.equal(out, ref)
    else:  # time-Winograd pairs a window's frames from its own first frame: equal to float rounding
        assert max_abs(out, ref) < 1e-5


def test_noise_injection_is_shared_by_the_windows() -> None:
    """0.9.1: the untiled part draws its maps as usual, each window crops the full-size maps of the tiled
    part; with a generator and with the global RNG."""
    vae = family_vae("0.9.1")
    z = latents((3, 2, 3))
    settings = {"tile_hw": 6, "chunk_frames": 4}
    calls: list[tuple[int, int]] = []
    with torch.no_grad():
        ref = vae.decode(z, T_DEC, torch.Generator().manual_seed(5))
        out = tiled_decode(vae, z, timestep=T_DEC, generator=torch.Generator().manual_seed(5), **settings,
                           progress=lambda done, total: calls.append((done, total)))
        other = vae.decode(z, T_DEC, torch.Generator().manual_seed(6))
        torch.manual_seed(7)
        ref_global = vae.decode(z, T_DEC)
        torch.manual_seed(7)
        out_global = tiled_decode(vae, z, timestep=T_DEC, **settings)
    err, err_global, noise_effect = max_abs(out, ref), max_abs(out_global, ref_global), max_abs(other, ref)
    print(f"\n0.9.1: max abs {err:.2e} (global RNG {err_global:.2e}); another noise seed moves the output by "
          f"{noise_effect:.2e}")
    assert noise_effect > 1e-2  # the noise is live, so matching it means something
    assert err < 1e-5 and err_global < 1e-5
    assert calls == [(i + 1, 12) for i in range(12)]  # 3 chunks x 2 x 2 windows


def test_latent_windows_exact_with_full_context() -> None:
    """``split_block=0``: windows of latents; with the whole decoder's receptive field as context exact."""
    vae = init_vae(tiny_vae_config())
    rt, rs = suffix_receptive_field(vae.config, 0)
    for shape, settings, temporal in (
        ((1, 1, 20), {"tile_hw": 10, "overlap_hw": 2}, False),
        ((18, 1, 1), {"chunk_frames": 10, "overlap_frames": 1}, True),
    ):
        length, tile = (18, 10) if temporal else (20, 10)
        assert has_interior_edge(length, tile, 1 if temporal else 2, rt if temporal else rs, temporal)
        z = latents(shape)
        with torch.no_grad():
            ref = vae.decode(z, T_DEC)
            out = tiled_decode(vae, z, timestep=T_DEC, split_block=0, **settings)
        err = max_abs(out, ref)
        print(f"\nlatent windows, {'temporal' if temporal else 'spatial'}, context {rs}: max abs {err:.2e}")
        assert err < 1e-5


def test_approximate_context() -> None:
    """Less context than the receptive field: approximate, the error set by how much is cut off."""
    vae = init_vae(tiny_vae_config())
    z = latents((1, 1, 12))
    errs = []
    with torch.no_grad():
        ref = vae.decode(z, T_DEC)
        for context, overlap in ((2, 0), (6, 2)):
            out = tiled_decode(vae, z, timestep=T_DEC, split_block=0, tile_hw=4, overlap_hw=overlap,
                               context_hw=context)
            errs.append(max_abs(out, ref))
    print(f"\ntiny 0.9.5 latent windows: context 2: max abs {errs[0]:.2e}; context 6, overlap 2: {errs[1]:.2e}")
    assert errs[0] > 1e-2  # the error really comes from the cut-off context
    assert errs[1] < 1e-2


# --- memory ---------------------------------------------------------------------------------------------


def test_memory_estimate_hand_derived() -> None:
    shape = (1, 128, 16, 22, 38)  # 121 x 704 x 1216 pixels
    # Every released decoder peaks in a resnet of its last stage (128 channels at 121 x 176 x 304): the
    # input, two time-padded buffers (123 frames) and the conv output. (0.9's last upsampler, the next
    # largest, holds its 128-channel input plus 2 x 8 x that: 17 x 128 x 61 x 88 x 152, about half.)
    # No weight copy on top: the widened weights of a CPU run live in the upcast scratch, counted with the
    # weights (issue 13 point 3: counting a copy here too made the full-size plan twice the measured peak).
    unit = 128 * 121 * 176 * 304 * 2
    activations = DECODE_MEMORY_FACTOR * unit * (2 + 2 * 123 / 121)
    for family in ("0.9", "0.9.1", "0.9.5"):
        got = decode_memory_bytes(VAEConfig.from_official(official_vae_config(family)), shape, torch.bfloat16)
        assert got == pytest.approx(activations, abs=2), family
        print(f"\n{family}: untiled decode of 121x704x1216 in bfloat16 ~ {got / 2**30:.2f} GiB")
    # The tiny decoder (8 channels) peaks in conv_out instead: its padded input and 48 output channels,
    # written once by the conv and once more by the un-patchify copy. 3x2x2 latents -> 17 x 16 x 16.
    unit = 8 * 17 * 16 * 16 * 4
    got = decode_memory_bytes(tiny_vae_config(), (1, 16, 3, 2, 2), torch.float32)
    assert got == pytest.approx(DECODE_MEMORY_FACTOR * unit * (19 / 17 + 2 * 6), abs=2)
    # [f, h, w] means batch 1; activations scale with the batch
    cfg = VAEConfig.from_official(official_vae_config("0.9.5"))
    batch_one = decode_memory_bytes(cfg, (16, 22, 38), torch.bfloat16)
    assert batch_one == decode_memory_bytes(cfg, shape, torch.bfloat16)
    assert decode_memory_bytes(cfg, (2, *shape[1:]), torch.bfloat16) == pytest.approx(2 * batch_one, abs=4)


def test_should_tile_modes() -> None:
    assert should_tile("on", 1, 10**12) and not should_tile("off", 10**12, 1)
    assert should_tile("auto", 81, 100) and not should_tile("auto", 80, 100)
    assert should_tile("auto", 51, 100, safety=0.5)
    with pytest.raises(ValueError, match="auto, on or off"):
        should_tile("sometimes", 1, 1)  # type: ignore[arg-type]


def test_plan_decode_fits_the_budget() -> None:
    cfg = VAEConfig.from_official(official_vae_config("0.9.5"))
    shape = (1, 128, 16, 22, 38)
    est = decode_memory_bytes(cfg, shape, torch.bfloat16)
    assert plan_decode(cfg, shape, torch.bfloat16, "auto", 2 * est) is None
    assert plan_decode(cfg, shape, torch.bfloat16, "off", 1) is None
    for mode, free, on_device in (("auto", est, True), ("auto", est // 3, False), ("on", 10 * est, True)):
        plan = plan_decode(cfg, shape, torch.bfloat16, mode, free, out_on_device=on_device)
        assert plan is not None
        assert plan["context_hw"] is None and plan["context_frames"] is None  # exact plans exist here
        budget = min(0.8 * free, est // 2) if mode == "on" else 0.8 * free
        assert tiled_decode_memory_bytes(cfg, shape, torch.bfloat16, **plan, out_on_device=on_device) <= budget
        fs, hs, ws = (8 // split_scales(cfg, plan["split_block"])[0]) * 15 + 1, *(
            n * 32 // split_scales(cfg, plan["split_block"])[1] for n in (22, 38))
        th, tw = plan["tile_hw"]
        n = len(_spans(fs, plan["chunk_frames"], 0)) * len(_spans(hs, th, 0)) * len(_spans(ws, tw, 0))
        assert n >= 2
        print(f"\n{mode}, free {free / 2**30:.1f} GiB (untiled {est / 2**30:.1f} GiB): {plan}, {n} windows")
    # Too little for an exact plan: approximate (reduced context, blended); nothing fits: the smallest.
    plan = plan_decode(cfg, shape, torch.bfloat16, "auto", est // 10, out_on_device=False)
    assert plan is not None and plan["context_hw"] is not None and plan["overlap_hw"] > 0
    assert tiled_decode_memory_bytes(cfg, shape, torch.bfloat16, **plan, out_on_device=False) <= 0.8 * est // 10
    smallest = choose_tiling(cfg, shape, torch.bfloat16, 1, out_on_device=False)
    assert tiled_decode_memory_bytes(cfg, shape, torch.bfloat16, **smallest, out_on_device=False) < est / 20


def test_plan_runs_exactly_on_the_tiny_model() -> None:
    vae = init_vae(tiny_vae_config())
    z = latents((3, 2, 3))
    est = decode_memory_bytes(vae.config, z.shape, torch.float32)
    free = int(0.75 * est / 0.8)  # auto: the untiled estimate is above 0.8 x free
    plan = plan_decode(vae.config, z.shape, torch.float32, "auto", free, out_on_device=False)
    assert plan is not None and plan["context_hw"] is None
    assert tiled_decode_memory_bytes(vae.config, z.shape, torch.float32, **plan, out_on_device=False) <= 0.8 * free
    with torch.no_grad():
        out = tiled_decode(vae, z, timestep=T_DEC, out_device="cpu", **plan)
        ref = vae.decode(z, T_DEC)
    assert out.shape == ref.shape == (1, 3, 17, 64, 96)
    assert max_abs(out, ref) < 1e-5


def test_free_memory_cpu() -> None:
    free = free_memory_bytes("cpu")
    with open("/proc/meminfo") as fh:
        total = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemTotal:"))
    assert 0 < free <= total
    assert math.isfinite(free)
