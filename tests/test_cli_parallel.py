"""``ltx generate`` on several processes, run as a user runs it: ``torchrun ... -m ltxcli generate`` and
``ltx generate --gpus N`` (which starts torchrun itself), on the CPU with gloo, two ranks.

The reference is the plain single-process library run (``ltxcli.load_pipeline("tiny").generate``) in this
process, never the multi-process code under test: the split video's PNG frames must be its frames rounded to
8 bits (a code may differ by one where the reference lies within 1e-5 of a rounding boundary: the ranks sum in
another order). Each subprocess starts torchrun and two workers that import torch and build the tiny model
(~5-10 s each on two shared cores).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_harness import assert_codes_match, frame_codes, json_lines
from readme_json import check_row

import ltxcli

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--height", "64", "--width", "96", "--num-frames", "9", "--steps", "2"]
TOL = 1e-5


@pytest.fixture(scope="module")
def tiny() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield ltxcli.load_pipeline("tiny")
    torch.set_num_threads(before)


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LTX_DEBUG", "LTX_MODEL")}
    env.update(PYTHONPATH=str(REPO_ROOT), LTX_WEIGHTS_DIR=str(tmp / "weights"), OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", HF_HOME=str(tmp / "hf"))
    return env


def _run(args: list[str], cwd: Path, timeout: int = 120, unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in _env(cwd).items() if k not in unset}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _torchrun(nproc: int, *ltx_args: str) -> list[str]:
    return ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "ltxcli", *ltx_args]


def _assert_split_video_matches(folder: Path, reference: torch.Tensor) -> int:
    """See the module docstring; returns how many codes differ (all at rounding boundaries)."""
    return assert_codes_match(frame_codes(folder), reference, tol=TOL)


def test_torchrun_two_ranks_split_one_video(tmp_path: Path, tiny: Any) -> None:
    """`torchrun --nproc-per-node 2 -m ltxcli generate`: one video split over two ranks (auto: sequence-parallel
    for the tiny preset's three guidance branches); rank 0 alone writes and prints, with both ranks' statistics."""
    r = _run(_torchrun(2, "generate", "a cat", "--model", "tiny", "--seed", "3", "--frames-dir", "frames", "--json",
                       *SMALL), tmp_path)
    assert r.returncode == 0, r.stderr
    (obj,) = json_lines(r.stdout)  # one line: rank 1 prints nothing
    assert obj["status"] == "ok" and obj["seed"] == 3 and obj["path"] == "frames"
    ranks = obj["ranks"]
    assert [e["rank"] for e in ranks] == [0, 1]
    check_row("generate", obj)  # "ranks" where README's --json table has it
    assert all(e["peak_memory_bytes"] > 0 and e["comm_bytes"] > 0 and e["timings"]["denoise_s"] > 0 for e in ranks)
    assert ranks[1]["timings"]["write_s"] == 0  # only rank 0 wrote
    assert "[rank 1/2" not in r.stderr and r.stderr.count("wrote frames") == 1
    expected = tiny.generate("a cat", seed=3, steps=2, height=64, width=96, num_frames=9).video
    flipped = _assert_split_video_matches(tmp_path / "frames", expected)
    print(f"torchrun x2 vs single process: {flipped} of {expected.numel()} codes one off at a rounding boundary")


def test_gpus_2_on_cpu_shares_the_random_seed(tmp_path: Path, tiny: Any) -> None:
    """`--gpus 2` starts torchrun itself (gloo on the CPU). No --seed: rank 0 draws one and sends it, so the
    split video is the single-process video for the seed it reports (a rank with another seed would add
    other noise to its share of the tokens). `-q` silences every banner, torchrun's OMP_NUM_THREADS one included
    (OMP_NUM_THREADS is unset here), so stderr stays empty."""
    r = _run(["-m", "ltxcli", "generate", "a dog runs", "--model", "tiny", "--gpus", "2", "--device", "cpu", "--frames-dir",
              "f-{seed}", "--json", "-q", *SMALL], tmp_path, unset=("OMP_NUM_THREADS",))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    (obj,) = json_lines(r.stdout)
    seed = obj["seed"]
    assert obj["path"] == f"f-{seed}" and len(obj["ranks"]) == 2
    expected = tiny.generate("a dog runs", seed=seed, steps=2, height=64, width=96, num_frames=9).video
    _assert_split_video_matches(tmp_path / f"f-{seed}", expected)


def test_gpus_2_batch_skip_existing_writes_each_item_once(tmp_path: Path) -> None:
    """A --batch is shared out round robin; every rank prints its own lines (they interleave on stdout); an
    existing output is skipped and kept; each item is written exactly once and no claim file is left. Each rank
    writes the latents of its own items too (``--latents-out`` pattern; only rank 0 wrote any before)."""
    (tmp_path / "prompts.txt").write_text("a cat\na dog\na bird\na fish\na red car\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "2.mp4").write_bytes(b"keep me")
    r = _run(["-m", "ltxcli", "generate", "--batch", "prompts.txt", "--model", "tiny", "--gpus", "2", "--device", "cpu", "--seed", "4",
              "-o", "out/{index}.mp4", "--skip-existing", "--json", "--latents-out", "lat/{index}.safetensors", *SMALL],
             tmp_path)
    assert r.returncode == 0, r.stderr
    objs = json_lines(r.stdout)
    assert sorted(p.name for p in (tmp_path / "lat").iterdir()) == [f"{i}.safetensors" for i in (0, 1, 3, 4)]
    assert all(o.get("latents_path") == f"lat/{o['index']}.safetensors" for o in objs if o["status"] == "ok")
    assert sorted(o["index"] for o in objs) == [0, 1, 2, 3, 4]
    by_index = {o["index"]: o for o in objs}
    assert by_index[2]["status"] == "skipped" and (tmp_path / "out" / "2.mp4").read_bytes() == b"keep me"
    assert by_index[2]["rank"] == 0 and r.stderr.count("skipped out/2.mp4") == 1  # the rank's line, not also the
    # launcher's (it printed every skipped item before starting the workers)
    for o in objs:  # the keys README's --json table lists, "rank" in the skipped item's too
        check_row("generate", o, 0 if o["status"] == "ok" else 1)
    for i in (0, 1, 3, 4):
        assert by_index[i]["status"] == "ok" and by_index[i]["rank"] == i % 2, by_index[i]
        with open(tmp_path / "out" / f"{i}.mp4", "rb") as fh:
            assert fh.read(12)[4:8] == b"ftyp"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{i}.mp4" for i in range(5)]
    assert "[rank 1/2" in r.stderr  # rank 1 reports its own items on stderr, labelled
    again = _run(["-m", "ltxcli", "generate", "--batch", "prompts.txt", "--model", "tiny", "--gpus", "2", "--device",
                  "cpu", "--seed", "4", "-o", "out/{index}.mp4", "--skip-existing", "--json", *SMALL], tmp_path)
    assert [(o["status"], o["rank"]) for o in sorted(json_lines(again.stdout), key=lambda o: o["index"])] == \
        [("skipped", i % 2) for i in range(5)]
    assert all(again.stderr.count(f"skipped out/{i}.mp4") == 1 for i in range(5)), again.stderr


def test_gpus_passes_on_the_workers_exit_code(tmp_path: Path) -> None:
    """A failure only the workers can see (the tiny model's 2 heads do not split 3 ways) is one labelled line
    per rank, and `--gpus` exits with the workers' code (2), not torchrun's 1."""
    r = _run(["-m", "ltxcli", "generate", "a cat", "--model", "tiny", "--gpus", "3", "--device", "cpu", "--parallel", "sequence",
              "-o", "o.mp4", *SMALL], tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if "error: --parallel sequence over 3 processes" in line]
    assert sorted(line.split("/")[0] for line in lines) == ["[rank 0", "[rank 1", "[rank 2"], r.stderr
    assert "Traceback" not in r.stderr  # torchrun's own (35 lines) after the ranks' one-line errors
    assert not (tmp_path / "o.mp4").exists()


def test_gpus_2_long_video_runs_the_windows_in_sequence(tmp_path: Path, tiny: Any) -> None:
    """A two-window long video (two prompts, --window/--overlap) on `--gpus 2`: the windows run one after the
    other, each split over both ranks (sequence-parallel, the tail conditioning and the decode tiles included);
    the frames are the single-process `long_video.generate`'s (the module docstring's rounding tolerance: the
    split sums in another order, and the tail of window 1 carries that into window 2). `--resume`: only rank 0
    keeps the finished windows, and nothing is left behind."""
    from ltxcli import long_video
    from ltxcli.request import GenerationRequest

    args = ["--height", "64", "--width", "96", "--num-frames", "57", "--steps", "2", "--window", "48", "--overlap", "24"]
    r = _run(["-m", "ltxcli", "generate", "a cat | a dog", "--model", "tiny", "--gpus", "2", "--device", "cpu",
              "--seed", "3", "--frames-dir", "f", "--resume", "--json", *args], tmp_path)
    assert r.returncode == 0, r.stderr
    (obj,) = json_lines(r.stdout)
    assert [w["prompt"] for w in obj["settings"]["long"]["windows"]] == ["a cat", "a dog"] and len(obj["ranks"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no resume state left
    req = GenerationRequest("a cat | a dog", seed=3, steps=2, height=64, width=96, num_frames=57, window=48, overlap=24)
    expected = long_video.generate(tiny, req).video
    flipped = _assert_split_video_matches(tmp_path / "f", expected)
    print(f"long video, --gpus 2 vs single process: {flipped} of {expected.numel()} codes one off at a boundary")


def _children(pid: int) -> list[int]:
    """The process ids of ``pid``'s children (Linux)."""
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(p) for p in fh.read().split()]


