#!/usr/bin/env python
"""One-byte weight storage on the CPU (issue 18, point 2): the full-size 2B transformer with random weights, its
linear weights kept in bfloat16 and widened per call (the CPU loader's default for a bf16 checkpoint) against
the same weights with the blocks' linears stored in float8 e4m3 + per-tensor scale (``--weights-dtype fp8``) and
as int8 + one float32 scale per output row (``--weights-dtype int8``).

Reported per stored variant: the bytes each holds (state dict + int8 row scales + upcast scratch, what the memory
plan counts) and their ratio to bf16-kept, the process RSS each build adds (one child process per variant: a
stored one quantises the bf16 weights and frees them, as the loader does tensor by tensor), one forward each at
the ``vs_diffusers.py transformer`` inputs (384 video tokens, CFG batch 2, float32 compute) and the relative error
of its output against the unquantised one. Targets: resident weights <= 0.55x of bfloat16-kept, output within
2e-2 relative. A benchmark, not a test. ``--variants`` picks which run (default all three); ``--layers N`` builds
only N blocks (a quick check that the script runs; the figures are the 2B's only at the default 28).

``--floor`` (seconds, no 2B build): where the 2e-2 target sits against what e4m3 can represent. On full-size layer
shapes (2048x2048, 8192x2048, 2048x8192 ``[out, in]``) with fan-in scaled weights (uniform, the random 2B's init,
and Gaussian), the relative error of one linear's output (256 Gaussian input rows) with the weight stored as e4m3
under: the per-tensor ``amax / 448`` scale (what ``--weights-dtype fp8`` stores), the per-tensor scale of least
weight MSE (searched over ``amax / 448 * c``, ``c`` in [1, 2] covering every alignment of the values to the e4m3
grid: the floor over per-tensor scales), per-output-channel ``amax / 448`` scales, and e4m3's mantissa rounding with
an unbounded exponent at the weights' own (power-of-two) scale; int8 with per-channel scales and bfloat16 for
comparison (int8 per-row as ``--weights-dtype int8`` stores it, :func:`ltxcli.models.int8.quantize_int8`). Then the
tiny model's whole forward (``ltxcli.tiny``) with per-tensor and per-channel e4m3 and the library's int8 storage.

    python benchmarks/fp8_storage.py
    python benchmarks/fp8_storage.py --variants bf16 int8
    python benchmarks/fp8_storage.py --layers 2 --json /tmp/quick.json   # seconds-to-minutes: the script works
    python benchmarks/fp8_storage.py --floor
    python benchmarks/fp8_storage.py --widen
    python benchmarks/fp8_storage.py --widen --layers 4

``--widen`` (seconds, no 2B build): what widening one stored weight costs on the CPU, in one process, on the 2B's
8192x2048 and 2048x2048 ``[out, in]`` shapes: torch's float8 conversion times the scale (the path before
:func:`ltxcli.models.fp8.widen_e4m3`), the candidates measured for replacing it (each checked bit for bit against
it), the library's ``widen_e4m3`` and bfloat16 widening; each the least (and the median) of 5 alternating rounds of best of 5. Then
one feed-forward layer (768 rows, 2048 -> 8192, the oneDNN GEMM the transformer runs) with its weight widened the
old way, the new way and from bfloat16, the least of 5 alternating rounds of best of 3. ``--widen --layers N``
also times the forward of N 2B blocks bf16-kept and fp8-stored (old and new widening) in this process, alternating.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from vs_diffusers import TRANSFORMER_2B, rel, rss_bytes, run_ours_transformer, transformer_inputs  # noqa: E402

from ltxcli.memory.weights import held_bytes, scratch_bytes  # noqa: E402
from ltxcli.models.int8 import convert_to_storage, quantize_int8  # noqa: E402
from ltxcli.models.transformer import LTXVideoTransformer  # noqa: E402
from ltxcli.perf.bench import materialize_random_  # noqa: E402

VARIANTS = ("bf16", "fp8", "int8")  # bf16-kept (the reference), then the --weights-dtype storage modes


def build(variant: str, layers: int = TRANSFORMER_2B.num_layers) -> torch.nn.Module:
    with torch.device("meta"):
        model = LTXVideoTransformer(dataclasses.replace(TRANSFORMER_2B, causal_temporal_positioning=True,
                                                        num_layers=layers))
    materialize_random_(model, device="cpu", dtype=torch.float32, seed=0, narrow=torch.bfloat16)
    if variant != "bf16":
        convert_to_storage(variant, model)  # "fp8" or "int8", as the loader's --weights-dtype
        gc.collect()
    return model


def child(variant: str, layers: int) -> dict[str, Any]:
    """One variant in this process: RSS added by the build, bytes held, one forward (seconds, output saved)."""
    gc.collect()
    before = rss_bytes()
    model = build(variant, layers)
    gc.collect()
    built = rss_bytes()
    inp = transformer_inputs(torch.float32)
    with torch.inference_mode():
        run_ours_transformer(model, inp)  # warm-up (also grows the scratch buffer)
        t0 = time.perf_counter()
        out = run_ours_transformer(model, inp)
        seconds = time.perf_counter() - t0
    path = Path(f"/tmp/ltx-fp8-storage-{variant}-{layers}.pt")
    torch.save(out, path)
    return {"variant": variant, "held_bytes": held_bytes(model) + scratch_bytes(model), "build_rss_bytes": built - before,
            "forward_s": seconds, "output": str(path)}


# --- --floor: what e4m3 storage can reach at all ---------------------------------------------------------------

E4M3 = torch.float8_e4m3fn
FLOOR_SHAPES = ((2048, 2048), (8192, 2048), (2048, 8192))  # [out, in]: attention, ff up, ff down of the 2B


def e4m3_dequantised(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``w`` stored as e4m3 codes under ``scale`` (0-d: per tensor; ``[out, 1]``: per output channel), widened back."""
    return (w / scale).clamp(-448, 448).to(E4M3).float() * scale


