"""SIGINT/SIGTERM/SIGHUP during training: honoured at the next step boundary, never mid-step, and
within one batch during an evaluation (which is repeated on --resume)."""
from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from typing import Any, Callable, Iterable, Iterator

# a closed terminal or a lost ssh session (SIGHUP) stops a run as SIGTERM does: checkpointed, resumable
HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(Exception):
    """Raised after a SIGINT/SIGTERM/SIGHUP was honoured: the stage is checkpointed, the run marked."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Signals:
    """Turn the first SIGINT/SIGTERM/SIGHUP into a flag checked at step boundaries. Repeated signals
    are the same request (a second Ctrl-C used to kill the run wherever it landed, a checkpoint
    write included, and leave run.json `running`); `kill -9` stops a run at once."""

    def __init__(self):
        self.received: int | None = None
        self._old: dict[int, Any] = {}
        self._now = False

    def __enter__(self):
        for s in HANDLED:
            self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is None:
            self.received = signum
        if self._now:
            self._now = False
            raise Interrupted(self.received)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Inside, a signal (or one received before) raises `Interrupted` at once, wherever the code
        is: for evaluations, which may take hours, write nothing the run needs until they return,
        and are repeated on --resume."""
        if self.received is not None:
            raise Interrupted(self.received)
        self._now = True
        try:
            yield
        finally:
            self._now = False

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)


@contextlib.contextmanager
def forwarded(children: Callable[[], Iterable[subprocess.Popen]]) -> Iterator[list[int]]:
    """While inside, a SIGINT/SIGTERM/SIGHUP is passed on to the running child processes (the stage
    or comparison jobs, which checkpoint and stop) instead of stopping this one; yields the list of
    signals received, so the caller can wait for the children and then raise `Interrupted`."""
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        for proc in children():
            if proc.poll() is None:
                proc.send_signal(signum)

    main = threading.current_thread() is threading.main_thread()  # handlers live on the main thread only
    old = {s: signal.signal(s, forward) for s in HANDLED} if main else {}
    try:
        yield received
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
