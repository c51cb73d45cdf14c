"""Everything `play` checks and loads before a window opens: game, weights, action count, device.

Errors here are one-line UserErrors (the CLI prints them), so a wrong game or wrong weights are
reported before any window appears.
"""
from __future__ import annotations

import sys

import torch

from app.device import resolve_device
from app.player.session import Session
from app.player.sources import DreamSource, Policy, RealSource
from model.precision import PLAY, resolve
from training.games import resolve_game
from weights.errors import UserError

DEFAULT_GAME = "Breakout"




def load_weights(weights: str | None, game: str | None, device: torch.device):
    """-> (agent, game): loads with `weights.load_agent`, and takes the game from the weights when none is given.
    Raises UserError when the weights were trained on another game than the one asked for."""
    from weights import load_agent

    agent = load_agent(weights, game, device)
    trained_on = agent.weights_info.get("game")
    if trained_on:
        trained_on = resolve_game(trained_on)
        if game is None:
            game = trained_on
        elif trained_on != game:
            raise UserError(
                f"the weights {weights or ''} were trained on {trained_on}, not {game}: "
                f"use --game {trained_on}, or weights for {game}".replace("weights  were", "weights were")
            )
    print(f"weights: {agent.weights_info.get('source', weights)}", flush=True)
    return agent, game or DEFAULT_GAME


def check_actions(agent, real: RealSource, weights: str | None) -> None:
    if agent.num_actions != real.num_actions:
        raise UserError(
            f"the weights {weights or ''} have {agent.num_actions} actions but {real.game} has "
            f"{real.num_actions} ({', '.join(real.meanings)}): they were trained on another game; "
            "pass --game with that game".replace("weights  have", "weights have")
        )


def build_session(game: str | None = None, weights: str | None = None, mode: str = "imagine",
                  controller: str | None = "human", device: str | None = None, denoising_steps: int | None = None,
                  horizon: int = 0, precision: str = PLAY, seed: int | None = None, agent=None,
                  sample_rew_end: bool = False, load: bool = True) -> Session:
    """Checks the inputs, loads the weights (unless `agent` is given) and starts a session.

    device: a torch device name, or None for the best one present (app.device).
    precision: a policy of `model.precision`: "auto" (bfloat16 where the device runs it natively), "float32" or
    "bfloat16", for the world model and the agent.
    Without weights (none given and none found offline), real mode with a human or random player still
    works: the agent controller and the dream are then unavailable. controller None: the agent when
    there are weights, else random. load False: no weights at all (real mode).
    """
    game = resolve_game(game) if game else None
    dev = resolve_device(device)
    resolve(precision, dev)  # an unknown policy fails before the weights load
    if agent is None and load:
        try:
            agent, game = load_weights(weights, game, dev)
        except (ConnectionError, FileNotFoundError) as e:
            if weights is not None or mode != "real":
                raise
            if controller == "agent":
                raise type(e)(f"{e}; or play the real game without weights: --controller random") from None
            controller = controller or "random"
            print(f"note: no weights ({e}); the {controller} controller plays the real game", file=sys.stderr)
    controller = controller or ("agent" if agent is not None else "random")
    game = game or DEFAULT_GAME
    real = RealSource(game, seed=seed, context=agent.denoiser.cfg.num_steps_conditioning if agent is not None else 1)
    try:
        dream = policy = None
        if agent is not None:
            check_actions(agent, real, weights)
            agent = agent.to(dev).eval()
            gen = torch.Generator(dev)
            gen.manual_seed(seed if seed is not None else torch.seed())
            dream = DreamSource(agent, denoising_steps=denoising_steps, precision=precision, generator=gen,
                                sample_rew_end=sample_rew_end)
            policy = Policy(agent, generator=torch.Generator().manual_seed(seed if seed is not None else torch.seed()),
                            precision=precision)
        return Session(game, real, dream, policy, mode=mode, controller=controller, horizon=horizon, seed=seed,
                       device=str(dev))
    except BaseException:
        real.close()
        raise


def game_switcher(**options):
    """The game picker's way to start another game: (game, mode, controller) -> Session, with the weights on
    this machine for that game (shipped, or DIAMOND's cached), else the real game with a human or random
    player (nothing is downloaded from inside the window). options: build_session's device, precision, ..."""
    from app.player.picker import local_weights

    def switch(game: str, mode: str, controller: str) -> Session:
        if local_weights(game) is None:
            return build_session(game=game, mode="real", controller="human" if controller == "agent" else controller,
                                 load=False, **options)
        return build_session(game=game, mode=mode, controller=controller, **options)

    return switch
