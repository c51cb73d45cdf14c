"""The player: sessions in every mode, the window under SDL's dummy driver with scripted keys, headless
recording to mp4, episode recording and replay, and the checks made before any window opens."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import imageio.v2 as imageio  # noqa: E402
import pygame  # noqa: E402
import torch  # noqa: E402

from app.cli import main  # noqa: E402
from app.player.launch import build_session  # noqa: E402
from app.player.player import Player, WindowOptions  # noqa: E402
from model import Agent  # noqa: E402
from model.presets import tiny  # noqa: E402

GAME = "Breakout"  # 4 actions: NOOP FIRE RIGHT LEFT


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def agent():
    torch.manual_seed(0)
    return Agent(tiny(4)).eval()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, agent):
    from weights import save_agent

    return save_agent(agent, tmp_path_factory.mktemp("w") / "tiny.safetensors", metadata={"game": GAME})


def session(agent, mode="imagine", controller="human", **kw):
    return build_session(game=GAME, mode=mode, controller=controller, agent=agent, seed=0, **kw)


# ---- the session (no window) ---------------------------------------------------------------------

def test_modes_and_controllers_switch_without_reset(agent):
    s = session(agent, "real", "random")
    for _ in range(5):
        snap = s.step()
    assert snap.t == 5 and snap.panels[0][0] == "real" and snap.panels[0][1].shape == (64, 64, 3)
    snap = s.set_controller("agent")
    assert snap.t == 5  # no reset
    snap = s.step()
    assert snap.value is not None and 0 <= snap.entropy_bits <= 2.0 + 1e-6  # log2(4 actions)
    snap = s.set_mode("compare")  # the dream starts from the real game's current frames
    assert snap.t == 6 and [p[0] for p in snap.panels] == ["dream", "real"]
    np.testing.assert_array_equal(snap.panels[0][1], snap.panels[1][1])
    snap = s.step()
    assert snap.psnr_db is not None and snap.psnr_mean_db == snap.psnr_db and snap.latency_ms > 0
    assert len(snap.transitions) == 2
    snap = s.resync()
    np.testing.assert_array_equal(snap.panels[0][1], snap.panels[1][1])
    assert snap.since_sync == 0
    s.set_mode("imagine")
    snap = s.step(2)
    assert snap.action_name == "LEFT" or s.controller == "agent"
    s.set_controller("human")
    snap = s.step(3)
    assert snap.action_name == "LEFT" and snap.mode == "imagine"
    s.close()


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_imagine_starts_from_a_real_reset_and_respects_the_horizon(agent, precision):
    s = session(agent, "imagine", "human", horizon=3, denoising_steps=1, precision=precision)
    assert s.denoising_steps == 1 and s.snapshot().precision == precision
    snaps = [s.step(1) for _ in range(8)]
    assert all(sn.panels[0][1].dtype == np.uint8 for sn in snaps)
    assert all(sn.since_sync <= 3 for sn in snaps)
    assert any(sn.ended for sn in snaps)  # horizon 3 (or a sampled end) restarts the dream
    s.set_denoising_steps(2)
    assert s.denoising_steps == 2
    with pytest.raises(ValueError, match="out of range"):
        s.step(4)
    with pytest.raises(ValueError, match="unknown mode"):
        s.set_mode("dream")
    s.close()


def test_a_dream_starts_with_the_ball_served(agent):
    """Breakout waits for FIRE: the real steps that fill a new game's context serve, so the dream's first frames
    (the real ones) show the ball moving; a game without FIRE as action 1 only waits with NOOPs."""
    from app.player.sources import RealSource

    s = session(agent, "compare", "human")
    assert [a for _, a in s.real.history] == [0, 1, 0] and s.t == 0
    in_flight = lambda f: bool((f[30:55, 4:60] > 60).any())  # the ball between the bricks and the paddle
    frames = [f for f, _ in s.real.history] + [s.real.obs]
    assert [in_flight(f) for f in frames] == [False, False, True, True]
    snap = s.snapshot()
    assert [p[0] for p in snap.panels] == ["dream", "real"] and in_flight(snap.panels[0][1])
    np.testing.assert_array_equal(snap.panels[0][1], snap.panels[1][1])
    s.close()
    pacman = RealSource("MsPacman", seed=0, context=4)
    pacman.reset()
    assert not pacman.serves and list(pacman.context()[1]) == [0, 0, 0, 0]
    pacman.close()


def test_dreams_use_the_weights_own_denoising_steps(weights_file, tmp_path):
    """Weights that name their sampler steps ("denoising_steps" in their metadata) dream with them unless told
    otherwise; weights that do not, with the reference's 3."""
    from weights import load_agent, save_agent

    two = save_agent(load_agent(weights_file), tmp_path / "two.safetensors", metadata={"game": GAME, "denoising_steps": 2})
    for file, default in ((weights_file, 3), (two, 2)):
        for asked, steps in ((None, default), (1, 1)):
            s = build_session(game=GAME, weights=str(file), mode="imagine", seed=0, denoising_steps=asked)
            assert s.denoising_steps == steps and s.dream.wm.denoising_steps == steps
            s.close()


