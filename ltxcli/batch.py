"""A batch item (:class:`BatchItem`): a request and where its video goes.

Its own module, below the runner that plans and generates items (:mod:`ltxcli.runner`), the records written with
them (:mod:`ltxcli.records`) and the resuming of a batch (:mod:`ltxcli.resume`), so that each of those imports it
and none imports another for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .request import GenerationRequest


@dataclass
class BatchItem(GenerationRequest):
    """One video of a batch: a :class:`~ltxcli.request.GenerationRequest` (``None`` sizes and frame rate: the
    preset's, ``None`` seed: derived from the batch seed, both filled in when the batch is planned, since output
    names use them) and where it goes: ``output``, a file, folder or pattern for this item only; ``index``, its
    place in the batch; ``target`` and ``skip``, set by :func:`ltxcli.runner.plan_outputs`.

    ``batch_seed``: in a batch of several items, the seed this item's was derived from (``seed = batch_seed +
    index``, recorded in its file); ``seed_drawn``: the seed (or batch seed) was drawn at random, so a rerun
    with ``skip_existing`` may take the one recorded by an earlier run of the batch (:mod:`ltxcli.resume`)."""

    output: str | None = None
    index: int = 0
    target: Path | None = None
    skip: bool = False
    batch_seed: int | None = None
    seed_drawn: bool = False
    resume: bool = False  # a windowed run keeps its finished windows next to the output (ltxcli.long_video)


__all__ = ["BatchItem"]
