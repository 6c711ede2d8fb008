"""The CPU's ``auto`` choices, made by measuring this host: a short calibration on the model's layer shapes at first
use, cached per CPU model, instruction sets, torch version and thread count.

Three choices were fixed rules tuned on one AVX-512 AMD EPYC and lose elsewhere (an AVX2-only EPYC ran the 2B step
1.14x faster with the BLAS GEMMs than through oneDNN, BENCHMARKS.md). Each is now the faster candidate measured
here, on the shapes of the model being loaded:

* ``gemm``: the transformer's float32 linears through oneDNN (``torch.ops.mkldnn._linear_pointwise``, GELU fused)
  or the BLAS behind ``F.linear``: a q/k/v-sized, a GELU feed-forward-in and a feed-forward-out GEMM of
  :data:`GEMM_ROWS` tokens, each candidate :data:`REPEATS` times interleaved, the minimum kept (the least
  disturbed by other processes). oneDNN must win by :data:`GEMM_MARGIN`: otherwise the plain ``F.linear``, the
  official code's call.
* ``narrow``: linear weights kept in the checkpoint's bfloat16 and widened per call (half the memory) or held in
  float32. The widening copy of the feed-forward weight is timed against that layer's GEMM scaled to
  :data:`REFERENCE_ROWS` tokens (a small video; larger ones make the copy relatively cheaper still); kept narrow
  while the copy costs at most :data:`NARROW_MAX_SHARE` of the GEMM.
* ``vae_conv``: the VAE decoder's 3x3x3 convolutions by time-Winograd (:mod:`ltxcli.models.winograd`, ``auto``:
  where its shape rule applies) or direct, timed on one convolution of the decoder's width (at most
  :data:`CONV_CHANNELS` channels, 8 output frames of 16x16). Skipped (``auto`` kept) for a VAE too narrow for
  Winograd's rule to ever apply.

A measurement is kept only if the process had the CPU while taking it: its CPU time over the wall time of the
timed runs and the thread count (``cpu_share``) must reach :data:`MIN_CPU_SHARE`. On an idle 2-core host the
three got 0.97-1.0 of it, beside one busy process 0.55-0.66, beside two 0.47-0.51, and there the timings invert:
Winograd took 0.26 s against direct's 0.06 s (idle: 0.025 against 0.031), and a 2026-12-06 calibration taken
that way kept the slower direct convolutions in the cache (the 0.9.5 decode 0.944 of diffusers' time, not 0.774).
A busy measurement still decides the run that took it, but the next load measures again, until a quiet one is
kept or :data:`MAX_BUSY_TRIES` busy ones in a row (a host that is never idle, or a CPU quota under the thread
count). Measurements under :data:`MIN_JUDGED_S` are not judged (there the share is mostly Python's overhead).

A calibration takes about two seconds for the 2B on a 2-core CPU. Results live in one JSON file
(:func:`cache_file`: ``$LTX_CALIBRATION_DIR``, else ``$XDG_CACHE_HOME/ltxcli``, else ``~/.cache/ltxcli``), keyed
by :func:`host_key`; ``ltx doctor`` shows them and ``ltx doctor --recalibrate`` measures again. The models never
import this module: the choices reach them as settings (:func:`ltxcli.models.transformer.set_cpu_gemm`,
``CausalVideoVAE.set_conv_algorithm``, the loaders' ``keep_checkpoint_dtype``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

ENV_DIR = "LTX_CALIBRATION_DIR"
FILE_NAME = "cpu-calibration.json"
# Tokens per calibration GEMM, near a small CPU run's batch (CFG x 384 tokens = 768): oneDNN's lead over BLAS
# shrinks as the rows grow (on the AVX-512 EPYC of BENCHMARKS.md its time is 0.60 of BLAS's at 128 rows, 0.80 at
# 512, 0.85 at 768; limited to AVX2 0.80, 0.94, 0.95), so timing 128 rows overstated it.
GEMM_ROWS = 512
REFERENCE_ROWS = 2048  # tokens of the smallest video worth timing (one 512x512x41 pass): the narrow rule's scale
REPEATS = 2  # after a warm-up run: the 2B's calibration is about 230 GFLOP, under two seconds on 2 cores
GEMM_MARGIN = 0.03  # oneDNN must be this much faster than F.linear (noise on a shared host is about this)
NARROW_MAX_SHARE = 0.10  # widening may cost this share of the layer's GEMM: half the weight memory is worth it
CONV_CHANNELS = 256
WINOGRAD_MIN_CHANNELS = 128  # ltxcli.models.winograd.MIN_CHANNELS: below it auto never takes Winograd
MIN_CPU_SHARE = 0.8  # a measurement's CPU time over its wall time x threads, to be kept (see the module docstring)
MIN_JUDGED_S = 0.05  # shorter measurements count as quiet: their share is mostly single-threaded Python
MAX_BUSY_TRIES = 3  # busy measurements of one entry in a row after which the last is kept anyway


class Measure(Protocol):
    """What a calibration times (tests pass fake timings): seconds per candidate. ``cpu_share``: the share of the
    threads' CPU time the last measurement got (1.0 when too short to judge)."""

    cpu_share: float

    def gemm(self, dim: int, ff_dim: int) -> dict[str, float]: ...  # {"onednn", "native"}
    def narrow(self, dim: int, ff_dim: int) -> dict[str, float]: ...  # {"widen", "gemm"} (gemm at REFERENCE_ROWS)
    def conv(self, channels: int) -> dict[str, float]: ...  # {"winograd", "direct"}


