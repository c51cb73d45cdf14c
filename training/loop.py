"""The training loop (diamond.md section 4): collect -> train denoiser, reward/end, actor-critic -> evaluate -> save.

`train(cfg, run_dir)` is the whole recipe. `training.session` builds and saves what it trains (models,
optimizers, samplers, counters); `training.experience` is where real data comes from and where the agent is
tested (the real game on rank 0, the user's recordings in static-dataset mode). A run killed at any moment
continues with `resume=True` from its last checkpoint (end of the last epoch) with the same real-step budget;
the episode store keeps every episode written before the kill.
"""
from __future__ import annotations

import time

from tqdm import tqdm

from model.precision import training_policies
from training.ddp import all_reduce_mean, barrier, broadcast_object, close_world, init_world
from training.experience import OtherRank, RealGame, Recordings
from training.graphed_updates import cuda_graphs_enabled, graphed_denoiser_update, graphed_rew_end_update
from training.imagination import Imagination, actor_critic_update
from training.presets import ModelTraining, TrainConfig
from training.run_dir import RunDir
from training.segments import SegmentSampler
from training.session import Session
from training.updates import compile_updates


def train(cfg: TrainConfig | None, run_dir: str | RunDir, device: str | None = None, resume: bool = False,
          dataset: str | None = None, max_epochs: int | None = None, progress: bool = True,
          compile_models: bool = False, precision: str = "auto", init=None, keep_weights_every: int = 0,
          world_model_lr: float | None = None) -> dict:
    """Runs (or resumes) a training run -> summary dict. cfg None: read it from the run's config.json.

    dataset: a folder of episodes (static-dataset mode: world model and reward/end model only, no env).
    max_epochs: stop after this many epochs in total (a resumed run continues to it); with `dataset`, more than
        the preset's total makes the run that long.
    compile_models: `torch.compile` the world model's updates (`training.updates.compile_updates`); a run-time
    option like the device, not part of the run's config.
    init: a model.Agent a new run starts from (its model and weights, fresh optimizers: `train --init-weights`).
    keep_weights_every: N > 0 also keeps every N-th epoch's weights in RUN/snapshots/epoch-NNNN.safetensors (for
    `python -m weights.average`); a run-time option.
    precision: "auto" (training's policies, `model.precision`: on a CPU with native bf16 the world model's updates
    under bfloat16 autocast and imagination's world model in bfloat16; on a GPU float32 updates and bfloat16
    imagination), or "float32" / "bfloat16" for both. The actor-critic always trains in float32. A run-time
    option.
    world_model_lr: the denoiser's and reward/end model's learning rate from the next update on, instead of the
    config's; written to the run's config.json, so that a later resume keeps it (annealing a run's last epochs).
    Raises UserError for a finished run, or for an existing run started again without `resume`.
    """
    world = init_world(device)
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    s = None
    try:
        s = Session.open(cfg, run, world, resume=resume, dataset=dataset, progress=progress, init=init,
                        world_model_lr=world_model_lr)
        s.keep_every = keep_weights_every
        updates_precision, imagination_precision = training_policies(precision)
        cfg, agent, optims, samplers, dev = s.cfg, s.agent, s.optims, s.samplers, world.device
        if compile_models:
            compile_updates(agent)
        real = _real_experience(s)
        # on a GPU each imagined step, and each update of the denoiser and of the reward/end model, is captured
        # once as a CUDA graph and replayed (the updates not with several ranks: their gradients are averaged from
        # Python; none with DREAMARCADE_CUDA_GRAPHS=0); the same work runs eagerly elsewhere
        imagination = Imagination(agent, lambda n: _contexts(samplers["actor_critic"], n, dev),
                                  world.share(cfg.actor_critic.batch_size), cfg.imagination.horizon,
                                  cfg.imagination.denoising_steps, s.generator,
                                  precision=imagination_precision, cuda_graphs=cuda_graphs_enabled())
        update_denoiser = graphed_denoiser_update(agent, optims["denoiser"], precision=updates_precision)
        update_rew_end = graphed_rew_end_update(agent, optims["rew_end"], updates_precision)
        ac_state = None  # the actor-critic's LSTM state, carried from one update to the next
        if not s.restored:
            metrics = real.start(s.counters)  # epoch 0: the initial collection
            s.save(metrics)
            # its checkpoint must be on disk before epoch 1 collects more: a run killed before that starts over
            # from the store, and would take everything in it as the initial collection (its budget grown)
            s.wait_saved()
        s.counters = broadcast_object(s.counters, world)
        c = s.counters
        if s.dataset and max_epochs is not None and max_epochs > c.num_epochs:
            c.num_epochs = max_epochs  # recordings: no collection fixes the length, so more epochs over the same data
        last_epoch = c.num_epochs if max_epochs is None else min(max_epochs, c.num_epochs)
        s.last_epoch = last_epoch
        for epoch in range(c.epoch + 1, last_epoch + 1):
            t0 = time.perf_counter()
            laps = [("start", t0)]  # phase ends: the epoch's time split in the metrics (time/{phase}_s)
            lap = lambda phase: laps.append((phase, time.perf_counter()))
            collected = real.collect(c, epoch)
            lap("collect")
            barrier(world)
            s.store.refresh()  # other ranks: pick up the episodes rank 0 just wrote
            means = Means()
            for _ in _updates("denoiser", cfg.denoiser, epoch, s):
                batch = samplers["denoiser"].sample().to(dev)
                means.add("denoiser", update_denoiser(batch))
            lap("denoiser")
            for _ in _updates("rew_end", cfg.rew_end, epoch, s):
                batch = samplers["rew_end"].sample().to(dev)
                means.add("rew_end", update_rew_end(batch))
            lap("rew_end")
            for _ in _updates("actor_critic", cfg.actor_critic, epoch, s):
                m, ac_state = actor_critic_update(agent, imagination, optims["actor_critic"], cfg.imagination,
                                                  ac_state)
                means.add("actor_critic", m)
            lap("actor_critic")
            metrics = collected | all_reduce_mean(means.result(), world)
            if epoch % cfg.eval_every == 0:
                metrics |= real.evaluate(cfg.eval_episodes, seed=cfg.seed + epoch, tag="test")
            lap("evaluate")
            c.epoch = epoch
            metrics["time/epoch_s"] = time.perf_counter() - t0
            metrics |= {f"time/{phase}_s": end - start for (_, start), (phase, end) in zip(laps, laps[1:])}
            s.save(metrics)
            barrier(world)
        summary = {"finished": False, "epoch": c.epoch}
        if c.epoch >= c.num_epochs:
            # seeded with the run's seed: `dreamarcade eval --weights RUN/weights --seed SEED` plays the same games
            final = real.evaluate(cfg.final_eval_episodes, seed=cfg.seed, tag="final")
            summary = s.finish(final, eval_seed=cfg.seed)
        real.close()
        s.close()
        return summary
    finally:
        try:
            if s is not None:  # also when interrupted: the last checkpoint is written whole, or its error raised
                s.wait_saved()
        finally:
            close_world(world)


