"""Checkpoint registry (``weights.toml``), downloads from the Hugging Face Hub and sha256 verification.

``from ltxcli import weights; weights.pull("ltxv-2b-0.9.8-distilled")``. The package, by concern:

* :mod:`.registry`: ``weights.toml`` parsed into :class:`Registry` (name -> :class:`WeightsEntry`), and the
  validation of every name that becomes a path;
* :mod:`.cache`: where weights live (the huggingface_hub cache, or a plain folder given by ``weights_dir=`` /
  ``LTX_WEIGHTS_DIR``), the records of verified files, :func:`status` (:func:`status_record`, :func:`table_lines`), :func:`path`, :func:`resolve`;
* :mod:`.hub`: the Hub's file listing with its hashes, Hub errors as one-line messages;
* :mod:`.download`: :func:`plan` and :func:`pull`, with the resumable-download workaround;
* :mod:`.verify`: hashing and :func:`verify`;
* :mod:`.remove`: :func:`rm`;
* :mod:`.events`: the progress events ``pull``/``verify`` send to ``on_event`` (the library prints nothing; the CLI
  renders them as rich bars);
* :mod:`.errors`: :class:`WeightsError` and its subclasses, each with a one-line message and an ``exit_code``.

The environment (``HF_HUB_CACHE``, ``HF_HOME``, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, ``LTX_WEIGHTS_DIR``) is read on
every call, not when huggingface_hub was imported; ``HF_TOKEN`` is read by huggingface_hub itself on every request.
"""

from __future__ import annotations

from .cache import (
    PARTIAL_SUFFIX,
    VERIFIED_FILE,
    FileStatus,
    WeightsLocation,
    WeightsStatus,
    hub_cache_dir,
    is_offline,
    path,
    resolve,
    status,
    status_record,
    table_lines,
    weights_location,
)
from .download import PlannedFile, plan, pull
from .errors import (
    ChecksumError,
    HubUnreachableError,
    NoFilesError,
    RegistryError,
    UnknownWeightsError,
    UnsafePathError,
    WeightsError,
    WeightsUnavailableError,
)
from .events import Event, EventCallback, FileDone, FileProgress, FileStarted
from .registry import (
    KINDS,
    Kind,
    Registry,
    WeightFile,
    WeightsEntry,
    load_registry,
    parse_registry,
    safe_relpath,
)
from .remove import rm
from .verify import VerifiedFile, verify, verify_targets

__all__ = [
    "KINDS",
    "PARTIAL_SUFFIX",
    "VERIFIED_FILE",
    "ChecksumError",
    "Event",
    "EventCallback",
    "FileDone",
    "FileProgress",
    "FileStarted",
    "FileStatus",
    "HubUnreachableError",
    "Kind",
    "NoFilesError",
    "PlannedFile",
    "Registry",
    "RegistryError",
    "UnknownWeightsError",
    "UnsafePathError",
    "VerifiedFile",
    "WeightFile",
    "WeightsEntry",
    "WeightsError",
    "WeightsLocation",
    "WeightsStatus",
    "WeightsUnavailableError",
    "hub_cache_dir",
    "is_offline",
    "load_registry",
    "parse_registry",
    "path",
    "plan",
    "pull",
    "resolve",
    "rm",
    "safe_relpath",
    "status",
    "status_record",
    "table_lines",
    "verify",
    "verify_targets",
    "weights_location",
]
