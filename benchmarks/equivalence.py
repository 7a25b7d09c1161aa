"""Behavioural fingerprints of a source tree, to prove a refactor left training bitwise the same.

    python -m benchmarks.equivalence record --tree /work/before --out benchmarks/results/equivalence-before.json
    python -m benchmarks.equivalence check --against benchmarks/results/equivalence-before.json  # this tree

Each method trains a few seeded steps on the CPU (`python -m harness run` in a subprocess, cwd and
PYTHONPATH = the tree, one thread, a fresh $HARNESS_CACHE per method). The fingerprint holds:
checkpoints: sha256, dtype and shape of every tensor in stage_state (weights, buffers, optimiser
state), its other leaves' values, progress.step and the stream position; metrics.jsonl: the step-1
train line and every other line but stretch lines, without TIME_KEYS (the other train lines are written
every 10 wall-seconds, so how many there are depends on speed); run.json: config, stages and each
stage's steps and status. `check` compares only what the record holds: a recorded key that is gone
or differs fails (exit 1), a new key is reported as information.

Settings are written with NSBGAN's nested sampler keys (`sampler.ch=4`). With `--keys auto` a tree
whose methods/nsbgan.py contains "sampler_ch:" is an old one: there `sampler.<key>` is passed as
`sampler_<key>`, and its run.json config is recorded in today's names (OLD_KEYS).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
FORMAT = 1

# Short, seeded CPU runs: evaluations and checkpoints fall on steps, never on the clock, and a 1h
# budget never ends a 6-step stage, so everything but timing follows from the seed.
RUN_ARGS = ["--budget", "1h", "--max-steps", "6", "--eval-every", "3steps", "--checkpoint-every", "2steps",
            "--layout", "sequential", "--no-energy", "--no-progress", "--fid-backbone", "standin",
            "--eval-samples", "32", "--seed", "0", "--device", "cpu"]
GAN = ["resolution=32", "width=2", "batch_size=8"]
# the tiny settings of tests/test_every_method.py, sampler keys in the nested (new) form
SETTINGS: dict[str, list[str]] = {
    "dcgan": GAN,
    # schedule_unit=epoch: "auto" takes the larger of epoch and budget-time progress, so the betas
    # would follow wall time on a machine slow enough to spend 1/50 of the budget in 6 steps
    "octave-dcgan": GAN + ["spectrum_samples=16", "schedule_unit=epoch"],
    "biggan": ["resolution=32", "ch=4", "batch_size=8", "accumulate=2", "eval_batch_size=32"],
    "nsbgan": ["resolution=32", "levels=1", "width=4", "batch_sizes=[8]", "patch=8", "eval_images=16",
               "sampler.ch=4", "sampler.dim_z=8", "sampler.shared_dim=4", "sampler.batch_size=4",
               "sampler.accumulate=1", "sampler.eval_batch_size=32", "latent_norm_images=256"],
}
DEFAULT_METHODS = "dcgan,octave-dcgan,biggan,nsbgan"
# Defaults changed on purpose since the record (issue 22: the NSBGAN authors' baseline, the official
# latent normalisation, FID* at truncation 0.6, unbiased FID reference sets): a tree that has them is
# run with the record's values, so that the same settings must still give the same numbers
PINNED = {"biggan": ["arch=biggan", "accumulation=ajbrock"],
          "nsbgan": ["latent_norm=data", "eval_truncations=[1.0,0.4,0.1,0.01]", "fid_star_truncation=1.0"]}
PINNED_ARGS = ["--fid-reference", "first"]
# labels renamed since the record, as they are written today
RELABELLED = [(re.compile(r"^(.*)\[:(\d+)\]$"), r"\1 first n=\2")]  # fid_ref "id/train[:64]"

# metrics.jsonl fields that measure time (clock, wall, device-hours, energy, throughput, the share of the
# machine): never compared; nor are the stretch lines, which hold nothing else
TIME_KEYS = frozenset({"time", "budget_s", "wall_s", "gpu_h", "cpu_h", "kwh", "kwh_eval", "kg_co2e", "gpu_j",
                       "gpu_j_eval", "joules", "eval_s", "images_per_s", "steps_per_s", "last_step_s", "share"})
CHECKPOINT_MAGIC = b"fsgan-harness checkpoint v2 sha256="  # harness.run's, written here to stay independent of the tree


class RunFailed(RuntimeError):
    """`harness run` exited with an error, or the tree's package was not the one imported."""


