"""Rectified-flow sampling maths: timestep schedules, the Euler / stochastic step and guidance.

Convention (official ``RectifiedFlowScheduler``): ``x_t = (1 - t) x_0 + t eps`` with ``t`` in ``[0, 1]`` and the
model predicting ``v = eps - x_0``. Schedules are float32, descending, without the trailing 0 (every run ends
with a jump to 0). Everything here is a plain function over tensors; the step and guidance functions run on
the latents' device without host syncs. The float operations follow the official order so that results are
bit-identical to ``RectifiedFlowScheduler`` and the ``LTXVideoPipeline`` guidance code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import Tensor

from ltxcli.models.configs import SchedulerConfig

T_EPS = 1e-6  # a token moves to the largest schedule value strictly below ``tau - T_EPS``

# SD3 / Flux resolution shift: mu grows linearly with the token count (not clipped).
_SHIFT_MIN_TOKENS, _SHIFT_MAX_TOKENS = 1024, 4096
_SHIFT_MIN, _SHIFT_MAX = 0.95, 2.05


# --- schedules -----------------------------------------------------------------------------------------


def uniform_schedule(steps: int) -> Tensor:
    """``linspace(1, 1/steps, steps)`` in float32."""
    return torch.linspace(1.0, 1.0 / steps, steps, dtype=torch.float32)


def linear_quadratic_schedule(steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None) -> Tensor:
    """Noise levels rising linearly to ``threshold_noise`` over ``linear_steps`` (default ``steps // 2``) steps,
    then quadratically to 1; returned as timesteps ``1 - sigma`` (``steps`` values from 1.0, float32).

    Computed in Python floats (double) and rounded once to float32, as the official code does.
    """
    if steps == 1:
        return torch.tensor([1.0], dtype=torch.float32)
    lin = steps // 2 if linear_steps is None else linear_steps
    quad = steps - lin
    excess = lin - threshold_noise * steps
    a = excess / (lin * quad**2)
    b = threshold_noise / lin - 2 * excess / (quad**2)
    c = a * (lin**2)
    sigmas = [i * threshold_noise / lin for i in range(lin)]
    sigmas += [a * (i**2) + b * i + c for i in range(lin, steps)]
    return torch.tensor([1.0 - s for s in sigmas], dtype=torch.float32)


def time_shift(mu: float, timesteps: Tensor) -> Tensor:
    """``e^mu / (e^mu + (1/t - 1))`` (the exponential shift with sigma = 1)."""
    e = math.exp(mu)
    return e / (e + (1 / timesteps - 1))


def constant_schedule(steps: int, shift: float) -> Tensor:
    """The ``"Constant"`` sampler: the uniform schedule shifted by a fixed ``mu = shift``."""
    return time_shift(shift, uniform_schedule(steps))


def latent_token_count(latent_shape: Sequence[int]) -> int:
    """Tokens the resolution shifts count: ``f*h*w`` for ``[B,C,F,H,W]`` (or ``h*w`` for 4-D), ``N`` for ``[B,N,C]``."""
    if len(latent_shape) == 3:
        return int(latent_shape[1])
    if len(latent_shape) in (4, 5):
        return math.prod(int(s) for s in latent_shape[2:])
    raise ValueError(f"latent shape {tuple(latent_shape)} must be [B,N,C], [B,C,H,W] or [B,C,F,H,W]")


def sd3_mu(n_tokens: int) -> float:
    """The SD3/Flux shift ``mu`` for ``n_tokens`` tokens (linear through (1024, 0.95) and (4096, 2.05))."""
    slope = (_SHIFT_MAX - _SHIFT_MIN) / (_SHIFT_MAX_TOKENS - _SHIFT_MIN_TOKENS)
    intercept = _SHIFT_MIN - slope * _SHIFT_MIN_TOKENS
    return slope * n_tokens + intercept


def stretch_to_terminal(timesteps: Tensor, terminal: float) -> Tensor:
    """Scale ``1 - t`` so that the last timestep becomes ``terminal`` (0 < terminal < 1)."""
    if timesteps.numel() == 0:
        raise ValueError("stretch_to_terminal: empty schedule")
    if not 0 < terminal < 1:
        raise ValueError(f"target_shift_terminal={terminal} must be between 0 and 1 (exclusive)")
    one_minus = 1 - timesteps
    scale = one_minus[-1] / (1 - terminal)
    return 1 - one_minus / scale


def sd3_shift(timesteps: Tensor, n_tokens: int, terminal: float | None = None) -> Tensor:
    """The ``"SD3"`` resolution-dependent shift, optionally stretched to a terminal value."""
    shifted = time_shift(sd3_mu(n_tokens), timesteps)
    return shifted if terminal is None else stretch_to_terminal(shifted, terminal)


def simple_diffusion_shift(timesteps: Tensor, n_tokens: int, base_resolution: int = 1024) -> Tensor:
    """The ``"SimpleDiffusion"`` shift: log-SNR moved by ``2 log(n_tokens / base_resolution)``."""
    snr = (timesteps / (1 - timesteps)) ** 2
    return torch.sigmoid(0.5 * (torch.log(snr) + 2 * math.log(n_tokens / base_resolution)))


def timesteps_from_list(values: Sequence[float] | Tensor, device: torch.device | str | None = None) -> Tensor:
    """An explicit schedule, used verbatim (float32, no shift)."""
    if isinstance(values, Tensor):
        return values.detach().to(device=device, dtype=torch.float32)
    return torch.tensor([float(v) for v in values], dtype=torch.float32, device=device)


def make_timesteps(
    config: SchedulerConfig,
    steps: int,
    latent_shape: Sequence[int],
    *,
    skip_initial: int = 0,
    skip_final: int = 0,
    device: torch.device | str | None = None,
) -> Tensor:
    """The official ``RectifiedFlowScheduler(**cfg).set_timesteps(steps, latent_shape)`` schedule.

    ``latent_shape`` is the 5-D latent shape without conditioning tokens. ``skip_initial`` / ``skip_final``
    drop steps from either end as the official ``retrieve_timesteps`` does (the last kept step still jumps to 0).
    Computed on the CPU in float32, then moved to ``device``.
    """
    if steps < 1:
        raise ValueError(f"steps={steps} must be at least 1")
    steps = min(config.num_train_timesteps, steps)
    if config.sampler == "Uniform":
        t = uniform_schedule(steps)
    elif config.sampler == "LinearQuadratic":
        t = linear_quadratic_schedule(steps)
    elif config.sampler == "Constant":
        if config.shift is None:
            raise ValueError("the 'Constant' sampler needs a shift")
        t = constant_schedule(steps, config.shift)
    else:
        raise ValueError(f"unknown sampler {config.sampler!r}")
    if config.shifting == "SD3":
        t = sd3_shift(t, latent_token_count(latent_shape), config.target_shift_terminal)
    elif config.shifting == "SimpleDiffusion":
        t = simple_diffusion_shift(t, latent_token_count(latent_shape), config.base_resolution)
    elif config.shifting is not None:
        raise ValueError(f"unknown shifting {config.shifting!r}")
    if skip_initial < 0 or skip_final < 0 or skip_initial + skip_final >= steps:
        raise ValueError(
            f"skip_initial={skip_initial} and skip_final={skip_final} must be >= 0 and leave at least one "
            f"of the {steps} steps"
        )
    return t[skip_initial : steps - skip_final].contiguous().to(device)


def check_allowed_timesteps(timesteps: Tensor | Sequence[float], allowed: Sequence[float]) -> None:
    """Raise ``ValueError`` unless every ``round(t, 4)`` is in ``allowed`` (distilled checkpoints' rule)."""
    values = timesteps.tolist() if isinstance(timesteps, Tensor) else [float(t) for t in timesteps]
    allowed_list = [float(a) for a in allowed]
    for t in values:
        r = round(t, 4)
        if r not in allowed_list:
            raise ValueError(
                f"timestep {r} is not allowed by this checkpoint (allowed: {', '.join(map(str, allowed_list))})"
            )


# --- per-step guidance schedules ------------------------------------------------------------------------

_V = TypeVar("_V")


def guidance_index(t: float | Tensor, guidance_timesteps: Sequence[float]) -> int:
    """Index of the first ``guidance_timesteps[j] <= t`` (the last index if none).

    The comparison is in float32, as the official code compares Python floats with float32 timesteps.
    """
    if not guidance_timesteps:
        raise ValueError("guidance_timesteps is empty")
    g = torch.tensor([float(v) for v in guidance_timesteps], dtype=torch.float32)
    tt = torch.as_tensor(t, dtype=torch.float32).cpu()
    hits = (g <= tt).nonzero().flatten().tolist()
    return hits[0] if hits else len(guidance_timesteps) - 1


def per_step(
    value: _V | Sequence[_V], timesteps: Tensor | Sequence[float], guidance_timesteps: Sequence[float] | None
) -> list[_V]:
    """One value per step: a scalar is repeated; a list is indexed with :func:`guidance_index` per timestep.

    (A flat skip-block list ``[19]`` is a scalar here: pass it wrapped, ``per_step([19] ...)`` is wrong.)
    """
    ts = timesteps.tolist() if isinstance(timesteps, Tensor) else list(timesteps)
    if not isinstance(value, (list, tuple)):
        return [value] * len(ts)  # type: ignore[list-item]
    if not guidance_timesteps:
        raise ValueError("a per-interval list of guidance values needs guidance_timesteps")
    if len(value) != len(guidance_timesteps):
        raise ValueError(
            f"{len(value)} guidance values for {len(guidance_timesteps)} guidance_timesteps: lengths must match"
        )
    return [value[guidance_index(t, guidance_timesteps)] for t in ts]


# --- the step -------------------------------------------------------------------------------------------


def next_timesteps(schedule: Tensor, tau: Tensor) -> Tensor:
    """Per token, the largest schedule value below ``tau - 1e-6`` (0 when there is none).

    ``schedule``: 1-D float32 on the device; ``tau``: any shape (``[B, N]`` per token or ``[B, 1]``).
    """
    padded = torch.cat([schedule, schedule.new_zeros(1)])
    # [S+1, *tau.shape]: which schedule entries lie below each token's timestep
    cand = padded.view(-1, *([1] * tau.ndim))
    below = cand < (tau - T_EPS).unsqueeze(0)
    return torch.where(below, cand, torch.zeros_like(cand)).amax(dim=0)


def euler_step(x: Tensor, v: Tensor, tau: Tensor, tau_next: Tensor) -> Tensor:
    """``x - (tau - tau_next) v`` with ``x, v`` ``[B, N, C]`` and ``tau, tau_next`` ``[B, N]`` or ``[B, 1]``.

    With float32 timesteps the result is float32 whatever the latents' dtype (official type promotion).
    """
    dt = (tau - tau_next).unsqueeze(-1)
    return x - dt * v


def stochastic_step(x: Tensor, v: Tensor, tau: Tensor, tau_next: Tensor, noise: Tensor) -> Tensor:
    """Predict ``x0 = x - tau v`` and re-noise it to the next level with fresh ``noise`` (shape of ``x``).

    The official step draws ``noise`` with ``torch.randn_like(x)`` (global RNG, ``x``'s dtype). The next
    level is formed as ``tau - (tau - tau_next)``, the official rounding, not ``tau_next`` itself.
    """
    dt = (tau - tau_next).unsqueeze(-1)
    x0 = x - tau.unsqueeze(-1) * v
    sigma = tau.unsqueeze(-1) - dt
    return (1 - sigma) * x0 + sigma * noise


# --- guidance -------------------------------------------------------------------------------------------


def _per_item(t: Tensor, ref: Tensor) -> Tensor:
    """``[B, 1]`` -> ``[B, 1, ...]`` broadcasting over the other dims of ``ref``."""
    return t.view(t.shape[0], *([1] * (ref.ndim - 1)))


def cfg_star_alpha(v_cond: Tensor, v_uncond: Tensor) -> Tensor:
    """CFG-zero* scale ``<v_c, v_u> / (|v_u|^2 + 1e-8)`` per batch item, shaped ``[B, 1, ..., 1]`` like the inputs."""
    b = v_cond.shape[0]
    pos = v_cond.reshape(b, -1)
    neg = v_uncond.reshape(b, -1)
    dot = torch.sum(pos * neg, dim=1, keepdim=True)
    norm = torch.sum(neg**2, dim=1, keepdim=True) + 1e-8
    return _per_item(dot / norm, v_cond)


def cfg_active(cfg: float) -> bool:
    """Whether a step runs the unconditional branch (official: ``cfg > 1``)."""
    return cfg > 1.0


def stg_active(stg: float) -> bool:
    """Whether a step runs the perturbed (STG) branch (official: ``stg > 0``)."""
    return stg > 0


def guidance_branches(cfg: float, stg: float) -> int:
    """Transformer batch of one step: the conditional branch, plus the unconditional one with CFG and the
    perturbed one with STG."""
    return 1 + cfg_active(cfg) + stg_active(stg)


def text_rows(do_cfg: bool, branches: int) -> slice:
    """The rows of the text batch ``[negative, positive, positive]`` a step with ``branches`` branches runs: from the
    negative prompt's with CFG, else from the positive one's."""
    lo = 0 if do_cfg else 1
    return slice(lo, lo + branches)


def pass_branches(guidance_scale: float | Sequence[float], stg_scale: float | Sequence[float]) -> int:
    """The largest :func:`guidance_branches` of any step of a pass with these (scalar or per-interval) scales:
    per-interval lists pair by index (both are indexed through the same ``guidance_timesteps``), a scalar
    pairs with every entry."""
    cfg = list(guidance_scale) if isinstance(guidance_scale, (list, tuple)) else [guidance_scale]
    stg = list(stg_scale) if isinstance(stg_scale, (list, tuple)) else [stg_scale]
    n = max(len(cfg), len(stg))
    if len(cfg) == n and len(stg) == n:
        return max(guidance_branches(c, s) for c, s in zip(cfg, stg, strict=True))
    if len(cfg) == 1 or len(stg) == 1:
        return max(guidance_branches(c, s) for c in cfg for s in stg)
    return 1 + any(cfg_active(c) for c in cfg) + any(stg_active(s) for s in stg)  # mismatched lists: bound


def guide(
    v_uncond: Tensor | None,
    v_cond: Tensor,
    v_perturbed: Tensor | None,
    *,
    cfg: float = 1.0,
    stg: float = 0.0,
    rescale: float = 1.0,
    cfg_star: bool = False,
) -> Tensor:
    """Combine the model's predictions as the official denoising loop does.

    ``v_uncond`` must be given exactly when ``cfg > 1`` and ``v_perturbed`` exactly when ``stg > 0``.
    CFG (with the optional CFG-zero* scaling of ``v_uncond``) ``v = v_u + cfg (v_c - v_u)``, then STG
    ``v += stg (v_c - v_p)`` and, only with STG and ``rescale != 1``, ``v *= rescale std(v_c)/std(v) + 1 - rescale``
    (unbiased std per batch item).
    """
    if cfg_active(cfg) != (v_uncond is not None):
        raise ValueError(f"guide: v_uncond must be given exactly when cfg > 1 (cfg={cfg})")
    if stg_active(stg) != (v_perturbed is not None):
        raise ValueError(f"guide: v_perturbed must be given exactly when stg > 0 (stg={stg})")
    v = v_cond
    if v_uncond is not None:
        if cfg_star:
            v_uncond = cfg_star_alpha(v_cond, v_uncond) * v_uncond
        v = v_uncond + cfg * (v_cond - v_uncond)
    if v_perturbed is not None:
        v = v + stg * (v_cond - v_perturbed)
        if rescale != 1.0:
            b = v.shape[0]
            ratio = v_cond.reshape(b, -1).std(dim=1, keepdim=True) / v.reshape(b, -1).std(dim=1, keepdim=True)
            factor = rescale * ratio + (1 - rescale)
            v = v * _per_item(factor, v)
    return v


def decode_noise(latents: Tensor, noise_scale: float, gen: torch.Generator) -> Tensor:
    """``latents`` blended with ``noise_scale`` of decode noise drawn from ``gen`` (CPU), as the official pipeline
    does before a timestep-conditioned decode; ``noise_scale`` 0: ``latents`` themselves."""
    if not noise_scale:
        return latents
    # The official ``randn_like`` fills the latents' own (non-contiguous, channels-last) layout, which the CPU
    # kernel draws element by element: the same layout gives the same values for one seed.
    noise = torch.empty_strided(latents.shape, latents.stride(), dtype=latents.dtype)
    noise = noise.normal_(generator=gen).to(latents.device)
    return latents * (1 - noise_scale) + noise * noise_scale


def tone_map(latents: Tensor, compression_ratio: float) -> Tensor:
    """Soft sigmoid compression of large latent values (``compression_ratio`` in [0, 1]; 0 is the identity)."""
    if not 0 <= compression_ratio <= 1:
        raise ValueError(f"tone-map compression ratio {compression_ratio} must be in [0, 1]")
    if compression_ratio == 0:
        return latents  # the official formula multiplies by exactly 1.0 here
    s = compression_ratio * 0.75
    gate = torch.sigmoid(4.0 * s * (torch.abs(latents) - 1.0))
    return latents * (1.0 - 0.8 * s * gate)
