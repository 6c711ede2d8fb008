"""What this machine can run, and where weights go: the report ``ltx doctor`` prints, as data.

:func:`diagnose` gathers torch/CUDA/GPU capabilities, the attention kernels and fp8/compile support
(:func:`ltxcli.kernels.describe_kernels`), torchrun's world from the environment, PyAV/libx264, the weights
location and the default model's state and download size, and the checks that say whether something blocks
generation (status ``fail``) or may (``warn``).
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import av
import torch

from . import __version__, kernels, weights
from .formatting import human_bytes, to_json

BF16_MIN_CAPABILITY = (8, 0)
PACKAGES = ("transformers", "huggingface_hub", "safetensors", "typer", "rich")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def torch_report() -> dict[str, Any]:
    """torch and CUDA versions, every GPU (capability, memory, bf16/fp8 tensor cores), what ``--attention auto``
    runs at the default dtype and every kernel's availability."""
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            cap = (props.major, props.minor)
            gpus.append({
                "index": i, "name": props.name, "compute_capability": f"{cap[0]}.{cap[1]}",
                "memory_bytes": props.total_memory, "bf16": cap >= BF16_MIN_CAPABILITY,
                "fp8": kernels.fp8_supported(cap),  # fp8 tensor cores: what --dtype fp8 needs
            })
    device = torch.device("cuda" if gpus else "cpu")
    dtype = torch.bfloat16 if gpus else torch.float32
    attention: dict[str, Any] = {
        "backend": "sdpa",
        "note": "torch.nn.functional.scaled_dot_product_attention (PyTorch picks flash / memory-efficient / math)",
        "auto_would_choose": None,
    }
    described: dict[str, Any] | None = None
    try:
        described = kernels.describe_kernels(device, dtype=dtype)
    except ImportError:  # a broken optional kernel package: report the default backend
        described = None
    chosen = (described or {}).get("attention", {})
    if chosen.get("self_attention"):
        attention["backend"] = attention["auto_would_choose"] = chosen["self_attention"]
        attention["note"] = f"--attention auto: {chosen.get('reason', '')}; --attention NAME picks another"
        if chosen.get("cross_attention") not in (None, chosen["self_attention"]):
            attention["note"] += f" (masked cross-attention: {chosen['cross_attention']})"
    return {
        "version": torch.__version__, "cuda_available": torch.cuda.is_available(), "cuda_version": torch.version.cuda,
        "gpus": gpus, "cpu_threads": torch.get_num_threads(), "attention": attention, "kernels": described,
        "default_device": "cuda" if gpus else "cpu", "default_dtype": "bfloat16" if gpus else "float32",
    }


def distributed_report() -> dict[str, Any]:
    """This process's place under torchrun, from its environment only (no process group is joined)."""
    env = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}

    def number(v: str | None) -> int | None:
        return int(v) if v is not None and v.isdigit() else None

    return {
        "under_torchrun": env["RANK"] is not None and env["WORLD_SIZE"] is not None, "rank": number(env["RANK"]),
        "world_size": number(env["WORLD_SIZE"]), "local_rank": number(env["LOCAL_RANK"]),
        "local_world_size": number(env["LOCAL_WORLD_SIZE"]),
        "backend": "nccl" if torch.cuda.is_available() else "gloo", "available": torch.distributed.is_available(),
    }


def av_report() -> dict[str, Any]:
    """PyAV's version, its libavcodec and whether it has the libx264 encoder MP4 output needs."""
    try:
        av.codec.Codec("libx264", "w")
        x264 = True
    except Exception:  # av raises UnknownCodecError (or ValueError in older releases)
        x264 = False
    ffmpeg = (getattr(av, "library_versions", {}) or {}).get("libavcodec")
    return {"version": av.__version__, "libx264": x264,
            "libavcodec": ".".join(str(v) for v in ffmpeg) if ffmpeg else None}


