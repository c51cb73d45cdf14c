"""The conditioned U-Net of the denoiser (diamond.md 1.1, "UNet")."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from model.blocks import Downsample, ResBlocks, ScaleShift, Upsample


class UNet(nn.Module):
    """U-Net over len(channels) levels, each halving the resolution, with 2 attention blocks in the middle.

    forward: x (B, channels[0], H, W), cond (B, cond_channels) or its precomputed `ScaleShift`
    -> (B, channels[0], H, W), any H and W: the input is zero-padded right/bottom to a multiple of
    2^(levels - 1) and the output cropped back.
    """

    def __init__(self, cond_channels: int, depths: list[int], channels: list[int], attn_depths: list[bool]) -> None:
        super().__init__()
        if not len(depths) == len(channels) == len(attn_depths):
            raise ValueError("depths, channels and attn_depths must have the same length")
        self.num_down = len(channels) - 1

        d_blocks, u_blocks = [], []
        for i, n in enumerate(depths):
            c_prev, c = channels[max(0, i - 1)], channels[i]
            d_blocks.append(ResBlocks([c_prev] + [c] * (n - 1), [c] * n, cond_channels, bool(attn_depths[i])))
            # each up block consumes the n + 1 skips of its level (the downsampled input and n block outputs)
            u_blocks.append(ResBlocks([2 * c] * n + [c_prev + c], [c] * n + [c_prev], cond_channels, bool(attn_depths[i])))
        self.d_blocks = nn.ModuleList(d_blocks)
        self.u_blocks = nn.ModuleList(reversed(u_blocks))  # index 0 is the deepest level, as the reference
        self.mid_blocks = ResBlocks([channels[-1]] * 2, [channels[-1]] * 2, cond_channels, attn=True)
        self.downsamples = nn.ModuleList([nn.Identity()] + [Downsample(c) for c in channels[:-1]])
        self.upsamples = nn.ModuleList([nn.Identity()] + [Upsample(c) for c in reversed(channels[:-1])])

    def forward(self, x: Tensor, cond: Tensor | ScaleShift) -> Tensor:
        h, w = x.shape[-2:]
        m = 2**self.num_down
        pad_h, pad_w = -h % m, -w % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))

        skips = []
        for block, down in zip(self.d_blocks, self.downsamples):
            x_down = down(x)
            x, outputs = block(x_down, cond)
            skips.append([x_down, *outputs])

        x, _ = self.mid_blocks(x, cond)

        for block, up, level_skips in zip(self.u_blocks, self.upsamples, reversed(skips)):
            x, _ = block(up(x), cond, level_skips[::-1])

        return x[..., :h, :w]
