"""Where frames come from: the real emulator, the world model, and the agent's policy.

All frames handed out here are uint8 numpy arrays (H, W, 3), as the training env gives them;
the conversion to the model's [-1, 1] tensors goes through `model.pixels`, the one place for it.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from model.pixels import to_float, to_uint8
from weights.errors import UserError


def make_real_env(game: str, seed: int | None = None):
    """The real test env (full games) of the Atari 100k protocol, 64x64x3 uint8 observations
    (or the toy game Catch, same format)."""
    from training.atari_env import make_env

    return make_env(game, train=False, seed=seed)


def original_frame(env, info: dict) -> np.ndarray | None:
    """The full 210x160 RGB frame of the last step, if the env gives it."""
    frame = info.get("original_obs")
    if frame is None:
        try:
            frame = env.unwrapped.ale.getScreenRGB()
        except AttributeError:
            return None
    return np.asarray(frame)


class RealSource:
    """The real ALE emulator, remembering the last `context` frames and actions to seed the world model
    (`context`: the denoiser's `num_steps_conditioning`; 1 when there is no world model to seed).

    A game whose action 1 is FIRE (Breakout, Pong, ...: the ones that wait for it to start, as Stable-Baselines'
    FireResetEnv assumes) is served in the steps that fill a new game's context, so a dream starts with the ball
    in flight, as the reference's player starts its dreams from frames of real play. A world model rarely learns
    the serve itself (see the README), and one started on a still board would wait for a ball that never comes."""

    def __init__(self, game: str, seed: int | None = None, context: int = 1):
        self.game, self.context_length = game, context
        self.env = make_real_env(game, seed)
        self.meanings: tuple[str, ...] = tuple(self.env.unwrapped.get_action_meanings())
        self.obs: np.ndarray | None = None
        self.original: np.ndarray | None = None
        self.history: deque[tuple[np.ndarray, int]] = deque(maxlen=context)
        self.done = False
        self.serves = len(self.meanings) >= 3 and self.meanings[1] == "FIRE"

    @property
    def num_actions(self) -> int:
        return len(self.meanings)

    def reset(self) -> np.ndarray:
        """Starts a new game (the world model's context is filled with NOOPs when it is asked for)."""
        obs, info = self.env.reset()  # the env applies its seed to the first game only
        self.history.clear()
        self.obs, self.original, self.done = np.asarray(obs), original_frame(self.env, info), False
        return self.obs

    def step(self, act: int) -> tuple[np.ndarray, float, bool, bool]:
        """-> (obs (H, W, 3) uint8, reward, terminated, truncated)."""
        self.history.append((self.obs, act))
        obs, rew, terminated, truncated, info = self.env.step(act)
        self.obs, self.original = np.asarray(obs), original_frame(self.env, info)
        self.done = bool(terminated or truncated)
        return self.obs, float(rew), bool(terminated), bool(truncated)

    def context(self) -> tuple[np.ndarray, np.ndarray]:
        """The last `context` frames (context, H, W, 3) uint8, the latest being the current frame, and the
        actions taken after each (context,); the last action is a placeholder the model's step overwrites.
        At the start of a game NOOPs are played (not counted as steps) until there are enough frames, the next to
        last of them FIRE in a game that `serves`, so the last two frames show the ball moving."""
        n = self.context_length
        while len(self.history) < n - 1:
            if self.done:
                self.reset()
            self.step(1 if self.serves and len(self.history) == max(n - 3, 0) else 0)
        past = list(self.history)[len(self.history) - (n - 1):]
        obs = np.stack([o for o, _ in past] + [self.obs])
        act = np.array([a for _, a in past] + [0], dtype=np.int64)
        return obs, act

    def close(self) -> None:
        """Closes the emulator (again: nothing)."""
        if self.env is not None:
            self.env.close()
            self.env = None


def frames_to_tensor(frames: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1] on device."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return to_float(t.movedim(-1, -3))


def tensor_to_frame(x: torch.Tensor) -> np.ndarray:
    """float (3, H, W) in [-1, 1] -> uint8 (H, W, 3) numpy."""
    return to_uint8(x.detach().float()).movedim(0, -1).cpu().numpy()


class DreamSource:
    """The world model as a game: one imagined environment driven by `model.world_model_env.WorldModelEnv`.

    Reward and end are the model's most likely values (sample_rew_end=False, the default for play), not
    samples as in training and in the reference's player, where a small chance of "end" at every step
    ended games at random and spurious +1/-1 rewards appeared; sample_rew_end=True samples them.
    """

    def __init__(self, agent, denoising_steps: int | None = None, precision: str = "float32",
                 generator: torch.Generator | None = None, sample_rew_end: bool = False):
        from model.world_model_env import WorldModelEnv

        self.sample_rew_end = sample_rew_end

        self.wm = WorldModelEnv(agent, generator=generator, precision=precision)
        self.device = self.wm.device
        self.denoising_steps = agent.denoising_steps if denoising_steps is None else denoising_steps
        self.obs: np.ndarray | None = None
        self.latency_ms = 0.0

    @property
    def precision(self) -> str:
        return self.wm.precision

    @property
    def denoising_steps(self) -> int:
        return int(self.wm.denoising_steps)

    @denoising_steps.setter
    def denoising_steps(self, n: int) -> None:
        if n < 1:
            raise UserError(f"the number of denoising steps must be at least 1, not {n}")
        self.wm.denoising_steps = int(n)

    @torch.inference_mode()
    def reset(self, obs_ctx: np.ndarray, act_ctx: np.ndarray) -> np.ndarray:
        """Seeds the model with real context: obs_ctx (n, H, W, 3) uint8, act_ctx (n,), n = num_steps_conditioning."""
        obs = frames_to_tensor(obs_ctx, self.device).unsqueeze(0)
        act = torch.as_tensor(act_ctx, dtype=torch.long, device=self.device).unsqueeze(0)
        self.wm.reset(obs, act)
        self.obs = np.asarray(obs_ctx[-1])
        return self.obs

    @torch.inference_mode()
    def step(self, act: int) -> tuple[np.ndarray, float, bool]:
        """-> (imagined next frame (H, W, 3) uint8, reward in {-1, 0, 1}, end) and records the latency."""
        t0 = time.perf_counter()
        next_obs, rew, end, info = self.wm.step(torch.tensor([act], dtype=torch.long, device=self.device))
        if not self.sample_rew_end:
            rew = info["rew_logits"].argmax(-1).float() - 1.0  # classes: -1, 0, +1
            end = info["end_logits"].argmax(-1)
        self.obs = tensor_to_frame(next_obs[0])
        self.latency_ms = (time.perf_counter() - t0) * 1000
        return self.obs, float(rew[0]), bool(end[0])


@dataclass(frozen=True)
class PolicyOutput:
    action: int
    value: float
    entropy_bits: float
    probs: np.ndarray  # (A,)


class Policy:
    """The agent's actor-critic, its LSTM state carried across steps (reset with `reset`)."""

    def __init__(self, agent, generator: torch.Generator | None = None, precision: str = "float32"):
        """precision: a policy of `model.precision`, resolved on the agent's device."""
        from model.precision import resolve

        if resolve(precision, agent.device) == "bfloat16":  # the same network, channels-last bfloat16 (model.fast)
            from model.fast import FastActorCritic

            self.actor_critic = FastActorCritic(agent.actor_critic, torch.bfloat16)
        else:
            self.actor_critic = agent.actor_critic
        self.device = agent.device
        self.generator = generator
        self.state = None

    def reset(self) -> None:
        self.state = None

    @torch.inference_mode()
    def __call__(self, obs: np.ndarray) -> PolicyOutput:
        """Reads one frame (H, W, 3) uint8, advances the LSTM state and samples an action."""
        logits, value, self.state = self.actor_critic(frames_to_tensor(obs, self.device).unsqueeze(0), self.state)
        probs = torch.softmax(logits[0].float(), dim=-1)
        action = int(torch.multinomial(probs.cpu(), 1, generator=self.generator))
        entropy = float(-(probs * probs.clamp_min(1e-12).log2()).sum())
        return PolicyOutput(action, float(value[0]), entropy, probs.cpu().numpy())

    def burn_in(self, frames: np.ndarray) -> None:
        """Runs the LSTM over past frames (T, H, W, 3), so the policy knows the context it starts from."""
        self.state = None
        for f in frames:
            self(f)
