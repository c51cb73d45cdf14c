"""A residual denoiser (`DenoiserConfig.residual`) denoises the change from the last frame: untrained it gives
the last frame plus a little of the sampler's starting noise, and every path (eager, fast, the loss) agrees."""
import dataclasses

import pytest
import torch

from model import Agent, karras_sigmas, sample_next_obs
from model.batch import Batch
from model.fast import FastDenoiser
from model.pixels import quantize
from model.presets import PRESETS, tiny
from model.world_model_env import WorldModelEnv

SIGMAS = karras_sigmas(3, 2e-3, 5.0, 7.0)
pytestmark = pytest.mark.usefixtures("one_thread")


def residual_agent(seed=0, trained=False) -> Agent:
    cfg = tiny(4)
    torch.manual_seed(seed)
    agent = Agent(dataclasses.replace(cfg, denoiser=dataclasses.replace(cfg.denoiser, residual=True))).eval()
    if trained:  # give the zero-initialised output layer weights, as training would
        with torch.no_grad():
            agent.denoiser.inner_model.conv_out.weight.normal_(0, 0.1)
    return agent


def contexts(b, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = quantize(torch.rand(b, 4, 3, 64, 64, generator=g) * 2 - 1)  # on the 8-bit grid, as real frames
    return frames, torch.randint(0, 4, (b, 4), generator=g)


def test_untrained_residual_denoiser_gives_about_the_last_frame_on_every_path():
    """F = 0: D = last + c_skip (x - last), and c_skip stays below 1 (the offset noise folded into sigma), so a
    little of the starting noise is left (about 0.04 of the [-1, 1] range); the same on the fast path."""
    agent = residual_agent()
    obs, act = contexts(3)
    noise = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    eager = sample_next_obs(agent.denoiser, obs, act, SIGMAS, noise=noise)
    assert (eager - obs[:, -1]).abs().mean() < 0.05
    fast = FastDenoiser(agent.denoiser, torch.float32).context(obs, act, SIGMAS)
    assert torch.allclose(sample_next_obs(fast, obs, act, SIGMAS, noise=noise), eager, atol=2 / 255 + 1e-6)
    # the reference's parametrisation, untrained, gives a scaled copy of the noise instead
    plain = Agent(tiny(4)).eval()
    assert (sample_next_obs(plain.denoiser, obs, act, SIGMAS, noise=noise) - obs[:, -1]).abs().mean() > 0.3


def test_trained_residual_fast_path_is_the_eager_path():
    agent = residual_agent(trained=True)
    obs, act = contexts(2, seed=3)
    noise = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    eager = sample_next_obs(agent.denoiser, obs, act, SIGMAS, noise=noise)
    assert (eager - obs[:, -1]).abs().mean() > 1e-3  # the network changes the frame
    fast = FastDenoiser(agent.denoiser, torch.float32).context(obs, act, SIGMAS)
    levels = ((sample_next_obs(fast, obs, act, SIGMAS, noise=noise) - eager).abs() * 127.5).round()
    assert levels.max() <= 2 and (levels > 0).float().mean() < 1e-3


def test_residual_loss_is_the_plain_loss_of_the_change():
    """The loss of a residual denoiser on (context, next) is the plain parametrisation's loss with the noisy
    input and the target both taken relative to the last frame: a network that outputs that target scores 0."""
    agent = residual_agent()
    d = agent.denoiser
    obs, act = contexts(2, seed=4)
    next_obs = quantize(obs[:, -1] + 0.1)
    batch = Batch(obs=torch.cat((obs, next_obs[:, None]), 1), act=torch.cat((act, act[:, -1:]), 1),
                  rew=torch.zeros(2, 5), end=torch.zeros(2, 5, dtype=torch.uint8),
                  trunc=torch.zeros(2, 5, dtype=torch.uint8), mask=torch.ones(2, 5, dtype=torch.bool))
    g = torch.Generator().manual_seed(5)
    sigma = d.sample_sigma(2, g)
    offset = d.cfg.sigma_offset_noise * torch.randn(2, 3, 1, 1, generator=g)
    eps = torch.randn(next_obs.shape, generator=g)
    noisy = next_obs + offset + eps * sigma.reshape(-1, 1, 1, 1)
    cs = d.conditioners(sigma)
    target = ((next_obs - obs[:, -1]) - cs.c_skip * (noisy - obs[:, -1])) / cs.c_out

    def oracle(x, c_noise, frames, a):  # F returning the residual target; checks what F is given, too
        assert torch.allclose(x, (noisy - obs[:, -1]) * cs.c_in, atol=1e-6)
        return target

    d.inner_model.forward = oracle
    assert d.loss(batch, generator=torch.Generator().manual_seed(5)).item() == pytest.approx(0, abs=1e-10)
    # and D lands on the next frame
    assert (d.denoise(noisy, sigma, obs, act) - next_obs).abs().max() <= 2 / 255 + 1e-6


def test_world_model_env_of_an_untrained_residual_model_stays_near_the_frame():
    """Three imagined steps on the bfloat16 fast path: the frame stays the context's last, up to the noise left
    at each step (a plain model drifts to noise)."""
    env = WorldModelEnv(residual_agent(), generator=torch.Generator().manual_seed(0), precision="bfloat16")
    obs, act = contexts(2, seed=6)
    env.reset(obs, act)
    for _ in range(3):
        next_obs = env.step(torch.tensor([0, 1]))[0]
    assert (next_obs - obs[:, -1]).abs().mean() < 0.1


def test_small_residual_preset_is_small_with_a_residual_denoiser_trained_on_noisy_contexts():
    a, b = PRESETS["small"](4), PRESETS["small-residual"](4)
    assert b.denoiser.residual and b.denoiser.noise_previous_obs and not (a.denoiser.residual or a.denoiser.noise_previous_obs)
    plain = dataclasses.replace(b.denoiser, residual=False, noise_previous_obs=False, cond_sigma_loc=a.denoiser.cond_sigma_loc)
    assert plain == a.denoiser and b.rew_end == a.rew_end
