"""The world-model step as a CUDA graph (`model.cuda_graphs`): the same frames and rewards as the fast path it
captures. The graph itself needs a GPU (these tests skip without one); its sampler runs anywhere."""
import math

import pytest
import torch

from model import Agent, karras_sigmas, sample_next_obs
from model.cuda_graphs import euler
from model.fast import FastDenoiser
from model.presets import tiny
from model.world_model_env import WorldModelEnv

pytestmark = pytest.mark.usefixtures("one_thread")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def make_agent(device="cpu"):
    torch.manual_seed(0)
    agent = Agent(tiny(4))
    with torch.no_grad():  # the zero-initialised layers would hide the network: give them weights
        for p in agent.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.1)
    return agent.to(device).eval()


def contexts(b, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    obs, act = torch.rand(b, 4, 3, 64, 64, generator=g) * 2 - 1, torch.randint(0, 4, (b, 4), generator=g)
    return obs.to(device), act.to(device)


def psnr(a, b):
    mse = float(((a.float() - b.float()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(4 / mse)


def test_graph_sampler_is_the_euler_sampler():
    agent = make_agent()
    sigmas = karras_sigmas(3, 2e-3, 5.0, 7.0)
    obs, act = contexts(2)
    noise = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ctx = FastDenoiser(agent.denoiser).context(obs, act, sigmas)
    expected = sample_next_obs(ctx, obs, act, sigmas, noise=noise)
    levels = tuple(float(s) for s in sigmas if s > 0)
    assert psnr(euler(ctx, noise, levels), expected) > 60


@cuda
@pytest.mark.parametrize("batch", [1, 5])
def test_graphed_steps_match_the_fast_path(batch):
    """Step by step from the same buffers, state and noise, the graph computes what the fast path computes."""
    agent = make_agent("cuda")
    plain, graphed = (WorldModelEnv(agent, generator=torch.Generator("cuda").manual_seed(3), precision="bfloat16",
                                    cuda_graphs=on) for on in (False, True))
    plain.reset(*contexts(batch, "cuda"))
    graphed.reset(*contexts(batch, "cuda"))
    for t in range(6):
        graphed.obs_buffer, graphed.act_buffer = plain.obs_buffer.clone(), plain.act_buffer.clone()
        graphed.rew_end_state = tuple(s.clone() for s in plain.rew_end_state)
        act, noise = torch.tensor([t % 4] * batch, device="cuda"), torch.randn(batch, 3, 64, 64, device="cuda")
        obs_p, *_, info_p = plain.step(act, noise=noise)
        obs_g, *_, info_g = graphed.step(act, noise=noise)
        assert graphed._graph is not None
        assert psnr(obs_g, obs_p) > 40, f"step {t}: {psnr(obs_g, obs_p):.1f} dB"
        # bfloat16 both ways: a pixel one level off in the frame moves the logits by ~1e-2
        pairs = [(info_g[k], info_p[k]) for k in ("rew_logits", "end_logits")]
        for g, p in pairs + list(zip(graphed.rew_end_state, plain.rew_end_state)):
            assert torch.allclose(g, p, atol=5e-2, rtol=5e-2), f"step {t}: max diff {float((g - p).abs().max()):.3g}"


@cuda
def test_graph_is_captured_again_when_the_weights_change():
    agent = make_agent("cuda")
    env = WorldModelEnv(agent, generator=torch.Generator("cuda").manual_seed(0), precision="bfloat16")
    env.reset(*contexts(2, "cuda"))
    noise = torch.randn(2, 3, 64, 64, device="cuda")
    env.step(torch.zeros(2, dtype=torch.long, device="cuda"), noise=noise)
    first = env._graph
    with torch.no_grad():  # as an optimizer step does
        for p in agent.denoiser.parameters():
            p.mul_(0.5)
    env.reset(*contexts(2, "cuda"))
    graphed, *_ = env.step(torch.zeros(2, dtype=torch.long, device="cuda"), noise=noise)
    assert env._graph is not first
    env.cuda_graphs = False
    env.reset(*contexts(2, "cuda"))
    plain, *_ = env.step(torch.zeros(2, dtype=torch.long, device="cuda"), noise=noise)
    assert psnr(graphed, plain) > 40
