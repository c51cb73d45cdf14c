"""`dreamarcade play`: play a game inside the world model, the real emulator, or both side by side."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from app.commands import require_at_least
from weights.errors import UserError

DESCRIPTION = """\
Play an Atari game inside the learned world model (imagine), in the real emulator (real), or both
side by side with the same actions (compare). You or the agent play; switch at any moment.

keys: arrows/WASD move, Space fires (hold several for diagonals); h or F1 shows every key; Esc quits.
      p pause, n single step, r reset, m mode, Tab controller, y re-sync the dream with the real game,
      [ ] imagination horizon, - = denoising steps, x screenshot, v record (mp4 + episodes), o 210x160 frame,
      g choose another game (the ones with weights here play in the dream, the others in the real game).

examples:
  dreamarcade play --game Breakout                          (imagine mode, you play)
  dreamarcade play --game Pong --mode compare --controller agent
  dreamarcade play --game Breakout --weights runs/breakout/weights
  dreamarcade play --game Breakout --headless --steps 500 --record breakout.mp4
  dreamarcade play --replay dreamarcade-recordings/Breakout-20260101-120000-episodes/imagine
"""


def add_parser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--game", help="game name, e.g. Breakout (default: the weights' game, else Breakout)")
    p.add_argument("--weights", metavar="SOURCE", default=None,
                   help="local path, hf://OWNER/REPO[/PATH][@REV], or diamond (default: shipped weights, else diamond)")
    p.add_argument("--mode", choices=("imagine", "real", "compare"), default="imagine",
                   help="imagine: inside the world model (default); real: the emulator; compare: both side by side")
    p.add_argument("--controller", choices=("human", "agent", "random"), default=None,
                   help="who plays (default: human in a window; with --headless the agent, or random in real "
                        "mode for a game without weights)")
    p.add_argument("--denoising-steps", type=int, default=None, metavar="N",
                   help="diffusion sampler steps per frame: fewer is faster, more is sharper (default: the "
                        "weights' own, else 3)")
    p.add_argument("--horizon", type=int, default=0, metavar="N",
                   help="imagined steps before the dream restarts from real frames (compare: re-syncs); "
                        "0: never (default)")
    p.add_argument("--fps", type=float, default=15.0, help="agent steps per second (default 15, as the reference)")
    p.add_argument("--device", default=None,
                   help="torch device: cpu, cuda, cuda:1, mps (default: the best present, CUDA, then MPS, then cpu)")
    p.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="world model and agent precision: auto (default) is bfloat16 where the device runs it "
                        "natively (recent CPUs, GPUs), else float32, the reference's exact numbers")
    p.add_argument("--sample-rew-end", action="store_true",
                   help="sample the dream's reward and end as in training (and the reference's player) "
                        "instead of taking the most likely values (default)")
    p.add_argument("--size", type=int, default=None, metavar="PX",
                   help="size of a game panel in pixels, rounded down to a multiple of 64 "
                        "(default 512 in a window, 256 in a --headless recording)")
    p.add_argument("--seed", type=int, default=None, help="seed of the emulator and the samplers")
    p.add_argument("--headless", action="store_true", help="no window: play --steps steps (agent or random)")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="with --headless: agent steps to play")
    p.add_argument("--record", metavar="FILE.mp4", type=Path, default=None,
                   help="record the screen to this mp4 (and the episodes next to it); in a window, v toggles")
    p.add_argument("--out-dir", type=Path, default=Path("dreamarcade-recordings"), metavar="DIR",
                   help="where screenshots and recordings started with keys go (default dreamarcade-recordings/)")
    p.add_argument("--replay", metavar="DIR", type=Path, default=None,
                   help="browse episodes stored in an episode store (recordings, training data) frame by frame")
    return p


def _panel_size(size: int | None, default: int) -> int:
    """Whole screen pixels per frame pixel, for crisp upscaling of the 64x64 frames."""
    return default if size is None else max(64, size // 64 * 64)


def _check_args(args: argparse.Namespace) -> None:
    """What the user typed, checked before torch is imported (that alone takes seconds)."""
    if args.game:
        from training.games import resolve_game

        resolve_game(args.game)  # an unknown name fails here, with the closest names
    if args.fps <= 0:
        raise UserError(f"--fps must be positive, not {args.fps:g}")
    require_at_least(args, 1, "denoising_steps")
    if args.horizon < 0:
        raise UserError(f"--horizon must be 0 (never) or positive, not {args.horizon}")
    if args.size is not None and not 64 <= args.size <= 4096:
        raise UserError(f"--size must be between 64 and 4096 pixels, not {args.size}")
    if args.record is not None and args.record.suffix.lower() != ".mp4":
        raise UserError(f"--record must name an .mp4 file, not {str(args.record)!r}")
    if args.headless:
        if args.steps is None or args.steps < 1:
            raise UserError("--headless needs --steps N (N >= 1)")
        if args.controller == "human":
            raise UserError("--headless has no keyboard: use --controller agent or random")
    elif args.steps is not None:
        raise UserError("--steps is for --headless; in a window, play until Esc")


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    if args.replay is not None:
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        from app.player.replay import run_replay

        meanings = None
        if args.game:  # else the recording (or the training run) names its game
            from training.games import resolve_game
            from app.player.replay import game_action_names

            meanings = game_action_names(resolve_game(args.game))
        run_replay(args.replay, size=_panel_size(args.size, 512), meanings=meanings, fps=args.fps)
        return 0
    if args.controller is None and not args.headless:
        args.controller = "human"  # headless: the agent, or random in real mode when there are no weights
    if args.headless:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # fonts and surfaces only, never a window
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

    from app.device import describe_device, resolve_device
    from app.player.launch import build_session

    device = resolve_device(args.device)
    print(describe_device(device, args.device), flush=True)
    if not args.headless:
        from app.player.display import check_display

        check_display()  # before loading weights, which may take a while
    session = build_session(
        game=args.game, weights=args.weights, mode=args.mode, controller=args.controller, device=str(device),
        denoising_steps=args.denoising_steps, horizon=args.horizon, precision=args.precision, seed=args.seed,
        sample_rew_end=args.sample_rew_end,
    )
    try:
        if args.headless:
            return _run_headless(session, args)
        return _run_window(session, args)
    finally:
        session.close()


def _run_headless(session, args: argparse.Namespace) -> int:
    from app.player.headless import run_headless

    episodes = args.record.with_name(args.record.stem + "-episodes") if args.record else None
    result = run_headless(session, args.steps, record=args.record, fps=args.fps, size=_panel_size(args.size, 256),
                          episodes_dir=episodes)
    latency = f", model {result.mean_latency_ms:.0f} ms/step" if result.mean_latency_ms is not None else ""
    if result.mean_psnr_db is not None:
        latency += f", dream vs real PSNR {result.mean_psnr_db:.1f} dB"
    returns = ", ".join(f"{r:g}" for r in result.returns) or "none finished"
    print(f"{session.game} ({session.mode}, {session.controller}): {result.steps} steps at "
          f"{result.steps_per_s:.1f} steps/s{latency}; episode returns: {returns}")
    if result.video is not None:
        print(f"recorded {result.video} ({result.steps} frames) and {len(result.episodes_saved)} episode(s) "
              f"in {episodes}")
    return 0


def _run_window(session, args: argparse.Namespace) -> int:
    from app.player.player import Player, WindowOptions

    from app.player.launch import game_switcher

    switch = game_switcher(device=session.device, denoising_steps=args.denoising_steps, horizon=args.horizon,
                           precision=args.precision, seed=args.seed, sample_rew_end=args.sample_rew_end)
    options = WindowOptions(fps=args.fps, size=_panel_size(args.size, 512), out_dir=args.out_dir, record=args.record,
                            switch_game=switch)
    player = Player(session, options).run()
    for path in player.videos:
        print(f"recorded {path}")
    for path in player.screenshots:
        print(f"screenshot {path}")
    return 0
