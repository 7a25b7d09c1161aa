"""The CPU cores this process may use (affinity, cgroup quota) and how busy other processes keep them.

Linux only where it says so: elsewhere every core counts as usable and the load of other
processes is unknown (None), never guessed.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

# /proc/stat counts in USER_HZ ticks; 100 on every Linux build that matters (sysconf(_SC_CLK_TCK))
_TICK_S = 1.0 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


@dataclass(frozen=True)
class Cores:
    """Where this process may run: `cpus` (its affinity) and the cgroup's CPU `quota` in cores."""

    cpus: tuple[int, ...]
    quota: float | None = None

    @property
    def usable(self) -> float:
        """Cores the process can keep busy at once: its CPUs, or fewer under a quota (1.5 = 150%)."""
        return min(len(self.cpus), self.quota) if self.quota is not None else float(len(self.cpus))

    @property
    def count(self) -> int:
        """Whole usable cores, at least one: the most threads that never wait for a core."""
        return max(1, math.floor(self.usable + 1e-9))

    def available(self, others: float | None) -> float:
        """Cores left to this process while other processes keep `others` of its CPUs busy."""
        if others is None:
            return self.usable
        return max(0.0, min(self.usable, len(self.cpus) - others))

    def describe(self) -> dict:
        return {"cpus": len(self.cpus), "quota": self.quota, "usable": self.usable}


def _cgroup_paths(root: Path) -> list[Path]:
    """The cgroup folders holding this process's CPU controller, innermost first (v2, then v1)."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":  # cgroup v2: one hierarchy
            base = root / "sys/fs/cgroup"
        elif "cpu" in controllers.split(","):
            base = next((b for b in (root / "sys/fs/cgroup" / controllers, root / "sys/fs/cgroup/cpu,cpuacct",
                                     root / "sys/fs/cgroup/cpu") if b.is_dir()), None)
            if base is None:
                continue
        else:
            continue
        # inside a container the cgroup is mounted at the root: the recorded path may not exist
        here = base / rel if (base / rel).is_dir() else base
        found += [here] + [p for p in here.parents if p == base or base in p.parents]
    return found


def _quota(folder: Path) -> float | None:
    """The CPU quota in cores set on one cgroup folder (v2 cpu.max, v1 cfs_quota/period), None: none."""
    try:
        if (folder / "cpu.max").is_file():
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if (folder / "cpu.cfs_quota_us").is_file():
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            return None if quota < 0 else quota / int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None


def usable_cores(root: Path = Path("/")) -> Cores:
    """This process's CPUs (sched_getaffinity) and the tightest CPU quota of its cgroups."""
    if hasattr(os, "sched_getaffinity"):
        cpus = tuple(sorted(os.sched_getaffinity(0)))
    else:
        cpus = tuple(range(os.cpu_count() or 1))
    quotas = [q for q in map(_quota, _cgroup_paths(Path(root))) if q is not None]
    return Cores(cpus, min(quotas) if quotas else None)


@dataclass(frozen=True)
class Reading:
    """A moment's counters: wall clock, seconds the CPUs were busy (every process, None where
    /proc/stat is unreadable) and this process's own CPU seconds (all its threads)."""

    wall: float
    busy: float | None
    own: float


def _busy_seconds(cpus: tuple[int, ...], stat: Path) -> float | None:
    """Seconds `cpus` spent not idle since boot: user, nice, system, irq, softirq and steal (a
    hypervisor giving the core to another machine is contention too); idle and iowait are not."""
    try:
        text = stat.read_text()
    except OSError:
        return None
    wanted = {f"cpu{c}" for c in cpus}
    ticks = 0
    seen = 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name in wanted:
            f = [int(x) for x in rest.split()]
            ticks += f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] if len(f) > 7 else 0)
            seen += 1
    return ticks * _TICK_S if seen else None


def read(cores: Cores, stat: Path = Path("/proc/stat")) -> Reading:
    return Reading(time.perf_counter(), _busy_seconds(cores.cpus, stat), time.process_time())


def others_busy(a: Reading, b: Reading) -> float | None:
    """Cores of this process's CPUs that other processes kept busy between readings `a` and `b`
    (their CPU time over the wall time; the process's own time taken out)."""
    wall = b.wall - a.wall
    if a.busy is None or b.busy is None or wall <= 0:
        return None
    return max(0.0, (b.busy - a.busy) - (b.own - a.own)) / wall


def measure_others(cores: Cores, seconds: float = 0.5) -> float | None:
    """Cores other processes keep busy, measured over `seconds` from now (this process sleeps)."""
    a = read(cores)
    time.sleep(seconds)
    return others_busy(a, read(cores))


def split(cores: Cores, parts: int) -> list[tuple[int, ...]]:
    """This process's CPUs dealt out to `parts` jobs side by side: contiguous groups, none empty
    (with fewer CPUs than jobs, some jobs share one)."""
    cpus, parts = list(cores.cpus), max(1, parts)
    if len(cpus) < parts:
        return [(cpus[k % len(cpus)],) for k in range(parts)]
    size, extra = divmod(len(cpus), parts)
    out, first = [], 0
    for k in range(parts):
        n = size + (1 if k < extra else 0)
        out.append(tuple(cpus[first:first + n]))
        first += n
    return out
