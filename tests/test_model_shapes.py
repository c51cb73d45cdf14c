"""Shapes, state_dict names and parameter counts of the networks (the DIAMOND checkpoint layout)."""
import json
from pathlib import Path

import pytest
import torch

from model import Agent, AgentConfig, Batch
from model.blocks import SelfAttention2d
from model.presets import atari100k, tiny
from model.unet import UNet

# A copy of shared/reference/diamond_agent_state_dict.txt, so that a lone clone runs this test too.
REFERENCE_KEYS = Path(__file__).resolve().parent / "data" / "diamond_agent_state_dict.txt"


def reference_state_dict_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in REFERENCE_KEYS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")[:2]
        dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
        shapes[key.replace("rew_end_model.", "rew_end.", 1)] = dims
    return shapes


@pytest.fixture(scope="module")
def atari_agent():
    return Agent(atari100k(4))


@pytest.fixture(scope="module")
def tiny_agent():
    torch.manual_seed(0)
    return Agent(tiny(4)).eval()


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_state_dict_equals_diamond_layout(atari_agent):
    sd = atari_agent.state_dict()
    ref = reference_state_dict_shapes()
    assert len(ref) == 372
    assert sorted(set(ref) - set(sd)) == [] and sorted(set(sd) - set(ref)) == []
    assert list(sd) == list(ref)  # same order as the reference too
    for key, shape in ref.items():
        assert tuple(sd[key].shape) == shape, key
    assert all(t.dtype == torch.float32 for t in sd.values())


@pytest.mark.parametrize("a", [3, 4, 18])
def test_parameter_counts_match_reference(a, atari_agent):
    if a == 4:
        agent = atari_agent
    else:
        with torch.device("meta"):  # shapes only
            agent = Agent(atari100k(a))
    assert n_params(agent.denoiser) == 4_405_699 + 64 * a
    assert n_params(agent.rew_end) == 5_900_352 + 128 * a
    assert n_params(agent.actor_critic) == 3_227_585 + 513 * a
    if a == 4:
        assert n_params(agent) == 13_536_456
        assert agent.denoiser.inner_model.noise_emb.weight.shape == (1, 128)  # a buffer, saved


def test_reference_inits(atari_agent):
    agent = atari_agent
    inner = agent.denoiser.inner_model
    assert torch.count_nonzero(inner.conv_out.weight) == 0
    block = inner.unet.mid_blocks.resblocks[0]
    assert torch.count_nonzero(block.conv2.weight) == 0
    assert torch.count_nonzero(block.attn.out_proj.weight) == 0 and torch.count_nonzero(block.attn.out_proj.bias) == 0
    w = inner.unet.downsamples[1].conv.weight.flatten(1)  # orthogonal rows
    assert torch.allclose(w @ w.T, torch.eye(64), atol=1e-4)
    lstm = agent.rew_end.lstm
    assert torch.equal(lstm.bias_ih_l0, torch.cat([torch.zeros(512), torch.ones(512), torch.zeros(1024)]))
    assert torch.count_nonzero(lstm.bias_hh_l0) == 0
    ac = agent.actor_critic
    assert torch.equal(ac.lstm.bias_ih[512:1024], torch.ones(512))
    for layer in (ac.actor_linear, ac.critic_linear):
        assert torch.count_nonzero(layer.weight) == 0 and torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize("h, w", [(30, 56), (64, 64), (17, 9)])
def test_unet_pads_and_crops_any_size(h, w):
    torch.manual_seed(0)
    unet = UNet(cond_channels=8, depths=[1, 1, 1, 1], channels=[8, 8, 8, 8], attn_depths=[False, False, True, False])
    out = unet(torch.randn(2, 8, h, w), torch.randn(2, 8))
    assert out.shape == (2, 8, h, w)


def test_self_attention_residual_is_the_normalised_input():
    attn = SelfAttention2d(16)  # zero-initialised out_proj: output == GroupNorm(x)
    x = torch.randn(2, 16, 5, 7) * 3 + 1
    assert torch.allclose(attn(x), attn.norm(x), atol=1e-6)
    assert attn.n_head == 2


@pytest.mark.parametrize("h, w", [(64, 64), (30, 56)])
def test_denoise_shapes(tiny_agent, h, w):
    b = 3
    out = tiny_agent.denoiser.denoise(
        torch.randn(b, 3, h, w), torch.full((b,), 0.5), torch.rand(b, 4, 3, h, w) * 2 - 1, torch.randint(0, 4, (b, 4))
    )
    assert out.shape == (b, 3, h, w) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1


def test_rew_end_shapes_and_carried_state(tiny_agent):
    b, t = 2, 5
    obs, next_obs = torch.rand(b, t, 3, 64, 64) * 2 - 1, torch.rand(b, t, 3, 64, 64) * 2 - 1
    act = torch.randint(0, 4, (b, t))
    rew, end, (h, c) = tiny_agent.rew_end(obs, act, next_obs)
    assert rew.shape == (b, t, 3) and end.shape == (b, t, 2) and h.shape == c.shape == (1, b, 32)
    # stepping one transition at a time with the carried state gives the same logits
    state, rews = None, []
    for i in range(t):
        r, _, state = tiny_agent.rew_end(obs[:, i : i + 1], act[:, i : i + 1], next_obs[:, i : i + 1], state)
        rews.append(r)
    assert torch.allclose(torch.cat(rews, dim=1), rew, atol=1e-5)


