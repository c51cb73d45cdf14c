"""The denoiser's and reward/end model's updates captured whole as CUDA graphs.

On a GPU a denoiser update is ~3.7k small kernels (forward, backward, clipping, AdamW): ~44 ms of GPU work
inside ~115 ms of wall clock on an H100, launch-bound. `GraphedUpdate` captures one whole update (loss ->
backward -> clip -> fused AdamW with its device lr -> schedule advance, `ModelOptimizer.device_step`) with
`torch.cuda.graph` after warm-up updates on a side stream (torch's whole-network capture recipe,
https://pytorch.org/docs/stable/notes/cuda.html#whole-network-capture); each later update copies its batch
into the static input buffers and replays the graph: one launch.

Same maths as `training.updates`, update for update: the warm-up updates are real updates of the real batches
(run eagerly), the capture itself computes nothing, and the update that captures then replays once. Random
draws (the denoiser's noise levels and noise) come from the device's default CUDA generator, which torch makes
graph-safe (each replay draws fresh numbers from its current offset: the same numbers as an eager update), or
from a generator registered with the graph. The host's step count (`ModelOptimizer.count_step`) is advanced after
each replay; the learning rate and AdamW's step count are device tensors the graph updates itself.

Where capture is not possible or not wanted the same object runs each update eagerly through the same static
buffers: on a CPU (so the CPU tests exercise this path apart from the capture), with a gradient sync across
ranks (gloo/NCCL collectives issued from Python), with bfloat16 autocast (its weight cache is not graph-safe), and
when `DREAMARCADE_CUDA_GRAPHS=0` is set.

The graph holds the addresses of the parameters, their gradients and AdamW's state: they must not be replaced
while it lives (loading a state dict copies into them in place; `ModelOptimizer.load_state_dict` does not, so it
comes before the first update, as `training.session` does).
"""
from __future__ import annotations

import os
from dataclasses import fields, replace
from typing import Callable

import torch
from torch import Tensor

from model.batch import Batch
from model.precision import TRAINING, resolve
from training.optim import ModelOptimizer
from training.updates import denoiser_losses, rew_end_losses

WARMUP = 3  # eager updates on a side stream before the capture (torch's recipe): lazy state, cuDNN/cuBLAS choices
ENV = "DREAMARCADE_CUDA_GRAPHS"  # "0": training captures nothing (updates and imagined steps run eagerly)

Losses = Callable[[Batch], tuple[Tensor, dict]]  # batch -> (loss to minimise, metrics: 0-dim device tensors)


