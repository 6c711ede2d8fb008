"""One dataclass per architecture, read from the official checkpoint metadata with fail-fast checks.

The official single-file checkpoints carry their architecture in the safetensors metadata key ``config``
(``{"transformer": {...}, "vae": {...}, "scheduler": {...}}``; the latent upsampler has a flat dict).
``from_official`` accepts exactly the values the official code computes with and turns anything else into
a one-line :class:`ConfigError` naming the key and the value, so no checkpoint is ever run with a silently
different architecture. ``to_official`` writes the same dict back (used to build test checkpoints).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A checkpoint config that this implementation cannot run unchanged."""


def _expect(cfg: Mapping[str, Any], key: str, allowed: tuple[Any, ...], where: str) -> None:
    if key in cfg and cfg[key] not in allowed:
        raise ConfigError(
            f"{where} config: unsupported {key}={cfg[key]!r} (supported: {', '.join(map(repr, allowed))})"
        )


def _require(cfg: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in cfg or cfg[key] is None:
        raise ConfigError(f"{where} config: required key {key!r} is missing")
    return cfg[key]


@dataclass(frozen=True)
class TransformerConfig:
    """The LTX-Video DiT (``Transformer3DModel``). Defaults are the 2B release."""

    num_attention_heads: int = 32
    attention_head_dim: int = 64
    num_layers: int = 28
    in_channels: int = 128
    out_channels: int = 128
    cross_attention_dim: int = 2048
    caption_channels: int = 4096
    norm_eps: float = 1e-6
    attention_bias: bool = True
    positional_embedding_theta: float = 10000.0
    positional_embedding_max_pos: tuple[int, int, int] = (20, 2048, 2048)
    timestep_scale_multiplier: float = 1000.0
    # Not used inside the model: the pipeline reads it to choose the RoPE time coordinate (0.9.5+: causal).
    causal_temporal_positioning: bool = False

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def __post_init__(self) -> None:
        if self.cross_attention_dim != self.inner_dim:
            # attn2's K/V read the caption projection, whose width is inner_dim in every release.
            raise ConfigError(
                f"transformer config: cross_attention_dim={self.cross_attention_dim} must equal "
                f"num_attention_heads*attention_head_dim={self.inner_dim}"
            )
        if len(self.positional_embedding_max_pos) != 3:
            raise ConfigError(
                f"transformer config: positional_embedding_max_pos={list(self.positional_embedding_max_pos)} "
                "must have 3 entries (time, height, width)"
            )

    @classmethod
    def from_official(cls, cfg: Mapping[str, Any]) -> TransformerConfig:
        where = "transformer"
        _expect(cfg, "_class_name", ("Transformer3DModel",), where)
        _expect(cfg, "activation_fn", ("gelu-approximate",), where)
        _expect(cfg, "adaptive_norm", ("single_scale_shift",), where)
        _expect(cfg, "standardization_norm", ("rms_norm",), where)
        _expect(cfg, "norm_elementwise_affine", (False,), where)
        _expect(cfg, "qk_norm", ("rms_norm",), where)
        _expect(cfg, "positional_embedding_type", ("rope",), where)
        _expect(cfg, "only_cross_attention", (False,), where)
        _expect(cfg, "double_self_attention", (False,), where)
        _expect(cfg, "attention_type", ("default",), where)
        if "qk_norm" not in cfg:
            raise ConfigError("transformer config: qk_norm is missing (released models use 'rms_norm')")
        heads = int(_require(cfg, "num_attention_heads", where))
        head_dim = int(_require(cfg, "attention_head_dim", where))
        in_ch = int(_require(cfg, "in_channels", where))
        out_ch = cfg.get("out_channels")
        return cls(
            num_attention_heads=heads,
            attention_head_dim=head_dim,
            num_layers=int(_require(cfg, "num_layers", where)),
            in_channels=in_ch,
            out_channels=int(out_ch) if out_ch is not None else in_ch,
            cross_attention_dim=int(cfg.get("cross_attention_dim") or heads * head_dim),
            caption_channels=int(_require(cfg, "caption_channels", where)),
            norm_eps=float(cfg.get("norm_eps", 1e-5)),
            attention_bias=bool(cfg.get("attention_bias", False)),
            positional_embedding_theta=float(_require(cfg, "positional_embedding_theta", where)),
            positional_embedding_max_pos=tuple(int(v) for v in _require(cfg, "positional_embedding_max_pos", where)),
            timestep_scale_multiplier=float(cfg.get("timestep_scale_multiplier") or 1.0),
            causal_temporal_positioning=bool(cfg.get("causal_temporal_positioning", False)),
        )

    def to_official(self) -> dict[str, Any]:
        return {
            "_class_name": "Transformer3DModel",
            "activation_fn": "gelu-approximate",
            "attention_bias": self.attention_bias,
            "attention_head_dim": self.attention_head_dim,
            "attention_type": "default",
            "caption_channels": self.caption_channels,
            "cross_attention_dim": self.cross_attention_dim,
            "double_self_attention": False,
            "dropout": 0.0,
            "in_channels": self.in_channels,
            "norm_elementwise_affine": False,
            "norm_eps": self.norm_eps,
            "norm_num_groups": 32,
            "num_attention_heads": self.num_attention_heads,
            "num_embeds_ada_norm": 1000,
            "num_layers": self.num_layers,
            "num_vector_embeds": None,
            "only_cross_attention": False,
            "out_channels": self.out_channels,
            "upcast_attention": False,
            "use_linear_projection": False,
            "qk_norm": "rms_norm",
            "standardization_norm": "rms_norm",
            "positional_embedding_type": "rope",
            "positional_embedding_theta": self.positional_embedding_theta,
            "positional_embedding_max_pos": list(self.positional_embedding_max_pos),
            "timestep_scale_multiplier": self.timestep_scale_multiplier,
            "causal_temporal_positioning": self.causal_temporal_positioning,
        }


# --- VAE ------------------------------------------------------------------------------------------------

# Official block names this implementation builds (encoder / decoder). "attn_res_x" exists in the
# official code but no released checkpoint uses it.
ENCODER_BLOCKS = (
    "res_x", "res_x_y", "compress_time", "compress_space", "compress_all", "compress_all_x_y",
    "compress_all_res", "compress_space_res", "compress_time_res",
)
DECODER_BLOCKS = ("res_x", "res_x_y", "compress_time", "compress_space", "compress_all")

Block = tuple[str, dict[str, Any]]


def _normalise_blocks(blocks: Any, allowed: tuple[str, ...], where: str) -> tuple[Block, ...]:
    """Official block lists are ``[[name, int | dict], ...]``; an int means ``{"num_layers": n}``."""
    if not isinstance(blocks, (list, tuple)) or not blocks:
        raise ConfigError(f"vae config: {where} must be a non-empty list of [name, params] pairs")
    out: list[Block] = []
    for item in blocks:
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str):
            raise ConfigError(f"vae config: {where} entry {item!r} is not a [name, params] pair")
        name, params = item
        if name not in allowed:
            raise ConfigError(f"vae config: unsupported {where} block {name!r}")
        if isinstance(params, int):
            params = {"num_layers": params}
        elif not isinstance(params, Mapping):
            raise ConfigError(f"vae config: {where} block {name!r} has params {params!r}")
        out.append((name, dict(params)))
    return tuple(out)


