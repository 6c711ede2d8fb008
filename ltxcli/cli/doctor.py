"""``ltx doctor``: what this machine can run, and where weights go. Exit 1 if something blocks generation."""

from __future__ import annotations

import platform
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import EXIT_ERROR, Output, exit_codes_epilog, guarded, human_bytes, to_json
from .resolve import WEIGHTS_DIR_ENV, registry

BF16_MIN_CAPABILITY = (8, 0)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _torch_info() -> dict[str, Any]:
    import torch

    from ltxcli.kernels import fp8_supported  # fp8 tensor cores: what --dtype fp8 needs

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            cap = (props.major, props.minor)
            gpus.append({
                "index": i, "name": props.name, "compute_capability": f"{cap[0]}.{cap[1]}",
                "memory_bytes": props.total_memory, "bf16": cap >= BF16_MIN_CAPABILITY,
                "fp8": fp8_supported(cap),
            })
    device = torch.device("cuda" if gpus else "cpu")
    dtype = torch.bfloat16 if gpus else torch.float32
    # What `ltx generate --attention auto` runs here (at the default dtype), and every kernel's availability.
    attention: dict[str, Any] = {
        "backend": "sdpa",
        "note": "torch.nn.functional.scaled_dot_product_attention (PyTorch picks flash / memory-efficient / math)",
        "auto_would_choose": None,
    }
    kernels: dict[str, Any] | None = None
    try:
        from ltxcli import kernels as kernel_mod

        kernels = kernel_mod.describe_kernels(device, dtype=dtype)
        chosen = kernels.get("attention", {})
        if chosen.get("self_attention"):
            attention["backend"] = attention["auto_would_choose"] = chosen["self_attention"]
            attention["note"] = f"--attention auto: {chosen.get('reason', '')}; --attention NAME picks another"
            if chosen.get("cross_attention") not in (None, chosen["self_attention"]):
                attention["note"] += f" (masked cross-attention: {chosen['cross_attention']})"
    except ImportError:
        pass
    return {
        "version": torch.__version__, "cuda_available": torch.cuda.is_available(), "cuda_version": torch.version.cuda,
        "gpus": gpus, "cpu_threads": torch.get_num_threads(), "attention": attention, "kernels": kernels,
        "default_device": "cuda" if gpus else "cpu", "default_dtype": "bfloat16" if gpus else "float32",
    }


def _distributed_info() -> dict[str, Any]:
    """This process's place under torchrun, from its environment only (no process group is joined)."""
    import os

    import torch

    env = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    under = env["RANK"] is not None and env["WORLD_SIZE"] is not None

    def number(v: str | None) -> int | None:
        return int(v) if v is not None and v.isdigit() else None

    return {
        "under_torchrun": under, "rank": number(env["RANK"]), "world_size": number(env["WORLD_SIZE"]),
        "local_rank": number(env["LOCAL_RANK"]), "local_world_size": number(env["LOCAL_WORLD_SIZE"]),
        "backend": "nccl" if torch.cuda.is_available() else "gloo",
        "available": torch.distributed.is_available(),
    }


def _av_info() -> dict[str, Any]:
    import av

    try:
        av.codec.Codec("libx264", "w")
        x264 = True
    except Exception:  # av raises UnknownCodecError (or ValueError in older releases)
        x264 = False
    libs = getattr(av, "library_versions", {}) or {}
    ffmpeg = libs.get("libavcodec")
    return {"version": av.__version__, "libx264": x264,
            "libavcodec": ".".join(str(v) for v in ffmpeg) if ffmpeg else None}


