"""The command line as a new user meets it: what `games` lists, options named apart, the device line, and
bad arguments refused before torch is imported (importing it alone takes seconds)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYGAME_HIDE_SUPPORT_PROMPT": "1"}

# Runs the CLI in a fresh interpreter and says whether torch was imported by the time it returned.
PROBE = "import sys; from app.cli import main; rc = main(sys.argv[1:]); print('torch' in sys.modules); sys.exit(rc)"


def dreamarcade(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=120)


def test_games_lists_the_toy_game_that_train_accepts():
    out = dreamarcade("games", "--json")
    assert out.returncode == 0, out.stderr
    rows = {row["game"]: row for row in json.loads(out.stdout)}
    assert len(rows) == 27 and rows["Catch"]["actions"] == 3 and rows["Pong"]["actions"] == 6
    assert "train" in rows["Catch"]["weights"]
    from app.commands.train import _game_name

    assert _game_name("catch", None) == "Catch"


@pytest.mark.parametrize("argv,message", [
    (["play", "--game", "Brekout"], "unknown game 'Brekout': did you mean Breakout?"),
    (["play", "--fps", "0"], "--fps must be positive, not 0"),
    (["eval", "--game", "Pongg"], "unknown game 'Pongg': did you mean Pong?"),
    (["eval", "--game", "Breakout", "--episodes", "0"], "--episodes must be at least 1, got 0"),
    (["eval", "--fidelity", "--game", "Breakout", "--horizon", "0"], "--horizon must be at least 1, got 0"),
    (["eval", "--fidelity", "--game", "Breakout", "--contexts", "0"], "--contexts must be at least 1, got 0"),
    (["eval", "--fidelity", "--game", "Breakout", "--serve-clips", "-1"], "--serve-clips must be at least 0, got -1"),
    (["play", "--denoising-steps", "0"], "--denoising-steps must be at least 1, got 0"),
    (["train", "--game", "Brekout"], "unknown game 'Brekout': did you mean Breakout?"),
    (["train", "--game", "Pong", "--preset", "small"], "unknown preset 'small'; choose one of: atari100k, consumer, "
                                                       "cpu, breakout, tiny, catch"),
    (["train", "--game", "Pong", "--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["train", "--game", "Pong", "--keep-weights-every", "-1"], "--keep-weights-every must be 0 (off) or more, not -1"),
    (["train", "--game", "Pong", "--world-model-lr", "0"], "--world-model-lr must be between 0 and 1 (e.g. 2e-5), not 0.0"),
])
def test_bad_arguments_fail_before_torch_is_imported(argv, message):
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and out.stderr == f"dreamarcade {argv[0]}: error: {message}\n", out.stderr
    assert out.stdout.strip() == "False"  # torch never imported


def test_bench_model_size_is_not_called_a_preset():
    help_text = dreamarcade("bench", "--help").stdout
    assert "--model SIZE" in help_text and "--preset" not in help_text
    out = dreamarcade("bench", "--model", "cpu")  # a training preset's name is not a model size
    assert out.returncode == 2 and "unknown model size 'cpu'; choose one of: atari100k, small, small-residual, tiny" in out.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the machine without a GPU")
def test_device_line_comes_first_and_cpu_is_said_to_be_a_fallback(tmp_path):
    out = dreamarcade("play", "--mode", "real", "--controller", "random", "--headless", "--steps", "2")
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith("device: cpu (") and first.endswith("no CUDA or MPS device found)")
    out = dreamarcade("play", "--mode", "real", "--controller", "random", "--headless", "--steps", "2",
                      "--device", "cpu")
    assert out.stdout.splitlines()[0].endswith(", as asked)")
