"""Does FIRE serve in the dream when it serves in the real game, and only then? (`eval --fidelity`, "serves")

Breakout's FIRE brings a ball at the next step when none is in play (a life's first frames), at one of four
places the frames cannot tell; with a ball in flight it does nothing. A world model that has not learned the
first never serves, so a dream that lost its ball stays empty; one that has not learned the second draws a
new ball at every FIRE. Both cost the random-action PSNR of `eval --fidelity` without showing where, so this
check asks each question on its own, from real contexts and with the real actions:
- serve: 4 real frames without a ball (a life's start, a wait), FIRE, then the scripted player: the share of
  dreams that show a ball 1, 2, ... steps after FIRE (the real game: all of them from step 1);
- the same 4 frames with NOOP instead of FIRE (and nothing else changed): the share with a ball (real: none);
- in flight: 4 real frames with one ball flying, then FIRE at every step: the share of dreams that show two
  balls or more (real: none), and, where the real ball is still in the region, the share that draw a ball and
  one within `NEAR` pixels of it (does the dream's ball fly where the real one does).
- the paddle at the wall: 4 real frames of a new game with the paddle pushed into the right wall (RIGHT at each),
  then LEFT twice and NOOPs, or LEFT three times and NOOPs: the share of dreams with the paddle still at the wall
  (one context, the dreams differ in the sampler's noise). The real
  paddle winds up against the wall (ALE's paddle dial turns on past where the game draws it) and leaves it on the
  third LEFT press, a state no frame shows; a model that leaves on the second drifts from the real game for as long
  as the player stays there.
A ball is a blob of bright pixels between the bricks and the paddle (`count_balls`), where the board is black.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass

import numpy as np
import torch

from training.episode_store import EpisodeStore
from training.fidelity import FidelityConfig, Rollouts, imagine, strip_image
from training.scripted import FIRE, LEFT, NOOP, POLICIES, RIGHT, collect_serves

# rows and columns of a 64x64 frame between the lowest bricks and the paddle, inside the walls, per game
BALL_REGION = {"Breakout": (slice(30, 55), slice(4, 60))}
# the paddle's row and the columns left of where it rests against the right wall, per game (its red: R > 100, G < 100)
PADDLE_WALL = {"Breakout": (58, slice(3, 58))}
WALL_MOVES = {"two_left": (LEFT, LEFT, NOOP, NOOP, NOOP, NOOP), "three_left": (LEFT, LEFT, LEFT, NOOP, NOOP, NOOP)}
BRIGHT = 60  # a ball pixel: some channel above this (the board there is black; a ball is drawn at ~200)
NEAR = 3  # a dreamed ball "follows" the real one when their centres are at most this many pixels apart (each axis)


@dataclass(frozen=True)
class ServeCheckConfig:
    clips: int = 48  # real contexts of each kind
    steps: int = 6  # dreamed steps after the context
    seed: int = 0
    precision: str = "float32"
    denoising_steps: int | None = None  # None: the weights' own (`Agent.denoising_steps`)
    still_levels: float | None = None  # None: the weights' own (`Agent.still_levels`)


def has_serve_check(game: str) -> bool:
    return game in BALL_REGION and game in POLICIES


def count_balls(frames: torch.Tensor | np.ndarray, game: str = "Breakout") -> np.ndarray:
    """Balls in each frame (..., 3, 64, 64) uint8: blobs of bright pixels (8-connected) in the game's
    `BALL_REGION` -> int array of the leading shape."""
    return _counts(ball_centres(frames, game))


def _counts(centres: np.ndarray) -> np.ndarray:
    """Object array of ball-centre lists (`ball_centres`) -> int array of their lengths."""
    return np.vectorize(len, otypes=[int])(centres)


def ball_centres(frames: torch.Tensor | np.ndarray, game: str = "Breakout") -> np.ndarray:
    """The balls of each frame (..., 3, 64, 64) uint8 -> object array of the leading shape, each a list of
    (row, column) centres in frame coordinates (blobs as `count_balls`)."""
    rows, cols = BALL_REGION[game]
    frames = np.asarray(frames)
    bright = frames[..., rows, cols].max(-3) > BRIGHT  # (..., h, w)
    flat = bright.reshape(-1, *bright.shape[-2:])
    out = np.empty(len(flat), dtype=object)
    for i, mask in enumerate(flat):
        out[i] = [(y + rows.start, x + cols.start) for y, x in _blobs(mask)]
    return out.reshape(bright.shape[:-2])


def _blobs(mask: np.ndarray) -> list[tuple[float, float]]:
    """The centres of the 8-connected components of a small boolean image (a flood fill from each unvisited
    pixel)."""
    left = {(int(y), int(x)) for y, x in zip(*np.nonzero(mask))}
    centres = []
    while left:
        todo = [left.pop()]
        blob = []
        while todo:
            y, x = todo.pop()
            blob.append((y, x))
            for n in ((y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
                if n in left:
                    left.remove(n)
                    todo.append(n)
        centres.append(tuple(float(v) for v in np.mean(blob, axis=0)))
    return centres


def _near(real: np.ndarray, dreamed: np.ndarray, one: np.ndarray) -> np.ndarray:
    """Ball centres (N, T) of real frames and their dreams, and where the real frame has exactly one ball ->
    bool (N, T): where one of the dream's balls is within `NEAR` pixels of that real one."""
    near = np.zeros(real.shape, dtype=bool)
    for i in zip(*np.nonzero(one)):
        (ry, rx), = real[i]
        near[i] = any(abs(y - ry) <= NEAR and abs(x - rx) <= NEAR for y, x in dreamed[i])
    return near


