"""`--compile`: the compiled denoiser and reward/end updates compute what the eager ones compute (same losses,
gradient norms and weights after the steps, to float rounding), and what they save loads in an eager agent.

Compiled with the "aot_eager" backend: the same Dynamo and AOTAutograd graphs, forward and backward, as
inductor's, without generating kernels (inductor takes minutes to compile even the tiny model on a 2-core CPU).
"""
from __future__ import annotations

import copy

import pytest
import torch

from app.bench import make_agent, synthetic_batch
from training.optim import ModelOptimizer, OptimConfig
from training.updates import compile_updates, denoiser_update, rew_end_update
from weights import load_agent, save_agent

pytestmark = pytest.mark.usefixtures("one_thread")


def test_compiled_updates_match_eager_and_save_the_same_weights(tmp_path):
    eager = make_agent("tiny", num_actions=3)
    compiled = copy.deepcopy(eager)
    compile_updates(compiled, backend="aot_eager")
    keys = list(eager.state_dict())
    assert list(compiled.state_dict()) == keys  # checkpoints and weights keep their keys
    initial = copy.deepcopy(eager.state_dict())
    torch._dynamo.utils.counters.clear()

    den_batch, re_batch = synthetic_batch(2, 6, 64, 3, seed=1), synthetic_batch(2, 19, 64, 3, seed=2)
    cfg = OptimConfig(warmup_steps=1)  # the second step moves the weights
    opts = {a: {m: ModelOptimizer(getattr(a, m), cfg) for m in ("denoiser", "rew_end")} for a in (eager, compiled)}
    for step in range(2):
        metrics = []
        for agent in (eager, compiled):
            g = torch.Generator().manual_seed(step)
            # float32: compiled and eager to rounding (under a bf16 CPU's default autocast they differ by ~1e-4)
            metrics.append({**denoiser_update(agent, den_batch, opts[agent]["denoiser"], generator=g,
                                              precision="float32"),
                            **{f"re_{k}": v for k, v in rew_end_update(agent, re_batch, opts[agent]["rew_end"],
                                                                       precision="float32").items()}})
        for k in ("loss_denoising", "grad_norm", "re_loss_rew", "re_loss_end", "re_grad_norm"):
            assert float(metrics[1][k]) == pytest.approx(float(metrics[0][k]), rel=1e-5, abs=1e-6), (step, k)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # both networks really ran compiled
    for k, v in eager.state_dict().items():
        torch.testing.assert_close(compiled.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert any(not torch.equal(v, initial[k]) for k, v in eager.state_dict().items())  # the steps moved them

    # the bfloat16 fast path (imagination and play on a GPU) converts deep copies: those must run eagerly
    fast_copy = copy.deepcopy(compiled)
    assert fast_copy.denoiser.inner_model._compiled_call_impl is None
    assert fast_copy.rew_end.encoder._compiled_call_impl is None

    save_agent(compiled, tmp_path / "weights")
    loaded = load_agent(str(tmp_path / "weights"))
    assert list(loaded.state_dict()) == keys
    for k, v in compiled.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
