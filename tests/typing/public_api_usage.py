"""A user's script over the public API, as README's Python section writes it: type-checked, never run by pytest.

``.ci/run`` checks it with ``mypy --strict tests/typing/public_api_usage.py``: each ``assert_type`` fails the check
when the library's annotations give a caller another type (``Any`` included) than the one documented. It runs too
(``python tests/typing/public_api_usage.py OUT_DIR``: the ``tiny`` model, no download, a few seconds).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from typing_extensions import assert_type

import ltxcli
from ltxcli import extend, long_video
from ltxcli.errors import FailureKind, failure_kind
from ltxcli.kernels import KernelUnavailableError
from ltxcli.media import MediaError, read_video_metadata, write_video
from ltxcli.request import Extension, FieldTypeError
from ltxcli.safetensors_io import CheckpointError
from ltxcli.spec import ModelNotFoundError
from ltxcli.weights import UnknownWeightsError, WeightsError, WeightsUnavailableError


def generate(out: Path) -> None:
    spec = ltxcli.resolve_spec("tiny")
    assert_type(spec, ltxcli.ModelSpec)
    assert_type(spec.missing, list[str])

    pipe = ltxcli.load_pipeline("tiny", download=False, on_event=print)
    assert_type(pipe, ltxcli.Pipeline)
    assert_type(pipe.device, torch.device)
    assert_type(pipe.dtype, torch.dtype)

    res = pipe.generate("a cat surfing", seed=7, height=64, width=64, num_frames=9)
    assert_type(res, ltxcli.GenerationResult)
    assert_type(res.video, torch.Tensor | None)
    assert_type(res.latents, torch.Tensor)
    assert_type(res.seed, int)
    assert_type(res.timings, dict[str, float])
    assert res.video is not None  # not streamed
    frames: torch.Tensor = res.video  # float32 [F, H, W, 3] in [0, 1]

    latents = pipe.encode(frames)
    assert_type(latents, torch.Tensor)  # [1, C, f, h, w]
    again = pipe.decode(res.latents, noise_scale=0.025, seed=res.seed, tone_map_compression_ratio=0.0)
    assert_type(again, torch.Tensor)  # [F, H, W, 3]

    path = ltxcli.save_video(res, out / "cat.mp4", overwrite=True)
    assert_type(path, Path)

    img = ltxcli.Condition(frames[0], frame=0, strength=1.0)
    req = ltxcli.GenerationRequest("the cat jumps", conditions=[img], seed=1, height=64, width=64, num_frames=9,
                                   rescale_scale=1.0)
    streamed = pipe.run(req, stream=True)
    assert_type(streamed, ltxcli.GenerationResult)
    chunks = streamed.frames(chunk_frames=4)
    assert_type(chunks, Iterator[torch.Tensor])  # uint8 [n, H, W, 3]
    written = write_video(out / "streamed.mp4", chunks, 24.0, overwrite=True)
    assert_type(written, Path)
    assert_type(read_video_metadata(written), dict[str, Any] | None)

    pipe.set_loras([])  # no LoRA: the base weights
    control = ltxcli.Control(frames, strength=0.9, kind="canny")
    assert_type(pipe.generate("a cat", control=control, seed=1, height=64, width=64, num_frames=9).seed, int)

    windows = ltxcli.GenerationRequest("a cat walks | a dog runs", seed=2, height=64, width=64, num_frames=33,
                                       window=17, overlap=8)
    assert_type(long_video.generate(pipe, windows), ltxcli.GenerationResult)
    more = ltxcli.GenerationRequest("it runs on", extend=Extension(os.fspath(path), frames=8), height=64, width=64)
    assert_type(extend.run_extension(pipe, more), ltxcli.GenerationResult)

    items = [ltxcli.BatchItem("a cat", height=64, width=64, num_frames=9),
             ltxcli.BatchItem("a dog", seed=3, height=64, width=64, num_frames=9)]
    for r in ltxcli.run_batch(pipe, items, output=str(out / "{index:03d}-{seed}.mp4"), skip_existing=True):
        assert_type(r, ltxcli.ItemResult)
        assert_type(r.status, str)
        assert_type(r.path, Path)
        assert_type(r.result, ltxcli.GenerationResult | None)
        print(r.status, r.path, r.summary()["status"])

    with ltxcli.PromptEnhancer("tiny", "tiny") as enhancer:
        assert_type(enhancer.enhance("a cat", seed=7), str)
    pipe.enhancer = ltxcli.PromptEnhancer("tiny", "tiny")  # README: the enhancer of enhance_prompt="on"
    assert_type(pipe.generate("a cat", enhance_prompt="on", seed=7, height=64, width=64, num_frames=9).seed, int)


def misspelled() -> None:
    """A name ltxcli does not export is an error for the checker (warn_unused_ignores: the ignore must be used),
    not an Any that accepts every use."""
    ltxcli.load_pipelin("tiny")  # type: ignore[attr-defined]
    pipe = ltxcli.load_pipeline("tiny")
    # Pipeline.generate's keywords are GenerationRequest's fields (RequestFields): a misspelt one and a value of
    # the wrong type are the checker's errors too, not only FieldTypeError / TypeError at run time
    pipe.generate("a cat", num_frame=9)  # type: ignore[call-arg]
    pipe.generate("a cat", height="a")  # type: ignore[arg-type]
    pipe.generate("a cat", conditions=[("a.png", 0)])  # type: ignore[list-item]


def refused() -> FailureKind | None:
    """The documented errors: what a script catches, and their kinds."""
    pipe = ltxcli.load_pipeline("tiny")
    try:
        pipe.generate("a cat", height="64")  # type: ignore[arg-type]  # a field of the wrong type: refused at run time too
    except FieldTypeError as e:  # a TypeError and a ValueError
        assert_type(e, FieldTypeError)
    except (MediaError, CheckpointError, ModelNotFoundError, ValueError) as e:
        kind = failure_kind(e)
        assert_type(kind, FailureKind | None)
        return kind
    try:
        ltxcli.load_pipeline("no-such-model", download=False)
    except UnknownWeightsError as e:
        assert_type(e.exit_code, int)
    except (WeightsUnavailableError, WeightsError) as e:
        assert_type(e.exit_code, int)
    except KernelUnavailableError as e:
        print(e, file=sys.stderr)
    return None


if __name__ == "__main__":
    generate(Path(sys.argv[1]))
    print(refused())
