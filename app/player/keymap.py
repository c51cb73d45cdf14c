"""Keys for each game, derived from its ALE action meanings (so every one of the 26 games works).

An ALE action name is a combination of five buttons: UP, DOWN, LEFT, RIGHT (the joystick) and FIRE,
e.g. "UPLEFTFIRE". The player holds buttons (arrows or WASD for the joystick, Space for fire, or a
gamepad) and the game's action is the one whose buttons are exactly those held. When no action has
exactly those buttons (Breakout has no UP; KungFuMaster has no plain FIRE), the closest one is taken:
most held buttons kept, then fewest extra buttons, then the lowest index. Pressing exactly an
action's buttons always gives that action, so every minimal action has a key combination.
"""
from __future__ import annotations

from dataclasses import dataclass

import pygame

BUTTONS = ("UP", "DOWN", "LEFT", "RIGHT", "FIRE")

# Keyboard keys of each button: arrows and Space by the key they are, WASD and Z (fire) by where they are
# (scancodes), so they sit under the left hand on AZERTY and other layouts too.
BUTTON_KEYS: dict[str, tuple[int, ...]] = {
    "UP": (pygame.K_UP,),
    "DOWN": (pygame.K_DOWN,),
    "LEFT": (pygame.K_LEFT,),
    "RIGHT": (pygame.K_RIGHT,),
    "FIRE": (pygame.K_SPACE,),
}
BUTTON_SCANCODES: dict[str, tuple[int, ...]] = {
    "UP": (pygame.KSCAN_UP, pygame.KSCAN_W),
    "DOWN": (pygame.KSCAN_DOWN, pygame.KSCAN_S),
    "LEFT": (pygame.KSCAN_LEFT, pygame.KSCAN_A),
    "RIGHT": (pygame.KSCAN_RIGHT, pygame.KSCAN_D),
    "FIRE": (pygame.KSCAN_SPACE, pygame.KSCAN_Z),
}
BUTTON_LABELS = {"UP": "Up/W", "DOWN": "Down/S", "LEFT": "Left/A", "RIGHT": "Right/D", "FIRE": "Space/Z"}
GAMEPAD_DEADZONE = 0.5

# Games whose ALE actions RIGHT and LEFT move the player up and down on screen: there Up and Down press them
# (and still Right and Left). Among the 26 only Pong (RIGHT raises the paddle): checked by stepping each game
# whose minimal actions have LEFT and RIGHT but no UP or DOWN (Breakout, DemonAttack and Pong).
VERTICAL_GAMES = frozenset({"Pong"})
_TURNED = {"UP": "RIGHT", "DOWN": "LEFT"}  # the button held -> the ALE button it presses, in those games


def action_buttons(meaning: str) -> frozenset[str]:
    """'UPLEFTFIRE' -> {'UP', 'LEFT', 'FIRE'}; 'NOOP' -> {}. Raises ValueError on an unknown name."""
    if meaning == "NOOP":
        return frozenset()
    rest, buttons = meaning, set()
    while rest:
        for b in BUTTONS:
            if rest.startswith(b):
                buttons.add(b)
                rest = rest[len(b):]
                break
        else:
            raise ValueError(f"unknown Atari action name {meaning!r}")
    return frozenset(buttons)


@dataclass(frozen=True)
class Keymap:
    """Maps held buttons to an action index of one game's minimal action set."""

    meanings: tuple[str, ...]
    vertical: bool = False  # the game's RIGHT/LEFT move up/down (VERTICAL_GAMES): Up/Down press them

    def __post_init__(self) -> None:
        for m in self.meanings:
            action_buttons(m)  # validates

    @classmethod
    def for_game(cls, game: str, meanings: tuple[str, ...]) -> "Keymap":
        return cls(tuple(meanings), vertical=game in VERTICAL_GAMES)

    def _label(self, button: str) -> str:
        if self.vertical and button in ("RIGHT", "LEFT"):
            return BUTTON_LABELS["UP" if button == "RIGHT" else "DOWN"]
        return BUTTON_LABELS[button]

    @property
    def num_actions(self) -> int:
        return len(self.meanings)

    def action(self, held: frozenset[str] | set[str]) -> int:
        """The action index for the held buttons (0, NOOP, when nothing matches at all)."""
        held = frozenset(held)
        if self.vertical:
            held = frozenset(_TURNED.get(b, b) for b in held)
        # Opposite directions cancel, as on a real joystick.
        if {"UP", "DOWN"} <= held:
            held -= {"UP", "DOWN"}
        if {"LEFT", "RIGHT"} <= held:
            held -= {"LEFT", "RIGHT"}
        scores = []
        for i, m in enumerate(self.meanings):
            b = action_buttons(m)
            scores.append((len(b & held), -len(b - held), -i))
        return -max(scores)[2]

    def combo(self, action: int) -> str:
        """How to press an action on the keyboard, e.g. 'Up/W + Space'; 'no key' for NOOP."""
        b = action_buttons(self.meanings[action])
        return " + ".join(self._label(x) for x in BUTTONS if x in b) or "no key"

    def summary(self) -> str:
        """A short line naming the keys this game uses, e.g. 'Left/A Right/D move, Space fire'
        ('Up/W Down/S move, Space fire' in Pong)."""
        used = set().union(*(action_buttons(m) for m in self.meanings))
        order = ("RIGHT", "LEFT", "UP", "DOWN") if self.vertical else ("UP", "DOWN", "LEFT", "RIGHT")
        moves = [self._label(b) for b in order if b in used]
        parts = [" ".join(moves) + " move"] if moves else []
        if "FIRE" in used:
            parts.append("Space fire")
        return ", ".join(parts)


def buttons_from_keys(keys: set[int] | frozenset[int], scancodes: set[int] | frozenset[int] = frozenset()) -> set[str]:
    """The buttons held, from the held pygame key codes and (optionally) their scancodes."""
    return {b for b in BUTTONS
            if any(k in keys for k in BUTTON_KEYS[b]) or any(s in scancodes for s in BUTTON_SCANCODES[b])}


def buttons_from_gamepad(joystick) -> set[str]:
    """The buttons held on a pygame joystick: the first hat or the left stick, and any face button for fire."""
    held: set[str] = set()
    try:
        x, y = (joystick.get_hat(0) if joystick.get_numhats() else (0, 0))
        if joystick.get_numaxes() >= 2:
            ax, ay = joystick.get_axis(0), joystick.get_axis(1)
            x = x or (1 if ax > GAMEPAD_DEADZONE else -1 if ax < -GAMEPAD_DEADZONE else 0)
            y = y or (-1 if ay > GAMEPAD_DEADZONE else 1 if ay < -GAMEPAD_DEADZONE else 0)  # stick: down is +
        if x > 0:
            held.add("RIGHT")
        elif x < 0:
            held.add("LEFT")
        if y > 0:
            held.add("UP")
        elif y < 0:
            held.add("DOWN")
        if any(joystick.get_button(i) for i in range(min(4, joystick.get_numbuttons()))):
            held.add("FIRE")
    except pygame.error:  # unplugged between two frames
        return set()
    return held
