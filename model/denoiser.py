"""The EDM denoiser of the next frame, conditioned on the 4 previous frames and actions (diamond.md 1.2-1.3)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.batch import Batch
from model.blocks import FourierFeatures, GroupNorm, ScaleShift, conv3x3
from model.pixels import quantize
from model.unet import UNet


@dataclass(frozen=True)
class DenoiserConfig:
    img_channels: int = 3
    num_steps_conditioning: int = 4
    cond_channels: int = 256
    depths: tuple[int, ...] = (2, 2, 2, 2)
    channels: tuple[int, ...] = (64, 64, 64, 64)
    attn_depths: tuple[bool, ...] = (False, False, False, False)
    sigma_data: float = 0.5
    sigma_offset_noise: float = 0.3
    # training noise levels: ln(sigma) ~ N(loc, scale), clipped to [min, max]
    train_sigma_loc: float = -0.4
    train_sigma_scale: float = 1.2
    train_sigma_min: float = 2e-3
    train_sigma_max: float = 20.0
    # False (the reference's): denoise the next frame. True: denoise its change from the last conditioning
    # frame, so an untrained network already repeats the last frame and the training goes to what moves
    residual: bool = False
    # True (the reference's csgo branch): the conditioning frames get training noise too, at a level sigma_cond
    # the network is told (a second Fourier embedding, `noise_cond_emb`), so it learns to correct a context
    # that is not exact, as its own dreams are. ln(sigma_cond) ~ N(cond_sigma_loc, cond_sigma_scale); at
    # sampling time the network is told sigma_cond = s_cond (the frames are used as they are)
    noise_previous_obs: bool = False
    cond_sigma_loc: float = -0.4
    cond_sigma_scale: float = 1.2
    s_cond: float = 0.005
    # > 0: in the loss, the pixels near what moved in the conditioning frames (a ball, a paddle: where the last
    # two frames differ, widened by `moving_radius` pixels) weigh 1 + this. A handful of such pixels decide whether
    # a dream goes on (Breakout's 2-pixel ball) and under a plain mean they are lost among 4,096 static ones. The
    # weight depends on the conditioning only, never on the target, so the best prediction is still the
    # conditional mean (a weight on where the target moved would reward drawing motion that may not come).
    # 0 (the reference's): every pixel alike
    moving_loss_weight: float = 0.0
    moving_radius: int = 4
    # > 0: also, where the target itself differs from the last real frame, within those pixels near what moved,
    # the weight grows by this. This one reads the target, so it tilts the prediction toward drawing motion: where
    # the network gives a moving object probability p, it draws it with weight p (1 + v) / (1 + p v), v this
    # weight. That sharpens a small object whose exact place is uncertain (the ball: p 0.3 -> 0.8 at v = 10)
    # instead of fading it. Only near what already moves: elsewhere the tilt would draw what rarely comes (serves,
    # score changes, at v = 20 in most dreams). 0: no tilt
    moved_target_weight: float = 0.0
    # > 0: where the target differs from the last real frame AWAY from what moved in the conditioning (an object
    # that appears: Breakout's serve, the ball at one of 4 places the frames cannot tell), the weight is 1 + this.
    # The same tilt as above, p -> p (1 + a) / (1 + p a), so a serve is learned at all (under the plain weight of 1
    # the 2-pixel ball at p = 1/4 per place is not, even with 1,200 serves in the data) and a rare change far from
    # motion is drawn more often than it comes (a score digit). 0: none
    appear_weight: float = 0.0
    # > 0: where the network's own estimate of the target (detached, at the step's sigma) differs from the last
    # real frame away from what moved and the target does not (something drawn that never came: a second ball
    # served while one is in flight), the weight grows by this. It makes a false appearance cost what a missed one
    # costs under `appear_weight`: wherever the network draws something new the weight no longer reads the target,
    # so there the prediction returns to the conditional mean, and the tilt acts only where it draws nothing yet.
    # 0: none
    false_appear_weight: float = 0.0
    # > 0: `appear_weight` and `false_appear_weight` count only where the last real frame is flat (one colour, every
    # channel within MOVING_THRESHOLD) for this many pixels around: an object appearing out of nothing (a serve, the
    # ball 5 or more pixels from anything drawn), not an object at rest starting to move (Breakout's paddle leaving
    # the wall it rested against: its wind-up at the wall is hidden, so it leaves on the 2nd or the 3rd LEFT press,
    # and the tilt drew it leaving on the 2nd where 98% of the data stays) or a score digit turning. The mask reads
    # the last frame only, the same for the target and for the estimate. 0: anywhere away from motion
    appear_empty_radius: int = 0
    # > 0 (needs `appear_empty_radius` r): where the last frame is NOT flat within r pixels and nothing moved in the
    # conditioning (an object at rest: the paddle against a wall, a score digit), the pixels where the target or
    # the network's own estimate (detached) differ from the last frame weigh 1 + this. Both sides alike, so no tilt:
    # the prediction stays the conditional mean, but a choice that only the context's actions decide (Breakout's
    # paddle leaves the right wall on the 3rd LEFT press, not the 2nd) weighs as much as a moving ball does, where
    # under the plain weight of 1 it is lost among 4,096 static pixels. 0: none
    rest_weight: float = 0.0

    def __post_init__(self) -> None:
        if not len(self.depths) == len(self.channels) == len(self.attn_depths):
            raise ValueError("denoiser depths, channels and attn_depths must have the same length")
        if self.cond_channels % (2 * self.num_steps_conditioning):
            raise ValueError("denoiser cond_channels must be a multiple of 2 * num_steps_conditioning")
        if self.rest_weight and not self.appear_empty_radius:
            raise ValueError("denoiser rest_weight needs appear_empty_radius > 0 (what is not flat is at rest)")


@dataclass
class Conditioners:
    """EDM preconditioners, c_in / c_out / c_skip as (B, 1, 1, 1) and c_noise as (B,)."""

    c_in: Tensor
    c_out: Tensor
    c_skip: Tensor
    c_noise: Tensor


class InnerModel(nn.Module):
    """The network F: (c_in * x (B, 3, H, W), c_noise (B,), frames / sigma_data (B, 4*3, H, W), act (B, 4))
    -> (B, 3, H, W). Noise and action embeddings are summed, then an MLP gives the AdaGroupNorm condition."""

    def __init__(self, cfg: DenoiserConfig, num_actions: int) -> None:
        super().__init__()
        self.noise_emb = FourierFeatures(cfg.cond_channels)
        # the conditioning frames' noise level (`cfg.noise_previous_obs`); at sampling time s_cond's
        self.noise_cond_emb = FourierFeatures(cfg.cond_channels) if cfg.noise_previous_obs else None
        self.sampling_c_noise_cond = math.log(cfg.s_cond) / 4
        self.act_emb = nn.Sequential(
            nn.Embedding(num_actions, cfg.cond_channels // cfg.num_steps_conditioning),
            nn.Flatten(),  # (B, T, E) -> (B, T*E), time order
        )
        self.cond_proj = nn.Sequential(
            nn.Linear(cfg.cond_channels, cfg.cond_channels),
            nn.SiLU(),
            nn.Linear(cfg.cond_channels, cfg.cond_channels),
        )
        self.conv_in = conv3x3((cfg.num_steps_conditioning + 1) * cfg.img_channels, cfg.channels[0])
        self.unet = UNet(cfg.cond_channels, list(cfg.depths), list(cfg.channels), list(cfg.attn_depths))
        self.norm_out = GroupNorm(cfg.channels[0])
        self.conv_out = conv3x3(cfg.channels[0], cfg.img_channels)
        nn.init.zeros_(self.conv_out.weight)

    def forward(self, noisy_next_obs: Tensor, c_noise: Tensor, obs: Tensor, act: Tensor,
                c_noise_cond: Tensor | None = None) -> Tensor:
        x = self.conv_in(torch.cat((obs, noisy_next_obs), dim=1))  # conditioning frames first
        return self.trunk(x, self.condition(c_noise, act, c_noise_cond))

    def condition(self, c_noise: Tensor, act: Tensor, c_noise_cond: Tensor | None = None) -> Tensor:
        """c_noise (B,), act (B, 4) -> the condition of every AdaGroupNorm (B, cond_channels). c_noise_cond (B,):
        the conditioning frames' ln(sigma_cond) / 4 with `noise_previous_obs` (None: sampling time's, s_cond)."""
        emb = self.noise_emb(c_noise) + self.act_emb(act)
        if self.noise_cond_emb is not None:
            if c_noise_cond is None:
                c_noise_cond = c_noise.new_full(c_noise.shape, self.sampling_c_noise_cond)
            emb = emb + self.noise_cond_emb(c_noise_cond)
        return self.cond_proj(emb)

    def trunk(self, x: Tensor, cond: Tensor | ScaleShift) -> Tensor:
        """Everything after conv_in: x (B, channels[0], H, W), cond (B, cond_channels) or its precomputed
        `ScaleShift` -> (B, 3, H, W)."""
        x = self.unet(x, cond)
        return self.conv_out(F.silu(self.norm_out(x), inplace=not torch.is_grad_enabled()))  # as ResBlock


class Denoiser(nn.Module):
    """D(x; sigma) = c_skip * x + c_out * F(c_in * x, c_noise, obs / sigma_data, act), EDM (Karras et al. 2022).

    With `cfg.residual`, EDM works on the change from the last conditioning frame `last`:
    D(x; sigma) = last + c_skip * (x - last) + c_out * F(c_in * (x - last), ...). The sampler is unchanged: its
    Euler steps on x are the same steps on x - last.
    """

    def __init__(self, cfg: DenoiserConfig, num_actions: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.inner_model = InnerModel(cfg, num_actions)

    @property
    def device(self) -> torch.device:
        return self.inner_model.noise_emb.weight.device

    def conditioners(self, sigma: Tensor) -> Conditioners:
        """sigma (B,) -> preconditioners. As the reference, the offset noise is folded into sigma everywhere
        (also at sampling time, when none is added): the released weights expect it."""
        sigma = (sigma**2 + self.cfg.sigma_offset_noise**2).sqrt()
        c_in = 1 / (sigma**2 + self.cfg.sigma_data**2).sqrt()
        c_skip = self.cfg.sigma_data**2 / (sigma**2 + self.cfg.sigma_data**2)
        c_out = sigma * c_skip.sqrt()
        c_noise = sigma.log() / 4
        per_pixel = (c.reshape(-1, 1, 1, 1) for c in (c_in, c_out, c_skip))
        return Conditioners(*per_pixel, c_noise=c_noise.reshape(-1))

    def base(self, obs: Tensor) -> Tensor | None:
        """What D denoises relative to: the last conditioning frame (B, 3, H, W) with `cfg.residual`, else None.
        obs (B, 4, 3, H, W) or (B, 12, H, W)."""
        if not self.cfg.residual:
            return None
        return obs[:, -1] if obs.ndim == 5 else obs[:, -self.cfg.img_channels:]

    def network_output(self, noisy_next_obs: Tensor, obs: Tensor, act: Tensor, cs: Conditioners,
                       c_noise_cond: Tensor | None = None) -> Tensor:
        """F for noisy_next_obs (B, 3, H, W), obs (B, 4, 3, H, W) or (B, 12, H, W) in [-1, 1], act (B, 4).
        c_noise_cond (B,): the conditioning frames' noise level in training (`noise_previous_obs`)."""
        base = self.base(obs)
        x = noisy_next_obs if base is None else noisy_next_obs - base
        if obs.ndim == 5:
            obs = obs.flatten(1, 2)
        args = (x * cs.c_in, cs.c_noise, obs / self.cfg.sigma_data, act)
        # F's signature stays the reference's without noise_previous_obs (tests put other networks in its place)
        return self.inner_model(*args) if c_noise_cond is None else self.inner_model(*args, c_noise_cond)

    @torch.no_grad()
    def wrap_output(self, noisy_next_obs: Tensor, output: Tensor, cs: Conditioners, base: Tensor | None = None) -> Tensor:
        """D from F, clamped to [-1, 1] and floored to 8 bits as the reference (diamond.md 8.3); no gradient.
        base: `self.base(obs)`."""
        if base is None:
            return quantize(cs.c_skip * noisy_next_obs + cs.c_out * output)
        return quantize(base + cs.c_skip * (noisy_next_obs - base) + cs.c_out * output)

    @torch.no_grad()
    def denoise(self, noisy_next_obs: Tensor, sigma: Tensor | float, obs: Tensor, act: Tensor) -> Tensor:
        """The reference's denoised estimate of the next frame.

        noisy_next_obs (B, 3, H, W); sigma (B,) or a scalar; obs (B, 4, 3, H, W) in [-1, 1]; act (B, 4) long
        -> (B, 3, H, W) in [-1, 1], quantised to 8 bits.
        """
        # the sampler's sigmas live on the host: copied without waiting for the device
        sigma = torch.as_tensor(sigma, dtype=torch.float32).to(noisy_next_obs.device, non_blocking=True)
        if sigma.ndim == 0:
            sigma = sigma.expand(noisy_next_obs.shape[0])
        cs = self.conditioners(sigma)
        output = self.network_output(noisy_next_obs, obs, act, cs)
        return self.wrap_output(noisy_next_obs, output, cs, self.base(obs))

    def sample_sigma(self, n: int, generator: torch.Generator | None = None,
                     loc: float | None = None, scale: float | None = None) -> Tensor:
        """Training noise levels (n,): log-normal, clipped (diamond.md 1.2); loc and scale default to the
        next frame's (`train_sigma_loc`, `train_sigma_scale`)."""
        c = self.cfg
        loc = c.train_sigma_loc if loc is None else loc
        scale = c.train_sigma_scale if scale is None else scale
        s = torch.randn(n, device=self.device, generator=generator) * scale + loc
        return s.exp().clip(c.train_sigma_min, c.train_sigma_max)

    def apply_noise(self, x: Tensor, sigma: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x (B, C, H, W) + offset noise (sigma_offset_noise, one value per sample and channel) + sigma (B,) *
        N(0, I): the training noise of the next frame, and of the conditioning frames (`noise_obs`)."""
        offset = self.cfg.sigma_offset_noise * torch.randn(*x.shape[:2], 1, 1, device=self.device, generator=generator)
        eps = torch.randn(x.shape, device=self.device, generator=generator)
        return x + offset + eps * sigma.reshape(-1, 1, 1, 1)

    def noise_obs(self, obs: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Training noise on the conditioning frames (`noise_previous_obs`), as the reference's csgo branch: obs
        (B, n*3, H, W) -> (obs + offset noise + sigma_cond * N(0, I), c_noise_cond (B,))."""
        sigma_cond = self.sample_sigma(obs.shape[0], generator, self.cfg.cond_sigma_loc, self.cfg.cond_sigma_scale)
        return self.apply_noise(obs, sigma_cond, generator), sigma_cond.log() / 4

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> Tensor:
        """Mean squared error in F-space over the non-padded targets (EDM's lambda = 1 / c_out^2 weighting).

        batch.obs (B, T, 3, H, W) with T = num_steps_conditioning + 1 + autoregressive steps (6 for Atari).
        Target t >= 4 is conditioned on the 4 frames before it, where frames at index >= 4 are replaced by
        the model's own quantised one-step estimate (made at that step's random sigma), as the reference. With
        `noise_previous_obs`, each target's 4 conditioning frames get fresh noise first (`noise_obs`); with
        `moving_loss_weight` w, the pixels near what moved between the last two real conditioning frames weigh 1 + w
        (`moved_target_weight` v adds v among them where the target moved; `appear_weight` a adds a where the target
        moved away from them; `false_appear_weight` f adds f where the estimate moved away from them and the target
        did not; with `appear_empty_radius` r those two only where the last frame is flat within r pixels, and
        `rest_weight` k adds k where it is not, nothing moved and the target or the estimate changed).
        """
        n = self.cfg.num_steps_conditioning
        num_targets = batch.obs.shape[1] - n
        if num_targets < 1:
            raise ValueError(f"denoiser loss needs more than {n} frames, got {batch.obs.shape[1]}")
        frames = list(batch.obs.unbind(1))
        clean = batch.obs.unbind(1)  # `frames` gets the model's own estimates; what moved is read from the data
        b = frames[0].shape[0]
        loss = batch.obs.new_zeros(())
        for i in range(num_targets):
            obs = torch.cat(frames[i : n + i], dim=1)  # (B, n*3, H, W), time order
            act = batch.act[:, i : n + i]
            c_noise_cond = None
            if self.cfg.noise_previous_obs:
                obs, c_noise_cond = self.noise_obs(obs, generator)
            next_obs = frames[n + i]
            mask = batch.mask[:, n + i].to(next_obs.dtype).reshape(-1, 1, 1, 1)

            sigma = self.sample_sigma(b, generator)
            noisy_next_obs = self.apply_noise(next_obs, sigma, generator)

            cs = self.conditioners(sigma)
            output = self.network_output(noisy_next_obs, obs, act, cs, c_noise_cond)
            base = self.base(obs)
            if base is None:
                target = (next_obs - cs.c_skip * noisy_next_obs) / cs.c_out
            else:
                target = ((next_obs - base) - cs.c_skip * (noisy_next_obs - base)) / cs.c_out
            # mean over the elements of non-padded targets (= F.mse_loss on the masked rows, never NaN)
            num = (mask.sum() * next_obs[0].numel()).clamp(min=1)
            estimate = None
            if i < num_targets - 1 or self.cfg.false_appear_weight or self.cfg.rest_weight:
                estimate = self.wrap_output(noisy_next_obs, output.detach(), cs, base)
            extra = pixel_weights(self.cfg, clean[n + i - 2], clean[n + i - 1], next_obs, estimate)
            weight = mask if extra is None else mask * (1 + extra)
            loss = loss + ((output - target) ** 2 * weight).sum() / num

            if i < num_targets - 1:  # the autoregressive step: condition the next target on our own estimate
                frames[n + i] = estimate
        return loss / num_targets


def pixel_weights(cfg: DenoiserConfig, before: Tensor, last: Tensor, target: Tensor, estimate: Tensor | None
                  ) -> Tensor | None:
    """The extra loss weight of each pixel, (B, 1, H, W), from the last two real conditioning frames, the target and
    the network's own estimate of it (needed only with `false_appear_weight`); None with every option off."""
    if not (cfg.moving_loss_weight or cfg.moved_target_weight or cfg.appear_weight or cfg.false_appear_weight
            or cfg.rest_weight):
        return None
    near = moving_pixels(before, last, cfg.moving_radius)
    extra = cfg.moving_loss_weight * near
    if cfg.moved_target_weight or cfg.appear_weight or cfg.false_appear_weight or cfg.rest_weight:  # read the target
        moved = moving_pixels(last, target)
        away = 1 - near  # where something may appear
        flat = flat_pixels(last, cfg.appear_empty_radius) if cfg.appear_empty_radius else None
        at_rest = away * (1 - flat) if cfg.rest_weight else None  # by an object that did not move
        if flat is not None:
            away = away * flat
        extra = extra + moved * (cfg.moved_target_weight * near + cfg.appear_weight * away)
        drawn = moving_pixels(last, estimate) if cfg.false_appear_weight or cfg.rest_weight else None
        if cfg.false_appear_weight:
            extra = extra + cfg.false_appear_weight * drawn * (1 - moved) * away
        if cfg.rest_weight:
            extra = extra + cfg.rest_weight * torch.maximum(moved, drawn) * at_rest
    return extra


MOVING_THRESHOLD = 0.1  # in [-1, 1]: 13 of 255 levels, above the quantisation and colour noise of real frames


def flat_pixels(frame: Tensor, radius: int) -> Tensor:
    """(B, 3, H, W) frame in [-1, 1] -> (B, 1, H, W) 1.0 where every channel varies by at most MOVING_THRESHOLD over
    the square of `radius` pixels around (nothing drawn there but one colour), else 0.0."""
    size = 2 * radius + 1
    spread = F.max_pool2d(frame, size, stride=1, padding=radius) + F.max_pool2d(-frame, size, stride=1, padding=radius)
    return (spread.amax(1, keepdim=True) <= MOVING_THRESHOLD).to(frame.dtype)


def moving_pixels(before: Tensor, after: Tensor, radius: int = 0) -> Tensor:
    """(B, 3, H, W) frames in [-1, 1] -> (B, 1, H, W) 1.0 within `radius` pixels (a square) of where any channel
    changed by more than MOVING_THRESHOLD (where an object left and where it arrived), else 0.0."""
    moved = ((after - before).abs().amax(1, keepdim=True) > MOVING_THRESHOLD).to(after.dtype)
    return F.max_pool2d(moved, 2 * radius + 1, stride=1, padding=radius) if radius else moved
