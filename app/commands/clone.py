"""`dreamarcade clone`: an agent's actor-critic taught to play like recorded episodes (behaviour cloning)."""
from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Teach the actor-critic of existing weights to play like the episodes of an episode store (behaviour cloning):
its policy learns the episodes' actions frame by frame, its value head their discounted returns. The world
model is kept as it is. In the method the agent learns in imagination (`dreamarcade train`); cloning gives an
agent play where no agent has been trained in imagination yet, from the scripted player's episodes
(`dreamarcade collect`) or your own recordings. It plays like its teacher at best.

The weights are written to OUT every --save-every updates and at the end, with a checkpoint beside them
(OUT.clone.pt): a killed run continues with --resume.

examples:
  dreamarcade collect --game Breakout --steps 50000 --out data/breakout
  dreamarcade clone --dataset data/breakout --out breakout-cloned.safetensors          (the shipped world model)
  dreamarcade eval --game Breakout --weights breakout-cloned.safetensors --episodes 30
  dreamarcade clone --dataset data/breakout --weights runs/bk/weights --out bk.safetensors --updates 3000
"""


def add_parser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", metavar="DIR", required=True, help="episode store to learn from (.npz episodes)")
    p.add_argument("--weights", metavar="SOURCE", default=None,
                   help="weights whose actor-critic to teach (as play --weights; default: the game's shipped ones)")
    p.add_argument("--game", default=None, help="the game, where --weights does not name it (default Breakout)")
    p.add_argument("--out", metavar="FILE", required=True, help="weights file to write (.safetensors)")
    p.add_argument("--updates", type=int, default=1500, help="gradient updates (default 1500)")
    p.add_argument("--batch-size", type=int, default=32, help="segments per update (default 32)")
    p.add_argument("--seq-length", type=int, default=16,
                   help="steps per segment, the first 4 only warming the LSTM up (default 16)")
    p.add_argument("--lr", type=float, default=3e-4, help="learning rate (default 3e-4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the segment sampling (default 0)")
    p.add_argument("--save-every", type=int, default=100, metavar="N", help="write OUT every N updates (default 100)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float16",
                   help="stored dtype of OUT (default float16, as the shipped weights)")
    p.add_argument("--precision", choices=("auto", "float32"), default="auto",
                   help="auto: bfloat16 autocast where the CPU runs it natively; float32 (default auto)")
    p.add_argument("--resume", action="store_true", help="continue from OUT.clone.pt, written by an earlier run")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".clone.pt")


def run(args: argparse.Namespace) -> int:
    from weights.errors import UserError

    for name in ("updates", "batch_size", "seq_length", "save_every"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.seq_length <= 4:
        raise UserError(f"--seq-length must be more than the 4 burn-in steps, got {args.seq_length}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    out = Path(args.out).expanduser()
    if out.suffix != ".safetensors":
        raise UserError(f"--out must name a .safetensors file, got {args.out}")
    ckpt = checkpoint_path(out)
    if ckpt.exists() and not args.resume:
        raise UserError(f"{ckpt} holds an earlier cloning run: continue it with --resume, or remove it")
    if args.resume and not ckpt.exists():
        raise UserError(f"nothing to resume: {ckpt} does not exist")

    import dataclasses

    import torch
    from tqdm import tqdm

    from model.precision import resolve
    from training.clone import CloneConfig, Cloner
    from training.episode_store import EpisodeStore
    from training.games import resolve_game
    from weights.format import save_agent
    from weights.sources import load_agent

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    game = resolve_game(args.game) if args.game else None
    agent = load_agent(args.weights, game=game)
    store = EpisodeStore(args.dataset, static=True)
    if store.num_episodes == 0:
        raise UserError(f"{args.dataset}: no episodes (.npz files) found")
    top = max(int(store[e].act.max()) for e in range(len(store)))
    if top >= agent.num_actions:
        raise UserError(f"{args.dataset} has action {top}, but the agent has {agent.num_actions} actions: "
                        "episodes of another game?")
    cfg = CloneConfig(updates=args.updates, batch_size=args.batch_size, seq_length=args.seq_length,
                      optim=dataclasses.replace(CloneConfig.optim, lr=args.lr))
    cloner = Cloner(agent.actor_critic, store, cfg, seed=args.seed)
    done = 0
    if args.resume:
        state = torch.load(ckpt, weights_only=False)
        cloner.load_state_dict(state["cloner"])
        done = int(state["updates_done"])
    autocast = torch.bfloat16 if args.precision == "auto" and resolve("auto", "cpu") == "bfloat16" else None
    info = dict(agent.weights_info)
    meta = {k: info[k] for k in info if k not in ("file", "source", "format", "stored_dtype")}

    def save(n: int, metrics: dict) -> None:
        meta["actor_critic"] = {"cloned_from": str(args.dataset), "updates": n, "weights": info.get("source"),
                                **{k: round(v, 4) for k, v in metrics.items()}}
        agent.eval()
        save_agent(agent, out, metadata=meta, dtype=args.dtype)
        from weights.atomic import atomic_write
        atomic_write(ckpt, lambda f: torch.save({"cloner": cloner.state_dict(), "updates_done": n}, f))

    print(f"cloning the actions of {store.num_steps} steps in {store.num_episodes} episodes ({args.dataset}) "
          f"into the actor-critic of {info.get('source')}; bfloat16 autocast: {'on' if autocast else 'off'}",
          flush=True)
    mean: dict[str, float] = {}
    with tqdm(total=cfg.updates, initial=done, desc="clone", unit="update", disable=args.no_progress) as bar:
        for n in range(done + 1, cfg.updates + 1):
            metrics = cloner.update(autocast)
            mean = {k: 0.98 * mean.get(k, v) + 0.02 * v for k, v in metrics.items()}  # smoothed for display
            bar.update(1)
            bar.set_postfix(accuracy=f"{mean['accuracy']:.3f}", loss_values=f"{mean['loss_values']:.3f}")
            if n % args.save_every == 0 or n == cfg.updates:
                save(n, mean)
    if done >= cfg.updates:
        print(f"{ckpt}: already {done} updates (of {cfg.updates}); raise --updates to go on")
        return 0
    print(f"{out}: the actor-critic cloned in {cfg.updates} updates (action accuracy {mean['accuracy']:.3f}); "
          f"score it with: dreamarcade eval --weights {out} --game {info.get('game', 'GAME')} --episodes 30")
    return 0
