"""`dreamarcade bench --reference-code DIR`: the reference's own code, measured beside ours in the same process.

DIR is a checkout of the reference's repository (github.com/eloialonso/diamond, main branch). Its modules are
imported from DIR/src at run time (nothing of theirs is copied here), built at the sizes of bench's model
(`--model`, atari100k by default: their `config/agent/default.yaml`) with their own initialisation, and timed
with `app.bench.timed` at the same thread count, batch sizes, warm-up and repeats as our parts, in float32 (their
code has no other precision on a CPU) and eagerly (their trainer compiles only imagination's two world-model
calls, `training.compile_wm`, which their CPU figures in diamond.md section 7 did not use either):

- denoiser: their `Denoiser.forward(batch)` (loss of 2 targets) + backward + gradient clipping + AdamW + LR
  schedule, as their `Trainer.train_component`, on the same synthetic (B, 6) batch as ours;
- reward/end: their `RewEndModel.forward(batch)` on (B, 19) segments, the same update;
- imagination: their `ActorCritic.forward()` (their env loop over their `WorldModelEnv`: B imagined games x 15
  steps, 3 Euler steps each, reward and end sampled, dead games restarted from new contexts with the actor's
  burn-in) + the same update. Their data pipeline (episode dataset, `BatchSampler`, which raises on torch 2.13)
  is replaced by a `DataLoader` of random 4-frame contexts, the initial conditions that `WorldModelEnv` preloads
  and burns in with the reward/end model. Their training preloads 256 batches at once (minutes on a CPU, then
  none for many updates); here it preloads 2 at a time, so that each timed update pays for about the contexts
  it uses, as ours does (`training.context_pool`). With random weights about half the games end at each step
  (on both sides: their end head and ours give P(end) = 0.50), ~240 contexts per update; a refill drops those
  left when fewer remain than games died, so theirs burns in about 12 % more contexts than it uses (256 batches
  at a time: 0.2 %).
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import itertools
import subprocess
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from app.bench import contexts, synthetic_batch, timed
from model.agent import AgentConfig
from weights.errors import UserError

REPOSITORY = "github.com/eloialonso/diamond"
PRELOAD_BATCHES = 2  # initial-condition batches their WorldModelEnv burns in at a time (their config: 256)
# files that make DIR a checkout of the reference's code: what bench imports
FILES = ("src/models/diffusion/denoiser.py", "src/models/rew_end_model.py", "src/models/actor_critic.py",
         "src/envs/world_model_env.py", "src/data/batch.py", "src/utils.py")
# (module, symbol) that bench uses from their code
SYMBOLS = (("models.diffusion", "Denoiser"), ("models.diffusion", "DenoiserConfig"),
           ("models.diffusion", "InnerModelConfig"), ("models.diffusion", "SigmaDistributionConfig"),
           ("models.diffusion", "DiffusionSamplerConfig"), ("models.rew_end_model", "RewEndModel"),
           ("models.rew_end_model", "RewEndModelConfig"), ("models.actor_critic", "ActorCritic"),
           ("models.actor_critic", "ActorCriticConfig"), ("models.actor_critic", "ActorCriticLossConfig"),
           ("envs.world_model_env", "WorldModelEnv"), ("envs.world_model_env", "WorldModelEnvConfig"),
           ("data.batch", "Batch"), ("utils", "configure_opt"), ("utils", "get_lr_sched"))
# Imported at module level by their modules, used only by code that bench never runs: src/utils.py imports
# omegaconf (for `prompt_run_name`) and wandb (for `wandb_log`). Where one is not installed, a stand-in module
# takes its place during the import; calling anything of it raises.
UNUSED_IMPORTS = ("omegaconf", "wandb")
# The one stand-in that runs: their `RewEndModel.forward` logs confusion matrices with torcheval's
# `multiclass_confusion_matrix`. Where torcheval is not installed, this computes the same (3 x 3 and 2 x 2) matrices
# from the argmax of the logits, as torcheval does: microseconds in an update of seconds.
LOGGING_IMPORTS = {"torcheval": {"torcheval.metrics.functional": {
    "multiclass_confusion_matrix": lambda logits, target, num_classes: torch.bincount(
        target.long() * num_classes + logits.argmax(dim=1), minlength=num_classes**2).reshape(num_classes, -1)}}}


@dataclass(frozen=True)
class ReferenceCode:
    """Their classes and functions, imported from one checkout (`load_reference`)."""

    path: Path
    commit: str | None  # HEAD of DIR where it is a git checkout
    stand_ins: tuple[str, ...]  # the modules that stand-ins replaced (not installed here)
    symbols: dict

    def __getattr__(self, name: str):  # ref.Denoiser, ref.configure_opt, ...
        symbols = self.__dict__.get("symbols", {})
        if name not in symbols:
            raise AttributeError(name)
        return symbols[name]


@dataclass
class ReferenceModels:
    """Their three networks, built from our config (same sizes), with their own random initialisation."""

    denoiser: nn.Module
    rew_end: nn.Module
    actor_critic: nn.Module

    def parameters(self, part: str) -> int:
        return sum(p.numel() for p in getattr(self, part).parameters())


class _StandIn(types.ModuleType):
    def __init__(self, name: str, attrs: dict) -> None:
        super().__init__(name)
        self.__dict__.update(attrs)

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        qualname = f"{self.__name__}.{attr}"

        def never_called(*args, **kwargs):
            raise RuntimeError(f"{qualname}: a stand-in (not installed), which bench's measurements never call")

        return never_called


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes stand-in modules (packages, so that `a.b.c` imports too) for the given top-level names."""

    def __init__(self, roots: dict[str, dict]) -> None:
        self.roots = roots

    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, self, is_package=True) if name.split(".")[0] in self.roots else None

    def create_module(self, spec):
        return _StandIn(spec.name, self.roots[spec.name.split(".")[0]].get(spec.name, {}))

    def exec_module(self, module) -> None:
        pass


