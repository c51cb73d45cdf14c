"""Episodes on disk: append-only, one uncompressed .npz per episode, every write atomic.

File format (documented so that users can bring their own data; no pickle, `np.load(allow_pickle=False)`):
    {id:08d}.npz with arrays
        obs        uint8   (T, 3, H, W)  obs[t] is the frame before act[t]
        act        int64   (T,)
        rew        float32 (T,)          raw reward of act[t]
        end        uint8   (T,)          1 where act[t] ended the episode (game over, or life loss in training)
        trunc      uint8   (T,)          1 where the episode was cut after act[t] (time limit)
        final_obs  uint8   (3, H, W)     the frame after the last step
Frames stay uint8 end to end, so a save/load round trip is exact for every value (the reference's
float->byte truncation loses a level on values 1..63; diamond.md 3.2, fixed here).

Writes go to a hidden temporary file in the same folder, are fsync'ed, then renamed into place, so a run
killed mid-write leaves only complete episodes (plus an ignored temporary file). Files are never rewritten,
except an unfinished episode that the collector stores and then extends (`replace`, same atomic write).
Unreadable or malformed files are reported by name (a RuntimeWarning) and skipped; the others still load.
Opening a store reads only the array headers; frames are read on first use and kept as uint8: memory never
exceeds the frames themselves (100k steps of 64x64 RGB: 1.2 GB).

Any folder of such files (any names, searched recursively) opens as a static dataset:
`EpisodeStore(folder, static=True)`.
"""
from __future__ import annotations

import re
import warnings
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from weights.atomic import atomic_write, fsync_dir
from weights.errors import NotFound, UserError

_NAME = re.compile(r"^(\d+)\.npz$")


@dataclass
class Episode:
    """One episode. obs (T, 3, H, W) uint8; act (T,) int64; rew (T,) float32; end, trunc (T,) uint8;
    final_obs (3, H, W) uint8: the frame after act[T-1]."""

    obs: np.ndarray
    act: np.ndarray
    rew: np.ndarray
    end: np.ndarray
    trunc: np.ndarray
    final_obs: np.ndarray

    def __post_init__(self) -> None:
        self.obs = np.asarray(self.obs, dtype=np.uint8)
        self.act = np.asarray(self.act, dtype=np.int64)
        self.rew = np.asarray(self.rew, dtype=np.float32)
        self.end = np.asarray(self.end, dtype=np.uint8)
        self.trunc = np.asarray(self.trunc, dtype=np.uint8)
        self.final_obs = np.asarray(self.final_obs, dtype=np.uint8)
        validate(self)

    def __len__(self) -> int:
        return len(self.act)

    @property
    def ret(self) -> float:
        """Undiscounted raw return."""
        return float(self.rew.sum())


def validate(ep: Episode) -> None:
    """Raises ValueError naming the first field whose shape or dtype is wrong."""
    t = len(ep.act)
    if t == 0:
        raise ValueError("episode has no steps")
    if ep.obs.ndim != 4 or ep.obs.shape[0] != t or ep.obs.shape[1] != 3:
        raise ValueError(f"obs must be (T={t}, 3, H, W) uint8, got {ep.obs.shape}")
    if ep.final_obs.shape != ep.obs.shape[1:]:
        raise ValueError(f"final_obs must be {ep.obs.shape[1:]}, got {ep.final_obs.shape}")
    for name in ("act", "rew", "end", "trunc"):
        if getattr(ep, name).shape != (t,):
            raise ValueError(f"{name} must be ({t},), got {getattr(ep, name).shape}")


def save_episode(ep: Episode, path: str | Path, sync_dir: bool = True) -> None:
    """Writes `ep` to `path` atomically: temporary file in the same folder, fsync, rename, then (unless
    sync_dir=False, for a caller that syncs the folder once after many writes) fsync of the folder."""
    arrays = {field.name: getattr(ep, field.name) for field in fields(Episode)}
    atomic_write(path, lambda file: np.savez(file, **arrays), sync_dir)


def load_episode(path: str | Path) -> Episode:
    """Reads one episode file. Raises UserError naming the file and what is wrong with it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [f.name for f in fields(Episode) if f.name not in data.files]
            if missing:
                raise UserError(f"missing arrays {missing}")
            arrays = {f.name: data[f.name] for f in fields(Episode)}
        if arrays["obs"].dtype != np.uint8 or arrays["final_obs"].dtype != np.uint8:
            raise UserError(f"frames must be uint8, got {arrays['obs'].dtype}")
        return Episode(**arrays)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise UserError(f"corrupt episode file {path}: {err}") from None


def read_length(path: str | Path) -> int:
    """Number of steps in an episode file, checking every array's header (not the frame data) so that a
    truncated or malformed file is found when the store is opened. Raises UserError naming the file."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            shapes = {}
            for f in fields(Episode):
                with zf.open(f"{f.name}.npy") as member:
                    major, _ = np.lib.format.read_magic(member)
                    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read_header(member)
                    shapes[f.name] = (shape, dtype)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise UserError(f"corrupt episode file {path}: {err}") from None
    obs_shape, obs_dtype = shapes["obs"]
    t = obs_shape[0] if len(obs_shape) == 4 else -1
    bad = [n for n in ("act", "rew", "end", "trunc") if shapes[n][0] != (t,)]
    if obs_dtype != np.uint8 or t <= 0 or obs_shape[1] != 3 or bad or shapes["final_obs"][0] != obs_shape[1:]:
        raise UserError(f"corrupt episode file {path}: inconsistent shapes {shapes}")
    return t


