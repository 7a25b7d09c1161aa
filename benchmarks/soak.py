"""Soak test of crash safety (not part of CI): kill a training run with SIGKILL at random moments
for N minutes, resuming it each time, then let it finish and check every invariant.

    python -m benchmarks.soak --minutes 10 --every 4 12                # tiny dcgan on shapes
    python -m benchmarks.soak --minutes 30 --method biggan --set resolution=32 --set ch=8 --set attn=0

Invariants checked at the end: the run finishes (completed or budget_exhausted); its last
checkpoint loads and verifies; metrics.jsonl is one history (steps never go back, no evaluation
twice); every line a dead process wrote past its checkpoint is in metrics.lost.jsonl; no
temporary file is left; run.json's lost-compute account has one segment per kill that lost lines.
Prints a table of what happened.
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--every", type=float, nargs=2, default=(4.0, 12.0), metavar=("MIN_S", "MAX_S"),
                   help="kill after a uniform random time in this range (seconds) of each life")
    p.add_argument("--method", default="dcgan")
    p.add_argument("--budget", default="60s")
    p.add_argument("--checkpoint-every", default="3steps")
    p.add_argument("--set", dest="overrides", action="append", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    overrides = args.overrides or ["resolution=32", "width=2", "batch_size=8"]
    rng = random.Random(args.seed)
    run_dir = Path(tempfile.mkdtemp(prefix="soak-")) / "run"
    common = ["--checkpoint-every", args.checkpoint_every, "--no-progress", "--no-energy"]
    first = [sys.executable, "-m", "harness", "run", "--method", args.method, "--budget", args.budget,
             "--run-dir", str(run_dir), "--eval-every", "5steps", "--eval-samples", "0",
             *[a for kv in overrides for a in ("--set", kv)], *common]
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
    checks = invariants(run_dir, final.returncode)
    print(f"soak of {args.method} for {args.minutes:g} min, kill every {args.every[0]:g}-{args.every[1]:g} s, "
          f"checkpoint every {args.checkpoint_every}: {run_dir}")
    print("| kills | finished before the end | final status | invariant | holds |")
    print("|---|---|---|---|---|")
    status = json.loads((run_dir / "run.json").read_text())["status"]
    for name, ok in checks.items():
        print(f"| {kills} | {'yes' if finished_early else 'no'} | {status} | {name} | {'yes' if ok else 'NO'} |")
    if not all(checks.values()):
        sys.exit(1)


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