# --- the decisions, from timings -----------------------------------------------------------------------------


def choose_gemm(t: dict[str, float]) -> str:
    """``onednn`` when it beats ``native`` by more than :data:`GEMM_MARGIN`, else ``native``."""
    return "onednn" if "onednn" in t and t["onednn"] < t["native"] * (1 - GEMM_MARGIN) else "native"


def choose_narrow(t: dict[str, float]) -> str:
    """``narrow`` while widening costs at most :data:`NARROW_MAX_SHARE` of the GEMM, else ``wide``."""
    return "narrow" if t["widen"] <= NARROW_MAX_SHARE * t["gemm"] else "wide"


def choose_conv(t: dict[str, float]) -> str:
    """``auto`` (Winograd where its shape rule applies) when Winograd was faster, else ``direct``."""
    return "auto" if t["winograd"] < t["direct"] else "direct"


# --- timing on this CPU --------------------------------------------------------------------------------------


def _best(fns: dict[str, Callable[[], Any]], repeats: int = REPEATS) -> tuple[dict[str, float], float]:
    """The fastest of ``repeats`` interleaved runs of each function, after one warm-up run each, and the share of
    the threads' CPU time the process got meanwhile (1.0 under :data:`MIN_JUDGED_S`)."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    wall = time.perf_counter() - wall0
    share = (time.process_time() - cpu0) / (wall * torch.get_num_threads()) if wall >= MIN_JUDGED_S else 1.0
    return best, share


class HostMeasure:
    """The real timings (float32, inference mode, this process's thread count)."""

    def __init__(self) -> None:
        self.cpu_share = 1.0

    def _layers(self, dim: int, ff_dim: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]]:
        g = torch.Generator().manual_seed(0)
        shapes = [(dim, dim, False), (dim, ff_dim, True), (ff_dim, dim, False)]  # q, ff in (GELU), ff out
        return [(torch.randn(GEMM_ROWS, i, generator=g), torch.randn(o, i, generator=g) / i**0.5, torch.zeros(o), gelu)
                for i, o, gelu in shapes]

    def gemm(self, dim: int, ff_dim: int) -> dict[str, float]:
        layers = self._layers(dim, ff_dim)

        def native() -> None:
            for x, w, b, gelu in layers:
                y = F.linear(x, w, b)
                if gelu:
                    F.gelu(y, approximate="tanh")

        def onednn() -> None:
            for x, w, b, gelu in layers:
                torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu" if gelu else "none", [], "tanh" if gelu else "")

        fns: dict[str, Callable[[], Any]] = {"native": native}
        if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
            fns["onednn"] = onednn
        with torch.inference_mode():
            t, self.cpu_share = _best(fns)
        return t

    def narrow(self, dim: int, ff_dim: int) -> dict[str, float]:
        x, w, b, _ = self._layers(dim, ff_dim)[1]
        stored, buf = w.to(torch.bfloat16), torch.empty_like(w)
        with torch.inference_mode():
            t, self.cpu_share = _best({"widen": lambda: buf.copy_(stored), "gemm": lambda: F.linear(x, w, b)})
        return {"widen": t["widen"], "gemm": t["gemm"] * REFERENCE_ROWS / GEMM_ROWS}

    def conv(self, channels: int) -> dict[str, float]:
        from .models.upcast import UpcastScratch
        from .models.winograd import time_winograd_conv3d

        g = torch.Generator().manual_seed(0)
        conv = torch.nn.Conv3d(channels, channels, 3, padding=(0, 1, 1)).eval().requires_grad_(False)
        x = torch.randn(1, channels, 8 + 2, 16, 16, generator=g)  # time-padded: 8 output frames of 16x16
        scratch = UpcastScratch()  # one per model in the VAE: its branch kernels are not re-allocated per call
        with torch.inference_mode():
            t, self.cpu_share = _best({"winograd": lambda: time_winograd_conv3d(conv, x, scratch),
                                       "direct": lambda: conv(x)})
        return t


