"""One update of each world-model part: tensors in, metrics out, no run directory needed.

The metrics are 0-dim device tensors (`lr` a float): nothing here waits for the device, and the caller reads
them once per epoch.

The training loop and `dreamarcade bench` (denoiser batch 32 x 6 frames, reward/end 32 x 19) run them as
`training.graphed_updates.GraphedUpdate`s: the same losses and optimizer step, captured as a CUDA
graph on a GPU. The actor-critic's update lives in `training.imagination` (it needs rollouts).
"""
from __future__ import annotations

import torch

from model.batch import Batch
from model.precision import TRAINING, autocast, channels_last_
from training.optim import ModelOptimizer


def denoiser_losses(agent, batch: Batch, generator: torch.Generator | None = None,
                    precision: str = TRAINING) -> tuple[torch.Tensor, dict]:
    """The denoiser's training loss on batch (B, T = 6, ...) -> (loss, {"loss_denoising"}): what an update
    minimises. precision: a policy of `model.precision`: "auto-cpu" (training's: bfloat16 autocast on a CPU with
    native bf16, ~2x faster there, and float32 on a GPU, where autocast was slower on an H100), "float32",
    "bfloat16" or "auto"."""
    channels_last_(agent.denoiser).train()
    with autocast(agent.device, precision):
        loss = agent.denoiser.loss(batch, generator=generator)
    return loss, {"loss_denoising": loss.detach()}


def rew_end_losses(agent, batch: Batch, precision: str = TRAINING) -> tuple[torch.Tensor, dict]:
    """The reward/end model's training loss on batch (B, T = 19, ...) -> (loss, {"loss_rew", "loss_end"});
    precision as `denoiser_losses`'."""
    channels_last_(agent.rew_end).train()
    with autocast(agent.device, precision):
        loss_rew, loss_end = agent.rew_end.loss_terms(batch)
    return loss_rew + loss_end, {"loss_rew": loss_rew.detach(), "loss_end": loss_end.detach()}


def denoiser_update(agent, batch: Batch, optimizer: ModelOptimizer, generator: torch.Generator | None = None,
                    precision: str = TRAINING) -> dict:
    """One optimizer step of the denoiser on batch (B, T = 6, ...) -> {"loss_denoising", "grad_norm", "lr"}."""
    loss, metrics = denoiser_losses(agent, batch, generator, precision)
    return metrics | {"grad_norm": optimizer.step(loss), "lr": optimizer.lr}


def rew_end_update(agent, batch: Batch, optimizer: ModelOptimizer, precision: str = TRAINING) -> dict:
    """One optimizer step of the reward/end model on batch (B, T = 19, ...) -> {"loss_rew", "loss_end", ...}."""
    loss, metrics = rew_end_losses(agent, batch, precision)
    return metrics | {"grad_norm": optimizer.step(loss), "lr": optimizer.lr}


def compile_updates(agent, backend: str = "inductor") -> None:
    """`--compile`: the networks of the denoiser's and the reward/end model's updates compiled in place with
    `torch.compile` (`nn.Module.compile`: the same modules, so the same state_dict keys, checkpoints and
    weights). The first updates compile (minutes on a GPU at the reference's size); the maths is the same, to
    float rounding. Copies made from these modules (the bfloat16 fast path's) run eagerly. backend: torch.compile's
    ("aot_eager" traces the same graphs, forward and backward, without generating kernels: the tests' choice)."""
    agent.denoiser.inner_model.compile(backend=backend)  # the U-Net: the denoiser update's forward and backward
    agent.rew_end.encoder.compile(backend=backend)  # the convolutions; the LSTM and heads stay eager


@torch.no_grad()
def denoiser_test_loss(agent, batches) -> dict:
    """Denoising loss over an iterable of batches (test episodes), weighted by their real targets; {} if none."""
    agent.denoiser.eval()
    n = agent.denoiser.cfg.num_steps_conditioning
    total = count = 0.0
    for b in batches:
        k = float(b.mask[:, n:].sum())
        if k:
            total, count = total + agent.denoiser.loss(b).item() * k, count + k
    return {"loss_denoising": total / count} if count else {}


@torch.no_grad()
def rew_end_test_loss(agent, batches) -> dict:
    """Reward and end cross-entropies over test batches, weighted by their real transitions; {} if none."""
    agent.rew_end.eval()
    sums, count = [0.0, 0.0], 0.0
    for b in batches:
        k = float(b.mask[:, :-1].sum())
        if k:
            for i, t in enumerate(agent.rew_end.loss_terms(b)):
                sums[i] += t.item() * k
            count += k
    return {"loss_rew": sums[0] / count, "loss_end": sums[1] / count} if count else {}
