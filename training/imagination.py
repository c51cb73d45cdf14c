"""Training the actor-critic inside the world model (diamond.md 1.6 and 3.4).

`Imagination` runs B imagined games on the world model (`model.world_model_env.WorldModelEnv`), each starting
from a real 4-frame context (`training.context_pool`); reward and end are sampled, an imagined game is cut after
`horizon` steps, and dead games restart at once from new real contexts. `actor_critic_update` rolls it for
`horizon` steps with the actor-critic, backpropagating through its LSTM, and makes one optimizer step.

Every step has the same shapes whatever died, and nothing waits for the device: restarts are selected by mask
(`torch.where`) over all B games, actions are drawn without torch's checks (`model.categorical`), and the
metrics stay device tensors (read once per epoch by the caller). So a GPU never waits for the host, which is
also what capturing a whole update as one CUDA graph would need (not done yet).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from model.categorical import sample_logits
from model.precision import IMAGINATION
from model.returns import ActorCriticLossConfig, actor_critic_loss
from model.sampler import SamplerConfig
from model.world_model_env import WorldModelEnv
from training.context_pool import ContextPool, ContextSampler
from training.optim import ModelOptimizer
from training.presets import ImaginationConfig

__all__ = ["ContextSampler", "Imagination", "ImaginedStep", "actor_critic_update"]


class ImaginedStep(NamedTuple):
    """One step of B imagined games; every field has B rows, on the world model's device."""

    obs: Tensor  # (B, 3, H, W) in [-1, 1]: each game's frame now (a restarted game's first frame)
    rew: Tensor  # (B,) float in {-1, 0, 1}
    end: Tensor  # (B,) bool
    trunc: Tensor  # (B,) bool: cut after `horizon` steps (and not ended)
    dead: Tensor  # (B,) bool: end | trunc; these games restarted from a new real context
    final_obs: Tensor  # (B, 3, H, W): the imagined frame of this step (where dead: the frame the game died on)
    burnin_obs: Tensor  # (B, 3, 3, H, W): where dead, the 3 context frames before the new game's first frame


class Imagination:
    """B imagined games that restart themselves from real contexts (the reference's WorldModelEnv).

    sample_context: n -> n real contexts (`training.context_pool.ContextSampler`), called B at a time.
    reset() -> obs (B, 3, H, W); step(act (B,)) -> `ImaginedStep`.
    """

    def __init__(self, agent, sample_context: ContextSampler, num_envs: int, horizon: int,
                 denoising_steps: int = 3, generator: torch.Generator | None = None,
                 precision: str = IMAGINATION, cuda_graphs: bool = True) -> None:
        self.num_envs, self.horizon = num_envs, horizon
        # a policy of model.precision; training's ("auto"): the fast bfloat16 world model where the device runs
        # bf16 natively (on a GPU each step one CUDA graph, unless cuda_graphs is False), else float32
        self.wm = WorldModelEnv(agent, SamplerConfig(num_steps_denoising=denoising_steps), generator=generator,
                                precision=precision, cuda_graphs=cuda_graphs)
        # refilled every `horizon` steps, which take at most B contexts each (plus B for a reset)
        self.pool = ContextPool(self.wm, sample_context, chunk=num_envs, max_draws=num_envs * (horizon + 1))
        self.ep_len = torch.zeros(num_envs, dtype=torch.long, device=self.wm.device)
        self.obs: Tensor | None = None
        self._steps = 0  # since the pool was last refilled

    def reset(self) -> Tensor:
        self.pool.prepare()
        self._steps = 0
        obs_ctx, act_ctx, _ = self.pool.draw(torch.ones(self.num_envs, dtype=torch.bool, device=self.wm.device))
        self.obs = self.wm.reset(obs_ctx, act_ctx)
        self.ep_len.zero_()
        return self.obs

    @torch.no_grad()
    def step(self, act: Tensor) -> ImaginedStep:
        if self.obs is None:
            raise RuntimeError("call reset() before step()")
        if self._steps == self.horizon:
            self.pool.prepare()
            self._steps = 0
        self._steps += 1
        next_obs, rew, end, _ = self.wm.step(act)
        end = end.bool()
        self.ep_len += 1
        trunc = (self.ep_len >= self.horizon) & ~end
        dead = end | trunc
        obs_ctx, act_ctx, rew_end_state = self.pool.draw(dead)
        self.wm.reset_rows(dead, obs_ctx, act_ctx, rew_end_state)
        self.ep_len.masked_fill_(dead, 0)
        self.obs = self.wm.obs
        return ImaginedStep(self.obs, rew, end, trunc, dead, next_obs, obs_ctx[:, :-1])