# --- the cache -----------------------------------------------------------------------------------------------


def cache_file() -> Path:
    """``$LTX_CALIBRATION_DIR/cpu-calibration.json``, else under ``$XDG_CACHE_HOME/ltxcli``, else
    ``~/.cache/ltxcli``."""
    if folder := os.environ.get(ENV_DIR):
        return Path(folder) / FILE_NAME
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ltxcli" / FILE_NAME


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


#: Environment variables that lower the instruction set oneDNN or MKL use (part of :func:`host_key`).
ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def instruction_sets() -> str:
    """The vector instructions the kernels run: ATen's CPU capability (``AVX512``, ``AVX2``, ...;
    ``ATEN_CPU_CAPABILITY`` lowers it) and any limit set on oneDNN's or MKL's (:data:`ISA_LIMITS`). Which GEMM
    route wins depends on them, not only on the CPU model (the same EPYC model name is sold with and without
    AVX-512 enabled in a VM), and they let an AVX-512 host measure as an AVX2-only one."""
    parts = [torch.backends.cpu.get_cpu_capability()]
    parts += [f"{var}={os.environ[var]}" for var in ISA_LIMITS if os.environ.get(var)]
    return " ".join(parts)


def host_key() -> str:
    """What the measurements depend on: the CPU model, the instruction sets used, the torch build and the threads
    it uses."""
    return f"{cpu_model()} | {instruction_sets()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def _read() -> dict[str, Any]:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(data: dict[str, Any]) -> None:
    """Atomic replace; a cache that cannot be written (read-only home) costs a calibration next time, said in a
    warning (``ltx doctor --recalibrate`` then reports what it measured as not saved: :func:`report`)."""
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError as e:
        warnings.warn(f"the CPU calibration cannot be kept in {path} ({type(e).__name__}): it is measured again at "
                      f"the next run (set {ENV_DIR} to a writable folder)", stacklevel=2)


def cached() -> dict[str, Any]:
    """This host's cached calibrations: ``{entry: {"choice", "timings", "measured_at"}}`` (empty when none)."""
    entries = _read().get(host_key(), {})
    return entries if isinstance(entries, dict) else {}


# --- the choices ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuChoices:
    """This host's choices for one model's shapes. ``onednn_gemm``: the transformer's float32 GEMM route;
    ``keep_narrow``: the loaders' default ``keep_checkpoint_dtype`` on the CPU; ``vae_conv``: what the VAE's
    ``auto`` convolution algorithm becomes (``auto`` or ``direct``); ``entries``: the cache entries used."""

    onednn_gemm: bool
    keep_narrow: bool
    vae_conv: str
    entries: dict[str, Any]


