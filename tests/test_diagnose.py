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
