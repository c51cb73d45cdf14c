"""Precision policies (`model.precision`): each name resolves to one precision, in one place, on every path."""
from pathlib import Path

import pytest
import torch

from app.cli import main
from model import Agent
from model.precision import POLICIES, TRAINING, resolve
from model.presets import tiny
from model.world_model_env import WorldModelEnv
from training.imagination import Imagination

pytestmark = pytest.mark.usefixtures("one_thread")


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads the CPU flags from /proc/cpuinfo")
def test_auto_is_bfloat16_exactly_where_the_cpu_has_it():
    native = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    assert resolve("auto", "cpu") == ("bfloat16" if native else "float32")
    assert resolve("auto-cpu", "cpu") == resolve(TRAINING, "cpu") == ("bfloat16" if native else "float32")


def test_named_policies_resolve_the_same_everywhere():
    assert resolve("float32", "cpu") == "float32" and resolve("bfloat16", "cpu") == "bfloat16"
    assert resolve("auto-gpu", "cpu") == "float32"  # float32 on a CPU, native bf16 or not
    assert resolve("auto-cpu", "cuda") == "float32"  # training's updates on a GPU: float32, each one CUDA graph
    for bad in (None, "bf16", "fp32", "auto-mps"):
        with pytest.raises(ValueError, match="precision must be one of auto, auto-gpu, auto-cpu, float32, bfloat16"):
            resolve(bad, "cpu")


def test_the_world_model_and_imagination_run_what_their_policy_resolves_to():
    agent = Agent(tiny(4)).eval()
    for policy in POLICIES:
        env = WorldModelEnv(agent, precision=policy)
        assert env.precision == resolve(policy, "cpu")
        assert (env._fast is None) == (env.precision == "float32")  # the exact modules, or the fast path
    contexts = lambda n: (torch.zeros(n, 4, 3, 64, 64), torch.zeros(n, 4, dtype=torch.long))
    assert Imagination(agent, contexts, num_envs=1, horizon=1).wm.precision == resolve("auto", "cpu")  # training's
    assert Imagination(agent, contexts, num_envs=1, horizon=1, precision="bfloat16").wm.precision == "bfloat16"


def test_bench_refuses_an_unknown_policy_before_measuring(capsys):
    assert main(["bench", "--quick", "--preset", "tiny", "--train-precision", "fp16"]) == 2
    err = capsys.readouterr().err
    assert "'fp16'" in err and "auto, auto-gpu, auto-cpu, float32, bfloat16" in err and "Traceback" not in err
