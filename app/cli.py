"""`dreamarcade` / `python -m app`: one parser, one module per sub-command.

Each command module in `app/commands/` has `add_parser(subparsers)` and `run(args) -> int`.
Modules are imported only for the command that runs, so `--help` and `games` start fast. A
`weights.errors.UserError` (bad input, a missing or corrupt file, no network) is printed as one line with
exit status 2; any other exception is a bug and shows its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from weights.errors import UserError

# name -> (module, one-line help); the order is the order in `--help`.
COMMANDS = {
    "play": ("app.commands.play", "play a game inside the world model, the real emulator, or both side by side"),
    "train": ("app.commands.train", "train a world model and an agent (the DIAMOND recipe)"),
    "eval": ("app.commands.eval", "score weights on real games, aggregate results, measure world-model fidelity"),
    "collect": ("app.commands.collect", "play real episodes with a scripted player, as data for train --dataset"),
    "clone": ("app.commands.clone", "teach an agent to play like the scripted player or recorded episodes (behaviour cloning)"),
    "bench": ("app.commands.bench", "measure play and training speed on this machine"),
    "games": ("app.commands.games", "list the supported games and where their weights come from"),
    "download": ("app.commands.download", "download pretrained weights from the Hugging Face Hub"),
    "push": ("app.commands.push", "publish a training run's weights to the Hugging Face Hub"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dreamarcade",
        description="Play Atari inside a learned diffusion world model, train your own, compare with the real game.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if name == command:
            importlib.import_module(module).add_parser(sub, name, help_text)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        command = None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserError as e:
        # What the user can fix is one clear line (DREAMARCADE_DEBUG=1 shows the traceback); anything else is
        # a bug and keeps its traceback.
        if os.environ.get("DREAMARCADE_DEBUG"):
            raise
        print(f"dreamarcade {args.command}: error: {e}", file=sys.stderr)
        return 2
