"""``ltx doctor``: what this machine can run, and where weights go. Exit 1 if something blocks generation.

The report and its checks are :func:`ltxcli.diagnose.diagnose`; this module prints them.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ltxcli.formatting import human_bytes, to_json

from .common import EXIT_ERROR, Output, exit_codes_epilog, guarded
from .resolve import WEIGHTS_DIR_ENV


@guarded
def doctor(
    weights_dir: Annotated[str | None, typer.Option(envvar=WEIGHTS_DIR_ENV, show_default=False,
                                                    help="Weights folder to check instead of the HF cache.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    recalibrate: Annotated[bool, typer.Option(help="Measure this CPU's GEMM/Winograd/narrow choices again.")] = False,
) -> None:
    """Report torch/CUDA/GPU capabilities, the attention backend, fp8 and torch.compile support, torchrun's world,
    PyAV/libx264, the weights cache and disk space."""
    from ltxcli.diagnose import diagnose

    out = Output(json_mode=json_)
    report = diagnose(weights_dir, recalibrate=recalibrate)
    if json_:
        out.json(report)
    else:
        for line in _lines(report):
            out.data(line)
    if any(c["status"] == "fail" for c in report["checks"]):
        raise typer.Exit(EXIT_ERROR)


def _lines(report: dict[str, Any]) -> list[str]:
    """The human-readable report, one fact per line, the checks last."""
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


def register(app: typer.Typer) -> None:
    app.command("doctor", epilog=exit_codes_epilog())(doctor)
