"""The imagined game as gymnasium environments, so that any RL library can train inside the world model.

`ImaginedGameEnv` (one game) and `ImaginedGameVectorEnv` (B games, one batched world-model step) look like
the real training env: observations (64, 64, 3) uint8 HWC, `Discrete(A)` actions, rewards in {-1, 0, 1}
and ends sampled from the reward/end model, episodes truncated after `max_episode_steps`. Each episode starts
from a real 4-frame context drawn by `contexts` (e.g. `store_contexts(EpisodeStore(...))`).
"""
from __future__ import annotations

from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space
from torch import Tensor

from model.pixels import to_uint8
from model.sampler import SamplerConfig
from model.world_model_env import WorldModelEnv
from training.episode_store import EpisodeStore
from training.segments import IMAGINATION_INIT_LEN, make_batch, sample_window

# (n, rng) -> (obs (n, 4, 3, H, W) float in [-1, 1], act (n, 4) long)
Contexts = Callable[[int, np.random.Generator], tuple[Tensor, Tensor]]


def store_contexts(store: EpisodeStore) -> Contexts:
    """Real starting contexts from an episode store: episodes drawn proportionally to their length."""

    def draw(n: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        lengths = store.lengths
        if len(lengths) == 0:
            raise ValueError(f"{store.path}: no episodes to start imagined games from")
        episodes = rng.choice(len(lengths), size=n, p=lengths / lengths.sum())
        windows = [(int(e), *sample_window(rng, int(lengths[e]), IMAGINATION_INIT_LEN, False)) for e in episodes]
        batch = make_batch(store, windows)
        return batch.obs, batch.act

    return draw


def _to_hwc(frames: Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return to_uint8(frames).permute(0, 2, 3, 1).cpu().numpy()


class _Games:
    """B imagined games on a WorldModelEnv with their own seeded randomness (shared by both env classes)."""

    def __init__(self, agent, contexts: Contexts, max_episode_steps: int | None, denoising_steps: int) -> None:
        self.agent, self.contexts, self.max_episode_steps = agent.eval(), contexts, max_episode_steps
        self.generator = torch.Generator(agent.device)
        self.wm = WorldModelEnv(agent, SamplerConfig(num_steps_denoising=denoising_steps), generator=self.generator)
        self.ep_len = None

    def start(self, n: int, rng: np.random.Generator) -> np.ndarray:
        self.generator.manual_seed(int(rng.integers(2**62)))
        obs, act = self.contexts(n, rng)
        self.ep_len = np.zeros(n, dtype=np.int64)
        return _to_hwc(self.wm.reset(obs, act))

    def restart(self, dead: np.ndarray, rng: np.random.Generator) -> None:
        obs, act = self.contexts(int(dead.sum()), rng)
        self.wm.reset_where(torch.from_numpy(dead), obs, act)
        self.ep_len[dead] = 0

    def step(self, act: np.ndarray):
        next_obs, rew, end, _ = self.wm.step(torch.as_tensor(np.asarray(act), dtype=torch.long))
        self.ep_len += 1
        terminated = end.cpu().numpy().astype(bool)
        limit = self.max_episode_steps
        truncated = ~terminated & (self.ep_len >= limit) if limit else np.zeros_like(terminated)
        return _to_hwc(next_obs), rew.cpu().numpy().astype(np.float64), terminated, truncated


class ImaginedGameEnv(gym.Env):
    """One imagined game. agent: a model.Agent; contexts: see `store_contexts`."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, agent, contexts: Contexts, max_episode_steps: int | None = 1000, denoising_steps: int = 3,
                 render_mode: str | None = None) -> None:
        size = agent.config.img_size
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(agent.num_actions)
        self.render_mode = render_mode
        self._games = _Games(agent, contexts, max_episode_steps, denoising_steps)
        self._frame = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._frame = self._games.start(1, self.np_random)[0]
        return self._frame, {}

    def step(self, action):
        if self._frame is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"invalid action {action!r}: expected an int in [0, {self.action_space.n})")
        obs, rew, terminated, truncated = self._games.step(np.array([int(action)]))
        self._frame = obs[0]
        return self._frame, float(rew[0]), bool(terminated[0]), bool(truncated[0]), {}

    def render(self):
        return self._frame


class ImaginedGameVectorEnv(gym.vector.VectorEnv):
    """B imagined games stepped together; same-step autoreset: a finished game restarts from a new real context
    in the same `step`, its last frame in `info["final_obs"]` (where `info["_final_obs"]`)."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, agent, contexts: Contexts, num_envs: int, max_episode_steps: int | None = 1000,
                 denoising_steps: int = 3) -> None:
        size = agent.config.img_size
        self.num_envs = num_envs
        self.single_observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.single_action_space = gym.spaces.Discrete(agent.num_actions)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._games = _Games(agent, contexts, max_episode_steps, denoising_steps)
        self._np_random = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)  # seeds self.np_random
        return self._games.start(self.num_envs, self.np_random), {}

    def step(self, actions):
        if self._games.ep_len is None:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not self.action_space.contains(actions.astype(np.int64)):
            raise ValueError(f"actions must be {self.num_envs} ints in [0, {self.single_action_space.n})")
        obs, rew, terminated, truncated = self._games.step(actions)
        info = {}
        dead = terminated | truncated
        if dead.any():
            info = {"final_obs": np.where(dead[:, None, None, None], obs, 0).astype(np.uint8), "_final_obs": dead}
            self._games.restart(dead, self.np_random)
            obs = obs.copy()
            obs[dead] = _to_hwc(self._games.wm.obs[torch.from_numpy(dead).to(self._games.wm.device)])
        return obs, rew, terminated, truncated, info
