"""benchmarks/gpu_check.py's CPU-testable parts: argument parsing, the plan, the JSON it writes, the table, the
dry run as a user runs it. (The file name avoids ``test_gpu_``: that selects the GPU-only tests the script runs.)"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check as G  # noqa: E402


def test_arguments():
    args = G.parse_args([])
    assert (args.dry_run, args.budget, args.json, args.only, args.child) == (False, 540.0, Path("gpu_check.json"), "",
                                                                            None)
    assert [s.name for s in G.select(G.parse_args(["--only", "paper-bf16,distilled"]))] == ["paper-bf16", "distilled"]
    assert "gpu-tests" not in [s.name for s in G.select(G.parse_args(["--skip", "gpu-tests"]))]
    for bad in (["--only", "nope"], ["--budget", "0"], ["--child", "nope"]):
        with pytest.raises(SystemExit) as err:
            G.parse_args(bad)
        assert err.value.code == 2


# what a GPU machine may lack (the device image has neither; PyAV and diffusers only come as carried wheels)
NOT_ON_A_GPU_MACHINE = {"ltx_video", "diffusers", "av"}


def _module_imports(path: Path) -> set[str]:
    """Top-level names of the modules ``path`` imports at module level (not inside functions)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_tests_step_collects_only_the_files_with_gpu_tests():
    """Collecting all of tests/ imports ltx_video, diffusers and av at module level: on a machine without one of
    them pytest stops with collection errors and runs no GPU test. The step names the files that hold GPU tests,
    and those (with the helper modules they import) need none of these packages."""
    cmd = {s.name: s for s in G.plan()}["gpu-tests"].command
    assert str(ROOT / "tests") not in cmd
    named = sorted(Path(a) for a in cmd if a.endswith(".py"))
    holders = sorted(p for p in (ROOT / "tests").glob("test_*.py") if re.search(r"^def test_gpu_", p.read_text(), re.M))
    assert named == holders and named
    helpers = {p.stem: p for p in (ROOT / "tests").glob("*.py")}
    seen, todo = set(), [*named, ROOT / "tests" / "conftest.py"]
    while todo:
        path = todo.pop()
        imports = _module_imports(path)
        assert not imports & NOT_ON_A_GPU_MACHINE, (path.name, imports & NOT_ON_A_GPU_MACHINE)
        seen.add(path)
        todo += [helpers[n] for n in imports if n in helpers and helpers[n] not in seen]
    assert cmd[cmd.index("-k") + 1] == "test_gpu_"


def test_plan_covers_the_issue():
    steps = {s.name: s for s in G.plan()}
    assert {"gpu-tests", "paper-bf16", "paper-fp8", "paper-compile", "distilled", "13b-distilled", "vs-diffusers",
            "bf16-vs-fp32", "teacache-0.03", "teacache-0.05"} <= set(steps)
    assert {f"paper-attention-{a}" for a in G.ATTENTION} <= set(steps)
    paper = steps["paper-bf16"].command
    assert paper[paper.index("--preset") + 1] == "ltxv-2b-0.9.5" and "--random-weights" in paper
    assert [paper[paper.index(k) + 1] for k in ("--height", "--width", "--num-frames", "--steps")] == \
        ["512", "768", "121", "20"]
    assert "--compile" in steps["paper-compile"].command and "fp8" in steps["paper-fp8"].command
    assert steps["distilled"].command[steps["distilled"].command.index("--width") + 1] == "1216"
    for t in ("0.03", "0.05"):
        cmd = steps[f"teacache-{t}"].command
        assert cmd[cmd.index("--cache") + 1] == f"teacache:{t}" and cmd[cmd.index("--dtype") + 1] == "bfloat16"
        assert [cmd[cmd.index(k) + 1] for k in ("--preset", "--height", "--width", "--num-frames", "--steps")] == \
            [G.PAPER_PRESET, "512", "768", "121", "20"]


