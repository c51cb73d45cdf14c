"""`dreamarcade bench`: measure play and training speed on this machine (DESIGN.md, "Performance")."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.commands import require_at_least
from weights.errors import NotFound, UserError

DESCRIPTION = """\
Measure the speed figures of DESIGN.md on this machine and compare them with the reference's own code
(diamond.md section 7: 2-core AMD EPYC CPU): the play step (batch 1: actor + 3 Euler denoising steps +
reward/end, reference-size model, 4 actions, 64x64) in every precision, denoiser training (batch 32),
reward/end training (32 x 19), actor-critic training in imagination (32 envs x 15 steps, with backward),
real-env collection, and on a GPU one real atari100k training epoch end to end (epoch_s, split by phase) and
the run it implies (run_hours_estimate, 1000 epochs). Medians over repeated runs after warm-up, random weights,
synthetic data (the epoch: real play of --game).
A full run of the reference-size model takes several minutes on 2 CPU cores; --quick does one run of each.
--reference-code DIR also measures the reference's own code, imported from DIR (a checkout of
github.com/eloialonso/diamond), for denoiser, rew_end and imagination, right after ours in the same run (same
threads, batch sizes, warm-up and repeats; theirs in float32), and reports each ratio ours/theirs.

examples:
  dreamarcade bench --json bench.json
  dreamarcade bench --quick --only play
  dreamarcade bench --device cuda --json bench-gpu.json      (a GPU, with epoch_s: one real atari100k epoch)
  dreamarcade bench --only epoch --model tiny --game Catch --batch-size 2 --epoch-updates 2   (its smoke test)
  dreamarcade bench --device cuda --only denoiser rew_end epoch --compile    (the same, torch.compile'd)
  dreamarcade bench --quick --model tiny --batch-size 2 --json /tmp/bench.json     (a smoke test)
  git clone https://github.com/eloialonso/diamond /tmp/diamond
  dreamarcade bench --threads 1 --only denoiser rew_end imagination --reference-code /tmp/diamond --json ref.json
"""

PARTS = ("play", "denoiser", "rew_end", "imagination", "collect", "epoch")


def add_parser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", metavar="FILE", help="write the report (one JSON object) to FILE")
    p.add_argument("--repeats", type=int, default=None, metavar="N",
                   help="timed runs per measurement, after warm-up (default 3, 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="fewer and shorter runs (noisier)")
    p.add_argument("--model", default="atari100k", metavar="SIZE",
                   help="model size: atari100k (default, the reference's), small, small-residual (the breakout "
                        "training preset's), tiny (smoke tests); not a training one of `train`")
    p.add_argument("--preset", dest="model", help=argparse.SUPPRESS)  # its old name
    p.add_argument("--only", nargs="+", choices=PARTS, default=None, metavar="PART",
                   help=f"measure only these: {', '.join(PARTS)} (default: all; epoch, a real atari100k training "
                        "epoch, only on a GPU)")
    p.add_argument("--epoch-updates", type=int, default=400, metavar="N",
                   help="updates per model in the timed epoch (default 400, atari100k's; fewer are scaled to 400)")
    p.add_argument("--batch-size", type=int, default=32, metavar="B",
                   help="batch of the training measurements (default 32, the reference's; smaller for smoke tests)")
    # precision policies (model.precision: auto, auto-gpu, auto-cpu, float32, bfloat16); unset: training's
    p.add_argument("--train-precision", metavar="POLICY", default=argparse.SUPPRESS,
                   help="precision of the denoiser and reward/end updates: auto-cpu (default, what training uses: "
                        "bfloat16 autocast on a CPU with native bf16, ~2x there; float32 on a GPU), float32, "
                        "bfloat16, auto (bfloat16 wherever native)")
    p.add_argument("--imagination-precision", metavar="POLICY", default=argparse.SUPPRESS,
                   help="precision of imagination's world model: auto (default, what training uses: the bfloat16 "
                        "fast path where the device runs bf16 natively, else float32), float32, bfloat16, "
                        "auto-gpu, auto-cpu")
    p.add_argument("--compile", action="store_true",
                   help="opt-in: torch.compile the denoiser's and reward/end model's networks, as train --compile "
                        "(compiled in the warm-up, which takes minutes on a GPU and longer on a CPU; the timed runs "
                        "exclude it)")
    p.add_argument("--game", default="Breakout", help="game of the collection measurement (default Breakout)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    p.add_argument("--reference-code", metavar="DIR", default=None,
                   help="a checkout of the reference's repository (github.com/eloialonso/diamond): also measure its "
                        "own code for denoiser, rew_end and imagination in this run, and report ours/theirs")
    p.add_argument("--device", default="cpu",
                   help="torch device of the model measurements: cpu (default, what the reference was measured on), "
                        "cuda, cuda:1")
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    from app.bench import run_bench, table
    from model.presets import PRESETS

    if args.model not in PRESETS:
        raise UserError(f"unknown model size {args.model!r}; choose one of: {', '.join(PRESETS)}")
    require_at_least(args, 1, "repeats", "batch_size", "epoch_updates", "threads")
    from app.device import resolve_device

    device = resolve_device(args.device)
    parts = args.only or [p for p in PARTS if p != "epoch" or torch.device(device).type == "cuda"]
    from model.precision import resolve

    policies = {k: getattr(args, k) for k in ("train_precision", "imagination_precision") if k in args}
    for policy in policies.values():
        try:
            resolve(policy, device)  # an unknown name: one clear line before any measurement
        except ValueError as e:  # model/ raises plain errors (it imports nothing of the project)
            raise UserError(str(e)) from None
    if args.json:
        out = Path(args.json)
        if out.parent and not out.parent.exists():
            raise NotFound(f"folder {out.parent} does not exist (for --json {args.json})")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(args.threads or threads)
        report = run_bench(preset=args.model, quick=args.quick, repeats=args.repeats, include=tuple(parts),
                           game=args.game, batch_size=args.batch_size, device=device,
                           epoch_updates=args.epoch_updates, compile_models=args.compile,
                           reference_code=args.reference_code, **policies,
                           log=lambda s: print(s, file=sys.stderr, flush=True))
    finally:
        torch.set_num_threads(threads)
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
