"""The Slurm allocation a process runs in (run.json's `cluster`), and the states of submitted jobs
as the Slurm controller reports them (`squeue`), for `harness compare --launcher slurm`."""
from __future__ import annotations

import os
import subprocess
import time

from harness.errors import ClusterError

# squeue's states of a job that holds (or is about to hold) its allocation; every other state squeue
# lists (PENDING, REQUEUED, REQUEUE_HOLD, PREEMPTED, ...) is a job waiting for one
_RUNNING = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED",
                      "RESIZING"})


def allocation(env: dict[str, str] | None = None) -> dict | None:
    """This process's Slurm job, node and allocation from the variables Slurm sets in a job, or
    None outside one. `restart_count` is how often the job was requeued (preempted, out of time)."""
    env = os.environ if env is None else env
    if "SLURM_JOB_ID" not in env:
        return None
    array = env.get("SLURM_ARRAY_JOB_ID")
    job_id = f"{array}_{env['SLURM_ARRAY_TASK_ID']}" if array and "SLURM_ARRAY_TASK_ID" in env else env["SLURM_JOB_ID"]
    gpus = env.get("SLURM_GPUS_ON_NODE")
    return {"launcher": "slurm", "job_id": job_id, "node": env.get("SLURMD_NODENAME"),
            "nodelist": env.get("SLURM_JOB_NODELIST"), "partition": env.get("SLURM_JOB_PARTITION"),
            "account": env.get("SLURM_JOB_ACCOUNT"), "cpus": _int(env.get("SLURM_CPUS_ON_NODE")),
            "gpus": _int(gpus) if gpus else 0, "restart_count": _int(env.get("SLURM_RESTART_COUNT")) or 0,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def queue(ids: list[str]) -> dict[str, dict]:
    """{job id: {"slurm_state", "state" (queued | running), "node"}} of the jobs in `ids` that the
    controller still lists; a job it no longer lists has ended. Array tasks are named `ARRAY_TASK`."""
    if not ids:
        return {}
    try:
        # every job (-r: each array task on its own line), not `-j ids`: squeue refuses the whole
        # list when one id has left the controller's memory
        p = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%N"], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ClusterError("squeue not found: --launcher slurm needs Slurm's client commands on PATH") from None
    except subprocess.TimeoutExpired:
        raise ClusterError("squeue did not answer within 60 s: is the Slurm controller reachable?") from None
    if p.returncode != 0:
        raise ClusterError(f"squeue failed: {(p.stderr.strip() or p.stdout.strip()).splitlines()[-1:]}")
    wanted, found = set(ids), {}
    for line in p.stdout.splitlines():
        job, _, rest = line.strip().partition("|")
        state, _, node = rest.partition("|")
        if job in wanted:
            found[job] = {"slurm_state": state, "state": "running" if state in _RUNNING else "queued",
                          "node": node or None}
    return found
