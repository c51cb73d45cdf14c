"""The fast inference path of the world model and the actor: channels-last, bfloat16 weights where the hardware
has them, and no repeated work across the denoising steps of one frame.

Same networks, same number of steps: only how the work is done changes.
- Weights are converted once (to `dtype`, 4-D ones channels-last) and converted again only when the source
  module's parameters change (an optimizer step, `load_state_dict`, a move to another device).
- Across the NFEs of one frame the conditioning frames and actions are the same: the conditioning frames' part
  of `conv_in` and every AdaGroupNorm's scale and shift (for all the sigmas of the schedule, in one matmul) are
  computed once per frame (`FastDenoiser.context`).
- The noisy frame, the preconditioners and the 8-bit quantisation of D stay in float32.

`WorldModelEnv(precision="bfloat16")` uses this path; `precision="float32"` keeps the exact module path.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.blocks import AdaGroupNorm, Downsample, GroupNorm, ResBlock, ResBlocks, SelfAttention2d
from model.pixels import quantize

CL = torch.channels_last


def bf16_supported(device: torch.device | str) -> bool:
    """True where bfloat16 matmuls/convs run natively: CUDA with bf16, or a CPU with AVX512-BF16 or AMX."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                    or getattr(cpu, "_is_amx_tile_supported", lambda: False)())
    return False


def default_precision(device: torch.device | str) -> str:
    """The world-model precision `play` should use on device: "bfloat16" where it is native, else "float32"."""
    return "bfloat16" if bf16_supported(device) else "float32"


