"""Real starting contexts for imagined games, held on the device with their reward/end burn-in done in bulk
(as the reference preloads them), handed to the games that die without any host synchronisation.

Dead games take fresh contexts in the order they were drawn: at each step, dead row i takes the context at
`consumed + (number of dead rows before i)`, by index arithmetic on the device (the other rows get some context
that `WorldModelEnv.reset_rows` ignores). So the contexts a run uses are the ones the old per-step draws used,
in the same order, and the batch shape never depends on how many games died.

The pool is a ring of `capacity` contexts. Between updates the host writes fresh contexts over used ones. It
knows how many were used from a copy of the device counter made one update earlier (non-blocking; on a GPU an
event says when it has landed), and keeps room for everything the updates in flight may still take; it waits
for the device only when that bound leaves no room, which a capacity of 3 updates' worst case avoids.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from model.fast import weights_version

# n -> (obs (n, 4, 3, H, W) float in [-1, 1], act (n, 4) long): real contexts from the train episodes
ContextSampler = Callable[[int], tuple[Tensor, Tensor]]


class ContextPool:
    """`capacity` real contexts on the world model's device, filled `chunk` at a time from sample_context.

    wm: the `model.world_model_env.WorldModelEnv` the games run on (its reward/end model burns the contexts in).
    max_draws: the most contexts one update can take (games x imagined steps).
    """

    def __init__(self, wm, sample_context: ContextSampler, chunk: int, max_draws: int) -> None:
        self.wm, self.sample_context, self.chunk, self.max_draws = wm, sample_context, chunk, max_draws
        self.device = wm.device
        # a GPU runs behind the host by up to ~2 updates; a CPU is never behind (its counter is read as it is)
        self.capacity = chunk * (-(-(3 if self.device.type == "cuda" else 1) * max_draws // chunk) + 1)
        self.consumed = torch.zeros((), dtype=torch.long, device=self.device)  # contexts taken so far
        self.filled = 0  # contexts written so far (host); slot of context k: k % capacity
        self.issued = 0  # updates prepared so far
        self.known = (0, 0)  # (contexts taken, updates prepared) as of the last counter copy that has landed
        self._pending: list[tuple[Tensor, object, int]] = []  # counter copies in flight: (copy, event, issued)
        self.obs = self.act = self.state = None
        self._rew_end_key: tuple | None = None

    def prepare(self) -> None:
        """Before an update: refill used slots and redo the burn-in if the reward/end weights changed."""
        self._learn_consumed(wait=False)
        # the most the device may have taken once this update has run, and how far the pool can be filled now
        upper = lambda: self.known[0] + (self.issued + 1 - self.known[1]) * self.max_draws
        reach = lambda: self.filled + (self.known[0] + self.capacity - self.filled) // self.chunk * self.chunk
        while reach() < upper() and self._pending:  # the device is far behind: wait for its oldest counter copy
            self._learn_consumed(wait=True)
        key = weights_version(self.wm.agent.rew_end)
        if key != self._rew_end_key and self.obs is not None:
            self._burn_in_all()
        self._rew_end_key = key
        while self.filled + self.chunk <= self.known[0] + self.capacity:
            self._write_chunk()
        if self.filled < upper():
            raise RuntimeError("context pool too small for the draws in flight")  # a bug: capacity covers them
        self.issued += 1
        self._copy_counter()

    def draw(self, dead: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """dead (B,) bool on the device -> contexts for every row: obs (B, n, 3, H, W), act (B, n) and reward/end
        state ((1, B, D) each); fresh ones, in drawing order, at the dead rows. No host synchronisation."""
        slot = (self.consumed + dead.long().cumsum(0) - 1) % self.capacity
        self.consumed += dead.sum()
        return self.obs[slot], self.act[slot], (self.state[0][:, slot], self.state[1][:, slot])

    # internals

    def _write_chunk(self) -> None:
        obs, act = self.sample_context(self.chunk)
        obs, act = obs.to(self.device, torch.float32, non_blocking=True), act.to(self.device, non_blocking=True)
        h, c = self.wm.burn_in(obs, act)
        if self.obs is None:
            # zeros, not garbage: rows that do not restart still read (and discard) a slot, and NaNs there would
            # reach the weights' gradients through 0 * NaN
            self.obs = obs.new_zeros(self.capacity, *obs.shape[1:])
            self.act = act.new_zeros(self.capacity, *act.shape[1:])
            self.state = tuple(s.new_zeros(1, self.capacity, s.shape[2]) for s in (h, c))
        i = self.filled % self.capacity
        rows = slice(i, i + self.chunk)
        self.obs[rows], self.act[rows] = obs, act
        self.state[0][:, rows], self.state[1][:, rows] = h, c
        self.filled += self.chunk

    def _burn_in_all(self) -> None:
        """The reward/end weights changed (the world model trained meanwhile): burn every stored context in again."""
        for i in range(0, min(self.filled, self.capacity), self.chunk):
            rows = slice(i, i + self.chunk)
            self.state[0][:, rows], self.state[1][:, rows] = self.wm.burn_in(self.obs[rows], self.act[rows])

    def _copy_counter(self) -> None:
        """On a GPU: copies the counter to the host without waiting (it lands when the device gets there)."""
        if self.device.type == "cuda":
            copy = torch.empty((), dtype=torch.long, pin_memory=True)
            copy.copy_(self.consumed, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending.append((copy, event, self.issued - 1))

    def _learn_consumed(self, wait: bool) -> None:
        """Takes the newest counter copy that has landed (waiting for the oldest one if `wait`)."""
        if self.device.type != "cuda":  # nothing in flight: read it as it is
            self.known = (int(self.consumed), self.issued)
            return
        if wait:
            self._pending[0][1].synchronize()
        while self._pending and self._pending[0][1].query():
            copy, _, issued = self._pending.pop(0)
            self.known = (int(copy), issued)
