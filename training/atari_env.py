"""Real environments under the Atari 100k protocol (reference/atari100k.md), plus any gymnasium image game.

`make_atari_env(game, train)` builds `ALE/{Game}-v5` with no sticky actions, the minimal action set, one
emulator frame per ALE step, and gymnasium's own `AtariPreprocessing`, which implements the protocol
exactly: U{1..30} NOOPs at reset, frame skip 4 with a max-pool over the last 2 frames (and, like the
reference, a stale terminal frame when the game ends mid-skip), RGB resized to 64x64 with cv2.INTER_AREA,
raw rewards, ALE's 108,000-frame cap as truncation.

Observations are (64, 64, 3) uint8 (HWC, as gymnasium). Every `reset`/`step` info holds
`info["original_obs"]`: the full-resolution (210, 160, 3) uint8 frame the observation was resized from
(max-pooled), for display. `env.unwrapped.get_action_meanings()` names the minimal action set.

Training envs (`train=True`) end an episode at every life loss (`info["life_loss"]`) WITHOUT resetting the
game: the next `reset()` returns the post-loss frame and play continues, as the reference's DoneOnLifeLoss.
Test envs play full games.

`make_atari_vector_env` is ale-py's C++ vector env set to the same protocol; it differs in one place:
its reset draws U{0..noop_max-1} NOOPs, i.e. U{0..29} instead of U{1..30} (tests/test_atari_env.py checks
that everything else gives identical frames).
"""
from __future__ import annotations

from typing import Any

import cv2
import gymnasium as gym
import numpy as np
from gymnasium.wrappers import AtariPreprocessing

from training.games import TOY_GAMES, env_id, get_game, is_atari_game
from weights.errors import UserError

IMG_SIZE = 64
NOOP_MAX = 30
FRAME_SKIP = 4
MAX_FRAMES_PER_EPISODE = 108_000

_ALE_REGISTERED = False


def _register_ale() -> None:
    global _ALE_REGISTERED
    if not _ALE_REGISTERED:
        import ale_py

        gym.register_envs(ale_py)
        _ALE_REGISTERED = True


class OriginalFrame(gym.Wrapper):
    """Puts the full-resolution, max-pooled frame behind each observation in `info["original_obs"]`."""

    def __init__(self, env: AtariPreprocessing):
        super().__init__(env)
        self._pre = env

    def _frame(self) -> np.ndarray:
        return self._pre.obs_buffer[0].copy()  # AtariPreprocessing max-pools into buffer 0 before resizing

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        info["original_obs"] = self._frame()
        return obs, info

    def step(self, action):
        obs, rew, term, trunc, info = self.env.step(action)
        info["original_obs"] = self._frame()
        return obs, rew, term, trunc, info