def _fingerprint(module: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is modified in place, replaced or moved."""
    return tuple((t.data_ptr(), t._version, t.dtype) for t in (*module.parameters(), *module.buffers()))


class ConvertedCopy:
    """A copy of module in dtype and channels-last, for inference, re-made when the source changes."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        self.source, self.dtype = module, dtype
        self._copy: nn.Module | None = None
        self._key: tuple | None = None

    def get(self) -> nn.Module:
        key = _fingerprint(self.source)
        if key != self._key:
            m = copy.deepcopy(self.source).to(dtype=self.dtype).to(memory_format=CL).eval()
            self._copy = m.requires_grad_(False)
            self._key = key
        return self._copy


class FastActorCritic:
    """`agent.actor_critic` for acting (no gradient): obs (B, 3, H, W), state (h, c) float32 or None
    -> (logits (B, A), value (B,), state), all float32."""

    def __init__(self, actor_critic: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        self.module = ConvertedCopy(actor_critic, dtype)
        self.dtype = dtype

    @torch.no_grad()
    def __call__(self, obs: Tensor, state: tuple[Tensor, Tensor] | None = None):
        m = self.module.get()
        if state is not None:
            state = tuple(s.to(self.dtype) for s in state)
        logits, value, (h, c) = m(obs.to(self.dtype).contiguous(memory_format=CL), state)
        return logits.float(), value.float(), (h.float(), c.float())


class _Functional:
    """Blocks of `model.blocks` evaluated functionally on weights converted to dtype (4-D ones channels-last),
    converted again when the source module changes. Every AdaGroupNorm's [scale | shift] linear is stacked
    into one: `conditioning(cond)` gives all of them, for a batch of conditions, in one matmul."""

    def __init__(self, source: nn.Module, root: nn.Module, dtype: torch.dtype) -> None:
        self.source, self.root, self.dtype = source, root, dtype
        self._key: tuple | None = None

    def _sync(self) -> None:
        key = _fingerprint(self.source)
        if key != self._key:
            self._convert()
            self._key = key

    def _convert(self) -> None:
        dt = self.dtype
        self._w: dict[nn.Module, tuple] = {}
        for m in self.root.modules():
            if isinstance(m, nn.Conv2d):
                self._w[m] = (m.weight.detach().to(dt).contiguous(memory_format=CL), m.bias.detach().to(dt))
            elif isinstance(m, (nn.GroupNorm, nn.Linear)) and not isinstance(m, AdaGroupNorm):
                self._w[m] = (m.weight.detach().to(dt), None if m.bias is None else m.bias.detach().to(dt))
        adas = [m for m in self.root.modules() if isinstance(m, AdaGroupNorm)]
        self._ada_offset, off, ones = {}, 0, []
        for m in adas:
            self._ada_offset[m] = off
            off += 2 * m.channels
            ones.append(torch.cat((torch.ones(m.channels), torch.zeros(m.channels))))
        self._ada_w = torch.cat([m.linear.weight.detach() for m in adas]).float()
        self._ada_b = (torch.cat([m.linear.bias.detach() for m in adas]).float()
                       + torch.cat(ones).to(self._ada_w.device))  # folds the "1 +" of x * (1 + scale)

    def conditioning(self, cond: Tensor) -> Tensor:
        """cond (N, cond_dim) -> (N, S): every AdaGroupNorm's [1 + scale | shift], in dtype."""
        return torch.addmm(self._ada_b, cond.float(), self._ada_w.t()).to(self.dtype)

    def conv(self, m: nn.Conv2d, x: Tensor) -> Tensor:
        w, b = self._w[m]
        return F.conv2d(x, w, b, m.stride, m.padding)

    def linear(self, m: nn.Linear, x: Tensor) -> Tensor:
        return F.linear(x, *self._w[m])

    def group_norm(self, m: GroupNorm, x: Tensor) -> Tensor:
        w, b = self._w[m.norm]
        return F.group_norm(x, m.norm.num_groups, w, b, m.norm.eps)

    def ada_norm(self, m: AdaGroupNorm, x: Tensor, ss: Tensor) -> Tensor:
        """ss (B, S): the `conditioning` of x's samples."""
        off = self._ada_offset[m]
        scale, shift = ss[:, off : off + m.channels], ss[:, off + m.channels : off + 2 * m.channels]
        if x.shape[0] == 1:  # a per-sample affine is a per-channel one: let group_norm apply it
            return F.group_norm(x, m.groups, scale[0], shift[0], 1e-5)
        x = F.group_norm(x, m.groups, eps=1e-5)
        return torch.addcmul(shift[:, :, None, None], x, scale[:, :, None, None])

    def resblock(self, m: ResBlock, x: Tensor, ss: Tensor) -> Tensor:
        r = x if isinstance(m.proj, nn.Identity) else self.conv(m.proj, x)
        x = self.conv(m.conv1, F.silu(self.ada_norm(m.norm1, x, ss), inplace=True))
        x = self.conv(m.conv2, F.silu(self.ada_norm(m.norm2, x, ss), inplace=True)).add_(r)
        return x if isinstance(m.attn, nn.Identity) else self.attention(m.attn, x)

    def attention(self, m: SelfAttention2d, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        x = self.group_norm(m.norm, x)
        qkv = self.conv(m.qkv_proj, x).reshape(b, 3 * m.n_head, c // m.n_head, h * w).transpose(2, 3)
        q, k, v = qkv.chunk(3, dim=1)
        y = F.scaled_dot_product_attention(q, k, v).transpose(2, 3).reshape(b, c, h, w)
        return x + self.conv(m.out_proj, y.contiguous(memory_format=CL))

    def resblocks(self, m: ResBlocks, x: Tensor, ss: Tensor, to_cat: list[Tensor] | None = None):
        outputs = []
        for i, block in enumerate(m.resblocks):
            if to_cat is not None:
                x = torch.cat((x, to_cat[i]), dim=1)
            x = self.resblock(block, x, ss)
            outputs.append(x)
        return x, outputs


class FastRewEnd(_Functional):
    """`agent.rew_end` for imagination (no gradient), same signature; outputs and state in float32.

    The LSTM runs as matmuls (the input projection of all T steps in one), with the gate arithmetic and the
    state in float32: oneDNN's bfloat16 LSTM re-packs its weights at every call."""

    def __init__(self, rew_end: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__(rew_end, rew_end, dtype)

    def _convert(self) -> None:
        super()._convert()
        lstm, dt = self.root.lstm, self.dtype
        self._lstm_ih = (lstm.weight_ih_l0.detach().to(dt), (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().to(dt))
        self._lstm_hh = lstm.weight_hh_l0.detach().to(dt)

    @torch.no_grad()
    def __call__(self, obs: Tensor, act: Tensor, next_obs: Tensor, state: tuple[Tensor, Tensor] | None = None):
        self._sync()
        m, enc = self.root, self.root.encoder
        b, t = act.shape
        x = torch.cat((obs.flatten(0, 1), next_obs.flatten(0, 1)), dim=1).to(self.dtype).contiguous(memory_format=CL)
        ss = self.conditioning(m.act_emb(act.reshape(b * t)))
        x = self.conv(enc.conv_in, x)
        for block, down in zip(enc.blocks, enc.downsamples):
            x, _ = self.resblocks(block, self.conv(down.conv, x) if isinstance(down, Downsample) else x, ss)
        x = x.reshape(b, t, -1)
        gates_x = F.linear(x, *self._lstm_ih).float()  # (B, T, 4 H)
        if state is None:
            h = c = x.new_zeros(b, m.lstm.hidden_size, dtype=torch.float32)
        else:
            h, c = (s[0].float() for s in state)
        outputs = []
        for i in range(t):  # PyTorch's gate order: input, forget, cell, output
            gates = gates_x[:, i] + F.linear(h.to(self.dtype), self._lstm_hh).float()
            g_i, g_f, g_c, g_o = gates.chunk(4, dim=1)
            c = torch.sigmoid(g_f) * c + torch.sigmoid(g_i) * torch.tanh(g_c)
            h = torch.sigmoid(g_o) * torch.tanh(c)
            outputs.append(h)
        x = torch.stack(outputs, dim=1).to(self.dtype)
        logits = self.linear(m.head[2], F.silu(self.linear(m.head[0], x))).float()
        return logits[..., :3], logits[..., 3:], (h[None], c[None])


class FastDenoiser(_Functional):
    """The denoiser's network evaluated in dtype and channels-last, with the per-frame work done once.

    `context(obs, act, sigmas)` returns an object with the `denoise(x, sigma, obs, act)` of `model.Denoiser`
    (what `model.sampler.sample_next_obs` calls) for that obs/act and any sigma of the schedule.
    """

    def __init__(self, denoiser: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__(denoiser, denoiser.inner_model, dtype)
        self.denoiser = denoiser

    def _convert(self) -> None:
        super()._convert()
        self._schedules: dict[tuple, tuple] = {}
        inner = self.root
        n_obs = inner.conv_in.in_channels - self.denoiser.cfg.img_channels
        w, b = self._w[inner.conv_in]
        self._conv_in_obs = (w[:, :n_obs].contiguous(memory_format=CL), b)
        self._conv_in_x = w[:, n_obs:].contiguous(memory_format=CL)

    @torch.no_grad()
    def schedule(self, sigmas: Tensor, device: torch.device) -> tuple[tuple[float, ...], Tensor, object]:
        """The sigma-only work of a schedule, cached: (its nonzero levels as floats, noise embeddings (N, D),
        preconditioners). Once cached, no host-device synchronisation (so a CUDA graph can capture a frame)."""
        key = (tuple(float(s) for s in sigmas.tolist() if s > 0), torch.device(device))
        if key not in self._schedules:
            levels = torch.tensor(key[0], dtype=torch.float32, device=device)
            cs = self.denoiser.conditioners(levels)
            self._schedules[key] = (key[0], self.root.noise_emb(cs.c_noise), cs)
        return self._schedules[key]

    @torch.no_grad()
    def context(self, obs: Tensor, act: Tensor, sigmas: Tensor) -> "DenoiserContext":
        """obs (B, n, 3, H, W) or (B, n*3, H, W) in [-1, 1], act (B, n), sigmas: the schedule (`karras_sigmas`)."""
        self._sync()
        return DenoiserContext(self, obs, act, sigmas)

    def unet(self, x: Tensor, ss: Tensor) -> Tensor:
        u = self.root.unet
        h, w = x.shape[-2:]
        mult = 2**u.num_down
        if -h % mult or -w % mult:
            x = F.pad(x, (0, -w % mult, 0, -h % mult))
        skips = []
        for block, down in zip(u.d_blocks, u.downsamples):
            x_down = self.conv(down.conv, x) if isinstance(down, Downsample) else x
            x, outputs = self.resblocks(block, x_down, ss)
            skips.append([x_down, *outputs])
        x, _ = self.resblocks(u.mid_blocks, x, ss)
        for block, up, level_skips in zip(u.u_blocks, u.upsamples, reversed(skips)):
            if not isinstance(up, nn.Identity):
                x = self.conv(up.conv, F.interpolate(x, scale_factor=2.0, mode="nearest"))
            x, _ = self.resblocks(block, x, ss, level_skips[::-1])
        return x[..., :h, :w]


class DenoiserContext:
    """One frame's precomputed conditioning; `denoise` as `model.Denoiser.denoise` (obs and act are ignored:
    they are the ones given to `FastDenoiser.context`)."""

    def __init__(self, fast: FastDenoiser, obs: Tensor, act: Tensor, sigmas: Tensor) -> None:
        den, inner, dt = fast.denoiser, fast.denoiser.inner_model, fast.dtype
        self.fast = fast
        if obs.ndim == 5:
            obs = obs.flatten(1, 2)
        b = obs.shape[0]
        obs = (obs / den.cfg.sigma_data).to(dt).contiguous(memory_format=CL)
        w, bias = fast._conv_in_obs
        self.obs_features = F.conv2d(obs, w, bias, padding=1)  # the conditioning frames' part of conv_in

        levels, noise_emb, cs = fast.schedule(sigmas, obs.device)
        self.sigma_index = {s: i for i, s in enumerate(levels)}
        self.c_in, self.c_out, self.c_skip = cs.c_in, cs.c_out, cs.c_skip  # (N, 1, 1, 1)
        # the conditioning vector of every (sigma, sample), then every AdaGroupNorm's [1 + scale | shift]
        act_emb = inner.act_emb(act.to(obs.device))  # (B, D)
        cond = inner.cond_proj((noise_emb[:, None] + act_emb[None]).flatten(0, 1))  # (N * B, D)
        self.ss = fast.conditioning(cond).reshape(len(levels), b, -1)

    @torch.no_grad()
    def denoise(self, x: Tensor, sigma: Tensor | float, obs: Tensor | None = None, act: Tensor | None = None) -> Tensor:
        """x (B, 3, H, W) float32 at noise level sigma (one of the schedule's) -> D (B, 3, H, W), quantised."""
        s = float(sigma.reshape(-1)[0]) if isinstance(sigma, Tensor) else float(sigma)
        if s not in self.sigma_index:
            raise ValueError(f"sigma {s} is not in this context's schedule {list(self.sigma_index)}")
        i = self.sigma_index[s]
        fast, inner = self.fast, self.fast.denoiser.inner_model
        h = (x * self.c_in[i]).to(fast.dtype).contiguous(memory_format=CL)
        h = F.conv2d(h, fast._conv_in_x, None, padding=1).add_(self.obs_features)
        h = fast.unet(h, self.ss[i])
        h = F.silu(fast.group_norm(inner.norm_out, h), inplace=True)
        out = fast.conv(inner.conv_out, h).float()
        return quantize(self.c_skip[i] * x + self.c_out[i] * out)


class FastAgent:
    """The fast path of an agent's three networks for inference (`WorldModelEnv(precision="bfloat16")`):
    `.denoiser` (FastDenoiser), `.rew_end` (FastRewEnd), `.actor_critic` (FastActorCritic)."""

    def __init__(self, agent: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        self.dtype = dtype
        self.denoiser = FastDenoiser(agent.denoiser, dtype)
        self.rew_end = FastRewEnd(agent.rew_end, dtype)
        self.actor_critic = FastActorCritic(agent.actor_critic, dtype)
