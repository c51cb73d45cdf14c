"""The denoiser's and reward/end updates through `training.graphed_updates.GraphedUpdate` (static input buffers;
on CUDA captured once as a CUDA graph and replayed) compute what `training.updates` computes, update for update:
the same losses, gradient norms, learning rates, gradients and weights, from the same seed and weights. On a CPU
the path runs eagerly through the same buffers; the CUDA cases (captured replays) skip without a GPU."""
from __future__ import annotations

import copy
import io

import pytest
import torch

from app.bench import synthetic_batch
from training.graphed_updates import can_capture, cuda_graphs_enabled, graphed_denoiser_update, graphed_rew_end_update
from training.optim import ModelOptimizer, OptimConfig
from training.updates import denoiser_update, rew_end_update
from update_helpers import NUM_ACTIONS as A
from update_helpers import agent, device, needs_cuda  # noqa: F401 (agent, device: fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")
OPT = OptimConfig(lr=1e-3, max_grad_norm=1.0, warmup_steps=2)  # update 1 at lr 0; a norm the updates exceed
SEQ = {"denoiser": 6, "rew_end": 8}


def batch(model: str, seed: int, device):
    """A different batch at every seed, with padding (masked steps) and an episode end."""
    b = synthetic_batch(4, SEQ[model], 64, A, seed=seed)
    b.mask[0, :2] = False
    b.mask[2, -2:] = False
    b.end[2, -3] = 1
    return b.to(device)


def plain_and_graphed(agent, model: str, device, generator: str, warmup: int = 1):
    """Two copies of the agent: (plain update fn, its agent, optimizer), (graphed update, its agent, optimizer).
    generator: "explicit" (a generator per side, same seed) or "default" (the device's, reseeded per side)."""
    sides = []
    for graphed in (False, True):
        a = copy.deepcopy(agent).to(device)
        opt = ModelOptimizer(getattr(a, model), OPT)
        g = torch.Generator(device).manual_seed(3) if generator == "explicit" else None
        if model == "denoiser":
            fn = (graphed_denoiser_update(a, opt, g, warmup=warmup, cuda_graphs=True) if graphed
                  else (lambda b, a=a, opt=opt, g=g: denoiser_update(a, b, opt, generator=g)))
        else:
            fn = (graphed_rew_end_update(a, opt, warmup=warmup, cuda_graphs=True) if graphed
                  else (lambda b, a=a, opt=opt: rew_end_update(a, b, opt)))
        sides.append((fn, a, opt))
    return sides


@pytest.mark.parametrize("model, generator", [("denoiser", "explicit"), ("denoiser", "default"),
                                              ("rew_end", "default")])  # the reward/end loss draws no noise
def test_graphed_updates_match_the_plain_updates(agent, model, device, generator):
    """3 updates (on CUDA: 1 warm-up, the capture and its replay, a replay) == 3 plain updates: losses, gradient
    norms, lr, the last gradients and the weights, to float rounding; and the step count the checkpoint saves."""
    (plain, a_plain, opt_plain), (graphed, a_graphed, opt_graphed) = plain_and_graphed(agent, model, device, generator)
    steps = 3
    if generator == "default":
        torch.manual_seed(7)
    ref = [{k: float(v) for k, v in plain(batch(model, i, device)).items()} for i in range(steps)]
    if generator == "default":
        torch.manual_seed(7)
    new = [{k: float(v) for k, v in graphed(batch(model, i, device)).items()} for i in range(steps)]
    assert graphed.captured == (device.type == "cuda")
    assert ref[0]["lr"] < ref[1]["lr"]  # the warm-up schedule moves (lr: the next update's): not a constant
    for i, (r, n) in enumerate(zip(ref, new)):
        assert n.keys() == r.keys()
        for k in r:
            assert n[k] == pytest.approx(r[k], rel=1e-5, abs=1e-7), (i, k)
    assert len({round(r["grad_norm"], 6) for r in ref}) == steps  # each update saw its own batch (and noise)
    module_plain, module_graphed = getattr(a_plain, model), getattr(a_graphed, model)
    scale = max(float(p.grad.abs().max()) for p in module_plain.parameters())
    for p, q in zip(module_graphed.parameters(), module_plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-5 * scale)
        torch.testing.assert_close(p, q, rtol=0, atol=0.1 * OPT.lr)  # 10% of one step, as test_update_equivalence
    assert opt_graphed.num_steps == opt_plain.num_steps == steps
    assert opt_graphed.state_dict()["scheduler"] == opt_plain.state_dict()["scheduler"]


