"""The library's batch runner and ``save_video``, used from Python as a user would (no CLI involved)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import one_thread  # noqa: F401  (module-scoped autouse fixture)
from typer.testing import CliRunner

import ltxcli
from ltxcli import batch, media, resume, runner
from ltxcli.cli import app
from ltxcli.runner import BatchItem

SMALL = {"height": 64, "width": 96, "num_frames": 9}


@pytest.fixture(scope="module")
def pipe() -> Any:
    return ltxcli.load_pipeline("tiny")


def test_save_video_writes_the_record_ltx_info_reads(pipe: Any, tmp_path: Path) -> None:
    res = pipe.generate("a cat surfing", seed=3, steps=2, frame_rate=12, **SMALL)
    path = ltxcli.save_video(res, tmp_path / "cat.mp4")
    assert path == tmp_path / "cat.mp4"
    rec = media.read_video_metadata(path)
    assert rec is not None and rec["tool"] == "ltxcli" and rec["version"] == ltxcli.__version__
    assert (rec["model"], rec["prompt"], rec["seed"], rec["steps"], rec["preset"]) == ("tiny", "a cat surfing", 3, 2,
                                                                                      "tiny")
    assert (rec["height"], rec["width"], rec["num_frames"], rec["frame_rate"]) == (64, 96, 9, 12)
    assert rec["dtype"] == "float32" and rec["conditions"] == [] and "device" not in rec
    expected = json.loads(json.dumps(runner.record(res), default=str))  # tuples as JSON lists
    # the runner's record and the video's encoding, written as is
    assert rec == {**expected, **runner.encoding(path), "created": rec["created"]}
    assert rec["encoding"] == {"encoder": "libx264", "crf": 18, "preset": "medium"}
    frames = media.load_video(path)
    assert frames.shape == (9, 64, 96, 3)

    result = CliRunner().invoke(app, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["generation"]["prompt"] == "a cat surfing" and info["generation"]["seed"] == 3
    assert info["stream"]["num_frames"] == 9 and info["stream"]["frame_rate"] == 12

    with pytest.raises(FileExistsError):
        ltxcli.save_video(res, path)
    ltxcli.save_video(res, path, overwrite=True, model="my-model")
    assert media.read_video_metadata(path)["model"] == "my-model"  # type: ignore[index]
    with pytest.raises(runner.OutputError, match="cannot write"):
        ltxcli.save_video(res, path / "below-a-file.mp4")  # a file where a folder should be
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.mp4"]  # nothing partial left behind


def test_run_batch_from_python_names_skips_and_reports_in_order(pipe: Any, tmp_path: Path) -> None:
    pattern = str(tmp_path / "out" / "{index:02d}-{slug}-{seed}.mp4")

    def items() -> list[BatchItem]:
        return [BatchItem("a red fox", seed=1, steps=1, **SMALL), BatchItem("a blue bird", seed=2, steps=1, **SMALL)]

    first = list(ltxcli.run_batch(pipe, items(), output=pattern, load_s=0.5))
    assert [r.status for r in first] == ["ok", "ok"]
    assert [r.path.name for r in first] == ["00-a-red-fox-1.mp4", "01-a-blue-bird-2.mp4"]
    assert first[0].timings["load_s"] == 0.5 and first[1].timings["load_s"] == 0.0
    assert first[1].timings["total_s"] >= first[1].timings["denoise_s"] > 0
    for r, prompt in zip(first, ("a red fox", "a blue bird"), strict=True):
        rec = media.read_video_metadata(r.path)
        assert rec is not None and rec["prompt"] == prompt and rec["seed"] == r.item.seed and rec["steps"] == 1
        assert r.record["prompt"] == prompt and r.settings["device"] == "cpu" and r.result is not None
        assert media.media_num_frames(r.path) == 9

    # an existing output is refused without skip_existing, skipped with it; the other one is generated again
    with pytest.raises(ValueError, match="already exists"):
        list(ltxcli.run_batch(pipe, items(), output=pattern))
    first[1].path.unlink()
    again = list(ltxcli.run_batch(pipe, items(), output=pattern, skip_existing=True))
    assert [(r.status, r.reason) for r in again] == [("skipped", "exists"), ("ok", None)]
    assert again[0].result is None and again[1].path.is_file()
    assert not list((tmp_path / "out").glob("*.claim"))  # claims (skip_existing claims by default) are released
    assert torch.equal(again[1].result.video, first[1].result.video)  # same seed, same video

    # default names: numbered for several items; planned items' mistakes come before any generation
    with pytest.raises(ValueError, match=r"height=63 must be even"):
        list(ltxcli.run_batch(pipe, [BatchItem("x", height=63, width=96, num_frames=9)], output=str(tmp_path)))


def test_run_batch_takes_a_duration_from_python(pipe: Any, tmp_path: Path) -> None:
    """An item with ``duration`` (seconds) and no ``num_frames``, as `ltx generate --duration` gives: the smallest
    8k + 1 frames that last that long at its rate (1 s at 24 fps: 25). It used to be refused with "give either
    num_frames or duration" (the preset's frame count had been filled in beside it)."""
    item = BatchItem("a cat", seed=1, steps=1, height=64, width=96, frame_rate=24, duration=1.0)
    (res,) = ltxcli.run_batch(pipe, [item], output=str(tmp_path / "d.mp4"))
    assert res.status == "ok" and res.settings["num_frames"] == 25 and media.media_num_frames(res.path) == 25
    with pytest.raises(ValueError, match="num_frames or duration"):
        list(ltxcli.run_batch(pipe, [BatchItem("a cat", num_frames=9, duration=1.0)], output=str(tmp_path / "e.mp4")))