def mantissa_3bit(w: torch.Tensor) -> torch.Tensor:
    """``w`` with its mantissa rounded to e4m3's 3 stored bits (4 significant), the exponent unbounded: e4m3
    without range limits (no clipping, no subnormals) under a power-of-two scale."""
    m, e = torch.frexp(w)  # w = m * 2**e, |m| in [0.5, 1)
    return torch.ldexp(torch.round(m * 16) / 16, e)


def int8_per_channel(w: torch.Tensor) -> torch.Tensor:
    """``w`` stored as ``--weights-dtype int8`` stores it (codes and a scale per output row), widened back."""
    codes, scale = quantize_int8(w)
    return codes.float() * scale[:, None]


def weight_variants(w: torch.Tensor) -> dict[str, torch.Tensor]:
    """The stored-and-widened weight of each storage variant (float32)."""
    amax = w.abs().amax()
    out = {"e4m3 per-tensor amax/448": e4m3_dequantised(w, amax / 448)}
    # least-MSE per-tensor scale: c in [1, 2] covers every alignment of the values to the grid (c and 2c give
    # the same codes but for the range ends), below 1 the top values clip; searched on a 1M-weight sample
    sample = w.flatten()[: 1 << 20]
    best = min((float(((e4m3_dequantised(sample, amax / 448 * c) - sample) ** 2).sum()), c)
               for c in [0.7, 0.8, 0.9, *torch.linspace(1.0, 2.0, 17).tolist()])
    out[f"e4m3 per-tensor MSE-best (c={best[1]:.3g})"] = e4m3_dequantised(w, amax / 448 * best[1])
    out["e4m3 per-channel amax/448"] = e4m3_dequantised(w, w.abs().amax(dim=1, keepdim=True) / 448)
    out["e4m3 mantissa only (no range limit)"] = mantissa_3bit(w)
    out["int8 per-row amax/127 (--weights-dtype int8)"] = int8_per_channel(w)
    out["bfloat16"] = w.to(torch.bfloat16).float()
    return out


