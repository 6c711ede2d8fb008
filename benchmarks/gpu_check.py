#!/usr/bin/env python
"""Every GPU figure of ltxcli in one call, on one GPU, within a time budget (issue 18, point 3).

Steps (each a child process with its own timeout, so one failure costs only its own row):

* ``gpu-tests``: the test suite's GPU-only tests (``pytest -k test_gpu_`` over the files that define them).
* ``paper-*``: ``ltx bench --random-weights`` at the paper setting (2B 0.9.5, 768x512x121, 20 steps, CFG) in
  bfloat16, with fp8 matmuls (``--dtype fp8``, compute capability 8.9+), with ``--compile``, with fp8 weight
  storage and int8 weight storage (``--weights-dtype fp8`` / ``int8`` through the library), and with each
  attention backend that imports here.
* ``distilled``: the 2B 0.9.8-distilled preset at 1216x704x121; ``13b-distilled``: the 13B 0.9.8-distilled
  multi-scale preset at 768x512x121.
* ``vs-diffusers``: diffusers' ``LTXVideoTransformer3DModel`` and ltxcli's transformer on the SAME random 2B
  weights in this process (``benchmarks/vs_diffusers.py``'s builders), one CFG step at the paper's tokens each,
  alternating: the speed ratio of the step that makes up the denoising time.
* ``bf16-vs-fp32``: the full-size random 2B transformer, one forward at the paper's tokens in float32 and in
  bfloat16 from the same weights: relative error.
* ``teacache-0.03`` / ``teacache-0.05``: the paper run in bfloat16 with ``ltx bench --cache teacache:T``: time,
  and the transformer branch calls skipped out of those run (the summary gives the speed-up over ``paper-bf16``).

They run in the order of :func:`plan`: the issue's target figures first, ``--compile``, weight storage and the 13B
last. It prints a line per step on stderr as it ends, then the machine and one table last, and writes one JSON
file (``--json``, default ``gpu_check.json``), rewritten after every step (``"complete": false`` until the end).
``--dry-run`` prints the plan (no GPU needed). A step whose estimate no longer fits the remaining budget, or
whose package does not import, is skipped, not started.
Needs PyTorch with CUDA; diffusers and PyAV come from local wheels where the machine has no network
(BENCHMARKS.md shows the device-tool command).

    python benchmarks/gpu_check.py --dry-run
    python benchmarks/gpu_check.py --json $OUT/gpu_check.json --budget 540
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import importlib.metadata
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = 1
PAPER = ["--height", "512", "--width", "768", "--num-frames", "121", "--steps", "20"]
PAPER_PRESET = "ltxv-2b-0.9.5"  # a base (CFG) 2B preset
ATTENTION = ("sdpa", "flash3", "flash2", "sage")
TARGETS = {"paper-bf16": "<= 2.0 s end to end", "paper-fp8": "<= 1.4 s end to end",
           "distilled": "<= 1.2 s end to end", "vs-diffusers": ">= 1.5x diffusers' speed",
           "paper-bf16 utilisation": ">= 50% of bfloat16 peak in the transformer steps"}


@dataclass
class Step:
    name: str
    what: str
    command: list[str]
    estimate_s: float
    # comma-separated, checked before running: "av" (the step builds ltxcli's Pipeline, whose media module
    # imports PyAV), "fp8", "attention:NAME"
    needs: str = ""
    status: str = "planned"  # planned / running / ok / failed / skipped
    reason: str = ""
    wall_s: float | None = None
    result: dict[str, Any] = field(default_factory=dict)


def _ltx(*args: str) -> list[str]:
    return [sys.executable, "-m", "ltxcli", *args]


def _bench(preset: str, *extra: str, size: list[str] | None = None) -> list[str]:
    return _ltx("bench", "--random-weights", "--preset", preset, *(PAPER if size is None else size),
                "--warmup", "1", "--repeats", "1", "--json", "--quiet", *extra)


def _env() -> dict[str, str]:
    """This checkout first on the children's path, before what the caller put there (carried wheels)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def _child(name: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", name]


