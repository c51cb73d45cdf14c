"""Runs a Session's methods in a background thread, so the window never waits on the model.

The window thread submits commands ("step", "reset", "set_mode", ...) and collects the Snapshots
they return; torch releases the GIL inside its kernels, so keys are read and the window redrawn
while a world-model step is computing.
"""
from __future__ import annotations

import queue
import threading

from app.player.session import Session, Snapshot

_STOP = object()


class SessionWorker:
    """A thread that owns a Session: commands run one at a time, in the order submitted."""

    def __init__(self, session: Session):
        self.session = session
        self._commands: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._finished = threading.Event()  # set whenever a command finishes
        self._thread = threading.Thread(target=self._run, name="dreamarcade-session", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._commands.get()
            if item is _STOP:
                return
            name, args = item
            try:
                self._results.put(getattr(self.session, name)(*args))
            except BaseException as e:  # handed to the window thread, which raises it
                self._error = e
                self._results.put(None)
            finally:
                with self._lock:
                    self._pending -= 1
                self._finished.set()

    def submit(self, name: str, *args) -> None:
        """Queues `session.<name>(*args)`."""
        with self._lock:
            self._pending += 1
        self._commands.put((name, args))

    @property
    def busy(self) -> bool:
        """True while any submitted command has not finished."""
        with self._lock:
            return self._pending > 0

    def wait(self, timeout: float) -> bool:
        """Sleeps up to `timeout` seconds, waking as soon as a command finishes; True if one did."""
        finished = self._finished.wait(max(0.0, timeout))
        self._finished.clear()
        return finished

    def results(self) -> list[Snapshot]:
        """The snapshots finished since the last call, oldest first. Re-raises an error of the session."""
        out = []
        while True:
            try:
                snap = self._results.get_nowait()
            except queue.Empty:
                break
            if snap is not None:
                out.append(snap)
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return out

    def close(self, timeout: float = 10.0) -> None:
        self._commands.put(_STOP)
        self._thread.join(timeout)
