"""The actor-critic: single-frame convolutional encoder, LSTMCell, policy and value heads (diamond.md 1.6)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.blocks import SmallResBlock, conv3x3, init_lstm

CellState = tuple[Tensor, Tensor]  # (h, c), each (B, lstm_dim) as nn.LSTMCell


@dataclass(frozen=True)
class ActorCriticConfig:
    lstm_dim: int = 512
    img_channels: int = 3
    channels: tuple[int, ...] = (32, 32, 64, 64)
    down: tuple[bool, ...] = (True, True, True, True)  # 2x2 max-pool after block i

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.down):
            raise ValueError("actor_critic channels and down must have the same length")


class ActorCriticEncoder(nn.Module):
    """(B, 3, H, W) -> (B, channels[-1], H / 2^sum(down), W / 2^sum(down)); no activation at the end."""

    def __init__(self, cfg: ActorCriticConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv3x3(cfg.img_channels, cfg.channels[0])]
        for i, c in enumerate(cfg.channels):
            layers.append(SmallResBlock(cfg.channels[max(0, i - 1)], c))
            if cfg.down[i]:
                layers.append(nn.MaxPool2d(2))
        self.encoder = nn.Sequential(*layers)  # indices as the reference: 0 conv, 1 block, 2 pool, 3 block...

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


class ActorCritic(nn.Module):
    def __init__(self, cfg: ActorCriticConfig, num_actions: int, img_size: int = 64) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ActorCriticEncoder(cfg)
        side = img_size // 2 ** sum(bool(d) for d in cfg.down)
        self.lstm = nn.LSTMCell(cfg.channels[-1] * side * side, cfg.lstm_dim)
        self.critic_linear = nn.Linear(cfg.lstm_dim, 1)
        self.actor_linear = nn.Linear(cfg.lstm_dim, num_actions)
        for layer in (self.critic_linear, self.actor_linear):  # uniform policy and zero value at the start
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        init_lstm(self.lstm)

    def forward(self, obs: Tensor, state: CellState | None = None) -> tuple[Tensor, Tensor, CellState]:
        """obs (B, 3, H, W) in [-1, 1]; state (h, c) each (B, lstm_dim), or None for zeros
        -> (logits (B, A), value (B,), state)."""
        if obs.ndim != 4:
            raise ValueError(f"actor-critic takes one frame per env (B, 3, H, W), got shape {tuple(obs.shape)}")
        x = self.encoder(obs).flatten(start_dim=1)
        h, c = self.lstm(x, state)
        return self.actor_linear(h), self.critic_linear(h).squeeze(1), (h, c)

    def lstm_sequence(self, obs: Tensor, state: CellState | None = None) -> tuple[Tensor, CellState]:
        """The LSTM's outputs over T frames: obs (B, T, 3, H, W) -> (h (B, T, lstm_dim), last state). The same
        numbers as T calls of `forward` (whose heads read h), with the encoder run once over all B * T frames."""
        b, t = obs.shape[:2]
        x = self.encoder(obs.flatten(0, 1)).flatten(start_dim=1).unflatten(0, (b, t))
        hs = []
        for i in range(t):
            state = self.lstm(x[:, i], state)
            hs.append(state[0])
        return torch.stack(hs, 1), state
