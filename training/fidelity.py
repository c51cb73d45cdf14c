"""World-model fidelity against the real emulator: the same starting context and actions fed to both.

A real trajectory is recorded in the training env (the episode ends on life loss, the `end` the reward/end
model learns): 4 context frames, then `horizon` steps. The world model starts from those 4 frames and
actions and imagines the next `horizon` frames open-loop under the same actions. Per step we report PSNR
and SSIM against the real frames (both as uint8 images, what a player sees), next to the PSNR of the
trivial "the last context frame never changes" guess, and how often the sampled reward and end agree
with the real ones. Steps after a real episode end are left out.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from model.pixels import to_float, to_uint8
from model.precision import EVALUATION, resolve
from training.atari_env import make_env
from training.games import resolve_game
from weights.errors import UserError

MAX_PSNR = 60.0  # identical frames: PSNR is infinite, counted as 60 dB so means stay finite


@dataclass(frozen=True)
class FidelityConfig:
    horizon: int = 50  # imagined steps compared
    contexts: int = 8  # real trajectories (= imagined envs, run as one batch)
    seed: int = 0
    denoising_steps: int | None = None  # None: the weights' own (`Agent.denoising_steps`: theirs, else the reference's 3)
    still_levels: float | None = None  # None: the weights' own (`Agent.still_levels`: theirs, else 0, off)
    precision: str = EVALUATION  # a policy of model.precision ("bfloat16": the fast path, to measure what it costs)
    policy: str = "agent"  # who picks the actions on the real frames: "agent" (sampled) or "random"
    max_warmup: int = 60  # steps played before the context, drawn in [0, max_warmup], for varied starts
    strip_columns: int = 10


# ---- image metrics ------------------------------------------------------------------------------------------

def psnr(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of uint8 frames (..., 3, H, W) -> (...), peak 255, capped at MAX_PSNR: the one PSNR (fidelity,
    the player's compare mode). Only the last three dimensions are averaged over, so (..., H, W, 3) works too."""
    mse = (real.double() - fake.double()).pow(2).flatten(-3).mean(-1)
    return (10 * torch.log10(255.0 ** 2 / mse.clamp_min(1e-12))).clamp(max=MAX_PSNR).float()