def _real_experience(s: Session):
    """Where this process's real data comes from: the user's recordings, the real game (rank 0), or rank 0."""
    if s.dataset:
        return Recordings(s.cfg, s.store)
    if s.world.is_main:
        return RealGame(s.cfg, s.agent, s.store, s.run.path, s.world.device, s.progress)
    return OtherRank(s.cfg, s.store)


def _contexts(sampler: SegmentSampler, n: int, device):
    """n real 4-frame contexts (obs (n, 4, 3, H, W) in [-1, 1], act (n, 4)) to start imagined games from."""
    batch = sampler.sample(batch_size=n)
    return batch.obs.to(device), batch.act.to(device)


def _updates(model: str, mcfg: ModelTraining, epoch: int, s: Session):
    """The epoch's updates of one model (`steps_first_epoch` in epoch 1, else `steps_per_epoch`), counted and
    timed (the session's time-left estimate counts each model's updates at their regular number)."""
    c = s.counters
    n = mcfg.steps_first_epoch if epoch == 1 else mcfg.steps_per_epoch
    c.updates[model] += n
    last = s.last_epoch or c.num_epochs
    of = f" (of {c.num_epochs})" if last != c.num_epochs else ""
    t0 = time.perf_counter()
    yield from tqdm(range(n), desc=f"epoch {epoch}/{last}{of} {model}", leave=False, disable=not s.progress,
                    dynamic_ncols=True)
    s.update_seconds[model] = (time.perf_counter() - t0, n)


class Means:
    """Mean of each metric over an epoch's updates -> {model/train/key: mean}. Metrics may be numbers or device
    tensors: they are summed as they come and read once, at the end of the epoch (no host sync per update)."""

    def __init__(self) -> None:
        self.sums: dict = {}
        self.counts: dict[str, int] = {}

    def add(self, model: str, metrics: dict) -> None:
        for k, v in metrics.items():
            key = f"{model}/train/{k}"
            self.sums[key] = self.sums.get(key, 0.0) + v  # a new value: a tensor the update reuses is copied
            self.counts[key] = self.counts.get(key, 0) + 1

    def result(self) -> dict:
        return {k: float(v) / self.counts[k] for k, v in self.sums.items()}
