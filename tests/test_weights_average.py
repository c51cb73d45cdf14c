"""`python -m weights.average`: the mean of several snapshots of one model, written as a weights file."""
from __future__ import annotations

import torch

from model import Agent
from model.presets import tiny
from weights.average import main
from weights.format import load_agent_file, read_weights_info, save_agent


def saved(path, seed: int, num_actions: int = 4, epoch: int = 0):
    torch.manual_seed(seed)
    return save_agent(Agent(tiny(num_actions)), path, metadata={"game": "Breakout", "epoch": epoch})


def test_average_of_snapshots_with_another_actor_critic(tmp_path, capsys):
    files = [saved(tmp_path / f"e{i}.safetensors", seed=i, epoch=i) for i in (1, 2, 3)]
    other = saved(tmp_path / "other.safetensors", seed=9)
    out = tmp_path / "mean.safetensors"
    assert main([str(out), *map(str, files), "--actor-critic", str(other), "--dtype", "float16"]) == 0
    mean = load_agent_file(out).state_dict()
    inputs = [load_agent_file(f).state_dict() for f in files]
    ac = load_agent_file(other).state_dict()
    for k, v in mean.items():
        want = ac[k] if k.startswith("actor_critic.") else torch.stack([s[k] for s in inputs]).mean(0)
        torch.testing.assert_close(v, want.half().float(), rtol=0, atol=0, msg=k)
    info = read_weights_info(out)
    assert info["dtype"] == "float16" and [a["epoch"] for a in info["info"]["averaged"]] == [1, 2, 3]
    assert info["info"]["actor_critic_from"] == str(other)


def test_average_names_its_denoising_steps(tmp_path, capsys):
    from weights import load_agent

    files = [saved(tmp_path / f"e{i}.safetensors", seed=i, epoch=i) for i in (1, 2)]
    out = tmp_path / "mean.safetensors"
    assert main([str(out), *map(str, files), "--denoising-steps", "2"]) == 0
    assert read_weights_info(out)["info"]["denoising_steps"] == 2 and load_agent(str(out)).denoising_steps == 2
    assert load_agent(str(files[0])).denoising_steps == 3  # none named: the reference's
    assert main([str(tmp_path / "bad.safetensors"), *map(str, files), "--denoising-steps", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err and not (tmp_path / "bad.safetensors").exists()


def test_snapshots_of_different_models_are_refused(tmp_path, capsys):
    a, b = saved(tmp_path / "a.safetensors", 0), saved(tmp_path / "b.safetensors", 1, num_actions=6)
    assert main([str(tmp_path / "out.safetensors"), str(a), str(b)]) == 2
    assert "another model" in capsys.readouterr().err and not (tmp_path / "out.safetensors").exists()


def test_average_names_its_still_levels(tmp_path, capsys):
    from weights import load_agent

    files = [saved(tmp_path / f"e{i}.safetensors", seed=i, epoch=i) for i in (1, 2)]
    out = tmp_path / "mean.safetensors"
    assert main([str(out), *map(str, files), "--still-levels", "4"]) == 0
    assert read_weights_info(out)["info"]["still_levels"] == 4 and load_agent(str(out)).still_levels == 4
    assert load_agent(str(files[0])).still_levels == 0  # none named: off, as the reference
    assert main([str(tmp_path / "bad.safetensors"), *map(str, files), "--still-levels", "-1"]) == 2
    assert "at least 0" in capsys.readouterr().err and not (tmp_path / "bad.safetensors").exists()
