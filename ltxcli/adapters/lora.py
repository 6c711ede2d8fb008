"""LoRA requests: ``PATH_OR_NAME[:SCALE]`` -> :class:`LoraSpec` -> :class:`LoraRef` (where the file is).

A LoRA is named by a weights.toml entry of kind ``lora`` (the official IC-LoRAs, the 13B 0.9.7 distilled LoRA)
or by a ``.safetensors`` file (PEFT's ``save_pretrained`` folder: its ``adapter_model.safetensors``). A registry
entry lists the base models it is made for (``base``); using it on
another registry model, or on a checkpoint file that is one of those models' files under its registry name, is
a one-line :class:`LoraMismatchError`. A checkpoint known to no entry is not refused here: the merge checks
every LoRA matrix against the layer it targets (:mod:`ltxcli.adapters.lora_merge`).

This module imports no torch: the CLI and :func:`ltxcli.spec.resolve_spec` resolve LoRAs before any model work.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import weights
from ..paths import user_path

PathLike = str | os.PathLike[str]
#: A source with one of these suffixes (or a path separator) is a path: a typo is "no such file", not a name.
LORA_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")

#: PEFT's ``save_pretrained`` folder: the weights, and the config whose ``lora_alpha`` scales them (read beside
#: them by :mod:`ltxcli.adapters.lora_merge`).
PEFT_WEIGHTS, PEFT_CONFIG = "adapter_model.safetensors", "adapter_config.json"


def lora_file(path: Path) -> Path:
    """The file a LoRA path stands for: a PEFT ``save_pretrained`` folder's :data:`PEFT_WEIGHTS` (its config is
    read beside it, so the folder and that file are the same LoRA, recorded alike), else ``path`` itself."""
    return path / PEFT_WEIGHTS if path.is_dir() and (path / PEFT_WEIGHTS).is_file() else path


class LoraMismatchError(ValueError):
    """A registry LoRA used on a model it is not made for (one line naming both)."""


@dataclass(frozen=True)
class LoraSpec:
    """One requested LoRA: ``source`` (a weights.toml name or a file path, as given), its ``scale``, and the
    ``sha256`` the file must have (a generation record's, so a redo refuses a changed file; None: any)."""

    source: str
    scale: float = 1.0
    sha256: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"a LoRA is a file path or a weights.toml name, got {self.source!r}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not math.isfinite(self.scale):
            raise ValueError(f"LoRA {self.source}: scale {self.scale!r} must be a finite number (e.g. 0.8)")
        if self.sha256 is not None and not (isinstance(self.sha256, str) and len(self.sha256) == 64):
            raise ValueError(f"LoRA {self.source}: sha256 {self.sha256!r} must be 64 hex digits")


#: Anything ``loras=`` accepts per entry: a path or name, ``(path_or_name, scale)``, a :class:`LoraSpec`, or a
#: mapping ``{"path" | "name": ..., "scale": ...}`` (a batch JSON line's form).
LoraLike = PathLike | tuple[PathLike, float] | LoraSpec | Mapping[str, Any]


def parse_lora(text: str) -> LoraSpec:
    """``PATH_OR_NAME[:SCALE]`` (the ``--lora`` syntax): the part after the last ``:`` is the scale when it is a
    number, so paths with ``:`` in them still work (``C:\\loras\\x.safetensors``)."""
    head, sep, tail = text.rpartition(":")
    if sep and head and not Path(text).is_file():
        try:
            scale = float(tail)
        except ValueError:
            if Path(head).exists() or head.lower().endswith(LORA_SUFFIXES):  # not a path's colon: a bad scale
                raise ValueError(f"LoRA {head}: scale {tail!r} must be a number (e.g. {head}:0.8)") from None
        else:
            return LoraSpec(head, scale)  # a number that is no scale (nan, inf) is refused as one
    if not text:
        raise ValueError("--lora: expected PATH_OR_NAME[:SCALE], e.g. style.safetensors:0.8")
    return LoraSpec(text, 1.0)


def lora_spec(entry: LoraLike) -> LoraSpec:
    """One ``loras=`` entry (see :data:`LoraLike`) as a :class:`LoraSpec` (a string in the ``--lora`` syntax,
    :func:`parse_lora`); ValueError names what is wrong."""
    if isinstance(entry, LoraSpec):
        return entry
    if isinstance(entry, str):
        return parse_lora(entry)
    if isinstance(entry, os.PathLike):
        return LoraSpec(os.fspath(entry))
    if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], (str, os.PathLike)):
        return LoraSpec(os.fspath(entry[0]), entry[1])
    if isinstance(entry, Mapping):
        # a record's entry names both (registry name and local path): the name wins, it is portable
        source = entry.get("name") or entry.get("path")
        if not set(entry) <= {"path", "name", "scale", "sha256"} or not isinstance(source, str):
            raise ValueError(f"a LoRA is {{\"path\" or \"name\": ..., \"scale\": ..., \"sha256\": ...}}, "
                             f"got {dict(entry)!r}")
        return LoraSpec(source, entry.get("scale", 1.0), entry.get("sha256"))
    raise ValueError(f"a LoRA is a path or name, (path_or_name, scale) or a LoraSpec, got {entry!r}")


