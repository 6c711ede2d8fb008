"""Kernel selection, float8 linear layers and per-block compilation (``ltxcli.kernels``, ``ltxcli.models.fp8``,
``ltxcli.models.attention_kernels``).

Selection is pure, so every GPU generation is tested here with a faked compute capability and installed set;
the expected choices are the rules of the issue, written out by hand. The float8 maths is checked against
hand-rounded e4m3 values and a float reference; the compile path against eager. What needs a GPU (the cuBLASLt
fp8 GEMM, the FlashAttention kernels, inductor with triton, host-sync checks) is skipped with its reason.
Run with ``-s`` to see the measured errors.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil

import pytest
import torch
from tiny_models import one_thread, randomise_normal  # noqa: F401  (one_thread: module autouse fixture)
from torch import nn

from ltxcli import kernels as K
from ltxcli.kernels import (
    CompileConfig,
    compile_blocks,
    fp8_supported,
    fp8_unavailable_reason,
    select_attention_backend,
    set_attention_backend,
)
from ltxcli.loading import load_transformer, save_official_checkpoint
from ltxcli.models import attention_kernels
from ltxcli.models.attention import attention
from ltxcli.models.attention_kernels import AttentionBackend, KernelUnavailableError
from ltxcli.models.configs import TransformerConfig
from ltxcli.models.fp8 import FP8Linear, convert_to_fp8, quantize_e4m3
from ltxcli.models.transformer import LTXVideoTransformer
from ltxcli.models.upcast import UpcastLinear

A = AttentionBackend
ALL = {"flash3", "flash2", "sage"}
# every width a multiple of 16 (fp8 GEMMs need it); 2 heads x 16
CFG = TransformerConfig(
    num_attention_heads=2, attention_head_dim=16, num_layers=3, in_channels=16, out_channels=16,
    cross_attention_dim=32, caption_channels=48,
)
BATCH, TEXT = 2, 5
CUDA = torch.cuda.is_available()
CAP = torch.cuda.get_device_capability() if CUDA else None
SLOW = os.environ.get("LTX_SLOW_TESTS") == "1"




def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype and bytes (torch.equal has no float8 kernel)."""
    if a.dtype != b.dtype:
        return False
    if a.itemsize == 1:
        a, b = a.view(torch.uint8), b.view(torch.uint8)
    return torch.equal(a, b)


def tiny_model(seed: int = 1, layers: int = 3) -> LTXVideoTransformer:
    torch.manual_seed(0)
    model = LTXVideoTransformer(dataclasses.replace(CFG, num_layers=layers)).eval().requires_grad_(False)
    randomise_normal(model, seed)
    return model