def gpu_test_files() -> list[Path]:
    """The test files that define GPU-only tests (``def test_gpu_``). The child pytest collects only these: the
    other files import the official ``ltx_video`` package, diffusers or PyAV at module level, which a GPU machine
    may lack, and one collection error makes pytest run no test at all."""
    return sorted(p for p in (ROOT / "tests").glob("test_*.py") if "\ndef test_gpu_" in p.read_text())


def plan() -> list[Step]:
    """Every step, in the order it runs (estimates on an H100; the slow ones last)."""
    # -rfEs: a line per failed, erroring or skipped test (with its reason) in the output the row reads
    tests = [sys.executable, "-m", "pytest", *map(str, gpu_test_files()), "-q", "-rfEs", "-k", "test_gpu_",
             "-p", "no:cacheprovider"]
    attention = [Step(f"paper-attention-{a}", f"ltx bench, paper setting, bfloat16, --attention {a}",
                      _bench(PAPER_PRESET, "--dtype", "bfloat16", "--attention", a), 35, needs=f"av,attention:{a}")
                 for a in ATTENTION]
    # The target figures first; --compile, the storage child and the 13B (the longest, whose timeouts
    # reach 2.5x their estimates) last, so one of those hanging to its timeout cannot starve the targets.
    return [
        Step("gpu-tests", "the suite's GPU-only tests", tests, 60),
        Step("paper-bf16", "ltx bench, paper setting, bfloat16", _bench(PAPER_PRESET, "--dtype", "bfloat16"), 35,
             needs="av"),
        Step("paper-fp8", "ltx bench, paper setting, fp8 matmuls", _bench(PAPER_PRESET, "--dtype", "fp8"), 35,
             needs="av,fp8"),
        Step("distilled", "ltx bench, 2B 0.9.8-distilled, 1216x704x121",
             _bench("ltxv-2b-0.9.8-distilled", "--dtype", "bfloat16",
                    size=["--height", "704", "--width", "1216", "--num-frames", "121"]), 40, needs="av"),
        Step("vs-diffusers", "one CFG step at the paper's tokens, ltxcli vs diffusers, same weights",
             _child("vs-diffusers"), 60),
        Step("teacache-0.03", "ltx bench, paper setting, bfloat16, --cache teacache:0.03",
             _bench(PAPER_PRESET, "--dtype", "bfloat16", "--cache", "teacache:0.03"), 35, needs="av"),
        Step("teacache-0.05", "ltx bench, paper setting, bfloat16, --cache teacache:0.05",
             _bench(PAPER_PRESET, "--dtype", "bfloat16", "--cache", "teacache:0.05"), 35, needs="av"),
        Step("bf16-vs-fp32", "full-size 2B forward, bfloat16 vs float32 from the same weights",
             _child("bf16-vs-fp32"), 40),
        *attention,
        Step("paper-compile", "ltx bench, paper setting, bfloat16, --compile",
             _bench(PAPER_PRESET, "--dtype", "bfloat16", "--compile"), 90, needs="av"),
        Step("paper-fp8-storage", "paper setting, bfloat16, fp8 and int8 weight storage (--weights-dtype fp8/int8)",
             _child("fp8-storage"), 70, needs="av"),
        Step("13b-distilled", "ltx bench, 13B 0.9.8-distilled multi-scale, 768x512x121",
             _bench("ltxv-13b-0.9.8-distilled", "--dtype", "bfloat16",
                    size=["--height", "512", "--width", "768", "--num-frames", "121"]), 90, needs="av"),
    ]


