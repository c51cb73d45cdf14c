"""What a training run holds while it runs, and how it is saved and restored (used by training.loop).

A `Session` owns the agent, one optimizer per model, the segment samplers, the imagination, the collector and
the counters; `Session.open` builds them for a new run or restores them from the run's checkpoint.
"""
from __future__ import annotations

import dataclasses
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from tqdm import tqdm

from model.agent import Agent, AgentConfig
from training.ddp import World, average_gradients, broadcast_module
from training.episode_store import EpisodeStore
from training.imagination import Imagination
from training.optim import ModelOptimizer
from training.presets import TrainConfig, agent_config
from training.run_dir import RunDir
from training.segments import SegmentSampler, iterate_segments
from training.toy_env import toy_env_id
from training.updates import denoiser_test_loss, rew_end_test_loss

CHECKPOINT_VERSION = 1
MODELS = ("denoiser", "rew_end", "actor_critic")


@dataclass
class Counters:
    epoch: int = 0  # last completed epoch (0: initial collection not done yet)
    num_epochs: int = 0  # total, fixed after the initial collection (diamond.md 4.1)
    num_collect_epochs: int = 0
    real_steps: int = 0  # real transitions in the episode store
    real_episodes: int = 0
    updates: dict = field(default_factory=lambda: {m: 0 for m in MODELS})
    seconds: float = 0.0  # training time over all sessions of this run


