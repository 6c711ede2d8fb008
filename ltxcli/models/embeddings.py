"""The sinusoidal timestep features shared by the DiT's adaLN-single and the VAE decoder's time embedders."""

from __future__ import annotations

import math

import torch
from torch import Tensor

TIME_PROJ_DIM = 256  # sinusoidal timestep features fed to the embedding MLPs
TIME_MAX_PERIOD = 10000.0


def timestep_sinusoid(t: Tensor, dim: int = TIME_PROJ_DIM) -> Tensor:
    """``[N] -> [N, dim]`` float32 features ``[cos | sin]`` (diffusers ``Timesteps(flip_sin_to_cos=True, shift=0)``)."""
    half = dim // 2
    exponent = -math.log(TIME_MAX_PERIOD) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    args = t[:, None].float() * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