def floor(seed: int = 0, rows: int = 64) -> dict[str, Any]:
    """Relative errors of one linear's output per storage variant on the 2B's layer shapes, then the tiny model's
    forward per e4m3 variant. Prints a table; returns the figures."""
    gen = torch.Generator().manual_seed(seed)
    res: dict[str, Any] = {"linear": [], "tiny": {}}
    print(f"one linear's output, {rows} Gaussian input rows: relative error (weights: relative rms error)")
    for init in ("uniform", "gaussian"):
        for out_f, in_f in FLOOR_SHAPES:
            std = in_f ** -0.5  # fan-in scaled, as materialize_random_ draws the random 2B (uniform)
            if init == "uniform":
                w = (torch.rand(out_f, in_f, generator=gen) * 2 - 1) * (3**0.5 * std)
            else:
                w = torch.randn(out_f, in_f, generator=gen) * std
            x = torch.randn(rows, in_f, generator=gen)
            y = x @ w.t()
            for name, wq in weight_variants(w).items():
                row = {"init": init, "shape": [out_f, in_f], "variant": name,
                       "output_rel_err": rel(x @ wq.t(), y), "weight_rel_err": rel(wq, w)}
                res["linear"].append(row)
                print(f"  {init:<8} {out_f}x{in_f:<5} {name:<48} output {row['output_rel_err']:.3e}   "
                      f"weights {row['weight_rel_err']:.3e}")
    res["tiny"] = floor_tiny(seed)
    return res


def floor_tiny(seed: int) -> dict[str, float]:
    """The tiny model's forward (float32) against its block linears stored per tensor / per channel in e4m3 and
    per row in int8: relative output error, its own init (uniform, nn.Linear's) and Gaussian fan-in scaled."""
    import copy

    from ltxcli.models.fp8 import convert_to_fp8_storage, fp8_storage_keys
    from ltxcli.tiny import TINY_TRANSFORMER

    cfg = TINY_TRANSFORMER
    gen = torch.Generator().manual_seed(seed + 1)
    n = 24
    inp = {"hidden_states": torch.randn(2, n, cfg.in_channels, generator=gen),
           "encoder_hidden_states": torch.randn(2, 7, cfg.caption_channels, generator=gen),
           "timestep": torch.tensor([[0.9], [0.4]]), "indices_grid": torch.rand(2, 3, n, generator=gen) * 8,
           "encoder_attention_mask": torch.ones(2, 7, dtype=torch.long)}
    out: dict[str, float] = {}
    print("tiny model forward (float32 compute), relative error against the unquantised model")
    for init in ("nn.Linear uniform", "gaussian"):
        torch.manual_seed(seed)
        model = LTXVideoTransformer(cfg).eval().requires_grad_(False)
        keys = fp8_storage_keys(model)
        if init == "gaussian":
            for key in keys:
                w = model.get_parameter(key)
                w.copy_(torch.randn(w.shape, generator=gen) * w.shape[1] ** -0.5)
        with torch.inference_mode():
            ref = model(**inp)
            stored = copy.deepcopy(model)
            convert_to_fp8_storage(stored)  # the library's per-tensor storage
            int8 = copy.deepcopy(model)
            convert_to_storage("int8", int8)  # the library's per-row int8 storage
            variants = {"e4m3 per-tensor (--weights-dtype fp8)": stored, "int8 per-row (--weights-dtype int8)": int8}
            for name, fn in (("e4m3 per-channel", lambda w: e4m3_dequantised(w, w.abs().amax(1, keepdim=True) / 448)),
                             ("e4m3 mantissa only", mantissa_3bit)):
                m = copy.deepcopy(model)
                for key in keys:
                    m.get_parameter(key).copy_(fn(m.get_parameter(key).float()))
                variants[name] = m
            for name, m in variants.items():
                out[f"{init}: {name}"] = err = rel(m(**inp), ref)
                print(f"  {init:<18} {name:<38} {err:.3e}")
    return out


