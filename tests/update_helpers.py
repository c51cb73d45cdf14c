"""What the update-equivalence tests share: a device to compare exactly on (the `device` fixture: cpu, and cuda
where there is one) and a tiny agent with no layer left at zero (the `agent` fixture). A test module imports the
fixtures it uses by name."""
from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from model import Agent
from model.presets import tiny

NUM_ACTIONS = 3
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


@contextmanager
def exact_device(name: str):
    """The torch device `name`; on cuda without TF32, whose rounding depends on the batch size and would blur
    the comparison."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield torch.device(name)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def filled_tiny_agent(num_actions: int) -> Agent:
    """The tiny agent from seed 0, its zero-initialised output layers filled: nothing trivially zero."""
    torch.manual_seed(0)
    agent = Agent(tiny(num_actions))
    with torch.no_grad():
        for p in agent.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.3)
    return agent


@pytest.fixture(params=DEVICES)
def device(request):
    """cpu, and cuda where there is one (without TF32: see `exact_device`)."""
    with exact_device(request.param) as device:
        yield device


@pytest.fixture(scope="module")
def agent():
    return filled_tiny_agent(NUM_ACTIONS)
