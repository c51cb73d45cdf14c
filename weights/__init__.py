"""Weights: dreamarcade's safetensors format, DIAMOND checkpoint import, the Hub, shipped weights.

    from weights import load_agent, save_agent
    agent = load_agent("diamond", game="Breakout")     # or None, a path, hf://OWNER/REPO[/PATH][@REV]
    save_agent(agent, "runs/my-run/weights", metadata={"game": "Breakout"})

Names are imported on first use, so `import weights.hub` does not pull in torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "load_agent": "weights.sources", "describe_source": "weights.sources", "parse_hub_source": "weights.sources",
    "shipped_weights": "weights.sources", "fetch_diamond": "weights.sources",
    "save_agent": "weights.format", "load_agent_file": "weights.format", "read_weights_info": "weights.format",
    "push_run": "weights.push",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'weights' has no attribute {name!r}")
