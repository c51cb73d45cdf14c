"""Data-parallel training under `torchrun --nproc_per_node N` (gloo on CPU, NCCL on GPU).

The split (diamond.md 4.5, changed so that more processes do the same work in less time):
- rank 0 alone owns the real envs, collection, evaluation, logging and saving; the others read the
  episode store from disk after each epoch's barrier;
- the preset's batch sizes are GLOBAL: each of N ranks computes 1/N of every batch (and of the imagined
  envs), on data drawn with its own random stream, and gradients are averaged before every optimizer step.
  So N processes make the same updates with the same hyperparameters as one process, each doing 1/N of the work
  (the reference instead multiplied the batch by N, doing N times the work in the same time).
Gradients are averaged by one coalesced all-reduce per update, which is what DDP does; we do it by hand
because the actor-critic runs many forward passes (an imagined rollout) before each backward.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from weights.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def share(self, n: int) -> int:
        """This rank's share of a global batch of n (the first n % world_size ranks take one more)."""
        return n // self.world_size + (1 if self.rank < n % self.world_size else 0)


def init_world(device: str | None = None) -> World:
    """Joins the process group when launched by torchrun (WORLD_SIZE > 1), else a world of one.

    device: "cpu", "cuda", "cuda:1", ... or None for CUDA when available. Under torchrun with CUDA each
    rank takes GPU LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine")
    if world_size <= 1:
        return World(device=torch.device(device or ("cuda" if use_cuda else "cpu")))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        # torch._dynamo (imported lazily by the first optimizer) keeps a reference to a process group that exists
        # when it is imported: that group then outlives destroy_process_group, and its gloo threads still run
        # when the process exits, where they abort it now and then ("terminate called without an active
        # exception"). Imported first, it holds nothing.
        importlib.import_module("torch._dynamo")
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return World(rank, world_size, dev)


def close_world(world: World) -> None:
    """Leaves the process group; its communication threads end here, before the process exits."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def broadcast_module(module: nn.Module, world: World) -> None:
    """Copies rank 0's parameters and buffers to every rank (start and resume)."""
    if world.distributed:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def broadcast_object(obj, world: World):
    """Rank 0's `obj` on every rank (small picklable objects: counters, flags)."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def average_gradients(module: nn.Module, world: World) -> None:
    """Averages .grad over ranks with one coalesced all-reduce (parameters without a grad count as zero)."""
    if not world.distributed:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def all_reduce_mean(values: dict[str, float], world: World) -> dict[str, float]:
    """Averages scalar metrics over ranks (for logging on rank 0)."""
    if not world.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / world.world_size for k, v in zip(keys, t)}