def test_actor_critic_shapes(tiny_agent):
    logits, value, (h, c) = tiny_agent.actor_critic(torch.rand(3, 3, 64, 64) * 2 - 1)
    assert logits.shape == (3, 4) and value.shape == (3,) and h.shape == c.shape == (3, 32)
    logits2, _, _ = tiny_agent.actor_critic(torch.rand(3, 3, 64, 64), (h, c))
    assert logits2.shape == (3, 4)
    with pytest.raises(ValueError, match="one frame per env"):
        tiny_agent.actor_critic(torch.rand(3, 4, 3, 64, 64))


def make_batch(b, t, a=4, padded_from=None):
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(b, t, dtype=torch.bool)
    if padded_from is not None:
        mask[:, padded_from:] = False
    return Batch(
        obs=torch.rand(b, t, 3, 64, 64, generator=g) * 2 - 1,
        act=torch.randint(0, a, (b, t), generator=g),
        rew=torch.randint(-1, 2, (b, t), generator=g).float() * 3,
        end=torch.zeros(b, t, dtype=torch.uint8),
        trunc=torch.zeros(b, t, dtype=torch.uint8),
        mask=mask,
    )


def test_losses_are_finite_and_backpropagate():
    torch.manual_seed(0)
    agent = Agent(tiny(4))
    loss = agent.denoiser.loss(make_batch(1, 6))
    loss.backward()
    assert torch.isfinite(loss) and agent.denoiser.inner_model.conv_out.weight.grad.abs().sum() > 0
    loss = agent.rew_end.loss(make_batch(1, 7))
    loss.backward()
    assert torch.isfinite(loss) and agent.rew_end.head[0].weight.grad.abs().sum() > 0


def test_losses_ignore_padded_targets():
    torch.manual_seed(0)
    agent = Agent(tiny(4))
    assert agent.denoiser.loss(make_batch(2, 6, padded_from=4)).item() == 0.0  # every target padded: 0, not NaN
    assert agent.rew_end.loss(make_batch(2, 3, padded_from=0)).item() == 0.0
    with pytest.raises(ValueError, match="more than 4 frames"):
        agent.denoiser.loss(make_batch(2, 4))


def test_agent_config_round_trips_through_json():
    for cfg in (atari100k(18), tiny(3)):
        d = json.loads(json.dumps(cfg.to_dict()))
        assert AgentConfig.from_dict(d) == cfg
    d = tiny(3).to_dict()
    d["denoiser"]["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        AgentConfig.from_dict(d)
    with pytest.raises(ValueError, match="num_actions"):
        AgentConfig.from_dict({"img_size": 64})
    with pytest.raises(ValueError, match="num_actions"):
        AgentConfig(num_actions=0)
    d = tiny(3).to_dict()
    d["denoiser"]["channels"] = [16, 16]
    with pytest.raises(ValueError, match="same length"):
        AgentConfig.from_dict(d)


def test_agent_exposes_its_parts(tiny_agent):
    assert tiny_agent.num_actions == 4 and tiny_agent.config == tiny(4)
    assert tiny_agent.device == torch.device("cpu")


def test_denoiser_loss_conditions_the_second_target_on_its_own_estimate():
    agent = Agent(tiny(4))
    inner = agent.denoiser.inner_model
    seen = []
    real_forward = inner.forward

    def recording_forward(noisy_next_obs, c_noise, obs, act):
        seen.append((obs.detach().clone(), act.clone()))
        return real_forward(noisy_next_obs, c_noise, obs, act)

    inner.forward = recording_forward
    batch = make_batch(2, 6)
    agent.denoiser.loss(batch)
    assert len(seen) == 2
    (obs0, act0), (obs1, act1) = seen
    frames = batch.obs / 0.5  # conditioning frames are scaled by 1 / sigma_data
    assert torch.equal(obs0, frames[:, 0:4].flatten(1, 2)) and torch.equal(act0, batch.act[:, 0:4])
    assert torch.equal(obs1[:, :9], frames[:, 1:4].flatten(1, 2)) and torch.equal(act1, batch.act[:, 1:5])
    estimate = obs1[:, 9:] * 0.5
    assert not torch.equal(estimate, batch.obs[:, 4])
    levels = (estimate + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-3)  # the quantised one-step estimate


def test_rew_end_loss_is_cross_entropy_over_real_transitions():
    torch.manual_seed(0)
    agent = Agent(tiny(4))
    batch = make_batch(2, 6, padded_from=4)
    batch.end[0, 3] = 1
    logits_rew, logits_end, _ = agent.rew_end(batch.obs[:, :-1], batch.act[:, :-1], batch.obs[:, 1:])
    mask = batch.mask[:, :-1]
    expected_rew = torch.nn.functional.cross_entropy(logits_rew[mask], batch.rew[:, :-1][mask].sign().long() + 1)
    expected_end = torch.nn.functional.cross_entropy(logits_end[mask], batch.end[:, :-1][mask].long())
    loss_rew, loss_end = agent.rew_end.loss_terms(batch)
    assert loss_rew.item() == pytest.approx(expected_rew.item(), rel=1e-5)
    assert loss_end.item() == pytest.approx(expected_end.item(), rel=1e-5)
