"""Imagination: batched imagined games from real contexts, the actor-critic update, and the gymnasium envs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from model import Agent
from model.presets import tiny
from training.collect import Collector, RandomPolicy, VecSource
from training.episode_store import EpisodeStore
from training.imagination import Imagination, actor_critic_update
import training.toy_env  # noqa: F401  (registers dreamarcade/Catch-v0)
from training.imagined_env import ImaginedGameEnv, ImaginedGameVectorEnv, store_contexts
from training.optim import ModelOptimizer, OptimConfig
from training.presets import ImaginationConfig

A = 3


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def agent():
    torch.manual_seed(0)
    return Agent(tiny(A))


@pytest.fixture(scope="module")
def catch_store(tmp_path_factory):
    """A few real Catch episodes (3 steps each), collected by the project's collector."""
    store = EpisodeStore(tmp_path_factory.mktemp("catch_store"))
    collector = Collector(VecSource("dreamarcade/Catch-v0", 2, train=True), store, seed=0)
    collector.collect(RandomPolicy(A, seed=0), num_episodes=8)
    collector.close()
    return store


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


def test_actor_critic_update_learns_something(agent):
    im = Imagination(agent, random_contexts, num_envs=4, horizon=3, denoising_steps=1)
    opt = ModelOptimizer(agent.actor_critic, OptimConfig(lr=1e-3, weight_decay=0.0, max_grad_norm=100, warmup_steps=1))
    before = [p.detach().clone() for p in agent.actor_critic.parameters()]
    state = None
    for _ in range(2):
        metrics, state = actor_critic_update(agent, im, opt, ImaginationConfig(horizon=3), state)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert {"loss_actions", "loss_values", "loss_entropy", "policy_entropy_bits"} <= set(metrics)
    assert state[0].shape == (4, agent.actor_critic.lstm.hidden_size) and not state[0].requires_grad
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.actor_critic.parameters()))


def test_gym_env_passes_env_checker(agent, catch_store):
    env = ImaginedGameEnv(agent, store_contexts(catch_store), max_episode_steps=5, denoising_steps=1)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    for _ in range(5):
        obs, rew, terminated, truncated, _ = env.step(env.action_space.sample())
        assert rew in (-1.0, 0.0, 1.0)
        if terminated or truncated:
            break
    assert terminated or truncated
    with pytest.raises(ValueError, match="invalid action"):
        env.step(A)


def test_vector_env_autoresets(agent, catch_store):
    env = ImaginedGameVectorEnv(agent, store_contexts(catch_store), num_envs=3, max_episode_steps=2, denoising_steps=1)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 64, 64, 3) and env.observation_space.contains(obs)
    obs1, _ = env.reset(seed=0)
    assert np.array_equal(obs, obs1), "same seed, same start"
    died = np.zeros(3, dtype=bool)
    for t in range(2):
        obs, rew, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and rew.shape == (3,)
        dead = terminated | truncated
        if dead.any():
            assert np.array_equal(info["_final_obs"], dead) and info["final_obs"].shape == (3, 64, 64, 3)
        died |= dead
    assert died.all(), "every game ends or is cut within max_episode_steps"
