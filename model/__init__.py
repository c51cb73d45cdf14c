"""Networks and diffusion of dreamarcade: the DIAMOND world model and agent (imports nothing from the project)."""
from model.actor_critic import ActorCritic, ActorCriticConfig
from model.agent import Agent, AgentConfig
from model.batch import Batch
from model.denoiser import Denoiser, DenoiserConfig
from model.presets import PRESETS, atari100k, tiny
from model.returns import ActorCriticLossConfig, actor_critic_loss, lambda_returns
from model.rew_end import RewEndConfig, RewEndModel
from model.sampler import SamplerConfig, karras_sigmas, sample_next_obs
from model.world_model_env import WorldModelEnv

__all__ = [
    "PRESETS",
    "ActorCritic",
    "ActorCriticConfig",
    "ActorCriticLossConfig",
    "Agent",
    "AgentConfig",
    "Batch",
    "Denoiser",
    "DenoiserConfig",
    "RewEndConfig",
    "RewEndModel",
    "SamplerConfig",
    "WorldModelEnv",
    "actor_critic_loss",
    "atari100k",
    "karras_sigmas",
    "lambda_returns",
    "sample_next_obs",
    "tiny",
]
