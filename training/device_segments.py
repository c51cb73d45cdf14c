"""Batches made on the device: the episode store's uint8 frames kept resident there (100k Atari frames are
1.2 GB) and segments gathered there, so no batch is built on the host or copied from pageable memory.

`DeviceSegmentSampler` draws the same windows as `training.segments.SegmentSampler` (the same host RNG draws:
episode choice and window, see `SegmentSampler.sample_windows`) and gives the same `Batch`, bit for bit; only
the gathering, the uint8 -> float conversion and the padding happen on the device. The host sends B x T
indices per batch.

Layout: every episode's T frames and then its final observation are consecutive slots of one (N, 3, H, W)
uint8 tensor, with its actions, rewards, ends and truncations in the same slots (0 at the final observation's);
slot 0 is padding. Episodes added to the store (and the collector's unfinished episode, stored again each time it
grows) are uploaded when a batch is drawn.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from model.batch import Batch
from model.pixels import to_float
from training.episode_store import EpisodeStore
from training.segments import SAMPLE_WEIGHTS, SegmentSampler


class DeviceEpisodes:
    """The store's episodes resident on a device (see the module docstring), uploaded as they appear or grow."""

    def __init__(self, store: EpisodeStore, device: torch.device | str) -> None:
        self.store, self.device = store, torch.device(device)
        self.size = 1  # slots used; slot 0 is padding
        self.frames = self.act = self.rew = self.end = self.trunc = None
        self.base = np.zeros(0, dtype=np.int64)  # first slot of each episode
        self.length = np.zeros(0, dtype=np.int64)  # its length when uploaded

    def sync(self) -> None:
        """Uploads the episodes that are new or longer since the last call (an episode that grew moves)."""
        lengths = self.store.lengths
        n = len(lengths)
        if n > len(self.base):
            self.base = np.concatenate((self.base, np.zeros(n - len(self.base), dtype=np.int64)))
            self.length = np.concatenate((self.length, np.zeros(n - len(self.length), dtype=np.int64)))
        for e in np.flatnonzero(lengths != self.length):
            if lengths[e] == 0:  # found unreadable: the sampler never draws it
                self.length[e] = 0
                continue
            try:
                ep = self.store[int(e)]
            except ValueError:  # corrupt frames: the store reports it and sets its length to 0
                self.length[e] = 0
                continue
            obs = np.concatenate((ep.obs, ep.final_obs[None]))
            zero = lambda x, dtype: np.concatenate((np.asarray(x, dtype=dtype), np.zeros(1, dtype=dtype)))
            self._reserve(self.size + len(obs), obs.shape[1:])
            rows = slice(self.size, self.size + len(obs))
            self.frames[rows] = self._upload(obs)
            for buf, x, dtype in ((self.act, ep.act, np.int64), (self.rew, ep.rew, np.float32),
                                  (self.end, ep.end, np.uint8), (self.trunc, ep.trunc, np.uint8)):
                buf[rows] = self._upload(zero(x, dtype))
            self.base[e], self.length[e] = self.size, len(ep)
            self.size += len(obs)

    def _upload(self, x: np.ndarray) -> torch.Tensor:
        """To the device without waiting for it (on a GPU: through pinned memory)."""
        x = torch.from_numpy(x)
        return x.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else x

    def _reserve(self, n: int, frame_shape: tuple) -> None:
        """Room for n slots: grows the buffers by doubling (amortised: one copy per doubling)."""
        if self.frames is not None and n <= len(self.frames):
            return
        cap = max(n, 2 * (len(self.frames) if self.frames is not None else 1024))
        new = lambda dtype, *shape: torch.zeros(cap, *shape, dtype=dtype, device=self.device)
        bufs = (new(torch.uint8, *frame_shape), new(torch.int64), new(torch.float32), new(torch.uint8),
                new(torch.uint8))
        if self.frames is not None:
            for dst, src in zip(bufs, (self.frames, self.act, self.rew, self.end, self.trunc)):
                dst[: self.size] = src[: self.size]
        self.frames, self.act, self.rew, self.end, self.trunc = bufs

    def gather(self, windows: Sequence[tuple[int, int, int]]) -> Batch:
        """The `training.segments.make_batch` of these (episode, start, stop) windows, made on the device."""
        e, start, stop = (np.asarray(x, dtype=np.int64) for x in zip(*windows))
        seq_len = int(stop[0] - start[0])
        if (stop - start != seq_len).any():
            raise ValueError(f"all windows must have length {seq_len}")
        t = start[:, None] + np.arange(seq_len)  # (B, T): step index in the episode
        length = self.length[e][:, None]
        real = (t >= 0) & (t < length)
        has_frame = (t >= 0) & (t <= length)  # the step right after the last one shows the final observation
        slot = np.where(has_frame, self.base[e][:, None] + t, 0)
        slot, real, has_frame = self._upload(np.stack((slot, real, has_frame))).unbind(0)
        real, has_frame = real.bool(), has_frame.bool()
        obs = torch.where(has_frame[..., None, None, None], to_float(self.frames[slot]), 0.0)  # padding: 0
        zero = lambda x: torch.where(real, x[slot], 0)
        return Batch(obs=obs, act=zero(self.act), rew=zero(self.rew), end=zero(self.end), trunc=zero(self.trunc),
                     mask=real)


class DeviceSegmentSampler(SegmentSampler):
    """`SegmentSampler` whose batches are gathered on `device` from the store's frames resident there."""

    def __init__(self, store: EpisodeStore, batch_size: int, seq_len: int, can_sample_beyond_end: bool,
                 sample_weights: Sequence[float] | None = SAMPLE_WEIGHTS, rank: int = 0, world_size: int = 1,
                 seed: int | None = None, device: torch.device | str = "cpu",
                 episodes: DeviceEpisodes | None = None) -> None:
        super().__init__(store, batch_size, seq_len, can_sample_beyond_end, sample_weights, rank, world_size, seed)
        # one resident copy can serve several samplers of the same store
        self.episodes = episodes if episodes is not None else DeviceEpisodes(store, device)

    def sample(self, batch_size: int | None = None) -> Batch:
        self.episodes.sync()
        return self.episodes.gather(self.sample_windows(batch_size))
