"""ltxcli.perf: the FLOP model (hand-derived numbers, counted module calls, the published reference figures),
the GPU peak table and ``--gpu`` checks, random materialisation, and a tiny random-weight bench run.

No timing is asserted anywhere: only that the run produces every field and that its FLOPs are the FLOPs of
the shapes that actually ran.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import replace

import pytest
import torch
import typer
from torch import nn
from typer.testing import CliRunner

from ltxcli.models.configs import (
    TRANSFORMER_2B,
    TRANSFORMER_13B,
    TransformerConfig,
    UpsamplerConfig,
    VAEConfig,
    official_vae_config,
)
from ltxcli.perf import bench, flops, gpus
from ltxcli.perf.bench import BenchError, materialize_random_
from ltxcli.perf.flops import (
    conv3d_flops,
    t5_encoder_flops,
    transformer_flops,
    upsampler_flops,
    vae_decoder_flops,
)
from ltxcli.perf.gpus import resolve_gpu
from ltxcli.presets import DEFAULT_NEGATIVE_PROMPT
from ltxcli.tiny import TINY_TRANSFORMER, make_tokenizer, tiny_vae_config

# --- FLOPs by hand -------------------------------------------------------------------------------------------

HAND = TransformerConfig(
    num_attention_heads=2, attention_head_dim=4, num_layers=1, in_channels=4, out_channels=4,
    cross_attention_dim=8, caption_channels=6,
)


def test_transformer_flops_one_block_by_hand():
    # d = 8, N = 5 video tokens, S = 3 text tokens, batch 1, one timestep row. 2 FLOPs per multiply-add.
    # attn1 q,k,v,out: 4 * 2*5*8*8 = 2560        attn2 q,out: 2 * 2*5*8*8 = 1280
    # attn2 k,v on text: 2 * 2*3*8*8 = 768       feed-forward 8->32->8: 2 * 2*5*8*32 = 5120
    # self-attn QK^T + PV: 2 * 2*5*5*8 = 800     cross-attn QK^T + PV: 2 * 2*5*3*8 = 480   -> block 11008
    # outside: patchify 2*5*4*8 = 320, proj_out 320, caption 6->8->8: 2*3*6*8 + 2*3*8*8 = 288 + 384,
    # adaLN 256->8->8 and 8->48 on one row: 2*256*8 + 2*8*8 + 2*8*48 = 4096 + 128 + 768   -> 6304
    got = transformer_flops(HAND, tokens=5, text_len=3)
    assert got["self_attn"] == 800
    assert got["cross_attn"] == 480
    assert got["linear"] == 2560 + 1280 + 768 + 5120 + 6304
    assert got["total"] == 17312
    two = transformer_flops(replace(HAND, num_layers=2), tokens=5, text_len=3, batch=3)
    assert two["total"] == 3 * (2 * 11008 + 6304)
    # per-token timesteps put every token through the adaLN MLP
    per_token = transformer_flops(HAND, tokens=5, text_len=3, timestep_rows=5)
    assert per_token["total"] - got["total"] == 4 * (4096 + 128 + 768)
    # with the text's keys and values computed before (ltxcli.text_cache): no attn2 k,v (768), no caption (288 + 384)
    cached = transformer_flops(HAND, tokens=5, text_len=3, text_kv=True)
    assert got["total"] - cached["total"] == 768 + 288 + 384


def _count_transformer_calls(cfg: TransformerConfig, batch: int, n: int, s: int) -> float:
    """FLOPs of a real forward, counted from the shapes each Linear and each attention call receives."""
    from ltxcli.models import transformer as tmod

    torch.manual_seed(0)
    model = tmod.LTXVideoTransformer(cfg).eval()
    total = 0.0

    def on_linear(m: nn.Linear, args: tuple, _out: torch.Tensor) -> None:
        nonlocal total
        rows = args[0].numel() // m.in_features
        total += 2.0 * rows * m.in_features * m.out_features

    hooks = [m.register_forward_hook(on_linear) for m in model.modules() if isinstance(m, nn.Linear)]
    original = tmod.attention

    def counting_attention(q, k, v, *rest):
        nonlocal total
        total += 2 * 2.0 * q.shape[0] * q.shape[1] * k.shape[1] * q.shape[2]  # QK^T and PV
        return original(q, k, v, *rest)

    tmod.attention = counting_attention
    try:
        x = torch.randn(batch, n, cfg.in_channels)
        text = torch.randn(batch, s, cfg.caption_channels)
        grid = torch.rand(batch, 3, n)
        with torch.no_grad():
            model(x, text, torch.rand(batch, 1), indices_grid=grid)
    finally:
        tmod.attention = original
        for h in hooks:
            h.remove()
    return total


def test_transformer_flops_match_the_calls_of_a_real_forward():
    cfg = replace(TINY_TRANSFORMER, num_layers=3)
    counted = _count_transformer_calls(cfg, batch=2, n=12, s=7)
    assert transformer_flops(cfg, tokens=12, text_len=7, batch=2)["total"] == counted


def test_vae_decoder_flops_match_the_convolutions_of_a_real_decode():
    from ltxcli.models.vae import CausalVideoVAE

    for family in ("0.9", "0.9.1", "0.9.5"):
        raw = official_vae_config(family)
        for key in ("blocks", "encoder_blocks", "decoder_blocks"):
            for _, params in raw.get(key, []):
                if isinstance(params, dict) and "num_layers" in params:
                    params["num_layers"] = 1
        raw["blocks"] = [[n, 1 if isinstance(p, int) else p] for n, p in raw.get("blocks", [])] or None
        if raw["blocks"] is None:
            del raw["blocks"]
        raw.update(latent_channels=8, encoder_base_channels=8, decoder_base_channels=8)
        cfg = VAEConfig.from_official(raw)
        torch.manual_seed(0)
        vae = CausalVideoVAE(cfg).eval()
        total = 0.0

        def on_conv(m: nn.Conv3d, _args: tuple, out: torch.Tensor) -> None:
            nonlocal total
            total += 2.0 * math.prod(m.kernel_size) * m.in_channels * m.out_channels * out[0, 0].numel() * out.shape[0]

        hooks = [m.register_forward_hook(on_conv) for m in vae.decoder.modules() if isinstance(m, nn.Conv3d)]
        with torch.no_grad():
            vae.decode(torch.randn(2, 8, 3, 2, 3), timestep=0.05 if cfg.timestep_conditioning else None)
        for h in hooks:
            h.remove()
        assert vae_decoder_flops(cfg, 3, 2, 3, batch=2) == total, family


def test_upsampler_flops_match_the_convolutions_of_a_real_forward():
    from ltxcli.models.upsampler import LatentUpsampler

    cfg = UpsamplerConfig(in_channels=8, mid_channels=32, num_blocks_per_stage=2)
    model = LatentUpsampler(cfg).eval()
    total = 0.0

    def on_conv(m: nn.Module, _args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        spatial = out[0, 0].numel() * out.shape[0]
        total += 2.0 * math.prod(m.kernel_size) * m.in_channels * m.out_channels * spatial

    hooks = [m.register_forward_hook(on_conv) for m in model.modules() if isinstance(m, (nn.Conv3d, nn.Conv2d))]
    with torch.no_grad():
        model(torch.randn(1, 8, 3, 4, 5))
    for h in hooks:
        h.remove()
    assert upsampler_flops(cfg, 3, 4, 5) == total


# --- the published reference numbers (shared/reference/performance.md, flops.py) ----------------------------


def _tokens(h: int, w: int, f: int) -> int:
    return ((f - 1) // 8 + 1) * (h // 32) * (w // 32)


@pytest.mark.parametrize(
    ("cfg", "size", "text_len", "reference_tf"),
    [
        (TRANSFORMER_2B, (512, 768, 121), 128, 29.1),  # the paper size, "29.1 TF"
        (TRANSFORMER_2B, (704, 1216, 121), 128, 85.5),
        (TRANSFORMER_2B, (512, 768, 49), 128, 10.6),
        (TRANSFORMER_13B, (512, 768, 121), 256, 170.3),
        (TRANSFORMER_13B, (704, 1216, 121), 256, 445.9),
    ],
)
def test_full_size_transformer_flops_agree_with_the_reference(cfg, size, text_len, reference_tf):
    got = transformer_flops(cfg, _tokens(*size), text_len)["total"] / 1e12
    assert abs(got - reference_tf) / reference_tf < 0.01, got


@pytest.mark.parametrize(
    ("family", "size", "reference_tf"),
    [("0.9.5", (512, 768, 121), 60.2), ("0.9.5", (704, 1216, 121), 131.1), ("0.9.5", (512, 768, 49), 24.8),
     ("0.9.1", (512, 768, 121), 67.7), ("0.9", (512, 768, 121), 41.5)],
)
def test_full_size_vae_decoder_flops_agree_with_the_reference(family, size, reference_tf):
    cfg = VAEConfig.from_official(official_vae_config(family))
    h, w, f = size
    got = vae_decoder_flops(cfg, (f - 1) // 8 + 1, h // 32, w // 32) / 1e12
    assert abs(got - reference_tf) / reference_tf < 0.01, got


def test_other_stage_flops_agree_with_the_reference():
    # latent upsampler at the 800x448x121 latent grid: 3.4 TF; T5-XXL at 128 / 256 tokens: 1.22 / 2.44 TF
    # (the reference multiplies all 4.76 B parameters, embeddings included; the encoder's matmuls are 4.63 B)
    assert abs(upsampler_flops(UpsamplerConfig(), 16, 14, 25) / 1e12 - 3.38) < 0.01
    t5 = flops.t5_xxl_config()
    assert abs(t5_encoder_flops(t5, 128) / 1e12 - 1.22) / 1.22 < 0.03
    assert abs(t5_encoder_flops(t5, 256) / 1e12 - 2.44) / 2.44 < 0.03
    assert conv3d_flops(2, 3, 10) == 2 * 27 * 2 * 3 * 10


# --- GPU peaks and --gpu checks ------------------------------------------------------------------------------


def test_peak_table_values():
    assert {k: p.tflops for k, p in gpus.GPU_PEAKS.items()} == {
        "h100": 989.0, "h200": 989.0, "a100": 312.0, "l40s": 362.0, "4090": 165.2, "cpu": None,
    }


@pytest.mark.parametrize(
    ("gpu", "name", "key", "tflops"),
    [
        ("h100", "NVIDIA H100 80GB HBM3", "h100", 989.0),
        (None, "NVIDIA H100 80GB HBM3", "h100", 989.0),
        ("h100", "NVIDIA H100 PCIe", "h100", 756.0),
        ("h200", "NVIDIA H200", "h200", 989.0),
        ("a100", "NVIDIA A100-SXM4-80GB", "a100", 312.0),
        ("L40S", "NVIDIA L40S", "l40s", 362.0),
        (None, "NVIDIA GeForce RTX 4090", "4090", 165.2),
        (None, "NVIDIA GeForce RTX 3090", "unknown", None),
    ],
)
def test_resolve_gpu_accepts_the_matching_device(gpu, name, key, tflops):
    peak = resolve_gpu(gpu, "cuda", name)
    assert (peak.key, peak.tflops, peak.device_name) == (key, tflops, name)


@pytest.mark.parametrize(
    ("gpu", "device_type", "name", "message"),
    [
        ("h100", "cuda", "NVIDIA A100-SXM4-80GB", "use --gpu a100"),
        ("h200", "cuda", "NVIDIA H100 80GB HBM3", "use --gpu h100"),
        ("l40s", "cuda", "NVIDIA L40", "does not match"),
        ("4090", "cuda", "NVIDIA GeForce RTX 3090", "does not match"),
        ("h100", "cpu", "AMD EPYC", "runs on the CPU"),
        ("cpu", "cuda", "NVIDIA H100 80GB HBM3", "--gpu cpu"),
        ("v100", "cuda", "Tesla V100", "unknown"),
    ],
)
def test_resolve_gpu_rejects_a_mismatch_in_one_line(gpu, device_type, name, message):
    with pytest.raises(BenchError) as exc:
        resolve_gpu(gpu, device_type, name)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_cpu_has_no_peak_and_no_utilisation():
    assert resolve_gpu("cpu", "cpu", "AMD EPYC").tflops is None
    assert resolve_gpu(None, "cpu", "AMD EPYC").tflops is None


# --- random materialisation ---------------------------------------------------------------------------------


def test_materialize_random_fills_meta_tensors_with_fan_in_scaled_values():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(400, 300), nn.LayerNorm(300), nn.Linear(300, 2))
    materialize_random_(model, device="cpu", dtype=torch.float64, seed=3)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    w = model[0].weight
    assert w.dtype == torch.float64 and not w.requires_grad
    assert abs(w.std().item() * math.sqrt(400) - 1) < 0.02
    assert torch.equal(model[0].bias, torch.zeros(300, dtype=torch.float64))
    assert torch.equal(model[1].weight, torch.ones(300, dtype=torch.float64))
    # the same seed gives the same weights
    with torch.device("meta"):
        again = nn.Sequential(nn.Linear(400, 300), nn.LayerNorm(300), nn.Linear(300, 2))
    materialize_random_(again, device="cpu", dtype=torch.float64, seed=3)
    assert torch.equal(again[0].weight, w)


def test_materialize_random_keeps_ties_and_respects_prefixes():
    with torch.device("meta"):
        model = nn.ModuleDict({"a": nn.Embedding(10, 4), "b": nn.Linear(4, 10, bias=False), "c": nn.Linear(2, 2)})
    model["b"].weight = model["a"].weight  # tied, as T5's shared / embed_tokens
    materialize_random_(model, device="cpu", dtype=torch.float32, prefixes=("a.", "b."))
    assert model["b"].weight is model["a"].weight and not model["a"].weight.is_meta
    assert model["c"].weight.is_meta  # outside the prefixes: untouched


def test_random_architecture_follows_the_preset():
    from ltxcli.presets import PRESETS

    a = bench.random_architecture(PRESETS["ltxv-2b-0.9.8-distilled"])
    assert a.transformer.num_layers == 28 and a.transformer.causal_temporal_positioning
    assert a.vae.family == "0.9.5" and a.upsampler == UpsamplerConfig()
    b = bench.random_architecture(PRESETS["ltxv-13b-0.9.7-dev"])
    assert (b.transformer.num_layers, b.transformer.inner_dim) == (48, 4096)
    c = bench.random_architecture(PRESETS["ltxv-2b-0.9.1"])
    assert c.vae.family == "0.9.1" and c.upsampler is None and not c.transformer.causal_temporal_positioning
    assert bench.random_architecture(PRESETS["ltxv-2b-0.9"]).vae.family == "0.9"


# --- a tiny run -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run():
    torch.manual_seed(0)
    return bench.run_bench(preset="tiny", random_weights=True, height=64, width=96, num_frames=9, steps=2,
                           device="cpu", gpu="cpu", warmup=0, repeats=2)


def test_tiny_random_run_reports_every_field(tiny_run):
    r = tiny_run
    d = r.to_dict()
    json.dumps(d)  # JSON-ready
    assert set(d["stages"]) == {"text", "denoise", "decode", "total"}
    for name in ("text", "denoise", "decode", "total"):
        st = r.stages[name]
        assert len(st.runs_s) == 2 and st.median_s > 0 and st.flops > 0 and st.tflops_per_s > 0
        assert st.utilisation is None  # the CPU has no peak
    assert r.stages["total"].flops == pytest.approx(
        r.stages["text"].flops + r.stages["denoise"].flops + r.stages["decode"].flops)
    assert (r.width, r.height, r.num_frames, r.frame_rate) == (96, 64, 9, 24.0)
    # seconds are *_s in every --json (build_s, median_s, generate's timings, info's duration_s): not video_seconds
    assert d["video_s"] == pytest.approx(9 / 24) and d["paper_s"] == 2.0
    assert not {"video_seconds", "paper_seconds"} & set(d)
    assert r.real_time_factor == pytest.approx(r.stages["total"].median_s / (9 / 24))
    assert r.paper_ratio == pytest.approx(r.stages["total"].median_s / 2.0)
    assert r.peak_memory_bytes > 0 and r.device == "cpu" and r.weights == "random" and r.text_encoder == "random"
    # the vocabulary of `ltx vae roundtrip --json` (cuda_allocated | process_peak_rss | unavailable), which used to
    # read "process peak RSS (includes the weights)" here, as the table still says it
    assert d["peak_memory_kind"] == "process_peak_rss"
    assert any("GB (process peak RSS (includes the weights))" in line for line in bench.format_table(r))
    assert r.attention["attention"]["self_attention"] == "sdpa" and r.attention["fp8_linear_layers"] == 0
    assert r.attention["vae_conv"] == "auto"
    assert r.kernels["device"] == "cpu" and r.torch_version == torch.__version__
    lines = bench.format_table(r)
    assert any("VAE conv auto" in line for line in lines)
    assert any(line.startswith("denoise") for line in lines)
    assert any("paper" in line for line in lines)


def test_tiny_run_flops_are_those_of_the_shapes_that_ran(tiny_run):
    r = tiny_run
    # tiny preset: CFG + STG -> 3 branches per step; 64x96x9 -> latent 2x2x3 = 12 tokens; the prompt and the
    # negative prompt padded to the longer of the two (ltxcli.text), counted here by the tokenizer itself
    prompt = inspect.signature(bench.run_bench).parameters["prompt"].default
    text_len = max(len(make_tokenizer()(p)["input_ids"]) for p in (prompt, DEFAULT_NEGATIVE_PROMPT))
    assert 8 < text_len < 256
    assert r.transformer_calls == 2 and r.branches == [3, 3] and r.tokens == [12, 12]
    # the first step projects the text for the pass (ltxcli.text_cache), the second reuses its keys and values
    assert r.stages["denoise"].flops == (
        transformer_flops(TINY_TRANSFORMER, 12, text_len, batch=3)["total"]
        + transformer_flops(TINY_TRANSFORMER, 12, text_len, batch=3, text_kv=True)["total"])
    assert r.stages["decode"].flops == vae_decoder_flops(tiny_vae_config(), 2, 2, 3)
    text_cfg = bench.random_architecture(bench_preset("tiny")).text
    assert r.stages["text"].flops == t5_encoder_flops(text_cfg, text_len, batch=2)  # prompt + negative prompt


def bench_preset(name: str):
    from ltxcli.presets import PRESETS

    return PRESETS[name]


def _cli() -> typer.Typer:
    from ltxcli.cli import bench as bench_cli

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    bench_cli.register(app)
    return app


def test_cli_json_with_skipped_text_encoder():
    args = ["bench", "--random-weights", "--preset", "tiny", "--device", "cpu", "--gpu", "cpu", "--height", "64",
            "--width", "64", "--num-frames", "9", "--steps", "1", "--warmup", "0", "--repeats", "1",
            "--text-encoder", "skip", "--json", "--quiet"]
    res = CliRunner().invoke(_cli(), args)
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout.strip().splitlines()[-1])
    assert d["text_encoder"] == "skipped" and d["stages"]["text"]["note"] == "skipped (random weights)"
    assert d["stages"]["text"]["median_s"] is None and d["stages"]["decode"]["flops"] > 0
    assert d["branches"] == [3] and d["gpu"] == "CPU" and d["peak_tflops"] is None
    res = CliRunner().invoke(_cli(), [*args, "--vae-conv", "direct"])
    assert res.exit_code == 0 and json.loads(res.stdout.strip().splitlines()[-1])["attention"]["vae_conv"] == "direct"
    res = CliRunner().invoke(_cli(), [*args, "--vae-conv", "fft"])
    assert res.exit_code == 2 and "unknown VAE conv algorithm 'fft'" in res.stderr and "\n" not in res.stderr.strip()


def test_text_encoder_auto_is_described_as_it_decides():
    # --help said "auto (random on a GPU, skip on the CPU)", yet --preset tiny on the CPU times a random T5 (its
    # encoder is under the 1 GB the code decides by)
    from ltxcli.perf.bench import build_random_pipeline
    from ltxcli.presets import PRESETS

    _, _, mode = build_random_pipeline(PRESETS["tiny"], torch.device("cpu"), torch.float32, text_encoder="auto")
    assert mode == "random"
    res = CliRunner().invoke(_cli(), ["bench", "--help"], env={"COLUMNS": "400"})
    assert "auto (random on a GPU or for a text encoder under 1 GB, such as --preset tiny's; skip otherwise)" in res.stdout


def test_cli_cache_reports_the_calls_skipped():
    """--cache as for generate: TeaCache always computes the first and last steps, and at a threshold no change
    reaches it skips every other one (3 branches per step: CFG + STG); threshold 0 skips nothing."""
    args = ["bench", "--random-weights", "--preset", "tiny", "--device", "cpu", "--gpu", "cpu", "--height", "64",
            "--width", "64", "--num-frames", "9", "--steps", "5", "--warmup", "0", "--repeats", "1",
            "--text-encoder", "skip", "--json", "--quiet"]
    for spec, want in (("teacache:1000", {"mode": "teacache", "threshold": 1000.0, "calls": 15, "skipped": 9}),
                       ("fbcache:0", {"mode": "fbcache", "threshold": 0.0, "calls": 15, "skipped": 0}),
                       ("none", {"mode": "none", "threshold": 0.0, "calls": None, "skipped": 0})):
        res = CliRunner().invoke(_cli(), [*args, "--cache", spec])
        assert res.exit_code == 0, res.output
        d = json.loads(res.stdout.strip().splitlines()[-1])
        assert d["cache"] == want, spec
        assert d["transformer_calls"] == 5 and d["branches"] == [3] * 5
    res = CliRunner().invoke(_cli(), [*args[:-2], "--cache", "teacache:1000"])  # the table
    assert res.exit_code == 0 and "step cache teacache (threshold 1000): 9 of 15 transformer branch calls skipped" in res.stdout
    res = CliRunner().invoke(_cli(), [*args, "--cache", "deepcache"])
    assert res.exit_code == 2 and "must be none, teacache[:THRESHOLD] or fbcache[:THRESHOLD]" in res.stderr
    assert "\n" not in res.stderr.strip()


def test_cli_gpu_mismatch_is_one_line_exit_2():
    res = CliRunner().invoke(_cli(), ["bench", "--random-weights", "--device", "cpu", "--gpu", "h100"])
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert err.startswith("error: --gpu h100") and "\n" not in err
    res = CliRunner().invoke(_cli(), ["bench", "--random-weights", "--device", "cpu", "--gpu", "v100"])
    assert res.exit_code == 2 and "unknown" in res.stderr


def test_cli_unknown_preset_is_exit_2_before_any_model_is_loaded(tmp_path, monkeypatch):
    # without --random-weights the default model was loaded first: offline, "not downloaded" (exit 3) hid the typo
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LTX_WEIGHTS_DIR", str(tmp_path / "weights"))
    res = CliRunner().invoke(_cli(), ["bench", "--preset", "nope", "--device", "cpu"])
    assert res.exit_code == 2, res.stderr
    err = res.stderr.strip()
    assert err.startswith("error: unknown preset 'nope'") and "\n" not in err


# --- the CPU float32 GEMM route of the DiT (ltxcli.models.transformer._dense) ----------------------------------


def test_dense_routes_cpu_float32_linears_and_matches_f_linear():
    from ltxcli.models import transformer as tmod

    torch.manual_seed(0)
    layer = nn.Linear(64, 48).eval()
    x = torch.randn(2, 5, 64)[:, ::2]  # a strided input as well
    with torch.no_grad():
        want = torch.nn.functional.linear(x, layer.weight, layer.bias)
        got = tmod._dense(layer, x)
    assert got.shape == want.shape and (got - want).abs().max() <= 1e-5 * want.abs().max()
    gelu = torch.nn.functional.gelu(want, approximate="tanh")
    with torch.no_grad():
        fused = tmod._dense(layer, x, gelu_tanh=True)  # GELU as a oneDNN post-op of the GEMM
    assert (fused - gelu).abs().max() <= 1e-5 * gelu.abs().max() and not torch.equal(fused, got)
    unfused = tmod._dense(layer, x, gelu_tanh=True)  # with autograd: F.linear then F.gelu
    assert unfused.requires_grad and (unfused - gelu).abs().max() <= 1e-5 * gelu.abs().max()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert tmod._dense(layer, x).dtype == torch.bfloat16  # autocast keeps F.linear (bf16 matmul)
    assert tmod._dense(layer, x).requires_grad  # with autograd: the differentiable F.linear
    calls = []
    layer.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        tmod._dense(layer, x)
    assert calls == [1]  # hooks still fire


def test_dense_leaves_the_onednn_op_to_eager_runs(monkeypatch):
    """`ltx generate --compile` on the CPU ended in "InductorError: LoweringException ... mkldnn._linear_pointwise":
    inductor cannot lower the oneDNN op this route calls, so while compiling the module's own forward runs (inductor
    then picks its GEMM). LTX_SLOW_TESTS=1 runs the real inductor compile (tests/test_kernels.py)."""
    from ltxcli.models import transformer as tmod

    layer = nn.Linear(64, 48).eval()
    calls = []
    plain = layer.forward
    layer.forward = lambda x: calls.append(1) or plain(x)  # no hook: the oneDNN route stays open
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        tmod._dense(layer, x)
        assert calls == []  # eager: oneDNN, not the module's forward
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        tmod._dense(layer, x)
    assert calls == [1]


def test_bench_under_torchrun_reports_every_rank(tmp_path):
    """Two gloo ranks on CPU: one JSON object (rank 0) with time and peak memory of both ranks."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "ltxcli",
           "bench", "--random-weights", "--preset", "tiny", "--gpu", "cpu", "--height", "64", "--width", "96",
           "--num-frames", "9", "--steps", "2", "--repeats", "1", "--warmup", "1", "--json", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    if proc.returncode != 0 and "SIGABRT" in proc.stderr:
        # One clean-clone run saw a worker abort in gloo's teardown (before the barrier ahead of
        # destroy_process_group was added); a second abort in a row is a real failure.
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[:3000] + "\n...\n" + proc.stderr[-1000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1  # only rank 0 prints
    result = json.loads(lines[0])
    assert [r["rank"] for r in result["ranks"]] == [0, 1]
    for r in result["ranks"]:
        assert r["timings"]["total_s"] > 0 and "peak_memory_bytes" in r
    assert len(result["warmup_s"]) == 1