def _rank_1(torchrun: int) -> int:
    """The process id of torchrun's worker of rank 1 (Linux: by its environment)."""
    for pid in _children(torchrun):
        with open(f"/proc/{pid}/environ", "rb") as fh:
            if b"RANK=1" in fh.read().split(b"\0"):
                return pid
    raise AssertionError("no worker of rank 1")


def _signal_a_long_video(tmp_path: Path, signum: int, *, worker: bool) -> tuple[int, str]:
    """`ltx --gpus 2` making a long video (its file is written as the first window is done, the second takes a
    while): once its `.partial` file exists, ``signum`` goes to torchrun, or (``worker``) to its rank 1; returns
    the exit code and stderr, and checks that nothing is left behind (no `.partial`, no output)."""
    import time

    args = ["--height", "64", "--width", "96", "--num-frames", "57", "--steps", "400", "--window", "48", "--overlap",
            "24"]
    proc = subprocess.Popen([sys.executable, "-m", "ltxcli", "generate", "a cat | a dog", "--model", "tiny", "--gpus",
                             "2", "--device", "cpu", "--seed", "1", "-o", "out.mp4", *args], cwd=tmp_path,
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(".partial" in p.name for p in tmp_path.iterdir()) and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1]
        (torchrun,) = _children(proc.pid)
        os.kill(_rank_1(torchrun) if worker else torchrun, signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "weights") == [], err  # no .partial, no out.mp4
    return proc.returncode, err


