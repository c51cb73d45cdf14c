"""The game picker (key g): the 26 games, which have weights on this machine, and a choice made with the keys.

A game with weights here (shipped with dreamarcade, or DIAMOND's in the Hugging Face cache) loads them; the
others play the real game (no download from inside the window). The player swaps its session for the one
chosen, without restarting.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pygame

from app.player.hud import ACCENT, BG, DIM, FG, GREEN, Hud

STATUS_COLORS = {"shipped": GREEN, "cached": ACCENT, "real game only": DIM}
COLUMN_W = 300
ROW_H = 19


def local_weights(game: str) -> str | None:
    """'shipped' or 'cached' when `play --game GAME` finds weights on this machine, else None. No network."""
    from app.commands.games import weights_origin

    origin = weights_origin(game)
    return "shipped" if origin.startswith("shipped") else "cached" if "cached" in origin else None


@dataclass
class GamePicker:
    """The picker's state: the games with their weights status and the one selected."""

    games: tuple[str, ...]
    status: dict[str, str]  # game -> "shipped", "cached" or "real game only"
    selected: int = 0
    columns: int = 2

    @classmethod
    def open(cls, current: str, columns: int = 2) -> "GamePicker":
        from training.games import GAME_NAMES

        status = {g: local_weights(g) or "real game only" for g in GAME_NAMES}
        selected = GAME_NAMES.index(current) if current in GAME_NAMES else 0
        return cls(GAME_NAMES, status, selected, max(1, columns))

    @property
    def rows(self) -> int:
        return math.ceil(len(self.games) / self.columns)

    def handle_key(self, key: int) -> str | bool:
        """Applies a key: the game chosen (Enter or Space), False to close (Esc or g), True to stay open."""
        n = len(self.games)
        moves = {pygame.K_DOWN: 1, pygame.K_UP: -1, pygame.K_RIGHT: self.rows, pygame.K_LEFT: -self.rows,
                 pygame.K_s: 1, pygame.K_w: -1, pygame.K_d: self.rows, pygame.K_a: -self.rows}
        if key in (pygame.K_ESCAPE, pygame.K_g):
            return False
        if key in (pygame.K_RETURN, pygame.K_KP_ENTER, pygame.K_SPACE):
            return self.games[self.selected]
        if key in moves:
            self.selected = min(max(self.selected + moves[key], 0), n - 1)
        return True

    def draw(self, surface: pygame.Surface, hud: Hud) -> None:
        shade = pygame.Surface(surface.get_size(), pygame.SRCALPHA)
        shade.fill((8, 9, 12, 242))
        surface.blit(shade, (0, 0))
        surface.blit(hud._text("Choose a game", ACCENT, hud.big), (16, 10))
        surface.blit(hud._text("arrows: move   Enter: play it here   Esc or g: back to the game", DIM, hud.small),
                     (16, 38))
        for i, game in enumerate(self.games):
            col, row = divmod(i, self.rows)
            x, y = 16 + col * COLUMN_W, 62 + row * ROW_H
            status = self.status[game]
            if i == self.selected:
                pygame.draw.rect(surface, ACCENT, (x - 4, y - 2, COLUMN_W - 12, ROW_H), border_radius=3)
            color = BG if i == self.selected else FG
            surface.blit(hud._text(game, color, hud.font), (x, y))
            surface.blit(hud._text(status, BG if i == self.selected else STATUS_COLORS[status], hud.small),
                         (x + 150, y + 3))
        y = 62 + self.rows * ROW_H + 12
        surface.blit(hud._text("shipped: with dreamarcade   cached: DIAMOND's, downloaded before   "
                               "real game only: no weights here", DIM, hud.small), (16, y))
