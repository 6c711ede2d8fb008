"""The JSON lines of ``ltx generate --gpus N --batch FILE --json``: every rank prints its items' lines to the one
stdout that torchrun's workers share, and a pipe keeps a write whole only up to PIPE_BUF (4096 bytes). Two
processes, as two ranks of :func:`ltxcli.parallel.launch.launch` (its status folder in their environment), print
long lines (a 100 000-character prompt) through the CLI's :class:`~ltxcli.cli.common.Output` into one pipe at the
same moment: every line read back must be one of theirs, whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ltxcli.parallel.launch import RANK_STATUS_ENV

LINES, CHARS = 60, 100_000  # ~6 MB per "rank": far over PIPE_BUF and the pipe's 64 KiB, so they take turns

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


def test_two_ranks_long_json_lines_reach_a_shared_pipe_whole(tmp_path: Path) -> None:
    env = dict(os.environ, **{RANK_STATUS_ENV: str(tmp_path)})
    read, write = os.pipe()
    start = time.time() + 1.5
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