def cpu_choices(
    dim: int, ff_dim: int, vae_channels: int | None = None, *, recalibrate: bool = False,
    measure: Measure | None = None,
) -> CpuChoices:
    """The CPU choices for a transformer of width ``dim`` (feed-forward ``ff_dim``) and a VAE decoder of
    ``vae_channels`` (None: no VAE), from the cache or measured now (and cached); ``recalibrate`` measures
    again whatever is cached."""
    key = host_key()
    names = [f"gemm {dim}x{ff_dim}", f"narrow {dim}x{ff_dim}"]
    conv_channels = min(vae_channels, CONV_CHANNELS) if vae_channels and vae_channels >= WINOGRAD_MIN_CHANNELS else None
    if conv_channels is not None:
        names.append(f"vae_conv {conv_channels}")
    have = cached()
    if not recalibrate and all(settled(have.get(n)) for n in names):
        return _choices(have, dim, ff_dim, conv_channels)
    with _locked():  # processes of one host (torchrun ranks) measure one at a time and then agree
        return _measure(key, dim, ff_dim, conv_channels, recalibrate, measure or HostMeasure(), have)


def settled(entry: Any) -> bool:
    """Whether a cache entry stands (is not measured again at the next use): measured on a quiet CPU, or busy
    :data:`MAX_BUSY_TRIES` times in a row. Entries from before the CPU share was recorded are measured once more."""
    if not isinstance(entry, dict) or "choice" not in entry or "cpu_share" not in entry:
        return False
    return float(entry["cpu_share"]) >= MIN_CPU_SHARE or int(entry.get("busy_tries", 0)) >= MAX_BUSY_TRIES


