"""Imagination: batched imagined games from real contexts and the actor-critic update."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model import Agent
from model.presets import tiny
from training.imagination import Imagination, actor_critic_update
from training.optim import ModelOptimizer, OptimConfig
from training.presets import ImaginationConfig

A = 3


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def agent():
    torch.manual_seed(0)
    return Agent(tiny(A))


def random_contexts(n, generator=None):
    g = torch.Generator().manual_seed(n)
    return torch.rand(n, 4, 3, 64, 64, generator=g) * 2 - 1, torch.randint(0, A, (n, 4), generator=g)


class ContextStream:
    """Context k is always the same, however the contexts are batched."""

    def __init__(self):
        self.drawn = 0

    @staticmethod
    def context(k):
        g = torch.Generator().manual_seed(k)
        return torch.rand(4, 3, 64, 64, generator=g) * 2 - 1, torch.randint(0, A, (4,), generator=g)

    def __call__(self, n):
        obs, act = zip(*(self.context(k) for k in range(self.drawn, self.drawn + n)))
        self.drawn += n
        return torch.stack(obs), torch.stack(act)


def test_imagination_shapes_and_restarts(agent):
    im = Imagination(agent, ContextStream(), num_envs=5, horizon=2, denoising_steps=1)
    obs = im.reset()
    assert obs.shape == (5, 3, 64, 64)
    assert torch.equal(obs, torch.stack([ContextStream.context(k)[0][-1] for k in range(5)]))
    used, dead_seen = 5, torch.zeros(5, dtype=torch.bool)
    for t in range(10):  # the pool of contexts (20 here) is refilled and wraps around
        step = im.step(torch.randint(0, A, (5,)))
        assert step.obs.shape == step.final_obs.shape == (5, 3, 64, 64) and step.burnin_obs.shape == (5, 3, 3, 64, 64)
        assert step.rew.shape == step.end.shape == step.trunc.shape == (5,)
        assert set(step.rew.tolist()) <= {-1.0, 0.0, 1.0}
        assert torch.equal(step.dead, step.end | step.trunc) and not (step.end & step.trunc).any()
        # dead games restart from the next real contexts, in order; the others show the frame they imagined
        expected = step.final_obs.clone()
        for i in step.dead.nonzero().squeeze(1).tolist():
            ctx = ContextStream.context(used)[0]
            expected[i] = ctx[-1]
            assert torch.equal(step.burnin_obs[i], ctx[:-1])
            used += 1
        assert torch.equal(step.obs, expected)
        dead_seen |= step.dead
    assert dead_seen.all(), "every imagined game is cut after `horizon` steps"
    assert (im.ep_len < 2).all() and used > im.pool.capacity


def paying_world(agent, rew_class: int):
    """Sets the reward/end model's head so that every imagined step pays `rew_class` - 1 and no game ends."""
    with torch.no_grad():
        head = agent.rew_end.head
        head[0].weight.zero_()
        head[0].bias.fill_(1.0)  # the last layer sees SiLU(1) on every unit, whatever the frames
        head[2].weight.zero_()
        head[2].weight[rew_class] = head[2].weight[3] = 20.0 / (head[2].weight.shape[1] * 0.731)  # logit ~20


def test_actor_critic_update_learns_the_value_of_a_paying_world():
    """In a world model where every step pays +1 and nothing ends, a few updates make the critic (zero at
    start) value unseen frames above 0, and the actor-critic's metrics say what it saw."""
    torch.manual_seed(0)
    agent = Agent(tiny(A))
    paying_world(agent, rew_class=2)
    frames = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        assert agent.actor_critic(frames)[1].abs().max() == 0  # the critic starts at zero
    im = Imagination(agent, random_contexts, num_envs=2, horizon=2, denoising_steps=1)
    opt = ModelOptimizer(agent.actor_critic, OptimConfig(lr=1e-2, weight_decay=0.0, max_grad_norm=100, warmup_steps=1))
    state = None
    for _ in range(3):  # the first step has learning rate 0 (warm-up, as the reference)
        metrics, state = actor_critic_update(agent, im, opt, ImaginationConfig(horizon=2), state)
        assert metrics["imagined_reward"] == 2.0 and metrics["imagined_end_rate"] == 0.0  # +1 per step, no end
        assert metrics["lambda_return"] > 1.0
    assert state[0].shape == (2, agent.actor_critic.lstm.hidden_size) and not state[0].requires_grad
    with torch.no_grad():
        value = agent.actor_critic(frames)[1]
    assert (value > 0.02).all(), value


def test_imagination_sees_every_world_model_update():
    """After each denoiser or reward/end update, imagination's bfloat16 world model (`model.fast`) and the context
    pool's reward/end burn-in are re-made from the new weights: fused AdamW writes the weights without bumping
    their version counters, so the optimizer bumps them (before, a CPU run imagined with the first weights)."""
    from model.fast import weights_version
    from training.graphed_updates import graphed_denoiser_update, graphed_rew_end_update
    from app.bench import synthetic_batch

    torch.manual_seed(1)
    a = Agent(tiny(A))
    im = Imagination(a, random_contexts, num_envs=2, horizon=2, denoising_steps=1, precision="bfloat16")
    im.reset()
    im.step(torch.zeros(2, dtype=torch.long))
    fast = im.wm._fast
    for model, make, seq in (("denoiser", graphed_denoiser_update, 6), ("rew_end", graphed_rew_end_update, 19)):
        net = getattr(a, model)
        opt = ModelOptimizer(net, OptimConfig(warmup_steps=1))
        update = make(a, opt)
        update(synthetic_batch(2, seq, 64, A, seed=0))  # learning rate 0; its weights go channels-last (new storage)
        im.step(torch.zeros(2, dtype=torch.long))
        copy_key, pool_key = weights_version(net), weights_version(a.rew_end)
        update(synthetic_batch(2, seq, 64, A, seed=1))  # in place: same storage, new values
        assert weights_version(net) != copy_key
        im.step(torch.zeros(2, dtype=torch.long))  # syncs the fast copy before stepping
        inner = net.inner_model if model == "denoiser" else net
        copied = getattr(fast, model).net.module
        for (name, p), q in zip(inner.named_parameters(), copied.parameters()):
            assert torch.equal(q, p.detach().to(torch.bfloat16)), name  # the updated weights, not the first ones
        if model == "rew_end":
            assert weights_version(a.rew_end) != pool_key  # the pool burns its contexts in again
