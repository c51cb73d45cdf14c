"""One update of each world-model part: tensors in, metrics out, no run directory needed.

`dreamarcade bench` times these directly (denoiser batch 32 x 6 frames, reward/end 32 x 19); the loop calls
them `steps_per_epoch` times. The actor-critic's update lives in `training.imagination` (it needs rollouts).
"""
from __future__ import annotations

import torch

from model.batch import Batch
from training.optim import ModelOptimizer


def denoiser_update(agent, batch: Batch, optimizer: ModelOptimizer, generator: torch.Generator | None = None) -> dict:
    """One optimizer step of the denoiser on batch (B, T = 6, ...) -> {"loss_denoising", "grad_norm", "lr"}."""
    agent.denoiser.train()
    loss = agent.denoiser.loss(batch, generator=generator)
    grad_norm = optimizer.step(loss)
    return {"loss_denoising": loss.item(), "grad_norm": grad_norm, "lr": optimizer.lr}


def rew_end_update(agent, batch: Batch, optimizer: ModelOptimizer) -> dict:
    """One optimizer step of the reward/end model on batch (B, T = 19, ...) -> {"loss_rew", "loss_end", ...}."""
    agent.rew_end.train()
    loss_rew, loss_end = agent.rew_end.loss_terms(batch)
    grad_norm = optimizer.step(loss_rew + loss_end)
    return {"loss_rew": loss_rew.item(), "loss_end": loss_end.item(), "grad_norm": grad_norm, "lr": optimizer.lr}


@torch.no_grad()
def denoiser_test_loss(agent, batches) -> dict:
    """Mean denoising loss over an iterable of batches (test episodes), model in eval mode."""
    agent.denoiser.eval()
    losses = [agent.denoiser.loss(b).item() for b in batches]
    return {"loss_denoising": sum(losses) / len(losses)} if losses else {}


@torch.no_grad()
def rew_end_test_loss(agent, batches) -> dict:
    agent.rew_end.eval()
    terms = [tuple(t.item() for t in agent.rew_end.loss_terms(b)) for b in batches]
    if not terms:
        return {}
    return {"loss_rew": sum(t[0] for t in terms) / len(terms), "loss_end": sum(t[1] for t in terms) / len(terms)}
