"""Aggregate Atari 100k scores the way the literature reports them (rliable, Agarwal et al. 2021).

Input is the shape of the published result files: `{"Game": [score of run 1, score of run 2, ...], ...}`.
Scores become human-normalized scores (HNS) = (score - random) / (human - random), arranged as a
(runs, games) matrix; the aggregates are the mean and median over games of the per-game mean HNS,
the interquartile mean (IQM) of all run x game values, and the number of games above human.
Confidence intervals are stratified bootstrap percentile intervals: runs are resampled with
replacement independently within each game, as rliable's `get_interval_estimates` does.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from training.games import get_game
from weights.errors import NotFound, UserError

DIAMOND_RESULTS = "diamond_atari100k.json"  # DIAMOND's 5 published seeds per game, in training/data/
METRICS = ("mean", "median", "iqm", "superhuman")


@dataclass(frozen=True)
class BootstrapConfig:
    reps: int = 50_000  # rliable's default number of bootstrap replications
    confidence: float = 0.95
    seed: int = 0


def human_normalized(game: str, scores: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """HNS = (score - random) / (human - random) with the standard Atari 100k constants."""
    g = get_game(game)
    rand, human = g.random_score, g.human_score
    return (np.asarray(scores, dtype=np.float64) - rand) / (human - rand)


def load_results(source: str | Path) -> dict[str, list[float]]:
    """Read `{"Game": [score per run, ...]}` from a JSON file; `diamond` gives the shipped published seeds.

    A single number per game is read as one run, and so is the JSON that `dreamarcade eval --game G --json`
    writes (its mean return). Raises NotFound, or UserError naming the file
    and what is wrong with it.
    """
    if str(source).lower() == "diamond":
        text = resources.files("training").joinpath("data", DIAMOND_RESULTS).read_text()
        name = f"training/data/{DIAMOND_RESULTS}"
    else:
        path = Path(source)
        if not path.is_file():
            raise NotFound(f"results file not found: {path}")
        text, name = path.read_text(), str(path)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{name}: not valid JSON ({e.msg} at line {e.lineno})") from None
    try:
        if isinstance(raw, dict) and "game" in raw and "mean_return" in raw:  # one `dreamarcade eval` result
            raw = {str(raw["game"]): [raw["mean_return"]]}
        return validate_results(raw)
    except ValueError as e:
        raise UserError(f"{name}: {e}") from None


def merge_results(parts: Sequence[Mapping[str, Sequence[float]]]) -> dict[str, list[float]]:
    """Runs of one agent from several files: the scores of each game are concatenated, in order."""
    merged: dict[str, list[float]] = {}
    for part in parts:
        for game, scores in part.items():
            merged.setdefault(game, []).extend(scores)
    return validate_results(merged)


def validate_results(raw: object) -> dict[str, list[float]]:
    """Check the `{"Game": [scores]}` shape and canonicalize game names; raises UserError."""
    if not isinstance(raw, Mapping) or not raw:
        raise UserError('expected a JSON object {"Game": [score per run, ...], ...} with at least one game')
    results: dict[str, list[float]] = {}
    for name, scores in raw.items():
        game = get_game(str(name)).name
        if game in results:
            raise UserError(f"game {game} appears twice")
        if isinstance(scores, (int, float)) and not isinstance(scores, bool):
            scores = [scores]
        if (not isinstance(scores, list) or not scores
                or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores)):
            raise UserError(f"{name}: expected a list of numbers (one score per run), got {scores!r}")
        if not all(math.isfinite(s) for s in scores):
            raise UserError(f"{name}: scores must be finite numbers")
        results[game] = [float(s) for s in scores]
    counts = {len(s) for s in results.values()}
    if len(counts) != 1:
        per_game = ", ".join(f"{g}: {len(s)}" for g, s in results.items())
        raise UserError(f"every game needs the same number of runs (got {per_game})")
    return results


def score_matrix(results: Mapping[str, Sequence[float]]) -> tuple[list[str], np.ndarray]:
    """-> (games, HNS matrix (runs, games)) from validated results."""
    games = list(results)
    matrix = np.stack([human_normalized(g, results[g]) for g in games], axis=1)
    return games, matrix


# Aggregate functions of a (runs, games) HNS matrix, as rliable defines them.
def mean_score(hns: np.ndarray) -> float:
    return float(np.mean(np.mean(hns, axis=0)))


def median_score(hns: np.ndarray) -> float:
    return float(np.median(np.mean(hns, axis=0)))


def iqm(hns: np.ndarray) -> float:
    """Mean of the middle 50% of all run x game values (scipy.stats.trim_mean(hns, 0.25, axis=None))."""
    return float(_trim_mean_rows(hns.reshape(1, -1), 0.25)[0])


def superhuman(hns: np.ndarray) -> int:
    """Number of games whose mean HNS over runs is above 1."""
    return int(np.sum(np.mean(hns, axis=0) > 1.0))


def _trim_mean_rows(x: np.ndarray, proportion: float) -> np.ndarray:
    """Trimmed mean of each row of (N, M): scipy's trim_mean cut, int(proportion * M) values off each end."""
    m = x.shape[1]
    cut = int(proportion * m)
    return np.mean(np.sort(x, axis=1)[:, cut:m - cut], axis=1)


