"""int8 weight storage (``weights_dtype="int8"``): block linears stored as int8 codes + a float32 scale per output
row, widened per call.

References are independent of the code under test: the per-row quantisation written here with numpy (one row at a
time), hand-dequantised weights (``codes.float() * scale[:, None]``) in plain float32 layers, the unquantised
model's output, byte counts from the layer shapes.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_harness import enter_cli_env, ltx, memoised_loader
from tiny_models import STORAGE_CFG as CFG
from tiny_models import one_thread, randomise_normal, rel_err, storage_checkpoint  # noqa: F401  (one_thread: autouse)
from tiny_models import storage_inputs as tiny_inputs
from tiny_models import storage_model as tiny_model
from torch import nn

from ltxcli.api import load_pipeline, resolve_compute, weights_storage
from ltxcli.loading import load_transformer
from ltxcli.memory.weights import config_transformer_bytes, held_bytes
from ltxcli.models.fp8 import fp8_storage_keys
from ltxcli.models.int8 import Int8StoredLinear, convert_to_int8_storage, quantize_int8, storage_mode
from ltxcli.models.transformer import LTXVideoTransformer
from ltxcli.models.upcast import UpcastLinear

TINY32 = np.finfo(np.float32).tiny


def reference_int8(w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8, one row at a time in numpy float32: scale = amax(|row|) / 127 (the smallest normal
    float32 for an all-zero row), codes = round(row / scale) half to even (``np.round``), clamped to ±127."""
    rows = w.detach().to(torch.float32).numpy()
    codes = np.zeros(rows.shape, dtype=np.int8)
    scales = np.zeros(rows.shape[0], dtype=np.float32)
    for i, row in enumerate(rows):
        scale = max(np.float32(np.abs(row).max()) / np.float32(127), TINY32)
        scales[i] = scale
        codes[i] = np.clip(np.round(row / np.float32(scale)), -127, 127).astype(np.int8)
    return codes, scales




def dequantised(layer: nn.Module) -> torch.Tensor:
    """``codes * scale[:, None]`` by hand, in float32."""
    return layer.weight.to(torch.float32) * layer.weight_scale[:, None]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float8_e4m3fn])
def test_quantiser_equals_the_per_row_reference(dtype):
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(48, 80, generator=gen) * torch.logspace(-3, 1, 48)[:, None]  # rows of very different range
    w[5] = 0  # an all-zero row
    w[6, :6] = torch.tensor([127.0, 0.5, 1.5, 2.5, -2.5, -0.5])  # amax 127: scale 1, ties to even
    w[6, 6:] = 0
    w = w.to(dtype)
    codes, scale = quantize_int8(w)
    want_codes, want_scale = reference_int8(w)
    assert codes.dtype == torch.int8 and scale.dtype == torch.float32 and scale.shape == (48,)
    assert np.array_equal(codes.numpy(), want_codes) and np.array_equal(scale.numpy(), want_scale)
    assert codes[5].abs().sum() == 0
    if dtype != torch.float8_e4m3fn:  # e4m3 has no 127: its amax is 128
        assert codes[6, :6].tolist() == [127, 0, 2, 2, -2, 0]
    assert codes.abs().amax(dim=1).tolist()[7:] == [127] * 41  # every non-zero row uses the whole range


def test_stored_layer_is_the_dequantised_weight_times_the_input():
    torch.manual_seed(3)
    orig = nn.Linear(64, 32)
    model = nn.Module()
    model.transformer_blocks = nn.ModuleList([nn.Module()])
    model.transformer_blocks[0].ff = copy.deepcopy(orig)
    assert convert_to_int8_storage(model) == ["transformer_blocks.0.ff"]
    layer = model.transformer_blocks[0].ff
    assert type(layer) is Int8StoredLinear and layer.weight.dtype == torch.int8
    codes, scales = reference_int8(orig.weight)
    assert np.array_equal(layer.weight.numpy(), codes) and np.array_equal(layer.weight_scale.numpy(), scales)
    assert set(layer.state_dict()) == {"weight", "bias"}  # the checkpoint's keys; the scales are a buffer
    x = torch.randn(5, 64)
    want = F.linear(x, torch.from_numpy(codes).float() * torch.from_numpy(scales)[:, None], orig.bias)
    with torch.inference_mode():
        assert torch.equal(layer(x), want)
        err = rel_err(layer(x), orig(x))
        assert 0 < err < 1e-2, err  # 7 significant bits per row
    assert torch.equal(layer(x).detach(), want)  # under autograd (no shared scratch) the same values


