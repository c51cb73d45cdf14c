"""The sync-free updates (fixed shapes, masks, device metrics, fused AdamW with a device lr) compute what the
previous implementation computed: same losses and gradients to float rounding, from the same seed and weights,
for all three models. The previous implementation is kept here, verbatim in its maths, as the reference."""
from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Categorical

from app.bench import synthetic_batch
from model.returns import ActorCriticLossConfig, actor_critic_loss
from model.sampler import SamplerConfig
from model.world_model_env import WorldModelEnv
from training.imagination import Imagination, actor_critic_update
from training.optim import ModelOptimizer, OptimConfig, param_groups
from training.presets import ImaginationConfig
from training.updates import denoiser_update, rew_end_update
from update_helpers import NUM_ACTIONS as A
from update_helpers import agent, device, needs_cuda  # noqa: F401 (agent, device: fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")


class ContextStream:
    """Deterministic real-like contexts: the k-th context drawn is always the same, however they are batched."""

    def __init__(self) -> None:
        self.drawn = 0

    @staticmethod
    def context(k: int):
        g = torch.Generator().manual_seed(1000 + k)
        return torch.rand(4, 3, 64, 64, generator=g) * 2 - 1, torch.randint(0, A, (4,), generator=g)

    def __call__(self, n: int):
        obs, act = zip(*(self.context(k) for k in range(self.drawn, self.drawn + n)))
        self.drawn += n
        return torch.stack(obs), torch.stack(act)


class ReferenceOptimizer:
    """The previous ModelOptimizer: torch's default AdamW, LambdaLR warm-up, the gradient norm read as a float."""

    def __init__(self, model, cfg: OptimConfig) -> None:
        self.model, self.cfg = model, cfg
        self.optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, eps=cfg.eps)
        warmup = max(1, cfg.warmup_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: min(1.0, step / warmup))

    def step(self, loss) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return float(grad_norm)


class ReferenceImagination:
    """The previous Imagination: contexts drawn only for the dead games, boolean-mask resets on the host."""

    def __init__(self, agent, sample_context, num_envs, horizon, denoising_steps, generator) -> None:
        self.sample_context, self.num_envs, self.horizon = sample_context, num_envs, horizon
        self.wm = WorldModelEnv(agent, SamplerConfig(num_steps_denoising=denoising_steps), generator=generator)
        self.ep_len = torch.zeros(num_envs, dtype=torch.long)
        self.obs = None

    def reset(self):
        self.obs = self.wm.reset(*self.sample_context(self.num_envs))
        self.ep_len.zero_()
        return self.obs

    @torch.no_grad()
    def step(self, act):
        next_obs, rew, end, _ = self.wm.step(act)
        self.ep_len += 1
        end = end.bool().cpu()
        trunc = (self.ep_len >= self.horizon) & ~end
        dead = end | trunc
        info = {"dead": dead}
        if dead.any():
            idx = dead.nonzero().squeeze(1)
            obs_ctx, act_ctx = self.sample_context(len(idx))
            info["final_obs"] = next_obs[idx.to(next_obs.device)].clone()
            info["burnin_obs"] = obs_ctx[:, :-1]
            self.wm.reset_where(dead, obs_ctx, act_ctx)
            next_obs = self.wm.obs.clone()
            self.ep_len[idx] = 0
        self.obs = next_obs
        return next_obs, rew.float(), end.to(next_obs.device), trunc.to(next_obs.device), info


