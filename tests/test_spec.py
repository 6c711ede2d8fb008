"""``resolve_spec``: one description of what a run of a name, file or folder loads; and ``load_pipeline``'s download
of missing registry weights (through a fake Hub on 127.0.0.1, as in test_weights / test_cli)."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import cli_harness
import pytest
import torch
from cli_harness import enter_cli_env
from safetensors.torch import save_file
from tiny_t5 import make_tiny_text_encoder

import ltxcli
from ltxcli import weights
from ltxcli.loading import CheckpointError, save_official_checkpoint
from ltxcli.models.configs import TransformerConfig, UpsamplerConfig
from ltxcli.presets import NEUTRAL, PRESETS
from ltxcli.spec import FetchStarted, ModelNotFoundError, SpecError, download_bytes, resolve_spec
from ltxcli.tiny import TINY_TRANSFORMER, build_pipeline

DEFAULT = "ltxv-2b-0.9.8-distilled"
UPSAMPLER = "ltxv-spatial-upscaler-0.9.8"
RELEASED_POSITIONS = tuple(TransformerConfig().positional_embedding_max_pos)
hub = cli_harness.hub  # the fake Hub fixture (uses this module's cli_env)


@pytest.fixture(scope="module")
def tiny() -> Any:
    return build_pipeline(torch.device("cpu"), torch.float32)


@pytest.fixture(autouse=True)
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty weights folder (LTX_WEIGHTS_DIR), nothing offline, as test_cli's environment."""
    return enter_cli_env(tmp_path, monkeypatch, ltxcli.api.load_pipeline)


def _checkpoint(tiny: Any, path: Path, dtype: torch.dtype = torch.float32) -> Path:
    save_official_checkpoint(path, transformer=copy.deepcopy(tiny.transformer).to(dtype),
                             vae=copy.deepcopy(tiny.vae).to(dtype))
    return path


def _upsampler(path: Path, channels: int) -> Path:
    from ltxcli.models.upsampler import LatentUpsampler

    cfg = UpsamplerConfig(in_channels=channels, mid_channels=32, num_blocks_per_stage=1)
    torch.manual_seed(0)
    sd = {k: v.contiguous() for k, v in LatentUpsampler(cfg).state_dict().items()}
    save_file(sd, str(path), metadata={"config": json.dumps(cfg.to_official())})
    return path


def _diffusers_folder(folder: Path, *, own_text_encoder: bool) -> Path:
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

    torch.manual_seed(0)
    LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=12, cross_attention_dim=24,
        num_layers=1, caption_channels=16,
    ).save_pretrained(folder / "transformer", safe_serialization=True)
    AutoencoderKLLTXVideo(
        latent_channels=8, block_out_channels=(8, 16, 32, 32), layers_per_block=(1, 1, 1, 1, 1),
        decoder_block_out_channels=(8, 16, 32, 32), decoder_layers_per_block=(1, 1, 1, 1, 1),
    ).save_pretrained(folder / "vae", safe_serialization=True)
    if own_text_encoder:
        make_tiny_text_encoder(folder)
    return folder


# --------------------------------------------------------------------------------------------- resolving


def test_registry_name_lists_every_component_and_what_is_missing(cli_env: Path) -> None:
    spec = resolve_spec(DEFAULT)
    assert (spec.kind, spec.name, spec.label) == ("registry", DEFAULT, DEFAULT)
    assert spec.preset is PRESETS[DEFAULT] and spec.preset.multi_scale
    assert spec.model.name == DEFAULT and spec.model.path is None and not spec.model.present
    assert spec.text_encoder is not None and spec.text_encoder.name == "t5-xxl"
    assert spec.upsampler is not None and spec.upsampler.name == UPSAMPLER == spec.preset.upsampler
    assert spec.needed == spec.missing == [DEFAULT, "t5-xxl", UPSAMPLER]
    assert [c.state for c in spec.components] == ["missing"] * 3
    # nothing on disk to read: the released position range, the registry's precision
    assert spec.info is None and spec.max_positions == RELEASED_POSITIONS and spec.fp8 is False
    assert resolve_spec(None).name == DEFAULT  # the registry default
    assert resolve_spec(DEFAULT + "-fp8").fp8 is True
    # a given text encoder / upsampler replaces the default one (registry names are needed, paths are not)
    (cli_env / "te").mkdir()
    given = resolve_spec(DEFAULT, text_encoder=cli_env / "te", upsampler="ltxv-spatial-upscaler-0.9.7")
    assert given.text_encoder is not None and given.text_encoder.name is None
    assert given.text_encoder.path == cli_env / "te" and given.text_encoder.present
    assert given.needed == [DEFAULT, "ltxv-spatial-upscaler-0.9.7"]


