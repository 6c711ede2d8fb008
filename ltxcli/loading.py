"""Checkpoints -> modules: official single files and diffusers-format folders.

Every model is built on the meta device and filled with ``load_state_dict(assign=True)`` from memory-mapped
tensors, so loading allocates nothing before the weights are moved to their device. Keys are matched
strictly after a declarative list of rename rules: a missing or unexpected key, a shape mismatch or an
unsupported config value is a one-line :class:`CheckpointError` / :class:`ConfigError`; no parameter is
ever left randomly initialised.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .models.configs import (
    ConfigError,
    SchedulerConfig,
    TransformerConfig,
    UpsamplerConfig,
    VAEConfig,
)
from .models.fp8 import convert_to_fp8, fp8_storage_keys
from .models.int8 import convert_to_storage, quantize_for_storage
from .models.upcast import convert_to_upcast, upcastable_weights
from .safetensors_io import CheckpointError, SafetensorsFile, save_file

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "ConfigError",
    "inspect_checkpoint",
    "load_scheduler_config",
    "load_transformer",
    "load_upsampler",
    "load_vae",
    "save_official_checkpoint",
]

PathLike = str | os.PathLike[str]
TRANSFORMER_PREFIX = "model.diffusion_model."
VAE_PREFIX = "vae."
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


# --- declarative key rules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRule:
    """Rename keys starting with ``old`` (a dotted prefix) to start with ``new``; ``new=None`` drops them."""

    old: str
    new: str | None

    def apply(self, key: str) -> str | None:
        if key == self.old.rstrip(".") or key.startswith(self.old):
            return None if self.new is None else self.new + key[len(self.old) :]
        return key


def apply_rules(keys: Iterable[str], rules: Iterable[KeyRule]) -> dict[str, str | None]:
    """Map each key through the first matching rule (or keep it)."""
    rules = list(rules)
    out: dict[str, str | None] = {}
    for key in keys:
        new: str | None = key
        for rule in rules:
            cand = rule.apply(key)
            if cand != key:
                new = cand
                break
        out[key] = new
    return out


def _substring_rename(key: str, pairs: Iterable[tuple[str, str]]) -> str:
    for old, new in pairs:
        key = key.replace(old, new)
    return key


# The official VAE loader drops three of the five per-channel statistics (only the means' mean and std are
# used) and renames legacy diffusers-style block names; the same rules apply here.
VAE_UNUSED_STATS = (
    KeyRule("per_channel_statistics.channel", None),
    KeyRule("per_channel_statistics.mean-of-stds", None),  # also matches "...mean-of-stds_over_std-of-means"
)
VAE_LEGACY_RENAMES = ((".resnets.", ".res_blocks."), ("downsamplers.0", "downsample"), ("upsamplers.0", "upsample"))

# diffusers -> official names for the transformer (all other names are identical).
TRANSFORMER_DIFFUSERS_RULES = (
    (".norm_q.", ".q_norm."), (".norm_k.", ".k_norm."),
)
TRANSFORMER_DIFFUSERS_PREFIX_RULES = (
    KeyRule("proj_in.", "patchify_proj."),
    KeyRule("time_embed.", "adaln_single."),
)


# --- generic build + strict assign ------------------------------------------------------------------------


def _summarise(keys: Iterable[str], n: int = 3) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _resolve_dtype(tensors: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    floats = {t.dtype for t in tensors.values() if t.is_floating_point()}
    # fp8 checkpoints compute in bfloat16 (all upcast, or with keep_fp8 all but the block linear weights).
    floats = {torch.bfloat16 if d.itemsize == 1 else d for d in floats}
    if len(floats) == 1:
        return floats.pop()
    return torch.bfloat16 if torch.bfloat16 in floats else torch.float32


def assign_state_dict(
    module: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    *,
    source: PathLike,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    keep_fp8: bool = False,
    keep_checkpoint_dtype: bool | None = False,
    stored: Collection[str] = (),
) -> nn.Module:
    """Fill a meta-device ``module`` from ``tensors`` strictly, casting floats to ``dtype`` and moving to ``device``.

    ``keep_fp8``: float8 tensors keep their dtype instead of being cast to ``dtype``. ``stored``: keys whose
    tensors keep their dtype whatever the other settings say (float8 or int8 codes quantised by the caller).
    ``keep_checkpoint_dtype``: linear and convolution weights narrower than ``dtype`` are kept as stored (on the
    CPU: views of the memory map, no copy) and their layers upcast them per call
    (:mod:`ltxcli.models.upcast`); same outputs, half the resident bytes of float32 for a bfloat16 checkpoint,
    no conversion at load. ``None``: on when ``device`` is the CPU. Never together with ``keep_fp8``.
    """
    keep_checkpoint_dtype = not keep_fp8 and keep_narrow(keep_checkpoint_dtype, device)
    expected = module.requires_grad_(False).state_dict(keep_vars=True)  # int8 codes cannot require grad
    missing = expected.keys() - tensors.keys()
    unexpected = tensors.keys() - expected.keys()
    if missing:
        raise CheckpointError(f"{source}: {len(missing)} missing key(s): {_summarise(missing)}")
    if unexpected:
        raise CheckpointError(f"{source}: {len(unexpected)} unexpected key(s): {_summarise(unexpected)}")
    ready: dict[str, torch.Tensor] = {}
    narrow_ok = upcastable_weights(module) if keep_checkpoint_dtype and dtype is not None else set()
    for key, ref in expected.items():
        t = tensors[key]
        if tuple(t.shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{source}: tensor {key} has shape {list(t.shape)}, the config implies {list(ref.shape)}"
            )
        if t.is_floating_point() != ref.is_floating_point() and key not in stored:
            raise CheckpointError(f"{source}: tensor {key} has dtype {t.dtype}, expected a {ref.dtype} tensor")
        cast = (dtype is not None and t.is_floating_point() and not (keep_fp8 and t.dtype.itemsize == 1)
                and key not in stored)
        if cast and key in narrow_ok and t.dtype.itemsize < dtype.itemsize:
            cast = False
        target_dtype = dtype if cast else t.dtype
        ready[key] = t.to(device=device or "cpu", dtype=target_dtype)
    module.load_state_dict(ready, strict=True, assign=True)
    if narrow_ok:
        convert_to_upcast(module)
    # device="meta": the memory plan's build (ltxcli.memory.weights), every tensor stays a shape and a dtype
    on_meta = torch.device(device or "cpu").type == "meta"
    leftover = [n for n, p in [*module.named_parameters(), *module.named_buffers()] if p.is_meta and not on_meta]
    if leftover:  # pragma: no cover - a non-persistent buffer the module forgot to create
        raise CheckpointError(f"{source}: {len(leftover)} tensor(s) left uninitialised: {_summarise(leftover)}")
    return module.eval().requires_grad_(False)


def keep_narrow(keep_checkpoint_dtype: bool | None, device: torch.device | str | None) -> bool:
    """The setting, else on the CPU this host's measured choice (:mod:`ltxcli.calibrate`), off elsewhere."""
    if keep_checkpoint_dtype is not None:
        return keep_checkpoint_dtype
    from .calibrate import cached_keep_narrow

    return torch.device(device or "cpu").type == "cpu" and cached_keep_narrow()


