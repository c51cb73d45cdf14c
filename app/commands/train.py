"""`dreamarcade train`: train a world model and an agent with the DIAMOND recipe (see training/loop.py)."""
from __future__ import annotations

import argparse

from app.commands import require_at_least
from weights.errors import NotFound, UserError

DESCRIPTION = """\
Train a diffusion world model (denoiser + reward/end model) and an actor-critic in imagination, as DIAMOND.
A run directory holds config.json, metrics.jsonl, tensorboard/, plots/*.png, checkpoint.pt, weights/ (load
them with `dreamarcade play --weights RUN/weights`) and the episode store. Kill it at any moment and
continue with --resume; a finished run says so.

presets (--preset):
  atari100k   the paper: 100k real steps, 1000 epochs, reference-size models (days on one GPU)
  consumer    the paper's models and data with a quarter of the updates (about a day on one consumer GPU)
  cpu         the `small` model on an Atari game with a CPU budget
  breakout    `cpu` with a residual denoiser trained on noisy contexts, for world-model training on scripted
              play (collect, then --dataset)
  tiny        a tiny model and a few hundred real steps: end to end on a CPU in minutes (smoke test)
  catch       for the toy game Catch (--game Catch): learns to catch the ball in a few CPU minutes

examples:
  dreamarcade train --game Catch --preset catch --run-dir runs/catch
  dreamarcade train --game Breakout --preset cpu --run-dir runs/bk-cpu
  dreamarcade train --game Breakout --preset tiny --run-dir runs/smoke
  dreamarcade train --game Breakout --run-dir runs/breakout --resume
  torchrun --nproc_per_node 4 -m app train --game Breakout --run-dir runs/breakout   (data-parallel)
  dreamarcade train --game Breakout --dataset recordings/ --run-dir runs/wm   (world model from episodes)
"""

# The names of training.presets.PRESETS, checked here before torch is imported (tests keep the two equal).
PRESETS = ("atari100k", "consumer", "cpu", "breakout", "tiny", "catch")


def add_parser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--game", help="game name, e.g. Breakout (see `dreamarcade games`), or Catch (toy game)")
    p.add_argument("--preset", default=None, metavar="PRESET",
                   help=f"training preset: {', '.join(PRESETS)} (default atari100k; catch for --game Catch)")
    p.add_argument("--run-dir", metavar="DIR", help="where the run lives (default runs/GAME-PRESET)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    p.add_argument("--device", default=None,
                   help="torch device: cpu, cuda, cuda:1, mps (default: the best present, CUDA, then MPS, then cpu)")
    p.add_argument("--dataset", metavar="DIR",
                   help="static-dataset mode: train the world model and reward/end model on the episode store in "
                        "DIR (no environment, no actor-critic)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: drawn at random and saved)")
    p.add_argument("--epochs", type=int, default=None,
                   help="stop after this many epochs in total (default: the preset's); with --dataset, more than "
                        "the preset's runs longer over the same recordings (also when resuming)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is often fastest on a shared machine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (one line per epoch instead)")
    p.add_argument("--compile", action="store_true",
                   help="opt-in: torch.compile the denoiser's and reward/end model's networks; the first updates "
                        "take minutes to compile on a GPU (longer on a CPU). On an H100, before the sync-free "
                        "updates: reward/end 706 vs 477 sequences/s, denoiser 237 vs 225 samples/s. Not saved "
                        "in the run: give it again with --resume")
    p.add_argument("--init-weights", metavar="SOURCE",
                   help="start a new run from these weights instead of the preset's fresh model: a local path, "
                        "hf://OWNER/REPO[/PATH][@REV] or diamond (as `play --weights`); the run's model is the "
                        "weights' own (architecture and values), its optimizers start fresh (fine-tuning)")
    p.add_argument("--keep-weights-every", type=int, default=0, metavar="N",
                   help="also keep every N-th epoch's weights in RUN/snapshots/epoch-NNNN.safetensors, to average "
                        "the last ones with `python -m weights.average` (default 0: only the latest, in "
                        "RUN/weights). Not saved in the run: give it again with --resume")
    p.add_argument("--world-model-lr", type=float, metavar="LR",
                   help="the learning rate of the denoiser and the reward/end model from the next update on (the "
                        "preset's is 1e-4; the actor-critic keeps its own). Saved in the run: a run resumed later "
                        "keeps it. E.g. --resume --world-model-lr 2e-5 --epochs N for a run's last epochs (on the "
                        "shipped Breakout run this lowered the loss but made the dreams worse: see the README)")
    p.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="auto (default): on a CPU with native bfloat16 (AVX512-BF16 or AMX) the denoiser's and "
                        "reward/end model's updates run under bfloat16 autocast (about 2x faster) and imagination's "
                        "world model in bfloat16 (1.7x), elsewhere float32; on a GPU float32 updates (CUDA graphs) "
                        "and bfloat16 imagination. float32: the reference's numbers everywhere; bfloat16: both in "
                        "bfloat16. The actor-critic always trains in float32. Not saved in the run")
    return p