def decoder_conv_in_channels(decoder_blocks: Sequence[Block], base_channels: int) -> int:
    """Width of the decoder's ``conv_in``: ``base_channels`` times every channel multiplier in the block list
    (the decoder divides by each of them on its way up, so the order does not matter)."""
    ch = base_channels
    for name, params in decoder_blocks:
        if name == "res_x_y":
            ch *= params.get("multiplier", 2)
        elif name.startswith("compress"):
            ch *= params.get("multiplier", 1)
    return ch


@dataclass(frozen=True)
class VAEConfig:
    """The causal video VAE (``CausalVideoAutoencoder``), described by the official block lists.

    ``encoder_blocks`` / ``decoder_blocks`` keep the official ``(name, params)`` layout; the decoder walks
    its list in reverse, as the official code does. Defaults describe no release: build one with
    :func:`vae_config_for` or :meth:`from_official`.
    """

    encoder_blocks: tuple[Block, ...]
    decoder_blocks: tuple[Block, ...]
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 128
    patch_size: int = 4
    timestep_conditioning: bool = False
    causal_decoder: bool = False
    encoder_base_channels: int = 128
    decoder_base_channels: int = 128
    spatial_padding_mode: str = "zeros"

    @classmethod
    def from_official(cls, cfg: Mapping[str, Any]) -> VAEConfig:
        where = "vae"
        _expect(cfg, "_class_name", ("CausalVideoAutoencoder",), where)
        dims = cfg.get("dims", 3)
        if dims != 3:
            raise ConfigError(f"vae config: unsupported dims={dims!r} (supported: 3)")
        _expect(cfg, "norm_layer", ("pixel_norm",), where)
        log_var = cfg.get("latent_log_var", "per_channel" if cfg.get("double_z", True) else "none")
        if log_var != "uniform":
            raise ConfigError(f"vae config: unsupported latent_log_var={log_var!r} (supported: 'uniform')")
        if cfg.get("use_quant_conv", True):
            raise ConfigError("vae config: unsupported use_quant_conv=True (released VAEs use False)")
        _expect(cfg, "spatial_padding_mode", ("zeros", "reflect", "replicate", "circular"), where)
        if cfg.get("normalize_latent_channels", False):
            raise ConfigError("vae config: unsupported normalize_latent_channels=True")
        shared = cfg.get("blocks")
        enc = cfg.get("encoder_blocks", shared)
        dec = cfg.get("decoder_blocks", shared)
        if enc is None or dec is None:
            raise ConfigError("vae config: needs 'blocks' or both 'encoder_blocks' and 'decoder_blocks'")
        return cls(
            encoder_blocks=_normalise_blocks(enc, ENCODER_BLOCKS, "encoder_blocks"),
            decoder_blocks=_normalise_blocks(dec, DECODER_BLOCKS, "decoder_blocks"),
            in_channels=int(cfg.get("in_channels", 3)),
            out_channels=int(cfg.get("out_channels", 3)),
            latent_channels=int(_require(cfg, "latent_channels", where)),
            patch_size=int(cfg.get("patch_size", 1)),
            timestep_conditioning=bool(cfg.get("timestep_conditioning", False)),
            causal_decoder=bool(cfg.get("causal_decoder", False)),
            encoder_base_channels=int(cfg.get("encoder_base_channels", 128)),
            decoder_base_channels=int(cfg.get("decoder_base_channels", 128)),
            spatial_padding_mode=str(cfg.get("spatial_padding_mode", "zeros")),
        )

    def to_official(self) -> dict[str, Any]:
        return {
            "_class_name": "CausalVideoAutoencoder",
            "dims": 3,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "latent_channels": self.latent_channels,
            "encoder_blocks": [[n, dict(p)] for n, p in self.encoder_blocks],
            "decoder_blocks": [[n, dict(p)] for n, p in self.decoder_blocks],
            "scaling_factor": 1.0,
            "norm_layer": "pixel_norm",
            "patch_size": self.patch_size,
            "latent_log_var": "uniform",
            "use_quant_conv": False,
            "causal_decoder": self.causal_decoder,
            "timestep_conditioning": self.timestep_conditioning,
            "normalize_latent_channels": False,
            "encoder_base_channels": self.encoder_base_channels,
            "decoder_base_channels": self.decoder_base_channels,
            "spatial_padding_mode": self.spatial_padding_mode,
        }

    @property
    def decoder_conv_in_channels(self) -> int:
        return decoder_conv_in_channels(self.decoder_blocks, self.decoder_base_channels)

    @property
    def spatial_compression(self) -> int:
        n = sum(
            1 for name, _ in self.encoder_blocks
            if name in ("compress_space", "compress_all", "compress_all_x_y", "compress_all_res", "compress_space_res")
        )
        return self.patch_size * 2**n

    @property
    def temporal_compression(self) -> int:
        n = sum(
            1 for name, _ in self.encoder_blocks
            if name in ("compress_time", "compress_all", "compress_all_x_y", "compress_all_res", "compress_time_res")
        )
        return 2**n

    @property
    def family(self) -> str:
        """``"0.9"``, ``"0.9.1"`` or ``"0.9.5"`` (0.9.5 and every later release share that VAE design)."""
        if any(name.endswith("_res") for name, _ in self.encoder_blocks):
            return "0.9.5"
        return "0.9.1" if self.timestep_conditioning else "0.9"


