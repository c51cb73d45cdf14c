"""The episode store: exact uint8 round trip, append-only atomic files, crash safety, corrupt files reported."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from training.episode_store import Episode, EpisodeStore, load_episode, save_episode


def make_episode(t: int, seed: int = 0, size: int = 64) -> Episode:
    rng = np.random.default_rng(seed)
    end = np.zeros(t, np.uint8)
    end[-1] = 1
    return Episode(obs=rng.integers(0, 256, (t, 3, size, size), dtype=np.uint8), act=rng.integers(0, 18, t),
                   rew=rng.normal(size=t).astype(np.float32), end=end, trunc=np.zeros(t, np.uint8),
                   final_obs=rng.integers(0, 256, (3, size, size), dtype=np.uint8))


def assert_same(a: Episode, b: Episode) -> None:
    for name in ("obs", "act", "rew", "end", "trunc", "final_obs"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)


def test_round_trip_is_exact_for_every_uint8_value(tmp_path):
    values = np.arange(256, dtype=np.uint8)
    obs = np.broadcast_to(values.reshape(4, 1, 8, 8), (4, 3, 8, 8)).copy()
    ep = Episode(obs=obs, act=[0, 1, 2, 3], rew=[0.5, -1, 0, 7], end=[0, 0, 0, 1], trunc=[0, 0, 0, 0],
                 final_obs=obs[1])
    store = EpisodeStore(tmp_path)
    store.add(ep)
    again = EpisodeStore(tmp_path)[0]
    assert_same(ep, again)
    assert set(np.unique(again.obs)) == set(range(256))


def test_append_only_with_lazy_index(tmp_path):
    store = EpisodeStore(tmp_path)
    eps = [make_episode(t, seed=t) for t in (5, 9, 3)]
    for ep in eps:
        store.add(ep)
    first = (tmp_path / "00000000.npz").stat()
    store.add(make_episode(4, seed=99))
    assert (tmp_path / "00000000.npz").stat().st_mtime_ns == first.st_mtime_ns  # old files untouched
    reopened = EpisodeStore(tmp_path)
    assert reopened.num_episodes == 4 and reopened.num_steps == 21
    assert reopened.lengths.tolist() == [5, 9, 3, 4]
    assert reopened._cache == {}  # the index reads headers only; frames load on first use
    assert_same(reopened[1], eps[1])
    assert sorted(reopened._cache) == [1]


def test_corrupt_and_truncated_files_are_reported_by_name_and_skipped(tmp_path):
    store = EpisodeStore(tmp_path)
    for t in (6, 7, 8):
        store.add(make_episode(t, seed=t))
    good = (tmp_path / "00000001.npz").read_bytes()
    (tmp_path / "00000001.npz").write_bytes(good[: len(good) // 2])  # truncated
    (tmp_path / "00000003.npz").write_bytes(b"not an episode")
    with pytest.warns(RuntimeWarning) as record:
        reopened = EpisodeStore(tmp_path)
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2 and "00000001.npz" in messages[0] and "00000003.npz" in messages[1]
    assert messages[0].startswith("skipping corrupt episode file ")
    assert reopened.lengths.tolist() == [6, 8]
    assert [p.name for p in reopened.bad_files] == ["00000001.npz", "00000003.npz"]
    assert reopened.add(make_episode(2)) == 2
    assert (tmp_path / "00000004.npz").exists()  # a bad file's number is never reused


def test_wrong_shapes_are_rejected_with_the_field_named(tmp_path):
    with pytest.raises(ValueError, match=r"obs must be \(T=2, 3, H, W\) uint8, got \(3, 3, 8, 8\)"):
        Episode(obs=np.zeros((3, 3, 8, 8)), act=[0, 1], rew=[0, 0, 0], end=[0, 0, 0], trunc=[0, 0, 0],
                final_obs=np.zeros((3, 8, 8)))
    bad = tmp_path / "bad.npz"
    np.savez(bad, obs=np.zeros((2, 3, 8, 8), np.float32), act=np.zeros(2), rew=np.zeros(2), end=np.zeros(2),
             trunc=np.zeros(2), final_obs=np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"corrupt episode file .*bad\.npz: frames must be uint8"):
        load_episode(bad)


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from training.episode_store import Episode, EpisodeStore
    store = EpisodeStore(sys.argv[1])
    i = 0
    while True:
        t = 300 + 37 * (i % 5)
        obs = np.full((t, 3, 64, 64), i % 256, np.uint8)
        store.add(Episode(obs=obs, act=np.full(t, i), rew=np.zeros(t), end=np.eye(1, t, t - 1)[0],
                          trunc=np.zeros(t), final_obs=obs[0]))
        print(i, flush=True)
        i += 1
""")


def test_a_run_killed_mid_write_leaves_a_loadable_store(tmp_path):
    store_dir = tmp_path / "episodes"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(store_dir)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        for _ in range(4):  # let it complete a few episodes, then kill it while it writes the next
            assert proc.stdout.readline(), "writer died"
        time.sleep(0.013)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    store = EpisodeStore(store_dir)  # no warning: nothing half-written is visible
    assert store.num_episodes >= 4
    for i, ep in enumerate(store):
        t = 300 + 37 * (i % 5)
        assert len(ep) == t and (ep.obs == i % 256).all() and (ep.act == i).all() and ep.end[-1] == 1
    leftovers = [p for p in store_dir.iterdir() if p.suffix != ".npz"]
    assert all(p.name.startswith(".") and p.suffix == ".tmp" for p in leftovers)
    store.add(make_episode(3))  # and it can go on appending
    assert EpisodeStore(store_dir).num_episodes == store.num_episodes


def test_a_folder_of_episodes_loads_as_a_static_dataset(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "more").mkdir()
    save_episode(make_episode(4, seed=1), tmp_path / "train" / "a.npz")
    save_episode(make_episode(6, seed=2), tmp_path / "more" / "b.npz")
    data = EpisodeStore(tmp_path, static=True)
    assert data.lengths.tolist() == [6, 4]  # sorted by path: more/b.npz, train/a.npz
    assert_same(data[1], make_episode(4, seed=1))
    with pytest.raises(ValueError, match="static dataset"):
        data.add(make_episode(2))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EpisodeStore(tmp_path / "missing", static=True)


def test_an_unfinished_episode_can_only_grow(tmp_path):
    store = EpisodeStore(tmp_path)
    idx = store.add(make_episode(6, seed=1))
    store.replace(idx, make_episode(9, seed=2))
    assert EpisodeStore(tmp_path).lengths.tolist() == [9]
    assert_same(EpisodeStore(tmp_path)[0], make_episode(9, seed=2))
    with pytest.raises(ValueError, match="can only grow"):
        store.replace(idx, make_episode(3))
