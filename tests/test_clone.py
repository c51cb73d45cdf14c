"""Behaviour cloning: the actor-critic learns recorded actions; `dreamarcade clone` on real scripted episodes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.cli import main
from model.actor_critic import ActorCritic, ActorCriticConfig
from training.clone import CloneConfig, Cloner, discounted_returns
from training.episode_store import Episode, EpisodeStore
from training.clone import make_optimizer
from training.scripted import FIRE, collect_demonstrations, collect_scripted
from weights.format import load_agent_file, read_weights_info

pytestmark = pytest.mark.usefixtures("one_thread")
SHIPPED = "weights/shipped/Breakout.safetensors"


def small_actor_critic(num_actions=4):
    torch.manual_seed(0)
    ac = ActorCritic(ActorCriticConfig(lstm_dim=16, channels=(8, 8), down=(True, True)), num_actions, img_size=16)
    return ac


def test_lstm_sequence_gives_forward_step_by_step():
    ac = small_actor_critic()
    for head in (ac.actor_linear, ac.critic_linear):  # zero at the start: make them count
        torch.nn.init.normal_(head.weight)
    obs = torch.rand(3, 5, 3, 16, 16) * 2 - 1
    hs, (h, c) = ac.lstm_sequence(obs)
    logits, value = ac.actor_linear(hs), ac.critic_linear(hs).squeeze(-1)
    state = None
    for t in range(5):
        step_logits, step_value, state = ac(obs[:, t], state)
        torch.testing.assert_close(logits[:, t], step_logits)
        torch.testing.assert_close(value[:, t], step_value)
    torch.testing.assert_close(h, state[0])
    torch.testing.assert_close(c, state[1])


def test_discounted_returns_count_signs_up_to_the_end():
    rew = np.array([0.0, 4.0, 0.0, 1.0, 7.0])
    end = np.array([0, 0, 0, 1, 0])  # a store's episode ends once; an end mid-way stops the sum there
    np.testing.assert_allclose(discounted_returns(rew, end, 0.5), [0.625, 1.25, 0.5, 1.0, 1.0])


def dot_episodes(store: EpisodeStore, n: int, length: int, rng: np.random.Generator) -> None:
    """Episodes of 16x16 frames with a white dot; the action is RIGHT (2) when the dot is on the right half, else
    LEFT (3), and a right-half frame earns a reward."""
    for _ in range(n):
        cols = rng.integers(0, 14, size=length + 1)
        obs = np.zeros((length + 1, 3, 16, 16), dtype=np.uint8)
        for t, x in enumerate(cols):
            obs[t, :, 6:9, x:x + 3] = 255
        act = np.where(cols[:-1] >= 7, 2, 3)
        store.add(Episode(obs=obs[:-1], act=act, rew=(act == 2).astype(np.float32), end=np.eye(length)[-1],
                          trunc=np.zeros(length), final_obs=obs[-1]))


def test_cloning_learns_the_actions_and_their_returns(tmp_path):
    store = EpisodeStore(tmp_path / "dots")
    dot_episodes(store, 12, 30, np.random.default_rng(0))
    ac = small_actor_critic()
    cfg = CloneConfig(batch_size=16, seq_length=6, burn_in=2, gamma=0.5, lr=3e-3, lstm_lr=3e-3)
    cloner = Cloner(ac, EpisodeStore(tmp_path / "dots", static=True), cfg, seed=0)
    first = cloner.update()
    assert first["loss_actions"] == pytest.approx(np.log(4), rel=1e-3)  # uniform at the start (zero-initialised heads)
    for _ in range(300):
        last = cloner.update()
    assert last["accuracy"] > 0.95 and last["loss_actions"] < 0.25
    assert last["loss_values"] < 0.5 * first["loss_values"]


def test_clone_command_teaches_the_actor_critic_only_and_resumes(tmp_path, capsys):
    data = tmp_path / "data"
    collect_scripted("Breakout", EpisodeStore(data), 300, seed=0, progress=False)
    out = tmp_path / "cloned.safetensors"
    args = ["clone", "--dataset", str(data), "--out", str(out), "--batch-size", "2", "--seq-length", "6",
            "--save-every", "1", "--threads", "1", "--no-progress"]
    assert main([*args, "--updates", "2"]) == 0
    assert "cloned in 2 updates" in capsys.readouterr().out
    shipped, cloned = load_agent_file(SHIPPED), load_agent_file(out)
    for name in ("denoiser", "rew_end"):
        for (key, a), b in zip(getattr(shipped, name).state_dict().items(), getattr(cloned, name).state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=key)
    changed = [not torch.equal(a, b) for a, b in zip(shipped.actor_critic.state_dict().values(),
                                                      cloned.actor_critic.state_dict().values())]
    assert any(changed)
    info = read_weights_info(out)["info"]
    assert info["actor_critic"]["updates"] == 2 and info["actor_critic"]["cloned_from"] == str(data)
    assert info["game"] == "Breakout"
    assert not {key for key in info if key.startswith("actor_critic_")}  # the shipped agent's own story is gone

    assert main([*args, "--updates", "3"]) == 2  # an earlier run's checkpoint is never overwritten silently
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--updates", "3", "--resume"]) == 0
    assert read_weights_info(out)["info"]["actor_critic"]["updates"] == 3


def test_clone_command_refuses_episodes_of_another_game(tmp_path, capsys):
    store = EpisodeStore(tmp_path / "other")
    frames = np.zeros((4, 3, 64, 64), dtype=np.uint8)
    store.add(Episode(obs=frames[:3], act=[0, 5, 1], rew=np.zeros(3), end=[0, 0, 1], trunc=np.zeros(3),
                      final_obs=frames[3]))
    out = tmp_path / "x.safetensors"
    assert main(["clone", "--dataset", str(tmp_path / "other"), "--out", str(out), "--no-progress"]) == 2
    assert "has action 5, but the agent has 4 actions" in capsys.readouterr().err
    assert not out.exists()
    assert main(["clone", "--dataset", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "none does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["clone", "--dataset", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "no episodes" in capsys.readouterr().err


def test_the_lstm_learns_at_its_own_rate():
    ac = small_actor_critic()
    opt = make_optimizer(ac, CloneConfig(lr=1e-3, lstm_lr=1e-4))
    lstm = {id(p) for p in ac.lstm.parameters()}
    rates = {id(p): group["lr"] for group in opt.param_groups for p in group["params"]}
    assert rates.keys() == {id(p) for p in ac.parameters()}  # every parameter, once
    assert all(rate == (1e-4 if key in lstm else 1e-3) for key, rate in rates.items())


def test_demonstrations_are_labelled_with_the_undistracted_teacher(tmp_path):
    store = EpisodeStore(tmp_path / "distracted")
    stats = collect_demonstrations("Breakout", store, 400, seed=3, skill=(0.0, 0.0), progress=False)
    assert stats["steps"] == store.num_steps >= 400 and stats["episodes"] == store.num_episodes
    assert store[0].act[0] == FIRE  # the game starts with no ball in play: the teacher serves
    labels = np.concatenate([store[e].act for e in range(len(store))])
    assert set(np.unique(labels)) <= {0, 1, 2, 3} and len(np.unique(labels)) >= 3
    # the labels are not the actions taken: a player always distracted (random actions held a few steps)
    # agrees with them far less than one always on the ball, who differs only in where it aims
    focused = collect_demonstrations("Breakout", EpisodeStore(tmp_path / "focused"), 400, seed=3,
                                     skill=(1.0, 1.0), progress=False)
    assert stats["agreement"] < 0.5 < 0.7 < focused["agreement"]


def test_demonstrations_are_full_games_or_lives(tmp_path):
    """Full games, as the agent plays them: a demonstration holds the serves after lost lives, each a run of
    FIRE labels; cut at each lost life (the training env's episodes), it holds one serve, at its start."""
    def serves(act):
        fire = act == FIRE
        return int(fire[0]) + int(np.sum(fire[1:] & ~fire[:-1]))

    games = EpisodeStore(tmp_path / "games")
    collect_demonstrations("Breakout", games, 300, seed=4, skill=(0.0, 0.0), progress=False)
    assert serves(games[0].act) >= 3 and games[0].end[-1] == 1 and games[0].end[:-1].sum() == 0
    lives = EpisodeStore(tmp_path / "lives")
    collect_demonstrations("Breakout", lives, 300, seed=4, skill=(0.0, 0.0), full_games=False, progress=False)
    assert len(lives) > len(games) and max(serves(lives[e].act) for e in range(len(lives))) == 1


def test_clone_command_with_the_scripted_teacher_plays_its_demonstrations_once(tmp_path, capsys):
    out = tmp_path / "cloned.safetensors"
    args = ["clone", "--scripted-teacher", "--fresh-agent", "--demo-steps", "200", "--out", str(out),
            "--batch-size", "2", "--seq-length", "6", "--threads", "1", "--no-progress"]
    assert main([*args, "--updates", "1"]) == 0
    printed = capsys.readouterr().out
    assert "labelled with its undistracted actions" in printed and "cloned in 1 updates" in printed
    demos = sorted((tmp_path / "cloned.safetensors.demos").glob("*.npz"))
    stamps = [p.stat().st_mtime_ns for p in demos]
    assert demos and read_weights_info(out)["info"]["actor_critic"]["cloned_from"] == "scripted teacher"
    assert main([*args, "--updates", "2", "--resume"]) == 0  # the demonstrations are read again, not replayed
    assert "labelled" not in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in demos] == stamps
    assert read_weights_info(out)["info"]["actor_critic"]["updates"] == 2


def test_clone_command_needs_one_teacher(tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    with pytest.raises(SystemExit):
        main(["clone", "--out", str(out)])
    assert "--scripted-teacher" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["clone", "--scripted-teacher", "--dataset", str(tmp_path), "--out", str(out)])
    assert not out.exists()
