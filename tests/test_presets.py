"""Every preset against the official pipeline configs of Lightricks/LTX-Video.

The table below is typed out by hand from the official ``configs/*.yaml`` (commit 5260738; the four 13B 0.9.7
configs from 02844ce^, the commit before they were removed) and the ``InferenceConfig`` defaults of the official
``ltx_video/inference.py``. Where an official checkout is available (``LTXV_OFFICIAL_REPO``, a git directory,
default ``/work/.mirror/Lightricks+LTX-Video/repo``) and PyYAML is importable, the table is also checked against
the yaml files themselves, so a typo in the table cannot hide a wrong preset.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from ltxcli.presets import NEUTRAL, PRESETS, PassSettings, Preset, preset_for_checkpoint


class Pass(NamedTuple):
    """One pass as the official pipeline reads it (yaml keys; absent keys are the ``__call__`` defaults)."""

    steps: int | None  # num_inference_steps (None: explicit timesteps)
    timesteps: tuple[float, ...] | None
    skip_initial: int
    skip_final: int
    guidance: float | tuple[float, ...]
    stg: float | tuple[float, ...]
    rescale: float | tuple[float, ...]
    guidance_timesteps: tuple[float, ...] | None
    blocks: tuple  # skip_block_list: flat, per interval, or () when the yaml has none
    cfg_star: bool
    tone_map: float


class Row(NamedTuple):
    name: str  # the preset name = the official configs/<name>.yaml
    rev: str  # official commit holding that file
    checkpoint: str
    pipeline_type: str
    precision: str
    stochastic: bool
    downscale: float | None
    upsampler: str | None
    passes: tuple[Pass, ...]


HEAD, REV_097 = "5260738", "02844ce^"

# 2B base (0.9, 0.9.1, 0.9.5, 0.9.6-dev): guidance 3, stg 1, rescale 0.7, skip block 19, 40 steps
BASE_2B = Pass(40, None, 0, 0, 3, 1, 0.7, None, (19,), False, 0.0)
# 0.9.6 distilled: no skip_block_list in the yaml
DISTILLED_096 = Pass(8, None, 0, 0, 1, 0, 1, None, (), False, 0.0)
DISTILLED_FIRST = Pass(None, (1.0000, 0.9937, 0.9875, 0.9812, 0.9750, 0.9094, 0.7250), 0, 0, 1, 0, 1, None, (42,),
                       False, 0.0)
DISTILLED_SECOND = Pass(None, (0.9094, 0.7250, 0.4219), 0, 0, 1, 0, 1, None, (42,), False, 0.0)
DISTILLED_SECOND_TONE = DISTILLED_SECOND._replace(tone_map=0.6)
DEV13_FIRST = Pass(
    30, None, 0, 3, (1, 1, 6, 8, 6, 1, 1), (0, 0, 4, 4, 4, 2, 1), (1, 1, 0.5, 0.5, 1, 1, 1),
    (1.0, 0.996, 0.9933, 0.9850, 0.9767, 0.9008, 0.6180),
    ((), (11, 25, 35, 39), (22, 35, 39), (28,), (28,), (28,), (28,)), True, 0.0,
)
DEV13_SECOND = Pass(30, None, 17, 0, (1,), (1,), (1,), (1.0,), (27,), True, 0.0)

UP_097, UP_098 = "ltxv-spatial-upscaler-0.9.7", "ltxv-spatial-upscaler-0.9.8"
BF16, FP8 = "bfloat16", "float8_e4m3fn"
F = 0.6666666

OFFICIAL: list[Row] = [
    Row("ltxv-2b-0.9", HEAD, "ltx-video-2b-v0.9.safetensors", "base", BF16, False,
        None, None, (BASE_2B,)),
    Row("ltxv-2b-0.9.1", HEAD, "ltx-video-2b-v0.9.1.safetensors", "base", BF16, False,
        None, None, (BASE_2B,)),
    Row("ltxv-2b-0.9.5", HEAD, "ltx-video-2b-v0.9.5.safetensors", "base", BF16, False,
        None, None, (BASE_2B,)),
    Row("ltxv-2b-0.9.6-dev", HEAD, "ltxv-2b-0.9.6-dev-04-25.safetensors", "base", BF16, False,
        None, None, (BASE_2B,)),
    Row("ltxv-2b-0.9.6-distilled", HEAD, "ltxv-2b-0.9.6-distilled-04-25.safetensors",
        "base", BF16, True, None, None, (DISTILLED_096,)),
    Row("ltxv-2b-0.9.8-distilled", HEAD, "ltxv-2b-0.9.8-distilled.safetensors",
        "multi-scale", BF16, False, F, UP_098, (DISTILLED_FIRST, DISTILLED_SECOND)),
    Row("ltxv-2b-0.9.8-distilled-fp8", HEAD,
        "ltxv-2b-0.9.8-distilled-fp8.safetensors", "multi-scale", FP8, False, F, UP_098,
        (DISTILLED_FIRST, DISTILLED_SECOND)),
    Row("ltxv-13b-0.9.7-dev", REV_097, "ltxv-13b-0.9.7-dev.safetensors", "multi-scale", BF16,
        False, F, UP_097, (DEV13_FIRST, DEV13_SECOND)),
    Row("ltxv-13b-0.9.7-dev-fp8", REV_097, "ltxv-13b-0.9.7-dev-fp8.safetensors",
        "multi-scale", FP8, False, F, UP_097, (DEV13_FIRST, DEV13_SECOND)),
    Row("ltxv-13b-0.9.7-distilled", REV_097, "ltxv-13b-0.9.7-distilled.safetensors",
        "multi-scale", BF16, False, F, UP_097, (DISTILLED_FIRST, DISTILLED_SECOND)),
    Row("ltxv-13b-0.9.7-distilled-fp8", REV_097,
        "ltxv-13b-0.9.7-distilled-fp8.safetensors", "multi-scale", FP8, False, F, UP_097,
        (DISTILLED_FIRST, DISTILLED_SECOND)),
    Row("ltxv-13b-0.9.8-dev", HEAD, "ltxv-13b-0.9.8-dev.safetensors", "multi-scale", BF16,
        False, F, UP_098, (DEV13_FIRST, DEV13_SECOND)),
    Row("ltxv-13b-0.9.8-dev-fp8", HEAD, "ltxv-13b-0.9.8-dev-fp8.safetensors",
        "multi-scale", FP8, False, F, UP_098, (DEV13_FIRST, DEV13_SECOND)),
    Row("ltxv-13b-0.9.8-distilled", HEAD, "ltxv-13b-0.9.8-distilled.safetensors",
        "multi-scale", BF16, False, F, UP_098, (DISTILLED_FIRST, DISTILLED_SECOND_TONE)),
    Row("ltxv-13b-0.9.8-distilled-fp8", HEAD,
        "ltxv-13b-0.9.8-distilled-fp8.safetensors", "multi-scale", FP8, False, F, UP_098,
        (DISTILLED_FIRST, DISTILLED_SECOND_TONE)),
]

# Shared by every official config
STG_MODE, DECODE_TIMESTEP, DECODE_NOISE_SCALE = "attention_values", 0.05, 0.025
# official inference.py InferenceConfig defaults
INFERENCE_DEFAULTS = {
    "height": 704, "width": 1216, "num_frames": 121, "frame_rate": 30,
    "negative_prompt": "worst quality, inconsistent motion, blurry, jittery, distorted",
    "image_cond_noise_scale": 0.15,
}
# official LTXVideoPipeline.__call__ defaults (what a yaml key left out means)
CALL_DEFAULTS = {
    "num_inference_steps": 20, "skip_initial_inference_steps": 0, "skip_final_inference_steps": 0,
    "timesteps": None, "guidance_scale": 4.5, "cfg_star_rescale": False, "skip_block_list": None,
    "stg_scale": 1.0, "rescaling_scale": 0.7, "guidance_timesteps": None, "stochastic_sampling": False,
    "tone_map_compression_ratio": 0.0, "decode_timestep": 0.0, "decode_noise_scale": None,
}


def as_pass(p: PassSettings) -> Pass:
    return Pass(
        p.num_inference_steps if p.timesteps is None else None, p.timesteps, p.skip_initial_inference_steps,
        p.skip_final_inference_steps, p.guidance_scale, p.stg_scale, p.rescaling_scale, p.guidance_timesteps,
        p.skip_block_list, p.cfg_star_rescale, p.tone_map_compression_ratio,
    )


def test_table_names_every_preset_once() -> None:
    official = {name for name, p in PRESETS.items() if p.checkpoint}  # "tiny" is built in, not an official config
    assert sorted(r.name for r in OFFICIAL) == sorted(official)
    assert len({r.name for r in OFFICIAL}) == len(OFFICIAL)
    assert set(PRESETS) - official == {"tiny"}


@pytest.mark.parametrize("row", OFFICIAL, ids=[r.name for r in OFFICIAL])
def test_preset_matches_official_config(row: Row) -> None:
    p = PRESETS[row.name]
    assert p.name == row.name
    assert p.checkpoint == row.checkpoint
    assert preset_for_checkpoint(row.checkpoint) is p
    assert p.pipeline_type == row.pipeline_type
    assert p.multi_scale == (row.pipeline_type == "multi-scale")
    assert p.precision == row.precision
    assert p.stochastic_sampling is row.stochastic
    assert p.downscale_factor == row.downscale
    assert p.upsampler == row.upsampler
    assert p.stg_mode == STG_MODE
    assert p.decode_timestep == DECODE_TIMESTEP
    assert p.decode_noise_scale == DECODE_NOISE_SCALE
    for key, value in INFERENCE_DEFAULTS.items():
        assert getattr(p, key) == value, key
    assert len(p.passes) == len(row.passes)
    for got, want in zip(p.passes, row.passes, strict=True):
        assert as_pass(got) == want
        # the types the pipeline dispatches on: tuples (never lists), nested tuples only for per-interval blocks
        for value in (got.guidance_scale, got.stg_scale, got.rescaling_scale):
            assert isinstance(value, (int, float, tuple))
            assert isinstance(value, tuple) == (got.guidance_timesteps is not None)


def test_neutral_preset_is_the_official_call_defaults() -> None:
    first = NEUTRAL.passes[0]
    assert NEUTRAL.pipeline_type == "base" and len(NEUTRAL.passes) == 1
    assert first.num_inference_steps == CALL_DEFAULTS["num_inference_steps"]
    assert first.guidance_scale == CALL_DEFAULTS["guidance_scale"]
    assert first.timesteps is None and first.guidance_timesteps is None
    assert first.skip_initial_inference_steps == first.skip_final_inference_steps == 0
    assert first.cfg_star_rescale is False and first.tone_map_compression_ratio == 0.0
    assert NEUTRAL.stochastic_sampling is False
    # The official default stg_scale=1 with skip_block_list=None perturbs no block, but the rescaling that follows
    # STG still scales the CFG prediction (tests/test_pipeline.py compares the outputs)
    assert first.stg_scale == CALL_DEFAULTS["stg_scale"] and first.skip_block_list == ()
    assert first.rescaling_scale == CALL_DEFAULTS["rescaling_scale"]


def test_call_defaults_table_matches_the_official_signature() -> None:
    official = pytest.importorskip("ltx_video.pipelines.pipeline_ltx_video")
    params = inspect.signature(official.LTXVideoPipeline.__call__).parameters
    for key, value in CALL_DEFAULTS.items():
        assert params[key].default == value, key


def test_inference_defaults_match_official_inference_py() -> None:
    spec = importlib.util.find_spec("ltx_video")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the official ltx_video package is not installed")
    source = Path(next(iter(spec.submodule_search_locations))) / "inference.py"
    if not source.is_file():
        pytest.skip("ltx_video/inference.py not found")
    # inference.py imports imageio at module level: read its InferenceConfig defaults from the source instead
    tree = ast.parse(source.read_text())
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "InferenceConfig")
    defaults: dict[str, Any] = {}
    for stmt in cls.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.value, ast.Call):
            for kw in stmt.value.keywords:
                if kw.arg == "default":
                    defaults[stmt.target.id] = ast.literal_eval(kw.value)
    for key, value in INFERENCE_DEFAULTS.items():
        assert defaults[key] == value, key


def test_pass_settings_take_the_official_yaml_keys() -> None:
    yaml_keys = {
        "num_inference_steps", "timesteps", "skip_initial_inference_steps", "skip_final_inference_steps",
        "guidance_scale", "stg_scale", "rescaling_scale", "skip_block_list", "guidance_timesteps",
        "cfg_star_rescale", "tone_map_compression_ratio",
    }
    assert {f.name for f in dataclasses.fields(PassSettings)} == yaml_keys
    updated = PassSettings().updated({"timesteps": [0.9, 0.5], "skip_block_list": [[1], [2, 3]]})
    assert updated.timesteps == (0.9, 0.5) and updated.num_inference_steps is None
    assert updated.skip_block_list == ((1,), (2, 3))
    with pytest.raises(ValueError, match="unknown per-pass setting"):
        PassSettings().updated({"guidance": 3})
    assert isinstance(NEUTRAL, Preset)


# --- cross-check of the hand table against the yaml files themselves ---------------------------------------------


def _official_repo() -> Path | None:
    path = Path(os.environ.get("LTXV_OFFICIAL_REPO", "/work/.mirror/Lightricks+LTX-Video/repo"))
    return path if path.exists() and shutil.which("git") else None


def _git(repo: Path, *args: str) -> str | None:
    proc = subprocess.run(["git", "--git-dir" if (repo / "HEAD").is_file() else "-C", str(repo), *args],
                          capture_output=True, text=True, timeout=60)
    return proc.stdout if proc.returncode == 0 else None


@pytest.fixture(scope="module")
def official_yaml():
    yaml = pytest.importorskip("yaml")
    repo = _official_repo()
    if repo is None:
        pytest.skip("no official LTX-Video checkout (set LTXV_OFFICIAL_REPO)")

    def load(rev: str, name: str) -> dict:
        text = _git(repo, "show", f"{rev}:configs/{name}.yaml")
        if text is None:
            pytest.skip(f"configs/{name}.yaml is not at {rev} in {repo}")
        return yaml.safe_load(text)

    return repo, load


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


def _yaml_pass(cfg: dict) -> Pass:
    """One pass as the official pipeline reads it: absent keys take the ``__call__`` defaults."""

    def get(key: str) -> Any:
        return _freeze(cfg.get(key, CALL_DEFAULTS[key]))

    timesteps = get("timesteps")
    blocks = get("skip_block_list")
    return Pass(
        None if timesteps is not None else get("num_inference_steps"), timesteps,
        get("skip_initial_inference_steps"), get("skip_final_inference_steps"), get("guidance_scale"),
        get("stg_scale"), get("rescaling_scale"), get("guidance_timesteps"), () if blocks is None else blocks,
        get("cfg_star_rescale"), get("tone_map_compression_ratio"),
    )


@pytest.mark.parametrize("row", OFFICIAL, ids=[r.name for r in OFFICIAL])
def test_table_matches_the_official_yaml(official_yaml, row: Row) -> None:
    _, load = official_yaml
    cfg = load(row.rev, row.name)
    assert cfg["checkpoint_path"] == row.checkpoint
    assert cfg["pipeline_type"] == row.pipeline_type
    assert cfg["precision"] == row.precision
    assert cfg["stochastic_sampling"] is row.stochastic
    assert cfg["stg_mode"] == STG_MODE
    assert cfg["decode_timestep"] == DECODE_TIMESTEP
    assert cfg["decode_noise_scale"] == DECODE_NOISE_SCALE
    assert cfg["sampler"] == "from_checkpoint"
    assert cfg.get("downscale_factor") == row.downscale
    up = cfg.get("spatial_upscaler_model_path")
    assert (up.removesuffix(".safetensors") if up else None) == row.upsampler
    if row.pipeline_type == "multi-scale":
        passes = (_yaml_pass(cfg["first_pass"]), _yaml_pass(cfg["second_pass"]))
    else:
        passes = (_yaml_pass(cfg),)
    assert passes == row.passes


def test_table_covers_every_official_config(official_yaml) -> None:
    repo, _ = official_yaml
    listing = _git(repo, "ls-tree", "--name-only", f"{HEAD}", "configs/")
    if listing is None:
        pytest.skip(f"cannot list configs/ at {HEAD}")
    names = {Path(line).stem for line in listing.split() if line.endswith(".yaml")}
    assert names == {r.name for r in OFFICIAL if r.rev == HEAD}
    listing_097 = _git(repo, "ls-tree", "--name-only", REV_097, "configs/") or ""
    assert {r.name for r in OFFICIAL if r.rev == REV_097} <= {Path(x).stem for x in listing_097.split()}
