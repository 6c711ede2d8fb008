"""Schedules, the step and guidance vs the official ``RectifiedFlowScheduler`` / pipeline code and hand values."""

from __future__ import annotations

import pytest
import torch

from ltxcli.models.configs import SchedulerConfig
from ltxcli.sampling import (
    check_allowed_timesteps,
    euler_step,
    guidance_index,
    guide,
    linear_quadratic_schedule,
    make_timesteps,
    next_timesteps,
    per_step,
    stochastic_step,
    timesteps_from_list,
    tone_map,
    uniform_schedule,
)

CFG_09 = {"shifting": "SD3", "base_resolution": None, "target_shift_terminal": 0.1}
LQ8 = [1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875]
DISTILLED_ALLOWED = [1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725, 0.4219]


def _official(cfg: dict):
    from ltx_video.schedulers.rf import RectifiedFlowScheduler

    return RectifiedFlowScheduler(**cfg)


def _official_timesteps(cfg: dict, steps: int, shape: tuple[int, ...]) -> torch.Tensor:
    sched = _official(cfg)
    sched.set_timesteps(steps, samples_shape=torch.Size(shape))
    return sched.timesteps


SCHEDULE_CASES = [
    (CFG_09, 4, (1, 128, 3, 2, 3)),
    (CFG_09, 40, (1, 128, 16, 15, 22)),
    (CFG_09, 30, (1, 128, 16, 22, 38)),
    (CFG_09, 7, (2, 128, 1, 4, 4)),
    ({}, 40, (1, 128, 16, 15, 22)),
    ({"sampler": "LinearQuadratic"}, 30, (1, 128, 16, 22, 38)),
    ({"sampler": "LinearQuadratic"}, 8, (1, 128, 16, 22, 38)),
    ({"sampler": "LinearQuadratic"}, 7, (1, 128, 2, 3, 3)),
    ({"sampler": "LinearQuadratic"}, 1, (1, 128, 2, 3, 3)),
    ({"sampler": "Constant", "shift": 1.7}, 20, (1, 128, 2, 3, 3)),
    ({"sampler": "LinearQuadratic", "shifting": "SD3"}, 12, (1, 128, 9, 12, 20)),
    ({"shifting": "SimpleDiffusion", "base_resolution": 1024}, 16, (1, 128, 5, 16, 24)),
]


@pytest.mark.parametrize(("cfg", "steps", "shape"), SCHEDULE_CASES)
def test_make_timesteps_equals_official(cfg: dict, steps: int, shape: tuple[int, ...]) -> None:
    got = make_timesteps(SchedulerConfig.from_official(cfg), steps, shape)
    want = _official_timesteps(cfg, steps, shape)
    assert got.dtype == torch.float32 and got.shape == (steps,)
    err = (got - want).abs().max().item()
    print(f"schedule {cfg} steps={steps} shape={shape}: max abs diff vs official {err:.3e}")
    assert torch.equal(got, want)
    assert torch.all(got[1:] < got[:-1])


def test_linear_quadratic_hand_values() -> None:
    got = linear_quadratic_schedule(8)
    assert torch.allclose(got, torch.tensor(LQ8), rtol=0, atol=1e-6)
    lq30 = [1, .99833, .99667, .995, .99333, .99167, .99, .98833, .98667, .985, .98333, .98167, .98, .97833,
            .97667, .975, .96911, .95478, .932, .90078, .86111, .813, .75644, .69144, .618, .53611, .44578,
            .347, .23978, .12411]
    assert torch.allclose(linear_quadratic_schedule(30), torch.tensor(lq30), rtol=0, atol=6e-6)
    assert linear_quadratic_schedule(1).tolist() == [1.0]


def test_diffusers_worked_example() -> None:
    # 64x96 pixels, 17 frames -> latent 3x2x3 = 18 tokens, 4 steps, the 0.9 scheduler config.
    got = make_timesteps(SchedulerConfig.from_official(CFG_09), 4, (1, 128, 3, 2, 3))
    want = torch.tensor([1.0, 0.77521, 0.485989, 0.1])
    print(f"worked example: {got.tolist()}")
    assert torch.allclose(got, want, rtol=0, atol=6e-6)


def test_uniform_schedule() -> None:
    assert torch.allclose(uniform_schedule(4), torch.tensor([1.0, 0.75, 0.5, 0.25]), rtol=0, atol=1e-7)


