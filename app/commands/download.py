"""`dreamarcade download`: DIAMOND's released Atari 100k agents, into the Hugging Face cache."""
from __future__ import annotations

import argparse

from weights.errors import UserError

DESCRIPTION = """\
Download DIAMOND's released world model and agent for one or more games (Hub repository
eloialonso/diamond, atari_100k/models/GAME.pt, at a pinned revision) into the Hugging Face cache,
and convert them once to dreamarcade's format. Afterwards `--weights diamond` works offline.

examples:
  dreamarcade download Breakout
  dreamarcade download Pong Boxing
  dreamarcade download --all
"""


def add_parser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("games", nargs="*", metavar="GAME", help="game names, e.g. Breakout (see `dreamarcade games`)")
    p.add_argument("--all", action="store_true", help="all 26 Atari 100k games (about 1.4 GB)")
    p.add_argument("--revision", default=None,
                   help="revision of eloialonso/diamond (default: the pinned commit; play it with --weights diamond@REV)")
    p.add_argument("--force", action="store_true", help="download and convert again even if cached")
    return p


def run(args: argparse.Namespace) -> int:
    from training.games import GAME_NAMES, get_game
    from weights import hub
    from weights.sources import fetch_diamond

    if args.all and args.games:
        raise UserError("give game names or --all, not both")
    if not args.all and not args.games:
        raise UserError("name a game (e.g. `dreamarcade download Breakout`) or use --all")
    games = list(GAME_NAMES) if args.all else [get_game(g).name for g in args.games]
    revision = args.revision or hub.DIAMOND_REVISION
    for game in games:
        url = hub.hub_url(hub.DIAMOND_REPO, hub.diamond_filename(game), revision)
        print(f"{game}: {url}", flush=True)
        converted = fetch_diamond(game, revision=revision, force=args.force)
        print(f"{game}: ready ({converted.stat().st_size / 1e6:.0f} MB, {converted})", flush=True)
    if len(games) > 1:
        print(f"{len(games)} games ready in {hub.hub_cache_dir()}")
    return 0