# Vectorized versions over a stack of resampled matrices (R, runs, games) -> (R,).
_BATCHED: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda s: s.mean(axis=1).mean(axis=1),
    "median": lambda s: np.median(s.mean(axis=1), axis=1),
    "iqm": lambda s: _trim_mean_rows(s.reshape(s.shape[0], -1), 0.25),
    "superhuman": lambda s: (s.mean(axis=1) > 1.0).sum(axis=1).astype(np.float64),
}
_POINT: dict[str, Callable[[np.ndarray], float]] = {
    "mean": mean_score, "median": median_score, "iqm": iqm, "superhuman": superhuman,
}


def stratified_bootstrap(hns: np.ndarray, cfg: BootstrapConfig = BootstrapConfig(),
                         metrics: Sequence[str] = METRICS, chunk: int = 5_000) -> dict[str, np.ndarray]:
    """Bootstrap replicates (reps,) of each metric: within every game, resample its runs with replacement."""
    runs, games = hns.shape
    rng = np.random.default_rng(cfg.seed)
    out: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    cols = np.arange(games)
    for start in range(0, cfg.reps, chunk):
        n = min(chunk, cfg.reps - start)
        idx = rng.integers(0, runs, size=(n, runs, games))
        sample = hns[idx, cols]  # (n, runs, games): column j drawn only from game j's runs
        for m in metrics:
            out[m].append(_BATCHED[m](sample))
    return {m: np.concatenate(v) for m, v in out.items()}


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided percentile interval of bootstrap replicates (linear interpolation, as numpy/arch)."""
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(replicates, [tail, 100 - tail])
    return float(lo), float(hi)


def aggregate(results: Mapping[str, Sequence[float]], cfg: BootstrapConfig = BootstrapConfig()) -> dict:
    """Summary of `{"Game": [scores]}`: each metric as {"value", "ci": [lo, hi]}, plus per-game detail.

    The JSON-safe dict has keys `mean`, `median`, `iqm`, `superhuman`, `num_games`, `num_runs`,
    `bootstrap` and `games` ({game: {"scores", "mean_score", "hns"}}).
    """
    results = validate_results(dict(results))
    games, hns = score_matrix(results)
    reps = stratified_bootstrap(hns, cfg)
    summary: dict = {}
    for m in METRICS:
        summary[m] = {"value": _POINT[m](hns), "ci": list(percentile_interval(reps[m], cfg.confidence))}
    summary["superhuman"]["value"] = int(summary["superhuman"]["value"])
    summary["num_games"] = len(games)
    summary["num_runs"] = int(hns.shape[0])
    summary["bootstrap"] = {"method": "stratified percentile", "reps": cfg.reps,
                            "confidence": cfg.confidence, "seed": cfg.seed}
    summary["games"] = {
        g: {"scores": results[g], "mean_score": float(np.mean(results[g])), "hns": float(hns[:, i].mean())}
        for i, g in enumerate(games)
    }
    return summary


def plot_aggregates(summaries: Mapping[str, Mapping], path: str | Path) -> Path:
    """Save a PNG comparing agents/runs: one panel per metric, the CI as a bar, the point estimate as a tick.

    `summaries` maps a label (e.g. "my run", "DIAMOND (published)") to an `aggregate(...)` result.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(summaries)
    titles = {"median": "Median HNS", "iqm": "IQM HNS", "mean": "Mean HNS", "superhuman": "Games > human"}
    colors = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(1, len(titles), figsize=(3.2 * len(titles), 0.6 * len(labels) + 1.4), sharey=True)
    for ax, (metric, title) in zip(axes, titles.items()):
        for i, label in enumerate(labels):
            entry = summaries[label][metric]
            lo, hi = entry["ci"]
            ax.barh(i, hi - lo, left=lo, height=0.6, color=colors[i % len(colors)], alpha=0.75)
            ax.plot([entry["value"]] * 2, [i - 0.3, i + 0.3], color="black", linewidth=2)
        if metric != "superhuman":
            ax.axvline(1.0, color="gray", linestyle=":", linewidth=1)  # human level
        ax.set_title(title, fontsize=11)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(labels)), labels)
    axes[0].invert_yaxis()
    fig.suptitle(f"Atari 100k, human-normalized scores ({int(100 * _confidence(summaries))}% stratified bootstrap CIs)",
                 fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _confidence(summaries: Mapping[str, Mapping]) -> float:
    return next(iter(summaries.values()))["bootstrap"]["confidence"]