# --- what this machine has ----------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """torch, CUDA, the GPU and the optional packages (without importing ltxcli's heavy parts)."""
    import torch

    env: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
                           "gpu": None, "capability": None}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        env["memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
    errors: dict[str, str] = {}
    for pkg in ("diffusers", "av", "flash_attn", "flash_attn_interface", "sageattention", "triton"):
        try:
            module = importlib.import_module(pkg)
        except Exception as exc:  # absent, or a wheel that does not load here (ABI, missing library)
            env[pkg] = None
            errors[pkg] = f"{type(exc).__name__}: {exc}"[:200]
            continue
        # FlashAttention 3's flash_attn_interface has no __version__: imported is what counts
        env[pkg] = str(getattr(module, "__version__", None) or _dist_version(pkg) or "installed")
    env["import_errors"] = errors
    return env


def _dist_version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version({"flash_attn_interface": "flash_attn_3"}.get(pkg, pkg))
    except Exception:
        return None


def machine_line(env: dict[str, Any]) -> str:
    """The device and versions the figures belong to, in one line (BENCHMARKS.md names them next to each)."""
    gpu = f"{env['gpu']} (compute capability {env.get('capability')})" if env.get("gpu") else "no CUDA GPU"
    packages = ", ".join(f"{pkg} {env[pkg] or '-'}" for pkg in ("diffusers", "av", "triton", "flash_attn",
                                                                "flash_attn_interface", "sageattention") if pkg in env)
    return (f"{gpu}; torch {env.get('torch')} (CUDA {env.get('cuda')}), Python {env.get('python')}"
            + (f"; {packages}" if packages else ""))


def unmet(step: Step, env: dict[str, Any]) -> str | None:
    """Why ``step`` cannot run here (skipped cleanly), or None."""
    cap = tuple(int(x) for x in env["capability"].split(".")) if env.get("capability") else None
    needs = [n for n in step.needs.split(",") if n]
    if "av" in needs and env.get("av") is None:
        return f"PyAV does not import{_why(env, 'av')}: ltxcli's pipeline needs it (a local wheel, see BENCHMARKS.md)"
    if "fp8" in needs and (cap is None or cap < (8, 9)):
        return f"fp8 matmuls need compute capability 8.9+ (this GPU: {env.get('capability')})"
    for need in needs:
        if not need.startswith("attention:"):
            continue
        name = need.split(":", 1)[1]
        pkg = {"flash3": "flash_attn_interface", "flash2": "flash_attn", "sage": "sageattention"}.get(name)
        if pkg is not None and env.get(pkg) is None:
            return f"--attention {name}: its package ({pkg}) does not import{_why(env, pkg)}"
    if step.name == "vs-diffusers" and env.get("diffusers") is None:
        return f"diffusers does not import{_why(env, 'diffusers')} (install it from a local wheel, see BENCHMARKS.md)"
    return None


def _why(env: dict[str, Any], pkg: str) -> str:
    error = env.get("import_errors", {}).get(pkg)
    return f" ({error})" if error else ""


# --- running ------------------------------------------------------------------------------------------------


def _last_json(text: str) -> dict[str, Any]:
    """The last JSON object the child printed (one line, or the whole output), {} if none: a number or a list
    is no result."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                out = json.loads(line)
            except ValueError:
                continue
            if isinstance(out, dict):
                return out
    try:
        out = json.loads(text)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def figures(step: Step, out: dict[str, Any]) -> dict[str, Any]:
    """The figures a step's row shows, from its child's JSON (``ltx bench --json`` or a ``--child`` object)."""
    if "stages" in out:  # ltx bench
        stages = out["stages"]
        total = stages.get("total", {})
        denoise = stages.get("denoise", {})
        fig = {"total_s": total.get("median_s", total.get("seconds")), "denoise_s": denoise.get("median_s"),
               "denoise_utilisation": denoise.get("utilisation"), "peak_memory_bytes": out.get("peak_memory_bytes"),
               "transformer_calls": out.get("transformer_calls")}
        cache = out.get("cache") or {}
        if cache.get("mode", "none") != "none":  # branch evaluations of the transformer, and how many were skipped
            fig["branch_calls"], fig["branch_calls_skipped"] = cache.get("calls"), cache.get("skipped")
        return fig
    return out


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(proc.pid, signal.SIGKILL)


def _run_child(command: list[str], timeout: float) -> subprocess.CompletedProcess | None:
    """Run ``command`` in its own process group; None when it timed out. The whole group is killed at the end
    (also after an interruption), so workers the child started (torch.compile's compile pool, a pytest child)
    neither outlive the step, holding the GPU under the next one, nor keep its output pipes open."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=_env(), preexec_fn=os.setpgrp)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        if proc.returncode == -signal.SIGKILL:  # else it had ended by itself; a worker held its pipes open
            return None
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    _kill_group(proc)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def run_step(step: Step, timeout: float) -> None:
    t0 = time.perf_counter()
    proc = _run_child(step.command, timeout)
    step.wall_s = time.perf_counter() - t0
    if proc is None:
        step.status, step.reason = "failed", f"timed out after {timeout:.0f} s"
        return
    if step.name == "gpu-tests":
        lines = proc.stdout.strip().splitlines()
        tail = lines[-1:] or [""]
        # the short summary's lines: "FAILED tests/x.py::name - why", "SKIPPED [1] tests/x.py:12: why"
        noted = [ln for ln in lines if ln.startswith(("FAILED ", "ERROR ", "SKIPPED "))]
        step.result = {"summary": tail[0], "tests": noted}
        # exit 5: no test collected (no GPU tests selected) counts as a failure too
        step.status = "ok" if proc.returncode == 0 else "failed"
        step.reason = "" if proc.returncode == 0 else tail[0]
        return
    out = _last_json(proc.stdout)
    if proc.returncode != 0 or not out:
        step.status = "failed"
        step.reason = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:300]
        return
    step.status, step.result = "ok", figures(step, out)


def _row(step: Step) -> str:
    """The figures of a step that ran, or why it did not (the table's last column)."""
    if step.status == "planned":
        return f"~{step.estimate_s:.0f} s: {step.what}"
    return step.reason or ", ".join(f"{k} {_fmt(v)}" for k, v in step.result.items() if v is not None)


def run_all(steps: list[Step], env: dict[str, Any], budget_s: float, dry_run: bool,
            on_step: Callable[[], None] | None = None) -> None:
    """Run (or skip) each step in turn. ``on_step`` is called when a step starts and when it ends, so a caller
    can save the results so far: a run cut short (the device tool's limit) still leaves every finished row."""
    start = time.perf_counter()
    saved = on_step or (lambda: None)
    for step in steps:
        if dry_run:
            continue
        reason = unmet(step, env)
        left = budget_s - (time.perf_counter() - start)
        if reason is None and step.estimate_s > left:
            reason = f"over the time budget ({left:.0f} s left, estimated {step.estimate_s:.0f} s)"
        if reason is not None:
            step.status, step.reason = "skipped", reason
            saved()
            continue
        print(f"[gpu_check] {step.name}: {shlex.join(step.command)}", file=sys.stderr, flush=True)
        try:  # (a signal that comes while the running row is saved is this row's interruption too)
            step.status = "running"
            saved()
            run_step(step, timeout=max(10.0, min(left, 2.5 * step.estimate_s)))
        except Exception as exc:  # a child that cannot start, output this script cannot read: this row fails,
            # the next steps still run
            step.status, step.reason = "failed", f"gpu_check could not run or read the step: {exc!r}"[:300]
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): the row says so, the caller saves and re-raises
            step.status, step.reason = "failed", "interrupted"
            raise
        took = "" if step.wall_s is None else f" in {step.wall_s:.1f} s"
        print(f"[gpu_check] {step.name}: {step.status}{took}: {_row(step)}", file=sys.stderr, flush=True)
        saved()