#: The ``--lora`` value (a ``loras=`` entry) that asks for no LoRA, given alone: it replaces a ``--from`` record's
#: LoRAs, or a command's for a batch line, as ``[]`` does (a file of that name is ``./none``).
NO_LORA = "none"


def lora_specs(entries: Iterable[LoraLike] | None) -> tuple[LoraSpec, ...]:
    """``loras=`` as a tuple of :class:`LoraSpec` (None or ``[NO_LORA]``: none). A single string is one LoRA, not
    its characters."""
    if entries is None:
        return ()
    if isinstance(entries, (str, os.PathLike, LoraSpec, Mapping)):
        entries = [entries]
    entries = list(entries)
    if any(isinstance(e, str) and e == NO_LORA for e in entries):
        if len(entries) > 1:
            raise ValueError(f"--lora {NO_LORA} asks for no LoRA: give it alone, not with other LoRAs (a file named "
                             f"{NO_LORA}: ./{NO_LORA})")
        return ()
    return tuple(lora_spec(e) for e in entries)


@dataclass(frozen=True)
class LoraRef:
    """A :class:`LoraSpec` resolved: ``name`` its weights.toml entry (None for a file), ``path`` the file (None
    while a registry LoRA is not downloaded), ``base`` the models the entry is made for."""

    spec: LoraSpec
    name: str | None
    path: Path | None
    base: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """What the generation record names it by: the registry name, else the path as given."""
        return self.name or self.spec.source


def fetch_loras(
    specs: Iterable[LoraSpec], *, model: str | None = None, weights_dir: PathLike | None = None,
    registry: weights.Registry | None = None, download: bool = True,
    on_event: Callable[[object], None] | None = None,
) -> list[LoraRef]:
    """:func:`resolve_lora` for each spec, registry LoRAs downloaded (verified) first when ``download``, else
    refused with the one-line "not downloaded" :class:`ltxcli.weights.WeightsUnavailableError` when missing."""
    reg = registry if registry is not None else weights.load_registry()
    refs = []
    for spec in specs:
        ref = resolve_lora(spec, model=model, weights_dir=weights_dir, registry=reg)
        if ref.name is not None:
            st = weights.status(ref.name, weights_dir=weights_dir, registry=reg)
            if download and not (st.state == "downloaded" and all(f.verified for f in st.files)):
                weights.pull(ref.name, weights_dir=weights_dir, on_event=on_event, registry=reg)
            ref = LoraRef(spec, ref.name, weights.resolve(ref.name, weights_dir=weights_dir, registry=reg), ref.base)
        refs.append(ref)
    return refs


def model_entry_name(model: str, registry: weights.Registry) -> str | None:
    """The weights.toml model ``model`` is: its name, or for a checkpoint file the entry whose file it is (matched
    by file name, the registry's files being unique); None for anything else."""
    if model in registry and registry[model].kind in ("model", "builtin"):
        return model
    name = Path(model).name
    for e in registry.of_kind("model"):
        if any(Path(f.path).name == name for f in e.files):
            return e.name
    return None


