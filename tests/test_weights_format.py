"""dreamarcade's weights format: round trips, self-description, and clear errors for bad files."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from model import Agent, presets
from weights import load_agent, read_weights_info, save_agent
from weights.format import FORMAT_VERSION, WEIGHTS_FILENAME, read_header


@pytest.fixture(scope="module")
def agent():
    torch.manual_seed(0)
    return Agent(presets.tiny(5)).eval()


def _equal_states(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_gives_equal_tensors_and_config(agent, tmp_path):
    file = save_agent(agent, tmp_path / "run", metadata={"game": "Breakout", "epochs": 3})
    assert file == tmp_path / "run" / WEIGHTS_FILENAME
    loaded = load_agent(tmp_path / "run")
    assert loaded.config == agent.config and loaded.num_actions == 5
    assert _equal_states(agent, loaded)
    assert not loaded.training
    # where the weights came from: declared on every Agent (empty for a new one), filled once by load_agent
    assert agent.weights_info == {}
    assert loaded.weights_info == {"game": "Breakout", "epochs": 3, "source": str(tmp_path / "run"), "file": str(file),
                                   "format": "dreamarcade-agent", "stored_dtype": "float32"}
    # a training run directory holds its weights in weights/
    assert _equal_states(agent, load_agent(save_agent(agent, tmp_path / "train" / "weights").parent.parent))
    # the same through the file path, and a file name of one's own
    other = save_agent(agent, tmp_path / "mine.safetensors")
    assert _equal_states(agent, load_agent(other))


def test_file_describes_itself(agent, tmp_path):
    file = save_agent(agent, tmp_path / "w", metadata={"game": "Pong"})
    info = read_weights_info(file)
    assert info["format_version"] == FORMAT_VERSION and info["num_actions"] == 5
    assert info["agent_config"] == agent.config.to_dict() and info["info"] == {"game": "Pong"}
    metadata, tensors = read_header(file)
    assert metadata["format"] == "dreamarcade-agent" and json.loads(metadata["agent_config"])["num_actions"] == 5
    assert set(tensors) == set(agent.state_dict())


def test_half_precision_is_half_the_size_and_loads_as_float32(agent, tmp_path):
    full = save_agent(agent, tmp_path / "full.safetensors")
    half = save_agent(agent, tmp_path / "half.safetensors", dtype="float16")
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_agent(half)
    for key, value in loaded.state_dict().items():
        assert value.dtype == agent.state_dict()[key].dtype
        torch.testing.assert_close(value, agent.state_dict()[key].half().float(), rtol=0, atol=0)


def test_half_precision_refuses_values_it_cannot_hold(tmp_path):
    agent = Agent(presets.tiny(4))
    with torch.no_grad():
        agent.actor_critic.critic_linear.bias.fill_(1e6)
    with pytest.raises(ValueError, match=r"critic_linear\.bias has values outside the float16 range"):
        save_agent(agent, tmp_path / "w.safetensors", dtype="float16")
    assert torch.equal(load_agent(save_agent(agent, tmp_path / "b.safetensors", dtype="bfloat16"))
                       .actor_critic.critic_linear.bias, agent.actor_critic.critic_linear.bias.bfloat16().float())


def test_save_is_atomic_and_leaves_no_temporary_file(agent, tmp_path):
    file = save_agent(agent, tmp_path / "w")
    before = file.read_bytes()

    class Exploding:
        config, num_actions = agent.config, agent.num_actions

        def state_dict(self):
            raise RuntimeError("crash while saving")

    with pytest.raises(RuntimeError):
        save_agent(Exploding(), tmp_path / "w")
    assert file.read_bytes() == before
    assert [p.name for p in (tmp_path / "w").iterdir()] == [WEIGHTS_FILENAME]


@pytest.mark.parametrize("keep", [0, 5, 100, -1000])
def test_truncated_file_gives_clear_error(agent, tmp_path, keep):
    file = save_agent(agent, tmp_path / "w.safetensors")
    data = file.read_bytes()
    file.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(ValueError, match=r"w\.safetensors.*(truncated|not a safetensors|not a valid)"):
        load_agent(file)


def test_garbage_file_gives_clear_error(tmp_path):
    file = tmp_path / "junk.safetensors"
    file.write_bytes(struct.pack("<Q", 12) + b"not json!!!!" + b"\0" * 64)
    with pytest.raises(ValueError, match=r"junk\.safetensors: corrupt safetensors header"):
        load_agent(file)


def _rewrite(file, tensors=None, metadata=None):
    """Write a variant of a valid weights file with some tensors or metadata changed."""
    meta, _ = read_header(file)
    from safetensors.torch import load_file

    state = load_file(str(file))
    state.update(tensors or {})
    state = {k: v for k, v in state.items() if v is not None}
    meta.update(metadata or {})
    meta = {k: v for k, v in meta.items() if v is not None}
    save_file(state, str(file), metadata=meta)


def test_missing_extra_and_misshaped_keys_are_named(agent, tmp_path):
    file = save_agent(agent, tmp_path / "w.safetensors")
    key = "actor_critic.critic_linear.bias"
    _rewrite(file, tensors={key: None})
    with pytest.raises(ValueError, match=rf"w\.safetensors: missing key {key}"):
        load_agent(file)
    file = save_agent(agent, tmp_path / "w.safetensors")
    _rewrite(file, tensors={"actor_critic.bonus": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"unexpected key actor_critic\.bonus"):
        load_agent(file)
    file = save_agent(agent, tmp_path / "w.safetensors")
    _rewrite(file, tensors={"actor_critic.actor_linear.bias": torch.zeros(7)})
    with pytest.raises(ValueError, match=r"actor_critic\.actor_linear\.bias has shape \(7,\), expected \(5,\)"):
        load_agent(file)


def test_action_count_mismatch_is_caught(agent, tmp_path):
    file = save_agent(agent, tmp_path / "w.safetensors")
    _rewrite(file, metadata={"num_actions": "18"})
    with pytest.raises(ValueError, match="num_actions 18 in the metadata but 5 in agent_config"):
        load_agent(file)
    file = save_agent(agent, tmp_path / "w.safetensors")
    config = agent.config.to_dict() | {"num_actions": 6}
    _rewrite(file, metadata={"agent_config": json.dumps(config), "num_actions": "6"})
    with pytest.raises(ValueError, match=r"has shape \(5, .*\), expected \(6, "):
        load_agent(file)


def test_versions_and_foreign_files_are_refused(agent, tmp_path):
    file = save_agent(agent, tmp_path / "w.safetensors")
    _rewrite(file, metadata={"format_version": str(FORMAT_VERSION + 1)})
    with pytest.raises(ValueError, match=f"format version {FORMAT_VERSION + 1}.*upgrade dreamarcade"):
        load_agent(file)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match=r"foreign\.safetensors: not a dreamarcade weights file"):
        load_agent(foreign)
    file = save_agent(agent, tmp_path / "w.safetensors")
    _rewrite(file, metadata={"agent_config": json.dumps({"num_actions": 5, "colour": "blue"})})
    with pytest.raises(ValueError, match=r"invalid agent_config.*colour"):
        load_agent(file)


def test_non_finite_values_are_refused(agent, tmp_path):
    file = save_agent(agent, tmp_path / "w.safetensors")
    bias = agent.state_dict()["actor_critic.critic_linear.bias"].clone()
    bias[0] = float("nan")
    _rewrite(file, tensors={"actor_critic.critic_linear.bias": bias})
    with pytest.raises(ValueError, match=r"critic_linear\.bias contains NaN"):
        load_agent(file)


def test_missing_paths_name_what_is_accepted(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*not found.*diamond.*hf://"):
        load_agent(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: not a dreamarcade weights directory"):
        load_agent(tmp_path / "empty")