def key_style(tree: Path, keys: str) -> str:
    """`old` (flat `sampler_<key>`) or `new` (nested `sampler.<key>`) for `keys` = old|new|auto."""
    if keys != "auto":
        return keys
    nsbgan = tree / "methods" / "nsbgan.py"
    return "old" if nsbgan.is_file() and "sampler_ch:" in nsbgan.read_text() else "new"


# keys of the old flat NSBGAN config whose new names are not simply `sampler_<key>` -> `sampler.<key>`
OLD_KEYS = {"sampler": "sampler.arch", "sampler_data": "sampler.data_options", "sampler_norm_images": "latent_norm_images",
            "sampler_devices": "sampler_devices"}


def tree_settings(settings: list[str], style: str) -> list[str]:
    """`settings` as --set values for a tree with `style` keys."""
    if style == "new":
        return list(settings)
    old = {new: old for old, new in OLD_KEYS.items()}
    out = []
    for kv in settings:
        key, _, value = kv.partition("=")
        key = old.get(key) or ("sampler_" + key[len("sampler."):] if key.startswith("sampler.") else key)
        out.append(f"{key}={value}")
    return out


def new_config_keys(config: dict, style: str) -> dict:
    """run.json's config with nested dicts flattened to dotted keys and, for an old tree,
    `sampler_<key>` renamed `sampler.<key>`, so that both trees record the same names."""
    flat: dict[str, Any] = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(config, "")
    if style == "old":
        flat = {OLD_KEYS.get(k) or ("sampler." + k[len("sampler_"):] if k.startswith("sampler_") else k): v
                for k, v in flat.items()}
    return flat


