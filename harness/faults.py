"""Crash points for fault-injection tests: `HARNESS_CRASH_AT=<point>[:<n>]` kills this process with
SIGKILL (no handler, no cleanup: what `kill -9` or a power cut does) the n-th time (default 1st)
execution passes `crash_point("<point>")`. Unset, it costs one dictionary lookup.

Points: `step` (inside a training step, after the stage's update, before the loop records it),
`eval` (inside an evaluation), and the file operations of a checkpoint save: `ckpt-rotated`
(last renamed to prev, the new last not yet written), `atomic-written` (a temporary file written,
not yet fsynced or renamed), `atomic-renamed` (renamed into place, its folder not yet fsynced);
`atomic-*@pt` counts checkpoint files only.
"""
from __future__ import annotations

import os
import signal

_passes: dict[str, int] = {}


def crash_point(name: str, path=None) -> None:
    """`path`: the file being written; `<point>@<suffix>` in HARNESS_CRASH_AT counts only writes of
    files with that suffix (`atomic-written@pt:2`: the second checkpoint write)."""
    spec = os.environ.get("HARNESS_CRASH_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if "@" in point:
        point, suffix = point.split("@", 1)
        if path is None or not str(path).endswith("." + suffix):
            return
    if point != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
