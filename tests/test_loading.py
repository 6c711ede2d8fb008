"""Checkpoint loading: official single files and diffusers folders, parity with diffusers, every loader error.

Weights are written in the official single-file layout (``model.diffusion_model.`` / ``vae.`` prefixes, config
JSON in metadata) and converted to the diffusers layout with diffusers' OWN converters
(``convert_ltx_*_checkpoint_to_diffusers``), then saved with diffusers' ``save_pretrained``. Both files are loaded
by ltxcli and compared with the diffusers model's forward in float32.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
from diffusers.loaders.single_file_utils import (
    convert_ltx_transformer_checkpoint_to_diffusers,
    convert_ltx_vae_checkpoint_to_diffusers,
)
from safetensors.torch import save_file

from ltxcli.loading import (
    CheckpointError,
    ConfigError,
    inspect_checkpoint,
    load_transformer,
    load_upsampler,
    load_vae,
    save_official_checkpoint,
)
from ltxcli.models.configs import TransformerConfig, UpsamplerConfig, VAEConfig
from ltxcli.models.rope import latent_coords, pixel_coords
from ltxcli.models.transformer import LTXVideoTransformer
from ltxcli.models.upcast import compute_dtype
from ltxcli.models.upsampler import LatentUpsampler
from ltxcli.models.vae import CausalVideoVAE


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("timestep_scale_multiplier"):
                p.fill_(1000.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


# --- transformer -------------------------------------------------------------------------------------------

TINY_T = TransformerConfig(
    num_attention_heads=2, attention_head_dim=12, num_layers=2, in_channels=8, out_channels=8,
    cross_attention_dim=24, caption_channels=16, causal_temporal_positioning=True,
)


@pytest.fixture(scope="module")
def transformer_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transformer")
    torch.manual_seed(0)
    ours = LTXVideoTransformer(TINY_T)
    randomise(ours, 1)
    single = tmp / "tiny-transformer.safetensors"
    save_official_checkpoint(single, transformer=ours)
    # diffusers layout through diffusers' own converter from the official keys
    official = {f"model.diffusion_model.{k}": v.clone() for k, v in ours.state_dict().items()}
    converted = convert_ltx_transformer_checkpoint_to_diffusers(official)
    ref = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=12, cross_attention_dim=24,
        num_layers=2, caption_channels=16,
    )
    missing, unexpected = ref.load_state_dict(converted, strict=False)
    assert not missing and not unexpected
    folder = tmp / "diffusers"
    ref.save_pretrained(folder / "transformer", safe_serialization=True)
    return single, folder, ref.eval()


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("per_token", [False, True])
def test_transformer_parity_with_diffusers_both_layouts(transformer_files, causal, per_token):
    single, folder, ref = transformer_files
    f, h, w, fps = 3, 2, 3, 25.0
    n = f * h * w
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, n, 8, generator=g)
    text = torch.randn(2, 7, 16, generator=g)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 4:] = 0  # padded prompt
    t = torch.rand(2, n, generator=g) if per_token else torch.tensor([0.999, 0.4375])
    coords = pixel_coords(latent_coords(f, h, w), causal_fix=causal)[None].repeat(2, 1, 1)
    coords[:, 0] = coords[:, 0] * (1.0 / fps)
    with torch.no_grad():
        expected = ref(
            hidden_states=x, encoder_hidden_states=text, timestep=t * 1000, encoder_attention_mask=mask,
            num_frames=f, height=h, width=w, video_coords=coords, return_dict=False,
        )[0]
    for source in (single, folder):
        model = load_transformer(source, causal_temporal_positioning=causal) if source == folder else load_transformer(source)
        with torch.no_grad():
            got = model(x, text, t if per_token else t[:, None], indices_grid=coords, encoder_attention_mask=mask)
        err = rel(got, expected)
        print(f"transformer {source.name} causal={causal} per_token={per_token}: rel err {err:.3e}")
        assert err <= 1e-5


def test_transformer_single_file_keeps_config_and_dtype(transformer_files):
    single, _, _ = transformer_files
    model = load_transformer(single, dtype=torch.bfloat16)
    assert model.config == TINY_T
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert not any(p.is_meta for p in model.parameters())
    assert not any(p.requires_grad for p in model.parameters())


def test_diffusers_folder_causal_flag_follows_vae_family(tmp_path, transformer_files):
    _, folder, _ = transformer_files
    assert inspect_checkpoint(folder).transformer.causal_temporal_positioning is False
    # a 0.9.5-family VAE config next to it marks the folder as 0.9.5+ (causal RoPE time)
    root = tmp_path / "pipe"
    (root / "transformer").mkdir(parents=True)
    for p in (folder / "transformer").iterdir():
        (root / "transformer" / p.name).symlink_to(p)
    (root / "vae").mkdir()
    (root / "vae" / "config.json").write_text(json.dumps({
        "down_block_types": ["LTXVideo095DownBlock3D"] * 4, "block_out_channels": [8, 16, 32, 64, 128],
        "layers_per_block": [1] * 5, "spatio_temporal_scaling": [True] * 4,
        "downsample_type": ["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
        "decoder_block_out_channels": [16, 32, 64], "decoder_layers_per_block": [1] * 4,
        "decoder_spatio_temporal_scaling": [True] * 3, "decoder_inject_noise": [False] * 4,
        "upsample_residual": [True] * 3, "upsample_factor": [2] * 3, "timestep_conditioning": True,
        "latent_channels": 8,
    }))
    assert inspect_checkpoint(root).transformer.causal_temporal_positioning is True


# --- VAE -------------------------------------------------------------------------------------------------------

# Tiny official configs (real block types and order, one layer per block, small widths) and the diffusers
# constructor arguments that describe the same architecture.
OFFICIAL_VAES = {
    "0.9": {
        "blocks": [["res_x", 1], ["compress_all", 1], ["res_x_y", 1], ["res_x", 1], ["compress_all", 1],
                   ["res_x_y", 1], ["res_x", 1], ["compress_all", 1], ["res_x", 1], ["res_x", 1]],
        "timestep_conditioning": False,
    },
    "0.9.1": {
        "encoder_blocks": [["res_x", 1], ["compress_all", 1], ["res_x_y", 1], ["res_x", 1], ["compress_all", 1],
                           ["res_x_y", 1], ["res_x", 1], ["compress_all", 1], ["res_x", 1], ["res_x", 1]],
        "decoder_blocks": [["res_x", {"num_layers": 1, "inject_noise": True}],
                           ["compress_all", {"residual": True, "multiplier": 2}],
                           ["res_x", {"num_layers": 1, "inject_noise": True}],
                           ["compress_all", {"residual": True, "multiplier": 2}],
                           ["res_x", {"num_layers": 1, "inject_noise": True}],
                           ["compress_all", {"residual": True, "multiplier": 2}],
                           ["res_x", {"num_layers": 1, "inject_noise": False}]],
        "timestep_conditioning": True,
    },
    "0.9.5": {
        "encoder_blocks": [["res_x", {"num_layers": 1}], ["compress_space_res", {"multiplier": 2}],
                           ["res_x", {"num_layers": 1}], ["compress_time_res", {"multiplier": 2}],
                           ["res_x", {"num_layers": 1}], ["compress_all_res", {"multiplier": 2}],
                           ["res_x", {"num_layers": 1}], ["compress_all_res", {"multiplier": 2}],
                           ["res_x", {"num_layers": 1}]],
        "decoder_blocks": [["res_x", {"num_layers": 1, "inject_noise": False}],
                           ["compress_all", {"residual": True, "multiplier": 2}],
                           ["res_x", {"num_layers": 1, "inject_noise": False}],
                           ["compress_all", {"residual": True, "multiplier": 2}],
                           ["res_x", {"num_layers": 1, "inject_noise": False}],
                           ["compress_all", {"residual": True, "multiplier": 2}],
                           ["res_x", {"num_layers": 1, "inject_noise": False}]],
        "timestep_conditioning": True,
    },
}
DIFFUSERS_VAES = {
    "0.9": dict(
        block_out_channels=(8, 16, 32, 32), layers_per_block=(1, 1, 1, 1, 1),
        decoder_block_out_channels=(8, 16, 32, 32), decoder_layers_per_block=(1, 1, 1, 1, 1),
    ),
    "0.9.1": dict(
        block_out_channels=(8, 16, 32, 32), layers_per_block=(1, 1, 1, 1, 1),
        decoder_block_out_channels=(16, 32, 64), decoder_layers_per_block=(1, 1, 1, 1),
        decoder_spatio_temporal_scaling=(True, True, True), decoder_inject_noise=(True, True, True, False),
        upsample_residual=(True, True, True), upsample_factor=(2, 2, 2), timestep_conditioning=True,
    ),
    "0.9.5": dict(
        block_out_channels=(8, 16, 32, 64, 128), down_block_types=("LTXVideo095DownBlock3D",) * 4,
        layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True,) * 4,
        downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
        decoder_block_out_channels=(16, 32, 64), decoder_layers_per_block=(1, 1, 1, 1),
        decoder_spatio_temporal_scaling=(True, True, True), decoder_inject_noise=(False,) * 4,
        upsample_residual=(True, True, True), upsample_factor=(2, 2, 2), timestep_conditioning=True,
        spatial_compression_ratio=32, temporal_compression_ratio=8,
    ),
}
LATENT = 8


def official_vae_cfg(family: str) -> dict:
    cfg = {
        "_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3,
        "latent_channels": LATENT, "norm_layer": "pixel_norm", "patch_size": 4, "latent_log_var": "uniform",
        "use_quant_conv": False, "causal_decoder": False, "encoder_base_channels": 8,
        "decoder_base_channels": 8, **json.loads(json.dumps(OFFICIAL_VAES[family])),
    }
    return cfg


@pytest.fixture(scope="module", params=["0.9", "0.9.1", "0.9.5"])
def vae_files(request, tmp_path_factory):
    family = request.param
    tmp = tmp_path_factory.mktemp(f"vae-{family}")
    cfg = VAEConfig.from_official(official_vae_cfg(family))
    torch.manual_seed(3)
    ours = CausalVideoVAE(cfg)
    randomise(ours, 4)
    g = torch.Generator().manual_seed(5)
    sd = {f"vae.{k}": v.clone() for k, v in ours.state_dict().items()}
    sd["vae.per_channel_statistics.std-of-means"] = torch.rand(LATENT, generator=g) + 0.5
    sd["vae.per_channel_statistics.mean-of-means"] = torch.randn(LATENT, generator=g) * 0.3
    # released checkpoints also carry these three unused statistics
    sd["vae.per_channel_statistics.channel"] = torch.arange(LATENT, dtype=torch.float32)
    sd["vae.per_channel_statistics.mean-of-stds"] = torch.rand(LATENT, generator=g)
    sd["vae.per_channel_statistics.mean-of-stds_over_std-of-means"] = torch.rand(LATENT, generator=g)
    single = tmp / f"vae-{family}.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(single),
              metadata={"config": json.dumps({"vae": official_vae_cfg(family)})})

    # diffusers' converter detects 0.9.5 from a 2048-channel encoder head: show it that shape on the meta device
    conv_key = "vae.encoder.conv_out.conv.weight"
    real_head = sd[conv_key]
    if family == "0.9.5":
        sd[conv_key] = torch.empty(real_head.shape[0], 2048, 3, 3, 3, device="meta")
    converted = convert_ltx_vae_checkpoint_to_diffusers(dict(sd))
    if family == "0.9.5":
        converted["encoder.conv_out.conv.weight"] = real_head
    converted["latents_mean"] = sd["vae.per_channel_statistics.mean-of-means"]
    ref = AutoencoderKLLTXVideo(latent_channels=LATENT, **DIFFUSERS_VAES[family])
    missing, unexpected = ref.load_state_dict(converted, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    folder = tmp / "diffusers"
    ref.save_pretrained(folder / "vae", safe_serialization=True)
    return family, single, folder, ref.eval()


def test_vae_parity_with_diffusers_both_layouts(vae_files):
    family, single, folder, ref = vae_files
    g = torch.Generator().manual_seed(6)
    video = torch.rand(1, 3, 17, 64, 64, generator=g) * 2 - 1
    mean = ref.latents_mean.view(1, -1, 1, 1, 1)
    std = ref.latents_std.view(1, -1, 1, 1, 1)
    with torch.no_grad():
        expected_z = (ref.encode(video).latent_dist.mode() - mean) / std
    z = torch.randn(1, LATENT, 3, 2, 2, generator=g)
    tc = family != "0.9"
    temb = torch.tensor([0.05]) if tc else None
    with torch.no_grad():
        torch.manual_seed(11)  # the 0.9.1 decoder draws its injected noise from the global RNG
        expected_x = ref.decode(z * std + mean, temb=temb, return_dict=False)[0]
    for source in (single, folder):
        vae = load_vae(source)
        with torch.no_grad():
            got_z = vae.encode(video)
            got_x = vae.decode(z, timestep=0.05 if tc else None, generator=torch.Generator().manual_seed(11))
        ez, ex = rel(got_z, expected_z), rel(got_x, expected_x)
        print(f"vae {family} {source.name}: encode rel err {ez:.3e}, decode rel err {ex:.3e}")
        assert ez <= 1e-5 and ex <= 1e-5
        assert vae.config.family == family


def test_vae_single_file_drops_only_the_unused_statistics(vae_files):
    _, single, _, _ = vae_files
    vae = load_vae(single)
    keys = set(vae.state_dict())
    assert "per_channel_statistics.std-of-means" in keys and "per_channel_statistics.mean-of-means" in keys
    assert not any("mean-of-stds" in k or k.endswith(".channel") for k in keys)


# --- upsampler ---------------------------------------------------------------------------------------------------


def test_upsampler_single_file_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = UpsamplerConfig(in_channels=8, mid_channels=32, num_blocks_per_stage=1)
    up = LatentUpsampler(cfg)
    randomise(up, 9)
    path = tmp_path / "up.safetensors"
    save_file({k: v.contiguous() for k, v in up.state_dict().items()}, str(path),
              metadata={"config": json.dumps(cfg.to_official())})
    loaded = load_upsampler(path)
    x = torch.randn(1, 8, 2, 3, 4)
    with torch.no_grad():
        assert torch.equal(loaded(x), up(x))
    assert loaded.config == cfg


# --- metadata ----------------------------------------------------------------------------------------------------


def test_inspect_reads_scheduler_and_allowed_steps_without_loading(tmp_path):
    from ltxcli.models.configs import SchedulerConfig

    torch.manual_seed(0)
    path = tmp_path / "m.safetensors"
    sched = SchedulerConfig(sampler="LinearQuadratic")
    save_official_checkpoint(path, transformer=LTXVideoTransformer(TINY_T), scheduler=sched,
                             allowed_inference_steps=[1.0, 0.9937])
    info = inspect_checkpoint(path)
    assert info.scheduler == sched
    assert info.allowed_inference_steps == (1.0, 0.9937)
    assert info.transformer == TINY_T and info.vae is None
    assert info.dtypes == frozenset({"float32"})


def test_fp8_weights_are_upcast(tmp_path):
    torch.manual_seed(0)
    model = LTXVideoTransformer(TINY_T)
    sd = {f"model.diffusion_model.{k}": (v.to(torch.float8_e4m3fn) if v.ndim == 2 else v)
          for k, v in model.state_dict().items()}
    path = tmp_path / "fp8.safetensors"
    save_file(sd, str(path), metadata={"config": json.dumps({"transformer": TINY_T.to_official()})})
    assert inspect_checkpoint(path).is_fp8
    loaded = load_transformer(path, dtype=torch.float32, keep_checkpoint_dtype=False)
    w = loaded.transformer_blocks[0].attn1.to_q.weight
    assert w.dtype == torch.float32
    assert torch.equal(w, sd["model.diffusion_model.transformer_blocks.0.attn1.to_q.weight"].float())
    default = load_transformer(path, keep_checkpoint_dtype=False)
    assert default.patchify_proj.weight.dtype == torch.bfloat16  # default compute dtype for fp8 files
    # the CPU default keeps the e4m3 codes and widens them per call: the same compute dtype
    lazy = load_transformer(path)
    assert lazy.patchify_proj.weight.dtype == torch.float8_e4m3fn
    assert compute_dtype(lazy.patchify_proj) == torch.bfloat16


# --- every loader error ----------------------------------------------------------------------------------------


@pytest.fixture()
def good_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "good.safetensors"
    save_official_checkpoint(path, transformer=LTXVideoTransformer(TINY_T))
    return path


def _rewrite(path: Path, mutate) -> Path:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta, tensors = mutate(dict(meta), tensors)
    out = path.with_name("bad.safetensors")
    save_file(tensors, str(out), metadata=meta)
    return out


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_missing_key(good_file):
    bad = _rewrite(good_file, lambda m, t: (m, {k: v for k, v in t.items() if "attn1.to_q.weight" not in k}))
    with pytest.raises(CheckpointError) as e:
        load_transformer(bad)
    assert "missing" in _one_line(e) and "to_q.weight" in str(e.value) and "bad.safetensors" in str(e.value)


def test_unexpected_key(good_file):
    bad = _rewrite(good_file, lambda m, t: (m, {**t, "model.diffusion_model.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError) as e:
        load_transformer(bad)
    assert "unexpected" in _one_line(e) and "extra.weight" in str(e.value)


def test_shape_mismatch(good_file):
    key = "model.diffusion_model.proj_out.weight"
    bad = _rewrite(good_file, lambda m, t: (m, {**t, key: torch.zeros(3, 3)}))
    with pytest.raises(CheckpointError) as e:
        load_transformer(bad)
    assert "proj_out.weight" in _one_line(e) and "shape" in str(e.value)


def test_wrong_dtype(good_file):
    key = "model.diffusion_model.proj_out.bias"
    bad = _rewrite(good_file, lambda m, t: (m, {**t, key: torch.zeros(8, dtype=torch.int32)}))
    with pytest.raises(CheckpointError) as e:
        load_transformer(bad)
    assert "proj_out.bias" in _one_line(e) and "dtype" in str(e.value)


def test_unsupported_config_value(good_file):
    def mutate(m, t):
        cfg = json.loads(m["config"])
        cfg["transformer"]["activation_fn"] = "geglu"
        return {"config": json.dumps(cfg)}, t

    with pytest.raises(ConfigError) as e:
        load_transformer(_rewrite(good_file, mutate))
    assert "activation_fn='geglu'" in _one_line(e)


def test_metadata_not_json(good_file):
    bad = _rewrite(good_file, lambda m, t: ({"config": "{not json"}, t))
    with pytest.raises(CheckpointError) as e:
        load_transformer(bad)
    assert "not valid JSON" in _one_line(e)


def test_unknown_architecture(good_file):
    bad = _rewrite(good_file, lambda m, t: ({"config": json.dumps({"unet": {}})}, t))
    with pytest.raises(CheckpointError) as e:
        inspect_checkpoint(bad)
    assert "unknown architecture" in _one_line(e)


def test_file_of_another_model(tmp_path):
    path = tmp_path / "sd.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4)}, str(path))
    with pytest.raises(CheckpointError) as e:
        load_transformer(path)
    assert "not an official LTX-Video checkpoint" in _one_line(e)


def test_truncated_file(good_file, tmp_path):
    data = good_file.read_bytes()
    bad = tmp_path / "trunc.safetensors"
    bad.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError) as e:
        load_transformer(bad)
    assert "outside the file" in _one_line(e)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"abc")
    with pytest.raises(CheckpointError) as e:
        load_transformer(tiny)
    assert "truncated" in _one_line(e)


def test_corrupt_header(good_file, tmp_path):
    data = bytearray(good_file.read_bytes())
    n = struct.unpack("<Q", data[:8])[0]
    data[8 : 8 + 10] = b"\xff" * 10
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as e:
        load_transformer(bad)
    assert "corrupt" in _one_line(e)
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 10**12) + bytes(data[8 : 8 + n]))
    with pytest.raises(CheckpointError) as e:
        load_transformer(huge)
    assert "corrupt safetensors header" in _one_line(e)


def test_offsets_pointing_outside(good_file, tmp_path):
    data = good_file.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    key = next(k for k in header if k != "__metadata__")
    begin, end = header[key]["data_offsets"]
    header[key]["data_offsets"] = [begin + 10**9, end + 10**9]
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    bad = tmp_path / "offsets.safetensors"
    bad.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    with pytest.raises(CheckpointError) as e:
        load_transformer(bad)
    assert "outside the file" in _one_line(e) or "does not match" in str(e.value)


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".ckpt"])
def test_pickle_formats_refused(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CheckpointError) as e:
        load_transformer(path)
    assert "pickle" in _one_line(e)


def test_missing_file_and_plain_folder(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_transformer(tmp_path / "nope.safetensors")
    assert "not found" in _one_line(e)
    with pytest.raises(CheckpointError) as e:
        load_vae(tmp_path)
    assert "diffusers-format" in _one_line(e)


def test_a_text_encoder_given_with_the_builtin_model_is_ignored_with_a_warning() -> None:
    """As ``ltx generate -m tiny --text-encoder X`` warns; the library ignored it without a word."""
    import ltxcli

    with pytest.warns(UserWarning, match="text_encoder is ignored: tiny has a built-in text encoder"):
        ltxcli.load_pipeline("tiny", text_encoder="/nope", download=False)