def subprocess_env(tree: Path, cache: Path) -> dict[str, str]:
    # one thread: CPU reductions then add in one order whatever the machine's core count
    return {**os.environ, "PYTHONPATH": str(tree), "HARNESS_CACHE": str(cache), "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def check_imports(tree: Path, env: dict[str, str]) -> None:
    """Fail unless `harness` and `methods` come from `tree`: an editable install of another
    checkout would otherwise be measured instead, silently."""
    code = "import harness, methods; print(harness.__file__); print(methods.__file__)"
    p = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RunFailed(f"cannot import harness from {tree}: {p.stderr.strip()[-2000:]}")
    for path in p.stdout.split():
        if not Path(path).resolve().is_relative_to(tree.resolve()):
            raise RunFailed(f"{path} was imported, not the copy in {tree}")


def has_pinned_defaults(tree: Path) -> bool:
    """Whether `tree` has the defaults PINNED undoes (its FID reference module is the sign)."""
    return (tree / "harness" / "metrics" / "reference.py").is_file()


def train(method: str, tree: Path, style: str, work: Path) -> Path:
    """Run `method`'s short training in `tree` with a fresh cache under `work`; the run directory."""
    cache, run_dir = work / f"cache-{method}", work / f"run-{method}"
    env = subprocess_env(tree, cache)
    check_imports(tree, env)
    pinned = has_pinned_defaults(tree)
    settings = SETTINGS[method] + (PINNED.get(method, []) if pinned else [])
    sets = [a for kv in tree_settings(settings, style) for a in ("--set", kv)]
    cmd = [sys.executable, "-m", "harness", "run", "--method", method, "--run-dir", str(run_dir), *RUN_ARGS, *sets,
           *(PINNED_ARGS if pinned else [])]
    p = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RunFailed(f"{method}: `{' '.join(cmd)}` exited {p.returncode}:\n{p.stderr.strip()[-3000:]}")
    return run_dir


def leaf_fingerprint(x: Any) -> Any:
    """A tensor or array as "<dtype> <shape> sha256=<its raw bytes' sha256>"; any other leaf as its value."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        return f"{str(t.dtype).removeprefix('torch.')} {list(t.shape)} sha256={hashlib.sha256(raw).hexdigest()}"
    if isinstance(x, np.ndarray):
        a = np.ascontiguousarray(x)
        return f"{a.dtype} {list(a.shape)} sha256={hashlib.sha256(a.tobytes()).hexdigest()}"
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise TypeError(f"no fingerprint for a {type(x).__name__} in a checkpoint's stage_state")


def state_fingerprint(state: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf reachable through dicts, lists and tuples, keyed by its path joined with '/'."""
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return {prefix: leaf_fingerprint(state)}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(state_fingerprint(v, f"{prefix}/{k}" if prefix else str(k)))
    return out


def checkpoint_fingerprint(path: Path) -> dict:
    """A checkpoint file (CHECKPOINT_MAGIC, 64 hex digits, newline, torch.save's bytes) without its clock, energy or random state."""
    raw = path.read_bytes()
    head = len(CHECKPOINT_MAGIC) + 64
    if not raw.startswith(CHECKPOINT_MAGIC) or raw[head:head + 1] != b"\n":
        raise ValueError(f"{path}: not an fsgan-harness v2 checkpoint")
    state = torch.load(io.BytesIO(raw[head + 1:]), map_location="cpu", weights_only=False)  # our own files
    return {"step": state["progress"]["step"], "stream": state["stream"],
            "stage_state": state_fingerprint(state["stage_state"])}


def metrics_fingerprint(path: Path) -> list[dict]:
    """metrics.jsonl's step-1 train lines and every other non-train line, without TIME_KEYS."""
    lines = [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
    kept = [d for d in lines
            if d.get("kind") not in ("train", "stretch") or (d["kind"] == "train" and d.get("step") == 1)]
    return [{k: v for k, v in d.items() if k not in TIME_KEYS} for d in kept]


def run_fingerprint(path: Path, style: str) -> dict:
    m = json.loads(path.read_text())
    return {"config": new_config_keys(m["config"], style), "stages": m["stages"],
            "stage_state": {s: {"steps": v.get("steps"), "status": v.get("status")}
                            for s, v in m["stage_state"].items()}}


def method_fingerprint(run_dir: Path, style: str) -> dict:
    ckpts = {p.name: checkpoint_fingerprint(p) for p in sorted((run_dir / "checkpoints").glob("*.pt"))}
    fp = {"checkpoints": ckpts, "metrics": metrics_fingerprint(run_dir / "metrics.jsonl"),
          "run": run_fingerprint(run_dir / "run.json", style)}
    return json.loads(json.dumps(fp))  # the form a record is read back in: lists for tuples, str keys


def fingerprints(tree: Path, methods: list[str], keys: str) -> tuple[dict, dict[str, float]]:
    """(the record of `methods` trained in `tree`, seconds each run took)."""
    unknown = [m for m in methods if m not in SETTINGS]
    if unknown:
        raise SystemExit(f"no settings for {', '.join(unknown)}; known: {', '.join(SETTINGS)}")
    style = key_style(tree, keys)
    record = {"format": FORMAT, "keys": style, "run_args": RUN_ARGS, "time_keys": sorted(TIME_KEYS),
              "settings": {m: SETTINGS[m] for m in methods}, "methods": {}}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="equivalence-") as work:
        for m in methods:
            t0 = time.perf_counter()
            record["methods"][m] = method_fingerprint(train(m, tree, style, Path(work)), style)
            seconds[m] = time.perf_counter() - t0
    return record, seconds


def same_scalar(a: Any, b: Any) -> bool:
    # JSON text: 1 and 1.0 differ, NaN equals NaN, floats compare bit for bit
    return json.dumps(a) == json.dumps(b)


def differences(recorded: Any, fresh: Any, path: str, extra: list[str]) -> list[str]:
    """Where `fresh` differs from `recorded`; keys only `fresh` has go to `extra`."""
    if isinstance(recorded, dict) and isinstance(fresh, dict):
        out = []
        for k, v in recorded.items():
            if k not in fresh:
                out.append(f"{path}.{k}: missing")
            else:
                out += differences(v, fresh[k], f"{path}.{k}", extra)
        extra += [f"{path}.{k}" for k in fresh if k not in recorded]
        return out
    if isinstance(recorded, list) and isinstance(fresh, list):
        if len(recorded) != len(fresh):
            return [f"{path}: {len(recorded)} entries recorded, {len(fresh)} now"]
        return [d for i, (a, b) in enumerate(zip(recorded, fresh)) for d in differences(a, b, f"{path}[{i}]", extra)]
    if isinstance(recorded, str):
        for pattern, today in RELABELLED:
            recorded = pattern.sub(today, recorded)
    if isinstance(recorded, (dict, list)) or isinstance(fresh, (dict, list)) or not same_scalar(recorded, fresh):
        return [f"{path}: {json.dumps(recorded)[:120]} recorded, {json.dumps(fresh)[:120]} now"]
    return []


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def record_command(tree: Path, out: Path, methods: list[str], keys: str) -> None:
    t0 = time.perf_counter()
    record, seconds = fingerprints(tree, methods, keys)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    rows = [[m, str(len(fp["checkpoints"])), str(sum(len(c["stage_state"]) for c in fp["checkpoints"].values())),
             str(len(fp["metrics"])), f"{seconds[m]:.1f}"] for m, fp in record["methods"].items()]
    print_table(["method", "checkpoints", "leaves", "metrics lines", "seconds"], rows)
    print(f"recorded {tree} ({record['keys']} keys) -> {out} in {time.perf_counter() - t0:.1f}s")


def check_command(tree: Path, against: Path, methods: list[str] | None, keys: str) -> int:
    recorded = json.loads(against.read_text())
    if recorded.get("format") != FORMAT:
        raise SystemExit(f"{against}: format {recorded.get('format')}, this script reads {FORMAT}")
    fresh, _ = fingerprints(tree, methods or list(recorded["methods"]), keys)
    rows, extras, failed = [], [], False
    for m, fp in fresh["methods"].items():
        if m not in recorded["methods"]:
            raise SystemExit(f"{against} has no record of {m}")
        rec, found = recorded["methods"][m], []
        diffs = {part: differences(rec[part], fp[part], f"{m}.{part}", found) for part in ("checkpoints", "metrics", "run")}
        first = next((d[0] for d in diffs.values() if d), "")
        failed |= bool(first)
        rows.append([m, *("yes" if not diffs[p] else f"NO ({len(diffs[p])})" for p in diffs), first])
        extras += found
    print_table(["method", "checkpoints equal", "metrics lines equal", "run.json equal", "first difference"], rows)
    if extras:  # one entry per key, not per metrics line
        keys = list(dict.fromkeys(re.sub(r"\[\d+\]", "[*]", k) for k in extras))
        print(f"new keys (information, not compared): {', '.join(keys[:20])}" + (" ..." if len(keys) > 20 else ""))
    print(f"{tree} ({fresh['keys']} keys) against {against}: {'DIFFERENT' if failed else 'equal'}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.equivalence", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("record", "check"):
        p = sub.add_parser(name)
        p.add_argument("--tree", type=Path, default=ROOT, help="source tree to run [default: this project root]")
        p.add_argument("--keys", choices=["old", "new", "auto"], default="auto",
                       help="NSBGAN sampler keys: old sampler_<key>, new sampler.<key>, auto: read the tree")
    sub.choices["record"].add_argument("--out", type=Path, required=True)
    sub.choices["record"].add_argument("--methods", default=DEFAULT_METHODS)
    sub.choices["check"].add_argument("--against", type=Path, required=True)
    sub.choices["check"].add_argument("--methods", default=None, help="[default: every recorded method]")
    a = ap.parse_args(argv)
    methods = [m for m in a.methods.split(",") if m] if a.methods else None
    try:
        if a.command == "record":
            record_command(a.tree, a.out, methods, a.keys)
            return 0
        return check_command(a.tree, a.against, methods, a.keys)
    except RunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
