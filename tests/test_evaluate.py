"""Test episodes under the protocol: real ALE Breakout, a tiny untrained agent, few steps."""
from __future__ import annotations

import json

import pytest
import torch

from app.cli import main
from model.agent import Agent
from model.presets import tiny
from training.evaluate import evaluate


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def agent() -> Agent:
    torch.manual_seed(0)
    return Agent(tiny(4)).eval()  # Breakout has 4 actions


def test_episodes_are_cut_and_reproducible(agent):
    a = evaluate(agent, "breakout", episodes=3, seed=5, num_envs=2, max_episode_steps=12)
    assert a["game"] == "Breakout" and a["episodes"] == 3
    assert len(a["returns"]) == 3 and a["lengths"] == [12, 12, 12]
    assert a["truncated"] == 3
    assert a["mean_return"] == pytest.approx(sum(a["returns"]) / 3)
    assert a["hns"] == pytest.approx((a["mean_return"] - 1.7) / (30.5 - 1.7))
    json.dumps(a)
    # Each episode has its own seed and action stream: the number of parallel envs changes nothing.
    b = evaluate(agent, "Breakout", episodes=3, seed=5, num_envs=3, max_episode_steps=12)
    assert a["returns"] == b["returns"]


def test_full_game(agent):
    """A full test game runs to game over (no end at life loss), with its raw score."""
    result = evaluate(agent, "Breakout", episodes=1, seed=0, num_envs=1)
    assert result["truncated"] == 0
    assert result["lengths"][0] > 50  # five lives of random play: well over one life's worth of steps
    assert result["returns"][0] >= 0 and float(result["returns"][0]).is_integer()


def test_action_count_mismatch():
    with pytest.raises(ValueError, match="6 actions but Breakout has 4"):
        evaluate(Agent(tiny(6)), "Breakout", episodes=1, max_episode_steps=1)


def test_cli_weights(agent, tmp_path, capsys):
    from weights import save_agent

    path = save_agent(agent, tmp_path / "tiny", metadata={"game": "Breakout"})
    out = tmp_path / "eval.json"
    argv = ["eval", "--weights", str(path), "--game", "Breakout", "--episodes", "2", "--max-steps", "10",
            "--seed", "3", "--json", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["weights"] == str(path) and result["lengths"] == [10, 10]
    assert {"mean_return", "std_return", "hns", "returns"} <= set(result)
    assert "mean return" in capsys.readouterr().out


def test_cli_unknown_game(capsys):
    assert main(["eval", "--game", "Brekout", "--episodes", "1"]) == 2
    assert "Breakout" in capsys.readouterr().err  # the close match is named


def test_toy_game_has_no_human_normalized_score():
    torch.manual_seed(0)
    result = evaluate(Agent(tiny(3)), "catch", episodes=3, num_envs=2)
    assert result["game"] == "Catch" and result["hns"] is None
    assert all(r in (-1.0, 1.0) for r in result["returns"])  # one catch or miss per game
