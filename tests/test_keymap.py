"""Keymaps: every minimal action of all 26 games has a key combination, derived from ALE's meanings."""
import pytest

pygame = pytest.importorskip("pygame")

from app.player.keymap import (  # noqa: E402
    BUTTON_KEYS, BUTTON_SCANCODES, Keymap, action_buttons, buttons_from_keys)
from training.atari_env import make_atari_env  # noqa: E402
from training.games import GAME_NAMES  # noqa: E402


def meanings_of(game: str) -> tuple[str, ...]:
    env = make_atari_env(game, train=False)
    try:
        return tuple(env.unwrapped.get_action_meanings())
    finally:
        env.close()


@pytest.mark.parametrize("game", GAME_NAMES)
def test_every_minimal_action_has_keys(game):
    keymap = Keymap(meanings_of(game))
    assert keymap.num_actions == len(meanings_of(game))
    for i, meaning in enumerate(keymap.meanings):
        buttons = action_buttons(meaning)
        # pressing the action's buttons gives it: arrows + Space, and WASD + Z by their scancodes
        keys = {BUTTON_KEYS[b][0] for b in buttons}
        assert keymap.action(buttons_from_keys(keys)) == i, (game, meaning)
        scancodes = {BUTTON_SCANCODES[b][-1] for b in buttons}
        assert keymap.action(buttons_from_keys(set(), scancodes)) == i, (game, meaning)
        assert keymap.combo(i)  # something to show on screen
    assert keymap.action(set()) == keymap.meanings.index("NOOP")


def test_closest_action_when_the_exact_one_does_not_exist():
    breakout = Keymap(("NOOP", "FIRE", "RIGHT", "LEFT"))
    assert breakout.action({"UP"}) == 0  # no UP in Breakout: nothing
    assert breakout.action({"RIGHT", "UP"}) == 2
    assert breakout.action({"RIGHT", "FIRE"}) in (1, 2)
    kung_fu = Keymap(meanings_of("KungFuMaster"))  # has no plain FIRE
    assert "FIRE" in kung_fu.meanings[kung_fu.action({"FIRE"})]
    assert breakout.action({"LEFT", "RIGHT"}) == 0  # opposite directions cancel


def test_summary_and_labels():
    keymap = Keymap(meanings_of("Pong"))
    assert "Space fire" in keymap.summary()
    assert keymap.combo(keymap.meanings.index("RIGHTFIRE")) == "Right/D + Space/Z"
    assert keymap.combo(0) == "no key"
    assert buttons_from_keys({pygame.K_z}, {pygame.KSCAN_W}) == {"UP"}  # AZERTY's Z is where W is
    assert buttons_from_keys({pygame.K_w}, {pygame.KSCAN_Z}) == {"FIRE"}  # and its W where Z is
    assert buttons_from_keys({pygame.K_SPACE, pygame.K_LEFT}) == {"FIRE", "LEFT"}
    assert buttons_from_keys({pygame.K_q}, {pygame.KSCAN_A}) == {"LEFT"}
    with pytest.raises(ValueError, match="unknown Atari action"):
        Keymap(("NOOP", "JUMP"))


def test_pong_paddle_moves_with_up_and_down():
    pong = Keymap.for_game("Pong", meanings_of("Pong"))  # ALE: RIGHT raises the paddle, LEFT lowers it
    held = lambda *keys: buttons_from_keys(set(keys))
    assert pong.meanings[pong.action(held(pygame.K_UP))] == "RIGHT"
    assert pong.meanings[pong.action(held(pygame.K_DOWN))] == "LEFT"
    assert pong.meanings[pong.action(buttons_from_keys(set(), {pygame.KSCAN_S, pygame.KSCAN_SPACE}))] == "LEFTFIRE"
    assert pong.meanings[pong.action(held(pygame.K_UP, pygame.K_DOWN))] == "NOOP"
    assert pong.summary() == "Up/W Down/S move, Space fire"
    assert pong.combo(pong.meanings.index("RIGHTFIRE")) == "Up/W + Space/Z"
    # the other games keep ALE's directions
    breakout = Keymap.for_game("Breakout", meanings_of("Breakout"))
    assert breakout.summary() == "Left/A Right/D move, Space fire" and breakout.action({"UP"}) == 0


class FakePad:
    """The part of pygame's Joystick API the player reads: a hat, the left stick and face buttons."""

    def __init__(self, hat=(0, 0), axes=(0.0, 0.0), buttons=(0, 0, 0, 0)):
        self.hat, self.axes, self.buttons = hat, axes, buttons

    def get_numhats(self):
        return 1

    def get_hat(self, i):
        return self.hat

    def get_numaxes(self):
        return len(self.axes)

    def get_axis(self, i):
        return self.axes[i]

    def get_numbuttons(self):
        return len(self.buttons)

    def get_button(self, i):
        return self.buttons[i]


def test_gamepad_hat_stick_and_buttons():
    from app.player.keymap import buttons_from_gamepad

    seaquest = Keymap(meanings_of("Seaquest"))
    assert buttons_from_gamepad(FakePad()) == set()
    assert buttons_from_gamepad(FakePad(hat=(1, 1))) == {"RIGHT", "UP"}
    assert buttons_from_gamepad(FakePad(axes=(-0.9, 0.8))) == {"LEFT", "DOWN"}  # stick: +y is down
    assert buttons_from_gamepad(FakePad(axes=(0.2, -0.3))) == set()  # inside the dead zone
    held = buttons_from_gamepad(FakePad(hat=(0, 1), buttons=(0, 1, 0, 0)))
    assert seaquest.meanings[seaquest.action(held)] == "UPFIRE"
