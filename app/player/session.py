"""One play session: the real game, the dream, or both side by side, and who controls them.

`Session` knows nothing of windows or threads: the windowed player runs its methods in a worker
thread, the headless runner calls them in a plain loop, tests call them directly. Every method
returns a `Snapshot`, an immutable picture of the session for the display and the recorders.

Unlike the reference player, switching controller or mode never resets the game: switching from
the real game to the dream continues the same game in the dream (the model is seeded with the last
real frames), and the policy's LSTM state is burned in on the context whenever the frames jump.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch

from app.player.sources import DreamSource, Policy, PolicyOutput, RealSource
from training.fidelity import psnr
from weights.errors import UserError

MODES = ("imagine", "real", "compare")
CONTROLLERS = ("human", "agent", "random")


@dataclass
class Transition:
    """One step of one source, as the episode recorder stores it (obs is the frame *before* act)."""

    source: str  # "real" or "imagine"
    obs: np.ndarray
    act: int
    rew: float
    end: bool
    trunc: bool
    next_obs: np.ndarray


@dataclass(frozen=True)
class Snapshot:
    """What the player shows after a step or a control change."""

    game: str
    mode: str
    controller: str
    panels: tuple[tuple[str, np.ndarray], ...]  # (title, frame (H, W, 3) uint8), left to right
    t: int  # steps in the current episode
    rew: float
    ret: float
    action: int | None
    action_name: str
    value: float | None
    entropy_bits: float | None
    latency_ms: float | None  # world-model step time
    psnr_db: float | None  # compare mode: imagined vs real frame
    psnr_mean_db: float | None  # compare mode: mean PSNR over the steps since the last sync
    horizon: int  # 0: unlimited
    since_sync: int  # imagined steps since the model was seeded with real frames
    denoising_steps: int | None
    precision: str | None  # of the world model: "float32" or "bfloat16"
    device: str = "cpu"  # of the world model and the agent
    message: str = ""  # e.g. "game over: return 12"
    ended: bool = False
    original: np.ndarray | None = None  # full 210x160 real frame (real and compare modes)
    transitions: tuple[Transition, ...] = ()  # the steps this snapshot follows, for the episode recorder
    restarted: frozenset[str] = frozenset()  # sources whose frames jumped (reset or re-sync): episodes cut here


@dataclass
class Session:
    """The game state machine. `dream` and `policy` are None when no weights are loaded (real mode only)."""

    game: str
    real: RealSource
    dream: DreamSource | None = None
    policy: Policy | None = None
    mode: str = "imagine"
    controller: str = "human"
    horizon: int = 0
    seed: int | None = None
    device: str = "cpu"  # where the world model and the agent run, for the HUD
    t: int = 0
    ret: float = 0.0
    since_sync: int = 0
    _last: dict = field(default_factory=dict)
    _pending_reset: bool = False

    def __post_init__(self) -> None:
        self._psnrs: list[float] = []
        self._rng = random.Random(self.seed)
        self._check(self.mode, self.controller)
        self.reset()

    # ---- controls -------------------------------------------------------------------------
    def _check(self, mode: str, controller: str) -> None:
        if mode not in MODES:
            raise UserError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
        if controller not in CONTROLLERS:
            raise UserError(f"unknown controller {controller!r}: choose one of {', '.join(CONTROLLERS)}")
        if mode != "real" and self.dream is None:
            raise UserError(f"{mode} mode needs world-model weights; only real mode works without them")
        if controller == "agent" and self.policy is None:
            raise UserError("the agent controller needs weights")

    @property
    def meanings(self) -> tuple[str, ...]:
        return self.real.meanings

    def reset(self) -> Snapshot:
        """A new game: a real reset, and in imagine/compare mode the model seeded from its first frames."""
        self.real.reset()
        self.t, self.ret, self._pending_reset = 0, 0.0, False
        self._last = {}
        if self.mode == "real":
            if self.policy is not None:
                self.policy.reset()
        else:
            self._sync()
        return self.snapshot(message="new game", restarted=frozenset({"real", "imagine"}))

    def _sync(self) -> None:
        """Seeds the model with the last real frames and burns the policy in on them."""
        obs_ctx, act_ctx = self.real.context()
        self.dream.reset(obs_ctx, act_ctx)
        if self.policy is not None:
            self.policy.burn_in(obs_ctx[:-1])
        self.since_sync = 0
        self._psnrs = []

    def resync(self) -> Snapshot:
        """Compare/imagine: re-seed the model from the real game's last frames (clears the drift)."""
        if self.dream is None:
            return self.snapshot(message="no world model loaded")
        if self.real.done:
            return self.reset()
        self._sync()
        self._last.pop("psnr_db", None)
        return self.snapshot(message="model re-synced to the real game", restarted=frozenset({"imagine"}))

    def set_mode(self, mode: str) -> Snapshot:
        self._check(mode, self.controller)
        old, self.mode = self.mode, mode
        restarted = frozenset()
        if mode != old and mode != "real" and (old == "real" or mode == "compare"):
            if self.real.done:
                return self.reset()
            self._sync()  # the dream continues the real game from where it is
            restarted = frozenset({"imagine"})
        self._last.pop("psnr_db", None)
        return self.snapshot(message=f"mode: {mode}", restarted=restarted)

    def set_controller(self, controller: str) -> Snapshot:
        self._check(self.mode, controller)
        self.controller = controller
        return self.snapshot(message=f"controller: {controller}")

    def set_horizon(self, horizon: int) -> Snapshot:
        self.horizon = max(0, int(horizon))
        return self.snapshot(message=f"horizon: {self.horizon or 'unlimited'}")

    def set_denoising_steps(self, n: int) -> Snapshot:
        if self.dream is not None:
            self.dream.denoising_steps = max(1, int(n))
        return self.snapshot(message=f"denoising steps: {self.denoising_steps}")

    @property
    def denoising_steps(self) -> int | None:
        return None if self.dream is None else self.dream.denoising_steps

    # ---- stepping -------------------------------------------------------------------------
    def _primary_obs(self) -> np.ndarray:
        return self.dream.obs if self.mode == "imagine" else self.real.obs

    def step(self, human_action: int = 0) -> Snapshot:
        """One agent step (4 emulator frames) with the controller's action."""
        if self._pending_reset:
            self.reset()
        out: PolicyOutput | None = self.policy(self._primary_obs()) if self.policy is not None else None
        if self.controller == "agent":
            act = out.action
        elif self.controller == "random":
            act = self._rng.randrange(len(self.meanings))
        else:
            act = int(human_action)
            if not 0 <= act < len(self.meanings):
                raise ValueError(f"action {act} out of range for {self.game} ({len(self.meanings)} actions)")
        self._last = {"action": act, "policy": out}
        message, ended, steps, restarted = "", False, [], frozenset()
        if self.mode in ("real", "compare"):
            before = self.real.obs
            obs, rew, term, trunc = self.real.step(act)
            steps.append(Transition("real", before, act, rew, term, trunc, obs))
            if term or trunc:
                ended, message = True, f"game over: return {self.ret + rew:g}" if term else "time limit reached"
        if self.mode in ("imagine", "compare"):
            before = self.dream.obs
            dream_obs, dream_rew, dream_end = self.dream.step(act)
            self.since_sync += 1
            at_horizon = 0 < self.horizon <= self.since_sync
            if self.mode == "imagine":
                rew = dream_rew
                steps.append(Transition("imagine", before, act, dream_rew, dream_end, at_horizon, dream_obs))
                if dream_end or at_horizon:
                    ended = True
                    message = "the model ended the episode" if dream_end else f"horizon of {self.horizon} steps reached"
            else:
                steps.append(Transition("imagine", before, act, dream_rew, dream_end, at_horizon, dream_obs))
                self._last["psnr_db"] = float(psnr(torch.from_numpy(dream_obs), torch.from_numpy(self.real.obs)))
                self._psnrs.append(self._last["psnr_db"])  # identical frames count as MAX_PSNR (60 dB)
                if at_horizon and not ended:
                    self._sync()
                    message, restarted = "horizon reached: model re-synced", frozenset({"imagine"})
        self.t += 1
        self.ret += rew
        self._last["rew"] = rew
        self._pending_reset = ended
        return self.snapshot(message=message, ended=ended, transitions=tuple(steps), restarted=restarted)

    # ---- display --------------------------------------------------------------------------
    def snapshot(self, message: str = "", ended: bool = False, transitions: tuple[Transition, ...] = (),
                 restarted: frozenset[str] = frozenset()) -> Snapshot:
        if self.mode == "imagine":
            panels = (("dream", self.dream.obs),)
        elif self.mode == "real":
            panels = (("real", self.real.obs),)
        else:
            panels = (("dream", self.dream.obs), ("real", self.real.obs))
        out: PolicyOutput | None = self._last.get("policy")
        act = self._last.get("action")
        return Snapshot(
            game=self.game,
            mode=self.mode,
            controller=self.controller,
            panels=panels,
            t=self.t,
            rew=self._last.get("rew", 0.0),
            ret=self.ret,
            action=act,
            action_name=self.meanings[act] if act is not None else "-",
            value=None if out is None else out.value,
            entropy_bits=None if out is None else out.entropy_bits,
            latency_ms=self.dream.latency_ms if self.dream is not None and self.mode != "real" else None,
            psnr_db=self._last.get("psnr_db"),
            psnr_mean_db=sum(self._psnrs) / len(self._psnrs) if self._psnrs and self.mode == "compare" else None,
            horizon=self.horizon,
            since_sync=self.since_sync,
            denoising_steps=self.denoising_steps,
            precision=None if self.dream is None else self.dream.precision,
            device=self.device,
            message=message,
            ended=ended,
            original=self.real.original if self.mode != "imagine" else None,
            transitions=transitions,
            restarted=restarted,
        )

    def close(self) -> None:
        self.real.close()