def _build(factory: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return factory()


# --- sources --------------------------------------------------------------------------------------------------


def _check_not_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: pickle-based checkpoints ({path.suffix}) are refused because loading them can run code; "
            "convert it to .safetensors"
        )


def _open_single_file(path: Path) -> SafetensorsFile:
    _check_not_pickle(path)
    if path.suffix.lower() != ".safetensors":
        raise CheckpointError(f"{path}: expected an official single-file .safetensors checkpoint or a diffusers folder")
    return SafetensorsFile(path)


def _component_keys(f: SafetensorsFile, prefix: str, other_prefix: str) -> Iterator[tuple[str, str]]:
    """``(key, name)`` of one component of an official single file, in file order: the keys under ``prefix``
    with it stripped, or, in a file without that prefix, every key not under ``other_prefix`` as is."""
    prefixed = any(k.startswith(prefix) for k in f.infos)
    for key in f.names():
        if prefixed:
            if key.startswith(prefix):
                yield key, key[len(prefix) :]
        elif not key.startswith(other_prefix):
            yield key, key


def _ltxv_config(f: SafetensorsFile) -> dict[str, Any]:
    cfg = f.config()
    if cfg is None:
        hint = " (it looks like a diffusers component file: pass its parent folder)" if any(
            k.startswith(("proj_in.", "time_embed.", "encoder.down_blocks.")) for k in f.infos
        ) else ""
        raise CheckpointError(f"{f.path}: not an official LTX-Video checkpoint: no 'config' metadata{hint}")
    return cfg


