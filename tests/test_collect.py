"""Collection with real ROMs: N envs, a policy, episodes in the store with the life-loss protocol."""
import gymnasium as gym
import numpy as np
import torch

from training.collect import ActorCriticPolicy, Collector, RandomPolicy, VecSource
from training.episode_store import EpisodeStore


def collect(tmp_path, game="Breakout", num_envs=1, train=True, seed=0, **kwargs):
    source = VecSource(game, num_envs, train=train)
    store = EpisodeStore(tmp_path)
    collector = Collector(source, store, seed=seed)
    stats = collector.collect(RandomPolicy(source.num_actions, seed=seed), **kwargs)
    collector.close()
    return store, stats


def test_training_episodes_end_at_each_life_loss_and_continue_the_game(tmp_path):
    store, stats = collect(tmp_path, num_steps=900)
    assert stats.steps == 900 and store.num_episodes == stats.episodes >= 6
    assert store.num_steps <= 900
    eps = list(store)
    for ep in eps:
        assert ep.obs.shape[1:] == (3, 64, 64) and ep.obs.dtype == np.uint8
        assert ep.end[-1] == 1 and ep.end[:-1].sum() == 0 and ep.trunc.sum() == 0
    # Breakout has 5 lives: episodes 0-3 end by life loss and the next starts from the post-loss frame;
    # episode 4 ends the game (stale terminal frame, as the reference) and episode 5 starts a new game.
    for i in range(3):
        np.testing.assert_array_equal(eps[i + 1].obs[0], eps[i].final_obs)
    np.testing.assert_array_equal(eps[4].final_obs, eps[4].obs[-1])
    assert not np.array_equal(eps[5].obs[0], eps[4].final_obs)
    assert {float(r) for ep in eps for r in ep.rew} <= {0.0, 1.0, 4.0, 7.0}  # raw Breakout rewards


def test_test_episodes_are_full_games(tmp_path):
    store, stats = collect(tmp_path, num_envs=2, train=False, num_episodes=2)
    assert stats.episodes >= 2 and store.num_episodes == stats.episodes
    for ep in store:
        assert ep.end.sum() == 1 and ep.end[-1] == 1 and len(ep) > 100


def test_collecting_in_pieces_continues_the_same_games(tmp_path):
    whole, _ = collect(tmp_path / "a", num_envs=2, num_steps=600)
    source = VecSource("Breakout", 2, train=True)
    pieces = Collector(source, EpisodeStore(tmp_path / "b"), seed=0)
    policy = RandomPolicy(source.num_actions, seed=0)
    for _ in range(6):
        pieces.collect(policy, num_steps=100)
    pieces.close()
    assert pieces.store.num_episodes == whole.num_episodes > 0
    for a, b in zip(whole, pieces.store):
        np.testing.assert_array_equal(a.obs, b.obs)
        np.testing.assert_array_equal(a.act, b.act)


class StepCounter(torch.nn.Module):
    """A stand-in actor-critic: never NOOP; its state counts the steps since the episode started."""

    def __init__(self, num_actions):
        super().__init__()
        self.num_actions = num_actions
        self.seen = []

    def forward(self, obs, state=None):
        assert obs.shape[1:] == (3, 64, 64) and obs.dtype == torch.float32
        count = torch.zeros(len(obs), 1) if state is None else state[0]
        self.seen.append(count[:, 0].clone())
        logits = torch.full((len(obs), self.num_actions), -1e9)
        logits[:, 1:4] = 0
        return logits, torch.zeros(len(obs)), (count + 1, count.clone())


