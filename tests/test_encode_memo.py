"""A condition tensor the library shared (ltxcli.encode_memo.share) handed to the pipeline again, unchanged, is not
VAE-encoded again: what a batch's extensions of one input share. Another tensor, the same one changed in place, or a
caller's own tensor is encoded anew, and the memo keeps no tensor alive."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch

from ltxcli.encode_memo import share
from ltxcli.pipeline import Pipeline
from ltxcli.request import Condition, GenerationRequest
from ltxcli.tiny import build_pipeline

SMALL = dict(height=32, width=32, num_frames=9, steps=1)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> tuple[Pipeline, list[tuple[int, ...]]]:
    pipe = build_pipeline(torch.device("cpu"), torch.float32)
    encodes: list[tuple[int, ...]] = []
    real = Pipeline._vae_encode
    monkeypatch.setattr(Pipeline, "_vae_encode", lambda self, px, **k: encodes.append(tuple(px.shape)) or real(self, px, **k))
    return pipe, encodes


def test_the_same_tensor_is_encoded_once_and_gives_the_same_video(counted: tuple[Pipeline, list]) -> None:
    pipe, encodes = counted
    frames = share(torch.rand(9, 32, 32, 3, generator=torch.Generator().manual_seed(0)))
    request = GenerationRequest("a boat", **SMALL, seed=3, conditions=[Condition(frames, 0)])
    first = pipe.run(request)
    again = pipe.run(request)
    assert len(encodes) == 1
    assert torch.equal(first.latents, again.latents) and torch.equal(first.video, again.video)
    encodes.clear()
    fresh = build_pipeline(torch.device("cpu"), torch.float32)  # no memo: what encoding it again gives
    assert torch.equal(fresh.run(request).latents, first.latents) and len(encodes) == 1


def test_a_changed_or_another_tensor_is_encoded_anew(counted: tuple[Pipeline, list]) -> None:
    pipe, encodes = counted
    frames = share(torch.zeros(9, 32, 32, 3))
    request = GenerationRequest("a boat", **SMALL, seed=3, conditions=[Condition(frames, 0)])
    before = pipe.run(request).latents
    frames.fill_(1.0)  # in place: the same object, another version
    changed = pipe.run(request).latents
    assert len(encodes) == 2 and not torch.equal(before, changed)
    pipe.run(GenerationRequest("a boat", **SMALL, seed=3, conditions=[Condition(share(torch.ones(9, 32, 32, 3)), 0)]))
    assert len(encodes) == 3  # equal pixels, another tensor: encoded (the memo compares identity, not pixels)


def test_the_memo_keeps_no_pixels_alive(counted: tuple[Pipeline, list]) -> None:
    pipe, _ = counted
    frames = share(torch.rand(9, 32, 32, 3))
    pipe.run(GenerationRequest("a boat", **SMALL, seed=3, conditions=[Condition(frames, 0)]))
    gone = weakref.ref(frames)
    del frames
    gc.collect()
    assert gone() is None


def test_a_vae_in_another_dtype_encodes_anew(counted: tuple[Pipeline, list]) -> None:
    pipe, encodes = counted
    request = GenerationRequest("a boat", **SMALL, seed=3, conditions=[Condition(share(torch.rand(9, 32, 32, 3)), 0)])
    pipe.run(request)
    pipe.vae.to(torch.float64)  # the same VAE object, another rounding
    try:
        pipe.run(request)
    finally:
        pipe.vae.to(torch.float32)
    assert len(encodes) == 2


def test_a_tensor_encoded_in_another_chunk_is_encoded_anew(counted: tuple[Pipeline, list],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The encoder's time chunk is picked from the memory free at each run (ltxcli.memory.encode.fitting_chunk): a
    17-frame condition encoded in one call with room to spare is encoded anew, in chunks of 1 latent frame (9 frames,
    then 8), when nothing is free, the latents a fresh pipeline gives then (the memo handed back the one call's). A
    9-frame one is one call whatever the chunk: its latents are reused."""
    from ltxcli.memory import encode as encode_memory

    def run(frames: torch.Tensor, free: int) -> torch.Tensor:
        monkeypatch.setattr(encode_memory, "free_memory_bytes", lambda device: free)  # 0: chunks of 1 latent frame
        return pipe.run(GenerationRequest("a boat", **{**SMALL, "num_frames": 17}, seed=3,
                                          conditions=[Condition(frames, 0)])).latents

    pipe, encodes = counted
    clip = share(torch.rand(17, 32, 32, 3, generator=torch.Generator().manual_seed(1)))
    run(clip, 1 << 50)
    tight = run(clip, 0)
    assert len(encodes) == 2
    fresh = build_pipeline(torch.device("cpu"), torch.float32)
    assert torch.equal(tight, fresh.run(GenerationRequest("a boat", **{**SMALL, "num_frames": 17}, seed=3,
                                                          conditions=[Condition(clip, 0)])).latents)
    encodes.clear()
    image = share(torch.rand(9, 32, 32, 3, generator=torch.Generator().manual_seed(2)))
    run(image, 1 << 50)
    run(image, 0)
    assert len(encodes) == 1


def test_a_caller_s_tensor_is_encoded_at_every_run(counted: tuple[Pipeline, list]) -> None:
    """A tensor over a NumPy array changes when the array is written through NumPy, which torch's version counter does
    not see: a caller's tensor (not shared by the library) is never memoised, so the second run sees the new pixels."""
    pipe, encodes = counted
    array = np.zeros((9, 32, 32, 3), dtype=np.float32)
    request = GenerationRequest("a boat", **SMALL, seed=3, conditions=[Condition(torch.from_numpy(array), 0)])
    before = pipe.run(request).latents
    array[...] = 1.0  # not seen by the tensor's version counter
    after = pipe.run(request).latents
    fresh = build_pipeline(torch.device("cpu"), torch.float32).run(request).latents
    assert len(encodes) == 3 and torch.equal(after, fresh) and not torch.equal(before, after)
