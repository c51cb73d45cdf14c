"""Test episodes under the Atari 100k protocol: full games, no exploration noise, the policy sampled.

As the reference's final evaluation (diamond.md 3.1 and 4): the test env (no end on life loss, 1-30 random
NOOPs at reset, ALE's 108k-frame cap), the actor-critic's LSTM state zeroed at each episode start, actions
drawn from Categorical(logits) with epsilon 0, raw returns. Several envs play at once with one batched
policy call; episode k is seeded with `seed + k` and draws actions from its own generator, so results do
not depend on how many envs run in parallel. `dreamarcade eval` and training's test and final evaluations
both call `evaluate`, so a run's reported score and `eval`'s on its weights are the same measurement.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from model.pixels import to_float
from training.aggregate import human_normalized
from training.atari_env import make_env
from training.episode_store import Episode, EpisodeStore
from training.games import is_atari_game, resolve_game
from weights.errors import UserError


@torch.no_grad()
def evaluate(agent, game: str, episodes: int = 100, seed: int = 0, num_envs: int = 8, device: str = "cpu",
             max_episode_steps: int | None = None, progress: bool = False, store: EpisodeStore | None = None) -> dict:
    """Play `episodes` test episodes of `game` with `agent.actor_critic` -> JSON-safe results.

    Returns {"game", "episodes", "seed", "returns", "lengths", "truncated", "mean_return", "std_return",
    "hns"}, where hns is the human-normalized score of the mean return (None for a non-Atari game).
    `max_episode_steps` cuts episodes short (for quick checks; the protocol has no such cut). `store`: also
    write every test episode to this EpisodeStore (training measures its world model's test losses on them).
    Raises UserError if the agent's number of actions is not the game's.
    """
    game = resolve_game(game)
    if episodes < 1 or num_envs < 1:
        raise UserError("episodes and num_envs must be at least 1")
    envs = [make_env(game, train=False) for _ in range(min(num_envs, episodes))]
    num_actions = int(envs[0].action_space.n)
    if agent.num_actions != num_actions:
        for env in envs:
            env.close()
        raise UserError(f"the agent has {agent.num_actions} actions but {game} has {num_actions}")
    actor_critic = agent.actor_critic.to(device).eval()
    lstm_dim = actor_critic.lstm.hidden_size
    h = torch.zeros(len(envs), lstm_dim, device=device)
    c = torch.zeros_like(h)

    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=np.int64)
    truncated = np.zeros(episodes, dtype=bool)
    finished = np.zeros(episodes, dtype=bool)
    episode_of: list[int | None] = [None] * len(envs)  # which episode each env is playing
    obs: list[np.ndarray | None] = [None] * len(envs)
    generators = [torch.Generator() for _ in envs]
    played: list[list | None] = [None] * len(envs)  # with a store: each env's (obs, act, rew) of this episode
    next_episode = 0

    def start(i: int) -> None:
        nonlocal next_episode
        if next_episode >= episodes:
            episode_of[i] = None
            return
        k, next_episode = next_episode, next_episode + 1
        obs[i], _ = envs[i].reset(seed=seed + k)
        generators[i].manual_seed(seed * 1_000_003 + k)
        h[i].zero_()  # the actor's memory starts empty in every episode
        c[i].zero_()
        episode_of[i] = k
        played[i] = [] if store is not None else None

    for i in range(len(envs)):
        start(i)
    bar = tqdm(total=episodes, desc=f"{game} test episodes", unit="ep", disable=not progress)
    while any(k is not None for k in episode_of):
        live = [i for i, k in enumerate(episode_of) if k is not None]
        frames = torch.from_numpy(np.stack([obs[i] for i in live])).to(device).permute(0, 3, 1, 2)
        idx = torch.tensor(live, device=device)
        logits, _, (h_live, c_live) = actor_critic(to_float(frames), (h[idx], c[idx]))
        h[idx], c[idx] = h_live, c_live
        probs = torch.softmax(logits.float(), dim=-1).cpu()
        for j, i in enumerate(live):
            k = episode_of[i]
            act = int(torch.multinomial(probs[j], 1, generator=generators[i]))
            if played[i] is not None:
                played[i].append((np.array(obs[i]), act))
            obs[i], rew, term, trunc, _ = envs[i].step(act)
            returns[k] += rew
            lengths[k] += 1
            if played[i] is not None:
                played[i][-1] += (rew,)
            cut = max_episode_steps is not None and lengths[k] >= max_episode_steps
            if term or trunc or cut:
                truncated[k] = bool(trunc or cut) and not term
                if played[i] is not None:
                    store.add(_episode(played[i], obs[i], bool(term)))
                finished[k] = True
                bar.update(1)
                bar.set_postfix(mean_return=f"{returns[finished].mean():.1f}")
                start(i)
    bar.close()
    for env in envs:
        env.close()
    return {
        "game": game,
        "episodes": episodes,
        "seed": seed,
        "returns": returns.tolist(),
        "lengths": lengths.tolist(),
        "truncated": int(truncated.sum()),
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "hns": float(human_normalized(game, returns.mean())) if is_atari_game(game) else None,
    }


def _episode(steps: list[tuple[np.ndarray, int, float]], final_obs: np.ndarray, term: bool) -> Episode:
    """One played test episode (frames HWC uint8) -> Episode (frames CHW); the last step ended or was cut."""
    obs, act, rew = zip(*steps)
    end, trunc = np.zeros(len(act), dtype=np.uint8), np.zeros(len(act), dtype=np.uint8)
    (end if term else trunc)[-1] = 1
    return Episode(obs=np.stack(obs).transpose(0, 3, 1, 2), act=np.array(act), rew=np.array(rew), end=end,
                   trunc=trunc, final_obs=final_obs.transpose(2, 0, 1))


def evaluate_weights(source: str | None, game: str, episodes: int = 100, seed: int = 0, num_envs: int = 8,
                     device: str = "cpu", max_episode_steps: int | None = None, progress: bool = False) -> dict:
    """Load weights (any `--weights` source) for `game` and evaluate them; the result names the source."""
    from weights import load_agent

    game = resolve_game(game)
    agent = load_agent(source, game=game, device=device)
    result = evaluate(agent, game, episodes=episodes, seed=seed, num_envs=num_envs, device=device,
                      max_episode_steps=max_episode_steps, progress=progress)
    return {"weights": source or "default", **result}