def test_real_mode_without_weights_has_no_agent():
    from app.player.session import Session
    from app.player.sources import RealSource

    s = Session(GAME, RealSource(GAME, seed=0), mode="real", controller="human")
    assert s.step(1).value is None
    with pytest.raises(ValueError, match="needs world-model weights"):
        s.set_mode("imagine")
    with pytest.raises(ValueError, match="agent controller needs weights"):
        s.set_controller("agent")
    s.close()


# ---- the window under the dummy driver ---------------------------------------------------------

# what a US keyboard sends: letters are read by position (scancode), so scripted events carry both
SCANCODES = {pygame.K_w: pygame.KSCAN_W, pygame.K_a: pygame.KSCAN_A, pygame.K_s: pygame.KSCAN_S,
             pygame.K_d: pygame.KSCAN_D, pygame.K_z: pygame.KSCAN_Z, pygame.K_SPACE: pygame.KSCAN_SPACE,
             pygame.K_LEFT: pygame.KSCAN_LEFT, pygame.K_RIGHT: pygame.KSCAN_RIGHT}


def key(k, down=True):
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN if down else pygame.KEYUP, key=k, mod=0, unicode="",
                                         scancode=SCANCODES.get(k, 0)))


class Script:
    """An on_frame callback posting key events in order, each after a wait counted in agent steps
    ("steps", n) or window frames ("frames", n) since the previous one, so it does not depend on speed."""

    def __init__(self, *entries):
        self.entries = list(entries)
        self.mark = None  # (frame, steps) when the previous entry fired
        self.log = []  # (frame, controller, action name, t, steps, paused, mode) every frame
        self.fired = []  # (frame, steps) when each entry fired

    def __call__(self, i, player):
        if self.mark is None:
            self.mark = (i, player.steps)
        if self.entries:
            (unit, n), events = self.entries[0]
            waited = i - self.mark[0] if unit == "frames" else player.steps - self.mark[1]
            if waited >= n:
                for k, down in events:
                    key(k, down)
                self.entries.pop(0)
                self.mark = (i, player.steps)
                self.fired.append(self.mark)
        snap = player.snapshot
        self.log.append((i, snap.controller, snap.action_name, snap.t, player.steps, player.status.paused, snap.mode))

    @property
    def done(self):
        return not self.entries


def press(k):
    return [(k, True), (k, False)]


@pytest.mark.parametrize("mode", ["imagine", "real", "compare"])
def test_window_plays_each_mode_with_scripted_keys(agent, mode, tmp_path):
    script = Script(
        (("steps", 2), [(pygame.K_RIGHT, True)]),
        (("steps", 6), [(pygame.K_RIGHT, False), (pygame.K_SPACE, True)]),
        (("steps", 3), [(pygame.K_SPACE, False), (pygame.K_a, True)]),
        (("steps", 6), [(pygame.K_a, False)]),
        (("steps", 2), press(pygame.K_TAB)),  # human -> agent, no reset
        (("steps", 6), press(pygame.K_h)),
        (("frames", 5), press(pygame.K_F1)),
        (("steps", 4), press(pygame.K_c)),  # agent -> random
        (("frames", 250), press(pygame.K_ESCAPE)),
    )
    s = session(agent, mode, "human")
    player = Player(s, WindowOptions(end_pause_s=0, fps=50, ui_hz=200, size=128, out_dir=tmp_path, max_frames=5000,
                                     on_frame=script)).run()
    assert script.done and not player.running
    assert player.frames >= 250 and player.steps >= 30
    actions = {a for _, c, a, *_ in script.log if c == "human"}
    assert {"RIGHT", "LEFT", "FIRE"} <= actions  # arrows, WASD and space all reach the game
    controllers = [c for _, c, *_ in script.log]
    assert controllers.index("agent") < controllers.index("random")
    assert not player.status.help  # shown with h, hidden with F1
    if mode == "real":  # switching controllers did not restart the game: t keeps counting across the switch
        tab = script.fired[4][0]
        ts = [row[3] for row in script.log if tab - 5 <= row[0] <= tab + 20]
        assert ts == sorted(ts) and ts[-1] > ts[0] > 0
    s.close()


