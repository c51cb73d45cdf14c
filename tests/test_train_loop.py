"""The training loop end to end on the toy game: a tiny run is killed (SIGKILL), resumes and finishes with
counters that continue; a finished run says so; the run directory holds what a user opens."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from training.optim import ModelOptimizer, OptimConfig, param_groups
from training.presets import PRESETS, TrainConfig, get_preset
from training.run_dir import RunDir
from training.tensorboard_log import read_scalars

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}  # no OpenMP spin-waits on a shared CPU


def dreamarcade(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "app", *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def metrics_epochs(run: Path) -> list[int]:
    return [row["epoch"] for row in RunDir(run).read_metrics()]


def checkpoint_epoch(run: Path) -> int:
    try:
        return torch.load(run / "checkpoint.pt", weights_only=True)["counters"]["epoch"]
    except FileNotFoundError:
        return -1


def test_tiny_run_killed_resumes_and_finishes(tmp_path):
    run = tmp_path / "run"
    args = ["train", "--game", "Catch", "--preset", "tiny", "--run-dir", str(run), "--seed", "1", "--no-progress"]
    proc = dreamarcade(*args, "--epochs", "2")
    deadline = time.time() + 400
    while checkpoint_epoch(run) < 1:  # epoch 1 is saved: kill it while it works on epoch 2
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "epoch 1 never finished"
        time.sleep(0.2)
    first_out = []
    for line in proc.stdout:  # epoch 1's line comes once its checkpoint, weights and plots are written
        first_out.append(line)
        if line.startswith("epoch 1/"):
            break
    assert first_out[0].startswith("device: cpu (") and first_out[-1].startswith("epoch 1/2 (of 3) steps"), first_out
    episodes_at_kill = {p.name for p in (run / "store").iterdir()}
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "finished").exists()
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    killed_at = ckpt["counters"]["epoch"]
    assert killed_at >= 1

    again = subprocess.run([sys.executable, "-m", "app", *args, "--epochs", "2"], cwd=ROOT, capture_output=True,
                           text=True, env=ENV)
    assert again.returncode == 2 and "--resume" in again.stderr  # no silent restart over an existing run

    proc = dreamarcade("train", "--run-dir", str(run), "--resume", "--no-progress")
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    # the end of a run: its return beside a random policy's (Catch: about -0.5), and where the weights are
    assert "epoch 3/3 steps" in out and "finished: 3 epochs" in out, out
    assert re.search(r"final test return -?\d\.\d\d over 1 episodes; a random policy: -0\.[45]\d", out), out
    assert f"weights: {run / 'weights'} (play them: dreamarcade play --weights {run / 'weights'})" in out

    cfg = get_preset("tiny")
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    c = ckpt["counters"]
    assert c["epoch"] == c["num_epochs"] == 3
    # counters continue: the updates of every epoch are counted exactly once across the kill
    for m in ("denoiser", "rew_end", "actor_critic"):
        mc = getattr(cfg, m)
        assert c["updates"][m] == mc.steps_first_epoch + 2 * mc.steps_per_epoch, m
    assert episodes_at_kill <= {p.name for p in (run / "store").iterdir()}, "episodes lost"
    epochs = metrics_epochs(run)
    assert epochs[0] == 0 and epochs[-1] == 3 and set(range(4)) <= set(epochs)
    assert json.loads((run / "finished").read_text())["finished"] is True

    # a finished run says so instead of starting again
    done = subprocess.run([sys.executable, "-m", "app", "train", "--run-dir", str(run), "--resume"],
                          cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert done.returncode == 0 and "finished" in done.stdout
    assert metrics_epochs(run) == epochs

    # what a user opens
    assert (run / "weights" / "agent.safetensors").exists()
    from weights import load_agent

    agent = load_agent(str(run / "weights"))
    assert agent.num_actions == 3
    assert {"denoiser.png", "rew_end.png", "actor_critic.png"} <= {p.name for p in (run / "plots").iterdir()}
    tb = list((run / "tensorboard").iterdir())
    tags = {tag for f in tb for _, tag, _ in read_scalars(f)}
    assert "denoiser/train/loss_denoising" in tags
    config = json.loads((run / "config.json").read_text())
    assert TrainConfig.from_dict(config["train"]).game == "Catch" and config["train"]["seed"] == 1


def test_cli_errors_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "app", "train", "--resume"], cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and "--run-dir" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "app", "train", "--game", "Brekout", "--preset", "tiny"],
                       cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and "Breakout" in r.stderr
    r = subprocess.run([sys.executable, "-m", "app", "train", "--game", "Pong", "--preset", "huge"],
                       cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and "tiny" in r.stderr
    r = subprocess.run([sys.executable, "-m", "app", "train", "--run-dir", str(tmp_path / "none"), "--resume"],
                       cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and "no training run to resume" in r.stderr
    if not torch.cuda.is_available():  # a device that is not there is refused before the run folder is made
        r = subprocess.run([sys.executable, "-m", "app", "train", "--game", "Catch", "--device", "cuda",
                            "--run-dir", str(tmp_path / "cuda")], cwd=ROOT, capture_output=True, text=True, env=ENV)
        assert r.returncode == 2 and "no CUDA device" in r.stderr and not (tmp_path / "cuda").exists()


def test_train_help_names_every_preset():
    from app.commands.train import PRESETS as CLI_PRESETS

    assert CLI_PRESETS == tuple(PRESETS)  # the CLI checks names before importing torch
    r = subprocess.run([sys.executable, "-m", "app", "train", "--help"], cwd=ROOT, capture_output=True, text=True,
                       env=ENV)
    for name in PRESETS:
        assert f"\n  {name} " in r.stdout, name  # described in the presets list


def test_time_left_counts_a_regular_epoch_not_the_first():
    """The first epoch does many more updates (catch: 300/500/80 instead of 40/40/30): the estimate after it
    counts each model's seconds per update at the regular number, plus the epoch's other work."""
    from types import SimpleNamespace

    from training.session import Session

    s = SimpleNamespace(cfg=get_preset("catch"),
                        _update_s={"denoiser": (30.0, 300), "rew_end": (25.0, 500), "actor_critic": (40.0, 80)})
    # 95 s of updates + 5 s of collection and saving; a regular epoch: 40 x 0.1 + 40 x 0.05 + 30 x 0.5 + 5 s
    assert Session._epoch_estimate(s, 100.0) == pytest.approx(26.0)
    s._update_s = {"denoiser": (4.0, 40), "rew_end": (2.0, 40), "actor_critic": (15.0, 30)}
    assert Session._epoch_estimate(s, 26.0) == pytest.approx(26.0)  # a regular epoch predicts itself


def test_presets_round_trip_through_json():
    for name in PRESETS:
        cfg = get_preset(name)
        assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    paper = get_preset("atari100k")
    assert (paper.denoiser.steps_per_epoch, paper.actor_critic.steps_first_epoch) == (400, 5000)
    assert paper.imagination.horizon == 15 and paper.actor_critic.batch_size == 32
    with pytest.raises(ValueError, match="unknown training config keys"):
        TrainConfig.from_dict({"gamma": 0.9})


def test_optimizer_weight_decay_split_warmup_and_state():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(2, 4), torch.nn.Flatten(),
                                torch.nn.LazyLinear(2))
    model(torch.zeros(1, 3, 5, 5))
    decay, no_decay = param_groups(model, 0.01)
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(no_decay["params"]) == 4  # conv bias, norm weight and bias, linear bias
    opt = ModelOptimizer(model, OptimConfig(lr=1e-2, warmup_steps=4))
    assert opt.lr == 0.0  # as the reference: the first step has lr 0
    before = [p.detach().clone() for p in model.parameters()]
    opt.step(model(torch.randn(2, 3, 5, 5)).pow(2).sum())
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
    for _ in range(5):
        opt.step(model(torch.randn(2, 3, 5, 5)).pow(2).sum())
    assert opt.lr == pytest.approx(1e-2) and opt.num_steps == 6
    other = ModelOptimizer(model, OptimConfig(lr=1e-2, warmup_steps=4))
    other.load_state_dict(opt.state_dict())
    assert other.num_steps == 6 and other.lr == pytest.approx(1e-2)


def test_checkpoint_is_atomic_and_validated(tmp_path):
    run = RunDir(tmp_path)
    run.save_checkpoint({"x": torch.arange(3)})
    assert torch.equal(run.load_checkpoint()["x"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    run.checkpoint_path.write_bytes(run.checkpoint_path.read_bytes()[:20])
    with pytest.raises(ValueError, match="checkpoint.pt"):
        run.load_checkpoint()


def test_static_dataset_mode_trains_the_world_model_only(tmp_path):
    import dataclasses

    import training.toy_env  # noqa: F401
    from training.collect import Collector, RandomPolicy, VecSource
    from training.episode_store import EpisodeStore
    from training.loop import train

    recordings = tmp_path / "recordings"
    collector = Collector(VecSource("dreamarcade/Catch-v0", 2, train=True), EpisodeStore(recordings), seed=0)
    collector.collect(RandomPolicy(3, seed=0), num_episodes=10)
    collector.close()
    cfg = dataclasses.replace(get_preset("tiny"), game="my-recordings", seed=0)
    summary = train(cfg, tmp_path / "run", dataset=str(recordings), progress=False)
    assert summary["finished"] and summary["updates"]["actor_critic"] == 0
    assert summary["updates"]["denoiser"] == cfg.denoiser.steps_first_epoch + 2 * cfg.denoiser.steps_per_epoch
    assert not (tmp_path / "run" / "store").exists()  # the user's folder is the data; nothing is collected
    from weights import load_agent

    assert load_agent(str(tmp_path / "run" / "weights")).num_actions == 3  # inferred from the recordings
