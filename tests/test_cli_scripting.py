"""What scripts rely on (issue 14, points 1, 2 and 6): resumable batches, exit codes that do not depend on
``LTX_DEBUG``, a quiet end on a closed stdout, ``--gpus`` without GPUs, and the smaller fixes.

The scripting points that need a process of their own (a signal, a closed stream, no GPU) run ``python -m ltxcli``
in a subprocess as a user would (the tiny model, 32x32x9, one step); the rest run in process (``cli_harness.ltx``)
where a subprocess would only add start-up time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_harness import assert_one_error_line, enter_cli_env, json_lines, ltx, memoised_loader

from ltxcli import media, naming
from ltxcli.cli import common as cli_common

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--height", "32", "--width", "32", "--num-frames", "9", "--steps", "1"]
PATTERN = "out/{index:03d}-{seed}.mp4"

_cached_load = memoised_loader()


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (
        "RANK", "WORLD_SIZE", "LOCAL_RANK", "LTX_DEBUG", "LTX_MODEL", "HF_HUB_OFFLINE", "OMP_NUM_THREADS")}
    env.update(PYTHONPATH=str(REPO_ROOT), LTX_WEIGHTS_DIR=str(tmp / "weights"), HF_HOME=str(tmp / "hf"), **extra)
    return env


def _ltx(args: list[str], cwd: Path, timeout: int = 180, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ltxcli", *args], cwd=cwd, env=_env(cwd, **env),
                          capture_output=True, text=True, timeout=timeout, check=False)


def _records(folder: Path) -> dict[Path, dict[str, Any]]:
    """The record of every output in ``folder`` (hidden files, such as an interrupted write's, are not outputs)."""
    out = {}
    for p in sorted(q for q in folder.iterdir() if not q.name.startswith(".")):
        rec = media.read_video_metadata(p)
        assert rec is not None, p
        out[p] = rec
    return out


# --------------------------------------------------------------------------------------- resumable batches


def test_interrupted_batch_resumes_with_one_file_per_item(tmp_path: Path) -> None:
    """The README's resume command, run again after Ctrl-C stopped the first run during its second item (a
    larger one, so the interrupt lands inside it): the rerun takes the batch seed recorded in the written file,
    skips it and writes the rest: exactly one file per item, each item's seed = batch seed + index, as one
    uninterrupted run would have made them."""
    (tmp_path / "prompts.txt").write_text('a cat\n{"prompt": "a dog", "height": 96, "width": 96, "num_frames": 17}\n'
                                          "a bird\n")
    args = ["generate", "--batch", "prompts.txt", "--model", "tiny", "-o", PATTERN, "--skip-existing", "--json",
            *SMALL]
    first = subprocess.Popen([sys.executable, "-m", "ltxcli", *args], cwd=tmp_path, env=_env(tmp_path),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             # Ctrl-C as at a terminal (a background job of a shell may inherit SIGINT ignored)
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert first.stdout is not None
    line = first.stdout.readline()  # the first item is written, the second one has started
    first.send_signal(signal.SIGINT)
    rest, err = first.communicate(timeout=120)
    assert first.returncode == 130 and rest == "", err
    written = json.loads(line)
    assert written["status"] == "ok" and written["index"] == 0
    batch_seed = written["seed"]
    assert f"batch seed {batch_seed}" in err
    assert [p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")] == [Path(written["path"]).name]

    # the rerun in process (the autouse cli_env: in tmp_path, the same weights folder): the interrupt needed a
    # process of its own, the resumed run is the same code without one's start-up
    again = ltx(*args)
    assert again.exit_code == 0, again.stderr
    objs = json_lines(again.stdout)
    assert [(o["index"], o["status"]) for o in objs] == [(0, "skipped"), (1, "ok"), (2, "ok")]
    assert objs[0]["path"] == written["path"]
    assert f"resuming batch seed {batch_seed}" in again.stderr
    records = _records(tmp_path / "out")
    assert sorted(r["index"] for r in records.values()) == [0, 1, 2]  # one file per item, no duplicate
    for path, rec in records.items():
        assert rec["batch_seed"] == batch_seed and rec["seed"] == batch_seed + rec["index"]
        assert path.name == f"{rec['index']:03d}-{rec['seed']}.mp4"
    assert [r["prompt"] for r in records.values()] == ["a cat", "a dog", "a bird"]


def test_rerun_with_another_random_seed_finds_outputs_by_record(cli_env: Path) -> None:
    """Names that hold the seed (the default names in a folder): a rerun without --seed recognises every
    output by its record (index, prompt, settings) and loads nothing; a changed prompt is a new item."""
    (cli_env / "prompts.txt").write_text("a cat\na dog\n")
    args = ["generate", "--batch", "prompts.txt", "--model", "tiny", "-o", "out/", "--skip-existing", "--json", *SMALL]
    first = ltx(*args)
    assert first.exit_code == 0, first.stderr
    names = sorted(p.name for p in (cli_env / "out").iterdir())
    again = ltx(*args)
    assert [o["status"] for o in json_lines(again.stdout)] == ["skipped", "skipped"], again.stderr
    assert sorted(p.name for p in (cli_env / "out").iterdir()) == names
    (cli_env / "prompts.txt").write_text("a cat\na red dog\n")
    changed = ltx(*args)
    assert [o["status"] for o in json_lines(changed.stdout)] == ["skipped", "ok"], changed.stderr
    assert len(list((cli_env / "out").iterdir())) == 3


def test_a_kept_video_of_another_request_is_not_reported_as_the_item(cli_env: Path) -> None:
    """--skip-existing keeps a file at an item's name that was made for another prompt (a warning on stderr), but
    its JSON line said only "skipped", as for the item's own video, and stderr "skipped x.mp4 (exists)": a script
    took the other prompt's video for the item's. Its reason is "other_video"; the item's own video has none."""
    small = ["--model", "tiny", "--skip-existing", "--json", "--seed", "1", *SMALL]
    assert ltx("generate", "a cat", "-o", "x.mp4", *small).exit_code == 0
    kept = ltx("generate", "a dog", "-o", "x.mp4", *small)
    assert [(o["status"], o.get("reason")) for o in json_lines(kept.stdout)] == [("skipped", "other_video")]
    assert "skipped x.mp4 (exists)" not in kept.stderr and "another prompt" in kept.stderr
    (cli_env / "b.jsonl").write_text('{"prompt": "a dog", "output": "x.mp4"}\n{"prompt": "a bird", "output": "y.mp4"}\n')
    batch = ltx("generate", "--batch", "b.jsonl", *small)  # one item generated: run_batch reports the skip
    assert [(o["status"], o.get("reason")) for o in json_lines(batch.stdout)] == [("skipped", "other_video"),
                                                                                  ("ok", None)], batch.stderr
    own = ltx("generate", "a cat", "-o", "x.mp4", *small)
    assert [(o["status"], o.get("reason")) for o in json_lines(own.stdout)] == [("skipped", None)], own.stderr


def test_skip_existing_compares_lora_control_and_input_settings(cli_env: Path) -> None:
    """``--skip-existing`` with an explicit seed: an existing output counts as done only when it was made with the
    same LoRA (file and strength), control, step cache, compute dtype and float8 use. At a fixed name, one made with other settings is
    kept and skipped with the warning that says so (never taken for this item's output); a batch rerun with
    another LoRA strength writes its own file."""
    from test_lora import tiny_lora

    lora = tiny_lora(cli_env)
    base = ["generate", "a cat", "--model", "tiny", "--seed", "5", "--skip-existing", "--json", *SMALL]
    other_settings = "holds a video of another prompt or other settings"

    def run(*extra: str, out: str) -> tuple[str, str]:
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # in process: the same warning again in every run, as a new process
            r = ltx(*base, "-o", out, *extra)
        assert r.exit_code == 0, r.stderr
        (obj,) = json_lines(r.stdout)
        return obj["status"], r.stderr

    styled = ["--lora", f"{lora}:0.8"]
    assert run(*styled, out="a.mp4")[0] == "ok"
    status, err = run(*styled, out="a.mp4")
    assert status == "skipped" and other_settings not in err  # same LoRA and strength: done
    for other in (["--lora", f"{lora}:0.5"], [], [*styled, "--cache", "teacache"]):
        status, err = run(*other, out="a.mp4")
        assert status == "skipped" and other_settings in err, other
    clip = cli_env / "clip.mp4"
    media.write_video(clip, torch.rand(9, 32, 32, 3, generator=torch.Generator().manual_seed(1)), 24)
    assert run("--control", f"{clip}:0.9", out="c.mp4")[0] == "ok"
    status, err = run("--control", f"{clip}:0.9", out="c.mp4")
    assert status == "skipped" and other_settings not in err
    status, err = run("--control", f"{clip}:0.5", out="c.mp4")
    assert status == "skipped" and other_settings in err
    assert run(out="w.mp4")[0] == "ok"  # the compute dtype and float8 use are recorded and compared too
    status, err = run(out="w.mp4")
    assert status == "skipped" and other_settings not in err
    for other in (["--weights-dtype", "fp8"], ["--dtype", "bfloat16"]):
        status, err = run(*other, out="w.mp4")
        assert status == "skipped" and other_settings in err, other
    assert media.read_video_metadata(cli_env / "w.mp4")["fp8"] is None
    assert run("--weights-dtype", "fp8", out="f.mp4")[0] == "ok"
    assert media.read_video_metadata(cli_env / "f.mp4")["fp8"] == "storage"
    status, err = run("--weights-dtype", "fp8", out="f.mp4")
    assert status == "skipped" and other_settings not in err
    # the README's resume command (a batch, no seed, names with the seed): a rerun with another LoRA strength is
    # not taken for the earlier run's output, so it draws its own batch seed and writes its own file
    (cli_env / "prompts.txt").write_text("a cat\n")
    batch = ["generate", "--batch", "prompts.txt", "--model", "tiny", "-o", PATTERN, "--skip-existing", "--json",
             *SMALL]
    for scale, status in (("0.8", "ok"), ("0.8", "skipped"), ("0.5", "ok"), ("0.5", "skipped")):
        r = ltx(*batch, "--lora", f"{lora}:{scale}")
        assert [o["status"] for o in json_lines(r.stdout)] == [status], (scale, r.stderr)
    records = _records(cli_env / "out")
    assert sorted(rec["loras"][0]["scale"] for rec in records.values()) == [0.5, 0.8]


def test_batch_seed_seeds_items_by_index(cli_env: Path) -> None:
    (cli_env / "prompts.txt").write_text('a cat\n{"prompt": "a dog", "seed": 11}\na bird\n')
    r = ltx("generate", "--batch", "prompts.txt", "--model", "tiny", "--seed", "100", "-o", PATTERN, "--json", *SMALL)
    assert r.exit_code == 0, r.stderr
    assert [o["seed"] for o in json_lines(r.stdout)] == [100, 11, 102]


def test_a_batch_seed_too_large_for_its_items_names_the_seed_given(cli_env: Path) -> None:
    """--seed 2**63 - 1 (accepted) on a 2-item batch failed with "seed=9223372036854775808 must be an integer in
    [0, ...]": item 1's derived seed, which the user never gave. Valid seeds derive as before."""
    (cli_env / "prompts.txt").write_text('a cat\n{"prompt": "a dog", "seed": 11}\na bird\n')
    top = 2**63 - 1
    line = assert_one_error_line(ltx("generate", "--batch", "prompts.txt", "--model", "tiny", "--seed", str(top),
                                     "-o", PATTERN, *SMALL), 2)
    assert line == (f"error: seed={top} is too large for a batch of 3 items (item 2 gets seed + 2, above "
                    f"2**63 - 1): use a seed of at most {top - 2}")
    assert not (cli_env / "out").exists()
    r = ltx("generate", "--batch", "prompts.txt", "--model", "tiny", "--seed", str(top - 2), "-o", PATTERN, "--json",
            *SMALL)
    assert r.exit_code == 0, r.stderr
    assert [o["seed"] for o in json_lines(r.stdout)] == [top - 2, 11, top]


# --------------------------------------------------------------------------------------- exit codes


def _error_cases(tmp: Path) -> list[tuple[list[str], int, dict[str, str]]]:
    (tmp / "exists.mp4").write_bytes(b"x")
    (tmp / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return [
        (["generate", "a cat", "--model", "tiny", "-o", "exists.mp4"], 2, {}),
        (["generate", "a cat", "--model", "tiny", "--width", "33"], 2, {}),
        (["generate", "a cat", "--model", "ltxv-2b-0.9.8-distilled"], 3, {"HF_HUB_OFFLINE": "1"}),
        (["i2v", "bad.png", "a cat", "--model", "tiny"], 6, {}),
    ]


@pytest.mark.parametrize("debug", [False, True])
def test_exit_codes_do_not_depend_on_ltx_debug(cli_env: Path, monkeypatch: pytest.MonkeyPatch, debug: bool) -> None:
    """LTX_DEBUG=1 adds the traceback before the same error line; the exit code is the same. In process (the
    traceback and the code are ltx's error handler's; a subprocess per case only added its start-up, 8 of them):
    test_gpus_without_gpus_is_a_usage_error and test_cli's subprocess run check a real process's exit code."""
    for args, code, env in _error_cases(cli_env):
        with monkeypatch.context() as mp:
            for name, value in {**env, **({"LTX_DEBUG": "1"} if debug else {})}.items():
                mp.setenv(name, value)
            r = ltx(*args)
        assert r.exit_code == code, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert lines[-1].startswith("error: "), r.stderr
        assert ("Traceback" in r.stderr) == debug, r.stderr
        if not debug:
            assert len(lines) == 1, r.stderr


def test_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    """A reader that went away: 141 (128 + SIGPIPE, what the shell reports for `yes | head -1`), no error line;
    through `| head -1` the status is 141 or 0 (when the writer finished first), never an error line."""
    read, write = os.pipe()
    os.close(read)  # every write to stdout fails with EPIPE
    r = subprocess.run([sys.executable, "-m", "ltxcli", "weights", "list", "--json"], cwd=tmp_path, env=_env(tmp_path),
                       stdout=write, stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    os.close(write)
    assert (r.returncode, r.stderr) == (cli_common.EXIT_PIPE, "")
    media.write_video(tmp_path / "v.mp4", torch.rand(3, 16, 16, 3), 8, metadata={"tool": "ltxcli", "prompt": "p"})
    # the status when the writer finished first is the command's own: 0, but 2 for `ltx weights` (a group without
    # its subcommand prints its help as a usage error), so under load that race may give 2 there
    for cmd, own in (("weights list --json", 0), ("info v.mp4", 0), ("generate --help", 0), ("weights", 2)):
        r = subprocess.run(["bash", "-o", "pipefail", "-c", f"{sys.executable} -m ltxcli {cmd} | head -1"],
                           cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode in (own, cli_common.EXIT_PIPE) and r.stderr == "", (cmd, r.returncode, r.stderr)
        assert len(r.stdout.splitlines()) == 1


def test_closed_stderr_reader_ends_like_a_closed_stdout(tmp_path: Path) -> None:
    """stderr's reader gone (``2>&1 | head -1``, a log reader that died): 141 as for stdout, nothing left behind.
    rich ended the run with exit 1 and no word (its own broken-pipe handling), unlike every other closed pipe."""
    read, write = os.pipe()
    os.close(read)  # every write to stderr fails with EPIPE
    r = subprocess.run([sys.executable, "-m", "ltxcli", "generate", "a cat", "--model", "tiny", *SMALL, "-o", "a.mp4",
                        "--progress", "plain"], cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE,
                       stderr=write, text=True, timeout=180, check=False)
    os.close(write)
    assert (r.returncode, r.stdout) == (cli_common.EXIT_PIPE, "")
    assert [p.name for p in tmp_path.iterdir() if p.name != "weights"] == []  # no video, no hidden .partial


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (every write: ENOSPC)")
def test_help_and_version_to_a_full_disk_are_one_line(tmp_path: Path) -> None:
    """`ltx --help > /dev/full` (and --version, a command's --help) printed a 40-line traceback: they are written
    while the options are parsed, before a command's own one-line error handling."""
    for args in (["--help"], ["--version"], ["generate", "--help"]):
        with open("/dev/full", "w") as full:
            r = subprocess.run([sys.executable, "-m", "ltxcli", *args], cwd=tmp_path, env=_env(tmp_path), stdout=full,
                               stderr=subprocess.PIPE, text=True, timeout=120, check=False)
        assert (r.returncode, r.stderr) == (1, "error: cannot write to stdout: No space left on device\n"), args


@pytest.mark.skipif(os.name != "posix", reason="shell redirections")
def test_a_standard_stream_closed_by_the_caller_reads_as_dev_null(tmp_path: Path) -> None:
    """``>&-``, ``2>&-`` and ``<&-`` as shell scripts write them: the run goes on as with /dev/null there. It used
    to end in "internal error: AttributeError" and exit 1 once the video was written (Python leaves sys.stdout
    None); under a bash wrapper script, whose own file stays open read-only as descriptor 2, the run failed
    writing "wrote ..." to stderr (exit 1, no data line)."""
    wrapper = tmp_path / "ltx-wrapper"
    wrapper.write_text(f'#!/bin/bash\nexec {sys.executable} -m ltxcli "$@"\n')
    wrapper.chmod(0o755)
    run = ["generate", "--model", "tiny", *SMALL]
    cases = [  # (shell command, output, expected stdout, expected stderr start)
        (f"{sys.executable} -m ltxcli {{}} 'a cat' -o a.mp4 --json >&-", "a.mp4", "", "wrote a.mp4 "),
        (f"{wrapper} {{}} 'a cat' -o b.mp4 --json 2>&-", "b.mp4", '"path": "b.mp4"', ""),
        (f"{sys.executable} -m ltxcli {{}} - -o c.mp4 <&-", "c.mp4", "c.mp4\n", "warning: the prompt is empty"),
    ]
    for command, output, stdout, stderr in cases:
        r = subprocess.run(["bash", "-c", command.format(" ".join(run))], cwd=tmp_path, env=_env(tmp_path),
                           capture_output=True, text=True, timeout=180, check=False)
        assert r.returncode == 0 and "error" not in r.stderr, (command, r.returncode, r.stderr)
        assert stdout in r.stdout and (r.stdout == "") == (stdout == "") and r.stderr.startswith(stderr), r
        assert (tmp_path / output).is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpus_without_gpus_is_a_usage_error(tmp_path: Path) -> None:
    r = _ltx(["generate", "a cat", "--model", "tiny", "--gpus", "2", *SMALL], tmp_path)
    assert r.returncode == 2 and r.stdout == "", r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: --gpus 2 but no GPU(s) are visible") and "--device cpu" in line


# --------------------------------------------------------------------------------------- the smaller items


@pytest.fixture(autouse=True)
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return enter_cli_env(tmp_path, monkeypatch, _cached_load)


def test_help_shows_no_type_placeholders_and_whole_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    for cmd in (["generate"], ["i2v"], ["weights", "pull"], ["vae", "encode"], ["info"]):
        r = ltx(*cmd, "--help")
        assert r.exit_code == 0
        assert "<bool>" not in r.stdout and "<list[" not in r.stdout and "<str>" not in r.stdout, r.stdout
    text = ltx("generate", "--help").stdout
    assert "a-cat-7-768x512x97.mp4" in text and "out/{index}-{seed}.mp4" in text  # not cut at 80 columns
    assert "INT " in text and "[auto|on|off]" in text.replace("│", "").replace(" ", "")


def test_weights_path_of_a_builtin_is_a_usage_error() -> None:
    assert "tiny is built in" in assert_one_error_line(ltx("weights", "path", "tiny"), 2)


def test_offline_dry_run_says_to_go_online(tmp_path: Path) -> None:
    r = _ltx(["weights", "pull", "ltxv-2b-0.9.8-distilled", "--dry-run"], tmp_path, HF_HUB_OFFLINE="1")
    assert r.returncode == 3, r.stderr
    assert "unset HF_HUB_OFFLINE" in r.stderr and "with network access" not in r.stderr
    # the model's size is pinned in weights.toml: planned offline; its upsampler's is not: go online for it
    assert r.stdout.startswith("ltxv-2b-0.9.8-distilled\t") and r.stdout.rstrip().endswith(
        "ltxv-2b-0.9.8-distilled.safetensors\t6.3 GB"), r.stdout
    assert "ltxv-spatial-upscaler-0.9.8 is not (fully) downloaded" in r.stderr


def test_dry_run_without_network_plans_what_weights_toml_pins(tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: the Hub cannot be reached, HF_HUB_OFFLINE is not set
    r = _ltx(["weights", "pull", "ltxv-2b-0.9.8-distilled", "--dry-run"], tmp_path,
             HF_ENDPOINT=f"http://127.0.0.1:{port}")
    assert r.returncode == 3, r.stderr
    # pinned in weights.toml: planned as offline; the upsampler's size is not: the Hub's own one-line error
    assert r.stdout.startswith("ltxv-2b-0.9.8-distilled\t") and r.stdout.rstrip().endswith(
        "ltxv-2b-0.9.8-distilled.safetensors\t6.3 GB"), r.stdout
    assert r.stderr.strip().splitlines() == [
        f"error: cannot reach the Hub (http://127.0.0.1:{port}) to download ltxv-spatial-upscaler-0.9.8: check your "
        "connection or HF_ENDPOINT (ConnectError)"], r.stderr


def test_verify_without_network_runs_the_offline_checks(tmp_path: Path) -> None:
    """The Hub unreachable: a file shorter than weights.toml pins is a mismatch (4), as offline; one of the pinned
    size that only the Hub's hash could check is not reported verified (3)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    f = tmp_path / "weights" / "Lightricks" / "LTX-Video" / "ltxv-2b-0.9.8-distilled.safetensors"  # _env's
    f.parent.mkdir(parents=True)
    f.write_bytes(b"x" * 1000)
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{port}"}
    r = _ltx(["weights", "verify", "ltxv-2b-0.9.8-distilled"], tmp_path, **env)
    assert r.returncode == 4 and "is 1000 bytes, expected" in r.stderr, r.stderr
    with f.open("r+b") as fh:  # sparse: the pinned size, no hash known offline
        fh.truncate(_pinned_size("ltxv-2b-0.9.8-distilled"))
    r = _ltx(["weights", "verify", "ltxv-2b-0.9.8-distilled"], tmp_path, **env)
    assert r.returncode == 3 and "cannot reach the Hub" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def _pinned_size(name: str) -> int:
    from ltxcli.weights.registry import load_registry

    (f,) = load_registry()[name].files
    assert f.size is not None
    return f.size


def test_existing_frames_dir_names_frames_dir(cli_env: Path) -> None:
    (cli_env / "frames").mkdir()
    line = assert_one_error_line(ltx("generate", "a cat", "--model", "tiny", "--frames-dir", "frames", *SMALL), 2)
    assert "choose another --frames-dir" in line and "choose another -o" not in line


def test_unreadable_image_in_a_batch_names_its_line(cli_env: Path) -> None:
    (cli_env / "bad.png").write_bytes(b"not an image")
    (cli_env / "prompts.txt").write_text('a cat\n{"prompt": "a dog", "image": "bad.png"}\n')
    line = assert_one_error_line(ltx("generate", "--batch", "prompts.txt", "--model", "tiny", *SMALL), 6)
    assert line.startswith("error: --batch prompts.txt line 2: bad.png"), line


def test_outputs_get_the_same_permissions(cli_env: Path) -> None:
    """A latents file is created like a video: 0666 less the umask (safetensors alone leaves 0600)."""
    old = os.umask(0o022)
    try:
        media.write_video(cli_env / "clip.mp4", torch.rand(9, 32, 32, 3), 8)
        r = ltx("vae", "encode", "clip.mp4", "--model", "tiny", "-o", "lat.safetensors")
        assert r.exit_code == 0, r.stderr
        assert stat.S_IMODE((cli_env / "lat.safetensors").stat().st_mode) == 0o644
        assert stat.S_IMODE((cli_env / "clip.mp4").stat().st_mode) == 0o644
    finally:
        os.umask(old)


@pytest.mark.parametrize("other", ["sub/../same.mp4", "{cwd}/same.mp4", "link/same.mp4"])
def test_one_file_named_twice_in_a_batch_is_refused_before_work(cli_env: Path, other: str) -> None:
    """Two batch items whose outputs are one file under two spellings: refused up front as for one spelling. The
    first item used to be made, then the second failed (exit 2), or with --overwrite replaced it."""
    (cli_env / "sub").mkdir()
    (cli_env / "link").symlink_to(cli_env)
    lines = [{"prompt": "a cat", "output": "same.mp4"}, {"prompt": "a dog", "output": other.format(cwd=cli_env)}]
    (cli_env / "b.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for extra in ([], ["--overwrite"]):
        line = assert_one_error_line(ltx("generate", "--batch", "b.jsonl", "--model", "tiny", *SMALL, *extra), 2)
        assert line.startswith("error: items 0 and 1 would both write "), line
        assert not (cli_env / "same.mp4").exists()


def test_output_without_suffix_is_refused(cli_env: Path) -> None:
    line = assert_one_error_line(ltx("generate", "a cat", "--model", "tiny", "-o", "noext", *SMALL), 2)
    assert "noext.mp4" in line and "noext/" in line
    assert not (cli_env / "noext").exists()
    for empty in (["-o", ""], ["--frames-dir", ""]):  # an unset $OUT in a script: not the current folder
        line = assert_one_error_line(ltx("generate", "a cat", "--model", "tiny", *empty, *SMALL), 2)
        assert "is empty" in line, line
    assert list(cli_env.glob("*.mp4")) == []
    (cli_env / "existing").mkdir()
    r = ltx("generate", "a cat", "--model", "tiny", "-o", "existing", "--seed", "1", *SMALL)
    assert r.exit_code == 0 and r.stdout.strip() == "existing/a-cat-1-32x32x9.mp4", r.stderr


def test_slug_keeps_unicode_letters_safely(cli_env: Path) -> None:
    assert naming.slugify("猫がサーフィンする") == "猫がサーフィンする"
    assert naming.slugify("Ünïcödé Café, déjà vu!") == "ünïcödé-café-déjà-vu"
    assert naming.slugify("नमस्ते दुनिया") == "नमस्ते-दुनिया"  # combining vowel signs stay in their word
    assert naming.slugify("../a/b\\c:d*e?\x00f") == "a-b-c-d-e-f"
    assert naming.slugify("!!!") == "video"
    r = ltx("generate", "Кошка на доске", "--model", "tiny", "--seed", "2", *SMALL)
    assert r.exit_code == 0 and r.stdout.strip() == "кошка-на-доске-2-32x32x9.mp4", r.stderr


def test_a_prompt_that_is_not_utf8_is_one_line(cli_env: Path) -> None:
    """A prompt argument in another encoding (``$'caf\\xe9'``, Latin-1) arrives with its byte as a lone surrogate
    (os.fsdecode); the tokenizer then failed: "internal error: TypeError: TextEncodeInput must be ...", exit 1."""
    r = subprocess.run([sys.executable, "-m", "ltxcli", "generate", b"caf\xe9", "--model", "tiny", *SMALL, "-o",
                        "o.mp4"], cwd=cli_env, env=_env(cli_env), capture_output=True, text=True, timeout=180)
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 1, r
    assert r.stderr.startswith("error: prompt='caf\\udce9' must be a string of UTF-8 text") and "iconv" in r.stderr, r.stderr
    for args in (["generate", "a cat", "--negative-prompt", "caf\udce9", *SMALL, "-o", "o.mp4"],
                 ["prompt", "caf\udce9", "--enhancer-model", "tiny", "--caption-model", "tiny"]):
        line = assert_one_error_line(ltx(*args, "--model", "tiny"), 2)
        assert "='caf\\udce9' must be a string of UTF-8 text" in line, line
    assert not (cli_env / "o.mp4").exists()


def test_json_of_an_output_path_that_is_not_utf8_stays_utf8(cli_env: Path) -> None:
    """`-o $'out\\xff.mp4'`: the path's byte went to stdout raw in the --json line, which was then not UTF-8 (not
    JSON). It is escaped as "\\udcff" (its surrogate escape), which gives the bytes back through os.fsencode."""
    r = ltx("generate", "a cat", "--model", "tiny", *SMALL, "-o", os.fsdecode(b"out\xff.mp4"), "--json")
    assert r.exit_code == 0, r.stderr
    line = r.stdout_bytes.decode("utf-8").strip()
    assert '"path": "out\\udcff.mp4"' in line, line
    assert os.fsencode(json.loads(line)["path"]) == b"out\xff.mp4"
    assert (cli_env / os.fsdecode(b"out\xff.mp4")).is_file()


def test_an_input_path_that_is_not_utf8_is_recorded(cli_env: Path) -> None:
    """`ltx extend $'c\\xff.mp4'` (or `-c` with such a name) failed at the end with "error: 'utf-8' codec can't
    encode character '\\udcff' ...: surrogates not allowed", exit 2: the record names the input, and the MP4 tag
    is UTF-8 text. The name is recorded as its surrogate escape, which reads back as the same bytes."""
    name = os.fsdecode(b"c\xff.mp4")
    media.write_video(cli_env / name, torch.rand(9, 32, 32, 3), 24)
    r = ltx("extend", name, "it goes on", "--frames", "8", "--model", "tiny", "--steps", "1", "-o", "e.mp4")
    assert r.exit_code == 0, r.stderr
    rec = media.read_video_metadata(cli_env / "e.mp4")
    assert rec is not None and os.fsencode(rec["extend"]["video"]) == b"c\xff.mp4", rec


def test_stdin_that_is_not_utf8_is_named_as_a_file_would_be(cli_env: Path) -> None:
    """`--batch -` and `PROMPT -` with Latin-1 bytes on stdin said only "'utf-8' codec can't decode byte 0xe9 ...",
    exit 2, where the same bytes in a --batch file name the file (exit 6); a BOM stayed in front of the prompt."""
    from typer.testing import CliRunner

    from ltxcli.cli import app

    for args, what in ((["--batch", "-"], "--batch -"), (["-"], "PROMPT -")):
        r = CliRunner().invoke(app, ["generate", *args, "--model", "tiny", *SMALL, "-o", "o{index}.mp4"],
                               input=b"caf\xe9 au lait\n")
        line = assert_one_error_line(r, 6)
        assert line.startswith(f"error: {what}: stdin is not UTF-8 text: 'utf-8' codec can't decode byte 0xe9"), line
    r = ltx("generate", "-", "--model", "tiny", *SMALL, "--json", input="\ufeffa cat\r\n")
    assert r.exit_code == 0, r.stderr
    assert json_lines(r.stdout)[0]["prompt"] == "a cat"


def test_a_file_ffmpeg_cannot_read_is_named_so_without_an_errno(cli_env: Path) -> None:
    """`ltx info notes.txt` said "cannot open: [Errno 1094995529] Invalid data found when processing input:
    'notes.txt'" (FFmpeg's AVERROR_INVALIDDATA as an errno); `ltx generate --from` read the record the same way."""
    (cli_env / "notes.txt").write_text("not a video\n")
    for args in (["info", "notes.txt"], ["generate", "--from", "notes.txt", "-o", "o.mp4"]):
        line = assert_one_error_line(ltx(*args), 6)
        assert line == "error: notes.txt: not a video format FFmpeg can read", line


def test_an_output_another_process_made_meanwhile_is_kept_with_one_hint(cli_env: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The output appears while the video is encoded (another job): kept, and the line names the option once. It
    said "(pass overwrite=True to replace it); pass --overwrite to replace it": the library's hint and the CLI's."""
    real = media.write._encode

    def encode(temp: Path, *args: Any) -> None:
        real(temp, *args)
        (cli_env / "o.mp4").write_bytes(b"theirs")

    monkeypatch.setattr(media.write, "_encode", encode)
    line = assert_one_error_line(ltx("generate", "a cat", "--model", "tiny", *SMALL, "-o", "o.mp4"), 2)
    assert line == "error: o.mp4 already exists; not overwriting it (pass --overwrite to replace it)"
    assert [p.name for p in cli_env.iterdir() if p.is_file()] == ["o.mp4"]
    assert (cli_env / "o.mp4").read_bytes() == b"theirs"


def test_empty_prompt_warns(cli_env: Path) -> None:
    r = ltx("generate", "", "--model", "tiny", *SMALL)
    assert r.exit_code == 0, r.stderr
    assert "warning: the prompt is empty" in r.stderr


def test_cpu_memory_plan_counts_the_decoded_video() -> None:
    """On a CPU the decoded float32 video on the host is the same memory as the decode's: 2048x2048x481 on tiny
    needs more than the float32 video alone, 4 * 3 * 481 * 2048 * 2048 bytes (24.2 GB), when not streamed, and
    more than the decode's activations plus one time window of it when streamed."""
    from ltxcli.memory.plan import RunShape, plan_estimators
    from ltxcli.memory.weights import spec_parts
    from ltxcli.spec import resolve_spec

    ref = resolve_spec("tiny")
    tcfg, vcfg, parts = spec_parts(ref, torch.float32, fp8=False, narrow=False)
    video = 4 * 3 * 481 * 2048 * 2048
    peaks = {}
    for streamed in (False, True):
        est, _ = plan_estimators(RunShape.of_preset(ref.preset), tcfg, vcfg, dtype=torch.float32, offload="none",
                                 vae_tiling="auto", offload_saves=False, parts=parts, free_bytes=20 * 2**30,
                                 device_is_host=True, text_encoder_freed=True, streamed=streamed)
        e = est(2048, 2048, 481)
        decode = e.stage("decode")
        assert decode is not None and e.peak_bytes >= decode.device_bytes + decode.host
        peaks[streamed] = e.peak_bytes
    assert peaks[False] > video + 10 * 2**30 and video / 4 < peaks[True] - 10 * 2**30 < video