def test_a_batch_line_s_strength_without_a_video_is_named_as_ignored(tmp_path: Path) -> None:
    """A line's denoise_strength acts on its video only: without one, 0.3 (or an out-of-range 7) changed nothing,
    silently. It is named in one warning with its line (ltxcli.request.check_fields'); a line with a video says nothing."""
    import warnings

    from ltxcli.presets import PRESETS

    media.write_video(tmp_path / "in.mp4", torch.rand(9, 32, 32, 3), 24)
    rows = batch.parse_batch('{"prompt": "a", "denoise_strength": 7}\n', "b.jsonl")
    tiny, sizes = PRESETS["tiny"], {"num_frames": 9, "height": 32, "width": 32, "frame_rate": 24}
    with pytest.warns(UserWarning) as caught:
        items = runner.build_items(rows, preset=tiny, defaults=sizes)
        runner.validate_item(items[0], (20, 2048, 2048), where="b.jsonl line 1: ", preset=tiny)
    # once (the library's check, named with its line), not again by the item's own resolution
    assert [str(w.message) for w in caught] == [
        "b.jsonl line 1: denoise_strength=7 is ignored: it is the strength of a video-to-video run (give video)"]
    assert items[0].video is None
    line = json.dumps({"prompt": "a", "denoise_strength": 0.3, "video": str(tmp_path / "in.mp4")})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = runner.build_items(batch.parse_batch(line + "\n", "b.jsonl"), preset=tiny, defaults=sizes)
        runner.validate_item(quiet[0], (20, 2048, 2048), preset=tiny)
        runner.validate_item(items[0], (20, 2048, 2048), preset=tiny)  # checked again: the default, quiet


def test_build_items_and_plan_outputs_without_a_model(tmp_path: Path) -> None:
    """Rows as `ltx generate --batch` reads them: a row's value > defaults > the preset's; names planned with
    no model loaded."""
    from ltxcli.presets import PRESETS

    rows = batch.parse_batch('a cat\n{"prompt": "a dog", "seed": 4, "width": 128, "conditions": ["k.png:8"]}\n',
                              "prompts.txt")
    assert rows[1]["_where"] == "prompts.txt line 2"
    items = runner.build_items(rows, preset=PRESETS["tiny"], defaults={"seed": 9, "height": 64})
    assert [(it.seed, it.height, it.width) for it in items] == [(9, 64, PRESETS["tiny"].width), (4, 64, 128)]
    assert [(c.media, c.frame, c.strength) for c in items[1].conditions] == [("k.png", 8, 1.0)]
    runner.plan_outputs(items, output=str(tmp_path / "v") + "/", model="tiny", batch=True)
    assert items[1].target == tmp_path / "v" / f"0001-a-dog-4-128x64x{items[1].num_frames}.mp4"
    assert items[0].seed == 9 and items[1].seed == 4  # --seed seeds the batch: item 0 gets 9 + 0
    with pytest.raises(ValueError, match=r"name a video file .*v\.mp4\) or a folder"):
        runner.plan_outputs(items, output=str(tmp_path / "v"), model="tiny", batch=True)  # no suffix, no folder
    with pytest.raises(ValueError, match="unknown field"):
        runner.plan_outputs(items, output="{nope}.mp4")
    with pytest.raises(ValueError, match=r"prompts\.txt line 1: invalid JSON"):
        batch.parse_batch("{oops", "prompts.txt")


