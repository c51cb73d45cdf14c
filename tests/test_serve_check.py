"""The serve check of `eval --fidelity`: ball counting, real serve and in-flight clips, the shares it reports."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from app.cli import main
from model.agent import Agent
from model.presets import tiny
from training.fidelity import STRIP_HEADER_H
from training.scripted import FIRE
from training.serve_check import (ServeCheckConfig, ball_centres, count_balls, measure_serves, paddle_at_wall,
                                  record_at_wall, record_in_flight, record_serves)

pytestmark = pytest.mark.usefixtures("one_thread")
CONTEXT = tiny(4).denoiser.num_steps_conditioning


def test_count_balls_counts_blobs_between_bricks_and_paddle():
    frames = np.zeros((5, 3, 64, 64), dtype=np.uint8)
    frames[1, 0, 40:42, 20] = 200  # one ball (2 pixels tall)
    frames[2, 0, 40:42, 20] = 200
    frames[2, 0, 50, 40] = 200  # and a second one
    frames[3, 0, 40, 20] = frames[3, 0, 41, 21] = 200  # touching diagonally: one ball
    frames[4, 0, 10, 20] = 200  # among the bricks: not counted
    frames[4, 1, 45, 30] = 50  # too dark to be a ball
    assert count_balls(frames).tolist() == [0, 1, 2, 1, 0]
    assert count_balls(torch.from_numpy(frames).reshape(5, 1, 3, 64, 64)).shape == (5, 1)
    centres = ball_centres(frames)
    assert centres[0] == [] and centres[1] == [(40.5, 20.0)] and sorted(centres[2]) == [(40.5, 20.0), (50.0, 40.0)]
    assert centres[3] == [(40.5, 20.5)]


def test_real_clips_serve_at_the_first_step_and_fire_in_flight_does_nothing():
    serves = record_serves("Breakout", 4, CONTEXT, 3, seed=1)
    balls = count_balls(serves.obs)
    assert serves.obs.shape == (4, CONTEXT + 3, 3, 64, 64)
    assert (balls[:, :CONTEXT] == 0).all() and (balls[:, CONTEXT:] == 1).all()  # no ball, FIRE, a ball
    assert (serves.act[:, CONTEXT - 1] == FIRE).all()
    flights = record_in_flight("Breakout", 4, CONTEXT, 3, seed=1)
    balls = count_balls(flights.obs)
    assert (balls[:, CONTEXT - 1] == 1).all() and (balls[:, CONTEXT:] <= 1).all()
    assert (flights.act[:, CONTEXT - 1:-1] == FIRE).all()


def test_real_wall_clips_stay_for_two_left_presses_and_leave_on_the_third():
    walls = record_at_wall("Breakout", 3, CONTEXT, 7, seed=2)
    stay, leave = walls["two_left"], walls["three_left"]
    assert stay.obs.shape == leave.obs.shape == (3, CONTEXT + 7, 3, 64, 64)
    assert (stay.obs[:, :CONTEXT] == leave.obs[:, :CONTEXT]).all()  # the same context, at the wall
    assert paddle_at_wall(stay.obs).all() and (count_balls(stay.obs) == 0).all()
    at_wall = paddle_at_wall(leave.obs[:, CONTEXT:])
    assert at_wall[:, :2].all() and not at_wall[:, 2:].any()  # the 3rd LEFT press
    assert (stay.act[:, CONTEXT - 1:-1] == torch.tensor([3, 3, 0, 0, 0, 0, 0])).all()  # padded with NOOP to 7
    assert (stay.act[:, :CONTEXT - 1] == 2).all()  # RIGHT into the wall


def _drawing(agent: Agent, ball: bool) -> Agent:
    """A denoiser that repeats the last context frame, and with `ball` also draws a ball at row 44, column 8."""
    def denoise(x, sigma, obs, act):
        out = obs[:, -1].clone()
        if ball:
            out[:, :, 44, 8] = 1.0
        return out
    agent.denoiser.denoise = denoise
    return agent


def test_a_model_that_always_draws_a_ball_serves_and_doubles_one_that_never_does_neither():
    cfg = ServeCheckConfig(clips=4, steps=2, denoising_steps=1)
    never = measure_serves(_drawing(Agent(tiny(4)).eval(), ball=False), "Breakout", cfg)
    always = measure_serves(_drawing(Agent(tiny(4)).eval(), ball=True), "Breakout", cfg)
    assert never["serve"] == never["noop"] == never["second_ball"] == [0.0, 0.0]
    assert always["serve"] == always["noop"] == always["second_ball"] == [1.0, 1.0]
    assert never["serve_real"] == [1.0, 1.0] and never["second_ball_real"] == [0.0, 0.0]
    assert never["serve_two"] == always["serve_two"] == [0.0, 0.0]  # one ball drawn where none was
    # repeating the last frame keeps the ball where it was: drawn, but one step on it has flown away from it
    assert never["in_flight_drawn"] == [1.0, 1.0] and never["in_flight_near"][1] < 1.0
    # repeating the last frame never leaves the wall: right after LEFT LEFT, wrong after the third LEFT
    assert never["wall_two_left"] == never["wall_two_left_real"] == never["wall_three_left"] == [1.0, 1.0]
    assert always["strip"].shape[0] == 9 * (STRIP_HEADER_H + 2 + 2 * 128 + 4)  # 3 serves, 3 in flight, 3 at the wall
    few = measure_serves(_drawing(Agent(tiny(4)).eval(), ball=False), "Breakout", ServeCheckConfig(clips=1, steps=2))
    assert few["clips"] == 1 and few["strip"].shape[0] == 3 * (STRIP_HEADER_H + 2 + 2 * 128 + 4)  # 1 of each


def test_eval_fidelity_reports_the_serves(tmp_path, capsys):
    from weights import save_agent

    torch.manual_seed(0)
    path = save_agent(Agent(tiny(4)), tmp_path / "tiny", metadata={"game": "Breakout"})
    out = tmp_path / "fid"
    argv = ["eval", "--fidelity", "--weights", str(path), "--game", "Breakout", "--horizon", "2", "--contexts", "1",
            "--denoising-steps", "1", "--board-steps", "0", "--serve-clips", "3", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "a ball after FIRE with none in play" in printed and "2+ balls, FIRE with one in flight" in printed
    assert "paddle pushed into the wall, LEFT LEFT: still there" in printed
    saved = json.loads((out / "fidelity.json").read_text())["serves"]
    assert saved["clips"] == 3 and saved["serve_real"] == [1.0] * 6 and saved["second_ball_real"] == [0.0] * 6
    assert saved["wall_two_left_real"] == [1.0] * 6 and saved["wall_three_left_real"] == [1.0, 1.0] + [0.0] * 4
    assert (out / "serves.png").is_file()