# The released block lists (official configs; see shared/reference/official-architecture.md §2.3).
_VAE_0_9_BLOCKS = [
    ["res_x", 4], ["compress_all", 1], ["res_x_y", 1], ["res_x", 3], ["compress_all", 1],
    ["res_x_y", 1], ["res_x", 3], ["compress_all", 1], ["res_x", 3], ["res_x", 4],
]
_VAE_0_9_1_DECODER = [
    ["res_x", {"num_layers": 5, "inject_noise": True}],
    ["compress_all", {"residual": True, "multiplier": 2}],
    ["res_x", {"num_layers": 6, "inject_noise": True}],
    ["compress_all", {"residual": True, "multiplier": 2}],
    ["res_x", {"num_layers": 7, "inject_noise": True}],
    ["compress_all", {"residual": True, "multiplier": 2}],
    ["res_x", {"num_layers": 8, "inject_noise": False}],
]
_VAE_0_9_5_ENCODER = [
    ["res_x", {"num_layers": 4}], ["compress_space_res", {"multiplier": 2}],
    ["res_x", {"num_layers": 6}], ["compress_time_res", {"multiplier": 2}],
    ["res_x", {"num_layers": 6}], ["compress_all_res", {"multiplier": 2}],
    ["res_x", {"num_layers": 2}], ["compress_all_res", {"multiplier": 2}],
    ["res_x", {"num_layers": 2}],
]
_VAE_0_9_5_DECODER = [
    ["res_x", {"num_layers": 5, "inject_noise": False}],
    ["compress_all", {"residual": True, "multiplier": 2}],
    ["res_x", {"num_layers": 5, "inject_noise": False}],
    ["compress_all", {"residual": True, "multiplier": 2}],
    ["res_x", {"num_layers": 5, "inject_noise": False}],
    ["compress_all", {"residual": True, "multiplier": 2}],
    ["res_x", {"num_layers": 5, "inject_noise": False}],
]


