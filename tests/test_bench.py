"""`dreamarcade bench`: one JSON report with every speed figure of DESIGN.md (tiny model: a smoke test)."""
import json

import pytest
import torch

from app.cli import main

KEYS = ("device", "threads", "play_step_ms", "denoiser_train_samples_per_s", "rew_end_train_sequences_per_s",
        "imagination_transitions_per_s", "collect_steps_per_s", "cpu", "torch", "python", "ale_py")


def test_quick_bench_writes_every_figure(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--model", "tiny", "--batch-size", "2", "--threads", "1",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(KEYS) <= set(report)
    assert report["device"] == "cpu" and report["threads"] == 1
    assert report["updates_cuda_graphs"] is False  # captured only on a GPU (the same updates, eager, here)
    play = report["play_step_ms"]
    assert {"float32", "bfloat16", "default"} <= set(play) and play["default"] in play
    assert all(0 < play[k] < 60_000 for k in ("float32", "bfloat16"))
    for key in KEYS[3:7]:
        assert 0 < report[key] < 1e6, key
    cpu = report["cpu_time"]  # the same figures from CPU time (robust to other work on the machine)
    assert set(cpu) == {"play_step_ms", *KEYS[3:6]} and cpu["play_step_ms"]["float32"] > 0
    assert "epoch_s" not in report  # a real training epoch only on a GPU, or when asked
    table = capsys.readouterr().out
    assert "play step, float32" in table and "not comparable" in table  # tiny model: no comparison claimed


def test_epoch_is_a_real_training_epoch_split_by_phase(tmp_path, capsys):
    """`epoch_s` (by default on a GPU; asked for here, tiny model, 1 update per model): the training loop's own
    phase times, scaled to 400 updates, that add up to the total; the run estimate is 1000 such epochs."""
    out = tmp_path / "bench.json"
    assert main(["bench", "--only", "epoch", "--preset", "tiny", "--game", "Catch", "--batch-size", "1",
                 "--epoch-updates", "1", "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    epoch = report["epoch_s"]
    assert set(epoch) == {"total", "collect", "denoiser", "rew_end", "actor_critic", "checkpoint"}
    assert all(v > 0 for v in epoch.values())
    assert epoch["total"] == pytest.approx(sum(v for k, v in epoch.items() if k != "total"), abs=0.05)
    assert report["run_hours_estimate"] == pytest.approx(epoch["total"] * 1000 / 3600, rel=1e-3)
    assert report["epoch_updates"] == 1 and report["epoch_game"] == "Catch" and "play_step_ms" not in report
    assert "atari100k epoch" in capsys.readouterr().out


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    assert main(["bench", "--model", "huge"]) == 2
    assert "unknown model size 'huge'" in capsys.readouterr().err
    assert main(["bench", "--json", str(tmp_path / "missing" / "b.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["bench", "--device", "gpu0"]) == 2
    assert "not a torch device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "--device", "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["bench", "--repeats", "0"], ["bench", "--batch-size", "0"],
                                  ["bench", "--epoch-updates", "0"]])
def test_counts_must_be_positive(argv, capsys):
    assert main(argv) == 2
    assert "at least 1" in capsys.readouterr().err
