"""`dreamarcade bench`'s `epoch_s`: one real atari100k epoch timed end to end, by the training loop itself.

A temporary run of the real game with the atari100k protocol (the paper's models, batch 32, horizon 15,
100 real steps collected per epoch) trains for two epochs: epoch 1 warms up (allocations, cuDNN plans, CUDA
graphs; a few updates), epoch 2 is the one measured, split into the loop's phases (`time/{phase}_s` in the run's metrics):
collection, the denoiser's, reward/end's and actor-critic's updates (each with its batch sampling), and the
checkpoint: the time `Session.save` holds the loop (the state's snapshot, the plots, and waiting for the previous
epoch's checkpoint and weights if their background write is not done). Evaluation is off the critical path:
none runs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import tempfile
import time

from training.loop import train
from training.presets import ImaginationConfig, get_preset
from training.run_dir import RunDir

EPOCH_UPDATES = 400  # per model, as atari100k
RUN_EPOCHS = 1000  # atari100k: one run


def _config(game: str, model: str, updates: int, batch_size: int):
    cfg = get_preset("atari100k")
    cfg = dataclasses.replace(cfg, game=game, model=model, seed=0, eval_every=10**9)
    if model != "atari100k":  # a smoke test: a short initial collection and imagination
        cfg = dataclasses.replace(cfg, initial_steps_min=200, initial_steps_max=300, initial_min_rare_rewards=0,
                                  imagination=ImaginationConfig(horizon=4, denoising_steps=1))
    # epoch 1 only warms up (every shape and graph seen): a few updates
    m = {"steps_first_epoch": min(updates, 10), "steps_per_epoch": updates, "batch_size": batch_size}
    return dataclasses.replace(cfg, **{k: dataclasses.replace(getattr(cfg, k), **m)
                                       for k in ("denoiser", "rew_end", "actor_critic")})


def epoch_seconds(game: str = "Breakout", model: str = "atari100k", device: str = "cuda",
                  updates: int = EPOCH_UPDATES, batch_size: int = 32, compile_models: bool = False,
                  log=lambda s: None) -> dict:
    """-> {"epoch_s": {"total", "collect", "denoiser", "rew_end", "actor_critic", "checkpoint"},
    "run_hours_estimate", "epoch_updates"}. With updates < 400 the update phases are scaled to 400 (and
    "epoch_updates" says how many ran); the other phases are as measured. compile_models: as `train --compile`
    (epoch 1 compiles)."""
    cfg = _config(game, model, updates, batch_size)
    with tempfile.TemporaryDirectory(prefix="dreamarcade-bench-") as tmp:
        log(f"epoch: initial collection and 2 epochs of {game} ({updates} updates per model) ...")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # the loop's progress lines
            train(cfg, tmp, device=device, max_epochs=2, progress=False, compile_models=compile_models)
        log(f"epoch: done in {time.perf_counter() - t0:.0f} s")
        rows = {row["epoch"]: row for row in RunDir(tmp).read_metrics()}
    warm, timed = rows[1], rows[2]
    scale = EPOCH_UPDATES / updates
    phases = {"collect": timed["time/collect_s"]}
    for phase in ("denoiser", "rew_end", "actor_critic"):
        phases[phase] = timed[f"time/{phase}_s"] * scale
    # the checkpoint of an epoch is saved after its metrics are logged: epoch 1's, from the run's clock, which
    # epoch 2's save reads after waiting for epoch 1's background write (so that wait counts here too)
    phases["checkpoint"] = timed["time/total_s"] - warm["time/total_s"] - timed["time/epoch_s"]
    total = sum(phases.values())
    return {"epoch_s": {"total": round(total, 2), **{k: round(v, 2) for k, v in phases.items()}},
            "run_hours_estimate": round(total * RUN_EPOCHS / 3600, 2), "epoch_updates": updates,
            "epoch_game": game, "epoch_batch_size": batch_size}