def run(args) -> int:
    import os
    from pathlib import Path

    # Everything the user typed is checked before torch is imported (that alone takes seconds).
    require_at_least(args, 1, "threads", "epochs")
    if args.keep_weights_every < 0:
        raise UserError(f"--keep-weights-every must be 0 (off) or more, not {args.keep_weights_every}")
    if args.world_model_lr is not None and not 0 < args.world_model_lr < 1:
        raise UserError(f"--world-model-lr must be between 0 and 1 (e.g. 2e-5), not {args.world_model_lr}")
    if args.preset is not None and args.preset not in PRESETS:
        raise UserError(f"unknown preset {args.preset!r}; choose one of: {', '.join(PRESETS)}")
    if args.resume:
        if args.init_weights:
            raise UserError("--init-weights starts a new run; a resumed run continues from its checkpoint")
        if not args.run_dir:
            raise UserError("--resume needs --run-dir DIR (the run to continue)")
        game = preset = None
    else:
        if not args.game:
            raise UserError("--game is required (e.g. --game Breakout; `dreamarcade games` lists them)")
        game = _game_name(args.game, args.dataset)
        preset = args.preset or ("catch" if game == "Catch" else "atari100k")
        args.run_dir = args.run_dir or str(Path("runs") / f"{game}-{preset}")
    main_rank = os.environ.get("RANK", "0") == "0"

    import dataclasses

    from app.device import describe_device, resolve_device

    device = resolve_device(args.device)  # before the run folder exists: a wrong device leaves nothing behind
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if main_rank:
        print(describe_device(device, args.device), flush=True)
        print(_precision_line(args.precision, device, agent=not _dataset(args)), flush=True)

    from training.loop import train
    from training.presets import get_preset
    from training.run_dir import RunDir

    cfg = None
    if preset is not None:
        cfg = dataclasses.replace(get_preset(preset), game=game, seed=args.seed)
    init = None
    if args.init_weights:  # before the run folder exists: weights that do not fit leave nothing behind
        if (Path(args.run_dir) / "config.json").exists():
            raise UserError(f"{args.run_dir} already holds a training run: --init-weights starts a new one "
                            "(choose another --run-dir)")
        init = _initial_weights(args.init_weights, game, main_rank)
    run_dir = RunDir(args.run_dir)
    if run_dir.is_finished:
        print(f"{run_dir.path}: this run is finished (see {run_dir.finished_path}); "
              f"its weights are in {run_dir.weights_path}")
        return 0
    summary = train(cfg, run_dir, device=str(device), resume=args.resume, dataset=args.dataset,
                    max_epochs=args.epochs, progress=not args.no_progress, compile_models=args.compile,
                    precision=args.precision, init=init, keep_weights_every=args.keep_weights_every,
                    world_model_lr=args.world_model_lr)
    if main_rank:
        print(_summary(summary, run_dir, args.epochs))
    return 0


