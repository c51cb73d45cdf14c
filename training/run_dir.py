"""A training run on disk: config, metrics, learning curves, checkpoints, weights and the `finished` marker.

    RUN/config.json          the TrainConfig and the AgentConfig (JSON)
    RUN/metrics.jsonl        one JSON object per log call: {"epoch": e, "key": value, ...}
    RUN/tensorboard/         the same scalars as TensorBoard event files
    RUN/plots/*.png          learning curves, redrawn at most once a minute and at the end of a session
    RUN/checkpoint.pt        models, optimizers, schedules, counters, RNG states (torch.load weights_only)
    RUN/weights/             the agent in the dreamarcade weights format, after every epoch
    RUN/store/               the episode store (owned by training.episode_store)
    RUN/finished             written when the last epoch is done; a finished run is not started again

Every file that matters is written to a temporary name and renamed, so a crash (kill -9 included) leaves
the previous complete version in place.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from training.tensorboard_log import ScalarWriter
from weights.atomic import atomic_write
from weights.errors import NotFound, UserError


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._tb: ScalarWriter | None = None

    # paths
    config_path = property(lambda self: self.path / "config.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    checkpoint_path = property(lambda self: self.path / "checkpoint.pt")
    weights_path = property(lambda self: self.path / "weights")
    store_path = property(lambda self: self.path / "store")
    plots_path = property(lambda self: self.path / "plots")
    snapshots_path = property(lambda self: self.path / "snapshots")  # `train --keep-weights-every N`
    finished_path = property(lambda self: self.path / "finished")

    # config
    def write_config(self, config: dict) -> None:
        atomic_write(self.config_path, lambda f: f.write(json.dumps(config, indent=2).encode()))

    def read_config(self) -> dict:
        return read_run_config(self.path)

    # metrics
    def log(self, metrics: dict, epoch: int) -> None:
        """Appends one line of metrics (numbers) for `epoch` to the JSONL file and TensorBoard."""
        row = {"epoch": epoch, **{k: float(v) for k, v in metrics.items()}}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is None:
            self._tb = ScalarWriter(self.path / "tensorboard")
        self._tb.add_scalars(metrics, epoch)

    def drop_metrics_after(self, epoch: int | None) -> None:
        """Keeps the metrics rows of epochs up to `epoch` (None: none), rewriting the file atomically: a run
        resumed from the checkpoint of `epoch` logs the later epochs again."""
        rows = self.read_metrics()
        kept = [row for row in rows if epoch is not None and row.get("epoch", 0) <= epoch]
        if len(kept) != len(rows):
            text = "".join(json.dumps(row) + "\n" for row in kept)
            atomic_write(self.metrics_path, lambda f: f.write(text.encode()))

    def read_metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line cut by a crash
        return rows

    def plot(self) -> list[Path]:
        """Draws one PNG per metric group (`denoiser/...`, `actor_critic/...`, ...) against the epoch."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        series: dict[str, dict[str, tuple[list, list]]] = {}
        for row in self.read_metrics():
            for key, value in row.items():
                if key == "epoch" or not isinstance(value, (int, float)) or not math.isfinite(value):
                    continue
                group = key.split("/")[0]
                xs, ys = series.setdefault(group, {}).setdefault(key, ([], []))
                xs.append(row["epoch"])
                ys.append(value)
        self.plots_path.mkdir(exist_ok=True)
        written = []
        for group, curves in series.items():
            fig, axes = plt.subplots(len(curves), 1, figsize=(7, 2.2 * len(curves)), squeeze=False, sharex=True)
            for ax, (key, (xs, ys)) in zip(axes[:, 0], sorted(curves.items())):
                ax.plot(xs, ys, marker="." if len(xs) < 50 else None)
                ax.set_ylabel(key.split("/", 1)[-1], fontsize=8)
                ax.grid(alpha=0.3)
            axes[0, 0].set_title(group)
            axes[-1, 0].set_xlabel("epoch")
            fig.tight_layout()
            out = self.plots_path / f"{group}.png"
            fig.savefig(out.with_name(out.name + ".tmp.png"), dpi=80)
            plt.close(fig)
            os.replace(out.with_name(out.name + ".tmp.png"), out)
            written.append(out)
        return written

    # checkpoints
    def save_checkpoint(self, state: dict) -> None:
        atomic_write(self.checkpoint_path, lambda f: torch.save(state, f))

    def load_checkpoint(self) -> dict | None:
        if not self.checkpoint_path.exists():
            return None
        try:
            return torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file: say which file
            raise UserError(f"{self.checkpoint_path}: cannot read checkpoint ({e})") from e

    def save_weights(self, agent, metadata: dict, state: dict | None = None, epoch: int | None = None) -> Path:
        """Saves the agent (or `state`, a snapshot of its state dict) in the dreamarcade format to RUN/weights/, or
        with `epoch` to RUN/snapshots/epoch-NNNN.safetensors (`weights.save_agent` writes atomically)."""
        from weights import save_agent

        path = self.weights_path if epoch is None else self.snapshots_path / f"epoch-{epoch:04d}.safetensors"
        return save_agent(agent, path, metadata=metadata, state=state)

    # end of run
    def mark_finished(self, summary: dict) -> None:
        atomic_write(self.finished_path, lambda f: f.write(json.dumps(summary, indent=2).encode()))

    @property
    def is_finished(self) -> bool:
        return self.finished_path.exists()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_run_config(run: str | Path) -> dict:
    """The config.json of the run folder `run` (without creating anything). Raises NotFound or UserError."""
    path = Path(run) / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFound(f"{path}: no config.json, so this is not a training run directory")
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})")
