"""LoRA files in every common key format, merged into a loaded transformer and taken out again bit for bit.

Formats, detected per key (a file may mix them; :attr:`LoraFile.format` names what it holds):

* ``diffusers``: ``transformer.<module>.lora_A.weight`` / ``.lora_B.weight``, as LTX-Video-Trainer writes through
  diffusers' ``save_lora_weights`` (no alpha: factor 1); ``base_model.model.<module>`` (PEFT's own save) too;
* ``comfyui``: ``diffusion_model.<module>...`` (LTX-Video-Trainer's ``comfy_lora_weights_step_N``, the official
  IC-LoRA ``-comfyui`` files), including modules outside the blocks (``patchify_proj``, ``adaln_single.linear``,
  ``caption_projection.linear_1``, ``proj_out``);
* ``bare``: ``<module>.lora_A.weight`` without a prefix;
* ``kohya``: ``lora_unet_<module with underscores>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``.

``<module>`` may be spelled as in the official model or as in diffusers (``proj_in``, ``time_embed``): the latter
goes through the loader's own diffusers key rules (:data:`ltxcli.loading.TRANSFORMER_DIFFUSERS_PREFIX_RULES`). An
``.alpha`` key, in any format, scales its layer's update by ``alpha / rank``. Without one, the PEFT config saved
with the file gives the factor as PEFT computes it (``lora_alpha / r``, ``alpha_pattern``, ``use_rslora``): the
``lora_adapter_metadata`` of the safetensors header (diffusers' ``save_lora_weights`` with
``transformer_lora_adapter_metadata``, as diffusers' training scripts save, or the model's ``save_lora_adapter``),
or the ``adapter_config.json`` beside PEFT's own ``adapter_model.safetensors``. Without either the factor is 1.

A targeted linear weight ``W [out, in]`` becomes ``W + sum_i scale_i * (alpha_i / rank_i) * (B_i @ A_i)``
(``A [rank, in]``, ``B [out, rank]``), computed in float32 once, at :meth:`LoraMerger.apply`: the denoising loop
runs the plain layers, no per-step cost. The merged weight is stored in the layer's compute dtype: cast back to
the stored dtype where the two agree (bfloat16 on GPUs, as ComfyUI and diffusers' ``fuse_lora`` do); a float32
run whose weights are kept in bfloat16 (:mod:`ltxcli.models.upcast`) keeps the merged weight in float32, so it
computes exactly ``W + dW`` in float32. A float8 matmul layer (:class:`ltxcli.models.fp8.FP8Linear`) is merged
before it is quantised: from the wide weight when the LoRA was given at load time (``load_pipeline(loras=...)``),
else from its dequantised codes (exact for the official e4m3 checkpoints, which store unit-scale codes).

An fp8-stored layer (:class:`ltxcli.models.fp8.FP8StoredLinear`, ``--weights-dtype fp8``) is always merged into its
stored codes, at load time as at a later change: ``codes * scale + dW`` in float32, quantised again to e4m3 with a
fresh per-tensor ``amax / 448`` scale. The loader quantises while reading (one wide tensor at a time on the device)
and an fp8 checkpoint has nothing wider, so there is no wide weight to merge into without giving up the memory
fp8 storage is for; merging the same way at load and per request makes a LoRA give the same bits whether it came
with ``load_pipeline`` or with a request. The price is a second e4m3 rounding of ``W`` (measured on the tiny
model in ``tests/test_lora.py``). The original codes and scale are kept (one byte per weight) for the unmerge.
An int8-stored layer (:class:`ltxcli.models.int8.Int8StoredLinear`, ``--weights-dtype int8``) is merged the same
way: ``codes * scale[:, None] + dW`` in float32, quantised again per row (:func:`ltxcli.models.int8.quantize_int8`).

Every original weight is kept (a reference on the host, a host copy of a device tensor), so
:meth:`LoraMerger.apply` with no LoRA puts back the very same bits without reading the checkpoint again.
Variants that are not a plain low-rank product (DoRA ``dora_scale``, LoHa ``hada_*``, LoKr ``lokr_*``, LoCon's
``lora_mid``, ``.diff`` full differences, LoRA biases) and keys that target no linear layer are one-line
:class:`LoraFileError` s naming the key; a LoRA made for another model size names both shapes. Nothing is
skipped silently.
"""

