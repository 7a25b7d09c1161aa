"""Soak test of crash safety (not part of CI): kill a training run, then a `harness compare`, with
SIGKILL at random moments for N minutes each, resuming (re-running) after every kill, then let them
finish and check every invariant.

    python -m benchmarks.soak --minutes 10 --every 4 12                # tiny dcgan on shapes
    python -m benchmarks.soak --minutes 30 --method biggan --set resolution=32 --set ch=8 --set attn=0
    python -m benchmarks.soak --target compare --minutes 5             # only the compare parent

Invariants of a run, checked at the end: it finishes (completed or budget_exhausted); its last
checkpoint loads and verifies; metrics.jsonl is one history (steps never go back, no evaluation
twice); every line a dead process wrote past its checkpoint is in metrics.lost.jsonl; no
temporary file is left; run.json's lost-compute account has one segment per kill that lost lines.
Of a comparison (its parent killed, its jobs not): no job outlives its killed parent (each gets
SIGTERM from the kernel, checkpoints and stops); no re-run fails a job as "being trained by" a
leftover; the last re-run exits 0 with every job finished in compare.json; and every job's run
holds the run invariants. Prints a table of what happened.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.rundir.rundir import RunDir

ORPHAN_GRACE_S = 20.0  # a job stops within a step and a checkpoint of its parent's death


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0, help="of kills, for each target")
    p.add_argument("--every", type=float, nargs=2, default=(4.0, 12.0), metavar=("MIN_S", "MAX_S"),
                   help="kill after a uniform random time in this range (seconds) of each life")
    p.add_argument("--target", choices=("run", "compare", "both"), default="both")
    p.add_argument("--method", default="dcgan")
    p.add_argument("--budget", default="60s")
    p.add_argument("--checkpoint-every", default="3steps")
    p.add_argument("--set", dest="overrides", action="append", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="soak-"))
    rows, ok = [], True
    if args.target in ("run", "both"):
        kills, early, checks, status = soak_run(args, rng, root / "run")
        rows += [("run", kills, early, status, name, held) for name, held in checks.items()]
        ok &= all(checks.values())
    if args.target in ("compare", "both"):
        kills, early, checks, status = soak_compare(args, rng, root / "compare")
        rows += [("compare", kills, early, status, name, held) for name, held in checks.items()]
        ok &= all(checks.values())
    print(f"soak of {args.method} for {args.minutes:g} min per target, kill every {args.every[0]:g}-{args.every[1]:g} s, "
          f"checkpoint every {args.checkpoint_every}: {root}")
    print("| killed | kills | finished before the end | final status | invariant | holds |")
    print("|---|---|---|---|---|---|")
    for target, kills, early, status, name, held in rows:
        print(f"| {target} | {kills} | {'yes' if early else 'no'} | {status} | {name} | {'yes' if held else 'NO'} |")
    if not ok:
        sys.exit(1)


def _overrides(args) -> list[str]:
    return [a for kv in (args.overrides or ["resolution=32", "width=2", "batch_size=8"]) for a in ("--set", kv)]


def soak_run(args, rng: random.Random, run_dir: Path) -> tuple[int, bool, dict[str, bool], str]:
    """Kill `harness run` at random until the time is up, resuming each time; then finish it."""
    common = ["--checkpoint-every", args.checkpoint_every, "--no-progress", "--no-energy"]
    first = [sys.executable, "-m", "harness", "run", "--method", args.method, "--budget", args.budget,
             "--run-dir", str(run_dir), "--eval-every", "5steps", "--eval-samples", "0", *_overrides(args), *common]
    resume = [sys.executable, "-m", "harness", "run", "--resume", str(run_dir), *common]
    kills = finished_early = 0
    t_end = time.time() + 60 * args.minutes
    while time.time() < t_end:
        cmd = resume if RunDir.is_run(run_dir) else first
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            proc.wait(timeout=rng.uniform(*args.every))
            if proc.returncode != 0:
                raise SystemExit(f"a life ended with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            finished_early += 1
            break
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
    if not RunDir.is_run(run_dir):  # every life died before run.json existed: start it once, unharmed
        subprocess.run(first, capture_output=True, text=True)
    final = subprocess.run(resume, capture_output=True, text=True)
    return kills, bool(finished_early), invariants(run_dir, final.returncode), _status(run_dir)


def soak_compare(args, rng: random.Random, out: Path) -> tuple[int, bool, dict[str, bool], str]:
    """Kill the `harness compare` parent at random until the time is up, re-running the same command
    each time; its jobs are never killed by us. Then let it finish."""
    cmd = [sys.executable, "-m", "harness", "compare", args.method, "--seeds", "0,1", "--budget", args.budget,
           "--eval-every", "5steps", "--eval-samples", "0", "--out", str(out), *_overrides(args), "--no-progress",
           "--no-energy"]
    kills = finished_early = 0
    orphans: list[int] = []
    logs = out.with_name("compare-logs")  # a file, not a pipe: an orphan job would hold a pipe open
    logs.mkdir(parents=True, exist_ok=True)
    t_end = time.time() + 60 * args.minutes
    while time.time() < t_end:
        with open(logs / f"life-{kills}.err", "w") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        try:
            proc.wait(timeout=rng.uniform(*args.every))
            if proc.returncode != 0:
                raise SystemExit(f"a compare ended with {proc.returncode}: "
                                 f"{(logs / f'life-{kills}.err').read_text()[-2000:]}")
            finished_early += 1
            break
        except subprocess.TimeoutExpired:
            jobs = _descendants(proc.pid)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            deadline = time.time() + ORPHAN_GRACE_S
            while (alive := [pid for pid in jobs if _alive(pid)]) and time.time() < deadline:
                time.sleep(0.2)
            orphans += alive
            for pid in alive:  # leave nothing behind, whatever the verdict
                os.kill(pid, signal.SIGKILL)
    with open(logs / "final.err", "w") as err:
        final = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err)
    refused = [line for f in sorted(logs.glob("*.err")) for line in f.read_text(errors="replace").splitlines()
               if "being trained by" in line]
    record = json.loads((out / "compare.json").read_text()) if (out / "compare.json").is_file() else {"jobs": {}}
    runs = sorted((out / "runs").iterdir()) if (out / "runs").is_dir() else []
    checks = {
        "no job outlived its killed compare": not orphans,
        "no re-run failed a job as being trained by a leftover": not refused,
        "the last re-run exits 0": final.returncode == 0,
        "compare.json says every job finished": bool(record["jobs"]) and all(
            j.get("state") == "finished" for j in record["jobs"].values()),
    }
    for run_dir in runs:
        for name, held in invariants(run_dir, 0).items():
            if name != "the last resume exits 0":
                checks[f"{run_dir.name}: {name}"] = held
    return kills, bool(finished_early), checks, ", ".join(_status(r) for r in runs) or "-"


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (its jobs, and a torchrun job's workers), read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, pp in parents.items() if pp in frontier]
        found += children
        frontier = children
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _status(run_dir: Path) -> str:
    try:
        return json.loads((run_dir / "run.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return "-"


def invariants(run_dir: Path, final_code: int) -> dict[str, bool]:
    run = RunDir(run_dir)
    m = run.manifest()
    lines = run.metrics.read()
    steps: dict[str, list[int]] = {}
    for x in lines:
        if x["kind"] in ("train", "eval"):
            steps.setdefault(x["stage"], []).append(x["step"])
    evals = [(x["stage"], x["step"]) for x in lines if x["kind"] == "eval"]
    lost_file = run_dir / "metrics.lost.jsonl"
    lost = [json.loads(line) for line in lost_file.read_text().splitlines()] if lost_file.is_file() else []
    account = sum(s.get("lost", {}).get("lines", 0) for s in m.get("stage_state", {}).values())
    try:
        loadable = all(run.checkpoints.load(name) is not None for name in m["stages"])
    except Exception:
        loadable = False
    return {
        "the last resume exits 0": final_code == 0,
        "the run finished": m["status"] in ("completed", "budget_exhausted"),
        "every stage's last checkpoint loads and verifies": loadable,
        "metrics.jsonl steps never go back": all(v == sorted(v) for v in steps.values()),
        "no evaluation recorded twice": len(evals) == len(set(evals)),
        "every lost line is in metrics.lost.jsonl": len(lost) == account,
        "no temporary file left": not [p for p in run_dir.rglob(".*") if ".tmp" in p.name or ".raw" in p.name],
        "no stage left running": all(s.get("status") != "running" for s in m.get("stage_state", {}).values()),
    }


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
