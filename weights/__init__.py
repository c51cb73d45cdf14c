"""Weights: dreamarcade's safetensors format, DIAMOND checkpoint import, the Hub, shipped weights.

    from weights import load_agent, save_agent
    agent = load_agent("diamond", game="Breakout")     # or None, a path, hf://OWNER/REPO[/PATH][@REV]
    save_agent(agent, "runs/my-run/weights", metadata={"game": "Breakout"})
"""
from weights.format import load_agent_file, read_weights_info, save_agent
from weights.push import push_run
from weights.sources import describe_source, load_agent, parse_hub_source, shipped_weights

__all__ = ["load_agent", "save_agent", "push_run", "load_agent_file", "read_weights_info",
           "describe_source", "parse_hub_source", "shipped_weights"]