class Session:
    def __init__(self, cfg: TrainConfig, agent_cfg: AgentConfig, run: RunDir, world: World,
                 dataset: str | None, progress: bool) -> None:
        self.cfg, self.run, self.world, self.dataset = cfg, run, world, dataset
        self.progress = progress and world.is_main
        self.counters = Counters()
        dev = world.device
        _seed_everything(cfg.seed + world.rank)
        self.agent = Agent(agent_cfg).to(dev)
        sync = partial(average_gradients, world=world) if world.distributed else None
        self.optims = {m: ModelOptimizer(getattr(self.agent, m), getattr(cfg, m).optim, sync) for m in MODELS}
        self.store = EpisodeStore(dataset, static=True) if dataset else EpisodeStore(run.store_path)
        weights = tuple(cfg.sample_weights) or None
        if dataset:
            weights = None  # as the reference's static-dataset mode: length-proportional sampling
        self.samplers = {
            m: SegmentSampler(self.store, world.share(getattr(cfg, m).batch_size), getattr(cfg, m).seq_length,
                              can_sample_beyond_end=(m == "rew_end"), sample_weights=weights, rank=world.rank,
                              world_size=world.world_size, seed=cfg.seed * 1000 + world.rank)
            for m in MODELS}
        self.generator = torch.Generator(dev)
        self.generator.manual_seed(cfg.seed + 7919 * world.rank)
        self.imagination = self.ac_state = None
        if not dataset:
            self.imagination = Imagination(self.agent, self._contexts, world.share(cfg.actor_critic.batch_size),
                                           cfg.imagination.horizon, cfg.imagination.denoising_steps, self.generator)
        self.collector = self.policy = None
        if world.is_main and not dataset:
            from training.collect import ActorCriticPolicy, Collector, VecSource

            self.env_name = toy_env_id(cfg.game) or cfg.game
            self.collector = Collector(VecSource(self.env_name, 1, train=True), self.store, seed=cfg.seed)
            self.policy = ActorCriticPolicy(self.agent.actor_critic, agent_cfg.num_actions, cfg.epsilon,
                                            seed=cfg.seed, device=dev)
        self._t_start = time.perf_counter()
        self._bar = None
        self.last_epoch = 0  # where this session stops (training.loop sets it: --epochs or the run's end)
        self._update_s: dict[str, tuple[float, int]] = {}  # model -> (seconds, updates) of its last epoch

    # --- building and restoring -----------------------------------------------------------------------
    @classmethod
    def open(cls, cfg: TrainConfig | None, run: RunDir, world: World, resume: bool, dataset: str | None,
             progress: bool) -> "Session":
        if run.is_finished:
            raise ValueError(f"{run.path}: this run is finished (see {run.finished_path}); nothing to do")
        if resume:
            if not run.config_path.exists():
                raise FileNotFoundError(f"{run.path}: no training run to resume (no config.json)")
            saved = run.read_config()
            cfg, dataset = TrainConfig.from_dict(saved["train"]), saved.get("dataset")
            agent_cfg = AgentConfig.from_dict(saved["agent"])
        else:
            if run.config_path.exists():
                raise ValueError(f"{run.path} already holds a training run: continue it with --resume, "
                                 "or choose another --run-dir")
            if cfg is None:
                raise ValueError("a new run needs a training config")
            if cfg.seed is None:
                cfg = dataclasses.replace(cfg, seed=random.SystemRandom().randrange(2**31))
            agent_cfg = agent_config(cfg, _num_actions(cfg.game, dataset))
            if world.is_main:
                run.write_config({"train": cfg.to_dict(), "agent": agent_cfg.to_dict(), "dataset": dataset,
                                  "world_size": world.world_size})
        s = cls(cfg, agent_cfg, run, world, dataset, progress)
        ckpt = run.load_checkpoint() if resume else None
        if ckpt is not None:
            s.load_state_dict(ckpt)
        broadcast_module(s.agent, world)
        s.counters.real_steps, s.counters.real_episodes = s.store.num_steps, s.store.num_episodes
        return s

    def state_dict(self) -> dict:
        return {
            "version": CHECKPOINT_VERSION,
            "agent": self.agent.state_dict(),
            "optimizers": {m: o.state_dict() for m, o in self.optims.items()},
            "counters": dataclasses.asdict(self.counters),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                    "numpy": _numpy_state_to_torch(np.random.get_state()),
                    "generator": self.generator.get_state(),
                    "samplers": {m: s.rng.bit_generator.state for m, s in self.samplers.items()},
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }

    def load_state_dict(self, ckpt: dict) -> None:
        if ckpt.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{self.run.checkpoint_path}: checkpoint version {ckpt.get('version')!r}, "
                             f"expected {CHECKPOINT_VERSION}")
        self.agent.load_state_dict(ckpt["agent"])
        for m, o in self.optims.items():
            o.load_state_dict(ckpt["optimizers"][m])
        self.counters = Counters(**ckpt["counters"])
        if self.world.is_main:  # other ranks keep their own streams (seeded by rank and epoch)
            rng = ckpt["rng"]
            torch.set_rng_state(rng["torch"])
            random.setstate(_tuplify(rng["python"]))
            np.random.set_state(_numpy_state_from_torch(rng["numpy"]))
            self.generator.set_state(rng["generator"].to(self.generator.get_state().device))
            for m, s in self.samplers.items():
                s.rng.bit_generator.state = rng["samplers"][m]
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
        else:
            _seed_everything(self.cfg.seed + self.world.rank + 104729 * self.counters.epoch)

    # --- phases ---------------------------------------------------------------------------------------
    def initial_collection(self) -> None:
        """Epoch 0: random play until `initial_steps_min` real steps, then on until the two rarest reward signs
        are seen `initial_min_rare_rewards` times or `initial_steps_max` steps (diamond.md 4.1)."""
        from training.collect import RandomPolicy

        if self.collector is None:  # ranks > 0: rank 0 collects, the counters are broadcast
            return
        cfg = self.cfg
        policy = RandomPolicy(self.collector.source.num_actions, seed=cfg.seed)
        with tqdm(total=cfg.initial_steps_min, desc="initial collection", disable=not self.progress) as bar:
            while self.store.num_steps < cfg.initial_steps_min:
                self.collector.collect(policy, num_steps=min(100, cfg.initial_steps_min - self.store.num_steps))
                bar.update(min(self.store.num_steps, cfg.initial_steps_min) - bar.n)
            while self.store.num_steps < cfg.initial_steps_max and _rare_rewards(self.store) < cfg.initial_min_rare_rewards:
                self.collector.collect(policy, num_steps=100)
        c = self.counters
        c.real_steps, c.real_episodes = self.store.num_steps, self.store.num_episodes
        per_epoch = max(1, cfg.collect_steps_per_epoch)
        c.num_collect_epochs = max(0, math.ceil((cfg.total_real_steps - c.real_steps) / per_epoch))
        c.num_epochs = c.num_collect_epochs + cfg.num_final_epochs
        self.save({"collect/real_steps": c.real_steps, "collect/episodes": c.real_episodes,
                   "collect/return_mean": float(np.mean(self.store.returns()))})

    def start_static(self) -> None:
        """Static-dataset mode: no collection; as many epochs as the preset's full run."""
        if self.store.num_episodes == 0:
            raise ValueError(f"{self.dataset}: no episodes (.npz files) found")
        c = self.counters
        c.num_collect_epochs, c.num_epochs = 0, self.cfg.num_collect_epochs + self.cfg.num_final_epochs
        self.save({"dataset/steps": self.store.num_steps, "dataset/episodes": self.store.num_episodes})

    def collect(self, num_steps: int) -> dict:
        stats = self.collector.collect(self.policy, num_steps=num_steps)
        self.counters.real_steps, self.counters.real_episodes = self.store.num_steps, self.store.num_episodes
        out = {"collect/real_steps": self.counters.real_steps, "collect/episodes": self.counters.real_episodes}
        if stats.returns:
            out["collect/return_mean"] = float(np.mean(stats.returns))
        return out

    def run_updates(self, model: str, epoch: int, first: bool, update) -> dict:
        """`steps_first_epoch` or `steps_per_epoch` calls of update() -> mean metrics as {model/train/key}."""
        mcfg = getattr(self.cfg, model)
        n = mcfg.steps_first_epoch if first else mcfg.steps_per_epoch
        sums: dict[str, float] = {}
        bar = tqdm(range(n), desc=f"epoch {epoch}/{self.last_epoch or self.counters.num_epochs} {model}",
                   leave=False, disable=not self.progress, dynamic_ncols=True)
        t0 = time.perf_counter()
        for _ in bar:
            m = update()
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix({k: f"{v:.3g}" for k, v in m.items() if k.startswith("loss")}, refresh=False)
        self.counters.updates[model] += n
        self._update_s[model] = (time.perf_counter() - t0, n)
        return {f"{model}/train/{k}": v / n for k, v in sums.items()} if n else {}

    def imagine_update(self, update_fn) -> dict:
        metrics, self.ac_state = update_fn(self.agent, self.imagination, self.optims["actor_critic"],
                                           self.cfg.imagination, self.ac_state)
        return metrics

    def _contexts(self, n: int):
        """n real 4-frame contexts (obs (n, 4, 3, H, W) in [-1, 1], act (n, 4)) to start imagined games from."""
        sampler = self.samplers["actor_critic"]
        sampler.batch_size = n
        batch = sampler.sample()
        return batch.obs.to(self.world.device), batch.act.to(self.world.device)

    def evaluate(self, num_episodes: int, tag: str) -> dict:
        """Full test episodes (no exploration, policy sampled) and world-model losses on them (rank 0)."""
        from training.collect import ActorCriticPolicy, Collector, VecSource

        test_store_path = self.run.path / "test_store"
        shutil.rmtree(test_store_path, ignore_errors=True)
        test_store = EpisodeStore(test_store_path)
        source = VecSource(self.env_name, min(num_episodes, 16), train=False)
        collector = Collector(source, test_store, seed=self.cfg.seed + 1_000_003 + self.counters.epoch)
        policy = ActorCriticPolicy(self.agent.actor_critic, source.num_actions, 0.0,
                                   seed=self.cfg.seed + self.counters.epoch, device=self.world.device)
        self.agent.actor_critic.eval()
        try:
            stats = collector.collect(policy, num_episodes=num_episodes)
        finally:
            collector.close()
        returns = np.asarray(stats.returns[:num_episodes])
        out = {f"{tag}/return_mean": float(returns.mean()), f"{tag}/return_std": float(returns.std()),
               f"{tag}/episodes": len(returns)}
        if tag == "test":
            n = self.agent.denoiser.cfg.num_steps_conditioning
            batches = lambda seq: (b.to(self.world.device) for b in iterate_segments(test_store, seq, 32))
            out |= {f"denoiser/test/{k}": v for k, v in denoiser_test_loss(self.agent, batches(n + 2)).items()}
            out |= {f"rew_end/test/{k}": v for k, v in rew_end_test_loss(self.agent, batches(self.cfg.rew_end.seq_length)).items()}
        return out

    # --- saving ---------------------------------------------------------------------------------------
    def save(self, metrics: dict) -> None:
        """Logs the epoch's metrics, then writes the checkpoint, the weights and the plots (rank 0)."""
        c = self.counters
        now = time.perf_counter()
        c.seconds += now - self._t_start
        self._t_start = now
        if not self.world.is_main:
            return
        metrics = {**metrics, "counters/real_steps": c.real_steps, "time/total_s": c.seconds,
                   **{f"counters/{m}_updates": n for m, n in c.updates.items()}}
        self.run.log(metrics, c.epoch)
        self.run.save_checkpoint(self.state_dict())
        self.run.save_weights(self.agent, {"game": self.cfg.game, "epoch": c.epoch, "real_steps": c.real_steps,
                                           "source": "dreamarcade train", "preset_model": self.cfg.model})
        self.run.plot()
        self._report(metrics)

    def _report(self, metrics: dict) -> None:
        c = self.counters
        if c.epoch == 0:
            return
        last = self.last_epoch or c.num_epochs
        epoch_s = metrics.get("time/epoch_s", c.seconds / c.epoch) + time.perf_counter() - self._t_start  # + saving
        left = (last - c.epoch) * self._epoch_estimate(epoch_s)
        shown = {k: v for k, v in metrics.items() if "/loss" in k and "test" not in k or k.endswith("return_mean")}
        text = " ".join(f"{k.split('/')[0][:8]}.{k.split('/')[-1]}={v:.3g}" for k, v in shown.items())
        of = f" (of {c.num_epochs})" if last != c.num_epochs else ""
        line = (f"epoch {c.epoch}/{last}{of} steps {c.real_steps} | {text} | {_hms(c.seconds)} elapsed, "
                f"~{_hms(left)} left")
        if self.progress:
            tqdm.write(line)
        else:
            print(line, flush=True)

    def _epoch_estimate(self, epoch_s: float) -> float:
        """Seconds a coming epoch should take: the last epoch's time with its updates counted at the regular
        number per epoch (the first epoch does many more, and the initial collection is not repeated)."""
        for model, (seconds, n) in self._update_s.items():
            if n:
                epoch_s += (seconds / n) * (getattr(self.cfg, model).steps_per_epoch - n)
        return max(epoch_s, 0.0)

    def finish(self, final: dict) -> dict:
        c = self.counters
        summary = {"finished": True, "epoch": c.epoch, "real_steps": c.real_steps, "updates": c.updates,
                   "seconds": c.seconds, **final}
        if self.world.is_main:
            if final:
                self.run.log(final, c.epoch)
                self.run.plot()
            self.run.mark_finished(summary)
        return summary

    def close(self) -> None:
        if self.collector is not None:
            self.collector.close()
        self.run.close()


def _num_actions(game: str, dataset: str | None) -> int:
    """The game's action count (its env), or for a static dataset of an unknown game, max action + 1."""
    from training.atari_env import make_env
    from training.games import is_atari_game

    name = toy_env_id(game) or game
    if dataset and not (is_atari_game(game) or toy_env_id(game)):
        store = EpisodeStore(dataset, static=True)
        if store.num_episodes == 0:
            raise ValueError(f"{dataset}: no episodes (.npz files) found")
        return int(max(int(ep.act.max()) for ep in store)) + 1
    env = make_env(name, train=True)
    try:
        return int(env.action_space.n)
    finally:
        env.close()


def _rare_rewards(store: EpisodeStore) -> int:
    """Sum of the two smallest counts of sign(rew) in {-1, 0, 1} over the store."""
    counts = np.zeros(3, dtype=np.int64)
    for ep in store:
        counts += np.bincount(np.sign(ep.rew).astype(np.int64) + 1, minlength=3)
    return int(np.sort(counts)[:2].sum())


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _numpy_state_to_torch(state) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return (name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached))


def _numpy_state_from_torch(state) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
