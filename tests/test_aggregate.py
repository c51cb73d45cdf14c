"""Aggregates of Atari 100k scores: published numbers, hand-checked inputs, the bootstrap, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from app.cli import main
from training.aggregate import (
    BootstrapConfig, aggregate, human_normalized, iqm, load_results, median_score, mean_score,
    percentile_interval, plot_aggregates, stratified_bootstrap, superhuman,
)


def test_diamond_published_aggregates():
    summary = aggregate(load_results("diamond"))
    assert summary["num_games"] == 26 and summary["num_runs"] == 5
    # The numbers the DIAMOND paper reports for its 5 seeds.
    assert round(summary["mean"]["value"], 2) == 1.46
    assert round(summary["iqm"]["value"], 2) == 0.64
    assert round(summary["median"]["value"], 2) == 0.37
    assert summary["superhuman"]["value"] == 11
    for m in ("mean", "median", "iqm", "superhuman"):
        lo, hi = summary[m]["ci"]
        assert lo <= summary[m]["value"] <= hi
    assert round(summary["games"]["PrivateEye"]["mean_score"], 1) == 114.3


def test_human_normalized_constants():
    assert human_normalized("Pong", -20.7) == pytest.approx(0.0)
    assert human_normalized("Pong", 14.6) == pytest.approx(1.0)
    assert human_normalized("Breakout", [1.7, 30.5, 59.3]) == pytest.approx([0.0, 1.0, 2.0])


def test_hand_made_matrix():
    # 2 runs x 4 games of HNS; per-game means are [0.5, 1.5, 3.0, -1.0].
    hns = np.array([[0.0, 1.0, 2.0, -1.0],
                    [1.0, 2.0, 4.0, -1.0]])
    assert mean_score(hns) == pytest.approx(1.0)
    assert median_score(hns) == pytest.approx(1.0)        # median of [-1, 0.5, 1.5, 3]
    assert superhuman(hns) == 2                           # 1.5 and 3.0
    # 8 values sorted: -1 -1 0 1 | 1 2 2 4 -> drop 2 from each end -> mean(0, 1, 1, 2) = 1.0
    assert iqm(hns) == pytest.approx(1.0)
    # scipy's cut for 10 values: int(0.25 * 10) = 2 off each end -> mean of the middle 6
    assert iqm(np.arange(10.0).reshape(2, 5)) == pytest.approx(np.mean(np.arange(2, 8)))


def test_bootstrap_with_one_run_has_no_spread():
    hns = np.array([[0.2, 0.4, 1.6]])
    reps = stratified_bootstrap(hns, BootstrapConfig(reps=100))
    for m in ("mean", "median", "iqm", "superhuman"):
        assert np.ptp(reps[m]) == 0.0


def test_bootstrap_matches_a_plain_loop():
    """The vectorized stratified bootstrap draws the same replicates as a per-game loop on the same stream."""
    rng = np.random.default_rng(3)
    hns = rng.normal(size=(4, 6))
    cfg = BootstrapConfig(reps=64, seed=11)
    fast = stratified_bootstrap(hns, cfg, chunk=64)
    idx = np.random.default_rng(cfg.seed).integers(0, 4, size=(64, 4, 6))
    for r in range(64):
        sample = np.stack([hns[idx[r, :, j], j] for j in range(6)], axis=1)  # resample runs within each game
        assert fast["mean"][r] == pytest.approx(mean_score(sample))
        assert fast["median"][r] == pytest.approx(median_score(sample))
        assert fast["iqm"][r] == pytest.approx(iqm(sample))
        assert fast["superhuman"][r] == superhuman(sample)


def test_bootstrap_is_seeded_and_stratified():
    hns = np.array([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0]])
    a = stratified_bootstrap(hns, BootstrapConfig(reps=500, seed=1))
    b = stratified_bootstrap(hns, BootstrapConfig(reps=500, seed=1))
    assert np.array_equal(a["mean"], b["mean"])
    # Runs are drawn within each game, so the mean of game means stays within [min, max] of (0..2 + 10..12)/2.
    assert a["mean"].min() >= 5.0 and a["mean"].max() <= 7.0
    assert percentile_interval(np.arange(101.0), 0.9) == pytest.approx((5.0, 95.0))


def test_bad_results_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"Breakout": [1, 2], "Pong": [3]}')
    with pytest.raises(ValueError, match="same number of runs"):
        load_results(bad)
    bad.write_text('{"Breakout": "high"}')
    with pytest.raises(ValueError, match="list of numbers"):
        load_results(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_results(bad)
    bad.write_text('{"NotAGame": [1]}')
    with pytest.raises(ValueError, match="NotAGame"):
        load_results(bad)
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "missing.json")


def test_single_score_per_game_and_subset():
    results = {"Pong": 14.6, "Breakout": 1.7}
    summary = aggregate(results, BootstrapConfig(reps=100))
    assert summary["num_games"] == 2 and summary["num_runs"] == 1
    assert summary["mean"]["value"] == pytest.approx(0.5)
    assert summary["mean"]["ci"] == pytest.approx([0.5, 0.5])


def test_plot_draws_each_result_set_in_each_panel(tmp_path):
    import imageio.v3 as iio

    summary = aggregate(load_results("diamond"), BootstrapConfig(reps=200))
    path = plot_aggregates({"DIAMOND": summary, "other": summary}, tmp_path / "plot.png")
    img = iio.imread(path)[..., :3].astype(int)
    assert img.shape == (312, 1536, 3)  # 4 panels of 3.2 x (0.6 per result set + 1.4) inches at 120 dpi
    # the CI bars: tab10 blue for the first result set, orange for the second, at alpha 0.75 over white
    blue, orange = np.array([87, 153, 199]), np.array([255, 159, 74])
    for panel in np.array_split(img, 4, axis=1):  # median, IQM, mean, games > human
        for color in (blue, orange):
            assert (np.abs(panel - color).max(-1) <= 3).sum() > 20, "a result set's bar is missing from a panel"


def test_cli_aggregate(tmp_path, capsys):
    results = tmp_path / "run.json"
    results.write_text(json.dumps({"Pong": [14.6, -20.7], "Breakout": [30.5, 59.3]}))
    out, plot = tmp_path / "agg.json", tmp_path / "agg.png"
    assert main(["eval", "--aggregate", str(results), "--json", str(out), "--plot", str(plot), "--reps", "500"]) == 0
    summary = json.loads(out.read_text())
    assert set(summary) >= {"mean", "median", "iqm", "superhuman"}
    assert summary["mean"]["value"] == pytest.approx(1.0)  # game means 0.5 and 1.5
    assert summary["superhuman"]["value"] == 1
    assert len(summary["iqm"]["ci"]) == 2
    assert plot.is_file()
    text = capsys.readouterr().out
    assert "IQM" in text and "Breakout" in text


def test_cli_aggregate_bad_file(tmp_path, capsys):
    assert main(["eval", "--aggregate", str(tmp_path / "nope.json")]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_merges_eval_outputs(tmp_path, capsys):
    """`eval --game G --seed S --json` outputs of one agent aggregate as its runs."""
    files = []
    for game, seed, mean in (("Pong", 0, 14.6), ("Pong", 1, -20.7), ("Breakout", 0, 59.3), ("Breakout", 1, 1.7)):
        f = tmp_path / f"{game}_{seed}.json"
        f.write_text(json.dumps({"game": game, "seed": seed, "returns": [mean], "mean_return": mean}))
        files.append(str(f))
    out, plot = tmp_path / "agg.json", tmp_path / "agg.png"
    assert main(["eval", "--aggregate", *files, "--json", str(out), "--plot", str(plot), "--reps", "200"]) == 0
    summary = json.loads(out.read_text())
    assert summary["num_runs"] == 2 and summary["games"]["Pong"]["scores"] == [14.6, -20.7]
    assert summary["mean"]["value"] == pytest.approx(0.75)  # game means 0.5 and 1.0
    assert plot.is_file()
    assert "DIAMOND" in capsys.readouterr().out  # the per-game table shows DIAMOND's score beside ours


def test_confidence_intervals_match_rliable():
    """rliable 1.2.0 (get_interval_estimates, 50,000 reps, np.random.seed(0)) on DIAMOND's published seeds gives
    mean [1.3578, 1.5675], median [0.3094, 0.4896], IQM [0.5779, 0.7082]; ours differ by Monte Carlo noise only."""
    summary = aggregate(load_results("diamond"), BootstrapConfig(reps=50_000, seed=0))
    assert summary["mean"]["ci"] == pytest.approx([1.3578, 1.5675], abs=5e-3)
    assert summary["median"]["ci"] == pytest.approx([0.3094, 0.4896], abs=5e-3)
    assert summary["iqm"]["ci"] == pytest.approx([0.5779, 0.7082], abs=5e-3)
