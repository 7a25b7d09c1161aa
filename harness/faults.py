"""Crash points for fault-injection tests: `HARNESS_CRASH_AT=<point>[:<n>]` kills this process with
SIGKILL (no handler, no cleanup: what `kill -9` or a power cut does) the n-th time (default 1st)
execution passes `crash_point("<point>")`. Unset, it costs one dictionary lookup.

Points: `step` (inside a training step, after the stage's update, before the loop records it),
`eval` (inside an evaluation), and the file operations of a checkpoint save: `ckpt-rotated`
(last renamed to prev, the new last not yet written), `atomic-written` (a temporary file written,
not yet fsynced or renamed), `atomic-renamed` (renamed into place, its folder not yet fsynced).
"""
from __future__ import annotations

import os
import signal

_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get("HARNESS_CRASH_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
