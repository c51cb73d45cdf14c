"""Where a run's real experience comes from, and where its agent is tested (used by training.loop).

    RealGame      rank 0 of a run on a game: the initial random collection, one collection per epoch, and the
                  test and final episodes (the protocol's evaluator, `training.evaluate`, as `dreamarcade eval`)
    Recordings    static-dataset mode: the user's folder of episodes; nothing is collected or played
    OtherRank     ranks > 0 of a data-parallel run: rank 0 collects, the others read the store after it

Collection tops the episode store up to a target instead of adding a fixed number of steps, so a run that
is killed and resumed any number of times spends the same real-step budget: the initial collection's target
is `initial_steps_min` real steps (then the rare-reward rule, diamond.md 4.1); epoch e's is the initial
collection's size + e * `collect_steps_per_epoch`, at most `total_real_steps`. The store holds every step
collected, unfinished episodes included (as the reference), so what it holds is what was spent.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training.episode_store import EpisodeStore
from training.presets import TrainConfig
from training.segments import iterate_segments
from training.updates import denoiser_test_loss, rew_end_test_loss


class RealGame:
    """Rank 0's real game: collection into `store` and test episodes, for the game of `cfg`."""

    def __init__(self, cfg: TrainConfig, agent, store: EpisodeStore, run_path: Path, device, progress: bool):
        from training.collect import ActorCriticPolicy, Collector, VecSource

        self.cfg, self.agent, self.store, self.device, self.progress = cfg, agent, store, device, progress
        self.test_store_path = run_path / "test_store"
        # seeded by what the store holds, so that a resumed run plays new games rather than replaying stored ones
        seed = cfg.seed + store.num_episodes
        self.collector = Collector(VecSource(cfg.game, 1, train=True), store, seed=seed, store_partial=True)
        self.policy = ActorCriticPolicy(agent.actor_critic, agent.num_actions, cfg.epsilon, seed=seed, device=device)

    def start(self, counters) -> dict:
        """Epoch 0: random play until `initial_steps_min` real steps are stored, then on until the two rarest
        reward signs are seen `initial_min_rare_rewards` times or `initial_steps_max` steps (diamond.md 4.1);
        sets the run's number of epochs. -> the metrics of epoch 0."""
        from training.collect import RandomPolicy

        cfg, store = self.cfg, self.store
        policy = RandomPolicy(self.collector.source.num_actions, seed=cfg.seed + store.num_episodes)
        with tqdm(total=cfg.initial_steps_min, initial=min(store.num_steps, cfg.initial_steps_min),
                  desc="initial collection", disable=not self.progress) as bar:
            while store.num_steps < cfg.initial_steps_min:
                self.collector.collect(policy, num_steps=min(100, cfg.initial_steps_min - store.num_steps))
                bar.update(min(store.num_steps, cfg.initial_steps_min) - bar.n)
            while store.num_steps < cfg.initial_steps_max and _rare_rewards(store) < cfg.initial_min_rare_rewards:
                self.collector.collect(policy, num_steps=min(100, cfg.initial_steps_max - store.num_steps))
        counters.initial_steps = store.num_steps
        per_epoch = max(1, cfg.collect_steps_per_epoch)
        counters.num_collect_epochs = max(0, math.ceil((cfg.total_real_steps - store.num_steps) / per_epoch))
        counters.num_epochs = counters.num_collect_epochs + cfg.num_final_epochs
        return _store_metrics(store, counters) | {"collect/return_mean": float(np.mean(store.returns()))}

    def collect(self, counters, epoch: int) -> dict:
        """Tops the store up to epoch `epoch`'s target (nothing after the collection epochs)."""
        if epoch > counters.num_collect_epochs:
            return {}
        target = min(self.cfg.total_real_steps, counters.initial_steps + epoch * self.cfg.collect_steps_per_epoch)
        out = {}
        if self.store.num_steps < target:
            stats = self.collector.collect(self.policy, num_steps=target - self.store.num_steps)
            if stats.returns:
                out["collect/return_mean"] = float(np.mean(stats.returns))
        return _store_metrics(self.store, counters) | out

    def evaluate(self, episodes: int, seed: int, tag: str) -> dict:
        """`episodes` test episodes under the protocol, seeded with `seed` (what `dreamarcade eval --seed`
        plays); for tag "test" also the world model's losses on them. -> {tag/return_mean, ...}."""
        from training.evaluate import evaluate

        shutil.rmtree(self.test_store_path, ignore_errors=True)
        test_store = EpisodeStore(self.test_store_path) if tag == "test" else None
        result = evaluate(self.agent, self.cfg.game, episodes=episodes, seed=seed, device=self.device,
                          store=test_store)
        out = {f"{tag}/return_mean": result["mean_return"], f"{tag}/return_std": result["std_return"],
               f"{tag}/episodes": result["episodes"]}
        if test_store is not None:
            n = self.agent.denoiser.cfg.num_steps_conditioning
            batches = lambda seq: (b.to(self.device) for b in iterate_segments(test_store, seq, 32))
            # the test losses draw noise: from a forked stream, so that testing leaves training's as it was
            with torch.random.fork_rng(devices=[self.device] if torch.device(self.device).type == "cuda" else []):
                out |= {f"denoiser/test/{k}": v for k, v in denoiser_test_loss(self.agent, batches(n + 2)).items()}
                out |= {f"rew_end/test/{k}": v
                        for k, v in rew_end_test_loss(self.agent, batches(self.cfg.rew_end.seq_length)).items()}
        return out

    def close(self) -> None:
        self.collector.close()


class Recordings:
    """Static-dataset mode: the episodes in the user's folder; as many epochs as the preset's full run."""

    def __init__(self, cfg: TrainConfig, store: EpisodeStore):
        self.cfg, self.store = cfg, store

    def start(self, counters) -> dict:
        counters.num_collect_epochs, counters.num_epochs = 0, self.cfg.num_collect_epochs + self.cfg.num_final_epochs
        return {"dataset/steps": self.store.num_steps, "dataset/episodes": self.store.num_episodes}

    def collect(self, counters, epoch: int) -> dict:
        return {}

    def evaluate(self, episodes: int, seed: int, tag: str) -> dict:
        return {}

    def close(self) -> None:
        pass


class OtherRank(Recordings):
    """Ranks > 0: rank 0 collects, evaluates and sets the counters (broadcast by the loop)."""

    def start(self, counters) -> dict:
        return {}


def _store_metrics(store: EpisodeStore, counters) -> dict:
    counters.real_steps, counters.real_episodes = store.num_steps, store.num_episodes
    return {"collect/real_steps": store.num_steps, "collect/episodes": store.num_episodes}


def _rare_rewards(store: EpisodeStore) -> int:
    """Sum of the two smallest counts of sign(rew) in {-1, 0, 1} over the store."""
    counts = np.zeros(3, dtype=np.int64)
    for ep in store:
        counts += np.bincount(np.sign(ep.rew).astype(np.int64) + 1, minlength=3)
    return int(np.sort(counts)[:2].sum())
