"""The world-model step as a CUDA graph (`model.cuda_graphs`): the same frames and rewards as the fast path it
captures. The graph itself needs a GPU (these tests skip without one); its sampler runs anywhere."""
import math

import pytest
import torch

from model import Agent, sample_next_obs
from model.cuda_graphs import fast_step
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


def test_the_captured_step_is_the_fast_paths_step():
    """What the graph captures (`fast_step`) computes the fast path's step: the same frame, logits and state as
    WorldModelEnv's bfloat16 step on the same buffers and noise (on any device; here without a graph)."""
    agent = make_agent()
    env = WorldModelEnv(agent, generator=torch.Generator().manual_seed(0), precision="bfloat16")
    env.reset(*contexts(2))
    env.act_buffer[:, -1] = torch.tensor([1, 3])
    obs, act, state = env.obs_buffer.clone(), env.act_buffer.clone(), tuple(s.clone() for s in env.rew_end_state)
    noise = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    next_obs, rew_logits, end_logits, h, c = fast_step(env._fast, env._sigmas, obs, act, noise, state)
    frame, _, _, info = env.step(torch.tensor([1, 3]), noise=noise)
    assert torch.equal(next_obs, frame) and not torch.equal(frame, noise.clamp(-1, 1))
    assert torch.equal(rew_logits, info["rew_logits"]) and torch.equal(end_logits, info["end_logits"])
    assert torch.equal(h, env.rew_end_state[0]) and torch.equal(c, env.rew_end_state[1])
    assert psnr(next_obs, sample_next_obs(agent.denoiser, obs, act, env._sigmas, noise=noise)) > 40  # float32's


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
