"""The one place where frames change between uint8 and float.

uint8 frames (..., 3, H, W) in [0, 255] <-> float32 frames in [-1, 1], as the reference: x / 255 * 2 - 1.
"""
from __future__ import annotations

import torch


def to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] -> float32 in [-1, 1], any shape; a new tensor, whatever the input's dtype."""
    return frames.to(torch.float32).div(127.5).sub_(1.0)  # div makes the copy: a float input stays as it is


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8, rounded to the nearest level (exact inverse of `to_float`), any shape."""
    return frames.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def quantize(frames: torch.Tensor) -> torch.Tensor:
    """Clamp to [-1, 1] and snap to 8 bits by truncation, as the reference does to every denoised estimate
    (diamond.md 1.2: `.byte()` floors). Kept bit-exact for parity with released weights."""
    return frames.clamp(-1, 1).add(1).div(2).mul(255).to(torch.uint8).float().div(255).mul(2).sub(1)
