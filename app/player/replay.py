"""Browsing stored episodes frame by frame: recordings, training data, any episode store folder.

Keys: Left/Right step (hold to scroll), PgUp/PgDn 10 steps, Home/End first/last frame,
Up/Down next/previous episode, Space play/pause, H help, Esc quit. Actions are shown by name: the
recording's actions.json, or a training run's config.json, names the game.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pygame

from app.player.hud import ACCENT, BG, DIM, FG, FOOTER_H, HEADER_H
from app.player.display import open_display
from weights.errors import NotFound, UserError

KEYS_HELP = "Left/Right step  PgUp/PgDn 10  Home/End  Up/Down episode  Space play  h help  Esc quit"
KEYS = (
    ("Left / Right", "previous / next step (hold to scroll)"),
    ("PgDn / PgUp", "10 steps back / on"),
    ("Home / End", "first step / the frame after the last"),
    ("Down / Up", "previous / next episode"),
    ("Space", "play / pause"),
    ("h / F1", "show or hide this help"),
    ("Esc", "quit"),
)
HOLD_REPEAT_S = 0.06


@dataclass
class Replay:
    """State of the episode browser; `handle_key` is all the logic, `draw` all the drawing."""

    path: Path
    size: int = 512
    meanings: tuple[str, ...] | None = None
    episode: int = 0
    t: int = 0
    playing: bool = False
    help: bool = False
    _held: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        from training.episode_store import EpisodeStore

        self.store = EpisodeStore(self.path, static=True)
        if len(self.store) == 0:
            raise UserError(f"no episodes in {self.path} (an episode store folder of .npz files)")

    @property
    def current(self):
        return self.store[self.episode]

    def frame(self) -> np.ndarray:
        """The frame at step t (H, W, 3) uint8; t == len(episode) shows the frame after the last step."""
        ep = self.current
        chw = ep.final_obs if self.t >= len(ep) else ep.obs[self.t]
        return chw.transpose(1, 2, 0)

    def seek(self, t: int) -> None:
        self.t = min(max(t, 0), len(self.current))

    def select(self, episode: int) -> None:
        self.episode = episode % len(self.store)
        self.t = 0

    def handle_key(self, key: int) -> bool:
        """Applies one key press; returns False when the browser should close."""
        moves = {pygame.K_RIGHT: 1, pygame.K_LEFT: -1, pygame.K_PAGEUP: 10, pygame.K_PAGEDOWN: -10}
        if key == pygame.K_ESCAPE:
            return False
        if key in (pygame.K_h, pygame.K_F1):
            self.help = not self.help
            self.playing = self.playing and not self.help
        elif key in moves:
            self.seek(self.t + moves[key])
        elif key in (pygame.K_HOME, pygame.K_RETURN):
            self.seek(0)
        elif key == pygame.K_END:
            self.seek(len(self.current))
        elif key in (pygame.K_UP, pygame.K_DOWN):
            self.select(self.episode + (1 if key == pygame.K_UP else -1))
        elif key == pygame.K_SPACE:
            self.playing = not self.playing
        return True

    def lines(self) -> list[tuple[str, str]]:
        ep, t = self.current, self.t
        last = t >= len(ep)
        act = "-" if last else str(int(ep.act[t]))
        if not last and self.meanings and int(ep.act[t]) < len(self.meanings):
            act = f"{self.meanings[int(ep.act[t])]} ({act})"
        return [
            ("Episode", f"{self.episode + 1} / {len(self.store)}"),
            ("Step", f"{t} / {len(ep)}" + ("  (final frame)" if last else "")),
            ("Action", act),
            ("Reward", "-" if last else f"{float(ep.rew[t]):+g}"),
            ("Return", f"{float(ep.rew[:t].sum()):g} so far, {ep.ret:g} in all"),
            ("End", "-" if last else ("end" if ep.end[t] else "trunc" if ep.trunc[t] else "no")),
        ]

    def draw(self, surface: pygame.Surface, font: pygame.font.Font, small: pygame.font.Font) -> None:
        surface.fill(BG)
        frame = self.frame()
        img = pygame.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))
        x = (surface.get_width() - self.size) // 2
        surface.blit(pygame.transform.scale(img, (self.size, self.size)), (x, HEADER_H))
        for i, (name, value) in enumerate(self.lines()):
            col, row = divmod(i, 3)
            px, py = 8 + col * (surface.get_width() // 2), 8 + row * 24
            surface.blit(small.render(name, True, DIM), (px, py + 3))
            surface.blit(font.render(value, True, FG), (px + 70, py))
        surface.blit(small.render(str(self.path), True, DIM), (8, HEADER_H - 22))
        hint = small.render(("PLAYING  " if self.playing else "") + KEYS_HELP, True, ACCENT)
        surface.blit(hint, (8, HEADER_H + self.size + 6))
        if self.help:
            shade = pygame.Surface(surface.get_size(), pygame.SRCALPHA)
            shade.fill((8, 9, 12, 238))
            surface.blit(shade, (0, 0))
            surface.blit(font.render("Replay keys", True, ACCENT), (16, 12))
            for i, (keys, what) in enumerate(KEYS):
                surface.blit(small.render(keys, True, ACCENT), (16, 40 + i * 20))
                surface.blit(small.render(what, True, FG), (120, 40 + i * 20))


def find_action_names(path: Path) -> tuple[str, ...] | None:
    """The action names of the episodes under `path`: from a recording's actions.json, or the game in a
    training run's config.json, in `path` or a folder above it (None when neither is found)."""
    from app.player.recorder import ACTIONS_FILE

    for folder in [path, *list(path.resolve().parents)[:3]]:
        if (folder / ACTIONS_FILE).is_file():
            return tuple(json.loads((folder / ACTIONS_FILE).read_text())["actions"])
        if (folder / "config.json").is_file():
            game = json.loads((folder / "config.json").read_text()).get("train", {}).get("game")
            return game_action_names(game) if game else None
    return None