def test_dtype_moves_change_the_compute_dtype_not_the_codes_nor_the_scales():
    model = tiny_model()
    convert_to_int8_storage(model)
    layer = model.transformer_blocks[0].attn1.to_q
    codes, scales = layer.weight.detach().clone(), layer.weight_scale.clone()
    model.to(torch.bfloat16)
    assert layer.weight.dtype == torch.int8 and layer.bias.dtype == torch.bfloat16
    assert torch.equal(layer.weight, codes) and torch.equal(layer.weight_scale, scales)
    assert layer.weight_scale.dtype == torch.float32
    x = torch.randn(3, layer.in_features).to(torch.bfloat16)
    with torch.inference_mode():
        # bfloat16 compute: each weight is codes * scale rounded once to bfloat16
        want = F.linear(x, (codes.float() * scales[:, None]).to(torch.bfloat16), layer.bias)
        assert torch.equal(layer(x), want)
        out = model(**tiny_inputs(dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    model.float()
    assert layer.weight.dtype == torch.int8 and torch.equal(layer.weight_scale, scales)


def test_tiny_transformer_equals_dequantised_weights_bit_for_bit():
    model = tiny_model()
    inputs = tiny_inputs()
    with torch.inference_mode():
        ref = model(**inputs)
        names = convert_to_int8_storage(model)
        assert len(names) == CFG.num_layers * (4 + 4 + 2) == len(fp8_storage_keys(model))
        assert storage_mode(model) == "int8"
        out = model(**inputs)
        # independent reference: a plain float32 model holding the numpy-quantised weights, dequantised by hand
        plain = tiny_model()
        for key in fp8_storage_keys(plain):
            target = plain.get_submodule(key.removesuffix(".weight"))
            codes, scales = reference_int8(target.weight)
            target.weight.copy_(torch.from_numpy(codes).float() * torch.from_numpy(scales)[:, None])
        want = plain(**inputs)
    err = rel_err(out, ref)
    print(f"tiny transformer, int8-stored weights vs float32: rel err {err:.3e}")
    assert torch.equal(out, want)  # widening + per-row scaling at call is exactly the dequantised weight
    assert torch.isfinite(out).all() and 0 < err < 2e-2
    assert type(model.patchify_proj) is nn.Linear and model.patchify_proj.weight.dtype == torch.float32


@pytest.fixture(scope="module")
def bf16_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("int8s") / "bf16.safetensors"
    storage_checkpoint(path, seed=4)
    return path


@pytest.mark.parametrize("narrow", [True, False])
def test_loader_quantises_while_reading(bf16_file, narrow):
    wide = load_transformer(bf16_file, dtype=torch.float32, keep_checkpoint_dtype=narrow)
    int8 = load_transformer(bf16_file, dtype=torch.float32, keep_checkpoint_dtype=narrow, weights_storage="int8")
    assert storage_mode(int8) == "int8"
    for key in fp8_storage_keys(int8):
        layer = int8.get_submodule(key.removesuffix(".weight"))
        codes, scales = reference_int8(wide.get_submodule(key.removesuffix(".weight")).weight)
        assert type(layer) is Int8StoredLinear and layer.bias.dtype == torch.float32
        assert np.array_equal(layer.weight.numpy(), codes) and np.array_equal(layer.weight_scale.numpy(), scales)
    assert type(int8.patchify_proj) is (UpcastLinear if narrow else nn.Linear)  # the rest as the loader leaves it
    with torch.inference_mode():
        assert rel_err(int8(**tiny_inputs()), wide(**tiny_inputs())) < 2e-2


def test_fp8_checkpoint_widened_then_quantised(tmp_path):
    """An official-style fp8 file (block linears e4m3, unit scale) with int8 storage: the e4m3 values, widened
    exactly, quantised per row."""
    path = tmp_path / "fp8.safetensors"
    model = storage_checkpoint(path, seed=5, fp8=True)  # an fp8 file: block linears e4m3, the rest bf16
    loaded = load_transformer(path, dtype=torch.bfloat16, weights_storage="int8", keep_checkpoint_dtype=False)
    layer = loaded.transformer_blocks[0].ff.net[0].proj
    codes, scales = reference_int8(model.transformer_blocks[0].ff.net[0].proj.weight.to(torch.float32))
    assert type(layer) is Int8StoredLinear and layer.bias.dtype == torch.bfloat16
    assert np.array_equal(layer.weight.numpy(), codes) and np.array_equal(layer.weight_scale.numpy(), scales)


def test_resident_bytes():
    """Each stored block linear holds one byte a weight and four a row (counted by the memory plan too); the 2B's
    transformer as a CPU run holds it is at most 0.55x of bfloat16-kept, the figure counted here from the shapes."""
    model = tiny_model()
    shapes = [model.get_submodule(k.removesuffix(".weight")).weight.shape for k in fp8_storage_keys(model)]
    before = held_bytes(model)
    convert_to_int8_storage(model)
    assert held_bytes(model) == before - sum(o * i * 4 - o * i - o * 4 for o, i in shapes)
    from ltxcli.perf.bench import random_architecture
    from ltxcli.presets import PRESETS

    config = random_architecture(PRESETS["ltxv-2b-0.9.5"]).transformer
    kept = config_transformer_bytes(config, torch.float32, narrow=torch.bfloat16)
    stored = config_transformer_bytes(config, torch.float32, narrow=torch.bfloat16, weights_storage="int8")
    with torch.device("meta"):
        meta = LTXVideoTransformer(config)
    big = [meta.get_submodule(k.removesuffix(".weight")).weight.shape for k in fp8_storage_keys(meta)]
    assert kept - stored == sum(o * i * 2 - o * i - o * 4 for o, i in big)  # bf16 -> int8 + float32 per row
    print(f"2B transformer, int8 storage / bf16-kept: {stored / kept:.3f}")
    assert stored / kept <= 0.55


def test_api_weights_dtype():
    assert weights_storage("int8") == "int8" and weights_storage("fp8") == "fp8" and weights_storage(None) is None
    assert weights_storage("auto") is None
    with pytest.raises(ValueError, match=r"unknown weights dtype 'int4' \(use auto, fp8 or int8\)"):
        weights_storage("int4")
    with pytest.raises(ValueError, match="int8 cannot be combined with dtype fp8"):
        resolve_compute("cpu", "fp8", "auto", "int8")
    pipe = load_pipeline("tiny", device="cpu", weights_dtype="int8", download=False)
    stored = [m for m in pipe.transformer.modules() if isinstance(m, Int8StoredLinear)]
    assert len(stored) == len(fp8_storage_keys(pipe.transformer)) > 0
    assert pipe.compute_record() == {"dtype": "float32", "fp8": None, "weights_dtype": "int8"}
    plain = load_pipeline("tiny", device="cpu", download=False)
    assert plain.compute_record()["weights_dtype"] is None
    a = pipe.generate("a cat", height=64, width=64, num_frames=9, steps=2, seed=1)
    b = plain.generate("a cat", height=64, width=64, num_frames=9, steps=2, seed=1)
    err = rel_err(a.video, b.video)
    print(f"tiny pipeline, int8-stored vs float32 weights: video rel err {err:.2e}")
    assert 0 < err < 1e-2
    assert a.settings["weights_dtype"] == "int8"


def test_memory_plan_offers_int8_storage_where_the_weights_do_not_fit():
    """On the CPU (offloading saves nothing there) with a tiled decode already, a free memory between the
    int8-stored and the default weights gets `--weights-dtype int8` as the alternative that fits; on a GPU it
    ranks after offloading by stage, before streaming blocks. A run that stores its weights narrow already
    (fp8 or int8) is offered no storage."""
    from ltxcli.memory.plan import RunShape, memory_verdict, plan_estimators
    from ltxcli.memory.weights import spec_parts
    from ltxcli.spec import resolve_spec

    spec = resolve_spec("tiny")
    tcfg, vcfg, parts = spec_parts(spec, torch.float32)
    _, _, stored = spec_parts(spec, torch.float32, weights_storage="int8")
    _, _, fp8 = spec_parts(spec, torch.float32, weights_storage="fp8")
    assert parts.int8_storage is not None and stored.int8_storage is None and fp8.int8_storage is None
    assert parts.int8_storage() == stored and stored.transformer < parts.transformer
    assert stored.vae_decoder == parts.vae_decoder and stored.text_encoder == parts.text_encoder
    shape = RunShape.of_preset(spec.preset)
    estimate, alternatives = plan_estimators(shape, tcfg, vcfg, dtype=torch.float32, offload="none",
                                             vae_tiling="on", offload_saves=False, parts=parts, device_is_host=True)
    assert [text for text, _ in alternatives] == ["--weights-dtype int8"]
    size = dict(height=64, width=96, num_frames=9)
    need, need_int8 = estimate(64, 96, 9).peak_bytes, alternatives[0][1](64, 96, 9).peak_bytes
    assert need - need_int8 == parts.transformer - stored.transformer
    verdict = memory_verdict(estimate, **size, free_bytes=(need + need_int8) // 2, alternatives=alternatives)
    assert not verdict.fits and verdict.fitting is not None and verdict.fitting[0] == "--weights-dtype int8"
    _, on_gpu = plan_estimators(shape, tcfg, vcfg, dtype=torch.float32, offload="none", vae_tiling="off",
                                parts=parts)
    texts = [text for text, _ in on_gpu]
    assert texts.index("--offload model") < texts.index("--weights-dtype int8") < texts.index("--offload sequential")


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return enter_cli_env(tmp_path, monkeypatch, memoised_loader())


def test_cli_weights_dtype_int8_records_and_resumes(cli_env):
    """`ltx generate --weights-dtype int8 --json`: the record says int8; --skip-existing takes the file for a rerun
    with int8 only, not for a run with float weights or fp8 storage; int8 with --dtype fp8 is one line and exit 2.
    In process (cli_harness: one model per weights dtype), where 9 subprocesses only added their start-ups."""
    out = cli_env / "o.mp4"
    base = ["generate", "a cat", "--model", "tiny", "--height", "64", "--width", "64", "--num-frames", "9", "--steps",
            "1", "--seed", "1", "-o", str(out), "--json", "--skip-existing"]

    def run(*extra: str) -> tuple[dict, str]:
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # in process: the same warning again in every run, as a new process
            r = ltx(*base, *extra)
        assert r.exit_code == 0, r.stderr
        return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr

    bad = ltx(*base, "--weights-dtype", "int8", "--dtype", "fp8")
    assert bad.exit_code == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "int8 cannot be combined with dtype fp8" in bad.stderr
    record, _ = run("--weights-dtype", "int8")
    assert record["status"] == "ok" and out.exists(), record
    assert record["settings"]["weights_dtype"] == "int8" and record["settings"]["fp8"] is None  # the --json line
    from ltxcli import media

    meta = media.read_video_metadata(out)
    assert meta["weights_dtype"] == "int8" and meta["fp8"] is None and meta["dtype"] == "float32"
    other = "holds a video of another prompt or other settings"
    record, err = run("--weights-dtype", "int8")
    assert record["status"] == "skipped" and other not in err
    for extra in ([], ["--weights-dtype", "fp8"]):
        record, err = run(*extra)
        assert record["status"] == "skipped" and other in err, extra
    # records written before int8 storage existed carry no weights_dtype: they stored what their fp8 key says
    legacy = {k: v for k, v in meta.items() if k != "weights_dtype"}
    for fp8, same in (("storage", ["--weights-dtype", "fp8"]), (None, [])):
        media.write_video(out, torch.zeros(9, 64, 64, 3), 24, metadata={**legacy, "fp8": fp8}, overwrite=True)
        record, err = run(*same)
        assert record["status"] == "skipped" and other not in err, fp8
        record, err = run("--weights-dtype", "int8")
        assert record["status"] == "skipped" and other in err, fp8


def test_fp8_stored_model_converted_to_int8_keeps_its_values():
    """A model whose block linears are fp8-stored already (codes times a per-tensor scale) converts to int8 from
    those values, not from the bare codes."""
    from ltxcli.models.fp8 import convert_to_fp8_storage

    model = tiny_model(seed=6)
    convert_to_fp8_storage(model)
    layer = model.transformer_blocks[1].attn1.to_v
    values = layer.weight.to(torch.float32) * layer.weight_scale  # by hand: e4m3 codes times their scale
    convert_to_int8_storage(model)
    codes, scales = reference_int8(values)
    assert type(layer) is Int8StoredLinear and storage_mode(model) == "int8"
    assert np.array_equal(layer.weight.numpy(), codes) and np.array_equal(layer.weight_scale.numpy(), scales)
