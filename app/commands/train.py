"""`dreamarcade train`: train a world model and an agent with the DIAMOND recipe (see training/loop.py)."""
from __future__ import annotations

import argparse

from weights.errors import UserError

DESCRIPTION = """\
Train a diffusion world model (denoiser + reward/end model) and an actor-critic in imagination, as DIAMOND.
A run directory holds config.json, metrics.jsonl, tensorboard/, plots/*.png, checkpoint.pt, weights/ (load
them with `dreamarcade play --weights RUN/weights`) and the episode store. Kill it at any moment and
continue with --resume; a finished run says so.

presets:
  atari100k   the paper: 100k real steps, 1000 epochs, reference-size models (days on one GPU)
  consumer    the paper's models and data with a quarter of the updates (about a day on one consumer GPU)
  tiny        a tiny model and a few hundred real steps: end to end on a CPU in minutes (smoke test)
  catch       for the toy game Catch (--game Catch): learns to catch the ball in a few CPU minutes

examples:
  dreamarcade train --game Catch --preset catch --run-dir runs/catch
  dreamarcade train --game Breakout --preset tiny --run-dir runs/smoke
  dreamarcade train --game Breakout --run-dir runs/breakout --resume
  torchrun --nproc_per_node 4 -m app train --game Breakout --run-dir runs/breakout   (data-parallel)
  dreamarcade train --game Breakout --dataset recordings/ --run-dir runs/wm   (world model from episodes)
"""


def add_parser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--game", help="game name, e.g. Breakout (see `dreamarcade games`), or Catch (toy game)")
    p.add_argument("--preset", default=None, help="atari100k (default), consumer, tiny, catch")
    p.add_argument("--run-dir", metavar="DIR", help="where the run lives (default runs/GAME-PRESET)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    p.add_argument("--device", default=None, help="torch device: cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--dataset", metavar="DIR",
                   help="static-dataset mode: train the world model and reward/end model on the episode store in "
                        "DIR (no environment, no actor-critic)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: drawn at random and saved)")
    p.add_argument("--epochs", type=int, default=None, help="stop after this many epochs in total (default: the preset's)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is often fastest on a shared machine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (one line per epoch instead)")
    return p


def run(args) -> int:
    import dataclasses
    import os
    from pathlib import Path

    from training.loop import train
    from training.presets import get_preset
    from training.run_dir import RunDir

    if args.threads is not None:
        if args.threads < 1:
            raise UserError("--threads must be at least 1")
        import torch

        torch.set_num_threads(args.threads)
    if args.resume:
        if not args.run_dir:
            raise UserError("--resume needs --run-dir DIR (the run to continue)")
        cfg = None
    else:
        if not args.game:
            raise UserError("--game is required (e.g. --game Breakout; `dreamarcade games` lists them)")
        preset = args.preset or ("catch" if args.game.lower() == "catch" else "atari100k")
        cfg = get_preset(preset)
        cfg = dataclasses.replace(cfg, game=_game_name(args.game, args.dataset), seed=args.seed)
        args.run_dir = args.run_dir or str(Path("runs") / f"{cfg.game}-{preset}")
    run_dir = RunDir(args.run_dir)
    if run_dir.is_finished:
        print(f"{run_dir.path}: this run is finished (see {run_dir.finished_path}); "
              f"its weights are in {run_dir.weights_path}")
        return 0
    summary = train(cfg, run_dir, device=args.device, resume=args.resume, dataset=args.dataset,
                    max_epochs=args.epochs, progress=not args.no_progress)
    if summary.get("finished") and os.environ.get("RANK", "0") == "0":
        print(f"finished: weights in {run_dir.weights_path}, metrics in {run_dir.metrics_path}")
    return 0


def _game_name(name: str, dataset: str | None) -> str:
    """Canonical name (`training.games.resolve_game`), or in static-dataset mode any name the user likes."""
    from training.games import resolve_game

    try:
        return resolve_game(name)
    except UserError:
        if dataset:
            return name
        raise
