"""The scripted Breakout player: a data source that rallies where random play does not (real ALE)."""
from __future__ import annotations

import numpy as np

from app.cli import main
from training.collect import Collector, RandomPolicy, VecSource
from training.episode_store import EpisodeStore
from training.scripted import collect_scripted
from training.serve_check import count_balls


def test_the_follower_rallies_and_random_play_does_not(tmp_path):
    scripted = EpisodeStore(tmp_path / "scripted")
    stats = collect_scripted("Breakout", scripted, 1500, seed=0, skill=(1.0, 1.0), progress=False)
    assert stats["steps"] == scripted.num_steps >= 1500 and stats["episodes"] == scripted.num_episodes
    rand = EpisodeStore(tmp_path / "random")
    collector = Collector(VecSource("Breakout", 1, train=True), rand, seed=0)
    collector.collect(RandomPolicy(4, seed=0), num_steps=1500)
    collector.close()
    per_step = lambda store: store.returns().sum() / store.num_steps
    assert per_step(scripted) > 4 * per_step(rand) and per_step(scripted) > 0.02
    assert max(len(scripted[i]) for i in range(len(scripted))) > 200  # long rallies
    for i in range(len(scripted)):
        ep = scripted[i]
        assert ep.end[-1] or ep.trunc[-1]  # one life per episode, as the training env ends it
        assert not ep.end[:-1].any()


def test_collect_command(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["collect", "--game", "breakout", "--steps", "200", "--out", str(out), "--skill", "0.5", "0.9"]) == 0
    store = EpisodeStore(out, static=True)
    assert store.num_steps >= 200 and "Breakout" in capsys.readouterr().out
    assert set(np.unique(np.concatenate([store[i].act for i in range(len(store))]))) <= {0, 1, 2, 3}
    assert main(["collect", "--game", "Pong", "--out", str(out)]) == 2
    assert "no scripted player for Pong" in capsys.readouterr().err


