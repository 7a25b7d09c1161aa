"""Durations and sizes written for people: progress bars, tables, one-line messages."""
from __future__ import annotations


def format_seconds(seconds: float) -> str:
    """`5025.0` -> `1h23m45s`; short and readable in progress bars and tables."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f}s"
    h, rem = divmod(int(round(seconds)), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def format_bytes(n: float) -> str:
    """A size for people: '10.8 GB', '170 MB', '52 kB'."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"