class EndOnLifeLoss(gym.Wrapper):
    """Training env: a life loss ends the episode (terminated=True, info["life_loss"]=True) without resetting
    the game; the following `reset()` (no seed) returns the post-loss frame, as the reference does."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._ale = env.unwrapped.ale
        self._lives = 0
        self._continue: tuple[np.ndarray, dict] | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if self._continue is not None and seed is None:
            obs, info = self._continue
            self._continue = None
            return obs, info
        self._continue = None
        obs, info = self.env.reset(seed=seed, options=options)
        self._lives = self._ale.lives()
        return obs, info

    def step(self, action):
        obs, rew, term, trunc, info = self.env.step(action)
        lives = self._ale.lives()
        life_loss = lives < self._lives
        self._lives = lives
        info["life_loss"] = life_loss
        if life_loss and not (term or trunc):
            term = True
            self._continue = (obs, {k: v for k, v in info.items() if k != "life_loss"})
        return obs, rew, term, trunc, info


class SeedOnFirstReset(gym.Wrapper):
    """Applies the seed given at construction to the first `reset()` (and the action space), so that
    `make_atari_env(game, train, seed=s)` alone makes a run repeatable."""

    def __init__(self, env: gym.Env, seed: int | None):
        super().__init__(env)
        self._seed = seed
        if seed is not None:
            self.action_space.seed(seed)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and self._seed is not None:
            seed, self._seed = self._seed, None
        return self.env.reset(seed=seed, options=options)


class ImageObs(gym.ObservationWrapper):
    """Any image game -> (size, size, 3) uint8 RGB with INTER_AREA; `info["original_obs"]` keeps the raw frame."""

    def __init__(self, env: gym.Env, size: int = IMG_SIZE):
        super().__init__(env)
        space = env.observation_space
        name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise UserError(f"{name}: needs a discrete action space, got {env.action_space}")
        if not (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) in (2, 3)
                and (len(space.shape) == 2 or space.shape[-1] in (1, 3))):
            raise UserError(f"{name}: needs uint8 image observations (H, W), (H, W, 1) or (H, W, 3), got {space}")
        self.size = size
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)

    def observation(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        if obs.ndim == 3 and obs.shape[-1] == 1:
            obs = obs[..., 0]
        if obs.ndim == 2:
            obs = np.repeat(obs[..., None], 3, axis=-1)
        if obs.shape[:2] != (self.size, self.size):
            obs = cv2.resize(obs, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return obs

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        info["original_obs"] = obs
        return self.observation(obs), info

    def step(self, action):
        obs, rew, term, trunc, info = self.env.step(action)
        info["original_obs"] = obs
        return self.observation(obs), rew, term, trunc, info


def make_atari_env(game: str, train: bool, seed: int | None = None, *, noop_max: int = NOOP_MAX,
                   frame_skip: int = FRAME_SKIP, size: int = IMG_SIZE,
                   render_mode: str | None = None) -> gym.Env:
    """One Atari env under the protocol. Obs (size, size, 3) uint8; see the module docstring.

    `game`: one of the 26 Atari 100k games (any spelling `resolve_game` accepts), or any other ALE id such
    as "ALE/SpaceInvaders-v5", which gets the same protocol. Raises UserError for an unknown name (with
    close matches).
    """
    _register_ale()
    env = gym.make(_ale_env_id(game), frameskip=1, repeat_action_probability=0.0, full_action_space=False,
                   max_num_frames_per_episode=MAX_FRAMES_PER_EPISODE, render_mode=render_mode,
                   disable_env_checker=True)
    env = AtariPreprocessing(env, noop_max=noop_max, frame_skip=frame_skip, screen_size=size,
                             terminal_on_life_loss=False, grayscale_obs=False, scale_obs=False)
    env = OriginalFrame(env)
    if train:
        env = EndOnLifeLoss(env)
    return SeedOnFirstReset(env, seed)


def is_ale_id(name: str) -> bool:
    """True for a registered ale-py id outside the 26 games, e.g. "ALE/SpaceInvaders-v5"."""
    if not name.startswith("ALE/"):
        return False
    _register_ale()
    return name in gym.registry


def _ale_env_id(game: str) -> str:
    return game if not is_atari_game(game) and is_ale_id(game) else get_game(game).env_id


def _ale_rom(game: str) -> str:
    return gym.spec(game).kwargs["game"] if not is_atari_game(game) and is_ale_id(game) else get_game(game).rom


def make_env(name: str, train: bool, seed: int | None = None, *, size: int = IMG_SIZE, **kwargs: Any) -> gym.Env:
    """The env of any game `training.games.resolve_game` accepts: an Atari game (one of the 26 by name, or any
    "ALE/...-v5" id: the protocol env), a toy game ("Catch"), or any registered gymnasium id with uint8 image
    observations and discrete actions, resized to (size, size, 3) RGB. `kwargs` go to `gymnasium.make`
    (non-Atari only).

    Raises UserError naming close Atari matches for an unknown name, or for an id gymnasium does not know.
    """
    if is_atari_game(name) or is_ale_id(name):
        return make_atari_env(name, train, seed, size=size)
    name = env_id(name)
    if name in TOY_GAMES.values():
        import training.toy_env  # noqa: F401  (registers the toy games)
    try:
        env = gym.make(name, **kwargs)
    except gym.error.Error as err:
        raise UserError(f"unknown game {name!r}: not one of the 26 Atari games nor a gymnasium env ({err})") from None
    return SeedOnFirstReset(ImageObs(env, size), seed)


def make_atari_vector_env(game: str, num_envs: int, *, num_threads: int = 0, size: int = IMG_SIZE,
                          noop_max: int = NOOP_MAX):
    """ale-py's C++ vector env (threads, no Python per step) set to the protocol; `game` as make_atari_env.

    Obs (num_envs, 1, size, size, 3) uint8; gymnasium's next-step autoreset: after an env reports
    terminated/truncated (game over or frame cap), its next `step` returns the reset frame and ignores the
    action. Life loss is NOT a terminal here: read it from `info["lives"]` (collect.py does). Its reset
    draws U{0..noop_max-1} NOOPs, not U{1..noop_max} (the one difference from the protocol; its 108k-frame
    cap also starts counting after those NOOPs, a difference of under 30 frames in 108,000). Seed it
    with `reset(seed=s)`: env i gets seed s + i.
    """
    from ale_py.vector_env import AtariVectorEnv

    env = AtariVectorEnv(_ale_rom(game), num_envs, num_threads=num_threads, img_height=size, img_width=size,
                         grayscale=False, stack_num=1, frameskip=FRAME_SKIP, maxpool=True, noop_max=noop_max,
                         episodic_life=False, life_loss_info=False, reward_clipping=False, use_fire_reset=False,
                         repeat_action_probability=0.0, full_action_space=False,
                         max_num_frames_per_episode=MAX_FRAMES_PER_EPISODE)
    return env