def test_skip_steps_equal_official_retrieve_timesteps() -> None:
    from ltx_video.pipelines.pipeline_ltx_video import retrieve_timesteps

    cfg = {"sampler": "LinearQuadratic"}
    shape = (1, 128, 16, 22, 38)
    for skip_i, skip_f in [(0, 3), (17, 0), (2, 5)]:
        sched = _official(cfg)
        want, n = retrieve_timesteps(sched, 30, "cpu", None, skip_initial_inference_steps=skip_i,
                                     skip_final_inference_steps=skip_f, samples_shape=torch.Size(shape))
        got = make_timesteps(SchedulerConfig.from_official(cfg), 30, shape, skip_initial=skip_i, skip_final=skip_f)
        assert torch.equal(got, want) and len(got) == n
    with pytest.raises(ValueError, match="skip"):
        make_timesteps(SchedulerConfig.from_official(cfg), 8, shape, skip_initial=4, skip_final=4)


def test_explicit_list_verbatim() -> None:
    values = [1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725]
    sched = _official({})
    sched.set_timesteps(timesteps=values)
    got = timesteps_from_list(values)
    assert got.dtype == torch.float32 and torch.equal(got, sched.timesteps)


def test_allowed_timesteps() -> None:
    check_allowed_timesteps(linear_quadratic_schedule(8), DISTILLED_ALLOWED)
    check_allowed_timesteps(timesteps_from_list([0.9094, 0.725, 0.4219]), DISTILLED_ALLOWED)
    with pytest.raises(ValueError, match=r"0\.875"):
        check_allowed_timesteps(uniform_schedule(8), DISTILLED_ALLOWED)


# --- step ------------------------------------------------------------------------------------------------


def _schedule_and_tau() -> tuple[dict, torch.Tensor, torch.Tensor]:
    cfg = {"sampler": "LinearQuadratic"}
    schedule = make_timesteps(SchedulerConfig.from_official(cfg), 8, (1, 128, 2, 3, 4))
    # tokens at schedule values, between them, just above (within t_eps), hard-conditioned (0), tiny
    tau = torch.tensor([[1.0, 0.99375, 0.95, 0.725, 0.725 + 5e-7, 0.5, 0.421875, 0.2, 0.0, 1e-7, 0.98, 0.9]])
    return cfg, schedule, tau


