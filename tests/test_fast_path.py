"""The fast path (`model.fast`, `WorldModelEnv(precision="bfloat16")`) keeps the frames of the float32 path."""
import math
from pathlib import Path

import pytest
import torch

from model import Agent, karras_sigmas, sample_next_obs
from model.fast import FastActorCritic, FastDenoiser, FastRewEnd
from model.presets import tiny
from model.world_model_env import WorldModelEnv

SIGMAS = karras_sigmas(3, 2e-3, 5.0, 7.0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def agent():
    torch.manual_seed(0)
    agent = Agent(tiny(4)).eval()
    with torch.no_grad():  # the zero-initialised layers would hide the network: give them weights
        for name, p in agent.named_parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.1)
    return agent


def contexts(b, seed=0, size=64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 4, 3, size, size, generator=g) * 2 - 1, torch.randint(0, 4, (b, 4), generator=g)


def psnr(a, b):
    """PSNR in dB of frames in [-1, 1] (peak-to-peak 2)."""
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(4 / mse)


@pytest.mark.parametrize("batch", [1, 3])
def test_bfloat16_next_frame_is_within_40db_of_float32(agent, batch):
    obs, act = contexts(batch)
    noise = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    exact = sample_next_obs(agent.denoiser, obs, act, SIGMAS, noise=noise)
    fast = FastDenoiser(agent.denoiser, torch.bfloat16).context(obs, act, SIGMAS)
    frame = sample_next_obs(fast, obs, act, SIGMAS, noise=noise)
    assert frame.dtype == torch.float32 and frame.shape == exact.shape
    assert psnr(frame, exact) >= 40
    assert not torch.equal(exact, noise.clamp(-1, 1))  # the frame is the network's, not the noise


@pytest.mark.parametrize("size", [64, 36])
def test_float32_fast_path_is_the_float32_path(agent, size):
    """In float32 the fast path does the same arithmetic in another order: the same 8-bit frame almost everywhere
    (a rounding difference can flip one 8-bit level of a denoised estimate; Euler carries it into the next step)."""
    obs, act = contexts(2, size=size)
    noise = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    exact = sample_next_obs(agent.denoiser, obs, act, SIGMAS, noise=noise)
    fast = FastDenoiser(agent.denoiser, torch.float32).context(obs, act, SIGMAS)
    frame = sample_next_obs(fast, obs, act, SIGMAS, noise=noise)
    levels = ((frame - exact).abs() * 127.5).round()
    assert levels.max() <= 2 and (levels > 0).float().mean() < 1e-3


def test_world_model_env_bfloat16_steps_with_the_fast_path(agent):
    obs_ctx, act_ctx = contexts(2)
    noise = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    frames, logits = {}, {}
    for precision in ("float32", "bfloat16"):
        env = WorldModelEnv(agent, generator=torch.Generator().manual_seed(0), precision=precision)
        env.reset(obs_ctx, act_ctx)
        frames[precision], _, _, info = env.step(torch.tensor([1, 2]), noise=noise)
        logits[precision] = info["rew_logits"]
        assert env.rew_end_state[0].dtype == torch.float32
    assert psnr(frames["bfloat16"], frames["float32"]) >= 40
    assert torch.allclose(logits["bfloat16"], logits["float32"], atol=0.05)


def test_converted_weights_follow_the_source(agent):
    """After an optimizer step (in-place change of the weights) the fast path uses the new weights."""
    ac = Agent(tiny(4)).actor_critic.eval()
    fast = FastActorCritic(ac, torch.float32)
    obs = contexts(1)[0][:, 0]
    before = fast(obs)[0]
    with torch.no_grad():
        ac.actor_linear.bias.add_(1.0)
    assert torch.allclose(fast(obs)[0], before + 1.0, atol=1e-5)
    logits, value, (h, c) = FastActorCritic(ac)(obs)
    assert logits.dtype == value.dtype == h.dtype == torch.float32
    exact = ac(obs)[0]
    assert torch.allclose(logits, exact, atol=0.05)


def test_fast_rew_end_matches_over_a_sequence(agent):
    obs, act = contexts(2)
    with torch.no_grad():
        rew, end, (h, c) = agent.rew_end(obs[:, :-1], act[:, :-1], obs[:, 1:])
    f_rew, f_end, (f_h, f_c) = FastRewEnd(agent.rew_end)(obs[:, :-1], act[:, :-1], obs[:, 1:])
    assert f_h.shape == h.shape and f_h.dtype == torch.float32
    assert torch.allclose(f_rew, rew, atol=0.05) and torch.allclose(f_end, end, atol=0.05)



def test_a_frame_context_refuses_other_frames(agent):
    """A context holds one frame's conditioning: asked to denoise for other obs or actions it says so, instead of
    silently returning the frame of the ones it was made with."""
    obs, act = contexts(1)
    ctx = FastDenoiser(agent.denoiser, torch.float32).context(obs, act, SIGMAS)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    assert ctx.denoise(x, SIGMAS[0], obs, act).shape == x.shape
    other_obs, other_act = contexts(1, seed=1)
    for o, a in ((other_obs, act), (obs, other_act)):
        with pytest.raises(ValueError, match="made for other obs and act"):
            ctx.denoise(x, SIGMAS[0], o, a)
    with pytest.raises(ValueError, match="not in this context's schedule"):
        ctx.denoise(x, 0.7, obs, act)
