"""A real window under Xvfb: the X server itself is asked for a screenshot (ffmpeg's x11grab, shipped
with imageio-ffmpeg) and it must show the game frame and the HUD exactly as the player drew them.
Skipped where Xvfb is not installed (CI installs it)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

XVFB = shutil.which("Xvfb")
pytestmark = pytest.mark.skipif(XVFB is None, reason="Xvfb is not installed (apt-get install xvfb)")

PLAYER_SCRIPT = textwrap.dedent("""
    import json, subprocess, sys
    import numpy as np, pygame, torch
    import imageio_ffmpeg
    from model import Agent
    from model.presets import tiny
    from app.player.launch import build_session
    from app.player.player import Player, WindowOptions
    from app.player.recorder import surface_to_array

    out = sys.argv[1]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    session = build_session(game="Breakout", mode="compare", controller="agent", agent=Agent(tiny(4)).eval(), seed=0)

    def on_frame(i, player):
        if player.steps < 12 or not player.running:
            return
        player.status.paused = True  # nothing changes while the X server is asked for its picture
        pygame.display.flip()
        screen = pygame.display.get_surface()
        np.save(out + "/drawn.npy", surface_to_array(screen))
        x, y = player.window_position
        w, h = screen.get_size()
        wm = {k: str(v) for k, v in pygame.display.get_wm_info().items()}
        info = {"driver": pygame.display.get_driver(), "wm": wm,
                "x": x, "y": y, "w": w, "h": h, "steps": player.steps}
        json.dump(info, open(out + "/info.json", "w"))
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "x11grab", "-draw_mouse", "0",
                        "-video_size", "1024x768", "-i", sys.argv[2], "-frames:v", "1", out + "/x11.png"], check=True)
        player.running = False

    player = Player(session, WindowOptions(fps=30, size=256, on_frame=on_frame, max_frames=20000))
    player.run()
""")


@pytest.fixture
def xvfb_display():
    read, write = os.pipe()
    proc = subprocess.Popen([XVFB, "-displayfd", str(write), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    if not number:
        proc.kill()
        pytest.skip("Xvfb did not start")
    yield f":{number}"
    proc.terminate()
    proc.wait(10)


def run_in_window(script: str, display: str, out) -> dict:
    """Runs a player script on the X server `display` (a real x11 window) -> the info.json it wrote into out."""
    import json

    env = {**os.environ, "DISPLAY": display, "SDL_VIDEODRIVER": "x11", "PYGAME_HIDE_SUPPORT_PROMPT": "1"}
    proc = subprocess.run([sys.executable, "-c", script, str(out), display], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "info.json").read_text())


def test_real_window_shows_frame_and_hud(xvfb_display, tmp_path):
    import imageio.v2 as imageio

    info = run_in_window(PLAYER_SCRIPT, xvfb_display, tmp_path)
    assert info["driver"] == "x11" and int(info["wm"]["window"]) > 0  # a real X11 window
    drawn = np.load(tmp_path / "drawn.npy")
    screen = imageio.imread(tmp_path / "x11.png")[..., :3]
    x, y, w, h = info["x"], info["y"], info["w"], info["h"]
    shown = screen[y:y + h, x:x + w]
    assert shown.shape == drawn.shape
    # what the X server displays is what the player drew
    assert np.abs(shown.astype(int) - drawn.astype(int)).mean() < 0.5
    from app.player.hud import BG, GAP, HEADER_H

    # the two panels, centred: the imagined frame on the left, the real game frame on the right
    x0 = (w - (2 * 256 + GAP)) // 2
    dream = shown[HEADER_H + 20:HEADER_H + 256, x0:x0 + 256]
    real = shown[HEADER_H + 20:HEADER_H + 256, x0 + 256 + GAP:x0 + 512 + GAP]
    assert len(np.unique(real.reshape(-1, 3), axis=0)) >= 4  # Breakout's bricks, walls, score
    assert (real != np.array(BG)).any(axis=-1).mean() > 0.9
    assert dream.std() > 1
    # the HUD: light text pixels in the header
    header = shown[:HEADER_H]
    assert (header.astype(int).sum(-1) > 500).mean() > 0.01
    imageio.imwrite(tmp_path / "window.png", shown)  # kept for a look when the test fails


NEWCOMER_SCRIPT = textwrap.dedent("""
    import json, subprocess, sys
    import numpy as np, pygame, torch
    import imageio_ffmpeg
    from model import Agent
    from model.presets import tiny
    from app.player.hud import BG, RED, DIM, ACCENT
    from app.player.launch import build_session
    from app.player.player import Player, WindowOptions
    from app.player.recorder import surface_to_array

    out, display = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    session = build_session(game="Pong", mode="imagine", controller="random", agent=Agent(tiny(6)).eval(), seed=0)
    info, state = {}, {"phase": 0, "mark": 0}

    def press(key):
        for kind in (pygame.KEYDOWN, pygame.KEYUP):
            pygame.event.post(pygame.event.Event(kind, key=key, mod=0, unicode="", scancode=0))

    def template(text, font, color, shade=False):
        # the text as the HUD draws it, on the background it sits on (the help overlay shades it)
        surf = player.hud._text(text, color, font)
        canvas = pygame.Surface(surf.get_size())
        canvas.fill(BG)
        if shade:
            veil = pygame.Surface(surf.get_size(), pygame.SRCALPHA)
            veil.fill((8, 9, 12, 238))
            canvas.blit(veil, (0, 0))
        canvas.blit(surf, (0, 0))
        return surface_to_array(canvas)

    def capture(name, **expected):
        paused = player.status.paused
        player.status.paused = True
        player._draw()
        pygame.display.flip()
        screen = pygame.display.get_surface()
        x, y = player.window_position
        w, h = screen.get_size()
        info[name] = {"x": x, "y": y, "w": w, "h": h, "steps": player.steps, "panel": player.hud.size, "paused": paused,
                      "mode": player.snapshot.mode, "rec_s": player.status.recording_s}
        np.save(f"{out}/{name}-drawn.npy", surface_to_array(screen))
        for key, (text, font, color, shade) in expected.items():
            np.save(f"{out}/{name}-{key}.npy", template(text, getattr(player.hud, font), color, shade))
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "x11grab",
                        "-draw_mouse", "0", "-video_size", "1024x768", "-i", display, "-frames:v", "1",
                        f"{out}/{name}.png"], check=True)
        player.status.paused = paused

    def on_frame(i, p):
        phase, steps = state["phase"], p.steps
        if phase == 0 and steps >= 3:
            press(pygame.K_v)  # record
        elif phase == 1 and steps >= 8:
            p._message_until = 0  # the "recording to ..." message gone, the footer shows the keys
            capture("rec", footer=("Up/W Down/S move, Space fire   h: help   g: game   Esc: quit", "small", DIM, False))
            secs = int(info["rec"]["rec_s"])
            np.save(f"{out}/rec-label.npy", template(f"REC {secs // 60}:{secs % 60:02d}", p.hud.big, RED))
            press(pygame.K_h)  # help
        elif phase == 2 and i >= state["mark"] + 90:  # 90 frames (1.5 s) with the help shown
            capture("help", title=("Controls (the game is paused; h or F1 goes back to it)", "big", ACCENT, True))
            press(pygame.K_h)
        elif phase == 3:
            press(pygame.K_m)  # real
            press(pygame.K_m)  # compare: the window widens
        elif phase == 4 and p.snapshot.mode == "compare" and steps >= state["steps"] + 3:
            capture("compare")
            p.running = False
        else:
            return
        state["phase"], state["mark"], state["steps"] = phase + 1, i, steps

    player = Player(session, WindowOptions(fps=30, size=512, on_frame=on_frame, max_frames=30000,
                                           out_dir=out + "/recordings"))
    player.run()
    json.dump(info, open(out + "/info.json", "w"))
