"""The resume state of a long video (:mod:`ltxcli.long_video`, ``--resume``): where it is kept, the hash that says
which run it belongs to, and reading it back. The windowed run writes and uses it; this module only names it."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from .request import Condition, Control, GenerationRequest


def state_path(target: str | os.PathLike[str]) -> Path:
    """Where a ``--resume`` run keeps its finished windows: next to the output, hidden."""
    t = Path(target)
    return t.with_name(f".{t.name}.ltx-resume")


def state_hash(request: GenerationRequest, windows: Mapping[str, Any], model: str,
               compute: Mapping[str, Any] | None = None) -> str:
    """sha256 of what decides the latents of a run: the model, how it computes (``compute``: the pipeline's
    :meth:`~ltxcli.pipeline.Pipeline.compute_record`, dtype and weight storage, and the LoRAs merged), the windows'
    settings and every request setting (a tensor by its dtype, shape and bytes; a media file, the v2v input,
    a condition's or the control's, by its path, size and modification time, so that the windows made from a file
    replaced since are not resumed)."""
    def media(v: Any) -> Any:
        if not isinstance(v, (str, os.PathLike)):
            return plain(v)
        try:
            st = os.stat(v)
        except OSError:  # (reading it says what is wrong)
            return [os.fspath(v), None]
        return [os.fspath(v), st.st_size, st.st_mtime_ns]

    def plain(v: Any) -> Any:
        if isinstance(v, Condition):
            return [media(v.media), v.frame, v.strength]
        if isinstance(v, Control):
            return [media(v.media), v.strength, v.kind]
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if torch is not None and isinstance(v, torch.Tensor):  # a condition in memory (an extension's context):
            # by its contents, so that the state of another input is not resumed
            data = v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
            return [str(v.dtype), list(v.shape), hashlib.sha256(data).hexdigest()]
        return repr(type(v)) if not isinstance(v, os.PathLike) else os.fspath(v)

    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported (not imported here for it)

    req = {f.name: plain(getattr(request, f.name)) for f in fields(GenerationRequest)}
    req["video"] = media(request.video)
    if compute is not None and "loras" in compute:
        # the LoRAs merged decide the latents, not how the request named them: None (the pipeline's), [] and
        # ["none"] with nothing merged are one state
        del req["loras"]
    blob = json.dumps({"model": model, "compute": compute, "request": req, "long": windows}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_state(state: Path, *, mapped: bool = False) -> dict[str, Any]:
    """The state file's contents; empty when there is none, or it is truncated or foreign (a run starts over).
    ``mapped``: its tensors (the kept windows' latents) are mapped, not read: for :func:`saved_seed`."""
    import torch

    if not state.is_file():
        return {}
    try:
        saved = torch.load(state, map_location="cpu", weights_only=True, mmap=mapped)
    except Exception:
        return {}
    return saved if isinstance(saved, dict) else {}


def seed_of(saved: Mapping[str, Any]) -> int | None:
    """The seed in a state's contents (:func:`read_state`; None: none). A run whose seed is left to chance takes
    it when it resumes (any seed would do, and only that one can match the state's hash, which still decides
    whether its windows are used), so the same command without ``--seed`` continues."""
    seed = saved.get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def saved_seed(state: Path) -> int | None:
    """:func:`seed_of` the state file ``state``, its latents left unread: for the CLI's items
    :func:`ltxcli.runner.plan_outputs` takes it before the prompt is enhanced with the seed, and the item's run
    reads the whole state later, once (:func:`ltxcli.long_video.generate`)."""
    return seed_of(read_state(state, mapped=True))


def interrupted_target(targets: str, target_for: Callable[[int], Path]) -> tuple[Path, int] | None:
    """The output an interrupted ``--resume`` run meant to write, and its seed, when its name holds the seed (the
    default name does) and the seed is not drawn yet: among the states beside the names ``targets`` matches (a
    glob, ``*`` for the seed: :func:`ltxcli.naming.output_glob`), the newest whose saved seed names that very
    output (``target_for(seed)``). None: no such state."""
    found = []
    for name in glob.glob(str(state_path(targets))):
        seed = saved_seed(Path(name))
        if seed is not None and state_path(target_for(seed)).absolute() == Path(name).absolute():
            found.append((os.stat(name).st_mtime, target_for(seed), seed))
    return max(found, key=lambda f: f[0])[1:] if found else None


__all__ = ["interrupted_target", "read_state", "saved_seed", "seed_of", "state_hash", "state_path"]