def tiny_inputs(
    n_tok: int = 12, seed: int = 2, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    inputs = {
        "hidden_states": torch.randn(BATCH, n_tok, CFG.in_channels, generator=gen),
        "encoder_hidden_states": torch.randn(BATCH, TEXT, CFG.caption_channels, generator=gen),
        "timestep": torch.rand(BATCH, 1, generator=gen),
        "indices_grid": torch.rand(BATCH, 3, n_tok, generator=gen) * 8,
        # element 0 has two padded text tokens
        "encoder_attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]),
    }
    for key in ("hidden_states", "encoder_hidden_states"):  # the pipeline passes these in the model dtype
        inputs[key] = inputs[key].to(dtype)
    return {k: v.to(device) for k, v in inputs.items()}


def reference_attention(q, k, v, heads, mask):
    """softmax(q kᵀ / sqrt(d) + mask) v in float64, written out."""
    b, nq, dim = q.shape
    d = dim // heads
    qh, kh, vh = (t.double().reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(d)
    if mask is not None:
        scores = scores + mask.double()
    return (scores.softmax(-1) @ vh).transpose(1, 2).reshape(b, nq, dim)


# --- attention backend selection -------------------------------------------------------------------------------

# (device, capability, installed, dtype) -> (self-attention, cross-attention) for "auto"
AUTO_TABLE = [
    ("cpu", None, set(), None, A.SDPA, A.SDPA),
    ("cpu", None, ALL, torch.bfloat16, A.SDPA, A.SDPA),
    ("mps", None, ALL, None, A.SDPA, A.SDPA),
    ("cuda", None, ALL, None, A.SDPA, A.SDPA),  # capability unknown
    ("cuda", (7, 0), ALL, None, A.SDPA, A.SDPA),  # V100: no FA2
    ("cuda", (7, 5), ALL, None, A.SDPA, A.SDPA),  # T4
    ("cuda", (8, 0), set(), None, A.SDPA, A.SDPA),  # A100 without packages
    ("cuda", (8, 0), {"flash2"}, None, A.FLASH2, A.SDPA),
    ("cuda", (8, 0), {"flash3"}, None, A.SDPA, A.SDPA),  # FA3 is Hopper-only
    ("cuda", (8, 0), {"sage"}, None, A.SDPA, A.SDPA),  # Sage is approximate: never automatic
    ("cuda", (8, 0), ALL, None, A.FLASH2, A.SDPA),
    ("cuda", (8, 6), {"flash2"}, torch.bfloat16, A.FLASH2, A.SDPA),
    ("cuda", (8, 9), {"flash2"}, None, A.FLASH2, A.SDPA),  # L40S / 4090
    ("cuda", (8, 9), {"flash3", "sage"}, None, A.SDPA, A.SDPA),
    ("cuda", (9, 0), set(), None, A.SDPA, A.SDPA),  # H100 without FA3: cuDNN / flash SDPA
    ("cuda", (9, 0), {"flash2"}, None, A.SDPA, A.SDPA),
    ("cuda", (9, 0), {"flash3"}, None, A.FLASH3, A.SDPA),
    ("cuda", (9, 0), ALL, torch.bfloat16, A.FLASH3, A.SDPA),
    ("cuda", (10, 0), ALL, None, A.SDPA, A.SDPA),  # B200: no FA3 build
    ("cuda", (12, 0), ALL, None, A.SDPA, A.SDPA),  # RTX 5090
    ("cuda", (9, 0), ALL, torch.float32, A.SDPA, A.SDPA),  # flash kernels are half precision only
    ("cuda", (8, 0), ALL, torch.float32, A.SDPA, A.SDPA),
]


@pytest.mark.parametrize(("device", "cap", "installed", "dtype", "self_k", "cross_k"), AUTO_TABLE)
def test_auto_selection_table(device, cap, installed, dtype, self_k, cross_k):
    got = select_attention_backend("auto", device_type=device, capability=cap, available=installed, dtype=dtype)
    assert (got.requested, got.self_attention, got.cross_attention) == (A.AUTO, self_k, cross_k)
    assert got.describe()["self_attention"] == self_k.value and got.reason


# (backend, device, capability, installed) explicit choices that can run -> self-attention, cross-attention
EXPLICIT_OK = [
    ("flash3", "cuda", (9, 0), {"flash3"}, A.FLASH3, A.SDPA),
    ("flash2", "cuda", (8, 0), {"flash2"}, A.FLASH2, A.SDPA),
    ("flash2", "cuda", (9, 0), {"flash2"}, A.FLASH2, A.SDPA),
    ("flash2", "cuda", (12, 0), {"flash2"}, A.FLASH2, A.SDPA),
    ("sage", "cuda", (8, 9), {"sage"}, A.SAGE, A.SDPA),
    ("sdpa", "cuda", (7, 0), set(), A.SDPA, A.SDPA),
    ("sdpa", "cpu", None, set(), A.SDPA, A.SDPA),
    ("math", "cpu", None, set(), A.MATH, A.MATH),
    ("math", "cuda", (9, 0), ALL, A.MATH, A.MATH),
]


@pytest.mark.parametrize(("name", "device", "cap", "installed", "self_k", "cross_k"), EXPLICIT_OK)
def test_explicit_choice_that_can_run(name, device, cap, installed, self_k, cross_k):
    got = select_attention_backend(name, device_type=device, capability=cap, available=installed)
    assert (got.self_attention, got.cross_attention) == (self_k, cross_k)
    # masks go to a backend that takes them
    assert got.cross_attention in (A.SDPA, A.MATH)


EXPLICIT_ERRORS = [
    ("flash3", "cuda", (8, 6), ALL, None,
     "flash3 needs the flash_attn_interface package (FlashAttention-3) and a Hopper GPU (compute capability 9.x); "
     "found compute capability 8.6, flash_attn_interface installed"),
    ("flash3", "cuda", (9, 0), {"flash2"}, None,
     "flash3 needs the flash_attn_interface package (FlashAttention-3) and a Hopper GPU (compute capability 9.x); "
     "found compute capability 9.0, flash_attn_interface not installed"),
    ("flash3", "cuda", (10, 0), ALL, None, "found compute capability 10.0, flash_attn_interface installed"),
    ("flash3", "cpu", None, ALL, None, "found no CUDA device (cpu), flash_attn_interface installed"),
    ("flash2", "cuda", (7, 5), ALL, None,
     "flash2 needs the flash_attn package (FlashAttention-2) and an NVIDIA GPU with compute capability 8.0+ "
     "(Ampere or newer); found compute capability 7.5, flash_attn installed"),
    ("flash2", "cuda", (8, 0), set(), None, "found compute capability 8.0, flash_attn not installed"),
    ("flash2", "mps", None, ALL, None, "found no CUDA device (mps)"),
    ("sage", "cuda", (7, 0), ALL, None, "sage needs the sageattention package (SageAttention)"),
    ("sage", "cuda", (9, 0), {"flash3"}, None, "sageattention not installed"),
    ("flash2", "cuda", (8, 0), ALL, torch.float32,
     "flash2 runs in bfloat16 or float16 only; the model runs in float32 (use bfloat16 or sdpa)"),
]


@pytest.mark.parametrize(("name", "device", "cap", "installed", "dtype", "message"), EXPLICIT_ERRORS)
def test_explicit_unavailable_choice_is_a_one_line_error(name, device, cap, installed, dtype, message):
    with pytest.raises(KernelUnavailableError) as err:
        select_attention_backend(name, device_type=device, capability=cap, available=installed, dtype=dtype)
    text = str(err.value)
    assert message in text and "\n" not in text
    assert isinstance(err.value, RuntimeError)


def test_unknown_backend_name():
    with pytest.raises(ValueError, match=r"unknown attention backend 'xformers' \(choose auto, sdpa, flash3"):
        select_attention_backend("xformers", device_type="cpu", capability=None, available=set())


def test_resolve_on_this_machine_and_describe_is_json():
    got = K.resolve_attention_backend("auto", "cpu")
    assert (got.self_attention, got.cross_attention) == (A.SDPA, A.SDPA)
    info = K.describe_kernels("cpu", attention="flash3")
    json.dumps(info)
    assert info["attention"]["error"].startswith("flash3 needs the flash_attn_interface package")
    assert set(info["attention_kernels"]) == ALL
    assert info["fp8"]["supported"] is False and info["device"] == "cpu"
    assert set(info["compile"]) == {"available", "detail"}


# --- attention dispatch ------------------------------------------------------------------------------------------


@pytest.fixture()
def qkv():
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(BATCH, 7, 32, generator=gen)
    k = torch.randn(BATCH, TEXT, 32, generator=gen)
    v = torch.randn(BATCH, TEXT, 32, generator=gen)
    mask = torch.tensor([[0.0, 0.0, 0.0, -10000.0, -10000.0], [0.0] * 5])[:, None, None, :]
    return q, k, v, mask


def test_sdpa_and_math_match_the_written_out_formula(qkv):
    q, k, v, mask = qkv
    ref = reference_attention(q, k, v, 2, mask)
    for backend in (A.SDPA, A.MATH, "math"):
        err = rel_err(attention(q, k, v, 2, mask, backend), ref)
        print(f"{backend}: rel err vs written-out softmax {err:.2e}")
        assert err < 1e-6
    assert rel_err(attention(q, k, v, 2, mask), ref) < 1e-6  # the old 5-argument call


def test_maskless_kernels_refuse_a_mask_and_auto_must_be_resolved(qkv):
    q, k, v, mask = qkv
    with pytest.raises(ValueError, match="takes no mask"):
        attention(q, k, v, 2, mask, A.FLASH3)
    with pytest.raises(ValueError, match="must be resolved"):
        attention(q, k, v, 2, None, A.AUTO)


class FakeKernel:
    """Stands in for a flash kernel: takes [B, N, H, d] and computes exact attention, counting calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, q, k, v):
        assert q.ndim == 4 and q.stride(-1) == 1
        self.calls.append(tuple(q.shape))
        b, n, h, d = q.shape
        out = reference_attention(q.flatten(2), k.flatten(2), v.flatten(2), h, None)
        return out.reshape(b, n, h, d).to(q.dtype)


@pytest.fixture()
def fake_flash3(monkeypatch):
    fake = FakeKernel()
    monkeypatch.setitem(attention_kernels._KERNELS, A.FLASH3, fake)
    return fake


def test_external_kernel_gets_the_nhd_layout(qkv, fake_flash3):
    q, _, _, _ = qkv
    out = attention(q, q, q, 2, None, A.FLASH3)
    assert fake_flash3.calls == [(BATCH, 7, 2, 16)]
    assert rel_err(out, reference_attention(q, q, q, 2, None)) < 1e-6


def test_backend_is_per_model_and_routes_self_attention_only(fake_flash3):
    inputs = tiny_inputs()
    flash_model, sdpa_model = tiny_model(), tiny_model()
    hopper = select_attention_backend("auto", device_type="cuda", capability=(9, 0), available={"flash3"})
    set_attention_backend(flash_model, hopper)
    assert sdpa_model.transformer_blocks[0].attn1.attention_kernel is A.SDPA
    assert K.describe_model(flash_model)["attention"]["self_attention"] == "flash3"
    with torch.no_grad():
        ref = sdpa_model(**inputs)
        assert not fake_flash3.calls
        out = flash_model(**inputs)
    # one self-attention call per block, with the latent token count; cross-attention (masked) never
    assert fake_flash3.calls == [(BATCH, 12, 2, 16)] * CFG.num_layers
    err = rel_err(out, ref)
    print(f"fake flash3 routing vs sdpa: rel err {err:.2e}")
    assert err < 1e-5


def test_tiny_transformer_sdpa_vs_math():
    inputs = tiny_inputs()
    model = tiny_model()
    with torch.no_grad():
        sdpa = model(**inputs)
        assert set_attention_backend(model, "math").self_attention is A.MATH
        math_out = model(**inputs)
    err = rel_err(sdpa, math_out)
    print(f"tiny transformer sdpa vs math: rel err {err:.2e}")
    assert err < 1e-6


def test_set_attention_backend_refuses_unavailable_kernels():
    model = tiny_model()
    with pytest.raises(KernelUnavailableError, match="found no CUDA device"):
        set_attention_backend(model, "flash2")
    assert model.transformer_blocks[0].attn1.attention_kernel is A.SDPA  # unchanged


# --- float8 ------------------------------------------------------------------------------------------------------

FP8_TABLE = [(None, False), ((7, 0), False), ((8, 0), False), ((8, 6), False), ((8, 9), True), ((9, 0), True),
             ((10, 0), True), ((12, 0), True)]


@pytest.mark.parametrize(("cap", "ok"), FP8_TABLE)
def test_fp8_support_by_capability(cap, ok):
    assert fp8_supported(cap) is ok
    reason = fp8_unavailable_reason("cuda", cap, "NVIDIA A100")
    assert (reason is None) is ok
    if not ok:
        assert reason.startswith("--dtype fp8 needs an NVIDIA GPU with compute capability 8.9+ (Ada, Hopper")
        assert "\n" not in reason


def test_require_fp8_on_cpu():
    assert fp8_unavailable_reason("cuda", (8, 6), "NVIDIA RTX A6000").endswith(
        "this device is NVIDIA RTX A6000, compute capability 8.6")
    with pytest.raises(KernelUnavailableError, match=r"8\.9\+ .*; this device is cpu$"):
        K.require_fp8("cpu")


def test_generating_commands_name_the_one_byte_storage_where_fp8_matmuls_cannot_run(monkeypatch):
    """A GPU below 8.9 (an A100 here, its capability faked): `ltx generate --dtype fp8` names --weights-dtype,
    which runs there; a GPU of 8.9+ passes the check."""
    from ltxcli import job

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(K, "_capability", lambda dev: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "NVIDIA A100")
    monkeypatch.setattr(K, "resolve_attention_backend", lambda *a, **k: None)
    settings = job.JobSettings(model="tiny", dtype="fp8")
    with pytest.raises(KernelUnavailableError) as err:
        job.check_kernels(settings, torch.device("cuda"))
    assert str(err.value) == ("--dtype fp8 needs an NVIDIA GPU with compute capability 8.9+ (Ada, Hopper, Blackwell); "
                              "this device is NVIDIA A100, compute capability 8.0 (--weights-dtype int8 or fp8 stores "
                              "the weights in one byte on any device)")
    monkeypatch.setattr(K, "_capability", lambda dev: (8, 9))
    job.check_kernels(settings, torch.device("cuda"))


def test_quantize_e4m3_by_hand():
    # amax 896 -> scale 896/448 = 2; 2.125/2 = 1.0625 lies halfway between the e4m3 values 1.0 and 1.125
    # (3 mantissa bits) and rounds to even (1.0); 0.6/2 = 0.3 lies in [0.25, 0.5) where the step is
    # 0.25/8 = 0.03125, so it rounds to 0.3125; -1/2 is exact.
    codes, scale = quantize_e4m3(torch.tensor([896.0, 2.125, 0.6, 0.0, -1.0]))
    assert codes.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32 and scale.ndim == 0
    assert scale.item() == 2.0
    assert codes.float().tolist() == [448.0, 1.0, 0.3125, 0.0, -0.5]
    # a fixed scale saturates at ±448 instead of overflowing to NaN
    codes, _ = quantize_e4m3(torch.tensor([1000.0, -1000.0]), torch.tensor(1.0))
    assert codes.float().tolist() == [448.0, -448.0]
    codes, scale = quantize_e4m3(torch.zeros(4))
    assert codes.float().tolist() == [0.0] * 4 and scale.item() > 0


def _linear(seed: int = 4, bias: bool = True) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(64, 48, bias=bias).requires_grad_(False)


def test_fp8_linear_from_wide_weights():
    lin = _linear()
    fp8 = FP8Linear.from_linear(lin, dtype=torch.float32)
    w = lin.weight
    assert fp8.weight.dtype == torch.float8_e4m3fn and fp8.bias.dtype == torch.float32
    assert fp8.weight_scale.item() == pytest.approx(w.abs().max().item() / 448, rel=1e-6)
    deq = fp8.weight.float() * fp8.weight_scale
    # e4m3 rounding: relative 2^-4 for normal values, absolute 2^-10 * scale for subnormal ones
    bound = w.abs() * 2**-4 + fp8.weight_scale * 2**-10
    assert ((deq - w).abs() <= bound).all()
    assert set(fp8.state_dict()) == {"weight", "bias"}


def test_fp8_linear_reference_path_vs_float():
    torch.manual_seed(5)
    lin = _linear()
    fp8 = FP8Linear.from_linear(lin, dtype=torch.float32)
    x = torch.randn(3, 10, 64)
    err = rel_err(fp8.forward_reference(x), lin(x))
    print(f"fp8 linear (dequantised path) vs float32 linear: rel err {err:.3f}")
    assert err < 0.06  # two e4m3 roundings (≤ 2^-4 each, ~2^-6 rms) averaged over K=64


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
def test_fp8_linear_scaled_mm_matches_reference(dtype, bias):
    """The ``torch._scaled_mm`` path on this CPU (torch >= 2.6 has a CPU kernel) against the dequantised one."""
    torch.manual_seed(6)
    fp8 = FP8Linear.from_linear(_linear(bias=bias), dtype=dtype)
    x = torch.randn(2, 9, 64).to(dtype)  # M = 18: no multiple of 16 needed for the activation rows
    try:
        out = fp8(x)
    except (RuntimeError, NotImplementedError) as exc:  # pragma: no cover - older torch
        pytest.skip(f"torch._scaled_mm has no CPU kernel in torch {torch.__version__}: {exc}")
    ref = fp8.forward_reference(x)
    assert out.dtype == dtype and out.shape == (2, 9, 48)
    err = rel_err(out, ref)
    print(f"_scaled_mm (CPU, {dtype}) vs dequantised reference: rel err {err:.2e}")
    assert err < (4e-3 if dtype == torch.bfloat16 else 1e-6)


def test_fp8_linear_needs_multiples_of_16():
    with pytest.raises(ValueError, match="divisible by 16"):
        FP8Linear(20, 32)


BLOCK_LINEARS = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                 "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2"]


def test_convert_to_fp8_swaps_exactly_the_block_linears():
    model = tiny_model()
    keys = {k: v.shape for k, v in model.state_dict().items()}
    swapped = convert_to_fp8(model, dtype=torch.bfloat16)
    assert swapped == [f"transformer_blocks.{i}.{n}" for i in range(CFG.num_layers) for n in BLOCK_LINEARS]
    assert {k: v.shape for k, v in model.state_dict().items()} == keys  # official key names and shapes
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            assert not name.startswith("transformer_blocks.")  # patchify_proj, adaLN, caption, proj_out
    for key, t in model.state_dict().items():
        is_fp8_weight = key.endswith(".weight") and key.removesuffix(".weight").split(".", 2)[-1] in BLOCK_LINEARS
        assert t.dtype == (torch.float8_e4m3fn if is_fp8_weight else torch.bfloat16), key
    assert K.describe_model(model)["fp8_linear_layers"] == 10 * CFG.num_layers


def test_fp8_state_dict_round_trip_keeps_e4m3_weights_bit_for_bit():
    """An official-style fp8 state dict (block linear weights in e4m3, the rest bf16) loads strictly into a
    converted model, keeps unit scales, and comes back unchanged."""
    source = tiny_model(seed=7)
    convert_to_fp8(source, dtype=torch.bfloat16)
    official = {k: v.clone() for k, v in source.state_dict().items()}
    target = tiny_model(seed=8)
    convert_to_fp8(target, dtype=torch.bfloat16)
    target.load_state_dict(official, strict=True)
    for key, t in target.state_dict().items():
        assert same_bits(t, official[key]), key
    # e4m3 weights wrapped as they are: unit scale, same bytes
    again = FP8Linear.from_linear(_as_linear(target.transformer_blocks[0].attn1.to_q))
    assert again.weight_scale.item() == 1.0
    assert same_bits(again.weight, target.transformer_blocks[0].attn1.to_q.weight)


def test_fp8_layers_survive_module_dtype_casts():
    model = tiny_model()
    convert_to_fp8(model, dtype=torch.float32)
    to_k = model.transformer_blocks[2].attn2.to_k
    codes, scale = to_k.weight.view(torch.uint8).clone(), to_k.weight_scale.clone()
    model.to(torch.bfloat16)
    assert to_k.weight.dtype == torch.float8_e4m3fn and torch.equal(to_k.weight.view(torch.uint8), codes)
    assert to_k.weight_scale.dtype == torch.float32 and torch.equal(to_k.weight_scale, scale)
    assert to_k.bias.dtype == torch.bfloat16 and model.patchify_proj.weight.dtype == torch.bfloat16


def _as_linear(fp8: FP8Linear) -> nn.Linear:
    with torch.device("meta"):
        lin = nn.Linear(fp8.in_features, fp8.out_features)
    lin.weight = nn.Parameter(fp8.weight.detach(), requires_grad=False)
    lin.bias = nn.Parameter(fp8.bias.detach(), requires_grad=False)
    return lin


def test_fp8_transformer_close_to_float():
    inputs = tiny_inputs()
    model = tiny_model()
    with torch.no_grad():
        ref = model(**inputs)
        convert_to_fp8(model, dtype=torch.float32)
        out = model(**inputs)
        for m in model.modules():
            if isinstance(m, FP8Linear):
                m.use_scaled_mm = False
        out_ref_path = model(**inputs)
    err, err_path = rel_err(out, ref), rel_err(out_ref_path, out)
    print(f"tiny transformer fp8 vs float32: rel err {err:.3f}; _scaled_mm vs dequantised path {err_path:.1e}")
    assert torch.isfinite(out).all()
    assert err < 0.1
    assert err_path < 1e-5


def _fp8_checkpoint(tmp_path, *, all_2d: bool) -> tuple[str, dict[str, torch.Tensor]]:
    model = tiny_model(seed=9)
    convert_to_fp8(model, dtype=torch.bfloat16)
    sd = dict(model.state_dict())
    if all_2d:  # like an fp8 file that also stores the non-block matrices in fp8
        sd = {k: (v.to(torch.float8_e4m3fn) if v.ndim == 2 else v) for k, v in sd.items()}
    path = tmp_path / "fp8.safetensors"
    from ltxcli.safetensors_io import save_file

    save_file({f"model.diffusion_model.{k}": v for k, v in sd.items()}, str(path),
              metadata={"config": json.dumps({"transformer": CFG.to_official()})})
    return str(path), sd


@pytest.mark.parametrize("all_2d", [False, True])
def test_load_transformer_keep_fp8(tmp_path, all_2d):
    path, sd = _fp8_checkpoint(tmp_path, all_2d=all_2d)
    model = load_transformer(path, keep_fp8=True)
    q = model.transformer_blocks[1].attn2.to_q
    assert isinstance(q, FP8Linear) and q.weight_scale.item() == 1.0
    stored = sd["transformer_blocks.1.attn2.to_q.weight"]
    assert same_bits(q.weight, stored)  # never upcast
    assert model.patchify_proj.weight.dtype == torch.bfloat16 and type(model.patchify_proj) is nn.Linear
    assert model.transformer_blocks[0].scale_shift_table.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.isfinite(model(**tiny_inputs(dtype=torch.bfloat16))).all()
    # without keep_fp8 the same file is upcast: at load with keep_checkpoint_dtype=False ...
    plain = load_transformer(path, keep_checkpoint_dtype=False)
    assert plain.transformer_blocks[1].attn2.to_q.weight.dtype == torch.bfloat16
    assert type(plain.transformer_blocks[1].attn2.to_q) is nn.Linear
    # ... or per call (the CPU default): e4m3 kept as stored, same outputs bit for bit
    lazy = load_transformer(path)
    to_q = lazy.transformer_blocks[1].attn2.to_q
    assert type(to_q) is UpcastLinear and same_bits(to_q.weight, stored) and to_q.bias.dtype == torch.bfloat16
    with torch.no_grad():
        inp = tiny_inputs(dtype=torch.bfloat16)
        assert same_bits(lazy(**inp), plain(**inp))


def test_load_transformer_keep_fp8_quantises_wide_checkpoints(tmp_path):
    path = tmp_path / "bf16.safetensors"
    save_official_checkpoint(path, transformer=tiny_model(seed=10).to(torch.bfloat16))
    model = load_transformer(path, keep_fp8=True)
    to_v = model.transformer_blocks[0].attn1.to_v
    assert isinstance(to_v, FP8Linear) and to_v.weight_scale.item() != 1.0


# --- compile -----------------------------------------------------------------------------------------------------


def test_compile_config_and_timing_helper():
    with pytest.raises(ValueError, match="unknown compile mode 'fast'"):
        CompileConfig(mode="fast")
    ticks = iter([0.0, 5.0, 5.0, 6.0, 6.0, 7.5, 7.5, 8.5])  # first call 5 s, then 1, 1.5, 1 s
    timing = K.warmup_and_time(lambda: None, iters=3, clock=lambda: next(ticks))
    assert timing == K.CompileTiming(compile_s=4.0, steady_s=1.0, first_s=5.0)


def _graph_count() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _check_compiled_blocks(config: CompileConfig, tol: float, *, fp8: bool = False) -> None:
    torch._dynamo.reset()
    model = tiny_model(layers=3)
    if fp8:
        convert_to_fp8(model, dtype=torch.float32)
    small, large = tiny_inputs(12), tiny_inputs(20, seed=3)
    with torch.no_grad():
        ref_small, ref_large = model(**small), model(**large)
        assert compile_blocks(model, config) == 3
        before = _graph_count()
        out_small = model(**small)
        graphs = _graph_count() - before
        out_large = model(**large)  # another resolution: no new graph
        assert _graph_count() - before == graphs
    # block 0 gets its own graph (its input is a view of the patchify matmul); blocks 1 and 2 share one
    assert graphs <= 2
    err = max(rel_err(out_small, ref_small), rel_err(out_large, ref_large))
    print(f"compiled blocks ({config.backend}{', fp8' if fp8 else ''}) vs eager: rel err {err:.1e}, {graphs} graphs")
    assert err <= tol


def test_compile_blocks_one_graph_across_resolutions():
    """Dynamo capture (fullgraph, dynamic token count) with the eager backend: fast, no C compiler needed.

    The fp8 model is the one with more to trace (quantisation, ``_scaled_mm``) besides the attention dispatch.
    """
    _check_compiled_blocks(CompileConfig(backend="eager"), 1e-6, fp8=True)


def test_the_recompile_limit_is_raised_under_its_pre_2_7_name_too():
    """torch 2.4-2.6 (allowed by pyproject) call the limit cache_size_limit: --compile must raise that one there,
    not stop with an AttributeError; from 2.7 on recompile_limit (the old name is an alias of it)."""
    import types

    old, new = types.SimpleNamespace(cache_size_limit=8), types.SimpleNamespace(recompile_limit=8, cache_size_limit=8)
    K._raise_recompile_limit(old)
    K._raise_recompile_limit(new)
    assert old.cache_size_limit == 32 and not hasattr(old, "recompile_limit")
    assert (new.recompile_limit, new.cache_size_limit) == (32, 8)
    high = types.SimpleNamespace(cache_size_limit=100)
    K._raise_recompile_limit(high)  # never lowered
    assert high.cache_size_limit == 100


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="inductor compiles for 20-60 s on 2 CPU cores; set LTX_SLOW_TESTS=1")
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="inductor on CPU needs a C++ compiler")
def test_compile_blocks_inductor_matches_eager():
    _check_compiled_blocks(CompileConfig(), 1e-5)


def test_forbid_host_sync_is_a_no_op_off_cuda():
    with K.forbid_host_sync("cpu"):
        assert torch.ones(2).sum().item() == 2.0


# --- GPU only ----------------------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (none here)")
needs_fp8_gpu = pytest.mark.skipif(
    not fp8_supported(CAP), reason=f"needs a CUDA GPU with compute capability 8.9+ for fp8 GEMMs (found {CAP})")


@needs_fp8_gpu
def test_gpu_scaled_mm_fp8_linear_matches_reference():
    torch.manual_seed(11)
    fp8 = FP8Linear.from_linear(nn.Linear(2048, 6144).cuda(), dtype=torch.bfloat16)
    x = torch.randn(2, 1000, 2048, device="cuda", dtype=torch.bfloat16)
    err = rel_err(fp8(x), fp8.forward_reference(x))
    print(f"cuBLASLt fp8 vs dequantised reference: rel err {err:.2e}")
    assert err < 1e-2  # fast accumulation + bf16 output


@needs_fp8_gpu
def test_gpu_fp8_transformer_compiled_without_host_sync():
    model = tiny_model().cuda().to(torch.bfloat16)
    convert_to_fp8(model)
    compile_blocks(model)
    inputs = tiny_inputs(device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        model(**inputs)  # compile outside the sync check
        with K.forbid_host_sync("cuda"):
            out = model(**inputs)
    assert torch.isfinite(out).all()


@needs_cuda
def test_gpu_auto_backend_and_installed_kernels_match_math():
    resolved = K.resolve_attention_backend("auto", "cuda", torch.bfloat16)
    assert resolved.cross_attention in (A.SDPA, A.MATH)
    model = tiny_model().cuda().to(torch.bfloat16)
    inputs = tiny_inputs(device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        set_attention_backend(model, "math")
        ref = model(**inputs)
        for name in ["sdpa", *sorted(K.probe_available())]:
            try:
                set_attention_backend(model, name)
            except KernelUnavailableError:
                continue  # installed but not for this GPU
            with K.forbid_host_sync("cuda"):
                out = model(**inputs)
            err = rel_err(out, ref)
            print(f"{name} vs math on {torch.cuda.get_device_name()}: rel err {err:.1e}")
            assert err < (5e-2 if name == "sage" else 2e-2)