def test_window_live_controls(agent, tmp_path):
    script = Script(
        (("steps", 2), press(pygame.K_p)),  # pause
        (("frames", 60), press(pygame.K_n)),  # single step while paused (after the step in flight)
        (("frames", 60), press(pygame.K_p)),  # resume
        (("steps", 3), press(pygame.K_m)),  # imagine -> real
        (("steps", 3), press(pygame.K_m)),  # real -> compare
        (("steps", 3), press(pygame.K_y)),  # re-sync
        (("steps", 1), press(pygame.K_LEFTBRACKET) * 2 + press(pygame.K_RIGHTBRACKET)),
        (("frames", 2), press(pygame.K_EQUALS)),
        (("frames", 5), press(pygame.K_x)),  # screenshot
        (("frames", 5), press(pygame.K_v)),  # start recording
        (("steps", 4), press(pygame.K_m)),  # compare -> imagine: the window shrinks while recording
        (("steps", 4), press(pygame.K_v)),  # stop
        (("frames", 2), press(pygame.K_r)),  # reset
        (("steps", 2), press(pygame.K_o)),  # full-resolution real frame
        (("steps", 2), press(pygame.K_ESCAPE)),
    )
    s = session(agent, "imagine", "random", horizon=0)
    player = Player(s, WindowOptions(end_pause_s=0, fps=100, ui_hz=200, size=128, out_dir=tmp_path, max_frames=5000,
                                     on_frame=script)).run()
    assert script.done
    assert script.fired[2][1] - script.fired[1][1] == 1  # exactly one step while paused ('n')
    modes = [row[6] for row in script.log]
    assert modes.index("real") < modes.index("compare")
    assert s.horizon == 500 and s.denoising_steps == 4  # unlimited -> 500 -> 200 -> 500; 3 -> 4
    assert len(player.screenshots) == 1 and player.screenshots[0].stat().st_size > 1000
    shot = pygame.image.load(str(player.screenshots[0]))
    assert shot.get_size() == player.hud.window_size(2)
    assert len(player.videos) == 1
    frames = imageio.mimread(player.videos[0], memtest=False)
    assert len(frames) >= 8 and len({f.shape for f in frames}) == 1
    assert list(tmp_path.glob("*-episodes/*/*.npz"))  # episodes in the episode store format
    s.close()


def test_game_picker_switches_games_in_place(agent, tmp_path, monkeypatch):
    """g opens the picker (the game waits), Right then Enter picks Pong: no weights here (an empty Hugging Face
    cache), so the real Pong plays, with Pong's keys; then Breakout comes back with its shipped weights."""
    from app.player.launch import game_switcher
    from training.games import GAME_NAMES

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    seen = {}

    script = Script(
        (("steps", 3), press(pygame.K_g)),
        (("frames", 30), press(pygame.K_RIGHT)),  # 13 games a column: Breakout (7) -> Pong (20)
        (("frames", 2), press(pygame.K_RETURN)),
        (("steps", 4), press(pygame.K_g)),
        (("frames", 2), press(pygame.K_LEFT) + press(pygame.K_RETURN)),  # Pong -> Breakout
        (("steps", 3), press(pygame.K_ESCAPE)),
    )

    def on_frame(i, player):
        script(i, player)
        if len(script.fired) == 1 and player.picker is not None and "picker" not in seen:
            seen["picker"] = (dict(player.picker.status), player.status.paused, player.steps)
        if len(script.fired) == 2 and "waited" not in seen:
            seen["waited"] = player.steps  # 30 frames later: the game did not move on
        if len(script.fired) == 4 and "pong" not in seen:
            seen["pong"] = (player.session.game, player.snapshot.mode, player.keymap.summary(),
                            player.session.dream is None)

    s = session(agent, "imagine", "random")
    switch = game_switcher(device="cpu", precision="float32", denoising_steps=1)
    player = Player(s, WindowOptions(end_pause_s=0, fps=50, ui_hz=200, size=128, max_frames=5000, on_frame=on_frame,
                                     switch_game=switch)).run()
    assert script.done
    status, paused, steps = seen["picker"]
    assert status["Breakout"] == "shipped" and status["Pong"] == "real game only" and len(status) == len(GAME_NAMES)
    assert paused and seen["waited"] <= steps + 1
    assert seen["pong"] == ("Pong", "real", "Up/W Down/S move, Space fire", True)
    assert player.session.game == "Breakout" and player.session.dream is not None  # its shipped weights
    snap = player.snapshot  # back in the mode and with the controller chosen before Pong
    assert (snap.game, snap.mode, snap.controller) == ("Breakout", "imagine", "random") and snap.t >= 3
    s.close()


