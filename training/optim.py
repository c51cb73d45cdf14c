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

    `step(loss)` runs backward, syncs gradients if asked, clips, steps and advances the schedule; it returns the
    gradient norm before clipping, as a 0-dim tensor on the model's device. As the reference, the first optimizer
    step has learning rate 0 (warm-up starts at 0).

    Nothing here reads the device: the learning rate lives in a device tensor that the fused AdamW reads there
    (the schedule is advanced on the device too), and the gradient norm stays a tensor. So a GPU never waits
    for the host here: `device_step` is what `training.graphed_updates` captures in a CUDA graph, and
    `count_step` the host's bookkeeping done after each replay.
    """

    def __init__(self, model: nn.Module, cfg: OptimConfig, grad_sync: Callable[[nn.Module], None] | None = None) -> None:
        self.model = model
        self.cfg = cfg
        self.grad_sync = grad_sync  # e.g. averaging over data-parallel ranks (training.ddp.average_gradients)
        device = next(model.parameters()).device
        self._warmup = max(1, cfg.warmup_steps)
        self._num_steps = 0
        self._step = torch.zeros((), device=device)  # the schedule's step count, on the device
        self._lr = torch.zeros((), device=device)  # LambdaLR(step / warmup) at step 0
        self.optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=self._lr, eps=cfg.eps,
                                           **_fast_kernel(device))
        self._capturable = self.optimizer.param_groups[0]["capturable"]
        self._attach_lr()
        self._params = [p for group in self.optimizer.param_groups for p in group["params"]]

    @property
    def lr(self) -> float:
        """The learning rate of the next step (a host value: no device read)."""
        return self.cfg.lr * min(1.0, self._num_steps / self._warmup)

    @property
    def num_steps(self) -> int:
        return self._num_steps

    def step(self, loss: torch.Tensor) -> torch.Tensor:
        grad_norm = self.device_step(loss)
        self.count_step()
        return grad_norm

    def device_step(self, loss: torch.Tensor) -> torch.Tensor:
        """`step`'s work on the device: backward, gradient sync, clipping, AdamW and the schedule's advance. It
        neither reads nor changes host state, so a CUDA graph can capture it (`training.graphed_updates`); each
        replay must be followed by `count_step`."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_sync is not None:
            self.grad_sync(self.model)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self._step += 1
        torch.mul(self._step.div(self._warmup).clamp_(max=1.0), self.cfg.lr, out=self._lr)
        return grad_norm.detach()

    def count_step(self) -> None:
        """`step`'s host bookkeeping (the step count behind `lr`, `num_steps` and the checkpoint), and telling torch
        that the weights changed: fused AdamW (and a CUDA graph's replay) writes them without bumping their
        version counters, and the copies made from them (the world model's bfloat16 copy, `model.fast`; the
        context pool's reward/end burn-in, `training.context_pool`) are re-made only when those change."""
        self._num_steps += 1
        torch.autograd.graph.increment_version(self._params)

    def make_capturable(self) -> None:
        """Marks AdamW capturable, which torch asks of an optimizer stepped inside a CUDA graph capture (the fused
        kernel keeps its step count and lr on the device either way: the numbers do not change)."""
        self._capturable = True
        self._attach_lr()

    def state_dict(self) -> dict:
        # "scheduler" keeps the form of torch's LambdaLR state ("last_epoch": steps done)
        return {"optimizer": self.optimizer.state_dict(), "scheduler": {"last_epoch": self._num_steps}}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self._num_steps = int(state["scheduler"]["last_epoch"])
        self._step.fill_(self._num_steps)
        self._lr.fill_(self.lr)
        self._attach_lr()

    def _attach_lr(self) -> None:
        """Every parameter group reads the one device lr and keeps this session's `capturable` (a loaded state dict
        brings its own values)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr
            group["capturable"] = self._capturable


def _fast_kernel(device: torch.device) -> dict:
    """AdamW's fused kernel (one launch for all parameters; it reads the lr as a device tensor) where torch has
    it for the device, else the capturable for-each one (which reads it there too)."""
    return {"fused": True} if device.type in ("cuda", "cpu", "xpu", "mps") else {"foreach": True, "capturable": True}
