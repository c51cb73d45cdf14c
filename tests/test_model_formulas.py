"""Formulas and identities of the world model and the actor-critic, against hand-checked numbers."""
import math

import pytest
import torch
from torch import nn

from model import Agent, karras_sigmas, sample_next_obs
from model.denoiser import Denoiser
from model.pixels import quantize, to_float, to_uint8
from model.presets import tiny
from model.returns import ActorCriticLossConfig, actor_critic_loss, lambda_returns


def test_karras_sigmas_match_reference_values():
    assert torch.allclose(karras_sigmas(3, 2e-3, 5, 7), torch.tensor([5.0, 0.28308, 0.002, 0.0]), atol=1e-5)
    expected5 = torch.tensor([5.0, 1.37703, 0.28308, 0.03655, 0.002, 0.0])
    assert torch.allclose(karras_sigmas(5, 2e-3, 5, 7), expected5, atol=1e-5)
    assert karras_sigmas(1, 2e-3, 5, 7).tolist() == pytest.approx([5.0, 0.0], abs=1e-5)
    with pytest.raises(ValueError, match="at least 1"):
        karras_sigmas(0, 2e-3, 5, 7)


@pytest.fixture(scope="module")
def denoiser():
    torch.manual_seed(0)
    return Denoiser(tiny(4).denoiser, num_actions=4).eval()


@pytest.mark.parametrize(
    "sigma, c_in, c_skip, c_out, c_noise",
    [
        (0.002, 1.715, 0.735, 0.257, -0.301),
        (0.5, 1.302, 0.424, 0.380, -0.135),
        (5.0, 0.199, 0.0099, 0.4975, 0.403),
    ],
)
def test_preconditioners_match_diamond_table(denoiser, sigma, c_in, c_skip, c_out, c_noise):
    cs = denoiser.conditioners(torch.tensor([sigma]))
    # offset noise 0.3 folded into sigma: sigma_eff = sqrt(sigma^2 + 0.3^2)
    # the table is rounded to its last digit
    assert cs.c_in.item() == pytest.approx(c_in, abs=5e-4)
    assert cs.c_skip.item() == pytest.approx(c_skip, abs=5e-4 if c_skip > 0.1 else 5e-5)
    assert cs.c_out.item() == pytest.approx(c_out, abs=5e-4 if c_out < 0.4 else 5e-5)
    assert cs.c_noise.item() == pytest.approx(c_noise, abs=5e-4)
    assert cs.c_in.shape == (1, 1, 1, 1) and cs.c_noise.shape == (1,)


def test_preconditioners_at_half_exactly(denoiser):
    s = math.sqrt(0.5**2 + 0.3**2)
    cs = denoiser.conditioners(torch.tensor([0.5], dtype=torch.float64))
    assert cs.c_in.item() == pytest.approx(1 / math.sqrt(s**2 + 0.25), rel=1e-12)
    assert cs.c_skip.item() == pytest.approx(0.25 / (s**2 + 0.25), rel=1e-12)
    assert cs.c_out.item() == pytest.approx(s * 0.5 / math.sqrt(s**2 + 0.25), rel=1e-12)
    assert cs.c_noise.item() == pytest.approx(math.log(s) / 4, rel=1e-12)


def slow_lambda_returns(rew, end, trunc, value_next, gamma, lam):
    b, t = rew.shape
    out = torch.zeros(b, t, dtype=torch.float64)
    for i in range(b):
        g_next = float(value_next[i, -1])
        for j in reversed(range(t)):
            r = math.copysign(1.0, rew[i, j]) if rew[i, j] != 0 else 0.0
            e, tr, v = float(end[i, j]), float(trunc[i, j]), float(value_next[i, j])
            g = r + gamma * (1 - e) * ((1 - tr) * (1 - lam) + tr) * v + (1 - max(e, tr)) * gamma * lam * g_next
            out[i, j] = g
            g_next = g
    return out


