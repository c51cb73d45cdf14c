"""Sampling the next frame: Karras sigmas and the Euler / Heun sampler with churn (diamond.md 1.4)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SamplerConfig:
    num_steps_denoising: int = 3
    sigma_min: float = 2e-3
    sigma_max: float = 5.0
    rho: float = 7.0
    order: int = 1  # 1: Euler, 2: Heun
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0
    # A pixel whose three channels all moved by at most this many levels (of 255) from the last frame keeps the last
    # frame's value (`keep_still`); 0: off, as the reference. None: the weights' own (`model.Agent.still_levels`).
    still_levels: float | None = None


def keep_still(next_obs: Tensor, last: Tensor, levels: float) -> Tensor:
    """next_obs (B, 3, H, W) in [-1, 1] with the pixels that moved by at most `levels` (of 255, every channel) from
    `last` set back to last's value; levels 0 returns next_obs as it is.

    Why: an Atari frame is exact, pixel for pixel, wherever nothing moved (in real Breakout play a pixel that
    changes between steps changes by 4 levels or less in 1.8% of the changes, 0.01% of all pixels), while a
    sampled frame carries a faint noise everywhere (2 Euler steps: a real still pixel comes out 1 level off in 26%
    and 2 or more in 11% of the cases). Kept still, what stands still in the dream is the context's own pixels,
    step after step."""
    if levels <= 0:
        return next_obs
    moved = (next_obs - last).abs().amax(dim=1, keepdim=True) > levels * 2 / 255  # [-1, 1] spans 255 levels
    return torch.where(moved, next_obs, last)


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float, device: torch.device | str | None = None) -> Tensor:
    """The n noise levels of Karras et al. 2022 (eq. 5) from sigma_max down to sigma_min, then 0: (n + 1,).

    Raises ValueError if n < 1.
    """
    if n < 1:
        raise ValueError(f"the number of denoising steps must be at least 1, got {n}")
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    ramp = torch.linspace(0, 1, n, device=device)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat((sigmas, sigmas.new_zeros(1)))


def sample_next_obs(
    denoiser,
    obs: Tensor,
    act: Tensor,
    sigmas: Tensor,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    order: int = 1,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, list[Tensor]]:
    """Generate the next frame with the reference's k-diffusion-style sampler.

    The one sampler of every path: the eager networks (`model.Denoiser`), the fast path (a
    `model.fast.DenoiserContext`) and the CUDA graph of a world-model step (`model.cuda_graphs`), which
    captures this loop.

    denoiser: anything with `denoise(x (B, 3, H, W), sigma (B,), obs, act) -> (B, 3, H, W)`.
    obs (B, T, 3, H, W) in [-1, 1]; act (B, T) long; sigmas (N + 1,) ending with 0 (`karras_sigmas`).
    noise (B, 3, H, W): the starting point, else drawn from `generator`. As the reference, the start is unit
    noise N(0, I), NOT scaled by sigma_max: its released weights expect it.
    -> next_obs (B, 3, H, W) (and the list of iterates if return_trajectory).
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 (Euler) or 2 (Heun), got {order}")
    b, _, c, h, w = obs.shape
    if noise is None:
        noise = torch.randn(b, c, h, w, device=obs.device, generator=generator)
    x = noise.to(device=obs.device, dtype=torch.float32)
    # the noise levels stay on the host, whatever the device: reading one never waits for the device, and a
    # CUDA graph captures the loop with them as constants
    sigmas = sigmas.to(device="cpu", dtype=torch.float32)
    gamma_max = min(s_churn / (len(sigmas) - 1), 2**0.5 - 1)
    trajectory = [x]
    for i in range(len(sigmas) - 1):
        sigma, next_sigma = sigmas[i], sigmas[i + 1]
        gamma = gamma_max if gamma_max > 0 and s_tmin <= float(sigma) <= s_tmax else 0.0
        sigma_hat = sigma * (gamma + 1)
        if gamma > 0:
            eps = torch.randn(x.shape, device=x.device, generator=generator) * s_noise
            x = x + eps * (sigma_hat**2 - sigma**2) ** 0.5
        # as the reference: D is evaluated at sigma, not sigma_hat, even with churn (k-diffusion uses sigma_hat)
        denoised = denoiser.denoise(x, sigma.expand(b), obs, act)
        d = (x - denoised) / sigma_hat
        dt = next_sigma - sigma_hat
        if order == 1 or i == len(sigmas) - 2:  # Euler; Heun falls back to Euler on the step to sigma = 0
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = denoiser.denoise(x_2, next_sigma.expand(b), obs, act)
            d_2 = (x_2 - denoised_2) / next_sigma
            x = x + (d + d_2) / 2 * dt
        trajectory.append(x)
    return (x, trajectory) if return_trajectory else x
