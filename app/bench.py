"""The speed measurements of `dreamarcade bench` (DESIGN.md, "Performance"): each returns the median over timed
runs after warm-up runs, on random weights and synthetic in-RAM data (speed does not depend on the values).

Reference numbers: the reference's own code on a 2-core AMD EPYC CPU, torch 2.13 (diamond.md section 7); with
`--reference-code DIR`, their code measured in the same run instead (`app.bench_reference`).
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from importlib import metadata
from typing import Callable

import torch

from model import Agent, Batch
from model.fast import FastActorCritic
from model.precision import IMAGINATION, PLAY, PRECISIONS, TRAINING, bf16_native, resolve
from model.presets import PRESETS
from model.world_model_env import WorldModelEnv
from weights.errors import UserError

# (key, what, reference value, unit, higher is better)
REFERENCE = {
    "play_step_ms": (90.8, "ms", False),  # 83.4-98.4 ms, median of 3 runs
    "denoiser_train_samples_per_s": (3.2, "samples/s", True),
    "rew_end_train_sequences_per_s": (2.7, "sequences/s", True),
    "imagination_transitions_per_s": (13.7, "transitions/s", True),
}


def timed(fn: Callable[[], object], repeats: int, warmup: int,
          device: torch.device | str = "cpu") -> tuple[float, float]:
    """Median seconds of `repeats` calls of fn after `warmup` untimed ones: (wall clock, CPU time of this process).

    The CPU time is what the work costs whatever else runs on the machine: on a shared machine the wall clock
    grows with the load, the CPU time much less (with one thread it is the single-core cost). On a GPU the
    clock stops only once the device has finished the queued work."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def make_agent(preset: str = "atari100k", num_actions: int = 4, seed: int = 0,
               device: torch.device | str = "cpu") -> Agent:
    """Random weights, with the zero-initialised output layers filled so that nothing is trivially zero."""
    if preset not in PRESETS:
        raise UserError(f"unknown model preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    torch.manual_seed(seed)
    agent = Agent(PRESETS[preset](num_actions))
    with torch.no_grad():
        for p in agent.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.02)
    return agent.to(device).eval()


def synthetic_batch(b: int, t: int, img_size: int, num_actions: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.rand(b, t, 3, img_size, img_size, generator=g) * 2 - 1,
        act=torch.randint(0, num_actions, (b, t), generator=g),
        rew=torch.randint(-1, 2, (b, t), generator=g).float(),
        end=torch.zeros(b, t, dtype=torch.uint8),
        trunc=torch.zeros(b, t, dtype=torch.uint8),
        mask=torch.ones(b, t, dtype=torch.bool),
    )


def contexts(n: int, img_size: int, num_actions: int, generator: torch.Generator | None = None):
    """n random 4-frame contexts on the generator's device."""
    device = generator.device if generator is not None else "cpu"
    obs = torch.rand(n, 4, 3, img_size, img_size, generator=generator, device=device) * 2 - 1
    return obs, torch.randint(0, num_actions, (n, 4), generator=generator, device=device)


@torch.inference_mode()
def play_step_ms(agent: Agent, precision: str, steps: int = 30, warmup: int = 5,
                 repeats: int = 1) -> tuple[float, float]:
    """One step of `play` at batch 1 under a precision policy (`model.precision`): actor-critic, 3 Euler
    denoising steps, reward/end. -> median ms (wall clock, CPU time)."""
    g = torch.Generator(agent.device).manual_seed(0)
    env = WorldModelEnv(agent, generator=g, precision=precision)
    actor = agent.actor_critic if env.precision == "float32" else FastActorCritic(agent.actor_critic, torch.bfloat16)
    env.reset(*contexts(1, agent.config.img_size, agent.num_actions, g))
    state = [None]

    def step():
        logits, _, state[0] = actor(env.obs, state[0])
        act = torch.multinomial(logits.softmax(-1), 1, generator=g).squeeze(1)
        env.step(act)

    return tuple(1000 * t for t in timed(step, steps * repeats, warmup, agent.device))


