"""What a user asks of `harness run` (RunRequest), and the settings that make a run's identity
(RunSettings, recorded in run.json["run"]): a continued run must agree on every one of them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from harness.errors import ConfigError

SMOKE_EVAL_SAMPLES = 200  # default on the embedded `shapes` data: smoke-sized (Inception on a CPU is ~0.5 s/image), labelled so


@dataclass(frozen=True)
class RunSettings:
    """The run-level settings recorded in run.json["run"]; all must match when a run is continued."""

    method: str
    budget: str
    data: str = "shapes"
    seed: int = 0
    devices: int = 1
    eval_every: str | None = None
    eval_samples: int = SMOKE_EVAL_SAMPLES
    fid_backbone: str = "inception"
    max_steps: int | None = None
    # which real images FID is measured against (harness.metrics.reference); runs recorded before the
    # setting existed used the first n training images
    fid_reference: str = "first"
    # what each evaluation computes (harness.metrics.suite); runs recorded before the setting existed: FID,
    # and IS where the weights had logits
    metrics: str = "fid,is"


def identity_fields() -> tuple[str, ...]:
    """Every run setting is part of the run's identity: a continued run must agree on all."""
    return tuple(f.name for f in dataclasses.fields(RunSettings))


@dataclass
class RunRequest:
    """What the user typed; None means "not given" (take the default or the run's value)."""

    method: str | None = None
    budget: str | None = None
    data: str | None = None
    seed: int | None = None
    devices: int | None = None
    eval_every: str | None = None
    eval_samples: int | None = None
    fid_backbone: str | None = None
    max_steps: int | None = None
    fid_reference: str | None = None
    metrics: str | None = None
    keep_samples: int | None = None
    overrides: tuple[str, ...] = ()
    run_dir: str | None = None
    resume: str | None = None
    stage: str | None = None
    pipeline_eval: bool = False  # the parallel layout's final-evaluation job (harness.launch.layout.run_evaluation)
    device: str | None = None
    inception: str | None = None
    country: str | None = None
    energy: bool = True
    progress: bool = True
    results: str = "results/runs"
    layout: str = "auto"  # auto | sequential | parallel (harness.launch.layout)
    checkpoint_every: str | None = None  # budget time, steps or epochs (default: the loop's, 5m)
    profile: int = 0  # torch.profiler trace of this many steps per stage (harness.engine.profiling); 0 = off
    log: str | None = None  # a live view of the run's lines besides metrics.jsonl: tensorboard (harness.rundir.tblog)
    threads: int | None = None  # intra-op threads; None: from the usable cores and the load (harness.engine.threads)


def resolve_device(name: str | None) -> torch.device:
    """`--device`: cpu | cuda | cuda:N (default: cuda where there is one)."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"--device must be cpu or cuda[:N], got '{name}'")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)
