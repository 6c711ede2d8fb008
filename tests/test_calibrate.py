"""ltxcli.calibrate: the CPU's auto choices by measurement, cached per host (CPU model, torch, threads).

The selection logic runs on faked timings; the cache on a counting fake; ``ltx doctor`` as a user runs it.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import one_thread  # noqa: F401  (module autouse fixture)

from ltxcli import calibrate as C
from ltxcli.api import load_pipeline
from ltxcli.loading import keep_narrow
from ltxcli.models import transformer as T
from ltxcli.models.winograd import ConvAlgorithm

ROOT = Path(__file__).resolve().parents[1]


class FakeMeasure:
    def __init__(self, gemm=None, narrow=None, conv=None) -> None:
        self.t = {"gemm": gemm or {"onednn": 1.0, "native": 2.0}, "narrow": narrow or {"widen": 0.01, "gemm": 1.0},
                  "conv": conv or {"winograd": 1.0, "direct": 2.0}}
        self.calls: list[str] = []
        self.cpu_share = 1.0  # a quiet CPU

    def gemm(self, dim, ff_dim):
        self.calls.append(f"gemm {dim}x{ff_dim}")
        return self.t["gemm"]

    def narrow(self, dim, ff_dim):
        self.calls.append(f"narrow {dim}x{ff_dim}")
        return self.t["narrow"]

    def conv(self, channels):
        self.calls.append(f"conv {channels}")
        return self.t["conv"]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(C.ENV_DIR, str(tmp_path / "cal"))
    return tmp_path / "cal"


def test_choices_from_timings():
    assert C.choose_gemm({"onednn": 0.90, "native": 1.0}) == "onednn"
    assert C.choose_gemm({"onednn": 0.98, "native": 1.0}) == "native"  # within the noise margin: F.linear
    assert C.choose_gemm({"onednn": 1.2, "native": 1.0}) == "native"
    assert C.choose_gemm({"native": 1.0}) == "native"  # no oneDNN in this torch build
    assert C.choose_narrow({"widen": 0.05, "gemm": 1.0}) == "narrow"
    assert C.choose_narrow({"widen": 0.10, "gemm": 1.0}) == "narrow"
    assert C.choose_narrow({"widen": 0.2, "gemm": 1.0}) == "wide"
    assert C.choose_conv({"winograd": 0.8, "direct": 1.0}) == "auto"
    assert C.choose_conv({"winograd": 1.1, "direct": 1.0}) == "direct"


def test_cache_hit_miss_and_recalibrate(cache_dir):
    m = FakeMeasure(gemm={"onednn": 2.0, "native": 1.0}, conv={"winograd": 3.0, "direct": 1.0})
    first = C.cpu_choices(64, 256, 512, measure=m)
    assert m.calls == ["gemm 64x256", "narrow 64x256", "conv 256"]  # conv at most CONV_CHANNELS wide
    assert (first.onednn_gemm, first.keep_narrow, first.vae_conv) == (False, True, "direct")
    data = json.loads((cache_dir / C.FILE_NAME).read_text())
    assert set(data) == {C.host_key()}
    assert data[C.host_key()]["gemm 64x256"]["timings"] == {"onednn": 2.0, "native": 1.0}
    # a hit: nothing measured, the same choices
    again = C.cpu_choices(64, 256, 512, measure=m)
    assert len(m.calls) == 3 and again == first
    # another shape is a miss for its own entries only; a narrow VAE is never timed
    C.cpu_choices(32, 128, 64, measure=m)
    assert m.calls[3:] == ["gemm 32x128", "narrow 32x128"]
    # recalibrate measures again, with new timings
    m.t["gemm"] = {"onednn": 0.5, "native": 1.0}
    assert C.cpu_choices(64, 256, 512, measure=m, recalibrate=True).onednn_gemm is True
    assert len(m.calls) == 8
    # another thread count is another host key: a miss
    before = torch.get_num_threads()
    torch.set_num_threads(before + 1)
    try:
        C.cpu_choices(64, 256, 512, measure=m)
    finally:
        torch.set_num_threads(before)
    assert len(m.calls) == 11 and len(json.loads((cache_dir / C.FILE_NAME).read_text())) == 2


def test_a_busy_measurement_decides_its_run_and_is_measured_again(cache_dir):
    """A measurement taken while other processes had the CPU (cpu_share under MIN_CPU_SHARE) is used but not kept:
    the next load measures again until a quiet one stands, or MAX_BUSY_TRIES busy ones in a row."""
    m = FakeMeasure(conv={"winograd": 3.0, "direct": 1.0})
    m.cpu_share = 0.5
    assert C.cpu_choices(64, 256, 512, measure=m).vae_conv == "direct"  # the busy timings decide this run
    entry = C.cached()[f"vae_conv {C.CONV_CHANNELS}"]
    assert entry["cpu_share"] == 0.5 and entry["busy_tries"] == 1 and not C.settled(entry)
    assert "busy CPU" in C.report()["summary"]
    m.t["conv"] = {"winograd": 1.0, "direct": 2.0}
    m.cpu_share = 0.97
    assert C.cpu_choices(64, 256, 512, measure=m).vae_conv == "auto" and len(m.calls) == 6  # measured again
    assert C.settled(C.cached()[f"vae_conv {C.CONV_CHANNELS}"]) and "busy" not in C.report()["summary"]
    C.cpu_choices(64, 256, 512, measure=m)
    assert len(m.calls) == 6  # quiet: a hit
    # a host that is never quiet: measured at each load until MAX_BUSY_TRIES busy ones in a row, then kept
    m.cpu_share = 0.4
    C.cpu_choices(32, 128, measure=m)
    for _ in range(C.MAX_BUSY_TRIES - 1):
        C.cpu_choices(32, 128, measure=m)
    assert len(m.calls) == 6 + 2 * C.MAX_BUSY_TRIES
    assert C.cached()["gemm 32x128"]["busy_tries"] == C.MAX_BUSY_TRIES
    C.cpu_choices(32, 128, measure=m)
    assert len(m.calls) == 6 + 2 * C.MAX_BUSY_TRIES  # settled now
    # --recalibrate on a busy CPU measures and is marked busy again
    C.cpu_choices(32, 128, measure=m, recalibrate=True)
    assert C.cached()["gemm 32x128"]["busy_tries"] == 1


def test_an_entry_another_process_just_measured_is_used_even_if_busy(cache_dir, monkeypatch):
    """Processes started together (torchrun ranks) agree: the one that waited for the lock uses what the other
    measured meanwhile, even a busy measurement, instead of measuring again."""
    busy = FakeMeasure(gemm={"onednn": 2.0, "native": 1.0})
    busy.cpu_share = 0.5
    C.cpu_choices(64, 256, measure=busy)  # the other process's busy measurement, now in the file
    monkeypatch.setattr(C, "cached", lambda: {})  # this process read the cache before that was written
    waiting = FakeMeasure()
    assert C.cpu_choices(64, 256, measure=waiting).onednn_gemm is False and waiting.calls == []
    monkeypatch.undo()
    assert C.cpu_choices(64, 256, measure=waiting).onednn_gemm is True and len(waiting.calls) == 2  # a later load


def test_entries_without_a_cpu_share_are_measured_once_more(cache_dir):
    """Entries written before the CPU share was recorded may come from a busy CPU: measured again once."""
    cache_dir.mkdir()
    old = {"choice": "direct", "timings": {"winograd": 0.28, "direct": 0.084}, "measured_at": "2026-12-06T14:43:48"}
    entries = {"gemm 64x256": {"choice": "native", "timings": {}, "measured_at": "x"},
               "narrow 64x256": {"choice": "narrow", "timings": {}, "measured_at": "x"}, "vae_conv 256": old}
    (cache_dir / C.FILE_NAME).write_text(json.dumps({C.host_key(): entries}))
    assert "older version" in C.report()["summary"]
    m = FakeMeasure()
    assert C.cpu_choices(64, 256, 512, measure=m).vae_conv == "auto" and len(m.calls) == 3
    C.cpu_choices(64, 256, 512, measure=m)
    assert len(m.calls) == 3


def test_cache_location(tmp_path, monkeypatch):
    monkeypatch.delenv(C.ENV_DIR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert C.cache_file() == tmp_path / "xdg" / "ltxcli" / C.FILE_NAME
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert C.cache_file() == tmp_path / "home" / ".cache" / "ltxcli" / C.FILE_NAME
    monkeypatch.setenv(C.ENV_DIR, str(tmp_path / "env"))
    assert C.cache_file() == tmp_path / "env" / C.FILE_NAME


def test_broken_or_unwritable_cache_only_costs_a_measurement(cache_dir):
    cache_dir.mkdir()
    (cache_dir / C.FILE_NAME).write_text("{not json")
    m = FakeMeasure()
    assert C.cpu_choices(16, 64, measure=m).onednn_gemm is True and len(m.calls) == 2
    assert C.cpu_choices(16, 64, measure=m) and len(m.calls) == 2  # rewritten, now a hit


def test_narrow_choice_is_the_loaders_cpu_default(cache_dir):
    assert keep_narrow(None, "cpu") is True  # nothing measured yet
    C.cpu_choices(16, 64, measure=FakeMeasure(narrow={"widen": 1.0, "gemm": 1.0}))
    assert keep_narrow(None, "cpu") is False and keep_narrow(True, "cpu") is True
    assert keep_narrow(None, "meta") is False


def test_gemm_route_is_a_per_model_setting():
    from tiny_models import randomise_normal

    from ltxcli.tiny import TINY_TRANSFORMER

    torch.manual_seed(0)
    a = T.LTXVideoTransformer(TINY_TRANSFORMER).eval()
    randomise_normal(a, 3)
    x = torch.randn(2, 6, TINY_TRANSFORMER.in_channels)
    layer = a.transformer_blocks[0].ff.net[2]
    with torch.inference_mode():
        onednn = T._dense(layer, x @ torch.ones(x.shape[-1], layer.in_features) / 10)
        assert T.set_cpu_gemm(a, False) > 0 and layer.onednn_gemm is False
        native = T._dense(layer, x @ torch.ones(x.shape[-1], layer.in_features) / 10)
        ref = torch.nn.functional.linear(x @ torch.ones(x.shape[-1], layer.in_features) / 10, layer.weight, layer.bias)
    assert torch.equal(native, ref)  # F.linear itself
    assert torch.allclose(onednn, ref, rtol=1e-5, atol=1e-6)


def test_load_pipeline_applies_the_cached_choices(cache_dir, monkeypatch):
    from ltxcli.tiny import TINY_TRANSFORMER

    monkeypatch.setattr(C, "MIN_MEASURED_WIDTH", 0)  # the tiny shapes are measured, as a real model's
    d = TINY_TRANSFORMER.inner_dim
    m = FakeMeasure(gemm={"onednn": 2.0, "native": 1.0})
    C.cpu_choices(d, 4 * d, measure=m)  # what load_pipeline will find for the tiny shapes
    pipe = load_pipeline("tiny", device="cpu", download=False)
    linears = [x for x in pipe.transformer.modules() if isinstance(x, torch.nn.Linear)]
    assert linears and all(x.onednn_gemm is False for x in linears)
    choices = C.CpuChoices(True, True, "direct", {})
    C.apply(choices, pipe.transformer, pipe.vae, "auto")
    assert {x.algorithm for x in pipe.vae.modules() if hasattr(x, "algorithm")} == {ConvAlgorithm.DIRECT}
    C.apply(choices, pipe.transformer, pipe.vae, "winograd")  # an explicit request is never overridden
    pipe.vae.set_conv_algorithm("winograd")
    C.apply(choices, pipe.transformer, pipe.vae, "winograd")
    assert {x.algorithm for x in pipe.vae.modules() if hasattr(x, "algorithm")} == {ConvAlgorithm.WINOGRAD}


def test_toy_widths_are_not_measured(cache_dir):
    """Loads of the tiny models measured their toy shapes, and a busy measurement (deciding only its own load) gave
    two loads in one test different GEMM routes and roundings; they take the fixed choices now, and cache nothing."""
    from ltxcli.tiny import TINY_TRANSFORMER, tiny_vae_config

    assert C.for_configs(TINY_TRANSFORMER, tiny_vae_config()) == C.CpuChoices(True, True, "auto", {})
    load_pipeline("tiny", device="cpu", download=False)
    assert C.cached() == {}


def test_host_measure_times_every_candidate(monkeypatch):
    # the toy shapes take well under MIN_JUDGED_S on a quiet CPU, not beside another test process (pytest -n 2)
    monkeypatch.setattr(C, "MIN_JUDGED_S", float("inf"))
    t = C.HostMeasure()
    g = t.gemm(32, 128)
    assert set(g) >= {"native"} and all(v > 0 for v in g.values())
    n = t.narrow(32, 128)
    assert set(n) == {"widen", "gemm"} and all(v > 0 for v in n.values())
    c = t.conv(8)
    assert set(c) == {"winograd", "direct"} and all(v > 0 for v in c.values())
    assert t.cpu_share == 1.0  # measurements this short are not judged


def test_recalibrate_measures_the_default_models_shapes(cache_dir, monkeypatch):
    from ltxcli import diagnose

    m = FakeMeasure()
    monkeypatch.setattr(C, "HostMeasure", lambda: m)
    monkeypatch.setenv("LTX_WEIGHTS_DIR", str(cache_dir.parent / "weights"))
    report = diagnose.cpu_calibration(recalibrate=True)
    # the default model is a 2B (width 2048, feed-forward 8192) with a VAE wide enough for Winograd
    assert m.calls == ["gemm 2048x8192", "narrow 2048x8192", f"conv {C.CONV_CHANNELS}"]
    assert set(report["entries"]) == {"gemm 2048x8192", "narrow 2048x8192", f"vae_conv {C.CONV_CHANNELS}"}
    diagnose.cpu_calibration(recalibrate=True)
    assert len(m.calls) == 6  # measured again
    assert diagnose.cpu_calibration()["entries"] == C.cached() and len(m.calls) == 6


def test_recalibrate_reports_what_it_measured_when_the_cache_cannot_be_kept(tmp_path, monkeypatch):
    # ltx doctor --recalibrate with LTX_CALIBRATION_DIR under a file: it measured (and warned that the result
    # cannot be kept), then reported "not calibrated yet"
    from ltxcli import diagnose

    (tmp_path / "afile").write_text("")
    monkeypatch.setenv(C.ENV_DIR, str(tmp_path / "afile" / "sub"))
    monkeypatch.setenv("LTX_WEIGHTS_DIR", str(tmp_path / "weights"))
    m = FakeMeasure()
    monkeypatch.setattr(C, "HostMeasure", lambda: m)
    with pytest.warns(UserWarning, match="cannot be kept"):
        report = diagnose.cpu_calibration(recalibrate=True)
    assert m.calls == ["gemm 2048x8192", "narrow 2048x8192", f"conv {C.CONV_CHANNELS}"]
    assert report["entries"]["gemm 2048x8192"]["choice"] == "onednn"  # FakeMeasure: onednn 1.0 s, native 2.0 s
    assert "not calibrated yet" not in report["summary"]
    assert "gemm 2048x8192: onednn (not saved" in report["summary"]


def test_doctor_shows_the_choices(tmp_path):
    """`ltx doctor` shows this host's cached choices as a user runs it (``--json`` carries
    :func:`ltxcli.diagnose.cpu_calibration`, tested above)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), C.ENV_DIR: str(tmp_path / "cal"), "HF_HUB_OFFLINE": "1",
           "LTX_WEIGHTS_DIR": str(tmp_path / "weights"), "OMP_NUM_THREADS": "1"}
    os.environ[C.ENV_DIR], before = env[C.ENV_DIR], os.environ[C.ENV_DIR]
    try:
        torch.set_num_threads(1)  # the child's thread count: the same host key
        C.cpu_choices(2048, 8192, 1024, measure=FakeMeasure(gemm={"onednn": 2.0, "native": 1.0}))
    finally:
        os.environ[C.ENV_DIR] = before
    human = subprocess.run([sys.executable, "-m", "ltxcli", "doctor"], capture_output=True, text=True, env=env,
                           timeout=300, check=False)
    assert human.returncode in (0, 1), human.stderr
    line = next(x for x in human.stdout.splitlines() if x.startswith("CPU choices"))
    assert "gemm 2048x8192: native" in line and "narrow 2048x8192: narrow" in line
    assert f"vae_conv {C.CONV_CHANNELS}: auto" in line


