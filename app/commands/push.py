"""`dreamarcade push`: publish a training run's weights to the Hugging Face Hub."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Upload a training run's weights (agent.safetensors, config inside), config.json, a model card
(README.md: game, training steps, scores, fidelity) and preview.gif if the run has one, to a Hub
model repository (created if needed). Play it anywhere with --weights hf://OWNER/NAME.
The token is huggingface_hub's (`hf auth login` or HF_TOKEN) unless --token is given.

examples:
  dreamarcade push runs/breakout --repo-id alice/dreamarcade-breakout
  dreamarcade push runs/breakout --repo-id alice/breakout-private --private
"""


def add_parser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="training run directory (with weights/agent.safetensors)")
    p.add_argument("--repo-id", required=True, metavar="OWNER/NAME", help="Hub model repository")
    p.add_argument("--private", action="store_true", help="create the repository as private (if it is new)")
    p.add_argument("--token", default=None, help="Hub token with write access (default: huggingface_hub's)")
    p.add_argument("--revision", default=None, help="branch to push to (default main)")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument("--scores", metavar="JSON", default=None,
                   help="scores for the model card (`dreamarcade eval --json` output; default RUN_DIR/eval.json)")
    p.add_argument("--fidelity", metavar="JSON", default=None,
                   help="fidelity for the model card (default RUN_DIR/fidelity.json or RUN_DIR/fidelity/fidelity.json)")
    p.add_argument("--preview", metavar="GIF", default=None, help="preview animation (default RUN_DIR/preview.gif)")
    return p


def run(args: argparse.Namespace) -> int:
    from weights import push_run

    url = push_run(args.run_dir, args.repo_id, private=args.private, token=args.token, revision=args.revision,
                   commit_message=args.message, scores=args.scores, fidelity=args.fidelity, preview=args.preview)
    print(f"pushed {args.run_dir} to hf://{args.repo_id} ({url})")
    print(f"play it: dreamarcade play --weights hf://{args.repo_id}")
    return 0
