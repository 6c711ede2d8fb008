"""fp8 weight storage (``weights_dtype="fp8"``): block linears stored as e4m3 + per-tensor scale, widened per call.

References are independent of the layer under test: a hand-dequantised weight (``codes.float() * scale``) fed to
``F.linear``, the unquantised model's output, the checkpoint's stored bytes.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from tiny_models import STORAGE_CFG as CFG
from tiny_models import one_thread, randomise_normal, rel_err, storage_checkpoint  # noqa: F401  (one_thread: autouse)
from tiny_models import storage_inputs as tiny_inputs
from tiny_models import storage_model as tiny_model
from torch import nn

import ltxcli.models.fp8 as fp8_module
from ltxcli.api import load_pipeline, weights_fp8
from ltxcli.loading import load_transformer
from ltxcli.memory.weights import held_bytes, scratch_bytes
from ltxcli.models.fp8 import (
    FP8Linear,
    FP8StoredLinear,
    convert_to_fp8,
    convert_to_fp8_storage,
    fp8_storage_keys,
    widen_e4m3,
)
from ltxcli.models.upcast import UpcastLinear, convert_to_upcast, stored_weight_bytes, upcast_scratch


def test_stored_layer_is_the_dequantised_weight_times_the_input():
    torch.manual_seed(3)
    orig = nn.Linear(64, 32)
    model = nn.Module()
    model.transformer_blocks = nn.ModuleList([nn.Module()])
    model.transformer_blocks[0].ff = copy.deepcopy(orig)
    assert convert_to_fp8_storage(model) == ["transformer_blocks.0.ff"]
    layer = model.transformer_blocks[0].ff
    assert type(layer) is FP8StoredLinear and layer.weight.dtype == torch.float8_e4m3fn
    scale = layer.weight_scale
    # independent reference: amax / 448 by hand, codes widened and scaled by hand, the plain GEMM
    assert scale.item() == pytest.approx(orig.weight.abs().max().item() / 448, rel=1e-6)
    x = torch.randn(5, 64)
    with torch.inference_mode():
        want = F.linear(x, layer.weight.to(torch.float32) * scale, layer.bias)
        assert torch.equal(layer(x), want)
        assert rel_err(layer(x), orig(x)) < 0.05  # e4m3's 3 mantissa bits
    # under autograd (no shared scratch) the same values
    assert torch.equal(layer(x).detach(), want)


def test_dtype_moves_change_the_compute_dtype_not_the_codes():
    model = tiny_model()
    convert_to_fp8_storage(model)
    layer = model.transformer_blocks[0].attn1.to_q
    codes = layer.weight.detach().clone()
    model.to(torch.bfloat16)
    assert layer.weight.dtype == torch.float8_e4m3fn and layer.bias.dtype == torch.bfloat16
    assert torch.equal(layer.weight.view(torch.uint8), codes.view(torch.uint8))
    assert layer.weight_scale.dtype == torch.float32
    with torch.inference_mode():
        out = model(**tiny_inputs(dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_a_dtype_move_keeps_the_scale_unrounded():
    """The float32 scale survives ``model.to(bfloat16)`` with its value (``ltxcli.models.upcast.StoredLinear``), not
    rounded through bfloat16 and widened back."""
    model = tiny_model()
    convert_to_fp8_storage(model)
    layer = model.transformer_blocks[0].ff.net[2]
    scale = layer.weight_scale.clone()
    assert scale.to(torch.bfloat16).float() != scale  # a bf16 round trip would change it
    model.to(torch.bfloat16)
    assert layer.weight_scale.dtype == torch.float32 and torch.equal(layer.weight_scale, scale)


def test_only_the_block_linears_are_stored_in_fp8():
    model = tiny_model()
    names = convert_to_fp8_storage(model)
    assert len(names) == CFG.num_layers * (4 + 4 + 2) == len(fp8_storage_keys(model))
    stored = {n for n, m in model.named_modules() if isinstance(m, FP8StoredLinear)}
    assert stored == set(names)
    assert type(model.patchify_proj) is nn.Linear and model.patchify_proj.weight.dtype == torch.float32
    assert model.transformer_blocks[0].scale_shift_table.dtype == torch.float32


def test_tiny_transformer_equals_dequantised_weights_and_is_close_to_unquantised():
    model = tiny_model()
    inputs = tiny_inputs()
    with torch.inference_mode():
        ref = model(**inputs)
        convert_to_fp8_storage(model)
        out = model(**inputs)
        # independent reference: a plain float32 model holding codes * scale, dequantised by hand
        plain = tiny_model()
        for name in fp8_storage_keys(plain):
            layer = model.get_submodule(name.removesuffix(".weight"))
            plain.get_submodule(name.removesuffix(".weight")).weight.copy_(
                layer.weight.to(torch.float32) * layer.weight_scale)
        dequantised = plain(**inputs)
    err = rel_err(out, ref)
    print(f"tiny transformer, fp8-stored weights vs float32: rel err {err:.4f}")
    assert torch.equal(out, dequantised)  # widening + scaling per call is exactly the dequantised weight
    # e4m3 keeps 3 mantissa bits: each weight is off by up to 1/16 of itself (about 3 % rms per layer)
    assert torch.isfinite(out).all() and 0 < err < 5e-2


# every e4m3 code once: ±0, the subnormals, ±448, the NaN codes 0x7F and 0xFF
ALL_CODES = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn)


def _widen_both(codes: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(``widen_e4m3``'s float32 bits, the bits of torch's own ``codes.to(float32) * scale``: the reference)."""
    s = torch.tensor(scale, dtype=torch.float32)
    out = torch.full(codes.shape, 7.0)  # a stale scratch: every element must be written
    got = widen_e4m3(codes, s, out, torch.empty(codes.numel(), dtype=torch.int16))
    return got.view(torch.int32), (codes.to(torch.float32) * s).view(torch.int32)


