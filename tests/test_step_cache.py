"""The step cache (``--cache``, :mod:`ltxcli.step_cache`) against independent references.

* TeaCache: the TeaCache4LTX-Video ``teacache_forward`` (ali-vilab/TeaCache, TeaCache4LTX-Video/teacache_ltx.py)
  transcribed here onto diffusers' ``LTXVideoTransformer3DModel`` with the same weights, step by step: outputs
  and skip decisions must agree. Its decision rule is also ported on its own (``numpy.poly1d``) and fed the
  metric sequences our cache recorded in a three-branch (CFG + STG) pipeline run.
* First-block cache: diffusers' own ``apply_first_block_cache`` hooks on the diffusers model, step by step.
* Threshold 0 is the plain pipeline bit for bit; state is per guidance branch and per pass; the ranks of a
  sequence-parallel (and a CFG-parallel) run on gloo take the same decisions as each other and as one process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_harness import enter_cli_env, ltx, memoised_loader
from tiny_models import cpu_tiny_pipeline, randomise_normal

from ltxcli import step_cache
from ltxcli.models.configs import TransformerConfig
from ltxcli.models.rope import latent_coords, pixel_coords
from ltxcli.models.transformer import LTXVideoTransformer
from ltxcli.request import GenerationRequest, parse_cache
from ltxcli.step_cache import attached

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = TransformerConfig(
    num_attention_heads=2, attention_head_dim=10, num_layers=3, in_channels=8, out_channels=8,
    cross_attention_dim=20, caption_channels=32,
)
F_LAT, H_LAT, W_LAT = 3, 2, 3
N_TOK = F_LAT * H_LAT * W_LAT
STEPS = 12
COEFFICIENTS = [2.14700694e01, -1.28016453e01, 2.31279151e00, 7.92487521e-01, 9.69274326e-03]  # the reference's
SMALL = dict(height=64, width=96, num_frames=9, seed=3)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# --- the reference decision rules, transcribed from the reference code ---------------------------------------------


def reference_teacache_decisions(metrics: list[float | None], num_steps: int, thresh: float) -> list[bool]:
    """TeaCache4LTX-Video's ``should_calc`` per call, given the rel L1 change of each call (None where the
    reference computes it without using it): ``cnt == 0 or cnt == num_steps - 1`` computes and zeroes the sum,
    else the rescaled change is added and the call computes when the sum is not below the threshold."""
    rescale_func = np.poly1d(COEFFICIENTS)
    accumulated_rel_l1_distance = 0.0
    out = []
    for cnt, metric in enumerate(metrics):
        if cnt == 0 or cnt == num_steps - 1:
            should_calc = True
            accumulated_rel_l1_distance = 0
        else:
            assert metric is not None
            accumulated_rel_l1_distance += rescale_func(metric)
            if accumulated_rel_l1_distance < thresh:
                should_calc = False
            else:
                should_calc = True
                accumulated_rel_l1_distance = 0
        out.append(should_calc)
    return out


def reference_fbc_decisions(metrics: list[float | None], thresh: float) -> list[bool]:
    """diffusers' ``FBCHeadBlockHook._should_compute_remaining_blocks``: no previous residual computes, else
    ``diff > threshold``."""
    return [True if m is None else m > thresh for m in metrics]


# --- models ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models() -> tuple[LTXVideoTransformer, Any]:
    tfm = pytest.importorskip("diffusers.models.transformers.transformer_ltx")
    torch.manual_seed(0)
    ours = LTXVideoTransformer(TINY).eval().requires_grad_(False)
    randomise_normal(ours, seed=1)
    ref = tfm.LTXVideoTransformer3DModel(
        in_channels=TINY.in_channels, out_channels=TINY.out_channels,
        num_attention_heads=TINY.num_attention_heads, attention_head_dim=TINY.attention_head_dim,
        cross_attention_dim=TINY.cross_attention_dim, num_layers=TINY.num_layers,
        caption_channels=TINY.caption_channels, norm_eps=TINY.norm_eps,
    ).eval().requires_grad_(False)
    renames = {"patchify_proj": "proj_in", "adaln_single": "time_embed", "q_norm": "norm_q", "k_norm": "norm_k"}
    state = {}
    for key, value in ours.state_dict().items():
        for old, new in renames.items():
            key = key.replace(old, new)
        state[key] = value
    ref.load_state_dict(state, strict=True)
    return ours, ref


def _trajectory(per_token: bool) -> list[dict[str, torch.Tensor]]:
    """``STEPS`` transformer inputs of one branch along a slowly moving trajectory (batch 1)."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1, N_TOK, TINY.in_channels, generator=gen)
    ctx = torch.randn(1, 5, TINY.caption_channels, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    token_scale = torch.rand(1, N_TOK, generator=gen) if per_token else torch.ones(1, 1)
    steps = []
    for t in torch.linspace(0.5, 0.499, STEPS).tolist():
        steps.append({"x": x.clone(), "ctx": ctx, "mask": mask, "t": (t * token_scale).to(torch.float32)})
        x = x + 0.02 * torch.randn(x.shape, generator=gen)
    return steps


def _grid() -> torch.Tensor:
    px = pixel_coords(latent_coords(F_LAT, H_LAT, W_LAT), causal_fix=True)
    px[0] = px[0] * (1.0 / 25.0)
    return px[None]


def teacache_forward(self: Any, state: dict[str, Any], hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                     timestep: torch.Tensor, encoder_attention_mask: torch.Tensor, video_coords: torch.Tensor) -> torch.Tensor:
    """TeaCache4LTX-Video's ``teacache_forward`` on diffusers' model, transcribed (the class attributes it keeps
    its state in are ``state`` here; LoRA scaling, gradient checkpointing and ``return_dict`` left out)."""
    image_rotary_emb = self.rope(hidden_states, video_coords=video_coords)
    if encoder_attention_mask is not None and encoder_attention_mask.ndim == 2:
        encoder_attention_mask = (1 - encoder_attention_mask.to(hidden_states.dtype)) * -10000.0
        encoder_attention_mask = encoder_attention_mask.unsqueeze(1)
    batch_size = hidden_states.size(0)
    hidden_states = self.proj_in(hidden_states)
    temb, embedded_timestep = self.time_embed(timestep.flatten(), batch_size=batch_size, hidden_dtype=hidden_states.dtype)
    temb = temb.view(batch_size, -1, temb.size(-1))
    embedded_timestep = embedded_timestep.view(batch_size, -1, embedded_timestep.size(-1))
    encoder_hidden_states = self.caption_projection(encoder_hidden_states)
    encoder_hidden_states = encoder_hidden_states.view(batch_size, -1, hidden_states.size(-1))

    inp = hidden_states.clone()
    temb_ = temb.clone()
    inp = self.transformer_blocks[0].norm1(inp)
    num_ada_params = self.transformer_blocks[0].scale_shift_table.shape[0]
    ada_values = self.transformer_blocks[0].scale_shift_table[None, None] + temb_.reshape(
        batch_size, temb_.size(1), num_ada_params, -1)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = ada_values.unbind(dim=2)  # noqa: RUF059
    modulated_inp = inp * (1 + scale_msa) + shift_msa
    if state["cnt"] == 0 or state["cnt"] == state["num_steps"] - 1:
        should_calc = True
        state["accumulated_rel_l1_distance"] = 0
    else:
        rescale_func = np.poly1d(COEFFICIENTS)
        prev = state["previous_modulated_input"]
        state["accumulated_rel_l1_distance"] += rescale_func(
            ((modulated_inp - prev).abs().mean() / prev.abs().mean()).cpu().item())
        if state["accumulated_rel_l1_distance"] < state["rel_l1_thresh"]:
            should_calc = False
        else:
            should_calc = True
            state["accumulated_rel_l1_distance"] = 0
    state["previous_modulated_input"] = modulated_inp
    state["cnt"] += 1
    if state["cnt"] == state["num_steps"]:
        state["cnt"] = 0
    state["decisions"].append(should_calc)

    if not should_calc:
        hidden_states += state["previous_residual"]
    else:
        ori_hidden_states = hidden_states.clone()
        for block in self.transformer_blocks:
            hidden_states = block(hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states, temb=temb,
                                  image_rotary_emb=image_rotary_emb, encoder_attention_mask=encoder_attention_mask)
        scale_shift_values = self.scale_shift_table[None, None] + embedded_timestep[:, :, None]
        shift, scale = scale_shift_values[:, :, 0], scale_shift_values[:, :, 1]
        hidden_states = self.norm_out(hidden_states)
        hidden_states = hidden_states * (1 + scale) + shift
        state["previous_residual"] = hidden_states - ori_hidden_states
    return self.proj_out(hidden_states)


def _ours_along(model: LTXVideoTransformer, mode: str, thresh: float, steps: list[dict[str, torch.Tensor]]) -> tuple[
        list[torch.Tensor], list[bool]]:
    outs = []
    with torch.no_grad(), attached(model, mode, thresh, len(steps)) as cache:
        for s in steps:
            outs.append(model(s["x"], s["ctx"], s["t"], indices_grid=_grid(), encoder_attention_mask=s["mask"]))
    assert cache is not None
    (history,) = cache.history.values()
    return outs, [computed for _, _, computed in history]


@pytest.mark.parametrize("per_token", [False, True])
def test_teacache_matches_the_reference_forward(models: Any, per_token: bool) -> None:
    ours, ref = models
    steps = _trajectory(per_token)
    thresh = 0.1  # the rescaled change is about 0.03 per step (0.023 per token): three or four steps skipped in a row
    got, decisions = _ours_along(ours, "teacache", thresh, steps)
    state: dict[str, Any] = {"cnt": 0, "num_steps": STEPS, "rel_l1_thresh": thresh, "accumulated_rel_l1_distance": 0,
                             "previous_modulated_input": None, "previous_residual": None, "decisions": []}
    with torch.no_grad():
        want = [teacache_forward(ref, state, s["x"], s["ctx"], s["t"] * 1000, s["mask"], _grid()) for s in steps]
    print(f"\nteacache {thresh}: reference {state['decisions']}, ours {decisions}")
    assert decisions == state["decisions"]
    assert 0 < decisions.count(False) < STEPS - 2  # the threshold is inside the range the trajectory exercises
    errs = [rel_err(g, w) for g, w in zip(got, want, strict=True)]
    print(f"max rel err over the steps {max(errs):.2e}")
    assert max(errs) <= 1e-5


@pytest.mark.parametrize("per_token", [False, True])
def test_first_block_cache_matches_diffusers_hooks(models: Any, per_token: bool) -> None:
    import copy

    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    ours, ref = models
    ref = copy.deepcopy(ref)
    steps = _trajectory(per_token)
    thresh = 0.06  # the change is about 0.04 (0.02 per token) per step: one or two steps skipped in a row
    apply_first_block_cache(ref, FirstBlockCacheConfig(threshold=thresh))
    got, decisions = _ours_along(ours, "fbcache", thresh, steps)
    with torch.no_grad(), ref.cache_context("cond"):
        want = [ref(s["x"], s["ctx"], s["t"] * 1000, s["mask"], video_coords=_grid(), return_dict=False)[0]
                for s in steps]
    errs = [rel_err(g, w) for g, w in zip(got, want, strict=True)]
    print(f"\nfbcache {thresh}: ours {decisions}; max rel err over the steps {max(errs):.2e}")
    assert 0 < decisions.count(False) < STEPS - 1
    assert max(errs) <= 1e-5  # a different decision anywhere would move that step's output far more


# --- the pipeline -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> Any:
    yield from cpu_tiny_pipeline()


def _image() -> torch.Tensor:
    return torch.rand((1, 64, 96, 3), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("mode", ["teacache", "fbcache"])
def test_threshold_zero_is_the_plain_pipeline_bit_for_bit(tiny: Any, mode: str) -> None:
    """Three branches (CFG + STG) and an image condition (per-token timesteps)."""
    from ltxcli.request import Condition

    kw = dict(SMALL, steps=4, conditions=[Condition(_image(), 0, 1.0)])
    plain = tiny.generate("a cat", **kw)
    cached = tiny.generate("a cat", cache=f"{mode}:0", **kw)
    assert torch.equal(cached.latents, plain.latents)
    assert torch.equal(cached.video, plain.video)
    assert cached.settings["cache"] == {"mode": mode, "threshold": 0.0, "calls": 12, "skipped": 0}
    assert plain.settings["cache"] == {"mode": "none", "threshold": 0.0, "calls": None, "skipped": 0}


@pytest.mark.parametrize("mode", ["teacache", "fbcache"])
def test_pipeline_decisions_equal_the_reference_rules(tiny: Any, mode: str) -> None:
    """Each of the three branches' recorded metric sequence through the reference rule gives its decisions; the
    skipped evaluations are what the record counts."""
    thresh = 0.3 if mode == "teacache" else 0.2
    steps = 10
    res = tiny.generate("a cat", steps=steps, cache=f"{mode}:{thresh}", **SMALL)
    (history,) = tiny.cache_tally.histories
    assert len(history) == 3  # uncond, cond, perturbed
    skipped = 0
    for entries in history.values():
        assert [s for s, _, _ in entries] == list(range(steps))
        metrics = [m for _, m, _ in entries]
        decisions = [c for _, _, c in entries]
        if mode == "teacache":
            assert reference_teacache_decisions(metrics, steps, thresh) == decisions
        else:
            assert reference_fbc_decisions(metrics, thresh) == decisions
        skipped += decisions.count(False)
    assert skipped > 0 and res.settings["cache"] == {"mode": mode, "threshold": thresh, "calls": 3 * steps,
                                                       "skipped": skipped}
    plain = tiny.generate("a cat", steps=steps, **SMALL)
    print(f"\n{mode} {thresh}: {skipped}/{3 * steps} skipped, latents rel diff {rel_err(res.latents, plain.latents):.3f}")


def test_state_per_branch_follows_the_guidance_schedule(tiny: Any) -> None:
    """Steps as the pipeline makes them: CFG off (cond + perturbed) for the first steps, then on (3 branches).
    The cond and perturbed branches keep their state across the change; the unconditional one starts afresh."""
    model = tiny.transformer
    gen = torch.Generator().manual_seed(2)
    text = torch.randn(3, 6, model.config.caption_channels, generator=gen)  # [negative, positive, positive]
    text_mask = torch.ones(3, 6, dtype=torch.int64)
    masks = {n: torch.ones(model.config.num_layers, n) for n in (2, 3)}
    for m in masks.values():
        m[1, -1] = 0  # STG on block 1 of the last (perturbed) branch
    x = torch.randn(1, 12, model.config.in_channels, generator=gen)
    grid = pixel_coords(latent_coords(3, 2, 2), causal_fix=True)[None]
    rope = model.rope_tables(grid)
    ts = torch.linspace(1.0, 0.1, 8).tolist()
    with torch.no_grad(), attached(model, "teacache", 10.0, len(ts)) as cache:  # a large threshold: skip when allowed
        for i, t in enumerate(ts):
            cfg = i >= 3
            n = 3 if cfg else 2
            sl = slice(0 if cfg else 1, (0 if cfg else 1) + n)
            model(torch.cat([x] * n), text[sl], torch.full((n, 1), t), rope=rope, encoder_attention_mask=text_mask[sl],
                  skip_layer_mask=masks[n], skip_layer_strategy="attention_values")
            x = x + 0.05 * torch.randn(x.shape, generator=gen)
    assert cache is not None
    by_text_row = sorted(cache.history.items(), key=lambda kv: kv[0][0])  # negative, positive, positive rows
    (_, uncond), (_, cond), (_, perturbed) = by_text_row
    assert [s for s, _, _ in cond] == list(range(8)) and [s for s, _, _ in perturbed] == list(range(8))
    assert [s for s, _, _ in uncond] == list(range(3, 8))
    assert uncond[0][1:] == (None, True)  # fresh: computed, no metric
    assert all(m is not None and not c for _, m, c in cond[1:7])  # continued state across the change: skipped
    assert all(m is not None and not c for _, m, c in uncond[1:4])
    assert cond[7][2] and uncond[-1][2]  # the last step is always computed


def test_stg_branch_starts_afresh_when_its_skip_blocks_change(tiny: Any) -> None:
    """A per-interval ``skip_block_list`` (the 13B dev presets') moves the STG perturbation from block 0 to
    block 1 mid-pass: the perturbed branch is then another function of the same input, and reusing its residual
    computed with block 0 skipped would guide with the old perturbation. It starts afresh there (computed);
    the unconditional and conditional branches keep their state."""
    from dataclasses import replace

    from ltxcli.presets import PassSettings

    steps = 8
    preset = tiny.preset
    tiny.preset = replace(preset, passes=(PassSettings(
        num_inference_steps=steps, guidance_scale=3.0, stg_scale=1.0, rescaling_scale=0.7,
        guidance_timesteps=(0.6, 0.0), skip_block_list=((0,), (1,))),))
    try:
        tiny.generate("a cat", cache="teacache:10", **SMALL)  # a large threshold: skip whenever allowed
    finally:
        tiny.preset = preset
    (history,) = tiny.cache_tally.histories
    by_row: dict[int, list[list[tuple[int, float | None, bool]]]] = {}
    for key, entries in history.items():  # keys in first-seen order
        by_row.setdefault(key[0], []).append(entries)
    (uncond,), (cond,), (first, second) = (by_row[row] for row in sorted(by_row))
    for entries in (uncond, cond):
        assert [c for _, _, c in entries] == [True] + [False] * (steps - 2) + [True]
    switch = second[0][0]
    assert 1 < switch < steps - 1  # the boundary is inside the pass
    assert [s for s, _, _ in first] == list(range(switch)) and [s for s, _, _ in second] == list(range(switch, steps))
    assert [c for _, _, c in first] == [True] + [False] * (switch - 1)
    assert second[0][1:] == (None, True)  # not a skip on a residual of the old perturbation
    assert [c for _, _, c in second[1:]] == [False] * (steps - switch - 2) + [True]


def test_state_resets_per_pass_and_on_reset(tiny: Any) -> None:
    model = tiny.transformer
    gen = torch.Generator().manual_seed(3)
    text = torch.randn(1, 6, model.config.caption_channels, generator=gen)
    x = torch.randn(1, 12, model.config.in_channels, generator=gen)
    grid = pixel_coords(latent_coords(3, 2, 2), causal_fix=True)[None]

    def run(cache_steps: int, calls: int, reset_at: int | None = None) -> list[tuple[int, float | None, bool]]:
        with torch.no_grad(), attached(model, "fbcache", 10.0, cache_steps) as cache:
            for i in range(calls):
                if i == reset_at:
                    assert step_cache.reset(model)  # for code that holds only the transformer, inside one pass
                model(x, text, torch.full((1, 1), 1.0 - i / 10), indices_grid=grid)
        (hist,) = cache.history.values()
        return hist

    first, second = run(4, 4), run(4, 4)
    assert first == second and first[0] == (0, None, True) and not any(c for _, _, c in first[1:])
    after = run(6, 6, reset_at=3)
    assert [(s, c) for s, _, c in after] == [(0, True), (1, False), (2, False), (0, True), (1, False), (2, False)]
    assert after[3][1] is None
    assert "forward" not in model.__dict__  # the model is itself again
    assert not step_cache.reset(model)


def test_teacache_under_sequential_offload() -> None:
    """``--offload sequential`` keeps a block's weights on the host outside its own call, and TeaCache measures
    block 0's modulated input before (or instead of) calling it. The meta device stands in for the GPU here: the
    blocks stream there as they would to CUDA (two steps: first and last, no metric to bring to the host)."""
    from ltxcli.offload import enable_sequential_offload

    model = LTXVideoTransformer(TINY).eval().requires_grad_(False)
    offload = enable_sequential_offload(model, "meta")
    s = _trajectory(per_token=True)[0]
    meta = torch.device("meta")
    args = (s["x"].to(meta), s["ctx"].to(meta), s["t"].to(meta))
    kwargs = dict(indices_grid=_grid().to(meta), encoder_attention_mask=s["mask"].to(meta))
    with torch.no_grad():
        plain = model(*args, **kwargs)
        with attached(model, "teacache", 0.1, 2) as cache:
            outs = [model(*args, **kwargs) for _ in range(2)]
    assert cache is not None and cache.calls == 2 and offload.loads == 3 * TINY.num_layers
    assert all(o.shape == plain.shape and o.device == meta for o in outs)


def test_multi_scale_passes_start_afresh(tiny: Any) -> None:
    from ltxcli.models.configs import UpsamplerConfig
    from ltxcli.models.upsampler import LatentUpsampler

    tiny.upsampler = LatentUpsampler(UpsamplerConfig(in_channels=tiny.transformer.config.in_channels, mid_channels=32,
                                                     num_blocks_per_stage=1)).eval()
    try:
        res = tiny.generate("a cat", cache="teacache:10", first_pass={"steps": 4}, second_pass={"timesteps": [0.9, 0.7, 0.4]},
                            height=128, width=192, num_frames=9, seed=1)
    finally:
        tiny.upsampler = None
    first, second = tiny.cache_tally.histories
    for history, steps in ((first, 4), (second, 3)):
        for entries in history.values():
            assert [c for _, _, c in entries] == [True] + [False] * (steps - 2) + [True]
    assert res.settings["cache"]["skipped"] == 3 * (2 + 1)


def test_long_video_windows_start_afresh_and_count_together(tiny: Any) -> None:
    """Each window of a long video is a pass of its own: every branch's first step is computed with no metric
    (nothing carried over from the previous window's tokens), and the record counts every window."""
    from ltxcli import long_video

    req = GenerationRequest("a cat | a dog", num_frames=33, window=17, overlap=9, steps=4, cache="teacache:10",
                            height=64, width=96, seed=1)
    windows = long_video.plan(req, tiny.preset).windows
    res = long_video.generate(tiny, req)
    histories = tiny.cache_tally.histories
    assert len(windows) > 1 and len(histories) == len(windows)
    for history in histories:
        assert len(history) == 3  # uncond, cond, perturbed
        for entries in history.values():
            assert [(s, m is None, c) for s, m, c in entries] == [(0, True, True), (1, False, False),
                                                                 (2, False, False), (3, True, True)]
    assert res.settings["cache"] == {"mode": "teacache", "threshold": 10.0, "calls": 3 * 4 * len(windows),
                                     "skipped": 3 * 2 * len(windows)}


def test_parse_cache() -> None:
    assert parse_cache(None) == ("none", 0.0) and parse_cache("none") == ("none", 0.0)
    assert parse_cache("teacache") == ("teacache", 0.05) and parse_cache("FBCache:0.1") == ("fbcache", 0.1)
    for bad in ("teacache:x", "teacache:-1", "teacache:nan", "none:0.1", "deepcache"):
        with pytest.raises(ValueError, match="cache"):
            parse_cache(bad)
    assert GenerationRequest("a", cache="fbcache:0").cache == "fbcache:0"
    with pytest.raises(ValueError, match="must be none, teacache"):  # Python's float() reads "1_0" as 10
        parse_cache("teacache:1_0")
    with pytest.raises(ValueError, match=r"threshold inf must be a finite number >= 0"):
        parse_cache("teacache:inf")


# --- the command line --------------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return enter_cli_env(tmp_path, monkeypatch, memoised_loader())


def test_cli_cache_in_json_and_record(cli_env: Path) -> None:
    """In process (cli_harness), where three subprocesses only added their start-ups."""
    batch = cli_env / "items.jsonl"
    batch.write_text(json.dumps({"prompt": "a cat", "seed": 3, "cache": "fbcache:0"}) + "\n"
                     + json.dumps({"prompt": "a dog", "seed": 4}) + "\n")
    args = ["generate", "--batch", str(batch), "--model", "tiny", "--json", "-q", "--height", "64", "--width", "96",
            "--num-frames", "9", "--steps", "5", "--cache", "teacache:0.3", "-o", "out/{index}.mp4"]
    r = ltx(*args)
    assert r.exit_code == 0, r.stderr
    first, second = (json.loads(line) for line in r.stdout.splitlines())
    assert first["settings"]["cache"] == {"mode": "fbcache", "threshold": 0.0, "calls": 15, "skipped": 0}
    cache = second["settings"]["cache"]
    assert cache["mode"] == "teacache" and cache["threshold"] == 0.3 and cache["calls"] == 15 and cache["skipped"] > 0
    info = ltx("info", "out/1.mp4", "--json")
    assert info.exit_code == 0, info.stderr
    assert json.loads(info.stdout)["generation"]["cache"] == cache
    bad = ltx(*args[:1], "a cat", "--model", "tiny", "--cache", "teacache:fast")
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "teacache[:THRESHOLD]" in bad.stderr


# --- two ranks on gloo ---------------------------------------------------------------------------------------------

PARALLEL_CASE = dict(prompt="a cat walks", height=96, width=160, num_frames=17, seed=3, steps=8)  # 45 tokens
PARALLEL_CACHE = "teacache:0.3"


def _summary(history: dict[Any, list[tuple[int, float | None, bool]]]) -> list[list[tuple[int, float | None, bool]]]:
    """Histories in text-row order (keys hold storage addresses, which differ between processes)."""
    return [entries for _, entries in sorted(history.items(), key=lambda kv: kv[0][0])]


def _worker(rank: int, world: int, port: int, out: Path) -> None:
    from ltxcli.parallel import context
    from ltxcli.parallel.transformer import ParallelTransformer
    from ltxcli.tiny import build_pipeline

    torch.set_num_threads(1)
    ctx = context.init(rank, world, init_method=f"tcp://127.0.0.1:{port}", backend="gloo", timeout_s=120)
    pipe = build_pipeline(torch.device("cpu"), torch.float32)
    plain = pipe.transformer
    results: dict[str, Any] = {}
    for mode in ("sequence", "cfg"):
        pipe.transformer = ParallelTransformer(plain, ctx, mode)
        res = pipe.generate(cache=PARALLEL_CACHE, **PARALLEL_CASE)
        results[mode] = {"latents": res.latents, "cache": res.settings["cache"],
                         "history": _summary(pipe.cache_tally.histories[0])}
        pipe.transformer.unwrap()
    torch.save(results, out / f"rank{rank}.pt")
    ctx.barrier()
    ctx.destroy()


def test_parallel_ranks_decide_alike(tiny: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen([sys.executable, __file__, str(r), "2", str(port), str(out)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
        ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]
    single = tiny.generate(cache=PARALLEL_CACHE, **PARALLEL_CASE)
    single_history = _summary(tiny.cache_tally.histories[0])
    decisions = [[c for _, _, c in entries] for entries in single_history]
    assert single.settings["cache"]["skipped"] > 0
    # sequence: every rank holds every branch on its shard of the tokens; metrics reduced over both ranks
    seq0, seq1 = ranks[0]["sequence"], ranks[1]["sequence"]
    assert seq0["history"] == seq1["history"]  # the same metric values (float-equal) and decisions on both ranks
    assert [[c for _, _, c in e] for e in seq0["history"]] == decisions
    for got, want in zip(seq0["history"], single_history, strict=True):
        for (_, m_got, _), (_, m_want, _) in zip(got, want, strict=True):
            assert (m_got is None) == (m_want is None) and (m_got is None or abs(m_got - m_want) <= 1e-4 * m_want)
    assert seq0["cache"] == seq1["cache"] == single.settings["cache"]
    assert torch.equal(seq0["latents"], seq1["latents"])
    # cfg: rank 0 holds [uncond, cond], rank 1 the perturbed branch; the counts are summed over the ranks
    cfg0, cfg1 = ranks[0]["cfg"], ranks[1]["cfg"]
    assert [[c for _, _, c in e] for e in cfg0["history"] + cfg1["history"]] == decisions
    assert cfg0["cache"] == cfg1["cache"] == single.settings["cache"]
    print(f"\nparallel {PARALLEL_CACHE}: {single.settings['cache']}; sequence latents vs single "
          f"{rel_err(seq0['latents'], single.latents):.1e}")


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