def reference_actor_critic_update(agent, imagination, optimizer, cfg, state):
    """The previous actor_critic_update: V(final) and the burn-in on the dead rows only, a variable batch."""
    ac = agent.actor_critic
    ac.train()
    obs = imagination.obs if imagination.obs is not None else imagination.reset()
    if state is None:
        h = obs.new_zeros(obs.shape[0], ac.lstm.hidden_size)
        state = (h, torch.zeros_like(h))
    state = (state[0].detach(), state[1].detach())
    all_logits, acts, values, rews, ends, truncs, values_next = [], [], [], [], [], [], []
    for t in range(cfg.horizon):
        logits, value, state = ac(obs, state)
        act = Categorical(logits=logits).sample()
        next_obs, rew, end, trunc, info = imagination.step(act)
        for seq, x in ((all_logits, logits), (acts, act), (values, value), (rews, rew), (ends, end), (truncs, trunc)):
            seq.append(x)
        dead, v_next = info["dead"], None
        if dead.any():
            with torch.no_grad():
                d = dead.nonzero().squeeze(1).to(obs.device)
                _, v_final, _ = ac(info["final_obs"], (state[0][d], state[1][d]))
            v_next = torch.zeros_like(value).index_copy(0, d, v_final)
            s = None
            for k in range(info["burnin_obs"].shape[1]):
                _, _, s = ac(info["burnin_obs"][:, k], s)
            state = state[0].index_copy(0, d, s[0]), state[1].index_copy(0, d, s[1])
        values_next.append((dead.to(obs.device), v_next))
        obs = next_obs
    with torch.no_grad():
        _, v_last, _ = ac(obs, state)
    nexts = [v.detach() for v in values[1:]] + [v_last]
    value_next = torch.stack([torch.where(dead, v_dead, nxt) if v_dead is not None else nxt
                              for (dead, v_dead), nxt in zip(values_next, nexts)], dim=1)
    rew, end = torch.stack(rews, 1), torch.stack(ends, 1)
    loss_cfg = ActorCriticLossConfig(cfg.gamma, cfg.lam, cfg.weight_value_loss, cfg.weight_entropy_loss)
    loss, terms = actor_critic_loss(torch.stack(all_logits, 1), torch.stack(acts, 1), torch.stack(values, 1),
                                    rew, end, torch.stack(truncs, 1), value_next, loss_cfg)
    grad_norm = optimizer.step(loss)
    metrics = {k: float(v) for k, v in terms.items()}
    metrics.update(imagined_reward=rew.sum(1).mean().item(), imagined_end_rate=end.float().mean().item(),
                   grad_norm=grad_norm, num_dead_mid_rollout=int(torch.stack(ends[:-1]).sum()))
    return metrics, (state[0].detach(), state[1].detach())


def grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def assert_close_grads(new, ref, rtol):
    assert len(new) == len(ref)
    scale = max(float(g.abs().max()) for g in ref)
    assert scale > 0
    for a, b in zip(new, ref):
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale)


def assert_close_weights(new, ref, lr):
    """Weights after a few AdamW steps: Adam divides by sqrt(v), so where a gradient is near zero a rounding-level
    difference in it (channels-last convolutions, another batch size) moves that weight's step; allowed: 10% of
    one step (lr). `test_optimizer_matches_the_previous_one` checks the optimizer itself tightly."""
    for p, q in zip(new.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0.1 * lr)


@pytest.mark.parametrize("fixed_shapes", [True, False], ids=["all-rows-burn-in", "dead-rows-burn-in"])
def test_actor_critic_update_matches_the_previous_implementation(agent, device, fixed_shapes):
    """Same weights, seeds and contexts (a deterministic stream: the previous code drew contexts only for the dead
    games, the new one draws them ahead into a pool, in the same order): the same imagined games, actions, losses
    and gradients, update after update, with games ending mid-rollout (the reward/end model's ends). Both ways of
    restarting games: every row burned in and selected by mask (a GPU's default), or only the dead rows (a CPU's)."""
    cfg = ImaginationConfig(horizon=4, denoising_steps=1)
    opt_cfg = OptimConfig(lr=1e-3, weight_decay=0.0, max_grad_norm=100.0, warmup_steps=2)  # update 1 at lr 0
    runs = {}
    for name in ("reference", "new"):
        a = copy.deepcopy(agent).to(device)
        g = torch.Generator(device).manual_seed(5)
        torch.manual_seed(11)  # the actions' RNG
        if name == "reference":
            im = ReferenceImagination(a, ContextStream(), 4, cfg.horizon, cfg.denoising_steps, g)
            opt, update = ReferenceOptimizer(a.actor_critic, opt_cfg), reference_actor_critic_update
        else:
            im = Imagination(a, ContextStream(), 4, cfg.horizon, cfg.denoising_steps, g, precision="float32")
            opt = ModelOptimizer(a.actor_critic, opt_cfg)
            update = functools.partial(actor_critic_update, fixed_shapes=fixed_shapes)
        state, history = None, []
        for _ in range(2):
            metrics, state = update(a, im, opt, cfg, state)
            history.append((metrics, grads(a.actor_critic), state))
        runs[name] = history, a
    (ref, ref_agent), (new, new_agent) = runs["reference"], runs["new"]
    assert sum(m["num_dead_mid_rollout"] for m, _, _ in ref) > 0, "no game ended mid-rollout: nothing tested"
    for i, ((m_ref, g_ref, s_ref), (m_new, g_new, s_new)) in enumerate(zip(ref, new)):
        assert isinstance(m_new["loss_actions"], torch.Tensor)  # metrics stay on the device
        for k in ("loss_actions", "loss_values", "loss_entropy", "lambda_return", "imagined_reward",
                  "imagined_end_rate", "grad_norm"):
            assert float(m_new[k]) == pytest.approx(m_ref[k], rel=1e-5, abs=1e-6), (i, k)
        assert_close_grads(g_new, g_ref, rtol=1e-5)
        torch.testing.assert_close(s_new, s_ref, rtol=1e-5, atol=1e-6)
    assert_close_weights(new_agent.actor_critic, ref_agent.actor_critic, opt_cfg.lr)