def game_action_names(game: str) -> tuple[str, ...]:
    """The minimal action set's names of a game (one of the 26 or Catch), read from its env."""
    from app.player.sources import make_real_env

    env = make_real_env(game)
    try:
        return tuple(env.unwrapped.get_action_meanings())
    finally:
        env.close()


def run_replay(path: str | Path, size: int = 512, meanings: tuple[str, ...] | None = None, fps: float = 15.0,
               max_frames: int | None = None, on_frame: Callable[[int, Replay], None] | None = None) -> Replay:
    """Opens the browser window on an episode store folder (searched recursively)."""
    path = Path(path)
    if not path.is_dir():
        raise NotFound(f"--replay {path}: no such folder")
    if meanings is None:
        try:
            meanings = find_action_names(path)
        except (OSError, ValueError, KeyError, TypeError):  # an unreadable or foreign file: numbers then
            meanings = None
    replay = Replay(path, size=size, meanings=meanings)
    screen = open_display((max(size, 640), HEADER_H + size + FOOTER_H))
    pygame.display.set_caption(f"dreamarcade replay: {path}")
    pygame.font.init()
    font, small = pygame.font.Font(None, 22), pygame.font.Font(None, 18)
    clock = pygame.time.Clock()
    frames, running, last_move, last_play = 0, True, 0.0, 0.0
    try:
        while running:
            if on_frame is not None:
                on_frame(frames, replay)
            for event in pygame.event.get():
                if event.type == pygame.QUIT:
                    running = False
                elif event.type == pygame.KEYDOWN:
                    replay._held.add(event.key)
                    last_move = time.monotonic() + 0.3  # first repeat after a short delay
                    running = replay.handle_key(event.key)
                elif event.type == pygame.KEYUP:
                    replay._held.discard(event.key)
            now = time.monotonic()
            held = replay._held & {pygame.K_LEFT, pygame.K_RIGHT}
            if held and now - last_move > HOLD_REPEAT_S:
                replay.handle_key(next(iter(held)))
                last_move = now
            if replay.playing and now - last_play > 1.0 / fps:
                if replay.t >= len(replay.current):
                    replay.playing = False
                replay.seek(replay.t + 1)
                last_play = now
            replay.draw(screen, font, small)
            pygame.display.flip()
            frames += 1
            if max_frames is not None and frames >= max_frames:
                running = False
            clock.tick(60)
    finally:
        pygame.display.quit()
    return replay
