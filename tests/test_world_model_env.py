"""The batched imagination env: contexts in, sampled frames, rewards and ends out."""
import pytest
import torch

from model import Agent, karras_sigmas, sample_next_obs
from model.presets import tiny
from model.sampler import SamplerConfig
from model.world_model_env import WorldModelEnv


@pytest.fixture(scope="module")
def agent():
    torch.manual_seed(0)
    agent = Agent(tiny(4)).eval()
    with torch.no_grad():  # non-trivial outputs: the zero-initialised output conv would always give c_skip * x
        agent.denoiser.inner_model.conv_out.weight.normal_(0, 0.05)
    return agent


def contexts(b, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 4, 3, 64, 64, generator=g) * 2 - 1, torch.randint(0, 4, (b, 4), generator=g)


def test_reset_and_step_shapes(agent):
    env = WorldModelEnv(agent, generator=torch.Generator().manual_seed(0))
    obs_ctx, act_ctx = contexts(3)
    obs = env.reset(obs_ctx, act_ctx)
    assert torch.equal(obs, obs_ctx[:, -1]) and env.num_envs == 3
    h, c = env.rew_end_state
    assert h.shape == c.shape == (1, 3, 32)
    for _ in range(3):
        next_obs, rew, end, info = env.step(torch.tensor([0, 1, 3]))
        assert next_obs.shape == (3, 3, 64, 64) and next_obs.dtype == torch.float32
        assert next_obs.min() >= -1 and next_obs.max() <= 1
        assert rew.shape == (3,) and rew.dtype == torch.float32 and set(rew.tolist()) <= {-1.0, 0.0, 1.0}
        assert end.shape == (3,) and end.dtype == torch.int64 and set(end.tolist()) <= {0, 1}
        assert info["rew_logits"].shape == (3, 3) and info["end_logits"].shape == (3, 2)
        assert torch.equal(env.obs, next_obs)
    assert env.act_buffer[:, -2].tolist() == [0, 1, 3]


def test_step_matches_the_sampler_and_carries_rew_end_state(agent):
    obs_ctx, act_ctx = contexts(2)
    env = WorldModelEnv(agent, generator=torch.Generator().manual_seed(0))
    env.reset(obs_ctx, act_ctx)
    noise = torch.randn(2, 3, 64, 64)
    act = torch.tensor([2, 1])
    next_obs, _, _, info = env.step(act, noise=noise)

    expected_act = act_ctx.clone()
    expected_act[:, -1] = act
    expected = sample_next_obs(agent.denoiser, obs_ctx, expected_act, karras_sigmas(3, 2e-3, 5, 7), noise=noise)
    assert torch.equal(next_obs, expected)
    with torch.no_grad():  # burn-in over the 3 context transitions, then the imagined one
        *_, state = agent.rew_end(obs_ctx[:, :-1], act_ctx[:, :-1], obs_ctx[:, 1:])
        rew_logits, end_logits, state = agent.rew_end(obs_ctx[:, -1:], act[:, None], expected[:, None], state)
    assert torch.allclose(info["rew_logits"], rew_logits[:, 0], atol=1e-5)
    assert torch.allclose(env.rew_end_state[0], state[0], atol=1e-5)
    assert torch.equal(env.obs_buffer[:, :-1], obs_ctx[:, 1:])


def test_same_generator_seed_gives_the_same_game(agent):
    runs = []
    for _ in range(2):
        env = WorldModelEnv(agent, generator=torch.Generator().manual_seed(7))
        env.reset(*contexts(2))
        runs.append([env.step(torch.tensor([1, 2]))[:3] for _ in range(2)])
    for a, b in zip(*runs):
        for x, y in zip(a, b):
            assert torch.equal(x, y)


def test_denoising_steps_setting(agent):
    calls = []

    class Counting:
        def __init__(self, denoiser):
            self.denoiser = denoiser
            self.cfg = denoiser.cfg

        @property
        def device(self):
            return self.denoiser.device

        def denoise(self, *args):
            calls.append(args[1])
            return self.denoiser.denoise(*args)

    class Wrapped:
        def __init__(self, agent):
            self.denoiser, self.rew_end = Counting(agent.denoiser), agent.rew_end
            self.still_levels = agent.still_levels

    env = WorldModelEnv(Wrapped(agent), sampler=SamplerConfig(num_steps_denoising=2))
    env.reset(*contexts(1))
    env.step(torch.tensor([0]))
    assert len(calls) == 2
    env.denoising_steps = 5
    assert env.denoising_steps == 5 and env.sampler.num_steps_denoising == 5
    calls.clear()
    env.step(torch.tensor([0]))
    assert len(calls) == 5 and calls[0].item() == pytest.approx(5.0)


