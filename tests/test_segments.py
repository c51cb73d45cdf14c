"""Segment sampling: windows, padding, masks and episode weights as the reference."""
import numpy as np
import pytest
import torch

from model.pixels import to_float
from training.episode_store import Episode, EpisodeStore
from training.segments import (DENOISER_SEQ_LEN, IMAGINATION_INIT_LEN, REW_END_SEQ_LEN, SegmentSampler,
                               episode_probs, iterate_segments, make_batch, sample_window)

FINAL = 200  # value of every final observation


def episode(t: int, first_value: int = 1) -> Episode:
    """Frame t is filled with first_value + t, act[t] = t + 1, rew[t] = t, end only at the last step."""
    values = np.arange(first_value, first_value + t, dtype=np.uint8)
    end = np.zeros(t)
    end[-1] = 1
    return Episode(obs=np.broadcast_to(values[:, None, None, None], (t, 3, 8, 8)), act=np.arange(1, t + 1),
                   rew=np.arange(t), end=end, trunc=np.zeros(t), final_obs=np.full((3, 8, 8), FINAL))


@pytest.fixture
def store(tmp_path):
    s = EpisodeStore(tmp_path)
    s.add(episode(5))
    s.add(episode(12, first_value=50))
    return s


def frame_values(obs: torch.Tensor) -> list[float]:
    """(T, 3, H, W) float -> value per frame (frames are constant)."""
    return obs[:, 0, 0, 0].tolist()


def level(v: int) -> float:
    return to_float(torch.tensor(v, dtype=torch.uint8)).item()


def test_padding_before_the_episode_start(store):
    b = make_batch(store, [(0, -2, 4)])
    assert b.obs.shape == (1, 6, 3, 8, 8) and b.obs.dtype == torch.float32
    assert b.mask[0].tolist() == [False, False, True, True, True, True]
    assert frame_values(b.obs[0]) == [0.0, 0.0] + [level(v) for v in (1, 2, 3, 4)]
    assert b.act[0].tolist() == [0, 0, 1, 2, 3, 4] and b.rew[0].tolist() == [0, 0, 0, 1, 2, 3]
    assert b.end[0].tolist() == [0] * 6 and b.trunc.dtype == torch.uint8 and b.act.dtype == torch.int64


def test_padding_after_the_end_starts_with_the_final_observation(store):
    b = make_batch(store, [(0, 3, 9)])
    assert b.mask[0].tolist() == [True, True, False, False, False, False]
    assert frame_values(b.obs[0]) == [level(4), level(5), level(FINAL), 0.0, 0.0, 0.0]
    assert b.end[0].tolist() == [0, 1, 0, 0, 0, 0] and b.act[0].tolist() == [4, 5, 0, 0, 0, 0]


def test_window_rules():
    rng = np.random.default_rng(0)
    starts, stops = zip(*[sample_window(rng, 5, 6, beyond_end=False) for _ in range(2000)])
    assert max(stops) == 5 and min(stops) == 1 and all(b - a == 6 for a, b in zip(starts, stops))
    assert min(starts) == -5  # stop = min(len, t + 1 + U{0..L-1}), start = stop - L
    starts, stops = zip(*[sample_window(rng, 5, 6, beyond_end=True) for _ in range(2000)])
    assert min(starts) == -5 and max(starts) == 4 and max(stops) == 10  # start = t - U{0..L-1}


def test_sampled_batches_follow_the_batch_convention(store):
    for seq_len, beyond in ((DENOISER_SEQ_LEN, False), (REW_END_SEQ_LEN, True), (IMAGINATION_INIT_LEN, False)):
        b = SegmentSampler(store, 64, seq_len, beyond, seed=0).sample()
        assert b.obs.shape == (64, seq_len, 3, 8, 8) and len(b) == 64
        assert b.obs.min() >= -1 and b.obs.max() <= 1
        if not beyond:
            assert b.mask[:, -1].all()  # never padded after the end
        assert (b.act[~b.mask] == 0).all() and (b.rew[~b.mask] == 0).all() and (b.end[~b.mask] == 0).all()
        # every real step t that is not the last of its segment is followed by a real frame (next step or final)
        real_next = b.mask[:, :-1] & (b.obs[:, 1:].flatten(2).abs().sum(-1) > 0)
        assert (real_next == b.mask[:, :-1]).all()
        assert b.mask.sum(1).min() >= 1


def test_episode_weights_favour_the_most_recent_quarter():
    p = episode_probs(np.ones(10))
    np.testing.assert_allclose(p, [0.05] * 6 + [0.175] * 4)  # groups of 10 // 4 = 2; the last takes the rest
    np.testing.assert_allclose(episode_probs(np.array([1, 3, 4])), [0.125, 0.375, 0.5])  # fewer than 4: by length
    np.testing.assert_allclose(episode_probs(np.array([1, 3, 4, 2]), None), [0.1, 0.3, 0.4, 0.2])


