"""Opening the player's window: whether there is a display at all (with a --headless hint when not), how much
of the desktop a window can take, and keeping a window that grows on the screen."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import pygame

from weights.errors import UserError

WINDOW_MARGIN = (16, 80)  # desktop pixels left for the window's frame, title bar and a task bar
NO_DISPLAY = ("no display to open a window on ({why}); to play without a window, run "
              "`dreamarcade play --headless --steps N [--record FILE.mp4]`")


@contextlib.contextmanager
def _without_sdl_noise():
    """Drops the line SDL's Wayland probe writes straight to file descriptor 2 when XDG_RUNTIME_DIR is unset
    ("error: XDG_RUNTIME_DIR is invalid or not set"): it would come before, and contradict, our own message.
    Anything else written meanwhile is passed on."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr descriptor (embedded interpreters): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as caught:
        sys.stderr.flush()
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().splitlines(keepends=True) if b"XDG_RUNTIME_DIR" not in line]
            if kept:
                os.write(2, b"".join(kept))


def init_display() -> None:
    """Starts pygame's display; ValueError with a --headless hint when there is none to show a window on."""
    if (sys.platform.startswith("linux") and not os.environ.get("SDL_VIDEODRIVER")
            and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")):
        raise UserError(NO_DISPLAY.format(why="neither DISPLAY nor WAYLAND_DISPLAY is set"))
    try:
        with _without_sdl_noise():
            pygame.display.init()
    except pygame.error as e:
        raise UserError(NO_DISPLAY.format(why=e)) from None
    driver = pygame.display.get_driver()
    if driver in ("offscreen", "dummy") and os.environ.get("SDL_VIDEODRIVER") != driver:
        pygame.display.quit()  # SDL fell back to an invisible window: nobody would see it
        raise UserError(NO_DISPLAY.format(why="no X11 or Wayland display found"))


def check_display() -> None:
    """Raises ValueError with a --headless hint when no window can be shown (checked before loading weights)."""
    init_display()
    pygame.display.quit()


def display_room() -> tuple[int, int] | None:
    """The pixels a window can take on the desktop (its size less room for a title bar and a task bar)."""
    try:
        width, height = pygame.display.get_desktop_sizes()[0]
    except (pygame.error, IndexError):
        return None
    return width - WINDOW_MARGIN[0], height - WINDOW_MARGIN[1]


def sdl_window():
    """The pygame window as an SDL Window object (for its position), or None where pygame has none.
    Keep the object as long as the window, and take a new one after each set_mode: pygame stores a pointer
    to it in the SDL window, and one that is garbage collected leaves SDL's event handling a dangling
    pointer (a segfault at the next event)."""
    try:
        from pygame._sdl2.video import Window

        return Window.from_display_module()
    except (ImportError, pygame.error):
        return None


def keep_on_screen(window, size: tuple[int, int]) -> None:
    """Moves the window left or up when it has grown past the desktop's edge (compare mode widens it)."""
    if window is None:
        return
    try:
        desk_w, desk_h = pygame.display.get_desktop_sizes()[0]
        x, y = window.position
        new = (max(0, min(x, desk_w - size[0])), max(0, min(y, desk_h - size[1] - WINDOW_MARGIN[1] // 2)))
        if new != (x, y):
            window.position = new
    except (pygame.error, IndexError):
        pass  # a driver without window positions: nothing to move


def open_display(size: tuple[int, int]) -> pygame.Surface:
    """Opens the window; raises ValueError with a --headless hint when there is no display."""
    init_display()
    try:
        return pygame.display.set_mode(size)
    except pygame.error as e:
        raise UserError(NO_DISPLAY.format(why=e)) from None
