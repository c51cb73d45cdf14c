"""The weights shipped in weights/shipped/: `dreamarcade play` with no arguments works with no network."""
import json
import os
import subprocess
import sys

from safetensors import safe_open

from weights import load_agent
from weights.sources import shipped_weights


def test_shipped_breakout_loads_and_describes_itself():
    path = shipped_weights("Breakout")
    assert path is not None and path.stat().st_size < 10_000_000  # small enough to ship
    with safe_open(str(path), "pt") as f:
        info = json.loads(f.metadata()["info"])
    assert info["game"] == "Breakout" and "dreamarcade train" in info["trained_with"]
    agent = load_agent(None, "Breakout")
    assert agent.num_actions == 4 and not agent.training
    # the dream settings the README's figures were measured with travel in the file
    assert agent.denoising_steps == 2 and agent.still_levels == 4


def test_play_without_arguments_runs_offline_from_shipped_weights(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty-hf-home"), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "app", "play", "--headless", "--steps", "20"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Breakout (imagine" in out.stdout + out.stderr
    # one line says which weights, and how to get the better ones
    assert "weights: shipped weights" in out.stdout and "dreamarcade download Breakout" in out.stdout