def test_actor_critic_policy_state_resets_at_episode_start(tmp_path):
    source = VecSource("Breakout", 3, train=True)
    store = EpisodeStore(tmp_path)
    ac = StepCounter(source.num_actions)
    stats = Collector(source, store, seed=0).collect(ActorCriticPolicy(ac, source.num_actions, epsilon=0.0, seed=0),
                                                     num_steps=600)
    assert stats.episodes >= 3
    for ep in store:
        assert 0 not in set(ep.act.tolist())
    counts = torch.stack(ac.seen)  # (steps, envs): steps since each env's episode began
    lengths = sorted(store.lengths.tolist())
    assert counts.max().item() <= max(lengths) + 1  # +1: the reset call after a game over
    assert (counts == 0).sum().item() >= stats.episodes  # zeroed at every new episode


class Corridor(gym.Env):
    """A user game: a dot walks right on 32x48 RGB frames; episodes end after 6 steps."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(0, 255, (32, 48, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(2)

    def _obs(self):
        frame = np.zeros((32, 48, 3), np.uint8)
        frame[:, self.x * 8:(self.x + 1) * 8] = 255
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = 0
        return self._obs(), {}

    def step(self, action):
        self.x += 1
        return self._obs(), float(action), self.x == 5, False, {}


def test_any_image_game_is_collected_the_same_way(tmp_path):
    source = VecSource(Corridor, 2, train=True)
    store = EpisodeStore(tmp_path)
    stats = Collector(source, store, seed=0).collect(RandomPolicy(2, seed=0), num_episodes=4)
    assert stats.episodes == 4 and store.lengths.tolist() == [5, 5, 5, 5]
    ep = store[0]
    assert ep.obs.shape == (5, 3, 64, 64) and ep.final_obs.shape == (3, 64, 64)
    assert ep.end.tolist() == [0, 0, 0, 0, 1] and ep.rew.tolist() == ep.act.astype(np.float32).tolist()


def test_steps_counted_are_the_steps_stored(tmp_path):
    """What `collect_steps_per_s` (the bench) and training's budget count: real transitions, each stored once
    (unfinished episodes included with store_partial), over all envs, overshooting by less than one per env."""
    store = EpisodeStore(tmp_path)
    collector = Collector(VecSource("Pong", 3, train=True), store, seed=0, store_partial=True)
    total = 0
    for n in (100, 50):
        stats = collector.collect(RandomPolicy(6, seed=0), num_steps=n)
        assert n <= stats.steps < n + 3
        total += stats.steps
        assert store.num_steps == total  # the growing unfinished episodes are rewritten, not added again
    collector.close()


class ShortOrLong(Corridor):
    """Env 0 of a vector env plays 2-step games, the others 8-step games."""

    count = 0

    def __init__(self):
        super().__init__()
        self.length = 2 if ShortOrLong.count == 0 else 8
        ShortOrLong.count += 1

    def step(self, action):
        obs, rew, _, trunc, info = super().step(action)
        return obs, rew, self.x == self.length, trunc, info


def test_episode_counts_are_shared_between_envs_so_short_games_are_not_favoured(tmp_path):
    ShortOrLong.count = 0
    store = EpisodeStore(tmp_path)
    stats = Collector(VecSource(ShortOrLong, 2, train=False), store, seed=0).collect(RandomPolicy(2, seed=0),
                                                                                     num_episodes=4)
    assert sorted(stats.lengths) == sorted(store.lengths.tolist()) == [2, 2, 8, 8]


def test_unfinished_episodes_can_be_stored_and_grow(tmp_path):
    source = VecSource("Pong", 1, train=True)  # no lives: one long episode
    store = EpisodeStore(tmp_path)
    collector = Collector(source, store, seed=0, store_partial=True)
    policy = RandomPolicy(source.num_actions, seed=0)
    collector.collect(policy, num_steps=50)
    assert store.lengths.tolist() == [50] and store[0].end.sum() == 0
    first = store[0]
    collector.collect(policy, num_steps=50)
    assert store.lengths.tolist() == [100]
    again = EpisodeStore(tmp_path)[0]  # rewritten on disk, the first 50 steps unchanged
    np.testing.assert_array_equal(again.obs[:50], first.obs)
    np.testing.assert_array_equal(again.obs[50], first.final_obs)
    collector.close()