def _diffusers_component(root: Path, name: str) -> Path:
    """``root`` may be the pipeline folder (with ``name/``) or the component folder itself."""
    if (root / name / "config.json").is_file():
        return root / name
    if (root / "config.json").is_file() and root.name == name:
        return root
    raise CheckpointError(f"{root}: not a diffusers-format folder with a '{name}/config.json'")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: not valid JSON") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return data


def _diffusers_tensors(folder: Path) -> tuple[dict[str, torch.Tensor], str]:
    """All tensors of a diffusers component folder (single or sharded ``diffusion_pytorch_model*.safetensors``)."""
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: no 'weight_map'")
        shards = sorted(set(weight_map.values()))
    elif (folder / "diffusion_pytorch_model.safetensors").is_file():
        shards = ["diffusion_pytorch_model.safetensors"]
    else:
        pickles = any(p.suffix.lower() in PICKLE_SUFFIXES for p in folder.iterdir())
        what = " (only pickle-based .bin files, which are refused)" if pickles else ""
        raise CheckpointError(f"{folder}: no diffusion_pytorch_model*.safetensors{what}")
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        if "/" in shard or "\\" in shard or shard.startswith("."):
            raise CheckpointError(f"{index}: unsafe shard name {shard!r}")
        f = SafetensorsFile(folder / shard)
        for k in f.names():
            tensors[k] = f.tensor(k)
    return tensors, str(folder)


# --- transformer ------------------------------------------------------------------------------------------------


def transformer_config_from_diffusers(cfg: Mapping[str, Any], *, causal_temporal_positioning: bool) -> TransformerConfig:
    """Map a diffusers ``LTXVideoTransformer3DModel`` config onto the official architecture."""
    where = "diffusers transformer"
    for key, allowed in (
        ("activation_fn", ("gelu-approximate",)), ("qk_norm", ("rms_norm_across_heads",)),
        ("norm_elementwise_affine", (False,)), ("patch_size", (1,)), ("patch_size_t", (1,)),
        ("attention_out_bias", (True,)),
    ):
        if key in cfg and cfg[key] not in allowed:
            raise ConfigError(f"{where} config: unsupported {key}={cfg[key]!r}")
    heads = int(cfg.get("num_attention_heads", 32))
    head_dim = int(cfg.get("attention_head_dim", 64))
    return TransformerConfig(
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        num_layers=int(cfg.get("num_layers", 28)),
        in_channels=int(cfg.get("in_channels", 128)),
        out_channels=int(cfg.get("out_channels", 128)),
        cross_attention_dim=int(cfg.get("cross_attention_dim", 2048)),
        caption_channels=int(cfg.get("caption_channels", 4096)),
        norm_eps=float(cfg.get("norm_eps", 1e-6)),
        attention_bias=bool(cfg.get("attention_bias", True)),
        causal_temporal_positioning=causal_temporal_positioning,
    )


def _transformer_from_single_file(f: SafetensorsFile) -> tuple[TransformerConfig, dict[str, torch.Tensor]]:
    cfg = _ltxv_config(f)
    if "transformer" not in cfg:
        raise CheckpointError(f"{f.path}: metadata config has no 'transformer' entry (an upsampler or VAE-only file?)")
    config = TransformerConfig.from_official(cfg["transformer"])
    tensors = {name: f.tensor(key) for key, name in _component_keys(f, TRANSFORMER_PREFIX, VAE_PREFIX)}
    return config, tensors