def test_tiny_is_builtin_and_needs_nothing() -> None:
    spec = resolve_spec("tiny")
    assert spec.kind == "builtin" and spec.preset is PRESETS["tiny"] and spec.label == "tiny"
    assert spec.needed == spec.missing == [] and spec.download_size == 0
    assert spec.text_encoder is None and spec.upsampler is None and spec.model.state == "builtin"
    assert spec.max_positions == tuple(TINY_TRANSFORMER.positional_embedding_max_pos)


def test_single_file_reads_its_header(cli_env: Path, tiny: Any) -> None:
    path = _checkpoint(tiny, cli_env / "bf16.safetensors", torch.bfloat16)
    spec = resolve_spec(str(path))
    assert (spec.kind, spec.label, spec.path) == ("file", str(path), path)
    assert spec.preset is NEUTRAL and spec.model.name is None and spec.model.present
    assert spec.info is not None and spec.info.transformer == tiny.transformer.config
    assert spec.max_positions == tuple(tiny.transformer.config.positional_embedding_max_pos)
    assert spec.checkpoint_dtype == "bfloat16" and spec.fp8 is False
    assert sum(spec.dtypes.values()) == sum(t.numel() * 2 for m in (tiny.transformer, tiny.vae)
                                            for t in m.state_dict().values())
    # the text encoder still comes from the registry (preset default), the checkpoint's is not there
    assert spec.text_encoder is not None and spec.text_encoder.name == "t5-xxl" and spec.upsampler is None
    assert spec.needed == spec.missing == ["t5-xxl"]
    # an official file name selects its preset (and with it the upsampler)
    official = _checkpoint(tiny, cli_env / f"{PRESETS[DEFAULT].checkpoint}")
    assert resolve_spec(str(official)).preset is PRESETS[DEFAULT]
    assert resolve_spec(str(official)).needed == ["t5-xxl", UPSAMPLER]


def test_diffusers_folder_with_and_without_its_own_text_encoder(cli_env: Path) -> None:
    bare = resolve_spec(str(_diffusers_folder(cli_env / "bare", own_text_encoder=False)))
    assert bare.kind == "folder" and bare.preset is NEUTRAL and bare.info is not None
    assert bare.info.layout == "diffusers" and bare.checkpoint_dtype == "float32"
    assert bare.text_encoder is not None and bare.text_encoder.name == "t5-xxl"
    assert bare.needed == ["t5-xxl"]
    own_folder = _diffusers_folder(cli_env / "own", own_text_encoder=True)
    own = resolve_spec(str(own_folder))
    assert own.text_encoder is not None and own.text_encoder.name is None
    assert own.text_encoder.path == own_folder and own.text_encoder.present
    assert own.needed == own.missing == []
    # a given text encoder wins over the folder's own
    given = resolve_spec(str(own_folder), text_encoder="t5-xxl")
    assert given.text_encoder is not None and given.needed == ["t5-xxl"]


@pytest.mark.parametrize(
    ("model", "kwargs", "error", "needle"),
    [
        ("ltxv-2b-0.9.9", {}, weights.UnknownWeightsError, "did you mean"),
        ("t5-xxl", {}, SpecError, "t5-xxl: that is a text encoder, not a model (see `ltx weights list`)"),
        ("nothere.safetensors", {}, ModelNotFoundError, "nothere.safetensors: no such file or folder"),
        ("no/such", {}, FileNotFoundError, "no such file or folder"),
        ("tiny", {"upsampler": "nope.safetensors"}, ModelNotFoundError,
         "nope.safetensors: no such file or folder, and not a name in weights.toml"),
        (DEFAULT, {"text_encoder": "no/such"}, ModelNotFoundError, "no/such: no such file or folder, and not a name"),
    ],
)
def test_unresolvable_names_and_paths(model: str, kwargs: dict[str, Any], error: type, needle: str) -> None:
    with pytest.raises(error) as e:
        resolve_spec(model, **kwargs)
    assert needle in str(e.value)


def test_errors_name_the_argument() -> None:
    with pytest.raises(SpecError) as e:
        resolve_spec(DEFAULT, upsampler="missing.safetensors")
    assert (e.value.argument, e.value.value) == ("upsampler", "missing.safetensors")


