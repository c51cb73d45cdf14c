"""Game names: the 26 Atari 100k games (ALE ids, score constants), the toy games, and the one resolver of names.

Random and human scores are the standard Atari 100k constants (IRIS's RANDOM.json / HUMAN.json, human =
30-minute cap); DIAMOND's published scores are in training/data/diamond_atari100k.json (training.aggregate).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from weights.errors import UserError


@dataclass(frozen=True)
class Game:
    name: str          # canonical name, e.g. "MsPacman"
    rom: str           # ale-py ROM id, e.g. "ms_pacman"
    random_score: float
    human_score: float

    @property
    def env_id(self) -> str:
        """gymnasium id registered by ale-py, e.g. "ALE/MsPacman-v5"."""
        return f"ALE/{self.name}-v5"


_TABLE = [
    # name, rom, random, human
    ("Alien", "alien", 227.8, 7127.7),
    ("Amidar", "amidar", 5.8, 1719.5),
    ("Assault", "assault", 222.4, 742.0),
    ("Asterix", "asterix", 210.0, 8503.3),
    ("BankHeist", "bank_heist", 14.2, 753.1),
    ("BattleZone", "battle_zone", 2360.0, 37187.5),
    ("Boxing", "boxing", 0.1, 12.1),
    ("Breakout", "breakout", 1.7, 30.5),
    ("ChopperCommand", "chopper_command", 811.0, 7387.8),
    ("CrazyClimber", "crazy_climber", 10780.5, 35829.4),
    ("DemonAttack", "demon_attack", 152.1, 1971.0),
    ("Freeway", "freeway", 0.0, 29.6),
    ("Frostbite", "frostbite", 65.2, 4334.7),
    ("Gopher", "gopher", 257.6, 2412.5),
    ("Hero", "hero", 1027.0, 30826.4),
    ("Jamesbond", "jamesbond", 29.0, 302.8),
    ("Kangaroo", "kangaroo", 52.0, 3035.0),
    ("Krull", "krull", 1598.0, 2665.5),
    ("KungFuMaster", "kung_fu_master", 258.5, 22736.3),
    ("MsPacman", "ms_pacman", 307.3, 6951.6),
    ("Pong", "pong", -20.7, 14.6),
    ("PrivateEye", "private_eye", 24.9, 69571.3),
    ("Qbert", "qbert", 163.9, 13455.0),
    ("RoadRunner", "road_runner", 11.5, 7845.0),
    ("Seaquest", "seaquest", 68.4, 42054.7),
    ("UpNDown", "up_n_down", 533.4, 11693.2),
]

GAMES: dict[str, Game] = {row[0]: Game(*row) for row in _TABLE}
GAME_NAMES: tuple[str, ...] = tuple(GAMES)


# Toy games (training.toy_env registers them): canonical name -> gymnasium id.
TOY_GAMES = {"Catch": "dreamarcade/Catch-v0"}
_TOY_BY_KEY = {name.lower(): name for name in TOY_GAMES}

# DIAMOND section 2, measured with ALE's minimal action sets.
MINIMAL_ACTION_COUNTS = {
    **dict.fromkeys(["Alien", "BankHeist", "BattleZone", "Boxing", "ChopperCommand", "Frostbite", "Hero",
                     "Jamesbond", "Kangaroo", "Krull", "PrivateEye", "RoadRunner", "Seaquest"], 18),
    "KungFuMaster": 14, "Amidar": 10, "Asterix": 9, "CrazyClimber": 9, "MsPacman": 9, "Gopher": 8,
    "Assault": 7, "DemonAttack": 6, "Pong": 6, "Qbert": 6, "UpNDown": 6, "Breakout": 4, "Freeway": 3,
}


def _key(name: str) -> str:
    """Case- and separator-insensitive key: "ms_pacman", "Ms-Pacman", "ALE/MsPacman-v5" -> "mspacman"."""
    name = name.strip()
    name = re.sub(r"^ALE/", "", name, flags=re.IGNORECASE)
    name = re.sub(r"(NoFrameskip)?-v\d+$", "", name, flags=re.IGNORECASE)
    return re.sub(r"[\s_\-.]", "", name).lower()


_BY_KEY = {_key(g.name): g.name for g in GAMES.values()}


def resolve_game(name: str) -> str:
    """The canonical name of a game, the one resolver of game names:
    - one of the 26 Atari 100k games in any spelling: "breakout", "ms_pacman", "ALE/Pong-v5", "PongNoFrameskip-v4";
    - a toy game: "catch" -> "Catch";
    - any other gymnasium id, kept as given: a name with a "/" ("ALE/SpaceInvaders-v5", "MyGames/Maze-v0") or
      one gymnasium has registered ("CartPole-v1"; `training.atari_env.make_env` says if it is not an image game).

    Raises UserError with one line naming the closest games otherwise.
    """
    name = str(name).strip()
    found = _BY_KEY.get(_key(name)) or _TOY_BY_KEY.get(name.lower())
    if found is not None:
        return found
    if "/" in name or _registered(name):
        return name
    choices = {**_BY_KEY, **_TOY_BY_KEY}
    close = difflib.get_close_matches(_key(name), list(choices), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(choices[c] for c in close)}?" if close else "run `dreamarcade games` for the list."
    raise UserError(f"unknown game {name!r}: {hint}")


def _registered(name: str) -> bool:
    import gymnasium  # only for names that are not ours, so that `dreamarcade games` starts without it

    return name in gymnasium.registry


def is_atari_game(name: str) -> bool:
    """True when `name` resolves to one of the 26 Atari 100k games."""
    return _key(str(name)) in _BY_KEY


def get_game(name: str) -> Game:
    """The `Game` record of one of the 26 Atari 100k games, in any spelling; UserError for any other game."""
    game = resolve_game(name)
    if game not in GAMES:
        raise UserError(f"{game} is not one of the 26 Atari 100k games (it has no Atari 100k scores)")
    return GAMES[game]


def env_id(game: str) -> str:
    """The gymnasium id that plays `game` (any name `resolve_game` accepts): ALE/{Game}-v5, a toy game's id,
    or the id as given."""
    game = resolve_game(game)
    return GAMES[game].env_id if game in GAMES else TOY_GAMES.get(game, game)