@pytest.mark.parametrize("lam", [0.95, 0.0, 1.0])
def test_lambda_returns_equal_a_plain_loop(lam):
    g = torch.Generator().manual_seed(1)
    b, t = 5, 15
    rew = torch.randint(-3, 4, (b, t), generator=g).float() * torch.rand(b, t, generator=g)
    end = (torch.rand(b, t, generator=g) < 0.1).long()
    trunc = ((torch.rand(b, t, generator=g) < 0.1) & (end == 0)).long()
    value_next = torch.randn(b, t, generator=g)
    fast = lambda_returns(rew, end, trunc, value_next, 0.985, lam)
    slow = slow_lambda_returns(rew, end, trunc, value_next, 0.985, lam)
    assert torch.allclose(fast.double(), slow, atol=1e-5)


def test_lambda_returns_terminal_and_truncation_cases():
    rew = torch.tensor([[2.0, -0.5]])
    v = torch.tensor([[10.0, 20.0]])
    # terminal at the last step: G = sign(r)
    assert lambda_returns(rew, torch.tensor([[0, 1]]), torch.tensor([[0, 0]]), v, 0.9, 0.5)[0, 1].item() == -1.0
    # truncation bootstraps fully from V(final obs)
    assert lambda_returns(rew, torch.tensor([[0, 0]]), torch.tensor([[0, 1]]), v, 0.9, 0.5)[0, 1].item() == pytest.approx(-1 + 0.9 * 20)
    # the last step without end or trunc gives r + gamma V(s_T)
    assert lambda_returns(rew, torch.zeros(1, 2), torch.zeros(1, 2), v, 0.9, 0.5)[0, 1].item() == pytest.approx(-1 + 0.9 * 20)


def test_actor_critic_loss_terms():
    torch.manual_seed(0)
    b, t, a = 4, 15, 3
    logits = torch.randn(b, t, a, requires_grad=True)
    value = torch.randn(b, t, requires_grad=True)
    act = torch.randint(0, a, (b, t))
    rew, end, trunc = torch.randn(b, t), torch.zeros(b, t), torch.zeros(b, t)
    value_next = torch.randn(b, t)
    cfg = ActorCriticLossConfig()
    loss, metrics = actor_critic_loss(logits, act, value, rew, end, trunc, value_next, cfg)
    returns = lambda_returns(rew, end, trunc, value_next, cfg.gamma, cfg.lam)
    logp = logits.log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1).mean()
    adv = (returns - value).detach()
    expected = (-logp.gather(-1, act[..., None])[..., 0] * adv).mean() + ((value - returns) ** 2).mean() - 0.001 * entropy
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert logits.grad is not None and value.grad is not None
    assert metrics["policy_entropy_bits"].item() == pytest.approx(entropy.item() / math.log(2), rel=1e-5)


class OracleDenoiser:
    """Always knows the clean frame."""

    def __init__(self, x0):
        self.x0 = x0
        self.calls = 0

    def denoise(self, x, sigma, obs, act):
        self.calls += 1
        return self.x0


@pytest.mark.parametrize("order, churn, n, nfe", [(1, 0.0, 3, 3), (2, 0.0, 3, 5), (1, 1.0, 4, 4), (2, 0.5, 1, 1)])
def test_oracle_denoiser_makes_the_last_step_land_on_x0(order, churn, n, nfe):
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    oracle = OracleDenoiser(x0)
    obs, act = torch.zeros(2, 4, 3, 8, 8), torch.zeros(2, 4, dtype=torch.long)
    x, traj = sample_next_obs(oracle, obs, act, karras_sigmas(n, 2e-3, 5, 7), generator=g, order=order,
                              s_churn=churn, return_trajectory=True)
    assert torch.allclose(x, x0, atol=1e-6)
    assert oracle.calls == nfe and len(traj) == n + 1