from __future__ import annotations

import json
import math
import os
import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..loading import TRANSFORMER_DIFFUSERS_PREFIX_RULES, TRANSFORMER_DIFFUSERS_RULES, apply_rules
from ..models.fp8 import FP8Linear, FP8StoredLinear, quantize_e4m3
from ..models.int8 import Int8StoredLinear, quantize_int8
from ..models.upcast import compute_dtype
from ..safetensors_io import CheckpointError, SafetensorsFile
from .lora import PEFT_CONFIG, PEFT_WEIGHTS, LoraRef, lora_sha256

PathLike = str | os.PathLike[str]

#: suffix -> role of the tensor in the low-rank product
SUFFIXES: tuple[tuple[str, str], ...] = (
    (".lora_A.weight", "down"), (".lora_B.weight", "up"), (".lora_down.weight", "down"),
    (".lora_up.weight", "up"), (".alpha", "alpha"),
)
#: (marker in a key, what it is): variants that are not W + B @ A
UNSUPPORTED: tuple[tuple[str, str], ...] = (
    ("dora_scale", "DoRA (dora_scale)"), ("hada_", "LoHa (hada_*)"), ("lokr_", "LoKr (lokr_*)"),
    (".lora_mid.", "LoCon with a Tucker core (lora_mid)"), ("oft_", "OFT"), (".lora_A.bias", "a LoRA bias"),
    (".lora_B.bias", "a LoRA bias"), (".lora_up.bias", "a LoRA bias"), (".lora_down.bias", "a LoRA bias"),
    ("lora_magnitude_vector", "DoRA (lora_magnitude_vector)"),
)
#: (key prefix, format, module names dotted?); the first match wins
PREFIXES: tuple[tuple[str, str, bool], ...] = (
    ("transformer.", "diffusers", True), ("base_model.model.", "diffusers", True),
    ("diffusion_model.", "comfyui", True), ("lora_unet_", "kohya", False), ("lora_transformer_", "kohya", False),
)
TEXT_ENCODER_PREFIXES = ("text_encoder.", "text_encoder_2.", "lora_te_", "lora_te1_", "lora_te2_")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class LoraFileError(CheckpointError):
    """A LoRA file that cannot be applied to this model (one line naming the file and the key or shapes)."""


@dataclass(frozen=True)
class LoraLayer:
    """The update of one linear layer: ``factor * (up @ down)``; ``down [rank, in]``, ``up [out, rank]``."""

    down: Tensor
    up: Tensor
    factor: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


@dataclass(frozen=True)
class LoraFile:
    """A LoRA file read against a model: ``layers`` by the model's (official) module name."""

    path: Path
    format: str
    layers: Mapping[str, LoraLayer]
    sha256: str = field(default="", compare=False)

    @property
    def rank(self) -> int:
        return max((layer.rank for layer in self.layers.values()), default=0)


def unwrap(transformer: nn.Module) -> nn.Module:
    """The model under wrappers that keep it as ``.module`` (:class:`ltxcli.parallel.transformer.ParallelTransformer`)."""
    while "transformer_blocks" not in transformer._modules and isinstance(transformer._modules.get("module"), nn.Module):
        transformer = transformer._modules["module"]  # type: ignore[assignment]
    return transformer


def linear_shapes(transformer: nn.Module) -> dict[str, tuple[int, int]]:
    """``{module name: (out_features, in_features)}`` of every linear layer a LoRA may target."""
    return {name: (m.out_features, m.in_features) for name, m in unwrap(transformer).named_modules()
            if isinstance(m, (nn.Linear, FP8Linear))}


