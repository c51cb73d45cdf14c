"""What the user can fix is one line on stderr; anything else is a bug and keeps its traceback."""
from __future__ import annotations

import pytest

import app.commands.games
from app.cli import main
from weights.errors import NotFound, Offline, UserError


def test_user_errors_from_deep_layers_are_one_line(tmp_path, capsys):
    garbage = tmp_path / "agent.safetensors"
    garbage.write_bytes(b"\x9f\x3a" * 64)
    assert main(["eval", "--weights", str(garbage), "--game", "Breakout", "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dreamarcade eval: error: ") and str(garbage) in err and err.count("\n") == 1
    assert main(["eval", "--weights", str(tmp_path / "nothing"), "--game", "Pong", "--episodes", "1"]) == 2
    assert "not found" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    def broken(args):
        raise ValueError("an index went wrong")  # a plain ValueError: not something the user can fix

    monkeypatch.setattr(app.commands.games, "run", broken)
    with pytest.raises(ValueError, match="an index went wrong"):
        main(["games"])
    assert "error:" not in capsys.readouterr().err


def test_typed_user_errors_are_the_builtin_exceptions_too():
    assert issubclass(NotFound, FileNotFoundError) and issubclass(Offline, ConnectionError)
    assert issubclass(NotFound, UserError) and issubclass(UserError, ValueError)