# --- --widen: the CPU cost of widening one stored weight --------------------------------------------------------


def best_of(fn: Any, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def widen_candidates(codes: torch.Tensor, scale: torch.Tensor, out: torch.Tensor) -> dict[str, Any]:
    """Ways to write ``codes.to(float32) * scale`` into ``out`` on the CPU (each checked bit for bit)."""
    from ltxcli.models.fp8 import widen_e4m3

    n, flat = codes.numel(), out.view(-1)
    u8, s8 = codes.view(torch.uint8).view(-1), codes.view(torch.int8)
    lut = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(E4M3).to(torch.float32).mul_(scale)
    # 256 x 256 pairs of float32 values, indexed by two adjacent codes read as one little-endian uint16
    pairs = torch.stack([lut.view(1, 256).expand(256, 256), lut.view(256, 1).expand(256, 256)], -1)
    pairs = pairs.contiguous().view(torch.int64).view(-1)
    idx, work = torch.empty(n, dtype=torch.int32), torch.empty(n, dtype=torch.int16)
    by256, by2_120 = scale * 256.0, scale * 2.0**120

    def lut256() -> None:
        torch.index_select(lut, 0, idx.copy_(u8), out=flat)

    def lut_pairs() -> None:
        torch.index_select(pairs, 0, idx[: n // 2].copy_(u8.view(torch.uint16)), out=flat.view(torch.int64))

    def f16_whole() -> None:  # widen_e4m3's bit move over the whole tensor at once (an int16 copy of all of it)
        half = work.view(codes.shape).copy_(s8)
        half.bitwise_left_shift_(7).bitwise_and_(0xBF80 - 0x10000)
        out.copy_(half.view(torch.float16)).mul_(by256)

    def f16_slices_1m() -> None:  # the same in 1M-code slices (2 MiB int16 + 4 MiB float32 in cache)
        step = 1 << 20
        for start in range(0, n, step):
            half = work[: min(n, start + step) - start]
            half.copy_(s8.view(-1)[start:start + step]).bitwise_left_shift_(7).bitwise_and_(0xBF80 - 0x10000)
            flat[start:start + step].copy_(half.view(torch.float16)).mul_(by256)

    def f32_bits() -> None:  # straight to float32 bits: e4m3 subnormals become float32 denormals (DAZ would zero them)
        o = out.view(torch.int32)
        o.copy_(s8).bitwise_left_shift_(20).bitwise_and_(0x87F00000 - 2**32)
        out.mul_(by2_120)

    return {
        "torch float8 conversion * scale (before)": lambda: out.copy_(codes).mul_(scale),
        "256-entry table, index_select": lut256,
        "65536-entry pair table, index_select": lut_pairs,
        "float16 bits, whole tensor": f16_whole,
        "float16 bits, 1M-code slices": f16_slices_1m,
        "float32 bits (denormals)": f32_bits,
        # exact=True: a layer decides the route once, when its codes are set (FP8StoredLinear.check_codes)
        "widen_e4m3 (after: float16 bits, 4M-code slices)": lambda: widen_e4m3(codes, scale, out, work, exact=True),
    }


def widen(rows: int = 768) -> dict[str, Any]:
    from ltxcli.models.fp8 import convert_to_fp8_storage
    from ltxcli.models.transformer import _dense
    from ltxcli.models.upcast import convert_to_upcast

    torch.manual_seed(0)
    res: dict[str, Any] = {"threads": torch.get_num_threads()}
    for shape in ((8192, 2048), (2048, 2048)):
        w = torch.empty(shape).uniform_(-shape[1] ** -0.5, shape[1] ** -0.5)
        amax = w.abs().amax()
        scale = amax / 448
        codes = (w / scale).clamp(-448, 448).to(E4M3)
        out, bf16 = torch.empty(shape), w.to(torch.bfloat16)
        want = (codes.to(torch.float32) * scale).view(torch.int32)
        cands = widen_candidates(codes, scale, out)
        cands["bfloat16 widening (bf16-kept)"] = lambda: out.copy_(bf16)  # noqa: B023  (called in this iteration)
        for name, fn in cands.items():
            out.fill_(7.0)
            fn()
            if not name.startswith("bfloat16"):
                assert torch.equal(out.view(torch.int32), want), name
        rounds = [{name: best_of(fn) for name, fn in cands.items()} for _ in range(5)]  # alternating: load drifts
        times = {name: min(r[name] for r in rounds) for name in cands}
        medians = {name: statistics.median(r[name] for r in rounds) for name in cands}
        before = times["torch float8 conversion * scale (before)"]
        for name, t in times.items():
            print(f"{shape[0]}x{shape[1]} {name:<48} {t * 1e3:7.2f} ms ({before / t:5.1f}x faster than before), "
                  f"median of the rounds {medians[name] * 1e3:7.2f} ms")
        res[f"{shape[0]}x{shape[1]}"] = {"least": times, "median": medians}
    # one feed-forward layer as the transformer runs it: widen, then the oneDNN GEMM, [768, 2048] -> [768, 8192]
    lin = torch.nn.Linear(2048, 8192)
    holder = {}
    for variant in ("fp8", "bf16"):
        model = torch.nn.Module()
        model.transformer_blocks = torch.nn.ModuleList([torch.nn.Module()])
        model.transformer_blocks[0].ff = torch.nn.Linear(2048, 8192)
        model.transformer_blocks[0].ff.load_state_dict(lin.state_dict())
        if variant == "bf16":
            model.transformer_blocks[0].ff.weight.data = lin.weight.data.to(torch.bfloat16)
            convert_to_upcast(model)
        else:
            convert_to_fp8_storage(model)
        holder[variant] = model.transformer_blocks[0].ff
    fp8 = holder["fp8"]
    x = torch.randn(rows, 2048)

    def fp8_before() -> None:  # the old widening, then the same GEMM _dense runs
        weight = fp8._scratch.upcast(fp8.weight, torch.float32).mul_(fp8.weight_scale)
        torch.ops.mkldnn._linear_pointwise(x, weight, fp8.bias, "none", [], "")

    layer = {"fp8 before": fp8_before, "fp8 after": lambda: _dense(fp8, x), "bf16-kept": lambda: _dense(holder["bf16"], x)}
    with torch.inference_mode():
        assert torch.equal(_dense(fp8, x), torch.ops.mkldnn._linear_pointwise(
            x, fp8.weight.to(torch.float32) * fp8.weight_scale, fp8.bias, "none", [], ""))
        rounds: dict[str, list[float]] = {k: [] for k in layer}
        for _ in range(5):
            for name, fn in layer.items():
                rounds[name].append(best_of(fn, 3))
    lt = {k: min(v) for k, v in rounds.items()}
    print(f"layer {rows}x2048 -> 8192 (widen + GEMM): " + ", ".join(f"{k} {v:.3f} s" for k, v in lt.items()))
    print(f"  fp8 before / bf16-kept {lt['fp8 before'] / lt['bf16-kept']:.3f}, "
          f"fp8 after / bf16-kept {lt['fp8 after'] / lt['bf16-kept']:.3f}")
    res["layer"] = lt
    return res


def widen_forward(layers: int, rounds: int = 5) -> dict[str, float]:
    """The transformer with ``layers`` 2B blocks, bf16-kept and fp8-stored, one forward each at the ``child``
    inputs, in this process: fp8 with the old widening (``work_elements`` 0: torch's conversion) and the new one,
    alternating (the order reversed every other round); the least of ``rounds`` forwards each."""
    from ltxcli.models.fp8 import FP8StoredLinear

    models = {"bf16-kept": build("bf16", layers), "fp8": build("fp8", layers)}
    inp = transformer_inputs(torch.float32)
    new_work = FP8StoredLinear.work_elements
    runs: dict[str, list[float]] = {"bf16-kept": [], "fp8 before": [], "fp8 after": []}
    outs = {}
    with torch.inference_mode():
        for model in models.values():
            run_ours_transformer(model, inp)  # warm-up (grows the scratch)
        for i in range(rounds):
            for name in list(runs)[:: 1 if i % 2 == 0 else -1]:
                FP8StoredLinear.work_elements = (lambda self: 0) if name == "fp8 before" else new_work
                t0 = time.perf_counter()
                outs[name] = run_ours_transformer(models[name.split()[0]], inp)
                runs[name].append(time.perf_counter() - t0)
    FP8StoredLinear.work_elements = new_work
    assert torch.equal(outs["fp8 before"], outs["fp8 after"])  # the same forward, bit for bit
    best = {k: min(v) for k, v in runs.items()}
    for k, v in runs.items():
        print(f"{layers}-block forward, {k}: " + ", ".join(f"{t:.2f}" for t in v) + " s")
    print(f"{layers}-block forward (least of {rounds}): " + ", ".join(f"{k} {v:.2f} s" for k, v in best.items()))
    print(f"  fp8 before / bf16-kept {best['fp8 before'] / best['bf16-kept']:.3f}, "
          f"fp8 after / bf16-kept {best['fp8 after'] / best['bf16-kept']:.3f} (outputs before/after: identical)")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="bf16 (bf16-kept, the reference: always run), fp8 (--weights-dtype fp8), int8 "
                             "(--weights-dtype int8); default: all three")
    parser.add_argument("--layers", type=int,
                        help="transformer blocks to build (default 28: the 2B; fewer: a quick check of the script); "
                             "with --widen: also time a forward of that many blocks, fp8 before/after in one process")
    parser.add_argument("--floor", action="store_true",
                        help="the error floor of e4m3 storage, with int8 per row beside it (seconds, no 2B build)")
    parser.add_argument("--widen", action="store_true",
                        help="CPU widening of one stored weight: candidates, before/after, bf16 (seconds)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.widen:
        res = widen()
        if args.layers is not None:
            res["forward"] = widen_forward(args.layers)
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
        return
    args.layers = TRANSFORMER_2B.num_layers if args.layers is None else args.layers
    if args.floor:
        res = floor()
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
        return
    if args.child:
        print(json.dumps(child(args.child, args.layers)))
        return
    variants = ["bf16", *(v for v in VARIANTS[1:] if v in args.variants)]
    res: dict[str, Any] = {"layers": args.layers}
    for variant in variants:
        print(f"{variant}: building the transformer ({args.layers} blocks) in a child process", flush=True)
        proc = subprocess.run([sys.executable, __file__, "--child", variant, "--layers", str(args.layers)],
                              capture_output=True, text=True, check=True)
        res[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    gib = 2**30
    for v in variants:
        r = res[v]
        print(f"{v:>4}: held {r['held_bytes'] / gib:.3f} GiB, build RSS +{r['build_rss_bytes'] / gib:.3f} GiB, "
              f"forward {r['forward_s']:.2f} s")
    ref = torch.load(res["bf16"]["output"])
    for v in variants[1:]:
        r = res[v]
        r["rel_err"] = rel(torch.load(r["output"]), ref)
        r["held_ratio"] = r["held_bytes"] / res["bf16"]["held_bytes"]
        r["rss_ratio"] = r["build_rss_bytes"] / res["bf16"]["build_rss_bytes"]
        r["forward_ratio"] = r["forward_s"] / res["bf16"]["forward_s"]
        print(f"{v} / bf16-kept: held {r['held_ratio']:.3f} (target <= 0.55), RSS {r['rss_ratio']:.3f}, forward time "
              f"{r['forward_ratio']:.3f}; output rel err {r['rel_err']:.2e} (target <= 2e-2)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
