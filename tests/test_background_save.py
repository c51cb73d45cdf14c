"""Checkpoints written in the background: what lands on disk is the state at `save`, whatever the next updates
change in place meanwhile, and a write that fails stops the run with a clear error instead of being lost."""
from __future__ import annotations

import dataclasses
import threading

import pytest
import torch
from safetensors.torch import load_file

from app.bench import synthetic_batch
from training.ddp import init_world
from training.loop import train
from training.presets import get_preset
from training.run_dir import RunDir
from training.session import Session
from training.updates import denoiser_update
from weights.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_session(path) -> Session:
    cfg = dataclasses.replace(get_preset("tiny"), game="Catch", seed=3)
    return Session.open(cfg, RunDir(path), init_world("cpu"), resume=False, dataset=None, progress=False)


def test_saved_files_hold_the_state_at_save_not_what_the_next_updates_change(tmp_path):
    s = tiny_session(tmp_path)
    agent, opt = s.agent, s.optims["denoiser"]
    batch = synthetic_batch(2, 6, agent.config.img_size, agent.num_actions)
    denoiser_update(agent, batch, opt)  # the optimizer has moments and a step count to save
    name, p = next(iter(agent.denoiser.named_parameters()))
    moment = opt.optimizer.state[p]["exp_avg"]
    at_save = {"param": p.detach().clone(), "moment": moment.clone(), "lr": opt.lr}

    started, go = threading.Event(), threading.Event()
    write = s.run.save_checkpoint

    def held_write(state):  # the real write, held until the next update has run
        started.set()
        go.wait(60)
        write(state)

    s.run.save_checkpoint = held_write
    s.save({})
    assert started.wait(60)
    denoiser_update(agent, batch, opt)  # while the write is in flight: params, moments and the device lr change
    with torch.no_grad():
        p.add_(1.0)
    go.set()
    s.wait_saved()

    ckpt = s.run.load_checkpoint()
    assert torch.equal(ckpt["agent"][f"denoiser.{name}"], at_save["param"])
    saved_opt = ckpt["optimizers"]["denoiser"]
    assert torch.equal(saved_opt["optimizer"]["state"][_index_of(opt.optimizer, p)]["exp_avg"], at_save["moment"])
    assert float(saved_opt["optimizer"]["param_groups"][0]["lr"]) == pytest.approx(at_save["lr"])
    assert saved_opt["scheduler"]["last_epoch"] == 1
    weights = load_file(s.run.weights_path / "agent.safetensors")
    assert torch.equal(weights[f"denoiser.{name}"], at_save["param"])
    assert not torch.equal(p.detach(), at_save["param"])  # the test changed what it should have changed
    s.close()


def _index_of(optimizer, p) -> int:
    """A parameter's index in the optimizer's state dict (torch numbers them in group order)."""
    params = [q for g in optimizer.param_groups for q in g["params"]]
    return next(i for i, q in enumerate(params) if q is p)


def test_a_failed_write_stops_the_next_save_and_close_with_a_clear_error(tmp_path):
    s = tiny_session(tmp_path)
    s.save({})
    s.wait_saved()
    s.run.checkpoint_path.unlink()
    s.run.checkpoint_path.mkdir()  # the next checkpoint cannot be renamed into place
    s.counters.epoch = 1
    s.save({})
    with pytest.raises(UserError, match=r"could not write epoch 1's checkpoint .*checkpoint\.pt.*Is a directory"):
        s.save({})
    s.save({})  # the error was raised once; the next write fails again, and close says so too
    with pytest.raises(UserError, match="could not write epoch 1's checkpoint"):
        s.close()


def test_a_run_whose_last_checkpoint_fails_is_not_marked_finished(tmp_path):
    """The loop waits for the last write before marking the run finished: its error ends `train`."""
    cfg = dataclasses.replace(get_preset("tiny"), game="Catch", seed=4, total_real_steps=200, num_final_epochs=0,
                              final_eval_episodes=1)  # no epochs: the initial collection, its save, the final test
    run = RunDir(tmp_path / "run")
    run.checkpoint_path.mkdir()
    with pytest.raises(UserError, match="could not write epoch 0's checkpoint"):
        train(cfg, run, device="cpu", progress=False)
    assert not run.is_finished and run.checkpoint_path.is_dir()
