"""The communication model: per rank and denoising step, what each parallel mode sends against what it computes.

An estimate, not a measurement: FLOPs from :func:`ltxcli.perf.flops.transformer_flops`, bytes from the
collectives :mod:`ltxcli.parallel.transformer` issues (its measured ``comm_bytes`` agree with these formulas;
``tests/test_distributed.py`` checks both). ``python -m ltxcli.perf.comm`` prints the table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..models.configs import TRANSFORMER_2B, TRANSFORMER_13B
from .flops import transformer_flops

NVLINK_H100_GBPS = 450.0  # NVLink 4 (H100 SXM): 900 GB/s total = 450 GB/s per direction per GPU
ACHIEVED_TFLOPS = 400.0  # bf16 dense, averaged over GEMMs and attention (~40% of the 989 TF/s H100 peak)
COLLECTIVE_LATENCY_US = 20.0  # per NCCL collective inside one NVLink node (launch + sync)


@dataclass(frozen=True)
class CommRow:
    """One configuration of the model: all figures per rank and per denoising step."""

    model: str
    height: int
    width: int
    frames: int
    tokens: int
    gpus: int
    mode: str  # "cfg", "sequence" or "cfg2+seq"
    branches: int
    compute_tflop: float  # this rank's transformer FLOPs per step (1e12)
    comm_mb: float  # bytes this rank sends (all-to-all) or receives (all-gather) per step (1e6)
    collectives: int
    compute_ms: float
    comm_ms: float
    speedup: float  # single-GPU step time / (compute + comm), no overlap

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _seq_comm_bytes(layers: int, branches: int, tokens: int, dim: int, out_ch: int, p: int, nbytes: int) -> float:
    """Per rank and step: 4 all-to-alls (q, k, v, out) per layer, each sending ``(N/P) D b (P-1)/P``; plus
    the all-gather of the output (receiving ``(P-1)/P`` of ``N x out_channels``)."""
    if p == 1:
        return 0.0
    frac = (p - 1) / p
    a2a = layers * 4 * branches * (tokens / p) * dim * nbytes * frac
    return a2a + branches * tokens * out_ch * nbytes * frac


def comm_model(
    *,
    sizes: Sequence[tuple[int, int, int]] = ((768, 512, 121), (1216, 704, 121)),
    gpus: Sequence[int] = (2, 4, 8),
    models: Sequence[str] = ("2b", "13b"),
    branches: int = 3,
    text_len: int = 128,
    bytes_per_element: int = 2,
    link_gbps: float = NVLINK_H100_GBPS,
    achieved_tflops: float = ACHIEVED_TFLOPS,
    latency_us: float = COLLECTIVE_LATENCY_US,
) -> list[CommRow]:
    """Communication per step against compute per step for the parallel modes (an estimate, not a measurement).

    Sizes are ``(width, height, frames)``. FLOPs from :func:`~ltxcli.perf.flops.transformer_flops` (one branch,
    text length ``text_len``); time = FLOPs / ``achieved_tflops`` + bytes / ``link_gbps`` + one
    ``latency_us`` per collective, no overlap of compute and communication. ``cfg`` runs
    ``ceil(branches / P)`` branches per rank and all-gathers the ``[branches, N, 128]`` velocity once;
    ``sequence`` runs all branches on ``N / P`` tokens with 2 all-to-all calls per layer (q, k, v fused
    into one; 4 tensors' worth of bytes) and one all-gather; ``cfg2+seq`` is 2 branch groups of ``P / 2``
    sequence-parallel ranks.
    """
    configs = {"2b": TRANSFORMER_2B, "13b": TRANSFORMER_13B}
    rows: list[CommRow] = []
    for name in models:
        cfg = configs[name]
        d, layers, out_ch = cfg.inner_dim, cfg.num_layers, cfg.out_channels
        for width, height, frames in sizes:
            tokens = ((frames - 1) // 8 + 1) * (height // 32) * (width // 32)
            branch = transformer_flops(cfg, tokens, text_len)["total"]
            single_ms = branches * branch / (achieved_tflops * 1e12) * 1e3
            for p in gpus:
                shapes = [("cfg", p, 1), ("sequence", 1, p)]
                if p >= 4:
                    shapes.append(("cfg2+seq", 2, p // 2))
                for mode, c, s in shapes:
                    local_branches = math.ceil(branches / c)
                    flops = local_branches * branch / s  # attention and linear layers both split by s
                    nbytes = _seq_comm_bytes(layers, local_branches, tokens, d, out_ch, s, bytes_per_element)
                    calls = 2 * layers + 1 if s > 1 else 0
                    if c > 1:
                        nbytes += (c - 1) * local_branches * tokens * out_ch * bytes_per_element
                        calls += 1
                    compute_ms = flops / (achieved_tflops * 1e12) * 1e3
                    comm_ms = nbytes / (link_gbps * 1e9) * 1e3 + calls * latency_us / 1e3
                    rows.append(CommRow(
                        name, height, width, frames, tokens, p, mode, branches, flops / 1e12, nbytes / 1e6, calls,
                        compute_ms, comm_ms, single_ms / (compute_ms + comm_ms),
                    ))
    return rows


def format_comm_table(rows: Sequence[CommRow]) -> list[str]:
    """A Markdown table of :func:`comm_model` rows."""
    lines = [
        "| model | size | tokens | GPUs | mode | TFLOP/rank | comm MB/rank | collectives | compute ms | comm ms "
        "| comm/compute | speedup |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.width}x{r.height}x{r.frames} | {r.tokens} | {r.gpus} | {r.mode} | "
            f"{r.compute_tflop:.1f} | {r.comm_mb:.1f} | {r.collectives} | {r.compute_ms:.1f} | {r.comm_ms:.2f} | "
            f"{r.comm_ms / r.compute_ms:.3f} | {r.speedup:.2f}x |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ltxcli.perf.comm [--branches N] [--json]``: print the communication model."""
    import argparse  # only for the command line

    parser = argparse.ArgumentParser(prog="python -m ltxcli.perf.comm", description=main.__doc__)
    parser.add_argument("--branches", type=int, default=3, help="guidance branches per step (CFG+STG: 3)")
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    parser.add_argument("--link-gbps", type=float, default=NVLINK_H100_GBPS)
    parser.add_argument("--tflops", type=float, default=ACHIEVED_TFLOPS)
    ns = parser.parse_args(argv)
    rows = comm_model(branches=ns.branches, link_gbps=ns.link_gbps, achieved_tflops=ns.tflops)
    if ns.json:
        for r in rows:
            print(json.dumps(r.as_dict()))
    else:
        print(f"per rank and denoising step; {ns.branches} branches, bf16, {ns.link_gbps:g} GB/s per direction, "
              f"{ns.tflops:g} TFLOP/s achieved, {COLLECTIVE_LATENCY_US:g} us per collective, no overlap")
        print("\n".join(format_comm_table(rows)))
    return 0


__all__ = ["ACHIEVED_TFLOPS", "COLLECTIVE_LATENCY_US", "NVLINK_H100_GBPS", "CommRow", "comm_model", "format_comm_table"]

if __name__ == "__main__":
    raise SystemExit(main())