""")


def _find(image, template) -> bool:
    """Whether `template` appears (to within a few levels per pixel) somewhere in `image`."""
    import cv2

    if image.shape[0] < template.shape[0] or image.shape[1] < template.shape[1]:
        return False
    diff = cv2.matchTemplate(image.astype(np.float32), template.astype(np.float32), cv2.TM_SQDIFF)
    return float(diff.min()) / template.size < 25  # RMS under 5 levels: the game shows faintly through the help


def test_a_newcomer_sees_pong_keys_rec_help_and_a_compare_window_that_fits(xvfb_display, tmp_path):
    import imageio.v2 as imageio

    info = run_in_window(NEWCOMER_SCRIPT, xvfb_display, tmp_path)
    from app.player.hud import BG, FOOTER_H, GAP, HEADER_H, RED

    def shown(name):
        i = info[name]
        screen = imageio.imread(tmp_path / f"{name}.png")[..., :3]
        window = screen[max(i["y"], 0):i["y"] + i["h"], max(i["x"], 0):i["x"] + i["w"]]
        imageio.imwrite(tmp_path / f"{name}-window.png", window)  # kept for a look when the test fails
        return window

    # recording: a red REC with the time recorded in the header, and Pong's own keys in the footer
    rec = shown("rec")
    assert rec.shape == np.load(tmp_path / "rec-drawn.npy").shape
    assert _find(rec[:HEADER_H], np.load(tmp_path / "rec-label.npy"))
    assert ((rec[:HEADER_H] == RED).all(-1)).sum() > 100  # the label and the red dot
    assert _find(rec[-FOOTER_H:], np.load(tmp_path / "rec-footer.npy"))
    # help: shown over the game, which waits meanwhile (1.5 s; a step already under way when h was pressed ends)
    assert _find(shown("help"), np.load(tmp_path / "help-title.npy"))
    assert info["help"]["paused"] and info["help"]["steps"] <= info["rec"]["steps"] + 1
    # compare mode: two 448-pixel panels instead of 512 (2 x 512 would not fit a 1024-pixel screen), all on screen
    c = info["compare"]
    assert c["mode"] == "compare" and c["panel"] == 448
    assert c["x"] >= 0 and c["y"] >= 0 and c["x"] + c["w"] <= 1024 and c["y"] + c["h"] <= 768
    window = shown("compare")
    drawn = np.load(tmp_path / "compare-drawn.npy")
    assert window.shape == drawn.shape and np.abs(window.astype(int) - drawn.astype(int)).mean() < 0.5
    x0 = (c["w"] - (2 * 448 + GAP)) // 2
    real = window[HEADER_H:HEADER_H + 448, x0 + 448 + GAP:x0 + 2 * 448 + GAP]
    assert (real != np.array(BG)).any(axis=-1).mean() > 0.9  # the real Pong frame, whole