def test_recent_episodes_drawn_70_percent_and_ranks_partition(tmp_path):
    s = EpisodeStore(tmp_path)
    for i in range(8):
        s.add(episode(3 + i))
    draws = np.array([e for e, _, _ in SegmentSampler(s, 4000, 4, False, seed=1).sample_windows()])
    assert abs(np.isin(draws, [6, 7]).mean() - 0.7) < 0.03
    r0 = {e for e, _, _ in SegmentSampler(s, 500, 4, False, rank=0, world_size=3, seed=0).sample_windows()}
    r1 = {e for e, _, _ in SegmentSampler(s, 500, 4, False, rank=1, world_size=3, seed=0).sample_windows()}
    assert r0 == {0, 3, 6} and r1 == {1, 4, 7}
    with pytest.raises(ValueError, match="rank 3"):
        SegmentSampler(s, 1, 4, False, rank=3, world_size=3)


def test_sampler_sees_episodes_added_later_and_static_weights(tmp_path):
    s = EpisodeStore(tmp_path)
    s.add(episode(4))
    sampler = SegmentSampler(s, 200, 4, False, sample_weights=None, seed=0)
    assert {e for e, _, _ in sampler.sample_windows()} == {0}
    s.add(episode(40))
    assert {e for e, _, _ in sampler.sample_windows()} == {0, 1}


def test_traversal_cuts_consecutive_segments(store):
    batches = list(iterate_segments(store, 4, batch_size=3))
    masks = torch.cat([b.mask for b in batches]).sum(1).tolist()
    assert masks == [4, 4, 4, 4]  # 5 steps -> 4 (a last chunk of 1 real step is dropped); 12 -> 4, 4, 4
    assert [len(b) for b in batches] == [3, 1]
    b = next(iterate_segments(store, 3, batch_size=8))
    assert b.mask.sum(1).tolist() == [3, 2, 3, 3, 3, 3]  # 5 -> 3, 2 (kept: 2 real steps, then the final obs)
    assert frame_values(b.obs[1]) == [level(4), level(5), level(FINAL)]
    with pytest.raises(ValueError, match="no episodes"):
        SegmentSampler(EpisodeStore(store.path / "empty"), 1, 4, False).sample()


def test_an_episode_with_corrupt_frames_is_reported_and_left_out(tmp_path):
    s = EpisodeStore(tmp_path)
    for i in range(5):
        ep = episode(6, first_value=10 * i)
        ep.obs = np.repeat(np.repeat(ep.obs, 8, axis=2), 8, axis=3)  # 64x64: a member zip reads in several parts
        ep.final_obs = np.full((3, 64, 64), FINAL, np.uint8)
        s.add(ep)
    path = tmp_path / "00000004.npz"
    data = bytearray(path.read_bytes())
    data[30 + len("obs.npy") + 128 + 50_000] ^= 0xFF  # a frame byte of the first member; headers intact
    path.write_bytes(bytes(data))
    reopened = EpisodeStore(tmp_path)
    assert reopened.lengths.tolist() == [6] * 5
    sampler = SegmentSampler(reopened, 32, 4, False, seed=0)
    with pytest.warns(RuntimeWarning, match=r"corrupt episode file .*00000004\.npz"):
        for _ in range(5):
            b = sampler.sample()
    assert reopened.lengths.tolist() == [6, 6, 6, 6, 0] and len(b) == 32
    assert len(list(reopened)) == 4


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no GPU"))])
@pytest.mark.parametrize("beyond_end", [False, True])
def test_device_sampler_gives_the_same_batches(tmp_path, beyond_end, device):
    """Frames resident on the device, segments gathered there: the same batches as SegmentSampler from the same
    seed, bit for bit, also after episodes are added and an unfinished one grows (it is uploaded again)."""
    from training.device_segments import DeviceSegmentSampler

    s = EpisodeStore(tmp_path)
    for i, t in enumerate((5, 12, 3, 7)):
        s.add(episode(t, first_value=1 + 40 * i))
    args = (s, 16, REW_END_SEQ_LEN if beyond_end else DENOISER_SEQ_LEN, beyond_end)
    host, resident = SegmentSampler(*args, seed=3), DeviceSegmentSampler(*args, seed=3, device=device)
    for round_ in range(3):
        a, b = host.sample(), resident.sample()
        assert b.obs.device.type == device
        for name in ("obs", "act", "rew", "end", "trunc", "mask"):
            x, y = getattr(a, name), getattr(b, name).cpu()
            assert x.dtype == y.dtype and torch.equal(x, y), (round_, name)
        assert not a.mask.all()  # padding was exercised
        unfinished = episode(4 + 3 * round_, first_value=230)
        unfinished.end[:] = 0
        if round_ == 0:
            s.add(unfinished)
        else:
            s.replace(len(s) - 1, unfinished)  # the collector's unfinished episode, stored again longer
