"""One optimizer per model, owning its own state: AdamW, warm-up schedule, gradient clipping (diamond.md 4.3)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    warmup_steps: int = 100  # LambdaLR(step / warmup_steps), then constant (no decay)
    eps: float = 1e-8


# minGPT's `configure_optimizers` split, as the reference: decay the weights of these layers only.
_DECAYED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.LSTM, nn.LSTMCell)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weights of Linear/Conv/LSTM layers get weight decay; biases, norms and embeddings do not."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            if isinstance(module, _DECAYED) and name.startswith("weight"):
                decay.append(p)
            else:
                no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class ModelOptimizer:
    """AdamW + linear warm-up + gradient clipping for one model.

    `step(loss)` runs backward, syncs gradients if asked, clips, steps and advances the schedule; it returns the gradient norm
    before clipping. As the reference, the first optimizer step has learning rate 0 (warm-up starts at 0).
    """

    def __init__(self, model: nn.Module, cfg: OptimConfig, grad_sync: Callable[[nn.Module], None] | None = None) -> None:
        self.model = model
        self.cfg = cfg
        self.grad_sync = grad_sync  # e.g. averaging over data-parallel ranks (training.ddp.average_gradients)
        self.optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, eps=cfg.eps)
        warmup = max(1, cfg.warmup_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: min(1.0, step / warmup))

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @property
    def num_steps(self) -> int:
        return self.scheduler.last_epoch

    def step(self, loss: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_sync is not None:
            self.grad_sync(self.model)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return float(grad_norm)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