def test_processes_of_one_host_measure_once_and_agree(tmp_path):
    """Two processes (as torchrun ranks start) calibrating the same shapes at once: one measures, the other
    waits on the lock and reads its result, so both make the same choices."""
    # Every measurement counted as quiet: beside another test process (pytest -n 2) one that started late would
    # find the first one's busy result, measure again (as a later run should) and differ.
    code = ("import json, torch; torch.set_num_threads(1); from ltxcli import calibrate as C; C.MIN_CPU_SHARE = 0.0; "
            "c = C.cpu_choices(64, 256); print(json.dumps(c.entries))")
    env = {**os.environ, "PYTHONPATH": str(ROOT), C.ENV_DIR: str(tmp_path / "cal")}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] and set(outs[0]) == {"gemm 64x256", "narrow 64x256"}


def test_a_lowered_instruction_set_is_another_host():
    """``ATEN_CPU_CAPABILITY`` / ``ONEDNN_MAX_CPU_ISA`` change which kernels run (an AVX-512 host then measures as an
    AVX2-only one), so a process with them set must not reuse this process's measurements."""
    code = "import torch; torch.set_num_threads(1); from ltxcli import calibrate as C; print(C.host_key())"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for var in ("ATEN_CPU_CAPABILITY", *C.ISA_LIMITS):
        env.pop(var, None)
    run = functools.partial(subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=120)
    plain = run(env=env).stdout.strip()
    lowered = run(env={**env, "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}).stdout.strip()
    assert plain != lowered
    assert " | DEFAULT ONEDNN_MAX_CPU_ISA=SSE41 | torch " in lowered
    assert "=" not in plain.split(" | ")[1]  # no limit set: the capability alone