def test_next_timesteps_hand_values() -> None:
    _, schedule, tau = _schedule_and_tau()
    got = next_timesteps(schedule, tau)
    f = torch.tensor
    want = f([[0.99375, 0.9875, 0.909375, 0.421875, 0.421875, 0.421875, 0.0, 0.0, 0.0, 0.0, 0.975, 0.725]])
    assert torch.allclose(got, want, rtol=0, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("per_token", [True, False])
def test_euler_step_equals_official(dtype: torch.dtype, per_token: bool) -> None:
    cfg, schedule, tau = _schedule_and_tau()
    sched = _official(cfg)
    sched.set_timesteps(8, samples_shape=torch.Size((1, 128, 2, 3, 4)))
    torch.manual_seed(3)
    n = tau.shape[1]
    x = torch.randn(1, n, 8).to(dtype)
    v = torch.randn(1, n, 8).to(dtype)
    taus = [tau] if per_token else [tau[:, i : i + 1] for i in range(n)]
    for t in taus:
        want = sched.step(v, t, x, return_dict=False)[0]
        got = euler_step(x, v, t, next_timesteps(schedule, t))
        assert got.dtype == want.dtype == torch.float32  # official promotion to float32
        assert torch.equal(got, want)


def test_euler_step_batch_of_two_equals_official() -> None:
    cfg, schedule, tau = _schedule_and_tau()
    sched = _official(cfg)
    sched.set_timesteps(8, samples_shape=torch.Size((1, 128, 2, 3, 4)))
    tau2 = torch.cat([tau, tau.flip(1)])
    torch.manual_seed(4)
    x, v = torch.randn(2, tau.shape[1], 5), torch.randn(2, tau.shape[1], 5)
    want = sched.step(v, tau2, x, return_dict=False)[0]
    assert torch.equal(euler_step(x, v, tau2, next_timesteps(schedule, tau2)), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_stochastic_step_equals_official(dtype: torch.dtype) -> None:
    cfg, schedule, tau = _schedule_and_tau()
    sched = _official(cfg)
    sched.set_timesteps(8, samples_shape=torch.Size((1, 128, 2, 3, 4)))
    torch.manual_seed(5)
    x = torch.randn(1, tau.shape[1], 6).to(dtype)
    v = torch.randn(1, tau.shape[1], 6).to(dtype)
    for t in (tau, tau[:, 2:3]):
        torch.manual_seed(6)
        want = sched.step(v, t, x, return_dict=False, stochastic_sampling=True)[0]
        torch.manual_seed(6)
        noise = torch.randn_like(x)
        got = stochastic_step(x, v, t, next_timesteps(schedule, t), noise)
        assert got.dtype == want.dtype
        assert torch.equal(got, want)


# --- guidance --------------------------------------------------------------------------------------------


def _reference_guidance(vu, vc, vp, cfg, stg, rescale, cfg_star):
    """The official loop's guidance, written out from the reference (shared/reference §5.7), batch size 1."""
    b = vc.shape[0]
    v = vc
    if cfg > 1:
        if cfg_star:
            alpha = (vc.view(b, -1) * vu.view(b, -1)).sum(1, keepdim=True) / ((vu.view(b, -1) ** 2).sum(1, keepdim=True) + 1e-8)
            vu = alpha * vu
        v = vu + cfg * (vc - vu)
    if stg > 0:
        v = v + stg * (vc - vp)
        if rescale != 1.0:
            f = vc.view(b, -1).std(dim=1, keepdim=True) / v.view(b, -1).std(dim=1, keepdim=True)
            f = rescale * f + (1 - rescale)
            v = v * f.view(b, 1, 1)
    return v


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("cfg", "stg", "rescale", "cfg_star"),
    [(3.0, 0.0, 1.0, False), (3.0, 0.0, 0.7, True), (1.0, 1.0, 0.7, False), (3.0, 1.0, 0.7, False),
     (6.0, 4.0, 0.5, True), (8.0, 4.0, 1.0, True), (1.0, 0.0, 0.7, False)],
)
def test_guide_equals_reference(cfg, stg, rescale, cfg_star, dtype) -> None:
    torch.manual_seed(7)
    vu, vc, vp = (torch.randn(1, 12, 8).to(dtype) for _ in range(3))
    vc = vc + 0.5 * vu  # correlated, so the CFG-zero* alpha is far from 0
    got = guide(vu if cfg > 1 else None, vc, vp if stg > 0 else None, cfg=cfg, stg=stg, rescale=rescale,
                cfg_star=cfg_star)
    want = _reference_guidance(vu, vc, vp, cfg, stg, rescale, cfg_star)
    assert got.dtype == want.dtype
    assert torch.equal(got, want)


def test_guide_per_batch_item_and_checks() -> None:
    torch.manual_seed(8)
    vu, vc, vp = (torch.randn(2, 12, 8) for _ in range(3))
    got = guide(vu, vc, vp, cfg=3.0, stg=1.0, rescale=0.7, cfg_star=True)
    for i in range(2):  # each batch item is guided with its own statistics
        want = _reference_guidance(vu[i : i + 1], vc[i : i + 1], vp[i : i + 1], 3.0, 1.0, 0.7, True)
        assert torch.allclose(got[i : i + 1], want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="v_uncond"):
        guide(None, vc, None, cfg=3.0)
    with pytest.raises(ValueError, match="v_perturbed"):
        guide(None, vc, vp, cfg=1.0, stg=0.0)


@pytest.mark.parametrize("ratio", [0.0, 0.6, 1.0])
def test_tone_map_equals_official(ratio: float) -> None:
    from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline

    torch.manual_seed(9)
    x = torch.randn(1, 8, 2, 4, 4) * 2
    want = LTXVideoPipeline.tone_map_latents(x, ratio)
    assert torch.equal(tone_map(x, ratio), want)
    if ratio > 0:
        assert not torch.equal(want, x)
    with pytest.raises(ValueError):
        tone_map(x, 1.5)


GUIDANCE_TIMESTEPS = [1.0, 0.996, 0.9933, 0.9850, 0.9767, 0.9008, 0.6180]


def test_guidance_index_13b_dev_first_pass() -> None:
    # 13B dev first pass: 30 LQ steps, skip_final 3 (shared/reference official-architecture.md §5.4)
    ts = make_timesteps(SchedulerConfig(sampler="LinearQuadratic"), 30, (1, 128, 16, 22, 38), skip_final=3)
    official = []
    for t in ts:  # the official mapping loop, comparing Python floats with float32 tensor elements
        idx = [i for i, val in enumerate(GUIDANCE_TIMESTEPS) if val <= t]
        official.append(idx[0] if idx else len(GUIDANCE_TIMESTEPS) - 1)
    got = [guidance_index(t, GUIDANCE_TIMESTEPS) for t in ts]
    assert got == official
    assert [guidance_index(float(t), GUIDANCE_TIMESTEPS) for t in ts] == official
    cfg = per_step([1, 1, 6, 8, 6, 1, 1], ts, GUIDANCE_TIMESTEPS)
    stg = per_step([0, 0, 4, 4, 4, 2, 1], ts, GUIDANCE_TIMESTEPS)
    assert cfg == [1, 1, 1, 6, 6] + [8] * 5 + [6] * 4 + [1] * 13
    assert stg == [0, 0, 0, 4, 4] + [4] * 5 + [4] * 4 + [2] * 5 + [1] * 8
    assert per_step(3.0, ts, None) == [3.0] * 27
    assert guidance_index(0.5, [0.9, 0.8]) == 1  # fallback: last index