def test_a_line_s_own_length_replaces_the_command_s() -> None:
    """The command's options are defaults for each line, its length too: a line's duration over --num-frames and
    a line's num_frames over --duration were refused as "num_frames and duration"; one source with both still is."""
    from ltxcli.presets import PRESETS

    rows = batch.parse_batch('{"prompt": "a", "duration": "1s"}\n{"prompt": "b"}\n', "b.jsonl")
    items = runner.build_items(rows, preset=PRESETS["tiny"], defaults={"num_frames": 9, "frame_rate": 24})
    assert [it.num_frames for it in items] == [25, 9]  # 1 s at 24 fps: the smallest 8k + 1 that lasts it
    rows = batch.parse_batch('{"prompt": "a", "num_frames": 17}\n{"prompt": "b"}\n', "b.jsonl")
    items = runner.build_items(rows, preset=PRESETS["tiny"], defaults={"duration": "1s", "frame_rate": 24})
    assert [it.num_frames for it in items] == [17, 25]
    with pytest.raises(ValueError, match=r"b\.jsonl line 1: give either num_frames or duration, not both"):
        runner.build_items(batch.parse_batch('{"prompt": "a", "num_frames": 9, "duration": "1s"}', "b.jsonl"),
                           preset=PRESETS["tiny"])


def test_a_job_runs_the_cli_flow_from_python(tmp_path: Path) -> None:
    """``ltxcli.job``: what ``ltx generate --batch`` does, step by step, without the CLI: the items are planned
    and named before any load, nothing is pulled for the built-in model, the written videos carry their records,
    and the same job planned again with skip_existing has nothing left to do."""
    from ltxcli import job as job_mod

    settings = job_mod.JobSettings(model="tiny", output=str(tmp_path / "{index}-{seed}.mp4"), device="cpu")
    rows = [{"prompt": "a cat", "seed": 4, "steps": 1, **SMALL}, {"prompt": "a dog", "seed": 9, "steps": 1, **SMALL}]
    job = job_mod.plan_job(settings, [dict(r) for r in rows], batch=True)
    assert job.anything and job.needed == [] and [it.target.name for it in job.todo] == ["0-4.mp4", "1-9.mp4"]
    assert not any(it.target.exists() for it in job.todo)  # planning wrote nothing
    job.refresh()
    plan = job_mod.memory_plan(job.todo, job.spec, settings, device=job.device, dtype=job.dtype, free_bytes=2**40)
    assert len(plan.requests) == 2
    loaded, load_s, kernels = job_mod.load(job, plan=plan)
    assert load_s >= 0 and kernels
    done = [(r.status, r.path.name, r.record["prompt"], ranks) for r, ranks in job_mod.results(job, loaded)]
    assert done == [("ok", "0-4.mp4", "a cat", None), ("ok", "1-9.mp4", "a dog", None)]
    assert media.read_video_metadata(tmp_path / "1-9.mp4")["seed"] == 9  # type: ignore[index]

    again = job_mod.plan_job(replace(settings, skip_existing=True), [dict(r) for r in rows], batch=True)
    assert not again.anything and again.todo == [] and again.needed == []
    with pytest.raises(ValueError, match="contradict"):
        job_mod.plan_job(replace(settings, skip_existing=True, overwrite=True), rows, batch=True)