@pytest.mark.parametrize("fixed_shapes", [True, False], ids=["all-rows-burn-in", "dead-rows-burn-in"])
def test_restarted_rows_only_get_gradient_through_their_restart(agent, fixed_shapes):
    """Where a game did not die, its burn-in on a pooled context is discarded (or never computed): exactly zero
    gradient flows into it (so it cannot change the update), while the dead rows' burn-in does get gradient. Both
    ways give the same state."""
    from training.imagination import _final_values, _restart_state

    ac = copy.deepcopy(agent.actor_critic)
    burnin = torch.rand(3, 3, 3, 64, 64, requires_grad=True)
    state = tuple(torch.randn(3, ac.lstm.hidden_size, requires_grad=True) for _ in range(2))
    dead = torch.tensor([False, True, False])
    rows_of = lambda d, fixed: None if fixed else d.nonzero().squeeze(1)
    h, c = _restart_state(ac, state, dead, burnin, rows_of(dead, fixed_shapes))
    (h.sum() + c.sum()).backward()
    assert burnin.grad[~dead].abs().max() == 0 and burnin.grad[dead].abs().max() > 0
    assert state[0].grad[dead].abs().max() == 0 and torch.equal(state[0].grad[~dead], torch.ones(2, h.shape[1]))
    with torch.no_grad():
        other = _restart_state(ac, state, dead, burnin, rows_of(dead, not fixed_shapes))
        torch.testing.assert_close((h, c), other, rtol=1e-5, atol=1e-6)
        alive = torch.zeros(3, dtype=torch.bool)
        assert _restart_state(ac, state, alive, burnin, rows_of(alive, fixed_shapes))[0].equal(state[0])
        frames = torch.rand(3, 3, 64, 64)
        v = _final_values(ac, frames, state, rows_of(dead, fixed_shapes))
        torch.testing.assert_close(v[dead], ac(frames, state)[1][dead], rtol=1e-5, atol=1e-6)


def reference_rew_end_loss(model, batch):
    """The previous loss: boolean indexing of the real transitions."""
    mask = batch.mask[:, :-1]
    rew_logits, end_logits, _ = model(batch.obs[:, :-1], batch.act[:, :-1], batch.obs[:, 1:])
    target_rew = batch.rew[:, :-1][mask].sign().long() + 1
    target_end = batch.end[:, :-1][mask].long()
    count = mask.sum().clamp(min=1)
    return (F.cross_entropy(rew_logits[mask], target_rew, reduction="sum") / count,
            F.cross_entropy(end_logits[mask], target_end, reduction="sum") / count)


def padded_batch(t: int, seed: int):
    batch = synthetic_batch(4, t, 64, A, seed=seed)
    batch.mask[0, :3] = False  # padding before an episode start
    batch.mask[2, -4:] = False  # and after an episode end
    batch.end[2, -5] = 1
    return batch


def test_rew_end_update_matches_the_previous_implementation(agent, device):
    opt_cfg = OptimConfig(lr=1e-3, max_grad_norm=100.0, warmup_steps=2)
    ref_model, new_agent = copy.deepcopy(agent.rew_end).to(device), copy.deepcopy(agent).to(device)
    ref_opt, new_opt = ReferenceOptimizer(ref_model, opt_cfg), ModelOptimizer(new_agent.rew_end, opt_cfg)
    for i in range(3):
        batch = padded_batch(8, seed=i).to(device)
        loss_rew, loss_end = reference_rew_end_loss(ref_model.train(), batch)
        ref_norm = ref_opt.step(loss_rew + loss_end)
        m = rew_end_update(new_agent, batch, new_opt, precision="float32")  # the maths, not a CPU's bf16 default
        assert float(m["loss_rew"]) == pytest.approx(loss_rew.item(), rel=1e-5)
        assert float(m["loss_end"]) == pytest.approx(loss_end.item(), rel=1e-5)
        assert float(m["grad_norm"]) == pytest.approx(ref_norm, rel=1e-5)
        assert_close_grads(grads(new_agent.rew_end), grads(ref_model), rtol=1e-5)
    empty = padded_batch(8, seed=9).to(device)
    empty.mask[:] = False  # no real transition: 0, not NaN, as before
    assert [float(x.detach()) for x in new_agent.rew_end.loss_terms(empty)] == [0.0, 0.0]