@pytest.mark.parametrize("scale", [
    1.0, 0.02 / 448, -0.75, 0.0, -0.0,
    3e-39, 1e-45,  # float32 subnormal scales: products underflow to subnormals / zero
    1e36,  # products of the large codes overflow to ±inf
    2.0**121,  # scale * 2^8 overflows: torch's conversion for the whole tensor
    float("inf"), float("nan"),
])
def test_cpu_widening_is_torchs_conversion_for_every_code(scale, monkeypatch):
    monkeypatch.setattr(fp8_module, "WIDEN_CHUNK", 100)  # 6 slices, the last shorter: the slice bounds are exercised
    perm = torch.randperm(256, generator=torch.Generator().manual_seed(0))
    codes = ALL_CODES[perm.repeat(2)].view(16, 32)  # the codes in a shuffled order, twice
    got, want = _widen_both(codes, scale)
    assert torch.equal(got, want)


def test_cpu_widening_with_denormals_flushed():
    """``torch.set_flush_denormal(True)`` (FTZ/DAZ) changes nothing: no intermediate is a float32 denormal (the
    e4m3 subnormals are float16 subnormals, widened exactly; a route through float32 denormals would zero them)."""
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    try:
        for scale in (1.0, 0.02 / 448, -3.0):
            got, want = _widen_both(ALL_CODES, scale)
            assert torch.equal(got, want), scale
    finally:
        torch.set_flush_denormal(False)


def test_cpu_widening_any_scale():
    """300 float32 scales with random mantissas over the whole exponent range (subnormal to overflowing) and both
    signs; every finite code (the NaN codes are in the test above) against torch's own conversion."""
    g = torch.Generator().manual_seed(1)
    mantissa = (1 + torch.rand(300, generator=g, dtype=torch.float64)) * (torch.randint(0, 2, (300,), generator=g) * 2 - 1)
    scales = (mantissa * 2.0 ** torch.randint(-150, 128, (300,), generator=g).double()).float()
    finite = ALL_CODES.view(torch.uint8).bitwise_and(0x7F) != 0x7F
    codes = ALL_CODES[finite]
    for scale in scales.tolist():
        got, want = _widen_both(codes, scale)
        assert torch.equal(got, want), scale


def _stored_linear(seed: int, in_features: int, out_features: int) -> FP8StoredLinear:
    """A random ``nn.Linear`` as the one block linear of a model, converted to fp8 storage (the global RNG seeded)."""
    torch.manual_seed(seed)
    model = nn.Module()
    model.transformer_blocks = nn.ModuleList([nn.Module()])
    model.transformer_blocks[0].ff = nn.Linear(in_features, out_features)
    convert_to_fp8_storage(model)
    return model.transformer_blocks[0].ff


