"""`dreamarcade clone`: an agent's actor-critic taught to play like recorded episodes (behaviour cloning)."""
from __future__ import annotations

import argparse
from pathlib import Path

from app.commands import require_at_least

DESCRIPTION = """\
Teach the actor-critic of existing weights to play like a teacher (behaviour cloning): its policy learns the
teacher's actions frame by frame, its value head the discounted returns. The world model is kept as it is. In
the method the agent learns in imagination (`dreamarcade train`); cloning gives an agent that plays where none
has been trained in imagination yet. It plays like its teacher at best.

Teachers:
  --scripted-teacher  the game's scripted player (Breakout: follows the ball). It first plays --demo-steps real
                      steps (full games), distracted now and then, and every frame it reaches is labelled with
                      what it would do undistracted (written to OUT.demos/, kept for --resume).
  --dataset DIR       the actions of an episode store (your recordings). On Breakout, the scripted player's
                      own episodes (`dreamarcade collect`) teach only its most common action: their actions
                      include its distractions and random aims.

The weights are written to OUT every --save-every updates and at the end, with a checkpoint beside them
(OUT.clone.pt): a killed run continues with --resume.

examples:
  dreamarcade clone --scripted-teacher --fresh-agent --out breakout-cloned.safetensors   (the shipped world model)
  dreamarcade eval --game Breakout --weights breakout-cloned.safetensors --episodes 30
  dreamarcade clone --dataset recordings/ --weights runs/bk/weights --out bk.safetensors --updates 3000
"""


def add_parser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    teacher = p.add_mutually_exclusive_group(required=True)
    teacher.add_argument("--scripted-teacher", action="store_true",
                         help="learn from the game's scripted player (demonstrations played first, see above)")
    teacher.add_argument("--dataset", metavar="DIR", help="learn the actions of this episode store (.npz episodes)")
    p.add_argument("--demo-steps", type=int, default=20_000,
                   help="real steps the scripted teacher plays first (default 20000)")
    p.add_argument("--demo-episodes", choices=("games", "lives"), default="games",
                   help="games: each demonstration a full game, as the agent plays (default); lives: cut at each "
                        "lost life, as the training env (the agent then learns to serve only from a fresh start)")
    p.add_argument("--weights", metavar="SOURCE", default=None,
                   help="weights whose actor-critic to teach (as play --weights; default: the game's shipped ones)")
    p.add_argument("--game", default=None, help="the game, where --weights does not name it (default Breakout)")
    p.add_argument("--fresh-agent", action="store_true",
                   help="start from a newly initialised actor-critic instead of the weights' own (one trained in "
                        "imagination on a poor world model can be stuck at a constant policy)")
    p.add_argument("--out", metavar="FILE", required=True, help="weights file to write (.safetensors)")
    p.add_argument("--updates", type=int, default=1500, help="gradient updates (default 1500)")
    p.add_argument("--batch-size", type=int, default=32, help="segments per update (default 32)")
    p.add_argument("--seq-length", type=int, default=16,
                   help="steps per segment, the first 4 only warming the LSTM up (default 16)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of the encoder and the heads (default 1e-3)")
    p.add_argument("--lstm-lr", type=float, default=1e-4,
                   help="learning rate of the LSTM (default 1e-4; higher saturates its gates on Breakout)")
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


def demos_path(out: Path) -> Path:
    """Where --scripted-teacher's demonstrations are written (their actions are the teacher's, not those taken:
    never a world model's data)."""
    return out.with_name(out.name + ".demos")