def denoiser_train_samples_per_s(agent: Agent, batch_size: int = 32, repeats: int = 3, warmup: int = 1,
                                 precision: str = TRAINING) -> tuple[float, float]:
    """Denoiser optimizer steps on (batch_size, 6) segments (4 context frames, 2 targets), as training runs them
    (`training.graphed_updates`: on a GPU captured once as a CUDA graph, among the warm-up runs, and replayed).
    -> (samples per wall-clock second, per CPU second); the same form for the other training figures."""
    from training.graphed_updates import graphed_denoiser_update
    from training.optim import ModelOptimizer, OptimConfig

    batch = synthetic_batch(batch_size, agent.config.denoiser.num_steps_conditioning + 2, agent.config.img_size,
                            agent.num_actions).to(agent.device)
    update = graphed_denoiser_update(agent, ModelOptimizer(agent.denoiser, OptimConfig()), precision=precision)
    return tuple(batch_size / t for t in timed(lambda: update(batch), repeats, _warmup(update, warmup),
                                               agent.device))


def rew_end_train_sequences_per_s(agent: Agent, batch_size: int = 32, seq_length: int = 19, repeats: int = 3,
                                  warmup: int = 1, precision: str = TRAINING) -> tuple[float, float]:
    """Reward/end optimizer steps on (batch_size, 19) segments, as training runs them."""
    from training.graphed_updates import graphed_rew_end_update
    from training.optim import ModelOptimizer, OptimConfig

    batch = synthetic_batch(batch_size, seq_length, agent.config.img_size, agent.num_actions).to(agent.device)
    update = graphed_rew_end_update(agent, ModelOptimizer(agent.rew_end, OptimConfig(max_grad_norm=100.0)),
                                    precision=precision)
    return tuple(batch_size / t for t in timed(lambda: update(batch), repeats, _warmup(update, warmup),
                                               agent.device))


def _warmup(update, warmup: int) -> int:
    """Untimed runs of a `GraphedUpdate`: at least its eager warm-up and the capture where it captures."""
    return max(warmup, update.warmup + 1) if update.capture else warmup


def imagination_transitions_per_s(agent: Agent, num_envs: int = 32, horizon: int = 15, repeats: int = 2,
                                  warmup: int = 1, precision: str = IMAGINATION) -> tuple[float, float]:
    """Actor-critic updates as training does them: num_envs imagined games x horizon steps (3 Euler steps
    each, reward/end sampled), backward through the actor-critic, one optimizer step."""
    from training.graphed_updates import cuda_graphs_enabled
    from training.imagination import Imagination, actor_critic_update
    from training.optim import ModelOptimizer, OptimConfig
    from training.presets import ImaginationConfig

    g = torch.Generator(agent.device).manual_seed(0)
    size, n_act = agent.config.img_size, agent.num_actions
    imagination = Imagination(agent, lambda n: contexts(n, size, n_act, g), num_envs=num_envs, horizon=horizon,
                              generator=g, precision=precision, cuda_graphs=cuda_graphs_enabled())
    opt = ModelOptimizer(agent.actor_critic, OptimConfig(weight_decay=0.0, max_grad_norm=100.0))
    cfg = ImaginationConfig(horizon=horizon)
    state = [None]

    def update():
        _, state[0] = actor_critic_update(agent, imagination, opt, cfg, state[0])

    return tuple(num_envs * horizon / t for t in timed(update, repeats, warmup, agent.device))


