"""What the user can fix, told apart from bugs (as Gymnasium's `gymnasium.error`).

A `UserError` is raised for what the user can fix: a bad game name or option, a missing, corrupt or foreign
file, a finished or missing run, no network for a download. The command line prints its message as one
line and exits with status 2; any other exception is a bug and keeps its traceback. The typed subclasses
are also the built-in exception a caller would expect (`except FileNotFoundError` still catches `NotFound`).
Defined in `weights/` so that `weights`, `training` and `app` raise the same classes (`model` raises none).
"""
from __future__ import annotations


class UserError(ValueError):
    """Bad input the user can correct; the message says what was found, in one line."""


class NotFound(UserError, FileNotFoundError):
    """A file, folder, run or Hub repository the user named does not exist."""


class Offline(UserError, ConnectionError):
    """A download the user asked for cannot be made now (no network, nothing cached, the Hub failing)."""


class NotAllowed(UserError, PermissionError):
    """The user's credentials do not allow it (a gated repository, no write access)."""
