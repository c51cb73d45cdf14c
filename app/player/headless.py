"""Playing with no window: the agent (or a random policy) for N steps, optionally recorded to mp4.

For servers and for checking a model. The mp4 frames are drawn by the same HUD as the window, on
an off-screen surface, one frame per agent step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pygame

from app.player.hud import Hud, Status
from app.player.keymap import Keymap
from app.player.recorder import EpisodeRecorder, VideoRecorder, surface_to_array
from app.player.session import Session
from weights.errors import UserError


@dataclass(frozen=True)
class HeadlessResult:
    steps: int
    episodes_finished: int
    returns: tuple[float, ...]  # returns of the finished episodes
    steps_per_s: float
    mean_latency_ms: float | None
    mean_psnr_db: float | None  # compare mode: imagined vs real frames, over all steps
    video: Path | None
    episodes_saved: tuple[Path, ...]


def run_headless(session: Session, steps: int, record: Path | None = None, fps: float = 15.0,
                 size: int = 256, episodes_dir: Path | None = None, log=print) -> HeadlessResult:
    """Plays `steps` agent steps as fast as possible. Raises UserError on a bad step count."""
    if steps < 1:
        raise UserError(f"--steps must be at least 1, not {steps}")
    video = VideoRecorder(record, fps) if record is not None else None
    episodes = EpisodeRecorder(episodes_dir, session.game, session.meanings) if episodes_dir is not None else None
    hud = surface = None
    if video is not None:
        pygame.font.init()
        hud = Hud(size, Keymap.for_game(session.game, session.meanings), interactive=False)
        surface = pygame.Surface(hud.window_size(len(session.snapshot().panels)))
    status = Status(fps_target=None)
    returns, latencies, psnrs = [], [], []
    t0 = time.perf_counter()
    try:
        for i in range(steps):
            snap = session.step()
            if snap.latency_ms is not None:
                latencies.append(snap.latency_ms)
            if snap.psnr_db is not None:
                psnrs.append(min(snap.psnr_db, 99.0))
            if snap.ended:
                returns.append(snap.ret)
                log(f"step {i + 1}: {snap.message}")
            if episodes is not None:
                episodes.add(snap)
            if video is not None:
                size_needed = hud.window_size(len(snap.panels))
                if surface.get_size() != size_needed:
                    surface = pygame.Surface(size_needed)
                status.fps_reached = (i + 1) / max(time.perf_counter() - t0, 1e-9)
                hud.draw(surface, snap, status)
                video.write(surface_to_array(surface))
    finally:
        path = video.close() if video is not None else None
        saved = tuple(episodes.close()) if episodes is not None else ()
    elapsed = time.perf_counter() - t0
    return HeadlessResult(
        steps=steps,
        episodes_finished=len(returns),
        returns=tuple(returns),
        steps_per_s=steps / elapsed,
        mean_latency_ms=sum(latencies) / len(latencies) if latencies else None,
        mean_psnr_db=sum(psnrs) / len(psnrs) if psnrs else None,
        video=path,
        episodes_saved=saved,
    )