def test_cpu_float32_layer_does_not_use_torchs_float8_conversion(monkeypatch):
    """torch's CPU float8 -> float32 conversion is a scalar loop (about 10x bfloat16's widening time,
    BENCHMARKS.md): a CPU float32 layer reads its codes as integers only, with the same output."""
    layer = _stored_linear(5, 96, 48)
    x = torch.randn(3, 96)
    with torch.inference_mode():
        want = F.linear(x, layer.weight.to(torch.float32) * layer.weight_scale, layer.bias)
        conversions: list[str] = []

        def spy(name: str):
            method = getattr(torch.Tensor, name)

            def call(self, *args, **kwargs):
                if any(isinstance(t, torch.Tensor) and t.dtype == torch.float8_e4m3fn for t in (self, *args)):
                    conversions.append(name)
                return method(self, *args, **kwargs)
            return call

        for name in ("copy_", "to"):  # the two ways a float8 tensor gets converted to a float one
            monkeypatch.setattr(torch.Tensor, name, spy(name))
        got = layer(x)
        monkeypatch.undo()
    assert conversions == []
    assert torch.equal(got, want)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32)  # compares NaNs too, and their signs


def test_forward_checks_no_codes_in_the_loop(monkeypatch):
    """The widening route of a CPU layer (NaN codes? finite scale?) is decided when codes and scale are set (the
    conversion, a LoRA merge, its removal), not at every layer call inside the denoising loop: a forward never syncs
    with the host (no ``.item()``, no tensor truth test), and gives the bits of the same forward with torch's own
    float8 conversion."""
    from pathlib import Path

    from ltxcli.adapters.lora_merge import LoraFile, LoraLayer, merger_for

    model = tiny_model()
    convert_to_fp8_storage(model)
    inputs = tiny_inputs()
    ff = model.transformer_blocks[1].ff.net[2]
    g = torch.Generator().manual_seed(7)  # rank 2: down [2, in], up [out, 2]
    lora = LoraFile(Path("x.safetensors"), "comfyui", {"transformer_blocks.1.ff.net.2": LoraLayer(
        torch.randn(2, ff.in_features, generator=g), torch.randn(ff.out_features, 2, generator=g), 0.5)})

    def sync(self, *args, **kwargs):
        raise AssertionError("host sync in a forward")

    for stage in ("converted", "LoRA merged", "LoRA removed"):
        if stage == "LoRA merged":
            codes = ff.weight.detach().clone()
            merger_for(model).apply([(lora, 1.0)])
            assert not torch.equal(ff.weight.view(torch.uint8), codes.view(torch.uint8))  # new codes to check
        elif stage == "LoRA removed":
            merger_for(model).apply([])
        with monkeypatch.context() as m, torch.inference_mode():
            m.setattr(torch.Tensor, "item", sync)
            m.setattr(torch.Tensor, "__bool__", sync)
            got = model(**inputs)
        with monkeypatch.context() as m, torch.inference_mode():
            m.setattr(fp8_module, "widen_e4m3", lambda codes, scale, out, work, **_: out.copy_(codes).mul_(scale))
            want = model(**inputs)
        assert torch.equal(got, want), stage


def test_changed_codes_or_scale_are_checked_again():
    """A NaN code or a non-finite scale set after the layer was checked (in place or as a new tensor) still widens
    as torch converts it: NaN rows and overflowing products, not the integer route's finite ±480."""
    layer = _stored_linear(6, 32, 16)
    x = torch.randn(3, 32)

    def check() -> torch.Tensor:
        """The widened weight, compared bit for bit with torch's conversion, as is the layer's output."""
        weight = layer.weight.to(torch.float32) * layer.weight_scale
        with torch.inference_mode():
            assert torch.equal(_bits(layer.compute_weight()), _bits(weight))
            got = layer(x)
        assert torch.equal(_bits(got), _bits(F.linear(x, weight, layer.bias)))
        return weight

    assert torch.isfinite(check()).all()  # checked (and remembered) with finite codes and scale
    with torch.no_grad():
        layer.weight.view(torch.uint8)[2, 5] = 0x7F  # a NaN code, written in place
    assert torch.isnan(check()[2, 5])
    with torch.no_grad():
        layer.weight.view(torch.uint8)[2, 5] = 0x00
    assert torch.isfinite(check()).all()
    with torch.no_grad():
        layer.weight_scale.fill_(2.0**121)  # in place: scale * 2^8 overflows float32, the products do not all
    assert torch.isinf(check()).any() and torch.isfinite(check()).any()
    layer.weight_scale = torch.tensor(float("inf"))  # a new tensor
    assert not torch.isfinite(check()).all()
    layer.weight_scale = torch.tensor(0.01)
    assert torch.isfinite(check()).all()


