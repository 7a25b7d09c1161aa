"""The paper's layout (NSBGAN Sec. 5): a method's stages trained at the same time, each on devices of its own.

`harness run` (no --stage, not under torchrun) uses it when the machine has enough devices
for every stage's `Stage.devices`; under Slurm (`harness compare --launcher slurm --gpus-per-job 4`) it
runs inside the job's one allocation.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.engine import cores
from harness.errors import ConfigError
from harness.method import Stage
from harness.launch.jobs import Launch, run_jobs

MODES = ("auto", "sequential", "parallel")


@dataclass(frozen=True)
class Slot:
    """Where one stage trains: `processes` data-parallel processes on `devices` (GPU indices; empty
    on a CPU)."""

    stage: str
    processes: int
    devices: tuple[int, ...]


def plan(stages: list[Stage], device: torch.device, mode: str, available: int | None = None) -> list[Slot] | None:
    """The parallel layout of `stages`, or None for one stage after another: `sequential`, a
    method with one stage, or (`auto`, the default) fewer CUDA devices than the stages ask for
    together. `parallel` forces it, on a CPU too (with gloo).

    NSBGAN Sec. 5: "We allocate two GPUs to the NOT-SO-BIGGAN sampler, one GPU to the first-level
    decoder, and one GPU to the second-level decoder ... Each component is trained in parallel and
    independently"."""
    if mode not in MODES:
        raise ConfigError(f"--layout must be one of {', '.join(MODES)}, got '{mode}'")
    if mode == "sequential" or len(stages) < 2:
        if mode == "parallel":
            raise ConfigError("--layout parallel needs a method with several stages")
        return None
    need = sum(s.devices for s in stages)
    if device.type != "cuda":
        if mode == "auto":
            return None
        return [Slot(s.name, s.devices, ()) for s in stages]
    have = torch.cuda.device_count() if available is None else available
    if have < need:
        if mode == "parallel":
            raise ConfigError(f"--layout parallel needs {need} CUDA devices for stages "
                              f"{', '.join(f'{s.name} ({s.devices})' for s in stages)}; this machine has {have}")
        return None
    slots, first = [], 0
    for s in stages:
        slots.append(Slot(s.name, s.devices, tuple(range(first, first + s.devices))))
        first += s.devices
    return slots


def describe(slots: list[Slot]) -> dict:
    """run.json's `layout`."""
    # each stage gets the whole wall budget (they run side by side): the run's GPU-hours are the budget
    # times all devices
    every = evaluation_slot(slots)
    return {"mode": "parallel", "devices": sum(s.processes for s in slots),
            "stages": {s.stage: {"processes": s.processes, "devices": list(s.devices)} for s in slots},
            "evaluation": {"processes": every.processes, "devices": list(every.devices),
                           "note": "the whole pipeline's final evaluation, after the stages, split over every "
                                   "device of the job (one torchrun process each)"},
            "note": "stages trained at the same time, each on its own devices, for the whole wall budget"}


def evaluation_slot(slots: list[Slot]) -> Slot:
    """Where the whole pipeline's final evaluation runs once every stage is trained: one process on
    each device of the job (on a CPU, as many processes as the stages had), sampling and features
    split over them (harness.metrics.sharding)."""
    return Slot("pipeline", sum(s.processes for s in slots), tuple(sorted(d for s in slots for d in s.devices)))


def command(slot: Slot, run_dir: str, passthrough: list[str]) -> list[str]:
    """The job of one stage: `harness run --resume RUN --stage NAME ...`, under `torchrun --standalone
    --nproc-per-node K` for a stage of K > 1 devices; the evaluation slot's job is `harness run
    --resume RUN --pipeline-eval ...` on all of them."""
    # --no-energy: codecarbon measures a whole machine, so the stage jobs run without it and the parent
    # process measures the machine once while they train (REPRODUCE.md names this)
    what = ["--pipeline-eval"] if slot.stage == "pipeline" else ["--stage", slot.stage]
    harness = ["-m", "harness", "run", "--resume", run_dir, *what, "--no-progress", "--no-energy", *passthrough]
    if slot.processes == 1:
        return [sys.executable, *harness]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={slot.processes}",
            *harness]


def run_stages(slots: list[Slot], run_dir: str, passthrough: list[str], log) -> dict[str, int]:
    """Start every stage's job at once, wait for all; returns each stage's exit code. Their output
    goes to <run dir>/layout/<stage>.log. A SIGINT/SIGTERM is passed on to every job (which
    checkpoints and stops); once all have stopped, `Interrupted` is raised (harness.launch.jobs).

    The caller creates the run directory first and, once all stages are done, evaluates the whole
    pipeline on every device (`run_evaluation`). No launcher of our own beyond harness.launch.jobs; each job sees its GPUs
    through `CUDA_VISIBLE_DEVICES`."""
    folder = Path(run_dir) / "layout"
    folder.mkdir(parents=True, exist_ok=True)
    codes: dict[str, int] = {}
    # side by side, the jobs' threads never oversubscribe the cores: each runs on CPUs of its own
    groups = dict(zip([s.stage for s in slots], cores.split(cores.usable_cores(), len(slots))))

    def launch(slot: Slot, _: int) -> Launch:
        env = dict(os.environ)
        if slot.devices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, slot.devices))
        log(f"layout: {slot.stage} on {slot.processes} process(es)"
            f"{' (GPUs ' + ','.join(map(str, slot.devices)) + ')' if slot.devices else ''}")
        return Launch(command(slot, run_dir, passthrough), env, folder / f"{slot.stage}.log", groups[slot.stage])

    run_jobs(slots, launch, list(range(len(slots))), lambda slot, code: codes.__setitem__(slot.stage, code))
    return {s.stage: codes[s.stage] for s in slots}


def run_evaluation(slots: list[Slot], run_dir: str, passthrough: list[str], log) -> int:
    """The whole pipeline's final evaluation on every device of the layout, once its stages are all
    trained: one job (`evaluation_slot`), its output in <run dir>/layout/pipeline.log; returns its
    exit code. A signal is passed on to it as to the stage jobs."""
    slot = evaluation_slot(slots)
    env = dict(os.environ)
    if slot.devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, slot.devices))
    log(f"layout: the pipeline's evaluation on {slot.processes} process(es)"
        f"{' (GPUs ' + ','.join(map(str, slot.devices)) + ')' if slot.devices else ''}")
    codes: list[int] = []
    job = Launch(command(slot, run_dir, passthrough), env, Path(run_dir) / "layout" / "pipeline.log")
    run_jobs([slot], lambda _slot, _: job, [0], lambda _slot, code: codes.append(code))
    return codes[0]
