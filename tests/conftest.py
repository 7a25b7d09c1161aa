"""Shared fixtures: an isolated cache dir, and the CLI run in-process or as a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
# Small, fast settings shared by CLI smoke runs: 32x32 shapes, tiny widths, stand-in FID, no codecarbon.
SMOKE = ["--no-progress", "--no-energy", "--fid-backbone", "standin", "--eval-samples", "64"]
# A tiny NSBGAN sampler (the paper's is a 128-channel BigGAN-deep), as --set key=value strings
SAMPLER_TINY = ["sampler.ch=4", "sampler.dim_z=8", "sampler.shared_dim=4", "sampler.batch_size=4",
                "sampler.accumulate=1", "sampler.eval_batch_size=32", "latent_norm_images=256"]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Prepared data and FID statistics go to a per-session folder, never the user's cache."""
    old = os.environ.get("HARNESS_CACHE")
    os.environ["HARNESS_CACHE"] = str(tmp_path_factory.mktemp("harness-cache"))
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield
    if old is None:
        os.environ.pop("HARNESS_CACHE", None)
    else:
        os.environ["HARNESS_CACHE"] = old


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def run_dir(self) -> Path:
        """The run directory printed on the last line of stdout (`<status>: <path>`)."""
        return Path(self.out.strip().splitlines()[-1].split(": ", 1)[1])


@pytest.fixture
def cli(capsys):
    """Run `harness ARGS...` in this process; returns exit code, stdout, stderr."""
    from harness.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def cli_subprocess(*args: str, timeout: float = 300, **popen) -> CliResult:
    """Run `python -m harness ARGS...` in a fresh interpreter (for signals and tracebacks)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **popen.pop("env", {})}
    p = subprocess.run([sys.executable, "-m", "harness", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd=popen.pop("cwd", ROOT), **popen)
    return CliResult(p.returncode, p.stdout, p.stderr)


def read_manifest(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "run.json").read_text())


def read_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def method_trainer(method: str, run_dir: Path, max_steps: int, overrides: tuple[str, ...],
                   interrupt_after: int | None = None, budget: str = "1h"):
    """(Trainer, Method) of a new or continued run through the real launch path, without image
    metrics or energy; `interrupt_after=k` behaves as if SIGINT arrived during step k."""
    import signal

    from harness.engine.budget import parse_budget
    from harness.engine.energy import EnergyMeter
    from harness.launch.prepare import prepare_run
    from harness.launch.request import RunRequest
    from harness.engine.loop import Trainer
    from harness.engine.options import LoopOptions

    p = prepare_run(RunRequest(method=method, budget=budget, max_steps=max_steps, overrides=overrides,
                               run_dir=str(run_dir), eval_samples=0, energy=False, progress=False, device="cpu"))
    built = p.method
    trainer = Trainer(p.run, built, p.data, p.device,
                      LoopOptions(parse_budget(budget), seed=0, max_steps=max_steps, progress=False),
                      EnergyMeter(p.run.path, "USA", enabled=False))
    if interrupt_after is not None:
        stage = built.stages[0]
        step = stage.train_step

        def train_step(batch):
            out = step(batch)
            if batch.step + 1 == interrupt_after:
                trainer.signals.received = signal.SIGINT
            return out

        stage.train_step = train_step
    return trainer, built