def _rollouts(obs: np.ndarray, act: np.ndarray, context: int) -> Rollouts:
    """Real clips obs (N, C + H, 3, h, w) uint8, act (N, C + H) -> Rollouts (no padding, every step valid)."""
    n, steps = act.shape
    horizon = steps - context
    return Rollouts(torch.from_numpy(obs), torch.from_numpy(act).long(), torch.zeros(n, horizon),
                    torch.zeros(n, horizon, dtype=torch.bool), torch.ones(n, horizon, dtype=torch.bool),
                    torch.zeros(n, dtype=torch.long))


def record_serves(game: str, clips: int, context: int, steps: int, seed: int) -> Rollouts:
    """`clips` real serves (`collect_serves`, waiting at least `context` - 1 steps): `context` frames without a
    ball, FIRE taken at the last of them, then `steps` - 1 steps of the scripted player following the ball."""
    obs, act = [], []
    with tempfile.TemporaryDirectory() as tmp:
        store = EpisodeStore(tmp)
        collect_serves(game, store, clips, seed=seed, wait=(context - 1, context + 5), follow=steps,
                       progress=False)
        for i in range(len(store)):
            ep = store[i]
            fire = int(np.flatnonzero(ep.act == FIRE)[0])
            window = slice(fire - context + 1, fire + steps + 1)
            if window.stop <= len(ep.act):  # else the life ended during the clip (a whole clip is needed)
                obs.append(ep.obs[window])
                act.append(ep.act[window])
    return _rollouts(np.stack(obs), np.stack(act), context)


def record_in_flight(game: str, clips: int, context: int, steps: int, seed: int) -> Rollouts:
    """`clips` real contexts whose last frame shows one ball in flight, FIRE taken there and at each of the
    next `steps` - 1 steps. The scripted player plays in between, 5-60 steps of flight from one to the next."""
    from training.atari_env import make_atari_env

    rng = np.random.default_rng(seed)
    env = make_atari_env(game, train=True, seed=seed)
    ale = env.unwrapped.ale
    player = POLICIES[game](rng, skill=1.0)
    out_obs, out_act = [], []
    frame, _ = env.reset()
    frames, acts = [frame.transpose(2, 0, 1)], []  # this life so far: acts[i] was taken at frames[i]
    wait = int(rng.integers(5, 61))
    while len(out_obs) < clips:
        ram = ale.getRAM()
        if player.in_play(ram) and wait <= 0 and len(acts) >= context and count_balls(frames[-1], game) == 1:
            clip_obs, clip_act = frames[-context:], acts[-context + 1:]
            for _ in range(steps):
                frame, _, end, trunc, _ = env.step(FIRE)
                clip_act.append(FIRE)
                if end or trunc:
                    break
                clip_obs.append(frame.transpose(2, 0, 1))
            if len(clip_obs) == context + steps:  # the last frame's action is never used: NOOP
                out_obs.append(np.stack(clip_obs))
                out_act.append(np.array(clip_act + [NOOP]))
            frames, acts, wait = [frame.transpose(2, 0, 1)], [], int(rng.integers(5, 61))
        else:
            act = player.act(ram)
            frame, _, end, trunc, _ = env.step(act)
            frames.append(frame.transpose(2, 0, 1))
            acts.append(act)
            wait -= int(player.in_play(ram))
        if end or trunc:
            frame, _ = env.reset()  # the next life (or a new game)
            frames, acts = [frame.transpose(2, 0, 1)], []
    env.close()
    return _rollouts(np.stack(out_obs), np.stack(out_act), context)


def paddle_at_wall(frames: torch.Tensor | np.ndarray, game: str = "Breakout") -> np.ndarray:
    """Frames (..., 3, 64, 64) uint8 -> bool array of the leading shape: no paddle pixel left of the right wall's
    resting place in the paddle's row (`PADDLE_WALL`)."""
    row, cols = PADDLE_WALL[game]
    line = np.asarray(frames)[..., row, cols]  # (..., 3, w)
    return ~((line[..., 0, :] > 100) & (line[..., 1, :] < 100)).any(-1)


