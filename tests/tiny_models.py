"""Weight randomisers shared by the model tests: seeded, so every test module gets the same values bit for bit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

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


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny models' ops are too small to split: one thread avoids OpenMP spin contention on shared cores.
    A module-scoped autouse fixture: importing it into a test module applies it there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
