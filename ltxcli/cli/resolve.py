"""``--model`` / ``--text-encoder`` / ``--upsampler`` values -> what to load, checked before any weight is read,
and the automatic download of registry weights that are not on disk yet."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .common import CliError, Output, usage_error

MODEL_ENV = "LTX_MODEL"
WEIGHTS_DIR_ENV = "LTX_WEIGHTS_DIR"
# a --model value with one of these suffixes (or a path separator) is a path, never a registry name
CHECKPOINT_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")


@dataclass(frozen=True)
class ModelRef:
    """A resolved ``--model``. ``kind``: builtin (tiny), registry (weights.toml name), file or folder."""

    kind: Literal["builtin", "registry", "file", "folder"]
    name: str  # what the user typed (registry name or path)
    preset: Any  # ltxcli.presets.Preset: the defaults generation will use
    path: Path | None = None  # file or folder on disk (registry: only once downloaded)

    @property
    def label(self) -> str:
        return self.name if self.kind in ("builtin", "registry") else str(self.path)


def registry() -> Any:
    from ltxcli import weights

    return weights.load_registry()


def resolve_model(model: str | None, weights_dir: str | None) -> ModelRef:
    """Name/path -> :class:`ModelRef` (no download, no weights read). Unknown names are usage errors."""
    from ltxcli import weights
    from ltxcli.presets import NEUTRAL, PRESETS, preset_for_checkpoint

    reg = registry()
    name = model or reg.default.name
    if name in reg:
        entry = reg[name]
        if entry.is_builtin:
            from ltxcli.tiny import TINY_PRESET

            return ModelRef("builtin", name, TINY_PRESET)
        if entry.kind != "model":
            usage_error(f"--model {name}: that is a {entry.kind.replace('_', ' ')}, not a model (see `ltx weights list`)")
        preset = PRESETS.get(entry.preset or "", NEUTRAL)
        return ModelRef("registry", name, preset, weights.path(name, weights_dir=weights_dir, registry=reg))
    path = Path(name).expanduser()
    if path.is_dir():
        return ModelRef("folder", name, NEUTRAL, path)
    if path.is_file():
        return ModelRef("file", name, preset_for_checkpoint(path.name) or NEUTRAL, path)
    if path.suffix.lower() in CHECKPOINT_SUFFIXES or os.sep in name or "/" in name:
        usage_error(f"--model {name}: no such file or folder")
    reg[name]  # raises UnknownWeightsError (exit 2) with a did-you-mean hint
    raise AssertionError("unreachable")


def max_positions(ref: ModelRef, weights_dir: str | None = None) -> tuple[int, int, int]:
    """The transformer's position range (seconds, px, px) from the checkpoint header, else the released value."""
    from ltxcli.models.configs import TransformerConfig

    if ref.kind == "builtin":
        from ltxcli.tiny import TINY_TRANSFORMER

        return tuple(TINY_TRANSFORMER.positional_embedding_max_pos)  # type: ignore[return-value]
    if ref.path is not None and (ref.kind != "registry" or _verified(ref.name, weights_dir)):
        # A registry file is read only once its download was verified: a damaged copy is replaced by the
        # download step, not reported as corrupt here.
        info = inspect(ref)
        if info.transformer is not None:
            return tuple(info.transformer.positional_embedding_max_pos)  # type: ignore[return-value]
    return tuple(TransformerConfig().positional_embedding_max_pos)  # type: ignore[return-value]


def _verified(name: str, weights_dir: str | None = None) -> bool:
    from ltxcli import weights

    st = weights.status(name, weights_dir=weights_dir, registry=registry())
    return st.state == "downloaded" and all(f.verified for f in st.files)


def inspect_path(path: Path) -> Any:
    """:func:`ltxcli.loading.inspect_checkpoint` of ``path``, a config it cannot use a ``CheckpointError``
    naming the file."""
    from ltxcli.loading import CheckpointError, ConfigError, inspect_checkpoint

    try:
        return inspect_checkpoint(path)
    except ConfigError as e:  # an unsupported architecture or config value: say which file holds it
        raise CheckpointError(f"{path}: {e}") from None


def inspect(ref: ModelRef) -> Any:
    """Header-only check of a model on disk: a corrupt or foreign file fails here (exit 6), before loading."""
    from ltxcli.loading import CheckpointError

    assert ref.path is not None
    info = inspect_path(ref.path)
    if info.transformer is None or info.vae is None:
        raise CheckpointError(f"{ref.path}: needs both a transformer and a VAE to generate")
    return info


def needed_weights(ref: ModelRef, *, text_encoder: str | None, upsampler: str | None) -> list[str]:
    """Registry names ``load_pipeline`` will resolve for this model (so they can be pulled first)."""
    if ref.kind == "builtin":
        return []
    reg = registry()
    names: list[str] = []
    entry = reg[ref.name] if ref.kind == "registry" else None
    if entry is not None:
        names.append(entry.name)
    if text_encoder is None:
        has_own = ref.kind == "folder" and ref.path is not None and (ref.path / "text_encoder").is_dir()
        if not has_own:
            names.append((entry.text_encoder if entry else None) or ref.preset.text_encoder or "t5-xxl")
    elif text_encoder in reg:
        names.append(text_encoder)
    if upsampler is None:
        up = (entry.upsampler if entry else None) or ref.preset.upsampler
        if up:
            names.append(up)
    elif upsampler in reg:
        names.append(upsampler)
    return list(dict.fromkeys(names))


def ensure_downloaded(names: list[str], *, weights_dir: str | None, out: Output) -> None:
    """Pull every name that is not fully on disk and verified (with progress), unless offline: then exit 3.

    A file that is on disk but not recorded as verified (a pull interrupted while hashing, a copy put there by
    hand) goes through ``weights.pull`` again, which hashes it and replaces it if it is broken, so a run never
    loads a file whose check did not finish. Offline, such a file is checked against what is known locally.
    """
    from ltxcli import weights

    from .progress import WeightsProgress

    reg = registry()
    for name in names:
        if reg[name].is_builtin:
            continue
        st = weights.status(name, weights_dir=weights_dir, registry=reg)
        if st.state == "downloaded" and all(f.verified for f in st.files):
            continue
        if st.state != "downloaded" and weights.is_offline():
            weights.resolve(name, weights_dir=weights_dir, registry=reg)  # raises the offline message (exit 3)
        verb = "verifying" if st.state == "downloaded" else "downloading"
        out.info(f"{verb} {name} in {weights.weights_location(weights_dir)}")
        with WeightsProgress(out) as bars:
            weights.pull(name, weights_dir=weights_dir, on_event=bars, registry=reg)


def check_component(value: str | None, what: str) -> None:
    """``--text-encoder`` / ``--upsampler`` must be a registry name or an existing path (exit 2 otherwise)."""
    if value is not None and value not in registry() and not Path(value).expanduser().exists():
        raise CliError(f"{what} {value}: no such file or folder, and not a name in weights.toml", 2)


def local_component(value: str | None, *, weights_dir: str | None, what: str) -> str | None:
    """``--text-encoder`` / ``--upsampler``: a registry name (must be downloaded by now) or a path."""
    if value is None:
        return None
    from ltxcli import weights

    check_component(value, what)
    reg = registry()
    if value in reg:
        return str(weights.resolve(value, weights_dir=weights_dir, registry=reg))
    return str(Path(value).expanduser())
