"""DIAMOND-format agent checkpoints for tests, built from the reference key list (not from our model).

`tests/data/diamond_agent_state_dict.txt` is a copy of reference/diamond_agent_state_dict.txt: every
key, shape and dtype of DIAMOND's Agent state_dict for 4 actions. The action-dependent entries
take the requested number of actions.
"""
from __future__ import annotations

from pathlib import Path

import torch

KEY_LIST = Path(__file__).resolve().parent / "data" / "diamond_agent_state_dict.txt"
# Entries whose first dimension is the number of actions (diamond.md section 2).
ACTION_KEYS = (
    "denoiser.inner_model.act_emb.0.weight",
    "rew_end_model.act_emb.weight",
    "actor_critic.actor_linear.weight",
    "actor_critic.actor_linear.bias",
)


def reference_shapes(num_actions: int = 4) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in KEY_LIST.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype, _ = line.split("\t")
        assert dtype == "torch.float32", line
        dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
        if key in ACTION_KEYS:
            dims = (num_actions, *dims[1:])
        shapes[key] = dims
    return shapes


def diamond_state_dict(num_actions: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float32 values under DIAMOND's key names and shapes."""
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator) * 0.02 for key, shape in reference_shapes(num_actions).items()}


def save_diamond_checkpoint(path: str | Path, num_actions: int = 4, seed: int = 0) -> Path:
    """Write a checkpoint as DIAMOND does: `torch.save(agent.state_dict(), path)`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(diamond_state_dict(num_actions, seed), path)
    return path