def _diffusers_transformer_config(root: Path) -> tuple[Path, TransformerConfig]:
    folder = _diffusers_component(root, "transformer")
    # diffusers folders do not record the RoPE time convention; the official code applies the causal one to
    # every release from 0.9.5 on, and those are exactly the releases with the space-to-depth VAE.
    causal = False
    vae_cfg = folder.parent / "vae" / "config.json"
    if vae_cfg.is_file():
        causal = "LTXVideo095DownBlock3D" in json.dumps(_read_json(vae_cfg).get("down_block_types", []))
    return folder, transformer_config_from_diffusers(
        _read_json(folder / "config.json"), causal_temporal_positioning=causal
    )


def _transformer_from_diffusers(root: Path) -> tuple[TransformerConfig, dict[str, torch.Tensor], str]:
    folder, config = _diffusers_transformer_config(root)
    raw, src = _diffusers_tensors(folder)
    mapping = apply_rules(raw, TRANSFORMER_DIFFUSERS_PREFIX_RULES)
    tensors = {_substring_rename(new, TRANSFORMER_DIFFUSERS_RULES): raw[k] for k, new in mapping.items() if new}
    return config, tensors, src


def load_transformer(
    source: PathLike,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    causal_temporal_positioning: bool | None = None,
    keep_fp8: bool = False,
    keep_checkpoint_dtype: bool | None = None,
    before_fp8: Callable[[nn.Module], None] | None = None,
    weights_fp8: bool = False,
    weights_storage: str | None = None,
) -> nn.Module:
    """Load the DiT from an official single file or a diffusers-format folder.

    ``causal_temporal_positioning`` overrides the RoPE time convention a diffusers folder implies.
    ``keep_fp8``: run the transformer blocks' linear layers as float8 matmuls (:func:`ltxcli.models.fp8.convert_to_fp8`):
    e4m3 weights of an fp8 checkpoint are kept as stored (never upcast), wider ones are quantised per tensor;
    everything else runs in ``dtype`` (bfloat16 by default). Whether the device has fp8 GEMMs is the caller's
    check (:func:`ltxcli.kernels.require_fp8`). ``keep_checkpoint_dtype``: see :func:`assign_state_dict` (``None``,
    the default: on when ``device`` is the CPU); ignored with ``keep_fp8``. ``before_fp8``: called with the
    loaded model before its fp8 matmul conversion (a LoRA merge: merged before quantisation), also without
    ``keep_fp8``; with a storage mode after the storage conversion (a LoRA merge goes into the stored codes).
    ``weights_storage`` (:mod:`ltxcli.models.int8`; ignored with ``keep_fp8``): block linears quantised while
    reading, widened per call: ``"fp8"`` (or ``weights_fp8=True``) e4m3 + per-tensor scale, ``"int8"`` int8 +
    per-row scales (an fp8 checkpoint's codes widened, then quantised)."""
    from .models.transformer import LTXVideoTransformer

    path = Path(source)
    if path.is_dir():
        config, tensors, src = _transformer_from_diffusers(path)
        if causal_temporal_positioning is not None:
            config = replace(config, causal_temporal_positioning=causal_temporal_positioning)
    else:
        f = _open_single_file(path)
        config, tensors = _transformer_from_single_file(f)
        src = str(path)
    model = _build(lambda: LTXVideoTransformer(config))
    target = _resolve_dtype(tensors, dtype)
    stored, scales, storage = [], {}, None if keep_fp8 else weights_storage or ("fp8" if weights_fp8 else None)
    if storage:
        stored = [k for k in fp8_storage_keys(model) if k in tensors]  # a missing key: assign_state_dict's error
        tensors, scales = quantize_for_storage(storage, tensors, stored, device)
    model = assign_state_dict(model, tensors, source=src, device=device, dtype=target, keep_fp8=keep_fp8,
                              keep_checkpoint_dtype=keep_checkpoint_dtype, stored=stored)
    if storage:
        convert_to_storage(storage, model, scales)
    if before_fp8 is not None:  # before a matmul conversion, after the storage one (see the docstring)
        before_fp8(model)
    if keep_fp8:
        convert_to_fp8(model, dtype=target)
    return model