def _restart_state(actor_critic, state: tuple[Tensor, Tensor], dead: Tensor, burnin_obs: Tensor,
                   rows: Tensor | None = None):
    """The LSTM state with the dead games' rows replaced by zeros burned in on their new context, inside the
    autograd graph (as the reference). rows None (a GPU's way): every row burns in and torch.where discards the
    others' burn-in, so it gets exactly zero gradient and nothing waits for the device. rows, the indices of the
    dead games (a CPU's way, where reading `dead` costs nothing): only they burn in, the same numbers for less work."""
    if rows is not None:
        if rows.numel() == 0:
            return state
        _, s = actor_critic.lstm_sequence(burnin_obs[rows])
        return state[0].index_put((rows,), s[0]), state[1].index_put((rows,), s[1])
    _, s = actor_critic.lstm_sequence(burnin_obs)  # from zeros
    keep = dead[:, None]
    return torch.where(keep, s[0], state[0]), torch.where(keep, s[1], state[1])


@torch.no_grad()
def _final_values(actor_critic, final_obs: Tensor, state: tuple[Tensor, Tensor], rows: Tensor | None = None) -> Tensor:
    """V(the frame a game died on), with the state before its restart: (B,), read only where the game died. rows
    None: every row is computed; otherwise only those (the dead games' indices), the others left at 0."""
    if rows is None:
        return actor_critic(final_obs, state)[1]
    values = final_obs.new_zeros(final_obs.shape[0])
    if rows.numel():
        values[rows] = actor_critic(final_obs[rows], (state[0][rows], state[1][rows]))[1].to(values.dtype)
    return values


def actor_critic_update(agent, imagination: Imagination, optimizer: ModelOptimizer, cfg: ImaginationConfig,
                        state: tuple[Tensor, Tensor] | None,
                        fixed_shapes: bool | None = None) -> tuple[dict, tuple[Tensor, Tensor]]:
    """One update: `cfg.horizon` imagined steps of all envs, lambda-returns, REINFORCE + value + entropy.

    state: the actor-critic's LSTM state carried between updates (detached here), or None at the start.
    fixed_shapes: restarted games burned in over all rows, selected by mask (default on a GPU: no host sync), or
    only the dead rows (default on a CPU: a third or less of the actor-critic's restart work); the same numbers.
    -> (metrics: 0-dim device tensors, except `lr`, a float; new state).
    """
    ac = agent.actor_critic
    ac.train()
    obs = imagination.obs if imagination.obs is not None else imagination.reset()
    if fixed_shapes is None:
        fixed_shapes = obs.device.type != "cpu"
    if state is None:
        h = obs.new_zeros(obs.shape[0], ac.lstm.hidden_size)
        state = (h, torch.zeros_like(h))
    state = (state[0].detach(), state[1].detach())
    all_logits, acts, values, rews, ends, truncs, deads, values_final = [], [], [], [], [], [], [], []
    with imagination.wm.weights_fixed():  # only the actor-critic learns here
        for _ in range(cfg.horizon):
            logits, value, state = ac(obs, state)
            act = sample_logits(logits.detach())  # as Categorical(logits).sample(), from the same global RNG
            step = imagination.step(act)
            rows = None if fixed_shapes else step.dead.nonzero().squeeze(1)  # the dead games, read on a CPU only
            v_final = _final_values(ac, step.final_obs, state, rows)
            state = _restart_state(ac, state, step.dead, step.burnin_obs, rows)
            for seq, x in ((all_logits, logits), (acts, act), (values, value), (rews, step.rew), (ends, step.end),
                           (truncs, step.trunc), (deads, step.dead), (values_final, v_final)):
                seq.append(x)
            obs = step.obs
    with torch.no_grad():
        _, v_last, _ = ac(obs, state)
    # value of the step after t: the next forward's value, or V(final frame) where the game died at t
    nexts = [v.detach() for v in values[1:]] + [v_last]
    value_next = torch.stack([torch.where(d, v_final, nxt) for d, v_final, nxt in zip(deads, values_final, nexts)], 1)
    rew, end = torch.stack(rews, 1), torch.stack(ends, 1)
    loss_cfg = ActorCriticLossConfig(cfg.gamma, cfg.lam, cfg.weight_value_loss, cfg.weight_entropy_loss)
    loss, terms = actor_critic_loss(torch.stack(all_logits, 1), torch.stack(acts, 1), torch.stack(values, 1),
                                    rew, end, torch.stack(truncs, 1), value_next, loss_cfg)
    grad_norm = optimizer.step(loss)
    metrics = dict(terms, imagined_reward=rew.sum(1).mean(), imagined_end_rate=end.float().mean(),
                   grad_norm=grad_norm, lr=optimizer.lr)
    return metrics, (state[0].detach(), state[1].detach())
