"""Scripted players that read the game's RAM: data for world-model training, and a teacher for cloning.

A world model learns what it is shown. Random play in Breakout serves, loses the ball and hardly ever hits
it, so the paddle never meets the ball high up the screen and no rally, no brick broken high, ever reaches
the dataset. `BreakoutFollower` plays as a fair human does: it serves, keeps the paddle under the ball
(aiming a little off centre, so the ball leaves at varied angles), and with a per-episode probability acts
at random for a few steps, so it also misses, moves everywhere and loses lives.

`collect_scripted(game, store, num_steps)` plays the training env (the Atari 100k protocol, life loss ends
an episode) and writes the episodes to an `EpisodeStore`, ready for `dreamarcade train --dataset`.
`collect_serves(game, store, num_clips)` records serves with a real context: short clips that start as a life
begins, wait a few steps, serve and follow the ball; the rest of each life is played (and lost) unrecorded.
`collect_demonstrations` plays the same way but labels each frame with the undistracted player's action: an
agent's lessons for `dreamarcade clone --scripted-teacher`, never a world model's data.
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from training.atari_env import make_atari_env
from training.episode_store import Episode, EpisodeStore
from weights.errors import UserError

# Breakout RAM (ALE): paddle x at 72, ball x at 99, ball y at 101 (0 while no ball is in play).
# Measured against the 210x160 frame: paddle centre column = ram[72] - 39, ball column = ram[99] - 48.
_PADDLE_X, _BALL_X, _BALL_Y = 72, 99, 101
_PADDLE_TO_BALL = -9  # ram[72] - ram[99] when the paddle's centre is under the ball
_PADDLE_Y = 181  # ram[101] of a ball at the paddle's row
_WALL_LEFT, _WALL_RIGHT = 57, 198  # ram[99] of a ball touching the side walls
NOOP, FIRE, RIGHT, LEFT = range(4)  # Breakout's minimal action set


class BreakoutFollower:
    """Follows the ball with the paddle; `skill` in [0, 1] is the chance of acting on the ball each step
    (otherwise a random action, held for U{hold} steps as a distracted player does; skill 0 and hold (1, 1) is
    uniform random play, a new action every step)."""

    def __init__(self, rng: np.random.Generator, skill: float = 0.9, aim_range: int = 7,
                 hold: tuple[int, int] = (2, 6)):
        self.rng, self.skill, self.hold = rng, skill, hold
        self.aim, self.aim_range = 0, aim_range  # each serve aims off-centre by up to aim_range
        self.last: tuple[int, int] | None = None  # the ball's (x, y) one step ago
        self.random_left, self.random_act = 0, NOOP

    @staticmethod
    def in_play(ram: np.ndarray) -> bool:
        """A ball is in flight (FIRE would do nothing)."""
        return bool(ram[_BALL_Y] != 0)

    def act(self, ram: np.ndarray) -> int:
        if self.random_left > 0:
            self.random_left -= 1
            return self.random_act
        if self.rng.random() > self.skill:
            self.random_left = int(self.rng.integers(self.hold[0], self.hold[1] + 1)) - 1  # steps after this one
            self.random_act = int(self.rng.integers(4))
            return self.random_act
        if not self.in_play(ram):  # no ball in play: serve, and pick where to hit the next one
            self.last = None
            self.aim = int(self.rng.integers(-self.aim_range, self.aim_range + 1))
            return FIRE
        x, y = int(ram[_BALL_X]), int(ram[_BALL_Y])
        target = x
        if self.last is not None and y > self.last[1]:  # falling: where it will cross the paddle's row
            dx, dy = x - self.last[0], y - self.last[1]
            target = _reflect(x + dx * (_PADDLE_Y - y) / dy)
        self.last = (x, y)
        diff = target + _PADDLE_TO_BALL + self.aim - int(ram[_PADDLE_X])
        return RIGHT if diff > 10 else LEFT if diff < -10 else NOOP  # the paddle drifts ~20 a step: no twitching


def teacher(game: str) -> "BreakoutFollower":
    """The game's scripted player undistracted and aiming at the centre: the clean labels of `collect_demonstrations`."""
    return POLICIES[game](np.random.default_rng(0), skill=1.0, aim_range=0)


