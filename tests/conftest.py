"""Settings for the whole test session: the CPU calibration cache (:mod:`ltxcli.calibrate`) lives in a temporary
folder, never in the user's cache; ``ltx`` subprocesses inherit it through the environment."""

from __future__ import annotations

import os
from collections.abc import Iterator

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
