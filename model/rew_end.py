"""The reward / episode-end model: per-transition encoder, LSTM over time, 3 reward and 2 end classes
(diamond.md 1.5)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.batch import Batch
from model.blocks import Downsample, ResBlocks, ScaleShift, conv3x3, init_lstm

LSTMState = tuple[Tensor, Tensor]  # (h, c), each (1, B, lstm_dim) as nn.LSTM


@dataclass(frozen=True)
class RewEndConfig:
    lstm_dim: int = 512
    img_channels: int = 3
    cond_channels: int = 128
    depths: tuple[int, ...] = (2, 2, 2, 2)
    channels: tuple[int, ...] = (32, 32, 32, 32)
    attn_depths: tuple[bool, ...] = (False, False, False, False)

    def __post_init__(self) -> None:
        if not len(self.depths) == len(self.channels) == len(self.attn_depths):
            raise ValueError("rew_end depths, channels and attn_depths must have the same length")


class RewEndEncoder(nn.Module):
    """(B, 2*3, H, W) frame pair, cond (B, cond_channels) or its `ScaleShift`
    -> (B, channels[-1], H / 2^(L-1), W / 2^(L-1))."""

    def __init__(self, cfg: RewEndConfig) -> None:
        super().__init__()
        ch = cfg.channels
        self.conv_in = conv3x3(2 * cfg.img_channels, ch[0])
        blocks = []
        for i, n in enumerate(cfg.depths):
            c_prev, c = ch[max(0, i - 1)], ch[i]
            blocks.append(ResBlocks([c_prev] + [c] * (n - 1), [c] * n, cfg.cond_channels, bool(cfg.attn_depths[i])))
        blocks.append(ResBlocks([ch[-1]] * 2, [ch[-1]] * 2, cfg.cond_channels, attn=True))
        self.blocks = nn.ModuleList(blocks)
        self.downsamples = nn.ModuleList([nn.Identity()] + [Downsample(c) for c in ch[:-1]] + [nn.Identity()])

    def forward(self, x: Tensor, cond: Tensor | ScaleShift) -> Tensor:
        x = self.conv_in(x)
        for block, down in zip(self.blocks, self.downsamples):
            x, _ = block(down(x), cond)
        return x


class RewEndModel(nn.Module):
    def __init__(self, cfg: RewEndConfig, num_actions: int, img_size: int = 64) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = RewEndEncoder(cfg)
        self.act_emb = nn.Embedding(num_actions, cfg.cond_channels)  # conditions AdaGN directly, no MLP
        side = img_size // 2 ** (len(cfg.depths) - 1)
        self.lstm = nn.LSTM(cfg.channels[-1] * side * side, cfg.lstm_dim, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(cfg.lstm_dim, cfg.lstm_dim),
            nn.SiLU(),
            nn.Linear(cfg.lstm_dim, 3 + 2, bias=False),
        )
        init_lstm(self.lstm)

    def forward(
        self, obs: Tensor, act: Tensor, next_obs: Tensor, state: LSTMState | None = None
    ) -> tuple[Tensor, Tensor, LSTMState]:
        """obs, next_obs (B, T, 3, H, W) in [-1, 1]; act (B, T) long; state (h, c) each (1, B, lstm_dim) or None
        (zeros) -> (rew_logits (B, T, 3) for rewards {-1, 0, 1}, end_logits (B, T, 2), state)."""
        b, t = act.shape
        x, state = self.lstm(self.encode(obs, next_obs, self.act_emb(act.reshape(b * t))), state)
        return (*self.heads(x), state)

    def encode(self, obs: Tensor, next_obs: Tensor, cond: Tensor | ScaleShift) -> Tensor:
        """obs, next_obs (B, T, 3, H, W), cond (B * T, cond_channels) or its precomputed `ScaleShift`
        -> the transitions' features (B, T, D), the LSTM's input."""
        b, t = obs.shape[:2]
        x = torch.cat((obs.flatten(0, 1), next_obs.flatten(0, 1)), dim=1)
        return self.encoder(x, cond).reshape(b, t, -1)

    def heads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """LSTM outputs (B, T, lstm_dim) -> (rew_logits (B, T, 3), end_logits (B, T, 2))."""
        logits = self.head(x)
        return logits[..., :3], logits[..., 3:]

    def loss(self, batch: Batch) -> Tensor:
        """Cross-entropy of reward sign and end over the real transitions of batch (T = 19 for Atari gives 18).
        No class weights, as the reference. Relies on Batch's convention that obs[:, t + 1] is the frame that
        followed a real step t (the final observation after an episode end)."""
        loss_rew, loss_end = self.loss_terms(batch)
        return loss_rew + loss_end

    def loss_terms(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """-> (reward cross-entropy, end cross-entropy), each a mean over the real transitions.
        Padded steps are weighted 0 rather than left out (the same sums, with fixed shapes: no host sync)."""
        mask = batch.mask[:, :-1]
        rew_logits, end_logits, _ = self(batch.obs[:, :-1], batch.act[:, :-1], batch.obs[:, 1:])
        target_rew = batch.rew[:, :-1].sign().long() + 1  # classes of {-1, 0, 1}
        target_end = batch.end[:, :-1].long()
        weight = mask.float()
        count = weight.sum().clamp(min=1)  # a mean over real transitions, 0 (not NaN) when there are none
        ce = lambda logits, target: F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
        loss_rew = (ce(rew_logits, target_rew) * weight.flatten()).sum() / count
        loss_end = (ce(end_logits, target_end) * weight.flatten()).sum() / count
        return loss_rew, loss_end
