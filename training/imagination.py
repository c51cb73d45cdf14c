"""Training the actor-critic inside the world model (diamond.md 1.6 and 3.4).

`Imagination` runs B imagined games on the world model (`model.world_model_env.WorldModelEnv`), each starting
from a real 4-frame context drawn from the episode store; reward and end are sampled, an imagined game is cut
after `horizon` steps, and dead games restart at once from new real contexts. `actor_critic_update` rolls it
for `horizon` steps with the actor-critic, backpropagating through its LSTM, and makes one optimizer step.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.distributions import Categorical

from model.precision import IMAGINATION
from model.returns import ActorCriticLossConfig, actor_critic_loss
from model.sampler import SamplerConfig
from model.world_model_env import WorldModelEnv
from training.optim import ModelOptimizer
from training.presets import ImaginationConfig

# n -> (obs (n, 4, 3, H, W) float in [-1, 1], act (n, 4) long): real contexts from the train episodes
ContextSampler = Callable[[int], tuple[Tensor, Tensor]]


class Imagination:
    """B imagined games that restart themselves from real contexts (the reference's WorldModelEnv).

    reset() -> obs (B, 3, H, W); step(act (B,)) -> obs, rew (B,) in {-1, 0, 1}, end (B,) bool, trunc (B,) bool,
    info with, for the games that just died (`info["dead"]`, a (B,) bool mask): `final_obs` (D, 3, H, W), the
    imagined frame they died on, and `burnin_obs` (D, 3, 3, H, W), the 3 frames of context before the first
    frame of their new game (the actor-critic burns its LSTM in on them).
    """

    def __init__(self, agent, sample_context: ContextSampler, num_envs: int, horizon: int,
                 denoising_steps: int = 3, generator: torch.Generator | None = None,
                 precision: str = IMAGINATION) -> None:
        self.sample_context = sample_context
        self.num_envs, self.horizon = num_envs, horizon
        # a policy of model.precision; training's ("auto-gpu"): the fast world model, each step one CUDA graph, on a
        # GPU with bfloat16; float32 on a CPU (what the Catch learning run was tuned with)
        self.wm = WorldModelEnv(agent, SamplerConfig(num_steps_denoising=denoising_steps), generator=generator,
                                precision=precision)
        self.ep_len = torch.zeros(num_envs, dtype=torch.long)
        self.obs: Tensor | None = None

    def reset(self) -> Tensor:
        obs_ctx, act_ctx = self.sample_context(self.num_envs)
        self.obs = self.wm.reset(obs_ctx, act_ctx)
        self.ep_len.zero_()
        return self.obs

    @torch.no_grad()
    def step(self, act: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict]:
        if self.obs is None:
            raise RuntimeError("call reset() before step()")
        next_obs, rew, end, _ = self.wm.step(act)
        self.ep_len += 1
        end = end.bool().cpu()
        trunc = (self.ep_len >= self.horizon) & ~end
        dead = end | trunc
        info = {"dead": dead}
        if dead.any():
            idx = dead.nonzero().squeeze(1)
            obs_ctx, act_ctx = self.sample_context(len(idx))
            info["final_obs"] = next_obs[idx.to(next_obs.device)].clone()
            info["burnin_obs"] = obs_ctx[:, :-1]
            self.wm.reset_where(dead, obs_ctx, act_ctx)
            next_obs = self.wm.obs.clone()
            self.ep_len[idx] = 0
        self.obs = next_obs
        return next_obs, rew.float(), end.to(next_obs.device), trunc.to(next_obs.device), info


def _zero_and_burn_in(actor_critic, state: tuple[Tensor, Tensor], dead: Tensor, burnin_obs: Tensor):
    """Zeroes the LSTM state of dead envs and burns it in on their new context (inside the autograd graph)."""
    idx = dead.nonzero().squeeze(1).to(state[0].device)
    h_new = state[0].new_zeros(len(idx), state[0].shape[1])
    s = (h_new, torch.zeros_like(h_new))
    for k in range(burnin_obs.shape[1]):
        _, _, s = actor_critic(burnin_obs[:, k], s)
    h, c = state[0].index_copy(0, idx, s[0]), state[1].index_copy(0, idx, s[1])
    return h, c


def actor_critic_update(agent, imagination: Imagination, optimizer: ModelOptimizer, cfg: ImaginationConfig,
                        state: tuple[Tensor, Tensor] | None) -> tuple[dict, tuple[Tensor, Tensor]]:
    """One update: `cfg.horizon` imagined steps of all envs, lambda-returns, REINFORCE + value + entropy.

    state: the actor-critic's LSTM state carried between updates (detached here), or None at the start.
    -> (metrics, new state).
    """
    ac = agent.actor_critic
    ac.train()
    obs = imagination.obs if imagination.obs is not None else imagination.reset()
    if state is None:
        h = obs.new_zeros(obs.shape[0], ac.lstm.hidden_size)
        state = (h, torch.zeros_like(h))
    state = (state[0].detach(), state[1].detach())
    all_logits, acts, values, rews, ends, truncs, values_next = [], [], [], [], [], [], []
    for t in range(cfg.horizon):
        logits, value, state = ac(obs, state)
        act = Categorical(logits=logits).sample()
        next_obs, rew, end, trunc, info = imagination.step(act)
        for seq, x in ((all_logits, logits), (acts, act), (values, value), (rews, rew), (ends, end), (truncs, trunc)):
            seq.append(x)
        dead = info["dead"]
        v_next = None
        if dead.any():
            with torch.no_grad():  # V(final observation) with the pre-reset state
                d = dead.nonzero().squeeze(1).to(obs.device)
                _, v_final, _ = ac(info["final_obs"], (state[0][d], state[1][d]))
            v_next = torch.zeros_like(value).index_copy(0, d, v_final)
            state = _zero_and_burn_in(ac, state, dead, info["burnin_obs"])
        values_next.append((dead.to(obs.device), v_next))
        obs = next_obs
    with torch.no_grad():
        _, v_last, _ = ac(obs, state)
    # value of the step after t: the next forward's value, or V(final_obs) where the game died at t
    nexts = [v.detach() for v in values[1:]] + [v_last]
    value_next = torch.stack([torch.where(dead, v_dead, nxt) if v_dead is not None else nxt
                              for (dead, v_dead), nxt in zip(values_next, nexts)], dim=1)
    rew, end = torch.stack(rews, 1), torch.stack(ends, 1)
    loss_cfg = ActorCriticLossConfig(cfg.gamma, cfg.lam, cfg.weight_value_loss, cfg.weight_entropy_loss)
    loss, terms = actor_critic_loss(torch.stack(all_logits, 1), torch.stack(acts, 1), torch.stack(values, 1),
                                    rew, end, torch.stack(truncs, 1), value_next, loss_cfg)
    grad_norm = optimizer.step(loss)
    metrics = {k: float(v) for k, v in terms.items()}
    metrics.update(imagined_reward=rew.sum(1).mean().item(), imagined_end_rate=end.float().mean().item(),
                   grad_norm=grad_norm, lr=optimizer.lr)
    return metrics, (state[0].detach(), state[1].detach())