def test_human_tap_between_steps_is_not_lost(agent):
    s = session(agent, "real", "human")
    taps = []

    def on_frame(i, player):
        if i == 2:
            player.status.paused = True
        if i == 5:
            key(pygame.K_SPACE)
            key(pygame.K_SPACE, down=False)  # released before the next step
        if i == 8:
            player.status.paused = False
        taps.append(player.snapshot.action_name)

    Player(s, WindowOptions(end_pause_s=0, fps=30, ui_hz=200, size=64, max_frames=30, on_frame=on_frame)).run()
    assert "FIRE" in taps
    s.close()


# ---- headless and the command line -------------------------------------------------------------

def test_headless_records_an_mp4_with_one_frame_per_step(weights_file, tmp_path, capsys):
    out = tmp_path / "run.mp4"
    rc = main(["play", "--game", GAME, "--weights", str(weights_file), "--headless", "--steps", "12",
               "--record", str(out), "--seed", "0", "--denoising-steps", "1"])
    assert rc == 0
    frames = imageio.mimread(out, memtest=False)
    assert len(frames) == 12
    assert frames[0].shape[0] > 64 and frames[0].std() > 5  # the HUD and the frame are drawn
    from app.player.hud import BG, FOOTER_H

    # no "h: help  Esc: quit" footer: nobody can press keys in a recording (the right of the footer is empty)
    footer = frames[-1][-FOOTER_H:, frames[-1].shape[1] // 2:, :3].astype(int)
    assert np.abs(footer - np.array(BG)).max() < 40
    assert "12 steps" in capsys.readouterr().out
    stored = list((tmp_path / "run-episodes").rglob("*.npz"))
    assert stored
    from training.episode_store import EpisodeStore
    store = EpisodeStore(tmp_path / "run-episodes", static=True)
    assert store.num_steps == 12 and store[0].obs.shape[1:] == (3, 64, 64)


def test_recording_killed_mid_way_still_plays(weights_file, tmp_path):
    """kill -9 of the player and its encoder: the mp4 keeps every fragment written before the kill."""
    import signal
    import time

    out = tmp_path / "killed.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "app", "play", "--game", GAME, "--weights", str(weights_file),
                             "--mode", "real", "--controller", "random", "--headless", "--steps", "1000000",
                             "--record", str(out), "--fps", "60"], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not out.exists() or out.stat().st_size < 50_000):
            time.sleep(0.2)
        assert out.exists() and out.stat().st_size >= 50_000, "the recording did not grow"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the player and its ffmpeg child, no chance to finish the file
        proc.wait()
    frames = imageio.mimread(out, memtest=False)
    assert len(frames) >= 30 and frames[-1].std() > 5


def test_headless_random_real_mode(weights_file, capsys):
    rc = main(["play", "--game", GAME, "--weights", str(weights_file), "--mode", "real", "--headless",
               "--steps", "30", "--controller", "random"])
    assert rc == 0 and "30 steps" in capsys.readouterr().out
    rc = main(["play", "--game", GAME, "--weights", str(weights_file), "--mode", "compare", "--headless",
               "--steps", "5", "--denoising-steps", "1"])
    assert rc == 0 and "PSNR" in capsys.readouterr().out


