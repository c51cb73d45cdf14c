"""What a training run saves and restores (used by training.loop).

A `Session` holds the agent, one optimizer per model, the segment samplers, the imagination's generator and
the counters; `Session.open` builds them for a new run or restores them from the run's checkpoint, and
`save` writes them (with the epoch's metrics, the weights and the plots) at the end of every epoch, the
checkpoint and weights in the background (`training.background_save`).
Where the real data comes from is `training.experience`; the recipe is `training.loop`.
"""
from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from tqdm import tqdm

from model.agent import Agent, AgentConfig
from training.background_save import BackgroundWriter, Snapshot
from training.ddp import World, average_gradients, broadcast_module
from training.device_segments import DeviceEpisodes, DeviceSegmentSampler
from training.episode_store import EpisodeStore
from training.optim import ModelOptimizer
from training.presets import TrainConfig, agent_config
from training.run_dir import RunDir
from training.segments import SegmentSampler
from weights.errors import NotFound, UserError

CHECKPOINT_VERSION = 1
MODELS = ("denoiser", "rew_end", "actor_critic")
# fixed random buffers that an option turned on in config.json before a --resume adds (`noise_previous_obs`)
NEW_BUFFERS = ("denoiser.inner_model.noise_cond_emb.weight",)
PLOT_EVERY_S = 60  # learning curves are redrawn at most this often (a few seconds each), and at the end


@dataclass
class Counters:
    epoch: int = 0  # last completed epoch (0: the initial collection, or nothing yet)
    num_epochs: int = 0  # total, fixed after the initial collection (diamond.md 4.1)
    num_collect_epochs: int = 0
    initial_steps: int = 0  # real steps after the initial collection: collection targets start there
    real_steps: int = 0  # real transitions in the episode store
    real_episodes: int = 0
    updates: dict = field(default_factory=lambda: {m: 0 for m in MODELS})
    seconds: float = 0.0  # training time over all sessions of this run


