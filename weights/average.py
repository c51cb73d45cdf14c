"""Average several weight files of one model (snapshots of one training run, epoch by epoch), as a cheap stand-in
for an exponential moving average of the weights: a run trained at a constant learning rate wanders from epoch to
epoch (a colour tint one epoch, a blur the next), and the mean of its last snapshots keeps what they share.

    python -m weights.average OUT.safetensors RUN/snapshots/e10.safetensors ... [--actor-critic FILE] [--dtype float16]
        [--denoising-steps N] [--still-levels L]

--actor-critic takes the actor-critic from another weights file of the same architecture (a static-dataset run
trains none). The metadata is the last input's, plus "averaged" (the input files and their epochs).
--denoising-steps N writes "denoising_steps": the sampler steps `play` and `eval --fidelity` use with these weights
when not told (`model.Agent.denoising_steps`; else the reference's 3). Write it only where the fidelity with N steps
was measured as good as with 3: fewer steps play faster.
--still-levels L writes "still_levels": a dreamed pixel that moved by at most L levels (of 255) from the last frame
keeps its value (`model.sampler.keep_still`; else 0, off). Write it where the fidelity was measured with it.
"""
from __future__ import annotations

import argparse
import sys

import torch

from weights.errors import UserError
from weights.format import load_agent_file, read_weights_info, save_agent


def average(files: list[str], actor_critic: str | None = None, denoising_steps: int | None = None,
            still_levels: float | None = None):
    """-> (agent holding the mean of the files' floating-point tensors, metadata). Raises UserError for files of
    different models."""
    if not files:
        raise UserError("nothing to average: give at least one weights file")
    if denoising_steps is not None and denoising_steps < 1:
        raise UserError(f"--denoising-steps must be at least 1, not {denoising_steps}")
    if still_levels is not None and still_levels < 0:
        raise UserError(f"--still-levels must be at least 0, not {still_levels}")
    agents = [load_agent_file(f) for f in files]
    for f, a in zip(files[1:], agents[1:]):
        if a.config != agents[0].config:
            raise UserError(f"{f}: another model than {files[0]}; only snapshots of one model can be averaged")
    states = [a.state_dict() for a in agents]
    mean = {k: torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v
            for k, v in states[0].items()}
    agent = agents[0]
    agent.load_state_dict(mean)
    info = read_weights_info(files[-1])["info"]
    info["averaged"] = [{"file": str(f), "epoch": read_weights_info(f)["info"].get("epoch")} for f in files]
    if actor_critic is not None:
        other = load_agent_file(actor_critic)
        try:
            agent.actor_critic.load_state_dict(other.actor_critic.state_dict())
        except RuntimeError as e:
            raise UserError(f"{actor_critic}: its actor-critic does not fit this model ({e})") from None
        info["actor_critic_from"] = str(actor_critic)
    if denoising_steps is not None:
        info["denoising_steps"] = denoising_steps
    if still_levels is not None:
        info["still_levels"] = still_levels
    return agent, info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m weights.average", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the weights file to write (.safetensors) or a weights directory")
    p.add_argument("files", nargs="+", help="weights files of one model")
    p.add_argument("--actor-critic", metavar="FILE", help="take the actor-critic from this weights file")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--denoising-steps", type=int, metavar="N",
                   help="the sampler steps play and eval use with these weights by default (else 3)")
    p.add_argument("--still-levels", type=float, metavar="L",
                   help="dreamed pixels that moved by at most L of 255 levels keep their value (else 0, off)")
    args = p.parse_args(argv)
    try:
        agent, info = average(args.files, args.actor_critic, args.denoising_steps, args.still_levels)
        print(save_agent(agent, args.out, metadata=info, dtype=args.dtype))
    except (UserError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
