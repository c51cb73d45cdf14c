"""Behaviour cloning: an agent's actor-critic taught to play like a store of real episodes.

The method's agent learns in imagination (`training.imagination`), which needs a world model good enough to
play in. Cloning is a way to give an agent play before that: its policy learns to take the actions of real
episodes (the scripted teacher's demonstrations, `training.scripted.collect_demonstrations`, or your
recordings) frame by frame, and its value
head to predict their discounted returns, from real frames only. The world model is not touched. A cloned agent
plays like its teacher at best, and the imagination training can go on from it (`train --init-weights`).

Segments are drawn as the reference draws them for imagination's start (`training.segments`, length-proportional
over episodes); the first `burn_in` steps of each only warm the LSTM up, as imagination burns in its context.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model.batch import Batch
from model.returns import lambda_returns
from training.episode_store import EpisodeStore
from training.segments import SegmentSampler, make_batch


@dataclass(frozen=True)
class CloneConfig:
    updates: int = 1500
    batch_size: int = 32
    seq_length: int = 16
    burn_in: int = 4  # steps of each segment that only warm the LSTM up (no loss on them)
    gamma: float = 0.985  # the value head's discount, the imagination's (diamond.md 1.6)
    weight_value_loss: float = 1.0
    lr: float = 1e-3  # the encoder's and the heads'
    lstm_lr: float = 1e-4  # the LSTM's: see `make_optimizer`
    max_grad_norm: float = 100.0

    def __post_init__(self) -> None:
        if not 0 <= self.burn_in < self.seq_length:
            raise ValueError(f"burn_in must be in [0, seq_length), got {self.burn_in} and {self.seq_length}")


def discounted_returns(rew: np.ndarray, end: np.ndarray, gamma: float) -> np.ndarray:
    """(T,) rewards and ends of one episode -> (T,) sum_k gamma^k sign(rew[t + k]) up to the episode's end.

    Rewards are clipped to their sign, as the agent sees them in imagination. A cut (truncated) episode's
    returns stop at the cut, a small underestimate near it. These are the imagination's lambda-returns
    (`model.returns.lambda_returns`) with lambda 1 and nothing bootstrapped past the episode."""
    rew, end = torch.as_tensor(rew, dtype=torch.float32)[None], torch.as_tensor(end, dtype=torch.float32)[None]
    zeros = torch.zeros_like(rew)
    return lambda_returns(rew, end, zeros, zeros, gamma, lam=1.0)[0].numpy()


def clone_loss(actor_critic, batch: Batch, returns: torch.Tensor, burn_in: int,
               weight_value_loss: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Cross-entropy of the policy against the batch's actions and squared error of the value against
    `returns` (B, T), on the real steps after the burn-in -> (loss, metrics as 0-dim tensors).

    The value head learns on the LSTM's output detached: returns of up to tens of points would otherwise drown
    the actions' loss in the shared encoder (on a toy task the policy then stays at chance)."""
    h, _ = actor_critic.lstm_sequence(batch.obs[:, :batch.act.shape[1]])
    logits = actor_critic.actor_linear(h)
    value = actor_critic.critic_linear(h.detach()).squeeze(-1)  # reads the policy's features, never shapes them
    keep = batch.mask.clone()
    keep[:, :burn_in] = False
    weight = keep.float() / keep.sum().clamp_min(1)
    ce = F.cross_entropy(logits.flatten(0, 1).float(), batch.act.flatten(), reduction="none").view_as(weight)
    loss_actions = (ce * weight).sum()
    loss_values = ((value.float() - returns).pow(2) * weight).sum()
    accuracy = ((logits.argmax(-1) == batch.act).float() * weight).sum()
    return loss_actions + weight_value_loss * loss_values, {
        "loss_actions": loss_actions.detach(), "loss_values": loss_values.detach(), "accuracy": accuracy.detach()}


def make_optimizer(actor_critic, cfg: CloneConfig) -> torch.optim.AdamW:
    """AdamW with the LSTM at `cfg.lstm_lr` and everything else at `cfg.lr`.

    One learning rate for all fails on Breakout: the policy stays at the most common action. The encoder's
    features of two Breakout frames differ in the ball and the paddle only (8% of their spread at the start),
    and Adam moves each of the LSTM's 1,024 input weights of a gate by about the learning rate at once, so at
    1e-3 (or 3e-4) the gates' inputs shift by tenths per update, the gates saturate within a hundred updates and
    no gradient reaches the frame's details again. Measured on 20,000 scripted steps, single-frame probe, 400
    updates: 0.72 accuracy with the LSTM at 1e-4 and the rest at 1e-3, 0.42 (the majority) with all at 1e-3."""
    lstm = list(actor_critic.lstm.parameters())
    ids = {id(p) for p in lstm}
    rest = [p for p in actor_critic.parameters() if id(p) not in ids]
    return torch.optim.AdamW([{"params": rest, "lr": cfg.lr}, {"params": lstm, "lr": cfg.lstm_lr}],
                             weight_decay=0.0, eps=1e-8)


class Cloner:
    """Owns the sampler, the per-episode returns and the optimizer; `update()` does one step."""

    def __init__(self, actor_critic, store: EpisodeStore, cfg: CloneConfig, seed: int = 0):
        self.ac, self.store, self.cfg = actor_critic, store, cfg
        self.sampler = SegmentSampler(store, cfg.batch_size, cfg.seq_length, can_sample_beyond_end=False,
                                      sample_weights=None, seed=seed)
        self.returns = [discounted_returns(store[e].rew, store[e].end, cfg.gamma) for e in range(len(store))]
        self.optimizer = make_optimizer(actor_critic, cfg)

    def batch(self) -> tuple[Batch, torch.Tensor]:
        windows = self.sampler.sample_windows()
        ret = np.zeros((len(windows), self.cfg.seq_length), dtype=np.float32)
        for i, (e, start, stop) in enumerate(windows):
            lo = max(start, 0)
            ret[i, lo - start:stop - start] = self.returns[e][lo:stop]
        return make_batch(self.store, windows), torch.from_numpy(ret)

    def update(self, autocast_dtype: torch.dtype | None = None) -> dict:
        batch, returns = self.batch()
        self.ac.train()
        with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            loss, metrics = clone_loss(self.ac, batch, returns, self.cfg.burn_in, self.cfg.weight_value_loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.ac.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        return {k: float(v) for k, v in metrics.items()}

    def state_dict(self) -> dict:
        return {"actor_critic": self.ac.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": self.sampler.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.ac.load_state_dict(state["actor_critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.rng.bit_generator.state = state["rng"]