def _diffusers_spelling(name: str) -> str:
    """An official module name as diffusers spells it (the inverse of the loader's prefix rules)."""
    for rule in TRANSFORMER_DIFFUSERS_PREFIX_RULES:
        if rule.new is not None and (name + ".").startswith(rule.new):
            return rule.old + name[len(rule.new):] if name != rule.new.rstrip(".") else rule.old.rstrip(".")
    return name


def _official(module: str) -> str:
    """A dotted module name in either spelling -> the official one (the loader's diffusers key rules)."""
    key = module + ".weight"
    renamed = apply_rules([key], TRANSFORMER_DIFFUSERS_PREFIX_RULES)[key] or key
    for old, new in TRANSFORMER_DIFFUSERS_RULES:
        renamed = renamed.replace(old, new)
    return renamed.removesuffix(".weight")


def _split_key(key: str, where: Path) -> tuple[str, str, str, bool]:
    """``key`` -> (module as spelled in the file, role, format, dotted); unsupported or foreign keys raise."""
    for marker, what in UNSUPPORTED:
        if marker in key:
            raise LoraFileError(f"{where}: key {key}: {what} is not supported (only plain LoRA: "
                                "lora_A/lora_B or lora_down/lora_up, and alpha)")
    if key.endswith((".diff", ".diff_b")):
        raise LoraFileError(f"{where}: key {key}: a full weight difference (.diff) is not supported (only plain LoRA)")
    if key.startswith(TEXT_ENCODER_PREFIXES):
        raise LoraFileError(f"{where}: key {key} targets the text encoder: only the transformer takes LoRAs")
    suffix, role = next(((sfx, r) for sfx, r in SUFFIXES if key.endswith(sfx)), ("", ""))
    module = key[: -len(suffix)]
    if not suffix:
        raise LoraFileError(f"{where}: key {key} is not a LoRA tensor (expected .lora_A.weight/.lora_B.weight, "
                            ".lora_down.weight/.lora_up.weight or .alpha)")
    for prefix, fmt, dotted in PREFIXES:
        if module.startswith(prefix):
            return module[len(prefix):], role, fmt, dotted
    return module, role, "bare", True


def _peft_config(path: Path, f: SafetensorsFile) -> dict | None:
    """The PEFT ``LoraConfig`` saved with the file (see the module docstring), None without one."""
    raw, where = f.metadata.get("lora_adapter_metadata"), "its lora_adapter_metadata"
    try:
        if raw is not None:
            # a pipeline's save prefixes each field with the component (the transformer's are read); the
            # transformer's own save_lora_adapter writes the config unprefixed, as its keys
            config = json.loads(raw)
            if any(k.startswith("transformer.") for k in config):
                config = {k.removeprefix("transformer."): v for k, v in config.items() if k.startswith("transformer.")}
        elif path.name == PEFT_WEIGHTS and (path.parent / PEFT_CONFIG).is_file():
            where = str(path.parent / PEFT_CONFIG)
            config = json.loads((path.parent / PEFT_CONFIG).read_text(encoding="utf-8"))
        else:
            return None
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as e:
        raise LoraFileError(f"{path}: {where} is not a readable PEFT config ({e})") from None
    if not isinstance(config, dict):
        raise LoraFileError(f"{path}: {where} is not a PEFT config (a JSON object)")
    if config.get("use_dora"):
        raise LoraFileError(f"{path}: {where} says use_dora: DoRA is not supported (only plain LoRA)")
    return config


def _peft_factor(config: dict, module: str, rank: int, path: Path) -> float:
    """PEFT's ``scaling`` of the layer ``module`` (as the file spells it): ``alpha / r`` (``/ sqrt(r)`` with
    rslora), ``alpha`` from ``alpha_pattern`` (matched as PEFT's ``get_pattern_key`` does) or ``lora_alpha``."""
    pattern = config.get("alpha_pattern") or {}
    key = next((k for k in pattern if re.match(rf"(.*\.)?({k})$", module)), None)
    alpha = pattern[key] if key is not None else config.get("lora_alpha")
    if alpha is None:
        return 1.0
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise LoraFileError(f"{path}: PEFT config lora_alpha {alpha!r} is not a number")
    return float(alpha) / (math.sqrt(rank) if config.get("use_rslora") else rank)


