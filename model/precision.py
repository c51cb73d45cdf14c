"""Mixed precision for training: bfloat16 autocast where the hardware runs it natively.

Measured on the reference-size model (random weights, synthetic batch): the denoiser and reward/end losses
under autocast differ from float32 by ~3e-5 relative, and a training step is 1.9x (denoiser) and 2.2-2.7x
(reward/end) faster on an AVX512-BF16 CPU. Where bfloat16 is not native, float32 is used (autocast would be slower).
"""
from __future__ import annotations

import contextlib

import torch

from model.fast import default_precision

PRECISIONS = ("float32", "bfloat16")


def resolve(precision: str | None, device: torch.device | str) -> str:
    """None -> the device's default (`model.fast.default_precision`); else checked."""
    if precision is None:
        return default_precision(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def channels_last_(module: torch.nn.Module) -> torch.nn.Module:
    """Stores module's 4-D weights channels-last, in place (once: later calls only check). Convolutions then run
    channels-last, forward and backward: a training step is 1.1-1.2x faster on CPU, the same in value."""
    if any(p.ndim == 4 and not p.is_contiguous(memory_format=torch.channels_last) for p in module.parameters()):
        module.to(memory_format=torch.channels_last)
    return module


def autocast(device: torch.device | str, precision: str | None = None):
    """Context for a training forward + loss: bfloat16 autocast, or nothing for float32."""
    device = torch.device(device)
    if resolve(precision, device) == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