def test_sigterm_straight_to_torchrun_removes_the_partial_output(tmp_path: Path) -> None:
    """SIGTERM sent to torchrun itself (a scheduler signalling the process tree, `kill` of the wrong pid) reaches
    the workers as SIGTERM: they used to die at once (Python's default action), leaving the streamed long video's
    `.partial` file behind, and the job exited 1. Now each worker unwinds as after Ctrl-C: the partial output is
    removed and the job exits 143, each rank saying so in one line."""
    import signal

    code, err = _signal_a_long_video(tmp_path, signal.SIGTERM, worker=False)
    assert code == 143, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert sorted(lines) == [f"[rank {r}/2 {os.uname().nodename}] error: terminated; partial outputs were removed"
                             for r in (0, 1)], err


# Holds the processes of `ltx --gpus 2` where a signal finds them unprepared, then says so with a file in
# $STARTING_DIR: HOLD=workers: each worker in Python's start-up, before `ltx` installs its handlers (until a
# SIGINT waits for the worker's code, or 60 s);
# HOLD=torchrun: torchrun once it started both workers, before it holds their handles.
_HOLD_HOOK = """\
import os, pathlib, time
if os.environ.get("HOLD") == "workers" and "RANK" in os.environ:
    import signal
    pathlib.Path(os.environ["STARTING_DIR"], os.environ["RANK"]).touch()
    end = time.monotonic() + 60
    while time.monotonic() < end and signal.SIGINT not in signal.sigpending():
        time.sleep(0.05)
if os.environ.get("HOLD") == "torchrun" and "LTX_RANK_STATUS_DIR" in os.environ and "RANK" not in os.environ:
    from torch.distributed.elastic.multiprocessing.subprocess_handler import subprocess_handler as sh
    spawn = sh.SubprocessHandler.__init__
    def held(self, *args, **kwargs):
        spawn(self, *args, **kwargs)
        if self.local_rank_id == 1:
            pathlib.Path(os.environ["STARTING_DIR"], "0").touch()
            pathlib.Path(os.environ["STARTING_DIR"], "1").touch()
            time.sleep(60)
    sh.SubprocessHandler.__init__ = held
"""


