"""`dreamarcade games`: the 26 Atari 100k games, the toy game Catch, and where their weights would come from."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
List the supported games (the 26 of Atari 100k and the toy game Catch), their number of actions, and
where `dreamarcade play --game GAME` takes weights from: weights shipped with dreamarcade, DIAMOND's released agent already in the
Hugging Face cache, or DIAMOND's released agent downloaded on first use. No network is used.
"""


def add_parser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=DESCRIPTION)
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    return p


def weights_origin(game: str) -> str:
    """Where `play --game GAME` takes weights from, without network: 'shipped' (then, after a comma, what
    `--weights diamond` would do), 'diamond (cached)' or 'diamond (download)'."""
    from weights import hub
    from weights.sources import shipped_weights

    cached = hub.cached_file(hub.DIAMOND_REPO, hub.diamond_filename(game), hub.DIAMOND_REVISION) is not None
    diamond = "diamond (cached)" if cached else "diamond (download)"
    return f"shipped, {diamond}" if shipped_weights(game) is not None else diamond


def run(args: argparse.Namespace) -> int:
    from training.games import GAME_NAMES, MINIMAL_ACTION_COUNTS, TOY_GAMES
    from training.toy_env import ACTION_MEANINGS

    rows = [{"game": g, "actions": MINIMAL_ACTION_COUNTS[g], "weights": weights_origin(g)} for g in GAME_NAMES]
    toy = "none: a toy game to train on (train --preset catch)"
    rows += [{"game": g, "actions": len(ACTION_MEANINGS), "weights": toy} for g in TOY_GAMES]
    if args.json:
        import json

        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'game':<16}{'actions':>8}  weights")
    for row in rows:
        print(f"{row['game']:<16}{row['actions']:>8}  {row['weights']}")
    print("\nshipped: in dreamarcade's package; diamond: DIAMOND's released agent (eloialonso/diamond on the Hub),"
          "\ncached or downloaded on first use (`dreamarcade download GAME` fetches it ahead of time).")
    return 0