def _reflect(x: float) -> int:
    """A straight path's x folded back between the side walls."""
    width = _WALL_RIGHT - _WALL_LEFT
    x = (x - _WALL_LEFT) % (2 * width)
    return int(_WALL_LEFT + (x if x <= width else 2 * width - x))


POLICIES = {"Breakout": BreakoutFollower}


def check_game(game: str) -> None:
    """Raises UserError where `game` (a resolved name) has no scripted player."""
    if game not in POLICIES:
        raise UserError(f"no scripted player for {game}; scripted play exists for: {', '.join(POLICIES)}")


def collect_scripted(game: str, store: EpisodeStore, num_steps: int, seed: int = 0,
                     skill: tuple[float, float] = (0.93, 0.995), fire_in_flight: float = 0.0,
                     hold: tuple[int, int] = (2, 6), progress: bool = True) -> dict:
    """Plays `num_steps` real steps of `game` with its scripted player into `store` -> stats.

    Each episode (one life, as in the training env) draws its skill uniformly from `skill`. With the ball in play,
    FIRE replaces the player's action with chance `fire_in_flight`: it does nothing then in the real game, and a
    world model shown the serves alone (`collect_serves`) learns that FIRE always brings a ball, a second one too.
    A distracted player holds its random action for U{hold} steps; `skill` (0, 0) with `hold` (1, 1) plays
    uniformly at random, as `eval --fidelity --policy random` does: a new action every step, which presses against
    a wall and off it again as held moves rarely do (Breakout's paddle, pushed into a wall, needs three LEFT presses
    to leave the right one, NOOPs between them or not, and RIGHT winds it back: state no frame shows)."""
    if not 0 <= fire_in_flight <= 1:
        raise ValueError(f"fire_in_flight must be in [0, 1], got {fire_in_flight}")
    if not 1 <= hold[0] <= hold[1]:
        raise ValueError(f"hold must be 1 <= MIN <= MAX, got {hold}")
    returns, lengths, _, fired = _play(game, store, num_steps, seed, skill, train=True, teacher_labels=False,
                                       desc=f"scripted {game}", progress=progress, fire_in_flight=fire_in_flight,
                                       hold=hold)
    return {"steps": int(np.sum(lengths)), "episodes": len(returns), "return_mean": float(np.mean(returns)),
            "return_max": float(np.max(returns)), "length_mean": float(np.mean(lengths)), "fired_in_flight": fired}


def collect_serves(game: str, store: EpisodeStore, num_clips: int, seed: int = 0, wait: tuple[int, int] = (0, 10),
                   follow: int = 12, progress: bool = True) -> dict:
    """`num_clips` serves of `game` into `store`, each a short episode from the first frame of a life: the
    player moves at random (NOOP, RIGHT, LEFT) for U{wait} steps, serves (FIRE), follows the ball for `follow`
    steps, and the clip ends there (truncated). The rest of the life is played unrecorded, missing the ball.

    Why: in real play FIRE serves only once the life counter has dropped. The scripted player (and a human)
    presses FIRE as soon as the ball is gone, and the ~6 steps before the counter drops, where FIRE does
    nothing, sit at the end of the lost life's episode; the serve itself then comes at the next episode's first
    step, with a padded context. A world model trained on that sees "4 frames without a ball, FIRE -> still no
    ball" far more often than a serve (collect's scripted play: 25 to 5; random play: 390 to 149), so it learns
    that FIRE does not serve, and a dream that has lost its ball never gets one back. These clips show the serve
    after a real wait. -> stats (clips, steps, serves seen: clips whose ball appeared the step after FIRE)."""
    check_game(game)
    if not 0 <= wait[0] <= wait[1]:
        raise ValueError(f"wait must be 0 <= MIN <= MAX, got {wait}")
    rng = np.random.default_rng(seed)
    env = make_atari_env(game, train=True, seed=seed)
    ale = env.unwrapped.ale
    steps = served = 0
    obs, _ = env.reset()
    with tqdm(total=num_clips, desc=f"serves {game}", unit="clip", disable=not progress) as bar:
        for _ in range(num_clips):
            player = POLICIES[game](rng, skill=float(rng.uniform(0.9, 1.0)))
            moves = [int(rng.choice([NOOP, RIGHT, LEFT]))] * int(rng.integers(wait[0], wait[1] + 1))
            for i in range(1, len(moves)):  # a wait's moves are held for a few steps, as a player does
                moves[i] = moves[i - 1] if rng.random() < 0.7 else int(rng.choice([NOOP, RIGHT, LEFT]))

            def act_at(t: int) -> int | None:
                nonlocal served
                if t == len(moves) + 1:  # the step after FIRE: did the ball come?
                    served += int(player.in_play(ale.getRAM()))
                if t > len(moves) + follow:
                    return None
                return moves[t] if t < len(moves) else FIRE if t == len(moves) else player.act(ale.getRAM())

            obs, n, done = _record_clip(env, store, obs, act_at)
            steps += n
            bar.update(1)
            while not done:  # lose the rest of the life, unrecorded: keep the paddle away from the ball
                ram = ale.getRAM()
                paddle, ball = int(ram[_PADDLE_X]), int(ram[_BALL_X])
                # run left unless the ball is well left of the paddle or the paddle is at the left wall
                run_left = paddle + _PADDLE_TO_BALL > ball - 20 and paddle > 60
                act = (LEFT if run_left else RIGHT) if player.in_play(ram) else FIRE
                _, _, end, trunc, _ = env.step(act)
                done = end or trunc
            obs, _ = env.reset()  # the next life's first frame (or a new game's)
    env.close()
    return {"clips": num_clips, "steps": steps, "served": served}


