"""A model name or path -> :class:`ModelSpec`: everything a run needs, resolved before any weight is read.

``resolve_spec`` answers, in one place, which checkpoint (transformer + VAE), text encoder and latent upsampler a
weights.toml name (the builtin ``tiny`` included), an official single ``.safetensors`` file or a diffusers-format
folder needs; where each is on disk or whether it still has to be downloaded (and how many bytes that is, where
weights.toml pins the sizes); the preset; and what the checkpoint header says (dtypes, fp8, the position range).
Loading (:func:`ltxcli.load_pipeline`), downloading (``ltx weights pull``, the automatic pulls of ``ltx generate``),
``ltx doctor`` and the memory plan all read it, so the component fallbacks exist only here.

Only headers are read, and only of files that are safe to read: a registry checkpoint is inspected once its
download was verified (a damaged copy is replaced by the next pull rather than reported as corrupt), a file or
folder given by path always. Nothing here imports torch until a header is read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from . import weights
from .adapters.lora import LoraLike, LoraSpec, lora_specs, resolve_lora
from .paths import user_path
from .presets import NEUTRAL, PRESETS, TINY_PRESET, Preset, preset_for_checkpoint

if TYPE_CHECKING:
    from .loading import CheckpointInfo

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "Component",
    "FetchStarted",
    "ModelNotFoundError",
    "ModelSpec",
    "SpecError",
    "download_bytes",
    "ensure_weights",
    "given_component",
    "inspect_model",
    "names_to_pull",
    "resolve_spec",
]

PathLike = str | os.PathLike[str]
Role = Literal["model", "text_encoder", "upsampler", "lora"]
Kind = Literal["builtin", "registry", "file", "folder"]
Need = Literal["generate", "vae"]

#: A ``model`` value with one of these suffixes (or a path separator) is a path, never a registry name: a typo
#: in it is "no such file", not an unknown name with a did-you-mean hint.
CHECKPOINT_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
#: The text encoder when neither the registry entry nor the preset names one (every released model uses it).
DEFAULT_TEXT_ENCODER = "t5-xxl"
#: The temporal latent upscaler (``temporal_upscale``); the builtin ``tiny`` model has its own random one.
DEFAULT_TEMPORAL_UPSCALER = "ltxv-temporal-upscaler-0.9.7"


class SpecError(ValueError):
    """A ``model`` / ``text_encoder`` / ``upsampler`` value that names nothing usable.

    ``argument`` says which one (the CLI turns it into its option name), ``value`` is what was given; the
    message is ``"<value>: <problem>"``."""

    def __init__(self, argument: Role, value: str, problem: str) -> None:
        super().__init__(f"{value}: {problem}")
        self.argument = argument
        self.value = value
        self.problem = problem


class ModelNotFoundError(SpecError, FileNotFoundError):
    """A path that does not exist and is not a weights.toml name either."""


@dataclass(frozen=True)
class Component:
    """One thing a run loads: the checkpoint (transformer + VAE), the text encoder or the upsampler.

    ``name``: its weights.toml name, None for a path given by the caller or a diffusers folder's own
    ``text_encoder/``. ``path``: the file or folder to load (None while a registry entry is not fully on disk).
    ``present``: fully on disk. ``verified``: every file recorded as checked by a pull (always False for a
    caller's path: nothing is known to check it against). ``size``: bytes of all its files where weights.toml
    pins every size, else None (0 for nothing to download). ``state``: the registry's downloaded / partial /
    missing / builtin, ``local`` for a caller's path; ``size_on_disk``: bytes of its files on disk (registry)."""

    role: Role
    name: str | None
    path: Path | None
    present: bool
    verified: bool = False
    size: int | None = None
    state: Literal["downloaded", "partial", "missing", "builtin", "local"] = "local"
    size_on_disk: int = 0


@dataclass(frozen=True)
class ModelSpec:
    """Everything a run of ``name`` needs (see :func:`resolve_spec`).

    ``kind``: builtin (``tiny``: random weights, nothing on disk), registry (a weights.toml name), file (an
    official single file) or folder (diffusers format). ``model``: the checkpoint holding transformer and VAE
    (builtin: no path). ``text_encoder``: None for the builtin model (it has its own). ``upsampler``: None when
    the preset is single-scale and none was given. ``max_positions``: the transformer's position range
    (seconds, px, px) from the header, else the released value. ``info``: the checkpoint header, when read.
    ``dtypes``: bytes per stored dtype of the checkpoint's tensors (safetensors headers; empty when unread).
    ``checkpoint_dtype``: the dtype holding most of those bytes. ``fp8``: whether the checkpoint stores float8
    weights (from the header, else the registry's ``precision``; None when unknown)."""

    kind: Kind
    name: str
    label: str
    preset: Preset
    model: Component
    text_encoder: Component | None
    upsampler: Component | None
    max_positions: tuple[int, int, int]
    info: CheckpointInfo | None = None
    dtypes: dict[str, int] = field(default_factory=dict)
    checkpoint_dtype: str | None = None
    fp8: bool | None = None
    weights_dir: PathLike | None = None
    # what was asked for, so the spec can be resolved again after a download
    requested: tuple[str | None, str | None] = (None, None)
    need: Need = "generate"
    registry: weights.Registry | None = field(default=None, repr=False, compare=False)
    loras: tuple[LoraSpec, ...] = ()
    lora_components: tuple[Component, ...] = ()
    # the temporal upscaler (requested_temporal: what was asked for); builtin: a component without a path
    temporal_upsampler: Component | None = None
    requested_temporal: str | None = None
    spatial_upsampler: bool = True  # False: the run loads no (spatial) upsampler, given or default (resolve_spec)

    @property
    def path(self) -> Path | None:
        """The checkpoint file or diffusers folder (None: builtin, or a registry model not downloaded yet)."""
        return self.model.path

    @property
    def components(self) -> tuple[Component, ...]:
        """Every weight the run reads: model, text encoder, upsamplers and LoRAs (those it has)."""
        return tuple(c for c in (self.model, self.text_encoder, self.upsampler, *self.lora_components,
                                 self.temporal_upsampler) if c is not None)

    @property
    def temporal_source(self) -> str | None:
        """What ``load_pipeline(temporal_upsampler=...)`` takes for this spec's temporal upscaler (None: none)."""
        t = self.temporal_upsampler
        return None if t is None else str(t.path) if t.path is not None else self.requested_temporal

    @property
    def needed(self) -> list[str]:
        """The weights.toml names the run loads (model, text encoder, upsampler, LoRAs), so they can be pulled first."""
        if self.kind == "builtin":
            return []
        return list(dict.fromkeys(c.name for c in self.components if c.name is not None))

    @property
    def missing(self) -> list[str]:
        """The needed names that are not fully on disk."""
        return list(dict.fromkeys(c.name for c in self.components if c.name in self.needed and not c.present))

    @property
    def download_size(self) -> int | None:
        """Bytes a pull of :attr:`missing` downloads, where weights.toml pins every size (else None)."""
        return download_bytes(self)

    def refreshed(self) -> ModelSpec:
        """The same request resolved again (after a download: paths, verification and the header)."""
        return self.with_loras(self.loras)

    def with_loras(self, loras: Iterable[LoraLike] | None) -> ModelSpec:
        """The same model resolved again with ``loras`` (see :func:`resolve_spec`)."""
        te, up = self.requested
        return resolve_spec(self.name, text_encoder=te, upsampler=up, weights_dir=self.weights_dir,
                            registry=self.registry, need=self.need, loras=loras,
                            temporal_upsampler=self.requested_temporal, spatial_upsampler=self.spatial_upsampler)

    def header(self) -> CheckpointInfo:
        """The checkpoint header: :attr:`info`, else read now (a registry file whose check has not finished, or a
        spec resolved with ``header=False``). Raises the "not downloaded" error for a registry model not on disk."""
        if self.info is not None:
            return self.info
        if self.path is None:
            weights.resolve(self.name, weights_dir=self.weights_dir, registry=self.registry)
        assert self.path is not None, "the builtin model has no header"
        return inspect_model(self.path, need=self.need)

    def require(self) -> None:
        """Raise :class:`ltxcli.weights.WeightsUnavailableError` (the one-line "not downloaded" message, the
        offline one under ``HF_HUB_OFFLINE``) for the first needed registry entry that is not on disk."""
        for name in self.missing:
            weights.resolve(name, weights_dir=self.weights_dir, registry=self.registry)


def inspect_model(path: Path, *, need: Need = "generate") -> CheckpointInfo:
    """Header-only check of a checkpoint on disk: a corrupt or foreign file, a config this code cannot build,
    or one without the parts ``need`` uses is a one-line ``CheckpointError`` naming the file."""
    from .loading import CheckpointError, ConfigError, inspect_checkpoint

    try:
        info = inspect_checkpoint(path)
    except ConfigError as e:  # an unsupported architecture or config value: say which file holds it
        raise CheckpointError(f"{path}: {e}") from None
    if need == "generate" and (info.transformer is None or info.vae is None):
        raise CheckpointError(f"{path}: needs both a transformer and a VAE to generate")
    if need == "vae" and info.vae is None:
        raise CheckpointError(f"{path}: has no VAE")
    return info


def _dtype_bytes(path: Path) -> dict[str, int]:
    """Bytes per stored dtype of a single file's or diffusers folder's transformer and VAE (headers only)."""
    import math

    from .safetensors_io import SafetensorsFile

    files = [path] if path.is_file() else [
        f for part in ("transformer", "vae") for f in sorted((path / part).glob("*.safetensors"))]
    out: dict[str, int] = {}
    for file in files:
        for info in SafetensorsFile(file).infos.values():
            name = str(info.dtype).removeprefix("torch.")
            out[name] = out.get(name, 0) + math.prod(info.shape) * info.dtype.itemsize
    return out


def _registry_component(role: Role, name: str, weights_dir: PathLike | None, reg: weights.Registry) -> Component:
    entry = reg[name]
    if entry.is_builtin:
        return Component(role, name, None, present=True, verified=True, size=0, state="builtin")
    st = weights.status(name, weights_dir=weights_dir, registry=reg)
    present = st.state == "downloaded"
    pinned = [f.size for f in entry.files]
    size = sum(s for s in pinned if s is not None) if entry.files and None not in pinned else None
    return Component(
        role, name, weights.path(name, weights_dir=weights_dir, registry=reg) if present else None, present,
        verified=present and all(f.verified for f in st.files), size=size, state=st.state,
        size_on_disk=st.size_on_disk,
    )


def _given_component(role: Role, value: str, weights_dir: PathLike | None, reg: weights.Registry) -> Component:
    """A caller's ``text_encoder`` / ``upsampler``: a weights.toml name or an existing path."""
    if value in reg:
        return _registry_component(role, value, weights_dir, reg)
    path = Path(user_path(value))
    if not path.exists():
        raise ModelNotFoundError(role, value, "no such file or folder, and not a name in weights.toml")
    return Component(role, None, path, present=True)


def given_component(role: Role, value: PathLike, *, weights_dir: PathLike | None = None,
                    registry: weights.Registry | None = None) -> Component:
    """What a caller's ``text_encoder`` / ``upsampler`` value names, found as :func:`resolve_spec` finds it (a
    weights.toml entry and its state on disk, or an existing path), with nothing pulled or read: how a value a run
    will not use (a one-pass model's upsampler) is still checked. :class:`ModelNotFoundError`: neither."""
    reg = registry if registry is not None else weights.load_registry()
    return _given_component(role, os.fspath(value), weights_dir, reg)


def resolve_spec(
    model: PathLike | None = None,
    *,
    text_encoder: PathLike | None = None,
    upsampler: PathLike | None = None,
    weights_dir: PathLike | None = None,
    registry: weights.Registry | None = None,
    need: Need = "generate",
    header: bool = True,
    loras: Iterable[LoraLike] | None = None,
    temporal_upsampler: PathLike | None = None,
    spatial_upsampler: bool = True,
) -> ModelSpec:
    """Resolve what a run of ``model`` loads. No download, no tensor data read.

    ``model``: a weights.toml name (default: the registry's default model; ``tiny`` is built in), an official
    single ``.safetensors`` file or a diffusers-format folder. ``text_encoder``: a weights.toml name or a folder
    with a transformers T5 encoder and its tokenizer; default: a diffusers folder's own ``text_encoder/``, else
    the registry entry's, else the preset's, else ``t5-xxl``. ``upsampler``: a weights.toml name or an official
    upsampler file; default: the registry entry's, else the preset's (multi-scale presets only).
    ``need="vae"``: only the checkpoint's VAE is used (no text encoder or upsampler; the header needs a VAE).
    ``header=False``: read no header (``info`` stays None; :meth:`ModelSpec.header` reads it when needed).
    ``loras``: LoRAs the run merges (:func:`ltxcli.adapters.lora.lora_specs`): registry ones join
    :attr:`ModelSpec.needed` and are refused here on a model they are not made for; files must exist.
    ``temporal_upsampler``: a weights.toml name or an official temporal upscaler file, for ``temporal_upscale``
    (:data:`DEFAULT_TEMPORAL_UPSCALER`; the builtin model's is built in). ``spatial_upsampler=False``: the run makes
    no multi-scale pass (every video in several windows, each one pass): no upsampler, the default or ``upsampler``
    (still checked by name or path, neither pulled nor read).

    Raises :class:`ltxcli.weights.UnknownWeightsError` (an unknown name, with a did-you-mean hint),
    :class:`SpecError` (a registry entry that is not a model), :class:`ModelNotFoundError` (no such path) and
    ``CheckpointError`` (a file or folder whose header is broken, refused (pickles) or lacks what ``need`` uses).
    """
    reg = registry if registry is not None else weights.load_registry()
    spec = _resolve(model, text_encoder, upsampler, weights_dir, reg, need, header, loras)
    if not spatial_upsampler:
        spec = replace(spec, upsampler=None, spatial_upsampler=False)
    if temporal_upsampler is None:
        return spec
    value = os.fspath(temporal_upsampler)
    if spec.kind == "builtin" and value == DEFAULT_TEMPORAL_UPSCALER:
        comp = Component("upsampler", None, None, present=True, state="builtin")
    else:
        comp = _given_component("upsampler", value, weights_dir, reg)
    return replace(spec, temporal_upsampler=comp, requested_temporal=value)


def _resolve(
    model: PathLike | None, text_encoder: PathLike | None, upsampler: PathLike | None, weights_dir: PathLike | None,
    reg: weights.Registry, need: Need, header: bool, loras: Iterable[LoraLike] | None,
) -> ModelSpec:
    name = os.fspath(model) if model else reg.default.name
    te_arg = os.fspath(text_encoder) if text_encoder is not None else None
    up_arg = os.fspath(upsampler) if upsampler is not None else None
    specs = lora_specs(loras)
    lora_parts = tuple(_lora_component(s, name, weights_dir, reg) for s in specs)

    entry = reg.entries.get(name)
    path: Path | None
    if entry is not None and entry.is_builtin:
        given_up = _given_component("upsampler", up_arg, weights_dir, reg) if up_arg is not None else None
        from .tiny import TINY_TRANSFORMER

        return ModelSpec(
            "builtin", name, name, TINY_PRESET, _registry_component("model", name, weights_dir, reg),
            None, given_up, _positions(TINY_TRANSFORMER.positional_embedding_max_pos), fp8=False, weights_dir=weights_dir,
            requested=(te_arg, up_arg), registry=reg, loras=specs, lora_components=lora_parts,
        )
    if entry is not None:
        if entry.kind != "model":
            raise SpecError("model", name, f"that is a {entry.kind.replace('_', ' ')}, not a model (see `ltx weights list`)")
        kind: Kind = "registry"
        preset = PRESETS.get(entry.preset or "", NEUTRAL)
        main = _registry_component("model", name, weights_dir, reg)
        path, label = main.path, name
    else:
        path = Path(user_path(name))
        if path.is_dir():
            kind, preset = "folder", NEUTRAL
        elif path.is_file():
            kind, preset = "file", preset_for_checkpoint(path.name) or NEUTRAL
        elif path.suffix.lower() in CHECKPOINT_SUFFIXES or os.sep in name or "/" in name:
            raise ModelNotFoundError("model", name, "no such file or folder")
        else:
            reg[name]  # raises UnknownWeightsError with a did-you-mean hint
            raise AssertionError("unreachable")
        main = Component("model", None, path, present=True)
        label = str(path)

    # The header: always for a path, for a registry file only once its download was verified.
    readable = path is not None and (kind != "registry" or main.verified)
    info = inspect_model(path, need=need) if header and readable and path is not None else None
    dtypes = _dtype_bytes(path) if info is not None and path is not None else {}

    te: Component | None = None
    up: Component | None = None
    if te_arg is not None:
        te = _given_component("text_encoder", te_arg, weights_dir, reg)
    if up_arg is not None:
        up = _given_component("upsampler", up_arg, weights_dir, reg)
    if need == "generate":
        if te is None:
            if kind == "folder" and path is not None and (path / "text_encoder").is_dir():
                te = Component("text_encoder", None, path, present=True)  # the diffusers folder's own
            else:
                te_name = (entry.text_encoder if entry else None) or preset.text_encoder or DEFAULT_TEXT_ENCODER
                te = _registry_component("text_encoder", te_name, weights_dir, reg)
        up_name = (entry.upsampler if entry else None) or preset.upsampler
        if up is None and up_name:
            up = _registry_component("upsampler", up_name, weights_dir, reg)
    else:
        te = up = None

    from .models.configs import TransformerConfig

    tcfg = info.transformer if info is not None and info.transformer is not None else TransformerConfig()
    if info is not None:
        fp8: bool | None = info.is_fp8 or any(d.startswith("float8") for d in dtypes)
    elif entry is not None:
        fp8 = (entry.precision or "").startswith("float8")
    else:
        fp8 = None
    return ModelSpec(
        kind, name, label, preset, main, te, up, _positions(tcfg.positional_embedding_max_pos), info=info,
        dtypes=dtypes, checkpoint_dtype=max(dtypes, key=dtypes.__getitem__) if dtypes else None, fp8=fp8,
        weights_dir=weights_dir, requested=(te_arg, up_arg), need=need, registry=reg, loras=specs,
        lora_components=lora_parts,
    )


def _lora_component(spec: LoraSpec, model: str, weights_dir: PathLike | None, reg: weights.Registry) -> Component:
    """A LoRA of the run: its registry entry (checked against ``model``) or its file."""
    ref = resolve_lora(spec, model=model, weights_dir=weights_dir, registry=reg)
    if ref.name is not None:
        return _registry_component("lora", ref.name, weights_dir, reg)
    return Component("lora", None, ref.path, present=True)


def _positions(max_pos: Iterable[int]) -> tuple[int, int, int]:
    return tuple(max_pos)  # type: ignore[return-value]  # three values (TransformerConfig validates it)


def download_bytes(spec: ModelSpec, *, ask_hub: bool = False) -> int | None:
    """Bytes a pull of ``spec.missing`` downloads: 0 when nothing is missing, the sum of the sizes weights.toml
    pins when it pins every one; else, with ``ask_hub`` and not offline, the Hub's listing of the files not on
    disk (no download); else None (unknown). Never raises for a network or Hub error."""
    missing = [c for c in spec.components if c.name in spec.missing]
    if not missing:
        return 0
    if all(c.size is not None for c in missing):
        return sum(c.size or 0 for c in missing)
    if not ask_hub or weights.is_offline():
        return None
    try:
        return sum(f.size or 0 for c in missing for f in weights.plan(
            c.name or "", weights_dir=spec.weights_dir, registry=spec.registry) if not f.present)
    except Exception:  # any network or Hub error leaves the size unknown
        return None


@dataclass(frozen=True)
class FetchStarted:
    """Sent to ``on_event`` before :func:`ensure_weights` pulls ``name``: ``downloading`` (not fully on disk) or
    ``verifying`` (on disk, but no finished check is recorded) into ``location``."""

    name: str
    action: Literal["downloading", "verifying"]
    location: str


def ensure_weights(
    names: Iterable[str],
    *,
    weights_dir: PathLike | None = None,
    registry: weights.Registry | None = None,
    on_event: Callable[[object], None] | None = None,
) -> None:
    """Pull every name that is not fully on disk and verified; offline, a name not on disk raises the offline
    :class:`ltxcli.weights.WeightsUnavailableError`.

    A file that is on disk but not recorded as verified (a pull interrupted while hashing, a copy put there by
    hand) goes through :func:`ltxcli.weights.pull` again, which hashes it and replaces it if it is broken, so a run
    never loads a file whose check did not finish. Offline, such a file is checked against what is known locally.
    ``on_event`` receives a :class:`FetchStarted` before each pull, then that pull's
    :class:`ltxcli.weights.Event` s.
    """
    reg = registry if registry is not None else weights.load_registry()
    for name in names:
        if reg[name].is_builtin:
            continue
        st = weights.status(name, weights_dir=weights_dir, registry=reg)
        if st.state == "downloaded" and all(f.verified for f in st.files):
            continue
        if st.state != "downloaded" and weights.is_offline():
            weights.resolve(name, weights_dir=weights_dir, registry=reg)  # raises the offline message
        if on_event is not None:
            action: Literal["downloading", "verifying"] = "verifying" if st.state == "downloaded" else "downloading"
            on_event(FetchStarted(name, action, str(weights.weights_location(weights_dir))))
        weights.pull(name, weights_dir=weights_dir, on_event=on_event, registry=reg)


def names_to_pull(names: list[str] | None, *, deps: bool = True, with_enhancer: bool = False,
                  registry: weights.Registry | None = None) -> list[str]:
    """The registry entries to download for ``names`` (default: the default model), each once: with ``deps`` a
    model brings what a run of it loads (its upsampler and text encoder, found by :func:`resolve_spec`); with
    ``with_enhancer`` also the prompt enhancer models its preset names (built-in ones need nothing)."""
    reg = registry if registry is not None else weights.load_registry()
    wanted = names or [reg.default.name]
    out: list[str] = []
    for n in wanted:
        if deps and reg[n].kind == "model":
            spec = resolve_spec(n, registry=reg, header=False)
            out += [c.name for c in (spec.model, spec.upsampler, spec.text_encoder) if c is not None and c.name]
        else:
            out.append(reg[n].name)
        if with_enhancer and reg[n].kind in ("model", "builtin"):
            preset = resolve_spec(n, registry=reg, header=False).preset
            out += [m for m in (preset.prompt_enhancer_llm, preset.prompt_enhancer_captioner) if m in reg]
    return list(dict.fromkeys(out))
