"""Drawing: the game frames, the heads-up display and the help screen, onto any pygame Surface.

The same drawing serves the window, the headless recorder (an off-screen Surface) and screenshots,
so an mp4 shows exactly what the window shows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pygame

from app.player.keymap import Keymap
from app.player.session import Snapshot

HEADER_H = 136
ROW_H = 22  # five rows of figures in the header
FOOTER_H = 26
GAP = 8
BG = (16, 18, 24)
FG = (225, 228, 235)
DIM = (140, 146, 160)
ACCENT = (255, 196, 64)
RED = (235, 64, 64)
GREEN = (96, 210, 120)

CONTROLS = (
    ("h / F1", "show or hide this help"),
    ("Esc", "quit"),
    ("p", "pause / resume"),
    ("n", "single step (while paused)"),
    ("r / Enter", "reset: new game"),
    ("m", "switch mode: imagine, real, compare"),
    ("Tab / c", "switch controller: human, agent, random"),
    ("y", "re-sync the model with the real game"),
    ("[ / ]", "imagination horizon down / up"),
    ("- / =", "denoising steps down / up"),
    ("F12 / x", "screenshot (PNG)"),
    ("v", "start / stop recording (mp4 + episodes)"),
    ("o", "show the full-resolution real frame"),
    ("g", "choose another game"),
)


@dataclass
class Status:
    """What the loop knows that the session does not."""

    fps_target: float | None  # None: no target (headless runs as fast as it can)
    fps_reached: float = 0.0
    paused: bool = False
    recording_s: float | None = None  # seconds since recording started; None: not recording
    help: bool = False
    original: bool = False
    message: str = ""
    busy: bool = False  # a model step is in flight


def fit_panel(size: int, num_panels: int, room: tuple[int, int] | None) -> int:
    """The panel size for `num_panels` side by side in a window that fits in `room` (width, height) pixels:
    `size` when it fits, else the largest multiple of 64 that does (whole screen pixels per frame pixel)."""
    if room is None:
        return size
    fits = min(size, (room[0] - (num_panels - 1) * GAP) // num_panels, room[1] - HEADER_H - FOOTER_H)
    return fits if fits == size or fits < 64 else max(64, fits // 64 * 64)


def _fmt(x: float | None, spec: str, none: str = "-") -> str:
    if x is None:
        return none
    if isinstance(x, float) and math.isinf(x):
        return "exact"
    return format(x, spec)


class Hud:
    """Lays out one or two frame panels under a header; `window_size(mode)` gives the surface size."""

    def __init__(self, size: int, keymap: Keymap, interactive: bool = True):
        """interactive False (headless recordings): no key hints in the footer, nobody can press them."""
        if not pygame.font.get_init():
            pygame.font.init()
        self.size = size
        self.keymap = keymap
        self.interactive = interactive
        self.font = pygame.font.Font(None, 22)
        self.small = pygame.font.Font(None, 18)
        self.big = pygame.font.Font(None, 30)
        self._cache: dict[tuple, pygame.Surface] = {}

    def window_size(self, num_panels: int) -> tuple[int, int]:
        width = num_panels * self.size + (num_panels - 1) * GAP
        return max(width, 640), HEADER_H + self.size + FOOTER_H

    def _text(self, text: str, color=FG, font: pygame.font.Font | None = None) -> pygame.Surface:
        font = font or self.font
        key = (text, color, id(font))
        surf = self._cache.get(key)
        if surf is None:
            if len(self._cache) > 512:
                self._cache.clear()
            surf = self._cache[key] = font.render(text, True, color)
        return surf

    def frame_surface(self, frame: np.ndarray, width: int, height: int) -> pygame.Surface:
        """uint8 (H, W, 3) -> a Surface scaled to (width, height), nearest neighbour (crisp pixels)."""
        surf = pygame.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))
        return pygame.transform.scale(surf, (width, height))

    def blit_frame(self, surface: pygame.Surface, frame: np.ndarray, x: int, y: int) -> None:
        """Draws a frame in the size x size panel at (x, y): square frames (64x64) fill it, others (the
        210x160 original) keep their aspect ratio, centred."""
        h, w = frame.shape[:2]
        scale = self.size / max(h, w)
        fw, fh = round(w * scale), round(h * scale)
        surface.blit(self.frame_surface(frame, fw, fh), (x + (self.size - fw) // 2, y + (self.size - fh) // 2))

    def draw(self, surface: pygame.Surface, snap: Snapshot, status: Status) -> None:
        surface.fill(BG)
        width = surface.get_width()
        panels = snap.panels
        if status.original and snap.original is not None:
            panels = (("real 210x160", snap.original),)
        n = len(panels)
        x0 = (width - (n * self.size + (n - 1) * GAP)) // 2
        for i, (title, frame) in enumerate(panels):
            x = x0 + i * (self.size + GAP)
            self.blit_frame(surface, frame, x, HEADER_H)
            label = self._text(f" {title.upper()} ", BG, self.small)
            pygame.draw.rect(surface, ACCENT if title == "dream" else GREEN, (x, HEADER_H - 17, label.get_width(), 16))
            surface.blit(label, (x, HEADER_H - 15))
        self._header(surface, snap, status)
        self._footer(surface, snap, status)
        if status.help:
            self._help(surface)

    def _header(self, surface: pygame.Surface, snap: Snapshot, status: Status) -> None:
        horizon = "unlimited" if snap.horizon == 0 else str(snap.horizon)
        if status.fps_target is None:  # headless: as fast as it goes
            fps_text, fps_color = f"{status.fps_reached:.1f}", FG
        else:
            fps_text = f"{status.fps_reached:.1f} / {status.fps_target:g}"
            fps_color = GREEN if status.fps_reached >= 0.9 * status.fps_target else ACCENT
        denoise = f"{snap.denoising_steps} steps" if snap.denoising_steps and snap.mode != "real" else "-"
        latency = "-" if snap.latency_ms is None else f"{snap.latency_ms:.0f} ms"
        if snap.latency_ms is not None and snap.precision == "bfloat16":
            latency += " bf16"
        cols = [
            [("Game", snap.game, FG), ("Mode", snap.mode, ACCENT), ("Control", snap.controller, FG),
             ("Step", str(snap.t), FG), ("Device", snap.device, FG)],
            [("Reward", _fmt(snap.rew, "+g"), FG), ("Return", _fmt(snap.ret, "g"), FG),
             ("Action", snap.action_name, FG), ("Value", _fmt(snap.value, ".2f"), FG),
             ("Entropy", _fmt(snap.entropy_bits, ".2f") + (" bits" if snap.entropy_bits is not None else ""), FG)],
            [("FPS", fps_text, fps_color), ("Model", latency, FG), ("Denoise", denoise, FG),
             ("Horizon", horizon, FG), ("Synced", f"{snap.since_sync} steps ago" if snap.mode != "real" else "-", FG)],
            [("PSNR", _fmt(snap.psnr_db, ".1f") + (" dB" if snap.psnr_db not in (None, math.inf) else ""), FG),
             ("Mean", _fmt(snap.psnr_mean_db, ".1f") + (" dB" if snap.psnr_mean_db is not None else ""), FG)],
        ]
        col_w = (surface.get_width() - 16) // len(cols)
        for c, rows in enumerate(cols):
            for r, (name, value, color) in enumerate(rows):
                x, y = 8 + c * col_w, 8 + r * ROW_H
                surface.blit(self._text(name, DIM, self.small), (x, y + 3))
                surface.blit(self._text(value, color), (x + 62, y))
        # the last column's free rows: while recording a red dot, REC and the time recorded; PAUSED below
        right = surface.get_width() - 8
        if status.recording_s is not None:
            seconds = int(status.recording_s)
            s = self._text(f"REC {seconds // 60}:{seconds % 60:02d}", RED, self.big)
            y = 8 + 2 * ROW_H
            surface.blit(s, (right - s.get_width(), y))
            pygame.draw.circle(surface, RED, (right - s.get_width() - 12, y + s.get_height() // 2 - 1), 7)
        if status.paused:
            s = self._text("PAUSED", ACCENT, self.big)
            surface.blit(s, (right - s.get_width(), 8 + 3 * ROW_H + 8))

    def _footer(self, surface: pygame.Surface, snap: Snapshot, status: Status) -> None:
        y = HEADER_H + self.size + 5
        message = status.message or snap.message
        used = 8
        if message:
            text = self._text(message, ACCENT)
            surface.blit(text, (8, y))
            used += text.get_width() + 24
        if not self.interactive:
            return
        hint = self._text(f"{self.keymap.summary()}   h: help   g: game   Esc: quit", DIM, self.small)
        if used + hint.get_width() + 8 <= surface.get_width():
            surface.blit(hint, (surface.get_width() - hint.get_width() - 8, y + 3))

    def _help(self, surface: pygame.Surface) -> None:
        shade = pygame.Surface(surface.get_size(), pygame.SRCALPHA)
        shade.fill((8, 9, 12, 238))
        surface.blit(shade, (0, 0))
        surface.blit(self._text("Controls (the game is paused; h or F1 goes back to it)", ACCENT, self.big), (16, 10))
        for i, (key, what) in enumerate(CONTROLS):
            surface.blit(self._text(key, ACCENT, self.small), (16, 40 + i * 18))
            surface.blit(self._text(what, FG, self.small), (100, 40 + i * 18))
        y = 40 + len(CONTROLS) * 18 + 10
        surface.blit(self._text(f"{self.keymap.num_actions} game actions: hold the keys", ACCENT, self.big), (16, y))
        meanings = self.keymap.meanings
        ncols = max(1, (surface.get_width() - 16) // 300)
        rows = math.ceil(len(meanings) / ncols)
        for i, meaning in enumerate(meanings):
            col, row = divmod(i, rows)
            x, yy = 16 + col * 300, y + 30 + row * 17
            surface.blit(self._text(meaning, ACCENT, self.small), (x, yy))
            surface.blit(self._text(self.keymap.combo(i), FG, self.small), (x + 112, yy))
