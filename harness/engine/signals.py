"""SIGINT/SIGTERM during training: honoured at the next step boundary, never mid-step."""
from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from typing import Any, Callable, Iterable, Iterator


class Interrupted(Exception):
    """Raised after a SIGINT/SIGTERM was honoured: the stage is checkpointed, the run marked."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Signals:
    """Turn the first SIGINT/SIGTERM into a flag checked at step boundaries; a second one
    gets the default behaviour (immediate exit)."""

    def __init__(self):
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum
        for s, old in self._old.items():
            signal.signal(s, old)

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)


@contextlib.contextmanager
def forwarded(children: Callable[[], Iterable[subprocess.Popen]]) -> Iterator[list[int]]:
    """While inside, a SIGINT/SIGTERM is passed on to the running child processes (the stage or
    comparison jobs, which checkpoint and stop) instead of stopping this one; yields the list of
    signals received, so the caller can wait for the children and then raise `Interrupted`."""
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        for proc in children():
            if proc.poll() is None:
                proc.send_signal(signum)

    main = threading.current_thread() is threading.main_thread()  # handlers live on the main thread only
    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        yield received
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