class EpisodeStore:
    """A folder of episode files with an in-memory index (lengths) and lazily loaded uint8 frames.

    `EpisodeStore(path)` creates the folder if needed and indexes what is there; `add(ep)` appends;
    `refresh()` picks up files written by another process. With `static=True` it reads any folder of
    `.npz` episodes (searched recursively, creation order = sorted path) and refuses to add.
    """

    def __init__(self, path: str | Path, static: bool = False):
        self.path = Path(path)
        self.static = static
        if not static:
            self.path.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_dir():
            raise NotFound(f"episode folder {self.path} does not exist")
        self._files: list[Path] = []
        self._ids: list[int] = []
        self._lengths: list[int] = []
        self._cache: dict[int, Episode] = {}
        self._known: set[Path] = set()
        self._bad: set[Path] = set()
        self.refresh()

    # --- index -------------------------------------------------------------------------------------
    def _candidates(self) -> list[Path]:
        if self.static:
            return sorted(p for p in self.path.rglob("*.npz") if not p.name.startswith("."))
        return sorted((p for p in self.path.iterdir() if _NAME.match(p.name)), key=lambda p: int(p.stem))

    def refresh(self) -> int:
        """Indexes episode files not seen yet; returns how many were added. Bad files are warned about once."""
        added = 0
        for p in self._candidates():
            if p in self._known or p in self._bad:
                continue
            try:
                length = read_length(p)
            except ValueError as err:
                self._report(p, err)
                continue
            self._register(p, length)
            added += 1
        return added

    def _register(self, path: Path, length: int, ep: Episode | None = None) -> int:
        idx = len(self._files)
        self._files.append(path)
        self._ids.append(int(path.stem) if _NAME.match(path.name) else idx)
        self._lengths.append(length)
        self._known.add(path)
        if ep is not None:
            self._cache[idx] = ep
        return idx

    def _report(self, path: Path, err: Exception) -> None:
        self._bad.add(path)
        warnings.warn(f"skipping {err}", RuntimeWarning, stacklevel=3)

    @property
    def bad_files(self) -> list[Path]:
        """Files that could not be read (reported when found)."""
        return sorted(self._bad)

    @property
    def num_episodes(self) -> int:
        """Indexed episodes (one found corrupt on reading still counts, with length 0)."""
        return len(self._files)

    @property
    def num_steps(self) -> int:
        return int(sum(self._lengths))

    @property
    def lengths(self) -> np.ndarray:
        """(num_episodes,) int64, in creation order."""
        return np.asarray(self._lengths, dtype=np.int64)

    def __len__(self) -> int:
        return self.num_episodes

    # --- read / write --------------------------------------------------------------------------------
    def __getitem__(self, idx: int) -> Episode:
        """Episode number `idx` in creation order (0 = oldest), loaded on first use and kept.
        Raises UserError naming the file if its frame data turn out to be corrupt; that episode is then
        reported once and its length set to 0, so that samplers leave it out."""
        if idx < 0:
            idx += len(self._files)
        ep = self._cache.get(idx)
        if ep is None:
            try:
                ep = load_episode(self._files[idx])
            except ValueError as err:
                if self._lengths[idx]:
                    self._lengths[idx] = 0
                    self._report(self._files[idx], err)
                raise
            self._cache[idx] = ep
        return ep

    def __iter__(self):
        """Every readable episode (a corrupt one is reported and skipped)."""
        for i in range(len(self._files)):
            try:
                yield self[i]
            except ValueError:
                continue

    def add(self, ep: Episode, sync_dir: bool = True) -> int:
        """Appends `ep` (atomic write) and returns its index. Old files are never rewritten.
        sync_dir=False leaves the folder's fsync to a later `sync()` (the collector syncs once per call)."""
        if self.static:
            raise ValueError(f"{self.path} is a static dataset: episodes cannot be added")
        validate(ep)
        next_id = (max(self._ids) + 1) if self._ids else 0
        for p in self._bad:  # never reuse the number of a file left unreadable
            if _NAME.match(p.name):
                next_id = max(next_id, int(p.stem) + 1)
        path = self.path / f"{next_id:08d}.npz"
        save_episode(ep, path, sync_dir)
        return self._register(path, len(ep), ep)

    def replace(self, idx: int, ep: Episode) -> None:
        """Atomically rewrites episode `idx` with a longer version of itself (the collector's unfinished
        episode, stored at the end of each collection call as the reference does)."""
        if self.static:
            raise ValueError(f"{self.path} is a static dataset: episodes cannot be changed")
        validate(ep)
        if len(ep) < self._lengths[idx]:
            raise ValueError(f"episode {idx} can only grow ({self._lengths[idx]} -> {len(ep)} steps)")
        save_episode(ep, self._files[idx])
        self._lengths[idx] = len(ep)
        self._cache[idx] = ep

    def sync(self) -> None:
        """fsync of the folder, so that renamed-in episode files survive a power loss."""
        fsync_dir(self.path)

    def returns(self) -> np.ndarray:
        """(num_episodes,) raw returns (loads every episode)."""
        return np.array([ep.ret for ep in self], dtype=np.float64)
