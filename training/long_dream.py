"""Does the world model keep the board over a long dream? (`dreamarcade eval --fidelity`, "board" table)

A player leaves the dream running: random actions for 1000 imagined steps, restarting a game from a fresh
real context whenever the model says it ended (as `dreamarcade play` does). The walls, the background and
everything else that never changes in real play must still be there. We find those pixels from real play
(`static_board`: every pixel whose colour never changed over a few thousand real frames, with the scripted
player where there is one, so that bricks broken anywhere are not counted as static), then report the PSNR
of the dream over those pixels only, at chosen steps, averaged over several dreams.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.pixels import to_uint8
from training.fidelity import FidelityConfig, psnr, record_real
from weights.errors import UserError


@dataclass(frozen=True)
class BoardConfig:
    steps: tuple[int, ...] = (25, 100, 300, 1000)  # imagined steps at which the board is measured
    dreams: int = 4  # dreams run side by side (one batch)
    real_steps: int = 3000  # real frames that decide which pixels never change
    seed: int = 0
    precision: str = "float32"
    denoising_steps: int | None = None  # None: the weights' own (`Agent.denoising_steps`)
    still_levels: float | None = None  # None: the weights' own (`Agent.still_levels`)


def static_board(game: str, size: int, num_steps: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """-> mask (H, W) bool of the pixels that never changed over `num_steps` real frames of `game`, and the
    frame (3, H, W) uint8 they are taken from. Played by the scripted player if the game has one, else at
    random, in the test env (whole games, lives lost and restarted)."""
    from training.atari_env import make_env
    from training.scripted import POLICIES

    env = make_env(game, train=False)
    rng = np.random.default_rng(seed)
    player = POLICIES[game](rng) if game in POLICIES else None
    frame, _ = env.reset(seed=seed)
    if frame.shape[:2] != (size, size):
        raise UserError(f"{game}: frames are {frame.shape[:2]}, the model's are {size}x{size}")
    first = frame.copy()
    changed = np.zeros(frame.shape[:2], dtype=bool)
    for _ in range(num_steps):
        act = player.act(env.unwrapped.ale.getRAM()) if player else int(rng.integers(env.action_space.n))
        frame, _, term, trunc, _ = env.step(act)
        changed |= (frame != first).any(-1)
        if term or trunc:
            frame, _ = env.reset()
            changed |= (frame != first).any(-1)
    env.close()
    return torch.from_numpy(~changed), torch.from_numpy(first).permute(2, 0, 1).contiguous()


def masked_psnr(frames: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR (dB, peak 255, capped at MAX_PSNR) of uint8 frames (N, 3, H, W) against reference (3, H, W),
    over the pixels where mask (H, W) is True -> (N,) (`training.fidelity.psnr` of those pixels)."""
    # the masked pixels as one (3, K, 1) image: psnr averages over its last three dimensions
    return psnr(reference[..., mask].unsqueeze(-1), frames[..., mask].unsqueeze(-1))


@torch.no_grad()
def measure_board(agent, game: str, cfg: BoardConfig = BoardConfig()) -> dict:
    """Dream `cfg.dreams` games for max(cfg.steps) random steps -> {"board_psnr": {step: dB}, "static_fraction",
    "restarts", "frames": {step: uint8 (dreams, 3, H, W)}} (frames for a strip; not JSON)."""
    from model.sampler import SamplerConfig
    from model.world_model_env import WorldModelEnv

    if not cfg.steps or min(cfg.steps) < 1:
        raise UserError("board steps must be positive")
    size = agent.config.img_size
    mask, reference = static_board(game, size, cfg.real_steps, cfg.seed)
    if not mask.any():
        raise UserError(f"{game}: every pixel changed in real play; nothing to measure the board on")
    # a pool of real contexts to start and restart the dreams from (random play, varied starts)
    pool = record_real(agent, game, FidelityConfig(horizon=1, contexts=2 * cfg.dreams, seed=cfg.seed,
                                                   policy="random"))
    pool_obs, pool_act = pool.context()
    device = next(agent.parameters()).device
    sampler = SamplerConfig(num_steps_denoising=cfg.denoising_steps or agent.denoising_steps,
                            still_levels=cfg.still_levels)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    env = WorldModelEnv(agent, sampler=sampler, generator=generator, precision=cfg.precision)
    pick = torch.Generator().manual_seed(cfg.seed)
    take = lambda n: torch.randint(len(pool_obs), (n,), generator=pick)
    idx = take(cfg.dreams)
    env.reset(pool_obs[idx].to(device), pool_act[idx].to(device))
    frames, restarts = {}, 0
    for t in range(1, max(cfg.steps) + 1):
        act = torch.randint(agent.num_actions, (cfg.dreams,), generator=pick)
        next_obs, _, end, _ = env.step(act.to(device))
        if t in cfg.steps:
            frames[t] = to_uint8(next_obs).cpu()
        dead = end.bool().cpu()
        if dead.any():
            restarts += int(dead.sum())
            idx = take(int(dead.sum()))
            env.reset_where(dead, pool_obs[idx].to(device), pool_act[idx].to(device))
    return {"board_psnr": {t: float(masked_psnr(frames[t], reference, mask).mean()) for t in cfg.steps},
            "static_fraction": float(mask.float().mean()), "restarts": restarts, "dreams": cfg.dreams,
            "frames": frames, "mask": mask, "reference": reference}


def board_strip(result: dict, scale: int = 2) -> np.ndarray:
    """(H, W, 3) uint8: one row per dream, one column per measured step; the last row shows the static pixels
    of the real game (the rest black)."""
    steps = sorted(result["frames"])
    first = result["frames"][steps[0]]
    n, _, h, w = first.shape
    static = result["reference"] * result["mask"]
    pad = 2
    out = np.full(((n + 1) * (h * scale + pad) + pad, len(steps) * (w * scale + pad) + pad, 3), 255, np.uint8)
    for col, t in enumerate(steps):
        for row in range(n + 1):
            img = result["frames"][t][row] if row < n else static
            img = img.permute(1, 2, 0).numpy().repeat(scale, 0).repeat(scale, 1)
            y, x = pad + row * (h * scale + pad), pad + col * (w * scale + pad)
            out[y:y + h * scale, x:x + w * scale] = img
    return out