# Sends this process SIGINT when it is about to import click: `python -m ltxcli` importing its command line, as a
# worker of a user's own torchrun is when that torchrun passes a Ctrl-C on.
_KICK_HOOK = """\
import os, signal, sys
class _Kick:
    def find_spec(self, name, path=None, target=None):
        if name == "click" and os.environ.pop("KICK", None):
            os.kill(os.getpid(), signal.SIGINT)
sys.meta_path.insert(0, _Kick())
"""


def test_a_sigint_while_a_users_torchrun_worker_imports_is_no_traceback(tmp_path: Path) -> None:
    """A worker of a user's own `torchrun -m ltxcli` (not started with SIGINT blocked, as `ltx --gpus`'s are)
    printed a KeyboardInterrupt traceback from inside an import when torchrun passed a Ctrl-C on while it was
    starting: `python -m ltxcli` now holds SIGINT from its first line until its handlers are in place, and the
    worker dies of the signal without a word. Outside torchrun it is held too, and ends in the interrupt's one
    line and exit 130 (test_hostile.py: test_a_signal_while_the_command_line_is_imported_is_one_line)."""
    import signal

    (tmp_path / "sitecustomize.py").write_text(_KICK_HOOK)
    env = {**_env(tmp_path), "KICK": "1", "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}"}
    # SIGINT's default action, as a terminal gives it (a job started with `nohup ... &` inherits it ignored)
    default = {"preexec_fn": lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)}
    worker = subprocess.run([sys.executable, "-m", "ltxcli", "generate", "--help"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, env={**env, "RANK": "0", "WORLD_SIZE": "1"}, **default)
    assert (worker.returncode, worker.stderr, worker.stdout) == (-signal.SIGINT, "", "")
    alone = subprocess.run([sys.executable, "-m", "ltxcli", "generate", "--help"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60, env=env, **default)
    assert (alone.returncode, alone.stderr) == (130, "error: interrupted; partial outputs were removed\n")


@pytest.mark.parametrize(("hold", "to", "signame"), [
    ("workers", "torchrun", "SIGTERM"), ("workers", "a worker", "SIGTERM"), ("torchrun", "torchrun", "SIGTERM"),
    ("workers", "ltx", "SIGTERM"), ("workers", "ltx", "SIGINT"), ("workers", "a worker", "SIGINT")])
def test_a_signal_while_the_workers_start_is_one_line(tmp_path: Path, hold: str, to: str, signame: str) -> None:
    """SIGTERM to torchrun (or to a worker) while the workers are still starting (Python's own start-up, before
    `ltx` installs its handlers, or before torchrun holds their handles: held there by a `sitecustomize`) killed
    them without a word: the job exited with torchrun's 1 (a worker: 143) and nobody said why; or, caught while
    torchrun was starting them, they were left running, waiting for a rendezvous that was gone (and holding the
    caller's stderr open). Now `ltx` says it in one line and exits 143; nothing is written and no worker is left
    running. SIGTERM or Ctrl-C to `ltx` itself reaches the workers as SIGINT: a worker still in Python's start-up
    printed `Fatal Python error: init_import_site` and a KeyboardInterrupt traceback; now stderr is `ltx`'s one
    line (exit 143 or 130). SIGINT to one starting worker was "terminated", exit 143 (the other worker's SIGTERM
    from torchrun, which followed it): it is "interrupted", exit 130."""
    import signal
    import time

    signum = getattr(signal, signame)

    hook, starting, work = tmp_path / "hook", tmp_path / "starting", tmp_path / "work"
    for folder in (hook, starting, work):
        folder.mkdir()
    (hook / "sitecustomize.py").write_text(_HOLD_HOOK)
    env = {**_env(work), "STARTING_DIR": str(starting), "HOLD": hold}
    env["PYTHONPATH"] = f"{hook}{os.pathsep}{env['PYTHONPATH']}"
    proc = subprocess.Popen([sys.executable, "-m", "ltxcli", "generate", "a cat", "--model", "tiny", "--gpus", "2",
                             "--device", "cpu", "-q", "-o", "out.mp4", *SMALL], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(list(starting.iterdir())) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1]
        (torchrun,) = _children(proc.pid)
        workers = _children(torchrun)
        os.kill({"torchrun": torchrun, "a worker": workers[-1], "ltx": proc.pid}[to], signum)
        proc.wait(timeout=60)
        left_running = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    finally:
        for pid in [proc.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 128 + signum, err
    what = "terminated" if signum == signal.SIGTERM else "interrupted"
    assert err == f"error: {what}; partial outputs were removed\n", err
    assert out == "" and sorted(p.name for p in work.iterdir() if p.name != "weights") == []
    assert len(workers) == 2 and left_running == []


def test_a_worker_killed_by_sigkill_is_an_out_of_memory_failure(tmp_path: Path) -> None:
    """A worker killed by SIGKILL (on Linux most likely the kernel's out-of-memory killer: every process holds the
    whole model) said nothing and left the job's code to torchrun's 1. torchrun now records it for the launcher,
    which exits 5 (out of memory) with a line naming the rank and the likely cause; the other rank is stopped by
    torchrun and removes the partial output."""
    import signal

    code, err = _signal_a_long_video(tmp_path, signal.SIGKILL, worker=True)
    assert code == 5, err
    assert err.splitlines()[-1].startswith("error: out of memory (rank 1 was killed by SIGKILL, most likely by the "
                                           "system's out-of-memory killer"), err


def test_a_signal_while_the_torchrun_stage_checks_is_one_line(tmp_path: Path) -> None:
    """`ltx --gpus` imports no torch: it starts `ltx` again as its torchrun stage, which makes the checks (here it
    waits for a writer of the `--batch` FIFO) and then starts torchrun. SIGTERM to `ltx` meanwhile reaches the stage
    as SIGINT: it says nothing (else "interrupted", then `ltx` "terminated": two lines), `ltx` says it, exit 143."""
    import signal
    import time

    os.mkfifo(tmp_path / "batch")
    proc = subprocess.Popen([sys.executable, "-m", "ltxcli", "generate", "--batch", "batch", "--model", "tiny",
                             "--gpus", "2", "--device", "cpu", "-o", "{index}.mp4", *SMALL], cwd=tmp_path,
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal's
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline and not any(
                "wait_for_partner" in Path(f"/proc/{pid}/wchan").read_text() for pid in _children(proc.pid)):
            time.sleep(0.05)  # (the stage opens the FIFO, and waits)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (proc.returncode, out, err) == (143, "", "error: terminated; partial outputs were removed\n")