def _existing_parent(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def weights_report(weights_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The weights location, the default model's closure (model, upsampler, text encoder) with their states, its
    size on disk, what a pull still downloads (weights.toml's sizes, else the Hub's listing; None: unknown) and the
    free disk space there. Never fails on the network."""
    from .spec import download_bytes, resolve_spec

    loc = weights.weights_location(weights_dir)
    # the default model as a run resolves it; its header is not read (doctor never fails on a file)
    spec = resolve_spec(None, weights_dir=weights_dir, header=False)
    parts = [c for c in (spec.model, spec.upsampler, spec.text_encoder) if c is not None and c.name is not None]
    return {
        "location": str(loc.root), "location_kind": loc.kind, "offline": weights.is_offline(),
        "location_is_file": loc.root.exists() and not loc.root.is_dir(),
        "default_model": spec.name, "default_model_state": {c.name: c.state for c in parts},
        "default_model_on_disk_bytes": sum(c.size_on_disk for c in parts),
        # weights.toml's sizes, else the Hub's listing (no download); None: unknown
        "default_model_needs_bytes": download_bytes(spec, ask_hub=True),
        # the sizes weights.toml pins of what is missing: a lower bound where the whole is unknown (offline)
        "default_model_needs_at_least_bytes": sum(c.size or 0 for c in spec.components if c.name in spec.missing),
        "free_disk_bytes": shutil.disk_usage(_existing_parent(loc.root)).free,
        "default_model_transformer_bytes": transformer_bytes(spec.preset),
    }


def transformer_bytes(preset: Any) -> dict[str, int]:
    """What the transformer of ``preset``'s architecture holds on this machine's default device, from its config
    (no file read): ``default`` as a run loads it (a GPU: bfloat16; the CPU: float32 with bfloat16-kept
    linear weights), ``int8_storage`` with ``--weights-dtype int8`` (as small as fp8 storage, more accurate)."""
    from .memory.weights import config_transformer_bytes
    from .perf.bench import random_architecture

    config = random_architecture(preset).transformer
    gpu = torch.cuda.is_available()
    dtype, narrow = (torch.bfloat16, None) if gpu else (torch.float32, torch.bfloat16)
    return {"default": config_transformer_bytes(config, dtype, narrow=narrow),
            "int8_storage": config_transformer_bytes(config, dtype, narrow=narrow, weights_storage="int8")}


def host_memory_bytes() -> int | None:
    """Physical memory of this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def fit_check(need: dict[str, int], memory: int | None, where: str, *, gpu: bool = True) -> tuple[str, str] | None:
    """(status, detail) of whether the default model's transformer fits ``memory`` bytes of ``where``: ``warn``
    with the ``--weights-dtype int8`` suggestion where only one-byte storage fits, ``warn`` with
    ``--offload sequential`` where neither does on a GPU (without one, ``gpu=False``, offloading keeps the weights
    in the same memory, so it is not offered); None when unknown."""
    if memory is None:
        return None
    usable = memory * 0.9  # the CUDA context, the activations and the rest of the model need their share too
    default, int8 = need["default"], need["int8_storage"]
    sizes = f"the default model's transformer needs {human_bytes(default)}, {where} has {human_bytes(memory)}"
    if default <= usable:
        return "ok", sizes
    if int8 <= usable:
        return "warn", f"{sizes}: use --weights-dtype int8 (stores it in {human_bytes(int8)})"
    if not gpu:
        return "warn", (f"{sizes} ({human_bytes(int8)} with --weights-dtype int8): it does not fit in this machine's "
                        "memory (--offload helps only on a GPU)")
    return "warn", f"{sizes} ({human_bytes(int8)} with --weights-dtype int8): use --offload sequential"


def _writable(location: Path) -> bool:
    """Whether files can be made at ``location``: its nearest existing ancestor is a writable folder (under a file,
    e.g. ``HF_HOME`` naming a file, nothing can be made)."""
    while not location.exists() and location.parent != location:
        location = location.parent
    return location.is_dir() and os.access(location, os.W_OK)


def checks(report: dict[str, Any]) -> list[dict[str, str]]:
    """``{"check", "status" (ok / warn / fail), "detail"}`` per concern of a :func:`diagnose` report; a
    ``fail`` blocks generation."""
    out = []
    t, a, w = report["torch"], report["av"], report["weights"]

    def add(name: str, status: str, detail: str) -> None:
        out.append({"check": name, "status": status, "detail": detail})

    add("libx264", "ok" if a["libx264"] else "fail",
        "H.264 encoder available" if a["libx264"] else "PyAV has no libx264 encoder: MP4 output fails "
        "(install a PyAV wheel with x264, or use --frames-dir)")
    if t["gpus"]:
        g = t["gpus"][0]
        add("gpu", "ok", f"{g['name']} (sm_{g['compute_capability'].replace('.', '')})")
        if not g["bf16"]:
            add("bf16", "warn", "this GPU has no bfloat16 tensor cores: use --dtype float32 (slower, more memory)")
    else:
        add("gpu", "warn", "no CUDA GPU: generation runs on the CPU (only the tiny model is practical)")
    missing = [n for n, s in w["default_model_state"].items() if s != "downloaded"]
    if w.get("location_is_file"):
        add("weights", "fail", f"{w['location']} is a file, not a folder: no weights can be kept there "
            "(give a folder to --weights-dir / LTX_WEIGHTS_DIR)")
    elif missing and w.get("location") and not _writable(Path(w["location"])):
        add("weights", "fail", f"{w['location']} is not writable: {', '.join(missing)} cannot be downloaded there "
            "(give a writable folder to --weights-dir / LTX_WEIGHTS_DIR)")
    elif missing and w["offline"]:
        add("weights", "warn",
            f"offline and {', '.join(missing)} not downloaded: generating with the default model fails")
    elif missing:
        add("weights", "ok", f"{', '.join(missing)} will be downloaded on first use")
    else:
        add("weights", "ok", f"{w['default_model']} is downloaded")
    need_bytes = w.get("default_model_transformer_bytes")
    memory = t["gpus"][0].get("memory_bytes") if t["gpus"] else report.get("host_memory_bytes")
    fit = fit_check(need_bytes, memory, "the GPU" if t["gpus"] else "this machine", gpu=bool(t["gpus"])) \
        if need_bytes else None
    if fit is not None:
        add("memory", *fit)
    need, free = w["default_model_needs_bytes"], w["free_disk_bytes"]
    at_least = w.get("default_model_needs_at_least_bytes") if need is None else None
    if need:
        add("disk", "ok" if free > need else "warn",
            f"{human_bytes(free)} free, the default model needs {human_bytes(need)}")
    elif at_least:
        add("disk", "ok" if free > at_least else "warn", f"{human_bytes(free)} free, the default model needs at "
            f"least {human_bytes(at_least)} (the sizes weights.toml pins; the rest unknown)")
    else:
        add("disk", "ok", f"{human_bytes(free)} free at the weights location")
    return out


def cpu_calibration(recalibrate: bool = False, weights_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """This host's measured CPU choices (:func:`ltxcli.calibrate.report`); ``recalibrate`` measures them again
    first for the default model's shapes (and whatever else is cached stays)."""
    from . import calibrate

    if not recalibrate:
        return calibrate.report()
    from .perf.bench import random_architecture
    from .spec import resolve_spec

    arch = random_architecture(resolve_spec(None, weights_dir=weights_dir, header=False).preset)
    # what was measured is reported even where the cache file cannot be written (only a warning says so)
    return calibrate.report(calibrate.for_configs(arch.transformer, arch.vae, recalibrate=True).entries)


def diagnose(weights_dir: str | os.PathLike[str] | None = None, *, recalibrate: bool = False) -> dict[str, Any]:
    """The whole report (JSON-ready): versions, platform, torch, av, weights, distributed, this host's measured
    CPU choices (``recalibrate``: measured again now) and the checks."""
    report: dict[str, Any] = {
        "ltxcli": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "packages": {d: _version(d) for d in PACKAGES},
        "torch": torch_report(), "av": av_report(), "weights": weights_report(weights_dir),
        "distributed": distributed_report(), "host_memory_bytes": host_memory_bytes(),
        "cpu_calibration": cpu_calibration(recalibrate, weights_dir),
    }
    report["checks"] = checks(report)
    return report


def report_lines(report: dict[str, Any]) -> list[str]:
    """The human-readable report (``ltx doctor``), one fact per line, the checks last."""
    t, a, w, d = report["torch"], report["av"], report["weights"], report["distributed"]

    def yes(flag: Any, no: str = "no") -> str:
        return "yes" if flag else no

    lines = [f"ltxcli {report['ltxcli']}, Python {report['python']}, {report['platform']}",
             f"torch {t['version']} (CUDA {t['cuda_version'] or 'none'}), default device {t['default_device']} "
             f"({t['default_dtype']})"]
    lines += [f"  cuda:{g['index']} {g['name']}, compute {g['compute_capability']}, {human_bytes(g['memory_bytes'])}, "
              f"bf16 {yes(g['bf16'])}, fp8 {yes(g['fp8'])}" for g in t["gpus"]]
    lines.append(f"attention: {t['attention']['backend']} ({t['attention']['note']})"
                 + ("" if t["attention"]["auto_would_choose"] else "; ltxcli.kernels unavailable"))
    k = t.get("kernels") or {}
    if k:
        fp8, comp = k.get("fp8", {}), k.get("compile", {})
        lines.append(f"fp8 (--dtype fp8): {yes(fp8.get('supported'))} ({fp8.get('detail')})")
        lines.append(f"torch.compile (--compile): {yes(comp.get('available'))} ({comp.get('detail')})")
        if others := k.get("attention_kernels"):
            lines.append("attention kernels: " + ", ".join(f"{n} {yes(v == 'available')}" for n, v in others.items()))
    if d["under_torchrun"]:
        lines.append(f"torchrun: rank {d['rank']} of {d['world_size']} (local rank {d['local_rank']}), "
                     f"backend {d['backend']}")
    else:
        lines.append(f"several GPUs: ltx generate --gpus N or torchrun (backend {d['backend']}, {len(t['gpus'])} GPU(s) visible)"
                     if t["gpus"] else "several GPUs: none visible (--gpus N needs --device cpu here: N CPU processes, a testing aid)")
    lines.append(report["cpu_calibration"]["summary"])
    lines.append(f"PyAV {a['version']} (libavcodec {a['libavcodec']}), libx264 {yes(a['libx264'], 'NO')}")
    lines.append(", ".join(f"{name} {v}" for name, v in report["packages"].items()))
    lines.append(f"weights: {w['location']} ({w['location_kind']}), offline {yes(w['offline'])}")
    need, least = w["default_model_needs_bytes"], w.get("default_model_needs_at_least_bytes")
    needs = human_bytes(need) if need is not None else f"at least {human_bytes(least)}" if least else "unknown"
    lines.append(f"default model: {w['default_model']} {to_json(w['default_model_state'])}, needs {needs}, "
                 f"{human_bytes(w['free_disk_bytes'])} free")
    return lines + [f"[{c['status']}] {c['check']}: {c['detail']}" for c in report["checks"]]
