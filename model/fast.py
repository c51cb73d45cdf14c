"""The fast inference path of the world model and the actor: the same modules run on weights converted to
channels-last bfloat16 (where the hardware has it), with no repeated work across the denoising steps of a frame.

Nothing here defines a network: each fast part runs its module's own forward (or parts of it: `InnerModel.trunk`,
`RewEndModel.encode`) on a converted copy, only giving it inputs computed ahead.
- Weights are converted once (to `dtype`, 4-D ones channels-last) and converted again only when the source
  module's parameters change (an optimizer step, `load_state_dict`, a move to another device).
- Across the NFEs of one frame the conditioning frames and actions are the same: the conditioning frames' part
  of `conv_in` and every AdaGroupNorm's scale and shift (for all the sigmas of the schedule, in one float32
  matmul) are computed once per frame (`FastDenoiser.context`) and given to the blocks as a `ScaleShift`.
- The noisy frame, the preconditioners, the 8-bit quantisation of D, the conditioning vectors and the reward/end
  LSTM and heads stay in float32 (on the source modules).

`WorldModelEnv(precision="bfloat16")` uses this path; `precision="float32"` keeps the exact module path.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.blocks import AdaGroupNorm, ScaleShift
from model.pixels import quantize

CL = torch.channels_last


def weights_version(module: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is modified in place (an optimizer step: `training.optim` bumps the
    version counters that fused AdamW leaves), replaced (`load_state_dict`), moved or cast: what copies made from
    `module` key on (`ConvertedCopy`, the context pool's reward/end burn-in)."""
    return tuple((t.data_ptr(), t._version, t.dtype) for t in (*module.parameters(), *module.buffers()))


