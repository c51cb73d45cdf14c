"""The window: reads keys and gamepad every frame, paces agent steps, draws the HUD, records.

Model steps run in a `SessionWorker` thread; this loop never waits for one. It submits the next
step when the previous one is done and the step period (1 / fps) has passed, so the game runs at
the target rate when the model keeps up, and as fast as the model allows when it does not (the
rate reached is on screen).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pygame

from app.player.display import display_room, init_display, keep_on_screen, open_display, sdl_window
from app.player.hud import Hud, Status, fit_panel
from app.player.keymap import Keymap, buttons_from_gamepad, buttons_from_keys
from app.player.picker import COLUMN_W as PICKER_COLUMN_W
from app.player.picker import GamePicker
from app.player.recorder import EpisodeRecorder, VideoRecorder, surface_to_array, timestamp
from app.player.session import CONTROLLERS, MODES, Session, Snapshot
from app.player.worker import SessionWorker
from weights.errors import UserError

HORIZONS = (5, 10, 15, 25, 50, 100, 200, 500, 0)  # 0: unlimited, after the largest
MESSAGE_SECONDS = 2.5
HUD_REFRESH_S = 0.5
MAX_DENOISING_STEPS = 50


@dataclass
class WindowOptions:
    fps: float = 15.0
    size: int = 512
    out_dir: Path = Path("dreamarcade-recordings")
    record: Path | None = None  # start recording to this mp4 at once
    max_steps: int | None = None  # stop after this many agent steps (tests, demos)
    max_frames: int | None = None  # stop after this many window frames (tests)
    on_frame: Callable[[int, "Player"], None] | None = None  # called each frame before reading events (tests)
    ui_hz: float = 60.0
    end_pause_s: float = 0.75  # the last frame of an episode stays this long before the next game starts
    # the game picker (g): (game, mode, controller) -> a new Session for that game; None: no picker
    switch_game: Callable[[str, str, str], Session] | None = None


@dataclass
class Player:
    session: Session
    options: WindowOptions = field(default_factory=WindowOptions)

    def __post_init__(self) -> None:
        self.options.out_dir = Path(self.options.out_dir)
        self.keymap = Keymap.for_game(self.session.game, self.session.meanings)
        self.hud = Hud(self.options.size, self.keymap)
        self.status = Status(fps_target=self.options.fps)
        self.held_keys: set[int] = set()
        self.held_scancodes: set[int] = set()
        self.latched: set[str] = set()  # buttons pressed since the last step, so a quick tap is not lost
        self.joysticks: dict[int, pygame.joystick.JoystickType] = {}
        self.running = True
        self.steps = 0
        self.frames = 0
        self.snapshot: Snapshot = self.session.snapshot()
        self.video: VideoRecorder | None = None
        self.episodes: EpisodeRecorder | None = None
        self.screenshots: list[Path] = []
        self.videos: list[Path] = []
        self._step_times: deque[float] = deque(maxlen=32)
        self._message_until = 0.0
        self._recording_since: float | None = None
        self._paused_before_help = False
        self.picker: GamePicker | None = None
        # the mode and controller last chosen with the keys: a game picked later starts with them where it can
        self.chosen = {"mode": self.session.mode, "controller": self.session.controller}
        self._next_step = 0.0
        self._screen: pygame.Surface | None = None
        self._room: tuple[int, int] | None = None  # what the desktop leaves for the window
        self._window = None  # the SDL window object, kept alive with the window (see sdl_window)
        self._worker: SessionWorker | None = None
        # settings as the keys left them (the session applies them in its thread, maybe a step later)
        self.want = {"mode": self.session.mode, "controller": self.session.controller,
                     "horizon": self.session.horizon, "denoising_steps": self.session.denoising_steps or 1}

    # ---- input ----------------------------------------------------------------------------
    def human_action(self) -> int:
        held = buttons_from_keys(self.held_keys, self.held_scancodes) | self.latched
        for js in self.joysticks.values():
            held |= buttons_from_gamepad(js)
        return self.keymap.action(held)

    def _key_down(self, key: int, scancode: int = 0) -> None:
        if self.picker is not None:  # the picker has the keys while it is open
            chosen = self.picker.handle_key(key)
            if chosen is not True:
                self.picker = None
                self.status.paused = self._paused_before_help
                if chosen:
                    self.switch_game(chosen)
            return
        self.held_keys.add(key)
        self.held_scancodes.add(scancode)
        self.latched |= buttons_from_keys({key}, {scancode})
        submit = self._worker.submit
        if key == pygame.K_ESCAPE:
            self.running = False
        elif key in (pygame.K_h, pygame.K_F1):  # the game waits while the help is read
            self.status.help = not self.status.help
            if self.status.help:
                self._paused_before_help, self.status.paused = self.status.paused, True
            else:
                self.status.paused = self._paused_before_help
        elif key == pygame.K_g:
            if self.options.switch_game is None:
                self.flash("no game picker here")
                return
            self.status.help = False
            columns = max(1, (self._screen.get_width() - 16) // PICKER_COLUMN_W)
            self.picker = GamePicker.open(self.session.game, columns)
            self._paused_before_help, self.status.paused = self.status.paused, True  # the game waits
        elif key == pygame.K_p:
            self.status.paused = not self.status.paused
            self.flash("paused" if self.status.paused else "resumed")
        elif key == pygame.K_n:
            if not self.status.paused:
                self.status.paused = True
            if not self._worker.busy:
                self._submit_step()
        elif key in (pygame.K_r, pygame.K_RETURN):
            submit("reset")
        elif key == pygame.K_m:
            modes = [m for m in MODES if m == "real" or self.session.dream is not None]
            self.want["mode"] = modes[(modes.index(self.want["mode"]) + 1) % len(modes)]
            submit("set_mode", self.want["mode"])
            self.chosen["mode"] = self.want["mode"]
        elif key in (pygame.K_TAB, pygame.K_c):
            ctrls = [c for c in CONTROLLERS if c != "agent" or self.session.policy is not None]
            self.want["controller"] = ctrls[(ctrls.index(self.want["controller"]) + 1) % len(ctrls)]
            submit("set_controller", self.want["controller"])
            self.chosen["controller"] = self.want["controller"]
        elif key == pygame.K_y:
            submit("resync")
        elif key in (pygame.K_LEFTBRACKET, pygame.K_RIGHTBRACKET):
            h = self.want["horizon"]
            i = HORIZONS.index(h) if h in HORIZONS else min(j for j, x in enumerate(HORIZONS) if x == 0 or x >= h)
            i = min(max(i + (1 if key == pygame.K_RIGHTBRACKET else -1), 0), len(HORIZONS) - 1)
            self.want["horizon"] = HORIZONS[i]
            submit("set_horizon", HORIZONS[i])
        elif key in (pygame.K_MINUS, pygame.K_KP_MINUS, pygame.K_EQUALS, pygame.K_PLUS, pygame.K_KP_PLUS):
            if self.session.dream is not None:
                delta = -1 if key in (pygame.K_MINUS, pygame.K_KP_MINUS) else 1
                self.want["denoising_steps"] = min(max(1, self.want["denoising_steps"] + delta), MAX_DENOISING_STEPS)
                submit("set_denoising_steps", self.want["denoising_steps"])
        elif key in (pygame.K_F12, pygame.K_x):
            self.screenshot()
        elif key == pygame.K_v:
            self.stop_recording() if self.video is not None else self.start_recording()
        elif key == pygame.K_o:
            self.status.original = not self.status.original

    def _handle(self, event: pygame.event.Event) -> None:
        if event.type == pygame.QUIT:
            self.running = False
        elif event.type == pygame.KEYDOWN:
            self._key_down(event.key, getattr(event, "scancode", 0))
        elif event.type == pygame.KEYUP:
            self.held_keys.discard(event.key)
            self.held_scancodes.discard(getattr(event, "scancode", 0))
        elif event.type == pygame.WINDOWFOCUSLOST:
            self.held_keys.clear()  # a key released in another window never sends KEYUP here
            self.held_scancodes.clear()
        elif event.type == pygame.JOYDEVICEADDED:
            js = pygame.joystick.Joystick(event.device_index)
            self.joysticks[js.get_instance_id()] = js
            self.flash(f"gamepad connected: {js.get_name()}")
        elif event.type == pygame.JOYDEVICEREMOVED:
            self.joysticks.pop(event.instance_id, None)

    # ---- actions --------------------------------------------------------------------------
    def flash(self, message: str) -> None:
        self.status.message = message
        self._message_until = time.monotonic() + MESSAGE_SECONDS

    def _submit_step(self) -> None:
        self._worker.submit("step", self.human_action())
        self.latched.clear()

    def switch_game(self, game: str) -> None:
        """Plays `game` in place of the current one: its weights if it has some here, else the real game.
        The current game goes on if the new one cannot be loaded (the reason is shown)."""
        if game == self.session.game:
            return
        self.flash(f"loading {game} ...")
        self._draw()
        pygame.display.flip()
        self._worker.close()  # the step under way finishes first
        self._take(self._worker.results())
        self.stop_recording()  # a recording holds one game
        try:
            session = self.options.switch_game(game, self.chosen["mode"], self.chosen["controller"])
        except (ValueError, FileNotFoundError, ConnectionError) as e:
            self._worker = SessionWorker(self.session)
            self.flash(f"{game}: {e}")
            return
        self.session.close()
        self.session = session
        self.keymap = Keymap.for_game(session.game, session.meanings)
        self.hud.keymap = self.keymap
        self.latched.clear()
        self.want = {"mode": session.mode, "controller": session.controller, "horizon": session.horizon,
                     "denoising_steps": session.denoising_steps or 1}
        self.snapshot = session.snapshot()
        self._worker = SessionWorker(session)
        pygame.display.set_caption(f"dreamarcade: {session.game}")
        self.flash(f"{session.game}: {session.mode} mode" + ("" if session.dream else ", no weights here"))

    def screenshot(self) -> Path:
        path = self.options.out_dir / f"screenshot-{self.session.game}-{timestamp()}-{len(self.screenshots)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pygame.image.save(self._screen, str(path))
        self.screenshots.append(path)
        self.flash(f"screenshot saved: {path}")
        return path

    def start_recording(self, path: Path | None = None) -> None:
        stem = f"{self.session.game}-{timestamp()}"
        path = path or self.options.out_dir / f"{stem}.mp4"
        self.video = VideoRecorder(path, self.options.fps)
        self.episodes = EpisodeRecorder(path.with_suffix("").with_name(path.stem + "-episodes"), self.session.game,
                                        self.session.meanings)
        self._recording_since = time.monotonic()
        self.flash(f"recording to {path}")

    def stop_recording(self) -> None:
        if self.video is None:
            return
        path = self.video.close()
        saved = self.episodes.close()
        self.videos.append(path)
        self.video = self.episodes = None
        self._recording_since = None
        self.flash(f"saved {path} and {len(saved)} episode(s)")

    # ---- loop -----------------------------------------------------------------------------
    def _take(self, snaps: list[Snapshot]) -> bool:
        for snap in snaps:
            if snap.transitions:
                self.steps += 1
                self._step_times.append(time.monotonic())
            if snap.message:
                self.flash(snap.message)
            if snap.ended:  # let the player see how it ended
                self._next_step = max(self._next_step, time.monotonic() + self.options.end_pause_s)
            if self.episodes is not None:
                self.episodes.add(snap)
            self.snapshot = snap
            if snap.transitions and self.video is not None:
                self._draw()
                self.video.write(surface_to_array(self._screen))
        return bool(snaps)

    def _fps(self) -> float:
        t = self._step_times
        if len(t) < 2 or time.monotonic() - t[-1] > 1.0:
            return 0.0
        return (len(t) - 1) / (t[-1] - t[0])

    def _draw(self) -> None:
        panels = len(self.snapshot.panels) if not self.status.original else 1
        self.hud.size = fit_panel(self.options.size, panels, self._room)
        size = self.hud.window_size(panels)
        if self._screen.get_size() != size:
            self._screen = pygame.display.set_mode(size)
            self._window = sdl_window()  # set_mode may have made a new SDL window
            keep_on_screen(self._window, size)
        self.status.fps_reached = self._fps()
        self.status.recording_s = None if self._recording_since is None else time.monotonic() - self._recording_since
        self.status.busy = self._worker.busy
        if self.status.message and time.monotonic() > self._message_until:
            self.status.message = ""
        self.hud.draw(self._screen, self.snapshot, self.status)
        if self.picker is not None:
            self.picker.draw(self._screen, self.hud)

    def run(self) -> "Player":
        """Opens the window and plays until Esc, the window is closed, or a max_steps/max_frames limit."""
        opts = self.options
        init_display()
        self._room = display_room()
        self.hud.size = fit_panel(opts.size, len(self.snapshot.panels), self._room)
        self._screen = open_display(self.hud.window_size(len(self.snapshot.panels)))
        self._window = sdl_window()
        pygame.display.set_caption(f"dreamarcade: {self.session.game}")
        pygame.joystick.init()
        pygame.key.set_repeat()  # held keys are tracked, not repeated
        self._worker = SessionWorker(self.session)
        first_session = self.session
        period, frame_period = 1.0 / opts.fps, 1.0 / max(opts.ui_hz, 2 * opts.fps)
        redraw_at = 0.0
        self._next_step = time.monotonic()
        try:
            if opts.record is not None:
                self.start_recording(opts.record)
            while self.running:
                frame_start = time.monotonic()
                if opts.on_frame is not None:
                    opts.on_frame(self.frames, self)
                events = pygame.event.get()
                for event in events:
                    self._handle(event)
                changed = self._take(self._worker.results()) or bool(events)
                now = time.monotonic()
                if not self.status.paused and not self._worker.busy and now >= self._next_step:
                    self._submit_step()
                    # hold the rate; after a slow step do not rush to catch up
                    self._next_step = max(self._next_step + period, now)
                # Redraw only when something changed (and twice a second for the rates): the CPU is the model's.
                if changed or now >= redraw_at:
                    self._draw()
                    pygame.display.flip()
                    redraw_at = now + HUD_REFRESH_S
                self.frames += 1
                if (opts.max_steps is not None and self.steps >= opts.max_steps) or (
                        opts.max_frames is not None and self.frames >= opts.max_frames):
                    self.running = False
                # Sleep until the next frame, the next step's time, or the model's result, whichever
                # comes first: a finished step is shown, and the next one started, without waiting a frame.
                wake = frame_start + frame_period
                if not self.status.paused and not self._worker.busy:
                    wake = min(wake, self._next_step)
                self._worker.wait(wake - time.monotonic())
        finally:
            self._worker.close()
            self._take(self._worker.results())
            self.stop_recording()
            pygame.display.quit()
            self._window = None
            if self.session is not first_session:  # one the picker opened: the caller closes only its own
                self.session.close()
        return self

    @property
    def window_position(self) -> tuple[int, int] | None:
        """Where the window is on the desktop (None where the driver does not say)."""
        return None if self._window is None else tuple(self._window.position)