def test_sampler_starts_from_unit_noise_not_scaled_by_sigma_max():
    # with D = 0 everywhere, Euler shrinks x by sigma_next / sigma each step: x_1 = noise * sigma_1 / sigma_0
    noise = torch.randn(1, 3, 4, 4)
    zero = OracleDenoiser(torch.zeros(1, 3, 4, 4))
    sigmas = karras_sigmas(3, 2e-3, 5, 7)
    _, traj = sample_next_obs(zero, torch.zeros(1, 4, 3, 4, 4), torch.zeros(1, 4, dtype=torch.long), sigmas,
                              noise=noise, return_trajectory=True)
    assert torch.equal(traj[0], noise)
    assert torch.allclose(traj[1], noise * sigmas[1] / sigmas[0], atol=1e-6)


class TargetNetwork(nn.Module):
    """Stands in for the inner model: returns a fixed tensor (the training target)."""

    def __init__(self):
        super().__init__()
        self.noise_emb = nn.Module()
        self.noise_emb.register_buffer("weight", torch.zeros(1, 2))
        self.out = None

    def forward(self, noisy_next_obs, c_noise, obs, act):
        return self.out


def test_network_returning_the_training_target_reproduces_x0(denoiser):
    g = torch.Generator().manual_seed(0)
    b = 3
    x0 = to_float(torch.randint(0, 256, (b, 3, 16, 16), generator=g, dtype=torch.uint8))
    sigma = torch.tensor([0.002, 0.5, 5.0])
    noisy = x0 + 0.3 * torch.randn(b, 3, 1, 1, generator=g) + sigma.reshape(-1, 1, 1, 1) * torch.randn(x0.shape, generator=g)
    cs = denoiser.conditioners(sigma)
    target = (x0 - cs.c_skip * noisy) / cs.c_out
    d = Denoiser(denoiser.cfg, num_actions=4)
    d.inner_model = TargetNetwork()
    d.inner_model.out = target
    obs, act = torch.zeros(b, 4, 3, 16, 16), torch.zeros(b, 4, dtype=torch.long)
    raw = cs.c_skip * noisy + cs.c_out * d.network_output(noisy, obs, act, cs)
    assert torch.allclose(raw, x0, atol=1e-5)
    out = d.denoise(noisy, sigma, obs, act)
    # the reference floors to 8 bits: within one level of x0, and on the 8-bit grid
    assert (out - x0).abs().max().item() <= 2 / 255 + 1e-6
    levels = (out + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-3)


def test_denoise_quantises_by_flooring(denoiser):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    obs, act = torch.rand(2, 4, 3, 64, 64) * 2 - 1, torch.randint(0, 4, (2, 4))
    out = denoiser.denoise(x, torch.tensor([0.5, 0.5]), obs, act)
    levels = (out + 1) / 2 * 255
    assert torch.allclose(levels, levels.round(), atol=1e-3) and out.min() >= -1 and out.max() <= 1
    # floor, not round: 0.999 of a level stays at the level below
    y = torch.tensor([(2 * 10.999 / 255) - 1])
    assert quantize(y).item() == pytest.approx(2 * 10 / 255 - 1, abs=1e-6)


def test_sigma_training_distribution(denoiser):
    s = denoiser.sample_sigma(200_000, torch.Generator().manual_seed(0))
    assert s.min() >= 2e-3 and s.max() <= 20
    assert s.median().item() == pytest.approx(math.exp(-0.4), rel=0.02)  # 0.67
    assert (s > 5).float().mean().item() == pytest.approx(0.047, abs=0.003)


def test_agent_heads_start_uniform_with_zero_value():
    agent = Agent(tiny(5))
    logits, value, _ = agent.actor_critic(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert torch.equal(logits, torch.zeros(2, 5)) and torch.equal(value, torch.zeros(2))


def test_pixel_scaling_is_exact_and_never_changes_its_input():
    frames = torch.arange(256, dtype=torch.uint8)
    x = to_float(frames)
    assert x[0] == -1 and x[255] == 1 and torch.equal(to_uint8(x), frames)  # exact round trip, every level
    as_float = frames.float()  # a float input (already converted by a caller) comes back scaled, left unchanged
    before = as_float.clone()
    assert torch.equal(to_float(as_float), x)
    assert torch.equal(as_float, before)
