"""`dreamarcade collect`: real episodes played by a scripted player, for `dreamarcade train --dataset`."""
from __future__ import annotations

import argparse

from app.commands import require_at_least

DESCRIPTION = """\
Play the real game (the Atari 100k training env: 64x64 frames, frame skip 4, a life loss ends an episode)
with a scripted player that reads the game's RAM, and write the episodes to an episode store that
`dreamarcade train --dataset DIR` trains a world model on. The scripted player is a data source for the world
model only (it shows the model rallies, bricks broken high and low, serves and lost lives that random play
never reaches); the agent never sees it. Each episode draws a skill: the chance per step of acting on the ball
rather than being distracted for a few steps (--hold). --skill 0 0 --hold 1 1 is uniform random play, as
`eval --fidelity --policy random` plays: a new action every step.

With --serves N it records N short clips instead, each from the first frame of a life: a random wait of 0-10
steps, the serve, --serve-steps (12) steps following the ball; the rest of the life is played unrecorded. Real
play serves within a step or two of a lost life, or presses FIRE before the life counter drops, where it does
nothing; a model trained on that alone learns that FIRE does not serve (see the README's Training section).
One trained on many serve clips learns the opposite, that FIRE always brings a ball, a second one too: with
--fire-in-flight Q the player presses FIRE instead of moving with chance Q while the ball is in flight, where it
does nothing.

With --walls N it records N clips of the paddle run into a side wall (the right one 3 times in 4), held there,
then 10 uniformly random actions. Pushed into the right wall, Breakout's paddle stays for two LEFT presses and
leaves on the third: state that only the context's actions show.

scripted players: Breakout (follows the ball, aims off-centre to vary the angles)

examples:
  dreamarcade collect --game Breakout --steps 50000 --out data/breakout
  dreamarcade collect --game Breakout --serves 1200 --out data/breakout/serves --seed 101
  dreamarcade collect --game Breakout --steps 80000 --fire-in-flight 0.5 --out data/breakout/fire --seed 51
  dreamarcade collect --game Breakout --steps 30000 --skill 0 0 --hold 1 1 --out data/breakout/uniform --seed 61
  dreamarcade collect --game Breakout --walls 3000 --out data/breakout/walls --seed 71
  dreamarcade train --game Breakout --preset breakout --dataset data/breakout --run-dir runs/bk-wm
"""


def add_parser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--game", default="Breakout", help="game with a scripted player (default Breakout)")
    p.add_argument("--steps", type=int, default=50_000, help="real steps to play (default 50000)")
    p.add_argument("--serves", type=int, metavar="N", default=None,
                   help="record N serve clips (a wait, the serve, --serve-steps of play) instead of --steps of play")
    p.add_argument("--serve-steps", type=int, metavar="K", default=12,
                   help="with --serves: steps recorded after each serve (default 12; fewer: the serve is more of the data)")
    p.add_argument("--walls", type=int, metavar="N", default=None,
                   help="record N clips of the paddle pressed into a side wall, then random moves, instead of --steps")
    p.add_argument("--out", metavar="DIR", required=True, help="episode store to write (created; added to if it exists)")
    p.add_argument("--seed", type=int, default=0, help="seed of the game and the player (default 0)")
    p.add_argument("--skill", type=float, nargs=2, default=(0.93, 0.995), metavar=("MIN", "MAX"),
                   help="range of the per-episode skill in [0, 1] (default 0.93 0.995)")
    p.add_argument("--hold", type=int, nargs=2, default=(2, 6), metavar=("MIN", "MAX"),
                   help="a distracted player holds its random action U{MIN..MAX} steps in all (default 2 6); with --skill 0 0, "
                        "--hold 1 1 is uniform random play, a new action every step, as eval --fidelity's random policy")
    p.add_argument("--fire-in-flight", type=float, default=0.0, metavar="Q",
                   help="with the ball in flight, press FIRE instead of the player's move with chance Q (default 0): "
                        "it does nothing in the real game, which a model trained on --serves clips must also see")
    return p


def run(args: argparse.Namespace) -> int:
    from training.games import resolve_game
    from training.scripted import check_game
    from weights.errors import UserError

    game = resolve_game(args.game)
    check_game(game)
    require_at_least(args, 1, "serves", "walls", "steps")
    if args.serves is not None and args.walls is not None:
        raise UserError("--serves and --walls record different clips: one of them per run")
    require_at_least(args, 0, "serve_steps")
    if not 0 <= args.skill[0] <= args.skill[1] <= 1:
        raise UserError(f"--skill needs 0 <= MIN <= MAX <= 1, got {args.skill[0]} {args.skill[1]}")
    if not 1 <= args.hold[0] <= args.hold[1]:
        raise UserError(f"--hold needs 1 <= MIN <= MAX, got {args.hold[0]} {args.hold[1]}")
    if not 0 <= args.fire_in_flight <= 1:
        raise UserError(f"--fire-in-flight needs 0 <= Q <= 1, got {args.fire_in_flight}")
    if (args.serves is not None or args.walls is not None) and args.fire_in_flight:
        raise UserError("--fire-in-flight is for --steps of play, not --serves or --walls clips")
    from training.episode_store import EpisodeStore
    from training.scripted import collect_scripted, collect_serves, collect_walls

    store = EpisodeStore(args.out)
    before = store.num_steps
    if args.serves is not None:
        stats = collect_serves(game, store, args.serves, seed=args.seed, follow=args.serve_steps)
        print(f"{game}: {stats['clips']} serve clips, {stats['steps']} steps (the ball served in {stats['served']}); "
              f"{args.out} now holds {before + stats['steps']} steps")
        return 0
    if args.walls is not None:
        stats = collect_walls(game, store, args.walls, seed=args.seed)
        print(f"{game}: {stats['clips']} wall clips, {stats['steps']} steps ({stats['wall_steps']} random moves from "
              f"the wall); {args.out} now holds {before + stats['steps']} steps")
        return 0
    stats = collect_scripted(game, store, args.steps, seed=args.seed, skill=tuple(args.skill),
                             fire_in_flight=args.fire_in_flight, hold=tuple(args.hold))
    fired = f", FIRE in flight {stats['fired_in_flight']} times" if args.fire_in_flight else ""
    print(f"{game}: {stats['steps']} steps in {stats['episodes']} episodes (one life each), return per episode "
          f"{stats['return_mean']:.1f} mean, {stats['return_max']:.0f} max{fired}; {args.out} now holds "
          f"{before + stats['steps']} steps")
    return 0