def record_at_wall(game: str, clips: int, context: int, steps: int, seed: int) -> dict[str, Rollouts]:
    """A new game's paddle pushed into the right wall (`context` frames at the wall, RIGHT at each, no ball served),
    then each sequence of `WALL_MOVES` (cut or padded with NOOP to `steps`) from that emulator state -> {name:
    Rollouts of `clips` copies}: with no ball in play every new game shows the same frames there, so the dreams of
    a clip differ in the sampler's noise only."""
    from training.atari_env import make_atari_env

    env = make_atari_env(game, train=True, seed=seed)
    env.reset(seed=seed)
    moves = [RIGHT] * (context + 12)  # across from the middle, then wound up against the wall
    frames = [env.step(a)[0].transpose(2, 0, 1) for a in moves][-context:]
    if not paddle_at_wall(np.stack(frames), game).all():
        raise RuntimeError(f"{game}: the paddle did not reach the right wall")
    state = env.unwrapped.ale.cloneState()
    out = {}
    for name, seq in WALL_MOVES.items():
        env.unwrapped.ale.restoreState(state)
        seq = [*seq[:steps], *[NOOP] * (steps - len(seq))]
        obs = np.stack(frames + [env.step(a)[0].transpose(2, 0, 1) for a in seq])
        act = np.array(moves[-context + 1:] + seq + [NOOP])  # act[t] leads from frame t
        out[name] = _rollouts(np.repeat(obs[None], clips, 0), np.repeat(act[None], clips, 0), context)
    env.close()
    return out


@torch.no_grad()
def measure_serves(agent, game: str, cfg: ServeCheckConfig = ServeCheckConfig()) -> dict:
    """The shares of dreams (per dreamed step 1..cfg.steps) -> {"serve" (a ball after FIRE), "serve_two" (2+
    balls after FIRE: a serve at several places), "serve_real", "noop", "second_ball", "second_ball_real",
    "in_flight_drawn" and "in_flight_near" (of the in-flight dreams whose real frame shows one ball: a ball drawn,
    one within `NEAR` pixels of it), "wall_two_left", "wall_three_left" (the paddle still at the wall, `WALL_MOVES`)
    and their "..._real": [share], "clips", "strip": uint8 (H, W, 3) image of up to 3 clips of each kind (not
    JSON)}."""
    context = agent.denoiser.cfg.num_steps_conditioning
    dream_cfg = FidelityConfig(horizon=cfg.steps, contexts=cfg.clips, seed=cfg.seed, precision=cfg.precision,
                               denoising_steps=cfg.denoising_steps or agent.denoising_steps,
                               still_levels=cfg.still_levels)
    serves = record_serves(game, cfg.clips, context, cfg.steps, cfg.seed)
    noop_act = serves.act.clone()
    noop_act[:, context - 1:][noop_act[:, context - 1:] == FIRE] = NOOP  # no FIRE at all: nothing may serve
    noops = Rollouts(serves.obs, noop_act, serves.rew, serves.end, serves.valid, serves.pad)
    flights = record_in_flight(game, cfg.clips, context, cfg.steps, cfg.seed)
    walls = record_at_wall(game, cfg.clips, context, cfg.steps, cfg.seed)
    dreams = {name: imagine(agent, real, dream_cfg) for name, real in
              (("serve", serves), ("noop", noops), ("in_flight", flights))}
    centres = {name: ball_centres(d.obs[:, context:], game) for name, d in dreams.items()}  # (N, steps)
    balls = {name: _counts(c) for name, c in centres.items()}
    flight_centres = ball_centres(flights.obs[:, context:], game)
    flight_balls = _counts(flight_centres)
    one = flight_balls == 1  # the in-flight shares below count only these (the real ball still in the region)
    near = _near(flight_centres, centres["in_flight"], one)
    share = lambda hit: [float(x) for x in hit.mean(0)]
    wall_dreams = {name: imagine(agent, real, dream_cfg) for name, real in walls.items()}
    wall = {}  # the paddle at the wall
    for name, real in walls.items():
        wall[f"wall_{name}"] = share(paddle_at_wall(wall_dreams[name].obs[:, context:], game))
        wall[f"wall_{name}_real"] = share(paddle_at_wall(real.obs[:, context:], game))
    among = lambda hit: [float(x) for x in (hit & one).sum(0) / np.maximum(one.sum(0), 1)]
    strip = np.concatenate([strip_image(real, dream, i, columns=cfg.steps)  # up to 3 clips of each kind
                            for real, dream in ((serves, dreams["serve"]), (flights, dreams["in_flight"]),
                                                (walls["two_left"], wall_dreams["two_left"]))
                            for i in range(min(3, len(real.act)))])
    return {"clips": len(serves.act), "steps": cfg.steps, "denoising_steps": dream_cfg.denoising_steps,
            "serve": share(balls["serve"] >= 1),
            "serve_two": share(balls["serve"] >= 2),
            "serve_real": share(count_balls(serves.obs[:, context:], game) >= 1),
            "noop": share(balls["noop"] >= 1),
            "second_ball": share(balls["in_flight"] >= 2),
            "second_ball_real": share(flight_balls >= 2),
            "in_flight_drawn": among(balls["in_flight"] >= 1), "in_flight_near": among(near),
            **wall, "strip": strip}