def _dataset(args) -> str | None:
    """The static dataset of the run: --dataset, or for --resume the one in its config.json."""
    from training.run_dir import read_run_config

    if args.resume and args.run_dir:
        try:
            return read_run_config(args.run_dir).get("dataset")
        except NotFound:
            return args.dataset
        except (OSError, UserError, AttributeError):
            return None  # the run's own checks report a bad config.json
    return args.dataset


def _initial_weights(source: str, game: str, main_rank: bool):
    """The agent of `train --init-weights SOURCE` (on the CPU; the run moves it), checked against the game."""
    from training.games import resolve_game
    from weights import load_agent

    agent = load_agent(source, game)
    trained_on = agent.weights_info.get("game")
    if trained_on and resolve_game(trained_on) != game:
        raise UserError(f"the weights {source} were trained on {resolve_game(trained_on)}, not {game}")
    if main_rank:
        info = agent.weights_info
        updates = info.get("denoiser_updates")
        print(f"initial weights: {info.get('file', source)}"
              + (f" ({updates} denoiser updates)" if updates is not None else ""), flush=True)
    return agent


def _precision_line(precision: str, device, agent: bool = True) -> str:
    """One line saying in which precision the world model trains and imagines (`train --precision`); agent:
    False in static-dataset mode, where no agent trains."""
    from model.precision import resolve, training_policies

    updates, imagination = (resolve(policy, device) for policy in training_policies(precision))
    line = f"precision: world-model updates {updates}"
    if agent:
        line += f", imagination {imagination}"
    if precision == "auto":
        line += " (auto: native bfloat16 here)" if "bfloat16" in (updates, imagination) else " (auto)"
    return line + ("; the actor-critic trains in float32" if agent else "")


def _summary(summary: dict, run_dir, asked_epochs: int | None) -> str:
    """The end of a run in a few lines: how far it went, the agent's test return beside a random policy's,
    and where the weights are."""
    epoch = summary["epoch"]
    if summary.get("finished"):
        head = f"finished: {epoch} epochs"
        if asked_epochs is not None and asked_epochs > epoch:
            head += f" (all the run has; --epochs {asked_epochs} asked for more)"
        ret, episodes, what = summary.get("final/return_mean"), summary.get("final/episodes"), "final test"
    else:
        head = f"stopped after epoch {epoch} (--epochs {asked_epochs}); continue with --resume"
        tests = [row for row in run_dir.read_metrics() if "test/return_mean" in row]
        last = tests[-1] if tests else {}
        ret, episodes = last.get("test/return_mean"), last.get("test/episodes")
        what = f"test at epoch {last.get('epoch', 0):g}"
    lines = [head]
    if ret is not None:
        game = run_dir.read_config()["train"]["game"]
        random_ret, how = _random_return(game)
        lines.append(f"{what} return {ret:.2f} over {episodes:g} episodes; a random policy: {random_ret:.2f} ({how})")
    lines.append(f"weights: {run_dir.weights_path} (play them: dreamarcade play --weights {run_dir.weights_path})")
    lines.append(f"metrics: {run_dir.metrics_path}, plots in {run_dir.plots_path}")
    return "\n".join(lines)


def _random_return(game: str) -> tuple[float, str]:
    """A uniform random policy's mean return: the Atari 100k constant, or for Catch measured on 500 games."""
    from training.games import GAMES

    if game in GAMES:
        return GAMES[game].random_score, "the Atari 100k constant"
    import random

    from training.atari_env import make_env

    env, rng, total, episodes = make_env(game, train=False, seed=0), random.Random(0), 0.0, 500
    try:
        for _ in range(episodes):
            env.reset()
            done = False
            while not done:
                _, rew, term, trunc, _ = env.step(rng.randrange(env.action_space.n))
                total, done = total + float(rew), term or trunc
    finally:
        env.close()
    return total / episodes, f"measured over {episodes} games"


def _game_name(name: str, dataset: str | None) -> str:
    """Canonical name (`training.games.resolve_game`), or in static-dataset mode any name the user likes."""
    from training.games import resolve_game

    try:
        return resolve_game(name)
    except UserError:
        if dataset:
            return name
        raise
