"""Which precision each computation runs in: the named policies, resolved in one place (`resolve`).

A policy is what a caller asks for; `resolve(policy, device)` turns it into a precision, "float32" or "bfloat16":
- "float32": the reference's numbers (and the exact module path of the world model);
- "bfloat16": the fast path (`model.fast`) for inference, bfloat16 autocast for training, on any device (emulated,
  and slower, where the hardware lacks bfloat16);
- "auto": "bfloat16" where the device runs it natively (CUDA with bf16, a CPU with AVX512-BF16 or AMX), else
  "float32": `play`'s default and training's imagination (on a GPU each imagined step one CUDA graph);
- "auto-gpu": "auto" on a GPU, "float32" on a CPU;
- "auto-cpu": "auto" on a CPU, "float32" on a GPU: training's denoiser and reward/end updates (bfloat16 autocast
  on a CPU with native bf16; on a GPU float32, each update one CUDA graph: autocast was slower on an H100).

Measured for training on the reference-size model (random weights, synthetic batch): the denoiser and reward/end
losses under autocast differ from float32 by ~3e-5 relative, and a training step is 1.9-2.4x (denoiser) and
2.1-2.7x (reward/end) faster on an AVX512-BF16 CPU (AMD Zen 4), and imagination with the bfloat16 world model
1.7x; the Catch learning run passes with both (0.96; float32: 0.93). `train --precision float32` keeps the
reference's numbers there.
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("float32", "bfloat16")
POLICIES = ("auto", "auto-gpu", "auto-cpu", *PRECISIONS)

# the default policy of each use
PLAY = "auto"  # `play`'s world model and agent
TRAINING = "auto-cpu"  # the denoiser and reward/end updates (bfloat16 autocast was slower on an H100)
IMAGINATION = "auto"  # training's imagined games (the world model; the actor-critic trains in float32)
EVALUATION = "float32"  # `eval --fidelity`: the reference's numbers


def bf16_native(device: torch.device | str) -> bool:
    """True where bfloat16 matmuls/convs run natively: CUDA with bf16, or a CPU with AVX512-BF16 or AMX."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                    or getattr(cpu, "_is_amx_tile_supported", lambda: False)())
    return False


def resolve(policy: str, device: torch.device | str) -> str:
    """The precision ("float32" or "bfloat16") that policy (one of POLICIES) gives on device.

    Raises ValueError for anything else."""
    device = torch.device(device)
    if policy in ("auto-gpu", "auto-cpu"):
        policy = "auto" if (device.type == "cuda") == (policy == "auto-gpu") else "float32"
    if policy == "auto":
        return "bfloat16" if bf16_native(device) else "float32"
    if policy not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(POLICIES)}, got {policy!r}")
    return policy


def training_policies(precision: str) -> tuple[str, str]:
    """`train --precision` -> the policies of (the world model's updates, imagination): "auto" gives training's
    defaults (TRAINING, IMAGINATION); "float32" or "bfloat16" is used for both."""
    return (TRAINING, IMAGINATION) if precision == "auto" else (precision, precision)


def channels_last_(module: torch.nn.Module) -> torch.nn.Module:
    """Stores module's 4-D weights channels-last, in place (once: later calls only check). Convolutions then run
    channels-last, forward and backward: a training step is 1.1-1.2x faster on CPU, the same in value."""
    if any(p.ndim == 4 and not p.is_contiguous(memory_format=torch.channels_last) for p in module.parameters()):
        module.to(memory_format=torch.channels_last)
    return module


def autocast(device: torch.device | str, policy: str):
    """Context for a training forward + loss under policy: bfloat16 autocast, or nothing for float32."""
    device = torch.device(device)
    if resolve(policy, device) == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