def _gaussian_band(size: int, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """(size, size - window + 1) matrix M such that v @ M is v filtered by the 1-D Gaussian ('valid')."""
    x = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    out = size - window + 1
    band = torch.zeros(size, out, dtype=torch.float64)
    for k in range(window):
        band[torch.arange(out) + k, torch.arange(out)] = g[k]
    return band


def ssim(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004) of uint8 frames (N, C, H, W) -> (N,).

    11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, on [0, 1] intensities, per channel over the
    'valid' region (no padding), then averaged over channels and positions (as scikit-image's
    structural_similarity with gaussian_weights=True, use_sample_covariance=False).
    """
    x, y = real.double() / 255, fake.double() / 255
    n, c = x.shape[:2]
    # The Gaussian is separable: filter columns then rows as two matrix products, the 5 moment maps at once.
    rows, cols = _gaussian_band(x.shape[2]).to(x.device), _gaussian_band(x.shape[3]).to(x.device)
    maps = rows.T @ torch.stack([x, y, x * x, y * y, x * y]) @ cols
    mu_x, mu_y, xx, yy, xy = maps
    var_x, var_y, cov = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2, 3)).float()


# ---- real and imagined rollouts -----------------------------------------------------------------------------

@dataclass
class Rollouts:
    """N trajectories: obs uint8 (N, C + H, 3, h, w), act long (N, C + H) (act[:, t] taken at obs[:, t]),
    rew float (N, H) and end bool (N, H) of the H steps after the C context frames (C: the denoiser's
    `num_steps_conditioning`), valid bool (N, H), and pad long (N,): how many context frames come before the
    episode start (padding, as the segment sampler's)."""

    obs: torch.Tensor
    act: torch.Tensor
    rew: torch.Tensor
    end: torch.Tensor
    valid: torch.Tensor
    pad: torch.Tensor

    @property
    def context_length(self) -> int:
        return self.obs.shape[1] - self.rew.shape[1]

    def context(self) -> tuple[torch.Tensor, torch.Tensor]:
        """-> obs (N, C, 3, h, w) float in [-1, 1], act (N, C) long, padding as training sees it: 0 and 0."""
        n = self.context_length
        obs, act = to_float(self.obs[:, :n]), self.act[:, :n].clone()
        padded = torch.arange(n) < self.pad[:, None]  # (N, C)
        obs[padded] = 0.0  # mid-gray, as training.segments pads
        act[padded] = 0
        return obs, act


@torch.no_grad()
def record_real(agent, game: str, cfg: FidelityConfig) -> Rollouts:
    """Play the real training env with the chosen policy and record `cfg.contexts` trajectories."""
    context = agent.denoiser.cfg.num_steps_conditioning
    steps = context + cfg.horizon
    size = agent.config.img_size
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    env = make_env(game, train=True)
    obs = torch.zeros(cfg.contexts, steps, 3, size, size, dtype=torch.uint8)
    act = torch.zeros(cfg.contexts, steps, dtype=torch.long)
    rew = torch.zeros(cfg.contexts, cfg.horizon)
    end = torch.zeros(cfg.contexts, cfg.horizon, dtype=torch.bool)
    valid = torch.zeros(cfg.contexts, cfg.horizon, dtype=torch.bool)

    def policy(frame: torch.Tensor, state):
        if cfg.policy == "random":
            return int(torch.randint(int(env.action_space.n), (1,), generator=gen)), None
        logits, _, state = agent.actor_critic(to_float(frame[None]).to(_device(agent)), state)
        return int(torch.multinomial(torch.softmax(logits[0].float().cpu(), -1), 1, generator=gen)), state

    frame_of = lambda x: torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)
    pad = torch.zeros(cfg.contexts, dtype=torch.long)
    resume = False  # True after a life loss: the next reset() goes on with the same game
    for n in range(cfg.contexts):
        for attempt in range(20):
            frame, _ = env.reset() if resume else env.reset(seed=cfg.seed * 10_007 + 100 * n + attempt)
            resume, complete = False, True
            # The context's last frame is the one `warmup` steps after the start; earlier context frames before
            # the start are padding. If the episode ends first, retry with a shorter warmup (0 always works).
            warmup = int(rng.integers(0, (cfg.max_warmup >> attempt) + 1))
            pad[n] = max(0, context - 1 - warmup)
            state = None  # the actor's memory starts empty in each episode, as the reference
            for t in range(warmup + cfg.horizon + 1):
                i = t - warmup + context - 1  # index in the recorded trajectory
                a, state = policy(frame_of(frame), state)
                if i >= 0:
                    obs[n, i], act[n, i] = frame_of(frame), a
                if i == steps - 1:
                    break  # the last frame is recorded; its action is never used
                frame, r, term, trunc, info = env.step(a)
                j = i + 1 - context  # the imagined step whose outcome this is
                if j >= 0:
                    rew[n, j], end[n, j], valid[n, j] = float(np.sign(r)), bool(term), True
                    if term or trunc:
                        obs[n, j + context] = frame_of(frame)
                if term or trunc:
                    resume = bool(info.get("life_loss")) and not trunc
                    complete = j >= 0
                    break
            if complete:
                break
        else:
            raise RuntimeError(f"{game}: could not record a trajectory")
    env.close()
    return Rollouts(obs, act, rew, end, valid, pad)


def _device(agent) -> torch.device:
    return next(agent.parameters()).device


@torch.no_grad()
def imagine(agent, real: Rollouts, cfg: FidelityConfig) -> Rollouts:
    """Run the world-model env from the real contexts under the real actions -> imagined Rollouts
    (obs holds the context then the imagined frames; valid is copied from `real`)."""
    from model.sampler import SamplerConfig
    from model.world_model_env import WorldModelEnv

    device = _device(agent)
    sampler = SamplerConfig(num_steps_denoising=cfg.denoising_steps or agent.denoising_steps,
                            still_levels=cfg.still_levels)
    generator = torch.Generator(device).manual_seed(cfg.seed)  # the sampler's noise and the sampled rew/end
    wm_env = WorldModelEnv(agent, sampler=sampler, generator=generator, precision=cfg.precision)
    obs_ctx, act_ctx = real.context()
    n = real.context_length
    wm_env.reset(obs_ctx.to(device), act_ctx.to(device))
    frames, rews, ends = [], [], []
    for t in range(cfg.horizon):
        next_obs, rew, end, _ = wm_env.step(real.act[:, n - 1 + t].to(device))
        frames.append(to_uint8(next_obs).cpu())
        rews.append(rew.float().cpu())
        ends.append(end.bool().cpu())
    obs = torch.cat([real.obs[:, :n], torch.stack(frames, 1)], dim=1)
    return Rollouts(obs, real.act, torch.stack(rews, 1), torch.stack(ends, 1), real.valid, real.pad)


def compare(real: Rollouts, fake: Rollouts) -> dict:
    """Per-step and overall PSNR / SSIM, the copy-last-frame PSNR baseline, reward and end accuracy."""
    n, horizon = real.valid.shape
    c = real.context_length
    r, f = real.obs[:, c:], fake.obs[:, c:]
    flat = lambda x: x.reshape(n * horizon, *x.shape[2:])
    p = psnr(r, f)
    s = ssim(flat(r), flat(f)).reshape(n, horizon)
    base = psnr(r, real.obs[:, c - 1:c].expand_as(r))
    v = real.valid
    count = v.sum(0)
    per_step = lambda m: [float(x) if c else None for x, c in zip((m * v).sum(0) / count.clamp_min(1), count)]
    nonzero = v & (real.rew != 0)
    ended = v & real.end
    return {
        "psnr": per_step(p),
        "ssim": per_step(s),
        "copy_last_psnr": per_step(base),
        "valid_per_step": count.tolist(),
        "mean_psnr": float(p[v].mean()),
        "mean_ssim": float(s[v].mean()),
        "mean_copy_last_psnr": float(base[v].mean()),
        "reward_accuracy": float((fake.rew == real.rew)[v].float().mean()),
        "reward_nonzero_steps": int(nonzero.sum()),
        "reward_nonzero_recall": float((fake.rew == real.rew)[nonzero].float().mean()) if nonzero.any() else None,
        "end_accuracy": float((fake.end == real.end)[v].float().mean()),
        "end_steps": int(ended.sum()),
        "end_recall": float(fake.end[ended].float().mean()) if ended.any() else None,
    }


STRIP_LABEL_W = 76  # left margin of the strip, for the row names
STRIP_HEADER_H = 18  # top margin, for the step numbers


def strip_image(real: Rollouts, fake: Rollouts, index: int = 0, columns: int = 10, scale: int = 2) -> np.ndarray:
    """(H, W, 3) uint8: the last context frame then evenly spaced steps; real row above, imagined below,
    the step number over each column ("context" over the first) and "real" / "imagined" beside the rows.
    Frames start at (STRIP_HEADER_H + 2, STRIP_LABEL_W + 2), `scale` pixels per frame pixel, 2 apart."""
    valid_steps = int(real.valid[index].sum())
    steps = sorted({int(round(x)) for x in np.linspace(1, max(1, valid_steps), min(columns, max(1, valid_steps)))})
    c = real.context_length
    cols = [c - 1] + [c - 1 + t for t in steps]
    pad = 2
    side = real.obs.shape[-1] * scale
    top, left = STRIP_HEADER_H + pad, STRIP_LABEL_W + pad
    out = np.full((top + 2 * side + 2 * pad, left + len(cols) * (side + pad), 3), 255, dtype=np.uint8)
    for row, roll in enumerate((real, fake)):
        for k, t in enumerate(cols):
            img = roll.obs[index, t].permute(1, 2, 0).numpy().repeat(scale, 0).repeat(scale, 1)
            y, x = top + row * (side + pad), left + k * (side + pad)
            out[y:y + side, x:x + side] = img
    headers = ["context"] + [f"step {t}" for t in steps]
    rows = [("real", top + side // 2), ("imagined", top + side + pad + side // 2)]
    return _label(out, [(h, left + k * (side + pad) + side // 2, top // 2) for k, h in enumerate(headers)]
                  + [(name, left // 2, y) for name, y in rows])


def _label(image: np.ndarray, texts: list[tuple[str, int, int]]) -> np.ndarray:
    """Writes each (text, x, y) centred at (x, y), in dark grey, on a copy of image (H, W, 3) uint8."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for text, x, y in texts:
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        draw.text((x - (x1 + x0) // 2, y - (y1 + y0) // 2), text, fill=(40, 40, 40), font=font)
    return np.asarray(canvas).copy()


def measure_fidelity(agent, game: str, cfg: FidelityConfig = FidelityConfig(), out_dir: str | Path | None = None) -> dict:
    """Record real trajectories, imagine them, compare -> JSON-safe dict; writes `strip.png` into out_dir."""
    game = resolve_game(game)
    if cfg.policy not in ("agent", "random"):
        raise UserError(f"policy must be 'agent' or 'random', got {cfg.policy!r}")
    probe = make_env(game, train=False)
    num_actions = int(probe.action_space.n)
    probe.close()
    if agent.num_actions != num_actions:
        raise UserError(f"the agent has {agent.num_actions} actions but {game} has {num_actions}")
    agent.eval()
    cfg = replace(cfg, denoising_steps=cfg.denoising_steps or agent.denoising_steps,  # the report names them
                  still_levels=agent.still_levels if cfg.still_levels is None else cfg.still_levels)
    real = record_real(agent, game, cfg)
    fake = imagine(agent, real, cfg)
    result = {"game": game, **asdict(cfg), **compare(real, fake)}
    if resolve(cfg.precision, _device(agent)) != "float32":  # a faster path must keep the frames: compare it too
        exact = imagine(agent, real, replace(cfg, precision="float32"))
        versus = compare(Rollouts(exact.obs, exact.act, exact.rew, exact.end, real.valid, real.pad), fake)
        result["vs_float32"] = {k: versus[k] for k in ("psnr", "ssim", "mean_psnr", "mean_ssim")}
    if out_dir is not None:
        import imageio.v3 as iio

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        best = int(real.valid.sum(1).argmax())  # the trajectory that lasts longest
        iio.imwrite(out / "strip.png", strip_image(real, fake, best, cfg.strip_columns))
        result["strip"] = str(out / "strip.png")
        result["curves"] = str(plot_curves(result, out / "curves.png"))
    return result


def plot_curves(result: dict, path: str | Path) -> Path:
    """PNG of PSNR and SSIM per imagined step, with the copy-last-frame PSNR for scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(result["psnr"]) + 1)
    as_array = lambda xs: np.array([np.nan if x is None else x for x in xs], dtype=float)
    fig, (ax_p, ax_s) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_p.plot(steps, as_array(result["psnr"]), label="world model")
    ax_p.plot(steps, as_array(result["copy_last_psnr"]), linestyle="--", color="gray", label="last frame repeated")
    ax_p.set(xlabel="imagined step", ylabel="PSNR (dB)")
    ax_p.legend(fontsize=8)
    ax_s.plot(steps, as_array(result["ssim"]))
    ax_s.set(xlabel="imagined step", ylabel="SSIM", ylim=(0, 1))
    for ax in (ax_p, ax_s):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{result['game']}: world model vs real emulator ({result['contexts']} rollouts)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
