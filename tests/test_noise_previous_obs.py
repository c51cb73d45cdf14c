"""`DenoiserConfig.noise_previous_obs` (the reference's csgo branch): in training the conditioning frames get
noise at a level the network is told; at sampling time it is told s_cond. Off by default (DIAMOND's Atari
weights have no `noise_cond_emb`)."""
import dataclasses
import math

import pytest
import torch

from model import Agent, karras_sigmas, sample_next_obs
from model.agent import AgentConfig
from model.batch import Batch
from model.fast import FastDenoiser
from model.pixels import quantize
from model.presets import tiny

SIGMAS = karras_sigmas(3, 2e-3, 5.0, 7.0)
pytestmark = pytest.mark.usefixtures("one_thread")
KEY = "denoiser.inner_model.noise_cond_emb.weight"


def noisy_cond_agent(residual=False, seed=0, **kw) -> Agent:
    cfg = tiny(4)
    den = dataclasses.replace(cfg.denoiser, noise_previous_obs=True, residual=residual, **kw)
    torch.manual_seed(seed)
    agent = Agent(dataclasses.replace(cfg, denoiser=den))
    with torch.no_grad():  # trained-looking weights where they start at zero (the output layer, each block's conv2)
        for p in agent.denoiser.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    return agent


def batch_of(b=8, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    obs = quantize(torch.rand(b, 6, 3, 64, 64, generator=g) * 2 - 1)
    return Batch(obs=obs, act=torch.randint(0, 4, (b, 6), generator=g), rew=torch.zeros(b, 6),
                 end=torch.zeros(b, 6, dtype=torch.uint8), trunc=torch.zeros(b, 6, dtype=torch.uint8),
                 mask=torch.ones(b, 6, dtype=torch.bool))


def test_the_option_adds_one_buffer_and_round_trips_in_the_config():
    agent = noisy_cond_agent()
    assert KEY in agent.state_dict() and KEY not in Agent(tiny(4)).state_dict()
    assert AgentConfig.from_dict(agent.config.to_dict()) == agent.config


def test_training_noises_the_context_at_the_level_the_network_is_told():
    """What the network sees of the conditioning frames is the clean frames plus noise whose size (after the
    per-channel offset) is exp(4 c_noise_cond), the level it is given, sample by sample."""
    agent = noisy_cond_agent(cond_sigma_loc=-2.0, cond_sigma_scale=1.0)
    d, batch = agent.denoiser, batch_of()
    seen = []

    def spy(x, c_noise, frames, act, c_noise_cond=None):
        seen.append((frames * d.cfg.sigma_data, c_noise_cond))
        return torch.zeros_like(x, requires_grad=True)

    d.inner_model.forward = spy
    d.loss(batch, generator=torch.Generator().manual_seed(1))
    frames, c_noise_cond = seen[0]
    assert c_noise_cond is not None and c_noise_cond.shape == (8,)
    noise = frames - batch.obs[:, :4].flatten(1, 2)
    noise = noise - noise.mean(dim=(2, 3), keepdim=True)  # the offset noise is constant per channel
    assert torch.allclose(noise.std(dim=(1, 2, 3)), (4 * c_noise_cond).exp(), rtol=0.05)
    assert len({round(float(c), 4) for c in c_noise_cond}) == 8  # a level per sample


def test_training_loss_differs_from_clean_context_training():
    batch, g = batch_of(seed=2), lambda: torch.Generator().manual_seed(3)
    noisy = noisy_cond_agent()
    clean = Agent(tiny(4))
    sd = {k: v for k, v in noisy.state_dict().items() if k != KEY}
    clean.load_state_dict(sd)
    assert not torch.isclose(noisy.denoiser.loss(batch, g()), clean.denoiser.loss(batch, g()))
    noisy.denoiser.loss(batch, g()).backward()  # the gradient reaches the network through the noisy context
    assert noisy.denoiser.inner_model.conv_in.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("residual", [False, True])
def test_sampling_tells_s_cond_and_the_fast_path_agrees(residual):
    agent = noisy_cond_agent(residual=residual).eval()
    g = torch.Generator().manual_seed(4)
    obs = quantize(torch.rand(2, 4, 3, 64, 64, generator=g) * 2 - 1)
    act = torch.randint(0, 4, (2, 4), generator=g)
    noise = torch.randn(2, 3, 64, 64, generator=g)
    eager = sample_next_obs(agent.denoiser, obs, act, SIGMAS, noise=noise)
    fast = FastDenoiser(agent.denoiser, torch.float32).context(obs, act, SIGMAS)
    levels = ((sample_next_obs(fast, obs, act, SIGMAS, noise=noise) - eager).abs() * 127.5).round()
    assert levels.max() <= 2 and (levels > 0).float().mean() < 1e-3
    # the level it is told at sampling time is s_cond's: another s_cond gives another frame
    other = noisy_cond_agent(residual=residual, s_cond=0.5).eval()
    other.load_state_dict(agent.state_dict())
    assert other.denoiser.inner_model.sampling_c_noise_cond == pytest.approx(math.log(0.5) / 4)
    assert not torch.equal(sample_next_obs(other.denoiser, obs, act, SIGMAS, noise=noise), eager)