def test_teacache_step_command_runs_ltx_bench_on_the_tiny_model():
    """The teacache step's own ltx bench arguments, at the tiny preset and size on the CPU: --cache is accepted and
    its JSON gives the skipped calls the step's figures read (TeaCache computes the first and last of 3 steps)."""
    from typer.testing import CliRunner

    from ltxcli.cli import app

    cmd = {s.name: s for s in G.plan()}["teacache-0.05"].command
    args = cmd[cmd.index("ltxcli") + 1:]
    for key, value in (("--preset", "tiny"), ("--height", "64"), ("--width", "64"), ("--num-frames", "9"),
                       ("--steps", "3"), ("--dtype", "float32"), ("--warmup", "0"), ("--cache", "teacache:1000")):
        args[args.index(key) + 1] = value
    res = CliRunner().invoke(app, [*args, "--device", "cpu", "--gpu", "cpu", "--text-encoder", "skip"])
    assert res.exit_code == 0, res.output
    step = G.Step("teacache-0.05", "", cmd, 1)
    fig = G.figures(step, G._last_json(res.stdout))
    assert (fig["transformer_calls"], fig["branch_calls"], fig["branch_calls_skipped"]) == (3, 9, 3)


def test_unmet_requirements_skip_cleanly():
    env = {"capability": "8.6", "diffusers": None, "flash_attn": None, "flash_attn_interface": None,
           "sageattention": None, "av": "18.1.0"}
    steps = {s.name: s for s in G.plan()}
    assert "8.9+" in G.unmet(steps["paper-fp8"], env)
    assert G.unmet(steps["paper-fp8"], {**env, "capability": "9.0"}) is None
    assert G.unmet(steps["teacache-0.03"], env) is None
    assert "flash_attn_interface" in G.unmet(steps["paper-attention-flash3"], env)
    assert G.unmet(steps["paper-attention-sdpa"], env) is None
    assert "diffusers" in G.unmet(steps["vs-diffusers"], env)


def test_without_pyav_the_steps_that_build_a_pipeline_are_skipped_with_the_import_error():
    """ltxcli's Pipeline imports PyAV (ltxcli.media): without it each ltx bench step would start, import torch and
    fail with an internal error; they are skipped, naming the import error. The GPU tests, the transformer-only
    children (vs-diffusers, bf16-vs-fp32) need no PyAV and still run."""
    env = {"capability": "9.0", "diffusers": "0.42.1", "av": None,
           "import_errors": {"av": "ImportError: libavformat.so.61: cannot open shared object file"}}
    reasons = {s.name: G.unmet(s, env) for s in G.plan()}
    runs = {name for name, why in reasons.items() if why is None}
    assert runs == {"gpu-tests", "vs-diffusers", "bf16-vs-fp32"}
    assert reasons["paper-bf16"] == ("PyAV does not import (ImportError: libavformat.so.61: cannot open shared object "
                                     "file): ltxcli's pipeline needs it (a local wheel, see BENCHMARKS.md)")
    assert all(why.startswith("PyAV does not import") for why in reasons.values() if why is not None)


def test_a_kernel_module_without_a_version_counts_as_installed(monkeypatch):
    """FlashAttention 3 installs the module flash_attn_interface with no __version__: it imports, so the flash3
    step runs; a package that fails to import is reported with its error (a wheel for another ABI, say)."""
    monkeypatch.setitem(sys.modules, "flash_attn_interface", types.ModuleType("flash_attn_interface"))
    monkeypatch.setitem(sys.modules, "sageattention", None)  # import raises ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "diffusers", types.ModuleType("diffusers"))  # not imported here: fast
    env = G.environment()
    assert env["flash_attn_interface"] is not None and "flash_attn_interface" not in env["import_errors"]
    steps = {s.name: s for s in G.plan()}
    assert G.unmet(steps["paper-attention-flash3"], {**env, "capability": "9.0"}) is None
    reason = G.unmet(steps["paper-attention-sage"], {**env, "capability": "9.0"})
    assert env["sageattention"] is None and reason.startswith("--attention sage: its package (sageattention) does not")
    assert "ModuleNotFoundError" in reason and "ModuleNotFoundError" in env["import_errors"]["sageattention"]


