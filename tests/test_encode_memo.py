"""A condition tensor handed to the pipeline again, unchanged, is not VAE-encoded again (ltxcli.encode_memo): what
a batch's extensions of one input share. Another tensor, or the same one changed in place, is encoded anew, and the
memo keeps no tensor alive."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from ltxcli.pipeline import Pipeline
from ltxcli.request import Condition, GenerationRequest
from ltxcli.tiny import build_pipeline

SMALL = dict(height=32, width=32, num_frames=9, steps=1)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> tuple[Pipeline, list[tuple[int, ...]]]:
    pipe = build_pipeline(torch.device("cpu"), torch.float32)
    encodes: list[tuple[int, ...]] = []
    real = Pipeline._vae_encode
    monkeypatch.setattr(Pipeline, "_vae_encode", lambda self, px: encodes.append(tuple(px.shape)) or real(self, px))
    return pipe, encodes


def test_the_same_tensor_is_encoded_once_and_gives_the_same_video(counted: tuple[Pipeline, list]) -> None:
    pipe, encodes = counted
    frames = torch.rand(9, 32, 32, 3, generator=torch.Generator().manual_seed(0))
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
    frames = torch.zeros(9, 32, 32, 3)
    request = GenerationRequest("a boat", **SMALL, seed=3, conditions=[Condition(frames, 0)])
    before = pipe.run(request).latents
    frames.fill_(1.0)  # in place: the same object, another version
    changed = pipe.run(request).latents
    assert len(encodes) == 2 and not torch.equal(before, changed)
    pipe.run(GenerationRequest("a boat", **SMALL, seed=3, conditions=[Condition(torch.ones(9, 32, 32, 3), 0)]))
    assert len(encodes) == 3  # equal pixels, another tensor: encoded (the memo compares identity, not pixels)


def test_the_memo_keeps_no_pixels_alive(counted: tuple[Pipeline, list]) -> None:
    pipe, _ = counted
    frames = torch.rand(9, 32, 32, 3)
    pipe.run(GenerationRequest("a boat", **SMALL, seed=3, conditions=[Condition(frames, 0)]))
    gone = weakref.ref(frames)
    del frames
    gc.collect()
    assert gone() is None


def test_a_vae_in_another_dtype_encodes_anew(counted: tuple[Pipeline, list]) -> None:
    pipe, encodes = counted
    request = GenerationRequest("a boat", **SMALL, seed=3, conditions=[Condition(torch.rand(9, 32, 32, 3), 0)])
    pipe.run(request)
    pipe.vae.to(torch.float64)  # the same VAE object, another rounding
    try:
        pipe.run(request)
    finally:
        pipe.vae.to(torch.float32)
    assert len(encodes) == 2
