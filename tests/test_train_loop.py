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

from app.cli import main
from training.episode_store import EpisodeStore
from training.optim import ModelOptimizer, OptimConfig, param_groups
from training.presets import PRESETS, TrainConfig, get_preset
from training.run_dir import RunDir
from training.tensorboard_log import read_scalars
from weights.errors import UserError

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


def stored_steps(run: Path) -> int:
    return EpisodeStore(run / "store").num_steps if (run / "store").exists() else 0


def kill_when(proc, ready, what: str) -> None:
    """SIGKILL `proc` as soon as ready() (or let it be, if it ended first)."""
    deadline = time.time() + 400
    while not ready() and proc.poll() is None:
        assert time.time() < deadline, f"never reached: {what}"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_tiny_run_killed_again_and_again_keeps_its_budget_and_finishes(tmp_path, capsys):
    """Killed (SIGKILL) in the initial collection, in epoch 1 and in epoch 2, resumed each time: the run
    collects exactly its real-step budget, logs each epoch once, counts each update once, loses no episode."""
    run = tmp_path / "run"
    args = ["train", "--game", "Catch", "--preset", "tiny", "--run-dir", str(run), "--seed", "1", "--no-progress"]
    resume = ["train", "--run-dir", str(run), "--resume", "--no-progress"]
    cfg = get_preset("tiny")
    kill_when(dreamarcade(*args), lambda: any((run / "store").glob("*.npz")), "an episode stored")
    kill_when(dreamarcade(*resume), lambda: stored_steps(run) > cfg.initial_steps_min and checkpoint_epoch(run) < 1,
              "epoch 1 collected")
    # epoch 0's checkpoint (which fixes the initial collection's size) is on disk before epoch 1 collects more
    assert checkpoint_epoch(run) >= 0
    kill_when(dreamarcade(*resume), lambda: checkpoint_epoch(run) >= 1, "epoch 1 saved")
    assert not (run / "finished").exists()
    assert main(args) == 2 and "--resume" in capsys.readouterr().err  # no silent restart over an existing run
    episodes_at_kill = {p.name for p in (run / "store").iterdir()}

    proc = dreamarcade(*resume)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    # the end of a run: its return beside a random policy's (Catch: about -0.5), and where the weights are
    assert "epoch 3/3 steps" in out and "finished: 3 epochs" in out, out
    assert re.search(r"final test return -?\d\.\d\d over 1 episodes; a random policy: -0\.[45]\d", out), out
    assert f"weights: {run / 'weights'} (play them: dreamarcade play --weights {run / 'weights'})" in out

    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    c = ckpt["counters"]
    assert c["epoch"] == c["num_epochs"] == 3
    # the budget: 200 initial steps, then 100 per collection epoch, whatever was killed on the way
    assert c["initial_steps"] == cfg.initial_steps_min
    assert stored_steps(run) == c["real_steps"] == cfg.total_real_steps == 400
    # counters continue: the updates of every epoch are counted exactly once across the kills
    for m in ("denoiser", "rew_end", "actor_critic"):
        mc = getattr(cfg, m)
        assert c["updates"][m] == mc.steps_first_epoch + 2 * mc.steps_per_epoch, m
    assert episodes_at_kill <= {p.name for p in (run / "store").iterdir()}, "episodes lost"
    rows = RunDir(run).read_metrics()
    assert [r["epoch"] for r in rows if "counters/real_steps" in r] == [0, 1, 2, 3]  # one row per epoch
    assert [r["counters/real_steps"] for r in rows if "counters/real_steps" in r] == [200, 300, 400, 400]
    tested = [r for r in rows if "test/return_mean" in r]  # every 2 epochs: protocol test games, world-model losses
    assert [r["epoch"] for r in tested] == [2] and tested[0]["denoiser/test/loss_denoising"] > 0
    assert "rew_end/test/loss_rew" in tested[0] and tested[0]["test/episodes"] == cfg.eval_episodes
    assert json.loads((run / "finished").read_text())["finished"] is True

    # a finished run says so instead of starting again
    epochs = metrics_epochs(run)
    assert main(["train", "--run-dir", str(run), "--resume"]) == 0 and "finished" in capsys.readouterr().out
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