def _choices(entries: dict[str, Any], dim: int, ff_dim: int, conv_channels: int | None) -> CpuChoices:
    used = {n: entries[n] for n in (f"gemm {dim}x{ff_dim}", f"narrow {dim}x{ff_dim}", f"vae_conv {conv_channels}")
            if n in entries}
    conv = str(used[f"vae_conv {conv_channels}"]["choice"]) if conv_channels is not None else "auto"
    return CpuChoices(used[f"gemm {dim}x{ff_dim}"]["choice"] == "onednn",
                      used[f"narrow {dim}x{ff_dim}"]["choice"] == "narrow", conv, used)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """An exclusive lock on the cache's lock file (none where it cannot be created or locked)."""
    path = cache_file().with_suffix(".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
    except (ImportError, OSError):
        pass
    try:
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _measure(
    key: str, dim: int, ff_dim: int, conv_channels: int | None, recalibrate: bool, m: Measure, seen: dict[str, Any],
) -> CpuChoices:
    """Measure what is not settled. ``seen``: this host's entries as read before taking the lock; an entry that
    differs from it was just measured by another process (a torchrun rank) and is used as it is, busy or not, so
    that processes started together make the same choices."""
    data = _read()  # again, under the lock: another process may have measured meanwhile
    entries: dict[str, Any] = data.get(key, {}) if isinstance(data.get(key), dict) else {}
    used: dict[str, Any] = {}
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    def entry(name: str, run: Callable[[], dict[str, float]], rule: Callable[[dict[str, float]], str]) -> str:
        e = entries.get(name)
        just_measured = isinstance(e, dict) and e != seen.get(name)
        if recalibrate or not (settled(e) or just_measured):
            timings = run()
            new = {"choice": rule(timings), "timings": timings, "measured_at": stamp, "cpu_share": round(m.cpu_share, 3)}
            if m.cpu_share < MIN_CPU_SHARE:  # busy: decides this run; measured again next time (see settled())
                before = int(e.get("busy_tries", 0)) if isinstance(e, dict) and not settled(e) else 0
                new["busy_tries"] = before + 1
            e = entries[name] = new
            changed.append(name)
        used[name] = e
        return str(e["choice"])

    changed: list[str] = []
    entry(f"gemm {dim}x{ff_dim}", lambda: m.gemm(dim, ff_dim), choose_gemm)
    entry(f"narrow {dim}x{ff_dim}", lambda: m.narrow(dim, ff_dim), choose_narrow)
    if conv_channels is not None:
        c = conv_channels
        entry(f"vae_conv {c}", lambda: m.conv(c), choose_conv)
    if changed:
        data[key] = entries
        _write(data)
    return _choices(used, dim, ff_dim, conv_channels)


def cached_keep_narrow() -> bool:
    """The narrow choice this host measured last (any model shape; True before any calibration): what the
    loaders' default ``keep_checkpoint_dtype`` is on the CPU. Nothing is measured here."""
    narrow = [e for name, e in cached().items() if name.startswith("narrow ") and isinstance(e, dict)]
    latest = max(narrow, key=lambda e: str(e.get("measured_at", "")), default=None)
    return latest is None or latest.get("choice") != "wide"


#: Narrower transformers (the tiny random-weight models; LTX-Video's are 2048 and 4096 wide) take the fixed choices
#: unmeasured: timings of toy shapes say nothing about a real model, and a busy measurement, which decides only its
#: own load, would change their rounding from one load to the next.
MIN_MEASURED_WIDTH = 1024


def for_configs(transformer: Any, vae: Any | None, *, recalibrate: bool = False) -> CpuChoices:
    """:func:`cpu_choices` for a :class:`~ltxcli.models.configs.TransformerConfig` and a
    :class:`~ltxcli.models.configs.VAEConfig` (None: no VAE): the transformer's width and 4x feed-forward, the
    decoder's widest convolutions (below :data:`MIN_MEASURED_WIDTH`: oneDNN GEMMs, narrow weights, ``auto``)."""
    from .models.configs import decoder_conv_in_channels

    if transformer.inner_dim < MIN_MEASURED_WIDTH:
        return CpuChoices(True, True, "auto", {})

    channels = decoder_conv_in_channels(vae.decoder_blocks, vae.decoder_base_channels) if vae is not None else None
    return cpu_choices(transformer.inner_dim, 4 * transformer.inner_dim, channels, recalibrate=recalibrate)


def apply(choices: CpuChoices, transformer: Any, vae: Any | None = None, vae_conv: Any = "auto") -> None:
    """Set ``choices`` on loaded models: the transformer's GEMM route; the VAE's convolution algorithm where
    ``vae_conv`` (the caller's request) is ``auto``."""
    from .models.transformer import set_cpu_gemm
    from .models.winograd import ConvAlgorithm, parse_conv_algorithm

    set_cpu_gemm(transformer, choices.onednn_gemm)
    if vae is not None and parse_conv_algorithm(vae_conv) is ConvAlgorithm.AUTO:
        vae.set_conv_algorithm(choices.vae_conv)


def report(measured: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``ltx doctor`` shows: the cache file, this host's key, its entries and a one-line summary.
    ``measured``: entries this process just measured (:attr:`CpuChoices.entries`); those the cache file does not
    hold (it could not be written) are shown too, marked as not saved."""
    entries = cached()
    unsaved = {n: e for n, e in (measured or {}).items() if entries.get(n) != e}
    entries = {**entries, **unsaved}

    def why(e: Any) -> str:
        if any(e is u for u in unsaved.values()):
            return " (not saved, the cache file cannot be written: measured again at the next load)"
        if settled(e):
            return ""
        if isinstance(e, dict) and "cpu_share" not in e:
            return " (by an older version: measured again at the next load)"
        return " (measured on a busy CPU: again at the next load)"

    summary = ", ".join(f"{name}: {e.get('choice')}{why(e)}" for name, e in sorted(entries.items()))
    summary = summary or "not calibrated yet"
    return {"file": str(cache_file()), "host": host_key(), "entries": entries,
            "summary": f"CPU choices (measured; ltx doctor --recalibrate): {summary}"}


__all__ = [
    "ENV_DIR", "CpuChoices", "HostMeasure", "Measure", "apply", "cache_file", "cached", "cached_keep_narrow",
    "choose_conv", "choose_gemm", "choose_narrow", "cpu_choices", "cpu_model", "for_configs", "host_key",
    "instruction_sets", "report", "settled",
]