def summary(steps: list[Step]) -> dict[str, Any]:
    """The headline figures against the issue's targets."""
    by = {s.name: s for s in steps}

    def total(name: str) -> float | None:
        s = by.get(name)
        return s.result.get("total_s") if s is not None and s.status == "ok" else None

    def speedup(name: str) -> float | None:  # paper-bf16's time over the step's
        base, cached = total("paper-bf16"), total(name)
        return base / cached if base and cached else None

    vs = by.get("vs-diffusers")
    agree = by.get("bf16-vs-fp32")
    paper = by.get("paper-bf16")
    return {
        "paper_bf16_s": total("paper-bf16"), "paper_fp8_s": total("paper-fp8"), "distilled_s": total("distilled"),
        "paper_bf16_denoise_utilisation": paper.result.get("denoise_utilisation") if paper else None,
        "diffusers_speedup": vs.result.get("speedup") if vs is not None and vs.status == "ok" else None,
        "bf16_vs_fp32_rel_err": agree.result.get("rel_err") if agree is not None and agree.status == "ok" else None,
        "teacache_0.03_speedup": speedup("teacache-0.03"), "teacache_0.05_speedup": speedup("teacache-0.05"),
        "targets": TARGETS,
    }


def report(steps: list[Step], env: dict[str, Any], budget_s: float, dry_run: bool, wall_s: float,
           complete: bool = True) -> dict[str, Any]:
    """The JSON object; ``complete`` is False while steps still run (the file is rewritten after each)."""
    return {"schema": SCHEMA, "tool": "benchmarks/gpu_check.py",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "dry_run": dry_run, "complete": complete, "budget_s": budget_s, "wall_s": wall_s, "environment": env,
            "steps": [asdict(s) for s in steps], "summary": summary(steps)}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def table(steps: list[Step]) -> str:
    """One row per step: status, seconds, the step's figures (or why it did not run)."""
    rows = [("step", "status", "wall s", "figures / reason")]
    for s in steps:
        rows.append((s.name, s.status, "" if s.wall_s is None else f"{s.wall_s:.1f}", _row(s)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows)


# --- child steps (run in their own process) -----------------------------------------------------------------


def _paper_tokens() -> tuple[int, int, int]:
    return (121 - 1) // 8 + 1, 512 // 32, 768 // 32  # latent frames, height, width: 16 x 16 x 24 = 6144 tokens


def child_vs_diffusers() -> dict[str, Any]:
    """ltxcli's and diffusers' 2B transformer on the same random weights in bfloat16 on the GPU: one CFG step
    (batch 2) at the paper's tokens each, 3 alternating pairs after a warm-up, medians."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import vs_diffusers as vd

    vd.TOKENS_GRID = _paper_tokens()
    ours, theirs = vd.build_transformer_pair(torch.float32)
    dev = torch.device("cuda")
    ours, theirs = ours.to(dev, torch.bfloat16), theirs.to(dev, torch.bfloat16)
    inp = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in vd.transformer_inputs(torch.bfloat16).items()}
    times: dict[str, list[float]] = {"ltxcli": [], "diffusers": []}
    with torch.inference_mode():
        a, b = vd.run_ours_transformer(ours, inp), vd.run_theirs_transformer(theirs, inp)
        err = vd.rel(a.float(), b.float())
        for _ in range(3):
            for name, fn in (("ltxcli", lambda: vd.run_ours_transformer(ours, inp)),
                             ("diffusers", lambda: vd.run_theirs_transformer(theirs, inp))):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"ltxcli_step_s": med["ltxcli"], "diffusers_step_s": med["diffusers"],
            "speedup": med["diffusers"] / med["ltxcli"], "rel_err": err, "tokens": vd.TOKENS_GRID}


def child_bf16_vs_fp32() -> dict[str, Any]:
    """The full-size random 2B transformer, one CFG forward at the paper's tokens in float32, then the same
    weights cast to bfloat16: relative error of the bfloat16 output."""
    import dataclasses

    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import vs_diffusers as vd

    from ltxcli.models.transformer import LTXVideoTransformer
    from ltxcli.perf.bench import materialize_random_

    vd.TOKENS_GRID = _paper_tokens()
    dev = torch.device("cuda")
    with torch.device("meta"):
        model = LTXVideoTransformer(dataclasses.replace(vd.TRANSFORMER_2B, causal_temporal_positioning=True))
    materialize_random_(model, device=dev, dtype=torch.float32, seed=0)
    inp = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in vd.transformer_inputs(torch.float32).items()}
    with torch.inference_mode():
        torch.backends.cuda.matmul.allow_tf32 = False
        ref = vd.run_ours_transformer(model, inp).float()
        model.to(torch.bfloat16)
        low = {k: (v.to(torch.bfloat16) if isinstance(v, torch.Tensor) and v.is_floating_point() and k in ("x", "text")
                   else v) for k, v in inp.items()}
        out = vd.run_ours_transformer(model, low).float()
    return {"rel_err": vd.rel(out, ref), "tokens": vd.TOKENS_GRID}


def child_fp8_storage() -> dict[str, Any]:
    """The paper setting with the transformer blocks' weights stored in fp8, then in int8 (per-row scales), and
    widened per layer (through the library: ``ltx bench`` has no --weights-dtype), against the same run in
    bfloat16: seconds, transformer bytes (int8's row scales included) and peak memory."""
    import torch

    from ltxcli.memory.weights import held_bytes
    from ltxcli.models.int8 import convert_to_storage
    from ltxcli.perf.bench import build_random_pipeline
    from ltxcli.presets import PRESETS

    dev = torch.device("cuda")
    out: dict[str, Any] = {}
    for label in ("bf16", "fp8_storage", "int8_storage"):
        # each variant from the same random bf16 weights (seed 0), never one stored mode from another
        pipe, _, _ = build_random_pipeline(PRESETS[PAPER_PRESET], dev, torch.bfloat16, text_encoder="skip", seed=0)
        if label != "bf16":
            convert_to_storage(label.removesuffix("_storage"), pipe.transformer)
            torch.cuda.empty_cache()
        weights = held_bytes(pipe.transformer)
        kw = dict(height=512, width=768, num_frames=121, steps=20, seed=0)
        pipe.generate("a cat", **kw)  # warm-up
        torch.cuda.reset_peak_memory_stats(dev)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        pipe.generate("a cat", **kw)
        torch.cuda.synchronize()
        out[f"{label}_s"] = time.perf_counter() - t0
        out[f"{label}_transformer_bytes"] = weights
        out[f"{label}_peak_bytes"] = torch.cuda.max_memory_allocated(dev)
        del pipe  # the next variant's build starts without this one's weights
        torch.cuda.empty_cache()
    return out


CHILDREN = {"vs-diffusers": child_vs_diffusers, "bf16-vs-fp32": child_bf16_vs_fp32, "fp8-storage": child_fp8_storage}


# --- entry point ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan and write the JSON; run nothing")
    parser.add_argument("--json", type=Path, default=Path("gpu_check.json"), help="where to write the results")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for all steps (default 540: 9 minutes)")
    parser.add_argument("--only", default="", help="comma-separated step names to run (default: all)")
    parser.add_argument("--skip", default="", help="comma-separated step names to leave out")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.budget <= 0:
        parser.error(f"--budget {args.budget}: must be positive")
    names = {s.name for s in plan()}
    for opt in ("only", "skip"):
        unknown = [n for n in getattr(args, opt).split(",") if n and n not in names]
        if unknown:
            parser.error(f"--{opt}: unknown step(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    return args


def select(args: argparse.Namespace) -> list[Step]:
    only = {n for n in args.only.split(",") if n}
    skip = {n for n in args.skip.split(",") if n}
    return [s for s in plan() if (not only or s.name in only) and s.name not in skip]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child]()))
        return 0
    env = environment()
    if env["gpu"] is None and not args.dry_run:
        print("gpu_check: no CUDA GPU here (use --dry-run to see the plan)", file=sys.stderr)
        return 2
    steps = select(args)
    t0 = time.perf_counter()
    args.json.parent.mkdir(parents=True, exist_ok=True)

    def save(complete: bool = False) -> None:  # whole file each time, replaced in one rename: never half written
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(report(steps, env, args.budget, args.dry_run, time.perf_counter() - t0,
                                         complete), indent=1))
        os.replace(tmp, args.json)

    # SIGTERM (a timeout's first signal) ends the run as Ctrl-C does: the running step's group is killed, the
    # JSON and the table still come out
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    interrupted = False
    try:
        save()
        run_all(steps, env, args.budget, args.dry_run, on_step=save)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous)
    save(complete=not interrupted)
    print(f"gpu_check: {'plan' if args.dry_run else 'results'} written to {args.json}"
          f"{' (interrupted)' if interrupted else ''}")
    print(f"gpu_check: {machine_line(env)}")
    print(table(steps))
    if interrupted:
        return 130
    return 0 if all(s.status in ("ok", "skipped", "planned") for s in steps) else 1


if __name__ == "__main__":
    raise SystemExit(main())