@contextmanager
def _isolated_import(src: Path, stand_ins: dict[str, dict]):
    """DIR/src on sys.path and the stand-ins on sys.meta_path, only inside. Their top-level modules (`data`,
    `models`, `utils`, ...) would shadow or be shadowed by others of the same names: any such module already
    loaded is set aside during the import and put back after, and theirs leave sys.modules (the objects
    imported stay alive through the references the caller keeps)."""
    theirs = {p.stem for p in src.iterdir() if (p.is_dir() or p.suffix == ".py") and not p.name.startswith("_")}
    owned = lambda name: name.split(".")[0] in theirs | set(stand_ins)
    set_aside = {name: sys.modules.pop(name) for name in list(sys.modules) if owned(name)}
    path, finder, bytecode = list(sys.path), _StandInFinder(stand_ins), sys.dont_write_bytecode
    sys.path.insert(0, str(src))
    sys.meta_path.insert(0, finder)
    sys.dont_write_bytecode = True  # leave their checkout as it was (no __pycache__ in it)
    try:
        yield
    finally:
        sys.dont_write_bytecode = bytecode
        sys.meta_path.remove(finder)
        sys.path[:] = path
        for name in [name for name in sys.modules if owned(name)]:
            del sys.modules[name]
        sys.modules.update(set_aside)
        importlib.invalidate_caches()