def test_reset_where_restarts_only_the_dead_games(agent):
    env = WorldModelEnv(agent, generator=torch.Generator().manual_seed(0))
    env.reset(*contexts(3))
    env.step(torch.tensor([0, 1, 2]))
    before_obs, before_h = env.obs_buffer.clone(), env.rew_end_state[0].clone()
    new_obs, new_act = contexts(1, seed=5)
    env.reset_where(torch.tensor([False, True, False]), new_obs, new_act)
    assert torch.equal(env.obs_buffer[1], new_obs[0]) and torch.equal(env.act_buffer[1], new_act[0])
    assert torch.equal(env.obs_buffer[[0, 2]], before_obs[[0, 2]])
    assert torch.equal(env.rew_end_state[0][:, [0, 2]], before_h[:, [0, 2]])
    assert not torch.equal(env.rew_end_state[0][:, 1], before_h[:, 1])
    with pytest.raises(ValueError, match="one context per dead game"):
        env.reset_where(torch.tensor([True, True, False]), new_obs, new_act)


def test_bad_use_gives_clear_errors(agent):
    env = WorldModelEnv(agent)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(torch.tensor([0]))
    with pytest.raises(ValueError, match=r"contexts must be obs \(B, 4, 3, H, W\)"):
        env.reset(torch.zeros(1, 3, 3, 64, 64), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="float"):
        env.reset(torch.zeros(1, 4, 3, 64, 64, dtype=torch.uint8), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="precision"):
        WorldModelEnv(agent, precision="float8")


def test_bfloat16_precision_stays_close_to_float32(agent):
    obs_ctx, act_ctx = contexts(1)
    noise = torch.randn(1, 3, 64, 64)
    frames = {}
    for precision in ("float32", "bfloat16"):
        env = WorldModelEnv(agent, precision=precision)
        env.reset(obs_ctx, act_ctx)
        frames[precision] = env.step(torch.tensor([1]), noise=noise)[0]
    assert frames["bfloat16"].dtype == torch.float32
    assert (frames["bfloat16"] - frames["float32"]).abs().mean() < 0.05


def test_keep_still_keeps_the_pixels_that_barely_moved():
    from model.sampler import keep_still

    last = torch.rand(2, 3, 8, 8) * 2 - 1
    level = 2 / 255  # one level of 255 in [-1, 1]
    x = last.clone()
    x[0, :, 0, 0] += 3 * level  # every channel 3 levels off: kept as it was at L = 4
    x[0, 1, 1, 1] -= 5 * level  # one channel 5 levels off: the dreamed pixel stays, all 3 channels
    x[1, :, 2, 3] += 0.5  # a real change
    out = keep_still(x, last, 4)
    assert torch.equal(out[0, :, 0, 0], last[0, :, 0, 0])
    assert torch.equal(out[0, :, 1, 1], x[0, :, 1, 1]) and torch.equal(out[1, :, 2, 3], x[1, :, 2, 3])
    assert torch.equal(keep_still(x, last, 2), x) and torch.equal(keep_still(x, last, 0), x)


def test_still_levels_come_from_the_weights_unless_told(agent):
    """Weights that say "still_levels" dream with it (the pixels that barely moved keep the last frame's values);
    without it, or told 0, the frame is the sampler's as it is (the reference)."""
    obs_ctx, act_ctx = contexts(2)
    noise = torch.randn(2, 3, 64, 64)

    def step(sampler=SamplerConfig()):
        env = WorldModelEnv(agent, sampler, generator=torch.Generator().manual_seed(0))
        env.reset(obs_ctx, act_ctx)
        return env, env.step(torch.tensor([1, 2]), noise=noise)[0]

    env, plain = step()
    assert env.sampler.still_levels == 0.0
    moved = (plain - obs_ctx[:, -1]).abs().amax(1)  # (B, H, W): how far each dreamed pixel moved, in [-1, 1]
    levels = float(moved.median()) * 255 / 2  # half the pixels barely moved, half did
    agent.weights_info["still_levels"] = levels
    try:
        env, kept = step()
        assert env.sampler.still_levels == levels
        _, told_off = step(SamplerConfig(still_levels=0))
    finally:
        del agent.weights_info["still_levels"]
    still = moved <= levels * 2 / 255
    assert 0.3 < still.float().mean() < 0.7
    assert torch.equal(kept.permute(1, 0, 2, 3)[:, still], obs_ctx[:, -1].permute(1, 0, 2, 3)[:, still])
    assert torch.equal(kept.permute(1, 0, 2, 3)[:, ~still], plain.permute(1, 0, 2, 3)[:, ~still])
    assert torch.equal(told_off, plain)