class ConvertedCopy:
    """A copy of module for inference in dtype, 4-D weights channels-last, re-made when the source changes.

    `sync()` re-makes it if needed and returns whether it did; `module` is the copy, `key` the source version it
    was made from."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        self.source, self.dtype = module, dtype
        self.module: nn.Module | None = None
        self.key: tuple | None = None

    def sync(self) -> bool:
        key = weights_version(self.source)
        if key == self.key:
            return False
        m = copy.deepcopy(self.source).to(dtype=self.dtype).to(memory_format=CL).eval()
        self.module, self.key = m.requires_grad_(False), key
        return True


class Conditioner:
    """Every AdaGroupNorm linear of `source`, stacked (float32) into one: `__call__(cond (N, cond_channels))`
    gives all their [1 + scale | shift] in one matmul, as the `ScaleShift` of `target`, a `ConvertedCopy` of
    source (the same layers in the same order)."""

    def __init__(self, source: nn.Module, target: nn.Module, dtype: torch.dtype) -> None:
        pairs = [(s, t) for s, t in zip(source.modules(), target.modules()) if isinstance(s, AdaGroupNorm)]
        self.offsets, off = {}, 0
        for s, t in pairs:
            self.offsets[t] = off
            off += 2 * s.channels
        self.weight = torch.cat([s.linear.weight.detach() for s, _ in pairs]).float()
        ones = [torch.cat((torch.ones(s.channels), torch.zeros(s.channels))) for s, _ in pairs]
        self.bias = (torch.cat([s.linear.bias.detach() for s, _ in pairs]).float()
                     + torch.cat(ones).to(self.weight.device))  # folds the "1 +" of x * (1 + scale)
        self.dtype = dtype

    def __call__(self, cond: Tensor) -> ScaleShift:
        return ScaleShift(torch.addmm(self.bias, cond.float(), self.weight.t()).to(self.dtype), self.offsets)


class FastActorCritic:
    """`agent.actor_critic` for acting (no gradient): obs (B, 3, H, W), state (h, c) float32 or None
    -> (logits (B, A), value (B,), state), all float32."""

    def __init__(self, actor_critic: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        self.net = ConvertedCopy(actor_critic, dtype)
        self.dtype = dtype

    @torch.no_grad()
    def __call__(self, obs: Tensor, state: tuple[Tensor, Tensor] | None = None):
        self.net.sync()
        if state is not None:
            state = tuple(s.to(self.dtype) for s in state)
        logits, value, (h, c) = self.net.module(obs.to(self.dtype).contiguous(memory_format=CL), state)
        return logits.float(), value.float(), (h.float(), c.float())


def lstm_steps(lstm: nn.LSTM, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """`lstm(x, state)` (one layer, batch_first) computed one step at a time with `torch.lstm_cell` on its own
    parameters: the same function, but oneDNN's nn.LSTM re-packs its weights at every call (8.9 vs 2.4 ms per
    step at batch 1 on a Xeon) and plain kernels are what a CUDA graph captures.
    x (B, T, D), state ((1, B, H), (1, B, H)) or None -> (outputs (B, T, H), state), in x's dtype."""
    if lstm.num_layers != 1 or lstm.bidirectional or lstm.proj_size or not lstm.batch_first:
        raise ValueError("lstm_steps runs one-layer, unidirectional, batch-first LSTMs without projection")
    b, t = x.shape[:2]
    if state is None:
        h = c = x.new_zeros(b, lstm.hidden_size)
    else:
        h, c = (s[0].to(x.dtype) for s in state)
    weights = (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
    outputs = []
    for i in range(t):
        h, c = torch.lstm_cell(x[:, i], (h, c), *weights)
        outputs.append(h)
    return torch.stack(outputs, dim=1), (h[None], c[None])


class FastRewEnd:
    """`agent.rew_end` for imagination (no gradient), same signature; outputs and state in float32.

    The encoder runs on the converted copy with its conditioning from one float32 matmul; the LSTM and the heads
    run in float32 on the source module's weights (`lstm_steps`)."""

    def __init__(self, rew_end: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        self.source, self.dtype = rew_end, dtype
        self.net = ConvertedCopy(rew_end, dtype)

    def sync(self) -> tuple:
        """Converts the weights again if the source's changed; -> the version converted."""
        if self.net.sync():
            self.conditioner = Conditioner(self.source, self.net.module, self.dtype)
        return self.net.key

    @torch.no_grad()
    def __call__(self, obs: Tensor, act: Tensor, next_obs: Tensor, state: tuple[Tensor, Tensor] | None = None):
        self.sync()
        src = self.source
        b, t = act.shape
        ss = self.conditioner(src.act_emb(act.reshape(b * t)))
        x = self.net.module.encode(obs.to(self.dtype), next_obs.to(self.dtype), ss).float()
        x, state = lstm_steps(src.lstm, x, state)
        return (*src.heads(x), state)


class FastDenoiser:
    """The denoiser's network in dtype and channels-last, with the per-frame work done once.

    `context(obs, act, sigmas)` returns an object with the `denoise(x, sigma, obs, act)` of `model.Denoiser`
    (what `model.sampler.sample_next_obs` calls) for that obs/act and any sigma of the schedule.
    """

    def __init__(self, denoiser: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        self.denoiser, self.dtype = denoiser, dtype
        self.net = ConvertedCopy(denoiser.inner_model, dtype)

    def sync(self) -> tuple:
        """Converts the weights again if the source's changed; -> the version converted."""
        if self.net.sync():
            inner = self.net.module
            self.conditioner = Conditioner(self.denoiser.inner_model, inner, self.dtype)
            # conv_in sees [conditioning frames | noisy frame] (InnerModel.forward): split its weight accordingly
            n_obs = inner.conv_in.in_channels - self.denoiser.cfg.img_channels
            self.conv_in_obs = inner.conv_in.weight[:, :n_obs].contiguous(memory_format=CL)
            self.conv_in_x = inner.conv_in.weight[:, n_obs:].contiguous(memory_format=CL)
            self._schedules: dict[tuple, tuple] = {}
        return self.net.key

    @torch.no_grad()
    def schedule(self, sigmas: Tensor, device: torch.device) -> tuple[tuple[float, ...], object]:
        """The sigma-only work of a schedule, cached: (its nonzero levels as floats, their preconditioners).
        Once cached, no host-device transfer (so a CUDA graph can capture a frame)."""
        key = (tuple(float(s) for s in sigmas.tolist() if s > 0), torch.device(device))
        if key not in self._schedules:
            levels = torch.tensor(key[0], dtype=torch.float32, device=device)
            self._schedules[key] = (key[0], self.denoiser.conditioners(levels))
        return self._schedules[key]

    @torch.no_grad()
    def context(self, obs: Tensor, act: Tensor, sigmas: Tensor) -> "DenoiserContext":
        """obs (B, n, 3, H, W) or (B, n*3, H, W) in [-1, 1], act (B, n), sigmas: the schedule (`karras_sigmas`)."""
        self.sync()
        return DenoiserContext(self, obs, act, sigmas)


class DenoiserContext:
    """One frame's precomputed conditioning. `denoise(x, sigma, obs, act)` is `model.Denoiser.denoise` for the obs
    and act this context was made with, which must be the ones given (others raise ValueError: make a context
    for them), and a sigma of its schedule."""

    def __init__(self, fast: FastDenoiser, obs: Tensor, act: Tensor, sigmas: Tensor) -> None:
        den, src, dt = fast.denoiser, fast.denoiser.inner_model, fast.dtype
        self.fast, self.obs, self.act = fast, obs, act
        frames = obs.flatten(1, 2) if obs.ndim == 5 else obs
        b = frames.shape[0]
        base = den.base(frames)  # residual denoisers: the last frame, which D's input and output are relative to
        self.base = None if base is None else base.float()
        frames = (frames / den.cfg.sigma_data).to(dt).contiguous(memory_format=CL)
        conv_in = fast.net.module.conv_in
        # the conditioning frames' part of conv_in
        self.obs_features = F.conv2d(frames, fast.conv_in_obs, conv_in.bias, conv_in.stride, conv_in.padding)

        levels, cs = fast.schedule(sigmas, frames.device)
        self.sigma_index = {s: i for i, s in enumerate(levels)}
        self.c_in, self.c_out, self.c_skip = cs.c_in, cs.c_out, cs.c_skip  # (N, 1, 1, 1)
        # the condition of every (sigma, sample), sigma-major, then every AdaGroupNorm's [1 + scale | shift]
        n = len(levels)
        cond = src.condition(cs.c_noise[:, None].expand(n, b).reshape(-1), act.to(frames.device).repeat(n, 1))
        ss = fast.conditioner(cond)
        self.scale_shift = [ScaleShift(v, ss.offsets) for v in ss.values.reshape(n, b, -1)]

    @torch.no_grad()
    def denoise(self, x: Tensor, sigma: Tensor | float, obs: Tensor, act: Tensor) -> Tensor:
        """x (B, 3, H, W) float32 at noise level sigma (one of the schedule's) -> D (B, 3, H, W), quantised."""
        if obs is not self.obs or act is not self.act:
            raise ValueError("this denoiser context was made for other obs and act: make one for them "
                             "(FastDenoiser.context(obs, act, sigmas))")
        s = float(sigma.reshape(-1)[0]) if isinstance(sigma, Tensor) else float(sigma)
        if s not in self.sigma_index:
            raise ValueError(f"sigma {s} is not in this context's schedule {list(self.sigma_index)}")
        i = self.sigma_index[s]
        net = self.fast.net.module
        if self.base is not None:
            x = x - self.base
        h = (x * self.c_in[i]).to(self.fast.dtype).contiguous(memory_format=CL)
        h = F.conv2d(h, self.fast.conv_in_x, None, net.conv_in.stride, net.conv_in.padding).add_(self.obs_features)
        out = net.trunk(h, self.scale_shift[i]).float()
        d = self.c_skip[i] * x + self.c_out[i] * out
        return quantize(d if self.base is None else d + self.base)


class FastAgent:
    """The fast path of an agent's three networks for inference (`WorldModelEnv(precision="bfloat16")`):
    `.denoiser` (FastDenoiser), `.rew_end` (FastRewEnd), `.actor_critic` (FastActorCritic)."""

    def __init__(self, agent: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        self.dtype = dtype
        self.denoiser = FastDenoiser(agent.denoiser, dtype)
        self.rew_end = FastRewEnd(agent.rew_end, dtype)
        self.actor_critic = FastActorCritic(agent.actor_critic, dtype)