def _commit(path: Path) -> str | None:
    if not (path / ".git").exists():  # an exported copy (or a folder inside some other repository)
        return None
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def load_reference(path: str | Path) -> ReferenceCode:
    """Imports the reference's modules from the checkout at path (see the module's docstring).

    Raises `UserError` naming path when it is not such a checkout, or when a module or symbol bench needs is
    missing (another branch or version of their code)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(f"--reference-code {path}: no such folder (expected a checkout of {REPOSITORY})")
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise UserError(f"--reference-code {path}: not a checkout of the reference's code ({REPOSITORY}): "
                        f"it has no {', '.join(missing)}")
    stand_ins = {name: {} for name in UNUSED_IMPORTS if importlib.util.find_spec(name) is None}
    stand_ins.update({name: attrs for name, attrs in LOGGING_IMPORTS.items() if importlib.util.find_spec(name) is None})
    symbols = {}
    with _isolated_import(path / "src", stand_ins):
        for module_name, symbol in SYMBOLS:
            try:
                module = importlib.import_module(module_name)
            except Exception as e:  # their code, another version of it (our own code does not run here)
                raise UserError(f"--reference-code {path}: importing their module {module_name} failed: "
                                f"{type(e).__name__}: {e}") from None
            if not hasattr(module, symbol):
                raise UserError(f"--reference-code {path}: their module {module_name} has no {symbol} "
                                f"(bench expects the main branch of {REPOSITORY})")
            symbols[symbol] = getattr(module, symbol)
    return ReferenceCode(path=path, commit=_commit(path), stand_ins=tuple(stand_ins), symbols=symbols)


def reference_models(ref: ReferenceCode, cfg: AgentConfig, device: torch.device | str = "cpu",
                     seed: int = 0) -> ReferenceModels:
    """Their denoiser, reward/end model and actor-critic at the sizes of our cfg (for atari100k: their
    config/agent/default.yaml), initialised as their constructors do, in float32 on device."""
    torch.manual_seed(seed)
    d, r, a = cfg.denoiser, cfg.rew_end, cfg.actor_critic
    inner = ref.InnerModelConfig(img_channels=d.img_channels, num_steps_conditioning=d.num_steps_conditioning,
                                 cond_channels=d.cond_channels, depths=list(d.depths), channels=list(d.channels),
                                 attn_depths=[int(x) for x in d.attn_depths], num_actions=cfg.num_actions)
    denoiser = ref.Denoiser(ref.DenoiserConfig(inner_model=inner, sigma_data=d.sigma_data,
                                               sigma_offset_noise=d.sigma_offset_noise))
    denoiser.setup_training(ref.SigmaDistributionConfig(loc=d.train_sigma_loc, scale=d.train_sigma_scale,
                                                        sigma_min=d.train_sigma_min, sigma_max=d.train_sigma_max))
    rew_end = ref.RewEndModel(ref.RewEndModelConfig(
        lstm_dim=r.lstm_dim, img_channels=r.img_channels, img_size=cfg.img_size, cond_channels=r.cond_channels,
        depths=list(r.depths), channels=list(r.channels), attn_depths=[int(x) for x in r.attn_depths],
        num_actions=cfg.num_actions))
    actor_critic = ref.ActorCritic(ref.ActorCriticConfig(
        lstm_dim=a.lstm_dim, img_channels=a.img_channels, img_size=cfg.img_size, channels=list(a.channels),
        down=[int(x) for x in a.down], num_actions=cfg.num_actions))
    return ReferenceModels(denoiser.to(device), rew_end.to(device), actor_critic.to(device))


def _their_update(ref: ReferenceCode, model: nn.Module, optim, batch=None):
    """One optimizer step as their `Trainer.train_component` makes it (grad_acc_steps 1): their loss, backward,
    `clip_grad_norm_`, AdamW step (their minGPT-style `configure_opt`), zero_grad, LR schedule step.
    optim: our `training.optim.OptimConfig` of that model (the reference's values)."""
    opt = ref.configure_opt(model, optim.lr, optim.weight_decay, optim.eps)
    lr_sched = ref.get_lr_sched(opt, optim.warmup_steps)
    model.train()
    opt.zero_grad()

    def update():
        loss, _ = model(batch) if batch is not None else model()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim.max_grad_norm)
        opt.step()
        opt.zero_grad()
        lr_sched.step()

    return update


def _their_batch(ref: ReferenceCode, b: int, t: int, img_size: int, num_actions: int, device):
    x = synthetic_batch(b, t, img_size, num_actions).to(device)
    return ref.Batch(obs=x.obs, act=x.act, rew=x.rew, end=x.end, trunc=x.trunc, mask_padding=x.mask,
                     info=[{} for _ in range(b)], segment_ids=[])