def cuda_graphs_enabled() -> bool:
    """False where the user turned training's CUDA graphs off (`DREAMARCADE_CUDA_GRAPHS=0`: the updates and the
    imagined steps), else True."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class GraphedUpdate:
    """One model's optimizer update on batches of one fixed shape, through static input buffers; captured as a
    CUDA graph and replayed where `capture` is True (a CUDA model), else run eagerly.

    losses: batch -> (loss, metrics), e.g. `training.updates.denoiser_losses` bound to an agent.
    generators: non-default CUDA generators the losses draw from (registered with the graph).
    __call__(batch) -> metrics | {"grad_norm", "lr"}: 0-dim device tensors (fresh each call) and `lr` a float, as
    `training.updates.denoiser_update`. Raises ValueError for a batch of another shape than the first one's.
    """

    def __init__(self, losses: Losses, optimizer: ModelOptimizer, capture: bool, warmup: int = WARMUP,
                 generators: tuple[torch.Generator, ...] = (), name: str = "update") -> None:
        if capture and warmup < 1:  # AdamW's state is made at its first step: never inside the graph
            raise ValueError(f"a captured update needs at least one warm-up update, got warmup={warmup}")
        self.losses, self.optimizer, self.capture, self.name = losses, optimizer, capture, name
        self.warmup, self.generators = warmup, generators
        self.static: Batch | None = None  # the input buffers, allocated at the first call
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: dict | None = None  # the graph's metrics, overwritten by each replay
        self._eager_calls = 0
        self._stream: torch.cuda.Stream | None = None  # the warm-up's and the capture's

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, batch: Batch) -> dict:
        self._load(batch)
        if not self.capture:
            metrics = self._device_update()
        elif self.graph is None and self._eager_calls < self.warmup:
            metrics = self._warmup_update()
        else:
            if self.graph is None:
                self._capture()
            self.graph.replay()
            metrics = {k: v.clone() for k, v in self.outputs.items()}
        self.optimizer.count_step()  # which also bumps the weights' versions: the replay changed them unseen
        return metrics | {"lr": self.optimizer.lr}

    def _load(self, batch: Batch) -> None:
        """Copies batch into the static buffers (allocated like it at the first call)."""
        if self.static is None:
            self.static = replace(batch, **{f.name: getattr(batch, f.name).clone() for f in fields(batch)})
            return
        for f in fields(batch):
            buf, x = getattr(self.static, f.name), getattr(batch, f.name)
            if buf.shape != x.shape or buf.dtype != x.dtype:
                raise ValueError(f"{self.name}: built for batches with {f.name} {tuple(buf.shape)} {buf.dtype}, "
                                 f"got {tuple(x.shape)} {x.dtype}")
            buf.copy_(x, non_blocking=True)

    def _device_update(self) -> dict:
        """The update's device work on the static batch -> metrics | {"grad_norm"}: what the graph captures."""
        loss, metrics = self.losses(self.static)
        return metrics | {"grad_norm": self.optimizer.device_step(loss)}

    def _warmup_update(self) -> dict:
        """A real update, run eagerly on the side stream that will capture (torch's recipe: warm-up off the
        default stream; the same stream as the capture's, so that the libraries' per-stream handles and
        workspaces are made here and not during the capture)."""
        device = self.static.obs.device
        if self._stream is None:
            self._stream = torch.cuda.Stream(device)
        self._stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(self._stream):
            metrics = self._device_update()
        torch.cuda.current_stream(device).wait_stream(self._stream)
        self._eager_calls += 1
        return metrics

    def _capture(self) -> None:
        device = self.static.obs.device
        self.optimizer.make_capturable()
        self.optimizer.optimizer.zero_grad(set_to_none=True)  # backward allocates the grads in the graph's pool
        graph = torch.cuda.CUDAGraph()
        for g in self.generators:
            graph.register_generator_state(g)
        try:
            with torch.cuda.device(device), torch.cuda.graph(graph, stream=self._stream,
                                                             capture_error_mode="thread_local"):
                outputs = self._device_update()  # thread_local: other threads (the player, a writer) may use CUDA
        except RuntimeError as e:
            raise RuntimeError(f"capturing the {self.name} as a CUDA graph failed ({e}); {ENV}=0 runs it "
                               "eagerly") from e
        self.graph, self.outputs = graph, outputs


def can_capture(device: torch.device | str, precision: str, grad_sync: bool = False,
                enabled: bool | None = None) -> bool:
    """True where an update can be captured: a CUDA model, no gradient sync, float32 (`model.precision`), not
    turned off (enabled None: `cuda_graphs_enabled()`)."""
    device = torch.device(device)
    enabled = cuda_graphs_enabled() if enabled is None else enabled
    return enabled and device.type == "cuda" and not grad_sync and resolve(precision, device) == "float32"


def _capture(optimizer: ModelOptimizer, precision: str, enabled: bool | None) -> bool:
    device = next(optimizer.model.parameters()).device
    return can_capture(device, precision, optimizer.grad_sync is not None, enabled)


def graphed_denoiser_update(agent, optimizer: ModelOptimizer, generator: torch.Generator | None = None,
                            precision: str = TRAINING, cuda_graphs: bool | None = None,
                            warmup: int = WARMUP) -> GraphedUpdate:
    """`training.updates.denoiser_update` as a `GraphedUpdate` (batches (B, T = 6, ...)). generator: None for the
    default one (the training loop's); a CUDA generator is registered with the graph."""
    gens = (generator,) if generator is not None and generator.device.type == "cuda" else ()
    return GraphedUpdate(lambda b: denoiser_losses(agent, b, generator, precision), optimizer,
                         _capture(optimizer, precision, cuda_graphs), warmup, gens, "denoiser update")


def graphed_rew_end_update(agent, optimizer: ModelOptimizer, precision: str = TRAINING,
                           cuda_graphs: bool | None = None, warmup: int = WARMUP) -> GraphedUpdate:
    """`training.updates.rew_end_update` as a `GraphedUpdate` (batches (B, T = 19, ...))."""
    return GraphedUpdate(lambda b: rew_end_losses(agent, b, precision), optimizer,
                         _capture(optimizer, precision, cuda_graphs), warmup, (), "reward/end update")