def test_new_codes_at_the_old_codes_address_are_checked_again():
    """A new codes tensor whose memory and version counter equal the checked one's (an allocator that hands a
    freed block out again gives that) is a change: it is checked, not taken for the old codes."""
    layer = _stored_linear(6, 32, 16)
    x = torch.randn(3, 32)
    old = layer.weight
    with torch.no_grad():
        old.view(torch.uint8).add_(0)  # version 1: what the new tensor's set_ gives it
    with torch.inference_mode():
        layer(x)  # checked with finite codes, and remembered
    codes = old.detach().clone()
    codes.view(torch.uint8)[2, 5] = 0x7F  # a NaN code
    storage = old.untyped_storage()
    storage.copy_(codes.untyped_storage())  # the new codes, in the old memory
    new = torch.empty(0, dtype=old.dtype).set_(storage, 0, old.shape, old.stride())
    assert (new.data_ptr(), new._version) == (old.data_ptr(), old._version)  # the same key as the old codes'
    layer.weight = nn.Parameter(new, requires_grad=False)
    del old
    weight = layer.weight.to(torch.float32) * layer.weight_scale
    assert torch.isnan(weight[2, 5])
    with torch.inference_mode():
        assert torch.equal(_bits(layer.compute_weight()), _bits(weight))


@pytest.mark.parametrize("fault", ["nan code", "inf scale"])
def test_a_broken_stored_weight_is_refused_after_denoising(fault):
    """A NaN code or an infinite scale set after loading is refused where any NaN weight is: the latents check after
    the denoising loop, with its usual message."""
    from ltxcli.frames import NumericalError

    pipe = load_pipeline("tiny", device="cpu", weights_dtype="fp8", download=False)
    layer = pipe.transformer.transformer_blocks[0].ff.net[2]  # its output goes straight into the residual stream
    assert isinstance(layer, FP8StoredLinear) and layer.bias.dtype == torch.float32
    with torch.no_grad():
        if fault == "nan code":
            layer.weight.view(torch.uint8)[0, 0] = 0xFF
        else:
            layer.weight_scale.fill_(float("inf"))
    with pytest.raises(NumericalError, match="the latents contain NaN or Inf after denoising: the checkpoint may be"):
        pipe.generate("a cat", height=64, width=64, num_frames=9, steps=2, seed=1)


def test_memory_plan_counts_the_widening_work_buffer():
    """The plan's scratch figure is what the shared scratch grows to in a CPU forward: the largest widened weight
    in float32 and the int16 work buffer of the CPU widening."""
    model = tiny_model()
    convert_to_fp8_storage(model)
    with torch.inference_mode():
        model(**tiny_inputs())
    assert scratch_bytes(model) == upcast_scratch(model).nbytes() > 0


def test_matches_fp8_matmul_layers_weight_quantisation():
    """The stored codes and scales are those --dtype fp8 (FP8Linear) would hold for the same weights."""
    a, b = tiny_model(), tiny_model()
    convert_to_fp8_storage(a)
    convert_to_fp8(b, dtype=torch.float32)
    la, lb = a.transformer_blocks[2].ff.net[2], b.transformer_blocks[2].ff.net[2]
    assert isinstance(lb, FP8Linear)
    assert torch.equal(la.weight.view(torch.uint8), lb.weight.view(torch.uint8))
    assert torch.equal(la.weight_scale, lb.weight_scale)


@pytest.fixture(scope="module")
def bf16_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fp8s") / "bf16.safetensors"
    storage_checkpoint(path, seed=4)
    return path


@pytest.mark.parametrize("narrow", [True, False])
def test_loader_quantises_while_reading(bf16_file, narrow):
    wide = load_transformer(bf16_file, dtype=torch.float32, keep_checkpoint_dtype=narrow)
    fp8 = load_transformer(bf16_file, dtype=torch.float32, keep_checkpoint_dtype=narrow, weights_fp8=True)
    layer = fp8.transformer_blocks[1].attn2.to_k
    assert type(layer) is FP8StoredLinear and layer.bias.dtype == torch.float32
    # the same codes as quantising the loaded bf16 weight after the fact
    again = load_transformer(bf16_file, dtype=torch.float32, keep_checkpoint_dtype=narrow)
    convert_to_fp8_storage(again)
    ref = again.transformer_blocks[1].attn2.to_k
    assert torch.equal(layer.weight.view(torch.uint8), ref.weight.view(torch.uint8))
    assert torch.equal(layer.weight_scale, ref.weight_scale)
    # the non-block linears as the loader leaves them otherwise
    assert type(fp8.patchify_proj) is (UpcastLinear if narrow else nn.Linear)
    inputs = tiny_inputs()
    with torch.inference_mode():
        assert rel_err(fp8(**inputs), wide(**inputs)) < 5e-2