def test_run_batch_plans_items_again_for_a_new_output_and_refuses_what_it_cannot_run(pipe: Any, tmp_path: Path) -> None:
    """Items of an earlier run kept their targets: a new ``output=`` was ignored (the old file then 'already
    exists'); the same item listed twice was generated twice; a plain request had no 'target' attribute."""
    items = [BatchItem("a red fox", seed=1, steps=1, **SMALL)]
    (a,) = ltxcli.run_batch(pipe, items, output=str(tmp_path / "ra" / "{index}.mp4"))
    assert a.path == tmp_path / "ra" / "0.mp4"
    (b,) = ltxcli.run_batch(pipe, items, output=str(tmp_path / "rb" / "{index}.mp4"))
    assert b.status == "ok" and b.path == tmp_path / "rb" / "0.mp4" and b.path.is_file()
    with pytest.raises(ValueError, match="the same BatchItem is listed twice"):
        list(ltxcli.run_batch(pipe, [items[0], items[0]], output=str(tmp_path / "rc")))
    with pytest.raises(TypeError, match=r"run_batch items must be ltxcli\.BatchItem .*not GenerationRequest"):
        list(ltxcli.run_batch(pipe, [ltxcli.GenerationRequest("a cat")], output=str(tmp_path / "rd")))
    with pytest.raises(ValueError, match=r"^conditions=\[\('img.png', 0\)\] must be a list of ltxcli.Condition"):
        list(ltxcli.run_batch(pipe, [BatchItem("a", conditions=[("img.png", 0)], **SMALL)], output=str(tmp_path)))
    assert not (tmp_path / "rc").exists() and not (tmp_path / "rd").exists()
    # a generator of items and a Path output ("generator has no len()", "PosixPath is not iterable")
    (c,) = ltxcli.run_batch(pipe, (it for it in [BatchItem("a cat", seed=1, steps=1, **SMALL)]), output=tmp_path / "p.mp4")
    assert c.status == "ok" and c.path == tmp_path / "p.mp4"


def test_a_condition_tensor_is_checked_like_a_video_tensor(pipe: Any) -> None:
    """0-255 values were used as pixels, NaN ended in 'the checkpoint may be broken' after every step."""
    for frames, needle in ((torch.full((1, 64, 96, 3), 200.0), r"values must be finite and in \[0, 1\]"),
                           (torch.full((1, 64, 96, 3), float("nan")), "values must be finite")):
        with pytest.raises(media.MediaError, match=needle):
            pipe.generate("a cat", conditions=[ltxcli.Condition(frames, 0)], seed=1, steps=1, **SMALL)


def test_an_item_without_loras_gets_the_pipelines_as_the_batch_began(tmp_path: Path) -> None:
    """Not the LoRAs the item before it merged: the same video whether or not the earlier items ran (skipped ones,
    a resumed batch)."""
    from test_lora import tiny_lora

    pipe = ltxcli.load_pipeline("tiny")
    styled = [(str(tiny_lora(tmp_path)), 0.8)]
    kw = {"seed": 3, "steps": 1, **SMALL}
    results = list(ltxcli.run_batch(pipe, [BatchItem("a cat", loras=styled, **kw), BatchItem("a cat", **kw)],
                                    output=str(tmp_path / "{index}.mp4"), write=False))
    assert results[1].record["loras"] == []
    assert torch.equal(results[1].result.latents, pipe.generate("a cat", loras=[], **kw).latents)
    assert not torch.equal(results[0].result.latents, results[1].result.latents)
    items = [BatchItem("a cat", **kw)]  # the caller's items are left as they are: a rerun takes the pipeline's again
    list(ltxcli.run_batch(pipe, items, output=str(tmp_path / "{index}.mp4"), write=False))
    assert items[0].loras is None
    # the last item's LoRA is not left merged: the pipeline holds what it held as the batch began
    list(ltxcli.run_batch(pipe, [BatchItem("a cat", loras=styled, **kw)], output=str(tmp_path / "l.mp4"), write=False))
    assert pipe.lora_specs == () and torch.equal(pipe.generate("a cat", **kw).latents, results[1].result.latents)


