"""Weight randomisers shared by the model tests: seeded, so every test module gets the same values bit for bit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ltxcli.models.configs import TransformerConfig
from ltxcli.models.transformer import LTXVideoTransformer

SCALE_MULTIPLIER = 731.0  # deliberately not the 1000 a VAE's timestep_scale_multiplier is initialised with


@torch.no_grad()
def randomise_scaled(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every parameter (zero-initialised tables and noise scales included) a non-trivial value: matrices
    and kernels N(0, 1/fan_in), vectors N(0, 0.2^2), ``timestep_scale_multiplier`` :data:`SCALE_MULTIPLIER`.
    Returns ``model`` (its train/eval mode unchanged)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("timestep_scale_multiplier"):
            p.fill_(SCALE_MULTIPLIER)
        elif p.ndim >= 2:
            p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
        else:
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model


def randomise_normal(module: torch.nn.Module, seed: int) -> None:
    """Every parameter N(0, 0.4^2), drawn in ``module.parameters()`` order from one generator."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.4)


# The tiny DiT of the weight-storage tests (tests/test_fp8_storage.py, tests/test_int8_storage.py): blocks wide
# enough (32) for per-tensor and per-row scales to differ.
STORAGE_CFG = TransformerConfig(
    num_attention_heads=2, attention_head_dim=16, num_layers=3, in_channels=16, out_channels=16,
    cross_attention_dim=32, caption_channels=48,
)


def storage_model(seed: int = 1) -> LTXVideoTransformer:
    torch.manual_seed(0)
    model = LTXVideoTransformer(STORAGE_CFG).eval().requires_grad_(False)
    randomise_normal(model, seed)
    return model


def storage_checkpoint(path: Path, *, seed: int, fp8: bool = False) -> LTXVideoTransformer:
    """Write :func:`storage_model` (``seed``) to ``path`` as an official single file, in bfloat16, or with
    ``fp8`` as an official fp8 checkpoint holds it (block linears e4m3 with unit scale, the rest bfloat16);
    returns the model written."""
    from ltxcli.loading import save_official_checkpoint
    from ltxcli.models.fp8 import convert_to_fp8

    model = storage_model(seed=seed)
    if fp8:
        convert_to_fp8(model, dtype=torch.bfloat16)
    else:
        model = model.to(torch.bfloat16)
    save_official_checkpoint(path, transformer=model)
    return model


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|a - b| / |b|`` (Frobenius norms, in float64)."""
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def storage_inputs(n_tok: int = 12, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    cfg = STORAGE_CFG
    return {
        "hidden_states": torch.randn(2, n_tok, cfg.in_channels, generator=gen).to(dtype),
        "encoder_hidden_states": torch.randn(2, 5, cfg.caption_channels, generator=gen).to(dtype),
        "timestep": torch.rand(2, 1, generator=gen),
        "indices_grid": torch.rand(2, 3, n_tok, generator=gen) * 8,
        "encoder_attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]),
    }


def cpu_tiny_pipeline() -> Iterator[Any]:
    """The ``tiny`` pipeline on the CPU in float32, run on one thread (for a module-scoped fixture to yield from)."""
    from ltxcli.tiny import build_pipeline

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield build_pipeline(torch.device("cpu"), torch.float32)
    torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny models' ops are too small to split: one thread avoids OpenMP spin contention on shared cores.
    A module-scoped autouse fixture: importing it into a test module applies it there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