def test_figures_summary_and_table():
    steps = {s.name: s for s in G.plan()}
    bench = {"stages": {"total": {"median_s": 1.8, "runs_s": [1.8]}, "denoise": {"median_s": 1.2, "utilisation": 0.55}},
             "peak_memory_bytes": 10**10, "transformer_calls": 20}
    paper = steps["paper-bf16"]
    paper.status, paper.wall_s, paper.result = "ok", 30.0, G.figures(paper, bench)
    assert paper.result == {"total_s": 1.8, "denoise_s": 1.2, "denoise_utilisation": 0.55,
                            "peak_memory_bytes": 10**10, "transformer_calls": 20}
    tea = steps["teacache-0.05"]
    cached = {**bench, "stages": {"total": {"median_s": 1.2}, "denoise": {"median_s": 0.6}},
              "cache": {"mode": "teacache", "threshold": 0.05, "calls": 40, "skipped": 16}}
    tea.status, tea.result = "ok", G.figures(tea, cached)
    assert (tea.result["branch_calls"], tea.result["branch_calls_skipped"]) == (40, 16)
    assert "branch_calls" not in paper.result
    vs = steps["vs-diffusers"]
    vs.status, vs.result = "ok", G.figures(vs, {"speedup": 1.6, "rel_err": 0.01})
    fp8 = steps["paper-fp8"]
    fp8.status, fp8.reason = "skipped", "fp8 matmuls need compute capability 8.9+"
    ordered = list(steps.values())
    s = G.summary(ordered)
    assert (s["paper_bf16_s"], s["paper_fp8_s"], s["diffusers_speedup"], s["paper_bf16_denoise_utilisation"]) == \
        (1.8, None, 1.6, 0.55)
    assert s["teacache_0.05_speedup"] == pytest.approx(1.5) and s["teacache_0.03_speedup"] is None
    text = G.table(ordered).splitlines()
    assert text[0].split() == ["step", "status", "wall", "s", "figures", "/", "reason"]
    row = next(r for r in text if r.startswith("paper-bf16 "))
    assert "ok" in row and "30.0" in row and "total_s 1.8" in row
    assert "8.9+" in next(r for r in text if r.startswith("paper-fp8 "))
    assert len(text) == len(ordered) + 1


def test_dry_run_as_a_user_runs_it(tmp_path):
    out = tmp_path / "plan.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["schema"] == G.SCHEMA and data["dry_run"] is True and data["budget_s"] == 540.0
    assert {"torch", "cuda", "gpu", "capability", "diffusers", "av"} <= set(data["environment"])
    assert [s["name"] for s in data["steps"]] == [s.name for s in G.plan()]
    for s in data["steps"]:
        assert set(s) == {"name", "what", "command", "estimate_s", "needs", "status", "reason", "wall_s", "result"}
        assert s["status"] == "planned" and s["command"] and s["estimate_s"] > 0
    assert set(data["summary"]) >= {"paper_bf16_s", "paper_fp8_s", "distilled_s", "diffusers_speedup",
                                    "bf16_vs_fp32_rel_err", "targets"}
    lines = proc.stdout.strip().splitlines()
    assert lines[-len(data["steps"]) - 1].startswith("step ")  # the table comes last
    assert all(" planned " in line for line in lines[-len(data["steps"]):])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_without_a_gpu_it_refuses_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--json", str(tmp_path / "x")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
                          check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == "gpu_check: no CUDA GPU here (use --dry-run to see the plan)"
    assert not (tmp_path / "x").exists()


def _alive(pid: int) -> bool:
    try:
        state = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("State"))
    except FileNotFoundError:
        return False
    return state.split()[1] not in ("Z", "X")  # a zombie has ended (nobody may reap it in a container)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads process states from /proc")
