"""The VAE encode in time chunks (:mod:`ltxcli.vae_encode`) against the one-call ``vae.encode``.

Encoders have random weights (PyTorch's default init) and the released block lists of each encoder layout (0.9,
whose encoder 0.9.1 shares, and 0.9.5+) with every layer, 8 base channels, 16 latent channels, on 32x32 pixels
(one latent position: the time axis is what is cut). Tolerance: the chunked latents come from the same
arithmetic on convolutions of other lengths, so they agree to float32 rounding: measured <= 5e-7 (latents of
magnitude ~0.4) for every chunk size here; 1e-5 leaves a margin of 20 and stays far below what a chunk that does not
carry its frames over gets wrong (> 1e-2, :func:`test_chunks_that_replicate_their_first_frame_differ`)."""

from __future__ import annotations

import itertools

import pytest
import torch

from ltxcli.models.configs import VAEConfig, official_vae_config
from ltxcli.models.vae import CausalVideoVAE
from ltxcli.vae_encode import (
    ENCODE_CHUNK_LATENTS,
    chunk_frames,
    chunked_encode,
    encode_chunks,
    encode_frames,
    encode_spans,
    encoder_receptive_field,
    pixel_span,
)

ATOL = 1e-5
FRAMES = 8 * 6 + 1  # 7 latent frames


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tensors are small: a second thread costs more than it saves (10x on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def released_vae(family: str, layers: int | None = None) -> CausalVideoVAE:
    """The family's block lists (``layers`` per res_x block; None: as released), 8 base and 16 latent channels."""
    cfg = official_vae_config(family)
    for key in ("blocks", "encoder_blocks", "decoder_blocks"):
        for item in cfg.get(key, []):
            if layers is not None and item[0] == "res_x":
                item[1] = {**item[1], "num_layers": layers} if isinstance(item[1], dict) else layers
    cfg.update(latent_channels=16, encoder_base_channels=8, decoder_base_channels=8)
    return vae_of(VAEConfig.from_official(cfg))


def vae_of(cfg: VAEConfig) -> CausalVideoVAE:
    torch.manual_seed(0)
    vae = CausalVideoVAE(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # latent statistics as a checkpoint's: not the identity
        vae.per_channel_statistics.get_buffer("std-of-means").copy_(0.5 + torch.rand(cfg.latent_channels, generator=g))
        vae.per_channel_statistics.get_buffer("mean-of-means").copy_(0.1 * torch.randn(cfg.latent_channels, generator=g))
    return vae


def pixels(frames: int = FRAMES, seed: int = 2) -> torch.Tensor:
    # every frame its own noise, so that a chunk reading a wrong frame shows
    return torch.rand(1, 3, frames, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module", params=["0.9", "0.9.5"])
def family(request: pytest.FixtureRequest) -> tuple[CausalVideoVAE, torch.Tensor, torch.Tensor]:
    vae, x = released_vae(request.param), pixels()
    with torch.inference_mode():
        return vae, x, vae.encode(x)  # the one-call latents [1, 16, 7, 1, 1]


@pytest.mark.parametrize("chunk", [1, 2, 4, 5])
def test_chunked_encode_is_the_one_call_encode(family, chunk: int) -> None:
    """Chunks ending after latent frames 2, 3, ... 6 (chunk 1), 3, 5 (2), 5 (4), 6 (5), on both layouts."""
    vae, x, want = family
    with torch.inference_mode():
        got = chunked_encode(vae, x, chunk=chunk)
    assert got.shape == want.shape and len(encode_spans(7, chunk)) > 1
    err = (got - want).abs().max().item()
    print(f"chunk {chunk}: max abs error {err:.1e} of {want.abs().max().item():.2f}")
    assert err < ATOL


@pytest.mark.parametrize("layout", ["0.9", "0.9.5"])
def test_the_chunks_a_tight_memory_plan_picks_are_the_one_call_encode(layout: str) -> None:
    """Every chunk the memory plan may pick (16 halved: 8, 4, 2, 1 latent frames) on a video of 13 latent frames,
    which 8 cuts too (chunks [0, 9), [9, 13); 4: 3 chunks, 2: 6, 1: 12), on both released layouts."""
    vae, x = released_vae(layout), pixels(8 * 12 + 1, seed=6)
    with torch.inference_mode():
        want = vae.encode(x)  # [1, 16, 13, 1, 1]
        for chunk in (8, 4, 2, 1):
            got = chunked_encode(vae, x, chunk=chunk)
            assert got.shape == want.shape and len(encode_spans(13, chunk)) == -(-12 // chunk)
            assert (got - want).abs().max().item() < ATOL, chunk


def test_chunks_that_replicate_their_first_frame_differ(family) -> None:
    """Each chunk encoded on its own (its first frame replicated as padding, a space-to-depth pair doubled) misses
    the frames before it: far beyond the tolerance, so the test above sees a lost carry."""
    vae, x, want = family
    with torch.inference_mode():
        parts = []
        for a, b in encode_spans(7, 2):  # [0, 3), [3, 5), [5, 7)
            # from the frame of the latent before: 8k + 1 frames, whose first latent (that frame alone) is dropped
            lat = vae.encode(x[:, :, max(8 * (a - 1), 0): 8 * (b - 1) + 1])
            parts.append(lat if a == 0 else lat[:, :, 1:])
        naive = torch.cat(parts, dim=2)
    assert (naive[:, :, :3] - want[:, :, :3]).abs().max().item() < ATOL  # the first chunk starts the video
    assert (naive - want).abs().max().item() > 1e-2


@pytest.mark.parametrize("blocks", [
    # every other encoder block the implementation builds: a time-only and a space-only strided conv, a widening
    # strided conv, space-to-depth in space then in time
    [["res_x", 1], ["compress_time", {}], ["res_x_y", 1], ["compress_space", {}], ["compress_all_x_y", {}],
     ["compress_space_res", {"multiplier": 2}], ["compress_time_res", {"multiplier": 2}], ["res_x", 1]],
])
def test_other_encoder_blocks_chunk_exactly(blocks) -> None:
    cfg = official_vae_config("0.9.5")
    cfg.update(encoder_blocks=blocks, latent_channels=16, encoder_base_channels=8, decoder_base_channels=8)
    vae, x = vae_of(VAEConfig.from_official(cfg)), pixels()
    assert (vae.config.temporal_compression, vae.config.spatial_compression) == (8, 32)
    with torch.inference_mode():
        want = vae.encode(x)
        for chunk in (1, 3):
            assert (chunked_encode(vae, x, chunk=chunk) - want).abs().max().item() < ATOL


def test_time_winograd_convolutions_chunk_to_rounding() -> None:
    vae, x = released_vae("0.9.5", layers=1), pixels()
    vae.set_conv_algorithm("winograd")
    with torch.inference_mode():
        want = vae.encode(x)
        assert (chunked_encode(vae, x, chunk=2) - want).abs().max().item() < ATOL


def test_chunks_move_to_the_device_in_its_dtype_and_the_hooks_go() -> None:
    """Host pixels, a chunk at a time in the requested dtype (float64 here: the encoder's is float32, as a
    bfloat16 pipeline casts its pixels before the float32 encoder); afterwards the encoder is the one-call one."""
    vae, x = released_vae("0.9.5", layers=1), pixels()
    with torch.inference_mode():
        want = vae.encode(x.to(torch.float64))
        got = chunked_encode(vae, x, chunk=2, device="cpu", dtype=torch.float64)
        assert got.dtype == torch.float32 and (got - want).abs().max().item() < ATOL
        assert not any("time_halo" in m.__dict__ for m in vae.modules())


def test_one_chunk_is_one_call_bit_for_bit() -> None:
    vae = released_vae("0.9.5", layers=1)
    x = pixels(8 * ENCODE_CHUNK_LATENTS + 1, seed=4)
    calls = []
    encode = vae.encode
    vae.encode = lambda v: calls.append(v.shape[2]) or encode(v)  # type: ignore[method-assign]
    with torch.inference_mode():
        assert torch.equal(chunked_encode(vae, x), encode(x)) and calls == [129]


@pytest.mark.parametrize("pieces", [
    [FRAMES],  # the whole video in one piece
    [25, 24],  # the chunks of chunk=3 (latents [0, 4), [4, 7)) as they are encoded: chunk_frames
    [1, 7, 30, 11],  # pieces cut across the chunks: joined and sliced to them
    [1] * FRAMES,  # frame by frame
])
@pytest.mark.parametrize("chunk", [3, 16])
def test_pieces_of_the_pixels_encode_as_the_whole_bit_for_bit(pieces: list[int], chunk: int) -> None:
    """encode_chunks takes the video as an iterator of pieces along time, taken as needed (a long v2v decodes and
    prepares its input a chunk at a time, ltxcli.long_video): the latents are chunked_encode's of the whole pixels,
    bit for bit (the same chunks, the same arithmetic), in one chunk (chunk=16: one call) and in two (chunk=3); a
    piece is made only once the chunk before it is encoded."""
    vae, x = released_vae("0.9.5", layers=1), pixels()
    assert chunk_frames(vae.config, FRAMES, 3) == [25, 24] and chunk_frames(vae.config, FRAMES, 16) == [FRAMES]
    bounds = [0, *itertools.accumulate(pieces)]
    taken: list[int] = []

    def lazily():  # each piece made only when the encoder asks for it
        for a, b in itertools.pairwise(bounds):
            taken.append(b)
            yield x[:, :, a:b].clone()

    made: list[int] = []  # pieces made when each chunk's encode starts: those up to its last frame, no more
    hook = vae.encoder.conv_in.register_forward_pre_hook(lambda m, args: made.append(len(taken)))
    try:
        with torch.inference_mode():
            got = encode_chunks(vae, lazily(), FRAMES, chunk=chunk)
            assert torch.equal(got, chunked_encode(vae, x, chunk=chunk))
    finally:
        hook.remove()
    ends = [25, FRAMES] if chunk == 3 else [FRAMES]
    assert made[: len(ends)] == [next(i for i, b in enumerate(bounds) if b >= e) for e in ends]
    with torch.inference_mode():
        for wrong in ([x[:, :, :48]], [x, x[:, :, :1]]):  # a frame short, a frame more
            with pytest.raises(ValueError, match=r"^the pixel chunks hold (48|50) frames, 49 expected$"):
                encode_chunks(vae, wrong, FRAMES, chunk=chunk)


def test_spans_and_the_frames_a_chunk_holds() -> None:
    assert encode_spans(11, 3) == [(0, 4), (4, 7), (7, 10), (10, 11)]
    assert encode_spans(4, 3) == [(0, 4)] and encode_spans(1, 16) == [(0, 1)]
    assert [pixel_span(a, b, 8) for a, b in encode_spans(11, 3)] == [(0, 25), (25, 49), (49, 73), (73, 81)]
    cfg = released_vae("0.9.5", layers=1).config
    assert encode_frames(cfg, 17) == 17 and encode_frames(cfg, 129) == 129
    assert encode_frames(cfg, 137) == 129 and encode_frames(cfg, 8 * 1000 + 1) == 129


@pytest.mark.parametrize("family, released", [("0.9", 368), ("0.9.5", 225)])
def test_receptive_field_of_the_released_encoders(family: str, released: int) -> None:
    """The walk's figure, by hand from the block lists (0.9: conv_in 2, res_x 4 layers 16, compress 2, res_x_y 4 and
    res_x 3 layers 12 at 2 frames a position, ...; 368 pixel frames = 46 latent frames; 0.9.5: 225 = 29 latents),
    and on a 1-layer 0.9.5 encoder (R = 105) what it says: latent 14 changes with pixel frame 112 - R, not with the
    one before."""
    assert encoder_receptive_field(released_vae(family).config) == released
    vae = released_vae("0.9.5", layers=1)
    vae.set_conv_algorithm("direct")  # deterministic: an input outside the field cannot change a bit
    r = encoder_receptive_field(vae.config)
    assert r == 105
    x = pixels(8 * 14 + 1)
    with torch.inference_mode():
        base = vae.encode(x)[:, :, 14]
        for frame, moves in ((112 - r, True), (112 - r - 1, False)):
            y = x.clone()
            y[:, :, frame] += 1
            # out of the field, not one bit of it changes (the same operations on the same values); at its edge the
            # dependence is a product of corner weights through every layer: small (7e-8 here) but there
            assert (not torch.equal(vae.encode(y)[:, :, 14], base)) is moves, frame


@pytest.mark.parametrize("tight", [False, True])
def test_vae_encode_of_a_long_clip_runs_in_chunks(tight: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ltx vae encode`` (autoencode.VideoAutoencoder.encode) of 145 frames: the encoder takes 129 frames, then 16
    (it took all 145 at once), and the latents are the one-call encode's. ``tight``: too little memory free for
    chunks of 16 or 8 latent frames, enough for 4 (ltxcli.memory.encode.fitting_chunk, as a generation's encoder
    picks it): 33 frames, then 32 at a time (it took 129 whatever was free)."""
    from ltxcli.autoencode import VideoAutoencoder
    from ltxcli.memory import encode as encode_memory

    vae = released_vae("0.9.5", layers=1)
    if tight:
        price = {c: encode_memory.encode_memory_bytes(vae.config, (1, 3, 145, 32, 32), torch.float32, c) for c in (8, 4)}
        assert price[8] > price[4]
        monkeypatch.setattr(encode_memory, "free_memory_bytes", lambda device: int((price[4] + price[8]) / 2 / 0.8))
    video = torch.rand(145, 32, 32, 3, generator=torch.Generator().manual_seed(5))
    seen: list[int] = []
    hook = vae.encoder.conv_in.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[2]))
    try:
        got = VideoAutoencoder(vae, "test", 0.05).encode(video)
    finally:
        hook.remove()
    assert seen == ([33, 32, 32, 32, 16] if tight else [8 * ENCODE_CHUNK_LATENTS + 1, 16]), seen
    with torch.inference_mode():
        want = vae.encode(video.permute(3, 0, 1, 2)[None] * 2 - 1)  # [1, 16, 19, 1, 1]
    assert got.shape == want.shape and (got - want).abs().max().item() < ATOL


def test_the_ranks_of_a_parallel_run_encode_in_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ranks (gloo, forked) encode the same 145 frames through the pipeline's ParallelVAE, one with room for
    chunks of 16 latent frames, the other for 4: both encode in chunks of 4 (each picked from its own free memory,
    16 and 4, and their latents differed by float rounding)."""
    import multiprocessing
    import socket

    from ltxcli.memory import encode as encode_memory
    from ltxcli.parallel import context
    from ltxcli.parallel.vae import ParallelVAE

    vae, shape = released_vae("0.9.5", layers=1), (1, 3, 145, 32, 32)
    price = {c: encode_memory.encode_memory_bytes(vae.config, shape, torch.float32, c) for c in (16, 8, 4)}
    assert price[16] > price[8] > price[4]
    free = [int(price[16] / 0.8) + 1, int((price[4] + price[8]) / 2 / 0.8)]  # rank 0: 16 fits; rank 1: 4 does
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fork = multiprocessing.get_context("fork")
    picked = fork.Queue()

    def rank(r: int) -> None:  # (forked: the VAE and this test's patches are inherited)
        ctx = context.init(r, 2, init_method=f"tcp://127.0.0.1:{port}", backend="gloo", timeout_s=30)
        monkeypatch.setattr(encode_memory, "free_memory_bytes", lambda device: free[r])
        picked.put((r, encode_memory.fitting_chunk(ParallelVAE(vae, ctx), shape, "cpu")))
        ctx.destroy()

    procs = [fork.Process(target=rank, args=(r,)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        got = dict(picked.get(timeout=60) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    assert got == {0: 4, 1: 4}
