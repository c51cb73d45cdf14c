"""Batched imagination: step B games inside the world model (diamond.md 3.4), given starting contexts.

The caller owns the starting contexts (real frames and actions) and decides when to reset: no dataset code
and no automatic reset here.
"""
from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from model.categorical import sample_probs
from model.cuda_graphs import GraphedStep
from model.fast import FastAgent
from model.precision import resolve
from model.sampler import SamplerConfig, karras_sigmas, keep_still, sample_next_obs


class WorldModelEnv:
    """B imagined games on the agent's device.

    `reset(obs_ctx, act_ctx)` then `step(act)` repeatedly. Reward and end are *sampled* from the reward/end
    model, as the reference, whose LSTM state is carried from step to step (burned in over the context at reset).

    agent: a `model.Agent` (its `denoiser` and `rew_end` are used). sampler: the diffusion sampler's settings
    (`still_levels` None: the agent's own, `model.Agent.still_levels`).
    generator: a torch.Generator on the agent's device for all randomness (start noise, churn, rew/end sampling).
    precision: a policy of `model.precision` ("float32", "bfloat16", "auto", "auto-gpu", "auto-cpu"), resolved on
    the agent's device: "float32" runs the modules as they are (the reference's numbers), "bfloat16" the fast path
    (`model.fast`: channels-last bfloat16 weights and no repeated work across denoising steps). `.precision` is
    the resolved one.
    cuda_graphs: on a CUDA device with precision "bfloat16" and the Euler sampler without churn, replay each step
    as one CUDA graph (`model.cuda_graphs`); ignored elsewhere.
    """

    def __init__(
        self,
        agent,
        sampler: SamplerConfig = SamplerConfig(),
        generator: torch.Generator | None = None,
        precision: str = "float32",
        cuda_graphs: bool = True,
    ) -> None:
        self.agent = agent
        self.generator = generator
        self.cuda_graphs = cuda_graphs
        self._graph: GraphedStep | None = None
        self._weights_fixed = self._weights_checked = False  # see `weights_fixed`
        self.precision = precision
        self.sampler = sampler
        self.obs_buffer: Tensor | None = None  # (B, n, 3, H, W): the last n frames, in [-1, 1]
        self.act_buffer: Tensor | None = None  # (B, n) long: act_buffer[:, t] led from frame t to t + 1
        self.rew_end_state: tuple[Tensor, Tensor] | None = None  # (h, c), each (1, B, lstm_dim)

    # settings

    @property
    def sampler(self) -> SamplerConfig:
        return self._sampler

    @sampler.setter
    def sampler(self, cfg: SamplerConfig) -> None:
        if cfg.still_levels is None:
            cfg = replace(cfg, still_levels=self.agent.still_levels)
        # on the CPU, as the sampler keeps them (see `sample_next_obs`)
        self._sigmas = karras_sigmas(cfg.num_steps_denoising, cfg.sigma_min, cfg.sigma_max, cfg.rho)
        self._sampler = cfg
        self._graph = None

    @property
    def denoising_steps(self) -> int:
        return self._sampler.num_steps_denoising

    @denoising_steps.setter
    def denoising_steps(self, n: int) -> None:
        self.sampler = replace(self._sampler, num_steps_denoising=int(n))

    @property
    def precision(self) -> str:
        return self._precision

    @precision.setter
    def precision(self, policy: str) -> None:
        self._precision = resolve(policy, self.device)
        self._fast = None if self._precision == "float32" else FastAgent(self.agent, torch.bfloat16)
        self._graph = None

    @property
    def device(self) -> torch.device:
        return self.agent.denoiser.device

    @property
    def num_envs(self) -> int:
        return 0 if self.obs_buffer is None else self.obs_buffer.shape[0]

    @property
    def obs(self) -> Tensor:
        """(B, 3, H, W): the current frame of each game."""
        self._check_reset()
        return self.obs_buffer[:, -1]

    @contextlib.contextmanager
    def weights_fixed(self):
        """Inside, the caller promises that the denoiser's and reward/end model's weights do not change: the graphed
        step checks them once instead of at every step (the check walks every weight tensor: ~1.7 ms)."""
        self._weights_fixed, self._weights_checked = True, False
        try:
            yield self
        finally:
            self._weights_fixed = False

    # episodes

    @torch.no_grad()
    def reset(self, obs_ctx: Tensor, act_ctx: Tensor) -> Tensor:
        """Start B games from contexts: obs_ctx (B, n, 3, H, W) float in [-1, 1], act_ctx (B, n) long, with n the
        denoiser's conditioning length (4). act_ctx[:, -1] is replaced by the first action given to `step`.
        -> (B, 3, H, W) the last context frame."""
        obs_ctx, act_ctx = self._check_context(obs_ctx, act_ctx)
        self.obs_buffer, self.act_buffer = obs_ctx.clone(), act_ctx.clone()
        self.rew_end_state = self._burn_in(obs_ctx, act_ctx)
        return self.obs_buffer[:, -1]

    @torch.no_grad()
    def reset_where(self, dead: Tensor, obs_ctx: Tensor, act_ctx: Tensor) -> None:
        """Restart the games where dead (B,) bool is True from obs_ctx (n_dead, n, 3, H, W), act_ctx (n_dead, n)."""
        self._check_reset()
        dead = dead.to(device=self.device, dtype=torch.bool)
        obs_ctx, act_ctx = self._check_context(obs_ctx, act_ctx)
        if dead.shape != (self.num_envs,) or int(dead.sum()) != obs_ctx.shape[0]:
            raise ValueError(f"need one context per dead game: {int(dead.sum())} dead, {obs_ctx.shape[0]} contexts")
        self.obs_buffer[dead] = obs_ctx
        self.act_buffer[dead] = act_ctx
        h, c = self._burn_in(obs_ctx, act_ctx)
        self.rew_end_state[0][:, dead] = h
        self.rew_end_state[1][:, dead] = c

    @torch.no_grad()
    def reset_rows(self, dead: Tensor, obs_ctx: Tensor, act_ctx: Tensor, rew_end_state: tuple[Tensor, Tensor]) -> None:
        """Restart the games where dead (B,) bool is True from the same rows of obs_ctx (B, n, 3, H, W) float in
        [-1, 1], act_ctx (B, n) long and their reward/end state ((1, B, D) each, see `burn_in`); the other rows'
        contexts are ignored. All on the device with fixed shapes: no host synchronisation (unlike `reset_where`)."""
        self._check_reset()
        self.obs_buffer = torch.where(dead[:, None, None, None, None], obs_ctx, self.obs_buffer)
        self.act_buffer = torch.where(dead[:, None], act_ctx, self.act_buffer)
        self.rew_end_state = tuple(torch.where(dead[None, :, None], new, old)
                                   for new, old in zip(rew_end_state, self.rew_end_state))

    @torch.no_grad()
    def burn_in(self, obs_ctx: Tensor, act_ctx: Tensor) -> tuple[Tensor, Tensor]:
        """The reward/end LSTM state ((1, B, D) each, float32) that `reset` starts these contexts from:
        obs_ctx (B, n, 3, H, W) float in [-1, 1], act_ctx (B, n) long."""
        return self._burn_in(*self._check_context(obs_ctx, act_ctx))

    @torch.no_grad()
    def step(self, act: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, dict[str, Any]]:
        """Play act (B,) long in every game. noise (B, 3, H, W): the sampler's starting noise (else drawn).

        -> next_obs (B, 3, H, W) in [-1, 1], rew (B,) float in {-1, 0, 1}, end (B,) int64 in {0, 1},
        info {"rew_logits": (B, 3), "end_logits": (B, 2)}. Nothing resets by itself: an ended game keeps
        stepping until the caller resets it.
        """
        self._check_reset()
        self.act_buffer[:, -1] = act.to(self.device)  # as the reference: overwrites the last context action
        if self._graphable():
            next_obs, rew_logits, end_logits, self.rew_end_state = self._graphed_step(noise)
        else:
            next_obs = self._sample_next_obs(noise)
            rew_logits, end_logits, self.rew_end_state = self._rew_end(
                self.obs_buffer[:, -1:], self.act_buffer[:, -1:], next_obs.unsqueeze(1), self.rew_end_state
            )
            rew_logits, end_logits = rew_logits[:, 0].float(), end_logits[:, 0].float()
        rew = self._sample(rew_logits).float() - 1.0
        end = self._sample(end_logits)
        self.obs_buffer = self.obs_buffer.roll(-1, dims=1)
        self.act_buffer = self.act_buffer.roll(-1, dims=1)
        self.obs_buffer[:, -1] = next_obs
        return next_obs, rew, end, {"rew_logits": rew_logits, "end_logits": end_logits}

    # internals

    @property
    def _rew_end(self):
        return self.agent.rew_end if self._fast is None else self._fast.rew_end

    def _sample_next_obs(self, noise: Tensor | None) -> Tensor:
        s = self._sampler
        denoiser = self.agent.denoiser
        if self._fast is not None:  # the frame's conditioning computed once for all its denoising steps
            denoiser = self._fast.denoiser.context(self.obs_buffer, self.act_buffer, self._sigmas)
        next_obs = sample_next_obs(
            denoiser, self.obs_buffer, self.act_buffer, self._sigmas, noise=noise,
            generator=self.generator, order=s.order, s_churn=s.s_churn, s_tmin=s.s_tmin, s_tmax=s.s_tmax,
            s_noise=s.s_noise,
        ).float()
        return keep_still(next_obs, self.obs_buffer[:, -1], s.still_levels)

    def _graphable(self) -> bool:
        s = self._sampler
        return (self.cuda_graphs and self._fast is not None and self.device.type == "cuda" and s.order == 1
                and s.s_churn == 0)

    def _graphed_step(self, noise: Tensor | None):
        b, _, c, h, w = self.obs_buffer.shape
        if noise is None:  # drawn as `sample_next_obs` draws it
            noise = torch.randn(b, c, h, w, device=self.device, generator=self.generator)
        noise = noise.to(device=self.device, dtype=torch.float32)
        trusted = self._weights_checked and self._graph is not None and self._graph.inputs[0].shape[0] == b
        if not trusted and (self._graph is None or not self._graph.valid_for(b)):
            self._graph = GraphedStep(self._fast, self._sigmas, self.obs_buffer, self.act_buffer, noise,
                                      self.rew_end_state, self._sampler.still_levels)
        self._weights_checked = self._weights_fixed
        return self._graph(self.obs_buffer, self.act_buffer, noise, self.rew_end_state)

    def _burn_in(self, obs_ctx: Tensor, act_ctx: Tensor) -> tuple[Tensor, Tensor]:
        """The rew/end LSTM state after the n - 1 in-context transitions, as the reference."""
        *_, (h, c) = self._rew_end(obs_ctx[:, :-1], act_ctx[:, :-1], obs_ctx[:, 1:])
        return h.float(), c.float()

    def _sample(self, logits: Tensor) -> Tensor:
        return sample_probs(logits.softmax(dim=-1), self.generator)  # torch.multinomial's draw, without its sync

    def _check_context(self, obs_ctx: Tensor, act_ctx: Tensor) -> tuple[Tensor, Tensor]:
        n = self.agent.denoiser.cfg.num_steps_conditioning
        if obs_ctx.ndim != 5 or obs_ctx.shape[1] != n or act_ctx.shape != obs_ctx.shape[:2]:
            raise ValueError(
                f"contexts must be obs (B, {n}, 3, H, W) and act (B, {n}), got {tuple(obs_ctx.shape)} and {tuple(act_ctx.shape)}"
            )
        if not obs_ctx.is_floating_point():
            raise ValueError("context frames must be float in [-1, 1] (see model.pixels.to_float)")
        return obs_ctx.to(self.device, torch.float32), act_ctx.to(self.device, torch.long)

    def _check_reset(self) -> None:
        if self.obs_buffer is None:
            raise RuntimeError("call reset(obs_ctx, act_ctx) before stepping the world model")
