"""Sub-commands of `dreamarcade`: each has add_parser(sub, name, help) and run(args)."""
from __future__ import annotations

import argparse

from weights.errors import UserError


def require_at_least(args: argparse.Namespace, minimum: int, *names: str) -> None:
    """Raises UserError for the first of the options `names` (argparse dest names) given a value under `minimum`;
    an option left out (None) passes."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise UserError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")
