"""`dreamarcade eval`: score weights on real games, aggregate results, measure world-model fidelity.

Three modes:
  --aggregate RESULTS.json   mean / median / IQM of human-normalized scores with bootstrap CIs (+ --plot)
  --fidelity                 the world model against the real emulator, same context and actions
  (default) --game G         test episodes of the agent under the Atari 100k protocol
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.commands import require_at_least
from weights.errors import UserError

DESCRIPTION = """\
Score an agent on the real game (default), aggregate per-seed results across games (--aggregate),
or measure how closely the world model follows the real emulator (--fidelity).

examples:
  dreamarcade eval --game Breakout --episodes 100 --json breakout.json
  dreamarcade eval --aggregate results.json --plot results.png     (results: {"Game": [score per seed]})
  dreamarcade eval --aggregate diamond                             (DIAMOND's published seeds)
  dreamarcade eval --fidelity --game Breakout --horizon 50 --out fidelity/
"""


def add_parser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--aggregate", metavar="RESULTS", nargs="+",
                      help='JSON {"Game": [score per run, ...]}, or "diamond", or several files of one agent '
                           '(e.g. the --json outputs of `eval --game G --seed S`), merged as its runs')
    mode.add_argument("--fidelity", action="store_true", help="compare world-model rollouts with the real emulator")
    p.add_argument("--weights", metavar="SOURCE", default=None,
                   help="local path, hf://OWNER/REPO[/PATH][@REV], or diamond (default: shipped weights, else diamond)")
    p.add_argument("--game", help="game name, e.g. Breakout (see `dreamarcade games`)")
    p.add_argument("--episodes", type=int, default=100, help="test episodes (default 100, as the protocol)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="cut each test episode after this many steps (quick checks; the protocol has no cut)")
    p.add_argument("--num-envs", type=int, default=8, help="episodes played in parallel (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of envs, policy sampling and bootstrap (default 0)")
    p.add_argument("--device", default=None,
                   help="torch device: cpu, cuda, cuda:1, mps (default: the best present, CUDA, then MPS, then cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 is often faster on a busy machine)")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    p.add_argument("--plot", metavar="OUT.png", help="with --aggregate: save a comparison plot")
    p.add_argument("--compare", metavar="RESULTS", nargs="+", default=[],
                   help="with --aggregate: more results files to show in the plot and table")
    p.add_argument("--reps", type=int, default=50_000, help="bootstrap replications (default 50000, as rliable)")
    p.add_argument("--horizon", type=int, default=50, help="with --fidelity: imagined steps (default 50)")
    p.add_argument("--contexts", type=int, default=8, help="with --fidelity: rollouts compared (default 8)")
    p.add_argument("--denoising-steps", type=int, default=None,
                   help="with --fidelity: sampler steps (default: the weights' own, else 3)")
    p.add_argument("--still-levels", type=float, default=None, metavar="L",
                   help="with --fidelity: a dreamed pixel that moved by at most L levels (of 255) from the last frame "
                        "keeps its value (default: the weights' own, else 0, off)")
    p.add_argument("--precision", choices=("float32", "bfloat16", "auto"), default="float32",
                   help="with --fidelity: world-model precision policy (default float32, the reference's numbers; "
                        "auto: bfloat16 where the device runs it natively)")
    p.add_argument("--policy", choices=("agent", "random"), default="agent",
                   help="with --fidelity: who picks the action sequence (default agent)")
    p.add_argument("--out", metavar="DIR", default="fidelity", help="with --fidelity: output folder (default fidelity/)")
    p.add_argument("--board-steps", metavar="N,N,...", default="25,100,300,1000", type=_steps,
                   help="with --fidelity: also dream this long with random actions (restarting when the model "
                        "ends a game) and report the PSNR of the pixels that never change in real play at these "
                        "steps (default 25,100,300,1000; 0 skips it)")
    p.add_argument("--board-dreams", type=int, default=4, help="with --fidelity: dreams for --board-steps (default 4)")
    p.add_argument("--serve-clips", type=int, default=48, metavar="N",
                   help="with --fidelity on Breakout: also dream N real serves (FIRE with no ball in play), the "
                        "same with NOOP, and N contexts with a ball in flight and FIRE pressed (which does nothing), "
                        "and report how often each dream shows a ball, or two (default 48; 0 skips it)")
    return p


def _check_args(args: argparse.Namespace) -> None:
    """What the user typed, checked before torch is imported (that alone takes seconds)."""
    if not args.game:
        raise UserError("--game is required (or use --aggregate RESULTS.json)")
    from training.games import resolve_game

    resolve_game(args.game)  # an unknown name fails here, with the closest names
    require_at_least(args, 1, "threads", "max_steps")
    if args.fidelity:
        require_at_least(args, 1, "horizon", "contexts", "board_dreams", "denoising_steps")
        require_at_least(args, 0, "serve_clips", "still_levels")
    else:
        require_at_least(args, 1, "episodes", "num_envs")


def run(args: argparse.Namespace) -> int:
    if args.aggregate:
        return _run_aggregate(args)
    _check_args(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    from app.device import describe_device, resolve_device

    device = resolve_device(args.device)
    print(describe_device(device, args.device), flush=True)
    from training.games import resolve_game
    from weights.sources import describe_source

    print(f"weights: {describe_source(args.weights, resolve_game(args.game))}", flush=True)
    args.device = str(device)
    if args.fidelity:
        return _run_fidelity(args)
    return _run_episodes(args)


def _steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected step numbers separated by commas, got {text!r}") from None
    if steps == (0,):
        return ()
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError(f"steps must be positive (or 0 to skip), got {text!r}")
    return steps


def _write_json(path: str | None, obj: dict) -> None:
    if path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(obj, indent=2) + "\n")
        print(f"wrote {out}")


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _label(source: str) -> str:
    return "DIAMOND (published)" if source.lower() == "diamond" else Path(source).stem


def _run_aggregate(args: argparse.Namespace) -> int:
    from training.aggregate import BootstrapConfig, aggregate, load_results, merge_results, plot_aggregates

    require_at_least(args, 1, "reps")
    cfg = BootstrapConfig(reps=args.reps, seed=args.seed)
    summary = aggregate(merge_results([load_results(source) for source in args.aggregate]), cfg)
    label = _label(args.aggregate[0]) + (f" (+{len(args.aggregate) - 1} files)" if len(args.aggregate) > 1 else "")
    summaries = {label: summary}
    for other in args.compare:
        summaries[_label(other)] = aggregate(load_results(other), cfg)

    diamond = load_results("diamond")
    rows = [[g, f"{d['mean_score']:.1f}", f"{d['hns']:.3f}", f"{sum(diamond[g]) / len(diamond[g]):.1f}"]
            for g, d in summary["games"].items()]
    print(_table(["game", "mean score", "HNS", "DIAMOND"], rows))
    print()
    pct = int(round(100 * cfg.confidence))
    rows = []
    for name, s in summaries.items():
        for m, title in (("mean", "mean HNS"), ("median", "median HNS"), ("iqm", "IQM HNS"), ("superhuman", "games > human")):
            v, (lo, hi) = s[m]["value"], s[m]["ci"]
            fmt = "{:.0f}" if m == "superhuman" else "{:.3f}"
            rows.append([name, title, fmt.format(v), f"[{fmt.format(lo)}, {fmt.format(hi)}]"])
    print(_table(["results", "metric", "value", f"{pct}% CI"], rows))
    print(f"({summary['num_games']} game(s) x {summary['num_runs']} run(s), stratified bootstrap, {cfg.reps} reps)")
    _write_json(args.json, summary)
    if args.plot:
        if "DIAMOND (published)" not in summaries:  # on the same games, so that the bars compare
            games = list(summary["games"])
            name = "DIAMOND (published)" if len(games) == len(diamond) else f"DIAMOND (published, {len(games)} games)"
            summaries[name] = aggregate({g: diamond[g] for g in games}, cfg)
        print(f"wrote {plot_aggregates(summaries, args.plot)}")
    return 0


def _run_episodes(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_weights

    result = evaluate_weights(args.weights, args.game, episodes=args.episodes, seed=args.seed,
                              num_envs=args.num_envs, device=args.device,
                              max_episode_steps=args.max_steps, progress=True)
    rows = [[str(i), f"{r:.1f}", str(n)] for i, (r, n) in enumerate(zip(result["returns"], result["lengths"]))]
    if len(rows) > 20:
        rows = rows[:10] + [["...", "", ""]] + rows[-5:]
    print(_table(["episode", "return", "steps"], rows))
    print()
    print(_table(["game", "episodes", "mean return", "std", "HNS"],
                 [[result["game"], str(result["episodes"]), f"{result['mean_return']:.1f}",
                   f"{result['std_return']:.1f}", "n/a" if result["hns"] is None else f"{result['hns']:.3f}"]]))
    if result["truncated"]:
        cause = "--max-steps" if args.max_steps else "ALE's 108,000-frame cap"
        print(f"note: {result['truncated']} episode(s) were cut short by {cause}")
    _write_json(args.json, result)
    return 0


def _run_fidelity(args: argparse.Namespace) -> int:
    from training.fidelity import FidelityConfig, measure_fidelity
    from training.games import resolve_game
    from weights import load_agent

    cfg = FidelityConfig(horizon=args.horizon, contexts=args.contexts, seed=args.seed,
                         denoising_steps=args.denoising_steps, policy=args.policy,
                         precision=args.precision, still_levels=args.still_levels)
    game = resolve_game(args.game)
    agent = load_agent(args.weights, game=game, device=args.device)  # once, for both checks
    result = {"weights": args.weights or "default", **measure_fidelity(agent, game, cfg, args.out)}
    steps = result["horizon"]
    marks = sorted({1, min(5, steps), min(10, steps), min(25, steps), steps})
    fmt = lambda x, spec: "-" if x is None else format(x, spec)  # "-": every real episode had ended
    rows = [[str(t), fmt(result["psnr"][t - 1], ".2f"), fmt(result["ssim"][t - 1], ".3f"),
             fmt(result["copy_last_psnr"][t - 1], ".2f"), str(result["valid_per_step"][t - 1])] for t in marks]
    print(_table(["step", "PSNR (dB)", "SSIM", "last-frame PSNR", "rollouts"], rows))
    print()
    print(_table(["game", "mean PSNR", "mean SSIM", "reward acc.", "end acc."],
                 [[result["game"], f"{result['mean_psnr']:.2f}", f"{result['mean_ssim']:.3f}",
                   f"{result['reward_accuracy']:.3f}", f"{result['end_accuracy']:.3f}"]]))
    if "vs_float32" in result:
        vs = result["vs_float32"]
        print(f"{args.precision} vs float32 imagination (same noise): mean PSNR {vs['mean_psnr']:.2f} dB, "
              f"mean SSIM {vs['mean_ssim']:.3f}")
    print(f"wrote {result['strip']} (real above, imagined below) and {result['curves']}")
    if args.board_steps:
        result["board"] = _run_board(args, agent, game)
    from training.serve_check import has_serve_check

    if args.serve_clips and has_serve_check(game):
        result["serves"] = _run_serves(args, agent, game)
    _write_json(args.json or str(Path(args.out) / "fidelity.json"), result)
    return 0


def _run_board(args: argparse.Namespace, agent, game: str) -> dict:
    """The long-dream board check (training.long_dream) -> its JSON-safe results; prints a table, writes board.png."""
    import imageio.v3 as iio

    from training.long_dream import BoardConfig, board_strip, measure_board

    cfg = BoardConfig(steps=args.board_steps, dreams=args.board_dreams, seed=args.seed, precision=args.precision,
                      denoising_steps=args.denoising_steps, still_levels=args.still_levels)
    board = measure_board(agent, game, cfg)
    print()
    print(f"the board over a long dream ({cfg.dreams} dreams, random actions, restarted when the model ends a game; "
          f"{board['static_fraction']:.0%} of the pixels never change in real play):")
    print(_table(["step", "board PSNR (dB)"], [[str(t), f"{v:.2f}"] for t, v in board["board_psnr"].items()]))
    path = Path(args.out) / "board.png"
    iio.imwrite(path, board_strip(board))
    print(f"wrote {path} (a row per dream at those steps; last row: the pixels that never change)")
    return {"board_psnr": {str(t): v for t, v in board["board_psnr"].items()}, "static_fraction":
            board["static_fraction"], "restarts": board["restarts"], "dreams": cfg.dreams, "board_strip": str(path)}


def _run_serves(args: argparse.Namespace, agent, game: str) -> dict:
    """The serve check (training.serve_check) -> its JSON-safe results; prints a table, writes serves.png."""
    import imageio.v3 as iio

    from training.serve_check import NEAR, ServeCheckConfig, measure_serves

    cfg = ServeCheckConfig(clips=args.serve_clips, seed=args.seed, precision=args.precision,
                           denoising_steps=args.denoising_steps, still_levels=args.still_levels)
    serves = measure_serves(agent, game, cfg)
    pct = lambda shares: [f"{x:.0%}" for x in shares]
    print()
    print(f"FIRE and the ball, the paddle at the wall ({cfg.clips} real clips of each kind; the share of dreams, steps "
          "after the action):")
    print(_table(["", *(f"step {t}" for t in range(1, cfg.steps + 1))], [
        ["a ball after FIRE with none in play (a serve)", *pct(serves["serve"])],
        ["  2+ balls (served at several places)", *pct(serves["serve_two"])],
        ["  the real game", *pct(serves["serve_real"])],
        ["a ball after NOOP instead (real: 0%)", *pct(serves["noop"])],
        ["2+ balls, FIRE with one in flight", *pct(serves["second_ball"])],
        ["  the real game", *pct(serves["second_ball_real"])],
        ["the ball in flight drawn (FIRE pressed)", *pct(serves["in_flight_drawn"])],
        [f"  within {NEAR} pixels of the real one", *pct(serves["in_flight_near"])],
        ["paddle pushed into the wall, LEFT LEFT: still there", *pct(serves["wall_two_left"])],
        ["  the real game (wound up: leaves on the 3rd LEFT)", *pct(serves["wall_two_left_real"])],
        ["LEFT LEFT LEFT: still at the wall", *pct(serves["wall_three_left"])],
        ["  the real game", *pct(serves["wall_three_left_real"])],
    ]))
    path = Path(args.out) / "serves.png"
    iio.imwrite(path, serves.pop("strip"))
    print(f"wrote {path} (up to 3 serves, 3 FIREs with a ball in flight, 3 LEFT LEFT at the wall: real above, "
          "imagined below)")
    return {**serves, "serves_strip": str(path)}