def resolve_lora(
    spec: LoraSpec, *, model: str | None = None, weights_dir: PathLike | None = None,
    registry: weights.Registry | None = None,
) -> LoraRef:
    """Where ``spec`` is: a weights.toml ``lora`` entry (checked against ``model``, the base model's registry name
    or checkpoint path; not downloaded here) or an existing ``.safetensors`` file (:func:`lora_file`).

    Raises :class:`ltxcli.weights.UnknownWeightsError` (a name that is no entry and no file), ``ValueError`` (an
    entry that is not a LoRA, a path that is not a file) and :class:`LoraMismatchError`."""
    reg = registry if registry is not None else weights.load_registry()
    if spec.source in reg:
        entry = reg[spec.source]
        if entry.kind != "lora":
            raise ValueError(f"LoRA {spec.source}: that is a {entry.kind.replace('_', ' ')}, not a LoRA "
                             "(see `ltx weights list`)")
        if model is not None:
            check_base(entry.name, entry.base, model, reg)
        return LoraRef(spec, entry.name, weights.path(entry.name, weights_dir=weights_dir, registry=reg), entry.base)
    path = lora_file(Path(user_path(spec.source)))
    if path.is_file():
        return LoraRef(spec, None, path)
    if path.exists():
        raise ValueError(f"LoRA {spec.source}: not a file (a LoRA is one .safetensors file, or a PEFT folder "
                         f"holding {PEFT_WEIGHTS})")
    if path.suffix.lower() in LORA_SUFFIXES or os.sep in spec.source or "/" in spec.source:
        raise ValueError(f"LoRA {spec.source}: no such file, and not a name in weights.toml")
    reg[spec.source]  # raises UnknownWeightsError with a did-you-mean hint
    raise AssertionError("unreachable")


def check_lora_sources(entries: Iterable[LoraLike] | None, *, where: str = "",
                       weights_dir: PathLike | None = None) -> None:
    """Each LoRA of ``entries`` is a file, PEFT folder or weights.toml LoRA (:func:`resolve_lora`, no download,
    nothing read): a ValueError that starts with ``where`` (the batch line or ``--from`` record that named it,
    a path the user may not have typed) otherwise."""
    reg = weights.load_registry()
    for spec in lora_specs(entries):
        try:
            resolve_lora(spec, weights_dir=weights_dir, registry=reg)
        except weights.WeightsError:
            raise  # an unknown name: its own error (exit code, did-you-mean hint)
        except ValueError as e:
            raise ValueError(f"{where}{e}") from None


def check_base(lora: str, base: tuple[str, ...], model: str, registry: weights.Registry) -> None:
    """Refuse the registry LoRA ``lora`` (made for ``base``) on ``model`` when ``model`` is a known registry model
    (by name or by its file's name) outside ``base``."""
    known = model_entry_name(model, registry)
    if base and known is not None and known not in base:
        raise LoraMismatchError(
            f"LoRA {lora} is made for {', '.join(base)}, not for {known}")


def lora_sha256(path: PathLike) -> str:
    """The sha256 a generation record stores for the LoRA file ``path``: what ``--from`` and ``--skip-existing``
    know the LoRA by, wherever the file lies (hashed once while its size and modification time stay). For PEFT's
    ``adapter_model.safetensors`` with ``adapter_config.json`` beside it, whose alpha changes the result, the sha256
    of the two files' bytes one after the other (``cat adapter_model.safetensors adapter_config.json | sha256sum``)."""
    path = Path(path)
    files = [path, path.parent / PEFT_CONFIG] if path.name == PEFT_WEIGHTS and (path.parent / PEFT_CONFIG).is_file() \
        else [path]
    return _sha256(tuple((os.path.realpath(f), st.st_size, st.st_mtime_ns) for f in files for st in [os.stat(f)]))


@functools.lru_cache(maxsize=32)
def _sha256(files: tuple[tuple[str, int, int], ...]) -> str:
    """sha256 over the files' bytes in order (each ``(path, size, mtime_ns)``: the cache's key)."""
    h = hashlib.sha256()
    for name, _size, _mtime_ns in files:
        with open(name, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


__all__ = [
    "NO_LORA", "PEFT_CONFIG", "PEFT_WEIGHTS", "LoraLike", "LoraMismatchError", "LoraRef", "LoraSpec", "check_base",
    "check_lora_sources", "fetch_loras", "lora_file", "lora_sha256", "lora_spec", "lora_specs", "model_entry_name",
    "parse_lora", "resolve_lora",
]