def read_lora(path: PathLike, shapes: Mapping[str, tuple[int, int]], *, sha256: str = "") -> LoraFile:
    """Read the LoRA file ``path`` against a model whose linear layers are ``shapes`` (:func:`linear_shapes`).

    Raises :class:`LoraFileError` naming the first offending key: an unsupported variant, a key that is no LoRA
    tensor, a target that is no linear layer of the model, a shape that does not fit (both shapes named), a
    ``lora_A`` without its ``lora_B`` (or the reverse), ranks that disagree."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise LoraFileError(f"{path}: pickle-based files ({path.suffix}) are refused because loading them can run "
                            "code; convert it to .safetensors")
    f = SafetensorsFile(path)
    peft = _peft_config(path, f)
    underscored: dict[str, str] = {}
    for name in shapes:
        for spelling in (name, _diffusers_spelling(name)):
            underscored[spelling.replace(".", "_")] = name
    parts: dict[str, dict[str, tuple[str, Tensor]]] = {}
    formats: list[str] = []
    unmatched: list[str] = []
    spelled: dict[str, str] = {}
    for key in f.names():
        module, role, fmt, dotted = _split_key(key, path)
        target = _official(module) if dotted else underscored.get(module, "")
        if target not in shapes:
            unmatched.append(key)
            continue
        if fmt not in formats:
            formats.append(fmt)
        slot = parts.setdefault(target, {})
        if role in slot:
            raise LoraFileError(f"{path}: keys {slot[role][0]} and {key} both give the {role} matrix of {target}")
        slot[role] = (key, f.tensor(key))
        spelled.setdefault(target, module)  # the name PEFT's alpha_pattern matches
    if not f.names():
        raise LoraFileError(f"{path}: holds no tensors")

    layers: dict[str, LoraLayer] = {}
    mismatched: list[str] = []
    for target, slot in parts.items():
        if "down" not in slot or "up" not in slot:
            have = next(iter(slot.values()))[0]
            missing = "lora_A/lora_down" if "down" not in slot else "lora_B/lora_up"
            raise LoraFileError(f"{path}: key {have} has no matching {missing} matrix for {target}")
        (kd, down), (ku, up) = slot["down"], slot["up"]
        if down.ndim != 2 or up.ndim != 2 or down.shape[0] != up.shape[1]:
            raise LoraFileError(f"{path}: {kd} {list(down.shape)} and {ku} {list(up.shape)} are not a rank-r pair "
                                "[r, in] and [out, r]")
        out_f, in_f = shapes[target]
        if (up.shape[0], down.shape[1]) != (out_f, in_f):
            mismatched.append(f"{kd} and {ku} make a [{up.shape[0]}, {down.shape[1]}] update, but {target} of this "
                              f"model is [{out_f}, {in_f}]")
            continue
        factor = 1.0 if peft is None else _peft_factor(peft, spelled[target], down.shape[0], path)
        if "alpha" in slot:
            ka, alpha = slot["alpha"]
            if alpha.numel() != 1:
                raise LoraFileError(f"{path}: {ka} has {alpha.numel()} values, expected one")
            factor = float(alpha.float().item()) / down.shape[0]
        layers[target] = LoraLayer(down, up, factor)
    if mismatched:
        more = f" ({len(mismatched) - 1} more layers differ)" if len(mismatched) > 1 else ""
        raise LoraFileError(f"{path}: {mismatched[0]}{more}: a LoRA made for another model size?")
    if unmatched:
        more = f" ({len(unmatched) - 1} more such keys)" if len(unmatched) > 1 else ""
        raise LoraFileError(f"{path}: key {unmatched[0]} matches no linear layer of this transformer{more}")
    return LoraFile(path, "+".join(formats), layers, sha256)


# --- merging -------------------------------------------------------------------------------------------------


@dataclass
class _Original:
    """A layer's weight before any LoRA: ``weight`` (the same tensor on the host, else a host copy), the
    ``scale`` of a float8 layer (matmul or stored; 0-d) or an int8-stored one (``[out]``; None otherwise), and
    whether the tensor was pinned."""

    weight: Tensor
    scale: Tensor | None
    pinned: bool


def _merged_dtype(layer: nn.Module, stored: torch.dtype) -> torch.dtype:
    """The dtype a merged weight is stored in: the layer's compute dtype (float32 where it stores float8)."""
    return torch.float32 if stored.itemsize == 1 else compute_dtype(layer)


