"""Import of DIAMOND `.pt` agent checkpoints: strict, shape-checked, and never unpickling code."""
from __future__ import annotations

import builtins
import pickle

import pytest
import torch

from diamond_checkpoint import ACTION_KEYS, diamond_state_dict, save_diamond_checkpoint
from model import presets
from weights import load_agent, save_agent
from weights.diamond import agent_from_diamond_state, to_our_key


@pytest.fixture(scope="module")
def reference_state():
    return diamond_state_dict(4)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_diamond_checkpoint(tmp_path_factory.mktemp("diamond") / "Breakout.pt", num_actions=4, seed=1)


def test_every_key_is_loaded_with_its_value(checkpoint, tmp_path):
    agent = load_agent(checkpoint)
    assert agent.num_actions == 4 and agent.config == presets.atari100k(4)
    assert not agent.training
    assert "game" not in agent.weights_info  # a bare .pt does not say; the caller's --game decides
    ours = agent.state_dict()
    reference = diamond_state_dict(4, seed=1)
    assert len(ours) == len(reference) == 372
    for key, value in reference.items():
        assert torch.equal(ours[to_our_key(key)], value), key
    # ... and survives conversion to dreamarcade's format
    again = load_agent(save_agent(agent, tmp_path / "converted"))
    assert all(torch.equal(again.state_dict()[k], v) for k, v in ours.items())


@pytest.mark.parametrize("num_actions", [3, 18])
def test_number_of_actions_is_read_from_the_file(num_actions):
    agent = agent_from_diamond_state(diamond_state_dict(num_actions), "ckpt.pt")
    assert agent.num_actions == num_actions
    assert agent.actor_critic(torch.zeros(1, 3, 64, 64))[0].shape == (1, num_actions)


def _broken(reference: dict, change: dict) -> dict:
    state = dict(reference)
    for key, value in change.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    return state


@pytest.mark.parametrize("change, message", [
    ({"rew_end_model.head.2.weight": None}, r"ckpt\.pt: missing key rew_end_model\.head\.2\.weight"),
    ({"denoiser.inner_model.noise_emb.weight": None}, r"missing key denoiser\.inner_model\.noise_emb\.weight"),
    ({"rew_end_model.head.2.bias": torch.zeros(5)}, r"ckpt\.pt: unexpected key rew_end_model\.head\.2\.bias"),
    ({"actor_critic.lstm.weight_hh": torch.zeros(2048, 256)},
     r"ckpt\.pt: actor_critic\.lstm\.weight_hh has shape \(2048, 256\), expected \(2048, 512\)"),
    ({"actor_critic.actor_linear.weight": torch.zeros(18, 512)},
     r"actor_critic\.actor_linear\.weight has shape \(18, 512\), expected \(4, 512\)"),
    ({"denoiser.inner_model.act_emb.0.weight": None}, r"missing key denoiser\.inner_model\.act_emb\.0\.weight"),
    ({"actor_critic.critic_linear.bias": torch.tensor([float("inf")])}, r"critic_linear\.bias contains NaN or inf"),
])
def test_bad_keys_are_named_as_diamond_spells_them(reference_state, change, message):
    with pytest.raises(ValueError, match=message):
        agent_from_diamond_state(_broken(reference_state, change), "ckpt.pt")


def test_missing_key_in_a_file_names_file_and_key(reference_state, tmp_path):
    state = _broken(reference_state, {"rew_end_model.lstm.bias_hh_l0": None})
    torch.save(state, tmp_path / "Pong.pt")
    with pytest.raises(ValueError, match=r"Pong\.pt: missing key rew_end_model\.lstm\.bias_hh_l0"):
        load_agent(tmp_path / "Pong.pt")


class _Payload:
    """Unpickling this calls open(marker, "w"): the file appears only if code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.mark.parametrize("zipfile", [True, False])
def test_malicious_pickle_is_refused_without_running_it(reference_state, tmp_path, zipfile):
    marker = tmp_path / "pwned"
    state = _broken(reference_state, {"denoiser.inner_model.conv_in.bias": _Payload(marker)})
    path = tmp_path / "evil.pt"
    torch.save(state, path, _use_new_zipfile_serialization=zipfile)
    with pytest.raises(ValueError, match=r"evil\.pt: refused: .*pickled Python objects"):
        load_agent(path)
    assert not marker.exists()
    # the payload is real: an unsafe load would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_plain_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"x": _Payload(marker)}, protocol=2))
    with pytest.raises(ValueError, match=r"evil\.pt: "):
        load_agent(path)
    assert not marker.exists()


def test_truncated_and_foreign_checkpoints_give_clear_errors(checkpoint, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(checkpoint.read_bytes()[: 1_000_000])
    with pytest.raises(ValueError, match=r"cut\.pt: not a valid PyTorch checkpoint: truncated or corrupt"):
        load_agent(cut)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match=r"tensor\.pt: not a DIAMOND agent checkpoint"):
        load_agent(tensor)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt: not a valid PyTorch checkpoint"):
        load_agent(empty)


def test_random_bytes_are_named_for_what_they_are(tmp_path):
    # not "pickled Python objects other than tensors": the file is no pickle at all
    noise = tmp_path / "noise.bin"
    noise.write_bytes(bytes([0x17, 0x83, 0xD8, 0x10, 0xB8, 0xBD, 0xB6, 0x48]) + bytes(range(256)))
    with pytest.raises(ValueError, match=r"noise\.bin: not a PyTorch checkpoint \(zip or pickle\) nor a safetensors "
                                         r"file: it starts with bytes 17 83 d8 10 b8 bd b6 48$"):
        load_agent(noise)


def test_action_keys_match_the_reference_list():
    shapes = {k: tuple(v.shape) for k, v in diamond_state_dict(7).items()}
    assert all(shapes[k][0] == 7 for k in ACTION_KEYS)
