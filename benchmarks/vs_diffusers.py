#!/usr/bin/env python
"""ltxcli against diffusers on the CPU: same random weights, same inputs, alternating runs, medians.

Cases (issue 6, point 6):

* ``transformer``: one forward of the full 2B DiT, 384 video tokens (latent 3x8x16), CFG batch 2,
  128 text tokens, float32. Target: ltxcli / diffusers time <= 0.85.
* ``vae``: one decode of the full 0.9.5-family decoder, latents 4x8x8 -> 25 frames of 256x256, float32.
  Targets: time ratio <= 0.85 (one process, alternating) and peak RSS ratio <= 0.8 (each decode in a fresh
  child process that builds only its own side; reported: the process peak, the peak during the decode and the
  decode's own increment over the RSS before it, from VmHWM reset through /proc/self/clear_refs).
* ``load``: a full-size 2B checkpoint (bf16 on disk: the official single file for ltxcli, a diffusers folder
  for diffusers), loaded into float32 until a first step can run, each load in a fresh child process with the
  page cache warm for both files. Target: ratio <= 0.5.
* ``step`` (issue 18, point 4): a denoising step inside ``Pipeline.generate`` on a bf16 checkpoint loaded by
  ``ltxcli.load_pipeline`` (what a user's CPU run holds: bf16-kept weights, this host's calibrated choices) against
  diffusers' transformer forward (``from_pretrained`` of the same weights into float32) on the very inputs that
  step's transformer call received (captured by a hook; positions rebuilt as pixel coordinates). 256x512x17
  (latent 3x8x16 = 384 tokens), CFG only (batch 2), float32 compute, ``--step-steps`` steps per generate, the
  decode skipped (``stream=True``). Times: each step from the pipeline's progress calls (host side, no device
  on the CPU to wait for) and the transformer call inside it. The checkpoint (transformer + random 0.9.5 VAE,
  bf16), the diffusers folder and a 1-layer T5 of width 4096 (the text stage is not what is timed) are written
  once under ``$LTX_BENCH_DIR``; ``--step-layers N`` builds an N-block model (a quick check of the case). A second
  figure times diffusers on the same inputs with the text padded to 128 columns, as its ``LTXPipeline`` pads every
  prompt (``max_sequence_length``), where ltxcli's pipeline pads to the longest prompt.

Both sides get identical weights: ltxcli's modules are built on the meta device and filled with random values
(``ltxcli.perf.bench.materialize_random_``), and diffusers' modules receive the SAME values through diffusers' own
key converters (``convert_ltx_{transformer,vae}_checkpoint_to_diffusers``). Outputs are compared before timing.

``--weights`` (transformer and vae cases): ``checkpoint`` (default) draws the linear and convolution weights in
bfloat16, the dtype of the released checkpoints, and gives each side what its float32 CPU load of such a
checkpoint gives: diffusers float32 copies of every tensor; ltxcli its loader's CPU default
(``keep_checkpoint_dtype``: those weights stay bfloat16 and are widened per call, everything else float32). ``float32`` draws them
in float32 and both sides hold float32 (ltxcli as with ``keep_checkpoint_dtype=False``). The load case always
reads a bfloat16 checkpoint; ``--ltx-convert-at-load`` times ltxcli with ``keep_checkpoint_dtype=False``.

This is a benchmark script, not a test; it needs diffusers (a test-only dependency of ltxcli).

    python benchmarks/vs_diffusers.py                   # all cases, 3 alternating pairs each
    python benchmarks/vs_diffusers.py transformer --pairs 5 --json out.json
    python benchmarks/vs_diffusers.py vae --profile      # also print torch.profiler tables of one run each
    python benchmarks/vs_diffusers.py vae-rss            # only the peak-RSS children (vae = vae-time + vae-rss)
    python benchmarks/vs_diffusers.py step --pairs 2     # a 2B step inside generate vs diffusers' forward
    python benchmarks/vs_diffusers.py step --pairs 1 --step-layers 1 --step-steps 2   # quick check of the case
    python benchmarks/vs_diffusers.py transformer --isa avx2   # as on an AVX2-only CPU (ATen, oneDNN and MKL limited)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ltxcli import calibrate  # noqa: E402
from ltxcli.models.configs import TRANSFORMER_2B, VAEConfig, official_vae_config  # noqa: E402
from ltxcli.perf.bench import materialize_random_  # noqa: E402

# diffusers' AutoencoderKLLTXVideo arguments for the 0.9.5 family (scripts/convert_ltx_to_diffusers.py)
DIFFUSERS_VAE_095 = dict(
    in_channels=3, out_channels=3, latent_channels=128,
    block_out_channels=(128, 256, 512, 1024, 2048), down_block_types=("LTXVideo095DownBlock3D",) * 4,
    decoder_block_out_channels=(256, 512, 1024), layers_per_block=(4, 6, 6, 2, 2),
    decoder_layers_per_block=(5, 5, 5, 5), spatio_temporal_scaling=(True, True, True, True),
    decoder_spatio_temporal_scaling=(True, True, True), decoder_inject_noise=(False, False, False, False),
    downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
    upsample_residual=(True, True, True), upsample_factor=(2, 2, 2), timestep_conditioning=True,
    patch_size=4, patch_size_t=1, resnet_norm_eps=1e-6, scaling_factor=1.0, encoder_causal=True,
    decoder_causal=False, spatial_compression_ratio=32, temporal_compression_ratio=8,
)
TOKENS_GRID = (3, 8, 16)  # latent frames, height, width -> 384 tokens
TEXT_LEN = 128
DIFFUSERS_TEXT_LEN = 128  # diffusers' LTXPipeline max_sequence_length default: it pads every prompt to this
VAE_LATENT = (4, 8, 8)  # -> 25 frames of 256x256 (--vae-latent changes it)
WEIGHTS = "checkpoint"  # or "float32" (--weights)
AMORTISE_STEPS = 20  # the paper setting's steps: the first step's one-time costs spread over them
CPU_CHOICES = "calibrated"  # or "fixed" (--cpu-choices)
DECODE_T = 0.05
CKPT_DIR = Path(os.environ.get("LTX_BENCH_DIR", "/tmp/ltx-bench-ckpt"))
STEP_LAYERS = TRANSFORMER_2B.num_layers  # --step-layers
STEP_STEPS = 3  # --step-steps: denoising steps per generate in the step case


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def rss_bytes() -> int:
    """Current resident set size of this process."""
    return _status_kib("VmRSS")


def max_rss_bytes() -> int:
    """Peak resident set size of this process image: ``VmHWM`` (``ru_maxrss`` is not used because Linux
    carries the parent's high-water mark over fork + exec into it)."""
    return _status_kib("VmHWM")


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` 5); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def environment() -> dict[str, Any]:
    import diffusers

    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
        "load_average": os.getloadavg(),
        # what the kernels run: ATen's capability and any instruction-set limit (--isa)
        "instruction_sets": calibrate.instruction_sets(),
    }


#: ``--isa``: the environment that makes an AVX-512 host run every library (ATen, oneDNN, MKL) as an AVX2-only
#: CPU does (issue 18's AVX2 EPYC), set before the process starts (the script re-executes itself with it).
ISA_ENV = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}


def _with_isa(isa: str) -> None:
    """Re-execute this script under ``ISA_ENV[isa]`` unless it already runs under it (children inherit it)."""
    want = ISA_ENV.get(isa, {})
    if any(os.environ.get(k) != v for k, v in want.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **want})


# --- model pairs with shared weights ------------------------------------------------------------------------


def narrow_dtype() -> torch.dtype | None:
    """What ltxcli's CPU loader keeps its layer weights in: bf16 with ``--weights checkpoint``."""
    return torch.bfloat16 if WEIGHTS == "checkpoint" else None


def for_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float32 tensors for diffusers' float32 model (copies of bf16 ones, the same tensors when float32).

    Consumes ``sd`` entry by entry, so a caller holding no other reference never has both copies resident."""
    out = {}
    for k in list(sd):
        v = sd.pop(k)
        out[k] = v.float() if v.is_floating_point() else v
    return out


def build_transformer_pair(
    dtype: torch.dtype, narrow: torch.dtype | None = None, num_layers: int | None = None
) -> tuple[torch.nn.Module, torch.nn.Module]:
    from diffusers import LTXVideoTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_ltx_transformer_checkpoint_to_diffusers

    from ltxcli.models.transformer import LTXVideoTransformer

    layers = num_layers or TRANSFORMER_2B.num_layers
    with torch.device("meta"):
        ours = LTXVideoTransformer(dataclasses.replace(TRANSFORMER_2B, causal_temporal_positioning=True,
                                                       num_layers=layers))
        theirs = LTXVideoTransformer3DModel(num_layers=layers)  # its other defaults are the 2B architecture
    materialize_random_(ours, device="cpu", dtype=dtype, seed=0, narrow=narrow)
    official = {f"model.diffusion_model.{k}": v for k, v in ours.state_dict().items()}
    converted = convert_ltx_transformer_checkpoint_to_diffusers(official)
    theirs.load_state_dict(for_diffusers(converted) if narrow else converted, strict=True, assign=True)
    return ours, theirs.eval().requires_grad_(False)


def transformer_inputs(dtype: torch.dtype) -> dict[str, Any]:
    from ltxcli.models.rope import latent_coords, pixel_coords

    f, h, w = TOKENS_GRID
    n, batch = f * h * w, 2
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, n, 128, generator=g).to(dtype)
    text = torch.randn(batch, TEXT_LEN, 4096, generator=g).to(dtype)
    mask = torch.zeros(batch, TEXT_LEN, dtype=torch.long)
    mask[0, :12] = 1  # negative prompt
    mask[1, :31] = 1  # prompt
    t = torch.tensor([0.7, 0.7])
    coords = pixel_coords(latent_coords(f, h, w), causal_fix=True)[None].repeat(batch, 1, 1)
    coords[:, 0] = coords[:, 0] * (1.0 / 25.0)
    return dict(x=x, text=text, mask=mask, t=t, coords=coords, grid=(f, h, w))


def run_ours_transformer(model: torch.nn.Module, inp: dict[str, Any]) -> torch.Tensor:
    return model(inp["x"], inp["text"], inp["t"][:, None], indices_grid=inp["coords"],
                 encoder_attention_mask=inp["mask"])


def run_theirs_transformer(model: torch.nn.Module, inp: dict[str, Any]) -> torch.Tensor:
    f, h, w = inp["grid"]
    return model(hidden_states=inp["x"], encoder_hidden_states=inp["text"], timestep=inp["t"] * 1000,
                 encoder_attention_mask=inp["mask"], num_frames=f, height=h, width=w,
                 video_coords=inp["coords"], return_dict=False)[0]


def build_vae_side(side: str, dtype: torch.dtype) -> torch.nn.Module:
    """One side's VAE with only the decoder (and latent statistics) materialised; the encoder stays on meta."""
    from ltxcli.models.vae import CausalVideoVAE

    with torch.device("meta"):
        ours = CausalVideoVAE(VAEConfig.from_official(official_vae_config("0.9.5")))
    materialize_random_(ours, device="cpu", dtype=dtype, seed=1, prefixes=("decoder.", "per_channel_statistics."),
                        narrow=narrow_dtype())
    if side == "ours":
        return ours
    sd = {f"vae.{k}": v for k, v in ours.state_dict().items()}
    del ours  # sd now holds the only references: for_diffusers frees each bf16 tensor once it is copied
    return diffusers_vae(sd)


def diffusers_vae(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
    """diffusers' 0.9.5 VAE decoder holding the values of ``sd`` (our VAE's state dict with ``vae.`` key
    prefixes; its entries are consumed), checked key for key; its encoder stays on meta."""
    from diffusers import AutoencoderKLLTXVideo
    from diffusers.loaders.single_file_utils import convert_ltx_vae_checkpoint_to_diffusers

    converted = convert_ltx_vae_checkpoint_to_diffusers(for_diffusers(sd))  # 0.9.5 from the (meta) encoder head
    keep = {k: v for k, v in converted.items() if not k.startswith("encoder.")}
    with torch.device("meta"):
        theirs = AutoencoderKLLTXVideo(**DIFFUSERS_VAE_095)
    missing, unexpected = theirs.load_state_dict(keep, strict=False, assign=True)
    bad = [k for k in missing if not k.startswith("encoder.")]
    if bad or unexpected:
        raise RuntimeError(f"diffusers VAE keys do not match: missing {bad[:3]}, unexpected {unexpected[:3]}")
    del converted, keep
    gc.collect()
    return theirs.eval().requires_grad_(False)


def vae_latents(dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.randn(1, 128, *VAE_LATENT, generator=g).to(dtype)


def vae_output_size() -> str:
    f, h, w = VAE_LATENT
    return f"{8 * (f - 1) + 1}x{32 * h}x{32 * w}"


def run_vae(side: str, vae: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    if side == "ours":
        return vae.decode(z, timestep=DECODE_T)
    # the statistics are identity (std 1, mean 0), so normalised and raw latents coincide
    temb = torch.full((z.shape[0],), DECODE_T)
    return vae.decode(z, temb=temb, return_dict=False)[0]


def apply_cpu_choices(transformer: torch.nn.Module | None = None, vae: torch.nn.Module | None = None) -> dict[str, Any]:
    """What a user's CPU run sets on ltxcli's models: with ``--cpu-choices calibrated`` (default) this host's
    measured choices (``ltxcli.calibrate``, as ``load_pipeline`` applies them); with ``fixed`` the rules before
    the calibration (oneDNN GEMMs, Winograd's shape rule). Returns what was set."""
    from ltxcli.models.transformer import set_cpu_gemm

    if CPU_CHOICES == "fixed":
        if transformer is not None:
            set_cpu_gemm(transformer, True)
        if vae is not None:
            vae.set_conv_algorithm("auto")
        return {"cpu_choices": "fixed", "onednn_gemm": True, "vae_conv": "auto"}
    tcfg = transformer.config if transformer is not None else TRANSFORMER_2B
    choices = calibrate.for_configs(tcfg, vae.config if vae is not None else None)
    calibrate.apply(choices, transformer if transformer is not None else torch.nn.Module(), vae)
    return {"cpu_choices": "calibrated", "onednn_gemm": choices.onednn_gemm, "vae_conv": choices.vae_conv,
            "calibration": choices.entries}


# --- timing helpers -----------------------------------------------------------------------------------------


def alternate(fns: dict[str, Any], pairs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(pairs):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
            print(f"  pair {i + 1}/{pairs} {name}: {times[name][-1]:.3f} s", flush=True)
    return times


def _medians(runs: dict[str, list[dict[str, Any]]], metrics: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per side, the median of each metric over its runs."""
    return {k: {m: statistics.median(r[m] for r in v) for m in metrics} for k, v in runs.items()}


def summarise(times: dict[str, list[float]]) -> dict[str, Any]:
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"runs_s": times, "median_s": med, "ratio": med["ltxcli"] / med["diffusers"]}


def profile(name: str, fn: Any, rows: int = 18) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    with prof(activities=[ProfilerActivity.CPU], record_shapes=False) as p:
        fn()
    table = p.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    return f"--- {name} ---\n{table}"


# --- cases --------------------------------------------------------------------------------------------------


def case_transformer(pairs: int, do_profile: bool) -> dict[str, Any]:
    dtype = torch.float32
    print(f"transformer: building the 2B DiT twice with shared random weights ({WEIGHTS})", flush=True)
    ours, theirs = build_transformer_pair(dtype, narrow_dtype())
    chosen = apply_cpu_choices(transformer=ours)
    print(f"  cpu choices: {chosen}", flush=True)
    inp = transformer_inputs(dtype)
    with torch.inference_mode():
        a = run_ours_transformer(ours, inp)  # also the warm-up of each side
        b = run_theirs_transformer(theirs, inp)
        err = rel(a, b)
        print(f"  outputs: rel err {err:.2e}", flush=True)
        del a, b
        times = alternate({"ltxcli": lambda: run_ours_transformer(ours, inp),
                           "diffusers": lambda: run_theirs_transformer(theirs, inp)}, pairs)
        prof_text = ""
        if do_profile:
            prof_text = profile("ltxcli transformer", lambda: run_ours_transformer(ours, inp)) + "\n" + profile(
                "diffusers transformer", lambda: run_theirs_transformer(theirs, inp))
            print(prof_text)
    res = summarise(times)
    res.update(rel_err=err, tokens=TOKENS_GRID[0] * TOKENS_GRID[1] * TOKENS_GRID[2], batch=2, text_len=TEXT_LEN,
               dtype="float32", weights=WEIGHTS, target="ratio <= 0.85", **chosen)
    if prof_text:
        res["profile"] = prof_text
    return res


def case_vae_time(pairs: int, do_profile: bool) -> dict[str, Any]:
    dtype = torch.float32
    print(f"vae: building the 0.9.5 decoder twice with shared random weights ({WEIGHTS})", flush=True)
    ours = build_vae_side("ours", dtype)
    theirs = diffusers_vae({f"vae.{k}": v for k, v in ours.state_dict().items()})
    chosen = apply_cpu_choices(vae=ours)
    print(f"  cpu choices: {chosen}", flush=True)
    z = vae_latents(dtype)
    with torch.inference_mode():
        a = run_vae("ours", ours, z)
        b = run_vae("diffusers", theirs, z)
        err = rel(a, b)
        print(f"  outputs {tuple(a.shape)}: rel err {err:.2e}", flush=True)
        del a, b
        times = alternate({"ltxcli": lambda: run_vae("ours", ours, z),
                           "diffusers": lambda: run_vae("diffusers", theirs, z)}, pairs)
        prof_text = ""
        if do_profile:
            prof_text = profile("ltxcli vae decode", lambda: run_vae("ours", ours, z)) + "\n" + profile(
                "diffusers vae decode", lambda: run_vae("diffusers", theirs, z))
            print(prof_text)
    res = summarise(times)
    res.update(rel_err=err, latents=list(VAE_LATENT), output=vae_output_size(), dtype="float32", weights=WEIGHTS,
               target="ratio <= 0.85", **chosen)
    if prof_text:
        res["profile"] = prof_text
    return res


def case_vae_rss(pairs: int) -> dict[str, Any]:
    print(f"vae: peak RSS, one fresh child process per decode ({vae_output_size()})", flush=True)
    rss: dict[str, list[dict[str, int]]] = {"ltxcli": [], "diffusers": []}
    for i in range(pairs):
        for side, key in (("ours", "ltxcli"), ("diffusers", "diffusers")):
            out = child("vae-rss", side, "--vae-latent", ",".join(map(str, VAE_LATENT)), "--weights", WEIGHTS)
            rss[key].append(out)
            print(f"  pair {i + 1}/{pairs} {key}: peak RSS {out['peak_rss'] / 1e9:.3f} GB, decode increment "
                  f"{out['decode_increment'] / 1e9:.3f} GB", flush=True)
    metrics = ("peak_rss", "decode_peak_rss", "decode_increment", "rss_before", "build_peak_rss")
    med = _medians(rss, metrics)
    return {
        "runs": rss, "median": med,
        "peak_ratio": med["ltxcli"]["peak_rss"] / med["diffusers"]["peak_rss"],
        "decode_peak_ratio": med["ltxcli"]["decode_peak_rss"] / med["diffusers"]["decode_peak_rss"],
        "increment_ratio": med["ltxcli"]["decode_increment"] / med["diffusers"]["decode_increment"],
        "target": "peak RSS ratio <= 0.8", "output": vae_output_size(), "weights": WEIGHTS,
    }


def child(kind: str, side: str, *extra: str) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--side", side, *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} {side} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = wall
    return out


def child_vae_rss(side: str) -> dict[str, int]:
    vae = build_vae_side(side, torch.float32)
    z = vae_latents(torch.float32)
    gc.collect()
    build_peak = max_rss_bytes()
    if not reset_peak_rss():
        raise SystemExit("cannot reset the peak RSS (/proc/self/clear_refs): no RSS figures on this system")
    before = rss_bytes()
    with torch.inference_mode():
        run_vae(side, vae, z)
    decode_peak = max_rss_bytes()
    return {"build_peak_rss": build_peak, "rss_before": before, "decode_peak_rss": decode_peak,
            "peak_rss": max(build_peak, decode_peak), "decode_increment": decode_peak - before}


# --- loading ------------------------------------------------------------------------------------------------


def prepare_checkpoints() -> tuple[Path, Path]:
    """Write the full-size 2B random checkpoint once: official single file and diffusers folder (bf16)."""
    single = CKPT_DIR / "ltxv-2b-random.safetensors"
    folder = CKPT_DIR / "diffusers"
    if single.is_file() and (folder / "transformer" / "config.json").is_file():
        return single, folder
    CKPT_DIR.mkdir(parents=True, exist_ok=True)
    stat = os.statvfs(CKPT_DIR)
    free = stat.f_bavail * stat.f_frsize
    if free < 10e9:
        raise SystemExit(f"{CKPT_DIR}: {free / 1e9:.1f} GB free, need about 8 GB for the two bf16 copies")
    print(f"load: writing the full-size 2B checkpoint (bf16) to {CKPT_DIR}", flush=True)
    from ltxcli.loading import save_official_checkpoint

    ours, theirs = build_transformer_pair(torch.bfloat16)
    save_official_checkpoint(single, transformer=ours)
    theirs.save_pretrained(folder / "transformer", safe_serialization=True)
    del ours, theirs
    gc.collect()
    return single, folder


def warm_cache(paths: list[Path]) -> None:
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            with open(p, "rb") as f:
                while f.read(64 << 20):
                    pass


def child_load(side: str, dtype_name: str, convert_at_load: bool) -> dict[str, Any]:
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    single, folder = CKPT_DIR / "ltxv-2b-random.safetensors", CKPT_DIR / "diffusers"
    t0 = time.perf_counter()
    if side == "ours":
        from ltxcli.loading import load_transformer

        t1 = time.perf_counter()
        # default (None): the CPU keeps the bf16 weights and widens them per call; False converts at load
        model = load_transformer(single, device="cpu", dtype=dtype,
                                 keep_checkpoint_dtype=False if convert_at_load else None)
    else:
        from diffusers import LTXVideoTransformer3DModel

        t1 = time.perf_counter()
        model = LTXVideoTransformer3DModel.from_pretrained(folder, subfolder="transformer", torch_dtype=dtype)
        model.eval().requires_grad_(False)
    t2 = time.perf_counter()
    # a first (tiny) step: 8 tokens, 8 text tokens, batch 1 -- touches every weight once
    from ltxcli.models.rope import latent_coords, pixel_coords

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 8, 128, generator=g).to(dtype)
    text = torch.randn(1, 8, 4096, generator=g).to(dtype)
    coords = pixel_coords(latent_coords(2, 2, 2), causal_fix=True)[None]
    with torch.inference_mode():
        if side == "ours":
            model(x, text, torch.tensor([[0.5]]), indices_grid=coords)
        else:
            model(hidden_states=x, encoder_hidden_states=text, timestep=torch.tensor([500.0]),
                  encoder_attention_mask=torch.ones(1, 8), num_frames=2, height=2, width=2,
                  video_coords=coords, return_dict=False)
    t3 = time.perf_counter()
    return {"import_s": t1 - t0, "load_s": t2 - t1, "first_step_s": t3 - t2, "load_plus_first_step_s": t3 - t1,
            "peak_rss": max_rss_bytes()}


def case_load(pairs: int, dtype_name: str, convert_at_load: bool) -> dict[str, Any]:
    single, folder = prepare_checkpoints()
    print(f"load: {single.stat().st_size / 1e9:.2f} GB single file vs diffusers folder, into {dtype_name}", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {"ltxcli": [], "diffusers": []}
    for i in range(pairs):
        for side, key in (("ours", "ltxcli"), ("diffusers", "diffusers")):
            warm_cache([single, folder])
            out = child("load", side, "--dtype", dtype_name, *(["--ltx-convert-at-load"] if convert_at_load else []))
            runs[key].append(out)
            print(f"  pair {i + 1}/{pairs} {key}: load {out['load_s']:.2f} s, +first step "
                  f"{out['load_plus_first_step_s']:.2f} s, process {out['process_wall_s']:.2f} s", flush=True)
    metrics = ("load_s", "load_plus_first_step_s", "process_wall_s", "import_s", "peak_rss")
    med = _medians(runs, metrics)
    return {
        "runs": runs, "median": med, "dtype": dtype_name, "checkpoint_dtype": "bfloat16",
        "ltxcli_keep_checkpoint_dtype": not convert_at_load and dtype_name == "float32",
        "ratio_load": med["ltxcli"]["load_s"] / med["diffusers"]["load_s"],
        "ratio_load_plus_first_step": med["ltxcli"]["load_plus_first_step_s"] / med["diffusers"]["load_plus_first_step_s"],
        "ratio_process": med["ltxcli"]["process_wall_s"] / med["diffusers"]["process_wall_s"],
        "target": "ratio <= 0.5",
    }


# --- a step inside generate -------------------------------------------------------------------------------------


def prepare_step_checkpoint() -> tuple[Path, Path, Path]:
    """The step case's files, written once: the official single file (2B transformer with ``STEP_LAYERS`` blocks
    + the 0.9.5 VAE, random, bf16), the diffusers transformer folder with the same weights, a text encoder."""
    tag = f"L{STEP_LAYERS}"
    single, folder, te = CKPT_DIR / f"step-{tag}.safetensors", CKPT_DIR / f"step-{tag}-diffusers", CKPT_DIR / "step-t5"
    if single.is_file() and (folder / "transformer" / "config.json").is_file() and (te / "tokenizer").is_dir():
        return single, folder, te
    CKPT_DIR.mkdir(parents=True, exist_ok=True)
    stat = os.statvfs(CKPT_DIR)
    need = 10e9 * STEP_LAYERS / TRANSFORMER_2B.num_layers + 2e9
    if stat.f_bavail * stat.f_frsize < need:
        raise SystemExit(f"{CKPT_DIR}: {stat.f_bavail * stat.f_frsize / 1e9:.1f} GB free, need {need / 1e9:.0f} GB")
    print(f"step: writing the {STEP_LAYERS}-block 2B checkpoint (bf16, with a random 0.9.5 VAE) to {CKPT_DIR}",
          flush=True)
    from transformers import T5Config, T5EncoderModel

    from ltxcli.loading import save_official_checkpoint
    from ltxcli.models.vae import CausalVideoVAE
    from ltxcli.tiny import make_tokenizer

    ours, theirs = build_transformer_pair(torch.bfloat16, num_layers=STEP_LAYERS)
    with torch.device("meta"):
        vae = CausalVideoVAE(VAEConfig.from_official(official_vae_config("0.9.5")))
    materialize_random_(vae, device="cpu", dtype=torch.bfloat16, seed=1)
    save_official_checkpoint(single, transformer=ours, vae=vae)
    theirs.save_pretrained(folder / "transformer", safe_serialization=True)
    del ours, theirs, vae
    tok = make_tokenizer()
    t5 = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=TRANSFORMER_2B.caption_channels, d_kv=64, d_ff=256,
                                 num_layers=1, num_heads=2, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                                 is_encoder_decoder=False, use_cache=False))
    tok.save_pretrained(te / "tokenizer")
    t5.save_pretrained(te / "text_encoder", safe_serialization=True)
    gc.collect()
    return single, folder, te


def case_step(pairs: int) -> dict[str, Any]:
    from diffusers import LTXVideoTransformer3DModel

    import ltxcli
    from ltxcli.models.rope import latent_coords, pixel_coords

    single, folder, te = prepare_step_checkpoint()
    f, h, w = TOKENS_GRID
    fps = 25.0
    kw = dict(height=h * 32, width=w * 32, num_frames=(f - 1) * 8 + 1, frame_rate=fps, steps=STEP_STEPS, seed=0,
              guidance_scale=3.0, stg_scale=0.0, enhance_prompt="off")
    t0 = time.perf_counter()
    pipe = ltxcli.load_pipeline(single, text_encoder=te, device="cpu", download=False)
    ltx_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = LTXVideoTransformer3DModel.from_pretrained(folder, subfolder="transformer", torch_dtype=torch.float32)
    theirs = theirs.eval().requires_grad_(False)
    theirs_load = time.perf_counter() - t0
    print(f"step: loaded ltxcli's pipeline in {ltx_load:.1f} s, diffusers' transformer in {theirs_load:.1f} s; "
          f"{pipe.transformer.config.num_layers} blocks, {f * h * w} tokens, CFG", flush=True)

    calls: list[float] = []
    captured: dict[str, Any] = {}

    def pre(_m: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        captured.update(x=args[0], text=args[1], t=args[2], mask=kwargs.get("encoder_attention_mask"))
        captured["start"] = time.perf_counter()

    def post(_m: torch.nn.Module, _args: tuple, _kwargs: dict, out: torch.Tensor) -> None:
        calls.append(time.perf_counter() - captured["start"])
        captured["out"] = out

    marks: list[float] = []

    def progress(stage: str, _done: int, _total: int) -> None:
        if stage == "denoise":
            marks.append(time.perf_counter())

    handles = [pipe.transformer.register_forward_pre_hook(pre, with_kwargs=True),
               pipe.transformer.register_forward_hook(post, with_kwargs=True)]
    ours_steps: list[float] = []
    ours_calls: list[float] = []
    first_steps: list[float] = []

    def run_ours() -> None:
        calls.clear()
        marks.clear()
        pipe.generate("a red car drives along a mountain road at sunset", progress=progress, stream=True, **kw)
        steps = [b - a for a, b in itertools.pairwise(marks)]
        # the first step of a generate pays one-time costs (scratch buffers, the text's keys and values): the others
        # are the steady state; the first is kept apart to amortise it over a real run's steps
        first_steps.append(steps[0])
        ours_steps.extend(steps[1:] or steps)
        ours_calls.extend(calls[1:] or calls)

    run_ours()  # warm-up, and the inputs of a step for diffusers
    batch, n = captured["x"].shape[:2]
    coords = pixel_coords(latent_coords(f, h, w), causal_fix=pipe.transformer.config.causal_temporal_positioning)
    coords = coords[None].repeat(batch, 1, 1).to(torch.float32)
    coords[:, 0] = coords[:, 0] * (1.0 / fps)
    inp = dict(x=captured["x"], text=captured["text"], mask=captured["mask"], t=captured["t"].reshape(batch),
               coords=coords, grid=(f, h, w))
    with torch.inference_mode():
        err = rel(run_theirs_transformer(theirs, inp), captured["out"])
    print(f"  diffusers on the captured inputs vs the call inside generate: rel err {err:.2e} (batch {batch}, "
          f"{n} tokens, {inp['text'].shape[1]} text tokens)", flush=True)
    ours_steps.clear()
    ours_calls.clear()
    first_steps.clear()
    # diffusers as its own LTXPipeline calls it: the text padded to its max_sequence_length (128 columns), where
    # ltxcli pads to the longest prompt (ltxcli.text); a second figure beside the same-input one
    cols = int(inp["text"].shape[1])
    pad = max(DIFFUSERS_TEXT_LEN - cols, 0)
    padded = dict(inp, text=torch.nn.functional.pad(inp["text"], (0, 0, 0, pad)),
                  mask=torch.nn.functional.pad(inp["mask"], (0, pad)))
    with torch.inference_mode():
        run_theirs_transformer(theirs, inp)  # warm-up
        times = alternate({"ltxcli": run_ours, "diffusers": lambda: run_theirs_transformer(theirs, inp),
                           "diffusers_padded": lambda: run_theirs_transformer(theirs, padded)}, pairs)
    for h_ in handles:
        h_.remove()
    step_med, call_med = statistics.median(ours_steps), statistics.median(ours_calls)
    theirs_med = statistics.median(times["diffusers"])
    padded_med = statistics.median(times["diffusers_padded"])
    first_med = statistics.median(first_steps)
    amortised = (first_med + (AMORTISE_STEPS - 1) * step_med) / AMORTISE_STEPS  # a 20-step run's mean step
    return {"ltxcli_first_step_s": first_steps, "ratio_amortised_20": amortised / theirs_med,"ltxcli_step_s": ours_steps, "ltxcli_call_s": ours_calls, "diffusers_forward_s": times["diffusers"],
            "diffusers_forward_padded_s": times["diffusers_padded"],
            "median_s": {"ltxcli_step": step_med, "ltxcli_call": call_med, "diffusers_forward": theirs_med,
                         "diffusers_forward_padded": padded_med, "ltxcli_first_step": first_med},
            "ratio": step_med / theirs_med, "ratio_call": call_med / theirs_med, "rel_err": err,
            "ratio_vs_padded": step_med / padded_med, "diffusers_text_len": cols + pad,
            "tokens": n, "batch": batch, "text_len": int(inp["text"].shape[1]), "layers": STEP_LAYERS,
            "steps_per_generate": STEP_STEPS, "load_s": {"ltxcli_pipeline": ltx_load, "diffusers": theirs_load},
            "checkpoint": str(single), "target": "ratio <= 0.85"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", help="transformer, vae, load, step (default: the first three)")
    parser.add_argument("--pairs", type=int, default=3, help="alternating (ltxcli, diffusers) pairs per case")
    parser.add_argument("--load-dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--profile", action="store_true", help="print torch.profiler tables (transformer, vae)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--vae-latent", default="4,8,8", help="latent frames,height,width of the vae cases")
    parser.add_argument("--weights", default="checkpoint", choices=["checkpoint", "float32"],
                        help="random weights drawn in bf16 and held as each side's CPU load holds them (default), "
                             "or drawn and held in float32 by both")
    parser.add_argument("--ltx-convert-at-load", action="store_true",
                        help="load case: ltxcli converts to float32 at load (keep_checkpoint_dtype=False)")
    parser.add_argument("--cpu-choices", default="calibrated", choices=["calibrated", "fixed"],
                        help="ltxcli's CPU choices: this host's measured ones (default, what a user's run gets) or the "
                             "fixed rules before calibration (oneDNN GEMMs, Winograd by shape)")
    parser.add_argument("--step-layers", type=int, default=TRANSFORMER_2B.num_layers,
                        help="step case: transformer blocks of the checkpoint it writes (default: the 2B's 28)")
    parser.add_argument("--step-steps", type=int, default=3,
                        help="step case: denoising steps per generate (each but the first is timed)")
    parser.add_argument("--isa", default="native", choices=["native", *ISA_ENV],
                        help="run every library as on a CPU with only these instructions (avx2: an AVX2-only host)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _with_isa(args.isa)

    global VAE_LATENT, WEIGHTS, CPU_CHOICES, STEP_LAYERS, STEP_STEPS
    VAE_LATENT = tuple(int(v) for v in args.vae_latent.split(","))  # type: ignore[assignment]
    WEIGHTS = args.weights
    CPU_CHOICES = args.cpu_choices
    STEP_LAYERS, STEP_STEPS = args.step_layers, args.step_steps
    cases = args.cases or ["transformer", "vae", "load"]
    unknown = set(cases) - {"transformer", "vae", "vae-time", "vae-rss", "load", "step"}
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))} "
                     "(use transformer, vae, vae-time, vae-rss, load, step)")
    if "vae" in cases:
        cases = [c for c in cases if c != "vae"] + ["vae-time", "vae-rss"]
    if args.child == "vae-rss":
        print(json.dumps(child_vae_rss(args.side)))
        return
    if args.child == "load":
        print(json.dumps(child_load(args.side, args.dtype, args.ltx_convert_at_load)))
        return

    results: dict[str, Any] = {"environment": environment(), "command": " ".join(sys.argv)}
    print(json.dumps(results["environment"]), flush=True)
    for case in cases:
        if case == "transformer":
            results["transformer"] = case_transformer(args.pairs, args.profile)
        elif case == "vae-time":
            results["vae"] = case_vae_time(args.pairs, args.profile)
        elif case == "vae-rss":
            results["vae_rss"] = case_vae_rss(args.pairs)
        elif case == "step":
            results["step"] = case_step(args.pairs)
        else:
            results["load"] = case_load(args.pairs, args.load_dtype, args.ltx_convert_at_load)
    print("\nsummary (ltxcli / diffusers, medians):")
    if "transformer" in results:
        r = results["transformer"]
        print(f"  transformer forward: {r['median_s']['ltxcli']:.2f} s / {r['median_s']['diffusers']:.2f} s "
              f"= {r['ratio']:.3f} (target <= 0.85)")
    if "vae" in results:
        r = results["vae"]
        print(f"  vae decode time:     {r['median_s']['ltxcli']:.2f} s / {r['median_s']['diffusers']:.2f} s "
              f"= {r['ratio']:.3f} (target <= 0.85)")
    if "vae_rss" in results:
        r = results["vae_rss"]
        m = r["median"]
        print(f"  vae decode peak RSS: {m['ltxcli']['peak_rss'] / 1e9:.2f} GB / {m['diffusers']['peak_rss'] / 1e9:.2f} GB "
              f"= {r['peak_ratio']:.3f} (target <= 0.8); during the decode "
              f"{m['ltxcli']['decode_peak_rss'] / 1e9:.2f} / {m['diffusers']['decode_peak_rss'] / 1e9:.2f} GB "
              f"= {r['decode_peak_ratio']:.3f}; decode's own increment "
              f"{m['ltxcli']['decode_increment'] / 1e9:.2f} / {m['diffusers']['decode_increment'] / 1e9:.2f} GB "
              f"= {r['increment_ratio']:.3f}")
    if "step" in results:
        r = results["step"]
        m = r["median_s"]
        print(f"  step in generate ({r['layers']} blocks): {m['ltxcli_step']:.2f} s / diffusers forward "
              f"{m['diffusers_forward']:.2f} s = {r['ratio']:.3f} (target <= 0.85); the transformer call alone "
              f"{m['ltxcli_call']:.2f} s = {r['ratio_call']:.3f}; rel err {r['rel_err']:.2e}; first step "
              f"{m['ltxcli_first_step']:.2f} s, the mean step of a 20-step run {r['ratio_amortised_20']:.3f}")
        print(f"  the same against diffusers on the text as its pipeline pads it ({r['diffusers_text_len']} columns, "
              f"ltxcli {r['text_len']}): {m['diffusers_forward_padded']:.2f} s = {r['ratio_vs_padded']:.3f}")
    if "load" in results:
        r = results["load"]
        m = r["median"]
        print(f"  load 2B ({r['dtype']}):    {m['ltxcli']['load_s']:.2f} s / {m['diffusers']['load_s']:.2f} s "
              f"= {r['ratio_load']:.3f} (target <= 0.5); with a first step {r['ratio_load_plus_first_step']:.3f}; "
              f"whole process {r['ratio_process']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