# --- VAE ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DiffusersVAELayout:
    config: VAEConfig
    rules: tuple[KeyRule, ...]


def vae_layout_from_diffusers(cfg: Mapping[str, Any]) -> _DiffusersVAELayout:
    """Translate a diffusers ``AutoencoderKLLTXVideo`` config into official block lists plus key rules.

    The walk mirrors how diffusers builds its blocks, emitting for each diffusers sub-module the official block
    it corresponds to, so the rename rules are derived from the same structure instead of per-release tables.
    """
    where = "diffusers vae config"

    def get(key: str, default: Any) -> Any:
        return cfg.get(key, default)

    if get("patch_size_t", 1) != 1:
        raise ConfigError(f"{where}: unsupported patch_size_t={cfg['patch_size_t']}")
    if not get("encoder_causal", True) or get("decoder_causal", False):
        raise ConfigError(f"{where}: only encoder_causal=True, decoder_causal=False is supported")
    chans = list(get("block_out_channels", (128, 256, 512, 512)))
    layers = list(get("layers_per_block", (4, 3, 3, 3, 4)))
    scaling = list(get("spatio_temporal_scaling", (True, True, True, False)))
    down_types = list(get("down_block_types", ("LTXVideoDownBlock3D",) * 4))
    ds_types = list(get("downsample_type", ("conv",) * 4))
    is_095 = down_types[-1] == "LTXVideo095DownBlock3D"

    rules: list[KeyRule] = []
    enc: list[list[Any]] = []
    n_down = len(chans) - (1 if is_095 else 0)
    out_ch = chans[0]
    for i in range(n_down):
        in_ch = out_ch
        out_ch = chans[i + 1] if (is_095 or i + 1 < n_down) else chans[i]
        rules.append(KeyRule(f"encoder.down_blocks.{i}.resnets.", f"encoder.down_blocks.{len(enc)}.res_blocks."))
        enc.append(["res_x", {"num_layers": layers[i]}])
        if scaling[i]:
            rules.append(KeyRule(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down_blocks.{len(enc)}."))
            if is_095:
                kind = {"spatial": "compress_space_res", "temporal": "compress_time_res",
                        "spatiotemporal": "compress_all_res"}.get(ds_types[i])
                if kind is None:
                    raise ConfigError(f"{where}: unsupported downsample_type={ds_types[i]!r}")
                enc.append([kind, {"multiplier": out_ch // in_ch}])
            else:
                enc.append(["compress_all", {}])
        if not is_095 and in_ch != out_ch:
            rules.append(KeyRule(f"encoder.down_blocks.{i}.conv_out.", f"encoder.down_blocks.{len(enc)}."))
            enc.append(["res_x_y", {"multiplier": out_ch // in_ch}])
    rules.append(KeyRule("encoder.mid_block.resnets.", f"encoder.down_blocks.{len(enc)}.res_blocks."))
    enc.append(["res_x", {"num_layers": layers[-1]}])

    # Decoder, in decoding order; the official config lists it in encoder order, hence the reversal at the end.
    dchans = list(reversed(get("decoder_block_out_channels", (128, 256, 512, 512))))
    dlayers = list(reversed(get("decoder_layers_per_block", (4, 3, 3, 3, 4))))
    dscaling = list(reversed(get("decoder_spatio_temporal_scaling", (True, True, True, False))))
    dnoise = list(reversed(get("decoder_inject_noise", (False,) * (len(dchans) + 1))))
    dresidual = list(reversed(get("upsample_residual", (False,) * len(dchans))))
    dfactor = list(reversed(get("upsample_factor", (1,) * len(dchans))))
    dec: list[list[Any]] = []
    tc = bool(get("timestep_conditioning", False))

    def res_x(n: int, noise: bool) -> list[Any]:
        return ["res_x", {"num_layers": n, "inject_noise": bool(noise)}]

    rules.append(KeyRule("decoder.mid_block.resnets.", f"decoder.up_blocks.{len(dec)}.res_blocks."))
    rules.append(KeyRule("decoder.mid_block.", f"decoder.up_blocks.{len(dec)}."))
    dec.append(res_x(dlayers[0], dnoise[0]))
    out_ch = dchans[0]
    for i in range(len(dchans)):
        in_ch = out_ch // dfactor[i]
        out_ch = dchans[i] // dfactor[i]
        if in_ch != out_ch:
            rules.append(KeyRule(f"decoder.up_blocks.{i}.conv_in.", f"decoder.up_blocks.{len(dec)}."))
            dec.append(["res_x_y", {"multiplier": in_ch // out_ch, "inject_noise": bool(dnoise[i + 1])}])
        if dscaling[i]:
            rules.append(KeyRule(f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up_blocks.{len(dec)}."))
            dec.append(["compress_all", {"residual": bool(dresidual[i]), "multiplier": int(dfactor[i])}])
        rules.append(KeyRule(f"decoder.up_blocks.{i}.time_embedder.", f"decoder.up_blocks.{len(dec)}.time_embedder."))
        rules.append(KeyRule(f"decoder.up_blocks.{i}.resnets.", f"decoder.up_blocks.{len(dec)}.res_blocks."))
        dec.append(res_x(dlayers[i + 1], dnoise[i + 1]))
    rules += [
        KeyRule("decoder.time_embedder.", "decoder.last_time_embedder."),
        KeyRule("decoder.scale_shift_table", "decoder.last_scale_shift_table"),
        KeyRule("latents_mean", "per_channel_statistics.mean-of-means"),
        KeyRule("latents_std", "per_channel_statistics.std-of-means"),
    ]
    official = {
        "_class_name": "CausalVideoAutoencoder", "dims": 3,
        "in_channels": int(get("in_channels", 3)), "out_channels": int(get("out_channels", 3)),
        "latent_channels": int(get("latent_channels", 128)),
        "encoder_blocks": enc, "decoder_blocks": list(reversed(dec)),
        "patch_size": int(get("patch_size", 4)), "norm_layer": "pixel_norm", "latent_log_var": "uniform",
        "use_quant_conv": False, "causal_decoder": False, "timestep_conditioning": tc,
        "encoder_base_channels": chans[0], "decoder_base_channels": out_ch,
    }
    return _DiffusersVAELayout(VAEConfig.from_official(official), tuple(rules))


# Inside blocks, diffusers and official names differ only in these pieces (applied after the block renames).
VAE_DIFFUSERS_INNER = ((".conv_shortcut.conv.", ".conv_shortcut."), (".norm3.", ".norm3.norm."))


def _vae_from_single_file(f: SafetensorsFile) -> tuple[VAEConfig, dict[str, torch.Tensor]]:
    cfg = _ltxv_config(f)
    if "vae" not in cfg:
        raise CheckpointError(f"{f.path}: metadata config has no 'vae' entry")
    config = VAEConfig.from_official(cfg["vae"])
    tensors: dict[str, torch.Tensor] = {}
    for key, name in _component_keys(f, VAE_PREFIX, TRANSFORMER_PREFIX):
        name = apply_rules([name], VAE_UNUSED_STATS)[name]
        if name is None:
            continue
        tensors[_substring_rename(name, VAE_LEGACY_RENAMES)] = f.tensor(key)
    return config, tensors


def _vae_from_diffusers(root: Path) -> tuple[VAEConfig, dict[str, torch.Tensor], str]:
    folder = _diffusers_component(root, "vae")
    layout = vae_layout_from_diffusers(_read_json(folder / "config.json"))
    raw, src = _diffusers_tensors(folder)
    mapping = apply_rules(raw, layout.rules)
    tensors: dict[str, torch.Tensor] = {}
    for key, new in mapping.items():
        if new is None:
            continue
        tensors[_substring_rename(new, VAE_DIFFUSERS_INNER)] = raw[key]
    return layout.config, tensors, src


def _drop_absent_norms(model: nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official rule: norm weights whose module does not exist (GroupNorm keys in a PixelNorm VAE) are ignored."""
    modules = {name for name, _ in model.named_modules()}
    return {
        k: v for k, v in tensors.items()
        if not ("norm" in k and k.rsplit(".", 1)[0] not in modules)
    }


def load_vae(
    source: PathLike,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    keep_checkpoint_dtype: bool | None = None,
) -> nn.Module:
    """Load the causal video VAE from an official single file or a diffusers-format folder.

    ``keep_checkpoint_dtype``: see :func:`assign_state_dict` (``None``, the default: on when ``device`` is the CPU).
    """
    from .models.vae import CausalVideoVAE

    path = Path(source)
    if path.is_dir():
        config, tensors, src = _vae_from_diffusers(path)
    else:
        config, tensors = _vae_from_single_file(_open_single_file(path))
        src = str(path)
    model = _build(lambda: CausalVideoVAE(config))
    tensors = _drop_absent_norms(model, tensors)
    return assign_state_dict(model, tensors, source=src, device=device, dtype=_resolve_dtype(tensors, dtype),
                             keep_checkpoint_dtype=keep_checkpoint_dtype)


# --- latent upsampler -----------------------------------------------------------------------------------------


def load_upsampler(
    source: PathLike,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    keep_checkpoint_dtype: bool | None = None,
) -> nn.Module:
    """Load a latent spatial upsampler (official single file with a flat config, or a diffusers folder).

    ``keep_checkpoint_dtype``: see :func:`assign_state_dict` (``None``, the default: on when ``device`` is the CPU).
    """
    from .models.upsampler import LatentUpsampler

    path = Path(source)
    if path.is_dir():
        folder = _diffusers_component(path, "latent_upsampler")
        config = UpsamplerConfig.from_official(
            {k: v for k, v in _read_json(folder / "config.json").items() if not k.startswith("_")}
        )
        tensors, src = _diffusers_tensors(folder)
    else:
        f = _open_single_file(path)
        cfg = _ltxv_config(f)
        if "transformer" in cfg or "vae" in cfg:
            raise CheckpointError(f"{path}: this is a model checkpoint, not a latent upsampler")
        config = UpsamplerConfig.from_official(cfg)
        tensors = {k: f.tensor(k) for k in f.names()}
        src = str(path)
    model = _build(lambda: LatentUpsampler(config))
    return assign_state_dict(model, tensors, source=src, device=device, dtype=_resolve_dtype(tensors, dtype),
                             keep_checkpoint_dtype=keep_checkpoint_dtype)


# --- scheduler and metadata ---------------------------------------------------------------------------------


def scheduler_config_from_diffusers(cfg: Mapping[str, Any]) -> SchedulerConfig:
    """diffusers' FlowMatchEuler configs of the LTX repos, mapped to the official rectified-flow scheduler."""
    if cfg.get("use_dynamic_shifting", False):
        expected = {"base_image_seq_len": 1024, "max_image_seq_len": 4096, "base_shift": 0.95, "max_shift": 2.05}
        for key, value in expected.items():
            if cfg.get(key) != value:
                raise ConfigError(f"diffusers scheduler config: unsupported {key}={cfg.get(key)!r} (LTX uses {value})")
        return SchedulerConfig(sampler="Uniform", shifting="SD3", target_shift_terminal=cfg.get("shift_terminal"))
    if cfg.get("shift", 1.0) != 1.0 or cfg.get("shift_terminal"):
        raise ConfigError("diffusers scheduler config: static shift / terminal without dynamic shifting is unsupported")
    # The 0.9.5+ diffusers repos ship an unshifted scheduler and rely on the linear-quadratic schedule, which
    # is also what the official configs of those releases use.
    return SchedulerConfig(sampler="LinearQuadratic")


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint contains, read from its header alone (no tensor data is touched)."""

    path: Path
    layout: str  # "single-file" | "diffusers"
    transformer: TransformerConfig | None
    vae: VAEConfig | None
    scheduler: SchedulerConfig | None
    allowed_inference_steps: tuple[float, ...] | None
    dtypes: frozenset[str]

    @property
    def is_fp8(self) -> bool:
        return any(d.startswith("float8") for d in self.dtypes)


def inspect_checkpoint(source: PathLike) -> CheckpointInfo:
    """Read the configs of an official single file or a diffusers folder without loading any weights."""
    path = Path(source)
    if path.is_dir():
        tcfg = vcfg = scfg = None
        if (path / "transformer" / "config.json").is_file():
            _, tcfg = _diffusers_transformer_config(path)
        if (path / "vae" / "config.json").is_file():
            vcfg = vae_layout_from_diffusers(_read_json(path / "vae" / "config.json")).config
        sched = path / "scheduler" / "scheduler_config.json"
        if sched.is_file():
            scfg = scheduler_config_from_diffusers(_read_json(sched))
        if tcfg is None and vcfg is None:
            raise CheckpointError(f"{path}: not a diffusers-format LTX-Video folder (no transformer/ or vae/)")
        return CheckpointInfo(path, "diffusers", tcfg, vcfg, scfg, None, frozenset())
    f = _open_single_file(path)
    cfg = _ltxv_config(f)
    if "transformer" not in cfg and "vae" not in cfg:
        raise CheckpointError(f"{path}: metadata config names no 'transformer' or 'vae' (unknown architecture)")
    tcfg = TransformerConfig.from_official(cfg["transformer"]) if "transformer" in cfg else None
    vcfg = VAEConfig.from_official(cfg["vae"]) if "vae" in cfg else None
    scfg = SchedulerConfig.from_official(cfg["scheduler"]) if isinstance(cfg.get("scheduler"), dict) else None
    allowed = cfg.get("allowed_inference_steps")
    if allowed is not None and (
        not isinstance(allowed, list) or not all(isinstance(v, (int, float)) for v in allowed)
    ):
        raise CheckpointError(f"{path}: metadata allowed_inference_steps is not a list of numbers")
    return CheckpointInfo(
        path, "single-file", tcfg, vcfg, scfg,
        tuple(float(v) for v in allowed) if allowed is not None else None,
        frozenset(str(i.dtype).removeprefix("torch.") for i in f.infos.values()),
    )


def load_scheduler_config(source: PathLike) -> SchedulerConfig | None:
    """The scheduler a checkpoint embeds (``None`` when it embeds none)."""
    return inspect_checkpoint(source).scheduler


# --- writing ------------------------------------------------------------------------------------------------------


def save_official_checkpoint(
    path: PathLike,
    *,
    transformer: nn.Module | None = None,
    vae: nn.Module | None = None,
    scheduler: SchedulerConfig | None = None,
    allowed_inference_steps: Iterable[float] | None = None,
) -> None:
    """Write modules in the official single-file layout (prefixed keys, config JSON in metadata ``config``)."""
    tensors: dict[str, torch.Tensor] = {}
    config: dict[str, Any] = {}
    if transformer is not None:
        config["transformer"] = transformer.config.to_official()
        tensors.update({TRANSFORMER_PREFIX + k: v for k, v in transformer.state_dict().items()})
    if vae is not None:
        config["vae"] = vae.config.to_official()
        tensors.update({VAE_PREFIX + k: v for k, v in vae.state_dict().items()})
    if scheduler is not None:
        config["scheduler"] = scheduler.to_official()
    if allowed_inference_steps is not None:
        config["allowed_inference_steps"] = [float(v) for v in allowed_inference_steps]
    save_file(tensors, path, metadata={"config": json.dumps(config)})


def save_upsampler(path: PathLike, upsampler: nn.Module) -> None:
    """Write a latent upsampler in the official single-file layout (flat config, unprefixed keys)."""
    save_file(dict(upsampler.state_dict()), path, metadata={"config": json.dumps(upsampler.config.to_official())})
