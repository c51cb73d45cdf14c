"""Recording what is played: an mp4 of the screen, and the episodes in the episode store format.

Episodes are cut where the game ends, where the frames jump (reset, re-sync) and when recording
stops, so nothing played is lost (the reference kept only episodes that reached their end).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pygame

from app.player.session import Snapshot, Transition
from weights.errors import UserError

ACTIONS_FILE = "actions.json"  # beside a recording's episode stores: {"game": ..., "actions": [names]}


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def surface_to_array(surface: pygame.Surface) -> np.ndarray:
    """A Surface as uint8 (H, W, 3)."""
    return np.ascontiguousarray(pygame.surfarray.array3d(surface).swapaxes(0, 1))


def _fit(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scales a frame (H, W, 3) to fit inside size (h, w), keeping its aspect, centred on black."""
    import cv2

    h, w = size
    scale = min(h / frame.shape[0], w / frame.shape[1])
    fh, fw = max(1, int(frame.shape[0] * scale)), max(1, int(frame.shape[1] * scale))
    out = np.zeros((h, w, 3), np.uint8)
    y, x = (h - fh) // 2, (w - fw) // 2
    out[y:y + fh, x:x + fw] = cv2.resize(frame, (fw, fh), interpolation=cv2.INTER_AREA)
    return out


class VideoRecorder:
    """Writes frames (H, W, 3) uint8 to an H.264 mp4 through imageio-ffmpeg, one frame per agent step."""

    def __init__(self, path: str | Path, fps: float):
        import imageio.v2 as imageio

        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise UserError(f"the recording must be an .mp4 file, not {self.path.name!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # macro_block_size=2: yuv420p only needs even sizes; frames are padded to even below.
        # A fragmented mp4 with a keyframe every 2 s: a recording cut by a crash or kill -9 still plays up to its
        # last fragment (a plain mp4 writes its index at the end, and is unreadable without it).
        self._writer = imageio.get_writer(self.path, fps=fps, codec="libx264", quality=7,
                                          macro_block_size=2, pixelformat="yuv420p",
                                          output_params=["-g", str(max(1, round(2 * fps))),
                                                         "-movflags", "frag_keyframe+empty_moov"])
        self.frames = 0
        self._size: tuple[int, int] | None = None

    def write(self, frame: np.ndarray) -> None:
        """Appends one frame; a frame of another size (the window grew for compare mode) is fitted
        into the first frame's size, since an mp4 keeps one size."""
        h, w = frame.shape[:2]
        if self._size is None:
            self._size = (h + h % 2, w + w % 2)
        if (h, w) != self._size:
            frame = _fit(frame, self._size)
        self._writer.append_data(frame)
        self.frames += 1

    def close(self) -> Path:
        self._writer.close()
        return self.path


class EpisodeRecorder:
    """Collects the transitions of each source ("real", "imagine") and appends every finished or cut
    episode to the episode store `root/<source>/` (`training.episode_store`)."""

    def __init__(self, root: str | Path, game: str | None = None, meanings: tuple[str, ...] | None = None):
        """game and meanings (the action names) go to root/actions.json, for the replay browser."""
        self.root = Path(root)
        self.actions = {"game": game, "actions": list(meanings)} if meanings else None
        self._steps: dict[str, list[Transition]] = {}
        self._stores: dict = {}
        self.saved: list[Path] = []  # the store folder of each episode saved, in order

    def add(self, snap: Snapshot) -> None:
        for source in snap.restarted:
            self.cut(source)
        for tr in snap.transitions:
            steps = self._steps.setdefault(tr.source, [])
            if steps and steps[-1].next_obs is not tr.obs and not np.array_equal(steps[-1].next_obs, tr.obs):
                self.cut(tr.source)  # frames jumped: a new episode
            self._steps.setdefault(tr.source, []).append(tr)
            if tr.end or tr.trunc:
                self.cut(tr.source)

    def cut(self, source: str) -> None:
        """Saves the steps collected for `source` as one episode (if any)."""
        from training.episode_store import Episode, EpisodeStore

        steps = self._steps.pop(source, [])
        if not steps:
            return
        store = self._stores.get(source)
        if store is None:
            store = self._stores[source] = EpisodeStore(self.root / source)
            if self.actions is not None:
                (self.root / ACTIONS_FILE).write_text(json.dumps(self.actions) + "\n")
        store.add(Episode(
            obs=np.stack([s.obs for s in steps]).transpose(0, 3, 1, 2),  # (T, 3, H, W) uint8
            act=np.array([s.act for s in steps], dtype=np.int64),
            rew=np.array([s.rew for s in steps], dtype=np.float32),
            end=np.array([s.end for s in steps], dtype=np.uint8),
            trunc=np.array([s.trunc for s in steps], dtype=np.uint8),
            final_obs=steps[-1].next_obs.transpose(2, 0, 1),
        ))
        self.saved.append(store.path)

    def close(self) -> list[Path]:
        for source in list(self._steps):
            self.cut(source)
        return self.saved