def test_real_mode_headless_without_weights_plays_random(tmp_path):
    """Pong ships no weights and, offline with an empty cache, DIAMOND's cannot be fetched: the real game is
    still played (by the random controller), and asking for the agent says how to play without one."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "app", "play", "--game", "Pong", "--mode", "real", "--headless", "--steps", "5"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Pong (real, random): 5 steps" in proc.stdout and "the random controller plays" in proc.stderr
    proc = subprocess.run(argv + ["--controller", "agent"], env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.rstrip().endswith("--controller random"), proc.stderr


def test_weights_for_another_game_are_refused_before_any_window(tmp_path, capsys):
    from weights import save_agent

    pong_weights = save_agent(Agent(tiny(6)), tmp_path / "pong.safetensors", metadata={"game": "Pong"})
    rc = main(["play", "--game", GAME, "--weights", str(pong_weights)])
    err = capsys.readouterr().err
    assert rc == 2 and "trained on Pong, not Breakout" in err
    no_game = save_agent(Agent(tiny(18)), tmp_path / "eighteen.safetensors")
    rc = main(["play", "--game", GAME, "--weights", str(no_game)])
    err = capsys.readouterr().err
    assert rc == 2 and "18 actions but Breakout has 4" in err
    assert not pygame.display.get_init()


@pytest.mark.parametrize("argv,message", [
    (["--headless"], "--headless needs --steps"),
    (["--headless", "--steps", "3", "--controller", "human"], "no keyboard"),
    (["--fps", "0"], "--fps must be positive"),
    (["--record", "x.avi"], ".mp4"),
    (["--game", "Breakot"], "did you mean Breakout"),
])
def test_bad_arguments_give_one_line(argv, message, capsys):
    assert main(["play", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("display", [None, ":77"])  # unset, or naming an X server that is not there
def test_no_display_suggests_headless(weights_file, tmp_path, display):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER", "XDG_RUNTIME_DIR")}
    if display:
        env["DISPLAY"] = display
    proc = subprocess.run([sys.executable, "-m", "app", "play", "--game", GAME, "--weights", str(weights_file)],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    # our one line only: not SDL's "XDG_RUNTIME_DIR is invalid or not set" before it
    assert proc.stderr.startswith("dreamarcade play: error: no display") and proc.stderr.count("\n") == 1, proc.stderr
    assert "--headless" in proc.stderr


def test_replay_browses_recorded_episodes(weights_file, tmp_path):
    out = tmp_path / "rec.mp4"
    assert main(["play", "--game", GAME, "--weights", str(weights_file), "--mode", "real", "--headless",
                 "--steps", "20", "--controller", "random", "--record", str(out)]) == 0
    from app.player.replay import run_replay

    script = {2: [pygame.K_RIGHT] * 5, 4: [pygame.K_PAGEUP], 6: [pygame.K_END], 8: [pygame.K_HOME],
              10: [pygame.K_UP], 12: [pygame.K_h]}
    positions, shown = {}, {}

    def on_frame(i, replay):
        for k in script.get(i, ()):
            key(k)
            key(k, down=False)
        positions[i] = (replay.episode, replay.t)
        shown[i] = (dict(replay.lines())["Action"], replay.help)

    # no --game: the recording says which game it is, so actions have their names
    replay = run_replay(tmp_path / "rec-episodes" / "real", size=128, max_frames=14, on_frame=on_frame)
    assert positions[3] == (0, 5) and positions[5] == (0, 15)
    assert positions[7] == (0, 20)  # the frame after the last step
    assert positions[9] == (0, 0)
    action = shown[9][0]
    assert action.split(" (")[0] in ("NOOP", "FIRE", "RIGHT", "LEFT") and action.endswith(")"), action
    assert shown[11][1] is False and shown[13][1] is True  # h shows the help


def test_window_holds_the_target_rate(agent):
    # the real emulator is much faster than 20 steps/s: the loop must pace it, not race
    s = session(agent, "real", "random")
    rates = []

    def on_frame(i, player):
        if player.steps >= 20:
            rates.append(player.status.fps_reached)

    import time
    t0 = time.monotonic()
    player = Player(s, WindowOptions(end_pause_s=0, fps=20, size=64, max_steps=60, on_frame=on_frame)).run()
    elapsed = time.monotonic() - t0
    assert player.steps == 60
    assert 0.7 * 20 <= 60 / elapsed <= 1.15 * 20
    assert 0.7 * 20 <= rates[-1] <= 1.2 * 20  # and the HUD shows the rate reached
    s.close()


def test_the_toy_game_catch_plays_too():
    s = build_session(game="catch", mode="imagine", controller="human", agent=Agent(tiny(3)).eval(), seed=0)
    assert s.game == "Catch" and s.meanings == ("NOOP", "LEFT", "RIGHT")
    assert s.step(2).action_name == "RIGHT"
    s.set_mode("compare")
    assert len(s.step(1).panels) == 2
    s.close()
