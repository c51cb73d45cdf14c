"""Building blocks shared by the denoiser, the reward/end model and the actor-critic (diamond.md 1.1).

Module and parameter names follow DIAMOND's (`norm1.linear`, `attn.qkv_proj`, `f.0.norm`, ...) so that
its checkpoints load 1:1. All tensors are (B, C, H, W) unless said otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GN_GROUP_SIZE = 32  # groups of 32 channels (not 32 groups): C=64 -> 2 groups
GN_EPS = 1e-5
ATTN_HEAD_DIM = 8


def num_groups(channels: int) -> int:
    return max(1, channels // GN_GROUP_SIZE)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)


class GroupNorm(nn.Module):
    """Affine GroupNorm with groups of 32 channels (the inner `norm` gives the reference's key names)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(num_groups(channels), channels, eps=GN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x)


@dataclass(frozen=True, eq=False)
class ScaleShift:
    """Precomputed conditioning, given to the conditioned blocks in place of the condition vector: every
    AdaGroupNorm's `1 + scale` and `shift` for a batch of B conditions, side by side in `values` (B, S), layer
    `norm`'s at `offsets[norm]`. The fast path (`model.fast`) computes them for all layers in one matmul, once
    for all the denoising steps of a frame."""

    values: Tensor
    offsets: dict[nn.Module, int]

    def of(self, norm: "AdaGroupNorm") -> tuple[Tensor, Tensor]:
        """-> (1 + scale, shift) of layer norm, each (B, C)."""
        off, c = self.offsets[norm], norm.channels
        return self.values[:, off : off + c], self.values[:, off + c : off + 2 * c]


class AdaGroupNorm(nn.Module):
    """GroupNorm without affine, then `x * (1 + scale) + shift` with [scale | shift] = Linear(cond)."""

    def __init__(self, channels: int, cond_channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.groups = num_groups(channels)
        self.eps = GN_EPS
        self.linear = nn.Linear(cond_channels, 2 * channels)

    def forward(self, x: Tensor, cond: Tensor | ScaleShift) -> Tensor:
        """x (B, C, H, W), cond (B, cond_channels) or this layer's precomputed `ScaleShift` -> (B, C, H, W)."""
        if isinstance(cond, ScaleShift):
            scale, shift = cond.of(self)
            if x.shape[0] == 1:  # a per-sample affine is a per-channel one: let group_norm apply it
                return F.group_norm(x, self.groups, scale[0], shift[0], self.eps)
            x = F.group_norm(x, self.groups, eps=self.eps)
            return torch.addcmul(shift[:, :, None, None], x, scale[:, :, None, None])
        x = F.group_norm(x, self.groups, eps=self.eps)
        scale, shift = self.linear(cond)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + scale) + shift


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the H*W positions, heads of 8 channels."""

    def __init__(self, channels: int, head_dim: int = ATTN_HEAD_DIM) -> None:
        super().__init__()
        self.n_head = max(1, channels // head_dim)
        if channels % self.n_head:
            raise ValueError(f"{channels} channels do not split into {self.n_head} heads")
        self.norm = GroupNorm(channels)
        self.qkv_proj = conv1x1(channels, 3 * channels)
        self.out_proj = conv1x1(channels, channels)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        x = self.norm(x)
        # channels are grouped as (3 * n_head, c / n_head): first the q heads, then k, then v
        qkv = self.qkv_proj(x).view(b, 3 * self.n_head, c // self.n_head, h * w).transpose(2, 3)
        q, k, v = qkv.chunk(3, dim=1)  # each (B, n_head, HW, head_dim)
        y = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head_dim)) v
        y = y.transpose(2, 3).reshape(b, c, h, w)
        # as the reference: the residual is the *normalised* input, which its released weights expect
        return x + self.out_proj(y)


class FourierFeatures(nn.Module):
    """Random Fourier features of a scalar: (B,) -> (B, D). The fixed random `weight` is a buffer saved in
    the checkpoint (as the reference): it must be loaded, never re-sampled."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"FourierFeatures needs an even dimension, got {dim}")
        self.register_buffer("weight", torch.randn(1, dim // 2))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 1:
            raise ValueError(f"FourierFeatures takes a 1-D tensor, got shape {tuple(x.shape)}")
        f = 2 * math.pi * x.unsqueeze(1) @ self.weight
        return torch.cat([f.cos(), f.sin()], dim=-1)


class Downsample(nn.Module):
    """Conv 3x3, stride 2: (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)
        nn.init.orthogonal_(self.conv.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then conv 3x3: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class SmallResBlock(nn.Module):
    """`skip(x) + conv3x3(silu(groupnorm(x)))`, unconditioned (actor-critic encoder)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.f = nn.Sequential(GroupNorm(in_channels), nn.SiLU(), conv3x3(in_channels, out_channels))
        self.skip_projection = nn.Identity() if in_channels == out_channels else conv1x1(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip_projection(x) + self.f(x)


class ResBlock(nn.Module):
    """Residual block conditioned through AdaGroupNorm, optionally followed by self-attention."""

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, attn: bool) -> None:
        super().__init__()
        self.proj = conv1x1(in_channels, out_channels) if in_channels != out_channels else nn.Identity()
        self.norm1 = AdaGroupNorm(in_channels, cond_channels)
        self.conv1 = conv3x3(in_channels, out_channels)
        self.norm2 = AdaGroupNorm(out_channels, cond_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.attn = SelfAttention2d(out_channels) if attn else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # the block starts as its skip path

    def forward(self, x: Tensor, cond: Tensor | ScaleShift) -> Tensor:
        inplace = not torch.is_grad_enabled()  # without autograd, reuse buffers: the same values, less memory traffic
        r = self.proj(x)
        x = self.conv1(F.silu(self.norm1(x, cond), inplace=inplace))
        x = self.conv2(F.silu(self.norm2(x, cond), inplace=inplace))
        return self.attn(x.add_(r) if inplace else x + r)


class ResBlocks(nn.Module):
    """A chain of ResBlocks. Block i first concatenates `to_cat[i]` on channels when `to_cat` is given."""

    def __init__(self, in_channels: list[int], out_channels: list[int], cond_channels: int, attn: bool) -> None:
        super().__init__()
        if len(in_channels) != len(out_channels):
            raise ValueError("in_channels and out_channels must have the same length")
        self.resblocks = nn.ModuleList(
            [ResBlock(i, o, cond_channels, attn) for i, o in zip(in_channels, out_channels)]
        )

    def forward(self, x: Tensor, cond: Tensor | ScaleShift,
                to_cat: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
        """-> (last output, every block's output)."""
        outputs = []
        for i, block in enumerate(self.resblocks):
            if to_cat is not None:
                x = torch.cat((x, to_cat[i]), dim=1)
            x = block(x, cond)
            outputs.append(x)
        return x, outputs


def init_lstm(lstm: nn.Module) -> None:
    """As the reference: Xavier-uniform input weights, orthogonal recurrent weights, zero biases except a
    forget-gate bias of 1 (in bias_ih)."""
    for name, p in lstm.named_parameters():
        if "weight_ih" in name:
            nn.init.xavier_uniform_(p.data)
        elif "weight_hh" in name:
            nn.init.orthogonal_(p.data)
        elif "bias" in name:
            p.data.zero_()
            if "bias_ih" in name:
                n = p.shape[0]
                p.data[n // 4 : n // 2] = 1
