"""The training loop (diamond.md section 4): collect -> train denoiser, reward/end, actor-critic -> evaluate -> save.

`train(cfg, run_dir)` is the whole recipe; `training.session` builds what it uses (models, optimizers,
samplers, envs) and saves/restores it. A run killed at any moment continues with `resume=True` from its last
checkpoint (end of the last epoch); the episode store keeps every episode written before the kill.
"""
from __future__ import annotations

import time

from training.ddp import all_reduce_mean, barrier, broadcast_object, close_world, init_world
from training.imagination import actor_critic_update
from training.presets import TrainConfig
from training.run_dir import RunDir
from training.session import Session
from training.updates import denoiser_update, rew_end_update


def train(cfg: TrainConfig | None, run_dir: str | RunDir, device: str | None = None, resume: bool = False,
          dataset: str | None = None, max_epochs: int | None = None, progress: bool = True) -> dict:
    """Runs (or resumes) a training run -> summary dict. cfg None: read it from the run's config.json.

    dataset: a folder of episodes (static-dataset mode: world model and reward/end model only, no env).
    max_epochs: stop after this many epochs in total (a resumed run continues to it).
    Raises ValueError for a finished run, or for an existing run started again without `resume`.
    """
    world = init_world(device)
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    try:
        s = Session.open(cfg, run, world, resume=resume, dataset=dataset, progress=progress)
        if s.counters.epoch == 0:
            s.initial_collection() if s.dataset is None else s.start_static()
        s.counters = broadcast_object(s.counters, world)
        last_epoch = s.counters.num_epochs if max_epochs is None else min(max_epochs, s.counters.num_epochs)
        s.last_epoch = last_epoch
        for epoch in range(s.counters.epoch + 1, last_epoch + 1):
            t0 = time.perf_counter()
            collected = {}
            if s.collector is not None and epoch <= s.counters.num_collect_epochs:
                collected = s.collect(s.cfg.collect_steps_per_epoch)
            barrier(world)
            s.store.refresh()  # other ranks: pick up the episodes rank 0 just wrote
            first, metrics = epoch == 1, {}
            metrics |= s.run_updates("denoiser", epoch, first, lambda: denoiser_update(
                s.agent, s.samplers["denoiser"].sample().to(world.device), s.optims["denoiser"]))
            metrics |= s.run_updates("rew_end", epoch, first, lambda: rew_end_update(
                s.agent, s.samplers["rew_end"].sample().to(world.device), s.optims["rew_end"]))
            if s.imagination is not None:
                metrics |= s.run_updates("actor_critic", epoch, first, lambda: s.imagine_update(actor_critic_update))
            metrics = collected | all_reduce_mean(metrics, world)
            if s.collector is not None and epoch % s.cfg.eval_every == 0:
                metrics |= s.evaluate(s.cfg.eval_episodes, "test")
            s.counters.epoch = epoch
            metrics["time/epoch_s"] = time.perf_counter() - t0
            s.save(metrics)
            barrier(world)
        summary = {"finished": False, "epoch": s.counters.epoch}
        if s.counters.epoch >= s.counters.num_epochs:
            final = s.evaluate(s.cfg.final_eval_episodes, "final") if s.collector is not None else {}
            summary = s.finish(final)
        s.close()
        return summary
    finally:
        close_world(world)