def collect_walls(game: str, store: EpisodeStore, num_clips: int, seed: int = 0, lead: tuple[int, int] = (0, 100),
                  steps: int = 10, right: float = 0.75, progress: bool = True) -> dict:
    """`num_clips` clips of `game`'s paddle pressed into a side wall into `store`: the scripted player plays
    U{lead} steps unrecorded (a rally, bricks broken), then the clip records the paddle run into the right wall
    (chance `right`) or the left one, held there 0-3 more steps, and `steps` uniformly random actions after
    (truncated; a lost life ends it early).

    Why: pushed into the right wall Breakout's paddle stays for two LEFT presses and leaves on the third (RIGHT
    winds it back; the left wall lets go at once), state that only the context's actions show, and a world model
    weighing every appearing pixel heavily draws the paddle leaving on the second press (see the README). -> stats
    (clips, steps, wall_steps: recorded steps taken with the paddle at the wall)."""
    check_game(game)
    if not 0 <= lead[0] <= lead[1]:
        raise ValueError(f"lead must be 0 <= MIN <= MAX, got {lead}")
    rng = np.random.default_rng(seed)
    env = make_atari_env(game, train=True, seed=seed)
    ale = env.unwrapped.ale
    total = at_wall = 0
    obs, _ = env.reset()
    with tqdm(total=num_clips, desc=f"walls {game}", unit="clip", disable=not progress) as bar:
        for _ in range(num_clips):
            player = POLICIES[game](rng, skill=float(rng.uniform(0.9, 1.0)))
            for _ in range(int(rng.integers(lead[0], lead[1] + 1))):  # unrecorded play before the clip
                obs, _, end, trunc, _ = env.step(player.act(ale.getRAM()))
                if end or trunc:
                    obs, _ = env.reset()
            into = RIGHT if rng.random() < right else LEFT
            extra, random_left, last_x, arrived = int(rng.integers(0, 4)), steps, -1, False

            def act_at(t: int) -> int | None:
                nonlocal extra, random_left, last_x, arrived, at_wall
                x = int(ale.getRAM()[_PADDLE_X])
                arrived = arrived or x == last_x  # the last press into the wall did not move it
                if not arrived:
                    last_x = x
                    return into
                if extra > 0:  # at the wall: press on into it a few more times
                    extra -= 1
                    return into
                if random_left == 0:
                    return None
                random_left -= 1  # then play at random from there
                at_wall += 1
                return int(rng.integers(4))

            obs, n, done = _record_clip(env, store, obs, act_at)
            total += n
            bar.update(1)
            if done:
                obs, _ = env.reset()
    env.close()
    return {"clips": num_clips, "steps": total, "wall_steps": at_wall}