def test_denoiser_update_matches_the_previous_implementation(agent, device):
    opt_cfg = OptimConfig(lr=1e-3, warmup_steps=2)
    ref_model, new_agent = copy.deepcopy(agent.denoiser).to(device), copy.deepcopy(agent).to(device)
    ref_opt, new_opt = ReferenceOptimizer(ref_model, opt_cfg), ModelOptimizer(new_agent.denoiser, opt_cfg)
    for i in range(2):
        batch = padded_batch(6, seed=i).to(device)
        loss = ref_model.train().loss(batch, generator=torch.Generator(device).manual_seed(i))
        ref_norm = ref_opt.step(loss)
        m = denoiser_update(new_agent, batch, new_opt, generator=torch.Generator(device).manual_seed(i),
                            precision="float32")
        assert float(m["loss_denoising"]) == pytest.approx(loss.item(), rel=1e-5)
        assert float(m["grad_norm"]) == pytest.approx(ref_norm, rel=1e-5)
        assert m["lr"] == ref_opt.scheduler.get_last_lr()[0]
        assert_close_grads(grads(new_agent.denoiser), grads(ref_model), rtol=1e-5)
    assert_close_weights(new_agent.denoiser, ref_model, opt_cfg.lr)


def test_optimizer_matches_the_previous_one():
    """Fused AdamW with the lr schedule as a device tensor == torch's default AdamW + LambdaLR, step for step:
    same lr (0 at the first step), same clipped gradient norm, same weights to float rounding; and its state
    round-trips, also into the previous form's reader (a LambdaLR "last_epoch")."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 4))
    ref_model = copy.deepcopy(model)
    cfg = OptimConfig(lr=1e-2, weight_decay=0.1, max_grad_norm=0.5, warmup_steps=3)
    opt, ref = ModelOptimizer(model, cfg), ReferenceOptimizer(ref_model, cfg)
    for i in range(8):
        x = torch.randn(8, 16, generator=torch.Generator().manual_seed(i))
        assert opt.lr == ref.scheduler.get_last_lr()[0]
        norm = opt.step(model(x).pow(2).mean())
        assert isinstance(norm, torch.Tensor) and float(norm) == pytest.approx(ref.step(ref_model(x).pow(2).mean()), rel=1e-5)
        for p, q in zip(model.parameters(), ref_model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert opt.num_steps == 8 and opt.state_dict()["scheduler"]["last_epoch"] == ref.scheduler.last_epoch
    other = ModelOptimizer(copy.deepcopy(model), cfg)
    other.load_state_dict({"optimizer": opt.state_dict()["optimizer"], "scheduler": ref.scheduler.state_dict()})
    assert other.num_steps == 8 and other.lr == opt.lr and float(other.optimizer.param_groups[0]["lr"]) == pytest.approx(cfg.lr)


@needs_cuda
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_updates_never_wait_for_the_gpu(agent, precision):
    """After a warm-up update (it fills the pool of contexts; bfloat16: captures the CUDA graph), updates of all
    three models run with torch's sync debug mode set to error: not one host synchronisation."""
    a = copy.deepcopy(agent).cuda()
    cfg = ImaginationConfig(horizon=4, denoising_steps=3)
    im = Imagination(a, ContextStream(), 4, cfg.horizon, cfg.denoising_steps, torch.Generator("cuda").manual_seed(0),
                     precision=precision)
    opts = {m: ModelOptimizer(getattr(a, m), OptimConfig()) for m in ("denoiser", "rew_end", "actor_critic")}
    den, rew_end = padded_batch(6, seed=0).to("cuda"), padded_batch(8, seed=0).to("cuda")
    _, state = actor_critic_update(a, im, opts["actor_critic"], cfg, None)
    denoiser_update(a, den, opts["denoiser"])
    rew_end_update(a, rew_end, opts["rew_end"])
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            metrics, state = actor_critic_update(a, im, opts["actor_critic"], cfg, state)
        denoiser_update(a, den, opts["denoiser"])
        rew_end_update(a, rew_end, opts["rew_end"])
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in metrics.values())
