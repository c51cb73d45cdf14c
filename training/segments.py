"""Segments of stored episodes -> `model.batch.Batch`, sampled as the reference (diamond.md 3.3).

Episode choice: with weights (0.1, 0.1, 0.1, 0.7), episodes in creation order form 4 contiguous groups of
n // 4 (the last takes the remainder) and group k gets total probability w_k, so 70% of the samples come from
the most recent quarter; without weights, or with fewer episodes than weights, probability is proportional to
length. Sampling is with replacement.

Window: t ~ U[0, len). can_sample_beyond_end=False (denoiser, imagination start): stop = min(len, t + 1 +
U{0..L-1}), start = stop - L, so padding only comes before the episode start. True (reward/end model):
start = t - U{0..L-1}, stop = start + L, padding on both sides.

Padding: obs 0 (mid-gray), act 0, rew 0, end 0, trunc 0, mask False; except that the first padded step right
after an episode's last step holds its final observation (the Batch convention).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from model.batch import Batch
from model.pixels import to_float
from training.episode_store import EpisodeStore

DENOISER_SEQ_LEN = 6        # 4 conditioning frames + 1 target + 1 extra autoregressive step
REW_END_SEQ_LEN = 19        # horizon 15 + 4 conditioning frames
IMAGINATION_INIT_LEN = 4    # context that starts an imagined rollout
SAMPLE_WEIGHTS = (0.1, 0.1, 0.1, 0.7)


def episode_probs(lengths: np.ndarray, weights: Sequence[float] | None = SAMPLE_WEIGHTS) -> np.ndarray:
    """Probability of drawing each episode (creation order). lengths (n,) -> (n,) float64 summing to 1."""
    lengths = np.asarray(lengths, dtype=np.float64)
    n = len(lengths)
    if n == 0:
        raise ValueError("no episodes to sample from")
    if lengths.sum() == 0:
        raise ValueError("no readable episodes to sample from")
    if weights is None or n < len(weights):
        return lengths / lengths.sum()
    if weights is not None and (lengths == 0).any():  # unreadable episodes (length 0) are left out
        keep = lengths > 0
        probs = np.zeros(n)
        probs[keep] = episode_probs(lengths[keep], weights)
        return probs
    k = len(weights)
    size = n // k
    probs = np.empty(n)
    for g, w in enumerate(weights):
        lo, hi = g * size, (n if g == k - 1 else (g + 1) * size)
        probs[lo:hi] = w / (hi - lo)
    return probs / probs.sum()


def sample_window(rng: np.random.Generator, length: int, seq_len: int, beyond_end: bool) -> tuple[int, int]:
    """(start, stop) with stop - start = seq_len, as the reference; start may be < 0 and stop > length
    (the latter only when beyond_end)."""
    t = int(rng.integers(length))
    if beyond_end:
        start = t - int(rng.integers(seq_len))
        return start, start + seq_len
    stop = min(length, t + 1 + int(rng.integers(seq_len)))
    return stop - seq_len, stop


def make_batch(store: EpisodeStore, windows: Sequence[tuple[int, int, int]]) -> Batch:
    """Builds a Batch from (episode index, start, stop) windows of equal length, padding outside the episode.

    obs (B, L, 3, H, W) float32 in [-1, 1]; act int64; rew float32; end, trunc uint8; mask bool.
    """
    seq_len = windows[0][2] - windows[0][1]
    first = store[windows[0][0]]
    c, h, w = first.obs.shape[1:]
    b = len(windows)
    obs = np.zeros((b, seq_len, c, h, w), dtype=np.uint8)
    has_frame = np.zeros((b, seq_len), dtype=bool)
    act = np.zeros((b, seq_len), dtype=np.int64)
    rew = np.zeros((b, seq_len), dtype=np.float32)
    end = np.zeros((b, seq_len), dtype=np.uint8)
    trunc = np.zeros((b, seq_len), dtype=np.uint8)
    mask = np.zeros((b, seq_len), dtype=bool)
    for i, (e, start, stop) in enumerate(windows):
        if stop - start != seq_len:
            raise ValueError(f"all windows must have length {seq_len}, got {stop - start}")
        ep = store[e]
        lo, hi = max(start, 0), min(stop, len(ep))
        a, z = lo - start, hi - start
        obs[i, a:z] = ep.obs[lo:hi]
        act[i, a:z] = ep.act[lo:hi]
        rew[i, a:z] = ep.rew[lo:hi]
        end[i, a:z] = ep.end[lo:hi]
        trunc[i, a:z] = ep.trunc[lo:hi]
        mask[i, a:z] = True
        has_frame[i, a:z] = True
        if z < seq_len:  # the frame that followed the last real step
            obs[i, z] = ep.final_obs
            has_frame[i, z] = True
    obs_f = to_float(torch.from_numpy(obs))
    obs_f[torch.from_numpy(~has_frame)] = 0.0  # pure padding -> 0 (mid-gray)
    return Batch(obs=obs_f, act=torch.from_numpy(act), rew=torch.from_numpy(rew), end=torch.from_numpy(end),
                 trunc=torch.from_numpy(trunc), mask=torch.from_numpy(mask))


class SegmentSampler:
    """Draws batches of segments of one length from a store; call `sample()` as often as needed.

    It reads the store's index at every call, so episodes added meanwhile are included. With
    `world_size > 1`, rank r only draws from episodes r, r + world_size, ... (weights strided the same way,
    as the reference's DDP split). `sample_weights=None` gives length-proportional sampling (static data).
    """

    def __init__(self, store: EpisodeStore, batch_size: int, seq_len: int, can_sample_beyond_end: bool,
                 sample_weights: Sequence[float] | None = SAMPLE_WEIGHTS, rank: int = 0, world_size: int = 1,
                 seed: int | None = None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in [0, {world_size})")
        self.store = store
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.can_sample_beyond_end = can_sample_beyond_end
        self.sample_weights = sample_weights
        self.rank = rank
        self.world_size = world_size
        self.rng = np.random.default_rng(seed)

    def sample_windows(self, batch_size: int | None = None) -> list[tuple[int, int, int]]:
        lengths = self.store.lengths
        probs = episode_probs(lengths, self.sample_weights)
        idx = np.arange(self.rank, len(lengths), self.world_size)
        if len(idx) == 0:
            raise ValueError(f"rank {self.rank} has no episodes ({len(lengths)} stored, world size {self.world_size})")
        if probs[idx].sum() == 0:
            raise ValueError(f"rank {self.rank} has no readable episodes")
        p = probs[idx] / probs[idx].sum()
        chosen = self.rng.choice(idx, size=self.batch_size if batch_size is None else batch_size, p=p)
        return [(int(e), *sample_window(self.rng, int(lengths[e]), self.seq_len, self.can_sample_beyond_end))
                for e in chosen]

    def sample(self, batch_size: int | None = None) -> Batch:
        """One Batch of `batch_size` (default: the sampler's) segments of `seq_len` steps. An episode whose
        frames turn out to be corrupt is reported by the store (by file name), left out, and the batch drawn again."""
        while True:
            unreadable = int((self.store.lengths == 0).sum())
            try:
                return make_batch(self.store, self.sample_windows(batch_size))
            except ValueError:
                if int((self.store.lengths == 0).sum()) == unreadable:  # not a newly found corrupt episode
                    raise


def iterate_segments(store: EpisodeStore, seq_len: int, batch_size: int) -> Iterator[Batch]:
    """Every episode cut into consecutive segments of seq_len (the last one padded, dropped when it has fewer
    than 2 real steps), in batches: the reference's test-set traversal."""
    windows = []
    for e, length in enumerate(store.lengths):
        for start in range(0, int(length), seq_len):
            if length - start >= 2:
                windows.append((e, start, start + seq_len))
    for i in range(0, len(windows), batch_size):
        yield make_batch(store, windows[i:i + batch_size])
