"""Training throughput on a CPU beside busy processes: the thread policy against fixed thread counts.

    python -m benchmarks.contention              # both configs, 0/1/2 competitors, 4 rounds (~45 min on 2 idle cores)
    python -m benchmarks.contention --configs small --rounds 1 --competitors 0,1

Each measurement is one `harness run --device cpu` of `dcgan` in a fresh process, its steps/s read
from run.json (steps over the budget clock: start-up, evaluation and checkpoints excluded). Policies:
`new` (no --threads: harness.engine.threads chooses from the usable cores and the load, and checks
again at every train line) and `fixed k` (--threads k for every k up to the cores; the old policy was
torch's default count, which is `fixed <default>`). Competitors are `python -c "while True: pass"`
processes started a second before the run and killed after it. Rounds interleave everything (each
round: every config, every competitor count, the policies in a rotated order) and the table shows
medians over rounds, the ratios new / old and new / best fixed, and the load other processes put on
the machine (the background, measured before each condition's competitors start).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness.engine import cores as cpu
from harness.rundir.provenance import cpu_model

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# small: README's first command (harness compare's demo); paper-width: the paper's width and batch at 32x32
CONFIGS = {
    "small": (["resolution=32", "width=8", "batch_size=32", "lr_g=5e-4", "lr_d=5e-4"], 20),
    "paper-width": (["resolution=32"], 40),
}
SPIN = "while True: pass"


def measure(config: str, threads: int | None, budget_s: int, work: Path) -> dict:
    """One run: steps/s on the budget clock, the threads it ended with, the share of the machine it had."""
    sets, _ = CONFIGS[config]
    run_dir = Path(tempfile.mkdtemp(dir=work))
    cmd = [sys.executable, "-m", "harness", "run", "--method", "dcgan", "--budget", f"{budget_s}s", "--device", "cpu",
           "--eval-samples", "0", "--no-energy", "--no-progress", "--run-dir", str(run_dir / "run")]
    cmd += [a for s in sets for a in ("--set", s)] + (["--threads", str(threads)] if threads else [])
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    m = json.loads((run_dir / "run" / "run.json").read_text())
    stage = m["stage_state"]["gan"]
    t = m["threads"]
    return {"steps_per_s": stage["steps_per_s"], "steps": stage["steps"], "threads": t["intra_op"],
            "start_threads": t["changes"][0]["from"] if t["changes"] else t["intra_op"], "changes": len(t["changes"]),
            "share": (m.get("totals") or {}).get("exclusive_share")}


def spinners(n: int) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n)]
    time.sleep(1.0 if n else 0.0)  # running before the measured process looks at the machine
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def run_all(configs: list[str], competitors: list[int], rounds: int, log) -> tuple[dict, dict]:
    """(results[(config, competitors, policy)] = [measurement per round], background[(config, competitors)])."""
    usable = cpu.usable_cores()
    policies = ["new"] + [f"fixed {k}" for k in range(1, usable.count + 1)]
    results: dict = {}
    background: dict = {}
    with tempfile.TemporaryDirectory(prefix="contention-") as work:
        for r in range(rounds):
            for config in configs:
                budget = CONFIGS[config][1]
                for n in competitors:
                    background.setdefault((config, n), []).append(cpu.measure_others(usable, 1.0))
                    procs = spinners(n)
                    try:
                        order = policies[r % len(policies):] + policies[:r % len(policies)]
                        for policy in order:
                            threads = None if policy == "new" else int(policy.split()[1])
                            x = measure(config, threads, budget, Path(work))
                            results.setdefault((config, n, policy), []).append(x)
                            log(f"round {r + 1}/{rounds} {config} beside {n}: {policy}: {x['steps_per_s']:.3f} steps/s "
                                f"({x['steps']} steps, threads {x['start_threads']}->{x['threads']}, "
                                f"share {x['share']})")
                    finally:
                        stop(procs)
    return results, background


def table(results: dict, background: dict, configs: list[str], competitors: list[int], default_threads: int) -> str:
    fixed = sorted({p for (_, _, p) in results if p != "new"}, key=lambda p: int(p.split()[1]))
    old = f"fixed {default_threads}"
    head = ["config", "competitors", "background (cores)", *[f"{p}{' = old' if p == old else ''}" for p in fixed],
            "new", "new threads", "new share", "new / old", "new / best fixed", "same, paired by round"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for config in configs:
        for n in competitors:
            med = {p: statistics.median(x["steps_per_s"] for x in results[(config, n, p)])
                   for p in [*fixed, "new"]}
            new = results[(config, n, "new")]
            bg = [b for b in background[(config, n)] if b is not None]
            threads = sorted({f"{x['start_threads']}->{x['threads']}" if x["changes"] else str(x["threads"])
                              for x in new})
            shares = [x["share"] for x in new if x["share"] is not None]
            best = max(med[p] for p in fixed)
            # each round's new against that round's best fixed count: the background's drift between rounds cancels
            rounds = len(new)
            paired = statistics.median(
                new[r]["steps_per_s"] / max(results[(config, n, p)][r]["steps_per_s"] for p in fixed)
                for r in range(rounds))
            row = [config, str(n), f"{statistics.median(bg):.2f}" if bg else "-",
                   *[f"{med[p]:.3f}" for p in fixed], f"**{med['new']:.3f}**", ", ".join(threads),
                   f"{statistics.median(shares):.2f}" if shares else "-",
                   f"{med['new'] / med[old]:.2f}x" if old in med else "-", f"**{med['new'] / best:.2f}x**",
                   f"{paired:.2f}x"]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.contention", description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--competitors", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None, help="markdown file [default: print only]")
    a = ap.parse_args(argv)
    configs = [c for c in a.configs.split(",") if c]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown config(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    competitors = [int(n) for n in a.competitors.split(",")]
    usable = cpu.usable_cores()
    default_threads = torch.get_num_threads()  # what torch chose in this fresh process: the old policy
    t0 = time.time()
    load0 = os.getloadavg()[0]
    results, background = run_all(configs, competitors, a.rounds, lambda msg: print(msg, file=sys.stderr, flush=True))
    minutes = (time.time() - t0) / 60
    text = "\n".join([
        "# Training throughput beside busy processes: thread policy against fixed thread counts",
        "",
        f"`python -m benchmarks.contention {' '.join(argv if argv is not None else sys.argv[1:])}`".replace(" `", "`"),
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; torch {torch.__version__}, "
        f"Python {sys.version.split()[0]}",
        f"- CPU: {cpu_model()}; usable cores {usable.usable:g} (quota {usable.quota}); torch's default "
        f"{default_threads} intra-op threads (the old policy: `fixed {default_threads}`)",
        f"- {a.rounds} round(s), interleaved; medians of steps/s over rounds (steps / budget clock of one "
        f"`harness run --device cpu` of dcgan); small = {' '.join(CONFIGS['small'][0])} for "
        f"{CONFIGS['small'][1]} s, paper-width = the paper's width 32 and batch 64 at 32x32 for "
        f"{CONFIGS['paper-width'][1]} s",
        f"- competitors: `python -c \"{SPIN}\"`; background = cores other processes kept busy before the "
        f"competitors started (other work on this shared machine); load average {load0:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end; {minutes:.0f} min in all",
        "- new threads: the intra-op count the policy chose per round (start->end where it changed); new share: "
        "run.json's exclusive_share of the new policy's runs; paired: the median over rounds of each round's "
        "new / that round's best fixed count",
        "",
        table(results, background, configs, competitors, default_threads),
    ])
    print(text)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
        raw = a.out.with_suffix(".json")
        raw.write_text(json.dumps({"results": {" | ".join(map(str, k)): v for k, v in results.items()},
                                   "background": {" | ".join(map(str, k)): v for k, v in background.items()}},
                                  indent=1) + "\n")


if __name__ == "__main__":
    main()