def official_vae_config(family: str) -> dict[str, Any]:
    """The embedded VAE config of a release family (``"0.9"``, ``"0.9.1"`` or ``"0.9.5"``)."""
    base: dict[str, Any] = {
        "_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3,
        "latent_channels": 128, "scaling_factor": 1.0, "norm_layer": "pixel_norm", "patch_size": 4,
        "latent_log_var": "uniform", "use_quant_conv": False, "causal_decoder": False,
    }
    if family == "0.9":
        base.update(blocks=_VAE_0_9_BLOCKS, timestep_conditioning=False)
    elif family == "0.9.1":
        base.update(encoder_blocks=_VAE_0_9_BLOCKS, decoder_blocks=_VAE_0_9_1_DECODER, timestep_conditioning=True)
    elif family == "0.9.5":
        base.update(
            encoder_blocks=_VAE_0_9_5_ENCODER, decoder_blocks=_VAE_0_9_5_DECODER,
            timestep_conditioning=True, normalize_latent_channels=False,
        )
    else:
        raise ConfigError(f"unknown VAE family {family!r} (known: 0.9, 0.9.1, 0.9.5)")
    return copy.deepcopy(base)


# --- Latent upsampler -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpsamplerConfig:
    """A latent upsampler (``LatentUpsampler``); released files: 128 -> 512, 4 blocks, spatial x2 or (the
    temporal upscaler) temporal x2."""

    in_channels: int = 128
    mid_channels: int = 512
    num_blocks_per_stage: int = 4
    dims: int = 3
    spatial_upsample: bool = True
    temporal_upsample: bool = False

    @classmethod
    def from_official(cls, cfg: Mapping[str, Any]) -> UpsamplerConfig:
        where = "upsampler"
        _expect(cfg, "_class_name", ("LatentUpsampler",), where)
        _expect(cfg, "dims", (3,), where)
        spatial, temporal = cfg.get("spatial_upsample", True), cfg.get("temporal_upsample", False)
        if (spatial, temporal) not in ((True, False), (False, True)):
            raise ConfigError(
                f"{where} config: spatial_upsample={spatial!r}, temporal_upsample={temporal!r} is not supported "
                "(the released upscalers are spatial only or temporal only)"
            )
        return cls(
            in_channels=int(cfg.get("in_channels", 128)),
            mid_channels=int(cfg.get("mid_channels", 512)),
            num_blocks_per_stage=int(cfg.get("num_blocks_per_stage", 4)),
            spatial_upsample=bool(spatial), temporal_upsample=bool(temporal),
        )

    def to_official(self) -> dict[str, Any]:
        return {
            "_class_name": "LatentUpsampler",
            "in_channels": self.in_channels,
            "mid_channels": self.mid_channels,
            "num_blocks_per_stage": self.num_blocks_per_stage,
            "dims": self.dims,
            "spatial_upsample": self.spatial_upsample,
            "temporal_upsample": self.temporal_upsample,
        }


