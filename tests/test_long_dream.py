"""The long-dream board check of `eval --fidelity`: static pixels from real play, masked PSNR, a 1000-step dream."""
from __future__ import annotations

import json

import pytest
import torch

from app.cli import main
from model.agent import Agent
from model.presets import tiny
from training.fidelity import MAX_PSNR
from training.long_dream import BoardConfig, board_strip, masked_psnr, measure_board, static_board

pytestmark = pytest.mark.usefixtures("one_thread")


def test_masked_psnr_counts_only_the_masked_pixels():
    ref = torch.full((3, 8, 8), 100, dtype=torch.uint8)
    frames = ref.repeat(2, 1, 1, 1)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:4] = True
    frames[0, :, 4:] = 0  # outside the mask: ignored
    frames[1, :, :4] = 110  # inside: an error of 10 levels everywhere -> 20 log10(255 / 10)
    p = masked_psnr(frames, ref, mask)
    assert p[0].item() == MAX_PSNR
    assert p[1].item() == pytest.approx(20 * torch.log10(torch.tensor(25.5)).item(), abs=1e-4)


def test_breakout_static_board_has_the_walls_not_the_paddle_or_the_broken_bricks():
    mask, ref = static_board("Breakout", 64, num_steps=1500, seed=0)
    assert mask.shape == (64, 64) and ref.shape == (3, 64, 64)
    grey = ref.float().mean(0)
    assert mask[30, 1] and grey[30, 1] > 100  # the left wall, half-way down: grey and never changing
    assert mask[10:16, 8:56].all() and (ref[:, 10:16, 8:56] == 0).all()  # the black band above the bricks
    assert (~mask[56:60, 8:56]).any()  # where the paddle moved
    assert (~mask[17:29, 4:60]).any()  # the scripted player breaks bricks: those pixels are not static
    assert (~mask[35:50, 4:60]).float().mean() > 0.8  # the ball crosses most of the open field
    assert 0.3 < mask.float().mean() < 0.8


def _copying(agent: Agent) -> Agent:
    """A denoiser that returns the last context frame at every noise level: the dream never changes."""
    agent.denoiser.denoise = lambda x, sigma, obs, act: obs[:, -1]
    return agent


def test_a_model_that_keeps_the_board_scores_the_maximum_and_a_random_one_does_not():
    torch.manual_seed(0)
    cfg = BoardConfig(steps=(3, 40), dreams=2, real_steps=800, denoising_steps=1)
    random_model = measure_board(Agent(tiny(4)).eval(), "Breakout", cfg)
    keeper = measure_board(_copying(Agent(tiny(4)).eval()), "Breakout", cfg)
    assert set(keeper["board_psnr"]) == {3, 40}
    assert keeper["board_psnr"][40] > 45  # the real frame's static pixels, kept for 40 steps (restarts included)
    assert random_model["board_psnr"][40] < 20  # an untrained denoiser draws noise
    strip = board_strip(keeper)
    assert strip.shape[:2] == (3 * (128 + 2) + 2, 2 * (128 + 2) + 2)


def test_eval_fidelity_reports_the_board(tmp_path, capsys):
    from weights import save_agent

    torch.manual_seed(0)
    path = save_agent(Agent(tiny(4)), tmp_path / "tiny", metadata={"game": "Breakout"})
    out = tmp_path / "fid"
    argv = ["eval", "--fidelity", "--weights", str(path), "--game", "Breakout", "--horizon", "2", "--contexts", "1",
            "--denoising-steps", "1", "--policy", "random", "--board-steps", "2,5", "--board-dreams", "2",
            "--serve-clips", "0", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "board PSNR" in printed and (out / "board.png").is_file()
    assert f"weights: {path}" in printed  # one line says which weights are measured
    board = json.loads((out / "fidelity.json").read_text())["board"]
    assert set(board["board_psnr"]) == {"2", "5"} and board["dreams"] == 2
    with pytest.raises(SystemExit):
        main(argv[:-2] + ["--board-steps", "a,b", "--out", str(out)])