class Session:
    """A run's models and everything its checkpoint holds: the agent, one optimizer per model, the segment
    samplers (one per model, each with its random stream), the imagination's generator and the counters."""

    def __init__(self, cfg: TrainConfig, agent_cfg: AgentConfig, run: RunDir, world: World, store: EpisodeStore,
                 dataset: str | None, progress: bool) -> None:
        self.cfg, self.run, self.world, self.store, self.dataset = cfg, run, world, store, dataset
        self.progress = progress and world.is_main
        self.counters = Counters()
        self.restored = False  # True once a checkpoint is loaded: the initial collection is done
        dev = world.device
        _seed_everything(cfg.seed + world.rank)
        self.agent = Agent(agent_cfg).to(dev)
        sync = partial(average_gradients, world=world) if world.distributed else None
        self.optims = {m: ModelOptimizer(getattr(self.agent, m), getattr(cfg, m).optim, sync) for m in MODELS}
        weights = tuple(cfg.sample_weights) or None  # () -> length-proportional sampling
        # on a GPU the store's frames stay resident there and batches are gathered there (same batches)
        resident = DeviceEpisodes(store, dev) if torch.device(dev).type == "cuda" else None
        sampler = partial(DeviceSegmentSampler, device=dev, episodes=resident) if resident else SegmentSampler
        self.samplers = {
            m: sampler(store, world.share(getattr(cfg, m).batch_size), getattr(cfg, m).seq_length,
                       can_sample_beyond_end=(m == "rew_end"), sample_weights=weights, rank=world.rank,
                       world_size=world.world_size, seed=cfg.seed * 1000 + world.rank)
            for m in MODELS}
        self.generator = torch.Generator(dev)
        self.generator.manual_seed(cfg.seed + 7919 * world.rank)
        self._t_start = self._t_plot = time.perf_counter()
        self._unplotted = False
        self.last_epoch = 0  # where this session stops (training.loop sets it: --epochs or the run's end)
        self.keep_every = 0  # also keep every N-th epoch's weights in RUN/snapshots (training.loop sets it)
        self.update_seconds: dict[str, tuple[float, int]] = {}  # model -> (seconds, updates) of its last epoch
        self._snapshot, self._writer = Snapshot(), BackgroundWriter()  # checkpoints written off the critical path

    # --- building and restoring -----------------------------------------------------------------------
    @classmethod
    def open(cls, cfg: TrainConfig | None, run: RunDir, world: World, resume: bool, dataset: str | None,
             progress: bool, init: Agent | None = None, world_model_lr: float | None = None) -> "Session":
        """A new run (cfg given, config.json written) or the run in `run` restored from its checkpoint.
        init: for a new run, an agent whose model (config and weights) the run starts from instead of the
        preset's, fresh optimizers (fine-tuning); its `weights_info["source"]` is written to config.json.
        Raises UserError for a finished run, a run to resume that does not exist, or one started again, and for
        init weights with another action count than the game's.
        world_model_lr: the denoiser's and reward/end model's learning rate, instead of the config's (saved in
        config.json, for a resumed run too)."""
        if run.is_finished:
            raise UserError(f"{run.path}: this run is finished (see {run.finished_path}); nothing to do")
        if resume:
            if not run.config_path.exists():
                raise NotFound(f"{run.path}: no training run to resume (no config.json)")
            saved = run.read_config()
            cfg, dataset = TrainConfig.from_dict(saved["train"]), saved.get("dataset")
            agent_cfg = AgentConfig.from_dict(saved["agent"])
            if world_model_lr is not None:
                cfg = with_world_model_lr(cfg, world_model_lr)
                if world.is_main:
                    run.write_config(saved | {"train": cfg.to_dict()})
        else:
            if run.config_path.exists():
                raise UserError(f"{run.path} already holds a training run: continue it with --resume, "
                                "or choose another --run-dir")
            if cfg is None:
                raise ValueError("a new run needs a training config")
            if cfg.seed is None:
                cfg = dataclasses.replace(cfg, seed=random.SystemRandom().randrange(2**31))
            if dataset:
                cfg = static_dataset_config(cfg)
            if world_model_lr is not None:
                cfg = with_world_model_lr(cfg, world_model_lr)
            agent_cfg = agent_config(cfg, _num_actions(cfg.game, dataset))
            extra = {}
            if init is not None:
                if init.num_actions != agent_cfg.num_actions:
                    raise UserError(f"the initial weights have {init.num_actions} actions but {cfg.game} has "
                                    f"{agent_cfg.num_actions}: they were trained on another game")
                agent_cfg = init.config
                extra["init_weights"] = str(getattr(init, "weights_info", {}).get("source", "an agent"))
            if world.is_main:
                run.write_config({"train": cfg.to_dict(), "agent": agent_cfg.to_dict(), "dataset": dataset,
                                  "world_size": world.world_size, **extra})
        store = EpisodeStore(dataset, static=True) if dataset else EpisodeStore(run.store_path)
        if dataset and store.num_episodes == 0:
            raise UserError(f"{dataset}: no episodes (.npz files) found")
        s = cls(cfg, agent_cfg, run, world, store, dataset, progress)
        if init is not None and not resume:
            s.agent.load_state_dict(init.state_dict())
        ckpt = run.load_checkpoint() if resume else None
        if ckpt is not None:
            s.load_state_dict(ckpt)
        if world.is_main:  # rows logged after the checkpoint (a kill between the two) are logged again
            run.drop_metrics_after(s.counters.epoch if s.restored else None)
        broadcast_module(s.agent, world)
        s.counters.real_steps, s.counters.real_episodes = store.num_steps, store.num_episodes
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
            raise UserError(f"{self.run.checkpoint_path}: checkpoint version {ckpt.get('version')!r}, "
                            f"expected {CHECKPOINT_VERSION}")
        self.agent.load_state_dict(self._with_new_buffers(ckpt["agent"]))
        for m, o in self.optims.items():
            o.load_state_dict(ckpt["optimizers"][m])
        counters = dict(ckpt["counters"])
        if "initial_steps" not in counters:  # a checkpoint written before the counter existed
            collected = min(counters["epoch"], counters["num_collect_epochs"]) * self.cfg.collect_steps_per_epoch
            counters["initial_steps"] = max(0, counters["real_steps"] - collected)
        self.counters = Counters(**counters)
        self.restored = True
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

    def _with_new_buffers(self, state: dict) -> dict:
        """The checkpoint's agent state, plus the fixed random buffers of an option turned on in config.json since
        it was written (`noise_previous_obs`: the denoiser's noise_cond_emb), which start from this run's draw."""
        own = self.agent.state_dict()
        added = [k for k in NEW_BUFFERS if k in own and k not in state]
        for key in added:
            if self.world.is_main:
                print(f"{self.run.path}: the checkpoint has no {key} (an option turned on in config.json since): "
                      "it starts from a new random draw", flush=True)
        return {**state, **{k: own[k] for k in added}}

    # --- saving ---------------------------------------------------------------------------------------
    def save(self, metrics: dict) -> None:
        """Logs the epoch's metrics, then (rank 0) writes the checkpoint and the weights in the background, from a
        snapshot taken now, and draws the plots. The previous epoch's write is waited for first (its error
        raised), so its time counts here, and files land in order: a checkpoint is never newer than the
        metrics, nor the weights newer than the checkpoint (a kill -9 at any moment resumes as before)."""
        c = self.counters
        if self.world.is_main:
            self._writer.wait()
        now = time.perf_counter()
        c.seconds += now - self._t_start
        self._t_start = now
        if not self.world.is_main:
            return
        metrics = {**metrics, "counters/real_steps": c.real_steps, "time/total_s": c.seconds,
                   **{f"counters/{m}_updates": n for m, n in c.updates.items()}}
        self.run.log(metrics, c.epoch)
        state = self._snapshot.take(self.state_dict())  # nothing the next epoch changes in place
        info = {"game": self.cfg.game, "epoch": c.epoch, "real_steps": c.real_steps,
                "source": "dreamarcade train", "preset_model": self.cfg.model}
        what = f"epoch {c.epoch}'s checkpoint and weights ({self.run.checkpoint_path}, {self.run.weights_path})"
        self._writer.submit(partial(self._write, state, info), what)
        self._unplotted = True
        if now - self._t_plot >= PLOT_EVERY_S:  # and at the end of the session (close)
            self.plot()
        self._report(metrics)

    def _write(self, state: dict, info: dict) -> None:
        """In the writer's thread: the checkpoint, then the weights (each written atomically)."""
        self.run.save_checkpoint(state)
        self.run.save_weights(self.agent, info, state=state["agent"])
        if self.keep_every and info["epoch"] > 0 and info["epoch"] % self.keep_every == 0:
            self.run.save_weights(self.agent, info, state=state["agent"], epoch=info["epoch"])

    def wait_saved(self) -> None:
        """Waits until the last `save`'s files are written; raises a `UserError` if they could not be."""
        self._writer.wait()

    def plot(self) -> None:
        self.run.plot()
        self._t_plot, self._unplotted = time.perf_counter(), False

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
        for model, (seconds, n) in self.update_seconds.items():
            if n:
                epoch_s += (seconds / n) * (getattr(self.cfg, model).steps_per_epoch - n)
        return max(epoch_s, 0.0)

    def finish(self, final: dict, eval_seed: int) -> dict:
        """Logs the final evaluation (played with `eval_seed`) and marks the run finished -> its summary."""
        c = self.counters
        summary = {"finished": True, "epoch": c.epoch, "real_steps": c.real_steps, "updates": c.updates,
                   "seconds": c.seconds, **final, **({"final/seed": eval_seed} if final else {})}
        if self.world.is_main:
            self._writer.wait()  # the last checkpoint and weights are on disk before the run is marked finished
            if final:
                self.run.log(final, c.epoch)
                self._unplotted = True
            self.run.mark_finished(summary)
        return summary

    def close(self) -> None:
        """Waits for the last save's files; draws the curves of what was logged since they were last drawn;
        closes the run's logs."""
        self._writer.wait()
        if self._unplotted:
            self.plot()
        self.run.close()