# --- Scheduler ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchedulerConfig:
    """The rectified-flow scheduler (``RectifiedFlowScheduler``) as embedded in the checkpoints."""

    sampler: str = "Uniform"  # "Uniform" | "LinearQuadratic" | "Constant"
    shifting: str | None = None  # None | "SD3" | "SimpleDiffusion"
    base_resolution: int = 1024
    target_shift_terminal: float | None = None
    num_train_timesteps: int = 1000
    shift: float | None = None

    @classmethod
    def from_official(cls, cfg: Mapping[str, Any]) -> SchedulerConfig:
        where = "scheduler"
        _expect(cfg, "_class_name", ("RectifiedFlowScheduler",), where)
        _expect(cfg, "sampler", ("Uniform", "LinearQuadratic", "Constant", None), where)
        _expect(cfg, "shifting", ("SD3", "SimpleDiffusion", None), where)
        sampler = cfg.get("sampler") or "Uniform"
        if sampler == "Constant" and cfg.get("shift") is None:
            raise ConfigError("scheduler config: sampler='Constant' needs a 'shift'")
        base = cfg.get("base_resolution")
        term = cfg.get("target_shift_terminal")
        return cls(
            sampler=sampler,
            shifting=cfg.get("shifting"),
            base_resolution=int(base) if base is not None else 1024,
            target_shift_terminal=float(term) if term is not None else None,
            num_train_timesteps=int(cfg.get("num_train_timesteps", 1000)),
            shift=float(cfg["shift"]) if cfg.get("shift") is not None else None,
        )

    def to_official(self) -> dict[str, Any]:
        return {
            "_class_name": "RectifiedFlowScheduler",
            "num_train_timesteps": self.num_train_timesteps,
            "shifting": self.shifting,
            "base_resolution": self.base_resolution,
            "target_shift_terminal": self.target_shift_terminal,
            "sampler": self.sampler,
            "shift": self.shift,
        }


# --- Full-size architectures ------------------------------------------------------------------------------

TRANSFORMER_2B = TransformerConfig()
TRANSFORMER_13B = TransformerConfig(num_attention_heads=32, attention_head_dim=128, num_layers=48, cross_attention_dim=4096)
