"""The JSON lines of ``ltx generate --gpus N --batch FILE --json``: every rank prints its items' lines to the one
stdout that torchrun's workers share, and a pipe keeps a write whole only up to PIPE_BUF (4096 bytes). Two
processes, as two ranks of :func:`ltxcli.parallel.launch.launch` (its status folder in their environment) or of a
user's own ``torchrun -m ltxcli`` (``RANK`` and ``WORLD_SIZE`` alone), print long lines (a 100 000-character prompt) through the CLI's :class:`~ltxcli.cli.common.Output` into one pipe at the
same moment: every line read back must be one of theirs, whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ltxcli.parallel.launch import RANK_STATUS_ENV

LINES, CHARS = 20, 100_000  # ~2 MB per "rank": far over PIPE_BUF and the pipe's 64 KiB, so they take turns

RANK = f"""
import sys, time
from ltxcli.cli.common import Output
out = Output(json_mode=True)
name, start = sys.argv[1], float(sys.argv[2])
while time.time() < start:  # both start writing together (each has imported the CLI by then)
    pass
for i in range({LINES}):
    out.json({{"rank": name, "index": i, "prompt": name * {CHARS}}})
"""


@pytest.mark.parametrize("launcher", ["ltx --gpus", "torchrun"])
def test_two_ranks_long_json_lines_reach_a_shared_pipe_whole(tmp_path: Path, launcher: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in (RANK_STATUS_ENV, "RANK", "WORLD_SIZE")}
    # a user's own torchrun: no status folder, only the rank in the environment (the same for both: no matter)
    env.update({RANK_STATUS_ENV: str(tmp_path)} if launcher == "ltx --gpus" else {"RANK": "0", "WORLD_SIZE": "2"})
    read, write = os.pipe()
    start = time.time() + 1.0
    procs = [subprocess.Popen([sys.executable, "-c", RANK, name, str(start)], stdout=write, env=env)
             for name in "ab"]
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        lines = pipe.read().split(b"\n")
    assert [p.wait(timeout=30) for p in procs] == [0, 0]
    assert lines.pop() == b""  # the last line ends with a newline too
    got = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            raise AssertionError(f"a broken line: {line[:60]!r}...{line[-60:]!r} ({len(line)} bytes)") from None
        assert obj["prompt"] == obj["rank"] * CHARS
        got.append((obj["rank"], obj["index"]))
    assert sorted(got) == [(name, i) for name in "ab" for i in range(LINES)]