def test_broken_and_pickled_files_are_refused(cli_env: Path) -> None:
    (cli_env / "model.ckpt").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CheckpointError, match="pickle"):
        resolve_spec("model.ckpt")
    (cli_env / "corrupt.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match=r"corrupt\.safetensors"):
        resolve_spec("corrupt.safetensors")


def test_unverified_registry_file_is_not_read(cli_env: Path) -> None:
    """A registry checkpoint on disk whose download was never verified is not inspected (a pull replaces it)."""
    local = cli_env / "weights" / "Lightricks" / "LTX-Video" / PRESETS[DEFAULT].checkpoint
    local.parent.mkdir(parents=True)
    with local.open("wb") as f:  # the pinned size (a sparse file): a copy of another size is listed partial
        f.write(b"\xff" * 64)
        f.truncate(weights.load_registry()[DEFAULT].files[0].size)
    spec = resolve_spec(DEFAULT)
    assert spec.model.present and not spec.model.verified and spec.model.path == local
    assert spec.info is None and spec.max_positions == RELEASED_POSITIONS
    assert DEFAULT not in spec.missing and DEFAULT in spec.needed


def test_download_sizes_from_pinned_registry_sizes(cli_env: Path) -> None:
    reg = weights.parse_registry({"schema": 1, "weights": {
        "m": {"kind": "model", "description": "m", "repo": "o/m", "preset": "ltxv-2b-0.9", "text_encoder": "te",
              "files": [{"path": "m.safetensors", "size": 100}], "default": True},
        "te": {"kind": "text_encoder", "description": "te", "repo": "o/te", "allow": ["text_encoder/*"]},
        "up": {"kind": "upsampler", "description": "up", "repo": "o/up", "files": [{"path": "u.safetensors", "size": 7}]},
    }})
    assert resolve_spec("m", registry=reg).model.size == 100
    assert download_bytes(resolve_spec("m", registry=reg)) is None  # the text encoder's size is not pinned
    (cli_env / "te").mkdir()
    assert resolve_spec("m", text_encoder=cli_env / "te", upsampler="up", registry=reg).download_size == 107


# --------------------------------------------------------------------------------------------- load_pipeline


def _publish_default(hub: Any, tiny: Any, tmp: Path) -> None:
    """The default model (a tiny checkpoint under its name), T5 and the upsampler on the fake Hub."""
    tmp.mkdir()
    ckpt = _checkpoint(tiny, tmp / "ckpt.safetensors")
    hub.add("Lightricks/LTX-Video", PRESETS[DEFAULT].checkpoint, ckpt.read_bytes())
    up = _upsampler(tmp / "up.safetensors", tiny.transformer.config.in_channels)
    hub.add("Lightricks/LTX-Video", f"{UPSAMPLER}.safetensors", up.read_bytes())
    te = make_tiny_text_encoder(tmp / "te")
    for f in sorted(p for p in te.rglob("*") if p.is_file()):
        hub.add("PixArt-alpha/PixArt-XL-2-1024-MS", f.relative_to(te).as_posix(), f.read_bytes())


def test_load_pipeline_downloads_a_registry_model_like_generate(
    hub: Any, cli_env: Path, tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish_default(hub, tiny, cli_env / "src")
    # download=False refuses with the one-line error `ltx generate` gives offline-less (nothing is fetched)
    with pytest.raises(weights.WeightsUnavailableError) as e:
        ltxcli.load_pipeline(DEFAULT, download=False)
    assert str(e.value).startswith(f"{DEFAULT} is not downloaded") and f"ltx weights pull {DEFAULT}" in str(e.value)
    assert not hub.resolve_requests()
    # weights.toml pins the real file's size: the tiny stand-in is refused, and deleted
    with pytest.raises(weights.ChecksumError, match=r"bytes, expected 6340744492 \(weights.toml\)"):
        ltxcli.load_pipeline(DEFAULT)
    # the packaged registry without that pin, for the rest
    packaged = weights.load_registry()
    reg = weights.Registry({**packaged.entries, DEFAULT: dataclasses.replace(
        packaged[DEFAULT], files=(weights.WeightFile(PRESETS[DEFAULT].checkpoint),))})

    events: list[Any] = []
    pipe = ltxcli.load_pipeline(resolve_spec(DEFAULT, registry=reg), on_event=events.append)
    started = [(ev.name, ev.action) for ev in events if isinstance(ev, FetchStarted)]
    assert started == [(DEFAULT, "downloading"), ("t5-xxl", "downloading"), (UPSAMPLER, "downloading")]
    assert any(isinstance(ev, weights.FileDone) and ev.phase == "download" for ev in events)
    assert pipe.name == DEFAULT and pipe.preset is PRESETS[DEFAULT] and pipe.upsampler is not None
    spec = resolve_spec(DEFAULT, registry=reg)
    assert spec.missing == [] and all(c.verified for c in spec.components)
    assert spec.info is not None and spec.max_positions == tuple(tiny.transformer.config.positional_embedding_max_pos)

    # everything verified: a second load fetches nothing; offline, a missing name is the offline error
    events.clear()
    ltxcli.load_pipeline(spec, on_event=events.append)
    assert events == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(weights.WeightsUnavailableError, match="HF_HUB_OFFLINE"):
        ltxcli.load_pipeline("ltxv-2b-0.9")


def test_load_pipeline_takes_its_options_from_a_spec(cli_env: Path) -> None:
    with pytest.raises(ValueError, match="come from the ModelSpec"):
        ltxcli.load_pipeline(resolve_spec("tiny"), text_encoder="te")
    assert ltxcli.load_pipeline(resolve_spec("tiny")).name == ltxcli.load_pipeline("tiny").name