# layers holding codes and a ``weight_scale``: e4m3 per tensor (0-d), int8 per row (``[out]``)
_CODED_LAYERS = (FP8Linear, FP8StoredLinear, Int8StoredLinear)


class LoraMerger:
    """The LoRAs merged into one transformer and the original weights they replaced (see the module docstring).

    Get it with :func:`merger_for` (one per transformer). :meth:`apply` sets the whole list at once: layers no
    longer targeted get their original weight back, the others are merged again from their original."""

    def __init__(self, transformer: nn.Module) -> None:
        self.model = unwrap(transformer)
        self.active: tuple[tuple[LoraFile, float], ...] = ()
        self._originals: dict[str, _Original] = {}

    def shapes(self) -> dict[str, tuple[int, int]]:
        return linear_shapes(self.model)

    def apply(self, loras: Sequence[tuple[LoraFile, float]], *, device: torch.device | str | None = None) -> None:
        """Merge ``loras`` (``(file, scale)`` pairs; empty: none) in place of whatever was merged before.
        ``device``: where the float32 updates are computed (default: each weight's own device)."""
        targets: dict[str, list[tuple[LoraLayer, float]]] = {}
        for lora, scale in loras:
            for name, layer in lora.layers.items():
                targets.setdefault(name, []).append((layer, float(scale)))
        with torch.inference_mode(False), torch.no_grad():
            for name in list(self._originals):
                if name not in targets:
                    self._restore(name)
            for name, updates in targets.items():
                self._merge(name, updates, device)
        self.active = tuple((lora, float(scale)) for lora, scale in loras)

    def _layer(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)

    def _merge(self, name: str, updates: list[tuple[LoraLayer, float]], device: torch.device | str | None) -> None:
        layer = self._layer(name)
        weight: Tensor = layer.weight
        orig = self._originals.get(name)
        if orig is None:
            data = weight.data
            pinned = data.device.type == "cpu" and data.is_pinned()
            # a host tensor is kept as it is (the layer gets a new tensor); a device tensor is copied to the host
            kept = data if data.device.type == "cpu" else data.to("cpu")
            scale = layer.weight_scale.clone() if isinstance(layer, _CODED_LAYERS) else None
            orig = self._originals[name] = _Original(kept, scale, pinned)
        work = torch.device(device) if device is not None else weight.device
        # W in float32: a coded layer's codes times their scale (the stored tensor once it was merged before)
        w = orig.weight.to(device=work, dtype=torch.float32, copy=True)  # never the original itself
        if orig.scale is not None:  # a 0-d scale, or [out] -> [out, 1]: one per row
            w = w * orig.scale.to(work).reshape(-1, 1)
        for lora, scale in updates:
            # [out, rank] @ [rank, in] -> [out, in], in float32 as the merge of ComfyUI and diffusers
            w.addmm_(lora.up.to(device=work, dtype=torch.float32), lora.down.to(device=work, dtype=torch.float32),
                     alpha=scale * lora.factor)
        if isinstance(layer, _CODED_LAYERS):  # fresh scales (per tensor, per row) for the merged weight
            codes, w_scale = quantize_int8(w) if isinstance(layer, Int8StoredLinear) else quantize_e4m3(w)
            self._write(layer, codes, orig.pinned)
            layer.weight_scale = w_scale.to(weight.device)
            if isinstance(layer, FP8StoredLinear):
                layer.codes_changed()  # checked here, between requests, not in the next denoising loop
            return
        self._write(layer, w.to(_merged_dtype(layer, orig.weight.dtype)), orig.pinned)

    def _write(self, layer: nn.Module, value: Tensor, pinned: bool) -> None:
        """Put ``value`` into ``layer.weight`` keeping the Parameter object (offload hooks hold it)."""
        weight: Tensor = layer.weight
        if weight.device.type != "cpu" and value.dtype == weight.dtype:
            weight.data.copy_(value)  # the original lives on as a host copy: no second device tensor
            return
        value = value.to(weight.device)
        if pinned:
            value = value.pin_memory()
        weight.data = value

    def _restore(self, name: str) -> None:
        layer = self._layer(name)
        orig = self._originals.pop(name)
        weight: Tensor = layer.weight
        if isinstance(layer, FP8Linear) and orig.scale is None:
            # merged at load time, before quantisation: quantise the original as the fp8 conversion did
            codes, w_scale = (orig.weight, torch.ones((), dtype=torch.float32)) \
                if orig.weight.dtype == torch.float8_e4m3fn else quantize_e4m3(orig.weight.to(weight.device))
            self._write(layer, codes, orig.pinned)
            layer.weight_scale = w_scale.to(weight.device)
            return
        if weight.device.type == "cpu":
            weight.data = orig.weight  # the very tensor it had
        else:
            self._write(layer, orig.weight, False)
        if orig.scale is not None:
            layer.weight_scale = orig.scale.to(weight.device)
        if isinstance(layer, FP8StoredLinear):
            layer.codes_changed()