def test_final_score_is_evals_score_on_the_same_weights(tmp_path):
    """Training's final evaluation and `dreamarcade eval` on the run's weights, with the seed the run reports,
    are the same measurement: the same games, the same returns."""
    import dataclasses

    from training.loop import train

    cfg = dataclasses.replace(get_preset("tiny"), game="Catch", seed=4, total_real_steps=200, num_final_epochs=0,
                              final_eval_episodes=24)  # no epochs: the initial collection, then the final test
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["finished"] and summary["final/seed"] == 4
    out = tmp_path / "eval.json"
    assert main(["eval", "--weights", str(tmp_path / "run" / "weights"), "--game", "catch", "--episodes", "24",
                 "--seed", "4", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["mean_return"] == summary["final/return_mean"]
    assert result["std_return"] == summary["final/return_std"]
    assert 0 < result["std_return"]  # catches and misses both: the comparison is not between constants


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
                        update_seconds={"denoiser": (30.0, 300), "rew_end": (25.0, 500), "actor_critic": (40.0, 80)})
    # 95 s of updates + 5 s of collection and saving; a regular epoch: 40 x 0.1 + 40 x 0.05 + 30 x 0.5 + 5 s
    assert Session._epoch_estimate(s, 100.0) == pytest.approx(26.0)
    s.update_seconds = {"denoiser": (4.0, 40), "rew_end": (2.0, 40), "actor_critic": (15.0, 30)}
    assert Session._epoch_estimate(s, 26.0) == pytest.approx(26.0)  # a regular epoch predicts itself


def test_presets_round_trip_through_json():
    for name in PRESETS:
        cfg = get_preset(name)
        assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    paper = get_preset("atari100k")
    assert (paper.denoiser.steps_per_epoch, paper.actor_critic.steps_first_epoch) == (400, 5000)
    assert paper.imagination.horizon == 15 and paper.actor_critic.batch_size == 32
    with pytest.raises(UserError, match="unknown key 'gamma'"):
        TrainConfig.from_dict({**paper.to_dict(), "gamma": 0.9})
    # a missing key is not silently a default (no sample_weights would mean "sample by episode length")
    d = paper.to_dict()
    del d["sample_weights"]
    with pytest.raises(UserError, match="missing key 'sample_weights'"):
        TrainConfig.from_dict(d)
    d = paper.to_dict()
    d["denoiser"]["optim"]["lr_max"] = 1e-3  # a nested key: named with its path, not a TypeError
    with pytest.raises(UserError, match=r"unknown key 'denoiser\.optim\.lr_max'"):
        TrainConfig.from_dict(d)


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


def catch_recordings(path: Path, num_episodes: int) -> Path:
    """An episode store of random play of Catch at path (a --dataset folder)."""
    import training.toy_env  # noqa: F401
    from training.collect import Collector, RandomPolicy, VecSource

    collector = Collector(VecSource("dreamarcade/Catch-v0", 2, train=True), EpisodeStore(path), seed=0)
    collector.collect(RandomPolicy(3, seed=0), num_episodes=num_episodes)
    collector.close()
    return path


def test_static_dataset_mode_trains_the_world_model_only(tmp_path):
    import dataclasses

    from training.loop import train

    recordings = catch_recordings(tmp_path / "recordings", num_episodes=10)
    cfg = dataclasses.replace(get_preset("tiny"), game="my-recordings", seed=0)
    summary = train(cfg, tmp_path / "run", dataset=str(recordings), progress=False)
    assert summary["finished"] and summary["updates"]["actor_critic"] == 0
    assert summary["updates"]["denoiser"] == cfg.denoiser.steps_first_epoch + 2 * cfg.denoiser.steps_per_epoch
    assert not (tmp_path / "run" / "store").exists()  # the user's folder is the data; nothing is collected
    from weights import load_agent

    assert load_agent(str(tmp_path / "run" / "weights")).num_actions == 3  # inferred from the recordings


def test_a_dataset_run_goes_on_past_the_presets_epochs(tmp_path, capsys):
    """With --dataset no collection fixes the run's length: --epochs above the preset's total (3 for `tiny`)
    trains that long, also on a resumed run; then the run is finished."""
    recordings, run = catch_recordings(tmp_path / "recordings", num_episodes=6), tmp_path / "run"
    args = ["train", "--game", "Catch", "--preset", "tiny", "--dataset", str(recordings), "--run-dir", str(run),
            "--seed", "0", "--no-progress", "--threads", "1"]
    assert main([*args, "--epochs", "2"]) == 0 and metrics_epochs(run)[-1] == 2
    assert main(["train", "--run-dir", str(run), "--resume", "--no-progress", "--epochs", "5"]) == 0
    assert metrics_epochs(run)[-1] == 5 and "finished: 5 epochs" in capsys.readouterr().out
    main(["train", "--run-dir", str(run), "--resume", "--no-progress", "--epochs", "6"])
    assert "this run is finished" in capsys.readouterr().out and metrics_epochs(run)[-1] == 5


def test_a_resumed_run_takes_a_lower_world_model_lr_and_keeps_it(tmp_path):
    """--resume --world-model-lr scales the denoiser's and reward/end model's learning rate from the next update
    (against the same run resumed without it, warm-up and all), leaves the actor-critic's, and stays in
    config.json for the resumes after it."""
    import shutil

    recordings, run = catch_recordings(tmp_path / "recordings", num_episodes=6), tmp_path / "run"
    assert main(["train", "--game", "Catch", "--preset", "tiny", "--dataset", str(recordings), "--run-dir", str(run),
                 "--seed", "0", "--no-progress", "--threads", "1", "--epochs", "1"]) == 0
    lowered = tmp_path / "lowered"
    shutil.copytree(run, lowered)
    resume = ["train", "--resume", "--no-progress", "--threads", "1", "--run-dir"]
    assert main([*resume, str(run), "--epochs", "3"]) == 0
    assert main([*resume, str(lowered), "--epochs", "2", "--world-model-lr", "1e-5"]) == 0
    assert main([*resume, str(lowered), "--epochs", "3"]) == 0  # no flag: the lowered rate stays
    before, after = (json.loads((r / "config.json").read_text())["train"] for r in (run, lowered))
    assert [after[m]["optim"]["lr"] for m in ("denoiser", "rew_end")] == [1e-5, 1e-5]
    assert after["actor_critic"]["optim"] == before["actor_critic"]["optim"]
    rows = {r: {row["epoch"]: row for row in RunDir(r).read_metrics()} for r in (run, lowered)}
    for m in ("denoiser", "rew_end"):
        base = before[m]["optim"]["lr"]
        assert rows[lowered][1][f"{m}/train/lr"] == rows[run][1][f"{m}/train/lr"] > 0  # the same run up to here
        for epoch in (2, 3):
            ratio = rows[lowered][epoch][f"{m}/train/lr"] / rows[run][epoch][f"{m}/train/lr"]
            assert ratio == pytest.approx(1e-5 / base)


def test_noisy_contexts_turned_on_in_config_json_before_a_resume(tmp_path, capsys):
    """A world model trained without `noise_previous_obs` continues with it: set in RUN/config.json, then
    --resume. The new noise_cond_emb buffer starts fresh (said in one line); every other weight continues."""
    from weights import load_agent

    recordings, run = catch_recordings(tmp_path / "recordings", num_episodes=6), tmp_path / "run"
    args = ["train", "--game", "Catch", "--preset", "tiny", "--dataset", str(recordings), "--run-dir", str(run),
            "--seed", "0", "--no-progress"]
    assert main([*args, "--epochs", "1"]) == 0
    before = load_agent(str(run / "weights")).state_dict()
    config = json.loads((run / "config.json").read_text())
    config["agent"]["denoiser"].update(noise_previous_obs=True, cond_sigma_loc=-2.5)
    (run / "config.json").write_text(json.dumps(config))
    key = "denoiser.inner_model.noise_cond_emb.weight"
    assert main(["train", "--run-dir", str(run), "--resume", "--no-progress", "--epochs", "2"]) == 0
    assert f"the checkpoint has no {key}" in capsys.readouterr().out
    after = load_agent(str(run / "weights"))
    assert after.config.denoiser.noise_previous_obs and key in after.state_dict()
    assert metrics_epochs(run)[-1] == 2
    changed = [k for k in before if not torch.equal(before[k], after.state_dict()[k])]
    assert changed and all(k.startswith("denoiser.") or k.startswith("rew_end.") for k in changed)  # trained on


def test_epoch_means_of_numbers_and_reused_device_tensors():
    from training.loop import Means

    means, out = Means(), torch.zeros(())  # an update that writes its loss into the same tensor each time
    for loss in (1.0, 2.0, 6.0):
        out.fill_(loss)
        means.add("denoiser", {"loss_denoising": out, "lr": loss / 10})
    assert means.result() == {"denoiser/train/loss_denoising": 3.0, "denoiser/train/lr": pytest.approx(0.3)}


def test_epochs_shows_where_this_session_stops_and_of_how_many(tmp_path, capsys):
    """`--epochs 1` of a 3-epoch run: the progress says epoch 1/1 (of 3), not 1/3 or 1/2, and the end says how to go on."""
    run = tmp_path / "run"
    argv = ["train", "--game", "Catch", "--preset", "tiny", "--run-dir", str(run), "--seed", "2", "--no-progress",
            "--epochs", "1", "--threads", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"^epoch 1/1 \(of 3\) steps", out, re.M), out
    assert "stopped after epoch 1 (--epochs 1); continue with --resume" in out


def test_train_precision_reaches_the_world_model_updates(tmp_path, capsys):
    """`--precision` is said in the first lines and used: the same seeded run in float32 twice gives the same
    denoiser and reward/end losses, in bfloat16 (autocast) slightly different ones."""
    losses = {}
    for name, precision in (("a", "float32"), ("b", "float32"), ("c", "bfloat16")):
        run = tmp_path / name
        argv = ["train", "--game", "Catch", "--preset", "tiny", "--run-dir", str(run), "--seed", "3", "--no-progress",
                "--epochs", "1", "--precision", precision]
        assert main(argv) == 0
        assert f"precision: world-model updates {precision}, imagination {precision}" in capsys.readouterr().out
        row = [r for r in RunDir(run).read_metrics() if r["epoch"] == 1][0]
        losses[name] = [row[k] for k in ("denoiser/train/loss_denoising", "rew_end/train/loss_rew",
                                         "rew_end/train/loss_end")]
    assert losses["a"] == losses["b"]
    assert losses["c"] != losses["a"] and losses["c"] == pytest.approx(losses["a"], rel=0.05)


def test_init_weights_start_a_new_run_from_weights(tmp_path, capsys):
    """`--init-weights`: a new run takes the weights' model (here the shipped small-residual one, not the tiny
    preset's) and values, with fresh optimizers; weights that do not fit, or a resume, are refused first."""
    from weights.format import load_agent_file, read_weights_info

    shipped = ROOT / "weights" / "shipped" / "Breakout.safetensors"
    run = tmp_path / "ft"
    argv = ["train", "--game", "Breakout", "--preset", "tiny", "--run-dir", str(run), "--seed", "1", "--no-progress",
            "--epochs", "1", "--init-weights", str(shipped), "--keep-weights-every", "1"]
    assert main(argv) == 0
    updates = read_weights_info(shipped)["info"]["denoiser_updates"]
    assert f"initial weights: {shipped} ({updates} denoiser updates)" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["init_weights"] == str(shipped)
    from model.agent import AgentConfig
    assert AgentConfig.from_dict(config["agent"]) == AgentConfig.from_dict(read_weights_info(shipped)["agent_config"])
    c = torch.load(run / "checkpoint.pt", weights_only=True)
    assert c["optimizers"]["denoiser"]["scheduler"]["last_epoch"] == get_preset("tiny").denoiser.steps_first_epoch
    start, now = load_agent_file(shipped).state_dict(), load_agent_file(run / "weights").state_dict()
    moved = max(float((now[k] - v).abs().max()) for k, v in start.items() if k.startswith("denoiser."))
    assert 0 < moved < 0.01  # a few warm-up steps from the shipped values (a fresh model differs by ~0.1-1)
    kept = load_agent_file(run / "snapshots" / "epoch-0001.safetensors").state_dict()  # --keep-weights-every 1
    assert all(torch.equal(kept[k], v) for k, v in now.items()) and len(list((run / "snapshots").iterdir())) == 1

    for bad, message in (
        (["--game", "Pong", "--preset", "tiny", "--run-dir", str(tmp_path / "pong")], "trained on Breakout, not Pong"),
        (["--game", "Breakout", "--preset", "tiny", "--run-dir", str(run)], "already holds a training run"),
        (["--run-dir", str(run), "--resume"], "--init-weights starts a new run"),
    ):
        assert main(["train", *bad, "--init-weights", str(shipped)]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "pong").exists()
