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
    from pygame._sdl2.video import Window
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
        x, y = Window.from_display_module().position
        w, h = screen.get_size()
        wm = {k: str(v) for k, v in pygame.display.get_wm_info().items()}
        info = {"driver": pygame.display.get_driver(), "wm": wm,
                "x": x, "y": y, "w": w, "h": h, "steps": player.steps}
        json.dump(info, open(out + "/info.json", "w"))
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "x11grab", "-draw_mouse", "0",
                        "-video_size", "1024x768", "-i", sys.argv[2], "-frames:v", "1", out + "/x11.png"], check=True)
        player.running = False

    Player(session, WindowOptions(fps=30, size=256, on_frame=on_frame, max_frames=20000)).run()
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


def test_real_window_shows_frame_and_hud(xvfb_display, tmp_path):
    import imageio.v2 as imageio
    import json

    env = {**os.environ, "DISPLAY": xvfb_display, "SDL_VIDEODRIVER": "x11", "PYGAME_HIDE_SUPPORT_PROMPT": "1"}
    proc = subprocess.run([sys.executable, "-c", PLAYER_SCRIPT, str(tmp_path), xvfb_display], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "info.json").read_text())
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