_MERGERS: weakref.WeakKeyDictionary[nn.Module, LoraMerger] = weakref.WeakKeyDictionary()


def merger_for(transformer: nn.Module) -> LoraMerger:
    """The :class:`LoraMerger` of ``transformer`` (created on first use; wrappers share their model's)."""
    model = unwrap(transformer)
    merger = _MERGERS.get(model)
    if merger is None:
        merger = _MERGERS[model] = LoraMerger(model)
    return merger


__all__ = [
    "LoraFile", "LoraFileError", "LoraLayer", "LoraMerger", "apply_loras", "linear_shapes", "load_lora_file",
    "merger_for", "read_lora", "unwrap",
]


# --- files -> a transformer ------------------------------------------------------------------------------------

_CACHE: dict[tuple[str, str, int], LoraFile] = {}
_CACHE_MAX = 8


def load_lora_file(ref: LoraRef, shapes: Mapping[str, tuple[int, int]]) -> LoraFile:
    """``ref``'s file read against ``shapes`` (kept for the next call while the file is unchanged), its sha256
    checked against the one ``ref`` asks for."""
    assert ref.path is not None, "fetch_loras gives every ref a path"
    sha256 = lora_sha256(ref.path)  # a PEFT folder's config too: another alpha is another entry
    key = (os.path.realpath(ref.path), sha256, hash(tuple(sorted(shapes.items()))))
    lora = _CACHE.get(key)
    if lora is None:
        lora = read_lora(ref.path, shapes, sha256=sha256)
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = lora
    want = ref.spec.sha256
    if want is not None and want != lora.sha256:
        raise LoraFileError(f"{ref.path}: sha256 {lora.sha256} differs from the requested {want} (the LoRA changed)")
    return lora


def apply_loras(
    transformer: nn.Module, refs: Sequence[LoraRef], *, device: torch.device | str | None = None,
) -> list[dict[str, object]]:
    """Merge the LoRAs ``refs`` (from :func:`ltxcli.adapters.lora.fetch_loras`) into ``transformer`` in place of
    the ones merged before (none: the original weights, bit for bit); returns their generation records
    ``{"name", "path", "sha256", "scale"}``. Every file is read and checked before any weight changes."""
    merger = merger_for(transformer)
    shapes = merger.shapes()
    files = [(load_lora_file(ref, shapes), ref.spec.scale) for ref in refs]
    merger.apply(files, device=device)
    # the absolute path: a redo from the record finds the file from any folder
    return [{"name": ref.name, "path": os.path.abspath(ref.path or ""), "sha256": lora.sha256, "scale": scale}
            for ref, (lora, scale) in zip(refs, files, strict=True)]
