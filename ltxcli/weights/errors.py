"""The failures of ``ltxcli.weights``: each a one-line, actionable message with the exit code the CLI uses.

A module of its own because every other module of the package raises them (the registry, the cache, the Hub
calls, verification), and none of those should import another just for its exceptions.
"""

from __future__ import annotations

from pathlib import Path


class WeightsError(Exception):
    """Base class: a one-line, actionable message. ``exit_code`` is what the CLI should exit with."""

    exit_code: int = 1


class UnknownWeightsError(WeightsError, LookupError):
    """A name that is not in the registry."""

    exit_code = 2


class NoFilesError(WeightsError, ValueError):
    """An entry without files (a built-in model): there is no path to give."""

    exit_code = 2


class RegistryError(WeightsError, ValueError):
    """``weights.toml`` is malformed."""


class UnsafePathError(WeightsError, ValueError):
    """A file name (from ``weights.toml`` or a Hub listing) that could escape the weights folder."""


class WeightsUnavailableError(WeightsError):
    """Weights are not on disk and cannot be downloaded now (offline, no network, gated, missing on the Hub)."""

    exit_code = 3


class HubUnreachableError(WeightsUnavailableError):
    """The Hub could not be asked at all (no network, a wrong HF_ENDPOINT): unlike its definite answers (gated, not
    found, token refused), what is on disk and pinned in weights.toml still says something."""


class ChecksumError(WeightsError):
    """A file's size or hash differs from the expected one."""

    exit_code = 4

    def __init__(self, message: str, *, path: Path | None = None, expected: str | None = None,
                 actual: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.expected = expected
        self.actual = actual
