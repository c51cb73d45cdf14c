"""The world model's step as one CUDA graph: on a GPU, one imagined step of B games (the next frame's Euler
denoising steps on the fast path, then the reward/end logits and LSTM state) is hundreds of small kernels, and
launching them from Python, not their arithmetic, sets the speed. Captured once, the step is replayed with one
launch.

Same networks, sampler and numbers as the fast path (`fast_step`: `model.fast` and `model.sampler`'s one Euler
loop); used by `WorldModelEnv` on CUDA for the bfloat16 path with the Euler sampler and no churn (the reference's
settings). A graph is captured per (batch size, schedule) and captured again when the weights change (an
optimizer step between imagination phases).
"""
from __future__ import annotations

import torch
from torch import Tensor

from model.fast import FastAgent
from model.sampler import keep_still, sample_next_obs


@torch.no_grad()
def fast_step(fast: FastAgent, sigmas: Tensor, obs: Tensor, act: Tensor, noise: Tensor,
              state: tuple[Tensor, Tensor], still_levels: float = 0.0) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One world-model step of B games on the fast path, what `GraphedStep` captures: the next frame
    (`sample_next_obs`, Euler, from noise, then `keep_still`) and the reward/end logits and LSTM state after it.

    sigmas: the schedule, on the CPU (`karras_sigmas`); obs (B, n, 3, H, W), act (B, n), noise (B, 3, H, W),
    state ((1, B, D), (1, B, D)) -> next_obs (B, 3, H, W), rew_logits (B, 3), end_logits (B, 2), h, c."""
    ctx = fast.denoiser.context(obs, act, sigmas)
    next_obs = keep_still(sample_next_obs(ctx, obs, act, sigmas, noise=noise).float(), obs[:, -1], still_levels)
    rew_logits, end_logits, (h, c) = fast.rew_end(obs[:, -1:], act[:, -1:], next_obs.unsqueeze(1), state)
    return next_obs, rew_logits[:, 0].float(), end_logits[:, 0].float(), h.float(), c.float()


class GraphedStep:
    """One world-model step of B games as a CUDA graph.

    __call__(obs (B, n, 3, H, W), act (B, n), noise (B, 3, H, W), state ((1, B, D), (1, B, D)))
    -> next_obs (B, 3, H, W) float32, rew_logits (B, 3), end_logits (B, 2), new state: fresh tensors each call.
    """

    def __init__(self, fast: FastAgent, sigmas: Tensor, obs: Tensor, act: Tensor, noise: Tensor,
                 state: tuple[Tensor, Tensor], still_levels: float = 0.0) -> None:
        self.fast = fast
        self.sigmas = sigmas.detach().cpu()
        self.still_levels = still_levels
        self.inputs = [t.clone() for t in (obs, act, noise, *state)]
        self.key = self._weights_key()
        side = torch.cuda.Stream(obs.device)
        side.wait_stream(torch.cuda.current_stream(obs.device))
        with torch.cuda.stream(side):  # warm-up off the capture: caches, cuDNN/cuBLAS choices
            for _ in range(2):
                self._run()
        torch.cuda.current_stream(obs.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):  # the player draws on another thread
            self.outputs = self._run()

    def _run(self):
        obs, act, noise, h, c = self.inputs
        return fast_step(self.fast, self.sigmas, obs, act, noise, (h, c), self.still_levels)

    def _weights_key(self) -> tuple:
        return self.fast.denoiser.sync(), self.fast.rew_end.sync()

    def valid_for(self, batch_size: int) -> bool:
        """True if a replay computes the current weights' step at this batch size (the owner drops the graph
        when the schedule changes)."""
        return self.inputs[0].shape[0] == batch_size and self._weights_key() == self.key

    @torch.no_grad()
    def __call__(self, obs: Tensor, act: Tensor, noise: Tensor, state: tuple[Tensor, Tensor]):
        for buf, x in zip(self.inputs, (obs, act, noise, *state)):
            buf.copy_(x)
        self.graph.replay()
        next_obs, rew_logits, end_logits, h, c = (t.clone() for t in self.outputs)
        return next_obs, rew_logits, end_logits, (h, c)
