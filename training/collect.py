"""Collection: N environments stepped together by a policy, completed episodes written to an EpisodeStore.

Atari games run in ale-py's C++ vector env (`make_atari_vector_env`: emulation, max-pool and resize in
threads, no Python per env step); any other gymnasium image game runs in a gymnasium SyncVectorEnv of
`make_env`. Both use gymnasium 1.x next-step autoreset: after game over, the next `step` only resets that
env; the collector does not record that call as a transition. Life loss ends a training episode without
resetting the game (the next episode starts from the post-loss frame), as the reference.

A `Collector` keeps its envs, observations, policy state and unfinished episodes between `collect` calls,
so `collect(num_steps=100)` once per epoch continues the same games, like the reference. Episode files are
written by a background thread (the fsync overlaps emulation); `collect` returns once they are all stored.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import gymnasium as gym
import numpy as np
import torch

from model.pixels import to_float
from training.atari_env import ImageObs, is_ale_id, make_atari_vector_env, make_env
from training.episode_store import Episode, EpisodeStore
from training.games import is_atari_game


# --- policies ---------------------------------------------------------------------------------------------
class RandomPolicy:
    """Uniform random actions. act(obs (N, H, W, 3) uint8) -> (N,) int64."""

    def __init__(self, num_actions: int, seed: int | None = None):
        self.num_actions = num_actions
        self.rng = np.random.default_rng(seed)

    def reset(self, first: np.ndarray) -> None:
        pass

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.rng.integers(self.num_actions, size=len(obs))


class ActorCriticPolicy:
    """Samples from `ac(obs (N, 3, H, W) float in [-1, 1], state) -> (logits, value, state)`; with probability
    epsilon the actions of all envs become uniform random (as the reference). Recurrent state is zeroed for
    envs that start a new episode."""

    def __init__(self, ac: torch.nn.Module, num_actions: int, epsilon: float = 0.0, seed: int | None = None,
                 device: torch.device | str = "cpu"):
        self.ac = ac
        self.num_actions = num_actions
        self.epsilon = epsilon
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(self.rng.integers(2**62)))
        self.state = None

    def reset(self, first: np.ndarray) -> None:
        if self.state is not None and first.any():
            keep = torch.from_numpy(~first).to(self.device)
            self.state = _mask_state(self.state, keep)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        x = to_float(torch.from_numpy(obs).to(self.device).permute(0, 3, 1, 2))
        logits, _, self.state = self.ac(x, self.state)
        act = torch.multinomial(logits.float().softmax(-1), 1, generator=self.generator).squeeze(1).cpu().numpy()
        if self.epsilon > 0 and self.rng.random() < self.epsilon:
            act = self.rng.integers(self.num_actions, size=len(obs))
        return act


def _mask_state(state, keep: torch.Tensor):
    if isinstance(state, torch.Tensor):
        return state * keep.view(-1, *([1] * (state.dim() - 1))).to(state.dtype)
    return type(state)(_mask_state(s, keep) for s in state)


# --- environments -----------------------------------------------------------------------------------------
class VecSource:
    """N envs behind one interface: `reset(seed) -> obs (N, H, W, 3) uint8` and
    `step(act) -> obs, rew (N,) float32, end (N,) bool, trunc (N,) bool, over (N,) bool` where `over` means
    the env resets on its next step (game over or time limit)."""

    def __init__(self, game: str | Callable[[], gym.Env], num_envs: int, train: bool, num_threads: int = 0):
        """game: an Atari 100k name, a gymnasium id, or a function returning a gymnasium env with uint8 image
        observations and discrete actions (resized to 64x64 RGB)."""
        self.num_envs = num_envs
        self.train = train
        self.atari = isinstance(game, str) and (is_atari_game(game) or is_ale_id(game))
        if self.atari:
            self.env = make_atari_vector_env(game, num_envs, num_threads=num_threads)
        elif isinstance(game, str):
            self.env = gym.vector.SyncVectorEnv([lambda: make_env(game, train) for _ in range(num_envs)])
        else:
            self.env = gym.vector.SyncVectorEnv([lambda: ImageObs(game()) for _ in range(num_envs)])
        self.num_actions = int(self.env.single_action_space.n)
        self._lives = np.zeros(num_envs, dtype=np.int64)

    def reset(self, seed: int | None = None) -> np.ndarray:
        obs, info = self.env.reset(seed=seed)
        if self.atari:
            self._lives = np.asarray(info["lives"], dtype=np.int64).copy()
            obs = obs[:, 0]
        return np.asarray(obs)

    def step(self, act: np.ndarray):
        obs, rew, term, trunc, info = self.env.step(np.asarray(act, dtype=np.int64))
        term, trunc = np.asarray(term, dtype=bool), np.asarray(trunc, dtype=bool)
        over = term | trunc
        end = term
        if self.atari:
            obs = obs[:, 0]
            lives = np.asarray(info["lives"], dtype=np.int64)
            if self.train:  # life loss ends a training episode; the game goes on (not `over`)
                end = term | (lives < self._lives)
            self._lives = lives.copy()
        return np.asarray(obs), np.asarray(rew, dtype=np.float32), end, trunc & ~end, over

    def close(self) -> None:
        self.env.close()


# --- collector --------------------------------------------------------------------------------------------
@dataclass
class _Buffer:
    obs: list = field(default_factory=list)
    act: list = field(default_factory=list)
    rew: list = field(default_factory=list)
    end: list = field(default_factory=list)
    trunc: list = field(default_factory=list)


@dataclass
class CollectStats:
    steps: int
    episodes: int
    returns: list[float]
    lengths: list[int]
    seconds: float


class Collector:
    """Steps `source` with a policy and appends each completed episode to `store` (if given).

    collect(policy, num_steps=...) counts real transitions over all envs (it may overshoot by < N);
    collect(policy, num_episodes=...) has env i complete its share (num_episodes // N, +1 for the first
    num_episodes % N envs) and keeps only those, so that short games are not favoured.
    """

    def __init__(self, source: VecSource, store: EpisodeStore | None, seed: int | None = None,
                 store_partial: bool = False):
        """store_partial: at the end of each `collect(num_steps=...)`, also store every unfinished episode
        (its final_obs = the current frame), rewriting it as it grows, so the sampler sees the newest steps
        (the reference does this for the training env). Otherwise only completed episodes are stored."""
        self.source = source
        self.store = store
        self.seed = seed
        self.store_partial = store_partial
        self.obs: np.ndarray | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="episode-writer")
        self._pending: list[Future] = []

    def reset(self) -> None:
        """Start every env on a fresh game (unfinished episodes are dropped)."""
        n = self.source.num_envs
        self.obs = self.source.reset(seed=self.seed)
        self.seed = None if self.seed is None else self.seed + n  # the next reset plays other games
        self._bufs = [_Buffer() for _ in range(n)]
        self._partial: list[int | None] = [None] * n  # store index of each env's unfinished episode
        self._first = np.ones(n, dtype=bool)
        self._resetting = np.zeros(n, dtype=bool)

    def collect(self, policy, num_steps: int | None = None, num_episodes: int | None = None) -> CollectStats:
        if (num_steps is None) == (num_episodes is None):
            raise ValueError("give exactly one of num_steps and num_episodes")
        if self.obs is None:
            self.reset()
        t0 = time.perf_counter()
        steps, returns, lengths = 0, [], []
        obs, bufs = self.obs, self._bufs
        quota = None
        if num_episodes is not None:  # a fixed number per env: stopping at the first N finished would favour short games
            n = self.source.num_envs
            quota = np.full(n, num_episodes // n) + (np.arange(n) < num_episodes % n)
        while (steps < num_steps) if quota is None else quota.any():
            if self._first.any():
                policy.reset(self._first)
            act = np.asarray(policy.act(obs))
            next_obs, rew, end, trunc, over = self.source.step(act)
            real = ~self._resetting
            done = real & (end | trunc)
            for i in np.flatnonzero(real):
                b = bufs[i]
                b.obs.append(obs[i].copy())
                b.act.append(act[i])
                b.rew.append(rew[i])
                b.end.append(end[i])
                b.trunc.append(trunc[i])
            for i in np.flatnonzero(done):
                b, bufs[i] = bufs[i], _Buffer()
                if quota is not None:
                    if quota[i] == 0:
                        continue
                    quota[i] -= 1
                returns.append(float(np.sum(b.rew, dtype=np.float32)))
                lengths.append(len(b.act))
                if self.store is not None:  # building and writing the episode happen in the writer thread
                    self._pending.append(self._writer.submit(self._store_episode, b, next_obs[i].copy(),
                                                             self._partial[i]))
                    self._partial[i] = None
            steps += int(real.sum())
            self._first = (done & ~over) | self._resetting
            self._resetting = real & over
            obs = next_obs
        self.obs = obs
        self.flush()
        if self.store_partial and self.store is not None and quota is None:
            for i, b in enumerate(bufs):
                if b.act:
                    ep = _to_episode(b, obs[i])
                    if self._partial[i] is None:
                        self._partial[i] = self.store.add(ep)
                    else:
                        self.store.replace(self._partial[i], ep)
        return CollectStats(steps, len(returns), returns, lengths, time.perf_counter() - t0)

    def _store_episode(self, b: _Buffer, final_obs: np.ndarray, partial_idx: int | None) -> None:
        ep = _to_episode(b, final_obs)
        if partial_idx is None:
            self.store.add(ep, sync_dir=False)
        else:
            self.store.replace(partial_idx, ep)

    def flush(self) -> None:
        """Waits until every completed episode is on disk (re-raising a write error)."""
        pending, self._pending = self._pending, []
        for f in pending:
            f.result()
        if pending and self.store is not None:
            self.store.sync()

    def close(self) -> None:
        self.flush()
        self._writer.shutdown()
        self.source.close()


def _to_episode(b: _Buffer, final_obs: np.ndarray) -> Episode:
    obs = np.stack(b.obs).transpose(0, 3, 1, 2)  # (T, H, W, 3) -> (T, 3, H, W), the stored layout
    return Episode(obs=np.ascontiguousarray(obs), act=np.array(b.act), rew=np.array(b.rew), end=np.array(b.end),
                   trunc=np.array(b.trunc), final_obs=np.ascontiguousarray(final_obs.transpose(2, 0, 1)))


def measure_collect_steps_per_s(game: str = "Breakout", num_envs: int = 8, num_steps: int = 4000,
                                repeats: int = 3, seed: int = 0) -> float:
    """Median real env steps/s through the full training env into a temporary store (random policy)."""
    with tempfile.TemporaryDirectory(prefix="dreamarcade-collect-") as tmp:
        source = VecSource(game, num_envs, train=True)
        collector = Collector(source, EpisodeStore(tmp), seed=seed)
        policy = RandomPolicy(source.num_actions, seed=seed)
        try:
            collector.collect(policy, num_steps=num_steps // 4)  # warm-up
            rates = []
            for _ in range(repeats):
                stats = collector.collect(policy, num_steps=num_steps)
                rates.append(stats.steps / stats.seconds)
        finally:
            collector.close()
    return statistics.median(rates)