def static_dataset_config(cfg: TrainConfig) -> TrainConfig:
    """Static-dataset mode trains the world model only (no actor-critic updates) and samples episodes in
    proportion to their length, as the reference's static-dataset mode."""
    no_updates = dataclasses.replace(cfg.actor_critic, steps_first_epoch=0, steps_per_epoch=0)
    return dataclasses.replace(cfg, actor_critic=no_updates, sample_weights=())


def _num_actions(game: str, dataset: str | None) -> int:
    """The game's action count (its env), or for a static dataset of an unknown game, max action + 1."""
    from training.atari_env import make_env
    from training.games import resolve_game

    try:
        game = resolve_game(game)
    except UserError:
        if not dataset:
            raise
        store = EpisodeStore(dataset, static=True)
        if store.num_episodes == 0:
            raise UserError(f"{dataset}: no episodes (.npz files) found") from None
        return int(max(int(ep.act.max()) for ep in store)) + 1
    env = make_env(game, train=True)
    try:
        return int(env.action_space.n)
    finally:
        env.close()


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


def with_world_model_lr(cfg: TrainConfig, lr: float) -> TrainConfig:
    """`cfg` with the denoiser and the reward/end model trained at learning rate `lr` (warm-up unchanged)."""
    return dataclasses.replace(cfg, **{m: dataclasses.replace(getattr(cfg, m), optim=dataclasses.replace(
        getattr(cfg, m).optim, lr=lr)) for m in ("denoiser", "rew_end")})
