"""Checkpoints written off the critical path: a consistent snapshot taken at once, written by a thread.

`Snapshot.take(state)` copies every tensor of a nested state (dicts, lists, tuples) to the CPU, so that the
copy aliases nothing the next updates modify in place: a GPU tensor goes into a pinned buffer kept from one
save to the next (non-blocking copies, then one wait per device), a CPU tensor is cloned. `BackgroundWriter`
then writes it in a thread, one write at a time: `submit` and `wait` first wait for the write in flight and
raise its error, so nothing is lost silently and files are written in the order they were submitted.
"""
from __future__ import annotations

import threading
from typing import Callable

import torch

from weights.errors import UserError


class Snapshot:
    """Copies of nested states on the CPU. The pinned buffers of GPU tensors are reused by the next `take`: the
    caller waits for the write of the previous snapshot first (`BackgroundWriter.wait`)."""

    def __init__(self) -> None:
        self._pinned: dict[tuple, torch.Tensor] = {}

    def take(self, state):
        """-> `state` with each tensor replaced by a CPU copy (same dtype and shape; not a view of the original)."""
        devices: set[torch.device] = set()
        out = self._copy(state, (), devices)
        for device in devices:  # the non-blocking copies are done once the device's stream has reached them
            torch.cuda.current_stream(device).synchronize()
        return out

    def _copy(self, x, key: tuple, devices: set):
        if isinstance(x, torch.Tensor):
            x = x.detach()
            if x.device.type == "cpu":
                return x.clone()
            if x.device.type != "cuda":  # mps, xpu...: a blocking copy
                return x.to("cpu")
            buf = self._pinned.get(key)
            if buf is None or buf.shape != x.shape or buf.dtype != x.dtype:
                buf = self._pinned[key] = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
            buf.copy_(x, non_blocking=True)
            devices.add(x.device)
            return buf
        if isinstance(x, dict):
            return {k: self._copy(v, key + (k,), devices) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(self._copy(v, key + (i,), devices) for i, v in enumerate(x))
        return x  # numbers, strings, None: immutable


class BackgroundWriter:
    """Runs one write at a time in a thread. A write that failed raises at the next `submit` or `wait`: an
    `OSError` (a full disk, a run folder removed or read-only) as a `UserError` naming what was being written,
    anything else (a bug) as itself."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._what = ""

    def submit(self, write: Callable[[], object], what: str) -> None:
        """Waits for the write in flight (raising its error), then starts `write()` in a thread; `what` names
        it in an error ("RUN/checkpoint.pt and RUN/weights")."""
        self.wait()
        self._what = what

        def run() -> None:
            try:
                write()
            except BaseException as e:  # kept for the caller's thread, which raises it
                self._error = e

        # not a daemon: a program that ends without waiting still finishes the write
        self._thread = threading.Thread(target=run, name="dreamarcade-save")
        self._thread.start()

    def wait(self) -> None:
        """Waits for the write in flight, if any; raises its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if isinstance(error, OSError):
            raise UserError(f"could not write {self._what}: {error}") from error
        if error is not None:
            raise error
