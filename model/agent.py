"""The agent: world model (denoiser + reward/end model) and actor-critic under one config."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from model.actor_critic import ActorCritic, ActorCriticConfig
from model.denoiser import Denoiser, DenoiserConfig
from model.rew_end import RewEndConfig, RewEndModel
from model.sampler import SamplerConfig

_SUB_CONFIGS = {"denoiser": DenoiserConfig, "rew_end": RewEndConfig, "actor_critic": ActorCriticConfig}


@dataclass(frozen=True)
class AgentConfig:
    """Everything needed to build an `Agent`. The defaults are the reference's Atari configuration."""

    num_actions: int
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    rew_end: RewEndConfig = field(default_factory=RewEndConfig)
    actor_critic: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    img_size: int = 64  # frames are (3, img_size, img_size)

    def __post_init__(self) -> None:
        if not isinstance(self.num_actions, int) or self.num_actions < 1:
            raise ValueError(f"num_actions must be a positive integer, got {self.num_actions!r}")
        if not isinstance(self.img_size, int) or self.img_size < 1:
            raise ValueError(f"img_size must be a positive integer, got {self.img_size!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists); `AgentConfig.from_dict` inverts it."""
        return _listify(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AgentConfig":
        """Raises ValueError on unknown or missing keys; missing sub-config fields take their defaults."""
        if not isinstance(d, dict):
            raise ValueError(f"agent config must be a dict, got {type(d).__name__}")
        _check_keys(cls, d)
        if "num_actions" not in d:
            raise ValueError("agent config has no 'num_actions'")
        kwargs = {k: _build(_SUB_CONFIGS[k], v) if k in _SUB_CONFIGS else v for k, v in d.items()}
        return cls(**kwargs)


def _check_keys(cls: type, d: dict[str, Any]) -> None:
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s): {', '.join(map(str, unknown))}")


def _build(cls: type, d: dict[str, Any]) -> Any:
    if not isinstance(d, dict):
        raise ValueError(f"{cls.__name__} must be a dict, got {type(d).__name__}")
    _check_keys(cls, d)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _listify(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _listify(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_listify(v) for v in x]
    return x


class Agent(nn.Module):
    """state_dict names are DIAMOND's (`denoiser.`, `actor_critic.`) except `rew_end_model.` -> `rew_end.`."""

    def __init__(self, config: AgentConfig) -> None:
        super().__init__()
        self.config = config
        self.denoiser = Denoiser(config.denoiser, config.num_actions)
        self.rew_end = RewEndModel(config.rew_end, config.num_actions, config.img_size)
        self.actor_critic = ActorCritic(config.actor_critic, config.num_actions, config.img_size)
        # Where the weights came from ({"source", "file", "game", ...}); `weights.load_agent` sets it, a new
        # agent has none.
        self.weights_info: dict[str, Any] = {}

    @property
    def num_actions(self) -> int:
        return self.config.num_actions

    @property
    def denoising_steps(self) -> int:
        """The sampler steps to dream with when nobody says: the weights' own "denoising_steps" (metadata written
        where they were measured as faithful with fewer steps than the reference's), else the reference's 3."""
        return int(self.weights_info.get("denoising_steps") or SamplerConfig().num_steps_denoising)

    @property
    def still_levels(self) -> float:
        """How far (of 255 levels) a dreamed pixel may move from the last frame and still be kept as it was
        (`model.sampler.keep_still`): the weights' own "still_levels" (metadata written where it was measured),
        else 0, off, as the reference."""
        return float(self.weights_info.get("still_levels") or 0.0)

    @property
    def device(self) -> torch.device:
        return self.denoiser.device