def test_a_timed_out_step_ends_the_workers_its_child_started(tmp_path):
    """torch.compile's compile pool, a pytest child: what the step's child started must not outlive the step (it
    would hold the GPU under the next one)."""
    pid_file = tmp_path / "worker.pid"
    code = ("import subprocess, sys, time; w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            f"open({str(pid_file)!r}, 'w').write(str(w.pid)); time.sleep(60)")
    step = G.Step("distilled", "", [sys.executable, "-c", code], 1)
    G.run_step(step, timeout=0.8)
    assert (step.status, step.reason) == ("failed", "timed out after 1 s")
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 2
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_a_step_that_ended_is_read_even_if_a_worker_holds_its_output_open(tmp_path):
    """The child printed its JSON and exited 0, a worker it left holds stdout open: the step is ok (not timed
    out), and the worker is ended."""
    code = ("import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            "print('{\"rel_err\": 0.01}')")
    step = G.Step("bf16-vs-fp32", "", [sys.executable, "-c", code], 1)
    G.run_step(step, timeout=0.8)
    assert (step.status, step.result) == ("ok", {"rel_err": 0.01})


def _fake_gpu(monkeypatch, steps):
    monkeypatch.setattr(G, "environment", lambda: {"gpu": "fake", "capability": "9.0"})
    monkeypatch.setattr(G, "select", lambda args: steps)


def test_a_failing_and_a_timed_out_step_leave_the_others_and_the_json_written_as_it_goes(tmp_path, monkeypatch,
                                                                                         capsys):
    """One step exits 1, one outlives its timeout: the next still runs, and by the time it starts the JSON file
    already holds both rows (the file is rewritten after each step, so a run the device tool cuts off at its
    limit still returns what finished). The last step's child reads that file and prints it as its figures."""
    out = tmp_path / "r.json"
    read_back = f"import json; print(json.dumps(json.load(open({str(out)!r}))))"
    steps = [G.Step("paper-bf16", "", [sys.executable, "-c", "import sys; sys.exit('CUDA error: out of memory')"], 1),
             G.Step("paper-fp8", "", [sys.executable, "-c", "import time; time.sleep(60)"], 0.3),
             G.Step("bf16-vs-fp32", "", [sys.executable, "-c", read_back], 1)]
    _fake_gpu(monkeypatch, steps)
    monkeypatch.setattr(G, "run_step", lambda step, timeout, run=G.run_step: run(step, min(timeout, 0.5)))
    assert G.main(["--json", str(out), "--budget", "100"]) == 1
    seen = steps[2].result  # the JSON as saved when the last step started
    assert seen["complete"] is False
    assert [(s["name"], s["status"]) for s in seen["steps"]] == [("paper-bf16", "failed"), ("paper-fp8", "failed"),
                                                                  ("bf16-vs-fp32", "running")]
    assert seen["steps"][0]["reason"] == "CUDA error: out of memory"
    assert seen["steps"][1]["reason"].startswith("timed out after")
    final = json.loads(out.read_text())
    assert final["complete"] is True and [s["status"] for s in final["steps"]] == ["failed", "failed", "ok"]
    assert not (tmp_path / "r.json.tmp").exists()
    assert capsys.readouterr().out.strip().splitlines()[-4].startswith("step ")  # the table last


def test_sigterm_ends_the_run_with_the_json_and_the_table(tmp_path):
    """A timeout's SIGTERM while a step runs: the step's row says interrupted, the JSON is written, the table is
    printed, exit 130."""
    out = tmp_path / "r.json"
    driver = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import gpu_check as G;"
              "G.environment = lambda: {'gpu': 'fake', 'capability': '9.0'};"
              "s = [G.Step('paper-bf16', '', [sys.executable, '-c', 'print({})'], 1),"
              "     G.Step('distilled', '', [sys.executable, '-c', 'import time; time.sleep(60)'], 1)];"
              f"G.select = lambda a: s; sys.exit(G.main(['--json', {str(out)!r}]))")
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # until the second step runs
        try:
            if json.loads(out.read_text())["steps"][1]["status"] == "running":
                break
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.05)
    proc.terminate()
    stdout, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130
    data = json.loads(out.read_text())
    assert data["complete"] is False
    assert [(s["status"], s["reason"]) for s in data["steps"]] == [("failed", "exit 0"), ("failed", "interrupted")]
    assert stdout.strip().splitlines()[-1].split()[:3] == ["distilled", "failed", "interrupted"]


def test_a_signal_while_the_running_row_is_saved_marks_it_interrupted():
    """The SIGTERM of the test above can come while the row just marked running is being saved (the file already
    says running, which is what a watcher waits for): that row is the one interrupted, not left running."""
    steps = [G.Step("paper-bf16", "", [sys.executable, "-c", "print({})"], 1)]

    def save() -> None:
        if steps[0].status == "running":
            raise KeyboardInterrupt  # the signal, delivered inside the save

    with pytest.raises(KeyboardInterrupt):
        G.run_all(steps, {"gpu": "fake", "capability": "9.0"}, 100.0, False, on_step=save)
    assert (steps[0].status, steps[0].reason) == ("failed", "interrupted")


def test_output_the_script_cannot_read_fails_only_its_own_row(tmp_path, monkeypatch):
    """A child that prints a bare number, or a bench-like object of the wrong shape: its row fails with the
    reason, the run goes on to the next step and ends with the JSON and the table."""
    steps = [G.Step("bf16-vs-fp32", "", [sys.executable, "-c", "print(1)"], 1),
             G.Step("paper-bf16", "", [sys.executable, "-c", "print('{\"stages\": 5}')"], 1),
             G.Step("distilled", "", [sys.executable, "-c", "print('{\"stages\": {}}')"], 1)]
    _fake_gpu(monkeypatch, steps)
    assert G.main(["--json", str(tmp_path / "r.json")]) == 1
    assert [s.status for s in steps] == ["failed", "failed", "ok"]
    assert steps[0].reason == "exit 0" and "AttributeError" in steps[1].reason
    assert G.signal.getsignal(G.signal.SIGTERM) is not G.signal.default_int_handler  # the caller's handler is back


