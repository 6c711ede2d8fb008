"""Settings for the whole test session: the CPU calibration cache (:mod:`ltxcli.calibrate`) lives in a temporary
folder, never in the user's cache; ``ltx`` subprocesses inherit it through the environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session", autouse=True)
def calibration_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    before = os.environ.get("LTX_CALIBRATION_DIR")
    os.environ["LTX_CALIBRATION_DIR"] = str(tmp_path_factory.mktemp("calibration"))
    yield
    if before is None:
        os.environ.pop("LTX_CALIBRATION_DIR", None)
    else:
        os.environ["LTX_CALIBRATION_DIR"] = before


@pytest.fixture(scope="module")
def multi_temporal() -> Any:
    """The tiny model with its temporal upscaler and a random spatial upsampler (multi-scale runs: tests/test_upsampler.py,
    tests/test_memory_plan.py), loaded once per module."""
    import torch

    from ltxcli import load_pipeline
    from ltxcli.models.configs import UpsamplerConfig
    from ltxcli.models.upsampler import LatentUpsampler

    pipe = load_pipeline("tiny", temporal_upsampler="ltxv-temporal-upscaler-0.9.7")
    torch.manual_seed(0)
    pipe.upsampler = LatentUpsampler(UpsamplerConfig(in_channels=16, mid_channels=32, num_blocks_per_stage=1)).eval()
    return pipe