def test_a_resumed_graphed_update_continues_as_the_uninterrupted_one(agent, device):
    """The optimizer state of a graphed (on CUDA: captured, capturable) update saved after 3 updates and loaded into
    a fresh agent and optimizer: the next update there == the next update of the run that was not stopped."""
    model = "rew_end"
    a = copy.deepcopy(agent).to(device)
    opt = ModelOptimizer(a.rew_end, OPT)
    update = graphed_rew_end_update(a, opt, warmup=1, cuda_graphs=True)
    for i in range(3):
        update(batch(model, i, device))
    buf = io.BytesIO()
    torch.save({"agent": a.state_dict(), "optimizer": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=False)
    b = copy.deepcopy(agent).to(device)
    b.load_state_dict(ckpt["agent"])
    opt_b = ModelOptimizer(b.rew_end, OPT)
    opt_b.load_state_dict(ckpt["optimizer"])
    resumed = graphed_rew_end_update(b, opt_b, warmup=1, cuda_graphs=True)
    m_a, m_b = update(batch(model, 3, device)), resumed(batch(model, 3, device))
    assert opt_b.num_steps == opt.num_steps == 4 and m_b["lr"] == m_a["lr"] == OPT.lr
    assert float(m_b["grad_norm"]) == pytest.approx(float(m_a["grad_norm"]), rel=1e-5)
    for p, q in zip(b.rew_end.parameters(), a.rew_end.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0.1 * OPT.lr)


def test_a_batch_of_another_shape_is_refused(agent):
    a = copy.deepcopy(agent)
    update = graphed_rew_end_update(a, ModelOptimizer(a.rew_end, OPT))
    update(batch("rew_end", 0, "cpu"))
    with pytest.raises(ValueError, match=r"reward/end update: built for batches with obs \(4, 8, 3, 64, 64\)"):
        update(synthetic_batch(2, 8, 64, A))


def test_what_is_captured(monkeypatch):
    """Captured: a CUDA model's float32 update on one process. Eager: a CPU, several ranks (their gradients are
    averaged from Python between backward and step), bfloat16 autocast, and DREAMARCADE_CUDA_GRAPHS=0."""
    monkeypatch.delenv("DREAMARCADE_CUDA_GRAPHS", raising=False)
    assert can_capture("cuda", "float32") and can_capture("cuda:1", "float32")
    assert not can_capture("cpu", "float32")
    assert not can_capture("cuda", "float32", grad_sync=True)
    assert not can_capture("cuda", "bfloat16")
    for value, on in (("0", False), ("off", False), ("1", True)):
        monkeypatch.setenv("DREAMARCADE_CUDA_GRAPHS", value)
        assert cuda_graphs_enabled() is on and can_capture("cuda", "float32") is on


@needs_cuda
@pytest.mark.parametrize("model", ["denoiser", "rew_end"])
def test_replays_wait_for_nothing_and_show_the_weights_changed(agent, model):
    """After the capture, replays run with torch's sync debug mode set to error (no host synchronisation), and
    each bumps the weights' versions: the world model's bfloat16 copy (`model.fast`) and the context pool's
    reward/end burn-in (`training.context_pool`) are re-made when those change, else imagination would run on
    the weights of the capture."""
    from model.fast import weights_version

    a = copy.deepcopy(agent).cuda()
    opt = ModelOptimizer(getattr(a, model), OPT)
    update = (graphed_denoiser_update(a, opt, warmup=1, cuda_graphs=True) if model == "denoiser"
              else graphed_rew_end_update(a, opt, warmup=1, cuda_graphs=True))
    for i in range(2):
        update(batch(model, i, "cuda"))
    assert update.captured
    module = getattr(a, model)
    before = weights_version(module)
    weights = [p.detach().clone() for p in module.parameters()]
    b = batch(model, 2, "cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        metrics = update(b)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert all(torch.isfinite(v) for k, v in metrics.items() if k != "lr")
    assert any(not torch.equal(w, p) for w, p in zip(weights, module.parameters()))  # the replay stepped
    assert weights_version(module) != before