def _record_clip(env, store: EpisodeStore, obs: np.ndarray, act_at) -> tuple[np.ndarray, int, bool]:
    """Plays `act_at(t)` for t = 0, 1, ... from `obs` until it gives None (the clip is cut there) or the life ends,
    and writes the clip to `store` as one episode -> (the env's next observation, steps, whether the life ended)."""
    frames, acts, rews, ends = [], [], [], []
    done = False
    while (act := act_at(len(acts))) is not None:
        next_obs, rew, end, trunc, _ = env.step(act)
        frames.append(obs.transpose(2, 0, 1)), acts.append(act), rews.append(rew), ends.append(end)
        obs = next_obs
        if end or trunc:
            done = True
            break
    truncs = [False] * len(acts)
    truncs[-1] = not ends[-1]
    store.add(Episode(obs=np.stack(frames), act=np.array(acts), rew=np.array(rews), end=np.array(ends),
                      trunc=np.array(truncs), final_obs=obs.transpose(2, 0, 1)))
    return obs, len(acts), done


def collect_demonstrations(game: str, store: EpisodeStore, num_steps: int, seed: int = 0,
                           skill: tuple[float, float] = (0.6, 0.95), full_games: bool = True,
                           progress: bool = True) -> dict:
    """Demonstrations for behaviour cloning (`training.clone`): `num_steps` real steps of `game` played by its
    distracted scripted player, each labelled with what the undistracted `teacher` would do on that frame.

    The episodes' `act` holds the TEACHER's actions, not the ones taken: such a store is for cloning only,
    never for a world model. Labelling every frame the player reaches, its mistakes included, with the clean
    action (DART, Laskey et al. 2017) shows the learner how to recover from the states its own errors lead to;
    cloning the taken actions instead teaches the distractions and the random aims too (on Breakout the
    cloned policy then stays at the most common action).

    `full_games`: an episode is a whole game, as the agent plays it (`play`, `eval`), so the lessons include the
    serve after each lost life with the LSTM remembering the rally before; otherwise a life, as the training env
    cuts them (an agent cloned so learns the serve only from a fresh LSTM and, in a full game, waits hundreds
    of steps to serve again). -> stats (steps, episodes, agreement of taken and teacher actions)."""
    returns, lengths, agree, _ = _play(game, store, num_steps, seed, skill, train=not full_games,
                                       teacher_labels=True, desc=f"demonstrations {game}", progress=progress)
    steps = int(np.sum(lengths))
    return {"steps": steps, "episodes": len(returns), "agreement": agree / max(steps, 1)}


def _play(game: str, store: EpisodeStore, num_steps: int, seed: int, skill: tuple[float, float], train: bool,
          teacher_labels: bool, desc: str, progress: bool, fire_in_flight: float = 0.0,
          hold: tuple[int, int] = (2, 6)) -> tuple[list[float], list[int], int, int]:
    """The scripted player plays episodes into `store` until `num_steps` steps, each episode with a skill drawn
    from `skill` (distractions held U{hold} steps); their `act` is what it took, or with `teacher_labels` what the
    `teacher` would take; with the ball in play FIRE replaces the player's action with chance `fire_in_flight`.
    -> (returns, lengths, steps where the two agree, FIREs pressed so)."""
    check_game(game)
    rng = np.random.default_rng(seed)
    env = make_atari_env(game, train=train, seed=seed)
    ale = env.unwrapped.ale
    returns, lengths, agree, fired = [], [], 0, 0
    obs, _ = env.reset()
    with tqdm(total=num_steps, desc=desc, unit="step", disable=not progress) as bar:
        while sum(lengths) < num_steps:
            player = POLICIES[game](rng, skill=float(rng.uniform(*skill)), hold=hold)
            clean = teacher(game) if teacher_labels else None
            frames, acts, rews, ends, truncs = [], [], [], [], []
            while True:
                ram = ale.getRAM()
                act = player.act(ram)
                if fire_in_flight and player.in_play(ram) and rng.random() < fire_in_flight:
                    act = FIRE
                    fired += 1
                label = clean.act(ram) if clean is not None else act
                agree += label == act
                next_obs, rew, end, trunc, _ = env.step(act)
                frames.append(obs.transpose(2, 0, 1))
                acts.append(label), rews.append(rew), ends.append(end), truncs.append(trunc)
                obs = next_obs
                if end or trunc:
                    break
            store.add(Episode(obs=np.stack(frames), act=np.array(acts), rew=np.array(rews), end=np.array(ends),
                              trunc=np.array(truncs), final_obs=obs.transpose(2, 0, 1)))
            returns.append(float(np.sum(rews)))
            lengths.append(len(acts))
            bar.update(len(acts))
            obs, _ = env.reset()  # after a life loss the training env continues the same game
    env.close()
    return returns, lengths, agree, fired
