"""`harness run --profile N`: a torch.profiler trace of N training steps of each stage.

After `PROFILE_WARMUP` steps (allocator, cuDNN autotuning and the prefetch pool settle), N steps
are recorded with the profiler's own warm-up of one step; the Chrome trace goes to
`profile/<stage>-trace.json` in the run directory (open it in https://ui.perfetto.dev or
chrome://tracing), the top operators by self time to `profile/<stage>-top-ops.txt` and the
console. Profiled steps run slower and are on the budget clock like any other: profile a short
run (`--max-steps`), not a measured one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile, schedule

PROFILE_WARMUP = 5  # steps before the profiler starts
TOP_OPS = 25  # rows of the printed table


class StepProfiler:
    """Call `step()` after every training step of one stage, `close()` when the stage ends."""

    def __init__(self, folder: Path, stage: str, steps: int, device: torch.device, log: Callable[[str], None]):
        self.folder, self.stage, self.steps, self.log = folder, stage, steps, log
        self.cuda = device.type == "cuda"
        self.done = 0  # steps seen
        self.written = False
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self.prof = profile(activities=activities, record_shapes=True,
                            schedule=schedule(wait=PROFILE_WARMUP, warmup=1, active=steps, repeat=1),
                            on_trace_ready=self._write)
        self.prof.start()
        self.open = True

    def step(self) -> None:
        if self.open:
            self.done += 1
            self.prof.step()

    def close(self) -> None:
        """Stop; a stage shorter than warm-up + N steps writes what was recorded."""
        if self.open:
            self.open = False
            self.prof.stop()
        if not self.written:
            self.log(f"stage {self.stage}: no profile, it trained {self.done} steps; the profile starts after "
                     f"{PROFILE_WARMUP + 1}")

    def _write(self, prof) -> None:
        self.open, self.written = False, True
        self.folder.mkdir(parents=True, exist_ok=True)
        trace = self.folder / f"{self.stage}-trace.json"
        prof.export_chrome_trace(str(trace))
        key = "self_cuda_time_total" if self.cuda else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=key, row_limit=TOP_OPS)
        (self.folder / f"{self.stage}-top-ops.txt").write_text(table + "\n")
        recorded = min(self.steps, self.done - PROFILE_WARMUP - 1)
        self.log(f"stage {self.stage}: profile of {recorded} steps -> {trace}\n{table}")
