"""The real Atari envs (ALE ROMs shipped with ale-py) follow the Atari 100k protocol."""
import cv2
import gymnasium as gym
import numpy as np
import pytest

from training.atari_env import make_atari_env, make_atari_vector_env, make_env
from training.games import GAMES, MINIMAL_ACTION_COUNTS, get_game, resolve_game
from weights.errors import UserError


def play(env, actions):
    out = []
    for a in actions:
        obs, rew, term, trunc, info = env.step(int(a))
        out.append((obs, rew, term, trunc, info))
        if term or trunc:
            break
    return out


def test_frames_are_64x64_rgb_uint8_resized_from_the_full_frame():
    env = make_atari_env("Breakout", train=False, seed=0)
    obs, info = env.reset()
    steps = play(env, np.random.default_rng(0).integers(4, size=50))
    for obs, _, _, _, info in steps:
        assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
        full = info["original_obs"]
        assert full.shape == (210, 160, 3) and full.dtype == np.uint8
        np.testing.assert_array_equal(obs, cv2.resize(full, (64, 64), interpolation=cv2.INTER_AREA))
    frames = np.stack([s[0] for s in steps])
    assert frames.min() >= 0 and frames.max() > 100 and len(np.unique(frames)) > 4  # real colours, not blank
    assert env.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)


def test_frame_skip_4_with_max_pool_over_the_last_two_frames():
    env = make_atari_env("Pong", train=False, seed=1)
    env.reset()
    play(env, [2] * 30)
    ale = env.unwrapped.ale
    state, frame0 = ale.cloneState(), ale.getEpisodeFrameNumber()
    obs, _, _, _, info = env.step(3)
    assert ale.getEpisodeFrameNumber() == frame0 + 4
    ale.restoreState(state)
    action = env.unwrapped._action_set[3]
    raw = []
    for _ in range(4):
        ale.act(action)
        raw.append(ale.getScreenRGB())
    pooled = np.maximum(raw[2], raw[3])
    np.testing.assert_array_equal(info["original_obs"], pooled)
    np.testing.assert_array_equal(obs, cv2.resize(pooled, (64, 64), interpolation=cv2.INTER_AREA))


def test_reset_takes_1_to_30_noops_and_a_seed_makes_it_repeatable():
    env = make_atari_env("Breakout", train=False)
    noops = [env.reset(seed=s)[1]["episode_frame_number"] for s in range(40)]
    assert min(noops) >= 1 and max(noops) <= 30 and len(set(noops)) > 10

    def run(seed):
        e = make_atari_env("MsPacman", train=True, seed=seed)
        obs, _ = e.reset()
        steps = play(e, np.random.default_rng(0).integers(9, size=100))
        return np.stack([obs] + [s[0] for s in steps]), [s[1] for s in steps]

    (a, ra), (b, rb), (c, _) = run(7), run(7), run(8)
    np.testing.assert_array_equal(a, b)
    assert ra == rb
    assert not np.array_equal(a, c)


def test_no_sticky_actions_and_108k_frame_cap():
    ale = make_atari_env("Breakout", train=False).unwrapped.ale
    assert ale.getFloat("repeat_action_probability") == 0.0
    assert ale.getInt("max_num_frames_per_episode") == 108_000


def test_life_loss_ends_training_episodes_only_and_the_game_continues():
    rng = np.random.default_rng(0)
    actions = rng.integers(4, size=2000)
    train = make_atari_env("Breakout", train=True, seed=0)
    train.reset()
    steps = play(train, actions)
    obs, _, term, trunc, info = steps[-1]
    assert term and info["life_loss"] and info["lives"] == 4  # the first life lost
    lives_before = train.unwrapped.ale.lives()
    frame_before = train.unwrapped.ale.getEpisodeFrameNumber()
    next_obs, _ = train.reset()
    np.testing.assert_array_equal(next_obs, obs)  # next episode starts from the post-loss frame
    assert train.unwrapped.ale.lives() == lives_before and train.unwrapped.ale.getEpisodeFrameNumber() == frame_before

    test = make_atari_env("Breakout", train=False, seed=0)
    test.reset()
    steps = play(test, np.concatenate([actions, rng.integers(4, size=5000)]))
    lives = [s[4]["lives"] for s in steps]
    assert lives[0] == 5 and steps[-1][2] and lives[-1] == 0  # a full game: 5 lives, one terminal
    assert not any(s[2] for s in steps[:-1])
    assert steps[-1][0] is not None and np.array_equal(steps[-1][0], steps[-2][0])  # the reference's stale terminal frame