def run(args: argparse.Namespace) -> int:
    from weights.errors import UserError

    require_at_least(args, 1, "updates", "batch_size", "seq_length", "save_every", "demo_steps", "threads")
    if args.seq_length <= 4:
        raise UserError(f"--seq-length must be more than the 4 burn-in steps, got {args.seq_length}")
    out = Path(args.out).expanduser()
    if out.suffix != ".safetensors":
        raise UserError(f"--out must name a .safetensors file, got {args.out}")
    ckpt = checkpoint_path(out)
    if ckpt.exists() and not args.resume:
        raise UserError(f"{ckpt} holds an earlier cloning run: continue it with --resume, or remove it")
    if args.resume and not ckpt.exists():
        raise UserError(f"nothing to resume: {ckpt} does not exist")

    import torch
    from tqdm import tqdm

    from model.precision import resolve
    from training.clone import CloneConfig, Cloner
    from training.episode_store import EpisodeStore
    from training.games import resolve_game
    from weights.atomic import atomic_write
    from weights.format import save_agent
    from weights.sources import DEFAULT_GAME, load_agent

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    game = resolve_game(args.game) if args.game else None
    agent = load_agent(args.weights, game=game)
    if args.fresh_agent and not args.resume:
        from model.actor_critic import ActorCritic

        torch.manual_seed(args.seed)
        agent.actor_critic = ActorCritic(agent.config.actor_critic, agent.num_actions, agent.config.img_size)
    dataset = args.dataset
    if args.scripted_teacher:
        dataset = demos_path(out)
        store = EpisodeStore(dataset)
        if store.num_steps < args.demo_steps:  # a first run, or one killed while it played
            from training.scripted import collect_demonstrations

            game = game or agent.weights_info.get("game") or DEFAULT_GAME
            for path in list(Path(dataset).glob("*.npz")):
                path.unlink()
            stats = collect_demonstrations(game, EpisodeStore(dataset), args.demo_steps, seed=args.seed,
                                           full_games=args.demo_episodes == "games", progress=not args.no_progress)
            print(f"{dataset}: {stats['steps']} steps in {stats['episodes']} episodes played by the scripted "
                  f"player, labelled with its undistracted actions (it took them on {stats['agreement']:.0%} "
                  "of the steps)", flush=True)
    store = EpisodeStore(dataset, static=True)
    if store.num_episodes == 0:
        raise UserError(f"{dataset}: no episodes (.npz files) found")
    top = max(int(store[e].act.max()) for e in range(len(store)))
    if top >= agent.num_actions:
        raise UserError(f"{dataset} has action {top}, but the agent has {agent.num_actions} actions: "
                        "episodes of another game?")
    cfg = CloneConfig(updates=args.updates, batch_size=args.batch_size, seq_length=args.seq_length,
                      lr=args.lr, lstm_lr=args.lstm_lr)
    cloner = Cloner(agent.actor_critic, store, cfg, seed=args.seed)
    done = 0
    if args.resume:
        state = torch.load(ckpt, weights_only=False)
        cloner.load_state_dict(state["cloner"])
        done = int(state["updates_done"])
    autocast = torch.bfloat16 if args.precision == "auto" and resolve("auto", "cpu") == "bfloat16" else None
    info = dict(agent.weights_info)
    # what the weights said of their own actor-critic no longer holds: "actor_critic" says it now
    meta = {k: info[k] for k in info if k not in ("file", "source", "format", "stored_dtype")
            and not k.startswith("actor_critic")}

    def save(n: int, metrics: dict) -> None:
        meta["actor_critic"] = {"cloned_from": "scripted teacher" if args.scripted_teacher else str(dataset),
                                "updates": n, "weights": info.get("source"),
                                **{k: round(v, 4) for k, v in metrics.items()}}
        agent.eval()
        save_agent(agent, out, metadata=meta, dtype=args.dtype)
        atomic_write(ckpt, lambda f: torch.save({"cloner": cloner.state_dict(), "updates_done": n}, f))

    print(f"cloning the actions of {store.num_steps} steps in {store.num_episodes} episodes ({dataset}) "
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
                if args.no_progress:  # a line per save, for logs of runs in the background
                    print(f"update {n}/{cfg.updates}: action accuracy {mean['accuracy']:.3f}, "
                          f"value loss {mean['loss_values']:.3f}; {out} written", flush=True)
    if done >= cfg.updates:
        print(f"{ckpt}: already {done} updates (of {cfg.updates}); raise --updates to go on")
        return 0
    print(f"{out}: the actor-critic cloned in {cfg.updates} updates (action accuracy {mean['accuracy']:.3f}); "
          f"score it with: dreamarcade eval --weights {out} --game {info.get('game', 'GAME')} --episodes 30")
    return 0
