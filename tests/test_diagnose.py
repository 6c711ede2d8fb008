"""ltxcli.diagnose (the library under ``ltx doctor``): the checks' verdicts from a report's facts."""

from __future__ import annotations

from typing import Any

from ltxcli import diagnose


def _report(*, x264: bool = True, gpus: list[dict[str, Any]] | None = None, state: str = "downloaded",
            offline: bool = False, need: int | None = 0, free: int = 10**12) -> dict[str, Any]:
    return {"torch": {"gpus": gpus or []}, "av": {"libx264": x264},
            "weights": {"default_model": "m", "default_model_state": {"m": state, "t5": state}, "offline": offline,
                        "default_model_needs_bytes": need, "free_disk_bytes": free}}


def _verdicts(report: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["check"]: (c["status"], c["detail"]) for c in diagnose.checks(report)}


def test_checks_say_what_blocks_generation() -> None:
    ok = _verdicts(_report(gpus=[{"name": "H100", "compute_capability": "9.0", "bf16": True}]))
    assert ok == {"libx264": ("ok", "H.264 encoder available"), "gpu": ("ok", "H100 (sm_90)"),
                  "weights": ("ok", "m is downloaded"), "disk": ("ok", "1.0 TB free at the weights location")}
    bad = _verdicts(_report(x264=False, gpus=[{"name": "T4", "compute_capability": "7.5", "bf16": False}],
                            state="missing", offline=True, need=3 * 10**9, free=2 * 10**9))
    assert bad["libx264"][0] == "fail" and bad["bf16"][0] == "warn"
    assert bad["weights"] == ("warn", "offline and m, t5 not downloaded: generating with the default model fails")
    assert bad["disk"] == ("warn", "2.0 GB free, the default model needs 3.0 GB")
    assert _verdicts(_report(state="missing"))["weights"] == ("ok", "m, t5 will be downloaded on first use")
    assert _verdicts(_report())["gpu"][0] == "warn"  # no GPU: only the tiny model is practical


def test_report_of_this_machine_is_json_ready() -> None:
    import json

    report = diagnose.diagnose()
    assert {"torch", "av", "weights", "distributed", "checks", "packages"} <= set(report)
    assert json.loads(json.dumps(report))["av"]["libx264"] is True


def test_memory_check_suggests_int8_storage_where_only_it_fits() -> None:
    need = {"default": 26 * 10**9, "int8_storage": 14 * 10**9}  # a 13B-sized transformer
    gpu = {"name": "RTX 3090", "compute_capability": "8.6", "bf16": True, "memory_bytes": 24 * 10**9}
    report = _report(gpus=[gpu])
    report["weights"]["default_model_transformer_bytes"] = need
    status, detail = _verdicts(report)["memory"]
    assert status == "warn" and detail.endswith("use --weights-dtype int8 (stores it in 14.0 GB)"), detail
    assert "needs 26.0 GB, the GPU has 24.0 GB" in detail
    report["torch"]["gpus"][0]["memory_bytes"] = 80 * 10**9
    assert _verdicts(report)["memory"][0] == "ok"
    report["torch"]["gpus"][0]["memory_bytes"] = 12 * 10**9
    assert _verdicts(report)["memory"] == ("warn", "the default model's transformer needs 26.0 GB, the GPU has "
                                           "12.0 GB (14.0 GB with --weights-dtype int8): use --offload sequential")
    # no GPU: the host's memory
    cpu = _report()
    cpu["weights"]["default_model_transformer_bytes"] = need
    cpu["host_memory_bytes"] = 16 * 10**9
    assert "this machine has 16.0 GB: use --weights-dtype int8" in _verdicts(cpu)["memory"][1]
    # too little even for int8 storage: offloading moves weights from a GPU to the host, so on a machine without a
    # GPU (the weights are in host memory already) it is no advice
    cpu["host_memory_bytes"] = 12 * 10**9
    assert _verdicts(cpu)["memory"] == ("warn", "the default model's transformer needs 26.0 GB, this machine has "
                                        "12.0 GB (14.0 GB with --weights-dtype int8): it does not fit in this "
                                        "machine's memory (--offload helps only on a GPU)")


def test_transformer_bytes_from_the_preset_config() -> None:
    """int8 storage holds the 2B's block linears in one byte a weight (plus a float32 scale a row): at most 0.55x
    of the default (bf16-kept on the CPU, bfloat16 on a GPU), counted from modules built on the meta device."""
    from ltxcli.presets import PRESETS

    sizes = diagnose.transformer_bytes(PRESETS["ltxv-2b-0.9.5"])
    assert 0.45 < sizes["int8_storage"] / sizes["default"] <= 0.55, sizes


def test_disk_check_offline_uses_the_pinned_sizes_as_a_lower_bound(tmp_path, monkeypatch) -> None:
    """Offline (or with the Hub unreachable) the default model's download size is unknown, since only the model's
    own size is pinned; with 1 MB free the disk check said "ok", though the pinned file alone needs 6.3 GB."""
    import shutil
    from collections import namedtuple

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 0, 10**6))
    w = diagnose.weights_report(tmp_path / "weights")
    assert w["default_model_needs_bytes"] is None
    assert w["default_model_needs_at_least_bytes"] == 6_340_744_492  # weights.toml's pinned model size
    report = _report(state="missing", offline=True, need=None, free=10**6)
    report["weights"].update(default_model_needs_at_least_bytes=w["default_model_needs_at_least_bytes"])
    assert _verdicts(report)["disk"] == ("warn", "1.0 MB free, the default model needs at least 6.3 GB (the sizes "
                                                 "weights.toml pins; the rest unknown)")
    report["weights"].update(free_disk_bytes=10**12)
    assert _verdicts(report)["disk"] == ("ok", "1.0 TB free, the default model needs at least 6.3 GB (the sizes "
                                               "weights.toml pins; the rest unknown)")


def test_a_weights_location_under_a_file_is_not_writable(tmp_path) -> None:
    """HF_HOME=/path/to/a/file: the hub cache (FILE/hub) can never be made, yet the weights check said the models
    "will be downloaded on first use" (online) because the file itself is writable."""
    (tmp_path / "afile").write_text("")
    report = _report(state="missing")
    report["weights"].update(location=str(tmp_path / "afile" / "hub"), location_is_file=False)
    status, detail = _verdicts(report)["weights"]
    assert status == "fail" and detail.startswith(f"{tmp_path / 'afile' / 'hub'} is not writable: m, t5 cannot be")


def test_doctor_does_not_offer_gpus_n_where_no_gpu_is_visible() -> None:
    """Without a GPU `ltx doctor` said "several GPUs: ltx generate --gpus N or torchrun (backend gloo)", while
    `ltx generate --gpus 2` there is exit 2 unless --device cpu is given."""
    report = diagnose.diagnose()
    report["torch"]["gpus"] = []
    report["distributed"].update(under_torchrun=False, backend="gloo")
    (line,) = [x for x in diagnose.report_lines(report) if x.startswith("several GPUs:")]
    assert line == "several GPUs: none visible (--gpus N needs --device cpu here: N CPU processes, a testing aid)"