def test_batch_and_schedule_lines_end_only_at_line_breaks(tmp_path: Path) -> None:
    """A JSON string may hold U+2028 as it is (json.dumps(ensure_ascii=False) writes it so) and a prompt a form feed
    or U+0085: str.splitlines broke such a line in two ("invalid JSON", or two items), numbering later lines wrong."""
    obj = {"prompt": "a cat\u2028on a mat", "seed": 1}
    text = json.dumps(obj, ensure_ascii=False) + "\r\nfirst\x0csecond\x85third\r\n\r\n{oops"
    with pytest.raises(ValueError, match=r"b\.jsonl line 4: invalid JSON"):
        batch.parse_batch(text, "b.jsonl")
    rows = batch.parse_batch(text.rsplit("\r\n", 1)[0] + "\rlast", "b.jsonl")
    assert [r["prompt"] for r in rows] == ["a cat\u2028on a mat", "first\x0csecond\x85third", "last"]
    assert rows[0]["seed"] == 1 and rows[0]["_where"] == "b.jsonl line 1"
    from ltxcli import timeline

    sched = tmp_path / "s.jsonl"
    sched.write_text(json.dumps({"start": 0, "prompt": "a\u2028b"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert timeline.read_schedule(str(sched)) == [(0, "a\u2028b")]


def test_a_byte_order_mark_from_stdin_is_not_part_of_the_first_line() -> None:
    """`--batch -` reads stdin without decoding utf-8-sig: a BOM made the first JSON line a text prompt (its seed and
    settings ignored) and a first '#' line a prompt."""
    rows = batch.parse_batch('\ufeff{"prompt": "a cat", "seed": 5}\n', "--batch -")
    assert [(r["prompt"], r["seed"]) for r in rows] == [("a cat", 5)]
    assert [r["prompt"] for r in batch.parse_batch("\ufeff# comment\na dog", "--batch -")] == ["a dog"]


def test_a_batch_file_may_be_a_pipe_and_a_folder_is_named_so(tmp_path: Path) -> None:
    """`--batch <(jq -c ...)` (a pipe at /dev/fd/N) said "no such file", as did a folder."""
    import os
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text('a cat\n{"prompt": "a dog", "seed": 3}\n'), daemon=True)
    writer.start()
    rows = batch.parse_batch(batch.read_batch_file(fifo), "--batch fifo")
    writer.join(10)
    assert [(r["prompt"], r.get("seed")) for r in rows] == [("a cat", None), ("a dog", 3)]
    with pytest.raises(ValueError, match=r"^--batch .*: a folder, not a file$"):
        batch.read_batch_file(tmp_path)
    with pytest.raises(ValueError, match=r"^--batch .*nope\.txt: no such file$"):
        batch.read_batch_file(tmp_path / "nope.txt")


@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_offload_on_the_cpu_says_it_saves_nothing(tmp_path: Path, offload: str) -> None:
    """``--offload model|sequential`` on a CPU-only run kept every weight in the same memory without a word, so a
    user who chose it to fit a run believed it did something; planning says so once, and not for ``none``."""
    from ltxcli import job as job_mod

    rows = [{"prompt": "a cat", "seed": 4, "steps": 1, **SMALL}]
    said: list[str] = []
    settings = job_mod.JobSettings(model="tiny", output=str(tmp_path / "o.mp4"), device="cpu", offload=offload)
    job_mod.plan_job(settings, [dict(r) for r in rows], batch=False, warn=said.append)
    assert [m for m in said if "--offload" in m] == [
        f"--offload {offload} saves no memory on the CPU (host and device memory are the same): it helps only on"
        " a GPU"]
    said.clear()
    job_mod.plan_job(replace(settings, offload="none"), [dict(r) for r in rows], batch=False, warn=said.append)
    assert not [m for m in said if "--offload" in m]


def test_skip_existing_knows_a_lora_by_its_content_not_its_path(tmp_path: Path) -> None:
    """The record stores each LoRA's sha256, but ``--skip-existing`` compared path and scale: another file put at
    the recorded path was taken for the same request (its output skipped as done), and the very same file at
    another path was not. (Only the bytes matter here: nothing reads the files as LoRAs.)"""
    style, moved = tmp_path / "style.safetensors", tmp_path / "moved.safetensors"
    style.write_bytes(b"the first LoRA")
    rec = {"index": 0, "prompt": "a cat", "seed": 5, "height": 64, "width": 96, "num_frames": 9, "frame_rate": 24,
           "conditions": [], "control": None,
           "loras": [{"name": None, "path": str(style), "sha256": hashlib.sha256(b"the first LoRA").hexdigest(),
                      "scale": 0.8}]}

    def item(lora: Path, scale: float = 0.8) -> BatchItem:
        return BatchItem("a cat", seed=5, frame_rate=24, loras=[(str(lora), scale)], **SMALL)

    assert resume.matches(item(style), rec) and not resume.matches(item(style, 0.5), rec)
    moved.write_bytes(b"the first LoRA")
    assert resume.matches(item(moved), rec)  # the same bytes elsewhere: the same request
    style.write_bytes(b"a second, other LoRA")  # another LoRA at the recorded path
    assert not resume.matches(item(style), rec)


def test_a_split_videos_prompt_rewrite_is_rank_0s(pipe: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompt enhancement samples tokens under the seed: every rank of a video split across processes loaded the
    enhancer and sampled on its own device, which need not draw the tokens rank 0 drew (the rank's share of the
    video then followed another prompt). As with the seed, rank 0 rewrites and the others take its rewrite."""
    from ltxcli import api
    from ltxcli import job as job_mod
    from ltxcli.enhance import stage as enhance_stage
    from ltxcli.parallel import orchestrate, transformer
    from ltxcli.parallel.context import DistContext

    # rank 1 of 2; what rank 0 sends: its own values (the seeds), and for the rewrites not yet made, its rewrite
    monkeypatch.setattr(orchestrate, "from_rank0", lambda ctx, value: ["rank 0's rewrite"] if value == [None] else value)
    monkeypatch.setattr(enhance_stage, "enhance_items", lambda todo, preset, **kwargs: [
        setattr(it, "enhanced_prompt", "rank 1's own sample") for it in todo])
    monkeypatch.setattr(transformer, "parallelize", lambda *args, **kwargs: None)
    monkeypatch.setattr(api, "load_pipeline", lambda *args, **kwargs: pipe)
    monkeypatch.setattr(pipe, "free_text_encoder_after_use", pipe.free_text_encoder_after_use)  # (load sets it)
    settings = job_mod.JobSettings(model="tiny", output=str(tmp_path / "o.mp4"))
    job = job_mod.plan_job(settings, [{"prompt": "a cat", "seed": 4, **SMALL}], batch=False,
                           ctx=DistContext(1, 2, 1, torch.device("cpu")))
    job_mod.load(job)
    assert [it.enhanced_prompt for it in job.todo] == ["rank 0's rewrite"]


def test_a_batch_lines_conditions_none_drops_the_commands_conditions() -> None:
    """``"conditions": ["none"]`` was refused ("condition 'none': expected PATH:FRAME") while ``"loras": ["none"]``
    and ``"control": "none"`` drop the command's for that line; it now drops the command's -c conditions there, as
    -c none does (the line's own image stays), and beside other conditions it is refused naming the line."""
    from ltxcli import Condition

    rows = batch.parse_batch('{"prompt": "a", "conditions": ["none"]}\n{"prompt": "b"}\n'
                             '{"prompt": "c", "image": "i.png", "conditions": ["none"]}\n', "items.jsonl")
    items = runner.build_items(rows, defaults={"height": 64, "width": 64, "num_frames": 9},
                               conditions=[Condition("k.png", 0, 1.0)])
    assert [[(c.media, c.frame) for c in it.conditions] for it in items] == [[], [("k.png", 0)], [("i.png", 0)]]
    with pytest.raises(ValueError) as info:
        batch.parse_batch('a cat\n{"prompt": "a dog", "conditions": ["none", "k.png:0"]}\n', "items.jsonl")
    assert str(info.value).startswith('items.jsonl line 2: conditions ["none"] asks for no condition: give it alone')


def test_a_malformed_condition_string_in_a_batch_names_its_line() -> None:
    """parse_batch promises errors starting with "{source} line N: "; a bad condition string said only
    "--condition 'k.png': expected ..." (an option the user never gave), not where in the file."""
    with pytest.raises(ValueError) as info:
        batch.parse_batch('a cat\n{"prompt": "a dog", "conditions": ["k.png"]}\n', "items.jsonl")
    assert str(info.value) == ("items.jsonl line 2: condition 'k.png': expected PATH:FRAME[:STRENGTH], e.g. "
                               "first.png:0 or end.png:96:0.8")



@pytest.mark.parametrize(("prompt", "first", "warns"), [
    ("a cat | a dog", 1.0, True),  # four windows: the first pass alone runs, without CFG or STG
    ("a cat | a dog", 3.0, False),  # ... with them
    ("a cat", 1.0, False),  # one generation: both passes run, the second with them
], ids=["windows-first-without", "windows-first-with", "one-generation"])
def test_an_ignored_negative_prompt_is_judged_by_the_passes_that_run(
    prompt: str, first: float, warns: bool, recwarn: pytest.WarningsRecorder,
) -> None:
    """A video in several windows runs one pass per window, the first's (long_video._one_pass); the negative-prompt
    and STG-mode warnings looked at both passes of a two-pass request, so a windowed one whose first pass runs no
    CFG and no STG (the second: the tiny preset's, guidance 3 and STG 1) was said to use them."""
    from ltxcli.presets import TINY_PRESET

    item = BatchItem(prompt, negative_prompt="rain", stg_mode="residual", steps=1, height=64, width=64, num_frames=33,
                     frame_rate=24.0, first_pass={"guidance_scale": first, "stg_scale": first - 1},
                     **({"window": 16, "overlap": 8} if "|" in prompt else {}))
    runner.warn_ignored(item, TINY_PRESET, 20.0)
    said = [str(w.message).split(" is ignored")[0] for w in recwarn]
    assert said == (["--negative-prompt", "--stg-mode"] if warns else []), said


def test_the_upsampler_is_needed_by_an_item_made_in_one_generation(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A multi-scale model's upsampler runs between its two passes, which only a video made in one generation (or
    one window) runs: several windows (an extension's too, forward or backward) run one pass each. A skipped item
    runs nothing; a one-pass model none at all (ltx generate pulls and loads it as this says: tests/test_hostile)."""
    from ltxcli.extend import InputFrames
    from ltxcli.presets import PRESETS, TINY_PRESET
    from ltxcli.request import Extension

    monkeypatch.chdir(tmp_path)
    media.write_video("clip.mp4", torch.rand(9, 32, 32, 3, generator=torch.Generator().manual_seed(0)), 24)
    multi, windows = PRESETS["ltxv-2b-0.9.8-distilled"], {"window": 16, "overlap": 8}

    def items(*rows: dict[str, Any]) -> list[BatchItem]:
        its = runner.build_items([{"height": 64, "width": 96, "seed": 1, **r} for r in rows], preset=multi,
                                 inputs=InputFrames())
        for it in its:
            runner.validate_item(it, (20, 2048, 2048), preset=multi)
        return its

    in_windows = {"prompt": "a | b", "num_frames": 17, **windows}  # two windows
    cases = [
        (items(in_windows), False),
        (items({**in_windows, "num_frames": 9}), True),  # fits one window: one generation
        (items({"prompt": "a", "extend": Extension("clip.mp4", 16), **windows}), False),
        (items({"prompt": "a", "extend": Extension("clip.mp4", 16, backward=True), **windows}), False),
        (items({"prompt": "a", "extend": Extension("clip.mp4", 8)}), True),
        (items(in_windows, {"prompt": "a", "num_frames": 9}), True),
    ]
    assert [runner.needs_upsampler(its, multi, 20.0) for its, _ in cases] == [needs for _, needs in cases]
    mixed = cases[-1][0]
    mixed[1].skip = True
    assert not runner.needs_upsampler(mixed, multi, 20.0)
    assert not any(runner.needs_upsampler(its, TINY_PRESET, 20.0) for its, _ in cases)