def denoiser_train_samples_per_s(ref: ReferenceCode, models: ReferenceModels, cfg: AgentConfig, batch_size: int = 32,
                                 repeats: int = 3, warmup: int = 1) -> tuple[float, float]:
    """Their denoiser update on a (batch_size, 6) batch -> (samples per wall-clock second, per CPU second)."""
    from training.optim import OptimConfig

    device = next(models.denoiser.parameters()).device
    batch = _their_batch(ref, batch_size, cfg.denoiser.num_steps_conditioning + 2, cfg.img_size, cfg.num_actions,
                         device)
    update = _their_update(ref, models.denoiser, OptimConfig(), batch)
    return tuple(batch_size / t for t in timed(update, repeats, warmup, device))


def rew_end_train_sequences_per_s(ref: ReferenceCode, models: ReferenceModels, cfg: AgentConfig,
                                  batch_size: int = 32, seq_length: int = 19, repeats: int = 3,
                                  warmup: int = 1) -> tuple[float, float]:
    """Their reward/end update on (batch_size, 19) segments."""
    from training.optim import OptimConfig

    device = next(models.rew_end.parameters()).device
    batch = _their_batch(ref, batch_size, seq_length, cfg.img_size, cfg.num_actions, device)
    update = _their_update(ref, models.rew_end, OptimConfig(max_grad_norm=100.0), batch)
    return tuple(batch_size / t for t in timed(update, repeats, warmup, device))


def imagination_transitions_per_s(ref: ReferenceCode, models: ReferenceModels, cfg: AgentConfig, num_envs: int = 32,
                                  horizon: int = 15, repeats: int = 2, warmup: int = 1) -> tuple[float, float]:
    """Their actor-critic update in imagination: num_envs games of their `WorldModelEnv` x horizon steps."""
    from model.sampler import SamplerConfig
    from training.optim import OptimConfig
    from training.presets import ImaginationConfig

    device = next(models.actor_critic.parameters()).device
    g = torch.Generator(device).manual_seed(0)

    def initial_conditions(items: list) -> object:  # their Batch of len(items) random 4-frame contexts
        n = len(items)
        obs, act = contexts(n, cfg.img_size, cfg.num_actions, g)
        zeros = torch.zeros(n, obs.shape[1], device=device)
        return ref.Batch(obs=obs, act=act, rew=zeros, end=zeros.byte(), trunc=zeros.byte(),
                         mask_padding=torch.ones_like(zeros, dtype=torch.bool), info=[{} for _ in range(n)],
                         segment_ids=[])

    # WorldModelEnv reads batch_sampler.batch_size (its number of games) and iterates forever
    data_loader = torch.utils.data.DataLoader([None], batch_size=num_envs, sampler=itertools.repeat(0),
                                              collate_fn=initial_conditions)
    im = ImaginationConfig(horizon=horizon)
    s = SamplerConfig(num_steps_denoising=im.denoising_steps)
    sampler_cfg = ref.DiffusionSamplerConfig(num_steps_denoising=s.num_steps_denoising, sigma_min=s.sigma_min,
                                             sigma_max=s.sigma_max, rho=s.rho, order=s.order, s_churn=s.s_churn,
                                             s_tmin=s.s_tmin, s_tmax=s.s_tmax, s_noise=s.s_noise)
    for m in (models.denoiser, models.rew_end):
        m.eval()
    env = ref.WorldModelEnv(models.denoiser, models.rew_end, data_loader,
                            ref.WorldModelEnvConfig(horizon=horizon, num_batches_to_preload=PRELOAD_BATCHES,
                                                    diffusion_sampler=sampler_cfg))
    actor_critic = models.actor_critic
    actor_critic.env_loop = actor_critic.loss_cfg = None  # set up afresh for each measurement
    actor_critic.setup_training(env, ref.ActorCriticLossConfig(
        backup_every=horizon, gamma=im.gamma, lambda_=im.lam, weight_value_loss=im.weight_value_loss,
        weight_entropy_loss=im.weight_entropy_loss))
    update = _their_update(ref, actor_critic, OptimConfig(weight_decay=0.0, max_grad_norm=100.0))
    return tuple(num_envs * horizon / t for t in timed(update, repeats, warmup, device))
