"""The batch that every loss takes: tensors with documented shapes and an explicit padding mask."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass
class Batch:
    """Segments of episodes, time-aligned as the reference (diamond.md 3.2).

    obs   (B, T, 3, H, W) float32 in [-1, 1]: obs[:, t] is the frame before act[:, t].
    act   (B, T) int64: the action taken at frame t, leading to frame t + 1.
    rew   (B, T) float32: raw reward of act[:, t].
    end   (B, T) uint8: 1 where act[:, t] ended the episode.
    trunc (B, T) uint8: 1 where the episode was cut (time limit) after act[:, t].
    mask  (B, T) bool: True where step t is real, False where it is padding.

    Padding frames are zeros (mid-gray). Exception: the first padded step right after an episode's last
    real step holds that episode's final observation when it is known, so obs[:, t + 1] is always the
    frame that followed a real step t (the reward/end model needs it).
    """

    obs: torch.Tensor
    act: torch.Tensor
    rew: torch.Tensor
    end: torch.Tensor
    trunc: torch.Tensor
    mask: torch.Tensor

    def to(self, device: torch.device | str) -> "Batch":
        return replace(self, **{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})

    def __len__(self) -> int:
        return self.obs.shape[0]
