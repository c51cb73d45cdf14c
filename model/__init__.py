"""Networks and diffusion of dreamarcade: the DIAMOND world model and agent (imports nothing from the project)."""
from model.actor_critic import ActorCritic, ActorCriticConfig
from model.agent import Agent, AgentConfig
from model.batch import Batch
from model.denoiser import Denoiser, DenoiserConfig
from model.rew_end import RewEndConfig, RewEndModel
from model.sampler import SamplerConfig, karras_sigmas, sample_next_obs

__all__ = [
    "ActorCritic",
    "ActorCriticConfig",
    "Agent",
    "AgentConfig",
    "Batch",
    "Denoiser",
    "DenoiserConfig",
    "RewEndConfig",
    "RewEndModel",
    "SamplerConfig",
    "karras_sigmas",
    "sample_next_obs",
]
