"""Training configurations: frozen dataclasses and the presets users pick with `--preset`.

`atari100k()` is the paper's protocol (diamond.md section 4); the others scale it down. Values known only at
run time (the game) come in through `dataclasses.replace(cfg, game=...)`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from model import presets as model_presets
from model.actor_critic import ActorCriticConfig
from model.agent import AgentConfig
from model.denoiser import DenoiserConfig
from model.rew_end import RewEndConfig
from training.optim import OptimConfig
from weights.errors import UserError


@dataclass(frozen=True)
class ModelTraining:
    """How one model is trained: its optimizer, batch size and number of updates per epoch."""

    optim: OptimConfig
    batch_size: int = 32
    steps_first_epoch: int = 10_000
    steps_per_epoch: int = 400
    seq_length: int = 6  # segment length sampled from the store (denoiser 6 = 4 context + 2 targets)


@dataclass(frozen=True)
class ImaginationConfig:
    """Actor-critic training in the world model (diamond.md 1.6 and 3.4); the number of imagined envs is
    `TrainConfig.actor_critic.batch_size`."""

    horizon: int = 15  # imagined steps per update (`backup_every`), also the imagined episode length
    gamma: float = 0.985
    lam: float = 0.95
    weight_value_loss: float = 1.0
    weight_entropy_loss: float = 0.001
    denoising_steps: int = 3


@dataclass(frozen=True)
class TrainConfig:
    game: str = ""
    model: str = "atari100k"  # a preset of `model.presets`
    seed: int | None = None  # None: a random seed, drawn once and stored in config.json
    # Real data (diamond.md 4.1, 4.2)
    total_real_steps: int = 100_000
    initial_steps_min: int = 5_000
    initial_steps_max: int = 10_000
    initial_min_rare_rewards: int = 10  # keep collecting until the two rarest sign(rew) classes sum to this
    collect_steps_per_epoch: int = 100
    num_final_epochs: int = 50  # epochs of training only, after the last collection
    epsilon: float = 0.01  # train collection: with this probability every env acts uniformly at random
    sample_weights: tuple[float, ...] = (0.1, 0.1, 0.1, 0.7)  # episode quarters, oldest to newest
    # Evaluation
    eval_every: int = 10
    eval_episodes: int = 4
    final_eval_episodes: int = 100
    # Models
    denoiser: ModelTraining = ModelTraining(OptimConfig(1e-4, 1e-2, 1.0), seq_length=6)
    rew_end: ModelTraining = ModelTraining(OptimConfig(1e-4, 1e-2, 100.0), seq_length=19)
    actor_critic: ModelTraining = ModelTraining(OptimConfig(1e-4, 0.0, 100.0), 32, 5_000, 400, seq_length=4)
    imagination: ImaginationConfig = field(default_factory=ImaginationConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The inverse of `to_dict` (a run's config.json). Raises UserError naming the first unknown or missing
        key (e.g. "denoiser.optim.lr"): a config that does not say everything is not guessed at."""
        return _from_dict(cls, d, "")

    @property
    def num_collect_epochs(self) -> int:
        """Epochs with collection after the initial one (the exact count depends on the initial collection)."""
        return max(0, (self.total_real_steps - self.initial_steps_min) // max(1, self.collect_steps_per_epoch))


def _from_dict(cls: type, d, where: str):
    """A (nested) config dataclass from its `asdict` form, every field required; lists become tuples."""
    if not isinstance(d, dict):
        raise UserError(f"training config: {where.rstrip('.') or 'the config'} must be a JSON object, got {d!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in d if k not in names]
    if unknown:
        raise UserError(f"training config: unknown key {where + unknown[0]!r}")
    missing = [k for k in names if k not in d]
    if missing:
        raise UserError(f"training config: missing key {where + missing[0]!r}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        value = d[f.name]
        nested = _NESTED.get(f.type)
        kwargs[f.name] = (_from_dict(nested, value, f"{where}{f.name}.") if nested
                          else tuple(value) if isinstance(value, list) else value)
    return cls(**kwargs)


_NESTED = {"OptimConfig": OptimConfig, "ModelTraining": ModelTraining, "ImaginationConfig": ImaginationConfig}


def _updates(cfg: TrainConfig, first: tuple[int, int, int], per_epoch: tuple[int, int, int]) -> TrainConfig:
    d, r, a = (dataclasses.replace(m, steps_first_epoch=f, steps_per_epoch=p) for m, f, p in
               zip((cfg.denoiser, cfg.rew_end, cfg.actor_critic), first, per_epoch))
    return dataclasses.replace(cfg, denoiser=d, rew_end=r, actor_critic=a)


def atari100k() -> TrainConfig:
    """The paper's protocol: 100k real steps, 1000 epochs, 400 updates per model per epoch (~3 GPU-days)."""
    return TrainConfig()


def consumer() -> TrainConfig:
    """The paper's models and data budget with a quarter of the updates: about a day on one consumer GPU."""
    cfg = dataclasses.replace(atari100k(), num_final_epochs=20, final_eval_episodes=30)
    return _updates(cfg, (2_500, 2_500, 1_250), (100, 100, 100))


def tiny() -> TrainConfig:
    """A tiny model and a few hundred real steps: runs end to end on a CPU in minutes (tests, smoke runs)."""
    cfg = TrainConfig(model="tiny", total_real_steps=400, initial_steps_min=200, initial_steps_max=300,
                      initial_min_rare_rewards=0, collect_steps_per_epoch=100, num_final_epochs=1,
                      eval_every=2, eval_episodes=1, final_eval_episodes=1,
                      imagination=ImaginationConfig(horizon=4, denoising_steps=1))
    cfg = _updates(cfg, (3, 3, 2), (2, 2, 1))
    small = {"batch_size": 4}
    return dataclasses.replace(cfg, denoiser=dataclasses.replace(cfg.denoiser, **small),
                               rew_end=dataclasses.replace(cfg.rew_end, **small, seq_length=8),
                               actor_critic=dataclasses.replace(cfg.actor_critic, **small))


def catch() -> TrainConfig:
    """The toy game Catch (training.toy_env): a small model learns to catch the ball in a few CPU minutes.

    Scaled to the game: 7-step episodes, so short imagined rollouts and reward/end sequences; deterministic
    frames, so one denoising step; a short warm-up and higher learning rates, since there are only a few
    hundred updates. Uniform episode sampling: the random initial data covers the game well.
    What it takes (measured, see `agent_config`): the denoiser trained mostly at high noise, else one-step
    sampling ignores the action and the paddle does not follow it in imagination; a reward/end model that
    tells catches from misses before the agent starts (a wider LSTM and condition, batch 32, 500 updates:
    a weaker one predicts 0 or guesses catches from the action, and the agent learns that bias); an
    entropy weight of 0.01 (with 0.001 the policy collapses in ~50 updates).
    """
    def optim(lr: float, wd: float, clip: float) -> OptimConfig:
        return OptimConfig(lr=lr, weight_decay=wd, max_grad_norm=clip, warmup_steps=10)

    return TrainConfig(
        model="catch", total_real_steps=1_200, initial_steps_min=800, initial_steps_max=800,
        initial_min_rare_rewards=0, collect_steps_per_epoch=100, num_final_epochs=0, epsilon=0.0,
        eval_every=3, eval_episodes=50, final_eval_episodes=200, sample_weights=(),
        denoiser=ModelTraining(optim(1e-3, 1e-2, 1.0), batch_size=16, steps_first_epoch=300, steps_per_epoch=40,
                               seq_length=5),
        rew_end=ModelTraining(optim(1e-3, 1e-2, 100.0), batch_size=32, steps_first_epoch=500, steps_per_epoch=40,
                              seq_length=5),
        actor_critic=ModelTraining(optim(3e-3, 0.0, 100.0), batch_size=32, steps_first_epoch=80, steps_per_epoch=30,
                                   seq_length=4),
        imagination=ImaginationConfig(horizon=6, gamma=0.95, lam=0.9, weight_entropy_loss=0.01, denoising_steps=1),
    )


def cpu() -> TrainConfig:
    """The `small` model on an Atari game with a CPU budget (how the shipped default weights were trained):
    a few thousand real steps, short epochs, larger learning rates with a short warm-up. Run it as long as
    you can afford; weights are written after every epoch."""
    fast = OptimConfig(lr=3e-4, weight_decay=1e-2, max_grad_norm=1.0, warmup_steps=50)
    return TrainConfig(
        model="small", total_real_steps=30_000, initial_steps_min=2_000, initial_steps_max=4_000,
        collect_steps_per_epoch=200, num_final_epochs=10, eval_every=5, eval_episodes=2, final_eval_episodes=10,
        denoiser=ModelTraining(fast, batch_size=16, steps_first_epoch=400, steps_per_epoch=100, seq_length=6),
        rew_end=ModelTraining(dataclasses.replace(fast, max_grad_norm=100.0), batch_size=16,
                              steps_first_epoch=150, steps_per_epoch=40, seq_length=19),
        actor_critic=ModelTraining(dataclasses.replace(fast, weight_decay=0.0, max_grad_norm=100.0), batch_size=16,
                                   steps_first_epoch=100, steps_per_epoch=30, seq_length=4),
    )


def breakout() -> TrainConfig:
    """The shipped Breakout world model: `cpu` with the residual denoiser (`small-residual`), which repeats the
    static screen from its first updates and spends them on the paddle and the ball, and learns from noisy
    contexts to correct its own errors, so that long dreams keep the board. Meant for world-model
    training on scripted play: `dreamarcade collect --game Breakout --out data/breakout`, then
    `dreamarcade train --game Breakout --preset breakout --dataset data/breakout`."""
    return dataclasses.replace(cpu(), model="small-residual")


PRESETS = {"atari100k": atari100k, "consumer": consumer, "cpu": cpu, "breakout": breakout, "tiny": tiny,
           "catch": catch}


def agent_config(cfg: TrainConfig, num_actions: int) -> AgentConfig:
    """The model of a training config: a `model.presets` name, or "catch" (a smaller one for the toy game)."""
    if cfg.model == "catch":
        # denoiser: noise levels centred on the one sampling step (sigma_max = 5, ln 5 = 1.6) instead of the
        # reference's N(-0.4, 1.2), where sigma >= 5 is 5% of the updates and the action (which only matters
        # at high noise) is not learned in a few hundred; a wider condition for the action embedding.
        # reward/end: with a 32-wide LSTM and condition, landings stay predicted as 0 for 300+ updates on some
        # seeds. actor-critic: a 128-wide LSTM learns Catch much faster than 32 (with the real game as a
        # perfect world model: a return of 0.8-0.9 after 100 updates, where 32 is still about random).
        return AgentConfig(
            num_actions=num_actions,
            denoiser=DenoiserConfig(cond_channels=64, depths=(1, 1, 1, 1), channels=(8, 8, 16, 16),
                                    train_sigma_loc=1.6, train_sigma_scale=0.5),
            rew_end=RewEndConfig(lstm_dim=128, cond_channels=64, depths=(1, 1, 1, 1), channels=(8, 8, 8, 8)),
            actor_critic=ActorCriticConfig(lstm_dim=128, channels=(8, 8, 16, 16)),
        )
    if cfg.model not in model_presets.PRESETS:
        raise UserError(f"unknown model preset {cfg.model!r}; choose one of: {', '.join(model_presets.PRESETS)}, catch")
    return model_presets.PRESETS[cfg.model](num_actions)


def get_preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]()
