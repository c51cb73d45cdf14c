"""Agent configurations by name: functions returning `AgentConfig`s."""
from __future__ import annotations

from dataclasses import replace

from model.actor_critic import ActorCriticConfig
from model.agent import AgentConfig
from model.denoiser import DenoiserConfig
from model.rew_end import RewEndConfig


def atari100k(num_actions: int) -> AgentConfig:
    """The reference's Atari 100k configuration (diamond.md 1): 13.5 M parameters for 4 actions."""
    return AgentConfig(
        num_actions=num_actions,
        denoiser=DenoiserConfig(),
        rew_end=RewEndConfig(),
        actor_critic=ActorCriticConfig(),
        img_size=64,
    )


def tiny(num_actions: int) -> AgentConfig:
    """A few hundred thousand parameters with the same structure, for tests: still runs on 64x64 frames."""
    return AgentConfig(
        num_actions=num_actions,
        denoiser=DenoiserConfig(cond_channels=32, depths=(1, 1, 1, 1), channels=(16, 16, 16, 16)),
        rew_end=RewEndConfig(lstm_dim=32, cond_channels=16, depths=(1, 1, 1, 1), channels=(8, 8, 8, 8)),
        actor_critic=ActorCriticConfig(lstm_dim=32, channels=(8, 8, 16, 16)),
        img_size=64,
    )


def small(num_actions: int) -> AgentConfig:
    """The reference's structure at about a tenth of its compute, for training on a CPU in an hour or two
    (the shipped default weights): 32-channel denoiser U-Net, smaller reward/end model and actor-critic."""
    return AgentConfig(
        num_actions=num_actions,
        denoiser=DenoiserConfig(cond_channels=128, depths=(1, 1, 1, 1), channels=(32, 32, 32, 32)),
        rew_end=RewEndConfig(lstm_dim=128, cond_channels=64, depths=(1, 1, 1, 1), channels=(16, 16, 16, 16)),
        actor_critic=ActorCriticConfig(lstm_dim=128, channels=(16, 16, 32, 32)),
        img_size=64,
    )


def small_residual(num_actions: int) -> AgentConfig:
    """`small` with a residual denoiser (`DenoiserConfig.residual`): it denoises the change from the last frame,
    so it repeats the static parts of the screen from its first update and spends its training on what moves.
    Its conditioning frames are noised in training (`noise_previous_obs`, ln sigma_cond ~ N(-2.5, 1.2): mostly
    the size of a dream's own small errors), so that long dreams correct their errors instead of amplifying them
    (the shipped Breakout weights' world model)."""
    cfg = small(num_actions)
    return replace(cfg, denoiser=replace(cfg.denoiser, residual=True, noise_previous_obs=True, cond_sigma_loc=-2.5))


PRESETS = {"atari100k": atari100k, "small": small, "small-residual": small_residual, "tiny": tiny}