def test_fp8_checkpoint_kept_as_stored(tmp_path):
    path = tmp_path / "fp8.safetensors"
    model = storage_checkpoint(path, seed=5, fp8=True)  # an fp8 file: block linears e4m3, the rest bf16
    loaded = load_transformer(path, dtype=torch.bfloat16, weights_fp8=True, keep_checkpoint_dtype=False)
    layer = loaded.transformer_blocks[0].ff.net[0].proj
    stored = model.transformer_blocks[0].ff.net[0].proj.weight
    assert type(layer) is FP8StoredLinear and layer.weight_scale.item() == 1.0
    assert torch.equal(layer.weight.view(torch.uint8), stored.view(torch.uint8))


def test_resident_bytes_half_of_bfloat16_kept():
    """The tiny model's block linears dominate less than the 2B's (benchmarks/fp8_storage.py measures that);
    the stored linear weights themselves take exactly half."""
    kept = tiny_model()
    kept = kept.to(torch.bfloat16)
    for m in kept.modules():  # bf16-kept: layer weights bf16, everything else float32, as the CPU loader leaves it
        for name, p in list(m.named_parameters(recurse=False)):
            if not (isinstance(m, nn.Linear) and name == "weight"):
                setattr(m, name, nn.Parameter(p.detach().float(), requires_grad=False))
    convert_to_upcast(kept)
    fp8 = tiny_model()
    for m in fp8.modules():
        if isinstance(m, nn.Linear):
            m.weight = nn.Parameter(m.weight.detach().to(torch.bfloat16), requires_grad=False)
    convert_to_upcast(fp8)
    convert_to_fp8_storage(fp8)
    block_keys = set(fp8_storage_keys(fp8))
    bf16_block = sum(t.nbytes for k, t in kept.state_dict().items() if k in block_keys)
    fp8_block = sum(t.nbytes for k, t in fp8.state_dict().items() if k in block_keys)
    assert fp8_block * 2 == bf16_block
    assert held_bytes(fp8) < held_bytes(kept)
    assert stored_weight_bytes(fp8)[0] == stored_weight_bytes(kept)[0]


def test_load_pipeline_weights_dtype(tmp_path):
    assert weights_fp8("fp8") and weights_fp8("float8_e4m3fn") and not weights_fp8(None) and not weights_fp8("auto")
    with pytest.raises(ValueError, match="unknown weights dtype 'int4'"):
        weights_fp8("int4")
    with pytest.raises(ValueError, match="unknown weights dtype"):
        load_pipeline("tiny", device="cpu", weights_dtype="int4", download=False)
    pipe = load_pipeline("tiny", device="cpu", weights_dtype="fp8", download=False)
    stored = [m for m in pipe.transformer.modules() if isinstance(m, FP8StoredLinear)]
    assert len(stored) == len(fp8_storage_keys(pipe.transformer)) > 0
    plain = load_pipeline("tiny", device="cpu", download=False)
    r = dataclasses.asdict(pipe.transformer.config) == dataclasses.asdict(plain.transformer.config)
    assert r
    a = pipe.generate("a cat", height=64, width=64, num_frames=9, steps=2, seed=1)
    b = plain.generate("a cat", height=64, width=64, num_frames=9, steps=2, seed=1)
    err = rel_err(a.video, b.video)
    print(f"tiny pipeline, fp8-stored vs float32 weights: video rel err {err:.4f}")
    assert 0 < err < 5e-2


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    from cli_harness import enter_cli_env, memoised_loader

    return enter_cli_env(tmp_path, monkeypatch, memoised_loader())


def test_cli_weights_dtype_fp8(cli_env):
    """`ltx generate --weights-dtype fp8`; an unknown value is one line and exit 2. In process (cli_harness), where
    two subprocesses only added their start-ups."""
    import json

    from cli_harness import ltx

    base = ["generate", "a cat", "--model", "tiny", "--height", "64", "--width", "64", "--num-frames", "9", "--steps",
            "1", "--seed", "1"]
    bad = ltx(*base, "--weights-dtype", "int4", "-o", str(cli_env / "x.mp4"))
    assert bad.exit_code == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "unknown weights dtype 'int4' (use auto, fp8 or int8)" in bad.stderr
    out = cli_env / "o.mp4"
    ok = ltx(*base, "--weights-dtype", "fp8", "-o", str(out), "--json")
    assert ok.exit_code == 0, ok.stderr
    record = json.loads(ok.stdout.strip().splitlines()[-1])
    assert out.exists() and record["kernels"]["upcast_layers"] > 0, record