@pytest.mark.parametrize("game", list(GAMES))
def test_minimal_action_sets(game):
    env = make_atari_env(game, train=False)
    meanings = env.unwrapped.get_action_meanings()
    assert env.action_space.n == len(meanings) == MINIMAL_ACTION_COUNTS[game]
    assert meanings[0] == "NOOP"
    if game == "Breakout":
        assert meanings == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    if game == "Freeway":
        assert meanings == ["NOOP", "UP", "DOWN"]
    env.close()


def test_vector_env_gives_the_same_frames_as_the_protocol_env():
    # ale-py's vector env differs only in its reset NOOPs (U{0..29}); with none, every frame matches.
    single = make_atari_env("Breakout", train=False, seed=3, noop_max=0)
    vec = make_atari_vector_env("Breakout", 1, noop_max=0)
    o1, _ = single.reset()
    o2, _ = vec.reset(seed=3)
    np.testing.assert_array_equal(o1, o2[0, 0])
    rng = np.random.default_rng(0)
    for t in range(5000):
        a = int(rng.integers(4))
        o1, r1, te1, tr1, i1 = single.step(a)
        o2, r2, te2, tr2, i2 = vec.step(np.array([a]))
        np.testing.assert_array_equal(o1, o2[0, 0])
        assert (r1, te1, tr1, i1["lives"]) == (r2[0], te2[0], tr2[0], i2["lives"][0])
        if te1:
            break
    assert te1  # compared through a whole game, terminal frame included
    vec = make_atari_vector_env("Breakout", 16)
    noops = vec.reset(seed=0)[1]["episode_frame_number"]
    assert noops.min() >= 0 and noops.max() <= 29


def test_game_names_and_unknown_game_message():
    """One resolver for every command: the 26 games in any spelling, the toy game, other gymnasium ids."""
    assert resolve_game("ms_pacman") == resolve_game("MS-PACMAN") == resolve_game("ALE/MsPacman-v5") == "MsPacman"
    assert resolve_game("PongNoFrameskip-v4") == "Pong"
    assert resolve_game(" catch ") == resolve_game("CATCH") == "Catch"
    assert resolve_game("ALE/SpaceInvaders-v5") == "ALE/SpaceInvaders-v5"  # another id: kept as given
    assert len(GAMES) == 26 and get_game("breakout").env_id == "ALE/Breakout-v5"
    with pytest.raises(UserError, match="Catch is not one of the 26 Atari 100k games"):
        get_game("catch")
    with pytest.raises(UserError, match=r"unknown game 'Breakot': did you mean Breakout") as err:
        resolve_game("Breakot")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"did you mean Catch"):
        resolve_game("Cacth")
    assert make_env("catch", train=False).action_space.n == 3  # the canonical name plays the toy game
    with pytest.raises(ValueError, match="unknown game"):
        make_atari_env("Pacmann", train=True)
    with pytest.raises(ValueError, match="unknown game 'NoSuchGame'"):
        make_env("NoSuchGame", train=True)


class Checkers(gym.Env):
    """A stand-in user game: 96x80 grayscale frames, 2 actions."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(0, 255, (96, 80), np.uint8)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.full((96, 80), 10, np.uint8), {}

    def step(self, action):
        return np.full((96, 80), 200 if action else 10, np.uint8), 1.0, False, False, {}


def test_any_gymnasium_image_game_is_resized_to_64x64_rgb():
    gym.register("dreamarcade-test/Checkers-v0", entry_point=Checkers)
    env = make_env("dreamarcade-test/Checkers-v0", train=True, seed=0)
    obs, info = env.reset()
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and info["original_obs"].shape == (96, 80)
    obs, *_ = env.step(1)
    assert (obs == 200).all()
    with pytest.raises(ValueError, match="needs uint8 image observations"):
        make_env("CartPole-v1", train=True)


def test_other_ale_games_get_the_same_protocol():
    env = make_env("ALE/SpaceInvaders-v5", train=True, seed=0)
    obs, info = env.reset()
    assert obs.shape == (64, 64, 3) and info["original_obs"].shape == (210, 160, 3)
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == 0.0
    assert env.unwrapped.get_action_meanings()[:2] == ["NOOP", "FIRE"]
    assert 1 <= info["episode_frame_number"] <= 30