def test_a_step_that_cannot_start_fails_its_own_row(tmp_path, monkeypatch):
    steps = [G.Step("bf16-vs-fp32", "", [str(tmp_path / "no-such-python"), "-c", "print(1)"], 1),
             G.Step("vs-diffusers", "", [sys.executable, "-c", "print('{\"speedup\": 1.6}')"], 1)]
    _fake_gpu(monkeypatch, steps)
    monkeypatch.setattr(G, "unmet", lambda step, env: None)
    assert G.main(["--json", str(tmp_path / "r.json")]) == 1
    assert [s.status for s in steps] == ["failed", "ok"] and "FileNotFoundError" in steps[0].reason
    assert json.loads((tmp_path / "r.json").read_text())["complete"] is True


def test_a_step_hanging_to_its_timeout_cannot_starve_the_target_figures(monkeypatch):
    """Worst case within the budget (a fake clock, nothing runs): --compile and the fp8-storage child each hang
    until their timeout (2.5x their estimate), every other step takes its estimate. The steps that give the
    issue's targets and the TeaCache figures still run."""
    clock = [0.0]
    monkeypatch.setattr(G, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    def fake_run(step, timeout):
        took = timeout if step.name in ("paper-compile", "paper-fp8-storage") else step.estimate_s
        clock[0] += took
        step.status, step.wall_s = "ok", took

    monkeypatch.setattr(G, "run_step", fake_run)
    env = {"capability": "9.0", "av": "18.1.0", "diffusers": "0.42.1", "import_errors": {}}
    steps = G.plan()
    G.run_all(steps, env, 540.0, False)
    ran = {s.name for s in steps if s.status == "ok"}
    assert {"paper-bf16", "paper-fp8", "distilled", "vs-diffusers", "teacache-0.03", "teacache-0.05",
            "bf16-vs-fp32", "paper-attention-sdpa"} <= ran


def test_the_documented_device_call_fits_the_device_tool():
    """BENCHMARKS.md's device-tool command, as a session pastes it: at most 2000 characters, valid bash, each
    wheel installed on its own (one that does not fit the machine's Python costs only what needs it), options
    gpu_check accepts, and a budget that leaves the install, the imports and the table inside `timeout`, itself
    inside the call's 600 s."""
    text = (ROOT / "BENCHMARKS.md").read_text()
    block = text.split("this `command`", 1)[1].split("\n\n", 2)[1]
    assert all(line.startswith("    ") for line in block.splitlines())
    cmd = "\n".join(line[4:] for line in block.splitlines())
    assert len(cmd) <= 2000 and f"({len(cmd)} characters" in text
    assert subprocess.run(["bash", "-n"], input=cmd, text=True, check=False).returncode == 0
    assert "for w in .whl/*.whl; do" in cmd and "|| exit" not in cmd
    call = re.search(r"timeout -s TERM (\d+) python3 benchmarks/gpu_check.py (.*?) 2>&1", cmd)
    args = G.parse_args(call.group(2).replace("$OUT", "/out").split())
    assert args.budget + 30 <= int(call.group(1)) <= 590


def test_the_machine_line_comes_just_before_the_table(tmp_path, monkeypatch, capsys):
    """The device and versions the figures belong to are on stdout with the table (the device tool returns the
    output's tail), not only in the JSON."""
    env = {"gpu": "NVIDIA H100 80GB HBM3", "capability": "9.0", "torch": "2.11.0+cu130", "cuda": "13.0",
           "python": "3.12.3", "diffusers": "0.42.1", "av": None}
    monkeypatch.setattr(G, "environment", lambda: env)
    monkeypatch.setattr(G, "select", lambda args: [G.Step("bf16-vs-fp32", "", [sys.executable, "-c",
                                                                                "print('{\"rel_err\": 0.01}')"], 1)])
    assert G.main(["--json", str(tmp_path / "r.json")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-3] == ("gpu_check: NVIDIA H100 80GB HBM3 (compute capability 9.0); torch 2.11.0+cu130 (CUDA 13.0), "
                         "Python 3.12.3; diffusers 0.42.1, av -")
    assert lines[-2].startswith("step ") and lines[-1].startswith("bf16-vs-fp32 ")