def test_fire_in_flight_presses_fire_during_rallies_and_no_second_ball_comes(tmp_path, capsys):
    """--fire-in-flight Q: FIRE replaces the player's move with chance Q while the ball is in play; the real game
    ignores it, and the frames say so: FIRE with the ball in flight, and still one ball at the next step."""
    out = tmp_path / "fire"
    assert main(["collect", "--steps", "600", "--fire-in-flight", "0.5", "--seed", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    fired = int(printed.split("FIRE in flight ")[1].split()[0])
    store = EpisodeStore(out, static=True)
    assert 0.3 * store.num_steps < fired < 0.7 * store.num_steps
    in_flight = 0
    for i in range(len(store)):
        ep = store[i]
        for t in range(len(ep) - 1):
            if ep.act[t] == 1 and _ball_in_flight(ep.obs[t]):
                in_flight += 1
                assert count_balls(ep.obs[t + 1]) <= 1
    assert in_flight > 0.1 * store.num_steps
    plain = collect_scripted("Breakout", EpisodeStore(tmp_path / "plain"), 300, seed=3, progress=False)
    assert plain["fired_in_flight"] == 0
    assert main(["collect", "--steps", "10", "--fire-in-flight", "1.5", "--out", str(out)]) == 2
    assert "--fire-in-flight needs 0 <= Q <= 1" in capsys.readouterr().err


def _ball_in_flight(frame: np.ndarray) -> bool:
    """A (3, 64, 64) frame shows the ball between the bricks and the paddle (the board there is black)."""
    return count_balls(frame) > 0


def test_serve_clips_wait_then_serve_with_a_real_context(tmp_path, capsys):
    out = tmp_path / "serves"
    assert main(["collect", "--game", "Breakout", "--serves", "8", "--seed", "3", "--out", str(out)]) == 0
    assert "8 serve clips" in capsys.readouterr().out
    store = EpisodeStore(out, static=True)
    assert store.num_episodes == 8
    waits = []
    for i in range(len(store)):
        ep = store[i]
        w = int(np.flatnonzero(ep.act == 1)[0])  # the serve: the first FIRE
        waits.append(w)
        assert not any(_ball_in_flight(f) for f in ep.obs[:w + 1])  # no ball while waiting
        assert _ball_in_flight(ep.obs[w + 1])  # the real game serves at the next step
        assert len(ep) == w + 1 + 12 and ep.trunc[-1] and not ep.end.any()  # a clip: cut, not a lost life
    assert max(waits) >= 4 and min(waits) <= 10  # some serves come after 4 real frames without a ball
    short = tmp_path / "short"
    assert main(["collect", "--game", "Breakout", "--serves", "3", "--serve-steps", "2", "--out", str(short)]) == 0
    store = EpisodeStore(short, static=True)
    assert all(len(store[i]) == int(np.flatnonzero(store[i].act == 1)[0]) + 3 for i in range(3))
    assert main(["collect", "--game", "Breakout", "--serves", "0", "--out", str(out)]) == 2
    assert "--serves must be at least 1" in capsys.readouterr().err


def test_wall_clips_press_the_paddle_into_a_wall_then_move_at_random(tmp_path, capsys):
    from training.scripted import LEFT, RIGHT
    from training.serve_check import paddle_at_wall

    out = tmp_path / "walls"
    assert main(["collect", "--game", "Breakout", "--walls", "16", "--seed", "5", "--out", str(out)]) == 0
    assert "16 wall clips" in capsys.readouterr().out
    store = EpisodeStore(out, static=True)
    assert store.num_episodes == 16
    sides, after_wall = set(), []
    for i in range(len(store)):
        ep = store[i]
        into = int(ep.act[0])
        sides.add(into)
        assert into in (RIGHT, LEFT) and ep.trunc[-1] != ep.end[-1]  # cut after the random moves, or a lost life
        run = int(np.argmin(ep.act == into))  # the run into the wall and the presses held there
        if into == RIGHT and not ep.end.any():
            assert len(ep) - run <= 10 and paddle_at_wall(ep.obs[run])  # at the right wall when the random moves begin
            after_wall.extend(ep.act[run:].tolist())
    assert sides == {RIGHT, LEFT}
    assert set(after_wall) == {0, 1, 2, 3}
    assert main(["collect", "--walls", "0", "--out", str(out)]) == 2
    assert "--walls must be at least 1" in capsys.readouterr().err
    assert main(["collect", "--walls", "2", "--serves", "2", "--out", str(out)]) == 2
    assert "one of them per run" in capsys.readouterr().err


def test_hold_one_with_no_skill_is_uniform_random_play(tmp_path, capsys):
    """--skill 0 0 --hold 1 1 draws a new action every step (as eval --fidelity's random policy); the default
    distracted player holds its moves 2-6 steps."""
    repeats = {}
    for name, hold in (("uniform", ["--hold", "1", "1"]), ("held", [])):
        out = tmp_path / name
        assert main(["collect", "--steps", "600", "--out", str(out), "--skill", "0", "0", *hold]) == 0
        store = EpisodeStore(out, static=True)
        act = [store[i].act for i in range(len(store))]
        same = sum(int((a[1:] == a[:-1]).sum()) for a in act) / sum(len(a) - 1 for a in act)
        repeats[name] = same
        assert set(np.unique(np.concatenate(act))) == {0, 1, 2, 3}
    assert 0.15 < repeats["uniform"] < 0.35 < 0.6 < repeats["held"]
    assert main(["collect", "--steps", "10", "--out", str(tmp_path / "x"), "--hold", "3", "2"]) == 2
    assert "--hold needs 1 <= MIN <= MAX" in capsys.readouterr().err


def test_the_paddle_leaves_the_right_wall_on_the_third_left_press():
    """What no frame shows, and why uniform random play is worth its data: pushed into the right wall, the real
    paddle stays for two LEFT presses, NOOPs between them or not, and moves on the third."""
    from training.atari_env import make_atari_env
    from training.scripted import LEFT, NOOP, RIGHT
    from training.serve_check import paddle_at_wall

    def at_wall(frame) -> bool:  # frame (H, W, 3), as the env gives it
        return bool(paddle_at_wall(np.asarray(frame).transpose(2, 0, 1)))

    env = make_atari_env("Breakout", train=True, seed=0)
    for moves in ([LEFT] * 3, [LEFT, NOOP, LEFT, NOOP, LEFT], [LEFT, NOOP, NOOP, LEFT, NOOP, NOOP, LEFT]):
        env.reset(seed=0)
        for _ in range(15):
            frame, *_ = env.step(RIGHT)
        assert at_wall(frame)
        pressed = 0
        for a in moves[:-1]:
            frame, *_ = env.step(a)
            pressed += a == LEFT
            assert at_wall(frame), (moves, pressed)
        frame, *_ = env.step(moves[-1])
        assert not at_wall(frame), moves
    env.close()
