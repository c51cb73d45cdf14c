"""Catch: a tiny image-based game for tests, shaped like the Atari training env (64x64x3 uint8 frames).

A ball falls one row per step down 7 rows of 4 columns (cells of 8x16 pixels); the paddle under the last
row moves left, right or stays. When the ball reaches the last row the reward is +1 if the paddle is under
it, else -1, and the episode ends one step later (the landing stays on screen for a step). That extra step matters to the world model:
as the reference, the denoiser never trains on the transition INTO an episode's final frame, so the
rewarded landing must not be that transition.
A random policy scores about -0.5; a perfect one +1. It learns in CPU minutes, so the full loop (world
model + agent trained in imagination) can be tested honestly in CI.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

COLS, ROWS = 4, 7  # ball positions
CELL_W, CELL_H = 16, 8  # pixels: 4 * 16 = 64 wide, 7 * 8 = 56 high, the paddle in the 8 pixels below
BALL_COLOR = (255, 64, 64)
PADDLE_COLOR = (64, 255, 64)
ACTION_MEANINGS = ["NOOP", "LEFT", "RIGHT"]


class CatchEnv(gym.Env):
    """Observations (64, 64, 3) uint8 (HWC, as gymnasium); actions 0 NOOP, 1 LEFT, 2 RIGHT; reward +1/-1 at the end."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(self, render_mode: str | None = "rgb_array") -> None:
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(len(ACTION_MEANINGS))
        self.ball_row = self.ball_col = self.paddle_col = 0

    def get_action_meanings(self) -> list[str]:
        return list(ACTION_MEANINGS)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.ball_row = 0
        self.ball_col = int(self.np_random.integers(COLS))
        self.paddle_col = int(self.np_random.integers(COLS))
        return self._frame(), {}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"invalid action {action!r} for Catch (0 NOOP, 1 LEFT, 2 RIGHT)")
        move = (0, -1, 1)[int(action)]
        self.paddle_col = min(COLS - 1, max(0, self.paddle_col + move))
        if self.ball_row == ROWS - 1:  # the step after the landing: the episode ends, no reward
            return self._frame(), 0.0, True, False, {}
        self.ball_row += 1
        landed = self.ball_row == ROWS - 1
        reward = (1.0 if self.ball_col == self.paddle_col else -1.0) if landed else 0.0
        return self._frame(), reward, False, False, {}

    def render(self) -> np.ndarray:
        return self._frame()

    def _frame(self) -> np.ndarray:
        frame = np.zeros(self.observation_space.shape, np.uint8)
        r, c = self.ball_row * CELL_H, self.ball_col * CELL_W
        frame[r + 1:r + CELL_H - 1, c + 4:c + CELL_W - 4] = BALL_COLOR
        p = self.paddle_col * CELL_W
        frame[ROWS * CELL_H + 2:, p + 1:p + CELL_W - 1] = PADDLE_COLOR
        return frame


if "dreamarcade/Catch-v0" not in gym.registry:  # the id training.games.TOY_GAMES names
    gym.register("dreamarcade/Catch-v0", entry_point=CatchEnv)