def _existing_parent(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _weights_info(weights_dir: str | None) -> dict[str, Any]:
    from ltxcli import weights

    reg = registry()
    loc = weights.weights_location(weights_dir)
    default = reg.default
    closure = reg.closure(default.name)
    states = {e.name: weights.status(e.name, weights_dir=weights_dir, registry=reg) for e in closure}
    missing = [e for e in closure if states[e.name].state != "downloaded"]
    # Sizes come from weights.toml where pinned, else from the Hub's listing; otherwise unknown (null).
    pinned = [f.size for e in missing for f in e.files]
    needed = sum(pinned) if missing and all(s is not None for s in pinned) and all(e.files for e in missing) else None
    if not missing:
        needed = 0
    elif needed is None and not weights.is_offline():
        # Ask the Hub for the file sizes (a listing, no download); unknown when it cannot be reached.
        try:
            needed = sum(f.size or 0 for e in missing for f in weights.plan(e.name, weights_dir=weights_dir,
                                                                            registry=reg) if not f.present)
        except Exception:  # any network or hub error leaves the need unknown; doctor never fails on it
            needed = None
    usage = shutil.disk_usage(_existing_parent(loc.root))
    return {
        "location": str(loc.root), "location_kind": loc.kind, "offline": weights.is_offline(),
        "default_model": default.name,
        "default_model_state": {name: st.state for name, st in states.items()},
        "default_model_on_disk_bytes": sum(st.size_on_disk for st in states.values()),
        "default_model_needs_bytes": needed, "free_disk_bytes": usage.free,
    }


def _checks(report: dict[str, Any]) -> list[dict[str, str]]:
    checks = []
    t, a, w = report["torch"], report["av"], report["weights"]

    def add(name: str, status: str, detail: str) -> None:
        checks.append({"check": name, "status": status, "detail": detail})

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
    if missing and w["offline"]:
        add("weights", "warn", f"offline and {', '.join(missing)} not downloaded: generating with the default model fails")
    elif missing:
        add("weights", "ok", f"{', '.join(missing)} will be downloaded on first use")
    else:
        add("weights", "ok", f"{w['default_model']} is downloaded")
    need = w["default_model_needs_bytes"]
    if need:
        status = "ok" if w["free_disk_bytes"] > need else "warn"
        add("disk", status, f"{human_bytes(w['free_disk_bytes'])} free, the default model needs {human_bytes(need)}")
    else:
        add("disk", "ok", f"{human_bytes(w['free_disk_bytes'])} free at the weights location")
    return checks


@guarded
def doctor(
    weights_dir: Annotated[str | None, typer.Option(envvar=WEIGHTS_DIR_ENV, show_default=False,
                                                    help="Weights folder to check instead of the HF cache.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Report torch/CUDA/GPU capabilities, the attention backend, fp8 and torch.compile support, torchrun's world,
    PyAV/libx264, the weights cache and disk space."""
    from ltxcli import __version__

    out = Output(json_mode=json_)
    report: dict[str, Any] = {
        "ltxcli": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "packages": {d: _version(d) for d in ("transformers", "huggingface_hub", "safetensors", "typer", "rich")},
        "torch": _torch_info(), "av": _av_info(), "weights": _weights_info(weights_dir),
        "distributed": _distributed_info(),
    }
    report["checks"] = _checks(report)
    if json_:
        out.json(report)
    else:
        t, a, w = report["torch"], report["av"], report["weights"]
        lines = [
            f"ltxcli {report['ltxcli']}, Python {report['python']}, {report['platform']}",
            f"torch {t['version']} (CUDA {t['cuda_version'] or 'none'}), default device {t['default_device']} "
            f"({t['default_dtype']})",
        ]
        for g in t["gpus"]:
            lines.append(f"  cuda:{g['index']} {g['name']}, compute {g['compute_capability']}, "
                         f"{human_bytes(g['memory_bytes'])}, bf16 {'yes' if g['bf16'] else 'no'}, "
                         f"fp8 {'yes' if g['fp8'] else 'no'}")
        auto = t["attention"]["auto_would_choose"]
        lines.append(f"attention: {t['attention']['backend']} ({t['attention']['note']})"
                     + ("" if auto else "; ltxcli.kernels unavailable"))
        k = t.get("kernels") or {}
        if k:
            fp8, comp = k.get("fp8", {}), k.get("compile", {})
            lines.append(f"fp8 (--dtype fp8): {'yes' if fp8.get('supported') else 'no'} ({fp8.get('detail')})")
            lines.append(f"torch.compile (--compile): {'yes' if comp.get('available') else 'no'} ({comp.get('detail')})")
            others = k.get("attention_kernels") or {}
            if others:
                lines.append("attention kernels: " + ", ".join(
                    f"{n} {'yes' if v == 'available' else 'no'}" for n, v in others.items()))
        d = report["distributed"]
        if d["under_torchrun"]:
            lines.append(f"torchrun: rank {d['rank']} of {d['world_size']} (local rank {d['local_rank']}), "
                         f"backend {d['backend']}")
        else:
            lines.append(f"several GPUs: ltx generate --gpus N or torchrun (backend {d['backend']}"
                         f"{', ' + str(len(t['gpus'])) + ' GPU(s) visible' if t['gpus'] else ''})")
        lines.append(f"PyAV {a['version']} (libavcodec {a['libavcodec']}), libx264 {'yes' if a['libx264'] else 'NO'}")
        lines.append(", ".join(f"{k} {v}" for k, v in report["packages"].items()))
        lines.append(f"weights: {w['location']} ({w['location_kind']}), offline {'yes' if w['offline'] else 'no'}")
        lines.append(f"default model: {w['default_model']} {to_json(w['default_model_state'])}, "
                     f"needs {human_bytes(w['default_model_needs_bytes']) if w['default_model_needs_bytes'] is not None else 'unknown (sizes not pinned)'}, "
                     f"{human_bytes(w['free_disk_bytes'])} free")
        for c in report["checks"]:
            lines.append(f"[{c['status']}] {c['check']}: {c['detail']}")
        for line in lines:
            out.data(line)
    if any(c["status"] == "fail" for c in report["checks"]):
        raise typer.Exit(EXIT_ERROR)


def register(app: typer.Typer) -> None:
    app.command("doctor", epilog=exit_codes_epilog())(doctor)