def collect_steps_per_s(game: str = "Breakout", num_envs: int = 8, num_steps: int = 2000, repeats: int = 3) -> float:
    from training.collect import measure_collect_steps_per_s

    return measure_collect_steps_per_s(game, num_envs=num_envs, num_steps=num_steps, repeats=repeats)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        return f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')})"
    except OSError:
        return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine(device: torch.device | str = "cpu") -> dict:
    """What the numbers were measured on."""
    device = torch.device(device)
    return {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_native": bf16_native("cpu"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ale_py": _version("ale-py"),
        "gymnasium": _version("gymnasium"),
        "numpy": _version("numpy"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def run_bench(preset: str = "atari100k", quick: bool = False, repeats: int | None = None,
              include: tuple[str, ...] = ("play", "denoiser", "rew_end", "imagination", "collect"),
              game: str = "Breakout", batch_size: int = 32, train_precision: str = TRAINING,
              imagination_precision: str = IMAGINATION, device: str = "cpu", epoch_updates: int = 400,
              compile_models: bool = False, reference_code: str | None = None,
              log: Callable[[str], None] = lambda s: None) -> dict:
    """All measurements of DESIGN.md's `dreamarcade bench` as one JSON-safe dict. batch_size: of the training
    measurements (32, the reference's; smaller only for smoke tests). train_precision, imagination_precision:
    policies (`model.precision`) of the denoiser and reward/end updates and of imagination's world model; the
    defaults are training's. The report holds what they resolve to on device. "epoch" in include: one real
    training epoch of `game` (`app.bench_epoch`), with epoch_updates updates per model. compile_models: as
    `train --compile` (`training.updates.compile_updates`) for the training figures; the warm-up runs compile.
    reference_code: a checkout of the reference's repository, whose own code is measured right after ours for
    each of denoiser, rew_end and imagination in include (`app.bench_reference`), under `reference_code`.
    Raises `UserError` (before any measurement) for a folder that is not such a checkout."""
    r = repeats if repeats is not None else (1 if quick else 3)
    ref = theirs = None
    if reference_code is not None:
        from app import bench_reference

        ref = bench_reference.load_reference(reference_code)
    agent = make_agent(preset, device=device)
    report = machine(device)
    report.update(preset=preset, quick=quick, repeats=r, batch_size=batch_size, compile=compile_models,
                  train_precision=resolve(train_precision, device),
                  imagination_precision=resolve(imagination_precision, device))

    cpu = report["cpu_time"] = {}  # the same figures from this process's CPU time instead of the wall clock
    if "play" in include:
        play, play_cpu = {}, {}
        for precision in PRECISIONS:
            log(f"play step, {precision} ...")
            wall, c = play_step_ms(agent, precision, steps=10 if quick else 30, warmup=3 if quick else 5, repeats=r)
            play[precision], play_cpu[precision] = round(wall, 2), round(c, 2)
        play["default"] = play_cpu["default"] = resolve(PLAY, device)
        report["play_step_ms"], cpu["play_step_ms"] = play, play_cpu
    if compile_models:  # after the play step, which `play` runs eagerly
        from training.updates import compile_updates

        compile_updates(agent)
    if ref is not None:
        theirs = bench_reference.reference_models(ref, agent.config, device)
        report["reference_code"] = {"path": str(ref.path), "commit": ref.commit, "stand_ins": list(ref.stand_ins)}
    for part, key, fn in (("denoiser", "denoiser_train_samples_per_s", denoiser_train_samples_per_s),
                          ("rew_end", "rew_end_train_sequences_per_s", rew_end_train_sequences_per_s),
                          ("imagination", "imagination_transitions_per_s", imagination_transitions_per_s)):
        if part in include:
            log(f"{key} ...")
            precision = report["imagination_precision"] if part == "imagination" else report["train_precision"]
            wall, c = fn(agent, batch_size, repeats=r, precision=precision)
            report[key], cpu[key] = round(wall, 3), round(c, 3)
            if ref is not None:  # at once, under the same load
                log(f"{key}, the reference's code ...")
                ref_wall, ref_c = getattr(bench_reference, key)(ref, theirs, agent.config, batch_size, repeats=r)
                module = {"denoiser": "denoiser", "rew_end": "rew_end", "imagination": "actor_critic"}[part]
                report["reference_code"][key] = {
                    "reference": round(ref_wall, 3), "ours": report[key], "ratio": round(wall / ref_wall, 2),
                    "cpu_time": {"reference": round(ref_c, 3), "ours": cpu[key], "ratio": round(c / ref_c, 2)},
                    "precision": {"reference": "float32", "ours": precision},
                    "parameters": {"reference": theirs.parameters(module),
                                   "ours": sum(p.numel() for p in getattr(agent, module).parameters())},
                }
    from training.graphed_updates import can_capture

    report["updates_cuda_graphs"] = can_capture(device, train_precision)  # the denoiser's and reward/end's
    if "collect" in include:
        log("real env collection ...")
        report["collect_steps_per_s"] = round(collect_steps_per_s(game, num_steps=200 if quick else 2000, repeats=r), 1)
    if "epoch" in include:
        from app.bench_epoch import epoch_seconds

        report.update(epoch_seconds(game, preset, str(device), epoch_updates, batch_size, compile_models, log))
    report["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return report


def table(report: dict) -> str:
    """A short text table of the report against the reference's numbers."""
    rows = [("measurement", "this machine", "CPU time", "reference", "vs reference")]
    play, cpu = report.get("play_step_ms", {}), report.get("cpu_time", {})
    ref_ms = REFERENCE["play_step_ms"][0]
    for name, ms in play.items():
        if name == "default":
            continue
        tag = " (play default)" if name == play.get("default") else ""
        c = cpu.get("play_step_ms", {}).get(name)
        rows.append((f"play step, {name}{tag}", f"{ms:.1f} ms ({1000 / ms:.1f} fps)",
                     f"{c:.1f} ms" if c is not None else "-", f"{ref_ms} ms", f"{ref_ms / ms:.2f}x"))
    same_run = report.get("reference_code", {})  # the reference's code measured in this run: same sizes and batch
    for key, (ref, unit, _) in REFERENCE.items():
        if key != "play_step_ms" and key in report:
            c = cpu.get(key)
            if key in same_run:
                m = same_run[key]
                rows.append((key.replace("_", " "), f"{report[key]:.2f} {unit} ({m['precision']['ours']})",
                             f"{c:.2f} {unit} ({m['cpu_time']['ratio']:.2f}x)",
                             f"{m['reference']:.2f} {unit} (their code here, {m['precision']['reference']})",
                             f"{m['ratio']:.2f}x"))
                continue
            rows.append((key.replace("_", " "), f"{report[key]:.2f} {unit}", f"{c:.2f} {unit}" if c else "-",
                         f"{ref} {unit}", f"{report[key] / ref:.2f}x"))
    if "collect_steps_per_s" in report:
        rows.append(("collect steps per s", f"{report['collect_steps_per_s']:.0f} steps/s", "-", "-", "-"))
    if "epoch_s" in report:
        split = ", ".join(f"{k} {v:.1f}" for k, v in report["epoch_s"].items() if k != "total")
        rows.append(("atari100k epoch", f"{report['epoch_s']['total']:.1f} s ({split})", "-", "-", "-"))
        rows.append(("run (1000 epochs)", f"{report['run_hours_estimate']:.1f} h", "-", "-", "-"))
    if report.get("device", "cpu") != "cpu":
        rows[0] = (*rows[0][:4], "vs reference (CPU)")
    if report.get("preset") != "atari100k" or report.get("batch_size", 32) != 32:  # except against their code here
        measured_here = {key.replace("_", " ") for key in REFERENCE if key in same_run}
        rows = [r if i == 0 or r[0] in measured_here else (*r[:4], "not comparable") for i, r in enumerate(rows)]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    where = f"{report['gpu']} ({report['device']}), " if report.get("gpu") else ""
    if report.get("gpu"):
        where += "updates as CUDA graphs, " if report.get("updates_cuda_graphs") else "updates eager, "
    head = (f"{where}{report['cpu']}, {report['threads']} threads, torch {report['torch']}, preset {report['preset']}, "
            f"load average {report['load_average'][0]:.1f}" if report.get("load_average") else "")
    if same_run:
        commit = f"commit {same_run['commit'][:7]}" if same_run.get("commit") else "not a git checkout"
        stand_ins = f"; stand-ins for {', '.join(same_run['stand_ins'])}" if same_run.get("stand_ins") else ""
        lines.append(f"their code: {same_run['path']} ({commit}{stand_ins}), measured after ours in this run with "
                     f"the same threads, batch and protocol; CPU time column: ours (its ratio ours/theirs)")
    return "\n".join([head, *lines])
