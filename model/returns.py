"""Lambda-returns and the actor-critic loss on imagined rollouts (diamond.md 1.6)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Categorical


@dataclass(frozen=True)
class ActorCriticLossConfig:
    gamma: float = 0.985
    lam: float = 0.95
    weight_value_loss: float = 1.0
    weight_entropy_loss: float = 0.001


@torch.no_grad()
def lambda_returns(rew: Tensor, end: Tensor, trunc: Tensor, value_next: Tensor, gamma: float, lam: float) -> Tensor:
    """G_t = r_t + gamma (1 - end_t) [(1 - trunc_t)(1 - lam) + trunc_t] V(s_t+1)
             + (1 - max(end_t, trunc_t)) gamma lam G_t+1,   G_T = value_next[:, -1].

    rew, end, trunc, value_next: (B, T); rewards are sign-clipped first (as the reference); value_next[:, t] is
    V of the observation after step t (for a truncated step: of its final observation). -> (B, T), no grad.
    """
    if not (rew.ndim == 2 and rew.shape == end.shape == trunc.shape == value_next.shape):
        raise ValueError("rew, end, trunc and value_next must all be (B, T)")
    end, trunc = end.to(value_next.dtype), trunc.to(value_next.dtype)
    cont = 1 - torch.maximum(end, trunc)
    returns = rew.sign().to(value_next.dtype) + (1 - end) * gamma * ((1 - trunc) * (1 - lam) + trunc) * value_next
    if lam == 0:
        return returns
    last = value_next[:, -1]
    for t in reversed(range(rew.shape[1])):
        returns[:, t] += cont[:, t] * gamma * lam * last
        last = returns[:, t]
    return returns


def actor_critic_loss(
    logits: Tensor,
    act: Tensor,
    value: Tensor,
    rew: Tensor,
    end: Tensor,
    trunc: Tensor,
    value_next: Tensor,
    cfg: ActorCriticLossConfig = ActorCriticLossConfig(),
) -> tuple[Tensor, dict[str, Tensor]]:
    """REINFORCE with a value baseline, value regression to the lambda-returns and an entropy bonus:
    L = mean(-log pi(a_t) (G_t - V_t).detach()) + w_v MSE(V_t, G_t) - w_H mean(H[pi]).

    logits (B, T, A) and value (B, T) with grad; act, rew, end, trunc, value_next (B, T) (value_next detached,
    see `lambda_returns`). -> (loss, detached metrics: the three terms, entropy in bits, mean return).
    """
    dist = Categorical(logits=logits, validate_args=False)  # its checks read the device (a sync)
    entropy = dist.entropy().mean()
    returns = lambda_returns(rew, end, trunc, value_next.detach(), cfg.gamma, cfg.lam)
    loss_actions = (-dist.log_prob(act) * (returns - value).detach()).mean()
    loss_values = cfg.weight_value_loss * F.mse_loss(value, returns)
    loss_entropy = -cfg.weight_entropy_loss * entropy
    loss = loss_actions + loss_values + loss_entropy
    metrics = {
        "loss_actions": loss_actions.detach(),
        "loss_values": loss_values.detach(),
        "loss_entropy": loss_entropy.detach(),
        "policy_entropy_bits": entropy.detach() / math.log(2),
        "lambda_return": returns.mean(),
    }
    return loss, metrics
